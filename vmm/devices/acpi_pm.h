// Hardware-reduced ACPI sleep control (port 0x600) and sleep status (0x601)
// registers, as the FADT describes them: writing SLP_TYP=S5 with SLP_EN
// powers the VM off.
#pragma once

#include "vmm/bus.h"
#include "vmm/devices/irq_line.h"

namespace flint {

class AcpiPm : public BusDevice {
 public:
  explicit AcpiPm(StopRequester stop) : stop_(std::move(stop)) {}
  std::string_view name() const override { return "acpi-pm"; }
  void Read(uint64_t, std::span<uint8_t> data) override;
  void Write(uint64_t offset, std::span<const uint8_t> data) override;

 private:
  StopRequester stop_;
};

}  // namespace flint
