#!/usr/bin/env python3
"""Scale of the per-node flint-shim: N idle VMs under flint, then under QEMU.

Starts flint-shim in node mode (--node-socket, --state-dir, --pod-root, a
Notify sink served by the bench's own client), and plays virt-handler with
flint_shim_scale (a C++ gRPC client built from the shim's protos):
Node.AddVm(vmNNN) + Cmd.SyncVirtualMachine for each VM, `--concurrency` syncs
in flight. The VMI boots the test guest by kernel boot
(spec.domain.firmware.kernelBoot, kernelArgs "flint.prog=idle": it halts
forever), 1 vCPU, --memory of guest RAM, no disks or NICs.

Reported per backend (flint, then QEMU via the flint.dev/backend annotation):
  - creation rate: VMs / wall seconds from the first AddVm to the last
    successful Sync (the shim answers Sync once the VMM's API or QMP answers);
    every VM is then checked Running through GetDomain,
  - VMM memory per VM beyond guest RAM, from /proc/PID/smaps of each VMM:
      private = Anonymous of all mappings (heap, stacks, copied-on-write
                data: pages no other process can share) minus the
                Anonymous of the guest-RAM mapping (the anonymous mapping
                whose size is exactly the guest memory size),
      pss     = Pss of all mappings minus the guest-RAM mapping's Pss: the
                private part plus this process's share of code pages
                (shared by all VMMs and the shim),
    averaged over the VMs (median beside it),
  - shim memory per VM: (shim Anonymous once the N VMs run - once one
    warm-up VM runs) / N, and the same for its RSS; each backend gets a
    fresh shim (a second phase in the same shim would reuse the heap the
    first one freed).
Then every VM is killed (Cmd.KillVirtualMachine) and removed
(Node.RemoveVm{kill}). Whatever happens, the bench ends every VMM it started:
after the teardown it SIGKILLs each pid still named by a record.json in the
state directory (pid and start time checked, so a reused pid is never hit).

Usage: bench/shim_scale.py [--build build] [--vms 200] [--qemu-vms 50]
                           [--memory 32Mi] [--concurrency 8] [--no-qemu]
                           [--no-notify] [--keep]
Needs /dev/kvm; prints why and exits 2 without it.
"""
import argparse
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time

TARGET_RATE = 20.0          # VMs/s
TARGET_VMM_KIB = 2048       # flint per VM beyond guest RAM
TARGET_SHIM_KIB = 64        # shim per VM, node mode
# Budget per VM for the memory check (all guest RAM touched, plus the VMM).
VMM_BUDGET_MIB = {"flint": 16, "qemu": 96}


def quantity_mib(q):
    m = re.fullmatch(r"(\d+)(Mi|Gi)", q)
    if not m:
        sys.exit(f"shim_scale: --memory {q}: use NMi or NGi")
    return int(m.group(1)) * (1024 if m.group(2) == "Gi" else 1)


def meminfo_kib(key):
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def rollup(pid):
    """smaps_rollup fields in KiB; {} when the process is gone."""
    out = {}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                parts = line.split()
                if len(parts) == 3 and parts[2] == "kB":
                    out[parts[0].rstrip(":")] = int(parts[1])
    except OSError:
        pass
    return out


def vmm_memory(pid, guest_kib):
    """(private KiB, pss KiB, guest-touched KiB) beyond guest RAM, or None."""
    try:
        with open(f"/proc/{pid}/smaps") as f:
            text = f.read()
    except OSError:
        return None
    total = {"Anonymous": 0, "Pss": 0}
    guest = None
    cur = None
    header = re.compile(r"^[0-9a-f]+-[0-9a-f]+ ")
    for line in text.splitlines():
        if header.match(line):
            cur = {"file": len(line.split()) >= 6, "Size": 0, "Anonymous": 0, "Pss": 0, "Rss": 0}
            continue
        parts = line.split()
        if cur is None or len(parts) != 3 or parts[2] != "kB":
            continue
        key = parts[0].rstrip(":")
        if key in ("Size", "Anonymous", "Pss", "Rss"):
            cur[key] = int(parts[1])
        if key in total:
            total[key] += int(parts[1])
        # The guest-RAM mapping: anonymous, exactly the guest size. Keep
        # the one with most resident pages should two match.
        if key == "Rss" and not cur["file"] and cur["Size"] == guest_kib:
            if guest is None or cur["Rss"] > guest["Rss"]:
                guest = cur
    if guest is None:
        return None
    return (total["Anonymous"] - guest["Anonymous"], total["Pss"] - guest["Pss"], guest["Rss"])


