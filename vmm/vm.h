// One virtual machine: guest memory, the in-kernel irqchip, the buses and
// platform devices, and one thread per vCPU. Lifecycle:
//   Create() -> Start() -> [Pause()/Resume()]* -> RequestStop() -> Wait()
// Any vCPU, device or outside thread may request a stop; the first reason
// wins, every vCPU thread is kicked out of KVM_RUN and joined.
#pragma once

#include <pthread.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "vmm/boot/loader.h"
#include "vmm/bus.h"
#include "vmm/exit_stats.h"
#include "vmm/guest_memory.h"
#include "vmm/kvm/kvm.h"
#include "vmm/kvm/unique_fd.h"
#include "vmm/stop_reason.h"
#include "vmm/vm_config.h"

namespace flint {

class Serial;

class Vm {
 public:
  static absl::StatusOr<std::unique_ptr<Vm>> Create(const Kvm& kvm, VmConfig config);
  ~Vm();

  absl::Status Start();
  void RequestStop(StopReason reason);
  // Blocks until every vCPU is parked (or the VM stops).
  void Pause();
  void Resume();
  // Blocks until the VM stops; joins the vCPU threads.
  StopReason Wait();
  // Readable (eventfd) once a stop was requested; for poll loops.
  int stop_fd() const { return stop_fd_.get(); }
  bool paused() const { return control_.load() == kPaused; }

  ExitStatsSnapshot Stats() const;
  // CLOCK_MONOTONIC nanoseconds when the boot vCPU first entered KVM_RUN (0: not yet).
  int64_t first_run_ns() const { return first_run_ns_.load(); }
  // Bytes of guest RAM resident in host memory (pages the guest or loader touched).
  uint64_t ResidentGuestBytes() const;
  const GuestMemory& memory() const { return memory_; }
  uint32_t num_vcpus() const { return static_cast<uint32_t>(vcpus_.size()); }
  Serial* serial() const { return serial_.get(); }
  const BootEntry& boot_entry() const { return boot_entry_; }

 private:
  enum Control : int { kRun = 0, kPaused = 1, kStop = 2 };
  struct VcpuSlot {
    KvmVcpu vcpu;
    std::unique_ptr<VcpuExitStats> stats;
    pthread_t thread{};
    std::thread runner;
  };

  Vm(KvmVm vm, GuestMemory memory, VmConfig config);
  absl::Status Build(const Kvm& kvm);
  void VcpuLoop(VcpuSlot& slot);
  // Called on a vCPU thread when control_ != kRun; returns true to exit.
  bool Park(VcpuSlot& slot);
  void KickAll();
  void HandleIo(const VcpuSlot& slot, kvm_run* run);
  void HandleMmio(const VcpuSlot& slot, kvm_run* run);
  std::string DumpRegisters(const KvmVcpu& vcpu) const;

  KvmVm vm_;
  GuestMemory memory_;
  VmConfig config_;
  Bus pio_{"pio"};
  Bus mmio_{"mmio"};
  std::shared_ptr<Serial> serial_;
  std::unique_ptr<class IrqLine> com1_irq_;
  BootEntry boot_entry_{};
  std::vector<std::unique_ptr<VcpuSlot>> vcpus_;
  UniqueFd stop_fd_;
  UniqueFd ioeventfd_sink_;
  std::atomic<int64_t> first_run_ns_{0};

  std::atomic<int> control_{kRun};
  absl::Mutex mu_;
  absl::CondVar cv_;
  int parked_ ABSL_GUARDED_BY(mu_) = 0;
  bool stop_requested_ ABSL_GUARDED_BY(mu_) = false;
  StopReason stop_reason_ ABSL_GUARDED_BY(mu_);
  bool started_ = false;
  bool joined_ = false;
};

}  // namespace flint
