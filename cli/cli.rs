//! The command line: parse arguments, call the library, print results.
//!
//! Errors end here: one line on stderr (`rawload: error: ...`), plus the
//! verifier log when the kernel gave one, and a non-zero exit code. (An undo
//! that itself fails while a failed attach unwinds is printed where it
//! happens, as `rawload: while undoing a failed attach: ...`, before it.)

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};

use crate::bench::{self, BenchOptions, Transport, Workload};
use crate::doctor;
use crate::explain;
use crate::json::Json;
use crate::selftest;
use crate::status;
use crate::trace;
use crate::traffic::{self, Pattern, PeerConfig, Reader, RecvMode, SendMode};
use rawload_loader::attach;
use rawload_loader::hostnet::{self, Cidr, Synced};
use rawload_loader::narrate::counted;
use rawload_loader::pin::DEFAULT_PIN_DIR;
use rawload_loader::pipeline::{
    self, AttachOptions, AttachOutcome, Attached, CrossNetns, DetachOutcome, NetnsKeys,
    ObjectSource,
};
use rawload_loader::policy::PortSet;
use rawload_loader::probe::Memlock;
use rawload_loader::programs::VerifierError;

#[derive(Parser)]
#[command(
    name = "rawload",
    version,
    about = "Redirect same-host TCP through sockmap: a pure-Rust eBPF loader, by hand and in plain sight",
    after_help = "Typical use: sudo rawload attach; sudo rawload status; sudo rawload detach"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Load the programs, attach them and pin them (idempotent)
    Attach(AttachArgs),
    /// Detach and unpin exactly what `attach` added
    Detach(DetachArgs),
    /// Scan the host's network namespaces again and update which addresses
    /// pair across them (what `attach --hold` does every few seconds)
    Refresh(RefreshArgs),
    /// Show what is attached: programs, maps, sockets, counters (exit 0 when
    /// fully attached, 3 when not, so it can serve as a health check)
    Status(StatusArgs),
    /// Stream the trace lines of `attach --debug` objects, host-wide (until Ctrl-C)
    Trace(TraceArgs),
    /// What the loader sees in an object and would do with it (no root needed)
    Explain(ExplainArgs),
    /// Which kernel features are present, and what to fix (exit 1 if unusable)
    Doctor,
    /// Prove in a private cgroup that bytes are redirected and intact, then detach
    Selftest(SelftestArgs),
    /// Measure the gain on this host: loopback TCP vs rawload vs a seed-style
    /// program vs AF_UNIX
    Bench(BenchArgs),
    /// One bench measurement in a worker process (used by `bench`)
    #[command(hide = true)]
    BenchWorker(BenchWorkerArgs),
    /// Verified TCP traffic between two processes (tests, the kernel matrix,
    /// the README's tour)
    #[command(subcommand)]
    Peer(PeerCommand),
}

#[derive(Args)]
struct PinDirArg {
    /// Directory on bpffs holding rawload's pins
    #[arg(long, value_name = "DIR", default_value = DEFAULT_PIN_DIR)]
    pin_dir: PathBuf,
}

