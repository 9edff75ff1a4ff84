#include "net/tap.h"

#include <fcntl.h>
#include <limits.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include "absl/strings/str_format.h"

namespace flint::net {
namespace {

constexpr int kVnetHdrSz = static_cast<int>(kVnetHdrSize);
// The smallest frame worth handing to the kernel: header plus an Ethernet
// header (the kernel refuses less with EINVAL anyway).
constexpr size_t kMinTxFrame = kVnetHdrSize + 14;
constexpr size_t kMaxTxFrame = kVnetHdrSize + kMaxFrameSize;

bool InterfaceExists(const std::string& name) {
  struct stat st{};
  return stat(("/sys/class/net/" + name).c_str(), &st) == 0;
}

// What to tell the user when TUNSETIFF on `name` failed with `err`.
absl::Status AttachError(const std::string& name, uint16_t queues, int err) {
  const std::string mq = queues > 1 ? " multi_queue" : "";
  switch (err) {
    case EPERM:
    case EACCES:
      if (!InterfaceExists(name)) {
        return absl::PermissionDeniedError(absl::StrFormat(
            "TAP device %s does not exist, and creating it needs CAP_NET_ADMIN: run flint as "
            "root, or create it beforehand with 'ip tuntap add dev %s mode tap user $USER "
            "vnet_hdr%s'",
            name, name, mq));
      }
      return absl::PermissionDeniedError(absl::StrFormat(
          "attaching to TAP device %s is not permitted: it belongs to another user or group "
          "(recreate it with 'ip tuntap add dev %s mode tap user $USER vnet_hdr%s'), or run "
          "flint with CAP_NET_ADMIN",
          name, name, mq));
    case EINVAL:
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s exists but is not a%s TAP device (a TUN device, another kind of interface, or a "
          "TAP %s multi_queue): pick another name or recreate it with 'ip tuntap add dev %s "
          "mode tap vnet_hdr%s'",
          name, mq, queues > 1 ? "without" : "with", name, mq));
    case EBUSY:
      return absl::FailedPreconditionError(absl::StrFormat(
          "TAP device %s is already in use by another process (single-queue TAPs take one "
          "user)",
          name));
    default:
      return absl::InternalError(
          absl::StrFormat("attaching to TAP device %s (TUNSETIFF) failed: %s", name,
                          strerror(err)));
  }
}

// Makes `fd` ready for flint: non-blocking, close-on-exec, 12-byte vnet
// header, no offloads until the guest accepts some.
absl::Status ConfigureFd(int fd, const std::string& name) {
  int fl = fcntl(fd, F_GETFL);
  if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) != 0 || fcntl(fd, F_SETFD, FD_CLOEXEC) != 0) {
    return absl::InternalError(
        absl::StrFormat("TAP device %s: fcntl failed: %s", name, strerror(errno)));
  }
  int sz = kVnetHdrSz;
  if (ioctl(fd, TUNSETVNETHDRSZ, &sz) != 0) {
    return absl::InternalError(absl::StrFormat("TAP device %s: TUNSETVNETHDRSZ %d failed: %s",
                                               name, sz, strerror(errno)));
  }
  if (ioctl(fd, TUNSETOFFLOAD, 0UL) != 0) {
    return absl::InternalError(
        absl::StrFormat("TAP device %s: TUNSETOFFLOAD failed: %s", name, strerror(errno)));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<TapBackend>> TapBackend::Open(const NicConfig& config) {
  if (config.backend != NicConfig::Backend::kTap) {
    return absl::InvalidArgumentError("TapBackend::Open needs a TAP NIC configuration");
  }
  const uint16_t queues = config.queues == 0 ? 1 : config.queues;
  std::vector<UniqueFd> fds;
  std::string name;
  if (config.tap_name.empty()) {
    if (config.tap_fd < 0) return absl::InvalidArgumentError("a TAP NIC needs tap=NAME or fd=N");
    // Owned from here on, so every error below closes it.
    UniqueFd fd(config.tap_fd);
    if (queues != 1) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "fd=%d: an inherited TAP fd serves one queue pair, not %d; use tap=NAME for "
          "several",
          config.tap_fd, queues));
    }
    ifreq ifr{};
    if (ioctl(fd.get(), TUNGETIFF, &ifr) != 0) {
      if (errno == EBADF) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "fd=%d is not open: the process that starts flint must pass it down (without "
            "close-on-exec)",
            config.tap_fd));
      }
      return absl::InvalidArgumentError(absl::StrFormat(
          "fd=%d is not a TAP device (TUNGETIFF: %s): pass an fd of /dev/net/tun attached to "
          "a TAP with TUNSETIFF",
          config.tap_fd, strerror(errno)));
    }
    name = ifr.ifr_name;
    const int flags = ifr.ifr_flags;
    if ((flags & IFF_TAP) == 0) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "fd=%d is the TUN (layer 3) device %s, not a TAP: open it with IFF_TAP",
          config.tap_fd, name));
    }
    if ((flags & IFF_NO_PI) == 0 || (flags & IFF_VNET_HDR) == 0) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "fd=%d (TAP device %s) was attached without %s: flint needs IFF_NO_PI | "
          "IFF_VNET_HDR in TUNSETIFF",
          config.tap_fd, name, (flags & IFF_NO_PI) == 0 ? "IFF_NO_PI" : "IFF_VNET_HDR"));
    }
    fds.push_back(std::move(fd));
  } else {
    if (config.tap_name.size() >= IFNAMSIZ) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "TAP name '%s' is longer than %d characters", config.tap_name, IFNAMSIZ - 1));
    }
    if (queues > kMaxNicQueues) {
      return absl::InvalidArgumentError(
          absl::StrFormat("%d queue pairs requested; at most %d", queues, kMaxNicQueues));
    }
    name = config.tap_name;
    for (uint16_t q = 0; q < queues; ++q) {
      UniqueFd fd(open("/dev/net/tun", O_RDWR | O_CLOEXEC | O_NONBLOCK));
      if (!fd.valid()) {
        if (errno == ENOENT || errno == ENODEV || errno == ENXIO) {
          return absl::FailedPreconditionError(
              "/dev/net/tun is missing: load the tun module (modprobe tun)");
        }
        return absl::PermissionDeniedError(absl::StrFormat(
            "opening /dev/net/tun for TAP device %s failed: %s (flint needs read-write "
            "access to it)",
            name, strerror(errno)));
      }
      ifreq ifr{};
      // The kernel's name on later queues, so "tap%d" patterns attach to
      // the same device.
      std::memcpy(ifr.ifr_name, name.c_str(), name.size() + 1);
      ifr.ifr_flags = static_cast<short>(IFF_TAP | IFF_NO_PI | IFF_VNET_HDR |
                                         (queues > 1 ? IFF_MULTI_QUEUE : 0));
      if (ioctl(fd.get(), TUNSETIFF, &ifr) != 0) return AttachError(name, queues, errno);
      name.assign(ifr.ifr_name, strnlen(ifr.ifr_name, IFNAMSIZ));
      fds.push_back(std::move(fd));
    }
  }
  for (UniqueFd& fd : fds) {
    if (absl::Status s = ConfigureFd(fd.get(), name); !s.ok()) return s;
  }
  return std::unique_ptr<TapBackend>(new TapBackend(std::move(name), std::move(fds)));
}

