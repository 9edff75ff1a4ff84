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

absl::StatusOr<bool> ParseOnOff(std::string_view key, std::string_view v) {
  if (v == "on") return true;
  if (v == "off") return false;
  return absl::InvalidArgumentError(
      absl::StrFormat("--disk %s must be on or off, got '%s'", key, v));
}

// Splits "a=b,c=d" at single commas; ",," stands for a literal comma.
std::vector<std::string> SplitOptions(std::string_view text) {
  std::vector<std::string> parts(1);
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] != ',') {
      parts.back() += text[i];
    } else if (i + 1 < text.size() && text[i + 1] == ',') {
      parts.back() += ',';
      ++i;
    } else {
      parts.emplace_back();
    }
  }
  return parts;
}

absl::StatusOr<std::array<uint8_t, 6>> ParseMac(std::string_view v) {
  std::array<uint8_t, 6> mac{};
  const auto bad = [&] {
    return absl::InvalidArgumentError(
        absl::StrFormat("--net mac=%s is not a MAC address like 52:54:00:12:34:56", v));
  };
  if (v.size() != 17) return bad();
  for (size_t i = 0; i < 6; ++i) {
    if (i > 0 && v[3 * i - 1] != ':') return bad();
    uint8_t b = 0;
    auto [ptr, ec] = std::from_chars(v.data() + 3 * i, v.data() + 3 * i + 2, b, 16);
    if (ec != std::errc() || ptr != v.data() + 3 * i + 2) return bad();
    mac[i] = b;
  }
  if (mac[0] & 1) {
    return absl::InvalidArgumentError(
        absl::StrFormat("--net mac=%s is a multicast address: the first byte must be even", v));
  }
  if (mac == std::array<uint8_t, 6>{}) {
    return absl::InvalidArgumentError("--net mac=00:00:00:00:00:00 is not a usable address");
  }
  return mac;
}

// passt's port forwarding syntax ([ADDR/]PORT[-PORT][:PORT[-PORT]], lists
// with ',' are written as separate tcp=/udp= items); passt checks the rest.
absl::Status CheckPortSpec(std::string_view key, std::string_view v) {
  if (v.empty()) return absl::InvalidArgumentError(absl::StrFormat("--net %s= needs a port spec such as 8080 or 2222:22", key));
  for (char c : v) {
    const bool ok = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F') ||
                    c == ':' || c == '-' || c == '.' || c == '/' || c == '~' || c == '%';
    if (!ok) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "--net %s=%s: a port spec has digits, ':', '-', '~' and an optional ADDR/ prefix", key, v));
    }
  }
  return absl::OkStatus();
}

absl::Status CheckIpv4(std::string_view v) {
  int parts = 0;
  size_t i = 0;
  while (i <= v.size()) {
    size_t end = v.find('.', i);
    if (end == std::string_view::npos) end = v.size();
    unsigned n = 0;
    auto [ptr, ec] = std::from_chars(v.data() + i, v.data() + end, n);
    if (end == i || ec != std::errc() || ptr != v.data() + end || n > 255) break;
    ++parts;
    i = end + 1;
    if (end == v.size()) {
      if (parts == 4) return absl::OkStatus();
      break;
    }
  }
  return absl::InvalidArgumentError(absl::StrFormat("--net addr=%s is not an IPv4 address", v));
}

}  // namespace

