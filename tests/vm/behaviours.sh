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
# --single-netns: 5.10 cannot key sockets by namespace, and every process
# here shares one. Otherwise the defaults, as `rawload attach` gives them.
attach() {
    rawload detach --pin-dir $pins > /dev/null 2>&1
    rawload attach --cgroup $cg --pin-dir $pins --single-netns "$@" > /dev/null || { echo "MATRIX BEHAVIOUR attach failed"; exit 1; }
}

field() { grep -o "\"$1\":[0-9]*" | head -1 | cut -d: -f2; }

# serve OPTIONS... -- client runs with CLIENT_OPTS in CLIENT_CG (default:
# the attached cgroup); prints the client's and the server's report lines to
# $tmp/c and $tmp/s.
pair() {
    server_cg=$1; shift
    rm -f $tmp/s $tmp/c
    rawload peer serve --listen 127.0.0.1:0 --cgroup "$server_cg" "$@" > $tmp/s 2>/dev/null &
    spid=$!
    i=0
    while [ ! -s $tmp/s ] && [ $i -lt 100 ]; do sleep 0.05; i=$((i + 1)); done
    addr=$(head -1 $tmp/s | cut -d' ' -f2)
    rawload peer connect --to "$addr" --cgroup "${CLIENT_CG:-$cg}" $CLIENT_OPTS > $tmp/c 2>/dev/null
    wait $spid
}

# --- with the defaults --------------------------------------------------
attach

# 1. FIONREAD for plain-TCP bytes arriving at a client whose server runs
#    outside the attached cgroup: how often it said 0 while data was
#    readable. (The client leaves the map at its first TCP transmission.)
CLIENT_OPTS="--bytes 4M --reader epoll --fionread" pair $out --bytes 4M --reader epoll --fionread
echo "MATRIX BEHAVIOUR fionread_zero $(field fionread_zero < $tmp/c)"

# 2. Backpressure: a non-blocking writer whose reader waits 1 s before
#    reading; bytes accepted before the first EAGAIN, over plain TCP and under
#    rawload, and whether everything arrived once the reader resumed.
fill() {
    CLIENT_CG=$1 CLIENT_OPTS="--bytes 16M --reader poll" pair $1 --bytes 0 --pause-after 0 --pause-ms 1000
    if [ "$(tail -1 $tmp/s | field bytes_received)" = 16777224 ] && grep -q '"bad_bytes":0' $tmp/s; then
        intact=intact
    else
        intact=LOST
    fi
    echo "$(( $(field eagain_after_max < $tmp/c) / 1024 ))K_$intact"
}
echo "MATRIX BEHAVIOUR fill_tcp $(fill $out)"
echo "MATRIX BEHAVIOUR fill_rawload $(fill $cg)"

# 3. A reader that pauses 2 s while 64 MiB are pushed (TCP under qemu is
#    slow): the kernel memory parked, and whether the sender waited.
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
slow_reader stream_policy 64M

# --- with no bound (--stream-bytes 0): whole streams stay redirected ------
attach --stream-bytes 0

# 4. Blocking reads that return EAGAIN early: each client half-closes at once
#    (--bytes 0) while its reading thread waits for the server's bytes.
CLIENT_OPTS="--bytes 0 --conns 50" pair $cg --bytes 256K --conns 50
e=$(( $(field spurious_eagain < $tmp/c) + $(tail -1 $tmp/s | field spurious_eagain) ))
echo "MATRIX BEHAVIOUR spurious_eagain $e"

# 5. FIONREAD for redirected bytes (both ends in the map).
CLIENT_OPTS="--bytes 4M --reader epoll --fionread" pair $cg --bytes 4M --reader epoll --fionread
echo "MATRIX BEHAVIOUR fionread_zero_redirected $(( $(field fionread_zero < $tmp/c) + $(tail -1 $tmp/s | field fionread_zero) ))"

# 6. A splice(2) reader: received bytes out of those sent.
CLIENT_OPTS="--bytes 1M" pair $cg --bytes 1M --recv-mode splice --timeout 3
echo "MATRIX BEHAVIOUR splice_received $(tail -1 $tmp/s | field bytes_received)/$(field bytes_sent < $tmp/c)"

# 7. The paused reader again, with no bound: 256 MiB pushed.
slow_reader slow_reader 256M
limit=$(cut -f3 /proc/sys/net/ipv4/tcp_mem)
echo "MATRIX BEHAVIOUR slow_reader_tcp_mem_limit_mib $(( limit * 4 / 1024 ))"
