// The flint backend: one detached `flint run` per VM, driven over its
// per-VM gRPC API (flint.v1.VmService on VM_DIR/api.sock).
//
// One shim may run hundreds of VMs, so a VM that runs costs the shim next to
// nothing: no thread, no gRPC channel, no stream. While a VM starts, a
// WatchEvents stream (read with the callback API) proves that it ran; then
// the stream and its channel are closed. From then on:
// - flint's end is watched through a pidfd on one process-wide epoll thread
//   (ExitWatcher; without pidfd_open, a 500 ms ProcessAlive poll on the
//   scheduler thread), and read from VM_DIR/stop.json, the stop file flint
//   writes as it exits (vmm/main.cc): no stop file means flint ended
//   without a stop (SIGKILL, a crash) -> Crashed.
// - each command opens a channel for its call and drops it; a state change
//   the shim caused (Pause -> Paused/User, Resume -> Running/Unknown) is
//   reported by the backend itself once flint said yes.
// What the guest does on its own, short of ending flint, is not seen: a
// guest reboot (or a Reset) stays Running, and flint has no guest-initiated
// pause. A Pause/Resume by another flint API client is not seen either.
#include "k8s-shim/flint_backend.h"

#include <google/protobuf/struct.pb.h>
#include <google/protobuf/util/json_util.h>
#include <grpcpp/grpcpp.h>
#include <pthread.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "k8s-shim/files.h"
#include "k8s-shim/process.h"
#include "vmm/kvm/unique_fd.h"
#include "vm_service.grpc.pb.h"

namespace flint::shim {

// ---- the pure parts (flint_backend.h) ----

DomainStatus FlintStopStatus(const std::string& reason, int exit_status, bool stop_requested) {
  const std::string kind = reason.substr(0, reason.find(':'));
  const DomainStatus shutdown{DomainState::kShutoff, "Shutdown"};
  const DomainStatus destroyed{DomainState::kShutoff, "Destroyed"};
  const DomainStatus crashed{DomainState::kCrashed, "Crashed"};
  if (kind == "triple-fault" || kind == "guest-error" || kind == "host-error") return crashed;
  if (kind == "signal" || stop_requested) return destroyed;
  if (kind == "power-off" || kind == "reset") return shutdown;
  // The guest's debug-exit write of v ends flint with (v << 1) | 1: v = 0
  // is the guest's "done", anything else its "failed".
  if (kind == "debug-exit") return exit_status == 1 || exit_status < 0 ? shutdown : crashed;
  return exit_status == 0 ? shutdown : crashed;
}

namespace {

// "key=value key=value key=\"a b\"" -> map (a quoted value may hold spaces).
std::map<std::string, std::string> KeyValues(const std::string& line) {
  std::map<std::string, std::string> out;
  size_t i = 0;
  while (i < line.size()) {
    while (i < line.size() && line[i] == ' ') ++i;
    const size_t key_start = i;
    while (i < line.size() && line[i] != ' ' && line[i] != '=') ++i;
    if (i >= line.size() || line[i] != '=') continue;  // a bare word ("pci", "00:01.0")
    const std::string key = line.substr(key_start, i - key_start);
    ++i;
    std::string value;
    if (i < line.size() && line[i] == '"') {
      const size_t end = line.find('"', i + 1);
      value = line.substr(i + 1, (end == std::string::npos ? line.size() : end) - i - 1);
      i = end == std::string::npos ? line.size() : end + 1;
    } else {
      const size_t end = std::min(line.find(' ', i), line.size());
      value = line.substr(i, end - i);
      i = end;
    }
    out[key] = value;
  }
  return out;
}

uint64_t Num(const std::map<std::string, std::string>& kv, const char* key) {
  auto it = kv.find(key);
  uint64_t v = 0;
  if (it == kv.end() || !absl::SimpleAtoi(it->second, &v)) return 0;
  return v;
}

std::string NameAt(const std::vector<std::string>& names, size_t i) {
  return i < names.size() ? names[i] : "";
}

}  // namespace

void ParseFlintDeviceStats(const std::vector<std::string>& lines,
                           const flint::v1::VmConfig& config,
                           const std::vector<std::string>& disk_names,
                           const std::vector<std::string>& nic_names, BackendStats* out) {
  for (const std::string& line : lines) {
    const std::map<std::string, std::string> kv = KeyValues(line);
    if (kv.count("engine") != 0) {
      const size_t i = out->disks.size();
      DiskStats d;
      d.name = NameAt(disk_names, i);
      if (i < static_cast<size_t>(config.disks_size())) {
        d.path = config.disks(static_cast<int>(i)).path();
      }
      d.read_requests = Num(kv, "reads");
      d.read_bytes = Num(kv, "bytes_read");
      d.write_requests = Num(kv, "writes");
      d.write_bytes = Num(kv, "bytes_written");
      d.flush_requests = Num(kv, "flushes");
      d.errors = Num(kv, "ioerr");
      out->disks.push_back(d);
    } else if (kv.count("rx_frames") != 0) {
      const size_t i = out->nics.size();
      NicStats n;
      n.name = NameAt(nic_names, i);
      if (i < static_cast<size_t>(config.nics_size())) {
        n.mac = config.nics(static_cast<int>(i)).mac();
      }
      n.rx_packets = Num(kv, "rx_frames");
      n.rx_bytes = Num(kv, "rx_bytes");
      n.tx_packets = Num(kv, "tx_frames");
      n.tx_bytes = Num(kv, "tx_bytes");
      // flint counts drops by cause, not by direction: no guest buffer is
      // the receive side's; malformed frames are (nearly always) the
      // guest's own transmissions.
      n.rx_dropped = Num(kv, "drop_no_rx_buffers");
      n.tx_dropped = Num(kv, "drop_short") + Num(kv, "drop_long") + Num(kv, "drop_bad_gso") +
                     Num(kv, "drop_bad_csum");
      out->nics.push_back(n);
    }
  }
}


namespace {

using flint::v1::VmEvent;
using flint::v1::VmService;

constexpr absl::Duration kCallTimeout = absl::Seconds(5);
constexpr absl::Duration kStartTimeout = absl::Seconds(10);
// Kill: Stop, then SIGKILL, within about 10 s in all.
constexpr absl::Duration kStopCallTimeout = absl::Seconds(3);
constexpr absl::Duration kStopGrace = absl::Seconds(2);
constexpr absl::Duration kKillWait = absl::Seconds(5);
// Without pidfd_open, how often a VM's flint is looked for.
constexpr absl::Duration kExitPollInterval = absl::Milliseconds(500);
constexpr const char* kStopFileName = "stop.json";

absl::Status FromGrpc(const grpc::Status& s, const std::string& what) {
  if (s.ok()) return absl::OkStatus();
  const auto code = static_cast<absl::StatusCode>(s.error_code());
  if (s.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) {
    return absl::DeadlineExceededError(
        absl::StrFormat("flint %s: no answer from flint's API in time", what));
  }
  return absl::Status(code, absl::StrFormat("flint %s: %s", what, s.error_message()));
}

std::shared_ptr<grpc::Channel> MakeChannel(const std::string& api_socket) {
  grpc::ChannelArguments args;
  // flint's socket appears moments after it starts; a refused first
  // connection must not cost the default 1 s backoff.
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 50);
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 50);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
  args.SetInt(GRPC_ARG_TCP_READ_CHUNK_SIZE, 1024);
  args.SetInt(GRPC_ARG_TCP_MIN_READ_CHUNK_SIZE, 256);
  args.SetInt(GRPC_ARG_TCP_MAX_READ_CHUNK_SIZE, 4096);
  args.SetInt(GRPC_ARG_HTTP2_BDP_PROBE, 0);
  args.SetInt(GRPC_ARG_ENABLE_RETRIES, 0);
  args.SetInt(GRPC_ARG_ENABLE_CHANNELZ, 0);
  args.SetInt(GRPC_ARG_HTTP2_STREAM_LOOKAHEAD_BYTES, 8192);
  args.SetInt(GRPC_ARG_HTTP2_WRITE_BUFFER_SIZE, 4096);
  args.SetInt(GRPC_ARG_HTTP2_HPACK_TABLE_SIZE_DECODER, 512);
  args.SetInt(GRPC_ARG_HTTP2_HPACK_TABLE_SIZE_ENCODER, 512);
  return grpc::CreateCustomChannel("unix:" + api_socket, grpc::InsecureChannelCredentials(),
                                   args);
}

