#!/usr/bin/env bash
# bench/loader-cost.sh [RUNS]
#
# The cost of loading prebuilt/rawload.bpf.o, three ways side by side:
#   rawload   ./rawload attach/detach (its embedded copy of the object)
#   bpftool   bench/bpftool-load.sh / bpftool-unload.sh (the seeds' way)
#   aya       bench/aya-loader (the aya crate, built here)
#
# For each: wall time of attach and of detach (median, min, max of RUNS runs,
# default 30; the loaders take turns within each run), peak RSS of attach
# (/usr/bin/time %M, median of RSS_RUNS runs, default 5; for the bpftool
# script the largest single process: bash or one bpftool), binary size and
# dependency count. Prints a Markdown table and writes it to
# bench/results/loader-cost-<date>.md (OUT=FILE to write elsewhere).
#
# Needs root. Everything happens in a private child cgroup made for this run
# (never the root cgroup) with pins in unique directories on /sys/fs/bpf;
# all of it is detached and removed on exit, also on failure or Ctrl-C.
# No network traffic is generated: nothing connects while anything is attached.
set -euo pipefail

runs=${1:-${RUNS:-30}}
rss_runs=${RSS_RUNS:-5}
bench=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$bench")
object=$root/prebuilt/rawload.bpf.o
target=$(uname -m)-unknown-linux-gnu
aya_target_dir=${AYA_TARGET_DIR:-/tmp/target-aya}
out=${OUT:-$bench/results/loader-cost-$(date +%Y-%m-%d).md}

die() { echo "loader-cost: $*" >&2; exit 1; }
log() { echo "loader-cost: $*" >&2; }

[[ $EUID -eq 0 ]] || die "needs root (bpf(2), cgroups, bpffs)"
[[ $runs =~ ^[1-9][0-9]*$ && $rss_runs =~ ^[1-9][0-9]*$ ]] || die "RUNS and RSS_RUNS must be positive integers"
command -v bpftool >/dev/null || die "bpftool missing: apt-get install bpftool"
if [[ ! -x /usr/bin/time ]]; then
	log "installing Debian's time for /usr/bin/time"
	apt-get install -y -qq time >/dev/null || die "could not install the package time"
fi

# --- the binaries ------------------------------------------------------------

rawload=$root/rawload
if [[ ! -x $rawload ]]; then
	log "building rawload"
	make -C "$root" rawload >&2
fi
[[ $rawload -nt $object ]] || log "warning: $rawload is older than $object; its embedded object may differ (make -C $root rawload)"

log "building bench/aya-loader (CARGO_TARGET_DIR=$aya_target_dir)"
aya_linkage=static
if ! (cd "$bench/aya-loader" && RUSTFLAGS='-C target-feature=+crt-static' CARGO_TARGET_DIR=$aya_target_dir \
	cargo build -q --release --locked --target "$target" >&2); then
	log "static build of aya-loader failed; building it dynamically"
	aya_linkage=dynamic
	(cd "$bench/aya-loader" && CARGO_TARGET_DIR=$aya_target_dir \
		cargo build -q --release --locked --target "$target" >&2)
fi
aya_loader=$aya_target_dir/$target/release/aya-loader

# --- a private cgroup and pin directories ------------------------------------

# The cgroup2 mount: field 5 is the mount point, the fs type follows " - ".
cg2=$(awk '{ for (i = 7; i <= NF; i++) if ($i == "-") { if ($(i+1) == "cgroup2") { print $5; exit } break } }' /proc/self/mountinfo)
[[ -n $cg2 && -d $cg2 ]] || die "no cgroup2 mount in /proc/self/mountinfo"
if [[ $(stat -f -c %T /sys/fs/bpf 2>/dev/null) != bpf_fs ]]; then
	log "mounting bpffs on /sys/fs/bpf"
	mount -t bpf bpf /sys/fs/bpf
fi

# bpffs refuses '.' in names: the tag has none.
tag=rlbench_$$_$(date +%s)_$RANDOM
cgroup=$cg2/$tag
[[ $cgroup != "$cg2" && $cgroup != "$cg2/" ]] || die "refusing the root cgroup"
tmp=$(mktemp -d)
loaders=(rawload bpftool aya)
declare -A pin
for l in "${loaders[@]}"; do pin[$l]=/sys/fs/bpf/${tag}_$l; done

