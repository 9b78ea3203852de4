//! `rawload bench`: the gain on this host, measured, not promised.
//!
//! Every workload runs in three modes, interleaved round by round
//! (A B C A B C ...) so that drift on a noisy machine hits all of them alike:
//!
//! - **tcp**: loopback TCP, rawload not involved;
//! - **rawload**: loopback TCP in a private cgroup rawload is attached to;
//! - **unix**: AF_UNIX stream sockets, the practical ceiling for same-host IPC.
//!
//! Each measurement is a fresh worker process (`rawload bench-worker`) in a
//! private cgroup, pinned to `--cpus` (one CPU by default: on two vCPUs a
//! ping-pong across CPUs is bimodal, about 5x apart). For the rawload mode
//! the counters must show the bytes as redirected, or the sample is
//! refused: a silent fallback to TCP cannot pose as a result. The report
//! gives medians, min-max and ratios to tcp.

mod report;
pub mod worker;

use std::fmt;
use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::str::FromStr;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::json::Json;
use crate::scratch::{PrivateCgroup, PrivatePins, attach_private};
use crate::status;
use rawload_loader::pipeline::ObjectSource;

pub use report::{Summary, render_svg, render_table, to_json};

/// What the sockets are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Transport {
    Tcp,
    Unix,
}

/// The three modes compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Tcp,
    Rawload,
    Unix,
}

pub const MODES: [Mode; 3] = [Mode::Tcp, Mode::Rawload, Mode::Unix];

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Tcp => "tcp",
            Mode::Rawload => "rawload",
            Mode::Unix => "unix",
        }
    }

    fn transport(self) -> Transport {
        match self {
            Mode::Unix => Transport::Unix,
            _ => Transport::Tcp,
        }
    }
}

/// One kind of traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    /// One connection, one direction, `write`-byte writes as fast as possible.
    Bulk { write: usize },
    /// `conns` connections each sending `msg` bytes and waiting for the echo.
    PingPong { msg: usize, conns: usize },
}

/// The workloads of a full run.
pub const WORKLOADS: [Workload; 7] = [
    Workload::Bulk { write: 1024 },
    Workload::Bulk { write: 16 * 1024 },
    Workload::Bulk { write: 64 * 1024 },
    Workload::PingPong { msg: 64, conns: 1 },
    Workload::PingPong {
        msg: 1024,
        conns: 1,
    },
    Workload::PingPong { msg: 64, conns: 16 },
    Workload::PingPong {
        msg: 1024,
        conns: 16,
    },
];

fn size_text(n: usize) -> String {
    if n >= 1024 && n % 1024 == 0 {
        format!("{} KiB", n / 1024)
    } else {
        format!("{n} B")
    }
}

impl fmt::Display for Workload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Workload::Bulk { write } => write!(f, "bulk, {} writes", size_text(*write)),
            Workload::PingPong { msg, conns } => {
                write!(
                    f,
                    "ping-pong {}, {conns} conn{}",
                    size_text(*msg),
                    if *conns == 1 { "" } else { "s" }
                )
            }
        }
    }
}

/// The worker's command-line form: `bulk:1024`, `pingpong:64:16`.
impl FromStr for Workload {
    type Err = String;

    fn from_str(s: &str) -> Result<Workload, String> {
        let parts: Vec<&str> = s.split(':').collect();
        let num = |p: &str| {
            p.parse::<usize>()
                .map_err(|_| format!("bad number in workload {s:?}"))
        };
        match parts.as_slice() {
            ["bulk", w] => Ok(Workload::Bulk {
                write: num(w)?.max(1),
            }),
            ["pingpong", m, c] => Ok(Workload::PingPong {
                msg: num(m)?.max(1),
                conns: num(c)?.max(1),
            }),
            _ => Err(format!(
                "unknown workload {s:?} (bulk:SIZE or pingpong:SIZE:CONNS)"
            )),
        }
    }
}

impl Workload {
    fn arg(self) -> String {
        match self {
            Workload::Bulk { write } => format!("bulk:{write}"),
            Workload::PingPong { msg, conns } => format!("pingpong:{msg}:{conns}"),
        }
    }

    pub fn is_bulk(self) -> bool {
        matches!(self, Workload::Bulk { .. })
    }
}

#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub rounds: usize,
    pub duration: Duration,
    /// CPUs the client and server are pinned to.
    pub cpus: Vec<usize>,
    pub workloads: Vec<Workload>,
    /// `attach --stream-bytes` for the rawload mode (None: the default).
    pub stream_bytes: Option<u32>,
}

impl BenchOptions {
    /// The full run (about 3.5 minutes) or `--quick` (under 30 seconds).
    pub fn new(quick: bool) -> BenchOptions {
        BenchOptions {
            rounds: if quick { 2 } else { 5 },
            duration: Duration::from_millis(if quick { 300 } else { 2000 }),
            cpus: vec![0],
            workloads: WORKLOADS.to_vec(),
            stream_bytes: None,
        }
    }
}

