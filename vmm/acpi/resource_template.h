// ResourceTemplate(): the byte stream of small resource descriptors that a
// _CRS returns (ACPI 6.5 §6.4), ending with an End Tag and its checksum.
// Internal to vmm/acpi.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "vmm/acpi/aml.h"

namespace flint::acpi {

class ResourceTemplate {
 public:
  // IO(Decode16, min, max, alignment, length) (§6.4.2.5).
  ResourceTemplate& Io16(uint16_t min, uint16_t max, uint8_t alignment, uint8_t length);
  // IRQNoFlags(){irq}: edge triggered, active high, exclusive (§6.4.2.1).
  ResourceTemplate& IrqNoFlags(uint8_t irq);

  // The descriptors plus the End Tag, whose checksum byte makes the whole
  // template sum to zero.
  std::vector<uint8_t> Bytes() const;
  // The template as an AML Buffer object; carries any error from building it.
  Aml ToAml() const;

 private:
  std::vector<uint8_t> bytes_;
  absl::Status status_;
};

}  // namespace flint::acpi
