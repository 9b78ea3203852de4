# rawload: the two commands a user needs are `make` and `make test`.
#
#   make            build the static ./rawload (needs only cargo: the eBPF objects
#                   are committed in prebuilt/ and embedded into the binary)
#   make test       lint, prove prebuilt/ matches bpf-src/, unit + kernel tests
#   make conformance  build ./rawload-conformance, the socket-API conformance
#                   test (sudo ./rawload-conformance; docs/KERNEL-ISSUES.md)
#   make bpf        rebuild prebuilt/ and the test fixtures with clang-14
#
# Everything that needs root or a kernel runs as root on the real kernel.

SHELL       := /bin/bash
TARGET      := $(shell uname -m)-unknown-linux-gnu
CARGO       ?= cargo
STATIC_BIN  := target/$(TARGET)/release/rawload
CONFORMANCE_BIN := target/$(TARGET)/conformance/rawload-conformance
STATIC_FLAGS := -C target-feature=+crt-static -C relocation-model=static
CLANG       ?= clang-14
LLVM_STRIP  ?= llvm-strip-14
# -mcpu=v2: the instruction set every kernel since 4.14 runs (v3 adds JMP32,
# which needs 5.1; v4 needs 6.6). -g produces .BTF
# (needed for the .maps section). Stripped afterwards: the DWARF, so that the
# bytes do not depend on the checkout's path and `make check-prebuilt` can
# compare them, and .BTF.ext (line info for BTF loaded into the kernel, which
# rawload never does), which keeps the embedded objects and the binary small.
BPF_STRIP   = $(LLVM_STRIP) -g --remove-section=.BTF.ext --remove-section=.rel.BTF.ext
BPF_CFLAGS  := -O2 -g -target bpf -mcpu=v2 -Wall -Werror \
               -I/usr/include/$(shell uname -m)-linux-gnu -fdebug-prefix-map=$(CURDIR)=.
# The seeds' two objects, and the sk_msg one built three more ways from the
# same source (tests/fixtures/seed_redir.c says how).
SEED_PAIR   := tests/fixtures/seed_sockops.o tests/fixtures/seed_redir.o
SEED_REDIR_VARIANTS := tests/fixtures/seed_redir_btf.o tests/fixtures/seed_redir_small.o \
               tests/fixtures/seed_redir_reject.o
# Where `make bpf` writes; check-prebuilt points it at a scratch directory.
BPF_OUT     ?= .
BPF_OBJECTS := prebuilt/rawload.bpf.o prebuilt/rawload-debug.bpf.o \
               tests/fixtures/seed_legacy.o tests/fixtures/verifier_reject.o \
               tests/fixtures/globals.o tests/fixtures/other_sockops.o \
               $(SEED_PAIR) $(SEED_REDIR_VARIANTS)

APT_TEST_PACKAGES := bpftool iproute2 nftables clang-14 llvm-14 linux-libc-dev \
                     qemu-system-x86 busybox-static cpio lz4 zstd xz-utils bc util-linux systemd \
                     podman runc

.PHONY: all rawload conformance test lint bpf check-prebuilt test-deps kernel-matrix torture fuzz clean \
        bench bench-apps bench-loaders

all: rawload

# A fully static, self-contained binary, at most 2.25 MiB (checked; 2 MiB
# until issue 11's namespace scanner and object combiner took it to 2.06
# MiB: the budget is there to catch a dependency or glibc's NSS sneaking
# in). --target
# must be explicit with crt-static so the flag does not reach build scripts
# and proc-macros. Not position-independent: static-pie carries ~90 KB of
# relocations, and the budget matters more for a short-lived root CLI than
# ASLR of its image. (Binding sockets by address, never by name, also keeps
# glibc's getaddrinfo and its NSS machinery, ~130 KB, out of it.)
rawload:
	RUSTFLAGS='$(STATIC_FLAGS)' $(CARGO) build --release --locked --target $(TARGET) --bin rawload
	cp $(STATIC_BIN) ./rawload
	@size=$$(stat -c %s ./rawload); [ $$size -le 2359296 ] || { echo "./rawload is $$size bytes, over its 2.25 MiB budget"; exit 1; }
	@echo "built ./rawload ($$(stat -c %s ./rawload) bytes); next: sudo ./rawload attach"

