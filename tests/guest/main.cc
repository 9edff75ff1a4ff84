// flint test guest: the programs, selected with flint.prog=NAME.
#include "tests/guest/acpi.h"
#include "tests/guest/guest.h"

namespace guest {

void demo_disk();  // blk_progs.cc

namespace {

// ---- IDT ------------------------------------------------------------------

void set_gate(int vector, u64 handler) {
  u8* g = idt + vector * 16;
  const u16 lo = static_cast<u16>(handler), sel = 0x08, mid = static_cast<u16>(handler >> 16);
  const u32 hi = static_cast<u32>(handler >> 32), zero = 0;
  memcpy(g + 0, &lo, 2);
  memcpy(g + 2, &sel, 2);
  g[4] = 0;                                     // IST
  g[5] = 0x8e;                                  // present, DPL0, 64-bit interrupt gate
  memcpy(g + 6, &mid, 2);
  memcpy(g + 8, &hi, 4);
  memcpy(g + 12, &zero, 4);
}

// Filled at CPL3: the IDT is ordinary user-accessible memory, and the CPU
// reads it through its linear address (IDTR was loaded at CPL0 during boot).
void fill_idt() {
  const u64 exc = reinterpret_cast<u64>(exc_stubs);
  for (int v = 0; v < 256; ++v) {
    set_gate(v, v < 32 ? exc + 16 * static_cast<u64>(v) : reinterpret_cast<u64>(&irq_stub));
  }
}

// ---- Helpers ----------------------------------------------------------------

// About one second on any plausible TSC (1-5 GHz): only an upper bound for waits.
constexpr u64 kSecondCycles = 3000000000ull;

void print_result(const char* name, u64 iters, u64 total) {
  print("RESULT name=");
  print(name);
  print(" iters=");
  print_dec(iters);
  print(" cycles_per_iter=");
  print_dec(iters ? total / iters : 0);
  print(" total_cycles=");
  print_dec(total);
  putc('\n');
}

void mask_pics() {
  outb(0x21, 0xff);
  outb(0xa1, 0xff);
}

// ---- Programs -----------------------------------------------------------------

[[noreturn]] void prog_hello() {
  print("hello from flint guest\n");
  exit(0);
}

// TSC when boot.S first ran at CPL3, and now. KVM starts a vCPU's TSC near 0
// when it is created, so under flint this is roughly the cost of the
// (emulated) CPL0 boot plus the VMM's time from vCPU creation to KVM_RUN.
[[noreturn]] void prog_boottime() {
  const u64 now = rdtsc();
  print("boot: cpl3_entry_tsc=");
  print_dec(cpl3_entry_tsc);
  print(" main_tsc=");
  print_dec(now);
  putc('\n');
  exit(0);
}

[[noreturn]] void prog_exitcode() { exit(static_cast<u8>(cmdline_u64("flint.code", 0))); }

[[noreturn]] void prog_fault() {
  print("about to fault\n");
  asm volatile("ud2");
  __builtin_unreachable();
}

[[noreturn]] void prog_triplefault() {
  print("about to triple fault\n");
  cpl0_service<kServiceTripleFault>();
  __builtin_unreachable();
}

[[noreturn]] void prog_echo() {
  for (;;) {
    const u8 c = serial_read();
    if (c == 'q') break;
    putc(static_cast<char>(c));
  }
  print("\nbye\n");
  exit(0);
}

[[noreturn]] void prog_idle() {
  print("idle\n");
  mask_pics();  // nothing may interrupt the halt loop
  cpl0_service<kServiceIdle>();
  __builtin_unreachable();
}

[[noreturn]] void prog_reset() {
  print("resetting\n");
  outb(0x64, 0xfe);  // i8042: pulse the reset line
  spin_cycles(kSecondCycles);
  // No i8042 (QEMU microvm has none): the FADT's reset register, if any.
  acpi::Tables t;
  const u8* fadt = acpi::load(&t) ? acpi::find(t, "FACP") : nullptr;
  if (fadt != nullptr && acpi::rd32(fadt + 4) >= 129 && (acpi::rd32(fadt + 112) & (1u << 10))) {
    const acpi::Gas reg = acpi::read_gas(fadt + 116);
    const u8 value = fadt[128];
    print("reset: i8042 did not reset; trying the ACPI reset register\n");
    if (reg.space == 1 && reg.address < 0x10000) outb(static_cast<u16>(reg.address), value);
    else if (reg.space == 0 && reg.address != 0) mmio_write<u8>(reg.address, value);
    spin_cycles(kSecondCycles);
  }
  print("reset failed\n");
  exit(1);
}

[[noreturn]] void prog_poweroff() {
  acpi::Tables t;
  if (!acpi::load(&t)) fail(t.error);
  const u8* fadt = acpi::find(t, "FACP");
  if (fadt == nullptr) fail("no FADT");
  if (acpi::rd32(fadt + 4) < 256) fail("FADT too short for SLEEP_CONTROL_REG");
  const acpi::Gas reg = acpi::read_gas(fadt + 244);
  if (reg.address == 0) fail("FADT has no SLEEP_CONTROL_REG");
  int slp_typ = acpi::s5_sleep_type(t.dsdt);
  if (slp_typ < 0) slp_typ = 5;
  const u8 value = static_cast<u8>(((slp_typ & 7) << 2) | (1 << 5));  // SLP_TYP | SLP_EN
  if (reg.space == 1 && reg.address < 0x10000) {
    outb(static_cast<u16>(reg.address), value);
  } else if (reg.space == 0) {
    mmio_write<u8>(reg.address, value);
  } else {
    fail("SLEEP_CONTROL_REG in an unsupported address space");
  }
  spin_cycles(kSecondCycles);
  print("poweroff failed\n");
  exit(1);
}

// ---- acpi-shutdown: the power button through the GED ------------------------

constexpr u64 kIoapicBase = 0xfec00000;
constexpr u64 kLapicSvr = kLapicBase + 0xf0;
constexpr u64 kLapicEoi = kLapicBase + 0xb0;
constexpr int kGedVector = 0x40;

void ioapic_write(u32 reg, u32 v) {
  mmio_write<u32>(kIoapicBase, reg);         // IOREGSEL
  mmio_write<u32>(kIoapicBase + 0x10, v);    // IOWIN
}

u8 ged_read(const acpi::Ged& g) {
  return g.region_space == 1 ? inb(static_cast<u16>(g.region_addr)) : mmio_read<u8>(g.region_addr);
}

// Waits (halted) for the GED's interrupt, as an OS would, then reads the
// event register the way the DSDT's _EVT does and, on a power-button event,
// powers off like `poweroff`. Everything it uses comes from the tables.
[[noreturn]] void prog_acpi_shutdown() {
  acpi::Tables t;
  if (!acpi::load(&t)) fail(t.error);
  acpi::Ged ged{};
  if (!acpi::find_ged(t.dsdt, &ged)) {
    fail("acpi-shutdown: no GED (ACPI0013) with _EVT, an Interrupt and an OperationRegion");
  }
  if (!acpi::has_power_button(t.dsdt)) fail("acpi-shutdown: no PNP0C0C power button device");
  if (ged.gsi >= 24) fail("acpi-shutdown: the GED's GSI is not an IOAPIC pin");
  if (ged.region_len == 0 || (ged.region_space == 1 && ged.region_addr > 0xffff) ||
      ged.region_space > 1) {
    fail("acpi-shutdown: unusable GED event register");
  }

  // The LAPIC on, the GED's IOAPIC pin to kGedVector on APIC 0 (fixed,
  // physical) with the trigger and polarity the _CRS gives, unmasked.
  mask_pics();
  mmio_write<u32>(kLapicSvr, 0x1ff);
  set_gate(kGedVector, reinterpret_cast<u64>(&irq_hold));
  const u32 redir = 0x10 + 2 * ged.gsi;
  ioapic_write(redir + 1, 0);  // destination APIC ID 0
  ioapic_write(redir, kGedVector | (ged.level ? 1u << 15 : 0) | (ged.active_low ? 1u << 13 : 0));

  print("acpi-shutdown: ready gsi=");
  print_dec(ged.gsi);
  print(ged.level ? " level" : " edge");
  print(ged.active_low ? " low" : " high");
  print(ged.region_space == 1 ? " port=0x" : " mmio=0x");
  print_hex(ged.region_addr);
  putc('\n');

  while (irq_held == 0) cpl0_service<kServiceWaitIrq>();
  // Quiet the source before the EOI, or a level-triggered pin fires again.
  const u8 events = ged_read(ged);
  const u8 after = ged_read(ged);
  mmio_write<u32>(kLapicEoi, 0);
  print("acpi-shutdown: interrupt events=0x");
  print_hex(events);
  print(" then=0x");
  print_hex(after);
  putc('\n');
  if ((events & 1) == 0) fail("acpi-shutdown: an interrupt without a power-button event");
  if (after != 0) fail("acpi-shutdown: reading the event register did not clear it");
  print("acpi-shutdown: power button pressed, powering off\n");
  prog_poweroff();
}

// ---- Benchmarks -------------------------------------------------------------

enum class Bench { kPioUnhandled, kPioHandled, kMmio, kIoeventfd };

inline void bench_op(Bench b) {
  switch (b) {
    case Bench::kPioUnhandled:
      outb(0x5e0, 0);
      break;
    case Bench::kPioHandled:
      outb(0x3ff, 0x5a);
      break;
    case Bench::kMmio:
      mmio_write<u32>(0xf0000000, 0);  // layout::kUnassignedMmio
      break;
    case Bench::kIoeventfd:
      outl(0x5f0, 1);
      break;
  }
}

[[noreturn]] void prog_bench(const char* name, Bench b) {
  const u64 iters = cmdline_u64("flint.iters", 100000);
  for (int i = 0; i < 1000; ++i) bench_op(b);
  const u64 t0 = rdtsc();
  for (u64 i = 0; i < iters; ++i) bench_op(b);
  const u64 t1 = rdtsc();
  print_result(name, iters, t1 - t0);
  exit(0);
}

// ---- demo ---------------------------------------------------------------------

bool g_failed = false;

void check_failed(const char* what) {
  print("FAILED: ");
  print(what);
  putc('\n');
  g_failed = true;
}

// Returns the number of enabled CPUs in the MADT, 0 if unknown.
u32 demo_acpi() {
  acpi::Tables t;
  if (!acpi::load(&t)) {
    check_failed(t.error);
    return 0;
  }
  print("acpi: RSDP ");
  print_n(reinterpret_cast<const char*>(t.root), 4);
  for (u32 i = 0; i < t.count; ++i) {
    putc(' ');
    print_n(reinterpret_cast<const char*>(t.table[i]), 4);
  }
  if (t.dsdt != nullptr) print(" DSDT");
  print(" checksums ok\n");
  if (acpi::find(t, "FACP") == nullptr) check_failed("no FADT");
  if (t.dsdt == nullptr) check_failed("no DSDT");
  const u8* madt = acpi::find(t, "APIC");
  if (madt == nullptr) {
    check_failed("no MADT");
    return 0;
  }
  const u32 cpus = acpi::count_enabled_cpus(madt);
  print("cpus: ");
  print_dec(cpus);
  putc('\n');
  if (cpus == 0) check_failed("MADT lists no enabled CPU");
  return cpus;
}

void demo_uart() {
  constexpr u16 kScratch = kCom1 + 7;
  bool ok = true;
  constexpr u8 kPatterns[] = {0x5a, 0xa5};
  for (u8 pattern : kPatterns) {
    outb(kScratch, pattern);
    if (inb(kScratch) != pattern) ok = false;
  }
  if (ok) print("uart: scratch ok\n");
  else check_failed("uart scratch register");
}

u8 cmos_read(u8 reg) {
  outb(0x70, reg);
  return inb(0x71);
}

u8 from_bcd(u8 v) { return static_cast<u8>((v >> 4) * 10 + (v & 0xf)); }

struct RtcTime {
  u8 sec, min, hour, day, mon, year, century;
  bool operator==(const RtcTime&) const = default;
};

RtcTime rtc_raw() {
  // Wait (bounded) while an update is in progress.
  for (int i = 0; i < 10000 && (cmos_read(0x0a) & 0x80); ++i) cpu_relax();
  return RtcTime{cmos_read(0x00), cmos_read(0x02), cmos_read(0x04), cmos_read(0x07),
                 cmos_read(0x08), cmos_read(0x09), cmos_read(0x32)};
}

void demo_rtc() {
  // No RTC at all (QEMU microvm under KVM has none unless given rtc=on):
  // unassigned ports read 0xff, which status D (only bit 7, VRT, can be set)
  // never does on a real MC146818.
  if (cmos_read(0x0d) == 0xff && cmos_read(0x0a) == 0xff && cmos_read(0x0b) == 0xff) {
    print("rtc: absent (CMOS registers read 0xff), not checked\n");
    return;
  }
  // Two identical reads in a row: no update happened in between.
  RtcTime t = rtc_raw();
  for (int i = 0; i < 5; ++i) {
    const RtcTime again = rtc_raw();
    if (again == t) break;
    t = again;
  }
  const u8 status_b = cmos_read(0x0b);
  const bool bcd = !(status_b & 0x04);
  const bool h24 = status_b & 0x02;
  const bool pm = t.hour & 0x80;
  t.hour &= 0x7f;
  if (bcd) {
    t.sec = from_bcd(t.sec);
    t.min = from_bcd(t.min);
    t.hour = from_bcd(t.hour);
    t.day = from_bcd(t.day);
    t.mon = from_bcd(t.mon);
    t.year = from_bcd(t.year);
    t.century = from_bcd(t.century);
  }
  if (!h24) t.hour = static_cast<u8>(t.hour % 12 + (pm ? 12 : 0));
  const u64 century = (t.century >= 19 && t.century <= 30) ? t.century : 20;
  const u64 year = century * 100 + t.year;
  print("rtc: ");
  print_dec(year);
  putc('-');
  print_dec2(t.mon);
  putc('-');
  print_dec2(t.day);
  putc(' ');
  print_dec2(t.hour);
  putc(':');
  print_dec2(t.min);
  putc(':');
  print_dec2(t.sec);
  putc('\n');
  const bool sane = year >= 2024 && year <= 2099 && t.mon >= 1 && t.mon <= 12 && t.day >= 1 &&
                    t.day <= 31 && t.hour < 24 && t.min < 60 && t.sec < 60;
  if (sane) print("rtc ok\n");
  else check_failed("rtc value out of range");
}

void demo_smp(u32 cpus) {
  if (cpus > 1) {
    const usize n = static_cast<usize>(ap_trampoline_end - ap_trampoline_start);
    memcpy(reinterpret_cast<void*>(kApTrampoline), ap_trampoline_start, n);
    cpl0_service<kServiceStartAps>();  // CPL0: INIT-SIPI-SIPI to all others
    const u64 start = rdtsc();
    while (ap_online < cpus - 1 && rdtsc() - start < 5 * kSecondCycles) cpu_relax();
  }
  const u32 online = 1 + ap_online;
  print("smp: ");
  print_dec(online);
  print(" of ");
  print_dec(cpus);
  print(" cpus online\n");
  if (online != cpus) check_failed("not every CPU came online");
}

[[noreturn]] void prog_demo() {
  print("flint demo guest\n");
  print("cmdline: ");
  print(cmdline());
  putc('\n');
  const u32 cpus = demo_acpi();
  demo_uart();
  demo_rtc();
  if (cpus != 0) demo_smp(cpus);
  demo_disk();
  if (g_failed) exit(1);
  print("all devices OK\n");
  exit(0);
}

}  // namespace

// The virtio-blk programs (blk_progs.cc).
void prog_blk();
void prog_blk_ro();
void prog_blk_mq();
void prog_blk_msix();
void prog_blk_hostile_loop();
void prog_blk_hostile_oob();
void prog_blk_hostile_long();
void prog_blk_hostile_wheader();
void prog_blk_bench();

// The virtio-net programs (net_progs.cc).
void prog_net_dhcp_udp();
void prog_net_static_udp();
void prog_net_tcp();
void prog_net_udp_stream();
void prog_net_hostile();
void prog_net_bench();
void prog_net_filter();

}  // namespace guest

