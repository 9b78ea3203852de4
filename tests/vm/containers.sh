#!/bin/sh
# Containers on one host (README.md "Containers on one host") on each kernel
# of the matrix, informational like behaviours.sh (never the verdict): a
# bridge, two network namespaces plugged into it by veths as a container
# runtime does (eth0 inside, the host end a port of the bridge), and 8 MiB
# each way from a client in one to a server in the other: first over plain
# TCP, then with rawload attached (--stream-bytes 0, as tests/torture.rs s14)
# to a private cgroup both peers join. One line, which kernel-matrix.sh
# tabulates:
#
#   MATRIX BEHAVIOUR bridge_pair RESULT veth=B redirected=B joined_netns=N intact=yes|no keys=K tcp_veth=B
#
# RESULT: paired (every byte redirected, the veth carried the handshakes
# only), not-paired (all of it took the bridge), partly (some of each);
# veth: bytes the server's bridge port moved (rx + tx) during the rawload
# run; redirected and joined_netns: the attachment's counters; intact: both
# streams arrived whole (bytes, digests, no bad bytes, no errors); keys:
# netns, or single (--single-netns: before 5.15 there is no netns cookie, so
# nothing pairs across namespaces by design); tcp_veth: the port's bytes
# during the plain-TCP run. Or, where the guest cannot build the topology:
#
#   MATRIX BEHAVIOUR bridge_pair unavailable: WHY
#
# Only busybox: namespaces are held by `unshare -n sleep` processes and named
# by /proc/PID/ns/net; links move with `ip link set DEV netns PID`. busybox
# ip ignores `peer name` (the peer is called vethN), so the peer is found by
# its ifindex and renamed. Runs in a guest and on the host: private names,
# and everything undone on exit, also when a step fails.
root=${CGROUP2:-/sys/fs/cgroup}
cg=$root/rawload-ct-$$
pins=/sys/fs/bpf/rawload-ct-$$
tmp=$(mktemp -d)
# Interface names: at most 15 bytes (rlct + a, b or br + up to 7 digits).
br=rlctbr$$
port_a=rlcta$$
port_b=rlctb$$
addr_a=10.213.20.2
addr_b=10.213.20.3
bytes=8M
holders=""
cleanup() {
    # Only this script's peers can be in its cgroup.
    for p in $(cat $cg/cgroup.procs 2> /dev/null); do kill -9 "$p"; done
    rawload detach --pin-dir $pins > /dev/null 2>&1
    # A namespace goes with its last process; its eth0 with it, and the
    # host end with its peer.
    for p in $holders; do kill -9 "$p" 2> /dev/null; done
    for p in $holders; do wait "$p" 2> /dev/null; done
    for l in $port_a $port_b $br; do
        [ -e /sys/class/net/$l ] && ip link del $l 2> /dev/null
    done
    sleep 0.1
    rmdir $cg 2> /dev/null
    rm -rf "$tmp"
}
trap cleanup EXIT
# A signal (checks.sh's timeout) ends the script through its EXIT trap; the
# long steps run in the background so that `wait` lets the signal in.
trap 'exit 1' HUP INT TERM

unavailable() {
    echo "MATRIX BEHAVIOUR bridge_pair unavailable: $*"
    exit 0
}

# Fails with WHAT and the command's own message.
try() {
    what=$1; shift
    "$@" > $tmp/err 2>&1 || unavailable "$what ($(head -1 $tmp/err))"
}

for c in unshare nsenter ip sleep timeout; do
    command -v $c > /dev/null || { echo "MATRIX WARN containers.sh: $c is missing"; unavailable "no $c"; }
done

