#include "vmm/devices/acpi_pm.h"

#include <algorithm>

#include "vmm/layout.h"

namespace flint {

void AcpiPm::Read(uint64_t, std::span<uint8_t> data) { std::fill(data.begin(), data.end(), 0); }

void AcpiPm::Write(uint64_t offset, std::span<const uint8_t> data) {
  if (offset != 0) return;  // sleep status register: write-1-to-clear, nothing to clear
  uint8_t v = data[0];
  uint8_t slp_typ = (v >> layout::kSlpTypShift) & 0x7;
  if ((v & layout::kSlpEn) && slp_typ == layout::kS5SlpTyp) {
    stop_(StopReason{StopKind::kPowerOff, kExitOk, "guest entered ACPI S5 (power off)"});
  }
}

}  // namespace flint
