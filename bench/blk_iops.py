#!/usr/bin/env python3
"""virtio-blk IOPS, flint beside QEMU, on the same guest image and disk image.

The test guest's blk-bench program keeps a queue depth of requests in flight
(polling, no interrupts). For each case it runs flint and QEMU (microvm,
pcie=on, virtio-blk-pci with aio=io_uring,cache=none; flint with
--disk direct=on --io-engine io_uring) at two op counts and reports:
  - host-measured IOPS and MB/s: (N2 - N1) / (wall(N2) - wall(N1)), which
    cancels start-up cost,
  - guest-measured TSC cycles per request (printed by the guest),
  - with --callgrind, userspace instructions per request: the difference of
    callgrind's instruction totals between two runs over N2 - N1.
The disk is a 256 MiB raw file in the build directory (not /tmp: tmpfs
refuses O_DIRECT), filled with data so reads hit allocated blocks.

Usage: bench/blk_iops.py [--build build] [--ops 4000] [--callgrind]
                         [--flint PATH] [--guest PATH] [--keep-image]
Needs /dev/kvm; prints why and exits 2 without it.
"""
import argparse
import os
import re
import shutil
import subprocess
import sys
import time

# (mode, block size, queue depth, share of --ops: big blocks take longer)
CASES = [
    ("randread", 4096, 1, 1.0),
    ("randread", 4096, 32, 1.0),
    ("randwrite", 4096, 1, 1.0),
    ("randwrite", 4096, 32, 1.0),
    ("seqread", 131072, 8, 0.5),
]
IMAGE_MIB = 256
QEMU_ECAM = "0xe0000000"  # QEMU 7.2 microvm has ECAM there but no MCFG table

FLINT = None  # set from --flint / --build
GUEST = None
IMAGE = None


def guest_args(mode, bs, qd, ops):
    return f"flint.prog=blk-bench flint.mode={mode} flint.bs={bs} flint.qd={qd} flint.ops={ops}"


def flint_cmd(mode, bs, qd, ops):
    return [FLINT, "run", "--no-reboot", "--memory", "128M", "--cmdline",
            guest_args(mode, bs, qd, ops), "--disk", f"path={IMAGE},direct=on",
            "--io-engine", "io_uring"]


def qemu_cmd(mode, bs, qd, ops):
    return ["qemu-system-x86_64", "-M", "microvm,accel=kvm,rtc=on,pcie=on",
            "-cpu", "host,-arch-capabilities", "-m", "128", "-nodefaults", "-no-user-config",
            "-nographic", "-serial", "stdio", "-kernel", GUEST,
            "-append", guest_args(mode, bs, qd, ops) + f" flint.ecam={QEMU_ECAM}",
            "-device", "isa-debug-exit,iobase=0xf4", "-no-reboot",
            "-drive", f"file={IMAGE},if=none,id=d0,format=raw,aio=io_uring,cache=none",
            "-device", "virtio-blk-pci,drive=d0,disable-legacy=on"]


def run(cmd, callgrind=False):
    if callgrind:
        cmd = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null"] + cmd
    t0 = time.monotonic()
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=600, errors="replace")
    wall = time.monotonic() - t0
    m = re.search(r"RESULT name=\S+ bs=\d+ qd=\d+ ops=(\d+) cycles=(\d+)", p.stdout)
    ir = re.search(r"Collected\s*:\s*(\d+)", p.stderr)
    ok = p.returncode == 1 and m is not None  # guest exit(0) is status 1
    if not ok:
        why = (p.stdout + p.stderr).strip().splitlines()
        print(f"  run failed (status {p.returncode}): {cmd[0]} ... "
              f"{why[-1] if why else '(no output)'}", file=sys.stderr)
    return {
        "ok": ok,
        "wall": wall,
        "cycles_per_op": int(m.group(2)) / int(m.group(1)) if m and int(m.group(1)) else None,
        "ir": int(ir.group(1)) if ir else None,
    }


def per_op(a, b, key, n1, n2):
    if not (a["ok"] and b["ok"]) or a[key] is None or b[key] is None:
        return None
    return (b[key] - a[key]) / (n2 - n1)


