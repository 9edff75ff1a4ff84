#include "k8s-shim/shim_server.h"

#include <fcntl.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/server_posix.h>
#include <poll.h>
#include <pthread.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "vmm/unix_socket.h"

namespace flint::shim {
namespace {

using flint::shim::v1::VmRecord;

// virt-handler dials each launcher socket from a few goroutines at most; the
// node socket sees one agent.
constexpr int kBacklog = 64;

}  // namespace

ShimServer::ShimServer(const ShimContext* ctx, std::vector<uid_t> allowed_uids)
    : ctx_(ctx), allowed_uids_(std::move(allowed_uids)) {}

ShimServer::~ShimServer() { Stop(); }

absl::Status ShimServer::Start(const std::vector<grpc::Service*>& extra) {
  wake_fd_ = UniqueFd(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!wake_fd_.valid()) {
    return absl::InternalError(absl::StrFormat("eventfd: %s", strerror(errno)));
  }
  launcher_ = std::make_unique<LauncherService>(
      [this](grpc::ServerContext* c, std::string* why) { return ResolveSlot(c, why); });
  cmd_info_ = std::make_unique<CmdInfoService>();
  grpc::ServerBuilder builder;
  // One completion queue and few pollers: the shim's memory per VM is what
  // the per-node mode is for, and calls are short.
  builder.SetSyncServerOption(grpc::ServerBuilder::SyncServerOption::NUM_CQS, 1);
  builder.SetSyncServerOption(grpc::ServerBuilder::SyncServerOption::MIN_POLLERS, 1);
  builder.SetSyncServerOption(grpc::ServerBuilder::SyncServerOption::MAX_POLLERS, 2);
  builder.RegisterService(launcher_.get());
  builder.RegisterService(cmd_info_.get());
  for (grpc::Service* s : extra) builder.RegisterService(s);
  // No listening ports: every connection comes from AcceptLoop.
  server_ = builder.BuildAndStart();
  if (server_ == nullptr) return absl::InternalError("the gRPC server did not start");
  accept_thread_ = std::thread([this] { AcceptLoop(); });
  pthread_setname_np(accept_thread_.native_handle(), "shim-accept");
  return absl::OkStatus();
}

void ShimServer::Wake() {
  const uint64_t one = 1;
  (void)!write(wake_fd_.get(), &one, sizeof(one));
}

absl::Status ShimServer::Listen(const std::string& path, const std::string& slot_id,
                                const char* flag) {
  absl::StatusOr<UniqueFd> fd = ListenPrivateUnixSocket(path, flag, kBacklog);
  if (!fd.ok()) return fd.status();
  if (!allowed_uids_.empty() && chmod(path.c_str(), 0666) != 0) {
    const int err = errno;
    unlink(path.c_str());
    return absl::InternalError(absl::StrFormat("chmod %s: %s", path, strerror(err)));
  }
  const int flags = fcntl(fd->get(), F_GETFL);
  fcntl(fd->get(), F_SETFL, flags | O_NONBLOCK);
  {
    absl::MutexLock l(&mu_);
    const int key = fd->get();
    listeners_[key] = Listener{path, slot_id, std::move(*fd)};
  }
  Wake();
  return absl::OkStatus();
}

absl::Status ShimServer::ServeNodeSocket(const std::string& path) {
  return Listen(path, "", "--node-socket");
}

bool ShimServer::PeerAllowed(int fd, std::string* who) {
  ucred cred{};
  socklen_t len = sizeof(cred);
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
    *who = "an unknown peer";
    return false;
  }
  *who = absl::StrFormat("pid %d uid %u", cred.pid, cred.uid);
  return cred.uid == geteuid() || cred.uid == 0 ||
         std::find(allowed_uids_.begin(), allowed_uids_.end(), cred.uid) != allowed_uids_.end();
}

