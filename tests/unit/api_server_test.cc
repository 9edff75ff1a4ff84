// The gRPC API server on a real UNIX socket with a fake VmControl (no KVM):
// status mapping, event fan-out, socket rules.
#include "agent-api/api_server.h"

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <string>
#include <vector>

#include "vm_service.grpc.pb.h"

namespace flint {
namespace {

std::string TempPath(const char* name) {
  return std::string(FLINT_BUILD_ROOT) + "/" + name + "-" + std::to_string(getpid()) + ".sock";
}

class FakeControl : public VmControl {
 public:
  v1::GetInfoResponse Info() override {
    v1::GetInfoResponse r;
    r.set_state(paused ? v1::VM_STATE_PAUSED : v1::VM_STATE_RUNNING);
    r.set_vcpus(3);
    return r;
  }
  absl::Status Pause() override {
    if (paused) return absl::FailedPreconditionError("the VM is already paused");
    paused = true;
    return absl::OkStatus();
  }
  absl::Status Resume() override {
    paused = false;
    return absl::OkStatus();
  }
  absl::Status Reset() override { return absl::OkStatus(); }
  absl::Status Stop() override { return absl::OkStatus(); }
  absl::Status Shutdown(absl::Duration timeout) override {
    absl::MutexLock l(&mu);
    if (stopped) return absl::FailedPreconditionError("the VM is not running");
    shutdown_timeouts.push_back(timeout);
    return absl::OkStatus();
  }
  absl::StatusOr<v1::GetStatsResponse> Stats() override {
    return absl::FailedPreconditionError("the VM is not running");
  }
  absl::Status SwapNic(uint32_t index, const std::string& spec) override {
    return absl::InvalidArgumentError("no NIC " + std::to_string(index) + " for " + spec);
  }
  std::atomic<bool> paused{false};
  absl::Mutex mu;
  bool stopped ABSL_GUARDED_BY(mu) = false;
  std::vector<absl::Duration> shutdown_timeouts ABSL_GUARDED_BY(mu);
};

std::unique_ptr<v1::VmService::Stub> Client(const std::string& path) {
  return v1::VmService::NewStub(
      grpc::CreateChannel("unix:" + path, grpc::InsecureChannelCredentials()));
}

TEST(EventHub, EveryWatcherGetsEveryEventInOrderAndDrainsAfterClose) {
  EventHub hub;
  auto a = hub.Subscribe();
  auto b = hub.Subscribe();
  v1::VmEvent e;
  e.set_kind(v1::VmEvent::KIND_PAUSED);
  hub.Publish(e);
  e.set_kind(v1::VmEvent::KIND_RESUMED);
  hub.Publish(e);
  hub.Close();
  hub.Publish(e);  // after Close: dropped
  for (auto* s : {a.get(), b.get()}) {
    EXPECT_FALSE(s->done());
    EXPECT_EQ(s->Next(absl::ZeroDuration())->kind(), v1::VmEvent::KIND_PAUSED);
    EXPECT_EQ(s->Next(absl::ZeroDuration())->kind(), v1::VmEvent::KIND_RESUMED);
    EXPECT_FALSE(s->Next(absl::ZeroDuration()).has_value());
    EXPECT_TRUE(s->done());
  }
}

TEST(EventHub, ASlowWatcherLosesTheOldestEventsOnly) {
  EventHub hub;
  auto s = hub.Subscribe();
  v1::VmEvent e;
  for (size_t i = 0; i < EventHub::kMaxQueued + 5; ++i) {
    e.set_exit_status(static_cast<int>(i));
    hub.Publish(e);
  }
  EXPECT_EQ(s->Next(absl::ZeroDuration())->exit_status(), 5);
}

TEST(ApiServer, ServesTheControlWithStatusCodesAndEvents) {
  const std::string path = TempPath("api-fake");
  FakeControl control;
  auto server = ApiServer::Start(path, &control);
  ASSERT_TRUE(server.ok()) << server.status();
  struct stat st;
  ASSERT_EQ(lstat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);

  auto stub = Client(path);
  grpc::ClientContext watch_ctx;
  auto reader = stub->WatchEvents(&watch_ctx, {});
  v1::VmEvent e;
  ASSERT_TRUE(reader->Read(&e));  // the state at subscription
  EXPECT_EQ(e.kind(), v1::VmEvent::KIND_UNSPECIFIED);
  EXPECT_EQ(e.reason(), "VM_STATE_RUNNING");

  {
    grpc::ClientContext ctx;
    v1::GetInfoResponse info;
    ASSERT_TRUE(stub->GetInfo(&ctx, {}, &info).ok());
    EXPECT_EQ(info.vcpus(), 3u);
    EXPECT_EQ(info.pid(), getpid());
  }
  {
    grpc::ClientContext ctx;
    v1::PauseResponse r;
    ASSERT_TRUE(stub->Pause(&ctx, {}, &r).ok());
  }
  {
    grpc::ClientContext ctx;
    v1::PauseResponse r;
    grpc::Status s = stub->Pause(&ctx, {}, &r);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
    EXPECT_EQ(s.error_message(), "the VM is already paused");
  }
  {
    grpc::ClientContext ctx;
    v1::SwapNicRequest req;
    req.set_index(2);
    req.set_spec("tap=x");
    v1::SwapNicResponse r;
    grpc::Status s = stub->SwapNic(&ctx, req, &r);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_EQ(s.error_message(), "no NIC 2 for tap=x");
  }
  (*server)->Publish(v1::VmEvent::KIND_STOPPED, "signal: test", 130);
  ASSERT_TRUE(reader->Read(&e));
  EXPECT_EQ(e.kind(), v1::VmEvent::KIND_PAUSED);  // only the successful pause
  ASSERT_TRUE(reader->Read(&e));
  EXPECT_EQ(e.kind(), v1::VmEvent::KIND_STOPPED);
  EXPECT_EQ(e.exit_status(), 130);
  server->reset();  // closes the stream after it drained
  EXPECT_FALSE(reader->Read(&e));
  EXPECT_TRUE(reader->Finish().ok());
  EXPECT_NE(access(path.c_str(), F_OK), 0) << "socket left behind";
}

// Shutdown hands the control the guest's grace period: the request's, or the
// documented default for 0; the control's refusal reaches the client.
TEST(ApiServer, ShutdownPassesTheTimeoutAndDefaultsZeroToThirtySeconds) {
  const std::string path = TempPath("api-shutdown");
  FakeControl control;
  auto server = ApiServer::Start(path, &control);
  ASSERT_TRUE(server.ok()) << server.status();
  auto stub = Client(path);
  auto shutdown = [&](uint32_t seconds) {
    grpc::ClientContext ctx;
    v1::ShutdownRequest req;
    req.set_timeout_seconds(seconds);
    v1::ShutdownResponse r;
    return stub->Shutdown(&ctx, req, &r);
  };
  EXPECT_TRUE(shutdown(0).ok());
  EXPECT_TRUE(shutdown(5).ok());
  EXPECT_TRUE(shutdown(0xffffffffu).ok());
  {
    absl::MutexLock l(&control.mu);
    EXPECT_EQ(control.shutdown_timeouts,
              (std::vector<absl::Duration>{absl::Seconds(30), absl::Seconds(5),
                                           absl::Seconds(0xffffffffu)}));
    EXPECT_EQ(kDefaultShutdownTimeoutSeconds, 30u);
    control.stopped = true;
  }
  grpc::Status s = shutdown(1);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(s.error_message(), "the VM is not running");
}

TEST(ApiServer, RefusesAFileAndALiveSocket) {
  const std::string file = TempPath("api-file");
  FILE* f = fopen(file.c_str(), "w");
  ASSERT_NE(f, nullptr);
  fclose(f);
  FakeControl control;
  auto on_file = ApiServer::Start(file, &control);
  ASSERT_FALSE(on_file.ok());
  EXPECT_NE(on_file.status().message().find("--api-socket"), std::string::npos);
  EXPECT_NE(on_file.status().message().find("not a socket"), std::string::npos);
  unlink(file.c_str());

  const std::string path = TempPath("api-live");
  auto first = ApiServer::Start(path, &control);
  ASSERT_TRUE(first.ok());
  auto second = ApiServer::Start(path, &control);
  ASSERT_FALSE(second.ok());
  EXPECT_NE(second.status().message().find("another process"), std::string::npos);
}

}  // namespace
}  // namespace flint
