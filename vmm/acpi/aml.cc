#include "vmm/acpi/aml.h"

#include "absl/strings/str_format.h"

namespace flint::acpi {
namespace {

// Opcodes (ACPI 6.5 §20.3).
constexpr uint8_t kZeroOp = 0x00;
constexpr uint8_t kOneOp = 0x01;
constexpr uint8_t kNameOp = 0x08;
constexpr uint8_t kBytePrefix = 0x0a;
constexpr uint8_t kWordPrefix = 0x0b;
constexpr uint8_t kDWordPrefix = 0x0c;
constexpr uint8_t kStringPrefix = 0x0d;
constexpr uint8_t kQWordPrefix = 0x0e;
constexpr uint8_t kScopeOp = 0x10;
constexpr uint8_t kBufferOp = 0x11;
constexpr uint8_t kPackageOp = 0x12;
constexpr uint8_t kOnesOp = 0xff;
constexpr uint8_t kExtOpPrefix = 0x5b;
constexpr uint8_t kDeviceOp = 0x82;

// PkgLength carries at most 28 bits (4 + 3 * 8).
constexpr size_t kMaxPkgLength = (1u << 28) - 1;
// A Package's NumElements is one byte.
constexpr size_t kMaxPackageElements = 255;

void AppendLe(std::vector<uint8_t>& out, uint64_t v, size_t n) {
  for (size_t i = 0; i < n; ++i) out.push_back(static_cast<uint8_t>(v >> (8 * i)));
}

}  // namespace

absl::StatusOr<std::vector<uint8_t>> EncodePkgLength(size_t body_len) {
  // One byte holds 6 bits; with n follow-on bytes the lead byte holds 4 bits
  // and each follow-on byte 8 more. The encoded value includes the PkgLength
  // bytes themselves.
  if (body_len + 1 <= 0x3f) return std::vector<uint8_t>{static_cast<uint8_t>(body_len + 1)};
  for (size_t n = 2; n <= 4; ++n) {
    size_t total = body_len + n;
    if (total >> (4 + 8 * (n - 1)) != 0) continue;
    std::vector<uint8_t> out;
    out.push_back(static_cast<uint8_t>(((n - 1) << 6) | (total & 0x0f)));
    for (size_t i = 1; i < n; ++i) out.push_back(static_cast<uint8_t>(total >> (4 + 8 * (i - 1))));
    return out;
  }
  return absl::OutOfRangeError(absl::StrFormat(
      "AML package of %u bytes exceeds the PkgLength limit of %u", body_len, kMaxPkgLength));
}

Aml Aml::Integer(uint64_t v) {
  Aml a;
  if (v == 0) {
    a.bytes_ = {kZeroOp};
  } else if (v == 1) {
    a.bytes_ = {kOneOp};
  } else if (v == ~0ull) {
    a.bytes_ = {kOnesOp};  // all ones in a revision 2 (64-bit integer) table
  } else if (v <= 0xff) {
    a.bytes_ = {kBytePrefix};
    AppendLe(a.bytes_, v, 1);
  } else if (v <= 0xffff) {
    a.bytes_ = {kWordPrefix};
    AppendLe(a.bytes_, v, 2);
  } else if (v <= 0xffffffff) {
    a.bytes_ = {kDWordPrefix};
    AppendLe(a.bytes_, v, 4);
  } else {
    a.bytes_ = {kQWordPrefix};
    AppendLe(a.bytes_, v, 8);
  }
  return a;
}

Aml Aml::DWord(uint32_t v) {
  Aml a;
  a.bytes_ = {kDWordPrefix};
  AppendLe(a.bytes_, v, 4);
  return a;
}

Aml Aml::String(std::string_view s) {
  Aml a;
  a.bytes_ = {kStringPrefix};
  for (char ch : s) {
    auto c = static_cast<unsigned char>(ch);
    if (c < 0x01 || c > 0x7f) {
      return Error(absl::InvalidArgumentError("AML strings must be 7-bit ASCII without NUL"));
    }
    a.bytes_.push_back(c);
  }
  a.bytes_.push_back(0);
  return a;
}

Aml Aml::Error(absl::Status s) {
  Aml a;
  a.status_ = std::move(s);
  return a;
}

Aml Aml::Packaged(std::span<const uint8_t> opcode, std::span<const uint8_t> head,
                  const std::vector<Aml>& parts) {
  std::vector<uint8_t> body(head.begin(), head.end());
  for (const Aml& p : parts) {
    if (!p.status_.ok()) return Error(p.status_);
    body.insert(body.end(), p.bytes_.begin(), p.bytes_.end());
  }
  absl::StatusOr<std::vector<uint8_t>> len = EncodePkgLength(body.size());
  if (!len.ok()) return Error(len.status());
  Aml a;
  a.bytes_.assign(opcode.begin(), opcode.end());
  a.bytes_.insert(a.bytes_.end(), len->begin(), len->end());
  a.bytes_.insert(a.bytes_.end(), body.begin(), body.end());
  return a;
}

Aml Aml::Package(const std::vector<Aml>& elements) {
  if (elements.size() > kMaxPackageElements) {
    return Error(absl::OutOfRangeError(absl::StrFormat(
        "AML package has %u elements; NumElements holds at most %u", elements.size(),
        kMaxPackageElements)));
  }
  const uint8_t op[] = {kPackageOp};
  const uint8_t num[] = {static_cast<uint8_t>(elements.size())};
  return Packaged(op, num, elements);
}

Aml Aml::Buffer(std::span<const uint8_t> data) {
  // BufferSize is a TermArg; an integer constant is the usual form.
  Aml size = Integer(data.size());
  Aml contents;
  contents.bytes_.assign(data.begin(), data.end());
  const uint8_t op[] = {kBufferOp};
  return Packaged(op, size.bytes_, {contents});
}

Aml Aml::Name(const NameString& name, const Aml& value) {
  if (!value.status_.ok()) return Error(value.status_);
  Aml a;
  a.bytes_ = {kNameOp};
  a.bytes_.insert(a.bytes_.end(), name.bytes().begin(), name.bytes().end());
  a.bytes_.insert(a.bytes_.end(), value.bytes_.begin(), value.bytes_.end());
  return a;
}

Aml Aml::Scope(const NameString& name, const std::vector<Aml>& terms) {
  const uint8_t op[] = {kScopeOp};
  return Packaged(op, name.bytes(), terms);
}

Aml Aml::Device(const NameString& name, const std::vector<Aml>& terms) {
  const uint8_t op[] = {kExtOpPrefix, kDeviceOp};
  return Packaged(op, name.bytes(), terms);
}

}  // namespace flint::acpi
