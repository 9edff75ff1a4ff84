// Binary layouts the boot loaders read and write: the Linux x86 boot
// protocol's boot_params ("zero page") and setup_header
// (Documentation/arch/x86/boot.rst, zero-page.rst), the Xen/PVH start-of-day
// structures (xen/include/public/arch-x86/hvm/start_info.h), and the subset of
// ELF used to load kernels. Every layout is pinned by static_asserts on its
// size and field offsets, so a mistake here fails the build, not the guest.
#pragma once

#include <bit>
#include <cstddef>
#include <cstdint>

namespace flint::boot_abi {

static_assert(std::endian::native == std::endian::little,
              "the boot loaders read little-endian images with memcpy");

// ---------------------------------------------------------------------------
// Linux x86 boot protocol.

// Offsets inside a bzImage file (and inside boot_params, which mirrors the
// first page of the real-mode setup code).
inline constexpr size_t kSetupHeaderOffset = 0x1f1;
inline constexpr size_t kSetupHeaderJumpOffset = 0x200;  // 2-byte short jmp; 2nd byte = length
inline constexpr size_t kSetupHeaderMagicOffset = 0x202;
inline constexpr size_t kSetupHeaderCopyEnd = 0x290;     // boot_params.edd_mbr_sig_buffer
inline constexpr uint16_t kBootFlag = 0xaa55;
inline constexpr uint32_t kHeaderMagic = 0x53726448;     // "HdrS"
inline constexpr uint32_t kSectorSize = 512;
inline constexpr uint8_t kDefaultSetupSects = 4;         // setup_sects == 0 means 4

// Boot protocol versions (setup_header.version).
inline constexpr uint16_t kProtocol2_03 = 0x0203;        // initrd_addr_max
inline constexpr uint16_t kProtocol2_05 = 0x0205;        // relocatable_kernel
inline constexpr uint16_t kProtocol2_06 = 0x0206;        // cmdline_size
inline constexpr uint16_t kProtocol2_10 = 0x020a;        // kernel_alignment, pref_address, init_size
inline constexpr uint16_t kProtocol2_12 = 0x020c;        // xloadflags
inline constexpr uint16_t kProtocol2_14 = 0x020e;        // acpi_rsdp_addr
inline constexpr uint16_t kProtocol2_15 = 0x020f;

// setup_header.loadflags
inline constexpr uint8_t kLoadedHigh = 1 << 0;
inline constexpr uint8_t kKeepSegments = 1 << 6;
inline constexpr uint8_t kCanUseHeap = 1 << 7;
// setup_header.xloadflags
inline constexpr uint16_t kXlfKernel64 = 1 << 0;
inline constexpr uint16_t kXlfCanBeLoadedAbove4G = 1 << 1;

inline constexpr uint8_t kTypeOfLoaderUndefined = 0xff;  // "no assigned id"
inline constexpr uint16_t kHeapEndPtr = 0xfe00;          // setup heap end, relative to setup start
inline constexpr uint32_t kDefaultInitrdAddrMax = 0x37ffffff;  // protocol < 2.03
inline constexpr uint64_t kStartup64Offset = 0x200;      // 64-bit entry from protected-mode start
inline constexpr size_t kE820MaxEntries = 128;           // boot_params.e820_table

struct __attribute__((packed)) SetupHeader {
  uint8_t setup_sects;           // 0x1f1
  uint16_t root_flags;           // 0x1f2
  uint32_t syssize;              // 0x1f4  protected-mode code size in 16-byte units
  uint16_t ram_size;             // 0x1f8
  uint16_t vid_mode;             // 0x1fa
  uint16_t root_dev;             // 0x1fc
  uint16_t boot_flag;            // 0x1fe  0xaa55
  uint16_t jump;                 // 0x200
  uint32_t header;               // 0x202  "HdrS"
  uint16_t version;              // 0x206
  uint32_t realmode_swtch;       // 0x208
  uint16_t start_sys_seg;        // 0x20c
  uint16_t kernel_version;       // 0x20e
  uint8_t type_of_loader;        // 0x210
  uint8_t loadflags;             // 0x211
  uint16_t setup_move_size;      // 0x212
  uint32_t code32_start;         // 0x214
  uint32_t ramdisk_image;        // 0x218
  uint32_t ramdisk_size;         // 0x21c
  uint32_t bootsect_kludge;      // 0x220
  uint16_t heap_end_ptr;         // 0x224
  uint8_t ext_loader_ver;        // 0x226
  uint8_t ext_loader_type;       // 0x227
  uint32_t cmd_line_ptr;         // 0x228
  uint32_t initrd_addr_max;      // 0x22c
  uint32_t kernel_alignment;     // 0x230
  uint8_t relocatable_kernel;    // 0x234
  uint8_t min_alignment;         // 0x235
  uint16_t xloadflags;           // 0x236
  uint32_t cmdline_size;         // 0x238
  uint32_t hardware_subarch;     // 0x23c
  uint64_t hardware_subarch_data;  // 0x240
  uint32_t payload_offset;       // 0x248
  uint32_t payload_length;       // 0x24c
  uint64_t setup_data;           // 0x250
  uint64_t pref_address;         // 0x258
  uint32_t init_size;            // 0x260
  uint32_t handover_offset;      // 0x264
  uint32_t kernel_info_offset;   // 0x268
};
static_assert(sizeof(SetupHeader) == 0x26c - 0x1f1);

#define FLINT_HDR_AT(field, off) \
  static_assert(offsetof(SetupHeader, field) + kSetupHeaderOffset == (off), #field)
FLINT_HDR_AT(syssize, 0x1f4);
FLINT_HDR_AT(boot_flag, 0x1fe);
FLINT_HDR_AT(jump, 0x200);
FLINT_HDR_AT(header, 0x202);
FLINT_HDR_AT(version, 0x206);
FLINT_HDR_AT(type_of_loader, 0x210);
FLINT_HDR_AT(loadflags, 0x211);
FLINT_HDR_AT(code32_start, 0x214);
FLINT_HDR_AT(ramdisk_image, 0x218);
FLINT_HDR_AT(ramdisk_size, 0x21c);
FLINT_HDR_AT(heap_end_ptr, 0x224);
FLINT_HDR_AT(cmd_line_ptr, 0x228);
FLINT_HDR_AT(initrd_addr_max, 0x22c);
FLINT_HDR_AT(kernel_alignment, 0x230);
FLINT_HDR_AT(relocatable_kernel, 0x234);
FLINT_HDR_AT(xloadflags, 0x236);
FLINT_HDR_AT(cmdline_size, 0x238);
FLINT_HDR_AT(payload_offset, 0x248);
FLINT_HDR_AT(pref_address, 0x258);
FLINT_HDR_AT(init_size, 0x260);
FLINT_HDR_AT(kernel_info_offset, 0x268);
#undef FLINT_HDR_AT

struct __attribute__((packed)) BootE820Entry {
  uint64_t addr;
  uint64_t size;
  uint32_t type;
};
static_assert(sizeof(BootE820Entry) == 20);

struct __attribute__((packed)) BootParams {
  uint8_t screen_info[0x40];          // 0x000
  uint8_t apm_bios_info[0x14];        // 0x040
  uint8_t pad2[4];                    // 0x054
  uint64_t tboot_addr;                // 0x058
  uint8_t ist_info[0x10];             // 0x060
  uint64_t acpi_rsdp_addr;            // 0x070
  uint8_t pad3[8];                    // 0x078
  uint8_t hd0_info[16];               // 0x080
  uint8_t hd1_info[16];               // 0x090
  uint8_t sys_desc_table[16];         // 0x0a0
  uint8_t olpc_ofw_header[16];        // 0x0b0
  uint32_t ext_ramdisk_image;         // 0x0c0
  uint32_t ext_ramdisk_size;          // 0x0c4
  uint32_t ext_cmd_line_ptr;          // 0x0c8
  uint8_t pad4[112];                  // 0x0cc
  uint32_t cc_blob_address;           // 0x13c
  uint8_t edid_info[0x80];            // 0x140
  uint8_t efi_info[0x20];             // 0x1c0
  uint32_t alt_mem_k;                 // 0x1e0
  uint32_t scratch;                   // 0x1e4
  uint8_t e820_entries;               // 0x1e8
  uint8_t eddbuf_entries;             // 0x1e9
  uint8_t edd_mbr_sig_buf_entries;    // 0x1ea
  uint8_t kbd_status;                 // 0x1eb
  uint8_t secure_boot;                // 0x1ec
  uint8_t pad5[2];                    // 0x1ed
  uint8_t sentinel;                   // 0x1ef
  uint8_t pad6[1];                    // 0x1f0
  SetupHeader hdr;                    // 0x1f1
  uint8_t pad7[kSetupHeaderCopyEnd - kSetupHeaderOffset - sizeof(SetupHeader)];
  uint32_t edd_mbr_sig_buffer[16];    // 0x290
  BootE820Entry e820_table[kE820MaxEntries];  // 0x2d0
  uint8_t pad8[48];                   // 0xcd0
  uint8_t eddbuf[6 * 82];             // 0xd00
  uint8_t pad9[276];                  // 0xeec
};
static_assert(sizeof(BootParams) == 4096);
static_assert(offsetof(BootParams, tboot_addr) == 0x058);
static_assert(offsetof(BootParams, acpi_rsdp_addr) == 0x070);
static_assert(offsetof(BootParams, ext_ramdisk_image) == 0x0c0);
static_assert(offsetof(BootParams, ext_ramdisk_size) == 0x0c4);
static_assert(offsetof(BootParams, ext_cmd_line_ptr) == 0x0c8);
static_assert(offsetof(BootParams, cc_blob_address) == 0x13c);
static_assert(offsetof(BootParams, e820_entries) == 0x1e8);
static_assert(offsetof(BootParams, sentinel) == 0x1ef);
static_assert(offsetof(BootParams, hdr) == kSetupHeaderOffset);
static_assert(offsetof(BootParams, edd_mbr_sig_buffer) == 0x290);
static_assert(offsetof(BootParams, e820_table) == 0x2d0);
static_assert(offsetof(BootParams, eddbuf) == 0xd00);

// ---------------------------------------------------------------------------
// PVH (Xen HVM direct boot) start-of-day structures, version 1.

inline constexpr uint32_t kHvmStartMagic = 0x336ec578;
inline constexpr uint32_t kHvmStartInfoVersion = 1;  // version 1 adds the memory map

struct HvmStartInfo {
  uint32_t magic;           // 0x00
  uint32_t version;         // 0x04
  uint32_t flags;           // 0x08
  uint32_t nr_modules;      // 0x0c
  uint64_t modlist_paddr;   // 0x10
  uint64_t cmdline_paddr;   // 0x18
  uint64_t rsdp_paddr;      // 0x20
  uint64_t memmap_paddr;    // 0x28
  uint32_t memmap_entries;  // 0x30
  uint32_t reserved;        // 0x34
};
static_assert(sizeof(HvmStartInfo) == 56);
static_assert(offsetof(HvmStartInfo, modlist_paddr) == 0x10);
static_assert(offsetof(HvmStartInfo, rsdp_paddr) == 0x20);
static_assert(offsetof(HvmStartInfo, memmap_paddr) == 0x28);
static_assert(offsetof(HvmStartInfo, memmap_entries) == 0x30);

struct HvmModlistEntry {
  uint64_t paddr;
  uint64_t size;
  uint64_t cmdline_paddr;
  uint64_t reserved;
};
static_assert(sizeof(HvmModlistEntry) == 32);

struct HvmMemmapTableEntry {
  uint64_t addr;
  uint64_t size;
  uint32_t type;  // XEN_HVM_MEMMAP_TYPE_*: same numbering as e820
  uint32_t reserved;
};
static_assert(sizeof(HvmMemmapTableEntry) == 24);
static_assert(offsetof(HvmMemmapTableEntry, type) == 16);

// ---------------------------------------------------------------------------
// ELF (System V gABI), the parts needed to load an executable.

inline constexpr uint8_t kElfMagic[4] = {0x7f, 'E', 'L', 'F'};
inline constexpr size_t kEiClass = 4, kEiData = 5, kEiVersion = 6;
inline constexpr uint8_t kElfClass32 = 1, kElfClass64 = 2;
inline constexpr uint8_t kElfData2Lsb = 1;
inline constexpr uint16_t kEtExec = 2;
inline constexpr uint16_t kEm386 = 3;
inline constexpr uint16_t kEmX86_64 = 62;
inline constexpr uint32_t kPtLoad = 1;
inline constexpr uint32_t kPtNote = 4;
inline constexpr uint32_t kShtNote = 7;
inline constexpr uint16_t kPnXnum = 0xffff;  // real e_phnum is in section 0: unsupported

// The Xen ELF note that carries the 32-bit PVH entry point.
inline constexpr char kXenNoteName[] = "Xen";
inline constexpr uint32_t kXenElfnotePhys32Entry = 18;

struct Elf32Ehdr {
  uint8_t e_ident[16];
  uint16_t e_type;
  uint16_t e_machine;
  uint32_t e_version;
  uint32_t e_entry;
  uint32_t e_phoff;
  uint32_t e_shoff;
  uint32_t e_flags;
  uint16_t e_ehsize;
  uint16_t e_phentsize;
  uint16_t e_phnum;
  uint16_t e_shentsize;
  uint16_t e_shnum;
  uint16_t e_shstrndx;
};
static_assert(sizeof(Elf32Ehdr) == 52);
static_assert(offsetof(Elf32Ehdr, e_phoff) == 28);
static_assert(offsetof(Elf32Ehdr, e_phnum) == 44);

struct Elf64Ehdr {
  uint8_t e_ident[16];
  uint16_t e_type;
  uint16_t e_machine;
  uint32_t e_version;
  uint64_t e_entry;
  uint64_t e_phoff;
  uint64_t e_shoff;
  uint32_t e_flags;
  uint16_t e_ehsize;
  uint16_t e_phentsize;
  uint16_t e_phnum;
  uint16_t e_shentsize;
  uint16_t e_shnum;
  uint16_t e_shstrndx;
};
static_assert(sizeof(Elf64Ehdr) == 64);
static_assert(offsetof(Elf64Ehdr, e_phoff) == 32);
static_assert(offsetof(Elf64Ehdr, e_phnum) == 56);

struct Elf32Phdr {
  uint32_t p_type;
  uint32_t p_offset;
  uint32_t p_vaddr;
  uint32_t p_paddr;
  uint32_t p_filesz;
  uint32_t p_memsz;
  uint32_t p_flags;
  uint32_t p_align;
};
static_assert(sizeof(Elf32Phdr) == 32);

struct Elf64Phdr {
  uint32_t p_type;
  uint32_t p_flags;
  uint64_t p_offset;
  uint64_t p_vaddr;
  uint64_t p_paddr;
  uint64_t p_filesz;
  uint64_t p_memsz;
  uint64_t p_align;
};
static_assert(sizeof(Elf64Phdr) == 56);
static_assert(offsetof(Elf64Phdr, p_paddr) == 24);

struct Elf32Shdr {
  uint32_t sh_name;
  uint32_t sh_type;
  uint32_t sh_flags;
  uint32_t sh_addr;
  uint32_t sh_offset;
  uint32_t sh_size;
  uint32_t sh_link;
  uint32_t sh_info;
  uint32_t sh_addralign;
  uint32_t sh_entsize;
};
static_assert(sizeof(Elf32Shdr) == 40);

struct Elf64Shdr {
  uint32_t sh_name;
  uint32_t sh_type;
  uint64_t sh_flags;
  uint64_t sh_addr;
  uint64_t sh_offset;
  uint64_t sh_size;
  uint32_t sh_link;
  uint32_t sh_info;
  uint64_t sh_addralign;
  uint64_t sh_entsize;
};
static_assert(sizeof(Elf64Shdr) == 64);
static_assert(offsetof(Elf64Shdr, sh_offset) == 24);

struct ElfNhdr {  // same layout in ELF32 and ELF64
  uint32_t n_namesz;
  uint32_t n_descsz;
  uint32_t n_type;
};
static_assert(sizeof(ElfNhdr) == 12);

}  // namespace flint::boot_abi
