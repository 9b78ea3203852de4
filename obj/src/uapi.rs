//! The numbers of the kernel's UAPI (include/uapi/linux/bpf.h) that rawload
//! uses, in one place and as types: a program type cannot be passed where a
//! map type or an attach type goes. The numbers never change once a kernel
//! has shipped them.

/// `enum bpf_prog_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ProgType(pub u32);

impl ProgType {
    pub const SOCKET_FILTER: ProgType = ProgType(1);
    pub const SOCK_OPS: ProgType = ProgType(13);
    pub const SK_SKB: ProgType = ProgType(14);
    pub const SK_MSG: ProgType = ProgType(16);

    pub fn name(self) -> &'static str {
        match self {
            ProgType::SOCKET_FILTER => "socket_filter",
            ProgType::SOCK_OPS => "sock_ops",
            ProgType::SK_SKB => "sk_skb",
            ProgType::SK_MSG => "sk_msg",
            _ => "other",
        }
    }
}

/// `enum bpf_map_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MapType(pub u32);

impl MapType {
    pub const HASH: MapType = MapType(1);
    pub const ARRAY: MapType = MapType(2);
    pub const PERCPU_HASH: MapType = MapType(5);
    pub const PERCPU_ARRAY: MapType = MapType(6);
    pub const LRU_HASH: MapType = MapType(9);
    pub const LRU_PERCPU_HASH: MapType = MapType(10);
    pub const SOCKMAP: MapType = MapType(15);
    pub const SOCKHASH: MapType = MapType(18);

    /// Per-CPU maps return one value per possible CPU from user space.
    pub fn is_per_cpu(self) -> bool {
        matches!(
            self,
            MapType::PERCPU_HASH | MapType::PERCPU_ARRAY | MapType::LRU_PERCPU_HASH
        )
    }

    /// A map of sockets (`BPF_MAP_TYPE_SOCKMAP`, `_SOCKHASH`).
    pub fn is_socket_map(self) -> bool {
        matches!(self, MapType::SOCKMAP | MapType::SOCKHASH)
    }

    pub fn name(self) -> &'static str {
        match self {
            MapType::HASH => "hash",
            MapType::ARRAY => "array",
            MapType::PERCPU_HASH => "percpu_hash",
            MapType::PERCPU_ARRAY => "percpu_array",
            MapType::LRU_HASH => "lru_hash",
            MapType::LRU_PERCPU_HASH => "lru_percpu_hash",
            MapType::SOCKMAP => "sockmap",
            MapType::SOCKHASH => "sockhash",
            _ => "other",
        }
    }
}

/// `enum bpf_attach_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct AttachType(pub u32);

impl AttachType {
    pub const CGROUP_SOCK_OPS: AttachType = AttachType(3);
    pub const SK_SKB_STREAM_VERDICT: AttachType = AttachType(5);
    pub const SK_MSG_VERDICT: AttachType = AttachType(7);

    pub fn name(self) -> &'static str {
        match self {
            AttachType::CGROUP_SOCK_OPS => "BPF_CGROUP_SOCK_OPS",
            AttachType::SK_SKB_STREAM_VERDICT => "BPF_SK_SKB_STREAM_VERDICT",
            AttachType::SK_MSG_VERDICT => "BPF_SK_MSG_VERDICT",
            _ => "another attach type",
        }
    }
}

/// `BPF_F_RDONLY_PROG` (map flag): programs may only read the map (global
/// `.rodata`); with `BPF_MAP_FREEZE`, the verifier treats its bytes as
/// constants.
pub const BPF_F_RDONLY_PROG: u32 = 1 << 7;

/// `BPF_F_ALLOW_MULTI` (attach flag): share the cgroup hook with other
/// programs instead of replacing them (flags 0 is exclusive).
pub const BPF_F_ALLOW_MULTI: u32 = 2;

/// `BPF_ANY` / `BPF_NOEXIST` for `BPF_MAP_UPDATE_ELEM`.
pub const BPF_ANY: u64 = 0;
pub const BPF_NOEXIST: u64 = 1;

/// `BPF_F_INGRESS` for `bpf_msg_redirect_*()`: into the target's receive
/// queue.
pub const BPF_F_INGRESS: u64 = 1;

/// `BPF_FUNC_*`: helpers by number (positions in `__BPF_FUNC_MAPPER`).
pub mod helper {
    pub const MSG_REDIRECT_MAP: i32 = 60;
    pub const GET_NETNS_COOKIE: i32 = 122;
    /// 5.11, the same release that moved BPF memory from RLIMIT_MEMLOCK to
    /// memory cgroup accounting (libbpf's probe for it).
    pub const KTIME_GET_COARSE_NS: i32 = 160;
}
