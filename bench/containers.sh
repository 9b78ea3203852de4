#!/usr/bin/env bash
# bench/containers.sh: HTTP between podman containers on one host, with and
# without rawload.
#
#   sudo bench/containers.sh [--rounds N] [--quick] [--cpus LIST] [--only LIST]
#                            [--out-dir DIR] [--no-install] [--keep-image]
#   sudo bench/containers.sh --check      # build, start, verify, remove: no rawload, no timing
#   sudo bench/containers.sh --cleanup    # remove what a killed run left
#
# Workloads (bench/README.md, "Containers", says what each one measures):
#   pod-local  wrk and nginx in ONE container, over 127.0.0.1 (a pod's app
#              and its sidecar): accelerated by rawload today
#   lb         wrk container -> nginx load balancer container -> two nginx
#              backend containers, over the podman bridge (each container in
#              its own network namespace, behind its own veth)
#
# Method: as bench/apps.sh: A (no rawload) and B (rawload attached to the
# containers' parent cgroup), interleaved A B A B ... for N rounds (default
# 5), one unmeasured warm-up first; medians, min-max, B/A. For every run it
# also records the byte and packet counters of each container's veth (host
# side), of the bridge, and of the loopback inside the containers, plus all
# of rawload's counters in B. A pod-local B run that redirected nothing is
# INVALID. lb is reported either way: until rawload pairs sockets across
# network namespaces its B column is plain TCP (expect B/A ~1.00, veth
# bytes unchanged); once it does, the veths carry only handshakes.
#
# Isolation: the containers run in a podman network of their own
# (rawload-demo, 10.213.0.0/24, no DNS) and in a cgroup of their own
# (--cgroup-parent /rawload-pods: on the cgroup2 hierarchy that is
# <cgroup2 mount>/rawload-pods/libpod-<id>); rawload is attached to that
# cgroup only, pins in /sys/fs/bpf/rawload-pods. The image is built locally
# from the host's nginx, wrk and busybox (no registry). Everything it creates
# (containers, network, image, cgroups, pins, temp dir) is removed on exit,
# also on failure or Ctrl-C.
#
# Output: a Markdown table on stdout and in bench/results/containers-<date>.md,
# the raw numbers in bench/results/containers-<date>.json.

set -euo pipefail
export LC_ALL=C

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
RAWLOAD=${RAWLOAD:-$ROOT/rawload}

ALL_WORKLOADS="pod-local lb"

ROUNDS=""
QUICK=0
CPUS=0
ONLY=""
OUT_DIR=$HERE/results
INSTALL=1
KEEP_IMAGE=0
CLEANUP_ONLY=0
CHECK_ONLY=0

usage() { sed -n '2,/^$/s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; }
die() { echo "containers.sh: error: $*" >&2; exit 1; }
log() { echo "containers.sh: $*" >&2; }

while [ $# -gt 0 ]; do
    case $1 in
        --rounds) ROUNDS=${2:?--rounds needs a number}; shift 2 ;;
        --quick) QUICK=1; shift ;;
        --cpus) CPUS=${2:?--cpus needs a CPU list, e.g. 0 or 0,1}; shift 2 ;;
        --only) ONLY=${2:?--only needs a list, e.g. lb}; shift 2 ;;
        --out-dir) OUT_DIR=${2:?--out-dir needs a directory}; shift 2 ;;
        --no-install) INSTALL=0; shift ;;
        --keep-image) KEEP_IMAGE=1; shift ;;
        --cleanup) CLEANUP_ONLY=1; shift ;;
        --check) CHECK_ONLY=1; shift ;;
        -h | --help) usage; exit 0 ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
done

if [ "$QUICK" = 1 ]; then
    ROUNDS=${ROUNDS:-1}
    DURATION=2
    WARMUP=1
    QUIET=2
else
    ROUNDS=${ROUNDS:-5}
    DURATION=10
    WARMUP=2
    QUIET=2
