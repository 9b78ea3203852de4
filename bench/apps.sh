#!/usr/bin/env bash
# bench/apps.sh: real applications with and without rawload, side by side.
#
#   sudo bench/apps.sh [--rounds N] [--quick] [--cpus LIST] [--only LIST]
#                      [--out-dir DIR] [--no-install]
#
# Workloads (bench/README.md says what each one measures):
#   iperf3-v4     iperf3, server bound to 127.0.0.1
#   iperf3-dual   iperf3, default dual-stack server (listens on ::), 127.0.0.1 client
#   redis-p1      redis-benchmark -t set,get -P 1 against redis-server
#   redis-p16     the same with -P 16
#   nginx         wrk against nginx serving a 1 KiB static file
#   mariadb       sysbench oltp_read_write against MariaDB over 127.0.0.1 TCP
#
# Method: every workload runs in mode A (no rawload) and mode B (rawload
# attached), interleaved A B A B ... for N rounds (default 5); the report
# gives medians, min-max and the ratio B/A. A B run whose bytes_redirected
# counter did not grow is marked INVALID: a silent fallback to TCP must not
# pose as a result.
#
# Isolation: every server and client runs in a private network namespace
# (so no byte appears on the host's `lo`) and in a private child cgroup; rawload
# is attached to that cgroup only, with its own pin directory. Everything the
# script creates (processes, namespace, cgroup, pins, temp dir) is removed on
# exit, also on failure or Ctrl-C.
#
# Output: a Markdown table on stdout and in bench/results/apps-<date>.md, and
# the raw numbers in bench/results/apps-<date>.json.

set -euo pipefail
export LC_ALL=C

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
RAWLOAD=${RAWLOAD:-$ROOT/rawload}

ALL_WORKLOADS="iperf3-v4 iperf3-dual redis-p1 redis-p16 nginx mariadb"

# --- options ---------------------------------------------------------------

ROUNDS=""
QUICK=0
CPUS=0
ONLY=""
OUT_DIR=$HERE/results
INSTALL=1

usage() {
    sed -n '2,/^$/s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"
}

die() { echo "apps.sh: error: $*" >&2; exit 1; }
log() { echo "apps.sh: $*" >&2; }

while [ $# -gt 0 ]; do
    case $1 in
        --rounds) ROUNDS=${2:?--rounds needs a number}; shift 2 ;;
        --quick) QUICK=1; shift ;;
        --cpus) CPUS=${2:?--cpus needs a CPU list, e.g. 0 or 0,1}; shift 2 ;;
        --only) ONLY=${2:?--only needs a list, e.g. redis-p1,nginx}; shift 2 ;;
        --out-dir) OUT_DIR=${2:?--out-dir needs a directory}; shift 2 ;;
        --no-install) INSTALL=0; shift ;;
        -h | --help) usage; exit 0 ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
done

# --quick: one round, short runs. Durations are per run; redis counts requests.
if [ "$QUICK" = 1 ]; then
    ROUNDS=${ROUNDS:-1}
    DURATION=2          # seconds per iperf3 / wrk / sysbench run
    WARMUP=1            # seconds of the unmeasured warm-up run
    REDIS_N_P1=20000    # requests per redis-benchmark test, -P 1
    REDIS_N_P16=100000  # ... and -P 16
else
    ROUNDS=${ROUNDS:-5}
    DURATION=10
    WARMUP=2
    REDIS_N_P1=200000
    REDIS_N_P16=1000000
fi
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || die "--rounds must be a positive integer"
[[ $CPUS =~ ^[0-9,-]+$ ]] || die "--cpus takes a CPU list such as 0, 0,1 or 0-3"

WORKLOADS=$ALL_WORKLOADS
if [ -n "$ONLY" ]; then
    WORKLOADS=${ONLY//,/ }
    for w in $WORKLOADS; do
        [[ " $ALL_WORKLOADS " == *" $w "* ]] || die "unknown workload $w (one of: $ALL_WORKLOADS)"
    done
fi

[ "$(id -u)" = 0 ] || die "needs root (attaches eBPF programs, creates a network namespace and a cgroup)"
[ -x "$RAWLOAD" ] || die "$RAWLOAD not found: run make first (or set RAWLOAD=)"

# Ports inside the private namespace (nothing else listens there).
PORT_IPERF_V4=15201
PORT_IPERF_DUAL=15202
PORT_REDIS=16379
PORT_NGINX=18080
PORT_MARIADB=13306

# --- packages ----------------------------------------------------------------

# Debian packages per workload; installed only when missing.
packages_for() {
    case $1 in
        iperf3-*) echo iperf3 ;;
        redis-*) echo redis-server redis-tools ;;
        nginx) echo nginx wrk ;;
        mariadb) echo mariadb-server mariadb-client sysbench ;;
    esac
}

