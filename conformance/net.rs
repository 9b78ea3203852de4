//! The socket vocabulary the cases are written in: a connected pair on
//! loopback, bounded waits, filling a peer that does not read, draining
//! and hashing, and errno names as results.
//!
//! Every wait here takes a deadline: no case can block for longer than it
//! says. Sockets are [`Sock`]s, which on close add the payload bytes they
//! received *through TCP* (`tcpi_bytes_received`) to a process-wide count:
//! the case process reports it, and the orchestrator combines it with
//! rawload's counters to tell which path the bytes took.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use nix::errno::Errno;
use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::poll::PollFlags;
use nix::sys::epoll::{Epoll, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::socket::{
    self, AddressFamily, Backlog, MsgFlags, Shutdown, SockFlag, SockType, SockaddrStorage,
    setsockopt, sockopt,
};
use nix::sys::time::TimeVal;
use rawload::traffic::{Fnv, Keystream};
use rawload_loader::sys::sock::{poll_one, tcp_info};

use crate::cases::Unsupported;

/// Payload bytes the case's sockets received through TCP (summed on close).
static TCP_PAYLOAD: AtomicU64 = AtomicU64::new(0);

pub fn tcp_payload() -> u64 {
    TCP_PAYLOAD.load(Ordering::SeqCst)
}

/// A TCP socket of a case.
#[derive(Debug)]
pub struct Sock(OwnedFd);

impl Drop for Sock {
    fn drop(&mut self) {
        TCP_PAYLOAD.fetch_add(payload_through_tcp(self.0.as_fd()), Ordering::SeqCst);
    }
}

/// `tcpi_bytes_received`, but 0 unless a segment with data arrived
/// (`tcpi_data_segs_in`): the count also includes the FIN's one sequence
/// number, which a redirected connection receives through TCP too.
fn payload_through_tcp(fd: BorrowedFd<'_>) -> u64 {
    let end = std::mem::offset_of!(libc::tcp_info, tcpi_data_segs_in) + 4;
    match tcp_info(fd) {
        Ok((info, len)) if len >= end && info.tcpi_data_segs_in > 0 => info.tcpi_bytes_received,
        _ => 0,
    }
}

impl AsFd for Sock {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

impl Sock {
    /// `send(2)`; never raises SIGPIPE (a closed peer is a result here).
    pub fn send(&self, buf: &[u8], flags: MsgFlags) -> nix::Result<usize> {
        socket::send(self.0.as_raw_fd(), buf, flags | MsgFlags::MSG_NOSIGNAL)
    }

    /// `send(2)`, again after EINTR.
    pub fn send_retrying(&self, buf: &[u8]) -> nix::Result<usize> {
        loop {
            match self.send(buf, MsgFlags::empty()) {
                Err(Errno::EINTR) => continue,
                r => return r,
            }
        }
    }

    pub fn recv(&self, buf: &mut [u8], flags: MsgFlags) -> nix::Result<usize> {
        loop {
            match socket::recv(self.0.as_raw_fd(), buf, flags) {
                Err(Errno::EINTR) => continue,
                r => return r,
            }
        }
    }

    pub fn set_nonblocking(&self, on: bool) -> Result<()> {
        let flags = OFlag::from_bits_truncate(fcntl(&self.0, FcntlArg::F_GETFL)?);
        let flags = match on {
            true => flags | OFlag::O_NONBLOCK,
            false => flags - OFlag::O_NONBLOCK,
        };
        fcntl(&self.0, FcntlArg::F_SETFL(flags))?;
        Ok(())
    }

    pub fn shutdown(&self, how: Shutdown) -> nix::Result<()> {
        socket::shutdown(self.0.as_raw_fd(), how)
    }

    pub fn set_send_timeout(&self, t: Duration) -> Result<()> {
        setsockopt(&self.0, sockopt::SendTimeout, &timeval(t))?;
        Ok(())
    }

    pub fn set_recv_timeout(&self, t: Duration) -> Result<()> {
        setsockopt(&self.0, sockopt::ReceiveTimeout, &timeval(t))?;
        Ok(())
    }
}

fn timeval(t: Duration) -> TimeVal {
    TimeVal::new(
        t.as_secs() as libc::time_t,
        t.subsec_micros() as libc::suseconds_t,
    )
}

/// The result of a send or recv as a comparable token: the byte count or
/// the errno name (`EAGAIN`, `ECONNRESET`, ...).
pub fn res(r: nix::Result<usize>) -> String {
    match r {
        Ok(n) => n.to_string(),
        Err(e) => format!("{e:?}"),
    }
}

/// `POLLRDHUP` (the peer shut down writing), which nix does not name.
pub const POLLRDHUP: PollFlags = PollFlags::from_bits_retain(libc::POLLRDHUP);

/// Poll flags as a token: `POLLIN|POLLRDHUP`, or `none`.
pub fn flags_text(f: PollFlags) -> String {
    let names: Vec<&str> = [
        (PollFlags::POLLIN, "POLLIN"),
        (PollFlags::POLLPRI, "POLLPRI"),
        (PollFlags::POLLOUT, "POLLOUT"),
        (PollFlags::POLLERR, "POLLERR"),
        (PollFlags::POLLHUP, "POLLHUP"),
        (POLLRDHUP, "POLLRDHUP"),
        (PollFlags::POLLNVAL, "POLLNVAL"),
    ]
    .into_iter()
    .filter(|(bit, _)| f.contains(*bit))
    .map(|(_, name)| name)
    .collect();
    match names.is_empty() {
        true => "none".into(),
        false => names.join("|"),
    }
}

/// One poll(2) of `fd` for `events`, waiting at most `timeout`; the
/// returned events (empty on timeout), every bit the kernel set kept.
pub fn poll_once(fd: &impl AsFd, events: PollFlags, timeout: Duration) -> Result<PollFlags> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let ms = left.as_millis().min(60_000) as i32;
        match poll_one(fd.as_fd(), events.bits(), ms) {
            Ok(0) if left.is_zero() => return Ok(PollFlags::empty()),
            Ok(0) => continue,
            Ok(revents) => return Ok(PollFlags::from_bits_retain(revents)),
            Err(Errno::EINTR) => continue,
            Err(e) => bail!("poll: {}", e.desc()),
        }
    }
}