def make_image(path):
    """A fully allocated image: reads must reach the disk, not a hole."""
    chunk = bytes((i * 131 + 7) & 0xff for i in range(1 << 20))
    with open(path, "wb") as f:
        for _ in range(IMAGE_MIB):
            f.write(chunk)
        f.flush()
        os.fsync(f.fileno())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default="build")
    ap.add_argument("--ops", type=int, default=4000,
                    help="requests in the shorter run of a 4 KiB case (the longer one: 5x)")
    ap.add_argument("--callgrind", action="store_true")
    ap.add_argument("--flint", help="flint binary (default BUILD/vmm/flint)")
    ap.add_argument("--guest", help="test guest ELF (default BUILD/tests/guest/flint-guest.elf)")
    ap.add_argument("--keep-image", action="store_true", help="leave BUILD/blk-bench.img behind")
    args = ap.parse_args()
    global FLINT, GUEST, IMAGE
    FLINT = args.flint or os.path.join(args.build, "vmm/flint")
    GUEST = args.guest or os.path.join(args.build, "tests/guest/flint-guest.elf")
    IMAGE = os.path.abspath(os.path.join(args.build, "blk-bench.img"))
    try:
        os.close(os.open("/dev/kvm", os.O_RDWR))
    except OSError as e:
        print(f"blk_iops: /dev/kvm unusable ({e.strerror}); nothing to measure on this host")
        return 2
    have_qemu = shutil.which("qemu-system-x86_64") is not None
    if args.callgrind and shutil.which("valgrind") is None:
        print("blk_iops: --callgrind needs valgrind")
        return 2
    make_image(IMAGE)

    rows = []
    try:
        for mode, bs, qd, share in CASES:
            n1 = max(int(args.ops * share), 2 * qd)
            n2 = 5 * n1
            row = {"case": f"{mode} {bs // 1024}K qd{qd}", "bs": bs}
            for vmm, mk in (("flint", flint_cmd), ("qemu", qemu_cmd)):
                if vmm == "qemu" and not have_qemu:
                    continue
                a, b = run(mk(mode, bs, qd, n1)), run(mk(mode, bs, qd, n2))
                dt = per_op(a, b, "wall", n1, n2)
                row[vmm + "_iops"] = 1 / dt if dt else None
                row[vmm + "_cyc"] = b["cycles_per_op"] if b["ok"] else None
                if args.callgrind:
                    c1, c2 = max(n1 // 10, 2 * qd), max(n2 // 10, 4 * qd)
                    ca, cb = run(mk(mode, bs, qd, c1), True), run(mk(mode, bs, qd, c2), True)
                    row[vmm + "_ir"] = per_op(ca, cb, "ir", c1, c2)
            rows.append(row)
    finally:
        if not args.keep_image:
            os.unlink(IMAGE)

    def fmt(v, spec="{:.0f}"):
        return "-" if v is None else spec.format(v)

    print(f"{'case':<20} {'flint IOPS':>10} {'qemu IOPS':>10} {'ratio':>6} {'flint MB/s':>10} "
          f"{'qemu MB/s':>10} {'flint cyc':>10} {'qemu cyc':>10} {'flint Ir':>9} {'qemu Ir':>9}")
    for r in rows:
        fi, qi = r.get("flint_iops"), r.get("qemu_iops")
        ratio = fi / qi if fi and qi else None
        mbs = lambda iops: None if iops is None else iops * r["bs"] / 1e6
        print(f"{r['case']:<20} {fmt(fi):>10} {fmt(qi):>10} {fmt(ratio, '{:.2f}'):>6} "
              f"{fmt(mbs(fi), '{:.1f}'):>10} {fmt(mbs(qi), '{:.1f}'):>10} "
              f"{fmt(r.get('flint_cyc')):>10} {fmt(r.get('qemu_cyc')):>10} "
              f"{fmt(r.get('flint_ir')):>9} {fmt(r.get('qemu_ir')):>9}")
    print("ratio = flint IOPS / QEMU IOPS (higher is better for flint); cyc = guest TSC cycles "
          "per request (qd > 1 overlaps them); Ir = userspace instructions per request")
    return 0


if __name__ == "__main__":
    sys.exit(main())
