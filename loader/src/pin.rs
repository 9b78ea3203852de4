//! Pins: names for kernel objects on a bpf filesystem (bpffs).
//!
//! A map or program lives as long as something references it: a file
//! descriptor, an attachment, or a pin. rawload exits right after attaching,
//! so it pins what a later `detach` or `status` must find. Pinning also
//! matters for correctness: a SOCKHASH drops its attached sk_msg program when
//! its last *user* reference (fd or pin) goes away (`sock_map_release_progs`),
//! even while the sock_ops program still fills it.
//!
//! bpffs holds only pins and directories, so the few facts `detach` needs
//! (which cgroup) are kept in a tiny array map pinned next to the programs:
//! the [`AttachRecord`].

use std::ffi::CString;
use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use nix::mount::{MsFlags, mount};
use nix::sys::statfs::{BPF_FS_MAGIC, statfs};

use rawload_obj::uapi::{AttachType, MapType};

use crate::sys::{self, MapCreateArgs, MapFd};

/// Where distributions mount bpffs, and rawload's default pin directory.
pub const BPFFS_MOUNT: &str = "/sys/fs/bpf";
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/rawload";

/// Pin names inside the pin directory. Everything rawload pins is named
/// `prog_*`, `map_*` or `state`, so `detach` removes exactly that.
pub const SOCK_OPS_PIN: &str = "prog_sockops";
pub const SK_MSG_PIN: &str = "prog_sk_msg";
pub const SK_SKB_PIN: &str = "prog_sk_skb";
/// The pins of programs attached to the socket map, with their attach types.
pub const SOCKET_MAP_PROGRAM_PINS: [(&str, AttachType); 2] = [
    (SK_MSG_PIN, rawload_obj::uapi::AttachType::SK_MSG_VERDICT),
    (
        SK_SKB_PIN,
        rawload_obj::uapi::AttachType::SK_SKB_STREAM_VERDICT,
    ),
];
pub const RECORD_PIN: &str = "state";

/// The pin name of a map: `map_` + its name, dots dropped or replaced,
/// because bpffs refuses names containing '.' (it keeps them for itself).
pub fn map_pin_name(map_name: &str) -> String {
    format!("map_{}", map_name.trim_start_matches('.').replace('.', "_"))
}

fn is_ours(name: &str) -> bool {
    name == RECORD_PIN || name.starts_with("prog_") || name.starts_with("map_")
}

/// A bpffs this run mounted: unmounted again when dropped, unless
/// committed (an attach that fails leaves the system as it found it).
#[must_use = "dropping the mount unmounts it"]
pub struct BpffsMount {
    mounted_here: bool,
}

impl BpffsMount {
    /// Keeps the mount (its pins are in use).
    pub fn commit(mut self) {
        self.mounted_here = false;
    }
}

impl Drop for BpffsMount {
    fn drop(&mut self) {
        if self.mounted_here {
            let _ = nix::mount::umount(BPFFS_MOUNT);
        }
    }
}

/// Makes sure `dir` can hold pins: its nearest existing ancestor must be on
/// bpffs. If the path lies under /sys/fs/bpf and nothing is mounted there
/// yet, mount bpffs (what systemd does at boot on most distributions).
pub fn ensure_bpffs(dir: &Path) -> Result<BpffsMount> {
    let existing = dir
        .ancestors()
        .find(|p| p.exists())
        .unwrap_or_else(|| Path::new("/"));
    if let Ok(new_part) = dir.strip_prefix(existing) {
        if new_part.as_os_str().as_bytes().contains(&b'.') {
            bail!(
                "pin directory {} has a '.' in a name that would be created; bpffs does not allow that",
                dir.display()
            );
        }
    }
    if is_bpffs(existing) {
        return Ok(BpffsMount {
            mounted_here: false,
        });
    }
    if dir.starts_with(BPFFS_MOUNT) && !is_bpffs(Path::new(BPFFS_MOUNT)) {
        // A pin dir nested under a directory inside an unmounted
        // /sys/fs/bpf cannot exist: only the mount point itself can.
        mount(
            Some("bpf"),
            BPFFS_MOUNT,
            Some("bpf"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC | MsFlags::MS_RELATIME,
            Some("mode=0700"),
        )
        .map_err(|e| {
            anyhow::anyhow!(
                "bpffs is not mounted at {BPFFS_MOUNT} and mounting it failed ({}); mount it with: mount -t bpf bpf {BPFFS_MOUNT}",
                e.desc()
            )
        })?;
        return Ok(BpffsMount { mounted_here: true });
    }
    bail!(
        "{} is not on a bpf filesystem; pins need one (use a directory under {BPFFS_MOUNT}, or mount -t bpf bpf DIR)",
        dir.display()
    )
}

fn is_bpffs(p: &Path) -> bool {
    statfs(p).is_ok_and(|s| s.filesystem_type() == BPF_FS_MAGIC)
}

/// A directory of pins.
#[derive(Debug, Clone)]
pub struct PinDir {
    pub path: PathBuf,
}

fn c_path(p: &Path) -> Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .with_context(|| format!("path {} contains a NUL byte", p.display()))
}

