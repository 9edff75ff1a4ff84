#include "vmm/control_socket.h"

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cstring>
#include <string>

#include "vmm/kvm/unique_fd.h"

namespace flint {
namespace {

std::string TempPath(const char* name) {
  return std::string(FLINT_BUILD_ROOT) + "/" + name + "-" + std::to_string(getpid()) + ".sock";
}

UniqueFd Connect(const std::string& path) {
  UniqueFd fd(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.data(), path.size());
  if (connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) return UniqueFd();
  return fd;
}

// Sends `req` and reads until the reply's final "ok\n" / "error: ...\n" line.
std::string Ask(int fd, const std::string& req) {
  (void)!send(fd, req.data(), req.size(), MSG_NOSIGNAL);
  std::string got;
  char buf[512];
  while (got.find("ok\n") == std::string::npos && got.find("error:") == std::string::npos) {
    ssize_t n = read(fd, buf, sizeof(buf));
    if (n <= 0) break;
    got.append(buf, static_cast<size_t>(n));
  }
  return got;
}

ControlServer::Handler Echo() {
  return [](std::string_view req) { return "said " + std::string(req) + "\nok\n"; };
}

TEST(ControlServer, AnswersEachLineInOrderOnOneConnection) {
  const std::string path = TempPath("ctl-order");
  auto server = ControlServer::Start(path, Echo());
  ASSERT_TRUE(server.ok()) << server.status();
  UniqueFd c = Connect(path);
  ASSERT_TRUE(c.valid());
  EXPECT_EQ(Ask(c.get(), "net-info\n"), "said net-info\nok\n");
  // Two requests in one write, one with CRLF: two replies, in order.
  std::string both = Ask(c.get(), "a 1\r\nb 2\n");
  while (both.find("said b 2") == std::string::npos) {
    char buf[128];
    ssize_t n = read(c.get(), buf, sizeof(buf));
    if (n <= 0) break;
    both.append(buf, static_cast<size_t>(n));
  }
  EXPECT_EQ(both, "said a 1\nok\nsaid b 2\nok\n");
}

TEST(ControlServer, SocketIsPrivateAndRemovedOnStop) {
  const std::string path = TempPath("ctl-mode");
  {
    auto server = ControlServer::Start(path, Echo());
    ASSERT_TRUE(server.ok()) << server.status();
    struct stat st;
    ASSERT_EQ(lstat(path.c_str(), &st), 0);
    EXPECT_TRUE(S_ISSOCK(st.st_mode));
    EXPECT_EQ(st.st_mode & 0777, 0600u);
  }
  EXPECT_NE(access(path.c_str(), F_OK), 0) << "socket left behind";
}

TEST(ControlServer, ReplacesAStaleSocketButNotALiveOneOrAFile) {
  const std::string path = TempPath("ctl-stale");
  {
    // A socket file nobody listens on, as a killed flint leaves it.
    UniqueFd s(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::memcpy(addr.sun_path, path.data(), path.size());
    ASSERT_EQ(bind(s.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  }
  auto server = ControlServer::Start(path, Echo());
  ASSERT_TRUE(server.ok()) << server.status();
  auto second = ControlServer::Start(path, Echo());
  ASSERT_FALSE(second.ok());
  EXPECT_NE(second.status().message().find("another process"), std::string::npos);
  server->reset();

  const std::string file = TempPath("ctl-file");
  FILE* f = fopen(file.c_str(), "w");
  ASSERT_NE(f, nullptr);
  fclose(f);
  auto on_file = ControlServer::Start(file, Echo());
  EXPECT_FALSE(on_file.ok());
  EXPECT_NE(on_file.status().message().find("not a socket"), std::string::npos);
  EXPECT_EQ(access(file.c_str(), F_OK), 0) << "an ordinary file must never be removed";
  unlink(file.c_str());
}

TEST(ControlServer, OverlongRequestIsRefusedAndTheServerGoesOn) {
  const std::string path = TempPath("ctl-long");
  auto server = ControlServer::Start(path, Echo());
  ASSERT_TRUE(server.ok());
  UniqueFd c = Connect(path);
  std::string reply = Ask(c.get(), std::string(ControlServer::kMaxLine + 100, 'x'));
  EXPECT_NE(reply.find("error: request longer than"), std::string::npos) << reply;
  UniqueFd d = Connect(path);
  EXPECT_EQ(Ask(d.get(), "again\n"), "said again\nok\n");
}

// Mode 0600 already keeps other users out; the peer-credential check is the
// second wall (a socket made reachable by mistake, a directory bind-mounted
// elsewhere). Open the mode up and connect as another uid.
TEST(ControlServer, PeerOfAnotherUidIsRefused) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root to connect as another uid";
  const std::string path = TempPath("ctl-uid");
  auto server = ControlServer::Start(path, Echo());
  ASSERT_TRUE(server.ok());
  ASSERT_EQ(chmod(path.c_str(), 0666), 0);
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    if (setuid(65534) != 0) _exit(3);
    UniqueFd c = Connect(path);
    if (!c.valid()) _exit(4);
    const std::string reply = Ask(c.get(), "net-info\n");
    _exit(reply.empty() ? 0 : 5);  // refused: closed without an answer
  }
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0) << "3: setuid failed, 4: connect failed, 5: it was answered";
  // The server still serves its own user.
  UniqueFd c = Connect(path);
  EXPECT_EQ(Ask(c.get(), "still\n"), "said still\nok\n");
}

TEST(ControlServer, PathTooLongIsAnError) {
  auto server = ControlServer::Start("/" + std::string(200, 'p'), Echo());
  ASSERT_FALSE(server.ok());
  EXPECT_NE(server.status().message().find("1..107 characters"), std::string::npos)
      << server.status();
}

}  // namespace
}  // namespace flint
