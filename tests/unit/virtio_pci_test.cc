#include "devices/virtio/virtio_pci.h"

#include <gtest/gtest.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cstdint>
#include <atomic>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "devices/pci/config_space.h"
#include "devices/pci/pci_root.h"
#include "tests/support/fake_device_host.h"
#include "vmm/guest_memory.h"
#include "vmm/layout.h"

namespace flint::virtio {
namespace {

constexpr uint64_t kMiB = 1ull << 20;
constexpr uint32_t kGsi = 11;
constexpr uint64_t kDeviceFeatureA = 1ull << 5;
constexpr uint64_t kDeviceFeatureB = 1ull << 40;

// Runs everything inline on the calling thread (the "loop thread").
class InlineLoop : public EventLoop {
 public:
  absl::Status Add(int fd, Callback on_readable) override {
    fds[fd] = std::move(on_readable);
    return absl::OkStatus();
  }
  absl::Status AddWatch(int, uint32_t, ReadyCallback) override {
    return absl::UnimplementedError("the transport only waits for readable fds");
  }
  absl::Status SetInterest(int, uint32_t) override {
    return absl::UnimplementedError("the transport only waits for readable fds");
  }
  void Remove(int fd) override { fds.erase(fd); }
  void Post(Callback fn) override { fn(); }
  void RunSync(const Callback& fn) override {
    ++run_syncs;
    fn();
  }
  bool InLoopThread() const override { return true; }

  std::map<int, Callback> fds;
  int run_syncs = 0;
};

class FakeDevice : public VirtioDevice {
 public:
  std::string_view name() const override { return "virtio-fake"; }
  uint16_t device_id() const override { return 2; }
  uint32_t pci_class() const override { return 0x018000; }
  uint64_t features() const override { return kDeviceFeatureA | kDeviceFeatureB; }
  uint16_t num_queues() const override { return 2; }
  uint16_t max_queue_size() const override { return 256; }
  uint32_t config_size() const override { return 8; }
  void ReadConfig(uint32_t offset, std::span<uint8_t> data) override {
    for (size_t i = 0; i < data.size(); ++i) data[i] = config[offset + i];
  }
  void WriteConfig(uint32_t offset, std::span<const uint8_t> data) override {
    for (size_t i = 0; i < data.size(); ++i) config[offset + i] = data[i];
  }
  absl::Status Activate(const ActivateContext& ctx) override {
    ++activations;
    last = ctx;
    // A device may complete buffers right away: the transport must not hold
    // its register lock across the hand-over to the loop.
    if (signal_on_activate) ctx.interrupts->SignalUsed(ctx.queues.at(0).index);
    return activate_result;
  }
  void Reset() override { ++resets; }
  std::string StatsLine() const override { return "fake_requests=42"; }

  uint8_t config[8] = {1, 2, 3, 4, 5, 6, 7, 8};
  int activations = 0;
  int resets = 0;
  ActivateContext last;
  absl::Status activate_result = absl::OkStatus();
  bool signal_on_activate = false;
};

struct VirtioCaps {
  std::map<uint8_t, uint32_t> offset;  // cfg_type -> offset in BAR 0
  std::map<uint8_t, uint32_t> length;
  uint32_t notify_multiplier = 0;
  uint16_t msix_cap = 0;
};

class VirtioPciTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto m = GuestMemory::Create({{0, kMiB}});
    ASSERT_TRUE(m.ok());
    mem_ = std::move(*m);
    auto owned = std::make_unique<FakeDevice>();
    fake_ = owned.get();
    auto d = VirtioPciDevice::Create(std::move(owned), &mem_, &host_, &loop_);
    ASSERT_TRUE(d.ok()) << d.status();
    dev_ = std::move(*d);
    dev_->AttachIntx(host_.IntxLine(kGsi));
  }

  // Config space, as the guest sees it.
  uint32_t Cfg(uint16_t offset, size_t len) {
    uint8_t b[4] = {};
    dev_->config().Read(offset, std::span<uint8_t>(b, len));
    uint32_t v = 0;
    for (size_t i = len; i-- > 0;) v = (v << 8) | b[i];
    return v;
  }
  void CfgWrite(uint16_t offset, uint32_t v, size_t len) {
    uint8_t b[4];
    for (size_t i = 0; i < len; ++i) b[i] = static_cast<uint8_t>(v >> (8 * i));
    dev_->config().Write(offset, std::span<const uint8_t>(b, len));
    dev_->ConfigWritten(offset, len);  // what PciRoot does after every write
  }

  uint64_t Bar(uint64_t offset, size_t len) {
    uint8_t b[8] = {};
    dev_->BarRead(0, offset, std::span<uint8_t>(b, len));
    uint64_t v = 0;
    for (size_t i = len; i-- > 0;) v = (v << 8) | b[i];
    return v;
  }
  void BarWrite(uint64_t offset, uint64_t v, size_t len) {
    uint8_t b[8];
    for (size_t i = 0; i < len; ++i) b[i] = static_cast<uint8_t>(v >> (8 * i));
    dev_->BarWrite(0, offset, std::span<const uint8_t>(b, len));
  }

  uint8_t Status() { return static_cast<uint8_t>(Bar(0x14, 1)); }
  void SetStatus(uint8_t s) { BarWrite(0x14, s, 1); }
  void SelectQueue(uint16_t q) { BarWrite(0x16, q, 2); }

