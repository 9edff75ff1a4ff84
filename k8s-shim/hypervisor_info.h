// The node-level hypervisor report (the Node service's GetHypervisorInfo): what
// KubeVirt's hypervisor abstraction layer asks of a node -- the hypervisor
// device and whether it works, the memory to add to each VM's pod beyond its
// guest RAM, and node labels naming what this host and flint support.
//
// The memory overhead is measured, not guessed: the probe boots one small VM
// under the flint binary the shim will run (with the API socket the shim
// gives every VM) and reads flint's own account of its private memory. That
// costs a VM start, so the result is cached for the life of the process.
#pragma once

#include "absl/status/statusor.h"
#include "k8s-shim/backend.h"
#include "shim.pb.h"

namespace flint::shim {

// The label namespace of every label the report carries ("flint.dev/kvm", ...).
inline constexpr char kLabelPrefix[] = "flint.dev/";

// Probes once per distinct `programs` for the life of the process and
// returns the cached report afterwards (concurrent callers wait for the one
// probe). A failure is not cached, so a flint binary installed later is found.
//
// Errors: NOT_FOUND when the flint binary is missing or not executable (the
// message names the path or PATH it searched); INTERNAL when /dev/kvm works
// but the measuring VM fails (the message carries flint's stderr). A host
// without a usable /dev/kvm is not an error: the report says
// device_usable=false with the reason, and memory_overhead_source says the
// overhead was not measured.
absl::StatusOr<flint::shim::v1::GetHypervisorInfoResponse> ProbeHypervisor(
    const BackendPrograms& programs);

// The same probe, uncached (tests; a shim that wants a fresh measurement).
absl::StatusOr<flint::shim::v1::GetHypervisorInfoResponse> ProbeHypervisorUncached(
    const BackendPrograms& programs);

}  // namespace flint::shim