fi
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || die "--rounds must be a positive integer"
[[ $CPUS =~ ^[0-9,-]+$ ]] || die "--cpus takes a CPU list such as 0, 0,1 or 0-3"
WORKLOADS=$ALL_WORKLOADS
if [ -n "$ONLY" ]; then
    # `make bench-apps BENCH_ARGS="--only ..."` passes one list to apps.sh and
    # to this script: names of apps.sh's workloads are not an error here.
    APPS_WORKLOADS="iperf3-v4 iperf3-dual redis-p1 redis-p16 nginx mariadb"
    WORKLOADS=""
    for w in ${ONLY//,/ }; do
        if [[ " $ALL_WORKLOADS " == *" $w "* ]]; then
            WORKLOADS="$WORKLOADS $w"
        elif [[ " $APPS_WORKLOADS " != *" $w "* ]]; then
            die "unknown workload $w (one of: $ALL_WORKLOADS)"
        fi
    done
    if [ -z "$WORKLOADS" ] && [ "$CLEANUP_ONLY" = 0 ]; then
        log "--only $ONLY names none of $ALL_WORKLOADS: nothing to do"
        exit 0
    fi
fi

[ "$(id -u)" = 0 ] || die "needs root (podman, eBPF programs, cgroups)"

# --- names: everything this script creates ---------------------------------

NAME=rawload-demo           # podman network, container name prefix, image
SUBNET=10.213.0.0/24
IP_LB=10.213.0.10
IP_BE1=10.213.0.11
IP_BE2=10.213.0.12
IP_WRK=10.213.0.20
PORT=8080
IMAGE=localhost/$NAME:latest
CTRS="$NAME-be1 $NAME-be2 $NAME-lb $NAME-wrk"
CG_NAME=rawload-pods        # the containers' parent cgroup, in every hierarchy
PIN=/sys/fs/bpf/$CG_NAME

CG_ROOT=$(sed -n 's/^[^ ]* [^ ]* [^ ]* [^ ]* \([^ ]*\) .* - cgroup2 .*/\1/p' /proc/self/mountinfo | head -1)
[ -n "$CG_ROOT" ] || die "no cgroup v2 hierarchy is mounted"
CG=$CG_ROOT/$CG_NAME

# --- podman on this host -------------------------------------------------------
#
# Two things stop a plain `podman run` on a host like the one these scripts
# were written on (deploy/README.md, "Containers with podman", has the
# details):
#  - root without CAP_SYS_RESOURCE: podman asks the OCI runtime for
#    RLIMIT_NOFILE and RLIMIT_NPROC of 1048576, which only CAP_SYS_RESOURCE
#    may raise to. So every container gets explicit limits no higher than
#    the current hard limits (--ulimit).
#  - hybrid cgroups (v1 controllers, cgroup2 at /sys/fs/cgroup/unified):
#    crun refuses ("cgroups in hybrid mode not supported") whenever the
#    cgroup2 hierarchy has any controller; runc works, and places each
#    container at the --cgroup-parent path in every hierarchy, cgroup2
#    included.
RUNTIME=${RUNTIME:-}
if [ -z "$RUNTIME" ]; then
    if [ "$CG_ROOT" != /sys/fs/cgroup ]; then RUNTIME=runc; else RUNTIME=crun; fi
fi
ULIMITS=()
cap_eff=$(awk '/^CapEff:/ {print $2}' /proc/self/status)
if (((0x$cap_eff >> 24) & 1)); then :; else
    nofile=$(ulimit -Hn)
    nproc=$(ulimit -Hu)
    [ "$nofile" != unlimited ] || nofile=1048576
    # podman lowers its own RLIMIT_NPROC to 32768 before it starts the
    # runtime, so the container cannot get more than that.
    if [ "$nproc" = unlimited ] || [ "$nproc" -gt 32768 ]; then nproc=32768; fi
    ULIMITS=(--ulimit "nofile=$nofile:$nofile" --ulimit "nproc=$nproc:$nproc")
fi
PODMAN=(podman --runtime "$RUNTIME" --cgroup-manager cgroupfs)
RUN_OPTS=("${ULIMITS[@]}" --cgroup-parent "/$CG_NAME" --network "$NAME" --cpuset-cpus "$CPUS"
    --log-driver k8s-file --pull never)

# --- the host's firewall and forwarding, as podman leaves them ------------------
#
# netavark (podman's network backend) adds iptables chains on the first
# network setup and leaves them behind when the last network goes: among
# them nat POSTROUTING -> NETAVARK-HOSTPORT-MASQ, which MASQUERADEs every
# packet whose mark has bit 0x2000 set, loopback included. It also sets
# net.ipv4.ip_forward=1. The script puts the host back as it found it.
#
# (rawload before d193efd marked its probes' sockets with SO_MARK
# 0x72617770, which has that bit: its attach hung under netavark's rule.
# Today's probes use SO_PRIORITY.)
FW_SAVED=0
NFT_TABLES_BEFORE=""
NETAVARK_BEFORE=0
IP_FORWARD_BEFORE=""

save_host_net() {
    IP_FORWARD_BEFORE=$(cat /proc/sys/net/ipv4/ip_forward)
    if command -v nft > /dev/null; then NFT_TABLES_BEFORE=$(nft list tables 2> /dev/null || true); fi
    if command -v iptables > /dev/null && iptables -t nat -S 2> /dev/null | grep -q NETAVARK; then NETAVARK_BEFORE=1; fi
    FW_SAVED=1
}

# Chains netavark left (only when there were none before the run), the nf
# tables that only they needed, and ip_forward.
restore_host_net() {
    [ "$FW_SAVED" = 1 ] || return 0
    local t line chain
    if [ "$NETAVARK_BEFORE" = 0 ] && command -v iptables > /dev/null; then
        for t in nat filter; do
            # Jumps into NETAVARK chains from the built-in chains first, then the chains.
            while read -r line; do
                eval "iptables -t $t -D ${line#-A }" 2> /dev/null || log "could not remove iptables -t $t rule: $line"
            done < <(iptables -t $t -S 2> /dev/null | grep -E '^-A [A-Z]+ .*-j NETAVARK' | grep -v '^-A NETAVARK' || true)
            for chain in $(iptables -t $t -S 2> /dev/null | awk '$1 == "-N" && $2 ~ /^NETAVARK/ {print $2}'); do
                iptables -t $t -F "$chain" 2> /dev/null
            done
            for chain in $(iptables -t $t -S 2> /dev/null | awk '$1 == "-N" && $2 ~ /^NETAVARK/ {print $2}'); do
                iptables -t $t -X "$chain" 2> /dev/null || log "could not remove iptables -t $t chain $chain"
            done
        done
    fi
    if command -v nft > /dev/null; then
        for t in "ip nat" "ip filter" "ip6 nat" "ip6 filter"; do
            grep -qx "table $t" <<< "$NFT_TABLES_BEFORE" && continue
            nft list table $t > /dev/null 2>&1 || continue
            # Only tables without a single rule left (what iptables-nft leaves).
            if ! nft list table $t 2> /dev/null | grep -qvE '^\s*(table|chain|type|\}|$)'; then
                nft delete table $t 2> /dev/null || log "could not remove nft table $t"
            fi
        done
    fi
    [ -z "$IP_FORWARD_BEFORE" ] || echo "$IP_FORWARD_BEFORE" > /proc/sys/net/ipv4/ip_forward
}

# --- packages ------------------------------------------------------------------

install_missing() {
    local missing="" p
    for p in podman "$RUNTIME" nginx wrk bpftool iproute2 python3; do
        dpkg-query -W -f='${Status}' "$p" 2> /dev/null | grep -q 'install ok installed' || missing="$missing $p"
    done
    # The containers' shell tools. busybox-static, as `make test-deps`
    # installs it (tests/vm/ copies it into initramfs images): Debian's
    # dynamic `busybox` package conflicts with it and would replace it.
    command -v busybox > /dev/null || missing="$missing busybox-static"
    [ -n "$missing" ] || return 0
    [ "$INSTALL" = 1 ] || die "missing packages:$missing (--no-install given)"
    log "installing:$missing"
    local policy=/usr/sbin/policy-rc.d added_policy=0 rc=0
    if [ ! -e $policy ]; then
        printf '#!/bin/sh\nexit 101\n' > $policy && chmod 755 $policy && added_policy=1
    fi
    timeout 120 apt-get update -qq || rc=$?
    if [ $rc = 0 ]; then
        # shellcheck disable=SC2086 # word splitting of the package list is intended
        DEBIAN_FRONTEND=noninteractive timeout 900 apt-get install -y -qq --no-install-recommends $missing \
            > /dev/null || rc=$?
    fi
    [ $added_policy = 0 ] || rm -f $policy
    [ $rc = 0 ] || die "apt-get failed (exit $rc) installing:$missing"
}

# --- cleanup -------------------------------------------------------------------

TMP=""
ATTACHED=0
IMAGE_BUILT=0

# The v1 hierarchies podman put our containers (and their conmon) in, and
# the cgroup2 one: /sys/fs/cgroup/*/rawload-pods and $CG, leaves first.
remove_cgroups() {
    local d i
    for d in "$CG" /sys/fs/cgroup/*/"$CG_NAME"; do
        [ -d "$d" ] || continue
        for ((i = 0; i < 50; i++)); do
            find "$d" -depth -type d -exec rmdir {} + 2> /dev/null || true
            [ -d "$d" ] || break
            sleep 0.1
        done
        [ -d "$d" ] && log "could not remove cgroup $d (still in use: $(cat "$d/cgroup.procs" 2> /dev/null | paste -sd ' '))"
    done
    return 0
}

remove_all() {
    local c
    for c in $CTRS; do
        if "${PODMAN[@]}" container exists "$c" 2> /dev/null; then
            timeout 60 "${PODMAN[@]}" rm -f -t 5 "$c" > /dev/null 2>&1 || log "could not remove container $c"
        fi
    done
    if [ -d "$PIN" ]; then
        timeout 60 "$RAWLOAD" detach --pin-dir "$PIN" > /dev/null 2>&1 || log "rawload detach --pin-dir $PIN failed"
        [ -d "$PIN" ] && rm -rf "$PIN"
    fi
    ATTACHED=0
    if "${PODMAN[@]}" network exists "$NAME" 2> /dev/null; then
        timeout 60 "${PODMAN[@]}" network rm "$NAME" > /dev/null 2>&1 || log "could not remove network $NAME"
    fi
    if [ "$KEEP_IMAGE" = 0 ] && { [ "$IMAGE_BUILT" = 1 ] || [ "$CLEANUP_ONLY" = 1 ]; }; then
        "${PODMAN[@]}" image exists "$IMAGE" 2> /dev/null && { timeout 60 "${PODMAN[@]}" rmi -f "$IMAGE" > /dev/null 2>&1 || log "could not remove image $IMAGE"; }
    fi
    remove_cgroups
    restore_host_net
}

cleanup() {
    local rc=$?
    set +e
    trap - EXIT INT TERM
    remove_all
    if [ "$rc" != 0 ] && [ -n "$TMP" ] && [ -s "$TMP/rawload.log" ]; then
        log "rawload's output:"; tail -20 "$TMP/rawload.log" >&2
    fi
    [ -n "$TMP" ] && rm -rf "$TMP"
    exit "$rc"
}

if [ "$CLEANUP_ONLY" = 1 ]; then
    remove_all
    log "removed what an earlier run left (containers $CTRS, network $NAME, image $IMAGE, cgroups $CG_NAME, pins $PIN)"
    exit 0
fi

[ -x "$RAWLOAD" ] || die "$RAWLOAD not found: run make first (or set RAWLOAD=)"
install_missing
command -v podman > /dev/null || die "podman is not installed"
command -v "$RUNTIME" > /dev/null || die "the OCI runtime $RUNTIME is not installed"

# Leftovers of a killed run: refuse rather than take them over.
left=""
for c in $CTRS; do "${PODMAN[@]}" container exists "$c" 2> /dev/null && left="$left container:$c"; done
"${PODMAN[@]}" network exists "$NAME" 2> /dev/null && left="$left network:$NAME"
[ -e "$CG" ] && left="$left cgroup:$CG"
[ -e "$PIN" ] && left="$left pins:$PIN"
[ -z "$left" ] || die "left over from an earlier run:$left; remove them with: sudo $0 --cleanup"
if ip -4 route show | grep -q "^${SUBNET%/*}/"; then
    die "the subnet $SUBNET is already routed on this host ($(ip -4 route show | grep "^${SUBNET%/*}/")); free it first"
fi

trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

save_host_net
TMP=$(mktemp -d /tmp/rawload-containers.XXXXXX)
: > "$TMP/rawload.log"

# --- the image: nginx, wrk, busybox with their libraries, from this host -----

# copy_bin FILE: FILE and the shared libraries ldd lists for it, at their paths.
copy_bin() {
    local rootfs=$1 file=$2 lib
    cp --parents -L "$file" "$rootfs"
    for lib in $(ldd "$file" 2> /dev/null | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}'); do
        [ -e "$rootfs$lib" ] || cp --parents -L "$lib" "$rootfs"
    done
}

build_image() {
    local rootfs=$TMP/rootfs a
    mkdir -p "$rootfs/bin" "$rootfs/etc" "$rootfs/tmp" "$rootfs/conf" "$rootfs/www"
    chmod 1777 "$rootfs/tmp"
    copy_bin "$rootfs" "$(command -v nginx)"
    copy_bin "$rootfs" "$(command -v wrk)"
    copy_bin "$rootfs" "$(command -v busybox)"
    [ -e "$rootfs/bin/busybox" ] || ln -s "$(command -v busybox)" "$rootfs/bin/busybox"
    for a in sh cat ls ps sleep timeout wget ip grep; do ln -sf "$(command -v busybox)" "$rootfs/bin/$a"; done
    printf 'root:x:0:0:root:/:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n' > "$rootfs/etc/passwd"
    printf 'root:x:0:\nnogroup:x:65534:\n' > "$rootfs/etc/group"
    head -c 1024 /dev/zero | tr '\0' x > "$rootfs/www/index.html"
    tar -C "$rootfs" -c . | timeout 120 "${PODMAN[@]}" import -q --change 'CMD ["/bin/sh"]' - "$IMAGE" > /dev/null ||
        die "podman import of the demo image failed"
    IMAGE_BUILT=1
    rm -rf "$rootfs"
}

# nginx configurations. Both: one worker, no access log, temp files in /tmp.
nginx_conf() { # backend|lb
    cat << EOF
daemon off;
master_process on;
worker_processes 1;
user root;
pid /tmp/nginx.pid;
error_log stderr warn;
events { worker_connections 1024; }
http {
    access_log off;
    sendfile on;
    keepalive_requests 1000000;
    client_body_temp_path /tmp/body;
    proxy_temp_path /tmp/proxy;
    fastcgi_temp_path /tmp/fastcgi;
    uwsgi_temp_path /tmp/uwsgi;
    scgi_temp_path /tmp/scgi;
EOF
    if [ "$1" = backend ]; then
        cat << EOF
    server {
        listen $PORT;
        root /www;
    }
}
EOF
    else
        # Keep-alive connections to the backends (HTTP/1.1, no "Connection:
        # close"), so that the lb -> backend hop is as long-lived as
        # wrk -> lb. An idle one closes after 1 s: each run starts with
        # connections opened in its own mode (rawload pairs only connections
        # established while it is attached), the script waits QUIET seconds
        # before each run.
        cat << EOF
    upstream backends {
        server $IP_BE1:$PORT;
        server $IP_BE2:$PORT;
        keepalive 64;
        keepalive_timeout 1s;
    }
    server {
        listen $PORT;
        location / {
            proxy_pass http://backends;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
EOF
    fi
}

# --- containers ----------------------------------------------------------------

declare -A VETH      # container -> host-side veth
BRIDGE=""

start_ctr() { # NAME IP CMD...
    local name=$1 ip=$2
    shift 2
    timeout 60 "${PODMAN[@]}" run -d --name "$name" --ip "$ip" "${RUN_OPTS[@]}" \
        -v "$TMP/conf:/conf:ro" "$IMAGE" "$@" > /dev/null || die "podman run $name failed"
}

ctr_pid() { "${PODMAN[@]}" inspect -f '{{.State.Pid}}' "$1"; }

# in_cgroup NAME: the container's processes are all in a child of $CG.
check_cgroup() {
    local name=$1 pid line procs
    pid=$(ctr_pid "$name")
    line=$(grep '^0::' "/proc/$pid/cgroup") || die "$name: no cgroup2 line in /proc/$pid/cgroup"
    [[ $line == "0::/$CG_NAME/"* ]] || die "$name (PID $pid) is in cgroup2 ${line#0::}, not under /$CG_NAME"
    procs=$(cat "$CG_ROOT${line#0::}/cgroup.procs" | paste -sd ' ')
    log "$name: PID $pid, cgroup2 ${line#0::} (processes: $procs)"
}

# The host side of a container's eth0: the interface whose ifindex is the
# container's eth0 iflink.
find_veth() { # NAME
    local iflink f
    iflink=$("${PODMAN[@]}" exec "$1" cat /sys/class/net/eth0/iflink) || die "$1: no eth0"
    for f in /sys/class/net/*/ifindex; do
        if [ "$(cat "$f")" = "$iflink" ]; then basename "$(dirname "$f")"; return 0; fi
    done
    die "$1: no host interface with ifindex $iflink"
}

# wait_http NAME URL SECONDS: until wget inside NAME fetches URL.
wait_http() {
    local i
    for ((i = 0; i < $3 * 10; i++)); do
        timeout 10 "${PODMAN[@]}" exec "$1" wget -q -O /dev/null "$2" 2> /dev/null && return 0
        sleep 0.1
    done
    "${PODMAN[@]}" logs --tail 5 "$1" >&2 || true
    die "$1 could not fetch $2 within $3 s"
}

setup() {
    log "podman $(podman --version | awk '{print $3}'), runtime $RUNTIME, cgroup manager cgroupfs${ULIMITS[*]:+, ${ULIMITS[*]}}"
    build_image
    mkdir -p "$TMP/conf"
    nginx_conf backend > "$TMP/conf/backend.conf"
    nginx_conf lb > "$TMP/conf/lb.conf"
    mkdir "$CG"
    timeout 60 "${PODMAN[@]}" network create --disable-dns --subnet "$SUBNET" "$NAME" > /dev/null ||
        die "podman network create $NAME failed"
    BRIDGE=$("${PODMAN[@]}" network inspect -f '{{.NetworkInterface}}' "$NAME")
    start_ctr "$NAME-be1" $IP_BE1 nginx -c /conf/backend.conf -p /tmp -e stderr
    start_ctr "$NAME-be2" $IP_BE2 nginx -c /conf/backend.conf -p /tmp -e stderr
    start_ctr "$NAME-lb" $IP_LB nginx -c /conf/lb.conf -p /tmp -e stderr
    start_ctr "$NAME-wrk" $IP_WRK sleep 100000
    local c
    for c in $CTRS; do
        check_cgroup "$c"
        VETH[$c]=$(find_veth "$c")
    done
    # A process started with `podman exec` joins its container's cgroups too.
    local execd
    execd=$("${PODMAN[@]}" exec "$NAME-wrk" grep '^0::' /proc/self/cgroup)
    [[ $execd == "0::/$CG_NAME/"* ]] || die "podman exec lands in ${execd#0::}, not under /$CG_NAME"
    wait_http "$NAME-be1" "http://127.0.0.1:$PORT/index.html" 10
    wait_http "$NAME-wrk" "http://$IP_BE1:$PORT/index.html" 10
    wait_http "$NAME-wrk" "http://$IP_BE2:$PORT/index.html" 10
    wait_http "$NAME-wrk" "http://$IP_LB:$PORT/index.html" 10
    log "network $NAME ($SUBNET, bridge $BRIDGE); veths: $(for c in $CTRS; do printf '%s=%s ' "${c#"$NAME"-}" "${VETH[$c]}"; done)"
    log "cgroup $CG, pins $PIN; containers on CPU(s) $CPUS"
}

# --- counters ------------------------------------------------------------------

# net_counters: one line "iface rx_bytes tx_bytes rx_packets tx_packets" per
# veth (named by container), the bridge, and each container's loopback.
net_counters() {
    local c s d
    for c in $CTRS; do
        s=/sys/class/net/${VETH[$c]}/statistics
        echo "veth:${c#"$NAME"-} $(cat $s/rx_bytes $s/tx_bytes $s/rx_packets $s/tx_packets | paste -sd ' ')"
    done
    s=/sys/class/net/$BRIDGE/statistics
    echo "bridge $(cat $s/rx_bytes $s/tx_bytes $s/rx_packets $s/tx_packets | paste -sd ' ')"
    for c in $CTRS; do
        d=/sys/class/net/lo/statistics
        echo "lo:${c#"$NAME"-} $("${PODMAN[@]}" exec "$c" cat $d/rx_bytes $d/tx_bytes $d/rx_packets $d/tx_packets | paste -sd ' ')"
    done
}

attach() {
    timeout 60 "$RAWLOAD" attach --cgroup "$CG" --pin-dir "$PIN" > "$TMP/attach.log" 2>&1 ||
        { cat "$TMP/attach.log" >> "$TMP/rawload.log"; die "rawload attach --cgroup $CG failed"; }
    # The first attach's output goes into the report (what it paired).
    [ -e "$TMP/attach-first.log" ] || cp "$TMP/attach.log" "$TMP/attach-first.log"
    cat "$TMP/attach.log" >> "$TMP/rawload.log"
    ATTACHED=1
}
detach() {
    timeout 60 "$RAWLOAD" detach --pin-dir "$PIN" >> "$TMP/rawload.log" 2>&1 || die "rawload detach --pin-dir $PIN failed"
    ATTACHED=0
}
counters_json() { timeout 30 "$RAWLOAD" status --pin-dir "$PIN" --json 2>> "$TMP/rawload.log"; }

# check_effective A|B: sock_ops programs in effect on every container's
# cgroup: none in A, only rawload's in B.
check_effective() {
    command -v bpftool > /dev/null || return 0
    local c line progs
    for c in $CTRS; do
        line=$(grep '^0::' "/proc/$(ctr_pid "$c")/cgroup")
        progs=$(bpftool cgroup show "$CG_ROOT${line#0::}" effective 2> /dev/null |
            awk '$2 ~ /sock_ops/ {print $NF}' | sort | tr '\n' ' ')
        case $1 in
            A) [ -z "$progs" ] || die "mode A: sock_ops programs in effect on $c's cgroup: $progs" ;;
            B) [ "$progs" = "rawload_sockops " ] || die "mode B: expected only rawload_sockops on $c's cgroup, found: ${progs:-none}" ;;
        esac
    done
}

