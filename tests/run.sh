#!/usr/bin/env bash
# README command (2): install dependencies, build, and run every test suite.
# Ends with one line: "N passed, N failed" (skips are counted on the line before it).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh
if ! tests/linux/fetch-kernel.sh build/linux >build/fetch-kernel.log 2>&1; then
  echo "note: could not fetch Debian's kernel (see build/fetch-kernel.log); Linux image tests will skip"
fi
exec python3 tests/run_suites.py build
