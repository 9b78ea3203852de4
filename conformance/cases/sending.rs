//! Backpressure: what a writer sees when its peer does not read.

use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use anyhow::Result;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};
use nix::sys::socket::{MsgFlags, getsockopt, sockopt};
use rawload_loader::sys::sock::{siocoutq, siocoutqnsd};

use super::{Case, Ctx, ms, timing};
use crate::net::{
    Fill, FillEnd, Pair, PairOpts, drain, epoll_wait_text, fill, pattern, res, send_all,
};
use crate::obs::Obs;

/// A fill of a non-reading peer: non-blocking, at most `ctx.bound` bytes.
fn fill_nonblocking(ctx: &Ctx, p: &Pair) -> Result<Fill> {
    p.client.set_nonblocking(true)?;
    let f = fill(&p.client, MsgFlags::empty(), ctx.bound, ctx.grace() * 4);
    p.client.set_nonblocking(false)?;
    Ok(f)
}

/// The reader catches up: every accepted byte must arrive, intact.
fn drained(ctx: &Ctx, p: &Pair, f: &Fill) -> Result<String> {
    Ok(drain(&p.server, f.accepted, ctx.grace() * 8)?.verdict(f))
}

pub const NONBLOCK_FILL: Case = Case {
    name: "nonblock_fill",
    does: "(1) non-blocking send() to a peer that does not read until EAGAIN; then the peer drains",
    same_when: "both get EAGAIN within --bound bytes and every accepted byte arrives intact; \
                the counts (accepted) are reported, not compared",
    run: nonblock_fill,
    cross: None,
};

fn nonblock_fill(ctx: &Ctx) -> Result<Obs> {
    let p = ctx.pair()?;
    let f = fill_nonblocking(ctx, &p)?;
    let mut o = Obs::default();
    o.fact("send", f.end.text())
        .info("accepted", f.accepted)
        .fact("drained", drained(ctx, &p, &f)?);
    Ok(o)
}

pub const SNDTIMEO: Case = Case {
    name: "sndtimeo",
    does: "(2) blocking send() with SO_SNDTIMEO 200 ms to a peer that does not read",
    same_when: "both end with EAGAIN within --bound bytes, the last send() taking 0.9-1.5x the \
                timeout (+100 ms scaled); elapsed and accepted are reported",
    run: sndtimeo,
    cross: None,
};

fn sndtimeo(ctx: &Ctx) -> Result<Obs> {
    let p = ctx.pair()?;
    let timeout = Duration::from_millis(200);
    p.client.set_send_timeout(timeout)?;
    let f = fill(&p.client, MsgFlags::empty(), ctx.bound, ctx.grace() * 4);
    let mut o = Obs::default();
    o.fact("send", f.end.text());
    match f.end {
        FillEnd::Eagain => o.fact("timing", timing(ctx, f.last_call, timeout)),
        _ => o.fact("timing", "n/a"),
    };
    o.info("last_send_ms", ms(f.last_call))
        .info("accepted", f.accepted);
    Ok(o)
}

pub const DONTWAIT: Case = Case {
    name: "dontwait",
    does: "(3) send(MSG_DONTWAIT) on a blocking socket to a peer that does not read, then once more",
    same_when: "both fill to EAGAIN within --bound bytes and the next MSG_DONTWAIT send returns \
                EAGAIN at once (under 50 ms scaled)",
    run: dontwait,
    cross: None,
};

fn dontwait(ctx: &Ctx) -> Result<Obs> {
    let p = ctx.pair()?;
    let f = fill(
        &p.client,
        MsgFlags::MSG_DONTWAIT,
        ctx.bound,
        ctx.grace() * 4,
    );
    let started = Instant::now();
    let again = p.client.send(b"x", MsgFlags::MSG_DONTWAIT);
    let immediate = started.elapsed() < ctx.scaled(50);
    let mut o = Obs::default();
    o.fact("send", f.end.text())
        .fact("again", res(again))
        .fact("again_immediate", immediate)
        .info("accepted", f.accepted);
    Ok(o)
}

const SMALL_BUF: usize = 16 * 1024;

pub const SMALL_BUFFERS: Case = Case {
    name: "small_buffers",
    does: "(4) SO_SNDBUF and SO_RCVBUF 16 KiB on both ends before connect/listen; non-blocking \
           fill until EAGAIN; the peer drains",
    same_when: "both get EAGAIN, every byte arrives, and rawload's count is within 4x of TCP's \
                either way (TCP's own count moves with skb overhead; 4x keeps the order of \
                magnitude the application asked for)",
    run: small_buffers,
    cross: Some(within_4x),
};

