//! rawload's disassembler against `llvm-objdump-14 -d`, instruction by
//! instruction, on every committed object. No kernel involved: runs anywhere,
//! without root, but needs llvm-objdump-14 (`make test-deps` installs it).

use std::path::{Path, PathBuf};
use std::process::Command;

use rawload_obj::disasm::disassemble;
use rawload_obj::insn::Insn;

/// One instruction line of llvm's listing: `  index:\tbytes\ttext`.
struct LlvmLine {
    index: usize,
    bytes: Vec<u8>,
    text: String,
}

/// The instruction lines of `llvm-objdump-14 -d`, one list per section.
fn llvm_listing(object: &Path) -> Vec<(String, Vec<LlvmLine>)> {
    let out = Command::new("llvm-objdump-14")
        .arg("-d")
        .arg(object)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run llvm-objdump-14 ({e}): install it with `make test-deps` (Debian package llvm-14)")
        });
    assert!(
        out.status.success(),
        "llvm-objdump-14 -d {} failed: {}",
        object.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let mut sections: Vec<(String, Vec<LlvmLine>)> = Vec::new();
    for line in String::from_utf8(out.stdout).unwrap().lines() {
        if let Some(name) = line.strip_prefix("Disassembly of section ") {
            sections.push((name.trim_end_matches(':').to_string(), Vec::new()));
            continue;
        }
        // Instruction lines are the only ones that start with a space; the
        // text may hold a tab itself (`ld_pseudo\tr1, 1, 5`).
        if !line.starts_with(' ') {
            continue;
        }
        let mut fields = line.splitn(3, '\t');
        let (Some(index), Some(hex), Some(text)) = (fields.next(), fields.next(), fields.next())
        else {
            panic!("not an instruction line: {line:?}");
        };
        let index = index.trim().trim_end_matches(':');
        // Jump targets carry a label: `goto +8 <LBB0_4>`.
        let text = match text.rfind(" <") {
            Some(at) if text.ends_with('>') => &text[..at],
            _ => text,
        };
        let bytes = hex
            .split(' ')
            .map(|b| u8::from_str_radix(b, 16).unwrap_or_else(|_| panic!("bad byte in {line:?}")))
            .collect();
        sections
            .last_mut()
            .unwrap_or_else(|| panic!("instruction before any section: {line:?}"))
            .1
            .push(LlvmLine {
                index: index
                    .parse()
                    .unwrap_or_else(|_| panic!("bad index in {line:?}")),
                bytes,
                text: text.to_string(),
            });
    }
    sections
}

fn objects() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut objects: Vec<PathBuf> = ["prebuilt", "tests/fixtures"]
        .iter()
        .flat_map(|dir| std::fs::read_dir(root.join(dir)).unwrap())
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "o"))
        .collect();
    objects.sort();
    assert!(
        objects.len() >= 2,
        "no objects found under {}",
        root.display()
    );
    objects
}

#[test]
fn every_instruction_reads_as_llvm_objdump_14_prints_it() {
    let mut compared = 0;
    for object in objects() {
        let sections = llvm_listing(&object);
        assert!(!sections.is_empty(), "{}: no code", object.display());
        for (section, llvm) in sections {
            let what = format!("{} section {section}", object.display());
            // The bytes come from llvm's hex column: no relocation applied.
            let bytes: Vec<u8> = llvm.iter().flat_map(|l| l.bytes.clone()).collect();
            let insns = Insn::decode_all(&bytes)
                .unwrap_or_else(|| panic!("{what}: {} bytes, not whole slots", bytes.len()));
            let ours = disassemble(&insns);
            for (ours, llvm) in ours.iter().zip(&llvm) {
                assert_eq!(
                    (ours.index, &ours.bytes, &ours.text),
                    (llvm.index, &llvm.bytes, &llvm.text),
                    "{what}: instruction {} differs\n ours: {ours}",
                    llvm.index
                );
            }
            assert_eq!(ours.len(), llvm.len(), "{what}: line count");
            compared += ours.len();
        }
    }
    println!("compared {compared} instructions with llvm-objdump-14");
    assert!(compared > 0);
}
