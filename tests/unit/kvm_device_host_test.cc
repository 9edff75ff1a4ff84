// KvmDeviceHost against the real /dev/kvm: MSI routes land in KVM's routing
// table and an irqfd write reaches the vCPU's local APIC; ioeventfds are
// registered and removed at the given addresses.
#include "vmm/kvm_device_host.h"

#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <time.h>

#include <cerrno>
#include <cstring>
#include <optional>

#include <gtest/gtest.h>

#include "vmm/kvm/unique_fd.h"
#include "vmm/x86/boot_cpu.h"

namespace flint {
namespace {

struct KvmFixture {
  std::optional<Kvm> kvm;
  std::optional<KvmVm> vm;
  std::optional<KvmVcpu> vcpu;
};

// Empty when /dev/kvm is unusable (the test then skips).
bool MakeVm(KvmFixture* f, std::string* why) {
  absl::StatusOr<Kvm> kvm = Kvm::Open();
  if (!kvm.ok()) {
    *why = std::string(kvm.status().message());
    return false;
  }
  f->kvm.emplace(std::move(*kvm));
  absl::StatusOr<KvmVm> vm = f->kvm->CreateVm();
  EXPECT_TRUE(vm.ok()) << vm.status();
  if (!vm.ok()) return false;
  f->vm.emplace(std::move(*vm));
  EXPECT_TRUE(f->vm->CreateIrqchip().ok());
  absl::StatusOr<KvmVcpu> vcpu = f->vm->CreateVcpu(0);
  EXPECT_TRUE(vcpu.ok()) << vcpu.status();
  if (!vcpu.ok()) return false;
  f->vcpu.emplace(std::move(*vcpu));
  absl::StatusOr<std::vector<kvm_cpuid_entry2>> cpuid = f->kvm->GetSupportedCpuid();
  EXPECT_TRUE(cpuid.ok());
  EXPECT_TRUE(ConfigureVcpu(*f->vcpu, *cpuid, 1).ok());
  // Software-enable the local APIC (SVR bit 8, as a guest would): only then
  // does it accept fixed interrupts, which the delivery check needs.
  absl::StatusOr<kvm_lapic_state> l = f->vcpu->GetLapic();
  EXPECT_TRUE(l.ok());
  if (!l.ok()) return false;
  uint32_t svr;
  std::memcpy(&svr, l->regs + 0xf0, 4);
  svr |= 0x1ff;
  std::memcpy(l->regs + 0xf0, &svr, 4);
  EXPECT_TRUE(f->vcpu->SetLapic(*l).ok());
  return true;
}

#define REQUIRE_KVM(f)                               \
  KvmFixture f;                                      \
  do {                                               \
    std::string why;                                 \
    if (!MakeVm(&f, &why)) {                         \
      if (!why.empty()) GTEST_SKIP() << why;         \
      return;                                        \
    }                                                \
  } while (0)

bool IrrBit(const KvmVcpu& vcpu, uint8_t vector) {
  absl::StatusOr<kvm_lapic_state> l = vcpu.GetLapic();
  if (!l.ok()) return false;
  const int reg = 0x200 + 0x10 * (vector / 32);
  uint32_t v;
  std::memcpy(&v, l->regs + reg, 4);
  return v & (1u << (vector % 32));
}

int CountMsi(const std::vector<kvm_irq_routing_entry>& t) {
  int n = 0;
  for (const auto& e : t) n += e.type == KVM_IRQ_ROUTING_MSI;
  return n;
}

TEST(KvmDeviceHost, MsiVectorDeliversToTheLocalApic) {
  REQUIRE_KVM(f);
  KvmDeviceHost host(&*f.vm);
  absl::StatusOr<std::unique_ptr<MsiVector>> v = host.AllocateMsi();
  ASSERT_TRUE(v.ok()) << v.status();
  constexpr uint8_t kVector = 0x61;
  ASSERT_FALSE(IrrBit(*f.vcpu, kVector));
  // Fixed delivery, physical destination APIC 0.
  ASSERT_TRUE((*v)->SetRoute(0xfee00000, kVector).ok());
  (*v)->Fire();
  bool seen = false;
  for (int i = 0; i < 1000 && !seen; ++i) {
    seen = IrrBit(*f.vcpu, kVector);
    if (!seen) {
      timespec ts{0, 1000000};
      nanosleep(&ts, nullptr);
    }
  }
  EXPECT_TRUE(seen) << "MSI vector 0x61 never reached the LAPIC's IRR";
}

TEST(KvmDeviceHost, RoutingTableKeepsIrqchipPinsAndTracksMsiRoutes) {
  REQUIRE_KVM(f);
  KvmDeviceHost host(&*f.vm);
  EXPECT_EQ(CountMsi(host.RoutingTable()), 0);
  auto a = host.AllocateMsi();
  auto b = host.AllocateMsi();
  ASSERT_TRUE(a.ok() && b.ok());
  ASSERT_TRUE((*a)->SetRoute(0xfee00000, 0x40).ok());
  ASSERT_TRUE((*b)->SetRoute(0xfee01000, 0x41).ok());
  std::vector<kvm_irq_routing_entry> t = host.RoutingTable();
  EXPECT_EQ(CountMsi(t), 2);
  int ioapic = 0, pic = 0;
  for (const auto& e : t) {
    if (e.type != KVM_IRQ_ROUTING_IRQCHIP) continue;
    if (e.u.irqchip.irqchip == KVM_IRQCHIP_IOAPIC) {
      ++ioapic;
      EXPECT_EQ(e.u.irqchip.pin, e.gsi);
    } else {
      ++pic;
    }
  }
  EXPECT_EQ(ioapic, 24);
  EXPECT_EQ(pic, 16);
  // Re-pointing a vector replaces its route; destroying one removes it.
  ASSERT_TRUE((*a)->SetRoute(0xfee00000, 0x50).ok());
  t = host.RoutingTable();
  EXPECT_EQ(CountMsi(t), 2);
  bool found = false;
  for (const auto& e : t) found |= e.type == KVM_IRQ_ROUTING_MSI && e.u.msi.data == 0x50;
  EXPECT_TRUE(found);
  b->reset();
  EXPECT_EQ(CountMsi(host.RoutingTable()), 1);
}

TEST(KvmDeviceHost, ARefusedRouteLeavesTheTableAsCommitted) {
  REQUIRE_KVM(f);
  // With 32-bit x2APIC IDs, KVM refuses an MSI message whose address_hi has
  // low bits set: any guest can write such a message into its MSI-X table.
  kvm_enable_cap cap{};
  cap.cap = KVM_CAP_X2APIC_API;
  cap.args[0] = KVM_X2APIC_API_USE_32BIT_IDS;
  if (ioctl(f.vm->fd(), KVM_ENABLE_CAP, &cap) != 0) {
    GTEST_SKIP() << "KVM_CAP_X2APIC_API not available: " << strerror(errno);
  }
  KvmDeviceHost host(&*f.vm);
  auto hostile = host.AllocateMsi();
  auto other = host.AllocateMsi();
  ASSERT_TRUE(hostile.ok() && other.ok());
  ASSERT_TRUE((*hostile)->SetRoute(0xfee00000, 0x40).ok());
  EXPECT_FALSE((*hostile)->SetRoute(0x1'fee00000, 0x41).ok());
  std::vector<kvm_irq_routing_entry> t = host.RoutingTable();
  ASSERT_EQ(CountMsi(t), 1);
  for (const auto& e : t) {
    if (e.type == KVM_IRQ_ROUTING_MSI) {
      EXPECT_EQ(e.u.msi.data, 0x40u) << "the old route stays";
    }
  }
  // Another device's vector still gets its route.
  EXPECT_TRUE((*other)->SetRoute(0xfee00000, 0x50).ok());
  EXPECT_EQ(CountMsi(host.RoutingTable()), 2);
  // And a refused first route leaves no entry behind either.
  auto fresh = host.AllocateMsi();
  ASSERT_TRUE(fresh.ok());
  EXPECT_FALSE((*fresh)->SetRoute(0x2'fee00000, 0x60).ok());
  EXPECT_EQ(CountMsi(host.RoutingTable()), 2);
  EXPECT_TRUE((*other)->SetRoute(0xfee00000, 0x51).ok());
}

TEST(KvmDeviceHost, GsisAreReusedAndExhaustionIsAnError) {
  REQUIRE_KVM(f);
  KvmDeviceHost host(&*f.vm, /*max_gsi=*/25);  // two MSI GSIs: 24 and 25
  auto a = host.AllocateMsi();
  auto b = host.AllocateMsi();
  ASSERT_TRUE(a.ok() && b.ok());
  auto c = host.AllocateMsi();
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), absl::StatusCode::kResourceExhausted);
  a->reset();
  auto d = host.AllocateMsi();
  EXPECT_TRUE(d.ok()) << d.status();
}

// The IOAPIC's view of a level-triggered input: its IRR bit.
bool IoapicPinAsserted(const KvmVm& vm, uint32_t pin) {
  kvm_irqchip chip{};
  chip.chip_id = KVM_IRQCHIP_IOAPIC;
  EXPECT_EQ(ioctl(vm.fd(), KVM_GET_IRQCHIP, &chip), 0) << strerror(errno);
  return (chip.chip.ioapic.irr >> pin) & 1;
}

TEST(KvmDeviceHost, SharedIntxLineStaysAssertedWhileAnySourceAssertsIt) {
  REQUIRE_KVM(f);
  KvmDeviceHost host(&*f.vm);
  constexpr uint32_t kGsi = 17;  // PCI slots 1 and 9, pin INTA#
  std::unique_ptr<IrqLine> a = host.IntxLine(kGsi);
  std::unique_ptr<IrqLine> b = host.IntxLine(kGsi);
  a->Set(true);
  ASSERT_TRUE(IoapicPinAsserted(*f.vm, kGsi));
  b->Set(false);  // b was never up: a's interrupt must survive
  EXPECT_TRUE(IoapicPinAsserted(*f.vm, kGsi));
  b->Set(true);
  a->Set(false);
  EXPECT_TRUE(IoapicPinAsserted(*f.vm, kGsi));
  b->Set(false);
  EXPECT_FALSE(IoapicPinAsserted(*f.vm, kGsi));
  // A line that goes away takes its assertion with it.
  a->Set(true);
  a.reset();
  EXPECT_FALSE(IoapicPinAsserted(*f.vm, kGsi));
}

TEST(KvmDeviceHost, IoeventfdsAreAddedOnceAndRemoved) {
  REQUIRE_KVM(f);
  KvmDeviceHost host(&*f.vm);
  UniqueFd efd(eventfd(0, EFD_CLOEXEC));
  ASSERT_TRUE(efd.valid());
  ASSERT_TRUE(host.AddIoeventfd(efd.get(), 0xc0003000, 2).ok());
  // KVM refuses a second identical registration: the address is taken.
  EXPECT_FALSE(host.AddIoeventfd(efd.get(), 0xc0003000, 2).ok());
  EXPECT_TRUE(host.RemoveIoeventfd(efd.get(), 0xc0003000, 2).ok());
  EXPECT_FALSE(host.RemoveIoeventfd(efd.get(), 0xc0003000, 2).ok());
  EXPECT_TRUE(host.AddIoeventfd(efd.get(), 0xc0003000, 2).ok());
}

}  // namespace
}  // namespace flint
