// k8s-shim/process.h: detached spawning, pid + start time identity, usage
// and log tails, on real processes.
#include "k8s-shim/process.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/str_split.h"
#include "absl/time/clock.h"

namespace flint::shim {
namespace {

class ShimProcessTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/shim-process-test-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override {
    for (const ProcessId& id : spawned_) {
      if (ProcessAlive(id)) kill(id.pid, SIGKILL);
      WaitProcessGone(id, absl::Seconds(10));
    }
    std::string cmd = "rm -rf '" + dir_ + "'";
    (void)!system(cmd.c_str());
  }
  ProcessId Spawn(const std::vector<std::string>& argv, const std::vector<int>& keep = {}) {
    absl::StatusOr<ProcessId> id = SpawnDetached(argv, Log(), keep);
    EXPECT_TRUE(id.ok()) << id.status();
    if (!id.ok()) return {};
    spawned_.push_back(*id);
    return *id;
  }
  std::string Log() const { return dir_ + "/log"; }
  std::string ReadLog() const {
    std::ifstream in(Log());
    return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  }
  // The program's output is in the log once it is gone.
  std::string RunToEnd(const std::vector<std::string>& argv, const std::vector<int>& keep = {}) {
    ProcessId id = Spawn(argv, keep);
    EXPECT_TRUE(WaitProcessGone(id, absl::Seconds(30)));
    return ReadLog();
  }

  std::string dir_;
  std::vector<ProcessId> spawned_;
};

TEST_F(ShimProcessTest, SpawnedProcessIsDetachedAndNotOurChild) {
  const ProcessId id = Spawn({"sleep", "60"});  // found through PATH
  ASSERT_GT(id.pid, 0);
  EXPECT_TRUE(ProcessAlive(id));
  // Not ours to reap: the middle child was reaped, the program re-parented.
  EXPECT_EQ(waitpid(id.pid, nullptr, WNOHANG), -1);
  EXPECT_EQ(errno, ECHILD);
  // Its own session, not ours; and it is sleep now (the exec happened).
  EXPECT_NE(getsid(id.pid), getsid(0));
  std::ifstream comm("/proc/" + std::to_string(id.pid) + "/comm");
  std::string name;
  std::getline(comm, name);
  EXPECT_EQ(name, "sleep");
  // stdin is /dev/null.
  char target[256] = {};
  const std::string fd0 = "/proc/" + std::to_string(id.pid) + "/fd/0";
  ASSERT_GT(readlink(fd0.c_str(), target, sizeof(target) - 1), 0);
  EXPECT_STREQ(target, "/dev/null");

  EXPECT_FALSE(WaitProcessGone(id, absl::Milliseconds(50)));  // it sleeps on
  ASSERT_EQ(kill(id.pid, SIGTERM), 0);
  EXPECT_TRUE(WaitProcessGone(id, absl::Seconds(30)));
  EXPECT_FALSE(ProcessAlive(id));
}

TEST_F(ShimProcessTest, ExecFailureIsAnErrorNamingTheProgram) {
  absl::StatusOr<ProcessId> missing = SpawnDetached({dir_ + "/no-such-program"}, Log());
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find(dir_ + "/no-such-program"), std::string::npos)
      << missing.status();
  EXPECT_NE(missing.status().message().find("No such file"), std::string::npos)
      << missing.status();

  // A file without the execute bit: execve's EACCES comes back.
  const std::string plain = dir_ + "/not-executable";
  std::ofstream(plain) << "#!/bin/sh\n";
  absl::StatusOr<ProcessId> denied = SpawnDetached({plain}, Log());
  ASSERT_FALSE(denied.ok());
  EXPECT_EQ(denied.status().code(), absl::StatusCode::kPermissionDenied) << denied.status();
  EXPECT_NE(denied.status().message().find("not-executable"), std::string::npos);

  absl::StatusOr<ProcessId> unknown = SpawnDetached({"flint-no-such-command-anywhere"}, Log());
  ASSERT_FALSE(unknown.ok());
  EXPECT_EQ(unknown.status().code(), absl::StatusCode::kNotFound) << unknown.status();
  EXPECT_NE(unknown.status().message().find("flint-no-such-command-anywhere"), std::string::npos);

  // A log that cannot be opened is the caller's error, before any fork.
  absl::StatusOr<ProcessId> nolog = SpawnDetached({"true"}, dir_ + "/missing-dir/log");
  ASSERT_FALSE(nolog.ok());
  EXPECT_NE(nolog.status().message().find("missing-dir/log"), std::string::npos);
}

TEST_F(ShimProcessTest, OutputIsAppendedToTheLog) {
  RunToEnd({"/bin/sh", "-c", "echo out; echo err >&2"});
  RunToEnd({"/bin/sh", "-c", "echo again"});
  EXPECT_EQ(ReadLog(), "out\nerr\nagain\n");
}

