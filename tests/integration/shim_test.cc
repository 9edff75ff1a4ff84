// flint-shim end to end, driven the way KubeVirt's virt-handler drives a
// launcher: the real flint-shim binary (a subprocess) serving a launcher
// socket, running the test guest under the real flint (or QEMU), while this
// test dials the launcher socket with a client built from our copies of
// KubeVirt's protos and serves the Notify/NotifyInfo services on the notify
// socket, recording every domain event.
//
// The guest runs `flint.prog=idle` (it halts forever and ignores the ACPI
// power button), so a graceful shutdown ends with the forced stop after the
// VMI's terminationGracePeriodSeconds.
#include <fcntl.h>
#include <google/protobuf/struct.pb.h>
#include <google/protobuf/util/json_util.h>
#include <grp.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "cmd.grpc.pb.h"
#include "cmd_info.grpc.pb.h"
#include "k8s-shim/notifier.h"
#include "k8s-shim/process.h"
#include "k8s-shim/vm_store.h"
#include "notify.grpc.pb.h"
#include "notify_info.grpc.pb.h"
#include "shim.grpc.pb.h"
#include "tests/support/subprocess.h"

namespace flint::shim {
namespace {

namespace cmd = kubevirt::cmd::v1;
namespace cmd_info = kubevirt::cmd::info;
using google::protobuf::Struct;
using google::protobuf::Value;

constexpr const char* kQemu = "/usr/bin/qemu-system-x86_64";
// Generous: what a machine under load may need; never a pass/fail threshold
// on speed.
constexpr absl::Duration kEventWait = absl::Seconds(30);
constexpr int kCallSeconds = 60;

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// A member of a parsed JSON object by path ("Status.Status"); null Value
// when absent.
Value Get(const Struct& doc, const std::vector<std::string>& path) {
  const Struct* cur = &doc;
  for (size_t i = 0; i < path.size(); ++i) {
    auto it = cur->fields().find(path[i]);
    if (it == cur->fields().end()) return Value();
    if (i + 1 == path.size()) return it->second;
    if (!it->second.has_struct_value()) return Value();
    cur = &it->second.struct_value();
  }
  return Value();
}

Struct ParseJson(const std::string& json) {
  Struct doc;
  EXPECT_TRUE(google::protobuf::util::JsonStringToMessage(json, &doc).ok()) << json;
  return doc;
}

// ---- virt-handler's side of the notify socket ----

struct Event {
  std::string type;
  std::string state, reason, uid;  // Status.Status, Status.Reason, ObjectMeta.uid
  bool deletion_timestamp = false;
  std::string json;
};

class FakeHandler final : public kubevirt::notify::v1::Notify::Service,
                          public kubevirt::notify::info::NotifyInfo::Service {
 public:
  explicit FakeHandler(const std::string& socket) {
    grpc::ServerBuilder b;
    b.AddListeningPort("unix:" + socket, grpc::InsecureServerCredentials());
    b.RegisterService(static_cast<kubevirt::notify::v1::Notify::Service*>(this));
    b.RegisterService(static_cast<kubevirt::notify::info::NotifyInfo::Service*>(this));
    server_ = b.BuildAndStart();
  }
  ~FakeHandler() override {
    if (server_ != nullptr) server_->Shutdown(std::chrono::system_clock::now());
  }
  bool ok() const { return server_ != nullptr; }

  grpc::Status Info(grpc::ServerContext*, const kubevirt::notify::info::NotifyInfoRequest*,
                    kubevirt::notify::info::NotifyInfoResponse* out) override {
    absl::MutexLock l(&mu_);
    for (uint32_t v : versions_) out->add_supportednotifyversions(v);
    ++info_calls_;
    return grpc::Status::OK;
  }
  // What Info answers (KubeVirt's handler: [1]).
  void SetVersions(std::vector<uint32_t> v) {
    absl::MutexLock l(&mu_);
    versions_ = std::move(v);
  }
  // The next `n` events are answered success=false (and not recorded).
  void RefuseNext(int n) {
    absl::MutexLock l(&mu_);
    refuse_ = n;
  }
  grpc::Status HandleDomainEvent(grpc::ServerContext*,
                                 const kubevirt::notify::v1::DomainEventRequest* in,
                                 kubevirt::notify::v1::Response* out) override {
    Event e;
    e.type = in->eventtype();
    e.json = in->domainjson();
    const Struct doc = ParseJson(e.json);
    e.state = Get(doc, {"Status", "Status"}).string_value();
    e.reason = Get(doc, {"Status", "Reason"}).string_value();
    e.uid = Get(doc, {"ObjectMeta", "uid"}).string_value();
    e.deletion_timestamp = Get(doc, {"ObjectMeta", "deletionTimestamp"}).has_string_value();
    absl::MutexLock l(&mu_);
    if (refuse_ > 0) {
      --refuse_;
      ++refused_;
      out->set_success(false);
      out->set_message("not now");
      return grpc::Status::OK;
    }
    out->set_success(true);
    events_.push_back(std::move(e));
    return grpc::Status::OK;
  }
  grpc::Status HandleK8sEvent(grpc::ServerContext*, const kubevirt::notify::v1::K8sEventRequest*,
                              kubevirt::notify::v1::Response* out) override {
    out->set_success(true);
    return grpc::Status::OK;
  }

  // The index of the first event at or after `from` for which `match` holds,
  // waiting up to kEventWait; -1 if none came.
  int WaitFor(const std::function<bool(const Event&)>& match, size_t from = 0) {
    absl::MutexLock l(&mu_);
    int found = -1;
    auto cond = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      for (size_t i = from; i < events_.size(); ++i) {
        if (match(events_[i])) {
          found = static_cast<int>(i);
          return true;
        }
      }
      return false;
    };
    mu_.AwaitWithTimeout(absl::Condition(&cond), kEventWait);
    return found;
  }
  int WaitState(const std::string& uid, const std::string& state, size_t from = 0) {
    return WaitFor([&](const Event& e) { return e.uid == uid && e.state == state; }, from);
  }
  std::vector<Event> events() {
    absl::MutexLock l(&mu_);
    return events_;
  }
  size_t count() {
    absl::MutexLock l(&mu_);
    return events_.size();
  }
  int info_calls() {
    absl::MutexLock l(&mu_);
    return info_calls_;
  }
  int refused() {
    absl::MutexLock l(&mu_);
    return refused_;
  }
  std::string Describe() {
    std::string out;
    for (const Event& e : events()) {
      absl::StrAppendFormat(&out, "  %s %s/%s uid=%s%s\n", e.type, e.state, e.reason, e.uid,
                            e.deletion_timestamp ? " deletionTimestamp" : "");
    }
    return out.empty() ? "  (no events)\n" : out;
  }

