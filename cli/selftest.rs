//! `rawload selftest`: prove on this host, in a private cgroup, that the
//! bytes are redirected and arrive intact, and that detach restores TCP.
//!
//! It touches nothing but what it creates: a child cgroup of its own and a
//! pin directory of its own, both removed at the end (also on failure). Only
//! its own two peer processes join that cgroup. Its traffic uses the
//! loopback of the network namespace it runs in (whose counters are its
//! evidence): run it under `nsenter --net=...` to keep it off the host's.
//! The kernel matrix boots old kernels and runs exactly this.

use std::fmt::Write as _;
use std::io::Write;
use std::net::TcpListener;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::scratch::{PrivateCgroup, PrivatePins, attach_private};
use crate::status;
use crate::traffic::{self, Transfer};
use rawload_loader::contract::global;
use rawload_loader::pipeline::{
    self, DEFAULT_STREAM_BYTES, DetachOutcome, NetnsKeys, ObjectSource,
};

/// The test cases: (label, listen address, client host).
const CASES: [(&str, &str, &str); 3] = [
    ("IPv4 127.0.0.1", "127.0.0.1:0", "127.0.0.1"),
    ("IPv6 ::1", "[::1]:0", "::1"),
    ("dual-stack [::] <- 127.0.0.1", "[::]:0", "127.0.0.1"),
];

fn ipv6_available() -> bool {
    TcpListener::bind((std::net::Ipv6Addr::LOCALHOST, 0)).is_ok()
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

/// Runs the selftest, printing one line per check to `out`. Returns whether
/// every check passed.
pub fn run(object: &ObjectSource, bytes: u64, out: &mut dyn Write) -> Result<bool> {
    rawload_loader::privileges::require("selftest")?;
    let exe = std::env::current_exe().context("finding the rawload binary")?;
    let unique = format!("rawload-selftest-{}", std::process::id());
    let cgroup = PrivateCgroup::create(&unique)?;
    let pins = PrivatePins::new(&unique);
    let mut report = Report { out, failures: 0 };

    // The bypass checks move whole streams; the bound gets its own check.
    let at = attach_private(&cgroup, &pins, object.clone(), Some(0))?;
    let keys = if at.netns_keys == NetnsKeys::Yes {
        "yes"
    } else {
        "no"
    };
    report.line(
        Some(true),
        &format!(
            "attached to {} (keys include the network namespace: {keys})",
            cgroup.path().display()
        ),
    )?;
    bypass_checks(&mut report, &exe, &cgroup, &pins, bytes)?;
    if let Some(st) = status::read(pins.path())? {
        for l in status::render(&st).lines() {
            writeln!(report.out, "selftest:      {l}")?;
        }
    }
    if object.parse()?.global(global::STREAM_BYTES).is_some() {
        let (ok, text) = stream_check(&exe, object, &unique, bytes)?;
        report.line(Some(ok), &text)?;
    } else {
        report.line(None, "backpressure: this object has no bound")?;
    }
    detach_check(&mut report, &exe, &cgroup, &pins, bytes)?;

    drop(pins);
    drop(cgroup);
    let verdict = if report.failures == 0 { "PASS" } else { "FAIL" };
    writeln!(report.out, "selftest: {verdict}")?;
    Ok(report.failures == 0)
}

/// The selftest's output: one line per check, failures counted.
struct Report<'a> {
    out: &'a mut dyn Write,
    failures: usize,
}

impl Report<'_> {
    /// `ok`: passed, failed, or skipped (None).
    fn line(&mut self, ok: Option<bool>, text: &str) -> Result<()> {
        let tag = match ok {
            Some(true) => "ok  ",
            Some(false) => "FAIL",
            None => "skip",
        };
        self.failures += usize::from(ok == Some(false));
        writeln!(self.out, "selftest: {tag} {text}")?;
        self.out.flush()?;
        Ok(())
    }
}

/// Each case of [`CASES`]: bytes intact both ways, redirected, `lo` flat.
fn bypass_checks(
    report: &mut Report<'_>,
    exe: &Path,
    cgroup: &PrivateCgroup,
    pins: &PrivatePins,
    bytes: u64,
) -> Result<()> {
    let v6 = ipv6_available();
    for (label, listen, host) in CASES {
        if label != CASES[0].0 && !v6 {
            report.line(
                None,
                &format!("{label}: IPv6 is not available on this host"),
            )?;
            continue;
        }
        let before = counters(pins.path())?;
        let t = transfer(exe, cgroup.path(), listen, host, bytes, &[])?;
        let redirected = counters(pins.path())?.saturating_sub(before);
        let mut problems = t.problems();
        if t.lo_delta * 100 >= t.payload {
            problems.push(format!(
                "lo grew {} B: the bytes crossed the TCP/IP stack",
                t.lo_delta
            ));
        }
        if redirected != t.payload {
            problems.push(format!(
                "bytes_redirected grew by {redirected}, not by the {} B sent",
                t.payload
            ));
        }
        report.line(
            Some(problems.is_empty()),
            &describe(label, &t, Some(redirected), &problems),
        )?;
    }
    Ok(())
}

