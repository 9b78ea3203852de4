//! Shared pieces of the kernel tests.
//!
//! Safety rules these helpers enforce:
//! - every test attaches only to its own child cgroup (a unique name under
//!   the cgroup2 mount) and pins only under its own directory in bpffs;
//! - [`TestEnv`]'s `Drop` detaches, unpins, ends the processes it put in its
//!   cgroup (only those) and removes the cgroup, also when the test panics;
//! - traffic stays on loopback, and every wait is bounded.
#![allow(dead_code)] // each test binary uses a different subset

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const RAWLOAD: &str = env!("CARGO_BIN_EXE_rawload");

/// Tests that move traffic compare loopback counters, so they run one at a
/// time even if the harness is given several threads.
static SERIAL: Mutex<()> = Mutex::new(());
static NEXT: AtomicUsize = AtomicUsize::new(0);

pub fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Fails the test (never skips it) when it cannot run as intended.
pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the kernel tests load eBPF programs and must run as root (sudo make test)"
    );
}

/// A private cgroup and pin directory, cleaned up on drop.
pub struct TestEnv {
    pub cgroup: PathBuf,
    pub pin_dir: PathBuf,
    _serial: MutexGuard<'static, ()>,
}

impl TestEnv {
    pub fn new(name: &str) -> TestEnv {
        require_root();
        let serial = serial();
        let mount = rawload_loader::attach::cgroup2_mount().expect("a cgroup2 mount");
        let unique = format!(
            "rawload-test-{name}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        );
        let cgroup = mount.join(&unique);
        assert_ne!(cgroup, mount, "tests never use the root cgroup");
        std::fs::create_dir(&cgroup).expect("creating the test cgroup");
        TestEnv {
            cgroup,
            pin_dir: PathBuf::from("/sys/fs/bpf").join(&unique),
            _serial: serial,
        }
    }

    pub fn pin_arg(&self) -> String {
        self.pin_dir.display().to_string()
    }

    pub fn cgroup_arg(&self) -> String {
        self.cgroup.display().to_string()
    }

    /// `rawload attach` into this environment, plus extra arguments. Streams
    /// stay redirected (`--stream-bytes 0`) unless `extra` says otherwise:
    /// most tests prove the redirect with long one-way streams, and the
    /// default policy depends on the kernel (see the streams tests).
    pub fn attach(&self, extra: &[&str]) -> Output {
        let (cgroup, pin) = (self.cgroup_arg(), self.pin_arg());
        let mut args = vec!["attach", "--cgroup", &cgroup, "--pin-dir", &pin];
        if !extra.contains(&"--stream-bytes") {
            args.extend_from_slice(&["--stream-bytes", "0"]);
        }
        args.extend_from_slice(extra);
        rawload(&args)
    }

    /// `rawload attach` into this environment with no other option: what a
    /// user gets from plain `sudo rawload attach`.
    pub fn attach_default(&self) -> Output {
        rawload(&[
            "attach",
            "--cgroup",
            &self.cgroup_arg(),
            "--pin-dir",
            &self.pin_arg(),
        ])
    }

    pub fn detach(&self) -> Output {
        rawload(&["detach", "--pin-dir", &self.pin_arg()])
    }

    /// `rawload status --json`, read with serde_json (see [`json`]).
    pub fn status_json(&self) -> Value {
        let out = rawload(&["status", "--json", "--pin-dir", &self.pin_arg()]);
        assert!(out.status.success(), "status failed: {}", stderr(&out));
        json(&stdout(&out), "status --json")
    }

    pub fn counter(&self, name: &str) -> u64 {
        self.status_json()["counters"][name]
            .as_u64()
            .unwrap_or_else(|| panic!("counter {name} missing from status"))
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        if self.pin_dir.exists() {
            let out = self.detach();
            if !out.status.success() {
                eprintln!("cleanup: detach failed: {}", stderr(&out));
            }
            let _ = std::fs::remove_dir(&self.pin_dir);
        }
        // Only processes this test started can be in its private cgroup.
        remove_cgroup(&self.cgroup);
    }
}

/// Removes a cgroup that only this test's processes ever joined, ending
/// them first (only processes this test started can be in it).
fn remove_cgroup(cgroup: &Path) {
    if !rawload::scratch::remove_private_cgroup(cgroup) {
        eprintln!("cleanup: could not remove {}", cgroup.display());
    }
}

/// A cgroup next to a test's own, with nothing attached: where plain TCP is
/// measured side by side, or where a peer outside the attachment runs.
pub struct SiblingCgroup(pub PathBuf);

impl TestEnv {
    pub fn sibling(&self, tag: &str) -> SiblingCgroup {
        let name = format!(
            "{}-{tag}",
            self.cgroup.file_name().unwrap().to_string_lossy()
        );
        let path = self.cgroup.with_file_name(name);
        std::fs::create_dir(&path).expect("creating a sibling cgroup");
        SiblingCgroup(path)
    }
}

impl Drop for SiblingCgroup {
    fn drop(&mut self) {
        remove_cgroup(&self.0);
    }
}

/// The line of `rawload doctor` output for `check` (without the verdict
/// column's padding differences).
pub fn doctor_line(doctor: &str, check: &str) -> String {
    doctor
        .lines()
        .find(|l| {
            l.split_whitespace()
                .skip(1)
                .collect::<Vec<_>>()
                .join(" ")
                .starts_with(check)
        })
        .unwrap_or_else(|| panic!("no {check} line in doctor:\n{doctor}"))
        .to_string()
}

/// Programs an attachment of the embedded object loads on this kernel:
/// sock_ops and sk_msg, and the sk_skb verdict where `doctor` finds the
/// FIONREAD regression.
pub fn expected_programs() -> usize {
    let fionread = doctor_line(&stdout(&rawload(&["doctor"])), "fionread");
    2 + usize::from(fionread.contains("ignores TCP bytes"))
}

pub fn rawload(args: &[&str]) -> Output {
    Command::new(RAWLOAD)
        .args(args)
        .output()
        .expect("running rawload")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// JSON that rawload printed (`what` says which), read with serde_json: a
/// parser that shares no code with rawload's writer (`rawload::json`), so
/// a bug in the writer is not hidden by the same bug in rawload's own
/// reader. Fails the test, showing the text, when it is not valid JSON.
pub fn json(text: &str, what: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{what} is not valid JSON ({e}):\n{text}"))
}

/// Asserts success and returns stdout.
pub fn ok(o: Output) -> String {
    assert!(
        o.status.success(),
        "rawload failed ({}): {}{}",
        o.status,
        stdout(&o),
        stderr(&o)
    );
    stdout(&o)
}

pub use rawload::traffic::Transfer;

/// A verified transfer between two peer processes in `cgroup` (see
/// `rawload::traffic::run_pair`); panics if it cannot run at all.
pub fn transfer(
    cgroup: &Path,
    listen: &str,
    connect_host: &str,
    bytes: u64,
    extra: &[&str],
) -> Transfer {
    rawload::traffic::run_pair(
        Path::new(RAWLOAD),
        cgroup,
        listen,
        connect_host,
        bytes,
        extra,
        Duration::from_secs(300),
    )
    .unwrap_or_else(|e| panic!("transfer {listen} <- {connect_host}: {e:#}"))
}

/// Asserts that the transfer arrived intact both ways.
pub fn assert_intact(t: &Transfer) {
    let problems = t.problems();
    assert!(
        problems.is_empty(),
        "transfer not intact:\n{}",
        problems.join("\n")
    );
}

/// Asserts that the transfer's bytes were redirected: `lo` grew by less
/// than 1% of the payload (the handshakes), not by twice it as over TCP.
pub fn assert_bypassed(t: &Transfer) {
    assert!(
        t.lo_delta * 100 < t.payload,
        "loopback grew {} B for {} B of payload: the bytes were not redirected",
        t.lo_delta,
        t.payload
    );
}

/// Program ids `bpftool prog show` lists (Debian's bpftool, an independent
/// reader of the kernel's state).
pub fn bpftool_prog_ids() -> Vec<u32> {
    bpftool_ids("prog")
}

/// Map ids `bpftool map show` lists.
pub fn bpftool_map_ids() -> Vec<u32> {
    bpftool_ids("map")
}

/// The ids of `bpftool <kind> show`: each object's first line is `ID: ...`.
fn bpftool_ids(kind: &str) -> Vec<u32> {
    bpftool(&[kind, "show"])
        .lines()
        .filter_map(|l| l.split(':').next()?.trim().parse().ok())
        .collect()
}

/// Waits until every program `bpftool prog show` lists was already there
/// before the test: programs are freed shortly after the last socket holding
/// them closes. (Programs of an earlier test may vanish meanwhile.)
pub fn wait_for_programs(before: &[u32]) {
    wait_gone("programs", bpftool_prog_ids, before);
}

/// Waits until every map `bpftool map show` lists was already there before.
pub fn wait_for_maps(before: &[u32]) {
    wait_gone("maps", bpftool_map_ids, before);
}

/// Waits (10 s at most, else fails the test) until `list` shows no id that
/// is not in `before`.
fn wait_gone(what: &str, list: fn() -> Vec<u32>, before: &[u32]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let new: Vec<u32> = list()
            .into_iter()
            .filter(|id| !before.contains(id))
            .collect();
        if new.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "{what} left behind: {new:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn bpftool(args: &[&str]) -> String {
    let out = Command::new("bpftool")
        .args(args)
        .output()
        .expect("running bpftool");
    assert!(
        out.status.success(),
        "bpftool {args:?} failed: {}",
        stderr(&out)
    );
    stdout(&out)
}

/// `make torture` sets RAWLOAD_TORTURE=long; `make test` runs the short form.
pub fn long_form() -> bool {
    std::env::var("RAWLOAD_TORTURE").is_ok_and(|v| v == "long")
}

/// `short` in `make test`, `long` in `make torture`.
pub fn scale<T>(short: T, long: T) -> T {
    if long_form() { long } else { short }
}

impl TestEnv {
    /// All counters of the attachment.
    pub fn counters(&self) -> std::collections::BTreeMap<String, u64> {
        let status = self.status_json();
        let counters = status["counters"]
            .as_object()
            .unwrap_or_else(|| panic!("status has no counters: {status}"));
        counters
            .iter()
            .map(|(k, v)| {
                let n = v
                    .as_u64()
                    .unwrap_or_else(|| panic!("counter {k} is not a count: {v}"));
                (k.clone(), n)
            })
            .collect()
    }

    /// Entries in the socket map now.
    pub fn sockets_in_map(&self) -> u64 {
        self.map_entries("rawload_socks")
    }

    /// Waits (10 s at most, else fails the test saying `what`) until the
    /// socket map holds at most `n` entries: closed sockets leave it as the
    /// kernel tears them down, not at the instant `close()` returns.
    pub fn wait_sockets_in_map_at_most(&self, n: u64, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.sockets_in_map() > n {
            assert!(Instant::now() < deadline, "{what}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Entries in the map called `name` now.
    pub fn map_entries(&self, name: &str) -> u64 {
        self.status_json()["maps"]
            .as_array()
            .and_then(|maps| maps.iter().find(|m| m["name"] == name))
            .and_then(|m| m["entries"].as_u64())
            .unwrap_or_else(|| panic!("no map {name} in status"))
    }
}

/// `after - before` for one counter.
pub fn delta(
    before: &std::collections::BTreeMap<String, u64>,
    after: &std::collections::BTreeMap<String, u64>,
    name: &str,
) -> u64 {
    after[name] - before[name]
}

/// A transfer in a background thread (for things that happen meanwhile).
pub fn spawn_transfer(
    cgroup: &Path,
    listen: &str,
    host: &str,
    bytes: u64,
    extra: &[&str],
) -> std::thread::JoinHandle<Transfer> {
    let (cgroup, listen, host) = (cgroup.to_path_buf(), listen.to_string(), host.to_string());
    let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    std::thread::spawn(move || {
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        transfer(&cgroup, &listen, &host, bytes, &extra)
    })
}

/// Kernel TCP memory in use, in pages (`mem` of the TCP line of
/// /proc/net/sockstat).
pub fn tcp_mem_pages() -> u64 {
    let stat = std::fs::read_to_string("/proc/net/sockstat").expect("/proc/net/sockstat");
    let tcp = stat
        .lines()
        .find(|l| l.starts_with("TCP:"))
        .expect("a TCP line");
    let f: Vec<&str> = tcp.split_whitespace().collect();
    let i = f.iter().position(|w| *w == "mem").expect("a mem field");
    f[i + 1].parse().expect("a number")
}

/// The third value of net.ipv4.tcp_mem: the kernel's hard limit, in pages.
pub fn tcp_mem_limit_pages() -> u64 {
    std::fs::read_to_string("/proc/sys/net/ipv4/tcp_mem")
        .expect("tcp_mem")
        .split_whitespace()
        .nth(2)
        .and_then(|v| v.parse().ok())
        .expect("three numbers")
}

/// A network namespace made by the test (`ip netns add`), removed on drop.
pub struct Netns(pub String);

impl Netns {
    pub fn new(tag: &str) -> Netns {
        let name = format!("rawload-test-{tag}-{}", std::process::id());
        let run = |args: &[&str]| {
            let out = Command::new("ip")
                .args(args)
                .output()
                .expect("ip (iproute2)");
            assert!(out.status.success(), "ip {args:?}: {}", stderr(&out));
        };
        run(&["netns", "add", &name]);
        let ns = Netns(name);
        run(&["-n", &ns.0, "link", "set", "lo", "up"]);
        ns
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
    }
}

/// Runs `ip ARGS`, failing the test with ip's own message.
pub fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("ip (iproute2)");
    assert!(out.status.success(), "ip {args:?}: {}", stderr(&out));
}

/// A veth pair made by the test: `host` in this (the host's) namespace
/// with `host_addr`, the other end in `ns` with `ns_addr` (both /30s the
/// test chose). Removed on drop; deleting one end deletes both.
pub struct Veth {
    pub host: String,
}

impl Veth {
    pub fn new(ns: &Netns, host_addr: &str, ns_addr: &str) -> Veth {
        let tag = std::process::id() % 100_000;
        let (host, peer) = (format!("rlt-h{tag}"), format!("rlt-n{tag}"));
        ip(&["link", "add", &host, "type", "veth", "peer", "name", &peer]);
        let veth = Veth { host };
        ip(&["link", "set", &peer, "netns", &ns.0]);
        ip(&["addr", "add", &format!("{host_addr}/30"), "dev", &veth.host]);
        ip(&["link", "set", &veth.host, "up"]);
        ip(&[
            "-n",
            &ns.0,
            "addr",
            "add",
            &format!("{ns_addr}/30"),
            "dev",
            &peer,
        ]);
        ip(&["-n", &ns.0, "link", "set", &peer, "up"]);
        veth
    }
}

impl Drop for Veth {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.host])
            .output();
    }
}

/// A Linux bridge made by the test (what docker0, cni0 and podman0 are),
/// removed on drop with the ports still in this namespace.
pub struct Bridge(pub String);

impl Bridge {
    pub fn new() -> Bridge {
        let name = format!("rlt-br{}", std::process::id() % 100_000);
        ip(&["link", "add", &name, "type", "bridge"]);
        let bridge = Bridge(name);
        ip(&["link", "set", &bridge.0, "up"]);
        bridge
    }

