#include "vmm/guest_memory.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <utility>

#include "absl/strings/str_format.h"

namespace flint {
namespace {

constexpr uint64_t kPage = 4096;
constexpr uint64_t kHugePage = 2ull << 20;

absl::Status Errno(const char* what, uint64_t size) {
  int e = errno;
  return absl::ResourceExhaustedError(
      absl::StrFormat("%s for %u MiB of guest memory failed: %s", what, size >> 20, strerror(e)));
}

}  // namespace

absl::StatusOr<GuestMemory> GuestMemory::Create(std::vector<MemoryRegionSpec> specs,
                                                MemoryBacking backing) {
  if (specs.empty()) return absl::InvalidArgumentError("guest memory needs at least one region");
  std::sort(specs.begin(), specs.end(),
            [](const MemoryRegionSpec& a, const MemoryRegionSpec& b) { return a.gpa < b.gpa; });
  const uint64_t align = backing == MemoryBacking::kHugetlb ? kHugePage : kPage;
  for (size_t i = 0; i < specs.size(); ++i) {
    const auto& s = specs[i];
    if (s.size == 0 || s.gpa % align != 0 || s.size % align != 0) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "memory region at 0x%x size 0x%x must be non-empty and %u-byte aligned", s.gpa, s.size,
          align));
    }
    if (s.gpa + s.size < s.gpa) {
      return absl::InvalidArgumentError(
          absl::StrFormat("memory region at 0x%x size 0x%x wraps the address space", s.gpa, s.size));
    }
    if (i > 0 && specs[i - 1].gpa + specs[i - 1].size > s.gpa) {
      return absl::InvalidArgumentError(
          absl::StrFormat("memory regions at 0x%x and 0x%x overlap", specs[i - 1].gpa, s.gpa));
    }
  }

  GuestMemory mem;
  for (const auto& s : specs) {
    MemoryRegion r{.gpa = s.gpa, .size = s.size};
    void* p = MAP_FAILED;
    if (backing == MemoryBacking::kAnonymous) {
      p = mmap(nullptr, s.size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
               -1, 0);
      if (p == MAP_FAILED) return Errno("mmap", s.size);
      // Transparent huge pages where the host allows them (the common
      // "madvise" setting needs this call): fewer page-table levels for KVM
      // to walk and shadow, and one page to pin per 2 MiB of guest buffer
      // for O_DIRECT I/O. Advice only: failure changes nothing.
      (void)madvise(p, s.size, MADV_HUGEPAGE);
    } else {
      unsigned flags = MFD_CLOEXEC;
      if (backing == MemoryBacking::kHugetlb) flags |= MFD_HUGETLB;
      int fd = memfd_create("flint-guest-ram", flags);
      if (fd < 0) return Errno("memfd_create", s.size);
      r.fd = fd;
      // Owned from here on: mem.Release() closes it on any error below.
      mem.regions_.push_back(r);
      if (ftruncate(fd, static_cast<off_t>(s.size)) != 0) {
        return Errno(backing == MemoryBacking::kHugetlb
                         ? "ftruncate of hugetlb memfd (are 2 MiB hugepages reserved in "
                           "/proc/sys/vm/nr_hugepages?)"
                         : "ftruncate of memfd",
                     s.size);
      }
      p = mmap(nullptr, s.size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
      if (p == MAP_FAILED) return Errno("mmap of memfd", s.size);
      mem.regions_.back().host = static_cast<uint8_t*>(p);
      continue;
    }
    r.host = static_cast<uint8_t*>(p);
    mem.regions_.push_back(r);
  }
  return mem;
}

GuestMemory::GuestMemory(GuestMemory&& other) noexcept
    : regions_(std::exchange(other.regions_, {})) {}

GuestMemory& GuestMemory::operator=(GuestMemory&& other) noexcept {
  if (this != &other) {
    Release();
    regions_ = std::exchange(other.regions_, {});
  }
  return *this;
}

