// flint test guest: a polled virtio 1.2 driver over the PCI modern transport,
// split virtqueues only. Runs at CPL3 with interrupts off: it notifies by
// writing the queue index to the queue's notify address and polls the used
// ring with a bounded wait. Rings live in RAM the program provides
// (identity-mapped, so guest-virtual == guest-physical).
#pragma once

#include "tests/guest/guest.h"
#include "tests/guest/pci.h"

namespace guest::virtio {

// Feature bits (virtio 1.2 §6).
inline constexpr u64 kFIndirectDesc = 1ull << 28;
inline constexpr u64 kFEventIdx = 1ull << 29;
inline constexpr u64 kFVersion1 = 1ull << 32;

// Device status (§2.1).
inline constexpr u8 kStatusAcknowledge = 1;
inline constexpr u8 kStatusDriver = 2;
inline constexpr u8 kStatusDriverOk = 4;
inline constexpr u8 kStatusFeaturesOk = 8;
inline constexpr u8 kStatusNeedsReset = 64;
inline constexpr u8 kStatusFailed = 128;

// Descriptor flags (§2.7).
inline constexpr u16 kDescNext = 1;
inline constexpr u16 kDescWrite = 2;
inline constexpr u16 kDescIndirect = 4;

inline constexpr u16 kNoVector = 0xffff;
inline constexpr u16 kMaxQueues = 16;
inline constexpr u16 kMaxQueueSize = 256;
inline constexpr u32 kIndirectTables = 4;  // per queue
inline constexpr u32 kIndirectLen = 32;    // descriptors per table

// Upper bound for one wait on the device (~5 s on a 1-5 GHz TSC).
inline constexpr u64 kWaitCycles = 15000000000ull;

struct Desc {
  u64 addr;
  u32 len;
  u16 flags;
  u16 next;
};
static_assert(sizeof(Desc) == 16);

// One buffer of a request: the device reads it, or (device_writes) writes it.
struct Buf {
  u64 addr;
  u32 len;
  bool device_writes;
};
template <typename T>
Buf out_buf(const T* p, u32 len = sizeof(T)) {
  return Buf{reinterpret_cast<u64>(p), len, false};
}
template <typename T>
Buf in_buf(T* p, u32 len = sizeof(T)) {
  return Buf{reinterpret_cast<u64>(p), len, true};
}

class Queue {
 public:
  // Memory for one queue of up to kMaxQueueSize entries: descriptor table,
  // driver (avail) ring and device (used) ring, one page each.
  struct alignas(4096) Memory {
    Desc desc[kMaxQueueSize];
    alignas(4096) u16 avail[2 + kMaxQueueSize + 1];  // flags, idx, ring, used_event
    alignas(4096) u32 used[1 + 2 * kMaxQueueSize + 1];  // flags|idx, {id, len}..., avail_event
    alignas(16) Desc indirect[kIndirectTables][kIndirectLen];
  };

  // Zeroes the rings and the driver's bookkeeping.
  void reset(Memory* mem, u16 index, u16 size, u64 notify_addr, bool event_idx, bool interrupts);

  u16 index() const { return index_; }
  u16 size() const { return size_; }
  u16 num_free() const { return nfree_; }
  Memory* memory() const { return mem_; }

  // Writes a chain for `bufs` (directly, or as one INDIRECT descriptor whose
  // table holds them) and publishes it in the avail ring. Returns the head,
  // or -1 when the queue has too few free descriptors or indirect tables.
  int add(const Buf* bufs, u32 n, bool indirect = false);
  // Publishes an already written chain: for programs that build descriptors
  // by hand (the hostile ones). The head is not tracked as in flight.
  void publish_raw(u16 head);
  // Notifies the device, unless EVENT_IDX says it asked not to be.
  void kick();
  // Non-blocking: the next used element, if any; frees its descriptors.
  // fail()s on an id that is not in flight.
  bool poll(u32* id, u32* len);
  // Waits (bounded by kWaitCycles) for the next used element; fail()s with
  // `what` on timeout.
  void wait(u32* id, u32* len, const char* what);
  // Used elements the device has returned that poll() has not consumed.
  u16 used_pending() const;
  u64 kicks() const { return kicks_; }