bool ShimServer::Accept(int listen_fd, const std::string& path, const std::string& slot_id) {
  // Everything waiting, so one wake-up serves a burst of dials.
  for (;;) {
    UniqueFd conn(accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK));
    if (!conn.valid()) {
      // Out of fds: the dial stays queued and the listener stays readable,
      // so the caller must back off instead of polling again at once.
      if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
        std::fprintf(stderr, "flint-shim: %s: accept: %s; retrying in 100 ms\n", path.c_str(),
                     strerror(errno));
        return false;
      }
      return true;
    }
    std::string who;
    if (!PeerAllowed(conn.get(), &who)) {
      std::string allowed = absl::StrFormat("uid %u, root", geteuid());
      for (uid_t u : allowed_uids_) absl::StrAppendFormat(&allowed, ", uid %u", u);
      std::fprintf(stderr, "flint-shim: %s: refused a connection from %s (allowed: %s)\n",
                   path.c_str(), who.c_str(), allowed.c_str());
      absl::MutexLock l(&mu_);
      ++refused_;
      continue;
    }
    {
      absl::MutexLock l(&mu_);
      Conn c;
      if (slot_id.empty()) {
        c.node = true;
      } else {
        auto it = slots_.find(slot_id);
        if (it == slots_.end()) continue;  // removed while we accepted: closes
        c.slot = it->second;
      }
      // Recorded before gRPC sees the fd, so its first call resolves.
      conns_[conn.get()] = std::move(c);
    }
    // gRPC owns the fd from here on.
    grpc::AddInsecureChannelFromFd(server_.get(), conn.release());
  }
}

void ShimServer::AcceptLoop() {
  struct Watched {
    int fd;
    std::string path, slot_id;
  };
  for (;;) {
    std::vector<pollfd> fds = {{wake_fd_.get(), POLLIN, 0}};
    std::vector<Watched> watched;
    {
      absl::MutexLock l(&mu_);
      // Listeners removed since the last round are closed here, where no
      // poll can still be looking at them.
      closing_.clear();
      if (stopping_) return;
      for (const auto& [fd, listener] : listeners_) {
        fds.push_back({fd, POLLIN, 0});
        watched.push_back({fd, listener.path, listener.slot_id});
      }
    }
    if (poll(fds.data(), fds.size(), -1) < 0) {
      if (errno == EINTR) continue;
      // Serving nothing while looking alive would strand every VM's
      // virt-handler: end the process (the VMs keep running; a restarted
      // shim re-attaches).
      std::fprintf(stderr, "flint-shim: accept: poll failed: %s; exiting\n", strerror(errno));
      std::_Exit(1);
    }
    if (fds[0].revents != 0) {
      uint64_t n;
      (void)!read(wake_fd_.get(), &n, sizeof(n));
      continue;
    }
    for (size_t i = 1; i < fds.size(); ++i) {
      if ((fds[i].revents & POLLIN) &&
          !Accept(watched[i - 1].fd, watched[i - 1].path, watched[i - 1].slot_id)) {
        usleep(100 * 1000);
      }
    }
  }
}

int ShimServer::PeerFd(grpc::ServerContext* ctx) {
  const std::string peer = ctx->peer();
  absl::string_view rest = peer;
  int fd;
  if (!absl::ConsumePrefix(&rest, "fd:") || !absl::SimpleAtoi(rest, &fd)) return -1;
  return fd;
}

std::shared_ptr<Slot> ShimServer::ResolveSlot(grpc::ServerContext* ctx, std::string* why) {
  const int fd = PeerFd(ctx);
  absl::MutexLock l(&mu_);
  auto it = fd < 0 ? conns_.end() : conns_.find(fd);
  if (it == conns_.end()) {
    *why = absl::StrFormat("flint-shim: the connection %s is not to a launcher socket",
                           ctx->peer());
    return nullptr;
  }
  if (it->second.node) {
    *why = "flint-shim: the node socket serves the Node service only; dial a launcher socket";
    return nullptr;
  }
  std::shared_ptr<Slot> slot = it->second.slot.lock();
  if (slot == nullptr) *why = "flint-shim: this launcher socket's slot has been removed";
  return slot;
}

