// ACPI tables: structure checks on the bytes flint writes into guest memory,
// the AML encoder's corner cases, and (when ACPICA's tools are installed) an
// independent validation by iasl's disassembler and acpiexec's interpreter.
#include "vmm/acpi/tables.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "vmm/acpi/aml.h"
#include "vmm/acpi/resource_template.h"
#include "vmm/acpi/sdt.h"
#include "vmm/guest_memory.h"
#include "vmm/layout.h"
#include "vmm/vm_config.h"

namespace flint {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

constexpr uint64_t kMiB = 1ull << 20;
using Bytes = std::vector<uint8_t>;

template <typename T>
T Get(const Bytes& b, size_t off) {
  T v{};
  EXPECT_LE(off + sizeof(T), b.size()) << "read past the end of a table";
  if (off + sizeof(T) <= b.size()) std::memcpy(&v, b.data() + off, sizeof(T));
  return v;
}

std::string Text(const Bytes& b, size_t off, size_t len) {
  return std::string(b.begin() + static_cast<ptrdiff_t>(off),
                     b.begin() + static_cast<ptrdiff_t>(off + len));
}

uint8_t Sum(const Bytes& b) {
  uint8_t s = 0;
  for (uint8_t x : b) s = static_cast<uint8_t>(s + x);
  return s;
}

// Offset of the first occurrence of `needle` in `hay`, or npos.
size_t Find(const Bytes& hay, const Bytes& needle, size_t from = 0) {
  auto it = std::search(hay.begin() + static_cast<ptrdiff_t>(from), hay.end(), needle.begin(),
                        needle.end());
  return it == hay.end() ? std::string::npos : static_cast<size_t>(it - hay.begin());
}

Bytes Ascii(std::string_view s) { return Bytes(s.begin(), s.end()); }

// The 64-bit PCI window of a VM with 6 GiB of RAM.
constexpr layout::Window kMmio64 = layout::Pci64Window(6ull << 30);

// One table set: vCPU count, and whether the VM has a PCI bus.
struct TablesCase {
  uint32_t cpus;
  bool pci;
};
void PrintTo(const TablesCase& c, std::ostream* os) {
  *os << c.cpus << " vCPUs" << (c.pci ? ", PCI" : "");
}
std::string CaseName(const testing::TestParamInfo<TablesCase>& info) {
  return "Cpus" + std::to_string(info.param.cpus) + (info.param.pci ? "Pci" : "");
}
const auto kAllCases = testing::Values(TablesCase{1, false}, TablesCase{2, false},
                                       TablesCase{64, false}, TablesCase{kMaxVcpus, false},
                                       TablesCase{1, true}, TablesCase{kMaxVcpus, true});
const auto kPciCases = testing::Values(TablesCase{1, true}, TablesCase{kMaxVcpus, true});

GuestMemory TwoMiB() {
  absl::StatusOr<GuestMemory> mem = GuestMemory::Create({{0, 2 * kMiB}});
  EXPECT_TRUE(mem.ok()) << mem.status();
  return std::move(*mem);
}

// Reads the tables back the way a guest finds them: RSDP → XSDT → tables.
class AcpiTablesTest : public testing::TestWithParam<TablesCase> {
 protected:
  void SetUp() override {
    mem_ = TwoMiB();
    absl::StatusOr<uint64_t> rsdp = WriteAcpiTables(
        mem_, AcpiConfig{.num_cpus = GetParam().cpus, .pci = GetParam().pci,
                         .pci_mmio64 = kMmio64});
    ASSERT_TRUE(rsdp.ok()) << rsdp.status();
    rsdp_gpa_ = *rsdp;
    rsdp_ = Read(rsdp_gpa_, 36);
    xsdt_gpa_ = Get<uint64_t>(rsdp_, 24);
    xsdt_ = Table(xsdt_gpa_);
    for (size_t off = 36; off + 8 <= xsdt_.size(); off += 8) {
      uint64_t gpa = Get<uint64_t>(xsdt_, off);
      Bytes t = Table(gpa);
      std::string sig = Text(t, 0, 4);
      EXPECT_EQ(gpas_.count(sig), 0u) << "XSDT lists " << sig << " twice";
      gpas_[sig] = gpa;
      tables_[sig] = std::move(t);
    }
    ASSERT_EQ(tables_.count("FACP"), 1u);
    ASSERT_EQ(tables_.count("APIC"), 1u);
    fadt_ = tables_["FACP"];
    madt_ = tables_["APIC"];
    ASSERT_EQ(fadt_.size(), 276u);
    dsdt_gpa_ = Get<uint64_t>(fadt_, 140);
    dsdt_ = Table(dsdt_gpa_);
  }

  Bytes Read(uint64_t gpa, size_t len) const {
    Bytes b(len);
    absl::Status s = mem_.Read(gpa, b.data(), len);
    EXPECT_TRUE(s.ok()) << s;
    return b;
  }
  // A whole SDT, sized by its own length field.
  Bytes Table(uint64_t gpa) const {
    Bytes header = Read(gpa, 36);
    uint32_t len = Get<uint32_t>(header, 4);
    EXPECT_GE(len, 36u);
    EXPECT_LE(gpa + len, layout::kAcpiEnd) << "table at " << gpa << " leaves the ACPI window";
    return Read(gpa, std::max<uint32_t>(len, 36));
  }

