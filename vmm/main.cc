// flint: one process per VM. Parses the command line, reads the images,
// opens /dev/kvm, and runs the VM until it stops; the exit status says why.
#include <fcntl.h>
#include <google/protobuf/util/json_util.h>
#include <malloc.h>
#include <poll.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "agent-api/api_server.h"
#include "agent-api/config_file.h"
#include "tests/guest/embedded_guest.h"
#include "vmm/boot/file.h"
#include "vmm/cli.h"
#include "vmm/console.h"
#include "vmm/control_socket.h"
#include "vmm/kvm/kvm.h"
#include "vmm/kvm/unique_fd.h"
#include "vmm/vm.h"

namespace flint {
namespace {

constexpr uint64_t kMaxKernelBytes = 512ull << 20;
constexpr const char* kDefaultLinuxCmdline = "console=ttyS0 reboot=k panic=1";
constexpr const char* kDefaultDemoCmdline = "flint.prog=demo";

int64_t MonotonicNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1000000000ll + ts.tv_nsec;
}

// This process's resident memory, from /proc/self/smaps_rollup (kB fields).
struct ProcessMemory {
  uint64_t rss = 0;        // everything resident
  uint64_t anon_shmem = 0; // anonymous + shmem (memfd) pages: guest RAM and flint's heap/stacks
};

ProcessMemory ReadProcessMemory() {
  ProcessMemory m;
  FILE* f = std::fopen("/proc/self/smaps_rollup", "r");
  if (f == nullptr) return m;
  char line[256];
  while (std::fgets(line, sizeof(line), f) != nullptr) {
    unsigned long long kb = 0;
    if (std::sscanf(line, "Rss: %llu kB", &kb) == 1) m.rss = kb << 10;
    if (std::sscanf(line, "Anonymous: %llu kB", &kb) == 1) m.anon_shmem += kb << 10;
    if (std::sscanf(line, "Pss_Shmem: %llu kB", &kb) == 1) m.anon_shmem += kb << 10;
  }
  std::fclose(f);
  return m;
}

int Fail(int status, const absl::Status& s) {
  std::fprintf(stderr, "flint: %s\n", std::string(s.message()).c_str());
  return status;
}

// The kernel and initrd files, read for one boot. They are copied into guest
// memory while the VM is built and released right after, so a large kernel
// does not stay in flint's RSS; a reboot reads them again.
struct BootImages {
  std::vector<uint8_t> kernel_file, initrd_file;
  std::span<const uint8_t> kernel;

  absl::Status Load(const RunOptions& opts) {
    kernel = EmbeddedGuestImage();
    if (!opts.kernel_path.empty()) {
      absl::StatusOr<std::vector<uint8_t>> k = ReadWholeFile(opts.kernel_path, kMaxKernelBytes);
      if (!k.ok()) return k.status();
      kernel_file = std::move(*k);
      kernel = kernel_file;
    }
    if (!opts.initrd_path.empty()) {
      absl::StatusOr<std::vector<uint8_t>> r = ReadWholeFile(opts.initrd_path, opts.memory_bytes);
      if (!r.ok()) return r.status();
      initrd_file = std::move(*r);
    }
    return absl::OkStatus();
  }
  void Release() {
    kernel = {};
    std::vector<uint8_t>().swap(kernel_file);
    std::vector<uint8_t>().swap(initrd_file);
  }
};

// net-swap (control socket) and SwapNic (API): SPEC has --net's syntax.
absl::Status SwapNicFromSpec(Vm& vm, uint32_t index, const std::string& spec) {
  absl::StatusOr<NicConfig> nic = ParseNicSpec(spec);
  if (!nic.ok()) return nic.status();
  return vm.SwapNic(index, *nic);
}

// The control socket's requests (docs/CONTROL.md).
std::string HandleControlRequest(Vm& vm, std::string_view request) {
  // (Debian's abseil has its own string_view: split into std::strings.)
  const std::string text(request);
  std::vector<std::string> words = absl::StrSplit(text, absl::ByChar(' '), absl::SkipEmpty());
  if (words.empty()) return "error: empty request\n";
  if (words[0] == "net-info" && words.size() == 1) {
    std::string out;
    for (const std::string& line : vm.NicInfo()) out += line + "\n";
    return out + "ok\n";
  }
  if (words[0] == "net-swap") {
    uint32_t index = 0;
    if (words.size() != 3 || !absl::SimpleAtoi(words[1], &index)) {
      return "error: usage: net-swap NIC BACKEND (NIC counts --net options from 0; BACKEND as --net)\n";
    }
    if (absl::Status s = SwapNicFromSpec(vm, index, words[2]); !s.ok()) {
      return absl::StrFormat("error: %s\n", s.message());
    }
    return "ok\n";
  }
  return absl::StrFormat(
      "error: unknown request '%s' (net-info, net-swap NIC BACKEND, shutdown [SECONDS])\n",
      words[0]);
}

// The VM that runs now, for the control socket and the API: a VM may reboot
// under them, so requests go to whichever Vm runs (none between boots).
class CurrentVm final : public VmControl {
 public:
  // `wake_fd` (an eventfd) is written when a Shutdown sets a new deadline, so
  // main's loop recomputes its poll timeout.
  CurrentVm(const RunOptions& opts, int wake_fd) : opts_(opts), wake_fd_(wake_fd) {}