#[derive(Args)]
struct AttachArgs {
    /// cgroup v2 directory whose processes get accelerated [default: the cgroup2 root]
    #[arg(long, value_name = "PATH")]
    cgroup: Option<PathBuf>,
    #[command(flatten)]
    pin: PinDirArg,
    /// eBPF object to load instead of the embedded one; repeat it for a
    /// program set split over several objects (the seeds' bpf_sockops.o and
    /// bpf_redir.o): maps of one name in several objects become one map
    #[arg(long, value_name = "FILE", conflicts_with = "debug")]
    object: Vec<PathBuf>,
    /// Only accelerate connections with one of these ports, e.g. 6379,8000-8080
    #[arg(long, value_name = "LIST")]
    ports: Option<PortSet>,
    /// Never accelerate connections with one of these ports (services that
    /// read with splice(2), or whose readers may stall: see docs/KERNEL-ISSUES.md)
    #[arg(long, value_name = "LIST")]
    exclude_ports: Option<PortSet>,
    /// Capacity of the socket map (connections beyond it stay on TCP)
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(2..=16_777_216))]
    max_sockets: Option<u32>,
    #[command(flatten)]
    stream: StreamBytesArg,
    /// Load the debug object, which prints trace lines (see `rawload trace`)
    #[arg(long)]
    debug: bool,
    /// Kernels before 5.15 cannot key sockets by network namespace: attach
    /// anyway, because every process in the cgroup shares one namespace
    #[arg(long)]
    single_netns: bool,
    /// Never pair sockets of different network namespaces (containers on
    /// one bridge, a container and the host)
    #[arg(long)]
    no_cross_netns: bool,
    #[command(flatten)]
    connected: ConnectedArg,
    /// Stay in the foreground after attaching, keeping the namespaces'
    /// addresses current; detach on SIGTERM, SIGINT or SIGHUP (for
    /// containers and systemd Type=simple)
    #[arg(long)]
    hold: bool,
    /// Narrate each step: every bpf() command, its fields and the answer
    #[arg(long)]
    explain: bool,
}

#[derive(Args)]
struct ConnectedArg {
    /// Routed pod networks without a bridge (Calico and the like): veths
    /// from the host into this range connect their namespaces, e.g.
    /// 10.244.0.0/16 (repeatable)
    #[arg(long, value_name = "CIDR")]
    connected: Vec<Cidr>,
}

#[derive(Args)]
struct RefreshArgs {
    #[command(flatten)]
    pin: PinDirArg,
    #[command(flatten)]
    connected: ConnectedArg,
}

#[derive(Args)]
struct StreamBytesArg {
    /// Backpressure: the most bytes a connection redirects that its peer has
    /// not read; then it continues over TCP, whose flow control blocks the
    /// writer (0: no bound) [default: 1M]
    #[arg(long, value_name = "SIZE", value_parser = parse_stream_bytes)]
    stream_bytes: Option<u32>,
}

fn parse_stream_bytes(s: &str) -> Result<u32, String> {
    let n = parse_size(s)?;
    u32::try_from(n)
        .ok()
        .filter(|&n| n <= pipeline::MAX_STREAM_BYTES)
        .ok_or_else(|| format!("'{s}' is more than 1G"))
}

#[derive(Args)]
struct DetachArgs {
    /// Only detach if the attachment is on this cgroup [default: the recorded one]
    #[arg(long, value_name = "PATH")]
    cgroup: Option<PathBuf>,
    #[command(flatten)]
    pin: PinDirArg,
}

