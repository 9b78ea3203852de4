//! Every network namespace of this host that rawload can find, read one by
//! one: its netns cookie, its interfaces, its addresses.
//!
//! Namespaces have no list in the kernel: they are found through what holds
//! them, the processes (`/proc/PID/ns/net`) and the names that `ip netns`,
//! podman and Docker bind-mount (`/run/netns`, `/run/docker/netns`). Two
//! paths name the same namespace when the files they open have the same
//! inode. A namespace is read from inside: a thread enters it (`setns(2)`
//! with `CLONE_NEWNET`, which moves only the calling thread), opens a
//! socket there for `SO_NETNS_COOKIE` and a `NETLINK_ROUTE` socket for the
//! dumps, and ends.

use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use nix::sched::{CloneFlags, setns};
use nix::sys::socket::{AddressFamily, SockFlag, SockType, socket};

use super::netlink::{Addr, Link, Netlink};
use crate::sys::sock;

/// Where namespaces have names of their own.
const NAMED: [&str; 2] = ["/run/netns", "/run/docker/netns"];

/// One network namespace, as read from inside.
#[derive(Debug, Clone)]
pub struct Namespace {
    /// Where it was found first: `/proc/PID/ns/net`, `/run/netns/NAME`.
    pub path: PathBuf,
    /// What `bpf_get_netns_cookie` returns for its sockets.
    pub cookie: u64,
    pub links: Vec<Link>,
    pub addrs: Vec<Addr>,
    /// The id it gives the host's namespace: its veths whose
    /// `IFLA_LINK_NETNSID` is this id have their peer in the host's.
    pub host_nsid: Option<i32>,
}

/// The host's namespace (the one rawload runs in) and every other one found.
#[derive(Debug, Clone)]
pub struct Scan {
    pub host: Namespace,
    pub others: Vec<Namespace>,
    /// Namespaces found but not readable (they went away, or no permission).
    pub unreadable: Vec<(PathBuf, String)>,
}

pub fn scan() -> Result<Scan> {
    let host_file = File::open("/proc/self/ns/net").context("opening /proc/self/ns/net")?;
    let host = read(Path::new("/proc/self/ns/net"), None, host_file.as_fd())
        .context("reading this host's network namespace")?;
    let mut seen = vec![identity(&host_file)?];
    let mut scan = Scan {
        host,
        others: Vec::new(),
        unreadable: Vec::new(),
    };
    for path in candidates() {
        let Ok(file) = File::open(&path) else {
            continue;
        }; // the process is gone
        let Ok(id) = identity(&file) else { continue };
        if seen.contains(&id) {
            continue;
        }
        seen.push(id);
        match read(&path, Some(file.as_fd()), host_file.as_fd()) {
            Ok(ns) => scan.others.push(ns),
            Err(e) => scan.unreadable.push((path, format!("{e:#}"))),
        }
    }
    Ok(scan)
}

/// (device, inode) of an open namespace file: the namespace's identity.
fn identity(file: &File) -> Result<(u64, u64)> {
    let meta = file.metadata().context("fstat of a namespace file")?;
    Ok((meta.dev(), meta.ino()))
}

/// Every path that may name a namespace, processes first.
fn candidates() -> Vec<PathBuf> {
    let mut paths = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let name = entry.file_name();
        if name.to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
            paths.push(entry.path().join("ns/net"));
        }
    }
    for dir in NAMED {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            paths.push(entry.path());
        }
    }
    paths
}

/// Reads one namespace: from a thread that enters it (`enter`), or from
/// this thread for the host's own (None).
fn read(path: &Path, enter: Option<BorrowedFd<'_>>, host: BorrowedFd<'_>) -> Result<Namespace> {
    std::thread::scope(|s| {
        s.spawn(|| {
            if let Some(ns) = enter {
                setns(ns, CloneFlags::CLONE_NEWNET).context("setns(CLONE_NEWNET)")?;
            }
            read_here(path, host)
        })
        .join()
        .unwrap_or_else(|_| anyhow::bail!("the thread reading {} panicked", path.display()))
    })
}

/// Reads the calling thread's namespace.
fn read_here(path: &Path, host: BorrowedFd<'_>) -> Result<Namespace> {
    let probe = socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .context("a socket for SO_NETNS_COOKIE")?;
    let cookie = sock::netns_cookie(probe.as_fd()).context("SO_NETNS_COOKIE (5.14)")?;
    let mut nl = Netlink::open().context("opening NETLINK_ROUTE")?;
    // Links first: dumping them gives the peers' namespaces their ids.
    let links = nl.links().context("RTM_GETLINK")?;
    let addrs = nl.addrs().context("RTM_GETADDR")?;
    let host_nsid = nl.nsid_of(host).context("RTM_GETNSID")?;
    Ok(Namespace {
        path: path.to_path_buf(),
        cookie,
        links,
        addrs,
        host_nsid,
    })
}
