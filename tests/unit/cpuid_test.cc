#include "vmm/x86/cpuid.h"

#include <gtest/gtest.h>

namespace flint {
namespace {

kvm_cpuid_entry2 Leaf(uint32_t fn, uint32_t index, uint32_t eax = 0, uint32_t ebx = 0,
                      uint32_t ecx = 0, uint32_t edx = 0) {
  kvm_cpuid_entry2 e{};
  e.function = fn;
  e.index = index;
  e.eax = eax;
  e.ebx = ebx;
  e.ecx = ecx;
  e.edx = edx;
  return e;
}

const kvm_cpuid_entry2& Find(const std::vector<kvm_cpuid_entry2>& v, uint32_t fn, uint32_t idx) {
  for (const auto& e : v) {
    if (e.function == fn && e.index == idx) return e;
  }
  static kvm_cpuid_entry2 none{};
  ADD_FAILURE() << "leaf " << fn << "." << idx << " missing";
  return none;
}

std::vector<kvm_cpuid_entry2> Host() {
  return {Leaf(0, 0, 0xd), Leaf(1, 0, 0x806f8, 0xff00ab12, 0x7ffefbff, 0xbfebfbff),
          Leaf(4, 0, 0x1c004121), Leaf(4, 3, 0x1c03c163), Leaf(0xb, 0, 1, 2, 0x100, 7),
          Leaf(0xb, 1, 7, 64, 0x201, 7), Leaf(0xb, 2, 0, 0, 2, 7)};
}

TEST(Cpuid, ApicIdAndTopologyPerVcpu) {
  auto v = Host();
  ConfigureCpuid(v, 5, 8);
  const auto& l1 = Find(v, 1, 0);
  EXPECT_EQ(l1.ebx >> 24, 5u);
  EXPECT_EQ((l1.ebx >> 16) & 0xff, 8u);
  EXPECT_EQ(l1.ebx & 0xffff, 0xab12u);           // brand/CLFLUSH bits untouched
  EXPECT_NE(l1.ecx & (1u << 31), 0u);            // hypervisor present
  EXPECT_NE(l1.edx & (1u << 28), 0u);            // HTT: more than one logical CPU
  EXPECT_EQ(Find(v, 0xb, 0).edx, 5u);            // x2APIC ID
  EXPECT_EQ(Find(v, 0xb, 0).ebx, 1u);            // 1 thread per core
  EXPECT_EQ(Find(v, 0xb, 1).eax, 3u);            // 8 cores: 3 bits of APIC ID
  EXPECT_EQ(Find(v, 0xb, 1).ebx, 8u);
  EXPECT_EQ((Find(v, 0xb, 1).ecx >> 8) & 0xff, 2u);  // core level
  EXPECT_EQ((Find(v, 0xb, 2).ecx >> 8) & 0xff, 0u);  // terminates
  EXPECT_EQ(Find(v, 4, 0).eax >> 26, 7u);        // cores per package - 1
}

TEST(Cpuid, SingleCpuHasNoHtt) {
  auto v = Host();
  ConfigureCpuid(v, 0, 1);
  EXPECT_EQ(Find(v, 1, 0).edx & (1u << 28), 0u);
  EXPECT_EQ((Find(v, 1, 0).ebx >> 16) & 0xff, 1u);
  EXPECT_EQ(Find(v, 0xb, 1).eax, 0u);
  EXPECT_EQ(Find(v, 4, 0).eax >> 26, 0u);
}

TEST(Cpuid, NonPowerOfTwoCountRoundsShiftUp) {
  auto v = Host();
  ConfigureCpuid(v, 2, 3);
  EXPECT_EQ(Find(v, 0xb, 1).eax, 2u);
  EXPECT_EQ(Find(v, 0xb, 1).ebx, 3u);
}

}  // namespace
}  // namespace flint
