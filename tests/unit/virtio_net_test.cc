// virtio-net without KVM: a hand-written driver puts chains into real split
// queues in real guest memory and kicks their notify eventfds; the device
// serves them on a real event loop against a fake NetBackend that records
// what it was sent and hands out frames the test queues for it.
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cstring>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "devices/virtio/net.h"
#include "devices/virtio/queue.h"
#include "net/backend.h"
#include "vmm/event_loop.h"
#include "vmm/guest_memory.h"
#include "vmm/kvm/unique_fd.h"

namespace flint::virtio {
namespace {

constexpr uint64_t kMiB = 1ull << 20;
constexpr uint16_t kQueueSize = 64;
constexpr uint64_t kRingBase = 0x10000;
constexpr uint64_t kRingStride = 0x2000;
constexpr uint64_t kBuffers = 0x200000;
constexpr uint16_t kNext = 1, kWrite = 2, kIndirect = 4;
constexpr uint16_t kUsedNoNotify = 1;
constexpr std::array<uint8_t, 6> kMac = {0x52, 0x54, 0x00, 0x12, 0x34, 0x56};

// Only guards against a hang; never decides a pass.
constexpr absl::Duration kHang = absl::Seconds(30);

// What every fake backend appends to, so a test can check the order of
// events across two backends.
struct Log {
  absl::Mutex mu;
  std::vector<std::string> lines;
  void Add(std::string s) {
    absl::MutexLock l(&mu);
    lines.push_back(std::move(s));
  }
  std::vector<std::string> Get() {
    absl::MutexLock l(&mu);
    return lines;
  }
};

// The state of one fake backend, shared with the test so it survives the
// backend (the device destroys a swapped-out one).
struct FakeState {
  explicit FakeState(std::string n, bool v, uint16_t p, std::shared_ptr<Log> lg)
      : name(std::move(n)), vnet(v), pairs(p), log(std::move(lg)), paused(p, false) {}

  const std::string name;
  const bool vnet;
  const uint16_t pairs;
  const std::shared_ptr<Log> log;

  absl::Mutex mu;
  absl::Status start_result ABSL_GUARDED_BY(mu);
  bool started ABSL_GUARDED_BY(mu) = false;
  int starts ABSL_GUARDED_BY(mu) = 0;
  int stops ABSL_GUARDED_BY(mu) = 0;
  int busy ABSL_GUARDED_BY(mu) = 0;    // this many Send calls answer kBusy
  int misuse ABSL_GUARDED_BY(mu) = 0;  // calls while not started
  std::vector<std::vector<uint8_t>> sent ABSL_GUARDED_BY(mu);
  std::vector<uint16_t> sent_queue ABSL_GUARDED_BY(mu);
  std::map<uint16_t, std::deque<std::vector<uint8_t>>> inbound ABSL_GUARDED_BY(mu);
  std::vector<bool> paused ABSL_GUARDED_BY(mu);
  int pause_calls ABSL_GUARDED_BY(mu) = 0;
  int resume_calls ABSL_GUARDED_BY(mu) = 0;
  std::vector<bool> guest_csum ABSL_GUARDED_BY(mu);  // SetGuestCsum calls, in order
  // Runs on the loop thread after every frame Receive hands out.
  std::function<void()> on_receive ABSL_GUARDED_BY(mu);
  net::BackendEvents events ABSL_GUARDED_BY(mu);

  std::vector<std::vector<uint8_t>> Sent() {
    absl::MutexLock l(&mu);
    return sent;
  }
  void Queue(uint16_t q, std::vector<uint8_t> frame) {
    absl::MutexLock l(&mu);
    inbound[q].push_back(std::move(frame));
  }
  size_t Inbound(uint16_t q) {
    absl::MutexLock l(&mu);
    return inbound[q].size();
  }
  void SetBusy(int n) {
    absl::MutexLock l(&mu);
    busy = n;
  }
  bool Paused(uint16_t q) {
    absl::MutexLock l(&mu);
    return paused[q];
  }
  net::BackendEvents Events() {
    absl::MutexLock l(&mu);
    return events;
  }
};

class FakeBackend : public net::NetBackend {
 public:
  explicit FakeBackend(std::shared_ptr<FakeState> s) : s_(std::move(s)) {}

  std::string_view kind() const override { return "fake"; }
  bool vnet_hdr() const override { return s_->vnet; }
  uint16_t queue_pairs() const override { return s_->pairs; }
  std::string Describe() const override {
    absl::MutexLock l(&s_->mu);
    return absl::StrFormat("fake %s sent=%u", s_->name, s_->sent.size());
  }
  absl::Status Start(EventLoop* loop, net::BackendEvents events) override {
    EXPECT_TRUE(loop->InLoopThread());
    absl::MutexLock l(&s_->mu);
    ++s_->starts;
    s_->log->Add(s_->name + " start");
    if (!s_->start_result.ok()) return s_->start_result;
    s_->started = true;
    s_->events = std::move(events);
    return absl::OkStatus();
  }
  void Stop() override {
    absl::MutexLock l(&s_->mu);
    if (!s_->started) return;
    s_->started = false;
    ++s_->stops;
    s_->events = {};
    s_->log->Add(s_->name + " stop");
  }
  net::SendResult Send(uint16_t queue, std::span<const iovec> frame) override {
    absl::MutexLock l(&s_->mu);
    if (!s_->started) ++s_->misuse;
    if (s_->busy > 0) {
      --s_->busy;
      return net::SendResult::kBusy;
    }
    std::vector<uint8_t> bytes;
    for (const iovec& v : frame) {
      const auto* p = static_cast<const uint8_t*>(v.iov_base);
      bytes.insert(bytes.end(), p, p + v.iov_len);
    }
    // Frames carry a tag byte right after the Ethernet header.
    const size_t tag_at = (s_->vnet ? kNetHdrSize : 0) + 14;
    s_->log->Add(
        absl::StrFormat("%s send %d", s_->name, bytes.size() > tag_at ? bytes[tag_at] : -1));
    s_->sent.push_back(std::move(bytes));
    s_->sent_queue.push_back(queue);
    return net::SendResult::kSent;
  }
  absl::StatusOr<size_t> Receive(uint16_t queue, std::span<uint8_t> buf) override {
    std::function<void()> hook;
    size_t len = 0;
    {
      absl::MutexLock l(&s_->mu);
      if (!s_->started) ++s_->misuse;
      EXPECT_GE(buf.size(), net::kMaxFrameSize + net::kVnetHdrSize);
      auto& q = s_->inbound[queue];
      if (q.empty()) return 0;
      std::vector<uint8_t> f = std::move(q.front());
      q.pop_front();
      std::memcpy(buf.data(), f.data(), f.size());
      len = f.size();
      hook = s_->on_receive;
    }
    if (hook) hook();
    return len;
  }
  void PauseRx(uint16_t queue) override {
    absl::MutexLock l(&s_->mu);
    s_->paused[queue] = true;
    ++s_->pause_calls;
  }
  void ResumeRx(uint16_t queue) override {
    absl::MutexLock l(&s_->mu);
    s_->paused[queue] = false;
    ++s_->resume_calls;
  }
  absl::Status SetGuestCsum(bool accepted) override {
    absl::MutexLock l(&s_->mu);
    if (!s_->started) ++s_->misuse;
    s_->guest_csum.push_back(accepted);
    return absl::OkStatus();
  }

 private:
  std::shared_ptr<FakeState> s_;
};

class FakeInterrupts : public Interrupts {
 public:
  void SignalUsed(uint16_t index) override {
    absl::MutexLock l(&mu_);
    ++used_[index];
  }
  // Records the link state the driver would read in response.
  void SignalConfigChange() override {
    const bool up = probe_ ? probe_() : false;
    absl::MutexLock l(&mu_);
    config_links_.push_back(up);
  }
  void NeedsReset(const std::string& why) override {
    absl::MutexLock l(&mu_);
    resets_.push_back(why);
  }
  void set_probe(std::function<bool()> probe) { probe_ = std::move(probe); }
  int used(uint16_t index) {
    absl::MutexLock l(&mu_);
    return used_[index];
  }
  std::vector<bool> config_links() {
    absl::MutexLock l(&mu_);
    return config_links_;
  }
  std::vector<std::string> resets() {
    absl::MutexLock l(&mu_);
    return resets_;
  }

