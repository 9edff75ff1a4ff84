#!/usr/bin/env python3
"""virtio-net UDP throughput, flint beside QEMU, through the same passt.

The test guest's net-bench program (tests/guest/README.md) either sends
datagrams as fast as its transmit queue takes them (tx: guest -> host) or
counts the datagrams the host floods at it (rx: host -> guest, through a
port passt forwards with -u). For each direction and payload size (64 and
1400 bytes) it runs flint (--net passt) and QEMU 7.2 (microvm, pcie=on,
virtio-net-pci on -netdev stream to a passt this script starts) and reports:
  - host-measured packets/s and Gbit/s of UDP payload:
      tx: the host sink's count over the time from its first to its last
          datagram (start-up is outside that window);
      rx: (N2 - N1) / (wall(N2) - wall(N1)) over two runs, each timed from
          the guest's "net-bench: ready" line to its RESULT line, so start-up
          cancels; the flood is BUILD/bench/udp_flood (64 datagrams per
          sendmmsg);
  - rx: host CPU time per datagram of the VMM's threads other than the
    vCPU, and of passt (/proc, the same two-run difference);
  - guest TSC cycles per packet (printed by the guest);
  - tx loss (datagrams the guest sent that the host never saw);
  - with --callgrind, userspace instructions per packet of the VMM process
    (passt not included): the difference of callgrind's totals between two
    runs over the difference of their packet counts.
With --tap (root, /dev/net/tun) the same is measured over a TAP device
bridged to a veth pair whose peer sits in a network namespace with the
host-side sink or flood (QEMU uses its own tap backend with vnet_hdr).

Usage: bench/net_udp.py [--build build] [--packets 20000] [--callgrind]
                        [--tap] [--flint PATH] [--guest PATH] [--modes tx,rx]
                        [--sizes 64,1400] [--vmms flint,qemu] [--repeat N]
                        [--rx-rates 150000,0] [--pin]
With --repeat N each case runs N times, the VMMs alternating run by run;
the table shows medians and the range of the per-pair ratios. With --pin the
rx flood runs on the last CPU and the VMM's threads (as they are when the
guest is ready) and passt on the others: on a 2-CPU host that is one CPU for
the guest's polling vCPU, the VMM's I/O thread and passt together.
NET_UDP_WRAP="strace -c -f -o FILE" (or another tool) runs each VMM under
that command, for profiling; it is ignored with --callgrind.
Needs /dev/kvm and passt; prints why and exits 2 without them. The numbers
are for comparing the two VMMs in one run on one machine, never absolute.
"""
import argparse
import ctypes
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

SIZES = (64, 1400)
MAC = "52:54:00:12:34:56"
QEMU_ECAM = "0xe0000000"  # QEMU 7.2 microvm has ECAM there but no MCFG table
GUEST_IP, PEER_IP = "10.0.0.2", "10.0.0.1"

FLINT = None  # set from --flint / --build
FLOOD = None  # BUILD/bench/udp_flood
PIN = False  # --pin
RX_RATE = 0  # the rx case being measured (--rx-rates); 0: no pacing
GUEST = None


# ---- host side: sink and flood --------------------------------------------------

class Sink:
    """Counts datagrams on a UDP socket, with the times of the first and last."""

    def __init__(self, sock):
        self.sock = sock
        self.count = 0
        self.first = self.last = None
        self.quit = False
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self):
        self.sock.settimeout(0.1)
        while not self.quit:
            try:
                self.sock.recv(65536)
            except socket.timeout:
                continue
            now = time.monotonic()
            if self.first is None:
                self.first = now
            self.last = now
            self.count += 1

    def reset(self):
        self.count, self.first, self.last = 0, None, None

    def settle(self):
        """Waits until nothing arrived for 0.3 s."""
        while True:
            seen = self.count
            time.sleep(0.3)
            if self.count == seen:
                return

    def close(self):
        self.quit = True
        self.thread.join()
        self.sock.close()


