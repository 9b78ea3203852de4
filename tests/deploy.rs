//! The deployment files in deploy/: the systemd unit, the Kubernetes
//! DaemonSet and the Dockerfile of its image. No root and no kernel needed.
//!
//! - The unit goes through `systemd-analyze verify`. That needs Debian's
//!   `systemd` package (not a running systemd). When the tool is missing the
//!   test fails and says so: it never skips.
//! - The DaemonSet is read with saphyr, a YAML 1.2 library (a
//!   dev-dependency), and checked field by field, types included.
//! - The Dockerfile must put the static binary into an empty (`scratch`)
//!   image, at the path the DaemonSet's command calls.

use std::path::{Path, PathBuf};
use std::process::Command;

use rawload_loader::pin::{BPFFS_MOUNT, DEFAULT_PIN_DIR};
use saphyr::{LoadableYamlNode, YamlOwned};

fn deploy_file(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy")
        .join(name)
}

fn read_deploy(name: &str) -> String {
    let path = deploy_file(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

// --- systemd ------------------------------------------------------------------

/// Where the unit expects the binary (deploy/README.md installs it there).
const INSTALLED_BINARY: &str = "/usr/local/bin/rawload";

/// `name` in one of the directories of $PATH (what `which` does).
fn in_path(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| {
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// A private scratch directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("rawload-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn unit_passes_systemd_analyze_verify() {
    let Some(analyze) = in_path("systemd-analyze") else {
        panic!(
            "systemd-analyze is not installed, and this test checks deploy/rawload.service with it \
             (it never skips). Install Debian's `systemd` package: `apt-get install systemd` \
             (`make test-deps` does). No running systemd is needed."
        );
    };

    // verify checks that ExecStart=/ExecStop= name an executable, and
    // /usr/local/bin/rawload is not installed here: check a copy that
    // points at the binary cargo built for this test instead (a path
    // systemd takes literally), else at /bin/true.
    let built = env!("CARGO_BIN_EXE_rawload");
    let stand_in = if built
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "/._-+".contains(c))
    {
        built
    } else {
        "/bin/true"
    };
    let unit = read_deploy("rawload.service");
    assert_eq!(
        unit.lines()
            .filter(|l| l.starts_with("ExecStart=") || l.starts_with("ExecStop="))
            .filter(|l| l.contains(INSTALLED_BINARY))
            .count(),
        2,
        "ExecStart= and ExecStop= should both call {INSTALLED_BINARY}"
    );
    let dir = TempDir::new("deploy-unit");
    let copy = dir.0.join("rawload.service");
    std::fs::write(&copy, unit.replace(INSTALLED_BINARY, stand_in)).unwrap();

    // Without --recursive-errors verify exits 0 even after warnings; with
    // it (systemd 250+), =no fails on warnings about this unit only, not on
    // the host's other units. Warnings are also read from stderr below, for
    // older versions.
    let help = Command::new(&analyze)
        .arg("--help")
        .env("SYSTEMD_PAGER", "cat")
        .output()
        .expect("running systemd-analyze --help");
    let mut cmd = Command::new(&analyze);
    cmd.arg("verify");
    if String::from_utf8_lossy(&help.stdout).contains("--recursive-errors") {
        cmd.arg("--recursive-errors=no");
    }
    cmd.arg("--man=no")
        .arg(&copy)
        // Warnings on stderr, uncoloured, whatever the caller's settings;
        // nothing of this needs a running systemd.
        .env("SYSTEMD_LOG_LEVEL", "info")
        .env("SYSTEMD_LOG_TARGET", "console")
        .env("SYSTEMD_LOG_COLOR", "0")
        .env("SYSTEMD_PAGER", "cat");
    let out = cmd.output().expect("running systemd-analyze verify");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let about_unit: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("rawload.service"))
        .collect();
    assert!(
        out.status.success() && about_unit.is_empty(),
        "systemd-analyze verify {} failed ({}):\n{stderr}{}",
        copy.display(),
        out.status,
        String::from_utf8_lossy(&out.stdout)
    );
}

/// The logical lines of a file whose lines continue with a trailing `\`,
/// without blank lines and comments. systemd takes a comment only between
/// logical lines; Docker also drops comment lines inside one.
fn logical_lines(text: &str, is_comment: fn(&str) -> bool, comments_inside: bool) -> Vec<String> {
    let mut out = Vec::new();
    let mut pending = String::new();
    for raw in text.lines() {
        let line = raw.trim();
        let between = pending.is_empty();
        if (between && line.is_empty()) || ((between || comments_inside) && is_comment(line)) {
            continue;
        }
        if let Some(cont) = line.strip_suffix('\\') {
            pending.push_str(cont);
            pending.push(' ');
            continue;
        }
        out.push(std::mem::take(&mut pending) + line);
    }
    out
}

/// `(section, key, value)` of each assignment of a unit file.
fn unit_entries(text: &str) -> Vec<(String, String, String)> {
    let mut section = String::new();
    let mut entries = Vec::new();
    let comment = |l: &str| l.starts_with('#') || l.starts_with(';');
    for line in logical_lines(text, comment, false) {
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_string();
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("not an assignment in the unit: {line}"));
        entries.push((
            section.clone(),
            key.trim().to_string(),
            value.trim().to_string(),
        ));
    }
    entries
}

