// One builder per ACPI table; tables.cc places them in guest memory. Each
// returns the complete table with its length and checksum filled in.
// Internal to vmm/acpi.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "absl/status/statusor.h"

namespace flint::acpi {

inline constexpr size_t kRsdpSize = 36;  // ACPI 2.0+ RSDP
inline constexpr size_t kFadtSize = 276;  // FADT revision 6

// RSDP revision 2 pointing at the XSDT (no RSDT: every 64-bit OS uses XSDT).
std::vector<uint8_t> BuildRsdp(uint64_t xsdt_gpa);
// XSDT listing the given tables.
absl::StatusOr<std::vector<uint8_t>> BuildXsdt(std::span<const uint64_t> table_gpas);
// Hardware-reduced FADT whose X_DSDT is dsdt_gpa.
absl::StatusOr<std::vector<uint8_t>> BuildFadt(uint64_t dsdt_gpa);
// DSDT: \_S5_ and the COM1 device.
absl::StatusOr<std::vector<uint8_t>> BuildDsdt();
// MADT for vCPUs 0..num_cpus-1; InvalidArgument outside 1..kAcpiMaxCpus.
absl::StatusOr<std::vector<uint8_t>> BuildMadt(uint32_t num_cpus);

}  // namespace flint::acpi
