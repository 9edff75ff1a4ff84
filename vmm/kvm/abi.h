// Kernel ABI that flint declares itself, in this one place: definitions newer
// than the Linux 6.1 <linux/kvm.h> on Debian bookworm, and corrections for
// what that header gets wrong when compiled as C++.
//
// The C++ problem: 6.1's uapi headers declare trailing arrays through
// __DECLARE_FLEX_ARRAY, which wraps the array in a struct holding an empty
// struct. In C an empty struct has size 0; in C++ it has size 1, so in C++
// kvm_cpuid2::entries sits at offset 12 instead of 8 (kvm_msrs::entries at 16
// instead of 8), and every ioctl number derived from sizeof() of those structs
// is wrong (the kernel answers EINVAL/ENOTTY). flint therefore lays out these
// variable-length ioctl arguments with the headers below and uses the ioctl
// numbers computed from the real (C) sizes.
#pragma once

#include <linux/kvm.h>
#include <sys/ioctl.h>

#include <cstdint>

namespace flint::kvm_abi {

// struct kvm_cpuid2 as the kernel sees it: entries start at offset 8.
struct Cpuid2Header {
  uint32_t nent;
  uint32_t padding;
};
static_assert(sizeof(Cpuid2Header) == 8);

// struct kvm_msrs as the kernel sees it: entries start at offset 8.
struct MsrsHeader {
  uint32_t nmsrs;
  uint32_t pad;
};
static_assert(sizeof(MsrsHeader) == 8);

// struct kvm_irq_routing: entries start at offset 8.
struct IrqRoutingHeader {
  uint32_t nr;
  uint32_t flags;
};
static_assert(sizeof(IrqRoutingHeader) == 8);

static_assert(sizeof(kvm_cpuid_entry2) == 40);
static_assert(sizeof(kvm_msr_entry) == 16);
static_assert(sizeof(kvm_irq_routing_entry) == 48);

inline constexpr unsigned long kGetSupportedCpuid = _IOWR(KVMIO, 0x05, Cpuid2Header);
inline constexpr unsigned long kSetCpuid2 = _IOW(KVMIO, 0x90, Cpuid2Header);
inline constexpr unsigned long kGetMsrs = _IOWR(KVMIO, 0x88, MsrsHeader);
inline constexpr unsigned long kSetMsrs = _IOW(KVMIO, 0x89, MsrsHeader);
inline constexpr unsigned long kSetGsiRouting = _IOW(KVMIO, 0x6a, IrqRoutingHeader);

// The values as the kernel defines them (checked here so a typo cannot hide).
static_assert(kGetSupportedCpuid == 0xc008ae05);
static_assert(kSetCpuid2 == 0x4008ae90);
static_assert(kGetMsrs == 0xc008ae88);
static_assert(kSetMsrs == 0x4008ae89);
static_assert(kSetGsiRouting == 0x4008ae6a);

// Capabilities newer than 6.1's header.
inline constexpr long kCapGuestMemfd = 234;
inline constexpr long kCapVmTypes = 235;

}  // namespace flint::kvm_abi
