// The passt backend: user-mode networking through the system passt binary,
// which flint starts on one end of a socketpair and supervises.
//
// Lifecycle (all on the event loop thread):
//  - Start: socketpair, spawn passt (process.h), watch the socket, the
//    child's pidfd and a back-off timerfd on the loop.
//  - passt exits, closes its socket, or breaks the framing: flint reaps it,
//    keeps its log as LOG.1 (passt truncates LOG when it starts), reports
//    failed(recovering=true) and starts it again with the same command line
//    after 100 ms, 200 ms, 400 ms, 800 ms, 1.6 s; a sixth failure in a row
//    reports failed(recovering=false) and stays down. A passt that stayed up
//    for 10 s resets the count. After a restart: link_restored (then
//    tx_ready if a sender was waiting).
//  - Stop: finishes a half-written frame (100 ms at most), SIGTERM, SIGKILL
//    after 200 ms, reap.
//
// failed and link_restored are delivered through EventLoop::Post, never from
// inside a call the device made, so the device may Stop or replace the
// backend from them. rx_ready and tx_ready are called directly from the
// backend's fd callbacks; the device must not destroy the backend inside
// them (Stop is fine: no callback follows it).
#pragma once

#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "net/backend.h"
#include "net/passt/frame_stream.h"
#include "net/passt/process.h"
#include "vmm/kvm/unique_fd.h"
#include "vmm/vm_config.h"

namespace flint::net {

class PasstBackend final : public NetBackend {
 public:
  // Back-off before restart n (0-based) is kFirstBackoffMs << n; after
  // kMaxRestarts failed attempts in a row, the backend gives up.
  static constexpr int kFirstBackoffMs = 100;
  static constexpr int kMaxRestarts = 5;
  static constexpr int kStableUpMs = 10'000;

  // Checks that passt is on PATH (else: "passt not found in PATH: install the
  // Debian package 'passt'"), that the address parses and that the log's
  // directory exists, but starts nothing until Start(). `log_path`: passt's
  // log file (-l), beside the VM's other state.
  static absl::StatusOr<std::unique_ptr<PasstBackend>> Create(const NicConfig& config,
                                                              std::string log_path);
  // Stops (on the loop thread, through RunSync when called elsewhere). The
  // loop must outlive the backend.
  ~PasstBackend() override;

  pid_t pid() const { return pid_.load(std::memory_order_relaxed); }  // -1 if none
  int restarts() const { return restarts_.load(std::memory_order_relaxed); }
  const std::string& log_path() const { return log_path_; }
  const std::string& binary() const { return binary_; }

  std::string_view kind() const override { return "passt"; }
  bool vnet_hdr() const override { return false; }
  uint16_t queue_pairs() const override { return 1; }
  std::string Describe() const override;

  absl::Status Start(EventLoop* loop, BackendEvents events) override;
  void Stop() override;
  SendResult Send(uint16_t queue, std::span<const iovec> frame) override;
  absl::StatusOr<size_t> Receive(uint16_t queue, std::span<uint8_t> buf) override;
  void PauseRx(uint16_t queue) override;
  void ResumeRx(uint16_t queue) override;

 private:
  enum class State { kStopped, kRunning, kBackoff, kGaveUp };

  PasstBackend(const NicConfig& config, std::string binary, std::string log_path);

  // Socketpair, spawn, watches. On error nothing is left registered.
  absl::Status Launch();
  // Unregisters the socket and the pidfd, closes the socket, ends the child.
  // Returns how the child ended.
  std::string TearDown(int grace_ms, bool term);
  // Something broke while running: tear down, report, schedule the restart.
  // `cause` says what flint saw; `grace_ms` is how long passt may take to
  // exit by itself before it is killed.
  void Fail(const absl::Status& cause, int grace_ms);
  // The restart policy after a failure described by `why`.
  void AfterFailure(std::string why);

  void OnSocket(uint32_t ready);
  void OnChildExit();
  void OnTimer();
  void UpdateInterest();
  void PostFailed(absl::Status why, bool recovering);
  // link_restored, then tx_ready when a sender was turned away meanwhile.
  void PostRestored();

  const NicConfig config_;
  const std::string binary_;
  const std::string log_path_;

  EventLoop* loop_ = nullptr;
  BackendEvents events_;
  // Posted callbacks hold a weak reference: Stop drops this, so nothing
  // posted before Stop runs after it.
  std::shared_ptr<int> alive_;
  State state_ = State::kStopped;

  UniqueFd socket_;  // our end
  std::optional<ChildProcess> child_;
  UniqueFd timer_;   // restart back-off
  FrameStream stream_;
  uint32_t interest_ = 0;  // what the socket watch waits for now
  bool rx_paused_ = false;
  bool tx_waiting_ = false;  // a Send got kBusy from a stream since torn down

  // Frames turned away while passt was down (the stream counts the rest).
  uint64_t tx_busy_down_ = 0;
  uint64_t tx_dropped_down_ = 0;

  int consecutive_failures_ = 0;
  int64_t up_since_ms_ = 0;
  std::atomic<pid_t> pid_{-1};
  std::atomic<int> restarts_{0};
};

}  // namespace flint::net
