#!/usr/bin/env bash
# Boots Debian's kernel with the busybox initramfs under flint and checks that
# Linux reached userspace, saw every vCPU, and powered off through ACPI
# (flint exits 0). Needs hardware virtualization: on this project's CI
# machines (kvm_pvm, PLATFORM.md) Linux stops long before userspace.
#
#   tests/linux/boot-userspace.sh FLINT VMLINUZ INITRAMFS [CPUS]
set -uo pipefail
flint=$1 kernel=$2 initrd=$3 cpus=${4:-4}
log=$(mktemp)
start=$(date +%s.%N)
timeout 300 "$flint" run --kernel "$kernel" --initrd "$initrd" --memory 1G --cpus "$cpus" \
  --no-reboot --stats --cmdline "console=ttyS0 panic=-1 quiet flint.boot=userspace" >"$log" 2>&1
rc=$?
end=$(date +%s.%N)
cat "$log"
echo "boot-userspace: flint exited $rc after $(awk "BEGIN{printf \"%.2f\", $end - $start}") s"
ok=1
grep -q "flint-initramfs: userspace reached" "$log" || { echo "boot-userspace: userspace not reached"; ok=0; }
grep -q "flint-initramfs: cpus online: $cpus" "$log" || { echo "boot-userspace: not all $cpus vCPUs online"; ok=0; }
[ "$rc" -eq 0 ] || { echo "boot-userspace: expected exit 0 (ACPI power-off)"; ok=0; }
rm -f "$log"
[ $ok -eq 1 ] && echo "boot-userspace: PASS" || { echo "boot-userspace: FAIL"; exit 1; }
