// flint test guest: the freestanding support library (no libc). Everything
// here runs at CPL3 except exception_report(), which the CPL0 exception
// stubs call.
#pragma once

namespace guest {

using u8 = __UINT8_TYPE__;
using u16 = __UINT16_TYPE__;
using u32 = __UINT32_TYPE__;
using u64 = __UINT64_TYPE__;
using i64 = __INT64_TYPE__;
using usize = __SIZE_TYPE__;

// Fixed platform addresses and ports.
inline constexpr u16 kCom1 = 0x3f8;
inline constexpr u16 kDebugExitPort = 0xf4;
inline constexpr u64 kLapicBase = 0xfee00000;
inline constexpr u64 kApTrampoline = 0x8000;  // must match AP_TRAMPOLINE in boot.S

// ---- Port and memory-mapped I/O -------------------------------------------
inline void outb(u16 port, u8 v) { asm volatile("outb %0, %1" : : "a"(v), "Nd"(port)); }
inline void outw(u16 port, u16 v) { asm volatile("outw %0, %1" : : "a"(v), "Nd"(port)); }
inline void outl(u16 port, u32 v) { asm volatile("outl %0, %1" : : "a"(v), "Nd"(port)); }
inline u8 inb(u16 port) {
  u8 v;
  asm volatile("inb %1, %0" : "=a"(v) : "Nd"(port));
  return v;
}
inline u16 inw(u16 port) {
  u16 v;
  asm volatile("inw %1, %0" : "=a"(v) : "Nd"(port));
  return v;
}
inline u32 inl(u16 port) {
  u32 v;
  asm volatile("inl %1, %0" : "=a"(v) : "Nd"(port));
  return v;
}

template <typename T>
inline T mmio_read(u64 addr) {
  return *reinterpret_cast<volatile T*>(addr);
}
template <typename T>
inline void mmio_write(u64 addr, T v) {
  *reinterpret_cast<volatile T*>(addr) = v;
}

inline u64 rdtsc() {
  u32 lo, hi;
  asm volatile("rdtsc" : "=a"(lo), "=d"(hi));
  return (static_cast<u64>(hi) << 32) | lo;
}
inline void cpu_relax() { asm volatile("pause" ::: "memory"); }

// CPL0 services, requested with a marked ud2 that boot.S's #UD handler
// recognises: 0f 0b 'F' 'L' 'N' 'T' <service> (software interrupts and
// syscall do not reach CPL0 on kvm_pvm; exceptions do).
inline constexpr u8 kServiceIdle = 0;      // halt forever, interrupts on
inline constexpr u8 kServiceStartAps = 1;  // INIT-SIPI-SIPI to all other CPUs
inline constexpr u8 kServiceTripleFault = 2;  // empty IDT, then a fault: CPU shutdown
inline constexpr u8 kServiceWaitIrq = 3;  // halt until one interrupt was handled, then return
template <u8 kService>
inline void cpl0_service() {
  asm volatile("ud2\n\t.ascii \"FLNT\"\n\t.byte %c0" : : "i"(kService) : "memory");
}

// Busy-waits for about `cycles` TSC cycles.
void spin_cycles(u64 cycles);

// ---- Serial console (COM1, polled) ----------------------------------------
void putc(char c);
void print(const char* s);
void print_n(const char* s, usize n);
void print_dec(u64 v);
void print_hex(u64 v);  // no 0x prefix
void print_dec2(u64 v);  // at least two digits
bool serial_can_read();
u8 serial_read();  // waits for a byte

// exit(v): isa-debug-exit style, the VMM exits with status (v << 1) | 1.
[[noreturn]] void exit(u8 v);
// Prints "FAILED: <what>" and exits with 1.
[[noreturn]] void fail(const char* what);

// ---- Memory for device rings and buffers ------------------------------------
// A bump allocator over guest RAM from `base` up, 4 KiB granules. `next`
// starts at 0 (meaning `base`), so a global Arena needs no constructor.
struct Arena {
  u64 base;
  const char* owner;  // names the user in the failure message
  u64 next;
};
// fail()s when the boot memory map says there is no RAM there.
u8* arena_alloc(Arena* a, u64 bytes);

// ---- Strings ----------------------------------------------------------------
usize strlen(const char* s);
bool mem_eq(const void* a, const void* b, usize n);
bool str_eq(const char* a, usize alen, const char* b);  // b NUL-terminated

// ---- Boot information and the command line -------------------------------
struct BootInfo {
  u64 start_info;  // guest-physical address of hvm_start_info; 0 if none
  u64 rsdp;        // hvm_start_info.rsdp_paddr; 0 if none
  u64 memmap;
  u32 memmap_entries;
};
extern BootInfo g_boot;

// Copies the start info and command line out of low memory (first thing at CPL3).
void capture_boot_info();

// The command line, copied out of low memory at start-up.
const char* cmdline();
// Finds `key=value` in the command line; sets *val/*len to the value.
bool cmdline_get(const char* key, const char** val, usize* len);
// Parses a decimal (or 0x-prefixed hex) number; false on a malformed one.
bool parse_u64(const char* s, usize n, u64* out);
u64 cmdline_u64(const char* key, u64 def);

}  // namespace guest

// ---- Symbols shared with boot.S --------------------------------------------
extern "C" {
extern guest::u64 boot_start_info;
extern guest::u64 cpl3_entry_tsc;
extern volatile guest::u32 ap_online;
extern volatile guest::u32 irq_held;  // interrupts taken by irq_hold
extern guest::u8 idt[];
extern const guest::u8 exc_stubs[];
extern const guest::u8 ap_trampoline_start[];
extern const guest::u8 ap_trampoline_end[];
void irq_stub();
// Counts the interrupt in irq_held and returns without an EOI.
void irq_hold();

struct ExceptionFrame {
  guest::u64 vector, error, rip, cs, rflags, rsp, ss;
};
[[noreturn]] void exception_report(const ExceptionFrame* f);
[[noreturn]] void guest_main();

void* memcpy(void* dst, const void* src, guest::usize n);
void* memmove(void* dst, const void* src, guest::usize n);
void* memset(void* dst, int c, guest::usize n);
int memcmp(const void* a, const void* b, guest::usize n);
}
