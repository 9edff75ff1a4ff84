// The modern virtio-pci transport (virtio 1.2 §4.1, VIRTIO_F_VERSION_1
// only): one PCI function per VirtioDevice, with every register in 64-bit
// memory BAR 0:
//
//   0x0000 common configuration    0x3000 notifications (queue q at 4 * q)
//   0x1000 ISR status              0x4000 MSI-X table
//   0x2000 device configuration    0x5000 MSI-X pending-bit array
//
// The transport owns feature negotiation, the device-status state machine,
// the queue registers and the SplitQueues built from them, one notification
// eventfd per queue (registered as an ioeventfd wherever BAR 0 is mapped),
// and interrupts (MSI-X when the guest enabled it, else INTx with the ISR).
//
// Threading: BarRead/BarWrite come from vCPU threads (possibly several at
// once), the Interrupts calls from the event-loop thread. Register state is
// guarded by mu_; status transitions that hand work to the loop
// (Activate/Reset through EventLoop::RunSync) are serialised by
// transition_mu_ and never hold mu_ across RunSync, because the loop thread
// takes mu_ to raise interrupts. Lock order: transition_mu_, mu_, then the
// Msix's lock (MSI-X enable and function mask change only under mu_).
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "devices/pci/config_space.h"
#include "devices/pci/msix.h"
#include "devices/pci/pci_device.h"
#include "devices/virtio/device.h"
#include "devices/virtio/queue.h"
#include "vmm/device_host.h"
#include "vmm/event_loop.h"
#include "vmm/guest_memory.h"
#include "vmm/kvm/unique_fd.h"

namespace flint::virtio {

// BAR 0 layout.
inline constexpr uint64_t kBarSize = 0x8000;
inline constexpr uint64_t kCommonCfgOffset = 0x0000;
inline constexpr uint64_t kIsrOffset = 0x1000;
inline constexpr uint64_t kDeviceCfgOffset = 0x2000;
inline constexpr uint64_t kNotifyOffset = 0x3000;
inline constexpr uint32_t kNotifyOffMultiplier = 4;
inline constexpr uint64_t kMsixTableOffset = 0x4000;
inline constexpr uint64_t kMsixPbaOffset = 0x5000;
inline constexpr uint16_t kNoVector = 0xffff;
// The MSI-X table (16 bytes per vector) must fit below the PBA.
inline constexpr uint16_t kMaxQueues = 255;

// virtio_pci_cap cfg_type values (virtio 1.2 §4.1.4).
inline constexpr uint8_t kCapCommonCfg = 1;
inline constexpr uint8_t kCapNotifyCfg = 2;
inline constexpr uint8_t kCapIsrCfg = 3;
inline constexpr uint8_t kCapDeviceCfg = 4;

// ISR status bits.
inline constexpr uint8_t kIsrQueue = 1;
inline constexpr uint8_t kIsrConfig = 2;

class VirtioPciDevice : public pci::PciDevice, public Interrupts {
 public:
  // Builds the PCI function for `device`: IDs vendor 0x1af4, device 0x1040 +
  // device_id(), revision 1, subsystem 0x1af4/0x1100, class
  // device->pci_class(), interrupt pin INTA; one 64-bit memory BAR 0
  // (non-prefetchable) holding everything; MSI-X with num_queues() + 1
  // vectors. `memory`, `host` and `loop` outlive the device.
  static absl::StatusOr<std::shared_ptr<VirtioPciDevice>> Create(
      std::unique_ptr<VirtioDevice> device, const GuestMemory* memory, DeviceHost* host,
      EventLoop* loop);
  // Resets an active device (on the loop) and removes its ioeventfds.
  ~VirtioPciDevice() override;

  VirtioDevice& device() { return *device_; }
  // Transport counters + the device's StatsLine(), one line.
  std::string StatsLine() const;

  // pci::PciDevice.
  std::string_view name() const override { return device_->name(); }
  pci::PciConfigSpace& config() override { return config_; }
  void ConfigWritten(uint16_t offset, size_t len) override;
  void BarRead(int bar, uint64_t offset, std::span<uint8_t> data) override;
  void BarWrite(int bar, uint64_t offset, std::span<const uint8_t> data) override;
  void BarMapped(int bar, std::optional<uint64_t> gpa) override;
  void AttachIntx(std::unique_ptr<IrqLine> line) override;

