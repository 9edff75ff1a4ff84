// Pause, resume and stop of a running VM through the Vm class itself (the
// API the per-VM gRPC service will drive), on real KVM with the embedded test
// guest. The guest loops on a port write flint handles, so its progress is
// visible in the exit counters: they must freeze while the VM is paused.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <memory>
#include <thread>

#include "tests/guest/embedded_guest.h"
#include "tests/support/subprocess.h"
#include "vmm/kvm/kvm.h"
#include "vmm/stop_reason.h"
#include "vmm/vm.h"

namespace flint {
namespace {

class VmLifecycle : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string why;
    if (!testing::KvmAvailable(&why)) GTEST_SKIP() << why;
    absl::StatusOr<Kvm> kvm = Kvm::Open();
    ASSERT_TRUE(kvm.ok()) << kvm.status();
    kvm_ = std::make_unique<Kvm>(std::move(*kvm));
    null_fd_ = open("/dev/null", O_WRONLY | O_CLOEXEC);
    ASSERT_GE(null_fd_, 0);
  }
  void TearDown() override {
    if (null_fd_ >= 0) close(null_fd_);
  }

  std::unique_ptr<Vm> Boot(uint32_t cpus, const std::string& cmdline) {
    VmConfig c;
    c.cpus = cpus;
    c.memory_bytes = 64ull << 20;
    c.kernel = EmbeddedGuestImage();
    c.cmdline = cmdline;
    c.serial_out_fd = null_fd_;
    absl::StatusOr<std::unique_ptr<Vm>> vm = Vm::Create(*kvm_, c);
    EXPECT_TRUE(vm.ok()) << vm.status();
    if (!vm.ok()) return nullptr;
    EXPECT_TRUE((*vm)->Start().ok());
    return std::move(*vm);
  }

  std::unique_ptr<Kvm> kvm_;
  int null_fd_ = -1;
};

uint64_t Exits(const Vm& vm) { return vm.Stats().total_exits; }

void SleepMs(int ms) { std::this_thread::sleep_for(std::chrono::milliseconds(ms)); }

TEST_F(VmLifecycle, PausedVcpusMakeNoProgressAndResumeContinues) {
  std::unique_ptr<Vm> vm = Boot(2, "flint.prog=bench-pio-handled flint.iters=1000000000");
  ASSERT_NE(vm, nullptr);
  SleepMs(100);
  const uint64_t running = Exits(*vm);
  EXPECT_GT(running, 0u);

  vm->Pause();  // returns once every vCPU thread is parked
  const uint64_t paused_at = Exits(*vm);
  SleepMs(200);
  EXPECT_EQ(Exits(*vm), paused_at) << "a paused vCPU still ran guest code";

  vm->Resume();
  SleepMs(200);
  EXPECT_GT(Exits(*vm), paused_at) << "the guest did not continue after Resume";

  vm->RequestStop(StopReason{StopKind::kSignal, kExitSignal, "test stop"});
  StopReason r = vm->Wait();
  EXPECT_EQ(r.kind, StopKind::kSignal);
  EXPECT_EQ(r.detail, "test stop");
}

TEST_F(VmLifecycle, StopWhilePausedAndStopOfHaltedVcpus) {
  // `idle` halts every vCPU with interrupts on: KVM keeps them in the kernel,
  // so only the kick signal can get them out.
  std::unique_ptr<Vm> vm = Boot(4, "flint.prog=idle");
  ASSERT_NE(vm, nullptr);
  SleepMs(100);
  vm->Pause();
  vm->RequestStop(StopReason{StopKind::kSignal, kExitSignal, "stopped while paused"});
  StopReason r = vm->Wait();
  EXPECT_EQ(r.kind, StopKind::kSignal);
  EXPECT_EQ(r.exit_status, kExitSignal);
}

TEST_F(VmLifecycle, FirstStopReasonWins) {
  std::unique_ptr<Vm> vm = Boot(1, "flint.prog=exitcode flint.code=9");
  ASSERT_NE(vm, nullptr);
  StopReason r = vm->Wait();
  EXPECT_EQ(r.kind, StopKind::kDebugExit);
  EXPECT_EQ(r.exit_status, (9 << 1) | 1);
  // A later request changes nothing.
  vm->RequestStop(StopReason{StopKind::kSignal, kExitSignal, "late"});
  EXPECT_EQ(vm->Wait().kind, StopKind::kDebugExit);
}

}  // namespace
}  // namespace flint
