// ACPI tables for flint's hardware-reduced x86 platform: RSDP, XSDT, FADT,
// DSDT, MADT and, with a PCI bus, MCFG, written into guest memory at
// layout::kAcpiStart.
#pragma once

#include <cstdint>

#include "absl/status/statusor.h"
#include "vmm/guest_memory.h"
#include "vmm/layout.h"

namespace flint {

struct AcpiConfig {
  uint32_t num_cpus = 1;
  // The VM has a PCI bus (devices/pci/PciRoot): the DSDT then describes the
  // host bridge \_SB.PCI0 (bus 0, the 32-bit window from layout.h, the
  // 64-bit window below, INTx routing) and reserves the ECAM in \_SB.MRES,
  // and an MCFG table points at the ECAM.
  bool pci = false;
  // The 64-bit BAR window: layout::Pci64Window(end of RAM). Size 0: none.
  layout::Window pci_mmio64{};
};

// The most vCPUs the MADT describes: xAPIC IDs 0..253, with 254 for the
// IOAPIC and 255 being the broadcast ID. More would need x2APIC entries and an
// x2APIC-only guest with interrupt remapping, which flint does not offer.
inline constexpr uint32_t kAcpiMaxCpus = 254;

// Writes the tables and returns the guest physical address of the RSDP.
absl::StatusOr<uint64_t> WriteAcpiTables(const GuestMemory& mem, const AcpiConfig& cfg);

}  // namespace flint
