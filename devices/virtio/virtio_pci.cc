#include "devices/virtio/virtio_pci.h"

#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <utility>

#include "absl/strings/str_format.h"

namespace flint::virtio {
namespace {

constexpr uint16_t kVirtioVendor = 0x1af4;
constexpr uint16_t kModernDeviceBase = 0x1040;
constexpr uint16_t kSubsystem = 0x1100;

// struct virtio_pci_common_cfg (virtio 1.2 §4.1.4.3).
constexpr uint64_t kDeviceFeatureSelect = 0x00;
constexpr uint64_t kDeviceFeature = 0x04;
constexpr uint64_t kDriverFeatureSelect = 0x08;
constexpr uint64_t kDriverFeature = 0x0c;
constexpr uint64_t kConfigMsixVector = 0x10;
constexpr uint64_t kNumQueues = 0x12;
constexpr uint64_t kDeviceStatus = 0x14;
constexpr uint64_t kConfigGeneration = 0x15;
constexpr uint64_t kQueueSelect = 0x16;
constexpr uint64_t kQueueSize = 0x18;
constexpr uint64_t kQueueMsixVector = 0x1a;
constexpr uint64_t kQueueEnable = 0x1c;
constexpr uint64_t kQueueNotifyOff = 0x1e;
constexpr uint64_t kQueueDesc = 0x20;
constexpr uint64_t kQueueDriver = 0x28;
constexpr uint64_t kQueueDevice = 0x30;
// queue_notify_data and queue_reset follow; their features are not offered,
// so they read as zero.
constexpr uint32_t kCommonCfgSize = 0x3c;
constexpr uint32_t kIsrSize = 4;
constexpr uint32_t kMaxDeviceConfig = 0x1000;

// NEEDS_RESET reports logged per device; the rest are only counted.
constexpr uint64_t kNeedsResetLogLimit = 8;

// Status bits the driver may set; NEEDS_RESET is the device's.
constexpr uint8_t kDriverStatusBits =
    kStatusAcknowledge | kStatusDriver | kStatusFeaturesOk | kStatusDriverOk | kStatusFailed;

void Put(std::span<uint8_t> image, uint64_t at, uint64_t v, size_t n) {
  for (size_t i = 0; i < n; ++i) image[at + i] = static_cast<uint8_t>(v >> (8 * i));
}

uint64_t LoadLe(std::span<const uint8_t> data) {
  uint64_t v = 0;
  for (size_t i = data.size(); i-- > 0;) v = (v << 8) | data[i];
  return v;
}

// A virtio_pci_cap (virtio 1.2 §4.1.4) body: everything after cap_vndr and
// cap_next. The notify capability carries notify_off_multiplier as well.
std::vector<uint8_t> VirtioCap(uint8_t cfg_type, uint32_t offset, uint32_t length,
                               bool with_multiplier) {
  const uint8_t cap_len = with_multiplier ? 20 : 16;
  std::vector<uint8_t> body(cap_len - 2, 0);
  body[0] = cap_len;
  body[1] = cfg_type;
  body[2] = 0;  // BAR 0
  body[3] = 0;  // id: one structure of each type
  Put(body, 6, offset, 4);
  Put(body, 10, length, 4);
  if (with_multiplier) Put(body, 14, kNotifyOffMultiplier, 4);
  return body;
}

// Replaces the 32-bit half of a 64-bit register that a 4-byte access at
// `offset` (relative to the register) names; an 8-byte access replaces both.
void Write64(uint64_t* reg, uint64_t offset, size_t len, uint64_t v) {
  if (offset == 0 && len == 8) {
    *reg = v;
  } else if (offset == 0 && len == 4) {
    *reg = (*reg & ~0xffffffffull) | v;
  } else if (offset == 4 && len == 4) {
    *reg = (*reg & 0xffffffffull) | (v << 32);
  }
}

}  // namespace

absl::StatusOr<std::shared_ptr<VirtioPciDevice>> VirtioPciDevice::Create(
    std::unique_ptr<VirtioDevice> device, const GuestMemory* memory, DeviceHost* host,
    EventLoop* loop) {
  if (device == nullptr || memory == nullptr || host == nullptr || loop == nullptr) {
    return absl::InvalidArgumentError("virtio-pci: device, memory, host and loop are required");
  }
  const uint16_t nq = device->num_queues();
  if (nq == 0 || nq > kMaxQueues) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s: %u queues (virtio-pci here takes 1..%u)", device->name(), nq, kMaxQueues));
  }
  const uint32_t max_size = device->max_queue_size();
  if (max_size == 0 || (max_size & (max_size - 1)) != 0 || max_size > kMaxQueueSize) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s: maximum queue size %u is not a power of two in [1, 32768]", device->name(),
        max_size));
  }
  if (device->config_size() > kMaxDeviceConfig) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s: device configuration of %u bytes exceeds %u", device->name(),
        device->config_size(), kMaxDeviceConfig));
  }
  const pci::PciIds ids{
      .vendor = kVirtioVendor,
      .device = static_cast<uint16_t>(kModernDeviceBase + device->device_id()),
      .subsystem_vendor = kVirtioVendor,
      .subsystem = kSubsystem,
      .revision = 1,
      .class_code = device->pci_class() & 0xffffff,
      .header_type = 0,
  };
  std::shared_ptr<VirtioPciDevice> dev(
      new VirtioPciDevice(std::move(device), memory, host, loop, ids));
  if (absl::Status s = dev->Init(); !s.ok()) return s;
  return dev;
}

