// flint-shim's sockets: every launcher socket (one per slot) and, in node
// mode, the node socket, all served by ONE grpc::Server.
//
// The shim listens itself (vmm/unix_socket.h: mode 0600, a stale socket
// replaced), accepts on one thread, checks each peer's SO_PEERCRED (the
// shim's uid, root, or an --allow-uid value; anything else is logged and
// closed) and hands the fd to gRPC (grpc::AddInsecureChannelFromFd). gRPC
// names such a connection's peer "fd:N" (checked against gRPC 1.51), so the
// accept thread records fd N -> (slot, socket kind) before handing it over,
// and every call finds its slot from ServerContext::peer(). A live
// connection's fd number cannot be reused, so the entry is right for as long
// as the connection lives; stale entries are overwritten by the next accept
// of that number. Slots are added and removed at run time (Node service).
//
// Stopping the server leaves every VM running and every launcher socket file
// in place (a virt-handler that finds the socket missing would take the
// launcher for dead); a restarted shim replaces the stale sockets.
#pragma once

#include <sys/types.h>

#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "k8s-shim/launcher_service.h"
#include "vmm/kvm/unique_fd.h"

namespace grpc {
class Server;
class ServerContext;
class Service;
}  // namespace grpc

namespace flint::shim {

class ShimServer {
 public:
  // `ctx` (and what it points to) must outlive the server. `allowed_uids`
  // come on top of the shim's own uid and root; with any given, the sockets
  // are made mode 0666 so those users can connect at all (the peer check is
  // then the gate).
  ShimServer(const ShimContext* ctx, std::vector<uid_t> allowed_uids);
  // Stop()s.
  ~ShimServer();
  ShimServer(const ShimServer&) = delete;
  ShimServer& operator=(const ShimServer&) = delete;

  // Builds the gRPC server with the launcher services and `extra` (the Node
  // service in node mode) and starts accepting. Call once, before the rest.
  absl::Status Start(const std::vector<grpc::Service*>& extra);

  // Serves the node socket (connections on it may call the Node service,
  // launcher connections may not).
  absl::Status ServeNodeSocket(const std::string& path);

  // Loads every record from the store, serves its launcher socket and
  // re-attaches its VM. `only_id` non-empty: that record only (per-VM mode),
  // served on `socket_override` when that is non-empty (the record follows).
  // Records whose socket cannot be served go into `warnings` (their VMs stay
  // tracked). Returns how many slots were restored.
  size_t Restore(const std::string& only_id, const std::string& socket_override,
                 std::vector<std::string>* warnings);

  // A new slot: validates, saves its record, listens. ALREADY_EXISTS for an
  // id in use (or a socket path another slot serves).
  absl::Status AddSlot(const std::string& id, const std::string& launcher_socket,
                       const std::string& backend, const std::string& pod_root = "");
  // Stops serving the slot's socket (removing the socket file), retires the
  // slot (see Slot::Retire) and deletes its state directory.
  absl::Status RemoveSlot(const std::string& id, bool kill);
  std::vector<flint::shim::v1::VmRecord> ListSlots();
  std::shared_ptr<Slot> FindSlot(const std::string& id);
  size_t slot_count();
  // A listener serves slot `id`'s launcher socket.
  bool Listening(const std::string& id);

  // The slot of a call's connection (launcher sockets only).
  std::shared_ptr<Slot> ResolveSlot(grpc::ServerContext* ctx, std::string* why);
  // The call came in on the node socket.
  bool FromNodeSocket(grpc::ServerContext* ctx);

  // Stops accepting and shuts gRPC down (in-flight calls get two seconds);
  // the slots are dropped, their VMs keep running.
  void Stop();

  uint64_t refused_connections();

 private:
  struct Listener {
    std::string path;
    std::string slot_id;  // empty: the node socket
    UniqueFd fd;
  };
  struct Conn {
    bool node = false;
    std::weak_ptr<Slot> slot;
  };

  absl::Status Listen(const std::string& path, const std::string& slot_id, const char* flag);
  void AcceptLoop();
  // false: out of fds (or memory); the caller backs off before polling again.
  bool Accept(int listen_fd, const std::string& path, const std::string& slot_id);
  bool PeerAllowed(int fd, std::string* who);
  void Wake();
  // -1 when the peer string is not "fd:N".
  static int PeerFd(grpc::ServerContext* ctx);

  const ShimContext* const ctx_;
  const std::vector<uid_t> allowed_uids_;

  std::unique_ptr<LauncherService> launcher_;
  std::unique_ptr<CmdInfoService> cmd_info_;
  std::unique_ptr<grpc::Server> server_;
  UniqueFd wake_fd_;
  std::thread accept_thread_;

  absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::map<std::string, std::shared_ptr<Slot>> slots_ ABSL_GUARDED_BY(mu_);
  std::map<int, Listener> listeners_ ABSL_GUARDED_BY(mu_);  // by listening fd
  std::vector<UniqueFd> closing_ ABSL_GUARDED_BY(mu_);     // closed by the accept thread
  std::map<int, Conn> conns_ ABSL_GUARDED_BY(mu_);          // by connection fd
  uint64_t refused_ ABSL_GUARDED_BY(mu_) = 0;
  // Serializes AddSlot/RemoveSlot/Restore (which do file and socket work
  // outside mu_).
  absl::Mutex admin_mu_ ABSL_ACQUIRED_BEFORE(mu_);
};

}  // namespace flint::shim