# The socket-API conformance test (conformance/main.rs): a second binary of
# the package, static with the same flags, so it runs in the kernel matrix's
# initramfs too. Its profile is release with unwinding: the guards that
# detach rawload and remove its private cgroups must also run on a panic.
# Not part of `all`: people who run rawload do not need it.
conformance:
	RUSTFLAGS='$(STATIC_FLAGS)' $(CARGO) build --profile conformance --locked --target $(TARGET) --bin rawload-conformance
	cp $(CONFORMANCE_BIN) ./rawload-conformance
	@echo "built ./rawload-conformance; run: sudo ./rawload-conformance [--json] (it tests ./rawload)"

# --- eBPF objects ---------------------------------------------------------

bpf: $(addprefix $(BPF_OUT)/,$(BPF_OBJECTS))

$(BPF_OUT)/prebuilt/rawload.bpf.o: bpf-src/rawload.bpf.c bpf-src/helpers.h
	@mkdir -p $(@D)
	$(CLANG) $(BPF_CFLAGS) -c $< -o $@
	$(BPF_STRIP) $@

$(BPF_OUT)/prebuilt/rawload-debug.bpf.o: bpf-src/rawload.bpf.c bpf-src/helpers.h
	@mkdir -p $(@D)
	$(CLANG) $(BPF_CFLAGS) -DRAWLOAD_DEBUG -c $< -o $@
	$(BPF_STRIP) $@

$(BPF_OUT)/tests/fixtures/seed_legacy.o: tests/fixtures/seed_legacy.c
	@mkdir -p $(@D)
	$(CLANG) $(BPF_CFLAGS) -c $< -o $@
	$(BPF_STRIP) $@

$(BPF_OUT)/tests/fixtures/verifier_reject.o: tests/fixtures/verifier_reject.c bpf-src/helpers.h
	@mkdir -p $(@D)
	$(CLANG) $(BPF_CFLAGS) -c $< -o $@
	$(BPF_STRIP) $@

$(BPF_OUT)/tests/fixtures/globals.o: tests/fixtures/globals.c bpf-src/helpers.h
	@mkdir -p $(@D)
	$(CLANG) $(BPF_CFLAGS) -c $< -o $@
	$(BPF_STRIP) $@

$(BPF_OUT)/tests/fixtures/other_sockops.o: tests/fixtures/other_sockops.c bpf-src/helpers.h
	@mkdir -p $(@D)
	$(CLANG) $(BPF_CFLAGS) -c $< -o $@
	$(BPF_STRIP) $@

$(addprefix $(BPF_OUT)/,$(SEED_PAIR)): $(BPF_OUT)/%.o: %.c tests/fixtures/seed.h
	@mkdir -p $(@D)
	$(CLANG) $(BPF_CFLAGS) -c $< -o $@
	$(BPF_STRIP) $@

$(BPF_OUT)/tests/fixtures/seed_redir_btf.o: SEED_FLAGS := -DSEED_MAP_BTF
$(BPF_OUT)/tests/fixtures/seed_redir_small.o: SEED_FLAGS := -DSEED_MAP_ENTRIES=1024
$(BPF_OUT)/tests/fixtures/seed_redir_reject.o: SEED_FLAGS := -DSEED_UNCHECKED_READ
$(addprefix $(BPF_OUT)/,$(SEED_REDIR_VARIANTS)): tests/fixtures/seed_redir.c tests/fixtures/seed.h
	@mkdir -p $(@D)
	$(CLANG) $(BPF_CFLAGS) $(SEED_FLAGS) -c $< -o $@
	$(BPF_STRIP) $@

# Rebuild every object into a scratch directory and compare byte for byte:
# the committed objects are exactly what the committed sources produce.
check-prebuilt: test-deps
	@tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	$(MAKE) --no-print-directory -s -B bpf BPF_OUT="$$tmp" >/dev/null && \
	for o in $(BPF_OBJECTS); do \
		cmp "$$o" "$$tmp/$$o" || { echo "$$o is not what its source builds: run 'make bpf' and commit the result"; exit 1; }; \
	done && echo "check-prebuilt: $(words $(BPF_OBJECTS)) objects match their sources"

# --- tests ----------------------------------------------------------------

# Debian packages the tests use: bpftool to cross-check what rawload reports,
# clang-14 to prove prebuilt/ matches bpf-src/ and, with linux-libc-dev's
# headers, that the bpf(2) blocks of loader/src/sys/attr.rs match
# linux/bpf.h (tests/abi.rs). Installed only when missing.
test-deps:
	@missing=""; for p in $(APT_TEST_PACKAGES); do \
		dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'install ok installed' || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --locked --workspace --all-targets -- -D warnings

