// Msix: the capability as the guest sees it, the vector table and PBA, and
// when a notification fires, pends or is routed.
#include "devices/pci/msix.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <memory>
#include <vector>

#include "tests/support/fake_device_host.h"

namespace flint::pci {
namespace {

using testing::FakeDeviceHost;

constexpr int kBar = 2;
constexpr uint32_t kTable = 0x1000;
constexpr uint32_t kPba = 0x1800;
constexpr uint16_t kVectors = 4;

uint32_t Rd(const PciConfigSpace& c, uint16_t off, size_t size) {
  std::array<uint8_t, 4> b{};
  c.Read(off, std::span(b).first(size));
  return uint32_t{b[0]} | uint32_t{b[1]} << 8 | uint32_t{b[2]} << 16 | uint32_t{b[3]} << 24;
}
void Wr(PciConfigSpace& c, uint16_t off, size_t size, uint32_t v) {
  std::array<uint8_t, 4> b{};
  for (size_t i = 0; i < 4; ++i) b[i] = static_cast<uint8_t>(v >> (8 * i));
  c.Write(off, std::span<const uint8_t>(b).first(size));
}

class MsixTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(config_.DeclareBar(kBar, 0x4000, BarKind::kMem32).ok());
    auto m = Msix::Create(config_, host_, kVectors, kBar, kTable, kPba);
    ASSERT_TRUE(m.ok()) << m.status();
    msix_ = std::move(*m);
    cap_ = config_.ReadByte(kCapPtr);
    ASSERT_NE(cap_, 0);
  }

  // The guest writes Message Control, the device is told (as PciRoot does).
  void Control(uint16_t v) {
    Wr(config_, static_cast<uint16_t>(cap_ + 2), 2, v);
    msix_->ConfigWritten(config_);
  }
  void Enable() { Control(0x8000); }

  uint32_t Table32(uint64_t off) {
    std::array<uint8_t, 4> b{};
    msix_->TableRead(off, b);
    return uint32_t{b[0]} | uint32_t{b[1]} << 8 | uint32_t{b[2]} << 16 | uint32_t{b[3]} << 24;
  }
  uint64_t Table64(uint64_t off) {
    std::array<uint8_t, 8> b{};
    msix_->TableRead(off, b);
    uint64_t v = 0;
    for (int i = 7; i >= 0; --i) v = (v << 8) | b[i];
    return v;
  }
  void SetTable32(uint64_t off, uint32_t v) {
    std::array<uint8_t, 4> b{};
    for (size_t i = 0; i < 4; ++i) b[i] = static_cast<uint8_t>(v >> (8 * i));
    msix_->TableWrite(off, b);
  }
  void SetTable64(uint64_t off, uint64_t v) {
    std::array<uint8_t, 8> b{};
    for (size_t i = 0; i < 8; ++i) b[i] = static_cast<uint8_t>(v >> (8 * i));
    msix_->TableWrite(off, b);
  }
  // Address and data for entry `i`, leaving its mask alone.
  void Program(uint16_t i, uint64_t address, uint32_t data) {
    SetTable64(i * 16u, address);
    SetTable32(i * 16u + 8, data);
  }
  void Mask(uint16_t i, bool masked) { SetTable32(i * 16u + 12, masked ? 1 : 0); }
  uint64_t Pba() {
    std::array<uint8_t, 8> b{};
    msix_->PbaRead(0, b);
    uint64_t v = 0;
    for (int i = 7; i >= 0; --i) v = (v << 8) | b[i];
    return v;
  }

  PciConfigSpace config_{PciIds{.vendor = 0x1af4, .device = 0x1042}};
  FakeDeviceHost host_;
  std::unique_ptr<Msix> msix_;
  uint16_t cap_ = 0;
};

TEST_F(MsixTest, CapabilityFieldsAsTheGuestSeesThem) {
  EXPECT_EQ(config_.ReadByte(cap_), kCapIdMsix);
  EXPECT_NE(Rd(config_, kStatus, 2) & kStatusCapList, 0u);
  EXPECT_EQ(Rd(config_, cap_ + 2, 2), kVectors - 1u) << "table size is N - 1, disabled";
  EXPECT_EQ(Rd(config_, cap_ + 4, 4), kTable | kBar) << "table offset / BIR";
  EXPECT_EQ(Rd(config_, cap_ + 8, 4), kPba | kBar) << "PBA offset / BIR";
  EXPECT_EQ(msix_->num_vectors(), kVectors);
  EXPECT_EQ(msix_->table_size(), kVectors * 16u);
  EXPECT_EQ(msix_->pba_size(), 8u);
  EXPECT_EQ(msix_->table_offset(), kTable);
  EXPECT_EQ(msix_->pba_offset(), kPba);

  // Only enable (15) and function mask (14) are writable.
  Wr(config_, static_cast<uint16_t>(cap_ + 2), 2, 0xffff);
  EXPECT_EQ(Rd(config_, cap_ + 2, 2), 0xc000u | (kVectors - 1u));
  Wr(config_, static_cast<uint16_t>(cap_ + 4), 4, 0);
  Wr(config_, static_cast<uint16_t>(cap_ + 8), 4, 0xffffffff);
  EXPECT_EQ(Rd(config_, cap_ + 4, 4), kTable | kBar);
  EXPECT_EQ(Rd(config_, cap_ + 8, 4), kPba | kBar);
  msix_->ConfigWritten(config_);
  EXPECT_TRUE(msix_->enabled());
  Control(0);
  EXPECT_FALSE(msix_->enabled());
}

