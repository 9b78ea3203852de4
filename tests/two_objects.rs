//! The seeds' two objects, unchanged (issue 11, item 5): `rawload attach
//! --object seed_sockops.o --object seed_redir.o` does what the seeds'
//! four bpftool commands do. On the real kernel, in the test's own cgroup,
//! over loopback: the bypass (`lo` stays flat), integrity (digests match),
//! plain TCP beside it, a clean detach; and every refusal (maps declared
//! differently, two programs of one type, a second object the verifier
//! rejects) leaves nothing behind.
//!
//! The seeds' keys have no network namespace in them; the test's processes
//! all run in the host's, so the objects attach without --single-netns
//! (`rawload attach` says their keys do not include it).

mod common;

use common::*;

const MIB: u64 = 1 << 20;

fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// `attach --object A --object B ...` into `env`.
fn attach_objects(env: &TestEnv, objects: &[&str]) -> std::process::Output {
    let paths: Vec<String> = objects.iter().map(|o| fixture(o)).collect();
    let args: Vec<&str> = paths
        .iter()
        .flat_map(|p| ["--object", p.as_str()])
        .collect();
    env.attach(&args)
}

/// The error line of a refused attach, after checking that it is one line.
fn refused(out: &std::process::Output) -> String {
    assert!(!out.status.success(), "attach succeeded: {}", stdout(out));
    let err = stderr(out);
    assert!(
        err.starts_with("rawload: error: ") && !err.contains("panicked"),
        "{err}"
    );
    err
}

/// The programs and maps that exist before a test.
struct Before {
    programs: Vec<u32>,
    maps: Vec<u32>,
}

fn before() -> Before {
    Before {
        programs: bpftool_prog_ids(),
        maps: bpftool_map_ids(),
    }
}

/// Nothing of an attach is left: no pins, nothing on the cgroup, no new
/// program or map in the kernel.
fn assert_nothing_left(env: &TestEnv, before: &Before) {
    assert!(!env.pin_dir.exists(), "pins left in {}", env.pin_arg());
    assert!(
        bpftool(&["cgroup", "show", &env.cgroup_arg()])
            .trim()
            .is_empty(),
        "bpftool still shows a program on the cgroup"
    );
    wait_for_programs(&before.programs);
    wait_for_maps(&before.maps);
}

/// One transfer over 127.0.0.1 (the only family the seeds redirect).
fn loopback_transfer(env: &TestEnv, what: &str) -> Transfer {
    let t = transfer(&env.cgroup, "127.0.0.1:0", "127.0.0.1", 16 * MIB, &[]);
    assert_intact(&t);
    let (c2s, s2c) = t.digests();
    eprintln!(
        "{what}: payload {} B both ways, lo grew {} B ({:.4}x payload), digests c->s {c2s} s->c {s2c}",
        t.payload,
        t.lo_delta,
        t.lo_delta as f64 / t.payload as f64
    );
    t
}

