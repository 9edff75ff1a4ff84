// The guest's e820 memory map, shared by the Linux zero page and the PVH
// memory map table.
#include <algorithm>

#include "vmm/boot/loader.h"
#include "vmm/layout.h"

namespace flint {
namespace {

void Append(std::vector<E820Entry>& map, uint64_t addr, uint64_t size, uint32_t type) {
  if (size == 0) return;
  if (!map.empty()) {
    E820Entry& last = map.back();
    if (last.type == type && last.addr + last.size == addr) {
      last.size += size;
      return;
    }
  }
  map.push_back(E820Entry{.addr = addr, .size = size, .type = type});
}

}  // namespace

std::vector<E820Entry> BuildE820(const GuestMemory& mem) {
  std::vector<E820Entry> map;
  // Regions are sorted by address and never overlap (GuestMemory::Create).
  // Below the EBDA: whatever guest RAM is there.
  for (const MemoryRegion& r : mem.regions()) {
    const uint64_t lo = r.gpa;
    const uint64_t hi = std::min(r.end(), layout::kEbdaStart);
    if (lo < hi) Append(map, lo, hi - lo, kE820Ram);
  }
  // The EBDA, VGA hole, option ROM and BIOS area (where flint's ACPI tables
  // live) are reserved whether or not RAM backs them.
  Append(map, layout::kEbdaStart, layout::kHighMemory - layout::kEbdaStart, kE820Reserved);
  for (const MemoryRegion& r : mem.regions()) {
    const uint64_t lo = std::max(r.gpa, layout::kHighMemory);
    const uint64_t hi = r.end();
    if (lo < hi) Append(map, lo, hi - lo, kE820Ram);
  }
  return map;
}

}  // namespace flint
