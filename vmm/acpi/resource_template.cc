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
