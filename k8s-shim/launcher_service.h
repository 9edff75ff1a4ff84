// KubeVirt's launcher services, served by flint-shim on every launcher
// socket: kubevirt.cmd.v1.Cmd (what virt-handler does to a VM) and
// kubevirt.cmd.info.CmdInfo (version negotiation: [1]).
//
// A Slot is one launcher socket and the VM behind it: its VmRecord (persisted
// at every change), its Backend (flint or QEMU), the translated VMI and the
// last DomainStatus. The services are shared by all slots; every call finds
// its slot from the connection it arrived on (SlotResolver, shim_server.*).
//
// Lifecycle as virt-handler sees it (KubeVirt's libvirt launcher does the
// same): the first SyncVirtualMachine starts the VM and an ADDED event
// follows; every state change is a MODIFIED event; a VM that stops (guest
// power-off, crash, Shutdown, Kill) stays visible to GetDomain as Shutoff or
// Crashed until DeleteVirtualMachine, whose final MODIFIED event says
// NoState/NonExistent with ObjectMeta.deletionTimestamp set; after it
// GetDomain answers "" (no domain). A launcher never runs a second VMI.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "cmd.grpc.pb.h"
#include "cmd_info.grpc.pb.h"
#include "k8s-shim/backend.h"
#include "k8s-shim/notifier.h"
#include "k8s-shim/vm_store.h"
#include "k8s-shim/vmi.h"
#include "shim.pb.h"

namespace flint::shim {

// What every slot shares. The pointers outlive all slots.
struct ShimContext {
  VmStore* store = nullptr;
  Notifier* notifier = nullptr;
  BackendPrograms programs;
  PodPaths pod;
  std::string default_backend = "flint";  // "flint" or "qemu"
};

// "flint" and "qemu"; anything else is not a backend.
bool KnownBackend(const std::string& name);

class Slot {
 public:
  // A slot from its record: a new one (id, launcher_socket, backend only) or
  // one loaded from the store (then call Reattach).
  Slot(flint::shim::v1::VmRecord record, const ShimContext* ctx);
  // Drops the backend connection; the VM keeps running.
  ~Slot();
  Slot(const Slot&) = delete;
  Slot& operator=(const Slot&) = delete;

  const std::string& id() const { return id_; }

  // After a shim restart: finds the record's VM again (pid + start time) and
  // reports its state to virt-handler with a MODIFIED event. A VM that ended
  // while no shim watched it is reported Shutoff with reason "Unknown": how it
  // ended (power-off or crash) is not known, and Crashed would be a guess.
  void Reattach();

  // The Cmd calls; `vmi_json` is the request's VMI (may be empty).
  kubevirt::cmd::v1::Response Sync(const std::string& vmi_json);
  kubevirt::cmd::v1::Response Pause(const std::string& vmi_json);
  kubevirt::cmd::v1::Response Unpause(const std::string& vmi_json);
  kubevirt::cmd::v1::Response Reset(const std::string& vmi_json);
  kubevirt::cmd::v1::Response Shutdown(const std::string& vmi_json);
  kubevirt::cmd::v1::Response Kill(const std::string& vmi_json);
  kubevirt::cmd::v1::Response Delete(const std::string& vmi_json);
  kubevirt::cmd::v1::DomainResponse GetDomain();
  kubevirt::cmd::v1::DomainStatsResponse GetDomainStats();
  kubevirt::cmd::v1::QemuVersionResponse GetVersion();

  // For the node service.
  flint::shim::v1::VmRecord Record();
  // A VM process runs (or may: not attached yet).
  bool VmRunning();
  // Stops serving: later calls fail. With `kill` a running VM is killed (and
  // its final event sent); without it a running VM is FAILED_PRECONDITION.
  absl::Status Retire(bool kill);

 private:
  using Response = kubevirt::cmd::v1::Response;

