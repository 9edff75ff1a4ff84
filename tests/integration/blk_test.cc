// virtio-blk end to end: the test guest's blk programs (tests/guest/
// blk_progs.cc) drive a virtio-blk-pci disk under QEMU (the reference
// device) and under flint, and the host checks the image file afterwards.
// The sector layout and data pattern are the guest README's.
//
// Backends: QEMU 7.2 microvm with pcie=on (its ECAM is at 0xe0000000 but it
// has no MCFG table, so the guest is told with flint.ecam=), with io_uring +
// cache=none and threads + cache=writeback; flint with each I/O engine, with
// and without direct=on. Two more cases boot QEMU q35 (SeaBIOS, ~4 s) to
// cover the guest's MCFG lookup and its 0xcf8 fallback.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <fstream>
#include <iterator>
#include <ostream>
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
constexpr uint64_t kSector = 512;
constexpr uint64_t kImageSectors = 8192;  // 4 MiB
constexpr char kFiller = static_cast<char>(0xe5);  // "never written"
constexpr int kTimeoutMs = 60000;

// The guest's data pattern (README.md): bytes 0..7 of sector s hold s
// little-endian, byte i >= 8 is (s * 7 + i) & 0xff.
std::string PatternSector(uint64_t s) {
  std::string b(kSector, '\0');
  for (uint64_t i = 0; i < kSector; ++i) {
    b[i] = static_cast<char>(i < 8 ? (s >> (8 * i)) : (s * 7 + i));
  }
  return b;
}

enum class Fill { kPattern, kZero, kFiller };

::testing::AssertionResult RangeIs(const std::string& img, uint64_t first, uint64_t count, Fill f) {
  for (uint64_t s = first; s < first + count; ++s) {
    if ((s + 1) * kSector > img.size()) {
      return ::testing::AssertionFailure() << "image too short for sector " << s;
    }
    const std::string got = img.substr(s * kSector, kSector);
    const std::string want = f == Fill::kPattern ? PatternSector(s)
                             : f == Fill::kZero  ? std::string(kSector, '\0')
                                                 : std::string(kSector, kFiller);
    if (got != want) {
      size_t i = 0;
      while (got[i] == want[i]) ++i;
      return ::testing::AssertionFailure()
             << "sector " << s << " byte " << i << ": want 0x" << std::hex
             << (static_cast<unsigned>(want[i]) & 0xff) << " got 0x"
             << (static_cast<unsigned>(got[i]) & 0xff) << " ("
             << (f == Fill::kPattern ? "pattern" : f == Fill::kZero ? "zeros" : "filler")
             << " expected over [" << std::dec << first << ", " << first + count << "))";
    }
  }
  return ::testing::AssertionSuccess();
}

// A raw image in the build tree filled with kFiller ("never written").
class Image : public ::flint::testing::TempImage {
 public:
  Image() : TempImage(FLINT_BUILD_ROOT, "blk-test", std::string(kImageSectors * kSector, kFiller)) {}
  void WriteSectors(uint64_t first, const std::string& data) const {
    ASSERT_TRUE(WriteAt(first * kSector, data));
  }
};

struct Disk {
  bool readonly = false;
  int queues = 1;
  std::string serial = "blk-test-disk0";
};

// One way of running the guest with a disk.
struct Backend {
  std::string name;
  bool qemu;
  std::string engine;  // flint --io-engine / QEMU aio=
  bool direct;         // flint direct=on / QEMU cache=none

  ProcessResult Run(const std::string& image, const std::string& guest_args, const Disk& d,
                    const std::string& machine = "microvm") const {
    std::vector<std::string> args;
    if (qemu) {
      std::string drive = "file=" + image + ",if=none,id=d0,format=raw,discard=unmap,aio=" +
                          engine + (direct ? ",cache=none" : ",cache=writeback") +
                          (d.readonly ? ",readonly=on" : "");
      std::string dev = "virtio-blk-pci,drive=d0,disable-legacy=on,serial=" + d.serial;
      if (d.queues > 1) dev += ",num-queues=" + std::to_string(d.queues);
      std::string append = guest_args;
      std::string m = "q35,accel=kvm,sata=off,smbus=off";
      if (machine == "microvm") {
        m = "microvm,accel=kvm,rtc=on,pcie=on";
        append += " flint.ecam=0xe0000000";
      }
      args = {kQemu, "-M", m, "-cpu", "host,-arch-capabilities", "-m", "128",
              "-nodefaults", "-no-user-config", "-nographic", "-serial", "stdio",
              "-kernel", FLINT_GUEST_ELF, "-append", append,
              "-device", "isa-debug-exit,iobase=0xf4", "-no-reboot",
              "-drive", drive, "-device", dev};
    } else {
      std::string disk = "path=" + image + ",serial=" + d.serial;
      if (d.readonly) disk += ",readonly=on";
      if (direct) disk += ",direct=on";
      if (d.queues > 1) disk += ",queues=" + std::to_string(d.queues);
      args = {FLINT_BINARY, "run", "--no-reboot", "--memory", "128M", "--cmdline", guest_args,
              "--disk", disk, "--io-engine", engine};
    }
    return RunProcess(args, "", kTimeoutMs);
  }
};

