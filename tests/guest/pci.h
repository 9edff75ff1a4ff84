// flint test guest: PCI configuration space on bus 0 and BAR assignment.
//
// Config space is reached through ECAM when the ACPI MCFG table names a
// segment-0 region below 4 GiB (the guest maps nothing above), else through
// configuration mechanism #1 (ports 0xcf8/0xcfc). The guest acts as firmware
// for the functions it drives: it sizes their memory BARs and places them in
// [kWindowBase, kWindowEnd), which it can reach, even if a VMM or BIOS put a
// 64-bit BAR above 4 GiB.
#pragma once

#include "tests/guest/guest.h"

namespace guest::pci {

inline constexpr u64 kWindowBase = 0xc0000000;
inline constexpr u64 kWindowEnd = 0xe0000000;

// Config-space registers (PCI 3.0 type 0 header).
inline constexpr u16 kVendorId = 0x00;
inline constexpr u16 kDeviceId = 0x02;
inline constexpr u16 kCommand = 0x04;
inline constexpr u16 kStatus = 0x06;
inline constexpr u16 kClassRev = 0x08;
inline constexpr u16 kHeaderType = 0x0e;
inline constexpr u16 kBar0 = 0x10;
inline constexpr u16 kCapPtr = 0x34;
inline constexpr u16 kCommandIo = 1u << 0;
inline constexpr u16 kCommandMemory = 1u << 1;
inline constexpr u16 kCommandBusMaster = 1u << 2;
inline constexpr u16 kStatusCapList = 1u << 4;
inline constexpr u8 kCapMsix = 0x11;
inline constexpr u8 kCapVendor = 0x09;

enum class Access { kNone, kEcam, kPortCf8 };

struct Function {
  u8 dev, fn;  // bus 0 only
  u16 vendor, device;
  u32 class_code;  // base class, subclass, prog-if
};

// Chooses how to reach config space, in this order:
//   flint.pci=cf8 on the command line: mechanism #1, MCFG ignored;
//   flint.ecam=ADDR: ECAM at ADDR (for VMMs with ECAM but no MCFG, such as
//     QEMU 7.2's microvm, whose ECAM is at 0xe0000000);
//   the MCFG's segment-0 region; else mechanism #1 if it answers.
// Prints one "pci: ..." line saying which. Returns kNone (and prints why)
// when there is no way.
Access init();
Access access();
u64 ecam_base();  // 0 unless ECAM

u8 read8(const Function& f, u16 off);
u16 read16(const Function& f, u16 off);
u32 read32(const Function& f, u16 off);
void write8(const Function& f, u16 off, u8 v);
void write16(const Function& f, u16 off, u16 v);
void write32(const Function& f, u16 off, u32 v);

// Functions on bus 0 (functions 1..7 only of multi-function devices).
// Returns how many; fills at most `max`.
u32 enumerate(Function* out, u32 max);
// The `index`th function with this vendor and one of the device IDs.
bool find(u16 vendor, const u16* devices, u32 ndevices, u32 index, Function* out);

// Offset of the first capability with `id` after `after` (0: from the start),
// or 0. The walk is bounded, so a looping list ends.
u8 find_cap(const Function& f, u8 id, u8 after = 0);

// Both trivially constructible (they live in global Device objects);
// value-initialise locals: Bar{}.
struct Bar {
  u64 addr;  // assigned address (memory BARs), 0 if unimplemented
  u64 size;
  bool is64;
  bool io;
};

// For the function the guest drives: with decode off, sizes every BAR and
// gives each memory BAR a naturally aligned address in the window (both
// halves of a 64-bit BAR), avoiding memory BARs that other functions already
// decode there; then enables memory decode and bus mastering. I/O BARs are
// left alone (I/O decode stays off). fail()s when the window is exhausted.
void assign_bars(const Function& f, Bar bars[6]);

// "00:03.0"
void print_bdf(const Function& f);

}  // namespace guest::pci
