//! `rawload status`: what is attached, read back from the kernel.
//!
//! Everything comes from the pins and from the kernel's own answers
//! (`BPF_OBJ_GET_INFO_BY_FD`, `BPF_PROG_QUERY`, `BPF_MAP_GET_NEXT_KEY`), so
//! the report agrees with `bpftool prog show`, `bpftool map show` and
//! `bpftool cgroup show`, plus what bpftool cannot know: the number of
//! sockets in the map and the programs' counters.

use std::fmt::Write as _;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::json::{Json, obj};
use rawload_loader::attach::{self, Cgroup};
use rawload_loader::maps::Map;
use rawload_loader::pin::{AttachRecord, PinDir, SOCK_OPS_PIN, SOCKET_MAP_PROGRAM_PINS};
use rawload_loader::sys;
use rawload_obj::uapi::{AttachType, MapType, ProgType};

use rawload_loader::contract::{CONNS_MAP, COUNTER_NAMES, STATS_MAP};

#[derive(Debug, Clone)]
pub struct ProgStatus {
    pub id: u32,
    pub prog_type: ProgType,
    pub name: String,
    pub tag: String,
    pub map_ids: Vec<u32>,
    pub loaded_secs_ago: Option<u64>,
    pub run_cnt: u64,
    pub run_time_ns: u64,
    /// Where it is attached, as the kernel reports it (None: cannot tell).
    pub attached: Option<bool>,
}

#[derive(Debug, Clone)]
pub struct MapStatus {
    pub id: u32,
    pub map_type: MapType,
    pub name: String,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
    pub entries: usize,
}

#[derive(Debug, Clone)]
pub struct Status {
    pub pin_dir: PathBuf,
    pub cgroup: Option<PathBuf>,
    pub cgroup_id: Option<u64>,
    /// Attach flags of the cgroup's sock_ops hook and every program there
    /// (id and name, ours or not).
    pub cgroup_flags: Option<u32>,
    pub cgroup_programs: Vec<(u32, String)>,
    /// `--stream-bytes` as loaded (0: streams stay redirected; None: not
    /// recorded).
    pub stream_bytes: Option<u32>,
    pub programs: Vec<ProgStatus>,
    pub maps: Vec<MapStatus>,
    /// The counters summed over CPUs, if the object has them.
    pub counters: Vec<(String, u64)>,
    /// Other rawload programs still loaded on this host.
    pub others: Vec<(u32, String)>,
}

/// How many entries a map holds; for `rawload_conns`, an array of slots,
/// how many slots are in use (the programs leave a free slot all zeros).
fn entries(map: &Map) -> Result<usize> {
    if map.meta().name != CONNS_MAP {
        return Ok(map.keys()?.len());
    }
    let mut used = 0;
    for i in 0..map.meta().max_entries {
        if map
            .lookup(&i.to_ne_bytes())?
            .is_some_and(|v| v.iter().any(|&b| b != 0))
        {
            used += 1;
        }
    }
    Ok(used)
}

impl Status {
    /// sock_ops and sk_msg (and the sk_skb verdict where there is one) are
    /// loaded and attached where they should be. Before 5.19 the kernel cannot
    /// list a sockmap's programs (`attached` is `None`): the pinned programs
    /// then count as attached, as the pins exist only after the attach.
    pub fn attached(&self) -> bool {
        let has = |t| self.programs.iter().any(|p| p.prog_type == t);
        has(ProgType::SOCK_OPS)
            && has(ProgType::SK_MSG)
            && self.programs.iter().all(|p| p.attached != Some(false))
    }

    pub fn counter(&self, name: &str) -> Option<u64> {
        self.counters
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| *v)
    }
}

/// The name of a loaded program, by id (`BPF_PROG_GET_FD_BY_ID`).
fn prog_name(id: u32) -> Result<Option<String>> {
    let Some(fd) = sys::prog_fd_by_id(id)? else {
        return Ok(None);
    };
    Ok(Some(sys::cstr_field(&sys::prog_info(fd.as_fd())?.0.name)))
}

