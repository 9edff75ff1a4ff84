// virtio-blk end to end without KVM: a hand-written driver puts request
// chains into a real split queue in real guest memory, kicks the notify
// eventfd, and the device serves them on a real event loop with a real
// engine against a real file.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstring>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "block/disk_file.h"
#include "devices/virtio/blk.h"
#include "devices/virtio/queue.h"
#include "vmm/event_loop.h"
#include "vmm/guest_memory.h"
#include "vmm/kvm/unique_fd.h"

namespace flint::virtio {
namespace {

constexpr uint64_t kMiB = 1ull << 20;
constexpr uint64_t kDiskSize = 4 * kMiB;
constexpr uint64_t kCapacity = kDiskSize / 512;
constexpr uint16_t kQueueSize = 64;
constexpr uint64_t kDescArea = 0x1000, kAvailArea = 0x2000, kUsedArea = 0x3000;
constexpr uint64_t kBuffers = 0x10000;
constexpr uint16_t kNext = 1, kWrite = 2;

// Only guards against a hang; never decides a pass.
constexpr absl::Duration kHang = absl::Seconds(30);

class FakeInterrupts : public Interrupts {
 public:
  void SignalUsed(uint16_t) override {
    {
      absl::MutexLock l(&mu_);
      ++signals_;
    }
    if (on_signal) on_signal();
  }
  void SignalConfigChange() override {}
  void NeedsReset(const std::string& why) override {
    absl::MutexLock l(&mu_);
    resets_.push_back(why);
  }
  // Waits until `pred` holds (checked under the lock, after every event).
  bool Await(const std::function<bool()>& pred) {
    absl::MutexLock l(&mu_);
    return mu_.AwaitWithTimeout(absl::Condition(&pred), kHang);
  }
  int signals() {
    absl::MutexLock l(&mu_);
    return signals_;
  }
  std::vector<std::string> resets() {
    absl::MutexLock l(&mu_);
    return resets_;
  }
  bool AwaitResets(size_t n) {
    absl::MutexLock l(&mu_);
    auto enough = [&] { return resets_.size() >= n; };
    return mu_.AwaitWithTimeout(absl::Condition(&enough), kHang);
  }

  // Runs on the loop thread after each interrupt, as a guest's interrupt
  // handler would (set before the device is activated).
  std::function<void()> on_signal;

