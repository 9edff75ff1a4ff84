#include "vmm/console.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <vector>

#include "vmm/devices/serial.h"
#include "vmm/kvm/kvm.h"

namespace flint {

absl::Status ConsoleInput::Start(int in_fd, Serial* serial) {
  int efd = eventfd(0, EFD_CLOEXEC);
  if (efd < 0) return ErrnoStatus(errno, "eventfd for console input");
  wake_.reset(efd);
  thread_ = std::thread([this, in_fd, serial] { Loop(in_fd, serial); });
  pthread_setname_np(thread_.native_handle(), "flint-console");
  return absl::OkStatus();
}

void ConsoleInput::Stop() {
  if (!thread_.joinable()) return;
  uint64_t one = 1;
  (void)!write(wake_.get(), &one, sizeof(one));
  thread_.join();
}

void ConsoleInput::Loop(int in_fd, Serial* serial) {
  std::vector<uint8_t> pending;
  uint8_t buf[256];
  bool eof = false;
  for (;;) {
    // Read only when the UART has room and nothing is still waiting.
    bool want_input = !eof && pending.empty();
    pollfd fds[2] = {{wake_.get(), POLLIN, 0}, {in_fd, static_cast<short>(want_input ? POLLIN : 0), 0}};
    int n = poll(fds, want_input ? 2 : 1, pending.empty() ? -1 : 10);
    if (n < 0 && errno != EINTR) return;
    if (fds[0].revents & POLLIN) return;
    if (!pending.empty()) {
      size_t took = serial->QueueInput(pending);
      pending.erase(pending.begin(), pending.begin() + static_cast<long>(took));
      continue;
    }
    if (want_input && (fds[1].revents & (POLLIN | POLLHUP | POLLERR))) {
      ssize_t r = read(in_fd, buf, sizeof(buf));
      if (r < 0 && (errno == EINTR || errno == EAGAIN)) continue;
      if (r <= 0) {
        eof = true;  // stdin closed: the guest keeps running without input
        continue;
      }
      size_t took = serial->QueueInput(std::span<const uint8_t>(buf, static_cast<size_t>(r)));
      pending.assign(buf + took, buf + r);
    }
  }
}

}  // namespace flint
