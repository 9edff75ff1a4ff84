// The small files the shim keeps beside its VMs (records, configurations,
// device lists, pid lists) and reads back (flint's stop file, /proc, /sys):
// one reader and one atomic writer for all of them.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/statusor.h"

namespace flint::shim {

// The whole file, or its first `max_bytes`. NOT_FOUND when it does not
// exist; other failures name the path and errno.
absl::StatusOr<std::string> ReadFile(const std::string& path, size_t max_bytes = SIZE_MAX);

// Replaces `path` with `contents` in one step (write PATH.tmp, rename), so a
// reader sees the old file or the new one, never a part. `durable` also
// fsyncs the file and its directory, for what must survive a host crash.
// A failed write leaves `path` as it was and removes PATH.tmp.
absl::Status WriteFileAtomic(const std::string& path, const std::string& contents,
                             mode_t mode = 0644, bool durable = false);

}  // namespace flint::shim
