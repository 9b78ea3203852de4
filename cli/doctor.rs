//! `rawload doctor`: what this kernel offers, what is missing, how to fix it.
//!
//! Every answer comes from asking the kernel (a feature probe: load the
//! smallest program or create the smallest map that needs the feature), not
//! from the version number: distribution kernels backport features.

use std::fmt::Write as _;
use std::path::Path;

use nix::errno::Errno;
use nix::sys::statfs::{BPF_FS_MAGIC, statfs};

use crate::status;
use rawload_loader::attach;
use rawload_loader::hostnet;
use rawload_loader::narrate::counted;
use rawload_loader::pin::{BPFFS_MOUNT, DEFAULT_PIN_DIR};
use rawload_loader::probe;
use rawload_obj::kfield;
use rawload_obj::uapi::{MapType, ProgType};

/// How one check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Ok,
    /// Works, with a caveat.
    Note,
    /// rawload cannot work without it.
    Missing,
}

#[derive(Debug, Clone)]
pub struct Check {
    pub name: &'static str,
    pub verdict: Verdict,
    pub detail: String,
}

fn check(name: &'static str, verdict: Verdict, detail: impl Into<String>) -> Check {
    Check {
        name,
        verdict,
        detail: detail.into(),
    }
}

/// "5.10.0-32-cloud-amd64 (Debian 5.10.223-1)".
pub fn kernel_version() -> String {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let version = std::fs::read_to_string("/proc/version").unwrap_or_default();
    // Debian puts the real upstream version at the end: "... Debian 5.10.223-1 (2024-08-10)".
    let debian = version
        .split_once(" Debian ")
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .map(|v| format!(" (Debian {v})"))
        .unwrap_or_default();
    format!("{}{debian}", release.trim())
}

fn probe_result(r: Result<bool, Errno>, ok: &str, missing: &str) -> (Verdict, String) {
    match r {
        Ok(true) => (Verdict::Ok, ok.to_string()),
        Ok(false) => (Verdict::Missing, missing.to_string()),
        Err(Errno::EPERM) => (Verdict::Missing, "not permitted: run as root".to_string()),
        Err(e) => (Verdict::Missing, format!("probe failed: {}", e.desc())),
    }
}

fn capabilities() -> Check {
    use rawload_loader::privileges::{self, CAP_BPF, CAP_NET_ADMIN, CAP_PERFMON, CAP_SYS_ADMIN};
    let caps = privileges::effective();
    let names = [
        (CAP_SYS_ADMIN, "CAP_SYS_ADMIN"),
        (CAP_BPF, "CAP_BPF"),
        (CAP_NET_ADMIN, "CAP_NET_ADMIN"),
        (CAP_PERFMON, "CAP_PERFMON"),
    ];
    let have: Vec<&str> = names
        .iter()
        .filter(|(cap, _)| privileges::has(caps, *cap))
        .map(|(_, n)| *n)
        .collect();
    match privileges::require("") {
        Ok(()) => check("capabilities", Verdict::Ok, have.join(" ")),
        Err(_) => check(
            "capabilities",
            Verdict::Missing,
            format!(
                "have [{}]; need CAP_BPF and CAP_NET_ADMIN, or CAP_SYS_ADMIN: run with sudo",
                have.join(" ")
            ),
        ),
    }
}

/// FIONREAD on sockets in a sockmap, and what rawload does about it.
fn fionread() -> Check {
    match probe::fionread_counts_tcp() {
        Ok(Some(true)) => check(
            "fionread",
            Verdict::Ok,
            "counts TCP bytes on sockets in a sockmap",
        ),
        Ok(Some(false)) => check(
            "fionread",
            Verdict::Note,
            "ignores TCP bytes on sockets in a sockmap (2026 stable regression): rawload attaches a pass-through sk_skb verdict, with which it counts them; see docs/KERNEL-ISSUES.md",
        ),
        Ok(None) => check(
            "fionread",
            Verdict::Note,
            "not probed: another tool's sockmap program redirected the probe's bytes",
        ),
        Err(e) => check("fionread", Verdict::Note, format!("probe failed: {e:#}")),
    }
}