/// What the attached pair looks like from the pins and from bpftool: the
/// two programs, one from each object, and the one map they share.
fn assert_pair_attached(env: &TestEnv, attached: &str) {
    for name in ["bpf_sockops_v4", "bpf_tcpip_bypass", "; 1 map;"] {
        assert!(attached.contains(name), "{attached}");
    }
    let status = env.status_json();
    assert_eq!(status["attached"], true, "{status:#}");
    let maps = status["maps"].as_array().expect("maps in status");
    assert_eq!(maps.len(), 1, "one shared map: {status:#}");
    assert_eq!(maps[0]["name"], "sock_ops_map");
    let map_id = maps[0]["id"].as_u64().unwrap();
    for p in status["programs"].as_array().expect("programs") {
        assert_eq!(p["map_ids"][0].as_u64(), Some(map_id), "{p}");
    }
    let pins = std::fs::read_dir(&env.pin_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect::<std::collections::BTreeSet<_>>();
    let expected = ["map_sock_ops_map", "prog_sk_msg", "prog_sockops", "state"];
    assert_eq!(pins, expected.map(String::from).into(), "pins");
    let cgroup_show = bpftool(&["cgroup", "show", &env.cgroup_arg()]);
    assert!(cgroup_show.contains("bpf_sockops_v4"), "{cgroup_show}");
}

/// Plain TCP, then the seeds' pair attached (lo flat, same bytes), then
/// detached (nothing left, TCP again).
#[test]
fn the_seeds_two_objects_redirect_and_detach_clean() {
    let env = TestEnv::new("seeds");
    let before = before();
    let tcp = loopback_transfer(&env, "seeds: plain TCP");
    assert!(tcp.lo_delta >= 2 * tcp.payload, "TCP crosses lo");

    let attached = ok(attach_objects(&env, &["seed_sockops.o", "seed_redir.o"]));
    assert_pair_attached(&env, &attached);
    let redirected = loopback_transfer(&env, "seeds: attached");
    assert_bypassed(&redirected);
    assert_eq!(
        redirected.digests(),
        tcp.digests(),
        "the same bytes as over TCP"
    );

    let out = ok(env.detach());
    assert!(out.contains("sk_msg detached from the socket map"), "{out}");
    assert_nothing_left(&env, &before);
    let after = loopback_transfer(&env, "seeds: detached");
    assert!(
        after.lo_delta >= 2 * after.payload,
        "TCP again after detach"
    );
}

/// The sk_msg object with its map in BTF `.maps`, the sock_ops one with
/// the legacy `maps` section: one map, redirected.
#[test]
fn a_legacy_and_a_btf_object_share_their_map_and_redirect() {
    let env = TestEnv::new("mixed");
    let before = before();
    let attached = ok(attach_objects(
        &env,
        &["seed_sockops.o", "seed_redir_btf.o"],
    ));
    assert_pair_attached(&env, &attached);
    let t = loopback_transfer(&env, "mixed: attached");
    assert_bypassed(&t);
    ok(env.detach());
    assert_nothing_left(&env, &before);
}

/// Refusals before the kernel is asked for anything: a map declared
/// differently, two sock_ops programs, no sk_msg program at all.
#[test]
fn objects_that_disagree_are_refused_before_anything_is_created() {
    let env = TestEnv::new("disagree");
    let before = before();
    let cases: [(&[&str], &str); 3] = [
        (
            &["seed_sockops.o", "seed_redir_small.o"],
            "map 'sock_ops_map' is declared in seed_sockops.o with max_entries 65535 and in seed_redir_small.o with max_entries 1024",
        ),
        (
            &["seed_sockops.o", "seed_legacy.o"],
            "seed_sockops.o and seed_legacy.o both have a sock_ops program",
        ),
        (
            &["seed_sockops.o", "other_sockops.o"],
            "seed_sockops.o and other_sockops.o both have a sock_ops program",
        ),
    ];
    for (objects, needle) in cases {
        let err = refused(&attach_objects(&env, objects));
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(needle), "{objects:?}: {err}");
        assert_nothing_left(&env, &before);
    }
    let err = refused(&attach_objects(&env, &["seed_sockops.o"]));
    assert!(err.contains("the object has no sk_msg program"), "{err}");
    assert_nothing_left(&env, &before);
}

/// The second object's program is refused by the verifier after the shared
/// map exists and the first object's program is loaded: both are undone,
/// and the good pair attaches afterwards.
#[test]
fn a_second_object_the_verifier_rejects_leaves_nothing_behind() {
    let env = TestEnv::new("reject2");
    let before = before();
    let err = refused(&attach_objects(
        &env,
        &["seed_sockops.o", "seed_redir_reject.o"],
    ));
    assert!(
        err.contains("verifier rejected sk_msg program 'bpf_tcpip_bypass'"),
        "{err}"
    );
    assert!(err.contains("invalid access to packet"), "{err}");
    assert_nothing_left(&env, &before);
    ok(attach_objects(&env, &["seed_sockops.o", "seed_redir.o"]));
    ok(env.detach());
    assert_nothing_left(&env, &before);
}
