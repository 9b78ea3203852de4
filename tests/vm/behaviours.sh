#!/bin/sh
# Kernel behaviours that matter to applications under rawload, measured in
# the guest (informational: they do not change the verdict). Each result is a
# line "MATRIX BEHAVIOUR <name> <value>" that kernel-matrix.sh tabulates.
# docs/KERNEL-ISSUES.md explains each one.
# Runs in a guest and on the host: private names, and everything undone on
# exit, also when a step fails.
root=${CGROUP2:-/sys/fs/cgroup}
cg=$root/rawload-kb-$$
out=$root/rawload-kb-outside-$$
pins=/sys/fs/bpf/rawload-kb-$$
tmp=$(mktemp -d)
cleanup() {
    # Only this script's peers can be in its cgroups.
    for p in $(cat $cg/cgroup.procs $out/cgroup.procs 2> /dev/null); do kill -9 "$p"; done
    rawload detach --pin-dir $pins > /dev/null 2>&1
    sleep 0.1
    rmdir $cg $out 2> /dev/null
    rm -rf "$tmp"
}
trap cleanup EXIT
mkdir -p $cg $out
# Streams stay redirected (--stream-bytes 0) except in 5., which measures the
# stream policy itself.
rawload attach --cgroup $cg --pin-dir $pins --single-netns --stream-bytes 0 > /dev/null || { echo "MATRIX BEHAVIOUR attach failed"; exit 1; }

field() { grep -o "\"$1\":[0-9]*" | head -1 | cut -d: -f2; }

# serve OPTIONS... -- client runs with CLIENT_OPTS in CLIENT_CG; prints the
# client's and the server's report lines to $tmp/c and $tmp/s.
pair() {
    server_cg=$1; shift
    rm -f $tmp/s $tmp/c
    rawload peer serve --listen 127.0.0.1:0 --cgroup "$server_cg" "$@" > $tmp/s 2>/dev/null &
    spid=$!
    i=0
    while [ ! -s $tmp/s ] && [ $i -lt 100 ]; do sleep 0.05; i=$((i + 1)); done
    addr=$(head -1 $tmp/s | cut -d' ' -f2)
    rawload peer connect --to "$addr" --cgroup $cg $CLIENT_OPTS > $tmp/c 2>/dev/null
    wait $spid
}

# 1. Blocking reads that return EAGAIN early: each client half-closes at once
#    (--bytes 0) while its reading thread waits for the server's bytes.
CLIENT_OPTS="--bytes 0 --conns 50" pair $cg --bytes 256K --conns 50
e=$(( $(field spurious_eagain < $tmp/c) + $(tail -1 $tmp/s | field spurious_eagain) ))
echo "MATRIX BEHAVIOUR spurious_eagain $e"

# 2. FIONREAD for plain-TCP bytes arriving at a socket in the map (its server
#    runs outside the attached cgroup), and for redirected bytes (both ends
#    in the map): how often it said 0 while data was readable.
CLIENT_OPTS="--bytes 4M --reader epoll --fionread" pair $out --bytes 4M --reader epoll --fionread
echo "MATRIX BEHAVIOUR fionread_zero $(field fionread_zero < $tmp/c)"
CLIENT_OPTS="--bytes 4M --reader epoll --fionread" pair $cg --bytes 4M --reader epoll --fionread
echo "MATRIX BEHAVIOUR fionread_zero_redirected $(( $(field fionread_zero < $tmp/c) + $(tail -1 $tmp/s | field fionread_zero) ))"

# 3. A splice(2) reader: received bytes out of those sent.
CLIENT_OPTS="--bytes 1M" pair $cg --bytes 1M --recv-mode splice --timeout 3
echo "MATRIX BEHAVIOUR splice_received $(tail -1 $tmp/s | field bytes_received)/$(field bytes_sent < $tmp/c)"

# 4. A reader that pauses 2 s while 256 MiB are pushed: the kernel memory
#    the redirect parks, and whether the sender blocked. 5. The same with
#    the stream policy (--stream-bytes 1M; 64 MiB, which TCP under qemu moves
#    slowly): the stream moves to TCP, whose flow control blocks the sender.
slow_reader() {
    before=$(grep '^TCP:' /proc/net/sockstat | sed 's/.* mem //')
    CLIENT_OPTS="--bytes $2" pair $cg --bytes 0 --pause-after 1M --pause-ms 2000 &
    ppid=$!
    high=0
    i=0
    while [ $i -lt 30 ]; do
        m=$(grep '^TCP:' /proc/net/sockstat | sed 's/.* mem //')
        [ "$m" -gt "$high" ] && high=$m
        sleep 0.1
        i=$((i + 1))
    done
    wait $ppid
    secs=$(grep -o '"secs":[0-9.]*' $tmp/c | cut -d: -f2 | sed 's/\(\.[0-9]\)[0-9]*/\1/')
    if grep -q '"errors":\[\]' $tmp/c; then outcome=ok; else outcome=error; fi
    echo "MATRIX BEHAVIOUR ${1}_parked_mib $(( (high - before) * 4 / 1024 ))"
    echo "MATRIX BEHAVIOUR ${1}_sender ${outcome}_in_${secs}s"
}
slow_reader slow_reader 256M
limit=$(cut -f3 /proc/sys/net/ipv4/tcp_mem)
echo "MATRIX BEHAVIOUR slow_reader_tcp_mem_limit_mib $(( limit * 4 / 1024 ))"
rawload detach --pin-dir $pins > /dev/null
rawload attach --cgroup $cg --pin-dir $pins --single-netns --stream-bytes 1M > /dev/null || { echo "MATRIX BEHAVIOUR attach failed"; exit 1; }
slow_reader stream_policy 64M
