// The Differentiated System Description Table: AML describing what the MADT
// and FADT cannot: the S5 (soft off) sleep type and the COM1 UART.
#include "vmm/acpi/aml.h"
#include "vmm/acpi/builders.h"
#include "vmm/acpi/resource_template.h"
#include "vmm/acpi/sdt.h"
#include "vmm/layout.h"

namespace flint::acpi {
namespace {

// Revision 2: AML integers are 64 bits wide.
constexpr uint8_t kDsdtRevision = 2;
constexpr uint8_t kCom1PortCount = 8;

}  // namespace

absl::StatusOr<std::vector<uint8_t>> BuildDsdt() {
  // \_S5_: {SLP_TYPa, SLP_TYPb, reserved, reserved}. The OS writes SLP_TYPa
  // into the sleep control register, which acpi_pm turns into power off.
  Aml s5 = Aml::Name("_S5_", Aml::Package({Aml::Integer(layout::kS5SlpTyp),
                                           Aml::Integer(layout::kS5SlpTyp), Aml::Integer(0),
                                           Aml::Integer(0)}));
  ResourceTemplate com1_resources;
  com1_resources.Io16(layout::kPortCom1, layout::kPortCom1, 0, kCom1PortCount)
      .IrqNoFlags(layout::kCom1Irq);
  Aml sb = Aml::Scope(
      "\\_SB_",
      {Aml::Device("COM1", {
                               // EISA IDs are always written as DWords.
                               Aml::Name("_HID", Aml::DWord(EisaId("PNP0501"))),  // 16550A
                               Aml::Name("_UID", Aml::Integer(0)),
                               Aml::Name("_CRS", com1_resources.ToAml()),
                           })});

  ByteWriter w = BeginSdt("DSDT", kDsdtRevision);
  for (const Aml* term : {&s5, &sb}) {
    if (!term->status().ok()) return term->status();
    w.Bytes(term->bytes());
  }
  return FinishSdt(std::move(w));
}

}  // namespace flint::acpi
