//! Verifiable TCP traffic: the engine behind `rawload peer` (used by the
//! tests, the torture suite, `selftest` and the kernel matrix).
//!
//! Each direction of each connection carries an 8-byte stream id followed by
//! a keystream that depends only on that id and the byte position. The
//! receiver regenerates the expected bytes, so any loss, duplication,
//! reordering or corruption is caught at its exact offset, and a stream that
//! arrives on the wrong connection shows up as a foreign id. Both ends also
//! hash what they sent and received (FNV-1a 64) so the digests can be
//! compared.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::json::{Json, obj};

mod conn;
mod pair;
mod stream;

use conn::ConnReport;
pub use pair::{Pair, Transfer, lo_bytes, run_pair};
pub use stream::{Fnv, Keystream, splitmix64};

/// How the receiver waits for data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Reader {
    /// Blocking read().
    Blocking,
    /// poll(POLLIN), then a non-blocking read.
    Poll,
    /// Level-triggered epoll.
    Epoll,
    /// Edge-triggered epoll (EPOLLET): only new data wakes the reader.
    EpollEt,
}

/// How the sender writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SendMode {
    Write,
    /// sendfile(2) from a memfd.
    Sendfile,
    /// Alternate write() and sendfile() chunk by chunk.
    Mixed,
}

/// How the receiver reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RecvMode {
    Read,
    /// splice(2) into a pipe, then read the pipe.
    Splice,
}

/// Who speaks when.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Pattern {
    /// Both ends send at once after connect()/accept().
    Duplex,
    /// The server sends everything first (a greeting, as SMTP or MySQL do);
    /// the client reads it all, then sends.
    Greeting,
    /// Request and response: the client sends a turn (`--write-size` bytes), the
    /// server answers with as many, and so on (both need the same --bytes and
    /// --lead).
    Turns,
}

/// How one side of the traffic behaves.
#[derive(Debug, Clone)]
pub struct PeerConfig {
    /// Payload bytes per connection and direction (after the 8-byte header).
    pub bytes: u64,
    /// Each write() is between these sizes (a seeded draw per write).
    pub write_min: usize,
    pub write_max: usize,
    /// Connections in total, and at most this many at once (client side).
    pub conns: usize,
    pub parallel: usize,
    pub seed: u64,
    /// No single wait (read, write, accept) may take longer than this.
    pub timeout: Duration,
    /// Join this cgroup (write our pid to cgroup.procs) before any socket exists.
    pub cgroup: Option<PathBuf>,
    /// Enter this network namespace (a file like /run/netns/NAME) first.
    pub netns: Option<PathBuf>,
    pub reader: Reader,
    /// Ask FIONREAD before every read and count "readable but 0".
    pub fionread: bool,
    pub send_mode: SendMode,
    pub recv_mode: RecvMode,
    pub pattern: Pattern,
    /// The receiver stops reading once after this many bytes, for so long.
    pub pause: Option<(u64, Duration)>,
    /// The receiver stops reading for good after this many bytes and closes.
    pub quit_after: Option<u64>,
    /// Close with RST (SO_LINGER 0) instead of FIN.
    pub rst: bool,
    /// The client's local address (fixes the source port).
    pub bind: Option<SocketAddr>,
    /// `Turns`: bytes the client uploads before the first turn.
    pub lead: u64,
    /// SO_RCVBUF / SO_SNDBUF set by the application on each connection.
    pub rcvbuf: Option<usize>,
    pub sndbuf: Option<usize>,
}

impl PeerConfig {
    /// Sockets are non-blocking for every reader but the blocking one, and
    /// for splice (whose hang on redirected data must stay observable).
    pub fn nonblocking(&self) -> bool {
        self.reader != Reader::Blocking || self.recv_mode == RecvMode::Splice
    }
}

/// Moves the current process into a cgroup v2 directory.
pub fn join_cgroup(dir: &Path) -> Result<()> {
    std::fs::write(dir.join("cgroup.procs"), std::process::id().to_string())
        .with_context(|| format!("joining cgroup {}", dir.display()))
}

/// Enters a network namespace (still single-threaded: it applies to every
/// thread started afterwards).
pub fn join_netns(path: &Path) -> Result<()> {
    let f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).map_err(|e| {
        anyhow::anyhow!(
            "entering network namespace {}: {}",
            path.display(),
            e.desc()
        )
    })
}

fn prepare(cfg: &PeerConfig) -> Result<()> {
    if let Some(dir) = &cfg.cgroup {
        join_cgroup(dir)?;
    }
    if let Some(ns) = &cfg.netns {
        join_netns(ns)?;
    }
    Ok(())
}

