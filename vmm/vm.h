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
#include "vmm/event_loop.h"
#include "vmm/exit_stats.h"
#include "vmm/guest_memory.h"
#include "vmm/kvm/kvm.h"
#include "vmm/kvm/unique_fd.h"
#include "vmm/stop_reason.h"
#include "vmm/vm_config.h"

namespace flint {

class Serial;
class PowerButton;
class KvmDeviceHost;
namespace pci {
class PciRoot;
}
namespace virtio {
class VirtioPciDevice;
class VirtioDevice;
class VirtioNet;
}
namespace net {
class NetBackend;
}

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
  // Presses the ACPI power button (devices/power_button.h): the guest's OS
  // gets a power-button notification and normally powers off through ACPI
  // S5. Only asks: a guest may ignore it. Any thread; while paused, the
  // guest sees it on Resume.
  void PressPowerButton();

  ExitStatsSnapshot Stats() const;
  // CLOCK_MONOTONIC nanoseconds when the boot vCPU first entered KVM_RUN (0: not yet).
  int64_t first_run_ns() const { return first_run_ns_.load(); }
  // Bytes of guest RAM resident in host memory (pages the guest or loader touched).
  uint64_t ResidentGuestBytes() const;
  const GuestMemory& memory() const { return memory_; }
  uint32_t num_vcpus() const { return static_cast<uint32_t>(vcpus_.size()); }
  Serial* serial() const { return serial_.get(); }
  const BootEntry& boot_entry() const { return boot_entry_; }
  // One line per PCI device ("00:01.0 virtio-blk ..."), for --stats.
  std::vector<std::string> DeviceStats() const;
  // NIC `index` (in --net order) gets a new backend while the guest runs:
  // link down, swap, link up. The MAC stays; `config` gives the backend.
  // Any thread but the device event loop.
  absl::Status SwapNic(size_t index, const NicConfig& config);
  // Each NIC's state, in --net order.
  struct NicState {
    const char* backend;      // "passt" or "tap"
    std::string description;  // the backend's own line: "passt pid=.. restarts=.. ..."
    bool link_up;
  };
  std::vector<NicState> Nics() const;
  // A NIC as one line, for the control socket: "nic 0 backend=passt pid=.. link=up".
  static std::string NicLine(size_t index, const NicState& nic);
  std::vector<std::string> NicInfo() const;
  // Things the user should know about how the VM was built (an I/O engine
  // fallback), printed once by the caller.
  const std::vector<std::string>& notes() const { return notes_; }

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
  absl::Status AddPciDevices();
  // Wraps `device` in the virtio-pci transport and puts it on the PCI bus.
  absl::Status AddVirtioFunction(std::unique_ptr<virtio::VirtioDevice> device);
  absl::StatusOr<std::unique_ptr<net::NetBackend>> MakeNetBackend(const NicConfig& config,
                                                                  size_t index);
  void VcpuLoop(VcpuSlot& slot);
  // Called on a vCPU thread when control_ != kRun; returns true to exit.
  bool Park(VcpuSlot& slot);
  void KickAll();
  void HandleIo(const VcpuSlot& slot, kvm_run* run);
  void HandleMmio(const VcpuSlot& slot, kvm_run* run);
  std::string DumpRegisters(const KvmVcpu& vcpu) const;

  // Declaration order is teardown order reversed: PCI devices (which reset
  // through the event loop and free their MSI routes) go before the loop,
  // the device host and the KVM VM; guest memory outlives them all.
  KvmVm vm_;
  GuestMemory memory_;
  VmConfig config_;
  std::unique_ptr<KvmDeviceHost> device_host_;
  std::unique_ptr<EventLoop> io_loop_;
  std::unique_ptr<pci::PciRoot> pci_;
  struct PciFunction {
    uint8_t slot;
    std::shared_ptr<virtio::VirtioPciDevice> device;
  };
  std::vector<PciFunction> pci_devices_;
  struct Nic {
    virtio::VirtioNet* device;  // owned by its PciFunction
    NicConfig config;
  };
  std::vector<Nic> nics_;
  std::vector<std::string> notes_;
  Bus pio_{"pio"};
  Bus mmio_{"mmio"};
  std::shared_ptr<Serial> serial_;
  std::unique_ptr<class IrqLine> com1_irq_;
  std::shared_ptr<PowerButton> power_button_;
  std::unique_ptr<class IrqLine> ged_irq_;
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
