// SPDX-License-Identifier: GPL-2.0
/*
 * rawload's eBPF programs.
 *
 *   sock_ops (cgroup v2, BPF_CGROUP_SOCK_OPS)
 *       When a TCP connection of a process in the cgroup becomes established,
 *       and both ends live on this host, put the socket into `rawload_socks`,
 *       a SOCKHASH keyed by the connection as seen from that socket. Later,
 *       take it out again when nobody can redirect into it any more (see
 *       "Leaving the map" below).
 *
 *   sk_msg (attached to rawload_socks, BPF_SK_MSG_VERDICT)
 *       Runs on every sendmsg() of a socket in the map. Looks up the peer
 *       socket (the same key with the two ends swapped) and redirects the
 *       bytes straight into the peer's receive queue (BPF_F_INGRESS), unless
 *       the peer has not read enough of what it already got (see
 *       "Backpressure"). Always returns SK_PASS: what is not redirected takes
 *       TCP, and once a socket has sent through TCP it never redirects again.
 *
 *   sk_skb (attached to rawload_socks, BPF_SK_SKB_STREAM_VERDICT; only on
 *   kernels where the loader's FIONREAD probe finds the 2026 regression)
 *       Passes every TCP segment a socket in the map receives. With a verdict
 *       program on the map, the kernel queues TCP bytes where FIONREAD counts
 *       them (docs/KERNEL-ISSUES.md).
 *
 * Every socket in the map has its state (struct sock_state) in a slot of
 * `rawload_conns`, an array, found from its own key. Both programs read the
 * peer's state through the swapped key: that is how the two ends of a
 * connection learn about each other.
 *
 * Build: clang-14 -O2 -g -target bpf -mcpu=v2 (see the Makefile). -mcpu=v2
 * keeps the instruction set loadable on old 5.x kernels; RAWLOAD_DEBUG
 * builds the variant that prints trace lines (`rawload attach --debug`).
 */
#include "helpers.h"

#define AF_INET 2
#define AF_INET6 10

char LICENSE[] SEC("license") = "GPL";

/*
 * Configuration the loader writes into .rodata before loading. Because the
 * loader freezes .rodata and the map is BPF_F_RDONLY_PROG, the verifier sees
 * these as constants and drops the branches they switch off: a kernel
 * without bpf_get_netns_cookie never even checks the call below.
 */
const volatile __u32 cfg_netns_cookie = 0; /* 1: key includes the netns cookie */
/* 1: sockets in different namespaces pair when rawload_owners proves both
 * addresses (needs cfg_netns_cookie). See "Across namespaces". */
const volatile __u32 cfg_cross_netns = 0;
const volatile __u32 cfg_port_allow = 0;   /* 1: only connections with a port in allow */
const volatile __u32 cfg_port_deny = 0;    /* 1: never connections with a port in deny */
/* The most bytes a socket may redirect that its peer has not read yet
 * (--stream-bytes; 0: no bound). See "Backpressure". */
const volatile __u32 cfg_stream_bytes = 0;
/* 1: the kfield_* offsets below are filled in (the kernel has BTF). */
const volatile __u32 cfg_kfields = 0;
/* 1: this kernel counts redirected bytes in the receiver's sk_rmem_alloc
 * (6.13, and stable kernels since 6.1.122): a socket's sk_rmem_alloc is then
 * everything that waits for it to be read. The loader's probe decides. */
const volatile __u32 cfg_rmem_counts_redirect = 0;
/* 1: the sk_skb verdict is attached, so TCP bytes that arrive at a socket in
 * the map wait in its redirect queue too (and would go with it). */
const volatile __u32 cfg_skb_verdict = 0;
/* The number of slots in rawload_conns: its max_entries as created (the
 * object's, or --max-sockets). See "Slots". */
const volatile __u32 cfg_conn_slots = 0;

/*
 * Fields of the kernel's struct sock (and struct tcp_sock, which starts
 * with it), which sit at different offsets in every kernel build. The
 * loader looks each one up by name in the running kernel's BTF
 * (/sys/kernel/btf/vmlinux) and writes where it is: the name of the
 * variable is the path, kfield_<struct>__<member>[__<member>...]. This is
 * what libbpf's CO-RE does by rewriting instructions; rawload does it with
 * one constant per field, which the verifier folds like the cfg_* above.
 * `width` is set here, as the size of the load the program does; the loader
 * checks that the field (or bitfield) fits in it.
 */
struct kfield {
	__u32 offset;  /* bytes from the start of struct sock (= of struct tcp_sock) */
	__u8 width;    /* bytes loaded: 1 or 4 */
	__u8 shift;    /* bitfields: the field's first bit in the loaded value */
	__u8 bits;     /* the field's width in bits */
	__u8 pad;
};

const volatile struct kfield kfield_sock__sk_backlog__rmem_alloc = { .width = 4 };
const volatile struct kfield kfield_sock__sk_rcvbuf = { .width = 4 };
const volatile struct kfield kfield_sock__sk_sndbuf = { .width = 4 };
const volatile struct kfield kfield_sock__sk_userlocks = { .width = 1 };
/* The next byte the application will read (TCP sequence space). */
const volatile struct kfield kfield_tcp_sock__copied_seq = { .width = 4 };

/* include/net/sock.h: the application set SO_SNDBUF / SO_RCVBUF itself. */
#define SOCK_SNDBUF_LOCK 1
#define SOCK_RCVBUF_LOCK 2

