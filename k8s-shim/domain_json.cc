// The key names below are the Go field names of KubeVirt's api.Domain and
// stats.DomainStats (no json tags there, so encoding/json uses the field
// names), except ObjectMeta's members, which are Kubernetes' own lowercase
// tags. virt-handler decodes with Go's encoding/json: a missing member is the
// zero value, so what flint does not measure is left out rather than sent
// as a zero with its *Set flag.
#include "k8s-shim/domain_json.h"

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "k8s-shim/json.h"

namespace flint::shim {
namespace {

using json::Out;

// flint's defaults for a VmConfig field left at 0 (vm_config.proto).
constexpr uint32_t kDefaultCpus = 1;
constexpr uint32_t kDefaultMemoryMib = 256;

// The guest's name for disk i on virtio: vda..vdz, vdaa, ... (as KubeVirt
// assigns target devices in disk order).
std::string VirtioDiskName(size_t i) {
  std::string letters;
  size_t n = i;
  while (true) {
    letters.insert(letters.begin(), static_cast<char>('a' + n % 26));
    if (n < 26) break;
    n = n / 26 - 1;
  }
  return "vd" + letters;
}

// libvirt reports memory in KiB, and so does the domain a real launcher sends.
Out KiB(uint64_t kib) {
  return Out::Object().Set("Value", Out::Uint(kib)).Set("Unit", Out::Str("KiB"));
}

// KubeVirt's alias JSON: {"Name", "UserDefined"}; the VMI's device names
// are user-defined aliases.
Out Alias(const std::string& name) {
  return Out::Object().Set("Name", Out::Str(name)).Set("UserDefined", Out::Bool(true));
}

// Spec.Devices: the disks and interfaces flint gives the guest, named as
// the VMI names them. A device without a name (names not given) is left
// out: virt-handler could not match it anyway.
Out Devices(const flint::v1::VmConfig& config, const DeviceNames& names) {
  Out disks = Out::Array();
  for (int i = 0; i < config.disks_size() && static_cast<size_t>(i) < names.disks.size(); ++i) {
    const flint::v1::Disk& d = config.disks(i);
    Out disk = Out::Object()
                   .Set("Device", Out::Str("disk"))
                   .Set("Type", Out::Str("file"))
                   .Set("Source", Out::Object().Set("File", Out::Str(d.path())))
                   .Set("Target", Out::Object()
                                      .Set("Bus", Out::Str("virtio"))
                                      .Set("Device", Out::Str(VirtioDiskName(i))))
                   .Set("Alias", Alias(names.disks[i]));
    if (d.readonly()) disk.Set("ReadOnly", Out::Object());
    if (!d.serial().empty()) disk.Set("Serial", Out::Str(d.serial()));
    disks.Push(std::move(disk));
  }
  Out nics = Out::Array();
  for (int i = 0; i < config.nics_size() && static_cast<size_t>(i) < names.nics.size(); ++i) {
    const flint::v1::Nic& n = config.nics(i);
    Out nic = Out::Object()
                  .Set("Type", Out::Str("ethernet"))
                  .Set("Model", Out::Object().Set("Type", Out::Str("virtio-non-transitional")))
                  .Set("Alias", Alias(names.nics[i]));
    if (n.has_tap()) {
      nic.Set("Target", Out::Object()
                            .Set("Device", Out::Str(n.tap().name()))
                            .Set("Managed", Out::Str("no")));
    }
    if (!n.mac().empty()) nic.Set("MAC", Out::Object().Set("MAC", Out::Str(n.mac())));
    if (n.mtu() != 0) nic.Set("MTU", Out::Object().Set("Size", Out::Str(absl::StrCat(n.mtu()))));
    nics.Push(std::move(nic));
  }
  return Out::Object().Set("Disks", std::move(disks)).Set("Interfaces", std::move(nics));
}

}  // namespace

const char* DomainStateName(DomainState state) {
  switch (state) {
    case DomainState::kNoState: return "NoState";
    case DomainState::kRunning: return "Running";
    case DomainState::kPaused: return "Paused";
    case DomainState::kShuttingDown: return "ShuttingDown";
    case DomainState::kShutoff: return "Shutoff";
    case DomainState::kCrashed: return "Crashed";
  }
  return "NoState";
}

std::string DomainName(const VmiMeta& meta) { return absl::StrCat(meta.namespace_, "_", meta.name); }

std::string DomainJson(const VmiMeta& meta, const flint::v1::VmConfig& config,
                       const DomainStatus& status, const DeviceNames& names) {
  // ObjectMeta: the VMI's name (not NAMESPACE_NAME) and the VMI's uid, as
  // KubeVirt's NewDomainFromName sets them.
  Out object_meta = Out::Object()
                        .Set("name", Out::Str(meta.name))
                        .Set("namespace", Out::Str(meta.namespace_))
                        .Set("uid", Out::Str(meta.uid));
  // The launcher's way of saying "the domain is gone": virt-handler treats a
  // domain with a deletion timestamp as deleted.
  if (status.state == DomainState::kNoState && status.reason == "NonExistent") {
    object_meta.Set("deletionTimestamp",
                    Out::Str(absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", absl::Now(),
                                              absl::UTCTimeZone())));
  }
  const uint64_t mib = config.memory_mib() != 0 ? config.memory_mib() : kDefaultMemoryMib;
  const uint32_t cpus = config.cpus() != 0 ? config.cpus() : kDefaultCpus;
  Out grace = Out::Object().Set("DeletionGracePeriodSeconds",
                                Out::Int(absl::ToInt64Seconds(meta.grace)));
  if (meta.shutdown_since != absl::InfinitePast()) {
    // KubeVirt's GracePeriodMetadata: without the timestamp virt-handler
    // cannot tell when the grace period ends and never escalates.
    grace.Set("DeletionTimestamp", Out::Str(absl::FormatTime("%Y-%m-%dT%H:%M:%SZ",
                                                             meta.shutdown_since,
                                                             absl::UTCTimeZone())))
        .Set("MarkedForGracefulShutdown", Out::Bool(true));
  }
  Out kubevirt = Out::Object()
                     .Set("UID", Out::Str(meta.uid))
                     .Set("GracePeriod", std::move(grace));
  Out spec = Out::Object()
                 .Set("Type", Out::Str("kvm"))
                 .Set("Name", Out::Str(DomainName(meta)))
                 .Set("UUID", Out::Str(meta.uid))
                 .Set("Memory", KiB(mib * 1024))
                 .Set("CurrentMemory", KiB(mib * 1024))
                 .Set("Metadata", Out::Object().Set("KubeVirt", std::move(kubevirt)))
                 .Set("Devices", Devices(config, names))
                 .Set("VCPU", Out::Object()
                                  .Set("Placement", Out::Str("static"))
                                  .Set("CPUs", Out::Uint(cpus)));
  return Out::Object()
      .Set("kind", Out::Str("Domain"))
      .Set("apiVersion", Out::Str("1.2.2"))
      .Set("ObjectMeta", std::move(object_meta))
      .Set("Spec", std::move(spec))
      .Set("Status", Out::Object()
                         .Set("Status", Out::Str(DomainStateName(status.state)))
                         .Set("Reason", Out::Str(status.reason)))
      .Dump();
}