  GuestMemory mem_;
  uint64_t rsdp_gpa_ = 0, xsdt_gpa_ = 0, dsdt_gpa_ = 0;
  Bytes rsdp_, xsdt_, fadt_, madt_, dsdt_;
  std::map<std::string, uint64_t> gpas_;
  std::map<std::string, Bytes> tables_;
};

TEST_P(AcpiTablesTest, RsdpIsInTheBiosScanAreaWithBothChecksums) {
  EXPECT_EQ(rsdp_gpa_, layout::kAcpiStart);
  EXPECT_EQ(rsdp_gpa_ % 16, 0u);
  EXPECT_EQ(Text(rsdp_, 0, 8), "RSD PTR ");
  EXPECT_EQ(Sum(Bytes(rsdp_.begin(), rsdp_.begin() + 20)), 0) << "ACPI 1.0 checksum";
  EXPECT_EQ(Sum(rsdp_), 0) << "extended checksum";
  EXPECT_EQ(Text(rsdp_, 9, 6), "FLINT ");
  EXPECT_EQ(rsdp_[15], 2) << "revision";
  EXPECT_EQ(Get<uint32_t>(rsdp_, 16), 0u) << "no RSDT";
  EXPECT_EQ(Get<uint32_t>(rsdp_, 20), 36u) << "length";
  EXPECT_EQ(Text(xsdt_, 0, 4), "XSDT");
}

TEST_P(AcpiTablesTest, XsdtListsFadtMadtAndWithPciMcfg) {
  const size_t n = GetParam().pci ? 3 : 2;
  EXPECT_EQ(xsdt_.size(), 36u + n * 8);
  EXPECT_EQ(gpas_.size(), n);
  EXPECT_EQ(gpas_.count("FACP"), 1u);
  EXPECT_EQ(gpas_.count("APIC"), 1u);
  EXPECT_EQ(gpas_.count("MCFG"), GetParam().pci ? 1u : 0u);
}

TEST_P(AcpiTablesTest, EveryTableHasItsLengthChecksumAndIds) {
  std::map<std::string, Bytes> all = tables_;
  all["XSDT"] = xsdt_;
  all["DSDT"] = dsdt_;
  for (const auto& [sig, t] : all) {
    SCOPED_TRACE(sig);
    EXPECT_EQ(Text(t, 0, 4), sig);
    EXPECT_EQ(Get<uint32_t>(t, 4), t.size());
    EXPECT_EQ(Sum(t), 0) << "checksum";
    EXPECT_EQ(Text(t, 10, 6), "FLINT ");
    EXPECT_EQ(Text(t, 16, 8), "FLINTVM ");
    EXPECT_EQ(Text(t, 28, 4), "FLNT");
  }
  EXPECT_EQ(xsdt_[8], 1) << "XSDT revision";
  EXPECT_EQ(fadt_[8], 6) << "FADT revision";
  EXPECT_EQ(dsdt_[8], 2) << "DSDT revision (64-bit AML integers)";
  EXPECT_EQ(madt_[8], 5) << "MADT revision";
  if (GetParam().pci) {
    EXPECT_EQ(tables_["MCFG"][8], 1) << "MCFG revision";
  }
}

TEST_P(AcpiTablesTest, TablesAreAlignedDisjointAndInsideTheWindow) {
  std::vector<std::pair<uint64_t, uint64_t>> ranges = {
      {rsdp_gpa_, 36}, {xsdt_gpa_, xsdt_.size()}, {dsdt_gpa_, dsdt_.size()}};
  for (const auto& [sig, gpa] : gpas_) ranges.push_back({gpa, tables_[sig].size()});
  std::sort(ranges.begin(), ranges.end());
  for (size_t i = 0; i < ranges.size(); ++i) {
    EXPECT_EQ(ranges[i].first % 16, 0u);
    EXPECT_GE(ranges[i].first, layout::kAcpiStart);
    EXPECT_LE(ranges[i].first + ranges[i].second, layout::kAcpiEnd);
    if (i > 0) {
      EXPECT_GE(ranges[i].first, ranges[i - 1].first + ranges[i - 1].second);
    }
  }
}

TEST_P(AcpiTablesTest, FadtIsHardwareReducedWithTheSleepRegisters) {
  uint32_t flags = Get<uint32_t>(fadt_, 112);
  EXPECT_TRUE(flags & (1u << 20)) << "HW_REDUCED_ACPI";
  EXPECT_FALSE(flags & (1u << 10)) << "no RESET_REG";
  EXPECT_EQ(fadt_[131], 3) << "minor revision";
  uint16_t boot_arch = Get<uint16_t>(fadt_, 109);
  EXPECT_TRUE(boot_arch & (1u << 2)) << "VGA not present";
  EXPECT_FALSE(boot_arch & (1u << 3)) << "MSI must stay supported";
  EXPECT_FALSE(boot_arch & (1u << 5)) << "the CMOS RTC at 0x70 exists";
  EXPECT_EQ(Get<uint64_t>(fadt_, 132), 0u) << "no FACS";
  EXPECT_EQ(Get<uint32_t>(fadt_, 36), 0u) << "no FACS";
  EXPECT_EQ(Get<uint32_t>(fadt_, 40), dsdt_gpa_) << "32-bit DSDT agrees with X_DSDT";
  EXPECT_EQ(Text(dsdt_, 0, 4), "DSDT");
  // SLEEP_CONTROL_REG and SLEEP_STATUS_REG: SystemIO, 8 bits, byte access.
  for (auto [off, port] : {std::pair<size_t, uint64_t>{244, 0x600}, {256, 0x601}}) {
    SCOPED_TRACE(off);
    EXPECT_EQ(fadt_[off], 1) << "SystemIO";
    EXPECT_EQ(fadt_[off + 1], 8) << "bit width";
    EXPECT_EQ(fadt_[off + 2], 0) << "bit offset";
    EXPECT_EQ(fadt_[off + 3], 1) << "byte access";
    EXPECT_EQ(Get<uint64_t>(fadt_, off + 4), port);
  }
  EXPECT_EQ(Text(fadt_, 268, 8), "FLINTVMM");
}

TEST_P(AcpiTablesTest, MadtDescribesEveryVcpuAndTheIoapic) {
  const uint32_t n = GetParam().cpus;
  EXPECT_EQ(Get<uint32_t>(madt_, 36), layout::kLapicBase);
  EXPECT_EQ(Get<uint32_t>(madt_, 40), 1u) << "PCAT_COMPAT: KVM's 8259s exist";
  std::vector<uint8_t> apic_ids;
  std::vector<uint8_t> uids;
  std::vector<Bytes> ioapics, isos, nmis;
  for (size_t off = 44; off < madt_.size();) {
    uint8_t type = madt_[off];
    uint8_t len = madt_[off + 1];
    ASSERT_GE(len, 2);
    ASSERT_LE(off + len, madt_.size());
    Bytes e(madt_.begin() + static_cast<ptrdiff_t>(off),
            madt_.begin() + static_cast<ptrdiff_t>(off + len));
    switch (type) {
      case 0:
        ASSERT_EQ(len, 8);
        EXPECT_EQ(Get<uint32_t>(e, 4), 1u) << "enabled";
        uids.push_back(e[2]);
        apic_ids.push_back(e[3]);
        break;
      case 1: ioapics.push_back(e); break;
      case 2: isos.push_back(e); break;
      case 4: nmis.push_back(e); break;
      default: ADD_FAILURE() << "unexpected MADT entry type " << int{type};
    }
    off += len;
  }
  ASSERT_EQ(apic_ids.size(), n);
  for (uint32_t i = 0; i < n; ++i) {
    EXPECT_EQ(apic_ids[i], i);
    EXPECT_EQ(uids[i], i);
  }
  ASSERT_EQ(ioapics.size(), 1u);
  ASSERT_EQ(ioapics[0].size(), 12u);
  EXPECT_EQ(Get<uint32_t>(ioapics[0], 4), layout::kIoapicBase);
  EXPECT_EQ(Get<uint32_t>(ioapics[0], 8), 0u) << "GSI base";
  EXPECT_EQ(std::count(apic_ids.begin(), apic_ids.end(), ioapics[0][2]), 0)
      << "IOAPIC ID collides with a local APIC ID";
  ASSERT_EQ(isos.size(), 1u);
  ASSERT_EQ(isos[0].size(), 10u);
  EXPECT_EQ(isos[0][2], 0) << "ISA bus";
  EXPECT_EQ(isos[0][3], 0) << "IRQ 0";
  EXPECT_EQ(Get<uint32_t>(isos[0], 4), 2u) << "to GSI 2";
  EXPECT_EQ(Get<uint16_t>(isos[0], 8), 0u) << "conforming";
  ASSERT_EQ(nmis.size(), 1u);
  ASSERT_EQ(nmis[0].size(), 6u);
  EXPECT_EQ(nmis[0][2], 0xff) << "all processors";
  EXPECT_EQ(nmis[0][5], 1) << "LINT1";
}

TEST_P(AcpiTablesTest, DsdtHasS5AndCom1) {
  // Name(_S5_, Package(4){5, ...}): NameOp, name, PackageOp, PkgLength,
  // NumElements, then BytePrefix 5.
  size_t s5 = Find(dsdt_, Ascii("_S5_"));
  ASSERT_NE(s5, std::string::npos);
  EXPECT_EQ(dsdt_[s5 - 1], 0x08) << "NameOp";
  EXPECT_EQ(dsdt_[s5 + 4], 0x12) << "PackageOp";
  EXPECT_EQ(dsdt_[s5 + 6], 4) << "NumElements";
  EXPECT_EQ(dsdt_[s5 + 7], 0x0a) << "BytePrefix";
  EXPECT_EQ(dsdt_[s5 + 8], layout::kS5SlpTyp) << "SLP_TYPa must match acpi_pm";

  // EisaId("PNP0501"): letters P,N,P are 16,14,16 in 5 bits each, 0x41D0,
  // stored high byte first, then the digits 0x05 0x01: dword 0x0105D041.
  EXPECT_NE(Find(dsdt_, {'_', 'H', 'I', 'D', 0x0c, 0x41, 0xd0, 0x05, 0x01}), std::string::npos);
  EXPECT_NE(Find(dsdt_, {0x5c, '_', 'S', 'B', '_'}), std::string::npos) << "\\_SB_ scope";
  EXPECT_NE(Find(dsdt_, {0x5b, 0x82}), std::string::npos) << "DeviceOp";
  EXPECT_NE(Find(dsdt_, Ascii("COM1")), std::string::npos);
  // IO(Decode16, 0x3f8, 0x3f8, 0, 8), IRQNoFlags(){4}, EndTag.
  size_t io = Find(dsdt_, {0x47, 0x01, 0xf8, 0x03, 0xf8, 0x03, 0x00, 0x08, 0x22, 0x10, 0x00, 0x79});
  ASSERT_NE(io, std::string::npos);
  EXPECT_EQ(Sum(Bytes(dsdt_.begin() + static_cast<ptrdiff_t>(io),
                      dsdt_.begin() + static_cast<ptrdiff_t>(io + 13))),
            0)
      << "resource template checksum";
  EXPECT_EQ(Find(dsdt_, Ascii("PCI0")) != std::string::npos, GetParam().pci)
      << "the PCI host bridge is described exactly when there is a PCI bus";
}

// The power button: a control-method device (PNP0C0C) that the Generic Event
// Device notifies; the FADT says there is no fixed-feature one.
TEST_P(AcpiTablesTest, PowerButtonIsAControlMethodDeviceBehindAGed) {
  EXPECT_TRUE(Get<uint32_t>(fadt_, 112) & (1u << 4)) << "PWR_BUTTON: not a fixed-feature button";
  EXPECT_NE(Find(dsdt_, {'_', 'H', 'I', 'D', 0x0c, 0x41, 0xd0, 0x0c, 0x0c}), std::string::npos)
      << "EisaId(\"PNP0C0C\")";
  // Device (\_SB.GED0) with Name (_HID, "ACPI0013").
  const size_t ged = Find(dsdt_, Ascii("\\\x2e_SB_GED0"));
  ASSERT_NE(ged, std::string::npos);
  ASSERT_GE(ged, 4u);
  EXPECT_EQ(dsdt_[ged - 4], 0x5b);
  EXPECT_EQ(dsdt_[ged - 3], 0x82) << "DeviceOp";
  EXPECT_EQ(dsdt_[ged - 2] >> 6, 1) << "two-byte PkgLength";
  Bytes hid = Ascii("_HID\x0d" "ACPI0013");
  hid.push_back(0);
  EXPECT_NE(Find(dsdt_, hid, ged), std::string::npos);
  // _CRS: Interrupt (ResourceConsumer, Level, ActiveHigh, Exclusive) {GSI}
  // and nothing else (Linux's GED driver rejects any other descriptor).
  const Bytes crs = {0x08, '_', 'C', 'R', 'S', 0x11, 0x0e, 0x0a, 0x0b,
                     0x89, 0x06, 0x00, 0x01, 0x01, static_cast<uint8_t>(layout::kGedGsi), 0, 0, 0,
                     0x79};
  const size_t at = Find(dsdt_, crs, ged);
  ASSERT_NE(at, std::string::npos);
  EXPECT_EQ(Sum(Bytes(dsdt_.begin() + static_cast<ptrdiff_t>(at + 9),
                      dsdt_.begin() + static_cast<ptrdiff_t>(at + 9 + 11))),
            0)
      << "resource template checksum";
  // OperationRegion (EREG, SystemIO, kPortGed, One): the register the device implements.
  EXPECT_NE(Find(dsdt_, {0x5b, 0x80, 'E', 'R', 'E', 'G', 0x01, 0x0b,
                         static_cast<uint8_t>(layout::kPortGed & 0xff),
                         static_cast<uint8_t>(layout::kPortGed >> 8), 0x01},
                 ged),
            std::string::npos);
  // Notify (\_SB.PWRB, 0x80).
  EXPECT_NE(Find(dsdt_, {0x86, 0x5c, 0x2e, '_', 'S', 'B', '_', 'P', 'W', 'R', 'B', 0x0a, 0x80},
                 ged),
            std::string::npos);
}

INSTANTIATE_TEST_SUITE_P(Configs, AcpiTablesTest, kAllCases, CaseName);

// --- PCI: MCFG and the host bridge in the DSDT, at byte level ---

using AcpiPciTablesTest = AcpiTablesTest;

TEST_P(AcpiPciTablesTest, McfgHasOneAllocationForBusZeroAtTheEcam) {
  const Bytes& mcfg = tables_["MCFG"];
  ASSERT_EQ(mcfg.size(), 36u + 8 + 16);
  EXPECT_EQ(Get<uint64_t>(mcfg, 36), 0u) << "reserved";
  EXPECT_EQ(Get<uint64_t>(mcfg, 44), layout::kPciEcamBase);
  EXPECT_EQ(Get<uint16_t>(mcfg, 52), 0u) << "segment group";
  EXPECT_EQ(mcfg[54], 0) << "start bus";
  EXPECT_EQ(mcfg[55], 0) << "end bus: the 1 MiB ECAM window covers bus 0";
  EXPECT_EQ(layout::kPciEcamSize, 1u << 20);
}

TEST_P(AcpiPciTablesTest, DsdtDescribesTheHostBridgeAndReservesTheEcam) {
  auto hid = [](uint32_t eisa) {
    Bytes b = {'_', 'H', 'I', 'D', 0x0c};
    for (int i = 0; i < 4; ++i) b.push_back(static_cast<uint8_t>(eisa >> (8 * i)));
    return b;
  };
  size_t pci0 = Find(dsdt_, Ascii("PCI0"));
  ASSERT_NE(pci0, std::string::npos);
  EXPECT_NE(Find(dsdt_, hid(acpi::EisaId("PNP0A08")), pci0), std::string::npos);
  EXPECT_NE(Find(dsdt_, {'_', 'C', 'I', 'D', 0x0c, 0x41, 0xd0, 0x0a, 0x03}, pci0),
            std::string::npos);
  size_t mres = Find(dsdt_, Ascii("MRES"));
  ASSERT_NE(mres, std::string::npos);
  EXPECT_NE(Find(dsdt_, hid(acpi::EisaId("PNP0C02")), mres), std::string::npos);
  // Memory32Fixed(ReadWrite, 0xe0000000, 0x100000).
  EXPECT_NE(Find(dsdt_, {0x86, 0x09, 0x00, 0x01, 0x00, 0x00, 0x00, 0xe0, 0x00, 0x00, 0x10, 0x00},
                 mres),
            std::string::npos);
  // DWordMemory: producer, fixed, non-cacheable read-write, the 32-bit window.
  Bytes dword = {0x87, 0x17, 0x00, 0x00, 0x0c, 0x01, 0, 0, 0, 0};
  for (uint64_t v : {layout::kPciMmio32Base, layout::kPciMmio32Base + layout::kPciMmio32Size - 1,
                     uint64_t{0}, layout::kPciMmio32Size}) {
    for (int i = 0; i < 4; ++i) dword.push_back(static_cast<uint8_t>(v >> (8 * i)));
  }
  EXPECT_NE(Find(dsdt_, dword, pci0), std::string::npos);
  Bytes qword = {0x8a, 0x2b, 0x00, 0x00, 0x0c, 0x01, 0, 0, 0, 0, 0, 0, 0, 0};
  for (uint64_t v : {kMmio64.base, kMmio64.base + kMmio64.size - 1, uint64_t{0}, kMmio64.size}) {
    for (int i = 0; i < 8; ++i) qword.push_back(static_cast<uint8_t>(v >> (8 * i)));
  }
  EXPECT_NE(Find(dsdt_, qword, pci0), std::string::npos);
  // _PRT: NameOp "_PRT" PackageOp PkgLength(2 bytes) NumElements = 31 slots x 4 pins.
  size_t prt = Find(dsdt_, Ascii("_PRT"), pci0);
  ASSERT_NE(prt, std::string::npos);
  EXPECT_EQ(dsdt_[prt - 1], 0x08);
  EXPECT_EQ(dsdt_[prt + 4], 0x12);
  EXPECT_EQ(dsdt_[prt + 5] >> 6, 1) << "two-byte PkgLength";
  EXPECT_EQ(dsdt_[prt + 7], 124);
}

INSTANTIATE_TEST_SUITE_P(Configs, AcpiPciTablesTest, kPciCases, CaseName);

TEST(AcpiTables, PciWithoutA64BitWindowHasNoQWordMemory) {
  GuestMemory mem = TwoMiB();
  absl::StatusOr<uint64_t> rsdp = WriteAcpiTables(mem, AcpiConfig{.num_cpus = 1, .pci = true});
  ASSERT_TRUE(rsdp.ok()) << rsdp.status();
  Bytes all(layout::kAcpiEnd - layout::kAcpiStart);
  ASSERT_TRUE(mem.Read(layout::kAcpiStart, all.data(), all.size()).ok());
  EXPECT_NE(Find(all, Ascii("PCI0")), std::string::npos);
  EXPECT_NE(Find(all, {0x87, 0x17, 0x00}), std::string::npos) << "DWordMemory";
  EXPECT_EQ(Find(all, {0x8a, 0x2b, 0x00}), std::string::npos) << "no QWordMemory";
}

TEST(AcpiTables, RejectsCpuCountsTheMadtCannotDescribe) {
  GuestMemory mem = TwoMiB();
  for (uint32_t n : {0u, kAcpiMaxCpus + 1, 4096u}) {
    absl::StatusOr<uint64_t> r = WriteAcpiTables(mem, AcpiConfig{.num_cpus = n});
    ASSERT_FALSE(r.ok()) << n;
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(r.status().message(), HasSubstr("vCPUs"));
  }
}

TEST(AcpiTables, FailsWhenRamDoesNotCoverTheAcpiWindow) {
  absl::StatusOr<GuestMemory> small = GuestMemory::Create({{0, 512 * 1024}});
  ASSERT_TRUE(small.ok());
  absl::StatusOr<uint64_t> r = WriteAcpiTables(*small, AcpiConfig{});
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.status().message(), HasSubstr("ACPI tables"));

