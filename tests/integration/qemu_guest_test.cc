// The test guest is a plain PVH ELF: the same image must boot under QEMU's
// microvm machine and behave as it does under flint. This proves the guest
// (and so every flint test built on it) does not lean on flint quirks, and it
// is what lets bench/ compare flint and QEMU on one image.
#include <gtest/gtest.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "tests/support/output.h"
#include "tests/support/subprocess.h"

namespace flint {
namespace {

using ::flint::testing::Has;
using ::flint::testing::KvmAvailable;
using ::flint::testing::ProcessResult;
using ::flint::testing::RunProcess;

constexpr const char* kQemu = "/usr/bin/qemu-system-x86_64";

// QEMU microvm as PLATFORM.md gives it (plus rtc=on: microvm has no CMOS
// clock by default); TCG where there is no KVM, so the
// guest's compatibility is still checked (slowly) on such a host.
ProcessResult Qemu(const std::string& append, int cpus = 1) {
  std::string why;
  const bool kvm = KvmAvailable(&why);
  std::vector<std::string> args = {
      kQemu, "-M", kvm ? "microvm,accel=kvm,rtc=on" : "microvm,accel=tcg,rtc=on",
      "-cpu", kvm ? "host,-arch-capabilities" : "max",
      "-smp", std::to_string(cpus), "-m", "64", "-nodefaults", "-no-user-config",
      "-nographic", "-serial", "stdio", "-kernel", FLINT_GUEST_ELF, "-append", append,
      "-device", "isa-debug-exit,iobase=0xf4", "-no-reboot"};
  return RunProcess(args, "", 120000);
}

#define REQUIRE_QEMU()                                                             \
  do {                                                                             \
    if (access(kQemu, X_OK) != 0) GTEST_SKIP() << kQemu << " missing (qemu-system-x86)"; \
  } while (0)

TEST(QemuPeer, HelloBootsUnderQemuMicrovm) {
  REQUIRE_QEMU();
  ProcessResult r = Qemu("flint.prog=hello");
  EXPECT_EQ(r.exit_status, 1) << r.out << r.err;
  EXPECT_TRUE(Has(r.out, "hello from flint guest")) << r.out << r.err;
}

TEST(QemuPeer, DebugExitCodeMatchesFlintConvention) {
  REQUIRE_QEMU();
  ProcessResult r = Qemu("flint.prog=exitcode flint.code=5");
  EXPECT_EQ(r.exit_status, 11) << r.out << r.err;
}

TEST(QemuPeer, DemoChecksPassUnderQemuToo) {
  REQUIRE_QEMU();
  ProcessResult r = Qemu("flint.prog=demo", 2);
  EXPECT_EQ(r.exit_status, 1) << r.out << r.err;
  EXPECT_TRUE(Has(r.out, "cpus: 2")) << r.out;
  EXPECT_TRUE(Has(r.out, "rtc ok")) << r.out;
  EXPECT_TRUE(Has(r.out, "smp: 2 of 2 cpus online")) << r.out;
  EXPECT_TRUE(Has(r.out, "all devices OK")) << r.out;
}

TEST(QemuPeer, GuestExceptionIsReportedUnderQemu) {
  REQUIRE_QEMU();
  ProcessResult r = Qemu("flint.prog=fault");
  EXPECT_EQ(r.exit_status, 0xff) << r.out << r.err;
  EXPECT_TRUE(Has(r.out, "EXCEPTION vector=6")) << r.out;
}

TEST(QemuPeer, BenchProgramPrintsAResultLine) {
  REQUIRE_QEMU();
  ProcessResult r = Qemu("flint.prog=bench-pio-handled flint.iters=2000");
  EXPECT_EQ(r.exit_status, 1) << r.out << r.err;
  EXPECT_TRUE(Has(r.out, "RESULT name=bench-pio-handled iters=2000 cycles_per_iter=")) << r.out;
}

}  // namespace
}  // namespace flint