/* The priority of the loader's own probe sockets (SO_PRIORITY; PROBE_PRIORITY
 * in loader/src/probe.rs): never accelerated, so that a rawload attachment
 * above the prober cannot change the answer. */
#define RAWLOAD_PROBE_PRIORITY 0x72617770

/*
 * The key of one socket: the connection seen from that socket. Addresses are
 * always in IPv6 form, with IPv4 as ::ffff:a.b.c.d, so that a dual-stack
 * (AF_INET6) server socket holding a v4-mapped address and its AF_INET
 * client build matching keys. Ports are in host order. All fields are
 * filled, padding-free, 48 bytes.
 */
struct sock_key {
	__u64 netns;          /* netns cookie, 0 when cfg_netns_cookie is off */
	__u32 local_ip[4];    /* network byte order */
	__u32 remote_ip[4];   /* network byte order */
	__u32 local_port;     /* host byte order */
	__u32 remote_port;    /* host byte order */
};

/* Per-CPU counters; user space sums the CPUs (`rawload status`). The order
 * of the fields is the order of COUNTER_NAMES in loader/src/contract.rs. */
struct counters {
	__u64 sockets_inserted;
	__u64 insert_exists;       /* -EEXIST: key already present */
	__u64 insert_full;         /* -E2BIG: the SOCKHASH is full */
	__u64 insert_busy;         /* -EBUSY: socket already used by another sockmap user */
	__u64 insert_other;        /* any other error, or no room for its state */
	__u64 skipped_remote;      /* the peer is not on this host */
	__u64 skipped_port;        /* neither port is in the --ports policy */
	__u64 skipped_sent;        /* payload already left through TCP (fast open) */
	__u64 skipped_peer;        /* server socket whose client is not in the map */
	__u64 peers_removed;       /* clients taken out again because their server stays out */
	__u64 msgs_redirected;
	__u64 bytes_redirected;
	__u64 msgs_missed;         /* peer not in the map: sent through TCP */
	__u64 bytes_missed;
	__u64 msgs_tcp_only;       /* a socket that sent through TCP once stays on TCP */
	__u64 bytes_tcp_only;
	__u64 streams_to_tcp;      /* sockets whose peer had cfg_stream_bytes unread: TCP from then on */
	__u64 left_unpaired;       /* left the map: its peer never joined (outside the cgroup, namespace, NAT) */
	__u64 left_peer_gone;      /* left the map: its peer left or closed */
	__u64 left_tcp;            /* left the map: both directions take TCP */
	__u64 state_missing;       /* a send of a socket in the map without its state (it left during a long sendmsg, or the map was full): TCP */
	__u64 oneway_to_tcp;       /* sockets that sent a long run of small messages their peer never answered: TCP from then on */
	__u64 follow_to_tcp;       /* sockets whose peer took TCP: TCP from then on, so both can leave the map */
	__u64 skipped_netns;       /* the peer's address belongs to another namespace, this socket's address is not provably its own */
	__u64 joined_netns;        /* sockets that joined to pair with a peer in another namespace */
};

struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, 65536);
	__type(key, struct sock_key);
	__type(value, __u64); /* 8 bytes: a lookup from user space returns the socket cookie */
} rawload_socks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct counters);
} rawload_stats SEC(".maps");

/* This host's own addresses (IPv6 form), filled by the loader. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, __u32[4]);
	__type(value, __u8);
} rawload_addrs SEC(".maps");

/*
 * Across namespaces. The key's netns cookie keeps sockets of different
 * namespaces apart: identical addresses and ports in two isolated
 * namespaces (two containers that both hold 10.0.0.2) are two different
 * connections. Two namespaces connected through this host (veth ports of
 * one bridge, docker0, cni0, podman0) are a different matter: their
 * sockets are two ends of one connection, and pairing them bypasses the
 * veths and the bridge.
 *
 * rawload_owners maps an address to the one namespace that holds it, for
 * the addresses the loader proved unique on this host and connected (held
 * by exactly one namespace it knows of: the host's, or one whose veth is a
 * port of a host bridge). A socket in namespace N from local address A to
 * remote address R pairs across namespaces only when owner(A) is N and
 * owner(R) is another namespace M: its peer is then the socket of M with
 * the swapped addresses and ports, and M's socket, by the same rule,
 * finds it. No other socket can hold either key: a namespace holds a
 * 4-tuple at most once, and A and R have one owner each. Both sockets
 * reached ESTABLISHED through the real path (bridge, routing, netfilter),
 * so a connection the host's firewall refuses never pairs.
 *
 * The map may lag behind containers that come and go: an address it does
 * not know takes the rules without it (a remote address of another
 * namespace is not on this host: TCP), a stale owner makes the check fail
 * (the new holder's cookie differs: netns cookies are never reused).
 * Either way the connection keeps plain TCP, for its whole life.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32[4]); /* IPv6 form, network byte order */
	__type(value, __u64);  /* the netns cookie of the namespace holding it */
} rawload_owners SEC(".maps");

/* --ports and --exclude-ports as bitmaps: bit p of allow (deny) set = port p
 * listed. A connection is accelerated if one of its ports is allowed (when
 * there is an allow list) and neither is denied. */
struct port_policy {
	__u64 allow[1024];
	__u64 deny[1024];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct port_policy);
} rawload_ports SEC(".maps");

