// The Multiple APIC Description Table (ACPI 6.5 §5.2.12): one local APIC per
// vCPU, KVM's in-kernel IOAPIC, and the ISA wiring the OS cannot discover.
#include "absl/status/status.h"
#include "absl/strings/str_format.h"
#include "vmm/acpi/builders.h"
#include "vmm/acpi/sdt.h"
#include "vmm/acpi/tables.h"
#include "vmm/layout.h"
#include "vmm/vm_config.h"

namespace flint::acpi {
namespace {

// kAcpiMaxCpus (tables.h) bounds what this MADT can describe with xAPIC
// entries; the VM must never ask for more.
static_assert(kMaxVcpus <= kAcpiMaxCpus, "the MADT cannot describe kMaxVcpus vCPUs");

constexpr uint8_t kMadtRevision = 5;  // ACPI 6.3

// PCAT_COMPAT = 1: KVM_CREATE_IRQCHIP gives the guest a real pair of 8259s
// (wired to LINT0 as ExtINT, see x86/boot_cpu.cc). The flag tells the OS they
// exist so it masks them before it switches to the IOAPIC; claiming 0 would
// invite an OS to leave them live.
constexpr uint32_t kMadtFlagPcatCompat = 1u << 0;

// Interrupt controller structure types and lengths (Table 5.21 onwards).
constexpr uint8_t kTypeLocalApic = 0;
constexpr uint8_t kLenLocalApic = 8;
constexpr uint8_t kTypeIoApic = 1;
constexpr uint8_t kLenIoApic = 12;
constexpr uint8_t kTypeIso = 2;
constexpr uint8_t kLenIso = 10;
constexpr uint8_t kTypeLocalApicNmi = 4;
constexpr uint8_t kLenLocalApicNmi = 6;

constexpr uint32_t kLocalApicEnabled = 1u << 0;
constexpr uint8_t kAllProcessors = 0xff;   // ACPI processor UID meaning "every CPU"
constexpr uint16_t kMpsIntiConforming = 0;  // polarity/trigger as the bus defines (ISA: edge, high)
constexpr uint8_t kNmiLint = 1;             // LINT1 is programmed as NMI (x86/boot_cpu.cc)

// The PIT's IRQ 0 arrives on IOAPIC pin 2 in KVM, as on real chipsets.
constexpr uint8_t kIsaBus = 0;
constexpr uint8_t kPitIrq = 0;
constexpr uint32_t kPitGsi = 2;

}  // namespace

absl::StatusOr<std::vector<uint8_t>> BuildMadt(uint32_t num_cpus) {
  if (num_cpus == 0 || num_cpus > kAcpiMaxCpus) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "the MADT describes 1..%u vCPUs (xAPIC IDs 0..%u, the IOAPIC takes the next), not %u",
        kAcpiMaxCpus, kAcpiMaxCpus - 1, num_cpus));
  }
  ByteWriter w = BeginSdt("APIC", kMadtRevision);
  w.U32(static_cast<uint32_t>(layout::kLapicBase));
  w.U32(kMadtFlagPcatCompat);

  // vCPU i has APIC ID i (x86/cpuid.cc) and ACPI processor UID i.
  for (uint32_t i = 0; i < num_cpus; ++i) {
    w.U8(kTypeLocalApic);
    w.U8(kLenLocalApic);
    w.U8(static_cast<uint8_t>(i));  // ACPI processor UID
    w.U8(static_cast<uint8_t>(i));  // APIC ID
    w.U32(kLocalApicEnabled);
  }

  // The IOAPIC's ID follows the last local APIC ID so the two never collide.
  w.U8(kTypeIoApic);
  w.U8(kLenIoApic);
  w.U8(static_cast<uint8_t>(num_cpus));
  w.U8(0);  // reserved
  w.U32(static_cast<uint32_t>(layout::kIoapicBase));
  w.U32(0);  // global system interrupt base: pins are GSIs 0..23

  w.U8(kTypeIso);
  w.U8(kLenIso);
  w.U8(kIsaBus);
  w.U8(kPitIrq);
  w.U32(kPitGsi);
  w.U16(kMpsIntiConforming);

  w.U8(kTypeLocalApicNmi);
  w.U8(kLenLocalApicNmi);
  w.U8(kAllProcessors);
  w.U16(kMpsIntiConforming);
  w.U8(kNmiLint);

  return FinishSdt(std::move(w));
}

}  // namespace flint::acpi
