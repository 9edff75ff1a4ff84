#include "k8s-shim/process.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "k8s-shim/files.h"
#include "vmm/kvm/kvm.h"
#include "vmm/kvm/unique_fd.h"

extern char** environ;

namespace flint::shim {
namespace {

// What the middle child and the grandchild tell the caller over the report
// pipe: fixed-size records, each written with one write(2) (atomic: far below
// PIPE_BUF).
enum class Stage : int32_t {
  kPid = 1,      // the grandchild exists; it now waits for the go-ahead
  kSetsid,       // the middle child's setsid failed
  kFork,         // the middle child's second fork failed
  kSetup,        // the grandchild could not set up its fds
  kExec,         // execve failed
};
struct Report {
  Stage stage;
  int32_t err;
  pid_t pid;
};

// Only async-signal-safe calls from here on in a child: the caller is
// multi-threaded (gRPC), so another thread may have held malloc's lock at
// fork time.
void ChildReport(int fd, Stage stage, int err) {
  const Report r{stage, err, getpid()};
  ssize_t n;
  do {
    n = write(fd, &r, sizeof(r));
  } while (n < 0 && errno == EINTR);
}

[[noreturn]] void ChildFail(int fd, Stage stage, int err) {
  ChildReport(fd, stage, err);
  _exit(127);
}

// Closes every fd >= 3 but those in `keep` (sorted, unique, all >= 3).
void CloseAllBut(const int* keep, size_t n, int max_fd) {
  unsigned int from = 3;
  for (size_t i = 0; i <= n; ++i) {
    const unsigned int to = i < n ? static_cast<unsigned int>(keep[i]) : ~0u;
    if (to > from) {
      const unsigned int last = to - 1;
      if (syscall(SYS_close_range, from, last, 0) != 0) {
        // No close_range (before Linux 5.9): one close per possible fd.
        const unsigned int stop = std::min<unsigned int>(last, static_cast<unsigned int>(max_fd));
        for (unsigned int fd = from; fd <= stop; ++fd) close(static_cast<int>(fd));
      }
    }
    if (i < n) from = static_cast<unsigned int>(keep[i]) + 1;
  }
}

// argv[0] as execve needs it: a name without '/' is looked up in PATH here,
// before forking, since execvp may allocate.
absl::StatusOr<std::string> ResolveProgram(const std::string& name) {
  if (name.empty()) return absl::InvalidArgumentError("SpawnDetached: empty argv[0]");
  if (name.find('/') != std::string::npos) return name;
  const char* path_env = getenv("PATH");
  const std::string path = path_env != nullptr ? path_env : "/usr/local/bin:/usr/bin:/bin";
  for (const auto& dir_view : absl::StrSplit(path, ':')) {
    // An empty PATH entry means the current directory.
    const std::string candidate =
        dir_view.empty() ? absl::StrCat("./", name) : absl::StrCat(dir_view, "/", name);
    struct stat st;
    if (stat(candidate.c_str(), &st) == 0 && S_ISREG(st.st_mode) &&
        access(candidate.c_str(), X_OK) == 0) {
      return candidate;
    }
  }
  return absl::NotFoundError(
      absl::StrFormat("cannot run %s: not found in PATH (%s)", name, path));
}

// The fields of /proc/PID/stat after "(comm)", starting with the state
// (field 3). comm may hold spaces and ')', so the split is at the last ')'.
absl::StatusOr<std::vector<std::string>> StatFields(pid_t pid) {
  const std::string path = absl::StrFormat("/proc/%d/stat", pid);
  absl::StatusOr<std::string> read = ReadFile(path);
  if (!read.ok()) return absl::NotFoundError(absl::StrFormat("no process %d", pid));
  const std::string& text = *read;
  const size_t close = text.rfind(')');
  if (close == std::string::npos) {
    return absl::InternalError(absl::StrFormat("%s: no ')' after the command name", path));
  }
  std::vector<std::string> fields =
      absl::StrSplit(text.substr(close + 1), absl::ByAnyChar(" \n"), absl::SkipEmpty());
  if (fields.size() < 20) {
    return absl::InternalError(absl::StrFormat("%s: only %u fields", path, fields.size() + 2));
  }
  return fields;
}

// Index into StatFields of stat field `n` (1-based, as proc(5) counts).
constexpr size_t Field(size_t n) { return n - 3; }

absl::StatusOr<uint64_t> StatNumber(const std::vector<std::string>& fields, size_t n) {
  uint64_t v = 0;
  if (!absl::SimpleAtoi(fields[Field(n)], &v)) {
    return absl::InternalError(
        absl::StrFormat("/proc/PID/stat field %u is not a number: '%s'", n, fields[Field(n)]));
  }
  return v;
}

// A CLOEXEC copy of `fd` numbered 3 or above, so that the dup2s onto 0..2
// in the child never overwrite it (a caller may run with 0..2 closed).
absl::StatusOr<UniqueFd> AboveStdio(UniqueFd fd, const std::string& what) {
  if (fd.get() >= 3) return fd;
  UniqueFd moved(fcntl(fd.get(), F_DUPFD_CLOEXEC, 3));
  if (!moved.valid()) return ErrnoStatus(errno, "duplicating the fd of " + what);
  return moved;
}

int PidfdOpen(pid_t pid) {
#ifdef SYS_pidfd_open
  return static_cast<int>(syscall(SYS_pidfd_open, pid, 0));
#else
  (void)pid;
  errno = ENOSYS;
  return -1;
#endif
}

}  // namespace

absl::StatusOr<ProcessId> SpawnDetached(const std::vector<std::string>& argv,
                                        const std::string& log_path,
                                        const std::vector<int>& keep_fds) {
  if (argv.empty()) return absl::InvalidArgumentError("SpawnDetached: empty argv");
  for (int fd : keep_fds) {
    if (fd < 3 || fcntl(fd, F_GETFD) < 0) {
      return absl::InvalidArgumentError(
          absl::StrFormat("SpawnDetached: keep_fds has %d, which is not an open fd >= 3", fd));
    }
  }
  absl::StatusOr<std::string> program = ResolveProgram(argv[0]);
  if (!program.ok()) return program.status();

  // Everything the children use is prepared here: after fork only
  // async-signal-safe calls.
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  char** const envp = environ;
  UniqueFd log_raw(open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640));
  if (!log_raw.valid()) return ErrnoStatus(errno, "opening the log " + log_path);
  absl::StatusOr<UniqueFd> log = AboveStdio(std::move(log_raw), log_path);
  if (!log.ok()) return log.status();
  UniqueFd null_raw(open("/dev/null", O_RDONLY | O_CLOEXEC));
  if (!null_raw.valid()) return ErrnoStatus(errno, "opening /dev/null");
  absl::StatusOr<UniqueFd> null_fd = AboveStdio(std::move(null_raw), "/dev/null");
  if (!null_fd.ok()) return null_fd.status();
  int report_pipe[2], go_pipe[2];
  if (pipe2(report_pipe, O_CLOEXEC) != 0) return ErrnoStatus(errno, "pipe2");
  UniqueFd report_rd(report_pipe[0]);
  absl::StatusOr<UniqueFd> report_wr = AboveStdio(UniqueFd(report_pipe[1]), "a pipe");
  if (!report_wr.ok()) return report_wr.status();
  if (pipe2(go_pipe, O_CLOEXEC) != 0) return ErrnoStatus(errno, "pipe2");
  UniqueFd go_wr(go_pipe[1]);
  absl::StatusOr<UniqueFd> go_rd = AboveStdio(UniqueFd(go_pipe[0]), "a pipe");
  if (!go_rd.ok()) return go_rd.status();

