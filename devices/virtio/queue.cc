#include "devices/virtio/queue.h"

#include <bit>
#include <cstring>
#include <string>
#include <utility>

#include "absl/strings/str_format.h"

namespace flint::virtio {
namespace {

static_assert(std::endian::native == std::endian::little,
              "virtio 1.x rings are little-endian; flint reads them natively");

// Descriptor flags (virtio 1.2 §2.7.5).
constexpr uint16_t kDescNext = 1;
constexpr uint16_t kDescWrite = 2;
constexpr uint16_t kDescIndirect = 4;
// Ring flags.
constexpr uint16_t kAvailNoInterrupt = 1;
constexpr uint16_t kUsedNoNotify = 1;

constexpr uint64_t kDescSize = 16;
constexpr uint64_t kMaxChainBytes = 1ull << 32;

// One descriptor table entry, as laid out in guest memory.
struct Desc {
  uint64_t addr;
  uint32_t len;
  uint16_t flags;
  uint16_t next;
};
static_assert(sizeof(Desc) == kDescSize);

// Copies a descriptor out of guest memory exactly once. The compiler barrier
// keeps the compiler from re-reading a field from guest memory later (the
// guest may rewrite it under us: every check must apply to the value used).
Desc ReadDesc(const uint8_t* p) {
  Desc d;
  std::memcpy(&d, p, sizeof(d));
  __atomic_signal_fence(__ATOMIC_SEQ_CST);
  return d;
}

uint16_t Load16(const uint8_t* p, int order) {
  return __atomic_load_n(reinterpret_cast<const uint16_t*>(p), order);
}
void Store16(uint8_t* p, uint16_t v, int order) {
  __atomic_store_n(reinterpret_cast<uint16_t*>(p), v, order);
}
void Store32(uint8_t* p, uint32_t v, int order) {
  __atomic_store_n(reinterpret_cast<uint32_t*>(p), v, order);
}

absl::Status Violation(uint16_t head, const std::string& what) {
  return absl::InvalidArgumentError(
      absl::StrFormat("virtqueue: chain at head %u: %s", head, what));
}

absl::StatusOr<uint8_t*> ResolveArea(const GuestMemory& memory, const char* name, uint64_t gpa,
                                     uint64_t len, uint64_t align) {
  if (gpa % align != 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "virtqueue: %s area at 0x%x is not %u-byte aligned", name, gpa, align));
  }
  auto s = memory.Slice(gpa, len);
  if (!s.ok()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "virtqueue: %s area [0x%x, +0x%x) is not inside one guest RAM region", name, gpa, len));
  }
  return s->data();
}

absl::Status BrokenError() {
  return absl::FailedPreconditionError(
      "virtqueue is broken by an earlier guest error; the device needs a reset");
}

// Checks one buffer descriptor and appends it to the chain.
absl::Status AddSegment(const GuestMemory& memory, uint16_t head, const Desc& d,
                               bool* seen_writable, DescriptorChain* out) {
  if (d.len == 0) return Violation(head, "zero-length buffer");
  const bool writable = (d.flags & kDescWrite) != 0;
  if (!writable && *seen_writable) {
    return Violation(head, "device-readable buffer after a device-writable one");
  }
  if (d.addr + d.len < d.addr) {
    return Violation(head, absl::StrFormat("buffer [0x%x, +0x%x) wraps the address space",
                                           d.addr, d.len));
  }
  auto s = memory.Slice(d.addr, d.len);
  if (!s.ok()) {
    return Violation(head, absl::StrFormat("buffer [0x%x, +0x%x) is not inside one RAM region",
                                           d.addr, d.len));
  }
  out->total_len += d.len;
  if (out->total_len >= kMaxChainBytes) return Violation(head, "chain totals 4 GiB or more");
  out->segments.push_back(
      Segment{.gpa = d.addr, .len = d.len, .device_writable = writable, .host = s->data()});
  *seen_writable = *seen_writable || writable;
  return absl::OkStatus();
}

