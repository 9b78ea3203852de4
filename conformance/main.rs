//! `rawload-conformance`: the socket-API conformance test of rawload.
//!
//! Each case (see `cases/`) is one behaviour of the socket API that an
//! application may rely on. It runs twice on the running kernel, in the
//! same process layout: over plain TCP in a private cgroup with nothing
//! attached, and in a private cgroup that `rawload attach` is pointed at.
//! The two sets of observations are compared and each case gets one
//! verdict: `same` (and redirected), `off` (equal because rawload left the
//! connection on TCP), `differs: <what>`, `unsupported` (the kernel cannot
//! do it even over TCP), or `error` (the plain-TCP run failed). rawload is
//! a black box: only its command line and `status --json` counters are
//! used, so the loader and its eBPF programs can change underneath.
//!
//! Why a separate binary: the shipped `rawload` must stay under its 2 MiB
//! budget with its five dependencies, and nobody running rawload in
//! production needs a test harness in it. This is a second `[[bin]]` of
//! the same package (it reuses the library: the traffic keystream and
//! digest, `scratch::PrivateCgroup`, the JSON code, the socket wrappers in
//! `sys`) that `make` does not build (`cargo build --bin rawload`); `make
//! conformance` builds it static with the rawload target's flags, and
//! `make test` and `make kernel-matrix` run it. No `unsafe` here: raw
//! syscalls live in `loader/src/sys/`.
#![forbid(unsafe_code)]

mod cases;
mod env;
mod net;
mod obs;
mod run;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use rawload::json::{Json, obj};

use cases::{CASES, Case, Mode};
use env::Env;
use obs::Verdict;
use run::{Report, Settings};

#[derive(Parser, Debug)]
#[command(
    name = "rawload-conformance",
    about = "Runs socket-API behaviours over plain TCP and under rawload and compares them",
    after_help = "Output: one line per case, CONFORMANCE <case> <verdict> tcp=<result> \
                  rawload=<result> path=<redirected|tcp|mixed|unknown>. Exit 0 when it ran \
                  (differences are data), 2 when it could not run or a plain-TCP run failed."
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Sub>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Args, Debug)]
struct RunArgs {
    /// The rawload binary under test [default: `rawload` next to this
    /// binary, else on PATH]
    #[arg(long, value_name = "PATH")]
    rawload: Option<PathBuf>,
    /// Bytes a writer may push into a peer that does not read before the
    /// missing EAGAIN counts as a difference
    #[arg(long, value_name = "BYTES", default_value = "8M", value_parser = rawload::cli::parse_size)]
    bound: u64,
    /// Pass `--stream-bytes SIZE` to `rawload attach` (default: no policy
    /// flags, because rawload's default behaviour is what is tested)
    #[arg(long, value_name = "SIZE")]
    stream_bytes: Option<String>,
    /// Multiply every bounded wait (10 for qemu TCG guests)
    #[arg(long, value_name = "N", default_value_t = 1.0)]
    time_scale: f64,
    /// Run only this case (repeatable; see --list)
    #[arg(long = "case", value_name = "NAME")]
    cases: Vec<String>,
    /// Print the report as JSON on stdout (the lines go to stderr)
    #[arg(long)]
    json: bool,
    /// List the cases and their rules, then exit
    #[arg(long)]
    list: bool,
}

#[derive(Subcommand, Debug)]
enum Sub {
    /// Run one case in this process (internal: the orchestrator's child)
    #[command(hide = true)]
    Case {
        name: String,
        #[arg(long)]
        mode: String,
        #[arg(long)]
        cgroup: PathBuf,
        #[arg(long)]
        time_scale: f64,
        #[arg(long)]
        bound: u64,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Sub::Case {
        name,
        mode,
        cgroup,
        time_scale,
        bound,
    }) = cli.command
    {
        let Some(mode) = Mode::parse(&mode) else {
            eprintln!("rawload-conformance: unknown mode {mode}");
            return ExitCode::from(2);
        };
        let s = Settings {
            scale: time_scale,
            bound,
        };
        return run::case_main(&name, &cgroup, mode, s);
    }
    match orchestrate(&cli.run) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("rawload-conformance: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn list() {
    for c in CASES {
        stdout(&format!(
            "{}\n    does: {}\n    same when: {}\n",
            c.name, c.does, c.same_when
        ));
    }
}

/// `--rawload`, else `rawload` next to this binary, else on PATH.
fn rawload_binary(arg: &Option<PathBuf>) -> Result<PathBuf> {
    if let Some(p) = arg {
        return Ok(p.clone());
    }
    let exe = std::env::current_exe()?;
    let beside = exe.with_file_name("rawload");
    if beside.is_file() {
        return Ok(beside);
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("rawload"))
        .find(|p| p.is_file())
        .context("no rawload binary: pass --rawload PATH")
}

fn selected(names: &[String]) -> Result<Vec<&'static Case>> {
    if names.is_empty() {
        return Ok(CASES.iter().collect());
    }
    names
        .iter()
        .map(|n| cases::find(n).with_context(|| format!("no case {n} (see --list)")))
        .collect()
}

