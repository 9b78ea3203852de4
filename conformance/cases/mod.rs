//! The cases: one socket-API behaviour each, written once and run in both
//! modes by the same code in the same process layout (one process holding
//! both ends, threads where the behaviour needs concurrency).
//!
//! A case returns what it observed ([`Obs`]); it never decides pass or fail
//! itself. Its `same_when` says which observations must match and why the
//! numbers that are only reported are allowed to differ.

use std::fmt;
use std::time::Duration;

use anyhow::Result;

use crate::net::{Pair, PairOpts};
use crate::obs::Obs;

mod closing;
mod ktls;
mod receiving;
mod sending;
mod zerocopy;

/// Which run a case process belongs to (only kTLS needs to know: a kTLS
/// setup failure over plain TCP means the kernel cannot do kTLS, under
/// rawload it is a difference).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Tcp,
    Rawload,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Tcp => "tcp",
            Mode::Rawload => "rawload",
        }
    }

    pub fn parse(s: &str) -> Option<Mode> {
        [Mode::Tcp, Mode::Rawload]
            .into_iter()
            .find(|m| m.name() == s)
    }
}

/// What a case gets to work with.
#[derive(Debug, Clone, Copy)]
pub struct Ctx {
    pub mode: Mode,
    /// Multiplies every wait for something that should happen promptly
    /// (10 for qemu TCG guests). The durations that are part of a
    /// behaviour (a 200 ms SO_SNDTIMEO, a 300 ms pause) are not scaled.
    pub scale: f64,
    /// At most this many bytes are pushed into a peer that does not read.
    pub bound: u64,
}

impl Ctx {
    /// `ms` milliseconds, scaled.
    pub fn scaled(&self, ms: u64) -> Duration {
        Duration::from_secs_f64(ms as f64 * self.scale / 1000.0)
    }

    /// How long to wait for something that should happen promptly: 1 s
    /// here, scaled. Waits that expect nothing to happen take this long.
    pub fn grace(&self) -> Duration {
        self.scaled(1000)
    }

    /// A little time for bytes in flight to land (loopback is synchronous
    /// almost always; this covers the rest).
    pub fn settle(&self) {
        std::thread::sleep(self.scaled(30));
    }

    /// A connected IPv4 pair with default options.
    pub fn pair(&self) -> Result<Pair> {
        Pair::new(PairOpts::default(), self.grace())
    }
}

/// The kernel lacks a feature the case needs (returned as an error).
#[derive(Debug)]
pub struct Unsupported(pub String);

impl fmt::Display for Unsupported {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unsupported: {}", self.0)
    }
}

impl std::error::Error for Unsupported {}

/// A rule on reported numbers, applied to (plain TCP, rawload): `Some(what)`
/// names the broken rule.
pub type Cross = fn(&Obs, &Obs) -> Option<String>;

/// One behaviour, run over plain TCP and under rawload.
pub struct Case {
    pub name: &'static str,
    /// What the case does, in one line.
    pub does: &'static str,
    /// When the two runs count as the same.
    pub same_when: &'static str,
    pub run: fn(&Ctx) -> Result<Obs>,
    pub cross: Option<Cross>,
}

/// Every case, in the order they run: a baseline first, then the issue's
/// list (numbers in `does`), then the extras.
pub const CASES: &[Case] = &[
    receiving::BASIC,
    receiving::BASIC_V6,
    sending::NONBLOCK_FILL,
    sending::SNDTIMEO,
    sending::DONTWAIT,
    sending::SMALL_BUFFERS,
    receiving::WAITALL,
    receiving::PEEK,
    receiving::FIONREAD,
    sending::SIOCOUTQ_DELIVERED,
    sending::SIOCOUTQ_FULL,
    receiving::RCVLOWAT,
    receiving::OOB,
    receiving::OOB_INLINE,
    closing::SHUTDOWN_WR,
    closing::SHUTDOWN_RD,
    closing::CLOSE_UNREAD_SEND,
    closing::CLOSE_UNREAD_RECV,
    zerocopy::SENDFILE,
    zerocopy::SPLICE_WRITE,
    zerocopy::SPLICE_READ,
    zerocopy::SENDFILE_PEER_CLOSES,
    ktls::KTLS,
    closing::HALFCLOSE_READER,
    receiving::SEND_BEFORE_ACCEPT,
    receiving::WRITEV_READV,
    receiving::RCVTIMEO,
    receiving::EPOLL_ET,
    sending::EPOLLOUT,
    closing::RST_LINGER0,
    closing::CLOSE_AFTER_WRITE,
];

pub fn find(name: &str) -> Option<&'static Case> {
    CASES.iter().find(|c| c.name == name)
}

/// `on-time` when a timeout fired within [0.9 T, 1.5 T + 100 ms scaled],
/// else `early` or `late` (a timeout is part of the contract, its jitter
/// is not).
pub fn timing(ctx: &Ctx, elapsed: Duration, timeout: Duration) -> &'static str {
    if elapsed < timeout.mul_f64(0.9) {
        "early"
    } else if elapsed > timeout.mul_f64(1.5) + ctx.scaled(100) {
        "late"
    } else {
        "on-time"
    }
}

pub fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_tokens() {
        for (i, c) in CASES.iter().enumerate() {
            assert!(
                c.name
                    .chars()
                    .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '_'),
                "{}",
                c.name
            );
            assert!(CASES[..i].iter().all(|o| o.name != c.name), "{}", c.name);
            assert!(!c.does.is_empty() && !c.same_when.is_empty());
        }
    }

    #[test]
    fn timing_window() {
        let ctx = Ctx {
            mode: Mode::Tcp,
            scale: 1.0,
            bound: 0,
        };
        let t = Duration::from_millis(200);
        assert_eq!(timing(&ctx, Duration::from_millis(100), t), "early");
        assert_eq!(timing(&ctx, Duration::from_millis(205), t), "on-time");
        assert_eq!(timing(&ctx, Duration::from_millis(500), t), "late");
    }
}
