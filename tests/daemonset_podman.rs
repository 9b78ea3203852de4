//! The DaemonSet for real: deploy/Dockerfile built with podman and run the
//! way deploy/daemonset.yaml runs it (privileged, host network, host PID,
//! the host's /sys/fs/cgroup at /host/cgroup, the host's bpffs shared both
//! ways, its command, memory limit and grace period), on this host.
//!
//! Two changes, so that it touches nothing else on the machine: `--cgroup`
//! names a child cgroup the test creates instead of the cgroup2 root, and
//! `--pin-dir` a private directory. Then a second container, in that child
//! cgroup and a network namespace of its own, moves 64 MiB each way over
//! 127.0.0.1 (`rawload peer`); the test checks that rawload redirected it
//! (`msgs_redirected`, and the container's `lo` stayed flat), and that
//! `podman stop` (SIGTERM) makes the pod detach: exit code 0, no pins, no
//! programs, nothing on the cgroup.
//!
//! Needs root, podman (and runc on a hybrid cgroup host) and the static
//! `./rawload` that `make` builds (the image is `scratch`: a dynamically
//! linked binary cannot start there). `make test` installs podman and runc
//! (`make test-deps`) and builds `./rawload` before it runs the tests. When
//! any of these is missing the test fails and says what to do: it never
//! skips.
//!
//! Two things a plain `podman run` stumbles on, here and on similar hosts
//! (deploy/README.md, "Containers with podman"):
//! - root without CAP_SYS_RESOURCE: podman asks the OCI runtime for
//!   RLIMIT_NOFILE and RLIMIT_NPROC of 1048576, which only that capability
//!   may raise to; the test passes limits no higher than its own.
//! - hybrid cgroups (v1 controllers, cgroup2 at /sys/fs/cgroup/unified):
//!   crun refuses whenever the cgroup2 hierarchy has any controller; runc
//!   runs, and puts each container at its `--cgroup-parent` in every
//!   hierarchy, cgroup2 included.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use saphyr::{LoadableYamlNode, YamlOwned};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const PAYLOAD: u64 = 64 << 20;

fn fail_setup(what: &str) -> ! {
    panic!(
        "{what}\n(this test runs the DaemonSet's image with podman and never skips: \
         `sudo make test` installs podman and runc and builds ./rawload first)"
    )
}

/// The cgroup2 mount point: the first cgroup2 entry of mountinfo.
fn cgroup2_mount() -> PathBuf {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    info.lines()
        .find_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            post.starts_with("cgroup2 ")
                .then(|| PathBuf::from(pre.split(' ').nth(4).unwrap()))
        })
        .unwrap_or_else(|| fail_setup("no cgroup2 hierarchy is mounted"))
}

/// `name` in one of the directories of $PATH.
fn in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// Whether an ELF file has a PT_INTERP program header (needs ld.so).
fn is_dynamic(elf: &[u8]) -> bool {
    let u16_at = |o: usize| u16::from_le_bytes(elf[o..o + 2].try_into().unwrap()) as usize;
    let phoff = u64::from_le_bytes(elf[0x20..0x28].try_into().unwrap()) as usize;
    let (phentsize, phnum) = (u16_at(0x36), u16_at(0x38));
    (0..phnum).any(|i| {
        let o = phoff + i * phentsize;
        u32::from_le_bytes(elf[o..o + 4].try_into().unwrap()) == 3
    })
}

/// The hard limit of one resource of /proc/self/limits ("Max open files").
fn hard_limit(name: &str) -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with(name))?;
    let words: Vec<&str> = line[name.len()..].split_whitespace().collect();
    words.get(1)?.parse().ok()
}

fn has_cap_sys_resource() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .map(|v| u64::from_str_radix(v.trim(), 16).unwrap())
        .unwrap_or(0);
    eff & (1 << 24) != 0
}

