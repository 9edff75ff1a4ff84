// flint's PCI bus: one host bridge, bus 0, up to 31 single-function devices.
// The root owns config-space dispatch (mechanism #1 at 0xcf8 and ECAM), BAR
// placement at device-add time (the firmware's job on real hardware), and
// routing of MMIO inside the two BAR windows to whichever BAR decodes there.
//
// Locking: one absl::Mutex. Config accesses (and the BarMapped and
// ConfigWritten calls they cause) hold it exclusively; MMIO in the windows
// holds it shared while it finds the BAR and calls BarRead/BarWrite. So a BAR
// handler never runs while config space changes, and may read its own config
// space. Neither kind of handler may call back into the root.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "devices/pci/pci_device.h"
#include "vmm/bus.h"
#include "vmm/device_host.h"
#include "vmm/layout.h"

namespace flint::pci {

inline constexpr int kNumSlots = 32;

class PciRoot {
 public:
  PciRoot(DeviceHost* host, layout::Window mmio32, layout::Window mmio64);
  PciRoot(const PciRoot&) = delete;
  PciRoot& operator=(const PciRoot&) = delete;

  // Puts the device in the next free slot (1..31; slot 0 is the host bridge
  // itself, a Red Hat 0x1b36:0x0008 "PCIe host bridge", class 0x060000),
  // places its declared BARs (64-bit BARs in the 64-bit window, 32-bit BARs
  // in the 32-bit window, naturally aligned, bump allocation), fills the
  // interrupt line with layout::PciIntxGsi(slot, pin - 1) and calls
  // device->AttachIntx(host->IntxLine(gsi)) when the device has an interrupt
  // pin. Memory decoding starts off (command = 0), as at power-on: the guest
  // turns it on. Errors: no free slot, a BAR that does not fit its window
  // (the device is then not added, and no window space is used).
  absl::StatusOr<uint8_t> AddDevice(std::shared_ptr<PciDevice> device);

  // Bus devices the VM registers: config mechanism #1 at port 0xcf8 (length
  // 8), ECAM at layout::kPciEcamBase (length layout::kPciEcamSize), and one
  // per BAR window (registered at the window's base, length its size).
  std::shared_ptr<BusDevice> config_io();
  std::shared_ptr<BusDevice> ecam();
  std::shared_ptr<BusDevice> mmio32_window();
  std::shared_ptr<BusDevice> mmio64_window();

  // For tests and --stats: the device in a slot (nullptr if none).
  std::shared_ptr<PciDevice> device(uint8_t slot) const;

 private:
  class ConfigIo;
  class Ecam;
  class BarWindow;

  // A BAR that currently decodes.
  struct Mapping {
    uint64_t base;
    uint64_t size;
    uint8_t slot;
    int bar;
  };

  // Config space of bus 0 / `slot` / function `fn`; anything that names no
  // device reads all ones and drops writes.
  void ConfigRead(uint8_t slot, uint8_t fn, uint16_t reg, std::span<uint8_t> data)
      ABSL_LOCKS_EXCLUDED(mu_);
  void ConfigWrite(uint8_t slot, uint8_t fn, uint16_t reg, std::span<const uint8_t> data)
      ABSL_LOCKS_EXCLUDED(mu_);
  void ConfigReadLocked(uint8_t slot, uint8_t fn, uint16_t reg, std::span<uint8_t> data)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ConfigWriteLocked(uint8_t slot, uint8_t fn, uint16_t reg, std::span<const uint8_t> data)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Recomputes which BARs decode where, tells devices what changed.
  void RemapLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Where BAR `bar` of the device in `slot` should decode now, if anywhere.
  std::optional<uint64_t> DecodeAddressLocked(uint8_t slot, int bar) const
      ABSL_SHARED_LOCKS_REQUIRED(mu_);
  bool InsideAWindow(uint64_t base, uint64_t size) const;
  // The mapping that holds all of [gpa, gpa + len), or nullptr.
  const Mapping* FindLocked(uint64_t gpa, uint64_t len) const ABSL_SHARED_LOCKS_REQUIRED(mu_);
  void BarAccess(uint64_t gpa, std::span<uint8_t> read, std::span<const uint8_t> write)
      ABSL_LOCKS_EXCLUDED(mu_);

  DeviceHost* const host_;
  const layout::Window mmio32_;
  const layout::Window mmio64_;

  mutable absl::Mutex mu_;
  std::array<std::shared_ptr<PciDevice>, kNumSlots> slots_ ABSL_GUARDED_BY(mu_);
  uint64_t next32_ ABSL_GUARDED_BY(mu_);  // bump pointers for BAR placement
  uint64_t next64_ ABSL_GUARDED_BY(mu_);
  uint32_t config_address_ ABSL_GUARDED_BY(mu_) = 0;  // the dword at 0xcf8
  std::vector<Mapping> mappings_ ABSL_GUARDED_BY(mu_);  // sorted by base, disjoint

  std::shared_ptr<BusDevice> config_io_;
  std::shared_ptr<BusDevice> ecam_;
  std::shared_ptr<BusDevice> mmio32_window_;
  std::shared_ptr<BusDevice> mmio64_window_;
};

}  // namespace flint::pci
