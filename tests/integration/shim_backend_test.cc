// The flint backend of flint-shim (k8s-shim/flint_backend.*) driven
// directly: the real flint binary, real KVM, the test guest (flint.prog=idle
// halts forever; hello prints and leaves through the debug-exit port;
// poweroff goes through ACPI S5; acpi-shutdown powers off on the ACPI power
// button). VM tests skip with the reason where /dev/kvm is unusable.
#include "k8s-shim/flint_backend.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "k8s-shim/backend.h"
#include "k8s-shim/process.h"
#include "tests/support/subprocess.h"

namespace flint::shim {
namespace {

#define REQUIRE_KVM()                             \
  do {                                            \
    std::string why;                              \
    if (!testing::KvmAvailable(&why)) GTEST_SKIP() << why; \
  } while (0)

// Only a guard against a hang: every wait ends as soon as its event is in.
constexpr absl::Duration kHangGuard = absl::Seconds(60);

// Collects what a backend reports.
class Events {
 public:
  EventSink Sink() {
    return [this](const BackendEvent& e) {
      absl::MutexLock l(&mu_);
      events_.push_back(e);
    };
  }
  // The index of the first event at or after `from` with this state (and
  // reason, unless empty); -1 when none came.
  int WaitFor(DomainState state, const std::string& reason = "", size_t from = 0) {
    int found = -1;
    auto match = [&]() {
      for (size_t i = from; i < events_.size(); ++i) {
        if (events_[i].status.state == state &&
            (reason.empty() || events_[i].status.reason == reason)) {
          found = static_cast<int>(i);
          return true;
        }
      }
      return false;
    };
    absl::MutexLock l(&mu_);
    mu_.AwaitWithTimeout(absl::Condition(&match), kHangGuard);
    return found;
  }
  std::vector<BackendEvent> All() {
    absl::MutexLock l(&mu_);
    return events_;
  }
  size_t size() {
    absl::MutexLock l(&mu_);
    return events_.size();
  }
  std::string Describe() {
    std::string out;
    for (const BackendEvent& e : All()) {
      out += std::to_string(static_cast<int>(e.status.state)) + "/" + e.status.reason + " (" +
             e.detail + ")\n";
    }
    return out;
  }

