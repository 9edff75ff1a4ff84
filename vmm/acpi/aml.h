// A minimal AML (ACPI Machine Language) encoder: just the constructs flint's
// DSDT needs: Name, Scope, Device, Package, Buffer, integers, strings and
// EISA IDs (ACPI 6.5 §20.2). Internal to vmm/acpi.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace flint::acpi {

// An AML NameString (§20.2.2) such as "COM1", "\\_SB_" or "\\_SB_.COM1",
// encoded at compile time: a malformed name is a build error, not a runtime
// one. Segments shorter than four characters are padded with '_'.
class NameString {
 public:
  consteval NameString(const char* path) {  // NOLINT: implicit by design
    size_t i = 0;
    if (path[i] == '\\') {
      Put(0x5c);  // RootChar
      ++i;
    } else {
      while (path[i] == '^') {
        Put(0x5e);  // ParentPrefixChar
        ++i;
      }
    }
    // Split into segments first: the prefix depends on how many there are.
    std::array<std::array<char, 4>, kMaxSegments> segs{};
    size_t count = 0;
    while (path[i] != '\0') {
      if (count == kMaxSegments) throw "AML name has too many segments";
      std::array<char, 4> seg = {'_', '_', '_', '_'};
      size_t len = 0;
      for (; path[i] != '\0' && path[i] != '.'; ++i, ++len) {
        char c = path[i];
        bool lead = (c >= 'A' && c <= 'Z') || c == '_';
        bool digit = c >= '0' && c <= '9';
        if (len == 4 || !(lead || (len > 0 && digit))) throw "invalid AML name segment";
        seg[len] = c;
      }
      if (len == 0) throw "empty AML name segment";
      segs[count++] = seg;
      if (path[i] == '.') {
        ++i;
        if (path[i] == '\0') throw "AML name ends with '.'";
      }
    }
    if (count == 0) {
      if (size_ == 0) throw "empty AML name";
      Put(0x00);  // NullName after a prefix
    } else if (count == 2) {
      Put(0x2e);  // DualNamePrefix
    } else if (count > 2) {
      Put(0x2f);  // MultiNamePrefix
      Put(static_cast<uint8_t>(count));
    }
    for (size_t s = 0; s < count; ++s) {
      for (char c : segs[s]) Put(static_cast<uint8_t>(c));
    }
  }

  std::span<const uint8_t> bytes() const { return {bytes_.data(), size_}; }

 private:
  static constexpr size_t kMaxSegments = 8;
  consteval void Put(uint8_t b) {
    if (size_ == bytes_.size()) throw "AML name too long";
    bytes_[size_++] = b;
  }
  std::array<uint8_t, 64> bytes_{};  // prefixes + up to 8 segments
  size_t size_ = 0;
};

// The 32-bit compressed EISA ID for a string like "PNP0501" (§19.6.44): three
// upper-case letters packed 5 bits each, then four hex digits; stored so the
// bytes in memory read letters-high, letters-low, digits 0-1, digits 2-3.
consteval uint32_t EisaId(std::string_view id) {
  if (id.size() != 7) throw "EISA ID must be 3 letters and 4 hex digits";
  uint32_t letters = 0;
  for (size_t i = 0; i < 3; ++i) {
    if (id[i] < 'A' || id[i] > 'Z') throw "EISA ID vendor must be upper-case letters";
    letters = (letters << 5) | static_cast<uint32_t>(id[i] - 0x40);
  }
  uint32_t digits = 0;
  for (size_t i = 3; i < 7; ++i) {
    char c = id[i];
    uint32_t d = 0;
    if (c >= '0' && c <= '9') {
      d = static_cast<uint32_t>(c - '0');
    } else if (c >= 'A' && c <= 'F') {
      d = static_cast<uint32_t>(c - 'A' + 10);
    } else {
      throw "EISA ID product must be upper-case hex digits";
    }
    digits = (digits << 4) | d;
  }
  // Byte order in memory: letters >> 8, letters & 0xff, digits >> 8, digits & 0xff.
  return (letters >> 8) | ((letters & 0xff) << 8) | ((digits >> 8) << 16) | ((digits & 0xff) << 24);
}

// The PkgLength encoding (§20.2.4) for a package whose contents after the
// PkgLength field are `body_len` bytes: 1 to 4 bytes, counting themselves.
absl::StatusOr<std::vector<uint8_t>> EncodePkgLength(size_t body_len);

// A fragment of AML. Builders never fail on the spot: an error (an encoding
// limit exceeded) is kept in status() and carried into every fragment built
// from this one, so a whole tree is checked once at the end.
class Aml {
 public:
  static Aml Integer(uint64_t v);   // the shortest encoding: Zero/One/Ones or a prefix
  static Aml DWord(uint32_t v);     // always DWordPrefix (how EISA IDs are written)
  static Aml String(std::string_view s);  // ASCII 0x01-0x7f (no NUL)
  static Aml Package(const std::vector<Aml>& elements);
  static Aml Buffer(std::span<const uint8_t> data);
  static Aml Name(const NameString& name, const Aml& value);
  static Aml Scope(const NameString& name, const std::vector<Aml>& terms);
  static Aml Device(const NameString& name, const std::vector<Aml>& terms);
  static Aml Error(absl::Status s);

  const absl::Status& status() const { return status_; }
  const std::vector<uint8_t>& bytes() const { return bytes_; }

 private:
  // opcode bytes + PkgLength + head + concatenated parts.
  static Aml Packaged(std::span<const uint8_t> opcode, std::span<const uint8_t> head,
                      const std::vector<Aml>& parts);

  std::vector<uint8_t> bytes_;
  absl::Status status_;
};

}  // namespace flint::acpi