/// rawload programs loaded on this host other than `except`: after a detach
/// or a re-attach, connections opened earlier keep their programs alive
/// until they close; another --pin-dir may hold more.
pub fn other_rawload_programs(except: &[u32]) -> Result<Vec<(u32, String)>> {
    let mut found = Vec::new();
    let mut id = 0;
    while let Some(next) = sys::prog_next_id(id).context("listing loaded programs")? {
        id = next;
        if except.contains(&id) {
            continue;
        }
        if let Some(name) = prog_name(id)? {
            if name.starts_with("rawload_") {
                found.push((id, name));
            }
        }
    }
    Ok(found)
}

fn uptime_secs() -> Option<f64> {
    std::fs::read_to_string("/proc/uptime")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Reads the attachment behind `pin_dir`; `None` if nothing is pinned there.
pub fn read(pin_dir: &Path) -> Result<Option<Status>> {
    rawload_loader::privileges::require("status")?;
    let Some(dir) = PinDir::existing(pin_dir)? else {
        return Ok(None);
    };
    if dir.our_pins()?.is_empty() {
        return Ok(None);
    }
    let record = AttachRecord::read(&dir)?;
    let cgroup = record
        .as_ref()
        .and_then(|r| Cgroup::recorded(&r.cgroup, r.cgroup_id));
    let (cgroup_flags, cgroup_programs) = cgroup_programs(cgroup.as_ref())?;
    let pinned = read_maps(&dir)?;
    let programs = read_programs(&dir, &cgroup_programs, pinned.socket_map.as_ref())?;
    let ours: Vec<u32> = programs.iter().map(|p| p.id).collect();
    Ok(Some(Status {
        others: other_rawload_programs(&ours)?,
        pin_dir: pin_dir.to_path_buf(),
        stream_bytes: record.as_ref().and_then(|r| r.stream_bytes),
        // Where the cgroup is now in this mount namespace, else as recorded.
        cgroup: cgroup
            .as_ref()
            .map(|c| c.path.clone())
            .or(record.map(|r| r.cgroup)),
        cgroup_id: cgroup.as_ref().map(|c| c.id),
        cgroup_flags,
        cgroup_programs,
        programs,
        maps: pinned.maps,
        counters: pinned.counters,
    }))
}

/// A program's id and name.
type NamedProgram = (u32, String);

/// The cgroup's sock_ops attach flags and programs, ours or not.
fn cgroup_programs(cgroup: Option<&Cgroup>) -> Result<(Option<u32>, Vec<NamedProgram>)> {
    let Some(cgroup) = cgroup else {
        return Ok((None, Vec::new()));
    };
    let (flags, ids) = cgroup.sock_ops_programs()?;
    let mut programs = Vec::new();
    for id in ids {
        programs.push((id, prog_name(id)?.unwrap_or_default()));
    }
    Ok((Some(flags), programs))
}

/// What the pinned maps hold.
struct PinnedMaps {
    maps: Vec<MapStatus>,
    /// Open, to ask which programs are attached to it.
    socket_map: Option<Map>,
    /// The counters summed over CPUs.
    counters: Vec<(String, u64)>,
}

fn read_maps(dir: &PinDir) -> Result<PinnedMaps> {
    let (mut maps, mut socket_map, mut counters) = (Vec::new(), None, Vec::new());
    for name in dir.our_pins()?.iter().filter(|n| n.starts_with("map_")) {
        let Some(fd) = dir.get(name)? else { continue };
        let map = Map::from_fd(fd)?;
        let m = map.meta();
        maps.push(MapStatus {
            id: m.id,
            map_type: m.map_type,
            name: m.name.clone(),
            key_size: m.key_size,
            value_size: m.value_size,
            max_entries: m.max_entries,
            entries: entries(&map)?,
        });
        if m.name == STATS_MAP && m.value_size as usize == COUNTER_NAMES.len() * 8 {
            counters = sum_counters(&map)?;
        }
        if map.is_socket_map() {
            socket_map = Some(map);
        }
    }
    Ok(PinnedMaps {
        maps,
        socket_map,
        counters,
    })
}

/// The pinned programs, each with whether it is attached where it should be.
fn read_programs(
    dir: &PinDir,
    cgroup_programs: &[NamedProgram],
    socket_map: Option<&Map>,
) -> Result<Vec<ProgStatus>> {
    let uptime = uptime_secs();
    let mut programs = Vec::new();
    let pins =
        std::iter::once((SOCK_OPS_PIN, AttachType::CGROUP_SOCK_OPS)).chain(SOCKET_MAP_PROGRAM_PINS);
    for (pin, attach_type) in pins {
        let Some(fd) = dir.get(pin)? else { continue };
        let (info, map_ids) =
            sys::prog_info(fd.as_fd()).with_context(|| format!("reading {pin}"))?;
        let attached = match ProgType(info.prog_type) {
            ProgType::SOCK_OPS => Some(cgroup_programs.iter().any(|(id, _)| *id == info.id)),
            // The kernel can list a sockmap's programs only since 5.19.
            _ => socket_map
                .and_then(|m| attach::socket_map_programs(m.as_fd(), attach_type))
                .map(|ids| ids.contains(&info.id)),
        };
        programs.push(ProgStatus {
            id: info.id,
            prog_type: ProgType(info.prog_type),
            name: sys::cstr_field(&info.name),
            tag: hex(&info.tag),
            map_ids,
            loaded_secs_ago: uptime.map(|u| (u - info.load_time as f64 / 1e9).max(0.0) as u64),
            run_cnt: info.run_cnt,
            run_time_ns: info.run_time_ns,
            attached,
        });
    }
    Ok(programs)
}

/// Sums a per-CPU `struct counters` over all CPUs.
fn sum_counters(map: &Map) -> Result<Vec<(String, u64)>> {
    let Some(values) = map.lookup(&0u32.to_ne_bytes())? else {
        return Ok(Vec::new());
    };
    let per_cpu = (map.meta().value_size as usize).next_multiple_of(8);
    Ok(COUNTER_NAMES
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let total = values
                .chunks_exact(per_cpu)
                .map(|cpu| {
                    u64::from_ne_bytes(cpu[i * 8..i * 8 + 8].try_into().expect("8-byte slice"))
                })
                .fold(0u64, u64::wrapping_add);
            (name.to_string(), total)
        })
        .collect())
}