 private:
  u16 alloc_desc();
  u16 used_idx() const;

  // No default member initializers: Device objects are globals, and a
  // non-trivial constructor would need start-up code the guest never runs
  // (it has no .init_array support); .bss is zero and reset() sets the rest.
  Memory* mem_;
  u16 index_, size_;
  u64 notify_;
  bool event_idx_, interrupts_;
  u16 avail_idx_;   // next avail ring slot
  u16 kicked_idx_;  // avail idx at the last notification
  u16 last_used_;
  u16 nfree_;
  u16 free_[kMaxQueueSize];
  u16 next_[kMaxQueueSize];   // our copy of each descriptor's next (never read back)
  u16 chain_[kMaxQueueSize];  // descriptors in the chain headed here, 0 if not in flight
  u8 table_of_[kMaxQueueSize];  // indirect table used by a head, 0xff if none
  bool table_busy_[kIndirectTables];
  u64 kicks_;
};

// Trivially constructible for the same reason as Queue: probe() clears it.
struct Device {
  pci::Function fn;
  pci::Bar bars[6];
  // Virtual (== physical) addresses of the structures the caps name.
  u64 common, notify, isr, device_cfg;
  u32 notify_len, notify_mult, device_cfg_len;
  // MSI-X, when the function has it.
  u8 msix_cap;
  u16 msix_entries;
  u64 msix_table, msix_pba;

  u64 offered;   // device features
  u64 features;  // what the driver accepted
  u16 num_queues;  // as the common config reports
  u16 active_queues;
  Queue queue[kMaxQueues];
  // Ring memory, one entry per queue init() sets up: the caller points this
  // at RAM it owns before init() (probe() leaves it alone). Not in .bss, so
  // programs that use no virtio device do not pay for zeroing it at boot.
  Queue::Memory* mem;
};
static_assert(__is_trivially_constructible(Device));

// Finds the `index`th virtio device of `type` (1: net, 2: block) on bus 0
// (modern ID 0x1040 + type, or the transitional one), assigns its BARs and
// locates its vendor capabilities. Returns false if there is no such
// function; fail()s when a required capability is missing or malformed.
bool probe(u16 type, u32 index, Device* d);

struct Setup {
  u64 wanted = 0;         // features the driver accepts when offered (VERSION_1 always)
  u16 queues = 1;         // queues to set up; fail()s if the device has fewer
  u16 queue_size = kMaxQueueSize;  // upper bound; rounded down to a power of two
  u16 queue_vector = kNoVector;    // MSI-X vector for every queue set up
  bool interrupts = false;  // false: ask the device not to interrupt
};

// Reset, ACKNOWLEDGE, DRIVER, features, FEATURES_OK (checked), queues,
// DRIVER_OK. fail()s on any protocol error.
void init(Device* d, const Setup& s);
// Resets the device, sets ACKNOWLEDGE | DRIVER and returns the features it
// offers (also in d->offered), so a driver can size its Setup (virtio-net's
// control queue exists only with CTRL_VQ); init() starts over with a reset.
u64 offered_features(Device* d);
// Writes 0 to device_status and waits (bounded) until it reads 0.
void reset(Device* d);
u8 status(const Device& d);
// Waits up to `cycles` for any of `bits` in device_status.
bool wait_status(const Device& d, u8 bits, u64 cycles);

// Device-specific configuration (naturally aligned accesses).
u8 cfg8(const Device& d, u32 off);
u16 cfg16(const Device& d, u32 off);
u32 cfg32(const Device& d, u32 off);
u64 cfg64(const Device& d, u32 off);  // two halves, retried on a generation change

// MSI-X table entry `entry` and the capability's enable bit.
void msix_set_entry(const Device& d, u16 entry, u64 addr, u32 data, bool masked);
void msix_enable(const Device& d, bool on);
bool msix_pending(const Device& d, u16 entry);

}  // namespace guest::virtio
