// flintctl: a command-line client of one flint's per-VM API
// (flint.v1.VmService on `flint run --api-socket PATH`).
//   flintctl --socket PATH info|pause|resume|reset|stop|shutdown [--timeout SECONDS]|stats|
//                          swap-nic N SPEC|watch
// Prints the result on stdout; on an error prints the server's message on
// stderr and exits 1 (2 for bad usage).
#include <grpcpp/grpcpp.h>

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "vm_service.grpc.pb.h"

namespace {

using flint::v1::VmService;

constexpr const char* kUsage =
    "usage: flintctl --socket PATH COMMAND\n"
    "commands: info, pause, resume, reset, stop, shutdown [--timeout SECONDS], stats,\n"
    "          swap-nic N SPEC, watch\n"
    "shutdown presses the ACPI power button and returns; the VM is stopped by force if\n"
    "it is still running SECONDS later (0 or none: 30)\n";

int Usage() {
  std::fputs(kUsage, stderr);
  return 2;
}

int Report(const grpc::Status& s) {
  if (s.ok()) return 0;
  std::fprintf(stderr, "flintctl: %s\n", s.error_message().c_str());
  return 1;
}

const char* EventName(flint::v1::VmEvent::Kind k) {
  switch (k) {
    case flint::v1::VmEvent::KIND_STARTED: return "started";
    case flint::v1::VmEvent::KIND_PAUSED: return "paused";
    case flint::v1::VmEvent::KIND_RESUMED: return "resumed";
    case flint::v1::VmEvent::KIND_RESET: return "reset";
    case flint::v1::VmEvent::KIND_STOPPED: return "stopped";
    default: return "state";
  }
}

// Deadline for the one-shot calls: a wedged flint should not hang a script.
void SetDeadline(grpc::ClientContext* ctx) {
  ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
}

int Run(VmService::Stub& stub, const std::vector<std::string>& cmd) {
  grpc::ClientContext ctx;
  const std::string& verb = cmd[0];
  if (verb == "watch" && cmd.size() == 1) {
    flint::v1::WatchEventsRequest req;
    std::unique_ptr<grpc::ClientReader<flint::v1::VmEvent>> reader = stub.WatchEvents(&ctx, req);
    flint::v1::VmEvent e;
    while (reader->Read(&e)) {
      std::string line = EventName(e.kind());
      if (!e.reason().empty()) line += " " + e.reason();
      if (e.kind() == flint::v1::VmEvent::KIND_STOPPED) {
        line += " exit_status=" + std::to_string(e.exit_status());
      }
      std::printf("%s\n", line.c_str());
      std::fflush(stdout);
    }
    return Report(reader->Finish());
  }
  SetDeadline(&ctx);
  if (verb == "info" && cmd.size() == 1) {
    flint::v1::GetInfoResponse r;
    grpc::Status s = stub.GetInfo(&ctx, {}, &r);
    if (!s.ok()) return Report(s);
    std::printf("state %s\nvcpus %u\nmemory %llu\npid %d\nversion %s\n",
                flint::v1::VmState_Name(r.state()).c_str(), r.vcpus(),
                static_cast<unsigned long long>(r.memory_bytes()), r.pid(), r.version().c_str());
    for (const auto& d : r.disks()) {
      std::printf("disk %s%s%s queues=%u\n", d.path().c_str(), d.readonly() ? " readonly" : "",
                  d.direct() ? " direct" : "", d.queues());
    }
    for (const auto& n : r.nics()) {
      std::printf("nic %u backend=%s link=%s\n", n.index(), n.backend().c_str(),
                  n.link_up() ? "up" : "down");
    }
    return 0;
  }
  if (verb == "stats" && cmd.size() == 1) {
    flint::v1::GetStatsResponse r;
    grpc::Status s = stub.GetStats(&ctx, {}, &r);
    if (!s.ok()) return Report(s);
    std::printf("total_exits %llu\n%s", static_cast<unsigned long long>(r.total_exits()),
                r.exit_counters().c_str());
    for (const std::string& d : r.devices()) std::printf("device: %s\n", d.c_str());
    return 0;
  }
  if (verb == "shutdown" && cmd.size() <= 3) {
    std::string seconds;
    if (cmd.size() == 3 && cmd[1] == "--timeout") {
      seconds = cmd[2];
    } else if (cmd.size() == 2 && cmd[1].rfind("--timeout=", 0) == 0) {
      seconds = cmd[1].substr(10);
    } else if (cmd.size() != 1) {
      return Usage();
    }
    flint::v1::ShutdownRequest req;
    if (!seconds.empty()) {
      char* end = nullptr;
      const unsigned long v = std::strtoul(seconds.c_str(), &end, 10);
      if (*end != '\0' || seconds[0] == '-' || v > 0xffffffffu) return Usage();
      req.set_timeout_seconds(static_cast<uint32_t>(v));
    }
    flint::v1::ShutdownResponse r;
    return Report(stub.Shutdown(&ctx, req, &r));
  }
  if (verb == "swap-nic" && cmd.size() == 3) {
    char* end = nullptr;
    const unsigned long index = std::strtoul(cmd[1].c_str(), &end, 10);
    if (cmd[1].empty() || *end != '\0' || index > 0xffffffffu) return Usage();
    flint::v1::SwapNicRequest req;
    req.set_index(static_cast<uint32_t>(index));
    req.set_spec(cmd[2]);
    flint::v1::SwapNicResponse r;
    return Report(stub.SwapNic(&ctx, req, &r));
  }
  if (cmd.size() != 1) return Usage();
  if (verb == "pause") {
    flint::v1::PauseResponse r;
    return Report(stub.Pause(&ctx, {}, &r));
  }
  if (verb == "resume") {
    flint::v1::ResumeResponse r;
    return Report(stub.Resume(&ctx, {}, &r));
  }
  if (verb == "reset") {
    flint::v1::ResetResponse r;
    return Report(stub.Reset(&ctx, {}, &r));
  }
  if (verb == "stop") {
    flint::v1::StopResponse r;
    return Report(stub.Stop(&ctx, {}, &r));
  }
  return Usage();
}

}  // namespace

int main(int argc, char** argv) {
  std::string socket_path;
  std::vector<std::string> cmd;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--socket" && i + 1 < argc) {
      socket_path = argv[++i];
    } else if (a.rfind("--socket=", 0) == 0) {
      socket_path = a.substr(9);
    } else if (a == "--help") {
      std::fputs(kUsage, stdout);
      return 0;
    } else {
      cmd.push_back(a);
    }
  }
  if (socket_path.empty() || cmd.empty()) return Usage();
  std::shared_ptr<grpc::Channel> channel =
      grpc::CreateChannel("unix:" + socket_path, grpc::InsecureChannelCredentials());
  std::unique_ptr<VmService::Stub> stub = VmService::NewStub(channel);
  return Run(*stub, cmd);
}
