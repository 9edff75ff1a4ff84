// The io_uring engine: one ring per virtqueue, sized to the queue depth, its
// completions signalled on a registered eventfd.
#pragma once

#include <liburing.h>

#include <cstdint>
#include <memory>

#include "absl/status/statusor.h"
#include "block/engine.h"
#include "block/request.h"
#include "vmm/kvm/unique_fd.h"

namespace flint::block {

class UringEngine final : public Engine {
 public:
  // Fails, saying why, when the host refuses io_uring (kernel too old,
  // kernel.io_uring_disabled, seccomp, memlock limits) or lacks an opcode
  // the engine needs.
  static absl::StatusOr<std::unique_ptr<UringEngine>> Create(const EngineOptions& options);
  ~UringEngine() override;

  const char* name() const override { return "io_uring"; }
  absl::Status Queue(const Op& op) override;
  absl::Status Submit() override;
  int completion_fd() const override { return event_fd_.get(); }
  void Reap(CompletionFn fn) override;
  void Drain() override;
  uint32_t in_flight() const override { return requests_.in_use(); }

 private:
  UringEngine(const EngineOptions& options, UniqueFd event_fd);
  // Puts the request's next step on the submission ring (submitting the ring
  // first when it is full).
  absl::Status Prepare(uint32_t index);
  // Applies one completion; returns true and fills *tag/*result when the op
  // finished, or queues its next step.
  bool Complete(io_uring_cqe* cqe, uint64_t* tag, int64_t* result);
  void ClearEventFd();

  int fd_;
  io_uring ring_{};
  bool ring_ready_ = false;  // io_uring_queue_init succeeded
  UniqueFd event_fd_;
  internal::RequestTable requests_;
  internal::FileCaps caps_;
};

}  // namespace flint::block
