// ELF kernel loader: PT_LOAD segments at their physical addresses, entered
// through the PVH entry note when there is one, else (x86-64 Linux vmlinux)
// through the 64-bit Linux boot protocol.
#include <algorithm>
#include <cstring>
#include <optional>
#include <vector>

#include "absl/strings/str_format.h"
#include "vmm/boot/common.h"
#include "vmm/boot/linux_abi.h"
#include "vmm/boot/loader.h"
#include "vmm/layout.h"

namespace flint {

namespace abi = boot_abi;
using boot_internal::Add;
using boot_internal::AlignUp;

namespace {

// Class-independent views of the headers.
struct ElfHeader {
  bool is64 = false;
  uint16_t machine = 0;
  uint64_t entry = 0;
  uint64_t phoff = 0;
  uint64_t phentsize = 0;
  uint64_t phnum = 0;
  uint64_t shoff = 0;
  uint64_t shentsize = 0;
  uint64_t shnum = 0;
};

struct Segment {
  uint32_t type = 0;
  uint64_t offset = 0;
  uint64_t paddr = 0;
  uint64_t filesz = 0;
  uint64_t memsz = 0;
  uint64_t align = 0;
};

template <typename T>
T ReadAt(std::span<const uint8_t> image, uint64_t off) {  // caller checked bounds
  T v;
  std::memcpy(&v, image.data() + off, sizeof(T));
  return v;
}

// True when [off, off+len) is inside the image.
bool InFile(std::span<const uint8_t> image, uint64_t off, uint64_t len) {
  std::optional<uint64_t> end = Add(off, len);
  return end && *end <= image.size();
}

absl::StatusOr<ElfHeader> ParseHeader(std::span<const uint8_t> image) {
  if (image.size() < abi::kEiVersion + 1 ||
      std::memcmp(image.data(), abi::kElfMagic, sizeof(abi::kElfMagic)) != 0) {
    return absl::InvalidArgumentError("not an ELF file: missing the \\x7fELF magic");
  }
  ElfHeader h;
  const uint8_t cls = image[abi::kEiClass];
  if (cls != abi::kElfClass32 && cls != abi::kElfClass64) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "ELF class (EI_CLASS) is %u; expected 1 (ELF32) or 2 (ELF64)", cls));
  }
  h.is64 = cls == abi::kElfClass64;
  if (image[abi::kEiData] != abi::kElfData2Lsb) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "ELF data encoding (EI_DATA) is %u; expected 1 (little endian) for an x86 kernel",
        image[abi::kEiData]));
  }
  const size_t ehdr_size = h.is64 ? sizeof(abi::Elf64Ehdr) : sizeof(abi::Elf32Ehdr);
  if (image.size() < ehdr_size) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "ELF file is truncated: %u bytes, but its ELF%d header needs %u", image.size(),
        h.is64 ? 64 : 32, ehdr_size));
  }
  uint16_t type = 0;
  // ELF32 and ELF64 headers have the same fields at different widths.
  auto take = [&](const auto& e) {
    type = e.e_type;
    h.machine = e.e_machine;
    h.entry = e.e_entry;
    h.phoff = e.e_phoff;
    h.phentsize = e.e_phentsize;
    h.phnum = e.e_phnum;
    h.shoff = e.e_shoff;
    h.shentsize = e.e_shentsize;
    h.shnum = e.e_shnum;
  };
  if (h.is64) {
    take(ReadAt<abi::Elf64Ehdr>(image, 0));
  } else {
    take(ReadAt<abi::Elf32Ehdr>(image, 0));
  }
  if (h.machine != abi::kEmX86_64 && h.machine != abi::kEm386) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "ELF machine (e_machine) is %u; expected 62 (x86-64) or 3 (i386)", h.machine));
  }
  if (type != abi::kEtExec) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "ELF type (e_type) is %u; expected 2 (ET_EXEC, an executable kernel)", type));
  }
  const size_t phdr_size = h.is64 ? sizeof(abi::Elf64Phdr) : sizeof(abi::Elf32Phdr);
  if (h.phnum == 0 || h.phnum == abi::kPnXnum) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "ELF e_phnum is %u; expected between 1 and 65534 program headers", h.phnum));
  }
  if (h.phentsize < phdr_size) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "ELF e_phentsize is %u; expected at least %u", h.phentsize, phdr_size));
  }
  // phnum and phentsize are 16-bit: their product cannot overflow.
  if (!InFile(image, h.phoff, h.phnum * h.phentsize)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "ELF program header table (e_phoff 0x%x, %u entries of %u bytes) extends past the end "
        "of the %u-byte file",
        h.phoff, h.phnum, h.phentsize, image.size()));
  }
  return h;
}

