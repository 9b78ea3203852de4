#!/usr/bin/env bash
# bench/bpftool-load.sh CGROUP PINDIR [OBJECT]
#
# Loads rawload's prebuilt object the way the seeds' load.sh did, with
# bpftool alone: loadall (maps pinned under PINDIR/maps, programs under
# PINDIR), sk_msg on the SOCKHASH, sock_ops on the cgroup with `multi`
# (BPF_F_ALLOW_MULTI). Baseline for bench/loader-cost.sh.
#
# Differences to `rawload attach`, by design of the baseline: .rodata keeps
# its zeros (bpftool cannot set globals: no netns cookie in the keys) and
# rawload_addrs stays empty (only loopback peers count as same-host).
# Order as rawload's: sk_msg on the map before sock_ops can fill it.
# On failure everything done so far is undone.
set -euo pipefail

usage() { echo "usage: $0 CGROUP PINDIR [OBJECT]" >&2; exit 2; }
[[ $# -ge 2 && $# -le 3 ]] || usage
cgroup=$1 pindir=$2
object=${3:-$(cd "$(dirname "$0")/.." && pwd)/prebuilt/rawload.bpf.o}
bpftool=${BPFTOOL:-bpftool}

[[ -d $cgroup ]] || { echo "$0: no cgroup directory $cgroup" >&2; exit 1; }
[[ ! -e $pindir ]] || { echo "$0: $pindir exists: unload first" >&2; exit 1; }

undo() {
	"$(dirname "$0")/bpftool-unload.sh" "$cgroup" "$pindir" >/dev/null 2>&1 || true
}
trap 'undo' ERR

"$bpftool" prog loadall "$object" "$pindir" pinmaps "$pindir/maps"
"$bpftool" prog attach pinned "$pindir/rawload_sk_msg" msg_verdict pinned "$pindir/maps/rawload_socks"
"$bpftool" cgroup attach "$cgroup" sock_ops pinned "$pindir/rawload_sockops" multi
