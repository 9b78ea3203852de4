//! One connection's two directions: a sender that writes the keystream in
//! the configured way, and a receiver that checks it byte by byte with the
//! configured kind of reader.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};

use super::stream::{Fnv, Keystream, splitmix64};
use super::{PeerConfig, Reader, RecvMode, SendMode};
use rawload_loader::sys;

/// What one connection saw, both directions.
#[derive(Debug, Default, Clone)]
pub struct ConnReport {
    pub sent_id: u64,
    pub recv_id: Option<u64>,
    pub sent: u64,
    pub received: u64,
    pub bad_bytes: u64,
    pub first_bad: Option<u64>,
    pub sent_digest: u64,
    pub recv_digest: u64,
    /// Blocking reads that returned EAGAIN long before their timeout (a
    /// kernel quirk of sockets in a sockmap, see docs/KERNEL-ISSUES.md).
    pub spurious_eagain: u64,
    /// Reads of data the poller called readable while FIONREAD said 0.
    pub fionread_zero: u64,
    /// The receiver stopped early on purpose (`--quit-after`).
    pub quit_early: bool,
    /// Payload bytes a non-blocking sender had written when a write first
    /// returned EAGAIN: how much the path takes before the writer must wait.
    pub eagain_after: Option<u64>,
    pub error: Option<String>,
}

/// Waits until `fd` is ready for `flags`, at most `timeout`.
fn wait_ready(fd: &impl AsFd, flags: PollFlags, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            bail!("not ready within {timeout:?}");
        }
        let mut fds = [PollFd::new(fd.as_fd(), flags)];
        let ms =
            PollTimeout::try_from(left.as_millis().min(60_000) as i32).unwrap_or(PollTimeout::MAX);
        match poll(&mut fds, ms) {
            Ok(0) => continue,
            Ok(_) => return Ok(()),
            Err(Errno::EINTR) => continue,
            Err(e) => bail!("poll: {}", e.desc()),
        }
    }
}

/// Write sizes: every write is between min and max bytes (a seeded draw).
struct Sizes {
    state: u64,
    min: usize,
    max: usize,
}

impl Sizes {
    fn next(&mut self) -> usize {
        if self.min >= self.max {
            return self.min;
        }
        self.state = splitmix64(self.state);
        self.min + (self.state % (self.max - self.min + 1) as u64) as usize
    }
}

/// What one direction sent.
#[derive(Debug, Clone, Copy)]
pub struct Sent {
    /// Bytes, the header included.
    pub bytes: u64,
    pub digest: u64,
    /// See [`ConnReport::eagain_after`].
    pub eagain_after: Option<u64>,
}

/// The sending side of one direction: an 8-byte header (the stream id),
/// then the keystream, written in the configured sizes and way.
pub struct Outgoing {
    id: u64,
    fnv: Fnv,
    sizes: Sizes,
    buf: Vec<u8>,
    /// sendfile() needs a file: a memfd holding the current chunk.
    file: Option<OwnedFd>,
    /// Payload bytes written so far.
    pub pos: u64,
    chunk: u64,
    eagain_after: Option<u64>,
}

impl Outgoing {
    /// Writes the header.
    pub fn start(stream: &mut TcpStream, id: u64, cfg: &PeerConfig) -> Result<Outgoing> {
        let mut out = Outgoing {
            id,
            fnv: Fnv::default(),
            sizes: Sizes {
                state: id,
                min: cfg.write_min.max(1),
                max: cfg.write_max.max(1),
            },
            buf: vec![0u8; cfg.write_max.max(1)],
            file: match cfg.send_mode {
                SendMode::Write => None,
                _ => Some(
                    nix::sys::memfd::memfd_create(
                        c"rawload-chunk",
                        nix::sys::memfd::MFdFlags::MFD_CLOEXEC,
                    )
                    .context("memfd_create")?,
                ),
            },
            pos: 0,
            chunk: 0,
            eagain_after: None,
        };
        let header = id.to_le_bytes();
        write_all(stream, &header, cfg).context("writing the stream header")?;
        out.fnv.update(&header);
        Ok(out)
    }