 private:
  std::unique_ptr<grpc::Server> server_;
  absl::Mutex mu_;
  std::vector<Event> events_ ABSL_GUARDED_BY(mu_);
  std::vector<uint32_t> versions_ ABSL_GUARDED_BY(mu_) = {1};
  int info_calls_ ABSL_GUARDED_BY(mu_) = 0;
  int refuse_ ABSL_GUARDED_BY(mu_) = 0;
  int refused_ ABSL_GUARDED_BY(mu_) = 0;
};

// ---- the handler's client of a launcher socket ----

class Launcher {
 public:
  explicit Launcher(const std::string& socket)
      : channel_(grpc::CreateChannel("unix:" + socket, grpc::InsecureChannelCredentials())),
        cmd_(cmd::Cmd::NewStub(channel_)),
        info_(cmd_info::CmdInfo::NewStub(channel_)) {}

  static void Deadline(grpc::ClientContext* c) {
    c->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(kCallSeconds));
  }

  // A VMI call; the gRPC status must be OK (the answer is in Response).
  using VmiCall = grpc::Status (cmd::Cmd::Stub::*)(grpc::ClientContext*, const cmd::VMIRequest&,
                                                   cmd::Response*);
  cmd::Response Call(VmiCall call, const std::string& vmi_json) {
    cmd::VMIRequest req;
    req.mutable_vmi()->set_vmijson(vmi_json);
    cmd::Response out;
    grpc::ClientContext c;
    Deadline(&c);
    grpc::Status s = (cmd_.get()->*call)(&c, req, &out);
    EXPECT_TRUE(s.ok()) << s.error_message();
    if (!s.ok()) out.set_message("gRPC: " + s.error_message());
    return out;
  }
  cmd::Response Sync(const std::string& v) { return Call(&cmd::Cmd::Stub::SyncVirtualMachine, v); }
  cmd::Response Pause(const std::string& v) {
    return Call(&cmd::Cmd::Stub::PauseVirtualMachine, v);
  }
  cmd::Response Unpause(const std::string& v) {
    return Call(&cmd::Cmd::Stub::UnpauseVirtualMachine, v);
  }
  cmd::Response Shutdown(const std::string& v) {
    return Call(&cmd::Cmd::Stub::ShutdownVirtualMachine, v);
  }
  cmd::Response Kill(const std::string& v) { return Call(&cmd::Cmd::Stub::KillVirtualMachine, v); }
  cmd::Response Delete(const std::string& v) {
    return Call(&cmd::Cmd::Stub::DeleteVirtualMachine, v);
  }

  // GetDomain's JSON ("" when there is no domain); fails the test on errors.
  std::string Domain() {
    cmd::DomainResponse out;
    grpc::ClientContext c;
    Deadline(&c);
    grpc::Status s = cmd_->GetDomain(&c, cmd::EmptyRequest(), &out);
    EXPECT_TRUE(s.ok()) << s.error_message();
    EXPECT_TRUE(out.response().success()) << out.response().message();
    return out.domain();
  }
  std::string DomainState() {
    const std::string d = Domain();
    if (d.empty()) return "";
    return Get(ParseJson(d), {"Status", "Status"}).string_value();
  }
  // GetDomain's state once it is `want` (polled; the backends learn of some
  // changes from their event streams a moment after the call returned), or
  // the last state seen after kEventWait.
  std::string AwaitDomainState(const std::string& want) {
    const absl::Time deadline = absl::Now() + kEventWait;
    std::string state = DomainState();
    while (state != want && absl::Now() < deadline) {
      absl::SleepFor(absl::Milliseconds(10));
      state = DomainState();
    }
    return state;
  }
  cmd::DomainStatsResponse Stats() {
    cmd::DomainStatsResponse out;
    grpc::ClientContext c;
    Deadline(&c);
    grpc::Status s = cmd_->GetDomainStats(&c, cmd::EmptyRequest(), &out);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return out;
  }
  grpc::Status Info(cmd_info::CmdInfoResponse* out, int seconds = kCallSeconds) {
    grpc::ClientContext c;
    c.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(seconds));
    return info_->Info(&c, cmd_info::CmdInfoRequest(), out);
  }
  cmd::Cmd::Stub& stub() { return *cmd_; }

 private:
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<cmd::Cmd::Stub> cmd_;
  std::unique_ptr<cmd_info::CmdInfo::Stub> info_;
};

// ---- the VMI ----

struct VmiOptions {
  std::string uid = "5b7a4f00-0000-4000-8000-000000000001";
  std::string name = "vm1";
  std::string backend;        // the flint.dev/backend annotation; empty: none
  std::string memory = "64Mi";
  int grace_seconds = 2;
  std::string kernel_args = "flint.prog=idle";
  std::string kernel = "/boot/guest.elf";
  std::string disk = "/disks/scratch.img";  // under the pod root; flint locks it
};

std::string VmiJson(const VmiOptions& o) {
  const std::string annotations =
      o.backend.empty() ? "" : absl::StrFormat(R"(, "annotations": {"flint.dev/backend": "%s"})",
                                               o.backend);
  return absl::StrFormat(R"({
  "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
  "metadata": {"name": "%s", "namespace": "default", "uid": "%s"%s},
  "spec": {
    "terminationGracePeriodSeconds": %d,
    "domain": {
      "cpu": {"cores": 1},
      "memory": {"guest": "%s"},
      "firmware": {"kernelBoot": {"kernelArgs": "%s",
                   "container": {"image": "test/guest:1", "kernelPath": "%s"}}},
      "devices": {"disks": [{"name": "scratch", "disk": {"bus": "virtio"}}]}
    },
    "volumes": [{"name": "scratch", "hostDisk": {"path": "%s", "type": "Disk"}}]
  }
})",
                         o.name, o.uid, annotations, o.grace_seconds, o.memory, o.kernel_args,
                         o.kernel, o.disk);
}

