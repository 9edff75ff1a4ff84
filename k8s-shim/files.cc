#include "k8s-shim/files.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/strings/str_format.h"
#include "vmm/kvm/unique_fd.h"

namespace flint::shim {
namespace {

absl::Status Errno(int err, const std::string& what) {
  return absl::InternalError(absl::StrFormat("%s: %s", what, strerror(err)));
}

absl::Status WriteAll(int fd, const std::string& data, const std::string& path) {
  size_t done = 0;
  while (done < data.size()) {
    const ssize_t n = write(fd, data.data() + done, data.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      return Errno(errno, "writing " + path);
    }
    done += static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

std::string DirOf(const std::string& path) {
  const size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : path.substr(0, slash);
}

}  // namespace

absl::StatusOr<std::string> ReadFile(const std::string& path, size_t max_bytes) {
  UniqueFd fd(open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) {
    if (errno == ENOENT) return absl::NotFoundError(path + " does not exist");
    return Errno(errno, "opening " + path);
  }
  std::string out;
  char buf[8192];
  while (out.size() < max_bytes) {
    const ssize_t n = read(fd.get(), buf, std::min(sizeof(buf), max_bytes - out.size()));
    if (n < 0) {
      if (errno == EINTR) continue;
      return Errno(errno, "reading " + path);
    }
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  return out;
}

absl::Status WriteFileAtomic(const std::string& path, const std::string& contents, mode_t mode,
                             bool durable) {
  const std::string tmp = path + ".tmp";
  {
    UniqueFd fd(open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode));
    if (!fd.valid()) return Errno(errno, "creating " + tmp);
    if (absl::Status s = WriteAll(fd.get(), contents, tmp); !s.ok()) {
      unlink(tmp.c_str());
      return s;
    }
    if (durable && fsync(fd.get()) != 0) {
      const int err = errno;
      unlink(tmp.c_str());
      return Errno(err, "fsync of " + tmp);
    }
  }
  if (rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    unlink(tmp.c_str());
    return Errno(err, "renaming " + tmp + " to " + path);
  }
  if (durable) {
    // The rename itself is durable only once the directory is.
    UniqueFd dir(open(DirOf(path).c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (dir.valid()) (void)fsync(dir.get());
  }
  return absl::OkStatus();
}

}  // namespace flint::shim
