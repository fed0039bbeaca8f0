//! Replays every committed fuzz input through the entry points the fuzz targets call, on
//! the stable toolchain: the minimised corpus (`fuzz/corpus/<target>/`) and the crash
//! reproducers (`fuzz/regressions/<target>/`). No input may panic, and every rejection
//! must be clean (say what is wrong; for the exchange files, name the file).

use std::path::{Path, PathBuf};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The files of `dir`, sorted; none when it does not exist.
fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut files: Vec<PathBuf> =
        entries.map(|e| e.expect("a readable directory entry").path()).filter(|p| p.is_file()).collect();
    files.sort();
    files
}

/// Runs every input of `kind/<target>/` through its entry point; returns how many ran.
fn replay(kind: &str) -> usize {
    let mut ran = 0;
    let mut failures = Vec::new();
    for &(target, entry) in twinflow_fuzz_entry::TARGETS {
        for file in files(&fuzz_dir().join(kind).join(target)) {
            let data = std::fs::read(&file).expect("a readable fuzz input");
            match std::panic::catch_unwind(|| entry(&data)) {
                Ok(Ok(())) => {}
                Ok(Err(r)) if r.clean => {}
                Ok(Err(r)) => failures.push(format!("{}: unclean rejection: {}", file.display(), r.message)),
                Err(_) => failures.push(format!("{}: panicked", file.display())),
            }
            ran += 1;
        }
    }
    assert!(failures.is_empty(), "{} of {ran} inputs failed:\n{}", failures.len(), failures.join("\n"));
    ran
}

#[test]
fn the_whole_corpus_replays_without_a_panic() {
    let ran = replay("corpus");
    // Every target has a committed corpus: an empty or missing one would make this test
    // pass without testing anything.
    for (target, _) in twinflow_fuzz_entry::TARGETS {
        assert!(
            !files(&fuzz_dir().join("corpus").join(target)).is_empty(),
            "fuzz/corpus/{target}/ is empty or missing"
        );
    }
    assert!(ran > 0);
}

#[test]
fn every_crash_reproducer_is_fixed() {
    replay("regressions");
}