/// Polls until every flag of `want` is reported or `timeout` passes; the
/// last events seen.
pub fn poll_until(
    fd: &impl AsFd,
    events: PollFlags,
    want: PollFlags,
    timeout: Duration,
) -> Result<PollFlags> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let got = poll_once(fd, events, left)?;
        if got.contains(want) || left.is_zero() {
            return Ok(got);
        }
        // Reported, but not all of `want` yet (POLLIN before POLLPRI, say).
        std::thread::sleep(Duration::from_millis(1).min(left));
    }
}

/// Options of a connected pair.
#[derive(Debug, Clone, Copy, Default)]
pub struct PairOpts {
    pub ipv6: bool,
    /// SO_SNDBUF and SO_RCVBUF on both ends, set before connect()/listen().
    pub bufs: Option<usize>,
}

/// A connected TCP pair on loopback: `client` connected to a listener on
/// port 0, `server` the accepted socket. Both are established (and, under
/// rawload, in the map if rawload puts them there) when this returns.
#[derive(Debug)]
pub struct Pair {
    pub client: Sock,
    pub server: Sock,
}

fn tcp_socket(opts: PairOpts) -> Result<OwnedFd> {
    let family = match opts.ipv6 {
        true => AddressFamily::Inet6,
        false => AddressFamily::Inet,
    };
    let fd = match socket::socket(family, SockType::Stream, SockFlag::SOCK_CLOEXEC, None) {
        Ok(fd) => fd,
        Err(Errno::EAFNOSUPPORT) => bail!(Unsupported(format!("no {family:?} sockets"))),
        Err(e) => bail!("socket: {}", e.desc()),
    };
    if let Some(size) = opts.bufs {
        setsockopt(&fd, sockopt::SndBuf, &size).context("SO_SNDBUF")?;
        setsockopt(&fd, sockopt::RcvBuf, &size).context("SO_RCVBUF")?;
    }
    Ok(fd)
}

/// A client whose connection is established but not yet accepted.
#[derive(Debug)]
pub struct Pending {
    pub client: Sock,
    listener: TcpListener,
}

impl Pair {
    pub fn new(opts: PairOpts, timeout: Duration) -> Result<Pair> {
        Pair::connect(opts, timeout)?.accept(timeout)
    }