# --- workloads -------------------------------------------------------------------

# wrk_in NAME URL SECONDS: wrk -t1 -c32 inside container NAME; prints
# "requests/s total_requests".
wrk_in() {
    local out
    out=$(timeout -k 5 $(($3 + 40)) "${PODMAN[@]}" exec "$1" \
        timeout -s KILL $(($3 + 30)) wrk -t1 -c32 -d "${3}s" "$2") || return 1
    if grep -q 'Non-2xx\|Socket errors' <<< "$out"; then
        log "wrk reported errors: $(grep 'Non-2xx\|Socket errors' <<< "$out" | paste -sd ' ')"
        return 1
    fi
    awk '/^Requests\/sec:/ { rps = $2 } / requests in / { n = $1 }
         END { if (rps == "" || n == "") exit 1; print rps, n }' <<< "$out"
}

measure() { # WORKLOAD SECONDS
    case $1 in
        pod-local) wrk_in "$NAME-be1" "http://127.0.0.1:$PORT/index.html" "$2" ;;
        lb) wrk_in "$NAME-wrk" "http://$IP_LB:$PORT/index.html" "$2" ;;
    esac
}

# --- the measurement loop ------------------------------------------------------

RUNS=$TMP/runs.jsonl
: > "$RUNS"

run_workload() {
    local w=$1 round mode rc out rps n before after c_before c_after
    log "$w: warm-up"
    measure "$w" "$WARMUP" > /dev/null || log "$w: warm-up run failed"
    for ((round = 1; round <= ROUNDS; round++)); do
        for mode in A B; do
            [ $mode = A ] || attach
            check_effective $mode
            sleep "$QUIET" # the previous run's keep-alive connections close
            c_before=null c_after=null
            [ $mode = A ] || c_before=$(counters_json)
            before=$(net_counters)
            rc=0
            out=$(measure "$w" "$DURATION") || rc=$?
            after=$(net_counters)
            if [ $mode = B ]; then
                c_after=$(counters_json)
                detach
            fi
            rps=null n=null
            [ $rc != 0 ] || read -r rps n <<< "$out"
            python3 - "$w" $mode "$round" "$rps" "$n" "$before" "$after" "$c_before" "$c_after" >> "$RUNS" << 'EOF'
import json, sys
w, mode, rnd, rps, n, before, after, cb, ca = sys.argv[1:]
def parse(text):
    return {f[0]: [int(x) for x in f[1:]] for f in (l.split() for l in text.splitlines())}
b, a = parse(before), parse(after)
net = {k: dict(zip(("rx_bytes", "tx_bytes", "rx_packets", "tx_packets"),
                   (x - y for x, y in zip(a[k], b[k])))) for k in a}
counters = None
if cb != "null" and ca != "null":
    c0, c1 = json.loads(cb)["counters"], json.loads(ca)["counters"]
    counters = {k: c1[k] - c0.get(k, 0) for k in c1}
print(json.dumps(dict(workload=w, mode=mode, round=int(rnd),
                      rps=None if rps == "null" else float(rps),
                      requests=None if n == "null" else int(n), net=net, counters=counters)))
EOF
            if [ $rc != 0 ]; then
                log "$w round $round $mode: wrk failed (exit $rc)"
                continue
            fi
            log "$w round $round $mode: $rps requests/s$([ $mode = A ] || python3 -c '
import json, sys
r = json.loads(sys.argv[1].splitlines()[-1])
print(" (bytes_redirected +%d)" % r["counters"]["bytes_redirected"])' "$(tail -1 "$RUNS")")"
        done
    done
}

