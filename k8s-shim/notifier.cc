#include "k8s-shim/notifier.h"

#include <grpcpp/grpcpp.h>
#include <pthread.h>

#include <algorithm>
#include <cstdio>

#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "notify.grpc.pb.h"
#include "notify_info.grpc.pb.h"

namespace flint::shim {

namespace notify = kubevirt::notify::v1;
namespace notify_info = kubevirt::notify::info;

constexpr uint32_t kNotifyVersion = 1;

class Notifier::Channel {
 public:
  explicit Channel(const std::string& socket_path) {
    grpc::ChannelArguments args;
    // gRPC's own reconnect back-off grows to minutes; virt-handler restarts
    // should be noticed within our retry window.
    args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
    args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 100);
    args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 2000);
    channel_ = grpc::CreateCustomChannel("unix:" + socket_path,
                                         grpc::InsecureChannelCredentials(), args);
    notify_ = notify::Notify::NewStub(channel_);
    info_ = notify_info::NotifyInfo::NewStub(channel_);
  }

  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<notify::Notify::Stub> notify_;
  std::unique_ptr<notify_info::NotifyInfo::Stub> info_;
  bool version_ok_ = false;
};

Notifier::Notifier(std::string socket_path) : Notifier(std::move(socket_path), Options()) {}

Notifier::Notifier(std::string socket_path, Options options)
    : socket_path_(std::move(socket_path)), options_(options) {
  if (!socket_path_.empty()) channel_ = std::make_unique<Channel>(socket_path_);
  thread_ = std::thread([this] { Run(); });
  pthread_setname_np(thread_.native_handle(), "shim-notify");
}

Notifier::~Notifier() {
  Flush(absl::Seconds(1));
  {
    absl::MutexLock l(&mu_);
    stop_ = true;
    if (current_ != nullptr) current_->TryCancel();
  }
  thread_.join();
}

void Notifier::SetCurrent(grpc::ClientContext* ctx) {
  absl::MutexLock l(&mu_);
  current_ = ctx;
  if (ctx != nullptr && stop_) ctx->TryCancel();
}

void Notifier::Send(NotifyEvent event) {
  absl::MutexLock l(&mu_);
  if (queue_.size() >= options_.max_queued) {
    std::fprintf(stderr, "flint-shim: notify queue full (%zu): dropped the oldest event (%s %s)\n",
                 queue_.size(), queue_.front().vm_id.c_str(),
                 queue_.front().event_type.c_str());
    queue_.pop_front();
    ++counters_.dropped_full;
  }
  queue_.push_back(std::move(event));
  ++counters_.queued;
}

bool Notifier::Flush(absl::Duration timeout) {
  absl::MutexLock l(&mu_);
  auto drained = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return queue_.empty() && !in_flight_;
  };
  return mu_.AwaitWithTimeout(absl::Condition(&drained), timeout);
}

Notifier::Counters Notifier::counters() {
  absl::MutexLock l(&mu_);
  return counters_;
}

std::string Notifier::Deliver(const NotifyEvent& event) {
  Channel& ch = *channel_;
  if (!ch.version_ok_) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() +
                     absl::ToChronoMilliseconds(options_.call_timeout));
    notify_info::NotifyInfoResponse info;
    SetCurrent(&ctx);
    grpc::Status s = ch.info_->Info(&ctx, notify_info::NotifyInfoRequest(), &info);
    SetCurrent(nullptr);
    if (!s.ok()) return absl::StrFormat("NotifyInfo.Info: %s", s.error_message());
    const auto& versions = info.supportednotifyversions();
    if (std::find(versions.begin(), versions.end(), kNotifyVersion) == versions.end()) {
      return absl::StrFormat(
          "virt-handler's notify server speaks versions [%s]; flint-shim speaks %u",
          absl::StrJoin(versions, ","), kNotifyVersion);
    }
    ch.version_ok_ = true;
  }
  notify::DomainEventRequest req;
  req.set_eventtype(event.event_type);
  req.set_domainjson(event.domain_json);
  req.set_statusjson(event.status_json);
  notify::Response resp;
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() +
                   absl::ToChronoMilliseconds(options_.call_timeout));
  SetCurrent(&ctx);
  grpc::Status s = ch.notify_->HandleDomainEvent(&ctx, req, &resp);
  SetCurrent(nullptr);
  if (!s.ok()) {
    // The server may have restarted (perhaps as another version): ask again.
    ch.version_ok_ = false;
    return absl::StrFormat("HandleDomainEvent: %s", s.error_message());
  }
  if (!resp.success()) return absl::StrFormat("virt-handler refused the event: %s", resp.message());
  return "";
}

void Notifier::Run() {
  for (;;) {
    NotifyEvent event;
    {
      absl::MutexLock l(&mu_);
      auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return !queue_.empty() || stop_;
      };
      mu_.Await(absl::Condition(&ready));
      if (stop_) return;  // the destructor already gave the queue its chance
      event = std::move(queue_.front());
      queue_.pop_front();
      in_flight_ = true;
    }
    if (channel_ == nullptr) {
      std::fprintf(stderr, "flint-shim: event (no --notify-socket) vm %s %s %s\n",
                   event.vm_id.c_str(), event.event_type.c_str(),
                   event.event_type == "ERROR" ? event.status_json.c_str()
                                               : event.domain_json.c_str());
      absl::MutexLock l(&mu_);
      ++counters_.delivered;
      in_flight_ = false;
      continue;
    }
    const absl::Time give_up = absl::Now() + options_.give_up_after;
    absl::Duration backoff = options_.min_backoff;
    bool logged = false;
    for (;;) {
      const std::string err = Deliver(event);
      absl::MutexLock l(&mu_);
      if (err.empty()) {
        ++counters_.delivered;
        if (logged) {
          std::fprintf(stderr, "flint-shim: notify: delivered vm %s %s after retrying\n",
                       event.vm_id.c_str(), event.event_type.c_str());
        }
        break;
      }
      ++counters_.failed_attempts;
      if (!logged) {
        std::fprintf(stderr, "flint-shim: notify %s: vm %s %s not delivered (%s); retrying\n",
                     socket_path_.c_str(), event.vm_id.c_str(), event.event_type.c_str(),
                     err.c_str());
        logged = true;
      }
      if (stop_ || absl::Now() + backoff > give_up) {
        ++counters_.dropped_gave_up;
        std::fprintf(stderr, "flint-shim: notify: gave up on vm %s %s: %s\n",
                     event.vm_id.c_str(), event.event_type.c_str(), err.c_str());
        break;
      }
      auto stopping = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stop_; };
      mu_.AwaitWithTimeout(absl::Condition(&stopping), backoff);
      backoff = std::min(backoff * 2, options_.max_backoff);
    }
    absl::MutexLock l(&mu_);
    in_flight_ = false;
  }
}

}  // namespace flint::shim