impl PinDir {
    /// The pin directory if it exists, after [`PinDir::check_owner`].
    pub fn existing(path: &Path) -> Result<Option<PinDir>> {
        if std::fs::symlink_metadata(path).is_err() {
            return Ok(None);
        }
        let dir = PinDir {
            path: path.to_path_buf(),
        };
        dir.check_owner()?;
        Ok(Some(dir))
    }

    /// Creates the directory (mode 0700: only root may use the pins); its
    /// parent exists already ([`PinLock::take`] made it). Not recursive, so
    /// a directory someone else just made is an error, not adopted.
    pub fn create(path: &Path) -> Result<PinDir> {
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(path)
            .with_context(|| format!("creating pin directory {}", path.display()))?;
        let dir = PinDir {
            path: path.to_path_buf(),
        };
        dir.check_owner()?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("making {} private (0700)", path.display()))?;
        Ok(dir)
    }

    /// Refuses a pin directory that is a symlink (it could point at another
    /// tool's pins) or is owned by another user (its pins could have been
    /// planted to make rawload detach or report the wrong things).
    pub fn check_owner(&self) -> Result<()> {
        let meta = std::fs::symlink_metadata(&self.path)
            .with_context(|| format!("reading {}", self.path.display()))?;
        if !meta.is_dir() {
            bail!(
                "pin directory {} is not a directory (a symlink?); refusing to use it",
                self.path.display()
            );
        }
        let me = nix::unistd::geteuid().as_raw();
        if meta.uid() != me {
            bail!(
                "pin directory {} belongs to uid {}, not to this user (uid {me}); refusing to use it",
                self.path.display(),
                meta.uid()
            );
        }
        Ok(())
    }

    fn path_of(&self, name: &str) -> Result<CString> {
        c_path(&self.path.join(name))
    }

    /// `BPF_OBJ_PIN` at `<dir>/<name>`.
    pub fn pin(&self, fd: BorrowedFd<'_>, name: &str) -> Result<()> {
        crate::narrate!("    pin {}", self.path.join(name).display());
        sys::obj_pin(fd, &self.path_of(name)?)
            .with_context(|| format!("pinning {}", self.path.join(name).display()))
    }

    /// `BPF_OBJ_GET` of `<dir>/<name>`, `None` if there is no such pin.
    pub fn get(&self, name: &str) -> Result<Option<OwnedFd>> {
        match sys::obj_get(&self.path_of(name)?) {
            Ok(fd) => Ok(Some(fd)),
            Err(e) if e.errno == Errno::ENOENT => Ok(None),
            Err(e) => {
                Err(e).with_context(|| format!("opening pin {}", self.path.join(name).display()))
            }
        }
    }

    /// The names rawload created here.
    pub fn our_pins(&self) -> Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&self.path)
            .with_context(|| format!("listing {}", self.path.display()))?
        {
            let name = entry?.file_name().to_string_lossy().into_owned();
            if is_ours(&name) {
                names.push(name);
            }
        }
        names.sort();
        Ok(names)
    }

    /// Removes one pin (the object lives on while other references exist).
    pub fn unpin(&self, name: &str) -> Result<()> {
        match std::fs::remove_file(self.path.join(name)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(e).with_context(|| format!("unpinning {}", self.path.join(name).display()))
            }
            _ => Ok(()),
        }
    }

    /// Removes every pin rawload created, then the directory if it is empty.
    /// Returns the names of foreign entries left in place.
    pub fn clear(&self) -> Result<Vec<String>> {
        for name in self.our_pins()? {
            self.unpin(&name)?;
        }
        let left: Vec<String> = std::fs::read_dir(&self.path)?
            .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect();
        if left.is_empty() {
            std::fs::remove_dir(&self.path)
                .with_context(|| format!("removing {}", self.path.display()))?;
        }
        Ok(left)
    }
}

