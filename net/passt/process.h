// Spawning and reaping the passt child.
//
// passt gets one end of a socketpair as fd 3 and nothing else: stdin,
// stdout and stderr on /dev/null (with -l it logs to its file; what it would
// print on stderr repeats the log), its own process group (a ^C on flint's
// terminal must not kill it behind flint's back: flint stops it in order),
// default signal dispositions and an empty signal mask (flint blocks
// SIGINT/SIGTERM for its signalfd, and a blocked SIGTERM would survive exec).
// The child is watched through a pidfd, which becomes readable when it exits.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "vmm/kvm/unique_fd.h"
#include "vmm/vm_config.h"

namespace flint::net {

// The fd number the child finds its socket at.
inline constexpr int kPasstChildFd = 3;

// The full path of the first executable `name` in `path_list` (a $PATH-style
// list; empty entries mean the current directory), or NotFound.
absl::StatusOr<std::string> FindInPath(std::string_view name, std::string_view path_list);

// passt's command line (argv[0] first) for `config`: foreground, quiet,
// one-off, its socket at `fd`, MTU (1500 when the config says 0, so DHCP
// hands the guest the MTU the device advertises), address, port forwards,
// log file.
std::vector<std::string> PasstArgs(const NicConfig& config, int fd, const std::string& log_path);

class ChildProcess {
 public:
  // Starts `binary` with `args` (argv[0] included), `pass_fd` becoming the
  // child's kPasstChildFd. Returns once the child exists, not once it is
  // ready.
  static absl::StatusOr<ChildProcess> Spawn(const std::string& binary,
                                            const std::vector<std::string>& args, int pass_fd);

  ChildProcess(ChildProcess&& o) noexcept;
  ChildProcess& operator=(ChildProcess&&) = delete;
  ChildProcess(const ChildProcess&) = delete;
  // Kills and reaps a child that is still there.
  ~ChildProcess();

  pid_t pid() const { return pid_; }
  // Readable once the child has exited; where the kernel (or valgrind) has
  // no pidfd_open, a timer readable every kPollIntervalMs instead: the
  // watcher then asks HasExited().
  int pidfd() const { return pidfd_.get(); }
  bool HasExited() const;
  static constexpr long kPollIntervalMs = 50;

  // Ends the child and reaps it; returns how it ended ("exited with status
  // 1", "was killed by signal 9 (Killed)"). Waits up to `grace_ms` for it to
  // exit by itself (after SIGTERM when `term`), then SIGKILLs it. Blocks at
  // most `grace_ms` plus the kernel's time to tear down a killed process.
  std::string Finish(int grace_ms, bool term);

 private:
  ChildProcess(pid_t pid, UniqueFd pidfd, bool polled)
      : pid_(pid), pidfd_(std::move(pidfd)), polled_(polled) {}
  bool WaitExit(int timeout_ms) const;

  pid_t pid_ = -1;  // -1 once reaped
  UniqueFd pidfd_;
  bool polled_ = false;  // pidfd_ is a timer, not a pidfd
};

// "exited with status N" / "was killed by signal N (NAME)" for a waitpid status.
std::string DescribeWaitStatus(int status);

}  // namespace flint::net
