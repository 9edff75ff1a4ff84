// VMI -> flint.v1.VmConfig. Every member of every object we read is looked up
// in a table below that says what happens to it: translated, acted on by the
// cluster (not the VMM), accepted as a hint flint has no counterpart for, or
// rejected; a member in no table is rejected as unknown. So a VMI field that
// KubeVirt adds later fails loudly instead of being dropped.
#include "k8s-shim/vmi.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <google/protobuf/util/json_util.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <map>
#include <span>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "agent-api/config_file.h"
#include "k8s-shim/json.h"
#include "vmm/cli.h"
#include "vmm/kvm/unique_fd.h"

namespace flint::shim {
namespace {

using json::Node;

// ---- Where KubeVirt puts a VMI's files inside the launcher pod ----
//
// The kernel-boot container's kernel and initrd: KubeVirt's converter points
// the domain at <container-disks dir>/kernel-boot/<basename of kernelPath>
// (containerdisk.GetKernelBootArtifactPathFromLauncherView, read in a stored
// pre-1.8 KubeVirt source). UNCONFIRMED for 1.8, and the ImageVolume feature
// gate mounts images elsewhere: check a real 1.8 launcher pod.
constexpr char kKernelBootDir[] = "/var/run/kubevirt/container-disks/kernel-boot";
// containerDisk base images: disk_<N>.img, N = the volume's index in
// spec.volumes (all volumes, not only containerDisks: KubeVirt numbers the
// copy containers by that index). Same source and caveat as above.
constexpr char kContainerDiskDir[] = "/var/run/kubevirt/container-disks";
// PVC / DataVolume in filesystem mode: <dir>/<volume>/disk.img. In block
// mode the device is /dev/<volume>; the VMI does not say which mode the
// claim has, so the device node decides.
constexpr char kPvcDiskDir[] = "/var/run/kubevirt-private/vmi-disks";

constexpr uint64_t kMiB = 1ull << 20;

// ---- The decisions, object by object ----

enum class Use {
  kTranslated,  // read by the code below (which may still refuse some values)
  kCluster,     // acted on by the cluster (scheduler, kubelet, virt-controller/handler), not a VMM
  kNoEffect,    // accepted on purpose although flint does nothing with it (why says why)
  kRejected,    // asks for something flint cannot do (why says what)
};
struct Field {
  std::string_view key;
  Use use;
  std::string_view why = "";
};
using Table = std::span<const Field>;

constexpr Field kTopFields[] = {
    {"apiVersion", Use::kTranslated},
    {"kind", Use::kTranslated},
    {"metadata", Use::kTranslated},  // uid, name, namespace, one annotation; the rest is the cluster's
    {"spec", Use::kTranslated},
    {"status", Use::kCluster, "virt-handler's report"},
};

// spec: the VMI's own fields. Scheduling and pod-level DNS are the cluster's;
// what would reach into the guest without a VMM device is refused.
constexpr Field kSpecFields[] = {
    {"domain", Use::kTranslated},
    {"volumes", Use::kTranslated},
    {"networks", Use::kTranslated},
    {"terminationGracePeriodSeconds", Use::kTranslated},
    {"architecture", Use::kTranslated},    // amd64 only
    {"startStrategy", Use::kTranslated},   // none only ("Paused" refused)
    {"livenessProbe", Use::kTranslated},   // httpGet/tcpSocket: the kubelet probes the pod
    {"readinessProbe", Use::kTranslated},  // exec/guestAgentPing: refused (guest agent)
    {"nodeSelector", Use::kCluster, "scheduling"},
    {"affinity", Use::kCluster, "scheduling"},
    {"tolerations", Use::kCluster, "scheduling"},
    {"topologySpreadConstraints", Use::kCluster, "scheduling"},
    {"schedulerName", Use::kCluster, "scheduling"},
    {"priorityClassName", Use::kCluster, "scheduling"},
    // A drain with LiveMigrate then fails: flint-shim answers Migrate with "not supported".
    {"evictionStrategy", Use::kCluster, "node drain policy"},
    // The pod's DNS. (KubeVirt's in-pod DHCP server also tells a bridge/masquerade
    // guest its hostname; flint-shim runs no DHCP server.)
    {"hostname", Use::kCluster, "pod DNS"},
    {"subdomain", Use::kCluster, "pod DNS"},
    {"dnsPolicy", Use::kCluster, "pod DNS"},
    {"dnsConfig", Use::kCluster, "pod DNS"},
    {"accessCredentials", Use::kRejected,
     "credentials are injected through the guest agent or cloud-init, which flint does not "
     "provide"},
    {"resourceClaims", Use::kRejected,
     "dynamically allocated devices need device assignment, which flint does not have"},
};

constexpr Field kDomainFields[] = {
    {"resources", Use::kTranslated},
    {"cpu", Use::kTranslated},
    {"memory", Use::kTranslated},
    {"machine", Use::kTranslated},
    {"firmware", Use::kTranslated},
    {"clock", Use::kTranslated},
    {"features", Use::kTranslated},
    {"devices", Use::kTranslated},
    {"ioThreadsPolicy", Use::kNoEffect,
     "QEMU I/O-thread placement; flint runs device I/O on its own event loop and I/O engine"},
    {"ioThreads", Use::kNoEffect, "as ioThreadsPolicy"},
    {"chassis", Use::kRejected, "SMBIOS chassis data: flint builds no SMBIOS tables"},
    {"launchSecurity", Use::kRejected,
     "confidential guests (SEV, TDX) are not supported by flint"},
};

constexpr Field kResourceFields[] = {
    {"requests", Use::kTranslated},  // memory (guest size when memory.guest is unset), cpu
    {"limits", Use::kTranslated},    // as requests; the other resources are the pod's
    {"overcommitGuestOverhead", Use::kCluster, "pod sizing"},
};

constexpr Field kCpuFields[] = {
    {"sockets", Use::kTranslated},
    {"cores", Use::kTranslated},
    {"threads", Use::kTranslated},
    {"model", Use::kTranslated},
    {"dedicatedCpuPlacement", Use::kTranslated},  // false only
    {"isolateEmulatorThread", Use::kTranslated},  // false only
    // KubeVirt's webhook sets it on every VMI under the (default) LiveUpdate
    // rollout strategy; refusing it would refuse almost every VM. flint boots
    // `sockets` and the shim refuses CPU hotplug requests.
    {"maxSockets", Use::kNoEffect, "CPU hotplug headroom"},
    {"features", Use::kRejected,
     "flint passes the host CPU's features through and cannot add or remove one"},
    {"numa", Use::kRejected, "flint presents one NUMA node"},
    {"realtime", Use::kRejected, "real-time vCPU tuning is not supported by flint"},
};

constexpr Field kMemoryFields[] = {
    {"guest", Use::kTranslated},
    {"hugepages", Use::kTranslated},
    // As cpu.maxSockets: set by the webhook for memory hotplug; flint boots
    // `guest` and the shim refuses memory hotplug requests.
    {"maxGuest", Use::kNoEffect, "memory hotplug ceiling"},
};

constexpr Field kHugepagesFields[] = {{"pageSize", Use::kTranslated}};
constexpr Field kMachineFields[] = {{"type", Use::kTranslated}};

constexpr Field kFirmwareFields[] = {
    {"kernelBoot", Use::kTranslated},
    // Filled in by KubeVirt itself for VMs (a stable identity), so refusing it
    // would refuse every VM; the guest does not see it (no SMBIOS in flint).
    {"uuid", Use::kNoEffect, "SMBIOS system UUID"},
    {"serial", Use::kRejected, "an SMBIOS system serial: flint builds no SMBIOS tables"},
    {"bootloader", Use::kRejected,
     "flint has no BIOS or UEFI; it boots the kernel of firmware.kernelBoot directly"},
    {"acpi", Use::kRejected, "extra ACPI tables (SLIC, MSDM) are not supported by flint"},
};

constexpr Field kKernelBootFields[] = {
    {"kernelArgs", Use::kTranslated},
    {"container", Use::kTranslated},
};

constexpr Field kKernelContainerFields[] = {
    {"kernelPath", Use::kTranslated},
    {"initrdPath", Use::kTranslated},
    {"image", Use::kCluster, "KubeVirt pulls the image and copies the files into the pod"},
    {"imagePullPolicy", Use::kCluster, "image pull"},
    {"imagePullSecret", Use::kCluster, "image pull"},
};

constexpr Field kClockFields[] = {
    {"utc", Use::kTranslated},  // without an offset
    {"timezone", Use::kRejected, "flint's RTC keeps UTC; a local-time RTC is not supported"},
    {"timer", Use::kRejected, "flint's timers (LAPIC, RTC) are fixed and cannot be tuned"},
};
constexpr Field kClockUtcFields[] = {{"offsetSeconds", Use::kTranslated}};

constexpr Field kFeatureFields[] = {
    {"acpi", Use::kTranslated},  // enabled only (flint always has ACPI)
    {"apic", Use::kTranslated},  // enabled only (flint always has the LAPIC and IOAPIC)
    {"smm", Use::kTranslated},   // disabled only
    {"hyperv", Use::kRejected, "flint has no Hyper-V enlightenments"},
    {"hypervPassthrough", Use::kRejected, "flint has no Hyper-V enlightenments"},
    {"kvm", Use::kRejected, "flint cannot hide KVM or change its paravirtual hints"},
    {"pvspinlock", Use::kRejected, "flint cannot change KVM's paravirtual spinlock hint"},
};
constexpr Field kFeatureStateFields[] = {{"enabled", Use::kTranslated}};
constexpr Field kApicFields[] = {{"enabled", Use::kTranslated},
                                 {"endOfInterrupt", Use::kTranslated}};

constexpr Field kDeviceFields[] = {
    {"disks", Use::kTranslated},
    {"interfaces", Use::kTranslated},
    {"blockMultiQueue", Use::kTranslated},             // queues = vCPUs (max 16)
    {"networkInterfaceMultiqueue", Use::kTranslated},  // TAP queues = vCPUs (max 8)
    {"autoattachGraphicsDevice", Use::kTranslated},    // false or absent
    {"autoattachInputDevice", Use::kTranslated},       // false or absent
    {"autoattachVSOCK", Use::kTranslated},             // false or absent
    {"useVirtioTransitional", Use::kTranslated},       // false or absent
    {"autoattachSerialConsole", Use::kNoEffect,
     "flint always has one serial port, logged by the shim"},
    {"logSerialConsole", Use::kNoEffect, "the shim always logs the serial port"},
    {"autoattachPodInterface", Use::kCluster, "read by KubeVirt's webhook, which adds the interface"},
    {"autoattachMemBalloon", Use::kNoEffect,
     "flint has no balloon; memory statistics come from the VMM process"},
    {"disableHotplug", Use::kNoEffect, "flint has no device hotplug at all"},
    {"rng", Use::kRejected, "flint has no virtio-rng device"},
    {"watchdog", Use::kRejected, "flint has no watchdog device"},
    {"inputs", Use::kRejected, "flint has no input devices"},
    {"gpus", Use::kRejected, "flint has no device assignment (VFIO)"},
    {"hostDevices", Use::kRejected, "flint has no device assignment (VFIO)"},
    {"filesystems", Use::kRejected, "flint has no virtio-fs device"},
    {"tpm", Use::kRejected, "flint has no TPM"},
    {"sound", Use::kRejected, "flint has no sound device"},
    {"video", Use::kRejected, "flint has no display device"},
    {"clientPassthrough", Use::kRejected, "flint has no USB redirection"},
    {"downwardMetrics", Use::kRejected, "flint has no virtio-serial channel"},
    {"panicDevices", Use::kRejected, "flint has no panic device"},
};

constexpr Field kDiskFields[] = {
    {"name", Use::kTranslated},
    {"disk", Use::kTranslated},
    {"serial", Use::kTranslated},
    {"cache", Use::kTranslated},
    {"io", Use::kTranslated},
    {"shareable", Use::kTranslated},    // false only
    {"errorPolicy", Use::kTranslated},  // report only
    {"dedicatedIOThread", Use::kNoEffect,
     "QEMU I/O-thread placement; flint's I/O engine serves every disk"},
    {"lun", Use::kRejected, "flint has no SCSI; only virtio-blk disks (disk: {})"},
    {"cdrom", Use::kRejected, "flint has no CD-ROM; only virtio-blk disks (disk: {})"},
    {"floppy", Use::kRejected, "flint has no floppy; only virtio-blk disks (disk: {})"},
    {"bootOrder", Use::kRejected,
     "flint boots the kernel of firmware.kernelBoot, never from a disk"},
    {"blockSize", Use::kRejected, "flint presents 512-byte sectors only"},
    {"tag", Use::kRejected,
     "device tags reach the guest through cloud-init metadata, which flint-shim does not build"},
};
constexpr Field kDiskTargetFields[] = {
    {"bus", Use::kTranslated},  // virtio only
    {"readonly", Use::kTranslated},
    {"pciAddress", Use::kRejected, "flint assigns PCI slots itself"},
};

constexpr Field kVolumeFields[] = {
    {"name", Use::kTranslated},
    {"hostDisk", Use::kTranslated},
    {"persistentVolumeClaim", Use::kTranslated},
    {"dataVolume", Use::kTranslated},
    {"containerDisk", Use::kTranslated},  // read-only disks only (no overlay)
    {"cloudInitNoCloud", Use::kRejected, "flint-shim does not build cloud-init disks"},
    {"cloudInitConfigDrive", Use::kRejected, "flint-shim does not build cloud-init disks"},
    {"emptyDisk", Use::kRejected, "flint-shim does not create scratch images"},
    {"ephemeral", Use::kRejected, "an ephemeral disk needs a copy-on-write overlay; flint reads raw images"},
    {"configMap", Use::kRejected, "flint-shim does not build disks from config maps"},
    {"secret", Use::kRejected, "flint-shim does not build disks from secrets"},
    {"serviceAccount", Use::kRejected, "flint-shim does not build service-account disks"},
    {"downwardAPI", Use::kRejected, "flint-shim does not build downward-API disks"},
    {"downwardMetrics", Use::kRejected, "flint has no virtio-serial channel"},
    {"sysprep", Use::kRejected, "flint-shim does not build sysprep disks"},
    {"memoryDump", Use::kRejected, "flint does not dump guest memory"},
};
constexpr std::string_view kVolumeSources[] = {"hostDisk", "persistentVolumeClaim", "dataVolume",
                                               "containerDisk"};
constexpr Field kHostDiskFields[] = {
    {"path", Use::kTranslated},
    {"type", Use::kTranslated},    // Disk only
    {"shared", Use::kTranslated},  // false only
    {"capacity", Use::kNoEffect, "only used to create the image (type DiskOrCreate)"},
};
constexpr Field kPvcFields[] = {
    {"claimName", Use::kCluster, "the kubelet mounts the claim into the pod"},
    {"readOnly", Use::kTranslated},
    {"hotpluggable", Use::kTranslated},  // false only
};
constexpr Field kDataVolumeFields[] = {
    {"name", Use::kCluster, "CDI fills the claim; the kubelet mounts it into the pod"},
    {"hotpluggable", Use::kTranslated},  // false only
};
constexpr Field kContainerDiskFields[] = {
    {"image", Use::kCluster, "KubeVirt pulls the image and copies the disk into the pod"},
    {"path", Use::kCluster, "the image file inside the container image"},
    {"imagePullPolicy", Use::kCluster, "image pull"},
    {"imagePullSecret", Use::kCluster, "image pull"},
};

constexpr Field kInterfaceFields[] = {
    {"name", Use::kTranslated},
    {"model", Use::kTranslated},  // virtio only
    {"macAddress", Use::kTranslated},
    {"ports", Use::kTranslated},
    {"state", Use::kTranslated},  // up only
    {"passtBinding", Use::kTranslated},
    {"binding", Use::kTranslated},  // {name: passt} only
    {"bridge", Use::kTranslated},
    {"masquerade", Use::kTranslated},
    {"passt", Use::kRejected,
     "the removed core passt binding; write passtBinding: {} or binding: {name: passt}"},
    {"sriov", Use::kRejected, "flint has no device assignment (VFIO) for SR-IOV"},
    {"slirp", Use::kRejected, "flint has no slirp; use passtBinding"},
    {"macvtap", Use::kRejected, "flint-shim does not open macvtap devices"},
    {"pciAddress", Use::kRejected, "flint assigns PCI slots itself"},
    {"bootOrder", Use::kRejected, "flint boots the kernel of firmware.kernelBoot, never from the network"},
    {"dhcpOptions", Use::kRejected, "options of KubeVirt's in-pod DHCP server; flint-shim runs none"},
    {"tag", Use::kRejected,
     "device tags reach the guest through cloud-init metadata, which flint-shim does not build"},
    {"acpiIndex", Use::kRejected, "flint does not give NICs ACPI indexes"},
};
constexpr Field kPortFields[] = {
    {"port", Use::kTranslated},
    {"protocol", Use::kTranslated},
    {"name", Use::kNoEffect, "a label for people"},
};
constexpr Field kBindingPluginFields[] = {{"name", Use::kTranslated}};

constexpr Field kNetworkFields[] = {
    {"name", Use::kTranslated},
    {"pod", Use::kTranslated},
    {"multus", Use::kRejected, "flint-shim serves the pod network only"},
};
constexpr Field kPodNetworkFields[] = {
    {"vmNetworkCIDR", Use::kCluster, "masquerade NAT, set up by virt-handler"},
    {"vmIPv6NetworkCIDR", Use::kCluster, "masquerade NAT, set up by virt-handler"},
};

// Refuses members that are unknown or rejected; null members count as absent.
absl::Status CheckFields(const Node& obj, Table table) {
  if (absl::Status st = obj.ExpectObjectOrAbsent(); !st.ok()) return st;
  absl::StatusOr<std::vector<std::string>> keys = obj.Keys();
  if (!keys.ok()) return keys.status();
  for (const std::string& key : *keys) {
    const Node member = obj[key];
    if (!member.present()) continue;
    const auto f = std::find_if(table.begin(), table.end(),
                                [&](const Field& x) { return x.key == key; });
    if (f == table.end()) {
      return member.Error(
          "unknown field: flint-shim refuses what it does not understand instead of ignoring it");
    }
    if (f->use == Use::kRejected) return member.Error(f->why);
  }
  return absl::OkStatus();
}

absl::Status RejectIfTrue(const Node& n, std::string_view why) {
  absl::StatusOr<bool> b = n.Bool(false);
  if (!b.ok()) return b.status();
  return *b ? n.Error(why) : absl::OkStatus();
}

// Kubernetes quantity: [+]DIGITS[.DIGITS] followed by a binary suffix
// (Ki..Ei), a decimal one (n u m "" k M G T P E) or an exponent (e3, E-2).
// Returns value * 10^exp10_shift as a whole number: rounded up when
// `round_up` (Quantity.Value()'s rule), else an error when not whole.
absl::StatusOr<uint64_t> ParseScaledQuantity(std::string_view text, bool round_up) {
  __extension__ typedef unsigned __int128 U128;
  const auto bad = [&](std::string_view why) {
    return absl::InvalidArgumentError(absl::StrFormat("quantity '%s' %s", text, why));
  };
  std::string_view s = text;
  if (!s.empty() && s[0] == '+') s.remove_prefix(1);
  if (!s.empty() && s[0] == '-') return bad("is negative");
  // Up to 38 significant digits fit in 128 bits (10^38 < 2^128).
  U128 mantissa = 0;
  int frac_digits = 0, digits = 0, significant = 0;
  bool dot = false;
  size_t i = 0;
  for (; i < s.size(); ++i) {
    const char c = s[i];
    if (c == '.' && !dot) {
      dot = true;
      continue;
    }
    if (c < '0' || c > '9') break;
    ++digits;
    if (mantissa != 0 || c != '0') ++significant;
    if (significant > 38) return bad("has too many digits");
    mantissa = mantissa * 10 + static_cast<unsigned>(c - '0');
    if (dot) ++frac_digits;
  }
  if (digits == 0) return bad("is not a number such as 512Mi, 1Gi or 1024");
  const std::string_view suffix = s.substr(i);
  int shift = 0, exp10 = 0;
  static constexpr std::pair<std::string_view, int> kBinary[] = {
      {"Ki", 10}, {"Mi", 20}, {"Gi", 30}, {"Ti", 40}, {"Pi", 50}, {"Ei", 60}};
  static constexpr std::pair<std::string_view, int> kDecimal[] = {
      {"n", -9}, {"u", -6}, {"m", -3}, {"", 0}, {"k", 3},
      {"M", 6},  {"G", 9},  {"T", 12}, {"P", 15}, {"E", 18}};
  bool known = false;
  for (const auto& [name, bits] : kBinary) {
    if (suffix == name) shift = bits, known = true;
  }
  for (const auto& [name, e] : kDecimal) {
    if (suffix == name) exp10 = e, known = true;
  }
  if (!known && suffix.size() >= 2 && (suffix[0] == 'e' || suffix[0] == 'E')) {
    std::string_view e = suffix.substr(1);
    const bool negative = e[0] == '-';
    if (e[0] == '-' || e[0] == '+') e.remove_prefix(1);
    int v = 0;
    known = !e.empty() && e.size() <= 2;
    for (char c : e) {
      if (c < '0' || c > '9') known = false;
      v = v * 10 + (c - '0');
    }
    exp10 = negative ? -v : v;
  }
  if (!known) return bad("has an unknown suffix (Ki, Mi, Gi, Ti, Pi, Ei, k, M, G, T, P, E, m)");
  exp10 -= frac_digits;
  constexpr U128 kMax = std::numeric_limits<uint64_t>::max();
  if (shift > 0 && mantissa > (~U128{0} >> shift)) return bad("is too large");
  U128 v = mantissa << shift;
  for (; exp10 > 0 && v != 0; --exp10) {
    if (v > kMax) return bad("is too large");  // so that v * 10 fits in 128 bits
    v *= 10;
  }
  bool whole = true;
  if (exp10 < 0) {
    if (exp10 < -38) {
      whole = v == 0;
      v = 0;
    } else {
      U128 div = 1;
      for (int k = 0; k < -exp10; ++k) div *= 10;
      whole = v % div == 0;
      v /= div;
    }
  }
  if (!whole) {
    if (!round_up) return bad("is not a whole number of bytes");
    ++v;
  }
  if (v > kMax) return bad("is too large");
  return static_cast<uint64_t>(v);
}

// A quantity member: a string, or a bare JSON number (Quantity accepts both).
absl::StatusOr<uint64_t> QuantityAt(const Node& n, bool round_up) {
  std::string text;
  if (n.is_number()) {
    absl::StatusOr<int64_t> v = n.Int(0, 0, std::numeric_limits<int64_t>::max() / 2);
    if (!v.ok()) return v.status();
    text = absl::StrCat(*v);
  } else {
    absl::StatusOr<std::string> s = n.RequiredString();
    if (!s.ok()) return s.status();
    text = *s;
  }
  absl::StatusOr<uint64_t> q = ParseScaledQuantity(text, round_up);
  if (!q.ok()) return n.Error(std::string(q.status().message()));
  return q;
}

// root + an absolute in-pod path, with one '/' between them.
std::string UnderRoot(const PodPaths& paths, std::string_view abs_path) {
  std::string root = paths.root.empty() ? "/" : paths.root;
  while (root.size() > 1 && root.back() == '/') root.pop_back();
  if (root == "/") return std::string(abs_path);
  return root + std::string(abs_path);
}

// One path component that cannot climb out of its directory.
bool IsPlainName(std::string_view name) {
  return !name.empty() && name != "." && name != ".." && name.find('/') == std::string_view::npos &&
         name.find('\0') == std::string_view::npos;
}

// An absolute path without "." or ".." components (so root + path stays under root).
bool IsCleanAbsolute(std::string_view path) {
  if (path.empty() || path[0] != '/' || path.find('\0') != std::string_view::npos) return false;
  size_t start = 1;
  while (start <= path.size()) {
    size_t end = path.find('/', start);
    if (end == std::string_view::npos) end = path.size();
    const std::string_view part = path.substr(start, end - start);
    if (part == "." || part == "..") return false;
    start = end + 1;
  }
  return true;
}

// A block-mode PVC appears in the pod as a block device named after the
// volume. Only a block device counts: a volume named "null" or "kvm" must not
// become the pod's /dev/null or /dev/kvm.
bool IsBlockDevice(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISBLK(st.st_mode);
}

// True when `path` is a regular file that starts with qcow2's magic. Devices
// and FIFOs are never opened (a FIFO would block).
bool IsQcow2(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) return false;
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY));
  if (!fd.valid()) return false;
  unsigned char magic[4] = {};
  if (::pread(fd.get(), magic, sizeof magic, 0) != static_cast<ssize_t>(sizeof magic)) return false;
  return std::memcmp(magic, "QFI\xfb", 4) == 0;
}

