//! The ELF reader on the committed objects and on broken copies of them.
//! No kernel involved: these run anywhere, without root.

use rawload_obj::elf;
use rawload_obj::error::{
    BtfError, Error, GlobalProblem, MapProblem, MapSectionProblem, NotBpf, RelocProblem,
};
use rawload_obj::insn::{CALL, INSN_SIZE, Insn, LD_IMM64};
use rawload_obj::obj::{MapOrigin, RefKind};
use rawload_obj::uapi::{MapType, ProgType};

const RELEASE: &[u8] = include_bytes!("../prebuilt/rawload.bpf.o");
const DEBUG: &[u8] = include_bytes!("../prebuilt/rawload-debug.bpf.o");
const LEGACY: &[u8] = include_bytes!("fixtures/seed_legacy.o");

#[test]
fn release_object_has_both_programs_and_btf_maps() {
    let obj = elf::parse(RELEASE).unwrap();
    assert_eq!(obj.license.to_str().unwrap(), "GPL");
    let sock_ops = obj.program(ProgType::SOCK_OPS).unwrap();
    let sk_msg = obj.program(ProgType::SK_MSG).unwrap();
    assert_eq!(
        (sock_ops.name.as_str(), sk_msg.name.as_str()),
        ("rawload_sockops", "rawload_sk_msg")
    );

    let socks = &obj.maps[obj.map_index("rawload_socks").unwrap()];
    assert_eq!(
        (
            socks.map_type,
            socks.key_size,
            socks.value_size,
            socks.max_entries
        ),
        (MapType::SOCKHASH, 48, 8, 65536)
    );
    assert_eq!(socks.origin, MapOrigin::Btf);

    // .rodata holds the two configuration globals; programs read them
    // through BPF_PSEUDO_MAP_VALUE references.
    let (rodata, var) = obj.global("cfg_netns_cookie").unwrap();
    assert_eq!(obj.maps[rodata].name, ".rodata");
    assert_eq!(var.size, 4);
    assert!(
        sock_ops
            .map_refs
            .iter()
            .any(|r| r.map == rodata && matches!(r.kind, RefKind::Value { .. }))
    );

    // Both programs reference the same SOCKHASH (one map, one fd).
    let socks_index = obj.map_index("rawload_socks").unwrap();
    for p in [sock_ops, sk_msg] {
        assert!(
            p.map_refs
                .iter()
                .any(|r| r.map == socks_index && r.kind == RefKind::Map)
        );
    }

    // sock_ops calls two .text functions, appended once each after it, and
    // each call's offset points at the start of its callee.
    let names: Vec<&str> = sock_ops.layout.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(
        names,
        ["rawload_sockops", "is_same_host", "ports_accelerated"]
    );
    for (i, insn) in sock_ops.insns.iter().enumerate() {
        if insn.is_pseudo_call() {
            let target = (i as i64 + 1 + insn.imm as i64) as usize;
            assert!(
                sock_ops.layout[1..].iter().any(|p| p.start == target),
                "call at {i} -> {target}"
            );
        }
    }
    // The callee's own map reference moved with it.
    let callee = &sock_ops.layout[1];
    let addrs = obj.map_index("rawload_addrs").unwrap();
    assert!(
        sock_ops.map_refs.iter().any(|r| r.map == addrs
            && r.insn >= callee.start
            && r.insn < callee.start + callee.len)
    );
}

#[test]
fn debug_object_references_format_strings_in_rodata() {
    let obj = elf::parse(DEBUG).unwrap();
    let sk_msg = obj.program(ProgType::SK_MSG).unwrap();
    let rodata = obj.maps.iter().position(|m| m.name == ".rodata").unwrap();
    // Format strings are reached through the section symbol plus an offset.
    let offsets: Vec<u32> = sk_msg
        .map_refs
        .iter()
        .filter(|r| r.map == rodata)
        .filter_map(|r| match r.kind {
            RefKind::Value { offset } => Some(offset),
            RefKind::Map => None,
        })
        .collect();
    assert!(offsets.iter().any(|&o| o > 8), "{offsets:?}");
    let MapOrigin::Data { init, .. } = &obj.maps[rodata].origin else {
        panic!()
    };
    let text = String::from_utf8_lossy(init);
    assert!(text.contains("rawload: redirect"), "{text}");
}