# Commands each workload needs (checked after the install step).
commands_for() {
    case $1 in
        iperf3-*) echo iperf3 ;;
        redis-*) echo redis-server redis-benchmark ;;
        nginx) echo nginx wrk ;;
        mariadb) echo mariadbd mariadb-install-db mariadb sysbench ;;
    esac
}

install_missing() {
    local missing="" p
    # The tools of the script itself: ip, taskset, timeout, bpftool (to check
    # which sock_ops programs are in effect on the benchmark cgroup).
    for p in iproute2 util-linux coreutils bpftool $(for w in $WORKLOADS; do packages_for "$w"; done); do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing="$missing $p"
    done
    command -v python3 > /dev/null || missing="$missing python3"
    [ -n "$missing" ] || return 0
    [ "$INSTALL" = 1 ] || { log "missing packages:$missing (--no-install given; affected workloads are skipped)"; return 0; }
    log "installing:$missing"
    # Installing a daemon must not start the system's copy of it: a
    # policy-rc.d that says "no" (exit 101) is honoured by invoke-rc.d and
    # deb-systemd-invoke. Only added if the host has none, and removed after.
    local policy=/usr/sbin/policy-rc.d added_policy=0
    if [ ! -e $policy ]; then
        printf '#!/bin/sh\nexit 101\n' > $policy && chmod 755 $policy && added_policy=1
    fi
    local rc=0
    timeout 120 apt-get update -qq || rc=$?
    if [ $rc = 0 ]; then
        # shellcheck disable=SC2086 # word splitting of the package list is intended
        DEBIAN_FRONTEND=noninteractive timeout 900 apt-get install -y -qq --no-install-recommends $missing \
            > /dev/null || rc=$?
    fi
    [ $added_policy = 0 ] || rm -f $policy
    [ $rc = 0 ] || log "apt-get failed (exit $rc); workloads without their tools are skipped"
}

# --- isolation: namespace, cgroup, pins ----------------------------------------

# The cgroup v2 mount: the first cgroup2 entry of mountinfo (the mount point is
# field 5; the filesystem type follows the " - " separator).
CG_ROOT=$(sed -n 's/^[^ ]* [^ ]* [^ ]* [^ ]* \([^ ]*\) .* - cgroup2 .*/\1/p' /proc/self/mountinfo | head -1)
[ -n "$CG_ROOT" ] || die "no cgroup v2 hierarchy is mounted"

NAME=rawload-bench-$$
NS=$NAME                    # network namespace (ip netns)
CG=$CG_ROOT/$NAME           # private cgroup, child of the cgroup2 root
PIN=/sys/fs/bpf/$NAME       # rawload's pins for this run
TMP=""                      # temp dir for data, configs and logs
PIDS=()                     # servers we started, stopped by PID on exit
ATTACHED=0

# A process (or its zombie) that has not exited yet.
alive() {
    [ -e "/proc/$1" ] || return 1
    local state
    state=$(sed 's/.*) //' "/proc/$1/stat" 2> /dev/null | cut -c1) || return 1
    [ -n "$state" ] && [ "$state" != Z ] && [ "$state" != X ]
}

# stop_pid PID [SECONDS]: SIGTERM, wait up to SECONDS (default 10), then SIGKILL.
stop_pid() {
    local pid=$1 secs=${2:-10} i
    kill -TERM "$pid" 2> /dev/null || true
    for ((i = 0; i < secs * 10; i++)); do
        alive "$pid" || break
        sleep 0.1
    done
    if alive "$pid"; then
        log "PID $pid did not stop in ${secs}s: SIGKILL"
        kill -KILL "$pid" 2> /dev/null || true
        sleep 0.2
    fi
    wait "$pid" 2> /dev/null || true
}

detach() {
    if [ -d "$PIN" ]; then
        "$RAWLOAD" detach --pin-dir "$PIN" >> "$TMP/rawload.log" 2>&1 ||
            log "rawload detach failed (see below)"
    fi
    ATTACHED=0
}

