//! The `bpf(2)` argument blocks, one `#[repr(C)]` struct per command.
//!
//! The kernel declares a single `union bpf_attr` (include/uapi/linux/bpf.h)
//! with one anonymous struct per command. Mirroring each arm as its own
//! struct (as cilium/ebpf's `internal/sys` does) means there is no union to
//! get wrong: a command can only be called with the block it reads.
//!
//! Rules the kernel enforces, and how these structs satisfy them:
//! - Bytes past the last field a command knows must be zero (`EINVAL`), and a
//!   `size` larger than the kernel's own `bpf_attr` must have a zero tail
//!   (`E2BIG`). Every struct is created zeroed (`Default`) and passed with its
//!   own size, which is no larger than what 4.18+ kernels understand.
//! - There is no implicit padding: every gap is a named `_pad` field, so no
//!   uninitialised byte ever reaches the kernel.
//! - Pointers travel as `u64` (`__aligned_u64` in the UAPI).
//!
//! The offsets are checked at compile time against the numbers in the UAPI
//! header (read with `offsetof` from Debian's 6.1 linux-libc-dev).

use std::mem::{offset_of, size_of};

use rawload_obj::uapi::{MapType, ProgType};

/// Readable field lists for `--explain` (pointers shown as addresses: the
/// kernel copies from them during the call).
pub trait Fields {
    fn fields(&self) -> String;
}

impl Fields for MapCreate {
    fn fields(&self) -> String {
        format!(
            "map_type={} ({}), key_size={}, value_size={}, max_entries={}, map_flags={:#x}, map_name=\"{}\"",
            self.map_type,
            MapType(self.map_type).name(),
            self.key_size,
            self.value_size,
            self.max_entries,
            self.map_flags,
            super::cstr_field(&self.map_name)
        )
    }
}

impl Fields for MapElem {
    fn fields(&self) -> String {
        format!(
            "map_fd={}, key={:#x}, value={:#x}, flags={}",
            self.map_fd, self.key, self.value, self.flags
        )
    }
}

impl Fields for MapFreeze {
    fn fields(&self) -> String {
        format!("map_fd={}", self.map_fd)
    }
}

impl Fields for ProgLoad {
    fn fields(&self) -> String {
        format!(
            "prog_type={} ({}), insn_cnt={}, insns={:#x}, license={:#x}, log_level={}, log_size={}, kern_version={}, prog_name=\"{}\", expected_attach_type={}",
            self.prog_type,
            ProgType(self.prog_type).name(),
            self.insn_cnt,
            self.insns,
            self.license,
            self.log_level,
            self.log_size,
            self.kern_version,
            super::cstr_field(&self.prog_name),
            self.expected_attach_type
        )
    }
}

impl Fields for ObjPin {
    fn fields(&self) -> String {
        format!(
            "pathname={:#x}, bpf_fd={}, file_flags={}",
            self.pathname, self.bpf_fd, self.file_flags
        )
    }
}

impl Fields for ProgAttach {
    fn fields(&self) -> String {
        format!(
            "target_fd={}, attach_bpf_fd={}, attach_type={}, attach_flags={:#x}",
            self.target_fd, self.attach_bpf_fd, self.attach_type, self.attach_flags
        )
    }
}

impl Fields for GetId {
    fn fields(&self) -> String {
        format!("id={}", self.id)
    }
}

impl Fields for ObjInfo {
    fn fields(&self) -> String {
        format!(
            "bpf_fd={}, info_len={}, info={:#x}",
            self.bpf_fd, self.info_len, self.info
        )
    }
}

impl Fields for ProgQuery {
    fn fields(&self) -> String {
        format!(
            "target_fd={}, attach_type={}, prog_cnt={}",
            self.target_fd, self.attach_type, self.prog_cnt
        )
    }
}

