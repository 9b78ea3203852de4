//! The phases that create kernel objects and attach them: maps (with their
//! initial data), programs (relocated against the maps' descriptors), then
//! the attachments and pins, in the order module [`super`] explains. Each
//! attachment and each pin undoes itself if a later step fails.

use std::os::fd::{AsFd, RawFd};

use anyhow::Result;
use rawload_obj::obj::{Object, ProgramSpec};
use rawload_obj::reloc;
use rawload_obj::uapi::{self, ProgType};

use super::check::Plan;
use super::configure::Config;
use super::{AttachOptions, CrossNetns, StreamPolicy, kill_point};
use crate::attach::MapAttachment;
use crate::contract::{ADDRS_MAP, OWNERS_MAP, PORTS_MAP};
use crate::hostnet::{self, Cidr, Synced};
use crate::maps::Map;
use crate::narrate;
use crate::pin::{self, AttachRecord, NewPins, PinDir, SK_MSG_PIN, SK_SKB_PIN, SOCK_OPS_PIN};
use crate::policy::{self, PortPolicy};
use crate::programs::Program;

/// What step 7 wrote into the policy maps.
pub struct Filled {
    pub host_addresses: usize,
    pub owners: Option<Synced>,
}

/// The maps, created and filled: the programs' instructions need their fds.
pub fn create_maps(
    plan: &Plan,
    opts: &AttachOptions,
    config: &Config,
) -> Result<(Vec<Map>, Filled)> {
    narrate!("6. create the maps (global data gets its initial bytes; .rodata is frozen)");
    let mut maps = Vec::with_capacity(plan.obj.maps.len());
    for (i, spec) in plan.obj.maps.iter().enumerate() {
        // rawload_conns was sized with it in configure (conn_slots).
        let sized = i == plan.socket_map;
        let map = Map::create(spec, opts.max_sockets.filter(|_| sized))?;
        narrate!("   map {} -> fd {}", spec.name, map.raw_fd());
        maps.push(map);
    }
    narrate!(
        "7. fill the policy maps: this host's addresses, the port policy, the addresses each namespace owns"
    );
    let host_addresses = fill_policy_maps(&plan.obj, &maps, &plan.ports)?;
    let owners = match (config.cross_netns, plan.obj.map_index(OWNERS_MAP)) {
        (CrossNetns::On, Some(i)) => Some(fill_owners(&maps[i], &opts.connected)?),
        _ => None,
    };
    kill_point("maps-created");
    Ok((
        maps,
        Filled {
            host_addresses,
            owners,
        },
    ))
}

/// Scans the host's namespaces into `rawload_owners` (module [`hostnet`]).
fn fill_owners(map: &Map, connected: &[Cidr]) -> Result<Synced> {
    let synced = hostnet::sync(map, hostnet::discover(connected)?)?;
    for o in &synced.owners.owned {
        narrate!(
            "    {OWNERS_MAP}: {} -> netns cookie {} ({})",
            o.ip,
            o.cookie,
            o.holder
        );
    }
    for (ip, n) in &synced.owners.shared {
        narrate!("    {OWNERS_MAP}: not {ip}: held by {n} namespaces, their sockets stay apart");
    }
    Ok(synced)
}

/// Writes this host's addresses and the port policy into the object's
/// policy maps, when it has them. Returns the number of addresses written.
fn fill_policy_maps(obj: &Object, maps: &[Map], ports: &PortPolicy) -> Result<usize> {
    let mut written = 0;
    if let Some(i) = obj.map_index(ADDRS_MAP) {
        let capacity = maps[i].meta().max_entries as usize;
        let addrs = policy::host_addresses()?;
        if addrs.len() > capacity {
            eprintln!(
                "rawload: warning: this host has {} addresses; only the first {capacity} are treated as local",
                addrs.len()
            );
        }
        for ip in addrs.into_iter().take(capacity) {
            narrate!(
                "    {ADDRS_MAP}: {ip} (as {})",
                std::net::Ipv6Addr::from(policy::key_address(ip))
            );
            maps[i].update(&policy::key_address(ip), &[1])?;
            written += 1;
        }
    }
    if let (Some(i), false) = (obj.map_index(PORTS_MAP), ports.is_empty()) {
        maps[i].update(&0u32.to_ne_bytes(), &ports.map_value())?;
    }
    Ok(written)
}

/// The loaded programs: sock_ops, sk_msg, and the sk_skb verdict where
/// FIONREAD needs it.
pub struct Programs {
    pub sock_ops: Program,
    pub sk_msg: Program,
    pub sk_skb: Option<Program>,
}

impl Programs {
    /// The programs attached to the socket map, with their pin names.
    fn on_socket_map(&self) -> impl Iterator<Item = (&Program, &'static str)> {
        std::iter::once((&self.sk_msg, SK_MSG_PIN))
            .chain(self.sk_skb.as_ref().map(|p| (p, SK_SKB_PIN)))
    }

