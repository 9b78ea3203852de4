//! rawload's bpf(2) argument blocks (loader/src/sys/attr.rs) checked against
//! the kernel's UAPI header, linux/bpf.h, by the C compiler.
//!
//! attr.rs copies the arms of `union bpf_attr` by hand, and so are the
//! offsets its compile-time asserts compare with. This test copies no
//! number, so nothing here can drift from either side:
//!
//! - the Rust side of each field is what rustc computes (`offset_of!`,
//!   `size_of_val`), for every field: each block below is a struct pattern
//!   without `..`, so a field added to or removed from attr.rs does not
//!   compile until it is listed here;
//! - the C side is where clang puts the member the field mirrors, in the
//!   linux-libc-dev headers `make test` installs (tests/abi/bpf_attr.c turns
//!   each line this test writes into `_Static_assert`s).
//!
//! What is written by hand is only which C member each field mirrors (the
//! same name unless a block says otherwise). The test also checks what
//! attr.rs promises on the Rust side alone: no implicit padding, every gap
//! being a named field.

use std::fmt::Write as _;
use std::mem::{offset_of, size_of, size_of_val};
use std::path::PathBuf;
use std::process::Command;

use rawload_loader::sys::attr::{self, cmd};

/// What a Rust field is on the C side.
enum C {
    /// The member of the same name.
    Same,
    /// The member of another name.
    Named(&'static str),
    /// Padding rawload names and zeroes: no member; the members around it
    /// are checked.
    Pad,
    /// Several members that rawload does not read, from the first up to the
    /// next one.
    Span(&'static str, &'static str),
}

struct Field {
    name: &'static str,
    c: C,
    offset: usize,
    size: usize,
}

struct Block {
    rust: &'static str,
    /// The C type, and the path of the arm inside it (`info.` for a named
    /// arm of the union, empty for an anonymous one).
    c_type: &'static str,
    arm: &'static str,
    size: usize,
    fields: Vec<Field>,
}

/// `block!(Type => "c type", "arm." { field, field = C::Named("x"), ... })`:
/// the fields of `attr::Type`, each with the C member it mirrors.
macro_rules! block {
    ($ty:ident => $c_type:expr, $arm:literal { $($field:ident $(= $c:expr)?),* $(,)? }) => {{
        // Every field, by name: when attr.rs has another, this fails to
        // compile ("pattern requires `..`"); list the field below.
        let attr::$ty { $($field),* } = attr::$ty::default();
        Block {
            rust: stringify!($ty),
            c_type: $c_type,
            arm: $arm,
            size: size_of::<attr::$ty>(),
            fields: vec![$(Field {
                name: stringify!($field),
                c: block!(@c $($c)?),
                offset: offset_of!(attr::$ty, $field),
                size: size_of_val(&$field),
            }),*],
        }
    }};
    (@c) => { C::Same };
    (@c $c:expr) => { $c };
}

fn blocks() -> Vec<Block> {
    const ATTR: &str = "union bpf_attr";
    vec![
        block!(MapCreate => ATTR, "" {
            map_type, key_size, value_size, max_entries, map_flags, inner_map_fd, numa_node,
            map_name,
        }),
        block!(MapElem => ATTR, "" { map_fd, _pad = C::Pad, key, value, flags }),
        block!(MapFreeze => ATTR, "" { map_fd }),
        block!(ProgLoad => ATTR, "" {
            prog_type, insn_cnt, insns, license, log_level, log_size, log_buf, kern_version,
            prog_flags, prog_name, prog_ifindex, expected_attach_type,
        }),
        block!(ObjPin => ATTR, "" { pathname, bpf_fd, file_flags }),
        block!(ProgAttach => ATTR, "" {
            target_fd, attach_bpf_fd, attach_type, attach_flags, replace_bpf_fd,
        }),
        // `id` is start_id for GET_NEXT_ID and prog_id for GET_FD_BY_ID
        // (one union in C).
        block!(GetId => ATTR, "" { id = C::Named("start_id"), next_id, open_flags }),
        block!(ObjInfo => ATTR, "info." { bpf_fd, info_len, info }),
        block!(ProgQuery => ATTR, "query." {
            target_fd, attach_type, query_flags, attach_flags, prog_ids, prog_cnt,
            _pad = C::Pad,
        }),
        block!(ProgInfo => "struct bpf_prog_info", "" {
            prog_type = C::Named("type"), id, tag, jited_prog_len, xlated_prog_len,
            jited_prog_insns, xlated_prog_insns, load_time, created_by_uid, nr_map_ids,
            map_ids, name, _unused = C::Span("ifindex", "run_time_ns"), run_time_ns, run_cnt,
        }),
        block!(MapInfo => "struct bpf_map_info", "" {
            map_type = C::Named("type"), id, key_size, value_size, max_entries, map_flags,
            name,
        }),
    ]
}

/// The bpf(2) command numbers of attr.rs, by name; the C names are
/// `cmd::name`'s.
macro_rules! commands {
    ($($name:ident),* $(,)?) => { [$((stringify!($name), cmd::$name)),*] };
}
const COMMANDS: [(&str, u32); 15] = commands![
    MAP_CREATE,
    MAP_LOOKUP_ELEM,
    MAP_UPDATE_ELEM,
    MAP_DELETE_ELEM,
    MAP_GET_NEXT_KEY,
    PROG_LOAD,
    OBJ_PIN,
    OBJ_GET,
    PROG_ATTACH,
    PROG_DETACH,
    PROG_GET_NEXT_ID,
    PROG_GET_FD_BY_ID,
    OBJ_GET_INFO_BY_FD,
    PROG_QUERY,
    MAP_FREEZE,
];

/// The lines tests/abi/bpf_attr.c reads as RAWLOAD_LAYOUT.
fn layout(blocks: &[Block]) -> String {
    let mut out = String::new();
    for b in blocks {
        let (rust, c_type, arm) = (b.rust, b.c_type, b.arm);
        writeln!(out, "RAWLOAD_BLOCK(\"{rust}\", {c_type}, {})", b.size).unwrap();
        for f in &b.fields {
            let (name, offset, size) = (f.name, f.offset, f.size);
            let member = match f.c {
                C::Same => name,
                C::Named(n) => n,
                C::Pad => continue,
                C::Span(first, next) => {
                    writeln!(
                        out,
                        "RAWLOAD_SPAN(\"{rust}.{name}\", {c_type}, {arm}{first}, {arm}{next}, {offset}, {size})"
                    )
                    .unwrap();
                    continue;
                }
            };
            writeln!(
                out,
                "RAWLOAD_MEMBER(\"{rust}.{name}\", {c_type}, {arm}{member}, {offset}, {size})"
            )
            .unwrap();
        }
    }
    for (rust, value) in COMMANDS {
        let c_name = cmd::name(value);
        writeln!(out, "RAWLOAD_VALUE(\"cmd::{rust}\", {c_name}, {value})").unwrap();
    }
    out
}

/// A scratch file, removed on drop.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Compiles tests/abi/bpf_attr.c with `layout`; clang's verdict and errors.
fn clang_check(layout: &str, tag: &str) -> (bool, String) {
    let file =
        Scratch(std::env::temp_dir().join(format!("rawload-abi-{tag}-{}.h", std::process::id())));
    std::fs::write(&file.0, layout).unwrap();
    let out = Command::new("clang-14")
        .args(["-fsyntax-only", "-Werror", "-Wall"])
        .arg(format!(
            "-I/usr/include/{}-linux-gnu",
            std::env::consts::ARCH
        ))
        .arg(format!("-DRAWLOAD_LAYOUT=\"{}\"", file.0.display()))
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/abi/bpf_attr.c"))
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "running clang-14 ({e}): this test compares attr.rs with linux/bpf.h and never \
                 skips; install Debian's clang-14 and linux-libc-dev (`make test-deps` does)"
            )
        });
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn attr_blocks_have_no_implicit_padding() {
    for b in blocks() {
        let mut end = 0;
        for f in &b.fields {
            assert_eq!(
                f.offset, end,
                "{}.{} starts at {}, not where the field before it ends ({end}): name the gap \
                 (attr.rs: no uninitialised byte reaches the kernel)",
                b.rust, f.name, f.offset
            );
            end = f.offset + f.size;
        }
        assert_eq!(b.size, end, "{} has padding after its last field", b.rust);
    }
}

#[test]
fn attr_blocks_match_linux_bpf_h() {
    let layout = layout(&blocks());
    let (ok, errors) = clang_check(&layout, "attr");
    assert!(
        ok,
        "loader/src/sys/attr.rs and linux/bpf.h disagree:\n{errors}\nthe layout compared:\n{layout}"
    );
}

/// The check itself can fail: one field moved by 4 bytes and one command
/// renumbered must each make clang refuse the file.
#[test]
fn a_wrong_offset_or_number_fails_the_check() {
    let layout = layout(&blocks());
    for (what, from, to) in [
        ("an offset", "map_flags, 16, 4)", "map_flags, 20, 4)"),
        ("a command", "BPF_MAP_FREEZE, 22)", "BPF_MAP_FREEZE, 21)"),
    ] {
        assert_eq!(layout.matches(from).count(), 1, "{from} in:\n{layout}");
        let (ok, errors) = clang_check(&layout.replace(from, to), "wrong");
        assert!(!ok, "clang accepted {what} that differs from linux/bpf.h");
        assert!(
            errors.contains("static assertion failed") || errors.contains("static_assert"),
            "{errors}"
        );
    }
}
