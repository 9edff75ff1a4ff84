// Port-I/O and MMIO buses. Devices register address ranges before the vCPUs
// start; after Freeze() the range table never changes, so vCPU threads look
// addresses up with no lock. A device that shares state with another thread
// takes its own lock inside Read/Write.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"

namespace flint {

class BusDevice {
 public:
  virtual ~BusDevice() = default;
  virtual std::string_view name() const = 0;
  // `offset` is relative to the registered base; data.size() is 1, 2, 4 or 8.
  virtual void Read(uint64_t offset, std::span<uint8_t> data) = 0;
  virtual void Write(uint64_t offset, std::span<const uint8_t> data) = 0;
};

class Bus {
 public:
  struct Range {
    uint64_t base;
    uint64_t len;
    std::shared_ptr<BusDevice> device;
    std::string label;  // for statistics: "serial@0x3f8"
  };

  explicit Bus(std::string name) : name_(std::move(name)) {}

  // Fails on an empty, wrapping or overlapping range, or after Freeze().
  absl::Status Register(uint64_t base, uint64_t len, std::shared_ptr<BusDevice> device);
  // Ends registration. A bus whose ranges all lie in the 16-bit port space
  // also gets a two-level index (256 slots, then one 256-entry page per
  // 256-port block that holds a device: a few KiB), so a port lookup is two
  // loads instead of a binary search: port exits are the hottest path.
  void Freeze();

  // Index of the range holding `addr`, or -1. Lock-free: the port index, or
  // a binary search over the sorted ranges.
  int Find(uint64_t addr) const {
    if (indexed_) {
      if (addr > 0xffff) return -1;
      const PortPage* page = port_pages_[addr >> 8].get();
      return page == nullptr ? -1 : static_cast<int>((*page)[addr & 0xff]) - 1;
    }
    return Search(addr);
  }
  const Range& range(int index) const { return ranges_[static_cast<size_t>(index)]; }
  size_t size() const { return ranges_.size(); }
  const std::string& name() const { return name_; }

  // Dispatches an access; returns the range index, or -1 when no device
  // claims the address (reads then return all ones, as on real hardware).
  int Read(uint64_t addr, std::span<uint8_t> data) const;
  int Write(uint64_t addr, std::span<const uint8_t> data) const;

 private:
  using PortPage = std::array<uint8_t, 256>;  // entry = range index + 1, 0 = no device

  int Search(uint64_t addr) const;

  std::string name_;
  std::vector<Range> ranges_;  // sorted by base, non-overlapping
  bool frozen_ = false;
  bool indexed_ = false;
  std::array<std::unique_ptr<PortPage>, 256> port_pages_;  // by port >> 8; null = no device
};

}  // namespace flint
