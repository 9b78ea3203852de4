//! The deployment files in deploy/: the systemd unit, the Kubernetes
//! DaemonSet and the Dockerfile of its image. No root and no kernel needed.
//!
//! - The unit goes through `systemd-analyze verify`. That needs Debian's
//!   `systemd` package (not a running systemd). When the tool is missing the
//!   test fails and says so: it never skips.
//! - The DaemonSet is read with the small YAML reader at the end of this
//!   file. It knows the block style Kubernetes manifests use and fails
//!   loudly on anything else (anchors, block scalars, tabs), so an edit
//!   cannot make a check pass by confusing it.
//! - The Dockerfile must put the static binary into an empty (`scratch`)
//!   image, at the path the DaemonSet's command calls.

use std::path::{Path, PathBuf};
use std::process::Command;

use rawload_loader::pin::{BPFFS_MOUNT, DEFAULT_PIN_DIR};

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

#[test]
fn unit_attaches_on_start_and_detaches_on_stop() {
    let entries = unit_entries(&read_deploy("rawload.service"));
    let all = |section: &str, key: &str| -> Vec<&str> {
        entries
            .iter()
            .filter(|(s, k, _)| s == section && k == key)
            .map(|(_, _, v)| v.as_str())
            .collect()
    };
    let one = |section: &str, key: &str| -> &str {
        match all(section, key).as_slice() {
            [v] => v,
            other => panic!("[{section}] {key}= should be set once, found {other:?}"),
        }
    };

    assert_eq!(one("Service", "Type"), "oneshot");
    assert_eq!(one("Service", "RemainAfterExit"), "yes");
    assert_eq!(one("Install", "WantedBy"), "multi-user.target");

    let start = one("Service", "ExecStart");
    let stop = one("Service", "ExecStop");
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
    let env = all("Service", "Environment");
    assert!(
        env.contains(&format!("RAWLOAD_PIN_DIR={DEFAULT_PIN_DIR}").as_str()),
        "Environment= should default RAWLOAD_PIN_DIR to {DEFAULT_PIN_DIR}: {env:?}"
    );
    assert_eq!(
        one("Service", "EnvironmentFile"),
        "-/etc/default/rawload",
        "options come from an optional /etc/default/rawload"
    );

    let caps = one("Service", "CapabilityBoundingSet");
    for cap in ["CAP_BPF", "CAP_NET_ADMIN", "CAP_SYS_ADMIN", "CAP_PERFMON"] {
        assert!(
            caps.split_whitespace().any(|c| c == cap),
            "CapabilityBoundingSet= lacks {cap}: {caps}"
        );
    }
    assert_eq!(
        one("Service", "LimitMEMLOCK"),
        "infinity",
        "kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK"
    );

    // bpffs is optional: ordered after, never required.
    let after = all("Unit", "After").join(" ");
    assert!(after.split_whitespace().any(|u| u == "sys-fs-bpf.mount"));
    for key in ["Requires", "BindsTo", "Requisite"] {
        assert!(
            !all("Unit", key).join(" ").contains("sys-fs-bpf.mount"),
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
            all("Service", key).is_empty(),
            "{key}= would put rawload in its own namespace: a bpffs it mounts and the pins \
             in it would disappear when attach exits (see the comments in the unit)"
        );
    }
}

// --- Kubernetes -----------------------------------------------------------------