# Kernel tests attach real programs; they must run as root and one at a time
# (they share the machine's loopback counters). The host kernel is one row of
# the kernel matrix; the others boot under qemu. ./rawload (static) first:
# tests/daemonset_podman.rs puts it into the DaemonSet's scratch image.
test: test-deps lint check-prebuilt rawload
	@[ "$$(id -u)" = 0 ] || { echo "make test needs root (the tests load eBPF programs): sudo make test"; exit 1; }
	$(CARGO) test --locked --workspace -- --test-threads=1
	$(MAKE) --no-print-directory kernel-matrix

# The long form of the data-path torture suite (the short form is part of
# make test): GiB-scale transfers, tens of thousands of connections. Each
# scenario prints a TORTURE line; the log is kept in torture.log.
torture: test-deps
	@[ "$$(id -u)" = 0 ] || { echo "make torture needs root: sudo make torture"; exit 1; }
	set -o pipefail; RAWLOAD_TORTURE=long $(CARGO) test --release --locked --test torture -- --test-threads=1 --nocapture 2>&1 | tee torture.log
	@grep -o 'TORTURE .*' torture.log

# cargo fuzz on the ELF/BTF/relocation code (nightly toolchain; fuzz/README.md).
FUZZ_RUNS ?= 10000000
fuzz: test-deps
	command -v cargo-fuzz >/dev/null || $(CARGO) install cargo-fuzz --locked
	rm -rf fuzz/corpus && mkdir -p fuzz/corpus/object fuzz/corpus/btf
	for o in $(BPF_OBJECTS); do \
		cp $$o fuzz/corpus/object/; \
		llvm-objcopy-14 --dump-section .BTF=fuzz/corpus/btf/$$(basename $$o).btf $$o /dev/null 2>/dev/null || true; \
	done
	for t in object btf; do cp fuzz/regressions/$$t/* fuzz/corpus/$$t/; done
	for t in object btf; do tar -xJf fuzz/replay/$$t.tar.xz -C fuzz/corpus/$$t; done
	cd fuzz && $(CARGO) +nightly fuzz run object corpus/object -- -runs=$(FUZZ_RUNS) -max_len=65536 -print_final_stats=1
	cd fuzz && $(CARGO) +nightly fuzz run btf corpus/btf -- -runs=$(FUZZ_RUNS) -max_len=65536 -print_final_stats=1
	# Keep one input per coverage feature for tests/fuzz_regressions.rs.
	for t in object btf; do \
		(cd fuzz && $(CARGO) +nightly fuzz cmin $$t corpus/$$t) && \
		tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C fuzz/corpus/$$t -cf - . | xz -9e > fuzz/replay/$$t.tar.xz; \
	done

# --- benchmarks (root; private cgroup and netns, loopback only) -----------
# See docs/PERFORMANCE.md for results and bench/README.md for the methods.

# Plain TCP vs rawload vs AF_UNIX on microbenchmarks: BENCH_ARGS="--quick".
bench: rawload
	@[ "$$(id -u)" = 0 ] || { echo "make bench needs root: sudo make bench"; exit 1; }
	./rawload bench $(BENCH_ARGS)

# iperf3, redis, nginx+wrk, mariadb+sysbench with and without rawload
# (bench/apps.sh), then HTTP between podman containers (bench/containers.sh:
# wrk -> nginx load balancer -> two nginx backends, and wrk -> nginx inside
# one container). BENCH_ARGS go to both (--quick, --rounds N, --cpus LIST);
# CONTAINERS=0 skips the containers.
CONTAINERS ?= 1
bench-apps: rawload
	@[ "$$(id -u)" = 0 ] || { echo "make bench-apps needs root: sudo make bench-apps"; exit 1; }
	bench/apps.sh $(BENCH_ARGS)
	@[ "$(CONTAINERS)" = 0 ] || bench/containers.sh $(BENCH_ARGS)

# The cost of loading: rawload vs bpftool vs aya (attach/detach time, RSS, size).
bench-loaders: rawload test-deps
	@[ "$$(id -u)" = 0 ] || { echo "make bench-loaders needs root: sudo make bench-loaders"; exit 1; }
	bench/loader-cost.sh $(RUNS)

# Debian's 5.10, 6.1 and 6.12 kernels under qemu, and this host's kernel,
# each running rawload doctor + selftest + the behaviour probes + the
# conformance test (tests/vm/).
# Kernels are cached in .cache/kernels.
kernel-matrix: test-deps rawload conformance
	tests/vm/kernel-matrix.sh

clean:
	$(CARGO) clean
	rm -f ./rawload ./rawload-conformance
