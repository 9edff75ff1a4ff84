#include "vmm/bus.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/str_format.h"

namespace flint {

absl::Status Bus::Register(uint64_t base, uint64_t len, std::shared_ptr<BusDevice> device) {
  if (frozen_) {
    return absl::FailedPreconditionError(
        absl::StrFormat("%s bus: cannot add %s once the VM runs", name_, device->name()));
  }
  if (len == 0 || base + len < base) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s bus: bad range [0x%x, +0x%x) for %s", name_, base, len, device->name()));
  }
  auto it = std::lower_bound(ranges_.begin(), ranges_.end(), base,
                             [](const Range& r, uint64_t b) { return r.base < b; });
  if (it != ranges_.end() && it->base < base + len) {
    return absl::AlreadyExistsError(absl::StrFormat("%s bus: %s at 0x%x overlaps %s", name_,
                                                    device->name(), base, it->label));
  }
  if (it != ranges_.begin()) {
    auto prev = std::prev(it);
    if (prev->base + prev->len > base) {
      return absl::AlreadyExistsError(absl::StrFormat("%s bus: %s at 0x%x overlaps %s", name_,
                                                      device->name(), base, prev->label));
    }
  }
  std::string label = absl::StrFormat("%s@0x%x", device->name(), base);
  ranges_.insert(it, Range{base, len, std::move(device), std::move(label)});
  return absl::OkStatus();
}

void Bus::Freeze() {
  frozen_ = true;
  // Entries are range index + 1 in a byte; beyond 254 ranges, or for ranges
  // above the port space (MMIO), the binary search serves.
  if (ranges_.size() > 254) return;
  for (const Range& r : ranges_) {
    if (r.base + r.len > 0x10000) return;
  }
  for (size_t i = 0; i < ranges_.size(); ++i) {
    const Range& r = ranges_[i];
    for (uint64_t port = r.base; port < r.base + r.len; ++port) {
      std::unique_ptr<PortPage>& page = port_pages_[port >> 8];
      if (page == nullptr) page = std::make_unique<PortPage>();  // value-initialised: all 0
      (*page)[port & 0xff] = static_cast<uint8_t>(i + 1);
    }
  }
  indexed_ = true;
}

int Bus::Search(uint64_t addr) const {
  size_t lo = 0, hi = ranges_.size();
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    const Range& r = ranges_[mid];
    if (addr < r.base) {
      hi = mid;
    } else if (addr - r.base >= r.len) {
      lo = mid + 1;
    } else {
      return static_cast<int>(mid);
    }
  }
  return -1;
}

int Bus::Read(uint64_t addr, std::span<uint8_t> data) const {
  int i = Find(addr);
  if (i < 0) {
    std::memset(data.data(), 0xff, data.size());
    return -1;
  }
  const Range& r = ranges_[static_cast<size_t>(i)];
  r.device->Read(addr - r.base, data);
  return i;
}

int Bus::Write(uint64_t addr, std::span<const uint8_t> data) const {
  int i = Find(addr);
  if (i < 0) return -1;
  const Range& r = ranges_[static_cast<size_t>(i)];
  r.device->Write(addr - r.base, data);
  return i;
}

}  // namespace flint