  void Set(Vm* vm) {
    absl::MutexLock l(&mu_);
    vm_ = vm;
  }
  std::string Control(std::string_view request) {
    // `shutdown [SECONDS]` shares the API's Shutdown (and its deadline).
    const std::string text(request);
    std::vector<std::string> words = absl::StrSplit(text, absl::ByChar(' '), absl::SkipEmpty());
    if (!words.empty() && words[0] == "shutdown") {
      uint32_t seconds = 0;
      if (words.size() > 2 || (words.size() == 2 && !absl::SimpleAtoi(words[1], &seconds))) {
        return "error: usage: shutdown [SECONDS] (the wait before a forced stop; 0 or none: " +
               std::to_string(kDefaultShutdownTimeoutSeconds) + ")\n";
      }
      if (seconds == 0) seconds = kDefaultShutdownTimeoutSeconds;
      absl::Status s = Shutdown(absl::Seconds(seconds));
      return s.ok() ? "ok\n" : absl::StrFormat("error: %s\n", s.message());
    }
    absl::MutexLock l(&mu_);
    if (vm_ == nullptr) return "error: the VM is not running\n";
    return HandleControlRequest(*vm_, request);
  }

  v1::GetInfoResponse Info() override {
    v1::GetInfoResponse r;
    r.set_vcpus(opts_.cpus);
    r.set_memory_bytes(opts_.memory_bytes);
    r.set_version(FLINT_VERSION);
    for (const DiskConfig& d : opts_.disks) {
      v1::DiskInfo* out = r.add_disks();
      out->set_path(d.path);
      out->set_readonly(d.readonly);
      out->set_direct(d.direct);
      out->set_queues(d.queues);
    }
    absl::MutexLock l(&mu_);
    if (vm_ == nullptr) {
      r.set_state(v1::VM_STATE_STOPPED);
    } else {
      r.set_state(vm_->paused() ? v1::VM_STATE_PAUSED : v1::VM_STATE_RUNNING);
      r.set_vcpus(vm_->num_vcpus());
      const std::vector<Vm::NicState> nics = vm_->Nics();
      for (size_t i = 0; i < nics.size(); ++i) {
        v1::NicInfo* n = r.add_nics();
        n->set_index(static_cast<uint32_t>(i));
        n->set_backend(nics[i].backend);
        n->set_link_up(nics[i].link_up);
        n->set_detail(Vm::NicLine(i, nics[i]));
      }
    }
    return r;
  }
  absl::Status Pause() override {
    absl::MutexLock l(&mu_);
    if (vm_ == nullptr) return NotRunning();
    if (vm_->paused()) return absl::FailedPreconditionError("the VM is already paused");
    vm_->Pause();
    return absl::OkStatus();
  }
  absl::Status Resume() override {
    absl::MutexLock l(&mu_);
    if (vm_ == nullptr) return NotRunning();
    if (!vm_->paused()) return absl::FailedPreconditionError("the VM is not paused");
    vm_->Resume();
    return absl::OkStatus();
  }
  // As the guest's own reset: main's loop boots a fresh VM (or exits with
  // --no-reboot).
  absl::Status Reset() override {
    absl::MutexLock l(&mu_);
    if (vm_ == nullptr) return NotRunning();
    vm_->RequestStop(StopReason{StopKind::kReset, kExitOk, "reset through the API"});
    return absl::OkStatus();
  }
  absl::Status Stop() override {
    absl::MutexLock l(&mu_);
    if (vm_ == nullptr) return NotRunning();
    stop_requested_ = true;
    vm_->RequestStop(StopReason{StopKind::kSignal, kExitSignal, "stopped through the API"});
    return absl::OkStatus();
  }
  // The button now; the forced stop is main's loop's (ShutdownPollTimeoutMs,
  // TakeOverdueShutdown). The deadline belongs to the process, not to one
  // boot: a guest that reboots instead of powering off is stopped at the
  // same deadline.
  absl::Status Shutdown(absl::Duration timeout) override {
    absl::MutexLock l(&mu_);
    if (vm_ == nullptr) return NotRunning();
    vm_->PressPowerButton();
    const int64_t deadline = MonotonicNs() + absl::ToInt64Nanoseconds(timeout);
    if (!shutdown_deadline_ns_.has_value() || deadline < *shutdown_deadline_ns_) {
      shutdown_deadline_ns_ = deadline;
      shutdown_timeout_ = timeout;
      const uint64_t one = 1;
      (void)!write(wake_fd_, &one, sizeof(one));
    }
    return absl::OkStatus();
  }
  // poll()'s timeout until the shutdown deadline: -1 with none pending.
  int ShutdownPollTimeoutMs() {
    absl::MutexLock l(&mu_);
    if (!shutdown_deadline_ns_.has_value()) return -1;
    const int64_t left_ns = *shutdown_deadline_ns_ - MonotonicNs();
    if (left_ns <= 0) return 0;
    // Rounded up, so the loop does not wake just before the deadline.
    return static_cast<int>(std::min<int64_t>((left_ns + 999999) / 1000000, 1 << 30));
  }
  // Once the deadline has passed: the forced stop's reason, and the deadline
  // is cleared. The stop also ends a VM that was about to reboot.
  std::optional<StopReason> TakeOverdueShutdown() {
    absl::MutexLock l(&mu_);
    if (!shutdown_deadline_ns_.has_value() || MonotonicNs() < *shutdown_deadline_ns_) {
      return std::nullopt;
    }
    shutdown_deadline_ns_.reset();
    stop_requested_ = true;
    return StopReason{StopKind::kSignal, kExitSignal,
                      absl::StrFormat("forced stop: the guest did not power off within %s of "
                                      "the ACPI power button (Shutdown)",
                                      absl::FormatDuration(shutdown_timeout_))};
  }
  absl::StatusOr<v1::GetStatsResponse> Stats() override {
    absl::MutexLock l(&mu_);
    if (vm_ == nullptr) return NotRunning();
    v1::GetStatsResponse r;
    const ExitStatsSnapshot stats = vm_->Stats();
    r.set_total_exits(stats.total_exits);
    r.set_exit_counters(stats.Format());
    for (const std::string& line : vm_->DeviceStats()) r.add_devices(line);
    return r;
  }
  absl::Status SwapNic(uint32_t index, const std::string& spec) override {
    absl::MutexLock l(&mu_);
    if (vm_ == nullptr) return NotRunning();
    return SwapNicFromSpec(*vm_, index, spec);
  }
  // A Stop from the API also ends a VM that was about to reboot.
  bool stop_requested() {
    absl::MutexLock l(&mu_);
    return stop_requested_;
  }

