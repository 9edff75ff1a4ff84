#include "devices/pci/msix.h"

#include <algorithm>
#include <array>

#include "absl/strings/str_format.h"

namespace flint::pci {
namespace {

constexpr uint16_t kMaxVectors = 2048;  // Table Size is 11 bits (N - 1)

// Message Control (§6.8.2.3), at capability offset 2.
constexpr uint16_t kMessageControl = 2;
constexpr uint16_t kControlFunctionMask = 1 << 14;
constexpr uint16_t kControlEnable = 1 << 15;

// Table entry fields (§6.8.2.6-9).
constexpr uint64_t kAddressLo = 0;
constexpr uint64_t kAddressHi = 4;
constexpr uint64_t kData = 8;
constexpr uint64_t kVectorControl = 12;
constexpr uint32_t kVectorMasked = 1 << 0;  // the only bit software may change

constexpr uint32_t kBirMask = 0x7;

uint32_t LoadLe(std::span<const uint8_t> data, size_t at, size_t n) {
  uint32_t v = 0;
  for (size_t i = 0; i < n; ++i) v |= static_cast<uint32_t>(data[at + i]) << (8 * i);
  return v;
}

void StoreLe(std::span<uint8_t> data, size_t at, size_t n, uint64_t v) {
  for (size_t i = 0; i < n; ++i) data[at + i] = static_cast<uint8_t>(v >> (8 * i));
}

// An access the table and PBA honour: 4 or 8 bytes, naturally aligned, inside
// a region of `limit` bytes.
bool ValidAccess(uint64_t offset, size_t size, uint64_t limit) {
  if (size != 4 && size != 8) return false;
  if (offset % size != 0) return false;
  return offset < limit && size <= limit - offset;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Msix>> Msix::Create(PciConfigSpace& config, DeviceHost& host,
                                                   uint16_t num_vectors, int bar,
                                                   uint32_t table_offset, uint32_t pba_offset) {
  if (num_vectors == 0 || num_vectors > kMaxVectors) {
    return absl::InvalidArgumentError(
        absl::StrFormat("MSI-X takes 1..%u vectors, not %u", kMaxVectors, num_vectors));
  }
  if (!config.BarDeclared(bar)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("MSI-X table BAR %d is not a declared memory BAR", bar));
  }
  if (table_offset % 8 != 0 || pba_offset % 8 != 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "MSI-X table (%#x) and PBA (%#x) offsets must be 8-byte aligned (the low bits hold "
        "the BIR)",
        table_offset, pba_offset));
  }
  const uint64_t bar_size = config.BarSize(bar);
  const uint64_t table_bytes = uint64_t{num_vectors} * kEntrySize;
  const uint64_t pba_bytes = ((num_vectors + 63u) / 64u) * 8u;
  if (table_offset + table_bytes > bar_size || pba_offset + pba_bytes > bar_size) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "MSI-X table [%#x, +%#x) or PBA [%#x, +%#x) leaves BAR %d (%#x bytes)", table_offset,
        table_bytes, pba_offset, pba_bytes, bar, bar_size));
  }
  if (table_offset < pba_offset + pba_bytes && pba_offset < table_offset + table_bytes) {
    return absl::InvalidArgumentError("MSI-X table and PBA overlap");
  }

  std::vector<Entry> entries(num_vectors);
  for (Entry& e : entries) {
    absl::StatusOr<std::unique_ptr<MsiVector>> v = host.AllocateMsi();
    if (!v.ok()) {
      return absl::Status(v.status().code(),
                          absl::StrFormat("allocating %u MSI-X vectors: %s", num_vectors,
                                          v.status().message()));
    }
    e.vector = std::move(*v);
  }

  const uint16_t control = static_cast<uint16_t>(num_vectors - 1);
  const uint32_t table = table_offset | static_cast<uint32_t>(bar);
  const uint32_t pba = pba_offset | static_cast<uint32_t>(bar);
  const std::array<uint8_t, 10> body = {
      static_cast<uint8_t>(control), static_cast<uint8_t>(control >> 8),
      static_cast<uint8_t>(table),   static_cast<uint8_t>(table >> 8),
      static_cast<uint8_t>(table >> 16), static_cast<uint8_t>(table >> 24),
      static_cast<uint8_t>(pba),     static_cast<uint8_t>(pba >> 8),
      static_cast<uint8_t>(pba >> 16), static_cast<uint8_t>(pba >> 24)};
  // Only Message Control's enable and function-mask bits are the guest's.
  constexpr uint16_t kWritable = kControlFunctionMask | kControlEnable;
  const std::array<uint8_t, 10> writable = {
      static_cast<uint8_t>(kWritable), static_cast<uint8_t>(kWritable >> 8), 0, 0, 0, 0, 0, 0,
      0, 0};
  absl::StatusOr<uint16_t> cap = config.AddCapability(kCapIdMsix, body, writable);
  if (!cap.ok()) return cap.status();

  std::unique_ptr<Msix> msix(new Msix(*cap, table_offset, pba_offset));
  absl::MutexLock l(&msix->mu_);
  msix->entries_ = std::move(entries);
  return msix;
}

