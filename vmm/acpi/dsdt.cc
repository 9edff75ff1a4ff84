// The Differentiated System Description Table: AML describing what the MADT
// and FADT cannot: the S5 (soft off) sleep type, the COM1 UART and, when the
// VM has one, the PCI host bridge with its windows and INTx routing.
#include <optional>
#include <vector>

#include "absl/status/status.h"
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

// Mechanism #1 owns ports 0xcf8-0xcff; the bridge forwards every other port.
constexpr uint16_t kPciConfigPortsFirst = 0x0cf8;
constexpr uint16_t kPciConfigPortsEnd = 0x0d00;
constexpr uint32_t kPciSlots = 32;     // slot 0 (the bridge itself) has no INTx
constexpr uint32_t kPciIntxPins = 4;   // INTA..INTD
constexpr uint64_t kPrtAnyFunction = 0xffff;

// _PRT (ACPI 6.5 §6.2.13): one entry per slot and pin, wired straight to an
// IOAPIC input (Source = 0, Source Index = GSI). With no link device, the OS
// takes the interrupt as level-triggered, active low, as PCI INTx is.
Aml PciRoutingTable() {
  std::vector<Aml> entries;
  for (uint32_t slot = 1; slot < kPciSlots; ++slot) {
    for (uint32_t pin = 0; pin < kPciIntxPins; ++pin) {
      entries.push_back(Aml::Package({
          Aml::Integer((uint64_t{slot} << 16) | kPrtAnyFunction),  // _ADR: device, any function
          Aml::Integer(pin),
          Aml::Integer(0),
          Aml::Integer(layout::PciIntxGsi(slot, pin)),
      }));
    }
  }
  return Aml::Package(entries);
}

// \_SB.PCI0 and \_SB.MRES; an Aml::Error on a window the descriptors
// cannot express.
std::vector<Aml> PciDevices(const PciHostBridge& pci) {
  ResourceTemplate windows;
  windows.WordBusNumber(0, 0)
      .WordIo(0, kPciConfigPortsFirst - 1)
      .WordIo(kPciConfigPortsEnd, 0xffff);
  const uint64_t mmio32_last = pci.mmio32.base + pci.mmio32.size - 1;
  if (pci.mmio32.size == 0 || mmio32_last > 0xffffffffu) {
    return {Aml::Error(absl::InvalidArgumentError("the 32-bit PCI window must end below 4 GiB"))};
  }
  windows.DWordMemory(static_cast<uint32_t>(pci.mmio32.base),
                      static_cast<uint32_t>(mmio32_last));
  if (pci.mmio64.size != 0) {
    windows.QWordMemory(pci.mmio64.base, pci.mmio64.base + pci.mmio64.size - 1);
  }

  // Linux uses the MCFG's ECAM only if firmware also reserves it, as a
  // motherboard resource (PNP0C02) in the namespace.
  ResourceTemplate ecam;
  if (pci.ecam.base + pci.ecam.size > 0x100000000ull) {
    return {Aml::Error(absl::InvalidArgumentError("the ECAM window must lie below 4 GiB"))};
  }
  ecam.Memory32Fixed(static_cast<uint32_t>(pci.ecam.base),
                     static_cast<uint32_t>(pci.ecam.size));

  Aml pci0 = Aml::Device("PCI0", {
      Aml::Name("_HID", Aml::DWord(EisaId("PNP0A08"))),  // PCI Express root bridge
      Aml::Name("_CID", Aml::DWord(EisaId("PNP0A03"))),  // PCI root bridge
      Aml::Name("_SEG", Aml::Integer(0)),
      Aml::Name("_BBN", Aml::Integer(0)),
      Aml::Name("_UID", Aml::Integer(0)),
      Aml::Name("_CRS", windows.ToAml()),
      Aml::Name("_PRT", PciRoutingTable()),
  });
  Aml mres = Aml::Device("MRES", {
      Aml::Name("_HID", Aml::DWord(EisaId("PNP0C02"))),  // motherboard resources
      Aml::Name("_UID", Aml::Integer(0)),
      Aml::Name("_CRS", ecam.ToAml()),
  });
  return {pci0, mres};
}

}  // namespace

absl::StatusOr<std::vector<uint8_t>> BuildDsdt(const std::optional<PciHostBridge>& pci) {
  // \_S5_: {SLP_TYPa, SLP_TYPb, reserved, reserved}. The OS writes SLP_TYPa
  // into the sleep control register, which acpi_pm turns into power off.
  Aml s5 = Aml::Name("_S5_", Aml::Package({Aml::Integer(layout::kS5SlpTyp),
                                           Aml::Integer(layout::kS5SlpTyp), Aml::Integer(0),
                                           Aml::Integer(0)}));
  ResourceTemplate com1_resources;
  com1_resources.Io16(layout::kPortCom1, layout::kPortCom1, 0, kCom1PortCount)
      .IrqNoFlags(layout::kCom1Irq);
  std::vector<Aml> devices = {
      Aml::Device("COM1", {
                              // EISA IDs are always written as DWords.
                              Aml::Name("_HID", Aml::DWord(EisaId("PNP0501"))),  // 16550A
                              Aml::Name("_UID", Aml::Integer(0)),
                              Aml::Name("_CRS", com1_resources.ToAml()),
                          })};
  if (pci.has_value()) {
    for (Aml& d : PciDevices(*pci)) devices.push_back(std::move(d));
  }
  Aml sb = Aml::Scope("\\_SB_", devices);

  ByteWriter w = BeginSdt("DSDT", kDsdtRevision);
  for (const Aml* term : {&s5, &sb}) {
    if (!term->status().ok()) return term->status();
    w.Bytes(term->bytes());
  }
  return FinishSdt(std::move(w));
}

}  // namespace flint::acpi