fn small_buffers(ctx: &Ctx) -> Result<Obs> {
    let opts = PairOpts {
        bufs: Some(SMALL_BUF),
        ..PairOpts::default()
    };
    let p = Pair::new(opts, ctx.grace())?;
    let f = fill_nonblocking(ctx, &p)?;
    let mut o = Obs::default();
    o.fact("send", f.end.text())
        .info("accepted", f.accepted)
        .fact("drained", drained(ctx, &p, &f)?)
        .info("sndbuf", getsockopt(&p.client, sockopt::SndBuf)?)
        .info("rcvbuf", getsockopt(&p.server, sockopt::RcvBuf)?);
    Ok(o)
}

/// small_buffers: rawload's accepted count within [TCP/4, 4 TCP].
pub fn within_4x(tcp: &Obs, rawload: &Obs) -> Option<String> {
    let (t, r) = (tcp.num("accepted")?, rawload.num("accepted")?);
    let ok = r <= t.saturating_mul(4) && r.saturating_mul(4) >= t;
    (!ok).then(|| format!("accepted({:.1}x)", r as f64 / t.max(1) as f64))
}

pub const SIOCOUTQ_DELIVERED: Case = Case {
    name: "siocoutq_delivered",
    does: "(7) SIOCOUTQ on the sender after 64 KiB that the non-reading peer's buffer can hold",
    same_when: "SIOCOUTQ drops to 0 in both (TCP: everything acknowledged by the peer's kernel; \
                redirected: everything already in the peer's queue)",
    run: siocoutq_delivered,
    cross: None,
};

fn siocoutq_delivered(ctx: &Ctx) -> Result<Obs> {
    let p = ctx.pair()?;
    let sent = send_all(&p.client, &pattern(2, 64 * 1024));
    let deadline = Instant::now() + ctx.grace();
    let mut outq = siocoutq(p.client.as_fd())?;
    while outq != 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(2));
        outq = siocoutq(p.client.as_fd())?;
    }
    let mut o = Obs::default();
    o.fact("sent", res(sent))
        .fact("outq", zero_or_not(outq))
        .info("outq_bytes", outq);
    Ok(o)
}

fn zero_or_not(n: usize) -> &'static str {
    match n {
        0 => "0",
        _ => "nonzero",
    }
}

pub const SIOCOUTQ_FULL: Case = Case {
    name: "siocoutq_full",
    does: "(7) SIOCOUTQ and SIOCOUTQNSD on the sender after a non-blocking fill of a non-reading peer",
    same_when: "SIOCOUTQ is nonzero in both (TCP holds what the peer's window refused); the \
                values are reported, not compared",
    run: siocoutq_full,
    cross: None,
};

fn siocoutq_full(ctx: &Ctx) -> Result<Obs> {
    let p = ctx.pair()?;
    let f = fill_nonblocking(ctx, &p)?;
    ctx.settle();
    let outq = siocoutq(p.client.as_fd())?;
    let mut o = Obs::default();
    o.fact("outq", zero_or_not(outq))
        .info("outq_bytes", outq)
        .info("outqnsd_bytes", siocoutqnsd(p.client.as_fd())?)
        .info("send", f.end.text())
        .info("accepted", f.accepted);
    Ok(o)
}

pub const EPOLLOUT: Case = Case {
    name: "epollout",
    does: "(extra) edge-triggered EPOLLOUT: none while the non-reading peer is full, one after \
           it drains",
    same_when: "the fill ends with EAGAIN, no EPOLLOUT within 200 ms while full, EPOLLOUT after \
                the drain",
    run: epollout,
    cross: None,
};

fn epollout(ctx: &Ctx) -> Result<Obs> {
    let p = ctx.pair()?;
    let f = fill_nonblocking(ctx, &p)?;
    let ep = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
    ep.add(
        &p.client,
        EpollEvent::new(EpollFlags::EPOLLOUT | EpollFlags::EPOLLET, 1),
    )?;
    let while_full = epoll_wait_text(&ep, Duration::from_millis(200))?;
    let drained = drained(ctx, &p, &f)?;
    let after = epoll_wait_text(&ep, ctx.grace())?;
    let mut o = Obs::default();
    o.fact("send", f.end.text())
        .fact("while_full", while_full)
        .fact("drained", drained)
        .fact("after_drain", after)
        .info("accepted", f.accepted);
    Ok(o)
}
