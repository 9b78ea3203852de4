//! `rawload attach` end to end on the real kernel: the bypass (loopback
//! counters stay flat), integrity (digests match), counters, Debian's bpftool
//! agreeing with `rawload status`, and a clean detach.

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

const MIB: u64 = 1 << 20;

fn ids(status: &Value, key: &str) -> Vec<u64> {
    status[key]
        .as_array()
        .unwrap_or_else(|| panic!("no {key} list in status: {status:#}"))
        .iter()
        .map(|p| p["id"].as_u64().unwrap_or_else(|| panic!("an id: {p}")))
        .collect()
}

/// Attach, move 64 MiB each way, check bypass + integrity + counters +
/// bpftool, detach, move it again and check it crossed loopback.
fn bypass_and_back(name: &str, listen: &str, connect: &str) {
    let env = TestEnv::new(name);
    let before = bpftool_prog_ids();
    ok(env.attach(&[]));

    let status = env.status_json();
    assert_eq!(status["attached"], true, "{status:#}");
    let prog_ids = ids(&status, "programs");
    assert_eq!(prog_ids.len(), expected_programs());
    bpftool_sees(&env, &prog_ids, &ids(&status, "maps"));
    redirected_intact(&env, name, listen, connect);

    let out = ok(env.detach());
    assert!(out.contains("detached"), "{out}");
    assert!(!env.pin_dir.exists(), "the pin directory must be gone");
    assert!(
        bpftool(&["cgroup", "show", &env.cgroup_arg()])
            .trim()
            .is_empty(),
        "bpftool still shows a program on the cgroup"
    );
    wait_for_programs(&before);

    crosses_loopback_intact(&env, name, listen, connect);
}

/// Debian's bpftool sees the same programs, maps and cgroup attachment.
fn bpftool_sees(env: &TestEnv, prog_ids: &[u64], map_ids: &[u64]) {
    let listed = bpftool_prog_ids();
    for id in prog_ids {
        assert!(
            listed.contains(&(*id as u32)),
            "bpftool prog show lacks {id}"
        );
    }
    let cgroup_show = bpftool(&["cgroup", "show", &env.cgroup_arg()]);
    let sock_ops_id = prog_ids[0].to_string();
    assert!(
        cgroup_show
            .lines()
            .any(|l| l.split_whitespace().next() == Some(&sock_ops_id)
                && l.contains("sock_ops")
                && l.contains("multi")),
        "bpftool cgroup show:\n{cgroup_show}"
    );
    let map_show = bpftool(&["map", "show"]);
    for id in map_ids {
        assert!(
            map_show.lines().any(|l| l.starts_with(&format!("{id}: "))),
            "bpftool map show lacks {id}"
        );
    }
}

/// 64 MiB each way, redirected (loopback flat) and intact, every byte counted.
fn redirected_intact(env: &TestEnv, name: &str, listen: &str, connect: &str) {
    let redirected_before = env.counter("bytes_redirected");
    let t = transfer(&env.cgroup, listen, connect, 64 * MIB, &[]);
    assert_intact(&t);
    let redirected = env.counter("bytes_redirected") - redirected_before;
    let (c2s, s2c) = t.digests();
    eprintln!(
        "{name}: attached: payload {} B both ways, lo grew {} B ({:.4}% of payload), bytes_redirected +{}, digests c->s {c2s} s->c {s2c}",
        t.payload,
        t.lo_delta,
        100.0 * t.lo_delta as f64 / t.payload as f64,
        redirected
    );
    assert_bypassed(&t);
    assert_eq!(
        redirected, t.payload,
        "bytes_redirected must move by exactly the bytes sent"
    );
    assert_eq!(env.counter("msgs_missed"), 0);
    assert!(env.counter("sockets_inserted") >= 2);
}

/// 64 MiB each way after detach: intact, and every byte crossed loopback.
fn crosses_loopback_intact(env: &TestEnv, name: &str, listen: &str, connect: &str) {
    let t = transfer(&env.cgroup, listen, connect, 64 * MIB, &[]);
    assert_intact(&t);
    eprintln!(
        "{name}: detached: payload {} B both ways, lo grew {} B ({:.2}x payload)",
        t.payload,
        t.lo_delta,
        t.lo_delta as f64 / t.payload as f64
    );
    assert!(
        t.lo_delta >= 2 * t.payload,
        "after detach every byte must cross loopback (counted on RX and TX): grew {} B for {} B",
        t.lo_delta,
        t.payload
    );
}

#[test]
fn ipv4_loopback_is_redirected_and_detach_restores_tcp() {
    bypass_and_back("v4", "127.0.0.1:0", "127.0.0.1");
}

#[test]
fn ipv6_loopback_is_redirected_and_detach_restores_tcp() {
    bypass_and_back("v6", "[::1]:0", "::1");
}

