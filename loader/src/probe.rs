//! Feature probes: ask the running kernel instead of parsing its version.
//!
//! Distribution kernels backport features and `uname -r` lies about them, so
//! each probe loads the smallest program that needs the feature and reports
//! whether the kernel accepted it (the approach of libbpf's `features.c`).

use rawload_obj::uapi::{AttachType, BPF_F_INGRESS, MapType, ProgType, helper};
use std::ffi::CStr;
use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use anyhow::{Context, Result, bail};
use nix::errno::Errno;
use nix::sys::resource::{RLIM_INFINITY, Resource, setrlimit};

use crate::sys::{self, ProgLoadArgs};
use rawload_obj::insn::Insn;
use rawload_obj::obj::PROGRAM_KINDS;

const GPL: &CStr = c"GPL";

/// `r0 = 1; exit`, preceded by `call helper` when given.
fn probe_program(helper: Option<i32>) -> Vec<Insn> {
    let call = helper.map(Insn::call_helper);
    call.into_iter()
        .chain([Insn::mov64_imm(0, 1), Insn::exit()])
        .collect()
}

/// Whether a program of `prog_type` calling `helper` loads.
fn loads(prog_type: ProgType, helper: Option<i32>) -> Result<bool, Errno> {
    let kind = PROGRAM_KINDS
        .iter()
        .find(|k| k.prog_type == prog_type)
        .map_or((prog_type, AttachType::default()), |k| {
            (k.prog_type, k.expected_attach_type)
        });
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
    Ok(loads(ProgType::SOCK_OPS, Some(helper::GET_NETNS_COOKIE))?
        && loads(ProgType::SK_MSG, Some(helper::GET_NETNS_COOKIE))?)
}

/// Whether a program of `prog_type` without helper calls loads: the kernel
/// knows the program type.
pub fn program_type(prog_type: ProgType) -> Result<bool, Errno> {
    loads(prog_type, None)
}

/// Whether BPF memory is charged to memory cgroups (5.11+) rather than to
/// `RLIMIT_MEMLOCK`.
pub fn memcg_accounting() -> Result<bool, Errno> {
    loads(ProgType::SOCKET_FILTER, Some(helper::KTIME_GET_COARSE_NS))
}

