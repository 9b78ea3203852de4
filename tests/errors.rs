//! Bad input and missing privilege: each gives exactly one clear line on
//! stderr, a non-zero exit code, and changes nothing on the system.

mod common;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;

/// Asserts a failure with a single `rawload: error:` line naming `needle`.
fn assert_one_line_error(out: &Output, needle: &str) {
    assert!(
        !out.status.success(),
        "expected failure, got success: {}",
        stdout(out)
    );
    assert_eq!(out.status.code(), Some(1), "exit code");
    let err = stderr(out);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "expected one line on stderr, got:\n{err}");
    assert!(lines[0].starts_with("rawload: error: "), "{err}");
    assert!(lines[0].contains(needle), "expected {needle:?} in: {err}");
    assert!(!err.contains("panicked"), "{err}");
}

/// The test cgroup has no program attached and no pins exist.
fn assert_untouched(env: &TestEnv) {
    assert!(
        bpftool(&["cgroup", "show", &env.cgroup_arg()])
            .trim()
            .is_empty()
    );
    assert!(
        !env.pin_dir.exists(),
        "{} must not exist",
        env.pin_dir.display()
    );
}

/// A cgroup v1 hierarchy: an existing one on hybrid hosts, else a named
/// hierarchy this test mounts (and unmounts) itself.
struct V1Hierarchy {
    path: PathBuf,
    mounted: bool,
}

impl V1Hierarchy {
    fn find_or_mount() -> V1Hierarchy {
        let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
        if let Some(p) = mounts.lines().find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.get(2) == Some(&"cgroup")).then(|| PathBuf::from(f[1]))
        }) {
            return V1Hierarchy {
                path: p,
                mounted: false,
            };
        }
        let path = std::env::temp_dir().join(format!("rawload-test-v1-{}", std::process::id()));
        std::fs::create_dir_all(&path).unwrap();
        nix::mount::mount(
            Some("cgroup"),
            &path,
            Some("cgroup"),
            nix::mount::MsFlags::empty(),
            Some("none,name=rawloadtest"),
        )
        .expect("mounting a named cgroup v1 hierarchy");
        V1Hierarchy {
            path,
            mounted: true,
        }
    }
}

impl Drop for V1Hierarchy {
    fn drop(&mut self) {
        if self.mounted {
            let _ = nix::mount::umount(&self.path);
            let _ = std::fs::remove_dir(&self.path);
        }
    }
}

#[test]
fn bad_cgroup_paths_are_refused() {
    let env = TestEnv::new("badcg");
    let pin = env.pin_arg();
    let attach = |cgroup: &str| rawload(&["attach", "--cgroup", cgroup, "--pin-dir", &pin]);

    let v1 = V1Hierarchy::find_or_mount();
    assert_one_line_error(&attach(&v1.path.display().to_string()), "cgroup v1");
    assert_one_line_error(&attach("/tmp"), "is not a cgroup directory");
    assert_one_line_error(&attach("/nonexistent/cgroup"), "does not exist");
    let file = env.cgroup.join("cgroup.procs");
    assert_one_line_error(
        &attach(&file.display().to_string()),
        "not a cgroup directory",
    );
    assert_untouched(&env);
}

#[test]
fn pin_dir_must_be_on_bpffs_and_ours() {
    let env = TestEnv::new("badpin");
    let cg = env.cgroup_arg();
    let out = rawload(&[
        "attach",
        "--cgroup",
        &cg,
        "--pin-dir",
        "/tmp/rawload-not-bpffs",
    ]);
    assert_one_line_error(&out, "not on a bpf filesystem");
    assert!(!Path::new("/tmp/rawload-not-bpffs").exists());

    // A pin directory belonging to another user is refused.
    std::fs::create_dir(&env.pin_dir).unwrap();
    nix::unistd::chown(&env.pin_dir, Some(nix::unistd::Uid::from_raw(65534)), None).unwrap();
    let out = env.attach(&[]);
    assert_one_line_error(&out, "belongs to uid 65534");
    assert!(bpftool(&["cgroup", "show", &cg]).trim().is_empty());
    std::fs::remove_dir(&env.pin_dir).unwrap();
    assert_untouched(&env);
}

#[test]
fn malformed_and_missing_objects_are_refused() {
    let env = TestEnv::new("badobj");
    let garbage = std::env::temp_dir().join(format!("rawload-garbage-{}.o", std::process::id()));
    std::fs::write(&garbage, b"\x7fELF but not really an object").unwrap();
    let out = env.attach(&["--object", &garbage.display().to_string()]);
    std::fs::remove_file(&garbage).unwrap();
    assert_one_line_error(&out, "not a readable ELF object");

    let out = env.attach(&["--object", "/nonexistent.o"]);
    assert_one_line_error(&out, "reading object /nonexistent.o");

    // A valid ELF that is not eBPF: this very test binary.
    let exe = std::env::current_exe().unwrap();
    let out = env.attach(&["--object", &exe.display().to_string()]);
    assert_one_line_error(&out, "not BPF");
    assert_untouched(&env);
}

#[test]
fn unprivileged_users_are_told_to_use_sudo() {
    let env = TestEnv::new("nonroot");
    for args in [
        vec![
            "attach",
            "--cgroup",
            &env.cgroup_arg(),
            "--pin-dir",
            &env.pin_arg(),
        ],
        vec!["detach", "--pin-dir", &env.pin_arg()],
        vec!["status", "--pin-dir", &env.pin_arg()],
    ] {
        let out = Command::new(RAWLOAD)
            .args(&args)
            .uid(65534)
            .gid(65534)
            .output()
            .expect("running rawload as nobody");
        assert_one_line_error(&out, "needs root");
    }
    assert_untouched(&env);
}

/// No bpffs at /sys/fs/bpf and no right to mount one: in a private mount
/// namespace without bpffs, with CAP_SYS_ADMIN dropped (CAP_BPF and
/// CAP_NET_ADMIN kept, so loading itself would be allowed).
#[test]
fn missing_bpffs_that_cannot_be_mounted_is_reported() {
    let env = TestEnv::new("nobpffs");
    let script = format!(
        "umount /sys/fs/bpf 2>/dev/null; exec setpriv --bounding-set -sys_admin --inh-caps=-sys_admin -- {RAWLOAD} attach --cgroup {} --pin-dir {}",
        env.cgroup_arg(),
        env.pin_arg()
    );
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .output()
        .expect("unshare (util-linux)");
    assert_one_line_error(
        &out,
        "bpffs is not mounted at /sys/fs/bpf and mounting it failed",
    );
    assert_untouched(&env);
}

/// Root without CAP_BPF and CAP_SYS_ADMIN (dropped from the bounding set)
/// is refused up front, as an unprivileged user is.
#[test]
fn root_without_cap_bpf_is_refused() {
    let env = TestEnv::new("nocapbpf");
    let out = Command::new("setpriv")
        .args([
            "--bounding-set",
            "-bpf,-sys_admin",
            "--inh-caps",
            "-bpf,-sys_admin",
            "--",
            RAWLOAD,
            "attach",
        ])
        .args(["--cgroup", &env.cgroup_arg(), "--pin-dir", &env.pin_arg()])
        .output()
        .expect("setpriv (util-linux)");
    assert_one_line_error(
        &out,
        "needs root (CAP_BPF and CAP_NET_ADMIN, or CAP_SYS_ADMIN)",
    );
    assert_untouched(&env);
}
