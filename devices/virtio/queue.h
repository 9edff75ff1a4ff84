// The split virtqueue (virtio 1.2 §2.7) as seen by a device, with
// VIRTIO_F_RING_INDIRECT_DESC and VIRTIO_F_RING_EVENT_IDX. The guest is
// hostile: every index, address, length and chain is checked, and any
// violation returns an error; the queue is then broken (every later call
// fails) and the device must ask for a reset (DEVICE_NEEDS_RESET).
//
// The three ring areas are resolved to host pointers once, at creation,
// through GuestMemory (the one bounds-checked accessor); descriptor buffers
// are resolved per chain, each wholly inside one RAM region.
//
// Memory ordering: avail->idx is read with acquire before any ring entry or
// descriptor it covers; used entries are written before used->idx is
// published with release; a full fence separates publishing used->idx (or
// re-enabling notifications) from reading the driver's event index / flags.
//
// Not thread-safe: one queue belongs to one event-loop thread.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "vmm/guest_memory.h"

namespace flint::virtio {

inline constexpr uint16_t kMaxQueueSize = 32768;
inline constexpr uint64_t kFeatureIndirectDesc = 1ull << 28;
inline constexpr uint64_t kFeatureEventIdx = 1ull << 29;
inline constexpr uint64_t kFeatureVersion1 = 1ull << 32;

// One buffer of a chain, already checked to lie inside guest RAM.
struct Segment {
  uint64_t gpa = 0;
  uint32_t len = 0;        // never 0
  bool device_writable = false;
  uint8_t* host = nullptr;  // host view of [gpa, gpa + len)
};

struct DescriptorChain {
  uint16_t head = 0;               // what AddUsed() takes back
  std::vector<Segment> segments;   // reused across Pop() calls: no allocation in steady state
  uint64_t total_len = 0;          // sum of segment lengths (< 4 GiB)
};

class SplitQueue {
 public:
  struct Layout {
    uint16_t size = 0;   // power of two, 1..32768
    uint64_t desc = 0;   // 16-byte aligned, 16 * size bytes
    uint64_t avail = 0;  // 2-byte aligned, 6 + 2 * size bytes
    uint64_t used = 0;   // 4-byte aligned, 6 + 8 * size bytes
  };

  // `features` is what the driver accepted (INDIRECT_DESC, EVENT_IDX
  // honoured). Fails, naming the area, when the layout is misaligned or any
  // area is not inside guest RAM.
  static absl::StatusOr<SplitQueue> Create(const GuestMemory& memory, const Layout& layout,
                                           uint64_t features);

  // Pops the next available chain into *out. Returns false when the ring is
  // empty. Errors (the queue is then broken): avail->idx ran more than `size`
  // ahead, head or next index out of range, a loop or a chain longer than the
  // queue (or the indirect table), an indirect descriptor that is nested,
  // chained or not a multiple of 16 bytes, a zero-length buffer, a buffer
  // outside guest RAM or wrapping, a readable descriptor after a writable
  // one, a chain totalling 4 GiB or more.
  absl::StatusOr<bool> Pop(DescriptorChain* out);

  // Returns a chain to the driver with `written` bytes written by the device.
  // With publish = false the entry is written but used->idx is not advanced
  // until a later AddUsed(..., true) or PublishUsed(): how a device hands
  // over several chains at once (a frame spread over merged rx buffers),
  // so a polling driver never sees only some of them.
  absl::Status AddUsed(uint16_t head, uint32_t written, bool publish = true);
  void PublishUsed();

  // After AddUsed() calls: whether the driver wants an interrupt now
  // (EVENT_IDX used_event crossed, or VIRTQ_AVAIL_F_NO_INTERRUPT clear).
  bool ShouldNotify();

  // Notification suppression while the device is busy draining the ring:
  // Disable sets VIRTQ_USED_F_NO_NOTIFY (or stops advancing avail_event);
  // Enable re-arms and returns true when buffers arrived meanwhile (the
  // caller must then pop again, or it would miss them).
  void DisableNotification();
  absl::StatusOr<bool> EnableNotification();

  uint16_t size() const { return size_; }
  bool broken() const { return broken_; }

  SplitQueue(SplitQueue&&) noexcept = default;
  SplitQueue& operator=(SplitQueue&&) noexcept = default;

 private:
  SplitQueue() = default;
  absl::Status Fail(absl::Status s);
  // Entries the driver made available that Pop has not taken yet; more than
  // the queue holds breaks the queue.
  absl::StatusOr<uint16_t> Pending();

  const GuestMemory* memory_ = nullptr;
  uint16_t size_ = 0;
  bool event_idx_ = false;
  bool indirect_ = false;
  bool broken_ = false;
  uint8_t* desc_ = nullptr;
  uint8_t* avail_ = nullptr;
  uint8_t* used_ = nullptr;
  uint16_t next_avail_ = 0;       // device's avail position
  uint16_t next_used_ = 0;        // device's used->idx shadow
  uint16_t signalled_used_ = 0;   // used idx at the last interrupt
  bool signalled_used_valid_ = false;
  bool notify_enabled_ = true;    // false between DisableNotification and EnableNotification
};

}  // namespace flint::virtio
