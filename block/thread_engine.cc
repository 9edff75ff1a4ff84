#include "block/thread_engine.h"

#include <fcntl.h>
#include <pthread.h>
#include <sys/eventfd.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>

#include "absl/strings/str_format.h"

namespace flint::block {
namespace {

int64_t Run(int fd, const internal::Step& s) {
  ssize_t n = -1;
  switch (s.kind) {
    case internal::Step::kReadv:
      n = preadv(fd, s.iov, s.iovcnt, static_cast<off_t>(s.offset));
      break;
    case internal::Step::kWritev:
      n = pwritev(fd, s.iov, s.iovcnt, static_cast<off_t>(s.offset));
      break;
    case internal::Step::kFdatasync:
      n = fdatasync(fd);
      break;
    case internal::Step::kFallocate:
      n = fallocate(fd, s.mode, static_cast<off_t>(s.offset), static_cast<off_t>(s.length));
      break;
  }
  return n < 0 ? -errno : n;
}

}  // namespace

ThreadEngine::ThreadEngine(const EngineOptions& options, UniqueFd event_fd)
    : fd_(options.fd), event_fd_(std::move(event_fd)), requests_(options.queue_depth) {
  batch_.reserve(options.queue_depth);
  reaping_.reserve(options.queue_depth);
  absl::MutexLock l(&mu_);
  jobs_.resize(options.queue_depth);
  done_.reserve(options.queue_depth);
}

absl::StatusOr<std::unique_ptr<ThreadEngine>> ThreadEngine::Create(const EngineOptions& options) {
  UniqueFd event_fd(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!event_fd.valid()) {
    return absl::InternalError(absl::StrFormat("eventfd: %s", strerror(errno)));
  }
  std::unique_ptr<ThreadEngine> engine(new ThreadEngine(options, std::move(event_fd)));
  const uint32_t threads = std::max(options.thread_count, 1u);
  for (uint32_t i = 0; i < threads; ++i) {
    engine->workers_.emplace_back([e = engine.get()] { e->Worker(); });
    pthread_setname_np(engine->workers_.back().native_handle(), "flint-blkio");
  }
  return engine;
}

ThreadEngine::~ThreadEngine() {
  Drain();
  {
    absl::MutexLock l(&mu_);
    stop_ = true;
    work_.SignalAll();
  }
  for (auto& t : workers_) t.join();
}

absl::Status ThreadEngine::Queue(const Op& op) {
  absl::StatusOr<uint32_t> index = requests_.Acquire(op);
  if (!index.ok()) return index.status();
  batch_.push_back(*index);
  return absl::OkStatus();
}

absl::Status ThreadEngine::Submit() {
  if (batch_.empty()) return absl::OkStatus();
  {
    absl::MutexLock l(&mu_);
    // Fits: every index is a distinct slot of a table as deep as the ring.
    for (uint32_t index : batch_) {
      jobs_[(jobs_head_ + jobs_count_) % jobs_.size()] = index;
      ++jobs_count_;
    }
    if (batch_.size() == 1) {
      work_.Signal();
    } else {
      work_.SignalAll();
    }
  }
  batch_.clear();
  return absl::OkStatus();
}

void ThreadEngine::Worker() {
  for (;;) {
    uint32_t index;
    {
      absl::MutexLock l(&mu_);
      while (!stop_ && jobs_count_ == 0) work_.Wait(&mu_);
      if (jobs_count_ == 0) return;  // stopping
      index = jobs_[jobs_head_];
      jobs_head_ = (jobs_head_ + 1) % static_cast<uint32_t>(jobs_.size());
      --jobs_count_;
      ++busy_;
    }
    internal::Request& r = requests_.at(index);
    int64_t res;
    do {
      res = Run(fd_, r.Next(caps_));
    } while (!r.Finish(res, caps_));
    {
      absl::MutexLock l(&mu_);
      --busy_;
      done_.push_back(index);
      idle_.SignalAll();
    }
    const uint64_t one = 1;
    ssize_t n = write(event_fd_.get(), &one, sizeof(one));
    (void)n;  // EAGAIN only at a counter near overflow: the fd is readable anyway
  }
}

void ThreadEngine::Reap(CompletionFn fn) {
  uint64_t count;
  ssize_t n = read(event_fd_.get(), &count, sizeof(count));
  (void)n;  // cleared before taking the list: a later completion signals again
  {
    absl::MutexLock l(&mu_);
    reaping_.swap(done_);
  }
  for (uint32_t index : reaping_) {
    const internal::Request& r = requests_.at(index);
    const uint64_t tag = r.tag();
    const int64_t result = r.result();
    requests_.Release(index);
    fn(tag, result);
  }
  reaping_.clear();
}

void ThreadEngine::Drain() {
  (void)Submit();
  {
    absl::MutexLock l(&mu_);
    while (jobs_count_ > 0 || busy_ > 0) idle_.Wait(&mu_);
    reaping_.swap(done_);
  }
  for (uint32_t index : reaping_) requests_.Release(index);
  reaping_.clear();
  uint64_t count;
  ssize_t n = read(event_fd_.get(), &count, sizeof(count));
  (void)n;
}

}  // namespace flint::block
