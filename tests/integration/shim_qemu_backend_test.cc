// The shim's QEMU backend: the QMP client against a scripted fake QMP server
// (lines split across reads, several lines in one read, error replies, a
// server that never answers, one that closes or sends garbage), then real
// QEMU 7.2 (microvm, KVM) running the test guest: start, pause/resume, block
// statistics after the guest's disk I/O, a NIC through the backend's own
// passt, attach after the Backend is gone, kill, guest power-off, a graceful
// shutdown the guest ignores, a SIGKILLed QEMU.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <fstream>
#include <functional>
#include <iterator>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "k8s-shim/backend.h"
#include "k8s-shim/process.h"
#include "k8s-shim/qmp.h"
#include "tests/support/disk_image.h"
#include "tests/support/subprocess.h"
#include "vmm/kvm/unique_fd.h"

namespace flint::shim {
namespace {

using ::flint::UniqueFd;

std::string ReadText(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// Polls `pred` until it holds or `limit` passes (a bound for a failing test,
// never what decides a pass).
bool WaitUntil(const std::function<bool()>& pred, absl::Duration limit = absl::Seconds(60)) {
  const absl::Time end = absl::Now() + limit;
  while (absl::Now() < end) {
    if (pred()) return true;
    absl::SleepFor(absl::Milliseconds(10));
  }
  return pred();
}

class TempDir {
 public:
  TempDir() {
    std::string tmpl = std::string(FLINT_BUILD_ROOT) + "/shim-qemu-XXXXXX";
    if (mkdtemp(tmpl.data()) != nullptr) path_ = tmpl;
  }
  ~TempDir() {
    if (!path_.empty()) ::flint::testing::RunProcess({"/bin/rm", "-rf", path_});
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// ---- A fake QMP server ------------------------------------------------------------

class FakeQmp {
 public:
  explicit FakeQmp(const std::string& dir) : path_(dir + "/fake-qmp.sock") {
    listen_.reset(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    snprintf(a.sun_path, sizeof(a.sun_path), "%s", path_.c_str());
    ok_ = listen_.valid() && bind(listen_.get(), reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0 &&
          listen(listen_.get(), 4) == 0;
  }
  ~FakeQmp() {
    if (thread_.joinable()) thread_.join();
  }
  bool ok() const { return ok_; }
  const std::string& path() const { return path_; }

  // Runs `script` on a thread once a client connected.
  void Serve(std::function<void(FakeQmp&)> script) {
    thread_ = std::thread([this, script = std::move(script)] {
      conn_.reset(accept4(listen_.get(), nullptr, nullptr, SOCK_CLOEXEC));
      if (conn_.valid()) script(*this);
    });
  }

  void Send(const std::string& bytes) {
    size_t off = 0;
    while (off < bytes.size()) {
      const ssize_t n = send(conn_.get(), bytes.data() + off, bytes.size() - off, MSG_NOSIGNAL);
      if (n <= 0) return;
      off += static_cast<size_t>(n);
    }
  }
  // One byte per send with a pause between, so the client's reads see the
  // line in pieces.
  void Trickle(const std::string& bytes) {
    for (char c : bytes) {
      Send(std::string(1, c));
      usleep(200);
    }
  }
  // The next line the client sent ("" at EOF).
  std::string ReadLine() {
    for (;;) {
      const size_t nl = in_.find('\n');
      if (nl != std::string::npos) {
        std::string line = in_.substr(0, nl);
        in_.erase(0, nl + 1);
        return line;
      }
      char buf[4096];
      const ssize_t n = read(conn_.get(), buf, sizeof(buf));
      if (n <= 0) return "";
      in_.append(buf, static_cast<size_t>(n));
    }
  }
  // The "id" of a command line.
  static std::string Id(const std::string& line) {
    const std::string key = "\"id\":\"";
    const size_t p = line.find(key);
    if (p == std::string::npos) return "";
    const size_t e = line.find('"', p + key.size());
    return line.substr(p + key.size(), e - p - key.size());
  }
  static std::string Reply(const std::string& id, const std::string& ret) {
    return absl::StrCat("{\"return\": ", ret, ", \"id\": \"", id, "\"}\r\n");
  }
  static constexpr const char* kGreeting =
      "{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 22, \"minor\": 2, \"major\": 7}, "
      "\"package\": \"fake\"}, \"capabilities\": [\"oob\"]}}\r\n";

  // Greeting and qmp_capabilities; returns that command's line.
  std::string Handshake() {
    Send(kGreeting);
    const std::string caps = ReadLine();
    Send(Reply(Id(caps), "{}"));
    return caps;
  }
  void Close() { conn_.reset(); }

 private:
  std::string path_;
  UniqueFd listen_, conn_;
  bool ok_ = false;
  std::thread thread_;
  std::string in_;
};

struct Recorder {
  absl::Mutex mu;
  std::vector<QmpEvent> events;
  std::vector<absl::Status> closes;
  QmpOptions Options() {
    QmpOptions o;
    o.connect_timeout = absl::Seconds(20);
    o.on_event = [this](const QmpEvent& e) {
      absl::MutexLock l(&mu);
      events.push_back(e);
    };
    o.on_closed = [this](const absl::Status& s) {
      absl::MutexLock l(&mu);
      closes.push_back(s);
    };
    return o;
  }
  size_t CloseCount() {
    absl::MutexLock l(&mu);
    return closes.size();
  }
};

class QmpClientTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_FALSE(dir_.path().empty());
    ASSERT_TRUE(server_.ok());
  }
  TempDir dir_;
  FakeQmp server_{dir_.path()};
  Recorder rec_;
};

TEST_F(QmpClientTest, LinesSplitAcrossReadsAndSeveralInOneRead) {
  std::string caps_line;
  server_.Serve([&](FakeQmp& s) {
    s.Trickle(FakeQmp::kGreeting);
    caps_line = s.ReadLine();
    s.Trickle(FakeQmp::Reply(FakeQmp::Id(caps_line), "{}"));
    const std::string q = s.ReadLine();
    // An event and the reply in one write, the reply's end in a second one.
    const std::string reply = FakeQmp::Reply(
        FakeQmp::Id(q), "{\"status\": \"running\", \"singlestep\": false, \"running\": true}");
    s.Send(absl::StrCat("{\"timestamp\": {\"seconds\": 1, \"microseconds\": 2}, \"event\": "
                        "\"STOP\"}\r\n{\"event\": \"SHUTDOWN\", \"data\": {\"guest\": true, "
                        "\"reason\": \"guest-shutdown\"}}\r\n",
                        reply.substr(0, 20)));
    usleep(2000);
    s.Send(reply.substr(20));
    s.ReadLine();  // until the client leaves
  });
  absl::StatusOr<std::unique_ptr<QmpClient>> c = QmpClient::Connect(server_.path(), rec_.Options());
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_TRUE(absl::StrContains(caps_line, "\"execute\":\"qmp_capabilities\"")) << caps_line;
  auto v = (*c)->greeting().fields().find("version");
  ASSERT_NE(v, (*c)->greeting().fields().end());
  EXPECT_EQ(QmpVersionString(v->second.struct_value()), "7.2.22");

  absl::StatusOr<google::protobuf::Value> r = (*c)->Execute("query-status");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->struct_value().fields().at("status").string_value(), "running");
  // Events are delivered in order, before the reply that followed them.
  absl::MutexLock l(&rec_.mu);
  ASSERT_EQ(rec_.events.size(), 2u);
  EXPECT_EQ(rec_.events[0].name, "STOP");
  EXPECT_TRUE(rec_.events[0].data.fields().empty());
  EXPECT_EQ(rec_.events[1].name, "SHUTDOWN");
  EXPECT_TRUE(rec_.events[1].data.fields().at("guest").bool_value());
  EXPECT_EQ(rec_.events[1].data.fields().at("reason").string_value(), "guest-shutdown");
}

TEST_F(QmpClientTest, ErrorRepliesBecomeStatuses) {
  server_.Serve([](FakeQmp& s) {
    s.Handshake();
    std::string l = s.ReadLine();
    s.Send(absl::StrCat("{\"id\": \"", FakeQmp::Id(l),
                        "\", \"error\": {\"class\": \"GenericError\", \"desc\": "
                        "\"no can do\"}}\n"));
    l = s.ReadLine();
    s.Send(absl::StrCat("{\"error\": {\"class\": \"CommandNotFound\", \"desc\": \"The command "
                        "nope has not been found\"}, \"id\": \"",
                        FakeQmp::Id(l), "\"}\n"));
    s.ReadLine();
  });
  absl::StatusOr<std::unique_ptr<QmpClient>> c = QmpClient::Connect(server_.path(), rec_.Options());
  ASSERT_TRUE(c.ok()) << c.status();
  absl::Status e = (*c)->Execute("stop").status();
  EXPECT_EQ(e.code(), absl::StatusCode::kFailedPrecondition) << e;
  EXPECT_TRUE(absl::StrContains(e.message(), "no can do")) << e;
  EXPECT_TRUE(absl::StrContains(e.message(), "GenericError")) << e;
  e = (*c)->Execute("nope").status();
  EXPECT_EQ(e.code(), absl::StatusCode::kUnimplemented) << e;
  // Not a command name: refused before anything is sent.
  e = (*c)->Execute("stop\",\"x").status();
  EXPECT_EQ(e.code(), absl::StatusCode::kInvalidArgument) << e;
}

TEST_F(QmpClientTest, CommandArgumentsAreSentAsJson) {
  std::string line;
  server_.Serve([&](FakeQmp& s) {
    s.Handshake();
    line = s.ReadLine();
    s.Send(FakeQmp::Reply(FakeQmp::Id(line), "\"52:54:00:00:00:01\""));
    s.ReadLine();
  });
  absl::StatusOr<std::unique_ptr<QmpClient>> c = QmpClient::Connect(server_.path(), rec_.Options());
  ASSERT_TRUE(c.ok()) << c.status();
  google::protobuf::Struct args;
  (*args.mutable_fields())["path"].set_string_value("/machine/peripheral/net0");
  absl::StatusOr<google::protobuf::Value> r = (*c)->Execute("qom-get", &args);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->string_value(), "52:54:00:00:00:01");
  EXPECT_TRUE(absl::StrContains(line, "\"arguments\":{\"path\":\"/machine/peripheral/net0\"}"))
      << line;
}

// A reply that never comes is a deadline error; when it comes late it is
// not mistaken for the reply to the next command.
TEST_F(QmpClientTest, NoReplyIsADeadlineAndALateReplyIsDropped) {
  absl::Notification first_timed_out;
  server_.Serve([&](FakeQmp& s) {
    s.Handshake();
    const std::string first = s.ReadLine();
    first_timed_out.WaitForNotification();
    s.Send(FakeQmp::Reply(FakeQmp::Id(first), "\"stale\""));
    const std::string second = s.ReadLine();
    s.Send(FakeQmp::Reply(FakeQmp::Id(second), "\"fresh\""));
    s.ReadLine();
  });
  absl::StatusOr<std::unique_ptr<QmpClient>> c = QmpClient::Connect(server_.path(), rec_.Options());
  ASSERT_TRUE(c.ok()) << c.status();
  absl::StatusOr<google::protobuf::Value> r =
      (*c)->Execute("query-status", nullptr, absl::Milliseconds(200));
  EXPECT_EQ(r.status().code(), absl::StatusCode::kDeadlineExceeded) << r.status();
  first_timed_out.Notify();
  r = (*c)->Execute("query-version");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->string_value(), "fresh");
  EXPECT_FALSE((*c)->closed());
}

// Two threads with commands in flight; the server answers in reverse order.
TEST_F(QmpClientTest, RepliesAreMatchedById) {
  server_.Serve([](FakeQmp& s) {
    s.Handshake();
    const std::string a = s.ReadLine();
    const std::string b = s.ReadLine();
    s.Send(FakeQmp::Reply(FakeQmp::Id(b), absl::StrCat("\"", b.substr(12, 5), "\"")));
    s.Send(FakeQmp::Reply(FakeQmp::Id(a), absl::StrCat("\"", a.substr(12, 5), "\"")));
    s.ReadLine();
  });
  absl::StatusOr<std::unique_ptr<QmpClient>> c = QmpClient::Connect(server_.path(), rec_.Options());
  ASSERT_TRUE(c.ok()) << c.status();
  // Each reply echoes the first five letters of its own command's name.
  absl::StatusOr<google::protobuf::Value> r1, r2;
  std::thread t([&] { r1 = (*c)->Execute("alpha-command"); });
  std::thread u([&] { r2 = (*c)->Execute("omega-command"); });
  t.join();
  u.join();
  ASSERT_TRUE(r1.ok() && r2.ok()) << r1.status() << r2.status();
  EXPECT_EQ(r1->string_value(), "alpha");
  EXPECT_EQ(r2->string_value(), "omega");
}

TEST_F(QmpClientTest, ServerClosingEndsTheSession) {
  server_.Serve([](FakeQmp& s) {
    s.Handshake();
    s.ReadLine();
    s.Close();
  });
  absl::StatusOr<std::unique_ptr<QmpClient>> c = QmpClient::Connect(server_.path(), rec_.Options());
  ASSERT_TRUE(c.ok()) << c.status();
  absl::Status e = (*c)->Execute("stop").status();
  EXPECT_EQ(e.code(), absl::StatusCode::kUnavailable) << e;
  ASSERT_TRUE(WaitUntil([&] { return rec_.CloseCount() > 0; }));
  EXPECT_TRUE((*c)->closed());
  e = (*c)->Execute("cont").status();
  EXPECT_EQ(e.code(), absl::StatusCode::kUnavailable) << e;
  EXPECT_EQ(rec_.CloseCount(), 1u);
}

TEST_F(QmpClientTest, OverlongLineEndsTheSession) {
  server_.Serve([](FakeQmp& s) {
    s.Handshake();
    s.ReadLine();
    s.Send("{\"return\": \"" + std::string(8192, 'x'));  // no end in sight
    s.ReadLine();
  });
  QmpOptions o = rec_.Options();
  o.max_line_bytes = 4096;
  absl::StatusOr<std::unique_ptr<QmpClient>> c = QmpClient::Connect(server_.path(), o);
  ASSERT_TRUE(c.ok()) << c.status();
  absl::Status e = (*c)->Execute("query-status").status();
  EXPECT_EQ(e.code(), absl::StatusCode::kUnavailable) << e;
  // on_closed runs just after the waiting commands were failed.
  ASSERT_TRUE(WaitUntil([&] { return rec_.CloseCount() > 0; }));
  absl::MutexLock l(&rec_.mu);
  ASSERT_EQ(rec_.closes.size(), 1u);
  EXPECT_EQ(rec_.closes[0].code(), absl::StatusCode::kResourceExhausted) << rec_.closes[0];
}

TEST_F(QmpClientTest, NonJsonLineEndsTheSession) {
  server_.Serve([](FakeQmp& s) {
    s.Handshake();
    s.ReadLine();
    s.Send("this is not json\n");
    s.ReadLine();
  });
  absl::StatusOr<std::unique_ptr<QmpClient>> c = QmpClient::Connect(server_.path(), rec_.Options());
  ASSERT_TRUE(c.ok()) << c.status();
  absl::Status e = (*c)->Execute("query-status").status();
  EXPECT_EQ(e.code(), absl::StatusCode::kUnavailable) << e;
  EXPECT_TRUE(absl::StrContains(e.message(), "not a JSON object")) << e;
}

TEST_F(QmpClientTest, ExecuteFromAnEventCallbackFailsInsteadOfDeadlocking) {
  server_.Serve([](FakeQmp& s) {
    s.Handshake();
    const std::string l = s.ReadLine();
    s.Send("{\"event\": \"RESUME\"}\n" + FakeQmp::Reply(FakeQmp::Id(l), "{}"));
    s.ReadLine();
  });
  QmpClient* client = nullptr;
  absl::Status from_callback;
  QmpOptions o = rec_.Options();
  o.on_event = [&](const QmpEvent&) { from_callback = client->Execute("stop").status(); };
  absl::StatusOr<std::unique_ptr<QmpClient>> c = QmpClient::Connect(server_.path(), o);
  ASSERT_TRUE(c.ok()) << c.status();
  client = c->get();
  ASSERT_TRUE((*c)->Execute("cont").ok());
  EXPECT_EQ(from_callback.code(), absl::StatusCode::kFailedPrecondition) << from_callback;
}

TEST_F(QmpClientTest, NoGreetingIsADeadline) {
  server_.Serve([](FakeQmp& s) { s.ReadLine(); });  // accepts, says nothing
  QmpOptions o = rec_.Options();
  o.connect_timeout = absl::Milliseconds(300);
  absl::StatusOr<std::unique_ptr<QmpClient>> c = QmpClient::Connect(server_.path(), o);
  EXPECT_EQ(c.status().code(), absl::StatusCode::kDeadlineExceeded) << c.status();
}

TEST(QmpConnect, GivesUpWhenAsked) {
  TempDir dir;
  QmpOptions o;
  o.connect_timeout = absl::Seconds(30);
  int polls = 0;
  o.give_up = [&] { return ++polls >= 3; };
  absl::StatusOr<std::unique_ptr<QmpClient>> c =
      QmpClient::Connect(dir.path() + "/nobody.sock", o);
  EXPECT_EQ(c.status().code(), absl::StatusCode::kUnavailable) << c.status();
  EXPECT_EQ(polls, 3);
}

// ---- The QEMU backend over the fake server -----------------------------------------

struct Events {
  absl::Mutex mu;
  std::vector<BackendEvent> list;
  EventSink Sink() {
    return [this](const BackendEvent& e) {
      absl::MutexLock l(&mu);
      list.push_back(e);
    };
  }
  // Waits for an event with that state and reason.
  bool Saw(DomainState state, const std::string& reason,
           absl::Duration limit = absl::Seconds(30)) {
    return WaitUntil(
        [&] {
          absl::MutexLock l(&mu);
          for (const BackendEvent& e : list) {
            if (e.status.state == state && e.status.reason == reason) return true;
          }
          return false;
        },
        limit);
  }
  // "state/reason" of every event so far, one per line.
  std::string Sequence() {
    absl::MutexLock l(&mu);
    std::string s;
    for (const BackendEvent& e : list) {
      absl::StrAppend(&s, DomainStateName(e.status.state), "/", e.status.reason, "\n");
    }
    return s;
  }
  std::string Dump() {
    absl::MutexLock l(&mu);
    std::string s;
    for (const BackendEvent& e : list) {
      absl::StrAppend(&s, DomainStateName(e.status.state), "/", e.status.reason, " (", e.detail,
                      ")\n");
    }
    return s;
  }
};

// AttachQemu to a stand-in process (sleep) whose "QMP socket" is the fake
// server: QEMU's events as the backend maps them, without QEMU.
class FakeQemuTest : public QmpClientTest {
 protected:
  void SetUp() override {
    QmpClientTest::SetUp();
    absl::StatusOr<ProcessId> p = SpawnDetached({"/bin/sleep", "300"}, dir_.path() + "/sleep.log");
    ASSERT_TRUE(p.ok()) << p.status();
    stand_in_ = *p;
    record_.set_backend("qemu");
    record_.set_pid(stand_in_.pid);
    record_.set_pid_start_time(stand_in_.start_time);
    record_.set_api_socket(server_.path());
    record_.set_vm_dir(dir_.path());
  }
  void TearDown() override {
    if (stand_in_.pid > 0 && ProcessAlive(stand_in_)) kill(stand_in_.pid, SIGKILL);
  }
  // Handshake, then query-status answered with `state`.
  static void Attached(FakeQmp& s, const std::string& state) {
    s.Handshake();
    const std::string q = s.ReadLine();
    s.Send(FakeQmp::Reply(FakeQmp::Id(q), "{\"status\": \"" + state + "\", \"running\": " +
                                              (state == "running" ? "true" : "false") + "}"));
  }
  ProcessId stand_in_;
  flint::shim::v1::VmRecord record_;
  Events events_;
};

TEST_F(FakeQemuTest, EventsMapToKubeVirtStates) {
  absl::Notification killed;
  server_.Serve([&](FakeQmp& s) {
    Attached(s, "running");
    s.Send(
        "{\"event\": \"STOP\"}\n"
        "{\"event\": \"RESUME\"}\n"
        "{\"event\": \"RESET\", \"data\": {\"guest\": true, \"reason\": \"guest-reset\"}}\n"
        "{\"event\": \"BLOCK_IO_ERROR\", \"data\": {\"device\": \"d0\", \"operation\": "
        "\"write\", \"action\": \"stop\"}}\n"
        "{\"event\": \"STOP\"}\n"
        "{\"event\": \"GUEST_PANICKED\", \"data\": {\"action\": \"pause\"}}\n"
        "{\"event\": \"STOP\"}\n");
    killed.WaitForNotification();
    s.Close();
  });
  absl::StatusOr<std::unique_ptr<Backend>> b = AttachQemu(record_, events_.Sink());
  ASSERT_TRUE(b.ok()) << b.status();
  ASSERT_TRUE(events_.Saw(DomainState::kCrashed, "Panicked")) << events_.Dump();
  // QEMU dies; its socket closes: the end is the panic, not a plain crash.
  kill(stand_in_.pid, SIGKILL);
  killed.Notify();
  ASSERT_TRUE(WaitUntil([&] { return absl::StrContains(events_.Dump(), "QEMU exited"); }))
      << events_.Dump();
  EXPECT_EQ(events_.Sequence(),
            "Paused/User\nRunning/Unknown\nRunning/Booted\nPaused/IOError\nCrashed/Panicked\n"
            "Crashed/Panicked\n")
      << events_.Dump();
  const DomainStatus st = (*b)->Status();
  EXPECT_EQ(st.state, DomainState::kCrashed);
  EXPECT_EQ(st.reason, "Panicked");
}

// A broken session with the process still there: commands fail, Kill still
// stops it (by signal).
TEST_F(FakeQemuTest, LostSessionLeavesKillWorking) {
  server_.Serve([](FakeQmp& s) {
    Attached(s, "paused");
    s.Send("garbage\n");
    s.ReadLine();
  });
  absl::StatusOr<std::unique_ptr<Backend>> b = AttachQemu(record_, events_.Sink());
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ((*b)->Status().state, DomainState::kPaused);
  ASSERT_TRUE(WaitUntil([&] { return (*b)->Resume().code() == absl::StatusCode::kUnavailable; }));
  ASSERT_TRUE((*b)->Kill().ok());
  EXPECT_FALSE(ProcessAlive(stand_in_));
  EXPECT_TRUE(events_.Saw(DomainState::kShutoff, "Destroyed")) << events_.Dump();
}

// ---- Real QEMU --------------------------------------------------------------------

constexpr const char* kQemu = "/usr/bin/qemu-system-x86_64";
constexpr const char* kPasst = "/usr/bin/passt";

class QemuBackendTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string why;
    if (!::flint::testing::KvmAvailable(&why)) GTEST_SKIP() << why;
    if (access(kQemu, X_OK) != 0) {
      GTEST_SKIP() << kQemu << " missing (apt-get install qemu-system-x86)";
    }
    ASSERT_FALSE(dir_.path().empty());
    vm_dir_ = dir_.path() + "/vm";
    ASSERT_EQ(mkdir(vm_dir_.c_str(), 0700), 0);
    programs_.qemu = kQemu;
    programs_.passt = kPasst;
  }
  void TearDown() override {
    // Never leave a QEMU behind, whatever the test did.
    if (pid_.pid > 0 && ProcessAlive(pid_)) {
      kill(pid_.pid, SIGKILL);
      WaitProcessGone(pid_, absl::Seconds(5));
    }
  }

