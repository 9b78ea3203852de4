//! What a reader sees: bytes, readiness, peeking, counts, urgent data.

use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use anyhow::Result;
use nix::poll::PollFlags;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};
use nix::sys::select::{FdSet, select};
use nix::sys::socket::{MsgFlags, setsockopt, sockopt};
use nix::sys::time::TimeVal;
use rawload_loader::sys::sock::{fionread, set_rcvlowat, siocatmark};

use super::{Case, Ctx, ms, timing};
use crate::net::{
    Pair, PairOpts, Sock, compare, epoll_wait_text, flags_text, pattern, poll_once, poll_until,
    read_exact, res, send_all,
};
use crate::obs::Obs;

pub const BASIC: Case = Case {
    name: "basic",
    does: "(baseline) 256 KiB client->server over 127.0.0.1, echoed back",
    same_when: "both directions arrive intact",
    run: |ctx| echo(ctx, false),
    cross: None,
};

pub const BASIC_V6: Case = Case {
    name: "basic_v6",
    does: "(baseline) the same over ::1",
    same_when: "both directions arrive intact",
    run: |ctx| echo(ctx, true),
    cross: None,
};

fn echo(ctx: &Ctx, ipv6: bool) -> Result<Obs> {
    let p = Pair::new(
        PairOpts {
            ipv6,
            ..PairOpts::default()
        },
        ctx.grace(),
    )?;
    let data = pattern(3, 256 * 1024);
    let limit = ctx.grace() * 4;
    let (there, back) = std::thread::scope(|s| -> Result<(String, String)> {
        let client = s.spawn(|| -> Result<String> {
            send_all(&p.client, &data)?;
            let (got, end) = read_exact(&p.client, data.len(), limit)?;
            Ok(compare(&got, &data, &end))
        });
        let (got, end) = read_exact(&p.server, data.len(), limit)?;
        let there = compare(&got, &data, &end);
        send_all(&p.server, &got)?;
        let back = client
            .join()
            .map_err(|_| anyhow::anyhow!("client thread panicked"))??;
        Ok((there, back))
    })?;
    let mut o = Obs::default();
    o.fact("client_to_server", there)
        .fact("server_to_client", back);
    Ok(o)
}

pub const SEND_BEFORE_ACCEPT: Case = Case {
    name: "send_before_accept",
    does: "(extra) the client writes 64 KiB in 1 KiB writes right after connect(), before the \
           server accept()s; then the server reads",
    same_when: "the bytes arrive intact and in order (the window in which only the client's end \
                of a connection is established must not reorder them)",
    run: send_before_accept,
    cross: None,
};

fn send_before_accept(ctx: &Ctx) -> Result<Obs> {
    let pending = Pair::connect(PairOpts::default(), ctx.grace())?;
    let data = pattern(21, 64 * 1024);
    let sent = data
        .chunks(1024)
        .try_fold(0, |n, c| send_all(&pending.client, c).map(|k| n + k));
    let p = pending.accept(ctx.grace())?;
    let (got, end) = read_exact(&p.server, data.len(), ctx.grace() * 4)?;
    let mut o = Obs::default();
    o.fact("sent", res(sent))
        .fact("received", compare(&got, &data, &end));
    Ok(o)
}

pub const WRITEV_READV: Case = Case {
    name: "writev_readv",
    does: "(extra) writev() of 64 iovecs of 1..4096 B (4 times), readv() into 3 buffers",
    same_when: "every writev and readv moves all bytes, intact and in order",
    run: writev_readv,
    cross: None,
};

fn writev_readv(ctx: &Ctx) -> Result<Obs> {
    let p = ctx.pair()?;
    // 64 pieces per writev with sizes 1, 65, 129, ... (at most 4033 B).
    let sizes: Vec<usize> = (0..64).map(|i| 1 + (i * 64) % 4096).collect();
    let per_call: usize = sizes.iter().sum();
    let data = pattern(22, per_call * 4);
    let mut written = Vec::new();
    for call in data.chunks(per_call) {
        let mut pieces = Vec::new();
        let mut at = 0;
        for &n in &sizes {
            pieces.push(std::io::IoSlice::new(&call[at..at + n]));
            at += n;
        }
        written.push(res(nix::sys::uio::writev(&p.client, &pieces)));
    }
    let got = readv_all(&p.server, data.len(), ctx.grace() * 4)?;
    let mut o = Obs::default();
    o.fact("writev", written.join("/"))
        .fact("readv", compare(&got, &data, ""));
    Ok(o)
}