/// One connection, both directions.
fn exchange(stream: TcpStream, id: u64, cfg: &PeerConfig, server: bool) -> ConnReport {
    let mut report = ConnReport {
        sent_id: id,
        ..Default::default()
    };
    let setup = (|| -> std::io::Result<TcpStream> {
        use nix::sys::socket::{setsockopt, sockopt};
        if let Some(n) = cfg.rcvbuf {
            setsockopt(&stream, sockopt::RcvBuf, &n)?;
        }
        if let Some(n) = cfg.sndbuf {
            setsockopt(&stream, sockopt::SndBuf, &n)?;
        }
        stream.set_nonblocking(cfg.nonblocking())?;
        stream.set_read_timeout(Some(cfg.timeout))?;
        stream.set_write_timeout(Some(cfg.timeout))?;
        stream.try_clone()
    })();
    let mut writer = match setup {
        Ok(w) => w,
        Err(e) => {
            report.error = Some(format!("socket setup: {e}"));
            return report;
        }
    };
    let mut reader = stream;
    let (sent, received) = match (cfg.pattern, server) {
        (Pattern::Greeting, true) => {
            let sent = conn::send(&mut writer, id, cfg);
            (sent, conn::receive(&mut reader, cfg, &mut report))
        }
        (Pattern::Greeting, false) => {
            let received = conn::receive(&mut reader, cfg, &mut report);
            (conn::send(&mut writer, id, cfg), received)
        }
        (Pattern::Turns, _) => (
            conn::turns(&mut writer, &mut reader, id, cfg, server, &mut report),
            Ok(()),
        ),
        (Pattern::Duplex, _) => std::thread::scope(|s| {
            let sender = s.spawn(|| conn::send(&mut writer, id, cfg));
            let received = conn::receive(&mut reader, cfg, &mut report);
            let sent = sender
                .join()
                .unwrap_or_else(|_| Err(anyhow::anyhow!("the sending thread panicked")));
            (sent, received)
        }),
    };
    let mut errors = Vec::new();
    match sent {
        Ok(sent) => {
            report.sent = sent.bytes;
            report.sent_digest = sent.digest;
            report.eagain_after = sent.eagain_after;
        }
        Err(e) => errors.push(format!("{e:#}")),
    }
    if let Err(e) = received {
        errors.push(format!("{e:#}"));
    }
    if cfg.rst {
        if let Err(e) = conn::set_linger_zero(&reader) {
            errors.push(format!("{e:#}"));
        }
    }
    if !errors.is_empty() {
        report.error = Some(errors.join("; "));
    }
    report
}

fn stream_id(seed: u64, conn: usize, server: bool) -> u64 {
    splitmix64(seed ^ ((conn as u64) << 1) ^ u64::from(server))
}

fn summarize(role: &str, reports: &[ConnReport], started: Instant) -> Json {
    let sum = |f: fn(&ConnReport) -> u64| reports.iter().map(f).sum::<u64>();
    let xor = |f: fn(&ConnReport) -> u64| reports.iter().map(f).fold(0, |a, b| a ^ b);
    let errors: Vec<String> = reports.iter().filter_map(|r| r.error.clone()).collect();
    let ids = |f: fn(&ConnReport) -> Option<u64>| -> Json {
        let mut v: Vec<String> = reports
            .iter()
            .filter_map(f)
            .map(|id| format!("{id:016x}"))
            .collect();
        v.sort();
        v.into()
    };
    obj([
        ("role", role.into()),
        ("conns", reports.len().into()),
        (
            "conns_failed",
            reports.iter().filter(|r| r.error.is_some()).count().into(),
        ),
        ("bytes_sent", sum(|r| r.sent).into()),
        ("bytes_received", sum(|r| r.received).into()),
        ("bad_bytes", sum(|r| r.bad_bytes).into()),
        (
            "first_bad",
            reports.iter().filter_map(|r| r.first_bad).min().into(),
        ),
        // XOR over connections: independent of the order they were accepted.
        (
            "sent_digest",
            format!("{:016x}", xor(|r| r.sent_digest)).into(),
        ),
        (
            "recv_digest",
            format!("{:016x}", xor(|r| r.recv_digest)).into(),
        ),
        ("sent_ids", ids(|r| Some(r.sent_id))),
        ("recv_ids", ids(|r| r.recv_id)),
        ("spurious_eagain", sum(|r| r.spurious_eagain).into()),
        // The most any connection took before its writer first saw EAGAIN,
        // and how many connections saw it at all.
        (
            "eagain_after_max",
            reports.iter().filter_map(|r| r.eagain_after).max().into(),
        ),
        (
            "eagain_conns",
            reports
                .iter()
                .filter(|r| r.eagain_after.is_some())
                .count()
                .into(),
        ),
        ("fionread_zero", sum(|r| r.fionread_zero).into()),
        (
            "quit_early",
            reports.iter().filter(|r| r.quit_early).count().into(),
        ),
        ("errors", errors.into()),
        ("secs", started.elapsed().as_secs_f64().into()),
    ])
}