  void WriteDriverFeatures(uint64_t f) {
    BarWrite(0x08, 0, 4);
    BarWrite(0x0c, static_cast<uint32_t>(f), 4);
    BarWrite(0x08, 1, 4);
    BarWrite(0x0c, f >> 32, 4);
  }
  uint64_t DeviceFeatures() {
    BarWrite(0x00, 0, 4);
    uint64_t lo = Bar(0x04, 4);
    BarWrite(0x00, 1, 4);
    return lo | (Bar(0x04, 4) << 32);
  }
  // ACKNOWLEDGE, DRIVER, features, FEATURES_OK (§3.1.1 steps 1-6).
  void Negotiate(uint64_t features) {
    SetStatus(kStatusAcknowledge);
    SetStatus(kStatusAcknowledge | kStatusDriver);
    WriteDriverFeatures(features);
    SetStatus(kStatusAcknowledge | kStatusDriver | kStatusFeaturesOk);
  }
  // Queue q's rings at 0x10000 * (q + 1), size 16, 64-bit address halves.
  void SetUpQueue(uint16_t q, uint16_t msix_vector = kNoVector) {
    const uint64_t base = 0x10000ull * (q + 1);
    SelectQueue(q);
    BarWrite(0x18, 16, 2);
    BarWrite(0x1a, msix_vector, 2);
    BarWrite(0x20, base, 4);
    BarWrite(0x24, 0, 4);
    BarWrite(0x28, base + 0x1000, 8);  // one 64-bit write works too
    BarWrite(0x30, base + 0x2000, 4);
    BarWrite(0x34, 0, 4);
    BarWrite(0x1c, 1, 2);
  }
  void DriverOk() {
    SetStatus(kStatusAcknowledge | kStatusDriver | kStatusFeaturesOk | kStatusDriverOk);
  }

  VirtioCaps ParseCaps() {
    VirtioCaps caps;
    int guard = 0;
    for (uint16_t at = static_cast<uint16_t>(Cfg(pci::kCapPtr, 1)); at != 0 && guard < 48;
         at = static_cast<uint16_t>(Cfg(at + 1, 1)), ++guard) {
      const uint8_t id = static_cast<uint8_t>(Cfg(at, 1));
      if (id == pci::kCapIdMsix) caps.msix_cap = at;
      if (id != pci::kCapIdVendor) continue;
      const uint8_t type = static_cast<uint8_t>(Cfg(at + 3, 1));
      EXPECT_EQ(Cfg(at + 4, 1), 0u) << "BAR of cfg_type " << int{type};
      caps.offset[type] = Cfg(at + 8, 4);
      caps.length[type] = Cfg(at + 12, 4);
      if (type == kCapNotifyCfg) {
        EXPECT_EQ(Cfg(at + 2, 1), 20u);  // cap_len
        caps.notify_multiplier = Cfg(at + 16, 4);
      } else {
        EXPECT_EQ(Cfg(at + 2, 1), 16u);
      }
    }
    return caps;
  }

  // Enables MSI-X and unmasks vector `v` with a route.
  void EnableMsix(std::initializer_list<uint16_t> vectors) {
    const uint16_t cap = ParseCaps().msix_cap;
    ASSERT_NE(cap, 0);
    for (uint16_t v : vectors) {
      const uint64_t entry = kMsixTableOffset + 16ull * v;
      BarWrite(entry, 0xfee00000, 4);
      BarWrite(entry + 4, 0, 4);
      BarWrite(entry + 8, 0x40 + v, 4);
      BarWrite(entry + 12, 0, 4);  // unmask
    }
    CfgWrite(cap + 2, 1u << 15, 2);
  }

  static uint64_t ReadEventfd(int fd) {
    uint64_t v = 0;
    if (::read(fd, &v, sizeof(v)) != sizeof(v)) return 0;
    return v;
  }

  GuestMemory mem_;
  testing::FakeDeviceHost host_;
  InlineLoop loop_;
  FakeDevice* fake_ = nullptr;
  std::shared_ptr<VirtioPciDevice> dev_;
};

TEST_F(VirtioPciTest, PciIdentity) {
  EXPECT_EQ(Cfg(0x00, 2), 0x1af4u);
  EXPECT_EQ(Cfg(0x02, 2), 0x1042u);  // 0x1040 + virtio-blk's type
  EXPECT_EQ(Cfg(0x08, 1), 1u);       // revision 1: modern
  EXPECT_EQ(Cfg(0x08, 4) >> 8, 0x018000u);  // class code
  EXPECT_EQ(Cfg(0x2c, 2), 0x1af4u);
  EXPECT_EQ(Cfg(0x2e, 2), 0x1100u);
  EXPECT_EQ(Cfg(pci::kInterruptPin, 1), 1u);  // INTA#
  EXPECT_TRUE(Cfg(pci::kStatus, 2) & pci::kStatusCapList);
  // BAR 0: 64-bit, non-prefetchable memory, 32 KiB.
  EXPECT_EQ(Cfg(pci::kBar0, 4) & 0xf, 0x4u);
  CfgWrite(pci::kBar0, 0xffffffff, 4);
  CfgWrite(pci::kBar0 + 4, 0xffffffff, 4);
  EXPECT_EQ(Cfg(pci::kBar0, 4) & ~0xfu, ~static_cast<uint32_t>(kBarSize - 1));
  EXPECT_EQ(dev_->name(), "virtio-fake");
}

