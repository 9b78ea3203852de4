//! What `attach` is asked to do, and what it reports back: the options,
//! the decisions it takes from probing the kernel, and the outcomes.

use std::borrow::Cow;
use std::fmt;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use rawload_obj::elf;
use rawload_obj::obj::Object;

use crate::contract::{DEBUG_OBJECT, RELEASE_OBJECT};
use crate::hostnet::{Cidr, Synced};
use crate::policy::PortSet;
use crate::probe::Memlock;

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
    /// An object compiled into the calling program, shown as `name`: `rawload
    /// bench` loads the seed-style fixture this way, through the same
    /// checks as `--object FILE`, without a file to write and clean up.
    Static {
        name: &'static str,
        bytes: &'static [u8],
    },
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
            ObjectSource::Static { bytes, .. } => Cow::Borrowed(*bytes),
        })
    }

    pub fn parse(&self) -> Result<Object> {
        elf::parse(&self.bytes()?).with_context(|| format!("reading {self}"))
    }

    /// Its file name: how messages about several objects name it, and the
    /// prefix of its global data maps among them (`seed_redir.bss`).
    pub fn name(&self) -> String {
        match self {
            ObjectSource::Embedded { debug: false } => "rawload.bpf.o".into(),
            ObjectSource::Embedded { debug: true } => "rawload-debug.bpf.o".into(),
            ObjectSource::File(path) => path.file_name().map_or_else(
                || path.display().to_string(),
                |f| f.to_string_lossy().into(),
            ),
            ObjectSource::Static { name, .. } => (*name).into(),
        }
    }
}

/// Reads every object, each with its name, for
/// [`rawload_obj::combine::combine`]: what `attach`
/// loads as one set, and what `explain` shows.
pub fn read_objects(sources: &[ObjectSource]) -> Result<Vec<(String, Object)>> {
    if sources.is_empty() {
        bail!("no object to load: give at least one --object FILE");
    }
    let mut objects = Vec::with_capacity(sources.len());
    for source in sources {
        objects.push((source.name(), source.parse()?));
    }
    Ok(objects)
}

/// `object a.o and object b.o`: the sources in a sentence.
pub fn objects_text(sources: &[ObjectSource]) -> String {
    let names: Vec<String> = sources.iter().map(ToString::to_string).collect();
    names.join(" and ")
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
            ObjectSource::Static { name, .. } => write!(f, "the embedded object {name}"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct AttachOptions {
    pub cgroup: PathBuf,
    pub pin_dir: PathBuf,
    /// One object with every program, or several that together have them
    /// (the seeds' two), their maps shared by name (`--object`, repeated).
    pub objects: Vec<ObjectSource>,
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
    /// Pair sockets of different namespaces where the host proves it safe
    /// (false: --no-cross-netns).
    pub cross_netns: bool,
    /// Routed pod networks: veths into these ranges count as connected
    /// without a bridge (--connected).
    pub connected: Vec<Cidr>,
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

/// Whether sockets of different namespaces may pair (`cfg_cross_netns`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrossNetns {
    /// Yes, for the addresses in `rawload_owners`.
    On,
    /// --no-cross-netns.
    Off,
    /// Keys cannot tell namespaces apart (before 5.15), so nothing can
    /// prove which namespace a socket is in.
    NoNetnsKeys,
    /// The object has no `cfg_cross_netns`.
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
    pub cross_netns: CrossNetns,
    /// What went into `rawload_owners` (with [`CrossNetns::On`]).
    pub owners: Option<Synced>,
    pub streams: StreamPolicy,
    pub reads: ReadAccounting,
    pub fionread: FionreadFix,
    /// Stale pins of an interrupted earlier attach that were cleaned first.
    pub recovered: bool,
}

/// What `detach` did.
#[derive(Debug, Default)]
pub struct Detached {
    pub cgroup: Option<PathBuf>,
    /// sock_ops was attached to the cgroup and is now detached.
    pub sock_ops: bool,
    /// The programs detached from the socket map (`BPF_SK_MSG_VERDICT`,
    /// `BPF_SK_SKB_STREAM_VERDICT`), by program type: "sk_msg", "sk_skb".
    pub socket_map_programs: Vec<&'static str>,
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