// ---- the fixture ----

bool CanConnect(const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof(addr.sun_path)) return false;
  std::memcpy(addr.sun_path, path.data(), path.size());
  const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  const bool ok = connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) == 0;
  close(fd);
  return ok;
}

class ShimTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    std::string why;
    if (!testing::KvmAvailable(&why)) GTEST_SKIP() << why;
    if (backend() == "qemu" && access(kQemu, X_OK) != 0) {
      GTEST_SKIP() << kQemu << " is missing (apt-get install qemu-system-x86)";
    }
    // Short paths: flint's API socket lives under STATE_DIR/<id>/vm.
    char tmpl[] = "/tmp/shimt-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    pod_ = dir_ + "/pod";
    state_ = dir_ + "/state";
    // The kernel-boot artifact where a launcher pod has it, and a disk.
    const std::string kb = pod_ + "/var/run/kubevirt/container-disks/kernel-boot";
    std::filesystem::create_directories(kb);
    std::filesystem::create_directories(pod_ + "/disks");
    ASSERT_EQ(symlink(FLINT_GUEST_ELF, (kb + "/guest.elf").c_str()), 0);
    for (const char* name : {"scratch.img", "a.img", "b.img"}) {
      std::ofstream disk(pod_ + "/disks/" + name);
      disk << std::string(1 << 20, '\0');
    }
    handler_ = std::make_unique<FakeHandler>(dir_ + "/notify.sock");
    ASSERT_TRUE(handler_->ok());
  }

  void TearDown() override {
    if (shim_ > 0) {
      kill(shim_, SIGKILL);
      waitpid(shim_, nullptr, 0);
      shim_ = -1;
    }
    // VMs are not the shim's children: find every one the records name.
    if (!state_.empty()) {
      VmStore store(state_);
      std::vector<std::string> warnings;
      for (const auto& r : store.LoadAll(&warnings)) {
        const ProcessId id{r.pid(), r.pid_start_time()};
        if (r.pid() > 0 && ProcessAlive(id)) {
          kill(r.pid(), SIGKILL);
          WaitProcessGone(id, absl::Seconds(5));
        }
      }
    }
    if (HasFailure() && !dir_.empty()) {
      std::fprintf(stderr, "---- flint-shim log ----\n%s", ReadFile(dir_ + "/shim.log").c_str());
      if (handler_) std::fprintf(stderr, "---- events ----\n%s", handler_->Describe().c_str());
    }
    handler_.reset();
    if (!dir_.empty()) {
      std::error_code ec;
      std::filesystem::remove_all(dir_, ec);
    }
  }

  const std::string& backend() const { return GetParam(); }
  std::string launcher_socket() const { return dir_ + "/launcher.sock"; }

  std::vector<std::string> ShimArgs() const {
    return {FLINT_SHIM_BINARY, "--notify-socket", dir_ + "/notify.sock", "--state-dir", state_,
            "--pod-root", pod_, "--flint", FLINT_BINARY, "--qemu", kQemu};
  }

  // Starts flint-shim with `extra` flags (stdout and stderr to DIR/shim.log)
  // and waits until `socket` accepts connections.
  void StartShim(const std::vector<std::string>& extra, const std::string& socket) {
    std::vector<std::string> argv = ShimArgs();
    argv.insert(argv.end(), extra.begin(), extra.end());
    const std::string log = dir_ + "/shim.log";
    shim_ = fork();
    ASSERT_GE(shim_, 0);
    if (shim_ == 0) {
      const int fd = open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
      const int null_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
      dup2(null_fd, STDIN_FILENO);
      dup2(fd, STDOUT_FILENO);
      dup2(fd, STDERR_FILENO);
      std::vector<char*> args;
      for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
      args.push_back(nullptr);
      execv(args[0], args.data());
      _exit(127);
    }
    const absl::Time deadline = absl::Now() + absl::Seconds(30);
    while (!CanConnect(socket)) {
      int status;
      ASSERT_NE(waitpid(shim_, &status, WNOHANG), shim_)
          << "flint-shim exited at start:\n" << ReadFile(log);
      ASSERT_LT(absl::Now(), deadline) << "flint-shim never served " << socket << ":\n"
                                       << ReadFile(log);
      usleep(10000);
    }
  }
  void StartLauncherShim() {
    StartShim({"--launcher-socket", launcher_socket()}, launcher_socket());
  }

  // SIGTERM; returns the shim's exit status (-1: not a normal exit).
  int StopShim() {
    kill(shim_, SIGTERM);
    int status = 0;
    waitpid(shim_, &status, 0);
    shim_ = -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  }

  flint::shim::v1::VmRecord Record(const std::string& id = "vm") {
    absl::StatusOr<flint::shim::v1::VmRecord> r =
        VmStore::FromJson(ReadFile(state_ + "/" + id + "/record.json"));
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *r : flint::shim::v1::VmRecord();
  }

  VmiOptions Vmi() const {
    VmiOptions o;
    if (backend() != "flint") o.backend = backend();
    return o;
  }

  std::string dir_, pod_, state_;
  std::unique_ptr<FakeHandler> handler_;
  pid_t shim_ = -1;
};