TEST_F(VirtioPciTest, CapabilitiesDescribeTheBarLayout) {
  const VirtioCaps caps = ParseCaps();
  ASSERT_EQ(caps.offset.size(), 4u);
  EXPECT_EQ(caps.offset.at(kCapCommonCfg), 0x0000u);
  EXPECT_GE(caps.length.at(kCapCommonCfg), 0x38u);
  EXPECT_EQ(caps.offset.at(kCapIsrCfg), 0x1000u);
  EXPECT_GE(caps.length.at(kCapIsrCfg), 1u);
  EXPECT_EQ(caps.offset.at(kCapDeviceCfg), 0x2000u);
  EXPECT_EQ(caps.length.at(kCapDeviceCfg), 8u);
  EXPECT_EQ(caps.offset.at(kCapNotifyCfg), 0x3000u);
  EXPECT_EQ(caps.notify_multiplier, 4u);
  EXPECT_GE(caps.length.at(kCapNotifyCfg), 4u * 1 + 2);  // reaches queue 1's address
  ASSERT_NE(caps.msix_cap, 0);
  EXPECT_EQ(Cfg(caps.msix_cap + 2, 2) & 0x7ff, 2u);  // 3 vectors: table size N - 1
  EXPECT_EQ(Cfg(caps.msix_cap + 4, 4), 0x4000u);     // table at 0x4000 in BAR 0
  EXPECT_EQ(Cfg(caps.msix_cap + 8, 4), 0x5000u);     // PBA at 0x5000 in BAR 0
}

TEST_F(VirtioPciTest, CommonConfigDefaults) {
  EXPECT_EQ(DeviceFeatures(),
            kDeviceFeatureA | kDeviceFeatureB | kFeatureVersion1 | kFeatureIndirectDesc |
                kFeatureEventIdx);
  BarWrite(0x00, 2, 4);
  EXPECT_EQ(Bar(0x04, 4), 0u);  // no feature bits past 63
  EXPECT_EQ(Bar(0x10, 2), kNoVector);
  EXPECT_EQ(Bar(0x12, 2), 2u);
  EXPECT_EQ(Status(), 0);
  SelectQueue(1);
  EXPECT_EQ(Bar(0x16, 2), 1u);
  EXPECT_EQ(Bar(0x18, 2), 256u);
  EXPECT_EQ(Bar(0x1a, 2), kNoVector);
  EXPECT_EQ(Bar(0x1c, 2), 0u);
  EXPECT_EQ(Bar(0x1e, 2), 1u);  // queue_notify_off: queue 1 notifies at 0x3000 + 4
  SelectQueue(2);               // no such queue
  EXPECT_EQ(Bar(0x18, 2), 0u);
  BarWrite(0x18, 16, 2);        // ignored
  SelectQueue(0);
  EXPECT_EQ(Bar(0x18, 2), 256u);
}

TEST_F(VirtioPciTest, QueueSizeAndVectorWritesAreValidated) {
  SelectQueue(0);
  BarWrite(0x18, 64, 2);
  EXPECT_EQ(Bar(0x18, 2), 64u);
  BarWrite(0x18, 48, 2);   // not a power of two
  BarWrite(0x18, 512, 2);  // above the maximum
  BarWrite(0x18, 0, 2);
  EXPECT_EQ(Bar(0x18, 2), 64u);
  BarWrite(0x1a, 2, 2);
  EXPECT_EQ(Bar(0x1a, 2), 2u);
  BarWrite(0x1a, 3, 2);  // only vectors 0..2 exist
  EXPECT_EQ(Bar(0x1a, 2), kNoVector);
  BarWrite(0x10, 1, 2);
  EXPECT_EQ(Bar(0x10, 2), 1u);
  BarWrite(0x10, 77, 2);
  EXPECT_EQ(Bar(0x10, 2), kNoVector);
}

TEST_F(VirtioPciTest, FeaturesOkRefusedForUnofferedBits) {
  Negotiate(kFeatureVersion1 | kDeviceFeatureA | (1ull << 7));
  EXPECT_FALSE(Status() & kStatusFeaturesOk);
  EXPECT_EQ(Status(), kStatusAcknowledge | kStatusDriver);
}

TEST_F(VirtioPciTest, FeaturesOkRefusedWithoutVersion1) {
  Negotiate(kDeviceFeatureA);
  EXPECT_FALSE(Status() & kStatusFeaturesOk);
  // DRIVER_OK without FEATURES_OK starts nothing.
  SetStatus(kStatusAcknowledge | kStatusDriver | kStatusDriverOk);
  EXPECT_EQ(fake_->activations, 0);
  EXPECT_TRUE(Status() & kStatusNeedsReset);
}

TEST_F(VirtioPciTest, FeaturesOkAcceptedAndFeaturesThenFrozen) {
  const uint64_t accepted = kFeatureVersion1 | kFeatureEventIdx | kDeviceFeatureB;
  Negotiate(accepted);
  EXPECT_TRUE(Status() & kStatusFeaturesOk);
  WriteDriverFeatures(kFeatureVersion1);  // too late: ignored
  BarWrite(0x08, 1, 4);
  EXPECT_EQ(Bar(0x0c, 4), accepted >> 32);
  BarWrite(0x08, 0, 4);
  EXPECT_EQ(Bar(0x0c, 4), static_cast<uint32_t>(accepted));
}

