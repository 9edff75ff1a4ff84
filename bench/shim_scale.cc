// flint_shim_scale: the gRPC side of the shim scale bench (bench/shim_scale.py
// drives it). It plays virt-handler against a per-node flint-shim, built from
// the same protos the shim serves:
//
//   flint_shim_scale notify --socket PATH
//       serves virt-handler's NotifyInfo and Notify on PATH (for the shim's
//       --notify-socket), counts the events, prints them on SIGTERM/SIGINT
//   flint_shim_scale create --node-socket S --sock-dir D --vms N --kernel-path P
//                           [--start K] [--backend flint|qemu] [--memory 32Mi]
//                           [--kernel-args ARGS] [--concurrency 8]
//       Node.AddVm(vmNNN, D/vmNNN.sock) + Cmd.SyncVirtualMachine for vm K..K+N-1,
//       `concurrency` in flight; then GetDomain on each; prints the rate
//   flint_shim_scale list --node-socket S         one line per VM the shim serves
//   flint_shim_scale teardown --node-socket S [--concurrency 8]
//       Cmd.KillVirtualMachine + Node.RemoveVm(kill) for every VM the shim serves
//   flint_shim_scale info --node-socket S         Node.GetHypervisorInfo as JSON
//
// Output lines start with a word the driver parses (CREATE, FAIL, VM, ...).
#include <google/protobuf/struct.pb.h>
#include <google/protobuf/util/json_util.h>
#include <grpcpp/grpcpp.h>
#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "cmd.grpc.pb.h"
#include "notify.grpc.pb.h"
#include "notify_info.grpc.pb.h"
#include "shim.grpc.pb.h"

namespace flint::bench {
namespace {

using kubevirt::cmd::v1::Cmd;
using kubevirt::cmd::v1::VMIRequest;
using flint::shim::v1::Node;

// VM creation on a loaded nested-KVM host can take seconds; Sync waits for
// the VMM's API (flint) or QMP (QEMU) to answer.
constexpr absl::Duration kSyncTimeout = absl::Seconds(120);
constexpr absl::Duration kCallTimeout = absl::Seconds(30);

using Flags = std::map<std::string, std::string>;

// "--name value" pairs after the subcommand; false on a stray word.
bool ParseFlags(int argc, char** argv, Flags* flags) {
  for (int i = 2; i < argc; ++i) {
    std::string a = argv[i];
    if (a.rfind("--", 0) != 0 || i + 1 >= argc) {
      std::fprintf(stderr, "flint_shim_scale: bad argument %s\n", a.c_str());
      return false;
    }
    (*flags)[a.substr(2)] = argv[++i];
  }
  return true;
}

std::string Flag(const Flags& f, const std::string& name, const std::string& dflt = "") {
  auto it = f.find(name);
  return it == f.end() ? dflt : it->second;
}

int IntFlag(const Flags& f, const std::string& name, int dflt) {
  int v = dflt;
  const std::string s = Flag(f, name);
  if (!s.empty() && !absl::SimpleAtoi(s, &v)) {
    std::fprintf(stderr, "flint_shim_scale: --%s %s is not a number\n", name.c_str(), s.c_str());
    std::exit(2);
  }
  return v;
}

std::shared_ptr<grpc::Channel> Dial(const std::string& socket) {
  grpc::ChannelArguments args;
  // One connection per launcher socket, never shared between VMs.
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  return grpc::CreateCustomChannel("unix:" + socket, grpc::InsecureChannelCredentials(), args);
}

void SetDeadline(grpc::ClientContext* ctx, absl::Duration d) {
  ctx->set_deadline(std::chrono::system_clock::now() +
                    std::chrono::milliseconds(absl::ToInt64Milliseconds(d)));
}

std::string VmId(int i) { return absl::StrFormat("vm%03d", i); }

// The smallest VMI that boots the test guest by kernel boot: 1 vCPU, no
// disks, no NICs (so the bench measures the VMM and the shim, not passt).
std::string VmiJson(int index, const std::string& backend, const std::string& memory,
                    const std::string& kernel_path, const std::string& kernel_args) {
  return absl::StrFormat(
      R"({"apiVersion":"kubevirt.io/v1","kind":"VirtualMachineInstance",)"
      R"("metadata":{"name":"%s","namespace":"bench","uid":"00000000-0000-4000-8000-%s",)"
      R"("annotations":{"flint.dev/backend":"%s"}},)"
      R"("spec":{"terminationGracePeriodSeconds":0,"domain":{"cpu":{"cores":1},)"
      R"("memory":{"guest":"%s"},"resources":{"requests":{"memory":"%s"}},)"
      R"("firmware":{"kernelBoot":{"kernelArgs":"%s","container":{"image":"bench/flint-guest",)"
      R"("kernelPath":"%s"}}},"devices":{}}}})",
      VmId(index), absl::StrFormat("%012d", index), backend, memory, memory, kernel_args,
      kernel_path);
}

// Status.Status of a domain JSON ("Running", ...); "" for no domain.
std::string DomainState(const std::string& domain_json) {
  if (domain_json.empty()) return "";
  google::protobuf::Struct s;
  if (!google::protobuf::util::JsonStringToMessage(domain_json, &s).ok()) return "(bad JSON)";
  auto st = s.fields().find("Status");
  if (st == s.fields().end()) return "(no Status)";
  auto inner = st->second.struct_value().fields().find("Status");
  if (inner == st->second.struct_value().fields().end()) return "(no Status.Status)";
  return inner->second.string_value();
}

// Runs fn(i) for i in [0, n) on `workers` threads.
template <typename Fn>
void ParallelFor(int n, int workers, Fn fn) {
  std::atomic<int> next{0};
  std::vector<std::thread> threads;
  for (int w = 0; w < std::max(1, std::min(workers, n)); ++w) {
    threads.emplace_back([&] {
      for (int i = next++; i < n; i = next++) fn(i);
    });
  }
  for (std::thread& t : threads) t.join();
}

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p * (v.size() - 1) + 0.5))];
}