cleanup() {
    local rc=$? pid i
    set +e
    trap - EXIT INT TERM
    for pid in "${PIDS[@]}"; do stop_pid "$pid" 30; done
    [ "$ATTACHED" = 0 ] || detach
    # Pins left by a failed detach: unpinning only drops references.
    [ -d "$PIN" ] && rm -rf "$PIN"
    if [ -d "$CG" ]; then
        # Any process still in the private cgroup is one of ours (a child of a
        # server we started, or a client cut short): end it by its PID.
        while read -r pid; do kill -KILL "$pid" 2> /dev/null; done < "$CG/cgroup.procs"
        for ((i = 0; i < 50; i++)); do rmdir "$CG" 2> /dev/null && break; sleep 0.1; done
        [ -d "$CG" ] && log "could not remove cgroup $CG"
    fi
    ip netns list 2> /dev/null | grep -qw "^$NS" && ip netns del "$NS"
    if [ "$rc" != 0 ] && [ -n "$TMP" ] && [ -s "$TMP/rawload.log" ]; then
        log "rawload's output:"; tail -20 "$TMP/rawload.log" >&2
    fi
    [ -n "$TMP" ] && rm -rf "$TMP"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

install_missing
command -v python3 > /dev/null || die "python3 is needed for the report"
command -v bpftool > /dev/null || log "bpftool missing: cannot check which sock_ops programs are in effect"

TMP=$(mktemp -d /tmp/rawload-bench.XXXXXX)
ip netns add "$NS"
ip -n "$NS" link set lo up
mkdir "$CG"
NS_INODE=$(stat -L -c %i "/run/netns/$NS")
CG_REL=${CG#"$CG_ROOT"}

# INSIDE CMD...: join the private cgroup, enter the namespace, pin to $CPUS,
# then exec CMD. Every step execs, so a background "${INSIDE[@]}" CMD & has
# the PID of CMD itself. The cgroup is joined before any socket is opened.
# shellcheck disable=SC2016 # $$ and $0 are the inner shell's
INSIDE=(sh -c 'echo $$ > "$0/cgroup.procs" && exec "$@"' "$CG" ip netns exec "$NS" taskset -c "$CPUS")

# in_place PID: the process is in the private cgroup and namespace.
in_place() {
    [ "$(stat -L -c %i "/proc/$1/ns/net" 2> /dev/null)" = "$NS_INODE" ] &&
        grep -qx "0::$CG_REL" "/proc/$1/cgroup" 2> /dev/null
}

# Prove the wrapper once: a probe reports its own cgroup, namespace and CPUs.
probe=$("${INSIDE[@]}" sh -c 'grep "^0::" /proc/self/cgroup; stat -L -c %i /proc/self/ns/net; taskset -pc $$')
[ "$(sed -n 1p <<< "$probe")" = "0::$CG_REL" ] || die "probe not in cgroup $CG_REL: $probe"
[ "$(sed -n 2p <<< "$probe")" = "$NS_INODE" ] || die "probe not in namespace $NS: $probe"
log "namespace $NS, cgroup $CG, pins $PIN; processes on CPU(s) $(sed -n '3s/.*: //p' <<< "$probe")"

# start_server NAME CMD...: start CMD inside, in the background, log in
# $TMP/NAME.log; sets SERVER_PID once the process is in the namespace.
start_server() {
    local name=$1 i
    shift
    "${INSIDE[@]}" "$@" > "$TMP/$name.log" 2>&1 &
    SERVER_PID=$!
    PIDS+=("$SERVER_PID")
    for ((i = 0; i < 50; i++)); do
        in_place "$SERVER_PID" && return 0
        alive "$SERVER_PID" || break
        sleep 0.1
    done
    log "$name (PID $SERVER_PID) did not land in cgroup $CG_REL and namespace $NS"
    tail -5 "$TMP/$name.log" >&2
    return 1
}

# stop_servers_since N: stop the servers started after the first N (newest
# first; 60 s each at most: MariaDB flushes on SIGTERM).
stop_servers_since() {
    local n=$1 i
    for ((i = ${#PIDS[@]} - 1; i >= n; i--)); do stop_pid "${PIDS[$i]}" 60; done
    PIDS=("${PIDS[@]:0:n}")
}

# wait_listen PORT PID SECONDS: until something listens on PORT in the namespace.
wait_listen() {
    local port=$1 pid=$2 secs=$3 i
    for ((i = 0; i < secs * 10; i++)); do
        [ -n "$(ip netns exec "$NS" ss -Hltn "sport = :$port")" ] && return 0
        alive "$pid" || return 1
        sleep 0.1
    done
    return 1
}

# client SECONDS CMD...: run a client inside, at most SECONDS.
client() {
    local secs=$1
    shift
    "${INSIDE[@]}" timeout -k 5 "$secs" "$@"
}

# --- rawload -----------------------------------------------------------------

attach() {
    "$RAWLOAD" attach --cgroup "$CG" --pin-dir "$PIN" >> "$TMP/rawload.log" 2>&1 ||
        die "rawload attach --cgroup $CG failed"
    ATTACHED=1
}

# counters: "bytes_redirected bytes_on_tcp" of our attachment (bytes_on_tcp:
# what the sk_msg program saw go through TCP, missed or tcp_only).
counters() {
    "$RAWLOAD" status --pin-dir "$PIN" --json 2>> "$TMP/rawload.log" | python3 -c '
import json, sys
c = json.load(sys.stdin)["counters"]
print(c["bytes_redirected"], c["bytes_missed"] + c["bytes_tcp_only"])'
}

# check_effective A|B: the sock_ops programs in effect on our cgroup (its own
# and inherited ones) are none in mode A and only rawload's in mode B. A
# rawload attached to the cgroup2 root would otherwise accelerate mode A too.
check_effective() {
    command -v bpftool > /dev/null || return 0
    local progs
    progs=$(bpftool cgroup show "$CG" effective 2> /dev/null | awk '$2 ~ /sock_ops/ {print $NF}' | sort | tr '\n' ' ')
    case $1 in
        A) [ -z "$progs" ] || die "mode A: sock_ops programs in effect on $CG: $progs(attached to a parent cgroup?)" ;;
        B) [ "$progs" = "rawload_sockops " ] || die "mode B: expected only rawload_sockops in effect on $CG, found: ${progs:-none}" ;;
    esac
}

# --- workloads ---------------------------------------------------------------
#
# Each workload has setup_X (start its servers with start_server, wait until
# they listen) and measure_X (one client run; prints
# "metric<TAB>unit<TAB>better<TAB>value" lines, better = higher|lower;
# non-zero exit on failure). measure_X takes the duration in seconds (or a
# request count). The servers a setup started are stopped after the rounds.

# iperf3: one TCP stream, client -> server, for DURATION seconds.
setup_iperf3() { # PORT [BIND]
    local port=$1
    shift
    start_server "iperf3-$port" iperf3 -s -p "$port" "$@" || return 1
    wait_listen "$port" "$SERVER_PID" 10
}
measure_iperf3() { # PORT SECONDS
    local out
    out=$(client $(($2 + 30)) iperf3 -c 127.0.0.1 -p "$1" -t "$2" -J) || return 1
    python3 -c '
import json, sys
r = json.loads(sys.argv[1])
if "error" in r: sys.exit("iperf3: " + r["error"])
print("throughput\tGbit/s\thigher\t%.3f" % (r["end"]["sum_received"]["bits_per_second"] / 1e9))' "$out"
}

setup_iperf3-v4() { setup_iperf3 $PORT_IPERF_V4 -B 127.0.0.1; }
measure_iperf3-v4() { measure_iperf3 $PORT_IPERF_V4 "$1"; }

setup_iperf3-dual() {
    setup_iperf3 $PORT_IPERF_DUAL || return 1
    # The default server must listen on :: (dual stack), not 0.0.0.0.
    ip netns exec "$NS" ss -Hltn "sport = :$PORT_IPERF_DUAL" | grep -q '\[::\]\|\*:' ||
        { log "iperf3 -s does not listen on ::"; return 1; }
}
measure_iperf3-dual() { measure_iperf3 $PORT_IPERF_DUAL "$1"; }

# redis: redis-benchmark's default 50 connections, SET and GET, -P 1 and -P 16.
setup_redis() {
    mkdir -p "$TMP/redis"
    start_server redis redis-server --port $PORT_REDIS --bind 127.0.0.1 --save '' --appendonly no \
        --dir "$TMP/redis" --daemonize no --protected-mode no --logfile '' || return 1
    wait_listen $PORT_REDIS "$SERVER_PID" 10
}
measure_redis() { # PIPELINE REQUESTS
    local out
    out=$(client 300 redis-benchmark -h 127.0.0.1 -p $PORT_REDIS -t set,get -n "$2" -P "$1" --csv) || return 1
    # --csv: "test","rps","avg_latency_ms",...
    awk -F'"' '$2 == "SET" || $2 == "GET" { printf "%s\trequests/s\thigher\t%s\n", $2, $4; n++ }
               END { exit n == 2 ? 0 : 1 }' <<< "$out"
}
setup_redis-p1() { setup_redis; }
measure_redis-p1() { measure_redis 1 "$1"; }
setup_redis-p16() { setup_redis; }
measure_redis-p16() { measure_redis 16 "$1"; }

# nginx: one worker serving a 1 KiB file; wrk, one thread, 32 keep-alive connections.
setup_nginx() {
    local d=$TMP/nginx
    mkdir -p "$d/www" "$d/tmp"
    head -c 1024 /dev/zero | tr '\0' x > "$d/www/index.html"
    cat > "$d/nginx.conf" << EOF
daemon off;
master_process on;
worker_processes 1;
user root;
pid $d/nginx.pid;
error_log $d/error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    sendfile on;
    keepalive_requests 1000000;
    client_body_temp_path $d/tmp/body;
    proxy_temp_path $d/tmp/proxy;
    fastcgi_temp_path $d/tmp/fastcgi;
    uwsgi_temp_path $d/tmp/uwsgi;
    scgi_temp_path $d/tmp/scgi;
    server {
        listen 127.0.0.1:$PORT_NGINX;
        root $d/www;
    }
}
EOF
    start_server nginx nginx -c "$d/nginx.conf" -p "$d" -e "$d/error.log" || return 1
    wait_listen $PORT_NGINX "$SERVER_PID" 10
}
measure_nginx() { # SECONDS
    local out
    out=$(client $(($1 + 30)) wrk -t1 -c32 -d "${1}s" "http://127.0.0.1:$PORT_NGINX/index.html") || return 1
    if grep -q 'Non-2xx\|Socket errors' <<< "$out"; then
        log "wrk reported errors: $(grep 'Non-2xx\|Socket errors' <<< "$out")"
        return 1
    fi
    awk '/^Requests\/sec:/ { printf "requests\trequests/s\thigher\t%s\n", $2; n++ } END { exit n == 1 ? 0 : 1 }' <<< "$out"
}

# MariaDB: a fresh datadir, no grant tables (root without password), TCP on
# 127.0.0.1; sysbench oltp_read_write, 4 tables of 10000 rows, 4 threads.
SYSBENCH=(sysbench oltp_read_write --db-driver=mysql --mysql-host=127.0.0.1 "--mysql-port=$PORT_MARIADB"
    --mysql-user=root --mysql-db=sbtest --tables=4 --table-size=10000)
setup_mariadb() {
    local d=$TMP/mariadb
    mkdir -p "$d/data" "$d/tmp"
    client 120 mariadb-install-db --no-defaults --user=root --datadir="$d/data" \
        --auth-root-authentication-method=normal --skip-test-db > "$d/install.log" 2>&1 ||
        { log "mariadb-install-db failed"; tail -5 "$d/install.log" >&2; return 1; }
    start_server mariadb mariadbd --no-defaults --user=root --datadir="$d/data" --tmpdir="$d/tmp" \
        --socket="$d/mysqld.sock" --pid-file="$d/mariadbd.pid" --log-error="$d/error.log" \
        --port=$PORT_MARIADB --bind-address=127.0.0.1 --skip-grant-tables --skip-name-resolve \
        --skip-log-bin --innodb-buffer-pool-size=256M --innodb-flush-log-at-trx-commit=2 \
        --innodb-use-native-aio=0 --max-connections=100 || return 1
    wait_listen $PORT_MARIADB "$SERVER_PID" 60 ||
        { log "mariadbd did not listen"; tail -5 "$d/error.log" >&2; return 1; }
    client 30 mariadb --no-defaults -h 127.0.0.1 -P $PORT_MARIADB -u root \
        -e 'CREATE DATABASE IF NOT EXISTS sbtest' || return 1
    client 300 "${SYSBENCH[@]}" prepare > "$d/prepare.log" 2>&1 ||
        { log "sysbench prepare failed"; tail -5 "$d/prepare.log" >&2; return 1; }
}
measure_mariadb() { # SECONDS
    local out
    out=$(client $(($1 + 60)) "${SYSBENCH[@]}" --threads=4 --time="$1" --events=0 run) || return 1
    # "transactions:  12345  (1234.56 per sec.)" and "95th percentile:  5.67"
    awk '/^ *transactions:/ { gsub(/\(/, "", $3); printf "transactions\ttransactions/s\thigher\t%s\n", $3; n++ }
         /^ *95th percentile:/ { printf "p95 latency\tms\tlower\t%s\n", $3; n++ }
         END { exit n == 2 ? 0 : 1 }' <<< "$out"
}

# The amount of work of one measured run, and of the warm-up run.
work_for() { # WORKLOAD warmup|run
    case $1 in
        redis-p1) [ "$2" = run ] && echo $REDIS_N_P1 || echo $((REDIS_N_P1 / 4)) ;;
        redis-p16) [ "$2" = run ] && echo $REDIS_N_P16 || echo $((REDIS_N_P16 / 4)) ;;
        *) [ "$2" = run ] && echo $DURATION || echo $WARMUP ;;
    esac
}