 private:
  static absl::Status NotRunning() {
    return absl::FailedPreconditionError("the VM is not running (it is rebooting or stopping)");
  }
  const RunOptions& opts_;
  const int wake_fd_;
  absl::Mutex mu_;
  Vm* vm_ ABSL_GUARDED_BY(mu_) = nullptr;
  bool stop_requested_ ABSL_GUARDED_BY(mu_) = false;
  std::optional<int64_t> shutdown_deadline_ns_ ABSL_GUARDED_BY(mu_);  // CLOCK_MONOTONIC
  absl::Duration shutdown_timeout_ ABSL_GUARDED_BY(mu_);
};

// The stop file: with --state-dir, flint's last act is to write
// STATE_DIR/stop.json (write temp + rename, so a reader sees all or nothing):
// its final KIND_STOPPED event (flint.v1.VmEvent, the message the API
// streams) as proto3 JSON, for a watcher that holds no event stream
// (flint-shim) or was not there when flint ended:
//   {"kind": "KIND_STOPPED", "reason": "power-off: ACPI S5", "exit_status": 0}
// A stale file is removed when flint starts; no file after flint is gone
// means it ended without a stop (SIGKILL, a crash, a start error).
constexpr const char* kStopFileName = "stop.json";

void WriteStopFile(const std::string& state_dir, const v1::VmEvent& stopped) {
  const std::string path = state_dir + "/" + kStopFileName;
  const std::string tmp = path + ".tmp";
  google::protobuf::util::JsonPrintOptions json;
  json.preserve_proto_field_names = true;
  std::string text;
  bool ok = google::protobuf::util::MessageToJsonString(stopped, &text, json).ok();
  text += "\n";
  UniqueFd fd(ok ? open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644) : -1);
  ok = fd.valid() && write(fd.get(), text.data(), text.size()) ==
                         static_cast<ssize_t>(text.size());
  fd.reset();
  ok = ok && rename(tmp.c_str(), path.c_str()) == 0;
  if (!ok) {
    std::fprintf(stderr, "flint: cannot write the stop file %s: %s\n", path.c_str(),
                 strerror(errno));
    (void)unlink(tmp.c_str());
  }
}

