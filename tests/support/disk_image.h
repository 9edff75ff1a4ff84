// A raw disk image file for end-to-end tests: created with given contents
// in a directory (the build tree: tmpfs, where /tmp may be, refuses
// O_DIRECT), removed when the test ends.
#pragma once

#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include <cstdint>
#include <fstream>
#include <iterator>
#include <string>

namespace flint::testing {

inline std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

class TempImage {
 public:
  // `dir`/`prefix`-XXXXXX.img holding `contents`; ok() says whether it worked.
  TempImage(const std::string& dir, const std::string& prefix, const std::string& contents) {
    std::string tmpl = dir + "/" + prefix + "-XXXXXX.img";
    const int fd = mkstemps(tmpl.data(), 4);
    if (fd < 0) return;
    path_ = tmpl;
    ok_ = write(fd, contents.data(), contents.size()) == static_cast<ssize_t>(contents.size());
    close(fd);
  }
  ~TempImage() {
    if (!path_.empty()) unlink(path_.c_str());
  }
  TempImage(const TempImage&) = delete;
  TempImage& operator=(const TempImage&) = delete;

  bool ok() const { return ok_; }
  const std::string& path() const { return path_; }
  std::string contents() const { return ReadFile(path_); }
  bool WriteAt(uint64_t offset, const std::string& data) const {
    const int fd = open(path_.c_str(), O_WRONLY | O_CLOEXEC);
    if (fd < 0) return false;
    const bool ok = pwrite(fd, data.data(), data.size(), static_cast<off_t>(offset)) ==
                    static_cast<ssize_t>(data.size());
    close(fd);
    return ok;
  }

 private:
  std::string path_;
  bool ok_ = false;
};

}  // namespace flint::testing
