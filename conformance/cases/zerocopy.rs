//! sendfile(2) and splice(2) in both directions.

use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use nix::errno::Errno;
use nix::fcntl::{OFlag, SpliceFFlags, splice};
use nix::poll::PollFlags;
use nix::sys::memfd::{MFdFlags, memfd_create};
use nix::sys::sendfile::sendfile;
use nix::sys::socket::{MsgFlags, Shutdown};

use super::{Case, Ctx};
use crate::net::{CHUNK, Pair, Sock, compare, pattern, poll_once, read_exact, res, send_all};
use crate::obs::Obs;

/// A memfd holding `data`.
fn memfd_with(data: &[u8]) -> Result<OwnedFd> {
    let fd = memfd_create("rawload-conformance", MFdFlags::MFD_CLOEXEC).context("memfd_create")?;
    let mut done = 0;
    while done < data.len() {
        done +=
            nix::sys::uio::pwrite(&fd, &data[done..], done as i64).context("filling the memfd")?;
    }
    Ok(fd)
}

/// sendfile()s `len` bytes of `file` from offset 0; the bytes sent and how
/// it ended (`complete` or the errno).
fn sendfile_all(sock: &Sock, file: &OwnedFd, len: usize) -> (usize, String) {
    let mut offset: libc::off_t = 0;
    while (offset as usize) < len {
        let left = (len - offset as usize).min(1 << 20);
        match sendfile(sock.as_fd(), file, Some(&mut offset), left) {
            Ok(0) => return (offset as usize, "sendfile-returned-0".into()),
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => return (offset as usize, format!("{e:?}")),
        }
    }
    (offset as usize, "complete".into())
}

pub const SENDFILE: Case = Case {
    name: "sendfile",
    does: "(12) sendfile(2) of 1 MiB from a memfd into the socket; the peer reads",
    same_when: "sendfile completes and the bytes arrive intact",
    run: sendfile_case,
    cross: None,
};

fn sendfile_case(ctx: &Ctx) -> Result<Obs> {
    let p = ctx.pair()?;
    let data = pattern(14, 1 << 20);
    let file = memfd_with(&data)?;
    let ((_, end), (got, read_end)) = std::thread::scope(|s| -> Result<_> {
        let sender = s.spawn(|| sendfile_all(&p.client, &file, data.len()));
        let read = read_exact(&p.server, data.len(), ctx.grace() * 8)?;
        let sent = sender
            .join()
            .map_err(|_| anyhow::anyhow!("sender thread panicked"))?;
        Ok((sent, read))
    })?;
    let mut o = Obs::default();
    o.fact("sendfile", end)
        .fact("received", compare(&got, &data, &read_end));
    Ok(o)
}

pub const SPLICE_WRITE: Case = Case {
    name: "splice_write",
    does: "(12) splice(2) pipe -> socket, 1 MiB in 64 KiB pipe loads; the peer read()s",
    same_when: "every splice succeeds and the bytes arrive intact",
    run: splice_write,
    cross: None,
};

/// Writes `data` through a pipe into `sock` with splice(); how it ended.
fn splice_into(sock: &Sock, data: &[u8]) -> Result<String> {
    let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
    for chunk in data.chunks(CHUNK) {
        let mut written = 0;
        while written < chunk.len() {
            written += nix::unistd::write(&w, &chunk[written..])?;
        }
        let mut moved = 0;
        while moved < chunk.len() {
            match splice(
                &r,
                None,
                sock,
                None,
                chunk.len() - moved,
                SpliceFFlags::SPLICE_F_MOVE,
            ) {
                Ok(0) => return Ok("splice-returned-0".into()),
                Ok(n) => moved += n,
                Err(Errno::EINTR) => {}
                Err(e) => return Ok(format!("{e:?}")),
            }
        }
    }
    Ok("complete".into())
}

fn splice_write(ctx: &Ctx) -> Result<Obs> {
    let p = ctx.pair()?;
    let data = pattern(15, 1 << 20);
    let (end, (got, read_end)) = std::thread::scope(|s| -> Result<_> {
        let sender = s.spawn(|| splice_into(&p.client, &data));
        let read = read_exact(&p.server, data.len(), ctx.grace() * 8)?;
        let end = sender
            .join()
            .map_err(|_| anyhow::anyhow!("sender thread panicked"))??;
        Ok((end, read))
    })?;
    let mut o = Obs::default();
    o.fact("splice", end)
        .fact("received", compare(&got, &data, &read_end));
    Ok(o)
}

pub const SPLICE_READ: Case = Case {
    name: "splice_read",
    does: "(12) splice(2) socket -> pipe: the peer sends 256 KiB and shutdown(SHUT_WR)s; the \
           reader splices (non-blocking, at most 2 s scaled)",
    same_when: "all 256 KiB arrive intact, then EOF (known today under rawload: splice never \
                sees redirected bytes, docs/KERNEL-ISSUES.md 4)",
    run: splice_read,
    cross: None,
};