/// Runs the selected cases and prints the report; the exit code.
fn orchestrate(a: &RunArgs) -> Result<ExitCode> {
    if a.list {
        list();
        return Ok(ExitCode::SUCCESS);
    }
    if !nix::unistd::geteuid().is_root() {
        bail!("needs root: it attaches rawload to a private cgroup");
    }
    if !a.time_scale.is_finite() || a.time_scale <= 0.0 {
        bail!("--time-scale must be positive");
    }
    let cases = selected(&a.cases)?;
    let bin = rawload_binary(&a.rawload)?;
    env::catch_signals()?;
    let ktls_note = cases
        .iter()
        .any(|c| c.name == "ktls")
        .then(env::ensure_tls_module)
        .flatten();
    if let Some(note) = &ktls_note {
        eprintln!("rawload-conformance: NOTE: kTLS cannot be tested on this kernel: {note}");
    }
    let extra: Vec<String> = a
        .stream_bytes
        .iter()
        .flat_map(|s| ["--stream-bytes".to_string(), s.clone()])
        .collect();
    let env = Env::new(&bin, &extra)?;
    // The stream policy changes what backpressure looks like (status says
    // whether it is on; `null` if this rawload does not say).
    let stream_bytes = env.attachment.status()?["stream_bytes"].clone();
    let s = Settings {
        scale: a.time_scale,
        bound: a.bound,
    };
    let mut reports = Vec::new();
    for case in cases {
        if env::stop_requested() {
            bail!("interrupted");
        }
        let r = run::run_case(&env, case, s)?;
        emit(a.json, &r.line());
        reports.push(r);
    }
    let summary = format!("{} rawload_stream_bytes={stream_bytes}", summary(&reports));
    emit(a.json, &summary);
    if a.json {
        let doc = report_json(a, &bin, &env, &reports, ktls_note, stream_bytes);
        stdout(&doc.pretty());
    }
    let failed = reports.iter().any(|r| r.verdict == Verdict::Error);
    Ok(if failed {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}

/// A result line: stdout, or stderr when stdout carries the JSON.
fn emit(json: bool, line: &str) {
    match json {
        true => eprintln!("{line}"),
        false => stdout(line),
    }
}

/// One line (or block) to stdout, flushed; a closed pipe (`| head`) is not
/// worth a panic.
fn stdout(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{text}").and_then(|_| out.flush());
}

fn summary(reports: &[Report]) -> String {
    let count = |w: &str| reports.iter().filter(|r| r.verdict.word() == w).count();
    format!(
        "CONFORMANCE-SUMMARY kernel={} cases={} same={} off={} differs={} unsupported={} error={}",
        kernel(),
        reports.len(),
        count("same"),
        count("off"),
        count("differs"),
        count("unsupported"),
        count("error")
    )
}

fn kernel() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "?".into())
}

fn report_json(
    a: &RunArgs,
    bin: &std::path::Path,
    env: &Env,
    reports: &[Report],
    ktls_note: Option<String>,
    stream_bytes: Json,
) -> Json {
    obj([
        ("kernel", kernel().into()),
        ("rawload", bin.display().to_string().into()),
        ("attach_args", env.attachment.args.clone().into()),
        ("attach_said", env.attachment.said.clone().into()),
        ("stream_bytes", stream_bytes),
        ("bound", a.bound.into()),
        ("time_scale", a.time_scale.into()),
        ("ktls_note", ktls_note.into()),
        (
            "cases",
            Json::Arr(reports.iter().map(Report::to_json).collect()),
        ),
    ])
}