    /// Listens on loopback port 0 and connects to it (bounded).
    pub fn connect(opts: PairOpts, timeout: Duration) -> Result<Pending> {
        let addr = match opts.ipv6 {
            true => SocketAddr::from((Ipv6Addr::LOCALHOST, 0)),
            false => SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        };
        let lfd = tcp_socket(opts)?;
        match socket::bind(lfd.as_raw_fd(), &SockaddrStorage::from(addr)) {
            Ok(()) => {}
            Err(e @ (Errno::EADDRNOTAVAIL | Errno::EAFNOSUPPORT)) => {
                bail!(Unsupported(format!("no loopback address {addr}: {e:?}")))
            }
            Err(e) => bail!("bind {addr}: {}", e.desc()),
        }
        socket::listen(&lfd, Backlog::new(8)?).context("listen")?;
        let listener = TcpListener::from(lfd);
        let bound = listener.local_addr()?;
        let client = Sock(tcp_socket(opts)?);
        client.set_nonblocking(true)?;
        match socket::connect(client.0.as_raw_fd(), &SockaddrStorage::from(bound)) {
            Ok(()) | Err(Errno::EINPROGRESS) => {}
            Err(e) => bail!("connect {bound}: {}", e.desc()),
        }
        if !poll_once(&client, PollFlags::POLLOUT, timeout)?.contains(PollFlags::POLLOUT) {
            bail!("connect {bound}: not established within {timeout:?}");
        }
        match socket::getsockopt(&client.0, sockopt::SocketError) {
            Ok(0) => {}
            Ok(err) => bail!("connect {bound}: {}", Errno::from_raw(err).desc()),
            Err(e) => bail!("SO_ERROR: {}", e.desc()),
        }
        client.set_nonblocking(false)?;
        Ok(Pending { client, listener })
    }
}

impl Pending {
    /// accept() (bounded): the pair.
    pub fn accept(self, timeout: Duration) -> Result<Pair> {
        if !poll_once(&self.listener, PollFlags::POLLIN, timeout)?.contains(PollFlags::POLLIN) {
            bail!("accept: nothing within {timeout:?}");
        }
        let (stream, _) = self.listener.accept().context("accept")?;
        stream.set_nonblocking(false)?;
        Ok(Pair {
            client: self.client,
            server: Sock(OwnedFd::from(stream)),
        })
    }
}

/// Why a fill stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FillEnd {
    /// The kernel said EAGAIN: the peer is full.
    Eagain,
    /// `bound` bytes were accepted without EAGAIN.
    Bound,
    /// The time limit passed (a blocking send that never returned EAGAIN).
    Time,
    Error(Errno),
}

impl FillEnd {
    pub fn text(self) -> String {
        match self {
            FillEnd::Eagain => "EAGAIN".into(),
            FillEnd::Bound => "no-EAGAIN-within-bound".into(),
            FillEnd::Time => "no-EAGAIN-within-time".into(),
            FillEnd::Error(e) => format!("{e:?}"),
        }
    }
}

/// What a sender wrote: how much, its digest, and why it stopped. The
/// bytes are the keystream of seed 1 from position 0.
#[derive(Debug, Clone, Copy)]
pub struct Fill {
    pub accepted: u64,
    pub digest: u64,
    pub end: FillEnd,
    /// How long the last send() call took (the one that ended the fill).
    pub last_call: Duration,
}

pub const CHUNK: usize = 64 * 1024;

/// Sends keystream bytes until EAGAIN, an error, `bound` bytes or
/// `timeout`. Non-blocking behaviour comes from the socket or `flags`.
pub fn fill(sock: &Sock, flags: MsgFlags, bound: u64, timeout: Duration) -> Fill {
    let started = Instant::now();
    let mut buf = vec![0u8; CHUNK];
    let mut f = Fill {
        accepted: 0,
        digest: 0,
        end: FillEnd::Bound,
        last_call: Duration::ZERO,
    };
    let mut hash = Fnv::default();
    while f.accepted < bound {
        if started.elapsed() > timeout {
            f.end = FillEnd::Time;
            break;
        }
        let n = CHUNK.min((bound - f.accepted) as usize);
        Keystream(1).fill(f.accepted, &mut buf[..n]);
        let call = Instant::now();
        let r = sock.send(&buf[..n], flags);
        f.last_call = call.elapsed();
        match r {
            Ok(sent) => {
                hash.update(&buf[..sent]);
                f.accepted += sent as u64;
            }
            Err(Errno::EINTR) => {}
            Err(Errno::EAGAIN) => {
                f.end = FillEnd::Eagain;
                break;
            }
            Err(e) => {
                f.end = FillEnd::Error(e);
                break;
            }
        }
    }
    f.digest = hash.0;
    f
}

/// What a reader got.
#[derive(Debug, Clone)]
pub struct Drained {
    pub bytes: u64,
    pub digest: u64,
    /// `EOF`, `complete` (the expected count arrived), `timeout`, or an errno.
    pub end: String,
}

