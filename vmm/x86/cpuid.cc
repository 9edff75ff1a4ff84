#include "vmm/x86/cpuid.h"

#include <bit>

namespace flint {
namespace {

constexpr uint32_t kLeafFeatures = 1;
constexpr uint32_t kLeafCacheParams = 4;
constexpr uint32_t kLeafExtTopology = 0xb;
constexpr uint32_t kLeafExtTopologyV2 = 0x1f;
constexpr uint32_t kEcxHypervisor = 1u << 31;
constexpr uint32_t kEdxHtt = 1u << 28;

// Bits needed to hold values 0..n-1.
uint32_t BitsFor(uint32_t n) { return n <= 1 ? 0 : 32 - std::countl_zero(n - 1); }

}  // namespace

void ConfigureCpuid(std::vector<kvm_cpuid_entry2>& entries, uint32_t apic_id, uint32_t num_cpus) {
  const uint32_t core_bits = BitsFor(num_cpus);
  for (auto& e : entries) {
    switch (e.function) {
      case kLeafFeatures:
        // EBX[31:24] initial APIC ID, EBX[23:16] addressable logical processors.
        e.ebx = (e.ebx & 0x0000ffffu) | (apic_id << 24) | ((num_cpus > 255 ? 255 : num_cpus) << 16);
        e.ecx |= kEcxHypervisor;
        if (num_cpus > 1) {
          e.edx |= kEdxHtt;
        } else {
          e.edx &= ~kEdxHtt;
        }
        break;
      case kLeafCacheParams:
        // EAX[31:26]: cores per package - 1; EAX[25:14]: threads sharing this cache - 1.
        if ((e.eax & 0x1f) != 0) {
          uint32_t level = (e.eax >> 5) & 0x7;
          uint32_t sharing = level >= 3 ? (1u << core_bits) - 1 : 0;
          e.eax = (e.eax & 0x3fff) | (((1u << core_bits) - 1) << 26) | (sharing << 14);
        }
        break;
      case kLeafExtTopology:
      case kLeafExtTopologyV2:
        // Sub-leaf 0: SMT level (1 thread per core); sub-leaf 1: core level.
        e.edx = apic_id;
        if (e.index == 0) {
          e.eax = 0;  // shift to next level: no SMT bits
          e.ebx = 1;
          e.ecx = (1u << 8) | e.index;
        } else if (e.index == 1) {
          e.eax = core_bits;
          e.ebx = num_cpus;
          e.ecx = (2u << 8) | e.index;
        } else {
          e.eax = 0;
          e.ebx = 0;
          e.ecx = e.index;  // invalid level terminates the enumeration
        }
        break;
      default:
        break;
    }
  }
}

}  // namespace flint