# A namespace held by a process of its own: sets h to the holder's pid once
# the process is in it (bounded: 5 s), and adds it to holders.
netns_holder() {
    unshare -n sleep 300 < /dev/null > /dev/null 2>&1 &
    h=$!
    holders="$holders $h"
    self=$(readlink /proc/self/ns/net)
    i=0
    while [ "$(readlink /proc/$h/ns/net 2> /dev/null)" = "$self" ] && [ $i -lt 100 ]; do
        sleep 0.05
        i=$((i + 1))
    done
    n=$(readlink /proc/$h/ns/net 2> /dev/null)
    [ -n "$n" ] && [ "$n" != "$self" ] || unavailable "unshare -n failed (no network namespaces?)"
}

# port HOST_END HOLDER ADDRESS: a veth whose host end is a port of the
# bridge and whose other end is eth0 in HOLDER's namespace with ADDRESS/24.
port() {
    peer=${1}p
    try "cannot create a veth (no veth module?)" ip link add $1 type veth peer name $peer
    if [ ! -e /sys/class/net/$peer ]; then
        # busybox ip: the peer is vethN, the device whose ifindex is the
        # host end's iflink.
        idx=$(cat /sys/class/net/$1/iflink)
        found=""
        for d in /sys/class/net/*; do
            [ "$(cat $d/ifindex 2> /dev/null)" = "$idx" ] && found=${d##*/}
        done
        [ -n "$found" ] && [ "$found" != "$1" ] || unavailable "the peer of veth $1 is not found"
        try "renaming the veth peer $found" ip link set $found name $peer
    fi
    try "moving a veth into a namespace" ip link set $peer netns $2
    try "naming the veth in the namespace" nsenter -t $2 -n ip link set $peer name eth0
    try "addressing the namespace" nsenter -t $2 -n ip addr add $3/24 dev eth0
    try "bringing eth0 up" nsenter -t $2 -n ip link set eth0 up
    try "bringing lo up" nsenter -t $2 -n ip link set lo up
    try "plugging a veth into the bridge" ip link set $1 master $br
    try "bringing the bridge port up" ip link set $1 up
}

# Bytes the server's bridge port moved, both ways.
port_bytes() {
    echo $(( $(cat /sys/class/net/$port_a/statistics/rx_bytes) + $(cat /sys/class/net/$port_a/statistics/tx_bytes) ))
}

field() { grep -o "\"$1\":[0-9]*" | head -1 | cut -d: -f2; }
text() { grep -o "\"$1\":\"[^\"]*\"" | head -1 | cut -d'"' -f4; }
# (status --json is pretty-printed: squeezed onto one line first.)
status() { rawload status --json --pin-dir $pins 2> /dev/null | tr -d ' \n'; }
counter() { status | field "$1"; }

# transfer: the server in A, the client in B, both in the cgroup; sets
# wire (the port's bytes meanwhile) and intact (yes/no).
transfer() {
    rm -f $tmp/s $tmp/c
    before=$(port_bytes)
    timeout -s KILL 60 rawload peer serve --netns /proc/$ns_a/ns/net --listen $addr_a:0 --cgroup $cg \
        --bytes $bytes --timeout 20 > $tmp/s 2> $tmp/s.err &
    spid=$!
    i=0
    while ! grep -q '^listening ' $tmp/s 2> /dev/null && [ $i -lt 200 ] && kill -0 $spid 2> /dev/null; do sleep 0.05; i=$((i + 1)); done
    addr=$(grep '^listening ' $tmp/s | head -1 | cut -d' ' -f2)
    if [ -n "$addr" ]; then
        timeout -s KILL 60 rawload peer connect --netns /proc/$ns_b/ns/net --to "$addr" --cgroup $cg \
            --bytes $bytes --timeout 20 > $tmp/c 2> $tmp/c.err &
        wait $!
    else
        echo "MATRIX WARN containers.sh: the server did not listen: $(head -1 $tmp/s.err)"
        kill -9 $spid 2> /dev/null
    fi
    wait $spid
    wire=$(( $(port_bytes) - before ))
    s=$(grep '"role":"server"' $tmp/s | tail -1)
    c=$(grep '"role":"client"' $tmp/c | tail -1)
    intact=no
    if [ -n "$s" ] && [ -n "$c" ] &&
        [ "$(echo "$c" | field bad_bytes)" = 0 ] && [ "$(echo "$s" | field bad_bytes)" = 0 ] &&
        echo "$c" | grep -q '"errors":\[\]' && echo "$s" | grep -q '"errors":\[\]' &&
        [ "$(echo "$c" | field bytes_sent)" = "$(echo "$s" | field bytes_received)" ] &&
        [ "$(echo "$s" | field bytes_sent)" = "$(echo "$c" | field bytes_received)" ] &&
        [ "$(echo "$c" | text sent_digest)" = "$(echo "$s" | text recv_digest)" ] &&
        [ "$(echo "$s" | text sent_digest)" = "$(echo "$c" | text recv_digest)" ]; then
        intact=yes
    fi
    cs=$(echo "$c" | field bytes_sent)
    ss=$(echo "$s" | field bytes_sent)
    payload=$(( ${cs:-0} + ${ss:-0} ))
    [ $intact = yes ] || echo "MATRIX WARN containers.sh: transfer not intact: client ${c:-$(head -1 $tmp/c.err)} server ${s:-$(head -1 $tmp/s.err)}"
}