// The sequence virt-handler runs through for one VMI's life.
TEST_P(ShimTest, VmiLifecycleWithEvents) {
  StartLauncherShim();
  // Only the shim's uid and root may connect, so the socket is private.
  struct stat st;
  ASSERT_EQ(stat(launcher_socket().c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);

  Launcher l(launcher_socket());
  cmd_info::CmdInfoResponse info;
  ASSERT_TRUE(l.Info(&info).ok());
  ASSERT_EQ(info.supportedcmdversions_size(), 1);
  EXPECT_EQ(info.supportedcmdversions(0), 1u);
  EXPECT_EQ(l.Domain(), "") << "no VMI synced yet: no domain";

  const VmiOptions o = Vmi();
  const std::string vmi = VmiJson(o);
  cmd::Response r = l.Sync(vmi);
  ASSERT_TRUE(r.success()) << r.message();
  ASSERT_GE(handler_->WaitFor([&](const Event& e) { return e.type == "ADDED" && e.uid == o.uid; }),
            0);
  ASSERT_GE(handler_->WaitState(o.uid, "Running"), 0);
  EXPECT_GE(handler_->info_calls(), 1) << "NotifyInfo is asked before the first event";

  const std::string domain = l.Domain();
  const Struct doc = ParseJson(domain);
  EXPECT_EQ(Get(doc, {"Status", "Status"}).string_value(), "Running") << domain;
  EXPECT_EQ(Get(doc, {"ObjectMeta", "uid"}).string_value(), o.uid) << domain;
  EXPECT_EQ(Get(doc, {"Spec", "Metadata", "KubeVirt", "UID"}).string_value(), o.uid) << domain;
  // The VMI's disk is listed under its own name, as virt-handler matches it.
  const Value disks = Get(doc, {"Spec", "Devices", "Disks"});
  ASSERT_EQ(disks.list_value().values_size(), 1) << domain;
  EXPECT_EQ(disks.list_value().values(0).struct_value().fields().at("Alias").struct_value()
                .fields().at("Name").string_value(),
            "scratch")
      << domain;

  {
    cmd::Response ping;
    grpc::ClientContext c;
    Launcher::Deadline(&c);
    ASSERT_TRUE(l.stub().Ping(&c, cmd::EmptyRequest(), &ping).ok());
    EXPECT_TRUE(ping.success());
    cmd::QemuVersionResponse version;
    grpc::ClientContext c2;
    Launcher::Deadline(&c2);
    ASSERT_TRUE(l.stub().GetQemuVersion(&c2, cmd::EmptyRequest(), &version).ok());
    EXPECT_TRUE(version.response().success()) << version.response().message();
    EXPECT_FALSE(version.version().empty());
  }

  const flint::shim::v1::VmRecord rec = Record();
  EXPECT_EQ(rec.backend(), backend());
  EXPECT_EQ(rec.vmi_uid(), o.uid);
  const ProcessId vm{rec.pid(), rec.pid_start_time()};
  ASSERT_TRUE(ProcessAlive(vm)) << rec.DebugString();

  // Syncing the same VMI again changes nothing; a changed one is refused.
  r = l.Sync(vmi);
  EXPECT_TRUE(r.success()) << r.message();
  EXPECT_EQ(Record().pid(), rec.pid());
  VmiOptions bigger = o;
  bigger.memory = "128Mi";
  r = l.Sync(VmiJson(bigger));
  EXPECT_FALSE(r.success());
  EXPECT_NE(r.message().find("cannot change"), std::string::npos) << r.message();
  EXPECT_NE(r.message().find("memory_mib"), std::string::npos) << r.message();
  VmiOptions other = o;
  other.uid = "5b7a4f00-0000-4000-8000-00000000ffff";
  r = l.Sync(VmiJson(other));
  EXPECT_FALSE(r.success());
  EXPECT_NE(r.message().find(o.uid), std::string::npos) << r.message();
  EXPECT_TRUE(ProcessAlive(vm));

  // Pause / unpause: each a MODIFIED event and GetDomain agrees.
  size_t mark = handler_->count();
  r = l.Pause(vmi);
  ASSERT_TRUE(r.success()) << r.message();
  const int paused = handler_->WaitState(o.uid, "Paused", mark);
  ASSERT_GE(paused, 0);
  EXPECT_EQ(handler_->events()[paused].type, "MODIFIED");
  EXPECT_EQ(l.DomainState(), "Paused");
  mark = handler_->count();
  r = l.Unpause(vmi);
  ASSERT_TRUE(r.success()) << r.message();
  ASSERT_GE(handler_->WaitState(o.uid, "Running", mark), 0);
  EXPECT_EQ(l.DomainState(), "Running");

  // Stats: what the VMM measures about itself.
  cmd::DomainStatsResponse stats = l.Stats();
  ASSERT_TRUE(stats.response().success()) << stats.response().message();
  const Struct sdoc = ParseJson(stats.domainstats());
  EXPECT_GT(Get(sdoc, {"Memory", "RSS"}).number_value(), 0) << stats.domainstats();
  EXPECT_EQ(Get(sdoc, {"NrVirtCpu"}).number_value(), 1) << stats.domainstats();

  // Graceful shutdown: the idle guest ignores the power button, so the
  // forced stop after the 2 s grace period ends it: Shutoff.
  mark = handler_->count();
  r = l.Shutdown(vmi);
  ASSERT_TRUE(r.success()) << r.message();
  ASSERT_GE(handler_->WaitState(o.uid, "Shutoff", mark), 0);
  EXPECT_TRUE(WaitProcessGone(vm, absl::Seconds(30)));
  // The stopped domain stays visible until it is deleted, and acts no more.
  // It carries the grace period's start, which virt-handler needs to know
  // when to escalate to Kill.
  const Struct off = ParseJson(l.Domain());
  EXPECT_EQ(Get(off, {"Status", "Status"}).string_value(), "Shutoff");
  EXPECT_FALSE(
      Get(off, {"Spec", "Metadata", "KubeVirt", "GracePeriod", "DeletionTimestamp"})
          .string_value()
          .empty())
      << l.Domain();
  EXPECT_TRUE(Get(off, {"Spec", "Metadata", "KubeVirt", "GracePeriod",
                        "MarkedForGracefulShutdown"})
                  .bool_value());
  r = l.Pause(vmi);
  EXPECT_FALSE(r.success());
  EXPECT_NE(r.message().find("not running"), std::string::npos) << r.message();
  r = l.Sync(vmi);
  EXPECT_FALSE(r.success());
  EXPECT_NE(r.message().find("new launcher"), std::string::npos) << r.message();
  EXPECT_TRUE(l.Shutdown(vmi).success()) << "already off is what Shutdown asked for";

  mark = handler_->count();
  r = l.Delete(vmi);
  ASSERT_TRUE(r.success()) << r.message();
  const int gone = handler_->WaitState(o.uid, "NoState", mark);
  ASSERT_GE(gone, 0);
  const Event last = handler_->events()[gone];
  EXPECT_EQ(last.type, "MODIFIED");
  EXPECT_EQ(last.reason, "NonExistent");
  EXPECT_TRUE(last.deletion_timestamp) << last.json;
  EXPECT_EQ(l.Domain(), "");
  EXPECT_TRUE(Record().deleted());

  // One ADDED, first; every other event MODIFIED; NonExistent last.
  const std::vector<Event> events = handler_->events();
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events.front().type, "ADDED") << handler_->Describe();
  for (size_t i = 1; i < events.size(); ++i) {
    EXPECT_EQ(events[i].type, "MODIFIED") << i << "\n" << handler_->Describe();
  }
  EXPECT_EQ(events.back().reason, "NonExistent") << handler_->Describe();
  EXPECT_EQ(StopShim(), 0);
}

