// A disk image opened for a VM: a raw image file or a block device, locked so
// that two flint processes cannot write one image, with its size and the
// alignment O_DIRECT asks for.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "vmm/kvm/unique_fd.h"

namespace flint::block {

class DiskFile {
 public:
  // Opens `path` read-only or read-write, with O_DIRECT when `direct`.
  // Errors say what is wrong and, where one helps, the option to change
  // (readonly=on, direct=off); they leave the path to the caller, which
  // names it once ("--disk path=P: ...").
  static absl::StatusOr<DiskFile> Open(const std::string& path, bool readonly, bool direct);

  int fd() const { return fd_.get(); }
  const std::string& path() const { return path_; }
  uint64_t size() const { return size_; }  // bytes: a positive multiple of 512
  // The sector size the guest should use: 512 for a file opened without
  // O_DIRECT, else what the kernel reports (BLKSSZGET, statx DIOALIGN).
  uint32_t logical_block_size() const { return logical_block_size_; }
  // Memory alignment O_DIRECT needs of every buffer (1 without O_DIRECT).
  uint32_t memory_alignment() const { return memory_alignment_; }
  bool readonly() const { return readonly_; }
  bool direct() const { return direct_; }
  bool is_block_device() const { return is_block_device_; }

 private:
  DiskFile() = default;

  UniqueFd fd_;
  std::string path_;
  uint64_t size_ = 0;
  uint32_t logical_block_size_ = 512;
  uint32_t memory_alignment_ = 1;
  bool readonly_ = false;
  bool direct_ = false;
  bool is_block_device_ = false;
};

}  // namespace flint::block
