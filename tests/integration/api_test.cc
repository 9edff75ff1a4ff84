// The per-VM gRPC API end to end: the real flint binary with --api-socket on
// the test guest's idle program (it halts forever, deaf to the power button)
// or its acpi-shutdown program (powers off on it), driven by flintctl.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <string>
#include <vector>

#include "tests/support/subprocess.h"
#include "vmm/layout.h"

namespace flint {
namespace {

const std::string kFlintctl = std::string(FLINT_BUILD_ROOT) + "/agent-api/flintctl";

// Starts a program with stdout on a pipe (returned in *out_fd) and stderr to
// /dev/null; returns its pid.
pid_t Spawn(const std::vector<std::string>& argv, int* out_fd) {
  int p[2];
  if (pipe2(p, O_CLOEXEC) != 0) return -1;
  const pid_t pid = fork();
  if (pid == 0) {
    dup2(p[1], STDOUT_FILENO);
    const int null_fd = open("/dev/null", O_RDWR);
    dup2(null_fd, STDERR_FILENO);
    dup2(null_fd, STDIN_FILENO);
    std::vector<char*> args;
    for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    execv(args[0], args.data());
    _exit(127);
  }
  close(p[1]);
  *out_fd = p[0];
  return pid;
}

// One line from `fd` (without the newline); empty at EOF.
std::string ReadLine(int fd) {
  std::string line;
  char c;
  while (read(fd, &c, 1) == 1) {
    if (c == '\n') return line;
    line += c;
  }
  return line;
}

testing::ProcessResult Ctl(const std::string& socket, const std::vector<std::string>& cmd) {
  std::vector<std::string> argv = {kFlintctl, "--socket", socket};
  argv.insert(argv.end(), cmd.begin(), cmd.end());
  return testing::RunProcess(argv, "", 20000);
}

bool WaitForSocket(const std::string& path, pid_t flint) {
  for (int i = 0; i < 1000; ++i) {
    struct stat st;
    if (lstat(path.c_str(), &st) == 0 && S_ISSOCK(st.st_mode)) return true;
    if (waitpid(flint, nullptr, WNOHANG) == flint) return false;
    usleep(10000);
  }
  return false;
}

class ApiTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string why;
    if (!testing::KvmAvailable(&why)) GTEST_SKIP() << why;
    socket_ = std::string(FLINT_BUILD_ROOT) + "/api-test-" + std::to_string(getpid()) + ".sock";
    flint_ = Spawn({FLINT_BINARY, "run", "--api-socket", socket_, "--cmdline",
                    std::string("flint.prog=") + Program()},
                   &flint_out_);
    ASSERT_GT(flint_, 0);
    ASSERT_TRUE(WaitForSocket(socket_, flint_)) << "flint did not create " << socket_;
  }
  void TearDown() override {
    if (flint_ > 0) {
      kill(flint_, SIGKILL);
      waitpid(flint_, nullptr, 0);
    }
    if (flint_out_ >= 0) close(flint_out_);
    unlink(socket_.c_str());
  }
  // The guest program flint boots.
  virtual const char* Program() const { return "idle"; }
  // Waits for flint to exit; returns its exit status (-1: killed).
  int WaitFlint() {
    int status = 0;
    const pid_t r = waitpid(flint_, &status, 0);
    flint_ = -1;
    if (r < 0 || !WIFEXITED(status)) return -1;
    return WEXITSTATUS(status);
  }

  std::string socket_;
  pid_t flint_ = -1;
  int flint_out_ = -1;
};

