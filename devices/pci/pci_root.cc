#include "devices/pci/pci_root.h"

#include <algorithm>
#include <string_view>

#include "absl/strings/str_format.h"

namespace flint::pci {
namespace {

// CONFIG_ADDRESS (0xcf8): bit 31 enable, 23:16 bus, 15:11 device, 10:8
// function, 7:2 register. Reserved bits 30:24 and 1:0 read back as 0.
constexpr uint32_t kConfigAddressEnable = 1u << 31;
constexpr uint32_t kConfigAddressMask = 0x80fffffc;
constexpr uint64_t kConfigAddressPort = 0;  // offsets inside the 8-port range
constexpr uint64_t kConfigDataPort = 4;

// The host bridge in slot 0: what QEMU's generic PCIe host presents, so
// guests treat it as an ordinary, driverless host bridge.
constexpr uint16_t kRedHatVendor = 0x1b36;
constexpr uint16_t kPcieHostDevice = 0x0008;
constexpr uint32_t kClassHostBridge = 0x060000;

bool Overlaps(uint16_t reg, size_t size, uint16_t start, uint16_t end) {
  return reg < end && start < reg + size;
}

class HostBridge : public PciDevice {
 public:
  HostBridge()
      : config_(PciIds{.vendor = kRedHatVendor, .device = kPcieHostDevice,
                       .class_code = kClassHostBridge}) {}
  std::string_view name() const override { return "pci-host-bridge"; }
  PciConfigSpace& config() override { return config_; }
  // No BARs: never called.
  void BarRead(int, uint64_t, std::span<uint8_t> data) override {
    std::fill(data.begin(), data.end(), 0xff);
  }
  void BarWrite(int, uint64_t, std::span<const uint8_t>) override {}

 private:
  PciConfigSpace config_;
};

}  // namespace

// Configuration mechanism #1 (PCI 3.0 §3.2.2.3.2): the address dword at
// 0xcf8, the data window at 0xcfc-0xcff.
class PciRoot::ConfigIo : public BusDevice {
 public:
  explicit ConfigIo(PciRoot* root) : root_(root) {}
  std::string_view name() const override { return "pci-config"; }

  void Read(uint64_t offset, std::span<uint8_t> data) override {
    std::fill(data.begin(), data.end(), 0xff);
    absl::MutexLock l(&root_->mu_);
    const uint32_t address = root_->config_address_;
    if (offset == kConfigAddressPort && data.size() == 4) {
      for (size_t i = 0; i < 4; ++i) data[i] = static_cast<uint8_t>(address >> (8 * i));
      return;
    }
    Target t;
    if (!Decode(address, offset, data.size(), &t)) return;
    root_->ConfigReadLocked(t.slot, t.fn, t.reg, data);
  }

  void Write(uint64_t offset, std::span<const uint8_t> data) override {
    absl::MutexLock l(&root_->mu_);
    if (offset == kConfigAddressPort && data.size() == 4) {
      uint32_t v = 0;
      for (size_t i = 0; i < 4; ++i) v |= static_cast<uint32_t>(data[i]) << (8 * i);
      root_->config_address_ = v & kConfigAddressMask;
      return;
    }
    Target t;
    if (!Decode(root_->config_address_, offset, data.size(), &t)) return;
    root_->ConfigWriteLocked(t.slot, t.fn, t.reg, data);
  }

 private:
  struct Target {
    uint8_t slot;
    uint8_t fn;
    uint16_t reg;
  };
  // A data-window access at `offset` under CONFIG_ADDRESS `address`. Byte and
  // word accesses to 0xcf8-0xcfb are not config accesses (chipsets put other
  // registers there), and bus != 0 has no devices: both answer nothing.
  static bool Decode(uint32_t address, uint64_t offset, size_t size, Target* t) {
    if (offset < kConfigDataPort || offset - kConfigDataPort + size > 4) return false;
    if ((address & kConfigAddressEnable) == 0 || ((address >> 16) & 0xff) != 0) return false;
    t->slot = static_cast<uint8_t>((address >> 11) & 0x1f);
    t->fn = static_cast<uint8_t>((address >> 8) & 0x7);
    t->reg = static_cast<uint16_t>((address & 0xfc) + (offset - kConfigDataPort));
    return true;
  }