/// Command numbers (`enum bpf_cmd`).
pub mod cmd {
    pub const MAP_CREATE: u32 = 0;
    pub const MAP_LOOKUP_ELEM: u32 = 1;
    pub const MAP_UPDATE_ELEM: u32 = 2;
    pub const MAP_DELETE_ELEM: u32 = 3;
    pub const MAP_GET_NEXT_KEY: u32 = 4;
    pub const PROG_LOAD: u32 = 5;
    pub const OBJ_PIN: u32 = 6;
    pub const OBJ_GET: u32 = 7;
    pub const PROG_ATTACH: u32 = 8;
    pub const PROG_DETACH: u32 = 9;
    pub const PROG_GET_NEXT_ID: u32 = 11;
    pub const PROG_GET_FD_BY_ID: u32 = 13;
    pub const OBJ_GET_INFO_BY_FD: u32 = 15;
    pub const PROG_QUERY: u32 = 16;
    pub const MAP_FREEZE: u32 = 22;

    /// The UAPI name of a command, for error messages.
    pub fn name(cmd: u32) -> &'static str {
        match cmd {
            MAP_CREATE => "BPF_MAP_CREATE",
            MAP_LOOKUP_ELEM => "BPF_MAP_LOOKUP_ELEM",
            MAP_UPDATE_ELEM => "BPF_MAP_UPDATE_ELEM",
            MAP_DELETE_ELEM => "BPF_MAP_DELETE_ELEM",
            MAP_GET_NEXT_KEY => "BPF_MAP_GET_NEXT_KEY",
            PROG_LOAD => "BPF_PROG_LOAD",
            OBJ_PIN => "BPF_OBJ_PIN",
            OBJ_GET => "BPF_OBJ_GET",
            PROG_ATTACH => "BPF_PROG_ATTACH",
            PROG_DETACH => "BPF_PROG_DETACH",
            PROG_GET_NEXT_ID => "BPF_PROG_GET_NEXT_ID",
            PROG_GET_FD_BY_ID => "BPF_PROG_GET_FD_BY_ID",
            OBJ_GET_INFO_BY_FD => "BPF_OBJ_GET_INFO_BY_FD",
            PROG_QUERY => "BPF_PROG_QUERY",
            MAP_FREEZE => "BPF_MAP_FREEZE",
            _ => "bpf",
        }
    }
}

/// `BPF_MAP_CREATE`.
#[repr(C)]
#[derive(Debug, Default)]
pub struct MapCreate {
    pub map_type: u32,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
    pub map_flags: u32,
    pub inner_map_fd: u32,
    pub numa_node: u32,
    pub map_name: [u8; 16],
}

/// `BPF_MAP_LOOKUP_ELEM`, `_UPDATE_ELEM`, `_DELETE_ELEM`, `_GET_NEXT_KEY`.
/// `value` doubles as `next_key` for `BPF_MAP_GET_NEXT_KEY`.
#[repr(C)]
#[derive(Debug, Default)]
pub struct MapElem {
    pub map_fd: u32,
    pub _pad: u32,
    pub key: u64,
    pub value: u64,
    pub flags: u64,
}

/// `BPF_MAP_FREEZE`.
#[repr(C)]
#[derive(Debug, Default)]
pub struct MapFreeze {
    pub map_fd: u32,
}

/// `BPF_PROG_LOAD`, up to `expected_attach_type` (4.17). Later fields (BTF,
/// func/line info, attach_btf_id) are not used: rawload never loads BTF into
/// the kernel, which is what lets one binary run on old kernels.
#[repr(C)]
#[derive(Debug, Default)]
pub struct ProgLoad {
    pub prog_type: u32,
    pub insn_cnt: u32,
    pub insns: u64,
    pub license: u64,
    pub log_level: u32,
    pub log_size: u32,
    pub log_buf: u64,
    pub kern_version: u32,
    pub prog_flags: u32,
    pub prog_name: [u8; 16],
    pub prog_ifindex: u32,
    pub expected_attach_type: u32,
}

/// `BPF_OBJ_PIN` and `BPF_OBJ_GET`.
#[repr(C)]
#[derive(Debug, Default)]
pub struct ObjPin {
    pub pathname: u64,
    pub bpf_fd: u32,
    pub file_flags: u32,
}

/// `BPF_PROG_ATTACH` and `BPF_PROG_DETACH`.
#[repr(C)]
#[derive(Debug, Default)]
pub struct ProgAttach {
    pub target_fd: u32,
    pub attach_bpf_fd: u32,
    pub attach_type: u32,
    pub attach_flags: u32,
    pub replace_bpf_fd: u32,
}

