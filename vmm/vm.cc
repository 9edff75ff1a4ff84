#include "vmm/vm.h"

#include <signal.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/strings/str_format.h"
#include "devices/pci/pci_root.h"
#include "devices/virtio/blk.h"
#include "devices/virtio/net.h"
#include "net/passt/passt_backend.h"
#include "net/tap.h"
#include "devices/virtio/virtio_pci.h"
#include "vmm/acpi/tables.h"
#include "vmm/devices/acpi_pm.h"
#include "vmm/devices/cmos.h"
#include "vmm/devices/debug_exit.h"
#include "vmm/devices/i8042.h"
#include "vmm/devices/irq_line.h"
#include "vmm/devices/power_button.h"
#include "vmm/devices/serial.h"
#include "vmm/kvm_device_host.h"
#include "vmm/layout.h"
#include "vmm/x86/boot_cpu.h"

namespace flint {
namespace {

// KVM needs three pages for the TSS and one for the identity map (Intel VMX
// real-mode support) somewhere the guest never uses: just below the BIOS area
// at the top of the 32-bit hole.
constexpr uint64_t kKvmIdentityMap = 0xfffbc000;
constexpr uint64_t kKvmTss = 0xfffbd000;

int KickSignal() { return SIGRTMIN; }

void InstallKickHandler() {
  static const bool installed = [] {
    struct sigaction sa {};
    sa.sa_handler = [](int) {};  // only to interrupt KVM_RUN with EINTR
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0;             // no SA_RESTART: KVM_RUN must return
    sigaction(KickSignal(), &sa, nullptr);
    return true;
  }();
  (void)installed;
}

}  // namespace

const char* StopKindName(StopKind k) {
  switch (k) {
    case StopKind::kPowerOff: return "power-off";
    case StopKind::kReset: return "reset";
    case StopKind::kDebugExit: return "debug-exit";
    case StopKind::kTripleFault: return "triple-fault";
    case StopKind::kGuestError: return "guest-error";
    case StopKind::kHostError: return "host-error";
    case StopKind::kSignal: return "signal";
  }
  return "unknown";
}

std::vector<MemoryRegionSpec> RamLayout(uint64_t memory_bytes) {
  std::vector<MemoryRegionSpec> r;
  uint64_t low = std::min(memory_bytes, layout::kMmioHoleStart);
  r.push_back({0, low});
  if (memory_bytes > low) r.push_back({layout::kFourGiB, memory_bytes - low});
  return r;
}

Vm::Vm(KvmVm vm, GuestMemory memory, VmConfig config)
    : vm_(std::move(vm)), memory_(std::move(memory)), config_(std::move(config)) {}

static uint64_t RamEnd(const GuestMemory& memory) {
  uint64_t end = 0;
  for (const MemoryRegion& r : memory.regions()) end = std::max(end, r.end());
  return end;
}

absl::StatusOr<std::unique_ptr<Vm>> Vm::Create(const Kvm& kvm, VmConfig config) {
  if (config.cpus == 0 || config.cpus > kMaxVcpus) {
    return absl::InvalidArgumentError(
        absl::StrFormat("--cpus %u is out of range 1..%u", config.cpus, kMaxVcpus));
  }
  absl::StatusOr<GuestMemory> mem = GuestMemory::Create(RamLayout(config.memory_bytes), config.backing);
  if (!mem.ok()) return mem.status();
  absl::StatusOr<KvmVm> kvm_vm = kvm.CreateVm();
  if (!kvm_vm.ok()) return kvm_vm.status();
  std::unique_ptr<Vm> vm(new Vm(std::move(*kvm_vm), std::move(*mem), std::move(config)));
  if (absl::Status s = vm->Build(kvm); !s.ok()) return s;
  return vm;
}

absl::Status Vm::Build(const Kvm& kvm) {
  int efd = eventfd(0, EFD_CLOEXEC);
  if (efd < 0) return ErrnoStatus(errno, "eventfd");
  stop_fd_.reset(efd);

  if (absl::Status s = vm_.SetTssAddr(kKvmTss); !s.ok()) return s;
  if (absl::Status s = vm_.SetIdentityMapAddr(kKvmIdentityMap); !s.ok()) return s;
  // Memory before the irqchip: much cheaper in that order (PLATFORM.md).
  uint32_t slot = 0;
  for (const MemoryRegion& r : memory_.regions()) {
    if (absl::Status s = vm_.SetUserMemoryRegion(slot++, r.gpa, r.size, r.host); !s.ok()) return s;
  }
  if (absl::Status s = vm_.CreateIrqchip(); !s.ok()) return s;
  if (absl::Status s = vm_.CreatePit2(); !s.ok()) return s;

  device_host_ = std::make_unique<KvmDeviceHost>(&vm_);
  const layout::Window mmio64 = layout::Pci64Window(RamEnd(memory_));
  pci_ = std::make_unique<pci::PciRoot>(device_host_.get(),
                                        layout::Window{layout::kPciMmio32Base, layout::kPciMmio32Size},
                                        mmio64);
  if (absl::Status s = AddPciDevices(); !s.ok()) return s;

  if (absl::Status s = WriteBootCpuTables(memory_); !s.ok()) return s;
  absl::StatusOr<uint64_t> rsdp = WriteAcpiTables(
      memory_, AcpiConfig{.num_cpus = config_.cpus, .pci = true, .pci_mmio64 = mmio64});
  if (!rsdp.ok()) return rsdp.status();
  BootConfig boot{.kernel = config_.kernel, .initrd = config_.initrd, .cmdline = config_.cmdline,
                  .rsdp_gpa = *rsdp};
  absl::StatusOr<BootEntry> entry = LoadKernel(memory_, boot);
  if (!entry.ok()) return entry.status();
  boot_entry_ = *entry;
  // The images are in guest memory now; the borrowed bytes are not used again.
  config_.kernel = {};
  config_.initrd = {};

  // Platform devices.
  StopRequester stop = [this](StopReason r) { RequestStop(std::move(r)); };
  com1_irq_ = device_host_->IntxLine(layout::kCom1Irq);
  serial_ = std::make_shared<Serial>(config_.serial_out_fd, com1_irq_.get());
  ged_irq_ = device_host_->IntxLine(layout::kGedGsi);
  power_button_ = std::make_shared<PowerButton>(ged_irq_.get());
  struct Port {
    uint16_t base;
    uint16_t len;
    std::shared_ptr<BusDevice> dev;
  };
  const Port ports[] = {
      {layout::kPortCom1, 8, serial_},
      {layout::kPortI8042, 5, std::make_shared<I8042>(stop)},
      {layout::kPortCmos, 2, std::make_shared<Cmos>()},
      {layout::kPortDebugExit, 1, std::make_shared<DebugExit>(stop)},
      {layout::kPortAcpiPm, 2, std::make_shared<AcpiPm>(stop)},
      {layout::kPortGed, 1, power_button_},
  };
  for (const Port& p : ports) {
    if (absl::Status s = pio_.Register(p.base, p.len, p.dev); !s.ok()) return s;
  }
  // The PCI bus: config mechanism #1, ECAM and the two BAR windows.
  if (absl::Status s = pio_.Register(0xcf8, 8, pci_->config_io()); !s.ok()) return s;
  const struct {
    uint64_t base, len;
    std::shared_ptr<BusDevice> dev;
  } pci_mmio[] = {
      {layout::kPciEcamBase, layout::kPciEcamSize, pci_->ecam()},
      {layout::kPciMmio32Base, layout::kPciMmio32Size, pci_->mmio32_window()},
      {mmio64.base, mmio64.size, pci_->mmio64_window()},
  };
  for (const auto& m : pci_mmio) {
    if (absl::Status s = mmio_.Register(m.base, m.len, m.dev); !s.ok()) return s;
  }
  if (config_.ioeventfd_sink_port) {
    int sink = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (sink < 0) return ErrnoStatus(errno, "eventfd for the ioeventfd sink");
    ioeventfd_sink_.reset(sink);
    if (absl::Status s = vm_.RegisterIoeventfd(sink, *config_.ioeventfd_sink_port, 4, true); !s.ok()) {
      return s;
    }
  }
  pio_.Freeze();
  mmio_.Freeze();

  absl::StatusOr<std::vector<kvm_cpuid_entry2>> cpuid = kvm.GetSupportedCpuid();
  if (!cpuid.ok()) return cpuid.status();
  for (uint32_t i = 0; i < config_.cpus; ++i) {
    absl::StatusOr<KvmVcpu> vcpu = vm_.CreateVcpu(i);
    if (!vcpu.ok()) return vcpu.status();
    if (absl::Status s = ConfigureVcpu(*vcpu, *cpuid, config_.cpus); !s.ok()) {
      return absl::Status(s.code(), absl::StrFormat("vCPU %u: %s", i, s.message()));
    }
    // The BSP enters the kernel; APs wait in the in-kernel LAPIC for INIT/SIPI.
    if (i == 0) {
      if (absl::Status s = SetBootRegisters(*vcpu, boot_entry_); !s.ok()) return s;
    }
    auto vslot = std::make_unique<VcpuSlot>(VcpuSlot{std::move(*vcpu), nullptr, {}, {}});
    vslot->stats = std::make_unique<VcpuExitStats>(pio_.size(), mmio_.size());
    vcpus_.push_back(std::move(vslot));
  }
  return absl::OkStatus();
}

absl::Status Vm::AddPciDevices() {
  if (config_.disks.empty() && config_.nics.empty()) return absl::OkStatus();
  absl::StatusOr<std::unique_ptr<EventLoop>> loop = EventLoop::Create("flint-io");
  if (!loop.ok()) return loop.status();
  io_loop_ = std::move(*loop);
  for (const DiskConfig& disk : config_.disks) {
    absl::StatusOr<std::unique_ptr<virtio::VirtioBlk>> blk =
        virtio::VirtioBlk::Create(disk, config_.io_engine);
    if (!blk.ok()) {
      return absl::Status(blk.status().code(),
                          absl::StrFormat("--disk path=%s: %s", disk.path, blk.status().message()));
    }
    if (std::string note = (*blk)->engine_note(); !note.empty()) {
      notes_.push_back(absl::StrFormat("disk %s: %s", disk.path, note));
    }
    if (absl::Status s = AddVirtioFunction(std::move(*blk)); !s.ok()) return s;
  }
  for (size_t i = 0; i < config_.nics.size(); ++i) {
    NicConfig& nic = config_.nics[i];
    if (nic.mac == std::array<uint8_t, 6>{}) {
      // Locally administered, unicast: 02:46:4c ("FL") + 3 random bytes.
      uint8_t r[3] = {};
      (void)!getrandom(r, sizeof(r), 0);
      nic.mac = {0x02, 0x46, 0x4c, r[0], r[1], r[2]};
    }
    const std::string what = absl::StrFormat("--net #%u", i + 1);
    absl::StatusOr<std::unique_ptr<net::NetBackend>> backend = MakeNetBackend(nic, i);
    if (!backend.ok()) {
      return absl::Status(backend.status().code(),
                          absl::StrFormat("%s: %s", what, backend.status().message()));
    }
    absl::StatusOr<std::unique_ptr<virtio::VirtioNet>> netdev =
        virtio::VirtioNet::Create(nic, std::move(*backend));
    if (!netdev.ok()) {
      return absl::Status(netdev.status().code(),
                          absl::StrFormat("%s: %s", what, netdev.status().message()));
    }
    virtio::VirtioNet* raw = netdev->get();
    if (absl::Status s = AddVirtioFunction(std::move(*netdev)); !s.ok()) return s;
    nics_.push_back(Nic{raw, nic});
  }
  return absl::OkStatus();
}

absl::Status Vm::AddVirtioFunction(std::unique_ptr<virtio::VirtioDevice> device) {
  absl::StatusOr<std::shared_ptr<virtio::VirtioPciDevice>> dev = virtio::VirtioPciDevice::Create(
      std::move(device), &memory_, device_host_.get(), io_loop_.get());
  if (!dev.ok()) return dev.status();
  absl::StatusOr<uint8_t> slot = pci_->AddDevice(*dev);
  if (!slot.ok()) return slot.status();
  pci_devices_.push_back(PciFunction{*slot, std::move(*dev)});
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<net::NetBackend>> Vm::MakeNetBackend(const NicConfig& config,
                                                                     size_t index) {
  if (config.backend == NicConfig::Backend::kTap) {
    absl::StatusOr<std::unique_ptr<net::TapBackend>> tap = net::TapBackend::Open(config);
    if (!tap.ok()) return tap.status();
    return std::unique_ptr<net::NetBackend>(std::move(*tap));
  }
  if (mkdir(config_.state_dir.c_str(), 0700) != 0 && errno != EEXIST) {
    return ErrnoStatus(errno, "creating the state directory " + config_.state_dir);
  }
  // Each start of a backend gets its own log: a swapped-in passt must not
  // overwrite the log of the one it replaced.
  static std::atomic<int> generation{0};
  const std::string log = absl::StrFormat("%s/passt-net%u-%d.log", config_.state_dir, index,
                                          generation.fetch_add(1));
  absl::StatusOr<std::unique_ptr<net::PasstBackend>> passt =
      net::PasstBackend::Create(config, log);
  if (!passt.ok()) return passt.status();
  return std::unique_ptr<net::NetBackend>(std::move(*passt));
}

absl::Status Vm::SwapNic(size_t index, const NicConfig& config) {
  if (index >= nics_.size()) {
    return absl::InvalidArgumentError(
        absl::StrFormat("no NIC %u: this VM has %u", index, nics_.size()));
  }
  Nic& nic = nics_[index];
  NicConfig next = config;
  if (next.mac != std::array<uint8_t, 6>{} && next.mac != nic.config.mac) {
    return absl::InvalidArgumentError("a running NIC keeps its MAC: leave mac= out of net-swap");
  }
  next.mac = nic.config.mac;
  if (next.mtu == 0) next.mtu = nic.config.mtu;
  absl::StatusOr<std::unique_ptr<net::NetBackend>> backend = MakeNetBackend(next, index);
  if (!backend.ok()) return backend.status();
  if (absl::Status s = nic.device->SwapBackend(std::move(*backend)); !s.ok()) return s;
  nic.config = next;
  return absl::OkStatus();
}

std::vector<Vm::NicState> Vm::Nics() const {
  std::vector<NicState> out;
  for (const Nic& nic : nics_) {
    out.push_back(NicState{
        nic.config.backend == NicConfig::Backend::kPasst ? "passt" : "tap",
        nic.device->BackendDescription(), nic.device->link_up()});
  }
  return out;
}

std::string Vm::NicLine(size_t index, const NicState& nic) {
  return absl::StrFormat("nic %u backend=%s link=%s", index, nic.description,
                         nic.link_up ? "up" : "down");
}

std::vector<std::string> Vm::NicInfo() const {
  std::vector<std::string> lines;
  const std::vector<NicState> nics = Nics();
  for (size_t i = 0; i < nics.size(); ++i) lines.push_back(NicLine(i, nics[i]));
  return lines;
}

std::vector<std::string> Vm::DeviceStats() const {
  std::vector<std::string> lines;
  for (const PciFunction& f : pci_devices_) {
    lines.push_back(absl::StrFormat("pci 00:%02x.0 %s", f.slot, f.device->StatsLine()));
  }
  return lines;
}

Vm::~Vm() {
  if (started_ && !joined_) {
    RequestStop(StopReason{StopKind::kSignal, kExitSignal, "VM destroyed"});
    Wait();
  }
}

absl::Status Vm::Start() {
  if (started_) return absl::FailedPreconditionError("VM already started");
  InstallKickHandler();
  // Every vCPU thread waits for mu_ before its first KVM_RUN, so all thread
  // handles are stored before any guest code can ask for a stop (a guest may
  // exit within microseconds, and KickAll signals every handle).
  absl::MutexLock l(&mu_);
  started_ = true;
  for (auto& slot : vcpus_) {
    VcpuSlot* s = slot.get();
    s->runner = std::thread([this, s] {
      { absl::MutexLock start(&mu_); }
      VcpuLoop(*s);
    });
    s->thread = s->runner.native_handle();
    std::string name = absl::StrFormat("flint-vcpu%u", s->vcpu.id());
    pthread_setname_np(s->thread, name.c_str());
  }
  return absl::OkStatus();
}

void Vm::KickAll() {
  for (auto& slot : vcpus_) {
    __atomic_store_n(&slot->vcpu.run_struct()->immediate_exit, 1, __ATOMIC_SEQ_CST);
    if (started_ && !joined_) pthread_kill(slot->thread, KickSignal());
  }
}

void Vm::RequestStop(StopReason reason) {
  {
    absl::MutexLock l(&mu_);
    if (!stop_requested_) {
      stop_requested_ = true;
      stop_reason_ = std::move(reason);
    }
    control_.store(kStop);
    cv_.SignalAll();
  }
  KickAll();
  uint64_t one = 1;
  (void)!write(stop_fd_.get(), &one, sizeof(one));
}

void Vm::PressPowerButton() { power_button_->Press(); }

void Vm::Pause() {
  {
    absl::MutexLock l(&mu_);
    if (control_.load() != kRun) return;
    control_.store(kPaused);
  }
  KickAll();
  absl::MutexLock l(&mu_);
  while (control_.load() == kPaused && parked_ < static_cast<int>(vcpus_.size())) cv_.Wait(&mu_);
}

void Vm::Resume() {
  absl::MutexLock l(&mu_);
  if (control_.load() != kPaused) return;
  control_.store(kRun);
  cv_.SignalAll();
}

bool Vm::Park(VcpuSlot&) {
  absl::MutexLock l(&mu_);
  if (control_.load() == kStop) return true;
  ++parked_;
  cv_.SignalAll();
  while (control_.load() == kPaused) cv_.Wait(&mu_);
  --parked_;
  return control_.load() == kStop;
}

StopReason Vm::Wait() {
  if (started_ && !joined_) {
    uint64_t v;
    while (read(stop_fd_.get(), &v, sizeof(v)) < 0 && errno == EINTR) {
    }
    for (auto& slot : vcpus_) {
      if (slot->runner.joinable()) slot->runner.join();
    }
    joined_ = true;
  }
  if (serial_) serial_->Flush();
  absl::MutexLock l(&mu_);
  return stop_reason_;
}

ExitStatsSnapshot Vm::Stats() const {
  std::vector<const VcpuExitStats*> v;
  for (const auto& slot : vcpus_) v.push_back(slot->stats.get());
  return SnapshotExitStats(v, pio_, mmio_);
}

void Vm::HandleIo(const VcpuSlot& slot, kvm_run* run) {
  const auto& io = run->io;
  // KVM fills these; they are still checked against the kvm_run mapping.
  const uint64_t bytes = static_cast<uint64_t>(io.size) * io.count;
  if (io.size == 0 || io.size > 8 || io.data_offset + bytes > slot.vcpu.run_size()) {
    RequestStop(StopReason{StopKind::kHostError, kExitHostError,
                           absl::StrFormat("malformed KVM_EXIT_IO (size %u count %u)", io.size,
                                           io.count)});
    return;
  }
  uint8_t* data = reinterpret_cast<uint8_t*>(run) + io.data_offset;
  for (uint32_t i = 0; i < io.count; ++i, data += io.size) {
    int idx = io.direction == KVM_EXIT_IO_OUT
                  ? pio_.Write(io.port, std::span<const uint8_t>(data, io.size))
                  : pio_.Read(io.port, std::span<uint8_t>(data, io.size));
    slot.stats->CountPio(idx);
  }
}

void Vm::HandleMmio(const VcpuSlot& slot, kvm_run* run) {
  auto& m = run->mmio;
  if (m.len == 0 || m.len > sizeof(m.data)) {
    RequestStop(StopReason{StopKind::kHostError, kExitHostError,
                           absl::StrFormat("malformed KVM_EXIT_MMIO (len %u)", m.len)});
    return;
  }
  int idx = m.is_write ? mmio_.Write(m.phys_addr, std::span<const uint8_t>(m.data, m.len))
                       : mmio_.Read(m.phys_addr, std::span<uint8_t>(m.data, m.len));
  slot.stats->CountMmio(idx);
}

uint64_t Vm::ResidentGuestBytes() const {
  const long page = sysconf(_SC_PAGESIZE);
  uint64_t resident = 0;
  std::vector<unsigned char> vec;
  for (const MemoryRegion& r : memory_.regions()) {
    vec.resize((r.size + page - 1) / page);
    if (mincore(r.host, r.size, vec.data()) != 0) continue;
    for (unsigned char v : vec) resident += (v & 1) ? page : 0;
  }
  return resident;
}

std::string Vm::DumpRegisters(const KvmVcpu& vcpu) const {
  absl::StatusOr<kvm_regs> r = vcpu.GetRegs();
  absl::StatusOr<kvm_sregs> s = vcpu.GetSregs();
  if (!r.ok() || !s.ok()) return "(registers unavailable)";
  return absl::StrFormat(
      "vCPU %u registers:\n"
      "  rip=%016x rflags=%016x\n"
      "  rax=%016x rbx=%016x rcx=%016x rdx=%016x\n"
      "  rsi=%016x rdi=%016x rsp=%016x rbp=%016x\n"
      "  r8 =%016x r9 =%016x r10=%016x r11=%016x\n"
      "  r12=%016x r13=%016x r14=%016x r15=%016x\n"
      "  cs=%04x (base %x, l=%u db=%u dpl=%u) ss=%04x ds=%04x\n"
      "  cr0=%016x cr2=%016x cr3=%016x cr4=%016x efer=%x\n"
      "  gdt=%x/%x idt=%x/%x",
      vcpu.id(), r->rip, r->rflags, r->rax, r->rbx, r->rcx, r->rdx, r->rsi, r->rdi, r->rsp,
      r->rbp, r->r8, r->r9, r->r10, r->r11, r->r12, r->r13, r->r14, r->r15, s->cs.selector,
      s->cs.base, s->cs.l, s->cs.db, s->cs.dpl, s->ss.selector, s->ds.selector, s->cr0, s->cr2,
      s->cr3, s->cr4, s->efer, s->gdt.base, s->gdt.limit, s->idt.base, s->idt.limit);
}

void Vm::VcpuLoop(VcpuSlot& slot) {
  kvm_run* run = slot.vcpu.run_struct();
  if (slot.vcpu.id() == 0) {
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    first_run_ns_.store(ts.tv_sec * 1000000000ll + ts.tv_nsec);
  }
  for (;;) {
    if (control_.load(std::memory_order_acquire) != kRun && Park(slot)) return;
    if (slot.vcpu.Run() < 0) {
      int e = errno;
      if (e == EINTR || e == EAGAIN) {
        // Kicked: clear the flag before looking at control_ again (see Pause).
        __atomic_store_n(&run->immediate_exit, 0, __ATOMIC_SEQ_CST);
        continue;
      }
      RequestStop(StopReason{StopKind::kHostError, kExitHostError,
                             absl::StrFormat("KVM_RUN on vCPU %u failed: %s", slot.vcpu.id(),
                                             strerror(e))});
      return;
    }
    slot.stats->CountExit(run->exit_reason);
    switch (run->exit_reason) {
      case KVM_EXIT_IO:
        HandleIo(slot, run);
        break;
      case KVM_EXIT_MMIO:
        HandleMmio(slot, run);
        break;
      case KVM_EXIT_HLT:
      case KVM_EXIT_INTR:
      case KVM_EXIT_IRQ_WINDOW_OPEN:
        break;
      case KVM_EXIT_SHUTDOWN:
        RequestStop(StopReason{StopKind::kTripleFault, kExitGuestCrash,
                               "guest triple fault (KVM_EXIT_SHUTDOWN)\n" + DumpRegisters(slot.vcpu)});
        return;
      case KVM_EXIT_SYSTEM_EVENT:
        if (run->system_event.type == KVM_SYSTEM_EVENT_RESET) {
          RequestStop(StopReason{StopKind::kReset, kExitOk, "guest reset (system event)"});
        } else if (run->system_event.type == KVM_SYSTEM_EVENT_SHUTDOWN) {
          RequestStop(StopReason{StopKind::kPowerOff, kExitOk, "guest shut down (system event)"});
        } else {
          RequestStop(StopReason{StopKind::kGuestError, kExitGuestCrash,
                                 absl::StrFormat("guest system event %u\n%s", run->system_event.type,
                                                 DumpRegisters(slot.vcpu))});
        }
        return;
      case KVM_EXIT_INTERNAL_ERROR:
        RequestStop(StopReason{StopKind::kGuestError, kExitGuestCrash,
                               absl::StrFormat("KVM internal error, suberror %u (1 = emulation "
                                               "failure)\n%s",
                                               run->internal.suberror, DumpRegisters(slot.vcpu))});
        return;
      case KVM_EXIT_FAIL_ENTRY:
        RequestStop(StopReason{
            StopKind::kGuestError, kExitGuestCrash,
            absl::StrFormat("VM entry failed, hardware reason 0x%x\n%s",
                            run->fail_entry.hardware_entry_failure_reason, DumpRegisters(slot.vcpu))});
        return;
      default:
        RequestStop(StopReason{StopKind::kGuestError, kExitGuestCrash,
                               absl::StrFormat("unexpected KVM exit %u (%s)\n%s", run->exit_reason,
                                               KvmExitReasonName(run->exit_reason),
                                               DumpRegisters(slot.vcpu))});
        return;
    }
  }
}

}  // namespace flint
