//! `attach` and `detach`: the whole pipeline, in order, with undo.
//!
//! ```text
//! object bytes ─elf::parse─> Object ─Map::create─> maps ─reloc::apply─> Program::load
//!      ─attach_to_socket_map─> SOCKHASH ─pin─> /sys/fs/bpf/... ─attach_sock_ops─> cgroup
//! ```
//!
//! Every step that changes the system registers how to undo it; if a later
//! step fails, the undo steps run in reverse and the system is as before.
//! The cgroup attach is last, so nothing that can fail comes after it, and
//! everything `detach` needs (pins and the attach record) exists before it:
//! an attach killed at any point leaves either nothing or a state that
//! `detach` (or the next `attach`) cleans up.
//!
//! The torture suite proves that last claim: `RAWLOAD_KILL_AT=<step>` makes
//! the process SIGKILL itself right after the named step ([`KILL_POINTS`]).

use rawload_obj::uapi::{MapType, ProgType};
use std::borrow::Cow;
use std::fmt;
use std::os::fd::{AsFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use nix::sys::signal::{SigSet, Signal};

use crate::attach::{self, Cgroup};
use crate::maps::Map;
use crate::narrate;
use crate::pin::{
    self, AttachRecord, PinDir, SK_MSG_PIN, SK_SKB_PIN, SOCK_OPS_PIN, SOCKET_MAP_PROGRAM_PINS,
};
use crate::policy::{self, PortPolicy, PortSet};
use crate::probe::{self, Memlock};
use crate::programs::Program;
use rawload_obj::elf;
use rawload_obj::kfield::{self, KField};
use rawload_obj::obj::{Object, ProgramSpec, RefKind};
use rawload_obj::reloc;

use crate::contract::{
    self, ADDRS_MAP, CONNS_MAP, DEBUG_OBJECT, PORTS_MAP, RELEASE_OBJECT, global,
};

/// The most bytes a connection redirects that its peer has not read; then
/// it continues over TCP, whose flow control blocks the writer
/// (`--stream-bytes`). Of the order of TCP's own buffers: loopback TCP
/// queues about 3 MiB (sender and receiver together) before a writer sees
/// EAGAIN here.
pub const DEFAULT_STREAM_BYTES: u32 = 1 << 20;
/// The largest `--stream-bytes` (the program adds message sizes to it in 32 bits).
pub const MAX_STREAM_BYTES: u32 = 1 << 30;

/// Which eBPF object to load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ObjectSource {
    /// The embedded release object, or with `debug` the one that prints
    /// trace lines.
    Embedded {
        debug: bool,
    },
    File(PathBuf),
}

impl ObjectSource {
    pub fn bytes(&self) -> Result<Cow<'static, [u8]>> {
        Ok(match self {
            ObjectSource::Embedded { debug: false } => Cow::Borrowed(RELEASE_OBJECT),
            ObjectSource::Embedded { debug: true } => Cow::Borrowed(DEBUG_OBJECT),
            ObjectSource::File(path) => Cow::Owned(
                std::fs::read(path)
                    .with_context(|| format!("reading object {}", path.display()))?,
            ),
        })
    }

    pub fn parse(&self) -> Result<Object> {
        elf::parse(&self.bytes()?).with_context(|| format!("reading {self}"))
    }
}

impl fmt::Display for ObjectSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ObjectSource::Embedded { debug: false } => {
                f.write_str("the embedded object (prebuilt/rawload.bpf.o)")
            }
            ObjectSource::Embedded { debug: true } => {
                f.write_str("the embedded debug object (prebuilt/rawload-debug.bpf.o)")
            }
            ObjectSource::File(p) => write!(f, "object {}", p.display()),
        }
    }
}