START=$(date -u +%Y-%m-%dT%H:%M:%SZ)
LOADAVG=$(cut -d' ' -f1-3 /proc/loadavg)
setup
if [ "$CHECK_ONLY" = 1 ]; then
    net_counters | sed 's/^/containers.sh: counters (rx_bytes tx_bytes rx_packets tx_packets): /' >&2
    log "check passed: the containers run under $CG and reach each other through the load balancer"
    exit 0
fi
for w in $WORKLOADS; do run_workload "$w"; done
END=$(date -u +%Y-%m-%dT%H:%M:%SZ)

# --- report ----------------------------------------------------------------------

mkdir -p "$OUT_DIR"
STAMP=$(date -u +%Y-%m-%d-%H%M%S)
MD=$OUT_DIR/containers-$STAMP.md
JSON=$OUT_DIR/containers-$STAMP.json
BENCH_KERNEL=$(uname -r)
BENCH_NPROC=$(nproc)
BENCH_CPU_MODEL=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)
BENCH_RAWLOAD=$("$RAWLOAD" --version 2> /dev/null || echo unknown)
# BENCH_COMMIT= names the commit of a RAWLOAD= binary built elsewhere.
BENCH_COMMIT=${BENCH_COMMIT:-$(git -C "$ROOT" describe --always --dirty 2> /dev/null || echo unknown)}
# (wrk --version exits 1: every part is allowed to fail.)
BENCH_VERSIONS="podman $(podman --version | awk '{print $3}' || true); $RUNTIME $("$RUNTIME" --version 2>&1 | awk 'NR == 1 {print $3}' || true); $(nginx -v 2>&1 | sed 's/.*: //' || true); $(wrk --version 2>&1 | awk 'NR == 1 {print $1, $2}' || true)"
VETHS=$(for c in $CTRS; do printf '%s=%s ' "${c#"$NAME"-}" "${VETH[$c]}"; done)
ATTACH_OUTPUT=$(cat "$TMP/attach-first.log" 2> /dev/null || true)
export ATTACH_OUTPUT RUNS MD JSON START END LOADAVG ROUNDS QUICK CPUS DURATION BENCH_KERNEL BENCH_NPROC BENCH_CPU_MODEL \
    BENCH_RAWLOAD BENCH_COMMIT BENCH_VERSIONS VETHS BRIDGE SUBNET RUNTIME

