// KubeVirt VMI -> flint.v1.VmConfig: what is translated, and that every
// refusal names the VMI field (its JSON path) that caused it.
#include "k8s-shim/vmi.h"

#include <google/protobuf/util/json_util.h>
#include <google/protobuf/util/message_differencer.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/sysmacros.h>
#include <sys/stat.h>

#include <cstring>
#include <filesystem>
#include <ostream>
#include <fstream>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "agent-api/config_file.h"
#include "k8s-shim/json.h"
#include "vmm/cli.h"

namespace flint::shim {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;
using Edits = std::vector<std::pair<std::string, std::string>>;

// A small valid VMI: everything else in this file is an edit of it.
constexpr char kBase[] = R"({
  "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
  "metadata": {"name": "vm1", "namespace": "ns1", "uid": "6a3c4b8e-0000-4000-8000-000000000001"},
  "spec": {
    "domain": {
      "cpu": {"cores": 2},
      "memory": {"guest": "512Mi"},
      "firmware": {"kernelBoot": {"kernelArgs": "console=ttyS0",
                   "container": {"image": "registry/kernel:1", "kernelPath": "/boot/vmlinuz"}}},
      "devices": {
        "disks": [{"name": "root", "disk": {"bus": "virtio"}}],
        "interfaces": [{"name": "default", "passtBinding": {}}]
      }
    },
    "networks": [{"name": "default", "pod": {}}],
    "volumes": [{"name": "root", "hostDisk": {"path": "/images/root.img", "type": "Disk"}}]
  }
})";

constexpr char kDelete[] = "<delete>";

// Edits a JSON document: each edit sets the member at a path such as
// "spec.domain.devices.disks[0].disk.bus" to a JSON value (creating objects
// on the way), or removes it (kDelete).
std::string Patch(const std::string& json, const Edits& edits) {
  google::protobuf::Value doc;
  EXPECT_TRUE(google::protobuf::util::JsonStringToMessage(json, &doc).ok());
  for (const auto& [path, value] : edits) {
    struct Token {
      std::string name;
      int index = -1;
    };
    std::vector<Token> tokens;
    std::string cur;
    for (size_t i = 0; i < path.size(); ++i) {
      if (path[i] == '.' || path[i] == '[') {
        if (!cur.empty()) tokens.push_back({cur});
        cur.clear();
        if (path[i] == '[') {
          const size_t end = path.find(']', i);
          tokens.push_back({"", std::stoi(path.substr(i + 1, end - i - 1))});
          i = end;
        }
      } else {
        cur += path[i];
      }
    }
    if (!cur.empty()) tokens.push_back({cur});
    auto child = [](google::protobuf::Value* v, const Token& t) {
      if (t.index < 0) return &(*v->mutable_struct_value()->mutable_fields())[t.name];
      auto* list = v->mutable_list_value();
      while (list->values_size() <= t.index) list->add_values()->set_null_value({});
      return list->mutable_values(t.index);
    };
    google::protobuf::Value* parent = &doc;
    for (size_t i = 0; i + 1 < tokens.size(); ++i) parent = child(parent, tokens[i]);
    const Token& last = tokens.back();
    if (value == kDelete) {
      if (last.index < 0) {
        parent->mutable_struct_value()->mutable_fields()->erase(last.name);
      } else {
        parent->mutable_list_value()->mutable_values()->DeleteSubrange(last.index, 1);
      }
    } else {
      google::protobuf::Value v;
      EXPECT_TRUE(google::protobuf::util::JsonStringToMessage(value, &v).ok()) << value;
      *child(parent, last) = v;
    }
  }
  std::string out;
  EXPECT_TRUE(google::protobuf::util::MessageToJsonString(doc, &out).ok());
  return out;
}

std::string Text(const google::protobuf::Message& m) {
  std::string s;
  (void)google::protobuf::util::MessageToJsonString(m, &s);
  return s;
}

flint::v1::VmConfig Config(std::string_view json_text) {
  flint::v1::VmConfig c;
  EXPECT_TRUE(google::protobuf::util::JsonStringToMessage(
                  google::protobuf::StringPiece(json_text.data(), json_text.size()), &c)
                  .ok())
      << json_text;
  return c;
}

void ExpectConfig(const flint::v1::VmConfig& got, std::string_view want_json) {
  const flint::v1::VmConfig want = Config(want_json);
  EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(got, want))
      << "got:  " << Text(got) << "\nwant: " << Text(want);
}

// A pod root in a fresh temporary directory.
std::string MakeRoot() {
  std::string tmpl = ::testing::TempDir() + "/vmi_test_XXXXXX";
  EXPECT_NE(mkdtemp(tmpl.data()), nullptr);
  return tmpl;
}

void WriteFile(const std::string& path, std::string_view bytes) {
  std::filesystem::create_directories(std::filesystem::path(path).parent_path());
  std::ofstream(path, std::ios::binary) << bytes;
}

TEST(VmiTranslate, BaseVmi) {
  absl::StatusOr<Translation> t = TranslateVmi(kBase, PodPaths{});
  ASSERT_TRUE(t.ok()) << t.status();
  ExpectConfig(t->config, R"({
    "cpus": 2, "memoryMib": 512,
    "kernel": "/var/run/kubevirt/container-disks/kernel-boot/vmlinuz",
    "cmdline": "console=ttyS0",
    "disks": [{"path": "/images/root.img"}],
    "nics": [{"passt": {}}]
  })");
  EXPECT_EQ(t->disk_names, std::vector<std::string>{"root"});
  EXPECT_EQ(t->nic_names, std::vector<std::string>{"default"});
  EXPECT_EQ(t->meta.uid, "6a3c4b8e-0000-4000-8000-000000000001");
  EXPECT_EQ(t->meta.name, "vm1");
  EXPECT_EQ(t->meta.namespace_, "ns1");
  EXPECT_EQ(t->meta.backend, "");
  EXPECT_EQ(t->meta.grace, absl::Seconds(30));
}