#[derive(Debug, Clone)]
pub struct AttachOptions {
    pub cgroup: PathBuf,
    pub pin_dir: PathBuf,
    pub object: ObjectSource,
    /// Only connections with one of these ports are accelerated.
    pub ports: Option<PortSet>,
    /// Connections with one of these ports are never accelerated.
    pub exclude_ports: Option<PortSet>,
    /// Capacity of the socket map (default: the object's max_entries).
    pub max_sockets: Option<u32>,
    /// The operator asserts that every process in the cgroup shares one
    /// network namespace (needed where keys cannot include it, before 5.15).
    pub single_netns: bool,
    /// Unanswered bytes after which a socket moves to TCP (0: never; None:
    /// DEFAULT_STREAM_BYTES when the object supports it).
    pub stream_bytes: Option<u32>,
}

/// Whether socket keys tell network namespaces apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetnsKeys {
    /// The kernel has bpf_get_netns_cookie and the object uses it.
    Yes,
    /// The kernel lacks it (before 5.15); attached with --single-netns.
    NoKernelSupport,
    /// The object does not key by namespace (a custom --object).
    NotInObject,
}

/// The backpressure bound (`cfg_stream_bytes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamPolicy {
    /// A connection redirects at most this many bytes its peer has not read
    /// (the default, or --stream-bytes).
    After(u32),
    /// No bound: --stream-bytes 0.
    NeverAsked,
    /// The object has no `cfg_stream_bytes`.
    NotInObject,
}

impl StreamPolicy {
    pub fn bytes(self) -> u32 {
        match self {
            StreamPolicy::After(n) => n,
            _ => 0,
        }
    }

    /// One line for `attach` and the bench report (None: nothing to say).
    pub fn describe(self) -> Option<String> {
        Some(match self {
            StreamPolicy::After(n) => stream_text(n),
            StreamPolicy::NeverAsked => {
                "no backpressure: writers never wait for slow readers (--stream-bytes 0)".into()
            }
            StreamPolicy::NotInObject => return None,
        })
    }
}

/// `n` bytes as 1 MiB, 64 KiB or 100 B.
pub fn size_text(n: u32) -> String {
    match n {
        n if n % (1 << 20) == 0 => format!("{} MiB", n >> 20),
        n if n % (1 << 10) == 0 => format!("{} KiB", n >> 10),
        n => format!("{n} B"),
    }
}

/// The backpressure bound `cfg_stream_bytes = n > 0`, in words.
pub fn stream_text(n: u32) -> String {
    format!(
        "backpressure: a connection redirects at most {} its peer has not read (or its SO_RCVBUF), then continues over TCP (--stream-bytes)",
        size_text(n)
    )
}

/// How well the programs can tell what a socket has not read yet: the
/// backpressure bound and leaving the map losslessly rest on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadAccounting {
    /// Exactly: the kernel counts redirected bytes in `sk_rmem_alloc`, and
    /// the programs found the field through the kernel's BTF.
    Exact,
    /// This kernel does not count redirected bytes in `sk_rmem_alloc`
    /// (before 6.13 and its stable backports): the bound restarts whenever
    /// the reader sends.
    NotCounted,
    /// The probe could not tell (another tool redirected its bytes).
    Unknown,
    /// The kernel's struct sock could not be read (why).
    NoKernelFields(String),
    /// The object reads no kernel fields.
    NotInObject,
}

impl ReadAccounting {
    /// A note for `attach`, where the bound is weaker than exact.
    pub fn describe(&self) -> Option<String> {
        let weak = "a reader that sends without reading can be sent more than the bound (docs/KERNEL-ISSUES.md §3)";
        Some(match self {
            ReadAccounting::Exact | ReadAccounting::NotInObject => return None,
            ReadAccounting::NotCounted => format!(
                "note: this kernel does not count redirected bytes as unread (sk_rmem_alloc): {weak}"
            ),
            ReadAccounting::Unknown => format!(
                "note: could not probe whether this kernel counts redirected bytes as unread: {weak}"
            ),
            ReadAccounting::NoKernelFields(why) => {
                format!("note: cannot read the kernel's struct sock ({why}): {weak}")
            }
        })
    }
}

