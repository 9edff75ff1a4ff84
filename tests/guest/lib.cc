// flint test guest: support library (serial console, exit, strings, the
// command line) and the CPL0 exception report.
#include "tests/guest/guest.h"

namespace guest {

namespace {

constexpr u16 kLsr = kCom1 + 5;
constexpr u8 kLsrDataReady = 0x01;
constexpr u8 kLsrThrEmpty = 0x20;

constexpr usize kCmdlineMax = 4096;
char g_cmdline[kCmdlineMax];

}  // namespace

BootInfo g_boot;

void spin_cycles(u64 cycles) {
  const u64 start = rdtsc();
  while (rdtsc() - start < cycles) cpu_relax();
}

// ---- Serial ---------------------------------------------------------------

void putc(char c) {
  // Bounded: a UART that never reports an empty holding register must not
  // hang the guest.
  for (u32 i = 0; i < 100000 && !(inb(kLsr) & kLsrThrEmpty); ++i) cpu_relax();
  outb(kCom1, static_cast<u8>(c));
}

void print_n(const char* s, usize n) {
  for (usize i = 0; i < n; ++i) putc(s[i]);
}

void print(const char* s) {
  while (*s) putc(*s++);
}

void print_dec(u64 v) {
  char buf[24];
  int n = 0;
  do {
    buf[n++] = static_cast<char>('0' + v % 10);
    v /= 10;
  } while (v != 0);
  while (n > 0) putc(buf[--n]);
}

void print_dec2(u64 v) {
  if (v < 10) putc('0');
  print_dec(v);
}

void print_hex(u64 v) {
  char buf[16];
  int n = 0;
  do {
    buf[n++] = "0123456789abcdef"[v & 0xf];
    v >>= 4;
  } while (v != 0);
  while (n > 0) putc(buf[--n]);
}

bool serial_can_read() { return inb(kLsr) & kLsrDataReady; }

u8 serial_read() {
  while (!serial_can_read()) cpu_relax();
  return inb(kCom1);
}

void exit(u8 v) {
  outb(kDebugExitPort, v);
  // Still here: no debug-exit device. hlt is not allowed at CPL3; spin.
  for (;;) cpu_relax();
}

void fail(const char* what) {
  print("FAILED: ");
  print(what);
  putc('\n');
  exit(1);
}

// ---- Strings ------------------------------------------------------------------

usize strlen(const char* s) {
  usize n = 0;
  while (s[n]) ++n;
  return n;
}

bool mem_eq(const void* a, const void* b, usize n) { return memcmp(a, b, n) == 0; }

bool str_eq(const char* a, usize alen, const char* b) {
  return strlen(b) == alen && mem_eq(a, b, alen);
}

// ---- Command line -----------------------------------------------------------

const char* cmdline() { return g_cmdline; }

// Called first thing at CPL3, before anything writes to low memory: copies
// what the boot protocol left there into the guest's own globals.
void capture_boot_info() {
  g_boot = BootInfo{};
  g_cmdline[0] = '\0';
  if (boot_start_info == 0) return;
  if (mmio_read<u32>(boot_start_info) != 0x336ec578) return;  // hvm_start_info magic
  g_boot.start_info = boot_start_info;
  const u8* si = reinterpret_cast<const u8*>(boot_start_info);
  u64 cmd;
  memcpy(&cmd, si + 24, 8);
  memcpy(&g_boot.rsdp, si + 32, 8);
  if (mmio_read<u32>(boot_start_info + 4) >= 1) {  // version 1 adds the memory map
    memcpy(&g_boot.memmap, si + 40, 8);
    memcpy(&g_boot.memmap_entries, si + 48, 4);
  }
  if (cmd != 0 && cmd < 0x100000000ull) {
    const char* src = reinterpret_cast<const char*>(cmd);
    usize n = 0;
    while (n + 1 < kCmdlineMax && src[n] != '\0') {
      g_cmdline[n] = src[n];
      ++n;
    }
    g_cmdline[n] = '\0';
  }
}

bool cmdline_get(const char* key, const char** val, usize* len) {
  const usize klen = strlen(key);
  const char* p = g_cmdline;
  bool found = false;
  while (*p) {
    while (*p == ' ' || *p == '\t' || *p == '\n') ++p;
    const char* tok = p;
    while (*p && *p != ' ' && *p != '\t' && *p != '\n') ++p;
    const usize tlen = static_cast<usize>(p - tok);
    if (tlen > klen && tok[klen] == '=' && mem_eq(tok, key, klen)) {
      *val = tok + klen + 1;  // the last occurrence wins
      *len = tlen - klen - 1;
      found = true;
    }
  }
  return found;
}

bool parse_u64(const char* s, usize n, u64* out) {
  if (n == 0) return false;
  u64 v = 0;
  if (n > 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
    for (usize i = 2; i < n; ++i) {
      const char c = s[i];
      u64 d;
      if (c >= '0' && c <= '9') d = static_cast<u64>(c - '0');
      else if (c >= 'a' && c <= 'f') d = static_cast<u64>(c - 'a' + 10);
      else if (c >= 'A' && c <= 'F') d = static_cast<u64>(c - 'A' + 10);
      else return false;
      v = v * 16 + d;
    }
  } else {
    for (usize i = 0; i < n; ++i) {
      if (s[i] < '0' || s[i] > '9') return false;
      v = v * 10 + static_cast<u64>(s[i] - '0');
    }
  }
  *out = v;
  return true;
}

u64 cmdline_u64(const char* key, u64 def) {
  const char* v;
  usize n;
  u64 out;
  if (cmdline_get(key, &v, &n) && parse_u64(v, n, &out)) return out;
  return def;
}

u8* arena_alloc(Arena* a, u64 bytes) {
  const u64 base = a->next != 0 ? a->next : a->base;
  const u64 end = base + ((bytes + 4095) & ~4095ull);
  if (g_boot.memmap != 0 && g_boot.memmap_entries != 0) {
    bool ok = false;
    for (u32 i = 0; i < g_boot.memmap_entries && i < 128; ++i) {
      const u8* e = reinterpret_cast<const u8*>(g_boot.memmap + 24ull * i);
      u64 addr, size;
      u32 type;
      memcpy(&addr, e, 8);
      memcpy(&size, e + 8, 8);
      memcpy(&type, e + 16, 4);
      if (type == 1 && addr <= base && addr + size >= end) ok = true;
    }
    if (!ok) {
      print("FAILED: ");
      print(a->owner);
      print(": not enough RAM for the buffers (give the guest more memory)\n");
      exit(1);
    }
  }
  a->next = end;
  return reinterpret_cast<u8*>(base);
}

}  // namespace guest