Segment ReadSegment(std::span<const uint8_t> image, const ElfHeader& h, uint64_t i) {
  const uint64_t off = h.phoff + i * h.phentsize;  // inside the file: checked in ParseHeader
  Segment s;
  if (h.is64) {
    const auto p = ReadAt<abi::Elf64Phdr>(image, off);
    s = Segment{p.p_type, p.p_offset, p.p_paddr, p.p_filesz, p.p_memsz, p.p_align};
  } else {
    const auto p = ReadAt<abi::Elf32Phdr>(image, off);
    s = Segment{p.p_type, p.p_offset, p.p_paddr, p.p_filesz, p.p_memsz, p.p_align};
  }
  return s;
}

// Scans one note area for XEN_ELFNOTE_PHYS32_ENTRY. `where` names the area
// in errors.
absl::StatusOr<std::optional<uint64_t>> FindPvhEntry(std::span<const uint8_t> notes,
                                                     uint64_t align, const std::string& where) {
  if (align != 8) align = 4;  // notes are 4-byte aligned unless the segment says 8
  uint64_t pos = 0;
  // The name, then the descriptor: each must fit in what is left, and is
  // padded to `align` (the padding may be cut short by the segment's end).
  auto take = [&](uint32_t size, const char* what) -> absl::StatusOr<std::span<const uint8_t>> {
    const uint64_t left = notes.size() - pos;
    if (size > left) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "ELF note in %s is truncated: its %s is %u bytes but only %u remain", where, what,
          size, left));
    }
    const std::span<const uint8_t> field = notes.subspan(pos, size);
    pos += std::min(*AlignUp(size, align), left);  // u32 + 7 cannot wrap
    return field;
  };
  while (notes.size() - pos >= sizeof(abi::ElfNhdr)) {
    const auto n = ReadAt<abi::ElfNhdr>(notes, pos);
    pos += sizeof(abi::ElfNhdr);
    const absl::StatusOr<std::span<const uint8_t>> name = take(n.n_namesz, "name");
    if (!name.ok()) return name.status();
    const absl::StatusOr<std::span<const uint8_t>> desc = take(n.n_descsz, "descriptor");
    if (!desc.ok()) return desc.status();

    const bool is_xen = (name->size() == 4 && std::memcmp(name->data(), "Xen", 4) == 0) ||
                        (name->size() == 3 && std::memcmp(name->data(), "Xen", 3) == 0);
    if (!is_xen || n.n_type != abi::kXenElfnotePhys32Entry) continue;
    if (desc->size() == 4) return std::optional<uint64_t>(ReadAt<uint32_t>(*desc, 0));
    if (desc->size() == 8) return std::optional<uint64_t>(ReadAt<uint64_t>(*desc, 0));
    return absl::InvalidArgumentError(absl::StrFormat(
        "Xen PHYS32_ENTRY note in %s has a %u-byte descriptor; expected 4 or 8", where,
        desc->size()));
  }
  return std::optional<uint64_t>();
}