TEST(Msix, CreateRejectsBadGeometry) {
  FakeDeviceHost host;
  PciConfigSpace config(PciIds{});
  ASSERT_TRUE(config.DeclareBar(0, 0x1000, BarKind::kMem32).ok());
  EXPECT_FALSE(Msix::Create(config, host, 0, 0, 0, 0x800).ok());
  EXPECT_FALSE(Msix::Create(config, host, 2049, 0, 0, 0x800).ok());
  EXPECT_FALSE(Msix::Create(config, host, 4, 1, 0, 0x800).ok()) << "BAR 1 not declared";
  EXPECT_FALSE(Msix::Create(config, host, 4, 6, 0, 0x800).ok());
  EXPECT_FALSE(Msix::Create(config, host, 4, 0, 4, 0x800).ok()) << "misaligned table";
  EXPECT_FALSE(Msix::Create(config, host, 4, 0, 0, 0x804).ok()) << "misaligned PBA";
  EXPECT_FALSE(Msix::Create(config, host, 256, 0, 0, 0xff8).ok()) << "table leaves the BAR";
  EXPECT_FALSE(Msix::Create(config, host, 4, 0, 0, 0x8).ok()) << "PBA inside the table";
  EXPECT_FALSE(Msix::Create(config, host, 4, 0, 0, 0x1000).ok()) << "PBA leaves the BAR";
  EXPECT_EQ(config.ReadByte(kCapPtr), 0) << "no capability left behind by failures";
  auto ok = Msix::Create(config, host, 64, 0, 0, 0x400);
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(config.ReadByte(kCapPtr), 0x40);
}

