//! Programs in the kernel: `BPF_PROG_LOAD` and the verifier log.
//!
//! The first attempt runs without a log: before 6.4 a log that fills up turns
//! even a *successful* verification into `ENOSPC`, and logging slows the
//! verifier. Only when the kernel says no do we load again with
//! `log_level = 1`, growing the buffer on `ENOSPC`, so the error can show the
//! verifier's own explanation (libbpf, aya and cilium/ebpf all do this).

use std::ffi::CStr;
use std::fmt;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use nix::errno::Errno;

use crate::sys::{self, ProgLoadArgs, SysError};
use rawload_obj::insn::Insn;
use rawload_obj::obj::ProgKind;
use rawload_obj::uapi::ProgType;

/// Verifier log buffer: first size and the largest we try (16 MiB is
/// `UINT_MAX >> 8`, the limit of kernels before 5.2).
const LOG_START: usize = 64 * 1024;
const LOG_MAX: usize = 16 * 1024 * 1024;
/// `EAGAIN`: the verifier was interrupted by a signal; libbpf retries 5 times.
const EAGAIN_RETRIES: usize = 5;

/// A loaded program.
#[derive(Debug)]
pub struct Program {
    pub name: String,
    pub kind: ProgKind,
    fd: OwnedFd,
}

impl AsFd for Program {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// The kernel refused a program; carries the verifier's log.
#[derive(Debug)]
pub struct VerifierError {
    pub program: String,
    pub prog_type: ProgType,
    pub errno: Errno,
    pub log: String,
}

impl VerifierError {
    /// The line of the log that says why, usually the last non-empty one
    /// before the "processed N insns" summary.
    pub fn reason(&self) -> Option<&str> {
        self.log.lines().rev().map(str::trim).find(|l| {
            !l.is_empty() && !l.starts_with("processed ") && !l.starts_with("verification time")
        })
    }
}

impl fmt::Display for VerifierError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = self.prog_type.name();
        match (self.errno, self.reason()) {
            (Errno::EPERM, None) => write!(
                f,
                "the kernel refused to load {kind} program '{}' (EPERM, no verifier log): run as root, \
                 or raise the locked-memory limit (ulimit -l) on kernels before 5.11",
                self.program
            ),
            (errno, Some(reason)) => write!(
                f,
                "the verifier rejected {kind} program '{}' ({errno}): {reason}",
                self.program
            ),
            (errno, None) => write!(
                f,
                "the kernel refused to load {kind} program '{}': {} ({errno})",
                self.program,
                errno.desc()
            ),
        }
    }
}

impl std::error::Error for VerifierError {}

impl Program {
    /// Loads relocated instructions. On failure the error holds the log.
    pub fn load(
        name: &str,
        kind: ProgKind,
        insns: &[Insn],
        license: &CStr,
        kern_version: u32,
    ) -> Result<Program, VerifierError> {
        let attempt = |log: Option<(u32, &mut [u8])>| {
            let mut result = Err(SysError {
                cmd: "BPF_PROG_LOAD",
                errno: Errno::EAGAIN,
            });
            let mut log = log;
            for _ in 0..EAGAIN_RETRIES {
                result = sys::prog_load(ProgLoadArgs {
                    prog_type: kind.prog_type,
                    expected_attach_type: kind.expected_attach_type,
                    insns,
                    license,
                    kern_version,
                    name,
                    log: log.as_mut().map(|(level, buf)| (*level, &mut **buf)),
                });
                if !matches!(result, Err(e) if e.errno == Errno::EAGAIN) {
                    break;
                }
            }
            result
        };
        let first_errno = match attempt(None) {
            Ok(fd) => {
                return Ok(Program {
                    name: name.to_string(),
                    kind,
                    fd,
                });
            }
            Err(e) => e.errno,
        };
        // Load again with a log to learn why.
        let mut size = LOG_START;
        loop {
            let mut buf = vec![0u8; size];
            match attempt(Some((1, &mut buf))) {
                // Loaded this time (a transient failure): use it.
                Ok(fd) => {
                    return Ok(Program {
                        name: name.to_string(),
                        kind,
                        fd,
                    });
                }
                Err(e) if e.errno == Errno::ENOSPC && size < LOG_MAX => size *= 4,
                Err(e) => {
                    let errno = if e.errno == Errno::ENOSPC {
                        first_errno
                    } else {
                        e.errno
                    };
                    return Err(VerifierError {
                        program: name.to_string(),
                        prog_type: kind.prog_type,
                        errno,
                        log: sys::cstr_field(&buf).trim_end().to_string(),
                    });
                }
            }
        }
    }
}
