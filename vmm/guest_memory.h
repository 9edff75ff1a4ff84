// Guest physical memory: the regions that back guest RAM, and the one
// bounds-checked accessor through which every part of flint reads or writes
// it. Nothing else turns a guest physical address into a host pointer.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace flint {

enum class MemoryBacking {
  kAnonymous,  // private anonymous mapping
  kMemfd,      // shared memfd mapping (can be handed to another process)
  kHugetlb,    // memfd with MFD_HUGETLB (2 MiB pages)
};

struct MemoryRegionSpec {
  uint64_t gpa = 0;
  uint64_t size = 0;
};

// One contiguous piece of guest RAM. Owned by GuestMemory.
struct MemoryRegion {
  uint64_t gpa = 0;
  uint64_t size = 0;
  uint8_t* host = nullptr;
  int fd = -1;  // memfd, or -1 for anonymous memory

  uint64_t end() const { return gpa + size; }  // exclusive; never overflows (checked at creation)
};

class GuestMemory {
 public:
  // Maps the given regions. They must be page aligned, non-empty, must not
  // overlap and must not wrap the 64-bit address space.
  static absl::StatusOr<GuestMemory> Create(std::vector<MemoryRegionSpec> specs,
                                            MemoryBacking backing = MemoryBacking::kAnonymous);

  GuestMemory() = default;
  GuestMemory(GuestMemory&& other) noexcept;
  GuestMemory& operator=(GuestMemory&& other) noexcept;
  GuestMemory(const GuestMemory&) = delete;
  GuestMemory& operator=(const GuestMemory&) = delete;
  ~GuestMemory();

  const std::vector<MemoryRegion>& regions() const { return regions_; }
  uint64_t total_size() const;

  // Returns a host span covering [gpa, gpa+len) if it lies wholly inside one
  // region; an error otherwise (out of range, wrapping, straddling a hole).
  // len == 0 is an error: callers never legitimately ask for nothing.
  absl::StatusOr<std::span<uint8_t>> Slice(uint64_t gpa, uint64_t len) const;

  // True when [gpa, gpa+len) lies wholly inside one region.
  bool Contains(uint64_t gpa, uint64_t len) const;

  // Copies that may cross region boundaries only where the regions are
  // adjacent; any byte outside guest RAM makes the whole call fail before
  // anything is copied.
  absl::Status Read(uint64_t gpa, void* dst, uint64_t len) const;
  absl::Status Write(uint64_t gpa, const void* src, uint64_t len) const;
  absl::Status Fill(uint64_t gpa, uint8_t value, uint64_t len) const;

  template <typename T>
  absl::StatusOr<T> ReadObj(uint64_t gpa) const {
    static_assert(std::is_trivially_copyable_v<T>);
    T v;
    absl::Status s = Read(gpa, &v, sizeof(T));
    if (!s.ok()) return s;
    return v;
  }
  template <typename T>
  absl::Status WriteObj(uint64_t gpa, const T& v) const {
    static_assert(std::is_trivially_copyable_v<T>);
    return Write(gpa, &v, sizeof(T));
  }

 private:
  const MemoryRegion* Find(uint64_t gpa) const;
  absl::Status CheckRange(uint64_t gpa, uint64_t len) const;
  void Release();

  std::vector<MemoryRegion> regions_;  // sorted by gpa
};

}  // namespace flint