/*
 * What each socket in the map is doing, under its own key.
 *
 * SOCK_REDIRECT: in the map, its sends are redirected to its peer.
 *
 * SOCK_TCP: its sends take TCP from now on, for good: its peer was not in
 * the map when it sent (the client can send before the server's accepted
 * socket reaches PASSIVE_ESTABLISHED, or the peer never joins), its peer
 * had too much unread (Backpressure), it sent a long run of small messages
 * its peer never answered (One-way runs), or its peer took TCP first. It
 * must never redirect again: the reader drains redirected bytes before its
 * TCP receive queue, so later redirected bytes would overtake earlier TCP
 * bytes. Only the socket's own sk_msg changes its state, under the socket's
 * lock, so each of its redirects has reached the peer before it changes.
 *
 * One-way runs. A redirect costs more per message than TCP when nobody
 * answers: TCP batches a one-way stream of small writes at the reader, a
 * redirect wakes the reader for each. Measured on 6.18, a one-way stream of
 * writes below 16 KiB is 0.6-0.8x of TCP redirected, above it 1.2-1.9x; a
 * conversation of any size is faster redirected. So a socket that has
 * redirected ONEWAY_MSGS messages since its peer last sent anything, at
 * fewer than ONEWAY_AVG bytes each on average, takes TCP (with
 * cfg_stream_bytes, which switches every stream policy on).
 *
 * Backpressure. TCP stops a writer when the reader's buffers are full; a
 * redirect has no such limit: the bytes are queued on the reader with no
 * per-socket bound (docs/KERNEL-ISSUES.md §3). So the writer counts: `sent`
 * is every byte it redirected, and the reader reports, each time it runs
 * (its own sends, and sock_ops at each of its TCP transmissions), what still
 * waits in its queues (`unread`, its sk_rmem_alloc) and how much of the
 * writer's `sent` it had seen then (`peer_sent_seen`). Bytes still unread by
 * the peer are therefore at most
 *
 *     peer->unread + (own->sent - peer->peer_sent_seen)
 *
 * (to within one message in flight at the report), and a writer whose next
 * message would take that past the bound sends through TCP instead: TCP's
 * flow control then blocks it, or makes it see EAGAIN, exactly as without
 * rawload. The bound is cfg_stream_bytes, or the reader's SO_RCVBUF and the
 * writer's SO_SNDBUF where the application set them. Where the kernel does
 * not count redirected bytes in sk_rmem_alloc (before 6.13 and its
 * backports) a report can only say "0": the bound then restarts whenever the
 * reader sends, which holds for conversations and one-way streams but not
 * for a reader that sends without reading (KERNEL-ISSUES §3).
 *
 * Leaving the map. A socket in the map runs the kernel's tcp_bpf paths even
 * for the bytes it sends or receives through TCP (slower, and with the
 * FIONREAD quirks of KERNEL-ISSUES §2), so a socket leaves the map once
 *
 *   - nobody can redirect into it: its peer is not in the map, sends
 *     through TCP, or never redirected into it while this socket takes TCP
 *     (a peer claims `redirected_into` with a full-barrier atomic before it
 *     looks at this socket's state, and this socket's state becomes
 *     SOCK_TCP with one: whichever comes second sees the other, so a peer
 *     that claims afterwards sees SOCK_TCP and takes TCP itself);
 *   - none of its own redirects is still on its way: it takes TCP itself,
 *     or never redirected (a redirect releases the sender's lock before it
 *     locks the peer, and a peer that left the map meanwhile would fail it
 *     with EPIPE);
 *   - its redirect queue is empty (leaving drops the queue): nothing was
 *     ever redirected into it, or nothing waits to be read at all (where the
 *     kernel counts it), or, without the sk_skb verdict, the application has
 *     read a TCP byte its peer sent (the kernel serves the redirect queue
 *     first, and a peer sends through TCP only after its last redirect).
 *
 * sock_ops does it at the socket's next TCP transmission
 * (BPF_SOCK_OPS_HDR_OPT_LEN_CB, asked for with
 * BPF_SOCK_OPS_WRITE_HDR_OPT_CB_FLAG): for a client whose server runs
 * outside the cgroup, its first send or the ACK of the first bytes it
 * receives; for a stream, the writer at its next segment and the reader at
 * an ACK after it read a TCP byte. sk_msg programs may not delete from a
 * SOCKHASH (since 6.10), sock_ops may.
 *
 * The state goes (its slot is freed) when its socket leaves the map or
 * closes (BPF_SOCK_OPS_STATE_CB). A socket in the map without a state (its
 * slot was taken from it, another tool cleared our callback flags) is
 * treated as SOCK_TCP.
 */
#define SOCK_NONE 0
#define SOCK_REDIRECT 1
#define SOCK_TCP 2

struct sock_state {
	__u32 state;
	__u32 redirected_into; /* non-zero once its peer claimed it for a redirect (written by the peer) */
	__u64 sent;            /* bytes it redirected to its peer (its own sk_msg writes it) */
	__u64 peer_sent_seen;  /* its peer's `sent` at its last report */
	__u32 unread;          /* at its last report: bytes waiting to be read (sk_rmem_alloc) */
	__u32 rcvbuf;          /* at its last report: its SO_RCVBUF if the application set one, else 0 */
	__u32 peer_missing;    /* its redirect missed: its peer is not in the SOCKHASH */
	__u32 cb_flags;        /* the sock_ops callbacks rawload asked for (and will unask) */
	__u32 joined_seq;      /* rcv_nxt when it joined: a copied_seq past it means a TCP byte was read */
	__u32 run_msgs;        /* messages redirected since its peer last sent (One-way runs) */
	__u64 run_bytes;       /* their bytes */
	__u64 run_peer_sent;   /* its peer's `sent` when the run began */
	__u64 peer_netns;      /* the netns cookie in its peer's key (Across namespaces) */
};