absl::StatusOr<std::string> NormalizeMac(const Node& n) {
  absl::StatusOr<std::string> text = n.String();
  if (!text.ok() || text->empty()) return text;
  const std::string& t = *text;
  const auto bad = [&](std::string_view why) {
    return n.Error(absl::StrFormat("'%s' %s", t, why));
  };
  if (t.size() != 17) return bad("is not a MAC address like 02:00:00:00:00:01");
  const char sep = t[2];
  if (sep != ':' && sep != '-') return bad("is not a MAC address like 02:00:00:00:00:01");
  std::string out;
  uint8_t bytes[6] = {};
  for (int i = 0; i < 6; ++i) {
    if (i > 0 && t[3 * i - 1] != sep) return bad("is not a MAC address like 02:00:00:00:00:01");
    for (int k = 0; k < 2; ++k) {
      const char c = t[3 * i + k];
      int d = -1;
      if (c >= '0' && c <= '9') d = c - '0';
      if (c >= 'a' && c <= 'f') d = c - 'a' + 10;
      if (c >= 'A' && c <= 'F') d = c - 'A' + 10;
      if (d < 0) return bad("is not a MAC address like 02:00:00:00:00:01");
      bytes[i] = static_cast<uint8_t>(bytes[i] * 16 + d);
    }
  }
  if (bytes[0] & 1) return bad("is a multicast address");
  if (std::all_of(bytes, bytes + 6, [](uint8_t b) { return b == 0; })) {
    return bad("is not a usable address");
  }
  return absl::StrFormat("%02x:%02x:%02x:%02x:%02x:%02x", bytes[0], bytes[1], bytes[2], bytes[3],
                         bytes[4], bytes[5]);
}