  // RAM on both sides of the window, but a hole where the tables go.
  absl::StatusOr<GuestMemory> holed =
      GuestMemory::Create({{0, layout::kAcpiStart}, {layout::kAcpiEnd, kMiB}});
  ASSERT_TRUE(holed.ok());
  EXPECT_FALSE(WriteAcpiTables(*holed, AcpiConfig{.num_cpus = kMaxVcpus}).ok());

  // RAM that starts above the window.
  absl::StatusOr<GuestMemory> high = GuestMemory::Create({{layout::kHighMemory, kMiB}});
  ASSERT_TRUE(high.ok());
  EXPECT_FALSE(WriteAcpiTables(*high, AcpiConfig{}).ok());
}

// --- AML encoder ---

Bytes Of(std::span<const uint8_t> s) { return Bytes(s.begin(), s.end()); }

TEST(Aml, PkgLengthUsesOneToFourBytes) {
  using acpi::EncodePkgLength;
  EXPECT_EQ(*EncodePkgLength(0), Bytes({0x01}));
  EXPECT_EQ(*EncodePkgLength(0x3e), Bytes({0x3f}));
  // 0x3f body bytes + 2 = 0x41: lead 0x40 | 1, then 0x41 >> 4.
  EXPECT_EQ(*EncodePkgLength(0x3f), Bytes({0x41, 0x04}));
  EXPECT_EQ(*EncodePkgLength(0xffd), Bytes({0x4f, 0xff}));
  // 0xffe + 2 needs 13 bits: three bytes, value 0x1001.
  EXPECT_EQ(*EncodePkgLength(0xffe), Bytes({0x81, 0x00, 0x01}));
  EXPECT_EQ(*EncodePkgLength(0xffffc), Bytes({0x8f, 0xff, 0xff}));
  // 0xffffd + 3 needs 21 bits: four bytes, value 0x100001.
  EXPECT_EQ(*EncodePkgLength(0xffffd), Bytes({0xc1, 0x00, 0x00, 0x01}));
  EXPECT_EQ(*EncodePkgLength((1u << 28) - 5), Bytes({0xcf, 0xff, 0xff, 0xff}));
  EXPECT_FALSE(EncodePkgLength((1u << 28) - 4).ok());
}

