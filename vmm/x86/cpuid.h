// CPUID presented to each vCPU: KVM's supported set, with this vCPU's APIC ID
// and the VM's topology (one socket, `num_cpus` cores, one thread per core).
#pragma once

#include <linux/kvm.h>

#include <cstdint>
#include <vector>

namespace flint {

// Rewrites `entries` (from KVM_GET_SUPPORTED_CPUID) in place for vCPU
// `apic_id` of `num_cpus`. Pure: unit-tested without KVM.
void ConfigureCpuid(std::vector<kvm_cpuid_entry2>& entries, uint32_t apic_id, uint32_t num_cpus);

}  // namespace flint
