// Translation of a KubeVirt VirtualMachineInstance (kubevirt.io/v1, as JSON)
// into flint's VM configuration (flint.v1.VmConfig), the one schema `flint
// run --config` and the agent-api share.
//
// Every field of the VMI is either honoured or rejected with a message that
// names it by its JSON path ("spec.domain.devices.interfaces[0].sriov: ...");
// nothing is silently ignored. Fields that only matter to the cluster (labels,
// status, scheduling, ...) are listed in vmi.cc as accepted without effect.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "vm_config.pb.h"

namespace flint::shim {

// Where the pod's files are. A launcher sees volumes and kernel-boot
// artifacts at fixed paths inside its pod; the shim may run outside the pod
// (per-node mode) or in a test, so every pod path is taken under `root`.
struct PodPaths {
  std::string root = "/";
  // The TAP device virt-handler prepared for a bridge/masquerade interface on
  // the pod network, by interface index (tests use their own names).
  std::string tap_prefix = "tap";
};

// The VMI's identity (metadata) and shim-level choices.
struct VmiMeta {
  std::string uid;
  std::string name;
  std::string namespace_;
  // metadata.annotations["flint.dev/backend"]: "flint", "qemu" or empty
  // (the shim's default).
  std::string backend;
  // spec.terminationGracePeriodSeconds (KubeVirt's default 30 s when unset).
  absl::Duration grace = absl::Seconds(30);
  // Set by the launcher (not the VMI) when a graceful shutdown began: the
  // domain then carries the grace period's start, from which virt-handler
  // decides when to escalate to a kill.
  absl::Time shutdown_since = absl::InfinitePast();
};

struct Translation {
  VmiMeta meta;
  flint::v1::VmConfig config;
  std::vector<std::string> disk_names;  // spec.domain.devices.disks[].name, per config.disks
  std::vector<std::string> nic_names;   // interfaces[].name, per config.nics
};

// INVALID_ARGUMENT (naming the field) for JSON that is not a VMI or asks for
// what flint cannot do; the paths are resolved, not checked for existence
// (flint reports a missing disk when it starts).
absl::StatusOr<Translation> TranslateVmi(std::string_view vmi_json, const PodPaths& paths);

// Only the identity: for calls that carry a VMI but must not re-translate it
// (Pause, Kill, ...). INVALID_ARGUMENT when metadata.uid is missing.
absl::StatusOr<VmiMeta> ReadVmiMeta(std::string_view vmi_json);

// Kubernetes resource quantities ("512Mi", "1G", "1.5Gi", "1024") in bytes.
absl::StatusOr<uint64_t> ParseQuantity(std::string_view quantity);

}  // namespace flint::shim
