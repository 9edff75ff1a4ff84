#include "vmm/acpi/sdt.h"

#include <limits>

#include "absl/status/status.h"
#include "absl/strings/str_format.h"

namespace flint::acpi {

uint8_t ByteSum(std::span<const uint8_t> bytes) {
  uint8_t sum = 0;
  for (uint8_t b : bytes) sum = static_cast<uint8_t>(sum + b);
  return sum;
}

uint8_t ChecksumFor(std::span<const uint8_t> bytes) {
  return static_cast<uint8_t>(0x100 - ByteSum(bytes));
}

void ByteWriter::Le(uint64_t v, size_t n) {
  for (size_t i = 0; i < n; ++i) bytes_.push_back(static_cast<uint8_t>(v >> (8 * i)));
}

void ByteWriter::PatchU32(size_t offset, uint32_t v) {
  for (size_t i = 0; i < 4; ++i) bytes_.at(offset + i) = static_cast<uint8_t>(v >> (8 * i));
}

void ByteWriter::Text(std::string_view s, size_t width) {
  for (size_t i = 0; i < width; ++i) U8(i < s.size() ? static_cast<uint8_t>(s[i]) : ' ');
}

ByteWriter BeginSdt(std::string_view signature, uint8_t revision) {
  ByteWriter w;
  w.Text(signature, 4);
  w.U32(0);  // length: FinishSdt
  w.U8(revision);
  w.U8(0);   // checksum: FinishSdt
  w.Text(kOemId, 6);
  w.Text(kOemTableId, 8);
  w.U32(kOemRevision);
  w.Text(kCreatorId, 4);
  w.U32(kCreatorRevision);
  return w;
}

absl::StatusOr<std::vector<uint8_t>> FinishSdt(ByteWriter table) {
  if (table.size() > std::numeric_limits<uint32_t>::max()) {
    return absl::OutOfRangeError(
        absl::StrFormat("ACPI table of %u bytes exceeds the 32-bit length field", table.size()));
  }
  table.PatchU32(kSdtLengthOffset, static_cast<uint32_t>(table.size()));
  table.PatchU8(kSdtChecksumOffset, ChecksumFor(table.bytes()));
  return table.Take();
}

void WriteGas(ByteWriter& w, const Gas& gas) {
  w.U8(static_cast<uint8_t>(gas.space));
  w.U8(gas.bit_width);
  w.U8(gas.bit_offset);
  w.U8(static_cast<uint8_t>(gas.access));
  w.U64(gas.address);
}

}  // namespace flint::acpi