/// The unit file's assignments.
struct Unit(Vec<(String, String, String)>);

impl Unit {
    fn read() -> Unit {
        Unit(unit_entries(&read_deploy("rawload.service")))
    }

    /// Every value of `key` in `[section]`.
    fn all(&self, section: &str, key: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(s, k, _)| s == section && k == key)
            .map(|(_, _, v)| v.as_str())
            .collect()
    }

    /// The value of `key` in `[section]`, which must be set once.
    fn one(&self, section: &str, key: &str) -> &str {
        match self.all(section, key).as_slice() {
            [v] => v,
            other => panic!("[{section}] {key}= should be set once, found {other:?}"),
        }
    }
}

#[test]
fn unit_attaches_on_start_and_detaches_on_stop() {
    let unit = Unit::read();
    assert_eq!(unit.one("Service", "Type"), "oneshot");
    assert_eq!(unit.one("Service", "RemainAfterExit"), "yes");
    assert_eq!(unit.one("Install", "WantedBy"), "multi-user.target");

    let start = unit.one("Service", "ExecStart");
    let stop = unit.one("Service", "ExecStop");
    assert!(
        start.starts_with(&format!("{INSTALLED_BINARY} attach")),
        "{start}"
    );
    assert!(
        stop.starts_with(&format!("{INSTALLED_BINARY} detach")),
        "{stop}"
    );
    // Stop must find what start pinned: one pin directory for both, and the
    // attach-only options only on attach (detach would refuse them).
    let pin_dir = "--pin-dir ${RAWLOAD_PIN_DIR}";
    assert!(
        start.contains(pin_dir) && stop.contains(pin_dir),
        "{start} / {stop}"
    );
    assert!(start.ends_with("$RAWLOAD_ARGS"), "{start}");
    assert!(!stop.contains("RAWLOAD_ARGS"), "{stop}");
    let env = unit.all("Service", "Environment");
    assert!(
        env.contains(&format!("RAWLOAD_PIN_DIR={DEFAULT_PIN_DIR}").as_str()),
        "Environment= should default RAWLOAD_PIN_DIR to {DEFAULT_PIN_DIR}: {env:?}"
    );
    assert_eq!(
        unit.one("Service", "EnvironmentFile"),
        "-/etc/default/rawload",
        "options come from an optional /etc/default/rawload"
    );
}

#[test]
fn unit_has_the_capabilities_and_memlock_attach_needs() {
    let unit = Unit::read();
    let caps = unit.one("Service", "CapabilityBoundingSet");
    for cap in ["CAP_BPF", "CAP_NET_ADMIN", "CAP_SYS_ADMIN", "CAP_PERFMON"] {
        assert!(
            caps.split_whitespace().any(|c| c == cap),
            "CapabilityBoundingSet= lacks {cap}: {caps}"
        );
    }
    assert_eq!(
        unit.one("Service", "LimitMEMLOCK"),
        "infinity",
        "kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK"
    );
}

