// MSI-X (PCI Local Bus 3.0 §6.8.2): the capability in config space, the
// vector table and the pending-bit array in a memory BAR, per-vector and
// function masking, and one MsiVector (KVM GSI route + irqfd) per entry.
//
// Threading: table/PBA/config accesses come from vCPU threads, Notify() from
// the device's event loop; an internal lock orders them. A vector that is
// masked (or the whole function, or MSI-X disabled) when notified gets its
// pending bit set instead, and fires when unmasked.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "devices/pci/config_space.h"
#include "vmm/device_host.h"

namespace flint::pci {

class Msix {
 public:
  static constexpr uint32_t kEntrySize = 16;

  // Adds the capability to `config`: `num_vectors` (1..2048) entries, the
  // table at `table_offset` and the PBA at `pba_offset` inside memory BAR
  // `bar` (both 8-byte aligned; the caller keeps them inside the BAR and
  // apart from its other registers). Allocates one MsiVector per entry.
  static absl::StatusOr<std::unique_ptr<Msix>> Create(PciConfigSpace& config, DeviceHost& host,
                                                      uint16_t num_vectors, int bar,
                                                      uint32_t table_offset, uint32_t pba_offset);

  uint16_t num_vectors() const { return static_cast<uint16_t>(entries_.size()); }
  uint32_t table_size() const { return num_vectors() * kEntrySize; }
  uint32_t pba_size() const { return ((num_vectors() + 63) / 64) * 8; }
  uint32_t table_offset() const { return table_offset_; }
  uint32_t pba_offset() const { return pba_offset_; }

  // Guest accesses; offsets relative to the table / PBA start. 4- and 8-byte
  // aligned accesses are honoured, others read as zero / are dropped. The
  // PBA is read-only.
  void TableRead(uint64_t offset, std::span<uint8_t> data);
  void TableWrite(uint64_t offset, std::span<const uint8_t> data);
  void PbaRead(uint64_t offset, std::span<uint8_t> data);

  // Call after any guest write to config space that may have touched the
  // capability's Message Control word (enable, function mask).
  void ConfigWritten(const PciConfigSpace& config);

  bool enabled() const;
  // Signals `vector` (any thread). Out-of-range vectors (0xffff is virtio's
  // NO_VECTOR) are ignored.
  void Notify(uint16_t vector);

 private:
  struct Entry {
    uint64_t address = 0;
    uint32_t data = 0;
    uint32_t control = 1;  // bit 0: masked
    bool pending = false;
    bool routed = false;  // the vector's route matches address/data
    std::unique_ptr<MsiVector> vector;
  };

  Msix(uint16_t cap_offset, uint32_t table_offset, uint32_t pba_offset)
      : cap_offset_(cap_offset), table_offset_(table_offset), pba_offset_(pba_offset) {}
  // Fires pending vectors that are now deliverable.
  void DeliverPendingLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool DeliverableLocked(const Entry& e) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Hands the entry's message to its vector unless already done; false when
  // the host refused the route.
  bool RouteLocked(Entry& e) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // One dword of an entry; `field` is 0, 4, 8 or 12.
  uint32_t ReadFieldLocked(const Entry& e, uint64_t field) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void WriteFieldLocked(Entry& e, uint64_t field, uint32_t v) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const uint16_t cap_offset_;
  const uint32_t table_offset_;
  const uint32_t pba_offset_;
  mutable absl::Mutex mu_;
  std::vector<Entry> entries_ ABSL_GUARDED_BY(mu_);
  bool enabled_ ABSL_GUARDED_BY(mu_) = false;
  bool function_masked_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace flint::pci
