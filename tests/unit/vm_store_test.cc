// The shim's VM records on disk: what a restarted flint-shim finds again.
#include "k8s-shim/vm_store.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace flint::shim {
namespace {

using flint::shim::v1::VmRecord;

class VmStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/vm-store-test-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    root_ = tmpl;
    dir_ = root_ + "/state";  // created by Open
  }
  void TearDown() override {
    std::error_code ec;
    std::filesystem::remove_all(root_, ec);
  }

  static VmRecord Record(const std::string& id) {
    VmRecord r;
    r.set_id(id);
    r.set_launcher_socket("/run/kubevirt/sockets/" + id + "/launcher-sock");
    r.set_backend("flint");
    r.set_vmi_uid("uid-" + id);
    r.set_vmi_name("vm-" + id);
    r.set_vmi_namespace("ns");
    r.set_vmi_json("{\"metadata\":{\"uid\":\"uid-" + id + "\"}}");
    r.mutable_config()->set_cpus(2);
    r.mutable_config()->set_memory_mib(128);
    r.mutable_config()->add_disks()->set_path("/images/root.img");
    r.set_pid(4242);
    r.set_pid_start_time(123456789012345ull);
    r.set_api_socket("/state/" + id + "/vm/api.sock");
    r.set_vm_dir("/state/" + id + "/vm");
    return r;
  }

  static void WriteFile(const std::string& path, const std::string& text) {
    std::ofstream(path, std::ios::trunc) << text;
  }
  static std::string ReadFile(const std::string& path) {
    std::ifstream in(path);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }
  static bool Exists(const std::string& path) {
    struct stat st;
    return lstat(path.c_str(), &st) == 0;
  }

  std::string root_, dir_;
};