// flint (or QEMU) dying under the shim: a Crashed event, and calls that
// answer instead of hanging.
TEST_P(ShimTest, VmmKilledUnderTheShimIsReportedCrashed) {
  StartLauncherShim();
  Launcher l(launcher_socket());
  const VmiOptions o = Vmi();
  const std::string vmi = VmiJson(o);
  cmd::Response r = l.Sync(vmi);
  ASSERT_TRUE(r.success()) << r.message();
  ASSERT_GE(handler_->WaitState(o.uid, "Running"), 0);
  const flint::shim::v1::VmRecord rec = Record();
  const ProcessId vm{rec.pid(), rec.pid_start_time()};
  ASSERT_TRUE(ProcessAlive(vm));

  const size_t mark = handler_->count();
  ASSERT_EQ(kill(vm.pid, SIGKILL), 0);
  const int crashed = handler_->WaitState(o.uid, "Crashed", mark);
  ASSERT_GE(crashed, 0) << handler_->Describe();
  EXPECT_EQ(handler_->events()[crashed].type, "MODIFIED");
  EXPECT_EQ(l.DomainState(), "Crashed");
  r = l.Pause(vmi);
  EXPECT_FALSE(r.success());
  EXPECT_NE(r.message().find("not running"), std::string::npos) << r.message();
  r = l.Unpause(vmi);
  EXPECT_FALSE(r.success());
  cmd::DomainStatsResponse stats = l.Stats();
  EXPECT_TRUE(stats.response().success());
  EXPECT_EQ(stats.domainstats(), "") << "a dead VM has no stats";
  EXPECT_TRUE(l.Kill(vmi).success()) << "Kill of a dead VM is done already";
  EXPECT_TRUE(l.Delete(vmi).success());
  EXPECT_EQ(l.Domain(), "");
}

// The point of running VMs detached: a shim restart leaves them running,
// and the next shim picks them up from its state directory.
TEST_P(ShimTest, RestartedShimFindsItsVmAgain) {
  StartLauncherShim();
  const VmiOptions o = Vmi();
  const std::string vmi = VmiJson(o);
  {
    Launcher l(launcher_socket());
    cmd::Response r = l.Sync(vmi);
    ASSERT_TRUE(r.success()) << r.message();
    ASSERT_GE(handler_->WaitState(o.uid, "Running"), 0);
  }
  const flint::shim::v1::VmRecord rec = Record();
  const ProcessId vm{rec.pid(), rec.pid_start_time()};
  ASSERT_TRUE(ProcessAlive(vm));

  EXPECT_EQ(StopShim(), 0);
  EXPECT_TRUE(ProcessAlive(vm)) << "the VM must outlive the shim";
  // The socket file stays (virt-handler takes a missing socket for a dead
  // launcher); nobody answers it until the next shim.
  struct stat st;
  EXPECT_EQ(lstat(launcher_socket().c_str(), &st), 0);

  const size_t mark = handler_->count();
  StartLauncherShim();
  Launcher l(launcher_socket());
  EXPECT_EQ(l.DomainState(), "Running");
  // The restarted shim tells virt-handler what it found.
  ASSERT_GE(handler_->WaitState(o.uid, "Running", mark), 0);
  cmd::Response r = l.Pause(vmi);
  ASSERT_TRUE(r.success()) << r.message();
  EXPECT_EQ(l.AwaitDomainState("Paused"), "Paused");
  ASSERT_GE(handler_->WaitState(o.uid, "Paused", mark), 0);
  EXPECT_EQ(Record().pid(), rec.pid());
  r = l.Unpause(vmi);
  EXPECT_TRUE(r.success()) << r.message();

  // Once more with the VM gone while no shim ran: reported Shutoff (how it
  // ended is not known), not Running and not a hang.
  EXPECT_EQ(StopShim(), 0);
  ASSERT_EQ(kill(vm.pid, SIGKILL), 0);
  ASSERT_TRUE(WaitProcessGone(vm, absl::Seconds(10)));
  const size_t mark2 = handler_->count();
  StartLauncherShim();
  ASSERT_GE(handler_->WaitState(o.uid, "Shutoff", mark2), 0) << handler_->Describe();
  Launcher l2(launcher_socket());
  EXPECT_EQ(l2.DomainState(), "Shutoff");
  r = l2.Pause(vmi);
  EXPECT_FALSE(r.success());
  EXPECT_TRUE(l2.Delete(vmi).success());
}

INSTANTIATE_TEST_SUITE_P(Backends, ShimTest, ::testing::Values("flint", "qemu"),
                         [](const ::testing::TestParamInfo<std::string>& p) { return p.param; });

// ---- flint only: error paths, peers, node mode ----

class ShimFlintTest : public ShimTest {};