  // Checks shared by the calls that act on a VM: the slot serves, the
  // request names this slot's VMI, a VM was started and not deleted. kFailed
  // fills *out; kGone: the VM has stopped (Shutoff/Crashed).
  enum class Check { kProceed, kGone, kFailed };
  Check CheckActive(const std::string& vmi_json, const char* call, Response* out)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(op_mu_);
  // Attaches again when a restart could not (the API did not answer yet).
  absl::Status EnsureBackend() ABSL_EXCLUSIVE_LOCKS_REQUIRED(op_mu_);
  absl::Status Persist() ABSL_EXCLUSIVE_LOCKS_REQUIRED(op_mu_);
  EventSink MakeSink(uint64_t generation);
  void OnBackendEvent(uint64_t generation, const BackendEvent& event);
  // Reads the backend's state and applies it (after an operation).
  void Refresh() ABSL_EXCLUSIVE_LOCKS_REQUIRED(op_mu_);
  void ApplyStatus(const DomainStatus& status, const std::string& detail)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Emit(const char* event_type, const std::string& domain_json)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Stops the VM: through the backend, or (when it cannot be reached) with
  // SIGKILL to the recorded pid, if that is still the same process.
  absl::Status StopVm() ABSL_EXCLUSIVE_LOCKS_REQUIRED(op_mu_);
  // With `kill` stops a running VM first (an error leaves everything as it
  // was); then drops the backend and sends the NonExistent event.
  absl::Status EndDomain(bool kill) ABSL_EXCLUSIVE_LOCKS_REQUIRED(op_mu_);
  bool Gone() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const std::string id_;
  const ShimContext* const ctx_;

  // Serializes the calls that act on the VM, and guards the backend (which
  // is only ever called and replaced under it). Taken before mu_.
  absl::Mutex op_mu_ ABSL_ACQUIRED_BEFORE(mu_);
  std::unique_ptr<Backend> backend_ ABSL_GUARDED_BY(op_mu_);
  bool shutdown_requested_ ABSL_GUARDED_BY(op_mu_) = false;

  // The state GetDomain reads and backend events update. Backend threads
  // take only this lock, so calling the backend under op_mu_ is safe.
  absl::Mutex mu_;
  flint::shim::v1::VmRecord record_ ABSL_GUARDED_BY(mu_);
  VmiMeta meta_ ABSL_GUARDED_BY(mu_);
  bool domain_exists_ ABSL_GUARDED_BY(mu_) = false;  // synced and not deleted
  DomainStatus status_ ABSL_GUARDED_BY(mu_);
  uint64_t generation_ ABSL_GUARDED_BY(mu_) = 0;     // of the current backend
  bool event_seen_ ABSL_GUARDED_BY(mu_) = false;     // since the backend started
  bool retired_ ABSL_GUARDED_BY(mu_) = false;
};

// Which slot a call belongs to: from its connection. Null when the
// connection is not to a (live) launcher socket; `why` says so.
using SlotResolver =
    std::function<std::shared_ptr<Slot>(grpc::ServerContext* ctx, std::string* why)>;

class LauncherService final : public kubevirt::cmd::v1::Cmd::Service {
 public:
  explicit LauncherService(SlotResolver resolve) : resolve_(std::move(resolve)) {}

  using Ctx = grpc::ServerContext;
  using VMIRequest = kubevirt::cmd::v1::VMIRequest;
  using EmptyRequest = kubevirt::cmd::v1::EmptyRequest;
  using Response = kubevirt::cmd::v1::Response;

