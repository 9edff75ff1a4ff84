// The QEMU backend: a VmConfig run by QEMU 7.2's microvm machine (PCIe,
// virtio-blk-pci, virtio-net-pci), started detached and driven over QMP.
//
// Threads. Every QEMU's QMP socket is read by the shared QMP I/O thread
// (qmp.h), which only updates this VM's state and queues events; the sink
// runs on a second shared thread ("flint-qmp-ev") so a sink that waits for a
// lock held by a thread blocked in a QMP command cannot stall the replies
// that thread waits for. Deciding how a VM ended (wait for the process to be
// gone, kill its passt) runs on a third ("flint-qmp-end"), so neither of the
// others ever sleeps. A Shutdown's grace timer is a thread of its own, alive
// only while a graceful shutdown is pending.
//
// Files in VM_DIR: qmp.sock, qemu.log (QEMU's stdout/stderr), serial.log,
// passtN.log, passt.pids ("PID START_TIME" per line: the record has no field
// for helpers) and qemu-devices.json (the VMI's disk and interface names, for
// a shim that attaches later).
#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <google/protobuf/struct.pb.h>
#include <google/protobuf/util/json_util.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <fstream>
#include <iterator>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/call_once.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "k8s-shim/backend.h"
#include "k8s-shim/files.h"
#include "k8s-shim/process.h"
#include "k8s-shim/qmp.h"
#include "vmm/event_loop.h"
#include "vmm/kvm/unique_fd.h"

