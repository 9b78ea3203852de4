//! Replays, on the stable toolchain, what the fuzz targets must keep
//! handling (fuzz/README.md):
//!
//! - `fuzz/regressions/<target>/`: every input a fuzzer ever crashed on, and
//!   hand-made malformed inputs, one per bounds check of the readers (after a
//!   fix an input must be an error or a valid object, never a panic);
//! - `fuzz/replay/<target>.tar.xz`: the fuzzing corpus minimized to one input
//!   per coverage feature (`cargo fuzz cmin`, refreshed by `make fuzz`), so
//!   every path the fuzzer reached is taken again by `make test`.
//!
//! Each input goes through the same harness the fuzz targets run
//! (fuzz/harness.rs). Both sets must be there and hold inputs: a missing
//! directory or archive fails the test instead of replaying nothing.

#[path = "../fuzz/harness.rs"]
mod harness;

use std::path::{Path, PathBuf};
use std::process::Command;

const FUZZ: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz");

/// A scratch directory, removed on drop.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The files in `dir`, by name; fails the test when `dir` cannot be read.
fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let entries = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e} (fuzz/README.md)", dir.display()));
    let mut out: Vec<(String, Vec<u8>)> = entries
        .map(|e| {
            let path = e.unwrap().path();
            (path.display().to_string(), std::fs::read(&path).unwrap())
        })
        .collect();
    out.sort();
    out
}

/// The regressions of `target` and its minimized corpus, unpacked, and how
/// many of each.
fn inputs(target: &str) -> (Vec<(String, Vec<u8>)>, usize, usize) {
    let scratch = Scratch(
        std::env::temp_dir().join(format!("rawload-replay-{target}-{}", std::process::id())),
    );
    std::fs::create_dir_all(&scratch.0).unwrap();
    let archive = format!("{FUZZ}/replay/{target}.tar.xz");
    let out = Command::new("tar")
        .args(["-xJf", &archive, "-C"])
        .arg(&scratch.0)
        .output()
        .expect("running tar (Debian's tar and xz-utils)");
    assert!(
        out.status.success(),
        "unpacking {archive}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let corpus = files(&scratch.0);
    let corpus_len = corpus.len();
    let mut all = files(&Path::new(FUZZ).join("regressions").join(target));
    let regressions = all.len();
    all.extend(corpus);
    (all, regressions, corpus_len)
}

/// Runs every input of `target` through `run`; no input may panic, and the
/// corpus must hold both inputs that parse and inputs that are refused.
fn replay(target: &str, min_corpus: usize, run: fn(&[u8]) -> bool) {
    let (inputs, regressions, corpus_len) = inputs(target);
    assert!(
        regressions > 0,
        "fuzz/regressions/{target}/ holds no inputs: it must keep at least the hand-made ones \
         (fuzz/README.md)"
    );
    assert!(
        corpus_len >= min_corpus,
        "fuzz/replay/{target}.tar.xz holds {corpus_len} inputs, expected at least {min_corpus}"
    );
    let (mut parsed, mut panicked) = (0, Vec::new());
    for (name, data) in &inputs {
        match std::panic::catch_unwind(|| run(data)) {
            Ok(ok) => parsed += usize::from(ok),
            Err(_) => panicked.push(name.clone()),
        }
    }
    eprintln!(
        "{target}: {} inputs replayed ({regressions} regressions, {corpus_len} from the corpus), \
         {parsed} parsed, {} refused",
        inputs.len(),
        inputs.len() - parsed - panicked.len()
    );
    assert!(panicked.is_empty(), "these inputs panic: {panicked:?}");
    assert!(
        parsed > 0 && parsed < inputs.len(),
        "a useful corpus has inputs that parse and inputs that are refused ({parsed} of {} parsed)",
        inputs.len()
    );
}

#[test]
fn object_inputs_do_not_panic() {
    replay("object", 100, harness::object);
}

#[test]
fn btf_inputs_do_not_panic() {
    replay("btf", 50, harness::btf);
}
