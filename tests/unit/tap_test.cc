// The TAP backend against real TAP devices, each test in a network namespace
// of its own (so addresses never collide with the host's and the devices
// vanish with it). Needs root and /dev/net/tun; skipped, saying why, without.
#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/if_tun.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <net/if_arp.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "net/tap.h"
#include "tests/support/packets.h"
#include "vmm/event_loop.h"
#include "vmm/kvm/unique_fd.h"

namespace flint::net {
namespace {

using testing::Fold;
using testing::Get16;
using testing::Get32;
using testing::Mac;
using testing::Put16;
using testing::Put32;
using testing::Sum16;
using testing::UdpFrame;

// Only guards against a hang; never decides a pass.
constexpr absl::Duration kHang = absl::Seconds(20);

constexpr Mac kGuestMac = {0x02, 0x46, 0x4c, 0x4e, 0x54, 0x02};
constexpr uint32_t kHostIp = 0x0a630001;   // 10.99.0.1, on the TAP
constexpr uint32_t kGuestIp = 0x0a630002;  // 10.99.0.2, the "guest"

// The header fields a test looks at (virtio_net_hdr_v1, little-endian).
constexpr uint8_t kNeedsCsum = 1;  // VIRTIO_NET_HDR_F_NEEDS_CSUM

// Runs the test body in a fresh network namespace (this thread only) and
// returns to the original one afterwards.
class NetnsScope {
 public:
  NetnsScope() {
    if (geteuid() != 0) {
      why_ = "needs root (TAP devices and a network namespace)";
      return;
    }
    if (access("/dev/net/tun", R_OK | W_OK) != 0) {
      why_ = "/dev/net/tun is not usable";
      return;
    }
    saved_.reset(open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC));
    if (!saved_.valid() || unshare(CLONE_NEWNET) != 0) {
      why_ = absl::StrFormat("cannot enter a new network namespace: %s", strerror(errno));
      saved_.reset();
      return;
    }
    entered_ = true;
  }
  ~NetnsScope() {
    if (entered_) {
      EXPECT_EQ(setns(saved_.get(), CLONE_NEWNET), 0) << strerror(errno);
    }
  }
  bool entered() const { return entered_; }
  const std::string& why() const { return why_; }

 private:
  UniqueFd saved_;
  bool entered_ = false;
  std::string why_;
};

#define ENTER_NETNS()                                   \
  NetnsScope netns;                                     \
  if (!netns.entered()) GTEST_SKIP() << netns.why()

ifreq Ifreq(const std::string& name) {
  ifreq ifr{};
  std::strncpy(ifr.ifr_name, name.c_str(), IFNAMSIZ - 1);
  return ifr;
}

sockaddr_in Sin(uint32_t ip, uint16_t port = 0) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(ip);
  a.sin_port = htons(port);
  return a;
}

