// The JSON documents virt-handler reads back from a launcher: the domain
// (GetDomain and Notify's domainJSON) and the domain stats (GetDomainStats),
// in the shapes of KubeVirt's api.Domain and stats.DomainStats.
#pragma once

#include <string>
#include <vector>

#include "k8s-shim/backend.h"
#include "k8s-shim/vmi.h"

namespace flint::shim {

// The domain as virt-handler sees it: kind/apiVersion, metadata (name
// "NAMESPACE_NAME", namespace, uid), spec (name, uuid, the kubevirt metadata
// with the VMI's uid and the grace period, vcpu count and memory), and status
// {status: LifeCycle, reason: StateChangeReason}.
// The VMI's names for the config's disks and NICs (same order as
// config.disks / config.nics). With them the domain lists its devices
// (Spec.Devices.Disks/Interfaces, aliased by those names), which is how
// virt-handler matches them to the VMI's disks and interfaces.
struct DeviceNames {
  std::vector<std::string> disks;
  std::vector<std::string> nics;
};

std::string DomainJson(const VmiMeta& meta, const flint::v1::VmConfig& config,
                       const DomainStatus& status, const DeviceNames& names = {});

// stats.DomainStats: name, uuid, cpu/memory/vcpu/net/block with their *Set
// flags, from what the backend measures.
std::string DomainStatsJson(const VmiMeta& meta, const BackendStats& stats);

// The domain name KubeVirt uses: NAMESPACE_NAME.
std::string DomainName(const VmiMeta& meta);

}  // namespace flint::shim
