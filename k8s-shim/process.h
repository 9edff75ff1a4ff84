// The VMM processes the shim starts and finds again: started detached (a new
// session, re-parented away from the shim by a double fork) so that a shim
// restart never takes a VM down, and identified by pid + start time so a
// reused pid is never mistaken for the VM.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "vmm/kvm/unique_fd.h"

namespace flint::shim {

struct ProcessId {
  pid_t pid = 0;
  uint64_t start_time = 0;  // field 22 of /proc/PID/stat (clock ticks since boot)
};

// Runs argv (argv[0] looked up in PATH when it has no '/') in its own session,
// stdin from /dev/null, stdout and stderr appended to `log_path`; every other
// fd is closed except `keep_fds`, which keep their numbers. Returns once the
// program has been exec'd (an exec failure is an error naming argv[0]); the
// process is not the caller's child, so nobody has to reap it.
absl::StatusOr<ProcessId> SpawnDetached(const std::vector<std::string>& argv,
                                        const std::string& log_path,
                                        const std::vector<int>& keep_fds = {});

// NOT_FOUND when no process `pid` exists.
absl::StatusOr<uint64_t> ProcessStartTime(pid_t pid);

// The same process (pid and start time) still exists and is not a zombie.
bool ProcessAlive(const ProcessId& id);

// SIGKILL to exactly that process: through a pidfd when the kernel has
// pidfd_open (the identity check and the signal then refer to one process
// even if the pid is reused in between), else a plain kill after the check.
// Nothing happens when the process is gone.
void KillProcess(const ProcessId& id);
// The same with any signal.
void SignalProcess(const ProcessId& id, int signal);

// Waits until ProcessAlive(id) is false, up to `timeout`; true when it is gone.
bool WaitProcessGone(const ProcessId& id, absl::Duration timeout);

struct ProcessUsage {
  uint64_t rss_bytes = 0;
  uint64_t private_bytes = 0;  // Private_Clean + Private_Dirty (smaps_rollup)
  uint64_t cpu_time_ns = 0;    // utime + stime
};
absl::StatusOr<ProcessUsage> ReadProcessUsage(pid_t pid);

// The last `max_bytes` of a log file (whole lines), for error messages.
std::string LogTail(const std::string& path, size_t max_bytes = 2000);

// A short-lived helper program whose output the caller reads (the opposite
// of SpawnDetached: the caller's child, reaped by Collect).
struct CapturedChild {
  pid_t pid = -1;
  UniqueFd out, err;
};

// Starts argv (argv[0] looked up in PATH when it has no '/') with stdin from
// /dev/null and stdout/stderr on pipes. posix_spawn, not fork: the shim is
// multi-threaded (gRPC), and only fds 0-2 reach the child.
absl::StatusOr<CapturedChild> SpawnCaptured(const std::vector<std::string>& argv);

struct Captured {
  bool exited = false;  // false: killed by a signal, or the time limit
  bool timed_out = false;
  int exit_status = -1;
  std::string out, err;  // each kept to its first MiB
};

// Reads the child's output until both streams close (SIGKILL after
// `timeout`), then reaps it.
Captured Collect(CapturedChild& child, absl::Duration timeout);

// SpawnCaptured + Collect.
absl::StatusOr<Captured> RunCaptured(const std::vector<std::string>& argv,
                                     absl::Duration timeout);

}  // namespace flint::shim
