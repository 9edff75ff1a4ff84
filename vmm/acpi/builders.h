// One builder per ACPI table; tables.cc places them in guest memory. Each
// returns the complete table with its length and checksum filled in.
// Internal to vmm/acpi.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "vmm/layout.h"

namespace flint::acpi {

inline constexpr size_t kRsdpSize = 36;  // ACPI 2.0+ RSDP
inline constexpr size_t kFadtSize = 276;  // FADT revision 6

// RSDP revision 2 pointing at the XSDT (no RSDT: every 64-bit OS uses XSDT).
std::vector<uint8_t> BuildRsdp(uint64_t xsdt_gpa);
// XSDT listing the given tables.
absl::StatusOr<std::vector<uint8_t>> BuildXsdt(std::span<const uint64_t> table_gpas);
// Hardware-reduced FADT whose X_DSDT is dsdt_gpa.
absl::StatusOr<std::vector<uint8_t>> BuildFadt(uint64_t dsdt_gpa);
// What the DSDT says about the PCI host bridge (bus 0, segment 0).
struct PciHostBridge {
  layout::Window mmio32;  // BAR windows the bridge forwards
  layout::Window mmio64;  // size 0: none
  layout::Window ecam;    // reserved as a motherboard resource
};
// DSDT: \_S5_, the COM1 device and, given `pci`, \_SB.PCI0 (resources and
// interrupt routing) and \_SB.MRES (the ECAM reservation).
absl::StatusOr<std::vector<uint8_t>> BuildDsdt(const std::optional<PciHostBridge>& pci);
// MCFG (PCI Firmware 3.0 §4.1.2): one ECAM allocation for segment 0, buses
// 0..end_bus, at ecam_base.
absl::StatusOr<std::vector<uint8_t>> BuildMcfg(uint64_t ecam_base, uint8_t end_bus);
// MADT for vCPUs 0..num_cpus-1; InvalidArgument outside 1..kAcpiMaxCpus.
absl::StatusOr<std::vector<uint8_t>> BuildMadt(uint32_t num_cpus);

}  // namespace flint::acpi
