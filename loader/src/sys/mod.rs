//! The syscall layer: the only module with `unsafe` code.
//!
//! Everything rawload asks of the kernel goes through [`bpf`], one small
//! function per `bpf(2)` command on top of it (the shape of libbpf's `bpf.c`),
//! and the socket ioctls and options that the traffic and conformance tools
//! need ([`sock`]). Each wrapper builds a zeroed attribute block from
//! [`attr`], fills the fields its command reads, and turns the result into
//! an owned file descriptor or an error that names the command
//! (`BPF_MAP_CREATE: Operation not permitted`).
//!
//! Soundness rests on two rules kept here: buffers handed to the kernel are
//! Rust slices whose lengths are what the kernel will read or write, and map
//! element calls go through [`MapFd`], which knows the map's key and value
//! sizes from the kernel itself, so no caller can pass a short buffer.

pub mod attr;
pub mod sock;

use std::ffi::CStr;
use std::fmt;
use std::mem::size_of;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::errno::Errno;

use rawload_obj::insn::Insn;
use rawload_obj::uapi::{AttachType, MapType, ProgType};

use attr::cmd;

/// A failed `bpf(2)` command: which one, and the errno it returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SysError {
    pub cmd: &'static str,
    pub errno: Errno,
}

impl fmt::Display for SysError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} failed: {}", self.cmd, self.errno)
    }
}

impl std::error::Error for SysError {}

pub type SysResult<T> = Result<T, SysError>;

/// Marker for the attribute blocks of [`attr`]: only they may be handed to
/// [`bpf`], so the kernel always reads a struct that mirrors its UAPI layout.
trait Attr: attr::Fields {}
impl Attr for attr::MapCreate {}
impl Attr for attr::MapElem {}
impl Attr for attr::MapFreeze {}
impl Attr for attr::ProgLoad {}
impl Attr for attr::ObjPin {}
impl Attr for attr::ProgAttach {}
impl Attr for attr::GetId {}
impl Attr for attr::ObjInfo {}
impl Attr for attr::ProgQuery {}

/// The one place the `bpf(2)` syscall is made.
fn bpf<A: Attr>(command: u32, attr: &mut A) -> SysResult<i64> {
    // SAFETY: `attr` is one of the #[repr(C)] blocks in `attr`, fully
    // initialised, and the size passed is its own size, so the kernel reads and
    // writes only inside it. Pointers stored in it were taken from slices and
    // C strings borrowed by the calling wrapper for the duration of this call,
    // with lengths that match the fields the kernel reads them with.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            command as libc::c_long,
            attr as *mut A as *mut libc::c_void,
            size_of::<A>() as libc::c_long,
        )
    };
    let result = if ret < 0 {
        Err(SysError {
            cmd: cmd::name(command),
            errno: Errno::last(),
        })
    } else {
        Ok(ret as i64)
    };
    if let Some(watch) = WATCHER.get() {
        let answer = match &result {
            Ok(v) => v.to_string(),
            Err(e) => format!("-1 {}", e.errno),
        };
        watch(cmd::name(command), &attr.fields(), &answer);
    }
    result
}

/// Who hears of every `bpf(2)` call: the command, its fields as text and the
/// kernel's answer (`--explain` prints them). The syscall layer only
/// reports; what to do with it is decided above.
pub type Watcher = fn(command: &str, fields: &str, answer: &str);

static WATCHER: std::sync::OnceLock<Watcher> = std::sync::OnceLock::new();

/// Sets the watcher, once per process.
pub fn watch(watcher: Watcher) {
    let _ = WATCHER.set(watcher);
}

/// Wraps a descriptor the kernel just returned. Descriptor 0 is moved up:
/// several UAPI fields treat fd 0 as "none", and a CLI started with stdin
/// closed can receive it (libbpf's `ensure_good_fd`, cilium's `NewFD`).
fn owned_fd(command: u32, raw: i64) -> SysResult<OwnedFd> {
    // SAFETY: a successful fd-returning bpf() command hands us a new
    // descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw as RawFd) };
    if fd.as_raw_fd() != 0 {
        return Ok(fd);
    }
    nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(3))
        // SAFETY: F_DUPFD_CLOEXEC returned a new descriptor that we own.
        .map(|dup| unsafe { OwnedFd::from_raw_fd(dup) })
        .map_err(|errno| SysError {
            cmd: cmd::name(command),
            errno,
        })
}

fn raw(fd: BorrowedFd<'_>) -> u32 {
    fd.as_raw_fd() as u32
}

fn ptr<T>(p: *const T) -> u64 {
    p as usize as u64
}