// What `kubectl get vmi -o json` shows for a VMI made from a VM after
// KubeVirt's webhooks ran: defaults filled in, status and managedFields.
constexpr char kRealistic[] = R"({
    "apiVersion": "kubevirt.io/v1",
    "kind": "VirtualMachineInstance",
    "metadata": {
        "annotations": {
            "flint.dev/backend": "flint",
            "kubevirt.io/latest-observed-api-version": "v1",
            "kubevirt.io/storage-observed-api-version": "v1",
            "kubevirt.io/vm-generation": "1"
        },
        "creationTimestamp": "2025-11-03T09:14:27Z",
        "finalizers": ["kubevirt.io/virtualMachineControllerFinalize", "foregroundDeleteVirtualMachine"],
        "generation": 9,
        "labels": {"kubevirt.io/nodeName": "node-a", "kubevirt.io/vm": "web-1"},
        "managedFields": [
            {"apiVersion": "kubevirt.io/v1", "fieldsType": "FieldsV1",
             "fieldsV1": {"f:metadata": {"f:annotations": {".": {}, "f:kubevirt.io/vm-generation": {}}}},
             "manager": "virt-controller", "operation": "Update", "time": "2025-11-03T09:14:27Z"},
            {"apiVersion": "kubevirt.io/v1", "fieldsType": "FieldsV1",
             "fieldsV1": {"f:status": {"f:phase": {}}},
             "manager": "virt-handler", "operation": "Update", "subresource": "status",
             "time": "2025-11-03T09:14:31Z"}
        ],
        "name": "web-1",
        "namespace": "prod",
        "ownerReferences": [{"apiVersion": "kubevirt.io/v1", "blockOwnerDeletion": true,
                             "controller": true, "kind": "VirtualMachine", "name": "web-1",
                             "uid": "0b9c8a51-5f2e-4f4e-9d0e-1c2b3a4d5e6f"}],
        "resourceVersion": "184467",
        "uid": "f3e1d2c4-7b6a-4c59-8e1f-2a3b4c5d6e7f"
    },
    "spec": {
        "architecture": "amd64",
        "domain": {
            "cpu": {"cores": 2, "maxSockets": 4, "model": "host-model", "sockets": 1, "threads": 2},
            "devices": {
                "autoattachGraphicsDevice": false,
                "autoattachSerialConsole": true,
                "blockMultiQueue": true,
                "disks": [
                    {"disk": {"bus": "virtio"}, "name": "rootdisk", "cache": "none"},
                    {"disk": {"bus": "virtio"}, "name": "blockvol", "serial": "BLK-0001"},
                    {"disk": {"bus": "virtio", "readonly": true}, "name": "tools"},
                    {"disk": {"bus": "virtio"}, "name": "scratch", "dedicatedIOThread": true,
                     "errorPolicy": "report"}
                ],
                "interfaces": [
                    {"macAddress": "02:AB:cd:00:00:01", "model": "virtio", "name": "default",
                     "passtBinding": {},
                     "ports": [{"name": "ssh", "port": 22, "protocol": "TCP"},
                               {"name": "dns", "port": 53, "protocol": "UDP"},
                               {"port": 8080}]}
                ]
            },
            "features": {"acpi": {"enabled": true}},
            "firmware": {
                "kernelBoot": {
                    "container": {"image": "quay.io/example/kernel:6.6", "imagePullPolicy": "IfNotPresent",
                                  "initrdPath": "/boot/initramfs.img", "kernelPath": "/boot/vmlinuz"},
                    "kernelArgs": "console=ttyS0 root=/dev/vda rw"
                },
                "uuid": "5d0c6f1e-3b43-5a7e-9f8f-1d2e3c4b5a69"
            },
            "machine": {"type": "q35"},
            "memory": {"guest": "2Gi", "maxGuest": "8Gi"},
            "resources": {"limits": {"memory": "2432Mi"}, "requests": {"memory": "2Gi"}}
        },
        "evictionStrategy": "None",
        "networks": [{"name": "default", "pod": {}}],
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "terminationGracePeriodSeconds": 180,
        "tolerations": [{"effect": "NoExecute", "key": "node.kubernetes.io/unreachable",
                         "operator": "Exists", "tolerationSeconds": 300}],
        "volumes": [
            {"name": "rootdisk", "persistentVolumeClaim": {"claimName": "web-1-root"}},
            {"dataVolume": {"name": "web-1-block"}, "name": "blockvol"},
            {"containerDisk": {"image": "quay.io/example/tools:1", "imagePullPolicy": "IfNotPresent"},
             "name": "tools"},
            {"hostDisk": {"path": "/mnt/scratch/web-1.img", "type": "Disk", "capacity": "10Gi"},
             "name": "scratch"}
        ]
    },
    "status": {
        "activePods": {"9a8b7c6d-1111-2222-3333-444455556666": "node-a"},
        "conditions": [{"lastProbeTime": null, "lastTransitionTime": "2025-11-03T09:14:31Z",
                        "status": "True", "type": "Ready"}],
        "currentCPUTopology": {"cores": 2, "sockets": 1, "threads": 2},
        "guestOSInfo": {},
        "launcherContainerImageVersion": "quay.io/kubevirt/virt-launcher:v1.8.0",
        "memory": {"guestAtBoot": "2Gi", "guestCurrent": "2Gi", "guestRequested": "2Gi"},
        "migrationMethod": "BlockMigration",
        "nodeName": "node-a",
        "phase": "Running",
        "qosClass": "Burstable",
        "volumeStatus": [{"name": "rootdisk", "target": ""}]
    }
})";

TEST(VmiTranslate, RealisticVmiFromKubectl) {
  const std::string root = MakeRoot();
  // blockvol is a block-mode claim: its device node exists in the pod (a
  // node for the loop0 device numbers; nothing opens it).
  std::filesystem::create_directories(root + "/dev");
  if (mknod((root + "/dev/blockvol").c_str(), S_IFBLK | 0600, makedev(7, 0)) != 0) {
    GTEST_SKIP() << "mknod of a block device node needs root (CAP_MKNOD): " << strerror(errno);
  }
  PodPaths paths;
  paths.root = root + "/";  // a trailing slash must not double up
  absl::StatusOr<Translation> t = TranslateVmi(kRealistic, paths);
  ASSERT_TRUE(t.ok()) << t.status();
  ExpectConfig(t->config, absl::StrCat(R"({
    "cpus": 4, "memoryMib": 2048,
    "kernel": ")", root, R"(/var/run/kubevirt/container-disks/kernel-boot/vmlinuz",
    "initrd": ")", root, R"(/var/run/kubevirt/container-disks/kernel-boot/initramfs.img",
    "cmdline": "console=ttyS0 root=/dev/vda rw",
    "disks": [
      {"path": ")", root, R"(/var/run/kubevirt-private/vmi-disks/rootdisk/disk.img",
       "direct": true, "queues": 4},
      {"path": ")", root, R"(/dev/blockvol", "serial": "BLK-0001", "queues": 4},
      {"path": ")", root, R"(/var/run/kubevirt/container-disks/disk_2.img", "readonly": true,
       "queues": 4},
      {"path": ")", root, R"(/mnt/scratch/web-1.img", "queues": 4}
    ],
    "nics": [{"passt": {"tcp": ["22", "8080"], "udp": ["53"]}, "mac": "02:ab:cd:00:00:01"}]
  })"));
  EXPECT_EQ(t->disk_names, (std::vector<std::string>{"rootdisk", "blockvol", "tools", "scratch"}));
  EXPECT_EQ(t->nic_names, std::vector<std::string>{"default"});
  EXPECT_EQ(t->meta.uid, "f3e1d2c4-7b6a-4c59-8e1f-2a3b4c5d6e7f");
  EXPECT_EQ(t->meta.name, "web-1");
  EXPECT_EQ(t->meta.namespace_, "prod");
  EXPECT_EQ(t->meta.backend, "flint");
  EXPECT_EQ(t->meta.grace, absl::Seconds(180));

  // And flint's own command-line parser takes the result as it is.
  absl::StatusOr<std::vector<std::string>> opts = ConfigJsonToOptions(Text(t->config));
  ASSERT_TRUE(opts.ok()) << opts.status();
  std::vector<std::string> args = {"run"};
  args.insert(args.end(), opts->begin(), opts->end());
  absl::StatusOr<Command> cmd = ParseCommandLine(args);
  ASSERT_TRUE(cmd.ok()) << cmd.status();
  ASSERT_EQ(cmd->run.disks.size(), 4u);
  EXPECT_TRUE(cmd->run.disks[0].direct);
  EXPECT_TRUE(cmd->run.disks[2].readonly);
  ASSERT_EQ(cmd->run.nics.size(), 1u);
  EXPECT_EQ(cmd->run.nics[0].mac, (std::array<uint8_t, 6>{0x02, 0xab, 0xcd, 0, 0, 1}));
  std::filesystem::remove_all(root);
}