TEST(Aml, IntegersUseTheShortestEncoding) {
  using acpi::Aml;
  EXPECT_EQ(Aml::Integer(0).bytes(), Bytes({0x00}));
  EXPECT_EQ(Aml::Integer(1).bytes(), Bytes({0x01}));
  EXPECT_EQ(Aml::Integer(~0ull).bytes(), Bytes({0xff}));
  EXPECT_EQ(Aml::Integer(5).bytes(), Bytes({0x0a, 0x05}));
  EXPECT_EQ(Aml::Integer(0x3f8).bytes(), Bytes({0x0b, 0xf8, 0x03}));
  EXPECT_EQ(Aml::Integer(0x12345678).bytes(), Bytes({0x0c, 0x78, 0x56, 0x34, 0x12}));
  EXPECT_EQ(Aml::Integer(0x100000000ull).bytes(),
            Bytes({0x0e, 0, 0, 0, 0, 1, 0, 0, 0}));
  EXPECT_EQ(Aml::DWord(1).bytes(), Bytes({0x0c, 1, 0, 0, 0}));
  EXPECT_EQ(Aml::String("ab").bytes(), Bytes({0x0d, 'a', 'b', 0}));
  EXPECT_FALSE(Aml::String(std::string_view("a\0b", 3)).status().ok());
}

