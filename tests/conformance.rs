//! The socket-API conformance test (`rawload-conformance`) on the host
//! kernel. It fails when a case under rawload differs from plain TCP,
//! unless [`KNOWN`] lists that difference for this kernel: the one table
//! of known kernel limitations, each explained in docs/KERNEL-ISSUES.md.
//! It also fails when an entry that should show on this kernel no longer
//! does (the table must shrink as the data path is fixed), when the tool
//! could not run, and when the baseline was not redirected (a run in which
//! rawload redirects nothing would compare TCP with TCP and prove nothing).

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// When a known difference applies.
#[derive(Debug, Clone, Copy)]
enum When {
    /// On every kernel rawload supports.
    Always,
    /// On kernels from..=to (major, minor).
    Kernels((u32, u32), (u32, u32)),
    /// Where the kernel's FIONREAD regression makes rawload attach its
    /// sk_skb verdict (`rawload attach` says so): TCP bytes then wait in the
    /// redirect queue too.
    SkSkbVerdict,
}

/// What the host run was: its kernel and whether rawload attached its
/// sk_skb verdict.
struct Host {
    release: String,
    version: (u32, u32),
    sk_skb_verdict: bool,
}

impl When {
    fn applies(self, host: &Host) -> bool {
        match self {
            When::Always => true,
            When::Kernels(from, to) => (from..=to).contains(&host.version),
            When::SkSkbVerdict => host.sk_skb_verdict,
        }
    }
}

/// A difference the kernel's sockmap code makes and rawload cannot avoid
/// (yet): `case` may differ in these items when `when` applies (a subset
/// is fine: a partial fix must not fail the test). Unless `sometimes`, it
/// is seen on every run where it applies, so an entry that no longer shows
/// is stale.
struct Known {
    case: &'static str,
    items: &'static [&'static str],
    when: When,
    /// The section of docs/KERNEL-ISSUES.md that explains it.
    why: &'static str,
    /// It depends on a race (what is queued where at a close), so a run
    /// without it proves nothing.
    sometimes: bool,
}

const fn known(
    case: &'static str,
    items: &'static [&'static str],
    when: When,
    why: &'static str,
) -> Known {
    Known {
        case,
        items,
        when,
        why,
        sometimes: false,
    }
}

const fn sometimes(known: Known) -> Known {
    Known {
        sometimes: true,
        ..known
    }
}

use When::{Always, Kernels, SkSkbVerdict};

/// Measured with `make kernel-matrix` (5.10, 6.1, 6.12, 7.2 under qemu and
/// the 6.18.44 host); docs/KERNEL-ISSUES.md has the table per kernel.
const KNOWN: &[Known] = &[
    // A close with unread bytes in the redirect queue sends FIN, not RST;
    // with the verdict, TCP bytes wait there too, and a sender blocked on
    // the closed window learns only at its next window probe.
    sometimes(known(
        "sendfile_peer_closes",
        &["sender_told"],
        SkSkbVerdict,
        "11",
    )),
    known(
        "fionread",
        &["fionread", "fionread_after_300"],
        Kernels((5, 10), (6, 1)),
        "2",
    ),
    known("halfclose_reader", &["reader"], Always, "1"),
    known("splice_read", &["received"], Always, "4"),
    known("waitall", &["recv", "bytes"], Always, "8"),
    known("rcvlowat", &["below_lowat"], Always, "9"),
    known(
        "oob",
        &["poll", "select_except", "oob", "normal", "atmark_after"],
        Always,
        "10",
    ),
    known(
        "oob_inline",
        &["poll", "first", "atmark", "second", "oob_flag"],
        Always,
        "10",
    ),
    known("close_unread_send", &["poll", "1_send"], Always, "11"),
    known(
        "close_unread_recv",
        &["poll", "1_recv", "2_send"],
        Always,
        "11",
    ),
    // TLS_TX is refused with EINVAL on a socket in the map (where the
    // kernel has kTLS at all: 6.1, 6.12 and 7.2 here; 5.10 and the host
    // have none, so the case is unsupported there).
    known(
        "ktls",
        &[
            "setup",
            "client_to_server_send",
            "client_to_server",
            "server_to_client_send",
            "server_to_client",
            "client_tx",
        ],
        Always,
        "12",
    ),
];