/*
 * Slots. The states live in an array, not a hash map: the verifier turns an
 * array lookup into a bounds check and an add, where a hash-map lookup is a
 * call into the kernel that costs sk_msg about 95 ns per message on the
 * development host (docs/perf/sk-msg-ablation.md), more than everything else
 * the program does. A socket's state is in one of the two slots of its set,
 * which a hash of its key picks (set_of), and the slot holds the key, so
 * that a socket finds its own state and its peer's by key, as in a hash map.
 *
 * A socket takes a free slot of its set when it joins (claim_slot): an
 * atomic add on `claimed`, then a read; of two sockets that add at once at
 * most one reads 1, and the other takes its add back (compare-and-exchange
 * needs -mcpu=v3 and 5.12; atomic adds are full barriers on x86-64). With
 * both slots taken the socket stays on TCP (insert_full). Only the slot's
 * own socket frees it, under its socket lock, when it leaves the map or
 * closes (a slot freed twice would break its lock): a server that takes its
 * client out of the map marks the client's slot `dropped`, and the client
 * frees it at its next callback. A slot changes hands by losing its state
 * first and getting its new key before its new state, and readers look at
 * the state before the key, so a reader never takes another socket's state
 * for the one it looks for.
 */
struct slot {
	struct sock_key key;   /* whose state this is, while the state is not SOCK_NONE */
	struct sock_state st;
	__u32 claimed;         /* 1 while a socket owns the slot */
	__u32 dropped;         /* its server took this client out of the map: the client frees the slot */
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, struct slot);
} rawload_conns SEC(".maps");

#ifdef RAWLOAD_DEBUG
#define trace(fmt, ...)                                                       \
	({                                                                    \
		static const char ____fmt[] = "rawload: " fmt;                \
		bpf_trace_printk(____fmt, sizeof(____fmt), ##__VA_ARGS__);    \
	})
#else
#define trace(fmt, ...) ((void)0)
#endif

static __always_inline struct counters *stats(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&rawload_stats, &zero);
}

#define COUNT(c, field, n) \
	do { if (c) __sync_fetch_and_add(&(c)->field, (n)); } while (0)

static __always_inline void ip4_to_key(__u32 ip[4], __u32 ip4)
{
	ip[0] = 0;
	ip[1] = 0;
	ip[2] = bpf_htonl(0xffff);
	ip[3] = ip4;
}

/* The socket's own key, from a bpf_sock_ops or an sk_msg_md: both contexts
 * name the fields alike. Zero when the family is neither IPv4 nor IPv6. The
 * IPv4 addresses are read with READ_U32 too: clang would otherwise load the
 * last word of either family through one pointer chosen between two context
 * fields, which the verifier refuses ("dereference of modified ctx ptr"). */
#define FILL_KEY(key, ctx)                                                    \
	({                                                                    \
		int ok_ = 1;                                                  \
		if ((ctx)->family == AF_INET) {                               \
			ip4_to_key((key)->local_ip, READ_U32((ctx)->local_ip4)); \
			ip4_to_key((key)->remote_ip, READ_U32((ctx)->remote_ip4)); \
		} else if ((ctx)->family == AF_INET6) {                       \
			(key)->local_ip[0] = (ctx)->local_ip6[0];             \
			(key)->local_ip[1] = (ctx)->local_ip6[1];             \
			(key)->local_ip[2] = (ctx)->local_ip6[2];             \
			(key)->local_ip[3] = (ctx)->local_ip6[3];             \
			(key)->remote_ip[0] = (ctx)->remote_ip6[0];           \
			(key)->remote_ip[1] = (ctx)->remote_ip6[1];           \
			(key)->remote_ip[2] = (ctx)->remote_ip6[2];           \
			(key)->remote_ip[3] = (ctx)->remote_ip6[3];           \
		} else {                                                      \
			ok_ = 0;                                              \
		}                                                             \
		(key)->local_port = READ_U32((ctx)->local_port) & 0xffff;     \
		(key)->remote_port = bpf_ntohl(READ_U32((ctx)->remote_port)) & 0xffff; \
		if (cfg_netns_cookie)                                         \
			(key)->netns = bpf_get_netns_cookie(ctx);             \
		ok_;                                                          \
	})

static __always_inline int is_loopback(const __u32 ip[4])
{
	if (ip[0] != 0 || ip[1] != 0)
		return 0;
	if (ip[2] == 0 && ip[3] == bpf_htonl(1)) /* ::1 */
		return 1;
	return ip[2] == bpf_htonl(0xffff) && /* ::ffff:127.0.0.0/8 */
	       (ip[3] & bpf_htonl(0xff000000)) == bpf_htonl(0x7f000000);
}

/* Kept out of line on purpose: a bpf-to-bpf call (R_BPF_64_32 into .text)
 * whose callee uses a map, which the loader links into the program. */
static __attribute__((noinline)) int is_same_host(const __u32 ip[4])
{
	return is_loopback(ip) || bpf_map_lookup_elem(&rawload_addrs, ip) != 0;
}

static __always_inline int port_in(const __u64 *bits, __u32 port)
{
	return (bits[(port >> 6) & 1023] >> (port & 63)) & 1;
}