extern "C" void guest_main() {
  using namespace guest;
  capture_boot_info();
  fill_idt();

  const char* prog = "demo";
  usize len = 4;
  cmdline_get("flint.prog", &prog, &len);

  struct Entry {
    const char* name;
    void (*run)();
  };
  static const Entry kPrograms[] = {
      {"hello", prog_hello},
      {"demo", prog_demo},
      {"exitcode", prog_exitcode},
      {"poweroff", prog_poweroff},
      {"acpi-shutdown", prog_acpi_shutdown},
      {"reset", prog_reset},
      {"fault", prog_fault},
      {"triplefault", prog_triplefault},
      {"echo", prog_echo},
      {"idle", prog_idle},
      {"boottime", prog_boottime},
      {"bench-pio-unhandled", [] { prog_bench("bench-pio-unhandled", Bench::kPioUnhandled); }},
      {"bench-pio-handled", [] { prog_bench("bench-pio-handled", Bench::kPioHandled); }},
      {"bench-mmio", [] { prog_bench("bench-mmio", Bench::kMmio); }},
      {"bench-ioeventfd", [] { prog_bench("bench-ioeventfd", Bench::kIoeventfd); }},
      {"blk", prog_blk},
      {"blk-ro", prog_blk_ro},
      {"blk-mq", prog_blk_mq},
      {"blk-msix", prog_blk_msix},
      {"blk-hostile-loop", prog_blk_hostile_loop},
      {"blk-hostile-oob", prog_blk_hostile_oob},
      {"blk-hostile-long", prog_blk_hostile_long},
      {"blk-hostile-wheader", prog_blk_hostile_wheader},
      {"blk-bench", prog_blk_bench},
      {"net-dhcp-udp", prog_net_dhcp_udp},
      {"net-static-udp", prog_net_static_udp},
      {"net-tcp", prog_net_tcp},
      {"net-udp-stream", prog_net_udp_stream},
      {"net-hostile", prog_net_hostile},
      {"net-bench", prog_net_bench},
      {"net-filter", prog_net_filter},
  };
  for (const Entry& e : kPrograms) {
    if (str_eq(prog, len, e.name)) {
      e.run();
      exit(0);
    }
  }
  print("unknown program ");
  print_n(prog, len);
  putc('\n');
  exit(0x7e);
}