    /// Writes the keystream up to payload position `end`.
    pub fn send_until(&mut self, stream: &mut TcpStream, end: u64, cfg: &PeerConfig) -> Result<()> {
        let ks = Keystream(self.id);
        while self.pos < end {
            let n = ((end - self.pos) as usize).min(self.sizes.next());
            ks.fill(self.pos, &mut self.buf[..n]);
            let use_file = match cfg.send_mode {
                SendMode::Write => false,
                SendMode::Sendfile => true,
                SendMode::Mixed => self.chunk % 2 == 1,
            };
            let blocked_at = match (&self.file, use_file) {
                (Some(f), true) => sendfile_all(stream, f, &self.buf[..n], cfg),
                _ => write_all(stream, &self.buf[..n], cfg),
            }
            .with_context(|| format!("writing at offset {}", self.pos))?;
            if let (None, Some(at)) = (self.eagain_after, blocked_at) {
                self.eagain_after = Some(self.pos + at as u64);
            }
            self.fnv.update(&self.buf[..n]);
            self.pos += n as u64;
            self.chunk += 1;
        }
        Ok(())
    }

    /// Half-closes; returns what was sent.
    pub fn finish(self, stream: &mut TcpStream) -> Result<Sent> {
        stream
            .shutdown(Shutdown::Write)
            .context("shutting down the write side")?;
        Ok(Sent {
            bytes: self.pos + 8,
            digest: self.fnv.0,
            eagain_after: self.eagain_after,
        })
    }
}

/// The sending side: header, then `cfg.bytes` of keystream, then shutdown.
pub fn send(stream: &mut TcpStream, id: u64, cfg: &PeerConfig) -> Result<Sent> {
    let mut out = Outgoing::start(stream, id, cfg)?;
    out.send_until(stream, cfg.bytes, cfg)?;
    out.finish(stream)
}

/// Writes all of `data`; returns how much was written when the socket first
/// said EAGAIN (non-blocking writers only), if it did.
fn write_all(stream: &mut TcpStream, data: &[u8], cfg: &PeerConfig) -> Result<Option<usize>> {
    let (mut done, mut blocked_at) = (0, None);
    while done < data.len() {
        match stream.write(&data[done..]) {
            Ok(n) => done += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock && cfg.nonblocking() => {
                blocked_at.get_or_insert(done);
                wait_ready(stream, PollFlags::POLLOUT, cfg.timeout)?;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(blocked_at)
}

/// sendfile(2) of `data` through a memfd; returns what `write_all` does.
fn sendfile_all(
    stream: &mut TcpStream,
    file: &OwnedFd,
    data: &[u8],
    cfg: &PeerConfig,
) -> Result<Option<usize>> {
    nix::sys::uio::pwrite(file, data, 0).context("filling the memfd")?;
    let (mut offset, mut blocked_at): (libc::off_t, _) = (0, None);
    while (offset as usize) < data.len() {
        let left = data.len() - offset as usize;
        match nix::sys::sendfile::sendfile(stream.as_fd(), file, Some(&mut offset), left) {
            Ok(_) => {}
            Err(Errno::EINTR) => {}
            Err(Errno::EAGAIN) if cfg.nonblocking() => {
                blocked_at.get_or_insert(offset as usize);
                wait_ready(stream, PollFlags::POLLOUT, cfg.timeout)?
            }
            Err(e) => bail!("sendfile: {}", e.desc()),
        }
    }
    Ok(blocked_at)
}

/// Reads into `buf` with the configured reader; Ok(0) is end of stream.
struct Receiver<'a> {
    stream: &'a mut TcpStream,
    cfg: &'a PeerConfig,
    epoll: Option<Epoll>,
    pipe: Option<(OwnedFd, OwnedFd)>,
}

impl Receiver<'_> {
    fn new<'a>(stream: &'a mut TcpStream, cfg: &'a PeerConfig) -> Result<Receiver<'a>> {
        let epoll = match cfg.reader {
            Reader::Epoll | Reader::EpollEt => {
                let ep = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).context("epoll_create")?;
                let mut flags = EpollFlags::EPOLLIN | EpollFlags::EPOLLRDHUP;
                if cfg.reader == Reader::EpollEt {
                    flags |= EpollFlags::EPOLLET;
                }
                ep.add(&*stream, EpollEvent::new(flags, 0))
                    .context("epoll_ctl")?;
                Some(ep)
            }
            _ => None,
        };
        let pipe = match cfg.recv_mode {
            RecvMode::Read => None,
            RecvMode::Splice => Some(nix::unistd::pipe().context("pipe")?),
        };
        Ok(Receiver {
            stream,
            cfg,
            epoll,
            pipe,
        })
    }

    /// Waits until the poller says readable (non-blocking readers only).
    fn wait_readable(&self) -> Result<()> {
        match (&self.epoll, self.cfg.reader) {
            (Some(ep), _) => {
                let mut events = [EpollEvent::empty()];
                let deadline = Instant::now() + self.cfg.timeout;
                loop {
                    let ms = deadline
                        .saturating_duration_since(Instant::now())
                        .as_millis()
                        .min(60_000) as u16;
                    match ep.wait(&mut events, EpollTimeout::from(ms)) {
                        Ok(0) if Instant::now() >= deadline => {
                            bail!("epoll: not readable within {:?}", self.cfg.timeout)
                        }
                        Ok(0) | Err(Errno::EINTR) => continue,
                        Ok(_) => return Ok(()),
                        Err(e) => bail!("epoll_wait: {}", e.desc()),
                    }
                }
            }
            (None, Reader::Poll) => wait_ready(self.stream, PollFlags::POLLIN, self.cfg.timeout),
            _ => Ok(()),
        }
    }

    /// Reads what is there. Non-blocking readers try first and wait for
    /// readiness only after EAGAIN: edge-triggered epoll reports new data
    /// only, so waiting while unread bytes remain would stall.
    fn read(&mut self, buf: &mut [u8], report: &mut ConnReport) -> Result<usize> {
        let deadline = Instant::now() + self.cfg.timeout;
        let mut after_wakeup = false;
        loop {
            if Instant::now() > deadline {
                bail!("no data within {:?}", self.cfg.timeout);
            }
            // FIONREAD is judged only right after the poller said readable:
            // then the data was already there when FIONREAD answered.
            let available = match self.cfg.fionread && after_wakeup {
                true => Some(sys::fionread(self.stream.as_fd())?),
                false => None,
            };
            let call = Instant::now();
            let got = match &self.pipe {
                None => self.stream.read(buf).map_err(Errno::from_raw_io),
                Some((r, w)) => splice_read(self.stream, r, w, buf),
            };
            match got {
                Ok(n) => {
                    if n > 0 && available == Some(0) {
                        report.fionread_zero += 1;
                    }
                    return Ok(n);
                }
                Err(Errno::EINTR) => {}
                Err(Errno::EAGAIN) if self.cfg.nonblocking() => {
                    self.wait_readable()?;
                    after_wakeup = true;
                }
                // SO_RCVTIMEO expiry also reads as EAGAIN, but only after the
                // whole timeout; anything quicker is the kernel quirk.
                Err(Errno::EAGAIN) if call.elapsed() < self.cfg.timeout / 2 => {
                    report.spurious_eagain += 1;
                }
                Err(e) => bail!("{}", e.desc()),
            }
        }
    }
}