/// Runs a command with a time bound (coreutils `timeout`); returns its output.
fn run(secs: u32, program: &str, args: &[String]) -> Output {
    Command::new("timeout")
        .arg("-k")
        .arg("5")
        .arg(secs.to_string())
        .arg(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {program}: {e}"))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// podman with the global options this host needs.
struct Podman {
    global: Vec<String>,
    run_opts: Vec<String>,
}

impl Podman {
    fn new(hybrid: bool) -> Podman {
        let mut global = vec!["--cgroup-manager".into(), "cgroupfs".into()];
        if hybrid {
            global.extend(["--runtime".into(), "runc".into()]);
        }
        let mut run_opts = Vec::new();
        if !has_cap_sys_resource() {
            // podman lowers its own RLIMIT_NPROC to 32768 before it starts
            // the runtime, so the container cannot get more than that.
            let nofile = hard_limit("Max open files").unwrap_or(1024);
            let nproc = hard_limit("Max processes").unwrap_or(32768).min(32768);
            run_opts.extend([
                "--ulimit".into(),
                format!("nofile={nofile}:{nofile}"),
                "--ulimit".into(),
                format!("nproc={nproc}:{nproc}"),
            ]);
        }
        Podman { global, run_opts }
    }

    fn cmd(&self, secs: u32, args: &[&str]) -> Output {
        let mut all = self.global.clone();
        all.extend(args.iter().map(|s| s.to_string()));
        run(secs, "podman", &all)
    }

    /// Succeeds or fails the test with podman's output.
    fn ok(&self, secs: u32, args: &[&str]) -> String {
        let out = self.cmd(secs, args);
        assert!(
            out.status.success(),
            "podman {} failed ({}):\n{}{}",
            args.join(" "),
            out.status,
            text(&out.stdout),
            text(&out.stderr)
        );
        text(&out.stdout)
    }
}

/// What the DaemonSet asks of its container, read from deploy/daemonset.yaml.
struct PodSpec {
    command: Vec<String>,
    host_network: bool,
    host_pid: bool,
    privileged: bool,
    /// (host path, container path, read-only, Bidirectional)
    mounts: Vec<(String, String, bool, bool)>,
    memory_limit: Option<String>,
    grace_secs: i64,
    readiness: Vec<String>,
}

fn pod_spec() -> PodSpec {
    let path = Path::new(ROOT).join("deploy/daemonset.yaml");
    let docs = YamlOwned::load_from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let pod = docs[0]
        .as_mapping_get("spec")
        .and_then(|s| s.as_mapping_get("template"))
        .and_then(|t| t.as_mapping_get("spec"))
        .expect("spec.template.spec");
    let get = |node: &'_ YamlOwned, path: &[&str]| -> Option<YamlOwned> {
        path.iter()
            .try_fold(node, |n, k| n.as_mapping_get(k))
            .cloned()
    };
    let strings = |node: &YamlOwned| -> Vec<String> {
        node.as_sequence()
            .expect("a sequence")
            .iter()
            .map(|w| w.as_str().expect("a string").to_string())
            .collect()
    };
    let flag = |node: &YamlOwned, path: &[&str]| {
        get(node, path).and_then(|v| v.as_bool()).unwrap_or(false)
    };
    let container = &pod
        .as_mapping_get("containers")
        .unwrap()
        .as_sequence()
        .unwrap()[0];
    let volumes = pod
        .as_mapping_get("volumes")
        .unwrap()
        .as_sequence()
        .unwrap();
    let mounts = container
        .as_mapping_get("volumeMounts")
        .unwrap()
        .as_sequence()
        .unwrap()
        .iter()
        .map(|m| {
            let name = get(m, &["name"]).unwrap();
            let host = volumes
                .iter()
                .find(|v| get(v, &["name"]).as_ref() == Some(&name))
                .and_then(|v| get(v, &["hostPath", "path"]))
                .unwrap_or_else(|| panic!("no hostPath volume for {name:?}"));
            (
                host.as_str().unwrap().to_string(),
                get(m, &["mountPath"])
                    .unwrap()
                    .as_str()
                    .unwrap()
                    .to_string(),
                flag(m, &["readOnly"]),
                get(m, &["mountPropagation"]).and_then(|p| p.as_str().map(str::to_string))
                    == Some("Bidirectional".into()),
            )
        })
        .collect();
    PodSpec {
        command: strings(container.as_mapping_get("command").unwrap()),
        host_network: flag(pod, &["hostNetwork"]),
        host_pid: flag(pod, &["hostPID"]),
        privileged: flag(container, &["securityContext", "privileged"]),
        mounts,
        memory_limit: get(container, &["resources", "limits", "memory"])
            .and_then(|m| m.as_str().map(str::to_string)),
        grace_secs: get(pod, &["terminationGracePeriodSeconds"])
            .and_then(|g| g.as_integer())
            .unwrap_or(30),
        readiness: get(container, &["readinessProbe", "exec", "command"])
            .map(|c| strings(&c))
            .unwrap_or_default(),
    }
}

/// Kubernetes' "256Mi" as podman's "256m" (podman's units are powers of 1024).
fn podman_memory(k8s: &str) -> String {
    for (suffix, unit) in [("Ki", "k"), ("Mi", "m"), ("Gi", "g")] {
        if let Some(n) = k8s.strip_suffix(suffix) {
            return format!("{n}{unit}");
        }
    }
    k8s.to_string()
}

/// Everything the test creates, removed on drop (also when it fails).
struct Guard<'a> {
    podman: &'a Podman,
    name: String,
    containers: Vec<String>,
    image: String,
    pin_dir: PathBuf,
    cgroups: Vec<String>,
}

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        for c in &self.containers {
            let _ = self.podman.cmd(60, &["rm", "-f", "-t", "0", c]);
        }
        let _ = self.podman.cmd(60, &["rmi", "-f", &self.image]);
        if self.pin_dir.exists() {
            let rawload = Path::new(ROOT).join("rawload");
            let _ = run(
                30,
                rawload.to_str().unwrap(),
                &[
                    "detach".into(),
                    "--pin-dir".into(),
                    self.pin_dir.display().to_string(),
                ],
            );
            let _ = std::fs::remove_dir_all(&self.pin_dir);
        }
        // The cgroup in every hierarchy (podman creates it in the v1 ones
        // too, with a conmon child), leaves first.
        for cg in &self.cgroups {
            let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") else {
                continue;
            };
            let mut dirs: Vec<PathBuf> = hierarchies
                .flatten()
                .map(|h| h.path().join(cg))
                .chain(std::iter::once(Path::new("/sys/fs/cgroup").join(cg)))
                .filter(|d| d.is_dir())
                .collect();
            dirs.sort();
            dirs.dedup();
            for d in dirs {
                for _ in 0..50 {
                    remove_tree(&d);
                    if !d.exists() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                if d.exists() {
                    eprintln!("{}: could not remove cgroup {}", self.name, d.display());
                }
            }
        }
    }
}