namespace flint::shim {
namespace {

using google::protobuf::Struct;
using google::protobuf::Value;

// QEMU microvm with pcie=on puts its ECAM window at 0xe0000000 but has no
// MCFG table to say so. Only our test guest needs (and reads) this hint; a
// Linux kernel ignores the unknown parameter.
constexpr const char* kEcamHint = "flint.ecam=0xe0000000";

constexpr absl::Duration kQmpConnectTimeout = absl::Seconds(10);
constexpr absl::Duration kCommandTimeout = absl::Seconds(5);
constexpr absl::Duration kStatusTimeout = absl::Seconds(2);
constexpr absl::Duration kQuitWait = absl::Seconds(2);
constexpr absl::Duration kKillWait = absl::Seconds(5);
// How long a QEMU may take from closing its QMP socket to being gone.
constexpr absl::Duration kExitWait = absl::Seconds(5);

// The shared threads of this file, started on first use and never
// destroyed (see qmp.cc's loop): sink calls, and deciding how a VM ended.
struct SharedThreads {
  EventLoop* sink = nullptr;
  EventLoop* end = nullptr;
};
absl::StatusOr<SharedThreads> Threads() {
  static absl::once_flag once;
  static SharedThreads threads;
  static absl::Status* error = nullptr;
  absl::call_once(once, [] {
    absl::StatusOr<std::unique_ptr<EventLoop>> sink = EventLoop::Create("flint-qmp-ev");
    absl::StatusOr<std::unique_ptr<EventLoop>> end = EventLoop::Create("flint-qmp-end");
    if (!sink.ok() || !end.ok()) {
      error = new absl::Status(sink.ok() ? end.status() : sink.status());
      return;
    }
    threads.sink = sink->release();
    threads.end = end->release();
  });
  if (error != nullptr) return *error;
  return threads;
}

// ---- Small files ----

// What the backend reads back of its own small files (it wrote them).
constexpr size_t kMaxSmallFile = 1 << 20;

std::vector<ProcessId> ReadPasstPids(const std::string& vm_dir) {
  std::vector<ProcessId> out;
  for (absl::string_view line :
       absl::StrSplit(ReadFile(vm_dir + "/passt.pids", kMaxSmallFile).value_or(""), '\n', absl::SkipEmpty())) {
    std::vector<absl::string_view> f = absl::StrSplit(line, ' ', absl::SkipEmpty());
    ProcessId id;
    if (f.size() == 2 && absl::SimpleAtoi(f[0], &id.pid) &&
        absl::SimpleAtoi(f[1], &id.start_time) && id.pid > 0) {
      out.push_back(id);
    }
  }
  return out;
}

// A NIC's passt is useless once its QEMU is gone (it quits by itself when
// the socket closes; this is for one that does not).
void KillPassts(const std::string& vm_dir) {
  for (const ProcessId& id : ReadPasstPids(vm_dir)) KillProcess(id);
}

// ---- The command line ----

// A value inside a QEMU "key=value,..." option: commas are doubled.
std::string Opt(const std::string& value) { return absl::StrReplaceAll(value, {{",", ",,"}}); }

struct PasstNic {
  int index = 0;
  UniqueFd qemu_end;   // -netdev stream,addr.type=fd
  UniqueFd passt_end;  // passt -F
};

absl::StatusOr<std::vector<std::string>> QemuArgs(const LaunchSpec& spec,
                                                  const BackendPrograms& programs,
                                                  const std::vector<PasstNic>& passts,
                                                  std::vector<int>* keep_fds) {
  const flint::v1::VmConfig& c = spec.config;
  if (c.kernel().empty()) {
    return absl::InvalidArgumentError(
        "the QEMU backend needs a kernel (VmConfig.kernel); only flint has an embedded guest");
  }
  const uint32_t cpus = c.cpus() != 0 ? c.cpus() : 1;
  const uint32_t mib = c.memory_mib() != 0 ? c.memory_mib() : 256;
  if (cpus > 254) return absl::InvalidArgumentError(absl::StrFormat("cpus %u > 254", cpus));

  std::string machine = "microvm,accel=kvm,pcie=on,rtc=on,acpi=on";
  std::vector<std::string> memory_object;
  if (c.memory_backing() == "memfd" || c.memory_backing() == "hugetlb") {
    std::string obj = absl::StrFormat("memory-backend-memfd,id=ram0,size=%uM,share=on", mib);
    if (c.memory_backing() == "hugetlb") obj += ",hugetlb=on,hugetlbsize=2M";
    memory_object = {"-object", obj};
    machine += ",memory-backend=ram0";
  } else if (!c.memory_backing().empty() && c.memory_backing() != "anon") {
    return absl::InvalidArgumentError(absl::StrFormat(
        "memory_backing '%s': the QEMU backend knows anon, memfd and hugetlb",
        c.memory_backing()));
  }
  std::string aio;
  if (c.io_engine() == "io_uring" || c.io_engine() == "threads") {
    aio = ",aio=" + c.io_engine();
  } else if (!c.io_engine().empty() && c.io_engine() != "auto") {
    return absl::InvalidArgumentError(absl::StrFormat(
        "io_engine '%s': the QEMU backend knows auto, io_uring and threads", c.io_engine()));
  }

  std::string append = c.has_cmdline() ? c.cmdline() : std::string();
  append += append.empty() ? kEcamHint : absl::StrCat(" ", kEcamHint);

  std::vector<std::string> a = {
      programs.qemu, "-M", machine,
      // -arch-capabilities: QEMU 7.2 aborts setting MSR 0x10a on hosts (such
      // as nested KVM) that do not let it; the guest then assumes it is
      // affected by what that MSR would deny, which is the safe side.
      "-cpu", "host,-arch-capabilities", "-smp", absl::StrCat(cpus), "-m", absl::StrCat(mib, "M"),
      "-nodefaults", "-no-user-config", "-display", "none",
      // A guest power-off leaves QEMU up (state "shutdown") instead of
      // exiting at once: a power-off within moments of the start is then
      // still seen through QMP, and the backend ends QEMU itself (SIGTERM).
      "-no-shutdown",
      // A hostile guest that takes QEMU over still cannot exec, setuid or
      // change scheduling.
      "-sandbox", "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny",
      "-kernel", c.kernel(), "-append", append,
      "-chardev", absl::StrCat("file,id=serial0,path=", Opt(spec.vm_dir + "/serial.log")),
      "-serial", "chardev:serial0",
      "-chardev",
      absl::StrCat("socket,id=qmp,path=", Opt(spec.vm_dir + "/qmp.sock"), ",server=on,wait=off"),
      "-mon", "chardev=qmp,mode=control",
      // The guest can say it panicked (GUEST_PANICKED: Crashed/Panicked).
      "-device", "pvpanic"};
  a.insert(a.end(), memory_object.begin(), memory_object.end());
  if (!c.initrd().empty()) {
    a.push_back("-initrd");
    a.push_back(c.initrd());
  }
  for (int i = 0; i < c.disks_size(); ++i) {
    const flint::v1::Disk& d = c.disks(i);
    if (d.path().empty()) {
      return absl::InvalidArgumentError(absl::StrFormat("disk %d has no path", i));
    }
    a.push_back("-drive");
    a.push_back(absl::StrFormat("file=%s,if=none,id=d%d,format=raw,readonly=%s,cache.direct=%s%s",
                                Opt(d.path()), i, d.readonly() ? "on" : "off",
                                d.direct() ? "on" : "off", aio));
    std::string dev = absl::StrFormat("virtio-blk-pci,id=blk%d,drive=d%d,disable-legacy=on", i, i);
    if (!d.serial().empty()) dev += ",serial=" + Opt(d.serial());
    if (d.queues() > 1) dev += absl::StrFormat(",num-queues=%u", d.queues());
    a.push_back("-device");
    a.push_back(dev);
  }
  size_t next_passt = 0;
  for (int i = 0; i < c.nics_size(); ++i) {
    const flint::v1::Nic& n = c.nics(i);
    std::string netdev, dev_extra;
    if (n.has_passt()) {
      if (next_passt >= passts.size() || passts[next_passt].index != i) {
        return absl::InternalError(absl::StrFormat("no passt socket for NIC %d", i));
      }
      const int fd = passts[next_passt++].qemu_end.get();
      keep_fds->push_back(fd);
      netdev = absl::StrFormat("stream,id=n%d,server=off,addr.type=fd,addr.str=%d", i, fd);
    } else if (n.has_tap()) {
      const flint::v1::Tap& t = n.tap();
      if (!t.name().empty()) {
        netdev = absl::StrFormat("tap,id=n%d,ifname=%s,script=no,downscript=no,vhost=off", i,
                                 Opt(t.name()));
        if (t.queues() > 1) {
          netdev += absl::StrFormat(",queues=%u", t.queues());
          dev_extra = absl::StrFormat(",mq=on,vectors=%u", 2 * t.queues() + 2);
        }
      } else if (t.fd() >= 0) {
        if (t.queues() > 1) {
          return absl::InvalidArgumentError(
              absl::StrFormat("NIC %d: an inherited TAP fd carries one queue pair", i));
        }
        keep_fds->push_back(t.fd());
        netdev = absl::StrFormat("tap,id=n%d,fd=%d,vhost=off", i, t.fd());
      } else {
        return absl::InvalidArgumentError(absl::StrFormat("NIC %d: a TAP needs a name or fd", i));
      }
    } else {
      return absl::InvalidArgumentError(absl::StrFormat("NIC %d has no backend", i));
    }
    // romfile=: no iPXE option ROM (nothing boots from it; it is slow to run).
    std::string dev =
        absl::StrFormat("virtio-net-pci,id=net%d,netdev=n%d,disable-legacy=on,romfile=", i, i);
    if (!n.mac().empty()) dev += ",mac=" + Opt(n.mac());
    if (n.mtu() != 0) dev += absl::StrFormat(",host_mtu=%u", n.mtu());
    dev += dev_extra;
    a.push_back("-netdev");
    a.push_back(netdev);
    a.push_back("-device");
    a.push_back(dev);
  }
  return a;
}

// passt for NIC `index`: talks to QEMU over one end of a socketpair.
std::vector<std::string> PasstArgs(const BackendPrograms& programs, const flint::v1::Nic& n,
                                   int fd) {
  std::vector<std::string> a = {programs.passt, "-f", "-q", "-F", absl::StrCat(fd),
                                "-m", absl::StrCat(n.mtu() != 0 ? n.mtu() : 1500)};
  const flint::v1::Passt& p = n.passt();
  if (!p.addr().empty()) {
    a.push_back("-a");
    a.push_back(p.addr());
  }
  for (const std::string& spec : p.tcp()) {
    a.push_back("-t");
    a.push_back(spec);
  }
  for (const std::string& spec : p.udp()) {
    a.push_back("-u");
    a.push_back(spec);
  }
  return a;
}

// ---- Names of the VMI's devices, kept for a later Attach ----

absl::Status WriteDeviceNames(const std::string& vm_dir, const std::vector<std::string>& disks,
                              const std::vector<std::string>& nics) {
  Struct s;
  for (const auto& [key, names] : {std::pair{"disks", &disks}, std::pair{"nics", &nics}}) {
    auto* list = (*s.mutable_fields())[key].mutable_list_value();
    for (const std::string& n : *names) list->add_values()->set_string_value(n);
  }
  std::string json;
  if (!google::protobuf::util::MessageToJsonString(s, &json).ok()) {
    return absl::InternalError("cannot encode the device names");
  }
  return WriteFileAtomic(vm_dir + "/qemu-devices.json", json);
}

void ReadDeviceNames(const std::string& vm_dir, std::vector<std::string>* disks,
                     std::vector<std::string>* nics) {
  Struct s;
  if (!google::protobuf::util::JsonStringToMessage(ReadFile(vm_dir + "/qemu-devices.json", kMaxSmallFile).value_or(""),
                                                   &s)
           .ok()) {
    return;
  }
  for (const auto& [key, out] : {std::pair{"disks", disks}, std::pair{"nics", nics}}) {
    auto it = s.fields().find(key);
    if (it == s.fields().end()) continue;
    for (const Value& v : it->second.list_value().values()) out->push_back(v.string_value());
  }
}

// ---- State ----

// KubeVirt's view of QEMU's run states (query-status "status").
DomainStatus FromRunState(const std::string& s) {
  if (s == "running") return {DomainState::kRunning, "Unknown"};
  if (s == "paused" || s == "prelaunch" || s == "debug" || s == "suspended") {
    return {DomainState::kPaused, "User"};
  }
  if (s == "io-error") return {DomainState::kPaused, "IOError"};
  if (s == "watchdog") return {DomainState::kPaused, "Watchdog"};
  if (s == "inmigrate" || s == "postmigrate" || s == "finish-migrate") {
    return {DomainState::kPaused, "Migration"};
  }
  if (s == "save-vm" || s == "restore-vm") return {DomainState::kPaused, "Save"};
  if (s == "shutdown") return {DomainState::kShuttingDown, "Unknown"};
  if (s == "guest-panicked") return {DomainState::kCrashed, "Panicked"};
  if (s == "internal-error") return {DomainState::kCrashed, "Crashed"};
  return {DomainState::kNoState, "Unknown"};
}

std::string StringField(const Struct& s, const std::string& key) {
  auto it = s.fields().find(key);
  return it != s.fields().end() && it->second.has_string_value() ? it->second.string_value() : "";
}
bool BoolField(const Struct& s, const std::string& key) {
  auto it = s.fields().find(key);
  return it != s.fields().end() && it->second.bool_value();
}
uint64_t NumberField(const Struct& s, const std::string& key) {
  auto it = s.fields().find(key);
  if (it == s.fields().end() || !it->second.has_number_value()) return 0;
  const double v = it->second.number_value();
  return v > 0 && v < 1.8e19 ? static_cast<uint64_t>(v) : 0;
}

// What the QMP callbacks, the end thread and the sink thread share with the
// Backend; outlives it while work for it is queued.
struct VmState {
  ProcessId pid;
  std::string vm_dir;
  SharedThreads threads;
  EventSink sink;
  std::atomic<bool> detached{false};  // the Backend is being destroyed: no more sink calls