/// The kernel's BTF, where the programs find the fields of struct sock they
/// read (what waits to be read, SO_RCVBUF, SO_SNDBUF).
fn kernel_fields() -> Check {
    let found = rawload_loader::vmlinux::btf().and_then(|btf| {
        Ok(kfield::resolve(&btf, "sock", &["sk_backlog", "rmem_alloc"], 4)?.offset)
    });
    match found {
        Ok(offset) => check(
            "kernel btf",
            Verdict::Ok,
            format!(
                "{}: struct sock's sk_rmem_alloc at byte {offset}",
                rawload_loader::vmlinux::PATH
            ),
        ),
        Err(e) => check(
            "kernel btf",
            Verdict::Note,
            format!(
                "{e:#}: backpressure cannot see what a reader has read (docs/KERNEL-ISSUES.md §3)"
            ),
        ),
    }
}

/// Whether redirected bytes count as unread in the receiver's sk_rmem_alloc.
fn unread_count() -> Check {
    match probe::redirect_counts_in_rmem() {
        Ok(Some(true)) => check(
            "unread count",
            Verdict::Ok,
            "redirected bytes count in sk_rmem_alloc (6.13, stable since 6.1.122): backpressure is exact",
        ),
        Ok(Some(false)) => check(
            "unread count",
            Verdict::Note,
            "redirected bytes do not count in sk_rmem_alloc (before 6.13): a reader that sends without reading can be sent more than --stream-bytes; see docs/KERNEL-ISSUES.md",
        ),
        Ok(None) => check(
            "unread count",
            Verdict::Note,
            "not probed: another tool's sockmap program redirected the probe's bytes",
        ),
        Err(e) => check(
            "unread count",
            Verdict::Note,
            format!("probe failed: {e:#}"),
        ),
    }
}

/// Runs every check.
pub fn checks() -> Vec<Check> {
    let caps = capabilities();
    let privileged = caps.verdict == Verdict::Ok;
    let mut out = vec![check("kernel", Verdict::Ok, kernel_version()), caps];
    // As attach does: before 5.11 the default 64 KiB RLIMIT_MEMLOCK can be
    // used up by maps still being freed (a detach just before), and the
    // probes would then fail as if bpf(2) were refused.
    probe::raise_memlock();
    let bpf = bpf_syscall();
    let bpf_ok = bpf.verdict == Verdict::Ok;
    out.push(bpf);
    if bpf_ok {
        out.extend([
            sockhash(),
            sk_msg(),
            sock_ops(),
            netns_cookie(),
            fionread(),
            kernel_fields(),
            unread_count(),
            memlock(),
        ]);
    } else if privileged {
        out.push(check(
            "programs and maps",
            Verdict::Missing,
            "not probed: bpf(2) does not work",
        ));
    }
    out.extend([cgroup_v2(), bpffs(), tracefs()]);
    if privileged {
        out.push(namespaces());
    }
    if privileged && bpf_ok {
        out.push(attached());
    }
    out
}

fn bpf_syscall() -> Check {
    let (v, d) = match probe::map_type(MapType::ARRAY, 4, 4) {
        Err(Errno::ENOSYS) => (
            Verdict::Missing,
            "the kernel has no bpf(2) (CONFIG_BPF_SYSCALL)".into(),
        ),
        r => probe_result(r, "bpf(2) works", "bpf(2) refused an array map"),
    };
    check("bpf syscall", v, d)
}

fn sockhash() -> Check {
    let (v, d) = probe_result(
        probe::map_type(MapType::SOCKHASH, 4, 8),
        "BPF_MAP_TYPE_SOCKHASH with 8-byte values",
        "no SOCKHASH (CONFIG_BPF_STREAM_PARSER / CONFIG_NET_SOCK_MSG, 4.18+)",
    );
    check("sockhash", v, d)
}

fn sk_msg() -> Check {
    let (v, d) = probe_result(
        probe::program_type(ProgType::SK_MSG),
        "BPF_PROG_TYPE_SK_MSG",
        "no sk_msg programs (4.17+, CONFIG_NET_SOCK_MSG)",
    );
    check("sk_msg", v, d)
}

fn sock_ops() -> Check {
    let (v, d) = probe_result(
        probe::program_type(ProgType::SOCK_OPS),
        "BPF_PROG_TYPE_SOCK_OPS",
        "no sock_ops programs (4.13+, CONFIG_CGROUP_BPF)",
    );
    check("sock_ops", v, d)
}

fn netns_cookie() -> Check {
    match probe::netns_cookie() {
        Ok(true) => check(
            "netns cookie",
            Verdict::Ok,
            "bpf_get_netns_cookie in sock_ops and sk_msg: keys include the namespace",
        ),
        Ok(false) => check(
            "netns cookie",
            Verdict::Note,
            "absent (before 5.15): keys cannot tell network namespaces apart; see docs/KERNEL-ISSUES.md",
        ),
        Err(e) => check(
            "netns cookie",
            Verdict::Missing,
            format!("probe failed: {}", e.desc()),
        ),
    }
}