/// bpffs is optional: ordered after, never required; and nothing may give
/// the service a namespace of its own.
#[test]
fn unit_keeps_the_host_mount_namespace() {
    let unit = Unit::read();
    let after = unit.all("Unit", "After").join(" ");
    assert!(after.split_whitespace().any(|u| u == "sys-fs-bpf.mount"));
    for key in ["Requires", "BindsTo", "Requisite"] {
        assert!(
            !unit.all("Unit", key).join(" ").contains("sys-fs-bpf.mount"),
            "{key}=sys-fs-bpf.mount: rawload mounts bpffs itself when it is missing"
        );
    }

    // Any of these gives the service a private mount namespace (or network
    // namespace): a bpffs that rawload mounts would vanish with it, pins
    // included, and /sys/fs/bpf may become read-only. See the unit's
    // comments.
    for key in [
        "ProtectSystem",
        "ProtectHome",
        "PrivateTmp",
        "PrivateDevices",
        "PrivateMounts",
        "PrivateNetwork",
        "ProtectKernelTunables",
        "ProtectKernelModules",
        "ProtectKernelLogs",
        "ProtectControlGroups",
        "ProtectHostname",
        "ProtectProc",
        "ProcSubset",
        "ReadWritePaths",
        "ReadOnlyPaths",
        "InaccessiblePaths",
        "TemporaryFileSystem",
        "BindPaths",
        "BindReadOnlyPaths",
        "RootDirectory",
        "RootImage",
        "MountFlags",
        "MountAPIVFS",
        "NetworkNamespacePath",
    ] {
        assert!(
            unit.all("Service", key).is_empty(),
            "{key}= would put rawload in its own namespace: a bpffs it mounts and the pins \
             in it would disappear when attach exits (see the comments in the unit)"
        );
    }
}

// --- Kubernetes -----------------------------------------------------------------

/// The one document of a YAML file, read by saphyr (YAML 1.2; duplicate
/// keys are an error). Kubernetes reads manifests with YAML 1.1 rules,
/// which differ only for plain scalars such as `yes`, `on` or `0700`; the
/// manifest has none, and the checks below compare types too (a bool, an
/// integer), as the API server does.
fn yaml_document(name: &str) -> YamlOwned {
    let text = read_deploy(name);
    let docs = YamlOwned::load_from_str(&text).unwrap_or_else(|e| panic!("deploy/{name}: {e}"));
    let [doc] = <[YamlOwned; 1]>::try_from(docs).unwrap_or_else(|docs| {
        panic!("deploy/{name}: one document expected, found {}", docs.len())
    });
    doc
}

/// The node at `path` (mapping keys) under `node`, if every key is there.
fn at<'a>(node: &'a YamlOwned, path: &[&str]) -> Option<&'a YamlOwned> {
    path.iter().try_fold(node, |n, key| n.as_mapping_get(key))
}

/// The node at `path`; fails the test naming the path when it is missing.
fn get<'a>(node: &'a YamlOwned, path: &[&str]) -> &'a YamlOwned {
    at(node, path).unwrap_or_else(|| panic!("no {} in {node:?}", path.join(".")))
}

/// The string at `path`.
fn str_at<'a>(node: &'a YamlOwned, path: &[&str]) -> &'a str {
    let value = get(node, path);
    value
        .as_str()
        .unwrap_or_else(|| panic!("{} should be a string: {value:?}", path.join(".")))
}

/// The boolean at `path` (`true`, not the string "true").
fn bool_at(node: &YamlOwned, path: &[&str]) -> bool {
    let value = get(node, path);
    value
        .as_bool()
        .unwrap_or_else(|| panic!("{} should be a boolean: {value:?}", path.join(".")))
}

/// The sequence at `path`.
fn seq_at<'a>(node: &'a YamlOwned, path: &[&str]) -> &'a [YamlOwned] {
    let value = get(node, path);
    value
        .as_sequence()
        .unwrap_or_else(|| panic!("{} should be a sequence: {value:?}", path.join(".")))
}

/// The non-empty sequence of strings at `path`.
fn strings_at(node: &YamlOwned, path: &[&str]) -> Vec<String> {
    let words: Vec<String> = seq_at(node, path)
        .iter()
        .map(|w| {
            w.as_str()
                .unwrap_or_else(|| panic!("{} holds a non-string: {w:?}", path.join(".")))
                .to_string()
        })
        .collect();
    assert!(!words.is_empty(), "{} is empty", path.join("."));
    words
}

