//! The invalid-workflow corpus: every `tests/fixtures/invalid/*.yaml` must be rejected by
//! `twinflow validate` with exit code 2, a `file:line:col` diagnostic and no panic, and its
//! diagnostics are pinned by an `insta` snapshot in `tests/fixtures/invalid/snapshots/`.
//!
//! Adding a case = adding a file (first line: a comment saying what is wrong), then
//! `INSTA_UPDATE=always cargo test -p twinflow-cli --test e2e invalid` and reading the new
//! `.snap` file.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{repo_root, twinflow_bin};

/// Fixture directory, relative to the repository root.
const DIR: &str = "tests/fixtures/invalid";
/// Fewer fixtures than this means cases were lost.
const MIN_FIXTURES: usize = 30;
/// One `validate` must finish well within this (alias bombs must not hang).
const PER_FIXTURE_LIMIT: Duration = Duration::from_secs(5);
/// Kill a `validate` that runs this long.
const KILL_AFTER: Duration = Duration::from_secs(20);

/// The cases: `tests/fixtures/invalid/*.yaml`, sorted (helpers live in subdirectories).
fn fixtures() -> Vec<PathBuf> {
    let dir = repo_root().join(DIR);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    files
}

/// Every YAML file of the corpus, helpers included.
fn all_yaml_files() -> Vec<PathBuf> {
    let mut files = fixtures();
    if let Ok(rd) = std::fs::read_dir(repo_root().join(DIR).join("imports")) {
        files.extend(rd.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "yaml")));
    }
    files.sort();
    files
}

fn case_name(p: &Path) -> String {
    p.file_stem().expect("file name").to_string_lossy().into_owned()
}

/// The leading `# ...` line of a fixture, without the `#`.
fn leading_comment(p: &Path) -> Option<String> {
    let text = std::fs::read_to_string(p).ok()?;
    let first = text.lines().next()?;
    let c = first.strip_prefix('#')?.trim();
    (!c.is_empty()).then(|| c.to_string())
}

struct Outcome {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    elapsed: Duration,
}

/// Runs `twinflow validate DIR/NAME.yaml` from the repository root, killing it after
/// [`KILL_AFTER`].
fn validate(rel: &str) -> Outcome {
    let start = Instant::now();
    let mut child = Command::new(twinflow_bin())
        .current_dir(repo_root())
        .args(["validate", rel])
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG")
        .env_remove("RUST_BACKTRACE")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn twinflow");
    // Drain both pipes on threads so a chatty child cannot block on a full pipe.
    let mut out_pipe = child.stdout.take().expect("stdout");
    let mut err_pipe = child.stderr.take().expect("stderr");
    let out_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out_pipe.read_to_string(&mut s);
        s
    });
    let err_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err_pipe.read_to_string(&mut s);
        s
    });
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait for twinflow") {
            break Some(st);
        }
        if start.elapsed() > KILL_AFTER {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let elapsed = start.elapsed();
    Outcome {
        code: status.and_then(|s| s.code()),
        stdout: out_t.join().unwrap_or_default(),
        stderr: err_t.join().unwrap_or_default(),
        elapsed,
    }
}

/// `file:line:col` locations of the `error: FILE:LINE:COL: message` lines.
fn error_locations(stderr: &str) -> Vec<(String, usize, usize)> {
    stderr
        .lines()
        .filter_map(|l| l.strip_prefix("error: "))
        .filter_map(|rest| {
            let (loc, _) = rest.split_once(": ")?;
            let mut parts = loc.rsplitn(3, ':');
            let col = parts.next()?.parse().ok()?;
            let line = parts.next()?.parse().ok()?;
            Some((parts.next()?.to_string(), line, col))
        })
        .collect()
}

/// Escapes regex metacharacters (for the path filter).
fn regex_escape(s: &str) -> String {
    s.chars().fold(String::new(), |mut out, c| {
        if "\\.+*?()|[]{}^$#&-~".contains(c) {
            out.push('\\');
        }
        out.push(c);
        out
    })
}

#[test]
fn every_invalid_fixture_is_rejected_with_a_located_diagnostic() {
    let root = repo_root();
    let root_pattern = regex_escape(&root.display().to_string());
    for path in fixtures() {
        let name = case_name(&path);
        let rel = format!("{DIR}/{name}.yaml");
        let out = validate(&rel);
        let show = || format!("--- stdout:\n{}--- stderr:\n{}", out.stdout, out.stderr);

        assert!(out.code.is_some(), "{rel}: `twinflow validate` was killed after {KILL_AFTER:?}\n{}", show());
        assert!(!out.stderr.contains("panicked"), "{rel}: twinflow panicked\n{}", show());
        assert_eq!(out.code, Some(2), "{rel}: expected exit code 2 (invalid workflow)\n{}", show());
        assert!(
            out.elapsed < PER_FIXTURE_LIMIT,
            "{rel}: validation took {:?} (limit {PER_FIXTURE_LIMIT:?})",
            out.elapsed
        );
        let locations = error_locations(&out.stderr);
        assert!(!locations.is_empty(), "{rel}: no `error: FILE:LINE:COL:` line\n{}", show());
        for (file, line, col) in &locations {
            assert!(
                file.starts_with(DIR) && file.ends_with(".yaml") && *line >= 1 && *col >= 1,
                "{rel}: bad location `{file}:{line}:{col}`\n{}",
                show()
            );
        }
        assert!(out.stderr.contains(&rel), "{rel}: stderr does not name the file\n{}", show());

        insta::with_settings!({
            snapshot_path => "../fixtures/invalid/snapshots",
            prepend_module_to_snapshot => false,
            omit_expression => true,
            description => leading_comment(&path).unwrap_or_default(),
            filters => vec![(root_pattern.as_str(), "[ROOT]")],
        }, {
            insta::assert_snapshot!(name.as_str(), out.stderr);
        });
    }
}

#[test]
fn every_fixture_starts_with_a_comment_saying_what_is_wrong() {
    let missing: Vec<String> =
        all_yaml_files().iter().filter(|p| leading_comment(p).is_none()).map(|p| p.display().to_string()).collect();
    assert!(missing.is_empty(), "fixtures without a leading `# what is wrong` comment:\n{}", missing.join("\n"));
}

#[test]
fn the_corpus_has_enough_cases() {
    let n = fixtures().len();
    assert!(n >= MIN_FIXTURES, "only {n} invalid fixtures in {DIR}; expected at least {MIN_FIXTURES}");
}

#[test]
fn every_snapshot_belongs_to_a_fixture() {
    let names: Vec<String> = fixtures().iter().map(|p| case_name(p)).collect();
    let Ok(rd) = std::fs::read_dir(repo_root().join(DIR).join("snapshots")) else { return };
    let orphans: Vec<String> = rd
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|f| f.ends_with(".snap") && !names.iter().any(|n| *f == format!("{n}.snap")))
        .collect();
    assert!(orphans.is_empty(), "snapshots without a fixture (delete them): {orphans:?}");
}
