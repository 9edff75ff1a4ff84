// virtio-net end to end: the test guest's net programs (tests/guest/
// net_progs.cc) drive a virtio-net-pci NIC under QEMU (the reference
// device) and under flint, against servers this test runs on the host.
//
// passt (PLATFORM.md) maps what the guest sends to its gateway, 192.0.2.1,
// onto the host's loopback, so a server bound to 127.0.0.1:PORT here answers
// the guest's 192.0.2.1:PORT. QEMU 7.2 reaches passt through a UNIX socket
// (-netdev stream); flint starts passt itself (--net passt). The TAP case
// builds a network namespace with a veth pair bridged to a TAP device and
// runs its UDP server inside the namespace. The swap and kill cases use
// flint's control socket (net-swap, net-info) while the guest streams
// numbered, checksummed datagrams that the server verifies one by one.
#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <functional>
#include <mutex>
#include <ostream>
#include <string>
#include <thread>
#include <vector>

#include "tests/support/output.h"
#include "tests/support/subprocess.h"
#include "vmm/kvm/unique_fd.h"

namespace flint {
namespace {

using ::flint::testing::Describe;
using ::flint::testing::Has;
using ::flint::testing::KvmAvailable;
using ::flint::testing::ProcessResult;
using ::flint::testing::RunProcess;

constexpr const char* kQemu = "/usr/bin/qemu-system-x86_64";
constexpr const char* kPasst = "/usr/bin/passt";
constexpr const char* kMac = "52:54:00:12:34:56";
constexpr int kRunTimeoutMs = 30000;

int64_t NowMs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

// Polls `pred` every 10 ms for up to `timeout_ms`; stops early when `give_up`
// (the VM exited, say) turns true. True when `pred` held.
bool WaitFor(const std::function<bool()>& pred, int timeout_ms,
             const std::function<bool()>& give_up = [] { return false; }) {
  const int64_t end = NowMs() + timeout_ms;
  while (NowMs() < end) {
    if (pred()) return true;
    if (give_up()) return pred();
    usleep(10000);
  }
  return pred();
}

// ---- Formats shared with the guest (README.md) -------------------------------

uint32_t Fnv1a(const uint8_t* p, size_t n) {
  uint32_t h = 2166136261u;
  for (size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 16777619u;
  return h;
}

uint32_t Le32(const uint8_t* p) {
  return p[0] | p[1] << 8 | p[2] << 16 | static_cast<uint32_t>(p[3]) << 24;
}

constexpr uint32_t kStreamMagic = 0x534e4c46;  // "FLNS"
constexpr uint8_t kStopMessage[4] = {'F', 'L', 'N', 'Q'};

// A stream datagram: magic, seq, length, FNV-1a of the rest, then bytes
// (seq * 31 + i) & 0xff.
bool StreamDatagramOk(const uint8_t* p, size_t n) {
  if (n < 16 || Le32(p) != kStreamMagic || Le32(p + 8) != n) return false;
  if (Le32(p + 12) != Fnv1a(p + 16, n - 16)) return false;
  const uint32_t seq = Le32(p + 4);
  for (size_t i = 16; i < n; ++i) {
    if (p[i] != static_cast<uint8_t>(seq * 31 + i)) return false;
  }
  return true;
}

// net-tcp's payloads.
uint8_t TcpGuestByte(uint64_t i) { return static_cast<uint8_t>(i * 31 + (i >> 8) * 17 + 5); }
uint8_t TcpHostByte(uint64_t i) { return static_cast<uint8_t>(i * 7 + (i >> 8) * 3 + 3); }

// ---- Host-side servers ----------------------------------------------------------

// Runs `fn` with the calling thread inside the network namespace at
// `netns_path` (empty: where it is), then moves back.
bool InNetns(const std::string& netns_path, const std::function<bool()>& fn, std::string* why) {
  if (netns_path.empty()) return fn();
  UniqueFd self(open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC));
  UniqueFd target(open(netns_path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!self.valid() || !target.valid() || setns(target.get(), CLONE_NEWNET) != 0) {
    *why = "cannot enter " + netns_path + ": " + strerror(errno);
    return false;
  }
  const bool ok = fn();
  if (setns(self.get(), CLONE_NEWNET) != 0) {
    *why = std::string("cannot return to the original network namespace: ") + strerror(errno);
    return false;
  }
  return ok;
}

// A UDP server on ADDR:ephemeral in a thread. kEcho sends every datagram
// back; kStream checks stream datagrams, echoes the good ones, and answers
// with the stop message once RequestStop() was called.
class UdpServer {
 public:
  // kFilterProbe: answers "FLT?" with kForeignFrames datagrams to
  // kForeignIp (which the namespace maps to kForeignMac, an address no one
  // has, so the bridge floods them to every port), then "END".
  enum class Mode { kEcho, kStream, kSink, kFilterProbe };
  static constexpr const char* kForeignIp = "10.0.0.3";
  static constexpr const char* kForeignMac = "02:00:00:00:00:99";
  static constexpr int kForeignFrames = 8;

  explicit UdpServer(Mode mode, const std::string& addr = "127.0.0.1",
                     const std::string& netns_path = "")
      : mode_(mode) {
    const bool bound = InNetns(
        netns_path,
        [&] {
          fd_.reset(socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
          sockaddr_in sa{};
          sa.sin_family = AF_INET;
          sa.sin_port = 0;
          if (!fd_.valid() || inet_pton(AF_INET, addr.c_str(), &sa.sin_addr) != 1 ||
              bind(fd_.get(), reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) != 0) {
            error_ = "UDP bind to " + addr + ": " + strerror(errno);
            return false;
          }
          return true;
        },
        &error_);
    if (!bound) return;
    // A deep queue, so a burst from the guest is not lost while this thread
    // waits for a CPU (FORCE passes rmem_max; root only, else the plain one).
    const int rcvbuf = 16 << 20;
    if (setsockopt(fd_.get(), SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof(rcvbuf)) != 0) {
      setsockopt(fd_.get(), SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
    }
    sockaddr_in sa{};
    socklen_t len = sizeof(sa);
    getsockname(fd_.get(), reinterpret_cast<sockaddr*>(&sa), &len);
    port_ = ntohs(sa.sin_port);
    thread_ = std::thread([this] { Loop(); });
  }
  ~UdpServer() {
    quit_ = true;
    if (thread_.joinable()) thread_.join();
  }
  UdpServer(const UdpServer&) = delete;
  UdpServer& operator=(const UdpServer&) = delete;

  bool ok() const { return port_ != 0; }
  const std::string& error() const { return error_; }
  uint16_t port() const { return port_; }
  uint64_t received() const { return received_; }
  uint64_t good() const { return good_; }
  uint64_t bad() const { return bad_; }
  uint64_t stops_sent() const { return stops_sent_; }
  void RequestStop() { stop_ = true; }
  std::vector<size_t> sizes() const {
    std::lock_guard<std::mutex> l(mu_);
    return sizes_;
  }

 private:
  void Loop() {
    std::vector<uint8_t> buf(65536);
    while (!quit_) {
      pollfd p{fd_.get(), POLLIN, 0};
      if (poll(&p, 1, 50) <= 0) continue;
      sockaddr_in from{};
      socklen_t flen = sizeof(from);
      const ssize_t n = recvfrom(fd_.get(), buf.data(), buf.size(), MSG_DONTWAIT,
                                 reinterpret_cast<sockaddr*>(&from), &flen);
      if (n < 0) continue;
      ++received_;
      auto reply = [&](const void* d, size_t len) {
        sendto(fd_.get(), d, len, MSG_DONTWAIT, reinterpret_cast<sockaddr*>(&from), flen);
      };
      switch (mode_) {
        case Mode::kEcho: {
          std::lock_guard<std::mutex> l(mu_);
          sizes_.push_back(static_cast<size_t>(n));
          reply(buf.data(), static_cast<size_t>(n));
          break;
        }
        case Mode::kStream: {
          const bool good = StreamDatagramOk(buf.data(), static_cast<size_t>(n));
          ++(good ? good_ : bad_);
          if (stop_) {
            reply(kStopMessage, sizeof(kStopMessage));
            ++stops_sent_;
          } else if (good) {
            reply(buf.data(), static_cast<size_t>(n));
          }
          break;
        }
        case Mode::kSink:
          break;
        case Mode::kFilterProbe: {
          if (n != 4 || std::memcmp(buf.data(), "FLT?", 4) != 0) break;
          sockaddr_in foreign{};
          foreign.sin_family = AF_INET;
          foreign.sin_port = htons(9);
          inet_pton(AF_INET, kForeignIp, &foreign.sin_addr);
          for (int i = 0; i < kForeignFrames; ++i) {
            sendto(fd_.get(), "FOREIGN", 7, 0, reinterpret_cast<sockaddr*>(&foreign),
                   sizeof(foreign));
          }
          reply("END", 3);
          break;
        }
      }
    }
  }

  const Mode mode_;
  UniqueFd fd_;
  uint16_t port_ = 0;
  std::string error_;
  std::thread thread_;
  std::atomic<bool> quit_{false}, stop_{false};
  std::atomic<uint64_t> received_{0}, good_{0}, bad_{0}, stops_sent_{0};
  mutable std::mutex mu_;
  std::vector<size_t> sizes_;
};

// net-tcp's peer: accepts one connection, reads `expect_in` bytes (checking
// the guest's pattern), sends `reply` bytes of the host pattern, shuts down
// its side and waits for the guest's FIN.
class TcpServer {
 public:
  struct Result {
    bool accepted = false;
    uint64_t bytes_in = 0;
    int64_t first_bad = -1;  // offset of the first byte off the pattern
    bool reply_sent = false;
    bool eof_seen = false;
    std::string error;
  };

  TcpServer(uint64_t expect_in, uint64_t reply) : expect_in_(expect_in), reply_(reply) {
    fd_.reset(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(sa);
    if (!fd_.valid() || bind(fd_.get(), reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) != 0 ||
        listen(fd_.get(), 4) != 0 ||
        getsockname(fd_.get(), reinterpret_cast<sockaddr*>(&sa), &len) != 0) {
      return;
    }
    port_ = ntohs(sa.sin_port);
    thread_ = std::thread([this] { Serve(); });
  }
  ~TcpServer() { Finish(); }

  bool ok() const { return port_ != 0; }
  uint16_t port() const { return port_; }
  // Stops waiting and returns what happened.
  Result Finish() {
    quit_ = true;
    if (thread_.joinable()) thread_.join();
    return result_;
  }

 private:
  // Waits (in 50 ms steps, until quit_) for `events` on `fd`.
  bool Wait(int fd, short events) {
    while (!quit_) {
      pollfd p{fd, events, 0};
      if (poll(&p, 1, 50) > 0) return true;
    }
    return false;
  }

  void Serve() {
    Result& r = result_;
    if (!Wait(fd_.get(), POLLIN)) return;
    UniqueFd c(accept4(fd_.get(), nullptr, nullptr, SOCK_CLOEXEC));
    if (!c.valid()) {
      r.error = std::string("accept: ") + strerror(errno);
      return;
    }
    r.accepted = true;
    std::vector<uint8_t> buf(65536);
    while (r.bytes_in < expect_in_ && Wait(c.get(), POLLIN)) {
      const ssize_t n = recv(c.get(), buf.data(), buf.size(), MSG_DONTWAIT);
      if (n == 0) {
        r.error = "EOF before all of the guest's bytes arrived";
        return;
      }
      if (n < 0) continue;
      for (ssize_t i = 0; i < n; ++i) {
        if (r.first_bad < 0 && buf[i] != TcpGuestByte(r.bytes_in + i)) {
          r.first_bad = static_cast<int64_t>(r.bytes_in + i);
        }
      }
      r.bytes_in += static_cast<uint64_t>(n);
    }
    std::vector<uint8_t> out(reply_);
    for (uint64_t i = 0; i < reply_; ++i) out[i] = TcpHostByte(i);
    size_t sent = 0;
    while (sent < out.size() && Wait(c.get(), POLLOUT)) {
      const ssize_t n = send(c.get(), out.data() + sent, out.size() - sent,
                             MSG_DONTWAIT | MSG_NOSIGNAL);
      if (n < 0 && errno != EAGAIN) {
        r.error = std::string("send: ") + strerror(errno);
        return;
      }
      if (n > 0) sent += static_cast<size_t>(n);
    }
    r.reply_sent = sent == out.size();
    shutdown(c.get(), SHUT_WR);
    while (Wait(c.get(), POLLIN)) {
      const ssize_t n = recv(c.get(), buf.data(), buf.size(), MSG_DONTWAIT);
      if (n == 0) {
        r.eof_seen = true;
        return;
      }
      if (n < 0 && errno != EAGAIN) return;
    }
  }

  const uint64_t expect_in_, reply_;
  UniqueFd fd_;
  uint16_t port_ = 0;
  std::thread thread_;
  std::atomic<bool> quit_{false};
  Result result_;
};

// net-bench rx's host side: once the guest asks (any datagram to
// 127.0.0.1:ctl_port(), which it sends to gateway:ctlport), sends 64-byte
// datagrams to 127.0.0.1:port (which passt forwards to the guest) until
// destroyed.
class UdpFlood {
 public:
  explicit UdpFlood(uint16_t port) : port_(port) {
    ctl_.reset(socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(sa);
    if (!ctl_.valid() || bind(ctl_.get(), reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) != 0 ||
        getsockname(ctl_.get(), reinterpret_cast<sockaddr*>(&sa), &len) != 0) {
      return;
    }
    ctl_port_ = ntohs(sa.sin_port);
    thread_ = std::thread([this] { Loop(); });
  }
  ~UdpFlood() {
    quit_ = true;
    if (thread_.joinable()) thread_.join();
  }
  uint16_t ctl_port() const { return ctl_port_; }
  bool asked() const { return asked_; }

 private:
  void Loop() {
    while (!quit_ && !asked_) {
      pollfd p{ctl_.get(), POLLIN, 0};
      if (poll(&p, 1, 50) > 0) asked_ = true;
    }
    UniqueFd fd(socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(port_);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    const std::vector<uint8_t> payload(64, 0x5a);
    while (!quit_) {
      for (int i = 0; i < 32; ++i) {
        sendto(fd.get(), payload.data(), payload.size(), MSG_DONTWAIT,
               reinterpret_cast<sockaddr*>(&sa), sizeof(sa));
      }
      usleep(1000);
    }
  }
  const uint16_t port_;
  UniqueFd ctl_;
  uint16_t ctl_port_ = 0;
  std::atomic<bool> quit_{false}, asked_{false};
  std::thread thread_;
};

// A port nobody listens on now (for passt's -u forwarding, which binds it).
uint16_t FreeUdpPort() {
  UniqueFd fd(socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  socklen_t len = sizeof(sa);
  if (bind(fd.get(), reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) != 0 ||
      getsockname(fd.get(), reinterpret_cast<sockaddr*>(&sa), &len) != 0) {
    return 0;
  }
  return ntohs(sa.sin_port);
}

// ---- passt for QEMU ------------------------------------------------------------------

// `passt -f -q -1 -s DIR/passt.sock` in a fresh mode-1777 directory (passt
// drops to nobody before it binds). Killed and cleaned up when destroyed.
class PasstProcess {
 public:
  bool Start(const std::vector<std::string>& extra, std::string* why) {
    char tmpl[] = "/tmp/flint-net-test-XXXXXX";
    if (mkdtemp(tmpl) == nullptr || chmod(tmpl, 01777) != 0) {
      *why = std::string("mkdtemp: ") + strerror(errno);
      return false;
    }
    dir_ = tmpl;
    socket_ = dir_ + "/passt.sock";
    log_ = dir_ + "/passt.log";
    std::vector<std::string> args = {kPasst, "-f", "-q", "-1", "-s", socket_};
    args.insert(args.end(), extra.begin(), extra.end());
    std::vector<char*> argv;
    for (std::string& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    const int logfd = open(log_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    pid_ = fork();
    if (pid_ == 0) {
      if (logfd >= 0) {
        dup2(logfd, 1);
        dup2(logfd, 2);
      }
      execv(argv[0], argv.data());
      _exit(127);
    }
    if (logfd >= 0) close(logfd);
    if (pid_ < 0) {
      *why = std::string("fork: ") + strerror(errno);
      return false;
    }
    struct stat st;
    bool exited = false;
    const bool up = WaitFor([&] { return stat(socket_.c_str(), &st) == 0; }, 5000, [&] {
      exited = waitpid(pid_, nullptr, WNOHANG) == pid_;
      return exited;
    });
    if (exited) pid_ = -1;
    if (!up) {
      *why = "passt did not create " + socket_ + ": " + Log();
      return false;
    }
    return true;
  }
  ~PasstProcess() {
    if (pid_ > 0) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
    if (!dir_.empty()) {
      unlink(socket_.c_str());
      unlink(log_.c_str());
      rmdir(dir_.c_str());
    }
  }
  const std::string& socket_path() const { return socket_; }
  std::string Log() const {
    std::string s;
    UniqueFd fd(open(log_.c_str(), O_RDONLY | O_CLOEXEC));
    char b[4096];
    ssize_t n;
    while (fd.valid() && (n = read(fd.get(), b, sizeof(b))) > 0) s.append(b, n);
    return s;
  }

 private:
  pid_t pid_ = -1;
  std::string dir_, socket_, log_;
};

// ---- Running the guest ------------------------------------------------------------

struct Backend {
  std::string name;
  bool qemu;
};
void PrintTo(const Backend& b, std::ostream* os) { *os << b.name; }

struct NetRun {
  std::string guest_args;
  std::vector<std::string> passt_opts;   // flint: ",udp=PORT" style options of --net passt
  std::vector<std::string> passt_args;   // QEMU: the same as passt command-line arguments
  std::string tap;                       // a TAP device instead of passt
  std::vector<std::string> flint_extra;  // more flint arguments
  std::vector<std::string> qemu_extra;   // more QEMU arguments
  int timeout_ms = kRunTimeoutMs;
};

std::vector<std::string> QemuArgs(const NetRun& r, const std::string& passt_socket) {
  std::string netdev = r.tap.empty()
                           ? "stream,id=n0,server=off,addr.type=unix,addr.path=" + passt_socket
                           : "tap,id=n0,ifname=" + r.tap + ",script=no,downscript=no";
  std::vector<std::string> args = {
      kQemu, "-M", "microvm,accel=kvm,rtc=on,pcie=on", "-cpu", "host,-arch-capabilities",
      "-m", "128", "-nodefaults", "-no-user-config", "-nographic", "-serial", "stdio",
      "-kernel", FLINT_GUEST_ELF, "-append", r.guest_args + " flint.ecam=0xe0000000",
      "-device", "isa-debug-exit,iobase=0xf4", "-no-reboot", "-netdev", netdev,
      "-device", std::string("virtio-net-pci,netdev=n0,disable-legacy=on,romfile=,mac=") + kMac};
  args.insert(args.end(), r.qemu_extra.begin(), r.qemu_extra.end());
  return args;
}

std::vector<std::string> FlintArgs(const NetRun& r) {
  std::string net = r.tap.empty() ? "passt" : "tap=" + r.tap;
  net += std::string(",mac=") + kMac;
  for (const std::string& o : r.passt_opts) net += "," + o;
  std::vector<std::string> args = {FLINT_BINARY, "run",      "--no-reboot",  "--memory",
                                   "128M",       "--cmdline", r.guest_args, "--net", net};
  args.insert(args.end(), r.flint_extra.begin(), r.flint_extra.end());
  return args;
}

ProcessResult RunGuest(const Backend& b, const NetRun& r) {
  if (!b.qemu) return RunProcess(FlintArgs(r), "", r.timeout_ms);
  PasstProcess passt;
  std::string why;
  if (r.tap.empty() && !passt.Start(r.passt_args, &why)) {
    ProcessResult failed;
    failed.err = "could not start passt: " + why;
    return failed;
  }
  return RunProcess(QemuArgs(r, passt.socket_path()), "", r.timeout_ms);
}

// The number after `key` in `s` (e.g. "rx_multi_buffer="), -1 if absent.
int64_t NumberAfter(const std::string& s, const std::string& key) {
  const size_t p = s.find(key);
  if (p == std::string::npos) return -1;
  return strtoll(s.c_str() + p + key.size(), nullptr, 10);
}

std::string SkipReason(const Backend& b) {
  std::string why;
  if (!KvmAvailable(&why)) return why;
  if (b.qemu && access(kQemu, X_OK) != 0) return std::string(kQemu) + " missing (qemu-system-x86)";
  if (access(kPasst, X_OK) != 0) return std::string(kPasst) + " missing (apt-get install passt)";
  return "";
}

class NetTest : public ::testing::TestWithParam<Backend> {
 protected:
  void SetUp() override {
    const std::string why = SkipReason(GetParam());
    if (!why.empty()) GTEST_SKIP() << why;
  }
  ProcessResult Run(const NetRun& r) { return RunGuest(GetParam(), r); }
};

std::string EchoArgs(uint16_t port, const std::string& more = "") {
  return "flint.prog=net-dhcp-udp flint.port=" + std::to_string(port) + (more.empty() ? "" : " ") +
         more;
}

// DHCP (passt offers 192.0.2.2, gateway 192.0.2.1), the control queue, ARP
// for the gateway, and two UDP datagrams echoed by a host server.
TEST_P(NetTest, DhcpArpAndUdpEcho) {
  UdpServer server(UdpServer::Mode::kEcho);
  ASSERT_TRUE(server.ok()) << server.error();
  ProcessResult r = Run({.guest_args = EchoArgs(server.port())});
  ASSERT_EQ(r.exit_status, 1) << Describe(r);
  EXPECT_TRUE(Has(r.out, "net: dhcp ip=192.0.2.2 gw=192.0.2.1 ")) << r.out;
  EXPECT_TRUE(Has(r.out, "net: ctrl rx promisc=0 ok\n")) << r.out;
  EXPECT_TRUE(Has(r.out, "net: ctrl mac ok\n")) << r.out;
  EXPECT_TRUE(Has(r.out, "net: arp gw mac=")) << r.out;
  EXPECT_TRUE(Has(r.out, "net: udp echo ok sizes=64,1400\n")) << r.out;
  EXPECT_TRUE(Has(r.out, std::string("net: mac=") + kMac)) << r.out;
  const std::vector<size_t> sizes = server.sizes();
  ASSERT_GE(sizes.size(), 2u);
  EXPECT_EQ(sizes.front(), 64u);
  EXPECT_EQ(sizes.back(), 1400u);
}

// 256-byte receive buffers with MRG_RXBUF: the DHCP replies and the
// 1400-byte echo arrive spread over several buffers (num_buffers > 1); the
// header and frame also travel in separate transmit descriptors.
TEST_P(NetTest, FramesSpanSmallMergeableReceiveBuffers) {
  UdpServer server(UdpServer::Mode::kEcho);
  ASSERT_TRUE(server.ok()) << server.error();
  ProcessResult r =
      Run({.guest_args = EchoArgs(server.port(), "flint.rxbuf=256 flint.txsplit=1")});
  ASSERT_EQ(r.exit_status, 1) << Describe(r);
  EXPECT_TRUE(Has(r.out, " mrg_rxbuf=1 ")) << r.out;
  EXPECT_TRUE(Has(r.out, "net: udp echo ok sizes=64,1400\n")) << r.out;
  EXPECT_GE(NumberAfter(r.out, "rx_multi_buffer="), 3) << r.out;
}

// The plainest driver: no MRG_RXBUF (whole frames in 2 KiB buffers), no
// EVENT_IDX (a notification per kick), no control queue, no GUEST_CSUM.
TEST_P(NetTest, WorksWithoutOptionalFeatures) {
  UdpServer server(UdpServer::Mode::kEcho);
  ASSERT_TRUE(server.ok()) << server.error();
  ProcessResult r = Run({.guest_args = EchoArgs(server.port(), "flint.mrg=0 flint.event_idx=0 "
                                                               "flint.ctrl=0 flint.guestcsum=0")});
  ASSERT_EQ(r.exit_status, 1) << Describe(r);
  EXPECT_TRUE(Has(r.out, " mrg_rxbuf=0 csum=0 guest_csum=0 ctrl=0 event_idx=0 ")) << r.out;
  EXPECT_TRUE(Has(r.out, "net: udp echo ok sizes=64,1400\n")) << r.out;
  EXPECT_EQ(NumberAfter(r.out, "rx_multi_buffer="), 0) << r.out;
}

// TCP through passt to a host server: 64 KiB from the guest (checked byte by
// byte here), 100000 bytes back (checked by the guest), FIN both ways.
TEST_P(NetTest, TcpPayloadBothWays) {
  constexpr uint64_t kOut = 65536, kBack = 100000;
  TcpServer server(kOut, kBack);
  ASSERT_TRUE(server.ok());
  ProcessResult r = Run({.guest_args = "flint.prog=net-tcp flint.port=" +
                                       std::to_string(server.port()) + " flint.bytes=" +
                                       std::to_string(kOut) + " flint.rbytes=" +
                                       std::to_string(kBack)});
  const TcpServer::Result s = server.Finish();
  ASSERT_EQ(r.exit_status, 1) << Describe(r);
  EXPECT_TRUE(Has(r.out, "net: tcp ok sent=65536 received=100000 ")) << r.out;
  EXPECT_TRUE(s.accepted);
  EXPECT_EQ(s.bytes_in, kOut) << s.error;
  EXPECT_EQ(s.first_bad, -1) << "the guest's data differs from its pattern at that offset";
  EXPECT_TRUE(s.reply_sent) << s.error;
  EXPECT_TRUE(s.eof_seen) << "the guest's FIN never reached the server";
}

// Numbered, checksummed datagrams at a steady pace: the server checks each
// and echoes it; the guest checks each echo.
TEST_P(NetTest, UdpStreamArrivesIntactAndIsEchoed) {
  UdpServer server(UdpServer::Mode::kStream);
  ASSERT_TRUE(server.ok()) << server.error();
  ProcessResult r = Run({.guest_args = "flint.prog=net-udp-stream flint.port=" +
                                       std::to_string(server.port()) +
                                       " flint.count=300 flint.gap=300000"});
  ASSERT_EQ(r.exit_status, 1) << Describe(r);
  EXPECT_TRUE(Has(r.out, "net: stream sent=300 echoed=300 bad=0 ")) << r.out;
  EXPECT_EQ(server.good(), 300u);
  EXPECT_EQ(server.bad(), 0u);
}

// Malformed transmit chains: a frame longer than the MTU, a runt, a chain
// with only the header, then a chain with a device-writable descriptor.
// flint drops the first three and asks for a reset on the last; QEMU 7.2
// also resets on the header-only chain ("nothing to send"), so it must only
// survive. Either way the device works after the driver resets it.
TEST_P(NetTest, HostileFramesLeaveTheDeviceUsable) {
  NetRun run{.guest_args = "flint.prog=net-hostile"};
  if (!GetParam().qemu) run.flint_extra = {"--stats"};
  ProcessResult r = Run(run);
  EXPECT_TRUE(Has(r.out, "net-hostile: recovered\n")) << Describe(r);
  EXPECT_TRUE(Has(r.out, "net-hostile: needs_reset\n")) << r.out;
  if (GetParam().qemu) {
    EXPECT_TRUE(r.exit_status == 1 || r.exit_status == 5) << Describe(r);
  } else {
    EXPECT_EQ(r.exit_status, 1) << Describe(r);
    EXPECT_TRUE(Has(r.out, "net-hostile: drops ok\n")) << r.out;
    for (const char* what : {"too long", "runt", "header only"}) {
      EXPECT_TRUE(Has(r.out, std::string("net-hostile: ") + what + ": completed, "))
          << what << "\n" << r.out;
    }
  }
}

// The benchmark program (bench/net_udp.py) in both directions, briefly: the
// report is complete and the datagrams arrived (no rate is judged).
TEST_P(NetTest, BenchProgramReportsBothDirections) {
  UdpServer sink(UdpServer::Mode::kSink);
  ASSERT_TRUE(sink.ok()) << sink.error();
  ProcessResult r = Run({.guest_args = "flint.prog=net-bench flint.mode=tx flint.size=1400 "
                                       "flint.packets=2000 flint.port=" +
                                       std::to_string(sink.port())});
  ASSERT_EQ(r.exit_status, 1) << Describe(r);
  EXPECT_TRUE(Has(r.out, "RESULT name=net-tx size=1400 packets=2000 bytes=2800000 cycles="))
      << r.out;
  EXPECT_TRUE(WaitFor([&] { return sink.received() >= 1900; }, 2000))
      << "the host got " << sink.received() << " of 2000 datagrams";

  const uint16_t fwd = FreeUdpPort();
  ASSERT_NE(fwd, 0);
  UdpFlood flood(fwd);
  ASSERT_NE(flood.ctl_port(), 0);
  const std::string port = std::to_string(fwd);
  r = Run({.guest_args = "flint.prog=net-bench flint.mode=rx flint.packets=500 flint.port=" + port +
                         " flint.ctlport=" + std::to_string(flood.ctl_port()),
           .passt_opts = {"udp=" + port},
           .passt_args = {"-u", port}});
  ASSERT_EQ(r.exit_status, 1) << Describe(r);
  EXPECT_TRUE(flood.asked());
  EXPECT_TRUE(Has(r.out, "RESULT name=net-rx size=64 packets=")) << r.out;
  EXPECT_GE(NumberAfter(r.out, "RESULT name=net-rx size=64 packets="), 500) << r.out;
}

const Backend kBackends[] = {{"Qemu", true}, {"Flint", false}};
INSTANTIATE_TEST_SUITE_P(Backends, NetTest, ::testing::ValuesIn(kBackends),
                         [](const ::testing::TestParamInfo<Backend>& i) { return i.param.name; });

// ---- TAP ---------------------------------------------------------------------------

// A network namespace holding 10.0.0.1/24 on one end of a veth pair; the
// other end and a TAP device join a bridge in this namespace, so a guest on
// the TAP reaches 10.0.0.1 over Ethernet. Names carry the test's pid; all of
// it is removed when the object goes, whatever happened.
class TapLab {
 public:
  TapLab() {
    const std::string id = std::to_string(getpid());
    ns_ = "flintns" + id;
    tap_ = "ftap" + id;
    veth_ = "fveth" + id;
    peer_ = "fvp" + id;
    bridge_ = "fbr" + id;
    Cleanup();
    const std::vector<std::vector<std::string>> steps = {
        {"netns", "add", ns_},
        {"link", "add", veth_, "type", "veth", "peer", "name", peer_},
        {"link", "set", peer_, "netns", ns_},
        {"-n", ns_, "addr", "add", "10.0.0.1/24", "dev", peer_},
        {"-n", ns_, "link", "set", peer_, "up"},
        {"-n", ns_, "link", "set", "lo", "up"},
        {"tuntap", "add", "dev", tap_, "mode", "tap"},
        {"link", "add", bridge_, "type", "bridge"},
        {"link", "set", veth_, "master", bridge_},
        {"link", "set", tap_, "master", bridge_},
        {"link", "set", bridge_, "up"},
        {"link", "set", veth_, "up"},
        {"link", "set", tap_, "up"},
    };
    ok_ = true;
    for (const std::vector<std::string>& step : steps) {
      if (!Ip(step)) {
        ok_ = false;
        break;
      }
    }
  }
  ~TapLab() { Cleanup(); }
  TapLab(const TapLab&) = delete;
  TapLab& operator=(const TapLab&) = delete;

  bool ok() const { return ok_; }
  const std::string& error() const { return error_; }
  const std::string& tap() const { return tap_; }
  // A permanent neighbour entry in the namespace: frames to `ip` go to `mac`.
  bool AddNeighbour(const std::string& ip, const std::string& mac) {
    return Ip({"-n", ns_, "neigh", "replace", ip, "lladdr", mac, "dev", peer_, "nud",
               "permanent"});
  }
  std::string netns_path() const { return "/var/run/netns/" + ns_; }

 private:
  bool Ip(std::vector<std::string> args) {
    args.insert(args.begin(), "ip");
    const ProcessResult r = RunProcess(args, "", 10000);
    if (r.exit_status == 0) return true;
    error_ = "`";
    for (const std::string& a : args) error_ += a + " ";
    error_ += "` failed: " + r.err;
    return false;
  }
  void Cleanup() {
    for (const std::string& dev : {bridge_, tap_, veth_}) {
      RunProcess({"ip", "link", "del", dev}, "", 10000);
    }
    RunProcess({"ip", "netns", "del", ns_}, "", 10000);
  }

  std::string ns_, tap_, veth_, peer_, bridge_, error_;
  bool ok_ = false;
};

class NetTapTest : public ::testing::TestWithParam<Backend> {
 protected:
  void SetUp() override {
    const std::string why = SkipReason(GetParam());
    if (!why.empty()) GTEST_SKIP() << why;
    if (geteuid() != 0) GTEST_SKIP() << "needs root: creates a network namespace, veth and TAP";
    if (access("/dev/net/tun", R_OK | W_OK) != 0) GTEST_SKIP() << "/dev/net/tun unusable";
    if (access("/usr/sbin/ip", X_OK) != 0 && access("/sbin/ip", X_OK) != 0 &&
        access("/usr/bin/ip", X_OK) != 0) {
      GTEST_SKIP() << "no `ip` (iproute2)";
    }
  }
};

// Static addresses, ARP both ways (the namespace's kernel asks for the
// guest's MAC before it answers) and UDP echoes from a server inside the
// namespace; once with checksums computed by the guest (the receiving
// kernel verifies them) and once offloaded to the device (CSUM).
TEST_P(NetTapTest, StaticUdpEchoThroughTapBridgeAndVeth) {
  TapLab lab;
  ASSERT_TRUE(lab.ok()) << lab.error();
  UdpServer server(UdpServer::Mode::kEcho, "10.0.0.1", lab.netns_path());
  ASSERT_TRUE(server.ok()) << server.error();
  for (const char* csum : {"flint.txcsum=0", "flint.txcsum=1"}) {
    NetRun run{.guest_args = "flint.prog=net-static-udp flint.ip=10.0.0.2 flint.peer=10.0.0.1 "
                             "flint.port=" + std::to_string(server.port()) + " " + csum,
               .tap = lab.tap()};
    ProcessResult r = RunGuest(GetParam(), run);
    ASSERT_EQ(r.exit_status, 1) << csum << "\n" << Describe(r);
    EXPECT_TRUE(Has(r.out, "net: arp peer mac=")) << r.out;
    EXPECT_TRUE(Has(r.out, "net: static udp ok\n")) << r.out;
  }
  EXPECT_GE(server.received(), 4u);
}

// The value of `key=N` in `text` (the guest's counters, flint's --stats), or -1.
int64_t CounterIn(const std::string& text, const std::string& key) {
  const size_t at = text.find(" " + key + "=");
  if (at == std::string::npos) return -1;
  return std::strtoll(text.c_str() + at + key.size() + 2, nullptr, 10);
}

// Receive filtering end to end: a bridge floods frames for an address no one
// has to the guest's TAP. With promiscuous mode off (control queue) the
// device drops them, so the driver never sees a frame for another address;
// with it on (the reset state) they reach the driver, which drops them
// itself. QEMU runs the same guest: both devices must agree.
TEST_P(NetTapTest, ReceiveFilterKeepsOtherAddressesFromTheDriver) {
  TapLab lab;
  ASSERT_TRUE(lab.ok()) << lab.error();
  ASSERT_TRUE(lab.AddNeighbour(UdpServer::kForeignIp, UdpServer::kForeignMac)) << lab.error();
  UdpServer server(UdpServer::Mode::kFilterProbe, "10.0.0.1", lab.netns_path());
  ASSERT_TRUE(server.ok()) << server.error();
  for (const int promisc : {0, 1}) {
    NetRun run{.guest_args = "flint.prog=net-filter flint.ip=10.0.0.2 flint.peer=10.0.0.1 "
                             "flint.port=" + std::to_string(server.port()) +
                             " flint.promisc=" + std::to_string(promisc),
               .tap = lab.tap()};
    if (!GetParam().qemu) run.flint_extra = {"--stats"};
    ProcessResult r = RunGuest(GetParam(), run);
    ASSERT_EQ(r.exit_status, 1) << "promisc=" << promisc << "\n" << Describe(r);
    ASSERT_TRUE(Has(r.out, "net-filter: end ")) << r.out;
    // "net-filter: end other_mac=N": frames for other addresses that
    // reached the driver after the command.
    const int64_t seen_by_driver = CounterIn(r.out, "other_mac");
    ASSERT_GE(seen_by_driver, 0) << r.out;
    if (promisc == 0) {
      EXPECT_EQ(seen_by_driver, 0) << r.out;
      if (!GetParam().qemu) {
        EXPECT_GE(CounterIn(r.out + r.err, "drop_filtered"), UdpServer::kForeignFrames)
            << r.out << r.err;
      }
    } else {
      EXPECT_GE(seen_by_driver, UdpServer::kForeignFrames) << r.out;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Backends, NetTapTest, ::testing::ValuesIn(kBackends),
                         [](const ::testing::TestParamInfo<Backend>& i) { return i.param.name; });

// ---- flint's control socket: backend swap and passt restart -------------------------

// One request on flint's control socket: the reply up to and including the
// final "ok" or "error: ..." line.
bool ControlRequest(const std::string& path, const std::string& request, std::string* reply) {
  reply->clear();
  UniqueFd fd(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  if (!fd.valid() || path.size() >= sizeof(sa.sun_path)) return false;
  memcpy(sa.sun_path, path.c_str(), path.size() + 1);
  if (connect(fd.get(), reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) != 0) {
    *reply = std::string("connect: ") + strerror(errno);
    return false;
  }
  if (write(fd.get(), request.data(), request.size()) != static_cast<ssize_t>(request.size())) {
    return false;
  }
  const int64_t end = NowMs() + 10000;
  char buf[4096];
  while (NowMs() < end) {
    if (!reply->empty() && reply->back() == '\n') {
      const size_t start = reply->rfind('\n', reply->size() - 2);
      const std::string last = reply->substr(start == std::string::npos ? 0 : start + 1);
      if (last == "ok\n" || last.rfind("error:", 0) == 0) return true;
    }
    pollfd p{fd.get(), POLLIN, 0};
    if (poll(&p, 1, 100) <= 0) continue;
    const ssize_t n = read(fd.get(), buf, sizeof(buf));
    if (n <= 0) return false;
    reply->append(buf, static_cast<size_t>(n));
  }
  return false;
}

// `nic 0 backend=passt pid=P restarts=R ...`: P and R, or -1.
void NicInfo(const std::string& info, int64_t* pid, int64_t* restarts) {
  const size_t line = info.find("nic 0 ");
  const std::string l =
      line == std::string::npos ? "" : info.substr(line, info.find('\n', line) - line);
  *pid = NumberAfter(l, " pid=");
  *restarts = NumberAfter(l, " restarts=");
}

// QEMU's human monitor: sends one command and reads until the next prompt.
bool MonitorCommand(const std::string& path, const std::string& command, std::string* reply) {
  reply->clear();
  UniqueFd fd(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  if (!fd.valid() || path.size() >= sizeof(sa.sun_path)) return false;
  memcpy(sa.sun_path, path.c_str(), path.size() + 1);
  if (connect(fd.get(), reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) != 0) return false;
  bool sent = false;
  const int64_t end = NowMs() + 5000;
  char buf[4096];
  while (NowMs() < end) {
    // The banner ends in a prompt; the command's output ends in another.
    if (testing::CountOf(*reply, "(qemu) ") >= (sent ? 2u : 1u)) {
      if (sent) return true;
      const std::string line = command + "\n";
      if (write(fd.get(), line.data(), line.size()) != static_cast<ssize_t>(line.size())) {
        return false;
      }
      sent = true;
    }
    pollfd p{fd.get(), POLLIN, 0};
    if (poll(&p, 1, 100) <= 0) continue;
    const ssize_t n = read(fd.get(), buf, sizeof(buf));
    if (n <= 0) return false;
    reply->append(buf, static_cast<size_t>(n));
  }
  return false;
}

// The guest running net-udp-stream (until the server tells it to stop)
// against a checking server, in the background; with flint's control socket
// or QEMU's monitor to act on the NIC meanwhile.
class StreamSession {
 public:
  explicit StreamSession(const Backend& b) : backend_(b) {
    char tmpl[] = "/tmp/flint-net-ctl-XXXXXX";
    if (mkdtemp(tmpl) != nullptr) dir_ = tmpl;
    socket_ = dir_ + (b.qemu ? "/monitor.sock" : "/control.sock");
  }
  ~StreamSession() {
    server_.RequestStop();  // the guest exits at its next datagram
    if (thread_.joinable()) thread_.join();
    unlink(socket_.c_str());
    if (!dir_.empty()) rmdir(dir_.c_str());
  }

  bool Start(std::string* why) {
    if (!server_.ok() || dir_.empty()) {
      *why = "set-up failed: " + server_.error();
      return false;
    }
    NetRun run{.guest_args = "flint.prog=net-udp-stream flint.maxtime=40 flint.port=" +
                             std::to_string(server_.port()),
               .flint_extra = {"--control-socket", socket_},
               .qemu_extra = {"-monitor", "unix:" + socket_ + ",server=on,wait=off"},
               .timeout_ms = 60000};
    thread_ = std::thread([this, run] {
      result_ = RunGuest(backend_, run);
      done_ = true;
    });
    return true;
  }
  // Waits until the server has seen `more` good datagrams beyond now.
  bool Advance(uint64_t more, int timeout_ms) {
    const uint64_t want = server_.good() + more;
    return WaitFor([&] { return server_.good() >= want; }, timeout_ms,
                   [&] { return done_.load(); });
  }
  // flint's control socket, or QEMU's monitor.
  bool Request(const std::string& req, std::string* reply) {
    struct stat st;
    WaitFor([&] { return stat(socket_.c_str(), &st) == 0; }, 5000, [&] { return done_.load(); });
    return backend_.qemu ? MonitorCommand(socket_, req, reply)
                         : ControlRequest(socket_, req, reply);
  }
  // Asks the guest to stop and waits for the VMM to exit.
  const ProcessResult& Stop() {
    server_.RequestStop();
    if (thread_.joinable()) thread_.join();
    return result_;
  }
  const UdpServer& server() const { return server_; }
  std::string Output() const { return done_ ? Describe(result_) : "(the VMM is still running)"; }

 private:
  const Backend backend_;
  UdpServer server_{UdpServer::Mode::kStream};
  std::string dir_, socket_;
  std::thread thread_;
  std::atomic<bool> done_{false};
  ProcessResult result_;
};

// QEMU's monitor takes the link down (the config's status loses LINK_UP)
// and up again: the guest pauses, re-learns the gateway and goes on.
TEST(NetQemuLinkTest, UdpStreamRidesOutLinkDownAndUp) {
  const std::string skip = SkipReason(Backend{"Qemu", true});
  if (!skip.empty()) GTEST_SKIP() << skip;
  StreamSession s(Backend{"Qemu", true});
  std::string why, reply;
  ASSERT_TRUE(s.Start(&why)) << why;
  ASSERT_TRUE(s.Advance(50, 10000)) << "no stream\n" << s.Output();
  ASSERT_TRUE(s.Request("set_link n0 off", &reply)) << reply;
  // The guest checks the link before each datagram (every ~1 ms): once the
  // server sees none for 200 ms, it has noticed.
  uint64_t seen = s.server().good();
  int64_t quiet_since = NowMs();
  EXPECT_TRUE(WaitFor(
      [&] {
        if (s.server().good() != seen) {
          seen = s.server().good();
          quiet_since = NowMs();
        }
        return NowMs() - quiet_since >= 200;
      },
      5000))
      << "datagrams kept coming with the link down";
  ASSERT_TRUE(s.Request("set_link n0 on", &reply)) << reply;
  ASSERT_TRUE(s.Advance(50, 10000)) << "the stream did not resume\n" << s.Output();
  const ProcessResult& r = s.Stop();
  ASSERT_EQ(r.exit_status, 1) << Describe(r);
  EXPECT_TRUE(Has(r.out, "net: stream link down after sent=")) << r.out;
  EXPECT_TRUE(Has(r.out, "net: stream link up\n")) << r.out;
  EXPECT_TRUE(Has(r.out, " bad=0 ")) << r.out;
  EXPECT_TRUE(Has(r.out, " link_changes=1 end=stop\n")) << r.out;
  EXPECT_EQ(s.server().bad(), 0u);
}

class NetFlintControlTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string why = SkipReason(kFlint);
    if (!why.empty()) GTEST_SKIP() << why;
  }
  const Backend kFlint{"Flint", false};
};

// `net-swap 0 passt` twice while the guest streams: every datagram that
// arrives is intact and the count keeps growing after each swap; each swap
// brings a new passt process.
TEST_F(NetFlintControlTest, SwapToNewPasstTwiceKeepsTheStreamGoing) {
  StreamSession s(kFlint);
  std::string why, reply;
  ASSERT_TRUE(s.Start(&why)) << why;
  ASSERT_TRUE(s.Advance(50, 10000)) << "no stream before the swaps\n" << s.Output();
  ASSERT_TRUE(s.Request("net-info\n", &reply)) << reply << s.Output();
  int64_t pid, restarts;
  NicInfo(reply, &pid, &restarts);
  EXPECT_TRUE(Has(reply, "nic 0 backend=passt ")) << reply;
  for (int swap = 1; swap <= 2; ++swap) {
    ASSERT_TRUE(s.Request("net-swap 0 passt\n", &reply)) << reply << s.Output();
    EXPECT_EQ(reply, "ok\n") << "swap " << swap;
    ASSERT_TRUE(s.Advance(50, 10000)) << "the stream stopped after swap " << swap << "\n"
                                      << s.Output();
    ASSERT_TRUE(s.Request("net-info\n", &reply)) << reply;
    int64_t new_pid;
    NicInfo(reply, &new_pid, &restarts);
    EXPECT_GT(new_pid, 0) << reply;
    EXPECT_NE(new_pid, pid) << "swap " << swap << " kept the same passt\n" << reply;
    pid = new_pid;
  }
  const ProcessResult& r = s.Stop();
  EXPECT_EQ(r.exit_status, 1) << Describe(r);
  EXPECT_TRUE(Has(r.out, " bad=0 ")) << r.out;
  EXPECT_TRUE(Has(r.out, " end=stop\n")) << r.out;
  EXPECT_EQ(s.server().bad(), 0u) << "corrupted datagrams reached the server";
}

// SIGKILL to passt: flint notices, starts a new one (restarts=1, new pid)
// and the guest's stream resumes.
TEST_F(NetFlintControlTest, KilledPasstIsRestartedAndTrafficResumes) {
  StreamSession s(kFlint);
  std::string why, reply;
  ASSERT_TRUE(s.Start(&why)) << why;
  ASSERT_TRUE(s.Advance(50, 10000)) << "no stream before the kill\n" << s.Output();
  ASSERT_TRUE(s.Request("net-info\n", &reply)) << reply << s.Output();
  int64_t pid, restarts;
  NicInfo(reply, &pid, &restarts);
  ASSERT_GT(pid, 1) << reply;
  EXPECT_EQ(restarts, 0) << reply;
  ASSERT_EQ(kill(static_cast<pid_t>(pid), SIGKILL), 0) << strerror(errno);
  ASSERT_TRUE(s.Advance(50, 15000)) << "the stream did not resume\n" << s.Output();
  ASSERT_TRUE(s.Request("net-info\n", &reply)) << reply;
  int64_t new_pid;
  NicInfo(reply, &new_pid, &restarts);
  EXPECT_EQ(restarts, 1) << reply;
  EXPECT_GT(new_pid, 0) << reply;
  EXPECT_NE(new_pid, pid) << reply;
  const ProcessResult& r = s.Stop();
  EXPECT_EQ(r.exit_status, 1) << Describe(r);
  EXPECT_EQ(s.server().bad(), 0u);
}

}  // namespace
}  // namespace flint