TEST_P(ShimFlintTest, BadRequestsAnswerSuccessFalseWithAReason) {
  StartLauncherShim();
  Launcher l(launcher_socket());

  // Nothing started yet: calls on the VM say so.
  cmd::Response r = l.Pause("");
  EXPECT_FALSE(r.success());
  EXPECT_NE(r.message().find("no VM"), std::string::npos) << r.message();
  // The hypervisor's version is known without a VM (`flint --version`).
  cmd::QemuVersionResponse version;
  {
    grpc::ClientContext c;
    Launcher::Deadline(&c);
    ASSERT_TRUE(l.stub().GetQemuVersion(&c, cmd::EmptyRequest(), &version).ok());
  }
  EXPECT_TRUE(version.response().success()) << version.response().message();
  EXPECT_NE(version.version().find("flint"), std::string::npos) << version.version();

  r = l.Sync("{\"metadata\": {\"uid\": ");
  EXPECT_FALSE(r.success());
  EXPECT_FALSE(r.message().empty());
  r = l.Sync("[]");
  EXPECT_FALSE(r.success());

  VmiOptions o = Vmi();
  o.backend = "firecracker";
  r = l.Sync(VmiJson(o));
  EXPECT_FALSE(r.success());
  EXPECT_NE(r.message().find("\"firecracker\""), std::string::npos) << r.message();
  EXPECT_NE(r.message().find("flint.dev/backend"), std::string::npos) << r.message();

  // What flint itself refuses comes back in flint's words.
  o = Vmi();
  o.kernel = "/boot/no-such-kernel";
  r = l.Sync(VmiJson(o));
  EXPECT_FALSE(r.success());
  EXPECT_NE(r.message().find("no-such-kernel"), std::string::npos) << r.message();

  // A call flint-shim does not serve says so (and is not UNIMPLEMENTED).
  cmd::MigrationRequest mig;
  cmd::Response out;
  grpc::ClientContext c;
  Launcher::Deadline(&c);
  ASSERT_TRUE(l.stub().MigrateVirtualMachine(&c, mig, &out).ok());
  EXPECT_FALSE(out.success());
  EXPECT_NE(out.message().find("not supported"), std::string::npos) << out.message();

  // After all that the launcher still starts a good VMI.
  o = Vmi();
  r = l.Sync(VmiJson(o));
  EXPECT_TRUE(r.success()) << r.message();
  EXPECT_EQ(l.AwaitDomainState("Running"), "Running");
  EXPECT_TRUE(l.Kill(VmiJson(o)).success());
}

// Speaks the first bytes of HTTP/2 (gRPC's transport) on `path`: the client
// preface and an empty SETTINGS frame. Returns what the server does: >0 it
// answered (bytes read), 0 it closed the connection unanswered, -1 no
// connection or no answer within 5 s. Plain system calls only, so that it
// runs in a forked child of this multi-threaded test.
int ProbeHttp2(const sockaddr_un& addr) {
  const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  if (connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(fd);
    return -1;
  }
  static const char kPreface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
  static const unsigned char kSettings[9] = {0, 0, 0, 4, 0, 0, 0, 0, 0};
  // MSG_NOSIGNAL: a refused connection may be closed before we write.
  (void)!send(fd, kPreface, sizeof(kPreface) - 1, MSG_NOSIGNAL);
  (void)!send(fd, kSettings, sizeof(kSettings), MSG_NOSIGNAL);
  pollfd p = {fd, POLLIN, 0};
  int result = -1;
  if (poll(&p, 1, 5000) == 1) {
    char buf[64];
    const ssize_t n = read(fd, buf, sizeof(buf));
    result = n > 0 ? static_cast<int>(n) : 0;  // EOF or ECONNRESET: closed
  }
  close(fd);
  return result;
}

TEST_P(ShimFlintTest, PeerCheckRefusesOtherUids) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root to run a client as another uid";
  // --allow-uid opens the socket's mode to everyone, so that uid 65534 gets
  // as far as connecting and SO_PEERCRED is what refuses it (mkdtemp made
  // the directory 0700).
  ASSERT_EQ(chmod(dir_.c_str(), 0711), 0);
  StartShim({"--launcher-socket", launcher_socket(), "--allow-uid", "4321"}, launcher_socket());
  struct stat st;
  ASSERT_EQ(stat(launcher_socket().c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0666u);

  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  ASSERT_LT(launcher_socket().size(), sizeof(addr.sun_path));
  std::memcpy(addr.sun_path, launcher_socket().data(), launcher_socket().size());
  // The probe's positive control: root is answered.
  ASSERT_GT(ProbeHttp2(addr), 0);

  // As uid 65534 (a forked child: gRPC itself does not survive a fork, so
  // the probe speaks raw HTTP/2): connected, then closed unanswered.
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    if (setgroups(0, nullptr) != 0 || setgid(65534) != 0 || setuid(65534) != 0) _exit(3);
    const int r = ProbeHttp2(addr);
    _exit(r == 0 ? 0 : r < 0 ? 1 : 2);
  }
  int status = 0;
  waitpid(child, &status, 0);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0)
      << "1: no connection or no answer, 2: answered, 3: could not become uid 65534";
  const std::string log = ReadFile(dir_ + "/shim.log");
  EXPECT_NE(log.find("refused a connection from"), std::string::npos) << log;
  EXPECT_NE(log.find("uid 65534"), std::string::npos) << log;

  // Root still gets in.
  Launcher l(launcher_socket());
  cmd_info::CmdInfoResponse info;
  EXPECT_TRUE(l.Info(&info).ok());
}