# The command line of `attach` or `detach` for a loader, into argv.
cmd() {
	case $2:$1 in
	rawload:*) argv=("$rawload" "$1" --cgroup "$cgroup" --pin-dir "${pin[rawload]}") ;;
	bpftool:attach) argv=("$bench/bpftool-load.sh" "$cgroup" "${pin[bpftool]}" "$object") ;;
	bpftool:detach) argv=("$bench/bpftool-unload.sh" "$cgroup" "${pin[bpftool]}") ;;
	aya:attach) argv=("$aya_loader" attach --cgroup "$cgroup" --pin-dir "${pin[aya]}" --object "$object") ;;
	aya:detach) argv=("$aya_loader" detach --cgroup "$cgroup" --pin-dir "${pin[aya]}") ;;
	esac
}

cleanup() {
	local rc=$? l id
	trap - EXIT INT TERM
	for l in "${loaders[@]}"; do
		if [[ -e ${pin[$l]} ]]; then
			cmd detach "$l"
			"${argv[@]}" >/dev/null 2>&1 || true
		fi
		[[ -e ${pin[$l]} ]] && rm -rf -- "${pin[$l]}"
	done
	if [[ -d $cgroup ]]; then
		# Anything still attached with BPF_PROG_ATTACH (links went with their pins).
		for id in $(bpftool cgroup show "$cgroup" 2>/dev/null | awk '$2 == "cgroup_sock_ops" { print $1 }'); do
			bpftool cgroup detach "$cgroup" sock_ops id "$id" 2>/dev/null || true
		done
		rmdir "$cgroup" || log "could not remove $cgroup"
	fi
	rm -rf -- "$tmp"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
mkdir "$cgroup"

# Runs attach or detach quietly; on failure shows its output and stops.
run() {
	cmd "$1" "$2"
	if ! "${argv[@]}" >"$tmp/out" 2>&1; then
		cat "$tmp/out" >&2
		die "$2 $1 failed"
	fi
}

# Exactly `want` sock_ops programs on our cgroup, all of them multi.
check_cgroup() {
	local n multi
	n=$(bpftool cgroup show "$cgroup" | awk '$2 == "cgroup_sock_ops"' | wc -l)
	multi=$(bpftool cgroup show "$cgroup" | awk '$2 == "cgroup_sock_ops" && $3 == "multi"' | wc -l)
	[[ $n -eq $1 && $multi -eq $1 ]] || die "$2: expected $1 sock_ops program(s) attached with multi on $cgroup, found $n ($multi multi)"
}

# --- measurements ------------------------------------------------------------

log "warm-up and check of each loader in $cgroup"
for l in "${loaders[@]}"; do
	run attach "$l"
	check_cgroup 1 "$l attach"
	[[ -d ${pin[$l]} ]] || die "$l attach left no pins in ${pin[$l]}"
	run detach "$l"
	check_cgroup 0 "$l detach"
	[[ ! -e ${pin[$l]} ]] || die "$l detach left ${pin[$l]}"
done

usec() { local t=${1/./}; echo $((10#$t)); } # $EPOCHREALTIME without a fork
log "timing: $runs runs of attach + detach, loaders taking turns"
for ((i = 1; i <= runs; i++)); do
	for l in "${loaders[@]}"; do
		t0=$EPOCHREALTIME
		run attach "$l"
		t1=$EPOCHREALTIME
		run detach "$l"
		t2=$EPOCHREALTIME
		echo $(($(usec "$t1") - $(usec "$t0"))) >>"$tmp/$l.attach"
		echo $(($(usec "$t2") - $(usec "$t1"))) >>"$tmp/$l.detach"
	done
done

log "peak RSS: $rss_runs runs of attach under /usr/bin/time"
for ((i = 1; i <= rss_runs; i++)); do
	for l in "${loaders[@]}"; do
		cmd attach "$l"
		/usr/bin/time -f %M -o "$tmp/rss" "${argv[@]}" >"$tmp/out" 2>&1 ||
			{ cat "$tmp/out" >&2; die "$l attach failed under /usr/bin/time"; }
		tail -n 1 "$tmp/rss" >>"$tmp/$l.rss"
		run detach "$l"
	done
done

# "median min max" of a file of integers, scaled by 1/$2.
stats() {
	sort -n "$1" | awk -v d="$2" '{ v[NR] = $1 } END {
		m = NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
		printf "%.2f %.2f %.2f\n", m / d, v[1] / d, v[NR] / d }'
}
ms() { read -r med min max < <(stats "$1" 1000); echo "$med ($min–$max)"; }

# --- sizes and dependencies --------------------------------------------------

kib() { awk -v b="$1" 'BEGIN { printf "%.0f KiB", b / 1024 }'; }
# (ldd exits 1 for a static non-PIE binary, which pipefail would report.)
is_static() { grep -qE 'statically linked|not a dynamic executable' <<< "$(ldd "$1" 2>&1 || true)"; }
crates() { # crates in the normal dependency tree, the root crate included
	(cd "$1" && cargo tree -q --prefix none -e normal --target "$target" | sed 's/ (\*)$//' | sort -u | wc -l)
}

declare -A size deps
for l in rawload aya; do
	bin=$rawload; [[ $l == aya ]] && bin=$aya_loader
	if is_static "$bin"; then link=static; else link=dynamic; fi
	size[$l]="$(kib "$(stat -c %s "$bin")") ($link)"
done
deps[rawload]="$(crates "$root") crates"
deps[aya]="$(crates "$bench/aya-loader") crates"

bpftool_bin=$(readlink -f "$(command -v bpftool)")
bpftool_bytes=$(stat -c %s "$bpftool_bin")
libs_bytes=0 libs_names=() all_libs=()
while read -r lib path; do
	all_libs+=("$lib")
	case $lib in libc.so* | ld-linux*) continue ;; esac
	libs_names+=("${lib%%.so*}")
	libs_bytes=$((libs_bytes + $(stat -c %s "$(readlink -f "$path")")))
done < <(ldd "$bpftool_bin" | awk '$2 == "=>" && $3 ~ /^\// { print $1, $3 } $1 ~ /^\// { n = split($1, p, "/"); print p[n], $1 }')
size[bpftool]="$(kib $((bpftool_bytes + libs_bytes))) (dynamic: bpftool $(kib "$bpftool_bytes") + $(IFS=/; echo "${libs_names[*]}") $(kib "$libs_bytes"); libc not counted)"
deps[bpftool]="${#all_libs[@]} shared libs ($(IFS=,; echo "${all_libs[*]%%.so*}" | sed 's/,/, /g'))"

# --- the report --------------------------------------------------------------

aya_version=$(awk '/^name = "aya"$/ { getline; gsub(/[^0-9.]/, ""); print }' "$bench/aya-loader/Cargo.lock")
bpftool_version=$(bpftool version | head -n 2 | paste -sd ' ' | sed 's/using //')
commit=$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)
dirty=$(git -C "$root" status --porcelain 2>/dev/null | grep -q . && echo ", uncommitted changes" || true)

label() {
	case $1 in
	rawload) echo "rawload (\`rawload attach/detach\`)" ;;
	bpftool) echo "bpftool (\`bench/bpftool-load.sh\`)" ;;
	aya) echo "aya $aya_version (\`bench/aya-loader\`)" ;;
	esac
}

