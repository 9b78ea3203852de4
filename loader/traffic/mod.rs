//! Verifiable TCP traffic: the engine behind `rawload peer` (used by the
//! tests and the kernel matrix to prove bypass and integrity).
//!
//! Each direction of each connection carries an 8-byte stream id followed by
//! a keystream that depends only on that id and the byte position. The
//! receiver regenerates the expected bytes, so any loss, duplication,
//! reordering, corruption or bytes from another connection is caught at the
//! exact offset. Both ends also hash what they sent and received (FNV-1a 64)
//! so a test can compare the two digests.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::json::{Json, obj};

mod pair;
mod stream;

pub use pair::{Transfer, lo_bytes, run_pair};
pub use stream::{Fnv, Keystream, splitmix64};

/// How one side of the traffic behaves.
#[derive(Debug, Clone)]
pub struct PeerConfig {
    /// Payload bytes to send per connection (after the 8-byte header).
    pub bytes: u64,
    /// Bytes per write() call.
    pub chunk: usize,
    pub conns: usize,
    pub seed: u64,
    /// No single read or write may block longer than this.
    pub timeout: Duration,
    /// Join this cgroup (write our pid to cgroup.procs) before any socket exists.
    pub cgroup: Option<PathBuf>,
}

/// What one direction of one connection saw.
#[derive(Debug, Default, Clone)]
struct ConnReport {
    sent: u64,
    received: u64,
    bad_bytes: u64,
    first_bad: Option<u64>,
    sent_digest: u64,
    recv_digest: u64,
    /// Blocking reads that returned EAGAIN long before their timeout: a
    /// kernel quirk of sockets in a sockmap (tcp_bpf_recvmsg returns EAGAIN
    /// when a wakeup brings no data, e.g. our own shutdown(SHUT_WR) from the
    /// sending thread). Counted and retried; see docs/KERNEL-ISSUES.md.
    spurious_eagain: u64,
    error: Option<String>,
}

/// Moves the current process into a cgroup v2 directory.
pub fn join_cgroup(dir: &Path) -> Result<()> {
    std::fs::write(dir.join("cgroup.procs"), std::process::id().to_string())
        .with_context(|| format!("joining cgroup {}", dir.display()))
}

/// Sends the header and keystream, hashing everything written.
fn send(stream: &mut TcpStream, id: u64, cfg: &PeerConfig) -> Result<(u64, u64)> {
    let mut fnv = Fnv::default();
    let header = id.to_le_bytes();
    stream
        .write_all(&header)
        .context("writing the stream header")?;
    fnv.update(&header);
    let ks = Keystream(id);
    let mut buf = vec![0u8; cfg.chunk.max(1)];
    let mut pos = 0u64;
    while pos < cfg.bytes {
        let n = ((cfg.bytes - pos) as usize).min(buf.len());
        ks.fill(pos, &mut buf[..n]);
        stream
            .write_all(&buf[..n])
            .with_context(|| format!("writing at offset {pos}"))?;
        fnv.update(&buf[..n]);
        pos += n as u64;
    }
    stream
        .shutdown(Shutdown::Write)
        .context("shutting down the write side")?;
    Ok((pos + 8, fnv.0))
}

/// Reads to EOF, checking every byte against the sender's keystream.
fn receive(stream: &mut TcpStream, timeout: Duration, report: &mut ConnReport) -> Result<()> {
    let mut fnv = Fnv::default();
    let mut buf = vec![0u8; 256 * 1024];
    let mut expect = vec![0u8; buf.len()];
    let mut header = [0u8; 8];
    let mut have_header = 0;
    let mut pos = 0u64; // payload position
    loop {
        let call = Instant::now();
        let n = match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            // SO_RCVTIMEO expiry also reads as WouldBlock, but only after
            // the whole timeout; anything quicker is the kernel quirk.
            Err(e) if e.kind() == ErrorKind::WouldBlock && call.elapsed() < timeout / 2 => {
                report.spurious_eagain += 1;
                if report.spurious_eagain > 1_000_000 {
                    bail!("read() keeps returning EAGAIN on a blocking socket");
                }
                continue;
            }
            Err(e) => {
                return Err(e).with_context(|| format!("reading at offset {}", report.received));
            }
        };
        report.received += n as u64;
        fnv.update(&buf[..n]);
        let mut data = &buf[..n];
        if have_header < 8 {
            let take = (8 - have_header).min(data.len());
            header[have_header..have_header + take].copy_from_slice(&data[..take]);
            have_header += take;
            data = &data[take..];
        }
        if data.is_empty() {
            continue;
        }
        Keystream(u64::from_le_bytes(header)).fill(pos, &mut expect[..data.len()]);
        if data != &expect[..data.len()] {
            for (i, (a, b)) in data.iter().zip(&expect).enumerate() {
                if a != b {
                    report.bad_bytes += 1;
                    report.first_bad.get_or_insert(pos + i as u64);
                }
            }
        }
        pos += data.len() as u64;
    }
    report.recv_digest = fnv.0;
    Ok(())
}

