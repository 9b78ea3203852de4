//! Replays every input the fuzzers ever crashed on (fuzz/regressions/),
//! on the stable toolchain: each must now be an error or a valid object,
//! never a panic.

use std::path::Path;

fn inputs(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/regressions")
        .join(target);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    entries
        .map(|e| {
            let path = e.unwrap().path();
            (path.display().to_string(), std::fs::read(&path).unwrap())
        })
        .collect()
}

#[test]
fn object_regressions_do_not_panic() {
    for (name, data) in inputs("object") {
        let result = std::panic::catch_unwind(|| {
            if let Ok(obj) = rawload::elf::parse(&data) {
                let fds: Vec<Option<i32>> =
                    (0..obj.maps.len() as i32).map(|fd| Some(fd + 3)).collect();
                for prog in &obj.programs {
                    let _ = rawload::reloc::apply(prog, &fds);
                }
            }
        });
        assert!(result.is_ok(), "{name} panics again");
    }
}

#[test]
fn btf_regressions_do_not_panic() {
    for (name, data) in inputs("btf") {
        let result = std::panic::catch_unwind(|| {
            if let Ok(btf) = rawload::btf::Btf::parse(&data) {
                for id in 0..64 {
                    let _ = btf.resolve_size(id);
                }
            }
        });
        assert!(result.is_ok(), "{name} panics again");
    }
}