  PciRoot* const root_;
};

// ECAM (PCIe 3.0 §7.2.2): offset = bus << 20 | device << 15 | function << 12 |
// register. The window covers bus 0 only.
class PciRoot::Ecam : public BusDevice {
 public:
  explicit Ecam(PciRoot* root) : root_(root) {}
  std::string_view name() const override { return "pci-ecam"; }

  void Read(uint64_t offset, std::span<uint8_t> data) override {
    if (offset >= layout::kPciEcamSize) {
      std::fill(data.begin(), data.end(), 0xff);
      return;
    }
    root_->ConfigRead(Slot(offset), Fn(offset), Reg(offset), data);
  }
  void Write(uint64_t offset, std::span<const uint8_t> data) override {
    if (offset >= layout::kPciEcamSize) return;
    root_->ConfigWrite(Slot(offset), Fn(offset), Reg(offset), data);
  }

 private:
  static uint8_t Slot(uint64_t offset) { return static_cast<uint8_t>((offset >> 15) & 0x1f); }
  static uint8_t Fn(uint64_t offset) { return static_cast<uint8_t>((offset >> 12) & 0x7); }
  static uint16_t Reg(uint64_t offset) { return static_cast<uint16_t>(offset & 0xfff); }

  PciRoot* const root_;
};

// One BAR window: MMIO at window base + offset goes to the BAR decoding there.
class PciRoot::BarWindow : public BusDevice {
 public:
  BarWindow(PciRoot* root, uint64_t base, std::string_view name)
      : root_(root), base_(base), name_(name) {}
  std::string_view name() const override { return name_; }
  void Read(uint64_t offset, std::span<uint8_t> data) override {
    root_->BarAccess(base_ + offset, data, {});
  }
  void Write(uint64_t offset, std::span<const uint8_t> data) override {
    root_->BarAccess(base_ + offset, {}, data);
  }

