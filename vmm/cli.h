// Command-line parsing for `flint run`. Pure (no I/O), so every rejection is
// unit-tested; files named on the command line are opened later by main.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "vmm/guest_memory.h"
#include "vmm/vm_config.h"

namespace flint {

struct RunOptions {
  std::string kernel_path;  // empty: boot the embedded demo guest
  std::string initrd_path;
  std::optional<std::string> cmdline;
  uint32_t cpus = 1;
  uint64_t memory_bytes = 256ull << 20;
  MemoryBacking backing = MemoryBacking::kAnonymous;
  std::string serial_file;  // empty: stdout
  bool stats = false;
  bool reboot = true;  // on guest reset, boot again (false: exit)
  std::optional<uint16_t> ioeventfd_sink_port;
  std::vector<DiskConfig> disks;  // --disk, in order: the first is the first PCI slot
  std::vector<NicConfig> nics;    // --net, in order, after the disks
  std::string control_socket;     // --control-socket PATH; empty: none
  std::string api_socket;         // --api-socket PATH (gRPC, agent-api/api_server.h); empty: none
  std::string state_dir;          // --state-dir; empty: /tmp/flint-PID
  IoEngine io_engine = IoEngine::kAuto;
};

struct Command {
  enum class Kind { kRun, kHelp, kVersion };
  Kind kind = Kind::kRun;
  RunOptions run;
};

// `args` excludes argv[0]. Accepts `run [options]`, `--help`, `--version`.
absl::StatusOr<Command> ParseCommandLine(const std::vector<std::string>& args);
// "256M", "1G", "512K", "1048576B"; a bare number means MiB (as QEMU's -m).
absl::StatusOr<uint64_t> ParseMemorySize(std::string_view text);
// One --disk value: path=IMG[,readonly=on][,direct=on][,queues=N][,serial=ID].
// A comma inside the path is written twice (",,").
absl::StatusOr<DiskConfig> ParseDiskSpec(std::string_view text);
// One --net value (also what the control socket's net-swap takes):
//   passt[,mac=M][,tcp=SPEC]...[,udp=SPEC]...[,mtu=N][,addr=IPv4]
//   tap=NAME[,mac=M][,queues=N][,mtu=N]
//   fd=N[,mac=M][,mtu=N]          (a TAP fd inherited from the launcher)
absl::StatusOr<NicConfig> ParseNicSpec(std::string_view text);
std::string UsageText();

}  // namespace flint