  absl::Mutex mu;
  DomainStatus status ABSL_GUARDED_BY(mu);
  bool gone ABSL_GUARDED_BY(mu) = false;            // the final event was sent
  bool kill_requested ABSL_GUARDED_BY(mu) = false;
  bool shutdown_seen ABSL_GUARDED_BY(mu) = false;   // QEMU's SHUTDOWN event
  bool shutdown_by_guest ABSL_GUARDED_BY(mu) = false;
  std::string shutdown_reason ABSL_GUARDED_BY(mu);
  bool panicked ABSL_GUARDED_BY(mu) = false;
  bool io_error_stop ABSL_GUARDED_BY(mu) = false;   // a BLOCK_IO_ERROR that stops the VM
  bool cancel_grace ABSL_GUARDED_BY(mu) = false;
  absl::Status qmp_lost ABSL_GUARDED_BY(mu);        // the session ended, QEMU did not
  uint64_t events_seen ABSL_GUARDED_BY(mu) = 0;
  // Events not yet handed to the sink, and whether a drain is queued on the
  // sink thread. Bounded: a guest that resets in a loop must not grow it
  // without end while the sink is slow; the newest state replaces the last
  // queued one then.
  std::deque<BackendEvent> queued ABSL_GUARDED_BY(mu);
  bool drain_queued ABSL_GUARDED_BY(mu) = false;
  static constexpr size_t kMaxQueued = 64;

