//! `attach --hold`: keeps `rawload_owners` current until a stop signal.
//!
//! The host's namespace hears when links change (`RTMGRP_LINK`: a container
//! starts and its veth joins a bridge, or stops and its veth goes), and
//! rawload scans shortly after; the addresses themselves are set inside the
//! containers, where the host hears nothing, so it also scans every
//! [`RESCAN`]. A connection made before its addresses are known keeps TCP.

use std::os::fd::AsFd;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::Signal;

use super::netlink::Netlink;
use super::{Cidr, Synced, refresh};
use crate::privileges;

/// The longest a new container waits to be known (its addresses may be set
/// after its link appears).
pub const RESCAN: Duration = Duration::from_secs(5);
/// How long after a link change rawload scans (the container runtime sets
/// the addresses right after it moves the veth).
const SETTLE: Duration = Duration::from_millis(300);

/// Scans on link changes and every [`RESCAN`], handing each outcome to
/// `report`, until a stop signal arrives; returns that signal.
pub fn hold(
    pin_dir: &Path,
    ranges: &[Cidr],
    mut report: impl FnMut(Result<Synced>),
) -> Result<Signal> {
    privileges::block_stop_signals()?;
    let signals = privileges::stop_signal_fd()?;
    let links = Netlink::subscribe().context("listening for link changes (NETLINK_ROUTE)")?;
    let mut next = Instant::now() + RESCAN;
    loop {
        let wait = next.saturating_duration_since(Instant::now());
        let mut fds = [
            PollFd::new(signals.as_fd(), PollFlags::POLLIN),
            PollFd::new(links.as_fd(), PollFlags::POLLIN),
        ];
        match poll(
            &mut fds,
            PollTimeout::try_from(wait).unwrap_or(PollTimeout::MAX),
        ) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => return Err(e).context("waiting for a signal or a link change"),
        }
        if let Some(info) = signals.read_signal().context("reading the signalfd")? {
            return Signal::try_from(info.ssi_signo as i32).context("an unknown signal");
        }
        if fds[1].any().unwrap_or(false) {
            links.drain();
            next = next.min(Instant::now() + SETTLE);
        }
        if Instant::now() >= next {
            report(refresh(pin_dir, ranges));
            next = Instant::now() + RESCAN;
        }
    }
}