# --- the measurement loop ------------------------------------------------------

# One line per metric and run: workload, metric, unit, better, mode, round,
# value (or FAIL), bytes redirected and bytes through TCP (B runs; "-" in A).
RAW=$TMP/raw.tsv
: > "$RAW"
SKIPPED=$TMP/skipped.tsv # workload, reason
: > "$SKIPPED"

record_fail() { # WORKLOAD MODE ROUND REASON
    printf '%s\t-\t-\t-\t%s\t%s\tFAIL\t-\t-\t%s\n' "$1" "$2" "$3" "$4" >> "$RAW"
}

run_workload() {
    local w=$1 c round mode out rc redirected tcp before_r before_t metric unit better value
    local first_server=${#PIDS[@]}
    for c in $(commands_for "$w"); do
        command -v "$c" > /dev/null || {
            printf '%s\t%s not installed\n' "$w" "$c" >> "$SKIPPED"
            log "$w: skipped ($c not installed)"
            return 0
        }
    done
    log "$w: starting servers"
    if ! "setup_$w"; then
        printf '%s\tserver setup failed\n' "$w" >> "$SKIPPED"
        log "$w: setup failed, skipped"
        stop_servers_since "$first_server"
        return 0
    fi
    # Warm-up (mode A, not recorded): caches, page cache, InnoDB buffer pool.
    "measure_$w" "$(work_for "$w" warmup)" > /dev/null || log "$w: warm-up run failed"
    for ((round = 1; round <= ROUNDS; round++)); do
        for mode in A B; do
            if [ $mode = B ]; then attach; fi
            check_effective $mode
            before_r=- before_t=- redirected=- tcp=-
            if [ $mode = B ]; then read -r before_r before_t < <(counters); fi
            rc=0
            out=$("measure_$w" "$(work_for "$w" run)") || rc=$?
            if [ $mode = B ]; then
                read -r redirected tcp < <(counters)
                redirected=$((redirected - before_r))
                tcp=$((tcp - before_t))
                detach
            fi
            if [ $rc != 0 ] || [ -z "$out" ]; then
                record_fail "$w" $mode "$round" "client failed (exit $rc)"
                log "$w round $round mode $mode: client failed (exit $rc)"
                continue
            fi
            while IFS=$'\t' read -r metric unit better value; do
                printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n' "$w" "$metric" "$unit" "$better" \
                    $mode "$round" "$value" "$redirected" "$tcp" >> "$RAW"
            done <<< "$out"
            log "$w round $round $mode: $(cut -f1,4 <<< "$out" | tr '\t' = | paste -sd ' ')" \
                "$([ $mode = A ] || echo "(bytes_redirected +$redirected)")"
        done
    done
    stop_servers_since "$first_server"
}

START=$(date -u +%Y-%m-%dT%H:%M:%SZ)
LOADAVG=$(cut -d' ' -f1-3 /proc/loadavg)
for w in $WORKLOADS; do run_workload "$w"; done
END=$(date -u +%Y-%m-%dT%H:%M:%SZ)

# --- report ------------------------------------------------------------------

mkdir -p "$OUT_DIR"
STAMP=$(date -u +%Y-%m-%d-%H%M%S)
MD=$OUT_DIR/apps-$STAMP.md
JSON=$OUT_DIR/apps-$STAMP.json

export RAW SKIPPED MD JSON START END LOADAVG ROUNDS QUICK CPUS DURATION REDIS_N_P1 REDIS_N_P16
BENCH_KERNEL=$(uname -r)
BENCH_NPROC=$(nproc)
BENCH_CPU_MODEL=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)
BENCH_RAWLOAD=$("$RAWLOAD" --version 2> /dev/null || echo unknown)
BENCH_COMMIT=$(git -C "$ROOT" describe --always --dirty 2> /dev/null || echo unknown)
BENCH_VERSIONS=$(
    for c in iperf3 redis-server nginx wrk mariadbd sysbench; do
        command -v $c > /dev/null || continue
        case $c in
            iperf3) iperf3 --version | head -1 | cut -d' ' -f1-2 ;;
            redis-server) redis-server --version | cut -d' ' -f1-3 ;;
            nginx) nginx -v 2>&1 | sed 's/.*: //' ;;
            wrk) wrk --version 2>&1 | head -1 | cut -d' ' -f1-2 ;;
            mariadbd) mariadbd --version | awk '{print "MariaDB", $3}' ;;
            sysbench) sysbench --version ;;
        esac
    done | paste -sd ';' | sed 's/;/; /g'
)
export BENCH_KERNEL BENCH_NPROC BENCH_CPU_MODEL BENCH_RAWLOAD BENCH_COMMIT BENCH_VERSIONS