  // Sets the state and queues its event; under mu, so events leave in the
  // order the state changed.
  void Emit(const DomainStatus& s, std::string detail) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    status = s;
    BackendEvent event{s, std::move(detail)};
    if (queued.size() >= kMaxQueued) {
      queued.back() = std::move(event);
    } else {
      queued.push_back(std::move(event));
    }
    if (!drain_queued) {
      drain_queued = true;
      threads.sink->Post([self = self_ref.lock()] {
        if (self != nullptr) self->Drain();
      });
    }
  }

  // On the sink thread.
  void Drain() {
    for (;;) {
      BackendEvent event;
      {
        absl::MutexLock l(&mu);
        if (queued.empty()) {
          drain_queued = false;
          return;
        }
        event = std::move(queued.front());
        queued.pop_front();
      }
      if (!detached.load() && sink) sink(event);
    }
  }

  // How the VM ended, from what QEMU said before it went.
  void Finish(const std::string& why) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    if (gone) return;
    gone = true;
    DomainStatus s;
    std::string detail;
    if (kill_requested) {
      s = {DomainState::kShutoff, "Destroyed"};
      detail = "QEMU stopped by Kill";
    } else if (panicked || shutdown_reason == "guest-panic") {
      s = {DomainState::kCrashed, "Panicked"};
      detail = "the guest panicked (GUEST_PANICKED); QEMU exited";
    } else if (shutdown_seen && shutdown_by_guest) {
      s = {DomainState::kShutoff, "Shutdown"};
      detail = absl::StrCat("the guest powered off (SHUTDOWN ", shutdown_reason, ")");
    } else if (shutdown_seen && shutdown_reason == "host-error") {
      s = {DomainState::kCrashed, "Crashed"};
      detail = "QEMU stopped on a host error (SHUTDOWN host-error); see qemu.log";
    } else if (shutdown_seen) {
      s = {DomainState::kShutoff, "Destroyed"};
      detail = absl::StrCat("QEMU was stopped from the host (SHUTDOWN ", shutdown_reason, ")");
    } else {
      s = {DomainState::kCrashed, "Crashed"};
      detail = absl::StrCat("QEMU went away without a SHUTDOWN event (killed or crashed; see "
                            "qemu.log): ", why);
    }
    Emit(s, std::move(detail));
  }

  std::weak_ptr<VmState> self_ref;
};

