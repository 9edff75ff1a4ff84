#include "vmm/kvm/kvm.h"

#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/mman.h>

#include <cerrno>
#include <cstring>
#include <memory>
#include <utility>

#include "absl/strings/str_format.h"
#include "vmm/kvm/abi.h"

namespace flint {
namespace {

// The argument of a variable-length ioctl: an 8-byte header (count, padding;
// see abi.h for why not the kernel struct) followed by the entries.
template <typename Header, typename Entry>
std::unique_ptr<uint8_t[]> PackEntries(const std::vector<Entry>& entries) {
  const size_t bytes = sizeof(Header) + entries.size() * sizeof(Entry);
  auto buf = std::make_unique<uint8_t[]>(bytes);
  std::memset(buf.get(), 0, bytes);
  const uint32_t n = static_cast<uint32_t>(entries.size());
  std::memcpy(buf.get(), &n, sizeof(n));  // every header starts with its count
  if (!entries.empty()) {
    std::memcpy(buf.get() + sizeof(Header), entries.data(), entries.size() * sizeof(Entry));
  }
  return buf;
}

}  // namespace

absl::Status ErrnoStatus(int err, const std::string& what) {
  std::string msg = absl::StrFormat("%s failed: %s", what, strerror(err));
  switch (err) {
    case EPERM:
    case EACCES:
      return absl::PermissionDeniedError(msg);
    case ENOENT:
    case ENODEV:
    case ENXIO:
      return absl::NotFoundError(msg);
    case EINVAL:
    case E2BIG:
      return absl::InvalidArgumentError(msg);
    case ENOMEM:
    case ENOSPC:
    case EMFILE:
      return absl::ResourceExhaustedError(msg);
    case EEXIST:
      return absl::AlreadyExistsError(msg);
    default:
      return absl::InternalError(msg);
  }
}

namespace {

// Retries an ioctl interrupted by a signal (set-up ioctls, never KVM_RUN).
template <typename Arg>
int Ioctl(int fd, unsigned long req, Arg arg) {
  int r;
  do {
    r = ioctl(fd, req, arg);
  } while (r < 0 && errno == EINTR);
  return r;
}

}  // namespace

absl::StatusOr<Kvm> Kvm::Open(const std::string& path) {
  int fd = open(path.c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0) {
    int e = errno;
    if (e == ENOENT) {
      return absl::NotFoundError(absl::StrFormat(
          "%s does not exist: this host offers no KVM (load kvm_intel/kvm_amd, or run on a host "
          "with virtualization enabled)",
          path));
    }
    if (e == EACCES || e == EPERM) {
      return absl::PermissionDeniedError(absl::StrFormat(
          "cannot open %s: %s (run as root or add this user to the group that owns it)", path,
          strerror(e)));
    }
    return ErrnoStatus(e, "open " + path);
  }
  Kvm kvm;
  kvm.fd_.reset(fd);
  int version = ioctl(fd, KVM_GET_API_VERSION, 0);
  if (version != KVM_API_VERSION) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "%s speaks KVM API version %d; flint needs %d", path, version, KVM_API_VERSION));
  }
  struct Required {
    long cap;
    const char* name;
  };
  static constexpr Required kRequired[] = {
      {KVM_CAP_USER_MEMORY, "KVM_CAP_USER_MEMORY"},
      {KVM_CAP_IRQCHIP, "KVM_CAP_IRQCHIP"},
      {KVM_CAP_PIT2, "KVM_CAP_PIT2"},
      {KVM_CAP_IOEVENTFD, "KVM_CAP_IOEVENTFD"},
      {KVM_CAP_IRQFD, "KVM_CAP_IRQFD"},
      {KVM_CAP_EXT_CPUID, "KVM_CAP_EXT_CPUID"},
      {KVM_CAP_IMMEDIATE_EXIT, "KVM_CAP_IMMEDIATE_EXIT"},
  };
  for (const auto& r : kRequired) {
    if (absl::Status s = kvm.RequireExtension(r.cap, r.name); !s.ok()) return s;
  }
  int size = ioctl(fd, KVM_GET_VCPU_MMAP_SIZE, 0);
  if (size <= 0) return ErrnoStatus(errno, "KVM_GET_VCPU_MMAP_SIZE");
  kvm.vcpu_mmap_size_ = static_cast<size_t>(size);
  return kvm;
}

