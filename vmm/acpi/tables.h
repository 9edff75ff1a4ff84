// ACPI tables for flint's hardware-reduced x86 platform: RSDP, XSDT, FADT,
// DSDT and MADT, written into guest memory at layout::kAcpiStart.
#pragma once

#include <cstdint>

#include "absl/status/statusor.h"
#include "vmm/guest_memory.h"

namespace flint {

struct AcpiConfig {
  uint32_t num_cpus = 1;
};

// The most vCPUs the MADT describes: xAPIC IDs 0..253, with 254 for the
// IOAPIC and 255 being the broadcast ID. More would need x2APIC entries and an
// x2APIC-only guest with interrupt remapping, which flint does not offer.
inline constexpr uint32_t kAcpiMaxCpus = 254;

// Writes the tables and returns the guest physical address of the RSDP.
absl::StatusOr<uint64_t> WriteAcpiTables(const GuestMemory& mem, const AcpiConfig& cfg);

}  // namespace flint
