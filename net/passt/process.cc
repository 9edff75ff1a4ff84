#include "net/passt/process.h"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/timerfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "net/passt/deadline.h"

extern char** environ;

namespace flint::net {
namespace {

// Owners for the posix_spawn attribute objects.
struct FileActions {
  FileActions() { posix_spawn_file_actions_init(&fa); }
  ~FileActions() { posix_spawn_file_actions_destroy(&fa); }
  posix_spawn_file_actions_t fa;
};
struct SpawnAttr {
  SpawnAttr() { posix_spawnattr_init(&attr); }
  ~SpawnAttr() { posix_spawnattr_destroy(&attr); }
  posix_spawnattr_t attr;
};

bool IsExecutableFile(const std::string& path) {
  struct stat st{};
  return stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode) && access(path.c_str(), X_OK) == 0;
}

}  // namespace

absl::StatusOr<std::string> FindInPath(std::string_view name, std::string_view path_list) {
  const std::string file(name);
  if (file.find('/') != std::string::npos) {
    if (IsExecutableFile(file)) return file;
    return absl::NotFoundError(absl::StrCat(file, " is not an executable file"));
  }
  for (absl::string_view dir :
       absl::StrSplit(absl::string_view(path_list.data(), path_list.size()), ':')) {
    std::string path = absl::StrCat(dir.empty() ? "." : dir, "/", file);
    if (IsExecutableFile(path)) return path;
  }
  return absl::NotFoundError(absl::StrCat(file, " not found in PATH"));
}

std::vector<std::string> PasstArgs(const NicConfig& config, int fd, const std::string& log_path) {
  std::vector<std::string> args = {"passt", "-f", "-q", "-1", "-F", absl::StrCat(fd)};
  args.push_back("-m");
  args.push_back(absl::StrCat(config.mtu != 0 ? config.mtu : 1500));
  if (!config.ipv4.empty()) {
    args.push_back("-a");
    args.push_back(config.ipv4);
  }
  for (const std::string& spec : config.tcp) {
    args.push_back("-t");
    args.push_back(spec);
  }
  for (const std::string& spec : config.udp) {
    args.push_back("-u");
    args.push_back(spec);
  }
  args.push_back("-l");
  args.push_back(log_path);
  return args;
}

std::string DescribeWaitStatus(int status) {
  if (WIFEXITED(status)) return absl::StrFormat("exited with status %d", WEXITSTATUS(status));
  if (WIFSIGNALED(status)) {
    const int sig = WTERMSIG(status);
    const char* abbrev = sigabbrev_np(sig);
    return absl::StrFormat("was killed by signal %d (SIG%s)", sig, abbrev ? abbrev : "?");
  }
  return absl::StrFormat("ended with wait status 0x%x", status);
}