python3 - << 'EOF'
import json, os, statistics

env = os.environ
labels = {
    "iperf3-v4": "iperf3, server on 127.0.0.1",
    "iperf3-dual": "iperf3, dual-stack server (::), client to 127.0.0.1",
    "redis-p1": "redis-benchmark -P 1 (50 conns)",
    "redis-p16": "redis-benchmark -P 16 (50 conns)",
    "nginx": "nginx 1 KiB file + wrk (32 conns)",
    "mariadb": "sysbench oltp_read_write, MariaDB (4 threads)",
}

runs = []
with open(env["RAW"]) as f:
    for line in f:
        w, metric, unit, better, mode, rnd, value, redir, tcp, note = line.rstrip("\n").split("\t")
        runs.append(dict(workload=w, metric=metric, unit=unit, better=better, mode=mode,
                         round=int(rnd), value=None if value == "FAIL" else float(value),
                         redirected=None if redir == "-" else int(redir),
                         tcp=None if tcp == "-" else int(tcp), note=note))
skipped = []
with open(env["SKIPPED"]) as f:
    for line in f:
        w, why = line.rstrip("\n").split("\t")
        skipped.append(dict(workload=w, reason=why))

def fmt(v):
    if v is None:
        return "-"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    if abs(v) >= 100:
        return f"{v:.1f}"
    return f"{v:.2f}"