absl::StatusOr<NicConfig> ParseNicSpec(std::string_view text) {
  NicConfig n;
  std::vector<std::string> parts = SplitOptions(text);
  const std::string& first = parts[0];
  if (first == "passt") {
    n.backend = NicConfig::Backend::kPasst;
  } else if (first.rfind("tap=", 0) == 0 && first.size() > 4) {
    n.backend = NicConfig::Backend::kTap;
    n.tap_name = first.substr(4);
    if (n.tap_name.size() >= 16) {
      return absl::InvalidArgumentError(
          absl::StrFormat("--net tap=%s: interface names have at most 15 characters", n.tap_name));
    }
  } else if (first.rfind("fd=", 0) == 0) {
    n.backend = NicConfig::Backend::kTap;
    absl::StatusOr<uint64_t> fd = ParseUint("--net fd", first.substr(3));
    if (!fd.ok()) return fd.status();
    if (*fd < 3 || *fd > 65535) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "--net fd=%s: expected an inherited TAP file descriptor (3 or above)", first.substr(3)));
    }
    n.tap_fd = static_cast<int>(*fd);
  } else {
    return absl::InvalidArgumentError(absl::StrFormat(
        "--net must start with passt, tap=NAME or fd=N, got '%s'", first));
  }
  const bool passt = n.backend == NicConfig::Backend::kPasst;
  std::set<std::string> keys;
  for (size_t i = 1; i < parts.size(); ++i) {
    const std::string& part = parts[i];
    const size_t eq = part.find('=');
    if (eq == std::string::npos) {
      return absl::InvalidArgumentError(absl::StrFormat("--net expects key=value items after the backend, got '%s'", part));
    }
    const std::string key = part.substr(0, eq);
    const std::string v = part.substr(eq + 1);
    const bool repeatable = key == "tcp" || key == "udp";
    if (!repeatable && !keys.insert(key).second) {
      return absl::InvalidArgumentError(absl::StrFormat("--net gives %s more than once", key));
    }
    if ((key == "tcp" || key == "udp" || key == "addr") && !passt) {
      return absl::InvalidArgumentError(absl::StrFormat("--net %s= is a passt option; a TAP's host side is configured on the host", key));
    }
    if (key == "queues" && (passt || n.tap_fd >= 0)) {
      return absl::InvalidArgumentError(
          "--net queues= needs tap=NAME (passt and an inherited fd carry one queue pair)");
    }
    if (key == "mac") {
      absl::StatusOr<std::array<uint8_t, 6>> mac = ParseMac(v);
      if (!mac.ok()) return mac.status();
      n.mac = *mac;
    } else if (key == "mtu") {
      absl::StatusOr<uint64_t> mtu = ParseUint("--net mtu", v);
      if (!mtu.ok()) return mtu.status();
      if (*mtu < 68 || *mtu > 65520) {
        return absl::InvalidArgumentError(absl::StrFormat("--net mtu=%s is out of range 68..65520", v));
      }
      n.mtu = static_cast<uint16_t>(*mtu);
    } else if (key == "tcp" || key == "udp") {
      if (absl::Status st = CheckPortSpec(key, v); !st.ok()) return st;
      (key == "tcp" ? n.tcp : n.udp).push_back(v);
    } else if (key == "addr") {
      if (absl::Status st = CheckIpv4(v); !st.ok()) return st;
      n.ipv4 = v;
    } else if (key == "queues") {
      absl::StatusOr<uint64_t> q = ParseUint("--net queues", v);
      if (!q.ok()) return q.status();
      if (*q < 1 || *q > kMaxNicQueues) {
        return absl::InvalidArgumentError(absl::StrFormat("--net queues=%s is out of range 1..%u", v, kMaxNicQueues));
      }
      n.queues = static_cast<uint16_t>(*q);
    } else {
      return absl::InvalidArgumentError(absl::StrFormat(
          "--net has no option '%s' (mac, mtu, tcp, udp, addr for passt; mac, mtu, queues for tap)", key));
    }
  }
  return n;
}

