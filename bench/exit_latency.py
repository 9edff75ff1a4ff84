#!/usr/bin/env python3
"""Exit latency, flint beside QEMU, on the same guest image in one run.

For each guest bench program it runs flint and QEMU (microvm) at two
iteration counts and reports:
  - guest-measured cycles per exit (rdtsc at CPL3, printed by the guest),
  - host-measured ns per exit: (wall(N2) - wall(N1)) / (N2 - N1), which
    cancels start-up cost,
  - with --callgrind, userspace instructions per exit: the difference of
    callgrind's instruction totals between the two runs over N2 - N1.
Then flint's start-up time to the first KVM_RUN and its memory overhead.

Usage: bench/exit_latency.py [--build build] [--iters 20000] [--callgrind]
                             [--flint PATH] [--guest PATH]
Needs /dev/kvm; prints why and exits 2 without it.
"""
import argparse
import os
import re
import shutil
import subprocess
import sys
import time

PROGRAMS = [
    ("bench-pio-unhandled", "port write, unhandled port"),
    ("bench-pio-handled", "port write, device in flint (UART scratch)"),
    ("bench-mmio", "MMIO write, unhandled address"),
    ("bench-ioeventfd", "port write bound to an ioeventfd (in-kernel)"),
]
SINK_PORT = 0x5F0


FLINT = None  # set from --flint / --build
GUEST = None


def flint_cmd(build, prog, iters):
    return [FLINT, "run", "--no-reboot", "--memory", "64M",
            "--ioeventfd-sink", str(SINK_PORT), "--stats", "--cmdline",
            f"flint.prog={prog} flint.iters={iters}"]


def qemu_cmd(build, prog, iters):
    return ["qemu-system-x86_64", "-M", "microvm,accel=kvm,rtc=on", "-cpu", "host,-arch-capabilities",
            "-m", "64", "-nodefaults", "-no-user-config", "-nographic", "-serial", "stdio",
            "-kernel", GUEST,
            "-append", f"flint.prog={prog} flint.iters={iters}",
            "-device", "isa-debug-exit,iobase=0xf4", "-no-reboot"]


def run(cmd, callgrind=False):
    if callgrind:
        cmd = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null"] + cmd
    t0 = time.monotonic()
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=600, errors="replace")
    wall = time.monotonic() - t0
    m = re.search(r"RESULT name=\S+ .*cycles_per_iter=(\d+)", p.stdout)
    ir = re.search(r"Collected\s*:\s*(\d+)", p.stderr)
    return {
        "wall": wall,
        "cycles": int(m.group(1)) if m else None,
        "ir": int(ir.group(1)) if ir else None,
        "out": p.stdout,
        "err": p.stderr,
    }


def per_exit(a, b, key, n1, n2):
    if a[key] is None or b[key] is None:
        return None
    return (b[key] - a[key]) / (n2 - n1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default="build")
    ap.add_argument("--iters", type=int, default=20000)
    ap.add_argument("--callgrind", action="store_true")
    ap.add_argument("--flint", help="flint binary (default BUILD/vmm/flint)")
    ap.add_argument("--guest", help="test guest ELF (default BUILD/tests/guest/flint-guest.elf)")
    args = ap.parse_args()
    global FLINT, GUEST
    FLINT = args.flint or os.path.join(args.build, "vmm/flint")
    GUEST = args.guest or os.path.join(args.build, "tests/guest/flint-guest.elf")
    try:
        os.close(os.open("/dev/kvm", os.O_RDWR))
    except OSError as e:
        print(f"exit_latency: /dev/kvm unusable ({e.strerror}); nothing to measure on this host")
        return 2
    have_qemu = shutil.which("qemu-system-x86_64") is not None
    n1, n2 = args.iters, args.iters * 5
    rows = []
    for prog, what in PROGRAMS:
        row = {"prog": prog, "what": what}
        for vmm, mk in (("flint", flint_cmd), ("qemu", qemu_cmd)):
            if vmm == "qemu" and (not have_qemu or prog == "bench-ioeventfd"):
                continue  # QEMU has no generic ioeventfd sink port
            a, b = run(mk(args.build, prog, n1)), run(mk(args.build, prog, n2))
            row[vmm + "_cycles"] = b["cycles"]
            row[vmm + "_ns"] = None if per_exit(a, b, "wall", n1, n2) is None else per_exit(a, b, "wall", n1, n2) * 1e9
            if args.callgrind:
                ca, cb = run(mk(args.build, prog, n1 // 10), True), run(mk(args.build, prog, n2 // 10), True)
                row[vmm + "_ir"] = per_exit(ca, cb, "ir", n1 // 10, n2 // 10)
        rows.append(row)

    def fmt(v, spec="{:.0f}"):
        return "-" if v is None else spec.format(v)

    print(f"{'guest program':<22} {'flint cyc':>10} {'qemu cyc':>10} {'flint ns':>9} {'qemu ns':>9} "
          f"{'ratio':>6} {'flint Ir':>9} {'qemu Ir':>9}")
    for r in rows:
        ratio = None
        if r.get("flint_ns") and r.get("qemu_ns"):
            ratio = r["qemu_ns"] / r["flint_ns"]
        print(f"{r['prog']:<22} {fmt(r.get('flint_cycles')):>10} {fmt(r.get('qemu_cycles')):>10} "
              f"{fmt(r.get('flint_ns')):>9} {fmt(r.get('qemu_ns')):>9} {fmt(ratio, '{:.2f}'):>6} "
              f"{fmt(r.get('flint_ir')):>9} {fmt(r.get('qemu_ir')):>9}")
    print("ratio = QEMU ns per exit / flint ns per exit (higher is better for flint)")

    s = run([FLINT, "run", "--no-reboot", "--memory", "256M",
             "--stats", "--cmdline", "flint.prog=hello"])
    for line in s["err"].splitlines():
        if line.startswith(("startup:", "memory:")):
            print("flint 256 MiB guest:", line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