/// The DaemonSet's pod template.
fn daemonset_pod(doc: &YamlOwned) -> &YamlOwned {
    get(doc, &["spec", "template", "spec"])
}

/// The DaemonSet's one container.
fn daemonset_container(pod: &YamlOwned) -> &YamlOwned {
    let containers = seq_at(pod, &["containers"]);
    let [c] = containers else {
        panic!("one container, rawload, expected: {containers:?}");
    };
    c
}

#[test]
fn daemonset_runs_one_pod_on_every_node() {
    let doc = yaml_document("daemonset.yaml");
    assert_eq!(str_at(&doc, &["apiVersion"]), "apps/v1");
    assert_eq!(str_at(&doc, &["kind"]), "DaemonSet");

    // Never two pods on a node: the old one's detach would undo the new one.
    // (An IntOrString: the integer 0 or the percentage "0%".)
    if let Some(surge) = at(
        &doc,
        &["spec", "updateStrategy", "rollingUpdate", "maxSurge"],
    ) {
        assert!(
            surge.as_integer() == Some(0) || surge.as_str() == Some("0%"),
            "maxSurge must be 0: {surge:?}"
        );
    }

    let pod = daemonset_pod(&doc);
    assert!(bool_at(pod, &["hostNetwork"]), "hostNetwork: true");
    let tolerates_all = at(pod, &["tolerations"])
        .and_then(YamlOwned::as_sequence)
        .is_some_and(|ts| {
            ts.iter().any(|t| {
                at(t, &["operator"]).and_then(YamlOwned::as_str) == Some("Exists")
                    && at(t, &["key"]).is_none()
            })
        });
    assert!(
        tolerates_all,
        "a toleration {{operator: Exists}} without a key runs rawload on every node"
    );
    let grace = get(pod, &["terminationGracePeriodSeconds"]);
    let grace = grace
        .as_integer()
        .unwrap_or_else(|| panic!("terminationGracePeriodSeconds is a number: {grace:?}"));
    assert!(grace >= 10, "leave detach time after SIGTERM: {grace}s");
}

#[test]
fn daemonset_container_is_privileged_and_holds_rawload_attached() {
    let doc = yaml_document("daemonset.yaml");
    let c = daemonset_container(daemonset_pod(&doc));
    assert!(
        bool_at(c, &["securityContext", "privileged"]),
        "privileged: true"
    );
    assert!(!str_at(c, &["image"]).is_empty());
    assert!(
        at(c, &["resources", "requests"]).is_some(),
        "resource requests"
    );

    let command = strings_at(c, &["command"]);
    let entrypoint = dockerfile_entrypoint();
    assert_eq!(
        command[0], entrypoint[0],
        "the image holds only {} (no shell): the command must call it",
        entrypoint[0]
    );
    for word in ["attach", "--hold", "--cgroup"] {
        assert!(
            command.contains(&word.to_string()),
            "{word} missing from {command:?}"
        );
    }
    assert!(
        !command.contains(&"--single-netns".to_string()),
        "--single-netns is wrong on a node running pods"
    );

    let probe = strings_at(c, &["readinessProbe", "exec", "command"]);
    assert_eq!(probe[0], entrypoint[0]);
    assert!(probe.contains(&"status".to_string()), "{probe:?}");
}

