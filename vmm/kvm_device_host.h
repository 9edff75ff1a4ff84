// DeviceHost over KVM: MSI routes in the VM's GSI routing table with one
// irqfd each, INTx through KVM_IRQ_LINE (shared lines ORed), and MMIO
// ioeventfds.
//
// KVM_SET_GSI_ROUTING replaces the whole table, so this class keeps the
// table: the in-kernel irqchip's pins (the kernel's default routes, stated
// explicitly) plus one MSI route per vector that has one.
#pragma once

#include <linux/kvm.h>

#include <cstdint>
#include <map>
#include <memory>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "vmm/device_host.h"
#include "vmm/kvm/kvm.h"
#include "vmm/layout.h"

namespace flint {

class KvmDeviceHost : public DeviceHost {
 public:
  // GSIs for MSI are handed out from layout::kMsiGsiBase up to `max_gsi`.
  explicit KvmDeviceHost(KvmVm* vm, uint32_t max_gsi = 1023) : vm_(vm), max_gsi_(max_gsi) {}

  absl::StatusOr<std::unique_ptr<MsiVector>> AllocateMsi() override;
  // Lines given for one GSI share it: the GSI is asserted while any is.
  std::unique_ptr<IrqLine> IntxLine(uint32_t gsi) override;
  absl::Status AddIoeventfd(int event_fd, uint64_t addr, uint32_t len) override;
  absl::Status RemoveIoeventfd(int event_fd, uint64_t addr, uint32_t len) override;

  // The routing table as last committed (for tests).
  std::vector<kvm_irq_routing_entry> RoutingTable() const;

 private:
  class Vector;
  class IntxSource;

  // Sets (route != nullptr) or removes the MSI route of `gsi` and commits.
  absl::Status UpdateRoute(uint32_t gsi, const kvm_irq_routing_msi* route);
  void ReleaseGsi(uint32_t gsi);
  // One source's new level: *asserted is that source's own state.
  void SetIntx(uint32_t gsi, bool* asserted, bool level) ABSL_LOCKS_EXCLUDED(intx_mu_);
  std::vector<kvm_irq_routing_entry> TableLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  KvmVm* const vm_;
  const uint32_t max_gsi_;
  mutable absl::Mutex mu_;
  std::map<uint32_t, kvm_irq_routing_msi> msi_routes_ ABSL_GUARDED_BY(mu_);
  std::vector<uint32_t> free_gsis_ ABSL_GUARDED_BY(mu_);
  uint32_t next_gsi_ ABSL_GUARDED_BY(mu_) = layout::kMsiGsiBase;
  // INTx: how many sources assert each GSI. Its own lock: lines are set from
  // the event loop while routes change under mu_.
  absl::Mutex intx_mu_;
  std::map<uint32_t, uint32_t> intx_asserted_ ABSL_GUARDED_BY(intx_mu_);
};

}  // namespace flint