// Walks the table an indirect descriptor `d` points at (virtio 1.2 §2.7.5.3).
absl::Status WalkIndirect(const GuestMemory& memory, uint16_t head, const Desc& d,
                                 bool* seen_writable, DescriptorChain* out) {
  if (d.len == 0 || d.len % kDescSize != 0) {
    return Violation(head, absl::StrFormat(
                               "indirect table length %u is not a non-zero multiple of 16", d.len));
  }
  const uint32_t n = d.len / kDescSize;
  if (n > kMaxQueueSize) {
    return Violation(head, absl::StrFormat("indirect table has %u entries (at most 32768)", n));
  }
  if (d.addr + d.len < d.addr) return Violation(head, "indirect table wraps the address space");
  auto table = memory.Slice(d.addr, d.len);
  if (!table.ok()) {
    return Violation(head, absl::StrFormat(
                               "indirect table [0x%x, +0x%x) is not inside one RAM region",
                               d.addr, d.len));
  }
  uint32_t i = 0;
  for (uint32_t count = 1;; ++count) {
    if (count > n) {
      return Violation(head, "indirect chain loops or is longer than its table");
    }
    const Desc e = ReadDesc(table->data() + kDescSize * i);
    if (e.flags & kDescIndirect) return Violation(head, "nested indirect descriptor");
    if (absl::Status s = AddSegment(memory, head, e, seen_writable, out); !s.ok()) return s;
    if (!(e.flags & kDescNext)) return absl::OkStatus();
    if (e.next >= n) {
      return Violation(head, absl::StrFormat("indirect next index %u out of range (table of %u)",
                                             e.next, n));
    }
    i = e.next;
  }
}

}  // namespace

absl::StatusOr<SplitQueue> SplitQueue::Create(const GuestMemory& memory, const Layout& layout,
                                              uint64_t features) {
  const uint64_t size = layout.size;
  if (size == 0 || (size & (size - 1)) != 0 || size > kMaxQueueSize) {
    return absl::InvalidArgumentError(
        absl::StrFormat("virtqueue: size %u is not a power of two in [1, 32768]", size));
  }
  SplitQueue q;
  q.memory_ = &memory;
  q.size_ = layout.size;
  q.event_idx_ = (features & kFeatureEventIdx) != 0;
  q.indirect_ = (features & kFeatureIndirectDesc) != 0;
  auto desc = ResolveArea(memory, "descriptor", layout.desc, kDescSize * size, 16);
  if (!desc.ok()) return desc.status();
  auto avail = ResolveArea(memory, "driver (available ring)", layout.avail, 6 + 2 * size, 2);
  if (!avail.ok()) return avail.status();
  auto used = ResolveArea(memory, "device (used ring)", layout.used, 6 + 8 * size, 4);
  if (!used.ok()) return used.status();
  q.desc_ = *desc;
  q.avail_ = *avail;
  q.used_ = *used;
  return q;
}

absl::Status SplitQueue::Fail(absl::Status s) {
  broken_ = true;
  return s;
}

absl::StatusOr<uint16_t> SplitQueue::Pending() {
  // Acquire: the ring entries and descriptors written before idx are visible.
  const uint16_t avail_idx = Load16(avail_ + 2, __ATOMIC_ACQUIRE);
  const uint16_t pending = static_cast<uint16_t>(avail_idx - next_avail_);
  if (pending > size_) {
    return Fail(absl::InvalidArgumentError(absl::StrFormat(
        "virtqueue: available index %u ran %u entries ahead of the device (queue size %u)",
        avail_idx, pending, size_)));
  }
  return pending;
}

