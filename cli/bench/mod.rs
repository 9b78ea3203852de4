//! `rawload bench`: the gain on this host, measured, not promised.
//!
//! Every workload runs in four modes, interleaved round by round
//! (A B C D A B C D ...) so that drift on a noisy machine hits all of them
//! alike:
//!
//! - **tcp**: loopback TCP, rawload not involved;
//! - **rawload**: loopback TCP in a private cgroup rawload is attached to;
//! - **seed**: loopback TCP in a private cgroup the seed-style object
//!   (`tests/fixtures/seed_legacy.o`: insert every IPv4 socket, redirect
//!   every message, nothing else) is attached to, so that rawload's own
//!   per-message cost shows against the bare design it grew from;
//! - **unix**: AF_UNIX stream sockets, the practical ceiling for same-host IPC.
//!
//! Each measurement is a fresh worker process (`rawload bench-worker`) in a
//! private cgroup, pinned to `--cpus` (one CPU by default: on two vCPUs a
//! ping-pong across CPUs is bimodal, about 5x apart) or, with `--unpinned`,
//! wherever the scheduler puts it. A sample that did not take the path its
//! mode stands for is refused, so that a silent fallback to TCP cannot pose
//! as a result: in the rawload mode both ends must have joined the map, in
//! the seed mode (which has no counters) the bytes must not have crossed
//! `lo`. The report gives medians, min-max and ratios to tcp; `--sweep`
//! repeats one-way bulk and ping-pong over write sizes from 1 B to 1 MiB.

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
use crate::traffic::lo_bytes;
use rawload_loader::pipeline::ObjectSource;

pub use report::{Summary, render_svg, render_table, to_json};

/// The seed-style object, embedded so that `rawload bench` needs no checkout
/// (5 KB). `make check-prebuilt` proves it is what its source builds.
static SEED_OBJECT: &[u8] = include_bytes!("../../tests/fixtures/seed_legacy.o");

/// The seed object as the loader names it in messages.
const SEED_SOURCE: ObjectSource = ObjectSource::Static {
    name: "tests/fixtures/seed_legacy.o",
    bytes: SEED_OBJECT,
};

/// What the sockets are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Transport {
    Tcp,
    Unix,
}

/// The four modes compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Tcp,
    Rawload,
    Seed,
    Unix,
}

/// The modes in the order they take turns (and the report's columns).
pub const MODES: [Mode; 4] = [Mode::Tcp, Mode::Rawload, Mode::Seed, Mode::Unix];

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Tcp => "tcp",
            Mode::Rawload => "rawload",
            Mode::Seed => "seed",
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

/// The write sizes of `--sweep`: 1 B to 1 MiB by factors of 4 (and 16 at
/// the small end, where nothing changes), enough points for a curve.
pub const SWEEP_SIZES: [usize; 10] = [
    1,
    16,
    64,
    256,
    1 << 10,
    4 << 10,
    16 << 10,
    64 << 10,
    256 << 10,
    1 << 20,
];

/// The sweep's workloads: bulk at every size, then ping-pong on one
/// connection at every size (the report reads as two blocks, by size).
pub fn sweep_workloads(sizes: &[usize]) -> Vec<Workload> {
    let bulk = sizes.iter().map(|&write| Workload::Bulk { write });
    let pp = sizes
        .iter()
        .map(|&msg| Workload::PingPong { msg, conns: 1 });
    bulk.chain(pp).collect()
}

/// `n` bytes as 1 MiB, 64 KiB or 100 B.
fn size_text(n: usize) -> String {
    match n {
        n if n >= 1 << 20 && n % (1 << 20) == 0 => format!("{} MiB", n >> 20),
        n if n >= 1 << 10 && n % (1 << 10) == 0 => format!("{} KiB", n >> 10),
        n => format!("{n} B"),
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

    /// Bytes per write (bulk) or per message (ping-pong).
    pub fn size(self) -> usize {
        match self {
            Workload::Bulk { write } => write,
            Workload::PingPong { msg, .. } => msg,
        }
    }

    pub fn conns(self) -> usize {
        match self {
            Workload::Bulk { .. } => 1,
            Workload::PingPong { conns, .. } => conns,
        }
    }
}

#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub rounds: usize,
    pub duration: Duration,
    /// CPUs the client and server are pinned to; empty: not pinned at all.
    pub cpus: Vec<usize>,
    pub workloads: Vec<Workload>,
    /// The workloads are a write-size sweep (the SVG draws curves).
    pub sweep: bool,
    /// `attach --stream-bytes` for the rawload mode (None: the default).
    pub stream_bytes: Option<u32>,
}

