#!/usr/bin/env bash
# extract-vmlinux.sh BZIMAGE OUT: find the compressed ELF kernel inside a
# bzImage by its compression magic and decompress it, the job of the
# kernel's scripts/extract-vmlinux, for booting the ELF directly (PVH).
set -euo pipefail
img=$1 out=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

try() {
    local magic=$1; shift
    local pos
    for pos in $(LC_ALL=C grep -abo "$(printf '%b' "$magic")" "$img" 2>/dev/null | cut -d: -f1); do
        tail -c +$((pos + 1)) "$img" | "$@" > "$tmp/v" 2>/dev/null || true
        if [ "$(head -c4 "$tmp/v" | od -An -tx1 | tr -d ' \n')" = 7f454c46 ]; then
            mv "$tmp/v" "$out"
            return 0
        fi
    done
    return 1
}

try '\x02\x21\x4c\x18' lz4 -dc && exit 0      # LZ4 legacy frame (Debian cloud 5.10, 6.1)
try '\x28\xb5\x2f\xfd' zstd -dcq && exit 0     # zstd (Debian 6.12)
try '\xfd7zXZ\x00' xz -dcq && exit 0           # xz (Debian generic 5.10, 6.1)
try '\x1f\x8b\x08' gzip -dcq && exit 0         # gzip
echo "extract-vmlinux: no compressed ELF kernel found in $img" >&2
exit 1
