//! The ELF reader on the committed objects and on broken copies of them.
//! No kernel involved: these run anywhere, without root.

use rawload_obj::elf;
use rawload_obj::insn::{INSN_SIZE, Insn, PSEUDO_CALL};
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

fn expect_error(bytes: &[u8], needle: &str) {
    match elf::parse(bytes) {
        Ok(_) => panic!("a broken object parsed (expected {needle:?})"),
        Err(e) => {
            let msg = format!("{e:#}");
            assert!(msg.contains(needle), "expected {needle:?} in {msg:?}");
        }
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
    expect_error(&b, "not BPF");
}

#[test]
fn missing_symbol_table_is_an_error() {
    let mut b = LEGACY.to_vec();
    let symtab = sections(&b).into_iter().find(|s| s.sh_type == 2).unwrap();
    b[symtab.offset + 4..symtab.offset + 8].copy_from_slice(&0u32.to_le_bytes()); // SHT_NULL
    expect_error(&b, "no symbol table");
}

#[test]
fn relocation_to_a_missing_symbol_is_an_error() {
    let mut b = LEGACY.to_vec();
    let rel = section(&sections(&b), ".relsockops").sh_offset;
    // r_info = (symbol << 32) | type; point the first entry at symbol 9999.
    let r_info = (9999u64 << 32) | u64::from(u32_at(&b, rel + 8));
    b[rel + 8..rel + 16].copy_from_slice(&r_info.to_le_bytes());
    assert!(elf::parse(&b).is_err());
}

#[test]
fn relocation_on_a_wrong_instruction_is_an_error() {
    let mut b = LEGACY.to_vec();
    let s = sections(&b);
    let rel = section(&s, ".relsockops").sh_offset;
    // Move the first relocation onto instruction 0, which is no ld_imm64.
    b[rel..rel + 8].copy_from_slice(&0u64.to_le_bytes());
    let first = Insn::from_bytes(
        &b[section(&s, "sockops").sh_offset..][..INSN_SIZE]
            .try_into()
            .unwrap(),
    );
    assert!(!first.is_ld_imm64());
    expect_error(&b, "relocation at sockops+0x0 is on instruction 0x");
}

#[test]
fn bad_map_definitions_are_errors() {
    let maps = section(&sections(LEGACY), "maps").sh_offset;
    let patch = |field: usize, value: u32| {
        let mut b = LEGACY.to_vec();
        b[maps + 4 * field..maps + 4 * field + 4].copy_from_slice(&value.to_le_bytes());
        b
    };
    expect_error(&patch(0, 99), "type 99");
    expect_error(&patch(1, 0), "key size 0");
    expect_error(&patch(2, 0), "value size 0");
    expect_error(&patch(2, 16), "4- or 8-byte value");
    expect_error(&patch(3, 0), "max_entries 0");
    expect_error(&patch(3, u32::MAX), "max_entries");
}

#[test]
fn broken_btf_is_an_error() {
    let all = sections(RELEASE);
    let btf = section(&all, ".BTF");
    let mut b = RELEASE.to_vec();
    b[btf.sh_offset] ^= 0xff; // magic
    expect_error(&b, "BTF");
    let mut b = RELEASE.to_vec();
    // Make the type section claim to run past the end of .BTF.
    let type_len = btf.sh_offset + 12;
    b[type_len..type_len + 4].copy_from_slice(&(btf.sh_size as u32 * 2).to_le_bytes());
    expect_error(&b, "BTF");
}

#[test]
fn a_call_into_the_void_is_an_error() {
    let mut b = LEGACY.to_vec();
    let s = sections(&b);
    let text = section(&s, "sockops");
    let insns = Insn::decode_all(&b[text.sh_offset..text.sh_offset + text.sh_size]).unwrap();
    let call = insns
        .iter()
        .position(|i| i.code == 0x85 && i.src() == PSEUDO_CALL)
        .unwrap();
    let at = text.sh_offset + call * INSN_SIZE + 4;
    b[at..at + 4].copy_from_slice(&1000i32.to_le_bytes());
    expect_error(&b, "not the start of a function");
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