TEST_F(VirtioPciTest, DriverOkActivatesWithTheEnabledQueues) {
  const uint64_t accepted = kFeatureVersion1 | kFeatureIndirectDesc | kDeviceFeatureA;
  Negotiate(accepted);
  SetUpQueue(1);  // queue 0 stays disabled
  EXPECT_EQ(fake_->activations, 0);
  DriverOk();
  EXPECT_EQ(Status(), kStatusAcknowledge | kStatusDriver | kStatusFeaturesOk | kStatusDriverOk);
  ASSERT_EQ(fake_->activations, 1);
  const ActivateContext& ctx = fake_->last;
  EXPECT_EQ(ctx.features, accepted);
  EXPECT_EQ(ctx.memory, &mem_);
  EXPECT_EQ(ctx.loop, &loop_);
  EXPECT_EQ(ctx.interrupts, static_cast<Interrupts*>(dev_.get()));
  ASSERT_EQ(ctx.queues.size(), 1u);
  EXPECT_EQ(ctx.queues[0].index, 1);
  ASSERT_NE(ctx.queues[0].queue, nullptr);
  EXPECT_EQ(ctx.queues[0].queue->size(), 16);
  EXPECT_GE(ctx.queues[0].notify_fd, 0);

  // The queue reads the rings where the driver put them: descriptor table
  // at 0x20000, available ring at 0x21000, used ring at 0x22000.
  ASSERT_TRUE(mem_.WriteObj<uint64_t>(0x20000 + 16 * 3, 0x50000).ok());
  ASSERT_TRUE(mem_.WriteObj<uint32_t>(0x20000 + 16 * 3 + 8, 64).ok());
  ASSERT_TRUE(mem_.WriteObj<uint16_t>(0x21004, 3).ok());
  ASSERT_TRUE(mem_.WriteObj<uint16_t>(0x21002, 1).ok());
  DescriptorChain c;
  auto r = ctx.queues[0].queue->Pop(&c);
  ASSERT_TRUE(r.ok() && *r) << r.status();
  EXPECT_EQ(c.head, 3);
  EXPECT_EQ(c.segments[0].gpa, 0x50000u);
  ASSERT_TRUE(ctx.queues[0].queue->AddUsed(3, 9).ok());
  EXPECT_EQ(*mem_.ReadObj<uint16_t>(0x22002), 1);
}

TEST_F(VirtioPciTest, DeviceMaySignalFromInsideActivate) {
  fake_->signal_on_activate = true;
  Negotiate(kFeatureVersion1);
  SetUpQueue(0);
  DriverOk();
  EXPECT_EQ(fake_->activations, 1);
  EXPECT_TRUE(host_.intx(kGsi));
  EXPECT_EQ(Bar(kIsrOffset, 1), kIsrQueue);
}

TEST_F(VirtioPciTest, BadQueueLayoutAtDriverOkNeedsReset) {
  Negotiate(kFeatureVersion1);
  SetUpQueue(0);
  SelectQueue(0);
  BarWrite(0x20, 4 * kMiB, 4);  // descriptor table outside guest RAM
  DriverOk();
  EXPECT_EQ(fake_->activations, 0);
  EXPECT_TRUE(Status() & kStatusNeedsReset);
  EXPECT_TRUE(Status() & kStatusDriverOk);
  // The config-change interrupt went out over INTx (MSI-X is off).
  EXPECT_TRUE(host_.intx(kGsi));
  EXPECT_EQ(Bar(kIsrOffset, 1), kIsrConfig);
}

TEST_F(VirtioPciTest, ActivationErrorNeedsReset) {
  fake_->activate_result = absl::InternalError("backend gone");
  Negotiate(kFeatureVersion1);
  SetUpQueue(0);
  DriverOk();
  EXPECT_EQ(fake_->activations, 1);
  EXPECT_TRUE(Status() & kStatusNeedsReset);
}

TEST_F(VirtioPciTest, StatusBitsOnlyClearOnReset) {
  SetStatus(kStatusAcknowledge | kStatusDriver);
  SetStatus(kStatusAcknowledge);
  EXPECT_EQ(Status(), kStatusAcknowledge | kStatusDriver);
  SetStatus(kStatusNeedsReset);  // the device's bit, not the driver's
  EXPECT_FALSE(Status() & kStatusNeedsReset);
}

TEST_F(VirtioPciTest, NothingStartsAfterFailed) {
  Negotiate(kFeatureVersion1);
  SetUpQueue(0);
  SetStatus(kStatusAcknowledge | kStatusDriver | kStatusFeaturesOk | kStatusFailed);
  DriverOk();
  EXPECT_EQ(fake_->activations, 0);
  EXPECT_FALSE(Status() & kStatusDriverOk);
  EXPECT_TRUE(Status() & kStatusFailed);
}

TEST_F(VirtioPciTest, QueueRegistersFrozenAfterDriverOk) {
  Negotiate(kFeatureVersion1);
  SetUpQueue(0);
  DriverOk();
  SelectQueue(0);  // queue_select itself stays writable
  BarWrite(0x18, 32, 2);
  BarWrite(0x1a, 1, 2);
  BarWrite(0x20, 0x90000, 4);
  BarWrite(0x28, 0x91000, 8);
  EXPECT_EQ(Bar(0x18, 2), 16u);
  EXPECT_EQ(Bar(0x1a, 2), kNoVector);
  EXPECT_EQ(Bar(0x20, 8), 0x10000u);
  EXPECT_EQ(Bar(0x28, 8), 0x11000u);
  SelectQueue(1);
  BarWrite(0x1c, 1, 2);
  EXPECT_EQ(Bar(0x1c, 2), 0u);
}