/// Reads until `expect` bytes, end of file, an error or `timeout`, hashing
/// what arrives. Leaves the socket's blocking mode as it found it.
pub fn drain(sock: &Sock, expect: u64, timeout: Duration) -> Result<Drained> {
    let deadline = Instant::now() + timeout;
    let mut buf = vec![0u8; CHUNK];
    let mut hash = Fnv::default();
    let mut bytes = 0;
    let end = loop {
        if bytes >= expect {
            break "complete".to_string();
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break "timeout".to_string();
        }
        let ready = poll_once(sock, PollFlags::POLLIN, left)?;
        if ready.is_empty() {
            continue;
        }
        let want = CHUNK.min((expect - bytes) as usize);
        match sock.recv(&mut buf[..want], MsgFlags::MSG_DONTWAIT) {
            Ok(0) => break "EOF".to_string(),
            Ok(n) => {
                hash.update(&buf[..n]);
                bytes += n as u64;
            }
            Err(Errno::EAGAIN) => std::thread::sleep(Duration::from_millis(1)),
            Err(e) => break format!("{e:?}"),
        }
    };
    Ok(Drained {
        bytes,
        digest: hash.0,
        end,
    })
}

impl Drained {
    /// `intact` when exactly what was sent arrived, else what went wrong.
    pub fn verdict(&self, sent: &Fill) -> String {
        match (self.bytes == sent.accepted, self.digest == sent.digest) {
            (true, true) => "intact".into(),
            (true, false) => "corrupt".into(),
            (false, _) => format!("short({}/{}:{})", self.bytes, sent.accepted, self.end),
        }
    }
}

/// Writes all of `data` on a blocking socket (bounded by its send timeout,
/// if any); the bytes written or the first error.
pub fn send_all(sock: &Sock, data: &[u8]) -> nix::Result<usize> {
    let mut done = 0;
    while done < data.len() {
        done += sock.send_retrying(&data[done..])?;
    }
    Ok(done)
}

/// `n` bytes of the keystream of `seed`.
pub fn pattern(seed: u64, n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    Keystream(seed).fill(0, &mut v);
    v
}

/// Reads exactly `n` bytes (or up to EOF/error/timeout) and returns them.
pub fn read_exact(sock: &Sock, n: usize, timeout: Duration) -> Result<(Vec<u8>, String)> {
    let deadline = Instant::now() + timeout;
    let mut out = Vec::with_capacity(n);
    let mut buf = vec![0u8; CHUNK];
    while out.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok((out, "timeout".into()));
        }
        if poll_once(sock, PollFlags::POLLIN, left)?.is_empty() {
            continue;
        }
        let want = CHUNK.min(n - out.len());
        match sock.recv(&mut buf[..want], MsgFlags::MSG_DONTWAIT) {
            Ok(0) => return Ok((out, "EOF".into())),
            Ok(k) => out.extend_from_slice(&buf[..k]),
            Err(Errno::EAGAIN) => std::thread::sleep(Duration::from_millis(1)),
            Err(e) => return Ok((out, format!("{e:?}"))),
        }
    }
    Ok((out, "complete".into()))
}

/// `got` compared with `want`: `intact`, or what differs.
/// `end` (how the read ended) is added to a short result when not empty.
pub fn compare(got: &[u8], want: &[u8], end: &str) -> String {
    match (got.len() == want.len(), got == want, end.is_empty()) {
        (_, true, _) => "intact".into(),
        (true, false, _) => "corrupt".into(),
        (false, _, true) => format!("short({}/{})", got.len(), want.len()),
        (false, _, false) => format!("short({}/{}:{end})", got.len(), want.len()),
    }
}

/// The events of `n` epoll results as a token: `EPOLLIN|EPOLLOUT`, or `none`.
fn epoll_text(events: &[EpollEvent], n: usize) -> String {
    let mut flags = EpollFlags::empty();
    for e in &events[..n] {
        flags |= e.events();
    }
    let names: Vec<&str> = flags.iter_names().map(|(n, _)| n).collect();
    match names.is_empty() {
        true => "none".into(),
        false => names.join("|"),
    }
}

/// One epoll_wait of at most `timeout`, as text.
pub fn epoll_wait_text(ep: &Epoll, timeout: Duration) -> Result<String> {
    let mut events = [EpollEvent::empty(); 4];
    let ms = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
    let n = ep.wait(&mut events, EpollTimeout::from(ms))?;
    Ok(epoll_text(&events, n))
}
