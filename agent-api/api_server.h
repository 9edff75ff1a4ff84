// The per-VM gRPC API (flint.v1.VmService, proto/flint/v1/vm_service.proto),
// served on `flint run --api-socket PATH`.
//
// flint creates the UNIX socket itself (mode 0600, vmm/unix_socket.h), accepts
// each connection on its own thread, checks the peer's credentials (flint's
// uid or root; anything else is logged and closed) and only then hands the fd
// to gRPC, which serves it on its own threads. The service knows no Vm: it
// drives a VmControl, which main implements over whichever Vm runs (a VM may
// reboot under the API), so the server is tested without KVM.
#pragma once

#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "vm_service.pb.h"
#include "vmm/kvm/unique_fd.h"

namespace grpc {
class Server;
}

namespace flint {

// Shutdown's wait for the guest when the request names none (timeout_seconds
// 0): long enough for a Linux guest to stop its services and sync its disks.
inline constexpr uint32_t kDefaultShutdownTimeoutSeconds = 30;

// What the API does to the VM. Called on gRPC threads, concurrently; each
// returns FAILED_PRECONDITION (with a message) when there is no VM to act on.
class VmControl {
 public:
  virtual ~VmControl() = default;
  // Everything but pid, which the server fills in.
  virtual v1::GetInfoResponse Info() = 0;
  virtual absl::Status Pause() = 0;
  virtual absl::Status Resume() = 0;
  virtual absl::Status Reset() = 0;
  virtual absl::Status Stop() = 0;
  // Graceful shutdown: presses the ACPI power button and returns at once. If
  // the VM is still running `timeout` later, it is stopped as by Stop(), and
  // the stop's reason says it was forced. Repeated calls press the button
  // again; the earliest deadline stands.
  virtual absl::Status Shutdown(absl::Duration timeout) = 0;
  virtual absl::StatusOr<v1::GetStatsResponse> Stats() = 0;
  virtual absl::Status SwapNic(uint32_t index, const std::string& spec) = 0;
};

// State changes fanned out to every WatchEvents stream. Thread-safe; each
// watcher has its own bounded queue (a watcher that does not read loses the
// oldest events, never blocks the publisher).
class EventHub {
 public:
  static constexpr size_t kMaxQueued = 256;

  class Subscription {
   public:
    explicit Subscription(EventHub* hub) : hub_(hub) {}
    ~Subscription();
    // The next event, waiting up to `timeout`; nullopt on timeout or when the
    // hub is closed and nothing is left (see done()).
    std::optional<v1::VmEvent> Next(absl::Duration timeout);
    bool done();

   private:
    friend class EventHub;
    EventHub* hub_;
    std::deque<v1::VmEvent> queue_;  // guarded by hub_->mu_
  };

  void Publish(const v1::VmEvent& event);
  // Ends every stream once its queue is drained; later subscriptions end at once.
  void Close();
  std::unique_ptr<Subscription> Subscribe();

 private:
  absl::Mutex mu_;
  std::vector<Subscription*> subs_ ABSL_GUARDED_BY(mu_);
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
};

class ApiServer {
 public:
  // Binds `path` (a stale socket is replaced; another file or a live socket is
  // an error) and serves until destroyed. `control` must outlive the server.
  static absl::StatusOr<std::unique_ptr<ApiServer>> Start(const std::string& path,
                                                          VmControl* control);
  // Closes the event streams, stops accepting, shuts gRPC down (in-flight calls
  // get a moment to finish) and removes the socket.
  ~ApiServer();
  ApiServer(const ApiServer&) = delete;
  ApiServer& operator=(const ApiServer&) = delete;

  EventHub& events() { return events_; }
  // Shorthand for main: publish one event.
  void Publish(v1::VmEvent::Kind kind, const std::string& reason = "", int exit_status = 0);

 private:
  class Service;
  ApiServer(std::string path, UniqueFd listen_fd, UniqueFd stop_fd, VmControl* control);
  void AcceptLoop();

  const std::string path_;
  UniqueFd listen_fd_;
  UniqueFd stop_fd_;
  EventHub events_;
  std::unique_ptr<Service> service_;
  std::unique_ptr<grpc::Server> server_;
  std::thread accept_thread_;
};

}  // namespace flint
