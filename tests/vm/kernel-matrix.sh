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
# Kernels come from Debian through apt, from the archive this host's own apt
# sources name (see debian_archives), each suite with its own private apt
# state (a deb822 *.sources file, so the host's apt setup is untouched), and
# are cached under .cache/kernels. The uncompressed vmlinux is booted directly
# (PVH entry point), which skips firmware and decompression: ~2.5 s per boot
# under TCG. (/dev/kvm on these machines cannot run stock kernels.)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
CACHE=${RAWLOAD_KERNEL_CACHE:-$ROOT/.cache/kernels}
BIN=${RAWLOAD_BIN:-$ROOT/rawload}
# The socket-API conformance test (make conformance); optional: without it
# the conformance table says so.
CONFORMANCE_BIN=${RAWLOAD_CONFORMANCE_BIN:-$ROOT/rawload-conformance}
# A guest powers off when its checks are done; this bounds one that does not
# (the conformance test, which runs last, takes most of it under TCG).
BOOT_TIMEOUT=${RAWLOAD_BOOT_TIMEOUT:-300}
mkdir -p "$CACHE"/{debs,logs}

# Debian's suite names and aliases: how a source of the host's apt setup is
# recognised as the Debian archive (or its security archive, `SUITE-security`
# or the older `SUITE/updates`) whatever its URI says. A host whose sources
# name only a release newer than these gets deb.debian.org, and is told so.
DEBIAN_SUITES=" buster bullseye bookworm trixie forky duke sid oldoldstable oldstable stable testing unstable experimental "

# `URI SUITE` for every enabled `deb` source of the host's apt setup: the
# one-line format (sources.list, sources.list.d/*.list) and deb822
# (sources.list.d/*.sources), in the files apt-config says apt reads.
host_apt_sources() {
    command -v apt-config >/dev/null || return 0
    local SL SP
    eval "$(apt-config shell SL Dir::Etc::sourcelist/f SP Dir::Etc::sourceparts/d)"
    local lists=() f
    [ -f "$SL" ] && lists+=("$SL")
    for f in "$SP"/*.list; do [ -f "$f" ] && lists+=("$f"); done
    if [ ${#lists[@]} -gt 0 ]; then
        # deb [option=value ...] URI SUITE COMPONENT...
        sed 's/#.*//' "${lists[@]}" | awk '$1 == "deb" {
            i = 2
            if ($i ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
            if (i + 1 <= NF) print $i, $(i + 1)
        }'
    fi
    for f in "$SP"/*.sources; do
        [ -f "$f" ] || continue
        # Stanzas of `Field: value` lines (continued on indented lines),
        # separated by blank lines; field names are case-insensitive.
        awk '
            function flush(  n, m, i, j, U, S) {
                if (types ~ /(^|[ \t])deb([ \t]|$)/ && tolower(enabled) !~ /^[ \t]*no[ \t]*$/) {
                    n = split(uris, U, " "); m = split(suites, S, " ")
                    for (i = 1; i <= n; i++) for (j = 1; j <= m; j++) print U[i], S[j]
                }
                types = uris = suites = enabled = key = ""
            }
            /^#/ { next }
            /^[ \t]*$/ { flush(); next }
            /^[ \t]/ {
                if (key == "types") types = types " " $0
                else if (key == "uris") uris = uris " " $0
                else if (key == "suites") suites = suites " " $0
                next
            }
            {
                c = index($0, ":"); key = tolower(substr($0, 1, c - 1)); v = substr($0, c + 1)
                if (key == "types") types = v
                else if (key == "uris") uris = v
                else if (key == "suites") suites = v
                else if (key == "enabled") enabled = v
            }
            END { flush() }' "$f"
    done
}

# Sets DEBIAN_ARCHIVE and DEBIAN_SECURITY: the URIs of the Debian archive
# and of its security archive as this host's apt sources give them, so that
# a mirror, or a caching proxy written into the URI (apt-cacher-ng's
# http://HOST:3142/deb.debian.org/debian), serves the kernels too; apt's
# Acquire::*::Proxy settings apply as well (the private apt state changes
# only the source lists and state directories). Falls back to
# deb.debian.org, and says so, for whichever of the two the host has no
# Debian source for.
debian_archives() {
    local uri suite base
    DEBIAN_ARCHIVE="" DEBIAN_SECURITY=""
    while read -r uri suite; do
        case $uri in cdrom:*) continue ;; esac
        base=${suite%%[-/]*}
        [[ $DEBIAN_SUITES == *" $base "* ]] || continue
        case $suite in
        *-security | */updates) [ -n "$DEBIAN_SECURITY" ] || DEBIAN_SECURITY=${uri%/} ;;
        *) [ -n "$DEBIAN_ARCHIVE" ] || DEBIAN_ARCHIVE=${uri%/} ;;
        esac
    done < <(host_apt_sources)
    if [ -z "$DEBIAN_ARCHIVE" ]; then
        DEBIAN_ARCHIVE=http://deb.debian.org/debian
        echo "  (this host's apt sources name no Debian archive: kernels come from $DEBIAN_ARCHIVE)" >&2
    fi
    if [ -z "$DEBIAN_SECURITY" ]; then
        DEBIAN_SECURITY=http://deb.debian.org/debian-security
        echo "  (this host's apt sources name no Debian security archive: using $DEBIAN_SECURITY)" >&2
    fi
    echo "kernels from $DEBIAN_ARCHIVE and $DEBIAN_SECURITY" >&2
}