absl::StatusOr<ChildProcess> ChildProcess::Spawn(const std::string& binary,
                                                 const std::vector<std::string>& args,
                                                 int pass_fd) {
  // The file actions run in order in the child: the socket goes to fd 3
  // first, so it must not sit on 0..3 already (dup2(3, 3) would leave
  // close-on-exec set on some libcs, and opening /dev/null on 0..2 would
  // replace it).
  UniqueFd moved;
  int src = pass_fd;
  if (src <= kPasstChildFd) {
    moved.reset(fcntl(src, F_DUPFD_CLOEXEC, kPasstChildFd + 1));
    if (!moved.valid()) {
      return absl::InternalError(absl::StrFormat("fcntl(F_DUPFD) failed: %s", strerror(errno)));
    }
    src = moved.get();
  }
  FileActions actions;
  posix_spawn_file_actions_t* fa = &actions.fa;
  int rc = posix_spawn_file_actions_adddup2(fa, src, kPasstChildFd);
  if (rc == 0) rc = posix_spawn_file_actions_addopen(fa, 0, "/dev/null", O_RDONLY, 0);
  if (rc == 0) rc = posix_spawn_file_actions_addopen(fa, 1, "/dev/null", O_WRONLY, 0);
  if (rc == 0) rc = posix_spawn_file_actions_adddup2(fa, 1, 2);
  // Every other fd of flint (disk images, the KVM fds, an inherited TAP fd)
  // stays out of passt, close-on-exec or not.
  if (rc == 0) rc = posix_spawn_file_actions_addclosefrom_np(fa, kPasstChildFd + 1);
  SpawnAttr attr;
  sigset_t none, all;
  sigemptyset(&none);
  sigfillset(&all);
  sigdelset(&all, SIGKILL);
  sigdelset(&all, SIGSTOP);
  if (rc == 0) {
    rc = posix_spawnattr_setflags(
        &attr.attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETPGROUP);
  }
  if (rc == 0) rc = posix_spawnattr_setpgroup(&attr.attr, 0);
  if (rc == 0) rc = posix_spawnattr_setsigmask(&attr.attr, &none);
  if (rc == 0) rc = posix_spawnattr_setsigdefault(&attr.attr, &all);
  if (rc != 0) {
    return absl::InternalError(
        absl::StrFormat("preparing to start %s failed: %s", binary, strerror(rc)));
  }

  std::vector<char*> argv;
  argv.reserve(args.size() + 1);
  for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  pid_t pid = -1;
  rc = posix_spawn(&pid, binary.c_str(), fa, &attr.attr, argv.data(), environ);
  if (rc != 0) {
    return absl::UnavailableError(absl::StrFormat("starting %s failed: %s", binary, strerror(rc)));
  }
  // The child is unreaped, so its pid cannot have been reused yet.
  UniqueFd pidfd(static_cast<int>(syscall(SYS_pidfd_open, pid, 0)));
  if (pidfd.valid()) return ChildProcess(pid, std::move(pidfd), /*polled=*/false);
  const int err = errno;
  if (err == ENOSYS) {
    // No pidfd_open (a kernel before 5.3, or valgrind, which does not know
    // the call): a periodic timer stands in, and HasExited() asks waitid.
    UniqueFd timer(timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK));
    itimerspec every{};
    every.it_interval.tv_nsec = kPollIntervalMs * 1000000L;
    every.it_value = every.it_interval;
    if (timer.valid() && timerfd_settime(timer.get(), 0, &every, nullptr) == 0) {
      return ChildProcess(pid, std::move(timer), /*polled=*/true);
    }
  }
  kill(pid, SIGKILL);
  int status;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return absl::UnavailableError(absl::StrFormat(
      "pidfd_open failed: %s (flint supervises passt with a pidfd: Linux 5.3 or later)",
      strerror(err)));
}

ChildProcess::ChildProcess(ChildProcess&& o) noexcept
    : pid_(std::exchange(o.pid_, -1)), pidfd_(std::move(o.pidfd_)), polled_(o.polled_) {}

bool ChildProcess::HasExited() const {
  if (pid_ < 0) return true;
  if (!polled_) {
    pollfd p{pidfd_.get(), POLLIN, 0};
    return poll(&p, 1, 0) == 1;
  }
  uint64_t ticks;
  (void)!read(pidfd_.get(), &ticks, sizeof(ticks));  // re-arm the level-triggered watch
  siginfo_t si{};
  return waitid(P_PID, static_cast<id_t>(pid_), &si, WEXITED | WNOHANG | WNOWAIT) == 0 &&
         si.si_pid == pid_;
}

ChildProcess::~ChildProcess() {
  if (pid_ >= 0) Finish(0, false);
}

bool ChildProcess::WaitExit(int timeout_ms) const {
  if (!polled_) return PollUntil(pidfd_.get(), POLLIN, MonotonicMs() + timeout_ms);
  const int64_t deadline = MonotonicMs() + timeout_ms;
  while (!HasExited()) {
    if (MonotonicMs() >= deadline) return false;
    timespec ts{0, 2000000};
    nanosleep(&ts, nullptr);
  }
  return true;
}

std::string ChildProcess::Finish(int grace_ms, bool term) {
  if (pid_ < 0) return "was already reaped";
  if (term) kill(pid_, SIGTERM);
  if (!WaitExit(grace_ms)) kill(pid_, SIGKILL);
  int status = 0;
  pid_t r;
  do {
    r = waitpid(pid_, &status, 0);
  } while (r < 0 && errno == EINTR);
  std::string how = r == pid_ ? DescribeWaitStatus(status)
                              : absl::StrFormat("ended (status unknown: waitpid: %s)",
                                                strerror(errno));
  pid_ = -1;
  pidfd_.reset();
  return how;
}

}  // namespace flint::net