TEST(Aml, NameStringsAndEisaIds) {
  EXPECT_EQ(Of(acpi::NameString("COM1").bytes()), Ascii("COM1"));
  EXPECT_EQ(Of(acpi::NameString("_S5").bytes()), Ascii("_S5_"));
  EXPECT_EQ(Of(acpi::NameString("\\_SB").bytes()), Ascii("\\_SB_"));
  EXPECT_EQ(Of(acpi::NameString("\\_SB_.COM1").bytes()), Ascii("\\\x2e_SB_COM1"));
  EXPECT_EQ(Of(acpi::NameString("^A.B.C").bytes()), Ascii("^\x2f\x03" "A___B___C___"));
  EXPECT_EQ(Of(acpi::NameString("\\").bytes()), Bytes({0x5c, 0x00}));
  static_assert(acpi::EisaId("PNP0501") == 0x0105D041);
  static_assert(acpi::EisaId("PNP0A03") == 0x030AD041);
}

TEST(Aml, ComposesPackagesScopesAndDevices) {
  using acpi::Aml;
  Aml pkg = Aml::Package({Aml::Integer(5), Aml::Integer(0)});
  EXPECT_EQ(pkg.bytes(), Bytes({0x12, 0x05, 0x02, 0x0a, 0x05, 0x00}));
  Aml dev = Aml::Device("DEV0", {Aml::Name("_UID", Aml::Integer(0))});
  EXPECT_EQ(dev.bytes(), Bytes({0x5b, 0x82, 0x0b, 'D', 'E', 'V', '0', 0x08, '_', 'U', 'I', 'D', 0}));
  Aml scope = Aml::Scope("\\_SB", {});
  EXPECT_EQ(scope.bytes(), Bytes({0x10, 0x06, 0x5c, '_', 'S', 'B', '_'}));
  const uint8_t data[] = {1, 2};
  EXPECT_EQ(Aml::Buffer(data).bytes(), Bytes({0x11, 0x05, 0x0a, 0x02, 1, 2}));
  // A long body takes a two-byte PkgLength.
  std::vector<Aml> many(100, Aml::Integer(7));
  Aml big = Aml::Package(many);
  ASSERT_TRUE(big.status().ok());
  EXPECT_EQ(big.bytes().size(), 1u + 2 + 1 + 200);
  EXPECT_EQ(big.bytes()[1], 0x40 | ((2 + 1 + 200) & 0xf));
}