trait FromRawIo {
    fn from_raw_io(e: std::io::Error) -> Errno;
}

impl FromRawIo for Errno {
    fn from_raw_io(e: std::io::Error) -> Errno {
        Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO))
    }
}

/// splice(2) from the socket into a pipe, then read the pipe: the path
/// proxies like HAProxy take. The socket is non-blocking here, so a stream
/// splice cannot see ends up as EAGAIN rather than a hang.
fn splice_read(stream: &TcpStream, r: &OwnedFd, w: &OwnedFd, buf: &mut [u8]) -> nix::Result<usize> {
    use nix::fcntl::{SpliceFFlags, splice};
    let n = splice(
        stream.as_fd(),
        None,
        w,
        None,
        buf.len(),
        SpliceFFlags::SPLICE_F_NONBLOCK,
    )?;
    let mut done = 0;
    while done < n {
        done += nix::unistd::read(r, &mut buf[done..n])?;
    }
    Ok(n)
}

/// The receiving side of one direction: checks every byte against the
/// keystream named by the header.
pub struct Incoming<'a> {
    rx: Receiver<'a>,
    fnv: Fnv,
    buf: Vec<u8>,
    expect: Vec<u8>,
    header: [u8; 8],
    have_header: usize,
    /// Payload position.
    pos: u64,
    paused: bool,
}

