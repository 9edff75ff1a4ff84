#!/usr/bin/env bash
# README command (1): install dependencies, build, and boot the embedded demo
# VM with two vCPUs and a scratch virtio-blk disk (build/demo-disk.img; the
# demo reads it, writes the same bytes back and flushes).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh
[ -f build/demo-disk.img ] || truncate -s 16M build/demo-disk.img
exec build/vmm/flint run --cpus 2 --stats --disk path=build/demo-disk.img,serial=flint-demo "$@"