TEST_F(VirtioPciTest, ResetRestoresDefaultsAndResetsTheDevice) {
  Negotiate(kFeatureVersion1 | kDeviceFeatureA);
  SetUpQueue(0, 1);
  BarWrite(0x10, 0, 2);
  EnableMsix({0, 1});
  DriverOk();
  ASSERT_EQ(fake_->activations, 1);
  dev_->SignalConfigChange();
  const uint8_t generation = static_cast<uint8_t>(Bar(0x15, 1));

  SetStatus(0);
  EXPECT_EQ(fake_->resets, 1);
  EXPECT_EQ(Status(), 0);
  EXPECT_EQ(Bar(0x10, 2), kNoVector);
  BarWrite(0x08, 0, 4);
  EXPECT_EQ(Bar(0x0c, 4), 0u);
  EXPECT_EQ(Bar(0x16, 2), 0u);
  EXPECT_EQ(Bar(0x18, 2), 256u);
  EXPECT_EQ(Bar(0x1a, 2), kNoVector);
  EXPECT_EQ(Bar(0x1c, 2), 0u);
  EXPECT_EQ(Bar(0x20, 8), 0u);
  EXPECT_EQ(Bar(0x28, 8), 0u);
  EXPECT_EQ(Bar(0x30, 8), 0u);
  EXPECT_EQ(Bar(0x15, 1), generation);  // never goes backwards
  // MSI-X is PCI state: still enabled and programmed.
  EXPECT_EQ(Bar(kMsixTableOffset + 16, 4), 0xfee00000u);
  EXPECT_EQ(Bar(kMsixTableOffset + 24, 4), 0x41u);
  EXPECT_TRUE(Cfg(ParseCaps().msix_cap + 2, 2) & (1u << 15));

  // And the device can be brought up again.
  Negotiate(kFeatureVersion1);
  SetUpQueue(0);
  DriverOk();
  EXPECT_EQ(fake_->activations, 2);
}

TEST_F(VirtioPciTest, ResetClearsIsrAndDeassertsIntx) {
  Negotiate(kFeatureVersion1);
  SetUpQueue(0);
  DriverOk();
  dev_->SignalUsed(0);
  ASSERT_TRUE(host_.intx(kGsi));
  SetStatus(0);
  EXPECT_FALSE(host_.intx(kGsi));
  EXPECT_EQ(Bar(kIsrOffset, 1), 0u);
}

TEST_F(VirtioPciTest, NotifyWriteReachesTheQueueEventfd) {
  Negotiate(kFeatureVersion1);
  SetUpQueue(0);
  SetUpQueue(1);
  DriverOk();
  const int fd0 = fake_->last.queues[0].notify_fd;
  const int fd1 = fake_->last.queues[1].notify_fd;
  ASSERT_NE(fd0, fd1);
  BarWrite(kNotifyOffset + 4, 1, 2);
  EXPECT_EQ(ReadEventfd(fd1), 1u);
  EXPECT_EQ(ReadEventfd(fd0), 0u);  // non-blocking: nothing there
  BarWrite(kNotifyOffset, 0, 4);    // another width also works
  EXPECT_EQ(ReadEventfd(fd0), 1u);
  BarWrite(kNotifyOffset + 8, 2, 2);  // no queue 2
  BarWrite(kNotifyOffset + 2, 0, 2);  // not a notify address
  EXPECT_EQ(ReadEventfd(fd0), 0u);
  EXPECT_EQ(ReadEventfd(fd1), 0u);
  EXPECT_NE(dev_->StatsLine().find("notify_traps=2"), std::string::npos) << dev_->StatsLine();
}

TEST_F(VirtioPciTest, IoeventfdsFollowTheBar) {
  Negotiate(kFeatureVersion1);
  SetUpQueue(0);
  SetUpQueue(1);
  DriverOk();
  const int fd0 = fake_->last.queues[0].notify_fd;
  const int fd1 = fake_->last.queues[1].notify_fd;
  EXPECT_TRUE(host_.ioeventfds().empty());

  dev_->BarMapped(0, 0xe0000000);
  using Map = std::map<std::pair<uint64_t, uint32_t>, int>;
  EXPECT_EQ(host_.ioeventfds(), (Map{{{0xe0003000, 2}, fd0}, {{0xe0003004, 2}, fd1}}));
  dev_->BarMapped(0, 0x800000000);  // moved
  EXPECT_EQ(host_.ioeventfds(), (Map{{{0x800003000, 2}, fd0}, {{0x800003004, 2}, fd1}}));
  dev_->BarMapped(2, 0xe0000000);  // not our BAR
  EXPECT_EQ(host_.ioeventfds().size(), 2u);
  dev_->BarMapped(0, std::nullopt);
  EXPECT_TRUE(host_.ioeventfds().empty());

  dev_->BarMapped(0, 0xe0000000);
  EXPECT_EQ(host_.ioeventfds().size(), 2u);
  dev_.reset();  // the destructor takes them away too
  EXPECT_TRUE(host_.ioeventfds().empty());
}

