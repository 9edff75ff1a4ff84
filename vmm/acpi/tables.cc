// Lays the tables out back to back from layout::kAcpiStart: RSDP first, where
// a legacy scan of 0xe0000-0xfffff finds it, then XSDT, FADT, DSDT, MADT and
// (with PCI) MCFG, each 16-byte aligned. Everything is assembled on the host and written to
// guest memory in one call, so a failure leaves guest memory untouched.
#include "vmm/acpi/tables.h"

#include <algorithm>
#include <optional>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_format.h"
#include "vmm/acpi/builders.h"
#include "vmm/acpi/sdt.h"
#include "vmm/layout.h"

namespace flint {
namespace {

constexpr uint64_t kTableAlign = 16;

uint64_t AlignUp(uint64_t v) { return (v + kTableAlign - 1) & ~(kTableAlign - 1); }

// Places tables one after another, remembering where each went.
class Placer {
 public:
  explicit Placer(uint64_t start) : next_(start) {}
  uint64_t Place(uint64_t size) {
    uint64_t gpa = next_;
    next_ = AlignUp(next_ + size);
    return gpa;
  }
  uint64_t end() const { return next_; }

 private:
  uint64_t next_;
};

}  // namespace

absl::StatusOr<uint64_t> WriteAcpiTables(const GuestMemory& mem, const AcpiConfig& cfg) {
  // The tables whose contents do not depend on where anything lives.
  std::optional<acpi::PciHostBridge> pci;
  if (cfg.pci) {
    pci = acpi::PciHostBridge{
        .mmio32 = {layout::kPciMmio32Base, layout::kPciMmio32Size},
        .mmio64 = cfg.pci_mmio64,
        .ecam = {layout::kPciEcamBase, layout::kPciEcamSize},
    };
  }
  absl::StatusOr<std::vector<uint8_t>> dsdt = acpi::BuildDsdt(pci);
  if (!dsdt.ok()) return dsdt.status();
  absl::StatusOr<std::vector<uint8_t>> madt = acpi::BuildMadt(cfg.num_cpus);
  if (!madt.ok()) return madt.status();
  std::optional<std::vector<uint8_t>> mcfg;
  if (cfg.pci) {
    // The ECAM window covers bus 0 only: 1 MiB is one bus's worth.
    static_assert(layout::kPciEcamSize == 1u << 20, "ECAM size and MCFG bus range disagree");
    absl::StatusOr<std::vector<uint8_t>> m = acpi::BuildMcfg(layout::kPciEcamBase, 0);
    if (!m.ok()) return m.status();
    mcfg = std::move(*m);
  }

  // Addresses next; the XSDT's size is known from its entry count.
  const size_t xsdt_entries_count = mcfg.has_value() ? 3 : 2;  // FACP, APIC[, MCFG]
  const size_t xsdt_size = acpi::kSdtHeaderSize + 8 * xsdt_entries_count;
  Placer placer(layout::kAcpiStart);
  const uint64_t rsdp_gpa = placer.Place(acpi::kRsdpSize);
  const uint64_t xsdt_gpa = placer.Place(xsdt_size);
  const uint64_t fadt_gpa = placer.Place(acpi::kFadtSize);
  const uint64_t dsdt_gpa = placer.Place(dsdt->size());
  const uint64_t madt_gpa = placer.Place(madt->size());
  const uint64_t mcfg_gpa = mcfg.has_value() ? placer.Place(mcfg->size()) : 0;
  if (placer.end() > layout::kAcpiEnd) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "ACPI tables for %u vCPUs need %u bytes, more than the %u-byte window at %#x",
        cfg.num_cpus, placer.end() - layout::kAcpiStart, layout::kAcpiEnd - layout::kAcpiStart,
        layout::kAcpiStart));
  }

  // Then the tables that point at others.
  absl::StatusOr<std::vector<uint8_t>> fadt = acpi::BuildFadt(dsdt_gpa);
  if (!fadt.ok()) return fadt.status();
  std::vector<uint64_t> xsdt_entries = {fadt_gpa, madt_gpa};
  if (mcfg.has_value()) xsdt_entries.push_back(mcfg_gpa);
  absl::StatusOr<std::vector<uint8_t>> xsdt = acpi::BuildXsdt(xsdt_entries);
  if (!xsdt.ok()) return xsdt.status();
  if (xsdt->size() != xsdt_size) return absl::InternalError("XSDT size differs from its layout");
  std::vector<uint8_t> rsdp = acpi::BuildRsdp(xsdt_gpa);

  std::vector<uint8_t> image(placer.end() - layout::kAcpiStart, 0);
  struct Piece {
    uint64_t gpa;
    const std::vector<uint8_t>& bytes;
  };
  std::vector<Piece> pieces = {Piece{rsdp_gpa, rsdp}, Piece{xsdt_gpa, *xsdt},
                               Piece{fadt_gpa, *fadt}, Piece{dsdt_gpa, *dsdt},
                               Piece{madt_gpa, *madt}};
  if (mcfg.has_value()) pieces.push_back(Piece{mcfg_gpa, *mcfg});
  for (const Piece& p : pieces) {
    std::copy(p.bytes.begin(), p.bytes.end(), image.begin() + (p.gpa - layout::kAcpiStart));
  }
  if (absl::Status s = mem.Write(layout::kAcpiStart, image.data(), image.size()); !s.ok()) {
    return absl::Status(
        s.code(), absl::StrFormat("writing the ACPI tables to guest RAM [%#x, %#x): %s",
                                  layout::kAcpiStart, placer.end(), s.message()));
  }
  return rsdp_gpa;
}

}  // namespace flint
