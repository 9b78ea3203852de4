#!/usr/bin/env bash
# bench/bpftool-unload.sh CGROUP PINDIR
#
# Undoes bench/bpftool-load.sh: sock_ops off the cgroup, sk_msg off the
# SOCKHASH, then the pins (programs and maps go when their last pin does).
# Each step is tried even if an earlier one fails (a half-done load); the
# exit status is that of the first failure.
set -uo pipefail

[[ $# -eq 2 ]] || { echo "usage: $0 CGROUP PINDIR" >&2; exit 2; }
cgroup=$1 pindir=$2
bpftool=${BPFTOOL:-bpftool}
rc=0
failed() { local s=$?; ((rc)) || rc=$s; } # keeps the first failure

[[ -e $pindir ]] || exit 0
if [[ -e $pindir/rawload_sockops && -d $cgroup ]]; then
	"$bpftool" cgroup detach "$cgroup" sock_ops pinned "$pindir/rawload_sockops" || failed
fi
if [[ -e $pindir/rawload_sk_msg && -e $pindir/maps/rawload_socks ]]; then
	"$bpftool" prog detach pinned "$pindir/rawload_sk_msg" msg_verdict pinned "$pindir/maps/rawload_socks" || failed
fi
rm -rf -- "$pindir" || failed
exit "$rc"