/// Copies `name` into a `BPF_OBJ_NAME_LEN` (16) field: at most 15 bytes of
/// `[A-Za-z0-9_.]`, anything else dropped, NUL-terminated (the kernel
/// rejects other characters with EINVAL).
pub fn obj_name(name: &str) -> [u8; 16] {
    let mut out = [0u8; 16];
    for (slot, b) in out[..15].iter_mut().zip(
        name.bytes()
            .filter(|b| b.is_ascii_alphanumeric() || *b == b'_' || *b == b'.'),
    ) {
        *slot = b;
    }
    out
}

// ---------------------------------------------------------------------------
// Maps

pub use rawload_obj::uapi::{BPF_ANY, BPF_F_RDONLY_PROG, BPF_NOEXIST};

/// What the kernel says a map is: the basis for sizing element buffers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapMeta {
    pub id: u32,
    pub map_type: MapType,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
    pub flags: u32,
    pub name: String,
}

/// A map file descriptor together with the map's shape, so that element
/// calls can check buffer sizes before the kernel copies into them.
#[derive(Debug)]
pub struct MapFd {
    fd: OwnedFd,
    meta: MapMeta,
    /// Bytes a lookup writes: `value_size`, or for per-CPU maps
    /// `round_up(value_size, 8) * possible CPUs`.
    value_buf: usize,
}

impl AsFd for MapFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Arguments of `BPF_MAP_CREATE`.
#[derive(Debug, Clone)]
pub struct MapCreateArgs<'a> {
    pub map_type: MapType,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
    pub flags: u32,
    pub name: &'a str,
}

impl MapFd {
    /// `BPF_MAP_CREATE`. No BTF is passed: the kernel refuses key/value BTF
    /// for SOCKHASH (`map_check_no_btf`), and old kernels refuse new BTF.
    pub fn create(args: &MapCreateArgs<'_>) -> SysResult<MapFd> {
        let mut a = attr::MapCreate {
            map_type: args.map_type.0,
            key_size: args.key_size,
            value_size: args.value_size,
            max_entries: args.max_entries,
            map_flags: args.flags,
            map_name: obj_name(args.name),
            ..Default::default()
        };
        let fd = owned_fd(cmd::MAP_CREATE, bpf(cmd::MAP_CREATE, &mut a)?)?;
        MapFd::from_fd(fd)
    }

    /// Adopts a map descriptor (from `BPF_OBJ_GET` or `_GET_FD_BY_ID`) and
    /// asks the kernel what it is.
    pub fn from_fd(fd: OwnedFd) -> SysResult<MapFd> {
        let info = map_info(fd.as_fd())?;
        let meta = MapMeta {
            id: info.id,
            map_type: MapType(info.map_type),
            key_size: info.key_size,
            value_size: info.value_size,
            max_entries: info.max_entries,
            flags: info.map_flags,
            name: cstr_field(&info.name),
        };
        let value_buf = if meta.map_type.is_per_cpu() {
            (meta.value_size as usize).next_multiple_of(8) * possible_cpus()
        } else {
            meta.value_size as usize
        };
        Ok(MapFd {
            fd,
            meta,
            value_buf,
        })
    }

    pub fn meta(&self) -> &MapMeta {
        &self.meta
    }

    /// Size of the buffer a lookup fills (see the field doc).
    pub fn value_buf_len(&self) -> usize {
        self.value_buf
    }

    fn check(&self, command: u32, key: &[u8], value: Option<usize>) -> SysResult<()> {
        let key_ok = key.len() == self.meta.key_size as usize;
        let value_ok = value.is_none_or(|len| len == self.value_buf);
        if key_ok && value_ok {
            Ok(())
        } else {
            Err(SysError {
                cmd: cmd::name(command),
                errno: Errno::EINVAL,
            })
        }
    }

    /// `BPF_MAP_LOOKUP_ELEM`; `Ok(false)` when the key is absent.
    pub fn lookup(&self, key: &[u8], value: &mut [u8]) -> SysResult<bool> {
        self.check(cmd::MAP_LOOKUP_ELEM, key, Some(value.len()))?;
        let mut a = attr::MapElem {
            map_fd: raw(self.fd.as_fd()),
            key: ptr(key.as_ptr()),
            value: ptr(value.as_mut_ptr()),
            ..Default::default()
        };
        absent_is_false(bpf(cmd::MAP_LOOKUP_ELEM, &mut a))
    }

