// The passt backend: the length-prefixed frame codec against a socketpair the
// test controls, and the real passt binary (DHCP, UDP to the host through
// the gateway address, restart after passt dies, giving up, missing binary).
#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <deque>
#include <fstream>
#include <functional>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "net/passt/frame_stream.h"
#include "net/passt/passt_backend.h"
#include "net/passt/process.h"
#include "tests/support/packets.h"
#include "vmm/event_loop.h"
#include "vmm/kvm/unique_fd.h"

namespace flint::net {
namespace {

using testing::Get16;
using testing::Get32;
using testing::Mac;
using testing::ParseUdp;
using testing::Udp;
using testing::Put16;
using testing::UdpFrame;

// Only guards against a hang; never decides a pass.
constexpr absl::Duration kHang = absl::Seconds(30);

// ---------------------------------------------------------------------------
// Frame stream against a socketpair.

struct Pair {
  UniqueFd ours;    // non-blocking, framed by the FrameStream
  UniqueFd theirs;  // the "passt" side, blocking, raw bytes
};

Pair MakePair() {
  int sv[2];
  EXPECT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  Pair p{UniqueFd(sv[0]), UniqueFd(sv[1])};
  EXPECT_EQ(fcntl(p.ours.get(), F_SETFL, O_NONBLOCK), 0);
  return p;
}

std::vector<uint8_t> Pattern(size_t n, uint8_t seed) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<uint8_t>(seed + i * 7 + (i >> 8));
  return v;
}

std::vector<uint8_t> Framed(const std::vector<uint8_t>& frame) {
  const uint32_t len = static_cast<uint32_t>(frame.size());
  std::vector<uint8_t> out(4 + frame.size());
  for (int i = 0; i < 4; ++i) out[i] = static_cast<uint8_t>(len >> (24 - 8 * i));
  std::copy(frame.begin(), frame.end(), out.begin() + 4);
  return out;
}

void WriteAll(int fd, const std::vector<uint8_t>& bytes) {
  size_t off = 0;
  while (off < bytes.size()) {
    ssize_t n = write(fd, bytes.data() + off, bytes.size() - off);
    ASSERT_GT(n, 0) << strerror(errno);
    off += static_cast<size_t>(n);
  }
}

// Reads whatever `fd` holds now (non-blocking).
std::vector<uint8_t> ReadAvailable(int fd) {
  std::vector<uint8_t> out;
  uint8_t buf[65536];
  for (;;) {
    ssize_t n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
    if (n <= 0) break;
    out.insert(out.end(), buf, buf + n);
  }
  return out;
}

TEST(FrameStream, SendsLengthPrefixedFramesFromIovecs) {
  Pair p = MakePair();
  FrameStream s;
  s.Attach(p.ours.get());
  std::vector<uint8_t> a = Pattern(14, 1), b = Pattern(1000, 2), c = Pattern(3, 3);
  iovec iov[3] = {{a.data(), a.size()}, {b.data(), b.size()}, {c.data(), c.size()}};
  auto r = s.Send(iov);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(*r, SendResult::kSent);
  std::vector<uint8_t> whole = a;
  whole.insert(whole.end(), b.begin(), b.end());
  whole.insert(whole.end(), c.begin(), c.end());
  EXPECT_EQ(ReadAvailable(p.theirs.get()), Framed(whole));
  EXPECT_EQ(s.counters().tx_frames, 1u);
  EXPECT_FALSE(s.wants_writable());
}

TEST(FrameStream, EmptyAndOversizedFramesAreDroppedNotWritten) {
  Pair p = MakePair();
  FrameStream s;
  s.Attach(p.ours.get());
  std::vector<uint8_t> big(kMaxStreamFrame + 1);
  iovec too_big = {big.data(), big.size()};
  EXPECT_EQ(*s.Send({&too_big, 1}), SendResult::kSent);
  EXPECT_EQ(*s.Send({}), SendResult::kSent);
  // Lengths that would wrap a size_t sum.
  iovec wrap[2] = {{big.data(), SIZE_MAX}, {big.data(), 2}};
  EXPECT_EQ(*s.Send(wrap), SendResult::kSent);
  EXPECT_EQ(s.counters().tx_dropped, 3u);
  EXPECT_EQ(s.counters().tx_frames, 0u);
  EXPECT_TRUE(ReadAvailable(p.theirs.get()).empty());
}

TEST(FrameStream, PartialWriteKeepsTheTailAndRefusesFramesUntilDrained) {
  Pair p = MakePair();
  int small = 4096;
  ASSERT_EQ(setsockopt(p.ours.get(), SOL_SOCKET, SO_SNDBUF, &small, sizeof(small)), 0);
  FrameStream s;
  s.Attach(p.ours.get());
  // The frame's memory changes after Send returns (as guest memory may): the
  // tail must have been copied.
  std::vector<uint8_t> frame = Pattern(60000, 9);
  const std::vector<uint8_t> expected = Framed(frame);
  iovec iov[2] = {{frame.data(), 30000}, {frame.data() + 30000, 30000}};
  ASSERT_EQ(*s.Send(iov), SendResult::kSent);
  ASSERT_TRUE(s.tail_pending()) << "SO_SNDBUF did not force a partial write";
  std::fill(frame.begin(), frame.end(), 0xee);
  EXPECT_TRUE(s.wants_writable());
  EXPECT_FALSE(s.sender_waiting());

  // While the tail is pending nothing else is taken, however often asked.
  std::vector<uint8_t> next = Pattern(100, 4);
  iovec next_iov = {next.data(), next.size()};
  for (int i = 0; i < 100; ++i) EXPECT_EQ(*s.Send({&next_iov, 1}), SendResult::kBusy);
  EXPECT_TRUE(s.sender_waiting());
  EXPECT_EQ(s.counters().tx_busy, 100u);

  // The peer reads; OnWritable drains the tail and then says "retry".
  std::vector<uint8_t> got;
  bool retry = false;
  for (int round = 0; round < 10000 && !retry; ++round) {
    std::vector<uint8_t> chunk = ReadAvailable(p.theirs.get());
    got.insert(got.end(), chunk.begin(), chunk.end());
    auto w = s.OnWritable();
    ASSERT_TRUE(w.ok()) << w.status();
    retry = *w;
    if (!retry) {
      pollfd pf{p.theirs.get(), POLLIN, 0};
      poll(&pf, 1, 1000);
    }
  }
  ASSERT_TRUE(retry);
  EXPECT_FALSE(s.wants_writable());
  std::vector<uint8_t> rest = ReadAvailable(p.theirs.get());
  got.insert(got.end(), rest.begin(), rest.end());
  EXPECT_EQ(got, expected);  // exactly one frame: none of the refused ones

  ASSERT_EQ(*s.Send({&next_iov, 1}), SendResult::kSent);
  EXPECT_EQ(ReadAvailable(p.theirs.get()), Framed(next));
}

TEST(FrameStream, FullSocketAnswersBusyThenWritableSaysRetry) {
  Pair p = MakePair();
  FrameStream s;
  s.Attach(p.ours.get());
  std::vector<uint8_t> frame = Pattern(1000, 5);
  iovec iov = {frame.data(), frame.size()};
  int sent = 0;
  for (; sent < 100000; ++sent) {
    if (*s.Send({&iov, 1}) == SendResult::kBusy) break;
  }
  ASSERT_LT(sent, 100000) << "the socket never filled up";
  EXPECT_TRUE(s.wants_writable());
  EXPECT_TRUE(s.sender_waiting());
  // Drain the peer: every accepted frame arrives whole, in order.
  std::vector<uint8_t> got;
  bool retry = false;
  while (!retry) {
    std::vector<uint8_t> chunk = ReadAvailable(p.theirs.get());
    got.insert(got.end(), chunk.begin(), chunk.end());
    auto w = s.OnWritable();
    ASSERT_TRUE(w.ok()) << w.status();
    retry = *w;
  }
  std::vector<uint8_t> rest = ReadAvailable(p.theirs.get());
  got.insert(got.end(), rest.begin(), rest.end());
  const std::vector<uint8_t> one = Framed(frame);
  ASSERT_EQ(got.size(), one.size() * sent);
  for (int i = 0; i < sent; ++i) {
    ASSERT_TRUE(std::equal(one.begin(), one.end(), got.begin() + i * one.size())) << i;
  }
}

TEST(FrameStream, SendOnAClosedPeerIsAnError) {
  Pair p = MakePair();
  FrameStream s;
  s.Attach(p.ours.get());
  p.theirs.reset();
  std::vector<uint8_t> frame = Pattern(64, 1);
  iovec iov = {frame.data(), frame.size()};
  // MSG_NOSIGNAL: an error, not SIGPIPE.
  EXPECT_FALSE(s.Send({&iov, 1}).ok());
}

TEST(FrameStream, ParsesFramesSplitAcrossReads) {
  Pair p = MakePair();
  FrameStream s;
  s.Attach(p.ours.get());
  std::vector<uint8_t> f1 = Pattern(60, 1), f2 = Pattern(1514, 2), f3 = Pattern(42, 3);
  std::vector<uint8_t> bytes = Framed(f1);
  for (auto& f : {f2, f3}) {
    std::vector<uint8_t> x = Framed(f);
    bytes.insert(bytes.end(), x.begin(), x.end());
  }
  std::vector<uint8_t> buf(kMaxStreamFrame);
  std::vector<std::vector<uint8_t>> out;
  // Byte ranges that split a length header and a frame body.
  const size_t cuts[] = {2, 5, 64, 70, 900, bytes.size()};
  size_t at = 0;
  for (size_t cut : cuts) {
    WriteAll(p.theirs.get(), std::vector<uint8_t>(bytes.begin() + at, bytes.begin() + cut));
    at = cut;
    auto n = s.Fill();
    ASSERT_TRUE(n.ok()) << n.status();
    for (;;) {
      auto len = s.Next(buf);
      ASSERT_TRUE(len.ok()) << len.status();
      if (*len == 0) break;
      out.emplace_back(buf.begin(), buf.begin() + *len);
    }
  }
  ASSERT_EQ(out.size(), 3u);
  EXPECT_EQ(out[0], f1);
  EXPECT_EQ(out[1], f2);
  EXPECT_EQ(out[2], f3);
  EXPECT_EQ(s.counters().rx_frames, 3u);
}

TEST(FrameStream, FrameLongerThanTheBufferIsDroppedAndCounted) {
  Pair p = MakePair();
  FrameStream s;
  s.Attach(p.ours.get());
  std::vector<uint8_t> big = Pattern(2000, 1), small = Pattern(100, 2);
  std::vector<uint8_t> bytes = Framed(big);
  std::vector<uint8_t> x = Framed(small);
  bytes.insert(bytes.end(), x.begin(), x.end());
  WriteAll(p.theirs.get(), bytes);
  ASSERT_TRUE(s.Fill().ok());
  std::vector<uint8_t> buf(1000);
  auto len = s.Next(buf);
  ASSERT_TRUE(len.ok());
  ASSERT_EQ(*len, small.size());
  EXPECT_TRUE(std::equal(small.begin(), small.end(), buf.begin()));
  EXPECT_EQ(s.counters().rx_dropped, 1u);
  EXPECT_EQ(s.counters().rx_frames, 1u);
}

TEST(FrameStream, MalformedLengthsAreProtocolErrors) {
  for (uint32_t bad : {0u, static_cast<uint32_t>(kMaxStreamFrame + 1), 0xffffffffu}) {
    Pair p = MakePair();
    FrameStream s;
    s.Attach(p.ours.get());
    WriteAll(p.theirs.get(), {static_cast<uint8_t>(bad >> 24), static_cast<uint8_t>(bad >> 16),
                              static_cast<uint8_t>(bad >> 8), static_cast<uint8_t>(bad), 1, 2});
    auto n = s.Fill();
    ASSERT_FALSE(n.ok()) << "length " << bad;
    EXPECT_EQ(n.status().code(), absl::StatusCode::kDataLoss) << n.status();
  }
  // The largest valid length is accepted.
  Pair p = MakePair();
  FrameStream s;
  s.Attach(p.ours.get());
  std::vector<uint8_t> max = Pattern(kMaxStreamFrame, 7);
  std::thread writer([&] { WriteAll(p.theirs.get(), Framed(max)); });
  std::vector<uint8_t> buf(kMaxStreamFrame);
  size_t len = 0;
  while (len == 0) {
    pollfd pf{p.ours.get(), POLLIN, 0};
    poll(&pf, 1, 1000);
    ASSERT_TRUE(s.Fill().ok());
    auto r = s.Next(buf);
    ASSERT_TRUE(r.ok()) << r.status();
    len = *r;
  }
  writer.join();
  EXPECT_EQ(len, kMaxStreamFrame);
  EXPECT_EQ(buf, max);
}

TEST(FrameStream, EndOfStreamIsAnError) {
  Pair p = MakePair();
  FrameStream s;
  s.Attach(p.ours.get());
  p.theirs.reset();
  auto n = s.Fill();
  ASSERT_FALSE(n.ok());
  EXPECT_EQ(n.status().code(), absl::StatusCode::kUnavailable) << n.status();
}

// The receive buffer is bounded: once it is full of frames nobody took, Fill
// reads nothing more and the data stays in the socket (back-pressure on the
// peer); taking frames makes room again, and nothing is lost.
TEST(FrameStream, ReceiveBufferIsBoundedAndLosesNothing) {
  Pair p = MakePair();
  FrameStream s(0);  // raised to the minimum: one largest frame
  s.Attach(p.ours.get());
  constexpr int kFrames = 200;
  std::vector<uint8_t> all;
  for (int i = 0; i < kFrames; ++i) {
    std::vector<uint8_t> f = Framed(Pattern(1400, static_cast<uint8_t>(i)));
    all.insert(all.end(), f.begin(), f.end());
  }
  std::thread writer([&] { WriteAll(p.theirs.get(), all); });
  // Fill until the buffer is full, taking nothing.
  while (s.rx_room()) {
    pollfd pf{p.ours.get(), POLLIN, 0};
    poll(&pf, 1, 1000);
    ASSERT_TRUE(s.Fill().ok());
  }
  EXPECT_EQ(*s.Fill(), 0u);  // full: reads nothing
  std::vector<uint8_t> buf(kMaxStreamFrame);
  int got = 0;
  while (got < kFrames) {
    auto len = s.Next(buf);
    ASSERT_TRUE(len.ok()) << len.status();
    if (*len == 0) {
      pollfd pf{p.ours.get(), POLLIN, 0};
      poll(&pf, 1, 1000);
      ASSERT_TRUE(s.Fill().ok());
      continue;
    }
    ASSERT_EQ(*len, 1400u);
    ASSERT_EQ(std::vector<uint8_t>(buf.begin(), buf.begin() + 1400),
              Pattern(1400, static_cast<uint8_t>(got)))
        << "frame " << got;
    ++got;
  }
  writer.join();
}

// maybe_more() tells the owner whether the socket may hold more than the
// last read took: false after a short read (drained: wait for readiness),
// true when the read filled all the free space.
TEST(FrameStream, MaybeMoreOnlyAfterAReadThatFilledTheBuffer) {
  Pair p = MakePair();
  FrameStream s(0);  // the minimum: one largest frame with its length
  s.Attach(p.ours.get());
  EXPECT_FALSE(s.maybe_more());
  WriteAll(p.theirs.get(), Framed(Pattern(100, 1)));
  ASSERT_EQ(*s.Fill(), 104u);
  EXPECT_FALSE(s.maybe_more());  // a short read: the socket is drained

  // More than the buffer holds: the read fills it and more is waiting.
  std::vector<uint8_t> buf(kMaxStreamFrame);
  ASSERT_EQ(*s.Next(buf), 100u);
  std::vector<uint8_t> many;
  for (int i = 0; i < 60; ++i) {
    std::vector<uint8_t> f = Framed(Pattern(1400, static_cast<uint8_t>(i)));
    many.insert(many.end(), f.begin(), f.end());
  }
  ASSERT_GT(many.size(), kStreamHeaderSize + kMaxStreamFrame);
  WriteAll(p.theirs.get(), many);
  const size_t first = *s.Fill();
  EXPECT_EQ(first, kStreamHeaderSize + kMaxStreamFrame);
  EXPECT_TRUE(s.maybe_more());
  // Take everything, reading again only while maybe_more says so: every
  // frame arrives without asking a drained socket.
  int got = 0;
  size_t reads = 1;
  for (;;) {
    auto len = s.Next(buf);
    ASSERT_TRUE(len.ok());
    if (*len > 0) {
      ASSERT_EQ(std::vector<uint8_t>(buf.begin(), buf.begin() + 1400),
                Pattern(1400, static_cast<uint8_t>(got)));
      ++got;
      continue;
    }
    if (!s.maybe_more()) break;
    ASSERT_GT(*s.Fill(), 0u);
    ++reads;
  }
  EXPECT_EQ(got, 60);
  EXPECT_EQ(reads, 2u);  // one full read, one short one, no third
  EXPECT_FALSE(s.maybe_more());
  EXPECT_TRUE(ReadAvailable(p.ours.get()).empty());
}

// ---------------------------------------------------------------------------
// Packets for the real passt.

constexpr Mac kGuestMac = {0x02, 0x46, 0x4c, 0x4e, 0x54, 0x01};

constexpr uint32_t kXid = 0x464c4e54;

std::vector<uint8_t> DhcpDiscover() {
  std::vector<uint8_t> d(300);
  d[0] = 1;  // BOOTREQUEST
  d[1] = 1;  // Ethernet
  d[2] = 6;
  for (int i = 0; i < 4; ++i) d[4 + i] = static_cast<uint8_t>(kXid >> (24 - 8 * i));
  Put16(d, 10, 0x8000);  // broadcast reply
  std::copy(kGuestMac.begin(), kGuestMac.end(), d.begin() + 28);
  const uint8_t options[] = {0x63, 0x82, 0x53, 0x63,  // magic cookie
                             53, 1, 1,                // DHCPDISCOVER
                             55, 3, 1, 3, 6,          // subnet mask, router, DNS
                             255};
  std::copy(std::begin(options), std::end(options), d.begin() + 236);
  constexpr Mac kBroadcast = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
  return UdpFrame(kGuestMac, kBroadcast, 0, 0xffffffff, 68, 67, d);
}

struct Offer {
  Mac server_mac;
  uint32_t yiaddr = 0;
  uint32_t router = 0;
};

std::optional<Offer> ParseOffer(const std::vector<uint8_t>& frame) {
  auto udp = ParseUdp(frame);
  if (!udp || udp->sport != 67 || udp->dport != 68) return std::nullopt;
  const std::vector<uint8_t>& d = udp->payload;
  if (d.size() < 240 || d[0] != 2 || Get32(d, 4) != kXid || Get32(d, 236) != 0x63825363) {
    return std::nullopt;
  }
  Offer o;
  o.server_mac = udp->src_mac;
  o.yiaddr = Get32(d, 16);
  bool is_offer = false;
  for (size_t i = 240; i < d.size() && d[i] != 255;) {
    if (d[i] == 0) {
      ++i;
      continue;
    }
    if (i + 1 >= d.size() || i + 2 + d[i + 1] > d.size()) break;
    const uint8_t code = d[i], len = d[i + 1];
    if (code == 53 && len == 1) is_offer = d[i + 2] == 2;
    if (code == 3 && len >= 4) o.router = Get32(d, i + 2);
    i += 2 + len;
  }
  if (!is_offer) return std::nullopt;
  return o;
}

std::string Ip(uint32_t a) {
  return absl::StrFormat("%d.%d.%d.%d", a >> 24, (a >> 16) & 255, (a >> 8) & 255, a & 255);
}

// ---------------------------------------------------------------------------
// The real passt, on a real event loop.

class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/flint-passt-XXXXXX";  // 0700, like the VM's state directory
    path_ = mkdtemp(tmpl) != nullptr ? tmpl : "";
  }
  ~TempDir() {
    if (!path_.empty()) {
      std::string cmd = "rm -rf '" + path_ + "'";
      int rc = system(cmd.c_str());
      (void)rc;
    }
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

struct FailedEvent {
  absl::Status why;
  bool recovering;
};

// Runs a PasstBackend the way the device does: events on the loop thread,
// frames taken on rx_ready, everything recorded for the test thread.
class Harness {
 public:
  explicit Harness(NicConfig config = {}) : config_(std::move(config)) {}

  ~Harness() {
    // Stop first: reset() clears backend_ before the destructor runs, while
    // callbacks that use backend_ could still be running on the loop.
    if (backend_ != nullptr) backend_->Stop();
    backend_.reset();
    loop_.reset();
  }

  bool Start() {
    auto loop = EventLoop::Create("passt-test");
    EXPECT_TRUE(loop.ok()) << loop.status();
    if (!loop.ok()) return false;
    loop_ = std::move(*loop);
    EXPECT_FALSE(dir_.path().empty());
    log_ = dir_.path() + "/passt.log";
    auto backend = PasstBackend::Create(config_, log_);
    EXPECT_TRUE(backend.ok()) << backend.status();
    if (!backend.ok()) return false;
    backend_ = std::move(*backend);
    BackendEvents ev;
    ev.rx_ready = [this](uint16_t q) { Drain(q); };
    ev.tx_ready = [this](uint16_t) {
      absl::MutexLock l(&mu_);
      ++tx_ready_;
    };
    ev.failed = [this](const absl::Status& why, bool recovering) {
      absl::MutexLock l(&mu_);
      failures_.push_back({why, recovering});
    };
    ev.link_restored = [this] {
      absl::MutexLock l(&mu_);
      ++restored_;
    };
    absl::Status s = backend_->Start(loop_.get(), std::move(ev));
    EXPECT_TRUE(s.ok()) << s;
    return s.ok();
  }

  SendResult Send(const std::vector<uint8_t>& frame) {
    SendResult r;
    loop_->RunSync([&] {
      iovec iov = {const_cast<uint8_t*>(frame.data()), frame.size()};
      r = backend_->Send(0, {&iov, 1});
    });
    return r;
  }

  // The first received frame that `match` accepts (the others are skipped),
  // or nullopt after kHang.
  template <typename T>
  std::optional<T> WaitFrame(const std::function<std::optional<T>(const std::vector<uint8_t>&)>&
                                 match) {
    absl::MutexLock l(&mu_);
    const absl::Time deadline = absl::Now() + kHang;
    for (;;) {
      while (!frames_.empty()) {
        std::vector<uint8_t> f = std::move(frames_.front());
        frames_.pop_front();
        if (auto m = match(f)) return m;
      }
      if (mu_.AwaitWithDeadline(absl::Condition(this, &Harness::HasFrames), deadline) == false) {
        return std::nullopt;
      }
    }
  }

  std::optional<Offer> Dhcp() {
    EXPECT_EQ(Send(DhcpDiscover()), SendResult::kSent);
    return WaitFrame<Offer>(ParseOffer);
  }

  // Waits until `n` failure events arrived; returns them all.
  std::vector<FailedEvent> WaitFailures(size_t n, absl::Duration hang = kHang) {
    absl::MutexLock l(&mu_);
    auto enough = [this, n] {
      mu_.AssertHeld();
      return failures_.size() >= n;
    };
    mu_.AwaitWithTimeout(absl::Condition(&enough), hang);
    return failures_;
  }
  bool WaitRestored(int n) {
    absl::MutexLock l(&mu_);
    auto enough = [this, n] {
      mu_.AssertHeld();
      return restored_ >= n;
    };
    return mu_.AwaitWithTimeout(absl::Condition(&enough), kHang);
  }

  // On the loop thread, where the backend's counters live.
  std::string Describe() {
    std::string d;
    loop_->RunSync([&] { d = backend_->Describe(); });
    return d;
  }
  PasstBackend* backend() { return backend_.get(); }
  EventLoop* loop() { return loop_.get(); }
  const std::string& log() const { return log_; }
  const std::string& dir() const { return dir_.path(); }

 private:
  bool HasFrames() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return !frames_.empty(); }

  void Drain(uint16_t q) {
    std::vector<uint8_t> buf(kMaxFrameSize + kVnetHdrSize);
    for (;;) {
      auto n = backend_->Receive(q, buf);
      if (!n.ok() || *n == 0) return;
      absl::MutexLock l(&mu_);
      frames_.emplace_back(buf.begin(), buf.begin() + *n);
    }
  }

  NicConfig config_;
  TempDir dir_;
  std::string log_;
  std::unique_ptr<EventLoop> loop_;
  std::unique_ptr<PasstBackend> backend_;
  absl::Mutex mu_;
  std::deque<std::vector<uint8_t>> frames_ ABSL_GUARDED_BY(mu_);
  std::vector<FailedEvent> failures_ ABSL_GUARDED_BY(mu_);
  int restored_ ABSL_GUARDED_BY(mu_) = 0;
  int tx_ready_ ABSL_GUARDED_BY(mu_) = 0;
};

