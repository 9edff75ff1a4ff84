#!/usr/bin/env bash
# run-in-vm.sh: run a command inside a throw-away QEMU (TCG) guest that has a
# working /dev/kvm (nested KVM on top of QEMU's emulated AMD SVM).
#
# Usage:
#   tests/nested/run-in-vm.sh [options] -- COMMAND [ARGS...]
#
# Options:
#   --copy PATH      host file or directory to copy into the guest at the same
#                    absolute path (repeatable). ELF executables / shared
#                    objects among them get their shared libraries (per ldd,
#                    including the dynamic loader) copied in as well.
#   --files DIR      same as --copy.
#   --timeout S      kill the guest after S seconds (default 600); exit 124.
#   --env NAME=VAL   set an environment variable for COMMAND (repeatable).
#   --cwd DIR        working directory for COMMAND inside the guest
#                    (default: the host's current directory, created if absent).
#   --mem SIZE       guest memory (default 2G).
#   --smp N          guest vCPUs (default 2).
#   --cpu MODEL      QEMU -cpu value (default max; needs svm, e.g. EPYC,+svm).
#   --machine M      QEMU -machine value (default q35).
#   --verbose        show kernel messages, module loading, the qemu command.
#   --keep           keep the staging directory / initramfs (path printed).
#   -h, --help       this text.
#
# COMMAND is run by the guest's busybox sh after the kvm modules are loaded.
# If COMMAND (or any ARG) names an existing host file, it is copied in
# automatically. The guest console is streamed to stdout; the script exits
# with COMMAND's exit status (parsed from a "NESTED-EXIT=<n>" marker line).
# Exit 125 means the guest ended without reporting a status (boot failure,
# kernel panic, etc.); 124 means the timeout expired.
#
# Cached artifacts (Debian kernel, kvm modules, static busybox) live under
# build/nested/ (override with NESTED_CACHE=DIR); they are fetched once with
# `apt-get download` from the configured Debian mirror.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/../.." && pwd)
CACHE=${NESTED_CACHE:-$REPO_ROOT/build/nested}

timeout_s=600
mem=2G
smp=2
cpu=max
machine=q35
verbose=0
keep=0
cwd=$PWD
copies=()
envs=()

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//'; }
die() { echo "run-in-vm: $*" >&2; exit 125; }
log() { echo "run-in-vm: $*" >&2; }
vlog() { if ((verbose)); then log "$@"; fi; }

while (($#)); do
  case $1 in
    --copy|--files) (($# >= 2)) || die "$1 needs an argument"; copies+=("$2"); shift 2 ;;
    --timeout) timeout_s=$2; shift 2 ;;
    --env) [[ $2 == *=* ]] || die "--env wants NAME=VALUE"; envs+=("$2"); shift 2 ;;
    --cwd) cwd=$2; shift 2 ;;
    --mem) mem=$2; shift 2 ;;
    --smp) smp=$2; shift 2 ;;
    --cpu) cpu=$2; shift 2 ;;
    --machine) machine=$2; shift 2 ;;
    --verbose) verbose=1; shift ;;
    --keep) keep=1; shift ;;
    -h|--help) usage; exit 0 ;;
    --) shift; break ;;
    *) die "unknown option '$1' (COMMAND must follow --)" ;;
  esac