impl BenchOptions {
    /// The full run (about 5 minutes; 7 with `sweep`) or `quick` (under 30
    /// seconds; 40 with `sweep`). Unpinned runs take 9 rounds, not 5: where
    /// the scheduler places the two threads changes from sample to sample,
    /// and the spread is part of the result. Sweep samples are 1 s, not 2,
    /// to keep 20 workloads in minutes.
    pub fn new(quick: bool, sweep: bool, pinned: bool) -> BenchOptions {
        let ms = match (quick, sweep) {
            (true, true) => 200,
            (true, false) => 300,
            (false, true) => 1000,
            (false, false) => 2000,
        };
        BenchOptions {
            rounds: match (quick, pinned) {
                (true, _) => 2,
                (false, true) => 5,
                (false, false) => 9,
            },
            duration: Duration::from_millis(ms),
            cpus: if pinned { vec![0] } else { Vec::new() },
            workloads: if sweep {
                sweep_workloads(&SWEEP_SIZES)
            } else {
                WORKLOADS.to_vec()
            },
            sweep,
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
    /// seed mode: bytes that crossed `lo` during the sample, as a share of
    /// the payload (connection set-up and teardown included).
    pub lo_share: Option<f64>,
}

/// The worker's entry point (`rawload bench-worker`); no `cpus`: the
/// process keeps the affinity it inherited.
pub fn worker_main(
    transport: Transport,
    workload: Workload,
    duration: Duration,
    cgroup: &Path,
    cpus: &[usize],
) -> Result<Json> {
    crate::traffic::join_cgroup(cgroup)?;
    if !cpus.is_empty() {
        let mut set = nix::sched::CpuSet::new();
        for &cpu in cpus {
            set.set(cpu)
                .map_err(|e| anyhow::anyhow!("CPU {cpu}: {}", e.desc()))?;
        }
        nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set)
            .map_err(|e| anyhow::anyhow!("pinning to CPUs {cpus:?}: {}", e.desc()))?;
    }
    worker::run(transport, workload, duration)
}

fn run_worker(
    exe: &Path,
    mode: Mode,
    workload: Workload,
    opts: &BenchOptions,
    cgroup: &Path,
) -> Result<Json> {
    let transport = match mode.transport() {
        Transport::Unix => "unix",
        Transport::Tcp => "tcp",
    };
    let mut cmd = Command::new(exe);
    cmd.arg("bench-worker")
        .args(["--transport", transport])
        .args(["--workload", &workload.arg()])
        .args(["--duration-ms", &opts.duration.as_millis().to_string()])
        .arg("--cgroup")
        .arg(cgroup);
    if !opts.cpus.is_empty() {
        let cpus: Vec<String> = opts.cpus.iter().map(|c| c.to_string()).collect();
        cmd.args(["--cpus", &cpus.join(",")]);
    }
    let out = cmd.output().context("running a bench worker")?;
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

/// The counters that tell whether a worker's connections were accelerated:
/// (sockets that joined the map, bytes redirected).
fn rawload_counters(pins: &Path) -> Result<(u64, u64)> {
    let st = status::read(pins)?;
    let counter = |name| st.as_ref().and_then(|s| s.counter(name)).unwrap_or(0);
    Ok((counter("sockets_inserted"), counter("bytes_redirected")))
}

/// The private cgroups and attachments of one run. Fields drop in
/// declaration order: both attachments are detached before the cgroups
/// they are attached to are removed.
struct Rig {
    pins: PrivatePins,
    /// Held for its drop, which detaches the seed object.
    _seed_pins: PrivatePins,
    plain: PrivateCgroup,
    accel: PrivateCgroup,
    seed: PrivateCgroup,
    /// The rawload mode's stream policy, in words.
    streams: Option<String>,
}

impl Rig {
    /// Three child cgroups of the cgroup2 root (never the root itself):
    /// rawload's embedded object is attached to one, the seed object to
    /// another, through the same loader path as `rawload attach --object`.
    fn new(opts: &BenchOptions) -> Result<Rig> {
        let tag = format!("rawload-bench-{}", std::process::id());
        let plain = PrivateCgroup::create(&format!("{tag}-plain"))?;
        let accel = PrivateCgroup::create(&format!("{tag}-rawload"))?;
        let seed = PrivateCgroup::create(&format!("{tag}-seed"))?;
        let pins = PrivatePins::new(&tag);
        let seed_pins = PrivatePins::new(&format!("{tag}-seed"));
        let attached = attach_private(
            &accel,
            &pins,
            ObjectSource::Embedded { debug: false },
            opts.stream_bytes,
        )?;
        attach_private(&seed, &seed_pins, SEED_SOURCE, None)
            .context("attaching the seed-style object")?;
        Ok(Rig {
            streams: attached.streams.describe(),
            pins,
            _seed_pins: seed_pins,
            plain,
            accel,
            seed,
        })
    }

    fn cgroup(&self, mode: Mode) -> &Path {
        match mode {
            Mode::Rawload => self.accel.path(),
            Mode::Seed => self.seed.path(),
            Mode::Tcp | Mode::Unix => self.plain.path(),
        }
    }
}

/// The most bytes a connection's set-up and teardown put on `lo` (measured:
/// 656, seven segments counted once sent and once received). They take TCP
/// whatever the programs do and are not payload.
const LO_BYTES_PER_CONNECTION: u64 = 1024;

/// A rawload sample counts only if both ends of its connections joined the
/// map. What share of the bytes then took the redirect is rawload's choice
/// (a stream continues over TCP past --stream-bytes) and is returned.
fn rawload_share(
    workload: Workload,
    before: (u64, u64),
    after: (u64, u64),
    bytes: u64,
) -> Result<f64> {
    let inserted = after.0.saturating_sub(before.0);
    if inserted < 2 {
        bail!(
            "{workload}: only {inserted} of its sockets joined rawload's map; rawload is not attached to these sockets"
        );
    }
    let redirected = after.1.saturating_sub(before.1);
    Ok(redirected as f64 / bytes.max(1) as f64)
}

/// A seed sample counts only if its bytes bypassed TCP: less than 1% of the
/// payload may have crossed `lo` (besides the connections' set-up and
/// teardown). The seed object has no counters, so `lo` is the only witness;
/// the worker talks over 127.0.0.1, the only family the object redirects.
fn seed_share(workload: Workload, crossed: u64, bytes: u64) -> Result<f64> {
    let setup = LO_BYTES_PER_CONNECTION * workload.conns() as u64;
    if crossed.saturating_sub(setup) * 100 >= bytes {
        bail!(
            "seed {workload}: {crossed} bytes crossed lo for {bytes} bytes of payload (allowed: under 1%, plus {setup} for the handshakes); the seed object did not redirect these sockets"
        );
    }
    Ok(crossed as f64 / bytes.max(1) as f64)
}

/// One sample of `mode`, checked (see `rawload_share`, `seed_share`).
/// `lo` is read for every mode: it is cheap, and the seed mode needs it.
fn measure(
    rig: &Rig,
    exe: &Path,
    mode: Mode,
    workload: Workload,
    opts: &BenchOptions,
) -> Result<Sample> {
    let counters = match mode {
        Mode::Rawload => Some(rawload_counters(rig.pins.path())?),
        _ => None,
    };
    let lo_before = lo_bytes()?;
    let result = run_worker(exe, mode, workload, opts, rig.cgroup(mode))?;
    let crossed = lo_bytes()?.saturating_sub(lo_before);
    let bytes = result["bytes"].as_u64().unwrap_or(0);
    let mut sample = Sample {
        rate: result["rate"].as_f64().unwrap_or(0.0),
        p50_us: result["p50_us"].as_f64(),
        p99_us: result["p99_us"].as_f64(),
        redirected_share: None,
        lo_share: None,
    };
    if let Some(before) = counters {
        let after = rawload_counters(rig.pins.path())?;
        sample.redirected_share = Some(rawload_share(workload, before, after, bytes)?);
    }
    if mode == Mode::Seed {
        sample.lo_share = Some(seed_share(workload, crossed, bytes)?);
    }
    Ok(sample)
}

/// Runs the benchmark; progress lines go to `progress`.
pub fn run(opts: &BenchOptions, progress: &mut dyn Write) -> Result<Summary> {
    rawload_loader::privileges::require("bench")?;
    let exe = std::env::current_exe().context("finding the rawload binary")?;
    let rig = Rig::new(opts)?;
    writeln!(
        progress,
        "bench: {} rounds x {} workloads x {} modes, {:.1} s each, {}",
        opts.rounds,
        opts.workloads.len(),
        MODES.len(),
        opts.duration.as_secs_f64(),
        report::placement(&opts.cpus)
    )?;
    let mut summary = Summary::new(opts, rig.streams.clone());
    for round in 1..=opts.rounds {
        for &workload in &opts.workloads {
            for mode in MODES {
                let sample = measure(&rig, &exe, mode, workload, opts)?;
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