/// A server on `::` gets 127.0.0.1 clients as AF_INET6 sockets holding
/// v4-mapped addresses; both ends must still find each other.
#[test]
fn dual_stack_listener_with_ipv4_client_is_redirected() {
    bypass_and_back("dual", "[::]:0", "127.0.0.1");
}

#[test]
fn attach_twice_and_detach_twice_leave_nothing_behind() {
    let env = TestEnv::new("twice");
    let before = bpftool_prog_ids();
    ok(env.attach(&[]));
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&env.pin_dir).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o700, "the pin directory must be private");
    let again = ok(env.attach(&[]));
    assert!(again.contains("already attached"), "{again}");

    let status = env.status_json();
    let on_cgroup: Vec<u64> = status["cgroup"]["sock_ops_programs"]
        .as_array()
        .unwrap_or_else(|| panic!("no cgroup.sock_ops_programs in status: {status:#}"))
        .iter()
        .filter_map(|p| p["id"].as_u64())
        .collect();
    assert_eq!(
        on_cgroup.len(),
        1,
        "a second attach must not stack programs: {on_cgroup:?}"
    );

    // `status` doubles as a health check: 0 attached, 3 not attached.
    let pin = env.pin_arg();
    assert_eq!(
        rawload(&["status", "--pin-dir", &pin]).status.code(),
        Some(0)
    );
    ok(env.detach());
    let second = ok(env.detach());
    assert!(second.contains("not attached"), "{second}");
    let text = rawload(&["status", "--pin-dir", &pin]);
    assert_eq!(text.status.code(), Some(3), "status when detached");
    assert!(stdout(&text).contains("attached"), "{}", stdout(&text));
    let out = rawload(&["status", "--json", "--pin-dir", &pin]);
    assert_eq!(out.status.code(), Some(3), "status --json when detached");
    let detached = json(&stdout(&out), "status --json");
    assert_eq!(detached["attached"], false, "{detached:#}");
    wait_for_programs(&before);
    assert!(!env.pin_dir.exists());
}

/// A container attaches through its own view of the cgroup (the DaemonSet
/// mounts the host's cgroup2 at /host/cgroup). On the host that path means
/// nothing, yet `status` and `detach` must still find the cgroup, by id, and
/// a `--cgroup` naming another cgroup must be refused.
#[test]
fn attachment_made_from_another_mount_namespace_is_found_by_cgroup_id() {
    /// The container's mount point, an empty directory on the host.
    struct View(std::path::PathBuf);
    impl Drop for View {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir(&self.0);
        }
    }
    let env = TestEnv::new("mntns");
    let other_name = format!("rawload-test-mntns-other-{}", std::process::id());
    let other = rawload::scratch::PrivateCgroup::create(&other_name).unwrap();
    let view = View(std::env::temp_dir().join(format!("rawload-view-{}", std::process::id())));
    std::fs::create_dir_all(&view.0).unwrap();
    let view_arg = view.0.display().to_string();
    let before = bpftool_prog_ids();
    let attach_in_container = || {
        let script = format!(
            "mount --bind '{}' '{}' && exec '{RAWLOAD}' attach --cgroup '{}' --pin-dir '{}'",
            env.cgroup_arg(),
            view_arg,
            view_arg,
            env.pin_arg()
        );
        let out = std::process::Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c", &script])
            .output()
            .expect("running unshare");
        ok(out);
    };
    let sock_ops_on_cgroup = || bpftool(&["cgroup", "show", &env.cgroup_arg()]);

    attach_in_container();
    assert!(sock_ops_on_cgroup().contains("sock_ops"));
    let status = env.status_json();
    assert_eq!(status["attached"], true, "{status:#}");
    assert_eq!(
        status["cgroup"]["path"].as_str(),
        Some(env.cgroup_arg().as_str()),
        "status names the cgroup by its path here: {status:#}"
    );
    let wrong = rawload(&[
        "detach",
        "--pin-dir",
        &env.pin_arg(),
        "--cgroup",
        &other.path().display().to_string(),
    ]);
    assert!(
        !wrong.status.success(),
        "detach from another cgroup must be refused"
    );
    assert!(stderr(&wrong).contains("cgroup id"), "{}", stderr(&wrong));
    assert!(
        sock_ops_on_cgroup().contains("sock_ops"),
        "the refusal must leave it attached"
    );
    let out = ok(rawload(&[
        "detach",
        "--pin-dir",
        &env.pin_arg(),
        "--cgroup",
        &env.cgroup_arg(),
    ]));
    assert!(
        out.contains(&format!("sock_ops detached from {}", env.cgroup_arg())),
        "{out}"
    );
    assert!(sock_ops_on_cgroup().trim().is_empty(), "still attached");

    attach_in_container();
    let out = ok(env.detach());
    assert!(
        out.contains(&format!("sock_ops detached from {}", env.cgroup_arg())),
        "{out}"
    );
    assert!(sock_ops_on_cgroup().trim().is_empty(), "still attached");
    assert!(!env.pin_dir.exists());
    wait_for_programs(&before);
}