class Flood:
    """Floods addr with `size`-byte datagrams until stopped: BUILD/bench/udp_flood
    (64 per sendmmsg), inside network namespace `netns` and bound to `bind`
    when given."""

    def __init__(self, addr, size, netns=None, bind=None):
        cmd = [FLOOD, "--rate", str(RX_RATE)]
        if netns:
            cmd += ["--netns", f"/var/run/netns/{netns}"]
        if bind:
            cmd += ["--bind", bind]
        self.proc = subprocess.Popen(cmd + [addr[0], str(addr[1]), str(size)],
                                     stdout=subprocess.DEVNULL)

    def stop(self):
        self.proc.terminate()
        self.proc.wait()


def setns(fd):
    """setns(fd, CLONE_NEWNET) for this thread (os.setns needs Python 3.12)."""
    if ctypes.CDLL(None, use_errno=True).setns(fd, 0x40000000) != 0:
        raise OSError(ctypes.get_errno(), "setns")


def udp_socket(addr, netns=None):
    """A UDP socket bound to addr, created inside `netns` when given."""
    if netns is None:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    else:
        here = os.open("/proc/self/ns/net", os.O_RDONLY)
        there = os.open(f"/var/run/netns/{netns}", os.O_RDONLY)
        try:
            setns(there)
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        finally:
            setns(here)
            os.close(here)
            os.close(there)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    s.bind(addr)
    return s


def free_udp_port():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- TAP lab --------------------------------------------------------------------

class TapLab:
    """Namespace with PEER_IP on a veth end; the other end and a TAP on a bridge."""

    def __init__(self):
        i = os.getpid()
        self.ns, self.tap = f"fbns{i}", f"fbtap{i}"
        self.veth, self.peer, self.br = f"fbve{i}", f"fbvp{i}", f"fbbr{i}"
        self.cleanup()
        try:
            self._build()
        except subprocess.CalledProcessError as e:
            self.cleanup()
            raise RuntimeError(f"TAP set-up failed: ip {' '.join(e.cmd[1:])}: "
                               f"{e.stderr.decode(errors='replace').strip()}") from e

    def _build(self):
        for cmd in ([["netns", "add", self.ns],
                     ["link", "add", self.veth, "type", "veth", "peer", "name", self.peer],
                     ["link", "set", self.peer, "netns", self.ns],
                     ["-n", self.ns, "addr", "add", PEER_IP + "/24", "dev", self.peer],
                     ["-n", self.ns, "link", "set", self.peer, "up"],
                     ["-n", self.ns, "link", "set", "lo", "up"],
                     ["tuntap", "add", "dev", self.tap, "mode", "tap"],
                     ["link", "add", self.br, "type", "bridge"],
                     ["link", "set", self.veth, "master", self.br],
                     ["link", "set", self.tap, "master", self.br]] +
                    [["link", "set", d, "up"] for d in (self.br, self.veth, self.tap)]):
            subprocess.run(["ip"] + cmd, check=True, capture_output=True)

    def cleanup(self):
        for dev in (self.br, self.tap, self.veth):
            subprocess.run(["ip", "link", "del", dev], capture_output=True)
        subprocess.run(["ip", "netns", "del", self.ns], capture_output=True)


# ---- running the guest -------------------------------------------------------------

