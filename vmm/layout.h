// The x86 guest physical address map that flint presents. One place, so the
// boot loaders, ACPI tables, e820 map and devices agree.
#pragma once

#include <cstdint>

namespace flint::layout {

// Low memory, below 1 MiB.
inline constexpr uint64_t kBootGdt = 0x500;          // boot GDT (null, code64, data, code32)
inline constexpr uint64_t kPvhStartInfo = 0x6000;    // hvm_start_info + module list
inline constexpr uint64_t kPvhMemmap = 0x6800;       // hvm_memmap_table_entry[]
inline constexpr uint64_t kZeroPage = 0x7000;        // Linux boot_params
inline constexpr uint64_t kPml4 = 0x9000;            // identity page tables for 64-bit entry
inline constexpr uint64_t kPdpt = 0xa000;
inline constexpr uint64_t kPd = 0xb000;              // 4 pages: 4 GiB in 2 MiB pages
inline constexpr uint64_t kCmdline = 0x20000;
inline constexpr uint64_t kCmdlineMax = 0x10000;     // 64 KiB incl. NUL
inline constexpr uint64_t kEbdaStart = 0x9fc00;      // e820: RAM ends here below 1 MiB
inline constexpr uint64_t kAcpiStart = 0xe0000;      // ACPI tables; RSDP first (BIOS scan area)
inline constexpr uint64_t kAcpiEnd = 0x100000;
inline constexpr uint64_t kHighMemory = 0x100000;    // 1 MiB: kernels load here or above

// The 32-bit MMIO hole: RAM stops at kMmioHoleStart and resumes at 4 GiB.
inline constexpr uint64_t kMmioHoleStart = 0xc0000000;
inline constexpr uint64_t kFourGiB = 0x100000000ull;
// PCI (devices/pci/): one host bridge, bus 0 only.
//   32-bit BAR window  0xc0000000..0xdfffffff (512 MiB)
//   ECAM (MMCONFIG)    0xe0000000..0xe00fffff (bus 0: 32 devices x 8 functions x 4 KiB)
//   64-bit BAR window  Pci64Window(): from the first 1 GiB boundary at or
//                      above the end of RAM (and at least 4 GiB), 64 GiB long
// INTx: device slot s, pin p (0 = INTA) -> IOAPIC GSI 16 + ((s + p) & 7),
// level-triggered, active low (the DSDT's _PRT says so).
inline constexpr uint64_t kPciMmio32Base = 0xc0000000;
inline constexpr uint64_t kPciMmio32Size = 0x20000000;
inline constexpr uint64_t kPciEcamBase = 0xe0000000;
inline constexpr uint64_t kPciEcamSize = 0x100000;
inline constexpr uint64_t kPciMmio64Align = 1ull << 30;
inline constexpr uint64_t kPciMmio64Size = 64ull << 30;
inline constexpr uint32_t kPciIntxGsiBase = 16;
inline constexpr uint32_t kPciIntxGsiCount = 8;
// First GSI handed to MSI routes (the IOAPIC has 24 pins: GSIs 0..23).
inline constexpr uint32_t kMsiGsiBase = 24;
// Nothing is mapped here: the guest's "unhandled MMIO" exit benchmark.
inline constexpr uint64_t kUnassignedMmio = 0xf0000000;

struct Window {
  uint64_t base;
  uint64_t size;
};
// The 64-bit BAR window for a guest whose RAM ends (exclusive) at `ram_end`.
constexpr Window Pci64Window(uint64_t ram_end) {
  const uint64_t start = ram_end < kFourGiB ? kFourGiB : ram_end;
  return Window{(start + kPciMmio64Align - 1) & ~(kPciMmio64Align - 1), kPciMmio64Size};
}
inline constexpr uint32_t PciIntxGsi(uint32_t slot, uint32_t pin) {
  return kPciIntxGsiBase + ((slot + pin) & (kPciIntxGsiCount - 1));
}

inline constexpr uint64_t kIoapicBase = 0xfec00000;
inline constexpr uint64_t kLapicBase = 0xfee00000;

// Port I/O.
inline constexpr uint16_t kPortCmos = 0x70;          // 0x70-0x71
inline constexpr uint16_t kPortI8042 = 0x60;         // 0x60 and 0x64
inline constexpr uint16_t kPortDebugExit = 0xf4;     // QEMU isa-debug-exit compatible
inline constexpr uint16_t kPortCom1 = 0x3f8;         // 0x3f8-0x3ff, IRQ 4
inline constexpr uint16_t kPortAcpiPm = 0x600;       // hardware-reduced sleep control/status
inline constexpr uint16_t kPortGed = 0x608;          // GED event register (power button), 1 byte
inline constexpr uint8_t kCom1Irq = 4;

// The Generic Event Device's interrupt (devices/power_button.h; the DSDT's
// \_SB.GED0): level-triggered, active high, on IOAPIC pin 9. On a PC that pin
// is the SCI's; flint's hardware-reduced ACPI has no SCI, and 9 is clear of
// the PIT (IRQ 0 -> GSI 2), COM1 (4), the RTC (8), PCI INTx (16-23) and MSI
// routes (24 and up).
inline constexpr uint32_t kGedGsi = 9;
inline constexpr uint8_t kGedEventPowerButton = 1 << 0;  // bit in the GED event register
static_assert(kGedGsi < kPciIntxGsiBase && kGedGsi != kCom1Irq && kGedGsi != 2 && kGedGsi != 8,
              "the GED's GSI must not share a pin with another device");

// ACPI sleep control register values (hardware-reduced ACPI, ACPI 6 §4.8.3.7).
inline constexpr uint8_t kSlpEn = 1 << 5;
inline constexpr uint8_t kSlpTypShift = 2;
inline constexpr uint8_t kS5SlpTyp = 5;

}  // namespace flint::layout