TEST_F(ApiTest, InfoPauseResumeStatsEventsAndStop) {
  // A watcher first: its first line is the state at subscription time, so
  // everything after it is seen.
  int watch_out = -1;
  const pid_t watcher = Spawn({kFlintctl, "--socket", socket_, "watch"}, &watch_out);
  ASSERT_GT(watcher, 0);
  EXPECT_EQ(ReadLine(watch_out), "state VM_STATE_RUNNING");

  testing::ProcessResult info = Ctl(socket_, {"info"});
  ASSERT_EQ(info.exit_status, 0) << testing::Describe(info);
  EXPECT_NE(info.out.find("state VM_STATE_RUNNING\n"), std::string::npos) << info.out;
  EXPECT_NE(info.out.find("vcpus 1\n"), std::string::npos) << info.out;
  EXPECT_NE(info.out.find("memory 268435456\n"), std::string::npos) << info.out;
  EXPECT_NE(info.out.find("pid " + std::to_string(flint_) + "\n"), std::string::npos) << info.out;

  ASSERT_EQ(Ctl(socket_, {"pause"}).exit_status, 0);
  info = Ctl(socket_, {"info"});
  EXPECT_NE(info.out.find("state VM_STATE_PAUSED\n"), std::string::npos) << info.out;
  // A second pause is refused with the server's message.
  testing::ProcessResult again = Ctl(socket_, {"pause"});
  EXPECT_EQ(again.exit_status, 1);
  EXPECT_NE(again.err.find("already paused"), std::string::npos) << testing::Describe(again);
  ASSERT_EQ(Ctl(socket_, {"resume"}).exit_status, 0);
  info = Ctl(socket_, {"info"});
  EXPECT_NE(info.out.find("state VM_STATE_RUNNING\n"), std::string::npos) << info.out;

  // The idle guest printed "idle" through the UART: port I/O exits counted.
  testing::ProcessResult stats = Ctl(socket_, {"stats"});
  ASSERT_EQ(stats.exit_status, 0) << testing::Describe(stats);
  EXPECT_EQ(stats.out.find("total_exits 0\n"), std::string::npos) << stats.out;
  EXPECT_NE(stats.out.find("IO "), std::string::npos) << stats.out;

  testing::ProcessResult swap = Ctl(socket_, {"swap-nic", "0", "passt"});
  EXPECT_EQ(swap.exit_status, 1);
  EXPECT_NE(swap.err.find("NIC 0"), std::string::npos) << swap.err;

  ASSERT_EQ(Ctl(socket_, {"stop"}).exit_status, 0);
  EXPECT_EQ(WaitFlint(), 130);

  EXPECT_EQ(ReadLine(watch_out), "paused");
  EXPECT_EQ(ReadLine(watch_out), "resumed");
  EXPECT_EQ(ReadLine(watch_out), "stopped signal: stopped through the API exit_status=130");
  EXPECT_EQ(ReadLine(watch_out), "");  // the stream ended with flint
  int status = 0;
  ASSERT_EQ(waitpid(watcher, &status, 0), watcher);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  close(watch_out);
  EXPECT_NE(access(socket_.c_str(), F_OK), 0) << "socket left behind";
}

TEST_F(ApiTest, ResetBootsAFreshVm) {
  int watch_out = -1;
  const pid_t watcher = Spawn({kFlintctl, "--socket", socket_, "watch"}, &watch_out);
  ASSERT_GT(watcher, 0);
  EXPECT_EQ(ReadLine(watch_out), "state VM_STATE_RUNNING");
  ASSERT_EQ(Ctl(socket_, {"reset"}).exit_status, 0);
  EXPECT_EQ(ReadLine(watch_out), "reset reset: reset through the API");
  EXPECT_EQ(ReadLine(watch_out), "started");
  // The guest printed "idle" once per boot.
  EXPECT_EQ(ReadLine(flint_out_), "idle");
  EXPECT_EQ(ReadLine(flint_out_), "idle");
  ASSERT_EQ(Ctl(socket_, {"stop"}).exit_status, 0);
  EXPECT_EQ(WaitFlint(), 130);
  waitpid(watcher, nullptr, 0);
  close(watch_out);
}