{
	echo "# Loader cost: $(date -u +'%Y-%m-%d %H:%M UTC')"
	echo
	echo "Loading \`prebuilt/rawload.bpf.o\` (sock_ops on a private cgroup v2 child with BPF_F_ALLOW_MULTI, sk_msg on the SOCKHASH, pins on bpffs) and undoing it."
	echo "Kernel $(uname -r), $(nproc) CPUs; rawload $commit$dirty; $bpftool_version."
	echo "Wall times: median (min–max) of $runs runs, the loaders taking turns; peak RSS: median of $rss_runs runs."
	echo
	echo "| loader | attach ms | detach ms | attach peak RSS | binary size | dependencies |"
	echo "|---|---|---|---|---|---|"
	for l in "${loaders[@]}"; do
		read -r rss _ < <(stats "$tmp/$l.rss" 1)
		echo "| $(label "$l") | $(ms "$tmp/$l.attach") | $(ms "$tmp/$l.detach") | ${rss%.*} KiB | ${size[$l]} | ${deps[$l]} |"
	done
	echo
	echo "- rawload loads its embedded copy of the object; the others read the file. rawload and aya set \`cfg_netns_cookie = 1\` and fill \`rawload_addrs\` with this host's addresses; the bpftool script cannot set globals and leaves the map empty, as the seeds' scripts did."
	echo "- aya attaches sock_ops through a bpf_link (pinned; a cgroup link is always multi) and sk_msg with BPF_PROG_ATTACH; rawload and bpftool use BPF_PROG_ATTACH for both."
	echo "- Peak RSS of the bpftool script is that of its largest process (bash or one bpftool run), as wait4 reports it."
	echo "- Crates: \`cargo tree --prefix none -e normal --target $target\`, \" (*)\" repeats removed, \`sort -u\`, the root crate and proc-macros included. bpftool: shared libraries from ldd (libbpf is linked into bpftool)."
} >"$tmp/report.md"

mkdir -p "$(dirname "$out")"
cp "$tmp/report.md" "$out"
cat "$tmp/report.md"
log "written to $out"