/// readv() into three buffers of different sizes until `n` bytes, end of
/// file or `limit`.
fn readv_all(sock: &Sock, n: usize, limit: Duration) -> Result<Vec<u8>> {
    let mut got = Vec::new();
    let deadline = Instant::now() + limit;
    while got.len() < n && Instant::now() < deadline {
        if poll_once(sock, PollFlags::POLLIN, limit)?.is_empty() {
            continue;
        }
        let (mut a, mut b, mut c) = ([0u8; 1000], [0u8; 3000], [0u8; 70000]);
        let mut bufs = [
            std::io::IoSliceMut::new(&mut a),
            std::io::IoSliceMut::new(&mut b),
            std::io::IoSliceMut::new(&mut c),
        ];
        let k = nix::sys::uio::readv(sock, &mut bufs)?;
        if k == 0 {
            break;
        }
        got.extend_from_slice(&[&a[..], &b[..], &c[..]].concat()[..k]);
    }
    Ok(got)
}

pub const WAITALL: Case = Case {
    name: "waitall",
    does: "(5) server sends 10 B, sleeps 300 ms, sends 10 B; client recv(20, MSG_WAITALL)",
    same_when: "recv returns the same count and bytes (TCP: all 20 in one call)",
    run: waitall,
    cross: None,
};

fn waitall(ctx: &Ctx) -> Result<Obs> {
    let p = ctx.pair()?;
    let gap = Duration::from_millis(300);
    p.client.set_recv_timeout(gap + ctx.grace() * 2)?;
    let mut buf = [0u8; 20];
    let started = Instant::now();
    let r = std::thread::scope(|s| {
        s.spawn(|| {
            let _ = p.server.send(b"0123456789", MsgFlags::empty());
            std::thread::sleep(gap);
            let _ = p.server.send(b"abcdefghij", MsgFlags::empty());
        });
        p.client.recv(&mut buf, MsgFlags::MSG_WAITALL)
    });
    let elapsed = started.elapsed();
    let text = match r {
        Ok(n) => String::from_utf8_lossy(&buf[..n]).into_owned(),
        Err(_) => String::new(),
    };
    let mut o = Obs::default();
    o.fact("recv", res(r))
        .fact("bytes", text)
        .info("elapsed_ms", ms(elapsed));
    Ok(o)
}

/// Waits until `sock` is readable (bounded), then lets the rest land.
fn await_data(ctx: &Ctx, sock: &Sock) -> Result<String> {
    let got = poll_once(sock, PollFlags::POLLIN, ctx.grace())?;
    ctx.settle();
    Ok(flags_text(got))
}

pub const PEEK: Case = Case {
    name: "peek",
    does: "(6) 100 B arrive; MSG_PEEK 100, read 40, MSG_PEEK again, read the rest, MSG_PEEK an \
           empty queue",
    same_when: "every count, every byte and the final EAGAIN match (a peek never consumes)",
    run: peek,
    cross: None,
};

fn peek(ctx: &Ctx) -> Result<Obs> {
    let p = ctx.pair()?;
    let data = pattern(4, 100);
    send_all(&p.server, &data)?;
    let ready = await_data(ctx, &p.client)?;
    let mut buf = [0u8; 200];
    let mut o = Obs::default();
    o.fact("ready", ready);
    let mut step = |name: &str, len: usize, flags: MsgFlags, from: usize| -> Result<()> {
        let r = p
            .client
            .recv(&mut buf[..len], flags | MsgFlags::MSG_DONTWAIT);
        let bytes = match r {
            Ok(n) => compare(&buf[..n], &data[from..(from + n).min(data.len())], ""),
            Err(_) => "-".into(),
        };
        o.fact(name, res(r)).fact(&format!("{name}_bytes"), bytes);
        Ok(())
    };
    step("peek1", 100, MsgFlags::MSG_PEEK, 0)?;
    step("read1", 40, MsgFlags::empty(), 0)?;
    step("peek2", 100, MsgFlags::MSG_PEEK, 40)?;
    step("read2", 100, MsgFlags::empty(), 40)?;
    step("peek_empty", 1, MsgFlags::MSG_PEEK, 100)?;
    Ok(o)
}