TEST(Aml, ErrorsPropagateToTheEnclosingTerm) {
  using acpi::Aml;
  std::vector<Aml> too_many(256, Aml::Integer(0));
  Aml pkg = Aml::Package(too_many);
  EXPECT_EQ(pkg.status().code(), absl::StatusCode::kOutOfRange);
  Aml outer = Aml::Scope("\\_SB", {Aml::Device("DEV0", {Aml::Name("PKG0", pkg)})});
  EXPECT_EQ(outer.status().code(), absl::StatusCode::kOutOfRange);
  acpi::ResourceTemplate bad;
  bad.IrqNoFlags(16);
  EXPECT_EQ(bad.ToAml().status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(Aml, AddressSpaceAndFixedMemoryDescriptors) {
  acpi::ResourceTemplate rt;
  rt.WordBusNumber(0, 0x1f);
  rt.WordIo(0x0d00, 0xffff);
  rt.DWordMemory(0xc0000000, 0xdfffffff);
  rt.QWordMemory(0x1'0000'0000ull, 0x1'ffff'ffffull);
  rt.Memory32Fixed(0xe0000000, 0x100000);
  Bytes b = rt.Bytes();
  ASSERT_EQ(b.size(), 16u + 16 + 26 + 46 + 12 + 2);
  EXPECT_EQ(Bytes(b.begin(), b.begin() + 16),
            Bytes({0x88, 0x0d, 0x00, 0x02, 0x0c, 0x00, 0, 0, 0, 0, 0x1f, 0, 0, 0, 0x20, 0}));
  EXPECT_EQ(Bytes(b.begin() + 16, b.begin() + 32),
            Bytes({0x88, 0x0d, 0x00, 0x01, 0x0c, 0x03, 0, 0, 0x00, 0x0d, 0xff, 0xff, 0, 0, 0x00,
                   0xf3}));
  EXPECT_EQ(Bytes(b.begin() + 32, b.begin() + 38), Bytes({0x87, 0x17, 0x00, 0x00, 0x0c, 0x01}));
  EXPECT_EQ(Get<uint32_t>(b, 38 + 4), 0xc0000000u);
  EXPECT_EQ(Get<uint32_t>(b, 38 + 8), 0xdfffffffu);
  EXPECT_EQ(Get<uint32_t>(b, 38 + 16), 0x20000000u) << "length";
  EXPECT_EQ(Bytes(b.begin() + 58, b.begin() + 64), Bytes({0x8a, 0x2b, 0x00, 0x00, 0x0c, 0x01}));
  EXPECT_EQ(Get<uint64_t>(b, 64 + 8), 0x1'0000'0000ull);
  EXPECT_EQ(Get<uint64_t>(b, 64 + 16), 0x1'ffff'ffffull);
  EXPECT_EQ(Get<uint64_t>(b, 64 + 32), 0x1'0000'0000ull) << "length";
  EXPECT_EQ(Bytes(b.begin() + 104, b.begin() + 116),
            Bytes({0x86, 0x09, 0x00, 0x01, 0, 0, 0, 0xe0, 0, 0, 0x10, 0}));
  EXPECT_EQ(Sum(b), 0);
  EXPECT_TRUE(rt.ToAml().status().ok());

  // Ranges the descriptors cannot express are errors, not silent truncation.
  for (auto bad : std::vector<std::function<void(acpi::ResourceTemplate&)>>{
           [](acpi::ResourceTemplate& r) { r.WordIo(0, 0xffff); },  // length 0x10000
           [](acpi::ResourceTemplate& r) { r.WordBusNumber(2, 1); },
           [](acpi::ResourceTemplate& r) { r.DWordMemory(0, 0xffffffff); },
           [](acpi::ResourceTemplate& r) { r.QWordMemory(0, ~0ull); },
           [](acpi::ResourceTemplate& r) { r.Memory32Fixed(0xfff00000, 0x200000); },
           [](acpi::ResourceTemplate& r) { r.Memory32Fixed(0xe0000000, 0); }}) {
    acpi::ResourceTemplate r;
    bad(r);
    EXPECT_EQ(r.ToAml().status().code(), absl::StatusCode::kInvalidArgument);
  }
}

TEST(Aml, ResourceTemplateEndsWithAChecksummedEndTag) {
  acpi::ResourceTemplate rt;
  rt.Io16(0x3f8, 0x3f8, 0, 8).IrqNoFlags(4);
  Bytes b = rt.Bytes();
  ASSERT_EQ(b.size(), 8u + 3 + 2);
  EXPECT_EQ(b[b.size() - 2], 0x79);
  EXPECT_EQ(Sum(b), 0);
}

// --- Validation by ACPICA's own tools ---

struct CommandResult {
  int status = -1;
  std::string output;
};

CommandResult RunShell(const std::string& cmd) {
  CommandResult r;
  FILE* p = popen((cmd + " 2>&1").c_str(), "r");
  if (p == nullptr) return r;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) r.output.append(buf, n);
  int st = pclose(p);
  r.status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return r;
}

std::string ReadFile(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// A scratch directory, removed with everything in it.
class TempDir {
 public:
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "flint-acpi-XXXXXX").string();
    if (mkdtemp(tmpl.data()) != nullptr) path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    if (!path_.empty()) std::filesystem::remove_all(path_, ec);
  }
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

class AcpicaTest : public AcpiTablesTest {
 protected:
  void SetUp() override {
    AcpiTablesTest::SetUp();
    ASSERT_FALSE(dir_.path().empty()) << "mkdtemp failed";
    Dump("xsdt", xsdt_);
    Dump("facp", fadt_);
    Dump("dsdt", dsdt_);
    Dump("apic", madt_);
    if (GetParam().pci) Dump("mcfg", tables_["MCFG"]);
  }
  // The tables this case wrote, by dump name.
  std::vector<std::string> Names() const {
    std::vector<std::string> n = {"xsdt", "facp", "dsdt", "apic"};
    if (GetParam().pci) n.push_back("mcfg");
    return n;
  }
  std::string DatFiles() const {
    std::string files;
    for (const std::string& n : Names()) files += " " + n + ".dat";
    return files;
  }
  void Dump(const std::string& name, const Bytes& b) {
    std::ofstream out(dir_.path() / (name + ".dat"), std::ios::binary);
    out.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
  }
  CommandResult InDir(const std::string& cmd) {
    return RunShell("cd '" + dir_.path().string() + "' && " + cmd);
  }
  TempDir dir_;
};

bool Executable(const char* path) { return access(path, X_OK) == 0; }

TEST_P(AcpicaTest, IaslDisassemblesEveryTableCleanly) {
  if (!Executable("/usr/bin/iasl")) GTEST_SKIP() << "iasl not installed (Debian: acpica-tools)";
  std::map<std::string, std::string> dsl;
  for (const std::string& name : Names()) {
    SCOPED_TRACE(name);
    CommandResult r = InDir("/usr/bin/iasl -d " + name + ".dat");
    EXPECT_EQ(r.status, 0) << r.output;
    EXPECT_THAT(r.output, Not(HasSubstr("Incorrect checksum")));
    EXPECT_THAT(r.output, Not(HasSubstr("Error")));
    EXPECT_THAT(r.output, Not(HasSubstr("Warning")));
    dsl[name] = ReadFile(dir_.path() / (name + ".dsl"));
    EXPECT_THAT(dsl[name], Not(HasSubstr("Incorrect checksum")));
    EXPECT_THAT(dsl[name], Not(HasSubstr("Unknown")));
  }
  EXPECT_THAT(dsl["dsdt"], HasSubstr("_S5_"));
  EXPECT_THAT(dsl["dsdt"], HasSubstr("EisaId (\"PNP0501\")"));
  EXPECT_THAT(dsl["dsdt"], HasSubstr("IRQNoFlags ()"));
  EXPECT_THAT(dsl["facp"], HasSubstr("Hardware Reduced (V5) : 1"));
  EXPECT_THAT(dsl["facp"], HasSubstr("Address : 0000000000000600"));
  EXPECT_THAT(dsl["apic"], HasSubstr("[I/O APIC]"));
  size_t lapics = 0;
  for (size_t at = dsl["apic"].find("[Processor Local APIC]"); at != std::string::npos;
       at = dsl["apic"].find("[Processor Local APIC]", at + 1)) {
    ++lapics;
  }
  EXPECT_EQ(lapics, GetParam().cpus);

  // The disassembled DSDT compiles back without errors or warnings.
  CommandResult c = InDir("/usr/bin/iasl dsdt.dsl");
  EXPECT_EQ(c.status, 0) << c.output;
  EXPECT_THAT(c.output, HasSubstr("0 Errors, 0 Warnings"));
}

TEST_P(AcpicaTest, AcpiexecLoadsTheNamespaceAndEvaluatesIt) {
  if (!Executable("/usr/bin/acpiexec")) GTEST_SKIP() << "acpiexec not installed (Debian: acpica-tools)";
  CommandResult r = InDir(
      "timeout 60 /usr/bin/acpiexec -b 'evaluate \\_S5_; evaluate \\_SB.COM1._HID; "
      "evaluate \\_SB.COM1._CRS'" +
      DatFiles());
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("1 ACPI AML tables successfully acquired and loaded"));
  EXPECT_THAT(r.output, HasSubstr("[Package] Contains 4 Elements"));
  EXPECT_THAT(r.output, HasSubstr("[Integer] = 0000000000000005"));
  EXPECT_THAT(r.output, HasSubstr("[Integer] = 000000000105D041"));
  EXPECT_THAT(r.output, HasSubstr("47 01 F8 03 F8 03 00 08 22 10 00 79 0F"));
  EXPECT_THAT(r.output, Not(HasSubstr("Incorrect checksum")));
  EXPECT_THAT(r.output, Not(HasSubstr("AE_")));  // any ACPICA exception code
}