int Create(const Flags& f) {
  const std::string node_socket = Flag(f, "node-socket");
  const std::string sock_dir = Flag(f, "sock-dir");
  const std::string kernel_path = Flag(f, "kernel-path");
  if (node_socket.empty() || sock_dir.empty() || kernel_path.empty()) {
    std::fprintf(stderr, "create needs --node-socket, --sock-dir and --kernel-path\n");
    return 2;
  }
  const int n = IntFlag(f, "vms", 200);
  const int start = IntFlag(f, "start", 0);
  const int concurrency = IntFlag(f, "concurrency", 8);
  const std::string backend = Flag(f, "backend", "flint");
  const std::string memory = Flag(f, "memory", "32Mi");
  const std::string kernel_args = Flag(f, "kernel-args", "flint.prog=idle");

  auto node = Node::NewStub(Dial(node_socket));
  absl::Mutex mu;
  std::vector<double> sync_ms;
  int ok = 0;
  const absl::Time t0 = absl::Now();
  ParallelFor(n, concurrency, [&](int k) {
    const std::string id = VmId(start + k);
    const std::string socket = sock_dir + "/" + id + ".sock";
    auto fail = [&](const std::string& what, const std::string& msg) {
      absl::MutexLock l(&mu);
      std::printf("FAIL %s %s: %s\n", id.c_str(), what.c_str(), msg.c_str());
      std::fflush(stdout);
    };
    {
      grpc::ClientContext ctx;
      SetDeadline(&ctx, kCallTimeout);
      flint::shim::v1::AddVmRequest req;
      req.set_id(id);
      req.set_launcher_socket(socket);
      req.set_backend(backend);
      flint::shim::v1::AddVmResponse resp;
      grpc::Status s = node->AddVm(&ctx, req, &resp);
      if (!s.ok()) return fail("AddVm", s.error_message());
    }
    auto cmd = Cmd::NewStub(Dial(socket));
    grpc::ClientContext ctx;
    SetDeadline(&ctx, kSyncTimeout);
    VMIRequest req;
    req.mutable_vmi()->set_vmijson(VmiJson(start + k, backend, memory, kernel_path, kernel_args));
    kubevirt::cmd::v1::Response resp;
    const absl::Time s0 = absl::Now();
    grpc::Status s = cmd->SyncVirtualMachine(&ctx, req, &resp);
    const double ms = absl::ToDoubleMilliseconds(absl::Now() - s0);
    if (!s.ok()) return fail("SyncVirtualMachine", s.error_message());
    if (!resp.success()) return fail("SyncVirtualMachine", resp.message());
    absl::MutexLock l(&mu);
    sync_ms.push_back(ms);
    ++ok;
  });
  const double seconds = absl::ToDoubleSeconds(absl::Now() - t0);

  // Every VM that synced must be Running by the shim's own account.
  std::atomic<int> running{0};
  ParallelFor(n, concurrency, [&](int k) {
    const std::string id = VmId(start + k);
    auto cmd = Cmd::NewStub(Dial(sock_dir + "/" + id + ".sock"));
    grpc::ClientContext ctx;
    SetDeadline(&ctx, kCallTimeout);
    kubevirt::cmd::v1::EmptyRequest req;
    kubevirt::cmd::v1::DomainResponse resp;
    grpc::Status s = cmd->GetDomain(&ctx, req, &resp);
    if (s.ok() && resp.response().success() && DomainState(resp.domain()) == "Running") {
      ++running;
    }
  });
  std::printf(
      "CREATE backend=%s vms=%d ok=%d failed=%d running=%d seconds=%.3f rate=%.2f "
      "sync_p50_ms=%.1f sync_p90_ms=%.1f sync_max_ms=%.1f\n",
      backend.c_str(), n, ok, n - ok, running.load(), seconds, seconds > 0 ? ok / seconds : 0.0,
      Percentile(sync_ms, 0.5), Percentile(sync_ms, 0.9), Percentile(sync_ms, 1.0));
  return ok == n && running == n ? 0 : 1;
}