    /// `BPF_MAP_UPDATE_ELEM` with `BPF_ANY`/`BPF_NOEXIST`/...
    pub fn update(&self, key: &[u8], value: &[u8], flags: u64) -> SysResult<()> {
        self.check(cmd::MAP_UPDATE_ELEM, key, Some(value.len()))?;
        let mut a = attr::MapElem {
            map_fd: raw(self.fd.as_fd()),
            key: ptr(key.as_ptr()),
            value: ptr(value.as_ptr()),
            flags,
            ..Default::default()
        };
        bpf(cmd::MAP_UPDATE_ELEM, &mut a).map(drop)
    }

    /// `BPF_MAP_DELETE_ELEM`; `Ok(false)` when the key was absent.
    pub fn delete(&self, key: &[u8]) -> SysResult<bool> {
        self.check(cmd::MAP_DELETE_ELEM, key, None)?;
        let mut a = attr::MapElem {
            map_fd: raw(self.fd.as_fd()),
            key: ptr(key.as_ptr()),
            ..Default::default()
        };
        absent_is_false(bpf(cmd::MAP_DELETE_ELEM, &mut a))
    }

    /// `BPF_MAP_GET_NEXT_KEY`: the key after `key`, or the first key when
    /// `key` is `None`. `Ok(false)` at the end.
    pub fn next_key(&self, key: Option<&[u8]>, next: &mut [u8]) -> SysResult<bool> {
        self.check(cmd::MAP_GET_NEXT_KEY, next, None)?;
        if let Some(k) = key {
            self.check(cmd::MAP_GET_NEXT_KEY, k, None)?;
        }
        let mut a = attr::MapElem {
            map_fd: raw(self.fd.as_fd()),
            key: key.map_or(0, |k| ptr(k.as_ptr())),
            value: ptr(next.as_mut_ptr()),
            ..Default::default()
        };
        absent_is_false(bpf(cmd::MAP_GET_NEXT_KEY, &mut a))
    }

    /// `BPF_MAP_FREEZE` (5.2): no more writes from user space. Frozen
    /// `BPF_F_RDONLY_PROG` maps are what the verifier treats as constants.
    pub fn freeze(&self) -> SysResult<()> {
        let mut a = attr::MapFreeze {
            map_fd: raw(self.fd.as_fd()),
        };
        bpf(cmd::MAP_FREEZE, &mut a).map(drop)
    }
}

fn absent_is_false(r: SysResult<i64>) -> SysResult<bool> {
    match r {
        Ok(_) => Ok(true),
        Err(e) if e.errno == Errno::ENOENT => Ok(false),
        Err(e) => Err(e),
    }
}

