// A hostile guest against virtio-blk: the blk-hostile-* programs of the test
// guest submit a looping chain, a buffer outside guest RAM, an indirect chain
// that runs past its table, and a device-writable request header. flint must
// put the device into NEEDS_RESET, survive, and serve a valid read after the
// guest resets the device (guest exit(0): status 1). QEMU is the reference
// for "the VMM survives": it handles some of these differently (QEMU 7.2 maps
// the outside-RAM buffer to nothing and completes the request), so for it
// only survival, recovery and a report line are asserted.
// Every request the programs make is a read: the image must not change.
#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "tests/support/disk_image.h"
#include "tests/support/output.h"
#include "tests/support/subprocess.h"

namespace flint {
namespace {

using ::flint::testing::Describe;
using ::flint::testing::Has;
using ::flint::testing::KvmAvailable;
using ::flint::testing::ProcessResult;
using ::flint::testing::RunProcess;

constexpr const char* kQemu = "/usr/bin/qemu-system-x86_64";

using ::flint::testing::ReadFile;

// 1 MiB of a byte ramp in the build tree.
std::string Ramp() {
  std::string data(1 << 20, '\0');
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<char>(i * 13 + i / 512);
  return data;
}


class BlkHostileTest : public ::testing::TestWithParam<const char*> {
 protected:
  void SetUp() override {
    std::string why;
    if (!KvmAvailable(&why)) GTEST_SKIP() << why;
    ASSERT_TRUE(image_.ok()) << "cannot create a test image in " << FLINT_BUILD_ROOT;
    before_ = ReadFile(image_.path());
  }
  std::string Program() const { return std::string("flint.prog=") + GetParam(); }
  void ExpectImageUnchanged() {
    EXPECT_TRUE(ReadFile(image_.path()) == before_)
        << "the programs only read, yet the image changed";
  }
  ::flint::testing::TempImage image_{FLINT_BUILD_ROOT, "blk-hostile", Ramp()};
  std::string before_;
};

TEST_P(BlkHostileTest, FlintPutsTheDeviceIntoNeedsResetAndRecovers) {
  ProcessResult r = RunProcess({FLINT_BINARY, "run", "--no-reboot", "--memory", "128M",
                                "--cmdline", Program(), "--disk",
                                "path=" + image_.path() + ",serial=hostile"},
                               "", 60000);
  ASSERT_TRUE(r.exited) << Describe(r);
  EXPECT_EQ(r.exit_status, 1) << Describe(r);
  EXPECT_TRUE(Has(r.out, "hostile: needs_reset\n")) << Describe(r);
  EXPECT_TRUE(Has(r.out, "hostile: recovered\n")) << Describe(r);
  ExpectImageUnchanged();
}

TEST_P(BlkHostileTest, QemuSurvivesAndTheGuestReportsWhatHappened) {
  if (access(kQemu, X_OK) != 0) GTEST_SKIP() << kQemu << " missing (qemu-system-x86)";
  ProcessResult r = RunProcess(
      {kQemu, "-M", "microvm,accel=kvm,rtc=on,pcie=on", "-cpu", "host,-arch-capabilities", "-m",
       "128", "-nodefaults", "-no-user-config", "-nographic", "-serial", "stdio", "-kernel",
       FLINT_GUEST_ELF, "-append", Program() + " flint.ecam=0xe0000000", "-device",
       "isa-debug-exit,iobase=0xf4", "-no-reboot", "-drive",
       "file=" + image_.path() + ",if=none,id=d0,format=raw,cache=writeback", "-device",
       "virtio-blk-pci,drive=d0,disable-legacy=on"},
      "", 60000);
  // Survived: the guest ended the VM through debug-exit, after recovering
  // (1: NEEDS_RESET seen, 5: the device handled the request another way).
  ASSERT_TRUE(r.exited) << Describe(r);
  EXPECT_TRUE(r.exit_status == 1 || r.exit_status == 5) << Describe(r);
  EXPECT_TRUE(Has(r.out, "hostile: needs_reset\n") || Has(r.out, "hostile: no needs_reset"))
      << Describe(r);
  EXPECT_TRUE(Has(r.out, "hostile: recovered\n")) << Describe(r);
  ExpectImageUnchanged();
}

INSTANTIATE_TEST_SUITE_P(Programs, BlkHostileTest,
                         ::testing::Values("blk-hostile-loop", "blk-hostile-oob",
                                           "blk-hostile-long", "blk-hostile-wheader"),
                         [](const ::testing::TestParamInfo<const char*>& i) {
                           std::string n = std::string(i.param).substr(12);  // after "blk-hostile-"
                           n[0] = static_cast<char>(n[0] - 'a' + 'A');
                           return n;
                         });

}  // namespace
}  // namespace flint
