//! Attach points: the cgroup (for sock_ops) and the SOCKHASH (for sk_msg).
//!
//! Both use `BPF_PROG_ATTACH`, which exists on every kernel rawload targets.
//! The attachment is owned by its target, not by a file descriptor: it
//! outlives this process, which is why `rawload detach` can undo it later.
//!
//! - sock_ops goes on a cgroup v2 directory with `BPF_F_ALLOW_MULTI`, so it
//!   runs next to any program already there. Flags 0 would mean "exclusive":
//!   it would silently replace another tool's sock_ops program.
//! - sk_msg goes on the SOCKHASH. A socket copies the map's programs when it
//!   is inserted, so this attach must happen before sock_ops starts
//!   inserting sockets.

use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use nix::errno::Errno;
use nix::sys::statfs::{CGROUP_SUPER_MAGIC, CGROUP2_SUPER_MAGIC, statfs};

use crate::sys;
use rawload_obj::uapi::{self, AttachType};

/// An open cgroup v2 directory.
#[derive(Debug)]
pub struct Cgroup {
    pub path: PathBuf,
    /// The cgroup id (the directory's inode number on cgroup2), which tells
    /// whether a path still names the cgroup we attached to.
    pub id: u64,
    fd: OwnedFd,
}

impl AsFd for Cgroup {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// The cgroup2 mount point: `/sys/fs/cgroup` on unified hosts,
/// `/sys/fs/cgroup/unified` on hybrid ones, else wherever mountinfo says.
pub fn cgroup2_mount() -> Option<PathBuf> {
    let candidates = ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"];
    if let Some(p) = candidates
        .iter()
        .find(|p| statfs(Path::new(p)).is_ok_and(|s| s.filesystem_type() == CGROUP2_SUPER_MAGIC))
    {
        return Some(PathBuf::from(p));
    }
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    mountinfo.lines().find_map(|line| {
        // "... <mount point> <options> ... - <fstype> <source> <super options>"
        let (left, right) = line.split_once(" - ")?;
        let mount_point = left.split_whitespace().nth(4)?;
        (right.split_whitespace().next()? == "cgroup2").then(|| PathBuf::from(mount_point))
    })
}

/// The default `--cgroup`: the root of the cgroup2 hierarchy (every process).
pub fn default_cgroup() -> Result<PathBuf> {
    cgroup2_mount().context(
        "no cgroup v2 hierarchy is mounted; mount one with: mount -t cgroup2 none /sys/fs/cgroup/unified",
    )
}

impl Cgroup {
    /// Opens `path` and checks that it is a cgroup v2 directory.
    pub fn open(path: &Path) -> Result<Cgroup> {
        let fs = statfs(path).map_err(|e| match e {
            Errno::ENOENT => anyhow::anyhow!("cgroup path {} does not exist", path.display()),
            e => anyhow::anyhow!(
                "cannot inspect cgroup path {}: {}",
                path.display(),
                e.desc()
            ),
        })?;
        let hint = || {
            cgroup2_mount().map_or(String::new(), |m| {
                format!(" (cgroup v2 is mounted at {})", m.display())
            })
        };
        if fs.filesystem_type() == CGROUP_SUPER_MAGIC {
            bail!(
                "{} is a cgroup v1 hierarchy; sock_ops programs attach to cgroup v2 only{}",
                path.display(),
                hint()
            );
        }
        if fs.filesystem_type() != CGROUP2_SUPER_MAGIC {
            bail!("{} is not a cgroup directory{}", path.display(), hint());
        }
        let file =
            File::open(path).with_context(|| format!("opening cgroup {}", path.display()))?;
        let meta = file.metadata()?;
        if !meta.is_dir() {
            bail!(
                "{} is a file inside a cgroup, not a cgroup directory",
                path.display()
            );
        }
        Ok(Cgroup {
            path: path.to_path_buf(),
            id: meta.ino(),
            fd: file.into(),
        })
    }

    /// The cgroup an attachment was recorded on: `path` if it still names
    /// cgroup `id`, else wherever cgroup `id` is now; None when it is gone.
    ///
    /// The record names the cgroup by the path the attaching process saw,
    /// which another mount namespace may not share: a container that
    /// attached to `/host/cgroup` meant the host's `/sys/fs/cgroup`. The id
    /// (the directory's inode on cgroup2, never reused on 64-bit kernels) is
    /// the same in every namespace.
    pub fn recorded(path: &Path, id: u64) -> Option<Cgroup> {
        match Cgroup::open(path) {
            Ok(cg) if cg.id == id => Some(cg),
            _ => Cgroup::find_by_id(id),
        }
    }

    /// Finds cgroup `id` under the cgroup2 mount. The walk is bounded and
    /// visits directories only (cgroups are directories; the files in them
    /// are interface files).
    fn find_by_id(id: u64) -> Option<Cgroup> {
        const MAX_DIRS: usize = 100_000;
        let mut pending = vec![cgroup2_mount()?];
        let mut seen = 0;
        while let Some(dir) = pending.pop() {
            seen += 1;
            if seen > MAX_DIRS {
                return None;
            }
            let Ok(meta) = std::fs::symlink_metadata(&dir) else {
                continue;
            };
            if meta.ino() == id {
                return Cgroup::open(&dir).ok();
            }
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            pending.extend(
                entries
                    .flatten()
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .map(|e| e.path()),
            );
        }
        None
    }

