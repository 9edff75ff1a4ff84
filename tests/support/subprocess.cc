#include "tests/support/subprocess.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace flint::testing {
namespace {

int64_t NowMs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

}  // namespace

ProcessResult RunProcess(const std::vector<std::string>& argv, const std::string& stdin_data,
                         int timeout_ms, const std::string& stop_when) {
  ProcessResult res;
  int in[2], out[2], err[2];
  if (pipe2(in, O_CLOEXEC) || pipe2(out, O_CLOEXEC) || pipe2(err, O_CLOEXEC)) return res;
  pid_t pid = fork();
  if (pid == 0) {
    dup2(in[0], 0);
    dup2(out[1], 1);
    dup2(err[1], 2);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    execvp(args[0], args.data());
    dprintf(2, "exec %s: %s\n", args[0], strerror(errno));
    _exit(127);
  }
  close(in[0]);
  close(out[1]);
  close(err[1]);
  if (!stdin_data.empty()) (void)!write(in[1], stdin_data.data(), stdin_data.size());
  close(in[1]);
  int64_t deadline = NowMs() + timeout_ms;
  bool out_open = true, err_open = true, stop_sent = false;
  char buf[4096];
  while (out_open || err_open) {
    int64_t left = deadline - NowMs();
    if (left <= 0) {
      res.timed_out = true;
      kill(pid, SIGKILL);
      break;
    }
    pollfd fds[2] = {{out_open ? out[0] : -1, POLLIN, 0}, {err_open ? err[0] : -1, POLLIN, 0}};
    int n = poll(fds, 2, static_cast<int>(left));
    if (n < 0 && errno == EINTR) continue;
    for (int i = 0; i < 2; ++i) {
      if (!(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      ssize_t r = read(fds[i].fd, buf, sizeof(buf));
      if (r <= 0) {
        (i == 0 ? out_open : err_open) = false;
      } else {
        (i == 0 ? res.out : res.err).append(buf, static_cast<size_t>(r));
      }
      if (!stop_when.empty() && !stop_sent && res.out.find(stop_when) != std::string::npos) {
        kill(pid, SIGTERM);  // seen what the test waits for: stop, keep draining
        stop_sent = true;
        res.stopped = true;
      }
    }
  }
  close(out[0]);
  close(err[0]);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (WIFEXITED(status)) {
    res.exited = true;
    res.exit_status = WEXITSTATUS(status);
  }
  return res;
}

bool KvmAvailable(std::string* why) {
  int fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
  if (fd < 0) {
    *why = std::string("/dev/kvm cannot be opened (") + strerror(errno) +
           "): this host has no usable KVM, so the VM tests cannot run here";
    return false;
  }
  close(fd);
  return true;
}

std::string Describe(const ProcessResult& r) {
  return "exit status " + std::to_string(r.exit_status) + (r.timed_out ? " (timed out)" : "") +
         (r.exited ? "" : " (killed by a signal)") + "\n--- stdout\n" + r.out + "--- stderr\n" +
         r.err;
}

}  // namespace flint::testing