TEST(VmiTranslate, DeeplyNestedJsonIsRefusedQuicklyByDepth) {
  // 20,000 levels took protobuf's parser ~16 s: the depth check refuses it
  // before parsing, naming the limit.
  std::string deep = "{\"metadata\": {\"uid\": \"u\"}, \"x\": ";
  deep += std::string(20000, '[') + std::string(20000, ']') + "}";
  absl::StatusOr<Translation> t = TranslateVmi(deep, PodPaths{});
  ASSERT_FALSE(t.ok());
  EXPECT_THAT(std::string(t.status().message()), HasSubstr("more than 32 levels deep"));
  absl::StatusOr<VmiMeta> m = ReadVmiMeta(deep);
  ASSERT_FALSE(m.ok());
  EXPECT_THAT(std::string(m.status().message()), HasSubstr("levels deep"));
}

TEST(VmiTranslate, BracketsInsideStringsDoNotCountAsNesting) {
  // A kernel command line full of brackets and escaped quotes is one string.
  std::string args(200, '[');
  args += "\\\" {{{";
  absl::StatusOr<VmiMeta> m =
      ReadVmiMeta("{\"metadata\": {\"uid\": \"u1\", \"name\": \"" + args + "\"}}");
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->uid, "u1");
}

TEST(VmiTranslate, OnlyABlockDeviceStandsForABlockModeClaim) {
  // A claim named "null" must not become the pod's /dev/null (or a volume
  // named "kvm" its /dev/kvm): anything but a block device there means the
  // claim is a filesystem holding disk.img.
  const std::string root = MakeRoot();
  WriteFile(root + "/dev/null", "");
  PodPaths paths;
  paths.root = root;
  absl::StatusOr<Translation> t = TranslateVmi(
      Patch(kBase, {{"spec.volumes[0]", R"({"name": "null", "persistentVolumeClaim": {"claimName": "c"}})"},
                    {"spec.domain.devices.disks[0].name", R"("null")"}}),
      paths);
  ASSERT_TRUE(t.ok()) << t.status();
  ASSERT_GE(t->config.disks_size(), 1);
  EXPECT_EQ(t->config.disks(0).path(), root + "/var/run/kubevirt-private/vmi-disks/null/disk.img");
  std::filesystem::remove_all(root);
}

TEST(VmiTranslate, SameJsonSameConfig) {
  absl::StatusOr<Translation> a = TranslateVmi(kRealistic, PodPaths{});
  absl::StatusOr<Translation> b = TranslateVmi(kRealistic, PodPaths{});
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->config.SerializeAsString(), b->config.SerializeAsString());
  EXPECT_EQ(a->disk_names, b->disk_names);
  EXPECT_EQ(a->nic_names, b->nic_names);
}

TEST(VmiTranslate, StatusAndMetadataNoiseDoNotChangeTheConfig) {
  absl::StatusOr<Translation> a = TranslateVmi(kRealistic, PodPaths{});
  absl::StatusOr<Translation> b = TranslateVmi(
      Patch(kRealistic, {{"status.phase", R"("Succeeded")"},
                         {"status.conditions", "[]"},
                         {"metadata.resourceVersion", R"("999999")"},
                         {"metadata.managedFields", kDelete},
                         {"metadata.labels.extra", R"("x")"}}),
      PodPaths{});
  ASSERT_TRUE(a.ok() && b.ok()) << b.status();
  EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(a->config, b->config));
}

TEST(VmiTranslate, KeyOrderAndWhitespaceDoNotMatter) {
  // kBase with every object's members in another order, on one line.
  const std::string reordered =
      R"({"spec":{"volumes":[{"hostDisk":{"type":"Disk","path":"/images/root.img"},"name":"root"}],)"
      R"("networks":[{"pod":{},"name":"default"}],"domain":{"devices":{"interfaces":[{"passtBinding":{},)"
      R"("name":"default"}],"disks":[{"disk":{"bus":"virtio"},"name":"root"}]},"firmware":{"kernelBoot":)"
      R"({"container":{"kernelPath":"/boot/vmlinuz","image":"registry/kernel:1"},"kernelArgs":)"
      R"("console=ttyS0"}},"memory":{"guest":"512Mi"},"cpu":{"cores":2}}},"metadata":{"uid":)"
      R"("6a3c4b8e-0000-4000-8000-000000000001","namespace":"ns1","name":"vm1"},"kind":)"
      R"("VirtualMachineInstance","apiVersion":"kubevirt.io/v1"})";
  absl::StatusOr<Translation> a = TranslateVmi(kBase, PodPaths{});
  absl::StatusOr<Translation> b = TranslateVmi(reordered, PodPaths{});
  ASSERT_TRUE(a.ok() && b.ok()) << b.status();
  EXPECT_EQ(a->config.SerializeAsString(), b->config.SerializeAsString());
}

TEST(VmiTranslate, MasqueradeAndBridgeUseThePodTap) {
  PodPaths paths;
  paths.tap_prefix = "ftap";
  for (const char* binding : {"masquerade", "bridge"}) {
    absl::StatusOr<Translation> t = TranslateVmi(
        Patch(kBase, {{"spec.domain.devices.interfaces[0].passtBinding", kDelete},
                      {std::string("spec.domain.devices.interfaces[0].") + binding, "{}"}}),
        paths);
    ASSERT_TRUE(t.ok()) << t.status();
    ASSERT_EQ(t->config.nics_size(), 1);
    EXPECT_EQ(t->config.nics(0).tap().name(), "ftap0") << binding;
    EXPECT_EQ(t->config.nics(0).tap().queues(), 0u);
  }
}

TEST(VmiTranslate, MasqueradePortsAreTheClustersAndMultiqueueSetsTapQueues) {
  absl::StatusOr<Translation> t = TranslateVmi(
      Patch(kBase, {{"spec.domain.devices.interfaces[0].passtBinding", kDelete},
                    {"spec.domain.devices.interfaces[0].masquerade", "{}"},
                    {"spec.domain.devices.interfaces[0].ports", R"([{"port": 80}])"},
                    {"spec.domain.devices.networkInterfaceMultiqueue", "true"},
                    {"spec.domain.cpu.cores", "12"}}),
      PodPaths{});
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->config.nics(0).tap().name(), "tap0");
  EXPECT_EQ(t->config.nics(0).tap().queues(), 8u);  // flint's maximum
}