/// The pins one attach made, removed again when dropped unless committed
/// (and the directory with them if it is then empty): a failed attach undoes
/// exactly what it pinned, never what was there before.
#[must_use = "dropping the pins removes them"]
pub struct NewPins<'a> {
    dir: &'a PinDir,
    names: Vec<String>,
    armed: bool,
}

impl<'a> NewPins<'a> {
    pub fn new(dir: &'a PinDir) -> NewPins<'a> {
        NewPins {
            dir,
            names: Vec::new(),
            armed: true,
        }
    }

    /// `BPF_OBJ_PIN` at `<dir>/<name>`, remembered for the undo.
    pub fn pin(&mut self, fd: BorrowedFd<'_>, name: &str) -> Result<()> {
        self.dir.pin(fd, name)?;
        self.names.push(name.to_string());
        Ok(())
    }

    /// Keeps the pins.
    pub fn commit(mut self) {
        self.armed = false;
    }
}

impl Drop for NewPins<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        for name in self.names.iter().rev() {
            if let Err(e) = self.dir.unpin(name) {
                // A destructor cannot return it; say it where it happens.
                eprintln!("rawload: while undoing a failed attach: {e:#}");
            }
        }
        let _ = std::fs::remove_dir(&self.dir.path);
    }
}

/// An exclusive lock for one pin directory, held by `attach` and `detach`
/// while they run: two of them at once could otherwise undo each other's
/// pins and leave an attachment nothing manages (review finding 3). It is a
/// `flock()` on the directory's parent, which lives on bpffs: every process
/// that sees the pins sees the lock too, containers that share the mount
/// included.
pub struct PinLock {
    _held: Flock<File>,
}

impl PinLock {
    /// Creates the pin directory's parents (on bpffs) and waits up to 10 s
    /// for the lock.
    pub fn take(pin_dir: &Path) -> Result<PinLock> {
        let parent = pin_dir.parent().unwrap_or(Path::new("/"));
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
        let mut file =
            File::open(parent).with_context(|| format!("opening {}", parent.display()))?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(held) => return Ok(PinLock { _held: held }),
                Err((back, Errno::EWOULDBLOCK)) if Instant::now() < deadline => {
                    file = back;
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err((_, e)) => bail!(
                    "another rawload attach or detach is using {} ({}); try again when it is done",
                    pin_dir.display(),
                    e.desc()
                ),
            }
        }
    }
}

/// What `detach` and `status` need to know about an attachment, kept in a
/// one-element array map pinned as `state`: the cgroup (path and id) and
/// the settings that are not visible in the kernel objects themselves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachRecord {
    pub cgroup: PathBuf,
    pub cgroup_id: u64,
    /// `cfg_stream_bytes` as loaded (None: the object has no such bound, or
    /// an older rawload recorded it).
    pub stream_bytes: Option<u32>,
}

/// Layout: magic, cgroup id (u64 LE), then for version 2 `stream_bytes`
/// (u32 LE, [`NO_STREAM_BYTES`] for None) and 4 reserved bytes, then the
/// path, NUL-terminated.
const RECORD_MAGIC_V1: &[u8; 8] = b"RAWLOAD1";
const RECORD_MAGIC: &[u8; 8] = b"RAWLOAD2";
const RECORD_SIZE: usize = 4096;
const RECORD_PATH: usize = 24;
/// `stream_bytes` None: above any bound `attach` accepts (MAX_STREAM_BYTES).
const NO_STREAM_BYTES: u32 = u32::MAX;