class Passt:
    """passt for QEMU: -f -q -1 -s DIR/passt.sock in a mode-1777 directory."""

    def __init__(self, extra):
        self.dir = tempfile.mkdtemp(prefix="flint-net-bench-")
        os.chmod(self.dir, 0o1777)
        self.sock = os.path.join(self.dir, "passt.sock")
        self.proc = subprocess.Popen(["passt", "-f", "-q", "-1", "-s", self.sock] + extra,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(250):
            if os.path.exists(self.sock) or self.proc.poll() is not None:
                break
            time.sleep(0.02)

    def close(self):
        self.proc.kill()
        self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def guest_args(mode, size, packets, port, tap):
    a = (f"flint.prog=net-bench flint.mode={mode} flint.size={size} flint.packets={packets} "
         f"flint.port={port}")
    return a + (f" flint.ip={GUEST_IP} flint.peer={PEER_IP}" if tap else "")


def vmm_cmd(vmm, args, tap, fwd_port, passt_sock):
    if vmm == "flint":
        net = f"tap={tap}" if tap else "passt"
        net += f",mac={MAC}" + (f",udp={fwd_port}" if fwd_port and not tap else "")
        return [FLINT, "run", "--no-reboot", "--memory", "128M", "--cmdline", args, "--net", net]
    netdev = (f"tap,id=n0,ifname={tap},script=no,downscript=no" if tap else
              f"stream,id=n0,server=off,addr.type=unix,addr.path={passt_sock}")
    return ["qemu-system-x86_64", "-M", "microvm,accel=kvm,rtc=on,pcie=on",
            "-cpu", "host,-arch-capabilities", "-m", "128", "-nodefaults", "-no-user-config",
            "-nographic", "-serial", "stdio", "-kernel", GUEST, "-name", "bench,debug-threads=on",
            "-append", args + f" flint.ecam={QEMU_ECAM}",
            "-device", "isa-debug-exit,iobase=0xf4", "-no-reboot", "-netdev", netdev,
            "-device", f"virtio-net-pci,netdev=n0,disable-legacy=on,romfile=,mac={MAC}"]


VCPU_THREAD = re.compile(r"^(flint-vcpu\d+|CPU \d+/KVM)$")


def cpu_seconds(pid, tid=None):
    """Time on a CPU of a process's main thread (or one of its threads), in
    seconds, from schedstat (nanoseconds; utime/stime tick at 10 ms); 0 once
    it is gone."""
    path = f"/proc/{pid}/schedstat" if tid is None else f"/proc/{pid}/task/{tid}/schedstat"
    try:
        with open(path) as f:
            return int(f.read().split()[0]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0


def vmm_threads(pid):
    """The VMM's threads as (tid, name), and its child processes (flint's
    passt); None once it is gone."""
    threads, children = [], []
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return None
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                threads.append((tid, f.read().strip()))
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                children += [int(c) for c in f.read().split()]
        except OSError:
            continue
    return threads, children


def cpu_snapshot(pid, passt_pid=None):
    """CPU seconds so far: the VMM's threads other than vCPUs ("io"), and passt
    (flint's child, or the one started for QEMU)."""
    found = vmm_threads(pid)
    if found is None:
        return None
    threads, children = found
    io = sum(cpu_seconds(pid, tid) for tid, name in threads if not VCPU_THREAD.match(name))
    # passt is single-threaded: its main thread is all of it.
    passt = sum(cpu_seconds(c) for c in children) + (cpu_seconds(passt_pid) if passt_pid else 0)
    return {"io": io, "passt": passt}


def pin(vmm_pid, passt_pid, flood_pid):
    """--pin: the flood on the last CPU, the VMM's threads and passt on the
    others, so the traffic source never shares a CPU with the path it feeds
    (on a node the sender is another machine)."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return
    rest = set(cpus[:-1])
    threads, children = vmm_threads(vmm_pid) or ([], [])
    pids = [int(tid) for tid, _ in threads] + children + ([passt_pid] if passt_pid else [])
    for pid in pids:
        try:
            os.sched_setaffinity(pid, rest)
        except OSError:
            pass
    try:
        os.sched_setaffinity(flood_pid, {cpus[-1]})
    except OSError:  # the flood already exited (bad address, no netns): the run fails anyway
        pass


def run_once(vmm, mode, size, packets, env, callgrind=False):
    """One guest run. env: port, fwd_port, tap, flood_target, flood_netns, flood_bind."""
    passt = None
    if vmm == "qemu" and not env["tap"]:
        passt = Passt(["-u", str(env["fwd_port"])] if mode == "rx" else [])
    port = env["fwd_port"] if mode == "rx" else env["port"]  # rx: the guest binds it
    cmd = vmm_cmd(vmm, guest_args(mode, size, packets, port, env["tap"]), env["tap"],
                  env["fwd_port"] if mode == "rx" else None, passt.sock if passt else None)
    if callgrind:
        cmd = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null"] + cmd
    elif os.environ.get("NET_UDP_WRAP"):  # e.g. "strace -c -f -o /tmp/s": a profiler around the VMM
        cmd = os.environ["NET_UDP_WRAP"].split() + cmd
    # Under a wrapper the process is the wrapper: no CPU accounting, no pinning.
    direct = not callgrind and not os.environ.get("NET_UDP_WRAP")
    flood = None
    p = None
    t_ready = t_result = None
    cpu = None
    try:
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             errors="replace")
        err = []
        err_thread = threading.Thread(target=lambda: err.append(p.stderr.read()), daemon=True)
        err_thread.start()
        out = []
        for line in p.stdout:
            out.append(line)
            if "net-bench: ready" in line and t_ready is None:
                t_ready = time.monotonic()
                if mode == "rx":
                    flood = Flood(env["flood_target"], size, env["flood_netns"],
                                  env["flood_bind"])
                    if PIN and direct:
                        pin(p.pid, passt.proc.pid if passt else None, flood.proc.pid)
            if line.startswith("RESULT"):
                # The guest is done: the time excludes the VMM's exit (which
                # for flint includes stopping passt; QEMU's passt is stopped
                # by this script afterwards).
                t_result = time.monotonic()
                if direct:  # the VMM and passt are still there
                    cpu = cpu_snapshot(p.pid, passt.proc.pid if passt else None)
        p.wait(timeout=600)
        t_end = time.monotonic()
        err_thread.join()
    finally:
        if flood:
            flood.stop()
        if p is not None and p.poll() is None:  # this script failed or timed out
            p.kill()
            p.wait()
        if passt:
            passt.close()
    stdout, stderr = "".join(out), "".join(err)
    m = re.search(r"RESULT name=net-\w+ size=\d+ packets=(\d+) bytes=\d+ cycles=(\d+)", stdout)
    ir = re.search(r"Collected\s*:\s*(\d+)", stderr)
    ok = p.returncode == 1 and m is not None  # guest exit(0) is status 1
    if not ok:
        why = (stdout + stderr).strip().splitlines()
        print(f"  {vmm} {mode} {size}: run failed (status {p.returncode}): "
              f"{why[-1] if why else '(no output)'}", file=sys.stderr)
    n = int(m.group(1)) if m else 0
    return {
        "ok": ok,
        "packets": n,
        "wall": (t_result or t_end) - t_ready if t_ready else None,
        "cycles_per_packet": int(m.group(2)) / n if m and n else None,
        "ir": int(ir.group(1)) if ir else None,
        "cpu": cpu,
    }


def measure(vmm, mode, size, n1, env, callgrind):
    row = {}
    sink = env["sink"]
    if mode == "tx":
        sink.reset()
        r = run_once(vmm, mode, size, n1, env)
        sink.settle()
        if r["ok"] and sink.count > 1 and sink.last > sink.first:
            row["pps"] = (sink.count - 1) / (sink.last - sink.first)
            row["loss"] = 1 - sink.count / n1
        row["cyc"] = r["cycles_per_packet"]
    else:
        n2 = 4 * n1
        a, b = run_once(vmm, mode, size, n1, env), run_once(vmm, mode, size, n2, env)
        if a["ok"] and b["ok"] and b["wall"] - a["wall"] > 0:
            row["pps"] = (b["packets"] - a["packets"]) / (b["wall"] - a["wall"])
        row["cyc"] = b["cycles_per_packet"]
        if a["ok"] and b["ok"] and a["cpu"] and b["cpu"] and b["packets"] > a["packets"]:
            # Host CPU per datagram, start-up cancelled like pps: the VMM's
            # threads that move frames (not the polling vCPU) and passt.
            for k in ("io", "passt"):
                row[f"{k}_us"] = 1e6 * (b["cpu"][k] - a["cpu"][k]) / (b["packets"] - a["packets"])
    if callgrind:
        c1, c2 = max(n1 // 20, 200), max(n1 // 4, 1000)
        ca, cb = (run_once(vmm, mode, size, c1, env, True),
                  run_once(vmm, mode, size, c2, env, True))
        if ca["ok"] and cb["ok"] and ca["ir"] and cb["ir"] and cb["packets"] > ca["packets"]:
            row["ir"] = (cb["ir"] - ca["ir"]) / (cb["packets"] - ca["packets"])
    return row


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default="build")
    ap.add_argument("--packets", type=int, default=20000,
                    help="datagrams per tx run, and in the shorter rx run (the longer: 4x)")
    ap.add_argument("--callgrind", action="store_true")
    ap.add_argument("--tap", action="store_true", help="also measure over a TAP device (root)")
    ap.add_argument("--flint", help="flint binary (default BUILD/vmm/flint)")
    ap.add_argument("--guest", help="test guest ELF (default BUILD/tests/guest/flint-guest.elf)")
    ap.add_argument("--modes", default="tx,rx", help="directions: tx (guest->host), rx, or both")
    ap.add_argument("--sizes", default=",".join(str(s) for s in SIZES),
                    help="payload sizes in bytes, comma-separated")
    ap.add_argument("--rx-rates", default="150000,0",
                    help="datagrams/s the host offers in rx runs, comma-separated; "
                         "0: as fast as it can")
    ap.add_argument("--pin", action="store_true",
                    help="rx: the flood on the last CPU, the VMM and passt on the others")
    ap.add_argument("--repeat", type=int, default=1,
                    help="runs per case and VMM, alternating; medians are printed")
    ap.add_argument("--vmms", default="flint,qemu", help="VMMs to measure (QEMU when installed)")
    args = ap.parse_args()
    modes = [m for m in args.modes.split(",") if m]
    sizes = [int(s) for s in args.sizes.split(",") if s]
    if any(m not in ("tx", "rx") for m in modes) or any(not 16 <= s <= 1472 for s in sizes):
        print("net_udp: --modes takes tx,rx and --sizes 16..1472")
        return 2
    try:
        rx_rates = [int(r) for r in args.rx_rates.split(",") if r]
    except ValueError:
        rx_rates = []
    if not rx_rates or any(r < 0 for r in rx_rates):
        print("net_udp: --rx-rates takes datagrams/s >= 0, comma-separated")
        return 2
    global FLINT, GUEST, FLOOD, RX_RATE, PIN
    FLINT = args.flint or os.path.join(args.build, "vmm/flint")
    GUEST = args.guest or os.path.join(args.build, "tests/guest/flint-guest.elf")
    FLOOD = os.path.join(args.build, "bench/udp_flood")
    PIN = args.pin
    if not os.access(FLOOD, os.X_OK):
        print(f"net_udp: {FLOOD} missing (build the project first)")
        return 2
    try:
        os.close(os.open("/dev/kvm", os.O_RDWR))
    except OSError as e:
        print(f"net_udp: /dev/kvm unusable ({e.strerror}); nothing to measure on this host")
        return 2
    if shutil.which("passt") is None:
        print("net_udp: passt missing (apt-get install passt)")
        return 2
    if args.callgrind and shutil.which("valgrind") is None:
        print("net_udp: --callgrind needs valgrind")
        return 2
    wanted = [v for v in args.vmms.split(",") if v]
    if not wanted or any(v not in ("flint", "qemu") for v in wanted):
        print("net_udp: --vmms takes flint, qemu or both")
        return 2
    vmms = [v for v in wanted if v == "flint" or shutil.which("qemu-system-x86_64")]

    # Backends: passt always; TAP when asked. Each has a sink for tx and a
    # flood target for rx.
    backends = []
    lab = None
    rows = []
    try:
        port = free_udp_port()
        sink = Sink(udp_socket(("127.0.0.1", port)))
        fwd = free_udp_port()
        backends.append(("passt", {"port": port, "fwd_port": fwd, "tap": None, "sink": sink,
                                   "flood_target": ("127.0.0.1", fwd),
                                   "flood_netns": None, "flood_bind": None}))
        if args.tap:
            if os.geteuid() != 0 or not os.access("/dev/net/tun", os.R_OK | os.W_OK):
                print("net_udp: --tap needs root and /dev/net/tun; measuring passt only")
            else:
                lab = TapLab()
                tap_sink = Sink(udp_socket((PEER_IP, 0), lab.ns))
                tport = tap_sink.sock.getsockname()[1]
                backends.append(("tap", {"port": tport, "fwd_port": tport, "tap": lab.tap,
                                         "sink": tap_sink, "flood_target": (GUEST_IP, tport),
                                         "flood_netns": lab.ns, "flood_bind": PEER_IP}))
        for backend, env in backends:
            for mode, size, rate in [(m, z, r) for m in modes for z in sizes
                                     for r in (rx_rates if m == "rx" else [None])]:
                RX_RATE = rate or 0
                offered = "" if rate is None else f" @{rate // 1000}k" if rate else " @max"
                row = {"case": f"{backend} {mode} {size}B{offered}", "size": size}
                # VMMs alternate run by run, so a slow spell of the
                # machine hits both; each column is the median. Callgrind
                # (deterministic) once per case: the first offered rate.
                cg = args.callgrind and rate in (None, rx_rates[0])
                runs = {vmm: [] for vmm in vmms}
                for i in range(args.repeat):
                    for vmm in vmms:
                        runs[vmm].append(measure(vmm, mode, size, args.packets, env,
                                                 cg and i == 0))
                for vmm in vmms:
                    for k in ("pps", "loss", "cyc", "ir", "io_us", "passt_us"):
                        vals = [r[k] for r in runs[vmm] if r.get(k) is not None]
                        if vals:
                            row[f"{vmm}_{k}"] = statistics.median(vals)
                pairs = [a["pps"] / b["pps"]
                         for a, b in zip(runs.get("flint", []), runs.get("qemu", []))
                         if a.get("pps") and b.get("pps")]
                if len(pairs) > 1:
                    row["ratio_range"] = (min(pairs), max(pairs))
                rows.append(row)
    finally:
        for _, env in backends:
            env["sink"].close()
        if lab:
            lab.cleanup()

    def fmt(v, spec="{:.0f}"):
        return "-" if v is None else spec.format(v)

    print(f"{'case':<17} {'flint pps':>10} {'qemu pps':>10} {'ratio':>6} {'range':>9} "
          f"{'flint Gb/s':>10} {'qemu Gb/s':>9} {'flint cyc':>9} {'qemu cyc':>9} {'loss f/q':>11} "
          f"{'flint Ir':>9} {'qemu Ir':>9} {'io us f/q':>11} {'passt us f/q':>12}")
    for r in rows:
        fp, qp = r.get("flint_pps"), r.get("qemu_pps")
        ratio = fp / qp if fp and qp else None
        gbs = lambda pps: None if pps is None else pps * r["size"] * 8 / 1e9
        loss = lambda v: "-" if v is None else f"{100 * v:.1f}%"
        us = lambda v: fmt(v, "{:.2f}")
        # "flint/qemu" of one measurement
        both = lambda key, show: show(r.get(f"flint_{key}")) + "/" + show(r.get(f"qemu_{key}"))
        rr = r.get("ratio_range")
        rr = f"{rr[0]:.2f}-{rr[1]:.2f}" if rr else "-"
        print(f"{r['case']:<17} {fmt(fp):>10} {fmt(qp):>10} {fmt(ratio, '{:.2f}'):>6} {rr:>9} "
              f"{fmt(gbs(fp), '{:.3f}'):>10} {fmt(gbs(qp), '{:.3f}'):>9} "
              f"{fmt(r.get('flint_cyc')):>9} {fmt(r.get('qemu_cyc')):>9} "
              f"{both('loss', loss):>11} {fmt(r.get('flint_ir')):>9} {fmt(r.get('qemu_ir')):>9} "
              f"{both('io_us', us):>11} {both('passt_us', us):>12}")
    print("pps = UDP datagrams/s measured on the host (tx: at the sink; rx: two-run difference); "
          "ratio = flint pps / QEMU pps (of the medians with --repeat; range: lowest and highest "
          "ratio of the alternating run pairs); Gb/s = payload only; cyc = guest TSC cycles per "
          "datagram; loss = tx datagrams the host never saw; Ir = VMM userspace instructions "
          "per datagram (callgrind, passt excluded); io us / passt us (rx) = host CPU time "
          "(schedstat) per datagram of the VMM's threads other than the vCPU, and of passt, "
          "two-run difference")
    return 0


if __name__ == "__main__":
    sys.exit(main())
