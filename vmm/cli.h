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
std::string UsageText();

}  // namespace flint