impl AttachRecord {
    fn encode(&self) -> Result<Vec<u8>> {
        let path = self.cgroup.as_os_str().as_bytes();
        if path.len() >= RECORD_SIZE - RECORD_PATH {
            bail!(
                "cgroup path {} is too long to record",
                self.cgroup.display()
            );
        }
        let mut v = vec![0u8; RECORD_SIZE];
        v[..8].copy_from_slice(RECORD_MAGIC);
        v[8..16].copy_from_slice(&self.cgroup_id.to_le_bytes());
        let stream_bytes = self.stream_bytes.unwrap_or(NO_STREAM_BYTES);
        v[16..20].copy_from_slice(&stream_bytes.to_le_bytes());
        v[RECORD_PATH..RECORD_PATH + path.len()].copy_from_slice(path);
        Ok(v)
    }

    fn decode(v: &[u8]) -> Option<AttachRecord> {
        if v.len() != RECORD_SIZE {
            return None;
        }
        let (stream_bytes, path) = match &v[..8] {
            m if m == RECORD_MAGIC => (
                Some(u32::from_le_bytes(v[16..20].try_into().ok()?))
                    .filter(|&n| n != NO_STREAM_BYTES),
                &v[RECORD_PATH..],
            ),
            m if m == RECORD_MAGIC_V1 => (None, &v[16..]),
            _ => return None,
        };
        let cgroup_id = u64::from_le_bytes(v[8..16].try_into().ok()?);
        let end = path.iter().position(|&b| b == 0)?;
        Some(AttachRecord {
            cgroup: PathBuf::from(std::ffi::OsStr::from_bytes(&path[..end])),
            cgroup_id,
            stream_bytes,
        })
    }

    /// Creates the record map, writes the record and pins it.
    pub fn pin(&self, pins: &mut NewPins<'_>) -> Result<()> {
        let map = MapFd::create(&MapCreateArgs {
            map_type: MapType::ARRAY,
            key_size: 4,
            value_size: RECORD_SIZE as u32,
            max_entries: 1,
            flags: 0,
            name: "rawload_state",
        })
        .context("creating the attach record map")?;
        map.update(&0u32.to_ne_bytes(), &self.encode()?, sys::BPF_ANY)
            .context("writing the attach record")?;
        pins.pin(map.as_fd(), RECORD_PIN)
    }

    /// Reads the record pinned in `dir`, if there is a readable one.
    pub fn read(dir: &PinDir) -> Result<Option<AttachRecord>> {
        let Some(fd) = dir.get(RECORD_PIN)? else {
            return Ok(None);
        };
        let map = MapFd::from_fd(fd).context("reading the attach record")?;
        if map.value_buf_len() != RECORD_SIZE || map.meta().key_size != 4 {
            return Ok(None);
        }
        let mut v = vec![0u8; RECORD_SIZE];
        if !map
            .lookup(&0u32.to_ne_bytes(), &mut v)
            .context("reading the attach record")?
        {
            return Ok(None);
        }
        Ok(AttachRecord::decode(&v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_round_trip() {
        let r = AttachRecord {
            cgroup: PathBuf::from("/sys/fs/cgroup/unified/test"),
            cgroup_id: 4242,
            stream_bytes: Some(1 << 20),
        };
        assert_eq!(AttachRecord::decode(&r.encode().unwrap()), Some(r.clone()));
        assert_eq!(AttachRecord::decode(&[0u8; RECORD_SIZE]), None);
        // No bound (0) and an object without one (None) stay apart.
        for stream_bytes in [Some(0), None] {
            let r = AttachRecord {
                stream_bytes,
                ..r.clone()
            };
            assert_eq!(AttachRecord::decode(&r.encode().unwrap()), Some(r));
        }
        // A record of an older rawload: no stream policy in it.
        let mut v1 = vec![0u8; RECORD_SIZE];
        v1[..8].copy_from_slice(RECORD_MAGIC_V1);
        v1[8..16].copy_from_slice(&7u64.to_le_bytes());
        v1[16..20].copy_from_slice(b"/cg\0");
        let old = AttachRecord::decode(&v1).unwrap();
        assert_eq!((old.cgroup_id, old.stream_bytes), (7, None));
        assert_eq!(old.cgroup, PathBuf::from("/cg"));
    }

    #[test]
    fn pin_names() {
        assert_eq!(map_pin_name(".rodata"), "map_rodata");
        assert_eq!(map_pin_name(".rodata.str1.1"), "map_rodata_str1_1");
        assert_eq!(map_pin_name("rawload_socks"), "map_rawload_socks");
        assert!(is_ours("prog_sockops") && is_ours("state") && !is_ours("other"));
    }
}
