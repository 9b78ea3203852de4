//! Half-closes, closes and resets: end of file and the errors that tell a
//! writer its peer is gone.

use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::Result;
use nix::poll::PollFlags;
use nix::sys::socket::{MsgFlags, Shutdown, setsockopt, sockopt};

use super::{Case, Ctx, ms};
use crate::net::{
    POLLRDHUP, Pair, Sock, compare, flags_text, pattern, poll_once, poll_until, read_exact, res,
    send_all,
};
use crate::obs::Obs;

/// Every event a reader of a dying connection may see (POLLERR and POLLHUP
/// are always reported).
const WATCH: PollFlags = PollFlags::POLLIN.union(PollFlags::POLLOUT).union(POLLRDHUP);

fn recv_dontwait(sock: &Sock) -> String {
    let mut buf = [0u8; 256];
    res(sock.recv(&mut buf, MsgFlags::MSG_DONTWAIT))
}

pub const SHUTDOWN_WR: Case = Case {
    name: "shutdown_wr",
    does: "(10) client sends 100 B and shutdown(SHUT_WR); server reads to EOF, then sends 100 B \
           back and closes",
    same_when: "server sees POLLIN|POLLRDHUP, the 100 B then EOF; the client still gets the \
                server's 100 B, then EOF",
    run: shutdown_wr,
    cross: None,
};

fn shutdown_wr(ctx: &Ctx) -> Result<Obs> {
    let Pair { client, server } = ctx.pair()?;
    let up = pattern(8, 100);
    let down = pattern(9, 100);
    send_all(&client, &up)?;
    client.shutdown(Shutdown::Write)?;
    let hup = PollFlags::POLLIN | POLLRDHUP;
    let events = poll_until(&server, hup, hup, ctx.grace())?;
    let (got, end) = read_exact(&server, 101, ctx.grace())?;
    let mut o = Obs::default();
    o.fact("server_poll", flags_text(events))
        .fact("server_got", format!("{}+{end}", compare(&got, &up, "")))
        .fact("server_send", res(send_all(&server, &down)));
    drop(server);
    let (got, end) = read_exact(&client, 101, ctx.grace())?;
    o.fact("client_got", format!("{}+{end}", compare(&got, &down, "")));
    Ok(o)
}

pub const SHUTDOWN_RD: Case = Case {
    name: "shutdown_rd",
    does: "(10) client shutdown(SHUT_RD): recv on the empty queue, poll, server sends 50 B, recv \
           again, client sends 10 B",
    same_when: "every result matches. Linux TCP: recv returns 0 at once, poll says \
                POLLIN|POLLOUT|POLLRDHUP, the peer's later bytes are still queued and readable (no RST), \
                and the client can still send",
    run: shutdown_rd,
    cross: None,
};

fn shutdown_rd(ctx: &Ctx) -> Result<Obs> {
    let p = ctx.pair()?;
    p.client.shutdown(Shutdown::Read)?;
    p.client.set_recv_timeout(ctx.grace())?;
    let mut buf = [0u8; 256];
    let started = Instant::now();
    let empty = p.client.recv(&mut buf, MsgFlags::empty());
    let immediate = started.elapsed() < ctx.grace() / 2;
    let events = poll_once(&p.client, WATCH, Duration::ZERO)?;
    let sent = p.server.send(&pattern(10, 50), MsgFlags::empty());
    ctx.settle();
    let mut o = Obs::default();
    o.fact("recv_empty", res(empty))
        .fact("recv_immediate", immediate)
        .fact("poll", flags_text(events))
        .fact("server_send", res(sent))
        .fact("recv_after_peer_sent", recv_dontwait(&p.client))
        .fact(
            "client_send",
            res(p.client.send(b"0123456789", MsgFlags::empty())),
        );
    let (got, end) = read_exact(&p.server, 10, ctx.grace())?;
    o.fact("server_got", compare(&got, b"0123456789", &end));
    Ok(o)
}

/// The client's view of a peer that went away: events once the news
/// arrived (POLLHUP, bounded), then three socket calls in `order`.
fn after_peer_gone(ctx: &Ctx, client: &Sock, order: [&str; 3]) -> Result<Obs> {
    let events = poll_until(client, WATCH, PollFlags::POLLHUP, ctx.grace())?;
    let mut o = Obs::default();
    o.fact("poll", flags_text(events));
    for (i, op) in order.iter().enumerate() {
        let r = match *op {
            "send" => res(client.send(b"0123456789", MsgFlags::empty())),
            _ => recv_dontwait(client),
        };
        o.fact(&format!("{}_{op}", i + 1), r);
        ctx.settle();
    }
    Ok(o)
}