/// Number of possible CPUs (`/sys/devices/system/cpu/possible`, e.g. "0-3"),
/// which sizes per-CPU map values. Falls back to the online count.
pub fn possible_cpus() -> usize {
    std::fs::read_to_string("/sys/devices/system/cpu/possible")
        .ok()
        .and_then(|s| parse_cpu_list(s.trim()))
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// Counts the CPUs in a kernel CPU list ("0-3,8-11").
pub fn parse_cpu_list(list: &str) -> Option<usize> {
    let mut n = 0;
    for part in list.split(',') {
        n += match part.split_once('-') {
            Some((a, b)) => {
                b.parse::<usize>()
                    .ok()?
                    .checked_sub(a.parse::<usize>().ok()?)?
                    + 1
            }
            None => {
                part.parse::<usize>().ok()?;
                1
            }
        };
    }
    Some(n)
}

// ---------------------------------------------------------------------------
// Programs

/// Arguments of `BPF_PROG_LOAD`.
#[derive(Debug)]
pub struct ProgLoadArgs<'a> {
    pub prog_type: ProgType,
    pub expected_attach_type: AttachType,
    pub insns: &'a [Insn],
    pub license: &'a CStr,
    pub kern_version: u32,
    pub name: &'a str,
    /// Verifier log: (level, buffer). Level 1 = the instructions of each
    /// failing path; the kernel NUL-terminates what it writes.
    pub log: Option<(u32, &'a mut [u8])>,
}

/// `BPF_PROG_LOAD`.
pub fn prog_load(args: ProgLoadArgs<'_>) -> SysResult<OwnedFd> {
    let mut a = attr::ProgLoad {
        prog_type: args.prog_type.0,
        insn_cnt: args.insns.len() as u32,
        insns: ptr(args.insns.as_ptr()),
        license: ptr(args.license.as_ptr()),
        kern_version: args.kern_version,
        prog_name: obj_name(args.name),
        expected_attach_type: args.expected_attach_type.0,
        ..Default::default()
    };
    if let Some((level, buf)) = args.log {
        a.log_level = level;
        a.log_size = buf.len().min(u32::MAX as usize >> 8) as u32;
        a.log_buf = ptr(buf.as_mut_ptr());
    }
    owned_fd(cmd::PROG_LOAD, bpf(cmd::PROG_LOAD, &mut a)?)
}

// ---------------------------------------------------------------------------
// Pins

/// `BPF_OBJ_PIN`: give a map or program a path on a bpf filesystem, which
/// keeps it alive after every descriptor is closed.
pub fn obj_pin(fd: BorrowedFd<'_>, path: &CStr) -> SysResult<()> {
    let mut a = attr::ObjPin {
        pathname: ptr(path.as_ptr()),
        bpf_fd: raw(fd),
        ..Default::default()
    };
    bpf(cmd::OBJ_PIN, &mut a).map(drop)
}

/// `BPF_OBJ_GET`: open a pinned object again.
pub fn obj_get(path: &CStr) -> SysResult<OwnedFd> {
    let mut a = attr::ObjPin {
        pathname: ptr(path.as_ptr()),
        ..Default::default()
    };
    owned_fd(cmd::OBJ_GET, bpf(cmd::OBJ_GET, &mut a)?)
}

// ---------------------------------------------------------------------------
// Attachments

/// `BPF_PROG_ATTACH`: `target` is a cgroup directory fd for
/// `BPF_CGROUP_SOCK_OPS`, a SOCKHASH fd for `BPF_SK_MSG_VERDICT`.
pub fn prog_attach(
    target: BorrowedFd<'_>,
    prog: BorrowedFd<'_>,
    attach_type: AttachType,
    flags: u32,
) -> SysResult<()> {
    let mut a = attr::ProgAttach {
        target_fd: raw(target),
        attach_bpf_fd: raw(prog),
        attach_type: attach_type.0,
        attach_flags: flags,
        ..Default::default()
    };
    bpf(cmd::PROG_ATTACH, &mut a).map(drop)
}

/// `BPF_PROG_DETACH` of exactly `prog` (required for multi-attached cgroup
/// programs and, since 5.10, for sockmap programs).
pub fn prog_detach(
    target: BorrowedFd<'_>,
    prog: BorrowedFd<'_>,
    attach_type: AttachType,
) -> SysResult<()> {
    let mut a = attr::ProgAttach {
        target_fd: raw(target),
        attach_bpf_fd: raw(prog),
        attach_type: attach_type.0,
        ..Default::default()
    };
    bpf(cmd::PROG_DETACH, &mut a).map(drop)
}

/// `BPF_PROG_QUERY`: the attach flags and the ids of the programs attached
/// to `target` for `attach_type` (cgroups: 4.15; sockmaps: 5.19).
pub fn prog_query(target: BorrowedFd<'_>, attach_type: AttachType) -> SysResult<(u32, Vec<u32>)> {
    let mut ids = vec![0u32; 64];
    loop {
        let mut a = attr::ProgQuery {
            target_fd: raw(target),
            attach_type: attach_type.0,
            prog_ids: ptr(ids.as_mut_ptr()),
            prog_cnt: ids.len() as u32,
            ..Default::default()
        };
        match bpf(cmd::PROG_QUERY, &mut a) {
            Ok(_) => {
                ids.truncate(a.prog_cnt as usize);
                return Ok((a.attach_flags, ids));
            }
            // The buffer was too small; prog_cnt now holds the real count.
            Err(e) if e.errno == Errno::ENOSPC && a.prog_cnt as usize > ids.len() => {
                ids = vec![0u32; a.prog_cnt as usize];
            }
            Err(e) => return Err(e),
        }
    }
}

// ---------------------------------------------------------------------------
// Introspection

fn next_id(command: u32, start: u32) -> SysResult<Option<u32>> {
    let mut a = attr::GetId {
        id: start,
        ..Default::default()
    };
    match bpf(command, &mut a) {
        Ok(_) => Ok(Some(a.next_id)),
        Err(e) if e.errno == Errno::ENOENT => Ok(None),
        Err(e) => Err(e),
    }
}

/// `BPF_PROG_GET_NEXT_ID`: the next loaded program id after `start`.
pub fn prog_next_id(start: u32) -> SysResult<Option<u32>> {
    next_id(cmd::PROG_GET_NEXT_ID, start)
}

fn fd_by_id(command: u32, id: u32) -> SysResult<Option<OwnedFd>> {
    let mut a = attr::GetId {
        id,
        ..Default::default()
    };
    match bpf(command, &mut a) {
        Ok(fd) => owned_fd(command, fd).map(Some),
        // The object went away between listing and opening it.
        Err(e) if e.errno == Errno::ENOENT => Ok(None),
        Err(e) => Err(e),
    }
}

/// `BPF_PROG_GET_FD_BY_ID`.
pub fn prog_fd_by_id(id: u32) -> SysResult<Option<OwnedFd>> {
    fd_by_id(cmd::PROG_GET_FD_BY_ID, id)
}

/// `BPF_OBJ_GET_INFO_BY_FD` for a program, with the ids of the maps it uses.
pub fn prog_info(fd: BorrowedFd<'_>) -> SysResult<(attr::ProgInfo, Vec<u32>)> {
    let mut info = attr::ProgInfo::default();
    obj_info(fd, &mut info)?;
    // Second pass for the map ids, with a fresh struct: the kernel refuses a
    // reused one whose other pointer fields it filled in (EFAULT).
    let mut map_ids = vec![0u32; info.nr_map_ids as usize];
    if !map_ids.is_empty() {
        let mut again = attr::ProgInfo {
            nr_map_ids: map_ids.len() as u32,
            map_ids: ptr(map_ids.as_mut_ptr()),
            ..Default::default()
        };
        obj_info(fd, &mut again)?;
        map_ids.truncate(again.nr_map_ids as usize);
    }
    Ok((info, map_ids))
}

/// `BPF_OBJ_GET_INFO_BY_FD` for a map.
pub fn map_info(fd: BorrowedFd<'_>) -> SysResult<attr::MapInfo> {
    let mut info = attr::MapInfo::default();
    obj_info(fd, &mut info)?;
    Ok(info)
}

trait Info {}
impl Info for attr::ProgInfo {}
impl Info for attr::MapInfo {}

fn obj_info<I: Info>(fd: BorrowedFd<'_>, info: &mut I) -> SysResult<()> {
    let mut a = attr::ObjInfo {
        bpf_fd: raw(fd),
        info_len: size_of::<I>() as u32,
        info: ptr(info as *mut I),
    };
    bpf(cmd::OBJ_GET_INFO_BY_FD, &mut a).map(drop)
}

/// A fixed-size, NUL-padded name field as a `String`.
pub fn cstr_field(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

// ---------------------------------------------------------------------------
// Sockets (the probes and the traffic tool)

pub use sock::fionread;

/// `tcp_info.tcpi_bytes_received` (`TCP_INFO`, 4.1+): payload bytes this
/// socket received through TCP. Bytes redirected into it by sk_msg are not
/// counted, which tells the two paths apart.
pub fn tcp_bytes_received(fd: BorrowedFd<'_>) -> nix::Result<u64> {
    let (info, len) = sock::tcp_info(fd)?;
    // Kernels older than the field return a shorter struct.
    let end = std::mem::offset_of!(libc::tcp_info, tcpi_bytes_received) + size_of::<u64>();
    if len < end {
        return Err(Errno::ENOPROTOOPT);
    }
    Ok(info.tcpi_bytes_received)
}

/// `SO_MEMINFO` (4.12): the socket's `sk_rmem_alloc`, the bytes charged to
/// its receive side (what waits to be read, in buffer sizes).
pub fn rmem_alloc(fd: BorrowedFd<'_>) -> nix::Result<u32> {
    /// `SK_MEMINFO_VARS` in include/uapi/linux/sock_diag.h; index 0 is
    /// `SK_MEMINFO_RMEM_ALLOC`.
    const SK_MEMINFO_VARS: usize = 9;
    let mut info = [0u32; SK_MEMINFO_VARS];
    let mut len = size_of_val(&info) as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `info`, a live local
    // of that size, and stores the length written in `len`; `fd` is borrowed.
    let r = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_MEMINFO,
            info.as_mut_ptr().cast(),
            &mut len,
        )
    };
    Errno::result(r)?;
    Ok(info[0])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpu_list("0"), Some(1));
        assert_eq!(parse_cpu_list("0-1"), Some(2));
        assert_eq!(parse_cpu_list("0-3,8-11"), Some(8));
        assert_eq!(parse_cpu_list("3-1"), None);
        assert_eq!(parse_cpu_list("x"), None);
    }

    #[test]
    fn object_names_are_sanitised_and_truncated() {
        assert_eq!(&obj_name("bpf_tcpip_bypass")[..16], b"bpf_tcpip_bypas\0");
        assert_eq!(cstr_field(&obj_name(".rodata.str1.1")), ".rodata.str1.1");
        assert_eq!(cstr_field(&obj_name("a-b c/d")), "abcd");
    }
}
