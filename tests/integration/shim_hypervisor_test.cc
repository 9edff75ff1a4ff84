// The node's hypervisor report (k8s-shim/hypervisor_info.h) against the real
// flint binary: /dev/kvm probed, the per-VM memory overhead measured by a VM
// start, the node labels, and the errors a misconfigured node gets.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <sstream>
#include <string>

#include "absl/strings/match.h"
#include "k8s-shim/hypervisor_info.h"
#include "tests/support/subprocess.h"

namespace flint::shim {
namespace {

using flint::shim::v1::GetHypervisorInfoResponse;

BackendPrograms RealPrograms() {
  BackendPrograms p;
  p.flint = FLINT_BINARY;
  return p;
}

bool ValidLabelValue(const std::string& v) {
  if (v.empty() || v.size() > 63) return false;
  for (char c : v) {
    if (!isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_' && c != '.') return false;
  }
  return isalnum(static_cast<unsigned char>(v.front())) &&
         isalnum(static_cast<unsigned char>(v.back()));
}

// A directory with a stand-in flint script (removed afterwards).
class FakeFlint {
 public:
  explicit FakeFlint(const std::string& body) {
    char templ[] = "/tmp/flint-hv-test-XXXXXX";
    dir_ = mkdtemp(templ) != nullptr ? templ : "";
    path_ = dir_ + "/flint";
    std::ofstream f(path_);
    f << "#!/bin/sh\n" << body;
    f.close();
    chmod(path_.c_str(), 0755);
  }
  ~FakeFlint() {
    unlink((dir_ + "/calls").c_str());
    unlink(path_.c_str());
    rmdir(dir_.c_str());
  }
  const std::string& path() const { return path_; }
  const std::string& dir() const { return dir_; }
  int Calls() const {
    std::ifstream f(dir_ + "/calls");
    return static_cast<int>(std::count(std::istreambuf_iterator<char>(f),
                                       std::istreambuf_iterator<char>(), '\n'));
  }

 private:
  std::string dir_, path_;
};

class HypervisorInfoTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string why;
    kvm_ = flint::testing::KvmAvailable(&why);
    kvm_why_ = why;
  }
  bool kvm_ = false;
  std::string kvm_why_;
};

TEST_F(HypervisorInfoTest, ReportsAUsableKvmDevice) {
  if (!kvm_) GTEST_SKIP() << "no usable /dev/kvm: " << kvm_why_;
  absl::StatusOr<GetHypervisorInfoResponse> r = ProbeHypervisorUncached(RealPrograms());
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->hypervisor(), "flint");
  EXPECT_FALSE(r->version().empty());
  EXPECT_FALSE(absl::StartsWith(r->version(), "flint")) << r->version();
  EXPECT_EQ(r->device(), "/dev/kvm");
  EXPECT_TRUE(r->device_usable()) << r->device_detail();
  EXPECT_TRUE(absl::StrContains(r->device_detail(), "KVM API version 12")) << r->device_detail();
  // flint's interrupt and device paths are built on these; KVM has had them
  // for over a decade, and Kvm::Open refuses a device without the first two.
  EXPECT_TRUE(absl::StrContains(r->device_detail(), "irqfd=1")) << r->device_detail();
  EXPECT_TRUE(absl::StrContains(r->device_detail(), "ioeventfd=1")) << r->device_detail();
  EXPECT_FALSE(absl::StrContains(r->device_detail(), "gsi-routing=0")) << r->device_detail();
}

TEST_F(HypervisorInfoTest, MeasuresTheMemoryOverheadOfAVm) {
  if (!kvm_) GTEST_SKIP() << "no usable /dev/kvm: " << kvm_why_;
  absl::StatusOr<GetHypervisorInfoResponse> r = ProbeHypervisorUncached(RealPrograms());
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_GT(r->memory_overhead_bytes(), 0u);
  // Far below the 64 MiB guest: the guest's own RAM is not counted.
  EXPECT_LT(r->memory_overhead_bytes(), 64ull << 20) << r->memory_overhead_source();
  EXPECT_EQ(r->memory_overhead_bytes() % 1024, 0u);
  // The source names the binary and the command that measured it.
  EXPECT_TRUE(absl::StrContains(r->memory_overhead_source(), FLINT_BINARY))
      << r->memory_overhead_source();
  EXPECT_TRUE(absl::StrContains(r->memory_overhead_source(), "--stats"))
      << r->memory_overhead_source();
  // Measured as the shim runs its VMs: with the API socket and a client on it.
  EXPECT_TRUE(absl::StrContains(r->memory_overhead_source(), "--api-socket"))
      << r->memory_overhead_source();
  EXPECT_TRUE(absl::StrContains(r->memory_overhead_source(), "WatchEvents"))
      << r->memory_overhead_source();
}