static __attribute__((noinline)) int ports_accelerated(__u32 local, __u32 remote)
{
	__u32 zero = 0;
	struct port_policy *p = bpf_map_lookup_elem(&rawload_ports, &zero);

	if (!p)
		return 0;
	if (cfg_port_allow && !port_in(p->allow, local) && !port_in(p->allow, remote))
		return 0;
	if (cfg_port_deny && (port_in(p->deny, local) || port_in(p->deny, remote)))
		return 0;
	return 1;
}

/* The peer's key: the same connection seen from the other end, in the
 * peer's namespace. */
static __always_inline void swap_key(struct sock_key *peer, const struct sock_key *own,
				     __u64 peer_netns)
{
	peer->netns = peer_netns;
	peer->local_ip[0] = own->remote_ip[0];
	peer->local_ip[1] = own->remote_ip[1];
	peer->local_ip[2] = own->remote_ip[2];
	peer->local_ip[3] = own->remote_ip[3];
	peer->remote_ip[0] = own->local_ip[0];
	peer->remote_ip[1] = own->local_ip[1];
	peer->remote_ip[2] = own->local_ip[2];
	peer->remote_ip[3] = own->local_ip[3];
	peer->local_port = own->remote_port;
	peer->remote_port = own->local_port;
}

/* --- rawload_conns: the sockets' states, in slots ------------------------ */

/* The compiler keeps memory accesses on either side of it in order. */
#define barrier() asm volatile("" : : : "memory")

static __always_inline __u32 mix(__u32 h, __u32 v)
{
	h = (h ^ v) * 0x9e3779b1;
	return h ^ (h >> 15);
}

/* The first of the two slots where the state of the socket with this key
 * can be: a hash of the key, scaled to cfg_conn_slots (a multiply and a
 * shift, not a division). */
static __always_inline __u32 set_of(const struct sock_key *k)
{
	__u32 h = mix((__u32)k->netns, (__u32)(k->netns >> 32));

#pragma unroll
	for (int i = 0; i < 4; i++)
		h = mix(mix(h, k->local_ip[i]), k->remote_ip[i]);
	h = mix(h, k->local_port << 16 | k->remote_port);
	return (__u32)(((__u64)h * (cfg_conn_slots / 2)) >> 32) * 2;
}

static __always_inline int key_eq(const struct sock_key *a, const struct sock_key *b)
{
	const __u64 *x = (const __u64 *)a, *y = (const __u64 *)b;

	return x[0] == y[0] && x[1] == y[1] && x[2] == y[2] && x[3] == y[3] &&
	       x[4] == y[4] && x[5] == y[5];
}

/* Slot `i` if it holds a state of the socket with this key: the state is read
 * before the key (Slots). */
static __always_inline struct slot *slot_at(__u32 i, const struct sock_key *key)
{
	struct slot *s = bpf_map_lookup_elem(&rawload_conns, &i);

	if (!s || s->st.state == SOCK_NONE)
		return 0;
	barrier();
	return key_eq(&s->key, key) ? s : 0;
}

/* The slot holding the state of the socket with this key, if it has one. */
static __always_inline struct slot *slot_of(const struct sock_key *key)
{
	__u32 i = set_of(key);
	struct slot *s = slot_at(i, key);

	return s ? s : slot_at(i + 1, key);
}

/* The state of the socket with this key as the programs see it: none when
 * the socket is not in the map or its server took it out. */
static __always_inline struct sock_state *state_of(const struct sock_key *key)
{
	struct slot *s = slot_of(key);

	return s && !s->dropped ? &s->st : 0;
}

/* Slot `i` for the socket with this key, if the try-lock gives it (Slots). */
static __always_inline struct slot *try_claim(__u32 i, const struct sock_key *key)
{
	struct slot *s = bpf_map_lookup_elem(&rawload_conns, &i);

	if (!s || s->claimed)
		return 0;
	__sync_fetch_and_add(&s->claimed, 1);
	if (s->claimed != 1) {
		__sync_fetch_and_add(&s->claimed, -1);
		return 0;
	}
	s->key = *key;
	return s;
}

/* A slot for the state of a socket that joins the map: the one still holding
 * its key (a gone socket of the same key did not free it), else a free one of
 * its set; none when both are taken. */
static __always_inline struct slot *claim_slot(const struct sock_key *key)
{
	struct slot *s = slot_of(key);
	__u32 i;

	if (s)
		return s;
	i = set_of(key);
	s = try_claim(i, key);
	return s ? s : try_claim(i + 1, key);
}

/* Writes a fresh state into the socket's slot, its `state` last (a slot
 * taken over from a gone socket may still be marked dropped). */
static __always_inline void publish(struct slot *s, const struct sock_state *fresh)
{
	struct sock_state copy = *fresh;

	copy.state = SOCK_NONE;
	s->st.state = SOCK_NONE;
	barrier();
	s->dropped = 0;
	s->st = copy;
	__sync_fetch_and_add(&s->st.state, fresh->state);
}

/* The socket's state goes, and its slot is free again, all zeros (which is
 * how `rawload status` counts the slots in use). Only the slot's own socket
 * calls this (Slots). */
static __always_inline void free_slot(struct slot *s)
{
	struct sock_state empty = {};
	struct sock_key none = {};

	s->st.state = SOCK_NONE;
	barrier();
	s->st = empty;
	s->key = none;
	s->dropped = 0;
	__sync_fetch_and_add(&s->claimed, -1);
}

/* --- the kernel's struct sock, through BTF -------------------------------- */

/* The socket as the kernel's struct tcp_sock (struct sock is at its start),
 * or NULL where the loader found no BTF. */