INSTANTIATE_TEST_SUITE_P(Configs, AcpicaTest, kAllCases, CaseName);

// Removes every space, tab and line break, so disassembly can be matched
// without depending on iasl's indentation.
std::string Squeeze(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c != ' ' && c != '\t' && c != '\n' && c != '\r') out.push_back(c);
  }
  return out;
}

// How iasl writes a small integer.
std::string AslInteger(uint32_t v) {
  if (v == 0) return "Zero";
  if (v == 1) return "One";
  char buf[16];
  std::snprintf(buf, sizeof buf, v <= 0xff ? "0x%02X" : "0x%08X", v);
  return buf;
}

TEST_P(AcpicaTest, IaslSeesTheGedAndThePowerButton) {
  if (!Executable("/usr/bin/iasl")) GTEST_SKIP() << "iasl not installed (Debian: acpica-tools)";
  CommandResult r = InDir("/usr/bin/iasl -d dsdt.dat");
  ASSERT_EQ(r.status, 0) << r.output;
  const std::string d = Squeeze(ReadFile(dir_.path() / "dsdt.dsl"));
  EXPECT_THAT(d, HasSubstr("Device(PWRB){Name(_HID,EisaId(\"PNP0C0C\")"));
  EXPECT_THAT(d, HasSubstr("Device(\\_SB.GED0){Name(_HID,\"ACPI0013\""));
  char irq[128];
  std::snprintf(irq, sizeof irq,
                "Interrupt(ResourceConsumer,Level,ActiveHigh,Exclusive,,,){0x%08X,}})",
                layout::kGedGsi);
  EXPECT_THAT(d, HasSubstr(irq));
  char region[64];
  std::snprintf(region, sizeof region, "OperationRegion(EREG,SystemIO,0x%04X,One)",
                layout::kPortGed);
  EXPECT_THAT(d, HasSubstr(region));
  EXPECT_THAT(d, HasSubstr("Field(EREG,ByteAcc,NoLock,Preserve){EVTS,8}"));
  EXPECT_THAT(d, HasSubstr("Method(_EVT,1,Serialized)//_EVT:Event{Local0=EVTS/*\\_SB_.GED0.EVTS*/"
                           "If((Local0&One)){Notify(\\_SB.PWRB,0x80)"));
}

// _EVT run by ACPICA's interpreter against a simulated event register: a
// power-button bit gives Notify(PWRB, 0x80); any other bit, or none, nothing.
TEST_P(AcpicaTest, AcpiexecRunsTheGedEventMethod) {
  if (!Executable("/usr/bin/acpiexec")) {
    GTEST_SKIP() << "acpiexec not installed (Debian: acpica-tools)";
  }
  const std::string evt = " -b 'evaluate \\_SB.GED0._EVT " + std::to_string(layout::kGedGsi) +
                          "; evaluate \\_SB.GED0._CRS; evaluate \\_SB.GED0._HID'" + DatFiles();
  // -fv: the byte every simulated operation region starts with.
  CommandResult pressed = InDir("timeout 60 /usr/bin/acpiexec -fv 1" + evt);
  EXPECT_EQ(pressed.status, 0) << pressed.output;
  EXPECT_THAT(pressed.output, HasSubstr("Notify on [PWRB]"));
  EXPECT_THAT(pressed.output, HasSubstr("Value 0x80"));
  EXPECT_THAT(pressed.output, HasSubstr("[String] Length 08 = \"ACPI0013\""));
  char crs[64];
  std::snprintf(crs, sizeof crs, "89 06 00 01 01 %02X 00 00 00 79", layout::kGedGsi);
  EXPECT_THAT(pressed.output, HasSubstr(crs));
  EXPECT_THAT(pressed.output, Not(HasSubstr("AE_")));
  for (const char* fill : {"0", "2", "254"}) {
    SCOPED_TRACE(fill);
    CommandResult other = InDir(std::string("timeout 60 /usr/bin/acpiexec -fv ") + fill + evt);
    EXPECT_EQ(other.status, 0) << other.output;
    EXPECT_THAT(other.output, HasSubstr("Evaluating \\_SB.GED0._EVT"));
    EXPECT_THAT(other.output, Not(HasSubstr("Notify"))) << other.output;
    EXPECT_THAT(other.output, Not(HasSubstr("AE_")));
  }
}