// Runs on the end thread once the QMP session ended: waits for the process
// to go, then says how the VM ended and removes its passt.
void OnSessionEnded(const std::shared_ptr<VmState>& vm, const absl::Status& why) {
  const bool exited = WaitProcessGone(vm->pid, kExitWait);
  {
    absl::MutexLock l(&vm->mu);
    if (!exited) {
      // The session broke (a protocol error) but QEMU lives on: commands
      // fail from now on; Kill still works by signal.
      vm->qmp_lost = why;
      return;
    }
    vm->Finish(std::string(why.message()));
  }
  KillPassts(vm->vm_dir);
}

class QemuBackend final : public Backend {
 public:
  QemuBackend(SharedThreads threads, ProcessId pid, std::string vm_dir, std::string qmp_path,
              flint::v1::VmConfig config, std::vector<std::string> disk_names,
              std::vector<std::string> nic_names, EventSink sink)
      : vm_(std::make_shared<VmState>()),
        qmp_path_(std::move(qmp_path)),
        config_(std::move(config)),
        disk_names_(std::move(disk_names)),
        nic_names_(std::move(nic_names)) {
    vm_->pid = pid;
    vm_->vm_dir = std::move(vm_dir);
    vm_->threads = threads;
    vm_->sink = std::move(sink);
    vm_->self_ref = vm_;
    nic_macs_.resize(config_.nics_size());
    for (int i = 0; i < config_.nics_size(); ++i) nic_macs_[i] = config_.nics(i).mac();
  }

  ~QemuBackend() override {
    vm_->detached = true;
    {
      absl::MutexLock l(&vm_->mu);
      vm_->cancel_grace = true;
    }
    {
      absl::MutexLock l(&grace_mu_);
      if (grace_thread_.joinable()) grace_thread_.join();
    }
    client_.reset();  // QEMU keeps running and takes the next QMP client
  }

  // Connects QMP and reads the run state. `fresh`: QEMU was just started
  // (a running guest has "Booted").
  absl::Status Connect(bool fresh) {
    QmpOptions options;
    options.connect_timeout = kQmpConnectTimeout;
    const ProcessId pid = vm_->pid;
    options.give_up = [pid] { return !ProcessAlive(pid); };
    std::weak_ptr<VmState> weak = vm_;
    options.on_event = [weak](const QmpEvent& e) {
      if (auto vm = weak.lock()) OnEvent(*vm, e);
    };
    options.on_closed = [weak](const absl::Status& why) {
      if (auto vm = weak.lock()) vm->threads.end->Post([vm, why] { OnSessionEnded(vm, why); });
    };
    absl::StatusOr<std::unique_ptr<QmpClient>> client = QmpClient::Connect(qmp_path_, options);
    if (!client.ok()) return client.status();
    client_ = std::move(*client);
    auto v = client_->greeting().fields().find("version");
    if (v != client_->greeting().fields().end()) {
      version_ = QmpVersionString(v->second.struct_value());
    }
    uint64_t events_before;
    {
      absl::MutexLock l(&vm_->mu);
      events_before = vm_->events_seen;
    }
    absl::StatusOr<Value> st = client_->Execute("query-status", nullptr, kCommandTimeout);
    if (!st.ok()) return st.status();
    const std::string run_state = StringField(st->struct_value(), "status");
    DomainStatus s = FromRunState(run_state);
    if (fresh && s.state == DomainState::kRunning) s.reason = "Booted";
    absl::MutexLock l(&vm_->mu);
    if (run_state == "shutdown" && !vm_->shutdown_seen) {
      // The guest powered off before this session saw the SHUTDOWN event
      // (nothing else puts QEMU there: the shim's own stops quit it).
      vm_->shutdown_seen = true;
      vm_->shutdown_by_guest = true;
      vm_->shutdown_reason = "guest-shutdown";
      SignalProcess(vm_->pid, SIGTERM);
    }
    // An event that came meanwhile is at least as new as this reply (and
    // knows the reason): it wins.
    if (vm_->events_seen == events_before && !vm_->gone) vm_->status = s;
    return absl::OkStatus();
  }

  const char* kind() const override { return "qemu"; }

  void FillRecord(flint::shim::v1::VmRecord* record) const override {
    record->set_backend("qemu");
    record->set_pid(vm_->pid.pid);
    record->set_pid_start_time(vm_->pid.start_time);
    record->set_api_socket(qmp_path_);
    record->set_vm_dir(vm_->vm_dir);
  }

  DomainStatus Status() override {
    {
      absl::MutexLock l(&vm_->mu);
      if (vm_->gone) return vm_->status;
    }
    if (!ProcessAlive(vm_->pid)) {
      // Gone, and the end thread has not said so yet (or the session was
      // already lost): decide now, once the lines QEMU sent before it went
      // (a SHUTDOWN, say) have been read.
      client_->WaitClosed(kStatusTimeout);
      {
        absl::MutexLock l(&vm_->mu);
        vm_->Finish("the QEMU process is gone");
      }
      KillPassts(vm_->vm_dir);
      absl::MutexLock l(&vm_->mu);
      return vm_->status;
    }
    absl::StatusOr<Value> st = client_->Execute("query-status", nullptr, kStatusTimeout);
    absl::MutexLock l(&vm_->mu);
    if (st.ok() && !vm_->gone) {
      DomainStatus now = FromRunState(StringField(st->struct_value(), "status"));
      // Events know why; query-status only knows what.
      if (now.state != vm_->status.state) vm_->status = now;
    }
    return vm_->status;
  }