TapBackend::TapBackend(std::string name, std::vector<UniqueFd> fds) : name_(std::move(name)) {
  queues_.resize(fds.size());
  for (size_t i = 0; i < fds.size(); ++i) queues_[i].fd = std::move(fds[i]);
}

TapBackend::~TapBackend() { Stop(); }

absl::Status TapBackend::SetGuestCsum(bool accepted) {
  const unsigned long offloads = accepted ? TUN_F_CSUM : 0;
  if (ioctl(queues_[0].fd.get(), TUNSETOFFLOAD, offloads) != 0) {
    return absl::InternalError(absl::StrFormat("TAP device %s: TUNSETOFFLOAD 0x%x failed: %s",
                                               name_, offloads, strerror(errno)));
  }
  return absl::OkStatus();
}

std::string TapBackend::Describe() const {
  return absl::StrFormat(
      "tap name=%s queues=%d rx_frames=%d tx_frames=%d tx_busy=%d rx_dropped=%d "
      "tx_dropped=%d%s",
      name_, queues_.size(), rx_frames_, tx_frames_, tx_busy_count_, rx_dropped_, tx_dropped_,
      failed_ ? " state=failed" : "");
}

absl::Status TapBackend::Start(EventLoop* loop, BackendEvents events) {
  if (!loop->InLoopThread()) {
    absl::Status status;
    loop->RunSync([&] { status = Start(loop, std::move(events)); });
    return status;
  }
  if (started_) return absl::FailedPreconditionError("TAP backend already started");
  loop_ = loop;
  events_ = std::move(events);
  for (uint16_t q = 0; q < queues_.size(); ++q) {
    Queue& qu = queues_[q];
    qu.rx_paused = false;
    qu.tx_busy = false;
    qu.interest = failed_ ? 0u : uint32_t{EventLoop::kReadable};
    absl::Status s =
        loop_->AddWatch(qu.fd.get(), qu.interest, [this, q](uint32_t ready) { OnReady(q, ready); });
    if (!s.ok()) {
      for (uint16_t r = 0; r < q; ++r) loop_->Remove(queues_[r].fd.get());
      return s;
    }
  }
  alive_ = std::make_shared<int>(0);
  started_ = true;
  return absl::OkStatus();
}