/// `BPF_PROG_GET_NEXT_ID` (`id` = start_id) and `BPF_PROG_GET_FD_BY_ID`
/// (`id` = prog_id).
#[repr(C)]
#[derive(Debug, Default)]
pub struct GetId {
    pub id: u32,
    pub next_id: u32,
    pub open_flags: u32,
}

/// `BPF_OBJ_GET_INFO_BY_FD`.
#[repr(C)]
#[derive(Debug, Default)]
pub struct ObjInfo {
    pub bpf_fd: u32,
    pub info_len: u32,
    pub info: u64,
}

/// `BPF_PROG_QUERY`.
#[repr(C)]
#[derive(Debug, Default)]
pub struct ProgQuery {
    pub target_fd: u32,
    pub attach_type: u32,
    pub query_flags: u32,
    pub attach_flags: u32,
    pub prog_ids: u64,
    pub prog_cnt: u32,
    pub _pad: u32,
}

/// `struct bpf_prog_info`, up to `run_cnt` (the fields `status` shows).
/// The kernel fills `min(info_len, its own size)` bytes.
#[repr(C)]
#[derive(Debug, Default, Clone)]
pub struct ProgInfo {
    pub prog_type: u32,
    pub id: u32,
    pub tag: [u8; 8],
    pub jited_prog_len: u32,
    pub xlated_prog_len: u32,
    pub jited_prog_insns: u64,
    pub xlated_prog_insns: u64,
    pub load_time: u64,
    pub created_by_uid: u32,
    pub nr_map_ids: u32,
    pub map_ids: u64,
    pub name: [u8; 16],
    /// `ifindex` .. `prog_tags`: fields rawload does not read.
    pub _unused: [u64; 14],
    pub run_time_ns: u64,
    pub run_cnt: u64,
}

/// `struct bpf_map_info`, up to `name`.
#[repr(C)]
#[derive(Debug, Default, Clone)]
pub struct MapInfo {
    pub map_type: u32,
    pub id: u32,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
    pub map_flags: u32,
    pub name: [u8; 16],
}

// Offsets from include/uapi/linux/bpf.h (6.1). A mismatch fails the build.
const _: () = {
    assert!(offset_of!(MapCreate, map_flags) == 16);
    assert!(offset_of!(MapCreate, map_name) == 28);
    assert!(size_of::<MapCreate>() == 44);
    assert!(offset_of!(MapElem, key) == 8);
    assert!(offset_of!(MapElem, value) == 16);
    assert!(offset_of!(MapElem, flags) == 24);
    assert!(offset_of!(ProgLoad, insns) == 8);
    assert!(offset_of!(ProgLoad, license) == 16);
    assert!(offset_of!(ProgLoad, log_level) == 24);
    assert!(offset_of!(ProgLoad, log_buf) == 32);
    assert!(offset_of!(ProgLoad, kern_version) == 40);
    assert!(offset_of!(ProgLoad, prog_name) == 48);
    assert!(offset_of!(ProgLoad, expected_attach_type) == 68);
    assert!(size_of::<ProgLoad>() == 72);
    assert!(offset_of!(ObjPin, bpf_fd) == 8);
    assert!(size_of::<ObjPin>() == 16);
    assert!(offset_of!(ProgAttach, replace_bpf_fd) == 16);
    assert!(offset_of!(ObjInfo, info) == 8);
    assert!(offset_of!(ProgQuery, prog_ids) == 16);
    assert!(offset_of!(ProgQuery, prog_cnt) == 24);
    assert!(offset_of!(ProgInfo, tag) == 8);
    assert!(offset_of!(ProgInfo, load_time) == 40);
    assert!(offset_of!(ProgInfo, created_by_uid) == 48);
    assert!(offset_of!(ProgInfo, nr_map_ids) == 52);
    assert!(offset_of!(ProgInfo, map_ids) == 56);
    assert!(offset_of!(ProgInfo, name) == 64);
    assert!(offset_of!(ProgInfo, run_time_ns) == 192);
    assert!(offset_of!(ProgInfo, run_cnt) == 200);
    assert!(offset_of!(MapInfo, max_entries) == 16);
    assert!(offset_of!(MapInfo, name) == 24);
};
