// Feeds a host fd (normally stdin) into the guest's UART on its own thread,
// with back-pressure: it stops reading while the UART's receive buffer is
// full instead of dropping keystrokes.
#pragma once

#include <thread>

#include "absl/status/status.h"
#include "vmm/kvm/unique_fd.h"

namespace flint {

class Serial;

class ConsoleInput {
 public:
  ConsoleInput() = default;
  ~ConsoleInput() { Stop(); }
  ConsoleInput(const ConsoleInput&) = delete;
  ConsoleInput& operator=(const ConsoleInput&) = delete;

  absl::Status Start(int in_fd, Serial* serial);
  void Stop();

 private:
  void Loop(int in_fd, Serial* serial);
  UniqueFd wake_;
  std::thread thread_;
};

}  // namespace flint