/// One worker result.
#[derive(Debug, Clone)]
pub struct Sample {
    pub rate: f64,
    pub p50_us: Option<f64>,
    pub p99_us: Option<f64>,
    /// rawload mode: the share of the bytes that were redirected (the rest
    /// went through TCP after `--stream-bytes`).
    pub redirected_share: Option<f64>,
}

/// The worker's entry point (`rawload bench-worker`).
pub fn worker_main(
    transport: Transport,
    workload: Workload,
    duration: Duration,
    cgroup: &Path,
    cpus: &[usize],
) -> Result<Json> {
    crate::traffic::join_cgroup(cgroup)?;
    let mut set = nix::sched::CpuSet::new();
    for &cpu in cpus {
        set.set(cpu)
            .map_err(|e| anyhow::anyhow!("CPU {cpu}: {}", e.desc()))?;
    }
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set)
        .map_err(|e| anyhow::anyhow!("pinning to CPUs {cpus:?}: {}", e.desc()))?;
    worker::run(transport, workload, duration)
}

fn run_worker(
    exe: &Path,
    mode: Mode,
    workload: Workload,
    opts: &BenchOptions,
    cgroup: &Path,
) -> Result<Json> {
    let cpus = opts
        .cpus
        .iter()
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let out = Command::new(exe)
        .arg("bench-worker")
        .args([
            "--transport",
            if mode.transport() == Transport::Unix {
                "unix"
            } else {
                "tcp"
            },
        ])
        .args(["--workload", &workload.arg()])
        .args(["--duration-ms", &opts.duration.as_millis().to_string()])
        .arg("--cgroup")
        .arg(cgroup)
        .args(["--cpus", &cpus])
        .output()
        .context("running a bench worker")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "{} {workload} failed: {}",
            mode.name(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Json::parse(text.trim()).with_context(|| format!("bench worker printed {text:?}"))
}

/// (bytes the sk_msg program redirected, bytes it saw in all).
/// The counters that tell whether a worker's connections were accelerated:
/// sockets that joined the map, and bytes redirected.
fn rawload_counters(pins: &Path) -> Result<(u64, u64)> {
    let st = status::read(pins)?;
    let counter = |name| st.as_ref().and_then(|s| s.counter(name)).unwrap_or(0);
    Ok((counter("sockets_inserted"), counter("bytes_redirected")))
}

/// Runs the benchmark; progress lines go to `progress`.
pub fn run(opts: &BenchOptions, progress: &mut dyn Write) -> Result<Summary> {
    rawload_loader::privileges::require("bench")?;
    let exe = std::env::current_exe().context("finding the rawload binary")?;
    let tag = format!("rawload-bench-{}", std::process::id());
    let plain = PrivateCgroup::create(&format!("{tag}-plain"))?;
    let accel = PrivateCgroup::create(&format!("{tag}-rawload"))?;
    let pins = PrivatePins::new(&tag);
    let attached = attach_private(
        &accel,
        &pins,
        ObjectSource::Embedded { debug: false },
        opts.stream_bytes,
    )?;
    writeln!(
        progress,
        "bench: {} rounds x {} workloads x 3 modes, {:.1} s each, pinned to CPU {:?}",
        opts.rounds,
        opts.workloads.len(),
        opts.duration.as_secs_f64(),
        opts.cpus
    )?;
    let mut summary = Summary::new(opts, attached.streams.describe());
    for round in 1..=opts.rounds {
        for &workload in &opts.workloads {
            for mode in MODES {
                let cgroup = if mode == Mode::Rawload {
                    accel.path()
                } else {
                    plain.path()
                };
                let before = if mode == Mode::Rawload {
                    rawload_counters(pins.path())?
                } else {
                    (0, 0)
                };
                let result = run_worker(&exe, mode, workload, opts, cgroup)?;
                let bytes = result["bytes"].as_u64().unwrap_or(0);
                let mut redirected_share = None;
                if mode == Mode::Rawload {
                    // The rawload sample counts only if both ends of its
                    // connections joined the map. What share of the bytes
                    // then took the redirect is rawload's choice (a stream
                    // continues over TCP past --stream-bytes) and is shown.
                    let after = rawload_counters(pins.path())?;
                    let inserted = after.0.saturating_sub(before.0);
                    if inserted < 2 {
                        bail!(
                            "{workload}: only {inserted} of its sockets joined rawload's map; rawload is not attached to these sockets"
                        );
                    }
                    let redirected = after.1.saturating_sub(before.1);
                    redirected_share = Some(redirected as f64 / bytes.max(1) as f64);
                }
                let sample = Sample {
                    rate: result["rate"].as_f64().unwrap_or(0.0),
                    p50_us: result["p50_us"].as_f64(),
                    p99_us: result["p99_us"].as_f64(),
                    redirected_share,
                };
                writeln!(
                    progress,
                    "  [{round}/{}] {:<32} {:<8} {}",
                    opts.rounds,
                    workload.to_string(),
                    mode.name(),
                    report::rate_text(workload, sample.rate)
                )?;
                progress.flush()?;
                summary.add(workload, mode, sample);
            }
        }
    }
    Ok(summary)
}
