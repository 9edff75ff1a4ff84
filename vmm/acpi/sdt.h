// Byte-level helpers shared by every ACPI table: a little-endian writer, the
// 8-bit checksum, the common 36-byte system description table (SDT) header
// and the Generic Address Structure. Internal to vmm/acpi.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace flint::acpi {

inline constexpr size_t kSdtHeaderSize = 36;
inline constexpr size_t kSdtLengthOffset = 4;
inline constexpr size_t kSdtChecksumOffset = 9;

// Identification every flint table carries (ACPI 6.5 §5.2.6). The OEM fields
// are fixed-width and space padded; the creator is flint itself.
inline constexpr std::string_view kOemId = "FLINT ";        // 6 bytes
inline constexpr std::string_view kOemTableId = "FLINTVM ";  // 8 bytes
inline constexpr uint32_t kOemRevision = 1;
inline constexpr std::string_view kCreatorId = "FLNT";      // 4 bytes
inline constexpr uint32_t kCreatorRevision = 1;

// The byte that makes `bytes` (with it added) sum to zero modulo 256.
uint8_t ChecksumFor(std::span<const uint8_t> bytes);

// Sum of all bytes modulo 256; 0 for a correctly checksummed structure.
uint8_t ByteSum(std::span<const uint8_t> bytes);

// Append-only little-endian byte writer.
class ByteWriter {
 public:
  void U8(uint8_t v) { bytes_.push_back(v); }
  void U16(uint16_t v) { Le(v, 2); }
  void U32(uint32_t v) { Le(v, 4); }
  void U64(uint64_t v) { Le(v, 8); }
  void Bytes(std::span<const uint8_t> b) { bytes_.insert(bytes_.end(), b.begin(), b.end()); }
  // Exactly `width` bytes: `s` (truncated if longer) then space padding.
  void Text(std::string_view s, size_t width);
  void Zeros(size_t n) { bytes_.insert(bytes_.end(), n, 0); }

  // Overwrites bytes already written (for lengths and checksums known last).
  void PatchU8(size_t offset, uint8_t v) { bytes_.at(offset) = v; }
  void PatchU32(size_t offset, uint32_t v);

  size_t size() const { return bytes_.size(); }
  const std::vector<uint8_t>& bytes() const { return bytes_; }
  std::vector<uint8_t> Take() { return std::move(bytes_); }

 private:
  void Le(uint64_t v, size_t n);
  std::vector<uint8_t> bytes_;
};

// A writer that starts with an SDT header for `signature` (4 characters);
// length and checksum are filled in by FinishSdt.
ByteWriter BeginSdt(std::string_view signature, uint8_t revision);

// Patches the header's length and checksum; fails if the table outgrew the
// 32-bit length field.
absl::StatusOr<std::vector<uint8_t>> FinishSdt(ByteWriter table);

// Generic Address Structure (ACPI 6.5 §5.2.3.2), 12 bytes.
enum class AddressSpace : uint8_t { kSystemMemory = 0, kSystemIo = 1 };
enum class AccessSize : uint8_t { kUndefined = 0, kByte = 1, kWord = 2, kDword = 3, kQword = 4 };
struct Gas {
  AddressSpace space = AddressSpace::kSystemMemory;
  uint8_t bit_width = 0;
  uint8_t bit_offset = 0;
  AccessSize access = AccessSize::kUndefined;
  uint64_t address = 0;
};
inline constexpr size_t kGasSize = 12;
void WriteGas(ByteWriter& w, const Gas& gas);

}  // namespace flint::acpi
