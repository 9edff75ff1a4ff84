// The per-VM control socket (--control-socket PATH): a UNIX stream socket,
// mode 0600, that takes one request per line and answers each with zero or
// more result lines followed by "ok" or "error: MESSAGE" (docs/CONTROL.md).
// Only processes of flint's own user (or root) may connect: the peer's
// credentials (SO_PEERCRED) are checked on accept and anything else is
// refused and logged.
//
// It runs one thread of its own; the handler is called there, one request at
// a time.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <thread>

#include "absl/status/statusor.h"
#include "vmm/kvm/unique_fd.h"

namespace flint {

class ControlServer {
 public:
  // Returns the whole reply, ending in "ok\n" or "error: ...\n".
  using Handler = std::function<std::string(std::string_view request)>;

  static constexpr size_t kMaxLine = 4096;
  static constexpr int kMaxClients = 8;

  // Binds `path` (a stale socket left by a dead flint is replaced; any other
  // existing file is an error) and starts serving.
  static absl::StatusOr<std::unique_ptr<ControlServer>> Start(const std::string& path,
                                                              Handler handler);
  ~ControlServer();  // stops the thread, closes every connection, removes the socket

  ControlServer(const ControlServer&) = delete;
  ControlServer& operator=(const ControlServer&) = delete;

 private:
  ControlServer(std::string path, UniqueFd listen_fd, UniqueFd stop_fd, Handler handler)
      : path_(std::move(path)), listen_fd_(std::move(listen_fd)), stop_fd_(std::move(stop_fd)),
        handler_(std::move(handler)) {}
  void Serve();

  const std::string path_;
  UniqueFd listen_fd_;
  UniqueFd stop_fd_;
  Handler handler_;
  std::thread thread_;
};

}  // namespace flint