/// Detach, then the same transfer crosses loopback again.
fn detach_check(
    report: &mut Report<'_>,
    exe: &Path,
    cgroup: &PrivateCgroup,
    pins: &PrivatePins,
    bytes: u64,
) -> Result<()> {
    match pipeline::detach(pins.path(), None)? {
        DetachOutcome::Detached(d) if d.sock_ops => report.line(Some(true), "detached")?,
        other => report.line(
            Some(false),
            &format!("detach did not detach sock_ops: {other:?}"),
        )?,
    }
    let t = transfer(exe, cgroup.path(), CASES[0].1, CASES[0].2, bytes, &[])?;
    let mut problems = t.problems();
    if t.lo_delta < 2 * t.payload {
        problems.push(format!(
            "lo grew only {} B: bytes still bypass TCP",
            t.lo_delta
        ));
    }
    report.line(
        Some(problems.is_empty()),
        &describe("after detach, IPv4", &t, None, &problems),
    )
}

fn counters(pins: &Path) -> Result<u64> {
    counter(pins, "bytes_redirected")
}

fn counter(pins: &Path, name: &str) -> Result<u64> {
    Ok(status::read(pins)?
        .and_then(|s| s.counter(name))
        .unwrap_or(0))
}

/// The default backpressure bound, in a cgroup and pin directory of its own:
/// a one-way stream (whose reader never tells the writer what it read) is
/// redirected up to the bound, then continues over TCP, intact, and both
/// sockets leave the map; a conversation of the same size stays redirected.
fn stream_check(
    exe: &Path,
    object: &ObjectSource,
    unique: &str,
    bytes: u64,
) -> Result<(bool, String)> {
    let name = format!("{unique}-streams");
    let cgroup = PrivateCgroup::create(&name)?;
    let pins = PrivatePins::new(&name);
    attach_private(&cgroup, &pins, object.clone(), Some(DEFAULT_STREAM_BYTES))?;
    let limit = u64::from(DEFAULT_STREAM_BYTES);
    let bytes = bytes.max(4 * limit);
    let t = traffic::Pair {
        exe,
        server_cgroup: cgroup.path(),
        client_cgroup: cgroup.path(),
        listen: CASES[0].1,
        connect_host: CASES[0].2,
        connect_port: None,
        server_args: vec!["--bytes".into(), "0".into()],
        client_args: vec!["--bytes".into(), bytes.to_string()],
        limit: Duration::from_secs(120),
    }
    .run()
    .context("a one-way stream")?;
    let redirected = counter(pins.path(), "bytes_redirected")?;
    let moved = counter(pins.path(), "streams_to_tcp")?;
    let mut problems = t.problems();
    // The bound counts bytes not yet read: up to it, plus what the reader
    // had read when it last told the writer (its 8-byte header, early on).
    if redirected > 2 * limit || moved != 1 {
        problems.push(format!(
            "expected one stream moved to TCP after {limit} B, got {moved} after {redirected} B redirected"
        ));
    }
    // A conversation of the same size never moves.
    let turns = transfer(
        exe,
        cgroup.path(),
        CASES[0].1,
        CASES[0].2,
        bytes,
        &["--pattern", "turns"],
    )?;
    problems.extend(turns.problems());
    let conversed = counter(pins.path(), "bytes_redirected")? - redirected;
    if conversed != turns.payload || counter(pins.path(), "streams_to_tcp")? != moved {
        problems.push(format!(
            "a conversation of {} B had {conversed} B redirected",
            turns.payload
        ));
    }
    let text = format!(
        "backpressure: {:.1} MiB one way: {redirected} B redirected, then TCP (--stream-bytes {limit}), lo +{} B; \
         {:.1} MiB as 64 KiB turns: all redirected, lo +{} B{}",
        mib(t.payload),
        t.lo_delta,
        mib(turns.payload),
        turns.lo_delta,
        problems
            .iter()
            .map(|p| format!("; {p}"))
            .collect::<String>()
    );
    Ok((problems.is_empty(), text))
}

fn transfer(
    exe: &Path,
    cgroup: &Path,
    listen: &str,
    host: &str,
    bytes: u64,
    extra: &[&str],
) -> Result<Transfer> {
    traffic::run_pair(
        exe,
        cgroup,
        listen,
        host,
        bytes,
        extra,
        Duration::from_secs(120),
    )
    .with_context(|| format!("transfer {listen} <- {host}"))
}

fn describe(label: &str, t: &Transfer, redirected: Option<u64>, problems: &[String]) -> String {
    let (c2s, s2c) = t.digests();
    let mut s = format!(
        "{label}: {:.1} MiB both ways, lo +{} B ({:.3}% of payload)",
        mib(t.payload),
        t.lo_delta,
        100.0 * t.lo_delta as f64 / t.payload.max(1) as f64
    );
    if let Some(r) = redirected {
        let _ = write!(s, ", redirected {r} B");
    }
    let _ = write!(s, ", digests {c2s}/{s2c}");
    if t.spurious_eagain() > 0 {
        let _ = write!(s, ", {} spurious EAGAIN", t.spurious_eagain());
    }
    for p in problems {
        let _ = write!(s, "; {p}");
    }
    s
}
