//! Kernel field offsets read from this kernel's BTF agree with Debian's
//! bpftool reading the same BTF (a reader nobody here wrote).

use std::process::Command;

use rawload_obj::error::{Error, KFieldProblem};
use rawload_obj::kfield::{self, KField};

/// `bpftool btf dump ... format raw`: the bit offset (and bitfield size) of
/// `member` in the first `STRUCT 'name'`.
fn bpftool_member(strukt: &str, member: &str) -> (u32, u32) {
    let out = Command::new("bpftool")
        .args([
            "btf",
            "dump",
            "file",
            rawload_loader::vmlinux::PATH,
            "format",
            "raw",
        ])
        .output()
        .expect("running bpftool (make test installs it)");
    let text = String::from_utf8_lossy(&out.stdout);
    let header = format!("STRUCT '{strukt}' size=");
    let mut lines = text.lines().skip_while(|l| !l.contains(&header)).skip(1);
    let line = lines
        .by_ref()
        .take_while(|l| l.starts_with('\t'))
        .find(|l| l.trim_start().starts_with(&format!("'{member}' ")))
        .unwrap_or_else(|| panic!("bpftool shows no {strukt}.{member}"));
    let field = |key: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(key))
            .map_or(0, |v| v.parse().unwrap())
    };
    (field("bits_offset="), field("bitfield_size="))
}

#[test]
fn offsets_agree_with_bpftool() {
    let btf = rawload_loader::vmlinux::btf().expect("this kernel publishes its BTF");
    for (member, width) in [("sk_rcvbuf", 4), ("sk_sndbuf", 4), ("sk_userlocks", 1)] {
        let got = kfield::resolve(&btf, "sock", &[member], width).unwrap();
        let (bit, bitfield) = bpftool_member("sock", member);
        assert_eq!(got.offset, bit / 8, "sock.{member}");
        assert_eq!(u32::from(got.shift), bit % 8, "sock.{member}");
        if bitfield > 0 {
            assert_eq!(u32::from(got.bits), bitfield, "sock.{member}");
        } else {
            assert_eq!(u32::from(got.bits), u32::from(width) * 8, "sock.{member}");
        }
    }
    // A path through a nested struct: sk_backlog is an anonymous struct type.
    let rmem = kfield::resolve(&btf, "sock", &["sk_backlog", "rmem_alloc"], 4).unwrap();
    let (backlog, _) = bpftool_member("sock", "sk_backlog");
    assert_eq!(
        rmem,
        KField {
            offset: backlog / 8,
            width: 4,
            shift: 0,
            bits: 32
        }
    );
}

#[test]
fn wrong_fields_are_errors_that_say_what() {
    let btf = rawload_loader::vmlinux::btf().unwrap();
    let problem =
        |strukt: &str, path: &[&str], width: u8| match kfield::resolve(&btf, strukt, path, width)
            .unwrap_err()
        {
            Error::KernelField { problem, .. } => problem,
            e => panic!("{e:?}"),
        };
    assert_eq!(
        problem("sock", &["no_such_member"], 4),
        KFieldProblem::NoMember {
            member: "no_such_member".into()
        }
    );
    // A path through an int: sk_rcvbuf has no members.
    assert_eq!(
        problem("sock", &["sk_rcvbuf", "x"], 4),
        KFieldProblem::NoMember { member: "x".into() }
    );
    assert_eq!(
        problem("no_such_struct", &["x"], 4),
        KFieldProblem::NoStruct
    );
    // sk_rcvbuf is an int: a 1-byte load cannot read it.
    let e = kfield::resolve(&btf, "sock", &["sk_rcvbuf"], 1).unwrap_err();
    assert!(
        matches!(
            e,
            Error::KernelField {
                problem: KFieldProblem::Size { size: 4, width: 1 },
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(
        e.to_string(),
        "struct sock.sk_rcvbuf is 4 bytes; the program loads 1"
    );
}