 private:
  PciRoot* const root_;
  const uint64_t base_;
  const std::string_view name_;
};

PciRoot::PciRoot(DeviceHost* host, layout::Window mmio32, layout::Window mmio64)
    : host_(host),
      mmio32_(mmio32),
      mmio64_(mmio64),
      next32_(mmio32.base),
      next64_(mmio64.base),
      config_io_(std::make_shared<ConfigIo>(this)),
      ecam_(std::make_shared<Ecam>(this)),
      mmio32_window_(std::make_shared<BarWindow>(this, mmio32.base, "pci-mmio32")),
      mmio64_window_(std::make_shared<BarWindow>(this, mmio64.base, "pci-mmio64")) {
  absl::MutexLock l(&mu_);
  slots_[0] = std::make_shared<HostBridge>();
}

std::shared_ptr<BusDevice> PciRoot::config_io() { return config_io_; }
std::shared_ptr<BusDevice> PciRoot::ecam() { return ecam_; }
std::shared_ptr<BusDevice> PciRoot::mmio32_window() { return mmio32_window_; }
std::shared_ptr<BusDevice> PciRoot::mmio64_window() { return mmio64_window_; }

std::shared_ptr<PciDevice> PciRoot::device(uint8_t slot) const {
  absl::ReaderMutexLock l(&mu_);
  return slot < kNumSlots ? slots_[slot] : nullptr;
}

absl::StatusOr<uint8_t> PciRoot::AddDevice(std::shared_ptr<PciDevice> device) {
  if (device == nullptr) return absl::InvalidArgumentError("no PCI device given");
  absl::MutexLock l(&mu_);
  uint8_t slot = 0;
  for (uint8_t s = 1; s < kNumSlots; ++s) {
    if (slots_[s] == device) {
      return absl::AlreadyExistsError(
          absl::StrFormat("PCI device %s is already in slot %u", device->name(), s));
    }
    if (slot == 0 && slots_[s] == nullptr) slot = s;
  }
  if (slot == 0) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "no free PCI slot for %s: bus 0 holds at most %d devices", device->name(),
        kNumSlots - 1));
  }

  // Place every BAR before committing any, so a failure leaves no trace.
  PciConfigSpace& config = device->config();
  uint64_t next32 = next32_;
  uint64_t next64 = next64_;
  std::array<uint64_t, kNumBars> placed{};
  for (int bar = 0; bar < kNumBars; ++bar) {
    if (!config.BarDeclared(bar)) continue;
    const uint64_t size = config.BarSize(bar);
    const bool wide = config.BarKindOf(bar) == BarKind::kMem64;
    const layout::Window& window = wide ? mmio64_ : mmio32_;
    uint64_t& next = wide ? next64 : next32;
    const uint64_t end = window.base + window.size;
    // Natural alignment; sizes are powers of two (DeclareBar checked).
    const uint64_t at = next > end ? end : ((next + size - 1) & ~(size - 1));
    if (at < next || at > end || size > end - at) {
      return absl::ResourceExhaustedError(absl::StrFormat(
          "BAR %d of PCI device %s (%#x bytes) does not fit in the %s window [%#x, %#x)", bar,
          device->name(), size, wide ? "64-bit" : "32-bit", window.base, end));
    }
    placed[bar] = at;
    next = at + size;
  }
  for (int bar = 0; bar < kNumBars; ++bar) {
    if (config.BarDeclared(bar)) config.SetBarAddress(bar, placed[bar]);
  }
  next32_ = next32;
  next64_ = next64;
  // Decoding off until the guest turns it on, as at power-on.
  config.SetWord(kCommand, 0);
  slots_[slot] = device;

  const uint8_t pin = config.interrupt_pin();
  if (pin >= 1 && pin <= 4) {
    const uint32_t gsi = layout::PciIntxGsi(slot, pin - 1u);
    config.SetByte(kInterruptLine, static_cast<uint8_t>(gsi));
    device->AttachIntx(host_->IntxLine(gsi));
  }
  return slot;
}

void PciRoot::ConfigRead(uint8_t slot, uint8_t fn, uint16_t reg, std::span<uint8_t> data) {
  absl::MutexLock l(&mu_);
  ConfigReadLocked(slot, fn, reg, data);
}

void PciRoot::ConfigWrite(uint8_t slot, uint8_t fn, uint16_t reg,
                          std::span<const uint8_t> data) {
  absl::MutexLock l(&mu_);
  ConfigWriteLocked(slot, fn, reg, data);
}

void PciRoot::ConfigReadLocked(uint8_t slot, uint8_t fn, uint16_t reg,
                               std::span<uint8_t> data) {
  // Functions 1-7 do not exist: devices are single-function, and an all-ones
  // vendor ID is how the OS learns that.
  if (fn != 0 || slot >= kNumSlots || slots_[slot] == nullptr) {
    std::fill(data.begin(), data.end(), 0xff);
    return;
  }
  slots_[slot]->config().Read(reg, data);
}

void PciRoot::ConfigWriteLocked(uint8_t slot, uint8_t fn, uint16_t reg,
                                std::span<const uint8_t> data) {
  if (fn != 0 || slot >= kNumSlots || slots_[slot] == nullptr) return;
  PciDevice& dev = *slots_[slot];
  if (!dev.config().Write(reg, data)) return;  // a malformed access changes nothing
  dev.ConfigWritten(reg, data.size());
  if (Overlaps(reg, data.size(), kCommand, kCommand + 1) ||
      Overlaps(reg, data.size(), kBar0, kBar0 + 4 * kNumBars)) {
    RemapLocked();
  }
}