#[test]
fn legacy_maps_section_is_read() {
    let obj = elf::parse(LEGACY).unwrap();
    assert_eq!(obj.kern_version, 1);
    assert_eq!(obj.maps.len(), 1);
    let m = &obj.maps[0];
    assert_eq!(
        (
            m.name.as_str(),
            m.map_type,
            m.key_size,
            m.value_size,
            m.max_entries,
            &m.origin
        ),
        (
            "sock_ops_map",
            MapType::SOCKHASH,
            24,
            4,
            65535,
            &MapOrigin::Legacy
        )
    );
    let sk_msg = obj.program(ProgType::SK_MSG).unwrap();
    assert_eq!(sk_msg.section, "sk_msg/bypass");
    assert_eq!(sk_msg.name, "bpf_tcpip_bypass");
    // The .text helper is linked into both programs.
    for p in &obj.programs {
        assert_eq!(p.layout.len(), 2, "{} layout {:?}", p.name, p.layout);
        assert!(p.insns.iter().any(|i| i.is_pseudo_call()));
    }
}

// ---------------------------------------------------------------------------
// Broken copies. A tiny ELF64 section-header walker finds what to corrupt.

struct Shdr {
    offset: usize, // of the header itself
    sh_type: u32,
    sh_offset: usize,
    sh_size: usize,
    name: String,
}

fn u16_at(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes(b[o..o + 2].try_into().unwrap())
}
fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().unwrap())
}
fn u64_at(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().unwrap())
}

fn sections(b: &[u8]) -> Vec<Shdr> {
    let (shoff, shentsize, shnum, shstrndx) = (
        u64_at(b, 40) as usize,
        u16_at(b, 58) as usize,
        u16_at(b, 60) as usize,
        u16_at(b, 62) as usize,
    );
    let hdr = |i: usize| shoff + i * shentsize;
    let strtab = u64_at(b, hdr(shstrndx) + 24) as usize;
    (0..shnum)
        .map(|i| {
            let h = hdr(i);
            let name_off = strtab + u32_at(b, h) as usize;
            let end = b[name_off..].iter().position(|&c| c == 0).unwrap();
            Shdr {
                offset: h,
                sh_type: u32_at(b, h + 4),
                sh_offset: u64_at(b, h + 24) as usize,
                sh_size: u64_at(b, h + 32) as usize,
                name: String::from_utf8_lossy(&b[name_off..name_off + end]).into_owned(),
            }
        })
        .collect()
}

fn section<'a>(s: &'a [Shdr], name: &str) -> &'a Shdr {
    s.iter().find(|h| h.name == name).unwrap()
}

fn parse_error(bytes: &[u8]) -> Error {
    match elf::parse(bytes) {
        Ok(_) => panic!("a broken object parsed"),
        Err(e) => e,
    }
}

#[test]
fn truncated_objects_are_errors() {
    for len in [0, 3, 16, 64, LEGACY.len() / 2, LEGACY.len() - 1] {
        assert!(elf::parse(&LEGACY[..len]).is_err(), "truncated to {len}");
    }
}

#[test]
fn wrong_machine_is_an_error() {
    let mut b = LEGACY.to_vec();
    b[18..20].copy_from_slice(&62u16.to_le_bytes()); // EM_X86_64
    let e = parse_error(&b);
    assert!(
        matches!(e, Error::NotBpfObject(NotBpf::Machine(_))),
        "{e:?}"
    );
    assert!(
        e.to_string().contains("compile with clang -target bpf"),
        "{e}"
    );
}

#[test]
fn missing_symbol_table_is_an_error() {
    let mut b = LEGACY.to_vec();
    let symtab = sections(&b).into_iter().find(|s| s.sh_type == 2).unwrap();
    b[symtab.offset + 4..symtab.offset + 8].copy_from_slice(&0u32.to_le_bytes()); // SHT_NULL
    assert_eq!(parse_error(&b), Error::NotBpfObject(NotBpf::NoSymbolTable));
}