  // The report pipe's write end stays open up to execve (CLOEXEC closes it
  // then), so EOF on the read end means "exec'd" or "died".
  std::vector<int> keep = keep_fds;
  keep.push_back(report_wr->get());
  keep.push_back(go_rd->get());
  std::sort(keep.begin(), keep.end());
  keep.erase(std::unique(keep.begin(), keep.end()), keep.end());
  rlimit nofile{};
  int max_fd = 65535;
  if (getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur != RLIM_INFINITY) {
    max_fd = static_cast<int>(std::min<rlim_t>(nofile.rlim_cur, 1 << 20));
  }
  const char* const program_path = program->c_str();
  const int wr = report_wr->get();

  const pid_t middle = fork();
  if (middle < 0) return ErrnoStatus(errno, "fork");
  if (middle == 0) {
    // The middle child: a new session, then the grandchild, then gone, so
    // the grandchild is re-parented away from the caller. The caller's pipe
    // ends go first: a grandchild holding the go pipe's write end would
    // wait forever for a caller that died.
    close(report_rd.get());
    close(go_wr.get());
    if (setsid() < 0) ChildFail(wr, Stage::kSetsid, errno);
    const pid_t grandchild = fork();
    if (grandchild < 0) ChildFail(wr, Stage::kFork, errno);
    if (grandchild > 0) _exit(0);

    // The grandchild: announce the pid, wait for the caller to record the
    // start time, then become the program.
    ChildReport(wr, Stage::kPid, 0);
    char go = 0;
    ssize_t n;
    do {
      n = read(go_rd->get(), &go, 1);
    } while (n < 0 && errno == EINTR);
    if (n != 1) _exit(127);  // the caller gave up (or died): do not run unrecorded

    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    struct sigaction dfl {};
    dfl.sa_handler = SIG_DFL;
    for (int sig = 1; sig < NSIG; ++sig) sigaction(sig, &dfl, nullptr);  // errors: SIGKILL etc.

    if (dup2(null_fd->get(), STDIN_FILENO) < 0 || dup2(log->get(), STDOUT_FILENO) < 0 ||
        dup2(log->get(), STDERR_FILENO) < 0) {
      ChildFail(wr, Stage::kSetup, errno);
    }
    for (int fd : keep_fds) {
      const int flags = fcntl(fd, F_GETFD);
      if (flags < 0 || fcntl(fd, F_SETFD, flags & ~FD_CLOEXEC) < 0) {
        ChildFail(wr, Stage::kSetup, errno);
      }
    }
    CloseAllBut(keep.data(), keep.size(), max_fd);
    execve(program_path, args.data(), envp);
    ChildFail(wr, Stage::kExec, errno);
  }