#[test]
fn daemonset_runs_one_privileged_holding_rawload_per_node() {
    let doc = yaml::parse(&read_deploy("daemonset.yaml")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(doc.str_at(&["apiVersion"]), "apps/v1");
    assert_eq!(doc.str_at(&["kind"]), "DaemonSet");

    // Never two pods on a node: the old one's detach would undo the new one.
    if let Some(surge) = doc.at(&["spec", "updateStrategy", "rollingUpdate", "maxSurge"]) {
        assert!(
            matches!(surge.as_str(), Some("0" | "0%")),
            "maxSurge must be 0"
        );
    }

    let pod = doc
        .at(&["spec", "template", "spec"])
        .expect("spec.template.spec");
    assert_eq!(pod.str_at(&["hostNetwork"]), "true");
    let tolerates_all = pod
        .at(&["tolerations"])
        .and_then(yaml::Node::as_seq)
        .is_some_and(|ts| {
            ts.iter()
                .any(|t| t.str_at(&["operator"]) == "Exists" && t.at(&["key"]).is_none())
        });
    assert!(
        tolerates_all,
        "a toleration {{operator: Exists}} without a key runs rawload on every node"
    );
    let grace: u64 = pod
        .str_at(&["terminationGracePeriodSeconds"])
        .parse()
        .expect("terminationGracePeriodSeconds is a number");
    assert!(grace >= 10, "leave detach time after SIGTERM: {grace}s");

    let containers = pod
        .at(&["containers"])
        .and_then(yaml::Node::as_seq)
        .expect("containers");
    let [c] = containers else {
        panic!("one container, rawload, expected: {containers:?}");
    };
    assert_eq!(c.str_at(&["securityContext", "privileged"]), "true");
    assert!(!c.str_at(&["image"]).is_empty());
    assert!(
        c.at(&["resources", "requests"]).is_some(),
        "resource requests"
    );

    let command = c.strings_at(&["command"]);
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
    let cgroup_arg = &command[command.iter().position(|w| w == "--cgroup").unwrap() + 1];

    let probe = c.strings_at(&["readinessProbe", "exec", "command"]);
    assert_eq!(probe[0], entrypoint[0]);
    assert!(probe.contains(&"status".to_string()), "{probe:?}");

    // Volumes by name: hostPath of each.
    let volumes = pod
        .at(&["volumes"])
        .and_then(yaml::Node::as_seq)
        .expect("volumes");
    let host_path_of = |name: &str| -> String {
        volumes
            .iter()
            .find(|v| v.str_at(&["name"]) == name)
            .map(|v| v.str_at(&["hostPath", "path"]).to_string())
            .unwrap_or_else(|| panic!("no volume named {name}"))
    };
    let mounts = c
        .at(&["volumeMounts"])
        .and_then(yaml::Node::as_seq)
        .expect("volumeMounts");
    let mount_of = |host: &str| -> &yaml::Node {
        mounts
            .iter()
            .find(|m| host_path_of(m.str_at(&["name"])) == host)
            .unwrap_or_else(|| panic!("no volumeMount of the host's {host}"))
    };

    let cgroup = mount_of("/sys/fs/cgroup");
    assert_eq!(
        cgroup.str_at(&["mountPath"]),
        cgroup_arg,
        "--cgroup must name the mounted host cgroup2 hierarchy"
    );
    assert_ne!(
        cgroup.at(&["readOnly"]).and_then(yaml::Node::as_str),
        Some("true"),
        "the host cgroup mount must be read-write"
    );

    let bpffs = mount_of(BPFFS_MOUNT);
    assert_eq!(bpffs.str_at(&["mountPath"]), BPFFS_MOUNT);
    assert_eq!(bpffs.str_at(&["mountPropagation"]), "Bidirectional");
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
    match yaml::parse_scalar_or_flow(args) {
        Ok(yaml::Node::Seq(words)) if !words.is_empty() => words
            .iter()
            .map(|w| w.as_str().expect("ENTRYPOINT words").to_string())
            .collect(),
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

// --- a small YAML reader ------------------------------------------------------------

/// Block-style YAML as Kubernetes manifests write it: mappings, sequences
/// (indented or not under their key), `- key: value` items, plain and
/// quoted scalars, flow sequences and simple flow mappings, comments.
/// Everything else is an error, never a guess.
mod yaml {
    #[derive(Debug, Clone, PartialEq)]
    pub enum Node {
        Map(Vec<(String, Node)>),
        Seq(Vec<Node>),
        Scalar(String),
    }

    impl Node {
        pub fn get(&self, key: &str) -> Option<&Node> {
            match self {
                Node::Map(entries) => entries.iter().find(|(k, _)| k == key).map(|(_, v)| v),
                _ => None,
            }
        }

        pub fn at(&self, path: &[&str]) -> Option<&Node> {
            path.iter().try_fold(self, |node, key| node.get(key))
        }

        pub fn as_str(&self) -> Option<&str> {
            match self {
                Node::Scalar(s) => Some(s),
                _ => None,
            }
        }

        pub fn as_seq(&self) -> Option<&[Node]> {
            match self {
                Node::Seq(items) => Some(items),
                _ => None,
            }
        }

        /// The scalar at `path`; panics naming the path when there is none.
        pub fn str_at(&self, path: &[&str]) -> &str {
            self.at(path)
                .and_then(Node::as_str)
                .unwrap_or_else(|| panic!("no scalar at {}", path.join(".")))
        }

        /// The sequence of scalars at `path`.
        pub fn strings_at(&self, path: &[&str]) -> Vec<String> {
            let items = self
                .at(path)
                .and_then(Node::as_seq)
                .unwrap_or_else(|| panic!("no sequence at {}", path.join(".")));
            let words: Vec<String> = items
                .iter()
                .map(|n| {
                    n.as_str()
                        .unwrap_or_else(|| panic!("{} holds a non-scalar", path.join(".")))
                        .to_string()
                })
                .collect();
            assert!(!words.is_empty(), "{} is empty", path.join("."));
            words
        }
    }

    struct Line {
        no: usize,
        indent: usize,
        text: String,
    }

    pub fn parse(text: &str) -> Result<Node, String> {
        let mut lines = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let no = i + 1;
            let body = strip_comment(raw);
            let trimmed = body.trim_end();
            if trimmed.trim().is_empty() || trimmed == "---" {
                continue;
            }
            let content = trimmed.trim_start_matches(' ');
            if content.starts_with('\t') {
                return Err(format!("line {no}: tab in indentation"));
            }
            if content == "..." || content.starts_with("--- ") || content.starts_with('%') {
                return Err(format!("line {no}: one plain document expected"));
            }
            lines.push(Line {
                no,
                indent: trimmed.len() - content.len(),
                text: content.to_string(),
            });
        }
        if lines.is_empty() {
            return Err("empty document".into());
        }
        let mut i = 0;
        let indent = lines[0].indent;
        let node = block(&mut lines, &mut i, indent)?;
        match lines.get(i) {
            Some(l) => Err(format!("line {}: unexpected indentation", l.no)),
            None => Ok(node),
        }
    }

    /// The line without its comment: `#` at the start or after a space,
    /// outside quotes.
    fn strip_comment(line: &str) -> &str {
        let mut quote = None;
        let mut prev = ' ';
        for (i, c) in line.char_indices() {
            match quote {
                Some(q) if c == q => quote = None,
                Some(_) => {}
                None if c == '"' || c == '\'' => quote = Some(c),
                None if c == '#' && prev.is_whitespace() => return &line[..i],
                None => {}
            }
            prev = c;
        }
        line
    }

    fn is_item(text: &str) -> bool {
        text == "-" || text.starts_with("- ")
    }

    fn block(lines: &mut [Line], i: &mut usize, indent: usize) -> Result<Node, String> {
        if is_item(&lines[*i].text) {
            seq(lines, i, indent)
        } else {
            map(lines, i, indent)
        }
    }

    /// `key: value` split at the first `: ` (or a final `:`) outside quotes.
    fn split_key(text: &str) -> Option<(&str, &str)> {
        if text.starts_with(['"', '\'', '[', '{']) {
            return None;
        }
        if let Some(key) = text.strip_suffix(':') {
            if !key.contains(": ") {
                return Some((key, ""));
            }
        }
        text.split_once(": ").map(|(k, v)| (k, v.trim()))
    }

    fn map(lines: &mut [Line], i: &mut usize, indent: usize) -> Result<Node, String> {
        let mut entries: Vec<(String, Node)> = Vec::new();
        while let Some(line) = lines.get(*i) {
            if line.indent < indent || (line.indent == indent && is_item(&line.text)) {
                break;
            }
            if line.indent > indent {
                return Err(format!("line {}: unexpected indentation", line.no));
            }
            let no = line.no;
            let (key, value) = split_key(&line.text)
                .ok_or_else(|| format!("line {no}: `key: value` expected: {}", line.text))?;
            let (key, value) = (unquote(key.trim(), no)?, value.to_string());
            if entries.iter().any(|(k, _)| *k == key) {
                return Err(format!("line {no}: duplicate key {key}"));
            }
            *i += 1;
            let node = if !value.is_empty() {
                parse_scalar_or_flow(&value).map_err(|e| format!("line {no}: {e}"))?
            } else {
                match lines.get(*i) {
                    Some(next) if next.indent > indent => {
                        let child = next.indent;
                        block(lines, i, child)?
                    }
                    // A sequence may sit at its key's own indentation.
                    Some(next) if next.indent == indent && is_item(&next.text) => {
                        seq(lines, i, indent)?
                    }
                    _ => Node::Scalar(String::new()),
                }
            };
            entries.push((key, node));
        }
        Ok(Node::Map(entries))
    }

    fn seq(lines: &mut [Line], i: &mut usize, indent: usize) -> Result<Node, String> {
        let mut items = Vec::new();
        while let Some(line) = lines.get(*i) {
            if line.indent != indent || !is_item(&line.text) {
                if line.indent > indent {
                    return Err(format!("line {}: unexpected indentation", line.no));
                }
                break;
            }
            let no = line.no;
            let rest = line.text[1..].trim_start().to_string();
            if rest.is_empty() {
                *i += 1;
                match lines.get(*i) {
                    Some(next) if next.indent > indent => {
                        let child = next.indent;
                        items.push(block(lines, i, child)?);
                    }
                    _ => items.push(Node::Scalar(String::new())),
                }
            } else if split_key(&rest).is_some() || is_item(&rest) {
                // `- key: value`: a mapping (or sequence) whose first line
                // starts where `rest` does.
                let column = line.indent + (line.text.len() - rest.len());
                lines[*i].indent = column;
                lines[*i].text = rest;
                items.push(block(lines, i, column)?);
            } else {
                items.push(parse_scalar_or_flow(&rest).map_err(|e| format!("line {no}: {e}"))?);
                *i += 1;
            }
        }
        Ok(Node::Seq(items))
    }

    /// A value on one line: a plain or quoted scalar, `[a, b]` or `{k: v}`.
    pub fn parse_scalar_or_flow(value: &str) -> Result<Node, String> {
        let value = value.trim();
        if let Some(inner) = value.strip_prefix('[') {
            let inner = inner.strip_suffix(']').ok_or("unclosed [")?;
            return Ok(Node::Seq(
                split_flow(inner)?
                    .into_iter()
                    .map(|w| parse_flow_scalar(&w))
                    .collect::<Result<_, _>>()?,
            ));
        }
        if let Some(inner) = value.strip_prefix('{') {
            let inner = inner.strip_suffix('}').ok_or("unclosed {")?;
            let mut entries = Vec::new();
            for part in split_flow(inner)? {
                let (k, v) = part
                    .split_once(':')
                    .ok_or_else(|| format!("`key: value` expected in {{{inner}}}"))?;
                entries.push((unquote(k.trim(), 0)?, parse_flow_scalar(v)?));
            }
            return Ok(Node::Map(entries));
        }
        if value.starts_with(['&', '*', '!', '|', '>', '@', '`']) {
            return Err(format!("unsupported YAML: {value}"));
        }
        Ok(Node::Scalar(unquote(value, 0)?))
    }

    fn parse_flow_scalar(word: &str) -> Result<Node, String> {
        let word = word.trim();
        if word.starts_with(['[', '{']) {
            return Err(format!("nested flow collections are not supported: {word}"));
        }
        parse_scalar_or_flow(word)
    }

    /// The comma-separated parts of a flow collection, outside quotes.
    fn split_flow(inner: &str) -> Result<Vec<String>, String> {
        let mut parts = Vec::new();
        let mut current = String::new();
        let mut quote = None;
        for c in inner.chars() {
            match quote {
                Some(q) if c == q => quote = None,
                Some(_) => {}
                None if c == '"' || c == '\'' => quote = Some(c),
                None if c == ',' => {
                    parts.push(std::mem::take(&mut current));
                    continue;
                }
                None => {}
            }
            current.push(c);
        }
        if quote.is_some() {
            return Err(format!("unclosed quote in {inner}"));
        }
        parts.push(current);
        let parts: Vec<String> = parts.into_iter().map(|p| p.trim().to_string()).collect();
        match parts.as_slice() {
            [only] if only.is_empty() => Ok(Vec::new()),
            _ if parts.iter().any(String::is_empty) => Err(format!("empty item in {inner}")),
            _ => Ok(parts),
        }
    }

    /// A scalar without its quotes: `"..."` with `\"` and `\\`, `'...'` with `''`.
    fn unquote(s: &str, no: usize) -> Result<String, String> {
        let err = |what: &str| format!("line {no}: {what}: {s}");
        if let Some(inner) = s.strip_prefix('"') {
            let inner = inner
                .strip_suffix('"')
                .ok_or_else(|| err("unclosed quote"))?;
            let mut out = String::new();
            let mut chars = inner.chars();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => match chars.next() {
                        Some(e @ ('"' | '\\' | '/')) => out.push(e),
                        _ => return Err(err("unsupported escape")),
                    },
                    '"' => return Err(err("stray quote")),
                    c => out.push(c),
                }
            }
            return Ok(out);
        }
        if let Some(inner) = s.strip_prefix('\'') {
            let inner = inner
                .strip_suffix('\'')
                .ok_or_else(|| err("unclosed quote"))?;
            return Ok(inner.replace("''", "'"));
        }
        Ok(s.to_string())
    }
}