static __always_inline struct tcp_sock *kernel_sock(struct bpf_sock *sk)
{
	if (!cfg_kfields || !sk)
		return 0;
	return bpf_skc_to_tcp_sock(sk);
}

static __always_inline __u32 kread(struct tcp_sock *tp, const volatile struct kfield *f)
{
	const char *p = (const char *)tp + f->offset;
	__u32 v;

	if (f->width == 1)
		v = *(const volatile __u8 *)p;
	else
		v = *(const volatile __u32 *)p;
	return (v >> f->shift) & (__u32)((1ULL << f->bits) - 1);
}

/* Bytes waiting to be read by this socket, redirected ones included; 0
 * where the kernel cannot say (see cfg_rmem_counts_redirect). */
static __always_inline __u32 unread_bytes(struct tcp_sock *tp)
{
	if (!tp || !cfg_rmem_counts_redirect)
		return 0;
	return kread(tp, &kfield_sock__sk_backlog__rmem_alloc);
}

/* The socket's SO_RCVBUF (SO_SNDBUF) if the application set one, else 0. */
static __always_inline __u32 locked_buf(struct tcp_sock *tp, __u32 lock,
					const volatile struct kfield *buf)
{
	if (!tp || !(kread(tp, &kfield_sock__sk_userlocks) & lock))
		return 0;
	return kread(tp, buf);
}

/* A report to the peer: what waits to be read here, as of the peer's `sent`. */
static __always_inline void report(struct sock_state *own, const struct sock_state *peer,
				   struct tcp_sock *tp)
{
	own->peer_sent_seen = peer ? peer->sent : 0;
	own->unread = unread_bytes(tp);
	own->rcvbuf = locked_buf(tp, SOCK_RCVBUF_LOCK, &kfield_sock__sk_rcvbuf);
}

/* The application has read a TCP byte since the socket joined the map. */
static __always_inline int read_tcp_byte(const struct sock_state *own, struct tcp_sock *tp)
{
	return tp && (__s32)(kread(tp, &kfield_tcp_sock__copied_seq) - own->joined_seq) > 0;
}

/* Takes TCP from now on (SOCK_TCP). An atomic add, a full barrier on
 * x86-64, so that a peer that claims this socket afterwards sees the new
 * state (Leaving the map). */
static __always_inline void to_tcp(struct sock_state *own)
{
	if (own->state == SOCK_REDIRECT)
		__sync_fetch_and_add(&own->state, SOCK_TCP - SOCK_REDIRECT);
}

#define ONEWAY_MSGS 256
#define ONEWAY_AVG 16384

/* Counts this message into the socket's run; true when the run has become
 * a long one-way run of small messages (One-way runs). */
static __always_inline int oneway_run(struct sock_state *own, const struct sock_state *peer,
				      __u32 size)
{
	if (own->run_peer_sent != peer->sent) {
		own->run_peer_sent = peer->sent;
		own->run_msgs = 0;
		own->run_bytes = 0;
	}
	own->run_msgs++;
	own->run_bytes += size;
	return own->run_msgs >= ONEWAY_MSGS &&
	       own->run_bytes < (__u64)own->run_msgs * ONEWAY_AVG;
}

static __always_inline __u32 min_set(__u32 a, __u32 b)
{
	return b && b < a ? b : a;
}

/* --- sock_ops ------------------------------------------------------------ */

/* Takes a socket out of the map and forgets it, giving back the callbacks
 * rawload asked for (not those other programs had). Callers make sure
 * nobody can redirect into it and its redirect queue is empty. */
static __always_inline void leave_map(struct bpf_sock_ops *skops, struct sock_key *key,
				      struct slot *own, __u32 cb_flags)
{
	bpf_map_delete_elem(&rawload_socks, key);
	free_slot(own);
	bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags & ~cb_flags);
}

/* Takes a client socket back out of the map. Nothing can be lost: only its
 * server could have redirected into it, and the server is not in the map.
 * Its state goes at its next callback (Slots); until then nobody sees it. */
static __always_inline void drop_client(struct counters *c, struct sock_key *client)
{
	struct slot *s = slot_of(client);

	if (bpf_map_delete_elem(&rawload_socks, client) == 0)
		COUNT(c, peers_removed, 1);
	if (s)
		s->dropped = 1;
}

/* Whether the peer of this socket can be on this host and, if so, the
 * netns cookie of its key: another namespace's when rawload_owners proves
 * both addresses (Across namespaces), else this socket's own. */
static __always_inline int find_peer(struct counters *c, const struct sock_key *key,
				     __u64 *peer_netns)
{
	__u64 *remote, *local;

	*peer_netns = key->netns;
	remote = cfg_cross_netns ? bpf_map_lookup_elem(&rawload_owners, key->remote_ip) : 0;
	if (remote && *remote != key->netns) {
		local = bpf_map_lookup_elem(&rawload_owners, key->local_ip);
		if (!local || *local != key->netns) {
			COUNT(c, skipped_netns, 1);
			return 0;
		}
		*peer_netns = *remote;
		return 1;
	}
	/* Same host: an address of its own namespace, loopback, or one of
	 * the host's. */
	if (!remote && !is_same_host(key->remote_ip)) {
		COUNT(c, skipped_remote, 1);
		return 0;
	}
	return 1;
}

/* The peer is in the map, redirecting, and has not missed us. */
static __always_inline int peer_redirects(const struct sock_state *peer)
{
	return peer && peer->state == SOCK_REDIRECT;
}

