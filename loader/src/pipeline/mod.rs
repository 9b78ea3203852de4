//! `attach` and `detach`: the whole pipeline, in order, with undo.
//!
//! ```text
//! check_options ─> recover_pin_dir ─> configure (probes -> .rodata) ─> create_maps
//!     ─> load_programs ─> attach_and_pin: socket map programs, pins, sock_ops on the cgroup
//! ```
//!
//! Read it like libbpf's `bpf_object__load()` chain: each phase is one
//! function of [`check`], [`configure`] or [`install`]. Every change to the
//! system is a value that undoes itself when dropped (a [`MapAttachment`],
//! the [`NewPins`], the [`BpffsMount`]) unless the attach as a whole
//! commits it, so a failure leaves the system as it was. The cgroup attach
//! is last, so nothing that can fail comes after it, and everything
//! `detach` needs (pins and the attach record) exists before it: an attach
//! killed at any point leaves either nothing or a state that `detach` (or
//! the next `attach`) cleans up. The torture suite proves that last claim:
//! `RAWLOAD_KILL_AT=<step>` makes the process SIGKILL itself right after
//! the named step ([`KILL_POINTS`]). Concurrent runs on one pin directory
//! wait for each other ([`PinLock`]).
//!
//! [`MapAttachment`]: crate::attach::MapAttachment
//! [`NewPins`]: crate::pin::NewPins
//! [`BpffsMount`]: crate::pin::BpffsMount
//! [`PinLock`]: crate::pin::PinLock

mod check;
mod configure;
mod detach;
mod install;
mod options;

use anyhow::Result;

pub use check::socket_map;
pub use detach::detach;
pub(crate) use detach::detach_dir;
pub use options::*;

use crate::pin::{self, PinLock};
use crate::privileges::{self, StopSignalsDeferred};
use check::Recovery;

/// The steps of `attach` after which `RAWLOAD_KILL_AT` can kill it.
pub const KILL_POINTS: [&str; 8] = [
    "maps-created",
    "programs-loaded",
    "sk-msg-attached",
    "pin-dir-created",
    "record-pinned",
    "programs-pinned",
    "maps-pinned",
    "cgroup-attached",
];

/// Dies by SIGKILL here if `RAWLOAD_KILL_AT` names this step: no cleanup
/// runs, exactly as if the machine had killed the process.
fn kill_point(step: &str) {
    debug_assert!(KILL_POINTS.contains(&step));
    if std::env::var_os("RAWLOAD_KILL_AT").is_some_and(|v| v == step) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::this(), nix::sys::signal::Signal::SIGKILL);
    }
}

/// Loads, attaches and pins; see the module docs for the order.
pub fn attach(opts: &AttachOptions) -> Result<AttachOutcome> {
    privileges::require("attach")?;
    let mut plan = check::check_options(opts)?;
    let mount = pin::ensure_bpffs(&opts.pin_dir)?;
    let _lock = PinLock::take(&opts.pin_dir)?;
    let recovered = match check::recover_pin_dir(opts, &plan.cgroup)? {
        Recovery::AlreadyAttached(r) => {
            return Ok(AttachOutcome::AlreadyAttached { cgroup: r.cgroup });
        }
        Recovery::Ready { recovered } => recovered,
    };
    let _deferred = StopSignalsDeferred::new()?;
    let config = configure::configure(&mut plan.obj, opts, &plan.cgroup, &plan.ports)?;
    let (maps, filled) = install::create_maps(&plan, opts, &config)?;
    let programs = install::load_programs(&plan, &maps, &config)?;
    install::attach_and_pin(opts, &plan, &maps, &programs, &config)?;
    mount.commit();
    Ok(AttachOutcome::Attached(Attached {
        cgroup: plan.cgroup.path.clone(),
        pin_dir: opts.pin_dir.clone(),
        programs: programs.names(),
        maps: maps.len(),
        netns_keys: config.netns_keys,
        memlock: config.memlock,
        host_addresses: filled.host_addresses,
        cross_netns: config.cross_netns,
        owners: filled.owners,
        streams: config.streams,
        reads: config.reads,
        fionread: config.fionread,
        recovered,
    }))
}
