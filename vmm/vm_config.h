// Everything needed to build one VM, already validated by the CLI (or, later,
// the API). Kernel and initrd are bytes, so the VM never touches user paths.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "vmm/guest_memory.h"

namespace flint {

inline constexpr uint32_t kMaxVcpus = 254;  // xAPIC IDs 0..253; the IOAPIC takes the next ID
inline constexpr uint64_t kMinMemory = 8ull << 20;
inline constexpr uint64_t kMaxMemory = 1ull << 40;

struct VmConfig {
  uint32_t cpus = 1;
  uint64_t memory_bytes = 256ull << 20;
  MemoryBacking backing = MemoryBacking::kAnonymous;
  // Borrowed: the caller keeps the image bytes alive until Vm::Create returns.
  std::span<const uint8_t> kernel;
  std::span<const uint8_t> initrd;
  std::string cmdline;
  int serial_out_fd = 1;       // not owned
  bool serial_in_stdin = true;
  // Binds 4-byte guest writes to this port to an eventfd nothing reads,
  // handled inside KVM: the in-kernel exit path, for exit-latency benches.
  std::optional<uint16_t> ioeventfd_sink_port;
};

// The guest RAM regions for `memory_bytes`: below the 32-bit MMIO hole, and
// the rest from 4 GiB up.
std::vector<MemoryRegionSpec> RamLayout(uint64_t memory_bytes);

}  // namespace flint
