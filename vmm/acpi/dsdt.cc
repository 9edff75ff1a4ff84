// The Differentiated System Description Table: AML describing what the MADT
// and FADT cannot: the S5 (soft off) sleep type, the COM1 UART, the power
// button (\_SB.PWRB, signalled through the Generic Event Device \_SB.GED0)
// and, when the VM has one, the PCI host bridge with its windows and INTx
// routing.
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

// ---- \_SB.GED0: the power button's Generic Event Device ----
//
// aml.h builds data objects only; the few control-method constructs the GED
// needs (OperationRegion, Field, Method, Store, If, And, Notify) are encoded
// here straight from the grammar (ACPI 6.5 §20.2.5).
using Code = std::vector<uint8_t>;

constexpr uint8_t kExtOpPrefix = 0x5b;
constexpr uint8_t kOpRegionOp = 0x80;  // ExtOpPrefix 0x80
constexpr uint8_t kFieldOp = 0x81;     // ExtOpPrefix 0x81
constexpr uint8_t kDeviceOp = 0x82;    // ExtOpPrefix 0x82
constexpr uint8_t kMethodOp = 0x14;
constexpr uint8_t kStoreOp = 0x70;
constexpr uint8_t kAndOp = 0x7b;
constexpr uint8_t kNotifyOp = 0x86;
constexpr uint8_t kIfOp = 0xa0;
constexpr uint8_t kLocal0Op = 0x60;
constexpr uint8_t kNullName = 0x00;  // an unused Target
constexpr uint8_t kRegionSpaceSystemIo = 0x01;
// FieldFlags: AccessType ByteAcc (1), LockRule NoLock (0), UpdateRule Preserve (0).
constexpr uint8_t kFieldByteAccNoLockPreserve = 0x01;
// MethodFlags: ArgCount 1 (bits 0-2), Serialized (bit 3), SyncLevel 0.
constexpr uint8_t kMethodOneArgSerialized = 0x01 | 0x08;
// Power button notification: "pressed" (ACPI 6.5 §5.6.6, Table 5.170).
constexpr uint8_t kNotifyPowerButtonPressed = 0x80;

// Extended Interrupt Descriptor (§6.4.3.6) flags: ResourceConsumer, Level,
// ActiveHigh, Exclusive, not wake capable.
constexpr uint8_t kLargeExtendedIrq = 0x89;
constexpr uint8_t kIrqConsumer = 1u << 0;
constexpr uint8_t kSmallEndTag = 0x79;

void Append(Code& out, std::span<const uint8_t> b) { out.insert(out.end(), b.begin(), b.end()); }

// Carries an Aml fragment's error instead of its bytes.
absl::Status AppendAml(Code& out, const Aml& a) {
  if (!a.status().ok()) return a.status();
  Append(out, a.bytes());
  return absl::OkStatus();
}

// opcode bytes, PkgLength, body.
absl::StatusOr<Code> Packaged(std::initializer_list<uint8_t> opcode, const Code& body) {
  absl::StatusOr<std::vector<uint8_t>> len = EncodePkgLength(body.size());
  if (!len.ok()) return len.status();
  Code out(opcode);
  Append(out, *len);
  Append(out, body);
  return out;
}

// ResourceTemplate () { Interrupt (ResourceConsumer, Level, ActiveHigh,
// Exclusive) { kGedGsi } }. Linux's GED driver takes every _CRS entry as an
// interrupt and gives up on anything else, so the event register is not
// listed here: the OperationRegion alone names it.
Code GedResources() {
  Code crs = {kLargeExtendedIrq, 6, 0, kIrqConsumer, 1};  // length 6: flags, count, one GSI
  for (int i = 0; i < 4; ++i) crs.push_back(static_cast<uint8_t>(layout::kGedGsi >> (8 * i)));
  crs.push_back(kSmallEndTag);
  crs.push_back(ChecksumFor(crs));
  return crs;
}