TEST_P(ShimFlintTest, NodeModeServesManyLaunchersFromOneProcess) {
  const std::string node_socket = dir_ + "/node.sock";
  StartShim({"--node-socket", node_socket}, node_socket);
  auto node = flint::shim::v1::Node::NewStub(
      grpc::CreateChannel("unix:" + node_socket, grpc::InsecureChannelCredentials()));
  auto add = [&](const std::string& id, const std::string& socket) {
    flint::shim::v1::AddVmRequest req;
    req.set_id(id);
    req.set_launcher_socket(socket);
    flint::shim::v1::AddVmResponse out;
    grpc::ClientContext c;
    Launcher::Deadline(&c);
    return node->AddVm(&c, req, &out);
  };
  auto remove = [&](const std::string& id, bool kill_vm) {
    flint::shim::v1::RemoveVmRequest req;
    req.set_id(id);
    req.set_kill(kill_vm);
    flint::shim::v1::RemoveVmResponse out;
    grpc::ClientContext c;
    Launcher::Deadline(&c);
    return node->RemoveVm(&c, req, &out);
  };
  auto list = [&]() {
    flint::shim::v1::ListVmsResponse out;
    grpc::ClientContext c;
    Launcher::Deadline(&c);
    EXPECT_TRUE(node->ListVms(&c, flint::shim::v1::ListVmsRequest(), &out).ok());
    return out;
  };
  const std::string sock_a = dir_ + "/a.sock", sock_b = dir_ + "/b.sock";
  ASSERT_TRUE(add("a", sock_a).ok());
  ASSERT_TRUE(add("b", sock_b).ok());
  EXPECT_EQ(add("a", dir_ + "/c.sock").error_code(), grpc::StatusCode::ALREADY_EXISTS);
  EXPECT_EQ(add("c", sock_b).error_code(), grpc::StatusCode::ALREADY_EXISTS);
  EXPECT_EQ(add("../x", dir_ + "/x.sock").error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  // Other spellings of a path are refused, not bound as another socket: the
  // kernel would bind "c.sock" for the NUL one, and "//" names b.sock again.
  EXPECT_EQ(add("c", dir_ + "/c.sock" + std::string(1, '\0') + "x").error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(add("c", dir_ + "//b.sock").error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(add("c", dir_ + "/./b.sock").error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  {
    // Each VM's pod root must be a directory given absolutely.
    flint::shim::v1::AddVmRequest req;
    req.set_id("c");
    req.set_launcher_socket(dir_ + "/c.sock");
    flint::shim::v1::AddVmResponse out;
    for (const char* root : {"pods/c", "/nonexistent/pod/root"}) {
      req.set_pod_root(root);
      grpc::ClientContext c;
      Launcher::Deadline(&c);
      EXPECT_EQ(node->AddVm(&c, req, &out).error_code(), grpc::StatusCode::INVALID_ARGUMENT)
          << root;
    }
  }

  VmiOptions va = Vmi(), vb = Vmi();
  va.uid = "5b7a4f00-0000-4000-8000-00000000000a";
  va.name = "vm-a";
  va.disk = "/disks/a.img";
  vb.uid = "5b7a4f00-0000-4000-8000-00000000000b";
  vb.name = "vm-b";
  vb.disk = "/disks/b.img";
  Launcher la(sock_a), lb(sock_b);
  cmd::Response r = la.Sync(VmiJson(va));
  ASSERT_TRUE(r.success()) << r.message();
  r = lb.Sync(VmiJson(vb));
  ASSERT_TRUE(r.success()) << r.message();
  ASSERT_GE(handler_->WaitState(va.uid, "Running"), 0);
  ASSERT_GE(handler_->WaitState(vb.uid, "Running"), 0);

  // Each connection reaches its own slot.
  EXPECT_EQ(Get(ParseJson(la.Domain()), {"ObjectMeta", "uid"}).string_value(), va.uid);
  EXPECT_EQ(Get(ParseJson(lb.Domain()), {"ObjectMeta", "uid"}).string_value(), vb.uid);
  ASSERT_TRUE(la.Pause(VmiJson(va)).success());
  EXPECT_EQ(la.AwaitDomainState("Paused"), "Paused");
  EXPECT_EQ(lb.DomainState(), "Running");
  // A VMI sent to the other VM's launcher is refused.
  r = lb.Pause(VmiJson(va));
  EXPECT_FALSE(r.success());
  EXPECT_NE(r.message().find(vb.uid), std::string::npos) << r.message();

  flint::shim::v1::ListVmsResponse vms = list();
  ASSERT_EQ(vms.vms_size(), 2);
  EXPECT_EQ(vms.vms(0).id(), "a");
  EXPECT_EQ(vms.vms(0).vmi_uid(), va.uid);
  EXPECT_EQ(vms.vms(1).id(), "b");
  EXPECT_EQ(vms.vms(1).vmi_uid(), vb.uid);
  const ProcessId vm_a{vms.vms(0).pid(), vms.vms(0).pid_start_time()};
  const ProcessId vm_b{vms.vms(1).pid(), vms.vms(1).pid_start_time()};

  // The node socket is not a launcher, and a launcher is not the node.
  {
    Launcher on_node(node_socket);
    cmd::DomainResponse out;
    grpc::ClientContext c;
    Launcher::Deadline(&c);
    EXPECT_EQ(on_node.stub().GetDomain(&c, cmd::EmptyRequest(), &out).error_code(),
              grpc::StatusCode::FAILED_PRECONDITION);
    auto node_on_launcher = flint::shim::v1::Node::NewStub(
        grpc::CreateChannel("unix:" + sock_a, grpc::InsecureChannelCredentials()));
    flint::shim::v1::ListVmsResponse lout;
    grpc::ClientContext c2;
    Launcher::Deadline(&c2);
    EXPECT_EQ(node_on_launcher->ListVms(&c2, flint::shim::v1::ListVmsRequest(), &lout)
                  .error_code(),
              grpc::StatusCode::PERMISSION_DENIED);
  }

  // A running VM is not dropped by accident.
  EXPECT_EQ(remove("a", false).error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_TRUE(ProcessAlive(vm_a));
  size_t mark = handler_->count();
  ASSERT_TRUE(remove("a", true).ok());
  EXPECT_TRUE(WaitProcessGone(vm_a, absl::Seconds(10)));
  ASSERT_GE(handler_->WaitState(va.uid, "NoState", mark), 0);
  struct stat st;
  EXPECT_NE(lstat(sock_a.c_str(), &st), 0) << "the removed slot's socket is gone";
  EXPECT_NE(lstat((state_ + "/a").c_str(), &st), 0) << "and so is its state";
  // The open connection to the removed slot gets an error, not a hang.
  cmd::DomainResponse dout;
  grpc::ClientContext c;
  Launcher::Deadline(&c);
  EXPECT_FALSE(la.stub().GetDomain(&c, cmd::EmptyRequest(), &dout).ok() &&
               dout.response().success());
  EXPECT_EQ(remove("a", true).error_code(), grpc::StatusCode::NOT_FOUND);

  vms = list();
  ASSERT_EQ(vms.vms_size(), 1);
  EXPECT_EQ(vms.vms(0).id(), "b");
  EXPECT_TRUE(ProcessAlive(vm_b));
  ASSERT_TRUE(remove("b", true).ok());
  EXPECT_TRUE(WaitProcessGone(vm_b, absl::Seconds(10)));
  EXPECT_EQ(list().vms_size(), 0);
  EXPECT_EQ(StopShim(), 0);
}

// virt-handler's notify server down while the VM starts: the Cmd calls do
// not wait for it, and the events arrive in order once it is back.
TEST_P(ShimFlintTest, EventsWaitForALateHandler) {
  handler_.reset();
  StartLauncherShim();
  Launcher l(launcher_socket());
  const VmiOptions o = Vmi();
  const std::string vmi = VmiJson(o);
  cmd::Response r = l.Sync(vmi);
  ASSERT_TRUE(r.success()) << r.message();
  ASSERT_TRUE(l.Pause(vmi).success());
  ASSERT_TRUE(l.Unpause(vmi).success());
  EXPECT_EQ(l.AwaitDomainState("Running"), "Running");

  handler_ = std::make_unique<FakeHandler>(dir_ + "/notify.sock");
  ASSERT_TRUE(handler_->ok());
  const int added = handler_->WaitFor([&](const Event& e) { return e.type == "ADDED"; });
  ASSERT_EQ(added, 0) << handler_->Describe();
  const int paused = handler_->WaitState(o.uid, "Paused");
  ASSERT_GT(paused, added) << handler_->Describe();
  ASSERT_GT(handler_->WaitState(o.uid, "Running", paused + 1), paused) << handler_->Describe();
  EXPECT_TRUE(l.Kill(vmi).success());
}

INSTANTIATE_TEST_SUITE_P(Backends, ShimFlintTest, ::testing::Values("flint"),
                         [](const ::testing::TestParamInfo<std::string>& p) { return p.param; });

// ---- the Notifier on its own (no VM, no KVM) ----

class NotifierTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/notifier-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    socket_ = dir_ + "/notify.sock";
  }
  void TearDown() override {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  static NotifyEvent Ev(const std::string& uid, const std::string& state) {
    NotifyEvent e;
    e.vm_id = "vm";
    e.event_type = "MODIFIED";
    e.domain_json = absl::StrFormat(
        R"({"ObjectMeta": {"uid": "%s"}, "Status": {"Status": "%s", "Reason": "Unknown"}})", uid,
        state);
    return e;
  }
  static Notifier::Options Fast() {
    Notifier::Options o;
    o.min_backoff = absl::Milliseconds(10);
    o.max_backoff = absl::Milliseconds(100);
    return o;
  }
  std::string dir_, socket_;
};

TEST_F(NotifierTest, DeliversInOrderThroughRefusals) {
  FakeHandler handler(socket_);
  ASSERT_TRUE(handler.ok());
  handler.RefuseNext(3);
  Notifier n(socket_, Fast());
  const std::vector<std::string> states = {"Running", "Paused", "Running", "Shutoff"};
  for (const std::string& s : states) n.Send(Ev("u1", s));
  ASSERT_TRUE(n.Flush(kEventWait));
  const std::vector<Event> got = handler.events();
  ASSERT_EQ(got.size(), states.size()) << handler.Describe();
  for (size_t i = 0; i < states.size(); ++i) EXPECT_EQ(got[i].state, states[i]) << i;
  EXPECT_EQ(handler.refused(), 3);
  const Notifier::Counters c = n.counters();
  EXPECT_EQ(c.delivered, states.size());
  EXPECT_EQ(c.failed_attempts, 3u);
  EXPECT_EQ(c.dropped_full + c.dropped_gave_up, 0u);
  EXPECT_EQ(handler.info_calls(), 1) << "the version is checked once per connection";
}

TEST_F(NotifierTest, AHandlerThatSpeaksNoVersion1GetsNothing) {
  FakeHandler handler(socket_);
  ASSERT_TRUE(handler.ok());
  handler.SetVersions({2, 3});
  Notifier::Options o = Fast();
  o.give_up_after = absl::Milliseconds(300);
  Notifier n(socket_, o);
  n.Send(Ev("u1", "Running"));
  ASSERT_TRUE(n.Flush(kEventWait));
  EXPECT_EQ(handler.count(), 0u);
  EXPECT_GE(handler.info_calls(), 1);
  EXPECT_EQ(n.counters().dropped_gave_up, 1u);
  EXPECT_EQ(n.counters().delivered, 0u);
}

TEST_F(NotifierTest, AFullQueueDropsTheOldestAndCountsIt) {
  // No server yet: nothing leaves the queue until one appears.
  Notifier::Options o = Fast();
  o.max_queued = 3;
  Notifier n(socket_, o);
  for (int i = 0; i < 6; ++i) n.Send(Ev("u" + std::to_string(i), "Running"));
  // One event may already be in flight (retrying); of the rest, the oldest
  // went. Send never waited for any of it.
  const Notifier::Counters before = n.counters();
  EXPECT_EQ(before.queued, 6u);
  EXPECT_GE(before.dropped_full, 2u);
  EXPECT_LE(before.dropped_full, 3u);
  FakeHandler handler(socket_);
  ASSERT_TRUE(handler.ok());
  ASSERT_TRUE(n.Flush(kEventWait));
  const std::vector<Event> got = handler.events();
  ASSERT_EQ(got.size(), 6u - before.dropped_full) << handler.Describe();
  EXPECT_EQ(got.back().uid, "u5");
  for (size_t i = 1; i < got.size(); ++i) EXPECT_LT(got[i - 1].uid, got[i].uid);
}

TEST_F(NotifierTest, WithoutASocketEventsAreOnlyLogged) {
  Notifier n("");
  n.Send(Ev("u1", "Running"));
  ASSERT_TRUE(n.Flush(kEventWait));
  EXPECT_EQ(n.counters().delivered, 1u);
}

}  // namespace
}  // namespace flint::shim