// flint's stop file (vmm/main.cc): its final KIND_STOPPED event. NOT_FOUND
// when VM_DIR has none.
absl::StatusOr<VmEvent> ReadStopFile(const std::string& vm_dir) {
  const std::string path = vm_dir + "/" + kStopFileName;
  absl::StatusOr<std::string> text = ReadFile(path);
  if (absl::IsNotFound(text.status())) {
    return absl::NotFoundError(absl::StrFormat("flint wrote no stop file %s", path));
  }
  if (!text.ok()) return text.status();
  VmEvent stopped;
  if (auto s = google::protobuf::util::JsonStringToMessage(*text, &stopped); !s.ok()) {
    return absl::DataLossError(
        absl::StrFormat("%s is not flint's stop file: %s", path, std::string(s.message())));
  }
  if (stopped.kind() != VmEvent::KIND_STOPPED) {
    return absl::DataLossError(absl::StrFormat("%s names no stop", path));
  }
  return stopped;
}

// One process-wide thread for every VM's timed follow-ups.
class Scheduler {
 public:
  static Scheduler& Get() {
    static Scheduler* const s = new Scheduler();  // never destroyed: its thread lives on
    return *s;
  }
  void At(absl::Time when, std::function<void()> fn) {
    absl::MutexLock l(&mu_);
    tasks_.emplace(when, std::move(fn));
    cv_.Signal();
  }

 private:
  Scheduler() { std::thread([this] { Loop(); }).detach(); }
  void Loop() {
    // Named, since it may be started from a gRPC thread whose name it would keep.
    pthread_setname_np(pthread_self(), "shim-scheduler");
    absl::MutexLock l(&mu_);
    for (;;) {
      if (tasks_.empty()) {
        cv_.Wait(&mu_);
        continue;
      }
      auto first = tasks_.begin();
      if (first->first > absl::Now()) {
        cv_.WaitWithDeadline(&mu_, first->first);
        continue;
      }
      std::function<void()> fn = std::move(first->second);
      tasks_.erase(first);
      mu_.Unlock();
      fn();
      fn = nullptr;  // what it held goes now, outside mu_
      mu_.Lock();
    }
  }
  absl::Mutex mu_;
  absl::CondVar cv_;
  std::multimap<absl::Time, std::function<void()>> tasks_;
};

struct StartFiles {
  std::string log_path;
  off_t log_offset = 0;        // flint.log's size before this start
  std::string serial_path;     // empty: the serial is not a file
  bool serial_existed = false;
  timespec serial_mtime{};
};


