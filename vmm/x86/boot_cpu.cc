#include "vmm/x86/boot_cpu.h"

#include <array>
#include <cstring>

#include "vmm/layout.h"
#include "vmm/x86/cpuid.h"

namespace flint {
namespace {

constexpr uint64_t kCr0Pe = 1ull << 0;
constexpr uint64_t kCr0Et = 1ull << 4;
constexpr uint64_t kCr0Pg = 1ull << 31;
constexpr uint64_t kCr4Pae = 1ull << 5;
constexpr uint64_t kEferLme = 1ull << 8;
constexpr uint64_t kEferLma = 1ull << 10;

constexpr uint64_t kPtePresent = 1ull << 0;
constexpr uint64_t kPteWrite = 1ull << 1;
constexpr uint64_t kPteLarge = 1ull << 7;

// GDT descriptors: flat 4 GiB segments.
constexpr uint64_t kGdtCode32 = 0x00cf9b000000ffffull;
constexpr uint64_t kGdtCode64 = 0x00af9b000000ffffull;
constexpr uint64_t kGdtData = 0x00cf93000000ffffull;

kvm_segment Segment(uint16_t selector, uint8_t type, bool code64, bool db) {
  kvm_segment s{};
  s.base = 0;
  s.limit = 0xffffffff;
  s.selector = selector;
  s.type = type;
  s.present = 1;
  s.dpl = 0;
  s.db = db ? 1 : 0;
  s.s = 1;
  s.l = code64 ? 1 : 0;
  s.g = 1;
  return s;
}

// LAPIC register offsets and LVT delivery modes (SDM vol. 3 §11.5.1).
constexpr size_t kApicLvtLint0 = 0x350;
constexpr size_t kApicLvtLint1 = 0x360;
constexpr uint32_t kDeliveryExtInt = 7u << 8;
constexpr uint32_t kDeliveryNmi = 4u << 8;

uint32_t GetReg(const kvm_lapic_state& l, size_t off) {
  uint32_t v;
  std::memcpy(&v, l.regs + off, 4);
  return v;
}
void SetReg(kvm_lapic_state& l, size_t off, uint32_t v) { std::memcpy(l.regs + off, &v, 4); }

}  // namespace

absl::Status WriteBootCpuTables(const GuestMemory& mem) {
  const std::array<uint64_t, 4> gdt = {0, kGdtCode32, kGdtCode64, kGdtData};
  if (absl::Status s = mem.Write(layout::kBootGdt, gdt.data(), sizeof(gdt)); !s.ok()) return s;

  if (absl::Status s = mem.WriteObj<uint64_t>(layout::kPml4, layout::kPdpt | kPtePresent | kPteWrite);
      !s.ok()) {
    return s;
  }
  std::array<uint64_t, 512> pd;
  for (uint64_t g = 0; g < 4; ++g) {
    uint64_t pd_gpa = layout::kPd + g * 4096;
    if (absl::Status s =
            mem.WriteObj<uint64_t>(layout::kPdpt + g * 8, pd_gpa | kPtePresent | kPteWrite);
        !s.ok()) {
      return s;
    }
    for (uint64_t i = 0; i < 512; ++i) {
      pd[i] = ((g << 30) | (i << 21)) | kPtePresent | kPteWrite | kPteLarge;
    }
    if (absl::Status s = mem.Write(pd_gpa, pd.data(), sizeof(pd)); !s.ok()) return s;
  }
  return absl::OkStatus();
}

kvm_sregs BootSregs(const kvm_sregs& current, BootEntry::Mode mode) {
  kvm_sregs s = current;
  s.gdt.base = layout::kBootGdt;
  s.gdt.limit = 4 * 8 - 1;
  s.idt.base = 0;
  s.idt.limit = 0;
  const kvm_segment data = Segment(kBootDataSelector, 3, false, true);
  s.ds = s.es = s.fs = s.gs = s.ss = data;
  if (mode == BootEntry::Mode::kLong64) {
    s.cs = Segment(kBootCode64Selector, 11, true, false);
    s.cr3 = layout::kPml4;
    s.cr4 = kCr4Pae;
    s.cr0 = kCr0Pe | kCr0Et | kCr0Pg;
    s.efer = kEferLme | kEferLma;
  } else {
    // PVH: 32-bit protected mode, paging off (Xen PVH ABI).
    s.cs = Segment(kBootCode32Selector, 11, false, true);
    s.cr3 = 0;
    s.cr4 = 0;
    s.cr0 = kCr0Pe | kCr0Et;
    s.efer = 0;
  }
  return s;
}

kvm_regs BootRegs(const BootEntry& entry) {
  kvm_regs r{};
  r.rflags = 0x2;
  r.rip = entry.rip;
  r.rsi = entry.rsi;
  r.rbx = entry.rbx;
  return r;
}

std::vector<kvm_msr_entry> BootMsrs() {
  auto msr = [](uint32_t index, uint64_t data) {
    kvm_msr_entry e{};
    e.index = index;
    e.data = data;
    return e;
  };
  return {
      msr(0x174, 0),                        // IA32_SYSENTER_CS
      msr(0x175, 0),                        // IA32_SYSENTER_ESP
      msr(0x176, 0),                        // IA32_SYSENTER_EIP
      msr(0xc0000081, 0),                   // STAR
      msr(0xc0000082, 0),                   // LSTAR
      msr(0xc0000083, 0),                   // CSTAR
      msr(0xc0000084, 0),                   // SFMASK
      msr(0xc0000102, 0),                   // KERNEL_GS_BASE
      msr(0x10, 0),                         // TSC
      msr(0x1a0, 1),                        // IA32_MISC_ENABLE: fast strings
      msr(0x2ff, (1u << 11) | 6),           // MTRR default type: enabled, write-back
  };
}

absl::Status ConfigureVcpu(const KvmVcpu& vcpu, std::vector<kvm_cpuid_entry2> cpuid,
                           uint32_t num_cpus) {
  ConfigureCpuid(cpuid, vcpu.id(), num_cpus);
  if (absl::Status s = vcpu.SetCpuid(cpuid); !s.ok()) return s;
  if (absl::Status s = vcpu.SetMsrs(BootMsrs()); !s.ok()) return s;
  kvm_fpu fpu{};
  fpu.fcw = 0x37f;
  fpu.mxcsr = 0x1f80;
  if (absl::Status s = vcpu.SetFpu(fpu); !s.ok()) return s;
  absl::StatusOr<kvm_lapic_state> lapic = vcpu.GetLapic();
  if (!lapic.ok()) return lapic.status();
  SetReg(*lapic, kApicLvtLint0, (GetReg(*lapic, kApicLvtLint0) & ~0x700u) | kDeliveryExtInt);
  SetReg(*lapic, kApicLvtLint1, (GetReg(*lapic, kApicLvtLint1) & ~0x700u) | kDeliveryNmi);
  return vcpu.SetLapic(*lapic);
}

absl::Status SetBootRegisters(const KvmVcpu& vcpu, const BootEntry& entry) {
  absl::StatusOr<kvm_sregs> sregs = vcpu.GetSregs();
  if (!sregs.ok()) return sregs.status();
  if (absl::Status s = vcpu.SetSregs(BootSregs(*sregs, entry.mode)); !s.ok()) return s;
  return vcpu.SetRegs(BootRegs(entry));
}

}  // namespace flint
