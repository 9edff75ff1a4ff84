#include "vmm/devices/cmos.h"

#include <algorithm>

namespace flint {
namespace {
constexpr uint8_t kRegSeconds = 0x00, kRegMinutes = 0x02, kRegHours = 0x04, kRegWeekday = 0x06,
                  kRegDay = 0x07, kRegMonth = 0x08, kRegYear = 0x09, kRegStatusA = 0x0a,
                  kRegStatusB = 0x0b, kRegStatusC = 0x0c, kRegStatusD = 0x0d,
                  kRegCentury = 0x32;
constexpr uint8_t kStatusBBinary = 0x04;
constexpr uint8_t kStatusB24h = 0x02;
constexpr uint8_t kStatusDValidRam = 0x80;
}  // namespace

Cmos::Cmos(Clock clock) : clock_(std::move(clock)) {
  nvram_[kRegStatusA] = 0x26;               // 32.768 kHz base, 1024 Hz rate; UIP clear
  nvram_[kRegStatusB] = kStatusB24h;        // BCD, 24-hour
  nvram_[kRegStatusD] = kStatusDValidRam;
}

uint8_t Cmos::Encode(int value) const {
  if (nvram_[kRegStatusB] & kStatusBBinary) return static_cast<uint8_t>(value);
  return static_cast<uint8_t>(((value / 10) << 4) | (value % 10));
}

uint8_t Cmos::ReadRegister(uint8_t index) {
  std::time_t now = clock_();
  std::tm tm{};
  gmtime_r(&now, &tm);
  switch (index) {
    case kRegSeconds:
      return Encode(tm.tm_sec);
    case kRegMinutes:
      return Encode(tm.tm_min);
    case kRegHours:
      if (nvram_[kRegStatusB] & kStatusB24h) return Encode(tm.tm_hour);
      // 12-hour mode: 1..12 with bit 7 set for PM.
      return static_cast<uint8_t>(Encode(tm.tm_hour % 12 == 0 ? 12 : tm.tm_hour % 12) |
                                  (tm.tm_hour >= 12 ? 0x80 : 0));
    case kRegWeekday:
      return Encode(tm.tm_wday + 1);
    case kRegDay:
      return Encode(tm.tm_mday);
    case kRegMonth:
      return Encode(tm.tm_mon + 1);
    case kRegYear:
      return Encode((tm.tm_year + 1900) % 100);
    case kRegCentury:
      return Encode((tm.tm_year + 1900) / 100);
    case kRegStatusC:
      return 0;  // no interrupt flags
    default:
      return nvram_[index];
  }
}

void Cmos::Read(uint64_t offset, std::span<uint8_t> data) {
  absl::MutexLock l(&mu_);
  std::fill(data.begin(), data.end(), 0xff);
  if (offset == 1) data[0] = ReadRegister(index_);
  else data[0] = index_;
}

void Cmos::Write(uint64_t offset, std::span<const uint8_t> data) {
  absl::MutexLock l(&mu_);
  if (offset == 0) {
    index_ = data[0] & 0x7f;  // bit 7 is the NMI mask
    return;
  }
  switch (index_) {
    case kRegStatusA:
      nvram_[index_] = data[0] & 0x7f;  // UIP is read-only
      return;
    case kRegStatusC:
    case kRegStatusD:
      return;  // read-only
    default:
      nvram_[index_] = data[0];
  }
}

}  // namespace flint