// One process-wide epoll thread that sees every watched VMM process end:
// a pidfd turns readable when its process has exited.
class ExitWatcher {
 public:
  static ExitWatcher& Get() {
    static ExitWatcher* const w = new ExitWatcher();  // never destroyed: its thread lives on
    return *w;
  }
  // Calls `on_exit` once, on the watcher thread, when the process behind
  // `pidfd` has exited, unless Remove(id) came first. 0: not watched (epoll
  // failed; the caller polls instead).
  uint64_t Add(UniqueFd pidfd, std::function<void()> on_exit) {
    if (!epoll_.valid()) return 0;
    absl::MutexLock l(&mu_);
    const uint64_t id = ++next_id_;
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = id;
    if (epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, pidfd.get(), &ev) != 0) return 0;
    watched_.emplace(id, Watched{std::move(pidfd), std::move(on_exit)});
    return id;
  }
  // After Remove returns, `on_exit` is not called (unless it runs already).
  void Remove(uint64_t id) {
    Watched gone;
    {
      absl::MutexLock l(&mu_);
      auto it = watched_.find(id);
      if (it == watched_.end()) return;
      gone = std::move(it->second);
      watched_.erase(it);
    }
    // Closing the pidfd (its only reference) takes it out of the epoll set;
    // on_exit's captures go outside mu_.
  }

 private:
  struct Watched {
    UniqueFd pidfd;
    std::function<void()> on_exit;
  };
  ExitWatcher() : epoll_(epoll_create1(EPOLL_CLOEXEC)) {
    if (epoll_.valid()) std::thread([this] { Loop(); }).detach();
  }
  void Loop() {
    pthread_setname_np(pthread_self(), "shim-exits");
    epoll_event events[16];
    for (;;) {
      const int n = epoll_wait(epoll_.get(), events, 16, -1);
      if (n < 0 && errno != EINTR) {
        std::fprintf(stderr, "flint-shim: epoll_wait: %s\n", strerror(errno));
        return;
      }
      for (int i = 0; i < n; ++i) {
        Watched done;
        {
          absl::MutexLock l(&mu_);
          auto it = watched_.find(events[i].data.u64);
          if (it == watched_.end()) continue;  // removed meanwhile
          done = std::move(it->second);
          watched_.erase(it);
        }
        done.pidfd.reset();
        done.on_exit();
      }
    }
  }
  const UniqueFd epoll_;
  absl::Mutex mu_;
  uint64_t next_id_ ABSL_GUARDED_BY(mu_) = 0;
  std::map<uint64_t, Watched> watched_ ABSL_GUARDED_BY(mu_);
};

// The VM's shared state: held by the Backend, by its start-phase stream
// and by scheduled follow-ups, so none of them outlives what it touches.
class FlintVm : public std::enable_shared_from_this<FlintVm> {
 public:
  FlintVm(std::string vm_dir, std::string api_socket, flint::v1::VmConfig config,
          std::vector<std::string> disk_names, std::vector<std::string> nic_names, EventSink sink)
      : vm_dir_(std::move(vm_dir)), api_socket_(std::move(api_socket)),
        log_path_(vm_dir_ + "/flint.log"), config_(std::move(config)),
        disk_names_(std::move(disk_names)), nic_names_(std::move(nic_names)),
        sink_(std::move(sink)) {}

  // ---- setup (before anything runs concurrently) ----
  void SetProcess(ProcessId id) { proc_ = id; }
  // The start phase's channel (for its WatchEvents stream).
  void Connect() {
    channel_ = MakeChannel(api_socket_);
    stub_ = VmService::NewStub(channel_);
  }
  bool connected() const { return stub_ != nullptr; }

  // Opens a WatchEvents stream unless one is open or the backend is closed.
  void StartWatch();
  // The start is over: closes the stream and its channel.
  void EndStartPhase();
  // From now on flint's end is watched (ExitWatcher or polling).
  void Arm();
  // Status before any event (Attach: from GetInfo).
  void SetInitial(const DomainStatus& s, bool running) {
    absl::MutexLock l(&mu_);
    status_ = s;
    reported_ = s;  // what the shim knew before (it reports Status() itself)
    observed_running_ = running;
  }
  void SetVersion(const std::string& v) {
    absl::MutexLock l(&mu_);
    version_ = v;
  }

  // ---- StartFlint's wait ----
  // Whether the stream saw the VM run (or stop), waiting up to `timeout`.
  bool WaitObserved(absl::Duration timeout) {
    absl::MutexLock l(&mu_);
    mu_.AwaitWithTimeout(absl::Condition(
                             +[](FlintVm* vm) { return vm->observed_running_ || vm->stop_seen_; },
                             this),
                         timeout);
    return observed_running_ || stop_seen_;
  }
  bool WaitStreamDone(absl::Duration timeout) {
    absl::MutexLock l(&mu_);
    return mu_.AwaitWithTimeout(
        absl::Condition(+[](FlintVm* vm) { return !vm->watch_active_; }, this), timeout);
  }
  bool watch_active() {
    absl::MutexLock l(&mu_);
    return watch_active_;
  }
  // flint exited before any stream saw its VM: settle what happened from
  // its stop file, log and console. OK (events queued) when the VM ran;
  // else the error.
  absl::Status SettleEarlyExit(const StartFiles& files);

  // ---- the stream's callbacks ----
  void OnEvent(const VmEvent& e);
  // Returns FlintVm's reference to the stream's context, for the caller to
  // drop off the gRPC thread.
  std::shared_ptr<grpc::ClientContext> OnWatchDone();

  // ---- the Backend ----
  void Close();
  void FillRecord(flint::shim::v1::VmRecord* record) const {
    record->set_backend("flint");
    record->set_pid(proc_.pid);
    record->set_pid_start_time(proc_.start_time);
    record->set_api_socket(api_socket_);
    record->set_vm_dir(vm_dir_);
  }
  DomainStatus Status() {
    absl::MutexLock l(&mu_);
    return status_;
  }
  absl::Status Pause();
  absl::Status Resume();
  absl::Status Reset();
  absl::Status Shutdown(absl::Duration grace);
  absl::Status Kill();
  absl::StatusOr<BackendStats> Stats();
  std::string Version();
  absl::StatusOr<flint::v1::GetInfoResponse> GetInfo();

  const ProcessId& process() const { return proc_; }
  const std::string& log_path() const { return log_path_; }

 private:
  class Watch;

  // One call on a channel of its own, made and dropped here on the
  // caller's thread (never a gRPC callback thread, where the last channel's
  // end must not run): a VM between commands holds no connection.
  template <typename Fn>
  absl::Status Call(const std::string& what, absl::Duration timeout, Fn fn) {
    if (!ProcessAlive(proc_)) {
      return absl::FailedPreconditionError(
          absl::StrFormat("flint %s: flint (pid %d) has exited", what, proc_.pid));
    }
    std::shared_ptr<grpc::Channel> channel = MakeChannel(api_socket_);
    std::unique_ptr<VmService::Stub> stub = VmService::NewStub(channel);
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
    return FromGrpc(fn(stub.get(), &ctx), what);
  }
  // FAILED_PRECONDITION once the VM has stopped for good.
  absl::Status CheckLive();
  // A change the shim caused: Status() says so at once, the sink hears it
  // from the scheduler thread (never the caller's, which may hold locks the
  // sink takes).
  void Changed(const DomainStatus& status, const std::string& detail);
  // Reports a non-final change unless the end was reported already.
  void ReportChange(const BackendEvent& e);
  // flint is gone: the final event from its stop file.
  void OnProcessGone();
  void SchedulePoll(absl::Duration delay);
  void Deliver(const BackendEvent& e);

