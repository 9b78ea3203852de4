//! Several objects combined into one set (`rawload_obj::combine`) on the
//! committed seed fixtures: maps shared by name, references renumbered,
//! global data per object, and every disagreement refused with both
//! objects named. No kernel involved: these run anywhere, without root.

use std::ffi::CString;

use rawload_obj::combine::{Combined, combine};
use rawload_obj::elf;
use rawload_obj::error::{CombineProblem, Error};
use rawload_obj::obj::{MapOrigin, Object, RefKind};
use rawload_obj::uapi::{MapType, ProgType};

const SOCKOPS: &[u8] = include_bytes!("fixtures/seed_sockops.o");
const REDIR: &[u8] = include_bytes!("fixtures/seed_redir.o");
const REDIR_BTF: &[u8] = include_bytes!("fixtures/seed_redir_btf.o");
const REDIR_SMALL: &[u8] = include_bytes!("fixtures/seed_redir_small.o");
const LEGACY: &[u8] = include_bytes!("fixtures/seed_legacy.o");
const GLOBALS: &[u8] = include_bytes!("fixtures/globals.o");

fn named(name: &str, bytes: &[u8]) -> (String, Object) {
    (name.to_string(), elf::parse(bytes).unwrap())
}

fn seeds(redir: &[u8], redir_name: &str) -> Result<Combined, Error> {
    combine(vec![
        named("seed_sockops.o", SOCKOPS),
        named(redir_name, redir),
    ])
}

/// The combined object's one socket map, and where each program's
/// reference to it points.
fn assert_one_shared_socket_map(set: &Combined) {
    let obj = &set.object;
    assert_eq!(obj.maps.len(), 1, "{:?}", obj.maps);
    let map = &obj.maps[0];
    assert_eq!(
        (
            map.name.as_str(),
            map.map_type,
            map.key_size,
            map.value_size
        ),
        ("sock_ops_map", MapType::SOCKHASH, 24, 4)
    );
    for prog_type in [ProgType::SOCK_OPS, ProgType::SK_MSG] {
        let refs = &obj.program(prog_type).unwrap().map_refs;
        assert!(
            refs.iter().all(|r| r.map == 0 && r.kind == RefKind::Map),
            "{prog_type:?}: {refs:?}"
        );
    }
    assert_eq!(set.declared_by(0).len(), 2);
    assert!(set.inputs.iter().all(|i| i.maps == [0]));
}

#[test]
fn the_seeds_two_objects_share_sock_ops_map() {
    let set = seeds(REDIR, "seed_redir.o").unwrap();
    assert_one_shared_socket_map(&set);
    assert_eq!(set.object.maps[0].origin, MapOrigin::Legacy);
    assert_eq!(set.object.programs.len(), 2);
    assert_eq!(set.object.license.to_str().unwrap(), "GPL");
}

#[test]
fn a_legacy_and_a_btf_definition_of_one_shape_are_one_map() {
    let set = seeds(REDIR_BTF, "seed_redir_btf.o").unwrap();
    assert_one_shared_socket_map(&set);
    // The first object's definition is the one created.
    assert_eq!(set.object.maps[0].origin, MapOrigin::Legacy);
    assert_eq!(set.declared_by(0), ["seed_sockops.o", "seed_redir_btf.o"]);
}

#[test]
fn one_object_comes_back_unchanged() {
    let alone = elf::parse(LEGACY).unwrap();
    let set = combine(vec![named("seed_legacy.o", LEGACY)]).unwrap();
    assert_eq!(set.object.maps, alone.maps);
    assert_eq!(set.object.sections, alone.sections);
    assert!(set.object.btf.is_some(), "a single object keeps its BTF");
    assert_eq!(set.inputs[0].maps, [0]);
}

#[test]
fn differing_definitions_are_refused_naming_both_objects_and_the_field() {
    let e = seeds(REDIR_SMALL, "seed_redir_small.o").unwrap_err();
    assert_eq!(
        e,
        Error::Combine {
            first: "seed_sockops.o".into(),
            second: "seed_redir_small.o".into(),
            problem: CombineProblem::MapDiffers {
                map: "sock_ops_map".into(),
                field: "max_entries",
                first: 65535,
                second: 1024,
            },
        }
    );
    assert_eq!(
        e.to_string(),
        "map 'sock_ops_map' is declared in seed_sockops.o with max_entries 65535 and in \
         seed_redir_small.o with max_entries 1024; a map shared by name must be declared the same in every object"
    );
}

#[test]
fn two_programs_of_one_type_are_refused() {
    let e = seeds(LEGACY, "seed_legacy.o").unwrap_err();
    assert_eq!(
        e.to_string(),
        "seed_sockops.o and seed_legacy.o both have a sock_ops program; rawload loads one of each type, so leave one of them out"
    );
}

#[test]
fn different_licenses_are_refused() {
    let (name, mut redir) = named("seed_redir.o", REDIR);
    redir.license = CString::new("Proprietary").unwrap();
    let e = combine(vec![named("seed_sockops.o", SOCKOPS), (name, redir)]).unwrap_err();
    assert!(
        matches!(&e, Error::Combine { problem: CombineProblem::License { second, .. }, .. } if second == "Proprietary"),
        "{e}"
    );
}

/// globals.o split in two: `a.o` keeps the sock_ops program, `b.o` the
/// sk_msg one; both declare `pairs` and every data section.
fn split_globals(rename_b: bool) -> Vec<(String, Object)> {
    let (_, mut a) = named("a.o", GLOBALS);
    let mut b = a.clone();
    a.programs
        .retain(|p| p.kind.prog_type == ProgType::SOCK_OPS);
    b.programs.retain(|p| p.kind.prog_type == ProgType::SK_MSG);
    if rename_b {
        for g in b.maps.iter_mut().flat_map(|m| m.globals.iter_mut()) {
            g.name = format!("b_{}", g.name);
        }
    }
    vec![("a.o".into(), a), ("b.bpf.o".into(), b)]
}

#[test]
fn global_data_is_per_object_and_named_after_it() {
    let set = combine(split_globals(true)).unwrap();
    let obj = &set.object;
    for name in ["a.bss", "a.data", "a.rodata", "b.bss", "b.data", "b.rodata"] {
        assert!(
            obj.map_index(name).is_some(),
            "no map {name}: {:?}",
            obj.maps
        );
    }
    let pairs = obj.map_index("pairs").unwrap();
    assert_eq!(set.declared_by(pairs).len(), 2, "the socket map is shared");
    // Each program's global-data references land on its own object's maps.
    for (prog_type, prefix) in [(ProgType::SOCK_OPS, "a."), (ProgType::SK_MSG, "b.")] {
        for r in &obj.program(prog_type).unwrap().map_refs {
            let name = &obj.maps[r.map].name;
            assert!(
                r.map == pairs || name.starts_with(prefix),
                "{prog_type:?} refers to {name}"
            );
        }
    }
    assert!(obj.global("b_inserted").is_some() && obj.global("inserted").is_some());
}

#[test]
fn a_global_defined_in_two_objects_is_refused() {
    let e = combine(split_globals(false)).unwrap_err();
    assert!(
        matches!(&e, Error::Combine { problem: CombineProblem::Global { .. }, first, .. } if first == "a.o"),
        "{e}"
    );
}