/// Whether the pass-through sk_skb verdict is attached, because this kernel's
/// FIONREAD ignores TCP bytes on sockets in a sockmap without one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FionreadFix {
    /// FIONREAD counts TCP bytes here: no verdict.
    NotNeeded,
    /// The 2026 regression: the verdict is attached.
    Verdict,
    /// The probe could not tell: the verdict is attached to be safe.
    VerdictUnknown,
    /// The object has no sk_skb program.
    NotInObject,
}

impl FionreadFix {
    pub fn attached(self) -> bool {
        matches!(self, FionreadFix::Verdict | FionreadFix::VerdictUnknown)
    }

    pub fn describe(self) -> Option<&'static str> {
        Some(match self {
            FionreadFix::Verdict => {
                "this kernel's FIONREAD ignores TCP bytes on sockets in a sockmap: a pass-through sk_skb verdict makes it count them (docs/KERNEL-ISSUES.md §2)"
            }
            FionreadFix::VerdictUnknown => {
                "FIONREAD could not be probed: a pass-through sk_skb verdict is attached to be safe (docs/KERNEL-ISSUES.md §2)"
            }
            FionreadFix::NotNeeded | FionreadFix::NotInObject => return None,
        })
    }
}

/// What `attach` did.
#[derive(Debug)]
pub enum AttachOutcome {
    Attached(Attached),
    /// The pin directory already holds a live attachment to this cgroup.
    AlreadyAttached {
        cgroup: PathBuf,
    },
}

#[derive(Debug)]
pub struct Attached {
    pub cgroup: PathBuf,
    pub pin_dir: PathBuf,
    pub programs: Vec<String>,
    pub maps: usize,
    pub netns_keys: NetnsKeys,
    pub memlock: Memlock,
    pub host_addresses: usize,
    pub streams: StreamPolicy,
    pub reads: ReadAccounting,
    pub fionread: FionreadFix,
    /// Stale pins of an interrupted earlier attach that were cleaned first.
    pub recovered: bool,
}

/// The steps of `attach` after which `RAWLOAD_KILL_AT` can kill it.
pub const KILL_POINTS: [&str; 8] = [
    "maps-created",
    "programs-loaded",
    "sk-msg-attached",
    "pin-dir-created",
    "record-pinned",
    "programs-pinned",
    "maps-pinned",
    "cgroup-attached",
];

/// Dies by SIGKILL here if `RAWLOAD_KILL_AT` names this step: no cleanup
/// runs, exactly as if the machine had killed the process.
fn kill_point(step: &str) {
    debug_assert!(KILL_POINTS.contains(&step));
    if std::env::var_os("RAWLOAD_KILL_AT").is_some_and(|v| v == step) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::this(), nix::sys::signal::Signal::SIGKILL);
    }
}

/// Fails early, with the fix, when the process cannot use bpf(2).
pub fn require_privileges(what: &str) -> Result<()> {
    const CAP_NET_ADMIN: u32 = 12;
    const CAP_SYS_ADMIN: u32 = 21;
    const CAP_BPF: u32 = 39;
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let caps = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .unwrap_or(0);
    let has = |cap: u32| caps & (1 << cap) != 0;
    if has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_NET_ADMIN)) {
        return Ok(());
    }
    bail!(
        "rawload {what} needs root (CAP_BPF and CAP_NET_ADMIN, or CAP_SYS_ADMIN): run it with sudo"
    )
}

/// One way back: what it undoes, and how.
type UndoStep = (&'static str, Box<dyn FnOnce() -> Result<()>>);

/// Undo steps, run in reverse unless the whole operation succeeded.
#[derive(Default)]
struct Undo {
    steps: Vec<UndoStep>,
}

impl Undo {
    fn push(&mut self, what: &'static str, step: impl FnOnce() -> Result<()> + 'static) {
        self.steps.push((what, Box::new(step)));
    }

    fn run(self) {
        for (what, step) in self.steps.into_iter().rev() {
            if let Err(e) = step() {
                eprintln!("rawload: while undoing ({what}): {e:#}");
            }
        }
    }
}

/// Blocks SIGINT/SIGTERM/SIGHUP while the system is being changed, so a
/// Ctrl-C lands after the attach has completed or been undone.
struct SignalsDeferred(SigSet);

impl SignalsDeferred {
    fn new() -> Result<SignalsDeferred> {
        let mut set = SigSet::empty();
        for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
            set.add(s);
        }
        set.thread_block().context("blocking signals")?;
        Ok(SignalsDeferred(set))
    }
}