# label | apt sources (uri suite, ...) | package name pattern
kernel_spec() {
    local main=$DEBIAN_ARCHIVE security=$DEBIAN_SECURITY
    case $1 in
    5.10) echo "$main bullseye|^linux-image-5\.10\.[0-9]+-[0-9]+-cloud-amd64-unsigned$" ;;
    6.1) echo "$main bookworm,$security bookworm-security|^linux-image-6\.1\.[0-9]+-[0-9]+-cloud-amd64-unsigned$" ;;
    6.12) echo "$main trixie,$security trixie-security|^linux-image-6\.12\.[0-9]+\+deb13-cloud-amd64-unsigned$" ;;
    # unstable names its images without the -unsigned suffix
    newest) echo "$main sid|^linux-image-[0-9]+\.[0-9]+\.[0-9]+\+deb[0-9]+-cloud-amd64(-unsigned)?$" ;;
    *) echo "unknown kernel label $1" >&2; return 1 ;;
    esac
}

# Sets APT_OPTS: apt options for LABEL's private apt state (its own
# sources file, lists and cache under $CACHE/apt-LABEL).
apt_setup() {
    local label=$1 spec sources state
    spec=$(kernel_spec "$label")
    sources=${spec%%|*}
    state=$CACHE/apt-$label
    mkdir -p "$state/lists/partial" "$state/cache/archives/partial"
    : > "$state/$label.sources.new"
    IFS=, read -ra entries <<< "$sources"
    for e in "${entries[@]}"; do
        printf 'Types: deb\nURIs: %s\nSuites: %s\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\n' \
            "${e% *}" "${e#* }" >> "$state/$label.sources.new"
    done
    # Other sources than last time (the host's mirror changed): their index
    # is not in the lists yet, so drop the old one, which makes fetch_kernel
    # refresh it.
    if ! cmp -s "$state/$label.sources.new" "$state/$label.sources"; then
        find "$state/lists" -maxdepth 1 -type f -delete
    fi
    mv "$state/$label.sources.new" "$state/$label.sources"
    APT_OPTS=(-o "Dir::Etc::sourcelist=$state/$label.sources" -o Dir::Etc::sourceparts=/dev/null
              -o "Dir::State::Lists=$state/lists" -o "Dir::Cache=$state/cache")
}