bool ShimServer::FromNodeSocket(grpc::ServerContext* ctx) {
  const int fd = PeerFd(ctx);
  absl::MutexLock l(&mu_);
  auto it = conns_.find(fd);
  return it != conns_.end() && it->second.node;
}

size_t ShimServer::Restore(const std::string& only_id, const std::string& socket_override,
                           std::vector<std::string>* warnings) {
  absl::MutexLock admin(&admin_mu_);
  std::vector<VmRecord> records = ctx_->store->LoadAll(warnings);
  std::vector<std::shared_ptr<Slot>> restored;
  for (VmRecord& record : records) {
    if (!only_id.empty() && record.id() != only_id) continue;
    if (!only_id.empty() && !socket_override.empty() &&
        record.launcher_socket() != socket_override) {
      record.set_launcher_socket(socket_override);
      if (absl::Status s = ctx_->store->Save(record); !s.ok()) {
        warnings->push_back(std::string(s.message()));
      }
    }
    const std::string id = record.id();
    const std::string socket = record.launcher_socket();
    auto slot = std::make_shared<Slot>(std::move(record), ctx_);
    {
      absl::MutexLock l(&mu_);
      slots_[id] = slot;
    }
    // Served first, re-attached after: the slot answers from its record
    // (Running) meanwhile, so virt-handler never sees the domain vanish.
    if (absl::Status s = Listen(socket, id, "launcher socket"); !s.ok()) {
      warnings->push_back(absl::StrFormat("slot %s: %s (its VM is still tracked)", id,
                                          s.message()));
    }
    restored.push_back(std::move(slot));
  }
  for (const std::shared_ptr<Slot>& slot : restored) slot->Reattach();
  return restored.size();
}

absl::Status ShimServer::AddSlot(const std::string& id, const std::string& launcher_socket,
                                 const std::string& backend, const std::string& pod_root) {
  if (absl::Status s = ValidateSlotId(id); !s.ok()) return s;
  if (launcher_socket.empty() || launcher_socket[0] != '/') {
    return absl::InvalidArgumentError(absl::StrFormat(
        "launcher_socket \"%s\": an absolute path is needed", launcher_socket));
  }
  // One spelling per socket, so the "served already" check below sees every
  // duplicate and the record names the file actually bound: no NUL (the
  // kernel would bind the prefix), no "//", "/./", "/../" or trailing "/".
  if (launcher_socket.find('\0') != std::string::npos ||
      launcher_socket.find("//") != std::string::npos ||
      absl::StrContains(launcher_socket + "/", "/./") ||
      absl::StrContains(launcher_socket + "/", "/../") || launcher_socket.back() == '/') {
    return absl::InvalidArgumentError(absl::StrFormat(
        "launcher_socket \"%s\": give the path in its plain form (no NUL, \"//\", \".\", "
        "\"..\" or trailing \"/\")",
        absl::CHexEscape(launcher_socket)));
  }
  const std::string dir = launcher_socket.substr(0, launcher_socket.rfind('/'));
  struct stat st;
  if (!dir.empty() && (stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode))) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "launcher_socket %s: the directory %s does not exist", launcher_socket, dir));
  }
  if (!pod_root.empty()) {
    struct stat root_st;
    if (pod_root[0] != '/' || pod_root.find('\0') != std::string::npos ||
        stat(pod_root.c_str(), &root_st) != 0 || !S_ISDIR(root_st.st_mode)) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "pod_root \"%s\": an absolute path to an existing directory is needed",
          absl::CHexEscape(pod_root)));
    }
  }
  if (!backend.empty() && !KnownBackend(backend)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "backend \"%s\": flint-shim runs \"flint\" or \"qemu\" (or empty: the shim's default)",
        backend));
  }
  absl::MutexLock admin(&admin_mu_);
  {
    absl::MutexLock l(&mu_);
    if (slots_.contains(id)) {
      return absl::AlreadyExistsError(absl::StrFormat("slot %s exists already", id));
    }
    for (const auto& [fd, listener] : listeners_) {
      if (listener.path == launcher_socket) {
        return absl::AlreadyExistsError(absl::StrFormat(
            "%s is served already (slot %s)", launcher_socket,
            listener.slot_id.empty() ? "node socket" : listener.slot_id));
      }
    }
  }
  VmRecord record;
  record.set_id(id);
  record.set_launcher_socket(launcher_socket);
  record.set_backend(backend);
  record.set_pod_root(pod_root);
  if (absl::Status s = ctx_->store->Save(record); !s.ok()) return s;
  auto slot = std::make_shared<Slot>(std::move(record), ctx_);
  {
    absl::MutexLock l(&mu_);
    slots_[id] = slot;
  }
  if (absl::Status s = Listen(launcher_socket, id, "launcher_socket"); !s.ok()) {
    {
      absl::MutexLock l(&mu_);
      slots_.erase(id);
    }
    (void)ctx_->store->Remove(id);
    return s;
  }
  std::fprintf(stderr, "flint-shim: slot %s: serving %s\n", id.c_str(), launcher_socket.c_str());
  return absl::OkStatus();
}