TEST(VmiTranslate, PasstBindingPluginForm) {
  absl::StatusOr<Translation> t = TranslateVmi(
      Patch(kBase, {{"spec.domain.devices.interfaces[0].passtBinding", kDelete},
                    {"spec.domain.devices.interfaces[0].binding", R"({"name": "passt"})"},
                    {"spec.domain.devices.interfaces[0].ports",
                     R"([{"port": 443}, {"port": 5353, "protocol": "UDP"}])"}}),
      PodPaths{});
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_THAT(t->config.nics(0).passt().tcp(), ::testing::ElementsAre("443"));
  EXPECT_THAT(t->config.nics(0).passt().udp(), ::testing::ElementsAre("5353"));
}

TEST(VmiTranslate, NoInterfacesNoNics) {
  absl::StatusOr<Translation> t = TranslateVmi(
      Patch(kBase, {{"spec.domain.devices.interfaces", kDelete}, {"spec.networks", kDelete}}),
      PodPaths{});
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->config.nics_size(), 0);
  EXPECT_TRUE(t->nic_names.empty());
}

TEST(VmiTranslate, VcpusFromTopologyOrResources) {
  struct Case {
    Edits edits;
    uint32_t cpus;
  };
  const std::vector<Case> cases = {
      {{{"spec.domain.cpu", R"({"sockets": 2, "cores": 3, "threads": 2})"}}, 12},
      {{{"spec.domain.cpu", R"({"threads": 2})"}}, 2},
      {{{"spec.domain.cpu", R"({"model": "host-passthrough"})"}}, 1},
      {{{"spec.domain.cpu", kDelete}, {"spec.domain.resources.requests.cpu", R"("1500m")"}}, 2},
      {{{"spec.domain.cpu", kDelete},
        {"spec.domain.resources.requests.cpu", R"("1")"},
        {"spec.domain.resources.limits.cpu", "3"}},
       3},
      {{{"spec.domain.cpu", R"({"sockets": 254})"}}, 254},
  };
  for (const Case& c : cases) {
    absl::StatusOr<Translation> t = TranslateVmi(Patch(kBase, c.edits), PodPaths{});
    ASSERT_TRUE(t.ok()) << t.status();
    EXPECT_EQ(t->config.cpus(), c.cpus) << c.edits[0].second;
  }
}

TEST(VmiTranslate, MemoryFromGuestOrResources) {
  absl::StatusOr<Translation> t = TranslateVmi(
      Patch(kBase, {{"spec.domain.memory", kDelete},
                    {"spec.domain.resources.requests.memory", R"("1.5Gi")"},
                    {"spec.domain.resources.limits.memory", R"("4Gi")"}}),
      PodPaths{});
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->config.memory_mib(), 1536u);
  EXPECT_EQ(t->config.memory_backing(), "");
  // memory.guest wins over the request.
  t = TranslateVmi(Patch(kBase, {{"spec.domain.resources.requests.memory", R"("1Gi")"}}),
                   PodPaths{});
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->config.memory_mib(), 512u);
}

TEST(VmiTranslate, TwoMiHugepagesBackWithHugetlb) {
  absl::StatusOr<Translation> t = TranslateVmi(
      Patch(kBase, {{"spec.domain.memory.hugepages", R"({"pageSize": "2Mi"})"}}), PodPaths{});
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->config.memory_backing(), "hugetlb");
}

TEST(VmiTranslate, CacheAndIoModes) {
  absl::StatusOr<Translation> t = TranslateVmi(
      Patch(kBase, {{"spec.domain.devices.disks[0].cache", R"("writethrough")"},
                    {"spec.domain.devices.disks[0].io", R"("threads")"}}),
      PodPaths{});
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_FALSE(t->config.disks(0).direct());
  EXPECT_EQ(t->config.io_engine(), "threads");
  t = TranslateVmi(Patch(kBase, {{"spec.domain.devices.disks[0].io", R"("native")"}}), PodPaths{});
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->config.io_engine(), "");
}

TEST(VmiTranslate, ReadOnlyClaimMakesAReadOnlyDisk) {
  absl::StatusOr<Translation> t = TranslateVmi(
      Patch(kBase, {{"spec.volumes[0].hostDisk", kDelete},
                    {"spec.volumes[0].persistentVolumeClaim",
                     R"({"claimName": "c", "readOnly": true})"}}),
      PodPaths{});
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_TRUE(t->config.disks(0).readonly());
  EXPECT_EQ(t->config.disks(0).path(), "/var/run/kubevirt-private/vmi-disks/root/disk.img");
}

TEST(VmiTranslate, NoKernelArgsKeepsFlintsDefaultCommandLine) {
  absl::StatusOr<Translation> t = TranslateVmi(
      Patch(kBase, {{"spec.domain.firmware.kernelBoot.kernelArgs", kDelete}}), PodPaths{});
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_FALSE(t->config.has_cmdline());
}

TEST(VmiTranslate, NullMeansAbsent) {
  absl::StatusOr<Translation> t = TranslateVmi(
      Patch(kBase, {{"spec.domain.devices.rng", "null"}, {"spec.domain.cpu.model", "null"}}),
      PodPaths{});
  ASSERT_TRUE(t.ok()) << t.status();
}

TEST(VmiTranslate, Qcow2ImageIsRefused) {
  const std::string root = MakeRoot();
  WriteFile(root + "/images/root.img", std::string("QFI\xfb\0\0\0\3", 8));
  PodPaths paths;
  paths.root = root;
  absl::StatusOr<Translation> t = TranslateVmi(kBase, paths);
  ASSERT_FALSE(t.ok());
  EXPECT_THAT(std::string(t.status().message()), StartsWith("spec.volumes[0]:"));
  EXPECT_THAT(std::string(t.status().message()), HasSubstr("qcow2"));
  // A raw image at the same place is fine.
  WriteFile(root + "/images/root.img", std::string(512, '\0'));
  EXPECT_TRUE(TranslateVmi(kBase, paths).ok());
  std::filesystem::remove_all(root);
}

TEST(VmiTranslate, FlintsOwnChecksRunLast) {
  // Two volumes on one image: each is fine alone, flint refuses the pair.
  absl::StatusOr<Translation> t = TranslateVmi(
      Patch(kBase, {{"spec.domain.devices.disks[1]", R"({"name": "again"})"},
                    {"spec.volumes[1]", R"({"name": "again", "hostDisk": {"path": "/images/root.img"}})"}}),
      PodPaths{});
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(t.status().message()),
              HasSubstr("the VMI translates to a configuration flint refuses"));
  EXPECT_THAT(std::string(t.status().message()), HasSubstr("/images/root.img"));
}

// ---- Every refusal names the field ----

struct Refusal {
  std::string name;
  Edits edits;
  std::string path;        // the message starts with "PATH:"
  std::string words = "";  // and says this
};

// gtest prints a failing parameter with this (instead of its bytes).
void PrintTo(const Refusal& r, std::ostream* os) { *os << r.name; }

class VmiRefusal : public ::testing::TestWithParam<Refusal> {};

TEST_P(VmiRefusal, NamesTheField) {
  const Refusal& r = GetParam();
  absl::StatusOr<Translation> t = TranslateVmi(Patch(kBase, r.edits), PodPaths{});
  ASSERT_FALSE(t.ok()) << "accepted: " << Patch(kBase, r.edits);
  EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument);
  const std::string msg(t.status().message());
  EXPECT_THAT(msg, StartsWith(r.path + ":"));
  EXPECT_THAT(msg, HasSubstr(r.words));
}

