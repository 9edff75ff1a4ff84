// The QMP client: one shared I/O thread reads every session's socket; the
// calling threads write commands and sleep on the session's mutex until the
// I/O thread has filed their reply.
#include "k8s-shim/qmp.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <google/protobuf/util/json_util.h>

#include <cerrno>
#include <algorithm>
#include <cstring>
#include <map>
#include <string_view>
#include <utility>

#include "absl/base/call_once.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "vmm/event_loop.h"
#include "vmm/kvm/unique_fd.h"
#include "vmm/unix_socket.h"

namespace flint::shim {
namespace {

using google::protobuf::Struct;
using google::protobuf::Value;

constexpr size_t kReadChunk = 64 * 1024;

// The one I/O thread of every QMP session in the process. Never destroyed:
// sessions may live until exit, and a static destructor would join the
// thread while another static's destructor still ends a session.
absl::StatusOr<EventLoop*> SharedLoop() {
  static absl::once_flag once;
  static EventLoop* loop = nullptr;
  static absl::Status* error = nullptr;
  absl::call_once(once, [] {
    absl::StatusOr<std::unique_ptr<EventLoop>> created = EventLoop::Create("flint-qmp");
    if (created.ok()) {
      loop = created->release();
    } else {
      error = new absl::Status(created.status());
    }
  });
  if (loop == nullptr) return *error;
  return loop;
}

// QMP command names are ASCII words; anything else would let a caller's
// string change the JSON around it.
bool ValidCommandName(const std::string& name) {
  if (name.empty() || name.size() > 64) return false;
  for (char c : name) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '-' || c == '_';
    if (!ok) return false;
  }
  return true;
}

// The error reply {"class": C, "desc": D} as a status.
absl::Status QmpError(const std::string& command, const Value& error) {
  std::string cls = "?", desc = "(no description)";
  if (error.has_struct_value()) {
    const auto& f = error.struct_value().fields();
    if (auto it = f.find("class"); it != f.end() && it->second.has_string_value()) {
      cls = it->second.string_value();
    }
    if (auto it = f.find("desc"); it != f.end() && it->second.has_string_value()) {
      desc = it->second.string_value();
    }
  }
  const std::string message = absl::StrFormat("QMP %s: %s (%s)", command, desc, cls);
  if (cls == "CommandNotFound") return absl::UnimplementedError(message);
  if (cls == "DeviceNotFound") return absl::NotFoundError(message);
  return absl::FailedPreconditionError(message);
}

std::string Printable(std::string_view s, size_t max) {
  std::string out;
  for (char c : s.substr(0, max)) out += (c >= 0x20 && c < 0x7f) ? c : '?';
  if (s.size() > max) out += "...";
  return out;
}

}  // namespace

class QmpClient::Session {
 public:
  Session(EventLoop* loop, UniqueFd fd, QmpOptions options)
      : loop_(loop), fd_(std::move(fd)), options_(std::move(options)) {}

  ~Session() {
    // Once Remove returns the I/O thread is not in OnReady and never will be
    // again; the fd stays open until here, so its number cannot have been
    // reused by another session on the same loop.
    loop_->Remove(fd_.get());
    absl::MutexLock l(&mu_);
    if (!closed_) FailAll(absl::CancelledError("the QMP client was destroyed"));
  }

  absl::Status Start() {
    return loop_->AddWatch(fd_.get(), EventLoop::kReadable, [this](uint32_t) { OnReady(); });
  }

  // Waits for the greeting or the end of the session.
  absl::Status AwaitGreeting(absl::Time deadline, const std::string& path) {
    absl::MutexLock l(&mu_);
    mu_.AwaitWithDeadline(absl::Condition(this, &Session::GreetedOrClosed), deadline);
    if (have_greeting_) return absl::OkStatus();
    if (closed_) {
      return absl::UnavailableError(
          absl::StrFormat("QMP %s ended before its greeting: %s", path, close_reason_.message()));
    }
    return absl::DeadlineExceededError(absl::StrFormat(
        "QMP %s accepted the connection but sent no greeting in time (does another client "
        "hold it?)",
        path));
  }

