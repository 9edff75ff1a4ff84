// Reading kernel and initrd images from the host file system.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace flint {

// Reads the whole file at `path`. Fails, naming the path and the errno text,
// when it cannot be opened or read, and when it is larger than max_bytes.
absl::StatusOr<std::vector<uint8_t>> ReadWholeFile(const std::string& path, uint64_t max_bytes);

}  // namespace flint