void TapBackend::Stop() {
  if (loop_ == nullptr) return;
  if (!loop_->InLoopThread()) {
    loop_->RunSync([this] { Stop(); });
    return;
  }
  if (!started_) return;
  alive_.reset();
  if (!failed_) {
    for (Queue& qu : queues_) loop_->Remove(qu.fd.get());
  }
  started_ = false;
}

void TapBackend::Fail(int err) {
  if (failed_) return;
  failed_ = true;
  // Unwatched, not just interest 0: epoll reports a detached TAP's error
  // whatever the interest, and the loop would spin on it.
  for (Queue& qu : queues_) {
    loop_->Remove(qu.fd.get());
    qu.interest = 0;
  }
  absl::Status why = absl::UnavailableError(absl::StrFormat(
      "TAP device %s went away (%s): its interface was deleted; the NIC has no link until "
      "the device is replaced",
      name_, strerror(err)));
  std::weak_ptr<int> alive = alive_;
  loop_->Post([this, alive, why] {
    if (alive.expired()) return;
    if (events_.failed) events_.failed(why, /*recovering=*/false);
  });
}

void TapBackend::UpdateInterest(uint16_t q) {
  Queue& qu = queues_[q];
  if (!started_ || failed_) return;
  uint32_t want = 0;
  if (!qu.rx_paused) want |= EventLoop::kReadable;
  if (qu.tx_busy) want |= EventLoop::kWritable;
  if (want == qu.interest) return;
  if (loop_->SetInterest(qu.fd.get(), want).ok()) qu.interest = want;
}

void TapBackend::OnReady(uint16_t q, uint32_t ready) {
  if (!started_ || failed_) return;
  Queue& qu = queues_[q];
  if ((ready & ~qu.interest) != 0) {
    // An error or hang-up, reported whatever the interest: a detached TAP
    // (interface deleted) polls as an error forever.
    ifreq ifr{};
    if (ioctl(qu.fd.get(), TUNGETIFF, &ifr) != 0 && errno != EINTR) {
      Fail(errno);
      return;
    }
  }
  bool notify_tx = false;
  if ((ready & EventLoop::kWritable) && qu.tx_busy) {
    qu.tx_busy = false;
    notify_tx = true;
  }
  UpdateInterest(q);
  const bool notify_rx = (ready & EventLoop::kReadable) && !qu.rx_paused;
  if (notify_tx && events_.tx_ready) {
    events_.tx_ready(q);
    if (!started_ || failed_) return;  // the device stopped us
  }
  if (notify_rx && events_.rx_ready) events_.rx_ready(q);
}