TEST_F(VirtioPciTest, DestroyingAnActiveDeviceResetsItOnTheLoop) {
  // The device dies with the transport: count its resets from outside.
  struct Watch : FakeDevice {
    int* resets_seen = nullptr;
    void Reset() override { ++*resets_seen; }
  };
  int resets = 0;
  auto make = [&] {
    auto owned = std::make_unique<Watch>();
    owned->resets_seen = &resets;
    auto d = VirtioPciDevice::Create(std::move(owned), &mem_, &host_, &loop_);
    EXPECT_TRUE(d.ok()) << d.status();
    return std::move(*d);
  };
  fake_ = nullptr;
  dev_ = make();
  dev_.reset();  // never activated: nothing to stop
  EXPECT_EQ(resets, 0);

  dev_ = make();
  Negotiate(kFeatureVersion1);
  SetUpQueue(0);
  DriverOk();
  const int before = loop_.run_syncs;
  dev_.reset();
  EXPECT_EQ(resets, 1);
  EXPECT_EQ(loop_.run_syncs, before + 1);  // handed to the loop thread
}

TEST_F(VirtioPciTest, SignalUsedWithMsixFiresTheQueueVector) {
  Negotiate(kFeatureVersion1);
  SetUpQueue(0, 2);
  SetUpQueue(1, 1);
  EnableMsix({1, 2});
  DriverOk();
  host_.clear_fired();
  dev_->SignalUsed(0);
  EXPECT_EQ(host_.fired(), (std::vector<int>{2}));
  dev_->SignalUsed(1);
  EXPECT_EQ(host_.fired(), (std::vector<int>{2, 1}));
  EXPECT_EQ(host_.route(1).address, 0xfee00000u);
  EXPECT_EQ(host_.route(1).data, 0x41u);
  // No INTx and no ISR bits while MSI-X is on.
  EXPECT_FALSE(host_.intx(kGsi));
  EXPECT_EQ(Bar(kIsrOffset, 1), 0u);
  EXPECT_NE(dev_->StatsLine().find("msi=2"), std::string::npos) << dev_->StatsLine();
}

TEST_F(VirtioPciTest, SignalUsedWithMsixAndNoVectorSendsNothing) {
  Negotiate(kFeatureVersion1);
  SetUpQueue(0);  // NO_VECTOR
  EnableMsix({0, 1, 2});
  DriverOk();
  host_.clear_fired();
  dev_->SignalUsed(0);
  EXPECT_TRUE(host_.fired().empty());
  EXPECT_FALSE(host_.intx(kGsi));
}

TEST_F(VirtioPciTest, SignalUsedWithoutMsixUsesIsrAndIntx) {
  Negotiate(kFeatureVersion1);
  SetUpQueue(0);
  DriverOk();
  EXPECT_FALSE(host_.intx(kGsi));
  dev_->SignalUsed(0);
  EXPECT_TRUE(host_.intx(kGsi));
  EXPECT_TRUE(Cfg(pci::kStatus, 2) & pci::kStatusIntx);
  EXPECT_TRUE(host_.fired().empty());
  // Reading the ISR returns the bits, clears them and drops the line.
  EXPECT_EQ(Bar(kIsrOffset, 1), kIsrQueue);
  EXPECT_FALSE(host_.intx(kGsi));
  EXPECT_FALSE(Cfg(pci::kStatus, 2) & pci::kStatusIntx);
  EXPECT_EQ(Bar(kIsrOffset, 1), 0u);
  EXPECT_NE(dev_->StatsLine().find("intx=1"), std::string::npos) << dev_->StatsLine();
}

TEST_F(VirtioPciTest, IntxDisableKeepsTheLineLowButStatusShowsPending) {
  Negotiate(kFeatureVersion1);
  SetUpQueue(0);
  DriverOk();
  CfgWrite(pci::kCommand, pci::kCommandMemory | pci::kCommandIntxDisable, 2);
  dev_->SignalUsed(0);
  EXPECT_FALSE(host_.intx(kGsi));
  EXPECT_TRUE(Cfg(pci::kStatus, 2) & pci::kStatusIntx);
  CfgWrite(pci::kCommand, pci::kCommandMemory, 2);  // re-enabled: the line rises
  EXPECT_TRUE(host_.intx(kGsi));
  EXPECT_EQ(Bar(kIsrOffset, 4), kIsrQueue);
  EXPECT_FALSE(host_.intx(kGsi));
}

TEST_F(VirtioPciTest, ConfigChangeBumpsGenerationAndInterrupts) {
  Negotiate(kFeatureVersion1);
  SetUpQueue(0);
  DriverOk();
  const uint64_t gen = Bar(0x15, 1);
  dev_->SignalConfigChange();
  EXPECT_EQ(Bar(0x15, 1), (gen + 1) & 0xff);
  EXPECT_TRUE(host_.intx(kGsi));
  EXPECT_EQ(Bar(kIsrOffset, 1), kIsrConfig);

  BarWrite(0x10, 0, 2);  // config vector 0 under MSI-X
  EnableMsix({0});
  host_.clear_fired();
  dev_->SignalConfigChange();
  EXPECT_EQ(host_.fired(), (std::vector<int>{0}));
}

