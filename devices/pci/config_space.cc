#include "devices/pci/config_space.h"

#include <algorithm>

#include "absl/strings/str_format.h"

namespace flint::pci {
namespace {

// Header fields (PCI 3.0 §6.1) that only this file needs.
constexpr uint16_t kVendorId = 0x00;
constexpr uint16_t kDeviceId = 0x02;
constexpr uint16_t kRevisionId = 0x08;
constexpr uint16_t kClassCode = 0x09;  // 3 bytes: prog-if, subclass, base class
constexpr uint16_t kHeaderType = 0x0e;
constexpr uint16_t kBarEnd = kBar0 + 4 * kNumBars;
constexpr uint16_t kSubsystemVendorId = 0x2c;
constexpr uint16_t kSubsystemId = 0x2e;
constexpr uint16_t kConventionalSize = 256;  // capabilities live here

// BAR low bits (§6.2.5.1): bit 0 = 0 (memory), bits 2:1 type, bit 3 prefetchable.
constexpr uint32_t kBarType64 = 0b10 << 1;
constexpr uint32_t kBarPrefetchable = 1 << 3;
constexpr uint32_t kBarFlagBits = 0xf;

// The guest may set: I/O space, memory space, bus master, INTx disable. The
// rest (special cycles, parity/SERR response, fast back-to-back...) are
// hardwired to 0, which the spec allows for functions that lack them.
constexpr uint16_t kCommandWritable =
    kCommandIo | kCommandMemory | kCommandBusMaster | kCommandIntxDisable;

constexpr uint64_t kMinBarSize = 4096;

bool ValidAccess(uint16_t offset, size_t size) {
  if (size != 1 && size != 2 && size != 4) return false;
  if (offset % size != 0) return false;
  return static_cast<size_t>(offset) + size <= kConfigSpaceSize;
}

}  // namespace

PciConfigSpace::PciConfigSpace(const PciIds& ids) {
  SetWord(kVendorId, ids.vendor);
  SetWord(kDeviceId, ids.device);
  bytes_[kRevisionId] = ids.revision;
  bytes_[kClassCode] = static_cast<uint8_t>(ids.class_code);
  bytes_[kClassCode + 1] = static_cast<uint8_t>(ids.class_code >> 8);
  bytes_[kClassCode + 2] = static_cast<uint8_t>(ids.class_code >> 16);
  bytes_[kHeaderType] = ids.header_type & 0x7f;  // single-function
  SetWord(kSubsystemVendorId, ids.subsystem_vendor);
  SetWord(kSubsystemId, ids.subsystem);

  writable_[kCommand] = static_cast<uint8_t>(kCommandWritable);
  writable_[kCommand + 1] = static_cast<uint8_t>(kCommandWritable >> 8);
  // The line register is scratch space for the OS (it records the routing it
  // chose); the pin and everything else in the header stay read-only. The
  // expansion ROM BAR (0x30) has no writable bits, so it reads 0: no ROM.
  writable_[kInterruptLine] = 0xff;
}

uint16_t PciConfigSpace::ReadWord(uint16_t offset) const {
  if (static_cast<size_t>(offset) + 2 > kConfigSpaceSize) return 0;
  return static_cast<uint16_t>(bytes_[offset] | (bytes_[offset + 1] << 8));
}

uint32_t PciConfigSpace::ReadDword(uint16_t offset) const {
  if (static_cast<size_t>(offset) + 4 > kConfigSpaceSize) return 0;
  uint32_t v = 0;
  for (int i = 3; i >= 0; --i) v = (v << 8) | bytes_[offset + i];
  return v;
}

void PciConfigSpace::SetWord(uint16_t offset, uint16_t v) {
  if (static_cast<size_t>(offset) + 2 > kConfigSpaceSize) return;
  bytes_[offset] = static_cast<uint8_t>(v);
  bytes_[offset + 1] = static_cast<uint8_t>(v >> 8);
}

void PciConfigSpace::SetDwordMasked(uint16_t offset, uint32_t value, uint32_t writable) {
  for (int i = 0; i < 4; ++i) {
    bytes_[offset + i] = static_cast<uint8_t>(value >> (8 * i));
    writable_[offset + i] = static_cast<uint8_t>(writable >> (8 * i));
  }
}

absl::Status PciConfigSpace::DeclareBar(int index, uint64_t size, BarKind kind,
                                        bool prefetchable) {
  const int slots = kind == BarKind::kMem64 ? 2 : 1;
  if (index < 0 || index + slots > kNumBars) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "BAR %d does not exist (a %s BAR takes indexes 0..%d)", index,
        kind == BarKind::kMem64 ? "64-bit" : "32-bit", kNumBars - slots));
  }
  if (size < kMinBarSize || (size & (size - 1)) != 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "BAR %d size %#x must be a power of two of at least 4 KiB", index, size));
  }
  if (kind == BarKind::kMem32 && size > (1ull << 31)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("32-bit BAR %d size %#x exceeds 2 GiB", index, size));
  }
  for (int i = index; i < index + slots; ++i) {
    if (BarDeclared(i) || UpperHalfOf64(i)) {
      return absl::AlreadyExistsError(
          absl::StrFormat("BAR %d overlaps BAR register %d, already declared", index, i));
    }
  }
  bars_[index] = Bar{.size = size, .kind = kind, .prefetchable = prefetchable};
  // Sizing semantics fall out of the write mask: the address bits below the
  // size are hardwired to 0, so an all-ones write reads back ~(size - 1).
  const uint64_t address_mask = ~(size - 1);
  uint32_t flags = prefetchable ? kBarPrefetchable : 0;
  if (kind == BarKind::kMem64) flags |= kBarType64;
  SetDwordMasked(BarOffset(index), flags,
                 static_cast<uint32_t>(address_mask) & ~kBarFlagBits);
  if (kind == BarKind::kMem64) {
    SetDwordMasked(BarOffset(index + 1), 0, static_cast<uint32_t>(address_mask >> 32));
  }
  return absl::OkStatus();
}