/// One full-duplex exchange: send our stream while verifying the peer's.
fn exchange(stream: TcpStream, id: u64, cfg: &PeerConfig) -> ConnReport {
    let mut report = ConnReport::default();
    let setup = stream
        .set_read_timeout(Some(cfg.timeout))
        .and_then(|_| stream.set_write_timeout(Some(cfg.timeout)))
        .and_then(|_| stream.try_clone());
    let mut writer = match setup {
        Ok(w) => w,
        Err(e) => {
            report.error = Some(format!("socket setup: {e}"));
            return report;
        }
    };
    let mut reader = stream;
    std::thread::scope(|s| {
        let sender = s.spawn(|| send(&mut writer, id, cfg));
        if let Err(e) = receive(&mut reader, cfg.timeout, &mut report) {
            report.error = Some(format!("{e:#}"));
        }
        match sender.join() {
            Ok(Ok((sent, digest))) => {
                report.sent = sent;
                report.sent_digest = digest;
            }
            Ok(Err(e)) => report.error = Some(format!("{e:#}")),
            Err(_) => report.error = Some("the sending thread panicked".into()),
        }
    });
    report
}

fn stream_id(seed: u64, conn: usize, server: bool) -> u64 {
    splitmix64(seed ^ ((conn as u64) << 1) ^ u64::from(server))
}

fn summarize(role: &str, reports: &[ConnReport], started: Instant) -> Json {
    let sum = |f: fn(&ConnReport) -> u64| reports.iter().map(f).sum::<u64>();
    let xor = |f: fn(&ConnReport) -> u64| reports.iter().map(f).fold(0, |a, b| a ^ b);
    let errors: Vec<String> = reports.iter().filter_map(|r| r.error.clone()).collect();
    obj([
        ("role", role.into()),
        ("conns", reports.len().into()),
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
        ("spurious_eagain", sum(|r| r.spurious_eagain).into()),
        ("errors", errors.into()),
        ("secs", started.elapsed().as_secs_f64().into()),
    ])
}

/// Accepts `cfg.conns` connections on `listen` and exchanges data on each.
/// Calls `ready` with the bound address before accepting.
pub fn serve(listen: SocketAddr, cfg: &PeerConfig, ready: impl FnOnce(SocketAddr)) -> Result<Json> {
    if let Some(dir) = &cfg.cgroup {
        join_cgroup(dir)?;
    }
    let listener = TcpListener::bind(listen).with_context(|| format!("listening on {listen}"))?;
    ready(listener.local_addr()?);
    listener.set_nonblocking(true)?;
    let started = Instant::now();
    let deadline = started + cfg.timeout;
    let reports = std::thread::scope(|s| -> Result<Vec<ConnReport>> {
        let mut handles = Vec::new();
        while handles.len() < cfg.conns {
            match listener.accept() {
                Ok((stream, _)) => {
                    stream.set_nonblocking(false)?;
                    let id = stream_id(cfg.seed, handles.len(), true);
                    handles.push(s.spawn(move || exchange(stream, id, cfg)));
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    if Instant::now() > deadline {
                        bail!(
                            "only {} of {} connections arrived within {:?}",
                            handles.len(),
                            cfg.conns,
                            cfg.timeout
                        );
                    }
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err(e) => return Err(e).context("accepting"),
            }
        }
        Ok(handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| ConnReport {
                    error: Some("a connection thread panicked".into()),
                    ..Default::default()
                })
            })
            .collect())
    })?;
    Ok(summarize("server", &reports, started))
}

/// Opens `cfg.conns` connections to `to` at once and exchanges data on each.
pub fn connect(to: SocketAddr, cfg: &PeerConfig) -> Result<Json> {
    if let Some(dir) = &cfg.cgroup {
        join_cgroup(dir)?;
    }
    let started = Instant::now();
    let reports = std::thread::scope(|s| {
        let handles: Vec<_> = (0..cfg.conns)
            .map(|i| {
                s.spawn(move || match TcpStream::connect_timeout(&to, cfg.timeout) {
                    Ok(stream) => exchange(stream, stream_id(cfg.seed, i, false), cfg),
                    Err(e) => ConnReport {
                        error: Some(format!("connecting to {to}: {e}")),
                        ..Default::default()
                    },
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| ConnReport {
                    error: Some("a connection thread panicked".into()),
                    ..Default::default()
                })
            })
            .collect::<Vec<_>>()
    });
    Ok(summarize("client", &reports, started))
}
