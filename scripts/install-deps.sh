#!/usr/bin/env bash
# Installs flint's build and test dependencies from Debian bookworm.
# Does nothing when everything is already there.
set -euo pipefail
pkgs=(meson ninja-build pkg-config g++ linux-libc-dev python3
      liburing-dev libabsl-dev libgtest-dev libgmock-dev libbenchmark-dev
      qemu-system-x86 acpica-tools lz4 xz-utils zstd valgrind binutils
      passt iproute2 libprotobuf-dev protobuf-compiler
      libgrpc++-dev protobuf-compiler-grpc)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
