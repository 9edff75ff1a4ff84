#include "net/passt/passt_backend.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include "absl/strings/str_format.h"
#include "net/passt/deadline.h"

namespace flint::net {
namespace {

// How long passt may take to exit by itself once its socket broke, and after
// SIGTERM on Stop, before it is killed.
constexpr int kExitGraceMs = 100;
constexpr int kStopGraceMs = 200;
// Stop waits at most this long to finish a half-written frame.
constexpr int kFlushMs = 100;
// SO_SNDBUF asked for on passt's end of the stream (capped by net.core.wmem_max).
constexpr int kStreamSendBuffer = 4 << 20;

bool IsDirectory(const std::string& path) {
  struct stat st{};
  return stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

}  // namespace

absl::StatusOr<std::unique_ptr<PasstBackend>> PasstBackend::Create(const NicConfig& config,
                                                                   std::string log_path) {
  if (config.backend != NicConfig::Backend::kPasst) {
    return absl::InvalidArgumentError("PasstBackend::Create needs a passt NIC configuration");
  }
  const char* path = getenv("PATH");
  auto binary = FindInPath("passt", path != nullptr ? path : "/bin:/usr/bin");
  if (!binary.ok()) {
    return absl::NotFoundError("passt not found in PATH: install the Debian package 'passt'");
  }
  if (!config.ipv4.empty()) {
    in_addr addr{};
    if (inet_pton(AF_INET, config.ipv4.c_str(), &addr) != 1) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "passt address '%s' is not an IPv4 address (example: 10.0.2.15)", config.ipv4));
    }
  }
  if (config.mtu != 0 && (config.mtu < 68 || config.mtu > 65520)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("MTU %d is outside 68..65520", config.mtu));
  }
  for (const auto* specs : {&config.tcp, &config.udp}) {
    for (const std::string& spec : *specs) {
      if (spec.empty()) return absl::InvalidArgumentError("an empty passt port forward");
    }
  }
  if (log_path.empty()) return absl::InvalidArgumentError("passt needs a log file path");
  const size_t slash = log_path.rfind('/');
  const std::string dir = slash == std::string::npos ? "." : log_path.substr(0, slash + 1);
  if (!IsDirectory(dir)) {
    return absl::FailedPreconditionError(
        absl::StrFormat("the directory for passt's log %s does not exist", log_path));
  }
  return std::unique_ptr<PasstBackend>(
      new PasstBackend(config, std::move(*binary), std::move(log_path)));
}

PasstBackend::PasstBackend(const NicConfig& config, std::string binary, std::string log_path)
    : config_(config), binary_(std::move(binary)), log_path_(std::move(log_path)) {}

PasstBackend::~PasstBackend() { Stop(); }

std::string PasstBackend::Describe() const {
  const FrameStreamCounters& c = stream_.counters();
  const char* state = state_ == State::kBackoff  ? " state=restarting"
                      : state_ == State::kGaveUp ? " state=failed"
                                                 : "";
  return absl::StrFormat(
      "passt pid=%d restarts=%d log=%s rx_frames=%d tx_frames=%d tx_busy=%d rx_dropped=%d "
      "tx_dropped=%d%s",
      pid(), restarts(), log_path_, c.rx_frames, c.tx_frames, c.tx_busy + tx_busy_down_,
      c.rx_dropped, c.tx_dropped + tx_dropped_down_, state);
}

absl::Status PasstBackend::Start(EventLoop* loop, BackendEvents events) {
  if (!loop->InLoopThread()) {
    absl::Status status;
    loop->RunSync([&] { status = Start(loop, std::move(events)); });
    return status;
  }
  if (state_ != State::kStopped) return absl::FailedPreconditionError("passt already started");
  loop_ = loop;
  events_ = std::move(events);
  timer_.reset(timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC));
  if (!timer_.valid()) {
    return absl::InternalError(absl::StrFormat("timerfd_create failed: %s", strerror(errno)));
  }
  if (absl::Status s = loop_->Add(timer_.get(), [this] { OnTimer(); }); !s.ok()) {
    timer_.reset();
    return s;
  }
  consecutive_failures_ = 0;
  rx_paused_ = false;
  tx_waiting_ = false;
  if (absl::Status s = Launch(); !s.ok()) {
    loop_->Remove(timer_.get());
    timer_.reset();
    return s;
  }
  alive_ = std::make_shared<int>(0);
  state_ = State::kRunning;
  return absl::OkStatus();
}

