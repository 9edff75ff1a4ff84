// PciRoot: config mechanism #1 and ECAM, BAR placement, BAR decoding as the
// guest programs and moves BARs, INTx wiring and slot exhaustion.
#include "devices/pci/pci_root.h"

#include <gtest/gtest.h>

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "tests/support/fake_device_host.h"
#include "vmm/layout.h"

namespace flint::pci {
namespace {

using testing::FakeDeviceHost;

constexpr layout::Window kMmio32{layout::kPciMmio32Base, layout::kPciMmio32Size};
constexpr layout::Window kMmio64 = layout::Pci64Window(6ull << 30);  // at 6 GiB

constexpr uint64_t kBar0Size = 0x4000;  // 32-bit
constexpr uint64_t kBar2Size = 0x10000;  // 64-bit (BAR 2 + 3)

// A device that records what the bus does to it.
class RecordingDevice : public PciDevice {
 public:
  struct Access {
    int bar;
    uint64_t offset;
    size_t len;
    uint64_t value;  // written value (writes only)
    bool write;
    bool operator==(const Access&) const = default;
  };
  struct Mapped {
    int bar;
    std::optional<uint64_t> gpa;
    bool operator==(const Mapped&) const = default;
  };

  explicit RecordingDevice(bool bars = true, uint8_t pin = 1)
      : config_(PciIds{.vendor = 0x1af4, .device = 0x1042, .class_code = 0x018000}) {
    if (bars) {
      EXPECT_TRUE(config_.DeclareBar(0, kBar0Size, BarKind::kMem32).ok());
      EXPECT_TRUE(config_.DeclareBar(2, kBar2Size, BarKind::kMem64).ok());
    }
    config_.SetInterruptPin(pin);
  }

  std::string_view name() const override { return "recorder"; }
  PciConfigSpace& config() override { return config_; }
  void ConfigWritten(uint16_t offset, size_t len) override {
    absl::MutexLock l(&mu_);
    config_writes_.push_back({offset, len});
  }
  void BarRead(int bar, uint64_t offset, std::span<uint8_t> data) override {
    absl::MutexLock l(&mu_);
    accesses_.push_back({bar, offset, data.size(), 0, false});
    // Reads return the offset, so a test sees which register answered.
    for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<uint8_t>((offset + i) ^ 0x5a);
  }
  void BarWrite(int bar, uint64_t offset, std::span<const uint8_t> data) override {
    uint64_t v = 0;
    for (size_t i = 0; i < data.size(); ++i) v |= uint64_t{data[i]} << (8 * i);
    absl::MutexLock l(&mu_);
    accesses_.push_back({bar, offset, data.size(), v, true});
  }
  void BarMapped(int bar, std::optional<uint64_t> gpa) override {
    absl::MutexLock l(&mu_);
    mapped_.push_back({bar, gpa});
  }
  void AttachIntx(std::unique_ptr<IrqLine> line) override { line_ = std::move(line); }

  std::vector<Access> TakeAccesses() {
    absl::MutexLock l(&mu_);
    return std::exchange(accesses_, {});
  }
  std::vector<Mapped> TakeMapped() {
    absl::MutexLock l(&mu_);
    return std::exchange(mapped_, {});
  }
  std::vector<std::pair<uint16_t, size_t>> TakeConfigWrites() {
    absl::MutexLock l(&mu_);
    return std::exchange(config_writes_, {});
  }
  IrqLine* line() { return line_.get(); }