const std::string kDisk0 = "spec.domain.devices.disks[0]";
const std::string kIface0 = "spec.domain.devices.interfaces[0]";
const std::string kDev = "spec.domain.devices";
const std::string kContainer = "spec.domain.firmware.kernelBoot.container";

INSTANTIATE_TEST_SUITE_P(
    Vmi, VmiRefusal,
    ::testing::Values(
        // identity and document shape
        Refusal{"NoUid", {{"metadata.uid", kDelete}}, "metadata.uid", "required"},
        Refusal{"UidNotString", {{"metadata.uid", "7"}}, "metadata.uid", "a string"},
        Refusal{"NotAVmi", {{"kind", R"("Pod")"}}, "kind"},
        Refusal{"NotKubeVirtApi", {{"apiVersion", R"("v1")"}}, "apiVersion"},
        Refusal{"NoSpec", {{"spec", kDelete}}, "spec", "required"},
        Refusal{"NoDomain", {{"spec.domain", kDelete}}, "spec.domain", "required"},
        Refusal{"UnknownTopLevel", {{"frob", "1"}}, "frob", "unknown field"},
        Refusal{"NegativeGrace", {{"spec.terminationGracePeriodSeconds", "-1"}},
                "spec.terminationGracePeriodSeconds"},
        Refusal{"FractionalGrace", {{"spec.terminationGracePeriodSeconds", "1.5"}},
                "spec.terminationGracePeriodSeconds", "whole number"},
        Refusal{"DisksNotAnArray", {{kDev + ".disks", "{}"}}, kDev + ".disks", "an array"},
        // spec
        Refusal{"UnknownSpecField", {{"spec.frobnicate", "true"}}, "spec.frobnicate", "unknown"},
        Refusal{"AccessCredentials", {{"spec.accessCredentials", "[{}]"}}, "spec.accessCredentials"},
        Refusal{"ResourceClaims", {{"spec.resourceClaims", "[{}]"}}, "spec.resourceClaims"},
        Refusal{"StartPaused", {{"spec.startStrategy", R"("Paused")"}}, "spec.startStrategy"},
        Refusal{"Arm64", {{"spec.architecture", R"("arm64")"}}, "spec.architecture", "amd64"},
        Refusal{"ExecProbe", {{"spec.readinessProbe.exec", R"({"command": ["true"]})"}},
                "spec.readinessProbe.exec", "guest agent"},
        Refusal{"GuestAgentPing", {{"spec.livenessProbe.guestAgentPing", "{}"}},
                "spec.livenessProbe.guestAgentPing"},
        // spec.domain
        Refusal{"UnknownDomainField", {{"spec.domain.frob", "{}"}}, "spec.domain.frob"},
        Refusal{"Chassis", {{"spec.domain.chassis", R"({"asset": "x"})"}}, "spec.domain.chassis"},
        Refusal{"LaunchSecurity", {{"spec.domain.launchSecurity", R"({"sev": {}})"}},
                "spec.domain.launchSecurity"},
        Refusal{"NamedCpuModel", {{"spec.domain.cpu.model", R"("Skylake-Server")"}},
                "spec.domain.cpu.model", "Skylake-Server"},
        Refusal{"DedicatedCpus", {{"spec.domain.cpu.dedicatedCpuPlacement", "true"}},
                "spec.domain.cpu.dedicatedCpuPlacement"},
        Refusal{"IsolateEmulatorThread", {{"spec.domain.cpu.isolateEmulatorThread", "true"}},
                "spec.domain.cpu.isolateEmulatorThread"},
        Refusal{"CpuFeatures", {{"spec.domain.cpu.features", R"([{"name": "vmx"}])"}},
                "spec.domain.cpu.features"},
        Refusal{"Numa", {{"spec.domain.cpu.numa", R"({"guestMappingPassthrough": {}})"}},
                "spec.domain.cpu.numa"},
        Refusal{"Realtime", {{"spec.domain.cpu.realtime", "{}"}}, "spec.domain.cpu.realtime"},
        Refusal{"TooManyVcpus", {{"spec.domain.cpu.sockets", "2"}, {"spec.domain.cpu.cores", "128"}},
                "spec.domain.cpu", "256 vCPUs"},
        Refusal{"TooManyVcpusFromRequest",
                {{"spec.domain.cpu", kDelete}, {"spec.domain.resources.requests.cpu", R"("300")"}},
                "spec.domain.resources.requests.cpu", "300 vCPUs"},
        Refusal{"CoresAsString", {{"spec.domain.cpu.cores", R"("2")"}}, "spec.domain.cpu.cores"},
        Refusal{"NoMemorySize", {{"spec.domain.memory", kDelete}}, "spec.domain.memory.guest"},
        Refusal{"MemoryNotWholeMiB", {{"spec.domain.memory.guest", R"("1G")"}},
                "spec.domain.memory.guest", "MiB"},
        Refusal{"MemoryTooSmall", {{"spec.domain.memory.guest", R"("4Mi")"}},
                "spec.domain.memory.guest", "range"},
        Refusal{"MemoryNotAQuantity", {{"spec.domain.memory.guest", R"("lots")"}},
                "spec.domain.memory.guest"},
        Refusal{"RequestMemoryNotAQuantity",
                {{"spec.domain.memory", kDelete},
                 {"spec.domain.resources.requests.memory", R"("2 GB")"}},
                "spec.domain.resources.requests.memory"},
        Refusal{"Hugepages1Gi", {{"spec.domain.memory.hugepages.pageSize", R"("1Gi")"}},
                "spec.domain.memory.hugepages.pageSize", "2Mi"},
        Refusal{"HugepagesOddSize",
                {{"spec.domain.memory.hugepages.pageSize", R"("2Mi")"},
                 {"spec.domain.memory.guest", R"("513Mi")"}},
                "spec.domain.memory.guest", "2Mi"},
        Refusal{"UnknownMemoryField", {{"spec.domain.memory.balloon", "true"}},
                "spec.domain.memory.balloon"},
        Refusal{"UnknownResourcesField", {{"spec.domain.resources.frob", "true"}},
                "spec.domain.resources.frob"},
        Refusal{"I440fxMachine", {{"spec.domain.machine.type", R"("pc-i440fx-2.12")"}},
                "spec.domain.machine.type"},
        Refusal{"ClockTimezone", {{"spec.domain.clock.timezone", R"("Europe/Berlin")"}},
                "spec.domain.clock.timezone"},
        Refusal{"ClockTimer", {{"spec.domain.clock.timer", R"({"hpet": {}})"}},
                "spec.domain.clock.timer"},
        Refusal{"ClockOffset", {{"spec.domain.clock.utc.offsetSeconds", "3600"}},
                "spec.domain.clock.utc.offsetSeconds"},
        Refusal{"Hyperv", {{"spec.domain.features.hyperv", R"({"relaxed": {}})"}},
                "spec.domain.features.hyperv"},
        Refusal{"KvmHidden", {{"spec.domain.features.kvm", R"({"hidden": true})"}},
                "spec.domain.features.kvm"},
        Refusal{"Smm", {{"spec.domain.features.smm", "{}"}}, "spec.domain.features.smm"},
        Refusal{"AcpiOff", {{"spec.domain.features.acpi.enabled", "false"}},
                "spec.domain.features.acpi.enabled"},
        Refusal{"ApicEoi", {{"spec.domain.features.apic.endOfInterrupt", "true"}},
                "spec.domain.features.apic.endOfInterrupt"},
        // firmware
        Refusal{"NoKernelBoot", {{"spec.domain.firmware.kernelBoot", kDelete}},
                "spec.domain.firmware.kernelBoot", "kernelBoot"},
        Refusal{"NoFirmware", {{"spec.domain.firmware", kDelete}},
                "spec.domain.firmware.kernelBoot"},
        Refusal{"Efi", {{"spec.domain.firmware.bootloader", R"({"efi": {}})"}},
                "spec.domain.firmware.bootloader"},
        Refusal{"Bios", {{"spec.domain.firmware.bootloader", R"({"bios": {}})"}},
                "spec.domain.firmware.bootloader"},
        Refusal{"FirmwareSerial", {{"spec.domain.firmware.serial", R"("S1")"}},
                "spec.domain.firmware.serial"},
        Refusal{"FirmwareAcpi", {{"spec.domain.firmware.acpi", R"({"slicNameRef": "v"})"}},
                "spec.domain.firmware.acpi"},
        Refusal{"NoKernelPath", {{kContainer + ".kernelPath", kDelete}}, kContainer + ".kernelPath"},
        Refusal{"KernelPathNoFile", {{kContainer + ".kernelPath", R"("/boot/")"}},
                kContainer + ".kernelPath"},
        Refusal{"InitrdPathDotDot", {{kContainer + ".initrdPath", R"("/boot/..")"}},
                kContainer + ".initrdPath"},
        Refusal{"UnknownContainerField", {{kContainer + ".args", "[]"}}, kContainer + ".args"},
        // devices
        Refusal{"UnknownDevice", {{kDev + ".frobnicator", "true"}}, kDev + ".frobnicator"},
        Refusal{"Rng", {{kDev + ".rng", "{}"}}, kDev + ".rng"},
        Refusal{"Watchdog", {{kDev + ".watchdog", R"({"name": "w"})"}}, kDev + ".watchdog"},
        Refusal{"Inputs", {{kDev + ".inputs", R"([{"type": "tablet"}])"}}, kDev + ".inputs"},
        Refusal{"Gpus", {{kDev + ".gpus", R"([{"name": "g"}])"}}, kDev + ".gpus"},
        Refusal{"HostDevices", {{kDev + ".hostDevices", R"([{"name": "h"}])"}}, kDev + ".hostDevices"},
        Refusal{"Filesystems", {{kDev + ".filesystems", R"([{"name": "f"}])"}}, kDev + ".filesystems"},
        Refusal{"Tpm", {{kDev + ".tpm", "{}"}}, kDev + ".tpm"},
        Refusal{"Sound", {{kDev + ".sound", R"({"name": "s"})"}}, kDev + ".sound"},
        Refusal{"Video", {{kDev + ".video", R"({"type": "vga"})"}}, kDev + ".video"},
        Refusal{"ClientPassthrough", {{kDev + ".clientPassthrough", "{}"}},
                kDev + ".clientPassthrough"},
        Refusal{"DownwardMetricsDevice", {{kDev + ".downwardMetrics", "{}"}},
                kDev + ".downwardMetrics"},
        Refusal{"GraphicsDevice", {{kDev + ".autoattachGraphicsDevice", "true"}},
                kDev + ".autoattachGraphicsDevice"},
        Refusal{"InputDevice", {{kDev + ".autoattachInputDevice", "true"}},
                kDev + ".autoattachInputDevice"},
        Refusal{"Vsock", {{kDev + ".autoattachVSOCK", "true"}}, kDev + ".autoattachVSOCK"},
        Refusal{"VirtioTransitional", {{kDev + ".useVirtioTransitional", "true"}},
                kDev + ".useVirtioTransitional"},
        // disks
        Refusal{"SataBus", {{kDisk0 + ".disk.bus", R"("sata")"}}, kDisk0 + ".disk.bus", "sata"},
        Refusal{"Lun", {{kDisk0 + ".disk", kDelete}, {kDisk0 + ".lun", "{}"}}, kDisk0 + ".lun"},
        Refusal{"Cdrom", {{kDisk0 + ".disk", kDelete}, {kDisk0 + ".cdrom", "{}"}}, kDisk0 + ".cdrom"},
        Refusal{"DiskBootOrder", {{kDisk0 + ".bootOrder", "1"}}, kDisk0 + ".bootOrder"},
        Refusal{"DiskPciAddress", {{kDisk0 + ".disk.pciAddress", R"("0000:00:05.0")"}},
                kDisk0 + ".disk.pciAddress"},
        Refusal{"Shareable", {{kDisk0 + ".shareable", "true"}}, kDisk0 + ".shareable"},
        Refusal{"ErrorPolicyStop", {{kDisk0 + ".errorPolicy", R"("stop")"}}, kDisk0 + ".errorPolicy"},
        Refusal{"UnsafeCache", {{kDisk0 + ".cache", R"("unsafe")"}}, kDisk0 + ".cache"},
        Refusal{"IoUring", {{kDisk0 + ".io", R"("io_uring")"}}, kDisk0 + ".io"},
        Refusal{"BlockSize", {{kDisk0 + ".blockSize", R"({"custom": {"logical": 4096}})"}},
                kDisk0 + ".blockSize"},
        Refusal{"DiskTag", {{kDisk0 + ".tag", R"("boot")"}}, kDisk0 + ".tag"},
        Refusal{"SerialTooLong", {{kDisk0 + ".serial", R"("ABCDEFGHIJKLMNOPQRSTU")"}},
                kDisk0 + ".serial", "20 bytes"},
        Refusal{"SerialWithSpace", {{kDisk0 + ".serial", R"("A B")"}}, kDisk0 + ".serial"},
        Refusal{"UnknownDiskField", {{kDisk0 + ".frob", "1"}}, kDisk0 + ".frob"},
        Refusal{"DiskWithoutVolume",
                {{"spec.domain.devices.disks[1]", R"({"name": "extra"})"}},
                "spec.domain.devices.disks[1].name", "no volume"},
        Refusal{"DuplicateDisk", {{"spec.domain.devices.disks[1]", R"({"name": "root"})"}},
                "spec.domain.devices.disks[1].name", "second disk"},
        Refusal{"MixedIoModes",
                {{"spec.domain.devices.disks[1]", R"({"name": "d2", "io": "threads"})"},
                 {"spec.volumes[1]", R"({"name": "d2", "hostDisk": {"path": "/images/d2.img"}})"}},
                "spec.domain.devices.disks[0].io", "one I/O engine"},
        // volumes
        Refusal{"VolumeWithoutDisk",
                {{"spec.volumes[1]", R"({"name": "spare", "hostDisk": {"path": "/x.img"}})"}},
                "spec.volumes[1].name", "no disk"},
        Refusal{"DuplicateVolume",
                {{"spec.volumes[1]", R"({"name": "root", "hostDisk": {"path": "/x.img"}})"}},
                "spec.volumes[1].name", "second volume"},
        Refusal{"VolumeNameWithSlash", {{"spec.volumes[0].name", R"("a/b")"}}, "spec.volumes[0].name"},
        Refusal{"VolumeWithoutSource", {{"spec.volumes[0].hostDisk", kDelete}}, "spec.volumes[0]",
                "no volume source"},
        Refusal{"TwoSources",
                {{"spec.volumes[0].persistentVolumeClaim", R"({"claimName": "c"})"}},
                "spec.volumes[0]", "more than one"},
        Refusal{"CloudInitNoCloud",
                {{"spec.volumes[0].hostDisk", kDelete},
                 {"spec.volumes[0].cloudInitNoCloud", R"({"userData": "#cloud-config"})"}},
                "spec.volumes[0].cloudInitNoCloud", "cloud-init"},
        Refusal{"CloudInitConfigDrive",
                {{"spec.volumes[0].hostDisk", kDelete},
                 {"spec.volumes[0].cloudInitConfigDrive", R"({"userData": "x"})"}},
                "spec.volumes[0].cloudInitConfigDrive"},
        Refusal{"EmptyDisk",
                {{"spec.volumes[0].hostDisk", kDelete},
                 {"spec.volumes[0].emptyDisk", R"({"capacity": "1Gi"})"}},
                "spec.volumes[0].emptyDisk"},
        Refusal{"EphemeralVolume",
                {{"spec.volumes[0].hostDisk", kDelete},
                 {"spec.volumes[0].ephemeral", R"({"persistentVolumeClaim": {"claimName": "c"}})"}},
                "spec.volumes[0].ephemeral"},
        Refusal{"ConfigMapVolume",
                {{"spec.volumes[0].hostDisk", kDelete}, {"spec.volumes[0].configMap", R"({"name": "m"})"}},
                "spec.volumes[0].configMap"},
        Refusal{"SecretVolume",
                {{"spec.volumes[0].hostDisk", kDelete},
                 {"spec.volumes[0].secret", R"({"secretName": "s"})"}},
                "spec.volumes[0].secret"},
        Refusal{"ServiceAccountVolume",
                {{"spec.volumes[0].hostDisk", kDelete},
                 {"spec.volumes[0].serviceAccount", R"({"serviceAccountName": "s"})"}},
                "spec.volumes[0].serviceAccount"},
        Refusal{"SysprepVolume",
                {{"spec.volumes[0].hostDisk", kDelete}, {"spec.volumes[0].sysprep", "{}"}},
                "spec.volumes[0].sysprep"},
        Refusal{"UnknownVolumeType",
                {{"spec.volumes[0].hostDisk", kDelete}, {"spec.volumes[0].nfs", "{}"}},
                "spec.volumes[0].nfs", "unknown"},
        Refusal{"HostDiskRelative", {{"spec.volumes[0].hostDisk.path", R"("images/r.img")"}},
                "spec.volumes[0].hostDisk.path"},
        Refusal{"HostDiskDotDot", {{"spec.volumes[0].hostDisk.path", R"("/images/../../etc/shadow")"}},
                "spec.volumes[0].hostDisk.path", ".."},
        Refusal{"HostDiskOrCreate", {{"spec.volumes[0].hostDisk.type", R"("DiskOrCreate")"}},
                "spec.volumes[0].hostDisk.type", "create"},
        Refusal{"HostDiskShared", {{"spec.volumes[0].hostDisk.shared", "true"}},
                "spec.volumes[0].hostDisk.shared"},
        Refusal{"HotplugClaim",
                {{"spec.volumes[0].hostDisk", kDelete},
                 {"spec.volumes[0].persistentVolumeClaim", R"({"claimName": "c", "hotpluggable": true})"}},
                "spec.volumes[0].persistentVolumeClaim.hotpluggable"},
        Refusal{"HotplugDataVolume",
                {{"spec.volumes[0].hostDisk", kDelete},
                 {"spec.volumes[0].dataVolume", R"({"name": "d", "hotpluggable": true})"}},
                "spec.volumes[0].dataVolume.hotpluggable"},
        Refusal{"WritableContainerDisk",
                {{"spec.volumes[0].hostDisk", kDelete},
                 {"spec.volumes[0].containerDisk", R"({"image": "quay.io/x/y:1"})"}},
                kDisk0 + ".disk.readonly", "overlay"},
        // networks and interfaces
        Refusal{"Multus",
                {{"spec.networks[0].pod", kDelete},
                 {"spec.networks[0].multus", R"({"networkName": "ns/br"})"}},
                "spec.networks[0].multus"},
        Refusal{"NetworkWithoutSource", {{"spec.networks[0].pod", kDelete}}, "spec.networks[0]",
                "pod network"},
        Refusal{"UnknownPodNetworkField", {{"spec.networks[0].pod.frob", "1"}},
                "spec.networks[0].pod.frob"},
        Refusal{"SecondPodNetwork", {{"spec.networks[1]", R"({"name": "two", "pod": {}})"}},
                "spec.networks[1].pod"},
        Refusal{"InterfaceWithoutNetwork",
                {{"spec.domain.devices.interfaces[1]", R"({"name": "x", "passtBinding": {}})"}},
                "spec.domain.devices.interfaces[1].name", "no network"},
        Refusal{"NetworkWithoutInterface", {{kDev + ".interfaces", kDelete}}, "spec.networks[0].name",
                "no interface"},
        Refusal{"Sriov", {{kIface0 + ".passtBinding", kDelete}, {kIface0 + ".sriov", "{}"}},
                kIface0 + ".sriov"},
        Refusal{"Slirp", {{kIface0 + ".passtBinding", kDelete}, {kIface0 + ".slirp", "{}"}},
                kIface0 + ".slirp"},
        Refusal{"Macvtap", {{kIface0 + ".passtBinding", kDelete}, {kIface0 + ".macvtap", "{}"}},
                kIface0 + ".macvtap"},
        Refusal{"CorePasst", {{kIface0 + ".passtBinding", kDelete}, {kIface0 + ".passt", "{}"}},
                kIface0 + ".passt", "passtBinding"},
        Refusal{"OtherBindingPlugin",
                {{kIface0 + ".passtBinding", kDelete}, {kIface0 + ".binding", R"({"name": "slirp"})"}},
                kIface0 + ".binding.name", "slirp"},
        Refusal{"NoBinding", {{kIface0 + ".passtBinding", kDelete}}, kIface0, "no binding"},
        Refusal{"TwoBindings", {{kIface0 + ".masquerade", "{}"}}, kIface0, "more than one"},
        Refusal{"BindingWithMembers", {{kIface0 + ".passtBinding", R"({"mode": "x"})"}},
                kIface0 + ".passtBinding.mode"},
        Refusal{"E1000", {{kIface0 + ".model", R"("e1000")"}}, kIface0 + ".model"},
        Refusal{"BadMac", {{kIface0 + ".macAddress", R"("02:00:00:00:00:zz")"}}, kIface0 + ".macAddress"},
        Refusal{"MulticastMac", {{kIface0 + ".macAddress", R"("01:00:5e:00:00:01")"}},
                kIface0 + ".macAddress", "multicast"},
        Refusal{"PortTooLarge", {{kIface0 + ".ports", R"([{"port": 70000}])"}},
                kIface0 + ".ports[0].port"},
        Refusal{"PortMissing", {{kIface0 + ".ports", R"([{"name": "web"}])"}},
                kIface0 + ".ports[0].port", "required"},
        Refusal{"PortSctp", {{kIface0 + ".ports", R"([{"port": 80}, {"port": 9, "protocol": "SCTP"}])"}},
                kIface0 + ".ports[1].protocol"},
        Refusal{"BridgePorts",
                {{kIface0 + ".passtBinding", kDelete}, {kIface0 + ".bridge", "{}"},
                 {kIface0 + ".ports", R"([{"port": 80}])"}},
                kIface0 + ".ports", "bridge"},
        Refusal{"DhcpOptions", {{kIface0 + ".dhcpOptions", R"({"bootFileName": "x"})"}},
                kIface0 + ".dhcpOptions"},
        Refusal{"InterfacePciAddress", {{kIface0 + ".pciAddress", R"("0000:00:06.0")"}},
                kIface0 + ".pciAddress"},
        Refusal{"InterfaceBootOrder", {{kIface0 + ".bootOrder", "1"}}, kIface0 + ".bootOrder"},
        Refusal{"AcpiIndex", {{kIface0 + ".acpiIndex", "3"}}, kIface0 + ".acpiIndex"},
        Refusal{"InterfaceTag", {{kIface0 + ".tag", R"("nic")"}}, kIface0 + ".tag"},
        Refusal{"InterfaceDown", {{kIface0 + ".state", R"("down")"}}, kIface0 + ".state"}),
    [](const ::testing::TestParamInfo<Refusal>& p) { return p.param.name; });

TEST(VmiTranslate, NotJsonOrNotAnObject) {
  absl::StatusOr<Translation> t = TranslateVmi("{not json", PodPaths{});
  ASSERT_FALSE(t.ok());
  EXPECT_THAT(std::string(t.status().message()), HasSubstr("not valid JSON"));
  t = TranslateVmi("[1, 2]", PodPaths{});
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument);
}

// ---- ReadVmiMeta ----

TEST(VmiMeta, IdentityGraceAndBackend) {
  absl::StatusOr<VmiMeta> m = ReadVmiMeta(kRealistic);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->uid, "f3e1d2c4-7b6a-4c59-8e1f-2a3b4c5d6e7f");
  EXPECT_EQ(m->name, "web-1");
  EXPECT_EQ(m->namespace_, "prod");
  EXPECT_EQ(m->backend, "flint");
  EXPECT_EQ(m->grace, absl::Seconds(180));
}

