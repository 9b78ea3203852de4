#!/bin/sh
# What the kernel matrix runs on each kernel: in a qemu guest (from
# tests/vm/init) and on the host itself (from kernel-matrix.sh). Prints
# MATRIX lines that kernel-matrix.sh tabulates; the verdict is the line
# "MATRIX VERDICT" (only the conformance lines follow it).
# `rawload` must be on PATH; CGROUP2 names the cgroup2 mount.
echo "MATRIX BOOTED kernel=$(uname -r) uptime=$(cut -d' ' -f1 /proc/uptime)"
[ -x /extra/run.sh ] && /extra/run.sh 2>&1 | sed 's/^/MATRIX EXTRA /'
doctor=$(rawload doctor 2>&1); doctor_rc=$?
echo "$doctor" | sed 's/^/MATRIX DOCTOR /'
rawload selftest --bytes "${RAWLOAD_BYTES:-16M}" 2>&1; selftest_rc=$?
# Informational: how this kernel treats sockmap sockets (never the verdict).
behaviours.sh 2>&1 | grep '^MATRIX'
# Informational too: two namespaces on a bridge, as containers are
# (tests/vm/containers.sh). Its own waits are bounded, and this bounds the
# whole (TERM lets it clean up; KILL 10 s later).
timeout -k 10 180 containers.sh 2>&1 | grep '^MATRIX' ||
    echo "MATRIX WARN containers.sh printed no MATRIX line (ended by its timeout?)"
if [ "$doctor_rc" = 0 ] && [ "$selftest_rc" = 0 ]; then verdict=PASS; else verdict=FAIL; fi
echo "MATRIX VERDICT: $verdict kernel=$(uname -r) doctor_rc=$doctor_rc selftest_rc=$selftest_rc uptime=$(cut -d' ' -f1 /proc/uptime)"
# Informational too, and after the verdict, so that nothing it does (a hang,
# a guest crash) can change it: the socket-API conformance test, as "MATRIX
# CONFORMANCE" lines. RAWLOAD_TIME_SCALE stretches its bounded waits (qemu
# TCG guests).
if command -v rawload-conformance > /dev/null; then
    # (No grep in between: a pipe would hold the lines back until the end.)
    rawload-conformance --rawload "$(command -v rawload)" --time-scale "${RAWLOAD_TIME_SCALE:-1}" 2>&1 |
        sed 's/^/MATRIX /'
else
    echo "MATRIX WARN rawload-conformance is missing (make conformance)"
fi
