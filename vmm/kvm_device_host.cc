#include "vmm/kvm_device_host.h"

#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <optional>

#include "absl/strings/str_format.h"
#include "vmm/kvm/unique_fd.h"
#include "vmm/layout.h"

namespace flint {
namespace {

constexpr uint32_t kIoapicPins = 24;
constexpr uint32_t kPicPins = 16;

kvm_irq_routing_entry IrqchipRoute(uint32_t gsi, uint32_t chip, uint32_t pin) {
  kvm_irq_routing_entry e{};
  e.gsi = gsi;
  e.type = KVM_IRQ_ROUTING_IRQCHIP;
  e.u.irqchip.irqchip = chip;
  e.u.irqchip.pin = pin;
  return e;
}

}  // namespace

// One source on a possibly shared GSI: PCI slots s and s + 8 share one, and
// KVM_IRQ_LINE keeps one level for all of userspace, so the host ORs them.
class KvmDeviceHost::IntxSource : public IrqLine {
 public:
  IntxSource(KvmDeviceHost* host, uint32_t gsi) : host_(host), gsi_(gsi) {}
  ~IntxSource() override {
    if (asserted_) Set(false);
  }
  void Set(bool level) override { host_->SetIntx(gsi_, &asserted_, level); }

 private:
  KvmDeviceHost* const host_;
  const uint32_t gsi_;
  bool asserted_ = false;  // guarded by host_->intx_mu_
};

class KvmDeviceHost::Vector : public MsiVector {
 public:
  Vector(KvmDeviceHost* host, uint32_t gsi, UniqueFd fd)
      : host_(host), gsi_(gsi), fd_(std::move(fd)) {}
  ~Vector() override {
    (void)host_->vm_->UnregisterIrqfd(fd_.get(), gsi_);
    if (routed_) (void)host_->UpdateRoute(gsi_, nullptr);
    host_->ReleaseGsi(gsi_);
  }

  absl::Status SetRoute(uint64_t address, uint32_t data) override {
    kvm_irq_routing_msi m{};
    m.address_lo = static_cast<uint32_t>(address);
    m.address_hi = static_cast<uint32_t>(address >> 32);
    m.data = data;
    if (routed_ && std::memcmp(&m, &route_, sizeof(m)) == 0) return absl::OkStatus();
    absl::Status s = host_->UpdateRoute(gsi_, &m);
    if (s.ok()) {
      route_ = m;
      routed_ = true;
    }
    return s;
  }

  void Fire() override {
    const uint64_t one = 1;
    // An eventfd write fails only if the counter would overflow, which a
    // guest that never lets it drain could cause; the interrupt is pending
    // in KVM either way.
    (void)!write(fd_.get(), &one, sizeof(one));
  }

 private:
  KvmDeviceHost* host_;
  const uint32_t gsi_;
  UniqueFd fd_;
  bool routed_ = false;
  kvm_irq_routing_msi route_{};
};

absl::StatusOr<std::unique_ptr<MsiVector>> KvmDeviceHost::AllocateMsi() {
  uint32_t gsi;
  {
    absl::MutexLock l(&mu_);
    if (!free_gsis_.empty()) {
      gsi = free_gsis_.back();
      free_gsis_.pop_back();
    } else if (next_gsi_ <= max_gsi_) {
      gsi = next_gsi_++;
    } else {
      return absl::ResourceExhaustedError(absl::StrFormat(
          "out of MSI interrupt routes (%u in use): too many devices or queues",
          max_gsi_ - layout::kMsiGsiBase + 1));
    }
  }
  int fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (fd < 0) {
    ReleaseGsi(gsi);
    return ErrnoStatus(errno, "eventfd for an MSI vector");
  }
  UniqueFd efd(fd);
  if (absl::Status s = vm_->RegisterIrqfd(efd.get(), gsi); !s.ok()) {
    ReleaseGsi(gsi);
    return s;
  }
  return std::unique_ptr<MsiVector>(new Vector(this, gsi, std::move(efd)));
}

void KvmDeviceHost::ReleaseGsi(uint32_t gsi) {
  absl::MutexLock l(&mu_);
  free_gsis_.push_back(gsi);
}

std::vector<kvm_irq_routing_entry> KvmDeviceHost::TableLocked() const {
  std::vector<kvm_irq_routing_entry> t;
  t.reserve(kIoapicPins + kPicPins + msi_routes_.size());
  // The kernel's default routes: GSI n is IOAPIC pin n, and for n < 16
  // also pin n % 8 of the master or slave PIC.
  for (uint32_t gsi = 0; gsi < kIoapicPins; ++gsi) {
    if (gsi < kPicPins) {
      t.push_back(IrqchipRoute(gsi, gsi < 8 ? KVM_IRQCHIP_PIC_MASTER : KVM_IRQCHIP_PIC_SLAVE,
                               gsi % 8));
    }
    t.push_back(IrqchipRoute(gsi, KVM_IRQCHIP_IOAPIC, gsi));
  }
  for (const auto& [gsi, msi] : msi_routes_) {
    kvm_irq_routing_entry e{};
    e.gsi = gsi;
    e.type = KVM_IRQ_ROUTING_MSI;
    e.u.msi = msi;
    t.push_back(e);
  }
  return t;
}

absl::Status KvmDeviceHost::UpdateRoute(uint32_t gsi, const kvm_irq_routing_msi* route) {
  absl::MutexLock l(&mu_);
  std::optional<kvm_irq_routing_msi> previous;
  if (auto it = msi_routes_.find(gsi); it != msi_routes_.end()) previous = it->second;
  if (route != nullptr) {
    msi_routes_[gsi] = *route;
  } else {
    msi_routes_.erase(gsi);
  }
  absl::Status s = vm_->SetGsiRouting(TableLocked());
  if (!s.ok()) {
    // KVM kept its old table. So must we: a route KVM refuses (a guest can
    // write any message into an MSI-X entry) would otherwise ride along in
    // every later commit and make every device's route changes fail.
    if (previous.has_value()) {
      msi_routes_[gsi] = *previous;
    } else {
      msi_routes_.erase(gsi);
    }
  }
  return s;
}

std::vector<kvm_irq_routing_entry> KvmDeviceHost::RoutingTable() const {
  absl::MutexLock l(&mu_);
  return TableLocked();
}

std::unique_ptr<IrqLine> KvmDeviceHost::IntxLine(uint32_t gsi) {
  return std::make_unique<IntxSource>(this, gsi);
}

void KvmDeviceHost::SetIntx(uint32_t gsi, bool* asserted, bool level) {
  absl::MutexLock l(&intx_mu_);
  uint32_t& count = intx_asserted_[gsi];
  if (level != *asserted) {
    *asserted = level;
    count = level ? count + 1 : count - 1;
  }
  // Fails only while the VM is being torn down.
  (void)vm_->SetIrqLine(gsi, count != 0);
}

absl::Status KvmDeviceHost::AddIoeventfd(int event_fd, uint64_t addr, uint32_t len) {
  return vm_->RegisterIoeventfd(event_fd, addr, len, /*is_pio=*/false);
}

absl::Status KvmDeviceHost::RemoveIoeventfd(int event_fd, uint64_t addr, uint32_t len) {
  return vm_->UnregisterIoeventfd(event_fd, addr, len, /*is_pio=*/false);
}

}  // namespace flint
