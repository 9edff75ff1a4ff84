// The listening side of flint's private UNIX sockets (--control-socket,
// --api-socket): created 0600 by flint itself, a stale socket left by a dead
// flint replaced, any other file refused; and the peer check every accepted
// connection passes (flint's own uid or root).
//
// Header-only so both the core library and the agent-api library use it
// without a link dependency between them.
#pragma once

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_format.h"
#include "vmm/kvm/unique_fd.h"

namespace flint {

// `flag` names the option the path came from, for messages ("--api-socket").
inline absl::StatusOr<sockaddr_un> UnixSocketAddress(const std::string& path,
                                                     const std::string& flag) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof(addr.sun_path)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s %s: a socket path needs 1..%u characters", flag, path, sizeof(addr.sun_path) - 1));
  }
  std::memcpy(addr.sun_path, path.data(), path.size());
  return addr;
}

// True when `addr` is a socket nobody listens on any more.
inline bool StaleUnixSocket(const sockaddr_un& addr) {
  UniqueFd probe(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!probe.valid()) return false;
  return connect(probe.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) != 0 &&
         errno == ECONNREFUSED;
}

// Binds and listens on `path`, mode 0600 from the start (no window in which
// others could connect).
inline absl::StatusOr<UniqueFd> ListenPrivateUnixSocket(const std::string& path,
                                                        const std::string& flag, int backlog) {
  absl::StatusOr<sockaddr_un> addr = UnixSocketAddress(path, flag);
  if (!addr.ok()) return addr.status();
  struct stat st;
  if (lstat(path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) {
      return absl::AlreadyExistsError(
          absl::StrFormat("%s %s: the path exists and is not a socket", flag, path));
    }
    if (!StaleUnixSocket(*addr)) {
      return absl::AlreadyExistsError(
          absl::StrFormat("%s %s: another process is serving that socket", flag, path));
    }
    unlink(path.c_str());
  }
  UniqueFd fd(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd.valid()) {
    return absl::InternalError(absl::StrFormat("socket for %s: %s", flag, strerror(errno)));
  }
  const mode_t old_umask = umask(0177);
  const int rc = bind(fd.get(), reinterpret_cast<const sockaddr*>(&*addr), sizeof(*addr));
  const int bind_errno = errno;
  umask(old_umask);
  if (rc != 0) {
    return absl::InternalError(
        absl::StrFormat("binding %s %s: %s", flag, path, strerror(bind_errno)));
  }
  if (listen(fd.get(), backlog) != 0) {
    return absl::InternalError(absl::StrFormat("listen on %s: %s", path, strerror(errno)));
  }
  return fd;
}

// True when the connected peer runs as flint's effective uid or as root;
// `who` gets "pid P uid U" for the log line of a refusal.
inline bool UnixPeerAllowed(int fd, std::string* who) {
  ucred cred{};
  socklen_t len = sizeof(cred);
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
    *who = "unknown peer";
    return false;
  }
  *who = absl::StrFormat("pid %d uid %u", cred.pid, cred.uid);
  return cred.uid == geteuid() || cred.uid == 0;
}

}  // namespace flint
