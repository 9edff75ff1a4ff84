#include "vmm/control_socket.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <vector>

#include "absl/strings/str_format.h"
#include "vmm/kvm/kvm.h"

namespace flint {
namespace {

absl::StatusOr<sockaddr_un> SocketAddress(const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof(addr.sun_path)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "--control-socket %s: a socket path needs 1..%u characters", path,
        sizeof(addr.sun_path) - 1));
  }
  std::memcpy(addr.sun_path, path.data(), path.size());
  return addr;
}

// True when `path` is a socket nobody listens on any more.
bool StaleSocket(const sockaddr_un& addr) {
  UniqueFd probe(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!probe.valid()) return false;
  return connect(probe.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) != 0 &&
         errno == ECONNREFUSED;
}

bool PeerAllowed(int fd, std::string* who) {
  ucred cred{};
  socklen_t len = sizeof(cred);
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
    *who = "unknown peer";
    return false;
  }
  *who = absl::StrFormat("pid %d uid %u", cred.pid, cred.uid);
  return cred.uid == geteuid() || cred.uid == 0;
}

void WriteAll(int fd, const std::string& s) {
  size_t off = 0;
  while (off < s.size()) {
    ssize_t n = send(fd, s.data() + off, s.size() - off, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;  // the client went away or stopped reading (send timeout)
    off += static_cast<size_t>(n);
  }
}

}  // namespace

absl::StatusOr<std::unique_ptr<ControlServer>> ControlServer::Start(const std::string& path,
                                                                    Handler handler) {
  absl::StatusOr<sockaddr_un> addr = SocketAddress(path);
  if (!addr.ok()) return addr.status();
  struct stat st;
  if (lstat(path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) {
      return absl::AlreadyExistsError(absl::StrFormat(
          "--control-socket %s: the path exists and is not a socket", path));
    }
    if (!StaleSocket(*addr)) {
      return absl::AlreadyExistsError(absl::StrFormat(
          "--control-socket %s: another process is serving that socket", path));
    }
    unlink(path.c_str());
  }
  UniqueFd fd(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return ErrnoStatus(errno, "socket for --control-socket");
  // Created 0600 from the start: no window in which others could connect.
  const mode_t old_umask = umask(0177);
  const int rc = bind(fd.get(), reinterpret_cast<const sockaddr*>(&*addr), sizeof(*addr));
  const int bind_errno = errno;
  umask(old_umask);
  if (rc != 0) return ErrnoStatus(bind_errno, "binding --control-socket " + path);
  if (listen(fd.get(), kMaxClients) != 0) return ErrnoStatus(errno, "listen on " + path);
  UniqueFd stop(eventfd(0, EFD_CLOEXEC));
  if (!stop.valid()) return ErrnoStatus(errno, "eventfd");
  std::unique_ptr<ControlServer> server(
      new ControlServer(path, std::move(fd), std::move(stop), std::move(handler)));
  server->thread_ = std::thread([s = server.get()] { s->Serve(); });
  pthread_setname_np(server->thread_.native_handle(), "flint-control");
  return server;
}

ControlServer::~ControlServer() {
  const uint64_t one = 1;
  (void)!write(stop_fd_.get(), &one, sizeof(one));
  if (thread_.joinable()) thread_.join();
  unlink(path_.c_str());
}

void ControlServer::Serve() {
  struct Client {
    UniqueFd fd;
    std::string buf;
  };
  std::vector<Client> clients;
  for (;;) {
    std::vector<pollfd> fds = {{stop_fd_.get(), POLLIN, 0}, {listen_fd_.get(), POLLIN, 0}};
    for (const Client& c : clients) fds.push_back({c.fd.get(), POLLIN, 0});
    if (poll(fds.data(), fds.size(), -1) < 0) {
      if (errno == EINTR) continue;
      std::fprintf(stderr, "flint: control socket: poll failed: %s\n", strerror(errno));
      return;
    }
    if (fds[0].revents) return;
    // Clients first (indices stay valid), then new connections.
    for (size_t i = clients.size(); i-- > 0;) {
      const short ev = fds[2 + i].revents;
      if (ev == 0) continue;
      Client& c = clients[i];
      char chunk[1024];
      const ssize_t n = read(c.fd.get(), chunk, sizeof(chunk));
      if (n <= 0) {
        if (n < 0 && errno == EINTR) continue;
        clients.erase(clients.begin() + static_cast<long>(i));
        continue;
      }
      c.buf.append(chunk, static_cast<size_t>(n));
      bool drop = false;
      for (size_t nl; !drop && (nl = c.buf.find('\n')) != std::string::npos;) {
        std::string line = c.buf.substr(0, nl);
        c.buf.erase(0, nl + 1);
        if (!line.empty() && line.back() == '\r') line.pop_back();
        if (line.empty()) continue;
        WriteAll(c.fd.get(), handler_(line));
      }
      if (c.buf.size() > kMaxLine) {
        WriteAll(c.fd.get(), absl::StrFormat("error: request longer than %u bytes\n", kMaxLine));
        drop = true;
      }
      if (drop) clients.erase(clients.begin() + static_cast<long>(i));
    }
    if (fds[1].revents & POLLIN) {
      UniqueFd conn(accept4(listen_fd_.get(), nullptr, nullptr, SOCK_CLOEXEC));
      if (!conn.valid()) continue;
      std::string who;
      if (!PeerAllowed(conn.get(), &who)) {
        std::fprintf(stderr, "flint: control socket: refused a connection from %s (not uid %u)\n",
                     who.c_str(), geteuid());
        continue;
      }
      if (clients.size() >= static_cast<size_t>(kMaxClients)) {
        WriteAll(conn.get(), "error: too many control connections\n");
        continue;
      }
      // A client that stops reading must not stall the server for long.
      timeval tv{1, 0};
      setsockopt(conn.get(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
      clients.push_back(Client{std::move(conn), {}});
    }
  }
}

}  // namespace flint
