// Exit statistics: per vCPU, counters per KVM exit reason and per bus range
// (port I/O and MMIO), each written only by its vCPU thread, so counting is
// a plain relaxed increment with no lock and no contended cache line.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "vmm/bus.h"

namespace flint {

class RelaxedCounter {
 public:
  void Add(uint64_t n = 1) { v_.store(v_.load(std::memory_order_relaxed) + n, std::memory_order_relaxed); }
  uint64_t Get() const { return v_.load(std::memory_order_relaxed); }

 private:
  std::atomic<uint64_t> v_{0};
};

inline constexpr size_t kExitReasonSlots = 64;  // KVM_EXIT_* values fit; larger ones share the last

class VcpuExitStats {
 public:
  VcpuExitStats(size_t pio_ranges, size_t mmio_ranges);
  void CountExit(uint32_t reason) { by_reason_[reason < kExitReasonSlots ? reason : kExitReasonSlots - 1].Add(); }
  // index -1 = no device claimed the access.
  void CountPio(int index) { pio_[static_cast<size_t>(index + 1)].Add(); }
  void CountMmio(int index) { mmio_[static_cast<size_t>(index + 1)].Add(); }

  uint64_t exits(uint32_t reason) const { return by_reason_[reason].Get(); }
  uint64_t pio(int index) const { return pio_[static_cast<size_t>(index + 1)].Get(); }
  uint64_t mmio(int index) const { return mmio_[static_cast<size_t>(index + 1)].Get(); }

 private:
  std::unique_ptr<RelaxedCounter[]> by_reason_;
  std::unique_ptr<RelaxedCounter[]> pio_;
  std::unique_ptr<RelaxedCounter[]> mmio_;
};

// A consistent-enough snapshot summed over vCPUs, for --stats and the API.
struct ExitStatsSnapshot {
  struct Row {
    std::string name;
    uint64_t count;
  };
  uint64_t total_exits = 0;
  std::vector<Row> by_reason;  // non-zero reasons only, by KVM name
  std::vector<Row> by_range;   // "pio serial@0x3f8", "pio unhandled", "mmio ..."
  std::string Format() const;
};

const char* KvmExitReasonName(uint32_t reason);

ExitStatsSnapshot SnapshotExitStats(const std::vector<const VcpuExitStats*>& vcpus,
                                    const Bus& pio, const Bus& mmio);

}  // namespace flint
