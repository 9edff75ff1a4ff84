// The short, bounded blocking waits of passt supervision (finishing a
// half-written frame before closing the stream, giving passt a grace period
// to exit): a monotonic millisecond clock and a poll that honours a deadline.
#pragma once

#include <poll.h>
#include <time.h>

#include <cerrno>
#include <cstdint>

namespace flint::net {

inline int64_t MonotonicMs() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t{ts.tv_sec} * 1000 + ts.tv_nsec / 1000000;
}

// Waits until `fd` reports one of `events` (or an error or hang-up) or the
// MonotonicMs() time `deadline_ms` has passed; returns whether it did.
inline bool PollUntil(int fd, short events, int64_t deadline_ms) {
  for (;;) {
    const int64_t left = deadline_ms - MonotonicMs();
    pollfd p{fd, events, 0};
    const int r = poll(&p, 1, left > 0 ? static_cast<int>(left) : 0);
    if (r > 0) return true;
    if (r < 0 && errno == EINTR) continue;
    if (r < 0 || left <= 0) return false;
  }
}

}  // namespace flint::net
