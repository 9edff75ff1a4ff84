#include "k8s-shim/hypervisor_info.h"

#include <dirent.h>
#include <fcntl.h>
#include <liburing.h>
#include <linux/kvm.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "grpcpp/grpcpp.h"
#include "k8s-shim/files.h"
#include "vmm/kvm/kvm.h"
#include "vm_service.grpc.pb.h"
#include "vmm/kvm/unique_fd.h"

namespace flint::shim {
namespace {

using flint::shim::v1::GetHypervisorInfoResponse;

constexpr char kKvmDevice[] = "/dev/kvm";
constexpr int kKvmApiVersion = 12;
// The measuring VM: flint's embedded test guest, idling in HLT after its
// set-up. flint's private memory barely depends on the guest size (guest
// RAM is subtracted; KVM's own structures are kernel memory).
constexpr char kProbeMemory[] = "64M";
constexpr char kProbeCmdline[] = "flint.prog=idle";
constexpr absl::Duration kVersionTimeout = absl::Seconds(10);
// Generous: on a nested-KVM host under load a VM start can take seconds.
constexpr absl::Duration kProbeTimeout = absl::Seconds(60);
constexpr absl::Duration kApiCallTimeout = absl::Seconds(10);

std::string Label(const char* name) { return absl::StrCat(kLabelPrefix, name); }
const char* Bool(bool b) { return b ? "true" : "false"; }

// Where `program` resolves: itself when it names a path, else the first
// executable regular file of that name in $PATH.
std::optional<std::string> FindProgram(const std::string& program) {
  auto executable = [](const std::string& path) {
    struct stat st {};
    return stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode) && access(path.c_str(), X_OK) == 0;
  };
  if (program.empty()) return std::nullopt;
  if (program.find('/') != std::string::npos) {
    if (executable(program)) return program;
    return std::nullopt;
  }
  const char* path_env = getenv("PATH");
  const std::string path = path_env != nullptr ? path_env : "/usr/local/bin:/usr/bin:/bin";
  for (absl::string_view dir : absl::StrSplit(path, ':', absl::SkipEmpty())) {
    std::string candidate = absl::StrCat(dir, "/", program);
    if (executable(candidate)) return candidate;
  }
  return std::nullopt;
}

std::string Tail(const std::string& text, size_t max_bytes = 1500) {
  std::string t(absl::StripAsciiWhitespace(text));
  if (t.size() > max_bytes) t = "..." + t.substr(t.size() - max_bytes);
  return t.empty() ? "(no output)" : t;
}

// A Kubernetes label value: at most 63 characters of [A-Za-z0-9._-],
// beginning and ending with an alphanumeric one.
std::string LabelValue(absl::string_view raw) {
  std::string v;
  for (char ch : raw) {
    if (v.size() == 63) break;
    v += (absl::ascii_isalnum(ch) || ch == '.' || ch == '_' || ch == '-') ? ch : '_';
  }
  while (!v.empty() && !absl::ascii_isalnum(v.back())) v.pop_back();
  while (!v.empty() && !absl::ascii_isalnum(v.front())) v.erase(0, 1);
  return v;
}

// /dev/kvm: opened, API version 12, the capabilities that matter to flint.
// Fills device, device_usable, device_detail and the kvm labels.
void ProbeKvm(GetHypervisorInfoResponse* r) {
  auto& labels = *r->mutable_labels();
  r->set_device(kKvmDevice);
  labels[Label("kvm")] = "false";
  UniqueFd fd(open(kKvmDevice, O_RDWR | O_CLOEXEC));
  if (!fd.valid()) {
    const int e = errno;
    r->set_device_usable(false);
    r->set_device_detail(absl::StrFormat(
        "cannot open %s: %s%s", kKvmDevice, strerror(e),
        e == ENOENT ? " (no KVM on this host: load kvm_intel/kvm_amd or enable virtualization)"
        : e == EACCES || e == EPERM ? " (run the shim as root or in the group owning it)"
                                    : ""));
    return;
  }
  const int version = ioctl(fd.get(), KVM_GET_API_VERSION, 0);
  struct Cap {
    long cap;
    const char* name;
  };
  // What flint's devices and interrupt paths are built on, and the limits
  // a scheduler may care about.
  static constexpr Cap kCaps[] = {
      {KVM_CAP_USER_MEMORY, "user-memory"},   {KVM_CAP_IRQCHIP, "irqchip"},
      {KVM_CAP_IRQFD, "irqfd"},               {KVM_CAP_IOEVENTFD, "ioeventfd"},
      {KVM_CAP_IRQ_ROUTING, "gsi-routing"},   {KVM_CAP_IRQFD_RESAMPLE, "irqfd-resample"},
      {KVM_CAP_X2APIC_API, "x2apic-api"},     {KVM_CAP_TSC_DEADLINE_TIMER, "tsc-deadline"},
      {KVM_CAP_IMMEDIATE_EXIT, "immediate-exit"}, {KVM_CAP_SPLIT_IRQCHIP, "split-irqchip"},
      {KVM_CAP_NESTED_STATE, "nested-state"}, {KVM_CAP_NR_MEMSLOTS, "memslots"},
      {KVM_CAP_MAX_VCPUS, "max-vcpus"},
  };
  std::vector<std::string> found;
  for (const Cap& c : kCaps) {
    const int v = ioctl(fd.get(), KVM_CHECK_EXTENSION, c.cap);
    found.push_back(absl::StrCat(c.name, "=", v < 0 ? 0 : v));
    if (c.cap == KVM_CAP_MAX_VCPUS && v > 0) labels[Label("kvm-max-vcpus")] = absl::StrCat(v);
    if (c.cap == KVM_CAP_X2APIC_API) labels[Label("kvm-x2apic-api")] = Bool(v > 0);
    if (c.cap == KVM_CAP_NESTED_STATE) labels[Label("kvm-nested-state")] = Bool(v > 0);
  }
  std::string detail =
      absl::StrFormat("KVM API version %d; %s", version, absl::StrJoin(found, " "));
  bool usable = version == kKvmApiVersion;
  if (!usable) {
    detail = absl::StrFormat("%s speaks KVM API version %d, not %d; %s", kKvmDevice, version,
                             kKvmApiVersion, detail);
  } else if (absl::StatusOr<Kvm> kvm = Kvm::Open(kKvmDevice); !kvm.ok()) {
    // flint's own start-up check (the capabilities it cannot run without).
    usable = false;
    detail = absl::StrCat("flint cannot use it: ", kvm.status().message(), "; ", detail);
  }
  r->set_device_usable(usable);
  r->set_device_detail(detail);
  labels[Label("kvm")] = Bool(usable);
}

// Host features that decide which VMs this node can run.
void ProbeHost(const BackendPrograms& programs, GetHypervisorInfoResponse* r) {
  auto& labels = *r->mutable_labels();

  // Nested virtualization: this host is itself a guest (CPUID's hypervisor
  // bit), and whether KVM runs on hardware support or on kvm_pvm, the
  // paravirtualized KVM that needs no VMX/SVM in the guest.
  const std::string cpuinfo = ReadFile("/proc/cpuinfo").value_or("");
  std::string flags;
  for (absl::string_view line : absl::StrSplit(cpuinfo, '\n')) {
    if (absl::StartsWith(line, "flags")) {
      flags = absl::StrCat(" ", line.substr(line.find(':') + 1), " ");
      break;
    }
  }
  const bool vmx = absl::StrContains(flags, " vmx ");
  const bool svm = absl::StrContains(flags, " svm ");
  const bool pvm = access("/sys/module/kvm_pvm", F_OK) == 0;
  labels[Label("nested")] = Bool(absl::StrContains(flags, " hypervisor "));
  labels[Label("kvm-pvm")] = Bool(pvm);
  labels[Label("hw-virt")] = vmx ? "vmx" : svm ? "svm" : "none";

  io_uring ring;
  const bool uring = io_uring_queue_init(4, &ring, 0) == 0;
  if (uring) io_uring_queue_exit(&ring);
  labels[Label("io-uring")] = Bool(uring);

  labels[Label("passt")] = Bool(FindProgram(programs.passt).has_value());
  UniqueFd tun(open("/dev/net/tun", O_RDWR | O_CLOEXEC));
  labels[Label("tap")] = Bool(tun.valid());
  // The host's VFIO container device; flint itself assigns no host devices.
  labels[Label("vfio")] = Bool(access("/dev/vfio/vfio", F_OK) == 0);
  // Confidential VMs: flint is not built with TDX (or SEV) support.
  labels[Label("tdx")] = "false";

  uint64_t free_2m = 0;
  std::string text(absl::StripAsciiWhitespace(
      ReadFile("/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages").value_or("")));
  if (!absl::SimpleAtoi(text, &free_2m)) free_2m = 0;
  labels[Label("hugepages-2Mi")] = Bool(free_2m > 0);
  labels[Label("hugepages-2Mi-free")] = absl::StrCat(free_2m);
  // Transparent huge pages: "[madvise]" is the mode in effect; flint asks
  // for them on guest RAM with MADV_HUGEPAGE.
  const std::string thp = ReadFile("/sys/kernel/mm/transparent_hugepage/enabled").value_or("");
  const size_t open_br = thp.find('['), close_br = thp.find(']');
  if (open_br != std::string::npos && close_br != std::string::npos && close_br > open_br) {
    labels[Label("thp")] = LabelValue(thp.substr(open_br + 1, close_br - open_br - 1));
  }

  int nodes = 0;
  if (DIR* d = opendir("/sys/devices/system/node")) {
    while (dirent* e = readdir(d)) {
      unsigned n = 0;
      if (absl::StartsWith(e->d_name, "node") && absl::SimpleAtoi(e->d_name + 4, &n)) ++nodes;
    }
    closedir(d);
  }
  // A kernel without NUMA support has no node directory: one node.
  labels[Label("numa-nodes")] = absl::StrCat(nodes > 0 ? nodes : 1);
}

// A private directory for the measuring VM's API socket, removed with it.
class TempDir {
 public:
  static absl::StatusOr<TempDir> Make() {
    const char* tmp = getenv("TMPDIR");
    std::string templ = absl::StrCat(tmp != nullptr && *tmp ? tmp : "/tmp", "/flint-probe-XXXXXX");
    if (mkdtemp(templ.data()) == nullptr) return ErrnoStatus(errno, "mkdtemp " + templ);
    TempDir d;
    d.path_ = templ;
    return d;
  }
  TempDir(TempDir&& o) noexcept : path_(std::move(o.path_)) { o.path_.clear(); }
  TempDir(const TempDir&) = delete;
  ~TempDir() {
    if (path_.empty()) return;
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }

 private:
  TempDir() = default;
  std::string path_;
};

// Whether `pid` (our child) has exited, without reaping it.
bool ChildExited(pid_t pid) {
  siginfo_t info{};
  return waitid(P_PID, static_cast<id_t>(pid), &info, WEXITED | WNOHANG | WNOWAIT) == 0 &&
         info.si_pid == pid;
}

// Drives the measuring VM as the shim drives each of its VMs: connected to
// its API with a WatchEvents stream open (the gRPC server's threads and
// per-connection buffers belong in the figure), then stopped through the
// API, which makes flint print its --stats.
absl::Status DriveProbeVm(const std::string& socket, pid_t pid) {
  const absl::Time deadline = absl::Now() + kProbeTimeout;
  while (access(socket.c_str(), F_OK) != 0) {
    if (ChildExited(pid)) return absl::InternalError("flint exited before serving its API");
    if (absl::Now() > deadline) {
      return absl::DeadlineExceededError("flint's API socket never appeared");
    }
    absl::SleepFor(absl::Milliseconds(10));
  }
  std::unique_ptr<flint::v1::VmService::Stub> stub = flint::v1::VmService::NewStub(
      grpc::CreateChannel("unix:" + socket, grpc::InsecureChannelCredentials()));
  grpc::ClientContext watch_ctx;
  watch_ctx.set_deadline(absl::ToChronoTime(deadline));
  std::unique_ptr<grpc::ClientReader<flint::v1::VmEvent>> events =
      stub->WatchEvents(&watch_ctx, flint::v1::WatchEventsRequest());
  for (;;) {
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + kApiCallTimeout));
    flint::v1::GetInfoResponse info;
    const grpc::Status s = stub->GetInfo(&ctx, flint::v1::GetInfoRequest(), &info);
    if (s.ok() && info.state() == flint::v1::VM_STATE_RUNNING) break;
    if (ChildExited(pid)) return absl::InternalError("flint exited before its VM ran");
    if (absl::Now() > deadline) {
      return absl::DeadlineExceededError(absl::StrFormat(
          "the VM never reported running (last GetInfo: %s)",
          s.ok() ? flint::v1::VmState_Name(info.state()) : s.error_message()));
    }
    absl::SleepFor(absl::Milliseconds(10));
  }
  grpc::ClientContext ctx;
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + kApiCallTimeout));
  flint::v1::StopResponse stopped;
  const grpc::Status s = stub->Stop(&ctx, flint::v1::StopRequest(), &stopped);
  if (!s.ok()) return absl::InternalError("Stop through the API failed: " + s.error_message());
  // The stream ends when flint exits.
  flint::v1::VmEvent event;
  while (events->Read(&event)) {
  }
  (void)events->Finish();
  return absl::OkStatus();
}