bool ListVms(Node::Stub* node, flint::shim::v1::ListVmsResponse* out) {
  grpc::ClientContext ctx;
  SetDeadline(&ctx, kCallTimeout);
  flint::shim::v1::ListVmsRequest req;
  grpc::Status s = node->ListVms(&ctx, req, out);
  if (!s.ok()) std::printf("FAIL - ListVms: %s\n", s.error_message().c_str());
  return s.ok();
}

int List(const Flags& f) {
  auto node = Node::NewStub(Dial(Flag(f, "node-socket")));
  flint::shim::v1::ListVmsResponse vms;
  if (!ListVms(node.get(), &vms)) return 1;
  for (const auto& r : vms.vms()) {
    std::printf("VM %s backend=%s pid=%d start_time=%llu vm_dir=%s\n", r.id().c_str(),
                r.backend().empty() ? "-" : r.backend().c_str(), r.pid(),
                static_cast<unsigned long long>(r.pid_start_time()),
                r.vm_dir().empty() ? "-" : r.vm_dir().c_str());
  }
  return 0;
}

int Teardown(const Flags& f) {
  auto node = Node::NewStub(Dial(Flag(f, "node-socket")));
  flint::shim::v1::ListVmsResponse vms;
  if (!ListVms(node.get(), &vms)) return 1;
  absl::Mutex mu;
  int killed = 0, removed = 0;
  const absl::Time t0 = absl::Now();
  ParallelFor(vms.vms_size(), IntFlag(f, "concurrency", 8), [&](int k) {
    const auto& r = vms.vms(k);
    // Kill through the launcher socket, as virt-handler does; RemoveVm(kill)
    // then stops whatever Kill did not (a VM that never synced has none).
    bool kill_ok = false;
    if (r.pid() != 0) {
      auto cmd = Cmd::NewStub(Dial(r.launcher_socket()));
      grpc::ClientContext ctx;
      SetDeadline(&ctx, kCallTimeout);
      VMIRequest req;
      req.mutable_vmi()->set_vmijson(r.vmi_json());
      kubevirt::cmd::v1::Response resp;
      grpc::Status s = cmd->KillVirtualMachine(&ctx, req, &resp);
      kill_ok = s.ok() && resp.success();
      if (!kill_ok) {
        absl::MutexLock l(&mu);
        std::printf("FAIL %s KillVirtualMachine: %s\n", r.id().c_str(),
                    s.ok() ? resp.message().c_str() : s.error_message().c_str());
      }
    }
    grpc::ClientContext ctx;
    SetDeadline(&ctx, kCallTimeout);
    flint::shim::v1::RemoveVmRequest req;
    req.set_id(r.id());
    req.set_kill(true);
    flint::shim::v1::RemoveVmResponse resp;
    grpc::Status s = node->RemoveVm(&ctx, req, &resp);
    absl::MutexLock l(&mu);
    if (kill_ok) ++killed;
    if (s.ok()) {
      ++removed;
    } else {
      std::printf("FAIL %s RemoveVm: %s\n", r.id().c_str(), s.error_message().c_str());
    }
  });
  std::printf("TEARDOWN listed=%d killed=%d removed=%d seconds=%.3f\n", vms.vms_size(), killed,
              removed, absl::ToDoubleSeconds(absl::Now() - t0));
  return removed == vms.vms_size() ? 0 : 1;
}

