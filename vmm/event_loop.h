// The device event loop: one thread per VM ("flint-io") that runs device work
// off the vCPU threads. Devices register file descriptors (ioeventfds,
// io_uring completion eventfds, thread-pool completion eventfds, sockets)
// with a callback that runs on the loop thread when the fd is readable.
//
// Threading contract:
//  - Add/Remove/Post/RunSync may be called from any thread.
//  - Callbacks and posted functions run only on the loop thread, one at a
//    time, so state touched only from callbacks needs no lock.
//  - Remove(fd) called off the loop thread returns only once the fd's
//    callback is not running and will never run again; called on the loop
//    thread (from a callback) it takes effect before the next dispatch.
//  - RunSync(fn) runs fn on the loop thread and waits for it (inline when
//    already on the loop thread): how a vCPU thread hands a device state
//    change (activate, reset) to the loop.
//  - Destruction: whatever was posted before the loop thread exits runs
//    (also what callbacks of the last batch post). Calling in once the
//    destructor has begun is a bug of the caller; work posted after the
//    loop thread finished aborts with a message rather than hang forever.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace flint {

class EventLoop {
 public:
  using Callback = std::function<void()>;

  // Starts the loop thread, named `name` (at most 15 characters are kept).
  static absl::StatusOr<std::unique_ptr<EventLoop>> Create(const std::string& name);
  virtual ~EventLoop() = default;  // stops and joins the loop thread

  // Level-triggered: the callback runs again while the fd stays readable,
  // so it must drain (read the eventfd, reap completions) what it handles.
  virtual absl::Status Add(int fd, Callback on_readable) = 0;

  // Readiness with a choice of interest, for sockets and TAP fds that need
  // write readiness (back-pressure). `ready` holds the kReadable/kWritable
  // bits that fired; an error or hang-up on the fd is reported as both.
  // Level-triggered like Add(). SetInterest changes what a watched fd waits
  // for (0: nothing, the fd stays registered); cheapest on the loop thread.
  enum Interest : uint32_t { kReadable = 1, kWritable = 2 };
  using ReadyCallback = std::function<void(uint32_t ready)>;
  virtual absl::Status AddWatch(int fd, uint32_t interest, ReadyCallback on_ready) = 0;
  virtual absl::Status SetInterest(int fd, uint32_t interest) = 0;

  virtual void Remove(int fd) = 0;
  virtual void Post(Callback fn) = 0;
  virtual void RunSync(const Callback& fn) = 0;
  virtual bool InLoopThread() const = 0;
};

}  // namespace flint