python3 - << 'EOF'
import json, os, statistics

env = os.environ
labels = {
    "pod-local": "wrk -> nginx in one container, 127.0.0.1",
    "lb": "wrk -> nginx LB -> 2 nginx backends, 4 containers on a bridge",
}
runs = [json.loads(l) for l in open(env["RUNS"])]

def fmt(v):
    if v is None:
        return "-"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    if abs(v) >= 100:
        return f"{v:.1f}"
    return f"{v:.2f}"

def summary(values):
    values = [v for v in values if v is not None]
    if not values:
        return None
    return dict(median=statistics.median(values), min=min(values), max=max(values), n=len(values))

def cell(s):
    return "no result" if s is None else f"{fmt(s['median'])} [{fmt(s['min'])}-{fmt(s['max'])}]"

def size(b):
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if b < 1024 or unit == "TiB":
            return f"{b:.0f} {unit}" if unit == "B" else f"{b:.1f} {unit}"
        b /= 1024

def per_request(r, prefix):
    """Bytes on the interfaces named prefix* (rx + tx, host side for veths) per request."""
    if not r["requests"]:
        return None
    total = sum(v["rx_bytes"] + v["tx_bytes"] for k, v in r["net"].items() if k.startswith(prefix))
    return total / r["requests"]

rows = []
for w in dict.fromkeys(r["workload"] for r in runs):
    wr = [r for r in runs if r["workload"] == w]
    a_runs = [r for r in wr if r["mode"] == "A" and r["rps"] is not None]
    b_runs = [r for r in wr if r["mode"] == "B" and r["rps"] is not None]
    redirected = sum(r["counters"]["bytes_redirected"] for r in b_runs)
    on_tcp = sum(r["counters"]["bytes_missed"] + r["counters"]["bytes_tcp_only"] for r in b_runs)
    unredirected_rounds = [r["round"] for r in b_runs if not r["counters"]["bytes_redirected"]]
    # pod-local must be redirected (its B runs are invalid otherwise); lb is
    # reported either way, marked when nothing was.
    invalid = unredirected_rounds if w == "pod-local" else []
    a = summary([r["rps"] for r in a_runs])
    b = summary([r["rps"] for r in b_runs if r["round"] not in invalid])
    rows.append(dict(
        workload=w, label=labels[w], unit="requests/s", a=a, b=b,
        ratio=b["median"] / a["median"] if a and b else None,
        a_values=[r["rps"] for r in wr if r["mode"] == "A"],
        b_values=[r["rps"] for r in wr if r["mode"] == "B"],
        invalid_rounds=invalid, unredirected_rounds=unredirected_rounds,
        failed_runs={m: sum(1 for r in wr if r["mode"] == m and r["rps"] is None) for m in "AB"},
        b_bytes_redirected=redirected, b_bytes_on_tcp=on_tcp,
        veth_bytes_per_request={m: summary([per_request(r, "veth:") for r in wr if r["mode"] == m and r["rps"] is not None]) for m in "AB"},
        lo_bytes_per_request={m: summary([per_request(r, "lo:") for r in wr if r["mode"] == m and r["rps"] is not None]) for m in "AB"},
        b_counters={k: sum(r["counters"][k] for r in b_runs) for k in (b_runs[0]["counters"] if b_runs else {})},
    ))

