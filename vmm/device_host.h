// What the VM offers its PCI devices: MSI routes with an irqfd each, INTx
// lines and MMIO ioeventfds. The VM implements it over KVM (GSI routing,
// KVM_IRQFD, KVM_IOEVENTFD, KVM_IRQ_LINE); unit tests use a recording fake.
#pragma once

#include <cstdint>
#include <memory>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "vmm/devices/irq_line.h"

namespace flint {

// One MSI message source (an MSI-X table entry). Owns its GSI and irqfd;
// destroying it removes both.
class MsiVector {
 public:
  virtual ~MsiVector() = default;
  // Points the vector at an MSI message (address and data as the guest wrote
  // them into the MSI-X table). Cheap when unchanged.
  virtual absl::Status SetRoute(uint64_t address, uint32_t data) = 0;
  // Injects the interrupt at the last route set: one eventfd write, safe
  // from any thread, never blocks.
  virtual void Fire() = 0;
};

class DeviceHost {
 public:
  virtual ~DeviceHost() = default;
  virtual absl::StatusOr<std::unique_ptr<MsiVector>> AllocateMsi() = 0;
  // The IOAPIC input for a legacy INTx pin.
  virtual std::unique_ptr<IrqLine> IntxLine(uint32_t gsi) = 0;
  // A guest MMIO write of `len` bytes (0: any length) at `addr` signals
  // `event_fd` inside KVM without an exit.
  virtual absl::Status AddIoeventfd(int event_fd, uint64_t addr, uint32_t len) = 0;
  virtual absl::Status RemoveIoeventfd(int event_fd, uint64_t addr, uint32_t len) = 0;
};

}  // namespace flint