absl::StatusOr<std::optional<uint64_t>> FindPvhEntryInSections(std::span<const uint8_t> image,
                                                               const ElfHeader& h) {
  if (h.shoff == 0 || h.shnum == 0) return std::optional<uint64_t>();
  const size_t shdr_size = h.is64 ? sizeof(abi::Elf64Shdr) : sizeof(abi::Elf32Shdr);
  if (h.shentsize < shdr_size || !InFile(image, h.shoff, h.shnum * h.shentsize)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "ELF section header table (e_shoff 0x%x, %u entries of %u bytes, at least %u each) "
        "does not fit in the %u-byte file",
        h.shoff, h.shnum, h.shentsize, shdr_size, image.size()));
  }
  for (uint64_t i = 0; i < h.shnum; ++i) {
    const uint64_t off = h.shoff + i * h.shentsize;
    uint32_t type;
    uint64_t sec_off, sec_size, sec_align;
    if (h.is64) {
      const auto s = ReadAt<abi::Elf64Shdr>(image, off);
      type = s.sh_type, sec_off = s.sh_offset, sec_size = s.sh_size, sec_align = s.sh_addralign;
    } else {
      const auto s = ReadAt<abi::Elf32Shdr>(image, off);
      type = s.sh_type, sec_off = s.sh_offset, sec_size = s.sh_size, sec_align = s.sh_addralign;
    }
    if (type != abi::kShtNote) continue;
    if (!InFile(image, sec_off, sec_size)) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "ELF note section %u (offset 0x%x, size 0x%x) extends past the end of the %u-byte file",
          i, sec_off, sec_size, image.size()));
    }
    absl::StatusOr<std::optional<uint64_t>> e = FindPvhEntry(
        image.subspan(sec_off, sec_size), sec_align, absl::StrFormat("section %u", i));
    if (!e.ok() || e->has_value()) return e;
  }
  return std::optional<uint64_t>();
}

}  // namespace

