// What a virtio-net device sends frames through: passt (net/passt/) or a TAP
// device (net/tap.*). One backend object serves one NIC; the device may
// replace it at run time (live backend swap).
//
// Frames cross this interface as Ethernet frames; when vnet_hdr() is true
// they are preceded by a 12-byte struct virtio_net_hdr_v1 (TAP with
// IFF_VNET_HDR: checksum offload information passes through to the host
// kernel); otherwise no header travels and checksums must be complete.
//
// Threading: every method runs on the VM's event loop thread (the device
// calls them from its callbacks, or through EventLoop::RunSync), and the
// backend's callbacks run there too.
#pragma once

#include <sys/uio.h>

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "vmm/event_loop.h"

namespace flint::net {

inline constexpr size_t kVnetHdrSize = 12;       // virtio_net_hdr_v1 (VERSION_1)
inline constexpr size_t kMaxFrameSize = 65535 + 14 + 4;  // with vnet hdr offloads: up to 64 KiB

struct BackendEvents {
  // Frames can be read from queue pair `queue` (the device calls Receive).
  std::function<void(uint16_t queue)> rx_ready;
  // A Send() that returned kBusy can be retried on `queue`.
  std::function<void(uint16_t queue)> tx_ready;
  // The backend stopped working (passt exited, TAP went away). `recovering`
  // says whether it is restarting itself (passt: bounded retries); the
  // device takes the link down now and up again on link_restored.
  std::function<void(const absl::Status& why, bool recovering)> failed;
  std::function<void()> link_restored;
};

enum class SendResult {
  kSent,     // the whole frame was accepted (or dropped by the backend and counted)
  kBusy,     // nothing was taken: retry after tx_ready
};

class NetBackend {
 public:
  virtual ~NetBackend() = default;

  virtual std::string_view kind() const = 0;   // "passt" or "tap"
  virtual bool vnet_hdr() const = 0;
  virtual uint16_t queue_pairs() const = 0;    // 1 unless a multiqueue TAP
  // For --stats, the control socket and the API: "passt pid=123 restarts=0 ...".
  virtual std::string Describe() const = 0;

  // Registers the backend's fds with `loop` and starts delivering events.
  virtual absl::Status Start(EventLoop* loop, BackendEvents events) = 0;
  // Unregisters; no callback runs after it returns. A frame already partly
  // written to a stream is finished first (bounded wait), so the peer never
  // sees half a frame. Idempotent.
  virtual void Stop() = 0;

  // Sends one frame, given as iovecs (guest memory; with the vnet header
  // first when vnet_hdr()). Never blocks.
  virtual SendResult Send(uint16_t queue, std::span<const iovec> frame) = 0;
  // Copies the next received frame (vnet header first when vnet_hdr()) into
  // `buf`; returns its length, 0 when none is ready. A frame longer than
  // `buf` is dropped and counted (the device always offers kMaxFrameSize +
  // kVnetHdrSize). Errors mean the backend failed (it also calls failed).
  virtual absl::StatusOr<size_t> Receive(uint16_t queue, std::span<uint8_t> buf) = 0;
  // The device has no room for received frames on `queue`: stop reporting
  // rx_ready (the backend stops reading, so back-pressure reaches the peer)
  // until ResumeRx.
  virtual void PauseRx(uint16_t queue) = 0;
  virtual void ResumeRx(uint16_t queue) = 0;

  // Whether the guest's driver accepts frames whose checksum is left
  // partial (VIRTIO_NET_F_GUEST_CSUM): a backend with a vnet header may then
  // hand over frames marked NEEDS_CSUM instead of having the host finish
  // them. Only an optimisation: the device finishes such frames itself for a
  // driver that does not accept them. Default: nothing to do.
  virtual absl::Status SetGuestCsum(bool /*accepted*/) { return absl::OkStatus(); }
};

}  // namespace flint::net
