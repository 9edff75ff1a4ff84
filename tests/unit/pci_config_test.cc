// PciConfigSpace: what a guest can and cannot change in a type-0 header, BAR
// sizing, the capability list, and accesses the hardware would not decode.
#include "devices/pci/config_space.h"

#include <gtest/gtest.h>

#include <array>
#include <cstdint>
#include <vector>

namespace flint::pci {
namespace {

constexpr PciIds kIds{.vendor = 0x1af4,
                      .device = 0x1042,
                      .subsystem_vendor = 0x1af4,
                      .subsystem = 0x0002,
                      .revision = 1,
                      .class_code = 0x010000,
                      .header_type = 0x80};

// Guest-side accessors, as a config mechanism would issue them.
uint32_t Rd(const PciConfigSpace& c, uint16_t off, size_t size) {
  std::array<uint8_t, 8> b{};
  c.Read(off, std::span(b).first(size));
  uint32_t v = 0;
  for (size_t i = 0; i < std::min<size_t>(size, 4); ++i) v |= uint32_t{b[i]} << (8 * i);
  return v;
}
uint32_t Rd32(const PciConfigSpace& c, uint16_t off) { return Rd(c, off, 4); }
uint16_t Rd16(const PciConfigSpace& c, uint16_t off) {
  return static_cast<uint16_t>(Rd(c, off, 2));
}
uint8_t Rd8(const PciConfigSpace& c, uint16_t off) { return static_cast<uint8_t>(Rd(c, off, 1)); }
void Wr(PciConfigSpace& c, uint16_t off, size_t size, uint32_t v) {
  std::array<uint8_t, 8> b{};
  for (size_t i = 0; i < std::min<size_t>(size, 4); ++i) b[i] = static_cast<uint8_t>(v >> (8 * i));
  c.Write(off, std::span<const uint8_t>(b).first(size));
}
void Wr32(PciConfigSpace& c, uint16_t off, uint32_t v) { Wr(c, off, 4, v); }

TEST(PciConfigSpace, HeaderCarriesTheIdsAndIgnoresWritesToThem) {
  PciConfigSpace c(kIds);
  EXPECT_EQ(Rd32(c, 0x00), 0x10421af4u);
  EXPECT_EQ(Rd8(c, 0x08), 1) << "revision";
  EXPECT_EQ(Rd32(c, 0x08) >> 8, 0x010000u) << "class code";
  EXPECT_EQ(Rd8(c, 0x0e), 0) << "header type 0, multi-function bit not set";
  EXPECT_EQ(Rd32(c, 0x2c), 0x00021af4u) << "subsystem";
  for (uint16_t off : {0x00, 0x08, 0x0c, 0x2c}) Wr32(c, off, 0xffffffff);
  Wr32(c, 0x00, 0);
  EXPECT_EQ(Rd32(c, 0x00), 0x10421af4u);
  EXPECT_EQ(Rd32(c, 0x08), 0x01000001u);
  EXPECT_EQ(Rd32(c, 0x0c), 0u);
  EXPECT_EQ(Rd32(c, 0x2c), 0x00021af4u);
}

TEST(PciConfigSpace, CommandHasOnlyTheFourWritableBitsAndStatusIsReadOnly) {
  PciConfigSpace c(kIds);
  EXPECT_EQ(c.command(), 0) << "power-on: no decoding";
  Wr(c, kCommand, 2, 0xffff);
  EXPECT_EQ(Rd16(c, kCommand), kCommandIo | kCommandMemory | kCommandBusMaster |
                                   kCommandIntxDisable);
  EXPECT_TRUE(c.memory_enabled());
  EXPECT_TRUE(c.bus_master());
  Wr(c, kCommand, 1, 0x00);  // byte write clears the low byte only
  EXPECT_EQ(Rd16(c, kCommand), kCommandIntxDisable);
  EXPECT_FALSE(c.memory_enabled());

  Wr(c, kStatus, 2, 0xffff);
  EXPECT_EQ(Rd16(c, kStatus), 0) << "no capabilities, no interrupt: status stays 0";
  c.SetIntxStatus(true);
  EXPECT_EQ(Rd16(c, kStatus), kStatusIntx);
  Wr(c, kStatus, 2, 0);
  EXPECT_EQ(Rd16(c, kStatus), kStatusIntx) << "the guest cannot clear it";
  c.SetIntxStatus(false);
  EXPECT_EQ(Rd16(c, kStatus), 0);
}

TEST(PciConfigSpace, Bar32SizingAndProgramming) {
  PciConfigSpace c(kIds);
  ASSERT_TRUE(c.DeclareBar(0, 0x4000, BarKind::kMem32).ok());
  ASSERT_TRUE(c.DeclareBar(1, 0x100000, BarKind::kMem32, /*prefetchable=*/true).ok());
  EXPECT_TRUE(c.BarDeclared(0));
  EXPECT_EQ(c.BarSize(0), 0x4000u);
  EXPECT_EQ(c.BarKindOf(0), BarKind::kMem32);
  EXPECT_EQ(Rd32(c, 0x10), 0u) << "memory, 32-bit, not prefetchable, address 0";
  EXPECT_EQ(Rd32(c, 0x14), 0x8u) << "prefetchable bit";

  c.SetBarAddress(0, 0xc0004000);
  EXPECT_EQ(Rd32(c, 0x10), 0xc0004000u);
  EXPECT_EQ(c.BarAddress(0), 0xc0004000u);

  // Sizing: all ones reads back the size mask with the type bits.
  Wr32(c, 0x10, 0xffffffff);
  EXPECT_EQ(Rd32(c, 0x10), 0xffffc000u);
  EXPECT_EQ(c.BarAddress(0), 0u) << "a sizing probe is not an address";
  Wr32(c, 0x14, 0xffffffff);
  EXPECT_EQ(Rd32(c, 0x14), 0xfff00008u);

  // The guest puts it back (or elsewhere); bits below the size stay 0.
  Wr32(c, 0x10, 0xd0001234);
  EXPECT_EQ(Rd32(c, 0x10), 0xd0000000u);
  EXPECT_EQ(c.BarAddress(0), 0xd0000000u);
  // A probe written one byte at a time is still a probe.
  for (uint16_t i = 0; i < 4; ++i) Wr(c, static_cast<uint16_t>(0x10 + i), 1, 0xff);
  EXPECT_EQ(Rd32(c, 0x10), 0xffffc000u);
  EXPECT_EQ(c.BarAddress(0), 0u);
  Wr(c, 0x12, 2, 0xc000);  // half reprogrammed: no longer all-ones written
  EXPECT_EQ(c.BarAddress(0), 0xc000c000u);
}

TEST(PciConfigSpace, Bar64SizingUsesBothDwords) {
  PciConfigSpace c(kIds);
  ASSERT_TRUE(c.DeclareBar(2, 0x10000, BarKind::kMem64, /*prefetchable=*/true).ok());
  ASSERT_TRUE(c.DeclareBar(4, 8ull << 30, BarKind::kMem64).ok());
  EXPECT_FALSE(c.BarDeclared(3)) << "the upper half is not a BAR of its own";
  EXPECT_EQ(Rd32(c, 0x18), 0xcu) << "64-bit type (0b10) and prefetchable";
  EXPECT_EQ(Rd32(c, 0x20), 0x4u) << "64-bit type";

  c.SetBarAddress(2, 0x1'4000'0000ull);
  EXPECT_EQ(Rd32(c, 0x18), 0x4000000cu);
  EXPECT_EQ(Rd32(c, 0x1c), 0x1u);
  EXPECT_EQ(c.BarAddress(2), 0x1'4000'0000ull);

  Wr32(c, 0x18, 0xffffffff);
  EXPECT_EQ(Rd32(c, 0x18), 0xffff000cu);
  EXPECT_EQ(c.BarAddress(2), 0u);
  Wr32(c, 0x1c, 0xffffffff);
  EXPECT_EQ(Rd32(c, 0x1c), 0xffffffffu);
  // An 8 GiB BAR: no writable address bits in the low dword.
  Wr32(c, 0x20, 0xffffffff);
  Wr32(c, 0x24, 0xffffffff);
  EXPECT_EQ(Rd32(c, 0x20), 0x4u);
  EXPECT_EQ(Rd32(c, 0x24), 0xfffffffeu);

  Wr32(c, 0x18, 0x80000000);
  Wr32(c, 0x1c, 0x00000002);
  EXPECT_EQ(c.BarAddress(2), 0x2'8000'0000ull);
  Wr32(c, 0x20, 0);
  Wr32(c, 0x24, 0x10);
  EXPECT_EQ(c.BarAddress(4), 0x10'0000'0000ull);
}

TEST(PciConfigSpace, DeclareBarRejectsBadShapes) {
  PciConfigSpace c(kIds);
  EXPECT_FALSE(c.DeclareBar(-1, 0x1000, BarKind::kMem32).ok());
  EXPECT_FALSE(c.DeclareBar(6, 0x1000, BarKind::kMem32).ok());
  EXPECT_FALSE(c.DeclareBar(5, 0x1000, BarKind::kMem64).ok()) << "needs index 6 too";
  EXPECT_FALSE(c.DeclareBar(0, 0x800, BarKind::kMem32).ok()) << "below 4 KiB";
  EXPECT_FALSE(c.DeclareBar(0, 0x3000, BarKind::kMem32).ok()) << "not a power of two";
  EXPECT_FALSE(c.DeclareBar(0, 4ull << 30, BarKind::kMem32).ok()) << "32-bit BAR over 2 GiB";
  ASSERT_TRUE(c.DeclareBar(1, 0x1000, BarKind::kMem64).ok());
  EXPECT_FALSE(c.DeclareBar(1, 0x1000, BarKind::kMem32).ok()) << "already declared";
  EXPECT_FALSE(c.DeclareBar(2, 0x1000, BarKind::kMem32).ok()) << "upper half of BAR 1";
  EXPECT_FALSE(c.DeclareBar(0, 0x1000, BarKind::kMem64).ok()) << "would overlap BAR 1";
  EXPECT_TRUE(c.DeclareBar(0, 0x1000, BarKind::kMem32).ok());
  EXPECT_TRUE(c.DeclareBar(3, 0x1000, BarKind::kMem64).ok());
}

TEST(PciConfigSpace, UndeclaredBarsAndTheRomBarReadZero) {
  PciConfigSpace c(kIds);
  ASSERT_TRUE(c.DeclareBar(0, 0x1000, BarKind::kMem32).ok());
  for (uint16_t off = 0x14; off < 0x28; off += 4) {
    Wr32(c, off, 0xffffffff);
    EXPECT_EQ(Rd32(c, off), 0u) << off;
  }
  Wr32(c, 0x30, 0xffffffff);
  EXPECT_EQ(Rd32(c, 0x30), 0u) << "no expansion ROM";
  EXPECT_EQ(c.BarAddress(1), 0u);
  EXPECT_EQ(c.BarSize(1), 0u);
}

TEST(PciConfigSpace, InterruptLineIsWritablePinIsNot) {
  PciConfigSpace c(kIds);
  c.SetInterruptPin(1);
  EXPECT_EQ(c.interrupt_pin(), 1);
  Wr(c, kInterruptLine, 2, 0x0423);
  EXPECT_EQ(Rd8(c, kInterruptLine), 0x23);
  EXPECT_EQ(Rd8(c, kInterruptPin), 1) << "pin is read-only";
  c.SetInterruptPin(5);
  EXPECT_EQ(c.interrupt_pin(), 1) << "there is no INTE#";
  Wr32(c, 0x3c, 0xffffffff);
  EXPECT_EQ(Rd32(c, 0x3c), 0x000001ffu) << "min_gnt/max_lat are 0";
}

TEST(PciConfigSpace, CapabilityListIsLinkedFrom0x34) {
  PciConfigSpace c(kIds);
  EXPECT_EQ(Rd8(c, kCapPtr), 0);
  EXPECT_EQ(Rd16(c, kStatus) & kStatusCapList, 0);

  const std::vector<uint8_t> body1 = {0x0d, 0xaa, 0xbb};  // 5 bytes in all
  const std::vector<uint8_t> mask1 = {0x00, 0xf0, 0x00};
  absl::StatusOr<uint16_t> a = c.AddCapability(kCapIdVendor, body1, mask1);
  ASSERT_TRUE(a.ok()) << a.status();
  const std::vector<uint8_t> body2(10, 0x11);
  absl::StatusOr<uint16_t> b = c.AddCapability(kCapIdMsix, body2);
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(*a % 4, 0);
  EXPECT_EQ(*b % 4, 0);
  EXPECT_GE(*a, 0x40);
  EXPECT_GE(*b, *a + 5) << "capabilities do not overlap";

  EXPECT_NE(Rd16(c, kStatus) & kStatusCapList, 0);
  // Walk the list as an OS does.
  std::vector<std::pair<uint8_t, uint16_t>> found;
  for (uint8_t p = Rd8(c, kCapPtr); p != 0 && found.size() < 48; p = Rd8(c, p + 1)) {
    found.push_back({Rd8(c, p), p});
  }
  ASSERT_EQ(found.size(), 2u);
  EXPECT_EQ(found[0], (std::pair<uint8_t, uint16_t>{kCapIdVendor, *a}));
  EXPECT_EQ(found[1], (std::pair<uint8_t, uint16_t>{kCapIdMsix, *b}));
  EXPECT_EQ(Rd8(c, *a + 2), 0x0d);
  EXPECT_EQ(Rd8(c, *b + 11), 0x11);

  // Only the masked bits move; IDs, next pointers and unmasked bodies do not.
  Wr32(c, *a, 0xffffffff);
  EXPECT_EQ(Rd32(c, *a), 0xfa0d0000u | (uint32_t{*b} << 8) | kCapIdVendor);
  Wr32(c, *a, 0);
  EXPECT_EQ(Rd32(c, *a), 0x0a0d0000u | (uint32_t{*b} << 8) | kCapIdVendor);
  Wr32(c, *b, 0);
  EXPECT_EQ(Rd8(c, *b + 2), 0x11) << "read-only body";
  Wr(c, kCapPtr, 1, 0);
  EXPECT_EQ(Rd8(c, kCapPtr), *a);

  // The device side changes its own fields without masks.
  c.SetByte(static_cast<uint16_t>(*a + 4), 0x5a);
  EXPECT_EQ(c.ReadByte(static_cast<uint16_t>(*a + 4)), 0x5a);
  c.SetWord(static_cast<uint16_t>(*b + 2), 0xbeef);
  EXPECT_EQ(c.ReadWord(static_cast<uint16_t>(*b + 2)), 0xbeef);
  EXPECT_EQ(c.ReadDword(static_cast<uint16_t>(*b)) & 0xffff00ffu, 0xbeef0000u | kCapIdMsix);
}

TEST(PciConfigSpace, CapabilitiesMustFitAndMasksMustMatch) {
  PciConfigSpace c(kIds);
  const std::vector<uint8_t> body(4, 0);
  const std::vector<uint8_t> short_mask(3, 0xff);
  EXPECT_EQ(c.AddCapability(kCapIdVendor, body, short_mask).status().code(),
            absl::StatusCode::kInvalidArgument);
  // 0x40..0xff holds 192 bytes: 6-byte capabilities, each padded to 8, at
  // 0x40, 0x48, ... 0xf8; after that not even a bodiless one fits.
  int added = 0;
  while (c.AddCapability(kCapIdVendor, body).ok()) ++added;
  EXPECT_EQ(added, 24);
  EXPECT_EQ(c.AddCapability(kCapIdVendor, {}).status().code(),
            absl::StatusCode::kResourceExhausted);
  int walked = 0;
  for (uint8_t p = Rd8(c, kCapPtr); p != 0 && walked < 100; p = Rd8(c, p + 1)) ++walked;
  EXPECT_EQ(walked, added) << "the list stays intact and terminated";
}

TEST(PciConfigSpace, MisalignedAndOddSizedAccessesReadOnesAndAreIgnored) {
  PciConfigSpace c(kIds);
  ASSERT_TRUE(c.DeclareBar(0, 0x1000, BarKind::kMem32).ok());
  EXPECT_EQ(Rd(c, 0x01, 2), 0xffffu);
  EXPECT_EQ(Rd(c, 0x02, 4), 0xffffffffu);
  EXPECT_EQ(Rd(c, 0x00, 3), 0xffffffu);
  std::array<uint8_t, 8> eight{};
  c.Read(0, eight);
  EXPECT_EQ(eight, (std::array<uint8_t, 8>{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}));
  c.Read(0, std::span<uint8_t>());  // empty: nothing to do, nothing to crash
  EXPECT_EQ(Rd(c, 4094, 4), 0xffffffffu) << "past the end of config space";

  Wr(c, 0x03, 2, 0xffff);   // would reach the command register
  Wr(c, 0x04, 3, 0xffffff);
  Wr(c, 0x12, 4, 0xffffffff);
  EXPECT_EQ(c.command(), 0);
  EXPECT_EQ(Rd32(c, 0x10), 0u);
  EXPECT_EQ(c.BarAddress(0), 0u);
  // A word at 0x06 is aligned: legal (and status stays read-only).
  EXPECT_EQ(Rd(c, 0x06, 2), 0u);
}

TEST(PciConfigSpace, ExtendedSpaceIsReachableAndEmpty) {
  PciConfigSpace c(kIds);
  EXPECT_EQ(Rd32(c, 0x100), 0u) << "no extended capabilities: header at 0x100 is 0";
  EXPECT_EQ(Rd32(c, 0xffc), 0u);
  Wr32(c, 0x100, 0xffffffff);
  EXPECT_EQ(Rd32(c, 0x100), 0u);
}

}  // namespace
}  // namespace flint::pci