TEST_F(VmStoreTest, SavedRecordsLoadBackWhole) {
  VmStore store(dir_);
  ASSERT_TRUE(store.Open().ok());
  const VmRecord a = Record("a"), b = Record("b-1.x_y");
  ASSERT_TRUE(store.Save(b).ok());
  ASSERT_TRUE(store.Save(a).ok());

  // A second store on the same directory: what a restarted shim sees.
  VmStore again(dir_);
  ASSERT_TRUE(again.Open().ok());
  std::vector<std::string> warnings;
  std::vector<VmRecord> loaded = again.LoadAll(&warnings);
  EXPECT_TRUE(warnings.empty()) << warnings[0];
  ASSERT_EQ(loaded.size(), 2u);
  EXPECT_EQ(loaded[0].SerializeAsString(), a.SerializeAsString()) << loaded[0].DebugString();
  EXPECT_EQ(loaded[1].SerializeAsString(), b.SerializeAsString()) << loaded[1].DebugString();
  // The 64-bit start time survives JSON (where it is a string).
  EXPECT_EQ(loaded[0].pid_start_time(), 123456789012345ull);

  // Private: records name sockets and pids.
  struct stat st;
  ASSERT_EQ(stat(store.RecordPath("a").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  ASSERT_EQ(stat(dir_.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);
}

TEST_F(VmStoreTest, SaveReplacesTheRecordAndLeavesNoTemporaryFile) {
  VmStore store(dir_);
  ASSERT_TRUE(store.Open().ok());
  VmRecord r = Record("vm");
  ASSERT_TRUE(store.Save(r).ok());
  r.set_deleted(true);
  r.set_pid(99);
  ASSERT_TRUE(store.Save(r).ok());
  EXPECT_FALSE(Exists(store.RecordPath("vm") + ".tmp"));
  std::vector<std::string> warnings;
  std::vector<VmRecord> loaded = store.LoadAll(&warnings);
  ASSERT_EQ(loaded.size(), 1u);
  EXPECT_TRUE(loaded[0].deleted());
  EXPECT_EQ(loaded[0].pid(), 99);
  // The file is proto3 JSON with the proto's own field names.
  EXPECT_NE(ReadFile(store.RecordPath("vm")).find("\"launcher_socket\""), std::string::npos);
}

TEST_F(VmStoreTest, CorruptRecordsAreSetAsideAndTheRestStillLoad) {
  VmStore store(dir_);
  ASSERT_TRUE(store.Open().ok());
  ASSERT_TRUE(store.Save(Record("good")).ok());
  ASSERT_TRUE(store.Save(Record("torn")).ok());
  ASSERT_TRUE(store.Save(Record("moved")).ok());
  // A half-written file (as a crash of a non-atomic writer would leave) and
  // a record copied into another slot's directory.
  const std::string torn = ReadFile(store.RecordPath("torn"));
  WriteFile(store.RecordPath("torn"), torn.substr(0, torn.size() / 2));
  std::string moved = ReadFile(store.RecordPath("good"));
  WriteFile(store.RecordPath("moved"), moved);

  std::vector<std::string> warnings;
  std::vector<VmRecord> loaded = store.LoadAll(&warnings);
  ASSERT_EQ(loaded.size(), 1u);
  EXPECT_EQ(loaded[0].id(), "good");
  ASSERT_EQ(warnings.size(), 2u);
  EXPECT_NE(warnings[0].find("its id \"good\" is not its directory's name"), std::string::npos)
      << warnings[0];
  EXPECT_NE(warnings[1].find("not a flint.shim.v1.VmRecord"), std::string::npos) << warnings[1];

  // Kept for a person to look at, not deleted, and out of the way.
  EXPECT_FALSE(Exists(store.RecordPath("torn")));
  EXPECT_EQ(ReadFile(store.RecordPath("torn") + ".corrupt-1"), torn.substr(0, torn.size() / 2));
  EXPECT_TRUE(Exists(store.RecordPath("moved") + ".corrupt-1"));

  // A second bad record in the same slot does not overwrite the first.
  WriteFile(store.RecordPath("torn"), "{");
  warnings.clear();
  loaded = store.LoadAll(&warnings);
  EXPECT_EQ(loaded.size(), 1u);
  EXPECT_TRUE(Exists(store.RecordPath("torn") + ".corrupt-1"));
  EXPECT_EQ(ReadFile(store.RecordPath("torn") + ".corrupt-2"), "{");
}

TEST_F(VmStoreTest, LeftoversAreIgnoredOrCleanedUp) {
  VmStore store(dir_);
  ASSERT_TRUE(store.Open().ok());
  ASSERT_TRUE(store.Save(Record("vm")).ok());
  // A crash between writing the temporary file and the rename: the old
  // record is whole and wins; the temporary file goes.
  WriteFile(store.RecordPath("vm") + ".tmp", "{\"id\": \"vm\", \"pid\"");
  ASSERT_EQ(mkdir((dir_ + "/empty").c_str(), 0700), 0);  // no record in it
  WriteFile(dir_ + "/stray-file", "x");                  // not a directory

  std::vector<std::string> warnings;
  std::vector<VmRecord> loaded = store.LoadAll(&warnings);
  ASSERT_EQ(loaded.size(), 1u);
  EXPECT_EQ(loaded[0].pid(), 4242);
  EXPECT_FALSE(Exists(store.RecordPath("vm") + ".tmp"));
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_NE(warnings[0].find("no record.json"), std::string::npos) << warnings[0];
}

TEST_F(VmStoreTest, RemoveDeletesTheSlotDirectory) {
  VmStore store(dir_);
  ASSERT_TRUE(store.Open().ok());
  ASSERT_TRUE(store.Save(Record("vm")).ok());
  ASSERT_EQ(mkdir(store.VmDir("vm").c_str(), 0700), 0);
  WriteFile(store.VmDir("vm") + "/serial.log", "hello");
  ASSERT_TRUE(store.Remove("vm").ok());
  EXPECT_FALSE(Exists(store.SlotDir("vm")));
  std::vector<std::string> warnings;
  EXPECT_TRUE(store.LoadAll(&warnings).empty());
  // Nothing outside the state directory can be named.
  EXPECT_FALSE(store.Remove("..").ok());
  EXPECT_FALSE(store.Remove("a/b").ok());
}

TEST_F(VmStoreTest, SlotIdsAreSafeDirectoryNames) {
  for (const char* good : {"vm", "a", "ns_name-1.2", "0123456789012345678901234567890123456789"}) {
    EXPECT_TRUE(ValidateSlotId(good).ok()) << good;
  }
  for (const std::string& bad : {std::string(""), std::string("."), std::string(".."),
                                std::string("a/b"), std::string("a b"), std::string("x\n"),
                                std::string(65, 'a')}) {
    absl::Status s = ValidateSlotId(bad);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << bad;
  }
  VmStore store(dir_);
  ASSERT_TRUE(store.Open().ok());
  VmRecord r = Record("vm");
  r.set_id("../escape");
  EXPECT_EQ(store.Save(r).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(Exists(root_ + "/escape"));
}

TEST_F(VmStoreTest, OpenRefusesAFileWhereTheDirectoryShouldBe) {
  WriteFile(dir_, "not a directory");
  VmStore store(dir_);
  absl::Status s = store.Open();
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
}

}  // namespace
}  // namespace flint::shim