// ---- spec.domain parts ----

absl::Status TranslateCpu(const Node& domain, flint::v1::VmConfig* c) {
  const Node cpu = domain["cpu"];
  if (absl::Status st = CheckFields(cpu, kCpuFields); !st.ok()) return st;
  absl::StatusOr<std::string> model = cpu["model"].String();
  if (!model.ok()) return model.status();
  if (!model->empty() && *model != "host-passthrough" && *model != "host-model") {
    return cpu["model"].Error(absl::StrFormat(
        "flint passes the host CPU through; it can honour host-passthrough or host-model, not '%s'",
        *model));
  }
  if (absl::Status st = RejectIfTrue(cpu["dedicatedCpuPlacement"],
                                     "dedicated (pinned) vCPUs are not supported by flint-shim");
      !st.ok()) {
    return st;
  }
  if (absl::Status st = RejectIfTrue(cpu["isolateEmulatorThread"],
                                     "emulator-thread isolation is not supported by flint-shim");
      !st.ok()) {
    return st;
  }
  uint64_t vcpus = 1;
  bool topology = false;
  for (std::string_view key : {"sockets", "cores", "threads"}) {
    absl::StatusOr<int64_t> n = cpu[key].Int(0, 0, kMaxVcpus);
    if (!n.ok()) return n.status();
    if (*n > 0) topology = true;
    vcpus *= static_cast<uint64_t>(std::max<int64_t>(*n, 1));
  }
  Node where = cpu;
  if (!topology) {
    // KubeVirt's rule without a topology: the CPU limit, else the request
    // (rounded up), else one.
    const Node res = domain["resources"];
    for (const Node& q : {res["limits"]["cpu"], res["requests"]["cpu"]}) {
      if (!q.present()) continue;
      absl::StatusOr<uint64_t> n = QuantityAt(q, /*round_up=*/true);
      if (!n.ok()) return n.status();
      vcpus = std::max<uint64_t>(*n, 1);
      where = q;
      break;
    }
  }
  if (vcpus > kMaxVcpus) {
    return where.Error(absl::StrFormat("%u vCPUs; flint runs 1..%u", vcpus, kMaxVcpus));
  }
  c->set_cpus(static_cast<uint32_t>(vcpus));
  return absl::OkStatus();
}

