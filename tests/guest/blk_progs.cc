// flint test guest: the virtio-blk programs (flint.prog=blk...). See
// README.md for what each does, the sector layout of `blk` and the data
// pattern, which the host-side tests check in the image file afterwards.
#include "tests/guest/guest.h"
#include "tests/guest/pci.h"
#include "tests/guest/virtio.h"

namespace guest {

namespace {

using virtio::Buf;
using virtio::Device;
using virtio::Queue;

// virtio-blk (virtio 1.2 §5.2).
constexpr u64 kFSizeMax = 1ull << 1;
constexpr u64 kFSegMax = 1ull << 2;
constexpr u64 kFRo = 1ull << 5;
constexpr u64 kFBlkSize = 1ull << 6;
constexpr u64 kFFlush = 1ull << 9;
constexpr u64 kFMq = 1ull << 12;
constexpr u64 kFDiscard = 1ull << 13;
constexpr u64 kFWriteZeroes = 1ull << 14;
constexpr u64 kBlkFeatures = kFSizeMax | kFSegMax | kFRo | kFBlkSize | kFFlush | kFMq |
                             kFDiscard | kFWriteZeroes;

constexpr u32 kCfgCapacity = 0x00;
constexpr u32 kCfgSizeMax = 0x08;
constexpr u32 kCfgSegMax = 0x0c;
constexpr u32 kCfgBlkSize = 0x14;
constexpr u32 kCfgNumQueues = 0x22;
constexpr u32 kCfgMaxDiscardSectors = 0x24;
constexpr u32 kCfgDiscardAlignment = 0x2c;
constexpr u32 kCfgMaxWriteZeroesSectors = 0x30;

constexpr u32 kTIn = 0;
constexpr u32 kTOut = 1;
constexpr u32 kTFlush = 4;
constexpr u32 kTGetId = 8;
constexpr u32 kTDiscard = 11;
constexpr u32 kTWriteZeroes = 13;
constexpr u32 kTUnknown = 0xff;

constexpr u8 kSOk = 0;
constexpr u8 kSIoErr = 1;
constexpr u8 kSUnsupp = 2;
constexpr u8 kSNone = 0xee;  // what a status byte holds before the device writes it

constexpr u32 kSector = 512;
constexpr u16 kVirtioBlk = 2;

// Buffers live in RAM above the guest image, [16 MiB, 16 MiB + size): they
// are only touched by programs that use them (no .bss to zero at boot).
constexpr u64 kArenaBase = 16ull << 20;

struct ReqHeader {
  u32 type;
  u32 reserved;
  u64 sector;
};
struct DiscardSegment {
  u64 sector;
  u32 num_sectors;
  u32 flags;
};
// Header and status byte of one request in flight.
struct alignas(64) Slot {
  ReqHeader hdr;
  DiscardSegment seg;
  volatile u8 status;
};
constexpr u32 kMaxSlots = 64;

// A global with no constructor to run (the guest has no .init_array
// support); blk_open() fills it in.
struct Blk {
  Device dev;
  u64 capacity;  // 512-byte sectors
  u32 unit;      // blk_size: request sizes and offsets are multiples of it
  u32 seg_max;   // 0: no limit given
  u32 size_max;
  Slot slot[kMaxSlots];
};
static_assert(__is_trivially_constructible(Blk));
Blk g_blk;

Arena g_arena{kArenaBase, "blk", 0};

u8* arena(u64 bytes) { return arena_alloc(&g_arena, bytes); }

// ---- Data pattern -----------------------------------------------------------

// Byte i of sector s: bytes 0..7 hold s (little-endian), byte i >= 8 is
// (s * 7 + i) & 0xff. README.md documents it for the host-side checks.
u8 pattern_byte(u64 s, u32 i) {
  return i < 8 ? static_cast<u8>(s >> (8 * i)) : static_cast<u8>(s * 7 + i);
}

void fill_pattern(u8* buf, u64 first, u64 sectors) {
  for (u64 s = 0; s < sectors; ++s) {
    for (u32 i = 0; i < kSector; ++i) buf[s * kSector + i] = pattern_byte(first + s, i);
  }
}

void report_mismatch(const char* what, u64 sector, u32 byte, u8 want, u8 got) {
  print(what);
  print(": sector ");
  print_dec(sector);
  print(" byte ");
  print_dec(byte);
  print(" want 0x");
  print_hex(want);
  print(" got 0x");
  print_hex(got);
  putc('\n');
}

bool check_pattern(const char* what, const u8* buf, u64 first, u64 sectors) {
  for (u64 s = 0; s < sectors; ++s) {
    for (u32 i = 0; i < kSector; ++i) {
      const u8 want = pattern_byte(first + s, i), got = buf[s * kSector + i];
      if (want != got) {
        report_mismatch(what, first + s, i, want, got);
        return false;
      }
    }
  }
  return true;
}

bool check_zero(const char* what, const u8* buf, u64 first, u64 sectors) {
  for (u64 i = 0; i < sectors * kSector; ++i) {
    if (buf[i] != 0) {
      report_mismatch(what, first + i / kSector, static_cast<u32>(i % kSector), 0, buf[i]);
      return false;
    }
  }
  return true;
}

// ---- Device set-up and requests -------------------------------------------

// Finds the disk, assigns its BARs, gives it ring memory; prints what it found.
void blk_probe() {
  if (pci::access() == pci::Access::kNone && pci::init() == pci::Access::kNone) {
    fail("blk: no PCI configuration access");
  }
  Device& d = g_blk.dev;
  if (!virtio::probe(kVirtioBlk, 0, &d)) fail("blk: no virtio-blk PCI function on bus 0");
  d.mem = reinterpret_cast<Queue::Memory*>(arena(virtio::kMaxQueues * sizeof(Queue::Memory)));
  print("blk: pci ");
  pci::print_bdf(d.fn);
  print(" id 1af4:");
  print_hex(d.fn.device);
  print(" common=0x");
  print_hex(d.common);
  print(" notify=0x");
  print_hex(d.notify);
  print(" mult=");
  print_dec(d.notify_mult);
  print(" msix=");
  print_dec(d.msix_cap ? d.msix_entries : 0);
  putc('\n');
  if (d.device_cfg == 0) fail("blk: no device configuration capability");
}

void blk_open(const virtio::Setup& setup) {
  blk_probe();
  Device& d = g_blk.dev;
  virtio::init(&d, setup);
  g_blk.capacity = virtio::cfg64(d, kCfgCapacity);
  g_blk.unit = (d.features & kFBlkSize) ? virtio::cfg32(d, kCfgBlkSize) : kSector;
  if (g_blk.unit < kSector || g_blk.unit > 4096 || (g_blk.unit & (g_blk.unit - 1))) {
    fail("blk: blk_size not a power of two in 512..4096");
  }
  g_blk.seg_max = (d.features & kFSegMax) ? virtio::cfg32(d, kCfgSegMax) : 0;
  g_blk.size_max = (d.features & kFSizeMax) ? virtio::cfg32(d, kCfgSizeMax) : 0;
  if (g_blk.size_max != 0 && g_blk.size_max < 4096) fail("blk: size_max below 4096 not supported");
  if ((d.features & kFSegMax) && g_blk.seg_max == 0) fail("blk: seg_max is 0");
}

// Header + data + status on queue `q`, using slot `s`. Returns the head.
int submit(Queue& q, Slot& s, u32 type, u64 sector, const Buf* data, u32 ndata, bool indirect) {
  Buf bufs[virtio::kIndirectLen];
  if (ndata + 2 > virtio::kIndirectLen) fail("blk: too many segments");
  s.hdr = ReqHeader{type, 0, sector};
  s.status = kSNone;
  bufs[0] = virtio::out_buf(&s.hdr);
  for (u32 i = 0; i < ndata; ++i) bufs[1 + i] = data[i];
  bufs[1 + ndata] = Buf{reinterpret_cast<u64>(&s.status), 1, true};
  return q.add(bufs, ndata + 2, indirect);
}

// One request, waited for. Checks the used id; returns the status and, in
// *used_len, what the device says it wrote.
u8 request(Queue& q, u32 type, u64 sector, const Buf* data, u32 ndata, bool indirect = false,
           u32* used_len = nullptr) {
  Slot& s = g_blk.slot[0];
  const int head = submit(q, s, type, sector, data, ndata, indirect);
  if (head < 0) fail("blk: queue full");
  q.kick();
  u32 id, len;
  q.wait(&id, &len, "blk: request timed out");
  if (id != static_cast<u32>(head)) fail("blk: used id is not the request's head");
  if (used_len) *used_len = len;
  return s.status;
}

u32 data_bytes(const Buf* data, u32 n) {
  u32 total = 0;
  for (u32 i = 0; i < n; ++i) total += data[i].len;
  return total;
}

// Reads or writes with the used length checked (virtio 1.2 §2.7: the
// bytes the device wrote: the data for a read, plus the status byte).
void rw_ok(const char* what, u32 type, u64 sector, const Buf* data, u32 n, bool indirect = false) {
  u32 len;
  const u8 st = request(g_blk.dev.queue[0], type, sector, data, n, indirect, &len);
  if (st != kSOk) {
    print(what);
    print(": status ");
    print_dec(st);
    putc('\n');
    fail("blk: request failed");
  }
  const u32 want = (type == kTIn ? data_bytes(data, n) : 0) + 1;
  if (len != want) {
    print(what);
    print(": used len ");
    print_dec(len);
    print(", expected ");
    print_dec(want);
    putc('\n');
    fail("blk: wrong used length");
  }
}

// Splits [addr, addr + bytes) into segments whose sizes cycle through
// `units` multiples of the block size (the last one takes the remainder),
// capped by size_max and seg_max. Returns how many.
u32 split(u64 addr, u32 bytes, const u32* units, u32 nunits, Buf* out, u32 max, bool writes) {
  u32 n = 0, done = 0;
  if (g_blk.seg_max != 0 && g_blk.seg_max < max) max = g_blk.seg_max;
  while (done < bytes) {
    u64 len = static_cast<u64>(units[n % nunits]) * g_blk.unit;
    if (len == 0) fail("blk: a segment of 0 blocks");
    if (g_blk.size_max != 0 && len > g_blk.size_max) len = g_blk.size_max;
    if (len > bytes - done || n + 1 == max) len = bytes - done;
    if (g_blk.size_max != 0 && len > g_blk.size_max) fail("blk: request needs more segments");
    out[n++] = Buf{addr + done, static_cast<u32>(len), writes};
    done += static_cast<u32>(len);
  }
  return n;
}

void print_flag(const char* name, bool on) {
  putc(' ');
  print(name);
  putc('=');
  putc(on ? '1' : '0');
}

void print_features() {
  const u64 f = g_blk.dev.features;
  print("blk: features=0x");
  print_hex(f);
  print(" blk_size=");
  print_dec(g_blk.unit);
  print(" seg_max=");
  print_dec(g_blk.seg_max);
  print(" size_max=");
  print_dec(g_blk.size_max);
  print_flag("ro", f & kFRo);
  print_flag("flush", f & kFFlush);
  print_flag("mq", f & kFMq);
  print_flag("discard", f & kFDiscard);
  print_flag("write_zeroes", f & kFWriteZeroes);
  print_flag("indirect", f & virtio::kFIndirectDesc);
  print_flag("event_idx", f & virtio::kFEventIdx);
  putc('\n');
}

u64 wanted_ring_features() {
  u64 w = virtio::kFIndirectDesc;
  if (cmdline_u64("flint.event_idx", 1) != 0) w |= virtio::kFEventIdx;
  return w;
}

// ---- blk: the functional test ---------------------------------------------

// Sector layout (README.md; tests/integration/blk_test.cc checks the image):
constexpr u64 kMultiFirst = 0, kMultiCount = 128;      // 4 writes in flight, multi-segment
constexpr u64 kIndirectFirst = 128, kIndirectCount = 64;  // one indirect write
constexpr u64 kDiscardFirst = 256, kDiscardCount = 64;    // pattern, then DISCARD
constexpr u64 kZeroesFirst = 320, kZeroesCount = 64;      // pattern, then WRITE_ZEROES
constexpr u64 kMinSectors = 2048;

void blk_multi_segment(u8* wbuf, u8* rbuf) {
  Queue& q = g_blk.dev.queue[0];
  constexpr u32 kUnits[] = {1, 3, 4, 2};
  constexpr u64 kPerReq = kMultiCount / 4;
  fill_pattern(wbuf, kMultiFirst, kMultiCount);
  // Four writes in flight at once; they may complete in any order.
  int heads[4];
  u32 segs = 0;
  for (u32 r = 0; r < 4; ++r) {
    Buf data[8];
    const u32 n = split(reinterpret_cast<u64>(wbuf) + r * kPerReq * kSector, kPerReq * kSector,
                        kUnits, 4, data, 8, false);
    segs += n;
    heads[r] = submit(q, g_blk.slot[r], kTOut, kMultiFirst + r * kPerReq, data, n, false);
    if (heads[r] < 0) fail("blk: queue full");
  }
  q.kick();
  for (u32 done = 0; done < 4; ++done) {
    u32 id, len;
    q.wait(&id, &len, "blk: multi-segment write timed out");
    u32 r = 0;
    while (r < 4 && heads[r] != static_cast<int>(id)) ++r;
    if (r == 4) fail("blk: used id matches no write in flight");
    if (g_blk.slot[r].status != kSOk) fail("blk: multi-segment write failed");
    if (len != 1) fail("blk: write's used len is not 1 (the status byte)");
    heads[r] = -1;
  }
  // Read the whole range back in one request of many 4 KiB-or-so segments.
  memset(rbuf, 0, kMultiCount * kSector);
  Buf data[16];
  constexpr u32 kReadUnits[] = {8};
  const u32 n = split(reinterpret_cast<u64>(rbuf), kMultiCount * kSector, kReadUnits, 1, data,
                      16, true);
  rw_ok("blk: multi-segment read", kTIn, kMultiFirst, data, n);
  if (!check_pattern("blk: multi-segment read", rbuf, kMultiFirst, kMultiCount)) {
    fail("blk: multi-segment data mismatch");
  }
  print("blk: multi-segment ok (");
  print_dec(segs);
  print(" write segments, ");
  print_dec(n);
  print(" read segments)\n");
}

void blk_indirect(u8* wbuf, u8* rbuf) {
  const bool indirect = g_blk.dev.features & virtio::kFIndirectDesc;
  constexpr u32 kUnits[] = {8};
  fill_pattern(wbuf, kIndirectFirst, kIndirectCount);
  Buf data[16];
  u32 n = split(reinterpret_cast<u64>(wbuf), kIndirectCount * kSector, kUnits, 1, data, 8, false);
  rw_ok("blk: indirect write", kTOut, kIndirectFirst, data, n, indirect);
  memset(rbuf, 0, kIndirectCount * kSector);
  n = split(reinterpret_cast<u64>(rbuf), kIndirectCount * kSector, kUnits, 1, data, 8, true);
  rw_ok("blk: indirect read", kTIn, kIndirectFirst, data, n, indirect);
  if (!check_pattern("blk: indirect read", rbuf, kIndirectFirst, kIndirectCount)) {
    fail("blk: indirect data mismatch");
  }
  print(indirect ? "blk: indirect ok\n" : "blk: indirect not offered, wrote directly\n");
}

void write_pattern(u8* wbuf, u64 first, u64 count) {
  fill_pattern(wbuf, first, count);
  const Buf data = Buf{reinterpret_cast<u64>(wbuf), static_cast<u32>(count * kSector), false};
  rw_ok("blk: pattern write", kTOut, first, &data, 1);
}

void blk_discard_and_zeroes(u8* wbuf, u8* rbuf) {
  Device& d = g_blk.dev;
  Queue& q = d.queue[0];
  // Both ranges get the pattern first, so zeros in the image afterwards
  // prove the commands did something.
  write_pattern(wbuf, kDiscardFirst, kDiscardCount);
  write_pattern(wbuf, kZeroesFirst, kZeroesCount);
  DiscardSegment& seg = g_blk.slot[1].seg;

  if (d.features & kFDiscard) {
    const u32 max = virtio::cfg32(d, kCfgMaxDiscardSectors);
    const u32 align = virtio::cfg32(d, kCfgDiscardAlignment);
    if (max < kDiscardCount) fail("blk: max_discard_sectors below 64");
    if (align != 0 && (kDiscardFirst % align || kDiscardCount % align)) {
      fail("blk: discard_sector_alignment does not divide the discard range");
    }
    seg = DiscardSegment{kDiscardFirst, kDiscardCount, 0};
    const Buf b = virtio::out_buf(&seg);
    const u8 st = request(q, kTDiscard, 0, &b, 1);
    if (st != kSOk) fail("blk: DISCARD failed");
    print("blk: discard ok\n");
  } else {
    print("blk: discard not offered\n");
  }

  if (d.features & kFWriteZeroes) {
    if (virtio::cfg32(d, kCfgMaxWriteZeroesSectors) < kZeroesCount) {
      fail("blk: max_write_zeroes_sectors below 64");
    }
    seg = DiscardSegment{kZeroesFirst, kZeroesCount, 0};  // flags 0: no unmap
    const Buf b = virtio::out_buf(&seg);
    const u8 st = request(q, kTWriteZeroes, 0, &b, 1);
    if (st != kSOk) fail("blk: WRITE_ZEROES failed");
    memset(rbuf, 0xaa, kZeroesCount * kSector);
    const Buf r = Buf{reinterpret_cast<u64>(rbuf), kZeroesCount * kSector, true};
    rw_ok("blk: write-zeroes read", kTIn, kZeroesFirst, &r, 1);
    if (!check_zero("blk: write-zeroes read", rbuf, kZeroesFirst, kZeroesCount)) {
      fail("blk: WRITE_ZEROES range does not read back as zeros");
    }
    print("blk: write-zeroes ok\n");
  } else {
    print("blk: write-zeroes not offered\n");
  }
}

void blk_errors(u8* rbuf) {
  Queue& q = g_blk.dev.queue[0];
  const u64 cap = g_blk.capacity;
  const u64 unit_sectors = g_blk.unit / kSector;
  Buf one = Buf{reinterpret_cast<u64>(rbuf), g_blk.unit, true};
  u8 st = request(q, kTIn, cap, &one, 1);
  if (st != kSIoErr) {
    print("blk: read at capacity: status ");
    print_dec(st);
    putc('\n');
    fail("blk: a read past the end did not return IOERR");
  }
  Buf two = Buf{reinterpret_cast<u64>(rbuf), 2 * g_blk.unit, true};
  st = request(q, kTIn, cap - unit_sectors, &two, 1);
  if (st != kSIoErr) fail("blk: a read across the end did not return IOERR");
  // A write across the end must fail as a whole (the host checks that the
  // last sector and the file size are unchanged).
  memset(rbuf, 0x77, 2 * g_blk.unit);
  two.device_writes = false;
  st = request(q, kTOut, cap - unit_sectors, &two, 1);
  if (st != kSIoErr) fail("blk: a write across the end did not return IOERR");
  print("blk: past-end ioerr ok\n");

  Buf b = Buf{reinterpret_cast<u64>(rbuf), kSector, true};
  st = request(q, kTUnknown, 0, &b, 1);
  if (st != kSUnsupp) {
    print("blk: unknown type: status ");
    print_dec(st);
    putc('\n');
    fail("blk: an unknown request type did not return UNSUPP");
  }
  print("blk: unsupported type ok\n");
}

[[noreturn]] void prog_blk_impl() {
  blk_open(virtio::Setup{.wanted = kBlkFeatures | wanted_ring_features()});
  Device& d = g_blk.dev;
  print("blk: capacity=");
  print_dec(g_blk.capacity);
  print(" sectors\n");
  print_features();
  if (g_blk.capacity < kMinSectors) fail("blk: the disk must have at least 1 MiB");
  if (d.features & kFRo) fail("blk: the disk is read-only (use blk-ro)");

  u8* mem = arena(256 * 1024);
  u8* id = mem;
  u8* wbuf = mem + 4096;
  u8* rbuf = mem + 4096 + kMultiCount * kSector;

  memset(id, 0, 21);
  const Buf idb = Buf{reinterpret_cast<u64>(id), 20, true};
  if (request(d.queue[0], kTGetId, 0, &idb, 1) != kSOk) fail("blk: GET_ID failed");
  print("blk: id=");
  for (u32 i = 0; i < 20 && id[i] != 0; ++i) putc(id[i] >= 0x20 && id[i] < 0x7f ? id[i] : '?');
  putc('\n');

  blk_multi_segment(wbuf, rbuf);
  blk_indirect(wbuf, rbuf);
  blk_discard_and_zeroes(wbuf, rbuf);
  if (d.features & kFFlush) {
    if (request(d.queue[0], kTFlush, 0, nullptr, 0) != kSOk) fail("blk: FLUSH failed");
    print("blk: flush ok\n");
  } else {
    print("blk: flush not offered\n");
  }
  blk_errors(rbuf);
  if (virtio::status(d) & virtio::kStatusNeedsReset) fail("blk: device wants a reset");
  print("blk: all ok\n");
  exit(0);
}

// ---- blk-ro -----------------------------------------------------------------

[[noreturn]] void prog_blk_ro_impl() {
  blk_open(virtio::Setup{.wanted = kBlkFeatures | wanted_ring_features()});
  print_features();
  Device& d = g_blk.dev;
  if (!(d.features & kFRo)) fail("blk-ro: the device does not offer VIRTIO_BLK_F_RO");
  u8* buf = arena(64 * 1024);
  fill_pattern(buf, 0, 8);
  const Buf w = Buf{reinterpret_cast<u64>(buf), 8 * kSector, false};
  const u8 st = request(d.queue[0], kTOut, 0, &w, 1);
  if (st != kSIoErr) {
    print("blk-ro: write status ");
    print_dec(st);
    putc('\n');
    fail("blk-ro: a write to a read-only disk did not return IOERR");
  }
  // The host put the pattern in sectors 0..7; the failed write must not have
  // changed what reads see.
  memset(buf, 0, 8 * kSector);
  const Buf r = Buf{reinterpret_cast<u64>(buf), 8 * kSector, true};
  rw_ok("blk-ro: read", kTIn, 0, &r, 1);
  if (!check_pattern("blk-ro: read", buf, 0, 8)) fail("blk-ro: read data mismatch");
  print("blk-ro: ok\n");
  exit(0);
}

// ---- blk-mq -----------------------------------------------------------------

constexpr u64 kMqFirst = 1024;  // queue q writes sector kMqFirst + q

[[noreturn]] void prog_blk_mq_impl() {
  // Learn how many queues there are, then set up all of them.
  blk_open(virtio::Setup{.wanted = kBlkFeatures | wanted_ring_features()});
  Device& d = g_blk.dev;
  print_features();
  u16 n = (d.features & kFMq) ? virtio::cfg16(d, kCfgNumQueues) : 1;
  if (n == 0 || n > d.num_queues) fail("blk-mq: num_queues disagrees with the transport");
  if (n > virtio::kMaxQueues) fail("blk-mq: more queues than the driver supports (16)");
  virtio::init(&d, virtio::Setup{.wanted = kBlkFeatures | wanted_ring_features(), .queues = n});
  u8* buf = arena(2 * virtio::kMaxQueues * kSector);
  u8* rbuf = buf + virtio::kMaxQueues * kSector;
  for (u32 pass = 0; pass < 2; ++pass) {
    int heads[virtio::kMaxQueues];
    // Pass 0: queue q writes sector q. Pass 1: queue q reads the sector
    // queue q+1 wrote. All requests in flight at once, one per queue.
    for (u16 q = 0; q < n; ++q) {
      const u16 src = pass == 0 ? q : static_cast<u16>((q + 1) % n);
      if (pass == 0) fill_pattern(buf + q * kSector, kMqFirst + q, 1);
      else memset(rbuf + q * kSector, 0, kSector);
      const Buf b = pass == 0 ? Buf{reinterpret_cast<u64>(buf + q * kSector), kSector, false}
                              : Buf{reinterpret_cast<u64>(rbuf + q * kSector), kSector, true};
      heads[q] = submit(d.queue[q], g_blk.slot[q], pass == 0 ? kTOut : kTIn, kMqFirst + src, &b,
                        1, false);
      if (heads[q] < 0) fail("blk-mq: queue full");
    }
    for (u16 q = 0; q < n; ++q) d.queue[q].kick();
    for (u16 q = 0; q < n; ++q) {
      u32 id, len;
      d.queue[q].wait(&id, &len, "blk-mq: request timed out");
      if (id != static_cast<u32>(heads[q])) fail("blk-mq: wrong used id");
      if (g_blk.slot[q].status != kSOk) fail("blk-mq: request failed");
      if (pass == 1) {
        const u16 src = static_cast<u16>((q + 1) % n);
        if (!check_pattern("blk-mq: read", rbuf + q * kSector, kMqFirst + src, 1)) {
          fail("blk-mq: data mismatch");
        }
      }
    }
  }
  print("blk-mq: queues=");
  print_dec(n);
  print(" ok\n");
  exit(0);
}

// ---- blk-msix -----------------------------------------------------------------

constexpr u64 kLapicSvr = kLapicBase + 0xf0;
constexpr u64 kLapicIrr = kLapicBase + 0x200;
constexpr u8 kMsixVector = 0x60;

bool irr_set(u8 vector) {
  return (mmio_read<u32>(kLapicIrr + 0x10 * (vector / 32)) >> (vector % 32)) & 1;
}

[[noreturn]] void prog_blk_msix_impl() {
  // The LAPIC drops fixed interrupts while software-disabled: enable it
  // (spurious vector 0xff). Interrupts stay off (RFLAGS.IF = 0), so a
  // delivered vector stays in the IRR, where CPL3 can see it.
  mmio_write<u32>(kLapicSvr, 0x1ff);
  if (!(mmio_read<u32>(kLapicSvr) & 0x100)) fail("blk-msix: LAPIC did not enable");
  if (irr_set(kMsixVector)) fail("blk-msix: vector already pending in the IRR before any request");

  // Probe first (BARs, capabilities), program entry 0 and enable MSI-X,
  // then set the queue's vector during init, before DRIVER_OK.
  blk_probe();
  Device& d = g_blk.dev;
  if (d.msix_cap == 0) fail("blk-msix: the function has no usable MSI-X capability");
  virtio::msix_set_entry(d, 0, kLapicBase, kMsixVector, false);
  virtio::msix_enable(d, true);
  // No EVENT_IDX: every completion must then be signalled (§2.7), which
  // keeps this program about MSI-X alone.
  virtio::init(&d, virtio::Setup{.wanted = kBlkFeatures | virtio::kFIndirectDesc,
                                 .queue_vector = 0, .interrupts = true});
  u8* buf = arena(4096);
  const Buf r = Buf{reinterpret_cast<u64>(buf), kSector, true};
  Queue& q = d.queue[0];
  if (request(q, kTIn, 0, &r, 1) != kSOk) fail("blk-msix: read failed");
  const u64 start = rdtsc();
  while (!irr_set(kMsixVector)) {
    if (rdtsc() - start > virtio::kWaitCycles) fail("blk-msix: vector 0x60 never reached the IRR");
    cpu_relax();
  }
  print("blk-msix: irr ok\n");

  // Masked: the device must set the pending bit instead of sending.
  if (virtio::msix_pending(d, 0)) fail("blk-msix: PBA bit set before masking");
  mmio_write<u32>(d.msix_table + 12, 1);
  if (request(q, kTIn, 0, &r, 1) != kSOk) fail("blk-msix: read failed");
  const u64 start2 = rdtsc();
  while (!virtio::msix_pending(d, 0)) {
    if (rdtsc() - start2 > virtio::kWaitCycles) fail("blk-msix: PBA bit not set while masked");
    cpu_relax();
  }
  print("blk-msix: pba ok\n");
  // Unmasking delivers the pending message, which clears the bit.
  mmio_write<u32>(d.msix_table + 12, 0);
  const u64 start3 = rdtsc();
  while (virtio::msix_pending(d, 0)) {
    if (rdtsc() - start3 > virtio::kWaitCycles) fail("blk-msix: PBA bit stayed set after unmask");
    cpu_relax();
  }
  print("blk-msix: unmask ok\n");
  exit(0);
}

// ---- Hostile programs -------------------------------------------------------

enum class Hostile { kLoop, kOob, kLong, kWritableHeader };

// For kLong: an indirect table of 8 descriptors whose last one still says
// NEXT (to index 8, past the table), and a well-formed 9th descriptor right
// after it in memory, which a device must not follow.
struct alignas(16) LongTable {
  virtio::Desc desc[9];
};
LongTable g_long;

[[noreturn]] void hostile_impl(Hostile kind) {
  const u64 wanted = kBlkFeatures | virtio::kFIndirectDesc;  // no EVENT_IDX: notify always
  blk_open(virtio::Setup{.wanted = wanted, .queue_size = 8});
  Device& d = g_blk.dev;
  Queue& q = d.queue[0];
  Slot& s = g_blk.slot[0];
  u8* buf = arena(8192);
  s.hdr = ReqHeader{kTIn, 0, 0};
  s.status = kSNone;
  const u64 hdr = reinterpret_cast<u64>(&s.hdr), st = reinterpret_cast<u64>(&s.status);
  const u64 data = reinterpret_cast<u64>(buf);
  volatile virtio::Desc* desc = q.memory()->desc;
  using virtio::kDescNext, virtio::kDescWrite, virtio::kDescIndirect;
  auto set = [&](u16 i, u64 addr, u32 len, u16 flags, u16 next) {
    desc[i].addr = addr;
    desc[i].len = len;
    desc[i].flags = flags;
    desc[i].next = next;
  };
  switch (kind) {
    case Hostile::kLoop:  // 0 -> 1 -> 2 -> 1 -> 2 ...
      set(0, hdr, sizeof(ReqHeader), kDescNext, 1);
      set(1, data, kSector, kDescWrite | kDescNext, 2);
      set(2, st, 1, kDescWrite | kDescNext, 1);
      print("hostile: submitting a looping descriptor chain\n");
      break;
    case Hostile::kOob:  // the data buffer is far outside guest RAM
      set(0, hdr, sizeof(ReqHeader), kDescNext, 1);
      set(1, 0x300000000ull, kSector, kDescWrite | kDescNext, 2);
      set(2, st, 1, kDescWrite, 0);
      print("hostile: submitting a buffer at 0x300000000, outside guest RAM\n");
      break;
    case Hostile::kLong: {
      if (!(d.features & virtio::kFIndirectDesc)) fail("hostile: INDIRECT_DESC not offered");
      virtio::Desc* t = g_long.desc;
      t[0] = virtio::Desc{hdr, sizeof(ReqHeader), kDescNext, 1};
      for (u16 i = 1; i < 8; ++i) {
        t[i] = virtio::Desc{data + (i - 1) * 64, 64, kDescWrite | kDescNext,
                            static_cast<u16>(i + 1)};  // t[7] points past the table
      }
      t[8] = virtio::Desc{st, 1, kDescWrite, 0};
      set(0, reinterpret_cast<u64>(t), 8 * sizeof(virtio::Desc), kDescIndirect, 0);
      print("hostile: submitting an indirect chain longer than its table\n");
      break;
    }
    case Hostile::kWritableHeader:
      set(0, hdr, sizeof(ReqHeader), kDescWrite | kDescNext, 1);
      set(1, data, kSector, kDescWrite | kDescNext, 2);
      set(2, st, 1, kDescWrite, 0);
      print("hostile: submitting a request whose header is device-writable\n");
      break;
  }
  q.publish_raw(0);
  q.kick();

  const bool needs_reset = virtio::wait_status(d, virtio::kStatusNeedsReset, 2 * 3000000000ull);
  print("hostile: device_status=0x");
  print_hex(virtio::status(d));
  putc('\n');
  if (needs_reset) {
    print("hostile: needs_reset\n");
  } else if (q.used_pending() != 0) {
    print("hostile: no needs_reset; the device completed the request with status ");
    print_dec(s.status);
    putc('\n');
  } else {
    print("hostile: no needs_reset; the request was not completed\n");
  }

  // Recover: reset, set up again, and a valid read must work.
  virtio::init(&d, virtio::Setup{.wanted = kBlkFeatures | wanted_ring_features()});
  const Buf r = Buf{data, kSector, true};
  rw_ok("hostile: read after reset", kTIn, 0, &r, 1);
  print("hostile: recovered\n");
  exit(needs_reset ? 0 : 2);
}

// ---- blk-bench ----------------------------------------------------------------

u64 g_rng = 0x9e3779b97f4a7c15ull;
u64 next_random() {  // xorshift64*
  g_rng ^= g_rng >> 12;
  g_rng ^= g_rng << 25;
  g_rng ^= g_rng >> 27;
  return g_rng * 0x2545f4914f6cdd1dull;
}

[[noreturn]] void prog_blk_bench_impl() {
  struct Mode {
    const char* name;
    bool write, random;
  };
  static const Mode kModes[] = {{"randread", false, true}, {"randwrite", true, true},
                                {"seqread", false, false}, {"seqwrite", true, false}};
  const char* arg = "randread";
  usize arg_len = 8;
  cmdline_get("flint.mode", &arg, &arg_len);
  const Mode* mode = nullptr;
  for (const Mode& m : kModes) {
    if (str_eq(arg, arg_len, m.name)) mode = &m;
  }
  if (mode == nullptr) {
    fail("blk-bench: flint.mode must be randread, randwrite, seqread or seqwrite");
  }
  const bool write = mode->write, random = mode->random;
  const u64 bs = cmdline_u64("flint.bs", 4096);
  const u64 qd = cmdline_u64("flint.qd", 1);
  const u64 ops = cmdline_u64("flint.ops", 10000);
  if (qd < 1 || qd > kMaxSlots) fail("blk-bench: flint.qd must be 1..64");
  if (bs < kSector || bs % kSector || bs > (1u << 20)) {
    fail("blk-bench: flint.bs must be 512..1M, a multiple of 512");
  }

  blk_open(virtio::Setup{.wanted = kBlkFeatures | wanted_ring_features()});
  Device& d = g_blk.dev;
  Queue& q = d.queue[0];
  if (bs % g_blk.unit) fail("blk-bench: flint.bs is not a multiple of blk_size");
  if (write && (d.features & kFRo)) fail("blk-bench: the disk is read-only");
  const u64 blocks = g_blk.capacity / (bs / kSector);
  if (blocks < qd) fail("blk-bench: disk too small");
  u8* mem = arena(qd * bs);
  if (!write) memset(mem, 0x5a, qd * bs);

  u16 slot_of[virtio::kMaxQueueSize];
  u64 next_block = 0, submitted = 0, completed = 0;
  const u64 warmup = qd * 4 < 1000 ? qd * 4 : 1000;
  const u64 total = warmup + ops;
  auto issue = [&](u32 slot) {
    const u64 block = random ? next_random() % blocks : next_block++ % blocks;
    Buf data[8];
    const u32 units[] = {static_cast<u32>(bs / g_blk.unit)};  // one segment unless size_max
    const u32 n = split(reinterpret_cast<u64>(mem + slot * bs), static_cast<u32>(bs), units, 1,
                        data, 8, !write);
    const int head = submit(q, g_blk.slot[slot], write ? kTOut : kTIn, block * (bs / kSector),
                            data, n, false);
    if (head < 0) fail("blk-bench: queue full");
    slot_of[head] = static_cast<u16>(slot);
    ++submitted;
  };
  for (u32 i = 0; i < qd && submitted < total; ++i) issue(i);
  q.kick();
  u64 t0 = rdtsc(), kicks0 = q.kicks();
  u64 last_progress = t0;
  while (completed < total) {
    u32 id, len;
    bool any = false;
    while (q.poll(&id, &len)) {
      any = true;
      const u32 slot = slot_of[id];
      if (g_blk.slot[slot].status != kSOk) {
        print("blk-bench: status ");
        print_dec(g_blk.slot[slot].status);
        putc('\n');
        fail("blk-bench: request failed");
      }
      if (++completed == warmup) {
        t0 = rdtsc();
        kicks0 = q.kicks();
      }
      if (submitted < total) issue(slot);
    }
    if (any) {
      q.kick();
      last_progress = rdtsc();
    } else if (rdtsc() - last_progress > virtio::kWaitCycles) {
      fail("blk-bench: no completion for a long time");
    } else {
      cpu_relax();
    }
  }
  const u64 cycles = rdtsc() - t0;
  print("RESULT name=blk-");
  print(mode->name);
  print(" bs=");
  print_dec(bs);
  print(" qd=");
  print_dec(qd);
  print(" ops=");
  print_dec(ops);
  print(" cycles=");
  print_dec(cycles);
  print(" bytes=");
  print_dec(ops * bs);
  print(" kicks=");
  print_dec(q.kicks() - kicks0);
  putc('\n');
  exit(0);
}

}  // namespace

// The demo's disk check, when the VM has a virtio-blk disk: GET_ID, then
// read the first 8 sectors, write the same bytes back, read them again and
// flush. Non-destructive: the demo guest boots by default, and the disk may
// be the user's. Problems end the guest through fail().
void demo_disk() {
  const u16 ids[] = {0x1040 + kVirtioBlk};
  pci::Function fn;
  if (pci::init() == pci::Access::kNone || !pci::find(0x1af4, ids, 1, 0, &fn)) {
    print("disk: none (add --disk path=IMG to see virtio-blk)\n");
    return;
  }
  Device& d = g_blk.dev;
  blk_open(virtio::Setup{.wanted = kBlkFeatures | wanted_ring_features()});
  u8* mem = arena(16 * 1024);
  u8* id = mem;
  u8* first = mem + 4096;
  u8* again = mem + 8192;
  memset(id, 0, 21);
  const Buf idb = Buf{reinterpret_cast<u64>(id), 20, true};
  if (request(d.queue[0], kTGetId, 0, &idb, 1) != kSOk) fail("disk: GET_ID failed");
  constexpr u32 kBytes = 8 * kSector;
  const Buf r1 = Buf{reinterpret_cast<u64>(first), kBytes, true};
  rw_ok("disk: read", kTIn, 0, &r1, 1);
  if (!(d.features & kFRo)) {
    const Buf w = Buf{reinterpret_cast<u64>(first), kBytes, false};
    rw_ok("disk: write", kTOut, 0, &w, 1);
    const Buf r2 = Buf{reinterpret_cast<u64>(again), kBytes, true};
    rw_ok("disk: read back", kTIn, 0, &r2, 1);
    if (!mem_eq(first, again, kBytes)) fail("disk: read back differs from what was written");
    if ((d.features & kFFlush) && request(d.queue[0], kTFlush, 0, nullptr, 0) != kSOk) {
      fail("disk: FLUSH failed");
    }
  }
  print("disk: virtio-blk capacity=");
  print_dec(g_blk.capacity);
  print(" sectors id=");
  for (u32 i = 0; i < 20 && id[i] != 0; ++i) putc(id[i] >= 0x20 && id[i] < 0x7f ? id[i] : '?');
  print((d.features & kFRo) ? " read-only, read ok\n" : " read, write, flush ok\n");
  virtio::reset(&d);
}

void prog_blk() { prog_blk_impl(); }
void prog_blk_ro() { prog_blk_ro_impl(); }
void prog_blk_mq() { prog_blk_mq_impl(); }
void prog_blk_msix() { prog_blk_msix_impl(); }
void prog_blk_hostile_loop() { hostile_impl(Hostile::kLoop); }
void prog_blk_hostile_oob() { hostile_impl(Hostile::kOob); }
void prog_blk_hostile_long() { hostile_impl(Hostile::kLong); }
void prog_blk_hostile_wheader() { hostile_impl(Hostile::kWritableHeader); }
void prog_blk_bench() { prog_blk_bench_impl(); }

}  // namespace guest