fn flags_name(flags: u32) -> &'static str {
    match flags {
        0 => "exclusive",
        1 => "override",
        f if f & rawload_obj::uapi::BPF_F_ALLOW_MULTI != 0 => "multi",
        _ => "other",
    }
}

/// Human-readable report.
pub fn render(s: &Status) -> String {
    let mut o = String::new();
    let state = if s.attached() {
        "attached"
    } else {
        "NOT fully attached"
    };
    let _ = writeln!(o, "rawload is {state} (pins in {})", s.pin_dir.display());
    render_cgroup(&mut o, s);
    let policy = match s.stream_bytes {
        Some(0) => Some(rawload_loader::pipeline::StreamPolicy::NeverAsked),
        Some(n) => Some(rawload_loader::pipeline::StreamPolicy::After(n)),
        None => None,
    };
    if let Some(line) = policy.and_then(|p| p.describe()) {
        let _ = writeln!(o, "bound     {line}");
    }
    render_programs(&mut o, &s.programs);
    let _ = writeln!(o, "maps");
    for m in &s.maps {
        let _ = writeln!(
            o,
            "  {:>5}  {:<12}  {:<16} key {:>2} B  value {:>4} B  entries {}/{}",
            m.id,
            m.map_type.name(),
            m.name,
            m.key_size,
            m.value_size,
            m.entries,
            m.max_entries
        );
    }
    if !s.others.is_empty() {
        let _ = writeln!(o, "{}", others_note(&s.others));
    }
    if !s.counters.is_empty() {
        let _ = writeln!(o, "counters (all CPUs)");
        for (name, v) in &s.counters {
            let _ = writeln!(o, "  {name:<18} {v}");
        }
    }
    o
}