  const std::string vm_dir_, api_socket_, log_path_;
  const flint::v1::VmConfig config_;
  const std::vector<std::string> disk_names_, nic_names_;
  const EventSink sink_;
  ProcessId proc_;
  // The start phase's channel; null once the start is over.
  std::shared_ptr<grpc::Channel> channel_;
  std::shared_ptr<VmService::Stub> stub_;

  absl::Mutex deliver_mu_;  // held around sink_ calls, so Close() can wait them out
  absl::Mutex mu_;
  DomainStatus status_ ABSL_GUARDED_BY(mu_);    // the best knowledge, for Status()
  DomainStatus reported_ ABSL_GUARDED_BY(mu_);  // what the sink was last told
  std::string version_ ABSL_GUARDED_BY(mu_);
  bool observed_running_ ABSL_GUARDED_BY(mu_) = false;
  bool stop_seen_ ABSL_GUARDED_BY(mu_) = false;        // KIND_STOPPED arrived
  bool final_delivered_ ABSL_GUARDED_BY(mu_) = false;  // the last event went out
  bool kill_requested_ ABSL_GUARDED_BY(mu_) = false;
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
  std::string reset_reason_ ABSL_GUARDED_BY(mu_);  // set between RESET and STARTED
  bool watch_active_ ABSL_GUARDED_BY(mu_) = false;
  std::shared_ptr<grpc::ClientContext> watch_ctx_ ABSL_GUARDED_BY(mu_);
  uint64_t exit_watch_ ABSL_GUARDED_BY(mu_) = 0;  // the ExitWatcher id; 0: none
};

// The start phase's WatchEvents stream. Deletes itself when the call is done.
class FlintVm::Watch : public grpc::ClientReadReactor<VmEvent> {
 public:
  Watch(std::shared_ptr<FlintVm> vm, std::shared_ptr<grpc::ClientContext> ctx)
      : vm_(std::move(vm)), ctx_(std::move(ctx)) {}
  void Start() {
    vm_->stub_->async()->WatchEvents(ctx_.get(), &request_, this);
    StartRead(&event_);
    StartCall();
  }
  void OnReadDone(bool ok) override {
    if (!ok) return;  // the stream is over; OnDone follows
    vm_->OnEvent(event_);
    StartRead(&event_);
  }
  void OnDone(const grpc::Status&) override {
    std::shared_ptr<grpc::ClientContext> vm_copy = vm_->OnWatchDone();
    // These may hold the last reference to the channel (a ClientContext
    // holds its channel too), and ~Channel must not run on a gRPC callback
    // thread: the process's last channel tears the callback threads down,
    // joining this one, and frees the queue this thread still serves. The
    // scheduler thread lets go of them instead.
    Scheduler::Get().At(absl::InfinitePast(), [vm = std::move(vm_), ctx = std::move(ctx_),
                                                vm_copy = std::move(vm_copy)] {});
    delete this;
  }

 private:
  std::shared_ptr<FlintVm> vm_;
  std::shared_ptr<grpc::ClientContext> ctx_;  // shared with FlintVm, which may cancel it
  flint::v1::WatchEventsRequest request_;
  VmEvent event_;
};

void FlintVm::StartWatch() {
  std::shared_ptr<grpc::ClientContext> ctx = std::make_shared<grpc::ClientContext>();
  {
    absl::MutexLock l(&mu_);
    if (closed_ || watch_active_ || stub_ == nullptr) return;
    watch_active_ = true;
    watch_ctx_ = ctx;
  }
  // Started outside mu_: gRPC may run the reactor's callbacks inline.
  (new Watch(shared_from_this(), std::move(ctx)))->Start();
}

void FlintVm::EndStartPhase() {
  std::shared_ptr<grpc::ClientContext> ctx;
  {
    absl::MutexLock l(&mu_);
    ctx = watch_ctx_;
  }
  // Outside mu_: the reactor's OnDone may run inline. What the stream read
  // before the cancel has been handled once it is done.
  if (ctx != nullptr) ctx->TryCancel();
  WaitStreamDone(absl::InfiniteDuration());
  // The last reference to the channel goes on the scheduler thread, as the
  // stream's do (the caller may be a gRPC thread).
  Scheduler::Get().At(absl::InfinitePast(),
                      [channel = std::move(channel_), stub = std::move(stub_)] {});
}

void FlintVm::Arm() {
  {
    absl::MutexLock l(&mu_);
    if (closed_ || final_delivered_) return;
  }
  std::weak_ptr<FlintVm> weak = weak_from_this();
  auto gone = [weak] {
    if (std::shared_ptr<FlintVm> vm = weak.lock()) vm->OnProcessGone();
  };
  UniqueFd pidfd(static_cast<int>(syscall(SYS_pidfd_open, proc_.pid, 0)));
  const int open_errno = errno;
  if (pidfd.valid() || open_errno == ESRCH) {
    // The pidfd names whichever process had the pid when it was opened: the
    // start time, read after that, proves it is flint.
    if (!ProcessAlive(proc_)) {
      Scheduler::Get().At(absl::InfinitePast(), gone);
      return;
    }
    if (const uint64_t id = ExitWatcher::Get().Add(std::move(pidfd), gone); id != 0) {
      absl::MutexLock l(&mu_);
      exit_watch_ = id;
      return;
    }
  }
  // No pidfd_open (a kernel before 5.3) or no epoll: look every 500 ms.
  SchedulePoll(kExitPollInterval);
}