int Kvm::CheckExtension(long cap) const {
  int r = ioctl(fd_.get(), KVM_CHECK_EXTENSION, cap);
  return r < 0 ? 0 : r;
}

absl::Status Kvm::RequireExtension(long cap, const char* name) const {
  if (CheckExtension(cap) > 0) return absl::OkStatus();
  return absl::FailedPreconditionError(
      absl::StrFormat("this host's KVM lacks %s, which flint requires", name));
}

absl::StatusOr<std::vector<kvm_cpuid_entry2>> Kvm::GetSupportedCpuid() const {
  // KVM returns E2BIG until the buffer is large enough.
  for (uint32_t n = 128; n <= 4096; n *= 2) {
    size_t bytes = sizeof(kvm_abi::Cpuid2Header) + n * sizeof(kvm_cpuid_entry2);
    auto buf = std::make_unique<uint8_t[]>(bytes);
    std::memset(buf.get(), 0, bytes);
    auto* c = reinterpret_cast<kvm_abi::Cpuid2Header*>(buf.get());
    c->nent = n;
    if (Ioctl(fd_.get(), kvm_abi::kGetSupportedCpuid, c) == 0) {
      if (c->nent > n) return absl::InternalError("KVM_GET_SUPPORTED_CPUID returned too many entries");
      std::vector<kvm_cpuid_entry2> out(c->nent);
      std::memcpy(out.data(), buf.get() + sizeof(*c), c->nent * sizeof(kvm_cpuid_entry2));
      return out;
    }
    if (errno != E2BIG) return ErrnoStatus(errno, "KVM_GET_SUPPORTED_CPUID");
  }
  return absl::InternalError("KVM_GET_SUPPORTED_CPUID: more than 4096 entries");
}

absl::StatusOr<KvmVm> Kvm::CreateVm() const {
  int fd = Ioctl(fd_.get(), KVM_CREATE_VM, 0);
  if (fd < 0) return ErrnoStatus(errno, "KVM_CREATE_VM");
  return KvmVm(UniqueFd(fd), vcpu_mmap_size_);
}

absl::Status KvmVm::SetUserMemoryRegion(uint32_t slot, uint64_t gpa, uint64_t size, void* host,
                                        uint32_t flags) {
  kvm_userspace_memory_region r{};
  r.slot = slot;
  r.flags = flags;
  r.guest_phys_addr = gpa;
  r.memory_size = size;
  r.userspace_addr = reinterpret_cast<uint64_t>(host);
  if (Ioctl(fd_.get(), KVM_SET_USER_MEMORY_REGION, &r) != 0) {
    return ErrnoStatus(errno, absl::StrFormat("KVM_SET_USER_MEMORY_REGION (slot %u, gpa 0x%x, "
                                              "%u MiB)",
                                              slot, gpa, size >> 20));
  }
  return absl::OkStatus();
}

absl::Status KvmVm::SetTssAddr(uint64_t addr) {
  if (Ioctl(fd_.get(), KVM_SET_TSS_ADDR, static_cast<unsigned long>(addr)) != 0) {
    return ErrnoStatus(errno, "KVM_SET_TSS_ADDR");
  }
  return absl::OkStatus();
}

absl::Status KvmVm::SetIdentityMapAddr(uint64_t addr) {
  if (Ioctl(fd_.get(), KVM_SET_IDENTITY_MAP_ADDR, &addr) != 0) {
    return ErrnoStatus(errno, "KVM_SET_IDENTITY_MAP_ADDR");
  }
  return absl::OkStatus();
}

absl::Status KvmVm::CreateIrqchip() {
  if (Ioctl(fd_.get(), KVM_CREATE_IRQCHIP, 0) != 0) return ErrnoStatus(errno, "KVM_CREATE_IRQCHIP");
  return absl::OkStatus();
}

absl::Status KvmVm::CreatePit2() {
  kvm_pit_config pit{};
  pit.flags = KVM_PIT_SPEAKER_DUMMY;
  if (Ioctl(fd_.get(), KVM_CREATE_PIT2, &pit) != 0) return ErrnoStatus(errno, "KVM_CREATE_PIT2");
  return absl::OkStatus();
}

absl::Status KvmVm::SetIrqLine(uint32_t gsi, bool level) {
  kvm_irq_level l{};
  l.irq = gsi;
  l.level = level ? 1 : 0;
  if (Ioctl(fd_.get(), KVM_IRQ_LINE, &l) != 0) {
    return ErrnoStatus(errno, absl::StrFormat("KVM_IRQ_LINE (gsi %u)", gsi));
  }
  return absl::OkStatus();
}