  LaunchSpec Spec(const std::string& prog) {
    LaunchSpec spec;
    spec.vm_dir = vm_dir_;
    spec.config.set_cpus(1);
    spec.config.set_memory_mib(64);
    spec.config.set_kernel(FLINT_GUEST_ELF);
    spec.config.set_cmdline("flint.prog=" + prog);
    return spec;
  }
  absl::StatusOr<std::unique_ptr<Backend>> Start(const LaunchSpec& spec) {
    absl::StatusOr<std::unique_ptr<Backend>> b = StartQemu(spec, programs_, events_.Sink());
    if (b.ok()) {
      flint::shim::v1::VmRecord r;
      (*b)->FillRecord(&r);
      pid_ = {r.pid(), r.pid_start_time()};
    }
    return b;
  }
  std::string Serial() { return ReadText(vm_dir_ + "/serial.log"); }
  bool SerialHas(const std::string& text) {
    return WaitUntil([&] { return absl::StrContains(Serial(), text); });
  }

  TempDir dir_;
  std::string vm_dir_;
  BackendPrograms programs_;
  Events events_;
  ProcessId pid_;
};

TEST_F(QemuBackendTest, StartsRunningAndKillStopsIt) {
  absl::StatusOr<std::unique_ptr<Backend>> b = Start(Spec("idle"));
  ASSERT_TRUE(b.ok()) << b.status();
  Backend& vm = **b;
  EXPECT_STREQ(vm.kind(), "qemu");
  DomainStatus s = vm.Status();
  EXPECT_EQ(s.state, DomainState::kRunning);
  EXPECT_EQ(s.reason, "Booted");
  EXPECT_TRUE(absl::StartsWith(vm.Version(), "7.2.")) << vm.Version();
  flint::shim::v1::VmRecord r;
  vm.FillRecord(&r);
  EXPECT_EQ(r.backend(), "qemu");
  EXPECT_EQ(r.api_socket(), vm_dir_ + "/qmp.sock");
  EXPECT_EQ(r.vm_dir(), vm_dir_);
  EXPECT_TRUE(ProcessAlive(pid_));
  ASSERT_TRUE(SerialHas("idle\n")) << Serial();

  ASSERT_TRUE(vm.Kill().ok());
  EXPECT_FALSE(ProcessAlive(pid_));
  s = vm.Status();
  EXPECT_EQ(s.state, DomainState::kShutoff);
  EXPECT_EQ(s.reason, "Destroyed");
  EXPECT_TRUE(events_.Saw(DomainState::kShutoff, "Destroyed")) << events_.Dump();
  EXPECT_EQ(vm.Pause().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(vm.Kill().ok());  // again: already gone
}

TEST_F(QemuBackendTest, PauseAndResumeWithEvents) {
  LaunchSpec spec = Spec("idle");
  spec.config.set_memory_backing("memfd");
  absl::StatusOr<std::unique_ptr<Backend>> b = Start(spec);
  ASSERT_TRUE(b.ok()) << b.status();
  Backend& vm = **b;
  ASSERT_TRUE(vm.Pause().ok());
  DomainStatus s = vm.Status();
  EXPECT_EQ(s.state, DomainState::kPaused);
  EXPECT_EQ(s.reason, "User");
  EXPECT_TRUE(events_.Saw(DomainState::kPaused, "User")) << events_.Dump();
  ASSERT_TRUE(vm.Resume().ok());
  EXPECT_EQ(vm.Status().state, DomainState::kRunning);
  EXPECT_TRUE(events_.Saw(DomainState::kRunning, "Unknown")) << events_.Dump();
  ASSERT_TRUE(vm.Kill().ok());
}

// The guest reboots on a reset: its program starts (and prints) again.
TEST_F(QemuBackendTest, ResetRebootsTheGuest) {
  absl::StatusOr<std::unique_ptr<Backend>> b = Start(Spec("idle"));
  ASSERT_TRUE(b.ok()) << b.status();
  ASSERT_TRUE(SerialHas("idle\n")) << Serial();
  ASSERT_TRUE((*b)->Reset().ok());
  EXPECT_TRUE(events_.Saw(DomainState::kRunning, "Booted")) << events_.Dump();
  EXPECT_TRUE(WaitUntil([&] {
    const std::string s = Serial();
    return s.find("idle\n") != s.rfind("idle\n");
  })) << Serial();
  ASSERT_TRUE((*b)->Kill().ok());
}

// The demo program reads 8 sectors, writes them back, reads them again and
// flushes: QEMU's block statistics must show exactly that.
TEST_F(QemuBackendTest, BlockStatsCountTheGuestsDiskIo) {
  ::flint::testing::TempImage image(dir_.path(), "disk", std::string(4 << 20, '\x5a'));
  ASSERT_TRUE(image.ok());
  LaunchSpec spec = Spec("demo");
  flint::v1::Disk* d = spec.config.add_disks();
  d->set_path(image.path());
  d->set_serial("shim-qemu-0");
  d->set_direct(true);
  spec.config.set_io_engine("io_uring");
  spec.disk_names = {"rootdisk"};
  absl::StatusOr<std::unique_ptr<Backend>> b = Start(spec);
  ASSERT_TRUE(b.ok()) << b.status();
  ASSERT_TRUE(SerialHas("all devices OK")) << Serial();
  EXPECT_TRUE(absl::StrContains(Serial(), "id=shim-qemu-0 read, write, flush ok")) << Serial();
  // The guest found microvm's ECAM through the hint the backend appends.
  EXPECT_TRUE(absl::StrContains(Serial(), "pci: ecam at 0xe0000000 (flint.ecam)")) << Serial();
  absl::StatusOr<BackendStats> st = (*b)->Stats();
  ASSERT_TRUE(st.ok()) << st.status();
  EXPECT_EQ(st->vcpus, 1u);
  EXPECT_EQ(st->memory_bytes, 64u << 20);
  EXPECT_GT(st->rss_bytes, 0u);
  EXPECT_GT(st->cpu_time_ns, 0u);
  ASSERT_EQ(st->disks.size(), 1u);
  const DiskStats& ds = st->disks[0];
  EXPECT_EQ(ds.name, "rootdisk");
  EXPECT_EQ(ds.path, image.path());
  EXPECT_EQ(ds.read_requests, 2u);
  EXPECT_EQ(ds.read_bytes, 8192u);
  EXPECT_EQ(ds.write_requests, 1u);
  EXPECT_EQ(ds.write_bytes, 4096u);
  EXPECT_EQ(ds.flush_requests, 1u);
  EXPECT_EQ(ds.errors, 0u);
  ASSERT_TRUE((*b)->Kill().ok());
}

// A UDP echo server on 127.0.0.1, which passt shows the guest as its
// gateway 192.0.2.1.
class UdpEcho {
 public:
  UdpEcho() {
    fd_.reset(socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(a);
    if (!fd_.valid() || bind(fd_.get(), reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0 ||
        getsockname(fd_.get(), reinterpret_cast<sockaddr*>(&a), &len) != 0) {
      return;
    }
    port_ = ntohs(a.sin_port);
    thread_ = std::thread([this] {
      char buf[65536];
      while (!quit_) {
        pollfd p{fd_.get(), POLLIN, 0};
        if (poll(&p, 1, 50) <= 0) continue;
        sockaddr_in from{};
        socklen_t flen = sizeof(from);
        const ssize_t n = recvfrom(fd_.get(), buf, sizeof(buf), 0,
                                   reinterpret_cast<sockaddr*>(&from), &flen);
        if (n > 0) sendto(fd_.get(), buf, n, 0, reinterpret_cast<sockaddr*>(&from), flen);
      }
    });
  }
  ~UdpEcho() {
    quit_ = true;
    if (thread_.joinable()) thread_.join();
  }
  uint16_t port() const { return port_; }

 private:
  UniqueFd fd_;
  uint16_t port_ = 0;
  std::atomic<bool> quit_{false};
  std::thread thread_;
};

// A passt NIC: the backend's own passt, reached over a socketpair, gives the
// guest DHCP and carries its UDP; killing the VM takes passt with it.
TEST_F(QemuBackendTest, PasstNicCarriesTheGuestsTraffic) {
  if (access(kPasst, X_OK) != 0) GTEST_SKIP() << kPasst << " missing (apt-get install passt)";
  UdpEcho echo;
  ASSERT_NE(echo.port(), 0);
  LaunchSpec spec = Spec(absl::StrCat("net-dhcp-udp flint.port=", echo.port()));
  flint::v1::Nic* n = spec.config.add_nics();
  n->mutable_passt();
  n->set_mac("52:54:00:12:34:57");
  spec.nic_names = {"default"};
  absl::StatusOr<std::unique_ptr<Backend>> b = Start(spec);
  ASSERT_TRUE(b.ok()) << b.status();
  ASSERT_TRUE(SerialHas("net: udp echo ok sizes=64,")) << Serial();
  EXPECT_TRUE(absl::StrContains(Serial(), "net: mac=52:54:00:12:34:57")) << Serial();

  absl::StatusOr<BackendStats> st = (*b)->Stats();
  ASSERT_TRUE(st.ok()) << st.status();
  ASSERT_EQ(st->nics.size(), 1u);
  EXPECT_EQ(st->nics[0].name, "default");
  EXPECT_EQ(st->nics[0].mac, "52:54:00:12:34:57");

  // passt.pids names the live passt.
  const std::string pids = ReadText(vm_dir_ + "/passt.pids");
  ProcessId passt;
  ASSERT_EQ(sscanf(pids.c_str(), "%d %lu", &passt.pid, &passt.start_time), 2) << pids;
  EXPECT_TRUE(ProcessAlive(passt));
  ASSERT_TRUE((*b)->Kill().ok());
  EXPECT_TRUE(WaitProcessGone(passt, absl::Seconds(10)));
}

// QEMU picks a MAC when the config has none; Stats reports that one.
TEST_F(QemuBackendTest, StatsReportTheMacQemuPicked) {
  if (access(kPasst, X_OK) != 0) GTEST_SKIP() << kPasst << " missing (apt-get install passt)";
  LaunchSpec spec = Spec("idle");
  spec.config.add_nics()->mutable_passt();
  absl::StatusOr<std::unique_ptr<Backend>> b = Start(spec);
  ASSERT_TRUE(b.ok()) << b.status();
  absl::StatusOr<BackendStats> st = (*b)->Stats();
  ASSERT_TRUE(st.ok()) << st.status();
  ASSERT_EQ(st->nics.size(), 1u);
  EXPECT_EQ(st->nics[0].mac.size(), 17u) << st->nics[0].mac;
  EXPECT_EQ(st->nics[0].rx_packets + st->nics[0].tx_packets, 0u);  // QMP has no counters
  ASSERT_TRUE((*b)->Kill().ok());
}

TEST_F(QemuBackendTest, AttachFindsTheVmAfterTheBackendIsGone) {
  LaunchSpec spec = Spec("idle");
  spec.disk_names = {};
  flint::shim::v1::VmRecord record;
  {
    absl::StatusOr<std::unique_ptr<Backend>> b = Start(spec);
    ASSERT_TRUE(b.ok()) << b.status();
    (*b)->FillRecord(&record);
    *record.mutable_config() = spec.config;
  }
  // Destroying the Backend left QEMU running.
  ASSERT_TRUE(ProcessAlive(pid_));
  Events attached_events;
  absl::StatusOr<std::unique_ptr<Backend>> a = AttachQemu(record, attached_events.Sink());
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ((*a)->Status().state, DomainState::kRunning);
  ASSERT_TRUE((*a)->Pause().ok());
  EXPECT_TRUE(attached_events.Saw(DomainState::kPaused, "User")) << attached_events.Dump();
  EXPECT_EQ((*a)->Status().state, DomainState::kPaused);
  ASSERT_TRUE((*a)->Kill().ok());
  EXPECT_FALSE(ProcessAlive(pid_));

  absl::StatusOr<std::unique_ptr<Backend>> again = AttachQemu(record, attached_events.Sink());
  EXPECT_EQ(again.status().code(), absl::StatusCode::kNotFound) << again.status();
}

TEST_F(QemuBackendTest, GuestPowerOffIsShutoff) {
  absl::StatusOr<std::unique_ptr<Backend>> b = Start(Spec("poweroff"));
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_TRUE(events_.Saw(DomainState::kShutoff, "Shutdown")) << events_.Dump() << Serial();
  EXPECT_TRUE(WaitProcessGone(pid_, absl::Seconds(10)));
  EXPECT_EQ((*b)->Status().state, DomainState::kShutoff);
}

// The idle guest ignores the ACPI power button: after the grace period the
// backend stops QEMU itself.
TEST_F(QemuBackendTest, ShutdownGraceEndsInAForcedStop) {
  absl::StatusOr<std::unique_ptr<Backend>> b = Start(Spec("idle"));
  ASSERT_TRUE(b.ok()) << b.status();
  ASSERT_TRUE((*b)->Shutdown(absl::Milliseconds(500)).ok());
  EXPECT_TRUE(events_.Saw(DomainState::kShuttingDown, "User")) << events_.Dump();
  EXPECT_TRUE(events_.Saw(DomainState::kShutoff, "Destroyed")) << events_.Dump();
  EXPECT_TRUE(WaitProcessGone(pid_, absl::Seconds(10)));
}

TEST_F(QemuBackendTest, SigkilledQemuIsCrashed) {
  absl::StatusOr<std::unique_ptr<Backend>> b = Start(Spec("idle"));
  ASSERT_TRUE(b.ok()) << b.status();
  ASSERT_EQ(kill(pid_.pid, SIGKILL), 0);
  EXPECT_TRUE(events_.Saw(DomainState::kCrashed, "Crashed")) << events_.Dump();
  const DomainStatus s = (*b)->Status();
  EXPECT_EQ(s.state, DomainState::kCrashed);
  EXPECT_EQ(s.reason, "Crashed");
  EXPECT_EQ((*b)->Resume().code(), absl::StatusCode::kFailedPrecondition);
}

TEST_F(QemuBackendTest, QemuThatCannotStartIsAnErrorWithItsLog) {
  LaunchSpec spec = Spec("idle");
  spec.config.set_kernel(dir_.path() + "/no-such-kernel");
  absl::StatusOr<std::unique_ptr<Backend>> b = Start(spec);
  ASSERT_FALSE(b.ok());
  EXPECT_TRUE(absl::StrContains(b.status().message(), "no-such-kernel")) << b.status();

  spec.config.clear_kernel();
  b = Start(spec);
  EXPECT_EQ(b.status().code(), absl::StatusCode::kInvalidArgument) << b.status();
}

}  // namespace
}  // namespace flint::shim