static __always_inline int on_established(struct bpf_sock_ops *skops, struct sock_key *key)
{
	int passive = skops->op == BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB;
	__u32 wanted = BPF_SOCK_OPS_STATE_CB_FLAG | BPF_SOCK_OPS_WRITE_HDR_OPT_CB_FLAG;
	struct sock_state fresh = { .state = SOCK_REDIRECT };
	struct counters *c = stats();
	struct bpf_sock *sk = skops->sk;
	struct sock_key peer = {};
	struct slot *own = 0;
	__u64 peer_netns;
	long err;

	if (sk && sk->priority == RAWLOAD_PROBE_PRIORITY)
		return 1;
	if (!find_peer(c, key, &peer_netns))
		return 1;
	if ((cfg_port_allow || cfg_port_deny) &&
	    !ports_accelerated(key->local_port, key->remote_port)) {
		COUNT(c, skipped_port, 1);
		return 1;
	}
	/* With TCP fast open, payload can leave before ESTABLISHED; such a
	 * stream must stay on TCP from its first byte to its last. */
	if (skops->data_segs_out) {
		COUNT(c, skipped_sent, 1);
		return 1;
	}

	swap_key(&peer, key, peer_netns);
	/* The server side joins only if its client is in the map and has not
	 * sent through TCP yet; otherwise both stay on TCP, and a client that
	 * is in the map alone is taken out. */
	if (passive && !peer_redirects(state_of(&peer))) {
		drop_client(c, &peer);
		COUNT(c, skipped_peer, 1);
		return 1;
	}

	err = bpf_sock_hash_update(skops, &rawload_socks, key, BPF_NOEXIST);
	if (err == 0) {
		/* The state before anyone can see the socket as a peer: a
		 * client looks for its server's state before it redirects. */
		report(&fresh, 0, kernel_sock(sk));
		fresh.cb_flags = wanted & ~skops->bpf_sock_ops_cb_flags;
		fresh.joined_seq = skops->rcv_nxt;
		fresh.peer_netns = peer_netns;
		own = claim_slot(key);
		if (own) {
			publish(own, &fresh);
		} else {
			bpf_map_delete_elem(&rawload_socks, key);
			err = -7; /* both slots of its set are taken: as if the map were full */
		}
	}
	if (err != 0) {
		if (err == -17) /* EEXIST: another socket holds this key (without the netns cookie: one in another namespace) */
			COUNT(c, insert_exists, 1);
		else if (err == -7) /* E2BIG: the map is full, or the socket's slots are taken */
			COUNT(c, insert_full, 1);
		else if (err == -16) /* EBUSY: another sockmap user has the socket */
			COUNT(c, insert_busy, 1);
		else
			COUNT(c, insert_other, 1);
		/* A server socket that cannot join leaves its client alone in
		 * the map: take the client out as well. */
		if (passive)
			drop_client(c, &peer);
		return 1;
	}
	/* Be called at each TCP transmission (to leave the map when the time
	 * comes) and on state changes (to forget the socket when it closes),
	 * keeping whatever callbacks other sock_ops programs asked for. */
	bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags | wanted);
	/* The client may have sent through TCP between our check and our
	 * insert (it saw no state of ours yet): then neither end redirects,
	 * and nothing can have been redirected into either. */
	if (passive && !peer_redirects(state_of(&peer))) {
		leave_map(skops, key, own, fresh.cb_flags);
		drop_client(c, &peer);
		COUNT(c, skipped_peer, 1);
		return 1;
	}
	COUNT(c, sockets_inserted, 1);
	if (peer_netns != key->netns)
		COUNT(c, joined_netns, 1);
	trace("insert %d->%d\n", key->local_port, key->remote_port);
	return 1;
}

/* At each TCP transmission of a socket in the map: report what waits here
 * (for the peer's bound), then leave the map when the time has come
 * ("Leaving the map"). */
static __always_inline int on_transmit(struct bpf_sock_ops *skops, struct sock_key *key)
{
	struct slot *slot = slot_of(key);
	struct tcp_sock *tp = kernel_sock(skops->sk);
	struct counters *c = stats();
	struct sock_state *own, *peer;
	struct sock_key peer_key = {};
	int quiet, settled, drained, why;

	if (!slot) /* not ours (another program asked for these callbacks) */
		return 1;
	own = &slot->st;
	if (slot->dropped) {
		/* Its server took it out of the map: forget it (Slots). */
		bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags & ~own->cb_flags);
		free_slot(slot);
		return 1;
	}
	swap_key(&peer_key, key, own->peer_netns);
	peer = state_of(&peer_key);
	report(own, peer, tp);

	/* Nobody can redirect into this socket: its peer is not in the map
	 * (it never joined, left or closed), sends through TCP, missed us, or
	 * never claimed us while we take TCP. */
	quiet = !peer || peer->state != SOCK_REDIRECT || own->peer_missing ||
		(own->state != SOCK_REDIRECT && !own->redirected_into);
	/* None of its own redirects is on its way to the peer. */
	settled = own->state != SOCK_REDIRECT || !own->sent;
	/* And there is a reason to think nobody ever will redirect into it: a
	 * client whose server has not joined yet is quiet too, until it sends
	 * or receives. */
	why = own->state != SOCK_REDIRECT || skops->data_segs_in || own->redirected_into;
	/* Its redirect queue is empty: nothing was ever redirected into it,
	 * nothing waits to be read at all (where the kernel counts it), or the
	 * application read a TCP byte after the last redirected one. With the
	 * sk_skb verdict, TCP bytes wait in that queue as well. */
	drained = (!own->redirected_into && !cfg_skb_verdict) ||
		  (cfg_rmem_counts_redirect && tp && unread_bytes(tp) == 0) ||
		  (!cfg_skb_verdict && read_tcp_byte(own, tp));
	if (!quiet || !settled || !why || !drained)
		return 1;

	if (peer)
		COUNT(c, left_tcp, 1);
	else if (own->sent || own->redirected_into)
		COUNT(c, left_peer_gone, 1);
	else
		COUNT(c, left_unpaired, 1);
	trace("leave %d->%d\n", key->local_port, key->remote_port);
	leave_map(skops, key, slot, own->cb_flags);
	return 1;
}

