// Block I/O engines: how a virtio-blk queue's requests reach the disk file.
//
// One engine per virtqueue, used only from the event loop thread: Queue() ops
// into a batch, Submit() the batch (one syscall for io_uring), wait for
// completion_fd() to become readable, then Reap() the results. Buffers are
// iovecs straight into guest memory; they must stay valid until the op is
// reaped (or Drain() returns).
//
// Results are complete: short reads and writes are continued by the engine
// until done, EAGAIN/EINTR are retried; a read that meets end-of-file
// completes with the bytes read so far (the caller checks sizes first).
#pragma once

#include <sys/uio.h>

#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "vmm/vm_config.h"

namespace flint::block {

enum class OpType : uint8_t {
  kRead,         // preadv
  kWrite,        // pwritev
  kFlush,        // fdatasync
  kDiscard,      // fallocate(PUNCH_HOLE | KEEP_SIZE); a no-op where unsupported
  kWriteZeroes,  // reads back as zeroes afterwards: fallocate, else zeroes written
};

struct Op {
  OpType type = OpType::kRead;
  uint64_t tag = 0;     // handed back by Reap()
  uint64_t offset = 0;  // bytes into the disk
  // kRead/kWrite: the buffers (Queue() copies the array, not the data).
  std::span<const iovec> iov;
  // kDiscard/kWriteZeroes: the range length in bytes.
  uint64_t length = 0;
  // kWriteZeroes: the range may be deallocated (punched) as long as it reads
  // back as zeroes; without it the blocks stay allocated.
  bool unmap = false;
};

struct EngineOptions {
  int fd = -1;                 // the disk; not owned, outlives the engine
  uint32_t queue_depth = 256;  // most ops queued or in flight at once
  uint32_t thread_count = 4;   // thread-pool engine only
};

class Engine {
 public:
  // result: bytes transferred (kRead/kWrite), 0 (others), or -errno.
  using CompletionFn = absl::FunctionRef<void(uint64_t tag, int64_t result)>;

  virtual ~Engine() = default;  // waits for what is in flight, like Drain()

  virtual const char* name() const = 0;  // "io_uring" or "threads"

  // Adds an op to the current batch (io_uring: when the submission ring is
  // full, the ring is submitted first). Fails when queue_depth ops are
  // already queued or in flight: callers bound their own depth.
  virtual absl::Status Queue(const Op& op) = 0;
  // Starts everything queued since the last Submit().
  virtual absl::Status Submit() = 0;

  // An eventfd that becomes readable when completions wait to be reaped.
  virtual int completion_fd() const = 0;
  // Clears completion_fd() and calls `fn` once per finished op. `fn` may
  // Queue() and Submit() new ops.
  virtual void Reap(CompletionFn fn) = 0;

  // Submits what is queued and blocks until nothing is in flight; results
  // are dropped (device reset). The engine is reusable afterwards.
  virtual void Drain() = 0;

  // Ops queued or in flight, not yet reaped.
  virtual uint32_t in_flight() const = 0;
};

struct MadeEngine {
  std::unique_ptr<Engine> engine;
  IoEngine kind = IoEngine::kThreads;  // kIoUring or kThreads: what was made
  // Why kAuto fell back to the thread pool ("kernel.io_uring_disabled=2",
  // "io_uring_queue_init: Operation not permitted"); empty otherwise.
  std::string fallback_reason;
};

// kAuto: io_uring when the host allows it, else the thread pool with the
// reason; kIoUring: io_uring or an error saying why not; kThreads: the pool.
absl::StatusOr<MadeEngine> MakeEngine(IoEngine requested, const EngineOptions& options);

const char* EngineName(IoEngine kind);  // "io_uring", "threads" or "auto"

}  // namespace flint::block
