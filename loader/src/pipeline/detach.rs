//! `detach`: the attach undone, also long after `attach` exited, from what
//! the pin directory holds.

use std::os::fd::AsFd;
use std::path::Path;

use anyhow::{Result, bail};

use super::{DetachOutcome, Detached};
use crate::attach::{self, Cgroup};
use crate::maps::Map;
use crate::pin::{
    AttachRecord, PinDir, PinLock, SK_MSG_PIN, SOCK_OPS_PIN, SOCKET_MAP_PROGRAM_PINS,
};
use crate::privileges::{self, StopSignalsDeferred};

/// Undoes `attach` for the pin directory: detaches the programs, removes
/// the pins (and the directory when it is empty). Sockets already in the map
/// keep their programs until they close, so no unread data is lost; new
/// connections use plain TCP.
pub fn detach(pin_dir: &Path, cgroup: Option<&Path>) -> Result<DetachOutcome> {
    privileges::require("detach")?;
    if PinDir::existing(pin_dir)?.is_none() {
        return Ok(DetachOutcome::NotAttached);
    }
    let _lock = PinLock::take(pin_dir)?;
    // Looked at again under the lock: a concurrent detach may have won.
    let Some(dir) = PinDir::existing(pin_dir)? else {
        return Ok(DetachOutcome::NotAttached);
    };
    if AttachRecord::read(&dir)?.is_none() {
        return match dir.our_pins()?.is_empty() {
            // An attach killed right after making the directory.
            true => {
                let _ = std::fs::remove_dir(&dir.path);
                Ok(DetachOutcome::NotAttached)
            }
            false => bail!(
                "{} holds pins but no rawload attach record: they are not rawload's, so detach leaves them",
                dir.path.display()
            ),
        };
    }
    let _deferred = StopSignalsDeferred::new()?;
    detach_dir(&dir, cgroup).map(DetachOutcome::Detached)
}

/// Detaches what `dir`'s record names and removes rawload's pins.
pub(crate) fn detach_dir(dir: &PinDir, cgroup_arg: Option<&Path>) -> Result<Detached> {
    let Some(record) = AttachRecord::read(dir)? else {
        bail!("{} has no rawload attach record", dir.path.display());
    };
    let mut out = Detached::default();
    if let Some(prog) = dir.get(SOCK_OPS_PIN)? {
        let cgroup = recorded_cgroup(dir, &record, cgroup_arg)?;
        out.cgroup = Some(
            cgroup
                .as_ref()
                .map_or(record.cgroup.clone(), |cg| cg.path.clone()),
        );
        match cgroup {
            Some(cg) => out.sock_ops = cg.detach_sock_ops(prog.as_fd())?,
            None => out.cgroup_gone = true,
        }
    }
    out.socket_map_programs = detach_socket_map_programs(dir)?;
    out.foreign_entries = dir.clear()?;
    Ok(out)
}

/// The recorded cgroup, compared by id: paths differ between mount
/// namespaces (a container's /host/cgroup is the host's /sys/fs/cgroup),
/// ids do not. `--cgroup`, when given, must name the same one. None: the
/// cgroup is gone, and its attachment with it.
fn recorded_cgroup(
    dir: &PinDir,
    record: &AttachRecord,
    arg: Option<&Path>,
) -> Result<Option<Cgroup>> {
    let recorded = || Cgroup::recorded(&record.cgroup, record.cgroup_id);
    let Some(arg) = arg else {
        return Ok(recorded());
    };
    match Cgroup::open(arg) {
        Ok(cg) if cg.id == record.cgroup_id => Ok(Some(cg)),
        // The recorded path itself, now gone or a new cgroup.
        _ if arg == record.cgroup => Ok(recorded()),
        _ => bail!(
            "{} holds an attachment to {} (cgroup id {}), not to {}",
            dir.path.display(),
            record.cgroup.display(),
            record.cgroup_id,
            arg.display()
        ),
    }
}

/// Detaches the pinned sk_msg (and sk_skb) programs from the pinned socket
/// maps; returns the program types that were attached.
fn detach_socket_map_programs(dir: &PinDir) -> Result<Vec<&'static str>> {
    let mut detached = Vec::new();
    for (pin, attach_type) in SOCKET_MAP_PROGRAM_PINS {
        let Some(prog) = dir.get(pin)? else { continue };
        for name in dir.our_pins()?.iter().filter(|n| n.starts_with("map_")) {
            let Some(fd) = dir.get(name)? else { continue };
            let map = Map::from_fd(fd)?;
            if map.is_socket_map()
                && attach::detach_from_socket_map(map.as_fd(), prog.as_fd(), attach_type)?
            {
                detached.push(if pin == SK_MSG_PIN {
                    "sk_msg"
                } else {
                    "sk_skb"
                });
            }
        }
    }
    Ok(detached)
}
