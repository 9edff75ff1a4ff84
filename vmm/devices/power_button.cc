#include "vmm/devices/power_button.h"

#include <algorithm>

#include "vmm/layout.h"

namespace flint {

void PowerButton::Read(uint64_t offset, std::span<uint8_t> data) {
  std::fill(data.begin(), data.end(), 0);
  // Only byte 0 holds anything; a read that does not cover it clears nothing.
  if (offset != 0 || data.empty()) return;
  absl::MutexLock l(&mu_);
  data[0] = pending_;
  if (pending_ != 0) {
    pending_ = 0;
    irq_->Set(false);
  }
}

void PowerButton::Press() {
  absl::MutexLock l(&mu_);
  // The line follows pending_ under the lock, so a read racing a press can
  // never leave the line down with an event pending (or up with none).
  if (pending_ == 0) irq_->Set(true);
  pending_ |= layout::kGedEventPowerButton;
}

uint8_t PowerButton::pending() {
  absl::MutexLock l(&mu_);
  return pending_;
}

}  // namespace flint