fn render_cgroup(o: &mut String, s: &Status) {
    let _ = match (&s.cgroup, s.cgroup_id) {
        (Some(path), Some(id)) => writeln!(
            o,
            "cgroup    {} (id {id}); sock_ops programs there [{}]: {}",
            path.display(),
            s.cgroup_flags.map_or("?", flags_name),
            s.cgroup_programs
                .iter()
                .map(|(id, name)| format!("{id} {name}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        (Some(path), None) => writeln!(o, "cgroup    {} no longer exists", path.display()),
        _ => writeln!(o, "cgroup    unknown (no attach record)"),
    };
}

fn render_programs(o: &mut String, programs: &[ProgStatus]) {
    let _ = writeln!(o, "programs");
    for p in programs {
        let attached = match p.attached {
            Some(true) => "attached",
            Some(false) => "NOT attached",
            None => "attached (recorded; this kernel cannot list sockmap programs)",
        };
        let _ = write!(
            o,
            "  {:>5}  {:<8}  {:<16} tag {}  maps {:?}  {attached}",
            p.id,
            p.prog_type.name(),
            p.name,
            p.tag,
            p.map_ids
        );
        if let Some(age) = p.loaded_secs_ago {
            let _ = write!(o, "  loaded {age}s ago");
        }
        if p.run_cnt > 0 {
            let _ = write!(
                o,
                "  runs {} ({} ns avg)",
                p.run_cnt,
                p.run_time_ns / p.run_cnt.max(1)
            );
        }
        o.push('\n');
    }
}

/// "12 rawload_sockops, 13 rawload_sk_msg"
/// One line on rawload programs loaded besides this attachment's.
pub fn others_note(others: &[(u32, String)]) -> String {
    format!(
        "other rawload programs loaded: {} (another --pin-dir, connections open since before a detach, or not yet freed by the kernel)",
        others
            .iter()
            .map(|(id, name)| format!("{id} {name}"))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

fn programs_json(list: &[(u32, String)]) -> Json {
    Json::Arr(
        list.iter()
            .map(|(id, name)| obj([("id", (*id).into()), ("name", name.clone().into())]))
            .collect(),
    )
}

/// The same as JSON (`status --json`). `others` are rawload programs loaded
/// without an attachment in `pin_dir` (used when nothing is attached).
pub fn to_json(s: Option<&Status>, pin_dir: &Path, others: &[(u32, String)]) -> Json {
    let Some(s) = s else {
        return obj([
            ("attached", false.into()),
            ("pin_dir", pin_dir.display().to_string().into()),
            ("other_rawload_programs", programs_json(others)),
        ]);
    };
    let programs = s
        .programs
        .iter()
        .map(|p| {
            obj([
                ("id", p.id.into()),
                ("type", p.prog_type.name().into()),
                ("name", p.name.clone().into()),
                ("tag", p.tag.clone().into()),
                ("map_ids", p.map_ids.clone().into()),
                ("attached", p.attached.into()),
                ("loaded_secs_ago", p.loaded_secs_ago.into()),
                ("run_cnt", p.run_cnt.into()),
                ("run_time_ns", p.run_time_ns.into()),
            ])
        })
        .collect();
    let maps = s
        .maps
        .iter()
        .map(|m| {
            obj([
                ("id", m.id.into()),
                ("type", m.map_type.name().into()),
                ("name", m.name.clone().into()),
                ("key_size", m.key_size.into()),
                ("value_size", m.value_size.into()),
                ("max_entries", m.max_entries.into()),
                ("entries", m.entries.into()),
            ])
        })
        .collect();
    let counters = Json::Obj(
        s.counters
            .iter()
            .map(|(k, v)| (k.clone(), (*v).into()))
            .collect(),
    );
    obj([
        ("attached", s.attached().into()),
        ("pin_dir", s.pin_dir.display().to_string().into()),
        ("stream_bytes", s.stream_bytes.into()),
        (
            "cgroup",
            obj([
                (
                    "path",
                    s.cgroup.as_ref().map(|p| p.display().to_string()).into(),
                ),
                ("id", s.cgroup_id.into()),
                ("attach_flags", s.cgroup_flags.map(flags_name).into()),
                ("sock_ops_programs", programs_json(&s.cgroup_programs)),
            ]),
        ),
        ("programs", Json::Arr(programs)),
        ("maps", Json::Arr(maps)),
        ("counters", counters),
        ("other_rawload_programs", programs_json(&s.others)),
    ])
}