absl::Status KvmVm::RegisterIrqfd(int event_fd, uint32_t gsi, int resample_fd) {
  kvm_irqfd f{};
  f.fd = static_cast<uint32_t>(event_fd);
  f.gsi = gsi;
  if (resample_fd >= 0) {
    f.flags = KVM_IRQFD_FLAG_RESAMPLE;
    f.resamplefd = static_cast<uint32_t>(resample_fd);
  }
  if (Ioctl(fd_.get(), KVM_IRQFD, &f) != 0) {
    return ErrnoStatus(errno, absl::StrFormat("KVM_IRQFD (gsi %u)", gsi));
  }
  return absl::OkStatus();
}

absl::Status KvmVm::UnregisterIrqfd(int event_fd, uint32_t gsi) {
  kvm_irqfd f{};
  f.fd = static_cast<uint32_t>(event_fd);
  f.gsi = gsi;
  f.flags = KVM_IRQFD_FLAG_DEASSIGN;
  if (Ioctl(fd_.get(), KVM_IRQFD, &f) != 0) {
    return ErrnoStatus(errno, absl::StrFormat("KVM_IRQFD deassign (gsi %u)", gsi));
  }
  return absl::OkStatus();
}

absl::Status KvmVm::SetGsiRouting(const std::vector<kvm_irq_routing_entry>& entries) {
  auto buf = PackEntries<kvm_abi::IrqRoutingHeader>(entries);
  if (Ioctl(fd_.get(), kvm_abi::kSetGsiRouting, buf.get()) != 0) {
    return ErrnoStatus(errno, absl::StrFormat("KVM_SET_GSI_ROUTING (%u routes)", entries.size()));
  }
  return absl::OkStatus();
}

namespace {
kvm_ioeventfd MakeIoeventfd(int event_fd, uint64_t addr, uint32_t len, bool is_pio,
                            std::optional<uint64_t> datamatch) {
  kvm_ioeventfd e{};
  e.addr = addr;
  e.len = len;
  e.fd = event_fd;
  if (is_pio) e.flags |= KVM_IOEVENTFD_FLAG_PIO;
  if (datamatch) {
    e.flags |= KVM_IOEVENTFD_FLAG_DATAMATCH;
    e.datamatch = *datamatch;
  }
  return e;
}
}  // namespace

absl::Status KvmVm::RegisterIoeventfd(int event_fd, uint64_t addr, uint32_t len, bool is_pio,
                                      std::optional<uint64_t> datamatch) {
  kvm_ioeventfd e = MakeIoeventfd(event_fd, addr, len, is_pio, datamatch);
  if (Ioctl(fd_.get(), KVM_IOEVENTFD, &e) != 0) {
    return ErrnoStatus(errno, absl::StrFormat("KVM_IOEVENTFD (%s 0x%x len %u)",
                                              is_pio ? "port" : "mmio", addr, len));
  }
  return absl::OkStatus();
}

absl::Status KvmVm::UnregisterIoeventfd(int event_fd, uint64_t addr, uint32_t len, bool is_pio,
                                        std::optional<uint64_t> datamatch) {
  kvm_ioeventfd e = MakeIoeventfd(event_fd, addr, len, is_pio, datamatch);
  e.flags |= KVM_IOEVENTFD_FLAG_DEASSIGN;
  if (Ioctl(fd_.get(), KVM_IOEVENTFD, &e) != 0) {
    return ErrnoStatus(errno, absl::StrFormat("KVM_IOEVENTFD deassign (%s 0x%x)",
                                              is_pio ? "port" : "mmio", addr));
  }
  return absl::OkStatus();
}

absl::StatusOr<KvmVcpu> KvmVm::CreateVcpu(uint32_t id) {
  int fd = Ioctl(fd_.get(), KVM_CREATE_VCPU, static_cast<unsigned long>(id));
  if (fd < 0) return ErrnoStatus(errno, absl::StrFormat("KVM_CREATE_VCPU %u", id));
  UniqueFd owned(fd);
  void* p = mmap(nullptr, vcpu_mmap_size_, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) return ErrnoStatus(errno, absl::StrFormat("mmap of vCPU %u kvm_run", id));
  return KvmVcpu(std::move(owned), static_cast<kvm_run*>(p), vcpu_mmap_size_, id);
}