 private:
  PciConfigSpace config_;
  absl::Mutex mu_;
  std::vector<Access> accesses_ ABSL_GUARDED_BY(mu_);
  std::vector<Mapped> mapped_ ABSL_GUARDED_BY(mu_);
  std::vector<std::pair<uint16_t, size_t>> config_writes_ ABSL_GUARDED_BY(mu_);
  std::unique_ptr<IrqLine> line_;
};

uint64_t Load(std::span<const uint8_t> b) {
  uint64_t v = 0;
  for (size_t i = b.size(); i-- > 0;) v = (v << 8) | b[i];
  return v;
}
std::vector<uint8_t> Bytes(uint64_t v, size_t len) {
  std::vector<uint8_t> b(len);
  for (size_t i = 0; i < len; ++i) b[i] = static_cast<uint8_t>(v >> (8 * i));
  return b;
}

class PciRootTest : public ::testing::Test {
 protected:
  // Config mechanism #1.
  uint32_t Cf8Address(uint8_t slot, uint16_t reg, uint8_t fn = 0, uint8_t bus = 0,
                      bool enable = true) {
    return (enable ? 0x80000000u : 0) | uint32_t{bus} << 16 | uint32_t{slot} << 11 |
           uint32_t{fn} << 8 | (reg & 0xfc);
  }
  uint64_t IoRead(uint64_t port_offset, size_t len) {
    std::vector<uint8_t> b(len);
    root_.config_io()->Read(port_offset, b);
    return Load(b);
  }
  void IoWrite(uint64_t port_offset, size_t len, uint64_t v) {
    root_.config_io()->Write(port_offset, Bytes(v, len));
  }
  uint64_t Cf8Read(uint8_t slot, uint16_t reg, size_t len, uint8_t fn = 0, uint8_t bus = 0) {
    IoWrite(0, 4, Cf8Address(slot, reg, fn, bus));
    return IoRead(4 + (reg & 3), len);
  }
  void Cf8Write(uint8_t slot, uint16_t reg, size_t len, uint64_t v) {
    IoWrite(0, 4, Cf8Address(slot, reg));
    IoWrite(4 + (reg & 3), len, v);
  }
  // ECAM.
  static uint64_t EcamOffset(uint8_t slot, uint16_t reg, uint8_t fn = 0) {
    return uint64_t{slot} << 15 | uint64_t{fn} << 12 | reg;
  }
  uint64_t EcamRead(uint8_t slot, uint16_t reg, size_t len, uint8_t fn = 0) {
    std::vector<uint8_t> b(len);
    root_.ecam()->Read(EcamOffset(slot, reg, fn), b);
    return Load(b);
  }
  void EcamWrite(uint8_t slot, uint16_t reg, size_t len, uint64_t v) {
    root_.ecam()->Write(EcamOffset(slot, reg), Bytes(v, len));
  }
  // Guest MMIO at a physical address, through whichever window holds it.
  uint64_t MmioRead(uint64_t gpa, size_t len) {
    std::vector<uint8_t> b(len);
    Window(gpa).Read(gpa - WindowBase(gpa), b);
    return Load(b);
  }
  void MmioWrite(uint64_t gpa, size_t len, uint64_t v) {
    Window(gpa).Write(gpa - WindowBase(gpa), Bytes(v, len));
  }
  BusDevice& Window(uint64_t gpa) {
    return gpa >= kMmio64.base ? *root_.mmio64_window() : *root_.mmio32_window();
  }
  static uint64_t WindowBase(uint64_t gpa) {
    return gpa >= kMmio64.base ? kMmio64.base : kMmio32.base;
  }

  std::shared_ptr<RecordingDevice> Add(bool bars = true, uint8_t pin = 1) {
    auto dev = std::make_shared<RecordingDevice>(bars, pin);
    absl::StatusOr<uint8_t> slot = root_.AddDevice(dev);
    EXPECT_TRUE(slot.ok()) << slot.status();
    return dev;
  }
  uint64_t Bar0(RecordingDevice& d) { return d.config().BarAddress(0); }
  uint64_t Bar2(RecordingDevice& d) { return d.config().BarAddress(2); }
  void EnableMemory(uint8_t slot, bool on) {
    EcamWrite(slot, kCommand, 2, on ? kCommandMemory | kCommandBusMaster : 0);
  }