  absl::Status Pause() override { return Simple("stop"); }
  absl::Status Resume() override { return Simple("cont"); }
  absl::Status Reset() override { return Simple("system_reset"); }

  absl::Status Shutdown(absl::Duration grace) override {
    if (absl::Status s = Simple("system_powerdown"); !s.ok()) return s;
    {
      absl::MutexLock l(&vm_->mu);
      if (!vm_->gone && vm_->status.state != DomainState::kShuttingDown) {
        vm_->Emit({DomainState::kShuttingDown, "User"},
                  "system_powerdown: the ACPI power button was pressed");
      }
    }
    absl::MutexLock l(&grace_mu_);
    if (!grace_thread_.joinable()) {
      grace_thread_ = std::thread([this, grace] { GraceTimer(grace); });
    }
    return absl::OkStatus();
  }

  absl::Status Kill() override {
    {
      absl::MutexLock l(&vm_->mu);
      if (vm_->gone) return absl::OkStatus();
      vm_->kill_requested = true;
    }
    absl::Status s = ForceStop();
    if (!s.ok()) return s;
    {
      absl::MutexLock l(&vm_->mu);
      vm_->Finish("Kill");
    }
    KillPassts(vm_->vm_dir);
    return absl::OkStatus();
  }

  absl::StatusOr<BackendStats> Stats() override {
    BackendStats stats;
    stats.vcpus = config_.cpus() != 0 ? config_.cpus() : 1;
    stats.memory_bytes = static_cast<uint64_t>(config_.memory_mib() != 0 ? config_.memory_mib()
                                                                          : 256)
                         << 20;
    absl::StatusOr<ProcessUsage> usage = ReadProcessUsage(vm_->pid.pid);
    if (!usage.ok() || !ProcessAlive(vm_->pid)) {
      return absl::FailedPreconditionError(
          absl::StrFormat("QEMU (pid %d) is not running", vm_->pid.pid));
    }
    stats.rss_bytes = usage->rss_bytes;
    stats.cpu_time_ns = usage->cpu_time_ns;

    for (int i = 0; i < config_.disks_size(); ++i) {
      DiskStats d;
      d.name = i < static_cast<int>(disk_names_.size()) ? disk_names_[i] : "";
      d.path = config_.disks(i).path();
      stats.disks.push_back(d);
    }
    absl::StatusOr<Value> blk = client_->Execute("query-blockstats", nullptr, kCommandTimeout);
    if (!blk.ok()) return blk.status();
    for (const Value& entry : blk->list_value().values()) {
      const Struct& e = entry.struct_value();
      // -drive ...,id=dN: the block backend is "dN", VmConfig.disks[N].
      const std::string device = StringField(e, "device");
      int index = -1;
      if (device.size() < 2 || device[0] != 'd' || !absl::SimpleAtoi(device.substr(1), &index) ||
          index < 0 || index >= static_cast<int>(stats.disks.size())) {
        continue;
      }
      auto st = e.fields().find("stats");
      if (st == e.fields().end()) continue;
      const Struct& s = st->second.struct_value();
      DiskStats& d = stats.disks[index];
      d.read_bytes = NumberField(s, "rd_bytes");
      d.write_bytes = NumberField(s, "wr_bytes");
      d.read_requests = NumberField(s, "rd_operations");
      d.write_requests = NumberField(s, "wr_operations");
      d.flush_requests = NumberField(s, "flush_operations");
      d.errors = NumberField(s, "failed_rd_operations") + NumberField(s, "failed_wr_operations") +
                 NumberField(s, "failed_flush_operations");
    }

    // QMP has no per-NIC packet counters (they would need a guest agent or
    // a netdev filter): names and MACs only, counters stay zero.
    for (int i = 0; i < config_.nics_size(); ++i) {
      NicStats n;
      n.name = i < static_cast<int>(nic_names_.size()) ? nic_names_[i] : "";
      n.mac = NicMac(i);
      stats.nics.push_back(n);
    }
    return stats;
  }

  std::string Version() override { return version_; }