absl::Status TranslateMemory(const Node& domain, flint::v1::VmConfig* c) {
  const Node mem = domain["memory"];
  const Node res = domain["resources"];
  if (absl::Status st = CheckFields(mem, kMemoryFields); !st.ok()) return st;
  if (absl::Status st = CheckFields(res, kResourceFields); !st.ok()) return st;
  for (const Node& m : {res["requests"], res["limits"]}) {
    if (absl::Status st = m.ExpectObjectOrAbsent(); !st.ok()) return st;
  }
  Node size = mem["guest"];
  if (!size.present()) size = res["requests"]["memory"];
  if (!size.present()) size = res["limits"]["memory"];
  if (!size.present()) {
    return mem["guest"].Error(
        "flint needs the guest memory size: spec.domain.memory.guest or "
        "spec.domain.resources.requests.memory");
  }
  absl::StatusOr<uint64_t> bytes = QuantityAt(size, /*round_up=*/false);
  if (!bytes.ok()) return bytes.status();
  if (*bytes % kMiB != 0) {
    return size.Error(absl::StrFormat(
        "%u bytes is not a whole number of MiB; flint sizes guest RAM in MiB (write e.g. 1024Mi)",
        *bytes));
  }
  if (*bytes < kMinMemory || *bytes > kMaxMemory) {
    return size.Error(absl::StrFormat("%u MiB is out of flint's range %u MiB..%u GiB",
                                      *bytes / kMiB, kMinMemory / kMiB, kMaxMemory >> 30));
  }
  c->set_memory_mib(static_cast<uint32_t>(*bytes / kMiB));

  const Node huge = mem["hugepages"];
  if (huge.present()) {
    if (absl::Status st = CheckFields(huge, kHugepagesFields); !st.ok()) return st;
    absl::StatusOr<uint64_t> page = QuantityAt(huge["pageSize"], false);
    if (!page.ok()) return page.status();
    if (*page != 2 * kMiB) {
      return huge["pageSize"].Error(
          "flint backs guest RAM with 2Mi huge pages only (hugetlb); other page sizes are not "
          "supported");
    }
    if (*bytes % (2 * kMiB) != 0) {
      return size.Error("must be a multiple of 2Mi with 2Mi huge pages");
    }
    c->set_memory_backing("hugetlb");
  }
  return absl::OkStatus();
}

