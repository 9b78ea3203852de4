//! Any bytes as a .BTF section: parsing and every query the loader makes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(btf) = rawload::btf::Btf::parse(data) else {
        return;
    };
    let _ = btf.datasec(".maps");
    let _ = btf.struct_members("counters");
    for id in 0..64 {
        let _ = btf.resolve_size(id);
        let _ = btf.skip_mods(id);
    }
});