 private:
  static void OnEvent(VmState& vm, const QmpEvent& e) {
    absl::MutexLock l(&vm.mu);
    if (vm.gone) return;
    ++vm.events_seen;
    const std::string detail = e.name;
    if (e.name == "STOP") {
      // QEMU also stops the CPUs on its way out, or after a panic (action
      // pause); that is no pause by a user.
      if (vm.shutdown_seen || vm.panicked) return;
      const bool io = vm.io_error_stop;
      vm.io_error_stop = false;
      vm.Emit({DomainState::kPaused, io ? "IOError" : "User"}, detail);
    } else if (e.name == "RESUME") {
      vm.Emit({DomainState::kRunning, "Unknown"}, detail);
    } else if (e.name == "RESET") {
      // A reset of a paused VM leaves it paused (QEMU's "prelaunch").
      if (vm.status.state != DomainState::kPaused) {
        vm.Emit({DomainState::kRunning, "Booted"},
                absl::StrCat("RESET ", StringField(e.data, "reason")));
      }
    } else if (e.name == "POWERDOWN") {
      if (vm.status.state != DomainState::kShuttingDown) {
        vm.Emit({DomainState::kShuttingDown, "User"}, detail);
      }
    } else if (e.name == "SHUTDOWN") {
      // The first SHUTDOWN says why (the SIGTERM below makes QEMU send
      // another, "host-signal"). With -no-shutdown QEMU waits: end it; the
      // final event follows when the process is gone.
      if (!vm.shutdown_seen) {
        vm.shutdown_seen = true;
        vm.shutdown_by_guest = BoolField(e.data, "guest");
        vm.shutdown_reason = StringField(e.data, "reason");
      }
      SignalProcess(vm.pid, SIGTERM);
    } else if (e.name == "GUEST_PANICKED") {
      vm.panicked = true;
      vm.Emit({DomainState::kCrashed, "Panicked"},
              absl::StrCat("GUEST_PANICKED ", StringField(e.data, "action")));
    } else if (e.name == "BLOCK_IO_ERROR") {
      if (StringField(e.data, "action") == "stop") vm.io_error_stop = true;
    }
  }

  // A command that answers {} and whose effect the events report.
  absl::Status Simple(const std::string& command) {
    {
      absl::MutexLock l(&vm_->mu);
      if (vm_->gone) {
        return absl::FailedPreconditionError(
            absl::StrFormat("%s: the VM's QEMU has exited", command));
      }
      if (!vm_->qmp_lost.ok()) {
        return absl::UnavailableError(absl::StrFormat(
            "%s: the QMP session to QEMU was lost (%s); only Kill works", command,
            vm_->qmp_lost.message()));
      }
    }
    return client_->Execute(command, nullptr, kCommandTimeout).status();
  }

  // quit, then SIGKILL if QEMU is still there; OK once the process is gone.
  absl::Status ForceStop() {
    if (!client_->closed()) {
      client_->Execute("quit", nullptr, kQuitWait).IgnoreError();  // it may exit before replying
    }
    if (!WaitProcessGone(vm_->pid, kQuitWait)) {
      KillProcess(vm_->pid);
      if (!WaitProcessGone(vm_->pid, kKillWait)) {
        return absl::InternalError(absl::StrFormat(
            "QEMU pid %d is still there %s after SIGKILL (stuck in the kernel?)", vm_->pid.pid,
            absl::FormatDuration(kKillWait)));
      }
    }
    return absl::OkStatus();
  }

  // After `grace` the guest has had its chance: quit, then SIGKILL.
  void GraceTimer(absl::Duration grace) {
    {
      absl::MutexLock l(&vm_->mu);
      auto done = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(vm_->mu) {
        return vm_->gone || vm_->cancel_grace;
      };
      vm_->mu.AwaitWithTimeout(absl::Condition(&done), grace);
      if (vm_->gone || vm_->cancel_grace) return;
    }
    if (ProcessAlive(vm_->pid)) ForceStop().IgnoreError();
  }

  // The MAC the guest sees: the configured one, or the one QEMU picked.
  std::string NicMac(int i) {
    {
      absl::MutexLock l(&mac_mu_);
      if (!nic_macs_[i].empty()) return nic_macs_[i];
    }
    Struct args;
    (*args.mutable_fields())["path"].set_string_value(
        absl::StrFormat("/machine/peripheral/net%d", i));
    (*args.mutable_fields())["property"].set_string_value("mac");
    absl::StatusOr<Value> mac = client_->Execute("qom-get", &args, kCommandTimeout);
    if (!mac.ok() || !mac->has_string_value()) return "";
    absl::MutexLock l(&mac_mu_);
    nic_macs_[i] = mac->string_value();
    return nic_macs_[i];
  }

  const std::shared_ptr<VmState> vm_;
  const std::string qmp_path_;
  const flint::v1::VmConfig config_;
  const std::vector<std::string> disk_names_;
  const std::vector<std::string> nic_names_;
  absl::Mutex mac_mu_;
  std::vector<std::string> nic_macs_ ABSL_GUARDED_BY(mac_mu_);
  std::string version_;                // set by Connect
  std::unique_ptr<QmpClient> client_;  // set by Connect

  absl::Mutex grace_mu_;
  std::thread grace_thread_;  // guarded by grace_mu_
};

}  // namespace