// Device (\_SB.GED0)
// {
//     Name (_HID, "ACPI0013")
//     Name (_UID, Zero)
//     Name (_CRS, ResourceTemplate () { Interrupt (...) { kGedGsi } })
//     OperationRegion (EREG, SystemIO, kPortGed, One)
//     Field (EREG, ByteAcc, NoLock, Preserve) { EVTS, 8 }
//     Method (_EVT, 1, Serialized)
//     {
//         Local0 = EVTS   // reading clears the events
//         If (Local0 & kGedEventPowerButton) { Notify (\_SB.PWRB, 0x80) }
//     }
// }
// _EVT does not look at Arg0 (the GSI that fired): the GED has one interrupt.
absl::StatusOr<Code> GedDevice() {
  constexpr NameString kGed = "\\_SB_.GED0";
  constexpr NameString kRegion = "EREG";
  constexpr NameString kEvents = "EVTS";
  constexpr NameString kEvt = "_EVT";
  constexpr NameString kPowerButton = "\\_SB_.PWRB";

  Code dev(kGed.bytes().begin(), kGed.bytes().end());
  const Code crs = GedResources();
  for (const Aml& a : {Aml::Name("_HID", Aml::String("ACPI0013")),
                       Aml::Name("_UID", Aml::Integer(0)), Aml::Name("_CRS", Aml::Buffer(crs))}) {
    if (absl::Status s = AppendAml(dev, a); !s.ok()) return s;
  }

  Append(dev, Code{kExtOpPrefix, kOpRegionOp});
  Append(dev, kRegion.bytes());
  dev.push_back(kRegionSpaceSystemIo);
  Append(dev, Aml::Integer(layout::kPortGed).bytes());
  Append(dev, Aml::Integer(1).bytes());

  Code field(kRegion.bytes().begin(), kRegion.bytes().end());
  field.push_back(kFieldByteAccNoLockPreserve);
  Append(field, kEvents.bytes());  // NamedField: NameSeg, then its width in bits
  field.push_back(8);
  absl::StatusOr<Code> field_op = Packaged({kExtOpPrefix, kFieldOp}, field);
  if (!field_op.ok()) return field_op.status();
  Append(dev, *field_op);

  Code notify = {kNotifyOp};
  Append(notify, kPowerButton.bytes());
  Append(notify, Aml::Integer(kNotifyPowerButtonPressed).bytes());
  Code predicate_and_body = {kAndOp, kLocal0Op};
  Append(predicate_and_body, Aml::Integer(layout::kGedEventPowerButton).bytes());
  predicate_and_body.push_back(kNullName);
  Append(predicate_and_body, notify);
  absl::StatusOr<Code> if_op = Packaged({kIfOp}, predicate_and_body);
  if (!if_op.ok()) return if_op.status();

  Code method(kEvt.bytes().begin(), kEvt.bytes().end());
  method.push_back(kMethodOneArgSerialized);
  method.push_back(kStoreOp);
  Append(method, kEvents.bytes());
  method.push_back(kLocal0Op);
  Append(method, *if_op);
  absl::StatusOr<Code> method_op = Packaged({kMethodOp}, method);
  if (!method_op.ok()) return method_op.status();
  Append(dev, *method_op);

  return Packaged({kExtOpPrefix, kDeviceOp}, dev);
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
                          }),
      // The power button as a control-method device (the FADT's PWR_BUTTON
      // flag says there is no fixed-feature one); GED0 notifies it.
      Aml::Device("PWRB", {Aml::Name("_HID", Aml::DWord(EisaId("PNP0C0C")))}),
  };
  if (pci.has_value()) {
    for (Aml& d : PciDevices(*pci)) devices.push_back(std::move(d));
  }
  Aml sb = Aml::Scope("\\_SB_", devices);
  // After \_SB_'s scope, so \_SB.PWRB exists when _EVT's Notify names it.
  absl::StatusOr<std::vector<uint8_t>> ged = GedDevice();
  if (!ged.ok()) return ged.status();

  ByteWriter w = BeginSdt("DSDT", kDsdtRevision);
  for (const Aml* term : {&s5, &sb}) {
    if (!term->status().ok()) return term->status();
    w.Bytes(term->bytes());
  }
  w.Bytes(*ged);
  return FinishSdt(std::move(w));
}

}  // namespace flint::acpi