def summary(values):
    if not values:
        return None
    return dict(median=statistics.median(values), min=min(values), max=max(values), n=len(values))

def cell(s):
    if s is None:
        return "no result"
    return f"{fmt(s['median'])} [{fmt(s['min'])}-{fmt(s['max'])}]"

def size(b):
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if b < 1024 or unit == "TiB":
            return f"{b:.0f} {unit}" if unit == "B" else f"{b:.1f} {unit}"
        b /= 1024

workloads = list(dict.fromkeys(r["workload"] for r in runs))
rows = []
for w in workloads:
    wr = [r for r in runs if r["workload"] == w]
    failed = {m: sum(1 for r in wr if r["mode"] == m and r["value"] is None) for m in "AB"}
    # A B run is valid only if bytes_redirected grew during it.
    b_runs = {r["round"]: r for r in wr if r["mode"] == "B" and r["value"] is not None}
    invalid_rounds = sorted(k for k, r in b_runs.items() if not r["redirected"])
    redirected = sum(r["redirected"] or 0 for r in b_runs.values())
    on_tcp = sum(r["tcp"] or 0 for r in b_runs.values())
    metrics = list(dict.fromkeys(r["metric"] for r in wr if r["value"] is not None))
    for m in metrics:
        mr = [r for r in wr if r["metric"] == m]
        a = summary([r["value"] for r in mr if r["mode"] == "A"])
        b = summary([r["value"] for r in mr if r["mode"] == "B" and r["round"] not in invalid_rounds])
        rows.append(dict(
            workload=w, label=labels.get(w, w), metric=m, unit=mr[0]["unit"], better=mr[0]["better"],
            a=a, b=b, ratio=(b["median"] / a["median"]) if a and b and a["median"] else None,
            a_values=[r["value"] for r in mr if r["mode"] == "A"],
            b_values=[r["value"] for r in mr if r["mode"] == "B"],
            valid=not invalid_rounds and b is not None,
            invalid_rounds=invalid_rounds, failed_runs=failed,
            b_bytes_redirected=redirected, b_bytes_on_tcp=on_tcp,
        ))
    if not metrics:
        rows.append(dict(workload=w, label=labels.get(w, w), metric="-", unit="", better="higher",
                         a=None, b=None, ratio=None, a_values=[], b_values=[], valid=False,
                         invalid_rounds=[], failed_runs=failed,
                         b_bytes_redirected=0, b_bytes_on_tcp=0))