// Measures flint's own memory per VM and reads its account of it at stop:
// "memory: rss R KiB = guest-touched G KiB + flint private P KiB + ...".
absl::Status MeasureOverhead(const std::string& flint, const std::string& version,
                             GetHypervisorInfoResponse* r) {
  absl::StatusOr<TempDir> dir = TempDir::Make();
  if (!dir.ok()) return dir.status();
  // The options the shim starts every VM with (an API socket, the serial
  // console to a file), plus --stats.
  const std::string socket = dir->path() + "/api.sock";
  std::vector<std::string> argv = {flint, "run", "--memory", kProbeMemory,
                                   "--cmdline", kProbeCmdline, "--stats",
                                   "--api-socket", socket,
                                   "--serial", "file:" + dir->path() + "/serial.log",
                                   "--state-dir", dir->path()};
  absl::StatusOr<CapturedChild> child = SpawnCaptured(argv);
  if (!child.ok()) return child.status();
  const absl::Status driven = DriveProbeVm(socket, child->pid);
  if (!driven.ok()) kill(child->pid, SIGKILL);
  const Captured c = Collect(*child, kProbeTimeout);
  const std::string how = absl::StrFormat(
      "`%s run --memory %s --cmdline %s --stats --api-socket DIR/api.sock --serial "
      "file:DIR/serial.log --state-dir DIR`, a WatchEvents stream open, stopped by the API's Stop",
      flint, kProbeMemory, kProbeCmdline);
  constexpr std::string_view kKey = "flint private ";
  const size_t at = c.err.find(kKey);
  uint64_t kib = 0;
  if (at != std::string::npos) {
    const size_t start = at + kKey.size();
    const size_t end = c.err.find(' ', start);
    if (!absl::SimpleAtoi(c.err.substr(start, end - start), &kib)) kib = 0;
  }
  if (!driven.ok() || kib == 0) {
    std::string what =
        c.timed_out
            ? absl::StrFormat("flint did not exit within %s", absl::FormatDuration(kProbeTimeout))
        : c.exited ? absl::StrFormat("flint exited with status %d without a memory line",
                                     c.exit_status)
                   : std::string("flint was killed by a signal");
    if (!driven.ok()) what = absl::StrCat(driven.message(), "; ", what);
    return absl::InternalError(absl::StrFormat(
        "measuring flint's per-VM memory failed: %s: %s; its stderr: %s", how, what,
        Tail(c.err)));
  }
  r->set_memory_overhead_bytes(kib << 10);
  r->set_memory_overhead_source(absl::StrFormat(
      "flint %s, measured once at start-up: private memory of one idle VM (smaps_rollup "
      "Anonymous + Shmem minus the guest RAM it touched; shared code excluded), %llu KiB, as "
      "printed at its stop by %s",
      version, static_cast<unsigned long long>(kib), how));
  return absl::OkStatus();
}