  absl::StatusOr<Value> Execute(const std::string& command, const Struct* arguments,
                                absl::Duration timeout) {
    if (loop_->InLoopThread()) {
      return absl::FailedPreconditionError(
          absl::StrFormat("QMP %s called from the QMP I/O thread (a callback)", command));
    }
    if (!ValidCommandName(command)) {
      return absl::InvalidArgumentError(absl::StrFormat("'%s' is not a QMP command name",
                                                        Printable(command, 80)));
    }
    std::string args_json;
    if (arguments != nullptr) {
      const auto st = google::protobuf::util::MessageToJsonString(*arguments, &args_json);
      if (!st.ok()) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "QMP %s: arguments do not convert to JSON: %s", command, st.message().as_string()));
      }
    }
    const absl::Time deadline = absl::Now() + timeout;
    Pending pending;
    std::string id;
    {
      absl::MutexLock l(&mu_);
      if (closed_) {
        return absl::UnavailableError(absl::StrFormat("QMP %s: the session has ended: %s",
                                                      command, close_reason_.message()));
      }
      id = absl::StrCat("flint-", next_id_++);
      pending_[id] = &pending;
    }
    std::string line = absl::StrCat("{\"execute\":\"", command, "\"");
    if (!args_json.empty()) absl::StrAppend(&line, ",\"arguments\":", args_json);
    absl::StrAppend(&line, ",\"id\":\"", id, "\"}\n");

    if (absl::Status sent = Send(line, deadline); !sent.ok()) {
      {
        absl::MutexLock l(&mu_);
        pending_.erase(id);
      }
      // Part of the line may be out: the stream can no longer be trusted.
      Disconnect();
      return absl::Status(sent.code(), absl::StrFormat("QMP %s: %s", command, sent.message()));
    }

    absl::MutexLock l(&mu_);
    mu_.AwaitWithDeadline(absl::Condition(&pending.done), deadline);
    if (!pending.done) {
      pending_.erase(id);  // a late reply finds no taker and is dropped
      return absl::DeadlineExceededError(absl::StrFormat(
          "QMP %s: no reply within %s", command, absl::FormatDuration(timeout)));
    }
    if (!pending.closed.ok()) {
      return absl::UnavailableError(
          absl::StrFormat("QMP %s: the session ended: %s", command, pending.closed.message()));
    }
    if (pending.is_error) return QmpError(command, pending.value);
    return std::move(pending.value);
  }

  void Disconnect() { shutdown(fd_.get(), SHUT_RDWR); }

  bool closed() const {
    absl::MutexLock l(&mu_);
    return closed_;
  }
  bool WaitClosed(absl::Duration timeout) const {
    absl::MutexLock l(&mu_);
    mu_.AwaitWithTimeout(absl::Condition(&closed_), timeout);
    return closed_;
  }
  absl::Status close_reason() const {
    absl::MutexLock l(&mu_);
    return close_reason_;
  }
  // Written once, before Connect returns the client.
  const Struct& greeting() const { return greeting_; }

 private:
  struct Pending {
    bool done = false;
    bool is_error = false;
    Value value;            // "return" or "error"
    absl::Status closed;    // not OK: the session ended first
  };

  bool GreetedOrClosed() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return have_greeting_ || closed_;
  }

  // Writes the whole line (commands are small; the socket buffer normally
  // takes them at once) or fails at the deadline.
  absl::Status Send(const std::string& line, absl::Time deadline) {
    absl::MutexLock l(&write_mu_);
    size_t off = 0;
    while (off < line.size()) {
      const ssize_t n =
          send(fd_.get(), line.data() + off, line.size() - off, MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n > 0) {
        off += static_cast<size_t>(n);
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        const absl::Duration left = deadline - absl::Now();
        if (left <= absl::ZeroDuration()) {
          return absl::DeadlineExceededError("QEMU does not read its QMP socket");
        }
        pollfd p{fd_.get(), POLLOUT, 0};
        poll(&p, 1, static_cast<int>(absl::ToInt64Milliseconds(left)) + 1);
        continue;
      }
      return absl::UnavailableError(absl::StrFormat("writing to QMP: %s", strerror(errno)));
    }
    return absl::OkStatus();
  }

  // ---- The I/O thread ----

  void OnReady() {
    char buf[kReadChunk];
    const ssize_t n = read(fd_.get(), buf, sizeof(buf));
    if (n < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return;
      Close(absl::UnavailableError(
          absl::StrFormat("reading the QMP socket: %s", strerror(errno))));
      return;
    }
    if (n == 0) {
      Close(absl::UnavailableError("QEMU closed the QMP socket"));
      return;
    }
    partial_.append(buf, static_cast<size_t>(n));
    size_t start = 0;
    for (;;) {
      const size_t nl = partial_.find('\n', scanned_);
      if (nl == std::string::npos) break;
      std::string_view line(partial_.data() + start, nl - start);
      start = nl + 1;
      scanned_ = start;
      if (!HandleLine(line)) return;  // closed
    }
    partial_.erase(0, start);
    scanned_ = partial_.size();
    if (partial_.size() > options_.max_line_bytes) {
      Close(absl::ResourceExhaustedError(absl::StrFormat(
          "QEMU sent a QMP line longer than %u bytes", options_.max_line_bytes)));
    }
  }

  // False once the session has been closed.
  bool HandleLine(std::string_view line) {
    while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.remove_suffix(1);
    if (line.empty()) return true;
    if (line.size() > options_.max_line_bytes) {
      Close(absl::ResourceExhaustedError(absl::StrFormat(
          "QEMU sent a QMP line longer than %u bytes", options_.max_line_bytes)));
      return false;
    }
    Struct msg;
    google::protobuf::util::JsonParseOptions parse;
    parse.ignore_unknown_fields = true;
    const auto st = google::protobuf::util::JsonStringToMessage(
        google::protobuf::StringPiece(line.data(), line.size()), &msg, parse);
    if (!st.ok()) {
      Close(absl::DataLossError(absl::StrFormat("QEMU sent a QMP line that is not a JSON object "
                                                "(%s): %s",
                                                st.message().as_string(), Printable(line, 120))));
      return false;
    }
    const auto& f = msg.fields();
    if (auto it = f.find("event"); it != f.end() && it->second.has_string_value()) {
      QmpEvent event;
      event.name = it->second.string_value();
      if (auto d = f.find("data"); d != f.end() && d->second.has_struct_value()) {
        event.data = d->second.struct_value();
      }
      if (options_.on_event) options_.on_event(event);
      return true;
    }
    auto ret = f.find("return");
    auto err = f.find("error");
    if (ret != f.end() || err != f.end()) {
      auto id = f.find("id");
      if (id == f.end() || !id->second.has_string_value()) return true;  // not ours
      absl::MutexLock l(&mu_);
      auto p = pending_.find(id->second.string_value());
      if (p == pending_.end()) return true;  // its caller gave up waiting
      p->second->is_error = ret == f.end();
      p->second->value = ret != f.end() ? ret->second : err->second;
      p->second->done = true;
      pending_.erase(p);
      return true;
    }
    if (auto it = f.find("QMP"); it != f.end()) {
      absl::MutexLock l(&mu_);
      if (!have_greeting_) {
        if (it->second.has_struct_value()) greeting_ = it->second.struct_value();
        have_greeting_ = true;
      }
    }
    return true;  // anything else is newer QMP than we know: ignored
  }

  void Close(absl::Status why) {
    {
      absl::MutexLock l(&mu_);
      if (closed_) return;
      FailAll(why);
    }
    loop_->Remove(fd_.get());  // on the loop thread: before the next dispatch
    if (options_.on_closed) options_.on_closed(why);
  }

  void FailAll(const absl::Status& why) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    closed_ = true;
    close_reason_ = why;
    for (auto& [id, p] : pending_) {
      p->closed = why;
      p->done = true;
    }
    pending_.clear();
  }

  EventLoop* const loop_;
  const UniqueFd fd_;
  const QmpOptions options_;

  // I/O thread only.
  std::string partial_;  // bytes after the last complete line
  size_t scanned_ = 0;   // partial_ before this holds no '\n'

  absl::Mutex write_mu_;  // one command line at a time on the socket

  mutable absl::Mutex mu_;
  std::map<std::string, Pending*> pending_ ABSL_GUARDED_BY(mu_);
  uint64_t next_id_ ABSL_GUARDED_BY(mu_) = 1;
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status close_reason_ ABSL_GUARDED_BY(mu_);
  bool have_greeting_ ABSL_GUARDED_BY(mu_) = false;
  Struct greeting_;
};