absl::StatusOr<DiskConfig> ParseDiskSpec(std::string_view text) {
  DiskConfig d;
  std::set<std::string> keys;
  bool has_path = false;
  for (const std::string& part : SplitOptions(text)) {
    const size_t eq = part.find('=');
    if (eq == std::string::npos) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "--disk expects key=value items (path=IMG,readonly=on,...), got '%s'", part));
    }
    const std::string key = part.substr(0, eq);
    const std::string v = part.substr(eq + 1);
    if (!keys.insert(key).second) {
      return absl::InvalidArgumentError(absl::StrFormat("--disk gives %s more than once", key));
    }
    if (key == "path") {
      if (v.empty()) return absl::InvalidArgumentError("--disk path= needs an image file or block device");
      d.path = v;
      has_path = true;
    } else if (key == "readonly" || key == "direct") {
      absl::StatusOr<bool> b = ParseOnOff(key, v);
      if (!b.ok()) return b.status();
      (key == "readonly" ? d.readonly : d.direct) = *b;
    } else if (key == "queues") {
      absl::StatusOr<uint64_t> n = ParseUint("--disk queues", v);
      if (!n.ok()) return n.status();
      if (*n < 1 || *n > kMaxDiskQueues) {
        return absl::InvalidArgumentError(
            absl::StrFormat("--disk queues=%s is out of range 1..%u", v, kMaxDiskQueues));
      }
      d.queues = static_cast<uint16_t>(*n);
    } else if (key == "serial") {
      if (v.size() > kMaxDiskSerial) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "--disk serial=%s is longer than virtio-blk's %u bytes", v, kMaxDiskSerial));
      }
      for (char c : v) {
        if (c < 0x21 || c > 0x7e) {
          return absl::InvalidArgumentError(absl::StrFormat(
              "--disk serial=%s: only printable ASCII without spaces is allowed", v));
        }
      }
      d.serial = v;
    } else {
      return absl::InvalidArgumentError(absl::StrFormat(
          "--disk has no option '%s' (path, readonly, direct, queues, serial)", key));
    }
  }
  if (!has_path) return absl::InvalidArgumentError("--disk needs path=IMG");
  return d;
}

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
  --config FILE        the VM described in proto3 JSON (flint.v1.VmConfig,
                       agent-api/proto/flint/v1/vm_config.proto) instead of the
                       options below that shape it; --stats, --no-reboot,
                       --control-socket, --api-socket and --state-dir still
                       combine with it
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
  --disk SPEC          a virtio-blk disk (repeatable): path=IMG[,readonly=on]
                       [,direct=on][,queues=N][,serial=ID]; IMG is a raw image
                       file or a block device; direct=on bypasses the host page
                       cache (O_DIRECT); queues 1..16; serial up to 20 bytes
  --net SPEC           a virtio-net NIC (repeatable):
                         passt[,mac=M][,tcp=SPEC]...[,udp=SPEC]...[,mtu=N][,addr=IP]
                           user-mode networking through the system passt
                           binary; tcp=/udp= forward host ports (passt -t/-u)
                         tap=NAME[,mac=M][,queues=N][,mtu=N]  a TAP device
                         fd=N[,mac=M][,mtu=N]  a TAP fd inherited from the launcher
  --control-socket P   serve control requests on UNIX socket P (net-swap,
                       net-info; see docs/CONTROL.md)
  --api-socket P       serve the per-VM gRPC API (flint.v1.VmService,
                       agent-api/proto/flint/v1/vm_service.proto) on UNIX
                       socket P, mode 0600; flintctl is its command-line client
  --state-dir DIR      where per-VM files (passt logs) go (default /tmp/flint-PID)
  --io-engine E        disk I/O engine: auto (default: io_uring when the host
                       allows it, else a thread pool), io_uring, or threads
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
    if (flag != "--disk" && flag != "--net" && !seen.insert(flag).second) {
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
    } else if (flag == "--disk") {
      absl::StatusOr<std::string> v = get();
      if (!v.ok()) return v.status();
      absl::StatusOr<DiskConfig> d = ParseDiskSpec(*v);
      if (!d.ok()) return d.status();
      for (const DiskConfig& other : o.disks) {
        if (other.path == d->path) {
          return absl::InvalidArgumentError(absl::StrFormat(
              "--disk path=%s is given twice: one image cannot be two disks", d->path));
        }
      }
      if (o.disks.size() + o.nics.size() == kMaxPciDevices) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "too many --disk/--net options: the PCI bus has %u device slots", kMaxPciDevices));
      }
      o.disks.push_back(*d);
    } else if (flag == "--net") {
      absl::StatusOr<std::string> v = get();
      if (!v.ok()) return v.status();
      absl::StatusOr<NicConfig> n = ParseNicSpec(*v);
      if (!n.ok()) return n.status();
      for (const NicConfig& other : o.nics) {
        if ((!n->tap_name.empty() && other.tap_name == n->tap_name) ||
            (n->tap_fd >= 0 && other.tap_fd == n->tap_fd)) {
          return absl::InvalidArgumentError(
              absl::StrFormat("--net %s is given twice: one TAP cannot be two NICs", *v));
        }
        if (n->mac != std::array<uint8_t, 6>{} && other.mac == n->mac) {
          return absl::InvalidArgumentError(absl::StrFormat("--net %s: two NICs with the same MAC", *v));
        }
      }
      if (o.disks.size() + o.nics.size() == kMaxPciDevices) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "too many --disk/--net options: the PCI bus has %u device slots", kMaxPciDevices));
      }
      o.nics.push_back(*n);
    } else if (flag == "--control-socket" || flag == "--state-dir" || flag == "--api-socket") {
      absl::StatusOr<std::string> v = get();
      if (!v.ok()) return v.status();
      if (v->empty()) return absl::InvalidArgumentError(absl::StrFormat("%s needs a path", flag));
      (flag == "--control-socket" ? o.control_socket
       : flag == "--api-socket"   ? o.api_socket
                                  : o.state_dir) = *v;
    } else if (flag == "--io-engine") {
      absl::StatusOr<std::string> v = get();
      if (!v.ok()) return v.status();
      if (*v == "auto") o.io_engine = IoEngine::kAuto;
      else if (*v == "io_uring") o.io_engine = IoEngine::kIoUring;
      else if (*v == "threads") o.io_engine = IoEngine::kThreads;
      else return absl::InvalidArgumentError(absl::StrFormat("--io-engine must be auto, io_uring or threads, got '%s'", *v));
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
