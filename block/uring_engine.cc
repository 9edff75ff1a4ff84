#include "block/uring_engine.h"

#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <utility>

#include "absl/strings/str_format.h"

namespace flint::block {
namespace {

// kernel.io_uring_disabled (Linux 6.6): 0 allowed, 1 only for
// CAP_SYS_ADMIN or io_uring_group, 2 refused. -1 when the knob is absent.
int IoUringDisabledSysctl() {
  FILE* f = std::fopen("/proc/sys/kernel/io_uring_disabled", "re");
  if (f == nullptr) return -1;
  int v = -1;
  if (std::fscanf(f, "%d", &v) != 1) v = -1;
  std::fclose(f);
  return v;
}

std::string InitFailure(int err) {
  std::string why = absl::StrFormat("io_uring_queue_init: %s", strerror(err));
  switch (err) {
    case ENOSYS:
      return why + " (kernel built without io_uring)";
    case EPERM:
    case EACCES:
      return why + (IoUringDisabledSysctl() == 1
                        ? " (kernel.io_uring_disabled=1 and flint lacks CAP_SYS_ADMIN)"
                        : " (blocked by a seccomp filter or a security module)");
    case ENOMEM:
      return why + " (RLIMIT_MEMLOCK too small for the ring?)";
    default:
      return why;
  }
}

}  // namespace

UringEngine::UringEngine(const EngineOptions& options, UniqueFd event_fd)
    : fd_(options.fd), event_fd_(std::move(event_fd)), requests_(options.queue_depth) {}

UringEngine::~UringEngine() {
  if (!ring_ready_) return;
  Drain();
  io_uring_queue_exit(&ring_);
}

absl::StatusOr<std::unique_ptr<UringEngine>> UringEngine::Create(const EngineOptions& options) {
  if (IoUringDisabledSysctl() == 2) {
    return absl::UnavailableError("kernel.io_uring_disabled=2");
  }
  UniqueFd event_fd(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!event_fd.valid()) {
    return absl::InternalError(absl::StrFormat("eventfd: %s", strerror(errno)));
  }
  std::unique_ptr<UringEngine> engine(new UringEngine(options, std::move(event_fd)));
  io_uring& ring = engine->ring_;
  // Every request has at most one SQE queued or in flight, so a ring (and a
  // completion ring, twice its size) as deep as the queue never overflows.
  int ret = io_uring_queue_init(options.queue_depth, &ring, 0);
  if (ret < 0) return absl::UnavailableError(InitFailure(-ret));
  engine->ring_ready_ = true;
  io_uring_probe* probe = io_uring_get_probe_ring(&ring);
  if (probe == nullptr) {
    return absl::UnavailableError("kernel cannot list io_uring opcodes (io_uring needs Linux 5.6)");
  }
  const struct {
    int op;
    const char* name;
  } needed[] = {{IORING_OP_READV, "READV"},
                {IORING_OP_WRITEV, "WRITEV"},
                {IORING_OP_FSYNC, "FSYNC"},
                {IORING_OP_FALLOCATE, "FALLOCATE"}};
  for (const auto& n : needed) {
    if (!io_uring_opcode_supported(probe, n.op)) {
      io_uring_free_probe(probe);
      return absl::UnavailableError(
          absl::StrFormat("kernel's io_uring lacks IORING_OP_%s", n.name));
    }
  }
  io_uring_free_probe(probe);
  ret = io_uring_register_eventfd(&ring, engine->event_fd_.get());
  if (ret < 0) {
    return absl::UnavailableError(absl::StrFormat("io_uring_register_eventfd: %s", strerror(-ret)));
  }
  return engine;
}

absl::Status UringEngine::Prepare(uint32_t index) {
  io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
  if (sqe == nullptr) {
    // The batch outgrew the free submission entries: send what is there.
    absl::Status s = Submit();
    if (!s.ok()) return s;
    sqe = io_uring_get_sqe(&ring_);
    if (sqe == nullptr) return absl::ResourceExhaustedError("io_uring submission ring is full");
  }
  internal::Step step = requests_.at(index).Next(caps_);
  switch (step.kind) {
    case internal::Step::kReadv:
      io_uring_prep_readv(sqe, fd_, step.iov, static_cast<unsigned>(step.iovcnt), step.offset);
      break;
    case internal::Step::kWritev:
      io_uring_prep_writev(sqe, fd_, step.iov, static_cast<unsigned>(step.iovcnt), step.offset);
      break;
    case internal::Step::kFdatasync:
      io_uring_prep_fsync(sqe, fd_, IORING_FSYNC_DATASYNC);
      break;
    case internal::Step::kFallocate:
      io_uring_prep_fallocate(sqe, fd_, step.mode, static_cast<off_t>(step.offset),
                              static_cast<off_t>(step.length));
      break;
  }
  io_uring_sqe_set_data64(sqe, index);
  return absl::OkStatus();
}

absl::Status UringEngine::Queue(const Op& op) {
  absl::StatusOr<uint32_t> index = requests_.Acquire(op);
  if (!index.ok()) return index.status();
  absl::Status s = Prepare(*index);
  if (!s.ok()) requests_.Release(*index);
  return s;
}

absl::Status UringEngine::Submit() {
  // The kernel may stop early (it returns how many SQEs it consumed); what
  // it left stays on the ring, so go again until the ring is empty.
  while (io_uring_sq_ready(&ring_) > 0) {
    int ret = io_uring_submit(&ring_);
    if (ret == -EINTR) continue;
    if (ret < 0) {
      return absl::InternalError(absl::StrFormat("io_uring_submit: %s", strerror(-ret)));
    }
    if (ret == 0) return absl::InternalError("io_uring_submit consumed nothing");
  }
  return absl::OkStatus();
}

bool UringEngine::Complete(io_uring_cqe* cqe, uint64_t* tag, int64_t* result) {
  const auto index = static_cast<uint32_t>(io_uring_cqe_get_data64(cqe));
  const int res = cqe->res;
  io_uring_cqe_seen(&ring_, cqe);
  if (index >= requests_.capacity()) return false;  // never ours: nothing to finish
  internal::Request& r = requests_.at(index);
  bool finished = r.Finish(res, caps_);
  if (!finished && Prepare(index).ok()) return false;
  *tag = r.tag();
  // A continuation that found no submission entry ends the op with an error
  // rather than leaving it pending forever.
  *result = finished ? r.result() : -EIO;
  requests_.Release(index);
  return true;
}

void UringEngine::ClearEventFd() {
  uint64_t count;
  ssize_t n = read(event_fd_.get(), &count, sizeof(count));
  (void)n;  // EAGAIN: nothing signalled since the last reap
}

void UringEngine::Reap(CompletionFn fn) {
  // Cleared first: a completion posted after this read signals again.
  ClearEventFd();
  io_uring_cqe* cqe = nullptr;
  while (io_uring_peek_cqe(&ring_, &cqe) == 0) {
    uint64_t tag = 0;
    int64_t result = 0;
    if (Complete(cqe, &tag, &result)) fn(tag, result);
  }
  // Continuations of short transfers. Should the kernel refuse them now
  // (ENOMEM), they stay on the ring and go with the next Submit().
  (void)Submit();
}

void UringEngine::Drain() {
  while (requests_.in_use() > 0) {
    int ret = io_uring_submit_and_wait(&ring_, 1);
    if (ret < 0 && ret != -EINTR && ret != -EAGAIN && ret != -EBUSY) {
      // Returning now would let the kernel go on writing into guest memory
      // after a device reset, and into bounce buffers about to be freed.
      std::fprintf(stderr, "flint: io_uring wait failed while draining disk I/O: %s\n",
                   strerror(-ret));
      std::abort();
    }
    io_uring_cqe* cqe = nullptr;
    while (io_uring_peek_cqe(&ring_, &cqe) == 0) {
      uint64_t tag = 0;
      int64_t result = 0;
      Complete(cqe, &tag, &result);
    }
  }
  ClearEventFd();
}

}  // namespace flint::block