std::string DomainStatsJson(const VmiMeta& meta, const BackendStats& stats) {
  Out out = Out::Object()
                .Set("Name", Out::Str(DomainName(meta)))
                .Set("UUID", Out::Str(meta.uid))
                .Set("Cpu", Out::Object()
                                .Set("TimeSet", Out::Bool(true))
                                .Set("Time", Out::Uint(stats.cpu_time_ns)));
  Out memory = Out::Object();
  if (stats.rss_bytes != 0) {
    memory.Set("RSSSet", Out::Bool(true)).Set("RSS", Out::Uint(stats.rss_bytes / 1024));
  }
  // What libvirt calls the balloon's actual size is the guest's RAM when, as
  // in flint, there is no balloon.
  if (stats.memory_bytes != 0) {
    memory.Set("ActualBalloonSet", Out::Bool(true))
        .Set("ActualBalloon", Out::Uint(stats.memory_bytes / 1024));
  }
  out.Set("Memory", std::move(memory));
  if (stats.vcpus != 0) out.Set("NrVirtCpu", Out::Uint(stats.vcpus));

  // Alias is what virt-handler labels the metrics with: the VMI's own
  // interface and disk names (KubeVirt's alias without its "ua-" prefix).
  Out nets = Out::Array();
  for (const NicStats& n : stats.nics) {
    nets.Push(Out::Object()
                  .Set("NameSet", Out::Bool(true))
                  .Set("Name", Out::Str(n.name))
                  .Set("AliasSet", Out::Bool(true))
                  .Set("Alias", Out::Str(n.name))
                  .Set("RxBytesSet", Out::Bool(true))
                  .Set("RxBytes", Out::Uint(n.rx_bytes))
                  .Set("RxPktsSet", Out::Bool(true))
                  .Set("RxPkts", Out::Uint(n.rx_packets))
                  .Set("RxDropSet", Out::Bool(true))
                  .Set("RxDrop", Out::Uint(n.rx_dropped))
                  .Set("TxBytesSet", Out::Bool(true))
                  .Set("TxBytes", Out::Uint(n.tx_bytes))
                  .Set("TxPktsSet", Out::Bool(true))
                  .Set("TxPkts", Out::Uint(n.tx_packets))
                  .Set("TxDropSet", Out::Bool(true))
                  .Set("TxDrop", Out::Uint(n.tx_dropped)));
  }
  out.Set("Net", std::move(nets));

  Out blocks = Out::Array();
  for (size_t i = 0; i < stats.disks.size(); ++i) {
    const DiskStats& d = stats.disks[i];
    blocks.Push(Out::Object()
                    .Set("NameSet", Out::Bool(true))
                    .Set("Name", Out::Str(VirtioDiskName(i)))
                    .Set("Alias", Out::Str(d.name))
                    .Set("PathSet", Out::Bool(true))
                    .Set("Path", Out::Str(d.path))
                    .Set("RdReqsSet", Out::Bool(true))
                    .Set("RdReqs", Out::Uint(d.read_requests))
                    .Set("RdBytesSet", Out::Bool(true))
                    .Set("RdBytes", Out::Uint(d.read_bytes))
                    .Set("WrReqsSet", Out::Bool(true))
                    .Set("WrReqs", Out::Uint(d.write_requests))
                    .Set("WrBytesSet", Out::Bool(true))
                    .Set("WrBytes", Out::Uint(d.write_bytes))
                    .Set("FlReqsSet", Out::Bool(true))
                    .Set("FlReqs", Out::Uint(d.flush_requests))
                    .Set("ErrorsSet", Out::Bool(true))
                    .Set("Errors", Out::Uint(d.errors)));
  }
  out.Set("Block", std::move(blocks));
  return out.Dump();
}

}  // namespace flint::shim
