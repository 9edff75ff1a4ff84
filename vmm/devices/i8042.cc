#include "vmm/devices/i8042.h"

#include <algorithm>

namespace flint {
namespace {
constexpr uint64_t kCommandOffset = 4;  // port 0x64
constexpr uint8_t kCmdPulseReset = 0xfe;
}  // namespace

void I8042::Read(uint64_t, std::span<uint8_t> data) {
  // Status 0: output buffer empty, input buffer empty (ready for commands).
  std::fill(data.begin(), data.end(), 0);
}

void I8042::Write(uint64_t offset, std::span<const uint8_t> data) {
  if (offset == kCommandOffset && data[0] == kCmdPulseReset) {
    stop_(StopReason{StopKind::kReset, kExitOk, "guest pulsed the i8042 reset line"});
  }
}

}  // namespace flint
