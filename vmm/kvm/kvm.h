// The one thin typed layer over the /dev/kvm, VM and vCPU file descriptors.
// Every KVM ioctl flint issues goes through these classes; each returns an
// absl::Status naming the ioctl and the errno, so callers can act on it.
#pragma once

#include <linux/kvm.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "vmm/kvm/unique_fd.h"

namespace flint {

class KvmVcpu;
class KvmVm;

// Builds "NAME failed: strerror(errno)" as an absl::Status with a code that
// matches errno (EPERM/EACCES -> PermissionDenied, ENOENT -> NotFound, ...).
absl::Status ErrnoStatus(int err, const std::string& what);

class Kvm {
 public:
  // Opens /dev/kvm (or `path`) and checks the API version and the
  // capabilities flint cannot run without.
  static absl::StatusOr<Kvm> Open(const std::string& path = "/dev/kvm");

  int fd() const { return fd_.get(); }
  // KVM_CHECK_EXTENSION: 0 when absent, else the capability's value.
  int CheckExtension(long cap) const;
  absl::Status RequireExtension(long cap, const char* name) const;
  absl::StatusOr<std::vector<kvm_cpuid_entry2>> GetSupportedCpuid() const;
  size_t vcpu_mmap_size() const { return vcpu_mmap_size_; }
  absl::StatusOr<KvmVm> CreateVm() const;

 private:
  UniqueFd fd_;
  size_t vcpu_mmap_size_ = 0;
};

class KvmVm {
 public:
  explicit KvmVm(UniqueFd fd, size_t vcpu_mmap_size)
      : fd_(std::move(fd)), vcpu_mmap_size_(vcpu_mmap_size) {}
  int fd() const { return fd_.get(); }

  absl::Status SetUserMemoryRegion(uint32_t slot, uint64_t gpa, uint64_t size, void* host,
                                   uint32_t flags = 0);
  absl::Status SetTssAddr(uint64_t addr);
  absl::Status SetIdentityMapAddr(uint64_t addr);
  absl::Status CreateIrqchip();
  absl::Status CreatePit2();
  // Level of a GSI on the in-kernel IOAPIC/PIC.
  absl::Status SetIrqLine(uint32_t gsi, bool level);
  // Replaces the whole GSI routing table (irqchip pins and MSI routes).
  absl::Status SetGsiRouting(const std::vector<kvm_irq_routing_entry>& entries);
  absl::Status RegisterIrqfd(int event_fd, uint32_t gsi, int resample_fd = -1);
  absl::Status UnregisterIrqfd(int event_fd, uint32_t gsi);
  // Binds a guest PIO (is_pio) or MMIO write of `len` bytes at `addr` to an
  // eventfd, handled in the kernel without an exit to flint.
  absl::Status RegisterIoeventfd(int event_fd, uint64_t addr, uint32_t len, bool is_pio,
                                 std::optional<uint64_t> datamatch = std::nullopt);
  absl::Status UnregisterIoeventfd(int event_fd, uint64_t addr, uint32_t len, bool is_pio,
                                   std::optional<uint64_t> datamatch = std::nullopt);
  absl::StatusOr<KvmVcpu> CreateVcpu(uint32_t id);

 private:
  UniqueFd fd_;
  size_t vcpu_mmap_size_;
};

class KvmVcpu {
 public:
  KvmVcpu(UniqueFd fd, kvm_run* run, size_t run_size, uint32_t id)
      : fd_(std::move(fd)), run_(run), run_size_(run_size), id_(id) {}
  KvmVcpu(KvmVcpu&& o) noexcept;
  KvmVcpu& operator=(KvmVcpu&& o) noexcept;
  KvmVcpu(const KvmVcpu&) = delete;
  KvmVcpu& operator=(const KvmVcpu&) = delete;
  ~KvmVcpu();

  int fd() const { return fd_.get(); }
  uint32_t id() const { return id_; }
  kvm_run* run_struct() const { return run_; }
  size_t run_size() const { return run_size_; }

  // KVM_RUN. Returns the raw ioctl result (0, or -1 with errno set) so the
  // hot loop can tell EINTR/EAGAIN from real failures without allocating.
  int Run() const;

  absl::StatusOr<kvm_regs> GetRegs() const;
  absl::Status SetRegs(const kvm_regs& regs) const;
  absl::StatusOr<kvm_sregs> GetSregs() const;
  absl::Status SetSregs(const kvm_sregs& sregs) const;
  absl::Status SetFpu(const kvm_fpu& fpu) const;
  absl::Status SetCpuid(const std::vector<kvm_cpuid_entry2>& entries) const;
  // Sets every MSR; fails naming the first MSR KVM refused.
  absl::Status SetMsrs(const std::vector<kvm_msr_entry>& msrs) const;
  absl::StatusOr<kvm_lapic_state> GetLapic() const;
  absl::Status SetLapic(const kvm_lapic_state& lapic) const;
  absl::StatusOr<kvm_mp_state> GetMpState() const;

 private:
  void Unmap();

  UniqueFd fd_;
  kvm_run* run_ = nullptr;
  size_t run_size_ = 0;
  uint32_t id_ = 0;
};

}  // namespace flint