 private:
  absl::Mutex mu_;
  int signals_ = 0;
  std::vector<std::string> resets_;
};

struct Buf {
  uint64_t gpa;
  uint32_t len;
  bool writable;
};

std::vector<uint8_t> Pattern(size_t n, uint8_t seed) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<uint8_t>(seed * 31 + i * 13 + (i >> 8));
  return v;
}

std::string TempDisk(uint64_t size) {
  std::string path = std::string(FLINT_BUILD_ROOT) + "/blk-dev-XXXXXX";
  int fd = mkstemp(path.data());
  EXPECT_GE(fd, 0);
  EXPECT_EQ(ftruncate(fd, static_cast<off_t>(size)), 0);
  close(fd);
  return path;
}

class VirtioBlkTest : public ::testing::TestWithParam<IoEngine> {
 protected:
  void SetUp() override {
    path_ = TempDisk(kDiskSize);
    check_.reset(open(path_.c_str(), O_RDWR | O_CLOEXEC));  // the test's own view of the file
    ASSERT_TRUE(check_.valid());
    auto mem = GuestMemory::Create({{0, 16 * kMiB}});
    ASSERT_TRUE(mem.ok()) << mem.status();
    mem_ = std::move(*mem);
    auto loop = EventLoop::Create("flint-blk-test");
    ASSERT_TRUE(loop.ok()) << loop.status();
    loop_ = std::move(*loop);
    notify_.reset(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    ASSERT_TRUE(notify_.valid());
  }

  void TearDown() override {
    if (blk_ != nullptr) loop_->RunSync([&] { blk_->Reset(); });
    blk_.reset();
    loop_.reset();
    unlink(path_.c_str());
  }

  // Creates the device; false (with the test skipped) when io_uring is
  // unavailable here.
  bool MakeDevice(DiskConfig config = {}) {
    config.path = path_;
    if (config.serial.empty()) config.serial = "flint-disk-serial-01";
    auto blk = VirtioBlk::Create(config, GetParam());
    if (!blk.ok() && GetParam() == IoEngine::kIoUring) {
      skip_ = std::string(blk.status().message());
      return false;
    }
    EXPECT_TRUE(blk.ok()) << blk.status();
    if (!blk.ok()) return false;
    blk_ = std::move(*blk);
    return true;
  }

  // DRIVER_OK: fresh rings, queue 0 activated with everything offered.
  void Activate() {
    ASSERT_TRUE(mem_.Fill(0, 0, kBuffers).ok());
    avail_idx_ = 0;
    next_desc_ = 0;
    seen_used_ = 0;
    auto q = SplitQueue::Create(
        mem_, {.size = kQueueSize, .desc = kDescArea, .avail = kAvailArea, .used = kUsedArea},
        kFeatureVersion1);
    ASSERT_TRUE(q.ok()) << q.status();
    queue_.emplace(std::move(*q));
    ActivateContext ctx;
    ctx.memory = &mem_;
    ctx.loop = loop_.get();
    ctx.interrupts = &irq_;
    ctx.features = blk_->features() | kFeatureVersion1;
    ctx.queues.push_back(ActiveQueue{.index = 0, .queue = &*queue_, .notify_fd = notify_.get()});
    absl::Status s;
    loop_->RunSync([&] { s = blk_->Activate(ctx); });
    ASSERT_TRUE(s.ok()) << s;
  }

  void DeviceReset() {
    loop_->RunSync([&] { blk_->Reset(); });
  }

  uint8_t* Host(uint64_t gpa, uint64_t len) {
    auto s = mem_.Slice(gpa, len);
    EXPECT_TRUE(s.ok());
    return s->data();
  }

  // Guest buffers, handed out upwards from kBuffers.
  uint64_t Alloc(uint64_t len, uint64_t align = 16) {
    next_buf_ = (next_buf_ + align - 1) / align * align;
    const uint64_t gpa = next_buf_;
    next_buf_ += len;
    return gpa;
  }
  uint64_t Header(uint32_t type, uint64_t sector) {
    const uint64_t gpa = Alloc(16);
    uint8_t h[16] = {};
    std::memcpy(h, &type, 4);
    std::memcpy(h + 8, &sector, 8);
    EXPECT_TRUE(mem_.Write(gpa, h, 16).ok());
    return gpa;
  }
  uint64_t Data(const std::vector<uint8_t>& bytes, uint64_t align = 16) {
    const uint64_t gpa = Alloc(bytes.size(), align);
    EXPECT_TRUE(mem_.Write(gpa, bytes.data(), bytes.size()).ok());
    return gpa;
  }
  uint64_t Status() {
    const uint64_t gpa = Alloc(1);
    EXPECT_TRUE(mem_.Fill(gpa, 0xff, 1).ok());
    return gpa;
  }
  uint64_t RangeSeg(uint64_t sector, uint32_t count, uint32_t flags) {
    uint8_t s[16];
    std::memcpy(s, &sector, 8);
    std::memcpy(s + 8, &count, 4);
    std::memcpy(s + 12, &flags, 4);
    return Data(std::vector<uint8_t>(s, s + 16));
  }

  // Writes the chain's descriptors, makes it available, publishes avail->idx.
  void Add(const std::vector<Buf>& bufs) {
    const uint16_t head = next_desc_;
    for (size_t i = 0; i < bufs.size(); ++i) {
      const uint16_t d = next_desc_;
      next_desc_ = static_cast<uint16_t>((next_desc_ + 1) % kQueueSize);
      uint16_t flags = bufs[i].writable ? kWrite : 0;
      if (i + 1 < bufs.size()) flags |= kNext;
      const uint64_t at = kDescArea + 16ull * d;
      ASSERT_TRUE(mem_.WriteObj(at, bufs[i].gpa).ok());
      ASSERT_TRUE(mem_.WriteObj(at + 8, bufs[i].len).ok());
      ASSERT_TRUE(mem_.WriteObj(at + 12, flags).ok());
      ASSERT_TRUE(mem_.WriteObj(at + 14, next_desc_).ok());
    }
    ASSERT_TRUE(
        mem_.WriteObj<uint16_t>(kAvailArea + 4 + 2ull * (avail_idx_ % kQueueSize), head).ok());
    ++avail_idx_;
    __atomic_store_n(reinterpret_cast<uint16_t*>(Host(kAvailArea + 2, 2)), avail_idx_,
                     __ATOMIC_RELEASE);
  }
  void Kick() {
    const uint64_t one = 1;
    ASSERT_EQ(write(notify_.get(), &one, sizeof(one)), 8);
  }
  uint16_t UsedIdx() {
    return __atomic_load_n(reinterpret_cast<uint16_t*>(Host(kUsedArea + 2, 2)), __ATOMIC_ACQUIRE);
  }
  uint32_t UsedLen(uint16_t i) {
    return *mem_.ReadObj<uint32_t>(kUsedArea + 8 + 8ull * (i % kQueueSize));
  }
  bool WaitUsed(uint16_t idx) {
    return irq_.Await([&] { return static_cast<int16_t>(UsedIdx() - idx) >= 0; });
  }

  struct Result {
    uint8_t status = 0xee;
    uint32_t used_len = 0;
  };
  // One request: add, kick, wait for it on the used ring.
  Result Run(const std::vector<Buf>& bufs) {
    Add(bufs);
    Kick();
    const uint16_t want = ++seen_used_;
    if (!WaitUsed(want)) {
      ADD_FAILURE() << "request not completed";
      return {};
    }
    const Buf& last = bufs.back();
    return Result{*mem_.ReadObj<uint8_t>(last.gpa + last.len - 1),
                  UsedLen(static_cast<uint16_t>(want - 1))};
  }
  std::vector<uint8_t> GuestBytes(uint64_t gpa, size_t n) {
    std::vector<uint8_t> v(n);
    EXPECT_TRUE(mem_.Read(gpa, v.data(), n).ok());
    return v;
  }
  std::vector<uint8_t> FileBytes(uint64_t offset, size_t n) {
    std::vector<uint8_t> v(n);
    EXPECT_EQ(pread(check_.get(), v.data(), n, static_cast<off_t>(offset)),
              static_cast<ssize_t>(n));
    return v;
  }

  std::string path_;
  UniqueFd check_;
  GuestMemory mem_;
  std::unique_ptr<EventLoop> loop_;
  UniqueFd notify_;
  FakeInterrupts irq_;
  std::unique_ptr<VirtioBlk> blk_;
  std::optional<SplitQueue> queue_;
  std::string skip_;
  uint16_t avail_idx_ = 0;
  uint16_t next_desc_ = 0;
  uint16_t seen_used_ = 0;
  uint64_t next_buf_ = kBuffers;
};

#define START_DEVICE(...)                                        \
  do {                                                           \
    if (!MakeDevice(__VA_ARGS__)) {                              \
      if (!skip_.empty()) GTEST_SKIP() << "io_uring: " << skip_; \
      FAIL() << "device not created";                            \
    }                                                            \
    Activate();                                                  \
  } while (0)

TEST_P(VirtioBlkTest, WritesThenReadsBackAcrossDescriptors) {
  START_DEVICE();
  EXPECT_STREQ(blk_->engine_name(), GetParam() == IoEngine::kIoUring ? "io_uring" : "threads");
  const std::vector<uint8_t> data = Pattern(1536, 1);
  const uint64_t hdr = Header(kBlkTypeOut, 10);
  const uint64_t a = Data({data.begin(), data.begin() + 1024});
  const uint64_t b = Data({data.begin() + 1024, data.end()});
  const uint64_t st = Status();
  Result r = Run({{hdr, 16, false}, {a, 1024, false}, {b, 512, false}, {st, 1, true}});
  EXPECT_EQ(r.status, kBlkStatusOk);
  EXPECT_EQ(r.used_len, 1u);
  EXPECT_EQ(FileBytes(10 * 512, 1536), data);

  const uint64_t in = Alloc(1536);
  const uint64_t st2 = Status();
  r = Run({{Header(kBlkTypeIn, 10), 16, false}, {in, 1536, true}, {st2, 1, true}});
  EXPECT_EQ(r.status, kBlkStatusOk);
  EXPECT_EQ(r.used_len, 1537u);  // data read plus the status byte
  EXPECT_EQ(GuestBytes(in, 1536), data);
  EXPECT_NE(blk_->StatsLine().find("reads=1 writes=1"), std::string::npos) << blk_->StatsLine();
  EXPECT_NE(blk_->StatsLine().find("bytes_read=1536 bytes_written=1536"), std::string::npos);
}

TEST_P(VirtioBlkTest, AnyFramingOfHeaderDataAndStatusWorks) {
  START_DEVICE();
  // Header and data in one readable buffer.
  const std::vector<uint8_t> data = Pattern(512, 2);
  std::vector<uint8_t> out(16);
  const uint32_t type = kBlkTypeOut;
  const uint64_t sector = 3;
  std::memcpy(out.data(), &type, 4);
  std::memcpy(out.data() + 8, &sector, 8);
  out.insert(out.end(), data.begin(), data.end());
  const uint64_t both = Data(out);
  Result r = Run({{both, 528, false}, {Status(), 1, true}});
  EXPECT_EQ(r.status, kBlkStatusOk);
  EXPECT_EQ(FileBytes(3 * 512, 512), data);

  // Header split over two buffers; data and status sharing one.
  const uint64_t hdr = Header(kBlkTypeIn, 3);
  const uint64_t tail = Alloc(513);
  ASSERT_TRUE(mem_.Fill(tail + 512, 0xff, 1).ok());
  r = Run({{hdr, 8, false}, {hdr + 8, 8, false}, {tail, 513, true}});
  EXPECT_EQ(r.status, kBlkStatusOk);
  EXPECT_EQ(r.used_len, 513u);
  EXPECT_EQ(GuestBytes(tail, 512), data);
}

TEST_P(VirtioBlkTest, FlushAndGetId) {
  START_DEVICE();
  Result r = Run({{Header(kBlkTypeFlush, 0), 16, false}, {Status(), 1, true}});
  EXPECT_EQ(r.status, kBlkStatusOk);
  EXPECT_EQ(r.used_len, 1u);

  const uint64_t id = Alloc(20);
  ASSERT_TRUE(mem_.Fill(id, 0xaa, 20).ok());
  r = Run({{Header(kBlkTypeGetId, 0), 16, false}, {id, 20, true}, {Status(), 1, true}});
  EXPECT_EQ(r.status, kBlkStatusOk);
  EXPECT_EQ(r.used_len, 21u);
  const std::string serial = "flint-disk-serial-01";
  EXPECT_EQ(GuestBytes(id, 20), std::vector<uint8_t>(serial.begin(), serial.end()));
}

TEST_P(VirtioBlkTest, ShortSerialIsZeroPadded) {
  START_DEVICE(DiskConfig{.serial = "abc"});
  const uint64_t id = Alloc(20);
  ASSERT_TRUE(mem_.Fill(id, 0xaa, 20).ok());
  Result r = Run({{Header(kBlkTypeGetId, 0), 16, false}, {id, 20, true}, {Status(), 1, true}});
  EXPECT_EQ(r.status, kBlkStatusOk);
  std::vector<uint8_t> want(20, 0);
  want[0] = 'a';
  want[1] = 'b';
  want[2] = 'c';
  EXPECT_EQ(GuestBytes(id, 20), want);
}

TEST_P(VirtioBlkTest, DiscardAndWriteZeroes) {
  START_DEVICE();
  const std::vector<uint8_t> data = Pattern(kMiB, 3);
  ASSERT_EQ(pwrite(check_.get(), data.data(), data.size(), 0), static_cast<ssize_t>(kMiB));

  // Write zeroes, with and without unmap: zeroes read back either way.
  for (uint32_t flags : {0u, kBlkDiscardFlagUnmap}) {
    const uint64_t first = flags ? 100 : 20;
    Result r = Run({{Header(kBlkTypeWriteZeroes, 0), 16, false},
                    {RangeSeg(first, 16, flags), 16, false},
                    {Status(), 1, true}});
    EXPECT_EQ(r.status, kBlkStatusOk) << flags;
    EXPECT_EQ(FileBytes(first * 512, 16 * 512), std::vector<uint8_t>(16 * 512, 0));
    EXPECT_EQ(
        FileBytes(first * 512 + 16 * 512, 512),
        std::vector<uint8_t>(data.begin() + (first + 16) * 512, data.begin() + (first + 17) * 512));
  }
  Result r = Run({{Header(kBlkTypeDiscard, 0), 16, false},
                  {RangeSeg(512, 512, 0), 16, false},
                  {Status(), 1, true}});
  EXPECT_EQ(r.status, kBlkStatusOk);

  // Flags: unmap is for write-zeroes only; unknown bits are unsupported.
  r = Run({{Header(kBlkTypeDiscard, 0), 16, false},
           {RangeSeg(0, 8, kBlkDiscardFlagUnmap), 16, false},
           {Status(), 1, true}});
  EXPECT_EQ(r.status, kBlkStatusUnsupp);
  r = Run({{Header(kBlkTypeWriteZeroes, 0), 16, false},
           {RangeSeg(0, 8, 2), 16, false},
           {Status(), 1, true}});
  EXPECT_EQ(r.status, kBlkStatusUnsupp);
  // Bad ranges and too many segments.
  r = Run({{Header(kBlkTypeWriteZeroes, 0), 16, false},
           {RangeSeg(kCapacity - 4, 8, 0), 16, false},
           {Status(), 1, true}});
  EXPECT_EQ(r.status, kBlkStatusIoErr);
  r = Run({{Header(kBlkTypeDiscard, 0), 16, false},
           {RangeSeg(0, kBlkMaxDiscardSectors + 1, 0), 16, false},
           {Status(), 1, true}});
  EXPECT_EQ(r.status, kBlkStatusIoErr);
  const uint64_t two = RangeSeg(0, 8, 0);
  RangeSeg(16, 8, 0);
  r = Run({{Header(kBlkTypeDiscard, 0), 16, false}, {two, 32, false}, {Status(), 1, true}});
  EXPECT_EQ(r.status, kBlkStatusIoErr);
  r = Run({{Header(kBlkTypeDiscard, 0), 16, false}, {two, 12, false}, {Status(), 1, true}});
  EXPECT_EQ(r.status, kBlkStatusIoErr);
  // Data untouched by all the refused requests.
  EXPECT_EQ(FileBytes(0, 512), std::vector<uint8_t>(data.begin(), data.begin() + 512));
}

TEST_P(VirtioBlkTest, BadRequestsGetErrorStatuses) {
  START_DEVICE();
  // Reads and writes past the end of the disk.
  Result r = Run(
      {{Header(kBlkTypeIn, kCapacity), 16, false}, {Alloc(512), 512, true}, {Status(), 1, true}});
  EXPECT_EQ(r.status, kBlkStatusIoErr);
  EXPECT_EQ(r.used_len, 1u);
  r = Run({{Header(kBlkTypeOut, kCapacity - 1), 16, false},
           {Data(Pattern(1024, 4)), 1024, false},
           {Status(), 1, true}});
  EXPECT_EQ(r.status, kBlkStatusIoErr);
  r = Run(
      {{Header(kBlkTypeIn, ~0ull - 1), 16, false}, {Alloc(1024), 1024, true}, {Status(), 1, true}});
  EXPECT_EQ(r.status, kBlkStatusIoErr);  // sector + length wraps
  // Not a whole number of sectors.
  r = Run({{Header(kBlkTypeOut, 0), 16, false},
           {Data(Pattern(500, 5)), 500, false},
           {Status(), 1, true}});
  EXPECT_EQ(r.status, kBlkStatusIoErr);
  // Unknown type.
  r = Run({{Header(99, 0), 16, false}, {Status(), 1, true}});
  EXPECT_EQ(r.status, kBlkStatusUnsupp);
  EXPECT_EQ(FileBytes(0, 512), std::vector<uint8_t>(512, 0));
  EXPECT_NE(blk_->StatsLine().find("ioerr=4 unsupp=1"), std::string::npos) << blk_->StatsLine();
  EXPECT_TRUE(irq_.resets().empty());
}

TEST_P(VirtioBlkTest, ReadOnlyDiskRefusesEveryWrite) {
  const std::vector<uint8_t> data = Pattern(4096, 6);
  ASSERT_EQ(pwrite(check_.get(), data.data(), data.size(), 0), 4096);
  START_DEVICE(DiskConfig{.readonly = true});
  EXPECT_TRUE(blk_->features() & kBlkFeatureRo);
  Result r = Run({{Header(kBlkTypeOut, 0), 16, false},
                  {Data(Pattern(512, 7)), 512, false},
                  {Status(), 1, true}});
  EXPECT_EQ(r.status, kBlkStatusIoErr);
  for (uint32_t type : {kBlkTypeDiscard, kBlkTypeWriteZeroes}) {
    r = Run({{Header(type, 0), 16, false}, {RangeSeg(0, 8, 0), 16, false}, {Status(), 1, true}});
    EXPECT_EQ(r.status, kBlkStatusIoErr) << type;
  }
  EXPECT_EQ(FileBytes(0, 4096), data);
  const uint64_t in = Alloc(4096);
  r = Run({{Header(kBlkTypeIn, 0), 16, false}, {in, 4096, true}, {Status(), 1, true}});
  EXPECT_EQ(r.status, kBlkStatusOk);
  EXPECT_EQ(GuestBytes(in, 4096), data);
}

TEST_P(VirtioBlkTest, ManyRequestsInOneKick) {
  START_DEVICE();
  constexpr int kPerKick = 21;  // 63 of the 64 descriptors
  std::vector<uint64_t> status;
  for (int round = 0; round < 2; ++round) {
    for (int j = 0; j < kPerKick; ++j) {
      const int i = round * kPerKick + j;
      status.push_back(Status());
      Add({{Header(kBlkTypeOut, 8ull * i), 16, false},
           {Data(Pattern(4096, static_cast<uint8_t>(i))), 4096, false},
           {status.back(), 1, true}});
    }
    Kick();
    ASSERT_TRUE(WaitUsed(static_cast<uint16_t>((round + 1) * kPerKick)));
  }
  seen_used_ = 2 * kPerKick;
  for (int i = 0; i < 2 * kPerKick; ++i) {
    EXPECT_EQ(*mem_.ReadObj<uint8_t>(status[i]), kBlkStatusOk) << i;
    EXPECT_EQ(FileBytes(4096ull * i, 4096), Pattern(4096, static_cast<uint8_t>(i))) << i;
  }
  EXPECT_GE(irq_.signals(), 2);
}

struct Malformed {
  const char* name;
  const char* reason;  // part of the NeedsReset message
};

TEST_P(VirtioBlkTest, MalformedChainsNeedResetAndTheDeviceRecovers) {
  START_DEVICE();
  const Malformed cases[] = {
      {"writable header", "the request header needs 16"},
      {"no status byte", "no device-writable status byte"},
      {"read with readable data", "read request"},
      {"write with writable data", "write request"},
      {"short header", "the request header needs 16"},
  };
  for (int c = 0; c < 5; ++c) {
    SCOPED_TRACE(cases[c].name);
    const uint64_t st = Status();
    switch (c) {
      case 0:
        Add({{Header(kBlkTypeIn, 0), 16, true}, {st, 1, true}});
        break;
      case 1:
        Add({{Header(kBlkTypeOut, 0), 16, false}, {Data(Pattern(512, 1)), 512, false}});
        break;
      case 2:
        Add({{Header(kBlkTypeIn, 0), 16, false}, {Alloc(512), 512, false}, {st, 1, true}});
        break;
      case 3:
        Add({{Header(kBlkTypeOut, 0), 16, false}, {Alloc(512), 512, true}, {st, 1, true}});
        break;
      case 4:
        Add({{Header(kBlkTypeIn, 0), 12, false}, {st, 1, true}});
        break;
    }
    Kick();
    ASSERT_TRUE(irq_.AwaitResets(size_t(c) + 1));
    EXPECT_NE(irq_.resets().back().find(cases[c].reason), std::string::npos)
        << irq_.resets().back();
    EXPECT_EQ(UsedIdx(), 0);  // nothing completed
    // Later kicks are ignored until the reset.
    Kick();
    loop_->RunSync([] {});
    EXPECT_EQ(irq_.resets().size(), size_t(c) + 1);

    DeviceReset();
    Activate();
    const uint64_t in = Alloc(512);
    Result r = Run({{Header(kBlkTypeIn, 0), 16, false}, {in, 512, true}, {Status(), 1, true}});
    EXPECT_EQ(r.status, kBlkStatusOk);
    DeviceReset();
    Activate();
  }
}

TEST_P(VirtioBlkTest, DirectIoBouncesMisalignedGuestBuffers) {
  {
    auto probe = block::DiskFile::Open(path_, false, true);
    if (!probe.ok()) GTEST_SKIP() << probe.status().message();
  }
  if (!MakeDevice(DiskConfig{.direct = true})) {
    if (!skip_.empty()) GTEST_SKIP() << "io_uring: " << skip_;
    FAIL() << "device not created";
  }
  Activate();
  const std::vector<uint8_t> data = Pattern(8192, 8);
  // One byte past a page boundary: misaligned for any O_DIRECT rule.
  const uint64_t odd = Alloc(8192 + 4096, 4096) + 1;
  ASSERT_TRUE(mem_.Write(odd, data.data(), data.size()).ok());
  Result r = Run({{Header(kBlkTypeOut, 16), 16, false}, {odd, 8192, false}, {Status(), 1, true}});
  EXPECT_EQ(r.status, kBlkStatusOk);
  EXPECT_EQ(FileBytes(16 * 512, 8192), data);

  const uint64_t odd_in = Alloc(8192 + 4096, 4096) + 1;
  r = Run({{Header(kBlkTypeIn, 16), 16, false}, {odd_in, 8192, true}, {Status(), 1, true}});
  EXPECT_EQ(r.status, kBlkStatusOk);
  EXPECT_EQ(r.used_len, 8193u);
  EXPECT_EQ(GuestBytes(odd_in, 8192), data);

  // Page-aligned buffers go straight to the disk.
  const uint64_t aligned = Alloc(4096, 4096);
  r = Run({{Header(kBlkTypeIn, 16), 16, false}, {aligned, 4096, true}, {Status(), 1, true}});
  EXPECT_EQ(r.status, kBlkStatusOk);
  EXPECT_EQ(GuestBytes(aligned, 4096), std::vector<uint8_t>(data.begin(), data.begin() + 4096));
  EXPECT_NE(blk_->StatsLine().find("bounced=2"), std::string::npos) << blk_->StatsLine();
}

TEST_P(VirtioBlkTest, GetIdWritesNoMoreThanTheBufferOrTheId) {
  START_DEVICE();
  // 4 bytes: the id is cut there, nothing after the buffer is touched.
  const uint64_t small = Alloc(8);
  ASSERT_TRUE(mem_.Fill(small, 0xaa, 8).ok());
  Result r = Run({{Header(kBlkTypeGetId, 0), 16, false}, {small, 4, true}, {Status(), 1, true}});
  EXPECT_EQ(r.status, kBlkStatusOk);
  EXPECT_EQ(r.used_len, 5u);
  EXPECT_EQ(GuestBytes(small, 8),
            std::vector<uint8_t>({'f', 'l', 'i', 'n', 0xaa, 0xaa, 0xaa, 0xaa}));
  // 100 bytes: 20 written, the rest untouched.
  const uint64_t big = Alloc(100);
  ASSERT_TRUE(mem_.Fill(big, 0xbb, 100).ok());
  r = Run({{Header(kBlkTypeGetId, 0), 16, false}, {big, 100, true}, {Status(), 1, true}});
  EXPECT_EQ(r.status, kBlkStatusOk);
  EXPECT_EQ(r.used_len, 21u);
  EXPECT_EQ(GuestBytes(big + 20, 80), std::vector<uint8_t>(80, 0xbb));
  // No buffer at all: an error, not a write into the status byte.
  r = Run({{Header(kBlkTypeGetId, 0), 16, false}, {Status(), 1, true}});
  EXPECT_EQ(r.status, kBlkStatusIoErr);
  EXPECT_EQ(r.used_len, 1u);
}

// A guest whose interrupt handler refills the ring at once, with requests
// that complete without touching the disk, must not keep the loop thread to
// itself: work posted meanwhile runs before the flood ends.
TEST_P(VirtioBlkTest, AFloodingGuestDoesNotMonopoliseTheLoop) {
  constexpr int kPerRefill = 32;  // chains of two descriptors: the whole table
  constexpr int kRefills = 50;
  int refills = 0;                // loop thread only
  int refills_when_posted_ran = -1;
  auto add_unknown_requests = [&] {
    for (int i = 0; i < kPerRefill; ++i) Add({{Header(99, 0), 16, false}, {Status(), 1, true}});
  };
  irq_.on_signal = [&] {
    if (refills == kRefills) return;
    if (++refills == 1) loop_->Post([&] { refills_when_posted_ran = refills; });
    add_unknown_requests();
  };
  START_DEVICE();
  add_unknown_requests();
  Kick();
  ASSERT_TRUE(WaitUsed(static_cast<uint16_t>(kPerRefill * (kRefills + 1))));
  int seen = -2;
  loop_->RunSync([&] { seen = refills_when_posted_ran; });
  EXPECT_GE(seen, 1);
  EXPECT_LT(seen, kRefills) << "the posted work waited for the whole flood";
  EXPECT_TRUE(irq_.resets().empty());
  loop_->RunSync([&] { irq_.on_signal = nullptr; });
}

// O_DIRECT read into a misaligned guest buffer that fails (the image shrank
// under the device): the bounce buffer is not copied into the guest.
TEST_P(VirtioBlkTest, FailedBouncedReadLeavesTheGuestBufferAlone) {
  {
    auto probe = block::DiskFile::Open(path_, false, true);
    if (!probe.ok()) GTEST_SKIP() << probe.status().message();
  }
  START_DEVICE(DiskConfig{.direct = true});
  ASSERT_EQ(ftruncate(check_.get(), static_cast<off_t>(kDiskSize / 2)), 0);
  const uint64_t odd = Alloc(8192 + 4096, 4096) + 1;
  ASSERT_TRUE(mem_.Fill(odd, 0x5a, 8192).ok());
  Result r = Run({{Header(kBlkTypeIn, kCapacity - 16), 16, false},
                  {odd, 8192, true},
                  {Status(), 1, true}});
  EXPECT_EQ(r.status, kBlkStatusIoErr);
  EXPECT_EQ(r.used_len, 1u);
  EXPECT_EQ(GuestBytes(odd, 8192), std::vector<uint8_t>(8192, 0x5a));
  EXPECT_NE(blk_->StatsLine().find("bounced=1"), std::string::npos) << blk_->StatsLine();
}

INSTANTIATE_TEST_SUITE_P(Engines, VirtioBlkTest,
                         ::testing::Values(IoEngine::kIoUring, IoEngine::kThreads),
                         [](const ::testing::TestParamInfo<IoEngine>& p) {
                           return p.param == IoEngine::kIoUring ? std::string("IoUring")
                                                                : std::string("Threads");
                         });

uint32_t Cfg32(VirtioBlk& blk, uint32_t offset) {
  uint8_t b[4];
  blk.ReadConfig(offset, b);
  uint32_t v;
  std::memcpy(&v, b, 4);
  return v;
}

TEST(VirtioBlkConfig, IdentityFeaturesAndConfigSpace) {
  const std::string path = TempDisk(kDiskSize);
  auto blk = VirtioBlk::Create(DiskConfig{.path = path, .queues = 4}, IoEngine::kThreads);
  ASSERT_TRUE(blk.ok()) << blk.status();
  VirtioBlk& d = **blk;
  EXPECT_EQ(d.device_id(), 2);
  EXPECT_EQ(d.pci_class(), 0x018000u);
  EXPECT_EQ(d.name(), "virtio-blk");
  EXPECT_EQ(d.num_queues(), 4);
  EXPECT_EQ(d.max_queue_size(), 256);
  EXPECT_EQ(d.config_size(), 60u);
  EXPECT_EQ(d.features(), kBlkFeatureSizeMax | kBlkFeatureSegMax | kBlkFeatureBlkSize |
                              kBlkFeatureFlush | kBlkFeatureMq | kBlkFeatureDiscard |
                              kBlkFeatureWriteZeroes);
  EXPECT_TRUE(d.engine_note().empty());

  uint8_t cap[8];
  d.ReadConfig(kBlkCfgCapacity, cap);
  uint64_t capacity;
  std::memcpy(&capacity, cap, 8);
  EXPECT_EQ(capacity, kCapacity);
  EXPECT_EQ(Cfg32(d, kBlkCfgSizeMax), kBlkSizeMax);
  EXPECT_EQ(Cfg32(d, kBlkCfgSegMax), 254u);
  EXPECT_EQ(Cfg32(d, kBlkCfgBlkSize), 512u);
  uint8_t nq[2];
  d.ReadConfig(kBlkCfgNumQueues, nq);
  EXPECT_EQ(nq[0] | nq[1] << 8, 4);
  EXPECT_EQ(Cfg32(d, kBlkCfgMaxDiscardSectors), kBlkMaxDiscardSectors);
  EXPECT_EQ(Cfg32(d, kBlkCfgMaxDiscardSeg), 1u);
  EXPECT_EQ(Cfg32(d, kBlkCfgDiscardSectorAlignment), 1u);
  EXPECT_EQ(Cfg32(d, kBlkCfgMaxWriteZeroesSectors), kBlkMaxWriteZeroesSectors);
  EXPECT_EQ(Cfg32(d, kBlkCfgMaxWriteZeroesSeg), 1u);
  uint8_t unmap[4];
  d.ReadConfig(kBlkCfgWriteZeroesMayUnmap, unmap);
  EXPECT_EQ(unmap[0], 1);
  EXPECT_EQ(unmap[1] | unmap[2] | unmap[3], 0);  // unused1

  // The driver cannot change anything.
  const uint8_t junk[8] = {1, 2, 3, 4, 5, 6, 7, 8};
  d.WriteConfig(kBlkCfgCapacity, junk);
  d.WriteConfig(32, junk);  // writeback: no CONFIG_WCE
  d.ReadConfig(kBlkCfgCapacity, cap);
  std::memcpy(&capacity, cap, 8);
  EXPECT_EQ(capacity, kCapacity);
  uint8_t wb[1];
  d.ReadConfig(32, wb);
  EXPECT_EQ(wb[0], 0);
  EXPECT_NE(d.StatsLine().find("engine=threads queues=4"), std::string::npos) << d.StatsLine();
  blk->reset();
  unlink(path.c_str());
}

TEST(VirtioBlkConfig, ReadOnlyOffersNoDiscardOrWriteZeroes) {
  const std::string path = TempDisk(kDiskSize);
  auto blk = VirtioBlk::Create(DiskConfig{.path = path, .readonly = true}, IoEngine::kThreads);
  ASSERT_TRUE(blk.ok()) << blk.status();
  const uint64_t f = (*blk)->features();
  EXPECT_TRUE(f & kBlkFeatureRo);
  EXPECT_FALSE(f & (kBlkFeatureDiscard | kBlkFeatureWriteZeroes | kBlkFeatureMq));
  EXPECT_EQ(Cfg32(**blk, kBlkCfgMaxDiscardSectors), 0u);
  blk->reset();
  unlink(path.c_str());
}

// vm.cc prefixes "--disk path=P: ", so the messages say what is wrong and
// what to change without naming the path again.
TEST(VirtioBlkConfig, CreateErrorsLeaveThePathToTheCaller) {
  auto blk = VirtioBlk::Create(DiskConfig{.path = "/nonexistent/disk.img"}, IoEngine::kAuto);
  EXPECT_EQ(blk.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(blk.status().message(), "the image does not exist");
  const std::string path = TempDisk(kDiskSize);
  blk = VirtioBlk::Create(DiskConfig{.path = path, .queues = 0}, IoEngine::kAuto);
  EXPECT_EQ(blk.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(blk.status().message(), "queues=0 must be between 1 and 16");
  auto first = VirtioBlk::Create(DiskConfig{.path = path}, IoEngine::kThreads);
  ASSERT_TRUE(first.ok()) << first.status();
  blk = VirtioBlk::Create(DiskConfig{.path = path}, IoEngine::kThreads);
  EXPECT_EQ(blk.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(blk.status().message().find(path), std::string::npos) << blk.status();
  first->reset();
  unlink(path.c_str());
}

// Runs `fn` on a thread of its own whose io_uring_setup fails with EPERM, as
// under a container's seccomp profile. The filter stays with that thread.
absl::Status WithoutIoUring(const std::function<void()>& fn) {
  absl::Status status;
  std::thread t([&] {
    sock_filter code[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, arch)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_io_uring_setup, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    sock_fprog prog{static_cast<unsigned short>(sizeof(code) / sizeof(code[0])), code};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 ||
        syscall(__NR_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) != 0) {
      status = absl::InternalError(std::string("seccomp: ") + strerror(errno));
      return;
    }
    fn();
  });
  t.join();
  return status;
}

TEST(VirtioBlkEngine, AutoFallsBackToThreadsAndSaysWhy) {
  const std::string path = TempDisk(kDiskSize);
  absl::Status made = absl::UnknownError("not run");
  std::string name, note, stats;
  absl::StatusOr<std::unique_ptr<VirtioBlk>> uring = absl::UnknownError("not run");
  absl::Status s = WithoutIoUring([&] {
    auto automatic = VirtioBlk::Create(DiskConfig{.path = path, .queues = 2}, IoEngine::kAuto);
    made = automatic.status();
    if (automatic.ok()) {
      name = (*automatic)->engine_name();
      note = (*automatic)->engine_note();
      stats = (*automatic)->StatsLine();
    }
    automatic = absl::CancelledError("closed");  // lets go of the disk's lock
    uring = VirtioBlk::Create(DiskConfig{.path = path}, IoEngine::kIoUring);
  });
  if (!s.ok()) GTEST_SKIP() << s.message();
  ASSERT_TRUE(made.ok()) << made;
  EXPECT_EQ(name, "threads");
  EXPECT_EQ(note,
            "io_uring unavailable (io_uring_queue_init: Operation not permitted (blocked by a "
            "seccomp filter or a security module)): disk I/O uses the thread pool");
  EXPECT_NE(stats.find("engine=threads queues=2"), std::string::npos) << stats;
  EXPECT_EQ(uring.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(uring.status().message().find(
                "io_uring is unavailable (io_uring_queue_init: Operation not permitted"),
            std::string::npos)
      << uring.status();

  // Outside the filter the same disk gets io_uring (where the host has it).
  auto again = VirtioBlk::Create(DiskConfig{.path = path}, IoEngine::kAuto);
  ASSERT_TRUE(again.ok()) << again.status();
  if ((*again)->engine_note().empty()) {
    EXPECT_STREQ((*again)->engine_name(), "io_uring");
  }
  again->reset();
  unlink(path.c_str());
}

// Under auto, the first queue gets a ring and a later one cannot (here: out
// of file descriptors): the whole disk moves to the thread pool, and the note
// gives that queue's reason once.
TEST(VirtioBlkEngine, AutoFallsBackWhenALaterQueueGetsNoRing) {
  const std::string path = TempDisk(kDiskSize);
  {
    auto probe = VirtioBlk::Create(DiskConfig{.path = path}, IoEngine::kIoUring);
    if (!probe.ok()) {
      unlink(path.c_str());
      GTEST_SKIP() << "io_uring: " << probe.status().message();
    }
  }
  rlimit saved{};
  ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &saved), 0);
  // Fill every free descriptor below a lowered limit, then free exactly what
  // the image (1), queue 0's ring and eventfd (2) and queue 1's eventfd (1)
  // take: queue 1's ring is the descriptor that does not fit.
  UniqueFd lowest(open("/dev/null", O_RDONLY | O_CLOEXEC));
  ASSERT_TRUE(lowest.valid());
  const rlim_t limit = static_cast<rlim_t>(lowest.get()) + 64;
  if (limit > saved.rlim_max) GTEST_SKIP() << "RLIMIT_NOFILE hard limit too low";
  rlimit low = saved;
  low.rlim_cur = limit;
  ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &low), 0);
  std::vector<UniqueFd> filler;
  filler.push_back(std::move(lowest));
  for (;;) {
    UniqueFd fd(open("/dev/null", O_RDONLY | O_CLOEXEC));
    if (!fd.valid()) break;
    filler.push_back(std::move(fd));
  }
  for (int i = 0; i < 4; ++i) filler.pop_back();
  auto blk = VirtioBlk::Create(DiskConfig{.path = path, .queues = 2}, IoEngine::kAuto);
  filler.clear();
  ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &saved), 0);
  ASSERT_TRUE(blk.ok()) << blk.status();
  EXPECT_STREQ((*blk)->engine_name(), "threads");
  EXPECT_EQ((*blk)->engine_note(),
            "io_uring unavailable (io_uring_queue_init: Too many open files): disk I/O uses the "
            "thread pool");
  blk->reset();
  unlink(path.c_str());
}

}  // namespace
}  // namespace flint::virtio
