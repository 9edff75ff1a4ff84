// Why a VM stopped, and the process exit status that reports it.
#pragma once

#include <string>

namespace flint {

enum class StopKind {
  kPowerOff,     // ACPI S5 through the sleep control register
  kReset,        // i8042 reset line or a KVM system-event reset
  kDebugExit,    // write to the debug-exit port
  kTripleFault,  // KVM_EXIT_SHUTDOWN
  kGuestError,   // emulation failure, failed entry, unknown exit
  kHostError,    // flint itself failed (an ioctl, a thread)
  kSignal,       // SIGINT/SIGTERM or a stop request from outside
};

struct StopReason {
  StopKind kind = StopKind::kPowerOff;
  int exit_status = 0;
  std::string detail;
};

// Process exit statuses. Odd values 1..255 belong to the debug-exit port
// ((v << 1) | 1, like QEMU's isa-debug-exit), so flint's own are even.
inline constexpr int kExitOk = 0;
inline constexpr int kExitUsage = 2;        // bad command line or configuration
inline constexpr int kExitGuestCrash = 4;   // triple fault or unrecoverable guest error
inline constexpr int kExitHostError = 6;    // flint failed while running the VM
inline constexpr int kExitSignal = 130;     // stopped by SIGINT/SIGTERM

const char* StopKindName(StopKind k);

}  // namespace flint