 private:
  absl::Mutex mu_;
  std::vector<BackendEvent> events_;
};

// How often `text` occurs in the file at `path`.
int CountInFile(const std::string& path, const std::string& text) {
  std::ifstream in(path, std::ios::binary);
  const std::string all((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  int n = 0;
  for (size_t at = all.find(text); at != std::string::npos; at = all.find(text, at + 1)) ++n;
  return n;
}

// Waits until the VM's console holds `text` at least `count` times.
bool WaitForConsole(const std::string& vm_dir, const std::string& text, int count = 1) {
  const absl::Time deadline = absl::Now() + kHangGuard;
  while (CountInFile(vm_dir + "/serial.log", text) < count) {
    if (absl::Now() > deadline) return false;
    absl::SleepFor(absl::Milliseconds(10));
  }
  return true;
}

class ShimFlintBackendTest : public ::testing::Test {
 protected:
  void SetUp() override {
    REQUIRE_KVM();
    root_ = std::string(FLINT_BUILD_ROOT) + "/shim-bt-" + std::to_string(getpid()) + "-" +
            std::to_string(counter_++);
    ASSERT_EQ(mkdir(root_.c_str(), 0700), 0) << root_;
    programs_.flint = FLINT_BINARY;
  }
  void TearDown() override {
    for (const ProcessId& id : vms_) {
      if (ProcessAlive(id)) kill(id.pid, SIGKILL);
      WaitProcessGone(id, absl::Seconds(10));
    }
    if (!root_.empty() && !HasFailure()) {
      const std::string cmd = "rm -rf '" + root_ + "'";
      (void)!system(cmd.c_str());
    }
  }
  // A fresh VM directory with the test guest running `prog`.
  LaunchSpec Spec(const std::string& prog) {
    LaunchSpec spec;
    spec.vm_dir = root_ + "/vm" + std::to_string(vm_count_++);
    EXPECT_EQ(mkdir(spec.vm_dir.c_str(), 0700), 0);
    spec.config.set_kernel(FLINT_GUEST_ELF);
    spec.config.set_cmdline("flint.prog=" + prog);
    spec.config.set_memory_mib(32);
    return spec;
  }
  std::unique_ptr<Backend> Start(const LaunchSpec& spec, Events* events) {
    absl::StatusOr<std::unique_ptr<Backend>> b = StartFlint(spec, programs_, events->Sink());
    EXPECT_TRUE(b.ok()) << b.status();
    if (!b.ok()) return nullptr;
    vms_.push_back(Record(**b));
    return std::move(*b);
  }
  static ProcessId Record(const Backend& b, flint::shim::v1::VmRecord* out = nullptr) {
    flint::shim::v1::VmRecord r;
    b.FillRecord(&r);
    if (out != nullptr) *out = r;
    return {r.pid(), r.pid_start_time()};
  }

  static inline std::atomic<int> counter_{0};
  std::string root_;
  int vm_count_ = 0;
  BackendPrograms programs_;
  std::vector<ProcessId> vms_;
};

TEST_F(ShimFlintBackendTest, StartPauseResumeStatsKill) {
  Events events;
  LaunchSpec spec = Spec("idle");
  // A disk, so Stats has a device line to parse.
  const std::string image = spec.vm_dir + "/disk.img";
  { std::ofstream create(image); }
  ASSERT_EQ(truncate(image.c_str(), 1 << 20), 0);
  spec.config.add_disks()->set_path(image);
  spec.disk_names = {"rootdisk"};
  std::unique_ptr<Backend> vm = Start(spec, &events);
  ASSERT_NE(vm, nullptr);
  EXPECT_STREQ(vm->kind(), "flint");

  ASSERT_EQ(events.WaitFor(DomainState::kRunning, "Booted"), 0) << events.Describe();
  EXPECT_EQ(vm->Status().state, DomainState::kRunning);
  flint::shim::v1::VmRecord record;
  const ProcessId id = Record(*vm, &record);
  EXPECT_EQ(record.backend(), "flint");
  EXPECT_EQ(record.api_socket(), spec.vm_dir + "/api.sock");
  EXPECT_EQ(record.vm_dir(), spec.vm_dir);
  EXPECT_TRUE(ProcessAlive(id));
  // The config flint runs is the proto3 JSON StartFlint wrote.
  std::ifstream config(spec.vm_dir + "/config.json");
  const std::string json((std::istreambuf_iterator<char>(config)),
                         std::istreambuf_iterator<char>());
  EXPECT_NE(json.find("\"memory_mib\": 32"), std::string::npos) << json;
  EXPECT_NE(json.find("file:" + spec.vm_dir + "/serial.log"), std::string::npos) << json;
  EXPECT_FALSE(vm->Version().empty());

  ASSERT_TRUE(vm->Pause().ok());
  const int paused = events.WaitFor(DomainState::kPaused, "User");
  ASSERT_GT(paused, 0) << events.Describe();
  EXPECT_EQ(vm->Status().state, DomainState::kPaused);
  EXPECT_EQ(vm->Status().reason, "User");
  absl::Status again = vm->Pause();
  EXPECT_EQ(again.code(), absl::StatusCode::kFailedPrecondition) << again;
  EXPECT_NE(again.message().find("already paused"), std::string::npos) << again;
  ASSERT_TRUE(vm->Resume().ok());
  ASSERT_GT(events.WaitFor(DomainState::kRunning, "Unknown", paused + 1), paused)
      << events.Describe();
  EXPECT_EQ(vm->Status().state, DomainState::kRunning);

  absl::StatusOr<BackendStats> stats = vm->Stats();
  ASSERT_TRUE(stats.ok()) << stats.status();
  EXPECT_EQ(stats->vcpus, 1u);
  EXPECT_EQ(stats->memory_bytes, 32ull << 20);
  EXPECT_GT(stats->total_exits, 0u);  // the guest printed "idle" through the UART
  EXPECT_GT(stats->rss_bytes, 0u);
  ASSERT_EQ(stats->disks.size(), 1u);
  EXPECT_EQ(stats->disks[0].name, "rootdisk");
  EXPECT_EQ(stats->disks[0].path, image);
  EXPECT_TRUE(stats->nics.empty());

  const size_t before_kill = events.size();
  ASSERT_TRUE(vm->Kill().ok());
  EXPECT_FALSE(ProcessAlive(id));  // Kill returns once flint is gone
  EXPECT_EQ(vm->Status().state, DomainState::kShutoff);
  EXPECT_EQ(vm->Status().reason, "Destroyed");
  ASSERT_GE(events.WaitFor(DomainState::kShutoff, "Destroyed", before_kill), 0)
      << events.Describe();
  // After the end, calls say so instead of hanging.
  EXPECT_EQ(vm->Pause().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_FALSE(vm->Stats().ok());
}

// A reset reboots the guest inside the same flint: the VM stays Running
// (the backend holds no event stream, so a reboot is no event).
TEST_F(ShimFlintBackendTest, ResetBootsAgain) {
  Events events;
  LaunchSpec spec = Spec("idle");
  std::unique_ptr<Backend> vm = Start(spec, &events);
  ASSERT_NE(vm, nullptr);
  ASSERT_EQ(events.WaitFor(DomainState::kRunning, "Booted"), 0) << events.Describe();
  ASSERT_TRUE(WaitForConsole(spec.vm_dir, "idle\n", 1));
  ASSERT_TRUE(vm->Reset().ok());
  // The guest ran again: the console (truncated only when flint starts)
  // has the idle program's line twice.
  EXPECT_TRUE(WaitForConsole(spec.vm_dir, "idle\n", 2))
      << CountInFile(spec.vm_dir + "/serial.log", "idle\n");
  EXPECT_TRUE(ProcessAlive(vms_.back()));
  EXPECT_EQ(vm->Status().state, DomainState::kRunning);
  ASSERT_TRUE(vm->Pause().ok());  // the rebooted VM answers commands
  ASSERT_GE(events.WaitFor(DomainState::kPaused, "User"), 1) << events.Describe();
  ASSERT_TRUE(vm->Kill().ok());
  ASSERT_GE(events.WaitFor(DomainState::kShutoff, "Destroyed"), 2) << events.Describe();
}

TEST_F(ShimFlintBackendTest, ShutdownPressesThePowerButtonThenForcesTheStop) {
  Events events;
  std::unique_ptr<Backend> vm = Start(Spec("idle"), &events);
  ASSERT_NE(vm, nullptr);
  ASSERT_EQ(events.WaitFor(DomainState::kRunning, "Booted"), 0) << events.Describe();
  // The idle guest ignores the ACPI power button, so flint's forced stop
  // after the grace period ends it: Shutoff/Destroyed, as libvirt says.
  absl::Status s = vm->Shutdown(absl::Seconds(1));
  ASSERT_TRUE(s.ok()) << s;
  const int off = events.WaitFor(DomainState::kShutoff);
  ASSERT_EQ(off, 1) << events.Describe();
  EXPECT_EQ(events.All()[off].status.reason, "Destroyed");
  EXPECT_NE(events.All()[off].detail.find("forced stop"), std::string::npos)
      << events.Describe();
  EXPECT_TRUE(WaitProcessGone(vms_.back(), kHangGuard));
  EXPECT_EQ(vm->Shutdown(absl::Seconds(1)).code(), absl::StatusCode::kFailedPrecondition);
}

TEST_F(ShimFlintBackendTest, AttachAfterTheFirstBackendIsGone) {
  Events first_events, second_events;
  std::unique_ptr<Backend> first = Start(Spec("idle"), &first_events);
  ASSERT_NE(first, nullptr);
  ASSERT_EQ(first_events.WaitFor(DomainState::kRunning, "Booted"), 0);
  flint::shim::v1::VmRecord record;
  const ProcessId id = Record(*first, &record);
  record.set_id("vm0");
  first.reset();  // the shim lets go of the VM
  EXPECT_TRUE(ProcessAlive(id)) << "destroying a Backend must not stop the VM";
  const size_t first_count = first_events.size();

  absl::StatusOr<std::unique_ptr<Backend>> second = AttachFlint(record, second_events.Sink());
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ((*second)->Status().state, DomainState::kRunning);
  flint::shim::v1::VmRecord again;
  (*second)->FillRecord(&again);
  EXPECT_EQ(again.pid(), record.pid());
  EXPECT_EQ(again.pid_start_time(), record.pid_start_time());
  EXPECT_EQ(again.api_socket(), record.api_socket());

  ASSERT_TRUE((*second)->Pause().ok());
  ASSERT_GE(second_events.WaitFor(DomainState::kPaused, "User"), 0) << second_events.Describe();
  ASSERT_TRUE((*second)->Resume().ok());
  ASSERT_GE(second_events.WaitFor(DomainState::kRunning, "Unknown"), 0);
  EXPECT_EQ(first_events.size(), first_count) << "a destroyed backend still reported";
  // Attaching and letting go while events flow neither hangs nor stops the VM.
  for (int i = 0; i < 20; ++i) {
    Events churn;
    absl::StatusOr<std::unique_ptr<Backend>> b = AttachFlint(record, churn.Sink());
    ASSERT_TRUE(b.ok()) << b.status();
    ASSERT_TRUE((*second)->Pause().ok());
    ASSERT_TRUE((*second)->Resume().ok());
  }
  EXPECT_TRUE(ProcessAlive(id));
  ASSERT_TRUE((*second)->Kill().ok());
  EXPECT_FALSE(ProcessAlive(id));
}

TEST_F(ShimFlintBackendTest, SigkilledFlintIsCrashed) {
  Events events;
  LaunchSpec spec = Spec("idle");
  // A stop file from an earlier run of this VM must not be taken for this
  // run's end.
  {
    std::ofstream stale(spec.vm_dir + "/stop.json");
    stale << "{\"kind\": \"KIND_STOPPED\", \"reason\": \"power-off: stale\", "
             "\"exit_status\": 0}\n";
  }
  std::unique_ptr<Backend> vm = Start(spec, &events);
  ASSERT_NE(vm, nullptr);
  ASSERT_EQ(events.WaitFor(DomainState::kRunning, "Booted"), 0);
  const ProcessId id = vms_.back();
  ASSERT_EQ(kill(id.pid, SIGKILL), 0);
  const int crashed = events.WaitFor(DomainState::kCrashed, "Crashed");
  ASSERT_GT(crashed, 0) << events.Describe();
  EXPECT_NE(events.All()[crashed].detail.find("without reporting a stop"), std::string::npos)
      << events.Describe();
  EXPECT_EQ(vm->Status().state, DomainState::kCrashed);
  EXPECT_FALSE(ProcessAlive(id));
  EXPECT_TRUE(vm->Kill().ok());  // nothing left to kill: not an error
  EXPECT_EQ(events.All().back().status.state, DomainState::kCrashed);  // no second end
  flint::shim::v1::VmRecord record;
  Record(*vm, &record);
  EXPECT_EQ(FlintEndStatus(record).status().code(), absl::StatusCode::kNotFound);
}

TEST_F(ShimFlintBackendTest, GuestThatStopsItselfIsShutoffShutdown) {
  for (const std::string prog : {"hello", "poweroff"}) {
    SCOPED_TRACE(prog);
    Events events;
    std::unique_ptr<Backend> vm = Start(Spec(prog), &events);
    ASSERT_NE(vm, nullptr);
    const int booted = events.WaitFor(DomainState::kRunning, "Booted");
    const int off = events.WaitFor(DomainState::kShutoff, "Shutdown");
    ASSERT_EQ(booted, 0) << events.Describe();
    ASSERT_EQ(off, 1) << events.Describe();
    EXPECT_EQ(events.size(), 2u) << events.Describe();
    EXPECT_EQ(vm->Status().state, DomainState::kShutoff);
    EXPECT_TRUE(WaitProcessGone(vms_.back(), kHangGuard));
    // flint's stop file says the same.
    flint::shim::v1::VmRecord record;
    Record(*vm, &record);
    absl::StatusOr<DomainStatus> end = FlintEndStatus(record);
    ASSERT_TRUE(end.ok()) << end.status();
    EXPECT_EQ(end->state, DomainState::kShutoff);
    EXPECT_EQ(end->reason, "Shutdown");
  }
}

// The stop file is what a new watcher learns a VM's end from: a VM started
// and watched runs on, and is reported by the backend when its guest powers
// off on the power button.
TEST_F(ShimFlintBackendTest, GuestPowerOffAfterTheStartIsShutoffShutdown) {
  Events events;
  LaunchSpec spec = Spec("acpi-shutdown");
  std::unique_ptr<Backend> vm = Start(spec, &events);
  ASSERT_NE(vm, nullptr);
  ASSERT_EQ(events.WaitFor(DomainState::kRunning, "Booted"), 0) << events.Describe();
  ASSERT_TRUE(WaitForConsole(spec.vm_dir, "acpi-shutdown: ready"));
  ASSERT_TRUE(vm->Shutdown(absl::Seconds(60)).ok());
  const int off = events.WaitFor(DomainState::kShutoff);
  ASSERT_EQ(off, 1) << events.Describe();
  EXPECT_EQ(events.All()[off].status.reason, "Shutdown") << events.Describe();
  EXPECT_NE(events.All()[off].detail.find("power-off"), std::string::npos) << events.Describe();
  EXPECT_TRUE(WaitProcessGone(vms_.back(), kHangGuard));
}

// A guest that powers off while no Backend watches it: AttachFlint finds
// the process gone (NOT_FOUND), and FlintEndStatus tells how it ended.
TEST_F(ShimFlintBackendTest, PowerOffWhileDetachedIsReadFromTheStopFile) {
  Events events;
  LaunchSpec spec = Spec("acpi-shutdown");
  std::unique_ptr<Backend> vm = Start(spec, &events);
  ASSERT_NE(vm, nullptr);
  ASSERT_EQ(events.WaitFor(DomainState::kRunning, "Booted"), 0) << events.Describe();
  flint::shim::v1::VmRecord record;
  const ProcessId id = Record(*vm, &record);
  record.set_id("vm0");
  ASSERT_TRUE(WaitForConsole(spec.vm_dir, "acpi-shutdown: ready"));
  absl::StatusOr<DomainStatus> running = FlintEndStatus(record);
  EXPECT_EQ(running.status().code(), absl::StatusCode::kFailedPrecondition) << running.status();
  vm.reset();  // the shim lets go of the VM
  {
    // The power button through a backend that is let go at once.
    Events second;
    absl::StatusOr<std::unique_ptr<Backend>> b = AttachFlint(record, second.Sink());
    ASSERT_TRUE(b.ok()) << b.status();
    ASSERT_TRUE((*b)->Shutdown(absl::Seconds(60)).ok());
  }
  ASSERT_TRUE(WaitProcessGone(id, kHangGuard));
  const size_t seen = events.size();
  absl::StatusOr<std::unique_ptr<Backend>> gone = AttachFlint(record, nullptr);
  EXPECT_EQ(gone.status().code(), absl::StatusCode::kNotFound) << gone.status();
  absl::StatusOr<DomainStatus> end = FlintEndStatus(record);
  ASSERT_TRUE(end.ok()) << end.status();
  EXPECT_EQ(end->state, DomainState::kShutoff);
  EXPECT_EQ(end->reason, "Shutdown");
  EXPECT_EQ(events.size(), seen) << "a destroyed backend still reported";
  EXPECT_EQ(seen, 1u) << events.Describe();
}

TEST_F(ShimFlintBackendTest, StartErrorsCarryFlintsMessage) {
  {
    LaunchSpec spec = Spec("idle");
    spec.config.set_kernel(root_ + "/no-such-kernel");
    Events events;
    absl::StatusOr<std::unique_ptr<Backend>> b = StartFlint(spec, programs_, events.Sink());
    ASSERT_FALSE(b.ok());
    EXPECT_NE(b.status().message().find("no-such-kernel"), std::string::npos) << b.status();
    EXPECT_EQ(events.size(), 0u) << events.Describe();
  }
  {
    LaunchSpec spec = Spec("idle");
    spec.config.add_disks()->set_path(root_ + "/no-such-disk.img");
    Events events;
    absl::StatusOr<std::unique_ptr<Backend>> b = StartFlint(spec, programs_, events.Sink());
    ASSERT_FALSE(b.ok());
    EXPECT_NE(b.status().message().find("--disk path=" + root_ + "/no-such-disk.img"),
              std::string::npos)
        << b.status();
    EXPECT_EQ(events.size(), 0u) << events.Describe();
  }
  {
    LaunchSpec spec = Spec("idle");
    BackendPrograms missing;
    missing.flint = root_ + "/no-such-flint";
    absl::StatusOr<std::unique_ptr<Backend>> b = StartFlint(spec, missing, nullptr);
    ASSERT_FALSE(b.ok());
    EXPECT_NE(b.status().message().find("no-such-flint"), std::string::npos) << b.status();
  }
}

TEST_F(ShimFlintBackendTest, AttachToADeadOrReusedPidIsNotFound) {
  Events events;
  std::unique_ptr<Backend> vm = Start(Spec("idle"), &events);
  ASSERT_NE(vm, nullptr);
  flint::shim::v1::VmRecord record;
  const ProcessId id = Record(*vm, &record);

  // The same pid, another start time: the pid was reused by someone else.
  flint::shim::v1::VmRecord reused = record;
  reused.set_pid_start_time(record.pid_start_time() + 1);
  absl::StatusOr<std::unique_ptr<Backend>> b = AttachFlint(reused, nullptr);
  EXPECT_EQ(b.status().code(), absl::StatusCode::kNotFound) << b.status();
  EXPECT_TRUE(ProcessAlive(id));

  ASSERT_TRUE(vm->Kill().ok());
  vm.reset();
  b = AttachFlint(record, nullptr);
  EXPECT_EQ(b.status().code(), absl::StatusCode::kNotFound) << b.status();
}

int ThreadCount() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("Threads:", 0) == 0) return std::stoi(line.substr(8));
  }
  return -1;
}

// Not a pass/fail on speed: what one attached VM costs the shim, printed
// for the record. A VM between commands holds no channel, no stream and no
// thread (a pidfd on the shared exit watcher and its FlintVm): the ceiling,
// 64 KiB per VM, is what one idle gRPC channel plus stream cost before.
TEST_F(ShimFlintBackendTest, MemoryOfFiftyAttachedBackends) {
  constexpr int kVms = 50;
  std::vector<flint::shim::v1::VmRecord> records;
  {
    Events events;
    for (int i = 0; i < kVms; ++i) {
      std::unique_ptr<Backend> vm = Start(Spec("idle"), &events);
      ASSERT_NE(vm, nullptr);
      records.emplace_back();
      Record(*vm, &records.back());
    }
  }
  // Warm up gRPC's own one-time state with one attach.
  {
    absl::StatusOr<std::unique_ptr<Backend>> warm = AttachFlint(records[0], nullptr);
    ASSERT_TRUE(warm.ok()) << warm.status();
  }
  absl::StatusOr<ProcessUsage> before = ReadProcessUsage(getpid());
  ASSERT_TRUE(before.ok());
  std::vector<std::unique_ptr<Backend>> attached;
  int threads_at_10 = 0;
  for (const auto& r : records) {
    absl::StatusOr<std::unique_ptr<Backend>> b = AttachFlint(r, nullptr);
    ASSERT_TRUE(b.ok()) << b.status();
    attached.push_back(std::move(*b));
    if (attached.size() == 10) threads_at_10 = ThreadCount();
  }
  for (auto& b : attached) ASSERT_EQ(b->Status().state, DomainState::kRunning);
  absl::StatusOr<ProcessUsage> after = ReadProcessUsage(getpid());
  ASSERT_TRUE(after.ok());
  const int threads_after = ThreadCount();
  // No thread per VM: one exit watcher serves every VM, so 40 more VMs
  // add (next to) none.
  EXPECT_LT(threads_after - threads_at_10, (kVms - 10) / 4)
      << threads_at_10 << " threads with 10 VMs, " << threads_after << " with " << kVms;
  const int64_t growth = static_cast<int64_t>(after->rss_bytes) -
                         static_cast<int64_t>(before->rss_bytes);
  const int64_t private_growth = static_cast<int64_t>(after->private_bytes) -
                                 static_cast<int64_t>(before->private_bytes);
  std::printf("shim memory: %d attached flint backends grew RSS by %lld KiB (%lld KiB per VM), "
              "private by %lld KiB; threads with 10 VMs %d, with 50 %d\n",
              kVms, static_cast<long long>(growth >> 10),
              static_cast<long long>((growth / kVms) >> 10),
              static_cast<long long>(private_growth >> 10), threads_at_10, threads_after);
  RecordProperty("rss_growth_per_vm_bytes", std::to_string(growth / kVms));
  EXPECT_LT(growth / kVms, 64 << 10);
  for (auto& b : attached) ASSERT_TRUE(b->Kill().ok());
}

// ---- the pure parts ----

TEST(FlintStopStatus, MapsFlintsStopKinds) {
  auto is = [](DomainStatus s, DomainState state, const char* reason) {
    return s.state == state && s.reason == reason;
  };
  EXPECT_TRUE(is(FlintStopStatus("power-off: ACPI S5", 0, false), DomainState::kShutoff,
                 "Shutdown"));
  EXPECT_TRUE(is(FlintStopStatus("debug-exit: port 0xf4 wrote 0", 1, false),
                 DomainState::kShutoff, "Shutdown"));
  EXPECT_TRUE(is(FlintStopStatus("debug-exit: port 0xf4 wrote 3", 7, false),
                 DomainState::kCrashed, "Crashed"));
  EXPECT_TRUE(is(FlintStopStatus("signal: stopped through the API", 130, false),
                 DomainState::kShutoff, "Destroyed"));
  EXPECT_TRUE(is(FlintStopStatus("triple-fault: CPU shutdown", 4, false), DomainState::kCrashed,
                 "Crashed"));
  EXPECT_TRUE(is(FlintStopStatus("guest-error: emulation failure", 4, true),
                 DomainState::kCrashed, "Crashed"));
  EXPECT_TRUE(is(FlintStopStatus("host-error: KVM_RUN", 6, false), DomainState::kCrashed,
                 "Crashed"));
  EXPECT_TRUE(is(FlintStopStatus("reset: i8042", 0, true), DomainState::kShutoff, "Destroyed"));
}

TEST(ParseFlintDeviceStats, DisksThenNicsInConfigOrder) {
  flint::v1::VmConfig config;
  config.add_disks()->set_path("/img/a");
  config.add_disks()->set_path("/img/b");
  config.add_nics()->set_mac("52:54:00:00:00:01");
  const std::vector<std::string> lines = {
      "pci 00:01.0 notify_traps=4 msi=3 intx=0 resets=0 needs_reset=0 engine=io_uring queues=1 "
      "reads=10 writes=2 flushes=1 discards=0 write_zeroes=0 get_id=0 unsupported_type=0 "
      "bytes_read=5120 bytes_written=1024 ioerr=1 unsupp=0 bounced=0 inflight_max=2",
      "pci 00:02.0 notify_traps=0 msi=0 intx=0 resets=0 needs_reset=0 engine=threads queues=1 "
      "reads=0 writes=7 flushes=0 discards=0 write_zeroes=0 get_id=0 unsupported_type=0 "
      "bytes_read=0 bytes_written=3584 ioerr=0 unsupp=0 bounced=0 inflight_max=1",
      "pci 00:03.0 notify_traps=9 msi=9 intx=0 resets=0 needs_reset=0 link=up queue_pairs=1/1 "
      "rx_frames=3 rx_bytes=300 tx_frames=4 tx_bytes=400 drop_short=1 drop_long=0 "
      "drop_bad_gso=0 drop_bad_csum=2 drop_no_rx_buffers=5 drop_filtered=4 backend_errors=0 "
      "tx_sw_csum=0 tx_busy=0 rx_pauses=0 rx_notifies=2 ctrl_err=0 rx_mode=- mac_table=0/0 "
      "link_changes=1 swaps=0 "
      "backend=\"passt pid=42 restarts=0\""};
  BackendStats out;
  ParseFlintDeviceStats(lines, config, {"a", "b"}, {"net0"}, &out);
  ASSERT_EQ(out.disks.size(), 2u);
  EXPECT_EQ(out.disks[0].name, "a");
  EXPECT_EQ(out.disks[0].path, "/img/a");
  EXPECT_EQ(out.disks[0].read_requests, 10u);
  EXPECT_EQ(out.disks[0].read_bytes, 5120u);
  EXPECT_EQ(out.disks[0].write_requests, 2u);
  EXPECT_EQ(out.disks[0].write_bytes, 1024u);
  EXPECT_EQ(out.disks[0].flush_requests, 1u);
  EXPECT_EQ(out.disks[0].errors, 1u);
  EXPECT_EQ(out.disks[1].path, "/img/b");
  EXPECT_EQ(out.disks[1].write_bytes, 3584u);
  ASSERT_EQ(out.nics.size(), 1u);
  EXPECT_EQ(out.nics[0].name, "net0");
  EXPECT_EQ(out.nics[0].mac, "52:54:00:00:00:01");
  EXPECT_EQ(out.nics[0].rx_packets, 3u);
  EXPECT_EQ(out.nics[0].rx_bytes, 300u);
  EXPECT_EQ(out.nics[0].tx_packets, 4u);
  EXPECT_EQ(out.nics[0].tx_bytes, 400u);
  EXPECT_EQ(out.nics[0].rx_dropped, 5u);
  EXPECT_EQ(out.nics[0].tx_dropped, 3u);
}

}  // namespace
}  // namespace flint::shim