  // The caller: reap the middle child (it exits at once), then follow the
  // grandchild through the report pipe.
  report_wr->reset();
  go_rd->reset();
  int middle_status = 0;
  while (waitpid(middle, &middle_status, 0) < 0 && errno == EINTR) {
  }
  auto read_report = [&](Report* r) -> bool {
    size_t got = 0;
    while (got < sizeof(*r)) {
      const ssize_t n = read(report_rd.get(), reinterpret_cast<char*>(r) + got, sizeof(*r) - got);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return false;
      got += static_cast<size_t>(n);
    }
    return true;
  };
  auto failure = [&](const Report& r) -> absl::Status {
    const char* what = r.stage == Stage::kSetsid  ? "setsid"
                       : r.stage == Stage::kFork  ? "fork"
                       : r.stage == Stage::kSetup ? "setting up stdio/fds"
                                                  : "exec";
    const absl::Status s = ErrnoStatus(r.err, absl::StrFormat("starting %s: %s", argv[0], what));
    return s;
  };
  Report r{};
  if (!read_report(&r)) {
    return absl::InternalError(absl::StrFormat(
        "starting %s: the launching child died without a word (status %d)", argv[0],
        middle_status));
  }
  if (r.stage != Stage::kPid) return failure(r);
  ProcessId id;
  id.pid = r.pid;
  // The grandchild waits for us, so its /proc entry is there to read.
  absl::StatusOr<uint64_t> start = ProcessStartTime(id.pid);
  if (!start.ok()) {
    return absl::InternalError(absl::StrFormat("starting %s: pid %d vanished before exec: %s",
                                               argv[0], id.pid, start.status().message()));
  }
  id.start_time = *start;
  const char go = 1;
  if (write(go_wr.get(), &go, 1) != 1) return ErrnoStatus(errno, "starting " + argv[0]);
  go_wr.reset();
  if (read_report(&r)) return failure(r);  // anything after kPid is a failure
  return id;
}

