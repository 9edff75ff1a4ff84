// A client of QEMU's machine protocol (QMP) over its UNIX socket: connect,
// read the greeting, leave negotiation mode (qmp_capabilities), run commands
// with a bounded wait for their reply, and hand asynchronous events (STOP,
// RESUME, SHUTDOWN, ...) to a callback.
//
// QMP is one JSON object per line. Every QmpClient of the process is served
// by one shared I/O thread (an EventLoop named "flint-qmp") that reads the
// sockets, splits lines (a line may come in pieces, several may come in one
// read; a partial line is bounded), matches replies to commands by their
// "id" and delivers events. Commands are sent by the calling thread, which
// then sleeps until the I/O thread hands it the reply, the deadline passes or
// the session ends -- so a blocking Execute from a gRPC thread never waits
// on anything but QEMU.
//
// A QEMU that closes the socket (it exits; QMP has no other goodbye), sends a
// line that is not a JSON object, or a line over the bound ends the session:
// waiting commands fail with UNAVAILABLE and `on_closed` runs once.
#pragma once

#include <cstddef>
#include <functional>
#include <memory>
#include <string>

#include <google/protobuf/struct.pb.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace flint::shim {

struct QmpEvent {
  std::string name;               // "STOP", "SHUTDOWN", ...
  google::protobuf::Struct data;  // the event's "data" member; empty when it has none
};

struct QmpOptions {
  // Bounds the whole Connect: the socket appearing, the greeting and
  // qmp_capabilities.
  absl::Duration connect_timeout = absl::Seconds(10);
  // Polled while the socket does not accept yet; returning true gives up at
  // once (the QEMU that should create it has exited).
  std::function<bool()> give_up;
  // The longest line accepted from QEMU (query replies are a few KiB).
  size_t max_line_bytes = 1 << 20;
  // Run on the shared I/O thread. They must not block and must not call
  // Execute (it fails there rather than deadlock) nor destroy the client.
  std::function<void(const QmpEvent&)> on_event;
  std::function<void(const absl::Status& why)> on_closed;
};

class QmpClient {
 public:
  // Connects to `socket_path` (retrying while it does not exist or refuses,
  // until connect_timeout or give_up()), reads the greeting and runs
  // qmp_capabilities. DEADLINE_EXCEEDED names what did not happen in time (a
  // QEMU that already has a QMP client answers nobody else until it leaves).
  static absl::StatusOr<std::unique_ptr<QmpClient>> Connect(const std::string& socket_path,
                                                            QmpOptions options);

  // Ends the session (QEMU sees the socket close and takes the next client).
  // Once it returns no callback runs or will run. Not from a callback.
  ~QmpClient();
  QmpClient(const QmpClient&) = delete;
  QmpClient& operator=(const QmpClient&) = delete;

  // Runs `command` (with `arguments`, none when null) and returns its
  // "return" value. A QMP error reply is an error status carrying QEMU's
  // class and description (CommandNotFound: UNIMPLEMENTED, DeviceNotFound:
  // NOT_FOUND, others FAILED_PRECONDITION); no reply within `timeout`:
  // DEADLINE_EXCEEDED; the session ended: UNAVAILABLE. Any thread but the I/O
  // thread (FAILED_PRECONDITION there), several at once.
  absl::StatusOr<google::protobuf::Value> Execute(
      const std::string& command, const google::protobuf::Struct* arguments = nullptr,
      absl::Duration timeout = absl::Seconds(10));

  // The greeting's "QMP" object ({"version": {"qemu": {...}, "package"},
  // "capabilities": [...]}).
  const google::protobuf::Struct& greeting() const;

  // True once the session has ended, and why.
  bool closed() const;
  // Waits up to `timeout` for the session to end (every line QEMU sent
  // before it closed has been handled then); true when it has.
  bool WaitClosed(absl::Duration timeout) const;
  absl::Status close_reason() const;

  // Ends the session from any thread (a shutdown(2) of the socket: the I/O
  // thread then sees the end and runs on_closed).
  void Disconnect();

 private:
  class Session;
  explicit QmpClient(std::shared_ptr<Session> session);
  std::shared_ptr<Session> session_;
};

// "major.minor.micro" from a query-version reply or the greeting's version
// object; empty when the shape is not QEMU's.
std::string QmpVersionString(const google::protobuf::Struct& version);

}  // namespace flint::shim
