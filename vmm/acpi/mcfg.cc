// The PCI Express memory-mapped configuration table (PCI Firmware 3.0
// §4.1.2): where the ECAM lives, so the OS uses it instead of port 0xcf8.
#include "vmm/acpi/builders.h"
#include "vmm/acpi/sdt.h"

namespace flint::acpi {
namespace {

constexpr uint8_t kMcfgRevision = 1;
constexpr size_t kMcfgReserved = 8;  // between the header and the allocations

}  // namespace

absl::StatusOr<std::vector<uint8_t>> BuildMcfg(uint64_t ecam_base, uint8_t end_bus) {
  ByteWriter w = BeginSdt("MCFG", kMcfgRevision);
  w.Zeros(kMcfgReserved);
  // One allocation: base address, PCI segment group, start and end bus.
  w.U64(ecam_base);
  w.U16(0);
  w.U8(0);
  w.U8(end_bus);
  w.U32(0);  // reserved
  return FinishSdt(std::move(w));
}

}  // namespace flint::acpi
