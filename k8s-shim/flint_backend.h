// The flint backend's pieces apart from StartFlint/AttachFlint (backend.h):
// how flint's stop reasons and device counters read in KubeVirt's terms
// (pure, so they are tested without a VM), and how a gone VM ended.
#pragma once

#include <string>
#include <vector>

#include "k8s-shim/backend.h"

namespace flint::shim {

// A KIND_STOPPED event's reason ("KIND: detail", KIND one of flint's
// StopKindName strings) and exit status (-1: unknown) as KubeVirt's
// lifecycle: power-off (or a reset with --no-reboot) -> Shutoff/Shutdown;
// debug-exit with status 1 (the guest wrote 0) -> Shutoff/Shutdown, other
// codes -> Crashed; signal (Stop, SIGTERM) -> Shutoff/Destroyed;
// triple-fault, guest-error, host-error -> Crashed. `stop_requested` (the
// shim asked for Kill) makes every stop but a crash Shutoff/Destroyed.
DomainStatus FlintStopStatus(const std::string& reason, int exit_status, bool stop_requested);

// How a flint VM that is gone ended, from the stop file flint writes as it
// exits (VM_DIR/stop.json; record.vm_dir names VM_DIR): for a VM that ended
// while no Backend watched it, so it is reported as Shutoff/Shutdown (or
// Destroyed, Crashed) rather than Shutoff/Unknown. Errors: FAILED_PRECONDITION
// while the record's process (pid + start time) still runs; NOT_FOUND when
// flint wrote no stop file (SIGKILL, a crash: it ended without a stop);
// DATA_LOSS when the file is not flint's.
absl::StatusOr<DomainStatus> FlintEndStatus(const flint::shim::v1::VmRecord& record);

// Fills out->disks and out->nics from GetStats' device lines (flint's
// "pci 00:SS.0 key=value ..." format; virtio-blk lines carry engine=,
// virtio-net lines rx_frames=). flint adds the disks first, then the NICs,
// each in config order, so the N-th disk line is config.disks(N). Names come
// from the parallel name lists (empty where they are shorter).
void ParseFlintDeviceStats(const std::vector<std::string>& lines,
                           const flint::v1::VmConfig& config,
                           const std::vector<std::string>& disk_names,
                           const std::vector<std::string>& nic_names, BackendStats* out);

}  // namespace flint::shim