KvmVcpu::KvmVcpu(KvmVcpu&& o) noexcept
    : fd_(std::move(o.fd_)),
      run_(std::exchange(o.run_, nullptr)),
      run_size_(o.run_size_),
      id_(o.id_) {}

KvmVcpu& KvmVcpu::operator=(KvmVcpu&& o) noexcept {
  if (this != &o) {
    Unmap();
    fd_ = std::move(o.fd_);
    run_ = std::exchange(o.run_, nullptr);
    run_size_ = o.run_size_;
    id_ = o.id_;
  }
  return *this;
}

KvmVcpu::~KvmVcpu() { Unmap(); }

void KvmVcpu::Unmap() {
  if (run_ != nullptr) munmap(run_, run_size_);
  run_ = nullptr;
}

int KvmVcpu::Run() const { return ioctl(fd_.get(), KVM_RUN, 0); }

absl::StatusOr<kvm_regs> KvmVcpu::GetRegs() const {
  kvm_regs r{};
  if (Ioctl(fd_.get(), KVM_GET_REGS, &r) != 0) return ErrnoStatus(errno, "KVM_GET_REGS");
  return r;
}

absl::Status KvmVcpu::SetRegs(const kvm_regs& regs) const {
  if (Ioctl(fd_.get(), KVM_SET_REGS, &regs) != 0) return ErrnoStatus(errno, "KVM_SET_REGS");
  return absl::OkStatus();
}

absl::StatusOr<kvm_sregs> KvmVcpu::GetSregs() const {
  kvm_sregs s{};
  if (Ioctl(fd_.get(), KVM_GET_SREGS, &s) != 0) return ErrnoStatus(errno, "KVM_GET_SREGS");
  return s;
}

absl::Status KvmVcpu::SetSregs(const kvm_sregs& sregs) const {
  if (Ioctl(fd_.get(), KVM_SET_SREGS, &sregs) != 0) return ErrnoStatus(errno, "KVM_SET_SREGS");
  return absl::OkStatus();
}

absl::Status KvmVcpu::SetFpu(const kvm_fpu& fpu) const {
  if (Ioctl(fd_.get(), KVM_SET_FPU, &fpu) != 0) return ErrnoStatus(errno, "KVM_SET_FPU");
  return absl::OkStatus();
}

absl::Status KvmVcpu::SetCpuid(const std::vector<kvm_cpuid_entry2>& entries) const {
  auto buf = PackEntries<kvm_abi::Cpuid2Header>(entries);
  if (Ioctl(fd_.get(), kvm_abi::kSetCpuid2, buf.get()) != 0) return ErrnoStatus(errno, "KVM_SET_CPUID2");
  return absl::OkStatus();
}

absl::Status KvmVcpu::SetMsrs(const std::vector<kvm_msr_entry>& msrs) const {
  auto buf = PackEntries<kvm_abi::MsrsHeader>(msrs);
  int n = Ioctl(fd_.get(), kvm_abi::kSetMsrs, buf.get());
  if (n < 0) return ErrnoStatus(errno, "KVM_SET_MSRS");
  if (static_cast<size_t>(n) != msrs.size()) {
    return absl::FailedPreconditionError(
        absl::StrFormat("KVM_SET_MSRS: KVM refused MSR 0x%x (set %d of %u)", msrs[n].index, n,
                        msrs.size()));
  }
  return absl::OkStatus();
}

absl::StatusOr<kvm_lapic_state> KvmVcpu::GetLapic() const {
  kvm_lapic_state l{};
  if (Ioctl(fd_.get(), KVM_GET_LAPIC, &l) != 0) return ErrnoStatus(errno, "KVM_GET_LAPIC");
  return l;
}

absl::Status KvmVcpu::SetLapic(const kvm_lapic_state& lapic) const {
  if (Ioctl(fd_.get(), KVM_SET_LAPIC, &lapic) != 0) return ErrnoStatus(errno, "KVM_SET_LAPIC");
  return absl::OkStatus();
}

absl::StatusOr<kvm_mp_state> KvmVcpu::GetMpState() const {
  kvm_mp_state s{};
  if (Ioctl(fd_.get(), KVM_GET_MP_STATE, &s) != 0) return ErrnoStatus(errno, "KVM_GET_MP_STATE");
  return s;
}

}  // namespace flint
