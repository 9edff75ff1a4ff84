#include "k8s-shim/launcher_service.h"

#include <google/protobuf/util/message_differencer.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <map>
#include <optional>
#include <vector>

#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "k8s-shim/domain_json.h"
#include "k8s-shim/flint_backend.h"
#include "k8s-shim/process.h"

namespace flint::shim {
namespace {

using flint::shim::v1::VmRecord;
using kubevirt::cmd::v1::Response;

constexpr uint32_t kCmdVersion = 1;

Response Ok() {
  Response r;
  r.set_success(true);
  return r;
}

Response Fail(const std::string& message) {
  Response r;
  r.set_success(false);
  r.set_message(message);
  return r;
}

bool IsGone(DomainState state) {
  return state == DomainState::kShutoff || state == DomainState::kCrashed;
}

// Creates `path` (and its parent) mode 0700 if missing.
absl::Status MakeDirs(const std::string& path) {
  const size_t slash = path.rfind('/');
  if (slash != std::string::npos && slash > 0) {
    const std::string parent = path.substr(0, slash);
    struct stat st;
    if (stat(parent.c_str(), &st) != 0) {
      if (absl::Status s = MakeDirs(parent); !s.ok()) return s;
    }
  }
  if (mkdir(path.c_str(), 0700) != 0 && errno != EEXIST) {
    return absl::InternalError(absl::StrFormat("creating %s: %s", path, strerror(errno)));
  }
  return absl::OkStatus();
}

// What protobuf's MessageDifferencer says changed, on one line.
std::string ConfigDiff(const flint::v1::VmConfig& before, const flint::v1::VmConfig& after) {
  std::string report;
  google::protobuf::util::MessageDifferencer diff;
  diff.ReportDifferencesToString(&report);
  if (diff.Compare(before, after)) return "";
  std::vector<std::string> lines = absl::StrSplit(report, '\n', absl::SkipEmpty());
  return absl::StrJoin(lines, "; ");
}

// `program --version`'s first line, for GetQemuVersion when no VM runs.
// Cached per program; empty when it cannot be run within a few seconds.
std::string ProgramVersion(const std::string& program) {
  static absl::Mutex mu(absl::kConstInit);
  static auto* cache = new std::map<std::string, std::string>();
  {
    absl::MutexLock l(&mu);
    if (auto it = cache->find(program); it != cache->end()) return it->second;
  }
  std::string out;
  if (absl::StatusOr<Captured> c = RunCaptured({program, "--version"}, absl::Seconds(5)); c.ok()) {
    out = std::move(c->out);
  }
  out = out.substr(0, out.find('\n'));
  absl::MutexLock l(&mu);
  (*cache)[program] = out;
  return out;
}

}  // namespace

bool KnownBackend(const std::string& name) { return name == "flint" || name == "qemu"; }

// ---- Slot ----

// The VMI's device names a record keeps, for the domain's device list.
static DeviceNames NamesOf(const VmRecord& record) {
  DeviceNames names;
  names.disks.assign(record.disk_names().begin(), record.disk_names().end());
  names.nics.assign(record.nic_names().begin(), record.nic_names().end());
  return names;
}

static void SetNames(const Translation& tr, VmRecord* record) {
  record->clear_disk_names();
  for (const std::string& n : tr.disk_names) record->add_disk_names(n);
  record->clear_nic_names();
  for (const std::string& n : tr.nic_names) record->add_nic_names(n);
}

Slot::Slot(VmRecord record, const ShimContext* ctx) : id_(record.id()), ctx_(ctx) {
  absl::MutexLock l(&mu_);
  record_ = std::move(record);
  if (record_.vmi_uid().empty() || record_.deleted()) return;
  // A loaded record: its VM ran when the record was written. Until Reattach
  // knows better, GetDomain answers Running from the record, so that
  // virt-handler never sees the domain vanish across a shim restart.
  absl::StatusOr<VmiMeta> meta = ReadVmiMeta(record_.vmi_json());
  if (meta.ok()) {
    meta_ = *meta;
  } else {
    meta_.uid = record_.vmi_uid();
    meta_.name = record_.vmi_name();
    meta_.namespace_ = record_.vmi_namespace();
  }
  domain_exists_ = true;
  status_ = {DomainState::kRunning, "Unknown"};
}

Slot::~Slot() {
  std::unique_ptr<Backend> backend;
  {
    absl::MutexLock op(&op_mu_);
    backend = std::move(backend_);
  }
  // Destroyed outside both locks: it may wait for its event thread, which
  // may be waiting for mu_. Events after this point are dropped.
  {
    absl::MutexLock l(&mu_);
    ++generation_;
  }
  backend.reset();
}

EventSink Slot::MakeSink(uint64_t generation) {
  return [this, generation](const BackendEvent& event) { OnBackendEvent(generation, event); };
}

void Slot::OnBackendEvent(uint64_t generation, const BackendEvent& event) {
  absl::MutexLock l(&mu_);
  if (generation != generation_ || retired_) return;
  event_seen_ = true;
  if (!domain_exists_) {
    // The VM is still starting: the ADDED event will carry this state.
    status_ = event.status;
    return;
  }
  ApplyStatus(event.status, event.detail);
}

bool Slot::Gone() const { return IsGone(status_.state); }

void Slot::ApplyStatus(const DomainStatus& status, const std::string& detail) {
  if (status.state == status_.state && status.reason == status_.reason) return;
  std::fprintf(stderr, "flint-shim: vm %s: %s (%s) -> %s (%s)%s%s\n", id_.c_str(),
               DomainStateName(status_.state), status_.reason.c_str(),
               DomainStateName(status.state), status.reason.c_str(), detail.empty() ? "" : ": ",
               detail.c_str());
  status_ = status;
  Emit("MODIFIED", DomainJson(meta_, record_.config(), status_, NamesOf(record_)));
}

void Slot::Emit(const char* event_type, const std::string& domain_json) {
  if (ctx_->notifier == nullptr) return;
  NotifyEvent e;
  e.vm_id = id_;
  e.event_type = event_type;
  e.domain_json = domain_json;
  ctx_->notifier->Send(std::move(e));
}

void Slot::Refresh() {
  if (backend_ == nullptr) return;
  const DomainStatus now = backend_->Status();
  // NoState from a live backend means "cannot tell"; events will say more.
  if (now.state == DomainState::kNoState) return;
  absl::MutexLock l(&mu_);
  if (domain_exists_) ApplyStatus(now, "");
}

absl::Status Slot::Persist() {
  VmRecord copy;
  {
    absl::MutexLock l(&mu_);
    copy = record_;
  }
  absl::Status s = ctx_->store->Save(copy);
  if (!s.ok()) {
    std::fprintf(stderr, "flint-shim: vm %s: could not save its record: %s\n", id_.c_str(),
                 std::string(s.message()).c_str());
  }
  return s;
}

Slot::Check Slot::CheckActive(const std::string& vmi_json, const char* call, Response* out) {
  // Parsed before mu_ is taken: GetDomain and backend events must not wait
  // on a large request.
  std::optional<absl::StatusOr<VmiMeta>> parsed;
  if (!vmi_json.empty()) parsed = ReadVmiMeta(vmi_json);
  absl::MutexLock l(&mu_);
  if (retired_) {
    *out = Fail(absl::StrFormat("%s: launcher slot %s has been removed", call, id_));
    return Check::kFailed;
  }
  if (record_.vmi_uid().empty()) {
    *out = Fail(absl::StrFormat(
        "%s: there is no VM: SyncVirtualMachine has not started one on this launcher", call));
    return Check::kFailed;
  }
  if (record_.deleted()) {
    *out = Fail(absl::StrFormat("%s: the VM of VMI %s was deleted", call, record_.vmi_uid()));
    return Check::kFailed;
  }
  if (parsed.has_value()) {
    const absl::StatusOr<VmiMeta>& meta = *parsed;
    if (!meta.ok()) {
      *out = Fail(absl::StrFormat("%s: the request's VMI: %s", call, meta.status().message()));
      return Check::kFailed;
    }
    if (meta->uid != record_.vmi_uid()) {
      *out = Fail(absl::StrFormat("%s: this launcher runs VMI %s (%s/%s), not VMI %s", call,
                                  record_.vmi_uid(), record_.vmi_namespace(), record_.vmi_name(),
                                  meta->uid));
      return Check::kFailed;
    }
  }
  return Gone() ? Check::kGone : Check::kProceed;
}

absl::Status Slot::EnsureBackend() {
  if (backend_ != nullptr) return absl::OkStatus();
  VmRecord record;
  uint64_t generation;
  {
    absl::MutexLock l(&mu_);
    record = record_;
    generation = ++generation_;
  }
  const std::string kind = record.backend().empty() ? ctx_->default_backend : record.backend();
  absl::StatusOr<std::unique_ptr<Backend>> attached =
      kind == "qemu" ? AttachQemu(record, MakeSink(generation))
                     : AttachFlint(record, MakeSink(generation));
  if (attached.ok()) {
    backend_ = std::move(*attached);
    return absl::OkStatus();
  }
  if (absl::IsNotFound(attached.status())) {
    // flint leaves a stop file saying how the VM ended (QEMU leaves nothing
    // the shim reads): Shutoff/Shutdown for a guest that powered off, and
    // so on. Without one the end is not known.
    absl::StatusOr<DomainStatus> end =
        kind == "flint" ? FlintEndStatus(record)
                        : absl::StatusOr<DomainStatus>(absl::NotFoundError("no stop file"));
    absl::MutexLock l(&mu_);
    if (end.ok()) {
      ApplyStatus(*end, "the VM ended while no shim watched it (flint's stop file)");
    } else {
      ApplyStatus({DomainState::kShutoff, "Unknown"},
                  "the VM process is gone; how it ended is not known");
    }
  }
  return attached.status();
}

void Slot::Reattach() {
  absl::MutexLock op(&op_mu_);
  {
    absl::MutexLock l(&mu_);
    if (!domain_exists_) return;  // nothing synced, or deleted
  }
  absl::Status s = EnsureBackend();
  if (s.ok()) {
    const DomainStatus now = backend_->Status();
    absl::MutexLock l(&mu_);
    if (now.state != DomainState::kNoState) status_ = now;
    std::fprintf(stderr, "flint-shim: vm %s: re-attached to %s pid %d (%s)\n", id_.c_str(),
                 backend_->kind(), record_.pid(), DomainStateName(status_.state));
    // virt-handler may have missed changes while no shim ran.
    Emit("MODIFIED", DomainJson(meta_, record_.config(), status_, NamesOf(record_)));
    return;
  }
  if (absl::IsNotFound(s)) {
    // EnsureBackend reported Shutoff/Unknown already.
    std::fprintf(stderr, "flint-shim: vm %s: its VM (pid %d) ended while no shim watched it\n",
                 id_.c_str(), Record().pid());
    return;
  }
  std::fprintf(stderr,
               "flint-shim: vm %s: could not re-attach to pid %d: %s (retried on the next "
               "call)\n",
               id_.c_str(), Record().pid(), std::string(s.message()).c_str());
}

Response Slot::Sync(const std::string& vmi_json) {
  absl::MutexLock op(&op_mu_);
  PodPaths pod = ctx_->pod;
  {
    absl::MutexLock l(&mu_);
    if (!record_.pod_root().empty()) pod.root = record_.pod_root();
  }
  absl::StatusOr<Translation> tr = TranslateVmi(vmi_json, pod);
  if (!tr.ok()) {
    return Fail(absl::StrFormat("SyncVirtualMachine: %s", tr.status().message()));
  }
  std::string kind;
  {
    absl::MutexLock l(&mu_);
    if (retired_) return Fail("SyncVirtualMachine: launcher slot " + id_ + " has been removed");
    if (!record_.vmi_uid().empty()) {
      if (record_.vmi_uid() != tr->meta.uid) {
        return Fail(absl::StrFormat(
            "SyncVirtualMachine: this launcher runs VMI %s (%s/%s); it cannot also run VMI %s",
            record_.vmi_uid(), record_.vmi_namespace(), record_.vmi_name(), tr->meta.uid));
      }
      if (record_.deleted()) {
        return Fail(absl::StrFormat(
            "SyncVirtualMachine: the VM of VMI %s was deleted; a new VMI needs a new launcher",
            tr->meta.uid));
      }
      if (Gone()) {
        return Fail(absl::StrFormat(
            "SyncVirtualMachine: the VM has stopped (%s, reason %s); a new VMI needs a new "
            "launcher",
            DomainStateName(status_.state), status_.reason));
      }
      const std::string diff = ConfigDiff(record_.config(), tr->config);
      if (!diff.empty()) {
        return Fail(absl::StrFormat(
            "SyncVirtualMachine: the running VM cannot change its configuration (%s); "
            "restart the VMI for that",
            diff));
      }
      // The same VM: nothing to start. Keep the newest VMI (its grace period
      // is what Shutdown uses).
      const absl::Time shutdown_since = meta_.shutdown_since;
      meta_ = tr->meta;
      meta_.shutdown_since = shutdown_since;
      if (record_.vmi_json() == vmi_json) return Ok();
      record_.set_vmi_json(vmi_json);
    } else {
      kind = !tr->meta.backend.empty() ? tr->meta.backend
             : !record_.backend().empty() ? record_.backend()
                                          : ctx_->default_backend;
      if (!KnownBackend(kind)) {
        const char* from = !tr->meta.backend.empty()
                               ? "the VMI's metadata.annotations[\"flint.dev/backend\"]"
                               : "this launcher slot's backend";
        return Fail(absl::StrFormat(
            "SyncVirtualMachine: unknown backend \"%s\" (from %s): flint-shim runs \"flint\" "
            "or \"qemu\"",
            kind, from));
      }
    }
  }
  if (kind.empty()) {
    (void)Persist();
    return Ok();
  }

  // The first sync: start the VM.
  const std::string vm_dir = ctx_->store->VmDir(id_);
  if (absl::Status s = MakeDirs(vm_dir); !s.ok()) {
    return Fail(absl::StrFormat("SyncVirtualMachine: %s", s.message()));
  }
  LaunchSpec spec;
  spec.vm_dir = vm_dir;
  spec.config = tr->config;
  spec.disk_names = tr->disk_names;
  spec.nic_names = tr->nic_names;
  uint64_t generation;
  {
    absl::MutexLock l(&mu_);
    generation = ++generation_;
    event_seen_ = false;
    status_ = {DomainState::kNoState, "Unknown"};
  }
  // Recorded the moment the process exists: a shim that dies before the
  // start completes must still find (or clean up) this VM when it restarts.
  spec.on_spawned = [&](const ProcessId& process, const std::string& api_socket) {
    VmRecord early;
    {
      absl::MutexLock l(&mu_);
      early = record_;
    }
    early.set_vmi_uid(tr->meta.uid);
    early.set_vmi_name(tr->meta.name);
    early.set_vmi_namespace(tr->meta.namespace_);
    early.set_vmi_json(vmi_json);
    *early.mutable_config() = tr->config;
    SetNames(*tr, &early);
    early.set_deleted(false);
    early.set_backend(kind);
    early.set_pid(process.pid);
    early.set_pid_start_time(process.start_time);
    early.set_api_socket(api_socket);
    early.set_vm_dir(vm_dir);
    if (absl::Status s = ctx_->store->Save(early); !s.ok()) {
      std::fprintf(stderr, "flint-shim: vm %s: could not save its record: %s\n", id_.c_str(),
                   std::string(s.message()).c_str());
    }
  };
  absl::StatusOr<std::unique_ptr<Backend>> started =
      kind == "qemu" ? StartQemu(spec, ctx_->programs, MakeSink(generation))
                     : StartFlint(spec, ctx_->programs, MakeSink(generation));
  if (!started.ok()) {
    (void)Persist();  // back to the record without a VM (the backend cleaned up)
    std::fprintf(stderr, "flint-shim: vm %s: starting VMI %s under %s failed: %s\n", id_.c_str(),
                 tr->meta.uid.c_str(), kind.c_str(),
                 std::string(started.status().message()).c_str());
    return Fail(absl::StrFormat("SyncVirtualMachine: starting the VM under %s failed: %s", kind,
                                started.status().message()));
  }
  backend_ = std::move(*started);
  shutdown_requested_ = false;
  const DomainStatus initial = backend_->Status();
  VmRecord filled;
  {
    absl::MutexLock l(&mu_);
    filled = record_;
  }
  filled.set_vmi_uid(tr->meta.uid);
  filled.set_vmi_name(tr->meta.name);
  filled.set_vmi_namespace(tr->meta.namespace_);
  filled.set_vmi_json(vmi_json);
  *filled.mutable_config() = tr->config;
  SetNames(*tr, &filled);
  filled.set_deleted(false);
  backend_->FillRecord(&filled);
  if (filled.backend().empty()) filled.set_backend(kind);
  {
    absl::MutexLock l(&mu_);
    record_ = std::move(filled);
    meta_ = tr->meta;
    domain_exists_ = true;
    if (!event_seen_) {
      status_ = initial.state == DomainState::kNoState
                    ? DomainStatus{DomainState::kRunning, "Unknown"}
                    : initial;
    }
    std::fprintf(stderr, "flint-shim: vm %s: started VMI %s (%s/%s) under %s, pid %d: %s\n",
                 id_.c_str(), record_.vmi_uid().c_str(), record_.vmi_namespace().c_str(),
                 record_.vmi_name().c_str(), kind.c_str(), record_.pid(),
                 DomainStateName(status_.state));
    Emit("ADDED", DomainJson(meta_, record_.config(), status_, NamesOf(record_)));
  }
  // A VM runs that a restarted shim could not find without its record: say
  // so loudly, but the VM is up, which is what virt-handler asked for.
  (void)Persist();
  return Ok();
}

Response Slot::Pause(const std::string& vmi_json) {
  absl::MutexLock op(&op_mu_);
  Response out;
  switch (CheckActive(vmi_json, "PauseVirtualMachine", &out)) {
    case Check::kFailed: return out;
    case Check::kGone: {
      absl::MutexLock l(&mu_);
      return Fail(absl::StrFormat("PauseVirtualMachine: the VM is not running (%s, reason %s)",
                                  DomainStateName(status_.state), status_.reason));
    }
    case Check::kProceed: break;
  }
  if (absl::Status s = EnsureBackend(); !s.ok()) {
    return Fail(absl::StrFormat("PauseVirtualMachine: %s", s.message()));
  }
  if (absl::Status s = backend_->Pause(); !s.ok()) {
    return Fail(absl::StrFormat("PauseVirtualMachine: %s", s.message()));
  }
  Refresh();
  return Ok();
}

Response Slot::Unpause(const std::string& vmi_json) {
  absl::MutexLock op(&op_mu_);
  Response out;
  switch (CheckActive(vmi_json, "UnpauseVirtualMachine", &out)) {
    case Check::kFailed: return out;
    case Check::kGone: {
      absl::MutexLock l(&mu_);
      return Fail(absl::StrFormat("UnpauseVirtualMachine: the VM is not running (%s, reason %s)",
                                  DomainStateName(status_.state), status_.reason));
    }
    case Check::kProceed: break;
  }
  if (absl::Status s = EnsureBackend(); !s.ok()) {
    return Fail(absl::StrFormat("UnpauseVirtualMachine: %s", s.message()));
  }
  if (absl::Status s = backend_->Resume(); !s.ok()) {
    return Fail(absl::StrFormat("UnpauseVirtualMachine: %s", s.message()));
  }
  Refresh();
  return Ok();
}

Response Slot::Reset(const std::string& vmi_json) {
  absl::MutexLock op(&op_mu_);
  Response out;
  switch (CheckActive(vmi_json, "ResetVirtualMachine", &out)) {
    case Check::kFailed: return out;
    case Check::kGone: {
      absl::MutexLock l(&mu_);
      return Fail(absl::StrFormat("ResetVirtualMachine: the VM is not running (%s, reason %s)",
                                  DomainStateName(status_.state), status_.reason));
    }
    case Check::kProceed: break;
  }
  if (absl::Status s = EnsureBackend(); !s.ok()) {
    return Fail(absl::StrFormat("ResetVirtualMachine: %s", s.message()));
  }
  if (absl::Status s = backend_->Reset(); !s.ok()) {
    return Fail(absl::StrFormat("ResetVirtualMachine: %s", s.message()));
  }
  Refresh();
  return Ok();
}

Response Slot::Shutdown(const std::string& vmi_json) {
  absl::MutexLock op(&op_mu_);
  Response out;
  switch (CheckActive(vmi_json, "ShutdownVirtualMachine", &out)) {
    case Check::kFailed: return out;
    case Check::kGone: return Ok();  // already off: what was asked (as libvirt's launcher)
    case Check::kProceed: break;
  }
  // virt-handler repeats Shutdown on every sync until the domain is down;
  // the first request's power button and forced-stop timer stand.
  if (shutdown_requested_) return Ok();
  if (absl::Status s = EnsureBackend(); !s.ok()) {
    return Fail(absl::StrFormat("ShutdownVirtualMachine: %s", s.message()));
  }
  absl::Duration grace;
  {
    absl::MutexLock l(&mu_);
    grace = meta_.grace;
  }
  if (!vmi_json.empty()) {
    if (absl::StatusOr<VmiMeta> m = ReadVmiMeta(vmi_json); m.ok()) grace = m->grace;
  }
  if (absl::Status s = backend_->Shutdown(grace); !s.ok()) {
    return Fail(absl::StrFormat("ShutdownVirtualMachine: %s", s.message()));
  }
  shutdown_requested_ = true;
  {
    // The domain now says when its grace period began (KubeVirt's launcher
    // does the same), so virt-handler knows when to escalate to Kill.
    absl::MutexLock l(&mu_);
    meta_.shutdown_since = absl::Now();
    if (domain_exists_) Emit("MODIFIED", DomainJson(meta_, record_.config(), status_, NamesOf(record_)));
  }
  // No Refresh: the backend's events say ShuttingDown and then Shutoff; a
  // status poll now would only see the guest still running and flip back.
  return Ok();
}

Response Slot::Kill(const std::string& vmi_json) {
  absl::MutexLock op(&op_mu_);
  Response out;
  switch (CheckActive(vmi_json, "KillVirtualMachine", &out)) {
    case Check::kFailed: return out;
    case Check::kGone: return Ok();
    case Check::kProceed: break;
  }
  if (absl::Status s = StopVm(); !s.ok()) {
    return Fail(absl::StrFormat("KillVirtualMachine: %s", s.message()));
  }
  return Ok();
}

absl::Status Slot::StopVm() {
  absl::Status attach = EnsureBackend();
  if (attach.ok()) {
    if (absl::Status s = backend_->Kill(); !s.ok()) return s;
    Refresh();
    return absl::OkStatus();
  }
  // A VM found gone by the attach is stopped already.
  if (absl::IsNotFound(attach)) return absl::OkStatus();
  // The process is there but its API does not answer: the recorded pid and
  // start time still name it, so a signal cannot hit another process.
  ProcessId id;
  {
    absl::MutexLock l(&mu_);
    id = {record_.pid(), record_.pid_start_time()};
  }
  if (id.pid <= 0 || !ProcessAlive(id)) return absl::OkStatus();
  KillProcess(id);
  if (!WaitProcessGone(id, absl::Seconds(10))) {
    return absl::DeadlineExceededError(absl::StrFormat(
        "the VM process (pid %d) is still there 10s after SIGKILL (%s)", id.pid,
        attach.message()));
  }
  absl::MutexLock l(&mu_);
  ApplyStatus({DomainState::kShutoff, "Destroyed"},
              "killed by pid: its API did not answer (" + std::string(attach.message()) + ")");
  return absl::OkStatus();
}

absl::Status Slot::EndDomain(bool kill) {
  bool running;
  {
    absl::MutexLock l(&mu_);
    running = domain_exists_ && !Gone();
  }
  if (kill && running) {
    if (absl::Status s = StopVm(); !s.ok()) return s;
  }
  std::unique_ptr<Backend> backend = std::move(backend_);
  {
    absl::MutexLock l(&mu_);
    ++generation_;  // late events of this backend are dropped
    if (domain_exists_) {
      domain_exists_ = false;
      std::fprintf(stderr, "flint-shim: vm %s: domain of VMI %s removed\n", id_.c_str(),
                   record_.vmi_uid().c_str());
      // DomainJson sets ObjectMeta.deletionTimestamp for NoState/NonExistent,
      // which is how KubeVirt's launcher says a domain is gone.
      Emit("MODIFIED",
           DomainJson(meta_, record_.config(), {DomainState::kNoState, "NonExistent"}, NamesOf(record_)));
    }
    status_ = {DomainState::kNoState, "NonExistent"};
  }
  backend.reset();
  return absl::OkStatus();
}

Response Slot::Delete(const std::string& vmi_json) {
  absl::MutexLock op(&op_mu_);
  {
    absl::MutexLock l(&mu_);
    if (retired_) return Fail("DeleteVirtualMachine: launcher slot " + id_ + " has been removed");
    // Nothing was started, or it is deleted already: nothing to do.
    if (record_.vmi_uid().empty() || record_.deleted()) return Ok();
  }
  Response out;
  if (CheckActive(vmi_json, "DeleteVirtualMachine", &out) == Check::kFailed) return out;
  if (absl::Status s = EndDomain(/*kill=*/true); !s.ok()) {
    return Fail(absl::StrFormat("DeleteVirtualMachine: could not stop the VM: %s", s.message()));
  }
  {
    absl::MutexLock l(&mu_);
    record_.set_deleted(true);
  }
  (void)Persist();
  return Ok();
}

kubevirt::cmd::v1::DomainResponse Slot::GetDomain() {
  kubevirt::cmd::v1::DomainResponse out;
  absl::MutexLock l(&mu_);
  if (retired_) {
    *out.mutable_response() = Fail("GetDomain: launcher slot " + id_ + " has been removed");
    return out;
  }
  *out.mutable_response() = Ok();
  if (domain_exists_) out.set_domain(DomainJson(meta_, record_.config(), status_, NamesOf(record_)));
  return out;
}

kubevirt::cmd::v1::DomainStatsResponse Slot::GetDomainStats() {
  kubevirt::cmd::v1::DomainStatsResponse out;
  absl::MutexLock op(&op_mu_);
  VmiMeta meta;
  {
    absl::MutexLock l(&mu_);
    if (retired_) {
      *out.mutable_response() = Fail("GetDomainStats: launcher slot " + id_ + " has been removed");
      return out;
    }
    *out.mutable_response() = Ok();
    // No domain, or one that has stopped: no stats (KubeVirt reads "" as
    // "no domain").
    if (!domain_exists_ || Gone()) return out;
    meta = meta_;
  }
  if (absl::Status s = EnsureBackend(); !s.ok()) {
    *out.mutable_response() = Fail(absl::StrFormat("GetDomainStats: %s", s.message()));
    return out;
  }
  absl::StatusOr<BackendStats> stats = backend_->Stats();
  if (!stats.ok()) {
    *out.mutable_response() = Fail(absl::StrFormat("GetDomainStats: %s", stats.status().message()));
    return out;
  }
  out.set_domainstats(DomainStatsJson(meta, *stats));
  return out;
}

kubevirt::cmd::v1::QemuVersionResponse Slot::GetVersion() {
  kubevirt::cmd::v1::QemuVersionResponse out;
  absl::MutexLock op(&op_mu_);
  bool running;
  std::string kind;
  {
    absl::MutexLock l(&mu_);
    running = domain_exists_ && !Gone();
    kind = record_.backend().empty() ? ctx_->default_backend : record_.backend();
  }
  if (running && EnsureBackend().ok()) {
    *out.mutable_response() = Ok();
    out.set_version(backend_->Version());
    return out;
  }
  const std::string program = kind == "qemu" ? ctx_->programs.qemu : ctx_->programs.flint;
  const std::string version = ProgramVersion(program);
  if (version.empty()) {
    *out.mutable_response() = Fail(absl::StrFormat(
        "GetQemuVersion: no VM runs and `%s --version` printed nothing", program));
    return out;
  }
  *out.mutable_response() = Ok();
  out.set_version(version);
  return out;
}

VmRecord Slot::Record() {
  absl::MutexLock l(&mu_);
  return record_;
}

bool Slot::VmRunning() {
  absl::MutexLock l(&mu_);
  return domain_exists_ && !Gone();
}

absl::Status Slot::Retire(bool kill) {
  absl::MutexLock op(&op_mu_);
  {
    absl::MutexLock l(&mu_);
    if (retired_) return absl::OkStatus();
    if (domain_exists_ && !Gone() && !kill) {
      return absl::FailedPreconditionError(absl::StrFormat(
          "slot %s runs VMI %s (%s/%s, pid %d); remove it with kill=true, or delete the VM "
          "first",
          id_, record_.vmi_uid(), record_.vmi_namespace(), record_.vmi_name(), record_.pid()));
    }
  }
  if (absl::Status s = EndDomain(kill); !s.ok()) return s;
  absl::MutexLock l(&mu_);
  retired_ = true;
  return absl::OkStatus();
}

// ---- LauncherService ----

std::shared_ptr<Slot> LauncherService::Resolve(Ctx* ctx, grpc::Status* error) {
  std::string why;
  std::shared_ptr<Slot> slot = resolve_(ctx, &why);
  if (slot == nullptr) *error = grpc::Status(grpc::StatusCode::FAILED_PRECONDITION, why);
  return slot;
}

grpc::Status LauncherService::Unsupported(Ctx* ctx, const char* call, const char* why,
                                          Response* out) {
  grpc::Status error;
  if (Resolve(ctx, &error) == nullptr) return error;
  *out = Fail(absl::StrFormat("flint-shim: %s is not supported (%s)", call, why));
  return grpc::Status::OK;
}

namespace {
constexpr const char* kNoMigration = "live migration is not implemented by flint-shim";
constexpr const char* kNoAgent = "it needs the QEMU guest agent, which flint-shim does not talk to";
}  // namespace

#define FLINT_SHIM_SLOT_CALL(METHOD, EXPR)                                            \
  grpc::Status LauncherService::METHOD(Ctx* ctx, const VMIRequest* in, Response* out) { \
    grpc::Status error;                                                               \
    std::shared_ptr<Slot> slot = Resolve(ctx, &error);                                \
    if (slot == nullptr) return error;                                                \
    *out = slot->EXPR(in->vmi().vmijson());                                           \
    return grpc::Status::OK;                                                          \
  }

FLINT_SHIM_SLOT_CALL(SyncVirtualMachine, Sync)
FLINT_SHIM_SLOT_CALL(PauseVirtualMachine, Pause)
FLINT_SHIM_SLOT_CALL(UnpauseVirtualMachine, Unpause)
FLINT_SHIM_SLOT_CALL(ResetVirtualMachine, Reset)
FLINT_SHIM_SLOT_CALL(ShutdownVirtualMachine, Shutdown)
FLINT_SHIM_SLOT_CALL(KillVirtualMachine, Kill)
FLINT_SHIM_SLOT_CALL(DeleteVirtualMachine, Delete)
#undef FLINT_SHIM_SLOT_CALL

grpc::Status LauncherService::FreezeVirtualMachine(Ctx* ctx,
                                                   const kubevirt::cmd::v1::FreezeRequest*,
                                                   Response* out) {
  return Unsupported(ctx, "FreezeVirtualMachine", kNoAgent, out);
}
grpc::Status LauncherService::UnfreezeVirtualMachine(Ctx* ctx, const VMIRequest*, Response* out) {
  return Unsupported(ctx, "UnfreezeVirtualMachine", kNoAgent, out);
}
grpc::Status LauncherService::SoftRebootVirtualMachine(Ctx* ctx, const VMIRequest*,
                                                       Response* out) {
  return Unsupported(ctx, "SoftRebootVirtualMachine",
                     "a soft reboot needs the guest's cooperation (a guest agent or an ACPI "
                     "reboot request), which neither backend offers; ResetVirtualMachine does a "
                     "hard reset",
                     out);
}
grpc::Status LauncherService::MigrateVirtualMachine(Ctx* ctx,
                                                    const kubevirt::cmd::v1::MigrationRequest*,
                                                    Response* out) {
  return Unsupported(ctx, "MigrateVirtualMachine", kNoMigration, out);
}
grpc::Status LauncherService::SyncMigrationTarget(Ctx* ctx, const VMIRequest*, Response* out) {
  return Unsupported(ctx, "SyncMigrationTarget", kNoMigration, out);
}
grpc::Status LauncherService::CancelVirtualMachineMigration(Ctx* ctx, const VMIRequest*,
                                                            Response* out) {
  return Unsupported(ctx, "CancelVirtualMachineMigration", kNoMigration, out);
}
grpc::Status LauncherService::SignalTargetPodCleanup(Ctx* ctx, const VMIRequest*, Response* out) {
  return Unsupported(ctx, "SignalTargetPodCleanup", kNoMigration, out);
}
grpc::Status LauncherService::FinalizeVirtualMachineMigration(Ctx* ctx, const VMIRequest*,
                                                              Response* out) {
  return Unsupported(ctx, "FinalizeVirtualMachineMigration", kNoMigration, out);
}
grpc::Status LauncherService::HotplugHostDevices(Ctx* ctx, const VMIRequest*, Response* out) {
  return Unsupported(ctx, "HotplugHostDevices", "flint has no host device (VFIO) passthrough",
                     out);
}

grpc::Status LauncherService::GetDomain(Ctx* ctx, const EmptyRequest*,
                                        kubevirt::cmd::v1::DomainResponse* out) {
  grpc::Status error;
  std::shared_ptr<Slot> slot = Resolve(ctx, &error);
  if (slot == nullptr) return error;
  *out = slot->GetDomain();
  return grpc::Status::OK;
}

grpc::Status LauncherService::GetDomainStats(Ctx* ctx, const EmptyRequest*,
                                             kubevirt::cmd::v1::DomainStatsResponse* out) {
  grpc::Status error;
  std::shared_ptr<Slot> slot = Resolve(ctx, &error);
  if (slot == nullptr) return error;
  *out = slot->GetDomainStats();
  return grpc::Status::OK;
}

grpc::Status LauncherService::GetGuestInfo(Ctx* ctx, const EmptyRequest*,
                                           kubevirt::cmd::v1::GuestInfoResponse* out) {
  return Unsupported(ctx, "GetGuestInfo", kNoAgent, out->mutable_response());
}
grpc::Status LauncherService::GetUsers(Ctx* ctx, const EmptyRequest*,
                                       kubevirt::cmd::v1::GuestUserListResponse* out) {
  return Unsupported(ctx, "GetUsers", kNoAgent, out->mutable_response());
}
grpc::Status LauncherService::GetFilesystems(Ctx* ctx, const EmptyRequest*,
                                             kubevirt::cmd::v1::GuestFilesystemsResponse* out) {
  return Unsupported(ctx, "GetFilesystems", kNoAgent, out->mutable_response());
}
grpc::Status LauncherService::GetDevices(Ctx* ctx, const EmptyRequest*,
                                         kubevirt::cmd::v1::GuestDevicesResponse* out) {
  return Unsupported(ctx, "GetDevices", kNoAgent, out->mutable_response());
}

grpc::Status LauncherService::Ping(Ctx* ctx, const EmptyRequest*, Response* out) {
  grpc::Status error;
  if (Resolve(ctx, &error) == nullptr) return error;
  *out = Ok();
  return grpc::Status::OK;
}

grpc::Status LauncherService::Exec(Ctx* ctx, const kubevirt::cmd::v1::ExecRequest*,
                                   kubevirt::cmd::v1::ExecResponse* out) {
  return Unsupported(ctx, "Exec", kNoAgent, out->mutable_response());
}
grpc::Status LauncherService::GuestPing(Ctx* ctx, const kubevirt::cmd::v1::GuestPingRequest*,
                                        kubevirt::cmd::v1::GuestPingResponse* out) {
  return Unsupported(ctx, "GuestPing", kNoAgent, out->mutable_response());
}
grpc::Status LauncherService::VirtualMachineMemoryDump(
    Ctx* ctx, const kubevirt::cmd::v1::MemoryDumpRequest*, Response* out) {
  return Unsupported(ctx, "VirtualMachineMemoryDump", "guest memory dumps are not implemented",
                     out);
}

grpc::Status LauncherService::GetQemuVersion(Ctx* ctx, const EmptyRequest*,
                                             kubevirt::cmd::v1::QemuVersionResponse* out) {
  grpc::Status error;
  std::shared_ptr<Slot> slot = Resolve(ctx, &error);
  if (slot == nullptr) return error;
  *out = slot->GetVersion();
  return grpc::Status::OK;
}

grpc::Status LauncherService::SyncVirtualMachineCPUs(Ctx* ctx, const VMIRequest*,
                                                     Response* out) {
  return Unsupported(ctx, "SyncVirtualMachineCPUs", "vCPU hotplug is not implemented", out);
}
grpc::Status LauncherService::SyncVirtualMachineMemory(Ctx* ctx, const VMIRequest*,
                                                       Response* out) {
  return Unsupported(ctx, "SyncVirtualMachineMemory", "memory hotplug is not implemented", out);
}
grpc::Status LauncherService::GetSEVInfo(Ctx* ctx, const EmptyRequest*,
                                         kubevirt::cmd::v1::SEVInfoResponse* out) {
  return Unsupported(ctx, "GetSEVInfo", "flint does not run SEV guests",
                     out->mutable_response());
}
grpc::Status LauncherService::GetLaunchMeasurement(
    Ctx* ctx, const VMIRequest*, kubevirt::cmd::v1::LaunchMeasurementResponse* out) {
  return Unsupported(ctx, "GetLaunchMeasurement", "flint does not run SEV guests",
                     out->mutable_response());
}
grpc::Status LauncherService::InjectLaunchSecret(
    Ctx* ctx, const kubevirt::cmd::v1::InjectLaunchSecretRequest*, Response* out) {
  return Unsupported(ctx, "InjectLaunchSecret", "flint does not run SEV guests", out);
}
grpc::Status LauncherService::GetDomainDirtyRateStats(
    Ctx* ctx, const EmptyRequest*, kubevirt::cmd::v1::DirtyRateStatsResponse* out) {
  return Unsupported(ctx, "GetDomainDirtyRateStats",
                     "dirty-rate measurement (for migration) is not implemented",
                     out->mutable_response());
}
grpc::Status LauncherService::GetScreenshot(Ctx* ctx, const VMIRequest*,
                                            kubevirt::cmd::v1::ScreenshotResponse* out) {
  return Unsupported(ctx, "GetScreenshot", "flint has no display device",
                     out->mutable_response());
}
grpc::Status LauncherService::BackupVirtualMachine(Ctx* ctx,
                                                   const kubevirt::cmd::v1::BackupRequest*,
                                                   Response* out) {
  return Unsupported(ctx, "BackupVirtualMachine", "backups are not implemented", out);
}
grpc::Status LauncherService::RedefineCheckpoint(
    Ctx* ctx, const kubevirt::cmd::v1::RedefineCheckpointRequest*,
    kubevirt::cmd::v1::RedefineCheckpointResponse* out) {
  return Unsupported(ctx, "RedefineCheckpoint", "backup checkpoints are not implemented",
                     out->mutable_response());
}

// The domain stats as GetDomainStats gives them; dirty rate and every guest
// agent query answer "not supported" in their own Response.
grpc::Status LauncherService::GetVMStats(Ctx* ctx, const kubevirt::cmd::v1::VMStatsRequest*,
                                         kubevirt::cmd::v1::VMStatsResponse* out) {
  grpc::Status error;
  std::shared_ptr<Slot> slot = Resolve(ctx, &error);
  if (slot == nullptr) return error;
  *out->mutable_domainstats() = slot->GetDomainStats();
  *out->mutable_response() = out->domainstats().response();
  const Response no_agent =
      Fail(absl::StrFormat("flint-shim: guest agent queries are not supported (%s)", kNoAgent));
  *out->mutable_dirtyratestats()->mutable_response() =
      Fail("flint-shim: dirty-rate measurement is not supported");
  for (Response* r :
       {out->mutable_guestagentversion(), out->mutable_guestgetload(),
        out->mutable_guestgetcpustats(), out->mutable_guestgetdiskstats(),
        out->mutable_guestgettime(), out->mutable_guestgetvcpus(),
        out->mutable_guestgetmemoryblockinfo(), out->mutable_guestgetusers(),
        out->mutable_guestgetosinfo(), out->mutable_guestgetdisks(),
        out->mutable_guestgethostname(), out->mutable_guestgettimezone(),
        out->mutable_guestnetworkgetroute(), out->mutable_guestnetworkgetinterfaces(),
        out->mutable_guestgetmemoryblocks()}) {
    *r = no_agent;
  }
  return grpc::Status::OK;
}

// ---- CmdInfo ----

grpc::Status CmdInfoService::Info(grpc::ServerContext*, const kubevirt::cmd::info::CmdInfoRequest*,
                                  kubevirt::cmd::info::CmdInfoResponse* out) {
  out->add_supportedcmdversions(kCmdVersion);
  return grpc::Status::OK;
}

}  // namespace flint::shim