std::string CacheKey(const BackendPrograms& p) {
  return absl::StrCat(p.flint, "\n", p.qemu, "\n", p.passt);
}

}  // namespace

absl::StatusOr<GetHypervisorInfoResponse> ProbeHypervisorUncached(const BackendPrograms& programs) {
  const std::optional<std::string> flint = FindProgram(programs.flint);
  if (!flint) {
    if (programs.flint.find('/') != std::string::npos) {
      return absl::NotFoundError(absl::StrFormat(
          "flint binary %s does not exist or is not executable (set the shim's --flint)",
          programs.flint));
    }
    const char* path = getenv("PATH");
    return absl::NotFoundError(absl::StrFormat(
        "flint binary '%s' not found in PATH (%s); install it or give the shim --flint PATH",
        programs.flint, path != nullptr ? path : "unset"));
  }

  GetHypervisorInfoResponse r;
  r.set_hypervisor("flint");
  absl::StatusOr<Captured> v = RunCaptured({*flint, "--version"}, kVersionTimeout);
  if (!v.ok()) return v.status();
  // "flint 0.1.0"
  std::string version(absl::StripAsciiWhitespace(v->out));
  if (absl::StartsWith(version, "flint ")) version = version.substr(6);
  if (!v->exited || v->exit_status != 0 || version.empty()) {
    return absl::InternalError(absl::StrFormat("%s --version failed (status %d): %s", *flint,
                                               v->exit_status, Tail(v->out + v->err)));
  }
  r.set_version(version);
  (*r.mutable_labels())[Label("version")] = LabelValue(version);

  ProbeKvm(&r);
  ProbeHost(programs, &r);

  r.add_backends("flint");
  const bool qemu = FindProgram(programs.qemu).has_value();
  (*r.mutable_labels())[Label("qemu")] = Bool(qemu);
  if (qemu) r.add_backends("qemu");

  if (r.device_usable()) {
    if (absl::Status s = MeasureOverhead(*flint, version, &r); !s.ok()) return s;
  } else {
    r.set_memory_overhead_bytes(0);
    r.set_memory_overhead_source(
        absl::StrCat("not measured: ", kKvmDevice, " is unusable (", r.device_detail(), ")"));
  }
  return r;
}

absl::StatusOr<GetHypervisorInfoResponse> ProbeHypervisor(const BackendPrograms& programs) {
  static absl::Mutex mu(absl::kConstInit);
  static auto* cache = new std::map<std::string, GetHypervisorInfoResponse>();
  // Held across the probe: a second caller waits for the first's VM rather
  // than starting another.
  absl::MutexLock lock(&mu);
  const std::string key = CacheKey(programs);
  if (auto it = cache->find(key); it != cache->end()) return it->second;
  absl::StatusOr<GetHypervisorInfoResponse> r = ProbeHypervisorUncached(programs);
  if (r.ok()) cache->emplace(key, *r);
  return r;
}

}  // namespace flint::shim