  FakeDeviceHost host_;
  PciRoot root_{&host_, kMmio32, kMmio64};
};

using Mapped = RecordingDevice::Mapped;
using Access = RecordingDevice::Access;

TEST_F(PciRootTest, Slot0IsTheHostBridge) {
  EXPECT_EQ(Cf8Read(0, 0x00, 4), 0x00081b36u);
  EXPECT_EQ(EcamRead(0, 0x00, 4), 0x00081b36u);
  EXPECT_EQ(EcamRead(0, 0x08, 4) >> 8, 0x060000u) << "class: host bridge";
  EXPECT_EQ(EcamRead(0, 0x0e, 1), 0u) << "single-function type-0 header";
  ASSERT_NE(root_.device(0), nullptr);
  EXPECT_EQ(root_.device(1), nullptr);
  EXPECT_EQ(root_.device(32), nullptr);
  EXPECT_EQ(root_.device(255), nullptr);
}

TEST_F(PciRootTest, ConfigAddressReadsBackWithoutReservedBits) {
  IoWrite(0, 4, 0x8000'0a3c);
  EXPECT_EQ(IoRead(0, 4), 0x8000'0a3cu);
  IoWrite(0, 4, 0xffff'ffff);
  EXPECT_EQ(IoRead(0, 4), 0x80ff'fffcu);
  // Byte and word accesses at 0xcf8-0xcfb are not CONFIG_ADDRESS.
  IoWrite(0, 1, 0);
  IoWrite(2, 2, 0);
  EXPECT_EQ(IoRead(0, 4), 0x80ff'fffcu);
  EXPECT_EQ(IoRead(1, 1), 0xffu);
  EXPECT_EQ(IoRead(0, 2), 0xffffu);
}

TEST_F(PciRootTest, Cf8AndEcamReachTheSameRegisters) {
  auto dev = Add();
  ASSERT_EQ(root_.device(1), dev);
  EXPECT_EQ(Cf8Read(1, 0x00, 4), 0x10421af4u);
  EXPECT_EQ(Cf8Read(1, 0x02, 2), 0x1042u) << "word at 0xcfe";
  EXPECT_EQ(Cf8Read(1, 0x03, 1), 0x10u) << "byte at 0xcff";
  EXPECT_EQ(Cf8Read(1, 0x01, 2), 0xffffu) << "misaligned word at 0xcfd";

  Cf8Write(1, kInterruptLine, 1, 0x42);
  EXPECT_EQ(EcamRead(1, kInterruptLine, 1), 0x42u);
  EXPECT_EQ(dev->config().ReadByte(kInterruptLine), 0x42);
  EcamWrite(1, kCommand, 2, kCommandBusMaster);
  EXPECT_EQ(Cf8Read(1, kCommand, 2), kCommandBusMaster);
  EXPECT_EQ(Cf8Read(1, 0x04, 4), kCommandBusMaster) << "status 0 above it";

  // Extended config space is ECAM-only: mechanism #1 has 8 register bits.
  EXPECT_EQ(EcamRead(1, 0x100, 4), 0u);
  EXPECT_EQ(EcamRead(1, 0x101, 4), 0xffffffffu) << "misaligned";
  std::array<uint8_t, 8> eight{};
  root_.ecam()->Read(EcamOffset(1, 0), eight);
  EXPECT_EQ(Load(eight), ~0ull) << "8-byte config access";
  EXPECT_EQ(dev->TakeConfigWrites(),
            (std::vector<std::pair<uint16_t, size_t>>{{kInterruptLine, 1}, {kCommand, 2}}));
}

TEST_F(PciRootTest, EmptySlotsOtherFunctionsAndBusesReadAllOnes) {
  auto dev = Add();
  EXPECT_EQ(Cf8Read(5, 0x00, 4), 0xffffffffu) << "empty slot";
  EXPECT_EQ(EcamRead(31, 0x00, 2), 0xffffu);
  EXPECT_EQ(Cf8Read(1, 0x00, 4, /*fn=*/1), 0xffffffffu) << "function 1";
  EXPECT_EQ(EcamRead(1, 0x00, 4, /*fn=*/7), 0xffffffffu);
  EXPECT_EQ(Cf8Read(1, 0x00, 4, 0, /*bus=*/1), 0xffffffffu) << "bus 1";
  IoWrite(0, 4, Cf8Address(1, 0, 0, 0, /*enable=*/false));
  EXPECT_EQ(IoRead(4, 4), 0xffffffffu) << "enable bit clear";

  // Writes to nothing go nowhere.
  IoWrite(0, 4, Cf8Address(1, kInterruptLine, 0, 0, /*enable=*/false));
  IoWrite(4, 1, 0x33);
  IoWrite(0, 4, Cf8Address(1, kInterruptLine, /*fn=*/1));
  IoWrite(4, 1, 0x34);
  IoWrite(0, 4, Cf8Address(1, kInterruptLine, 0, /*bus=*/2));
  IoWrite(4, 1, 0x35);
  root_.ecam()->Write(EcamOffset(1, kInterruptLine, /*fn=*/3), Bytes(0x36, 1));
  EXPECT_EQ(dev->config().ReadByte(kInterruptLine), layout::PciIntxGsi(1, 0));
  EXPECT_TRUE(dev->TakeConfigWrites().empty());
  std::array<uint8_t, 4> past{};
  root_.ecam()->Read(layout::kPciEcamSize, past);
  EXPECT_EQ(Load(past), 0xffffffffu);
}

TEST_F(PciRootTest, BarsArePlacedInTheirWindowsNaturallyAlignedAndDisjoint) {
  auto small = std::make_shared<RecordingDevice>(false, 0);
  ASSERT_TRUE(small->config().DeclareBar(1, 0x1000, BarKind::kMem32).ok());
  ASSERT_TRUE(root_.AddDevice(small).ok());
  auto a = Add();
  auto b = Add();
  for (RecordingDevice* d : {a.get(), b.get()}) {
    const uint64_t b0 = Bar0(*d), b2 = Bar2(*d);
    EXPECT_GE(b0, kMmio32.base);
    EXPECT_LE(b0 + kBar0Size, kMmio32.base + kMmio32.size);
    EXPECT_EQ(b0 % kBar0Size, 0u);
    EXPECT_GE(b2, kMmio64.base);
    EXPECT_LE(b2 + kBar2Size, kMmio64.base + kMmio64.size);
    EXPECT_EQ(b2 % kBar2Size, 0u);
    EXPECT_EQ(d->config().command(), 0) << "decoding starts off";
    EXPECT_TRUE(d->TakeMapped().empty()) << "nothing decodes before the guest enables it";
  }
  const uint64_t s1 = small->config().BarAddress(1);
  EXPECT_EQ(s1, kMmio32.base);
  EXPECT_GE(Bar0(*a), s1 + 0x1000) << "after the first device's BAR";
  EXPECT_GE(Bar0(*b), Bar0(*a) + kBar0Size);
  EXPECT_GE(Bar2(*b), Bar2(*a) + kBar2Size);
  // The guest reads the placement from the registers.
  EXPECT_EQ(EcamRead(2, 0x10, 4), Bar0(*a));
  EXPECT_EQ(EcamRead(2, 0x18, 4), (Bar2(*a) & 0xffffffff) | 0x4);
  EXPECT_EQ(EcamRead(2, 0x1c, 4), Bar2(*a) >> 32);
  EXPECT_EQ(MmioRead(Bar0(*a), 4), ~0u) << "decoding off: nothing answers";
  EXPECT_TRUE(a->TakeAccesses().empty());
}

TEST_F(PciRootTest, InterruptLineAndIntxWiring) {
  auto a = Add(true, /*pin=*/1);     // slot 1, INTA
  auto none = Add(true, /*pin=*/0);  // slot 2, no INTx
  auto c = Add(true, /*pin=*/2);     // slot 3, INTB
  EXPECT_EQ(EcamRead(1, kInterruptLine, 2), 0x0100u | layout::PciIntxGsi(1, 0));
  EXPECT_EQ(EcamRead(2, kInterruptLine, 2), 0u);
  EXPECT_EQ(EcamRead(3, kInterruptLine, 2), 0x0200u | layout::PciIntxGsi(3, 1));
  ASSERT_NE(a->line(), nullptr);
  EXPECT_EQ(none->line(), nullptr);
  ASSERT_NE(c->line(), nullptr);
  a->line()->Set(true);
  EXPECT_TRUE(host_.intx(layout::PciIntxGsi(1, 0)));
  EXPECT_FALSE(host_.intx(layout::PciIntxGsi(3, 1)));
  c->line()->Set(true);
  EXPECT_TRUE(host_.intx(layout::PciIntxGsi(3, 1)));
  a->line()->Set(false);
  EXPECT_FALSE(host_.intx(layout::PciIntxGsi(1, 0)));
}

TEST_F(PciRootTest, EnablingDecodeMapsBarsAndRoutesMmioWithOffsets) {
  auto dev = Add();
  const uint64_t b0 = Bar0(*dev), b2 = Bar2(*dev);
  EnableMemory(1, true);
  EXPECT_EQ(dev->TakeMapped(), (std::vector<Mapped>{{0, b0}, {2, b2}}));

  EXPECT_EQ(MmioRead(b0 + 0x10, 4), 0x49484b4au) << "bytes (0x10..0x13) ^ 0x5a";
  MmioWrite(b0 + kBar0Size - 2, 2, 0xbeef);
  MmioWrite(b2 + 0x3000, 8, 0x1122334455667788ull);
  MmioRead(b2, 1);
  EXPECT_EQ(dev->TakeAccesses(),
            (std::vector<Access>{{0, 0x10, 4, 0, false},
                                 {0, kBar0Size - 2, 2, 0xbeef, true},
                                 {2, 0x3000, 8, 0x1122334455667788ull, true},
                                 {2, 0, 1, 0, false}}));

  // Straddling the BAR's end, or just past it: nobody claims it.
  EXPECT_EQ(MmioRead(b0 + kBar0Size - 2, 4), 0xffffffffu);
  EXPECT_EQ(MmioRead(b0 + kBar0Size, 4), 0xffffffffu);
  MmioWrite(b2 + kBar2Size - 4, 8, 1);
  EXPECT_EQ(MmioRead(b0 - 4, 4), 0xffffffffu);
  EXPECT_TRUE(dev->TakeAccesses().empty());

  // Writing the command register again without changing decode changes nothing.
  EcamWrite(1, kCommand, 2, kCommandMemory);
  EXPECT_TRUE(dev->TakeMapped().empty());
}

TEST_F(PciRootTest, GuestMovesABar) {
  auto dev = Add();
  const uint64_t old0 = Bar0(*dev);
  EnableMemory(1, true);
  dev->TakeMapped();
  const uint64_t new0 = kMmio32.base + 0x1000'0000;
  EcamWrite(1, 0x10, 4, new0);
  EXPECT_EQ(dev->TakeMapped(), (std::vector<Mapped>{{0, std::nullopt}, {0, new0}}));
  EXPECT_EQ(MmioRead(old0 + 8, 4), 0xffffffffu) << "the old address no longer decodes";
  MmioWrite(old0 + 8, 4, 7);
  EXPECT_TRUE(dev->TakeAccesses().empty());
  MmioWrite(new0 + 8, 4, 7);
  EXPECT_EQ(dev->TakeAccesses(), (std::vector<Access>{{0, 8, 4, 7, true}}));

  // A 64-bit BAR moved into the 32-bit window is fine: both are windows.
  const uint64_t old2 = Bar2(*dev);
  Cf8Write(1, 0x18, 4, kMmio32.base + 0x1800'0000);
  Cf8Write(1, 0x1c, 4, 0);
  EXPECT_EQ(dev->TakeMapped(), (std::vector<Mapped>{{2, std::nullopt},
                                                    {2, (old2 & 0xffffffff00000000ull) |
                                                            (kMmio32.base + 0x1800'0000)},
                                                    {2, std::nullopt},
                                                    {2, kMmio32.base + 0x1800'0000}}))
      << "each dword write is a move; the intermediate address is in the 64-bit window";
  MmioRead(kMmio32.base + 0x1800'0010, 8);
  EXPECT_EQ(dev->TakeAccesses(), (std::vector<Access>{{2, 0x10, 8, 0, false}}));
}

TEST_F(PciRootTest, DecodingOffUnmapsEverything) {
  auto dev = Add();
  EnableMemory(1, true);
  dev->TakeMapped();
  EcamWrite(1, kCommand, 1, kCommandBusMaster);  // memory bit off (byte write)
  EXPECT_EQ(dev->TakeMapped(), (std::vector<Mapped>{{0, std::nullopt}, {2, std::nullopt}}));
  EXPECT_EQ(MmioRead(Bar0(*dev), 4), 0xffffffffu);
  EXPECT_EQ(MmioRead(Bar2(*dev), 4), 0xffffffffu);
  EXPECT_TRUE(dev->TakeAccesses().empty());
  // Moving a BAR while decoding is off maps nothing; turning it on maps the new place.
  EcamWrite(1, 0x10, 4, kMmio32.base + 0x20'0000);
  EXPECT_TRUE(dev->TakeMapped().empty());
  EnableMemory(1, true);
  EXPECT_EQ(dev->TakeMapped(),
            (std::vector<Mapped>{{0, kMmio32.base + 0x20'0000}, {2, Bar2(*dev)}}));
}

TEST_F(PciRootTest, BarsOutsideTheWindowsDoNotDecode) {
  auto dev = Add();
  const uint64_t b0 = Bar0(*dev);
  EnableMemory(1, true);
  dev->TakeMapped();
  for (uint64_t bad : {layout::kLapicBase, layout::kPciEcamBase, uint64_t{0x100000},
                       kMmio32.base - kBar0Size}) {
    SCOPED_TRACE(bad);
    EcamWrite(1, 0x10, 4, bad);
    EXPECT_EQ(dev->TakeMapped(), (std::vector<Mapped>{{0, std::nullopt}}));
    EcamWrite(1, 0x10, 4, b0);
    EXPECT_EQ(dev->TakeMapped(), (std::vector<Mapped>{{0, b0}}));
  }
  EXPECT_TRUE(dev->TakeAccesses().empty());
  // A 64-bit BAR beyond the 64-bit window.
  EcamWrite(1, 0x1c, 4, (kMmio64.base + kMmio64.size) >> 32);
  EXPECT_EQ(dev->TakeMapped(), (std::vector<Mapped>{{2, std::nullopt}}));
  // Address 0 is "unassigned", not a place.
  EcamWrite(1, 0x1c, 4, 0);  // 0x80000000: below the 32-bit window
  EcamWrite(1, 0x18, 4, 0);
  EXPECT_TRUE(dev->TakeMapped().empty());

  // A BAR that starts inside a window but runs past its end.
  auto huge = std::make_shared<RecordingDevice>(false, 0);
  ASSERT_TRUE(huge->config().DeclareBar(0, 4ull << 30, BarKind::kMem64).ok());
  ASSERT_TRUE(root_.AddDevice(huge).ok());
  EnableMemory(2, true);
  const uint64_t placed = huge->config().BarAddress(0);
  EXPECT_EQ(huge->TakeMapped(), (std::vector<Mapped>{{0, placed}}));
  const uint64_t straddle = kMmio64.base + kMmio64.size - (2ull << 30);  // 4 GiB aligned
  ASSERT_EQ(straddle % (4ull << 30), 0u);
  EcamWrite(2, 0x14, 4, straddle >> 32);
  EXPECT_EQ(huge->TakeMapped(), (std::vector<Mapped>{{0, std::nullopt}}));
  EXPECT_EQ(MmioRead(straddle, 4), 0xffffffffu);
  EXPECT_TRUE(huge->TakeAccesses().empty());
}

TEST_F(PciRootTest, SizingProbesUnmapAndRestoringMapsAgain) {
  auto dev = Add();
  const uint64_t b0 = Bar0(*dev), b2 = Bar2(*dev);
  EnableMemory(1, true);
  dev->TakeMapped();
  Cf8Write(1, 0x10, 4, 0xffffffff);
  EXPECT_EQ(Cf8Read(1, 0x10, 4), ~(kBar0Size - 1) & 0xffffffff);
  EXPECT_EQ(dev->TakeMapped(), (std::vector<Mapped>{{0, std::nullopt}}));
  Cf8Write(1, 0x10, 4, b0);
  EXPECT_EQ(dev->TakeMapped(), (std::vector<Mapped>{{0, b0}}));

  // The low dword of a 64-bit BAR sized in place would land inside the 64-bit
  // window; it must still not decode there.
  EcamWrite(1, 0x18, 4, 0xffffffff);
  EXPECT_EQ(EcamRead(1, 0x18, 4), (~(kBar2Size - 1) & 0xffffffff) | 0x4);
  EXPECT_EQ(dev->TakeMapped(), (std::vector<Mapped>{{2, std::nullopt}}));
  EcamWrite(1, 0x1c, 4, 0xffffffff);
  EXPECT_EQ(EcamRead(1, 0x1c, 4), 0xffffffffu);
  EcamWrite(1, 0x18, 4, b2 & 0xffffffff);
  EXPECT_TRUE(dev->TakeMapped().empty()) << "upper dword still holds the probe";
  EcamWrite(1, 0x1c, 4, b2 >> 32);
  EXPECT_EQ(dev->TakeMapped(), (std::vector<Mapped>{{2, b2}}));
  MmioRead(b2 + 4, 4);
  EXPECT_EQ(dev->TakeAccesses(), (std::vector<Access>{{2, 4, 4, 0, false}}));
}

TEST_F(PciRootTest, OverlappingBarsDecodeForOneDeviceOnly) {
  auto a = Add();
  auto b = Add();
  EnableMemory(1, true);
  EnableMemory(2, true);
  a->TakeMapped();
  b->TakeMapped();
  const uint64_t a0 = Bar0(*a);
  EcamWrite(2, 0x10, 4, a0);  // b's BAR 0 onto a's
  EXPECT_EQ(b->TakeMapped(), (std::vector<Mapped>{{0, std::nullopt}}));
  EXPECT_TRUE(a->TakeMapped().empty());
  MmioRead(a0, 4);
  EXPECT_EQ(a->TakeAccesses().size(), 1u);
  EXPECT_TRUE(b->TakeAccesses().empty());
  // Once a moves away, b decodes where it was told to.
  EcamWrite(1, 0x10, 4, kMmio32.base + 0x100'0000);
  EXPECT_EQ(b->TakeMapped(), (std::vector<Mapped>{{0, a0}}));
  MmioRead(a0, 4);
  EXPECT_EQ(b->TakeAccesses().size(), 1u);
}

TEST_F(PciRootTest, SlotsRunOut) {
  for (int i = 1; i <= 31; ++i) {
    absl::StatusOr<uint8_t> slot = root_.AddDevice(std::make_shared<RecordingDevice>(false));
    ASSERT_TRUE(slot.ok()) << slot.status();
    EXPECT_EQ(*slot, i);
  }
  absl::StatusOr<uint8_t> extra = root_.AddDevice(std::make_shared<RecordingDevice>(false));
  ASSERT_FALSE(extra.ok());
  EXPECT_EQ(extra.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(extra.status().message().find("slot"), std::string::npos) << extra.status();
  EXPECT_FALSE(root_.AddDevice(nullptr).ok());
}

TEST_F(PciRootTest, AddingTheSameDeviceTwiceFails) {
  auto dev = Add();
  EXPECT_EQ(root_.AddDevice(dev).status().code(), absl::StatusCode::kAlreadyExists);
}

TEST(PciRoot, BarsThatDoNotFitAreRejectedWithoutUsingSpace) {
  FakeDeviceHost host;
  PciRoot root(&host, layout::Window{0xc000'0000, 0x8000}, layout::Window{});
  auto wide = std::make_shared<RecordingDevice>(false);
  ASSERT_TRUE(wide->config().DeclareBar(0, 0x1000, BarKind::kMem32).ok());
  ASSERT_TRUE(wide->config().DeclareBar(2, 0x1000, BarKind::kMem64).ok());
  absl::StatusOr<uint8_t> r = root.AddDevice(wide);
  ASSERT_FALSE(r.ok()) << "no 64-bit window";
  EXPECT_EQ(r.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(r.status().message().find("64-bit"), std::string::npos) << r.status();
  EXPECT_EQ(root.device(1), nullptr);

  auto big = std::make_shared<RecordingDevice>(false);
  ASSERT_TRUE(big->config().DeclareBar(0, 0x10000, BarKind::kMem32).ok());
  EXPECT_FALSE(root.AddDevice(big).ok()) << "64 KiB BAR in a 32 KiB window";

  // The failures consumed nothing: 0x4000 + 0x4000 fill the window exactly.
  for (int i = 0; i < 2; ++i) {
    auto fits = std::make_shared<RecordingDevice>(false);
    ASSERT_TRUE(fits->config().DeclareBar(0, 0x4000, BarKind::kMem32).ok());
    absl::StatusOr<uint8_t> slot = root.AddDevice(fits);
    ASSERT_TRUE(slot.ok()) << slot.status();
    EXPECT_EQ(*slot, i + 1);
    EXPECT_EQ(fits->config().BarAddress(0), 0xc000'0000u + i * 0x4000u);
  }
  auto one_more = std::make_shared<RecordingDevice>(false);
  ASSERT_TRUE(one_more->config().DeclareBar(0, 0x1000, BarKind::kMem32).ok());
  EXPECT_FALSE(root.AddDevice(one_more).ok());
}

TEST_F(PciRootTest, ConcurrentMmioAndConfigTrafficIsSerialised) {
  // Not a timing test: it checks that mixing the two lock modes neither
  // deadlocks (abseil's detector is on in tests) nor loses accesses.
  auto dev = Add();
  EnableMemory(1, true);
  const uint64_t b0 = Bar0(*dev);
  constexpr int kIterations = 2000;
  std::thread mmio([&] {
    for (int i = 0; i < kIterations; ++i) MmioWrite(b0, 4, static_cast<uint64_t>(i));
  });
  for (int i = 0; i < kIterations; ++i) {
    EcamWrite(1, kInterruptLine, 1, static_cast<uint64_t>(i & 0xff));
    EXPECT_EQ(EcamRead(1, 0x10, 4), b0);
  }
  mmio.join();
  EXPECT_EQ(dev->TakeAccesses().size(), static_cast<size_t>(kIterations));
}

}  // namespace
}  // namespace flint::pci
