#include "net/passt/frame_stream.h"

#include <limits.h>
#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/strings/str_format.h"
#include "net/passt/deadline.h"

namespace flint::net {
namespace {

absl::Status SocketError(const char* what, int err) {
  return absl::UnavailableError(absl::StrFormat("%s passt's socket failed: %s", what,
                                                strerror(err)));
}

}  // namespace

FrameStream::FrameStream(size_t rx_buffer)
    : tx_(kStreamHeaderSize + kMaxStreamFrame),
      rx_(std::max(rx_buffer, kStreamHeaderSize + kMaxStreamFrame)) {
  iov_.reserve(64);
}

void FrameStream::Attach(int fd) {
  fd_ = fd;
  tx_off_ = tx_len_ = 0;
  sender_waiting_ = false;
  rx_start_ = rx_end_ = 0;
  maybe_more_ = false;
}

absl::StatusOr<SendResult> FrameStream::Send(std::span<const iovec> frame) {
  if (fd_ < 0) return absl::FailedPreconditionError("the passt stream is not connected");
  if (tail_pending()) {
    // Taking another frame now would interleave it with the tail.
    sender_waiting_ = true;
    ++counters_.tx_busy;
    return SendResult::kBusy;
  }
  size_t len = 0;
  for (const iovec& v : frame) {
    // Checked per element so a hostile list of huge lengths cannot wrap.
    if (v.iov_len > kMaxStreamFrame - len) {
      len = kMaxStreamFrame + 1;
      break;
    }
    len += v.iov_len;
  }
  if (len == 0 || len > kMaxStreamFrame) {
    ++counters_.tx_dropped;
    return SendResult::kSent;
  }
  const size_t total = kStreamHeaderSize + len;
  uint8_t header[kStreamHeaderSize] = {static_cast<uint8_t>(len >> 24),
                                       static_cast<uint8_t>(len >> 16),
                                       static_cast<uint8_t>(len >> 8), static_cast<uint8_t>(len)};
  // Too many pieces for one writev: send a linear copy instead.
  const bool linear = frame.size() + 1 > IOV_MAX;
  iov_.clear();
  if (linear) {
    std::memcpy(tx_.data(), header, kStreamHeaderSize);
    size_t at = kStreamHeaderSize;
    for (const iovec& v : frame) {
      std::memcpy(tx_.data() + at, v.iov_base, v.iov_len);
      at += v.iov_len;
    }
    iov_.push_back({tx_.data(), total});
  } else {
    iov_.push_back({header, kStreamHeaderSize});
    for (const iovec& v : frame) {
      if (v.iov_len != 0) iov_.push_back(v);
    }
  }
  msghdr msg{};
  msg.msg_iov = iov_.data();
  msg.msg_iovlen = iov_.size();
  ssize_t n;
  do {
    n = sendmsg(fd_, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
  } while (n < 0 && errno == EINTR);
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      sender_waiting_ = true;
      ++counters_.tx_busy;
      return SendResult::kBusy;
    }
    return SocketError("writing to", errno);
  }
  ++counters_.tx_frames;
  const size_t sent = static_cast<size_t>(n);
  if (sent == total) return SendResult::kSent;
  // Partial write: keep the rest. The frame's memory (guest RAM) is the
  // sender's again once we return, so the tail is copied.
  if (linear) {
    tx_off_ = sent;
    tx_len_ = total;
    return SendResult::kSent;
  }
  size_t skip = sent;
  size_t at = 0;
  for (const iovec& v : iov_) {
    if (skip >= v.iov_len) {
      skip -= v.iov_len;
      continue;
    }
    const size_t take = v.iov_len - skip;
    std::memcpy(tx_.data() + at, static_cast<const uint8_t*>(v.iov_base) + skip, take);
    at += take;
    skip = 0;
  }
  tx_off_ = 0;
  tx_len_ = at;
  return SendResult::kSent;
}

absl::StatusOr<bool> FrameStream::OnWritable() {
  if (fd_ < 0) return false;
  while (tail_pending()) {
    ssize_t n = send(fd_, tx_.data() + tx_off_, tx_len_ - tx_off_, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return false;
      return SocketError("writing to", errno);
    }
    tx_off_ += static_cast<size_t>(n);
  }
  tx_off_ = tx_len_ = 0;
  if (!sender_waiting_) return false;
  sender_waiting_ = false;
  return true;
}

bool FrameStream::FlushTail(int timeout_ms) {
  const int64_t deadline = MonotonicMs() + timeout_ms;
  while (tail_pending()) {
    if (!PollUntil(fd_, POLLOUT, deadline)) return false;
    if (!OnWritable().ok()) return false;
  }
  return true;
}

uint32_t FrameStream::HeadLength() const {
  const uint8_t* p = rx_.data() + rx_start_;
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | p[3];
}

absl::Status FrameStream::CheckHead() const {
  if (rx_end_ - rx_start_ < kStreamHeaderSize) return absl::OkStatus();
  const uint32_t len = HeadLength();
  if (len == 0 || len > kMaxStreamFrame) {
    return absl::DataLossError(absl::StrFormat(
        "passt sent a malformed frame length %u (valid: 1..%u); the stream is out of step", len,
        kMaxStreamFrame));
  }
  return absl::OkStatus();
}

bool FrameStream::has_frame() const {
  const size_t avail = rx_end_ - rx_start_;
  return avail >= kStreamHeaderSize && avail - kStreamHeaderSize >= HeadLength();
}

absl::StatusOr<size_t> FrameStream::Fill() {
  if (fd_ < 0) return absl::FailedPreconditionError("the passt stream is not connected");
  if (rx_start_ == rx_end_) {
    rx_start_ = rx_end_ = 0;
  } else if (rx_start_ > 0 && rx_.size() - rx_end_ < kStreamHeaderSize + kMaxStreamFrame) {
    // Too little room after the data for the largest frame: move what is
    // left to the front (at most one buffer's worth, rarely).
    std::memmove(rx_.data(), rx_.data() + rx_start_, rx_end_ - rx_start_);
    rx_end_ -= rx_start_;
    rx_start_ = 0;
  }
  const size_t space = rx_.size() - rx_end_;
  maybe_more_ = space == 0;
  if (space == 0) return 0;
  ssize_t n;
  do {
    n = recv(fd_, rx_.data() + rx_end_, space, MSG_DONTWAIT);
  } while (n < 0 && errno == EINTR);
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
    return SocketError("reading from", errno);
  }
  if (n == 0) return absl::UnavailableError("passt closed its socket");
  rx_end_ += static_cast<size_t>(n);
  maybe_more_ = static_cast<size_t>(n) == space;
  if (absl::Status s = CheckHead(); !s.ok()) return s;
  return static_cast<size_t>(n);
}

absl::StatusOr<size_t> FrameStream::Next(std::span<uint8_t> buf) {
  for (;;) {
    if (absl::Status s = CheckHead(); !s.ok()) return s;
    if (!has_frame()) return 0;
    const size_t len = HeadLength();
    const uint8_t* frame = rx_.data() + rx_start_ + kStreamHeaderSize;
    rx_start_ += kStreamHeaderSize + len;
    if (len > buf.size()) {
      ++counters_.rx_dropped;
      continue;
    }
    std::memcpy(buf.data(), frame, len);
    ++counters_.rx_frames;
    return len;
  }
}

}  // namespace flint::net
