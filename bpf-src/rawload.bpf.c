// SPDX-License-Identifier: GPL-2.0
/*
 * rawload's two eBPF programs.
 *
 *   sock_ops (cgroup v2, BPF_CGROUP_SOCK_OPS)
 *       When a TCP connection of a process in the cgroup becomes established,
 *       and both ends live on this host, put the socket into `rawload_socks`,
 *       a SOCKHASH keyed by the connection as seen from that socket.
 *
 *   sk_msg (attached to rawload_socks, BPF_SK_MSG_VERDICT)
 *       Runs on every sendmsg() of a socket in the map. Looks up the peer
 *       socket (the same key with the two ends swapped) and, if it is there,
 *       redirects the bytes straight into the peer's receive queue
 *       (BPF_F_INGRESS). Always returns SK_PASS: a miss falls back to TCP.
 *       A socket that streams (cfg_stream_bytes sent without a reply) or
 *       that missed once sends through TCP from then on (rawload_conns).
 *
 *   Both keep `rawload_conns`, the fate of each socket by its key; sock_ops
 *   asks to see each inserted socket's state changes (BPF_SOCK_OPS_STATE_CB)
 *   to forget it when it closes.
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
const volatile __u32 cfg_port_allow = 0;   /* 1: only connections with a port in allow */
const volatile __u32 cfg_port_deny = 0;    /* 1: never connections with a port in deny */
/* A socket that sends more than this many bytes while its peer sends nothing
 * is streaming, not conversing: its later bytes go through TCP (0: never).
 * See CONN_STREAM below and docs/PERFORMANCE.md. */
const volatile __u32 cfg_stream_bytes = 0;

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
 * of the fields is the order of COUNTER_NAMES in loader/status.rs. */