absl::Status PasstBackend::Launch() {
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
    return absl::InternalError(absl::StrFormat("socketpair failed: %s", strerror(errno)));
  }
  UniqueFd ours(sv[0]);
  UniqueFd theirs(sv[1]);
  // Only our end is non-blocking (SOCK_NONBLOCK on socketpair would set
  // both): passt gets the blocking socket it expects.
  if (fcntl(ours.get(), F_SETFL, O_NONBLOCK) != 0) {
    return absl::InternalError(absl::StrFormat("fcntl(O_NONBLOCK) failed: %s", strerror(errno)));
  }
  // passt's end gets the send buffer passt gives a socket it accepts itself
  // (QEMU's -netdev stream case): with the default (net.core.wmem_default,
  // ~208 KiB) passt's writes met EAGAIN under a flood. The kernel caps the
  // request at net.core.wmem_max (doubled; ~416 KiB with the stock 212992)
  // without failing, and the memory is used only while flint lags. No
  // throughput change beyond the run-to-run spread was measured
  // (bench/README.md): this keeps flint's passt set up like QEMU's. Our end
  // keeps the default: a larger one only moves the loss from the guest's TX
  // ring (back-pressure) to the host's receiving socket.
  if (setsockopt(theirs.get(), SOL_SOCKET, SO_SNDBUF, &kStreamSendBuffer,
                 sizeof(kStreamSendBuffer)) != 0) {
    return absl::InternalError(
        absl::StrFormat("setsockopt(SO_SNDBUF) on passt's socket failed: %s", strerror(errno)));
  }
  auto child =
      ChildProcess::Spawn(binary_, PasstArgs(config_, kPasstChildFd, log_path_), theirs.get());
  if (!child.ok()) return child.status();
  theirs.reset();

  stream_.Attach(ours.get());
  interest_ = rx_paused_ ? 0u : uint32_t{EventLoop::kReadable};
  absl::Status s =
      loop_->AddWatch(ours.get(), interest_, [this](uint32_t ready) { OnSocket(ready); });
  if (s.ok()) {
    s = loop_->Add(child->pidfd(), [this] { OnChildExit(); });
    if (!s.ok()) loop_->Remove(ours.get());
  }
  if (!s.ok()) {
    stream_.Attach(-1);
    child->Finish(0, false);
    return s;
  }
  socket_ = std::move(ours);
  child_.emplace(std::move(*child));
  pid_.store(child_->pid(), std::memory_order_relaxed);
  up_since_ms_ = MonotonicMs();
  return absl::OkStatus();
}

std::string PasstBackend::TearDown(int grace_ms, bool term) {
  if (socket_.valid()) loop_->Remove(socket_.get());
  if (stream_.sender_waiting()) tx_waiting_ = true;
  stream_.Attach(-1);
  // Closing our end also tells a one-off (-1) passt to exit.
  socket_.reset();
  interest_ = 0;
  std::string how = "was not running";
  if (child_.has_value()) {
    loop_->Remove(child_->pidfd());
    how = child_->Finish(grace_ms, term);
    child_.reset();
  }
  pid_.store(-1, std::memory_order_relaxed);
  return how;
}

void PasstBackend::Stop() {
  if (loop_ == nullptr) return;
  if (!loop_->InLoopThread()) {
    loop_->RunSync([this] { Stop(); });
    return;
  }
  if (state_ == State::kStopped) return;
  alive_.reset();
  if (socket_.valid() && stream_.tail_pending()) stream_.FlushTail(kFlushMs);
  TearDown(kStopGraceMs, /*term=*/true);
  loop_->Remove(timer_.get());
  timer_.reset();
  tx_waiting_ = false;
  state_ = State::kStopped;
}