cpus = env["CPUS"]
pinning = (f"servers and clients pinned together with `taskset -c {cpus}`"
           + (" (one CPU: on 2 vCPUs, a client and a server on different CPUs ping-pong"
              " bimodally between fast and slow runs, so by default both share one CPU;"
              " `--cpus LIST` changes this)" if "," not in cpus and "-" not in cpus else ""))
quick = env["QUICK"] == "1"
header = [
    "# rawload: applications with and without rawload",
    "",
    f"- kernel: {env['BENCH_KERNEL']}; {env['BENCH_NPROC']} CPUs ({env['BENCH_CPU_MODEL']}); "
    f"load average at start: {env['LOADAVG']}",
    f"- CPU pinning: {pinning}",
    f"- rawload: {env['BENCH_RAWLOAD']} (commit {env['BENCH_COMMIT']})",
    f"- tools: {env['BENCH_VERSIONS']}",
    f"- method: A = no rawload, B = rawload attached to the benchmark's private cgroup; "
    f"{env['ROUNDS']} round(s) interleaved A B A B ...; median [min-max]; "
    f"{env['DURATION']} s per timed run, redis -n {env['REDIS_N_P1']} (-P 1) / {env['REDIS_N_P16']} (-P 16)"
    + ("; **--quick: one short round, not a measurement**" if quick else ""),
    "- all servers and clients run in a private network namespace (loopback of their own) and a private cgroup",
    f"- {env['START']} to {env['END']}",
    "",
    "| workload | metric | A: no rawload | B: rawload | B/A | B redirected |",
    "|---|---|---|---|---|---|",
]
lines = []
for r in rows:
    unit = f"{r['metric']} ({r['unit']}{', lower is better' if r['better'] == 'lower' else ''})"
    b = cell(r["b"])
    if r["invalid_rounds"]:
        b = f"INVALID: nothing redirected in round(s) {', '.join(map(str, r['invalid_rounds']))}" + (
            f"; valid rounds {b}" if r["b"] else "")
    notes = []
    for m in "AB":
        if r["failed_runs"][m]:
            notes.append(f"{r['failed_runs'][m]} {m} run(s) failed")
    ratio = f"{r['ratio']:.2f}" if r["ratio"] is not None and r["valid"] else "-"
    total = r["b_bytes_redirected"] + r["b_bytes_on_tcp"]
    share = (f"{size(r['b_bytes_redirected'])} ({100 * r['b_bytes_redirected'] / total:.0f}%)"
             if total else "nothing")
    if notes:
        share += "; " + "; ".join(notes)
    lines.append(f"| {r['label']} | {unit} | {cell(r['a'])} | {b} | {ratio} | {share} |")