impl Incoming<'_> {
    pub fn new<'a>(stream: &'a mut TcpStream, cfg: &'a PeerConfig) -> Result<Incoming<'a>> {
        Ok(Incoming {
            rx: Receiver::new(stream, cfg)?,
            fnv: Fnv::default(),
            buf: vec![0u8; 256 * 1024],
            expect: vec![0u8; 256 * 1024],
            header: [0u8; 8],
            have_header: 0,
            pos: 0,
            paused: cfg.pause.is_none(),
        })
    }

    /// Reads until `report.received` reaches `until` (bytes including the
    /// header; None: to end of stream). Returns false at end of stream.
    pub fn receive_until(&mut self, until: Option<u64>, report: &mut ConnReport) -> Result<bool> {
        let cfg = self.rx.cfg;
        loop {
            if until.is_some_and(|u| report.received >= u) {
                return Ok(true);
            }
            if let (Some((after, how_long)), false) = (cfg.pause, self.paused) {
                if report.received >= after {
                    std::thread::sleep(how_long);
                    self.paused = true;
                }
            }
            if cfg.quit_after.is_some_and(|q| report.received >= q) {
                report.quit_early = true;
                return Ok(false);
            }
            // Never read past `until`: the peer waits for our answer.
            let want = until.map_or(self.buf.len(), |u| {
                ((u - report.received) as usize).min(self.buf.len())
            });
            let n = self
                .rx
                .read(&mut self.buf[..want], report)
                .with_context(|| format!("reading at offset {}", report.received))?;
            if n == 0 {
                return Ok(false);
            }
            report.received += n as u64;
            self.check(n, report);
        }
    }

    fn check(&mut self, n: usize, report: &mut ConnReport) {
        self.fnv.update(&self.buf[..n]);
        let mut data = &self.buf[..n];
        if self.have_header < 8 {
            let take = (8 - self.have_header).min(data.len());
            self.header[self.have_header..self.have_header + take].copy_from_slice(&data[..take]);
            self.have_header += take;
            data = &data[take..];
            if self.have_header == 8 {
                report.recv_id = Some(u64::from_le_bytes(self.header));
            }
        }
        if data.is_empty() {
            return;
        }
        Keystream(u64::from_le_bytes(self.header)).fill(self.pos, &mut self.expect[..data.len()]);
        if data != &self.expect[..data.len()] {
            for (i, (a, b)) in data.iter().zip(&self.expect).enumerate() {
                if a != b {
                    report.bad_bytes += 1;
                    report.first_bad.get_or_insert(self.pos + i as u64);
                }
            }
        }
        self.pos += data.len() as u64;
    }

    pub fn finish(self, report: &mut ConnReport) {
        report.recv_digest = self.fnv.0;
    }
}

/// The receiving side: read to EOF, checking every byte.
pub fn receive(stream: &mut TcpStream, cfg: &PeerConfig, report: &mut ConnReport) -> Result<()> {
    let mut incoming = Incoming::new(stream, cfg)?;
    incoming.receive_until(None, report)?;
    incoming.finish(report);
    Ok(())
}

/// Request and response: the client sends a turn of `cfg.write_max` bytes
/// and waits for as many back before its next turn; the server answers each
/// turn with as many bytes of its own stream. With `cfg.lead`, the client
/// first uploads that many bytes in one go (which the server just reads).
/// Both sides must be given the same `--bytes` and `--lead`. Returns what
/// `send` returns.
pub fn turns(
    writer: &mut TcpStream,
    reader: &mut TcpStream,
    id: u64,
    cfg: &PeerConfig,
    server: bool,
    report: &mut ConnReport,
) -> Result<Sent> {
    let turn = cfg.write_max.max(1) as u64;
    let mut incoming = Incoming::new(reader, cfg)?;
    let mut out = None;
    // Where this side's turns start in its own stream, and in the peer's.
    let (own_start, peer_start) = if server { (0, cfg.lead) } else { (cfg.lead, 0) };
    if !server && cfg.lead > 0 {
        out.insert(Outgoing::start(writer, id, cfg)?)
            .send_until(writer, cfg.lead, cfg)?;
    }
    let mut done = 0u64;
    while done < cfg.bytes {
        let end = (done + turn).min(cfg.bytes);
        if server {
            // The client's turn (and its header and lead, the first time).
            let want = 8 + peer_start + end;
            if !incoming.receive_until(Some(want), report)? {
                bail!(
                    "the client closed after {} of {want} bytes",
                    report.received
                );
            }
        }
        let o = match out.as_mut() {
            Some(o) => o,
            None => out.insert(Outgoing::start(writer, id, cfg)?),
        };
        o.send_until(writer, own_start + end, cfg)?;
        if !server && !incoming.receive_until(Some(8 + end), report)? {
            bail!(
                "the server closed after {} of {} bytes",
                report.received,
                8 + end
            );
        }
        done = end;
    }
    let out = match out {
        Some(o) => o,
        None => Outgoing::start(writer, id, cfg)?,
    };
    let sent = out.finish(writer)?;
    incoming.receive_until(None, report)?;
    incoming.finish(report);
    Ok(sent)
}

/// Sets SO_LINGER {on, 0}: close() then sends RST instead of FIN.
pub fn set_linger_zero(stream: &TcpStream) -> Result<()> {
    nix::sys::socket::setsockopt(
        stream,
        nix::sys::socket::sockopt::Linger,
        &libc::linger {
            l_onoff: 1,
            l_linger: 0,
        },
    )
    .context("SO_LINGER")
}