void PrintTo(const Backend& b, std::ostream* os) { *os << b.name; }


class BlkTest : public ::testing::TestWithParam<Backend> {
 protected:
  void SetUp() override {
    std::string why;
    if (!KvmAvailable(&why)) GTEST_SKIP() << why;
    if (GetParam().qemu && access(kQemu, X_OK) != 0) {
      GTEST_SKIP() << kQemu << " missing (qemu-system-x86)";
    }
    ASSERT_TRUE(image_.ok()) << "cannot create a test image in " << FLINT_BUILD_ROOT;
  }
  ProcessResult Run(const std::string& guest_args, const Disk& d = Disk{}) {
    return GetParam().Run(image_.path(), guest_args, d);
  }
  Image image_;
};

// The functional program: GET_ID, multi-segment and indirect I/O read back,
// DISCARD, WRITE_ZEROES, FLUSH, past-end IOERR, unknown-type UNSUPP; then the
// image holds exactly what the README says.
TEST_P(BlkTest, FunctionalProgramPassesAndImageMatches) {
  ProcessResult r = Run("flint.prog=blk", Disk{.serial = "serial-0042"});
  ASSERT_EQ(r.exit_status, 1) << Describe(r);
  EXPECT_TRUE(Has(r.out, "blk: capacity=8192 sectors")) << r.out;
  EXPECT_TRUE(Has(r.out, "blk: id=serial-0042\n")) << r.out;
  for (const char* line : {"blk: multi-segment ok", "blk: indirect ok\n", "blk: discard ok\n",
                           "blk: write-zeroes ok\n", "blk: flush ok\n",
                           "blk: past-end ioerr ok\n", "blk: unsupported type ok\n",
                           "blk: all ok\n"}) {
    EXPECT_TRUE(Has(r.out, line)) << "missing '" << line << "' in\n" << r.out;
  }
  const std::string img = image_.contents();
  ASSERT_EQ(img.size(), kImageSectors * kSector) << "the image changed size";
  EXPECT_TRUE(RangeIs(img, 0, 128, Fill::kPattern)) << "multi-segment writes";
  EXPECT_TRUE(RangeIs(img, 128, 64, Fill::kPattern)) << "indirect write";
  EXPECT_TRUE(RangeIs(img, 192, 64, Fill::kFiller)) << "gap the guest never writes";
  EXPECT_TRUE(RangeIs(img, 256, 64, Fill::kZero)) << "DISCARD range";
  EXPECT_TRUE(RangeIs(img, 320, 64, Fill::kZero)) << "WRITE_ZEROES range";
  // Includes the last sector: the write across the end must not land.
  EXPECT_TRUE(RangeIs(img, 384, kImageSectors - 384, Fill::kFiller)) << "rest of the disk";
}

TEST_P(BlkTest, ReadOnlyDiskRefusesWritesAndServesReads) {
  std::string pattern;
  for (uint64_t s = 0; s < 8; ++s) pattern += PatternSector(s);
  image_.WriteSectors(0, pattern);
  const std::string before = image_.contents();
  ProcessResult r = Run("flint.prog=blk-ro", Disk{.readonly = true});
  ASSERT_EQ(r.exit_status, 1) << Describe(r);
  EXPECT_TRUE(Has(r.out, " ro=1 ")) << r.out;
  EXPECT_TRUE(Has(r.out, "blk-ro: ok\n")) << r.out;
  EXPECT_TRUE(image_.contents() == before) << "a read-only disk's image changed";
}

TEST_P(BlkTest, EveryQueueOfAMultiQueueDiskServesRequests) {
  ProcessResult r = Run("flint.prog=blk-mq", Disk{.queues = 4});
  ASSERT_EQ(r.exit_status, 1) << Describe(r);
  EXPECT_TRUE(Has(r.out, " mq=1 ")) << r.out;
  EXPECT_TRUE(Has(r.out, "blk-mq: queues=4 ok\n")) << r.out;
  const std::string img = image_.contents();
  EXPECT_TRUE(RangeIs(img, 1024, 4, Fill::kPattern)) << "one sector per queue";
  EXPECT_TRUE(RangeIs(img, 1028, 4, Fill::kFiller));
}

