// End-to-end tests of the flint binary. The VM tests need a usable /dev/kvm
// and are skipped, loudly and with the reason, where there is none; the
// command-line and error-path tests run everywhere.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <string>
#include <vector>

#include "tests/support/disk_image.h"
#include "tests/support/output.h"
#include "tests/support/subprocess.h"

namespace flint {
namespace {

using ::flint::testing::CountOf;
using ::flint::testing::Has;
using ::flint::testing::KvmAvailable;
using ::flint::testing::ProcessResult;
using ::flint::testing::RunProcess;

const std::string kFlint = FLINT_BINARY;
const std::string kBuild = FLINT_BUILD_ROOT;

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
  EXPECT_TRUE(Has(r.out, "cpus: 2")) << r.out;                    // MADT
  EXPECT_TRUE(Has(r.out, "acpi: RSDP XSDT FACP APIC MCFG DSDT checksums ok")) << r.out;
  EXPECT_TRUE(Has(r.out, "uart: scratch ok")) << r.out;
  EXPECT_TRUE(Has(r.out, "rtc ok")) << r.out;                     // CMOS clock present and sane
  EXPECT_TRUE(Has(r.out, "smp: 2 of 2 cpus online")) << r.out;    // INIT-SIPI-SIPI reached the AP
  EXPECT_TRUE(Has(r.out, "disk: none")) << r.out;
  EXPECT_TRUE(Has(r.out, "all devices OK")) << r.out;
}

// What scripts/demo.sh shows: the demo with a disk reads, rewrites (the same
// bytes) and flushes it through virtio-blk, and leaves the image unchanged.
TEST(FlintVm, DemoGuestUsesADiskWithoutChangingIt) {
  REQUIRE_KVM();
  std::string data(1 << 20, '\0');
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<char>(i * 7 + i / 4096);
  ::flint::testing::TempImage image(FLINT_BUILD_ROOT, "demo-disk", data);
  ASSERT_TRUE(image.ok());
  ProcessResult r = Flint({"run", "--no-reboot", "--stats", "--disk",
                           "path=" + image.path() + ",serial=demo-disk"});
  EXPECT_EQ(r.exit_status, 1) << r.out << r.err;
  EXPECT_TRUE(Has(r.out, "disk: virtio-blk capacity=2048 sectors id=demo-disk read, write, flush ok"))
      << r.out;
  EXPECT_TRUE(Has(r.out, "all devices OK")) << r.out;
  EXPECT_TRUE(Has(r.err, "reads=2 writes=1 flushes=1")) << r.err;  // --stats device line
  EXPECT_TRUE(image.contents() == data) << "the demo changed the disk's contents";
}

// `flint run --config FILE` (proto3 JSON, agent-api's schema) builds the
// same VM the flags would.
TEST(FlintVm, ConfigFileDescribesTheVm) {
  REQUIRE_KVM();
  ::flint::testing::TempImage image(FLINT_BUILD_ROOT, "config-disk", std::string(1 << 20, '\0'));
  ASSERT_TRUE(image.ok());
  const std::string json = R"({"cpus": 2, "memoryMib": 64, "cmdline": "flint.prog=demo",
      "disks": [{"path": ")" + image.path() + R"(", "serial": "from-json"}]})";
  ::flint::testing::TempImage config(FLINT_BUILD_ROOT, "vm-config", json);
  ASSERT_TRUE(config.ok());
  ProcessResult r = Flint({"run", "--no-reboot", "--config", config.path()});
  EXPECT_EQ(r.exit_status, 1) << r.out << r.err;
  EXPECT_TRUE(Has(r.out, "smp: 2 of 2 cpus online")) << r.out;
  EXPECT_TRUE(Has(r.out, "id=from-json read, write, flush ok")) << r.out;
  ProcessResult typo = Flint({"run", "--config", config.path(), "--memory", "128M"});
  EXPECT_EQ(typo.exit_status, 2);
  EXPECT_TRUE(Has(typo.err, "--memory is given on the command line")) << typo.err;
}

TEST(FlintVm, EightVcpusAllComeOnline) {
  REQUIRE_KVM();
  ProcessResult r = Flint({"run", "--cpus", "8", "--no-reboot"});
  EXPECT_EQ(r.exit_status, 1) << r.err;
  EXPECT_TRUE(Has(r.out, "cpus: 8")) << r.out;
  EXPECT_TRUE(Has(r.out, "smp: 8 of 8 cpus online")) << r.out;
}

// A guest that stops within microseconds of starting must not race the
// start-up of the other vCPU threads (it once crashed flint in KickAll).
TEST(FlintVm, ImmediateExitWithManyVcpusIsClean) {
  REQUIRE_KVM();
  for (int i = 0; i < 20; ++i) {
    ProcessResult r = Guest("flint.prog=exitcode flint.code=3", {"--cpus", "4"});
    ASSERT_EQ(r.exit_status, 7) << "run " << i << ": " << r.err;
  }
}

TEST(FlintVm, UnknownGuestProgramIsReported) {
  REQUIRE_KVM();
  ProcessResult r = Guest("flint.prog=bogus");
  EXPECT_EQ(r.exit_status, (0x7e << 1) | 1) << r.err;
  EXPECT_TRUE(Has(r.out, "unknown program bogus")) << r.out;
}

