// The domain and domain-stats JSON virt-handler reads: parsed back and
// checked key by key, because virt-handler is Go and decodes by field name.
#include "k8s-shim/domain_json.h"

#include <google/protobuf/struct.pb.h>
#include <google/protobuf/util/json_util.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <initializer_list>
#include <set>
#include <string>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "k8s-shim/json.h"

namespace flint::shim {
namespace {

using google::protobuf::Value;

Value ParseBack(const std::string& text) {
  Value v;
  const auto st = google::protobuf::util::JsonStringToMessage(text, &v);
  EXPECT_TRUE(st.ok()) << st.message().as_string() << "\n" << text;
  return v;
}

// The member at a key path; fails the test (and returns a null value) when
// a key is missing.
const Value& At(const Value& v, std::initializer_list<std::string> keys) {
  static const Value kMissing;
  const Value* cur = &v;
  std::string path;
  for (const std::string& k : keys) {
    path += "/" + k;
    if (!cur->has_struct_value() || cur->struct_value().fields().count(k) == 0) {
      ADD_FAILURE() << "no member " << path;
      return kMissing;
    }
    cur = &cur->struct_value().fields().at(k);
  }
  return *cur;
}

std::set<std::string> Keys(const Value& v) {
  std::set<std::string> keys;
  for (const auto& [k, unused] : v.struct_value().fields()) keys.insert(k);
  return keys;
}

VmiMeta Meta() {
  VmiMeta m;
  m.uid = "f3e1d2c4-7b6a-4c59-8e1f-2a3b4c5d6e7f";
  m.name = "web-1";
  m.namespace_ = "prod";
  m.grace = absl::Seconds(180);
  return m;
}

flint::v1::VmConfig Config() {
  flint::v1::VmConfig c;
  c.set_cpus(4);
  c.set_memory_mib(2048);
  return c;
}

TEST(DomainJson, RunningDomainHasKubeVirtsKeys) {
  const Value d = ParseBack(DomainJson(Meta(), Config(), {DomainState::kRunning, "Booted"}));
  EXPECT_EQ(Keys(d), (std::set<std::string>{"kind", "apiVersion", "ObjectMeta", "Spec", "Status"}));
  EXPECT_EQ(At(d, {"kind"}).string_value(), "Domain");
  EXPECT_EQ(At(d, {"apiVersion"}).string_value(), "1.2.2");
  // metav1.ObjectMeta: lowercase keys; the VMI's own name and uid.
  EXPECT_EQ(Keys(At(d, {"ObjectMeta"})), (std::set<std::string>{"name", "namespace", "uid"}));
  EXPECT_EQ(At(d, {"ObjectMeta", "name"}).string_value(), "web-1");
  EXPECT_EQ(At(d, {"ObjectMeta", "namespace"}).string_value(), "prod");
  EXPECT_EQ(At(d, {"ObjectMeta", "uid"}).string_value(), "f3e1d2c4-7b6a-4c59-8e1f-2a3b4c5d6e7f");
  // DomainSpec: Go field names.
  EXPECT_EQ(At(d, {"Spec", "Name"}).string_value(), "prod_web-1");
  EXPECT_EQ(At(d, {"Spec", "UUID"}).string_value(), "f3e1d2c4-7b6a-4c59-8e1f-2a3b4c5d6e7f");
  EXPECT_EQ(At(d, {"Spec", "Metadata", "KubeVirt", "UID"}).string_value(),
            "f3e1d2c4-7b6a-4c59-8e1f-2a3b4c5d6e7f");
  EXPECT_EQ(At(d, {"Spec", "Metadata", "KubeVirt", "GracePeriod", "DeletionGracePeriodSeconds"})
                .number_value(),
            180);
  EXPECT_EQ(At(d, {"Spec", "Memory", "Value"}).number_value(), 2048 * 1024);
  EXPECT_EQ(At(d, {"Spec", "Memory", "Unit"}).string_value(), "KiB");
  EXPECT_EQ(At(d, {"Spec", "CurrentMemory", "Value"}).number_value(), 2048 * 1024);
  EXPECT_EQ(At(d, {"Spec", "VCPU", "CPUs"}).number_value(), 4);
  EXPECT_EQ(At(d, {"Spec", "VCPU", "Placement"}).string_value(), "static");
  EXPECT_EQ(Keys(At(d, {"Status"})), (std::set<std::string>{"Status", "Reason"}));
  EXPECT_EQ(At(d, {"Status", "Status"}).string_value(), "Running");
  EXPECT_EQ(At(d, {"Status", "Reason"}).string_value(), "Booted");
}

TEST(DomainJson, DevicesCarryTheVmisNamesAsAliases) {
  flint::v1::VmConfig c = Config();
  c.add_disks()->set_path("/pod/var/run/kubevirt-private/vmi-disks/root/disk.img");
  flint::v1::Disk* cd = c.add_disks();
  cd->set_path("/pod/disk_1.img");
  cd->set_readonly(true);
  cd->set_serial("CD-1");
  flint::v1::Nic* pod = c.add_nics();
  pod->mutable_passt();
  pod->set_mac("02:00:00:00:00:01");
  flint::v1::Nic* bridged = c.add_nics();
  bridged->mutable_tap()->set_name("tap0");
  bridged->set_mtu(1400);
  const Value d = ParseBack(DomainJson(Meta(), c, {DomainState::kRunning, "Booted"},
                                       DeviceNames{{"rootdisk", "cd"}, {"default", "br"}}));
  const auto& disks = At(d, {"Spec", "Devices", "Disks"}).list_value().values();
  ASSERT_EQ(disks.size(), 2);
  EXPECT_EQ(At(disks[0], {"Alias", "Name"}).string_value(), "rootdisk");
  EXPECT_TRUE(At(disks[0], {"Alias", "UserDefined"}).bool_value());
  EXPECT_EQ(At(disks[0], {"Target", "Device"}).string_value(), "vda");
  EXPECT_EQ(At(disks[0], {"Target", "Bus"}).string_value(), "virtio");
  EXPECT_EQ(At(disks[0], {"Source", "File"}).string_value(),
            "/pod/var/run/kubevirt-private/vmi-disks/root/disk.img");
  EXPECT_EQ(Keys(disks[0]).count("ReadOnly"), 0u);
  EXPECT_EQ(At(disks[1], {"Target", "Device"}).string_value(), "vdb");
  EXPECT_EQ(Keys(disks[1]).count("ReadOnly"), 1u);
  EXPECT_EQ(At(disks[1], {"Serial"}).string_value(), "CD-1");
  const auto& nics = At(d, {"Spec", "Devices", "Interfaces"}).list_value().values();
  ASSERT_EQ(nics.size(), 2);
  EXPECT_EQ(At(nics[0], {"Alias", "Name"}).string_value(), "default");
  EXPECT_EQ(At(nics[0], {"MAC", "MAC"}).string_value(), "02:00:00:00:00:01");
  EXPECT_EQ(At(nics[1], {"Alias", "Name"}).string_value(), "br");
  EXPECT_EQ(At(nics[1], {"Target", "Device"}).string_value(), "tap0");
  EXPECT_EQ(At(nics[1], {"MTU", "Size"}).string_value(), "1400");
  EXPECT_EQ(Keys(nics[1]).count("MAC"), 0u) << "flint picks the MAC; the shim does not know it";
  // Without names (a record from before names were kept) nothing is listed.
  const Value bare = ParseBack(DomainJson(Meta(), c, {DomainState::kRunning, "Booted"}));
  EXPECT_EQ(At(bare, {"Spec", "Devices", "Disks"}).list_value().values_size(), 0);
}

TEST(DomainJson, EveryLifeCycleName) {
  const std::pair<DomainState, const char*> cases[] = {
      {DomainState::kNoState, "NoState"},   {DomainState::kRunning, "Running"},
      {DomainState::kPaused, "Paused"},     {DomainState::kShuttingDown, "ShuttingDown"},
      {DomainState::kShutoff, "Shutoff"},   {DomainState::kCrashed, "Crashed"},
  };
  for (const auto& [state, name] : cases) {
    EXPECT_STREQ(DomainStateName(state), name);
    const Value d = ParseBack(DomainJson(Meta(), Config(), {state, "User"}));
    EXPECT_EQ(At(d, {"Status", "Status"}).string_value(), name);
    EXPECT_EQ(At(d, {"Status", "Reason"}).string_value(), "User");
  }
}

TEST(DomainJson, GoneDomainCarriesADeletionTimestamp) {
  const absl::Time before = absl::FromUnixSeconds(absl::ToUnixSeconds(absl::Now()));
  const Value d = ParseBack(DomainJson(Meta(), Config(), {DomainState::kNoState, "NonExistent"}));
  const absl::Time after = absl::Now();
  EXPECT_EQ(At(d, {"Status", "Status"}).string_value(), "NoState");
  EXPECT_EQ(At(d, {"Status", "Reason"}).string_value(), "NonExistent");
  const std::string stamp = At(d, {"ObjectMeta", "deletionTimestamp"}).string_value();
  absl::Time t;
  std::string err;
  // metav1.Time's JSON form: RFC 3339 in UTC with whole seconds.
  ASSERT_TRUE(absl::ParseTime("%Y-%m-%dT%H:%M:%SZ", stamp, &t, &err)) << stamp << ": " << err;
  EXPECT_GE(t, before);
  EXPECT_LE(t, after);
  // Other NoState reasons do not mean "deleted".
  const Value other = ParseBack(DomainJson(Meta(), Config(), {DomainState::kNoState, "Unknown"}));
  EXPECT_EQ(Keys(At(other, {"ObjectMeta"})), (std::set<std::string>{"name", "namespace", "uid"}));
  const Value off = ParseBack(DomainJson(Meta(), Config(), {DomainState::kShutoff, "Shutdown"}));
  EXPECT_EQ(Keys(At(off, {"ObjectMeta"})).count("deletionTimestamp"), 0u);
}

TEST(DomainJson, ZeroConfigFieldsAreFlintsDefaults) {
  const Value d = ParseBack(DomainJson(Meta(), flint::v1::VmConfig(), {}));
  EXPECT_EQ(At(d, {"Spec", "VCPU", "CPUs"}).number_value(), 1);
  EXPECT_EQ(At(d, {"Spec", "Memory", "Value"}).number_value(), 256 * 1024);
  EXPECT_EQ(At(d, {"Status", "Status"}).string_value(), "NoState");
  EXPECT_EQ(At(d, {"Status", "Reason"}).string_value(), "Unknown");
}

TEST(DomainJson, NamesAreEscaped) {
  VmiMeta m = Meta();
  m.name = "we\"ird\\name\n\x01";
  m.namespace_ = "n\xc3\xa4";  // UTF-8 passes through
  const Value d = ParseBack(DomainJson(m, Config(), {DomainState::kRunning, "Booted"}));
  EXPECT_EQ(At(d, {"ObjectMeta", "name"}).string_value(), m.name);
  EXPECT_EQ(At(d, {"Spec", "Name"}).string_value(), m.namespace_ + "_" + m.name);
}

TEST(DomainJson, DomainName) {
  EXPECT_EQ(DomainName(Meta()), "prod_web-1");
}

TEST(DomainStatsJson, KeysAndSetFlags) {
  BackendStats s;
  s.vcpus = 4;
  s.memory_bytes = 2048ull << 20;
  s.rss_bytes = 300ull << 20;
  s.cpu_time_ns = 123456789;
  s.disks.push_back({"rootdisk", "/pod/disk.img", 10, 4096, 20, 8192, 3, 1});
  s.disks.push_back({"data", "/dev/data", 1, 512, 2, 1024, 0, 0});
  s.nics.push_back({"default", "02:00:00:00:00:01", 5, 500, 1, 6, 600, 2});
  const Value v = ParseBack(DomainStatsJson(Meta(), s));
  EXPECT_EQ(At(v, {"Name"}).string_value(), "prod_web-1");
  EXPECT_EQ(At(v, {"UUID"}).string_value(), Meta().uid);
  EXPECT_TRUE(At(v, {"Cpu", "TimeSet"}).bool_value());
  EXPECT_EQ(At(v, {"Cpu", "Time"}).number_value(), 123456789);
  // Only what flint measures is set.
  EXPECT_EQ(Keys(At(v, {"Cpu"})), (std::set<std::string>{"TimeSet", "Time"}));
  EXPECT_EQ(Keys(At(v, {"Memory"})),
            (std::set<std::string>{"RSSSet", "RSS", "ActualBalloonSet", "ActualBalloon"}));
  EXPECT_EQ(At(v, {"Memory", "RSS"}).number_value(), 300 * 1024);  // KiB, as libvirt
  EXPECT_EQ(At(v, {"Memory", "ActualBalloon"}).number_value(), 2048 * 1024);
  EXPECT_EQ(At(v, {"NrVirtCpu"}).number_value(), 4);

  const auto& blocks = At(v, {"Block"}).list_value().values();
  ASSERT_EQ(blocks.size(), 2);
  EXPECT_EQ(At(blocks[0], {"Name"}).string_value(), "vda");
  EXPECT_TRUE(At(blocks[0], {"NameSet"}).bool_value());
  EXPECT_EQ(At(blocks[0], {"Alias"}).string_value(), "rootdisk");
  EXPECT_EQ(At(blocks[0], {"Path"}).string_value(), "/pod/disk.img");
  EXPECT_EQ(At(blocks[0], {"RdReqs"}).number_value(), 10);
  EXPECT_EQ(At(blocks[0], {"RdBytes"}).number_value(), 4096);
  EXPECT_EQ(At(blocks[0], {"WrReqs"}).number_value(), 20);
  EXPECT_EQ(At(blocks[0], {"WrBytes"}).number_value(), 8192);
  EXPECT_EQ(At(blocks[0], {"FlReqs"}).number_value(), 3);
  EXPECT_EQ(At(blocks[0], {"Errors"}).number_value(), 1);
  for (const char* flag : {"PathSet", "RdReqsSet", "RdBytesSet", "WrReqsSet", "WrBytesSet",
                           "FlReqsSet", "ErrorsSet"}) {
    EXPECT_TRUE(At(blocks[0], {flag}).bool_value()) << flag;
  }
  EXPECT_EQ(Keys(blocks[0]).count("AliasSet"), 0u);  // Block has no AliasSet in KubeVirt
  EXPECT_EQ(At(blocks[1], {"Name"}).string_value(), "vdb");

  const auto& nets = At(v, {"Net"}).list_value().values();
  ASSERT_EQ(nets.size(), 1);
  EXPECT_EQ(At(nets[0], {"Alias"}).string_value(), "default");
  EXPECT_TRUE(At(nets[0], {"AliasSet"}).bool_value());
  EXPECT_EQ(At(nets[0], {"RxPkts"}).number_value(), 5);
  EXPECT_EQ(At(nets[0], {"RxBytes"}).number_value(), 500);
  EXPECT_EQ(At(nets[0], {"RxDrop"}).number_value(), 1);
  EXPECT_EQ(At(nets[0], {"TxPkts"}).number_value(), 6);
  EXPECT_EQ(At(nets[0], {"TxBytes"}).number_value(), 600);
  EXPECT_EQ(At(nets[0], {"TxDrop"}).number_value(), 2);
  for (const char* flag : {"NameSet", "RxBytesSet", "RxPktsSet", "RxDropSet", "TxBytesSet",
                           "TxPktsSet", "TxDropSet"}) {
    EXPECT_TRUE(At(nets[0], {flag}).bool_value()) << flag;
  }
}

TEST(DomainStatsJson, UnmeasuredMembersAreLeftOut) {
  const Value v = ParseBack(DomainStatsJson(Meta(), BackendStats{}));
  EXPECT_EQ(Keys(At(v, {"Memory"})), std::set<std::string>{});
  EXPECT_EQ(Keys(v).count("NrVirtCpu"), 0u);
  EXPECT_EQ(At(v, {"Block"}).list_value().values_size(), 0);
  EXPECT_EQ(At(v, {"Net"}).list_value().values_size(), 0);
}

TEST(DomainStatsJson, LargeCountersKeepEveryDigit) {
  // Go decodes these into uint64: a double (2^53) or an exponent would break it.
  BackendStats s;
  s.cpu_time_ns = UINT64_MAX;
  s.disks.push_back({"d", "/p", 0, (1ull << 53) + 1, 0, 0, 0, 0});
  const std::string text = DomainStatsJson(Meta(), s);
  EXPECT_THAT(text, ::testing::HasSubstr(R"("Time":18446744073709551615)"));
  EXPECT_THAT(text, ::testing::HasSubstr(R"("RdBytes":9007199254740993)"));
}

TEST(DomainStatsJson, DiskNamesPastZ) {
  BackendStats s;
  for (int i = 0; i < 28; ++i) s.disks.push_back({"d" + std::to_string(i), "/p", 0, 0, 0, 0, 0, 0});
  const Value v = ParseBack(DomainStatsJson(Meta(), s));
  const auto& blocks = At(v, {"Block"}).list_value().values();
  ASSERT_EQ(blocks.size(), 28);
  EXPECT_EQ(At(blocks[25], {"Name"}).string_value(), "vdz");
  EXPECT_EQ(At(blocks[26], {"Name"}).string_value(), "vdaa");
  EXPECT_EQ(At(blocks[27], {"Name"}).string_value(), "vdab");
}

// The builder under both documents.
TEST(JsonOut, ObjectsKeepOrderAndReplaceKeys) {
  json::Out o = json::Out::Object();
  o.Set("b", json::Out::Int(-1)).Set("a", json::Out::Bool(false)).Set("b", json::Out::Uint(2));
  o.Set("l", json::Out::Array().Push(json::Out::Str("x")).Push(json::Out::Object()));
  EXPECT_EQ(o.Dump(), R"({"b":2,"a":false,"l":["x",{}]})");
  EXPECT_EQ(json::Quote("a\"b\\c\n\t\x1f"), R"("a\"b\\c\n\t\u001f")");
}

}  // namespace
}  // namespace flint::shim