TEST(VmiMeta, DefaultsAndOnlyTheUidIsRequired) {
  absl::StatusOr<VmiMeta> m = ReadVmiMeta(R"({"metadata": {"uid": "u1"}})");
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->uid, "u1");
  EXPECT_EQ(m->grace, absl::Seconds(30));
  EXPECT_EQ(m->backend, "");
  // A VMI flint could not run still has an identity (Kill must work on it).
  m = ReadVmiMeta(Patch(kBase, {{"spec.domain.devices.rng", "{}"},
                                {"spec.terminationGracePeriodSeconds", "0"},
                                {"metadata.annotations", R"({"flint.dev/backend": "qemu"})"}}));
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->grace, absl::ZeroDuration());
  EXPECT_EQ(m->backend, "qemu");
}

TEST(VmiMeta, MissingUidNamesIt) {
  absl::StatusOr<VmiMeta> m = ReadVmiMeta(R"({"metadata": {"name": "x"}})");
  ASSERT_FALSE(m.ok());
  EXPECT_THAT(std::string(m.status().message()), StartsWith("metadata.uid:"));
  m = ReadVmiMeta(R"({"metadata": {"uid": "u", "annotations": {"flint.dev/backend": 3}}})");
  ASSERT_FALSE(m.ok());
  // A key that is not an identifier is written the way JSONPath would.
  EXPECT_THAT(std::string(m.status().message()),
              StartsWith(R"(metadata.annotations["flint.dev/backend"]:)"));
}

