// A function on flint's PCI bus. The bus (PciRoot) owns config-space
// dispatch, BAR placement and MMIO routing to BARs; a device provides its
// config space, serves accesses inside its BARs, and learns when a BAR moves.
//
// Threading: PciRoot serialises every config access and BAR-map change with
// its own lock. BarRead/BarWrite run on vCPU threads, possibly several at a
// time; a device that shares state with them (or with the event loop) locks.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string_view>

#include "devices/pci/config_space.h"
#include "vmm/devices/irq_line.h"

namespace flint::pci {

class PciDevice {
 public:
  virtual ~PciDevice() = default;
  virtual std::string_view name() const = 0;

  virtual PciConfigSpace& config() = 0;
  // After PciRoot applied a guest write to config space (write masks and BAR
  // semantics already done): lets the device react (e.g. the MSI-X
  // capability's enable and function-mask bits).
  virtual void ConfigWritten(uint16_t offset, size_t len) {
    (void)offset;
    (void)len;
  }

  // Accesses inside memory BAR `bar` (0..5), `offset` from the BAR's base.
  // data.size() is 1, 2, 4 or 8.
  virtual void BarRead(int bar, uint64_t offset, std::span<uint8_t> data) = 0;
  virtual void BarWrite(int bar, uint64_t offset, std::span<const uint8_t> data) = 0;

  // The BAR now decodes at `gpa`, or at nothing (nullopt: memory decoding
  // turned off, or the BAR is being moved). Devices that put ioeventfds in a
  // BAR move them here. Called with PciRoot's lock held.
  virtual void BarMapped(int bar, std::optional<uint64_t> gpa) {
    (void)bar;
    (void)gpa;
  }

  // Given by PciRoot::AddDevice when the config space has an interrupt pin:
  // the IOAPIC line that pin is wired to (the line register holds its GSI).
  virtual void AttachIntx(std::unique_ptr<IrqLine> line) { (void)line; }
};

}  // namespace flint::pci
