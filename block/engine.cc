// The engine factory, and the op logic both engines share (block/request.h).
#include "block/engine.h"

#include <fcntl.h>
#include <limits.h>
#include <linux/falloc.h>

#include <algorithm>
#include <cerrno>
#include <utility>

#include "absl/strings/str_format.h"
#include "block/request.h"
#include "block/thread_engine.h"
#include "block/uring_engine.h"

namespace flint::block {
namespace internal {
namespace {

// Source of the writes that zero a range when fallocate cannot. In .bss:
// never written, so it costs no memory beyond the shared zero page. Aligned
// for O_DIRECT.
constexpr uint64_t kZeroChunk = 256 << 10;
alignas(4096) uint8_t zero_chunk[kZeroChunk];

bool Retry(int64_t res) { return res == -EAGAIN || res == -EINTR; }

}  // namespace

void Request::Start(const Op& op) {
  type_ = op.type;
  tag_ = op.tag;
  offset_ = op.offset;
  done_ = 0;
  result_ = 0;
  first_ = 0;
  iov_.assign(op.iov.begin(), op.iov.end());
  switch (op.type) {
    case OpType::kRead:
    case OpType::kWrite:
      remaining_ = 0;
      for (const iovec& v : iov_) remaining_ += v.iov_len;
      break;
    case OpType::kFlush:
      remaining_ = 0;
      break;
    case OpType::kDiscard:
    case OpType::kWriteZeroes:
      remaining_ = op.length;
      break;
  }
  stage_ = op.unmap ? ZeroStage::kPunchHole : ZeroStage::kZeroRange;
}

Step Request::Next(const FileCaps& caps) {
  Step s;
  s.offset = offset_;
  switch (type_) {
    case OpType::kRead:
    case OpType::kWrite:
      s.kind = type_ == OpType::kRead ? Step::kReadv : Step::kWritev;
      s.iov = iov_.data() + first_;
      // preadv takes at most IOV_MAX buffers; the rest is a continuation.
      s.iovcnt = static_cast<int>(std::min<size_t>(iov_.size() - first_, IOV_MAX));
      break;
    case OpType::kFlush:
      s.kind = Step::kFdatasync;
      break;
    case OpType::kDiscard:
      s.kind = Step::kFallocate;
      s.mode = FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE;
      s.length = remaining_;
      break;
    case OpType::kWriteZeroes:
      if (stage_ == ZeroStage::kPunchHole && caps.no_punch_hole.load(std::memory_order_relaxed)) {
        stage_ = ZeroStage::kZeroRange;
      }
      if (stage_ == ZeroStage::kZeroRange && caps.no_zero_range.load(std::memory_order_relaxed)) {
        stage_ = ZeroStage::kWriteZeroes;
      }
      if (stage_ == ZeroStage::kWriteZeroes) {
        iov_.assign(1, iovec{zero_chunk, std::min(remaining_, kZeroChunk)});
        s.kind = Step::kWritev;
        s.iov = iov_.data();
        s.iovcnt = 1;
      } else {
        s.kind = Step::kFallocate;
        s.mode = FALLOC_FL_KEEP_SIZE |
                 (stage_ == ZeroStage::kPunchHole ? FALLOC_FL_PUNCH_HOLE : FALLOC_FL_ZERO_RANGE);
        s.length = remaining_;
      }
      break;
  }
  return s;
}

void Request::Advance(uint64_t n) {
  done_ += n;
  remaining_ -= std::min(n, remaining_);
  offset_ += n;
  while (n > 0 && first_ < iov_.size()) {
    iovec& v = iov_[first_];
    if (n >= v.iov_len) {
      n -= v.iov_len;
      ++first_;
    } else {
      v.iov_base = static_cast<uint8_t*>(v.iov_base) + n;
      v.iov_len -= n;
      n = 0;
    }
  }
}

bool Request::Finish(int64_t res, FileCaps& caps) {
  if (Retry(res)) return false;
  switch (type_) {
    case OpType::kRead:
    case OpType::kWrite:
      if (res < 0) {
        result_ = res;
        return true;
      }
      Advance(static_cast<uint64_t>(res));
      if (remaining_ == 0) {
        result_ = static_cast<int64_t>(done_);
        return true;
      }
      if (res == 0) {
        // A read stops at end-of-file with what it got; a write that makes
        // no progress would loop forever.
        result_ = type_ == OpType::kRead ? static_cast<int64_t>(done_) : -EIO;
        return true;
      }
      return false;
    case OpType::kFlush:
      result_ = res < 0 ? res : 0;
      return true;
    case OpType::kDiscard:
      // Discard is a hint (virtio 1.2 §5.2.6: the device MAY deallocate).
      result_ = res < 0 && res != -EOPNOTSUPP ? res : 0;
      return true;
    case OpType::kWriteZeroes:
      if (stage_ == ZeroStage::kWriteZeroes) {
        if (res < 0) {
          result_ = res;
          return true;
        }
        if (res == 0) {
          result_ = -EIO;
          return true;
        }
        Advance(static_cast<uint64_t>(res));
        if (remaining_ > 0) return false;
        result_ = 0;
        return true;
      }
      if (res == -EOPNOTSUPP) {
        if (stage_ == ZeroStage::kPunchHole) {
          caps.no_punch_hole.store(true, std::memory_order_relaxed);
          stage_ = ZeroStage::kZeroRange;
        } else {
          caps.no_zero_range.store(true, std::memory_order_relaxed);
          stage_ = ZeroStage::kWriteZeroes;
        }
        return false;
      }
      result_ = res < 0 ? res : 0;
      return true;
  }
  return true;
}

RequestTable::RequestTable(uint32_t capacity) : slots_(capacity) {
  free_.reserve(capacity);
  for (uint32_t i = capacity; i > 0; --i) free_.push_back(i - 1);
}

absl::StatusOr<uint32_t> RequestTable::Acquire(const Op& op) {
  if (free_.empty()) {
    return absl::ResourceExhaustedError(
        absl::StrFormat("block engine is full: %u ops already in flight", slots_.size()));
  }
  uint32_t index = free_.back();
  free_.pop_back();
  slots_[index].Start(op);
  return index;
}

void RequestTable::Release(uint32_t index) { free_.push_back(index); }

}  // namespace internal

const char* EngineName(IoEngine kind) {
  switch (kind) {
    case IoEngine::kIoUring:
      return "io_uring";
    case IoEngine::kThreads:
      return "threads";
    case IoEngine::kAuto:
      break;
  }
  return "auto";
}

absl::StatusOr<MadeEngine> MakeEngine(IoEngine requested, const EngineOptions& options) {
  if (options.fd < 0 || options.queue_depth == 0) {
    return absl::InvalidArgumentError("block engine needs a disk fd and a queue depth");
  }
  MadeEngine made;
  if (requested != IoEngine::kThreads) {
    absl::StatusOr<std::unique_ptr<UringEngine>> uring = UringEngine::Create(options);
    if (uring.ok()) {
      made.engine = std::move(*uring);
      made.kind = IoEngine::kIoUring;
      return made;
    }
    if (requested == IoEngine::kIoUring) {
      return absl::FailedPreconditionError(absl::StrFormat(
          "io_uring is unavailable (%s); --io-engine=threads (or auto) uses a thread pool",
          uring.status().message()));
    }
    made.fallback_reason = std::string(uring.status().message());
  }
  absl::StatusOr<std::unique_ptr<ThreadEngine>> pool = ThreadEngine::Create(options);
  if (!pool.ok()) return pool.status();
  made.engine = std::move(*pool);
  made.kind = IoEngine::kThreads;
  return made;
}

}  // namespace flint::block