    pub fn names(&self) -> Vec<String> {
        std::iter::once(&self.sock_ops)
            .chain(self.on_socket_map().map(|(p, _)| p))
            .map(|p| p.name.clone())
            .collect()
    }
}

/// Relocates each program against the maps' fds and loads it.
pub fn load_programs(plan: &Plan, maps: &[Map], config: &Config) -> Result<Programs> {
    let fds: Vec<RawFd> = maps.iter().map(Map::raw_fd).collect();
    let load = |step: &str, spec: &ProgramSpec| load_program(&plan.obj, &fds, step, spec);
    let sock_ops = load("8a", &plan.sock_ops)?;
    let sk_msg = load("8b", &plan.sk_msg)?;
    let sk_skb = match plan.obj.optional_program(ProgType::SK_SKB)? {
        Some(spec) if config.fionread.attached() => Some(load("8c", spec)?),
        _ => None,
    };
    let programs = Programs {
        sock_ops,
        sk_msg,
        sk_skb,
    };
    kill_point("programs-loaded");
    Ok(programs)
}

fn load_program(obj: &Object, fds: &[RawFd], step: &str, spec: &ProgramSpec) -> Result<Program> {
    let insns = reloc::apply(spec, fds)?;
    narrate!(
        "{step}. relocate and load {} ({} instructions, {} patched):",
        spec.name,
        insns.len(),
        narrate::counted(spec.map_refs.len(), "map reference", "map references")
    );
    for r in &spec.map_refs {
        narrate!(
            "   insn {:>4}: ld_imm64 {} -> src_reg {} imm {} (fd of {})",
            r.insn,
            r.symbol,
            insns[r.insn].src(),
            insns[r.insn].imm,
            obj.maps[r.map].name
        );
    }
    Ok(Program::load(
        &spec.name,
        spec.kind,
        &insns,
        &obj.license,
        obj.kern_version,
    )?)
}

/// Attaches and pins, in the order that keeps every interruption
/// recoverable: the socket map's programs (before any socket can enter the
/// map: a socket copies them when it is inserted), then the record, the
/// programs and the maps under the pin directory, then sock_ops on the
/// cgroup, after which nothing can fail. If a step fails, what the earlier
/// ones did undoes itself as it is dropped.
pub fn attach_and_pin(
    opts: &AttachOptions,
    plan: &Plan,
    maps: &[Map],
    programs: &Programs,
    config: &Config,
) -> Result<()> {
    let socket_map = &maps[plan.socket_map];
    let mut attached = Vec::new();
    for ((prog, _), step) in programs.on_socket_map().zip(["9a", "9b"]) {
        let attach_type = prog.kind.expected_attach_type;
        narrate!(
            "{step}. attach {} to {} ({}), before sockets can enter the map: they copy its programs then",
            prog.name,
            socket_map.meta().name,
            attach_type.name()
        );
        attached.push(MapAttachment::attach(
            socket_map.as_fd(),
            prog.as_fd(),
            attach_type,
        )?);
    }
    kill_point("sk-msg-attached");

    narrate!(
        "10. pin the record, the programs and every map under {} (mode 0700)",
        opts.pin_dir.display()
    );
    let dir = PinDir::create(&opts.pin_dir)?;
    let mut pins = NewPins::new(&dir);
    pin_everything(&mut pins, plan, maps, programs, config)?;

    narrate!(
        "11. attach {} to {} (BPF_CGROUP_SOCK_OPS, flags BPF_F_ALLOW_MULTI = {:#x})",
        programs.sock_ops.name,
        plan.cgroup.path.display(),
        uapi::BPF_F_ALLOW_MULTI
    );
    plan.cgroup.attach_sock_ops(programs.sock_ops.as_fd())?;
    pins.commit();
    attached.into_iter().for_each(MapAttachment::commit);
    kill_point("cgroup-attached");
    Ok(())
}

/// The record first (so that a later `detach` knows the directory is
/// rawload's), then the programs, then the maps.
fn pin_everything(
    pins: &mut NewPins<'_>,
    plan: &Plan,
    maps: &[Map],
    programs: &Programs,
    config: &Config,
) -> Result<()> {
    kill_point("pin-dir-created");
    let record = AttachRecord {
        cgroup: plan.cgroup.path.clone(),
        cgroup_id: plan.cgroup.id,
        stream_bytes: match config.streams {
            StreamPolicy::NotInObject => None,
            streams => Some(streams.bytes()),
        },
    };
    record.pin(pins)?;
    kill_point("record-pinned");
    pins.pin(programs.sock_ops.as_fd(), SOCK_OPS_PIN)?;
    for (prog, name) in programs.on_socket_map() {
        pins.pin(prog.as_fd(), name)?;
    }
    kill_point("programs-pinned");
    for (spec, map) in plan.obj.maps.iter().zip(maps) {
        pins.pin(map.as_fd(), &pin::map_pin_name(&spec.name))?;
    }
    kill_point("maps-pinned");
    Ok(())
}