#[test]
fn failed_attach_is_undone_and_a_later_attach_works() {
    let env = TestEnv::new("failed");
    let before = bpftool_prog_ids();
    let bad = env.attach(&[
        "--object",
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/verifier_reject.o"
        ),
    ]);
    assert!(!bad.status.success());
    let err = stderr(&bad);
    let first = err.lines().next().unwrap_or_default();
    assert!(
        first.starts_with("rawload: error: ")
            && first.contains("verifier rejected sock_ops program 'bad_sockops'"),
        "{err}"
    );
    assert!(
        err.contains("map_value_or_null"),
        "the verifier log must be shown:\n{err}"
    );
    assert!(!env.pin_dir.exists(), "a failed attach must not leave pins");
    assert!(
        bpftool(&["cgroup", "show", &env.cgroup_arg()])
            .trim()
            .is_empty()
    );
    wait_for_programs(&before);

    ok(env.attach(&[]));
    let t = transfer(&env.cgroup, "127.0.0.1:0", "127.0.0.1", 4 * MIB, &[]);
    assert_intact(&t);
    assert!(t.lo_delta * 100 < t.payload);
    ok(env.detach());
    wait_for_programs(&before);
}

/// An object written like the 2020 seeds (legacy `maps` section, 24-byte
/// key, IPv4 only, 4-byte SOCKHASH value) loads with --object and redirects.
#[test]
fn seed_style_legacy_object_attaches_and_redirects() {
    let env = TestEnv::new("legacy");
    let before = bpftool_prog_ids();
    let out = ok(env.attach(&[
        "--object",
        concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/seed_legacy.o"),
    ]));
    assert!(out.contains("bpf_sockops_v4"), "{out}");
    let status = env.status_json();
    assert_eq!(status["attached"], true, "{status:#}");
    // The object has no backpressure bound: status says nothing about one,
    // rather than "no backpressure ... (--stream-bytes 0)".
    assert!(status["stream_bytes"].is_null(), "{status:#}");
    let text = stdout(&rawload(&["status", "--pin-dir", &env.pin_arg()]));
    assert!(!text.contains("backpressure"), "{text}");

    let t = transfer(&env.cgroup, "127.0.0.1:0", "127.0.0.1", 16 * MIB, &[]);
    assert_intact(&t);
    eprintln!(
        "legacy object: payload {} B, lo grew {} B",
        t.payload, t.lo_delta
    );
    assert!(t.lo_delta * 100 < t.payload, "lo grew {} B", t.lo_delta);
    ok(env.detach());
    wait_for_programs(&before);
}