bool PciRoot::InsideAWindow(uint64_t base, uint64_t size) const {
  for (const layout::Window& w : {mmio32_, mmio64_}) {
    if (base >= w.base && base - w.base <= w.size && size <= w.size - (base - w.base)) {
      return true;
    }
  }
  return false;
}

std::optional<uint64_t> PciRoot::DecodeAddressLocked(uint8_t slot, int bar) const {
  PciConfigSpace& config = slots_[slot]->config();
  if (!config.memory_enabled() || !config.BarDeclared(bar)) return std::nullopt;
  // 0 is also what BarAddress reports while the guest sizes the BAR.
  const uint64_t address = config.BarAddress(bar);
  if (address == 0) return std::nullopt;
  // Programmed outside both windows: the guest's mistake; it simply does not
  // decode (it could otherwise shadow RAM, the IOAPIC or the ECAM).
  if (!InsideAWindow(address, config.BarSize(bar))) return std::nullopt;
  return address;
}

void PciRoot::RemapLocked() {
  // The mappings the registers ask for now. Where two BARs overlap (a guest
  // mid-reassignment, or a confused one), the lower slot and BAR wins and the
  // other does not decode until the conflict is gone.
  std::vector<Mapping> wanted;
  for (uint8_t slot = 0; slot < kNumSlots; ++slot) {
    if (slots_[slot] == nullptr) continue;
    for (int bar = 0; bar < kNumBars; ++bar) {
      std::optional<uint64_t> at = DecodeAddressLocked(slot, bar);
      if (!at.has_value()) continue;
      const uint64_t size = slots_[slot]->config().BarSize(bar);
      const bool clash = std::any_of(wanted.begin(), wanted.end(), [&](const Mapping& m) {
        return *at < m.base + m.size && m.base < *at + size;
      });
      if (!clash) wanted.push_back(Mapping{*at, size, slot, bar});
    }
  }
  std::sort(wanted.begin(), wanted.end(),
            [](const Mapping& a, const Mapping& b) { return a.base < b.base; });

  auto same = [](const Mapping& a, const Mapping& b) {
    return a.slot == b.slot && a.bar == b.bar && a.base == b.base;
  };
  auto in = [&](const std::vector<Mapping>& v, const Mapping& m) {
    return std::any_of(v.begin(), v.end(), [&](const Mapping& x) { return same(x, m); });
  };
  // Every unmap before any map, so a device moving its ioeventfds never has
  // two registered at one address.
  for (const Mapping& m : mappings_) {
    if (!in(wanted, m)) slots_[m.slot]->BarMapped(m.bar, std::nullopt);
  }
  for (const Mapping& m : wanted) {
    if (!in(mappings_, m)) slots_[m.slot]->BarMapped(m.bar, m.base);
  }
  mappings_ = std::move(wanted);
}

const PciRoot::Mapping* PciRoot::FindLocked(uint64_t gpa, uint64_t len) const {
  auto it = std::upper_bound(mappings_.begin(), mappings_.end(), gpa,
                             [](uint64_t a, const Mapping& m) { return a < m.base; });
  if (it == mappings_.begin()) return nullptr;
  const Mapping& m = *(it - 1);
  const uint64_t offset = gpa - m.base;
  // An access that straddles the BAR's end is not claimed by it.
  if (offset >= m.size || len > m.size - offset) return nullptr;
  return &m;
}

void PciRoot::BarAccess(uint64_t gpa, std::span<uint8_t> read, std::span<const uint8_t> write) {
  absl::ReaderMutexLock l(&mu_);
  const size_t len = read.empty() ? write.size() : read.size();
  const Mapping* m = FindLocked(gpa, len);
  if (m == nullptr) {
    std::fill(read.begin(), read.end(), 0xff);  // nothing decodes here
    return;
  }
  PciDevice& dev = *slots_[m->slot];
  if (!read.empty()) {
    dev.BarRead(m->bar, gpa - m->base, read);
  } else {
    dev.BarWrite(m->bar, gpa - m->base, write);
  }
}

}  // namespace flint::pci
