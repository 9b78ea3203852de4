//! Private, throw-away places for `selftest` and `bench`: a child cgroup and
//! a pin directory of their own, removed on drop (also when a run fails).
//! Nothing outside them is ever touched.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use rawload_loader::attach;
use rawload_loader::pin::BPFFS_MOUNT;
use rawload_loader::pipeline::{self, AttachOptions, AttachOutcome, Attached, ObjectSource};

/// A child cgroup of the cgroup2 root, removed on drop after ending the
/// processes in it (only the caller's own children can be there).
#[derive(Debug)]
pub struct PrivateCgroup(PathBuf);

impl PrivateCgroup {
    /// Creates `<cgroup2 root>/<name>`.
    pub fn create(name: &str) -> Result<PrivateCgroup> {
        let path = attach::default_cgroup()?.join(name);
        std::fs::create_dir(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(PrivateCgroup(path))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for PrivateCgroup {
    fn drop(&mut self) {
        if !remove_private_cgroup(&self.0) {
            eprintln!("rawload: could not remove {}", self.0.display());
        }
    }
}

/// Removes a cgroup that only the caller's own processes ever joined, ending
/// them first with SIGKILL; retries for up to 2 s while they exit. Returns
/// whether the cgroup is gone.
pub fn remove_private_cgroup(cgroup: &Path) -> bool {
    for _ in 0..100 {
        let procs = std::fs::read_to_string(cgroup.join("cgroup.procs")).unwrap_or_default();
        for pid in procs.lines().filter_map(|p| p.trim().parse::<i32>().ok()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        match std::fs::remove_dir(cgroup) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                std::thread::sleep(Duration::from_millis(20))
            }
            _ => return true,
        }
    }
    false
}

/// Attaches `object` to `cgroup` with pins in `pins`, no port policy. Only
/// the caller's own processes ever join that cgroup, so all of them share
/// one network namespace (`single_netns`, which old kernels need).
pub fn attach_private(
    cgroup: &PrivateCgroup,
    pins: &PrivatePins,
    object: ObjectSource,
    stream_bytes: Option<u32>,
) -> Result<Attached> {
    match pipeline::attach(&AttachOptions {
        cgroup: cgroup.path().to_path_buf(),
        pin_dir: pins.path().to_path_buf(),
        objects: vec![object],
        ports: None,
        exclude_ports: None,
        max_sockets: None,
        single_netns: true,
        stream_bytes,
        cross_netns: false,
        connected: Vec::new(),
    })? {
        AttachOutcome::Attached(at) => Ok(at),
        AttachOutcome::AlreadyAttached { .. } => {
            bail!("a fresh pin directory reported an earlier attachment")
        }
    }
}

/// A pin directory under /sys/fs/bpf; whatever is attached through it is
/// detached and unpinned on drop.
#[derive(Debug)]
pub struct PrivatePins(PathBuf);

impl PrivatePins {
    pub fn new(name: &str) -> PrivatePins {
        PrivatePins(PathBuf::from(BPFFS_MOUNT).join(name))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for PrivatePins {
    fn drop(&mut self) {
        if self.0.exists() {
            let _ = pipeline::detach(&self.0, None);
        }
    }
}