absl::Status ShimServer::RemoveSlot(const std::string& id, bool kill) {
  absl::MutexLock admin(&admin_mu_);
  std::shared_ptr<Slot> slot = FindSlot(id);
  if (slot == nullptr) return absl::NotFoundError(absl::StrFormat("no slot %s", id));
  if (absl::Status s = slot->Retire(kill); !s.ok()) return s;
  {
    absl::MutexLock l(&mu_);
    slots_.erase(id);
    for (auto it = listeners_.begin(); it != listeners_.end(); ++it) {
      if (it->second.slot_id != id) continue;
      unlink(it->second.path.c_str());
      closing_.push_back(std::move(it->second.fd));
      listeners_.erase(it);
      break;
    }
  }
  Wake();
  std::fprintf(stderr, "flint-shim: slot %s: removed%s\n", id.c_str(), kill ? " (VM killed)" : "");
  return ctx_->store->Remove(id);
}

std::vector<VmRecord> ShimServer::ListSlots() {
  std::vector<std::shared_ptr<Slot>> slots;
  {
    absl::MutexLock l(&mu_);
    for (const auto& [id, slot] : slots_) slots.push_back(slot);
  }
  std::vector<VmRecord> out;
  out.reserve(slots.size());
  for (const auto& slot : slots) out.push_back(slot->Record());
  return out;
}

std::shared_ptr<Slot> ShimServer::FindSlot(const std::string& id) {
  absl::MutexLock l(&mu_);
  auto it = slots_.find(id);
  return it == slots_.end() ? nullptr : it->second;
}

bool ShimServer::Listening(const std::string& id) {
  absl::MutexLock l(&mu_);
  for (const auto& [fd, listener] : listeners_) {
    if (listener.slot_id == id) return true;
  }
  return false;
}

size_t ShimServer::slot_count() {
  absl::MutexLock l(&mu_);
  return slots_.size();
}

uint64_t ShimServer::refused_connections() {
  absl::MutexLock l(&mu_);
  return refused_;
}

void ShimServer::Stop() {
  {
    absl::MutexLock l(&mu_);
    if (stopping_) return;
    stopping_ = true;
  }
  if (wake_fd_.valid()) Wake();
  if (accept_thread_.joinable()) accept_thread_.join();
  if (server_ != nullptr) {
    server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
    server_->Wait();
  }
  std::map<std::string, std::shared_ptr<Slot>> slots;
  {
    absl::MutexLock l(&mu_);
    // The socket files stay: see the header.
    listeners_.clear();
    closing_.clear();
    conns_.clear();
    slots.swap(slots_);
  }
  slots.clear();  // drops backend connections; the VMs run on
}

}  // namespace flint::shim