bool PasstInstalled() {
  const char* path = getenv("PATH");
  return FindInPath("passt", path != nullptr ? path : "").ok();
}

#define SKIP_WITHOUT_PASST()                                                        \
  if (!PasstInstalled()) GTEST_SKIP() << "passt is not installed (apt-get install passt)"

// A UDP socket bound to 127.0.0.1 on a free port.
UniqueFd LoopbackUdp(uint16_t* port) {
  UniqueFd fd(socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  EXPECT_EQ(bind(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
  socklen_t len = sizeof(a);
  getsockname(fd.get(), reinterpret_cast<sockaddr*>(&a), &len);
  *port = ntohs(a.sin_port);
  return fd;
}

// Guest → gateway:port reaches 127.0.0.1:port on the host; the host's answer
// comes back as a frame. Returns false (with failures recorded) otherwise.
void ExpectUdpRoundTrip(Harness& h, const Offer& offer, const std::string& tag) {
  uint16_t port = 0;
  UniqueFd server = LoopbackUdp(&port);
  ASSERT_TRUE(server.valid());
  const std::string text = "ping from the guest " + tag;
  std::vector<uint8_t> payload(text.begin(), text.end());
  ASSERT_EQ(h.Send(UdpFrame(kGuestMac, offer.server_mac, offer.yiaddr, offer.router, 40000, port,
                            payload)),
            SendResult::kSent);
  pollfd pf{server.get(), POLLIN, 0};
  ASSERT_EQ(poll(&pf, 1, static_cast<int>(absl::ToInt64Milliseconds(kHang))), 1)
      << "nothing reached 127.0.0.1:" << port;
  char buf[512];
  sockaddr_in from{};
  socklen_t from_len = sizeof(from);
  ssize_t n = recvfrom(server.get(), buf, sizeof(buf), 0, reinterpret_cast<sockaddr*>(&from),
                       &from_len);
  ASSERT_EQ(std::string(buf, n > 0 ? n : 0), text);

  const std::string reply = "pong from the host " + tag;
  ASSERT_EQ(sendto(server.get(), reply.data(), reply.size(), 0,
                   reinterpret_cast<sockaddr*>(&from), from_len),
            static_cast<ssize_t>(reply.size()));
  auto back = h.WaitFrame<Udp>([&](const std::vector<uint8_t>& f) -> std::optional<Udp> {
    auto u = ParseUdp(f);
    if (u && u->dport == 40000 && u->sport == port) return u;
    return std::nullopt;
  });
  ASSERT_TRUE(back.has_value()) << "the host's reply never came back as a frame";
  EXPECT_EQ(std::string(back->payload.begin(), back->payload.end()), reply);
  EXPECT_EQ(back->src_ip, offer.router);
  EXPECT_EQ(back->dst_ip, offer.yiaddr);
}

TEST(PasstBackend, MissingBinaryGivesTheInstallHint) {
  const char* old = getenv("PATH");
  const std::string saved = old != nullptr ? old : "";
  TempDir empty;
  ASSERT_FALSE(empty.path().empty());
  setenv("PATH", empty.path().c_str(), 1);
  auto backend = PasstBackend::Create(NicConfig{}, empty.path() + "/passt.log");
  setenv("PATH", saved.c_str(), 1);
  ASSERT_FALSE(backend.ok());
  EXPECT_EQ(backend.status().message(),
            "passt not found in PATH: install the Debian package 'passt'");
}

TEST(PasstBackend, CreateChecksItsInputs) {
  SKIP_WITHOUT_PASST();
  TempDir dir;
  NicConfig bad_ip;
  bad_ip.ipv4 = "10.0.2";
  EXPECT_FALSE(PasstBackend::Create(bad_ip, dir.path() + "/p.log").ok());
  EXPECT_FALSE(PasstBackend::Create(NicConfig{}, dir.path() + "/missing/p.log").ok());
  NicConfig tap;
  tap.backend = NicConfig::Backend::kTap;
  EXPECT_FALSE(PasstBackend::Create(tap, dir.path() + "/p.log").ok());
  auto ok = PasstBackend::Create(NicConfig{}, dir.path() + "/p.log");
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ((*ok)->pid(), -1);  // nothing runs before Start
  EXPECT_FALSE((*ok)->vnet_hdr());
  EXPECT_EQ((*ok)->queue_pairs(), 1);
  EXPECT_EQ((*ok)->kind(), "passt");
}

TEST(PasstBackend, CommandLine) {
  NicConfig c;
  c.mtu = 9000;
  c.ipv4 = "10.0.2.15";
  c.tcp = {"8080", "2222:22"};
  c.udp = {"5353"};
  EXPECT_EQ(PasstArgs(c, 3, "/run/vm/passt.log"),
            (std::vector<std::string>{"passt", "-f", "-q", "-1", "-F", "3", "-m", "9000", "-a",
                                      "10.0.2.15", "-t", "8080", "-t", "2222:22", "-u", "5353",
                                      "-l", "/run/vm/passt.log"}));
  EXPECT_EQ(PasstArgs(NicConfig{}, 3, "l"),
            (std::vector<std::string>{"passt", "-f", "-q", "-1", "-F", "3", "-m", "1500", "-l",
                                      "l"}));
}

TEST(PasstBackend, DhcpOfferAndUdpThroughTheGateway) {
  SKIP_WITHOUT_PASST();
  Harness h;
  // An fd of flint's without close-on-exec (as an inherited TAP fd would be):
  // passt must not get it.
  const std::string marker = h.dir() + "/marker";
  UniqueFd opened(open(marker.c_str(), O_CREAT | O_RDWR, 0600));
  ASSERT_TRUE(opened.valid());
  // Far from 0..3, which the child's own set-up would overwrite anyway.
  UniqueFd leaky(fcntl(opened.get(), F_DUPFD, 100));
  ASSERT_TRUE(leaky.valid());
  ASSERT_TRUE(h.Start());
  const pid_t pid = h.backend()->pid();
  ASSERT_GT(pid, 0);
  std::vector<std::string> links;
  for (int fd = 0; fd < 1024; ++fd) {
    char link[64], target[4096];
    snprintf(link, sizeof(link), "/proc/%d/fd/%d", pid, fd);
    ssize_t n = readlink(link, target, sizeof(target) - 1);
    links.push_back(n > 0 ? std::string(target, n) : "");
  }
  EXPECT_EQ(links[0], "/dev/null");
  EXPECT_EQ(links[1], "/dev/null");
  EXPECT_EQ(links[2], "/dev/null");
  EXPECT_EQ(links[kPasstChildFd].rfind("socket:", 0), 0u) << links[kPasstChildFd];
  for (size_t fd = 0; fd < links.size(); ++fd) EXPECT_NE(links[fd], marker) << "fd " << fd;

  auto offer = h.Dhcp();
  ASSERT_TRUE(offer.has_value()) << "no DHCPOFFER";
  EXPECT_NE(offer->yiaddr, 0u);
  EXPECT_NE(offer->router, 0u);
  ExpectUdpRoundTrip(h, *offer, "1");
  std::string d = h.Describe();
  EXPECT_NE(d.find(absl::StrFormat("passt pid=%d restarts=0 log=%s", pid, h.log())),
            std::string::npos)
      << d;
  EXPECT_NE(d.find("tx_frames=2"), std::string::npos) << d;
  EXPECT_TRUE(h.WaitFailures(0).empty());
}

TEST(PasstBackend, ConfiguredAddressIsOffered) {
  SKIP_WITHOUT_PASST();
  NicConfig c;
  c.ipv4 = "10.0.2.15";
  Harness h(c);
  ASSERT_TRUE(h.Start());
  auto offer = h.Dhcp();
  ASSERT_TRUE(offer.has_value()) << "no DHCPOFFER";
  EXPECT_EQ(Ip(offer->yiaddr), "10.0.2.15");
}

TEST(PasstBackend, KilledPasstIsRestartedAndTrafficFlowsAgain) {
  SKIP_WITHOUT_PASST();
  Harness h;
  ASSERT_TRUE(h.Start());
  auto offer = h.Dhcp();
  ASSERT_TRUE(offer.has_value());
  const pid_t first = h.backend()->pid();
  ASSERT_EQ(kill(first, SIGKILL), 0);

  auto failures = h.WaitFailures(1);
  ASSERT_EQ(failures.size(), 1u);
  EXPECT_TRUE(failures[0].recovering);
  const std::string msg(failures[0].why.message());
  EXPECT_NE(msg.find(absl::StrFormat("passt (pid %d) was killed by signal 9", first)),
            std::string::npos)
      << msg;
  EXPECT_NE(msg.find(h.log()), std::string::npos) << msg;
  ASSERT_TRUE(h.WaitRestored(1));
  const pid_t second = h.backend()->pid();
  EXPECT_GT(second, 0);
  EXPECT_NE(second, first);
  EXPECT_EQ(h.backend()->restarts(), 1);
  EXPECT_EQ(kill(first, 0), -1);  // reaped, not a zombie left behind

  auto again = h.Dhcp();
  ASSERT_TRUE(again.has_value()) << "no DHCPOFFER after the restart";
  ExpectUdpRoundTrip(h, *again, "after restart");
  EXPECT_NE(h.Describe().find("restarts=1"), std::string::npos);
}

// A passt that cannot start (an invalid port forward) is retried with
// back-off, then given up on; its error is kept in the log.
TEST(PasstBackend, GivesUpAfterRepeatedFailures) {
  SKIP_WITHOUT_PASST();
  NicConfig c;
  c.tcp = {"99999"};
  Harness h(c);
  ASSERT_TRUE(h.Start());
  const size_t n = PasstBackend::kMaxRestarts + 1;
  auto failures = h.WaitFailures(n);
  ASSERT_EQ(failures.size(), n);
  for (size_t i = 0; i + 1 < n; ++i) {
    EXPECT_TRUE(failures[i].recovering) << i;
    EXPECT_NE(failures[i].why.message().find("exited with status 1"), std::string::npos)
        << failures[i].why;
  }
  EXPECT_FALSE(failures.back().recovering);
  EXPECT_NE(failures.back().why.message().find("gave up"), std::string::npos)
      << failures.back().why;
  EXPECT_NE(failures.back().why.message().find(h.log() + ".1"), std::string::npos);
  EXPECT_NE(ReadFile(h.log() + ".1").find("99999"), std::string::npos)
      << "passt's error is not in its kept log";
  EXPECT_EQ(h.backend()->pid(), -1);
  EXPECT_EQ(h.backend()->restarts(), PasstBackend::kMaxRestarts);
  // Down for good: frames are dropped, not queued.
  EXPECT_EQ(h.Send(DhcpDiscover()), SendResult::kSent);
  EXPECT_NE(h.Describe().find("state=failed"), std::string::npos);
}

TEST(PasstBackend, StopEndsPasstAndIsIdempotent) {
  SKIP_WITHOUT_PASST();
  Harness h;
  ASSERT_TRUE(h.Start());
  const pid_t pid = h.backend()->pid();
  ASSERT_GT(pid, 0);
  h.backend()->Stop();  // off the loop thread: runs there through RunSync
  EXPECT_EQ(h.backend()->pid(), -1);
  EXPECT_EQ(kill(pid, 0), -1);  // gone and reaped
  h.backend()->Stop();
  // Stopped: no failure is reported for the child flint ended itself.
  h.loop()->RunSync([] {});
  EXPECT_TRUE(h.WaitFailures(0).empty());
  // And it can start again.
  BackendEvents ev;
  ASSERT_TRUE(h.backend()->Start(h.loop(), ev).ok());
  EXPECT_GT(h.backend()->pid(), 0);
  EXPECT_NE(h.backend()->pid(), pid);
}

}  // namespace
}  // namespace flint::net