TEST_F(HypervisorInfoTest, LabelsNameHostFeatures) {
  absl::StatusOr<GetHypervisorInfoResponse> r = ProbeHypervisorUncached(RealPrograms());
  ASSERT_TRUE(r.ok()) << r.status();
  const auto& labels = r->labels();
  for (const char* key : {"kvm", "nested", "kvm-pvm", "hw-virt", "io-uring", "passt", "tap",
                          "vfio", "tdx", "hugepages-2Mi", "hugepages-2Mi-free", "numa-nodes",
                          "qemu", "version"}) {
    const std::string k = std::string("flint.dev/") + key;
    ASSERT_TRUE(labels.contains(k)) << "missing label " << k;
    EXPECT_TRUE(ValidLabelValue(labels.at(k))) << k << "=" << labels.at(k);
  }
  for (const auto& [k, v] : labels) EXPECT_TRUE(absl::StartsWith(k, kLabelPrefix)) << k;
  EXPECT_EQ(labels.at("flint.dev/kvm"), r->device_usable() ? "true" : "false");
  EXPECT_EQ(labels.at("flint.dev/tdx"), "false");
  EXPECT_GE(std::stoi(labels.at("flint.dev/numa-nodes")), 1);
  // The labels follow the host, not a fixed answer.
  const int tun = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
  EXPECT_EQ(labels.at("flint.dev/tap"), tun >= 0 ? "true" : "false");
  if (tun >= 0) close(tun);
  EXPECT_EQ(labels.at("flint.dev/vfio"), access("/dev/vfio/vfio", F_OK) == 0 ? "true" : "false");
  ASSERT_GE(r->backends_size(), 1);
  EXPECT_EQ(r->backends(0), "flint");
}

TEST_F(HypervisorInfoTest, QemuIsABackendOnlyWhenItsBinaryExists) {
  BackendPrograms p = RealPrograms();
  p.qemu = "/nonexistent/qemu-system-x86_64";
  p.passt = "/nonexistent/passt";
  absl::StatusOr<GetHypervisorInfoResponse> r = ProbeHypervisorUncached(p);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->backends_size(), 1);
  EXPECT_EQ(r->backends(0), "flint");
  EXPECT_EQ(r->labels().at("flint.dev/qemu"), "false");
  EXPECT_EQ(r->labels().at("flint.dev/passt"), "false");
  // /bin/true stands in for an installed QEMU: found, so listed.
  p.qemu = "/bin/true";
  r = ProbeHypervisorUncached(p);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->backends_size(), 2);
  EXPECT_EQ(r->backends(1), "qemu");
}

TEST_F(HypervisorInfoTest, MissingFlintBinaryIsAClearError) {
  BackendPrograms p;
  p.flint = "/nonexistent/dir/flint";
  absl::StatusOr<GetHypervisorInfoResponse> r = ProbeHypervisor(p);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(absl::StrContains(r.status().message(), "/nonexistent/dir/flint")) << r.status();

  p.flint = "flint-binary-that-is-not-installed";
  r = ProbeHypervisor(p);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(absl::StrContains(r.status().message(), "not found in PATH")) << r.status();
  EXPECT_TRUE(absl::StrContains(r.status().message(), "flint-binary-that-is-not-installed"));
}

TEST_F(HypervisorInfoTest, AFlintThatCannotBootIsAnErrorCarryingItsStderr) {
  if (!kvm_) GTEST_SKIP() << "no usable /dev/kvm: " << kvm_why_;
  FakeFlint fake(
      "if [ \"$1\" = --version ]; then echo 'flint 9.9'; exit 0; fi\n"
      "echo 'flint: guest RAM mmap failed: out of memory' >&2; exit 6\n");
  BackendPrograms p;
  p.flint = fake.path();
  absl::StatusOr<GetHypervisorInfoResponse> r = ProbeHypervisor(p);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInternal);
  EXPECT_TRUE(absl::StrContains(r.status().message(), "guest RAM mmap failed")) << r.status();
  EXPECT_TRUE(absl::StrContains(r.status().message(), "status 6")) << r.status();
}

TEST_F(HypervisorInfoTest, ProbesOncePerProcess) {
  if (!kvm_) GTEST_SKIP() << "no usable /dev/kvm: " << kvm_why_;
  // A wrapper that logs each call and runs the real flint.
  FakeFlint fake(std::string("echo \"$1\" >> \"$(dirname \"$0\")/calls\"\nexec ") + FLINT_BINARY +
                 " \"$@\"\n");
  BackendPrograms p;
  p.flint = fake.path();
  absl::StatusOr<GetHypervisorInfoResponse> first = ProbeHypervisor(p);
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(fake.Calls(), 2);  // --version, then the measuring VM
  absl::StatusOr<GetHypervisorInfoResponse> second = ProbeHypervisor(p);
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ(fake.Calls(), 2) << "the second report must come from the cache";
  EXPECT_EQ(second->memory_overhead_bytes(), first->memory_overhead_bytes());
  EXPECT_EQ(second->version(), first->version());
}

}  // namespace
}  // namespace flint::shim