#[derive(Args)]
struct StatusArgs {
    #[command(flatten)]
    pin: PinDirArg,
    /// Machine-readable output
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct TraceArgs {
    /// Stop after this many lines
    #[arg(long, value_name = "N")]
    lines: Option<u64>,
    /// Stop after this many seconds
    #[arg(long, value_name = "SECS")]
    timeout: Option<u64>,
}

#[derive(Args)]
struct ExplainArgs {
    /// eBPF objects to explain, one or several loaded as one set
    /// [default: the embedded one]
    objects: Vec<PathBuf>,
    /// Explain the embedded debug object instead
    #[arg(long, conflicts_with = "objects")]
    debug: bool,
}

#[derive(Args)]
struct SelftestArgs {
    /// Payload per transfer and direction (suffixes K, M, G)
    #[arg(long, default_value = "16M", value_parser = parse_size)]
    bytes: u64,
    /// eBPF object to test instead of the embedded one
    #[arg(long, value_name = "FILE")]
    object: Option<PathBuf>,
}

#[derive(Args)]
struct BenchArgs {
    /// A short run: 2 rounds of 0.3 s (0.2 s with --sweep), under a minute
    #[arg(long)]
    quick: bool,
    /// One-way bulk and ping-pong (1 connection) at each write size from 1 B
    /// to 1 MiB (1, 16, 64, 256 B, 1, 4, 16, 64, 256 KiB, 1 MiB) instead of
    /// the 7 default workloads
    #[arg(long, conflicts_with = "workloads")]
    sweep: bool,
    /// With --sweep: only these sizes, e.g. 1,64K,1M
    #[arg(long, value_delimiter = ',', value_parser = parse_write_size, requires = "sweep")]
    sizes: Vec<usize>,
    /// Rounds per mode [default: 5, 9 with --unpinned, 2 with --quick]
    #[arg(long)]
    rounds: Option<usize>,
    /// Seconds per measurement [default: 2, 1 with --sweep; 0.3, 0.2 with --quick]
    #[arg(long)]
    seconds: Option<f64>,
    /// CPUs for client and server, e.g. 0 (default: both on CPU 0) or 0,1
    #[arg(long, value_delimiter = ',', default_value = "0")]
    cpus: Vec<usize>,
    /// No CPU affinity at all: the scheduler places client and server, as it
    /// does for applications; 9 rounds, and the tables show the spread
    #[arg(long, conflicts_with = "cpus")]
    unpinned: bool,
    /// Only these workloads, e.g. bulk:1024,pingpong:64:1
    #[arg(long, value_delimiter = ',')]
    workloads: Vec<Workload>,
    /// Also write every sample as JSON
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Also draw the ratios as an SVG chart (curves over write size with --sweep)
    #[arg(long, value_name = "FILE")]
    svg: Option<PathBuf>,
    #[command(flatten)]
    stream: StreamBytesArg,
}

/// A sweep size: 1 byte to 64 MiB (a worker holds one write in memory).
fn parse_write_size(s: &str) -> Result<usize, String> {
    match parse_size(s)? {
        n @ 1..=0x400_0000 => Ok(n as usize),
        _ => Err(format!("'{s}' is not a write size from 1 to 64M")),
    }
}

#[derive(Args)]
struct BenchWorkerArgs {
    #[arg(long, value_enum)]
    transport: Transport,
    #[arg(long)]
    workload: Workload,
    #[arg(long)]
    duration_ms: u64,
    #[arg(long)]
    cgroup: PathBuf,
    /// None: the worker keeps the affinity it inherited (`bench --unpinned`)
    #[arg(long, value_delimiter = ',')]
    cpus: Vec<usize>,
}

#[derive(Subcommand)]
enum PeerCommand {
    /// Accept connections and exchange verified data on each
    Serve {
        #[arg(long)]
        listen: SocketAddr,
        #[command(flatten)]
        common: PeerArgs,
    },
    /// Open connections and exchange verified data on each
    Connect {
        #[arg(long)]
        to: SocketAddr,
        #[command(flatten)]
        common: PeerArgs,
    },
}

#[derive(Args)]
struct PeerArgs {
    /// Payload per connection and direction (suffixes K, M, G)
    #[arg(long, default_value = "1M", value_parser = parse_size)]
    bytes: u64,
    /// Bytes per write(): SIZE, or MIN-MAX for a seeded random size per write
    #[arg(long, default_value = "64K", value_parser = parse_size_range)]
    write_size: (u64, u64),
    /// Connections in total
    #[arg(long, default_value_t = 1)]
    conns: usize,
    /// Client connections open at once [default: all]
    #[arg(long)]
    parallel: Option<usize>,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Longest a single read/write/accept may wait, in seconds
    #[arg(long, default_value_t = 60)]
    timeout: u64,
    /// Join this cgroup before opening sockets
    #[arg(long)]
    cgroup: Option<PathBuf>,
    /// Enter this network namespace first: a name under /run/netns, or a path
    #[arg(long)]
    netns: Option<String>,
    #[arg(long, value_enum, default_value_t = Reader::Blocking)]
    reader: Reader,
    /// Check FIONREAD before every read
    #[arg(long)]
    fionread: bool,
    #[arg(long, value_enum, default_value_t = SendMode::Write)]
    send_mode: SendMode,
    #[arg(long, value_enum, default_value_t = RecvMode::Read)]
    recv_mode: RecvMode,
    #[arg(long, value_enum, default_value_t = Pattern::Duplex)]
    pattern: Pattern,
    /// Stop reading once after this many bytes (with --pause-ms)
    #[arg(long, value_parser = parse_size, requires = "pause_ms")]
    pause_after: Option<u64>,
    #[arg(long, requires = "pause_after")]
    pause_ms: Option<u64>,
    /// Stop reading for good after this many bytes and close
    #[arg(long, value_parser = parse_size)]
    quit_after: Option<u64>,
    /// Close with RST instead of FIN
    #[arg(long)]
    rst: bool,
    /// Local address of client connections (fixes the source port)
    #[arg(long)]
    bind: Option<SocketAddr>,
    /// With --pattern turns: the client first uploads this much in one go
    #[arg(long, default_value = "0", value_parser = parse_size)]
    lead: u64,
    /// Set SO_RCVBUF on each connection
    #[arg(long, value_parser = parse_size)]
    rcvbuf: Option<u64>,
    /// Set SO_SNDBUF on each connection
    #[arg(long, value_parser = parse_size)]
    sndbuf: Option<u64>,
}

impl PeerArgs {
    fn config(&self) -> PeerConfig {
        let conns = self.conns.max(1);
        PeerConfig {
            bytes: self.bytes,
            write_min: self.write_size.0.clamp(1, 64 << 20) as usize,
            write_max: self.write_size.1.clamp(1, 64 << 20) as usize,
            conns,
            parallel: self.parallel.unwrap_or(conns),
            seed: self.seed,
            timeout: Duration::from_secs(self.timeout.max(1)),
            cgroup: self.cgroup.clone(),
            netns: self.netns.as_ref().map(|n| match n.contains('/') {
                true => PathBuf::from(n),
                false => PathBuf::from("/run/netns").join(n),
            }),
            reader: self.reader,
            fionread: self.fionread,
            send_mode: self.send_mode,
            recv_mode: self.recv_mode,
            pattern: self.pattern,
            pause: self
                .pause_after
                .zip(self.pause_ms.map(Duration::from_millis)),
            quit_after: self.quit_after,
            rst: self.rst,
            bind: self.bind,
            lead: self.lead,
            rcvbuf: self.rcvbuf.map(|n| n as usize),
            sndbuf: self.sndbuf.map(|n| n as usize),
        }
    }
}

/// "64K" or "1-1M": a size or an inclusive range of sizes.
pub fn parse_size_range(s: &str) -> Result<(u64, u64), String> {
    match s.split_once('-') {
        Some((a, b)) => {
            let (lo, hi) = (parse_size(a)?, parse_size(b)?);
            if lo == 0 || lo > hi {
                return Err(format!("'{s}' is not a range MIN-MAX with 0 < MIN <= MAX"));
            }
            Ok((lo, hi))
        }
        None => parse_size(s).map(|n| (n, n)),
    }
}

/// "64K", "1M", "2G", "1000": binary multiples.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (digits, shift) = match s.trim_end_matches(['B', 'b', 'i']).char_indices().last() {
        Some((i, 'K' | 'k')) => (&s[..i], 10),
        Some((i, 'M' | 'm')) => (&s[..i], 20),
        Some((i, 'G' | 'g')) => (&s[..i], 30),
        _ => (s, 0),
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(1 << shift))
        .ok_or_else(|| format!("'{s}' is not a size (like 4096, 64K, 1M, 2G)"))
}