#[test]
fn relocation_to_a_missing_symbol_is_an_error() {
    let mut b = LEGACY.to_vec();
    let rel = section(&sections(&b), ".relsockops").sh_offset;
    // r_info = (symbol << 32) | type; point the first entry at symbol 9999.
    let r_info = (9999u64 << 32) | u64::from(u32_at(&b, rel + 8));
    b[rel + 8..rel + 16].copy_from_slice(&r_info.to_le_bytes());
    let e = parse_error(&b);
    assert!(
        matches!(
            e,
            Error::Relocation {
                problem: RelocProblem::MissingSymbol { index: 9999 },
                ..
            }
        ),
        "{e:?}"
    );
}

#[test]
fn relocations_on_wrong_instructions_are_errors() {
    let s = sections(LEGACY);
    let rel = section(&s, ".relsockops");
    let code = LEGACY[section(&s, "sockops").sh_offset];
    assert!(
        code != LD_IMM64 && code != CALL,
        "instruction 0 is {code:#x}"
    );
    // The first R_BPF_64_64 (a map load) and the first R_BPF_64_32 (a
    // call), each moved onto instruction 0. Elf64_Rel: r_offset, r_info.
    for (r_type, want) in [
        (1, RelocProblem::NotLdImm64 { code }),
        (10, RelocProblem::NotCall { code }),
    ] {
        let entry = (rel.sh_offset..rel.sh_offset + rel.sh_size)
            .step_by(16)
            .find(|&e| u32_at(LEGACY, e + 8) == r_type)
            .unwrap_or_else(|| panic!("no relocation of type {r_type}"));
        let mut b = LEGACY.to_vec();
        b[entry..entry + 8].copy_from_slice(&0u64.to_le_bytes());
        match parse_error(&b) {
            Error::Relocation {
                section,
                offset: 0,
                problem,
                ..
            } => assert_eq!((section.as_str(), problem), ("sockops", want)),
            e => panic!("{e:?}"),
        }
    }
}

#[test]
fn bad_map_definitions_are_errors() {
    let maps = section(&sections(LEGACY), "maps").sh_offset;
    let patch = |field: usize, value: u32| {
        let mut b = LEGACY.to_vec();
        b[maps + 4 * field..maps + 4 * field + 4].copy_from_slice(&value.to_le_bytes());
        b
    };
    let problem = |field: usize, value: u32| match parse_error(&patch(field, value)) {
        Error::InvalidMap { map, problem } if map == "sock_ops_map" => problem,
        e => panic!("{e:?}"),
    };
    assert_eq!(problem(0, 99), MapProblem::UnknownType(MapType(99)));
    assert!(matches!(problem(1, 0), MapProblem::KeySize { size: 0, .. }));
    assert!(matches!(
        problem(2, 0),
        MapProblem::ValueSize { size: 0, .. }
    ));
    assert_eq!(problem(2, 16), MapProblem::SocketValueSize(16));
    assert!(matches!(
        problem(3, 0),
        MapProblem::MaxEntries { entries: 0, .. }
    ));
    assert!(matches!(
        problem(3, u32::MAX),
        MapProblem::MaxEntries {
            entries: u32::MAX,
            ..
        }
    ));
}

#[test]
fn broken_btf_is_an_error() {
    let all = sections(RELEASE);
    let btf = section(&all, ".BTF");
    let mut b = RELEASE.to_vec();
    b[btf.sh_offset] ^= 0xff; // magic
    assert!(matches!(
        parse_error(&b),
        Error::Btf(BtfError::Magic { .. })
    ));
    let mut b = RELEASE.to_vec();
    // Make the type section claim to run past the end of .BTF.
    let type_len = btf.sh_offset + 12;
    b[type_len..type_len + 4].copy_from_slice(&(btf.sh_size as u32 * 2).to_le_bytes());
    assert_eq!(
        parse_error(&b),
        Error::Btf(BtfError::OutsideBlob { part: "type" })
    );
}

