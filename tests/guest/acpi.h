// flint test guest: finding and checking ACPI tables (ACPI 6.x layouts).
#pragma once

#include "tests/guest/guest.h"

namespace guest::acpi {

inline u16 rd16(const u8* p) {
  u16 v;
  memcpy(&v, p, 2);
  return v;
}
inline u32 rd32(const u8* p) {
  u32 v;
  memcpy(&v, p, 4);
  return v;
}
inline u64 rd64(const u8* p) {
  u64 v;
  memcpy(&v, p, 8);
  return v;
}

// Standard description header: signature @0, length @4, checksum @9.
inline constexpr u32 kHeaderSize = 36;
inline constexpr u32 kMaxTables = 64;

struct Tables {
  const u8* rsdp = nullptr;
  u8 rsdp_revision = 0;
  const u8* root = nullptr;  // the XSDT, or the RSDT for revision-0 RSDPs
  bool root_is_xsdt = false;
  u32 count = 0;  // tables the root lists
  const u8* table[kMaxTables] = {};
  const u8* dsdt = nullptr;  // from the FADT
  char error[64] = {};       // why load() failed
};

// Sum of `len` bytes is zero mod 256.
bool checksum_ok(const u8* p, u32 len);

// The RSDP: hvm_start_info's rsdp_paddr when that holds a valid one, else a
// scan of 0xe0000..0xfffff on 16-byte boundaries. nullptr if none.
const u8* find_rsdp(u64 hint);

// Finds the RSDP and walks the XSDT (or RSDT), checking every checksum,
// including the DSDT named by the FADT. On failure returns false with
// t->error set ("no RSDP", "checksum of APIC", ...).
bool load(Tables* t);

// The first table with this 4-character signature ("DSDT" included), or nullptr.
const u8* find(const Tables& t, const char* sig);

// Enabled processors in a MADT: Processor Local APIC (type 0) and
// Processor Local x2APIC (type 9) entries with the Enabled flag.
u32 count_enabled_cpus(const u8* madt);

// The SLP_TYP value of the \_S5_ package in a DSDT, or -1 if not found.
int s5_sleep_type(const u8* dsdt);

// The Generic Event Device (_HID "ACPI0013") a hardware-reduced platform
// signals its power button through, as the DSDT describes it: the first
// interrupt of its _CRS (a Name'd ResourceTemplate holding an Extended
// Interrupt descriptor) and the OperationRegion its _EVT reads.
struct Ged {
  u32 gsi;
  bool level;       // else edge
  bool active_low;  // else active high
  u8 region_space;  // 0 system memory, 1 system I/O
  u64 region_addr;
  u64 region_len;
};
// Pattern-matches the AML flint's DSDT (and any alike) uses; false if a
// piece is missing (no GED, no _EVT, no interrupt, no region).
bool find_ged(const u8* dsdt, Ged* out);
// Whether the DSDT has a device with _HID EisaId("PNP0C0C") (power button).
bool has_power_button(const u8* dsdt);

// Generic Address Structure (12 bytes).
struct Gas {
  u8 space;  // 0 system memory, 1 system I/O
  u8 bit_width;
  u8 bit_offset;
  u8 access_size;
  u64 address;
};
Gas read_gas(const u8* p);

}  // namespace guest::acpi