struct counters {
	__u64 sockets_inserted;
	__u64 insert_exists;       /* -EEXIST: key already present */
	__u64 insert_full;         /* -E2BIG: the SOCKHASH is full */
	__u64 insert_busy;         /* -EBUSY: socket already used by another sockmap user */
	__u64 insert_other;        /* any other error */
	__u64 skipped_remote;      /* the peer is not on this host */
	__u64 skipped_port;        /* neither port is in the --ports policy */
	__u64 skipped_sent;        /* payload already left through TCP (fast open) */
	__u64 skipped_peer;        /* server socket whose client is not in the map */
	__u64 peers_removed;       /* clients taken out again because their server stays out */
	__u64 msgs_redirected;
	__u64 bytes_redirected;
	__u64 msgs_missed;         /* peer not in the map: sent through TCP */
	__u64 bytes_missed;
	__u64 msgs_tcp_only;       /* a socket that missed once stays on TCP */
	__u64 bytes_tcp_only;
	__u64 streams_to_tcp;      /* sockets moved to TCP after cfg_stream_bytes unanswered bytes */
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
 * What became of each socket in the map, by its key.
 *
 * CONN_INSERTED: in the map, redirecting. The server side of a connection
 * checks its client's entry before it joins (see rawload_sockops).
 *
 * CONN_TCP_ONLY: its bytes go through TCP from now on, for good. Either the
 * peer was not in the map yet when it first sent (the client may send before
 * the server's accepted socket reaches PASSIVE_ESTABLISHED), or it streamed
 * (see `unanswered`). Such a socket must never redirect again: the reader
 * drains redirected data before its TCP receive queue, so later redirected
 * bytes could overtake earlier TCP bytes. The other direction is unaffected.
 *
 * `unanswered` counts the bytes the socket redirected since its peer last
 * sent anything. Redirected bytes wait in the peer's queue with no limit
 * (the sender never blocks; docs/KERNEL-ISSUES.md), so a fast writer runs
 * far ahead of its reader, and both copies then miss the CPU caches: bulk
 * transfers run slower than over TCP, and a stalled reader parks memory
 * without bound. Request/response traffic answers long before
 * cfg_stream_bytes; a stream does not, and moves to TCP, whose flow control
 * paces the writer.
 *
 * The entry goes when its socket closes (BPF_SOCK_OPS_STATE_CB); a new socket
 * with the same key overwrites it anyway, and LRU bounds the memory.
 */
#define CONN_INSERTED 1
#define CONN_TCP_ONLY 2

struct conn {
	__u32 state;
	__u32 unanswered;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct sock_key);
	__type(value, struct conn);
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

/* The peer's key: the same connection seen from the other end. */
static __always_inline void swap_key(struct sock_key *peer, const struct sock_key *own)
{
	peer->netns = own->netns;
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

/* Takes a client socket back out of the map. Nothing can be lost: only its
 * server could have redirected into it, and the server is not in the map. */
static __always_inline void drop_peer(struct counters *c, struct sock_key *peer)
{
	if (bpf_map_delete_elem(&rawload_socks, peer) == 0)
		COUNT(c, peers_removed, 1);
	bpf_map_delete_elem(&rawload_conns, peer);
}

SEC("sockops")
int rawload_sockops(struct bpf_sock_ops *skops)
{
	__u32 op = skops->op;
	struct sock_key key = {};
	struct counters *c;
	long err;

	if (op != BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB &&
	    op != BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB &&
	    op != BPF_SOCK_OPS_STATE_CB)
		return 1;
	/* A socket in the map closes: forget its entry, so that a later
	 * connection with the same addresses and ports (from outside the
	 * cgroup, whose client rawload never sees) is not mistaken for it. */
	if (op == BPF_SOCK_OPS_STATE_CB && skops->args[1] != BPF_TCP_CLOSE)
		return 1;

	if (skops->family == AF_INET) {
		ip4_to_key(key.local_ip, skops->local_ip4);
		ip4_to_key(key.remote_ip, skops->remote_ip4);
	} else if (skops->family == AF_INET6) {
		key.local_ip[0] = skops->local_ip6[0];
		key.local_ip[1] = skops->local_ip6[1];
		key.local_ip[2] = skops->local_ip6[2];
		key.local_ip[3] = skops->local_ip6[3];
		key.remote_ip[0] = skops->remote_ip6[0];
		key.remote_ip[1] = skops->remote_ip6[1];
		key.remote_ip[2] = skops->remote_ip6[2];
		key.remote_ip[3] = skops->remote_ip6[3];
	} else {
		return 1;
	}
	key.local_port = READ_U32(skops->local_port) & 0xffff;
	key.remote_port = bpf_ntohl(READ_U32(skops->remote_port)) & 0xffff;
	if (cfg_netns_cookie)
		key.netns = bpf_get_netns_cookie(skops);
	if (op == BPF_SOCK_OPS_STATE_CB) {
		bpf_map_delete_elem(&rawload_conns, &key);
		return 1;
	}

	c = stats();
	/* Same host: the peer is a loopback address or one of ours. */
	if (!is_same_host(key.remote_ip)) {
		COUNT(c, skipped_remote, 1);
		return 1;
	}
	if ((cfg_port_allow || cfg_port_deny) &&
	    !ports_accelerated(key.local_port, key.remote_port)) {
		COUNT(c, skipped_port, 1);
		return 1;
	}
	/* With TCP fast open, payload can leave before ESTABLISHED; such a
	 * stream must stay on TCP from its first byte to its last. */
	if (skops->data_segs_out) {
		bpf_map_delete_elem(&rawload_conns, &key);
		COUNT(c, skipped_sent, 1);
		return 1;
	}

	if (op == BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB) {
		/* The server side joins only if its client is in the map and has
		 * not sent through TCP yet. Otherwise both stay on TCP: a socket
		 * in the map that receives plain TCP payload is what stable
		 * kernels of 2026 get wrong (FIONREAD 0; docs/KERNEL-ISSUES.md). */
		struct sock_key peer = {};
		struct conn *peer_conn;

		swap_key(&peer, &key);
		peer_conn = bpf_map_lookup_elem(&rawload_conns, &peer);
		if (!peer_conn || peer_conn->state != CONN_INSERTED) {
			if (peer_conn && peer_conn->state == CONN_TCP_ONLY)
				drop_peer(c, &peer);
			COUNT(c, skipped_peer, 1);
			return 1;
		}
	}

	err = bpf_sock_hash_update(skops, &rawload_socks, &key, BPF_NOEXIST);
	if (err == 0) {
		struct conn inserted = { .state = CONN_INSERTED };

		bpf_map_update_elem(&rawload_conns, &key, &inserted, BPF_ANY);
		/* Be called again when this socket changes state (to see it close). */
		bpf_sock_ops_cb_flags_set(skops, BPF_SOCK_OPS_STATE_CB_FLAG);
		COUNT(c, sockets_inserted, 1);
	} else if (err == -17) { /* EEXIST: the entry belongs to that socket */
		COUNT(c, insert_exists, 1);
	} else {
		bpf_map_delete_elem(&rawload_conns, &key);
		if (err == -7)   /* E2BIG: the map is full */
			COUNT(c, insert_full, 1);
		else if (err == -16) /* EBUSY: another sockmap user has the socket */
			COUNT(c, insert_busy, 1);
		else
			COUNT(c, insert_other, 1);
		/* A server socket that cannot join leaves its client alone in
		 * the map, receiving plain TCP: take the client out as well. */
		if (op == BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB) {
			struct sock_key peer = {};

			swap_key(&peer, &key);
			drop_peer(c, &peer);
		}
	}
	trace("insert %d->%d err=%d\n", key.local_port, key.remote_port, err);
	return 1;
}

SEC("sk_msg")
int rawload_sk_msg(struct sk_msg_md *msg)
{
	struct sock_key own = {}, peer = {};
	struct counters *c = stats();
	__u32 size = msg->size;
	struct conn tcp_only = { .state = CONN_TCP_ONLY }, *conn, *peer_conn;

	if (msg->family == AF_INET) {
		ip4_to_key(own.local_ip, msg->local_ip4);
		ip4_to_key(own.remote_ip, msg->remote_ip4);
	} else if (msg->family == AF_INET6) {
		own.local_ip[0] = msg->local_ip6[0];
		own.local_ip[1] = msg->local_ip6[1];
		own.local_ip[2] = msg->local_ip6[2];
		own.local_ip[3] = msg->local_ip6[3];
		own.remote_ip[0] = msg->remote_ip6[0];
		own.remote_ip[1] = msg->remote_ip6[1];
		own.remote_ip[2] = msg->remote_ip6[2];
		own.remote_ip[3] = msg->remote_ip6[3];
	} else {
		return SK_PASS;
	}
	own.local_port = READ_U32(msg->local_port) & 0xffff;
	own.remote_port = bpf_ntohl(READ_U32(msg->remote_port)) & 0xffff;
	if (cfg_netns_cookie)
		own.netns = bpf_get_netns_cookie(msg);

	swap_key(&peer, &own);
	if (cfg_stream_bytes) {
		/* This message answers the peer, whichever path it takes: the
		 * peer's side is a conversation again. */
		peer_conn = bpf_map_lookup_elem(&rawload_conns, &peer);
		if (peer_conn && peer_conn->unanswered)
			peer_conn->unanswered = 0;
	}

	conn = bpf_map_lookup_elem(&rawload_conns, &own);
	if (conn && conn->state == CONN_TCP_ONLY) {
		COUNT(c, msgs_tcp_only, 1);
		COUNT(c, bytes_tcp_only, size);
		return SK_PASS;
	}

	if (cfg_stream_bytes) {
		if (conn) {
			if (conn->unanswered + size > cfg_stream_bytes) {
				conn->state = CONN_TCP_ONLY;
				COUNT(c, streams_to_tcp, 1);
				COUNT(c, msgs_tcp_only, 1);
				COUNT(c, bytes_tcp_only, size);
				trace("stream %d->%d: TCP from now on\n", own.local_port, own.remote_port);
				return SK_PASS;
			}
			conn->unanswered += size;
		}
	}
	if (bpf_msg_redirect_hash(msg, &rawload_socks, &peer, BPF_F_INGRESS) == SK_PASS) {
		COUNT(c, msgs_redirected, 1);
		COUNT(c, bytes_redirected, size);
		trace("redirect %d->%d len=%d\n", own.local_port, own.remote_port, size);
		return SK_PASS;
	}

	/* The peer is not (yet) in the map: these bytes go through TCP, and
	 * so must every later byte of this socket. */
	bpf_map_update_elem(&rawload_conns, &own, &tcp_only, BPF_ANY);
	COUNT(c, msgs_missed, 1);
	COUNT(c, bytes_missed, size);
	trace("miss %d->%d len=%d\n", own.local_port, own.remote_port, size);
	return SK_PASS;
}