TEST_F(ShimProcessTest, KeepFdsAreInheritedAndEverythingElseIsClosed) {
  int kept[2];
  ASSERT_EQ(pipe2(kept, O_CLOEXEC), 0);  // CLOEXEC: SpawnDetached must clear it
  // Not CLOEXEC and not kept: a leak unless SpawnDetached closes it.
  const int leaked = open("/dev/null", O_RDONLY);
  ASSERT_GE(leaked, 3);
  const std::string script = "echo hello >&" + std::to_string(kept[1]) +
                             "; for f in /proc/$$/fd/*; do echo ${f##*/}; done";
  const std::string log = RunToEnd({"/bin/sh", "-c", script}, {kept[1]});
  close(kept[1]);
  char buf[16] = {};
  ASSERT_EQ(read(kept[0], buf, sizeof(buf)), 6);
  EXPECT_STREQ(buf, "hello\n");
  close(kept[0]);

  std::vector<std::string> fds = absl::StrSplit(log, '\n', absl::SkipEmpty());
  EXPECT_NE(std::find(fds.begin(), fds.end(), std::to_string(kept[1])), fds.end()) << log;
  EXPECT_EQ(std::find(fds.begin(), fds.end(), std::to_string(leaked)), fds.end()) << log;
  for (const std::string& fd : fds) {
    // 0..2, the kept fd, and whatever the glob itself holds open.
    if (fd == "0" || fd == "1" || fd == "2" || fd == std::to_string(kept[1])) continue;
    EXPECT_GE(std::stoi(fd), 3) << log;
    EXPECT_NE(std::stoi(fd), leaked) << log;
  }
  close(leaked);

  absl::StatusOr<ProcessId> bad = SpawnDetached({"true"}, Log(), {1});
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument) << bad.status();
  absl::StatusOr<ProcessId> closed = SpawnDetached({"true"}, Log(), {kept[0]});
  EXPECT_EQ(closed.status().code(), absl::StatusCode::kInvalidArgument) << closed.status();
}

TEST_F(ShimProcessTest, StartTimeSurvivesACommandNameWithParenthesesAndSpaces) {
  // /proc/PID/stat's comm is the exec'd file's name: "x) (y z" tries to end
  // the field early and shift every field after it.
  const std::string odd = dir_ + "/x) (y z";
  ASSERT_EQ(symlink("/bin/sleep", odd.c_str()), 0);
  const ProcessId id = Spawn({odd, "60"});
  std::ifstream comm("/proc/" + std::to_string(id.pid) + "/comm");
  std::string name;
  std::getline(comm, name);
  ASSERT_EQ(name, "x) (y z");
  // SpawnDetached read the start time before the exec, under the test's
  // own name; the parse after it must agree.
  absl::StatusOr<uint64_t> start = ProcessStartTime(id.pid);
  ASSERT_TRUE(start.ok()) << start.status();
  EXPECT_EQ(*start, id.start_time);
  EXPECT_TRUE(ProcessAlive(id));
  absl::StatusOr<uint64_t> mine = ProcessStartTime(getpid());
  ASSERT_TRUE(mine.ok());
  EXPECT_GE(*start, *mine);

  // The same pid with another start time is another process.
  EXPECT_FALSE(ProcessAlive({id.pid, id.start_time + 1}));
  EXPECT_TRUE(WaitProcessGone({id.pid, id.start_time + 1}, absl::ZeroDuration()));
}

TEST_F(ShimProcessTest, MissingProcessesAndZombiesAreNotAlive) {
  EXPECT_EQ(ProcessStartTime(0).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(ProcessStartTime(-5).status().code(), absl::StatusCode::kNotFound);
  // A child we fork and do not reap yet: a zombie still has /proc/PID/stat.
  int go[2];
  ASSERT_EQ(pipe(go), 0);
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    char c;
    (void)!read(go[0], &c, 1);
    _exit(0);
  }
  absl::StatusOr<uint64_t> start = ProcessStartTime(child);
  ASSERT_TRUE(start.ok()) << start.status();
  const ProcessId id{child, *start};
  EXPECT_TRUE(ProcessAlive(id));
  ASSERT_EQ(write(go[1], "x", 1), 1);
  siginfo_t info{};
  ASSERT_EQ(waitid(P_PID, child, &info, WEXITED | WNOWAIT), 0);  // a zombie now, not reaped
  EXPECT_TRUE(ProcessStartTime(child).ok());
  EXPECT_FALSE(ProcessAlive(id));
  EXPECT_TRUE(WaitProcessGone(id, absl::ZeroDuration()));
  ASSERT_EQ(waitpid(child, nullptr, 0), child);
  EXPECT_EQ(ProcessStartTime(child).status().code(), absl::StatusCode::kNotFound);
  EXPECT_FALSE(ProcessAlive(id));
  close(go[0]);
  close(go[1]);
}

TEST_F(ShimProcessTest, UsageOfALiveProcess) {
  // Burn CPU until the kernel has charged at least one tick.
  const clock_t start = clock();
  volatile uint64_t x = 0;
  while (clock() - start < CLOCKS_PER_SEC / 20) x = x + 1;
  absl::StatusOr<ProcessUsage> u = ReadProcessUsage(getpid());
  ASSERT_TRUE(u.ok()) << u.status();
  EXPECT_GT(u->rss_bytes, 0u);
  EXPECT_GT(u->private_bytes, 0u);
  EXPECT_LE(u->private_bytes, u->rss_bytes);
  EXPECT_GT(u->cpu_time_ns, 0u);
  EXPECT_EQ(ReadProcessUsage(0).status().code(), absl::StatusCode::kNotFound);
}

TEST_F(ShimProcessTest, LogTailKeepsWholeLines) {
  const std::string path = dir_ + "/tail.log";
  {
    std::ofstream out(path);
    out << "first line\nsecond line\nthird line\n";
  }
  EXPECT_EQ(LogTail(path, 1000), "first line\nsecond line\nthird line");
  // 15 bytes start inside "second line": that partial line is dropped.
  EXPECT_EQ(LogTail(path, 15), "third line");
  EXPECT_EQ(LogTail(dir_ + "/absent.log"), "");
}

}  // namespace
}  // namespace flint::shim