GuestMemory::~GuestMemory() { Release(); }

void GuestMemory::Release() {
  for (auto& r : regions_) {
    if (r.host) munmap(r.host, r.size);
    if (r.fd >= 0) close(r.fd);
  }
  regions_.clear();
}

uint64_t GuestMemory::total_size() const {
  uint64_t t = 0;
  for (const auto& r : regions_) t += r.size;
  return t;
}

const MemoryRegion* GuestMemory::Find(uint64_t gpa) const {
  // Few regions (typically one or two): a linear scan beats a search.
  for (const auto& r : regions_) {
    if (gpa >= r.gpa && gpa - r.gpa < r.size) return &r;
  }
  return nullptr;
}

bool GuestMemory::Contains(uint64_t gpa, uint64_t len) const {
  const MemoryRegion* r = Find(gpa);
  return r != nullptr && len <= r->size - (gpa - r->gpa);
}

absl::StatusOr<std::span<uint8_t>> GuestMemory::Slice(uint64_t gpa, uint64_t len) const {
  if (len == 0) return absl::InvalidArgumentError("zero-length guest memory access");
  const MemoryRegion* r = Find(gpa);
  if (r == nullptr || len > r->size - (gpa - r->gpa)) {
    return absl::OutOfRangeError(
        absl::StrFormat("guest range [0x%x, +0x%x) is not inside guest RAM", gpa, len));
  }
  return std::span<uint8_t>(r->host + (gpa - r->gpa), len);
}

absl::Status GuestMemory::CheckRange(uint64_t gpa, uint64_t len) const {
  if (gpa + len < gpa) {
    return absl::OutOfRangeError(
        absl::StrFormat("guest range [0x%x, +0x%x) wraps the address space", gpa, len));
  }
  uint64_t cur = gpa, left = len;
  while (left > 0) {
    const MemoryRegion* r = Find(cur);
    if (r == nullptr) {
      return absl::OutOfRangeError(absl::StrFormat(
          "guest range [0x%x, +0x%x) is not inside guest RAM (0x%x is unbacked)", gpa, len, cur));
    }
    uint64_t n = std::min(left, r->size - (cur - r->gpa));
    cur += n;
    left -= n;
  }
  return absl::OkStatus();
}

absl::Status GuestMemory::Read(uint64_t gpa, void* dst, uint64_t len) const {
  if (absl::Status s = CheckRange(gpa, len); !s.ok()) return s;
  auto* out = static_cast<uint8_t*>(dst);
  while (len > 0) {
    const MemoryRegion* r = Find(gpa);
    uint64_t n = std::min(len, r->size - (gpa - r->gpa));
    std::memcpy(out, r->host + (gpa - r->gpa), n);
    out += n;
    gpa += n;
    len -= n;
  }
  return absl::OkStatus();
}

absl::Status GuestMemory::Write(uint64_t gpa, const void* src, uint64_t len) const {
  if (absl::Status s = CheckRange(gpa, len); !s.ok()) return s;
  const auto* in = static_cast<const uint8_t*>(src);
  while (len > 0) {
    const MemoryRegion* r = Find(gpa);
    uint64_t n = std::min(len, r->size - (gpa - r->gpa));
    std::memcpy(r->host + (gpa - r->gpa), in, n);
    in += n;
    gpa += n;
    len -= n;
  }
  return absl::OkStatus();
}

absl::Status GuestMemory::Fill(uint64_t gpa, uint8_t value, uint64_t len) const {
  if (absl::Status s = CheckRange(gpa, len); !s.ok()) return s;
  while (len > 0) {
    const MemoryRegion* r = Find(gpa);
    uint64_t n = std::min(len, r->size - (gpa - r->gpa));
    std::memset(r->host + (gpa - r->gpa), value, n);
    gpa += n;
    len -= n;
  }
  return absl::OkStatus();
}

}  // namespace flint
