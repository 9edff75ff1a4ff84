// The Fixed ACPI Description Table (ACPI 6.5 §5.2.9), hardware-reduced: no
// PM1/GPE register blocks, no SCI, no FACS. Power off goes through the sleep
// control register that devices/acpi_pm.cc implements; the power button is a
// control-method device behind a GED (devices/power_button.h, the DSDT).
#include "absl/status/status.h"
#include "absl/strings/str_format.h"
#include "vmm/acpi/builders.h"
#include "vmm/acpi/sdt.h"
#include "vmm/layout.h"

namespace flint::acpi {
namespace {

constexpr uint8_t kFadtRevision = 6;
constexpr uint8_t kFadtMinorRevision = 3;  // the layout is ACPI 6.3's (also 6.4/6.5's)

// Flags (§5.2.9, Table 5.10).
constexpr uint32_t kFlagWbinvd = 1u << 0;       // WBINVD works (true under KVM)
// PWR_BUTTON set: the power button is not the fixed-feature one (which a
// hardware-reduced machine cannot have) but a control-method device, the
// DSDT's \_SB.PWRB, which the Generic Event Device \_SB.GED0 notifies.
constexpr uint32_t kFlagPwrButton = 1u << 4;
constexpr uint32_t kFlagSlpButton = 1u << 5;    // no fixed-feature sleep button
constexpr uint32_t kFlagHwReducedAcpi = 1u << 20;

// IA-PC boot architecture flags (Table 5.11). The 8042 bit stays clear on
// purpose: flint's i8042 is only the reset line, and advertising it would make
// Linux probe a keyboard controller that never answers (a slow timeout). The
// CMOS RTC at port 0x70 exists, so "CMOS RTC not present" stays clear too.
constexpr uint16_t kBootArchVgaNotPresent = 1u << 2;

constexpr uint8_t kPmProfileUnspecified = 0;

constexpr size_t kIgnoredHwFieldsStart = 46;  // SCI_INT .. CENTURY: ignored when HW-reduced
constexpr size_t kIapcBootArchOffset = 109;
constexpr size_t kXpm1aEvtBlkOffset = 148;    // X_PM1a_EVT_BLK .. X_GPE1_BLK: unused
constexpr size_t kSleepControlOffset = 244;

// Bytes the guest can see at kPortAcpiPm: control, then status.
constexpr Gas kSleepControl{.space = AddressSpace::kSystemIo, .bit_width = 8, .bit_offset = 0,
                            .access = AccessSize::kByte, .address = layout::kPortAcpiPm};
constexpr Gas kSleepStatus{.space = AddressSpace::kSystemIo, .bit_width = 8, .bit_offset = 0,
                           .access = AccessSize::kByte, .address = layout::kPortAcpiPm + 1u};

}  // namespace

absl::StatusOr<std::vector<uint8_t>> BuildFadt(uint64_t dsdt_gpa) {
  ByteWriter w = BeginSdt("FACP", kFadtRevision);
  w.U32(0);  // FIRMWARE_CTRL: no FACS, which HW_REDUCED_ACPI permits
  // DSDT (32-bit) as well as X_DSDT, for OSes that read only the old field.
  w.U32(dsdt_gpa <= 0xffffffffu ? static_cast<uint32_t>(dsdt_gpa) : 0);
  w.U8(0);  // reserved
  w.U8(kPmProfileUnspecified);
  w.Zeros(kIapcBootArchOffset - kIgnoredHwFieldsStart);
  w.U16(kBootArchVgaNotPresent);
  w.U8(0);  // reserved
  w.U32(kFlagWbinvd | kFlagPwrButton | kFlagSlpButton | kFlagHwReducedAcpi);
  WriteGas(w, Gas{});  // RESET_REG: none (RESET_REG_SUP clear); reset is the i8042
  w.U8(0);             // RESET_VALUE
  w.U16(0);            // ARM_BOOT_ARCH
  w.U8(kFadtMinorRevision);
  w.U64(0);  // X_FIRMWARE_CTRL: no FACS
  w.U64(dsdt_gpa);
  w.Zeros(kSleepControlOffset - kXpm1aEvtBlkOffset);
  WriteGas(w, kSleepControl);
  WriteGas(w, kSleepStatus);
  w.Text("FLINTVMM", 8);  // Hypervisor Vendor Identity
  if (w.size() != kFadtSize) {
    return absl::InternalError(
        absl::StrFormat("FADT layout is %u bytes, expected %u", w.size(), kFadtSize));
  }
  return FinishSdt(std::move(w));
}

}  // namespace flint::acpi