int RunVm(const RunOptions& opts, int64_t start_ns) {
  // A stop file from an earlier run must not describe this one.
  if (!opts.state_dir.empty()) {
    (void)unlink((opts.state_dir + "/" + kStopFileName).c_str());
  }
  BootImages images;
  if (absl::Status s = images.Load(opts); !s.ok()) return Fail(kExitUsage, s);
  UniqueFd serial_file;
  if (!opts.serial_file.empty()) {
    int fd = open(opts.serial_file.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
      return Fail(kExitUsage, ErrnoStatus(errno, "opening serial output " + opts.serial_file));
    }
    serial_file.reset(fd);
  }

  absl::StatusOr<Kvm> kvm = Kvm::Open();
  if (!kvm.ok()) return Fail(kExitHostError, kvm.status());

  // SIGINT/SIGTERM are taken through a signalfd by this thread only; the
  // vCPU threads inherit the blocked mask.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  UniqueFd sigfd(signalfd(-1, &stop_signals, SFD_CLOEXEC));
  if (!sigfd.valid()) return Fail(kExitHostError, ErrnoStatus(errno, "signalfd"));

  VmConfig config;
  config.cpus = opts.cpus;
  config.memory_bytes = opts.memory_bytes;
  config.backing = opts.backing;
  config.cmdline = opts.cmdline.value_or(opts.kernel_path.empty() ? kDefaultDemoCmdline
                                                                  : kDefaultLinuxCmdline);
  config.serial_out_fd = serial_file.valid() ? serial_file.get() : STDOUT_FILENO;
  config.ioeventfd_sink_port = opts.ioeventfd_sink_port;
  config.disks = opts.disks;
  config.nics = opts.nics;
  config.state_dir = opts.state_dir.empty() ? absl::StrFormat("/tmp/flint-%d", getpid())
                                            : opts.state_dir;
  config.io_engine = opts.io_engine;
  bool notes_printed = false;

  // The control socket and the API outlive reboots; requests reach whichever
  // Vm runs. Both start after SIGINT/SIGTERM are blocked, so their threads
  // never take those signals.
  UniqueFd shutdown_wake(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!shutdown_wake.valid()) return Fail(kExitHostError, ErrnoStatus(errno, "eventfd"));
  CurrentVm current(opts, shutdown_wake.get());
  std::unique_ptr<ControlServer> control;
  if (!opts.control_socket.empty()) {
    absl::StatusOr<std::unique_ptr<ControlServer>> server = ControlServer::Start(
        opts.control_socket, [&](std::string_view request) { return current.Control(request); });
    if (!server.ok()) return Fail(kExitUsage, server.status());
    control = std::move(*server);
  }
  std::unique_ptr<ApiServer> api;
  if (!opts.api_socket.empty()) {
    absl::StatusOr<std::unique_ptr<ApiServer>> server = ApiServer::Start(opts.api_socket, &current);
    if (!server.ok()) return Fail(kExitUsage, server.status());
    api = std::move(*server);
  }
  auto publish = [&](v1::VmEvent::Kind kind, const std::string& reason, int exit_status) {
    if (api != nullptr) api->Publish(kind, reason, exit_status);
  };

  for (;;) {
    config.kernel = images.kernel;
    config.initrd = images.initrd_file;
    absl::StatusOr<std::unique_ptr<Vm>> vm = Vm::Create(*kvm, config);
    images.Release();
    config.kernel = {};
    config.initrd = {};
    if (!vm.ok()) {
      // A disk the user named that cannot be used is bad input, like a
      // missing kernel file.
      const bool disk_error = absl::StartsWith(vm.status().message(), "--disk ");
      return Fail(disk_error ? kExitUsage : kExitHostError, vm.status());
    }
    if (!notes_printed) {
      for (const std::string& note : (*vm)->notes()) std::fprintf(stderr, "flint: %s\n", note.c_str());
      notes_printed = true;
    }
    ConsoleInput console;
    if (absl::Status s = console.Start(STDIN_FILENO, (*vm)->serial()); !s.ok()) {
      return Fail(kExitHostError, s);
    }
    if (absl::Status s = (*vm)->Start(); !s.ok()) return Fail(kExitHostError, s);
    current.Set(vm->get());
    publish(v1::VmEvent::KIND_STARTED, "", 0);
    // Building the VM freed what parsing and loading used (the config, the
    // image reads, ACPI tables): hand those pages back now, or they stay
    // resident for the VM's whole life on every VM of the node.
    malloc_trim(0);

    pollfd fds[3] = {{sigfd.get(), POLLIN, 0},
                     {(*vm)->stop_fd(), POLLIN, 0},
                     {shutdown_wake.get(), POLLIN, 0}};
    for (;;) {
      // The timeout runs to a pending Shutdown's deadline (none: -1).
      int n = poll(fds, 3, current.ShutdownPollTimeoutMs());
      if (n < 0 && errno == EINTR) continue;
      if (fds[1].revents & POLLIN) break;
      if (fds[0].revents & POLLIN) {
        signalfd_siginfo si{};
        (void)!read(sigfd.get(), &si, sizeof(si));
        (*vm)->RequestStop(StopReason{StopKind::kSignal, kExitSignal,
                                      absl::StrFormat("stopped by signal %u", si.ssi_signo)});
      }
      if (fds[2].revents & POLLIN) {
        uint64_t v;
        (void)!read(shutdown_wake.get(), &v, sizeof(v));
      }
      if (std::optional<StopReason> forced = current.TakeOverdueShutdown()) {
        (*vm)->RequestStop(std::move(*forced));
      }
    }
    StopReason reason = (*vm)->Wait();
    current.Set(nullptr);
    console.Stop();
    if (opts.stats) {
      std::fprintf(stderr, "%s", (*vm)->Stats().Format().c_str());
      for (const std::string& line : (*vm)->DeviceStats()) {
        std::fprintf(stderr, "device: %s\n", line.c_str());
      }
      // flint's own cost per VM is its private memory; code pages of
      // flint and its libraries are file-backed and shared by every flint
      // process on the host, so they are reported apart.
      const ProcessMemory pm = ReadProcessMemory();
      const uint64_t guest = (*vm)->ResidentGuestBytes();
      const uint64_t own = pm.anon_shmem > guest ? pm.anon_shmem - guest : 0;
      const uint64_t file = pm.rss > pm.anon_shmem ? pm.rss - pm.anon_shmem : 0;
      std::fprintf(stderr,
                   "startup: %.3f ms from main() to the first KVM_RUN\n"
                   "memory: rss %llu KiB = guest-touched %llu KiB + flint private %llu KiB"
                   " + file-backed code %llu KiB (shared between flint processes)\n",
                   ((*vm)->first_run_ns() - start_ns) / 1e6,
                   static_cast<unsigned long long>(pm.rss >> 10),
                   static_cast<unsigned long long>(guest >> 10),
                   static_cast<unsigned long long>(own >> 10),
                   static_cast<unsigned long long>(file >> 10));
    }
    start_ns = MonotonicNs();
    // As on a PC: a reset request or a triple fault (CPU shutdown) resets
    // the machine; the triple fault is reported with its register dump.
    // --no-reboot makes both stop the process instead.
    const std::string why = absl::StrFormat("%s: %s", StopKindName(reason.kind), reason.detail);
    if ((reason.kind == StopKind::kReset || reason.kind == StopKind::kTripleFault) && opts.reboot &&
        !current.stop_requested()) {
      std::fprintf(stderr, "flint: %s; rebooting\n", reason.detail.c_str());
      publish(v1::VmEvent::KIND_RESET, why, 0);
      if (absl::Status s = images.Load(opts); !s.ok()) return Fail(kExitUsage, s);
      continue;
    }
    if (!opts.state_dir.empty()) {
      v1::VmEvent stopped;
      stopped.set_kind(v1::VmEvent::KIND_STOPPED);
      stopped.set_reason(why);
      stopped.set_exit_status(reason.exit_status);
      WriteStopFile(opts.state_dir, stopped);
    }
    publish(v1::VmEvent::KIND_STOPPED, why, reason.exit_status);
    if (reason.kind != StopKind::kDebugExit) {
      std::fprintf(stderr, "flint: VM stopped (%s): %s\n", StopKindName(reason.kind),
                   reason.detail.c_str());
    }
    return reason.exit_status;
  }
}

}  // namespace
}  // namespace flint