absl::Status CheckMachineClockFeatures(const Node& domain) {
  const Node machine = domain["machine"];
  if (absl::Status st = CheckFields(machine, kMachineFields); !st.ok()) return st;
  absl::StatusOr<std::string> type = machine["type"].String();
  if (!type.ok()) return type.status();
  // KubeVirt's webhook always fills in a q35 type on x86; flint's one machine
  // (a PC with a PCIe host bridge and ECAM) is the nearest to it.
  if (!type->empty() && *type != "q35" && !absl::StartsWith(*type, "pc-q35")) {
    return machine["type"].Error(absl::StrFormat(
        "flint has one machine model, comparable to q35; '%s' asks for another", *type));
  }

  const Node clock = domain["clock"];
  if (absl::Status st = CheckFields(clock, kClockFields); !st.ok()) return st;
  if (absl::Status st = CheckFields(clock["utc"], kClockUtcFields); !st.ok()) return st;
  absl::StatusOr<int64_t> offset =
      clock["utc"]["offsetSeconds"].Int(0, std::numeric_limits<int32_t>::min(),
                                        std::numeric_limits<int32_t>::max());
  if (!offset.ok()) return offset.status();
  if (*offset != 0) {
    return clock["utc"]["offsetSeconds"].Error("flint's RTC runs on the host's UTC; an offset is not supported");
  }

  const Node features = domain["features"];
  if (absl::Status st = CheckFields(features, kFeatureFields); !st.ok()) return st;
  for (std::string_view name : {"acpi", "apic", "smm"}) {
    const Node f = features[name];
    if (!f.present()) continue;
    if (absl::Status st = CheckFields(f, name == "apic" ? Table(kApicFields) : Table(kFeatureStateFields));
        !st.ok()) {
      return st;
    }
    // KubeVirt's FeatureState: present means enabled unless enabled: false.
    absl::StatusOr<bool> enabled = f["enabled"].Bool(true);
    if (!enabled.ok()) return enabled.status();
    if (name == "smm" && *enabled) return f.Error("flint has no System Management Mode");
    if (name != "smm" && !*enabled) {
      return f["enabled"].Error(absl::StrCat("flint always provides ", name == "acpi" ? "ACPI" : "the APIC",
                                             "; it cannot be turned off"));
    }
  }
  return RejectIfTrue(features["apic"]["endOfInterrupt"],
                      "flint does not offer the APIC EOI-broadcast suppression setting");
}

absl::StatusOr<std::string> KernelBootArtifact(const Node& n, const PodPaths& paths) {
  absl::StatusOr<std::string> p = n.RequiredString();
  if (!p.ok()) return p.status();
  const std::string base = p->substr(p->rfind('/') + 1);
  if (!IsPlainName(base)) return n.Error(absl::StrFormat("'%s' names no file", *p));
  return UnderRoot(paths, absl::StrCat(kKernelBootDir, "/", base));
}

absl::Status TranslateFirmware(const Node& domain, const PodPaths& paths, flint::v1::VmConfig* c) {
  const Node fw = domain["firmware"];
  if (absl::Status st = CheckFields(fw, kFirmwareFields); !st.ok()) return st;
  const Node kb = fw["kernelBoot"];
  if (!kb.present()) {
    return kb.Error(
        "is required: flint boots a kernel directly and has no BIOS or UEFI to boot a disk");
  }
  if (absl::Status st = CheckFields(kb, kKernelBootFields); !st.ok()) return st;
  absl::StatusOr<std::string> args = kb["kernelArgs"].String();
  if (!args.ok()) return args.status();
  // Unset keeps flint's default command line (a serial console).
  if (!args->empty()) c->set_cmdline(*args);
  const Node ct = kb["container"];
  if (absl::Status st = CheckFields(ct, kKernelContainerFields); !st.ok()) return st;
  if (!ct["kernelPath"].present()) {
    return ct["kernelPath"].Error(
        "flint boots a kernel directly and needs the kernel's path in the kernel-boot container");
  }
  absl::StatusOr<std::string> kernel = KernelBootArtifact(ct["kernelPath"], paths);
  if (!kernel.ok()) return kernel.status();
  c->set_kernel(*kernel);
  if (ct["initrdPath"].present()) {
    absl::StatusOr<std::string> initrd = KernelBootArtifact(ct["initrdPath"], paths);
    if (!initrd.ok()) return initrd.status();
    c->set_initrd(*initrd);
  }
  return absl::OkStatus();
}

// ---- disks and volumes ----

struct VolumeRef {
  Node node;
  int index;  // in spec.volumes
  bool used = false;
};

// The image path of a volume, and whether the volume itself is read-only.
struct VolumeImage {
  std::string path;
  bool readonly = false;
  bool container_disk = false;
};

