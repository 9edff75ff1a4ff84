// The shim's view of one running VM, whichever hypervisor runs it: flint
// (driven over its per-VM gRPC API, flint_backend.*) or QEMU (driven over
// QMP, qemu_backend.*). The launcher service (launcher_service.*) maps
// KubeVirt's Cmd calls onto this interface, so one test suite and one bench
// drive both.
//
// A backend owns a connection to the VM, never the VM's life: the VM runs in
// its own session (started detached, not the shim's child), so destroying a
// Backend -- or the shim exiting -- leaves the VM running, and Attach finds it
// again from its VmRecord.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "k8s-shim/process.h"
#include "shim.pb.h"
#include "vm_config.pb.h"

namespace flint::shim {

// KubeVirt's domain lifecycle (the LifeCycle strings of its domain JSON).
enum class DomainState { kNoState, kRunning, kPaused, kShuttingDown, kShutoff, kCrashed };

// "NoState", "Running", "Paused", "ShuttingDown", "Shutoff", "Crashed".
const char* DomainStateName(DomainState state);

struct DomainStatus {
  DomainState state = DomainState::kNoState;
  // KubeVirt's StateChangeReason string: "Unknown", "Booted", "User",
  // "Destroyed", "Shutdown", "Crashed", "Paused" (see domain_json.h).
  std::string reason = "Unknown";
};

// A state change, delivered to the backend's EventSink as it happens. The
// last event of a VM is kShutoff or kCrashed (the process is gone).
struct BackendEvent {
  DomainStatus status;
  std::string detail;  // human words: flint's stop reason, QEMU's event name
};
// Called on a backend thread; must not block for long and must not call back
// into the Backend synchronously.
using EventSink = std::function<void(const BackendEvent&)>;

struct DiskStats {
  std::string name;   // the VMI disk name
  std::string path;
  uint64_t read_requests = 0, read_bytes = 0;
  uint64_t write_requests = 0, write_bytes = 0;
  uint64_t flush_requests = 0;
  uint64_t errors = 0;
};
struct NicStats {
  std::string name;   // the VMI interface name
  std::string mac;
  uint64_t rx_packets = 0, rx_bytes = 0, rx_dropped = 0;
  uint64_t tx_packets = 0, tx_bytes = 0, tx_dropped = 0;
};
struct BackendStats {
  uint32_t vcpus = 0;
  uint64_t memory_bytes = 0;        // guest RAM size
  uint64_t rss_bytes = 0;           // the VMM process's resident set
  uint64_t cpu_time_ns = 0;         // the VMM process's user+system CPU time
  uint64_t total_exits = 0;         // flint only; 0 for QEMU
  std::vector<DiskStats> disks;     // in VmConfig.disks order
  std::vector<NicStats> nics;       // in VmConfig.nics order
};

// What a backend needs to start a VM.
struct LaunchSpec {
  std::string vm_dir;               // exists, owned by the shim; sockets/logs go here
  flint::v1::VmConfig config;       // the translated VMI
  std::vector<std::string> disk_names;  // VMI disk names, parallel to config.disks
  std::vector<std::string> nic_names;   // VMI interface names, parallel to config.nics
  // Called once the VMM process exists, before the start is known to have
  // worked, with what Attach needs (the process and its API/QMP socket): the
  // shim records it at once, so a shim that dies mid-start still finds the VM.
  std::function<void(const ProcessId& process, const std::string& api_socket)> on_spawned;
};

class Backend {
 public:
  virtual ~Backend() = default;

  virtual const char* kind() const = 0;   // "flint" or "qemu"
  // The record fields this backend needs to Attach again (pid, pid_start_time,
  // api_socket, vm_dir, backend).
  virtual void FillRecord(flint::shim::v1::VmRecord* record) const = 0;

  virtual DomainStatus Status() = 0;
  virtual absl::Status Pause() = 0;
  virtual absl::Status Resume() = 0;
  virtual absl::Status Reset() = 0;     // hard reset; the guest reboots
  // Graceful: ACPI power button, then a forced stop after `grace`. Returns
  // once the request is delivered; the kShutoff event follows.
  virtual absl::Status Shutdown(absl::Duration grace) = 0;
  // Forced stop (SIGKILL of the VMM if it does not stop at once). Returns once
  // the process is gone.
  virtual absl::Status Kill() = 0;
  virtual absl::StatusOr<BackendStats> Stats() = 0;
  // The hypervisor's version string (GetQemuVersion).
  virtual std::string Version() = 0;
};

// The paths of the programs the backends run.
struct BackendPrograms {
  std::string flint = "flint";                  // or an absolute path
  std::string qemu = "qemu-system-x86_64";
  std::string passt = "passt";                  // QEMU's NICs get their own passt
};

// Starts flint detached (its own session; not the shim's child) with
// --config VM_DIR/config.json --api-socket VM_DIR/api.sock, waits until its
// API answers (or it exits: the error carries its stderr), then watches its
// events. `sink` gets every state change.
absl::StatusOr<std::unique_ptr<Backend>> StartFlint(const LaunchSpec& spec,
                                                    const BackendPrograms& programs,
                                                    EventSink sink);
// Re-attaches to the flint a VmRecord names. NOT_FOUND when that process is
// gone (or the pid was reused: pid_start_time differs).
absl::StatusOr<std::unique_ptr<Backend>> AttachFlint(const flint::shim::v1::VmRecord& record,
                                                     EventSink sink);

// The same for QEMU (microvm with PCIe, virtio-blk-pci, virtio-net-pci over
// its own passt or a TAP), driven over a QMP socket in VM_DIR.
absl::StatusOr<std::unique_ptr<Backend>> StartQemu(const LaunchSpec& spec,
                                                   const BackendPrograms& programs,
                                                   EventSink sink);
absl::StatusOr<std::unique_ptr<Backend>> AttachQemu(const flint::shim::v1::VmRecord& record,
                                                    EventSink sink);

}  // namespace flint::shim
