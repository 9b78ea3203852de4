#!/usr/bin/env bash
# The kernel matrix: boot Debian's own kernels under qemu and run
# `rawload doctor`, `rawload selftest` and the behaviour probes inside each
# (tests/vm/init -> tests/vm/checks.sh); the same checks run on this host's
# own kernel as the row `host`.
#
#   tests/vm/kernel-matrix.sh [LABEL...]      (default: 5.10 6.1 6.12 newest host)
#
# `newest` is whatever cloud kernel Debian's unstable suite ships today (7.2
# on 2026-12-01): the row that shows what newer kernels fixed, picked anew
# each time the apt index is refreshed.
#
# Kernels come from Debian through apt, each suite with its own private apt
# state (a deb822 *.sources file, so the host's apt setup is untouched), and
# are cached under .cache/kernels. The uncompressed vmlinux is booted directly
# (PVH entry point), which skips firmware and decompression: ~2.5 s per boot
# under TCG. (/dev/kvm on these machines cannot run stock kernels.)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
CACHE=${RAWLOAD_KERNEL_CACHE:-$ROOT/.cache/kernels}
BIN=${RAWLOAD_BIN:-$ROOT/rawload}
BOOT_TIMEOUT=${RAWLOAD_BOOT_TIMEOUT:-150}
mkdir -p "$CACHE"/{debs,logs}

# label | apt sources (uri suite, ...) | package name pattern
kernel_spec() {
    case $1 in
    5.10) echo "http://deb.debian.org/debian bullseye|^linux-image-5\.10\.[0-9]+-[0-9]+-cloud-amd64-unsigned$" ;;
    6.1) echo "http://deb.debian.org/debian bookworm,http://deb.debian.org/debian-security bookworm-security|^linux-image-6\.1\.[0-9]+-[0-9]+-cloud-amd64-unsigned$" ;;
    6.12) echo "http://deb.debian.org/debian trixie,http://deb.debian.org/debian-security trixie-security|^linux-image-6\.12\.[0-9]+\+deb13-cloud-amd64-unsigned$" ;;
    # unstable names its images without the -unsigned suffix
    newest) echo "http://deb.debian.org/debian sid|^linux-image-[0-9]+\.[0-9]+\.[0-9]+\+deb[0-9]+-cloud-amd64(-unsigned)?$" ;;
    *) echo "unknown kernel label $1" >&2; return 1 ;;
    esac
}

