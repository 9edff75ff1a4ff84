// flint test guest: a polled virtio 1.2 driver over the PCI modern transport.
#include "tests/guest/virtio.h"

namespace guest::virtio {

namespace {

// virtio_pci_common_cfg (§4.1.4.3).
constexpr u32 kDeviceFeatureSelect = 0x00;
constexpr u32 kDeviceFeature = 0x04;
constexpr u32 kDriverFeatureSelect = 0x08;
constexpr u32 kDriverFeature = 0x0c;
constexpr u32 kConfigMsixVector = 0x10;
constexpr u32 kNumQueues = 0x12;
constexpr u32 kDeviceStatus = 0x14;
constexpr u32 kConfigGeneration = 0x15;
constexpr u32 kQueueSelect = 0x16;
constexpr u32 kQueueSize = 0x18;
constexpr u32 kQueueMsixVector = 0x1a;
constexpr u32 kQueueEnable = 0x1c;
constexpr u32 kQueueNotifyOff = 0x1e;
constexpr u32 kQueueDesc = 0x20;
constexpr u32 kQueueDriver = 0x28;
constexpr u32 kQueueDevice = 0x30;
constexpr u32 kCommonCfgMin = 0x38;

// virtio_pci_cap (§4.1.4): cfg_type values and field offsets.
constexpr u8 kCapCommon = 1;
constexpr u8 kCapNotify = 2;
constexpr u8 kCapIsr = 3;
constexpr u8 kCapDevice = 4;

constexpr u16 kAvailNoInterrupt = 1;
constexpr u16 kVendorVirtio = 0x1af4;

inline void barrier() { asm volatile("" ::: "memory"); }
// A store must be visible before a later load (EVENT_IDX checks): x86
// reorders exactly that pair.
inline void store_load_fence() { asm volatile("mfence" ::: "memory"); }

template <typename T>
T rd(u64 addr) {
  return mmio_read<T>(addr);
}
template <typename T>
void wr(u64 addr, T v) {
  mmio_write<T>(addr, v);
}

// The EVENT_IDX test (§2.7): notify iff new_idx passed event since old.
bool need_event(u16 event, u16 new_idx, u16 old) {
  return static_cast<u16>(new_idx - event - 1) < static_cast<u16>(new_idx - old);
}

}  // namespace

// ---- Queue ------------------------------------------------------------------

void Queue::reset(Memory* mem, u16 index, u16 size, u64 notify_addr, bool event_idx,
                  bool interrupts) {
  mem_ = mem;
  memset(mem, 0, sizeof(Memory));
  index_ = index;
  size_ = size;
  notify_ = notify_addr;
  event_idx_ = event_idx;
  interrupts_ = interrupts;
  avail_idx_ = kicked_idx_ = last_used_ = 0;
  nfree_ = size;
  for (u16 i = 0; i < size; ++i) {
    free_[i] = static_cast<u16>(size - 1 - i);  // hand out 0, 1, 2... first
    next_[i] = 0;
    chain_[i] = 0;
    table_of_[i] = 0xff;
  }
  for (bool& b : table_busy_) b = false;
  kicks_ = 0;
  volatile u16* avail = mem_->avail;
  if (event_idx_) avail[2 + size_] = interrupts_ ? 0 : 0x8000;  // used_event
  else avail[0] = interrupts_ ? 0 : kAvailNoInterrupt;
}

u16 Queue::alloc_desc() { return free_[--nfree_]; }

int Queue::add(const Buf* bufs, u32 n, bool indirect) {
  if (n == 0) return -1;
  volatile Desc* desc = mem_->desc;
  u16 head;
  if (indirect) {
    if (n > kIndirectLen || nfree_ < 1) return -1;
    u32 t = 0;
    while (t < kIndirectTables && table_busy_[t]) ++t;
    if (t == kIndirectTables) return -1;
    table_busy_[t] = true;
    Desc* table = mem_->indirect[t];
    for (u32 i = 0; i < n; ++i) {
      table[i] = Desc{bufs[i].addr, bufs[i].len,
                      static_cast<u16>((bufs[i].device_writes ? kDescWrite : 0) |
                                       (i + 1 < n ? kDescNext : 0)),
                      static_cast<u16>(i + 1 < n ? i + 1 : 0)};
    }
    head = alloc_desc();
    desc[head].addr = reinterpret_cast<u64>(table);
    desc[head].len = n * sizeof(Desc);
    desc[head].flags = kDescIndirect;
    desc[head].next = 0;
    table_of_[head] = static_cast<u8>(t);
    chain_[head] = 1;
  } else {
    if (nfree_ < n) return -1;
    u16 ids[kMaxQueueSize];
    for (u32 i = 0; i < n; ++i) ids[i] = alloc_desc();
    for (u32 i = 0; i < n; ++i) {
      const bool more = i + 1 < n;
      const u16 id = ids[i];
      next_[id] = more ? ids[i + 1] : 0;
      desc[id].addr = bufs[i].addr;
      desc[id].len = bufs[i].len;
      desc[id].flags = static_cast<u16>((bufs[i].device_writes ? kDescWrite : 0) |
                                        (more ? kDescNext : 0));
      desc[id].next = next_[id];
    }
    head = ids[0];
    table_of_[head] = 0xff;
    chain_[head] = static_cast<u16>(n);
  }
  publish_raw(head);
  return head;
}

void Queue::publish_raw(u16 head) {
  volatile u16* avail = mem_->avail;
  avail[2 + (avail_idx_ & (size_ - 1))] = head;
  barrier();  // descriptors and ring entry before the index
  ++avail_idx_;
  avail[1] = avail_idx_;
}

void Queue::kick() {
  if (event_idx_) {
    store_load_fence();  // our avail idx store before the avail_event load
    const volatile u16* used = reinterpret_cast<volatile u16*>(mem_->used);
    const u16 event = used[2 + 4 * size_];  // avail_event after the ring
    const u16 old = kicked_idx_;
    kicked_idx_ = avail_idx_;
    if (!need_event(event, avail_idx_, old)) return;
  }
  ++kicks_;
  wr<u16>(notify_, index_);
}

u16 Queue::used_idx() const { return reinterpret_cast<volatile u16*>(mem_->used)[1]; }

u16 Queue::used_pending() const { return static_cast<u16>(used_idx() - last_used_); }

bool Queue::poll(u32* id, u32* len) {
  if (used_idx() == last_used_) return false;
  barrier();  // the index before the element it covers
  const volatile u32* used = mem_->used;
  const u32 slot = last_used_ & (size_ - 1);
  const u32 got_id = used[1 + 2 * slot];
  const u32 got_len = used[2 + 2 * slot];
  ++last_used_;
  if (event_idx_) {
    // Interrupts wanted: at the next completion; else as far away as can be.
    mem_->avail[2 + size_] = static_cast<u16>(last_used_ + (interrupts_ ? 0 : 0x8000));
  }
  if (got_id >= size_ || chain_[got_id] == 0) {
    print("virtio: queue ");
    print_dec(index_);
    print(" used id ");
    print_dec(got_id);
    putc('\n');
    fail("virtio: device returned a descriptor id that is not in flight");
  }
  u16 d = static_cast<u16>(got_id);
  for (u16 i = 0, n = chain_[got_id]; i < n; ++i) {
    free_[nfree_++] = d;
    d = next_[d];
  }
  chain_[got_id] = 0;
  if (table_of_[got_id] != 0xff) table_busy_[table_of_[got_id]] = false;
  table_of_[got_id] = 0xff;
  barrier();  // the caller reads the buffers only after this
  *id = got_id;
  *len = got_len;
  return true;
}

void Queue::wait(u32* id, u32* len, const char* what) {
  const u64 start = rdtsc();
  while (!poll(id, len)) {
    if (rdtsc() - start > kWaitCycles) {
      print("virtio: no completion on queue ");
      print_dec(index_);
      print(" (avail idx ");
      print_dec(avail_idx_);
      print(", used idx ");
      print_dec(used_idx());
      print(")\n");
      fail(what);
    }
    cpu_relax();
  }
}

// ---- Device -----------------------------------------------------------------

bool probe(u16 type, u32 index, Device* d) {
  const u16 ids[] = {static_cast<u16>(0x1040 + type),
                     static_cast<u16>(type == 1 ? 0x1000 : type == 2 ? 0x1001 : 0xffff)};
  // Field by field: a Device{} temporary would be ~270 KiB on the stack.
  d->common = d->notify = d->isr = d->device_cfg = 0;
  d->notify_len = d->notify_mult = d->device_cfg_len = 0;
  d->msix_cap = 0;
  d->msix_entries = 0;
  d->msix_table = d->msix_pba = 0;
  d->offered = d->features = 0;
  d->num_queues = d->active_queues = 0;
  if (!pci::find(kVendorVirtio, ids, 2, index, &d->fn)) return false;
  pci::assign_bars(d->fn, d->bars);

  for (u8 cap = pci::find_cap(d->fn, pci::kCapVendor); cap != 0;
       cap = pci::find_cap(d->fn, pci::kCapVendor, cap)) {
    const u8 cap_len = pci::read8(d->fn, cap + 2);
    const u8 cfg_type = pci::read8(d->fn, cap + 3);
    const u8 bar = pci::read8(d->fn, cap + 4);
    const u32 offset = pci::read32(d->fn, cap + 8);
    const u32 length = pci::read32(d->fn, cap + 12);
    if (cfg_type < kCapCommon || cfg_type > kCapDevice) continue;  // PCI_CFG, SHM, ...
    if (cap_len < 16 || bar > 5 || d->bars[bar].io || d->bars[bar].size == 0) continue;
    const pci::Bar& b = d->bars[bar];
    if (offset > b.size || length > b.size - offset) fail("virtio: capability outside its BAR");
    const u64 addr = b.addr + offset;
    // The first capability of each type is the preferred one (§4.1.4).
    switch (cfg_type) {
      case kCapCommon:
        if (d->common == 0 && length >= kCommonCfgMin) d->common = addr;
        break;
      case kCapNotify:
        if (d->notify == 0 && cap_len >= 20) {
          d->notify = addr;
          d->notify_len = length;
          d->notify_mult = pci::read32(d->fn, cap + 16);
        }
        break;
      case kCapIsr:
        if (d->isr == 0) d->isr = addr;
        break;
      case kCapDevice:
        if (d->device_cfg == 0) {
          d->device_cfg = addr;
          d->device_cfg_len = length;
        }
        break;
    }
  }
  if (d->common == 0) fail("virtio: no common configuration capability");
  if (d->notify == 0) fail("virtio: no notification capability");
  if (d->isr == 0) fail("virtio: no ISR capability");

  if (const u8 cap = pci::find_cap(d->fn, pci::kCapMsix)) {
    const u16 control = pci::read16(d->fn, cap + 2);
    const u32 table = pci::read32(d->fn, cap + 4);
    const u32 pba = pci::read32(d->fn, cap + 8);
    const pci::Bar& tb = d->bars[table & 7];
    const pci::Bar& pb = d->bars[pba & 7];
    d->msix_entries = static_cast<u16>((control & 0x7ff) + 1);
    if ((table & 7) <= 5 && (pba & 7) <= 5 && tb.size != 0 && pb.size != 0 && !tb.io && !pb.io &&
        (table & ~7u) + 16ull * d->msix_entries <= tb.size && (pba & ~7u) + 8 <= pb.size) {
      d->msix_cap = cap;
      d->msix_table = tb.addr + (table & ~7u);
      d->msix_pba = pb.addr + (pba & ~7u);
    }
  }
  return true;
}

u8 status(const Device& d) { return rd<u8>(d.common + kDeviceStatus); }

bool wait_status(const Device& d, u8 bits, u64 cycles) {
  const u64 start = rdtsc();
  while (!(status(d) & bits)) {
    if (rdtsc() - start > cycles) return false;
    cpu_relax();
  }
  return true;
}

void reset(Device* d) {
  wr<u8>(d->common + kDeviceStatus, 0);
  const u64 start = rdtsc();
  while (status(*d) != 0) {
    if (rdtsc() - start > kWaitCycles) fail("virtio: device_status did not read 0 after reset");
    cpu_relax();
  }
  d->active_queues = 0;
}

namespace {
u64 read_device_features(u64 common) {
  wr<u32>(common + kDeviceFeatureSelect, 0);
  u64 f = rd<u32>(common + kDeviceFeature);
  wr<u32>(common + kDeviceFeatureSelect, 1);
  return f | static_cast<u64>(rd<u32>(common + kDeviceFeature)) << 32;
}
}  // namespace

u64 offered_features(Device* d) {
  reset(d);
  wr<u8>(d->common + kDeviceStatus, kStatusAcknowledge);
  wr<u8>(d->common + kDeviceStatus, kStatusAcknowledge | kStatusDriver);
  d->offered = read_device_features(d->common);
  return d->offered;
}

void init(Device* d, const Setup& s) {
  const u64 c = d->common;
  if (d->mem == nullptr) fail("virtio: no ring memory given");
  reset(d);
  u8 st = kStatusAcknowledge;
  wr<u8>(c + kDeviceStatus, st);
  st |= kStatusDriver;
  wr<u8>(c + kDeviceStatus, st);

  d->offered = read_device_features(c);
  if (!(d->offered & kFVersion1)) fail("virtio: device does not offer VERSION_1");
  d->features = d->offered & (s.wanted | kFVersion1);
  wr<u32>(c + kDriverFeatureSelect, 0);
  wr<u32>(c + kDriverFeature, static_cast<u32>(d->features));
  wr<u32>(c + kDriverFeatureSelect, 1);
  wr<u32>(c + kDriverFeature, static_cast<u32>(d->features >> 32));
  st |= kStatusFeaturesOk;
  wr<u8>(c + kDeviceStatus, st);
  if (!(status(*d) & kStatusFeaturesOk)) fail("virtio: device did not accept FEATURES_OK");

  d->num_queues = rd<u16>(c + kNumQueues);
  if (s.queues > d->num_queues || s.queues > kMaxQueues) fail("virtio: too few queues");
  wr<u16>(c + kConfigMsixVector, kNoVector);
  const bool event_idx = d->features & kFEventIdx;
  for (u16 q = 0; q < s.queues; ++q) {
    wr<u16>(c + kQueueSelect, q);
    const u16 max = rd<u16>(c + kQueueSize);
    if (max == 0) fail("virtio: queue not available");
    u16 size = 1;
    while (size * 2 <= max && size * 2 <= s.queue_size && size * 2 <= kMaxQueueSize) size *= 2;
    wr<u16>(c + kQueueSize, size);
    const u64 off = static_cast<u64>(rd<u16>(c + kQueueNotifyOff)) * d->notify_mult;
    if (off + 2 > d->notify_len) fail("virtio: queue notify address outside the notify structure");
    Queue& queue = d->queue[q];
    Queue::Memory* mem = &d->mem[q];
    queue.reset(mem, q, size, d->notify + off, event_idx, s.interrupts);
    // 64-bit registers as two 32-bit halves, low first (§4.1.3 allows it).
    const u64 areas[] = {reinterpret_cast<u64>(mem->desc), reinterpret_cast<u64>(mem->avail),
                         reinterpret_cast<u64>(mem->used)};
    const u32 regs[] = {kQueueDesc, kQueueDriver, kQueueDevice};
    for (int i = 0; i < 3; ++i) {
      wr<u32>(c + regs[i], static_cast<u32>(areas[i]));
      wr<u32>(c + regs[i] + 4, static_cast<u32>(areas[i] >> 32));
    }
    wr<u16>(c + kQueueMsixVector, s.queue_vector);
    if (rd<u16>(c + kQueueMsixVector) != s.queue_vector) fail("virtio: queue MSI-X vector refused");
    wr<u16>(c + kQueueEnable, 1);
  }
  d->active_queues = s.queues;
  st |= kStatusDriverOk;
  wr<u8>(c + kDeviceStatus, st);
  if (status(*d) & (kStatusNeedsReset | kStatusFailed)) fail("virtio: device failed at DRIVER_OK");
}

namespace {
u64 cfg_addr(const Device& d, u32 off, u32 size) {
  if (d.device_cfg == 0 || off + size > d.device_cfg_len) {
    fail("virtio: read past the end of the device configuration structure");
  }
  return d.device_cfg + off;
}
}  // namespace

u8 cfg8(const Device& d, u32 off) { return rd<u8>(cfg_addr(d, off, 1)); }
u16 cfg16(const Device& d, u32 off) { return rd<u16>(cfg_addr(d, off, 2)); }
u32 cfg32(const Device& d, u32 off) { return rd<u32>(cfg_addr(d, off, 4)); }
u64 cfg64(const Device& d, u32 off) {
  for (int tries = 0; tries < 1000; ++tries) {
    const u8 gen = rd<u8>(d.common + kConfigGeneration);
    const u64 v = cfg32(d, off) | static_cast<u64>(cfg32(d, off + 4)) << 32;
    if (rd<u8>(d.common + kConfigGeneration) == gen) return v;
  }
  fail("virtio: config_generation never settles");
}

void msix_set_entry(const Device& d, u16 entry, u64 addr, u32 data, bool masked) {
  const u64 e = d.msix_table + 16ull * entry;
  wr<u32>(e + 12, 1);  // masked while it changes
  wr<u32>(e + 0, static_cast<u32>(addr));
  wr<u32>(e + 4, static_cast<u32>(addr >> 32));
  wr<u32>(e + 8, data);
  wr<u32>(e + 12, masked ? 1 : 0);
}

void msix_enable(const Device& d, bool on) {
  const u16 off = static_cast<u16>(d.msix_cap + 2);
  u16 control = pci::read16(d.fn, off);
  control = static_cast<u16>(on ? ((control | 0x8000) & ~0x4000) : (control & ~0x8000));
  pci::write16(d.fn, off, control);
}

bool msix_pending(const Device& d, u16 entry) {
  return (rd<u32>(d.msix_pba + 4ull * (entry / 32)) >> (entry % 32)) & 1;
}

}  // namespace guest::virtio
