//! `rawload trace`: stream the debug object's `bpf_trace_printk` lines.
//!
//! `bpf_trace_printk` writes into the kernel's ftrace ring buffer;
//! `trace_pipe` in tracefs hands each line out once, blocking until there is
//! one. Lines from other tools are skipped: ours start with "rawload: ".
//!
//! The ring buffer is one for the whole host: the lines come from every
//! debug attachment there is (each line names the task and CPU), and two
//! readers of `trace_pipe` split the lines between them.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsFd;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use nix::mount::{MsFlags, mount};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::statfs::{TRACEFS_MAGIC, statfs};

const TRACEFS: &str = "/sys/kernel/tracing";
/// Older layouts expose tracefs inside debugfs.
const DEBUGFS_TRACING: &str = "/sys/kernel/debug/tracing";

/// Finds tracefs, mounting it at /sys/kernel/tracing if nothing is there.
pub fn tracefs() -> Result<&'static Path> {
    for dir in [TRACEFS, DEBUGFS_TRACING] {
        if Path::new(dir).join("trace_pipe").exists() {
            return Ok(Path::new(dir));
        }
    }
    if statfs(TRACEFS).is_ok_and(|s| s.filesystem_type() == TRACEFS_MAGIC) {
        bail!("{TRACEFS} is tracefs but has no trace_pipe");
    }
    mount(Some("tracefs"), TRACEFS, Some("tracefs"), MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC, None::<&str>)
        .map_err(|e| anyhow::anyhow!("tracefs is not mounted and mounting it at {TRACEFS} failed ({}); mount it with: mount -t tracefs tracefs {TRACEFS}", e.desc()))?;
    Ok(Path::new(TRACEFS))
}

/// Copies rawload's trace lines to `out` until `max_lines` lines were
/// printed or `timeout` passed (both optional: by default until Ctrl-C).
pub fn stream(
    out: &mut dyn Write,
    max_lines: Option<u64>,
    timeout: Option<Duration>,
) -> Result<u64> {
    rawload_loader::privileges::require("trace")?;
    let dir = tracefs()?;
    let pipe = File::open(dir.join("trace_pipe"))
        .with_context(|| format!("opening {}/trace_pipe", dir.display()))?;
    let deadline = timeout.map(|t| Instant::now() + t);
    let mut reader = BufReader::new(pipe);
    let mut printed = 0;
    let mut line = String::new();
    while max_lines.is_none_or(|m| printed < m) {
        // Wait for data in slices of at most one second, to honour the deadline.
        let wait = match deadline {
            Some(d) => match d.checked_duration_since(Instant::now()) {
                Some(left) => left.min(Duration::from_secs(1)),
                None => break,
            },
            None => Duration::from_secs(1),
        };
        if reader.buffer().is_empty() {
            let mut fds = [PollFd::new(reader.get_ref().as_fd(), PollFlags::POLLIN)];
            let ms = PollTimeout::from(wait.as_millis().min(1000) as u16);
            if poll(&mut fds, ms).context("waiting for trace_pipe")? == 0 {
                continue;
            }
        }
        line.clear();
        if reader.read_line(&mut line).context("reading trace_pipe")? == 0 {
            break;
        }
        if line.contains("rawload: ") {
            out.write_all(line.as_bytes())?;
            out.flush()?;
            printed += 1;
        }
    }
    Ok(printed)
}
