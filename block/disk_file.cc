#include "block/disk_file.h"

#include <fcntl.h>
#include <linux/fs.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include "absl/strings/str_format.h"

namespace flint::block {
namespace {

constexpr uint64_t kSector = 512;

bool ValidBlockSize(uint32_t v) { return v >= 512 && v <= 65536 && (v & (v - 1)) == 0; }

// Messages leave the path out: the caller names it ("--disk path=P: ...").
absl::Status OpenError(bool readonly, bool direct, int err) {
  switch (err) {
    case ENOENT:
      return absl::NotFoundError("the image does not exist");
    case EACCES:
    case EPERM:
    case EROFS:
      if (!readonly) {
        return absl::PermissionDeniedError(absl::StrFormat(
            "cannot open the image for writing: %s (add readonly=on to attach it read-only)",
            strerror(err)));
      }
      return absl::PermissionDeniedError(
          absl::StrFormat("cannot open the image: %s", strerror(err)));
    case EISDIR:
      return absl::InvalidArgumentError(
          "the path is a directory, not a raw image file or a block device");
    case EINVAL:
      if (direct) {
        return absl::InvalidArgumentError(
            "the image's filesystem does not support O_DIRECT (direct=on); use direct=off");
      }
      break;
    default:
      break;
  }
  return absl::InvalidArgumentError(absl::StrFormat("cannot open the image: %s", strerror(err)));
}

}  // namespace

absl::StatusOr<DiskFile> DiskFile::Open(const std::string& path, bool readonly, bool direct) {
  // O_NONBLOCK keeps open() from hanging on a FIFO given by mistake; it is
  // cleared below, once the file is known to be a disk (io_uring would
  // otherwise return EAGAIN instead of waiting for the I/O).
  int flags = (readonly ? O_RDONLY : O_RDWR) | O_CLOEXEC | O_NONBLOCK;
  if (direct) flags |= O_DIRECT;
  DiskFile disk;
  disk.fd_.reset(open(path.c_str(), flags));
  if (!disk.fd_.valid()) return OpenError(readonly, direct, errno);
  disk.path_ = path;
  disk.readonly_ = readonly;
  disk.direct_ = direct;

  struct stat st;
  if (fstat(disk.fd(), &st) != 0) {
    return absl::InternalError(absl::StrFormat("fstat of the image failed: %s", strerror(errno)));
  }
  if (S_ISDIR(st.st_mode)) return OpenError(readonly, direct, EISDIR);
  if (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode)) {
    return absl::InvalidArgumentError(
        "the path is neither a raw image file nor a block device");
  }
  disk.is_block_device_ = S_ISBLK(st.st_mode);
  int fl = fcntl(disk.fd(), F_GETFL);
  if (fl < 0 || fcntl(disk.fd(), F_SETFL, fl & ~O_NONBLOCK) != 0) {
    return absl::InternalError(
        absl::StrFormat("fcntl(F_SETFL) on the image failed: %s", strerror(errno)));
  }

  // Before the size checks: a locked image is the more useful message.
  if (flock(disk.fd(), (readonly ? LOCK_SH : LOCK_EX) | LOCK_NB) != 0) {
    if (errno == EWOULDBLOCK) {
      return absl::FailedPreconditionError(
          "the image is in use by another process (it holds a lock on the file)");
    }
    return absl::InternalError(absl::StrFormat("flock of the image failed: %s", strerror(errno)));
  }

  if (disk.is_block_device_) {
    uint64_t bytes = 0;
    if (ioctl(disk.fd(), BLKGETSIZE64, &bytes) != 0) {
      return absl::InternalError(
          absl::StrFormat("BLKGETSIZE64 on the block device failed: %s", strerror(errno)));
    }
    int lbs = 0;
    if (ioctl(disk.fd(), BLKSSZGET, &lbs) != 0) {
      return absl::InternalError(
          absl::StrFormat("BLKSSZGET on the block device failed: %s", strerror(errno)));
    }
    disk.size_ = bytes;
    if (ValidBlockSize(static_cast<uint32_t>(lbs))) {
      disk.logical_block_size_ = static_cast<uint32_t>(lbs);
    }
  } else {
    disk.size_ = static_cast<uint64_t>(st.st_size);
  }
  if (disk.size_ == 0 || disk.size_ % kSector != 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "the image is %u bytes; a disk's size must be a positive multiple of 512 bytes",
        disk.size_));
  }

  if (direct) {
    // Where the kernel says what O_DIRECT needs (statx DIOALIGN, Linux 6.1),
    // believe it; otherwise the classic rule: the logical block size for
    // both memory and offsets.
    disk.memory_alignment_ = disk.logical_block_size_;
    struct statx stx {};
    if (statx(disk.fd(), "", AT_EMPTY_PATH, STATX_DIOALIGN, &stx) == 0 &&
        (stx.stx_mask & STATX_DIOALIGN) != 0 && stx.stx_dio_offset_align != 0) {
      if (ValidBlockSize(stx.stx_dio_offset_align)) {
        disk.logical_block_size_ = stx.stx_dio_offset_align;
      }
      if (stx.stx_dio_mem_align != 0 && stx.stx_dio_mem_align <= 4096 &&
          (stx.stx_dio_mem_align & (stx.stx_dio_mem_align - 1)) == 0) {
        disk.memory_alignment_ = stx.stx_dio_mem_align;
      }
    }
  }
  return disk;
}

}  // namespace flint::block
