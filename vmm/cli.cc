#include "vmm/cli.h"

#include <charconv>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/str_format.h"
#include "vmm/vm_config.h"

namespace flint {
namespace {

// Decimal, or hexadecimal with a 0x prefix (ports and addresses).
absl::StatusOr<uint64_t> ParseUint(std::string_view flag, std::string_view text) {
  uint64_t v = 0;
  int base = 10;
  std::string_view digits = text;
  if (digits.size() > 2 && digits[0] == '0' && (digits[1] == 'x' || digits[1] == 'X')) {
    base = 16;
    digits.remove_prefix(2);
  }
  auto [ptr, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), v, base);
  if (digits.empty() || ec != std::errc() || ptr != digits.data() + digits.size()) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s expects a whole number (decimal or 0x hex), got '%s'", flag, text));
  }
  return v;
}

}  // namespace

absl::StatusOr<uint64_t> ParseMemorySize(std::string_view text) {
  if (text.empty()) return absl::InvalidArgumentError("--memory expects a size such as 256M or 1G");
  uint64_t shift = 20;
  std::string_view digits = text;
  switch (text.back()) {
    case 'B': case 'b': shift = 0; digits.remove_suffix(1); break;
    case 'K': case 'k': shift = 10; digits.remove_suffix(1); break;
    case 'M': case 'm': shift = 20; digits.remove_suffix(1); break;
    case 'G': case 'g': shift = 30; digits.remove_suffix(1); break;
    case 'T': case 't': shift = 40; digits.remove_suffix(1); break;
    default: break;
  }
  absl::StatusOr<uint64_t> n = ParseUint("--memory", digits);
  if (!n.ok()) {
    return absl::InvalidArgumentError(
        absl::StrFormat("--memory expects a size such as 256M or 1G, got '%s'", text));
  }
  if (*n > (kMaxMemory >> shift)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("--memory %s is larger than flint's limit of %u GiB", text, kMaxMemory >> 30));
  }
  uint64_t bytes = *n << shift;
  if (bytes < kMinMemory) {
    return absl::InvalidArgumentError(
        absl::StrFormat("--memory %s is below the minimum of %u MiB", text, kMinMemory >> 20));
  }
  if (bytes % 4096 != 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("--memory %s is not a multiple of 4 KiB", text));
  }
  return bytes;
}