/// The server closes while 100 B from the client are unread (TCP answers
/// with RST).
fn close_unread(ctx: &Ctx, order: [&str; 3]) -> Result<Obs> {
    let Pair { client, server } = ctx.pair()?;
    send_all(&client, &pattern(11, 100))?;
    poll_once(&server, PollFlags::POLLIN, ctx.grace())?;
    ctx.settle();
    drop(server);
    after_peer_gone(ctx, &client, order)
}

pub const CLOSE_UNREAD_SEND: Case = Case {
    name: "close_unread_send",
    does: "(11) server closes with the client's 100 B unread; client polls, then send, recv, send",
    same_when: "every result matches (TCP: RST: POLLERR|POLLHUP, ECONNRESET, EOF, EPIPE)",
    run: |ctx| close_unread(ctx, ["send", "recv", "send"]),
    cross: None,
};

pub const CLOSE_UNREAD_RECV: Case = Case {
    name: "close_unread_recv",
    does: "(11) the same, the client calling recv first: recv, send, recv",
    same_when: "every result matches (TCP: ECONNRESET, EPIPE, EOF)",
    run: |ctx| close_unread(ctx, ["recv", "send", "recv"]),
    cross: None,
};

pub const RST_LINGER0: Case = Case {
    name: "rst_linger0",
    does: "(extra) 10 B client->server, read; server closes with SO_LINGER {on, 0} (an RST, \
           nothing unread); client polls, then recv, send, recv",
    same_when: "every result matches (TCP: POLLERR|POLLHUP, ECONNRESET, EPIPE, EOF)",
    run: rst_linger0,
    cross: None,
};

fn rst_linger0(ctx: &Ctx) -> Result<Obs> {
    let Pair { client, server } = ctx.pair()?;
    // Some data first, which also shows the path the connection is on.
    let data = pattern(20, 10);
    send_all(&client, &data)?;
    let (got, end) = read_exact(&server, data.len(), ctx.grace())?;
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    setsockopt(&server, sockopt::Linger, &linger)?;
    drop(server);
    let mut o = after_peer_gone(ctx, &client, ["recv", "send", "recv"])?;
    o.fact("data_before", compare(&got, &data, &end));
    Ok(o)
}

pub const HALFCLOSE_READER: Case = Case {
    name: "halfclose_reader",
    does: "(15) a thread blocks in recv() on a blocking socket; another thread shutdown(SHUT_WR)s \
           it at 100 ms; the peer sends 100 B at 300 ms",
    same_when: "the reader returns the same (TCP: the 100 B; it keeps waiting through the \
                half-close)",
    run: halfclose_reader,
    cross: None,
};

fn halfclose_reader(ctx: &Ctx) -> Result<Obs> {
    let Pair { client, server } = ctx.pair()?;
    let client = Arc::new(client);
    let (tx, rx) = mpsc::channel();
    let reader = Arc::clone(&client);
    let started = Instant::now();
    // Not a scoped thread: if the reader never returns, the case still
    // reports (the case process exits after printing).
    std::thread::spawn(move || {
        let mut buf = [0u8; 256];
        let r = reader.recv(&mut buf, MsgFlags::empty());
        let _ = tx.send((res(r), started.elapsed()));
    });
    std::thread::sleep(Duration::from_millis(100));
    client.shutdown(Shutdown::Write)?;
    std::thread::sleep(Duration::from_millis(300).saturating_sub(started.elapsed()));
    send_all(&server, &pattern(12, 100))?;
    let mut o = Obs::default();
    match rx.recv_timeout(ctx.grace() * 2) {
        Ok((r, when)) => o.fact("reader", r).info("returned_ms", ms(when)),
        Err(_) => o.fact("reader", "still-blocked"),
    };
    Ok(o)
}

pub const CLOSE_AFTER_WRITE: Case = Case {
    name: "close_after_write",
    does: "(extra) client writes 1 MiB and closes at once; the server reads concurrently",
    same_when: "the server gets all 1 MiB intact, then EOF",
    run: close_after_write,
    cross: None,
};

fn close_after_write(ctx: &Ctx) -> Result<Obs> {
    let Pair { client, server } = ctx.pair()?;
    let data = pattern(13, 1 << 20);
    let (sent, (got, end)) = std::thread::scope(|s| -> Result<_> {
        let writer = s.spawn(|| {
            let r = send_all(&client, &data);
            drop(client);
            r
        });
        let read = read_exact(&server, data.len() + 1, ctx.grace() * 8)?;
        let sent = writer
            .join()
            .map_err(|_| anyhow::anyhow!("writer thread panicked"))?;
        Ok((sent, read))
    })?;
    let mut o = Obs::default();
    o.fact("sent", res(sent))
        .fact("server_got", format!("{}+{end}", compare(&got, &data, "")));
    Ok(o)
}
