// Architectural state for vCPUs at power-on: the boot GDT and identity page
// tables in guest memory, and the registers that enter a kernel in the mode
// its boot protocol asks for.
#pragma once

#include <linux/kvm.h>

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "vmm/boot/loader.h"
#include "vmm/guest_memory.h"
#include "vmm/kvm/kvm.h"

namespace flint {

// Selectors in the boot GDT written at layout::kBootGdt.
inline constexpr uint16_t kBootCode32Selector = 0x08;
inline constexpr uint16_t kBootCode64Selector = 0x10;  // Linux's __BOOT_CS
inline constexpr uint16_t kBootDataSelector = 0x18;    // Linux's __BOOT_DS

// Writes the boot GDT and page tables that identity-map the first 4 GiB
// with 2 MiB pages (1 GiB pages do not work under every KVM: see PLATFORM.md).
absl::Status WriteBootCpuTables(const GuestMemory& mem);

// Pure: the special registers for entering in `mode`.
kvm_sregs BootSregs(const kvm_sregs& current, BootEntry::Mode mode);
kvm_regs BootRegs(const BootEntry& entry);
std::vector<kvm_msr_entry> BootMsrs();

// Per-vCPU set-up every vCPU gets: CPUID, MSRs, FPU, LAPIC LINT0/LINT1.
absl::Status ConfigureVcpu(const KvmVcpu& vcpu, std::vector<kvm_cpuid_entry2> cpuid,
                           uint32_t num_cpus);
// The boot processor also gets registers that start the kernel.
absl::Status SetBootRegisters(const KvmVcpu& vcpu, const BootEntry& entry);

}  // namespace flint
