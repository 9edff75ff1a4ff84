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
#include "vmm/unix_socket.h"

namespace flint {
namespace {

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
  absl::StatusOr<UniqueFd> fd = ListenPrivateUnixSocket(path, "--control-socket", kMaxClients);
  if (!fd.ok()) return fd.status();
  UniqueFd stop(eventfd(0, EFD_CLOEXEC));
  if (!stop.valid()) return ErrnoStatus(errno, "eventfd");
  std::unique_ptr<ControlServer> server(
      new ControlServer(path, std::move(*fd), std::move(stop), std::move(handler)));
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
      if (!UnixPeerAllowed(conn.get(), &who)) {
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