absl::StatusOr<VolumeImage> ResolveVolume(const VolumeRef& ref, const std::string& name,
                                          const PodPaths& paths) {
  const Node& vol = ref.node;
  std::vector<std::string_view> sources;
  for (std::string_view s : kVolumeSources) {
    if (vol[s].present()) sources.push_back(s);
  }
  if (sources.size() != 1) {
    return vol.Error(sources.empty()
                         ? "names no volume source; flint-shim supports hostDisk, "
                           "persistentVolumeClaim, dataVolume and containerDisk"
                         : "names more than one volume source");
  }
  const Node src = vol[sources[0]];
  VolumeImage img;
  if (sources[0] == "hostDisk") {
    if (absl::Status st = CheckFields(src, kHostDiskFields); !st.ok()) return st;
    absl::StatusOr<std::string> p = src["path"].RequiredString();
    if (!p.ok()) return p.status();
    if (!IsCleanAbsolute(*p)) {
      return src["path"].Error(absl::StrFormat("'%s' is not an absolute path without '..'", *p));
    }
    absl::StatusOr<std::string> type = src["type"].String();
    if (!type.ok()) return type.status();
    if (*type == "DiskOrCreate") {
      return src["type"].Error(
          "flint-shim does not create disk images; create the image and use type Disk");
    }
    if (!type->empty() && *type != "Disk") {
      return src["type"].Error(absl::StrFormat("'%s' is not a hostDisk type (Disk)", *type));
    }
    if (absl::Status st = RejectIfTrue(src["shared"], "flint locks its images; shared host disks "
                                                      "are not supported");
        !st.ok()) {
      return st;
    }
    img.path = UnderRoot(paths, *p);
  } else if (sources[0] == "persistentVolumeClaim" || sources[0] == "dataVolume") {
    const bool pvc = sources[0] == "persistentVolumeClaim";
    if (absl::Status st = CheckFields(src, pvc ? Table(kPvcFields) : Table(kDataVolumeFields));
        !st.ok()) {
      return st;
    }
    if (absl::Status st = RejectIfTrue(src["hotpluggable"], "flint has no disk hotplug"); !st.ok()) {
      return st;
    }
    if (pvc) {
      absl::StatusOr<bool> ro = src["readOnly"].Bool();
      if (!ro.ok()) return ro.status();
      img.readonly = *ro;
    }
    // Block mode: the kubelet puts the device at /dev/<volume>; otherwise a
    // filesystem claim holding disk.img. (KubeVirt's launcher creates a
    // missing disk.img; flint-shim does not, and flint reports it missing.)
    const std::string block = UnderRoot(paths, absl::StrCat("/dev/", name));
    img.path = IsBlockDevice(block) ? block
                             : UnderRoot(paths, absl::StrCat(kPvcDiskDir, "/", name, "/disk.img"));
  } else {  // containerDisk
    if (absl::Status st = CheckFields(src, kContainerDiskFields); !st.ok()) return st;
    img.path = UnderRoot(paths, absl::StrCat(kContainerDiskDir, "/disk_", ref.index, ".img"));
    img.readonly = true;
    img.container_disk = true;
  }
  return img;
}

absl::Status TranslateDisks(const Node& spec, const Node& devices, const PodPaths& paths,
                            Translation* t) {
  flint::v1::VmConfig* c = &t->config;
  absl::StatusOr<std::vector<Node>> volumes = spec["volumes"].Items();
  if (!volumes.ok()) return volumes.status();
  std::map<std::string, VolumeRef> by_name;
  for (int i = 0; i < static_cast<int>(volumes->size()); ++i) {
    const Node& v = (*volumes)[i];
    if (absl::Status st = CheckFields(v, kVolumeFields); !st.ok()) return st;
    absl::StatusOr<std::string> name = v["name"].RequiredString();
    if (!name.ok()) return name.status();
    if (!IsPlainName(*name)) {
      return v["name"].Error(absl::StrFormat("'%s' cannot name a directory in the pod", *name));
    }
    if (!by_name.emplace(*name, VolumeRef{v, i}).second) {
      return v["name"].Error(absl::StrFormat("a second volume named '%s'", *name));
    }
  }

  absl::StatusOr<bool> multiqueue = devices["blockMultiQueue"].Bool();
  if (!multiqueue.ok()) return multiqueue.status();
  absl::StatusOr<std::vector<Node>> disks = devices["disks"].Items();
  if (!disks.ok()) return disks.status();
  std::vector<std::string> io_modes;
  for (const Node& d : *disks) {
    if (absl::Status st = CheckFields(d, kDiskFields); !st.ok()) return st;
    absl::StatusOr<std::string> name = d["name"].RequiredString();
    if (!name.ok()) return name.status();
    if (std::find(t->disk_names.begin(), t->disk_names.end(), *name) != t->disk_names.end()) {
      return d["name"].Error(absl::StrFormat("a second disk named '%s'", *name));
    }
    auto ref = by_name.find(*name);
    if (ref == by_name.end()) {
      return d["name"].Error(absl::StrFormat("no volume in spec.volumes is named '%s'", *name));
    }
    ref->second.used = true;

    const Node target = d["disk"];
    if (absl::Status st = CheckFields(target, kDiskTargetFields); !st.ok()) return st;
    absl::StatusOr<std::string> bus = target["bus"].String();
    if (!bus.ok()) return bus.status();
    if (!bus->empty() && *bus != "virtio") {
      return target["bus"].Error(absl::StrFormat("flint has virtio-blk disks only, not '%s'", *bus));
    }
    absl::StatusOr<bool> readonly = target["readonly"].Bool();
    if (!readonly.ok()) return readonly.status();

    flint::v1::Disk* disk = c->add_disks();
    absl::StatusOr<std::string> serial = d["serial"].String();
    if (!serial.ok()) return serial.status();
    if (serial->size() > kMaxDiskSerial) {
      return d["serial"].Error(absl::StrFormat("'%s' is longer than virtio-blk's %u bytes",
                                               *serial, kMaxDiskSerial));
    }
    for (char ch : *serial) {
      if (ch < 0x21 || ch > 0x7e) {
        return d["serial"].Error("only printable ASCII without spaces is allowed");
      }
    }
    disk->set_serial(*serial);

    absl::StatusOr<std::string> cache = d["cache"].String();
    if (!cache.ok()) return cache.status();
    // none: O_DIRECT. writeback and writethrough both use the page cache:
    // flint offers the guest a flush command, so a write-through request still
    // reaches the disk when the guest flushes. Unset: the page cache (KubeVirt
    // would probe for O_DIRECT support; flint-shim does not guess).
    if (*cache == "none") {
      disk->set_direct(true);
    } else if (!cache->empty() && *cache != "writethrough" && *cache != "writeback") {
      return d["cache"].Error(absl::StrFormat(
          "'%s' is not a cache mode (none, writethrough, writeback)", *cache));
    }
    absl::StatusOr<std::string> io = d["io"].String();
    if (!io.ok()) return io.status();
    if (!io->empty() && *io != "native" && *io != "threads") {
      return d["io"].Error(absl::StrFormat("'%s' is not an io mode (native, threads)", *io));
    }
    io_modes.push_back(*io == "threads" ? "threads" : "");
    if (absl::Status st = RejectIfTrue(d["shareable"], "flint locks its images; a disk cannot be "
                                                       "shared between VMs");
        !st.ok()) {
      return st;
    }
    absl::StatusOr<std::string> policy = d["errorPolicy"].String();
    if (!policy.ok()) return policy.status();
    if (!policy->empty() && *policy != "report") {
      return d["errorPolicy"].Error(absl::StrFormat(
          "flint reports I/O errors to the guest (report); it cannot '%s'", *policy));
    }

    absl::StatusOr<VolumeImage> img = ResolveVolume(ref->second, *name, paths);
    if (!img.ok()) return img.status();
    if (img->container_disk && !*readonly) {
      return target["readonly"].Error(
          "the disk's volume is a containerDisk: KubeVirt gives it a writable copy-on-write "
          "overlay, which flint (raw images only) does not have; mark the disk readonly: true");
    }
    if (IsQcow2(img->path)) {
      return ref->second.node.Error(absl::StrFormat(
          "%s is a qcow2 image; flint reads raw images only", img->path));
    }
    disk->set_path(img->path);
    disk->set_readonly(*readonly || img->readonly);
    if (*multiqueue && c->cpus() > 1) {
      disk->set_queues(std::min<uint32_t>(c->cpus(), kMaxDiskQueues));
    }
    t->disk_names.push_back(*name);
  }
  for (const auto& [name, ref] : by_name) {
    if (!ref.used) {
      return ref.node["name"].Error(absl::StrFormat(
          "no disk in spec.domain.devices.disks uses volume '%s'", name));
    }
  }
  // flint has one I/O engine per VM: "threads" only when every disk asks.
  if (std::count(io_modes.begin(), io_modes.end(), "threads") > 0) {
    for (size_t i = 0; i < io_modes.size(); ++i) {
      if (io_modes[i] != "threads") {
        return (*disks)[i]["io"].Error(
            "another disk asks for io: threads; flint runs one I/O engine per VM, so every disk "
            "must ask for threads or none");
      }
    }
    c->set_io_engine("threads");
  }
  return absl::OkStatus();
}