/// Reads `sock` through a pipe with splice() until EOF, an error or
/// `limit`; the bytes and how it ended.
fn splice_from(sock: &Sock, limit: Duration) -> Result<(Vec<u8>, String)> {
    let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)?;
    let deadline = Instant::now() + limit;
    let mut got = Vec::new();
    let mut buf = vec![0u8; CHUNK];
    let flags = SpliceFFlags::SPLICE_F_NONBLOCK | SpliceFFlags::SPLICE_F_MOVE;
    loop {
        if Instant::now() > deadline {
            return Ok((got, "timeout".into()));
        }
        match splice(sock, None, &w, None, CHUNK, flags) {
            Ok(0) => return Ok((got, "EOF".into())),
            Ok(n) => {
                let mut left = n;
                while left > 0 {
                    let k = nix::unistd::read(&r, &mut buf[..left.min(CHUNK)])?;
                    got.extend_from_slice(&buf[..k]);
                    left -= k;
                }
            }
            Err(Errno::EAGAIN) => {
                poll_once(sock, PollFlags::POLLIN, Duration::from_millis(10))?;
                // POLLIN with nothing to splice (redirected bytes) must not spin.
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(Errno::EINTR) => {}
            Err(e) => return Ok((got, format!("{e:?}"))),
        }
    }
}

fn splice_read(ctx: &Ctx) -> Result<Obs> {
    let p = ctx.pair()?;
    let data = pattern(16, 256 * 1024);
    let limit = ctx.scaled(2000);
    let (sent, (got, end)) = std::thread::scope(|s| -> Result<_> {
        let sender = s.spawn(|| {
            let r = send_all(&p.client, &data);
            let _ = p.client.shutdown(Shutdown::Write);
            r
        });
        let read = splice_from(&p.server, limit)?;
        // A sender that is still blocked (nothing was read) gives up with
        // the reader: shut its socket down so the join below returns.
        let _ = p.server.shutdown(Shutdown::Both);
        let sent = sender
            .join()
            .map_err(|_| anyhow::anyhow!("sender thread panicked"))?;
        Ok((sent, read))
    })?;
    let mut o = Obs::default();
    o.fact("sent", res(sent))
        .fact("received", format!("{}+{end}", compare(&got, &data, "")));
    Ok(o)
}

pub const SENDFILE_PEER_CLOSES: Case = Case {
    name: "sendfile_peer_closes",
    does: "(13) sendfile(2) of 16 MiB to a peer that reads 256 KiB and closes; if sendfile \
           completes, up to 3 more 1-byte sends, 50 ms apart",
    same_when: "the sender is told the same way (TCP: EPIPE or ECONNRESET, both counted as \
                `reset`). Whether it learns during sendfile or on a later send depends on how \
                much the kernel buffered (nonblock_fill's subject), so that is only reported",
    run: sendfile_peer_closes,
    cross: None,
};

/// EPIPE and ECONNRESET both say "the peer is gone"; TCP gives either,
/// depending on when the RST lands.
fn error_class(end: &str) -> &str {
    match end {
        "EPIPE" | "ECONNRESET" => "reset",
        other => other,
    }
}

/// What the sender of `sendfile_peer_closes` saw.
struct Told {
    sent: usize,
    sendfile_end: String,
    later: Vec<String>,
}

impl Told {
    /// The first error of the sendfile or a later send, or `none`.
    fn class(&self) -> String {
        std::iter::once(&self.sendfile_end)
            .chain(&self.later)
            .find(|r| r.as_str() != "complete" && r.parse::<usize>().is_err())
            .map_or("none".into(), |e| error_class(e).to_string())
    }
}

fn sendfile_then_poke(ctx: &Ctx, client: &Sock, file: &OwnedFd, len: usize) -> Told {
    let (sent, sendfile_end) = sendfile_all(client, file, len);
    let mut later = Vec::new();
    while sendfile_end == "complete" && later.len() < 3 {
        std::thread::sleep(ctx.scaled(50));
        let r = res(client.send(b"x", MsgFlags::empty()));
        let failed = r != "1";
        later.push(r);
        if failed {
            break;
        }
    }
    Told {
        sent,
        sendfile_end,
        later,
    }
}

fn sendfile_peer_closes(ctx: &Ctx) -> Result<Obs> {
    let Pair { client, server } = ctx.pair()?;
    let len = 16 << 20;
    let file = memfd_create("rawload-conformance", MFdFlags::MFD_CLOEXEC)?;
    nix::unistd::ftruncate(&file, len as i64)?;
    // A bound for a sender that is never told: a blocked sendfile returns.
    client.set_send_timeout(ctx.grace() * 2)?;
    let told = std::thread::scope(|s| -> Result<Told> {
        let sender = s.spawn(|| sendfile_then_poke(ctx, &client, &file, len));
        read_exact(&server, 256 * 1024, ctx.grace() * 4)?;
        drop(server);
        sender
            .join()
            .map_err(|_| anyhow::anyhow!("sender thread panicked"))
    })?;
    let mut o = Obs::default();
    o.fact("sender_told", told.class())
        .info("sendfile_end", &told.sendfile_end)
        .info("sent", told.sent)
        .info("later_sends", told.later.join("/"));
    Ok(o)
}
