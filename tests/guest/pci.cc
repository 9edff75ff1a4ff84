// flint test guest: PCI configuration space on bus 0 and BAR assignment.
#include "tests/guest/pci.h"

#include "tests/guest/acpi.h"

namespace guest::pci {

namespace {

constexpr u16 kCf8 = 0xcf8;
constexpr u16 kCfc = 0xcfc;
constexpr u64 kFourGiB = 0x100000000ull;

Access g_access = Access::kNone;
u64 g_ecam = 0;

// The bump allocator, and memory BARs other functions already decode inside
// the window (found once, on first use).
u64 g_next = kWindowBase;
struct Range {
  u64 base, end;
};
constexpr u32 kMaxReserved = 32;
Range g_reserved[kMaxReserved];
u32 g_nreserved = 0;
bool g_reserved_scanned = false;

u64 ecam_addr(const Function& f, u16 off) {
  return g_ecam | (static_cast<u64>(f.dev) << 15) | (static_cast<u64>(f.fn) << 12) | (off & 0xfff);
}

void cf8_select(const Function& f, u16 off) {
  outl(kCf8, 0x80000000u | (static_cast<u32>(f.dev) << 11) | (static_cast<u32>(f.fn) << 8) |
                 (off & 0xfc));
}

// The segment-0, bus-0 ECAM base from the MCFG, 0 if there is none we can use.
u64 mcfg_ecam() {
  acpi::Tables t;
  if (!acpi::load(&t)) {
    print("pci: no ACPI tables (");
    print(t.error);
    print(")\n");
    return 0;
  }
  const u8* mcfg = acpi::find(t, "MCFG");
  if (mcfg == nullptr) return 0;
  const u32 len = acpi::rd32(mcfg + 4);
  // Header (36), reserved (8), then 16-byte allocations: base u64,
  // segment u16, start bus u8, end bus u8, reserved u32.
  for (u32 off = 44; off + 16 <= len; off += 16) {
    const u64 base = acpi::rd64(mcfg + off);
    const u16 segment = acpi::rd16(mcfg + off + 8);
    const u8 start_bus = mcfg[off + 10];
    if (segment != 0 || start_bus != 0) continue;
    if (base == 0 || base + (1u << 20) > kFourGiB) {
      print("pci: MCFG ECAM at 0x");
      print_hex(base);
      print(" is beyond the guest's 4 GiB identity map\n");
      return 0;
    }
    return base;
  }
  return 0;
}

bool cf8_present() {
  const u32 saved = inl(kCf8);
  outl(kCf8, 0x80000000u);
  const bool ok = inl(kCf8) == 0x80000000u;
  outl(kCf8, saved);
  return ok;
}

u32 bar_count(const Function& f) {
  switch (read8(f, kHeaderType) & 0x7f) {
    case 0:
      return 6;
    case 1:
      return 2;  // PCI-to-PCI bridge
    default:
      return 0;
  }
}

// Sizes BAR `i` (decode must be off). Returns the index of the next BAR.
u32 probe_bar(const Function& f, u32 i, Bar* b) {
  const u16 reg = static_cast<u16>(kBar0 + 4 * i);
  const u32 orig = read32(f, reg);
  *b = Bar{};
  b->io = orig & 1;
  if (b->io) {
    write32(f, reg, 0xffffffffu);
    const u32 mask = read32(f, reg) & ~3u & 0xffff;
    write32(f, reg, orig);
    b->size = mask ? ((~mask & 0xffff) + 1) : 0;
    b->addr = orig & ~3u;
    return i + 1;
  }
  b->is64 = ((orig >> 1) & 3) == 2 && i + 1 < bar_count(f);
  u64 orig64 = orig & ~0xfu;
  write32(f, reg, 0xffffffffu);
  u64 mask = read32(f, reg) & ~0xfu;
  write32(f, reg, orig);
  if (b->is64) {
    const u16 hi = static_cast<u16>(reg + 4);
    const u32 orig_hi = read32(f, hi);
    write32(f, hi, 0xffffffffu);
    mask |= static_cast<u64>(read32(f, hi)) << 32;
    write32(f, hi, orig_hi);
    orig64 |= static_cast<u64>(orig_hi) << 32;
  } else if (mask != 0) {
    mask |= 0xffffffff00000000ull;
  }
  b->size = mask ? (~mask + 1) : 0;
  b->addr = orig64;
  return i + (b->is64 ? 2 : 1);
}

bool overlaps(u64 base, u64 end, const Range& r) { return base < r.end && r.base < end; }

// Memory BARs that other functions decode inside the window: the allocator
// must not place ours on top of them (a BIOS may have used the same window).
void scan_reserved(const Function& self) {
  g_reserved_scanned = true;
  Function fns[64];
  const u32 n = enumerate(fns, 64);
  for (u32 k = 0; k < n && k < 64; ++k) {
    const Function& f = fns[k];
    if (f.dev == self.dev && f.fn == self.fn) continue;
    const u16 cmd = read16(f, kCommand);
    if (!(cmd & kCommandMemory)) continue;
    write16(f, kCommand, static_cast<u16>(cmd & ~kCommandMemory));
    for (u32 i = 0, count = bar_count(f); i < count;) {
      Bar b{};
      i = probe_bar(f, i, &b);
      if (b.io || b.size == 0) continue;
      const Range r{b.addr, b.addr + b.size};
      if (overlaps(kWindowBase, kWindowEnd, r) && g_nreserved < kMaxReserved) {
        g_reserved[g_nreserved++] = r;
      }
    }
    write16(f, kCommand, cmd);
  }
}

u64 alloc(u64 size) {
  u64 base = (g_next + size - 1) & ~(size - 1);
  for (bool moved = true; moved;) {
    moved = false;
    for (u32 i = 0; i < g_nreserved; ++i) {
      if (overlaps(base, base + size, g_reserved[i])) {
        base = (g_reserved[i].end + size - 1) & ~(size - 1);
        moved = true;
      }
    }
  }
  if (base + size > kWindowEnd || base + size < base) return 0;
  g_next = base + size;
  return base;
}

}  // namespace

Access init() {
  const char* v;
  usize n;
  const bool force_cf8 = cmdline_get("flint.pci", &v, &n) && str_eq(v, n, "cf8");
  const u64 given = cmdline_u64("flint.ecam", 0);
  g_access = Access::kNone;
  g_ecam = force_cf8 ? 0 : given != 0 ? given : mcfg_ecam();
  if (g_ecam >= kFourGiB || (g_ecam & 0xfffff)) {
    print("pci: flint.ecam must be below 4 GiB and 1 MiB aligned\n");
    g_ecam = 0;
  } else if (g_ecam != 0) {
    g_access = Access::kEcam;
    print("pci: ecam at 0x");
    print_hex(g_ecam);
    print(given != 0 && !force_cf8 ? " (flint.ecam)\n" : " (MCFG)\n");
  } else if (cf8_present()) {
    g_access = Access::kPortCf8;
    print("pci: config mechanism #1 (0xcf8)\n");
  } else {
    print("pci: no MCFG and no config mechanism #1\n");
  }
  return g_access;
}

Access access() { return g_access; }
u64 ecam_base() { return g_ecam; }

u8 read8(const Function& f, u16 off) {
  if (g_access == Access::kEcam) return mmio_read<u8>(ecam_addr(f, off));
  cf8_select(f, off);
  return inb(static_cast<u16>(kCfc + (off & 3)));
}
u16 read16(const Function& f, u16 off) {
  if (g_access == Access::kEcam) return mmio_read<u16>(ecam_addr(f, off));
  cf8_select(f, off);
  return inw(static_cast<u16>(kCfc + (off & 2)));
}
u32 read32(const Function& f, u16 off) {
  if (g_access == Access::kEcam) return mmio_read<u32>(ecam_addr(f, off));
  cf8_select(f, off);
  return inl(kCfc);
}
void write8(const Function& f, u16 off, u8 v) {
  if (g_access == Access::kEcam) return mmio_write<u8>(ecam_addr(f, off), v);
  cf8_select(f, off);
  outb(static_cast<u16>(kCfc + (off & 3)), v);
}
void write16(const Function& f, u16 off, u16 v) {
  if (g_access == Access::kEcam) return mmio_write<u16>(ecam_addr(f, off), v);
  cf8_select(f, off);
  outw(static_cast<u16>(kCfc + (off & 2)), v);
}
void write32(const Function& f, u16 off, u32 v) {
  if (g_access == Access::kEcam) return mmio_write<u32>(ecam_addr(f, off), v);
  cf8_select(f, off);
  outl(kCfc, v);
}

u32 enumerate(Function* out, u32 max) {
  u32 n = 0;
  if (g_access == Access::kNone) return 0;
  for (u8 dev = 0; dev < 32; ++dev) {
    for (u8 fn = 0; fn < 8; ++fn) {
      Function f{};
      f.dev = dev;
      f.fn = fn;
      f.vendor = read16(f, kVendorId);
      if (f.vendor == 0xffff || f.vendor == 0) {
        if (fn == 0) break;  // no device in this slot
        continue;
      }
      f.device = read16(f, kDeviceId);
      f.class_code = read32(f, kClassRev) >> 8;
      if (n < max) out[n] = f;
      ++n;
      if (fn == 0 && !(read8(f, kHeaderType) & 0x80)) break;  // single-function
    }
  }
  return n;
}

bool find(u16 vendor, const u16* devices, u32 ndevices, u32 index, Function* out) {
  Function fns[64];
  const u32 n = enumerate(fns, 64);
  for (u32 k = 0; k < n && k < 64; ++k) {
    if (fns[k].vendor != vendor) continue;
    for (u32 d = 0; d < ndevices; ++d) {
      if (fns[k].device == devices[d]) {
        if (index == 0) {
          *out = fns[k];
          return true;
        }
        --index;
      }
    }
  }
  return false;
}

u8 find_cap(const Function& f, u8 id, u8 after) {
  if (!(read16(f, kStatus) & kStatusCapList)) return 0;
  u8 off = after ? read8(f, static_cast<u16>(after + 1)) : read8(f, kCapPtr);
  // At most 48 capabilities fit in 192 bytes: more means a loop.
  for (int i = 0; i < 48 && off >= 0x40; ++i) {
    off &= 0xfc;
    if (read8(f, off) == id) return off;
    off = read8(f, static_cast<u16>(off + 1));
  }
  return 0;
}

void assign_bars(const Function& f, Bar bars[6]) {
  if (!g_reserved_scanned) scan_reserved(f);
  const u16 cmd = read16(f, kCommand);
  write16(f, kCommand, static_cast<u16>(cmd & ~(kCommandMemory | kCommandIo | kCommandBusMaster)));
  for (u32 i = 0; i < 6; ++i) bars[i] = Bar{};
  for (u32 i = 0, count = bar_count(f); i < count;) {
    const u32 at = i;
    i = probe_bar(f, i, &bars[at]);
    Bar& b = bars[at];
    if (b.io || b.size == 0) continue;
    if (b.size > kWindowEnd - kWindowBase) fail("pci: BAR larger than the 32-bit window");
    const u64 was = b.addr;
    b.addr = alloc(b.size);
    if (b.addr == 0) fail("pci: 32-bit BAR window exhausted");
    const u16 reg = static_cast<u16>(kBar0 + 4 * at);
    write32(f, reg, static_cast<u32>(b.addr));
    if (b.is64) write32(f, static_cast<u16>(reg + 4), static_cast<u32>(b.addr >> 32));
    // Read back: a BAR that does not hold its address is not one we can use.
    u64 got = read32(f, reg) & ~0xfu;
    if (b.is64) got |= static_cast<u64>(read32(f, static_cast<u16>(reg + 4))) << 32;
    if (got != b.addr) fail("pci: BAR did not take its new address");
    print("pci: ");
    print_bdf(f);
    print(" bar");
    print_dec(at);
    print(b.is64 ? " 64-bit " : " 32-bit ");
    print_dec(b.size);
    print(" bytes 0x");
    print_hex(was);
    print(" -> 0x");
    print_hex(b.addr);
    putc('\n');
  }
  write16(f, kCommand, static_cast<u16>((cmd & ~kCommandIo) | kCommandMemory | kCommandBusMaster));
}

void print_bdf(const Function& f) {
  constexpr const char* kHex = "0123456789abcdef";
  print("00:");
  putc(kHex[f.dev >> 4]);
  putc(kHex[f.dev & 0xf]);
  putc('.');
  print_dec(f.fn);
}

}  // namespace guest::pci
