//! The syscall layer against the real kernel: map element commands,
//! program listing and introspection.

mod common;

use std::os::fd::AsFd;

use rawload_loader::programs::Program;
use rawload_loader::sys::{self, BPF_ANY, BPF_NOEXIST, MapCreateArgs, MapFd};
use rawload_obj::insn::Insn;
use rawload_obj::obj::PROGRAM_KINDS;
use rawload_obj::uapi::{MapType, ProgType};

#[test]
fn hash_map_element_commands() {
    common::require_root();
    let map = MapFd::create(&MapCreateArgs {
        map_type: MapType::HASH,
        key_size: 4,
        value_size: 8,
        max_entries: 8,
        flags: 0,
        name: "rawload_test",
    })
    .unwrap();
    assert_eq!(map.meta().name, "rawload_test");
    let mut value = [0u8; 8];
    assert!(!map.lookup(&1u32.to_ne_bytes(), &mut value).unwrap());
    for k in 1..=3u32 {
        map.update(
            &k.to_ne_bytes(),
            &(k as u64 * 10).to_ne_bytes(),
            BPF_NOEXIST,
        )
        .unwrap();
    }
    let dup = map
        .update(&1u32.to_ne_bytes(), &[0; 8], BPF_NOEXIST)
        .unwrap_err();
    assert_eq!(dup.errno, nix::errno::Errno::EEXIST);
    assert_eq!(
        dup.to_string(),
        "BPF_MAP_UPDATE_ELEM failed: EEXIST: File exists"
    );
    map.update(&1u32.to_ne_bytes(), &11u64.to_ne_bytes(), BPF_ANY)
        .unwrap();
    assert!(map.lookup(&1u32.to_ne_bytes(), &mut value).unwrap());
    assert_eq!(u64::from_ne_bytes(value), 11);

    let mut keys = Vec::new();
    let mut next = [0u8; 4];
    let mut prev: Option<[u8; 4]> = None;
    while map
        .next_key(prev.as_ref().map(|k| &k[..]), &mut next)
        .unwrap()
    {
        keys.push(u32::from_ne_bytes(next));
        prev = Some(next);
    }
    keys.sort();
    assert_eq!(keys, [1, 2, 3]);

    assert!(map.delete(&2u32.to_ne_bytes()).unwrap());
    assert!(!map.delete(&2u32.to_ne_bytes()).unwrap());
    // Wrong buffer sizes are refused before the kernel could overrun them.
    assert!(map.lookup(&1u64.to_ne_bytes(), &mut value).is_err());
    assert!(map.lookup(&1u32.to_ne_bytes(), &mut [0u8; 4]).is_err());
}

#[test]
fn per_cpu_values_are_one_slot_per_possible_cpu() {
    common::require_root();
    let map = MapFd::create(&MapCreateArgs {
        map_type: MapType::PERCPU_ARRAY,
        key_size: 4,
        value_size: 12,
        max_entries: 1,
        flags: 0,
        name: "rawload_test",
    })
    .unwrap();
    assert_eq!(map.value_buf_len(), 16 * sys::possible_cpus());
}

#[test]
fn loaded_programs_are_listed_and_described() {
    common::require_root();
    let insns = [Insn::mov64_imm(0, 1), Insn::exit()];
    let prog = Program::load("rawload_test", PROGRAM_KINDS[1], &insns, c"GPL", 0).unwrap();
    let (info, map_ids) = sys::prog_info(prog.as_fd()).unwrap();
    assert_eq!(sys::cstr_field(&info.name), "rawload_test");
    assert_eq!(ProgType(info.prog_type), ProgType::SK_MSG);
    assert!(map_ids.is_empty());

    let mut ids = Vec::new();
    let mut id = 0;
    while let Some(next) = sys::prog_next_id(id).unwrap() {
        ids.push(next);
        id = next;
    }
    assert!(ids.contains(&info.id), "{ids:?} lacks {}", info.id);
    let again = sys::prog_fd_by_id(info.id)
        .unwrap()
        .expect("the program exists");
    assert_eq!(sys::prog_info(again.as_fd()).unwrap().0.id, info.id);
}