// ---- interfaces and networks ----

absl::Status TranslateInterfaces(const Node& spec, const Node& devices, const PodPaths& paths,
                                 Translation* t) {
  flint::v1::VmConfig* c = &t->config;
  absl::StatusOr<std::vector<Node>> networks = spec["networks"].Items();
  if (!networks.ok()) return networks.status();
  std::map<std::string, std::pair<Node, bool>> by_name;  // network, used
  int pod_networks = 0;
  for (const Node& n : *networks) {
    if (absl::Status st = CheckFields(n, kNetworkFields); !st.ok()) return st;
    absl::StatusOr<std::string> name = n["name"].RequiredString();
    if (!name.ok()) return name.status();
    if (!by_name.emplace(*name, std::make_pair(n, false)).second) {
      return n["name"].Error(absl::StrFormat("a second network named '%s'", *name));
    }
    if (!n["pod"].present()) {
      return n.Error("names no network; flint-shim serves the pod network only (pod: {})");
    }
    if (absl::Status st = CheckFields(n["pod"], kPodNetworkFields); !st.ok()) return st;
    if (++pod_networks > 1) return n["pod"].Error("a pod has one pod network; this is a second");
  }

  absl::StatusOr<bool> multiqueue = devices["networkInterfaceMultiqueue"].Bool();
  if (!multiqueue.ok()) return multiqueue.status();
  absl::StatusOr<std::vector<Node>> ifaces = devices["interfaces"].Items();
  if (!ifaces.ok()) return ifaces.status();
  for (const Node& i : *ifaces) {
    if (absl::Status st = CheckFields(i, kInterfaceFields); !st.ok()) return st;
    absl::StatusOr<std::string> name = i["name"].RequiredString();
    if (!name.ok()) return name.status();
    if (std::find(t->nic_names.begin(), t->nic_names.end(), *name) != t->nic_names.end()) {
      return i["name"].Error(absl::StrFormat("a second interface named '%s'", *name));
    }
    auto net = by_name.find(*name);
    if (net == by_name.end()) {
      return i["name"].Error(absl::StrFormat("no network in spec.networks is named '%s'", *name));
    }
    net->second.second = true;

    absl::StatusOr<std::string> model = i["model"].String();
    if (!model.ok()) return model.status();
    if (!model->empty() && *model != "virtio") {
      return i["model"].Error(absl::StrFormat("flint has virtio-net NICs only, not '%s'", *model));
    }
    absl::StatusOr<std::string> state = i["state"].String();
    if (!state.ok()) return state.status();
    if (!state->empty() && *state != "up") {
      return i["state"].Error(absl::StrFormat(
          "flint-shim brings every interface up; '%s' is not supported", *state));
    }

    std::vector<std::string_view> bindings;
    for (std::string_view b : {"passtBinding", "binding", "bridge", "masquerade"}) {
      if (i[b].present()) bindings.push_back(b);
    }
    if (bindings.size() != 1) {
      return i.Error(bindings.empty()
                         ? "names no binding; flint-shim supports passtBinding, binding: {name: "
                           "passt}, bridge and masquerade"
                         : "names more than one binding");
    }
    const Node binding = i[bindings[0]];
    if (bindings[0] == "binding") {
      if (absl::Status st = CheckFields(binding, kBindingPluginFields); !st.ok()) return st;
      absl::StatusOr<std::string> plugin = binding["name"].RequiredString();
      if (!plugin.ok()) return plugin.status();
      if (*plugin != "passt") {
        return binding["name"].Error(absl::StrFormat(
            "network binding plugin '%s' is not supported; flint-shim knows passt", *plugin));
      }
    } else if (absl::Status st = CheckFields(binding, Table()); !st.ok()) {  // {} only
      return st;
    }
    const bool passt = bindings[0] == "passtBinding" || bindings[0] == "binding";

    flint::v1::Nic* nic = c->add_nics();
    absl::StatusOr<std::string> mac = NormalizeMac(i["macAddress"]);
    if (!mac.ok()) return mac.status();
    nic->set_mac(*mac);

    absl::StatusOr<std::vector<Node>> ports = i["ports"].Items();
    if (!ports.ok()) return ports.status();
    if (!ports->empty() && bindings[0] == "bridge") {
      return i["ports"].Error("ports apply to masquerade and passt bindings, not bridge");
    }
    if (passt) nic->mutable_passt();  // the oneof case, also when no port is forwarded
    for (const Node& p : *ports) {
      if (absl::Status st = CheckFields(p, kPortFields); !st.ok()) return st;
      if (!p["port"].present()) return p["port"].Error("is required");
      absl::StatusOr<int64_t> port = p["port"].Int(0, 1, 65535);
      if (!port.ok()) return port.status();
      absl::StatusOr<std::string> proto = p["protocol"].String("TCP");
      if (!proto.ok()) return proto.status();
      if (*proto != "TCP" && *proto != "UDP") {
        return p["protocol"].Error(absl::StrFormat("'%s' is not TCP or UDP", *proto));
      }
      // masquerade: virt-handler's NAT rules forward these, nothing for the VMM.
      if (!passt) continue;
      (*proto == "TCP" ? nic->mutable_passt()->add_tcp() : nic->mutable_passt()->add_udp())
          ->assign(absl::StrCat(*port));
    }
    if (!passt) {
      // virt-handler prepares the pod network's TAP for bridge and masquerade.
      nic->mutable_tap()->set_name(paths.tap_prefix + "0");
      if (*multiqueue && c->cpus() > 1) {
        nic->mutable_tap()->set_queues(std::min<uint32_t>(c->cpus(), kMaxNicQueues));
      }
    }
    t->nic_names.push_back(*name);
  }
  for (const auto& [name, net] : by_name) {
    if (!net.second) {
      return net.first["name"].Error(absl::StrFormat(
          "no interface in spec.domain.devices.interfaces uses network '%s'", name));
    }
  }
  return absl::OkStatus();
}

