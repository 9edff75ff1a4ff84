// The line between the virtio-pci transport (devices/virtio/virtio_pci.*)
// and a device type (virtio-blk, later virtio-net). The transport owns the
// PCI function, the registers, feature negotiation, the status state machine,
// queue set-up, notification ioeventfds and interrupts; the device owns what
// happens to the buffers.
//
// Threading: every VirtioDevice method except the config-space and
// identification calls runs on the VM's event loop thread (the transport
// hands Activate/Reset over with EventLoop::RunSync), so device state needs
// no lock against itself. ReadConfig/WriteConfig run on vCPU threads; a
// device whose config changes at run time locks around it.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "devices/virtio/queue.h"
#include "vmm/event_loop.h"
#include "vmm/guest_memory.h"

namespace flint::virtio {

// Device status bits (virtio 1.2 §2.1).
inline constexpr uint8_t kStatusAcknowledge = 1;
inline constexpr uint8_t kStatusDriver = 2;
inline constexpr uint8_t kStatusDriverOk = 4;
inline constexpr uint8_t kStatusFeaturesOk = 8;
inline constexpr uint8_t kStatusNeedsReset = 64;
inline constexpr uint8_t kStatusFailed = 128;

// How a device reaches the driver. Implemented by the transport.
class Interrupts {
 public:
  virtual ~Interrupts() = default;
  // The device put buffers on queue `index`'s used ring and the queue's
  // ShouldNotify() said yes.
  virtual void SignalUsed(uint16_t index) = 0;
  // The device configuration changed (virtio-net link status, a resize).
  virtual void SignalConfigChange() = 0;
  // The guest broke the protocol: sets DEVICE_NEEDS_RESET, raises a config
  // interrupt, logs `why` once. The device stops processing until Reset().
  virtual void NeedsReset(const std::string& why) = 0;
};

struct ActiveQueue {
  uint16_t index = 0;
  SplitQueue* queue = nullptr;  // owned by the transport; valid until Reset()
  int notify_fd = -1;           // eventfd the driver's notifications signal; owned by the transport
};

struct ActivateContext {
  const GuestMemory* memory = nullptr;
  EventLoop* loop = nullptr;
  Interrupts* interrupts = nullptr;
  uint64_t features = 0;              // what the driver accepted
  std::vector<ActiveQueue> queues;    // the queues the driver enabled, by index
};

class VirtioDevice {
 public:
  virtual ~VirtioDevice() = default;

  virtual std::string_view name() const = 0;  // "virtio-blk"
  virtual uint16_t device_id() const = 0;     // virtio device type: 2 block, 1 net
  virtual uint32_t pci_class() const = 0;     // PCI class code (24 bits)
  // Device-type feature bits offered (the transport adds VERSION_1,
  // RING_INDIRECT_DESC and RING_EVENT_IDX).
  virtual uint64_t features() const = 0;
  virtual uint16_t num_queues() const = 0;
  virtual uint16_t max_queue_size() const = 0;

  // Device configuration structure; bounds already checked by the transport
  // against config_size().
  virtual uint32_t config_size() const = 0;
  virtual void ReadConfig(uint32_t offset, std::span<uint8_t> data) = 0;
  virtual void WriteConfig(uint32_t offset, std::span<const uint8_t> data) = 0;

  // DRIVER_OK: start serving the queues (add their notify fds to the loop).
  // An error puts the device into NEEDS_RESET.
  virtual absl::Status Activate(const ActivateContext& ctx) = 0;
  // Device reset: stop serving, wait for or cancel in-flight I/O; on return
  // nothing touches guest memory or the queues any more.
  virtual void Reset() = 0;

  // One line of counters for --stats and the API ("requests=... bytes_read=...").
  virtual std::string StatsLine() const = 0;
};

}  // namespace flint::virtio
