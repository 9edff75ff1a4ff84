// Kernel format detection.
#include <cstring>

#include "absl/strings/str_format.h"
#include "vmm/boot/linux_abi.h"
#include "vmm/boot/loader.h"

namespace flint {

absl::StatusOr<BootEntry> LoadKernel(const GuestMemory& mem, const BootConfig& cfg) {
  const std::span<const uint8_t> k = cfg.kernel;
  if (k.empty()) return absl::InvalidArgumentError("kernel image is empty");
  if (k.size() >= sizeof(boot_abi::kElfMagic) &&
      std::memcmp(k.data(), boot_abi::kElfMagic, sizeof(boot_abi::kElfMagic)) == 0) {
    return LoadElf(mem, cfg);
  }
  if (k.size() >= boot_abi::kSetupHeaderMagicOffset + 4) {
    uint32_t magic;
    std::memcpy(&magic, k.data() + boot_abi::kSetupHeaderMagicOffset, sizeof(magic));
    if (magic == boot_abi::kHeaderMagic) return LoadBzImage(mem, cfg);
  }
  return absl::InvalidArgumentError(absl::StrFormat(
      "kernel image (%u bytes) is neither an ELF file (no \\x7fELF magic at offset 0) nor a "
      "Linux bzImage (no \"HdrS\" magic at offset 0x202)",
      k.size()));
}

}  // namespace flint