  grpc::Status SyncVirtualMachine(Ctx*, const VMIRequest*, Response*) override;
  grpc::Status PauseVirtualMachine(Ctx*, const VMIRequest*, Response*) override;
  grpc::Status UnpauseVirtualMachine(Ctx*, const VMIRequest*, Response*) override;
  grpc::Status FreezeVirtualMachine(Ctx*, const kubevirt::cmd::v1::FreezeRequest*,
                                    Response*) override;
  grpc::Status UnfreezeVirtualMachine(Ctx*, const VMIRequest*, Response*) override;
  grpc::Status ResetVirtualMachine(Ctx*, const VMIRequest*, Response*) override;
  grpc::Status SoftRebootVirtualMachine(Ctx*, const VMIRequest*, Response*) override;
  grpc::Status ShutdownVirtualMachine(Ctx*, const VMIRequest*, Response*) override;
  grpc::Status KillVirtualMachine(Ctx*, const VMIRequest*, Response*) override;
  grpc::Status DeleteVirtualMachine(Ctx*, const VMIRequest*, Response*) override;
  grpc::Status MigrateVirtualMachine(Ctx*, const kubevirt::cmd::v1::MigrationRequest*,
                                     Response*) override;
  grpc::Status SyncMigrationTarget(Ctx*, const VMIRequest*, Response*) override;
  grpc::Status CancelVirtualMachineMigration(Ctx*, const VMIRequest*, Response*) override;
  grpc::Status SignalTargetPodCleanup(Ctx*, const VMIRequest*, Response*) override;
  grpc::Status FinalizeVirtualMachineMigration(Ctx*, const VMIRequest*, Response*) override;
  grpc::Status HotplugHostDevices(Ctx*, const VMIRequest*, Response*) override;
  grpc::Status GetDomain(Ctx*, const EmptyRequest*, kubevirt::cmd::v1::DomainResponse*) override;
  grpc::Status GetDomainStats(Ctx*, const EmptyRequest*,
                              kubevirt::cmd::v1::DomainStatsResponse*) override;
  grpc::Status GetGuestInfo(Ctx*, const EmptyRequest*,
                            kubevirt::cmd::v1::GuestInfoResponse*) override;
  grpc::Status GetUsers(Ctx*, const EmptyRequest*,
                        kubevirt::cmd::v1::GuestUserListResponse*) override;
  grpc::Status GetFilesystems(Ctx*, const EmptyRequest*,
                              kubevirt::cmd::v1::GuestFilesystemsResponse*) override;
  grpc::Status GetDevices(Ctx*, const EmptyRequest*,
                          kubevirt::cmd::v1::GuestDevicesResponse*) override;
  grpc::Status Ping(Ctx*, const EmptyRequest*, Response*) override;
  grpc::Status Exec(Ctx*, const kubevirt::cmd::v1::ExecRequest*,
                    kubevirt::cmd::v1::ExecResponse*) override;
  grpc::Status GuestPing(Ctx*, const kubevirt::cmd::v1::GuestPingRequest*,
                         kubevirt::cmd::v1::GuestPingResponse*) override;
  grpc::Status VirtualMachineMemoryDump(Ctx*, const kubevirt::cmd::v1::MemoryDumpRequest*,
                                        Response*) override;
  grpc::Status GetQemuVersion(Ctx*, const EmptyRequest*,
                              kubevirt::cmd::v1::QemuVersionResponse*) override;
  grpc::Status SyncVirtualMachineCPUs(Ctx*, const VMIRequest*, Response*) override;
  grpc::Status SyncVirtualMachineMemory(Ctx*, const VMIRequest*, Response*) override;
  grpc::Status GetSEVInfo(Ctx*, const EmptyRequest*, kubevirt::cmd::v1::SEVInfoResponse*) override;
  grpc::Status GetLaunchMeasurement(Ctx*, const VMIRequest*,
                                    kubevirt::cmd::v1::LaunchMeasurementResponse*) override;
  grpc::Status InjectLaunchSecret(Ctx*, const kubevirt::cmd::v1::InjectLaunchSecretRequest*,
                                  Response*) override;
  grpc::Status GetDomainDirtyRateStats(Ctx*, const EmptyRequest*,
                                       kubevirt::cmd::v1::DirtyRateStatsResponse*) override;
  grpc::Status GetScreenshot(Ctx*, const VMIRequest*,
                             kubevirt::cmd::v1::ScreenshotResponse*) override;
  grpc::Status BackupVirtualMachine(Ctx*, const kubevirt::cmd::v1::BackupRequest*,
                                    Response*) override;
  grpc::Status RedefineCheckpoint(Ctx*, const kubevirt::cmd::v1::RedefineCheckpointRequest*,
                                  kubevirt::cmd::v1::RedefineCheckpointResponse*) override;
  grpc::Status GetVMStats(Ctx*, const kubevirt::cmd::v1::VMStatsRequest*,
                          kubevirt::cmd::v1::VMStatsResponse*) override;

 private:
  // The slot, or a gRPC error for a connection that has none.
  std::shared_ptr<Slot> Resolve(Ctx* ctx, grpc::Status* error);
  // success=false for a call flint-shim does not serve (after the slot check:
  // a call on a dead connection is an error either way).
  grpc::Status Unsupported(Ctx* ctx, const char* call, const char* why, Response* out);

  SlotResolver resolve_;
};

// CmdInfo.Info -> supportedCmdVersions [1].
class CmdInfoService final : public kubevirt::cmd::info::CmdInfo::Service {
 public:
  grpc::Status Info(grpc::ServerContext*, const kubevirt::cmd::info::CmdInfoRequest*,
                    kubevirt::cmd::info::CmdInfoResponse* out) override;
};

}  // namespace flint::shim
