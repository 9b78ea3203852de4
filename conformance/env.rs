//! The two places a case runs in, and rawload as a black box.
//!
//! Two private child cgroups of the cgroup2 root: one with nothing
//! attached (plain TCP), one that `rawload attach` is pointed at, with a
//! private pin directory. rawload is only ever driven through its command
//! line (`attach`, `status --json`, `detach`): the loader and the eBPF
//! programs are being rewritten, and this tool is the spec they are held
//! to. Everything is undone on drop, on error, on panic (the tool is built
//! with unwinding, see the Makefile) and on SIGINT/SIGTERM/SIGHUP (which
//! only set a flag the waits poll).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result, bail};
use nix::sys::signal::{SigSet, Signal};
use rawload::json::Json;
use rawload::scratch::PrivateCgroup;
use rawload_loader::pin::BPFFS_MOUNT;

static STOP: AtomicBool = AtomicBool::new(false);

/// Whether a signal asked the run to end.
pub fn stop_requested() -> bool {
    STOP.load(Ordering::SeqCst)
}

/// Turns SIGINT, SIGTERM and SIGHUP into [`stop_requested`]: the signals
/// are blocked in this thread (so in every thread started later) and one
/// thread waits for them. Children get a clean signal mask from std.
pub fn catch_signals() -> Result<()> {
    let mut set = SigSet::empty();
    for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        set.add(s);
    }
    set.thread_block().context("blocking signals")?;
    std::thread::spawn(move || {
        while let Ok(sig) = set.wait() {
            eprintln!("rawload-conformance: {sig}: stopping and cleaning up");
            STOP.store(true, Ordering::SeqCst);
        }
    });
    Ok(())
}

/// Runs the rawload binary; the output, whatever the exit code.
fn rawload(bin: &Path, args: &[&str]) -> Result<Output> {
    Command::new(bin)
        .args(args)
        .output()
        .with_context(|| format!("running {} {}", bin.display(), args.join(" ")))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).trim().to_string()
}

/// `rawload attach` on a private cgroup, undone by `rawload detach` on drop.
#[derive(Debug)]
pub struct Attachment {
    bin: PathBuf,
    cgroup: String,
    pins: PathBuf,
    /// What `rawload attach` printed (its policy notes).
    pub said: String,
    pub args: Vec<String>,
}

impl Attachment {
    /// `rawload attach --cgroup CG --pin-dir PINS --single-netns [extra]`:
    /// no policy flags unless asked (the default behaviour is the point).
    /// `--single-netns` is true here: only this tool's processes, all in
    /// one network namespace, are in the cgroup; kernels before 5.15 need it.
    pub fn attach(bin: &Path, cgroup: &Path, pins: PathBuf, extra: &[String]) -> Result<Self> {
        if pins.exists() {
            bail!("{} already exists: another run is using it", pins.display());
        }
        let cgroup = cgroup.display().to_string();
        let pin_arg = pins.display().to_string();
        let mut args: Vec<String> = ["attach", "--cgroup", &cgroup, "--pin-dir", &pin_arg]
            .iter()
            .map(|s| s.to_string())
            .collect();
        args.push("--single-netns".into());
        args.extend(extra.iter().cloned());
        // The guard exists before the attach: whatever a half-finished
        // attach left behind is detached on the way out.
        let mut at = Attachment {
            bin: bin.to_path_buf(),
            cgroup,
            pins,
            said: String::new(),
            args,
        };
        let argv: Vec<&str> = at.args.iter().map(String::as_str).collect();
        let out = rawload(bin, &argv)?;
        if !out.status.success() {
            bail!(
                "rawload {} failed: {}",
                at.args.join(" "),
                text(&out.stderr)
            );
        }
        at.said = text(&out.stdout);
        Ok(at)
    }

    /// `rawload status --json` of the attachment; an error once it is gone.
    pub fn status(&self) -> Result<Json> {
        let pins = self.pins.display().to_string();
        let out = rawload(&self.bin, &["status", "--json", "--pin-dir", &pins])?;
        let doc = Json::parse(&text(&out.stdout))
            .with_context(|| format!("rawload status --json printed {:?}", text(&out.stdout)))?;
        if doc["attached"].as_bool() != Some(true) {
            bail!("rawload status says the attachment in {pins} is gone: {doc}");
        }
        Ok(doc)
    }

    /// The attachment's counters, by name. New counters are welcome; none
    /// is required here.
    pub fn counters(&self) -> Result<Vec<(String, u64)>> {
        let doc = self.status()?;
        Ok(match &doc["counters"] {
            Json::Obj(fields) => fields
                .iter()
                .filter_map(|(k, v)| v.as_u64().map(|n| (k.clone(), n)))
                .collect(),
            _ => Vec::new(),
        })
    }
}

impl Drop for Attachment {
    fn drop(&mut self) {
        if !self.pins.exists() {
            return;
        }
        let pins = self.pins.display().to_string();
        match rawload(
            &self.bin,
            &["detach", "--cgroup", &self.cgroup, "--pin-dir", &pins],
        ) {
            Ok(out) if out.status.success() => {}
            Ok(out) => eprintln!(
                "rawload-conformance: CLEANUP FAILED: rawload detach --pin-dir {pins}: {}",
                text(&out.stderr)
            ),
            Err(e) => eprintln!("rawload-conformance: CLEANUP FAILED: {e:#}"),
        }
        // Only an empty directory is ours to remove.
        let _ = std::fs::remove_dir(&self.pins);
    }
}

/// Both cgroups and the attachment. Fields drop in order: detach first,
/// then each cgroup ends the processes in it (only ours) and goes away.
#[derive(Debug)]
pub struct Env {
    pub attachment: Attachment,
    pub rawload_cgroup: PrivateCgroup,
    pub tcp_cgroup: PrivateCgroup,
}

impl Env {
    pub fn new(bin: &Path, extra: &[String]) -> Result<Env> {
        let unique = format!("rawload-conformance-{}", std::process::id());
        let tcp_cgroup = PrivateCgroup::create(&format!("{unique}-tcp"))?;
        let rawload_cgroup = PrivateCgroup::create(&format!("{unique}-rawload"))?;
        let pins = PathBuf::from(BPFFS_MOUNT).join(&unique);
        let attachment = Attachment::attach(bin, rawload_cgroup.path(), pins, extra)?;
        Ok(Env {
            attachment,
            rawload_cgroup,
            tcp_cgroup,
        })
    }
}

/// kTLS needs the `tls` ULP: load the module if the kernel has it as one.
/// Returns a note for the report when it is not available.
pub fn ensure_tls_module() -> Option<String> {
    const ULPS: &str = "/proc/sys/net/ipv4/tcp_available_ulp";
    let has_tls =
        || std::fs::read_to_string(ULPS).is_ok_and(|s| s.split_whitespace().any(|u| u == "tls"));
    if has_tls() {
        return None;
    }
    let tried = match Command::new("modprobe").arg("tls").output() {
        Ok(out) if out.status.success() => "modprobe tls succeeded".to_string(),
        Ok(out) => format!("modprobe tls failed: {}", text(&out.stderr)),
        Err(e) => format!("no modprobe: {e}"),
    };
    match has_tls() {
        true => None,
        false => Some(format!(
            "the kernel offers no tls ULP ({ULPS}: {:?}; {tried})",
            std::fs::read_to_string(ULPS).unwrap_or_default().trim()
        )),
    }
}
