#include "vmm/exit_stats.h"

#include <linux/kvm.h>

#include "absl/strings/str_format.h"

namespace flint {

VcpuExitStats::VcpuExitStats(size_t pio_ranges, size_t mmio_ranges)
    : by_reason_(new RelaxedCounter[kExitReasonSlots]),
      pio_(new RelaxedCounter[pio_ranges + 1]),
      mmio_(new RelaxedCounter[mmio_ranges + 1]) {}

const char* KvmExitReasonName(uint32_t reason) {
  switch (reason) {
    case KVM_EXIT_UNKNOWN: return "UNKNOWN";
    case KVM_EXIT_EXCEPTION: return "EXCEPTION";
    case KVM_EXIT_IO: return "IO";
    case KVM_EXIT_HYPERCALL: return "HYPERCALL";
    case KVM_EXIT_DEBUG: return "DEBUG";
    case KVM_EXIT_HLT: return "HLT";
    case KVM_EXIT_MMIO: return "MMIO";
    case KVM_EXIT_IRQ_WINDOW_OPEN: return "IRQ_WINDOW_OPEN";
    case KVM_EXIT_SHUTDOWN: return "SHUTDOWN";
    case KVM_EXIT_FAIL_ENTRY: return "FAIL_ENTRY";
    case KVM_EXIT_INTR: return "INTR";
    case KVM_EXIT_SET_TPR: return "SET_TPR";
    case KVM_EXIT_TPR_ACCESS: return "TPR_ACCESS";
    case KVM_EXIT_NMI: return "NMI";
    case KVM_EXIT_INTERNAL_ERROR: return "INTERNAL_ERROR";
    case KVM_EXIT_SYSTEM_EVENT: return "SYSTEM_EVENT";
    case KVM_EXIT_IOAPIC_EOI: return "IOAPIC_EOI";
    case KVM_EXIT_HYPERV: return "HYPERV";
    case KVM_EXIT_X86_RDMSR: return "X86_RDMSR";
    case KVM_EXIT_X86_WRMSR: return "X86_WRMSR";
    case KVM_EXIT_DIRTY_RING_FULL: return "DIRTY_RING_FULL";
    default: return "OTHER";
  }
}

ExitStatsSnapshot SnapshotExitStats(const std::vector<const VcpuExitStats*>& vcpus,
                                    const Bus& pio, const Bus& mmio) {
  ExitStatsSnapshot snap;
  for (uint32_t r = 0; r < kExitReasonSlots; ++r) {
    uint64_t n = 0;
    for (const auto* v : vcpus) n += v->exits(r);
    if (n == 0) continue;
    snap.total_exits += n;
    snap.by_reason.push_back({KvmExitReasonName(r), n});
  }
  auto ranges = [&](const Bus& bus, bool is_pio) {
    for (int i = -1; i < static_cast<int>(bus.size()); ++i) {
      uint64_t n = 0;
      for (const auto* v : vcpus) n += is_pio ? v->pio(i) : v->mmio(i);
      if (n == 0) continue;
      snap.by_range.push_back(
          {absl::StrFormat("%s %s", bus.name(), i < 0 ? "unhandled" : bus.range(i).label), n});
    }
  };
  ranges(pio, true);
  ranges(mmio, false);
  return snap;
}

std::string ExitStatsSnapshot::Format() const {
  std::string out = absl::StrFormat("exits: %u total\n", total_exits);
  for (const auto& r : by_reason) absl::StrAppendFormat(&out, "  %-18s %12u\n", r.name, r.count);
  if (!by_range.empty()) out += "accesses by range:\n";
  for (const auto& r : by_range) absl::StrAppendFormat(&out, "  %-26s %12u\n", r.name, r.count);
  return out;
}

}  // namespace flint