quick = env["QUICK"] == "1"
header = [
    "# rawload: containers on one host, with and without rawload",
    "",
    f"- kernel: {env['BENCH_KERNEL']}; {env['BENCH_NPROC']} CPUs ({env['BENCH_CPU_MODEL']}); "
    f"load average at start: {env['LOADAVG']}",
    f"- containers pinned with `--cpuset-cpus {env['CPUS']}`",
    f"- rawload: {env['BENCH_RAWLOAD']} (commit {env['BENCH_COMMIT']})",
    f"- tools: {env['BENCH_VERSIONS']}; OCI runtime {env['RUNTIME']}, cgroup manager cgroupfs",
    f"- network: podman bridge {env['BRIDGE']}, {env['SUBNET']}; host-side veths {env['VETHS'].strip()}",
    f"- method: A = no rawload, B = rawload attached to the containers' parent cgroup; "
    f"{env['ROUNDS']} round(s) interleaved A B A B ...; median [min-max]; {env['DURATION']} s per wrk run (-t1 -c32)"
    + ("; **--quick: one short round, not a measurement**" if quick else ""),
    f"- {env['START']} to {env['END']}",
    "",
    "| workload | A: no rawload (requests/s) | B: rawload | B/A | B redirected | veth bytes/request A / B | lo bytes/request A / B |",
    "|---|---|---|---|---|---|---|",
]
lines = []
for r in rows:
    b = cell(r["b"])
    if r["invalid_rounds"]:
        b = f"INVALID: nothing redirected in round(s) {', '.join(map(str, r['invalid_rounds']))}" + (
            f"; valid rounds {b}" if r["b"] else "")
    ratio = f"{r['ratio']:.2f}" if r["ratio"] is not None else "-"
    total = r["b_bytes_redirected"] + r["b_bytes_on_tcp"]
    if r["b_bytes_redirected"]:
        share = f"{size(r['b_bytes_redirected'])} ({100 * r['b_bytes_redirected'] / total:.0f}%)"
    else:
        share = "nothing: plain TCP"
    notes = [f"{r['failed_runs'][m]} {m} run(s) failed" for m in "AB" if r["failed_runs"][m]]
    if notes:
        share += "; " + "; ".join(notes)
    vb = " / ".join(fmt(r["veth_bytes_per_request"][m]["median"]) if r["veth_bytes_per_request"][m] else "-" for m in "AB")
    lb = " / ".join(fmt(r["lo_bytes_per_request"][m]["median"]) if r["lo_bytes_per_request"][m] else "-" for m in "AB")
    lines.append(f"| {r['label']} | {cell(r['a'])} | {b} | {ratio} | {share} | {vb} | {lb} |")

