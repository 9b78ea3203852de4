//! The loader's own races and hygiene around its pin directory (review
//! findings 3, 8, 9 and 10): concurrent attach and detach, an attachment made
//! from another mount namespace, other tools' pins, symlinks, a bpffs mount
//! that a failed attach made, and a SIGTERM during `attach --hold`.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

/// sock_ops program ids `bpftool cgroup show` lists for `cgroup`.
fn cgroup_programs(cgroup: &str) -> Vec<String> {
    bpftool(&["cgroup", "show", cgroup])
        .lines()
        .filter(|l| l.contains("sock_ops"))
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

/// Everything attached to `env` is what its pins name: no attachment nothing
/// can manage, and no pins of a program that is not attached.
fn assert_managed(env: &TestEnv, what: &str) {
    let attached = cgroup_programs(&env.cgroup_arg());
    if env.pin_dir.exists() {
        let status = env.status_json();
        let ids: Vec<String> = status["programs"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["type"].as_str() == Some("sock_ops"))
            .map(|p| p["id"].to_string())
            .collect();
        assert_eq!(
            attached, ids,
            "{what}: the cgroup's programs are not the pinned one"
        );
    } else {
        assert!(
            attached.is_empty(),
            "{what}: {attached:?} attached with no pins"
        );
    }
}

/// Review finding 3: two attach runs, or attach and detach, on one pin
/// directory at once wait for each other; whatever order they end in,
/// every attachment is the one the pins name.
#[test]
fn concurrent_attach_and_detach_never_leak_an_attachment() {
    let env = TestEnv::new("concurrent");
    let (cg, pins) = (env.cgroup_arg(), env.pin_arg());
    let attach = [
        "attach",
        "--cgroup",
        cg.as_str(),
        "--pin-dir",
        pins.as_str(),
    ];
    let detach = ["detach", "--pin-dir", pins.as_str()];
    let spawn = |args: &[&str]| {
        Command::new(RAWLOAD)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    for round in 0..scale(20, 200) {
        let second: &[&str] = if round % 2 == 0 { &attach } else { &detach };
        let mut a = spawn(&attach);
        let mut b = spawn(second);
        assert!(a.wait().unwrap().success(), "round {round}: attach failed");
        assert!(
            b.wait().unwrap().success(),
            "round {round}: {second:?} failed"
        );
        assert_managed(&env, &format!("round {round}"));
        ok(env.detach());
        assert!(
            cgroup_programs(&cg).is_empty(),
            "round {round}: detach left a program"
        );
    }
}

/// Review finding 8: an attachment made through another mount namespace's
/// path to the same cgroup is recognised by the cgroup's id, not taken for
/// leftovers and attached again.
#[test]
fn an_attachment_seen_from_another_mount_namespace_is_not_attached_twice() {
    let env = TestEnv::new("mntns-twice");
    let view = std::env::temp_dir().join(format!("rawload-view2-{}", std::process::id()));
    std::fs::create_dir_all(&view).unwrap();
    let view_arg = view.display().to_string();
    let script = format!(
        "mount --bind '{}' '{view_arg}' && exec '{RAWLOAD}' attach --cgroup '{view_arg}' --pin-dir '{}'",
        env.cgroup_arg(),
        env.pin_arg()
    );
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .output()
        .unwrap();
    let _ = std::fs::remove_dir(&view);
    ok(out);
    let before = cgroup_programs(&env.cgroup_arg());
    let again = ok(env.attach_default());
    assert!(again.contains("already attached"), "{again}");
    assert_eq!(
        cgroup_programs(&env.cgroup_arg()),
        before,
        "a second program appeared"
    );
    ok(env.detach());
}

/// Review finding 9: a directory with another tool's pins and no rawload
/// record is left alone by attach and detach, and a symlinked pin
/// directory is refused.
#[test]
fn other_tools_pins_and_symlinks_are_left_alone() {
    let env = TestEnv::new("foreign");
    std::fs::create_dir_all(&env.pin_dir).unwrap();
    let keep = env.pin_dir.join("map_keep");
    bpftool(&[
        "map",
        "create",
        &keep.display().to_string(),
        "type",
        "array",
        "key",
        "4",
        "value",
        "4",
        "entries",
        "1",
        "name",
        "keep",
    ]);
    let (cg, pins) = (env.cgroup_arg(), env.pin_arg());
    for what in ["attach", "detach"] {
        let out = rawload(&[what, "--cgroup", &cg, "--pin-dir", &pins]);
        assert!(
            !out.status.success(),
            "{what} used a directory of foreign pins"
        );
        assert!(
            stderr(&out).contains("no rawload attach record"),
            "{what}: {}",
            stderr(&out)
        );
        assert!(keep.exists(), "{what} deleted another tool's pin");
    }
    std::fs::remove_file(&keep).unwrap();
    std::fs::remove_dir(&env.pin_dir).unwrap();

    let target = format!("{}-target", env.pin_arg());
    std::fs::create_dir(&target).unwrap();
    std::os::unix::fs::symlink(&target, &env.pin_dir).unwrap();
    let out = env.attach_default();
    let refused = stderr(&out);
    std::fs::remove_file(&env.pin_dir).unwrap();
    std::fs::remove_dir(&target).unwrap();
    assert!(
        !out.status.success() && refused.contains("symlink"),
        "{refused}"
    );
    assert!(cgroup_programs(&env.cgroup_arg()).is_empty());
}

/// The bpffs mount a failed attach made is undone: in a mount namespace of
/// its own without /sys/fs/bpf mounted, an attach whose program the
/// verifier rejects leaves /sys/fs/bpf unmounted again.
#[test]
fn a_failed_attach_unmounts_the_bpffs_it_mounted() {
    let env = TestEnv::new("mount-undo");
    let reject = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/verifier_reject.o"
    );
    let script = format!(
        "umount /sys/fs/bpf 2>/dev/null; '{RAWLOAD}' attach --object '{reject}' --cgroup '{}' --pin-dir /sys/fs/bpf/rawload-undo; stat -f -c %T /sys/fs/bpf",
        env.cgroup_arg()
    );
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .output()
        .unwrap();
    let fs_type = stdout(&out);
    assert!(stderr(&out).contains("verifier"), "{}", stderr(&out));
    assert_ne!(
        fs_type.trim(),
        "bpf_fs",
        "the failed attach left bpffs mounted"
    );
}

/// Review finding 10: a SIGTERM that lands while `attach --hold` is still
/// attaching is taken by the hold (which detaches), never by the default
/// action (which would leave an attachment with no holder).
#[test]
fn sigterm_during_attach_hold_detaches() {
    let env = TestEnv::new("hold-term");
    for delay_ms in [0, 2, 5, 10, 20, 40] {
        let child = Command::new(RAWLOAD)
            .args([
                "attach",
                "--hold",
                "--cgroup",
                &env.cgroup_arg(),
                "--pin-dir",
                &env.pin_arg(),
            ])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            !Path::new(&env.pin_dir).exists() && cgroup_programs(&env.cgroup_arg()).is_empty(),
            "SIGTERM after {delay_ms} ms left an attachment (exit {}): {}",
            out.status,
            stdout(&out)
        );
    }
}
