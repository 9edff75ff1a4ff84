#include "vmm/boot/file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_format.h"

namespace flint {
namespace {

absl::Status ErrnoError(int err, const std::string& what) {
  std::string msg = absl::StrFormat("%s: %s", what, strerror(err));
  if (err == ENOENT || err == ENOTDIR) return absl::NotFoundError(msg);
  if (err == EACCES || err == EPERM) return absl::PermissionDeniedError(msg);
  return absl::InternalError(msg);
}

class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }

 private:
  int fd_;
};

}  // namespace

absl::StatusOr<std::vector<uint8_t>> ReadWholeFile(const std::string& path, uint64_t max_bytes) {
  Fd fd(open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) return ErrnoError(errno, "cannot open " + path);
  struct stat st;
  if (fstat(fd.get(), &st) != 0) return ErrnoError(errno, "cannot stat " + path);
  if (S_ISDIR(st.st_mode)) {
    return absl::InvalidArgumentError(absl::StrFormat("%s is a directory, not a file", path));
  }
  auto too_big = [&]() {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s is larger than the %u-byte limit for this file", path, max_bytes));
  };
  if (S_ISREG(st.st_mode) && static_cast<uint64_t>(st.st_size) > max_bytes) {
    return too_big();
  }

  std::vector<uint8_t> data;
  if (S_ISREG(st.st_mode)) data.reserve(static_cast<size_t>(st.st_size));
  // Read until EOF rather than trusting st_size: the file may change, and
  // pipes and character devices report no size.
  uint8_t buf[1 << 16];
  while (true) {
    ssize_t n = read(fd.get(), buf, sizeof(buf));
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoError(errno, "cannot read " + path);
    }
    if (n == 0) break;
    if (static_cast<uint64_t>(n) > max_bytes - data.size()) return too_big();
    data.insert(data.end(), buf, buf + n);
  }
  return data;
}

}  // namespace flint
