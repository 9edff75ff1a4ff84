// The TAP backend: a Linux TAP device, opened by name (flint creates it when
// missing, which needs CAP_NET_ADMIN) or handed over as an fd by the process
// that started flint. Frames carry the 12-byte virtio_net_hdr_v1 both ways
// (IFF_VNET_HDR with TUNSETVNETHDRSZ 12), so checksum offload information
// passes between the guest and the host kernel. One fd per queue pair
// (IFF_MULTI_QUEUE when there are several).
//
// The kernel does not write the header's last field (num_buffers) on
// receive; Receive zeroes it and the device fills it in.
//
// A TAP that goes away (its interface deleted) is reported through failed
// (recovering=false, posted to the loop); afterwards Send drops and Receive
// returns 0.
#pragma once

#include <sys/uio.h>

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "net/backend.h"
#include "vmm/kvm/unique_fd.h"
#include "vmm/vm_config.h"

namespace flint::net {

class TapBackend final : public NetBackend {
 public:
  // By name (tap=NAME): opens /dev/net/tun with IFF_TAP|IFF_NO_PI|
  // IFF_VNET_HDR (|IFF_MULTI_QUEUE when queues > 1, one fd per queue pair).
  // By fd (fd=N, tap_name empty): an fd inherited from the launcher; checks
  // it is a TAP with IFF_NO_PI and IFF_VNET_HDR (TUNGETIFF) and takes
  // ownership (also on error); queues must be 1. Sets TUNSETVNETHDRSZ 12,
  // no offloads, non-blocking, close-on-exec. Errors name the device and
  // suggest the fix.
  static absl::StatusOr<std::unique_ptr<TapBackend>> Open(const NicConfig& config);
  // Stops (on the loop thread, through RunSync when called elsewhere). The
  // loop must outlive the backend once started.
  ~TapBackend() override;

  // The interface name (as the kernel reports it).
  const std::string& name() const { return name_; }
  // Queue `q`'s fd (for tests and diagnostics).
  int fd(uint16_t q) const { return queues_[q].fd.get(); }

  std::string_view kind() const override { return "tap"; }
  bool vnet_hdr() const override { return true; }
  uint16_t queue_pairs() const override { return static_cast<uint16_t>(queues_.size()); }
  std::string Describe() const override;

  absl::Status Start(EventLoop* loop, BackendEvents events) override;
  void Stop() override;
  SendResult Send(uint16_t queue, std::span<const iovec> frame) override;
  absl::StatusOr<size_t> Receive(uint16_t queue, std::span<uint8_t> buf) override;
  void PauseRx(uint16_t queue) override;
  void ResumeRx(uint16_t queue) override;
  // TUNSETOFFLOAD TUN_F_CSUM (or nothing): with it, received frames may
  // carry VIRTIO_NET_HDR_F_NEEDS_CSUM instead of a complete checksum.
  absl::Status SetGuestCsum(bool accepted) override;

 private:
  struct Queue {
    UniqueFd fd;
    bool rx_paused = false;
    bool tx_busy = false;  // a Send got kBusy: tx_ready once writable
    uint32_t interest = 0;
  };

  TapBackend(std::string name, std::vector<UniqueFd> fds);
  void OnReady(uint16_t q, uint32_t ready);
  void UpdateInterest(uint16_t q);
  // The device went away: unregister everything, post failed.
  void Fail(int err);

  std::string name_;
  std::vector<Queue> queues_;
  EventLoop* loop_ = nullptr;
  BackendEvents events_;
  bool started_ = false;
  bool failed_ = false;
  std::shared_ptr<int> alive_;  // see PasstBackend: guards posted callbacks
  std::vector<uint8_t> scratch_;  // linearised frames with too many pieces

  uint64_t rx_frames_ = 0;
  uint64_t rx_dropped_ = 0;
  uint64_t tx_frames_ = 0;
  uint64_t tx_dropped_ = 0;
  uint64_t tx_busy_count_ = 0;
};

}  // namespace flint::net