/// rmdir of a cgroup directory and its children, deepest first.
fn remove_tree(d: &Path) {
    if let Ok(entries) = std::fs::read_dir(d) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_tree(&e.path());
            }
        }
    }
    let _ = std::fs::remove_dir(d);
}

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

/// Bytes received on `lo` in the network namespace of `pid`.
fn lo_rx_bytes(pid: u32) -> u64 {
    let dev = std::fs::read_to_string(format!("/proc/{pid}/net/dev")).unwrap();
    dev.lines()
        .find_map(|l| l.trim_start().strip_prefix("lo:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no lo in /proc/{pid}/net/dev:\n{dev}"))
}

#[test]
fn daemonset_image_under_podman_accelerates_a_pod_and_detaches_on_sigterm() {
    if unsafe { libc::geteuid() } != 0 {
        fail_setup("needs root: it runs privileged containers and attaches eBPF programs");
    }
    if in_path("podman").is_none() {
        fail_setup(
            "podman is not installed: `apt-get install podman runc` (`make test-deps` does)",
        );
    }
    let cg2 = cgroup2_mount();
    let hybrid = cg2 != Path::new("/sys/fs/cgroup");
    if hybrid && in_path("runc").is_none() {
        fail_setup(&format!(
            "cgroup2 is at {} (a hybrid host), where crun refuses to run containers: \
             install runc (`apt-get install runc`; `make test-deps` does)",
            cg2.display()
        ));
    }
    let binary = Path::new(ROOT).join("rawload");
    let elf = std::fs::read(&binary).unwrap_or_else(|_| {
        fail_setup(&format!(
            "{} is missing: run `make` (the image copies the static binary it builds)",
            binary.display()
        ))
    });
    if is_dynamic(&elf) {
        fail_setup(&format!(
            "{} is dynamically linked and cannot start in a scratch image: rebuild it with `make`",
            binary.display()
        ));
    }
    let Some(under_host_cgroup) = cg2.strip_prefix("/sys/fs/cgroup").ok() else {
        fail_setup(&format!(
            "cgroup2 is mounted at {}, outside /sys/fs/cgroup, which the DaemonSet mounts",
            cg2.display()
        ));
    };

    let spec = pod_spec();
    let podman = Podman::new(hybrid);
    let name = format!("rawload-ds-test-{}", std::process::id());
    let agent = format!("{name}-agent");
    let app = format!("{name}-app");
    let image = format!("localhost/{name}:latest");
    let pin_dir = Path::new("/sys/fs/bpf").join(&name);
    let cgroup = cg2.join(&name);
    let guard = Guard {
        podman: &podman,
        name: name.clone(),
        containers: vec![app.clone(), agent.clone()],
        image: image.clone(),
        pin_dir: pin_dir.clone(),
        cgroups: vec![
            // The cgroup2 path relative to a hierarchy's mount: the same
            // name in every one (runc creates it in each).
            name.clone(),
            format!("{name}-agent"),
        ],
    };
    std::fs::create_dir(&cgroup).unwrap_or_else(|e| panic!("mkdir {}: {e}", cgroup.display()));

    // The image, as deploy/README.md builds it.
    podman.ok(
        300,
        &["build", "-q", "-f", "deploy/Dockerfile", "-t", &image, ROOT],
    );

    // The DaemonSet's container. --cgroup: the child cgroup, as seen from
    // inside (the host's /sys/fs/cgroup is at the mount path of the
    // host-cgroup volume).
    let cgroup_mount = spec
        .mounts
        .iter()
        .find(|m| m.0 == "/sys/fs/cgroup")
        .map(|m| m.1.clone())
        .expect("a volume of the host's /sys/fs/cgroup");
    let inner_cgroup = Path::new(&cgroup_mount).join(under_host_cgroup).join(&name);
    let mut command = spec.command.clone();
    let at = command
        .iter()
        .position(|w| w == "--cgroup")
        .expect("--cgroup in the command");
    command[at + 1] = inner_cgroup.display().to_string();
    match command.iter().position(|w| w == "--pin-dir") {
        Some(i) => command[i + 1] = pin_dir.display().to_string(),
        None => command.extend(["--pin-dir".into(), pin_dir.display().to_string()]),
    }
    let cgroup_parent = format!("/{name}-agent");
    let mut args: Vec<String> = vec![
        "run".into(),
        "-d".into(),
        "--name".into(),
        agent.clone(),
        "--cgroup-parent".into(),
        cgroup_parent,
    ];
    args.extend(podman.run_opts.iter().cloned());
    assert!(
        spec.privileged && spec.host_network && spec.host_pid,
        "the DaemonSet runs privileged, hostNetwork, hostPID"
    );
    args.extend([
        "--privileged".into(),
        "--network".into(),
        "host".into(),
        "--pid".into(),
        "host".into(),
    ]);
    for (host, inside, ro, bidirectional) in &spec.mounts {
        let mut opts = Vec::new();
        if *ro {
            opts.push("ro");
        }
        if *bidirectional {
            opts.push("rshared");
        }
        let suffix = if opts.is_empty() {
            String::new()
        } else {
            format!(":{}", opts.join(","))
        };
        args.extend(["-v".into(), format!("{host}:{inside}{suffix}")]);
    }
    if let Some(mem) = &spec.memory_limit {
        args.extend(["--memory".into(), podman_memory(mem)]);
    }
    args.extend(["--entrypoint".into(), command[0].clone(), image.clone()]);
    args.extend(command[1..].iter().cloned());
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    podman.ok(60, &refs);

    // Ready: the DaemonSet's readiness probe (with our pin dir) exits 0.
    let mut probe: Vec<String> = vec!["exec".into(), agent.clone()];
    probe.extend(spec.readiness.iter().cloned());
    probe.extend(["--pin-dir".into(), pin_dir.display().to_string()]);
    let probe: Vec<&str> = probe.iter().map(String::as_str).collect();
    let start = Instant::now();
    loop {
        if podman.cmd(30, &probe).status.success() {
            break;
        }
        let state = podman.ok(30, &["inspect", "-f", "{{.State.Status}}", &agent]);
        let logs = podman.cmd(30, &["logs", &agent]);
        assert!(
            state.trim() == "running" && start.elapsed() < Duration::from_secs(30),
            "the rawload container is {} and not ready after {:?}:\n{}{}",
            state.trim(),
            start.elapsed(),
            text(&logs.stdout),
            text(&logs.stderr)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        pin_dir.join("prog_sockops").exists(),
        "the pins are not on the host's bpffs ({}): Bidirectional propagation",
        pin_dir.display()
    );
    let status_args = [
        "exec",
        &agent,
        "/rawload",
        "status",
        "--json",
        "--pin-dir",
        pin_dir.to_str().unwrap(),
    ];
    let before = json(&podman.ok(30, &status_args));
    let programs: Vec<u64> = before["programs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_u64().unwrap())
        .collect();
    assert!(!programs.is_empty(), "{before}");
    assert_eq!(
        before["cgroup"]["path"].as_str(),
        Some(inner_cgroup.to_str().unwrap()),
        "{before}"
    );

    // A pod: its own network namespace (loopback only), in the child cgroup.
    let mut args: Vec<String> = vec![
        "run".into(),
        "-d".into(),
        "--name".into(),
        app.clone(),
        "--cgroup-parent".into(),
        format!("/{name}"),
        "--network".into(),
        "none".into(),
    ];
    args.extend(podman.run_opts.iter().cloned());
    let bytes = PAYLOAD.to_string();
    args.extend(
        [
            "--entrypoint",
            "/rawload",
            &image,
            "peer",
            "serve",
            "--listen",
            "127.0.0.1:7000",
            "--pattern",
            "turns",
            "--bytes",
            &bytes,
            "--conns",
            "1000",
            "--timeout",
            "600",
        ]
        .map(String::from),
    );
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    podman.ok(60, &refs);
    let pid: u32 = podman
        .ok(30, &["inspect", "-f", "{{.State.Pid}}", &app])
        .trim()
        .parse()
        .unwrap();
    let cg_line = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let cg_line = cg_line
        .lines()
        .find(|l| l.starts_with("0::"))
        .unwrap()
        .to_string();
    assert!(
        cg_line.starts_with(&format!("0::/{name}/")),
        "the pod's process {pid} is in {cg_line}, not under /{name}"
    );
    assert_ne!(
        std::fs::read_link(format!("/proc/{pid}/ns/net")).unwrap(),
        std::fs::read_link("/proc/self/ns/net").unwrap(),
        "the pod has a network namespace of its own"
    );
    let lo_before = lo_rx_bytes(pid);
    let out = podman.ok(
        120,
        &[
            "exec",
            &app,
            "/rawload",
            "peer",
            "connect",
            "--to",
            "127.0.0.1:7000",
            "--pattern",
            "turns",
            "--bytes",
            &bytes,
            "--timeout",
            "60",
        ],
    );
    let lo_grew = lo_rx_bytes(pid) - lo_before;
    let report = json(out.lines().last().unwrap());
    assert_eq!(report["bad_bytes"].as_u64(), Some(0), "{report}");
    assert_eq!(report["conns_failed"].as_u64(), Some(0), "{report}");
    assert!(
        report["bytes_received"].as_u64() >= Some(PAYLOAD),
        "{report}"
    );

    let after = json(&podman.ok(30, &status_args));
    let delta =
        |k: &str| after["counters"][k].as_u64().unwrap() - before["counters"][k].as_u64().unwrap();
    assert!(delta("msgs_redirected") > 0, "nothing redirected: {after}");
    assert!(
        delta("bytes_redirected") >= 2 * PAYLOAD,
        "{} bytes redirected of {} moved: {after}",
        delta("bytes_redirected"),
        2 * PAYLOAD
    );
    assert!(
        lo_grew < 1 << 20,
        "the pod's lo carried {lo_grew} bytes of 2 x {PAYLOAD}: the data did not skip TCP"
    );
    eprintln!(
        "{name}: msgs_redirected +{}, bytes_redirected +{}, pod's lo +{lo_grew} bytes",
        delta("msgs_redirected"),
        delta("bytes_redirected")
    );
    let _ = podman.cmd(60, &["rm", "-f", "-t", "5", &app]);

    // SIGTERM, as the kubelet sends it: rawload detaches and exits 0.
    let grace = spec.grace_secs.to_string();
    let stopped = Instant::now();
    podman.ok(spec.grace_secs as u32 + 30, &["stop", "-t", &grace, &agent]);
    let took = stopped.elapsed();
    let code = podman.ok(30, &["inspect", "-f", "{{.State.ExitCode}}", &agent]);
    let logs = podman.cmd(30, &["logs", &agent]);
    let logs = format!("{}{}", text(&logs.stdout), text(&logs.stderr));
    assert_eq!(code.trim(), "0", "exit code after SIGTERM; logs:\n{logs}");
    assert!(
        took < Duration::from_secs(10),
        "stop took {took:?}: SIGKILL after the grace period? logs:\n{logs}"
    );
    assert!(
        !pin_dir.exists(),
        "pins left in {}:\n{logs}",
        pin_dir.display()
    );
    let cgroup_progs = run(
        30,
        "bpftool",
        &["cgroup".into(), "show".into(), cgroup.display().to_string()],
    );
    assert!(
        cgroup_progs.status.success() && !text(&cgroup_progs.stdout).contains("sock_ops"),
        "programs still attached to {}: {}",
        cgroup.display(),
        text(&cgroup_progs.stdout)
    );
    // The programs go once the last reference does (the map's sockets:
    // closed with the pod), within a moment.
    let deadline = Instant::now() + Duration::from_secs(10);
    for id in programs {
        while run(
            10,
            "bpftool",
            &["prog".into(), "show".into(), "id".into(), id.to_string()],
        )
        .status
        .success()
        {
            assert!(
                Instant::now() < deadline,
                "program {id} still loaded after the detach"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    eprintln!("{name}: podman stop detached in {took:?}, exit code 0, no pins, no programs");
    drop(guard);
}
