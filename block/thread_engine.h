// The thread-pool engine: for hosts without io_uring. A few worker threads
// per virtqueue run the same steps with plain syscalls (preadv, pwritev,
// fdatasync, fallocate) and signal an eventfd when an op is done.
#pragma once

#include <cstdint>
#include <memory>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "block/engine.h"
#include "block/request.h"
#include "vmm/kvm/unique_fd.h"

namespace flint::block {

class ThreadEngine final : public Engine {
 public:
  static absl::StatusOr<std::unique_ptr<ThreadEngine>> Create(const EngineOptions& options);
  ~ThreadEngine() override;

  const char* name() const override { return "threads"; }
  absl::Status Queue(const Op& op) override;
  absl::Status Submit() override;
  int completion_fd() const override { return event_fd_.get(); }
  void Reap(CompletionFn fn) override;
  void Drain() override;
  uint32_t in_flight() const override { return requests_.in_use(); }

 private:
  ThreadEngine(const EngineOptions& options, UniqueFd event_fd);
  void Worker();

  const int fd_;
  UniqueFd event_fd_;
  // Slots are taken and freed on the loop thread only; a slot's Request is
  // handed to a worker and back through mu_.
  internal::RequestTable requests_;
  internal::FileCaps caps_;
  std::vector<uint32_t> batch_;    // queued since the last Submit(); loop thread
  std::vector<uint32_t> reaping_;  // loop thread

  absl::Mutex mu_;
  absl::CondVar work_;  // jobs to run, or stop
  absl::CondVar idle_;  // a worker finished a job (Drain waits on it)
  // FIFO of submitted slot indices: a ring as deep as the table, so it never
  // allocates.
  std::vector<uint32_t> jobs_ ABSL_GUARDED_BY(mu_);
  uint32_t jobs_head_ ABSL_GUARDED_BY(mu_) = 0;
  uint32_t jobs_count_ ABSL_GUARDED_BY(mu_) = 0;
  uint32_t busy_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<uint32_t> done_ ABSL_GUARDED_BY(mu_);
  bool stop_ ABSL_GUARDED_BY(mu_) = false;

  std::vector<std::thread> workers_;
};

}  // namespace flint::block
