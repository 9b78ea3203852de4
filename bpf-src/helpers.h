/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The few definitions rawload's eBPF programs need, written out instead of
 * pulling in libbpf's headers, so that every number is visible.
 *
 * A BPF helper is called by number: `call 71` jumps into the kernel's
 * bpf_msg_redirect_hash(). Declaring each helper as a pointer whose value is
 * that number makes clang emit exactly that `call imm`. The numbers are the
 * positions in `__BPF_FUNC_MAPPER` in include/uapi/linux/bpf.h and never
 * change once a kernel has shipped them.
 */
#ifndef RAWLOAD_HELPERS_H
#define RAWLOAD_HELPERS_H

#include <linux/bpf.h>

#define SEC(name) __attribute__((section(name), used))
#undef __always_inline
#define __always_inline inline __attribute__((always_inline))

/* BTF-defined map attributes (the `.maps` convention libbpf introduced):
 * `__uint(type, 18)` becomes `int (*type)[18]`, so the number is recorded in
 * BTF as an array length, and `__type(key, T)` becomes `T *key`, recording
 * the key's type and therefore its size. The loader reads them back from
 * `.BTF` (obj/src/btf.rs). */
#define __uint(name, val) int (*name)[val]
#define __type(name, val) typeof(val) *name

/* BPF_FUNC_map_lookup_elem = 1 */
static void *(*bpf_map_lookup_elem)(void *map, const void *key) = (void *)1;
/* BPF_FUNC_map_update_elem = 2 */
static long (*bpf_map_update_elem)(void *map, const void *key,
				   const void *value, __u64 flags) = (void *)2;
/* BPF_FUNC_map_delete_elem = 3 */
static long (*bpf_map_delete_elem)(void *map, const void *key) = (void *)3;
/* BPF_FUNC_trace_printk = 6 (GPL only; at most three arguments; 5.16 added
 * bpf_trace_vprintk for more) */
static long (*bpf_trace_printk)(const char *fmt, __u32 fmt_size, ...) = (void *)6;
/* BPF_FUNC_sock_ops_cb_flags_set = 59 (sock_ops only, 4.16): which extra
 * callbacks this socket's sock_ops program gets, e.g. state changes. */
static long (*bpf_sock_ops_cb_flags_set)(struct bpf_sock_ops *skops, int flags) = (void *)59;
/* BPF_FUNC_sock_hash_update = 70 (sock_ops only) */
static long (*bpf_sock_hash_update)(struct bpf_sock_ops *skops, void *map,
				    void *key, __u64 flags) = (void *)70;
/* BPF_FUNC_msg_redirect_hash = 71 (sk_msg only): returns SK_PASS when the
 * key was found and the redirect is armed, SK_DROP otherwise. */
static long (*bpf_msg_redirect_hash)(struct sk_msg_md *msg, void *map,
				     void *key, __u64 flags) = (void *)71;
/* BPF_FUNC_get_netns_cookie = 122 (sock_ops and sk_msg since 5.15) */
static __u64 (*bpf_get_netns_cookie)(void *ctx) = (void *)122;

/* BPF_FUNC_skc_to_tcp_sock = 137 (networking programs since 5.10, needs
 * CAP_PERFMON): the socket as the kernel's struct tcp_sock, a pointer the
 * verifier lets the program read through, checked against the kernel's BTF. */
struct tcp_sock;
static struct tcp_sock *(*bpf_skc_to_tcp_sock)(void *sk) = (void *)137;

/* Byte order: these programs only run on little-endian x86_64/arm64 hosts
 * in practice, but the builtins keep the code correct on big-endian too. */
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define bpf_htonl(x) __builtin_bswap32(x)
#define bpf_ntohl(x) __builtin_bswap32(x)
#else
#define bpf_htonl(x) (x)
#define bpf_ntohl(x) (x)
#endif

/* Force a full 32-bit load of a context field. clang likes to narrow
 * `field & 0xffff` into a 16-bit load, which older verifiers reject for the
 * port fields of bpf_sock_ops and sk_msg_md. */
#define READ_U32(field) (*(volatile __u32 *)&(field))

#endif