 private:
  std::function<bool()> probe_;
  absl::Mutex mu_;
  std::map<uint16_t, int> used_;
  std::vector<bool> config_links_;
  std::vector<std::string> resets_;
};

struct Buf {
  uint64_t gpa;
  uint32_t len;
  bool writable;
};

// One virtqueue as the test driver sees it.
struct Ring {
  uint16_t index = 0;
  uint64_t desc = 0, avail = 0, used = 0;
  std::optional<SplitQueue> queue;
  UniqueFd notify;
  uint16_t next_desc = 0;
  uint16_t avail_idx = 0;
};

// A test Ethernet frame: addresses, IPv4 ethertype, then `tag` and a pattern.
std::vector<uint8_t> Frame(size_t len, uint8_t tag) {
  std::vector<uint8_t> f(len);
  for (size_t i = 0; i < len; ++i) f[i] = static_cast<uint8_t>(i * 7 + tag * 13 + (i >> 8));
  const uint8_t head[14] = {0x52, 0x54, 0, 0x12, 0x34, 0x56, 0x52, 0x54, 0, 0xab, 0xcd, 0xef, 8, 0};
  std::memcpy(f.data(), head, std::min<size_t>(len, 14));
  if (len > 14) f[14] = tag;
  return f;
}

// Frame() sent to `dst` instead of the NIC's address.
std::vector<uint8_t> FrameTo(const std::array<uint8_t, 6>& dst, size_t len, uint8_t tag) {
  std::vector<uint8_t> f = Frame(len, tag);
  std::memcpy(f.data(), dst.data(), 6);
  return f;
}

std::vector<uint8_t> Hdr(uint8_t flags = 0, uint8_t gso = 0, uint16_t csum_start = 0,
                         uint16_t csum_offset = 0, uint16_t num_buffers = 0) {
  std::vector<uint8_t> h(kNetHdrSize, 0);
  h[0] = flags;
  h[1] = gso;
  std::memcpy(&h[6], &csum_start, 2);
  std::memcpy(&h[8], &csum_offset, 2);
  std::memcpy(&h[10], &num_buffers, 2);
  return h;
}

std::vector<uint8_t> Cat(std::vector<uint8_t> a, const std::vector<uint8_t>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

// The Internet checksum over `bytes`, computed independently of the device.
uint16_t Fold(uint32_t sum) {
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return static_cast<uint16_t>(sum);
}
uint32_t SumBytes(const uint8_t* p, size_t n) {
  uint32_t sum = 0;
  for (size_t i = 0; i + 1 < n; i += 2) sum += (uint32_t{p[i]} << 8) | p[i + 1];
  if (n % 2) sum += uint32_t{p[n - 1]} << 8;
  return sum;
}

// An Ethernet + IPv4 + UDP frame with an odd-length payload, its checksum
// field holding the pseudo-header sum (what a driver leaves for
// NEEDS_CSUM), csum_start 34 and csum_offset 6.
constexpr uint16_t kUdpCsumStart = 34, kUdpCsumOffset = 6;
std::vector<uint8_t> UdpFrame() {
  const size_t payload = 37;
  const uint16_t udp_len = 8 + payload;
  std::vector<uint8_t> f = Frame(14 + 20 + udp_len, 9);
  uint8_t* ip = f.data() + 14;
  const uint8_t iph[20] = {
      0x45, 0, 0, static_cast<uint8_t>(20 + udp_len), 0, 1, 0x40, 0, 64, 17, 0, 0, 10, 0, 0, 2, 10,
      0,    0, 1};
  std::memcpy(ip, iph, 20);
  uint8_t* udp = ip + 20;
  udp[0] = 0x04, udp[1] = 0xd2, udp[2] = 0x1e, udp[3] = 0x61;
  udp[4] = static_cast<uint8_t>(udp_len >> 8), udp[5] = static_cast<uint8_t>(udp_len);
  // Pseudo-header: source, destination, zero + protocol, UDP length.
  uint32_t pseudo = SumBytes(ip + 12, 8) + 17 + udp_len;
  const uint16_t seed = Fold(pseudo);
  udp[6] = static_cast<uint8_t>(seed >> 8), udp[7] = static_cast<uint8_t>(seed);
  return f;
}
// True when the UDP checksum in `f` (Ethernet frame) verifies.
bool UdpChecksumValid(const std::vector<uint8_t>& f) {
  const uint8_t* ip = f.data() + 14;
  const uint8_t* udp = ip + 20;
  const uint16_t udp_len = static_cast<uint16_t>((udp[4] << 8) | udp[5]);
  if (udp[6] == 0 && udp[7] == 0) return false;  // "no checksum" is not a result
  const uint32_t sum = SumBytes(ip + 12, 8) + 17 + udp_len + SumBytes(udp, udp_len);
  return Fold(sum) == 0xffff;
}

class VirtioNetTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto mem = GuestMemory::Create({{0, 16 * kMiB}});
    ASSERT_TRUE(mem.ok()) << mem.status();
    mem_ = std::move(*mem);
    auto loop = EventLoop::Create("flint-net-test");
    ASSERT_TRUE(loop.ok()) << loop.status();
    loop_ = std::move(*loop);
    log_ = std::make_shared<Log>();
    irq_.set_probe([this] { return net_->link_up(); });
  }

  void TearDown() override {
    if (net_ != nullptr) loop_->RunSync([&] { net_->Reset(); });
    net_.reset();
    loop_.reset();
  }

  std::unique_ptr<FakeBackend> Backend(std::shared_ptr<FakeState>* state, const std::string& name,
                                       bool vnet = false, uint16_t pairs = 1) {
    *state = std::make_shared<FakeState>(name, vnet, pairs, log_);
    return std::make_unique<FakeBackend>(*state);
  }

  // Creates the device on backend A.
  void MakeDevice(NicConfig config = {}, bool vnet = false, uint16_t pairs = 1) {
    if (config.mac == std::array<uint8_t, 6>{}) config.mac = kMac;
    auto net = VirtioNet::Create(config, Backend(&a_, "A", vnet, pairs));
    ASSERT_TRUE(net.ok()) << net.status();
    net_ = std::move(*net);
  }