VirtioPciDevice::VirtioPciDevice(std::unique_ptr<VirtioDevice> device, const GuestMemory* memory,
                                 DeviceHost* host, EventLoop* loop, const pci::PciIds& ids)
    : device_(std::move(device)),
      memory_(memory),
      host_(host),
      loop_(loop),
      num_queues_(device_->num_queues()),
      max_queue_size_(device_->max_queue_size()),
      config_(ids) {}

absl::Status VirtioPciDevice::Init() {
  const std::string_view dev_name = device_->name();
  if (absl::Status s = config_.DeclareBar(0, kBarSize, pci::BarKind::kMem64); !s.ok()) return s;
  config_.SetInterruptPin(1);  // INTA#

  struct Cap {
    uint8_t type;
    uint32_t offset;
    uint32_t length;
  };
  std::vector<Cap> caps = {
      {kCapCommonCfg, kCommonCfgOffset, kCommonCfgSize},
      {kCapNotifyCfg, kNotifyOffset, kNotifyOffMultiplier * num_queues_},
      {kCapIsrCfg, kIsrOffset, kIsrSize},
  };
  // A device without configuration gets no DEVICE capability (it is optional).
  if (device_->config_size() > 0) {
    caps.push_back({kCapDeviceCfg, kDeviceCfgOffset, device_->config_size()});
  }
  for (const Cap& c : caps) {
    const std::vector<uint8_t> body =
        VirtioCap(c.type, c.offset, c.length, c.type == kCapNotifyCfg);
    if (auto at = config_.AddCapability(pci::kCapIdVendor, body); !at.ok()) return at.status();
  }

  auto msix = pci::Msix::Create(config_, *host_, static_cast<uint16_t>(num_queues_ + 1), 0,
                                kMsixTableOffset, kMsixPbaOffset);
  if (!msix.ok()) {
    return absl::Status(msix.status().code(),
                        absl::StrFormat("%s: %s", dev_name, msix.status().message()));
  }
  msix_ = std::move(*msix);

  for (uint16_t q = 0; q < num_queues_; ++q) {
    UniqueFd fd(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (!fd.valid()) {
      return absl::ResourceExhaustedError(absl::StrFormat(
          "%s: eventfd for queue %u notifications: %s", dev_name, q, strerror(errno)));
    }
    notify_fds_.push_back(std::move(fd));
  }
  ioeventfd_added_.assign(num_queues_, false);

  absl::MutexLock l(&mu_);
  queues_.assign(num_queues_, QueueRegs{.size = max_queue_size_});
  return absl::OkStatus();
}

VirtioPciDevice::~VirtioPciDevice() {
  {
    absl::MutexLock t(&transition_mu_);
    // The device must stop touching the queues before they go away.
    if (activated_) loop_->RunSync([this] { device_->Reset(); });
  }
  BarMapped(0, std::nullopt);
}

uint64_t VirtioPciDevice::offered_features() const {
  return device_->features() | kFeatureVersion1 | kFeatureIndirectDesc | kFeatureEventIdx;
}

uint16_t VirtioPciDevice::CheckVector(uint16_t v) const {
  // §4.1.5.1.2: a vector the device cannot map reads back as NO_VECTOR.
  return v < msix_->num_vectors() ? v : kNoVector;
}

std::string VirtioPciDevice::StatsLine() const {
  return absl::StrFormat("notify_traps=%u msi=%u intx=%u resets=%u needs_reset=%u %s",
                         notifies_.load(std::memory_order_relaxed),
                         msi_sent_.load(std::memory_order_relaxed),
                         intx_sent_.load(std::memory_order_relaxed),
                         resets_.load(std::memory_order_relaxed),
                         needs_reset_.load(std::memory_order_relaxed), device_->StatsLine());
}

// ---- PCI side ------------------------------------------------------------

void VirtioPciDevice::ConfigWritten(uint16_t offset, size_t len) {
  (void)offset;
  (void)len;
  // MSI-X enable changes only here, under mu_, so RaiseLocked's choice
  // between MSI-X and INTx holds until its interrupt is out: one taken on a
  // stale choice would sit in the PBA (or the ISR) of a driver that no
  // longer looks there.
  absl::MutexLock l(&mu_);
  msix_->ConfigWritten(config_);
  intx_disabled_ = (config_.command() & pci::kCommandIntxDisable) != 0;
  UpdateIntxLocked();
}

void VirtioPciDevice::AttachIntx(std::unique_ptr<IrqLine> line) {
  absl::MutexLock l(&mu_);
  intx_ = std::move(line);
  intx_level_ = false;
  UpdateIntxLocked();
}

void VirtioPciDevice::BarMapped(int bar, std::optional<uint64_t> gpa) {
  if (bar != 0 || gpa == bar_gpa_) return;
  if (bar_gpa_.has_value()) {
    for (uint16_t q = 0; q < num_queues_; ++q) {
      if (!ioeventfd_added_[q]) continue;
      ioeventfd_added_[q] = false;
      absl::Status s = host_->RemoveIoeventfd(notify_fds_[q].get(),
                                              *bar_gpa_ + kNotifyOffset + kNotifyOffMultiplier * q,
                                              2);
      if (!s.ok()) {
        std::fprintf(stderr, "flint: %s: removing queue %u ioeventfd: %s\n",
                     std::string(name()).c_str(), q, std::string(s.message()).c_str());
      }
    }
  }
  bar_gpa_ = gpa;
  if (!gpa.has_value()) return;
  for (uint16_t q = 0; q < num_queues_; ++q) {
    absl::Status s = host_->AddIoeventfd(
        notify_fds_[q].get(), *gpa + kNotifyOffset + kNotifyOffMultiplier * q, 2);
    ioeventfd_added_[q] = s.ok();
    if (!s.ok()) {
      // Still correct, only slower: the write exits and BarWrite signals the fd.
      std::fprintf(stderr, "flint: %s: queue %u ioeventfd (notifications will trap): %s\n",
                   std::string(name()).c_str(), q, std::string(s.message()).c_str());
    }
  }
}

void VirtioPciDevice::BarRead(int bar, uint64_t offset, std::span<uint8_t> data) {
  std::fill(data.begin(), data.end(), 0);
  if (bar != 0 || offset >= kBarSize) return;
  if (offset < kIsrOffset) {
    ReadCommon(offset - kCommonCfgOffset, data);
  } else if (offset < kDeviceCfgOffset) {
    // Reading the ISR acknowledges it (§4.1.4.5).
    if (offset == kIsrOffset) data[0] = ReadIsr();
  } else if (offset < kNotifyOffset) {
    const uint64_t rel = offset - kDeviceCfgOffset;
    const uint32_t size = device_->config_size();
    if (rel < size && data.size() <= size - rel) {
      device_->ReadConfig(static_cast<uint32_t>(rel), data);
    }
  } else if (offset >= kMsixTableOffset && offset < kMsixPbaOffset) {
    msix_->TableRead(offset - kMsixTableOffset, data);
  } else if (offset >= kMsixPbaOffset && offset < kMsixPbaOffset + 0x1000) {
    msix_->PbaRead(offset - kMsixPbaOffset, data);
  }
}

void VirtioPciDevice::BarWrite(int bar, uint64_t offset, std::span<const uint8_t> data) {
  if (bar != 0 || offset >= kBarSize) return;
  if (offset < kIsrOffset) {
    WriteCommon(offset - kCommonCfgOffset, data);
  } else if (offset < kDeviceCfgOffset) {
    // ISR status is read-only.
  } else if (offset < kNotifyOffset) {
    const uint64_t rel = offset - kDeviceCfgOffset;
    const uint32_t size = device_->config_size();
    if (rel < size && data.size() <= size - rel) {
      device_->WriteConfig(static_cast<uint32_t>(rel), data);
    }
  } else if (offset < kMsixTableOffset) {
    Notify(offset - kNotifyOffset);
  } else if (offset < kMsixPbaOffset) {
    msix_->TableWrite(offset - kMsixTableOffset, data);
  }
  // The PBA is read-only.
}

void VirtioPciDevice::Notify(uint64_t offset) {
  // Without VIRTIO_F_NOTIFICATION_DATA the value written is just the queue
  // index; the address alone says which queue.
  if (offset % kNotifyOffMultiplier != 0) return;
  const uint64_t q = offset / kNotifyOffMultiplier;
  if (q >= num_queues_) return;
  notifies_.fetch_add(1, std::memory_order_relaxed);
  const uint64_t one = 1;
  // Non-blocking; the only failure (counter saturated) still leaves it readable.
  (void)!::write(notify_fds_[q].get(), &one, sizeof(one));
}

// ---- common configuration ------------------------------------------------

void VirtioPciDevice::ReadCommon(uint64_t offset, std::span<uint8_t> data) {
  // Reads have no side effects here, so serve them from a snapshot: any width
  // at any offset sees the same little-endian bytes.
  std::array<uint8_t, kCommonCfgSize> image{};
  {
    absl::MutexLock l(&mu_);
    const uint64_t offered = offered_features();
    Put(image, kDeviceFeatureSelect, device_feature_select_, 4);
    if (device_feature_select_ < 2) {
      Put(image, kDeviceFeature, offered >> (32 * device_feature_select_), 4);
    }
    Put(image, kDriverFeatureSelect, driver_feature_select_, 4);
    if (driver_feature_select_ < 2) {
      Put(image, kDriverFeature, driver_features_ >> (32 * driver_feature_select_), 4);
    }
    Put(image, kConfigMsixVector, msix_config_, 2);
    Put(image, kNumQueues, num_queues_, 2);
    image[kDeviceStatus] = status_;
    image[kConfigGeneration] = config_generation_;
    Put(image, kQueueSelect, queue_select_, 2);
    // An unavailable queue reads as size 0 and all else zero (§4.1.4.3.1).
    if (queue_select_ < num_queues_) {
      const QueueRegs& q = queues_[queue_select_];
      Put(image, kQueueSize, q.size, 2);
      Put(image, kQueueMsixVector, q.msix_vector, 2);
      Put(image, kQueueEnable, q.enabled ? 1 : 0, 2);
      Put(image, kQueueNotifyOff, queue_select_, 2);
      Put(image, kQueueDesc, q.desc, 8);
      Put(image, kQueueDriver, q.driver, 8);
      Put(image, kQueueDevice, q.device, 8);
    }
  }
  for (size_t i = 0; i < data.size(); ++i) {
    if (offset + i < image.size()) data[i] = image[offset + i];
  }
}

void VirtioPciDevice::WriteCommon(uint64_t offset, std::span<const uint8_t> data) {
  const uint64_t v = LoadLe(data);
  const size_t len = data.size();
  if (offset == kDeviceStatus && len == 1) {
    WriteStatus(static_cast<uint8_t>(v));
    return;
  }
  absl::MutexLock l(&mu_);
  if (offset == kDeviceFeatureSelect && len == 4) {
    device_feature_select_ = static_cast<uint32_t>(v);
  } else if (offset == kDriverFeatureSelect && len == 4) {
    driver_feature_select_ = static_cast<uint32_t>(v);
  } else if (offset == kDriverFeature && len == 4) {
    // Features are fixed once FEATURES_OK is set (or refused).
    if (driver_feature_select_ < 2 && !(status_ & (kStatusFeaturesOk | kStatusDriverOk))) {
      const int shift = 32 * static_cast<int>(driver_feature_select_);
      driver_features_ = (driver_features_ & ~(0xffffffffull << shift)) | (v << shift);
    }
  } else if (offset == kConfigMsixVector && len == 2) {
    msix_config_ = CheckVector(static_cast<uint16_t>(v));
  } else if (offset == kQueueSelect && len == 2) {
    queue_select_ = static_cast<uint16_t>(v);
  } else if (offset >= kQueueSize && offset < kCommonCfgSize) {
    WriteQueueReg(offset, len, v);
  }
}

void VirtioPciDevice::WriteQueueReg(uint64_t offset, size_t len, uint64_t v) {
  // The queues are in the device's hands after DRIVER_OK (§4.1.4.3.2).
  if ((status_ & kStatusDriverOk) || queue_select_ >= num_queues_) return;
  QueueRegs& q = queues_[queue_select_];
  if (offset == kQueueSize && len == 2) {
    const uint16_t size = static_cast<uint16_t>(v);
    if (size != 0 && (size & (size - 1)) == 0 && size <= max_queue_size_) q.size = size;
  } else if (offset == kQueueMsixVector && len == 2) {
    q.msix_vector = CheckVector(static_cast<uint16_t>(v));
  } else if (offset == kQueueEnable && len == 2) {
    if (v == 1) q.enabled = true;  // the driver may not write 0
  } else if (offset >= kQueueDesc && offset < kQueueDesc + 8) {
    Write64(&q.desc, offset - kQueueDesc, len, v);
  } else if (offset >= kQueueDriver && offset < kQueueDriver + 8) {
    Write64(&q.driver, offset - kQueueDriver, len, v);
  } else if (offset >= kQueueDevice && offset < kQueueDevice + 8) {
    Write64(&q.device, offset - kQueueDevice, len, v);
  }
}

// ---- status state machine ------------------------------------------------

void VirtioPciDevice::WriteStatus(uint8_t value) {
  absl::MutexLock t(&transition_mu_);
  if (value == 0) {
    Reset();
    return;
  }
  {
    absl::MutexLock l(&mu_);
    // Bits only accumulate; clearing any takes a reset (§2.1.2).
    uint8_t add = value & kDriverStatusBits & static_cast<uint8_t>(~status_);
    if (add == 0) return;
    if ((status_ | add) & kStatusFailed) {
      // The driver gave up: nothing starts any more.
      status_ |= add & (kStatusAcknowledge | kStatusDriver | kStatusFailed);
      return;
    }
    if (add & kStatusFeaturesOk) {
      const uint64_t offered = offered_features();
      const bool acceptable = !(status_ & kStatusDriverOk) &&
                              (driver_features_ & kFeatureVersion1) &&
                              (driver_features_ & ~offered) == 0;
      // A refused FEATURES_OK reads back clear (§3.1.1 step 6).
      if (!acceptable) add &= static_cast<uint8_t>(~kStatusFeaturesOk);
    }
    status_ |= add;
    if (!(add & kStatusDriverOk)) return;
  }
  Activate();
}

void VirtioPciDevice::Activate() {
  ActivateContext ctx;
  {
    absl::MutexLock l(&mu_);
    if (!(status_ & kStatusFeaturesOk)) {
      NeedsResetLocked("driver set DRIVER_OK without FEATURES_OK");
      return;
    }
    std::vector<std::unique_ptr<SplitQueue>> built;
    for (uint16_t i = 0; i < num_queues_; ++i) {
      const QueueRegs& r = queues_[i];
      if (!r.enabled) continue;
      absl::StatusOr<SplitQueue> q = SplitQueue::Create(
          *memory_, {.size = r.size, .desc = r.desc, .avail = r.driver, .used = r.device},
          driver_features_);
      if (!q.ok()) {
        NeedsResetLocked(absl::StrFormat("queue %u: %s", i, q.status().message()));
        return;
      }
      built.push_back(std::make_unique<SplitQueue>(std::move(*q)));
      ctx.queues.push_back(
          ActiveQueue{.index = i, .queue = built.back().get(), .notify_fd = notify_fds_[i].get()});
    }
    active_ = std::move(built);
    ctx.memory = memory_;
    ctx.loop = loop_;
    ctx.interrupts = this;
    ctx.features = driver_features_;
  }
  activated_ = true;
  absl::Status s;
  loop_->RunSync([&] { s = device_->Activate(ctx); });
  if (!s.ok()) NeedsReset(absl::StrFormat("activation failed: %s", s.message()));
}

void VirtioPciDevice::Reset() {
  // Device first: once Reset() returns, nothing uses the queues we drop.
  loop_->RunSync([this] { device_->Reset(); });
  activated_ = false;
  std::vector<std::unique_ptr<SplitQueue>> dropped;
  {
    absl::MutexLock l(&mu_);
    dropped = std::move(active_);
    active_.clear();
    device_feature_select_ = 0;
    driver_feature_select_ = 0;
    driver_features_ = 0;
    msix_config_ = kNoVector;
    status_ = 0;
    queue_select_ = 0;
    queues_.assign(num_queues_, QueueRegs{.size = max_queue_size_});
    isr_ = 0;
    UpdateIntxLocked();
    // MSI-X is PCI state, not virtio state: the table stays as programmed.
  }
  // Notifications from before the reset mean nothing to the next activation.
  for (const UniqueFd& fd : notify_fds_) {
    uint64_t count;
    (void)!::read(fd.get(), &count, sizeof(count));
  }
  resets_.fetch_add(1, std::memory_order_relaxed);
}

// ---- interrupts ----------------------------------------------------------

uint8_t VirtioPciDevice::ReadIsr() {
  absl::MutexLock l(&mu_);
  const uint8_t v = isr_;
  isr_ = 0;
  UpdateIntxLocked();
  return v;
}

void VirtioPciDevice::SignalUsed(uint16_t index) {
  absl::MutexLock l(&mu_);
  if (index >= num_queues_) return;
  RaiseLocked(kIsrQueue, queues_[index].msix_vector);
}

void VirtioPciDevice::SignalConfigChange() {
  absl::MutexLock l(&mu_);
  ++config_generation_;
  RaiseLocked(kIsrConfig, msix_config_);
}

void VirtioPciDevice::NeedsReset(const std::string& why) {
  absl::MutexLock l(&mu_);
  NeedsResetLocked(why);
}

void VirtioPciDevice::NeedsResetLocked(const std::string& why) {
  if (!(status_ & kStatusDriverOk) || (status_ & kStatusNeedsReset)) return;
  status_ |= kStatusNeedsReset;
  // A guest can break and reset the device in a loop: log the first few,
  // count them all (--stats), so it cannot fill the host's disk with logs.
  const uint64_t n = needs_reset_.fetch_add(1, std::memory_order_relaxed) + 1;
  if (n <= kNeedsResetLogLimit) {
    std::fprintf(stderr, "flint: %s: device needs reset: %s%s\n", std::string(name()).c_str(),
                 why.c_str(),
                 n == kNeedsResetLogLimit ? " (later ones are only counted: needs_reset= in --stats)"
                                          : "");
  }
  RaiseLocked(kIsrConfig, msix_config_);
}

void VirtioPciDevice::RaiseLocked(uint8_t isr_bit, uint16_t vector) {
  if (msix_->enabled()) {
    // NO_VECTOR means the driver wants no interrupt for this source.
    if (vector == kNoVector) return;
    msix_->Notify(vector);
    msi_sent_.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  isr_ |= isr_bit;
  UpdateIntxLocked();
}

void VirtioPciDevice::UpdateIntxLocked() {
  const bool pending = isr_ != 0;
  // With MSI-X enabled the function must not use INTx (PCI 3.0 §6.8.2).
  const bool level = pending && !intx_disabled_ && !msix_->enabled();
  // Interrupt Status shows the pending state whatever the disable bit says.
  config_.SetIntxStatus(pending);
  if (level == intx_level_) return;
  intx_level_ = level;
  if (level) intx_sent_.fetch_add(1, std::memory_order_relaxed);
  if (intx_) intx_->Set(level);
}

}  // namespace flint::virtio