bool Msix::enabled() const {
  absl::MutexLock l(&mu_);
  return enabled_;
}

bool Msix::DeliverableLocked(const Entry& e) const {
  return enabled_ && !function_masked_ && (e.control & kVectorMasked) == 0;
}

bool Msix::RouteLocked(Entry& e) {
  if (e.routed) return true;
  // A garbage address (not 0xFEExxxxx) is still handed over: KVM decides
  // what it means. A route KVM refuses leaves the entry unrouted, and its
  // interrupts are dropped rather than sent to a stale message.
  if (!e.vector->SetRoute(e.address, e.data).ok()) return false;
  e.routed = true;
  return true;
}

void Msix::DeliverPendingLocked() {
  for (Entry& e : entries_) {
    if (!DeliverableLocked(e)) continue;
    // Route as soon as the vector can fire, so Notify rarely has to.
    if (!RouteLocked(e)) continue;
    if (e.pending) {
      e.pending = false;
      e.vector->Fire();
    }
  }
}

void Msix::Notify(uint16_t vector) {
  absl::MutexLock l(&mu_);
  if (vector >= entries_.size()) return;
  Entry& e = entries_[vector];
  if (!DeliverableLocked(e)) {
    e.pending = true;
    return;
  }
  if (RouteLocked(e)) e.vector->Fire();
}

void Msix::ConfigWritten(const PciConfigSpace& config) {
  const uint16_t control = config.ReadWord(static_cast<uint16_t>(cap_offset_ + kMessageControl));
  absl::MutexLock l(&mu_);
  enabled_ = (control & kControlEnable) != 0;
  function_masked_ = (control & kControlFunctionMask) != 0;
  DeliverPendingLocked();
}

uint32_t Msix::ReadFieldLocked(const Entry& e, uint64_t field) const {
  switch (field) {
    case kAddressLo: return static_cast<uint32_t>(e.address);
    case kAddressHi: return static_cast<uint32_t>(e.address >> 32);
    case kData: return e.data;
    default: return e.control;
  }
}

void Msix::WriteFieldLocked(Entry& e, uint64_t field, uint32_t v) {
  switch (field) {
    case kAddressLo:
      e.address = (e.address & ~0xffffffffull) | v;
      e.routed = false;
      break;
    case kAddressHi:
      e.address = (e.address & 0xffffffffull) | (static_cast<uint64_t>(v) << 32);
      e.routed = false;
      break;
    case kData:
      e.data = v;
      e.routed = false;
      break;
    default: {
      const bool was_deliverable = DeliverableLocked(e);
      e.control = v & kVectorMasked;
      if (!was_deliverable && DeliverableLocked(e) && RouteLocked(e) && e.pending) {
        e.pending = false;
        e.vector->Fire();
      }
      break;
    }
  }
}

void Msix::TableRead(uint64_t offset, std::span<uint8_t> data) {
  std::fill(data.begin(), data.end(), 0);
  absl::MutexLock l(&mu_);
  if (!ValidAccess(offset, data.size(), table_size())) return;
  // An 8-byte access covers two dwords of the same entry (address pair, or
  // data and vector control).
  for (size_t done = 0; done < data.size(); done += 4) {
    const uint64_t at = offset + done;
    StoreLe(data, done, 4, ReadFieldLocked(entries_[at / kEntrySize], at % kEntrySize));
  }
}

void Msix::TableWrite(uint64_t offset, std::span<const uint8_t> data) {
  absl::MutexLock l(&mu_);
  if (!ValidAccess(offset, data.size(), table_size())) return;
  for (size_t done = 0; done < data.size(); done += 4) {
    const uint64_t at = offset + done;
    WriteFieldLocked(entries_[at / kEntrySize], at % kEntrySize, LoadLe(data, done, 4));
  }
}

void Msix::PbaRead(uint64_t offset, std::span<uint8_t> data) {
  std::fill(data.begin(), data.end(), 0);
  absl::MutexLock l(&mu_);
  if (!ValidAccess(offset, data.size(), pba_size())) return;
  for (size_t byte = 0; byte < data.size(); ++byte) {
    const uint64_t first = (offset + byte) * 8;
    uint8_t bits = 0;
    for (uint64_t i = 0; i < 8 && first + i < entries_.size(); ++i) {
      if (entries_[first + i].pending) bits = static_cast<uint8_t>(bits | (1u << i));
    }
    data[byte] = bits;
  }
}

}  // namespace flint::pci
