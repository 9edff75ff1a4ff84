// flint-shim: the launcher KubeVirt's virt-handler drives, running VMs under
// flint (or QEMU). See k8s-shim/shim_server.h and launcher_service.h.
//
//   flint-shim --launcher-socket PATH --state-dir DIR [options]   one VM (a launcher in its pod)
//   flint-shim --node-socket PATH --state-dir DIR [options]       every VM of a node
//   flint-shim hypervisor-info [--flint PATH] [--qemu PATH] [--passt PATH]
//
// SIGTERM or SIGINT stops serving and exits 0; the VMs keep running, and a
// shim started again with the same --state-dir finds them.
#include <malloc.h>
#include <google/protobuf/util/json_util.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <iterator>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "absl/strings/match.h"
#include "k8s-shim/hypervisor_info.h"
#include "k8s-shim/launcher_service.h"
#include "k8s-shim/node_service.h"
#include "k8s-shim/notifier.h"
#include "k8s-shim/shim_server.h"
#include "k8s-shim/vm_store.h"

namespace flint::shim {
namespace {

constexpr const char* kUsage =
    "usage: flint-shim (--launcher-socket PATH | --node-socket PATH) --state-dir DIR [options]\n"
    "       flint-shim hypervisor-info [--flint PATH] [--qemu PATH] [--passt PATH]\n"
    "\n"
    "  --launcher-socket PATH  serve one VM's launcher socket (KubeVirt's launcher-sock)\n"
    "  --node-socket PATH      serve the Node service (AddVm/RemoveVm/ListVms/\n"
    "                          GetHypervisorInfo); launcher sockets are added at run time\n"
    "  --notify-socket PATH    virt-handler's notify socket; without it events are logged\n"
    "  --state-dir DIR         where VM records and VM directories live (required)\n"
    "  --backend flint|qemu    the backend for VMIs that do not choose (default flint)\n"
    "  --pod-root DIR          where the pod's paths are seen from (default /)\n"
    "  --tap-prefix NAME       TAP device name prefix for pod-network interfaces (default tap)\n"
    "  --flint PATH, --qemu PATH, --passt PATH   the programs to run\n"
    "  --allow-uid N           also accept connections from uid N (repeatable)\n";

struct Flags {
  std::string launcher_socket, node_socket, notify_socket, state_dir;
  std::string backend = "flint";
  PodPaths pod;
  BackendPrograms programs;
  std::vector<uid_t> allow_uids;
  bool hypervisor_info = false;
  bool help = false;
};

absl::Status ParseFlags(const std::vector<std::string>& args, Flags* f) {
  size_t i = 0;
  if (!args.empty() && args[0] == "hypervisor-info") {
    f->hypervisor_info = true;
    i = 1;
  }
  for (; i < args.size(); ++i) {
    std::string flag = args[i];
    if (flag == "--help" || flag == "-h") {
      f->help = true;
      return absl::OkStatus();
    }
    if (!absl::StartsWith(flag, "--")) {
      return absl::InvalidArgumentError(absl::StrFormat("unexpected argument \"%s\"", flag));
    }
    std::string value;
    const size_t eq = flag.find('=');
    if (eq != std::string::npos) {
      value = flag.substr(eq + 1);
      flag = flag.substr(0, eq);
    }
    static const char* const kCommon[] = {"--flint", "--qemu", "--passt"};
    static const char* const kServe[] = {
        "--launcher-socket", "--node-socket", "--notify-socket", "--state-dir", "--backend",
        "--pod-root",        "--tap-prefix",  "--allow-uid"};
    bool known = std::find(std::begin(kCommon), std::end(kCommon), flag) != std::end(kCommon);
    if (!f->hypervisor_info) {
      known = known || std::find(std::begin(kServe), std::end(kServe), flag) != std::end(kServe);
    }
    if (!known) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "unknown flag %s%s", flag, f->hypervisor_info ? " for hypervisor-info" : ""));
    }
    if (eq == std::string::npos) {
      if (i + 1 >= args.size()) {
        return absl::InvalidArgumentError(absl::StrFormat("%s needs a value", flag));
      }
      value = args[++i];
    }
    if (value.empty()) {
      return absl::InvalidArgumentError(absl::StrFormat("%s needs a non-empty value", flag));
    }
    std::string* target = nullptr;
    if (flag == "--flint") target = &f->programs.flint;
    else if (flag == "--qemu") target = &f->programs.qemu;
    else if (flag == "--passt") target = &f->programs.passt;
    else if (!f->hypervisor_info) {
      if (flag == "--launcher-socket") target = &f->launcher_socket;
      else if (flag == "--node-socket") target = &f->node_socket;
      else if (flag == "--notify-socket") target = &f->notify_socket;
      else if (flag == "--state-dir") target = &f->state_dir;
      else if (flag == "--backend") target = &f->backend;
      else if (flag == "--pod-root") target = &f->pod.root;
      else if (flag == "--tap-prefix") target = &f->pod.tap_prefix;
    }
    if (target != nullptr) {
      *target = value;
      continue;
    }
    if (flag == "--allow-uid" && !f->hypervisor_info) {
      uint32_t uid;
      if (!absl::SimpleAtoi(value, &uid) || uid == UINT_MAX) {
        return absl::InvalidArgumentError(
            absl::StrFormat("--allow-uid %s: a numeric uid is needed", value));
      }
      f->allow_uids.push_back(static_cast<uid_t>(uid));
      continue;
    }
    return absl::InvalidArgumentError(absl::StrFormat(
        "unknown flag %s%s", flag, f->hypervisor_info ? " for hypervisor-info" : ""));
  }
  if (f->hypervisor_info) return absl::OkStatus();
  if (f->launcher_socket.empty() == f->node_socket.empty()) {
    return absl::InvalidArgumentError(
        "give exactly one of --launcher-socket PATH (one VM) and --node-socket PATH (per node)");
  }
  if (f->state_dir.empty()) return absl::InvalidArgumentError("--state-dir DIR is required");
  if (!KnownBackend(f->backend)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("--backend %s: use flint or qemu", f->backend));
  }
  return absl::OkStatus();
}

