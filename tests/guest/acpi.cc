// flint test guest: finding and checking ACPI tables.
#include "tests/guest/acpi.h"

namespace guest::acpi {

namespace {

constexpr u64 kFourGiB = 0x100000000ull;
constexpr u32 kMaxTableLen = 1u << 20;

// Every pointer the tables hold must be inside the guest's identity map.
bool addr_ok(u64 addr, u64 len) { return addr != 0 && addr < kFourGiB && len <= kFourGiB - addr; }

bool rsdp_ok(const u8* p) {
  if (!mem_eq(p, "RSD PTR ", 8) || !checksum_ok(p, 20)) return false;
  if (p[15] >= 2) {
    const u32 len = rd32(p + 20);
    if (len < 36 || len > 4096 || !checksum_ok(p, len)) return false;
  }
  return true;
}

void set_error(Tables* t, const char* what, const u8* sig) {
  usize n = 0;
  for (; what[n] && n < sizeof(t->error) - 6; ++n) t->error[n] = what[n];
  if (sig != nullptr) {
    for (int i = 0; i < 4; ++i) {
      const char c = static_cast<char>(sig[i]);
      t->error[n++] = (c >= 0x20 && c < 0x7f) ? c : '?';
    }
  }
  t->error[n] = '\0';
}

// Checks one table's header, length and checksum; sets t->error if bad.
bool table_ok(Tables* t, u64 addr, const char* want_sig) {
  if (!addr_ok(addr, kHeaderSize)) {
    set_error(t, "bad table address for ", reinterpret_cast<const u8*>(want_sig ? want_sig : "????"));
    return false;
  }
  const u8* p = reinterpret_cast<const u8*>(addr);
  if (want_sig != nullptr && !mem_eq(p, want_sig, 4)) {
    set_error(t, "bad signature, expected ", reinterpret_cast<const u8*>(want_sig));
    return false;
  }
  const u32 len = rd32(p + 4);
  if (len < kHeaderSize || len > kMaxTableLen || !addr_ok(addr, len)) {
    set_error(t, "bad length of ", p);
    return false;
  }
  if (!checksum_ok(p, len)) {
    set_error(t, "checksum of ", p);
    return false;
  }
  return true;
}

}  // namespace

bool checksum_ok(const u8* p, u32 len) {
  u8 sum = 0;
  for (u32 i = 0; i < len; ++i) sum = static_cast<u8>(sum + p[i]);
  return sum == 0;
}

const u8* find_rsdp(u64 hint) {
  if (addr_ok(hint, 36)) {
    const u8* p = reinterpret_cast<const u8*>(hint);
    if (rsdp_ok(p)) return p;
  }
  for (u64 a = 0xe0000; a < 0x100000; a += 16) {
    const u8* p = reinterpret_cast<const u8*>(a);
    if (rsdp_ok(p)) return p;
  }
  return nullptr;
}

bool load(Tables* t) {
  *t = Tables{};
  t->rsdp = find_rsdp(g_boot.rsdp);
  if (t->rsdp == nullptr) {
    set_error(t, "no RSDP", nullptr);
    return false;
  }
  t->rsdp_revision = t->rsdp[15];
  const u64 xsdt = t->rsdp_revision >= 2 ? rd64(t->rsdp + 24) : 0;
  t->root_is_xsdt = xsdt != 0;
  const u64 root = t->root_is_xsdt ? xsdt : rd32(t->rsdp + 16);
  if (!table_ok(t, root, t->root_is_xsdt ? "XSDT" : "RSDT")) return false;
  t->root = reinterpret_cast<const u8*>(root);

  const u32 entry_size = t->root_is_xsdt ? 8 : 4;
  const u32 n = (rd32(t->root + 4) - kHeaderSize) / entry_size;
  for (u32 i = 0; i < n; ++i) {
    const u8* e = t->root + kHeaderSize + i * entry_size;
    const u64 addr = t->root_is_xsdt ? rd64(e) : rd32(e);
    if (!table_ok(t, addr, nullptr)) return false;
    if (t->count == kMaxTables) {
      set_error(t, "too many tables", nullptr);
      return false;
    }
    t->table[t->count++] = reinterpret_cast<const u8*>(addr);
  }

  // The DSDT is not in the root table; the FADT points to it.
  if (const u8* fadt = find(*t, "FACP")) {
    const u32 len = rd32(fadt + 4);
    u64 dsdt = len >= 148 ? rd64(fadt + 140) : 0;  // X_DSDT
    if (dsdt == 0 && len >= 44) dsdt = rd32(fadt + 40);
    if (dsdt != 0) {
      if (!table_ok(t, dsdt, "DSDT")) return false;
      t->dsdt = reinterpret_cast<const u8*>(dsdt);
    }
  }
  return true;
}

const u8* find(const Tables& t, const char* sig) {
  if (mem_eq(sig, "DSDT", 4)) return t.dsdt;
  for (u32 i = 0; i < t.count; ++i) {
    if (mem_eq(t.table[i], sig, 4)) return t.table[i];
  }
  return nullptr;
}

u32 count_enabled_cpus(const u8* madt) {
  const u32 len = rd32(madt + 4);
  u32 cpus = 0;
  for (u32 off = 44; off + 2 <= len;) {
    const u8 type = madt[off];
    const u8 elen = madt[off + 1];
    if (elen < 2 || off + elen > len) break;
    if (type == 0 && elen >= 8 && (rd32(madt + off + 4) & 1)) ++cpus;
    if (type == 9 && elen >= 16 && (rd32(madt + off + 8) & 1)) ++cpus;
    off += elen;
  }
  return cpus;
}

int s5_sleep_type(const u8* dsdt) {
  if (dsdt == nullptr) return -1;
  const u32 len = rd32(dsdt + 4);
  for (u32 i = kHeaderSize; i + 8 < len; ++i) {
    if (!mem_eq(dsdt + i, "_S5_", 4)) continue;
    u32 j = i + 4;
    if (dsdt[j] != 0x12) continue;  // PackageOp
    ++j;
    j += 1 + (dsdt[j] >> 6);  // PkgLength: lead byte plus 0..3 more
    ++j;                      // NumElements
    if (j + 1 >= len) return -1;
    switch (dsdt[j]) {
      case 0x0a:  // BytePrefix
        return dsdt[j + 1];
      case 0x00:  // ZeroOp
        return 0;
      case 0x01:  // OneOp
        return 1;
      default:
        return -1;
    }
  }
  return -1;
}

namespace {

// Offset of `pat` (n bytes) in dsdt[from, end), or 0 (never a valid AML offset).
u32 search(const u8* dsdt, u32 from, u32 end, const void* pat, u32 n) {
  for (u32 i = from; i + n <= end; ++i) {
    if (mem_eq(dsdt + i, pat, n)) return i;
  }
  return 0;
}

// An AML integer constant at p[*i] (Zero, One, Byte/Word/DWordPrefix).
bool aml_integer(const u8* p, u32* i, u32 end, u64* v) {
  const u8 op = p[*i];
  const u32 size = op == 0x0a ? 1 : op == 0x0b ? 2 : op == 0x0c ? 4 : 0;
  if (op == 0x00 || op == 0x01) {
    *v = op;
    *i += 1;
    return true;
  }
  if (size == 0 || *i + 1 + size > end) return false;
  *v = 0;
  for (u32 k = 0; k < size; ++k) *v |= static_cast<u64>(p[*i + 1 + k]) << (8 * k);
  *i += 1 + size;
  return true;
}

}  // namespace

bool find_ged(const u8* dsdt, Ged* out) {
  if (dsdt == nullptr) return false;
  const u32 len = rd32(dsdt + 4);
  static const u8 kHid[] = {'_', 'H', 'I', 'D', 0x0d, 'A', 'C', 'P', 'I', '0', '0', '1', '3', 0};
  const u32 hid = search(dsdt, kHeaderSize, len, kHid, sizeof(kHid));
  if (hid == 0) return false;
  // The GED's own objects follow its _HID, up to the next device.
  static const u8 kDeviceOp[] = {0x5b, 0x82};
  u32 end = search(dsdt, hid, len, kDeviceOp, 2);
  if (end == 0) end = len;
  if (search(dsdt, hid, end, "_EVT", 4) == 0) return false;

  // Name (_CRS, Buffer (n) {descriptors}): NameOp, "_CRS", BufferOp,
  // PkgLength, BufferSize, bytes.
  static const u8 kCrs[] = {0x08, '_', 'C', 'R', 'S', 0x11};
  u32 i = search(dsdt, hid, end, kCrs, sizeof(kCrs));
  if (i == 0) return false;
  i += sizeof(kCrs);
  i += 1 + (dsdt[i] >> 6);
  u64 size = 0;
  if (!aml_integer(dsdt, &i, end, &size) || i + size > end) return false;
  bool found_irq = false;
  for (u32 d = i; d < i + size && !found_irq;) {
    const u8 tag = dsdt[d];
    if ((tag & 0x80) == 0) {  // small item: its length is in the tag
      if ((tag >> 3) == 0x0f) break;  // End Tag
      d += 1 + (tag & 7);
      continue;
    }
    if (d + 3 > i + size) break;
    const u32 dlen = rd16(dsdt + d + 1);
    // Extended Interrupt: flags, count, then 32-bit interrupt numbers.
    if (tag == 0x89 && dlen >= 6 && d + 3 + dlen <= i + size && dsdt[d + 4] >= 1) {
      const u8 flags = dsdt[d + 3];
      out->level = (flags & 2) == 0;
      out->active_low = (flags & 4) != 0;
      out->gsi = rd32(dsdt + d + 5);
      found_irq = true;
    }
    d += 3 + dlen;
  }
  if (!found_irq) return false;

  // OperationRegion (NAME, space, offset, length).
  static const u8 kOpRegion[] = {0x5b, 0x80};
  u32 r = search(dsdt, hid, end, kOpRegion, 2);
  if (r == 0 || r + 7 > end) return false;
  r += 2 + 4;  // the opcode, a one-segment name
  out->region_space = dsdt[r++];
  return aml_integer(dsdt, &r, end, &out->region_addr) &&
         aml_integer(dsdt, &r, end, &out->region_len);
}

bool has_power_button(const u8* dsdt) {
  if (dsdt == nullptr) return false;
  // Name (_HID, EisaId ("PNP0C0C")): DWordPrefix, then the compressed ID.
  static const u8 kHid[] = {'_', 'H', 'I', 'D', 0x0c, 0x41, 0xd0, 0x0c, 0x0c};
  return search(dsdt, kHeaderSize, rd32(dsdt + 4), kHid, sizeof(kHid)) != 0;
}

Gas read_gas(const u8* p) {
  return Gas{.space = p[0], .bit_width = p[1], .bit_offset = p[2], .access_size = p[3],
             .address = rd64(p + 4)};
}

}  // namespace guest::acpi