void FlintVm::SchedulePoll(absl::Duration delay) {
  std::weak_ptr<FlintVm> weak = weak_from_this();
  Scheduler::Get().At(absl::Now() + delay, [weak] {
    std::shared_ptr<FlintVm> vm = weak.lock();
    if (vm == nullptr) return;
    {
      absl::MutexLock l(&vm->mu_);
      if (vm->closed_ || vm->final_delivered_) return;
    }
    if (ProcessAlive(vm->proc_)) {
      vm->SchedulePoll(kExitPollInterval);
    } else {
      vm->OnProcessGone();
    }
  });
}

void FlintVm::OnEvent(const VmEvent& e) {
  std::optional<BackendEvent> booted;  // a boot the stream only implied
  std::optional<BackendEvent> out;
  {
    absl::MutexLock l(&mu_);
    switch (e.kind()) {
      case VmEvent::KIND_UNSPECIFIED:
        // The state when the stream began (its reason is the state's name):
        // news only if it differs from what we know.
        if (e.reason() == "VM_STATE_RUNNING") {
          observed_running_ = true;
          if (!final_delivered_) {
            if (status_.state != DomainState::kRunning) {
              status_ = {DomainState::kRunning,
                         status_.state == DomainState::kPaused ? "Unknown" : "Booted"};
            }
            if (reported_.state != DomainState::kRunning) out = BackendEvent{status_, "running"};
          }
        } else if (e.reason() == "VM_STATE_PAUSED") {
          observed_running_ = true;
          if (!final_delivered_) {
            status_ = {DomainState::kPaused, "User"};
            if (reported_.state != DomainState::kPaused) out = BackendEvent{status_, "paused"};
          }
        }
        break;
      case VmEvent::KIND_STARTED:
        observed_running_ = true;
        status_ = {DomainState::kRunning, "Booted"};
        out = BackendEvent{status_, reset_reason_.empty()
                                        ? "booted"
                                        : "booted again after " + reset_reason_};
        reset_reason_.clear();
        break;
      case VmEvent::KIND_PAUSED:
        status_ = {DomainState::kPaused, "User"};
        out = BackendEvent{status_, "paused"};
        break;
      case VmEvent::KIND_RESUMED:
        status_ = {DomainState::kRunning, "Unknown"};
        out = BackendEvent{status_, "resumed"};
        break;
      case VmEvent::KIND_RESET:
        // The machine reboots inside flint; KIND_STARTED follows and is the
        // event the shim reports.
        reset_reason_ = e.reason().empty() ? "a reset" : e.reason();
        break;
      case VmEvent::KIND_STOPPED:
        // flint stops only a VM that started; a stream subscribed after
        // KIND_STARTED, just as the VM stopped, saw the state STOPPED and
        // then this: the boot is reported first.
        if (reported_.state == DomainState::kNoState && !final_delivered_) {
          booted = BackendEvent{{DomainState::kRunning, "Booted"}, "booted"};
        }
        observed_running_ = true;
        stop_seen_ = true;
        status_ = FlintStopStatus(e.reason(), e.exit_status(), kill_requested_);
        if (!final_delivered_) {
          final_delivered_ = true;
          out = BackendEvent{
              status_, absl::StrFormat("%s (flint exit status %d)", e.reason(), e.exit_status())};
        }
        break;
      default:
        break;
    }
    if (out.has_value()) reported_ = out->status;
  }
  if (booted.has_value()) Deliver(*booted);
  if (out.has_value()) Deliver(*out);
}

std::shared_ptr<grpc::ClientContext> FlintVm::OnWatchDone() {
  absl::MutexLock l(&mu_);
  watch_active_ = false;
  return std::move(watch_ctx_);
}

void FlintVm::OnProcessGone() {
  bool kill_requested;
  {
    absl::MutexLock l(&mu_);
    if (closed_ || final_delivered_) return;
    kill_requested = kill_requested_;
  }
  BackendEvent e;
  absl::StatusOr<VmEvent> stop = ReadStopFile(vm_dir_);
  if (stop.ok()) {
    e.status = FlintStopStatus(stop->reason(), stop->exit_status(), kill_requested);
    e.detail = absl::StrFormat("%s (flint exit status %d)", stop->reason(), stop->exit_status());
  } else if (kill_requested) {
    e.status = {DomainState::kShutoff, "Destroyed"};
    e.detail = "flint was killed after the stop request";
  } else {
    e.status = {DomainState::kCrashed, "Crashed"};
    const std::string tail = LogTail(log_path_, 800);
    e.detail = absl::StrFormat("flint (pid %d) ended without reporting a stop (%s)%s%s", proc_.pid,
                               stop.status().message(), tail.empty() ? "" : "; its log ends: ",
                               tail);
  }
  absl::MutexLock d(&deliver_mu_);
  {
    absl::MutexLock l(&mu_);
    if (closed_ || final_delivered_) return;
    final_delivered_ = true;
    status_ = e.status;
    reported_ = e.status;
  }
  if (sink_) sink_(e);
}

void FlintVm::Changed(const DomainStatus& status, const std::string& detail) {
  {
    absl::MutexLock l(&mu_);
    if (final_delivered_) return;
    status_ = status;
  }
  std::weak_ptr<FlintVm> weak = weak_from_this();
  Scheduler::Get().At(absl::InfinitePast(), [weak, e = BackendEvent{status, detail}] {
    if (std::shared_ptr<FlintVm> vm = weak.lock()) vm->ReportChange(e);
  });
}

void FlintVm::ReportChange(const BackendEvent& e) {
  absl::MutexLock d(&deliver_mu_);
  {
    absl::MutexLock l(&mu_);
    if (closed_ || final_delivered_) return;
    reported_ = e.status;
  }
  if (sink_) sink_(e);
}

void FlintVm::Deliver(const BackendEvent& e) {
  absl::MutexLock d(&deliver_mu_);
  {
    absl::MutexLock l(&mu_);
    if (closed_) return;
  }
  if (sink_) sink_(e);
}