void PasstBackend::Fail(const absl::Status& cause, int grace_ms) {
  if (state_ != State::kRunning) return;
  const pid_t pid = this->pid();
  const std::string how = TearDown(grace_ms, /*term=*/false);
  // passt truncates its log when it starts: keep this one for the user.
  std::string log = log_path_;
  const std::string kept = log_path_ + ".1";
  if (rename(log_path_.c_str(), kept.c_str()) == 0) log = kept;
  std::string why = absl::StrFormat("passt (pid %d) %s", pid, how);
  if (!cause.ok()) absl::StrAppendFormat(&why, " after: %s", cause.message());
  absl::StrAppendFormat(&why, "; see its log %s", log);
  AfterFailure(std::move(why));
}

void PasstBackend::AfterFailure(std::string why) {
  const int64_t now = MonotonicMs();
  // A passt that ran well for a while earns a fresh set of retries.
  if (up_since_ms_ != 0 && now - up_since_ms_ >= kStableUpMs) consecutive_failures_ = 0;
  up_since_ms_ = 0;
  if (consecutive_failures_ >= kMaxRestarts) {
    state_ = State::kGaveUp;
    absl::StrAppendFormat(&why, "; gave up after %d restarts in a row", kMaxRestarts);
    PostFailed(absl::UnavailableError(why), /*recovering=*/false);
    return;
  }
  const int delay_ms = kFirstBackoffMs << consecutive_failures_;
  ++consecutive_failures_;
  itimerspec it{};
  it.it_value.tv_sec = delay_ms / 1000;
  it.it_value.tv_nsec = static_cast<long>(delay_ms % 1000) * 1000000;
  if (timerfd_settime(timer_.get(), 0, &it, nullptr) != 0) {
    state_ = State::kGaveUp;
    absl::StrAppendFormat(&why, "; cannot schedule a restart: timerfd_settime: %s",
                          strerror(errno));
    PostFailed(absl::UnavailableError(why), /*recovering=*/false);
    return;
  }
  state_ = State::kBackoff;
  absl::StrAppendFormat(&why, "; restarting it in %d ms", delay_ms);
  PostFailed(absl::UnavailableError(why), /*recovering=*/true);
}

void PasstBackend::OnTimer() {
  uint64_t expirations;
  ssize_t n = read(timer_.get(), &expirations, sizeof(expirations));
  (void)n;
  if (state_ != State::kBackoff) return;
  if (absl::Status s = Launch(); !s.ok()) {
    AfterFailure(absl::StrFormat("restarting passt failed: %s", s.message()));
    return;
  }
  state_ = State::kRunning;
  restarts_.fetch_add(1, std::memory_order_relaxed);
  PostRestored();
}

void PasstBackend::OnChildExit() {
  if (child_ && !child_->HasExited()) return;  // the polling timer ticked; passt still runs
  Fail(absl::OkStatus(), 0);
}

void PasstBackend::OnSocket(uint32_t ready) {
  if (state_ != State::kRunning) return;
  bool notify_tx = false;
  if ((ready & EventLoop::kWritable) && (interest_ & EventLoop::kWritable)) {
    absl::StatusOr<bool> drained = stream_.OnWritable();
    if (!drained.ok()) {
      Fail(drained.status(), kExitGraceMs);
      return;
    }
    notify_tx = *drained;
  }
  if ((ready & EventLoop::kReadable) && (interest_ & EventLoop::kReadable)) {
    absl::StatusOr<size_t> got = stream_.Fill();
    if (!got.ok()) {
      // A broken framing means passt is alive but useless: no grace.
      Fail(got.status(), got.status().code() == absl::StatusCode::kDataLoss ? 0 : kExitGraceMs);
      return;
    }
  }
  if ((ready & ~interest_) != 0) {
    // An error or hang-up is reported whatever the interest (while rx is
    // paused, say): look at the socket without taking data, or the
    // level-triggered loop would spin on it.
    pollfd p{socket_.get(), POLLIN | POLLRDHUP, 0};
    if (poll(&p, 1, 0) == 1 && (p.revents & (POLLERR | POLLHUP | POLLRDHUP)) != 0) {
      int err = 0;
      socklen_t len = sizeof(err);
      getsockopt(socket_.get(), SOL_SOCKET, SO_ERROR, &err, &len);
      Fail(absl::UnavailableError(err != 0 ? absl::StrFormat("passt's socket failed: %s",
                                                              strerror(err))
                                           : std::string("passt closed its socket")),
           kExitGraceMs);
      return;
    }
  }
  UpdateInterest();
  const bool notify_rx = !rx_paused_ && stream_.has_frame();
  if (notify_tx && events_.tx_ready) {
    events_.tx_ready(0);
    if (state_ != State::kRunning) return;  // the device stopped us
  }
  if (notify_rx && events_.rx_ready) events_.rx_ready(0);
}

