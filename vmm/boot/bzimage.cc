// Linux bzImage loader: the x86 boot protocol (Documentation/arch/x86/boot.rst)
// entered at the 64-bit entry point, as a boot loader that has already done
// the real-mode part.
#include <algorithm>
#include <cstring>

#include "absl/strings/str_format.h"
#include "vmm/boot/common.h"
#include "vmm/boot/linux_abi.h"
#include "vmm/boot/loader.h"
#include "vmm/layout.h"

namespace flint {

using boot_abi::BootParams;
using boot_abi::SetupHeader;
using boot_internal::Add;
using boot_internal::AlignUp;

namespace {

std::string Version(uint16_t v) { return absl::StrFormat("%u.%02u", v >> 8, v & 0xff); }

}  // namespace

absl::StatusOr<BootEntry> LoadBzImage(const GuestMemory& mem, const BootConfig& cfg) {
  const std::span<const uint8_t> image = cfg.kernel;
  // Every real bzImage has at least two setup sectors, so the whole header
  // area up to boot_params.edd_mbr_sig_buffer is in the file.
  if (image.size() < boot_abi::kSetupHeaderCopyEnd) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "bzImage is truncated: %u bytes, but the setup header alone ends at offset 0x%x",
        image.size(), boot_abi::kSetupHeaderCopyEnd));
  }
  SetupHeader hdr;
  std::memcpy(&hdr, image.data() + boot_abi::kSetupHeaderOffset, sizeof(hdr));

  if (hdr.boot_flag != boot_abi::kBootFlag) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "not a bzImage: boot_flag at offset 0x1fe is 0x%04x, expected 0xaa55", hdr.boot_flag));
  }
  if (hdr.header != boot_abi::kHeaderMagic) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "not a bzImage: setup header magic at offset 0x202 is 0x%08x, expected \"HdrS\"",
        hdr.header));
  }
  if (hdr.version < boot_abi::kProtocol2_06) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "bzImage uses boot protocol %s; flint needs 2.06 or newer", Version(hdr.version)));
  }
  if (hdr.version < boot_abi::kProtocol2_12 || (hdr.xloadflags & boot_abi::kXlfKernel64) == 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "bzImage has no 64-bit entry point (xloadflags bit XLF_KERNEL_64 is clear, boot "
        "protocol %s); flint boots 64-bit kernels only",
        Version(hdr.version)));
  }
  if ((hdr.loadflags & boot_abi::kLoadedHigh) == 0) {
    return absl::InvalidArgumentError(
        "bzImage loadflags lack LOADED_HIGH: this is a zImage that must load at 0x10000, which "
        "flint does not support");
  }

  const uint64_t setup_sects = hdr.setup_sects == 0 ? boot_abi::kDefaultSetupSects
                                                    : hdr.setup_sects;
  const uint64_t setup_bytes = (setup_sects + 1) * boot_abi::kSectorSize;
  if (setup_bytes >= image.size()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "bzImage is truncated: setup_sects=%u puts the protected-mode kernel at offset 0x%x, "
        "but the file is only %u bytes",
        hdr.setup_sects, setup_bytes, image.size()));
  }
  const std::span<const uint8_t> kernel = image.subspan(setup_bytes);
  if (uint64_t{hdr.syssize} * 16 > kernel.size()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "bzImage is truncated: syssize says the protected-mode kernel is %u bytes, but only %u "
        "follow the setup sectors",
        uint64_t{hdr.syssize} * 16, kernel.size()));
  }

  // Where the kernel runs once it has decompressed itself: a relocatable
  // kernel rounds its load address up to kernel_alignment, and never goes
  // below pref_address (LOAD_PHYSICAL_ADDR); a fixed one runs at
  // pref_address. It needs init_size bytes from there.
  const uint64_t load_addr = layout::kHighMemory;
  uint64_t needed_end = load_addr + kernel.size();  // kernel.size() < 2^63: it is a span size
  if (hdr.version >= boot_abi::kProtocol2_10) {
    uint64_t run_addr = load_addr;
    if (hdr.relocatable_kernel != 0) {
      const uint64_t align = hdr.kernel_alignment;
      if (align != 0) {
        if ((align & (align - 1)) != 0) {
          return absl::InvalidArgumentError(absl::StrFormat(
              "bzImage kernel_alignment 0x%x is not a power of two", align));
        }
        run_addr = *AlignUp(load_addr, align);  // align < 2^32: cannot wrap
      }
    }
    run_addr = std::max(run_addr, hdr.pref_address);
    std::optional<uint64_t> run_end = Add(run_addr, hdr.init_size);
    if (!run_end) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "bzImage pref_address 0x%x + init_size 0x%x wraps the address space", hdr.pref_address,
          hdr.init_size));
    }
    needed_end = std::max(needed_end, *run_end);
  }
  if (!boot_internal::RangeInRam(mem, load_addr, needed_end - load_addr)) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "bzImage needs guest RAM from 0x%x to 0x%x (%u MiB: the kernel file plus its init_size "
        "at its run address), which this guest does not have; give it more memory",
        load_addr, needed_end, (needed_end + (1 << 20) - 1) >> 20));
  }

  BootParams bp;
  std::memset(&bp, 0, sizeof(bp));
  // The header's own length: the end of the jump instruction at 0x200 plus
  // its displacement byte at 0x201.
  const uint64_t hdr_end = std::min<uint64_t>(
      boot_abi::kSetupHeaderMagicOffset + image[boot_abi::kSetupHeaderJumpOffset + 1],
      boot_abi::kSetupHeaderCopyEnd);
  std::memcpy(reinterpret_cast<uint8_t*>(&bp) + boot_abi::kSetupHeaderOffset,
              image.data() + boot_abi::kSetupHeaderOffset,
              hdr_end - boot_abi::kSetupHeaderOffset);
  bp.hdr.code32_start = static_cast<uint32_t>(load_addr);
  // Fields the header copy may not have reached (a short header) but that
  // were validated above from the file itself.
  bp.hdr.version = hdr.version;
  bp.hdr.loadflags = hdr.loadflags;
  bp.hdr.cmdline_size = hdr.cmdline_size;
  bp.hdr.initrd_addr_max = hdr.initrd_addr_max;

  absl::Status s = boot_internal::FinishZeroPage(mem, cfg, needed_end, bp);
  if (!s.ok()) return s;
  // Only now, with every check passed, copy the kernel in.
  s = mem.Write(load_addr, kernel.data(), kernel.size());
  if (!s.ok()) return s;
  return BootEntry{.mode = BootEntry::Mode::kLong64,
                   .rip = load_addr + boot_abi::kStartup64Offset,
                   .rsi = layout::kZeroPage};
}

}  // namespace flint
