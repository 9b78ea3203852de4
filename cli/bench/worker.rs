//! One measurement, inside a worker process: a server thread and a client
//! thread (or one pair per connection) over TCP loopback or an AF_UNIX
//! stream socket, for a fixed time. The orchestrator (`super`) decides the
//! process's cgroup and CPUs; the worker only moves bytes and counts.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr as UnixAddr, UnixListener, UnixStream};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::{Transport, Workload};
use crate::json::{Json, obj};

/// A connected stream of either kind.
trait Stream: Read + Write + Send + 'static {
    fn shutdown_write(&self) -> std::io::Result<()>;
}

impl Stream for TcpStream {
    fn shutdown_write(&self) -> std::io::Result<()> {
        self.shutdown(Shutdown::Write)
    }
}

impl Stream for UnixStream {
    fn shutdown_write(&self) -> std::io::Result<()> {
        self.shutdown(Shutdown::Write)
    }
}

/// A connection: (client end, server end).
type Ends = (Box<dyn Stream>, Box<dyn Stream>);

/// `conns` connections.
fn connect_pairs(transport: Transport, conns: usize) -> Result<Vec<Ends>> {
    let mut pairs: Vec<Ends> = Vec::new();
    match transport {
        Transport::Tcp => {
            // 127.0.0.1, never ::1: the seed mode's object redirects IPv4 only.
            let listener = TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0))
                .context("listening on 127.0.0.1")?;
            let addr = listener.local_addr()?;
            for _ in 0..conns {
                let client = TcpStream::connect(addr).context("connecting")?;
                let (server, _) = listener.accept().context("accepting")?;
                client.set_nodelay(true)?;
                server.set_nodelay(true)?;
                pairs.push((Box::new(client), Box::new(server)));
            }
        }
        Transport::Unix => {
            // Unique per process and per call: runs of one bench share a process.
            static CALLS: AtomicU32 = AtomicU32::new(0);
            let call = CALLS.fetch_add(1, Ordering::Relaxed);
            let name = format!("rawload-bench-{}-{call}", std::process::id());
            let addr =
                UnixAddr::from_abstract_name(name.as_bytes()).context("an abstract socket name")?;
            let listener = UnixListener::bind_addr(&addr)
                .context("listening on an abstract AF_UNIX socket")?;
            for _ in 0..conns {
                let client = UnixStream::connect_addr(&addr).context("connecting")?;
                let (server, _) = listener.accept().context("accepting")?;
                pairs.push((Box::new(client), Box::new(server)));
            }
        }
    }
    Ok(pairs)
}

/// Bulk: the client writes `write`-byte chunks for `duration`, then
/// half-closes; the server reads everything. Rate = bytes / time to EOF.
fn bulk(transport: Transport, write: usize, duration: Duration) -> Result<Json> {
    let (mut client, mut server) = connect_pairs(transport, 1)?.pop().context("a connection")?;
    let started = Instant::now();
    let reader = std::thread::spawn(move || -> std::io::Result<u64> {
        let mut buf = vec![0u8; 256 * 1024];
        let mut total = 0u64;
        loop {
            match server.read(&mut buf) {
                Ok(0) => return Ok(total),
                Ok(n) => total += n as u64,
                Err(e) if matches!(e.kind(), ErrorKind::Interrupted | ErrorKind::WouldBlock) => {}
                Err(e) => return Err(e),
            }
        }
    });
    let chunk = vec![0x5au8; write];
    let mut sent = 0u64;
    'outer: while started.elapsed() < duration {
        for _ in 0..64 {
            match client.write_all(&chunk) {
                Ok(()) => sent += write as u64,
                Err(e) => {
                    // Reported, not hidden: the redirect can fail with ENOMEM
                    // when the reader falls far behind (docs/KERNEL-ISSUES.md).
                    eprintln!("bench worker: write failed after {sent} bytes: {e}");
                    break 'outer;
                }
            }
        }
    }
    client.shutdown_write()?;
    let received = reader
        .join()
        .map_err(|_| anyhow::anyhow!("the reader panicked"))??;
    let secs = started.elapsed().as_secs_f64();
    if received != sent {
        bail!("sent {sent} bytes but {received} arrived");
    }
    Ok(obj([
        ("bytes", received.into()),
        ("secs", secs.into()),
        ("rate", (received as f64 / secs).into()),
    ]))
}

/// Ping-pong: on each connection the client sends `msg` bytes and waits for
/// the server to echo them, for `duration`. Rate = transactions per second.
fn ping_pong(transport: Transport, msg: usize, conns: usize, duration: Duration) -> Result<Json> {
    let pairs = connect_pairs(transport, conns)?;
    let started = Instant::now();
    let mut servers = Vec::new();
    let mut clients = Vec::new();
    for (mut client, mut server) in pairs {
        servers.push(std::thread::spawn(move || -> std::io::Result<()> {
            let mut buf = vec![0u8; msg];
            loop {
                match server.read_exact(&mut buf) {
                    Ok(()) => server.write_all(&buf)?,
                    Err(e) if e.kind() == ErrorKind::UnexpectedEof => return Ok(()),
                    Err(e) => return Err(e),
                }
            }
        }));
        clients.push(std::thread::spawn(move || -> std::io::Result<Vec<u32>> {
            let out = vec![0x5au8; msg];
            let mut back = vec![0u8; msg];
            let mut latencies = Vec::with_capacity(1 << 16);
            while started.elapsed() < duration {
                let t = Instant::now();
                client.write_all(&out)?;
                client.read_exact(&mut back)?;
                latencies.push(t.elapsed().as_nanos().min(u32::MAX as u128) as u32);
            }
            client.shutdown_write()?;
            Ok(latencies)
        }));
    }
    let mut latencies = Vec::new();
    for c in clients {
        latencies.extend(
            c.join()
                .map_err(|_| anyhow::anyhow!("a client panicked"))??,
        );
    }
    let secs = started.elapsed().as_secs_f64();
    for s in servers {
        s.join()
            .map_err(|_| anyhow::anyhow!("a server panicked"))??;
    }
    latencies.sort_unstable();
    let pct = |p: f64| -> f64 {
        let i = ((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1));
        latencies.get(i).map_or(0.0, |&ns| ns as f64 / 1000.0)
    };
    Ok(obj([
        ("txns", latencies.len().into()),
        ("bytes", (latencies.len() * msg * 2).into()),
        ("secs", secs.into()),
        ("rate", (latencies.len() as f64 / secs).into()),
        ("p50_us", pct(0.50).into()),
        ("p99_us", pct(0.99).into()),
    ]))
}

/// Runs one workload and returns its JSON result.
pub fn run(transport: Transport, workload: Workload, duration: Duration) -> Result<Json> {
    match workload {
        Workload::Bulk { write } => bulk(transport, write, duration),
        Workload::PingPong { msg, conns } => ping_pong(transport, msg, conns, duration),
    }
}