# Prints the path of an uncompressed vmlinux for LABEL, fetching if needed.
fetch_kernel() {
    local label=$1 spec sources pattern state opts pkg deb
    spec=$(kernel_spec "$label")
    sources=${spec%%|*}
    pattern=${spec#*|}
    state=$CACHE/apt-$label
    mkdir -p "$state/lists/partial" "$state/cache/archives/partial"
    : > "$state/$label.sources"
    IFS=, read -ra entries <<< "$sources"
    for e in "${entries[@]}"; do
        printf 'Types: deb\nURIs: %s\nSuites: %s\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\n' \
            "${e% *}" "${e#* }" >> "$state/$label.sources"
    done
    opts=(-o "Dir::Etc::sourcelist=$state/$label.sources" -o Dir::Etc::sourceparts=/dev/null
          -o "Dir::State::Lists=$state/lists" -o "Dir::Cache=$state/cache")
    # Refresh the index at most once a day; work offline from the cache.
    if [ -z "$(find "$state/lists" -name '*Packages*' -mtime -1 2>/dev/null | head -1)" ]; then
        apt-get "${opts[@]}" update -qq >/dev/null 2>&1 || echo "  (apt index for $label not refreshed; using the cache)" >&2
    fi
    pkg=$(apt-cache "${opts[@]}" search --names-only "$pattern" 2>/dev/null | awk '{print $1}' | sort -V | tail -1)
    if [ -z "$pkg" ]; then
        pkg=$(cat "$CACHE/pkg-$label" 2>/dev/null || true)
        [ -n "$pkg" ] || { echo "no kernel package matches $pattern" >&2; return 1; }
    fi
    echo "$pkg" > "$CACHE/pkg-$label"
    if [ ! -s "$CACHE/vmlinux-$pkg" ]; then
        # Newer Debian kernels split the image: linux-image-V depends on
        # linux-binary-V, which holds /boot.
        local boot_pkg=$pkg binary=linux-binary-${pkg#linux-image-}
        apt-cache "${opts[@]}" show "$binary" >/dev/null 2>&1 && boot_pkg=$binary
        deb=$(ls "$CACHE"/debs/"${boot_pkg}"_*.deb 2>/dev/null | head -1 || true)
        if [ -z "$deb" ]; then
            (cd "$CACHE/debs" && apt-get "${opts[@]}" download "$boot_pkg" >/dev/null 2>&1) \
                || { echo "downloading $boot_pkg failed" >&2; return 1; }
            deb=$(ls "$CACHE"/debs/"${boot_pkg}"_*.deb | head -1)
        fi
        local x=$CACHE/x-$label
        rm -rf "$x" && mkdir -p "$x"
        # /boot/vmlinuz-V (Debian up to 13) or /usr/lib/modules/V/vmlinuz (14)
        dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$x" --wildcards --no-wildcards-match-slash \
            './boot/vmlinuz-*' './usr/lib/modules/*/vmlinuz' 2>/dev/null || true
        local image
        image=$(ls "$x"/boot/vmlinuz-* "$x"/usr/lib/modules/*/vmlinuz 2>/dev/null | head -1)
        [ -n "$image" ] || { echo "$boot_pkg holds no kernel image" >&2; return 1; }
        "$ROOT/tests/vm/extract-vmlinux.sh" "$image" "$CACHE/vmlinux-$pkg.tmp"
        mv "$CACHE/vmlinux-$pkg.tmp" "$CACHE/vmlinux-$pkg"
        rm -rf "$x"
    fi
    echo "$CACHE/vmlinux-$pkg"
}

build_initramfs() {
    local root=$CACHE/initramfs
    rm -rf "$root" && mkdir -p "$root"/{bin,dev,proc,sys,tmp,run}
    cp /bin/busybox "$root/bin/busybox"
    for a in sh mount mkdir rmdir cat cut sed echo ip poweroff sync sleep uname ls grep head tail mktemp kill rm; do
        ln -s busybox "$root/bin/$a"
    done
    cp "$BIN" "$root/bin/rawload"
    cp "$ROOT/tests/vm/init" "$root/init"
    cp "$ROOT/tests/vm/checks.sh" "$root/bin/checks.sh"
    cp "$ROOT/tests/vm/behaviours.sh" "$root/bin/behaviours.sh"
    # RAWLOAD_MATRIX_EXTRA=DIR: copied to /extra; /extra/run.sh runs before
    # the selftest (for trying a feature on every kernel).
    if [ -n "${RAWLOAD_MATRIX_EXTRA:-}" ]; then
        cp -r "$RAWLOAD_MATRIX_EXTRA" "$root/extra"
    fi
    chmod 755 "$root/init" "$root/bin/rawload"
    # /dev/console must exist before devtmpfs is mounted, or /init has no stdout.
    mknod -m 600 "$root/dev/console" c 5 1
    mknod -m 666 "$root/dev/null" c 1 3
    (cd "$root" && find . -print0 | cpio --null -o -H newc --owner=0:0 --quiet | gzip -1) > "$CACHE/initramfs.cpio.gz"
}

boot() {
    local label=$1 vmlinux=$2 log=$CACHE/logs/$1.log start
    start=$(date +%s.%N)
    timeout "$BOOT_TIMEOUT" qemu-system-x86_64 -accel tcg -m 1024 -smp 2 \
        -nodefaults -no-user-config -nographic -serial stdio -no-reboot \
        -kernel "$vmlinux" -initrd "$CACHE/initramfs.cpio.gz" \
        -append "console=ttyS0 panic=-1 quiet mitigations=off" > "$log" 2>&1 || true
    echo "$(echo "$(date +%s.%N) - $start" | bc)"
}

# The same checks on the running kernel, with the host's cgroup2 mount; the
# output goes to a log like a guest's serial console.
run_host() {
    local log=$CACHE/logs/host.log start bindir
    start=$(date +%s.%N)
    bindir=$(mktemp -d)
    ln -s "$BIN" "$bindir/rawload"
    PATH="$bindir:$ROOT/tests/vm:$PATH" CGROUP2=$(findmnt -n -t cgroup2 -o TARGET | head -1) \
        timeout "$BOOT_TIMEOUT" sh "$ROOT/tests/vm/checks.sh" > "$log" 2>&1 || true
    rm -rf "$bindir"
    echo "$(echo "$(date +%s.%N) - $start" | bc)"
}

[ -x "$BIN" ] || { echo "$BIN is missing: run make first" >&2; exit 1; }
labels=("$@")
[ ${#labels[@]} -gt 0 ] || labels=(5.10 6.1 6.12 newest host)

declare -A VMLINUX
for l in "${labels[@]}"; do
    [ "$l" = host ] || VMLINUX[$l]=$(fetch_kernel "$l")
done
build_initramfs

failed=0
summary=()
for l in "${labels[@]}"; do
    if [ "$l" = host ]; then
        secs=$(run_host)
    else
        secs=$(boot "$l" "${VMLINUX[$l]}")
    fi
    log=$CACHE/logs/$l.log
    verdict=$(grep -a -o 'MATRIX VERDICT: [A-Z]*' "$log" | tail -1 | awk '{print $3}')
    [ -n "$verdict" ] || verdict="NO-VERDICT"
    kernel=$(grep -a -o 'MATRIX BOOTED kernel=[^ ]*' "$log" | head -1 | cut -d= -f2)
    probes=$(grep -a '^MATRIX DOCTOR ' "$log" | grep -aE ' (netns cookie|memlock|sockhash|fionread|unread count|kernel btf) ' |
             sed -E 's/^MATRIX DOCTOR (ok|note|MISSING) +([a-z ]+[a-z]) {2,}(.*)$/\2: \1/' | paste -sd';' -)
    summary+=("$(printf '%-6s %-28s %-10s %6.1fs  %s' "$l" "${kernel:-?}" "$verdict" "$secs" "$probes")")
    if [ "$verdict" != PASS ]; then
        failed=1
        echo "---- $l: serial log ($log), last lines ----"
        grep -a -E 'MATRIX|selftest:|Kernel panic|error' "$log" | tail -40
    fi
done

echo
echo "kernel matrix (qemu TCG guests and this host; doctor + selftest in each; logs in $CACHE/logs)"
printf '%-6s %-28s %-10s %7s  %s\n' label kernel verdict time probes
for s in "${summary[@]}"; do echo "$s"; done
echo
echo "kernel behaviours (tests/vm/behaviours.sh; docs/KERNEL-ISSUES.md)"
printf '%-6s %-30s %-12s %-16s %-15s %-22s %-16s %s\n' label "fill: EAGAIN after tcp / rawload" "fionread=0 outside/redir" \
    "reader pauses: parked, sender" "" "no bound: parked / tcp_mem limit" "" "spurious_eagain splice"
for l in "${labels[@]}"; do
    # (The serial console ends lines with \r\n.)
    b() { grep -a -o "MATRIX BEHAVIOUR $1 [^ ]*" "$CACHE/logs/$l.log" | tail -1 | cut -d' ' -f4 | tr -d '\r'; }
    printf '%-6s %-30s %-12s %-32s %-39s %s\n' "$l" "$(b fill_tcp) / $(b fill_rawload)" \
        "$(b fionread_zero) / $(b fionread_zero_redirected)" \
        "$(b stream_policy_parked_mib) MiB, $(b stream_policy_sender)" \
        "$(b slow_reader_parked_mib) / $(b slow_reader_tcp_mem_limit_mib) MiB, $(b slow_reader_sender)" \
        "$(b spurious_eagain) $(b splice_received)"
done
exit $failed
