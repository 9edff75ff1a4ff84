// ResourceTemplate(): the byte stream of small resource descriptors that a
// _CRS returns (ACPI 6.5 §6.4), ending with an End Tag and its checksum.
// Internal to vmm/acpi.
#pragma once

#include <cstddef>
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

  // Large descriptors (§6.4.3). The address space ones describe a range a
  // bridge forwards: ResourceProducer, MinFixed, MaxFixed, PosDecode, no
  // translation, granularity 0, length max - min + 1 (min > max, or a length
  // the field cannot hold, is an error carried to ToAml()).
  // WordBusNumber (§6.4.3.5.3).
  ResourceTemplate& WordBusNumber(uint16_t min, uint16_t max);
  // WordIO, EntireRange (§6.4.3.5.3).
  ResourceTemplate& WordIo(uint16_t min, uint16_t max);
  // DWordMemory / QWordMemory, NonCacheable, ReadWrite (§6.4.3.5.2, §6.4.3.5.1).
  // NonCacheable rather than Prefetchable on purpose: an OS will not put a
  // non-prefetchable BAR into a prefetchable window.
  ResourceTemplate& DWordMemory(uint32_t min, uint32_t max);
  ResourceTemplate& QWordMemory(uint64_t min, uint64_t max);
  // Memory32Fixed(ReadWrite, base, length) (§6.4.3.4).
  ResourceTemplate& Memory32Fixed(uint32_t base, uint32_t length);

  // The descriptors plus the End Tag, whose checksum byte makes the whole
  // template sum to zero.
  std::vector<uint8_t> Bytes() const;
  // The template as an AML Buffer object; carries any error from building it.
  Aml ToAml() const;

 private:
  // Header of a large item: tag byte, then the 16-bit length of what follows.
  void LargeHeader(uint8_t name, uint16_t length);
  void Le(uint64_t v, size_t n);
  // Resource type, general and type-specific flags, then granularity, min,
  // max, translation offset and length, each `width` bytes.
  void AddressSpace(uint8_t item, size_t width, uint8_t type, uint8_t type_flags, uint64_t min,
                    uint64_t max, const char* what);

  std::vector<uint8_t> bytes_;
  absl::Status status_;
};

}  // namespace flint::acpi