#[test]
fn btf_maps_without_btf_are_an_error_that_names_the_fix() {
    // Rename .BTF (and .rel.BTF, which may share its string) to .XTF.
    let mut b = RELEASE.to_vec();
    let all = sections(&b);
    let shstrtab = &all[u16_at(&b, 62) as usize];
    let names = shstrtab.sh_offset..shstrtab.sh_offset + shstrtab.sh_size;
    let hits: Vec<usize> = b[names.clone()]
        .windows(5)
        .enumerate()
        .filter(|(_, w)| *w == b".BTF\0")
        .map(|(i, _)| names.start + i)
        .collect();
    assert!(!hits.is_empty());
    for at in hits {
        b[at + 1] = b'X';
    }
    let e = parse_error(&b);
    assert_eq!(e, Error::MapSection(MapSectionProblem::NoBtf));
    assert!(e.to_string().contains("compile with clang -g"), "{e}");
}

#[test]
fn a_call_into_the_void_is_an_error() {
    let mut b = LEGACY.to_vec();
    let s = sections(&b);
    let text = section(&s, "sockops");
    let insns = Insn::decode_all(&b[text.sh_offset..text.sh_offset + text.sh_size]).unwrap();
    let call = insns.iter().position(|i| i.is_pseudo_call()).unwrap();
    let at = text.sh_offset + call * INSN_SIZE + 4;
    b[at..at + 4].copy_from_slice(&1000i32.to_le_bytes());
    let e = parse_error(&b);
    assert!(
        matches!(
            &e,
            Error::Relocation {
                problem: RelocProblem::CallTarget { target, .. },
                ..
            } if target == ".text"
        ),
        "{e:?}"
    );
}

#[test]
fn programs_and_globals_that_are_not_there_are_errors() {
    let mut obj = elf::parse(RELEASE).unwrap();
    assert_eq!(
        obj.program(ProgType::SOCKET_FILTER).unwrap_err(),
        Error::MissingProgram {
            prog_type: ProgType::SOCKET_FILTER,
            section: "?"
        }
    );
    let mut twice = obj.clone();
    let mut copy = twice.program(ProgType::SK_MSG).unwrap().clone();
    copy.name = "copy".into();
    twice.programs.push(copy);
    assert!(matches!(
        twice.optional_program(ProgType::SK_MSG),
        Err(Error::DuplicateProgram { second, .. }) if second == "copy"
    ));
    assert_eq!(
        obj.set_global("no_such_global", &[0]),
        Err(Error::Global {
            name: "no_such_global".into(),
            problem: GlobalProblem::NotFound
        })
    );
    assert_eq!(
        obj.set_global("cfg_netns_cookie", &[1]),
        Err(Error::Global {
            name: "cfg_netns_cookie".into(),
            problem: GlobalProblem::Size { size: 4, given: 1 }
        })
    );
}

#[test]
fn every_kind_of_global_data_becomes_a_map() {
    use rawload_loader::sys::BPF_F_RDONLY_PROG;
    let obj = elf::parse(include_bytes!("fixtures/globals.o")).unwrap();
    let data = |name: &str| {
        let m = &obj.maps[obj
            .map_index(name)
            .unwrap_or_else(|| panic!("no map {name}"))];
        let MapOrigin::Data { init, .. } = &m.origin else {
            panic!("{name} is not data")
        };
        (
            m.map_type,
            m.key_size,
            m.value_size,
            m.max_entries,
            m.flags,
            init.clone(),
        )
    };
    assert_eq!(data(".bss"), (MapType::ARRAY, 4, 8, 1, 0, vec![0; 8]));
    assert_eq!(
        data(".data"),
        (MapType::ARRAY, 4, 8, 1, 0, 7u64.to_le_bytes().to_vec())
    );
    assert_eq!(data(".rodata").4, BPF_F_RDONLY_PROG);
    let (.., init) = data(".rodata.str1.1");
    assert_eq!(&init[..], b"globals: miss\n\0");
    assert_eq!(obj.global("enabled").unwrap().1.size, 4);
    assert_eq!(obj.global("inserted").unwrap().1.offset, 0);
}
