// What both engines share: one op's progress through the syscalls it needs
// (continuing short transfers, falling back between fallocate modes), and a
// fixed table of such ops. The engines differ only in how they run a step:
// an io_uring SQE, or a syscall on a pool thread.
#pragma once

#include <sys/uio.h>

#include <atomic>
#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "block/engine.h"

namespace flint::block::internal {

// fallocate modes the file turned out not to support (EOPNOTSUPP), so later
// write-zeroes ops skip straight to what works. Shared by pool threads.
struct FileCaps {
  std::atomic<bool> no_punch_hole{false};
  std::atomic<bool> no_zero_range{false};
};

// One syscall.
struct Step {
  enum Kind : uint8_t { kReadv, kWritev, kFdatasync, kFallocate };
  Kind kind = kReadv;
  const iovec* iov = nullptr;
  int iovcnt = 0;
  uint64_t offset = 0;
  uint64_t length = 0;  // kFallocate
  int mode = 0;         // kFallocate
};

class Request {
 public:
  void Start(const Op& op);
  // The syscall the op needs next.
  Step Next(const FileCaps& caps);
  // Applies that syscall's result (bytes or -errno). Returns true when the op
  // is finished and result() is final; false when Next() must run again.
  bool Finish(int64_t res, FileCaps& caps);

  uint64_t tag() const { return tag_; }
  int64_t result() const { return result_; }

 private:
  enum class ZeroStage : uint8_t { kPunchHole, kZeroRange, kWriteZeroes };
  void Advance(uint64_t n);

  OpType type_ = OpType::kRead;
  ZeroStage stage_ = ZeroStage::kZeroRange;
  uint64_t tag_ = 0;
  uint64_t offset_ = 0;     // file offset of the next byte
  uint64_t remaining_ = 0;  // bytes still to transfer / zero
  uint64_t done_ = 0;       // bytes transferred so far
  int64_t result_ = 0;
  std::vector<iovec> iov_;  // keeps its capacity between ops
  size_t first_ = 0;        // first iovec not yet fully transferred
};

// `capacity` requests and a free list; no allocation after the first use of
// each slot.
class RequestTable {
 public:
  explicit RequestTable(uint32_t capacity);
  // Copies `op` into a free slot and returns its index.
  absl::StatusOr<uint32_t> Acquire(const Op& op);
  void Release(uint32_t index);
  Request& at(uint32_t index) { return slots_[index]; }
  uint32_t in_use() const { return static_cast<uint32_t>(slots_.size() - free_.size()); }
  uint32_t capacity() const { return static_cast<uint32_t>(slots_.size()); }

 private:
  std::vector<Request> slots_;
  std::vector<uint32_t> free_;
};

}  // namespace flint::block::internal
