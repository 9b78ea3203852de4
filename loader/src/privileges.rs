//! What this process may do: its effective capabilities
//! (`/proc/self/status`, `CapEff`), and the signals that must wait while the
//! system is being changed.

use anyhow::{Context, Result, bail};
use nix::sys::signal::{SigSet, SigmaskHow, Signal, pthread_sigmask};
use nix::sys::signalfd::{SfdFlags, SignalFd};

pub const CAP_NET_ADMIN: u32 = 12;
pub const CAP_SYS_ADMIN: u32 = 21;
pub const CAP_PERFMON: u32 = 38;
pub const CAP_BPF: u32 = 39;

/// The effective capability set, as a bit mask (0 if it cannot be read).
pub fn effective() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .unwrap_or(0)
}

/// Whether `caps` holds capability `cap`.
pub fn has(caps: u64, cap: u32) -> bool {
    caps & (1 << cap) != 0
}

/// Fails early, with the fix, when the process cannot use bpf(2) for
/// rawload: CAP_SYS_ADMIN, or CAP_BPF with CAP_NET_ADMIN (5.8+).
pub fn require(what: &str) -> Result<()> {
    let caps = effective();
    if has(caps, CAP_SYS_ADMIN) || (has(caps, CAP_BPF) && has(caps, CAP_NET_ADMIN)) {
        return Ok(());
    }
    bail!(
        "rawload {what} needs root (CAP_BPF and CAP_NET_ADMIN, or CAP_SYS_ADMIN): run it with sudo"
    )
}

/// The signals that stop rawload: SIGINT, SIGTERM, SIGHUP.
fn stop_signals() -> SigSet {
    let mut set = SigSet::empty();
    for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        set.add(s);
    }
    set
}

/// Holds the stop signals back while the system is being changed, so a
/// Ctrl-C lands after the change is complete or undone; dropping it restores
/// the mask that was there before (a caller that blocked them already, as
/// `attach --hold` does, keeps them blocked and pending).
pub struct StopSignalsDeferred(SigSet);

impl StopSignalsDeferred {
    pub fn new() -> Result<StopSignalsDeferred> {
        let mut old = SigSet::empty();
        pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&stop_signals()), Some(&mut old))
            .context("blocking signals")?;
        Ok(StopSignalsDeferred(old))
    }
}

impl Drop for StopSignalsDeferred {
    fn drop(&mut self) {
        let _ = pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&self.0), None);
    }
}

/// Blocks the stop signals for the rest of this thread's life: from then on
/// one that arrives stays pending until [`wait_for_stop_signal`] takes it.
pub fn block_stop_signals() -> Result<()> {
    stop_signals().thread_block().context("blocking signals")
}

/// A descriptor that reads the stop signals (signalfd(2)), for a wait that
/// also watches other descriptors (`attach --hold`). The signals must be
/// blocked ([`block_stop_signals`]) so that they stay pending for it.
pub fn stop_signal_fd() -> Result<SignalFd> {
    SignalFd::with_flags(
        &stop_signals(),
        SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK,
    )
    .context("signalfd for SIGTERM, SIGINT, SIGHUP")
}

/// Waits for a stop signal (`attach --hold`), taking one already pending.
pub fn wait_for_stop_signal() -> Result<Signal> {
    block_stop_signals()?;
    stop_signals().wait().context("waiting for a signal")
}