absl::StatusOr<bool> SplitQueue::Pop(DescriptorChain* out) {
  if (broken_) return BrokenError();
  absl::StatusOr<uint16_t> pending = Pending();
  if (!pending.ok()) return pending.status();
  if (*pending == 0) return false;

  const uint16_t head =
      Load16(avail_ + 4 + 2 * static_cast<uint32_t>(next_avail_ & (size_ - 1)), __ATOMIC_RELAXED);
  if (head >= size_) {
    return Fail(absl::InvalidArgumentError(
        absl::StrFormat("virtqueue: head index %u out of range (queue size %u)", head, size_)));
  }
  out->head = head;
  out->segments.clear();  // keeps its capacity: no allocation in steady state
  out->total_len = 0;

  bool seen_writable = false;
  uint16_t idx = head;
  for (uint32_t count = 1;; ++count) {
    if (count > size_) {
      return Fail(Violation(head, "chain loops or is longer than the queue"));
    }
    const Desc d = ReadDesc(desc_ + kDescSize * idx);
    if (d.flags & kDescIndirect) {
      if (!indirect_) {
        return Fail(Violation(head, "indirect descriptor but INDIRECT_DESC was not negotiated"));
      }
      if (d.flags & kDescNext) return Fail(Violation(head, "indirect descriptor with NEXT set"));
      // The WRITE flag of the descriptor naming the table is ignored (§2.7.5.3.2).
      if (absl::Status s = WalkIndirect(*memory_, head, d, &seen_writable, out); !s.ok()) {
        return Fail(std::move(s));
      }
      break;
    }
    if (absl::Status s = AddSegment(*memory_, head, d, &seen_writable, out); !s.ok()) {
      return Fail(std::move(s));
    }
    if (!(d.flags & kDescNext)) break;
    if (d.next >= size_) {
      return Fail(Violation(
          head, absl::StrFormat("next index %u out of range (queue size %u)", d.next, size_)));
    }
    idx = d.next;
  }

  ++next_avail_;
  if (event_idx_ && notify_enabled_) {
    // Ask to be notified when the driver makes the next entry available.
    Store16(used_ + 4 + 8 * static_cast<uint32_t>(size_), next_avail_, __ATOMIC_RELAXED);
  }
  return true;
}

absl::Status SplitQueue::AddUsed(uint16_t head, uint32_t written, bool publish) {
  if (broken_) return BrokenError();
  if (head >= size_) {
    return Fail(absl::InvalidArgumentError(absl::StrFormat(
        "virtqueue: used head %u out of range (queue size %u)", head, size_)));
  }
  uint8_t* elem = used_ + 4 + 8 * static_cast<uint32_t>(next_used_ & (size_ - 1));
  Store32(elem, head, __ATOMIC_RELAXED);
  Store32(elem + 4, written, __ATOMIC_RELAXED);
  ++next_used_;
  if (publish) PublishUsed();
  return absl::OkStatus();
}

void SplitQueue::PublishUsed() {
  if (broken_) return;
  // Release: the elements are visible before the index that covers them.
  Store16(used_ + 2, next_used_, __ATOMIC_RELEASE);
}

bool SplitQueue::ShouldNotify() {
  if (broken_) return false;
  // The used->idx store must be globally visible before we read the driver's
  // suppression state, or both sides could decide the other will act.
  __atomic_thread_fence(__ATOMIC_SEQ_CST);
  if (!event_idx_) {
    return (Load16(avail_, __ATOMIC_RELAXED) & kAvailNoInterrupt) == 0;
  }
  const uint16_t event = Load16(avail_ + 4 + 2 * static_cast<uint32_t>(size_), __ATOMIC_RELAXED);
  const uint16_t old_idx = signalled_used_;
  const uint16_t new_idx = next_used_;
  const bool valid = signalled_used_valid_;
  signalled_used_ = new_idx;
  signalled_used_valid_ = true;
  if (!valid) return true;
  // vring_need_event: did [old_idx, new_idx) cross used_event?
  return static_cast<uint16_t>(new_idx - event - 1) < static_cast<uint16_t>(new_idx - old_idx);
}

void SplitQueue::DisableNotification() {
  notify_enabled_ = false;
  if (broken_) return;
  // With EVENT_IDX, avail_event simply stops advancing (Pop leaves it alone).
  if (!event_idx_) Store16(used_, kUsedNoNotify, __ATOMIC_RELAXED);
}

absl::StatusOr<bool> SplitQueue::EnableNotification() {
  if (broken_) return BrokenError();
  notify_enabled_ = true;
  if (event_idx_) {
    Store16(used_ + 4 + 8 * static_cast<uint32_t>(size_), next_avail_, __ATOMIC_RELAXED);
  } else {
    Store16(used_, 0, __ATOMIC_RELAXED);
  }
  // Publish the re-arm before looking at avail->idx again: a driver that
  // added buffers before seeing it did not notify, so we must find them.
  __atomic_thread_fence(__ATOMIC_SEQ_CST);
  absl::StatusOr<uint16_t> pending = Pending();
  if (!pending.ok()) return pending.status();
  return *pending != 0;
}

}  // namespace flint::virtio