std::string Absolute(const std::string& path) {
  if (path.empty() || path[0] == '/') return path;
  char cwd[PATH_MAX];
  if (getcwd(cwd, sizeof(cwd)) == nullptr) return path;
  return std::string(cwd) + "/" + path;
}

int HypervisorInfo(const Flags& f) {
  absl::StatusOr<v1::GetHypervisorInfoResponse> info = ProbeHypervisor(f.programs);
  if (!info.ok()) {
    std::fprintf(stderr, "flint-shim: hypervisor-info: %s\n",
                 std::string(info.status().message()).c_str());
    return 1;
  }
  google::protobuf::util::JsonPrintOptions options;
  options.add_whitespace = true;
  options.preserve_proto_field_names = true;
  options.always_print_primitive_fields = true;
  std::string json;
  (void)google::protobuf::util::MessageToJsonString(*info, &json, options);
  std::fputs(json.c_str(), stdout);
  return 0;
}

int Serve(const Flags& f) {
  // Every thread inherits this mask, so the signals wait for sigwait below.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  signal(SIGPIPE, SIG_IGN);

  VmStore store(Absolute(f.state_dir));
  if (absl::Status s = store.Open(); !s.ok()) {
    std::fprintf(stderr, "flint-shim: --state-dir %s: %s\n", f.state_dir.c_str(),
                 std::string(s.message()).c_str());
    return 1;
  }
  Notifier notifier(f.notify_socket);
  ShimContext ctx;
  ctx.store = &store;
  ctx.notifier = &notifier;
  ctx.programs = f.programs;
  ctx.pod = f.pod;
  ctx.default_backend = f.backend;

  auto server = std::make_unique<ShimServer>(&ctx, f.allow_uids);
  std::unique_ptr<NodeService> node;
  std::vector<grpc::Service*> extra;
  if (!f.node_socket.empty()) {
    node = std::make_unique<NodeService>(server.get(), &ctx.programs);
    extra.push_back(node.get());
  }
  if (absl::Status s = server->Start(extra); !s.ok()) {
    std::fprintf(stderr, "flint-shim: %s\n", std::string(s.message()).c_str());
    return 1;
  }

  std::vector<std::string> warnings;
  size_t restored = 0;
  if (!f.node_socket.empty()) {
    restored = server->Restore("", "", &warnings);
  } else {
    const std::string socket = Absolute(f.launcher_socket);
    restored = server->Restore("vm", socket, &warnings);
    if (restored == 0) {
      if (absl::Status s = server->AddSlot("vm", socket, ""); !s.ok()) {
        std::fprintf(stderr, "flint-shim: --launcher-socket: %s\n",
                     std::string(s.message()).c_str());
        server->Stop();
        return 1;
      }
    }
  }
  for (const std::string& w : warnings) std::fprintf(stderr, "flint-shim: %s\n", w.c_str());
  if (f.node_socket.empty() && !server->Listening("vm")) {
    // A launcher that serves no socket looks alive to nobody: fail, so the
    // pod restarts (the VM, if any, keeps running and is re-attached).
    std::fprintf(stderr, "flint-shim: --launcher-socket %s is not served (see above)\n",
                 f.launcher_socket.c_str());
    server->Stop();
    return 1;
  }
  if (!f.node_socket.empty()) {
    if (absl::Status s = server->ServeNodeSocket(Absolute(f.node_socket)); !s.ok()) {
      std::fprintf(stderr, "flint-shim: %s\n", std::string(s.message()).c_str());
      server->Stop();
      return 1;
    }
  }
  std::fprintf(stderr, "flint-shim: ready: %zu launcher socket(s), %zu restored, events %s\n",
               server->slot_count(), restored,
               f.notify_socket.empty() ? "logged only" : f.notify_socket.c_str());

  int sig = 0;
  sigwait(&stop_signals, &sig);
  std::fprintf(stderr, "flint-shim: %s: stopping; the VMs keep running\n", strsignal(sig));
  server->Stop();
  server.reset();
  node.reset();
  const Notifier::Counters c = notifier.counters();
  if (c.dropped_full + c.dropped_gave_up > 0) {
    std::fprintf(stderr, "flint-shim: events: %llu delivered, %llu dropped\n",
                 static_cast<unsigned long long>(c.delivered),
                 static_cast<unsigned long long>(c.dropped_full + c.dropped_gave_up));
  }
  return 0;
}

}  // namespace
}  // namespace flint::shim

int main(int argc, char** argv) {
  // One malloc arena: gRPC's threads would each get their own (with pages of
  // its own), and a node-mode shim is measured per VM it serves.
  mallopt(M_ARENA_MAX, 1);
  std::vector<std::string> args(argv + 1, argv + argc);
  flint::shim::Flags flags;
  if (absl::Status s = flint::shim::ParseFlags(args, &flags); !s.ok()) {
    std::fprintf(stderr, "flint-shim: %s\n%s", std::string(s.message()).c_str(),
                 flint::shim::kUsage);
    return 2;
  }
  if (flags.help) {
    std::fputs(flint::shim::kUsage, stdout);
    return 0;
  }
  if (flags.hypervisor_info) return flint::shim::HypervisorInfo(flags);
  return flint::shim::Serve(flags);
}
