// RSDP (ACPI 6.5 §5.2.5.3) and XSDT (§5.2.8).
#include <cstddef>

#include "vmm/acpi/builders.h"
#include "vmm/acpi/sdt.h"

namespace flint::acpi {
namespace {
constexpr size_t kRsdpV1Size = 20;  // the ACPI 1.0 part, covered by the first checksum
constexpr size_t kRsdpChecksumOffset = 8;
constexpr size_t kRsdpExtendedChecksumOffset = 32;
constexpr uint8_t kRsdpRevision = 2;
constexpr uint8_t kXsdtRevision = 1;
}  // namespace

std::vector<uint8_t> BuildRsdp(uint64_t xsdt_gpa) {
  ByteWriter w;
  w.Text("RSD PTR ", 8);
  w.U8(0);  // checksum of bytes 0..19, below
  w.Text(kOemId, 6);
  w.U8(kRsdpRevision);
  w.U32(0);  // RsdtAddress: none
  w.U32(static_cast<uint32_t>(kRsdpSize));
  w.U64(xsdt_gpa);
  w.U8(0);  // extended checksum of all 36 bytes, below
  w.Zeros(3);
  std::vector<uint8_t> rsdp = w.Take();
  rsdp[kRsdpChecksumOffset] = ChecksumFor(std::span(rsdp).first(kRsdpV1Size));
  rsdp[kRsdpExtendedChecksumOffset] = ChecksumFor(rsdp);
  return rsdp;
}

absl::StatusOr<std::vector<uint8_t>> BuildXsdt(std::span<const uint64_t> table_gpas) {
  ByteWriter w = BeginSdt("XSDT", kXsdtRevision);
  for (uint64_t gpa : table_gpas) w.U64(gpa);
  return FinishSdt(std::move(w));
}

}  // namespace flint::acpi
