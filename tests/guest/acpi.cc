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

Gas read_gas(const u8* p) {
  return Gas{.space = p[0], .bit_width = p[1], .bit_offset = p[2], .access_size = p[3],
             .address = rd64(p + 4)};
}

}  // namespace guest::acpi