// ---- Exceptions (runs at CPL0, called from boot.S) -------------------------

extern "C" void exception_report(const ExceptionFrame* f) {
  using namespace guest;
  print("\nEXCEPTION vector=");
  print_dec(f->vector);
  print(" rip=0x");
  print_hex(f->rip);
  print(" err=0x");
  print_hex(f->error);
  print(" cs=0x");
  print_hex(f->cs);
  print(" rsp=0x");
  print_hex(f->rsp);
  if (f->vector == 14) {
    u64 cr2;
    asm volatile("mov %%cr2, %0" : "=r"(cr2));
    print(" cr2=0x");
    print_hex(cr2);
  }
  putc('\n');
  outb(kDebugExitPort, 0x7f);
  for (;;) asm volatile("cli; hlt");
}

// ---- The functions the compiler may call even in freestanding code ---------

extern "C" void* memcpy(void* dst, const void* src, guest::usize n) {
  void* d = dst;
  asm volatile("rep movsb" : "+D"(d), "+S"(src), "+c"(n) : : "memory");
  return dst;
}

extern "C" void* memmove(void* dst, const void* src, guest::usize n) {
  auto* d = static_cast<guest::u8*>(dst);
  auto* s = static_cast<const guest::u8*>(src);
  if (d <= s || d >= s + n) return memcpy(dst, src, n);
  // Overlapping with dst above src: copy backwards.
  d += n - 1;
  s += n - 1;
  asm volatile("std; rep movsb; cld" : "+D"(d), "+S"(s), "+c"(n) : : "memory");
  return dst;
}

extern "C" void* memset(void* dst, int c, guest::usize n) {
  void* d = dst;
  asm volatile("rep stosb" : "+D"(d), "+c"(n) : "a"(c) : "memory");
  return dst;
}

extern "C" int memcmp(const void* a, const void* b, guest::usize n) {
  auto* x = static_cast<const guest::u8*>(a);
  auto* y = static_cast<const guest::u8*>(b);
  for (guest::usize i = 0; i < n; ++i) {
    if (x[i] != y[i]) return x[i] < y[i] ? -1 : 1;
  }
  return 0;
}