void FlintVm::Close() {
  std::shared_ptr<grpc::ClientContext> ctx;
  uint64_t exit_watch;
  {
    absl::MutexLock l(&mu_);
    closed_ = true;
    ctx = watch_ctx_;
    exit_watch = exit_watch_;
    exit_watch_ = 0;
  }
  if (exit_watch != 0) ExitWatcher::Get().Remove(exit_watch);
  // Outside mu_: the reactor's OnDone may run inline.
  if (ctx != nullptr) ctx->TryCancel();
  { absl::MutexLock d(&deliver_mu_); }  // a sink call in progress finishes first
  WaitStreamDone(absl::InfiniteDuration());
}

absl::Status FlintVm::CheckLive() {
  absl::MutexLock l(&mu_);
  if (final_delivered_ || stop_seen_) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "the VM has stopped (%s/%s)", DomainStateName(status_.state), status_.reason));
  }
  return absl::OkStatus();
}

absl::StatusOr<flint::v1::GetInfoResponse> FlintVm::GetInfo() {
  flint::v1::GetInfoResponse r;
  absl::Status s =
      Call("GetInfo", kCallTimeout, [&](VmService::Stub* stub, grpc::ClientContext* c) {
        return stub->GetInfo(c, flint::v1::GetInfoRequest(), &r);
      });
  if (!s.ok()) return s;
  return r;
}

absl::Status FlintVm::Pause() {
  if (absl::Status s = CheckLive(); !s.ok()) return s;
  flint::v1::PauseResponse r;
  absl::Status s = Call("Pause", kCallTimeout, [&](VmService::Stub* stub, grpc::ClientContext* c) {
    return stub->Pause(c, flint::v1::PauseRequest(), &r);
  });
  if (s.ok()) Changed({DomainState::kPaused, "User"}, "paused");
  return s;
}

absl::Status FlintVm::Resume() {
  if (absl::Status s = CheckLive(); !s.ok()) return s;
  flint::v1::ResumeResponse r;
  absl::Status s = Call("Resume", kCallTimeout, [&](VmService::Stub* stub, grpc::ClientContext* c) {
    return stub->Resume(c, flint::v1::ResumeRequest(), &r);
  });
  if (s.ok()) Changed({DomainState::kRunning, "Unknown"}, "resumed");
  return s;
}

// The machine reboots inside flint and stays Running: no event.
absl::Status FlintVm::Reset() {
  if (absl::Status s = CheckLive(); !s.ok()) return s;
  flint::v1::ResetResponse r;
  return Call("Reset", kCallTimeout, [&](VmService::Stub* stub, grpc::ClientContext* c) {
    return stub->Reset(c, flint::v1::ResetRequest(), &r);
  });
}

absl::Status FlintVm::Shutdown(absl::Duration grace) {
  if (absl::Status s = CheckLive(); !s.ok()) return s;
  flint::v1::ShutdownRequest req;
  const int64_t secs = absl::ToInt64Seconds(absl::Ceil(grace, absl::Seconds(1)));
  req.set_timeout_seconds(static_cast<uint32_t>(std::clamp<int64_t>(secs, 0, UINT32_MAX)));
  flint::v1::ShutdownResponse r;
  // flint presses the ACPI power button and stops the VM itself after the
  // grace; the end comes from the stop file.
  return Call("Shutdown", kCallTimeout, [&](VmService::Stub* stub, grpc::ClientContext* c) {
    return stub->Shutdown(c, req, &r);
  });
}

absl::Status FlintVm::Kill() {
  {
    absl::MutexLock l(&mu_);
    kill_requested_ = true;
  }
  if (ProcessAlive(proc_)) {
    flint::v1::StopResponse r;
    absl::Status stop =
        Call("Stop", kStopCallTimeout, [&](VmService::Stub* stub, grpc::ClientContext* c) {
          return stub->Stop(c, flint::v1::StopRequest(), &r);
        });
    // A Stop that failed (flint wedged, or between two boots) leaves SIGKILL.
    if (!WaitProcessGone(proc_, stop.ok() ? kStopGrace : absl::ZeroDuration())) {
      KillProcess(proc_);
      if (!WaitProcessGone(proc_, kKillWait)) {
        return absl::DeadlineExceededError(absl::StrFormat(
            "flint (pid %d) is still there %s after SIGKILL", proc_.pid,
            absl::FormatDuration(kKillWait)));
      }
    }
  }
  // Status() says so at once; the event follows from the exit watcher.
  absl::MutexLock l(&mu_);
  if (!final_delivered_) status_ = {DomainState::kShutoff, "Destroyed"};
  return absl::OkStatus();
}

absl::StatusOr<BackendStats> FlintVm::Stats() {
  if (absl::Status s = CheckLive(); !s.ok()) return s;
  absl::StatusOr<flint::v1::GetInfoResponse> info = GetInfo();
  if (!info.ok()) return info.status();
  flint::v1::GetStatsResponse st;
  absl::Status s =
      Call("GetStats", kCallTimeout, [&](VmService::Stub* stub, grpc::ClientContext* c) {
        return stub->GetStats(c, flint::v1::GetStatsRequest(), &st);
      });
  if (!s.ok()) return s;
  BackendStats out;
  out.vcpus = info->vcpus();
  out.memory_bytes = info->memory_bytes();
  out.total_exits = st.total_exits();
  ParseFlintDeviceStats({st.devices().begin(), st.devices().end()}, config_, disk_names_,
                        nic_names_, &out);
  absl::StatusOr<ProcessUsage> usage = ReadProcessUsage(proc_.pid);
  if (usage.ok() && ProcessAlive(proc_)) {
    out.rss_bytes = usage->rss_bytes;
    out.cpu_time_ns = usage->cpu_time_ns;
  }
  return out;
}

std::string FlintVm::Version() {
  {
    absl::MutexLock l(&mu_);
    if (!version_.empty()) return version_;
  }
  absl::StatusOr<flint::v1::GetInfoResponse> info = GetInfo();
  if (!info.ok()) return "";
  SetVersion(info->version());
  return info->version();
}