absl::StatusOr<uint64_t> ProcessStartTime(pid_t pid) {
  if (pid <= 0) return absl::NotFoundError(absl::StrFormat("no process %d", pid));
  absl::StatusOr<std::vector<std::string>> fields = StatFields(pid);
  if (!fields.ok()) return fields.status();
  return StatNumber(*fields, 22);
}

bool ProcessAlive(const ProcessId& id) {
  if (id.pid <= 0) return false;
  absl::StatusOr<std::vector<std::string>> fields = StatFields(id.pid);
  if (!fields.ok()) return false;
  const std::string& state = (*fields)[Field(3)];
  if (state == "Z" || state == "X" || state == "x") return false;
  absl::StatusOr<uint64_t> start = StatNumber(*fields, 22);
  return start.ok() && *start == id.start_time;
}

void SignalProcess(const ProcessId& id, int signal) {
#ifdef SYS_pidfd_send_signal
  UniqueFd pidfd(PidfdOpen(id.pid));
  if (pidfd.valid()) {
    if (ProcessAlive(id)) (void)syscall(SYS_pidfd_send_signal, pidfd.get(), signal, nullptr, 0);
    return;
  }
#endif
  if (ProcessAlive(id)) (void)kill(id.pid, signal);
}

void KillProcess(const ProcessId& id) { SignalProcess(id, SIGKILL); }

bool WaitProcessGone(const ProcessId& id, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  UniqueFd pidfd(PidfdOpen(id.pid));
  // Opened after a possible reuse of the pid: the start time check below
  // makes sure the fd is for our process.
  if (!ProcessAlive(id)) return true;
  if (pidfd.valid()) {
    for (;;) {
      const absl::Duration left = deadline - absl::Now();
      const int ms = left <= absl::ZeroDuration()
                         ? 0
                         : static_cast<int>(std::min<int64_t>(
                               absl::ToInt64Milliseconds(left) + 1, INT32_MAX));
      pollfd p{pidfd.get(), POLLIN, 0};
      const int n = poll(&p, 1, ms);
      if (n > 0) break;  // it exited (a zombie until init reaps it, which is "gone")
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) break;  // fall back to the /proc check
      return !ProcessAlive(id);
    }
    // Readable means exited; ProcessAlive agrees once the state is Z or the
    // entry is gone, which is immediate after the exit notification.
    while (ProcessAlive(id)) {
      if (absl::Now() >= deadline) return false;
      absl::SleepFor(absl::Milliseconds(1));
    }
    return true;
  }
  while (ProcessAlive(id)) {
    if (absl::Now() >= deadline) return false;
    absl::SleepFor(absl::Milliseconds(10));
  }
  return true;
}

absl::StatusOr<ProcessUsage> ReadProcessUsage(pid_t pid) {
  ProcessUsage u;
  absl::StatusOr<std::vector<std::string>> fields = StatFields(pid);
  if (!fields.ok()) return fields.status();
  absl::StatusOr<uint64_t> utime = StatNumber(*fields, 14);
  if (!utime.ok()) return utime.status();
  absl::StatusOr<uint64_t> stime = StatNumber(*fields, 15);
  if (!stime.ok()) return stime.status();
  const long tck = sysconf(_SC_CLK_TCK);
  const uint64_t ticks = *utime + *stime;
  u.cpu_time_ns = tck > 0 ? ticks * (1000000000ull / static_cast<uint64_t>(tck)) : 0;

  const std::string path = absl::StrFormat("/proc/%d/smaps_rollup", pid);
  FILE* f = std::fopen(path.c_str(), "re");
  if (f == nullptr) return ErrnoStatus(errno, "reading " + path);
  char line[256];
  while (std::fgets(line, sizeof(line), f) != nullptr) {
    unsigned long long kb = 0;
    if (std::sscanf(line, "Rss: %llu kB", &kb) == 1) u.rss_bytes = kb << 10;
    if (std::sscanf(line, "Private_Clean: %llu kB", &kb) == 1) u.private_bytes += kb << 10;
    if (std::sscanf(line, "Private_Dirty: %llu kB", &kb) == 1) u.private_bytes += kb << 10;
  }
  std::fclose(f);
  return u;
}