TEST(FlintVm, IoeventfdSinkTakesTheExitInTheKernel) {
  REQUIRE_KVM();
  ProcessResult r = Guest("flint.prog=bench-ioeventfd flint.iters=500", {"--ioeventfd-sink", "0x5f0", "--stats"});
  EXPECT_EQ(r.exit_status, 1) << r.err;
  EXPECT_TRUE(Has(r.out, "RESULT name=bench-ioeventfd iters=500")) << r.out;
  // 1500 guest writes (warm-up included) and none reached flint's bus.
  EXPECT_FALSE(Has(r.err, "pio unhandled")) << r.err;
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

TEST(FlintVm, TripleFaultIsReportedWithRegisters) {
  REQUIRE_KVM();
  ProcessResult r = Guest("flint.prog=triplefault");
  EXPECT_EQ(r.exit_status, 4) << r.out << r.err;
  EXPECT_TRUE(Has(r.err, "triple fault")) << r.err;
  EXPECT_TRUE(Has(r.err, "rip=")) << r.err;
  EXPECT_TRUE(Has(r.err, "idt=0/0")) << r.err;  // the guest's empty IDT, as dumped
}

// Without --no-reboot, a reset or a triple fault boots a fresh VM from the
// same image, again and again, until flint is stopped.
TEST(FlintVm, ResetAndTripleFaultRebootWithoutNoReboot) {
  REQUIRE_KVM();
  for (const char* prog : {"flint.prog=reset", "flint.prog=triplefault"}) {
    ProcessResult r = RunProcess({kFlint, "run", "--memory", "64M", "--cmdline", prog}, "", 4000);
    EXPECT_TRUE(r.timed_out) << prog << ": " << r.err;
    const size_t boots = CountOf(r.out, "about to triple fault") + CountOf(r.out, "resetting");
    EXPECT_GE(boots, 3u) << prog << ": " << r.out;
    EXPECT_TRUE(Has(r.err, "rebooting")) << r.err;
  }
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

// Both tests stop flint as soon as the line they wait for appears (SIGTERM:
// exit status 130), so they cost only the guest time needed to get there.
TEST(FlintLinux, VmlinuxThroughPvhPrintsItsFirstConsoleLines) {
  REQUIRE_KVM();
  std::string vmlinux = kBuild + "/linux/vmlinux";
  if (!FileExists(vmlinux)) GTEST_SKIP() << vmlinux << " missing: run tests/linux/fetch-kernel.sh";
  ProcessResult r = RunProcess({kFlint, "run", "--kernel", vmlinux, "--memory", "512M", "--cpus", "2",
                                "--cmdline", "console=ttyS0 earlyprintk=serial flint.marker=1234"},
                               "", 120000, "smpboot: Allowing");
  EXPECT_TRUE(r.stopped) << r.out << r.err;
  EXPECT_EQ(r.exit_status, 130) << r.err;
  EXPECT_TRUE(Has(r.out, "Linux version")) << r.out << r.err;
  // The command line travelled through hvm_start_info.
  EXPECT_TRUE(Has(r.out, "Command line: console=ttyS0 earlyprintk=serial flint.marker=1234")) << r.out;
  // The memory map travelled too: RAM below the EBDA, then 1 MiB .. 512 MiB.
  EXPECT_TRUE(Has(r.out, "[mem 0x0000000000100000-0x000000001fffffff] usable")) << r.out;
  // ACPI: the kernel found the RSDP and the MADT's two CPUs.
  EXPECT_TRUE(Has(r.out, "ACPI: RSDP 0x00000000000E0000")) << r.out;
  EXPECT_TRUE(Has(r.out, "smpboot: Allowing 2 CPUs")) << r.out;
}

// The bzImage path: 64-bit boot protocol, zero page, e820, compressed
// payload. This kernel's decompressor prints nothing (no
// CONFIG_X86_VERBOSE_BOOTUP), and it runs at emulated CPL0 here (about 1.5
// minutes, PLATFORM.md), so the test waits for the decompressed kernel's
// first lines, which prove the decompressor found everything it needed.
TEST(FlintLinux, BzImageDecompressesAndStartsTheKernel) {
  REQUIRE_KVM();
  std::string bz = kBuild + "/linux/vmlinuz";
  if (!FileExists(bz)) GTEST_SKIP() << bz << " missing: run tests/linux/fetch-kernel.sh";
  ProcessResult r = RunProcess({kFlint, "run", "--kernel", bz, "--memory", "512M", "--cmdline",
                                "console=ttyS0 earlyprintk=serial flint.marker=bz"},
                               "", 600000, "BIOS-e820: [mem 0x0000000000100000");
  EXPECT_TRUE(r.stopped) << r.out << r.err;
  EXPECT_TRUE(Has(r.out, "Linux version")) << r.out << r.err;
  EXPECT_TRUE(Has(r.out, "Command line: console=ttyS0 earlyprintk=serial flint.marker=bz")) << r.out;
}

}  // namespace
}  // namespace flint
