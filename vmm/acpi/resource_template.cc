#include "vmm/acpi/resource_template.h"

#include "absl/strings/str_format.h"
#include "vmm/acpi/sdt.h"

namespace flint::acpi {
namespace {

// Small resource header byte: bit 7 = 0, bits 6:3 item name, bits 2:0 length.
constexpr uint8_t SmallTag(uint8_t name, uint8_t length) {
  return static_cast<uint8_t>((name << 3) | length);
}
constexpr uint8_t kIrqName = 0x04;
constexpr uint8_t kIoName = 0x08;
constexpr uint8_t kEndTagName = 0x0f;
constexpr uint8_t kIoDecode16 = 0x01;  // the device decodes all 16 address bits

// Large resource items: bit 7 set, bits 6:0 the item name.
constexpr uint8_t kLargeItem = 0x80;
constexpr uint8_t kMemory32FixedName = 0x06;
constexpr uint8_t kDWordAddressName = 0x07;
constexpr uint8_t kWordAddressName = 0x08;
constexpr uint8_t kQWordAddressName = 0x0a;

// Address space descriptors (§6.4.3.5): resource types and flags.
constexpr uint8_t kMemoryRange = 0;
constexpr uint8_t kIoRange = 1;
constexpr uint8_t kBusNumberRange = 2;
// General flags: bit 3 _MAF, bit 2 _MIF, bit 1 _DEC (0: positive decode),
// bit 0 clear: the bridge produces the range for the devices below it.
constexpr uint8_t kProducerFixedRange = (1 << 3) | (1 << 2);
constexpr uint8_t kIoEntireRange = 0x03;           // _RNG: ISA and non-ISA ports
constexpr uint8_t kMemNonCacheableReadWrite = 0x01;  // _MEM = 0, _RW = 1
constexpr uint8_t kMemory32FixedReadWrite = 0x01;

}  // namespace

ResourceTemplate& ResourceTemplate::Io16(uint16_t min, uint16_t max, uint8_t alignment,
                                         uint8_t length) {
  bytes_.push_back(SmallTag(kIoName, 7));
  bytes_.push_back(kIoDecode16);
  bytes_.push_back(static_cast<uint8_t>(min));
  bytes_.push_back(static_cast<uint8_t>(min >> 8));
  bytes_.push_back(static_cast<uint8_t>(max));
  bytes_.push_back(static_cast<uint8_t>(max >> 8));
  bytes_.push_back(alignment);
  bytes_.push_back(length);
  return *this;
}

ResourceTemplate& ResourceTemplate::IrqNoFlags(uint8_t irq) {
  if (irq > 15) {
    status_ = absl::InvalidArgumentError(
        absl::StrFormat("IRQ %u does not fit an IRQ descriptor's 16-bit mask", irq));
    return *this;
  }
  // The two-byte form (no information byte) means edge, active high, exclusive.
  uint16_t mask = static_cast<uint16_t>(1u << irq);
  bytes_.push_back(SmallTag(kIrqName, 2));
  bytes_.push_back(static_cast<uint8_t>(mask));
  bytes_.push_back(static_cast<uint8_t>(mask >> 8));
  return *this;
}

void ResourceTemplate::Le(uint64_t v, size_t n) {
  for (size_t i = 0; i < n; ++i) bytes_.push_back(static_cast<uint8_t>(v >> (8 * i)));
}

void ResourceTemplate::LargeHeader(uint8_t name, uint16_t length) {
  bytes_.push_back(static_cast<uint8_t>(kLargeItem | name));
  Le(length, 2);
}

void ResourceTemplate::AddressSpace(uint8_t item, size_t width, uint8_t type,
                                    uint8_t type_flags, uint64_t min, uint64_t max,
                                    const char* what) {
  const uint64_t field_max = width == 8 ? ~0ull : (1ull << (8 * width)) - 1;
  // The length is max - min + 1 and must fit the same width as the bounds.
  if (min > max || max - min >= field_max) {
    status_ = absl::InvalidArgumentError(absl::StrFormat(
        "%s range [%#x, %#x] is empty or its length does not fit %u bytes", what, min, max,
        width));
    return;
  }
  LargeHeader(item, static_cast<uint16_t>(3 + 5 * width));
  bytes_.push_back(type);
  bytes_.push_back(kProducerFixedRange);
  bytes_.push_back(type_flags);
  Le(0, width);  // granularity: 0 for a fixed-size, fixed-place range
  Le(min, width);
  Le(max, width);
  Le(0, width);  // translation offset: CPU and PCI addresses agree
  Le(max - min + 1, width);
}

ResourceTemplate& ResourceTemplate::WordBusNumber(uint16_t min, uint16_t max) {
  AddressSpace(kWordAddressName, 2, kBusNumberRange, 0, min, max, "WordBusNumber");
  return *this;
}

ResourceTemplate& ResourceTemplate::WordIo(uint16_t min, uint16_t max) {
  AddressSpace(kWordAddressName, 2, kIoRange, kIoEntireRange, min, max, "WordIO");
  return *this;
}

ResourceTemplate& ResourceTemplate::DWordMemory(uint32_t min, uint32_t max) {
  AddressSpace(kDWordAddressName, 4, kMemoryRange, kMemNonCacheableReadWrite, min, max,
               "DWordMemory");
  return *this;
}

ResourceTemplate& ResourceTemplate::QWordMemory(uint64_t min, uint64_t max) {
  AddressSpace(kQWordAddressName, 8, kMemoryRange, kMemNonCacheableReadWrite, min, max,
               "QWordMemory");
  return *this;
}

ResourceTemplate& ResourceTemplate::Memory32Fixed(uint32_t base, uint32_t length) {
  if (length == 0 || base + uint64_t{length} - 1 > 0xffffffffu) {
    status_ = absl::InvalidArgumentError(absl::StrFormat(
        "Memory32Fixed [%#x, +%#x) is empty or leaves the 32-bit space", base, length));
    return *this;
  }
  LargeHeader(kMemory32FixedName, 9);
  bytes_.push_back(kMemory32FixedReadWrite);
  Le(base, 4);
  Le(length, 4);
  return *this;
}

std::vector<uint8_t> ResourceTemplate::Bytes() const {
  std::vector<uint8_t> out = bytes_;
  out.push_back(SmallTag(kEndTagName, 1));
  out.push_back(ChecksumFor(out));
  return out;
}

Aml ResourceTemplate::ToAml() const {
  if (!status_.ok()) return Aml::Error(status_);
  return Aml::Buffer(Bytes());
}

}  // namespace flint::acpi
