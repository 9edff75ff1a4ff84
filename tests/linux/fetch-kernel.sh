#!/usr/bin/env bash
# Fetches Debian bookworm's cloud kernel for flint's boot tests.
#
#   tests/linux/fetch-kernel.sh [CACHE_DIR]     (default: build/linux)
#
# Produces in CACHE_DIR:
#   vmlinuz   the bzImage from the current linux-image-*-cloud-amd64 package
#   vmlinux   the uncompressed ELF kernel, extracted from the bzImage payload
#   version   the package name and version that was fetched
# Idempotent: does nothing when both kernels are already there. Delete the
# directory to fetch again.
set -euo pipefail

die() { echo "fetch-kernel: $*" >&2; exit 1; }

cache="${1:-build/linux}"
mkdir -p "$cache"
cache="$(cd "$cache" && pwd)"
vmlinuz="$cache/vmlinuz"
vmlinux="$cache/vmlinux"

need_tool() {  # need_tool COMMAND DEBIAN_PACKAGE
  command -v "$1" >/dev/null 2>&1 && return 0
  echo "fetch-kernel: installing $2 for $1" >&2
  if [ "$(id -u)" -eq 0 ]; then
    apt-get install -y --no-install-recommends "$2" >&2
  else
    sudo apt-get install -y --no-install-recommends "$2" >&2
  fi
  command -v "$1" >/dev/null 2>&1 || die "could not install $2 (needed for $1)"
}

# Little-endian unsigned integer of WIDTH bytes at OFFSET in FILE.
le() {  # le FILE OFFSET WIDTH
  local v
  v=$(od -An -tu"$3" -j "$2" -N "$3" --endian=little "$1" | tr -d ' \n')
  [ -n "$v" ] || die "$1 is truncated (no $3 bytes at offset $2)"
  echo "$v"
}

hexbytes() {  # hexbytes FILE OFFSET COUNT
  od -An -tx1 -j "$2" -N "$3" "$1" | tr -d ' \n'
}

# ---- 1. vmlinuz from the Debian package -----------------------------------
if [ ! -s "$vmlinuz" ]; then
  need_tool apt-cache apt
  need_tool dpkg-deb dpkg
  pkg=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null |
        sed -n 's/^ *Depends: \(linux-image-[^ ]*-cloud-amd64\)$/\1/p' | head -n1)
  if [ -z "$pkg" ]; then
    echo "fetch-kernel: package lists lack linux-image-cloud-amd64; running apt-get update" >&2
    apt-get update >&2 || die "apt-get update failed"
    pkg=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null |
          sed -n 's/^ *Depends: \(linux-image-[^ ]*-cloud-amd64\)$/\1/p' | head -n1)
  fi
  [ -n "$pkg" ] || die "cannot resolve the package that linux-image-cloud-amd64 depends on"
  kver="${pkg#linux-image-}"

  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  echo "fetch-kernel: downloading $pkg" >&2
  # As root, apt would hand the download to the _apt user, which cannot
  # write into our private temp dir; download as ourselves instead.
  sandbox=()
  [ "$(id -u)" -ne 0 ] || sandbox=(-o APT::Sandbox::User=root)
  (cd "$work" && apt-get "${sandbox[@]}" download "$pkg" >&2) || die "apt-get download $pkg failed"
  deb=$(ls "$work"/*.deb 2>/dev/null | head -n1)
  [ -n "$deb" ] || die "apt-get download $pkg produced no .deb"
  dpkg-deb -x "$deb" "$work/root"
  src="$work/root/boot/vmlinuz-$kver"
  [ -s "$src" ] || die "$deb has no boot/vmlinuz-$kver"
  cp "$src" "$vmlinuz.tmp"
  mv "$vmlinuz.tmp" "$vmlinuz"
  dpkg-deb -f "$deb" Package Version > "$cache/version"
  rm -f "$vmlinux"  # a new bzImage invalidates an old vmlinux
fi

# ---- 2. vmlinux from the bzImage's compressed payload ----------------------
if [ ! -s "$vmlinux" ]; then
  [ "$(hexbytes "$vmlinuz" 0x202 4)" = "48647253" ] || die "$vmlinuz has no HdrS setup header"
  version=$(le "$vmlinuz" 0x206 2)
  [ "$version" -ge $((0x208)) ] || die "$vmlinuz boot protocol $version < 2.08: no payload fields"
  setup_sects=$(le "$vmlinuz" 0x1f1 1)
  [ "$setup_sects" -ne 0 ] || setup_sects=4
  pm_start=$(( (setup_sects + 1) * 512 ))
  payload_offset=$(le "$vmlinuz" 0x248 4)
  payload_length=$(le "$vmlinuz" 0x24c 4)
  start=$(( pm_start + payload_offset ))
  size=$(stat -c %s "$vmlinuz")
  [ "$payload_length" -gt 4 ] && [ $(( start + payload_length )) -le "$size" ] ||
    die "$vmlinuz payload [$start, +$payload_length) lies outside the file ($size bytes)"

  # The payload is the compressed vmlinux followed by its 4-byte
  # little-endian uncompressed size; the compressor is told by its magic.
  magic=$(hexbytes "$vmlinuz" "$start" 6)
  case "$magic" in
    fd377a585a00*) comp=xz;   tool=xz;   deb=xz-utils; cmd=(xz -dc --single-stream) ;;
    02214c18*)     comp=lz4;  tool=lz4;  deb=lz4;      cmd=(lz4 -dc) ;;
    28b52ffd*)     comp=zstd; tool=zstd; deb=zstd;     cmd=(zstd -dc) ;;
    1f8b*)         comp=gzip; tool=gzip; deb=gzip;     cmd=(gzip -dc) ;;
    425a68*)       comp=bzip2; tool=bzip2; deb=bzip2;  cmd=(bzip2 -dc) ;;
    5d0000*)       comp=lzma; tool=xz;   deb=xz-utils; cmd=(xz --format=lzma -dc) ;;
    894c5a4f*)     comp=lzo;  tool=lzop; deb=lzop;     cmd=(lzop -dc) ;;
    *) die "unknown compressed payload magic $magic at offset $start of $vmlinuz" ;;
  esac
  need_tool "$tool" "$deb"
  echo "fetch-kernel: payload is $comp ($payload_length bytes at offset $start)" >&2
  expect=$(le "$vmlinuz" $(( start + payload_length - 4 )) 4)
  dd if="$vmlinuz" of="$vmlinux.payload" iflag=skip_bytes,count_bytes status=none \
    skip="$start" count="$(( payload_length - 4 ))" || die "cannot read the payload of $vmlinuz"
  "${cmd[@]}" < "$vmlinux.payload" > "$vmlinux.tmp" ||
    die "$comp decompression of the $vmlinuz payload failed"
  rm -f "$vmlinux.payload"
  got=$(stat -c %s "$vmlinux.tmp")
  [ "$got" -eq "$expect" ] || die "decompressed $got bytes, payload trailer says $expect"
  [ "$(hexbytes "$vmlinux.tmp" 0 4)" = "7f454c46" ] || die "decompressed payload is not an ELF file"
  mv "$vmlinux.tmp" "$vmlinux"
  echo "$comp" > "$cache/compressor"
fi

echo "$vmlinuz"
echo "$vmlinux"