// MSI-X seen from the guest without taking interrupts: the vector lands in
// the LAPIC's IRR; masked, the PBA bit is set; unmasked, it is delivered.
TEST_P(BlkTest, MsixVectorReachesTheLapicAndMaskingSetsThePendingBit) {
  ProcessResult r = Run("flint.prog=blk-msix");
  ASSERT_EQ(r.exit_status, 1) << Describe(r);
  EXPECT_TRUE(Has(r.out, "blk-msix: irr ok\n")) << r.out;
  EXPECT_TRUE(Has(r.out, "blk-msix: pba ok\n")) << r.out;
  EXPECT_TRUE(Has(r.out, "blk-msix: unmask ok\n")) << r.out;
}

// The benchmark program (bench/blk_iops.py) runs and reports what the host
// needs (ops, bytes, notifications); no timing is judged.
TEST_P(BlkTest, BenchProgramKeepsItsQueueDepthAndReports) {
  ProcessResult r =
      Run("flint.prog=blk-bench flint.mode=seqwrite flint.bs=8192 flint.qd=8 flint.ops=400");
  ASSERT_EQ(r.exit_status, 1) << Describe(r);
  EXPECT_TRUE(Has(r.out, "RESULT name=blk-seqwrite bs=8192 qd=8 ops=400 cycles=")) << r.out;
  EXPECT_TRUE(Has(r.out, " bytes=3276800 kicks=")) << r.out;
  r = Run("flint.prog=blk-bench flint.mode=randread flint.bs=4096 flint.qd=16 flint.ops=500");
  ASSERT_EQ(r.exit_status, 1) << Describe(r);
  EXPECT_TRUE(Has(r.out, "RESULT name=blk-randread bs=4096 qd=16 ops=500 cycles=")) << r.out;
}

const Backend kBackends[] = {
    {"QemuIoUringCacheNone", true, "io_uring", true},
    {"QemuThreadsWriteback", true, "threads", false},
    {"FlintIoUringDirect", false, "io_uring", true},
    {"FlintIoUringBuffered", false, "io_uring", false},
    {"FlintThreadsDirect", false, "threads", true},
    {"FlintThreadsBuffered", false, "threads", false},
};

INSTANTIATE_TEST_SUITE_P(Backends, BlkTest, ::testing::ValuesIn(kBackends),
                         [](const ::testing::TestParamInfo<Backend>& i) { return i.param.name; });

// QEMU q35 boots through SeaBIOS (~4 s here) but has what microvm lacks: an
// MCFG table and configuration mechanism #1. One run each proves the guest's
// two other ways into config space.
class BlkQ35Test : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string why;
    if (!KvmAvailable(&why)) GTEST_SKIP() << why;
    if (access(kQemu, X_OK) != 0) GTEST_SKIP() << kQemu << " missing (qemu-system-x86)";
    ASSERT_TRUE(image_.ok());
  }
  ProcessResult Run(const std::string& guest_args) {
    const Backend qemu{"q35", true, "io_uring", true};
    return qemu.Run(image_.path(), guest_args, Disk{}, "q35");
  }
  Image image_;
};

TEST_F(BlkQ35Test, GuestFindsEcamThroughTheMcfgTable) {
  ProcessResult r = Run("flint.prog=blk");
  ASSERT_EQ(r.exit_status, 1) << Describe(r);
  EXPECT_TRUE(Has(r.out, "pci: ecam at 0xb0000000 (MCFG)")) << r.out;
  EXPECT_TRUE(Has(r.out, "blk: all ok\n")) << r.out;
  EXPECT_TRUE(RangeIs(image_.contents(), 0, 192, Fill::kPattern));
}

TEST_F(BlkQ35Test, GuestFallsBackToConfigMechanismOne) {
  ProcessResult r = Run("flint.prog=blk flint.pci=cf8");
  ASSERT_EQ(r.exit_status, 1) << Describe(r);
  EXPECT_TRUE(Has(r.out, "pci: config mechanism #1 (0xcf8)")) << r.out;
  EXPECT_TRUE(Has(r.out, "blk: all ok\n")) << r.out;
  EXPECT_TRUE(RangeIs(image_.contents(), 0, 192, Fill::kPattern));
}

}  // namespace
}  // namespace flint