pub const FIONREAD: Case = Case {
    name: "fionread",
    does: "(7) FIONREAD (SIOCINQ) once 1000 B are readable (poll first), after reading 300, \
           after reading all",
    same_when: "the three values match (1000, 700, 0 over TCP)",
    run: fionread_case,
    cross: None,
};

fn fionread_case(ctx: &Ctx) -> Result<Obs> {
    let p = ctx.pair()?;
    let data = pattern(5, 1000);
    send_all(&p.server, &data)?;
    let ready = await_data(ctx, &p.client)?;
    let fd = p.client.as_fd();
    let mut o = Obs::default();
    o.fact("ready", ready).fact("fionread", res(fionread(fd)));
    let (_, end) = read_exact(&p.client, 300, ctx.grace())?;
    o.fact("read_300", end)
        .fact("fionread_after_300", res(fionread(fd)));
    let (_, end) = read_exact(&p.client, 700, ctx.grace())?;
    o.fact("read_rest", end)
        .fact("fionread_after_all", res(fionread(fd)));
    Ok(o)
}

pub const RCVLOWAT: Case = Case {
    name: "rcvlowat",
    does: "(8) SO_RCVLOWAT 100 on the reader; 10 B arrive: poll 200 ms; 100 B more: poll again",
    same_when: "no POLLIN below the low-water mark, POLLIN above it, all 110 B intact",
    run: rcvlowat,
    cross: None,
};

fn rcvlowat(ctx: &Ctx) -> Result<Obs> {
    let p = ctx.pair()?;
    set_rcvlowat(p.client.as_fd(), 100)?;
    let data = pattern(6, 110);
    send_all(&p.server, &data[..10])?;
    ctx.settle();
    let below = poll_once(&p.client, PollFlags::POLLIN, Duration::from_millis(200))?;
    send_all(&p.server, &data[10..])?;
    let above = poll_once(&p.client, PollFlags::POLLIN, ctx.grace())?;
    let (got, end) = read_exact(&p.client, 110, ctx.grace())?;
    let mut o = Obs::default();
    o.fact("below_lowat", flags_text(below))
        .fact("above_lowat", flags_text(above))
        .fact("data", compare(&got, &data, &end));
    Ok(o)
}

pub const RCVTIMEO: Case = Case {
    name: "rcvtimeo",
    does: "(extra) blocking recv() with SO_RCVTIMEO 200 ms and nothing sent; then 10 B arrive",
    same_when: "both return EAGAIN within 0.9-1.5x the timeout (+100 ms scaled), then the 10 B",
    run: rcvtimeo,
    cross: None,
};

fn rcvtimeo(ctx: &Ctx) -> Result<Obs> {
    let p = ctx.pair()?;
    let timeout = Duration::from_millis(200);
    p.client.set_recv_timeout(timeout)?;
    let mut buf = [0u8; 16];
    let started = Instant::now();
    let r = p.client.recv(&mut buf, MsgFlags::empty());
    let elapsed = started.elapsed();
    // Then data, which also shows the path the connection is on.
    let data = pattern(19, 10);
    send_all(&p.server, &data)?;
    let (got, end) = read_exact(&p.client, data.len(), ctx.grace())?;
    let mut o = Obs::default();
    o.fact("recv", res(r))
        .fact("timing", timing(ctx, elapsed, timeout))
        .info("elapsed_ms", ms(elapsed))
        .fact("then", compare(&got, &data, &end));
    Ok(o)
}

pub const EPOLL_ET: Case = Case {
    name: "epoll_et",
    does: "(extra) edge-triggered EPOLLIN: 100 B arrive, read 50, wait 200 ms, 10 B more, read all",
    same_when: "one event per arrival, none for data already signalled, 60 B left at the end",
    run: epoll_et,
    cross: None,
};

