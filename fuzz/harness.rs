//! What each fuzz target does with its input, shared by the libFuzzer
//! targets (fuzz_targets/) and their stable-toolchain replay
//! (tests/fuzz_regressions.rs), so that both exercise the same code.
//! Each returns whether the input parsed, for the replay's statistics.

/// Any bytes through the whole parse-and-relocate path: ELF reading, legacy
/// and BTF maps, global data, call linking, map fd patching, global setters.
pub fn object(data: &[u8]) -> bool {
    let Ok(mut obj) = rawload_obj::elf::parse(data) else {
        return false;
    };
    let fds: Vec<i32> = (0..obj.maps.len() as i32).map(|fd| fd + 3).collect();
    for prog in &obj.programs {
        let _ = rawload_obj::reloc::apply(prog, &fds);
    }
    for kind in rawload_obj::obj::PROGRAM_KINDS {
        let _ = obj.program(kind.prog_type);
    }
    let globals: Vec<(String, usize)> = obj
        .maps
        .iter()
        .flat_map(|m| m.globals.iter().map(|g| (g.name.clone(), g.size)))
        .collect();
    for (name, size) in globals {
        let _ = obj.set_global(&name, &vec![0xa5; size]);
        let _ = obj.set_global(&name, &[1]);
    }
    true
}

/// Any bytes as a .BTF section: parsing and every query the loader makes.
pub fn btf(data: &[u8]) -> bool {
    let Ok(btf) = rawload_obj::btf::Btf::parse(data) else {
        return false;
    };
    let _ = btf.datasec(".maps");
    let _ = btf.struct_members("counters");
    for id in 0..64 {
        let _ = btf.resolve_size(id);
        let _ = btf.skip_mods(id);
    }
    true
}
