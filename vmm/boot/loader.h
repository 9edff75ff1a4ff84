// Kernel loaders: put a kernel image (Linux bzImage, or an ELF executable
// booted through PVH or, for a Linux vmlinux, the 64-bit boot protocol),
// its initrd and command line into guest memory, and say how to enter it.
//
// Images are untrusted input: every offset, size and count in them is checked
// before use, and a malformed image yields an error naming the field, never
// an out-of-bounds access. Guest memory is only touched through GuestMemory.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "vmm/guest_memory.h"

namespace flint {

struct E820Entry {
  uint64_t addr;
  uint64_t size;
  uint32_t type;  // kE820*
};
inline constexpr uint32_t kE820Ram = 1, kE820Reserved = 2, kE820Acpi = 3;

// The e820 map for flint's layout: guest RAM below layout::kEbdaStart is RAM,
// [kEbdaStart, 1 MiB) is reserved (BIOS area; ACPI tables live at 0xe0000),
// then every piece of guest RAM at or above 1 MiB is RAM. Adjacent RAM
// regions are merged; entries are sorted by address.
std::vector<E820Entry> BuildE820(const GuestMemory& mem);

struct BootEntry {
  enum class Mode { kLong64, kProtected32 };
  Mode mode;
  uint64_t rip;      // entry point (guest physical)
  uint64_t rsi = 0;  // kLong64 Linux: boot_params (zero page) GPA
  uint64_t rbx = 0;  // kProtected32 PVH: hvm_start_info GPA
};

struct BootConfig {
  std::span<const uint8_t> kernel;
  std::span<const uint8_t> initrd;  // empty = none
  std::string cmdline;
  uint64_t rsdp_gpa = 0;  // where the ACPI RSDP was written (0 = none)
};

// Detects the format (ELF by its magic, bzImage by the "HdrS" setup header
// magic) and loads it with the matching loader below.
absl::StatusOr<BootEntry> LoadKernel(const GuestMemory& mem, const BootConfig& cfg);

// Linux bzImage via the 64-bit boot protocol: protected-mode kernel at 1 MiB,
// boot_params at layout::kZeroPage, command line at layout::kCmdline.
// Returns kLong64 with rip = 1 MiB + 0x200 and rsi = kZeroPage.
absl::StatusOr<BootEntry> LoadBzImage(const GuestMemory& mem, const BootConfig& cfg);

// ELF32/ELF64 x86 executable. With a Xen PHYS32_ENTRY note: PVH boot
// (hvm_start_info at layout::kPvhStartInfo, memory map at layout::kPvhMemmap),
// returns kProtected32 with rbx = kPvhStartInfo. Without one, an x86-64
// ELF64 is booted as a Linux vmlinux through its 64-bit entry (e_entry) with
// a synthesized zero page; anything else is rejected.
absl::StatusOr<BootEntry> LoadElf(const GuestMemory& mem, const BootConfig& cfg);

}  // namespace flint