  // virtio::Interrupts (event-loop thread).
  void SignalUsed(uint16_t index) override;
  void SignalConfigChange() override;
  void NeedsReset(const std::string& why) override;

 private:
  struct QueueRegs {
    uint16_t size = 0;
    uint16_t msix_vector = kNoVector;
    bool enabled = false;
    uint64_t desc = 0;
    uint64_t driver = 0;
    uint64_t device = 0;
  };

  VirtioPciDevice(std::unique_ptr<VirtioDevice> device, const GuestMemory* memory,
                  DeviceHost* host, EventLoop* loop, const pci::PciIds& ids);
  absl::Status Init();

  uint64_t offered_features() const;
  void ReadCommon(uint64_t offset, std::span<uint8_t> data) ABSL_LOCKS_EXCLUDED(mu_);
  void WriteCommon(uint64_t offset, std::span<const uint8_t> data) ABSL_LOCKS_EXCLUDED(mu_);
  void WriteQueueReg(uint64_t offset, size_t len, uint64_t v) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void WriteStatus(uint8_t value) ABSL_LOCKS_EXCLUDED(mu_, transition_mu_);
  void Reset() ABSL_EXCLUSIVE_LOCKS_REQUIRED(transition_mu_) ABSL_LOCKS_EXCLUDED(mu_);
  void Activate() ABSL_EXCLUSIVE_LOCKS_REQUIRED(transition_mu_) ABSL_LOCKS_EXCLUDED(mu_);
  uint8_t ReadIsr() ABSL_LOCKS_EXCLUDED(mu_);
  void Notify(uint64_t offset);

  // Sets NEEDS_RESET (when DRIVER_OK, once per reset cycle) and raises the
  // config interrupt.
  void NeedsResetLocked(const std::string& why) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Raises a queue or config interrupt: MSI-X `vector`, or ISR `isr_bit` + INTx.
  void RaiseLocked(uint8_t isr_bit, uint16_t vector) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void UpdateIntxLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  uint16_t CheckVector(uint16_t v) const;

  const std::unique_ptr<VirtioDevice> device_;
  const GuestMemory* const memory_;
  DeviceHost* const host_;
  EventLoop* const loop_;
  const uint16_t num_queues_;
  const uint16_t max_queue_size_;

  // Config space: PciRoot serialises guest access to it. The loop thread only
  // touches the Interrupt Status bit, under mu_.
  pci::PciConfigSpace config_;
  std::unique_ptr<pci::Msix> msix_;
  std::vector<UniqueFd> notify_fds_;  // one eventfd per queue, fixed after Init()

  // Where BAR 0 decodes and which ioeventfds are registered there. Touched
  // only by BarMapped (serialised by PciRoot) and the destructor.
  std::optional<uint64_t> bar_gpa_;
  std::vector<bool> ioeventfd_added_;

  absl::Mutex transition_mu_ ABSL_ACQUIRED_BEFORE(mu_);
  mutable absl::Mutex mu_;
  uint32_t device_feature_select_ ABSL_GUARDED_BY(mu_) = 0;
  uint32_t driver_feature_select_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t driver_features_ ABSL_GUARDED_BY(mu_) = 0;
  uint16_t msix_config_ ABSL_GUARDED_BY(mu_) = kNoVector;
  uint8_t status_ ABSL_GUARDED_BY(mu_) = 0;
  uint8_t config_generation_ ABSL_GUARDED_BY(mu_) = 0;
  uint16_t queue_select_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<QueueRegs> queues_ ABSL_GUARDED_BY(mu_);
  uint8_t isr_ ABSL_GUARDED_BY(mu_) = 0;
  bool intx_disabled_ ABSL_GUARDED_BY(mu_) = false;  // command register bit 10
  bool intx_level_ ABSL_GUARDED_BY(mu_) = false;
  std::unique_ptr<IrqLine> intx_ ABSL_GUARDED_BY(mu_);
  // Built at DRIVER_OK, handed to the device, dropped after its Reset().
  std::vector<std::unique_ptr<SplitQueue>> active_ ABSL_GUARDED_BY(mu_);
  bool activated_ ABSL_GUARDED_BY(transition_mu_) = false;

  std::atomic<uint64_t> notifies_{0};     // notifications that reached BarWrite
  std::atomic<uint64_t> msi_sent_{0};
  std::atomic<uint64_t> intx_sent_{0};
  std::atomic<uint64_t> resets_{0};
  std::atomic<uint64_t> needs_reset_{0};
};

}  // namespace flint::virtio
