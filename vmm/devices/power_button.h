// The power button of flint's hardware-reduced ACPI platform. Such a machine
// has no fixed-feature power button and no SCI, so the button is a
// control-method device (\_SB.PWRB, PNP0C0C) signalled through a Generic
// Event Device (\_SB.GED0, ACPI0013; ACPI 6.5 §5.6.9): this device is the
// GED's event register and interrupt, and the DSDT's GED0._EVT reads the
// register and sends Notify(\_SB.PWRB, 0x80), which an OS takes as "the
// user pressed the power button" (Linux: an orderly power-off).
//
// Register (layout::kPortGed, one byte of port I/O):
//   read   the pending event bits (layout::kGedEventPowerButton), which the
//          read clears; a read wider than a byte gets zeros above byte 0
//   write  ignored
// Interrupt: layout::kGedGsi, level-triggered, active high, asserted exactly
// while an event is pending. Level rather than edge so an event cannot be
// lost: a press that lands while the OS handles the previous one keeps the
// line up, and the OS sees it when it unmasks the line again.
#pragma once

#include <cstdint>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "vmm/bus.h"
#include "vmm/devices/irq_line.h"

namespace flint {

class PowerButton : public BusDevice {
 public:
  // `irq` must outlive the device.
  explicit PowerButton(IrqLine* irq) : irq_(irq) {}
  std::string_view name() const override { return "acpi-ged"; }
  void Read(uint64_t offset, std::span<uint8_t> data) override;
  void Write(uint64_t, std::span<const uint8_t>) override {}

  // Latches a power-button event and raises the interrupt. Any thread.
  void Press();
  // The event bits the guest has not read yet (tests, diagnostics).
  uint8_t pending();

 private:
  absl::Mutex mu_;
  IrqLine* const irq_;
  uint8_t pending_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace flint
