#include "vmm/devices/debug_exit.h"

#include <algorithm>

#include "absl/strings/str_format.h"

namespace flint {

void DebugExit::Read(uint64_t, std::span<uint8_t> data) { std::fill(data.begin(), data.end(), 0xff); }

void DebugExit::Write(uint64_t, std::span<const uint8_t> data) {
  uint64_t v = 0;
  for (size_t i = 0; i < data.size(); ++i) v |= static_cast<uint64_t>(data[i]) << (8 * i);
  int status = static_cast<int>(((v << 1) | 1) & 0xff);
  stop_(StopReason{StopKind::kDebugExit, status,
                   absl::StrFormat("guest wrote 0x%x to the debug-exit port", v)});
}

}  // namespace flint