// Gives `name` 10.99.0.1/24 and brings it up; returns its MAC.
Mac ConfigureHostSide(const std::string& name) {
  UniqueFd s(socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  ifreq ifr = Ifreq(name);
  sockaddr_in addr = Sin(kHostIp);
  std::memcpy(&ifr.ifr_addr, &addr, sizeof(addr));
  EXPECT_EQ(ioctl(s.get(), SIOCSIFADDR, &ifr), 0) << strerror(errno);
  sockaddr_in mask = Sin(0xffffff00);
  std::memcpy(&ifr.ifr_netmask, &mask, sizeof(mask));
  EXPECT_EQ(ioctl(s.get(), SIOCSIFNETMASK, &ifr), 0) << strerror(errno);
  EXPECT_EQ(ioctl(s.get(), SIOCGIFFLAGS, &ifr), 0) << strerror(errno);
  ifr.ifr_flags |= IFF_UP;
  EXPECT_EQ(ioctl(s.get(), SIOCSIFFLAGS, &ifr), 0) << strerror(errno);
  Mac mac{};
  EXPECT_EQ(ioctl(s.get(), SIOCGIFHWADDR, &ifr), 0) << strerror(errno);
  std::memcpy(mac.data(), ifr.ifr_hwaddr.sa_data, 6);
  return mac;
}

// A permanent neighbour entry for the guest, so the host sends to it
// without asking ARP first.
void AddGuestNeighbour(const std::string& name) {
  UniqueFd s(socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  arpreq req{};
  sockaddr_in pa = Sin(kGuestIp);
  std::memcpy(&req.arp_pa, &pa, sizeof(pa));
  req.arp_ha.sa_family = ARPHRD_ETHER;
  std::memcpy(req.arp_ha.sa_data, kGuestMac.data(), 6);
  req.arp_flags = ATF_COM | ATF_PERM;
  std::strncpy(req.arp_dev, name.c_str(), sizeof(req.arp_dev) - 1);
  EXPECT_EQ(ioctl(s.get(), SIOCSARP, &req), 0) << strerror(errno);
}

// Deletes an interface (RTM_DELLINK), as `ip link del` would.
void DeleteLink(const std::string& name) {
  UniqueFd nl(socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE));
  struct {
    nlmsghdr nh;
    ifinfomsg ifi;
  } req{};
  req.nh.nlmsg_len = sizeof(req);
  req.nh.nlmsg_type = RTM_DELLINK;
  req.nh.nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK;
  req.ifi.ifi_family = AF_UNSPEC;
  req.ifi.ifi_index = static_cast<int>(if_nametoindex(name.c_str()));
  ASSERT_GT(req.ifi.ifi_index, 0);
  ASSERT_EQ(send(nl.get(), &req, sizeof(req), 0), static_cast<ssize_t>(sizeof(req)));
  char buf[4096];
  ssize_t n = recv(nl.get(), buf, sizeof(buf), 0);
  ASSERT_GE(n, static_cast<ssize_t>(sizeof(nlmsghdr) + sizeof(nlmsgerr)));
  const auto* err = reinterpret_cast<const nlmsgerr*>(NLMSG_DATA(buf));
  ASSERT_EQ(err->error, 0) << strerror(-err->error);
}

// A 12-byte zero vnet header (no offload requests) followed by `eth`.
std::vector<uint8_t> WithHeader(const std::vector<uint8_t>& eth) {
  std::vector<uint8_t> f(kVnetHdrSize + eth.size(), 0);
  std::copy(eth.begin(), eth.end(), f.begin() + kVnetHdrSize);
  return f;
}

std::vector<uint8_t> ArpRequest() {
  std::vector<uint8_t> f(42);
  std::fill(f.begin(), f.begin() + 6, 0xff);
  std::copy(kGuestMac.begin(), kGuestMac.end(), f.begin() + 6);
  Put16(f, 12, 0x0806);
  Put16(f, 14, 1);        // Ethernet
  Put16(f, 16, 0x0800);   // IPv4
  f[18] = 6;
  f[19] = 4;
  Put16(f, 20, 1);  // request
  std::copy(kGuestMac.begin(), kGuestMac.end(), f.begin() + 22);
  Put32(f, 28, kGuestIp);
  Put32(f, 38, kHostIp);
  return WithHeader(f);
}

std::vector<uint8_t> UdpToHost(const Mac& host_mac, uint16_t port,
                               const std::vector<uint8_t>& payload) {
  return WithHeader(UdpFrame(kGuestMac, host_mac, kGuestIp, kHostIp, 40000, port, payload));
}

// Runs a TapBackend on a loop and collects what it hands up, per queue.
class Harness {
 public:
  ~Harness() {
    // Stop first: reset() clears backend_ before the destructor runs, while
    // callbacks that use backend_ could still be running on the loop.
    if (backend_ != nullptr) backend_->Stop();
    backend_.reset();
    loop_.reset();
  }

  bool Start(std::unique_ptr<TapBackend> backend) {
    auto loop = EventLoop::Create("tap-test");
    EXPECT_TRUE(loop.ok()) << loop.status();
    if (!loop.ok()) return false;
    loop_ = std::move(*loop);
    backend_ = std::move(backend);
    BackendEvents ev;
    ev.rx_ready = [this](uint16_t q) { Drain(q); };
    ev.failed = [this](const absl::Status& why, bool recovering) {
      absl::MutexLock l(&mu_);
      failures_.push_back(why);
      recovering_ |= recovering;
    };
    absl::Status s = backend_->Start(loop_.get(), std::move(ev));
    EXPECT_TRUE(s.ok()) << s;
    return s.ok();
  }

  SendResult Send(const std::vector<uint8_t>& frame, uint16_t q = 0) {
    SendResult r;
    loop_->RunSync([&] {
      iovec iov[2] = {{const_cast<uint8_t*>(frame.data()), kVnetHdrSize},
                      {const_cast<uint8_t*>(frame.data()) + kVnetHdrSize,
                       frame.size() - kVnetHdrSize}};
      r = backend_->Send(q, iov);
    });
    return r;
  }

  // The first received frame (vnet header included) that `match` accepts,
  // from any queue; `queue` says which.
  std::optional<std::vector<uint8_t>> WaitFrame(
      const std::function<bool(const std::vector<uint8_t>&)>& match, uint16_t* queue = nullptr) {
    absl::MutexLock l(&mu_);
    const absl::Time deadline = absl::Now() + kHang;
    for (;;) {
      while (!frames_.empty()) {
        auto [q, f] = std::move(frames_.front());
        frames_.pop_front();
        if (match(f)) {
          if (queue != nullptr) *queue = q;
          return f;
        }
      }
      auto has = [this] {
        mu_.AssertHeld();
        return !frames_.empty();
      };
      if (!mu_.AwaitWithDeadline(absl::Condition(&has), deadline)) return std::nullopt;
    }
  }

  // Whether a frame `match` accepts was received already (no waiting).
  bool Received(const std::function<bool(const std::vector<uint8_t>&)>& match) {
    absl::MutexLock l(&mu_);
    for (const auto& [q, f] : frames_) {
      if (match(f)) return true;
    }
    return false;
  }

  std::vector<absl::Status> WaitFailure() {
    absl::MutexLock l(&mu_);
    auto has = [this] {
      mu_.AssertHeld();
      return !failures_.empty();
    };
    mu_.AwaitWithTimeout(absl::Condition(&has), kHang);
    return failures_;
  }
  bool any_recovering() {
    absl::MutexLock l(&mu_);
    return recovering_;
  }

  // On the loop thread, where the backend's counters live.
  std::string Describe() {
    std::string d;
    loop_->RunSync([&] { d = backend_->Describe(); });
    return d;
  }
  TapBackend* backend() { return backend_.get(); }
  EventLoop* loop() { return loop_.get(); }

 private:
  void Drain(uint16_t q) {
    // Not zero: shows which bytes the backend leaves unwritten.
    std::vector<uint8_t> buf(kMaxFrameSize + kVnetHdrSize, 0xaa);
    for (;;) {
      auto n = backend_->Receive(q, buf);
      if (!n.ok() || *n == 0) return;
      absl::MutexLock l(&mu_);
      frames_.emplace_back(q, std::vector<uint8_t>(buf.begin(), buf.begin() + *n));
    }
  }

  std::unique_ptr<EventLoop> loop_;
  std::unique_ptr<TapBackend> backend_;
  absl::Mutex mu_;
  std::deque<std::pair<uint16_t, std::vector<uint8_t>>> frames_ ABSL_GUARDED_BY(mu_);
  std::vector<absl::Status> failures_ ABSL_GUARDED_BY(mu_);
  bool recovering_ ABSL_GUARDED_BY(mu_) = false;
};

bool IsArpReply(const std::vector<uint8_t>& f) {
  if (f.size() < kVnetHdrSize + 42) return false;
  std::vector<uint8_t> eth(f.begin() + kVnetHdrSize, f.end());
  return Get16(eth, 12) == 0x0806 && Get16(eth, 20) == 2 &&
         std::equal(kGuestMac.begin(), kGuestMac.end(), eth.begin()) &&
         Get32(eth, 28) == kHostIp && Get32(eth, 38) == kGuestIp;
}

NicConfig TapByName(const std::string& name, uint16_t queues = 1) {
  NicConfig c;
  c.backend = NicConfig::Backend::kTap;
  c.tap_name = name;
  c.queues = queues;
  return c;
}

NicConfig TapByFd(int fd, uint16_t queues = 1) {
  NicConfig c;
  c.backend = NicConfig::Backend::kTap;
  c.tap_fd = fd;
  c.queues = queues;
  return c;
}

// Opens a TAP (or TUN) the way a launcher would.
UniqueFd OpenTun(const std::string& name, int flags) {
  UniqueFd fd(open("/dev/net/tun", O_RDWR | O_CLOEXEC));
  ifreq ifr = Ifreq(name);
  ifr.ifr_flags = static_cast<short>(flags);
  EXPECT_EQ(ioctl(fd.get(), TUNSETIFF, &ifr), 0) << strerror(errno);
  return fd;
}

// The host kernel answers the guest's ARP request; the answer arrives as a
// frame behind a vnet header.
void ExpectArpAnswered(Harness& h, const Mac& host_mac, uint16_t send_queue = 0) {
  ASSERT_EQ(h.Send(ArpRequest(), send_queue), SendResult::kSent);
  auto reply = h.WaitFrame(IsArpReply);
  ASSERT_TRUE(reply.has_value()) << "no ARP reply";
  std::vector<uint8_t> eth(reply->begin() + kVnetHdrSize, reply->end());
  EXPECT_TRUE(std::equal(host_mac.begin(), host_mac.end(), eth.begin() + 22));
  // The header: no offload flags, no GSO, num_buffers left for the device.
  for (size_t i = 0; i < kVnetHdrSize; ++i) EXPECT_EQ((*reply)[i], 0) << "header byte " << i;
}

TEST(TapBackend, ByNameArpAndUdpToTheHost) {
  ENTER_NETNS();
  auto tap = TapBackend::Open(TapByName("flt0"));
  ASSERT_TRUE(tap.ok()) << tap.status();
  EXPECT_EQ((*tap)->name(), "flt0");
  EXPECT_TRUE((*tap)->vnet_hdr());
  EXPECT_EQ((*tap)->queue_pairs(), 1);
  EXPECT_EQ((*tap)->kind(), "tap");
  int flags = fcntl((*tap)->fd(0), F_GETFL);
  EXPECT_NE(flags & O_NONBLOCK, 0);
  EXPECT_NE(fcntl((*tap)->fd(0), F_GETFD) & FD_CLOEXEC, 0);
  Harness h;
  ASSERT_TRUE(h.Start(std::move(*tap)));
  const Mac host_mac = ConfigureHostSide("flt0");
  ExpectArpAnswered(h, host_mac);

  // Guest → host UDP reaches a socket bound to the TAP's address.
  UniqueFd server(socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  sockaddr_in a = Sin(kHostIp);
  ASSERT_EQ(bind(server.get(), reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0) << strerror(errno);
  socklen_t len = sizeof(a);
  getsockname(server.get(), reinterpret_cast<sockaddr*>(&a), &len);
  const std::string text = "hello from the guest";
  ASSERT_EQ(h.Send(UdpToHost(host_mac, ntohs(a.sin_port),
                             std::vector<uint8_t>(text.begin(), text.end()))),
            SendResult::kSent);
  pollfd pf{server.get(), POLLIN, 0};
  ASSERT_EQ(poll(&pf, 1, static_cast<int>(absl::ToInt64Milliseconds(kHang))), 1);
  char buf[256];
  ssize_t n = recv(server.get(), buf, sizeof(buf), 0);
  EXPECT_EQ(std::string(buf, n > 0 ? n : 0), text);
  const std::string d = h.Describe();
  EXPECT_NE(d.find("tap name=flt0 queues=1"), std::string::npos) << d;
  EXPECT_NE(d.find("tx_frames=2"), std::string::npos) << d;
}

// Host → guest UDP: complete checksums by default; with TUN_F_CSUM the kernel
// leaves the checksum to the guest and says so in the header.
TEST(TapBackend, ChecksumOffloadShowsInTheVnetHeader) {
  ENTER_NETNS();
  auto tap = TapBackend::Open(TapByName("flt1"));
  ASSERT_TRUE(tap.ok()) << tap.status();
  Harness h;
  ASSERT_TRUE(h.Start(std::move(*tap)));
  ConfigureHostSide("flt1");
  AddGuestNeighbour("flt1");
  UniqueFd sender(socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  auto send_and_receive = [&](const std::string& text) -> std::optional<std::vector<uint8_t>> {
    sockaddr_in to = Sin(kGuestIp, 40001);
    EXPECT_EQ(sendto(sender.get(), text.data(), text.size(), 0,
                     reinterpret_cast<sockaddr*>(&to), sizeof(to)),
              static_cast<ssize_t>(text.size()));
    return h.WaitFrame([&](const std::vector<uint8_t>& f) {
      if (f.size() < kVnetHdrSize + 42) return false;
      std::vector<uint8_t> eth(f.begin() + kVnetHdrSize, f.end());
      return Get16(eth, 12) == 0x0800 && eth[23] == 17 && Get16(eth, 36) == 40001 &&
             std::string(eth.begin() + 42, eth.end()) == text;
    });
  };

  auto plain = send_and_receive("complete checksum");
  ASSERT_TRUE(plain.has_value());
  EXPECT_EQ((*plain)[0] & kNeedsCsum, 0);
  {
    std::vector<uint8_t> eth(plain->begin() + kVnetHdrSize, plain->end());
    const size_t udp_len = Get16(eth, 38);
    uint32_t pseudo = Sum16(eth.data() + 26, 8) + 17 + static_cast<uint32_t>(udp_len);
    EXPECT_EQ(Fold(Sum16(eth.data() + 34, udp_len, pseudo)), 0) << "UDP checksum not complete";
  }

  {
    absl::Status s;
    h.loop()->RunSync([&] { s = h.backend()->SetGuestCsum(true); });
    ASSERT_TRUE(s.ok()) << s;
  }
  auto offloaded = send_and_receive("partial checksum");
  ASSERT_TRUE(offloaded.has_value());
  EXPECT_EQ((*offloaded)[0] & kNeedsCsum, kNeedsCsum);
  const uint16_t csum_start = static_cast<uint16_t>((*offloaded)[6] | ((*offloaded)[7] << 8));
  const uint16_t csum_offset = static_cast<uint16_t>((*offloaded)[8] | ((*offloaded)[9] << 8));
  EXPECT_EQ(csum_start, 34);  // the UDP header, after Ethernet and IPv4
  EXPECT_EQ(csum_offset, 6);  // the UDP checksum field
  EXPECT_EQ((*offloaded)[10], 0);  // num_buffers: zeroed, the device's to fill
  EXPECT_EQ((*offloaded)[11], 0);
}

TEST(TapBackend, MultiQueueOpensOneFdPerQueuePair) {
  ENTER_NETNS();
  auto tap = TapBackend::Open(TapByName("flt2", 2));
  ASSERT_TRUE(tap.ok()) << tap.status();
  EXPECT_EQ((*tap)->queue_pairs(), 2);
  EXPECT_NE((*tap)->fd(0), (*tap)->fd(1));
  Harness h;
  ASSERT_TRUE(h.Start(std::move(*tap)));
  const Mac host_mac = ConfigureHostSide("flt2");
  // Sent on queue 1; the kernel answers on whichever queue its hash picks.
  ExpectArpAnswered(h, host_mac, 1);
}

TEST(TapBackend, InheritedFdIsCheckedAndOwned) {
  ENTER_NETNS();
  UniqueFd fd = OpenTun("flt3", IFF_TAP | IFF_NO_PI | IFF_VNET_HDR);
  ASSERT_TRUE(fd.valid());
  auto tap = TapBackend::Open(TapByFd(fd.release()));
  ASSERT_TRUE(tap.ok()) << tap.status();
  EXPECT_EQ((*tap)->name(), "flt3");
  Harness h;
  ASSERT_TRUE(h.Start(std::move(*tap)));
  const Mac host_mac = ConfigureHostSide("flt3");
  ExpectArpAnswered(h, host_mac);
}

TEST(TapBackend, FdsThatAreNotAUsableTapAreRefusedAndClosed) {
  ENTER_NETNS();
  int p[2];
  ASSERT_EQ(pipe2(p, O_CLOEXEC), 0);
  UniqueFd write_end(p[1]);
  auto pipe_tap = TapBackend::Open(TapByFd(p[0]));
  ASSERT_FALSE(pipe_tap.ok());
  EXPECT_NE(pipe_tap.status().message().find("is not a TAP device"), std::string::npos)
      << pipe_tap.status();
  EXPECT_EQ(fcntl(p[0], F_GETFD), -1);  // taken over, so closed on error

  int tun = OpenTun("flt4", IFF_TUN | IFF_NO_PI | IFF_VNET_HDR).release();
  auto tun_tap = TapBackend::Open(TapByFd(tun));
  ASSERT_FALSE(tun_tap.ok());
  EXPECT_NE(tun_tap.status().message().find("TUN"), std::string::npos) << tun_tap.status();

  int no_hdr = OpenTun("flt5", IFF_TAP | IFF_NO_PI).release();
  auto no_hdr_tap = TapBackend::Open(TapByFd(no_hdr));
  ASSERT_FALSE(no_hdr_tap.ok());
  EXPECT_NE(no_hdr_tap.status().message().find("IFF_VNET_HDR"), std::string::npos)
      << no_hdr_tap.status();

  int good = OpenTun("flt6", IFF_TAP | IFF_NO_PI | IFF_VNET_HDR).release();
  auto two_queues = TapBackend::Open(TapByFd(good, 2));
  ASSERT_FALSE(two_queues.ok());
  EXPECT_NE(two_queues.status().message().find("one queue pair"), std::string::npos)
      << two_queues.status();

  auto closed = TapBackend::Open(TapByFd(p[0]));
  ASSERT_FALSE(closed.ok());
  EXPECT_NE(closed.status().message().find("is not open"), std::string::npos)
      << closed.status();
}

TEST(TapBackend, NamesThatCannotBeATapAreRefused) {
  ENTER_NETNS();
  auto lo = TapBackend::Open(TapByName("lo"));
  ASSERT_FALSE(lo.ok());
  EXPECT_NE(lo.status().message().find("lo exists but is not a TAP device"), std::string::npos)
      << lo.status();
  auto long_name = TapBackend::Open(TapByName("a-name-far-too-long-for-linux"));
  ASSERT_FALSE(long_name.ok());
  EXPECT_NE(long_name.status().message().find("longer than 15"), std::string::npos)
      << long_name.status();
  // A single-queue TAP already held by someone else.
  UniqueFd held = OpenTun("flt7", IFF_TAP | IFF_NO_PI | IFF_VNET_HDR);
  auto busy = TapBackend::Open(TapByName("flt7"));
  ASSERT_FALSE(busy.ok());
  EXPECT_NE(busy.status().message().find("already in use"), std::string::npos) << busy.status();
}

TEST(TapBackend, DeletedDeviceIsReportedAsFailed) {
  ENTER_NETNS();
  auto tap = TapBackend::Open(TapByName("flt8"));
  ASSERT_TRUE(tap.ok()) << tap.status();
  Harness h;
  ASSERT_TRUE(h.Start(std::move(*tap)));
  DeleteLink("flt8");
  auto failures = h.WaitFailure();
  ASSERT_EQ(failures.size(), 1u);
  EXPECT_NE(failures[0].message().find("TAP device flt8 went away"), std::string::npos)
      << failures[0];
  EXPECT_FALSE(h.any_recovering());
  // Down for good: frames are dropped and counted, nothing blocks.
  EXPECT_EQ(h.Send(ArpRequest()), SendResult::kSent);
  EXPECT_NE(h.Describe().find("state=failed"), std::string::npos);
}

// Paused queues are not reported; resuming reports frames that arrived
// meanwhile (they waited in the kernel, not in flint).
TEST(TapBackend, PausedRxHoldsFramesInTheKernelUntilResumed) {
  ENTER_NETNS();
  auto tap = TapBackend::Open(TapByName("flt9"));
  ASSERT_TRUE(tap.ok()) << tap.status();
  Harness h;
  ASSERT_TRUE(h.Start(std::move(*tap)));
  ConfigureHostSide("flt9");
  h.loop()->RunSync([&] { h.backend()->PauseRx(0); });
  ASSERT_EQ(h.Send(ArpRequest()), SendResult::kSent);
  // The reply is in the TAP's queue: readable, but not taken while paused.
  pollfd pf{h.backend()->fd(0), POLLIN, 0};
  ASSERT_EQ(poll(&pf, 1, static_cast<int>(absl::ToInt64Milliseconds(kHang))), 1);
  // Two loop rounds: the batch that saw the TAP readable (if any) is over.
  h.loop()->RunSync([] {});
  h.loop()->RunSync([] {});
  EXPECT_FALSE(h.Received(IsArpReply)) << "the paused backend read the frame";
  h.loop()->RunSync([&] { h.backend()->ResumeRx(0); });
  EXPECT_TRUE(h.WaitFrame(IsArpReply).has_value());
}

}  // namespace
}  // namespace flint::net
