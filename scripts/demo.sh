#!/usr/bin/env bash
# README command (1): install dependencies, build, and boot the embedded demo VM.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh
exec build/vmm/flint run --cpus 2 --stats "$@"