# Prints the path of an uncompressed vmlinux for LABEL, fetching if needed.
fetch_kernel() {
    local label=$1 spec pattern state opts pkg deb
    spec=$(kernel_spec "$label")
    pattern=${spec#*|}
    state=$CACHE/apt-$label
    apt_setup "$label"
    opts=("${APT_OPTS[@]}")
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

# Modules for the guests: the initramfs has no modprobe, and Debian builds
# these as modules. kTLS (the conformance test's ktls case): the tls ULP and
# the AES-GCM pieces. Containers (tests/vm/containers.sh): veth and the
# bridge (with stp and llc). GUEST_MODULES lists them; each is copied for
# LABEL's kernel with its dependencies (each .ko's own depends= field),
# uncompressed, into $CACHE/modules/KVER/, with a file `load` listing them in
# load order (tests/vm/init insmods them). The modules come from the image
# package, or from linux-modules-V where Debian splits it out (unstable). A
# module the package does not hold (built in, or not built: 5.10's cloud
# kernel has no tls) is left out; what the guest then cannot do, its checks
# say.
GUEST_MODULES="tls gcm ghash-generic ctr veth bridge"
# Where they live under kernel/ in the package (what is extracted).
GUEST_MODULE_DIRS="net/tls crypto lib drivers/net/veth.ko* net/bridge net/802 net/llc"
fetch_modules() {
    local label=$1 pkg split deb x kver out d patterns=()
    pkg=$(cat "$CACHE/pkg-$label")
    # Done for this package with this module list.
    [ "$(cat "$CACHE/modules/.done-$pkg" 2>/dev/null)" = "$GUEST_MODULES" ] && return 0
    apt_setup "$label"
    split=linux-modules-${pkg#linux-image-}
    apt-cache "${APT_OPTS[@]}" show "$split" >/dev/null 2>&1 || split=$pkg
    deb=$(ls "$CACHE"/debs/"${split}"_*.deb 2>/dev/null | head -1 || true)
    if [ -z "$deb" ]; then
        (cd "$CACHE/debs" && apt-get "${APT_OPTS[@]}" download "$split" >/dev/null 2>&1) \
            || { echo "  (downloading $split failed: no modules (kTLS, veth, bridge) in the $label guest)" >&2; return 0; }
        deb=$(ls "$CACHE"/debs/"${split}"_*.deb | head -1)
    fi
    for d in $GUEST_MODULE_DIRS; do
        patterns+=("./lib/modules/*/kernel/$d" "./usr/lib/modules/*/kernel/$d")
    done
    x=$(mktemp -d)
    dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$x" --wildcards "${patterns[@]}" 2>/dev/null || true
    kver=$(cd "$x" && find . -type d -regex '.*/lib/modules/[^/]*' | head -1)
    kver=${kver##*/}
    if [ -n "$kver" ]; then
        out=$CACHE/modules/$kver
        rm -rf "$out" && mkdir -p "$out"
        local m
        for m in $GUEST_MODULES; do module_add "$x" "$out" "$m"; done
        echo "  ($label guest modules: $(paste -sd' ' "$out/load" 2>/dev/null))" >&2
    fi
    rm -rf "$x"
    mkdir -p "$CACHE/modules" && echo "$GUEST_MODULES" > "$CACHE/modules/.done-$pkg"
}

# module_add TREE OUT NAME: NAME's dependencies, then NAME, into OUT (once).
# Debian's modules are .ko (up to 6.1), .ko.xz (6.12, 7.x) or .ko.zst.
module_add() {
    local tree=$1 out=$2 name=$3 file dep n
    grep -qx "$name" "$out/load" 2>/dev/null && return 0
    file=""
    for n in "$name" "${name//_/-}"; do
        file=$(find "$tree" \( -name "$n.ko" -o -name "$n.ko.xz" -o -name "$n.ko.zst" \) | head -1)
        [ -z "$file" ] || break
    done
    [ -n "$file" ] || return 0   # built in (or absent): nothing to load
    case $file in
    *.xz) xz -dc "$file" > "$out/$name.ko" ;;
    *.zst) zstd -qdc "$file" > "$out/$name.ko" ;;
    *) cp "$file" "$out/$name.ko" ;;
    esac
    for dep in $(tr '\0' '\n' < "$out/$name.ko" | sed -n 's/^depends=//p' | tr ',' ' '); do
        module_add "$tree" "$out" "$dep"
    done
    echo "$name" >> "$out/load"
}

build_initramfs() {
    local root=$CACHE/initramfs
    rm -rf "$root" && mkdir -p "$root"/{bin,dev,proc,sys,tmp,run}
    cp /bin/busybox "$root/bin/busybox"
    for a in sh mount mkdir rmdir cat cut sed echo ip poweroff sync sleep uname ls grep head tail mktemp kill rm insmod \
             unshare nsenter readlink timeout tr; do
        ln -s busybox "$root/bin/$a"
    done
    cp "$BIN" "$root/bin/rawload"
    if [ -d "$CACHE/modules" ]; then
        mkdir -p "$root/lib/modules" && cp -r "$CACHE"/modules/*/ "$root/lib/modules/" 2>/dev/null || true
    fi
    if [ -x "$CONFORMANCE_BIN" ]; then
        cp "$CONFORMANCE_BIN" "$root/bin/rawload-conformance"
    else
        echo "  ($CONFORMANCE_BIN is missing: no conformance table; run make conformance)" >&2
    fi
    cp "$ROOT/tests/vm/init" "$root/init"
    cp "$ROOT/tests/vm/checks.sh" "$root/bin/checks.sh"
    cp "$ROOT/tests/vm/behaviours.sh" "$root/bin/behaviours.sh"
    cp "$ROOT/tests/vm/containers.sh" "$root/bin/containers.sh"
    # RAWLOAD_MATRIX_EXTRA=DIR: copied to /extra; /extra/run.sh runs before
    # the selftest (for trying a feature on every kernel).
    if [ -n "${RAWLOAD_MATRIX_EXTRA:-}" ]; then
        cp -r "$RAWLOAD_MATRIX_EXTRA" "$root/extra"
    fi
    chmod 755 "$root/init" "$root/bin/rawload" "$root"/bin/*.sh
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
    [ -x "$CONFORMANCE_BIN" ] && ln -s "$CONFORMANCE_BIN" "$bindir/rawload-conformance"
    PATH="$bindir:$ROOT/tests/vm:$PATH" CGROUP2=$(findmnt -n -t cgroup2 -o TARGET | head -1) \
        timeout "$BOOT_TIMEOUT" sh "$ROOT/tests/vm/checks.sh" > "$log" 2>&1 || true
    rm -rf "$bindir"
    echo "$(echo "$(date +%s.%N) - $start" | bc)"
}

# The socket-API conformance test per kernel: one row per case, one column
# per label, each cell the verdict (same, off, differs, unsupported, error;
# "-" when the case did not run there). The raw results of each cell are
# the "MATRIX CONFORMANCE" lines of the label's log.
conformance_table() {
    local l c v cases
    echo "socket-API conformance (rawload-conformance: plain TCP vs rawload; docs/KERNEL-ISSUES.md)"
    cases=$(for l in "$@"; do grep -a -o 'MATRIX CONFORMANCE [a-z0-9_]*' "$CACHE/logs/$l.log" 2>/dev/null || true; done |
            awk '{print $3}' | awk '!seen[$0]++')
    if [ -z "$cases" ]; then
        echo "  (no conformance results: rawload-conformance missing or it did not run)"
        return
    fi
    printf '%-22s' case
    for l in "$@"; do printf ' %-11s' "$l"; done
    echo
    for c in $cases; do
        printf '%-22s' "$c"
        for l in "$@"; do
            v=$(grep -a "^MATRIX CONFORMANCE $c " "$CACHE/logs/$l.log" 2>/dev/null | tail -1 | awk '{print $4}' | tr -d ':\r' || true)
            printf ' %-11s' "${v:--}"
        done
        echo
    done
    echo "what differs (items whose tcp= and rawload= values differ):"
    for c in $cases; do
        # Labels with the same items share one entry: "5.10,6.1:recv,bytes".
        local -A by_what=()
        local order=() w
        for l in "$@"; do
            v=$(grep -a "^MATRIX CONFORMANCE $c differs: " "$CACHE/logs/$l.log" 2>/dev/null | tail -1 |
                awk '{print $5}' | tr -d '\r' || true)
            [ -n "$v" ] || continue
            [ -n "${by_what[$v]:-}" ] || order+=("$v")
            by_what[$v]="${by_what[$v]:+${by_what[$v]},}$l"
        done
        [ ${#order[@]} -gt 0 ] || continue
        printf '  %-22s' "$c"
        for w in "${order[@]}"; do printf ' %s:%s' "${by_what[$w]}" "$w"; done
        echo
        unset by_what
    done
    # (grep finds nothing where the test did not run: not an error here.)
    for l in "$@"; do
        { grep -a -o 'MATRIX CONFORMANCE-SUMMARY .*' "$CACHE/logs/$l.log" 2>/dev/null || true; } | tail -1 |
            tr -d '\r' | sed "s/^MATRIX CONFORMANCE-SUMMARY/  $l:/"
        { grep -a -o 'MATRIX rawload-conformance: .*' "$CACHE/logs/$l.log" 2>/dev/null || true; } |
            tr -d '\r' | sed "s/^MATRIX /  $l: /"
    done
    echo "  (the tcp= and rawload= results of every cell: grep 'MATRIX CONFORMANCE' $CACHE/logs/LABEL.log)"
}

[ -x "$BIN" ] || { echo "$BIN is missing: run make first" >&2; exit 1; }
labels=("$@")
[ ${#labels[@]} -gt 0 ] || labels=(5.10 6.1 6.12 newest host)

declare -A VMLINUX
for l in "${labels[@]}"; do
    [ "$l" = host ] && continue
    [ -n "${DEBIAN_ARCHIVE:-}" ] || debian_archives
    VMLINUX[$l]=$(fetch_kernel "$l")
    fetch_modules "$l"
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
printf '%-6s %-30s %-12s %-16s %-15s %-22s %-16s %-22s %s\n' label "fill: EAGAIN after tcp / rawload" "fionread=0 outside/redir" \
    "reader pauses: parked, sender" "" "no bound: parked / tcp_mem limit" "" "spurious_eagain splice" \
    "containers: bridge_pair (tests/vm/containers.sh)"
for l in "${labels[@]}"; do
    # (The serial console ends lines with \r\n.)
    b() { grep -a -o "MATRIX BEHAVIOUR $1 [^ ]*" "$CACHE/logs/$l.log" | tail -1 | cut -d' ' -f4 | tr -d '\r'; }
    # The whole value, for the behaviours whose value has several words.
    bl() { grep -a -o "MATRIX BEHAVIOUR $1 .*" "$CACHE/logs/$l.log" | tail -1 | cut -d' ' -f4- | tr -d '\r'; }
    printf '%-6s %-30s %-12s %-32s %-39s %-22s %s\n' "$l" "$(b fill_tcp) / $(b fill_rawload)" \
        "$(b fionread_zero) / $(b fionread_zero_redirected)" \
        "$(b stream_policy_parked_mib) MiB, $(b stream_policy_sender)" \
        "$(b slow_reader_parked_mib) / $(b slow_reader_tcp_mem_limit_mib) MiB, $(b slow_reader_sender)" \
        "$(b spurious_eagain) $(b splice_received)" "$(v=$(bl bridge_pair); echo "${v:--}")"
done
echo
conformance_table "${labels[@]}"
exit $failed