    /// Plugs `ns` into the bridge as a container runtime does: a veth whose
    /// host end is a port of the bridge and whose other end is `eth0` in
    /// `ns` with `addr` (ADDRESS/PREFIX). `n` tells the ports apart.
    pub fn port(&self, n: u32, ns: &Netns, addr: &str) -> Veth {
        let host = format!("rlt-p{n}-{}", std::process::id() % 100_000);
        ip(&[
            "link", "add", &host, "type", "veth", "peer", "name", "eth0", "netns", &ns.0,
        ]);
        let veth = Veth { host };
        ip(&["link", "set", &veth.host, "master", &self.0, "up"]);
        ip(&["-n", &ns.0, "addr", "add", addr, "dev", "eth0"]);
        ip(&["-n", &ns.0, "link", "set", "eth0", "up"]);
        veth
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", &self.0]).output();
    }
}

impl Veth {
    /// Bytes this veth's host end moved, both ways (what crossed the
    /// bridge port).
    pub fn bytes(&self) -> u64 {
        ["rx_bytes", "tx_bytes"]
            .iter()
            .map(|f| {
                let path = format!("/sys/class/net/{}/statistics/{f}", self.host);
                std::fs::read_to_string(&path)
                    .unwrap_or_else(|e| panic!("{path}: {e}"))
                    .trim()
                    .parse::<u64>()
                    .expect("a byte counter")
            })
            .sum()
    }
}

/// A veth pair straight from one namespace into another, never touching
/// the host's: two isolated containers wired to each other. `eth0` in both,
/// with the addresses given (ADDRESS/PREFIX). Goes with the namespaces.
pub fn wire(a: &Netns, a_addr: &str, b: &Netns, b_addr: &str) {
    ip(&[
        "-n", &a.0, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", &b.0,
    ]);
    for (ns, addr) in [(a, a_addr), (b, b_addr)] {
        ip(&["-n", &ns.0, "addr", "add", addr, "dev", "eth0"]);
        ip(&["-n", &ns.0, "link", "set", "eth0", "up"]);
    }
}
