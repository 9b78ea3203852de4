//! The phases before anything changes: reading and checking what `attach`
//! was asked to do, and taking over the pin directory (an attachment that
//! is already there, or the leftovers of one that was interrupted).

use std::os::fd::AsFd;

use anyhow::{Context, Result, bail};
use rawload_obj::combine::combine;
use rawload_obj::obj::{Object, ProgramSpec, RefKind};
use rawload_obj::uapi::ProgType;

use super::{
    AttachOptions, MAX_STREAM_BYTES, ObjectSource, detach_dir, objects_text, read_objects,
};
use crate::attach::Cgroup;
use crate::contract::{self, PORTS_MAP, global};
use crate::narrate;
use crate::pin::{AttachRecord, PinDir, SOCK_OPS_PIN};
use crate::policy::PortPolicy;

/// What `attach` works from once the options are checked.
pub struct Plan {
    pub cgroup: Cgroup,
    pub obj: Object,
    pub sock_ops: ProgramSpec,
    pub sk_msg: ProgramSpec,
    /// Index in `obj.maps` of the map sk_msg redirects through.
    pub socket_map: usize,
    pub ports: PortPolicy,
}

/// Opens the cgroup, reads the object and holds the options against it.
pub fn check_options(opts: &AttachOptions) -> Result<Plan> {
    let cgroup = Cgroup::open(&opts.cgroup)?;
    narrate!(
        "1. cgroup {} is cgroup v2 (id {}): sock_ops will see its sockets",
        cgroup.path.display(),
        cgroup.id
    );
    let obj = read_set(&opts.objects)?;
    let sock_ops = obj.program(ProgType::SOCK_OPS)?.clone();
    let sk_msg = obj.program(ProgType::SK_MSG)?.clone();
    let socket_map = socket_map(&obj, &sk_msg)?;
    narrate!(
        "2. read {}: programs {}, maps {} (rawload explain shows all of it)",
        objects_text(&opts.objects),
        obj.programs
            .iter()
            .map(|p| p.name.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        obj.maps
            .iter()
            .map(|m| m.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let ports = PortPolicy {
        allow: opts.ports.clone(),
        deny: opts.exclude_ports.clone(),
    };
    object_takes_options(&obj, opts, &ports)?;
    Ok(Plan {
        cgroup,
        obj,
        sock_ops,
        sk_msg,
        socket_map,
        ports,
    })
}

/// Reads the objects, holds each to the contract, and combines them into
/// one set: maps of one name become one map (`rawload_obj::combine`).
fn read_set(sources: &[ObjectSource]) -> Result<Object> {
    let objects = read_objects(sources)?;
    for ((_, obj), source) in objects.iter().zip(sources) {
        contract::check(obj).with_context(|| format!("checking {source}"))?;
    }
    Ok(combine(objects)?.object)
}

/// The options a custom `--object` cannot honour fail here, not later.
fn object_takes_options(obj: &Object, opts: &AttachOptions, ports: &PortPolicy) -> Result<()> {
    let port_globals =
        obj.global(global::PORT_ALLOW).is_some() && obj.global(global::PORT_DENY).is_some();
    if !ports.is_empty() && (obj.map_index(PORTS_MAP).is_none() || !port_globals) {
        bail!(
            "--ports and --exclude-ports need an object with the '{PORTS_MAP}' map and port policy globals (like the embedded one)"
        );
    }
    if obj.global(global::STREAM_BYTES).is_none() && opts.stream_bytes.is_some_and(|n| n > 0) {
        bail!(
            "--stream-bytes needs an object with the '{}' global (like the embedded one)",
            global::STREAM_BYTES
        );
    }
    if opts.stream_bytes.is_some_and(|n| n > MAX_STREAM_BYTES) {
        bail!("--stream-bytes must be at most {MAX_STREAM_BYTES} (1G)");
    }
    Ok(())
}

/// The socket map the sk_msg program redirects through: the one SOCKHASH
/// (or SOCKMAP) it references.
pub fn socket_map(obj: &Object, sk_msg: &ProgramSpec) -> Result<usize> {
    let mut candidates: Vec<usize> = sk_msg
        .map_refs
        .iter()
        .filter(|r| r.kind == RefKind::Map)
        .map(|r| r.map)
        .filter(|&i| obj.maps[i].map_type.is_socket_map())
        .collect();
    candidates.sort_unstable();
    candidates.dedup();
    match candidates.as_slice() {
        [one] => Ok(*one),
        [] => bail!(
            "the sk_msg program '{}' uses no SOCKHASH or SOCKMAP to redirect through",
            sk_msg.name
        ),
        _ => bail!(
            "the sk_msg program '{}' uses more than one socket map",
            sk_msg.name
        ),
    }
}

/// What the pin directory held.
pub enum Recovery {
    /// Nothing of rawload's, or leftovers cleaned up (true).
    Ready { recovered: bool },
    /// A live attachment to this very cgroup: nothing to do.
    AlreadyAttached(AttachRecord),
}

/// Takes over the pin directory: refuses one that holds a live attachment
/// to another cgroup, cleans the leftovers of an interrupted attach (there
/// is a record, nothing is attached), and touches nothing without a record.
pub fn recover_pin_dir(opts: &AttachOptions, cgroup: &Cgroup) -> Result<Recovery> {
    narrate!(
        "3. {} is on bpffs; looking for an earlier attachment there",
        opts.pin_dir.display()
    );
    let Some(dir) = PinDir::existing(&opts.pin_dir)? else {
        return Ok(Recovery::Ready { recovered: false });
    };
    match live_attachment(&dir)? {
        Some(r) if r.cgroup_id == cgroup.id => Ok(Recovery::AlreadyAttached(r)),
        Some(r) => bail!(
            "pin directory {} already holds an attachment to {}; run `rawload detach --pin-dir {}` first, or use another --pin-dir",
            dir.path.display(),
            r.cgroup.display(),
            dir.path.display()
        ),
        None if AttachRecord::read(&dir)?.is_some() => {
            // Leftovers of an interrupted attach or a removed cgroup.
            detach_dir(&dir, None)?;
            Ok(Recovery::Ready { recovered: true })
        }
        None if dir.our_pins()?.is_empty() => {
            // An attach killed right after making the directory.
            let _ = std::fs::remove_dir(&dir.path);
            Ok(Recovery::Ready { recovered: false })
        }
        None => bail!(
            "pin directory {} holds pins but no rawload attach record: they are not rawload's; use another --pin-dir",
            dir.path.display()
        ),
    }
}

/// The attachment recorded in `dir` if it is live: the record and the
/// pinned sock_ops program exist, and that program is attached to the
/// recorded cgroup, found by its id (paths differ between mount namespaces).
fn live_attachment(dir: &PinDir) -> Result<Option<AttachRecord>> {
    let (Some(record), Some(prog)) = (AttachRecord::read(dir)?, dir.get(SOCK_OPS_PIN)?) else {
        return Ok(None);
    };
    let Some(cgroup) = Cgroup::recorded(&record.cgroup, record.cgroup_id) else {
        return Ok(None);
    };
    let (info, _) =
        crate::sys::prog_info(prog.as_fd()).context("reading the pinned sock_ops program")?;
    let (_, attached) = cgroup.sock_ops_programs()?;
    Ok(attached.contains(&info.id).then_some(record))
}
