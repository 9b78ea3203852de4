//! `rawload explain` reports every section, every map with its origin, each
//! program disassembled with each relocation before and after patching, and
//! the attach steps. It needs no root: nothing here touches the kernel.

use std::process::Command;

const RAWLOAD: &str = env!("CARGO_BIN_EXE_rawload");

fn explain(args: &[&str]) -> String {
    let out = Command::new(RAWLOAD)
        .arg("explain")
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn embedded_object_is_explained_in_full() {
    let text = explain(&[]);
    let obj = rawload_obj::elf::parse(rawload_loader::contract::RELEASE_OBJECT).unwrap();
    for s in &obj.sections {
        assert!(
            text.contains(&format!("  {:<18}", s.name)),
            "section {} missing",
            s.name
        );
    }
    for m in &obj.maps {
        assert!(
            text.contains(&format!(" {:<16} ", m.name)),
            "map {} missing",
            m.name
        );
    }
    assert!(text.contains("from `.maps`, described in .BTF"));
    assert!(text.contains("global cfg_netns_cookie at offset 0 (4 B)"));
    // One "before" and one "after" line per relocation, and its annotation.
    let refs: usize = obj.programs.iter().map(|p| p.map_refs.len()).sum();
    assert_eq!(text.matches("ld_pseudo\tr").count(), refs, "patched lines");
    assert_eq!(
        text.matches("            ^ ").count() - text.matches("^ bpf-to-bpf call").count(),
        refs
    );
    assert!(text.contains("bpf-to-bpf call to is_same_host"));
    assert!(text.contains("BPF_PSEUDO_MAP_VALUE: 4 bytes into its value"));
    assert!(text.contains("BPF_PROG_ATTACH rawload_sk_msg to rawload_socks (BPF_SK_MSG_VERDICT)"));
    assert!(text.contains("symbols: where each program, map and variable is"));
}

#[test]
fn legacy_object_and_debug_object_are_explained() {
    let legacy = explain(&[concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/seed_legacy.o"
    )]);
    assert!(
        legacy.contains("legacy `maps` section (struct bpf_map_def)"),
        "{legacy}"
    );
    assert!(
        legacy.contains("program bpf_tcpip_bypass (section `sk_msg/bypass`"),
        "{legacy}"
    );
    let debug = explain(&["--debug"]);
    assert!(
        debug.contains("call 6"),
        "the debug object calls bpf_trace_printk"
    );
}

/// The one line `rawload explain` fails with (exit 1).
fn explain_error(args: &[&str]) -> String {
    let out = Command::new(RAWLOAD)
        .arg("explain")
        .args(args)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(err.lines().count(), 1, "{err}");
    err
}

#[test]
fn a_broken_object_is_one_error_line() {
    let err = explain_error(&["/etc/hostname"]);
    assert!(
        err.starts_with("rawload: error: reading object /etc/hostname"),
        "{err}"
    );
}

fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// Two objects: each shown as alone, then the map they share by name and
/// where each one's reference to it lands (the same example fd).
#[test]
fn two_objects_are_explained_with_the_map_they_share() {
    let (sockops, redir) = (fixture("seed_sockops.o"), fixture("seed_redir_btf.o"));
    let text = explain(&[&sockops, &redir]);
    for header in [&sockops, &redir] {
        assert!(
            text.contains(&format!("rawload explain: object {header}, ")),
            "{text}"
        );
    }
    assert!(text.contains("from legacy `maps` section (struct bpf_map_def)"));
    assert!(text.contains("from `.maps`, described in .BTF"));
    assert!(
        text.contains(
            "#0 sock_ops_map     fd 100  shared by name: seed_sockops.o, seed_redir_btf.o"
        ),
        "{text}"
    );
    for reference in [
        "seed_sockops.o bpf_sockops_v4 insn  23: sock_ops_map (its map #0) -> set map #0 sock_ops_map, fd 100",
        "seed_redir_btf.o bpf_tcpip_bypass insn  16: sock_ops_map (its map #0) -> set map #0 sock_ops_map, fd 100",
    ] {
        assert!(text.contains(reference), "{reference}\n{text}");
    }
    // Both programs patched with the shared map's fd.
    assert_eq!(text.matches("ld_pseudo\tr2, 1, 100").count(), 2, "{text}");
    assert!(text.contains("BPF_MAP_CREATE x1;"), "{text}");
    assert!(text.contains("BPF_PROG_ATTACH bpf_tcpip_bypass to sock_ops_map (BPF_SK_MSG_VERDICT)"));
}

#[test]
fn two_objects_that_disagree_are_one_error_line() {
    let err = explain_error(&[&fixture("seed_sockops.o"), &fixture("seed_redir_small.o")]);
    assert!(
        err.starts_with("rawload: error: map 'sock_ops_map' is declared in seed_sockops.o with max_entries 65535"),
        "{err}"
    );
}