fn epoll_et(ctx: &Ctx) -> Result<Obs> {
    let p = ctx.pair()?;
    let ep = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
    ep.add(
        &p.client,
        EpollEvent::new(EpollFlags::EPOLLIN | EpollFlags::EPOLLET, 1),
    )?;
    let data = pattern(7, 110);
    let mut o = Obs::default();
    send_all(&p.server, &data[..100])?;
    o.fact("first", epoll_wait_text(&ep, ctx.grace())?);
    ctx.settle();
    let mut buf = [0u8; 50];
    o.fact(
        "read50",
        res(p.client.recv(&mut buf, MsgFlags::MSG_DONTWAIT)),
    );
    o.fact(
        "after_partial_read",
        epoll_wait_text(&ep, Duration::from_millis(200))?,
    );
    send_all(&p.server, &data[100..])?;
    o.fact("after_new_data", epoll_wait_text(&ep, ctx.grace())?);
    let (got, end) = read_exact(&p.client, 60, ctx.grace())?;
    o.fact("rest", compare(&got, &data[50..], &end));
    Ok(o)
}

/// Sends "ab" normally, then "c" with MSG_OOB.
fn send_urgent(p: &Pair) -> Result<()> {
    send_all(&p.server, b"ab")?;
    p.server.send(b"c", MsgFlags::MSG_OOB)?;
    Ok(())
}

/// Whether select() reports an exceptional condition on `sock` now.
fn select_except(sock: &Sock) -> Result<bool> {
    let mut except = FdSet::new();
    except.insert(sock.as_fd());
    let mut zero = TimeVal::new(0, 0);
    let n = select(None, None, None, Some(&mut except), Some(&mut zero))?;
    Ok(n > 0 && except.contains(sock.as_fd()))
}

/// recv() as text: the bytes, or the errno.
fn recv_text(sock: &Sock, len: usize, flags: MsgFlags) -> String {
    let mut buf = vec![0u8; len];
    match sock.recv(&mut buf, flags | MsgFlags::MSG_DONTWAIT) {
        Ok(n) => format!("\"{}\"", String::from_utf8_lossy(&buf[..n])),
        Err(e) => format!("{e:?}"),
    }
}

pub const OOB: Case = Case {
    name: "oob",
    does: "(9) \"ab\" then \"c\" with MSG_OOB: POLLPRI, select() exception, recv(MSG_OOB), \
           SIOCATMARK before and after reading \"ab\"",
    same_when: "every observation matches (TCP: POLLPRI, exception, \"c\", mark 0 then 1, \"ab\")",
    run: oob,
    cross: None,
};

fn oob(ctx: &Ctx) -> Result<Obs> {
    let p = ctx.pair()?;
    send_urgent(&p)?;
    let all = PollFlags::POLLIN | PollFlags::POLLPRI;
    let events = poll_until(&p.client, all, all, ctx.grace())?;
    let mut o = Obs::default();
    o.fact("poll", flags_text(events))
        .fact("select_except", select_except(&p.client)?)
        .fact("oob", recv_text(&p.client, 1, MsgFlags::MSG_OOB))
        .fact(
            "atmark_before",
            res(siocatmark(p.client.as_fd()).map(usize::from)),
        )
        .fact("normal", recv_text(&p.client, 100, MsgFlags::empty()))
        .fact(
            "atmark_after",
            res(siocatmark(p.client.as_fd()).map(usize::from)),
        )
        .fact("then", recv_text(&p.client, 100, MsgFlags::empty()));
    Ok(o)
}

pub const OOB_INLINE: Case = Case {
    name: "oob_inline",
    does: "(9) the same with SO_OOBINLINE on the reader: the urgent byte arrives in the stream",
    same_when: "every observation matches (TCP: POLLPRI, \"ab\" up to the mark, mark 1, \"c\", \
                recv(MSG_OOB) EINVAL)",
    run: oob_inline,
    cross: None,
};

fn oob_inline(ctx: &Ctx) -> Result<Obs> {
    let p = ctx.pair()?;
    setsockopt(&p.client, sockopt::OobInline, &true)?;
    send_urgent(&p)?;
    let all = PollFlags::POLLIN | PollFlags::POLLPRI;
    let events = poll_until(&p.client, all, all, ctx.grace())?;
    let mut o = Obs::default();
    o.fact("poll", flags_text(events))
        .fact("first", recv_text(&p.client, 100, MsgFlags::empty()))
        .fact("atmark", res(siocatmark(p.client.as_fd()).map(usize::from)))
        .fact("second", recv_text(&p.client, 100, MsgFlags::empty()))
        .fact("oob_flag", recv_text(&p.client, 1, MsgFlags::MSG_OOB));
    Ok(o)
}