TEST_F(VirtioPciTest, NeedsResetSetsTheBitAndRaisesConfigInterruptOnce) {
  Negotiate(kFeatureVersion1);
  SetUpQueue(0);
  dev_->NeedsReset("too early");  // before DRIVER_OK: nothing to report
  EXPECT_FALSE(Status() & kStatusNeedsReset);
  EXPECT_FALSE(host_.intx(kGsi));
  DriverOk();
  dev_->NeedsReset("guest broke queue 0");
  EXPECT_TRUE(Status() & kStatusNeedsReset);
  EXPECT_TRUE(host_.intx(kGsi));
  EXPECT_EQ(Bar(kIsrOffset, 1), kIsrConfig);
  dev_->NeedsReset("again");  // once per reset cycle
  EXPECT_EQ(Bar(kIsrOffset, 1), 0u);
  EXPECT_FALSE(host_.intx(kGsi));
  EXPECT_NE(dev_->StatsLine().find("needs_reset=1"), std::string::npos);

  SetStatus(0);
  EXPECT_EQ(Status(), 0);
  Negotiate(kFeatureVersion1);
  SetUpQueue(0);
  DriverOk();
  dev_->NeedsReset("second cycle");
  EXPECT_TRUE(Status() & kStatusNeedsReset);
}

TEST_F(VirtioPciTest, AGuestBreakingTheDeviceInALoopCannotFloodTheLog) {
  ::testing::internal::CaptureStderr();
  for (int cycle = 0; cycle < 20; ++cycle) {
    SetStatus(0);
    Negotiate(kFeatureVersion1);
    SetUpQueue(0);
    DriverOk();
    dev_->NeedsReset("guest broke queue 0");
    ASSERT_TRUE(Status() & kStatusNeedsReset);
  }
  const std::string log = ::testing::internal::GetCapturedStderr();
  size_t lines = 0;
  for (size_t at = log.find("needs reset"); at != std::string::npos;
       at = log.find("needs reset", at + 1)) {
    ++lines;
  }
  EXPECT_EQ(lines, 8u) << log;
  EXPECT_NE(log.find("only counted"), std::string::npos) << log;
  EXPECT_NE(dev_->StatsLine().find("needs_reset=20"), std::string::npos) << dev_->StatsLine();
}

TEST_F(VirtioPciTest, NeedsResetWithMsixFiresTheConfigVector) {
  Negotiate(kFeatureVersion1);
  SetUpQueue(0, 1);
  BarWrite(0x10, 2, 2);
  EnableMsix({1, 2});
  DriverOk();
  host_.clear_fired();
  dev_->NeedsReset("bad descriptor");
  EXPECT_EQ(host_.fired(), (std::vector<int>{2}));
}

TEST_F(VirtioPciTest, DeviceConfigIsBoundsChecked) {
  EXPECT_EQ(Bar(kDeviceCfgOffset, 4), 0x04030201u);
  EXPECT_EQ(Bar(kDeviceCfgOffset + 4, 4), 0x08070605u);
  EXPECT_EQ(Bar(kDeviceCfgOffset + 6, 2), 0x0807u);
  EXPECT_EQ(Bar(kDeviceCfgOffset + 6, 4), 0u);  // runs past the 8 bytes
  EXPECT_EQ(Bar(kDeviceCfgOffset + 8, 1), 0u);
  EXPECT_EQ(Bar(kDeviceCfgOffset + 0xff8, 8), 0u);
  BarWrite(kDeviceCfgOffset + 2, 0xaabb, 2);
  EXPECT_EQ(fake_->config[2], 0xbb);
  EXPECT_EQ(fake_->config[3], 0xaa);
  BarWrite(kDeviceCfgOffset + 7, 0xffff, 2);  // past the end: dropped
  EXPECT_EQ(fake_->config[7], 8);
}

TEST_F(VirtioPciTest, StatsLineIncludesTheDevice) {
  SetStatus(0);
  const std::string line = dev_->StatsLine();
  EXPECT_NE(line.find("resets=1"), std::string::npos) << line;
  EXPECT_NE(line.find("fake_requests=42"), std::string::npos) << line;
  EXPECT_EQ(line.find('\n'), std::string::npos);
}