// The bytes flint appended to its log since `offset`.
std::string LogSince(const std::string& path, off_t offset, size_t max_bytes) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return "";
  in.seekg(0, std::ios::end);
  const off_t size = static_cast<off_t>(in.tellg());
  off_t from = std::max<off_t>(offset, size - static_cast<off_t>(max_bytes));
  if (from > size) from = size;
  in.seekg(from);
  std::string text(static_cast<size_t>(size - from), '\0');
  in.read(text.data(), static_cast<std::streamsize>(text.size()));
  text.resize(static_cast<size_t>(in.gcount()));
  while (!text.empty() && text.back() == '\n') text.pop_back();
  return text;
}

absl::Status FlintVm::SettleEarlyExit(const StartFiles& files) {
  const std::string log = LogSince(files.log_path, files.log_offset, 4000);
  // flint says "flint: VM stopped (KIND): DETAIL" for every stop but the
  // guest's debug-exit.
  constexpr std::string_view kStopped = "flint: VM stopped (";
  std::optional<BackendEvent> final_event;
  // StartFlint removed any earlier stop file: one now is this run's.
  if (absl::StatusOr<VmEvent> stop = ReadStopFile(vm_dir_); stop.ok()) {
    final_event = BackendEvent{FlintStopStatus(stop->reason(), stop->exit_status(), false),
                               absl::StrFormat("%s (flint exit status %d)", stop->reason(),
                                               stop->exit_status())};
  } else if (size_t at = log.find(kStopped); at != std::string::npos) {
    const size_t line_end = std::min(log.find('\n', at), log.size());
    size_t kind_end = log.find(')', at);
    if (kind_end == std::string::npos || kind_end > line_end) kind_end = line_end;
    const std::string kind = log.substr(at + kStopped.size(), kind_end - at - kStopped.size());
    const std::string detail =
        kind_end + 3 <= line_end ? log.substr(kind_end + 3, line_end - kind_end - 3) : "";
    const std::string reason = kind + ": " + detail;
    final_event = BackendEvent{FlintStopStatus(reason, -1, false), reason};
  } else if (!files.serial_path.empty()) {
    // No word from flint: a guest that printed on this run's (truncated)
    // console ran, then left through the debug-exit port.
    struct stat st;
    if (stat(files.serial_path.c_str(), &st) == 0 && st.st_size > 0 &&
        (!files.serial_existed || st.st_mtim.tv_sec != files.serial_mtime.tv_sec ||
         st.st_mtim.tv_nsec != files.serial_mtime.tv_nsec)) {
      final_event = BackendEvent{{DomainState::kShutoff, "Shutdown"},
                                 "debug-exit: the guest stopped itself at once"};
    }
  }
  if (!final_event.has_value()) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "flint exited before the VM ran%s%s", log.empty() ? " (its log is empty)" : ": ", log));
  }
  {
    absl::MutexLock l(&mu_);
    observed_running_ = true;
    stop_seen_ = true;
    final_delivered_ = true;
    status_ = final_event->status;
    reported_ = final_event->status;
  }
  // Both events from the scheduler thread, as every other event comes from
  // a backend thread.
  std::weak_ptr<FlintVm> weak = weak_from_this();
  BackendEvent booted{{DomainState::kRunning, "Booted"}, "booted"};
  Scheduler::Get().At(absl::Now(), [weak, booted, last = *final_event] {
    if (std::shared_ptr<FlintVm> vm = weak.lock()) {
      vm->Deliver(booted);
      vm->Deliver(last);
    }
  });
  return absl::OkStatus();
}

class FlintBackend final : public Backend {
 public:
  explicit FlintBackend(std::shared_ptr<FlintVm> vm) : vm_(std::move(vm)) {}
  // Stops watching; never stops the VM.
  ~FlintBackend() override { vm_->Close(); }

  const char* kind() const override { return "flint"; }
  void FillRecord(flint::shim::v1::VmRecord* record) const override { vm_->FillRecord(record); }
  DomainStatus Status() override { return vm_->Status(); }
  absl::Status Pause() override { return vm_->Pause(); }
  absl::Status Resume() override { return vm_->Resume(); }
  absl::Status Reset() override { return vm_->Reset(); }
  absl::Status Shutdown(absl::Duration grace) override { return vm_->Shutdown(grace); }
  absl::Status Kill() override { return vm_->Kill(); }
  absl::StatusOr<BackendStats> Stats() override { return vm_->Stats(); }
  std::string Version() override { return vm_->Version(); }

 private:
  std::shared_ptr<FlintVm> vm_;
};

bool IsSocket(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0 && S_ISSOCK(st.st_mode);
}

}  // namespace