using AcpicaPciTest = AcpicaTest;

TEST_P(AcpicaPciTest, IaslSeesTheHostBridgeItsWindowsRoutingAndMcfg) {
  if (!Executable("/usr/bin/iasl")) GTEST_SKIP() << "iasl not installed (Debian: acpica-tools)";
  for (const char* name : {"dsdt", "mcfg"}) {
    CommandResult r = InDir(std::string("/usr/bin/iasl -d ") + name + ".dat");
    ASSERT_EQ(r.status, 0) << r.output;
  }
  const std::string dsdt = ReadFile(dir_.path() / "dsdt.dsl");
  const std::string mcfg = ReadFile(dir_.path() / "mcfg.dsl");
  EXPECT_THAT(mcfg, HasSubstr("Base Address : 00000000E0000000"));
  EXPECT_THAT(mcfg, HasSubstr("Segment Group Number : 0000"));
  EXPECT_THAT(mcfg, HasSubstr("Start Bus Number : 00"));
  EXPECT_THAT(mcfg, HasSubstr("End Bus Number : 00"));

  const std::string d = Squeeze(dsdt);
  EXPECT_THAT(d, HasSubstr("Device(PCI0)"));
  EXPECT_THAT(d, HasSubstr("Name(_HID,EisaId(\"PNP0A08\")"));
  EXPECT_THAT(d, HasSubstr("Name(_CID,EisaId(\"PNP0A03\")"));
  EXPECT_THAT(d, HasSubstr("Name(_SEG,Zero)"));
  EXPECT_THAT(d, HasSubstr("Name(_BBN,Zero)"));
  EXPECT_THAT(d, HasSubstr("WordBusNumber(ResourceProducer,MinFixed,MaxFixed,PosDecode,"
                           "0x0000,//Granularity0x0000,//RangeMinimum0x0000,//RangeMaximum"));
  EXPECT_THAT(d, HasSubstr("0x0000,//RangeMinimum0x0CF7,//RangeMaximum"));
  EXPECT_THAT(d, HasSubstr("0x0D00,//RangeMinimum0xFFFF,//RangeMaximum"));
  EXPECT_THAT(d, HasSubstr("DWordMemory(ResourceProducer,PosDecode,MinFixed,MaxFixed,"
                           "NonCacheable,ReadWrite,0x00000000,//Granularity0xC0000000,"
                           "//RangeMinimum0xDFFFFFFF,//RangeMaximum"));
  char qword[160];
  std::snprintf(qword, sizeof qword, "0x%016llX,//RangeMinimum0x%016llX,//RangeMaximum",
                static_cast<unsigned long long>(kMmio64.base),
                static_cast<unsigned long long>(kMmio64.base + kMmio64.size - 1));
  EXPECT_THAT(d, HasSubstr("QWordMemory(ResourceProducer,PosDecode,MinFixed,MaxFixed,"
                           "NonCacheable,ReadWrite,"));
  EXPECT_THAT(d, HasSubstr(qword));
  EXPECT_THAT(d, HasSubstr("Device(MRES)"));
  EXPECT_THAT(d, HasSubstr("Name(_HID,EisaId(\"PNP0C02\")"));
  EXPECT_THAT(d, HasSubstr("Memory32Fixed(ReadWrite,0xE0000000,//AddressBase0x00100000,"
                           "//AddressLength"));

  // _PRT: every slot 1..31 and pin, in order, to the GSI layout.h wires it to.
  std::string prt = "Name(_PRT,Package(0x7C)//_PRT:PCIRoutingTable{";
  for (uint32_t slot = 1; slot < 32; ++slot) {
    for (uint32_t pin = 0; pin < 4; ++pin) {
      char addr[16];
      std::snprintf(addr, sizeof addr, "0x%04XFFFF", slot);
      prt += std::string(slot == 1 && pin == 0 ? "" : ",") + "Package(0x04){" + addr + "," +
             AslInteger(pin) + ",Zero," + AslInteger(layout::PciIntxGsi(slot, pin)) + "}";
    }
  }
  prt += "})";
  EXPECT_THAT(d, HasSubstr(prt));
}

TEST_P(AcpicaPciTest, AcpiexecEvaluatesThePciObjects) {
  if (!Executable("/usr/bin/acpiexec")) {
    GTEST_SKIP() << "acpiexec not installed (Debian: acpica-tools)";
  }
  CommandResult r = InDir(
      "timeout 60 /usr/bin/acpiexec -b 'evaluate \\_SB.PCI0._HID; evaluate \\_SB.PCI0._PRT; "
      "evaluate \\_SB.PCI0._CRS; evaluate \\_SB.MRES._CRS; evaluate \\_SB.MRES._HID'" +
      DatFiles());
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("1 ACPI AML tables successfully acquired and loaded"));
  EXPECT_THAT(r.output, HasSubstr("ACPI: MCFG"));
  EXPECT_THAT(r.output, HasSubstr("[Integer] = 00000000080AD041")) << "PNP0A08";
  EXPECT_THAT(r.output, HasSubstr("[Integer] = 00000000020CD041")) << "PNP0C02";
  EXPECT_THAT(r.output, HasSubstr("[Package] Contains 124 Elements"));
  EXPECT_THAT(r.output, HasSubstr("86 09 00 01 00 00 00 E0 00 00 10 00 79"));
  // The bus-number descriptor opens the bridge's _CRS.
  EXPECT_THAT(r.output, HasSubstr("0000: 88 0D 00 02 0C 00 00 00 00 00 00 00 00 00 01 00"));
  EXPECT_THAT(r.output, Not(HasSubstr("AE_")));
}

INSTANTIATE_TEST_SUITE_P(Configs, AcpicaPciTest, kPciCases, CaseName);

}  // namespace
}  // namespace flint
