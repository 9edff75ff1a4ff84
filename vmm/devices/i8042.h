// The i8042 keyboard controller, as far as a VM needs it: the CPU reset line
// (command 0xFE on port 0x64), which is how Linux reboots with reboot=k.
#pragma once

#include "vmm/bus.h"
#include "vmm/devices/irq_line.h"

namespace flint {

class I8042 : public BusDevice {
 public:
  // Registered at port 0x60 with length 5 (covers 0x60 and 0x64).
  explicit I8042(StopRequester stop) : stop_(std::move(stop)) {}
  std::string_view name() const override { return "i8042"; }
  void Read(uint64_t offset, std::span<uint8_t> data) override;
  void Write(uint64_t offset, std::span<const uint8_t> data) override;

 private:
  StopRequester stop_;
};

}  // namespace flint