absl::StatusOr<std::unique_ptr<Backend>> StartFlint(const LaunchSpec& spec,
                                                    const BackendPrograms& programs,
                                                    EventSink sink) {
  struct stat st;
  if (stat(spec.vm_dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    return absl::FailedPreconditionError(
        absl::StrFormat("the VM directory %s does not exist", spec.vm_dir));
  }
  const std::string api_socket = spec.vm_dir + "/api.sock";
  if (api_socket.size() >= sizeof(sockaddr_un::sun_path)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "the VM directory %s is too long for a UNIX socket path (%s has %u of at most %u bytes)",
        spec.vm_dir, api_socket, api_socket.size(), sizeof(sockaddr_un::sun_path) - 1));
  }

  flint::v1::VmConfig config = spec.config;
  if (config.serial().empty()) config.set_serial("file:" + spec.vm_dir + "/serial.log");
  std::string json;
  google::protobuf::util::JsonPrintOptions print;
  print.preserve_proto_field_names = true;
  print.add_whitespace = true;
  if (auto s = google::protobuf::util::MessageToJsonString(config, &json, print); !s.ok()) {
    return absl::InternalError(
        absl::StrFormat("VmConfig to JSON: %s", std::string(s.message())));
  }
  const std::string config_path = spec.vm_dir + "/config.json";
  if (absl::Status s = WriteFileAtomic(config_path, json); !s.ok()) return s;

  auto vm = std::make_shared<FlintVm>(spec.vm_dir, api_socket, config, spec.disk_names,
                                      spec.nic_names, std::move(sink));
  auto backend = std::make_unique<FlintBackend>(vm);  // closes the stream on every return

  StartFiles files;
  files.log_path = vm->log_path();
  if (stat(files.log_path.c_str(), &st) == 0) files.log_offset = st.st_size;
  if (absl::StartsWith(config.serial(), "file:")) {
    files.serial_path = config.serial().substr(5);
    if (stat(files.serial_path.c_str(), &st) == 0) {
      files.serial_existed = true;
      files.serial_mtime = st.st_mtim;
    }
  }
  // flint removes a stale stop file itself, but only once it runs: a flint
  // that fails before that must not leave an old one to be read as this
  // run's end.
  if (unlink((spec.vm_dir + "/" + kStopFileName).c_str()) != 0 && errno != ENOENT) {
    return absl::InternalError(absl::StrFormat("cannot remove the old stop file in %s: %s",
                                               spec.vm_dir, strerror(errno)));
  }
  // TAP fds the launcher handed over keep their numbers in flint.
  std::vector<int> keep_fds;
  for (const flint::v1::Nic& nic : config.nics()) {
    if (nic.has_tap() && nic.tap().name().empty() && nic.tap().fd() >= 3) {
      keep_fds.push_back(nic.tap().fd());
    }
  }
  absl::StatusOr<ProcessId> proc = SpawnDetached(
      {programs.flint, "run", "--config", config_path, "--api-socket", api_socket, "--state-dir",
       spec.vm_dir},
      files.log_path, keep_fds);
  if (!proc.ok()) return proc.status();
  vm->SetProcess(*proc);
  if (spec.on_spawned) spec.on_spawned(*proc, api_socket);

  // Up to the VM running: watch as soon as the socket is there (flint only
  // tells subscribers what happens after they subscribe).
  const absl::Time deadline = absl::Now() + kStartTimeout;
  absl::Time last_watch = absl::InfinitePast();
  for (;;) {
    if (!vm->connected() && IsSocket(api_socket)) vm->Connect();
    if (vm->connected() && absl::Now() - last_watch >= absl::Milliseconds(20) &&
        !vm->watch_active()) {
      last_watch = absl::Now();
      vm->StartWatch();
    }
    if (vm->WaitObserved(absl::Milliseconds(2))) break;
    if (!ProcessAlive(*proc)) {
      // Whatever flint published before it exited is in the stream's queue.
      vm->WaitStreamDone(absl::Seconds(1));
      if (vm->WaitObserved(absl::ZeroDuration())) break;
      if (absl::Status s = vm->SettleEarlyExit(files); !s.ok()) return s;
      break;
    }
    if (absl::Now() >= deadline) {
      backend.reset();  // stop watching before flint goes
      KillProcess(*proc);
      WaitProcessGone(*proc, kKillWait);
      return absl::DeadlineExceededError(absl::StrFormat(
          "flint (pid %d) did not run the VM within %s (killed); its log ends: %s", proc->pid,
          absl::FormatDuration(kStartTimeout), LogTail(files.log_path, 1000)));
    }
  }
  // The stream proved the VM ran; from here on the VM holds no connection.
  vm->EndStartPhase();
  vm->Arm();
  if (absl::StatusOr<flint::v1::GetInfoResponse> info = vm->GetInfo(); info.ok()) {
    vm->SetVersion(info->version());
  }
  return std::unique_ptr<Backend>(std::move(backend));
}

absl::StatusOr<std::unique_ptr<Backend>> AttachFlint(const flint::shim::v1::VmRecord& record,
                                                     EventSink sink) {
  const ProcessId id{record.pid(), record.pid_start_time()};
  if (!ProcessAlive(id)) {
    return absl::NotFoundError(absl::StrFormat(
        "flint (pid %d, start time %u) of VM %s is gone", id.pid, id.start_time, record.id()));
  }
  if (record.api_socket().empty()) {
    return absl::InvalidArgumentError(
        absl::StrFormat("the record of VM %s names no api_socket", record.id()));
  }
  auto vm = std::make_shared<FlintVm>(record.vm_dir(), record.api_socket(), record.config(),
                                      std::vector<std::string>(), std::vector<std::string>(),
                                      std::move(sink));
  auto backend = std::make_unique<FlintBackend>(vm);
  vm->SetProcess(id);
  absl::StatusOr<flint::v1::GetInfoResponse> info = vm->GetInfo();
  if (!info.ok()) {
    if (!ProcessAlive(id)) {
      return absl::NotFoundError(
          absl::StrFormat("flint (pid %d) of VM %s exited while attaching", id.pid, record.id()));
    }
    return absl::UnavailableError(absl::StrFormat(
        "flint (pid %d) of VM %s runs, but its API at %s does not answer: %s", id.pid,
        record.id(), record.api_socket(), info.status().message()));
  }
  if (info->pid() != id.pid) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "%s is served by pid %d, not by the VM's flint (pid %d)", record.api_socket(),
        info->pid(), id.pid));
  }
  vm->SetVersion(info->version());
  vm->SetInitial(info->state() == flint::v1::VM_STATE_PAUSED
                     ? DomainStatus{DomainState::kPaused, "User"}
                     : DomainStatus{DomainState::kRunning, "Unknown"},
                 true);
  vm->Arm();
  return std::unique_ptr<Backend>(std::move(backend));
}

absl::StatusOr<DomainStatus> FlintEndStatus(const flint::shim::v1::VmRecord& record) {
  const ProcessId id{record.pid(), record.pid_start_time()};
  if (ProcessAlive(id)) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "flint (pid %d) of VM %s still runs: it has not ended", id.pid, record.id()));
  }
  if (record.vm_dir().empty()) {
    return absl::InvalidArgumentError(
        absl::StrFormat("the record of VM %s names no vm_dir", record.id()));
  }
  absl::StatusOr<VmEvent> stop = ReadStopFile(record.vm_dir());
  if (!stop.ok()) return stop.status();
  return FlintStopStatus(stop->reason(), stop->exit_status(), false);
}

}  // namespace flint::shim