std::string LogTail(const std::string& path, size_t max_bytes) {
  UniqueFd fd(open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid() || max_bytes == 0) return "";
  struct stat st;
  if (fstat(fd.get(), &st) != 0) return "";
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  const uint64_t from = size > max_bytes ? size - max_bytes : 0;
  std::string text(size - from, '\0');
  size_t got = 0;
  while (got < text.size()) {
    const ssize_t n = pread(fd.get(), text.data() + got, text.size() - got,
                            static_cast<off_t>(from + got));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    got += static_cast<size_t>(n);
  }
  text.resize(got);
  if (from > 0) {
    // Started inside a line: drop that partial line (unless it is all there is).
    const size_t nl = text.find('\n');
    if (nl != std::string::npos && nl + 1 < text.size()) text.erase(0, nl + 1);
  }
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r')) text.pop_back();
  return text;
}

absl::StatusOr<CapturedChild> SpawnCaptured(const std::vector<std::string>& argv) {
  int out_pipe[2], err_pipe[2];
  if (pipe2(out_pipe, O_CLOEXEC) != 0) return ErrnoStatus(errno, "pipe2");
  UniqueFd out_r(out_pipe[0]), out_w(out_pipe[1]);
  if (pipe2(err_pipe, O_CLOEXEC) != 0) return ErrnoStatus(errno, "pipe2");
  UniqueFd err_r(err_pipe[0]), err_w(err_pipe[1]);

  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&actions, out_w.get(), STDOUT_FILENO);
  posix_spawn_file_actions_adddup2(&actions, err_w.get(), STDERR_FILENO);
  posix_spawn_file_actions_addclosefrom_np(&actions, STDERR_FILENO + 1);
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  CapturedChild child;
  const int rc = posix_spawnp(&child.pid, args[0], &actions, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) return ErrnoStatus(rc, "starting " + argv[0]);
  child.out = std::move(out_r);
  child.err = std::move(err_r);
  return child;
}

Captured Collect(CapturedChild& child, absl::Duration timeout) {
  Captured c;
  const absl::Time deadline = absl::Now() + timeout;
  pollfd fds[2] = {{child.out.get(), POLLIN, 0}, {child.err.get(), POLLIN, 0}};
  std::string* sinks[2] = {&c.out, &c.err};
  int open_streams = 2;
  while (open_streams > 0) {
    const int64_t left_ms = absl::ToInt64Milliseconds(deadline - absl::Now());
    if (left_ms <= 0) {
      c.timed_out = true;
      kill(child.pid, SIGKILL);
      break;
    }
    const int n = poll(fds, 2, static_cast<int>(left_ms));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) break;
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || fds[i].revents == 0) continue;
      char buf[4096];
      const ssize_t got = read(fds[i].fd, buf, sizeof(buf));
      if (got > 0) {
        // Bounded: a runaway child must not grow the shim without limit.
        if (sinks[i]->size() < (1u << 20)) sinks[i]->append(buf, static_cast<size_t>(got));
      } else if (got == 0 || (errno != EINTR && errno != EAGAIN)) {
        fds[i].fd = -1;
        --open_streams;
      }
    }
  }
  int status = 0;
  pid_t w;
  do {
    w = waitpid(child.pid, &status, 0);
  } while (w < 0 && errno == EINTR);
  // ECHILD: SIGCHLD is ignored in this process, so the child was reaped for
  // us; the captured output still tells what happened.
  if (w == child.pid && WIFEXITED(status)) {
    c.exited = true;
    c.exit_status = WEXITSTATUS(status);
  }
  return c;
}

absl::StatusOr<Captured> RunCaptured(const std::vector<std::string>& argv,
                                     absl::Duration timeout) {
  absl::StatusOr<CapturedChild> child = SpawnCaptured(argv);
  if (!child.ok()) return child.status();
  return Collect(*child, timeout);
}

}  // namespace flint::shim
