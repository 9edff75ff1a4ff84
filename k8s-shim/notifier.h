// Domain events to virt-handler's Notify service (kubevirt.notify.v1) on its
// notify socket, the way KubeVirt's launcher sends them: the version is
// checked first (NotifyInfo must list 1), each event is retried with back-off
// until it is delivered or `give_up_after` passes (KubeVirt's launcher gives
// up after 20 s), and a Cmd call never waits for any of it.
//
// One channel, one bounded queue, one delivery thread: events leave in the
// order they were queued, so each VM's events arrive in order. A full queue
// drops its oldest event (counted); virt-handler re-reads the domain with
// GetDomain on its own resync, so a lost MODIFIED is not fatal, a blocked VM
// call would be. Without a socket path events are only logged.
#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <thread>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace grpc {
class ClientContext;
}

namespace flint::shim {

struct NotifyEvent {
  std::string vm_id;        // the slot, for logs
  std::string event_type;   // "ADDED", "MODIFIED", "DELETED" or "ERROR"
  std::string domain_json;  // for ADDED/MODIFIED/DELETED
  std::string status_json;  // for ERROR (a metav1.Status)
};

class Notifier {
 public:
  struct Options {
    size_t max_queued = 4096;
    absl::Duration call_timeout = absl::Seconds(5);
    absl::Duration give_up_after = absl::Seconds(20);
    absl::Duration min_backoff = absl::Milliseconds(100);
    absl::Duration max_backoff = absl::Seconds(2);
  };
  struct Counters {
    uint64_t queued = 0;
    uint64_t delivered = 0;
    uint64_t dropped_full = 0;      // pushed out of a full queue
    uint64_t dropped_gave_up = 0;   // retried past give_up_after
    uint64_t failed_attempts = 0;   // RPCs that failed (each retry counts)
  };

  // `socket_path` empty: log only. Starts the delivery thread.
  explicit Notifier(std::string socket_path);
  Notifier(std::string socket_path, Options options);
  // Gives the queue up to a second to drain, then stops.
  ~Notifier();
  Notifier(const Notifier&) = delete;
  Notifier& operator=(const Notifier&) = delete;

  // Never blocks (beyond a short lock).
  void Send(NotifyEvent event);

  // Waits until everything queued so far is delivered or dropped, up to
  // `timeout`; true when the queue is empty.
  bool Flush(absl::Duration timeout);

  Counters counters();
  const std::string& socket_path() const { return socket_path_; }

 private:
  class Channel;  // the gRPC side
  void Run();
  // One delivery attempt; empty string on success, else why not.
  std::string Deliver(const NotifyEvent& event);
  // One RPC's context, registered so that the destructor can cancel it.
  void SetCurrent(grpc::ClientContext* ctx);

  const std::string socket_path_;
  const Options options_;
  std::unique_ptr<Channel> channel_;  // used by the delivery thread only

  absl::Mutex mu_;
  std::deque<NotifyEvent> queue_ ABSL_GUARDED_BY(mu_);
  bool in_flight_ ABSL_GUARDED_BY(mu_) = false;  // the thread holds a popped event
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  grpc::ClientContext* current_ ABSL_GUARDED_BY(mu_) = nullptr;
  Counters counters_ ABSL_GUARDED_BY(mu_);
  std::thread thread_;
};

}  // namespace flint::shim