for s in skipped:
    lines.append(f"| {labels.get(s['workload'], s['workload'])} | - | skipped: {s['reason']} | - | - | - |")
footer = [
    "",
    "B/A > 1 means faster with rawload (for latency, < 1 is better). \"B redirected\": payload the",
    "sk_msg program moved socket to socket during the B runs, and its share of all payload it saw.",
]
text = "\n".join(header + lines + footer) + "\n"
with open(env["MD"], "w") as f:
    f.write(text)
print(text, end="")

doc = dict(
    kernel=env["BENCH_KERNEL"], nproc=int(env["BENCH_NPROC"]), cpu_model=env["BENCH_CPU_MODEL"],
    cpus=cpus, pinning=pinning, rawload=env["BENCH_RAWLOAD"], commit=env["BENCH_COMMIT"],
    tools=env["BENCH_VERSIONS"], rounds=int(env["ROUNDS"]), quick=quick,
    duration_s=int(env["DURATION"]), redis_requests={"P1": int(env["REDIS_N_P1"]), "P16": int(env["REDIS_N_P16"])},
    start=env["START"], end=env["END"], loadavg_at_start=env["LOADAVG"],
    rows=rows, skipped=skipped, runs=runs,
)
with open(env["JSON"], "w") as f:
    json.dump(doc, f, indent=2)
    f.write("\n")
EOF
log "written: $MD, $JSON"
