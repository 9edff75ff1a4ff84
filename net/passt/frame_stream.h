// The framing passt speaks on its stream socket: every Ethernet frame is
// preceded by its length as a 32-bit big-endian integer. FrameStream turns a
// non-blocking stream socket into whole frames both ways, with bounded
// buffering:
//  - TX: one writev per frame; when the socket takes only part of it, the
//    unsent tail (at most one frame plus its length) is kept and written when
//    the socket becomes writable. While a tail is pending no new frame is
//    accepted (kBusy), so a frame is never interleaved with another.
//  - RX: one read buffer (256 KiB by default); frames are parsed in place and
//    copied out whole. A length of 0 or above kMaxStreamFrame is a protocol
//    error: the stream cannot resynchronise, so the owner restarts the peer.
//
// No event-loop knowledge here: the owner asks wants_readable/wants_writable
// and calls Fill/OnWritable when the fd is ready. Single-threaded.
#pragma once

#include <sys/uio.h>

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "net/backend.h"

namespace flint::net {

// The largest frame passt sends: a 65535-byte IP packet, Ethernet header and
// a VLAN tag.
inline constexpr size_t kMaxStreamFrame = 65535 + 18;
inline constexpr size_t kStreamHeaderSize = 4;

struct FrameStreamCounters {
  uint64_t rx_frames = 0;
  uint64_t rx_dropped = 0;  // longer than the caller's buffer
  uint64_t tx_frames = 0;
  uint64_t tx_dropped = 0;  // empty or longer than kMaxStreamFrame
  uint64_t tx_busy = 0;     // Send calls answered kBusy
};

class FrameStream {
 public:
  static constexpr size_t kDefaultRxBuffer = 256 * 1024;

  // `rx_buffer` is raised to hold at least one whole frame with its length.
  explicit FrameStream(size_t rx_buffer = kDefaultRxBuffer);

  // Starts framing `fd` (a connected non-blocking stream socket, not owned)
  // from a clean state; -1 detaches. Buffered data of the previous fd and
  // sender_waiting() are discarded; counters are kept.
  void Attach(int fd);
  int fd() const { return fd_; }

  // ---- transmit ----
  // kSent: the frame was written, or its tail is buffered, or it was dropped
  // for its size (counted). kBusy: nothing was taken; retry once OnWritable
  // returns true. An error means the socket failed (the peer is gone).
  absl::StatusOr<SendResult> Send(std::span<const iovec> frame);
  // The socket is writable: writes the buffered tail. Returns true when a
  // sender that was answered kBusy may retry now.
  absl::StatusOr<bool> OnWritable();
  // Whether the owner should wait for the fd to be writable.
  bool wants_writable() const { return tail_pending() || sender_waiting_; }
  bool tail_pending() const { return tx_off_ < tx_len_; }
  bool sender_waiting() const { return sender_waiting_; }
  // Blocks for at most `timeout_ms` writing the buffered tail, so the peer
  // never sees half a frame when the stream is closed. Returns whether the
  // tail went out.
  bool FlushTail(int timeout_ms);

  // ---- receive ----
  // Reads what the socket holds, up to the free buffer space. Returns the
  // number of bytes read (0: nothing available, or the buffer is full). An
  // error: end of stream, a socket error, or a malformed frame length.
  absl::StatusOr<size_t> Fill();
  // Whether the last Fill filled all the space it had, so the socket may
  // hold more; after a short read the socket was drained and the owner can
  // wait for readiness instead of reading again (one recv per wake-up).
  bool maybe_more() const { return maybe_more_; }
  // Whether Fill can store anything (false while the buffer is full of
  // frames nobody has taken).
  bool rx_room() const { return rx_end_ - rx_start_ < rx_.size(); }
  // Whether a whole frame is buffered.
  bool has_frame() const;
  // Copies the next whole buffered frame into `buf`: its length, or 0 when
  // no whole frame is buffered. Frames longer than `buf` are dropped and
  // counted. Reads nothing from the socket. An error is a malformed length.
  absl::StatusOr<size_t> Next(std::span<uint8_t> buf);

  const FrameStreamCounters& counters() const { return counters_; }

 private:
  // Validates the length at the head of the buffer, if one is there.
  absl::Status CheckHead() const;
  uint32_t HeadLength() const;

  int fd_ = -1;
  FrameStreamCounters counters_;

  // TX tail: bytes [tx_off_, tx_len_) of tx_ are still to be written.
  std::vector<uint8_t> tx_;
  size_t tx_off_ = 0;
  size_t tx_len_ = 0;
  bool sender_waiting_ = false;
  std::vector<iovec> iov_;  // reused by Send, no allocation per frame

  // RX: bytes [rx_start_, rx_end_) of rx_ are received and not yet taken.
  std::vector<uint8_t> rx_;
  size_t rx_start_ = 0;
  size_t rx_end_ = 0;
  bool maybe_more_ = false;
};

}  // namespace flint::net