// ---- Quantities ----

TEST(Quantity, Values) {
  const std::vector<std::pair<std::string, uint64_t>> ok = {
      {"1Gi", 1ull << 30},   {"512Mi", 512ull << 20}, {"1G", 1000000000}, {"1.5Gi", 1610612736},
      {"100M", 100000000},   {"1024", 1024},          {"2Ki", 2048},      {"1k", 1000},
      {"1e3", 1000},         {"1E6", 1000000},        {"+4Mi", 4ull << 20}, {"0", 0},
      {"0.5Ki", 512},        {"1.50Mi", 1572864},     {"0.000001M", 1},     {"5.", 5},
  };
  for (const auto& [text, want] : ok) {
    absl::StatusOr<uint64_t> v = ParseQuantity(text);
    ASSERT_TRUE(v.ok()) << text << ": " << v.status();
    EXPECT_EQ(*v, want) << text;
  }
  EXPECT_EQ(*ParseQuantity("15Ei"), 15ull << 60);
  EXPECT_EQ(*ParseQuantity("18446744073709551615"), UINT64_MAX);
}

TEST(Quantity, Refusals) {
  for (const char* bad : {"bad", "", "Gi", "-1Gi", "1.5", "500m", "1.2.3", "1 Gi", "1GB", "1gi",
                          "16Ei", "18446744073709551616", "1e", "1e999",
                          "12345678901234567890123"}) {
    absl::StatusOr<uint64_t> v = ParseQuantity(bad);
    EXPECT_FALSE(v.ok()) << "'" << bad << "' gave " << (v.ok() ? *v : 0);
    if (!v.ok()) {
      EXPECT_EQ(v.status().code(), absl::StatusCode::kInvalidArgument);
      EXPECT_THAT(std::string(v.status().message()), HasSubstr(std::string("'") + bad + "'"));
    }
  }
}