impl Drop for SignalsDeferred {
    fn drop(&mut self) {
        let _ = self.0.thread_unblock();
    }
}

/// Blocks until SIGTERM, SIGINT or SIGHUP arrives (`attach --hold`).
pub fn wait_for_stop_signal() -> Result<Signal> {
    let mut set = SigSet::empty();
    for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        set.add(s);
    }
    // Blocked signals stay pending until sigwait() takes them.
    set.thread_block().context("blocking signals")?;
    set.wait().context("waiting for a signal")
}

/// The socket map the sk_msg program redirects through: the one SOCKHASH
/// (or SOCKMAP) it references.
pub fn socket_map(obj: &Object, sk_msg: &ProgramSpec) -> Result<usize> {
    let mut candidates: Vec<usize> = sk_msg
        .map_refs
        .iter()
        .filter(|r| r.kind == RefKind::Map)
        .map(|r| r.map)
        .filter(|&i| matches!(obj.maps[i].map_type, MapType::SOCKHASH | MapType::SOCKMAP))
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

/// Opens the attachment recorded in `dir` if it is live: the record and the
/// pinned sock_ops program exist and that program is attached to the
/// recorded cgroup.
fn live_attachment(dir: &PinDir) -> Result<Option<AttachRecord>> {
    let (Some(record), Some(prog)) = (AttachRecord::read(dir)?, dir.get(SOCK_OPS_PIN)?) else {
        return Ok(None);
    };
    let Ok(cgroup) = Cgroup::open(&record.cgroup) else {
        return Ok(None);
    };
    if cgroup.id != record.cgroup_id {
        return Ok(None);
    }
    let (info, _) =
        crate::sys::prog_info(prog.as_fd()).context("reading the pinned sock_ops program")?;
    let (_, attached) = cgroup.sock_ops_programs()?;
    Ok(attached.contains(&info.id).then_some(record))
}

/// Loads, attaches and pins; see the module docs for the order.
pub fn attach(opts: &AttachOptions) -> Result<AttachOutcome> {
    require_privileges("attach")?;
    let cgroup = Cgroup::open(&opts.cgroup)?;
    narrate!(
        "1. cgroup {} is cgroup v2 (id {}): sock_ops will see its sockets",
        cgroup.path.display(),
        cgroup.id
    );
    let mut obj = opts.object.parse()?;
    contract::check(&obj).with_context(|| format!("checking {}", opts.object))?;
    let sock_ops_spec = obj.program(ProgType::SOCK_OPS)?.clone();
    let sk_msg_spec = obj.program(ProgType::SK_MSG)?.clone();
    let socket_map_index = socket_map(&obj, &sk_msg_spec)?;
    narrate!(
        "2. read {}: programs {} and {}, maps {} (rawload explain shows all of it)",
        opts.object,
        sock_ops_spec.name,
        sk_msg_spec.name,
        obj.maps
            .iter()
            .map(|m| m.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let port_policy = PortPolicy {
        allow: opts.ports.clone(),
        deny: opts.exclude_ports.clone(),
    };
    if !port_policy.is_empty()
        && (obj.map_index(PORTS_MAP).is_none()
            || obj.global(global::PORT_ALLOW).is_none()
            || obj.global(global::PORT_DENY).is_none())
    {
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

    pin::ensure_bpffs(&opts.pin_dir)?;
    narrate!(
        "3. {} is on bpffs; looking for an earlier attachment there",
        opts.pin_dir.display()
    );
    let mut recovered = false;
    if let Some(dir) = PinDir::existing(&opts.pin_dir) {
        dir.check_owner()?;
        match live_attachment(&dir)? {
            Some(r) if r.cgroup_id == cgroup.id => {
                return Ok(AttachOutcome::AlreadyAttached { cgroup: r.cgroup });
            }
            Some(r) => bail!(
                "pin directory {} already holds an attachment to {}; run `rawload detach --pin-dir {}` first, or use another --pin-dir",
                dir.path.display(),
                r.cgroup.display(),
                dir.path.display()
            ),
            None if !dir.our_pins()?.is_empty() => {
                // Leftovers of an interrupted attach or a removed cgroup.
                detach_dir(&dir, None)?;
                recovered = true;
            }
            None => {}
        }
    }

    let _deferred = SignalsDeferred::new()?;
    let memlock = probe::raise_memlock();
    narrate!(
        "4. raise RLIMIT_MEMLOCK (kernels before 5.11 charge BPF memory to it): {}",
        match memlock {
            Memlock::Raised => "raised to unlimited".to_string(),
            Memlock::Refused(e) => format!("refused ({e}), harmless on 5.11+"),
        }
    );
    narrate!(
        "5. probe bpf_get_netns_cookie: load one tiny sock_ops and one sk_msg program calling it"
    );
    let netns_cookie =
        probe::netns_cookie().map_err(|e| anyhow::anyhow!("probing the kernel: {}", e.desc()))?;
    let netns_keys = match (obj.global(global::NETNS_COOKIE).is_some(), netns_cookie) {
        (false, _) => NetnsKeys::NotInObject,
        (true, true) => NetnsKeys::Yes,
        (true, false) if opts.single_netns => NetnsKeys::NoKernelSupport,
        (true, false) => bail!(
            "this kernel cannot tell network namespaces apart in sock_ops/sk_msg (bpf_get_netns_cookie arrived in 5.15), \
             so two namespaces holding the same connection (containers each talking to their own 127.0.0.1:PORT) \
             could receive each other's bytes; if every process in {} shares one network namespace, attach with --single-netns",
            cgroup.path.display()
        ),
    };
    narrate!(
        "   -> {}",
        match netns_keys {
            NetnsKeys::Yes => "present: .rodata cfg_netns_cookie = 1, keys include the namespace",
            NetnsKeys::NoKernelSupport => "absent: cfg_netns_cookie stays 0 (--single-netns)",
            NetnsKeys::NotInObject => "not used by this object",
        }
    );
    let streams = match (
        obj.global(global::STREAM_BYTES).is_some(),
        opts.stream_bytes,
    ) {
        (false, _) => StreamPolicy::NotInObject,
        (true, Some(0)) => StreamPolicy::NeverAsked,
        (true, Some(n)) => StreamPolicy::After(n),
        (true, None) => StreamPolicy::After(DEFAULT_STREAM_BYTES),
    };
    narrate!(
        "   -> .rodata cfg_stream_bytes = {} ({streams:?})",
        streams.bytes()
    );
    let reads = read_accounting(&mut obj)?;
    let fionread = fionread_fix(&mut obj)?;
    if netns_keys == NetnsKeys::Yes {
        obj.set_global(global::NETNS_COOKIE, &1u32.to_ne_bytes())?;
    }
    if streams.bytes() > 0 {
        obj.set_global(global::STREAM_BYTES, &streams.bytes().to_ne_bytes())?;
    }
    if port_policy.allow.is_some() {
        obj.set_global(global::PORT_ALLOW, &1u32.to_ne_bytes())?;
    }
    if port_policy.deny.is_some() {
        obj.set_global(global::PORT_DENY, &1u32.to_ne_bytes())?;
    }

    // Maps first: the programs' instructions need their fds.
    narrate!("6. create the maps (global data gets its initial bytes; .rodata is frozen)");
    let mut maps = Vec::with_capacity(obj.maps.len());
    for (i, spec) in obj.maps.iter().enumerate() {
        let sized = i == socket_map_index || spec.name == CONNS_MAP;
        let map = Map::create(spec, opts.max_sockets.filter(|_| sized))?;
        narrate!("   map {} -> fd {}", spec.name, map.raw_fd());
        maps.push(map);
    }
    narrate!("7. fill the policy maps: this host's addresses, the port policy");
    let host_addresses = fill_policy_maps(&obj, &maps, &port_policy)?;
    kill_point("maps-created");
    let fds: Vec<RawFd> = maps.iter().map(|m| m.raw_fd()).collect();
    let load = |step: &str, spec: &ProgramSpec| -> Result<Program> {
        let insns = reloc::apply(spec, &fds)?;
        narrate!(
            "{step}. relocate and load {} ({} instructions, {} map references patched):",
            spec.name,
            insns.len(),
            spec.map_refs.len()
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
    };
    let sock_ops = load("8a", &sock_ops_spec)?;
    let sk_msg = load("8b", &sk_msg_spec)?;
    // The pass-through verdict only where FIONREAD needs it.
    let sk_skb = match obj.optional_program(ProgType::SK_SKB)? {
        Some(spec) if fionread.attached() => Some(load("8c", spec)?),
        _ => None,
    };
    kill_point("programs-loaded");
    let socket_map = &maps[socket_map_index];
    let map_programs: Vec<(&Program, &str)> = std::iter::once((&sk_msg, SK_MSG_PIN))
        .chain(sk_skb.as_ref().map(|p| (p, SK_SKB_PIN)))
        .collect();

    let mut undo = Undo::default();
    let done = (|| -> Result<()> {
        // 1. The map's programs before any socket can enter it.
        for (prog, _) in &map_programs {
            let attach_type = prog.kind.expected_attach_type;
            narrate!(
                "9. attach {} to {} ({}), before sockets can enter the map: they copy its programs then",
                prog.name,
                socket_map.meta().name,
                attach_type.name()
            );
            attach::attach_to_socket_map(socket_map.as_fd(), prog.as_fd(), attach_type)?;
            let (map_fd, prog_fd) = (dup(socket_map)?, dup(*prog)?);
            undo.push("detaching from the socket map", move || {
                attach::detach_from_socket_map(map_fd.as_fd(), prog_fd.as_fd(), attach_type)
                    .map(drop)
            });
        }
        kill_point("sk-msg-attached");

        // 2. Pins and the record, so that a later `detach` finds everything.
        narrate!(
            "10. pin the record, the programs and every map under {} (mode 0700)",
            opts.pin_dir.display()
        );
        let dir = PinDir::create(&opts.pin_dir)?;
        let undo_dir = dir.clone();
        undo.push("removing pins", move || undo_dir.clear().map(drop));
        kill_point("pin-dir-created");
        AttachRecord {
            cgroup: cgroup.path.clone(),
            cgroup_id: cgroup.id,
            stream_bytes: Some(streams.bytes()),
        }
        .pin(&dir)?;
        kill_point("record-pinned");
        dir.pin(sock_ops.as_fd(), SOCK_OPS_PIN)?;
        for (prog, pin) in &map_programs {
            dir.pin(prog.as_fd(), pin)?;
        }
        kill_point("programs-pinned");
        for (spec, map) in obj.maps.iter().zip(&maps) {
            dir.pin(map.as_fd(), &pin::map_pin_name(&spec.name))?;
        }
        kill_point("maps-pinned");

        // 3. sock_ops on the cgroup: from now on new connections enter the map.
        narrate!(
            "11. attach {} to {} (BPF_CGROUP_SOCK_OPS, flags BPF_F_ALLOW_MULTI = {:#x})",
            sock_ops.name,
            cgroup.path.display(),
            rawload_obj::uapi::BPF_F_ALLOW_MULTI
        );
        cgroup.attach_sock_ops(sock_ops.as_fd())?;
        kill_point("cgroup-attached");
        Ok(())
    })();
    if let Err(e) = done {
        undo.run();
        return Err(e);
    }

    Ok(AttachOutcome::Attached(Attached {
        cgroup: cgroup.path.clone(),
        pin_dir: opts.pin_dir.clone(),
        programs: std::iter::once(&sock_ops)
            .chain(map_programs.iter().map(|(p, _)| *p))
            .map(|p| p.name.clone())
            .collect(),
        maps: maps.len(),
        netns_keys,
        memlock,
        host_addresses,
        streams,
        reads,
        fionread,
        recovered,
    }))
}

/// Fills the object's kernel fields (`kfield_*`) from the running kernel's
/// BTF and probes whether redirected bytes count as unread there; sets
/// `cfg_kfields` and `cfg_rmem_counts_redirect` accordingly.
fn read_accounting(obj: &mut Object) -> Result<ReadAccounting> {
    let names: Vec<String> = obj
        .globals()
        .filter(|g| g.name.starts_with(kfield::PREFIX))
        .map(|g| g.name.clone())
        .collect();
    if names.is_empty() || obj.global(global::KFIELDS).is_none() {
        return Ok(ReadAccounting::NotInObject);
    }
    narrate!(
        "5b. find {} fields of the kernel's struct sock in {} (rawload's CO-RE: one .rodata constant each)",
        names.len(),
        crate::vmlinux::PATH
    );
    if let Err(e) = fill_kfields(obj, &names) {
        narrate!("   -> {e:#}: the programs will not read them");
        return Ok(ReadAccounting::NoKernelFields(format!("{e:#}")));
    }
    obj.set_global(global::KFIELDS, &1u32.to_ne_bytes())?;
    narrate!("5c. probe: are bytes redirected into a socket counted in its sk_rmem_alloc?");
    let counted = probe::redirect_counts_in_rmem()?;
    narrate!(
        "   -> {counted:?}: .rodata {} = {}",
        global::RMEM_COUNTS_REDIRECT,
        u32::from(counted == Some(true))
    );
    Ok(match counted {
        Some(true) => {
            obj.set_global(global::RMEM_COUNTS_REDIRECT, &1u32.to_ne_bytes())?;
            ReadAccounting::Exact
        }
        Some(false) => ReadAccounting::NotCounted,
        None => ReadAccounting::Unknown,
    })
}

/// Resolves each `kfield_*` global against the kernel's BTF and writes it.
fn fill_kfields(obj: &mut Object, names: &[String]) -> Result<()> {
    let btf = crate::vmlinux::btf()?;
    for name in names {
        let init = obj
            .global_bytes(name)
            .context("a kfield global without bytes")?;
        let width = KField::declared_width(init).with_context(|| name.clone())?;
        let (strukt, path) = kfield::parse_name(name)?;
        let field = kfield::resolve(&btf, strukt, &path, width)?;
        narrate!(
            "   {name}: offset {} (bits {}..{})",
            field.offset,
            field.shift,
            field.shift + field.bits
        );
        obj.set_global(name, &field.to_bytes())?;
    }
    Ok(())
}

/// Probes FIONREAD where the object can fix it with its sk_skb verdict, and
/// sets `cfg_skb_verdict` when the verdict will be attached.
fn fionread_fix(obj: &mut Object) -> Result<FionreadFix> {
    if obj.optional_program(ProgType::SK_SKB)?.is_none()
        || obj.global(global::SKB_VERDICT).is_none()
    {
        return Ok(FionreadFix::NotInObject);
    }
    narrate!(
        "5d. probe FIONREAD for TCP bytes on a socket in a SOCKHASH (decides the sk_skb verdict)"
    );
    let fix = match probe::fionread_counts_tcp()? {
        Some(true) => FionreadFix::NotNeeded,
        Some(false) => FionreadFix::Verdict,
        None => FionreadFix::VerdictUnknown,
    };
    narrate!("   -> {fix:?}");
    if fix.attached() {
        obj.set_global(global::SKB_VERDICT, &1u32.to_ne_bytes())?;
    }
    Ok(fix)
}

fn dup(fd: &impl AsFd) -> Result<OwnedFd> {
    fd.as_fd()
        .try_clone_to_owned()
        .context("duplicating a descriptor")
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

/// What `detach` did.
#[derive(Debug, Default)]
pub struct Detached {
    pub cgroup: Option<PathBuf>,
    /// sock_ops was attached to the cgroup and is now detached.
    pub sock_ops: bool,
    /// sk_msg was attached to the socket map and is now detached.
    pub sk_msg: bool,
    /// The recorded cgroup no longer exists (its attachment went with it).
    pub cgroup_gone: bool,
    /// Entries in the pin directory that rawload did not create.
    pub foreign_entries: Vec<String>,
}

#[derive(Debug)]
pub enum DetachOutcome {
    Detached(Detached),
    /// There is no pin directory: nothing is attached through it.
    NotAttached,
}

/// Undoes `attach` for the pin directory: detaches both programs, removes
/// the pins (and the directory when it is empty). Sockets already in the map
/// keep their programs until they close, so no unread data is lost; new
/// connections use plain TCP.
pub fn detach(pin_dir: &Path, cgroup: Option<&Path>) -> Result<DetachOutcome> {
    require_privileges("detach")?;
    let Some(dir) = PinDir::existing(pin_dir) else {
        return Ok(DetachOutcome::NotAttached);
    };
    dir.check_owner()?;
    let _deferred = SignalsDeferred::new()?;
    detach_dir(&dir, cgroup).map(DetachOutcome::Detached)
}

fn detach_dir(dir: &PinDir, cgroup_arg: Option<&Path>) -> Result<Detached> {
    let record = AttachRecord::read(dir)?;
    let mut out = Detached::default();
    if let Some(prog) = dir.get(SOCK_OPS_PIN)? {
        // Cgroups are compared by id: paths differ between mount namespaces
        // (a container's /host/cgroup is the host's /sys/fs/cgroup), ids do not.
        let recorded = |r: &AttachRecord| Cgroup::recorded(&r.cgroup, r.cgroup_id);
        let cgroup = match (&record, cgroup_arg) {
            (Some(r), Some(arg)) => match Cgroup::open(arg) {
                Ok(cg) if cg.id == r.cgroup_id => Some(cg),
                // The recorded path itself, now gone or a new cgroup.
                _ if arg == r.cgroup => recorded(r),
                _ => bail!(
                    "{} holds an attachment to {} (cgroup id {}), not to {}",
                    dir.path.display(),
                    r.cgroup.display(),
                    r.cgroup_id,
                    arg.display()
                ),
            },
            (Some(r), None) => recorded(r),
            (None, Some(arg)) => match Cgroup::open(arg) {
                Ok(cg) => Some(cg),
                Err(_) if !arg.exists() => None,
                Err(e) => return Err(e),
            },
            (None, None) => None,
        };
        out.cgroup = match (&cgroup, &record) {
            (Some(cg), _) => Some(cg.path.clone()),
            (None, Some(r)) => Some(r.cgroup.clone()),
            (None, None) => cgroup_arg.map(Path::to_path_buf),
        };
        match cgroup {
            Some(cg) => out.sock_ops = cg.detach_sock_ops(prog.as_fd())?,
            None => out.cgroup_gone = out.cgroup.is_some(),
        }
    }
    for (pin, attach_type) in SOCKET_MAP_PROGRAM_PINS {
        let Some(prog) = dir.get(pin)? else { continue };
        for name in dir.our_pins()?.iter().filter(|n| n.starts_with("map_")) {
            let Some(fd) = dir.get(name)? else { continue };
            let map = Map::from_fd(fd)?;
            if map.is_socket_map() {
                let detached =
                    attach::detach_from_socket_map(map.as_fd(), prog.as_fd(), attach_type)?;
                out.sk_msg |= detached && pin == SK_MSG_PIN;
            }
        }
    }
    out.foreign_entries = dir.clear()?;
    Ok(out)
}
