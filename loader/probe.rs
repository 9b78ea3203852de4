//! Feature probes: ask the running kernel instead of parsing its version.
//!
//! Distribution kernels backport features and `uname -r` lies about them, so
//! each probe loads the smallest program that needs the feature and reports
//! whether the kernel accepted it (the approach of libbpf's `features.c`).

use std::ffi::CStr;

use nix::errno::Errno;
use nix::sys::resource::{RLIM_INFINITY, Resource, setrlimit};

use crate::insn::{CALL, Insn};
use crate::obj::PROGRAM_KINDS;
use crate::sys::{self, ProgLoadArgs, prog_type};

/// `BPF_FUNC_get_netns_cookie`.
const HELPER_GET_NETNS_COOKIE: i32 = 122;
/// `BPF_FUNC_ktime_get_coarse_ns` (5.11), the same release that moved BPF
/// memory from RLIMIT_MEMLOCK to memory cgroup accounting (libbpf's probe).
const HELPER_KTIME_GET_COARSE_NS: i32 = 160;

const GPL: &CStr = c"GPL";

/// `r0 = 1; exit`, preceded by `call helper` when given.
fn probe_program(helper: Option<i32>) -> Vec<Insn> {
    let mut insns = Vec::new();
    if let Some(id) = helper {
        insns.push(Insn {
            code: CALL,
            regs: 0,
            off: 0,
            imm: id,
        });
    }
    insns.push(Insn {
        code: 0xb7, // BPF_ALU64 | BPF_MOV | BPF_K: r0 = imm
        regs: 0,
        off: 0,
        imm: 1,
    });
    insns.push(Insn {
        code: 0x95, // BPF_JMP | BPF_EXIT
        ..Default::default()
    });
    insns
}

/// Whether a program of `prog_type` calling `helper` loads.
fn loads(prog_type: u32, helper: Option<i32>) -> Result<bool, Errno> {
    let kind = PROGRAM_KINDS
        .iter()
        .find(|k| k.prog_type == prog_type)
        .map_or((prog_type, 0), |k| (k.prog_type, k.expected_attach_type));
    let insns = probe_program(helper);
    match sys::prog_load(ProgLoadArgs {
        prog_type: kind.0,
        expected_attach_type: kind.1,
        insns: &insns,
        license: GPL,
        kern_version: 0,
        name: "rawload_probe",
        log: None,
    }) {
        Ok(_) => Ok(true),
        // The verifier refuses the helper for this program type.
        Err(e) if e.errno == Errno::EINVAL || e.errno == Errno::EACCES => Ok(false),
        Err(e) => Err(e.errno),
    }
}

/// `bpf_get_netns_cookie` in both sock_ops and sk_msg programs (5.15).
/// With it, the socket key includes the network namespace, so identical
/// connections in two namespaces can never be paired.
pub fn netns_cookie() -> Result<bool, Errno> {
    Ok(loads(prog_type::SOCK_OPS, Some(HELPER_GET_NETNS_COOKIE))?
        && loads(prog_type::SK_MSG, Some(HELPER_GET_NETNS_COOKIE))?)
}

/// Whether a program of `prog_type` without helper calls loads: the kernel
/// knows the program type.
pub fn program_type(prog_type: u32) -> Result<bool, Errno> {
    loads(prog_type, None)
}

/// Whether BPF memory is charged to memory cgroups (5.11+) rather than to
/// `RLIMIT_MEMLOCK`.
pub fn memcg_accounting() -> Result<bool, Errno> {
    loads(prog_type::SOCKET_FILTER, Some(HELPER_KTIME_GET_COARSE_NS))
}

/// Whether a map of `map_type` with these sizes can be created.
pub fn map_type(map_type: u32, key_size: u32, value_size: u32) -> Result<bool, Errno> {
    match sys::MapFd::create(&sys::MapCreateArgs {
        map_type,
        key_size,
        value_size,
        max_entries: 1,
        flags: 0,
        name: "rawload_probe",
    }) {
        Ok(_) => Ok(true),
        Err(e) if e.errno == Errno::EINVAL => Ok(false),
        Err(e) => Err(e.errno),
    }
}

/// Whether plain-TCP bytes arriving at a socket in a SOCKHASH are reported by
/// `FIONREAD` and wake `poll()`.
///
/// Stable kernels of 2026 (6.6.128+, 6.12.75+, 6.18.14+; "bpf, sockmap: Fix
/// FIONREAD for sockmap") count only redirected bytes for sockets in a
/// sockmap without an sk_skb verdict program, which stalls readers such as
/// nginx (grafana/beyla #2941). rawload moves a streaming socket to TCP
/// (`--stream-bytes`) only where its peer, still in the map, reads those TCP
/// bytes correctly. The probe puts the server end of a loopback connection
/// into a SOCKHASH without programs, sends 7 bytes through TCP and asks.
///
/// `Ok(None)`: the bytes were redirected instead (a rawload attachment
/// already covers this process), so the answer is unknown.
pub fn fionread_counts_tcp() -> anyhow::Result<Option<bool>> {
    use std::io::Write;
    use std::os::fd::AsFd;

    use anyhow::Context;
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

    const PROBE: &[u8] = b"rawload";
    let map = sys::MapFd::create(&sys::MapCreateArgs {
        map_type: sys::map_type::SOCKHASH,
        key_size: 4,
        value_size: 8,
        max_entries: 1,
        flags: 0,
        name: "rawload_probe",
    })
    .context("creating a SOCKHASH")?;
    let listener = std::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0))
        .context("listening on 127.0.0.1")?;
    let mut client = std::net::TcpStream::connect(listener.local_addr()?)?;
    let (server, _) = listener.accept()?;
    let fd = std::os::fd::AsRawFd::as_raw_fd(&server) as u64;
    map.update(&0u32.to_ne_bytes(), &fd.to_ne_bytes(), sys::BPF_ANY)
        .context("putting a socket into the SOCKHASH")?;
    client.write_all(PROBE)?;
    let mut fds = [PollFd::new(server.as_fd(), PollFlags::POLLIN)];
    let readable = poll(&mut fds, PollTimeout::from(1000u16))? > 0;
    let through_tcp = sys::tcp_bytes_received(server.as_fd())? == PROBE.len() as u64;
    if !through_tcp {
        return Ok(None);
    }
    Ok(Some(
        readable && sys::fionread(server.as_fd())? == PROBE.len(),
    ))
}

/// What raising `RLIMIT_MEMLOCK` gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Memlock {
    Raised,
    /// Not allowed (no CAP_SYS_RESOURCE). Harmless from 5.11, where BPF
    /// memory is charged to the memory cgroup instead.
    Refused(Errno),
}

/// Raises `RLIMIT_MEMLOCK` to infinity: kernels before 5.11 charge maps and
/// programs against it, and the default 64 KiB is too small for a SOCKHASH.
pub fn raise_memlock() -> Memlock {
    match setrlimit(Resource::RLIMIT_MEMLOCK, RLIM_INFINITY, RLIM_INFINITY) {
        Ok(()) => Memlock::Raised,
        Err(e) => Memlock::Refused(e),
    }
}
