// A device's interrupt line. The VM wires it to KVM_IRQ_LINE; tests use a
// recording fake.
#pragma once

#include <functional>

#include "vmm/stop_reason.h"

namespace flint {

class IrqLine {
 public:
  virtual ~IrqLine() = default;
  virtual void Set(bool level) = 0;
};

// How a platform device asks the VM to stop (power-off, reset, debug exit).
using StopRequester = std::function<void(StopReason)>;

}  // namespace flint