done
(($#)) || { usage >&2; exit 125; }
[[ $cwd == /* ]] || die "--cwd must be absolute"

command -v qemu-system-x86_64 >/dev/null || die "qemu-system-x86_64 not found (apt-get install qemu-system-x86)"

# ---------------------------------------------------------------------------
# 1. Cache: kernel image, kvm modules (+ deps), static busybox.
# ---------------------------------------------------------------------------
# Modules in load order. kvm-amd depends on kvm and ccp; kvm on irqbypass.
MODULES=(virt/lib/irqbypass.ko drivers/crypto/ccp/ccp.ko arch/x86/kvm/kvm.ko
         arch/x86/kvm/kvm-amd.ko)

ensure_cache() {
  if [[ -f $CACHE/ready ]]; then return; fi
  command -v apt-get >/dev/null || die "apt-get needed to populate $CACHE"
  mkdir -p "$CACHE"
  local tmp
  tmp=$(mktemp -d "$CACHE/.fetch.XXXXXX")
  # Resolve the concrete kernel package behind the linux-image-amd64 metapackage
  # unless one is pinned with NESTED_KERNEL_PKG.
  local kpkg=${NESTED_KERNEL_PKG:-}
  if [[ -z $kpkg ]]; then
    kpkg=$(apt-cache depends linux-image-amd64 2>/dev/null |
           awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
    [[ -n $kpkg ]] || die "cannot resolve linux-image-amd64 (run apt-get update?)"
  fi
  log "fetching $kpkg and busybox-static into $CACHE (one-time)"
  (cd "$tmp" && apt-get download -q "$kpkg" busybox-static >/dev/null 2>&1) ||
    die "apt-get download $kpkg busybox-static failed"
  mkdir -p "$tmp/k" "$tmp/bb"
  dpkg-deb -x "$tmp"/linux-image-*.deb "$tmp/k"
  dpkg-deb -x "$tmp"/busybox-static_*.deb "$tmp/bb"
  local kver
  kver=$(ls "$tmp/k/lib/modules")
  cp "$tmp/k/boot/vmlinuz-$kver" "$CACHE/vmlinuz"
  # Also unpack the ELF vmlinux from the (xz) bzImage: QEMU boots it directly
  # through its PVH entry note, skipping SeaBIOS + in-guest decompression,
  # which under TCG takes ~3 s. Fallback is the bzImage.
  local off
  off=$(LC_ALL=C grep -obUa $'\xfd''7zXZ' "$CACHE/vmlinuz" | head -n1 | cut -d: -f1 || true)
  rm -f "$CACHE/vmlinux"
  if [[ -n $off ]] &&
     xz -dc --single-stream < <(tail -c +$((off + 1)) "$CACHE/vmlinuz") > "$tmp/vmlinux" 2>/dev/null &&
     [[ $(head -c4 "$tmp/vmlinux" | od -An -c | tr -d ' ') == '177ELF' ]]; then
    mv "$tmp/vmlinux" "$CACHE/vmlinux"
  fi
  rm -rf "$CACHE/modules"
  mkdir -p "$CACHE/modules"
  local i=0 m src
  for m in "${MODULES[@]}"; do
    src=$tmp/k/lib/modules/$kver/kernel/$m
    if [[ -f $src.xz ]]; then xz -dc "$src.xz" > "$src"; fi
    if [[ -f $src.zst ]]; then zstd -qdc "$src.zst" > "$src"; fi
    [[ -f $src ]] || die "module $m missing from $kpkg"
    # Numeric prefix keeps dependency order when the guest globs them.
    cp "$src" "$CACHE/modules/$i-$(basename "$m")"
    i=$((i + 1))
  done
  cp "$tmp/bb/bin/busybox" "$CACHE/busybox"
  echo "$kpkg $kver" > "$CACHE/kernel-version"
  rm -rf "$tmp"
  touch "$CACHE/ready"
}
ensure_cache

# ---------------------------------------------------------------------------
# 2. Stage the initramfs tree.
# ---------------------------------------------------------------------------
stage=$(mktemp -d /tmp/nested-stage.XXXXXX)
initrd=$stage.cpio
console_log=$stage.log
cleanup() {
  if ((keep)); then
    log "kept: staging dir $stage, initramfs $initrd, console log $console_log"
  else
    rm -rf "$stage" "$initrd" "$console_log"
  fi
}
trap cleanup EXIT

chmod 755 "$stage"
mkdir -p "$stage"/{nested/bin,nested/modules,dev,proc,sys,tmp,run,etc,root}
cp "$CACHE/busybox" "$stage/nested/bin/busybox"
cp "$CACHE"/modules/*.ko "$stage/nested/modules/"

# Absolute path without resolving symlinks (so the guest sees the same path).
abspath() { realpath -s -m -- "$1"; }

declare -A copied=()
elf_list=()

copy_one() {  # copy host path $1 to the same absolute path in the guest
  local p
  p=$(abspath "$1")
  [[ -e $p ]] || die "--copy: $1 does not exist"
  if [[ -n ${copied[$p]:-} ]]; then return 0; fi
  copied[$p]=1
  mkdir -p "$stage$(dirname "$p")"
  if [[ -d $p ]]; then
    # Dereference symlinks so nothing dangles inside the guest.
    cp -aL -- "$p" "$stage$(dirname "$p")/"
    local f
    while IFS= read -r -d '' f; do
      elf_list+=("$f")
    done < <(find "$p" \( -type f -o -type l \) \( -perm -u+x -o -name '*.so' -o -name '*.so.*' \) -print0)
  else
    cp -L -- "$p" "$stage$p"
    elf_list+=("$p")
  fi
}

is_elf() { [[ -f $1 && $(head -c4 -- "$1" 2>/dev/null | od -An -c | tr -d ' ') == '177ELF' ]]; }

for c in "${copies[@]}"; do copy_one "$c"; done
# Auto-copy the command and any argument that names an existing host file.
for a in "$@"; do
  if [[ -f $a ]]; then copy_one "$a"; fi
done
# Commands given by bare name are looked up in the host PATH.
if [[ $1 != */* ]] && p=$(type -P -- "$1"); then
  if ! "$stage/nested/bin/busybox" --list | grep -qx -- "$1"; then copy_one "$p"; fi
fi

# Shared libraries, resolved on the host (honours RPATH/RUNPATH/LD_LIBRARY_PATH).
declare -A libs=()
for f in "${elf_list[@]}"; do
  is_elf "$f" || continue
  while read -r lib; do
    [[ -n $lib ]] && libs[$lib]=1
  done < <(ldd -- "$f" 2>/dev/null |
           sed -n -e 's/^.*=> \(\/[^ ]*\) (0x.*$/\1/p' -e 's/^[[:space:]]*\(\/[^ ]*\) (0x.*$/\1/p')
done
if ((${#libs[@]})); then
  # libgcc_s is dlopen()ed by glibc for pthread_cancel/backtraces.
  for extra in /lib/x86_64-linux-gnu/libgcc_s.so.1 /usr/lib/x86_64-linux-gnu/libgcc_s.so.1; do
    if [[ -f $extra ]]; then libs[$extra]=1; break; fi
  done
fi
declare -A libdirs=()
for lib in "${!libs[@]}"; do
  if [[ -e $stage$lib ]]; then continue; fi
  mkdir -p "$stage$(dirname "$lib")"
  cp -L -- "$lib" "$stage$lib"
  libdirs[$(dirname "$lib")]=1
done
# Also make each library findable via its canonical path, and build an
# ld.so.cache so libraries found on the host through LD_LIBRARY_PATH resolve.
if ((${#libdirs[@]})); then
  printf '%s\n' "${!libdirs[@]}" > "$stage/etc/ld.so.conf"
  ldconfig -r "$stage" 2>/dev/null || true
fi

# Guest basics that copied programs may expect.
[[ -e $stage/bin/sh ]] || { mkdir -p "$stage/bin"; ln -s /nested/bin/busybox "$stage/bin/sh"; }
echo 'root:x:0:0:root:/root:/bin/sh' > "$stage/etc/passwd"
echo 'root:x:0:' > "$stage/etc/group"
mkdir -p "$stage$cwd"

# The command, quoted for the guest shell (busybox ash understands $'..').
{
  echo "cd $(printf '%q' "$cwd") || exit 126"
  for e in "${envs[@]}"; do echo "export $(printf '%q' "$e")"; done
  printf 'exec'
  printf ' %q' "$@"
  echo
} > "$stage/nested/cmd"

cat > "$stage/init" <<'EOF'
#!/nested/bin/busybox sh
# Guest init generated by tests/nested/run-in-vm.sh.
/nested/bin/busybox --install -s /nested/bin
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:/nested/bin
export HOME=/root TERM=dumb
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm /tmp /run
chmod 1777 /tmp
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
ln -sf /proc/self/fd /dev/fd
ip link set lo up 2>/dev/null
VERBOSE=$(sed -n 's/.*nested.verbose=\([01]\).*/\1/p' /proc/cmdline)
echo "NESTED-INIT uptime=$(cut -d' ' -f1 /proc/uptime)s"
for m in /nested/modules/*.ko; do
  insmod "$m" || echo "NESTED: insmod $m failed"
done
if [ -c /dev/kvm ]; then
  echo "NESTED: /dev/kvm ready (uptime=$(cut -d' ' -f1 /proc/uptime)s)"
else
  echo "NESTED: /dev/kvm missing"
  dmesg | grep -i -E 'kvm|svm'
fi
[ "$VERBOSE" = 1 ] && dmesg | grep -i -E 'kvm|svm'
[ "$VERBOSE" = 1 ] || echo 1 > /proc/sys/kernel/printk
echo "NESTED: running command"
sh /nested/cmd </dev/null
rc=$?
echo "NESTED-EXIT=$rc"
sync
poweroff -f
EOF
chmod +x "$stage/init"

# ---------------------------------------------------------------------------
# 3. Pack (uncompressed newc cpio: no gunzip needed in the slow TCG guest).
# ---------------------------------------------------------------------------
(cd "$stage" && find . -mindepth 1 | "$CACHE/busybox" cpio -o -H newc 2>/dev/null) > "$initrd"
vlog "initramfs $(du -h "$initrd" | cut -f1), kernel $(cat "$CACHE/kernel-version")"

# ---------------------------------------------------------------------------
# 4. Boot.
# ---------------------------------------------------------------------------
kernel=$CACHE/vmlinuz
if [[ -f $CACHE/vmlinux ]]; then kernel=$CACHE/vmlinux; fi
append="console=ttyS0 panic=-1 rdinit=/init nested.verbose=$verbose"
((verbose)) || append+=" quiet loglevel=3"
qemu=(qemu-system-x86_64
  -machine "$machine" -accel tcg,thread=multi -cpu "$cpu"
  -smp "$smp" -m "$mem"
  -kernel "$kernel" -initrd "$initrd" -append "$append"
  -display none -vga none -nic none -serial stdio -monitor none
  -no-reboot)
vlog "${qemu[*]}"

set +e
timeout --foreground -k 5 "$timeout_s" "${qemu[@]}" </dev/null | tee "$console_log"
qrc=${PIPESTATUS[0]}
set -e

rc=$(tr -d '\r' < "$console_log" | sed -n 's/^NESTED-EXIT=\([0-9]\{1,\}\)$/\1/p' | tail -n1)
if [[ -n $rc ]]; then exit "$rc"; fi
if ((qrc == 124 || qrc == 137)); then log "timed out after ${timeout_s}s"; exit 124; fi
log "guest ended without an exit marker (qemu rc=$qrc)"
exit 125