fn host(report: &Value) -> Host {
    let release = report["kernel"].as_str().unwrap_or("?").to_string();
    let mut parts = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let version = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    Host {
        release,
        version,
        // What `rawload attach` printed (a black box, like the rest).
        sk_skb_verdict: report["attach_said"]
            .as_str()
            .is_some_and(|said| said.contains("sk_skb verdict")),
    }
}

/// Runs the tool with a bound on the whole run; its JSON report.
fn run_tool() -> Value {
    let mut child = Command::new(env!("CARGO_BIN_EXE_rawload-conformance"))
        .args(["--json", "--rawload", common::RAWLOAD])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("starting rawload-conformance");
    let out = child.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || std::io::read_to_string(out).unwrap_or_default());
    let started = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("waiting") {
            break s;
        }
        if started.elapsed() > Duration::from_secs(300) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("rawload-conformance ran for more than 300 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let text = reader.join().expect("reading the report");
    assert!(
        status.success(),
        "rawload-conformance could not run ({status}); its report: {text}"
    );
    common::json(&text, "the rawload-conformance --json report")
}

/// A differing item without its detail: `accepted(204.8x)` -> `accepted`.
fn item_name(item: &str) -> &str {
    item.split('(').next().unwrap_or(item)
}

/// The entry that lets `case` differ in `items` on `host`, if any.
fn excuse(case: &str, items: &[&str], host: &Host) -> Option<&'static Known> {
    KNOWN.iter().find(|k| {
        k.case == case
            && k.when.applies(host)
            && items.iter().all(|i| k.items.contains(&item_name(i)))
    })
}

#[test]
fn socket_api_matches_plain_tcp_or_is_a_known_limitation() {
    common::require_root();
    let _serial = common::serial();
    let report = run_tool();
    let host = host(&report);
    let release = &host.release;
    let cases = report["cases"].as_array().expect("cases");
    let names: Vec<&str> = cases.iter().filter_map(|c| c["case"].as_str()).collect();
    for k in KNOWN {
        assert!(
            names.contains(&k.case),
            "KNOWN names an unknown case {}",
            k.case
        );
    }
    let mut failures = Vec::new();
    for c in cases {
        let name = c["case"].as_str().unwrap_or("?");
        let verdict = c["verdict"].as_str().unwrap_or("?");
        let what: Vec<&str> = c["differs"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let detail = format!(
            "{name}: {verdict} {what:?}\n    tcp:     {}\n    rawload: {}\n    path: {}",
            c["tcp"]["text"].as_str().unwrap_or("?"),
            c["rawload"]["text"].as_str().unwrap_or("?"),
            c["path"].as_str().unwrap_or("?")
        );
        let expected = KNOWN
            .iter()
            .find(|k| k.case == name && k.when.applies(&host));
        match verdict {
            "differs" => match excuse(name, &what, &host) {
                Some(k) => eprintln!("known on {release} (KERNEL-ISSUES.md {}): {detail}", k.why),
                None => failures.push(format!("differs from plain TCP: {detail}")),
            },
            "same" | "off" if expected.is_some_and(|k| !k.sometimes) => failures.push(format!(
                "listed in KNOWN for {release} but no longer differs, remove it: {detail}"
            )),
            "same" | "off" => {}
            "unsupported" => eprintln!("UNSUPPORTED on {release}, not tested: {detail}"),
            _ => failures.push(format!("the plain-TCP run failed: {detail}")),
        }
    }
    for base in ["basic", "basic_v6"] {
        let c = cases.iter().find(|c| c["case"].as_str() == Some(base));
        let ok = c.is_some_and(|c| {
            c["verdict"].as_str() == Some("same") && c["path"].as_str() == Some("redirected")
        });
        if !ok {
            failures.push(format!(
                "the baseline {base} was not redirected intact, so nothing was tested"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} conformance failure(s) on {release} (docs/KERNEL-ISSUES.md):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn known_limitations_table_is_well_formed() {
    for (i, k) in KNOWN.iter().enumerate() {
        assert!(!k.items.is_empty() && !k.why.is_empty(), "{}", k.case);
        if let When::Kernels(from, to) = k.when {
            assert!(from <= to, "{}", k.case);
        }
        assert!(
            KNOWN[..i].iter().all(|o| o.case != k.case),
            "{} is listed twice: one entry per case keeps the table readable",
            k.case
        );
    }
    assert_eq!(item_name("accepted(204.8x)"), "accepted");
}