TEST_F(MsixTest, TableEntriesReadBackAndOnlyTheMaskBitIsWritable) {
  for (uint16_t i = 0; i < kVectors; ++i) {
    EXPECT_EQ(Table64(i * 16u), 0u);
    EXPECT_EQ(Table32(i * 16u + 8), 0u);
    EXPECT_EQ(Table32(i * 16u + 12), 1u) << "masked at power-on";
  }
  SetTable32(0x10, 0xfee01000);
  SetTable32(0x14, 0x12345678);
  SetTable32(0x18, 0xabcd);
  SetTable32(0x1c, 0xfffffffe);
  EXPECT_EQ(Table64(0x10), 0x12345678'fee01000ull) << "8-byte read of the address pair";
  EXPECT_EQ(Table32(0x18), 0xabcdu);
  EXPECT_EQ(Table32(0x1c), 0u) << "reserved vector-control bits read 0";
  SetTable64(0x20, 0x1'fee0'2000ull);
  EXPECT_EQ(Table32(0x20), 0xfee02000u);
  EXPECT_EQ(Table32(0x24), 1u);
  SetTable64(0x28, 0x00000001'00000042ull);  // data and vector control in one
  EXPECT_EQ(Table64(0x28), 0x00000001'00000042ull);

  // Accesses the table does not honour: zero on read, dropped on write.
  std::array<uint8_t, 2> two{0xaa, 0xaa};
  msix_->TableRead(0x10, two);
  EXPECT_EQ(two, (std::array<uint8_t, 2>{0, 0}));
  msix_->TableWrite(0x18, two);
  EXPECT_EQ(Table32(0x18), 0xabcdu);
  EXPECT_EQ(Table32(0x12), 0u) << "misaligned";
  SetTable64(0x14, ~0ull);  // misaligned 8-byte
  EXPECT_EQ(Table32(0x14), 0x12345678u);
  EXPECT_EQ(Table32(kVectors * 16u), 0u) << "past the table";
  SetTable32(kVectors * 16u, 1);
  SetTable64(~0ull - 7, 1);  // offset arithmetic must not wrap
  EXPECT_EQ(Table64(~0ull - 7), 0u);
  EXPECT_TRUE(host_.fired().empty());
}

TEST_F(MsixTest, MaskedVectorPendsAndFiresOnUnmaskWithItsRoute) {
  Enable();
  Program(1, 0xfee00000, 0x4041);
  msix_->Notify(1);
  EXPECT_TRUE(host_.fired().empty());
  EXPECT_EQ(Pba(), 0b10u);

  Mask(1, false);
  EXPECT_EQ(host_.fired(), std::vector<int>({1}));
  EXPECT_EQ(host_.route(1).address, 0xfee00000u);
  EXPECT_EQ(host_.route(1).data, 0x4041u);
  EXPECT_EQ(Pba(), 0u) << "pending bit cleared once delivered";

  // Unmasking again with nothing pending fires nothing.
  Mask(1, true);
  Mask(1, false);
  EXPECT_EQ(host_.fired().size(), 1u);
}

TEST_F(MsixTest, UnmaskedVectorFiresAtOnceAndFollowsNewMessages) {
  Enable();
  Program(0, 0xfee00000, 0x30);
  Mask(0, false);
  EXPECT_EQ(host_.route(0).data, 0x30u) << "routed when it became deliverable";
  msix_->Notify(0);
  msix_->Notify(0);
  EXPECT_EQ(host_.fired(), std::vector<int>({0, 0}));
  EXPECT_EQ(Pba(), 0u);

  Mask(0, true);
  Program(0, 0xfee01000, 0x31);
  Mask(0, false);
  msix_->Notify(0);
  EXPECT_EQ(host_.route(0).address, 0xfee01000u);
  EXPECT_EQ(host_.route(0).data, 0x31u);
  // Even rewritten while unmasked (undefined for the guest, not for us), the
  // next interrupt carries the new message.
  Program(0, 0xfee02000, 0x32);
  msix_->Notify(0);
  EXPECT_EQ(host_.route(0).address, 0xfee02000u);
  EXPECT_EQ(host_.route(0).data, 0x32u);
  EXPECT_EQ(host_.fired().size(), 4u);
  EXPECT_TRUE(host_.route(2).address == 0 && host_.route(2).data == 0) << "others untouched";
}

TEST_F(MsixTest, FunctionMaskHoldsEveryVector) {
  Control(0xc000);  // enabled, function masked
  Program(0, 0xfee00000, 0x40);
  Program(3, 0xfee00000, 0x43);
  Mask(0, false);
  Mask(3, false);
  msix_->Notify(3);
  msix_->Notify(0);
  EXPECT_TRUE(host_.fired().empty());
  EXPECT_EQ(Pba(), 0b1001u);
  Control(0x8000);
  std::vector<int> fired = host_.fired();
  std::sort(fired.begin(), fired.end());
  EXPECT_EQ(fired, std::vector<int>({0, 3}));
  EXPECT_EQ(host_.route(3).data, 0x43u);
  EXPECT_EQ(Pba(), 0u);
}

TEST_F(MsixTest, DisabledMsixPendsUntilEnabled) {
  Program(2, 0xfee00000, 0x52);
  Mask(2, false);
  msix_->Notify(2);
  EXPECT_TRUE(host_.fired().empty()) << "MSI-X disabled: no message";
  EXPECT_EQ(Pba(), 0b100u);
  Enable();
  EXPECT_EQ(host_.fired(), std::vector<int>({2}));
  EXPECT_EQ(host_.route(2).data, 0x52u);
  Control(0);
  msix_->Notify(2);
  EXPECT_EQ(host_.fired().size(), 1u);
  EXPECT_EQ(Pba(), 0b100u);
}

TEST_F(MsixTest, OutOfRangeVectorsAndGarbageAddressesDoNotCrash) {
  Enable();
  msix_->Notify(kVectors);
  msix_->Notify(0xffff);  // virtio's NO_VECTOR
  EXPECT_TRUE(host_.fired().empty());
  EXPECT_EQ(Pba(), 0u);
  // Not an 0xFEExxxxx address: still handed to the host, which decides.
  Program(0, 0xdead'beef'0000'1234ull, 0xffffffff);
  Mask(0, false);
  msix_->Notify(0);
  EXPECT_EQ(host_.route(0).address, 0xdead'beef'0000'1234ull);
  EXPECT_EQ(host_.fired(), std::vector<int>({0}));
}

TEST_F(MsixTest, PbaIsReadOnlyAndHonoursOnlyAlignedDwordsAndQwords) {
  Enable();
  msix_->Notify(0);
  msix_->Notify(3);
  std::array<uint8_t, 4> dw{};
  msix_->PbaRead(0, dw);
  EXPECT_EQ(dw, (std::array<uint8_t, 4>{0b1001, 0, 0, 0}));
  std::array<uint8_t, 2> w{0xaa, 0xaa};
  msix_->PbaRead(0, w);
  EXPECT_EQ(w, (std::array<uint8_t, 2>{0, 0}));
  msix_->PbaRead(8, dw);
  EXPECT_EQ(dw, (std::array<uint8_t, 4>{0, 0, 0, 0})) << "past the PBA";
}

TEST(Msix, PbaCoversManyVectors) {
  FakeDeviceHost host;
  PciConfigSpace config(PciIds{});
  ASSERT_TRUE(config.DeclareBar(0, 0x4000, BarKind::kMem32).ok());
  auto m = Msix::Create(config, host, 100, 0, 0, 0x2000);
  ASSERT_TRUE(m.ok()) << m.status();
  Msix& msix = **m;
  EXPECT_EQ(msix.pba_size(), 16u);
  msix.Notify(64);
  msix.Notify(99);
  msix.Notify(5);
  std::array<uint8_t, 8> q{};
  msix.PbaRead(8, q);
  EXPECT_EQ(q, (std::array<uint8_t, 8>{0x01, 0, 0, 0, 0x08, 0, 0, 0}));
  std::array<uint8_t, 4> d{};
  msix.PbaRead(12, d);
  EXPECT_EQ(d, (std::array<uint8_t, 4>{0x08, 0, 0, 0}));
  msix.PbaRead(0, d);
  EXPECT_EQ(d, (std::array<uint8_t, 4>{0x20, 0, 0, 0}));
}

// A host whose routes KVM refuses: the vector must not fire to a stale route.
class RefusingHost : public DeviceHost {
 public:
  class Vector : public MsiVector {
   public:
    explicit Vector(RefusingHost* host) : host_(host) {}
    absl::Status SetRoute(uint64_t address, uint32_t) override {
      if (address == 0xbad) return absl::InvalidArgumentError("refused");
      ++host_->routes;
      return absl::OkStatus();
    }
    void Fire() override { ++host_->fires; }

   private:
    RefusingHost* host_;
  };
  absl::StatusOr<std::unique_ptr<MsiVector>> AllocateMsi() override {
    if (allocations++ == fail_at) return absl::ResourceExhaustedError("no GSIs left");
    return std::unique_ptr<MsiVector>(new Vector(this));
  }
  std::unique_ptr<IrqLine> IntxLine(uint32_t) override { return nullptr; }
  absl::Status AddIoeventfd(int, uint64_t, uint32_t) override { return absl::OkStatus(); }
  absl::Status RemoveIoeventfd(int, uint64_t, uint32_t) override { return absl::OkStatus(); }

  int routes = 0;
  int fires = 0;
  int allocations = 0;
  int fail_at = -1;
};

TEST(Msix, RefusedRouteDropsTheInterruptAndRetriesLater) {
  RefusingHost host;
  PciConfigSpace config(PciIds{});
  ASSERT_TRUE(config.DeclareBar(0, 0x1000, BarKind::kMem32).ok());
  auto m = Msix::Create(config, host, 1, 0, 0, 0x800);
  ASSERT_TRUE(m.ok());
  Msix& msix = **m;
  const uint16_t cap = config.ReadByte(kCapPtr);
  config.SetWord(static_cast<uint16_t>(cap + 2), 0x8000);
  msix.ConfigWritten(config);
  const std::array<uint8_t, 4> bad = {0xad, 0x0b, 0, 0};
  const std::array<uint8_t, 4> unmask = {0, 0, 0, 0};
  msix.TableWrite(0, bad);
  msix.TableWrite(12, unmask);
  msix.Notify(0);
  EXPECT_EQ(host.fires, 0);
  EXPECT_EQ(host.routes, 0);
  const std::array<uint8_t, 4> good = {0, 0, 0xe0, 0xfe};
  msix.TableWrite(0, good);
  msix.Notify(0);
  EXPECT_EQ(host.routes, 1);
  EXPECT_EQ(host.fires, 1);
  msix.Notify(0);
  EXPECT_EQ(host.routes, 1) << "an unchanged route is not set again";
  EXPECT_EQ(host.fires, 2);
}

TEST(Msix, CreateFailsCleanlyWhenVectorsRunOut) {
  RefusingHost host;
  host.fail_at = 2;
  PciConfigSpace config(PciIds{});
  ASSERT_TRUE(config.DeclareBar(0, 0x1000, BarKind::kMem32).ok());
  auto m = Msix::Create(config, host, 4, 0, 0, 0x800);
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(config.ReadByte(kCapPtr), 0);
}

}  // namespace
}  // namespace flint::pci