absl::Status CheckSpecMisc(const Node& spec) {
  absl::StatusOr<std::string> arch = spec["architecture"].String();
  if (!arch.ok()) return arch.status();
  if (!arch->empty() && *arch != "amd64") {
    return spec["architecture"].Error(absl::StrFormat("flint runs amd64 guests only, not '%s'", *arch));
  }
  absl::StatusOr<std::string> start = spec["startStrategy"].String();
  if (!start.ok()) return start.status();
  if (!start->empty()) {
    return spec["startStrategy"].Error(absl::StrFormat(
        "'%s' is not supported; flint-shim starts the VM running", *start));
  }
  for (std::string_view probe : {"livenessProbe", "readinessProbe"}) {
    const Node p = spec[probe];
    if (absl::Status st = p.ExpectObjectOrAbsent(); !st.ok()) return st;
    for (std::string_view agent : {"exec", "guestAgentPing"}) {
      if (p[agent].present()) {
        return p[agent].Error("runs through the guest agent, which flint does not provide");
      }
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<VmiMeta> MetaFrom(const Node& root) {
  if (!root.is_object()) return root.Error("a VMI is a JSON object");
  VmiMeta meta;
  const Node md = root["metadata"];
  if (absl::Status st = md.ExpectObjectOrAbsent(); !st.ok()) return st;
  absl::StatusOr<std::string> uid = md["uid"].RequiredString();
  if (!uid.ok()) return uid.status();
  meta.uid = *uid;
  absl::StatusOr<std::string> name = md["name"].String();
  if (!name.ok()) return name.status();
  meta.name = *name;
  absl::StatusOr<std::string> ns = md["namespace"].String();
  if (!ns.ok()) return ns.status();
  meta.namespace_ = *ns;
  if (absl::Status st = md["annotations"].ExpectObjectOrAbsent(); !st.ok()) return st;
  absl::StatusOr<std::string> backend = md["annotations"]["flint.dev/backend"].String();
  if (!backend.ok()) return backend.status();
  meta.backend = *backend;
  if (absl::Status st = root["spec"].ExpectObjectOrAbsent(); !st.ok()) return st;
  absl::StatusOr<int64_t> grace = root["spec"]["terminationGracePeriodSeconds"].Int(
      absl::ToInt64Seconds(meta.grace), 0, std::numeric_limits<int32_t>::max());
  if (!grace.ok()) return grace.status();
  meta.grace = absl::Seconds(*grace);
  return meta;
}

}  // namespace

absl::StatusOr<uint64_t> ParseQuantity(std::string_view quantity) {
  return ParseScaledQuantity(quantity, /*round_up=*/false);
}

absl::StatusOr<VmiMeta> ReadVmiMeta(std::string_view vmi_json) {
  absl::StatusOr<google::protobuf::Value> doc = json::Parse(vmi_json, "the VMI");
  if (!doc.ok()) return doc.status();
  return MetaFrom(Node::Root(*doc));
}

absl::StatusOr<Translation> TranslateVmi(std::string_view vmi_json, const PodPaths& paths) {
  absl::StatusOr<google::protobuf::Value> doc = json::Parse(vmi_json, "the VMI");
  if (!doc.ok()) return doc.status();
  const Node root = Node::Root(*doc);
  absl::StatusOr<VmiMeta> meta = MetaFrom(root);
  if (!meta.ok()) return meta.status();
  if (absl::Status st = CheckFields(root, kTopFields); !st.ok()) return st;
  absl::StatusOr<std::string> api = root["apiVersion"].String();
  if (!api.ok()) return api.status();
  if (!api->empty() && !absl::StartsWith(*api, "kubevirt.io/")) {
    return root["apiVersion"].Error(absl::StrFormat("'%s' is not a KubeVirt API version", *api));
  }
  absl::StatusOr<std::string> kind = root["kind"].String();
  if (!kind.ok()) return kind.status();
  if (!kind->empty() && *kind != "VirtualMachineInstance") {
    return root["kind"].Error(absl::StrFormat("'%s' is not VirtualMachineInstance", *kind));
  }

  Translation t;
  t.meta = *meta;
  const Node spec = root["spec"];
  if (!spec.present()) return spec.Error("is required");
  if (absl::Status st = CheckFields(spec, kSpecFields); !st.ok()) return st;
  if (absl::Status st = CheckSpecMisc(spec); !st.ok()) return st;
  const Node domain = spec["domain"];
  if (!domain.present()) return domain.Error("is required");
  if (absl::Status st = CheckFields(domain, kDomainFields); !st.ok()) return st;
  if (absl::Status st = TranslateCpu(domain, &t.config); !st.ok()) return st;
  if (absl::Status st = TranslateMemory(domain, &t.config); !st.ok()) return st;
  if (absl::Status st = CheckMachineClockFeatures(domain); !st.ok()) return st;
  if (absl::Status st = TranslateFirmware(domain, paths, &t.config); !st.ok()) return st;

  const Node devices = domain["devices"];
  if (absl::Status st = CheckFields(devices, kDeviceFields); !st.ok()) return st;
  // Absent means "attach" for KubeVirt; accepted anyway, as every VMI
  // written without it would otherwise be refused (flint simply has none).
  for (const auto& [key, why] : std::initializer_list<std::pair<std::string_view, std::string_view>>{
           {"autoattachGraphicsDevice", "flint has no display device; set it to false"},
           {"autoattachInputDevice", "flint has no input devices; set it to false"},
           {"autoattachVSOCK", "flint has no virtio-vsock device"},
           {"useVirtioTransitional", "flint offers modern (virtio 1.0+) devices only"}}) {
    if (absl::Status st = RejectIfTrue(devices[key], why); !st.ok()) return st;
  }
  if (absl::Status st = TranslateDisks(spec, devices, paths, &t); !st.ok()) return st;
  if (absl::Status st = TranslateInterfaces(spec, devices, paths, &t); !st.ok()) return st;

  // Last, flint's own checks (the same parser `flint run --config` uses), so
  // what the shim hands to a backend is known to be something flint takes.
  std::string config_json;
  if (!google::protobuf::util::MessageToJsonString(t.config, &config_json).ok()) {
    return absl::InternalError("cannot write the translated configuration as JSON");
  }
  absl::StatusOr<std::vector<std::string>> options = ConfigJsonToOptions(config_json);
  if (!options.ok()) return options.status();
  std::vector<std::string> args = {"run"};
  args.insert(args.end(), options->begin(), options->end());
  absl::StatusOr<Command> cmd = ParseCommandLine(args);
  if (!cmd.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the VMI translates to a configuration flint refuses: ", cmd.status().message()));
  }
  return t;
}

}  // namespace flint::shim
