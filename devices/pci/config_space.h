// A PCI function's type-0 configuration space (PCI Local Bus 3.0 §6): 4 KiB
// (ECAM reach), of which the first 256 bytes are conventional config space.
// Holds the IDs, command/status, the six BARs with their sizing semantics,
// the capability list and per-byte write masks, so guest writes can only
// change what real hardware would let them change.
//
// Not thread-safe: PciRoot serialises access.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <optional>
#include <span>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace flint::pci {

inline constexpr uint16_t kConfigSpaceSize = 4096;
inline constexpr int kNumBars = 6;

// Register offsets and bits used outside this file.
inline constexpr uint16_t kCommand = 0x04;
inline constexpr uint16_t kCommandIo = 1 << 0;
inline constexpr uint16_t kCommandMemory = 1 << 1;
inline constexpr uint16_t kCommandBusMaster = 1 << 2;
inline constexpr uint16_t kCommandIntxDisable = 1 << 10;
inline constexpr uint16_t kStatus = 0x06;
inline constexpr uint16_t kStatusIntx = 1 << 3;
inline constexpr uint16_t kStatusCapList = 1 << 4;
inline constexpr uint16_t kBar0 = 0x10;
inline constexpr uint16_t kCapPtr = 0x34;
inline constexpr uint16_t kInterruptLine = 0x3c;
inline constexpr uint16_t kInterruptPin = 0x3d;

inline constexpr uint8_t kCapIdVendor = 0x09;
inline constexpr uint8_t kCapIdMsix = 0x11;

struct PciIds {
  uint16_t vendor = 0;
  uint16_t device = 0;
  uint16_t subsystem_vendor = 0;
  uint16_t subsystem = 0;
  uint8_t revision = 0;
  uint32_t class_code = 0;  // 24 bits: base class << 16 | subclass << 8 | prog-if
  uint8_t header_type = 0;  // 0: endpoint (bit 7, multi-function, is not used)
};

enum class BarKind { kMem32, kMem64 };

class PciConfigSpace {
 public:
  explicit PciConfigSpace(const PciIds& ids);

  // Declares memory BAR `index` (a 64-bit BAR also takes index + 1). `size`
  // is a power of two, at least 4 KiB (so BARs never share a page with
  // another device). Fails on a bad index, size or overlap with a declared
  // BAR. Declare every BAR before the device is added to the bus.
  absl::Status DeclareBar(int index, uint64_t size, BarKind kind, bool prefetchable = false);
  // Appends a capability: `body` is everything after the ID and next-pointer
  // bytes; `writable` (same length as body, or empty for read-only) masks
  // which body bits the guest may change. Returns the capability's offset
  // (dword aligned, in the first 256 bytes), or an error when it does not fit.
  absl::StatusOr<uint16_t> AddCapability(uint8_t id, std::span<const uint8_t> body,
                                          std::span<const uint8_t> writable = {});
  // 1 = INTA# .. 4 = INTD#; 0 = no legacy interrupt. The line register is
  // filled in by PciRoot (the GSI), and stays guest-writable as on hardware.
  void SetInterruptPin(uint8_t pin);

  // Guest-visible accesses (data.size() 1, 2 or 4, naturally aligned; others
  // read as all ones and are ignored on write). BAR registers answer sizing
  // probes (all-ones write) with the size mask. Write returns false when it
  // ignored the access.
  void Read(uint16_t offset, std::span<uint8_t> data) const;
  bool Write(uint16_t offset, std::span<const uint8_t> data);

  // Device-side access to its own capability fields (no masks applied).
  // Offsets past config space read 0 and are not written.
  uint8_t ReadByte(uint16_t offset) const {
    return offset < kConfigSpaceSize ? bytes_[offset] : 0;
  }
  uint16_t ReadWord(uint16_t offset) const;
  uint32_t ReadDword(uint16_t offset) const;
  void SetByte(uint16_t offset, uint8_t v) {
    if (offset < kConfigSpaceSize) bytes_[offset] = v;
  }
  void SetWord(uint16_t offset, uint16_t v);

  // BAR state.
  bool BarDeclared(int index) const;
  uint64_t BarSize(int index) const;
  BarKind BarKindOf(int index) const;
  // The address programmed in the BAR (low bits masked), 0 if none.
  uint64_t BarAddress(int index) const;
  // Used by PciRoot's allocator (firmware's job on real hardware).
  void SetBarAddress(int index, uint64_t gpa);

  uint16_t command() const { return ReadWord(kCommand); }
  bool memory_enabled() const { return command() & kCommandMemory; }
  bool bus_master() const { return command() & kCommandBusMaster; }
  uint8_t interrupt_pin() const { return bytes_[kInterruptPin]; }
  // Sets or clears the Interrupt Status bit (read-only to the guest). Unlike
  // everything else here, safe to call from any thread: the bit is kept
  // apart and merged into guest reads of the status register.
  void SetIntxStatus(bool asserted);

 private:
  struct Bar {
    uint64_t size = 0;  // 0: not declared (or upper half of a 64-bit BAR)
    BarKind kind = BarKind::kMem32;
    bool prefetchable = false;
  };

  static constexpr uint16_t BarOffset(int index) {
    return static_cast<uint16_t>(kBar0 + 4 * index);
  }
  // Sets a dword and its write mask (device side, at declaration time).
  void SetDwordMasked(uint16_t offset, uint32_t value, uint32_t writable);
  // Register `index` is the upper dword of a declared 64-bit BAR.
  bool UpperHalfOf64(int index) const;
  // Every byte of BAR register `reg` was last written by the guest as 0xff.
  bool DwordProbed(int reg) const;

  std::array<uint8_t, kConfigSpaceSize> bytes_{};
  std::array<uint8_t, kConfigSpaceSize> writable_{};  // per-byte guest write mask
  std::array<Bar, kNumBars> bars_{};
  std::atomic<bool> intx_status_{false};
  uint16_t next_cap_ = 0x40;     // where the next capability goes
  uint16_t last_cap_ = 0;        // offset of the last capability (0: none)
  uint32_t probed_ = 0;          // bit i: BAR byte kBar0 + i last written as 0xff (sizing)
};

}  // namespace flint::pci