// ---- The JSON reader's paths and types ----

TEST(JsonNode, PathsAndTypes) {
  absl::StatusOr<google::protobuf::Value> doc =
      json::Parse(R"({"a": {"b": [1, {"c": "x"}], "d/e": null}})", "test");
  ASSERT_TRUE(doc.ok());
  const json::Node root = json::Node::Root(*doc);
  absl::StatusOr<std::vector<json::Node>> items = root["a"]["b"].Items();
  ASSERT_TRUE(items.ok());
  ASSERT_EQ(items->size(), 2u);
  EXPECT_EQ((*items)[1]["c"].path(), "a.b[1].c");
  EXPECT_EQ(*(*items)[1]["c"].String(), "x");
  EXPECT_FALSE(root["a"]["d/e"].present());  // null is absent
  EXPECT_EQ(root["a"]["d/e"].path(), R"(a["d/e"])");
  EXPECT_EQ(*root["a"]["missing"].Int(7, 0, 10), 7);
  absl::Status st = (*items)[0].String().status();
  EXPECT_EQ(std::string(st.message()), "a.b[0]: expected a string, got a number");
  EXPECT_FALSE((*items)[0].Int(0, 2, 10).ok());  // 1 is out of range
  EXPECT_EQ(*root["a"].Keys(), (std::vector<std::string>{"b", "d/e"}));
}

}  // namespace
}  // namespace flint::shim
