// Everything needed to build one VM, already validated by the CLI (or, later,
// the API). Kernel and initrd are bytes, so the VM never touches user paths.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "vmm/guest_memory.h"

namespace flint {

// One virtio-blk disk (--disk). The path is opened when the VM is built.
struct DiskConfig {
  std::string path;
  bool readonly = false;
  bool direct = false;      // O_DIRECT (cache=none) instead of the page cache
  uint16_t queues = 1;      // virtqueues (VIRTIO_BLK_F_MQ when > 1)
  std::string serial;       // VIRTIO_BLK_T_GET_ID answer, at most 20 bytes
};
inline constexpr uint16_t kMaxDiskQueues = 16;
inline constexpr size_t kMaxPciDevices = 31;  // bus 0, slot 0 is the host bridge
inline constexpr size_t kMaxDiskSerial = 20;

// One virtio-net NIC (--net). passt: flint starts the system passt binary
// on one end of a socketpair; tap: a TAP device opened by name or an fd
// inherited from the process that started flint.
struct NicConfig {
  enum class Backend { kPasst, kTap };
  Backend backend = Backend::kPasst;
  std::array<uint8_t, 6> mac{};       // all zero: flint picks a locally administered one
  uint16_t mtu = 0;                   // 0: 1500; otherwise 68..65520
  std::vector<std::string> tcp;       // passt -t specs ("8080", "2222:22"), one per option
  std::vector<std::string> udp;       // passt -u specs
  std::string ipv4;                   // passt -a (the guest's DHCP address); empty: passt's choice
  std::string tap_name;               // tap=NAME
  int tap_fd = -1;                    // fd=N (inherited, not owned until the VM is built)
  uint16_t queues = 1;                // queue pairs (TAP with IFF_MULTI_QUEUE only)
};
inline constexpr uint16_t kMaxNicQueues = 8;

// How block I/O is issued. kAuto: io_uring when the host allows it, else the
// thread pool (flint says which, and --stats reports it).
enum class IoEngine { kAuto, kIoUring, kThreads };

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
  std::vector<DiskConfig> disks;
  std::vector<NicConfig> nics;
  // Where per-VM files go (passt logs); created 0700 if missing.
  std::string state_dir;
  IoEngine io_engine = IoEngine::kAuto;
};

// The guest RAM regions for `memory_bytes`: below the 32-bit MMIO hole, and
// the rest from 4 GiB up.
std::vector<MemoryRegionSpec> RamLayout(uint64_t memory_bytes);

}  // namespace flint