#[test]
fn yaml_reader_reads_what_manifests_use_and_refuses_the_rest() {
    use yaml::{Node, parse};
    let doc = parse(
        "# comment\n\
         a: 1\n\
         b:\n  c: \"x # not a comment\" # a comment\n  d: 'it''s'\n\
         list:\n- one\n- k: v\n  k2: v2\n- [x, \"y\"]\n\
         nested:\n  - name: n\n    items:\n      - -a\n      - --b\n\
         flow: {cpu: 10m, memory: 32Mi}\n\
         empty:\n",
    )
    .unwrap();
    assert_eq!(doc.str_at(&["a"]), "1");
    assert_eq!(doc.str_at(&["b", "c"]), "x # not a comment");
    assert_eq!(doc.str_at(&["b", "d"]), "it's");
    let list = doc.at(&["list"]).and_then(Node::as_seq).unwrap();
    assert_eq!(list[0], Node::Scalar("one".into()));
    assert_eq!(list[1].str_at(&["k2"]), "v2");
    assert_eq!(
        list[2],
        Node::Seq(vec![Node::Scalar("x".into()), Node::Scalar("y".into())])
    );
    let nested = &doc.at(&["nested"]).and_then(Node::as_seq).unwrap()[0];
    assert_eq!(nested.strings_at(&["items"]), ["-a", "--b"]);
    assert_eq!(doc.str_at(&["flow", "memory"]), "32Mi");
    assert_eq!(doc.str_at(&["empty"]), "");

    for bad in [
        "a: 1\n  b: 2\n",
        "a:\n\tb: 1\n",
        "a: &anchor 1\n",
        "a: |\n  text\n",
        "a: 1\na: 2\n",
        "a: [x, [y]]\n",
        "just a scalar\n",
        "a: \"open\n",
    ] {
        assert!(parse(bad).is_err(), "accepted: {bad:?}");
    }
}