int main(int argc, char** argv) {
  const int64_t start_ns = flint::MonotonicNs();
  // One malloc arena for the whole process. glibc gives every thread that
  // allocates its own arena (vCPUs, the device loop, gRPC's threads), each
  // with pages of its own -- ~120 KiB per VM on a node of hundreds of VMs.
  // flint's hot paths do not allocate, and small allocations go through the
  // per-thread cache anyway, so the shared arena costs no contention.
  mallopt(M_ARENA_MAX, 1);
  // Debian builds abseil with Mutex deadlock detection on, which costs ~300
  // instructions per lock (a graph lookup) on the device paths that vCPU
  // threads take on every exit. The test suites keep it on.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  absl::StatusOr<std::vector<std::string>> args =
      flint::ExpandConfigOption(std::vector<std::string>(argv + 1, argv + argc));
  if (!args.ok()) {
    std::fprintf(stderr, "flint: %s\n", std::string(args.status().message()).c_str());
    return flint::kExitUsage;
  }
  absl::StatusOr<flint::Command> cmd = flint::ParseCommandLine(*args);
  if (!cmd.ok()) {
    std::fprintf(stderr, "flint: %s\n", std::string(cmd.status().message()).c_str());
    return flint::kExitUsage;
  }
  switch (cmd->kind) {
    case flint::Command::Kind::kHelp:
      std::fputs(flint::UsageText().c_str(), stdout);
      return 0;
    case flint::Command::Kind::kVersion:
      std::puts("flint " FLINT_VERSION);
      return 0;
    case flint::Command::Kind::kRun:
      return flint::RunVm(cmd->run, start_ns);
  }
  return flint::kExitUsage;
}
