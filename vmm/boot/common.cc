#include "vmm/boot/common.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/str_format.h"
#include "vmm/layout.h"

namespace flint::boot_internal {

using boot_abi::BootParams;

bool RangeInRam(const GuestMemory& mem, uint64_t gpa, uint64_t len) {
  if (!Add(gpa, len)) return false;
  uint64_t cur = gpa, left = len;
  while (left > 0) {
    const MemoryRegion* found = nullptr;
    for (const MemoryRegion& r : mem.regions()) {
      if (cur >= r.gpa && cur - r.gpa < r.size) {
        found = &r;
        break;
      }
    }
    if (found == nullptr) return false;
    const uint64_t n = std::min(left, found->size - (cur - found->gpa));
    cur += n;
    left -= n;
  }
  return true;
}

std::optional<uint64_t> PlaceHigh(const GuestMemory& mem, uint64_t size, uint64_t align,
                                  uint64_t min_addr, uint64_t max_end) {
  const auto& regions = mem.regions();
  for (auto it = regions.rbegin(); it != regions.rend(); ++it) {
    const uint64_t lo = std::max(it->gpa, min_addr);
    const uint64_t hi = std::min(it->end(), max_end);
    if (hi <= lo || hi - lo < size) continue;
    const uint64_t addr = AlignDown(hi - size, align);
    if (addr >= lo) return addr;
  }
  return std::nullopt;
}

absl::StatusOr<uint64_t> LoadInitrd(const GuestMemory& mem, std::span<const uint8_t> initrd,
                                    uint64_t min_addr, uint64_t max_end,
                                    const std::string& limit_what) {
  std::optional<uint64_t> lo = AlignUp(min_addr, kPageSize);
  std::optional<uint64_t> addr;
  if (lo) addr = PlaceHigh(mem, initrd.size(), kPageSize, *lo, max_end);
  if (!addr) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "initrd of %u bytes does not fit in guest RAM between the end of the kernel (0x%x) and "
        "0x%x (%s); give the guest more memory or use a smaller initrd",
        initrd.size(), min_addr, max_end, limit_what));
  }
  if (absl::Status s = mem.Write(*addr, initrd.data(), initrd.size()); !s.ok()) return s;
  return *addr;
}

absl::Status WriteCmdline(const GuestMemory& mem, const std::string& cmdline, uint64_t max_len,
                          const std::string& what) {
  if (cmdline.find('\0') != std::string::npos) {
    return absl::InvalidArgumentError("kernel command line contains a NUL byte");
  }
  if (cmdline.size() > max_len) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "kernel command line is %u bytes; %s allows at most %u", cmdline.size(), what, max_len));
  }
  if (cmdline.size() + 1 > layout::kCmdlineMax) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "kernel command line is %u bytes; flint allows at most %u (layout::kCmdlineMax "
        "including the NUL)",
        cmdline.size(), layout::kCmdlineMax - 1));
  }
  // c_str() includes the terminating NUL.
  return mem.Write(layout::kCmdline, cmdline.c_str(), cmdline.size() + 1);
}

absl::Status FinishZeroPage(const GuestMemory& mem, const BootConfig& cfg, uint64_t kernel_end,
                            BootParams& bp) {
  bp.hdr.type_of_loader = boot_abi::kTypeOfLoaderUndefined;
  bp.hdr.loadflags = static_cast<uint8_t>((bp.hdr.loadflags | boot_abi::kCanUseHeap) &
                                          ~boot_abi::kKeepSegments);
  bp.hdr.heap_end_ptr = boot_abi::kHeapEndPtr;
  bp.sentinel = 0;

  absl::Status s = WriteCmdline(mem, cfg.cmdline, bp.hdr.cmdline_size,
                                "the kernel's setup header (cmdline_size)");
  if (!s.ok()) return s;
  bp.hdr.cmd_line_ptr = static_cast<uint32_t>(layout::kCmdline);
  bp.ext_cmd_line_ptr = static_cast<uint32_t>(layout::kCmdline >> 32);

  bp.hdr.ramdisk_image = 0;
  bp.hdr.ramdisk_size = 0;
  bp.ext_ramdisk_image = 0;
  bp.ext_ramdisk_size = 0;
  if (!cfg.initrd.empty()) {
    // initrd_addr_max is the highest address the initrd's last byte may have.
    const uint64_t addr_max_end = uint64_t{bp.hdr.initrd_addr_max} + 1;
    const uint64_t max_end = std::min(addr_max_end, layout::kMmioHoleStart);
    absl::StatusOr<uint64_t> addr = LoadInitrd(
        mem, cfg.initrd, kernel_end, max_end,
        max_end == addr_max_end
            ? absl::StrFormat("the kernel's initrd_addr_max 0x%x", bp.hdr.initrd_addr_max)
            : std::string("the start of the 32-bit MMIO hole"));
    if (!addr.ok()) return addr.status();
    const uint64_t size = cfg.initrd.size();
    bp.hdr.ramdisk_image = static_cast<uint32_t>(*addr);
    bp.ext_ramdisk_image = static_cast<uint32_t>(*addr >> 32);
    bp.hdr.ramdisk_size = static_cast<uint32_t>(size);
    bp.ext_ramdisk_size = static_cast<uint32_t>(size >> 32);
  }

  const std::vector<E820Entry> e820 = BuildE820(mem);
  if (e820.size() > boot_abi::kE820MaxEntries) {
    return absl::InvalidArgumentError(
        absl::StrFormat("guest memory map has %u e820 entries; the zero page holds at most %u",
                        e820.size(), boot_abi::kE820MaxEntries));
  }
  for (size_t i = 0; i < e820.size(); ++i) {
    bp.e820_table[i].addr = e820[i].addr;
    bp.e820_table[i].size = e820[i].size;
    bp.e820_table[i].type = e820[i].type;
  }
  bp.e820_entries = static_cast<uint8_t>(e820.size());

  if (bp.hdr.version >= boot_abi::kProtocol2_14) bp.acpi_rsdp_addr = cfg.rsdp_gpa;
  return mem.WriteObj(layout::kZeroPage, bp);
}

}  // namespace flint::boot_internal