SEC("sockops")
int rawload_sockops(struct bpf_sock_ops *skops)
{
	__u32 op = skops->op;
	struct sock_key key = {};

	if (op != BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB &&
	    op != BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB &&
	    op != BPF_SOCK_OPS_HDR_OPT_LEN_CB &&
	    op != BPF_SOCK_OPS_STATE_CB)
		return 1;
	/* A socket in the map closes: forget its entry, so that a later
	 * connection with the same addresses and ports is not mistaken for it
	 * (the kernel takes it out of the SOCKHASH itself). */
	if (op == BPF_SOCK_OPS_STATE_CB && skops->args[1] != BPF_TCP_CLOSE)
		return 1;
	if (!FILL_KEY(&key, skops))
		return 1;
	if (op == BPF_SOCK_OPS_STATE_CB) {
		struct slot *s = slot_of(&key);

		if (s)
			free_slot(s);
		return 1;
	}
	if (op == BPF_SOCK_OPS_HDR_OPT_LEN_CB)
		return on_transmit(skops, &key);
	return on_established(skops, &key);
}

/* --- sk_msg -------------------------------------------------------------- */

/* The most the peer may have unread before this socket sends through TCP:
 * --stream-bytes, or less where the application set SO_RCVBUF (the peer)
 * or SO_SNDBUF (this socket). */
static __always_inline __u32 bound(const struct sock_state *peer, struct tcp_sock *tp)
{
	__u32 limit = min_set(cfg_stream_bytes, peer->rcvbuf);

	return min_set(limit, locked_buf(tp, SOCK_SNDBUF_LOCK, &kfield_sock__sk_sndbuf));
}


SEC("sk_msg")
int rawload_sk_msg(struct sk_msg_md *msg)
{
	struct sock_key own_key = {}, peer_key = {};
	struct counters *c = stats();
	struct sock_state *own, *peer;
	struct tcp_sock *tp;
	__u32 size = msg->size;

	if (!FILL_KEY(&own_key, msg))
		return SK_PASS;
	own = state_of(&own_key);
	if (!own) {
		COUNT(c, state_missing, 1);
		return SK_PASS;
	}
	swap_key(&peer_key, &own_key, own->peer_netns);
	peer = state_of(&peer_key);
	tp = kernel_sock(msg->sk);
	/* Whichever path these bytes take, tell the peer what waits here. */
	report(own, peer, tp);
	if (own->state != SOCK_REDIRECT)
		goto tcp;
	if (!peer) {
		/* The peer is not (yet) in the map: these bytes go through TCP,
		 * and so must every later byte of this socket. */
		goto miss;
	}
	if (peer->state != SOCK_REDIRECT)
		goto follow;
	if (cfg_stream_bytes) {
		__u64 unread = peer->unread + (own->sent - peer->peer_sent_seen);

		if (unread + size > bound(peer, tp)) {
			COUNT(c, streams_to_tcp, 1);
			trace("backpressure %d->%d unread=%d\n", own_key.local_port,
			      own_key.remote_port, unread);
			to_tcp(own);
			goto tcp;
		}
		if (oneway_run(own, peer, size)) {
			COUNT(c, oneway_to_tcp, 1);
			trace("oneway %d->%d msgs=%d\n", own_key.local_port,
			      own_key.remote_port, own->run_msgs);
			to_tcp(own);
			goto tcp;
		}
	}
	/* Claim the peer, then look at its state once more (Leaving the map). */
	if (!peer->redirected_into) {
		__sync_fetch_and_add(&peer->redirected_into, 1);
		if (peer->state != SOCK_REDIRECT)
			goto follow;
	}
	if (bpf_msg_redirect_hash(msg, &rawload_socks, &peer_key, BPF_F_INGRESS) == SK_PASS) {
		own->sent += size;
		COUNT(c, msgs_redirected, 1);
		COUNT(c, bytes_redirected, size);
		trace("redirect %d->%d len=%d\n", own_key.local_port, own_key.remote_port, size);
		return SK_PASS;
	}
	/* Its state is there but the socket is not: it is leaving or closing. */
	own->peer_missing = 1;
miss:
	to_tcp(own);
	COUNT(c, msgs_missed, 1);
	COUNT(c, bytes_missed, size);
	trace("miss %d->%d len=%d\n", own_key.local_port, own_key.remote_port, size);
	return SK_PASS;
follow:
	/* The peer takes TCP: so does this socket, so that both can leave. */
	COUNT(c, follow_to_tcp, 1);
	to_tcp(own);
tcp:
	COUNT(c, msgs_tcp_only, 1);
	COUNT(c, bytes_tcp_only, size);
	return SK_PASS;
}

/* --- sk_skb -------------------------------------------------------------- */

SEC("sk_skb/stream_verdict")
int rawload_sk_skb(struct __sk_buff *skb)
{
	return SK_PASS;
}