// The transport on a real bus and a real event loop: two vCPU threads (one
// resetting and re-activating the device, one reprogramming MSI-X) while the
// loop thread raises queue, config and needs-reset interrupts. Abseil's
// deadlock detector (on in tests) aborts on any lock-order inversion; the
// device must come out of it working.
TEST(VirtioPciThreads, ResetsAndMsixChangesRacingLoopInterrupts) {
  auto m = GuestMemory::Create({{0, kMiB}});
  ASSERT_TRUE(m.ok());
  testing::FakeDeviceHost host;
  absl::StatusOr<std::unique_ptr<EventLoop>> loop = EventLoop::Create("test-io");
  ASSERT_TRUE(loop.ok()) << loop.status();
  const layout::Window mmio64 = layout::Pci64Window(4ull << 30);
  pci::PciRoot root(&host, {layout::kPciMmio32Base, layout::kPciMmio32Size}, mmio64);
  auto d = VirtioPciDevice::Create(std::make_unique<FakeDevice>(), &*m, &host, loop->get());
  ASSERT_TRUE(d.ok()) << d.status();
  std::shared_ptr<VirtioPciDevice> dev = *d;
  absl::StatusOr<uint8_t> slot = root.AddDevice(dev);
  ASSERT_TRUE(slot.ok()) << slot.status();

  auto bytes = [](uint64_t v, size_t len) {
    std::vector<uint8_t> b(len);
    for (size_t i = 0; i < len; ++i) b[i] = static_cast<uint8_t>(v >> (8 * i));
    return b;
  };
  auto cfg_write = [&](uint16_t reg, uint64_t v, size_t len) {
    root.ecam()->Write(uint64_t{*slot} << 15 | reg, bytes(v, len));
  };
  cfg_write(pci::kCommand, pci::kCommandMemory | pci::kCommandBusMaster, 2);
  const uint64_t bar = dev->config().BarAddress(0) - mmio64.base;
  auto mmio_write = [&](uint64_t offset, uint64_t v, size_t len) {
    root.mmio64_window()->Write(bar + offset, bytes(v, len));
  };
  auto mmio_read = [&](uint64_t offset, size_t len) {
    std::vector<uint8_t> b(len);
    root.mmio64_window()->Read(bar + offset, b);
    uint64_t v = 0;
    for (size_t i = len; i-- > 0;) v = (v << 8) | b[i];
    return v;
  };
  uint16_t msix_cap = 0;
  for (uint16_t at = dev->config().ReadByte(pci::kCapPtr); at != 0;
       at = dev->config().ReadByte(at + 1)) {
    if (dev->config().ReadByte(at) == pci::kCapIdMsix) msix_cap = at;
  }
  ASSERT_NE(msix_cap, 0);

  std::atomic<bool> stop{false};
  std::thread interrupts([&] {
    while (!stop.load()) {
      (*loop)->RunSync([&] {
        dev->SignalUsed(0);
        dev->SignalConfigChange();
      });
    }
  });
  std::thread msix([&] {
    for (int i = 0; i < 1000; ++i) {
      for (uint16_t v = 0; v < 3; ++v) {
        mmio_write(kMsixTableOffset + 16 * v, 0xfee00000, 4);
        mmio_write(kMsixTableOffset + 16 * v + 8, 0x40 + v + i % 2, 4);
        mmio_write(kMsixTableOffset + 16 * v + 12, i % 3 == 0, 4);
      }
      cfg_write(static_cast<uint16_t>(msix_cap + 2), (i % 2) << 15 | (i % 5 == 0) << 14, 2);
      mmio_read(kIsrOffset, 1);
    }
  });
  ::testing::internal::CaptureStderr();  // the needs-reset reports
  for (int i = 0; i < 1000; ++i) {
    mmio_write(0x14, 0, 1);
    mmio_write(0x14, kStatusAcknowledge | kStatusDriver, 1);
    mmio_write(0x08, 1, 4);
    mmio_write(0x0c, kFeatureVersion1 >> 32, 4);
    mmio_write(0x14, kStatusAcknowledge | kStatusDriver | kStatusFeaturesOk, 1);
    mmio_write(0x10, 0, 2);
    mmio_write(0x16, 0, 2);
    mmio_write(0x18, 16, 2);
    mmio_write(0x1a, 1, 2);
    mmio_write(0x20, 0x10000, 8);
    mmio_write(0x28, 0x11000, 8);
    mmio_write(0x30, 0x12000, 8);
    mmio_write(0x1c, 1, 2);
    mmio_write(0x14, kStatusAcknowledge | kStatusDriver | kStatusFeaturesOk | kStatusDriverOk, 1);
    if (i % 50 == 0) (*loop)->RunSync([&] { dev->NeedsReset("test"); });
  }
  msix.join();
  stop.store(true);
  interrupts.join();
  ::testing::internal::GetCapturedStderr();

  // Still a working device: with MSI-X off, a used buffer raises INTx.
  cfg_write(static_cast<uint16_t>(msix_cap + 2), 0, 2);
  mmio_write(0x14, 0, 1);
  EXPECT_EQ(mmio_read(0x14, 1), 0u);
  EXPECT_EQ(mmio_read(kIsrOffset, 1), 0u);
  (*loop)->RunSync([&] { dev->SignalUsed(0); });
  EXPECT_TRUE(host.intx(layout::PciIntxGsi(*slot, 0)));
  EXPECT_EQ(mmio_read(kIsrOffset, 1), kIsrQueue);
  EXPECT_FALSE(host.intx(layout::PciIntxGsi(*slot, 0)));
}

TEST(VirtioPciCreate, RejectsBadDevices) {
  auto m = GuestMemory::Create({{0, kMiB}});
  ASSERT_TRUE(m.ok());
  testing::FakeDeviceHost host;
  InlineLoop loop;
  struct NoQueues : FakeDevice {
    uint16_t num_queues() const override { return 0; }
  };
  struct OddSize : FakeDevice {
    uint16_t max_queue_size() const override { return 100; }
  };
  struct HugeConfig : FakeDevice {
    uint32_t config_size() const override { return 0x2000; }
  };
  EXPECT_FALSE(VirtioPciDevice::Create(std::make_unique<NoQueues>(), &*m, &host, &loop).ok());
  EXPECT_FALSE(VirtioPciDevice::Create(std::make_unique<OddSize>(), &*m, &host, &loop).ok());
  EXPECT_FALSE(VirtioPciDevice::Create(std::make_unique<HugeConfig>(), &*m, &host, &loop).ok());
  EXPECT_FALSE(VirtioPciDevice::Create(nullptr, &*m, &host, &loop).ok());
}

}  // namespace
}  // namespace flint::virtio
