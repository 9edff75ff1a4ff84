// kvm_smoke: minimal self-contained /dev/kvm check, meant to run inside the
// nested TCG guest (see run-in-vm.sh). Build statically:
//   gcc -O2 -static -o kvm_smoke tests/nested/kvm_smoke.c
//
// Test 1: 16-bit real mode. Guest code at 0x1000 writes 'A','B' to port 0x3f8,
//         then N bytes to port 0x80 in a loop, then HLTs. We print the first
//         few exits and time the loop (rough per-exit round-trip latency).
// Test 2: 64-bit long mode with identity-mapped 2 MiB page. Guest writes 'L' to
//         port 0x3f8, loads a 64-bit constant into RAX and HLTs; we check RAX.
// Exit status 0 iff all checks pass.
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define MEM_SIZE (2u << 20)
#define LOOP_COUNT 1000

static int failures;

#define CHECK(cond, ...)                      \
  do {                                        \
    if (!(cond)) {                            \
      fprintf(stderr, "FAIL: " __VA_ARGS__);  \
      fprintf(stderr, " (errno=%d %s)\n", errno, strerror(errno)); \
      failures++;                             \
      return -1;                              \
    }                                         \
  } while (0)

static double now_sec(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static const char *exit_name(uint32_t r) {
  switch (r) {
    case KVM_EXIT_IO: return "IO";
    case KVM_EXIT_HLT: return "HLT";
    case KVM_EXIT_MMIO: return "MMIO";
    case KVM_EXIT_SHUTDOWN: return "SHUTDOWN";
    case KVM_EXIT_FAIL_ENTRY: return "FAIL_ENTRY";
    case KVM_EXIT_INTERNAL_ERROR: return "INTERNAL_ERROR";
    default: return "other";
  }
}

struct vm {
  int vm_fd, vcpu_fd;
  uint8_t *mem;
  struct kvm_run *run;
};

static int make_vm(int kvm, struct vm *v) {
  v->vm_fd = ioctl(kvm, KVM_CREATE_VM, 0);
  CHECK(v->vm_fd >= 0, "KVM_CREATE_VM");
  v->mem = mmap(NULL, MEM_SIZE, PROT_READ | PROT_WRITE,
                MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  CHECK(v->mem != MAP_FAILED, "mmap guest memory");
  struct kvm_userspace_memory_region region = {
      .slot = 0,
      .guest_phys_addr = 0,
      .memory_size = MEM_SIZE,
      .userspace_addr = (uint64_t)(uintptr_t)v->mem,
  };
  CHECK(ioctl(v->vm_fd, KVM_SET_USER_MEMORY_REGION, &region) == 0,
        "KVM_SET_USER_MEMORY_REGION");
  v->vcpu_fd = ioctl(v->vm_fd, KVM_CREATE_VCPU, 0);
  CHECK(v->vcpu_fd >= 0, "KVM_CREATE_VCPU");
  int run_size = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
  CHECK(run_size > 0, "KVM_GET_VCPU_MMAP_SIZE");
  v->run = mmap(NULL, run_size, PROT_READ | PROT_WRITE, MAP_SHARED,
                v->vcpu_fd, 0);
  CHECK(v->run != MAP_FAILED, "mmap kvm_run");
  return 0;
}

static int real_mode_test(int kvm) {
  struct vm v;
  if (make_vm(kvm, &v) < 0) return -1;

  static const uint8_t code[] = {
      0xba, 0xf8, 0x03,        // mov dx, 0x3f8
      0xb0, 'A',               // mov al, 'A'
      0xee,                    // out dx, al
      0xb0, 'B',               // mov al, 'B'
      0xee,                    // out dx, al
      0xba, 0x80, 0x00,        // mov dx, 0x80
      0xb9, LOOP_COUNT & 0xff, LOOP_COUNT >> 8,  // mov cx, LOOP_COUNT
      0xee,                    // loop: out dx, al
      0x49,                    // dec cx
      0x75, 0xfc,              // jnz loop
      0xf4,                    // hlt
  };
  memcpy(v.mem + 0x1000, code, sizeof(code));

  struct kvm_sregs sregs;
  CHECK(ioctl(v.vcpu_fd, KVM_GET_SREGS, &sregs) == 0, "KVM_GET_SREGS");
  sregs.cs.base = 0;
  sregs.cs.selector = 0;
  CHECK(ioctl(v.vcpu_fd, KVM_SET_SREGS, &sregs) == 0, "KVM_SET_SREGS");
  struct kvm_regs regs = {.rip = 0x1000, .rflags = 0x2};
  CHECK(ioctl(v.vcpu_fd, KVM_SET_REGS, &regs) == 0, "KVM_SET_REGS");

  char serial[8] = {0};
  int nserial = 0, nloop = 0, nexits = 0;
  double loop_start = 0, loop_end = 0;
  for (;;) {
    double t = now_sec();
    CHECK(ioctl(v.vcpu_fd, KVM_RUN, 0) == 0, "KVM_RUN");
    nexits++;
    struct kvm_run *r = v.run;
    if (r->exit_reason == KVM_EXIT_IO) {
      uint8_t val = *((uint8_t *)r + r->io.data_offset);
      if (r->io.port == 0x3f8) {
        printf("  exit %d: IO port=0x%x dir=%s size=%d value=0x%02x '%c'\n",
               nexits, r->io.port, r->io.direction ? "out" : "in",
               r->io.size, val, val);
        if (nserial < 7) serial[nserial++] = (char)val;
      } else if (r->io.port == 0x80) {
        if (nloop == 0) loop_start = t;  // time from first loop KVM_RUN
        nloop++;
      } else {
        printf("  exit %d: IO unexpected port 0x%x\n", nexits, r->io.port);
      }
      continue;
    }
    loop_end = t;
    printf("  exit %d: %s (%u)\n", nexits, exit_name(r->exit_reason),
           r->exit_reason);
    if (r->exit_reason != KVM_EXIT_HLT) {
      fprintf(stderr, "FAIL: real mode: unexpected exit reason %u\n",
              r->exit_reason);
      failures++;
      return -1;
    }
    break;
  }
  printf("  serial bytes: \"%s\", port-0x80 exits: %d\n", serial, nloop);
  if (strcmp(serial, "AB") != 0 || nloop != LOOP_COUNT) {
    fprintf(stderr, "FAIL: real mode: wrong output\n");
    failures++;
    return -1;
  }
  double per = (loop_end - loop_start) / nloop;
  printf("  %d PIO exits in %.3f ms => %.1f us per exit round trip\n", nloop,
         (loop_end - loop_start) * 1e3, per * 1e6);
  printf("REAL-MODE: PASS (exit_us=%.1f)\n", per * 1e6);
  return 0;
}

static int long_mode_test(int kvm) {
  struct vm v;
  if (make_vm(kvm, &v) < 0) return -1;

  // Page tables: PML4 @0x2000 -> PDPT @0x3000 -> PD @0x4000 (one 2 MiB page).
  uint64_t *pml4 = (uint64_t *)(v.mem + 0x2000);
  uint64_t *pdpt = (uint64_t *)(v.mem + 0x3000);
  uint64_t *pd = (uint64_t *)(v.mem + 0x4000);
  pml4[0] = 0x3000 | 0x3;       // present | writable
  pdpt[0] = 0x4000 | 0x3;
  pd[0] = 0x0 | 0x83;           // present | writable | PS (2 MiB)

  static const uint8_t code[] = {
      0x66, 0xba, 0xf8, 0x03,   // mov dx, 0x3f8
      0xb0, 'L',                // mov al, 'L'
      0xee,                     // out dx, al
      0x48, 0xb8, 0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11,
                                // mov rax, 0x1122334455667788
      0xf4,                     // hlt
  };
  memcpy(v.mem + 0x1000, code, sizeof(code));

  struct kvm_sregs sregs;
  CHECK(ioctl(v.vcpu_fd, KVM_GET_SREGS, &sregs) == 0, "KVM_GET_SREGS");
  struct kvm_segment seg = {
      .base = 0, .limit = 0xffffffff, .selector = 0x8, .type = 11,
      .present = 1, .dpl = 0, .db = 0, .s = 1, .l = 1, .g = 1,
  };
  sregs.cs = seg;
  seg.type = 3;
  seg.selector = 0x10;
  seg.l = 0;
  seg.db = 1;
  sregs.ds = sregs.es = sregs.fs = sregs.gs = sregs.ss = seg;
  sregs.cr3 = 0x2000;
  sregs.cr4 = 1u << 5;                        // PAE
  sregs.cr0 = 0x80000001u | (1u << 4) | (1u << 5);  // PG | PE | ET | NE
  sregs.efer = (1u << 8) | (1u << 10);        // LME | LMA
  CHECK(ioctl(v.vcpu_fd, KVM_SET_SREGS, &sregs) == 0, "KVM_SET_SREGS (long)");
  struct kvm_regs regs = {.rip = 0x1000, .rflags = 0x2, .rsp = 0x8000};
  CHECK(ioctl(v.vcpu_fd, KVM_SET_REGS, &regs) == 0, "KVM_SET_REGS (long)");

  int got_l = 0;
  for (int i = 0; i < 10; i++) {
    CHECK(ioctl(v.vcpu_fd, KVM_RUN, 0) == 0, "KVM_RUN (long)");
    struct kvm_run *r = v.run;
    if (r->exit_reason == KVM_EXIT_IO && r->io.port == 0x3f8) {
      uint8_t val = *((uint8_t *)r + r->io.data_offset);
      printf("  exit: IO port=0x3f8 value '%c'\n", val);
      got_l = (val == 'L');
      continue;
    }
    printf("  exit: %s (%u)\n", exit_name(r->exit_reason), r->exit_reason);
    if (r->exit_reason == KVM_EXIT_HLT) {
      CHECK(ioctl(v.vcpu_fd, KVM_GET_REGS, &regs) == 0, "KVM_GET_REGS");
      printf("  rax=0x%llx rip=0x%llx\n", (unsigned long long)regs.rax,
             (unsigned long long)regs.rip);
      if (got_l && regs.rax == 0x1122334455667788ull) {
        printf("LONG-MODE: PASS\n");
        return 0;
      }
    }
    break;
  }
  fprintf(stderr, "FAIL: long mode\n");
  failures++;
  return -1;
}

int main(void) {
  setvbuf(stdout, NULL, _IONBF, 0);
  int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
  if (kvm < 0) {
    perror("open /dev/kvm");
    return 2;
  }
  int api = ioctl(kvm, KVM_GET_API_VERSION, 0);
  printf("KVM_GET_API_VERSION = %d\n", api);
  if (api != KVM_API_VERSION) {
    fprintf(stderr, "FAIL: unexpected API version\n");
    return 1;
  }
  printf("real-mode test:\n");
  real_mode_test(kvm);
  printf("long-mode test:\n");
  long_mode_test(kvm);
  printf("kvm_smoke: %s\n", failures ? "FAILED" : "ALL PASS");
  return failures ? 1 : 0;
}