    /// The programs attached here for sock_ops and the attach mode.
    pub fn sock_ops_programs(&self) -> Result<(u32, Vec<u32>)> {
        sys::prog_query(self.as_fd(), AttachType::CGROUP_SOCK_OPS)
            .with_context(|| format!("listing sock_ops programs of {}", self.path.display()))
    }

    /// `BPF_PROG_ATTACH` sock_ops with `BPF_F_ALLOW_MULTI`.
    pub fn attach_sock_ops(&self, prog: BorrowedFd<'_>) -> Result<()> {
        sys::prog_attach(
            self.as_fd(),
            prog,
            AttachType::CGROUP_SOCK_OPS,
            uapi::BPF_F_ALLOW_MULTI,
        )
        .map_err(|e| match e.errno {
            Errno::EPERM => anyhow::anyhow!(
                "{e}: {} (or a parent) holds a sock_ops program attached without BPF_F_ALLOW_MULTI, \
                 which forbids sharing; rawload will not replace it (see `bpftool cgroup show {}`)",
                self.path.display(),
                self.path.display()
            ),
            Errno::E2BIG => anyhow::anyhow!("{e}: {} already has 64 sock_ops programs", self.path.display()),
            _ => anyhow::anyhow!("{e}: attaching sock_ops to {}", self.path.display()),
        })
    }

    /// `BPF_PROG_DETACH` of exactly this program. `Ok(false)` if it was
    /// not attached.
    pub fn detach_sock_ops(&self, prog: BorrowedFd<'_>) -> Result<bool> {
        match sys::prog_detach(self.as_fd(), prog, AttachType::CGROUP_SOCK_OPS) {
            Ok(()) => Ok(true),
            Err(e) if e.errno == Errno::ENOENT => Ok(false),
            Err(e) => {
                Err(e).with_context(|| format!("detaching sock_ops from {}", self.path.display()))
            }
        }
    }
}

/// `BPF_PROG_ATTACH` a program to a SOCKHASH/SOCKMAP: sk_msg
/// (`BPF_SK_MSG_VERDICT`) runs on the sends of the sockets in it, an sk_skb
/// verdict (`BPF_SK_SKB_STREAM_VERDICT`) on what they receive through TCP.
pub fn attach_to_socket_map(
    map: BorrowedFd<'_>,
    prog: BorrowedFd<'_>,
    attach_type: AttachType,
) -> Result<()> {
    sys::prog_attach(map, prog, attach_type, 0)
        .with_context(|| format!("attaching {} to the socket map", attach_type.name()))
}

/// A program this run attached to a socket map: detached again when it is
/// dropped, unless [`MapAttachment::commit`] says the whole attach went
/// through (aya's `ProgAttachLink` detaches on drop the same way).
#[must_use = "dropping the attachment detaches it"]
pub struct MapAttachment<'a> {
    map: BorrowedFd<'a>,
    prog: BorrowedFd<'a>,
    attach_type: AttachType,
    armed: bool,
}

impl<'a> MapAttachment<'a> {
    pub fn attach(
        map: BorrowedFd<'a>,
        prog: BorrowedFd<'a>,
        attach_type: AttachType,
    ) -> Result<MapAttachment<'a>> {
        attach_to_socket_map(map, prog, attach_type)?;
        Ok(MapAttachment {
            map,
            prog,
            attach_type,
            armed: true,
        })
    }

    /// Keeps the attachment: it outlives this process.
    pub fn commit(mut self) {
        self.armed = false;
    }
}

impl Drop for MapAttachment<'_> {
    fn drop(&mut self) {
        if self.armed {
            if let Err(e) = detach_from_socket_map(self.map, self.prog, self.attach_type) {
                // A destructor cannot return it; say it where it happens.
                eprintln!("rawload: while undoing a failed attach: {e:#}");
            }
        }
    }
}

/// `BPF_PROG_DETACH` from the map. Sockets already in the map keep the
/// programs they copied (they are not cut off mid-stream); new sockets get
/// none. `Ok(false)` if it was not attached.
pub fn detach_from_socket_map(
    map: BorrowedFd<'_>,
    prog: BorrowedFd<'_>,
    attach_type: AttachType,
) -> Result<bool> {
    match sys::prog_detach(map, prog, attach_type) {
        Ok(()) => Ok(true),
        Err(e) if matches!(e.errno, Errno::ENOENT | Errno::EINVAL) => Ok(false),
        Err(e) => {
            Err(e).with_context(|| format!("detaching {} from the socket map", attach_type.name()))
        }
    }
}

/// The programs attached to a socket map for `attach_type`, where the
/// kernel can say (`BPF_PROG_QUERY` on sockmaps arrived in 5.19). `None`
/// when it cannot.
pub fn socket_map_programs(map: BorrowedFd<'_>, attach_type: AttachType) -> Option<Vec<u32>> {
    sys::prog_query(map, attach_type).ok().map(|(_, ids)| ids)
}