/// Whether a map of `map_type` with these sizes can be created.
pub fn map_type(map_type: MapType, key_size: u32, value_size: u32) -> Result<bool, Errno> {
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

/// `SO_PRIORITY` of the probes' sockets. rawload's sock_ops program never
/// accelerates a socket with this priority (`RAWLOAD_PROBE_PRIORITY` in
/// bpf-src/rawload.bpf.c), so a probe gives the same answer under an
/// existing rawload attachment. Not `SO_MARK`: firewalls act on mark bits
/// (netavark and kube-proxy masquerade packets with 0x2000 and 0x4000),
/// and a masqueraded probe connection arrives from another port. The
/// priority only picks a queue of a qdisc, and loopback has none.
pub const PROBE_PRIORITY: u32 = 0x7261_7770;

const PROBE_BYTES: &[u8] = b"rawload";

/// A connected loopback pair for a probe: both ends marked, and the server
/// end is the connection of our own client (another local process that
/// connects to the ephemeral port first is turned away, so it cannot change
/// the answer).
struct ProbePair {
    client: TcpStream,
    server: TcpStream,
}

fn probe_pair() -> Result<ProbePair> {
    use nix::sys::socket::{
        AddressFamily, Backlog, SockFlag, SockType, SockaddrIn, bind, connect, listen, setsockopt,
        socket, sockopt,
    };
    let marked = || -> Result<OwnedFd> {
        let fd = socket(
            AddressFamily::Inet,
            SockType::Stream,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .context("creating a probe socket")?;
        setsockopt(&fd, sockopt::Priority, &(PROBE_PRIORITY as i32))
            .context("marking a probe socket (SO_PRIORITY)")?;
        Ok(fd)
    };
    let listener = marked()?;
    bind(listener.as_raw_fd(), &SockaddrIn::new(127, 0, 0, 1, 0)).context("binding 127.0.0.1")?;
    listen(&listener, Backlog::new(8).context("listen backlog")?).context("listening")?;
    let listener = TcpListener::from(listener);
    let client = marked()?;
    let to = SockaddrIn::from(match listener.local_addr()? {
        SocketAddr::V4(a) => a,
        SocketAddr::V6(a) => bail!("the probe listener is on {a}"),
    });
    connect(client.as_raw_fd(), &to).context("connecting to the probe listener")?;
    let client = TcpStream::from(client);
    let ours = client.local_addr()?;
    for _ in 0..16 {
        if !readable(listener.as_fd())? {
            bail!(
                "the probe's own connection to {to} never arrived (a firewall or NAT rule on loopback?)"
            );
        }
        let (server, from) = listener.accept().context("accepting")?;
        if from == ours {
            return Ok(ProbePair { client, server });
        }
    }
    bail!("another process kept connecting to the probe's port {to}")
}

/// Waits up to a second for `fd` to be readable.
fn readable(fd: BorrowedFd<'_>) -> Result<bool> {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
    Ok(poll(&mut fds, PollTimeout::from(1000u16))? > 0)
}

/// Whether plain-TCP bytes arriving at a socket in a SOCKHASH are reported by
/// `FIONREAD` and wake `poll()`.
///
/// Stable kernels of 2026 (6.6.128+, 6.12.75+, 6.18.14+; "bpf, sockmap: Fix
/// FIONREAD for sockmap") count only redirected bytes for sockets in a
/// sockmap without an sk_skb verdict program, which stalls readers such as
/// nginx (grafana/beyla #2941); "bpf, sockmap: Account for receive queue in
/// FIONREAD without a verdict program" (bpf tree, July 2026) fixed it.
/// Where this says no, rawload attaches a pass-through sk_skb verdict, with
/// which the kernel queues TCP bytes where FIONREAD counts them. The probe
/// puts the server end of a loopback connection into a SOCKHASH without
/// programs, sends 7 bytes through TCP and asks.
///
/// `Ok(None)`: the bytes did not take TCP (another tool's sockmap program
/// redirected them), so the answer is unknown.
pub fn fionread_counts_tcp() -> Result<Option<bool>> {
    let map = sys::MapFd::create(&sys::MapCreateArgs {
        map_type: MapType::SOCKHASH,
        key_size: 4,
        value_size: 8,
        max_entries: 1,
        flags: 0,
        name: "rawload_probe",
    })
    .context("creating a SOCKHASH")?;
    let mut pair = probe_pair()?;
    let fd = pair.server.as_raw_fd() as u64;
    map.update(&0u32.to_ne_bytes(), &fd.to_ne_bytes(), sys::BPF_ANY)
        .context("putting a socket into the SOCKHASH")?;
    pair.client.write_all(PROBE_BYTES)?;
    let readable = readable(pair.server.as_fd())?;
    if sys::tcp_bytes_received(pair.server.as_fd())? != PROBE_BYTES.len() as u64 {
        return Ok(None);
    }
    Ok(Some(
        readable && sys::fionread(pair.server.as_fd())? == PROBE_BYTES.len(),
    ))
}

/// Whether bytes redirected into a socket count in its `sk_rmem_alloc`
/// ("tcp_bpf: Charge receive socket buffer in bpf_tcp_ingress()", 6.13, in
/// stable kernels since 6.1.122). Only then can a socket tell its peer how
/// much of what was redirected into it is still unread, which is what
/// rawload's backpressure bound and its lossless leaving of the map rest on.
/// The probe redirects 7 bytes into the server end of a loopback pair with
/// an sk_msg program on a SOCKMAP and reads `SO_MEMINFO`.
///
/// `Ok(None)`: the bytes were not redirected, so the answer is unknown.
pub fn redirect_counts_in_rmem() -> Result<Option<bool>> {
    let map = sys::MapFd::create(&sys::MapCreateArgs {
        map_type: MapType::SOCKMAP,
        key_size: 4,
        value_size: 8,
        max_entries: 2,
        flags: 0,
        name: "rawload_probe",
    })
    .context("creating a SOCKMAP")?;
    // bpf_msg_redirect_map(msg, map, 0, BPF_F_INGRESS); return SK_PASS
    let [ld, ld_hi] = Insn::ld_map_fd(2, map.as_fd().as_raw_fd());
    let insns = [
        ld,
        ld_hi,
        Insn::mov64_imm(3, 0),
        Insn::mov64_imm(4, BPF_F_INGRESS as i32),
        Insn::call_helper(helper::MSG_REDIRECT_MAP),
        Insn::mov64_imm(0, 1),
        Insn::exit(),
    ];
    let prog = sys::prog_load(ProgLoadArgs {
        prog_type: ProgType::SK_MSG,
        expected_attach_type: rawload_obj::uapi::AttachType::SK_MSG_VERDICT,
        insns: &insns,
        license: GPL,
        kern_version: 0,
        name: "rawload_probe",
        log: None,
    })
    .map_err(|e| anyhow::anyhow!("loading the probe's sk_msg program: {}", e.errno.desc()))?;
    sys::prog_attach(
        map.as_fd(),
        prog.as_fd(),
        rawload_obj::uapi::AttachType::SK_MSG_VERDICT,
        0,
    )
    .map_err(|e| anyhow::anyhow!("attaching the probe's sk_msg program: {}", e.errno.desc()))?;
    let mut pair = probe_pair()?;
    for (slot, end) in [(0u32, &pair.server), (1, &pair.client)] {
        let fd = end.as_raw_fd() as u64;
        map.update(&slot.to_ne_bytes(), &fd.to_ne_bytes(), sys::BPF_ANY)
            .context("putting a socket into the SOCKMAP")?;
    }
    pair.client.write_all(PROBE_BYTES)?;
    readable(pair.server.as_fd())?;
    if sys::tcp_bytes_received(pair.server.as_fd())? != 0 {
        return Ok(None);
    }
    let charged = sys::rmem_alloc(pair.server.as_fd())?;
    Ok(Some(charged as usize >= PROBE_BYTES.len()))
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