absl::StatusOr<uint16_t> PciConfigSpace::AddCapability(uint8_t id,
                                                        std::span<const uint8_t> body,
                                                        std::span<const uint8_t> writable) {
  if (!writable.empty() && writable.size() != body.size()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "capability %#x: write mask of %u bytes for a body of %u", id, writable.size(),
        body.size()));
  }
  const size_t offset = next_cap_;
  const size_t len = 2 + body.size();
  if (offset + len > kConventionalSize) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "capability %#x (%u bytes) does not fit in config space at %#x", id, len, offset));
  }
  bytes_[offset] = id;
  bytes_[offset + 1] = 0;  // end of list, until another capability follows
  std::copy(body.begin(), body.end(), bytes_.begin() + static_cast<ptrdiff_t>(offset + 2));
  if (!writable.empty()) {
    std::copy(writable.begin(), writable.end(),
              writable_.begin() + static_cast<ptrdiff_t>(offset + 2));
  }
  if (last_cap_ == 0) {
    bytes_[kCapPtr] = static_cast<uint8_t>(offset);
    SetWord(kStatus, ReadWord(kStatus) | kStatusCapList);
  } else {
    bytes_[last_cap_ + 1] = static_cast<uint8_t>(offset);
  }
  last_cap_ = static_cast<uint16_t>(offset);
  next_cap_ = static_cast<uint16_t>((offset + len + 3) & ~size_t{3});
  return static_cast<uint16_t>(offset);
}

void PciConfigSpace::SetInterruptPin(uint8_t pin) {
  if (pin > 4) return;  // only INTA#..INTD# exist
  bytes_[kInterruptPin] = pin;
}

void PciConfigSpace::Read(uint16_t offset, std::span<uint8_t> data) const {
  if (!ValidAccess(offset, data.size())) {
    std::fill(data.begin(), data.end(), 0xff);
    return;
  }
  std::copy_n(bytes_.begin() + offset, data.size(), data.begin());
  // The Interrupt Status bit lives outside bytes_: devices set it from their
  // event-loop thread, outside PciRoot's lock.
  if (offset <= kStatus && kStatus < offset + data.size() &&
      intx_status_.load(std::memory_order_relaxed)) {
    data[kStatus - offset] |= static_cast<uint8_t>(kStatusIntx);
  }
}

bool PciConfigSpace::Write(uint16_t offset, std::span<const uint8_t> data) {
  if (!ValidAccess(offset, data.size())) return false;
  for (size_t i = 0; i < data.size(); ++i) {
    const size_t at = offset + i;
    bytes_[at] = static_cast<uint8_t>((bytes_[at] & ~writable_[at]) | (data[i] & writable_[at]));
    if (at >= kBar0 && at < kBarEnd) {
      // Remember which BAR bytes hold a sizing probe; see BarAddress.
      const uint32_t bit = 1u << (at - kBar0);
      probed_ = data[i] == 0xff ? (probed_ | bit) : (probed_ & ~bit);
    }
  }
  return true;
}

bool PciConfigSpace::BarDeclared(int index) const {
  return index >= 0 && index < kNumBars && bars_[index].size != 0;
}

bool PciConfigSpace::UpperHalfOf64(int index) const {
  return index > 0 && index < kNumBars && BarDeclared(index - 1) &&
         bars_[index - 1].kind == BarKind::kMem64;
}

uint64_t PciConfigSpace::BarSize(int index) const {
  return BarDeclared(index) ? bars_[index].size : 0;
}

BarKind PciConfigSpace::BarKindOf(int index) const {
  return BarDeclared(index) ? bars_[index].kind : BarKind::kMem32;
}

bool PciConfigSpace::DwordProbed(int reg) const {
  const uint32_t mask = 0xfu << (4 * reg);
  return (probed_ & mask) == mask;
}

uint64_t PciConfigSpace::BarAddress(int index) const {
  if (!BarDeclared(index)) return 0;
  const bool wide = bars_[index].kind == BarKind::kMem64;
  // A register whose every byte the guest last wrote as 0xff holds a sizing
  // probe, not an address: the BAR decodes nowhere until it is reprogrammed.
  if (DwordProbed(index) || (wide && DwordProbed(index + 1))) return 0;
  uint64_t address = ReadDword(BarOffset(index)) & ~kBarFlagBits;
  if (wide) address |= static_cast<uint64_t>(ReadDword(BarOffset(index + 1))) << 32;
  return address;
}

void PciConfigSpace::SetBarAddress(int index, uint64_t gpa) {
  if (!BarDeclared(index)) return;
  const uint64_t address = gpa & ~(bars_[index].size - 1);
  const uint16_t low = BarOffset(index);
  const uint32_t flags = ReadDword(low) & kBarFlagBits;
  const uint32_t low_value = (static_cast<uint32_t>(address) & ~kBarFlagBits) | flags;
  for (int i = 0; i < 4; ++i) bytes_[low + i] = static_cast<uint8_t>(low_value >> (8 * i));
  probed_ &= ~(0xfu << (4 * index));
  if (bars_[index].kind == BarKind::kMem64) {
    const uint16_t high = BarOffset(index + 1);
    for (int i = 0; i < 4; ++i) bytes_[high + i] = static_cast<uint8_t>(address >> (32 + 8 * i));
    probed_ &= ~(0xfu << (4 * (index + 1)));
  }
}

void PciConfigSpace::SetIntxStatus(bool asserted) {
  intx_status_.store(asserted, std::memory_order_relaxed);
}

}  // namespace flint::pci