/// `attach --debug` loads the object that prints trace lines, and
/// `rawload trace` streams them from tracefs.
#[test]
fn debug_object_trace_lines_are_streamed() {
    let env = TestEnv::new("trace");
    ok(env.attach(&["--debug"]));
    let tracer = std::process::Command::new(RAWLOAD)
        .args(["trace", "--lines", "3", "--timeout", "20"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("starting rawload trace");
    std::thread::sleep(Duration::from_millis(300));
    let t = transfer(&env.cgroup, "127.0.0.1:0", "127.0.0.1", MIB, &[]);
    assert_intact(&t);
    let out = tracer.wait_with_output().expect("rawload trace");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(lines.iter().all(|l| l.contains("rawload: ")), "{text}");
    assert!(
        text.contains("rawload: insert") || text.contains("rawload: redirect"),
        "{text}"
    );
    ok(env.detach());
}

/// `--ports`: only connections with an allowed port are redirected; the
/// others stay on TCP and are counted as skipped.
#[test]
fn port_policy_limits_redirection() {
    let env = TestEnv::new("ports");
    let free_port = || {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let (allowed, other) = (free_port(), free_port());
    ok(env.attach(&["--ports", &allowed.to_string()]));

    let t = transfer(
        &env.cgroup,
        &format!("127.0.0.1:{allowed}"),
        "127.0.0.1",
        8 * MIB,
        &[],
    );
    assert_intact(&t);
    assert!(
        t.lo_delta * 100 < t.payload,
        "allowed port: lo grew {} B",
        t.lo_delta
    );

    let skipped = env.counter("skipped_port");
    let t = transfer(
        &env.cgroup,
        &format!("127.0.0.1:{other}"),
        "127.0.0.1",
        8 * MIB,
        &[],
    );
    assert_intact(&t);
    assert!(
        t.lo_delta >= 2 * t.payload,
        "other port: lo grew {} B",
        t.lo_delta
    );
    assert_eq!(
        env.counter("skipped_port") - skipped,
        2,
        "both sockets skipped"
    );
    ok(env.detach());
}

/// An object using .data, .bss, .rodata and .rodata.str1.1: each becomes an
/// array map the programs address directly, and their values are readable
/// through the pins afterwards.
#[test]
fn global_data_object_attaches_and_counts() {
    use rawload_loader::maps::Map;
    let env = TestEnv::new("globals");
    ok(env.attach(&[
        "--object",
        concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/globals.o"),
    ]));
    let t = transfer(&env.cgroup, "127.0.0.1:0", "127.0.0.1", 4 * MIB, &[]);
    assert_intact(&t);
    assert!(t.lo_delta * 100 < t.payload, "lo grew {} B", t.lo_delta);

    let read_u64 = |pin: &str| -> u64 {
        let path = std::ffi::CString::new(env.pin_dir.join(pin).display().to_string()).unwrap();
        let map = Map::from_fd(rawload_loader::sys::obj_get(&path).unwrap()).unwrap();
        let value = map.lookup(&0u32.to_ne_bytes()).unwrap().unwrap();
        u64::from_ne_bytes(value[..8].try_into().unwrap())
    };
    assert_eq!(read_u64("map_bss"), 2, "both sockets counted in .bss");
    let redirected = read_u64("map_data");
    assert!(
        redirected > 7,
        ".data started at 7 and counts redirects: {redirected}"
    );
    ok(env.detach());
}

/// `attach --explain` narrates every step and every bpf() command with its
/// answer, in order: maps before programs, sk_msg before sock_ops.
#[test]
fn attach_explain_narrates_each_step_and_syscall() {
    let env = TestEnv::new("explain");
    let out = format!("\n{}", ok(env.attach(&["--explain"])));
    let pos = |needle: &str| {
        out.find(needle)
            .unwrap_or_else(|| panic!("{needle:?} missing from:\n{out}"))
    };
    let steps: Vec<usize> = [
        "1", "2", "3", "4", "5", "6", "7", "8a", "8b", "9a", "10", "11",
    ]
    .iter()
    .map(|n| pos(&format!("\n{n}. ")))
    .collect::<Vec<_>>();
    assert!(
        steps.windows(2).all(|w| w[0] < w[1]),
        "steps out of order:\n{out}"
    );
    assert!(
        pos("bpf(BPF_MAP_CREATE, {map_type=18 (sockhash), key_size=48, value_size=8")
            < pos("prog_name=\"rawload_sockops\"")
    );
    assert!(
        pos("attach_type=7, attach_flags=0x0}) = 0") < pos("attach_type=3, attach_flags=0x2}) = 0")
    );
    assert!(out.contains("ld_imm64 rawload_socks -> src_reg 1"), "{out}");
    assert!(out.contains("bpf(BPF_MAP_FREEZE"), "{out}");
    assert!(
        out.contains(&format!("    pin {}/prog_sockops", env.pin_dir.display())),
        "{out}"
    );
    ok(env.detach());
}

/// The pass-through sk_skb verdict goes on the map exactly where `doctor`
/// finds the FIONREAD regression, and the default bound is 1 MiB on every
/// kernel. The probes answer from inside a cgroup rawload already redirects
/// too (their sockets carry rawload's probe mark): review finding 10.
#[test]
fn sk_skb_verdict_follows_the_fionread_probe_even_inside_an_attachment() {
    let env = TestEnv::new("fionread-probe");
    let probe = doctor_line(&stdout(&rawload(&["doctor"])), "fionread");
    let out = ok(env.attach_default());
    let regression = probe.contains("ignores TCP bytes");
    assert_eq!(
        out.contains("a pass-through sk_skb verdict"),
        regression,
        "doctor: {probe}\nattach: {out}"
    );
    let status = env.status_json();
    let names: Vec<&str> = status["programs"]
        .as_array()
        .unwrap_or_else(|| panic!("no programs in status: {status:#}"))
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert_eq!(names.contains(&"rawload_sk_skb"), regression, "{names:?}");
    assert_eq!(status["stream_bytes"].as_u64(), Some(1 << 20), "{status:#}");

    let script = format!(
        "echo $$ > '{}/cgroup.procs' && exec '{RAWLOAD}' doctor",
        env.cgroup_arg()
    );
    let inside = std::process::Command::new("sh")
        .args(["-c", &script])
        .output()
        .unwrap();
    let inside = stdout(&inside);
    assert_eq!(
        doctor_line(&inside, "fionread"),
        probe,
        "the probe changed its answer under rawload"
    );
    let unread = doctor_line(&inside, "unread count");
    assert!(!unread.contains("not probed"), "{unread}");
    ok(env.detach());
}
