// Minimal MC146818 CMOS/RTC at ports 0x70 (index) and 0x71 (data): the
// wall-clock time from the host (UTC), status registers A-D, and 128 bytes
// of NVRAM. No alarms or periodic interrupts.
#pragma once

#include <array>
#include <cstdint>
#include <ctime>
#include <functional>

#include "absl/synchronization/mutex.h"
#include "vmm/bus.h"

namespace flint {

class Cmos : public BusDevice {
 public:
  using Clock = std::function<std::time_t()>;
  explicit Cmos(Clock clock = [] { return std::time(nullptr); });
  std::string_view name() const override { return "cmos"; }
  void Read(uint64_t offset, std::span<uint8_t> data) override;
  void Write(uint64_t offset, std::span<const uint8_t> data) override;

 private:
  uint8_t ReadRegister(uint8_t index) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  uint8_t Encode(int value) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  Clock clock_;
  absl::Mutex mu_;
  uint8_t index_ ABSL_GUARDED_BY(mu_) = 0;
  std::array<uint8_t, 128> nvram_ ABSL_GUARDED_BY(mu_){};
};

}  // namespace flint
