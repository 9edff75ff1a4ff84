// Boot loader tests: synthetic bzImage and ELF images built here, every
// rejection path, randomly corrupted images, and (when fetched by
// tests/linux/fetch-kernel.sh) Debian's real cloud kernel.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "vmm/boot/file.h"
#include "vmm/boot/linux_abi.h"
#include "vmm/boot/loader.h"
#include "vmm/guest_memory.h"
#include "vmm/layout.h"

namespace flint {
namespace {

namespace abi = boot_abi;

constexpr uint64_t kMiB = 1ull << 20;
constexpr uint64_t kGiB = 1ull << 30;

using Bytes = std::vector<uint8_t>;

GuestMemory MakeMem(std::vector<MemoryRegionSpec> specs = {{0, 256 * kMiB}}) {
  absl::StatusOr<GuestMemory> m = GuestMemory::Create(std::move(specs));
  EXPECT_TRUE(m.ok()) << m.status();
  return std::move(*m);
}

template <typename T>
void Put(Bytes& v, size_t off, T val) {
  ASSERT_LE(off + sizeof(T), v.size());
  std::memcpy(v.data() + off, &val, sizeof(T));
}

template <typename T>
T GuestRead(const GuestMemory& mem, uint64_t gpa) {
  absl::StatusOr<T> v = mem.ReadObj<T>(gpa);
  EXPECT_TRUE(v.ok()) << v.status();
  return v.ok() ? *v : T{};
}

Bytes GuestBytes(const GuestMemory& mem, uint64_t gpa, size_t len) {
  Bytes out(len);
  absl::Status s = mem.Read(gpa, out.data(), len);
  EXPECT_TRUE(s.ok()) << s;
  return out;
}

std::string GuestString(const GuestMemory& mem, uint64_t gpa) {
  std::string s;
  for (uint64_t a = gpa; s.size() < 70000; ++a) {
    char c = static_cast<char>(GuestRead<uint8_t>(mem, a));
    if (c == '\0') return s;
    s.push_back(c);
  }
  ADD_FAILURE() << "no NUL terminator at 0x" << std::hex << gpa;
  return s;
}

Bytes Pattern(size_t n, uint8_t seed) {
  Bytes v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<uint8_t>(i * 7 + seed + (i >> 8));
  return v;
}

BootConfig Config(std::span<const uint8_t> kernel, std::span<const uint8_t> initrd = {},
                  std::string cmdline = "console=ttyS0", uint64_t rsdp = 0) {
  return BootConfig{.kernel = kernel, .initrd = initrd, .cmdline = std::move(cmdline),
                    .rsdp_gpa = rsdp};
}

// Expects an error whose message contains `needle`.
#define EXPECT_ERROR_HAS(expr, needle)                                       \
  do {                                                                       \
    auto _r = (expr);                                                        \
    ASSERT_FALSE(_r.ok()) << "expected an error mentioning \"" << (needle)   \
                          << "\"";                                           \
    EXPECT_NE(std::string(_r.status().message()).find(needle), std::string::npos) \
        << _r.status();                                                      \
  } while (0)

// ---------------------------------------------------------------------------
// e820

TEST(BootE820, StandardLayout) {
  GuestMemory mem = MakeMem();
  std::vector<E820Entry> e = BuildE820(mem);
  ASSERT_EQ(e.size(), 3u);
  EXPECT_EQ(e[0].addr, 0u);
  EXPECT_EQ(e[0].size, layout::kEbdaStart);
  EXPECT_EQ(e[0].type, kE820Ram);
  EXPECT_EQ(e[1].addr, layout::kEbdaStart);
  EXPECT_EQ(e[1].size, layout::kHighMemory - layout::kEbdaStart);
  EXPECT_EQ(e[1].type, kE820Reserved);
  EXPECT_EQ(e[2].addr, layout::kHighMemory);
  EXPECT_EQ(e[2].size, 255 * kMiB);
  EXPECT_EQ(e[2].type, kE820Ram);
}

TEST(BootE820, MemoryAboveTheHoleAndAdjacentRegionsMerged) {
  GuestMemory mem = MakeMem({{0, 2 * kMiB}, {2 * kMiB, 2 * kMiB}, {4 * kGiB, 1 * kGiB}});
  std::vector<E820Entry> e = BuildE820(mem);
  ASSERT_EQ(e.size(), 4u);
  EXPECT_EQ(e[2].addr, layout::kHighMemory);
  EXPECT_EQ(e[2].size, 3 * kMiB);  // [1 MiB, 4 MiB): two regions, one entry
  EXPECT_EQ(e[2].type, kE820Ram);
  EXPECT_EQ(e[3].addr, 4 * kGiB);
  EXPECT_EQ(e[3].size, 1 * kGiB);
  EXPECT_EQ(e[3].type, kE820Ram);
}

// ---------------------------------------------------------------------------
// bzImage

struct BzOptions {
  uint8_t setup_sects = 4;
  uint16_t version = 0x020f;
  uint8_t loadflags = abi::kLoadedHigh;
  uint16_t xloadflags = abi::kXlfKernel64;
  uint32_t cmdline_size = 2047;
  uint32_t initrd_addr_max = 0x7fffffff;
  uint32_t init_size = 8 * kMiB;
  uint64_t pref_address = 16 * kMiB;
  size_t kernel_bytes = 8192;
};

constexpr size_t kBzSetupBytes(uint8_t setup_sects) {
  return (static_cast<size_t>(setup_sects == 0 ? 4 : setup_sects) + 1) * 512;
}

Bytes MakeBzImage(const BzOptions& o = {}) {
  const size_t setup = kBzSetupBytes(o.setup_sects);
  Bytes v(setup + o.kernel_bytes, 0);
  // Setup code after the header: must never reach the zero page.
  for (size_t i = 0x26c; i < setup; ++i) v[i] = 0xcc;
  v[0x1f1] = o.setup_sects;
  Put<uint32_t>(v, 0x1f4, static_cast<uint32_t>(o.kernel_bytes / 16));
  Put<uint16_t>(v, 0x1fa, 0xffff);
  Put<uint16_t>(v, 0x1fe, 0xaa55);
  v[0x200] = 0xeb;
  v[0x201] = 0x6a;  // header ends at 0x202 + 0x6a = 0x26c
  Put<uint32_t>(v, 0x202, abi::kHeaderMagic);
  Put<uint16_t>(v, 0x206, o.version);
  v[0x211] = o.loadflags;
  Put<uint32_t>(v, 0x214, 0x100000);
  Put<uint32_t>(v, 0x22c, o.initrd_addr_max);
  Put<uint32_t>(v, 0x230, 2 * kMiB);
  v[0x234] = 1;
  Put<uint16_t>(v, 0x236, o.xloadflags);
  Put<uint32_t>(v, 0x238, o.cmdline_size);
  Put<uint64_t>(v, 0x258, o.pref_address);
  Put<uint32_t>(v, 0x260, o.init_size);
  Bytes k = Pattern(o.kernel_bytes, 3);
  std::copy(k.begin(), k.end(), v.begin() + static_cast<ptrdiff_t>(setup));
  return v;
}

TEST(BzImage, LoadsKernelAndBuildsZeroPage) {
  GuestMemory mem = MakeMem();
  const Bytes image = MakeBzImage();
  const Bytes initrd = Pattern(10000, 9);
  const std::string cmdline = "console=ttyS0 root=/dev/vda quiet";
  absl::StatusOr<BootEntry> e = LoadKernel(mem, Config(image, initrd, cmdline, 0xe0000));
  ASSERT_TRUE(e.ok()) << e.status();
  EXPECT_EQ(e->mode, BootEntry::Mode::kLong64);
  EXPECT_EQ(e->rip, layout::kHighMemory + 0x200);
  EXPECT_EQ(e->rsi, layout::kZeroPage);
  EXPECT_EQ(e->rbx, 0u);

  const size_t setup = kBzSetupBytes(4);
  EXPECT_EQ(GuestBytes(mem, layout::kHighMemory, image.size() - setup),
            Bytes(image.begin() + static_cast<ptrdiff_t>(setup), image.end()));

  const auto bp = GuestRead<abi::BootParams>(mem, layout::kZeroPage);
  EXPECT_EQ(bp.hdr.boot_flag, 0xaa55);
  EXPECT_EQ(bp.hdr.header, abi::kHeaderMagic);
  EXPECT_EQ(bp.hdr.version, 0x020f);
  EXPECT_EQ(bp.hdr.setup_sects, 4);
  EXPECT_EQ(bp.hdr.type_of_loader, 0xff);
  EXPECT_EQ(bp.hdr.loadflags & (abi::kLoadedHigh | abi::kCanUseHeap),
            abi::kLoadedHigh | abi::kCanUseHeap);
  EXPECT_EQ(bp.hdr.heap_end_ptr, 0xfe00);
  EXPECT_EQ(bp.hdr.code32_start, layout::kHighMemory);
  EXPECT_EQ(bp.hdr.cmd_line_ptr, layout::kCmdline);
  EXPECT_EQ(bp.ext_cmd_line_ptr, 0u);
  EXPECT_EQ(GuestString(mem, layout::kCmdline), cmdline);
  EXPECT_EQ(bp.sentinel, 0);
  // Nothing beyond the header's own length (0x26c) was copied.
  const auto* raw = reinterpret_cast<const uint8_t*>(&bp);
  for (size_t i = 0x26c; i < 0x290; ++i) EXPECT_EQ(raw[i], 0) << "offset 0x" << std::hex << i;

  // initrd: page aligned, as high as possible in the 256 MiB of RAM.
  EXPECT_EQ(bp.hdr.ramdisk_image % 4096, 0u);
  EXPECT_EQ(bp.hdr.ramdisk_image, 256 * kMiB - 12288);
  EXPECT_EQ(bp.hdr.ramdisk_size, initrd.size());
  EXPECT_EQ(bp.ext_ramdisk_image, 0u);
  EXPECT_EQ(bp.ext_ramdisk_size, 0u);
  EXPECT_EQ(GuestBytes(mem, bp.hdr.ramdisk_image, initrd.size()), initrd);

  EXPECT_EQ(bp.acpi_rsdp_addr, 0xe0000u);
  ASSERT_EQ(bp.e820_entries, 3);
  EXPECT_EQ(bp.e820_table[0].addr, 0u);
  EXPECT_EQ(bp.e820_table[0].size, layout::kEbdaStart);
  EXPECT_EQ(bp.e820_table[0].type, kE820Ram);
  EXPECT_EQ(bp.e820_table[1].addr, layout::kEbdaStart);
  EXPECT_EQ(bp.e820_table[1].type, kE820Reserved);
  EXPECT_EQ(bp.e820_table[2].addr, layout::kHighMemory);
  EXPECT_EQ(bp.e820_table[2].size, 255 * kMiB);
  EXPECT_EQ(bp.e820_table[2].type, kE820Ram);
}

TEST(BzImage, NoInitrdLeavesRamdiskFieldsZero) {
  GuestMemory mem = MakeMem();
  const Bytes image = MakeBzImage();
  ASSERT_TRUE(LoadBzImage(mem, Config(image, {}, "")).ok());
  const auto bp = GuestRead<abi::BootParams>(mem, layout::kZeroPage);
  EXPECT_EQ(bp.hdr.ramdisk_image, 0u);
  EXPECT_EQ(bp.hdr.ramdisk_size, 0u);
  EXPECT_EQ(GuestString(mem, layout::kCmdline), "");
}

TEST(BzImage, SetupSectsZeroMeansFour) {
  GuestMemory mem = MakeMem();
  const Bytes image = MakeBzImage({.setup_sects = 0});
  ASSERT_TRUE(LoadBzImage(mem, Config(image)).ok());
  EXPECT_EQ(GuestBytes(mem, layout::kHighMemory, 8192), Pattern(8192, 3));
}

TEST(BzImage, InitrdStaysBelowInitrdAddrMax) {
  GuestMemory mem = MakeMem({{0, 1 * kGiB}});
  const Bytes image = MakeBzImage({.initrd_addr_max = 0x37ffffff});
  const Bytes initrd = Pattern(3 * 4096 + 5, 1);
  ASSERT_TRUE(LoadBzImage(mem, Config(image, initrd)).ok());
  const auto bp = GuestRead<abi::BootParams>(mem, layout::kZeroPage);
  EXPECT_EQ(bp.hdr.ramdisk_image, 0x38000000u - 4 * 4096);
  EXPECT_LE(uint64_t{bp.hdr.ramdisk_image} + bp.hdr.ramdisk_size - 1, 0x37ffffffu);
}

TEST(BzImage, InitrdStaysBelowTheMmioHole) {
  GuestMemory mem = MakeMem({{0, 3 * kGiB}, {4 * kGiB, 1 * kGiB}});
  const Bytes image = MakeBzImage({.initrd_addr_max = 0xffffffff});
  const Bytes initrd = Pattern(4096, 1);
  ASSERT_TRUE(LoadBzImage(mem, Config(image, initrd)).ok());
  const auto bp = GuestRead<abi::BootParams>(mem, layout::kZeroPage);
  EXPECT_EQ(bp.hdr.ramdisk_image, layout::kMmioHoleStart - 4096);
  EXPECT_EQ(bp.e820_entries, 4);
}

TEST(BzImage, OldProtocolLeavesRsdpToTheKernel) {
  GuestMemory mem = MakeMem();
  const Bytes image = MakeBzImage({.version = 0x020d});
  ASSERT_TRUE(LoadBzImage(mem, Config(image, {}, "x", 0xe0000)).ok());
  EXPECT_EQ(GuestRead<abi::BootParams>(mem, layout::kZeroPage).acpi_rsdp_addr, 0u);
}

TEST(BzImage, RejectsEmptyFile) {
  GuestMemory mem = MakeMem();
  EXPECT_ERROR_HAS(LoadKernel(mem, Config({})), "empty");
  EXPECT_ERROR_HAS(LoadBzImage(mem, Config({})), "truncated");
  EXPECT_ERROR_HAS(LoadElf(mem, Config({})), "empty");
}

TEST(BzImage, RejectsUnknownFormat) {
  GuestMemory mem = MakeMem();
  const Bytes junk = Pattern(4096, 0);
  EXPECT_ERROR_HAS(LoadKernel(mem, Config(junk)), "neither an ELF file");
}

TEST(BzImage, RejectsBadBootFlag) {
  GuestMemory mem = MakeMem();
  Bytes image = MakeBzImage();
  Put<uint16_t>(image, 0x1fe, 0x1234);
  EXPECT_ERROR_HAS(LoadKernel(mem, Config(image)), "boot_flag");
}

TEST(BzImage, RejectsBadHeaderMagic) {
  GuestMemory mem = MakeMem();
  Bytes image = MakeBzImage();
  Put<uint32_t>(image, 0x202, 0x53726447);
  EXPECT_ERROR_HAS(LoadBzImage(mem, Config(image)), "HdrS");
  EXPECT_ERROR_HAS(LoadKernel(mem, Config(image)), "neither");
}

TEST(BzImage, RejectsTruncatedHeader) {
  GuestMemory mem = MakeMem();
  Bytes image = MakeBzImage();
  image.resize(0x240);  // "HdrS" present, header cut short
  EXPECT_ERROR_HAS(LoadKernel(mem, Config(image)), "truncated");
}

TEST(BzImage, RejectsSetupSectsPastEndOfFile) {
  GuestMemory mem = MakeMem();
  Bytes image = MakeBzImage();
  image[0x1f1] = 200;  // setup would end at 201 * 512, file is 5 * 512 + 8192
  EXPECT_ERROR_HAS(LoadKernel(mem, Config(image)), "setup_sects=200");
}

TEST(BzImage, RejectsSyssizePastEndOfFile) {
  GuestMemory mem = MakeMem();
  Bytes image = MakeBzImage();
  Put<uint32_t>(image, 0x1f4, 8192 / 16 + 1);
  EXPECT_ERROR_HAS(LoadKernel(mem, Config(image)), "syssize");
}

TEST(BzImage, RejectsOldProtocol) {
  GuestMemory mem = MakeMem();
  const Bytes image = MakeBzImage({.version = 0x0205});
  EXPECT_ERROR_HAS(LoadKernel(mem, Config(image)), "protocol 2.05");
}

TEST(BzImage, RejectsKernelWithout64BitEntry) {
  GuestMemory mem = MakeMem();
  EXPECT_ERROR_HAS(LoadKernel(mem, Config(MakeBzImage({.xloadflags = 0}))), "XLF_KERNEL_64");
  // Protocol 2.10 predates xloadflags altogether.
  EXPECT_ERROR_HAS(LoadKernel(mem, Config(MakeBzImage({.version = 0x020a}))), "64-bit");
}

TEST(BzImage, RejectsZImage) {
  GuestMemory mem = MakeMem();
  EXPECT_ERROR_HAS(LoadKernel(mem, Config(MakeBzImage({.loadflags = 0}))), "LOADED_HIGH");
}

TEST(BzImage, RejectsCommandLineLongerThanKernelAllows) {
  GuestMemory mem = MakeMem();
  const Bytes image = MakeBzImage({.cmdline_size = 16});
  EXPECT_TRUE(LoadKernel(mem, Config(image, {}, std::string(16, 'a'))).ok());
  EXPECT_ERROR_HAS(LoadKernel(mem, Config(image, {}, std::string(17, 'a'))), "cmdline_size");
}

TEST(BzImage, RejectsCommandLineLongerThanFlintAllows) {
  GuestMemory mem = MakeMem();
  const Bytes image = MakeBzImage({.cmdline_size = 0xffffffff});
  EXPECT_ERROR_HAS(LoadKernel(mem, Config(image, {}, std::string(layout::kCmdlineMax, 'a'))),
                   "kCmdlineMax");
  EXPECT_ERROR_HAS(LoadKernel(mem, Config(image, {}, std::string("a\0b", 3))), "NUL");
}

TEST(BzImage, RejectsInitrdTooBigForRam) {
  GuestMemory mem = MakeMem();
  const Bytes image = MakeBzImage();
  const Bytes initrd(240 * kMiB, 0x5a);  // kernel runs at 16 MiB + 8 MiB init_size
  EXPECT_ERROR_HAS(LoadKernel(mem, Config(image, initrd)), "initrd of");
}

TEST(BzImage, RejectsInitSizeBeyondRam) {
  GuestMemory mem = MakeMem();
  const Bytes image = MakeBzImage({.init_size = 0xf0000000});
  EXPECT_ERROR_HAS(LoadKernel(mem, Config(image)), "init_size");
}

TEST(BzImage, RejectsBadKernelAlignment) {
  GuestMemory mem = MakeMem();
  Bytes image = MakeBzImage();
  Put<uint32_t>(image, 0x230, 3 * kMiB);
  EXPECT_ERROR_HAS(LoadKernel(mem, Config(image)), "kernel_alignment");
}

// ---------------------------------------------------------------------------
// ELF

struct Seg {
  uint32_t type = abi::kPtLoad;
  uint64_t paddr = 0;
  Bytes data;
  uint64_t memsz = 0;  // 0: data.size()
};

struct ElfOptions {
  bool is64 = true;
  uint16_t machine = abi::kEmX86_64;
  uint64_t entry = 0;
  std::vector<Seg> segs;
  // Note areas emitted as SHT_NOTE sections instead of PT_NOTE segments.
  bool notes_as_sections = false;
};

size_t EhdrSize(bool is64) { return is64 ? sizeof(abi::Elf64Ehdr) : sizeof(abi::Elf32Ehdr); }
size_t PhdrSize(bool is64) { return is64 ? sizeof(abi::Elf64Phdr) : sizeof(abi::Elf32Phdr); }
size_t PhdrOffset(bool is64, size_t i) { return EhdrSize(is64) + i * PhdrSize(is64); }

Bytes MakeElf(const ElfOptions& o) {
  std::vector<const Seg*> phdr_segs, section_notes;
  for (const Seg& s : o.segs) {
    if (o.notes_as_sections && s.type == abi::kPtNote) {
      section_notes.push_back(&s);
    } else {
      phdr_segs.push_back(&s);
    }
  }
  Bytes v(PhdrOffset(o.is64, phdr_segs.size()), 0);
  auto append = [&](const Bytes& data) {
    v.resize((v.size() + 15) & ~size_t{15}, 0);
    const size_t off = v.size();
    v.insert(v.end(), data.begin(), data.end());
    return off;
  };
  std::vector<size_t> offsets;
  for (const Seg* s : phdr_segs) offsets.push_back(append(s->data));
  std::vector<size_t> note_offsets;
  for (const Seg* s : section_notes) note_offsets.push_back(append(s->data));

  uint64_t shoff = 0;
  const size_t shnum = section_notes.empty() ? 0 : section_notes.size() + 1;  // + null section
  if (shnum > 0) {
    v.resize((v.size() + 15) & ~size_t{15}, 0);
    shoff = v.size();
    v.resize(v.size() + shnum * (o.is64 ? sizeof(abi::Elf64Shdr) : sizeof(abi::Elf32Shdr)), 0);
    for (size_t i = 0; i < section_notes.size(); ++i) {
      if (o.is64) {
        abi::Elf64Shdr sh{};
        sh.sh_type = abi::kShtNote;
        sh.sh_offset = note_offsets[i];
        sh.sh_size = section_notes[i]->data.size();
        sh.sh_addralign = 4;
        Put(v, shoff + (i + 1) * sizeof(sh), sh);
      } else {
        abi::Elf32Shdr sh{};
        sh.sh_type = abi::kShtNote;
        sh.sh_offset = static_cast<uint32_t>(note_offsets[i]);
        sh.sh_size = static_cast<uint32_t>(section_notes[i]->data.size());
        sh.sh_addralign = 4;
        Put(v, shoff + (i + 1) * sizeof(sh), sh);
      }
    }
  }

  if (o.is64) {
    abi::Elf64Ehdr e{};
    std::memcpy(e.e_ident, abi::kElfMagic, 4);
    e.e_ident[abi::kEiClass] = abi::kElfClass64;
    e.e_ident[abi::kEiData] = abi::kElfData2Lsb;
    e.e_ident[abi::kEiVersion] = 1;
    e.e_type = abi::kEtExec;
    e.e_machine = o.machine;
    e.e_version = 1;
    e.e_entry = o.entry;
    e.e_phoff = sizeof(e);
    e.e_shoff = shoff;
    e.e_ehsize = sizeof(e);
    e.e_phentsize = sizeof(abi::Elf64Phdr);
    e.e_phnum = static_cast<uint16_t>(phdr_segs.size());
    e.e_shentsize = sizeof(abi::Elf64Shdr);
    e.e_shnum = static_cast<uint16_t>(shnum);
    Put(v, 0, e);
  } else {
    abi::Elf32Ehdr e{};
    std::memcpy(e.e_ident, abi::kElfMagic, 4);
    e.e_ident[abi::kEiClass] = abi::kElfClass32;
    e.e_ident[abi::kEiData] = abi::kElfData2Lsb;
    e.e_ident[abi::kEiVersion] = 1;
    e.e_type = abi::kEtExec;
    e.e_machine = o.machine;
    e.e_version = 1;
    e.e_entry = static_cast<uint32_t>(o.entry);
    e.e_phoff = sizeof(e);
    e.e_shoff = static_cast<uint32_t>(shoff);
    e.e_ehsize = sizeof(e);
    e.e_phentsize = sizeof(abi::Elf32Phdr);
    e.e_phnum = static_cast<uint16_t>(phdr_segs.size());
    e.e_shentsize = sizeof(abi::Elf32Shdr);
    e.e_shnum = static_cast<uint16_t>(shnum);
    Put(v, 0, e);
  }
  for (size_t i = 0; i < phdr_segs.size(); ++i) {
    const Seg& s = *phdr_segs[i];
    const uint64_t memsz = s.memsz != 0 ? s.memsz : s.data.size();
    if (o.is64) {
      abi::Elf64Phdr p{};
      p.p_type = s.type;
      p.p_offset = offsets[i];
      p.p_vaddr = s.paddr;
      p.p_paddr = s.paddr;
      p.p_filesz = s.data.size();
      p.p_memsz = memsz;
      p.p_align = s.type == abi::kPtNote ? 4 : 4096;
      Put(v, PhdrOffset(true, i), p);
    } else {
      abi::Elf32Phdr p{};
      p.p_type = s.type;
      p.p_offset = static_cast<uint32_t>(offsets[i]);
      p.p_vaddr = static_cast<uint32_t>(s.paddr);
      p.p_paddr = static_cast<uint32_t>(s.paddr);
      p.p_filesz = static_cast<uint32_t>(s.data.size());
      p.p_memsz = static_cast<uint32_t>(memsz);
      p.p_align = s.type == abi::kPtNote ? 4 : 4096;
      Put(v, PhdrOffset(false, i), p);
    }
  }
  return v;
}

// One ELF note: name (NUL included in namesz) and descriptor, 4-byte padded.
Bytes Note(const std::string& name, uint32_t type, const Bytes& desc) {
  Bytes v(12, 0);
  Put<uint32_t>(v, 0, static_cast<uint32_t>(name.size() + 1));
  Put<uint32_t>(v, 4, static_cast<uint32_t>(desc.size()));
  Put<uint32_t>(v, 8, type);
  v.insert(v.end(), name.begin(), name.end());
  v.push_back(0);
  v.resize((v.size() + 3) & ~size_t{3}, 0);
  v.insert(v.end(), desc.begin(), desc.end());
  v.resize((v.size() + 3) & ~size_t{3}, 0);
  return v;
}

template <typename T>
Bytes LeBytes(T val) {
  Bytes v(sizeof(T));
  std::memcpy(v.data(), &val, sizeof(T));
  return v;
}

Bytes Concat(std::initializer_list<Bytes> parts) {
  Bytes v;
  for (const Bytes& p : parts) v.insert(v.end(), p.begin(), p.end());
  return v;
}

constexpr uint64_t kText = 2 * kMiB;
constexpr uint64_t kData = 4 * kMiB;
constexpr uint64_t kPvhEntry = kText + 0x40;

Bytes PvhNotes(bool desc64, uint64_t entry = kPvhEntry) {
  return Concat({Note("GNU", 3, Pattern(20, 0)), Note("Xen", 5, Bytes{'x', 'e', 'n', 0}),
                 desc64 ? Note("Xen", abi::kXenElfnotePhys32Entry, LeBytes<uint64_t>(entry))
                        : Note("Xen", abi::kXenElfnotePhys32Entry,
                               LeBytes<uint32_t>(static_cast<uint32_t>(entry)))});
}

ElfOptions PvhElf(bool is64) {
  return ElfOptions{
      .is64 = is64,
      .machine = is64 ? abi::kEmX86_64 : abi::kEm386,
      .entry = 0xdeadbeef,  // ignored: the PVH note decides
      .segs = {Seg{.paddr = kText, .data = Pattern(5000, 1)},
               Seg{.type = abi::kPtNote, .data = PvhNotes(is64)},
               Seg{.paddr = kData, .data = Pattern(3000, 2), .memsz = 3000 + 0x3000}}};
}

ElfOptions VmlinuxElf() {
  return ElfOptions{.entry = 16 * kMiB,
                    .segs = {Seg{.paddr = 16 * kMiB, .data = Pattern(8192, 4)},
                             Seg{.paddr = 18 * kMiB, .data = Pattern(100, 5),
                                 .memsz = 2 * kMiB}}};
}

void ExpectPvhStartInfo(const GuestMemory& mem, const std::string& cmdline, uint64_t rsdp,
                        const Bytes& initrd) {
  const auto si = GuestRead<abi::HvmStartInfo>(mem, layout::kPvhStartInfo);
  EXPECT_EQ(si.magic, 0x336ec578u);
  EXPECT_EQ(si.version, 1u);
  EXPECT_EQ(si.flags, 0u);
  EXPECT_EQ(si.cmdline_paddr, layout::kCmdline);
  EXPECT_EQ(GuestString(mem, layout::kCmdline), cmdline);
  EXPECT_EQ(si.rsdp_paddr, rsdp);
  EXPECT_EQ(si.memmap_paddr, layout::kPvhMemmap);
  const std::vector<E820Entry> e820 = BuildE820(mem);
  ASSERT_EQ(si.memmap_entries, e820.size());
  for (size_t i = 0; i < e820.size(); ++i) {
    const auto m = GuestRead<abi::HvmMemmapTableEntry>(
        mem, layout::kPvhMemmap + i * sizeof(abi::HvmMemmapTableEntry));
    EXPECT_EQ(m.addr, e820[i].addr) << i;
    EXPECT_EQ(m.size, e820[i].size) << i;
    EXPECT_EQ(m.type, e820[i].type) << i;
    EXPECT_EQ(m.reserved, 0u) << i;
  }
  if (initrd.empty()) {
    EXPECT_EQ(si.nr_modules, 0u);
    EXPECT_EQ(si.modlist_paddr, 0u);
    return;
  }
  ASSERT_EQ(si.nr_modules, 1u);
  EXPECT_EQ(si.modlist_paddr, layout::kPvhStartInfo + sizeof(abi::HvmStartInfo));
  const auto mod = GuestRead<abi::HvmModlistEntry>(mem, si.modlist_paddr);
  EXPECT_EQ(mod.paddr % 4096, 0u);
  EXPECT_EQ(mod.size, initrd.size());
  EXPECT_EQ(mod.cmdline_paddr, 0u);
  EXPECT_EQ(GuestBytes(mem, mod.paddr, initrd.size()), initrd);
}

TEST(Elf, Elf64WithPvhNoteLoadsSegmentsAndStartInfo) {
  GuestMemory mem = MakeMem();
  // Dirty the destination so zeroing of the bss is observable.
  ASSERT_TRUE(mem.Fill(kText, 0xaa, 8 * kMiB).ok());
  const Bytes image = MakeElf(PvhElf(true));
  const Bytes initrd = Pattern(5000, 7);
  absl::StatusOr<BootEntry> e = LoadKernel(mem, Config(image, initrd, "console=hvc0", 0xe0000));
  ASSERT_TRUE(e.ok()) << e.status();
  EXPECT_EQ(e->mode, BootEntry::Mode::kProtected32);
  EXPECT_EQ(e->rip, kPvhEntry);
  EXPECT_EQ(e->rbx, layout::kPvhStartInfo);
  EXPECT_EQ(GuestBytes(mem, kText, 5000), Pattern(5000, 1));
  EXPECT_EQ(GuestRead<uint8_t>(mem, kText + 5000), 0xaa);  // memsz == filesz: untouched
  EXPECT_EQ(GuestBytes(mem, kData, 3000), Pattern(3000, 2));
  EXPECT_EQ(GuestBytes(mem, kData + 3000, 0x3000), Bytes(0x3000, 0));
  EXPECT_EQ(GuestRead<uint8_t>(mem, kData + 3000 + 0x3000), 0xaa);
  ExpectPvhStartInfo(mem, "console=hvc0", 0xe0000, initrd);
  const auto mod = GuestRead<abi::HvmModlistEntry>(
      mem, layout::kPvhStartInfo + sizeof(abi::HvmStartInfo));
  EXPECT_EQ(mod.paddr, 256 * kMiB - 8192);  // as high as possible
}

TEST(Elf, Elf32WithPvhNoteAndNoInitrd) {
  GuestMemory mem = MakeMem();
  const Bytes image = MakeElf(PvhElf(false));
  absl::StatusOr<BootEntry> e = LoadKernel(mem, Config(image, {}, "", 0));
  ASSERT_TRUE(e.ok()) << e.status();
  EXPECT_EQ(e->mode, BootEntry::Mode::kProtected32);
  EXPECT_EQ(e->rip, kPvhEntry);
  EXPECT_EQ(e->rbx, layout::kPvhStartInfo);
  EXPECT_EQ(GuestBytes(mem, kText, 5000), Pattern(5000, 1));
  ExpectPvhStartInfo(mem, "", 0, {});
}

TEST(Elf, PvhNoteFoundInSectionsWhenNotInSegments) {
  GuestMemory mem = MakeMem();
  ElfOptions o = PvhElf(false);
  o.notes_as_sections = true;
  const Bytes image = MakeElf(o);
  absl::StatusOr<BootEntry> e = LoadElf(mem, Config(image));
  ASSERT_TRUE(e.ok()) << e.status();
  EXPECT_EQ(e->mode, BootEntry::Mode::kProtected32);
  EXPECT_EQ(e->rip, kPvhEntry);
}

TEST(Elf, PvhInitrdStaysBelowTheMmioHole) {
  GuestMemory mem = MakeMem({{0, 3 * kGiB}, {4 * kGiB, 1 * kGiB}});
  const Bytes image = MakeElf(PvhElf(true));
  const Bytes initrd = Pattern(4097, 3);
  ASSERT_TRUE(LoadElf(mem, Config(image, initrd)).ok());
  const auto mod = GuestRead<abi::HvmModlistEntry>(
      mem, layout::kPvhStartInfo + sizeof(abi::HvmStartInfo));
  EXPECT_EQ(mod.paddr, layout::kMmioHoleStart - 8192);
  ExpectPvhStartInfo(mem, "console=ttyS0", 0, initrd);
}

TEST(Elf, Elf64WithoutPvhNoteBootsAsLinuxVmlinux) {
  GuestMemory mem = MakeMem();
  const Bytes image = MakeElf(VmlinuxElf());
  const Bytes initrd = Pattern(100000, 8);
  absl::StatusOr<BootEntry> e = LoadKernel(mem, Config(image, initrd, "root=/dev/vda", 0xe0000));
  ASSERT_TRUE(e.ok()) << e.status();
  EXPECT_EQ(e->mode, BootEntry::Mode::kLong64);
  EXPECT_EQ(e->rip, 16 * kMiB);
  EXPECT_EQ(e->rsi, layout::kZeroPage);
  EXPECT_EQ(GuestBytes(mem, 16 * kMiB, 8192), Pattern(8192, 4));
  EXPECT_EQ(GuestBytes(mem, 18 * kMiB + 100, 4096), Bytes(4096, 0));

  const auto bp = GuestRead<abi::BootParams>(mem, layout::kZeroPage);
  EXPECT_EQ(bp.hdr.boot_flag, 0xaa55);
  EXPECT_EQ(bp.hdr.header, abi::kHeaderMagic);
  EXPECT_EQ(bp.hdr.version, 0x020f);
  EXPECT_EQ(bp.hdr.type_of_loader, 0xff);
  EXPECT_EQ(bp.hdr.loadflags, abi::kLoadedHigh | abi::kCanUseHeap);
  EXPECT_EQ(bp.hdr.cmd_line_ptr, layout::kCmdline);
  EXPECT_EQ(bp.hdr.cmdline_size, layout::kCmdlineMax - 1);
  EXPECT_EQ(GuestString(mem, layout::kCmdline), "root=/dev/vda");
  EXPECT_EQ(bp.hdr.ramdisk_size, initrd.size());
  EXPECT_EQ(bp.hdr.ramdisk_image % 4096, 0u);
  EXPECT_GE(bp.hdr.ramdisk_image, 20 * kMiB);  // above the kernel's last segment
  EXPECT_EQ(bp.hdr.ramdisk_image, 256 * kMiB - 25 * 4096);
  EXPECT_EQ(GuestBytes(mem, bp.hdr.ramdisk_image, initrd.size()), initrd);
  EXPECT_EQ(bp.acpi_rsdp_addr, 0xe0000u);
  EXPECT_EQ(bp.e820_entries, 3);
  EXPECT_EQ(bp.e820_table[2].addr, layout::kHighMemory);
  EXPECT_EQ(bp.e820_table[2].type, kE820Ram);
}

TEST(Elf, Elf32WithoutPvhNoteIsRejected) {
  GuestMemory mem = MakeMem();
  ElfOptions o = PvhElf(false);
  o.segs.erase(o.segs.begin() + 1);  // drop the notes
  EXPECT_ERROR_HAS(LoadKernel(mem, Config(MakeElf(o))), "no PVH entry note");
}

TEST(Elf, RejectsWrongClass) {
  GuestMemory mem = MakeMem();
  Bytes image = MakeElf(PvhElf(true));
  image[abi::kEiClass] = 3;
  EXPECT_ERROR_HAS(LoadKernel(mem, Config(image)), "EI_CLASS");
}

TEST(Elf, RejectsWrongMachine) {
  GuestMemory mem = MakeMem();
  ElfOptions o = PvhElf(true);
  o.machine = 183;  // aarch64
  EXPECT_ERROR_HAS(LoadKernel(mem, Config(MakeElf(o))), "e_machine");
}

TEST(Elf, RejectsBigEndian) {
  GuestMemory mem = MakeMem();
  Bytes image = MakeElf(PvhElf(true));
  image[abi::kEiData] = 2;
  EXPECT_ERROR_HAS(LoadKernel(mem, Config(image)), "EI_DATA");
}

TEST(Elf, RejectsNonExecutable) {
  GuestMemory mem = MakeMem();
  Bytes image = MakeElf(PvhElf(true));
  Put<uint16_t>(image, offsetof(abi::Elf64Ehdr, e_type), 3);  // ET_DYN
  EXPECT_ERROR_HAS(LoadKernel(mem, Config(image)), "ET_EXEC");
}

TEST(Elf, RejectsTruncatedHeader) {
  GuestMemory mem = MakeMem();
  Bytes image = MakeElf(PvhElf(true));
  image.resize(40);
  EXPECT_ERROR_HAS(LoadKernel(mem, Config(image)), "truncated");
}

TEST(Elf, RejectsProgramHeadersOutsideFile) {
  GuestMemory mem = MakeMem();
  Bytes image = MakeElf(PvhElf(true));
  Put<uint64_t>(image, offsetof(abi::Elf64Ehdr, e_phoff), image.size() - 10);
  EXPECT_ERROR_HAS(LoadKernel(mem, Config(image)), "program header table");
  Put<uint64_t>(image, offsetof(abi::Elf64Ehdr, e_phoff), ~0ull - 8);  // would wrap
  EXPECT_ERROR_HAS(LoadKernel(mem, Config(image)), "program header table");
  Bytes image32 = MakeElf(PvhElf(false));
  Put<uint16_t>(image32, offsetof(abi::Elf32Ehdr, e_phnum), 0xfff0);
  EXPECT_ERROR_HAS(LoadKernel(mem, Config(image32)), "program header table");
  Put<uint16_t>(image32, offsetof(abi::Elf32Ehdr, e_phnum), 3);
  Put<uint16_t>(image32, offsetof(abi::Elf32Ehdr, e_phentsize), 8);
  EXPECT_ERROR_HAS(LoadKernel(mem, Config(image32)), "e_phentsize");
}

TEST(Elf, RejectsSegmentPastEndOfFile) {
  GuestMemory mem = MakeMem();
  Bytes image = MakeElf(PvhElf(true));
  const size_t ph = PhdrOffset(true, 0);
  Put<uint64_t>(image, ph + offsetof(abi::Elf64Phdr, p_filesz), image.size());
  Put<uint64_t>(image, ph + offsetof(abi::Elf64Phdr, p_memsz), image.size());
  EXPECT_ERROR_HAS(LoadKernel(mem, Config(image)), "past the end");
  Put<uint64_t>(image, ph + offsetof(abi::Elf64Phdr, p_offset), ~0ull - 100);  // would wrap
  Put<uint64_t>(image, ph + offsetof(abi::Elf64Phdr, p_filesz), 1000);
  EXPECT_ERROR_HAS(LoadKernel(mem, Config(image)), "past the end");
}

TEST(Elf, RejectsFileszLargerThanMemsz) {
  GuestMemory mem = MakeMem();
  Bytes image = MakeElf(PvhElf(false));
  Put<uint32_t>(image, PhdrOffset(false, 0) + offsetof(abi::Elf32Phdr, p_memsz), 4999);
  EXPECT_ERROR_HAS(LoadKernel(mem, Config(image)), "p_filesz");
}

TEST(Elf, RejectsSegmentOutsideGuestRam) {
  GuestMemory mem = MakeMem();
  ElfOptions o = PvhElf(true);
  o.segs[2].paddr = 256 * kMiB - 4096;  // bss runs past the end of RAM
  EXPECT_ERROR_HAS(LoadKernel(mem, Config(MakeElf(o))), "not inside guest RAM");
  o.segs[2].paddr = ~0ull - 4095;  // wraps the address space
  EXPECT_ERROR_HAS(LoadKernel(mem, Config(MakeElf(o))), "not inside guest RAM");
}

TEST(Elf, RejectsSegmentBelowOneMiB) {
  GuestMemory mem = MakeMem();
  ElfOptions o = PvhElf(true);
  o.segs[0].paddr = layout::kZeroPage;
  EXPECT_ERROR_HAS(LoadKernel(mem, Config(MakeElf(o))), "below 1 MiB");
}

TEST(Elf, RejectsNoLoadableSegment) {
  GuestMemory mem = MakeMem();
  ElfOptions o = PvhElf(true);
  o.segs = {o.segs[1]};
  EXPECT_ERROR_HAS(LoadKernel(mem, Config(MakeElf(o))), "PT_LOAD");
}

TEST(Elf, RejectsTruncatedNoteDescriptor) {
  GuestMemory mem = MakeMem();
  ElfOptions o = PvhElf(true);
  Bytes notes = Note("Xen", abi::kXenElfnotePhys32Entry, LeBytes<uint64_t>(kPvhEntry));
  Put<uint32_t>(notes, 4, 64);  // descsz claims more than the note area holds
  o.segs[1].data = notes;
  EXPECT_ERROR_HAS(LoadKernel(mem, Config(MakeElf(o))), "descriptor is 64 bytes");
}

TEST(Elf, RejectsTruncatedNoteName) {
  GuestMemory mem = MakeMem();
  ElfOptions o = PvhElf(true);
  Bytes notes = Note("Xen", abi::kXenElfnotePhys32Entry, LeBytes<uint64_t>(kPvhEntry));
  Put<uint32_t>(notes, 0, 0x80000000);
  o.segs[1].data = notes;
  EXPECT_ERROR_HAS(LoadKernel(mem, Config(MakeElf(o))), "truncated");
}

TEST(Elf, RejectsBadPvhDescriptorSize) {
  GuestMemory mem = MakeMem();
  ElfOptions o = PvhElf(true);
  o.segs[1].data = Note("Xen", abi::kXenElfnotePhys32Entry, Bytes{1, 2});
  EXPECT_ERROR_HAS(LoadKernel(mem, Config(MakeElf(o))), "expected 4 or 8");
}

TEST(Elf, RejectsNoteSegmentOutsideFile) {
  GuestMemory mem = MakeMem();
  Bytes image = MakeElf(PvhElf(true));
  Put<uint64_t>(image, PhdrOffset(true, 1) + offsetof(abi::Elf64Phdr, p_filesz), 1 << 20);
  EXPECT_ERROR_HAS(LoadKernel(mem, Config(image)), "PT_NOTE");
}

TEST(Elf, RejectsNoteSectionOutsideFile) {
  GuestMemory mem = MakeMem();
  ElfOptions o = PvhElf(false);
  o.notes_as_sections = true;
  Bytes image = MakeElf(o);
  const auto ehdr = [&] {
    abi::Elf32Ehdr e;
    std::memcpy(&e, image.data(), sizeof(e));
    return e;
  }();
  Put<uint32_t>(image, ehdr.e_shoff + sizeof(abi::Elf32Shdr) + offsetof(abi::Elf32Shdr, sh_size),
                0xffffff00);
  EXPECT_ERROR_HAS(LoadKernel(mem, Config(image)), "note section");
  Put<uint32_t>(image, offsetof(abi::Elf32Ehdr, e_shoff), 0xfffffff0);
  EXPECT_ERROR_HAS(LoadKernel(mem, Config(image)), "section header table");
}

TEST(Elf, RejectsPvhEntryOutsideLoadedSegments) {
  GuestMemory mem = MakeMem();
  ElfOptions o = PvhElf(true);
  o.segs[1].data = PvhNotes(true, 64 * kMiB);
  EXPECT_ERROR_HAS(LoadKernel(mem, Config(MakeElf(o))), "PVH entry point");
}

TEST(Elf, RejectsVmlinuxEntryOutsideLoadedSegments) {
  GuestMemory mem = MakeMem();
  ElfOptions o = VmlinuxElf();
  o.entry = 0xffffffff81000000;  // a virtual address, not the physical startup_64
  EXPECT_ERROR_HAS(LoadKernel(mem, Config(MakeElf(o))), "e_entry");
}

TEST(Elf, RejectsInitrdTooBigForRam) {
  GuestMemory mem = MakeMem();
  const Bytes initrd(255 * kMiB, 1);
  EXPECT_ERROR_HAS(LoadKernel(mem, Config(MakeElf(PvhElf(true)), initrd)), "initrd of");
  EXPECT_ERROR_HAS(LoadKernel(mem, Config(MakeElf(VmlinuxElf()), initrd)), "initrd of");
}

TEST(Elf, RejectsCommandLineTooLong) {
  GuestMemory mem = MakeMem();
  EXPECT_ERROR_HAS(
      LoadKernel(mem, Config(MakeElf(PvhElf(true)), {}, std::string(layout::kCmdlineMax, 'x'))),
      "at most");
}

// ---------------------------------------------------------------------------
// Corrupted images: every variant must give a result, never a crash or an
// out-of-bounds access (run under ASan/UBSan to make the latter loud).

TEST(BootFuzz, CorruptedImagesNeverCrash) {
  GuestMemory mem = MakeMem();
  const std::vector<Bytes> seeds = {MakeBzImage(), MakeElf(PvhElf(true)), MakeElf(PvhElf(false)),
                                    MakeElf(VmlinuxElf()), [] {
                                      ElfOptions o = PvhElf(false);
                                      o.notes_as_sections = true;
                                      return MakeElf(o);
                                    }()};
  for (const Bytes& s : seeds) ASSERT_TRUE(LoadKernel(mem, Config(s)).ok());
  const Bytes initrd = Pattern(3000, 5);
  std::mt19937_64 rng(0xf1177);
  // FLINT_BOOT_FUZZ_ITERS raises the count for a longer local run.
  const char* env = std::getenv("FLINT_BOOT_FUZZ_ITERS");
  const int iters = env != nullptr ? std::atoi(env) : 600;
  int ok = 0, failed = 0;
  for (int iter = 0; iter < iters; ++iter) {
    Bytes image = seeds[static_cast<size_t>(iter) % seeds.size()];
    const int flips = 1 + static_cast<int>(rng() % 8);
    for (int f = 0; f < flips; ++f) {
      // Mostly the headers, where the offsets and sizes are.
      const size_t span = rng() % 4 == 0 ? image.size() : std::min<size_t>(image.size(), 0x300);
      const size_t pos = rng() % span;
      switch (rng() % 3) {
        case 0: image[pos] = static_cast<uint8_t>(rng()); break;
        case 1: image[pos] ^= static_cast<uint8_t>(1u << (rng() % 8)); break;
        default: image[pos] = (rng() % 2) ? 0xff : 0x00; break;
      }
    }
    if (rng() % 8 == 0) image.resize(rng() % (image.size() + 1));
    absl::StatusOr<BootEntry> r =
        LoadKernel(mem, Config(image, rng() % 2 ? std::span<const uint8_t>(initrd)
                                                : std::span<const uint8_t>()));
    if (r.ok()) {
      ++ok;
    } else {
      ++failed;
      EXPECT_FALSE(r.status().message().empty());
    }
  }
  EXPECT_EQ(ok + failed, iters);
  std::printf("corrupted images: %d loaded, %d rejected\n", ok, failed);
}

// ---------------------------------------------------------------------------
// ReadWholeFile

TEST(ReadWholeFile, ReadsAndEnforcesLimitAndNamesPath) {
  char path[] = "/tmp/flint_boot_test_XXXXXX";
  int fd = mkstemp(path);
  ASSERT_GE(fd, 0);
  const Bytes content = Pattern(100000, 6);
  ASSERT_EQ(write(fd, content.data(), content.size()), static_cast<ssize_t>(content.size()));
  close(fd);
  absl::StatusOr<Bytes> r = ReadWholeFile(path, content.size());
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(*r, content);
  EXPECT_ERROR_HAS(ReadWholeFile(path, content.size() - 1), path);
  unlink(path);
  absl::StatusOr<Bytes> missing = ReadWholeFile(path, 1000);
  ASSERT_FALSE(missing.ok());
  EXPECT_TRUE(absl::IsNotFound(missing.status()));
  EXPECT_NE(missing.status().message().find(path), std::string::npos);
  EXPECT_NE(missing.status().message().find("No such file"), std::string::npos);
  EXPECT_ERROR_HAS(ReadWholeFile("/tmp", 1000), "directory");
}

// ---------------------------------------------------------------------------
// Debian's real cloud kernel (tests/linux/fetch-kernel.sh).

absl::StatusOr<Bytes> RealKernel(const char* name) {
  return ReadWholeFile(std::string(FLINT_BUILD_ROOT "/linux/") + name, 512 * kMiB);
}

TEST(RealKernel, DebianBzImage) {
  absl::StatusOr<Bytes> image = RealKernel("vmlinuz");
  if (!image.ok()) {
    GTEST_SKIP() << image.status() << "; run tests/linux/fetch-kernel.sh " FLINT_BUILD_ROOT
                 << "/linux to fetch Debian's cloud kernel";
  }
  GuestMemory mem = MakeMem({{0, 512 * kMiB}});
  const Bytes initrd = Pattern(1 * kMiB, 3);
  const std::string cmdline = "console=ttyS0 reboot=k panic=1 flint.test=1";
  absl::StatusOr<BootEntry> e = LoadKernel(mem, Config(*image, initrd, cmdline, 0xe0000));
  ASSERT_TRUE(e.ok()) << e.status();
  EXPECT_EQ(e->mode, BootEntry::Mode::kLong64);
  EXPECT_EQ(e->rip, layout::kHighMemory + 0x200);
  EXPECT_EQ(e->rsi, layout::kZeroPage);
  const auto bp = GuestRead<abi::BootParams>(mem, layout::kZeroPage);
  EXPECT_GE(bp.hdr.version, 0x020c);
  EXPECT_TRUE(bp.hdr.xloadflags & abi::kXlfKernel64);
  EXPECT_EQ(bp.hdr.type_of_loader, 0xff);
  EXPECT_EQ(GuestString(mem, bp.hdr.cmd_line_ptr), cmdline);
  EXPECT_EQ(bp.acpi_rsdp_addr, 0xe0000u);
  EXPECT_GE(bp.hdr.ramdisk_image, bp.hdr.pref_address + bp.hdr.init_size);
  EXPECT_EQ(GuestBytes(mem, bp.hdr.ramdisk_image, initrd.size()), initrd);
  const size_t setup = kBzSetupBytes((*image)[0x1f1]);
  EXPECT_EQ(GuestBytes(mem, layout::kHighMemory, 4096),
            Bytes(image->begin() + static_cast<ptrdiff_t>(setup),
                  image->begin() + static_cast<ptrdiff_t>(setup) + 4096));
  std::printf("vmlinuz: boot protocol %u.%02u, setup_sects %u, init_size 0x%x, pref_address "
              "0x%llx, kernel_alignment 0x%x\n",
              bp.hdr.version >> 8, bp.hdr.version & 0xff, bp.hdr.setup_sects, bp.hdr.init_size,
              static_cast<unsigned long long>(bp.hdr.pref_address), bp.hdr.kernel_alignment);
}

TEST(RealKernel, DebianVmlinuxHasPvhEntry) {
  absl::StatusOr<Bytes> image = RealKernel("vmlinux");
  if (!image.ok()) {
    GTEST_SKIP() << image.status() << "; run tests/linux/fetch-kernel.sh " FLINT_BUILD_ROOT
                 << "/linux to fetch Debian's cloud kernel";
  }
  GuestMemory mem = MakeMem({{0, 512 * kMiB}});
  const Bytes initrd = Pattern(1 * kMiB, 3);
  absl::StatusOr<BootEntry> e = LoadKernel(mem, Config(*image, initrd, "console=ttyS0", 0xe0000));
  ASSERT_TRUE(e.ok()) << e.status();
  EXPECT_EQ(e->mode, BootEntry::Mode::kProtected32);  // Debian: CONFIG_PVH=y
  EXPECT_EQ(e->rbx, layout::kPvhStartInfo);
  // The entry lies in the first (text) segment, which Debian links at 16 MiB.
  abi::Elf64Ehdr eh;
  std::memcpy(&eh, image->data(), sizeof(eh));
  abi::Elf64Phdr text;
  std::memcpy(&text, image->data() + eh.e_phoff, sizeof(text));
  EXPECT_GE(e->rip, text.p_paddr);
  EXPECT_LT(e->rip, text.p_paddr + text.p_memsz);
  EXPECT_EQ(GuestBytes(mem, text.p_paddr, 4096),
            Bytes(image->begin() + static_cast<ptrdiff_t>(text.p_offset),
                  image->begin() + static_cast<ptrdiff_t>(text.p_offset) + 4096));
  ExpectPvhStartInfo(mem, "console=ttyS0", 0xe0000, initrd);
  std::printf("vmlinux: PVH entry 0x%llx, e_entry 0x%llx\n",
              static_cast<unsigned long long>(e->rip),
              static_cast<unsigned long long>(eh.e_entry));
}

}  // namespace
}  // namespace flint