// The idle guest never looks at the power button: Shutdown presses it, and
// after the timeout flint stops the VM as Stop does, saying it was forced.
TEST_F(ApiTest, ShutdownForcesAGuestThatIgnoresThePowerButton) {
  int watch_out = -1;
  const pid_t watcher = Spawn({kFlintctl, "--socket", socket_, "watch"}, &watch_out);
  ASSERT_GT(watcher, 0);
  EXPECT_EQ(ReadLine(watch_out), "state VM_STATE_RUNNING");
  EXPECT_EQ(ReadLine(flint_out_), "idle");
  for (const char* bad : {"x", "-1", "4294967296"}) {
    testing::ProcessResult usage = Ctl(socket_, {"shutdown", "--timeout", bad});
    EXPECT_EQ(usage.exit_status, 2) << bad << ": " << testing::Describe(usage);
  }
  testing::ProcessResult shutdown = Ctl(socket_, {"shutdown", "--timeout", "1"});
  ASSERT_EQ(shutdown.exit_status, 0) << testing::Describe(shutdown);
  EXPECT_EQ(WaitFlint(), 130);
  EXPECT_EQ(ReadLine(watch_out),
            "stopped signal: forced stop: the guest did not power off within 1s of the ACPI "
            "power button (Shutdown) exit_status=130");
  EXPECT_EQ(ReadLine(watch_out), "");
  waitpid(watcher, nullptr, 0);
  close(watch_out);
}

class AcpiShutdownTest : public ApiTest {
 protected:
  const char* Program() const override { return "acpi-shutdown"; }
};

// A guest that handles the power button: it finds the GED in the DSDT, takes
// its interrupt through the IOAPIC, reads the event register and powers off
// through ACPI S5, well before the (long) timeout.
TEST_F(AcpiShutdownTest, ShutdownPressesThePowerButtonAndTheGuestPowersOff) {
  int watch_out = -1;
  const pid_t watcher = Spawn({kFlintctl, "--socket", socket_, "watch"}, &watch_out);
  ASSERT_GT(watcher, 0);
  EXPECT_EQ(ReadLine(watch_out), "state VM_STATE_RUNNING");
  char ready[96];
  std::snprintf(ready, sizeof ready, "acpi-shutdown: ready gsi=%u level high port=0x%x",
                layout::kGedGsi, layout::kPortGed);
  ASSERT_EQ(ReadLine(flint_out_), ready);
  testing::ProcessResult shutdown = Ctl(socket_, {"shutdown", "--timeout", "600"});
  ASSERT_EQ(shutdown.exit_status, 0) << testing::Describe(shutdown);
  EXPECT_EQ(ReadLine(flint_out_), "acpi-shutdown: interrupt events=0x1 then=0x0");
  EXPECT_EQ(ReadLine(flint_out_), "acpi-shutdown: power button pressed, powering off");
  EXPECT_EQ(WaitFlint(), 0);
  EXPECT_EQ(ReadLine(watch_out),
            "stopped power-off: guest entered ACPI S5 (power off) exit_status=0");
  EXPECT_EQ(ReadLine(watch_out), "");
  waitpid(watcher, nullptr, 0);
  close(watch_out);
}

// The socket is 0600; SO_PEERCRED is the second wall. Open the mode up and
// connect as another uid: the connection is closed without an answer.
TEST_F(ApiTest, PeerOfAnotherUidIsRefused) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root to connect as another uid";
  ASSERT_EQ(chmod(socket_.c_str(), 0666), 0);
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    if (setuid(65534) != 0) _exit(3);
    const int null_fd = open("/dev/null", O_RDWR);
    dup2(null_fd, STDOUT_FILENO);
    dup2(null_fd, STDERR_FILENO);
    execl(kFlintctl.c_str(), kFlintctl.c_str(), "--socket", socket_.c_str(), "pause",
          static_cast<char*>(nullptr));
    _exit(127);
  }
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 1) << "3: setuid failed, 127: exec failed, 0: it was obeyed";
  // Not paused, and flint's own user is still served.
  testing::ProcessResult info = Ctl(socket_, {"info"});
  EXPECT_NE(info.out.find("state VM_STATE_RUNNING\n"), std::string::npos)
      << testing::Describe(info);
  ASSERT_EQ(Ctl(socket_, {"stop"}).exit_status, 0);
  EXPECT_EQ(WaitFlint(), 130);
}

}  // namespace
}  // namespace flint
