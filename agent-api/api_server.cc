#include "agent-api/api_server.h"

#include <fcntl.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/server_posix.h>
#include <poll.h>
#include <pthread.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>

#include "absl/strings/str_format.h"
#include "vm_service.grpc.pb.h"
#include "vmm/unix_socket.h"

namespace flint {
namespace {

constexpr int kBacklog = 16;

// absl and gRPC share the canonical status codes and their numbering.
grpc::Status ToGrpc(const absl::Status& s) {
  if (s.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(s.code()), std::string(s.message()));
}

}  // namespace

// ---- EventHub ----

EventHub::Subscription::~Subscription() {
  absl::MutexLock l(&hub_->mu_);
  std::erase(hub_->subs_, this);
}

std::optional<v1::VmEvent> EventHub::Subscription::Next(absl::Duration timeout) {
  absl::MutexLock l(&hub_->mu_);
  auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(hub_->mu_) {
    return !queue_.empty() || hub_->closed_;
  };
  hub_->mu_.AwaitWithTimeout(absl::Condition(&ready), timeout);
  if (queue_.empty()) return std::nullopt;
  v1::VmEvent e = std::move(queue_.front());
  queue_.pop_front();
  return e;
}

bool EventHub::Subscription::done() {
  absl::MutexLock l(&hub_->mu_);
  return hub_->closed_ && queue_.empty();
}

void EventHub::Publish(const v1::VmEvent& event) {
  absl::MutexLock l(&mu_);
  if (closed_) return;
  for (Subscription* s : subs_) {
    if (s->queue_.size() == kMaxQueued) s->queue_.pop_front();
    s->queue_.push_back(event);
  }
}

void EventHub::Close() {
  absl::MutexLock l(&mu_);
  closed_ = true;
}

std::unique_ptr<EventHub::Subscription> EventHub::Subscribe() {
  auto sub = std::make_unique<Subscription>(this);
  absl::MutexLock l(&mu_);
  subs_.push_back(sub.get());
  return sub;
}

// ---- the service ----

class ApiServer::Service final : public v1::VmService::Service {
 public:
  Service(VmControl* control, EventHub* events) : control_(control), events_(events) {}

  grpc::Status GetInfo(grpc::ServerContext*, const v1::GetInfoRequest*,
                       v1::GetInfoResponse* out) override {
    *out = control_->Info();
    out->set_pid(getpid());
    return grpc::Status::OK;
  }
  grpc::Status Pause(grpc::ServerContext*, const v1::PauseRequest*, v1::PauseResponse*) override {
    absl::Status s = control_->Pause();
    if (s.ok()) Publish(v1::VmEvent::KIND_PAUSED);
    return ToGrpc(s);
  }
  grpc::Status Resume(grpc::ServerContext*, const v1::ResumeRequest*,
                      v1::ResumeResponse*) override {
    absl::Status s = control_->Resume();
    if (s.ok()) Publish(v1::VmEvent::KIND_RESUMED);
    return ToGrpc(s);
  }
  grpc::Status Reset(grpc::ServerContext*, const v1::ResetRequest*, v1::ResetResponse*) override {
    return ToGrpc(control_->Reset());  // main publishes KIND_RESET when the VM is down
  }
  grpc::Status Stop(grpc::ServerContext*, const v1::StopRequest*, v1::StopResponse*) override {
    return ToGrpc(control_->Stop());
  }
  // Publishes nothing itself: KIND_STOPPED follows when the guest powers off
  // (or is forced off at the deadline).
  grpc::Status Shutdown(grpc::ServerContext*, const v1::ShutdownRequest* in,
                        v1::ShutdownResponse*) override {
    const uint32_t seconds =
        in->timeout_seconds() == 0 ? kDefaultShutdownTimeoutSeconds : in->timeout_seconds();
    return ToGrpc(control_->Shutdown(absl::Seconds(seconds)));
  }
  grpc::Status GetStats(grpc::ServerContext*, const v1::GetStatsRequest*,
                        v1::GetStatsResponse* out) override {
    absl::StatusOr<v1::GetStatsResponse> s = control_->Stats();
    if (!s.ok()) return ToGrpc(s.status());
    *out = std::move(*s);
    return grpc::Status::OK;
  }
  grpc::Status SwapNic(grpc::ServerContext*, const v1::SwapNicRequest* in,
                       v1::SwapNicResponse*) override {
    return ToGrpc(control_->SwapNic(in->index(), in->spec()));
  }
  // The stream starts with the state now (KIND_UNSPECIFIED carries no change;
  // its reason is the state's name), so a client knows when it is subscribed.
  grpc::Status WatchEvents(grpc::ServerContext* ctx, const v1::WatchEventsRequest*,
                           grpc::ServerWriter<v1::VmEvent>* writer) override {
    std::unique_ptr<EventHub::Subscription> sub = events_->Subscribe();
    v1::VmEvent now;
    now.set_kind(v1::VmEvent::KIND_UNSPECIFIED);
    now.set_reason(v1::VmState_Name(control_->Info().state()));
    if (!writer->Write(now)) return grpc::Status::OK;
    // Wakes up now and then to notice a client that went away.
    while (!ctx->IsCancelled()) {
      std::optional<v1::VmEvent> e = sub->Next(absl::Milliseconds(200));
      if (e.has_value()) {
        if (!writer->Write(*e)) break;
      } else if (sub->done()) {
        break;
      }
    }
    return grpc::Status::OK;
  }