# --- the topology ------------------------------------------------------
mkdir -p $cg || unavailable "cannot make a cgroup under $root"
netns_holder
ns_a=$h
netns_holder
ns_b=$h
try "cannot create a bridge (no bridge module?)" ip link add $br type bridge
try "bringing the bridge up" ip link set $br up
port $port_a $ns_a $addr_a
port $port_b $ns_b $addr_b

# --- plain TCP ---------------------------------------------------------
transfer
tcp_wire=$wire
tcp_intact=$intact

# --- rawload -----------------------------------------------------------
# Keys hold the namespace where the kernel has netns cookies (5.15+);
# before, attach refuses without --single-netns, and nothing pairs across
# namespaces (both peers are in the cgroup, but their namespaces differ).
# --stream-bytes 0, as the torture test s14 attaches: what is measured is
# whether the two namespaces pair, not the backpressure bound (with it, 8 MiB
# pushed both ways at once leaves the redirect path after about 1 MiB, on
# loopback as on a bridge: behaviours.sh measures that).
keys=netns
single=""
if rawload doctor 2>&1 | grep -q 'netns cookie *absent'; then
    keys=single
    single=--single-netns
fi
timeout -s KILL 60 rawload attach --cgroup $cg --pin-dir $pins --stream-bytes 0 $single > $tmp/attach 2>&1 &
wait $! || unavailable "rawload attach $single failed: $(grep -v '^ *$' $tmp/attach | tail -1)"
grep -E 'keys|pair|10\.213\.20\.' $tmp/attach | sed 's/^ */MATRIX CONTAINERS attach: /'
r0=$(counter bytes_redirected)
j0=$(counter joined_netns)
transfer
# The counters that moved, for the log (why a pair did not pair).
moved=$(status | grep -o '"counters":{[^}]*}' |
    grep -o '"[a-z_]*":[1-9][0-9]*' | tr -d '"' | tr '\n' ' ')
echo "MATRIX CONTAINERS counters: $moved"
r1=$(counter bytes_redirected)
j1=$(counter joined_netns)
redirected=$(( ${r1:-0} - ${r0:-0} ))
joined=$(( ${j1:-0} - ${j0:-0} ))
if [ "$redirected" -ge "$payload" ] && [ "$payload" -gt 0 ]; then
    result=paired
elif [ "$redirected" = 0 ]; then
    result=not-paired
else
    result=partly
fi
[ $tcp_intact = yes ] || intact="no(tcp-also)"
echo "MATRIX BEHAVIOUR bridge_pair $result veth=${wire}B redirected=$redirected joined_netns=$joined intact=$intact keys=$keys tcp_veth=${tcp_wire}B"
