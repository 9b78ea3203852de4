//! Running the cases: one child process per case and mode (the same
//! process layout for both), judged in pairs.
//!
//! A child joins its cgroup before it creates a socket (a socket belongs to
//! the cgroup of the process that made it), runs one case, prints one JSON
//! line and exits, so a case that leaves a thread blocked cannot hold up
//! the run. A child that does not finish in time is killed by its pid.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Command, ExitCode, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rawload::json::{Json, obj};

use crate::cases::{self, Case, Ctx, Mode, Unsupported};
use crate::env::{Env, stop_requested};
use crate::net;
use crate::obs::{DataPath, Outcome, Verdict};

/// What every case process is told.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub scale: f64,
    pub bound: u64,
}

/// One run of one case.
#[derive(Debug, Clone)]
pub struct Run {
    pub outcome: Outcome,
    /// Payload bytes the case's sockets received through TCP.
    pub tcp_payload: u64,
    pub secs: f64,
}

/// One case, judged.
pub struct Report {
    pub case: &'static Case,
    pub tcp: Run,
    pub rawload: Run,
    pub path: DataPath,
    /// rawload's counters that moved during the rawload run.
    pub counters: Vec<(String, u64)>,
    pub verdict: Verdict,
}

/// The case process: join `cgroup`, run `name`, print the outcome.
pub fn case_main(name: &str, cgroup: &Path, mode: Mode, s: Settings) -> ExitCode {
    let outcome = (|| -> Result<Outcome> {
        rawload::traffic::join_cgroup(cgroup)?;
        let case = cases::find(name).with_context(|| format!("no case {name}"))?;
        let ctx = Ctx {
            mode,
            scale: s.scale,
            bound: s.bound,
        };
        Ok(match (case.run)(&ctx) {
            Ok(obs) => Outcome::Observed(obs),
            Err(e) => match e.downcast_ref::<Unsupported>() {
                Some(u) => Outcome::Unsupported(u.0.clone()),
                None => Outcome::Failed(format!("{e:#}")),
            },
        })
    })()
    .unwrap_or_else(|e| Outcome::Failed(format!("{e:#}")));
    let line = obj([
        ("outcome", outcome.to_json()),
        ("tcp_payload", net::tcp_payload().into()),
    ]);
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{line}").and_then(|_| stdout.flush());
    // Exit now: a thread the case left blocked must not keep us alive.
    std::process::exit(0)
}

fn collect(pipe: Option<impl Read + Send + 'static>) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(mut p) = pipe {
            let _ = p.read_to_string(&mut s);
        }
        s
    })
}