void PasstBackend::UpdateInterest() {
  if (!socket_.valid()) return;
  uint32_t want = 0;
  if (!rx_paused_ && stream_.rx_room()) want |= EventLoop::kReadable;
  if (stream_.wants_writable()) want |= EventLoop::kWritable;
  if (want == interest_) return;
  // Fails only for an fd the loop does not watch, which cannot be ours.
  if (loop_->SetInterest(socket_.get(), want).ok()) interest_ = want;
}

SendResult PasstBackend::Send(uint16_t queue, std::span<const iovec> frame) {
  if (queue != 0 || state_ == State::kStopped || state_ == State::kGaveUp) {
    ++tx_dropped_down_;
    return SendResult::kSent;
  }
  if (state_ == State::kBackoff) {
    // Held back, not lost: tx_ready follows link_restored.
    tx_waiting_ = true;
    ++tx_busy_down_;
    return SendResult::kBusy;
  }
  absl::StatusOr<SendResult> r = stream_.Send(frame);
  if (!r.ok()) {
    Fail(r.status(), kExitGraceMs);
    if (state_ != State::kBackoff) {
      ++tx_dropped_down_;
      return SendResult::kSent;
    }
    tx_waiting_ = true;
    ++tx_busy_down_;
    return SendResult::kBusy;
  }
  UpdateInterest();
  return *r;
}

absl::StatusOr<size_t> PasstBackend::Receive(uint16_t queue, std::span<uint8_t> buf) {
  if (queue != 0 || state_ != State::kRunning) return 0;
  // Buffered frames first; with none whole, one read from the socket if the
  // last one may have left data there.
  for (int attempt = 0; attempt < 2; ++attempt) {
    absl::StatusOr<size_t> len = stream_.Next(buf);
    if (!len.ok()) {
      absl::Status s = len.status();
      Fail(s, 0);
      return s;
    }
    if (*len > 0) {
      UpdateInterest();
      return *len;
    }
    // A short read drained the socket: what comes next is announced by
    // the loop (OnSocket), no need to ask the socket again now.
    if (attempt == 1 || !stream_.maybe_more()) break;
    absl::StatusOr<size_t> got = stream_.Fill();
    if (!got.ok()) {
      absl::Status s = got.status();
      Fail(s, s.code() == absl::StatusCode::kDataLoss ? 0 : kExitGraceMs);
      return s;
    }
    if (*got == 0) break;
  }
  UpdateInterest();
  return 0;
}

void PasstBackend::PauseRx(uint16_t queue) {
  if (queue != 0) return;
  rx_paused_ = true;
  UpdateInterest();
}

void PasstBackend::ResumeRx(uint16_t queue) {
  if (queue != 0 || !rx_paused_) return;
  rx_paused_ = false;
  UpdateInterest();
  if (state_ != State::kRunning || !stream_.has_frame()) return;
  // Frames already buffered make the socket no more readable: say so once.
  std::weak_ptr<int> alive = alive_;
  loop_->Post([this, alive] {
    if (alive.expired() || state_ != State::kRunning || rx_paused_) return;
    if (stream_.has_frame() && events_.rx_ready) events_.rx_ready(0);
  });
}

void PasstBackend::PostFailed(absl::Status why, bool recovering) {
  std::weak_ptr<int> alive = alive_;
  loop_->Post([this, alive, why = std::move(why), recovering] {
    if (alive.expired()) return;
    if (events_.failed) events_.failed(why, recovering);
  });
}

void PasstBackend::PostRestored() {
  std::weak_ptr<int> alive = alive_;
  loop_->Post([this, alive] {
    if (alive.expired() || state_ != State::kRunning) return;
    if (events_.link_restored) events_.link_restored();
    // The device may have stopped or replaced us from link_restored.
    if (alive.expired() || state_ != State::kRunning) return;
    if (tx_waiting_) {
      tx_waiting_ = false;
      if (events_.tx_ready) events_.tx_ready(0);
    }
  });
}

}  // namespace flint::net