QmpClient::QmpClient(std::shared_ptr<Session> session) : session_(std::move(session)) {}
QmpClient::~QmpClient() = default;

absl::StatusOr<std::unique_ptr<QmpClient>> QmpClient::Connect(const std::string& socket_path,
                                                              QmpOptions options) {
  absl::StatusOr<EventLoop*> loop = SharedLoop();
  if (!loop.ok()) return loop.status();
  absl::StatusOr<sockaddr_un> addr = UnixSocketAddress(socket_path, "QMP socket");
  if (!addr.ok()) return addr.status();
  const absl::Time deadline = absl::Now() + options.connect_timeout;

  // QEMU creates the socket a little after it starts; a QEMU that has a
  // client already leaves the next one in its backlog (or refuses it when
  // the backlog is full: EAGAIN).
  UniqueFd fd;
  for (;;) {
    fd.reset(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    if (!fd.valid()) {
      return absl::InternalError(absl::StrFormat("socket: %s", strerror(errno)));
    }
    if (connect(fd.get(), reinterpret_cast<const sockaddr*>(&*addr), sizeof(*addr)) == 0) break;
    const int err = errno;
    if (err != ENOENT && err != ECONNREFUSED && err != EAGAIN && err != EINTR) {
      return absl::UnavailableError(
          absl::StrFormat("connecting to QMP %s: %s", socket_path, strerror(err)));
    }
    if (options.give_up && options.give_up()) {
      return absl::UnavailableError(absl::StrFormat(
          "QMP %s: gave up connecting (%s); the QEMU behind it is gone", socket_path,
          strerror(err)));
    }
    if (absl::Now() >= deadline) {
      return absl::DeadlineExceededError(
          absl::StrFormat("QMP %s did not accept a connection within %s (last: %s)", socket_path,
                          absl::FormatDuration(options.connect_timeout), strerror(err)));
    }
    absl::SleepFor(absl::Milliseconds(10));
  }

  auto session = std::make_shared<Session>(*loop, std::move(fd), std::move(options));
  if (absl::Status st = session->Start(); !st.ok()) return st;
  std::unique_ptr<QmpClient> client(new QmpClient(session));
  if (absl::Status st = session->AwaitGreeting(deadline, socket_path); !st.ok()) return st;
  const absl::Duration left = std::max(deadline - absl::Now(), absl::Milliseconds(100));
  absl::StatusOr<Value> caps = session->Execute("qmp_capabilities", nullptr, left);
  if (!caps.ok()) return caps.status();
  return client;
}

absl::StatusOr<Value> QmpClient::Execute(const std::string& command, const Struct* arguments,
                                         absl::Duration timeout) {
  return session_->Execute(command, arguments, timeout);
}

const Struct& QmpClient::greeting() const { return session_->greeting(); }
bool QmpClient::closed() const { return session_->closed(); }
bool QmpClient::WaitClosed(absl::Duration timeout) const { return session_->WaitClosed(timeout); }
absl::Status QmpClient::close_reason() const { return session_->close_reason(); }
void QmpClient::Disconnect() { session_->Disconnect(); }

std::string QmpVersionString(const Struct& version) {
  auto q = version.fields().find("qemu");
  if (q == version.fields().end() || !q->second.has_struct_value()) return "";
  const auto& f = q->second.struct_value().fields();
  std::string out;
  for (const char* key : {"major", "minor", "micro"}) {
    auto it = f.find(key);
    if (it == f.end() || !it->second.has_number_value()) return "";
    const double v = it->second.number_value();
    if (v < 0 || v > 1e6) return "";
    absl::StrAppend(&out, out.empty() ? "" : ".", static_cast<int64_t>(v));
  }
  return out;
}

}  // namespace flint::shim