int Info(const Flags& f) {
  auto node = Node::NewStub(Dial(Flag(f, "node-socket")));
  grpc::ClientContext ctx;
  SetDeadline(&ctx, absl::Seconds(120));  // the first call boots a measuring VM
  flint::shim::v1::GetHypervisorInfoRequest req;
  flint::shim::v1::GetHypervisorInfoResponse resp;
  grpc::Status s = node->GetHypervisorInfo(&ctx, req, &resp);
  if (!s.ok()) {
    std::printf("FAIL - GetHypervisorInfo: %s\n", s.error_message().c_str());
    return 1;
  }
  std::string json;
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  (void)google::protobuf::util::MessageToJsonString(resp, &json, options);
  std::printf("INFO %s\n", json.c_str());
  return 0;
}

// virt-handler's side of the events: accept every one, count by type.
class NotifySink final : public kubevirt::notify::v1::Notify::Service {
 public:
  grpc::Status HandleDomainEvent(grpc::ServerContext*,
                                 const kubevirt::notify::v1::DomainEventRequest* in,
                                 kubevirt::notify::v1::Response* out) override {
    absl::MutexLock l(&mu_);
    ++counts_[in->eventtype()];
    out->set_success(true);
    return grpc::Status::OK;
  }
  grpc::Status HandleK8sEvent(grpc::ServerContext*, const kubevirt::notify::v1::K8sEventRequest*,
                              kubevirt::notify::v1::Response* out) override {
    absl::MutexLock l(&mu_);
    ++counts_["k8s"];
    out->set_success(true);
    return grpc::Status::OK;
  }
  std::string Summary() {
    absl::MutexLock l(&mu_);
    std::string s;
    int total = 0;
    for (const auto& [k, v] : counts_) {
      s += absl::StrFormat(" %s=%d", k, v);
      total += v;
    }
    return absl::StrFormat("events=%d%s", total, s);
  }

 private:
  absl::Mutex mu_;
  std::map<std::string, int> counts_;
};

class NotifyInfoSink final : public kubevirt::notify::info::NotifyInfo::Service {
  grpc::Status Info(grpc::ServerContext*, const kubevirt::notify::info::NotifyInfoRequest*,
                    kubevirt::notify::info::NotifyInfoResponse* out) override {
    out->add_supportednotifyversions(1);
    return grpc::Status::OK;
  }
};

int Notify(const Flags& f) {
  const std::string socket = Flag(f, "socket");
  if (socket.empty()) {
    std::fprintf(stderr, "notify needs --socket\n");
    return 2;
  }
  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, SIGTERM);
  sigaddset(&stop, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop, nullptr);
  unlink(socket.c_str());
  NotifySink sink;
  NotifyInfoSink info;
  grpc::ServerBuilder b;
  b.AddListeningPort("unix:" + socket, grpc::InsecureServerCredentials());
  b.RegisterService(&sink);
  b.RegisterService(&info);
  std::unique_ptr<grpc::Server> server = b.BuildAndStart();
  if (!server) {
    std::fprintf(stderr, "notify: cannot listen on %s\n", socket.c_str());
    return 1;
  }
  std::printf("NOTIFY ready %s\n", socket.c_str());
  std::fflush(stdout);
  int sig = 0;
  sigwait(&stop, &sig);
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  std::printf("NOTIFY %s\n", sink.Summary().c_str());
  unlink(socket.c_str());
  return 0;
}

}  // namespace
}  // namespace flint::bench

int main(int argc, char** argv) {
  using namespace flint::bench;
  if (argc < 2) {
    std::fprintf(stderr,
                 "usage: flint_shim_scale notify|create|list|teardown|info --flag value...\n");
    return 2;
  }
  // One channel per VM: raise the fd limit as far as this process may.
  rlimit rl{};
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
  Flags flags;
  if (!ParseFlags(argc, argv, &flags)) return 2;
  const std::string cmd = argv[1];
  int rc = 2;
  if (cmd == "notify") rc = Notify(flags);
  else if (cmd == "create") rc = Create(flags);
  else if (cmd == "list") rc = List(flags);
  else if (cmd == "teardown") rc = Teardown(flags);
  else if (cmd == "info") rc = Info(flags);
  else std::fprintf(stderr, "flint_shim_scale: unknown command %s\n", cmd.c_str());
  std::fflush(stdout);
  return rc;
}
