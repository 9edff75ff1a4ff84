#!/usr/bin/env bash
# Configures (once) and builds flint into build/, warnings as errors.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -f build/build.ninja ]; then
  meson setup build --werror >/dev/null
fi
ninja -C build >/dev/null
