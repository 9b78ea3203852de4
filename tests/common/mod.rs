//! Shared pieces of the kernel tests.
//!
//! Safety rules these helpers enforce:
//! - every test attaches only to its own child cgroup (a unique name under
//!   the cgroup2 mount) and pins only under its own directory in bpffs;
//! - [`TestEnv`]'s `Drop` detaches, unpins, ends the processes it put in its
//!   cgroup (only those) and removes the cgroup, also when the test panics;
//! - traffic stays on loopback, and every wait is bounded.
#![allow(dead_code)] // each test binary uses a different subset

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rawload::json::Json;

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
        let mount = rawload::attach::cgroup2_mount().expect("a cgroup2 mount");
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

    /// `rawload attach` into this environment, plus extra arguments.
    pub fn attach(&self, extra: &[&str]) -> Output {
        let (cgroup, pin) = (self.cgroup_arg(), self.pin_arg());
        let mut args = vec!["attach", "--cgroup", &cgroup, "--pin-dir", &pin];
        args.extend_from_slice(extra);
        rawload(&args)
    }

    pub fn detach(&self) -> Output {
        rawload(&["detach", "--pin-dir", &self.pin_arg()])
    }

    pub fn status_json(&self) -> Json {
        let out = rawload(&["status", "--json", "--pin-dir", &self.pin_arg()]);
        assert!(out.status.success(), "status failed: {}", stderr(&out));
        Json::parse(&stdout(&out)).expect("status --json is valid JSON")
    }

    pub fn counter(&self, name: &str) -> u64 {
        self.status_json()
            .get("counters")
            .and_then(|c| c.get(name))
            .and_then(Json::as_u64)
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
        let procs = self.cgroup.join("cgroup.procs");
        for _ in 0..50 {
            let pids = std::fs::read_to_string(&procs).unwrap_or_default();
            if pids.trim().is_empty() {
                break;
            }
            for pid in pids.lines().filter_map(|p| p.trim().parse::<i32>().ok()) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        for _ in 0..50 {
            match std::fs::remove_dir(&self.cgroup) {
                Ok(()) => return,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
        eprintln!("cleanup: could not remove {}", self.cgroup.display());
    }
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

/// Loopback RX + TX bytes from /proc/net/dev.
pub fn lo_bytes() -> u64 {
    let dev = std::fs::read_to_string("/proc/net/dev").expect("/proc/net/dev");
    let line = dev
        .lines()
        .find(|l| l.trim_start().starts_with("lo:"))
        .expect("a lo line");
    let fields: Vec<u64> = line
        .split_once(':')
        .unwrap()
        .1
        .split_whitespace()
        .map(|f| f.parse().unwrap())
        .collect();
    fields[0] + fields[8]
}

/// Kills a child on drop if it is still running (it is ours).
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

fn wait_with_timeout(child: &mut Reaped, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.0.try_wait().expect("waiting for a peer") {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "a traffic peer did not finish within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The result of one verified transfer.
pub struct Transfer {
    pub client: Json,
    pub server: Json,
    /// Growth of the loopback RX+TX byte counters during the transfer.
    pub lo_delta: u64,
    /// Payload bytes moved in both directions together (headers included).
    pub payload: u64,
}

impl Transfer {
    /// Same bytes arrived as were sent, both ways, with nothing wrong.
    pub fn assert_intact(&self) {
        for side in [&self.client, &self.server] {
            assert_eq!(
                side.get("bad_bytes").and_then(Json::as_u64),
                Some(0),
                "corrupted bytes: {side}"
            );
            assert_eq!(
                side.get("errors")
                    .and_then(Json::as_array)
                    .map(<[Json]>::len),
                Some(0),
                "errors: {side}"
            );
        }
        let field = |v: &Json, k: &str| v.get(k).and_then(Json::as_str).unwrap_or("").to_string();
        assert_eq!(
            field(&self.client, "sent_digest"),
            field(&self.server, "recv_digest")
        );
        assert_eq!(
            field(&self.server, "sent_digest"),
            field(&self.client, "recv_digest")
        );
        let sent = |v: &Json| v.get("bytes_sent").and_then(Json::as_u64).unwrap();
        let recv = |v: &Json| v.get("bytes_received").and_then(Json::as_u64).unwrap();
        assert_eq!(sent(&self.client), recv(&self.server));
        assert_eq!(sent(&self.server), recv(&self.client));
    }

    pub fn digests(&self) -> (String, String) {
        let d = |v: &Json| {
            v.get("sent_digest")
                .and_then(Json::as_str)
                .unwrap()
                .to_string()
        };
        (d(&self.client), d(&self.server))
    }
}

/// Runs `rawload peer serve` on `listen` and `rawload peer connect` to
/// `connect_host` (port taken from the server), both inside `cgroup`, with
/// `bytes` of payload each way per connection.
pub fn transfer(
    cgroup: &Path,
    listen: &str,
    connect_host: &str,
    bytes: u64,
    extra: &[&str],
) -> Transfer {
    let size = bytes.to_string();
    let cg = cgroup.display().to_string();
    let lo_before = lo_bytes();
    let mut server_args = vec![
        "peer", "serve", "--listen", listen, "--bytes", &size, "--cgroup", &cg,
    ];
    server_args.extend_from_slice(extra);
    let mut server = Reaped(
        Command::new(RAWLOAD)
            .args(&server_args)
            .stdout(Stdio::piped())
            .spawn()
            .expect("starting the server peer"),
    );
    let mut lines = BufReader::new(server.0.stdout.take().unwrap()).lines();
    let first = lines.next().expect("server output").expect("server output");
    let bound: SocketAddr = first
        .strip_prefix("listening ")
        .unwrap_or_else(|| panic!("unexpected server output {first:?}"))
        .parse()
        .unwrap();
    let to = if connect_host.contains(':') {
        format!("[{connect_host}]:{}", bound.port())
    } else {
        format!("{connect_host}:{}", bound.port())
    };
    let mut client_args = vec![
        "peer", "connect", "--to", &to, "--bytes", &size, "--cgroup", &cg,
    ];
    client_args.extend_from_slice(extra);
    let mut client = Reaped(
        Command::new(RAWLOAD)
            .args(&client_args)
            .stdout(Stdio::piped())
            .spawn()
            .expect("starting the client peer"),
    );
    let client_out = client.0.stdout.take().unwrap();
    wait_with_timeout(&mut client, Duration::from_secs(300));
    wait_with_timeout(&mut server, Duration::from_secs(60));
    let lo_delta = lo_bytes() - lo_before;
    let last = |lines: Vec<String>| -> Json {
        let line = lines.into_iter().last().expect("a report line");
        Json::parse(&line).unwrap_or_else(|e| panic!("bad report {line:?}: {e}"))
    };
    let server_json = last(lines.map(Result::unwrap).collect());
    let client_json = last(
        BufReader::new(client_out)
            .lines()
            .map(Result::unwrap)
            .collect(),
    );
    let payload = client_json
        .get("bytes_sent")
        .and_then(Json::as_u64)
        .unwrap_or(0)
        + server_json
            .get("bytes_sent")
            .and_then(Json::as_u64)
            .unwrap_or(0);
    Transfer {
        client: client_json,
        server: server_json,
        lo_delta,
        payload,
    }
}

/// Program ids `bpftool prog show` lists (Debian's bpftool, an independent
/// reader of the kernel's state).
pub fn bpftool_prog_ids() -> Vec<u32> {
    let out = Command::new("bpftool")
        .args(["prog", "show"])
        .output()
        .expect("bpftool is installed (make test-deps)");
    assert!(
        out.status.success(),
        "bpftool prog show failed: {}",
        stderr(&out)
    );
    stdout(&out)
        .lines()
        .filter_map(|l| l.split(':').next()?.trim().parse().ok())
        .collect()
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