/// The host's cgroup2 hierarchy and bpffs, mounted where the command
/// expects them.
#[test]
fn daemonset_mounts_the_hosts_cgroups_and_bpffs() {
    let doc = yaml_document("daemonset.yaml");
    let pod = daemonset_pod(&doc);
    let c = daemonset_container(pod);
    let command = strings_at(c, &["command"]);
    // Volumes by name: hostPath of each.
    let volumes = seq_at(pod, &["volumes"]);
    let host_path_of = |name: &str| -> String {
        volumes
            .iter()
            .find(|v| str_at(v, &["name"]) == name)
            .map(|v| str_at(v, &["hostPath", "path"]).to_string())
            .unwrap_or_else(|| panic!("no volume named {name}"))
    };
    let mounts = seq_at(c, &["volumeMounts"]);
    let mount_of = |host: &str| -> &YamlOwned {
        mounts
            .iter()
            .find(|m| host_path_of(str_at(m, &["name"])) == host)
            .unwrap_or_else(|| panic!("no volumeMount of the host's {host}"))
    };

    let cgroup = mount_of("/sys/fs/cgroup");
    assert_eq!(
        str_at(cgroup, &["mountPath"]),
        &command[command.iter().position(|w| w == "--cgroup").unwrap() + 1],
        "--cgroup must name the mounted host cgroup2 hierarchy"
    );
    assert_ne!(
        at(cgroup, &["readOnly"]).map(|r| r.as_bool().unwrap_or_else(|| panic!("readOnly: {r:?}"))),
        Some(true),
        "the host cgroup mount must be read-write"
    );

    let bpffs = mount_of(BPFFS_MOUNT);
    assert_eq!(str_at(bpffs, &["mountPath"]), BPFFS_MOUNT);
    assert_eq!(str_at(bpffs, &["mountPropagation"]), "Bidirectional");
    let pin_dir = match command.iter().position(|w| w == "--pin-dir") {
        Some(i) => command[i + 1].clone(),
        None => DEFAULT_PIN_DIR.to_string(),
    };
    assert!(
        Path::new(&pin_dir).starts_with(BPFFS_MOUNT),
        "pins in {pin_dir} would not be on the host's bpffs"
    );
}

// --- the image --------------------------------------------------------------------

/// Dockerfile instructions `(INSTRUCTION, arguments)`, continuations joined.
fn dockerfile_instructions() -> Vec<(String, String)> {
    logical_lines(&read_deploy("Dockerfile"), |l| l.starts_with('#'), true)
        .into_iter()
        .map(|line| {
            let (op, args) = line.split_once(char::is_whitespace).unwrap_or((&line, ""));
            (op.to_ascii_uppercase(), args.trim().to_string())
        })
        .collect()
}

/// The instructions of the final stage (from its FROM on).
fn final_stage() -> Vec<(String, String)> {
    let all = dockerfile_instructions();
    let from = all
        .iter()
        .rposition(|(op, _)| op == "FROM")
        .expect("the Dockerfile has no FROM");
    all[from..].to_vec()
}

/// The exec-form ENTRYPOINT of the final stage, as its words.
fn dockerfile_entrypoint() -> Vec<String> {
    let stage = final_stage();
    let (_, args) = stage
        .iter()
        .rfind(|(op, _)| op == "ENTRYPOINT")
        .expect("the final stage has an ENTRYPOINT");
    // Docker takes the exec form as a JSON array of strings, and anything
    // else as the shell form (which needs a /bin/sh the image lacks).
    match serde_json::from_str::<Vec<String>>(args) {
        Ok(words) if !words.is_empty() => words,
        _ => panic!("ENTRYPOINT should be in exec form, like [\"/rawload\"]: {args}"),
    }
}

#[test]
fn dockerfile_puts_only_the_static_binary_into_scratch() {
    let stage = final_stage();
    let from: Vec<&str> = stage[0]
        .1
        .split_whitespace()
        .filter(|w| !w.starts_with("--"))
        .collect();
    assert_eq!(from.first(), Some(&"scratch"), "the image is FROM scratch");

    let copies: Vec<Vec<&str>> = stage
        .iter()
        .filter(|(op, _)| op == "COPY" || op == "ADD")
        .map(|(_, args)| {
            args.split_whitespace()
                .filter(|w| !w.starts_with("--"))
                .collect()
        })
        .collect();
    assert_eq!(
        copies,
        vec![vec!["rawload", "/rawload"]],
        "one COPY of ./rawload (what `make` builds) to /rawload"
    );
    assert!(
        stage.iter().all(|(op, _)| op != "RUN"),
        "a scratch image has no shell to RUN with"
    );
    assert_eq!(dockerfile_entrypoint(), ["/rawload"]);

    // The build context is the repository root; the Dockerfile's own ignore
    // file must let the binary through.
    let ignore = read_deploy("Dockerfile.dockerignore");
    assert!(ignore.lines().any(|l| l.trim() == "!rawload"), "{ignore}");
}