def start_time(pid):
    """Field 22 of /proc/PID/stat; None when gone or a zombie (already dead)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return None if fields[0] in ("Z", "X") else int(fields[19])
    except (OSError, IndexError, ValueError):
        return None


class Bench:
    def __init__(self, args):
        self.args = args
        b = args.build
        self.shim_bin = args.shim or os.path.join(b, "k8s-shim/flint-shim")
        self.client = args.client or os.path.join(b, "bench/flint_shim_scale")
        self.flint = os.path.abspath(args.flint or os.path.join(b, "vmm/flint"))
        self.guest = os.path.abspath(args.guest or os.path.join(b, "tests/guest/flint-guest.elf"))
        self.work = tempfile.mkdtemp(prefix="flint-shim-scale-")
        self.pod = os.path.join(self.work, "pod")
        self.sockets = os.path.join(self.work, "sockets")
        self.node_socket = os.path.join(self.work, "node.sock")
        self.notify_socket = os.path.join(self.work, "notify.sock")
        self.shim = None
        self.shim_cmd = None
        self.shim_log = None
        self.state_dirs = []
        self.notify = None
        self.next_index = 0
        self.seen = set()  # (pid, start time) of every VMM listed

    def client_run(self, *argv, timeout=900):
        p = subprocess.run([self.client, *argv], capture_output=True, text=True,
                           timeout=timeout, errors="replace")
        return p.returncode, p.stdout, p.stderr

    def setup(self):
        os.makedirs(self.sockets)
        # The pod's view: the shim reads kernel-boot artifacts under
        # <pod-root>/var/run/kubevirt/container-disks/kernel-boot/.
        kb = os.path.join(self.pod, "var/run/kubevirt/container-disks/kernel-boot")
        os.makedirs(kb)
        shutil.copy(self.guest, os.path.join(kb, "flint-guest.elf"))
        if not self.args.no_notify:
            self.notify = subprocess.Popen([self.client, "notify", "--socket", self.notify_socket],
                                           stdout=subprocess.PIPE, text=True)
            line = self.notify.stdout.readline()
            if not line.startswith("NOTIFY ready"):
                raise RuntimeError(f"the Notify sink did not start: {line!r}")

    def start_shim(self, tag):
        """A fresh shim per backend: its memory growth is then that backend's
        alone (a second phase would reuse heap the first one freed)."""
        state = os.path.join(self.work, "state-" + tag)
        os.makedirs(state)
        self.state_dirs.append(state)
        cmd = [self.shim_bin, "--node-socket", self.node_socket, "--state-dir", state,
               "--pod-root", self.pod, "--flint", self.flint]
        if self.notify is not None:
            cmd += ["--notify-socket", self.notify_socket]
        self.shim_cmd = cmd
        self.shim_log = os.path.join(self.work, f"shim-{tag}.log")
        with open(self.shim_log, "w") as log:
            self.shim = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        deadline = time.monotonic() + 30
        while not os.path.exists(self.node_socket):
            if self.shim.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("flint-shim did not start: " + self.log_tail())
            time.sleep(0.05)

    def stop_shim(self):
        if self.shim is not None and self.shim.poll() is None:
            # The orderly way first; the reaper below catches the rest.
            try:
                self.client_run("teardown", "--node-socket", self.node_socket, timeout=300)
            except (OSError, subprocess.TimeoutExpired):
                pass
            self.shim.send_signal(signal.SIGTERM)
            try:
                self.shim.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.shim.kill()
                self.shim.wait()
        self.shim = None
        try:
            os.unlink(self.node_socket)
        except OSError:
            pass

    def log_tail(self, n=15):
        try:
            with open(self.shim_log) as f:
                return "".join(f.readlines()[-n:])
        except (OSError, TypeError):
            return "(no log)"

    def info(self):
        rc, out, _ = self.client_run("info", "--node-socket", self.node_socket, timeout=180)
        for line in out.splitlines():
            if line.startswith("INFO "):
                return json.loads(line[5:])
        print(f"  GetHypervisorInfo failed: {out.strip()}", file=sys.stderr)
        return None

    def create(self, backend, start, n):
        return self.client_run(
            "create", "--node-socket", self.node_socket, "--sock-dir", self.sockets,
            "--vms", str(n), "--start", str(start), "--backend", backend,
            "--memory", self.args.memory, "--kernel-path", "/boot/flint-guest.elf",
            "--kernel-args", "flint.prog=idle", "--concurrency", str(self.args.concurrency))

    def phase(self, backend, n):
        guest_kib = quantity_mib(self.args.memory) * 1024
        row = {"backend": backend, "n": n}
        self.start_shim(backend)
        try:
            # One warm-up VM first: the shim's one-time costs (gRPC client
            # machinery, backend threads) are then outside the per-VM growth.
            warm = self.next_index
            rc, out, err = self.create(backend, warm, 1)
            if rc != 0:
                raise RuntimeError(f"the warm-up VM failed: {(out + err).strip()[-800:]}")
            base = rollup(self.shim.pid)
            start = warm + 1
            self.next_index = start + n
            rc, out, err = self.create(backend, start, n)
            fails = [l for l in out.splitlines() if l.startswith("FAIL")]
            for l in fails[:5]:
                print("  " + l, file=sys.stderr)
            if len(fails) > 5:
                print(f"  ... {len(fails) - 5} more failures", file=sys.stderr)
            m = re.search(r"^CREATE .*", out, re.M)
            if not m:
                print(f"  create did not finish: {err.strip()[-500:]}", file=sys.stderr)
                return row
            kv = dict(p.split("=", 1) for p in m.group(0).split()[1:])
            row.update(ok=int(kv["ok"]), running=int(kv["running"]), seconds=float(kv["seconds"]),
                       rate=float(kv["rate"]), p50=float(kv["sync_p50_ms"]),
                       pmax=float(kv["sync_max_ms"]))
            # The idle guest halts after a few instructions; memory is read
            # once every VM is Running and the shim has sent its events.
            time.sleep(1)
            after = rollup(self.shim.pid)
            ok = max(row["ok"], 1)
            row["shim_anon"] = (after.get("Anonymous", 0) - base.get("Anonymous", 0)) / ok
            row["shim_rss"] = (after.get("Rss", 0) - base.get("Rss", 0)) / ok
            mems = []
            rc, out, _ = self.client_run("list", "--node-socket", self.node_socket)
            for l in out.splitlines():
                m = re.match(r"VM vm(\d+) backend=\S+ pid=(\d+)", l)
                if not m or int(m.group(2)) == 0:
                    continue
                pid = int(m.group(2))
                self.seen.add((pid, start_time(pid)))
                if start <= int(m.group(1)) < start + n:
                    mm = vmm_memory(pid, guest_kib)
                    if mm:
                        mems.append(mm)
            if mems:
                priv = sorted(x[0] for x in mems)
                pss = sorted(x[1] for x in mems)
                row.update(measured=len(mems), vmm_priv=sum(priv) / len(priv),
                           vmm_priv_med=priv[len(priv) // 2], vmm_pss=sum(pss) / len(pss),
                           guest=sum(x[2] for x in mems) / len(mems))
            t0 = time.monotonic()
            rc, out, _ = self.client_run("teardown", "--node-socket", self.node_socket)
            for l in [l for l in out.splitlines() if l.startswith("FAIL")][:5]:
                print("  " + l, file=sys.stderr)
            m = re.search(r"^TEARDOWN .*", out, re.M)
            row["teardown"] = m.group(0) if m else "teardown did not finish"
            row["teardown_s"] = time.monotonic() - t0
            # Kill returns once the process is gone: none may be left.
            row["left"] = sum(1 for p, st in self.seen if st is not None and start_time(p) == st)
            row["teardown"] += f" vmm_processes_left={row['left']}"
        finally:
            self.stop_shim()
            self.reap_leftovers()
        return row

    def reap_leftovers(self):
        """SIGKILL every VMM a record still names, or the bench saw listed."""
        victims = {(p, st) for p, st in self.seen if st is not None}
        for state in self.state_dirs:
            for root, _, files in os.walk(state):
                if "record.json" not in files:
                    continue
                try:
                    with open(os.path.join(root, "record.json")) as f:
                        rec = json.load(f)
                    victims.add((int(rec.get("pid", 0)),
                                 int(rec.get("pidStartTime", rec.get("pid_start_time", 0)))))
                except (OSError, ValueError):
                    continue
        # A VMM whose start was in flight when its shim died has no record
        # yet: find those by this run's unique work directory in their
        # command line (flint's --config, QEMU's -qmp), VMM binaries only.
        vmm_names = {os.path.basename(self.flint), "qemu-system-x86_64"}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    argv = f.read().split(b"\0")
            except OSError:
                continue
            if (os.path.basename(argv[0].decode(errors="replace")) in vmm_names
                    and any(self.work.encode() in a for a in argv[1:])):
                victims.add((int(entry), start_time(int(entry))))
        killed = 0
        for pid, st in victims:
            if pid > 0 and start_time(pid) == st:
                try:
                    os.kill(pid, signal.SIGKILL)
                    killed += 1
                except OSError:
                    pass
        if killed:
            print(f"shim_scale: killed {killed} VMM process(es) left behind", file=sys.stderr)
            # A VMM takes a moment to die (KVM tears its VM down): wait, so
            # that nothing is reported twice and nothing outlives the bench.
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and any(
                    pid > 0 and start_time(pid) == st for pid, st in victims):
                time.sleep(0.1)
        return killed

    def close(self):
        self.stop_shim()
        self.reap_leftovers()
        events = None
        if self.notify is not None and self.notify.poll() is None:
            self.notify.send_signal(signal.SIGTERM)
            try:
                out, _ = self.notify.communicate(timeout=10)
                m = re.search(r"^NOTIFY (events=.*)", out, re.M)
                events = m.group(1) if m else None
            except subprocess.TimeoutExpired:
                self.notify.kill()
        if self.args.keep:
            print(f"shim_scale: kept {self.work}", file=sys.stderr)
        else:
            shutil.rmtree(self.work, ignore_errors=True)
        return events


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default="build")
    ap.add_argument("--vms", type=int, default=200, help="VMs under flint")
    ap.add_argument("--qemu-vms", type=int, default=50,
                    help="VMs under QEMU (fewer: each QEMU is slower to start and larger)")
    ap.add_argument("--memory", default="32Mi", help="guest RAM of each VM (flint's minimum: 8Mi)")
    ap.add_argument("--concurrency", type=int, default=8, help="syncs in flight")
    ap.add_argument("--no-qemu", action="store_true")
    ap.add_argument("--no-notify", action="store_true",
                    help="run the shim without a Notify socket (events only logged)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (logs, records)")
    ap.add_argument("--shim", help="flint-shim binary (default BUILD/k8s-shim/flint-shim)")
    ap.add_argument("--client", help="default BUILD/bench/flint_shim_scale")
    ap.add_argument("--flint", help="flint binary (default BUILD/vmm/flint)")
    ap.add_argument("--guest", help="test guest ELF (default BUILD/tests/guest/flint-guest.elf)")
    args = ap.parse_args()

    try:
        os.close(os.open("/dev/kvm", os.O_RDWR))
    except OSError as e:
        print(f"shim_scale: /dev/kvm unusable ({e.strerror}); nothing to measure on this host")
        return 2
    have_qemu = shutil.which("qemu-system-x86_64") is not None and not args.no_qemu
    if args.no_qemu:
        args.qemu_vms = 0
    elif not have_qemu:
        print("shim_scale: no qemu-system-x86_64 in PATH; flint only")
        args.qemu_vms = 0

    # One launcher socket, one VMM connection and one event stream per VM in
    # the shim; the client holds a channel per VM: lift the fd limit for all.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    guest_mib = quantity_mib(args.memory)
    need_mib = max(args.vms * (guest_mib + VMM_BUDGET_MIB["flint"]),
                   args.qemu_vms * (guest_mib + VMM_BUDGET_MIB["qemu"]))
    avail_mib = meminfo_kib("MemAvailable") // 1024
    print(f"memory: {avail_mib} MiB available; worst case (every guest page touched) "
          f"{need_mib} MiB for the larger phase")
    if need_mib > 0.8 * avail_mib:
        print("shim_scale: not enough memory for that many VMs; lower --vms/--qemu-vms or --memory")
        return 2

    bench = Bench(args)
    for path in (bench.shim_bin, bench.client, bench.flint, bench.guest):
        if not os.path.exists(path):
            print(f"shim_scale: {path} is missing (build with ninja -C {args.build})")
            return 2

    # A SIGTERM to the bench must still end every VM it started.
    def stop(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")
    signal.signal(signal.SIGTERM, stop)

    rows, info, events = [], None, None
    try:
        bench.setup()
        bench.start_shim("info")
        info = bench.info()
        bench.stop_shim()
        for backend, n in (("flint", args.vms), ("qemu", args.qemu_vms)):
            if n > 0:
                print(f"{backend}: creating {n} VMs ({args.concurrency} syncs in flight)...",
                      flush=True)
                rows.append(bench.phase(backend, n))
    except (RuntimeError, KeyboardInterrupt, subprocess.TimeoutExpired) as e:
        print(f"shim_scale: stopped: {e}", file=sys.stderr)
        print(bench.log_tail(), file=sys.stderr)
    finally:
        events = bench.close()

    def f(row, key, spec="{:.0f}"):
        return "-" if row is None or row.get(key) is None else spec.format(row[key])

    fl = next((r for r in rows if r["backend"] == "flint"), None)
    qm = next((r for r in rows if r["backend"] == "qemu"), None)
    print()
    print(f"shim (fresh per backend): {' '.join(bench.shim_cmd or ['-'])}")
    print(f"VMI: 1 vCPU, {args.memory}, kernelBoot flint-guest.elf 'flint.prog=idle', "
          f"{args.concurrency} syncs in flight")
    print(f"{'':34}{'flint':>12}{'qemu':>12}{'target':>10}")
    lines = [
        ("VMs started / asked", f(fl, "ok") + "/" + f(fl, "n"), f(qm, "ok") + "/" + f(qm, "n"), ""),
        ("running (GetDomain)", f(fl, "running"), f(qm, "running"), ""),
        ("creation rate (VMs/s)", f(fl, "rate", "{:.1f}"), f(qm, "rate", "{:.1f}"),
         f">= {TARGET_RATE:.0f}"),
        ("Sync latency p50 / max (ms)", f(fl, "p50") + "/" + f(fl, "pmax"),
         f(qm, "p50") + "/" + f(qm, "pmax"), ""),
        ("VMM private beyond guest (KiB/VM)", f(fl, "vmm_priv"), f(qm, "vmm_priv"),
         f"<= {TARGET_VMM_KIB}"),
        ("  median (KiB)", f(fl, "vmm_priv_med"), f(qm, "vmm_priv_med"), ""),
        ("VMM PSS beyond guest (KiB/VM)", f(fl, "vmm_pss"), f(qm, "vmm_pss"), ""),
        ("guest RAM touched (KiB/VM)", f(fl, "guest"), f(qm, "guest"), ""),
        ("shim anonymous growth (KiB/VM)", f(fl, "shim_anon", "{:.1f}"),
         f(qm, "shim_anon", "{:.1f}"), f"<= {TARGET_SHIM_KIB}"),
        ("shim RSS growth (KiB/VM)", f(fl, "shim_rss", "{:.1f}"), f(qm, "shim_rss", "{:.1f}"), ""),
        ("teardown (s)", f(fl, "teardown_s", "{:.1f}"), f(qm, "teardown_s", "{:.1f}"), ""),
    ]
    for name, a, b, t in lines:
        print(f"{name:34}{a:>12}{b:>12}{t:>10}")
    for r in rows:
        print(f"{r['backend']}: {r.get('teardown', '-')}")
    if events:
        print(f"Notify sink: {events}")
    if info:
        print(f"GetHypervisorInfo: memory_overhead_bytes={info.get('memory_overhead_bytes')} "
              f"({info.get('memory_overhead_source', '')[:90]}...)")
    complete = fl is not None and fl.get("ok") == args.vms and (
        args.qemu_vms == 0 or (qm is not None and qm.get("ok") == args.qemu_vms))
    return 0 if complete else 1


if __name__ == "__main__":
    sys.exit(main())