/// Prints to stdout; a closed pipe (`rawload status | head`) ends quietly.
fn out(text: &str) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|_| stdout.flush())
    {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        r => r.context("writing to stdout"),
    }
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("rawload: error: {e:#}");
            if let Some(v) = e.chain().find_map(|c| c.downcast_ref::<VerifierError>()) {
                if !v.log.is_empty() {
                    eprintln!("verifier log for '{}':", v.program);
                    for line in v.log.lines() {
                        eprintln!("  {line}");
                    }
                }
            }
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> Result<ExitCode> {
    match command {
        Command::Attach(a) => attach_cmd(a),
        Command::Detach(d) => detach_cmd(d),
        Command::Refresh(r) => {
            let synced = hostnet::refresh(&r.pin.pin_dir, &r.connected.connected)?;
            out(&synced_text("rawload: ", &synced))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Status(s) => status_cmd(s),
        Command::Trace(t) => {
            let mut stdout = std::io::stdout();
            trace::stream(&mut stdout, t.lines, t.timeout.map(Duration::from_secs))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Explain(a) => {
            let sources = object_sources(a.objects, a.debug);
            out(&explain::explain(&sources)?)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Doctor => {
            let checks = doctor::checks();
            out(&doctor::render(&checks))?;
            Ok(if doctor::usable(&checks) {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Selftest(a) => {
            let object = a
                .object
                .map_or(ObjectSource::Embedded { debug: false }, ObjectSource::File);
            let passed = selftest::run(&object, a.bytes, &mut std::io::stdout())?;
            Ok(if passed {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Bench(a) => bench_cmd(a),
        Command::BenchWorker(w) => {
            let report = bench::worker_main(
                w.transport,
                w.workload,
                Duration::from_millis(w.duration_ms),
                &w.cgroup,
                &w.cpus,
            )?;
            out(&format!("{report}\n"))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Peer(p) => peer_cmd(p),
    }
}

fn bench_cmd(a: BenchArgs) -> Result<ExitCode> {
    let mut opts = BenchOptions::new(a.quick, a.sweep, !a.unpinned);
    if let Some(r) = a.rounds {
        opts.rounds = r.max(1);
    }
    if let Some(s) = a.seconds {
        opts.duration = Duration::from_secs_f64(s.clamp(0.05, 60.0));
    }
    if !a.unpinned {
        opts.cpus = a.cpus;
    }
    if !a.workloads.is_empty() {
        opts.workloads = a.workloads;
    }
    if !a.sizes.is_empty() {
        opts.workloads = bench::sweep_workloads(&a.sizes);
    }
    opts.stream_bytes = a.stream.stream_bytes;
    let summary = bench::run(&opts, &mut std::io::stderr())?;
    out(&bench::render_table(&summary))?;
    if let Some(path) = a.json {
        std::fs::write(&path, format!("{}\n", bench::to_json(&summary).pretty()))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = a.svg {
        std::fs::write(&path, bench::render_svg(&summary))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(ExitCode::SUCCESS)
}

fn attach_cmd(a: AttachArgs) -> Result<ExitCode> {
    if a.explain {
        rawload_loader::narrate::enable();
    }
    let cgroup = match a.cgroup {
        Some(c) => c,
        None => attach::default_cgroup()?,
    };
    let opts = AttachOptions {
        cgroup,
        pin_dir: a.pin.pin_dir,
        objects: object_sources(a.object, a.debug),
        ports: a.ports,
        exclude_ports: a.exclude_ports,
        max_sockets: a.max_sockets,
        single_netns: a.single_netns,
        stream_bytes: a.stream.stream_bytes,
        cross_netns: !a.no_cross_netns,
        connected: a.connected.connected.clone(),
    };
    if a.hold {
        // From before the attach: a SIGTERM while it runs stays pending
        // until the wait below takes it and detaches.
        rawload_loader::privileges::block_stop_signals()?;
    }
    match pipeline::attach(&opts)? {
        AttachOutcome::AlreadyAttached { cgroup } => out(&format!(
            "rawload is already attached to {} (pins in {}); nothing to do\n",
            cgroup.display(),
            opts.pin_dir.display()
        ))?,
        AttachOutcome::Attached(at) => out(&attached_text(&at, &opts))?,
    }
    if a.hold {
        let signal = hold(&opts)?;
        out(&format!("rawload: {signal}: detaching\n"))?;
        pipeline::detach(&opts.pin_dir, Some(&opts.cgroup))?;
        out("rawload: detached\n")?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `attach --hold`: waits for a stop signal, keeping `rawload_owners`
/// current where namespaces pair.
fn hold(opts: &AttachOptions) -> Result<nix::sys::signal::Signal> {
    if !opts.cross_netns || hostnet::owners_map(&opts.pin_dir)?.is_none() {
        return rawload_loader::privileges::wait_for_stop_signal();
    }
    let mut last = None;
    hostnet::hold(&opts.pin_dir, &opts.connected, |synced| match synced {
        Ok(s) if s.added + s.removed > 0 || last.as_ref() != Some(&s.owners) => {
            let _ = out(&synced_text("rawload: ", &s));
            last = Some(s.owners);
        }
        Ok(_) => {}
        Err(e) => eprintln!("rawload: scanning the network namespaces: {e:#}"),
    })
}

/// The addresses that pair across namespaces, after a scan: a heading
/// line starting with `head`, then one line per address.
fn synced_text(head: &str, s: &Synced) -> String {
    let mut text = format!(
        "{head}{} addresses pair across namespaces (+{} -{})\n",
        s.owners.owned.len(),
        s.added,
        s.removed
    );
    let indent = " ".repeat(head.len() + 2);
    for o in &s.owners.owned {
        text.push_str(&format!("{indent}{:<26} {}\n", o.ip.to_string(), o.holder));
    }
    for (ip, n) in &s.owners.shared {
        text.push_str(&format!(
            "{indent}{:<26} not paired: held by {n} namespaces, whose connections stay apart\n",
            ip.to_string()
        ));
    }
    if s.dropped > 0 {
        text.push_str(&format!(
            "{indent}{} more did not fit rawload_owners: their connections keep TCP\n",
            s.dropped
        ));
    }
    text
}

/// The objects given (`--object`, repeatable), or the embedded one.
fn object_sources(files: Vec<PathBuf>, debug: bool) -> Vec<ObjectSource> {
    if files.is_empty() {
        return vec![ObjectSource::Embedded { debug }];
    }
    files.into_iter().map(ObjectSource::File).collect()
}

/// What `attach` says when it attached: where, what, and each decision it
/// took from probing the kernel.
fn attached_text(at: &Attached, opts: &AttachOptions) -> String {
    let mut text = String::new();
    if at.recovered {
        text.push_str("rawload: cleaned up the pins of an interrupted earlier attach\n");
    }
    text.push_str(&format!(
        "rawload: attached to cgroup {} (pins in {})\n  programs {}; {}; {} treated as local\n",
        at.cgroup.display(),
        at.pin_dir.display(),
        at.programs.join(", "),
        counted(at.maps, "map", "maps"),
        counted(at.host_addresses, "host address", "host addresses"),
    ));
    text.push_str(match at.netns_keys {
        NetnsKeys::Yes => "  socket keys include the network namespace\n",
        NetnsKeys::NoKernelSupport => {
            "  socket keys cannot include the network namespace on this kernel (< 5.15): --single-netns\n"
        }
        NetnsKeys::NotInObject => "  note: these programs' socket keys do not include the network namespace\n",
    });
    match (at.cross_netns, &at.owners) {
        (CrossNetns::On, Some(s)) => text.push_str(&synced_text("  ", s)),
        (CrossNetns::Off, _) => text.push_str("  sockets of different namespaces never pair (--no-cross-netns)\n"),
        (CrossNetns::NoNetnsKeys, _) => text.push_str("  sockets of different namespaces never pair: without netns cookies (< 5.15) no socket's namespace is known\n"),
        _ => {}
    }
    let memlock = match at.memlock {
        Memlock::Refused(e) => Some(format!(
            "note: could not raise RLIMIT_MEMLOCK ({}); harmless on Linux 5.11+",
            e.desc()
        )),
        Memlock::Raised => None,
    };
    let lines = [
        at.streams.describe(),
        at.reads.describe(),
        at.fionread.describe().map(str::to_string),
        memlock,
        opts.ports.as_ref().map(|p| format!("only ports {p}")),
        opts.exclude_ports
            .as_ref()
            .map(|p| format!("never ports {p}")),
    ];
    for line in lines.into_iter().flatten() {
        text.push_str(&format!("  {line}\n"));
    }
    text
}

fn detach_cmd(d: DetachArgs) -> Result<ExitCode> {
    match pipeline::detach(&d.pin.pin_dir, d.cgroup.as_deref())? {
        DetachOutcome::NotAttached => out(&format!(
            "rawload is not attached (no pins in {}); nothing to do\n",
            d.pin.pin_dir.display()
        ))?,
        DetachOutcome::Detached(r) => {
            let mut text = format!(
                "rawload: detached (pins in {} removed)\n",
                d.pin.pin_dir.display()
            );
            if let Some(cg) = &r.cgroup {
                let what = match (r.sock_ops, r.cgroup_gone) {
                    (true, _) => "sock_ops detached from",
                    (false, true) => "the cgroup is gone, and its attachment with it:",
                    (false, false) => "sock_ops was not attached to",
                };
                text.push_str(&format!("  {what} {}\n", cg.display()));
            }
            if !r.socket_map_programs.is_empty() {
                text.push_str(&format!(
                    "  {} detached from the socket map; open connections finish on it, new ones use TCP\n",
                    r.socket_map_programs.join(" and ")
                ));
            }
            if !r.foreign_entries.is_empty() {
                text.push_str(&format!(
                    "  left in place (not created by rawload): {}\n",
                    r.foreign_entries.join(", ")
                ));
            }
            out(&text)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `rawload status` exit code when rawload is not (fully) attached; 3 is what
/// LSB init scripts and `systemctl status` use for "not running".
const NOT_ATTACHED: u8 = 3;

fn status_cmd(s: StatusArgs) -> Result<ExitCode> {
    let st = status::read(&s.pin.pin_dir)?;
    let code = match &st {
        Some(st) if st.attached() => ExitCode::SUCCESS,
        _ => ExitCode::from(NOT_ATTACHED),
    };
    let others = match &st {
        Some(_) => Vec::new(),
        None => status::other_rawload_programs(&[])?,
    };
    if s.json {
        let json = status::to_json(st.as_ref(), &s.pin.pin_dir, &others);
        out(&format!("{}\n", json.pretty()))?;
        return Ok(code);
    }
    match st {
        Some(st) => out(&status::render(&st))?,
        None => {
            let mut text = format!(
                "rawload is not attached (no pins in {})\n",
                s.pin.pin_dir.display()
            );
            if !others.is_empty() {
                text.push_str(&format!("{}\n", status::others_note(&others)));
            }
            out(&text)?;
        }
    }
    Ok(code)
}

fn peer_cmd(p: PeerCommand) -> Result<ExitCode> {
    let report: Json = match p {
        PeerCommand::Serve { listen, common } => {
            traffic::serve(listen, &common.config(), |addr| {
                // The caller waits for this line before connecting.
                let _ = out(&format!("listening {addr}\n"));
            })?
        }
        PeerCommand::Connect { to, common } => traffic::connect(to, &common.config())?,
    };
    out(&format!("{report}\n"))?;
    let clean = report.get("bad_bytes").and_then(Json::as_u64) == Some(0)
        && report
            .get("errors")
            .and_then(Json::as_array)
            .is_some_and(<[Json]>::is_empty);
    if !clean {
        bail!("traffic check failed: {report}");
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64K"), Ok(65536));
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_size("2G"), Ok(2 << 30));
        assert!(parse_size("x").is_err() && parse_size("").is_err());
        assert_eq!(parse_size_range("1-1M"), Ok((1, 1 << 20)));
        assert_eq!(parse_size_range("4K"), Ok((4096, 4096)));
        assert!(parse_size_range("2-1").is_err() && parse_size_range("0-5").is_err());
        assert_eq!(parse_stream_bytes("1M"), Ok(1 << 20));
        assert_eq!(parse_stream_bytes("0"), Ok(0));
        assert!(parse_stream_bytes("2G").is_err());
    }
}