fn joined(handle: std::thread::ScopedJoinHandle<'_, ConnReport>) -> ConnReport {
    handle.join().unwrap_or_else(|_| ConnReport {
        error: Some("a connection thread panicked".into()),
        ..Default::default()
    })
}

/// Accepts `cfg.conns` connections on `listen` and exchanges data on each.
/// Calls `ready` with the bound address before accepting.
pub fn serve(listen: SocketAddr, cfg: &PeerConfig, ready: impl FnOnce(SocketAddr)) -> Result<Json> {
    prepare(cfg)?;
    let listener = TcpListener::bind(listen).with_context(|| format!("listening on {listen}"))?;
    ready(listener.local_addr()?);
    listener.set_nonblocking(true)?;
    let started = Instant::now();
    let reports = std::thread::scope(|s| -> Result<Vec<ConnReport>> {
        let mut handles = Vec::new();
        let mut last_progress = Instant::now();
        while handles.len() < cfg.conns {
            match listener.accept() {
                Ok((stream, _)) => {
                    let id = stream_id(cfg.seed, handles.len(), true);
                    handles.push(s.spawn(move || exchange(stream, id, cfg, true)));
                    last_progress = Instant::now();
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if last_progress.elapsed() > cfg.timeout {
                        bail!(
                            "only {} of {} connections arrived",
                            handles.len(),
                            cfg.conns
                        );
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(e) => return Err(e).context("accepting"),
            }
        }
        Ok(handles.into_iter().map(joined).collect())
    })?;
    Ok(summarize("server", &reports, started))
}

/// A TCP connection from `bind` (if given) to `to`.
fn dial(to: SocketAddr, bind: Option<SocketAddr>, timeout: Duration) -> Result<TcpStream> {
    let Some(local) = bind else {
        return TcpStream::connect_timeout(&to, timeout)
            .with_context(|| format!("connecting to {to}"));
    };
    use nix::sys::socket::{
        AddressFamily, SockFlag, SockType, SockaddrStorage, bind as bind_to, connect, setsockopt,
        socket, sockopt,
    };
    let family = if to.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    let fd = socket(family, SockType::Stream, SockFlag::SOCK_CLOEXEC, None).context("socket")?;
    setsockopt(&fd, sockopt::ReuseAddr, &true).context("SO_REUSEADDR")?;
    bind_to(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        &SockaddrStorage::from(local),
    )
    .map_err(|e| anyhow::anyhow!("binding {local}: {}", e.desc()))?;
    connect(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        &SockaddrStorage::from(to),
    )
    .map_err(|e| anyhow::anyhow!("connecting {local} -> {to}: {}", e.desc()))?;
    Ok(TcpStream::from(fd))
}

/// Opens `cfg.conns` connections to `to`, `cfg.parallel` at a time, and
/// exchanges data on each.
pub fn connect(to: SocketAddr, cfg: &PeerConfig) -> Result<Json> {
    prepare(cfg)?;
    let started = Instant::now();
    let next = AtomicUsize::new(0);
    let workers = cfg.parallel.clamp(1, cfg.conns.max(1));
    let reports = std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                s.spawn(|| {
                    let mut mine = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= cfg.conns {
                            return mine;
                        }
                        mine.push(match dial(to, cfg.bind, cfg.timeout) {
                            Ok(stream) => {
                                exchange(stream, stream_id(cfg.seed, i, false), cfg, false)
                            }
                            Err(e) => ConnReport {
                                sent_id: stream_id(cfg.seed, i, false),
                                error: Some(format!("{e:#}")),
                                ..Default::default()
                            },
                        });
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| {
                h.join().unwrap_or_else(|_| {
                    vec![ConnReport {
                        error: Some("a client thread panicked".into()),
                        ..Default::default()
                    }]
                })
            })
            .collect::<Vec<_>>()
    });
    Ok(summarize("client", &reports, started))
}
