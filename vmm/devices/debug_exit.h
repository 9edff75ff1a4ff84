// Debug-exit port, compatible with QEMU's isa-debug-exit: a write of value v
// stops the VM and flint exits with status (v << 1) | 1, so one test guest
// reports its result the same way under flint and under QEMU.
#pragma once

#include "vmm/bus.h"
#include "vmm/devices/irq_line.h"

namespace flint {

class DebugExit : public BusDevice {
 public:
  explicit DebugExit(StopRequester stop) : stop_(std::move(stop)) {}
  std::string_view name() const override { return "debug-exit"; }
  void Read(uint64_t, std::span<uint8_t> data) override;
  void Write(uint64_t offset, std::span<const uint8_t> data) override;

 private:
  StopRequester stop_;
};

}  // namespace flint
