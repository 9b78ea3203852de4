//! Socket ioctls, options and calls that nix has no (complete) safe API
//! for, used by the traffic tool, the probes and the socket-API conformance
//! tool (`conformance/`).
//!
//! Each call passes the kernel a pointer to one live local of exactly the
//! type and size the command reads or writes, so no caller can hand it a
//! short buffer.

use std::os::fd::{AsRawFd, BorrowedFd};

use nix::errno::Errno;

/// `SIOCOUTQ` (= `TIOCOUTQ`): bytes in the send queue that the peer has not
/// acknowledged yet (sent or not).
const SIOCOUTQ: libc::Ioctl = libc::TIOCOUTQ;
/// `SIOCOUTQNSD`: bytes in the send queue not yet sent at all.
const SIOCOUTQNSD: libc::Ioctl = 0x894b;
/// `SIOCATMARK`: 1 when the next byte to read is the urgent mark.
const SIOCATMARK: libc::Ioctl = 0x8905;

/// An ioctl that writes one `c_int` result.
fn ioctl_int_out(fd: BorrowedFd<'_>, request: libc::Ioctl) -> nix::Result<libc::c_int> {
    let mut n: libc::c_int = 0;
    // SAFETY: every request passed here (FIONREAD, SIOCOUTQ, SIOCOUTQNSD,
    // SIOCATMARK; private to this module) writes exactly one c_int through
    // the pointer, which points to a live local of that type; `fd` is
    // borrowed for the call.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), request, &mut n as *mut libc::c_int) };
    Errno::result(r).map(|_| n)
}

/// `FIONREAD` (= `SIOCINQ`): bytes a read() would return now without
/// blocking (clamped at 0: 6.18 overflows past 2 GiB, docs/KERNEL-ISSUES.md).
pub fn fionread(fd: BorrowedFd<'_>) -> nix::Result<usize> {
    ioctl_int_out(fd, libc::FIONREAD).map(|n| n.max(0) as usize)
}

/// `SIOCOUTQ`: bytes the peer has not acknowledged.
pub fn siocoutq(fd: BorrowedFd<'_>) -> nix::Result<usize> {
    ioctl_int_out(fd, SIOCOUTQ).map(|n| n.max(0) as usize)
}

/// `SIOCOUTQNSD`: bytes not yet sent.
pub fn siocoutqnsd(fd: BorrowedFd<'_>) -> nix::Result<usize> {
    ioctl_int_out(fd, SIOCOUTQNSD).map(|n| n.max(0) as usize)
}

/// `SIOCATMARK`: whether the read position is at the urgent mark.
pub fn siocatmark(fd: BorrowedFd<'_>) -> nix::Result<bool> {
    ioctl_int_out(fd, SIOCATMARK).map(|n| n != 0)
}

/// `SO_RCVLOWAT`: the fewest bytes that make the socket readable (nix has
/// no sockopt for it).
pub fn set_rcvlowat(fd: BorrowedFd<'_>, bytes: i32) -> nix::Result<()> {
    let v: libc::c_int = bytes;
    // SAFETY: SO_RCVLOWAT reads one c_int; the pointer and length describe
    // a live local of that type; `fd` is borrowed for the call.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVLOWAT,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    Errno::result(r).map(drop)
}

/// `TCP_INFO`, and how many bytes of it this kernel filled in (older
/// kernels return a shorter struct: check a field's offset against it).
pub fn tcp_info(fd: BorrowedFd<'_>) -> nix::Result<(libc::tcp_info, usize)> {
    // SAFETY: tcp_info is plain old data; all zeroes is a valid value.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `info`, a live local
    // of that size, and stores the length written in `len`; `fd` is borrowed.
    let r = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        )
    };
    Errno::result(r).map(|_| (info, len as usize))
}

/// poll(2) on one descriptor, with the kernel's own event bits in and out
/// (`libc::POLLIN`, ...): nix's `PollFlags` drops the revents of a poll
/// that reports a bit it has no name for, `POLLRDHUP` among them. Returns
/// the revents (0 on timeout); `timeout_ms` < 0 waits forever.
pub fn poll_one(
    fd: BorrowedFd<'_>,
    events: libc::c_short,
    timeout_ms: i32,
) -> nix::Result<libc::c_short> {
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events,
        revents: 0,
    };
    // SAFETY: one pollfd, a live local, and nfds 1: the kernel reads and
    // writes exactly that struct; `fd` is borrowed for the call.
    let r = unsafe { libc::poll(&mut p, 1, timeout_ms) };
    Errno::result(r).map(|_| p.revents)
}

/// `SO_NETNS_COOKIE` (asm-generic/socket.h; 5.14): the cookie of the
/// network namespace the socket lives in, the value `bpf_get_netns_cookie`
/// returns for it. Not in the libc crate's Linux constants.
const SO_NETNS_COOKIE: libc::c_int = 71;

/// The netns cookie of the socket's namespace.
pub fn netns_cookie(fd: BorrowedFd<'_>) -> nix::Result<u64> {
    let mut cookie: u64 = 0;
    let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
    // SAFETY: SO_NETNS_COOKIE writes one u64 into `cookie`, a live local of
    // that size given with its length; `fd` is borrowed for the call.
    let r = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_NETNS_COOKIE,
            (&mut cookie as *mut u64).cast(),
            &mut len,
        )
    };
    Errno::result(r).map(|_| cookie)
}
