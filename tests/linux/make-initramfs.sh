#!/usr/bin/env bash
# Builds a tiny initramfs (busybox, from Debian's busybox-static) whose /init
# proves a Linux guest reached userspace under flint: it prints what the
# kernel saw (CPUs, memory, command line) and powers the VM off through ACPI,
# which makes flint exit 0.
#
#   tests/linux/make-initramfs.sh [OUT]     (default: build/linux/initramfs.cpio.gz)
#
# On this project's CI machines Linux never gets this far (PLATFORM.md); the
# image is for hosts with hardware virtualization.
set -euo pipefail
out="${1:-build/linux/initramfs.cpio.gz}"
bb=/bin/busybox
[ -x "$bb" ] || { echo "make-initramfs: $bb missing: apt-get install busybox-static" >&2; exit 1; }
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root"/{bin,proc,sys,dev}
cp "$bb" "$root/bin/busybox"
for a in sh mount cat grep wc poweroff echo sleep uname; do ln -s busybox "$root/bin/$a"; done
cat > "$root/init" <<'INIT'
#!/bin/sh
mount -t proc proc /proc
mount -t sysfs sys /sys
echo "flint-initramfs: userspace reached on $(uname -r)"
echo "flint-initramfs: cpus online: $(grep -c ^processor /proc/cpuinfo)"
echo "flint-initramfs: $(grep MemTotal /proc/meminfo)"
echo "flint-initramfs: cmdline: $(cat /proc/cmdline)"
echo "flint-initramfs: powering off"
poweroff -f
sleep 5
echo "flint-initramfs: poweroff did not stop the VM"
INIT
chmod +x "$root/init"
mkdir -p "$(dirname "$out")"
(cd "$root" && find . | cpio -o -H newc --quiet | gzip -9) > "$out"
echo "$out"