/// Waits for `child` until `limit`; `None` if it had to be killed.
fn wait_bounded(child: &mut Child, limit: Duration) -> Result<Option<std::process::ExitStatus>> {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if stop_requested() || started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            if stop_requested() {
                bail!("interrupted");
            }
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Runs one case in one mode in a child process in `cgroup`.
fn run_child(case: &Case, cgroup: &Path, mode: Mode, s: Settings) -> Result<Run> {
    let exe = std::env::current_exe().context("finding this binary")?;
    let started = Instant::now();
    let mut child = Command::new(exe)
        .args(["case", case.name, "--mode", mode.name(), "--cgroup"])
        .arg(cgroup)
        .args(["--time-scale", &s.scale.to_string()])
        .args(["--bound", &s.bound.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting a case process")?;
    let (out, err) = (collect(child.stdout.take()), collect(child.stderr.take()));
    // Every wait inside a case is bounded far below this; it only catches
    // a case that hangs where it must not.
    let limit = Duration::from_secs_f64(15.0 * s.scale);
    let status = wait_bounded(&mut child, limit)?;
    let (out, err) = (
        out.join().unwrap_or_default(),
        err.join().unwrap_or_default(),
    );
    let parsed = out.lines().last().and_then(|l| Json::parse(l).ok());
    let (outcome, tcp_payload) = match (status, parsed) {
        (None, _) => (Outcome::Failed(format!("hung: killed after {limit:?}")), 0),
        (Some(_), Some(v)) => (
            Outcome::from_json(&v["outcome"])?,
            v["tcp_payload"].as_u64().unwrap_or(0),
        ),
        (Some(st), None) => {
            let why = err.lines().last().unwrap_or("no output");
            (Outcome::Failed(format!("case process {st}: {why}")), 0)
        }
    };
    Ok(Run {
        outcome,
        tcp_payload,
        secs: started.elapsed().as_secs_f64(),
    })
}

/// Counters that grew between `before` and `after`.
fn grown(before: &[(String, u64)], after: &[(String, u64)]) -> Vec<(String, u64)> {
    after
        .iter()
        .filter_map(|(k, v)| {
            let old = before.iter().find(|(b, _)| b == k).map_or(0, |(_, n)| *n);
            (*v > old).then(|| (k.clone(), v - old))
        })
        .collect()
}

/// Bytes rawload redirected according to its counters (`bytes_redirected`),
/// `None` when it has no such counter.
fn bytes_redirected(before: &[(String, u64)], after: &[(String, u64)]) -> Option<u64> {
    after.iter().any(|(k, _)| k == "bytes_redirected").then(|| {
        grown(before, after)
            .iter()
            .find(|(k, _)| k == "bytes_redirected")
            .map_or(0, |(_, n)| *n)
    })
}

/// Runs `case` over plain TCP, then under rawload, and judges.
pub fn run_case(env: &Env, case: &'static Case, s: Settings) -> Result<Report> {
    let tcp = run_child(case, env.tcp_cgroup.path(), Mode::Tcp, s)?;
    let before = env.attachment.counters()?;
    let rawload = run_child(case, env.rawload_cgroup.path(), Mode::Rawload, s)?;
    let after = env.attachment.counters()?;
    let path = DataPath::classify(bytes_redirected(&before, &after), rawload.tcp_payload);
    let cross = match (&tcp.outcome, &rawload.outcome, case.cross) {
        (Outcome::Observed(t), Outcome::Observed(r), Some(rule)) => rule(t, r),
        _ => None,
    };
    let verdict = Verdict::judge(&tcp.outcome, &rawload.outcome, path, cross);
    Ok(Report {
        case,
        tcp,
        rawload,
        path,
        counters: grown(&before, &after),
        verdict,
    })
}

impl Report {
    /// `CONFORMANCE <case> <verdict> tcp=<result> rawload=<result> path=<path>`
    pub fn line(&self) -> String {
        format!(
            "CONFORMANCE {} {} tcp={} rawload={} path={}",
            self.case.name,
            self.verdict.text(),
            self.tcp.outcome.text(),
            self.rawload.outcome.text(),
            self.path.name()
        )
    }

    pub fn to_json(&self) -> Json {
        let run = |r: &Run| {
            obj([
                ("outcome", r.outcome.to_json()),
                ("text", r.outcome.text().into()),
                ("tcp_payload", r.tcp_payload.into()),
                ("secs", r.secs.into()),
            ])
        };
        obj([
            ("case", self.case.name.into()),
            ("does", self.case.does.into()),
            ("same_when", self.case.same_when.into()),
            ("verdict", self.verdict.word().into()),
            ("differs", self.verdict.what().to_vec().into()),
            ("path", self.path.name().into()),
            ("tcp", run(&self.tcp)),
            ("rawload", run(&self.rawload)),
            (
                "counters",
                Json::Obj(
                    self.counters
                        .iter()
                        .map(|(k, v)| (k.clone(), (*v).into()))
                        .collect(),
                ),
            ),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(list: &[(&str, u64)]) -> Vec<(String, u64)> {
        list.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    #[test]
    fn counter_deltas_tolerate_new_and_missing_counters() {
        let before = c(&[("bytes_redirected", 10), ("msgs_redirected", 1)]);
        let after = c(&[
            ("bytes_redirected", 25),
            ("msgs_redirected", 1),
            ("brand_new", 3),
        ]);
        assert_eq!(
            grown(&before, &after),
            c(&[("bytes_redirected", 15), ("brand_new", 3)])
        );
        assert_eq!(bytes_redirected(&before, &after), Some(15));
        assert_eq!(bytes_redirected(&before, &before), Some(0));
        assert_eq!(bytes_redirected(&[], &c(&[("other", 1)])), None);
    }
}