 private:
  void Publish(v1::VmEvent::Kind kind) {
    v1::VmEvent e;
    e.set_kind(kind);
    events_->Publish(e);
  }
  VmControl* control_;
  EventHub* events_;
};

// ---- the server ----

ApiServer::ApiServer(std::string path, UniqueFd listen_fd, UniqueFd stop_fd, VmControl* control)
    : path_(std::move(path)), listen_fd_(std::move(listen_fd)), stop_fd_(std::move(stop_fd)),
      service_(std::make_unique<Service>(control, &events_)) {}

absl::StatusOr<std::unique_ptr<ApiServer>> ApiServer::Start(const std::string& path,
                                                            VmControl* control) {
  absl::StatusOr<UniqueFd> fd = ListenPrivateUnixSocket(path, "--api-socket", kBacklog);
  if (!fd.ok()) return fd.status();
  UniqueFd stop(eventfd(0, EFD_CLOEXEC));
  if (!stop.valid()) {
    unlink(path.c_str());
    return absl::InternalError(absl::StrFormat("eventfd: %s", strerror(errno)));
  }
  std::unique_ptr<ApiServer> server(
      new ApiServer(path, std::move(*fd), std::move(stop), control));
  // No listening ports: every connection comes from AcceptLoop.
  grpc::ServerBuilder builder;
  // One VM's API sees a handful of clients: one completion queue and one
  // idle poller (gRPC adds threads for calls in progress) instead of the
  // defaults sized for a busy server -- each idle thread costs flint stack
  // and malloc arena memory on every VM.
  builder.SetSyncServerOption(grpc::ServerBuilder::SyncServerOption::NUM_CQS, 1);
  builder.SetSyncServerOption(grpc::ServerBuilder::SyncServerOption::MIN_POLLERS, 1);
  builder.SetSyncServerOption(grpc::ServerBuilder::SyncServerOption::MAX_POLLERS, 1);
  builder.RegisterService(server->service_.get());
  server->server_ = builder.BuildAndStart();
  if (server->server_ == nullptr) {
    unlink(path.c_str());
    return absl::InternalError("the gRPC server for --api-socket did not start");
  }
  server->accept_thread_ = std::thread([s = server.get()] { s->AcceptLoop(); });
  pthread_setname_np(server->accept_thread_.native_handle(), "flint-api");
  return server;
}

ApiServer::~ApiServer() {
  const uint64_t one = 1;
  (void)!write(stop_fd_.get(), &one, sizeof(one));
  if (accept_thread_.joinable()) accept_thread_.join();
  events_.Close();
  if (server_ != nullptr) {
    server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
    server_->Wait();
  }
  unlink(path_.c_str());
}

void ApiServer::Publish(v1::VmEvent::Kind kind, const std::string& reason, int exit_status) {
  v1::VmEvent e;
  e.set_kind(kind);
  e.set_reason(reason);
  e.set_exit_status(exit_status);
  events_.Publish(e);
}

void ApiServer::AcceptLoop() {
  for (;;) {
    pollfd fds[2] = {{stop_fd_.get(), POLLIN, 0}, {listen_fd_.get(), POLLIN, 0}};
    if (poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      std::fprintf(stderr, "flint: api socket: poll failed: %s\n", strerror(errno));
      return;
    }
    if (fds[0].revents) return;
    if ((fds[1].revents & POLLIN) == 0) continue;
    UniqueFd conn(accept4(listen_fd_.get(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK));
    if (!conn.valid()) continue;
    std::string who;
    if (!UnixPeerAllowed(conn.get(), &who)) {
      std::fprintf(stderr, "flint: api socket: refused a connection from %s (not uid %u)\n",
                   who.c_str(), geteuid());
      continue;
    }
    // gRPC owns the fd from here on.
    grpc::AddInsecureChannelFromFd(server_.get(), conn.release());
  }
}

}  // namespace flint