  // DRIVER_OK with fresh rings for `queues` and the given features (all
  // offered ones by default).
  void Activate(std::optional<uint64_t> features = std::nullopt,
                std::vector<uint16_t> queues = {0, 1, 2}) {
    const uint64_t f = features.value_or(net_->features()) | kFeatureVersion1;
    rings_.clear();
    ActivateContext ctx;
    ctx.memory = &mem_;
    ctx.loop = loop_.get();
    ctx.interrupts = &irq_;
    ctx.features = f;
    for (uint16_t i : queues) {
      auto r = std::make_unique<Ring>();
      r->index = i;
      r->desc = kRingBase + kRingStride * i;
      r->avail = r->desc + 0x400;
      r->used = r->desc + 0x800;
      ASSERT_TRUE(mem_.Fill(r->desc, 0, kRingStride).ok());
      auto q = SplitQueue::Create(
          mem_, {.size = kQueueSize, .desc = r->desc, .avail = r->avail, .used = r->used},
          f & (kFeatureVersion1 | kFeatureEventIdx | kFeatureIndirectDesc));
      ASSERT_TRUE(q.ok()) << q.status();
      r->queue.emplace(std::move(*q));
      r->notify.reset(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
      ASSERT_TRUE(r->notify.valid());
      ctx.queues.push_back(
          ActiveQueue{.index = i, .queue = &*r->queue, .notify_fd = r->notify.get()});
      rings_[i] = std::move(r);
    }
    absl::Status s;
    loop_->RunSync([&] { s = net_->Activate(ctx); });
    ASSERT_TRUE(s.ok()) << s;
  }

  void DeviceReset() {
    loop_->RunSync([&] { net_->Reset(); });
  }

  Ring& R(uint16_t index) { return *rings_.at(index); }

  uint64_t Alloc(uint64_t len) {
    next_buf_ = (next_buf_ + 15) / 16 * 16;
    const uint64_t gpa = next_buf_;
    next_buf_ += len;
    return gpa;
  }
  uint64_t Put(const std::vector<uint8_t>& bytes) {
    const uint64_t gpa = Alloc(bytes.size());
    EXPECT_TRUE(mem_.Write(gpa, bytes.data(), bytes.size()).ok());
    return gpa;
  }
  std::vector<uint8_t> GuestBytes(uint64_t gpa, size_t n) {
    std::vector<uint8_t> v(n);
    EXPECT_TRUE(mem_.Read(gpa, v.data(), n).ok());
    return v;
  }

  // Writes the chain's descriptors and publishes it; returns its head.
  uint16_t Add(Ring& r, const std::vector<Buf>& bufs) {
    const uint16_t head = r.next_desc;
    for (size_t i = 0; i < bufs.size(); ++i) {
      const uint16_t d = r.next_desc;
      r.next_desc = static_cast<uint16_t>((r.next_desc + 1) % kQueueSize);
      uint16_t flags = bufs[i].writable ? kWrite : 0;
      if (i + 1 < bufs.size()) flags |= kNext;
      const uint64_t at = r.desc + 16ull * d;
      EXPECT_TRUE(mem_.WriteObj(at, bufs[i].gpa).ok());
      EXPECT_TRUE(mem_.WriteObj(at + 8, bufs[i].len).ok());
      EXPECT_TRUE(mem_.WriteObj(at + 12, flags).ok());
      EXPECT_TRUE(mem_.WriteObj(at + 14, r.next_desc).ok());
    }
    EXPECT_TRUE(
        mem_.WriteObj<uint16_t>(r.avail + 4 + 2ull * (r.avail_idx % kQueueSize), head).ok());
    ++r.avail_idx;
    __atomic_store_n(reinterpret_cast<uint16_t*>(Host(r.avail + 2)), r.avail_idx, __ATOMIC_RELEASE);
    return head;
  }
  // A TX chain: `bytes` (header + frame) in one guest buffer, cut into
  // descriptors at `cuts`.
  uint16_t AddTx(const std::vector<uint8_t>& bytes, std::vector<size_t> cuts = {},
                 uint16_t index = 1) {
    const uint64_t gpa = Put(bytes);
    std::vector<Buf> bufs;
    size_t from = 0;
    cuts.push_back(bytes.size());
    for (size_t c : cuts) {
      bufs.push_back({gpa + from, static_cast<uint32_t>(c - from), false});
      from = c;
    }
    return Add(R(index), bufs);
  }
  struct RxChain {
    uint16_t head;
    std::vector<Buf> bufs;
  };
  RxChain AddRx(std::vector<uint32_t> lens, uint16_t index = 0) {
    RxChain c;
    for (uint32_t len : lens) {
      const uint64_t gpa = Alloc(len);
      EXPECT_TRUE(mem_.Fill(gpa, 0xee, len).ok());
      c.bufs.push_back({gpa, len, true});
    }
    c.head = Add(R(index), c.bufs);
    return c;
  }
  std::vector<uint8_t> ChainBytes(const RxChain& c, size_t n) {
    std::vector<uint8_t> out;
    for (const Buf& b : c.bufs) {
      if (out.size() >= n) break;
      const size_t take = std::min<size_t>(b.len, n - out.size());
      std::vector<uint8_t> part = GuestBytes(b.gpa, take);
      out.insert(out.end(), part.begin(), part.end());
    }
    return out;
  }

  uint8_t* Host(uint64_t gpa) { return mem_.Slice(gpa, 2)->data(); }
  void Kick(Ring& r) {
    const uint64_t one = 1;
    ASSERT_EQ(write(r.notify.get(), &one, sizeof(one)), 8);
  }
  uint16_t UsedIdx(Ring& r) {
    return __atomic_load_n(reinterpret_cast<uint16_t*>(Host(r.used + 2)), __ATOMIC_ACQUIRE);
  }
  uint16_t UsedFlags(Ring& r) { return *mem_.ReadObj<uint16_t>(r.used); }
  std::pair<uint32_t, uint32_t> Used(Ring& r, uint16_t i) {
    const uint64_t at = r.used + 4 + 8ull * (i % kQueueSize);
    return {*mem_.ReadObj<uint32_t>(at), *mem_.ReadObj<uint32_t>(at + 4)};
  }

  // Polls `pred` on the loop thread (so it sees device state consistently)
  // until it holds.
  bool WaitFor(const std::function<bool()>& pred) {
    const absl::Time deadline = absl::Now() + kHang;
    while (absl::Now() < deadline) {
      bool ok = false;
      loop_->RunSync([&] { ok = pred(); });
      if (ok) return true;
      absl::SleepFor(absl::Milliseconds(1));
    }
    return false;
  }
  // Waits until the device has taken the kick on `r` and finished handling it.
  void Settle(Ring& r) {
    ASSERT_TRUE(WaitFor([&] {
      pollfd p{.fd = r.notify.get(), .events = POLLIN, .revents = 0};
      return poll(&p, 1, 0) == 0;
    }));
    loop_->RunSync([] {});
  }
  // Runs a backend event on the loop, as the backend would.
  void Fire(const std::shared_ptr<FakeState>& s,
            const std::function<void(const net::BackendEvents&)>& fn) {
    const net::BackendEvents e = s->Events();
    loop_->RunSync([&] { fn(e); });
  }
  void RxReady(const std::shared_ptr<FakeState>& s, uint16_t q = 0) {
    Fire(s, [q](const net::BackendEvents& e) { e.rx_ready(q); });
  }
  std::vector<uint8_t> ConfigBytes() {
    std::vector<uint8_t> c(kNetConfigSize);
    net_->ReadConfig(0, c);
    return c;
  }
  std::string Stats() { return net_->StatsLine(); }
  bool StatsHas(const std::string& s) { return Stats().find(s) != std::string::npos; }

  // One control command: class, command and data readable (data split after
  // its first byte when `split`), then a one-byte ack.
  uint8_t Ctrl(uint8_t cls, uint8_t cmd, const std::vector<uint8_t>& data, bool split = false) {
    Ring& c = R(ctrl_index_);
    const uint64_t ack = Alloc(1);
    EXPECT_TRUE(mem_.Fill(ack, 0xaa, 1).ok());
    const uint64_t head = Put({cls, cmd});
    std::vector<Buf> bufs = {{head, 2, false}};
    if (!data.empty()) {
      const uint64_t d = Put(data);
      if (split && data.size() > 1) {
        bufs.push_back({d, 1, false});
        bufs.push_back({d + 1, static_cast<uint32_t>(data.size() - 1), false});
      } else {
        bufs.push_back({d, static_cast<uint32_t>(data.size()), false});
      }
    }
    bufs.push_back({ack, 1, true});
    const uint16_t want = static_cast<uint16_t>(UsedIdx(c) + 1);
    Add(c, bufs);
    Kick(c);
    EXPECT_TRUE(WaitFor([&] { return UsedIdx(c) == want; }));
    EXPECT_EQ(Used(c, static_cast<uint16_t>(want - 1)).second, 1u);
    return GuestBytes(ack, 1)[0];
  }

  GuestMemory mem_;
  std::unique_ptr<EventLoop> loop_;
  std::shared_ptr<Log> log_;
  FakeInterrupts irq_;
  std::unique_ptr<VirtioNet> net_;
  std::shared_ptr<FakeState> a_;
  std::map<uint16_t, std::unique_ptr<Ring>> rings_;
  uint16_t ctrl_index_ = 2;
  uint64_t next_buf_ = kBuffers;
};

TEST_F(VirtioNetTest, CreateValidatesConfig) {
  std::shared_ptr<FakeState> s;
  auto make = [&](NicConfig c) { return VirtioNet::Create(c, Backend(&s, "X")).status(); };
  NicConfig ok{.mac = kMac};
  EXPECT_TRUE(make(ok).ok());
  EXPECT_NE(make(NicConfig{}).message().find("all zero"), std::string::npos);
  NicConfig multicast = ok;
  multicast.mac[0] = 0x01;
  EXPECT_NE(make(multicast).message().find("multicast"), std::string::npos);
  NicConfig tiny = ok;
  tiny.mtu = 40;
  EXPECT_NE(make(tiny).message().find("mtu=40"), std::string::npos);
  NicConfig many = ok;
  many.queues = kMaxNicQueues + 1;
  EXPECT_FALSE(make(many).ok());
  EXPECT_FALSE(VirtioNet::Create(ok, nullptr).ok());
}

TEST_F(VirtioNetTest, IdentityFeaturesAndConfigSpace) {
  MakeDevice();
  EXPECT_EQ(net_->device_id(), 1);
  EXPECT_EQ(net_->pci_class(), 0x020000u);
  EXPECT_EQ(net_->num_queues(), 3);
  const uint64_t want = kNetFeatureCsum | kNetFeatureGuestCsum | kNetFeatureMtu | kNetFeatureMac |
                        kNetFeatureMrgRxbuf | kNetFeatureStatus | kNetFeatureCtrlVq |
                        kNetFeatureCtrlRx | kNetFeatureCtrlRxExtra | kNetFeatureCtrlMacAddr;
  EXPECT_EQ(net_->features(), want);  // no MQ with one pair, no GSO of any kind
  const std::vector<uint8_t> c = ConfigBytes();
  EXPECT_EQ(std::vector<uint8_t>(c.begin(), c.begin() + 6),
            std::vector<uint8_t>(kMac.begin(), kMac.end()));
  EXPECT_EQ(c[6] | (c[7] << 8), kNetStatusLinkUp);
  EXPECT_EQ(c[8] | (c[9] << 8), 1);
  EXPECT_EQ(c[10] | (c[11] << 8), 1500);  // mtu 0 means 1500
  EXPECT_TRUE(net_->link_up());

  // Queue pairs: the configured count capped by the backend's.
  std::shared_ptr<FakeState> s;
  auto mq = VirtioNet::Create(NicConfig{.mac = kMac, .mtu = 9000, .queues = 4},
                              Backend(&s, "M", false, 2));
  ASSERT_TRUE(mq.ok()) << mq.status();
  EXPECT_EQ((*mq)->max_queue_pairs(), 2);
  EXPECT_EQ((*mq)->num_queues(), 5);
  EXPECT_NE((*mq)->features() & kNetFeatureMq, 0u);
  std::vector<uint8_t> mc(kNetConfigSize);
  (*mq)->ReadConfig(0, mc);
  EXPECT_EQ(mc[8] | (mc[9] << 8), 2);
  EXPECT_EQ(mc[10] | (mc[11] << 8), 9000);
  // Not started before activation.
  absl::MutexLock l(&s->mu);
  EXPECT_EQ(s->starts, 0);
}

TEST_F(VirtioNetTest, TxFrameSplitOverSegmentsReachesBackendByteExact) {
  MakeDevice();
  Activate();
  {
    absl::MutexLock l(&a_->mu);
    EXPECT_EQ(a_->starts, 1);
  }
  const std::vector<uint8_t> frame = Frame(300, 1);
  // Header split 5 + 7, the second piece sharing a descriptor with the
  // frame's start; then a 1-byte descriptor; then the rest.
  AddTx(Cat(Hdr(), frame), {5, 20, 21, 150});
  Kick(R(1));
  ASSERT_TRUE(WaitFor([&] { return UsedIdx(R(1)) == 1; }));
  EXPECT_EQ(Used(R(1), 0).second, 0u);  // the device writes nothing
  ASSERT_EQ(a_->Sent().size(), 1u);
  EXPECT_EQ(a_->Sent()[0], frame);  // no header travels to a backend without one
  EXPECT_GE(irq_.used(1), 1);
  EXPECT_TRUE(StatsHas("tx_frames=1 tx_bytes=300")) << Stats();
  EXPECT_TRUE(irq_.resets().empty());
}

TEST_F(VirtioNetTest, TxToVnetHeaderBackendPassesHeaderUnchanged) {
  MakeDevice({}, /*vnet=*/true);
  Activate();
  const std::vector<uint8_t> frame = UdpFrame();
  const std::vector<uint8_t> hdr = Hdr(kNetHdrFlagNeedsCsum, 0, kUdpCsumStart, kUdpCsumOffset);
  AddTx(Cat(hdr, frame), {12, 40});
  Kick(R(1));
  ASSERT_TRUE(WaitFor([&] { return UsedIdx(R(1)) == 1; }));
  ASSERT_EQ(a_->Sent().size(), 1u);
  // The host kernel finishes the checksum: header and frame as the guest wrote them.
  EXPECT_EQ(a_->Sent()[0], Cat(hdr, frame));
  EXPECT_TRUE(StatsHas("tx_sw_csum=0")) << Stats();
}

TEST_F(VirtioNetTest, TxSoftwareChecksumForBackendWithoutHeader) {
  MakeDevice();
  Activate();
  const std::vector<uint8_t> frame = UdpFrame();
  ASSERT_FALSE(UdpChecksumValid(frame));  // only the pseudo-header sum so far
  const std::vector<uint8_t> bytes =
      Cat(Hdr(kNetHdrFlagNeedsCsum, 0, kUdpCsumStart, kUdpCsumOffset), frame);
  // Cuts at odd offsets inside the summed range, one right in the checksum field.
  const uint64_t gpa_before = next_buf_;
  AddTx(bytes, {12, 12 + 41, 12 + 47, 12 + 60});
  Kick(R(1));
  ASSERT_TRUE(WaitFor([&] { return UsedIdx(R(1)) == 1; }));
  ASSERT_EQ(a_->Sent().size(), 1u);
  const std::vector<uint8_t> sent = a_->Sent()[0];
  ASSERT_EQ(sent.size(), frame.size());
  EXPECT_TRUE(UdpChecksumValid(sent));
  // Everything but the two checksum bytes is the guest's frame.
  std::vector<uint8_t> masked = sent;
  masked[kUdpCsumStart + kUdpCsumOffset] = frame[kUdpCsumStart + kUdpCsumOffset];
  masked[kUdpCsumStart + kUdpCsumOffset + 1] = frame[kUdpCsumStart + kUdpCsumOffset + 1];
  EXPECT_EQ(masked, frame);
  // The guest's buffer was not written.
  EXPECT_EQ(GuestBytes((gpa_before + 15) / 16 * 16, bytes.size()), bytes);
  EXPECT_TRUE(StatsHas("tx_sw_csum=1")) << Stats();

  // A checksum position outside the frame is dropped, not computed.
  AddTx(Cat(Hdr(kNetHdrFlagNeedsCsum, 0, kUdpCsumStart, 200), frame));
  AddTx(Cat(Hdr(kNetHdrFlagNeedsCsum, 0, static_cast<uint16_t>(frame.size()), 0), frame));
  Kick(R(1));
  ASSERT_TRUE(WaitFor([&] { return UsedIdx(R(1)) == 3; }));
  EXPECT_EQ(a_->Sent().size(), 1u);
  EXPECT_TRUE(StatsHas("drop_bad_csum=2")) << Stats();
}

TEST_F(VirtioNetTest, TxBadFramesAreDroppedCountedAndCompleted) {
  MakeDevice();
  Activate();
  AddTx(Cat(Hdr(), Frame(13, 1)));                        // shorter than an Ethernet header
  AddTx(std::vector<uint8_t>(6, 0));                      // shorter than the vnet header
  AddTx(Cat(Hdr(), Frame(1500 + 18 + 1, 2)), {12, 700});  // longer than MTU + 18
  AddTx(Cat(Hdr(0, /*gso TCPV4*/ 1), Frame(100, 3)));     // GSO was not offered
  AddTx(Cat(Hdr(0, 0x80), Frame(100, 4)));                // nor ECN
  AddTx(Cat(Hdr(), Frame(1500 + 18, 5)));                 // exactly the limit: fine
  AddTx(Cat(Hdr(), Frame(14, 6)));                        // the shortest frame: fine
  Kick(R(1));
  ASSERT_TRUE(WaitFor([&] { return UsedIdx(R(1)) == 7; }));
  for (uint16_t i = 0; i < 7; ++i) EXPECT_EQ(Used(R(1), i).second, 0u);
  ASSERT_EQ(a_->Sent().size(), 2u);
  EXPECT_EQ(a_->Sent()[0], Frame(1518, 5));
  EXPECT_EQ(a_->Sent()[1], Frame(14, 6));
  EXPECT_TRUE(StatsHas("drop_short=2 drop_long=1 drop_bad_gso=2 drop_bad_csum=0")) << Stats();
  EXPECT_TRUE(irq_.resets().empty());
}

TEST_F(VirtioNetTest, TxBusyKeepsTheFrameAndRetriesOnTxReady) {
  MakeDevice();
  Activate();
  a_->SetBusy(1000);
  AddTx(Cat(Hdr(), Frame(100, 1)));
  Kick(R(1));
  Settle(R(1));
  EXPECT_TRUE(a_->Sent().empty());
  EXPECT_EQ(UsedIdx(R(1)), 0);  // not completed, not lost
  // The driver is told not to kick while the device waits for the backend.
  EXPECT_EQ(UsedFlags(R(1)) & kUsedNoNotify, kUsedNoNotify);
  // A second frame queues behind the first, even when kicked.
  AddTx(Cat(Hdr(), Frame(100, 2)));
  Kick(R(1));
  Settle(R(1));
  EXPECT_TRUE(a_->Sent().empty());
  EXPECT_EQ(UsedIdx(R(1)), 0);

  a_->SetBusy(0);
  Fire(a_, [](const net::BackendEvents& e) { e.tx_ready(0); });
  ASSERT_TRUE(WaitFor([&] { return UsedIdx(R(1)) == 2; }));
  ASSERT_EQ(a_->Sent().size(), 2u);
  EXPECT_EQ(a_->Sent()[0], Frame(100, 1));
  EXPECT_EQ(a_->Sent()[1], Frame(100, 2));
  EXPECT_EQ(UsedFlags(R(1)) & kUsedNoNotify, 0);  // kicks wanted again
  EXPECT_FALSE(StatsHas("tx_busy=0")) << Stats();
}

TEST_F(VirtioNetTest, RxWithoutMergeableBuffers) {
  MakeDevice();
  Activate(net_->features() & ~kNetFeatureMrgRxbuf);
  // One chain in two descriptors (header and data may be split).
  const RxChain c1 = AddRx({100, 1500});
  const std::vector<uint8_t> f1 = Frame(200, 1);
  a_->Queue(0, f1);
  RxReady(a_);
  ASSERT_TRUE(WaitFor([&] { return UsedIdx(R(0)) == 1; }));
  EXPECT_EQ(Used(R(0), 0), std::make_pair(uint32_t{c1.head}, uint32_t{12 + 200}));
  const std::vector<uint8_t> got = ChainBytes(c1, 212);
  // GUEST_CSUM negotiated and passt-style backend: DATA_VALID; num_buffers 1.
  EXPECT_EQ(std::vector<uint8_t>(got.begin(), got.begin() + 12),
            Hdr(kNetHdrFlagDataValid, 0, 0, 0, 1));
  EXPECT_EQ(std::vector<uint8_t>(got.begin() + 12, got.end()), f1);
  EXPECT_GE(irq_.used(0), 1);

  // A chain too small for the frame: the frame is dropped, the chain kept
  // for the next one.
  const RxChain small = AddRx({100});
  a_->Queue(0, Frame(200, 2));
  a_->Queue(0, Frame(60, 3));
  RxReady(a_);
  ASSERT_TRUE(WaitFor([&] { return UsedIdx(R(0)) == 2; }));
  EXPECT_EQ(Used(R(0), 1), std::make_pair(uint32_t{small.head}, uint32_t{12 + 60}));
  EXPECT_EQ(ChainBytes(small, 72), Cat(Hdr(kNetHdrFlagDataValid, 0, 0, 0, 1), Frame(60, 3)));
  EXPECT_TRUE(StatsHas("rx_frames=2 rx_bytes=260")) << Stats();
  EXPECT_TRUE(StatsHas("drop_no_rx_buffers=1")) << Stats();

  // Longer than MTU + 18 from the backend: dropped; exactly that: delivered.
  const RxChain big = AddRx({1600});
  a_->Queue(0, Frame(1519, 4));
  a_->Queue(0, Frame(1518, 5));
  RxReady(a_);
  ASSERT_TRUE(WaitFor([&] { return UsedIdx(R(0)) == 3; }));
  EXPECT_EQ(Used(R(0), 2), std::make_pair(uint32_t{big.head}, uint32_t{12 + 1518}));
  EXPECT_EQ(ChainBytes(big, 1530), Cat(Hdr(kNetHdrFlagDataValid, 0, 0, 0, 1), Frame(1518, 5)));
  EXPECT_TRUE(StatsHas("drop_short=0 drop_long=1")) << Stats();
}

TEST_F(VirtioNetTest, RxMergeableBuffersSpreadAFrame) {
  MakeDevice();
  Activate(net_->features() & ~kNetFeatureGuestCsum);
  std::vector<RxChain> chains;
  for (int i = 0; i < 4; ++i) chains.push_back(AddRx({1024}));
  const std::vector<uint8_t> big = Frame(1500, 1);
  a_->Queue(0, big);
  a_->Queue(0, Frame(60, 2));
  RxReady(a_);
  ASSERT_TRUE(WaitFor([&] { return UsedIdx(R(0)) == 3; }));
  EXPECT_EQ(Used(R(0), 0), std::make_pair(uint32_t{chains[0].head}, 1024u));
  EXPECT_EQ(Used(R(0), 1), std::make_pair(uint32_t{chains[1].head}, 1512u - 1024u));
  EXPECT_EQ(Used(R(0), 2), std::make_pair(uint32_t{chains[2].head}, 72u));
  // No GUEST_CSUM: flags stay zero. num_buffers counts the chains.
  const std::vector<uint8_t> all =
      Cat(ChainBytes(chains[0], 1024), ChainBytes(chains[1], 1512 - 1024));
  EXPECT_EQ(all, Cat(Hdr(0, 0, 0, 0, 2), big));
  EXPECT_EQ(ChainBytes(chains[2], 72), Cat(Hdr(0, 0, 0, 0, 1), Frame(60, 2)));
}

// Receive buffers made of thousands of two-byte descriptors (an indirect
// table each): frames land byte-exact, and the device lets go of the big
// segment lists once the chains are used (TrimSegments; not observable
// here beyond working).
TEST_F(VirtioNetTest, RxChainsOfThousandsOfTinyDescriptors) {
  MakeDevice();
  Activate((net_->features() & ~kNetFeatureGuestCsum) | kFeatureIndirectDesc);
  constexpr uint32_t kSegs = 1000, kSegLen = 2;
  struct Chain {
    uint16_t head;
    uint64_t data;  // kSegs * kSegLen contiguous bytes, one descriptor per kSegLen
  };
  std::vector<Chain> chains;
  for (int c = 0; c < 3; ++c) {
    const uint64_t data = Alloc(kSegs * kSegLen);
    const uint64_t table = Alloc(16ull * kSegs);
    for (uint32_t i = 0; i < kSegs; ++i) {
      const uint64_t at = table + 16ull * i;
      const uint16_t flags = kWrite | (i + 1 < kSegs ? kNext : 0);
      ASSERT_TRUE(mem_.WriteObj(at, data + kSegLen * i).ok());
      ASSERT_TRUE(mem_.WriteObj(at + 8, kSegLen).ok());
      ASSERT_TRUE(mem_.WriteObj(at + 12, flags).ok());
      ASSERT_TRUE(mem_.WriteObj<uint16_t>(at + 14, static_cast<uint16_t>(i + 1)).ok());
    }
    Ring& r = R(0);
    const uint16_t d = r.next_desc;
    r.next_desc = static_cast<uint16_t>((d + 1) % kQueueSize);
    const uint64_t at = r.desc + 16ull * d;
    ASSERT_TRUE(mem_.WriteObj(at, table).ok());
    ASSERT_TRUE(mem_.WriteObj<uint32_t>(at + 8, 16 * kSegs).ok());
    ASSERT_TRUE(mem_.WriteObj<uint16_t>(at + 12, kIndirect).ok());
    ASSERT_TRUE(mem_.WriteObj<uint16_t>(at + 14, 0).ok());
    ASSERT_TRUE(mem_.WriteObj<uint16_t>(r.avail + 4 + 2ull * (r.avail_idx % kQueueSize), d).ok());
    ++r.avail_idx;
    __atomic_store_n(reinterpret_cast<uint16_t*>(Host(r.avail + 2)), r.avail_idx,
                     __ATOMIC_RELEASE);
    chains.push_back({d, data});
  }
  // 1500 bytes: one chain (2000 bytes) each.
  a_->Queue(0, Frame(1500, 1));
  a_->Queue(0, Frame(1500, 2));
  RxReady(a_);
  ASSERT_TRUE(WaitFor([&] { return UsedIdx(R(0)) == 2; }));
  for (int i = 0; i < 2; ++i) {
    EXPECT_EQ(Used(R(0), i), std::make_pair(uint32_t{chains[i].head}, 1512u));
    EXPECT_EQ(GuestBytes(chains[i].data, 1512),
              Cat(Hdr(0, 0, 0, 0, 1), Frame(1500, static_cast<uint8_t>(i + 1))));
  }
  EXPECT_TRUE(irq_.resets().empty());
}

TEST_F(VirtioNetTest, RxVnetHeaderBackendPartialChecksumIsFinishedForTheGuest) {
  MakeDevice({}, /*vnet=*/true);
  Activate(net_->features() & ~kNetFeatureGuestCsum);
  const RxChain c = AddRx({2048});
  AddRx({2048});
  const std::vector<uint8_t> frame = UdpFrame();
  a_->Queue(0, Cat(Hdr(kNetHdrFlagNeedsCsum, 0, kUdpCsumStart, kUdpCsumOffset), frame));
  a_->Queue(0, Cat(Hdr(0, /*gso UDP*/ 3), Frame(100, 1)));  // GSO to a guest that has none
  RxReady(a_);
  ASSERT_TRUE(WaitFor([&] { return UsedIdx(R(0)) == 1; }));
  const std::vector<uint8_t> got = ChainBytes(c, 12 + frame.size());
  EXPECT_EQ(got[0], 0);  // flags cleared: the checksum is complete now
  EXPECT_EQ(got[10] | (got[11] << 8), 1);
  EXPECT_TRUE(UdpChecksumValid(std::vector<uint8_t>(got.begin() + 12, got.end())));
  ASSERT_TRUE(WaitFor([&] { return a_->Inbound(0) == 0; }));
  EXPECT_TRUE(StatsHas("drop_bad_gso=1")) << Stats();
}

// The backend learns whether the driver takes partial checksums (a TAP
// then lets the host kernel leave them to the guest): at every activation
// and at a swap.
TEST_F(VirtioNetTest, BackendIsToldWhetherTheGuestAcceptsPartialChecksums) {
  MakeDevice({}, /*vnet=*/true);
  Activate();
  DeviceReset();
  Activate(net_->features() & ~kNetFeatureGuestCsum);
  {
    absl::MutexLock l(&a_->mu);
    EXPECT_EQ(a_->guest_csum, (std::vector<bool>{true, false}));
  }
  DeviceReset();
  Activate();
  std::shared_ptr<FakeState> b;
  ASSERT_TRUE(net_->SwapBackend(Backend(&b, "B", /*vnet=*/true)).ok());
  absl::MutexLock l(&b->mu);
  EXPECT_EQ(b->guest_csum, std::vector<bool>{true});
  EXPECT_EQ(b->misuse, 0);
}

TEST_F(VirtioNetTest, RxWithoutBuffersPausesTheBackendUntilTheDriverAddsSome) {
  MakeDevice();
  Activate();
  a_->Queue(0, Frame(80, 1));
  RxReady(a_);
  EXPECT_TRUE(a_->Paused(0));
  EXPECT_EQ(a_->Inbound(0), 1u);  // still in the backend, not dropped
  EXPECT_EQ(UsedIdx(R(0)), 0);

  const RxChain c = AddRx({2048});
  Kick(R(0));
  ASSERT_TRUE(WaitFor([&] { return UsedIdx(R(0)) == 1; }));
  EXPECT_EQ(a_->Inbound(0), 0u);
  EXPECT_EQ(ChainBytes(c, 92), Cat(Hdr(kNetHdrFlagDataValid, 0, 0, 0, 1), Frame(80, 1)));
  {
    // Paused at activation (no buffers), resumed by the kick, paused again
    // once the one buffer was used.
    absl::MutexLock l(&a_->mu);
    EXPECT_EQ(a_->pause_calls, 2);
    EXPECT_EQ(a_->resume_calls, 1);
  }
  EXPECT_TRUE(a_->Paused(0));
  EXPECT_TRUE(StatsHas("drop_no_rx_buffers=0")) << Stats();
}

// A backend that always has frames and a driver that hands a buffer back
// for every frame it gets (another vCPU refilling as fast as the device
// fills): one callback moves a burst, then yields the loop and carries on.
TEST_F(VirtioNetTest, RxFloodWithARefillingDriverYieldsTheLoop) {
  MakeDevice();
  Activate();
  constexpr int kFrames = 3 * kNetBurst + 10;
  for (int i = 0; i < 4; ++i) AddRx({2048});
  for (int i = 0; i < kFrames; ++i) a_->Queue(0, Frame(60, static_cast<uint8_t>(i)));
  {
    absl::MutexLock l(&a_->mu);
    a_->on_receive = [this] { AddRx({2048}); };  // runs on the loop thread
  }
  size_t left = 0;
  Fire(a_, [&](const net::BackendEvents& e) {
    e.rx_ready(0);
    left = a_->Inbound(0);  // still inside the one loop callback
  });
  EXPECT_EQ(kFrames - left, kNetBurst);
  ASSERT_TRUE(WaitFor([&] { return a_->Inbound(0) == 0; }));
  ASSERT_TRUE(WaitFor([&] { return UsedIdx(R(0)) == static_cast<uint16_t>(kFrames); }));
  EXPECT_TRUE(StatsHas(absl::StrFormat("rx_frames=%d ", kFrames))) << Stats();
  EXPECT_TRUE(StatsHas("drop_no_rx_buffers=0")) << Stats();
  absl::MutexLock l(&a_->mu);
  a_->on_receive = nullptr;
}

TEST_F(VirtioNetTest, ControlQueueCommands) {
  MakeDevice();
  Activate();
  const std::vector<uint8_t> mac = {0x02, 0x11, 0x22, 0x33, 0x44, 0x55};
  EXPECT_EQ(Ctrl(kNetCtrlClassMac, kNetCtrlMacAddrSet, mac, /*split=*/true), kNetCtrlOk);
  std::vector<uint8_t> c = ConfigBytes();
  EXPECT_EQ(std::vector<uint8_t>(c.begin(), c.begin() + 6), mac);
  EXPECT_EQ(Ctrl(kNetCtrlClassMac, kNetCtrlMacAddrSet, {1, 2, 3, 4, 5}), kNetCtrlErr);
  EXPECT_EQ(Ctrl(kNetCtrlClassMac, kNetCtrlMacAddrSet, {0x01, 0, 0x5e, 0, 0, 1}), kNetCtrlErr);
  EXPECT_EQ(Ctrl(kNetCtrlClassMac, kNetCtrlMacAddrSet, {0, 0, 0, 0, 0, 0}), kNetCtrlErr);

  EXPECT_EQ(Ctrl(kNetCtrlClassRx, kNetCtrlRxPromisc, {1}), kNetCtrlOk);
  EXPECT_EQ(Ctrl(kNetCtrlClassRx, kNetCtrlRxAllmulti, {1}), kNetCtrlOk);
  EXPECT_EQ(Ctrl(kNetCtrlClassRx, kNetCtrlRxAllmulti, {0}), kNetCtrlOk);
  EXPECT_EQ(Ctrl(kNetCtrlClassRx, kNetCtrlRxNobcast, {1}), kNetCtrlOk);
  EXPECT_EQ(Ctrl(kNetCtrlClassRx, kNetCtrlRxPromisc, {1, 1}), kNetCtrlErr);
  EXPECT_EQ(Ctrl(kNetCtrlClassRx, 6, {1}), kNetCtrlErr);
  EXPECT_TRUE(StatsHas("rx_mode=promisc,nobcast")) << Stats();

  // MAC table: 1 unicast entry, 2 multicast entries.
  std::vector<uint8_t> table = {1, 0, 0, 0};
  table.insert(table.end(), mac.begin(), mac.end());
  table.insert(table.end(), {2, 0, 0, 0});
  for (int i = 0; i < 2; ++i) table.insert(table.end(), {0x01, 0, 0x5e, 0, 0, uint8_t(i)});
  EXPECT_EQ(Ctrl(kNetCtrlClassMac, kNetCtrlMacTableSet, table, true), kNetCtrlOk);
  EXPECT_TRUE(StatsHas("mac_table=1/2")) << Stats();
  std::vector<uint8_t> lying = table;
  lying[0] = 9;  // more entries than bytes
  EXPECT_EQ(Ctrl(kNetCtrlClassMac, kNetCtrlMacTableSet, lying), kNetCtrlErr);
  std::vector<uint8_t> trailing = table;
  trailing.push_back(0);
  EXPECT_EQ(Ctrl(kNetCtrlClassMac, kNetCtrlMacTableSet, trailing), kNetCtrlErr);

  // MQ was not offered (one pair); unknown classes and bare headers fail.
  EXPECT_EQ(Ctrl(kNetCtrlClassMq, kNetCtrlMqVqPairsSet, {1, 0}), kNetCtrlErr);
  EXPECT_EQ(Ctrl(9, 0, {}), kNetCtrlErr);
  EXPECT_EQ(Ctrl(kNetCtrlClassMac, 7, mac), kNetCtrlErr);
  EXPECT_TRUE(irq_.resets().empty());

  // A reset gives the next driver the configured address again.
  DeviceReset();
  c = ConfigBytes();
  EXPECT_EQ(std::vector<uint8_t>(c.begin(), c.begin() + 6),
            std::vector<uint8_t>(kMac.begin(), kMac.end()));
}

TEST_F(VirtioNetTest, RxFilterDeliversOnlyWhatTheDriverAskedFor) {
  MakeDevice();
  Activate();
  const std::array<uint8_t, 6> other = {0x52, 0x54, 0, 0xaa, 0xbb, 0xcc};
  const std::array<uint8_t, 6> bcast = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
  const std::array<uint8_t, 6> group = {0x01, 0x00, 0x5e, 0x00, 0x00, 0xfb};
  uint16_t used = 0;
  std::vector<RxChain> chains;  // a filtered frame leaves its chain for the next one
  // Queues `frames`, lets the device serve them, returns the tags delivered.
  auto deliver = [&](const std::vector<std::vector<uint8_t>>& frames) {
    for (size_t i = 0; i < frames.size(); ++i) chains.push_back(AddRx({2048}));
    for (const auto& f : frames) a_->Queue(0, f);
    RxReady(a_);
    EXPECT_TRUE(WaitFor([&] { return a_->Inbound(0) == 0; }));
    loop_->RunSync([] {});  // the last frame taken is delivered (or dropped) by now
    std::vector<uint8_t> tags;
    for (uint16_t i = used; i < UsedIdx(R(0)); ++i) {
      const auto [head, len] = Used(R(0), i);
      for (const RxChain& c : chains) {
        if (c.head == head) tags.push_back(ChainBytes(c, len)[12 + 14]);
      }
    }
    used = UsedIdx(R(0));
    return tags;
  };
  using Tags = std::vector<uint8_t>;

  // Reset state: promiscuous, so a driver that never configures gets everything.
  EXPECT_EQ(deliver({FrameTo(other, 60, 1), FrameTo(group, 60, 2)}), (Tags{1, 2}));
  EXPECT_TRUE(StatsHas("drop_filtered=0")) << Stats();

  EXPECT_EQ(Ctrl(kNetCtrlClassRx, kNetCtrlRxPromisc, {0}), kNetCtrlOk);
  EXPECT_EQ(deliver({FrameTo(other, 60, 3), FrameTo(kMac, 60, 4), FrameTo(bcast, 60, 5),
                     FrameTo(group, 60, 6)}),
            (Tags{4, 5}));
  EXPECT_TRUE(StatsHas("drop_filtered=2")) << Stats();

  // The MAC table admits one more unicast and one group address.
  std::vector<uint8_t> table = {1, 0, 0, 0};
  table.insert(table.end(), other.begin(), other.end());
  table.insert(table.end(), {1, 0, 0, 0});
  table.insert(table.end(), group.begin(), group.end());
  EXPECT_EQ(Ctrl(kNetCtrlClassMac, kNetCtrlMacTableSet, table), kNetCtrlOk);
  EXPECT_EQ(deliver({FrameTo(other, 60, 7), FrameTo(group, 60, 8)}), (Tags{7, 8}));
  EXPECT_TRUE(StatsHas("mac_table=1/1")) << Stats();

  // NOBCAST and NOUNI (CTRL_RX_EXTRA); a new own address through MAC_ADDR_SET.
  EXPECT_EQ(Ctrl(kNetCtrlClassRx, kNetCtrlRxNobcast, {1}), kNetCtrlOk);
  EXPECT_EQ(deliver({FrameTo(bcast, 60, 9), FrameTo(kMac, 60, 10)}), (Tags{10}));
  EXPECT_EQ(Ctrl(kNetCtrlClassRx, kNetCtrlRxNouni, {1}), kNetCtrlOk);
  EXPECT_EQ(deliver({FrameTo(kMac, 60, 11), FrameTo(group, 60, 12)}), (Tags{12}));
  EXPECT_EQ(Ctrl(kNetCtrlClassRx, kNetCtrlRxNouni, {0}), kNetCtrlOk);
  const std::array<uint8_t, 6> moved = {0x02, 0x11, 0x22, 0x33, 0x44, 0x55};
  EXPECT_EQ(Ctrl(kNetCtrlClassMac, kNetCtrlMacAddrSet, {moved.begin(), moved.end()}), kNetCtrlOk);
  EXPECT_EQ(deliver({FrameTo(moved, 60, 13), FrameTo(kMac, 60, 14)}), (Tags{13}));
  EXPECT_TRUE(StatsHas("drop_filtered=5")) << Stats();
  EXPECT_TRUE(StatsHas("rx_mode=nobcast mac_table=1/1")) << Stats();

  // A table longer than the filter keeps, its addresses split across
  // descriptors (Ctrl's split: one byte, then the rest): every group
  // address passes, unicast still by address.
  std::vector<uint8_t> big = {0, 0, 0, 0, 70, 0, 0, 0};
  for (int i = 0; i < 70; ++i) big.insert(big.end(), {0x01, 0, 0x5e, 0, 1, uint8_t(i)});
  EXPECT_EQ(Ctrl(kNetCtrlClassMac, kNetCtrlMacTableSet, big, /*split=*/true), kNetCtrlOk);
  EXPECT_TRUE(StatsHas("mac_table=0/overflow")) << Stats();
  EXPECT_EQ(deliver({FrameTo(group, 60, 15), FrameTo(other, 60, 16)}), (Tags{15}));

  // A device reset forgets it all: promiscuous again, and the next driver
  // gets frames for any address until it says otherwise.
  DeviceReset();
  EXPECT_TRUE(StatsHas("rx_mode=promisc mac_table=0/0")) << Stats();
  Activate();
  used = 0;
  chains.clear();
  EXPECT_EQ(deliver({FrameTo(other, 60, 17), FrameTo(kMac, 60, 18)}), (Tags{17, 18}));
}

TEST_F(VirtioNetTest, RxModeCommandsNeedTheirFeatures) {
  MakeDevice();
  // CTRL_RX without CTRL_RX_EXTRA: PROMISC and ALLMULTI only.
  Activate(net_->features() & ~kNetFeatureCtrlRxExtra);
  EXPECT_EQ(Ctrl(kNetCtrlClassRx, kNetCtrlRxPromisc, {0}), kNetCtrlOk);
  EXPECT_EQ(Ctrl(kNetCtrlClassRx, kNetCtrlRxAllmulti, {1}), kNetCtrlOk);
  for (uint8_t cmd : {kNetCtrlRxAlluni, kNetCtrlRxNomulti, kNetCtrlRxNouni, kNetCtrlRxNobcast}) {
    EXPECT_EQ(Ctrl(kNetCtrlClassRx, cmd, {1}), kNetCtrlErr) << int{cmd};
  }
  EXPECT_TRUE(StatsHas("rx_mode=allmulti ")) << Stats();
  // Neither: no RX mode, no MAC table, and the device stays promiscuous.
  DeviceReset();
  Activate(net_->features() & ~(kNetFeatureCtrlRx | kNetFeatureCtrlRxExtra));
  EXPECT_EQ(Ctrl(kNetCtrlClassRx, kNetCtrlRxPromisc, {0}), kNetCtrlErr);
  EXPECT_EQ(Ctrl(kNetCtrlClassMac, kNetCtrlMacTableSet, {0, 0, 0, 0, 0, 0, 0, 0}), kNetCtrlErr);
  EXPECT_TRUE(StatsHas("rx_mode=promisc ")) << Stats();
  // MAC_ADDR_SET needs CTRL_MAC_ADDR.
  DeviceReset();
  Activate(net_->features() & ~kNetFeatureCtrlMacAddr);
  EXPECT_EQ(Ctrl(kNetCtrlClassMac, kNetCtrlMacAddrSet, {0x02, 1, 2, 3, 4, 5}), kNetCtrlErr);
}

TEST_F(VirtioNetTest, MultiqueuePairsSetAndTxQueueMapping) {
  MakeDevice(NicConfig{.queues = 2}, false, /*pairs=*/2);
  ctrl_index_ = 4;
  Activate(std::nullopt, {0, 1, 2, 3, 4});
  EXPECT_EQ(Ctrl(kNetCtrlClassMq, kNetCtrlMqVqPairsSet, {3, 0}), kNetCtrlErr);
  EXPECT_EQ(Ctrl(kNetCtrlClassMq, kNetCtrlMqVqPairsSet, {0, 0}), kNetCtrlErr);
  EXPECT_EQ(Ctrl(kNetCtrlClassMq, kNetCtrlMqVqPairsSet, {2, 0}), kNetCtrlOk);
  EXPECT_TRUE(StatsHas("queue_pairs=2/2")) << Stats();
  AddTx(Cat(Hdr(), Frame(64, 7)), {}, /*index=*/3);
  Kick(R(3));
  ASSERT_TRUE(WaitFor([&] { return UsedIdx(R(3)) == 1; }));
  {
    absl::MutexLock l(&a_->mu);
    ASSERT_EQ(a_->sent_queue.size(), 1u);
    EXPECT_EQ(a_->sent_queue[0], 1);
  }
  // Backend queue 1 delivers into rx1 (virtqueue 2).
  const RxChain c = AddRx({2048}, 2);
  a_->Queue(1, Frame(64, 8));
  RxReady(a_, 1);
  ASSERT_TRUE(WaitFor([&] { return UsedIdx(R(2)) == 1; }));
  EXPECT_EQ(ChainBytes(c, 76), Cat(Hdr(kNetHdrFlagDataValid, 0, 0, 0, 1), Frame(64, 8)));

  // The guest uses two pairs: a one-pair backend is refused, the old one kept.
  std::shared_ptr<FakeState> b;
  absl::Status s = net_->SwapBackend(Backend(&b, "B", false, 1));
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  EXPECT_NE(s.message().find("uses 2"), std::string::npos) << s;
  absl::MutexLock l(&b->mu);
  EXPECT_EQ(b->starts, 0);
  EXPECT_NE(net_->BackendDescription().find("fake A"), std::string::npos);
}

TEST_F(VirtioNetTest, MalformedChainsNeedReset) {
  MakeDevice();
  struct Case {
    const char* reason;  // part of the NeedsReset message
    std::function<void()> add_and_kick;
  };
  const std::vector<Case> cases = {
      {"device-writable",
       [&] {
         const uint64_t g = Put(Cat(Hdr(), Frame(60, 1)));
         Add(R(1), {{g, 72, false}, {Alloc(16), 16, true}});
         Kick(R(1));
       }},
      {"ack",
       [&] {
         Add(R(2), {{Put({kNetCtrlClassRx, kNetCtrlRxPromisc, 1}), 3, false}});
         Kick(R(2));
       }},
      {"device-readable",
       [&] {
         Add(R(0), {{Put(std::vector<uint8_t>(64, 0)), 64, false}});
         a_->Queue(0, Frame(60, 2));
         RxReady(a_);
       }},
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    Activate();
    cases[i].add_and_kick();
    ASSERT_TRUE(WaitFor([&] { return irq_.resets().size() == i + 1; })) << cases[i].reason;
    EXPECT_NE(irq_.resets().back().find(cases[i].reason), std::string::npos)
        << irq_.resets().back();
    // Broken: nothing more is served until the reset.
    AddTx(Cat(Hdr(), Frame(60, 3)));
    Kick(R(1));
    Settle(R(1));
    EXPECT_TRUE(a_->Sent().empty());
    DeviceReset();
  }
}

TEST_F(VirtioNetTest, ResetKeepsTheBackendStartedAndPausesIt) {
  MakeDevice();
  Activate();
  DeviceReset();
  EXPECT_TRUE(a_->Paused(0));
  a_->Queue(0, Frame(60, 1));
  RxReady(a_);  // a late event after the reset touches nothing
  EXPECT_EQ(a_->Inbound(0), 1u);

  Activate();  // fresh rings
  {
    absl::MutexLock l(&a_->mu);
    EXPECT_EQ(a_->starts, 1);
    EXPECT_EQ(a_->stops, 0);
  }
  const RxChain c = AddRx({2048});
  Kick(R(0));
  ASSERT_TRUE(WaitFor([&] { return UsedIdx(R(0)) == 1; }));
  EXPECT_EQ(ChainBytes(c, 72), Cat(Hdr(kNetHdrFlagDataValid, 0, 0, 0, 1), Frame(60, 1)));
  absl::MutexLock l(&a_->mu);
  EXPECT_EQ(a_->resume_calls, 1);
}

TEST_F(VirtioNetTest, BackendFailureTakesTheLinkDownUntilRestored) {
  MakeDevice();
  Activate();
  Fire(a_, [](const net::BackendEvents& e) {
    e.failed(absl::UnavailableError("passt exited"), /*recovering=*/true);
  });
  EXPECT_FALSE(net_->link_up());
  EXPECT_EQ(ConfigBytes()[6], 0);
  EXPECT_EQ(irq_.config_links(), std::vector<bool>{false});
  // TX waits in the ring, RX is paused.
  AddTx(Cat(Hdr(), Frame(60, 1)));
  Kick(R(1));
  Settle(R(1));
  EXPECT_TRUE(a_->Sent().empty());
  EXPECT_EQ(UsedIdx(R(1)), 0);
  AddRx({2048});
  a_->Queue(0, Frame(60, 2));
  RxReady(a_);
  EXPECT_TRUE(a_->Paused(0));
  EXPECT_EQ(UsedIdx(R(0)), 0);

  Fire(a_, [](const net::BackendEvents& e) { e.link_restored(); });
  EXPECT_TRUE(net_->link_up());
  EXPECT_EQ(irq_.config_links(), (std::vector<bool>{false, true}));
  ASSERT_TRUE(WaitFor([&] { return UsedIdx(R(1)) == 1 && UsedIdx(R(0)) == 1; }));
  EXPECT_EQ(a_->Sent(), std::vector<std::vector<uint8_t>>{Frame(60, 1)});
  EXPECT_TRUE(StatsHas("backend_errors=1")) << Stats();
}

TEST_F(VirtioNetTest, SwapBackendMidTraffic) {
  MakeDevice();
  Activate();
  const net::BackendEvents stale = a_->Events();
  std::vector<RxChain> rx;
  for (int i = 0; i < 4; ++i) rx.push_back(AddRx({2048}));

  // Frames 1 and 2 go out on A; A refuses frame 3 for now.
  AddTx(Cat(Hdr(), Frame(100, 1)));
  AddTx(Cat(Hdr(), Frame(100, 2)));
  Kick(R(1));
  ASSERT_TRUE(WaitFor([&] { return UsedIdx(R(1)) == 2; }));
  a_->SetBusy(1000);
  AddTx(Cat(Hdr(), Frame(100, 3)));
  Kick(R(1));
  Settle(R(1));
  EXPECT_EQ(UsedIdx(R(1)), 2);
  // A delivers one frame; B has one waiting before it is even started.
  a_->Queue(0, Frame(70, 0x41));
  RxReady(a_);
  ASSERT_EQ(UsedIdx(R(0)), 1);
  std::shared_ptr<FakeState> b;
  auto backend_b = Backend(&b, "B");
  b->Queue(0, Frame(70, 0x42));

  ASSERT_TRUE(net_->SwapBackend(std::move(backend_b)).ok());
  EXPECT_TRUE(net_->link_up());
  EXPECT_EQ(irq_.config_links(), (std::vector<bool>{false, true}));
  {
    absl::MutexLock la(&a_->mu);
    EXPECT_EQ(a_->stops, 1);
    EXPECT_EQ(a_->misuse, 0);
    absl::MutexLock lb(&b->mu);
    EXPECT_EQ(b->starts, 1);
  }
  // Frame 3 was kept and goes to B; B's waiting frame reached the guest.
  ASSERT_TRUE(WaitFor([&] { return UsedIdx(R(1)) == 3 && UsedIdx(R(0)) == 2; }));
  AddTx(Cat(Hdr(), Frame(100, 4)));
  Kick(R(1));
  ASSERT_TRUE(WaitFor([&] { return UsedIdx(R(1)) == 4; }));

  EXPECT_EQ(a_->Sent(), (std::vector<std::vector<uint8_t>>{Frame(100, 1), Frame(100, 2)}));
  EXPECT_EQ(b->Sent(), (std::vector<std::vector<uint8_t>>{Frame(100, 3), Frame(100, 4)}));
  EXPECT_EQ(log_->Get(), (std::vector<std::string>{"A start", "A send 1", "A send 2", "B start",
                                                   "A stop", "B send 3", "B send 4"}));
  EXPECT_EQ(ChainBytes(rx[0], 82), Cat(Hdr(kNetHdrFlagDataValid, 0, 0, 0, 1), Frame(70, 0x41)));
  EXPECT_EQ(ChainBytes(rx[1], 82), Cat(Hdr(kNetHdrFlagDataValid, 0, 0, 0, 1), Frame(70, 0x42)));

  // A's events are dead: a late one from it delivers nothing.
  b->Queue(0, Frame(70, 0x43));
  loop_->RunSync([&] { stale.rx_ready(0); });
  EXPECT_EQ(UsedIdx(R(0)), 2);
  EXPECT_NE(net_->BackendDescription().find("fake B"), std::string::npos);
  EXPECT_TRUE(StatsHas("swaps=1")) << Stats();
  EXPECT_TRUE(irq_.resets().empty());
}

TEST_F(VirtioNetTest, SwapToABackendThatCannotStartKeepsTheOldOne) {
  MakeDevice();
  Activate();
  std::shared_ptr<FakeState> b;
  auto backend_b = Backend(&b, "B");
  {
    absl::MutexLock l(&b->mu);
    b->start_result = absl::UnavailableError("no such tap");
  }
  absl::Status s = net_->SwapBackend(std::move(backend_b));
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(s.message().find("no such tap"), std::string::npos) << s;
  EXPECT_NE(s.message().find("still using fake A"), std::string::npos) << s;
  EXPECT_TRUE(irq_.config_links().empty());  // the guest saw nothing
  EXPECT_TRUE(net_->link_up());
  AddTx(Cat(Hdr(), Frame(60, 1)));
  Kick(R(1));
  ASSERT_TRUE(WaitFor([&] { return UsedIdx(R(1)) == 1; }));
  EXPECT_EQ(a_->Sent().size(), 1u);
  absl::MutexLock l(&a_->mu);
  EXPECT_EQ(a_->stops, 0);
}

TEST_F(VirtioNetTest, SwapBeforeActivationReplacesWithoutStarting) {
  MakeDevice();
  std::shared_ptr<FakeState> b;
  ASSERT_TRUE(net_->SwapBackend(Backend(&b, "B")).ok());
  EXPECT_NE(net_->BackendDescription().find("fake B"), std::string::npos);
  {
    absl::MutexLock l(&b->mu);
    EXPECT_EQ(b->starts, 0);
  }
  Activate();
  AddTx(Cat(Hdr(), Frame(60, 1)));
  Kick(R(1));
  ASSERT_TRUE(WaitFor([&] { return UsedIdx(R(1)) == 1; }));
  EXPECT_EQ(b->Sent().size(), 1u);
  EXPECT_EQ(log_->Get(), (std::vector<std::string>{"B start", "B send 1"}));
  EXPECT_TRUE(irq_.config_links().empty());
}

}  // namespace
}  // namespace flint::virtio