# Per-interface detail of the lb workload: median bytes per run.
detail = []
lb_runs = [r for r in runs if r["workload"] == "lb" and r["rps"] is not None]
if lb_runs:
    detail += ["", "lb, per interface: median bytes per run (host side: rx = sent by the container, tx = sent to it)", "",
               "| interface | A rx | A tx | B rx | B tx |", "|---|---|---|---|---|"]
    for k in lb_runs[0]["net"]:
        vals = []
        for m in "AB":
            for d in ("rx_bytes", "tx_bytes"):
                s = summary([r["net"][k][d] for r in lb_runs if r["mode"] == m])
                vals.append(size(s["median"]) if s else "-")
        detail.append(f"| {k} | " + " | ".join(vals) + " |")
footer = [
    "",
    "B/A > 1 means faster with rawload. \"B redirected\": payload the sk_msg program moved socket to socket",
    "during the B runs, and its share of the payload it saw. veth bytes/request: rx + tx of the four",
    "containers' host-side veths per request (a byte crossing the bridge is counted on two veths);",
    "lo bytes/request: the same for the loopback devices inside the containers.",
]
text = "\n".join(header + lines + detail + footer) + "\n"
with open(env["MD"], "w") as f:
    f.write(text)
print(text, end="")
doc = dict(kernel=env["BENCH_KERNEL"], nproc=int(env["BENCH_NPROC"]), cpu_model=env["BENCH_CPU_MODEL"],
           cpus=env["CPUS"], rawload=env["BENCH_RAWLOAD"], commit=env["BENCH_COMMIT"], tools=env["BENCH_VERSIONS"],
           runtime=env["RUNTIME"], bridge=env["BRIDGE"], subnet=env["SUBNET"], veths=env["VETHS"].split(),
           rounds=int(env["ROUNDS"]), quick=quick, duration_s=int(env["DURATION"]),
           start=env["START"], end=env["END"], loadavg_at_start=env["LOADAVG"],
           attach_output=env["ATTACH_OUTPUT"].splitlines(), rows=rows, runs=runs)
with open(env["JSON"], "w") as f:
    json.dump(doc, f, indent=2)
    f.write("\n")
EOF
log "written: $MD, $JSON"
