// End-to-end tests of the flint binary. The VM tests need a usable /dev/kvm
// and are skipped, loudly and with the reason, where there is none; the
// command-line and error-path tests run everywhere.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <string>
#include <vector>

#include "tests/support/subprocess.h"

namespace flint {
namespace {

using ::flint::testing::KvmAvailable;
using ::flint::testing::ProcessResult;
using ::flint::testing::RunProcess;

const std::string kFlint = FLINT_BINARY;
const std::string kBuild = FLINT_BUILD_ROOT;

bool Has(const std::string& hay, const std::string& needle) {
  return hay.find(needle) != std::string::npos;
}

bool FileExists(const std::string& p) {
  struct stat st;
  return stat(p.c_str(), &st) == 0;
}

#define REQUIRE_KVM()                          \
  do {                                         \
    std::string why;                           \
    if (!KvmAvailable(&why)) GTEST_SKIP() << why; \
  } while (0)

ProcessResult Flint(std::vector<std::string> args, const std::string& in = "", int timeout_ms = 60000) {
  args.insert(args.begin(), kFlint);
  return RunProcess(args, in, timeout_ms);
}

ProcessResult Guest(const std::string& cmdline, std::vector<std::string> extra = {},
                    const std::string& in = "") {
  std::vector<std::string> args = {"run", "--no-reboot", "--memory", "64M", "--cmdline", cmdline};
  args.insert(args.end(), extra.begin(), extra.end());
  return Flint(args, in);
}

// ---- Everywhere --------------------------------------------------------

TEST(FlintCli, HelpExitsZero) {
  ProcessResult r = Flint({"--help"});
  EXPECT_EQ(r.exit_status, 0);
  EXPECT_TRUE(Has(r.out, "usage: flint run")) << r.out;
}

TEST(FlintCli, BadArgumentsExitTwoWithTheReason) {
  ProcessResult r = Flint({"run", "--cpus", "0"});
  EXPECT_EQ(r.exit_status, 2);
  EXPECT_TRUE(Has(r.err, "--cpus 0 is out of range")) << r.err;
  r = Flint({"run", "--kernel", "/nonexistent/vmlinuz"});
  EXPECT_EQ(r.exit_status, 2);
  EXPECT_TRUE(Has(r.err, "/nonexistent/vmlinuz")) << r.err;
  r = Flint({"run", "--serial", "file:/nonexistent-dir/out"});
  EXPECT_EQ(r.exit_status, 2);
  EXPECT_TRUE(Has(r.err, "/nonexistent-dir/out")) << r.err;
}

TEST(FlintCli, MissingKvmIsReportedNotHidden) {
  std::string why;
  if (KvmAvailable(&why)) GTEST_SKIP() << "this host has KVM; the no-KVM error path is not reachable";
  ProcessResult r = Flint({"run"});
  EXPECT_EQ(r.exit_status, 6);
  EXPECT_TRUE(Has(r.err, "/dev/kvm")) << r.err;
}

// ---- With KVM ----------------------------------------------------------

TEST(FlintVm, DemoGuestShowsItsDevicesWorking) {
  REQUIRE_KVM();
  ProcessResult r = Flint({"run", "--cpus", "2", "--no-reboot"});
  EXPECT_EQ(r.exit_status, 1) << r.err;  // debug-exit 0
  EXPECT_TRUE(Has(r.out, "flint demo guest")) << r.out;
  EXPECT_TRUE(Has(r.out, "cpus: 2")) << r.out;
  EXPECT_TRUE(Has(r.out, "all devices OK")) << r.out;
}

TEST(FlintVm, ExitCodeTravelsThroughDebugExit) {
  REQUIRE_KVM();
  ProcessResult r = Guest("flint.prog=exitcode flint.code=5");
  EXPECT_EQ(r.exit_status, 11) << r.out << r.err;
}

TEST(FlintVm, AcpiPowerOffExitsZero) {
  REQUIRE_KVM();
  ProcessResult r = Guest("flint.prog=poweroff");
  EXPECT_EQ(r.exit_status, 0) << r.out << r.err;
  EXPECT_TRUE(Has(r.err, "power-off")) << r.err;
  EXPECT_FALSE(Has(r.out, "poweroff failed")) << r.out;
}

TEST(FlintVm, I8042ResetStopsWithNoReboot) {
  REQUIRE_KVM();
  ProcessResult r = Guest("flint.prog=reset");
  EXPECT_EQ(r.exit_status, 0) << r.out << r.err;
  EXPECT_TRUE(Has(r.err, "reset")) << r.err;
  EXPECT_FALSE(Has(r.out, "reset failed")) << r.out;
}

TEST(FlintVm, GuestExceptionIsReported) {
  REQUIRE_KVM();
  ProcessResult r = Guest("flint.prog=fault");
  EXPECT_EQ(r.exit_status, 0xff) << r.out << r.err;
  EXPECT_TRUE(Has(r.out, "EXCEPTION vector=6")) << r.out;
}

TEST(FlintVm, SerialInputReachesTheGuest) {
  REQUIRE_KVM();
  ProcessResult r = Guest("flint.prog=echo", {}, "abcq");
  EXPECT_EQ(r.exit_status, 1) << r.err;
  EXPECT_TRUE(Has(r.out, "abc")) << r.out;
}

TEST(FlintVm, SerialToFileAndStats) {
  REQUIRE_KVM();
  std::string path = kBuild + "/vm_test_serial.txt";
  ProcessResult r = Guest("flint.prog=hello", {"--serial", "file:" + path, "--stats"});
  EXPECT_EQ(r.exit_status, 1) << r.err;
  EXPECT_FALSE(Has(r.out, "hello from flint guest"));
  ProcessResult cat = RunProcess({"cat", path});
  EXPECT_TRUE(Has(cat.out, "hello from flint guest")) << cat.out;
  EXPECT_TRUE(Has(r.err, "exits:")) << r.err;
  EXPECT_TRUE(Has(r.err, "pio serial@0x3f8")) << r.err;
}

TEST(FlintVm, MalformedKernelIsRejected) {
  REQUIRE_KVM();
  std::string path = kBuild + "/vm_test_garbage.bin";
  RunProcess({"sh", "-c", "head -c 4096 /dev/urandom > " + path});
  ProcessResult r = Flint({"run", "--kernel", path});
  EXPECT_EQ(r.exit_status, 6);
  EXPECT_FALSE(r.err.empty());
}

// ---- Linux, as far as this machine's KVM lets it go (PLATFORM.md) ------

TEST(FlintLinux, VmlinuxPrintsItsFirstConsoleLines) {
  REQUIRE_KVM();
  std::string vmlinux = kBuild + "/linux/vmlinux";
  if (!FileExists(vmlinux)) GTEST_SKIP() << vmlinux << " missing: run tests/linux/fetch-kernel.sh";
  ProcessResult r = Flint({"run", "--kernel", vmlinux, "--memory", "512M", "--cmdline",
                           "console=ttyS0 earlyprintk=serial flint.marker=1234"},
                          "", 30000);
  EXPECT_TRUE(Has(r.out, "Linux version")) << r.out << r.err;
  EXPECT_TRUE(Has(r.out, "flint.marker=1234")) << r.out;
}

TEST(FlintLinux, BzImageDecompressorStarts) {
  REQUIRE_KVM();
  std::string bz = kBuild + "/linux/vmlinuz";
  if (!FileExists(bz)) GTEST_SKIP() << bz << " missing: run tests/linux/fetch-kernel.sh";
  ProcessResult r = Flint({"run", "--kernel", bz, "--memory", "512M", "--cmdline",
                           "console=ttyS0 earlyprintk=serial"},
                          "", 30000);
  EXPECT_TRUE(Has(r.out, "Decompressing Linux")) << r.out << r.err;
}

}  // namespace
}  // namespace flint