/// What `attach` would write into `rawload_owners`: which addresses of
/// this host's network namespaces pair across them.
fn namespaces() -> Check {
    match hostnet::scan::scan() {
        Ok(scan) => {
            let owners = hostnet::owners::owners(&scan, &[]);
            let unreadable = match scan.unreadable.first() {
                Some((path, e)) => format!(
                    "; {} unreadable ({}: {e})",
                    scan.unreadable.len(),
                    path.display()
                ),
                None => String::new(),
            };
            check(
                "namespaces",
                Verdict::Ok,
                format!(
                    "{} besides this one{unreadable}; {} would pair across them, {} held twice stay apart",
                    counted(scan.others.len(), "network namespace", "network namespaces"),
                    counted(owners.owned.len(), "address", "addresses"),
                    owners.shared.len()
                ),
            )
        }
        Err(e) => check("namespaces", Verdict::Note, format!("cannot scan: {e:#}")),
    }
}

fn memlock() -> Check {
    match probe::memcg_accounting() {
        Ok(true) => check(
            "memlock",
            Verdict::Ok,
            "not needed: BPF memory is charged to memory cgroups (5.11+)",
        ),
        Ok(false) => check(
            "memlock",
            Verdict::Note,
            "BPF memory counts against RLIMIT_MEMLOCK (before 5.11); rawload raises it to unlimited",
        ),
        Err(e) => check(
            "memlock",
            Verdict::Missing,
            format!("probe failed: {}", e.desc()),
        ),
    }
}

fn cgroup_v2() -> Check {
    match attach::cgroup2_mount() {
        Some(p) => check(
            "cgroup v2",
            Verdict::Ok,
            format!("mounted at {}", p.display()),
        ),
        None => check(
            "cgroup v2",
            Verdict::Missing,
            "not mounted: mount -t cgroup2 none /sys/fs/cgroup/unified",
        ),
    }
}

fn bpffs() -> Check {
    let mounted = statfs(Path::new(BPFFS_MOUNT)).is_ok_and(|s| s.filesystem_type() == BPF_FS_MAGIC);
    if mounted {
        check("bpffs", Verdict::Ok, format!("mounted at {BPFFS_MOUNT}"))
    } else {
        check(
            "bpffs",
            Verdict::Note,
            format!("not mounted at {BPFFS_MOUNT}; attach mounts it"),
        )
    }
}

fn tracefs() -> Check {
    let pipes = [
        "/sys/kernel/tracing/trace_pipe",
        "/sys/kernel/debug/tracing/trace_pipe",
    ];
    match pipes.iter().find(|p| Path::new(p).exists()) {
        Some(p) => check("tracefs", Verdict::Ok, format!("{p} (for rawload trace)")),
        None => check(
            "tracefs",
            Verdict::Note,
            "not mounted; rawload trace mounts it at /sys/kernel/tracing",
        ),
    }
}

/// Whether rawload is attached through the default pin directory.
fn attached() -> Check {
    match status::read(Path::new(DEFAULT_PIN_DIR)) {
        Ok(Some(s)) if s.attached() => check(
            "attached",
            Verdict::Ok,
            format!(
                "yes, to {} (pins in {DEFAULT_PIN_DIR})",
                s.cgroup.map_or("?".into(), |c| c.display().to_string())
            ),
        ),
        Ok(Some(_)) => check(
            "attached",
            Verdict::Note,
            format!("partly: see rawload status (pins in {DEFAULT_PIN_DIR})"),
        ),
        Ok(None) => check(
            "attached",
            Verdict::Ok,
            format!("no (no pins in {DEFAULT_PIN_DIR})"),
        ),
        Err(e) => check("attached", Verdict::Note, format!("cannot tell: {e:#}")),
    }
}

/// Whether rawload can attach here.
pub fn usable(checks: &[Check]) -> bool {
    checks.iter().all(|c| c.verdict != Verdict::Missing)
}

pub fn render(checks: &[Check]) -> String {
    let mut o = String::new();
    for c in checks {
        let tag = match c.verdict {
            Verdict::Ok => "ok     ",
            Verdict::Note => "note   ",
            Verdict::Missing => "MISSING",
        };
        let _ = writeln!(o, "{tag} {:<14} {}", c.name, c.detail);
    }
    let _ = writeln!(
        o,
        "{}",
        if usable(checks) {
            "rawload can attach on this host"
        } else {
            "rawload cannot attach on this host until the MISSING items are fixed"
        }
    );
    o
}