SendResult TapBackend::Send(uint16_t queue, std::span<const iovec> frame) {
  if (queue >= queues_.size() || !started_ || failed_) {
    ++tx_dropped_;
    return SendResult::kSent;
  }
  Queue& qu = queues_[queue];
  size_t len = 0;
  for (const iovec& v : frame) {
    if (v.iov_len > kMaxTxFrame - len) {  // no wrap with hostile lengths
      len = kMaxTxFrame + 1;
      break;
    }
    len += v.iov_len;
  }
  if (len < kMinTxFrame || len > kMaxTxFrame) {
    ++tx_dropped_;
    return SendResult::kSent;
  }
  const iovec* iov = frame.data();
  int count = static_cast<int>(frame.size());
  iovec linear;
  if (frame.size() > IOV_MAX) {
    scratch_.resize(kMaxTxFrame);
    size_t at = 0;
    for (const iovec& v : frame) {
      std::memcpy(scratch_.data() + at, v.iov_base, v.iov_len);
      at += v.iov_len;
    }
    linear = {scratch_.data(), at};
    iov = &linear;
    count = 1;
  }
  ssize_t n;
  do {
    n = writev(qu.fd.get(), iov, count);
  } while (n < 0 && errno == EINTR);
  if (n >= 0) {
    ++tx_frames_;
    return SendResult::kSent;
  }
  if (errno == EAGAIN || errno == EWOULDBLOCK) {
    qu.tx_busy = true;
    ++tx_busy_count_;
    UpdateInterest(queue);
    return SendResult::kBusy;
  }
  // EBADFD: the device is gone. Anything else (EIO: the interface is down,
  // EINVAL: a header the kernel refuses) loses this frame only.
  if (errno == EBADFD) Fail(errno);
  ++tx_dropped_;
  return SendResult::kSent;
}

absl::StatusOr<size_t> TapBackend::Receive(uint16_t queue, std::span<uint8_t> buf) {
  if (queue >= queues_.size() || !started_ || failed_) return 0;
  int fd = queues_[queue].fd.get();
  uint8_t overflow;
  for (;;) {
    // A buffer too small for the header still takes (and drops) a frame.
    std::span<uint8_t> into = buf;
    if (into.size() < kVnetHdrSize) {
      scratch_.resize(kMaxTxFrame);
      into = std::span<uint8_t>(scratch_);
    }
    // One byte beyond the buffer tells a truncated frame from a full fit:
    // the kernel copies what fits and drops the rest.
    iovec iov[2] = {{into.data(), into.size()}, {&overflow, 1}};
    ssize_t n = readv(fd, iov, 2);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
      if (errno == EINVAL) {  // the frame did not fit the header; it is gone
        ++rx_dropped_;
        continue;
      }
      const int err = errno;
      Fail(err);
      return absl::UnavailableError(
          absl::StrFormat("reading TAP device %s failed: %s", name_, strerror(err)));
    }
    const size_t len = static_cast<size_t>(n);
    if (into.data() != buf.data() || len > buf.size() || len < kVnetHdrSize) {
      ++rx_dropped_;
      continue;
    }
    // num_buffers: not written by the kernel.
    buf[10] = 0;
    buf[11] = 0;
    ++rx_frames_;
    return len;
  }
}

void TapBackend::PauseRx(uint16_t queue) {
  if (queue >= queues_.size()) return;
  queues_[queue].rx_paused = true;
  UpdateInterest(queue);
}

void TapBackend::ResumeRx(uint16_t queue) {
  if (queue >= queues_.size()) return;
  // Nothing is buffered here: the level-triggered watch fires by itself if
  // the TAP holds frames.
  queues_[queue].rx_paused = false;
  UpdateInterest(queue);
}

}  // namespace flint::net
