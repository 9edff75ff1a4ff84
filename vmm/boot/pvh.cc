// PVH start of day (xen/include/public/arch-x86/hvm/start_info.h): what a
// kernel entered at its XEN_ELFNOTE_PHYS32_ENTRY finds in %ebx.
#include <vector>

#include "absl/strings/str_format.h"
#include "vmm/boot/common.h"
#include "vmm/layout.h"

namespace flint::boot_internal {

using boot_abi::HvmMemmapTableEntry;
using boot_abi::HvmModlistEntry;
using boot_abi::HvmStartInfo;

namespace {

// The start info and module list share one area, the memory map the next.
constexpr uint64_t kModlist = layout::kPvhStartInfo + sizeof(HvmStartInfo);
static_assert(kModlist % 8 == 0);
static_assert(kModlist + sizeof(HvmModlistEntry) <= layout::kPvhMemmap);
constexpr uint64_t kMaxMemmapEntries =
    (layout::kZeroPage - layout::kPvhMemmap) / sizeof(HvmMemmapTableEntry);

}  // namespace

absl::Status WritePvhStartInfo(const GuestMemory& mem, const BootConfig& cfg,
                               uint64_t kernel_end) {
  const std::vector<E820Entry> e820 = BuildE820(mem);
  if (e820.size() > kMaxMemmapEntries) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "guest memory map has %u entries; the PVH memory map area holds at most %u",
        e820.size(), kMaxMemmapEntries));
  }
  absl::Status s = WriteCmdline(mem, cfg.cmdline, layout::kCmdlineMax - 1,
                                "flint's command line area");
  if (!s.ok()) return s;

  HvmStartInfo info{};
  info.magic = boot_abi::kHvmStartMagic;
  info.version = boot_abi::kHvmStartInfoVersion;
  info.cmdline_paddr = layout::kCmdline;
  info.rsdp_paddr = cfg.rsdp_gpa;
  info.memmap_paddr = layout::kPvhMemmap;
  info.memmap_entries = static_cast<uint32_t>(e820.size());

  // Clear the whole area first so no stale bytes remain between structures.
  s = mem.Fill(layout::kPvhStartInfo, 0, layout::kZeroPage - layout::kPvhStartInfo);
  if (!s.ok()) return s;

  if (!cfg.initrd.empty()) {
    absl::StatusOr<uint64_t> addr = LoadInitrd(mem, cfg.initrd, kernel_end,
                                               layout::kMmioHoleStart,
                                               "the start of the 32-bit MMIO hole");
    if (!addr.ok()) return addr.status();
    const HvmModlistEntry mod{.paddr = *addr, .size = cfg.initrd.size(), .cmdline_paddr = 0,
                              .reserved = 0};
    s = mem.WriteObj(kModlist, mod);
    if (!s.ok()) return s;
    info.nr_modules = 1;
    info.modlist_paddr = kModlist;
  }

  for (size_t i = 0; i < e820.size(); ++i) {
    const HvmMemmapTableEntry entry{.addr = e820[i].addr, .size = e820[i].size,
                                    .type = e820[i].type, .reserved = 0};
    s = mem.WriteObj(layout::kPvhMemmap + i * sizeof(HvmMemmapTableEntry), entry);
    if (!s.ok()) return s;
  }
  return mem.WriteObj(layout::kPvhStartInfo, info);
}

}  // namespace flint::boot_internal