absl::StatusOr<std::unique_ptr<Backend>> StartQemu(const LaunchSpec& spec,
                                                   const BackendPrograms& programs,
                                                   EventSink sink) {
  struct stat st;
  if (spec.vm_dir.empty() || stat(spec.vm_dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("VM directory '%s' does not exist", spec.vm_dir));
  }
  const flint::v1::VmConfig& c = spec.config;
  absl::StatusOr<SharedThreads> threads = Threads();
  if (!threads.ok()) return threads.status();

  std::vector<PasstNic> passts;
  for (int i = 0; i < c.nics_size(); ++i) {
    if (!c.nics(i).has_passt()) continue;
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
      return absl::InternalError(absl::StrFormat("socketpair for NIC %d: %s", i, strerror(errno)));
    }
    PasstNic p;
    p.index = i;
    p.qemu_end.reset(sv[0]);
    p.passt_end.reset(sv[1]);
    passts.push_back(std::move(p));
  }
  std::vector<int> keep_fds;
  absl::StatusOr<std::vector<std::string>> args = QemuArgs(spec, programs, passts, &keep_fds);
  if (!args.ok()) return args.status();
  if (absl::Status s = WriteDeviceNames(spec.vm_dir, spec.disk_names, spec.nic_names); !s.ok()) {
    return s;
  }

  // One passt per passt NIC; it quits when QEMU's end of its socket closes.
  std::vector<ProcessId> passt_pids;
  auto kill_passts = [&] {
    for (const ProcessId& id : passt_pids) KillProcess(id);
  };
  std::string pid_lines;
  for (PasstNic& p : passts) {
    absl::StatusOr<ProcessId> pid =
        SpawnDetached(PasstArgs(programs, c.nics(p.index), p.passt_end.get()),
                      absl::StrFormat("%s/passt%d.log", spec.vm_dir, p.index), {p.passt_end.get()});
    p.passt_end.reset();
    if (!pid.ok()) {
      kill_passts();
      return absl::Status(pid.status().code(),
                          absl::StrFormat("starting passt for NIC %d: %s", p.index,
                                          pid.status().message()));
    }
    passt_pids.push_back(*pid);
    absl::StrAppendFormat(&pid_lines, "%d %u\n", pid->pid, pid->start_time);
  }
  if (absl::Status s = WriteFileAtomic(spec.vm_dir + "/passt.pids", pid_lines); !s.ok()) {
    kill_passts();
    return s;
  }

  const std::string qmp_path = spec.vm_dir + "/qmp.sock";
  const std::string log = spec.vm_dir + "/qemu.log";
  unlink(qmp_path.c_str());  // a stale one would only refuse us until QEMU replaces it
  absl::StatusOr<ProcessId> pid = SpawnDetached(*args, log, keep_fds);
  passts.clear();  // QEMU has its ends now
  if (!pid.ok()) {
    kill_passts();
    return pid.status();
  }
  if (spec.on_spawned) spec.on_spawned(*pid, qmp_path);

  auto backend = std::make_unique<QemuBackend>(*threads, *pid, spec.vm_dir, qmp_path, c,
                                               spec.disk_names, spec.nic_names, std::move(sink));
  if (absl::Status s = backend->Connect(/*fresh=*/true); !s.ok()) {
    KillProcess(*pid);
    WaitProcessGone(*pid, kKillWait);
    kill_passts();
    return absl::Status(s.code(), absl::StrFormat("QEMU did not come up: %s\nqemu.log:\n%s",
                                                  s.message(), LogTail(log)));
  }
  return std::unique_ptr<Backend>(std::move(backend));
}

absl::StatusOr<std::unique_ptr<Backend>> AttachQemu(const flint::shim::v1::VmRecord& record,
                                                    EventSink sink) {
  const ProcessId pid{record.pid(), record.pid_start_time()};
  if (record.pid() <= 0 || !ProcessAlive(pid)) {
    return absl::NotFoundError(absl::StrFormat(
        "QEMU pid %d (start time %u) is gone", record.pid(), record.pid_start_time()));
  }
  absl::StatusOr<SharedThreads> threads = Threads();
  if (!threads.ok()) return threads.status();
  std::vector<std::string> disk_names, nic_names;
  ReadDeviceNames(record.vm_dir(), &disk_names, &nic_names);
  const std::string qmp_path =
      !record.api_socket().empty() ? record.api_socket() : record.vm_dir() + "/qmp.sock";
  auto backend = std::make_unique<QemuBackend>(*threads, pid, record.vm_dir(), qmp_path,
                                               record.config(), std::move(disk_names),
                                               std::move(nic_names), std::move(sink));
  if (absl::Status s = backend->Connect(/*fresh=*/false); !s.ok()) {
    if (!ProcessAlive(pid)) {
      return absl::NotFoundError(absl::StrFormat("QEMU pid %d exited: %s", pid.pid, s.message()));
    }
    return s;
  }
  return std::unique_ptr<Backend>(std::move(backend));
}

}  // namespace flint::shim