absl::StatusOr<BootEntry> LoadElf(const GuestMemory& mem, const BootConfig& cfg) {
  const std::span<const uint8_t> image = cfg.kernel;
  if (image.empty()) return absl::InvalidArgumentError("kernel image is empty");
  absl::StatusOr<ElfHeader> parsed = ParseHeader(image);
  if (!parsed.ok()) return parsed.status();
  const ElfHeader& h = *parsed;

  // Validate every segment before anything is written.
  std::vector<Segment> loads;
  std::optional<uint64_t> pvh_entry;
  for (uint64_t i = 0; i < h.phnum; ++i) {
    const Segment s = ReadSegment(image, h, i);
    if (s.type == abi::kPtNote && !pvh_entry) {
      if (!InFile(image, s.offset, s.filesz)) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "ELF PT_NOTE segment %u (p_offset 0x%x, p_filesz 0x%x) extends past the end of the "
            "%u-byte file",
            i, s.offset, s.filesz, image.size()));
      }
      absl::StatusOr<std::optional<uint64_t>> e = FindPvhEntry(
          image.subspan(s.offset, s.filesz), s.align, absl::StrFormat("PT_NOTE segment %u", i));
      if (!e.ok()) return e.status();
      pvh_entry = *e;
      continue;
    }
    if (s.type != abi::kPtLoad) continue;
    if (s.filesz > s.memsz) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "ELF segment %u: p_filesz 0x%x is larger than p_memsz 0x%x", i, s.filesz, s.memsz));
    }
    if (!InFile(image, s.offset, s.filesz)) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "ELF segment %u (p_offset 0x%x, p_filesz 0x%x) extends past the end of the %u-byte "
          "file",
          i, s.offset, s.filesz, image.size()));
    }
    if (s.memsz == 0) continue;
    if (s.paddr < layout::kHighMemory) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "ELF segment %u loads at 0x%x, below 1 MiB where flint keeps its boot structures; the "
          "kernel must be linked to load at 0x100000 or above",
          i, s.paddr));
    }
    std::optional<uint64_t> end = Add(s.paddr, s.memsz);
    if (!end || !boot_internal::RangeInRam(mem, s.paddr, s.memsz)) {
      return absl::ResourceExhaustedError(absl::StrFormat(
          "ELF segment %u [0x%x, +0x%x) is not inside guest RAM (%u MiB); give the guest more "
          "memory or check the kernel's load addresses",
          i, s.paddr, s.memsz, mem.total_size() >> 20));
    }
    loads.push_back(s);
  }
  if (loads.empty()) {
    return absl::InvalidArgumentError("ELF file has no non-empty PT_LOAD segment to load");
  }
  if (!pvh_entry) {
    absl::StatusOr<std::optional<uint64_t>> e = FindPvhEntryInSections(image, h);
    if (!e.ok()) return e.status();
    pvh_entry = *e;
  }

  uint64_t kernel_end = 0;
  for (const Segment& s : loads) kernel_end = std::max(kernel_end, s.paddr + s.memsz);
  auto in_loaded = [&](uint64_t addr) {
    return std::any_of(loads.begin(), loads.end(), [&](const Segment& s) {
      return addr >= s.paddr && addr - s.paddr < s.memsz;
    });
  };

  BootEntry entry{};
  if (pvh_entry) {
    if (*pvh_entry >= layout::kFourGiB || !in_loaded(*pvh_entry)) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "ELF PVH entry point 0x%x (Xen PHYS32_ENTRY note) is not inside any loaded segment "
          "below 4 GiB",
          *pvh_entry));
    }
    entry = BootEntry{.mode = BootEntry::Mode::kProtected32, .rip = *pvh_entry,
                      .rbx = layout::kPvhStartInfo};
  } else {
    if (!h.is64 || h.machine != abi::kEmX86_64) {
      return absl::InvalidArgumentError(
          "ELF kernel has no PVH entry note (Xen ELF note XEN_ELFNOTE_PHYS32_ENTRY); a 32-bit "
          "ELF kernel needs one to be booted (Linux: CONFIG_PVH=y)");
    }
    if (!in_loaded(h.entry)) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "ELF entry point e_entry 0x%x is not inside any loaded segment; for a Linux vmlinux "
          "it must be the physical address of startup_64",
          h.entry));
    }
    entry = BootEntry{.mode = BootEntry::Mode::kLong64, .rip = h.entry,
                      .rsi = layout::kZeroPage};
  }

  for (const Segment& s : loads) {
    if (s.filesz > 0) {
      absl::Status st = mem.Write(s.paddr, image.data() + s.offset, s.filesz);
      if (!st.ok()) return st;
    }
    if (s.memsz > s.filesz) {
      absl::Status st = mem.Fill(s.paddr + s.filesz, 0, s.memsz - s.filesz);
      if (!st.ok()) return st;
    }
  }

  if (entry.mode == BootEntry::Mode::kProtected32) {
    absl::Status st = boot_internal::WritePvhStartInfo(mem, cfg, kernel_end);
    if (!st.ok()) return st;
    return entry;
  }

  // A vmlinux has no setup header of its own: synthesize the fields the
  // 64-bit entry reads.
  abi::BootParams bp;
  std::memset(&bp, 0, sizeof(bp));
  bp.hdr.boot_flag = abi::kBootFlag;
  bp.hdr.header = abi::kHeaderMagic;
  bp.hdr.version = abi::kProtocol2_15;
  bp.hdr.loadflags = abi::kLoadedHigh;
  bp.hdr.code32_start = static_cast<uint32_t>(layout::kHighMemory);
  bp.hdr.cmdline_size = static_cast<uint32_t>(layout::kCmdlineMax - 1);
  bp.hdr.initrd_addr_max = 0x7fffffff;
  bp.hdr.xloadflags = abi::kXlfKernel64;
  absl::Status st = boot_internal::FinishZeroPage(mem, cfg, kernel_end, bp);
  if (!st.ok()) return st;
  return entry;
}

}  // namespace flint