std::string UsageText() {
  return R"(usage: flint run [options]

Boots one virtual machine on /dev/kvm. With no --kernel, boots flint's
embedded demo guest, which exercises the UART, CMOS clock and ACPI tables.

options:
  --kernel PATH        Linux bzImage, vmlinux, or any ELF with a PVH entry note
  --initrd PATH        initial ramdisk
  --cmdline STR        kernel command line (default: "console=ttyS0 reboot=k
                       panic=1" for a kernel, "flint.prog=demo" for the demo)
  --cpus N             vCPUs, 1..254 (default 1)
  --memory SIZE        guest RAM, e.g. 512M, 2G; a bare number is MiB (default 256M)
  --memory-backing K   anon (default), memfd, or hugetlb (2 MiB pages)
  --serial DEST        where COM1 output goes: stdout (default) or file:PATH
  --no-reboot          exit when the guest resets instead of booting it again
  --stats              print exit statistics, start-up time and memory overhead
                       when the VM stops
  --ioeventfd-sink P   bind 4-byte writes to port P to an in-kernel eventfd
                       (exit-latency measurements of KVM's fast path)
  --help, --version

exit status: 0 guest powered off (or reset with --no-reboot); odd values are
(v << 1) | 1 for a guest write of v to the debug-exit port 0xf4; 2 bad usage;
4 guest crashed (emulation failure; triple fault with --no-reboot, else it
reboots); 6 flint failed while running; 130 stopped by SIGINT/SIGTERM.
)";
}

absl::StatusOr<Command> ParseCommandLine(const std::vector<std::string>& args) {
  Command cmd;
  size_t i = 0;
  if (args.empty()) return absl::InvalidArgumentError("missing command: try 'flint run'");
  if (args[0] == "--help" || args[0] == "-h" || args[0] == "help") {
    cmd.kind = Command::Kind::kHelp;
    return cmd;
  }
  if (args[0] == "--version") {
    cmd.kind = Command::Kind::kVersion;
    return cmd;
  }
  if (args[0] != "run") {
    return absl::InvalidArgumentError(absl::StrFormat("unknown command '%s': try 'flint run'", args[0]));
  }
  ++i;
  RunOptions& o = cmd.run;
  std::set<std::string> seen;
  auto value = [&](const std::string& flag) -> absl::StatusOr<std::string> {
    if (i + 1 >= args.size()) return absl::InvalidArgumentError(absl::StrFormat("%s needs a value", flag));
    return args[++i];
  };
  for (; i < args.size(); ++i) {
    std::string flag = args[i];
    std::optional<std::string> inline_value;
    if (size_t eq = flag.find('='); absl::StartsWith(flag, "--") && eq != std::string::npos) {
      inline_value = flag.substr(eq + 1);
      flag = flag.substr(0, eq);
    }
    auto get = [&]() -> absl::StatusOr<std::string> {
      if (inline_value) return *inline_value;
      return value(flag);
    };
    auto no_value = [&]() -> absl::Status {
      if (inline_value) return absl::InvalidArgumentError(absl::StrFormat("%s takes no value", flag));
      return absl::OkStatus();
    };
    if (flag == "--help" || flag == "-h") {
      cmd.kind = Command::Kind::kHelp;
      return cmd;
    }
    if (!seen.insert(flag).second) {
      return absl::InvalidArgumentError(absl::StrFormat("%s is given more than once", flag));
    }
    if (flag == "--kernel" || flag == "--initrd" || flag == "--cmdline") {
      absl::StatusOr<std::string> v = get();
      if (!v.ok()) return v.status();
      std::string& dst = flag == "--kernel" ? o.kernel_path : flag == "--initrd" ? o.initrd_path : o.cmdline.emplace();
      if (flag != "--cmdline" && v->empty()) {
        return absl::InvalidArgumentError(absl::StrFormat("%s needs a path", flag));
      }
      dst = *v;
    } else if (flag == "--cpus") {
      absl::StatusOr<std::string> v = get();
      if (!v.ok()) return v.status();
      absl::StatusOr<uint64_t> n = ParseUint("--cpus", *v);
      if (!n.ok()) return n.status();
      if (*n < 1 || *n > kMaxVcpus) {
        return absl::InvalidArgumentError(absl::StrFormat("--cpus %s is out of range 1..%u", *v, kMaxVcpus));
      }
      o.cpus = static_cast<uint32_t>(*n);
    } else if (flag == "--memory") {
      absl::StatusOr<std::string> v = get();
      if (!v.ok()) return v.status();
      absl::StatusOr<uint64_t> n = ParseMemorySize(*v);
      if (!n.ok()) return n.status();
      o.memory_bytes = *n;
    } else if (flag == "--memory-backing") {
      absl::StatusOr<std::string> v = get();
      if (!v.ok()) return v.status();
      if (*v == "anon") o.backing = MemoryBacking::kAnonymous;
      else if (*v == "memfd") o.backing = MemoryBacking::kMemfd;
      else if (*v == "hugetlb") o.backing = MemoryBacking::kHugetlb;
      else return absl::InvalidArgumentError(absl::StrFormat("--memory-backing must be anon, memfd or hugetlb, got '%s'", *v));
    } else if (flag == "--serial") {
      absl::StatusOr<std::string> v = get();
      if (!v.ok()) return v.status();
      if (*v == "stdout") {
        o.serial_file.clear();
      } else if (absl::StartsWith(*v, "file:") && v->size() > 5) {
        o.serial_file = v->substr(5);
      } else {
        return absl::InvalidArgumentError(absl::StrFormat("--serial must be stdout or file:PATH, got '%s'", *v));
      }
    } else if (flag == "--ioeventfd-sink") {
      absl::StatusOr<std::string> v = get();
      if (!v.ok()) return v.status();
      absl::StatusOr<uint64_t> n = ParseUint("--ioeventfd-sink", *v);
      if (!n.ok()) return n.status();
      if (*n > 0xffff) return absl::InvalidArgumentError("--ioeventfd-sink takes a port 0..65535");
      o.ioeventfd_sink_port = static_cast<uint16_t>(*n);
    } else if (flag == "--stats") {
      if (absl::Status s = no_value(); !s.ok()) return s;
      o.stats = true;
    } else if (flag == "--no-reboot") {
      if (absl::Status s = no_value(); !s.ok()) return s;
      o.reboot = false;
    } else {
      return absl::InvalidArgumentError(absl::StrFormat("unknown option '%s' (see 'flint run --help')", args[i]));
    }
  }
  if (!o.initrd_path.empty() && o.kernel_path.empty()) {
    return absl::InvalidArgumentError("--initrd needs --kernel (the embedded demo takes no initrd)");
  }
  if (o.backing == MemoryBacking::kHugetlb && o.memory_bytes % (2ull << 20) != 0) {
    return absl::InvalidArgumentError("--memory must be a multiple of 2 MiB with --memory-backing hugetlb");
  }
  return cmd;
}

}  // namespace flint
