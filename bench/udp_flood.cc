// The host-side sender of bench/net_udp.py's host->guest runs: floods one
// UDP destination with fixed-size datagrams, 64 per sendmmsg, until SIGTERM
// or SIGINT. A compiled sender keeps the flood from taking most of a CPU
// (Python's per-datagram sendto did, on a 2-core host that also runs the
// guest, the VMM and passt) and from waking the receiver per datagram.
//
//   udp_flood [--netns PATH] [--bind IP] TO_IP TO_PORT SIZE
//
// Prints the datagrams it handed to the kernel when it stops.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

std::atomic<bool> g_stop{false};

void OnSignal(int) { g_stop = true; }

int Usage() {
  std::fprintf(stderr,
               "usage: udp_flood [--netns PATH] [--bind IP] [--rate PPS] TO_IP TO_PORT SIZE\n");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  std::string netns, bind_ip;
  long long rate = 0;
  std::vector<std::string> pos;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if ((a == "--netns" || a == "--bind") && i + 1 < argc) {
      (a == "--netns" ? netns : bind_ip) = argv[++i];
    } else if (a == "--rate" && i + 1 < argc) {
      char* end = nullptr;
      rate = std::strtoll(argv[++i], &end, 10);
      if (end == argv[i] || *end != '\0' || rate < 0) return Usage();
    } else {
      pos.push_back(a);
    }
  }
  if (pos.size() != 3) return Usage();
  const int port = std::atoi(pos[1].c_str());
  const int size = std::atoi(pos[2].c_str());
  if (port <= 0 || port > 65535 || size <= 0 || size > 65507) return Usage();

  if (!netns.empty()) {
    const int fd = open(netns.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0 || setns(fd, CLONE_NEWNET) != 0) {
      std::fprintf(stderr, "udp_flood: cannot enter %s: %s\n", netns.c_str(), strerror(errno));
      return 1;
    }
    close(fd);
  }
  const int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  sockaddr_in to{};
  to.sin_family = AF_INET;
  to.sin_port = htons(static_cast<uint16_t>(port));
  if (s < 0 || inet_pton(AF_INET, pos[0].c_str(), &to.sin_addr) != 1) return Usage();
  if (!bind_ip.empty()) {
    sockaddr_in from{};
    from.sin_family = AF_INET;
    if (inet_pton(AF_INET, bind_ip.c_str(), &from.sin_addr) != 1 ||
        bind(s, reinterpret_cast<sockaddr*>(&from), sizeof(from)) != 0) {
      std::fprintf(stderr, "udp_flood: cannot bind %s: %s\n", bind_ip.c_str(), strerror(errno));
      return 1;
    }
  }
  struct sigaction sa{};
  sa.sa_handler = OnSignal;
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGINT, &sa, nullptr);

  constexpr int kBatch = 64;
  std::vector<char> payload(static_cast<size_t>(size), 0);
  iovec iov{payload.data(), payload.size()};
  std::vector<mmsghdr> msgs(kBatch);
  for (mmsghdr& m : msgs) {
    m.msg_hdr.msg_name = &to;
    m.msg_hdr.msg_namelen = sizeof(to);
    m.msg_hdr.msg_iov = &iov;
    m.msg_hdr.msg_iovlen = 1;
  }
  unsigned long long sent = 0;
  // With a rate: one batch per kBatch/rate seconds, on absolute deadlines.
  const long long period_ns = rate > 0 ? 1000000000LL * kBatch / rate : 0;
  timespec next{};
  clock_gettime(CLOCK_MONOTONIC, &next);
  while (!g_stop) {
    if (period_ns > 0) {
      next.tv_nsec += period_ns;
      next.tv_sec += next.tv_nsec / 1000000000;
      next.tv_nsec %= 1000000000;
      // Fell behind by more than a batch (descheduled): start again from
      // now rather than send the missed batches back to back.
      timespec now{};
      clock_gettime(CLOCK_MONOTONIC, &now);
      const long long late =
          (now.tv_sec - next.tv_sec) * 1000000000LL + (now.tv_nsec - next.tv_nsec);
      if (late > period_ns) next = now;
      clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next, nullptr);
    }
    const int n = sendmmsg(s, msgs.data(), kBatch, 0);
    // ECONNREFUSED before the receiver binds, ENOBUFS under load: go on.
    if (n > 0) sent += static_cast<unsigned>(n);
  }
  std::printf("udp_flood: sent %llu datagrams\n", sent);
  return 0;
}
