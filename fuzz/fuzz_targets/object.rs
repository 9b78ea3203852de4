//! Any bytes through the whole parse-and-relocate path: ELF reading, legacy
//! and BTF maps, global data, call linking, map fd patching, global setters.
//! Malformed input must be an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(mut obj) = rawload::elf::parse(data) else {
        return;
    };
    let fds: Vec<Option<i32>> = (0..obj.maps.len() as i32).map(|fd| Some(fd + 3)).collect();
    for prog in &obj.programs {
        let _ = rawload::reloc::apply(prog, &fds);
    }
    for kind in rawload::obj::PROGRAM_KINDS {
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
});
