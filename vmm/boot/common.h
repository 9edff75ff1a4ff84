// Helpers shared by the bzImage and ELF loaders: overflow-safe arithmetic,
// RAM range checks, initrd placement, command line and Linux zero page.
// Internal to vmm/boot.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "vmm/boot/linux_abi.h"
#include "vmm/boot/loader.h"
#include "vmm/guest_memory.h"

namespace flint::boot_internal {

inline constexpr uint64_t kPageSize = 4096;

// a + b, or nullopt when it wraps.
inline std::optional<uint64_t> Add(uint64_t a, uint64_t b) {
  uint64_t r;
  if (__builtin_add_overflow(a, b, &r)) return std::nullopt;
  return r;
}
// Rounds up to a power-of-two alignment, or nullopt when it wraps.
inline std::optional<uint64_t> AlignUp(uint64_t v, uint64_t align) {
  std::optional<uint64_t> r = Add(v, align - 1);
  if (!r) return std::nullopt;
  return *r & ~(align - 1);
}
inline uint64_t AlignDown(uint64_t v, uint64_t align) { return v & ~(align - 1); }

// True when every byte of [gpa, gpa+len) is guest RAM (adjacent regions may
// be crossed). len == 0 is trivially true.
bool RangeInRam(const GuestMemory& mem, uint64_t gpa, uint64_t len);

// The highest `align`-aligned address A such that [A, A+size) lies inside one
// RAM region, A >= min_addr and A+size <= max_end. nullopt when none exists.
std::optional<uint64_t> PlaceHigh(const GuestMemory& mem, uint64_t size, uint64_t align,
                                  uint64_t min_addr, uint64_t max_end);

// Copies the initrd to the highest page-aligned spot in [min_addr, max_end)
// and returns its address. `limit_what` explains max_end in the error.
absl::StatusOr<uint64_t> LoadInitrd(const GuestMemory& mem, std::span<const uint8_t> initrd,
                                    uint64_t min_addr, uint64_t max_end,
                                    const std::string& limit_what);

// Writes the NUL-terminated command line at layout::kCmdline after checking
// it has no NUL inside, is at most max_len bytes (excluding the NUL; `what`
// names that limit) and fits layout::kCmdlineMax.
absl::Status WriteCmdline(const GuestMemory& mem, const std::string& cmdline, uint64_t max_len,
                          const std::string& what);

// Completes a Linux zero page whose setup header is already filled in (copied
// from a bzImage or synthesized): loader id, heap, command line, initrd
// (placed at or above kernel_end and below the header's initrd_addr_max and
// the MMIO hole), e820 table and ACPI RSDP; then writes the command line,
// initrd and zero page to guest memory.
absl::Status FinishZeroPage(const GuestMemory& mem, const BootConfig& cfg, uint64_t kernel_end,
                            boot_abi::BootParams& bp);

// Writes the PVH start of day: the command line at layout::kCmdline, the
// initrd (at or above kernel_end, below the MMIO hole) as module 0,
// hvm_start_info and its module list at layout::kPvhStartInfo and the memory
// map at layout::kPvhMemmap.
absl::Status WritePvhStartInfo(const GuestMemory& mem, const BootConfig& cfg, uint64_t kernel_end);

}  // namespace flint::boot_internal
