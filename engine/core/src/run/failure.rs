//! The message of a task's final failure: its cause, where its attempt ran, and enough of
//! its output to see why, in one place (the run's output, `status`, `--json`).
//!
//! ```text
//! exit code 1
//! attempt directory: /work/runs/RUN/steps/mesh/attempt-1
//! stdout: /work/runs/RUN/steps/mesh/attempt-1/.twinflow/stdout (empty)
//! stderr: /work/runs/RUN/steps/mesh/attempt-1/.twinflow/stderr (42 lines)
//! stderr, earlier lines that look like the cause:
//!   3: FATAL: mesh file missing
//! stderr, lines 23-42 of 42:
//!   Traceback (most recent call last):
//!   ...
//! ```
//!
//! What is shown:
//! - the last [`TAIL_LINES`] lines of stderr, and before them up to [`EARLIER_LINES`]
//!   earlier lines that look like a cause (`error`, `fatal`, `exception`, `abort`, ...), with
//!   their line numbers: a 40-line traceback must not hide the one line that says what went
//!   wrong;
//! - stdout the same way when stderr does not explain the failure (empty, or no line looks
//!   like a cause): MPICH's `mpiexec` reports a crashed rank on stdout;
//! - what an MPI launcher said about a failed rank ([`launcher_output`]), on the first line;
//! - for a timeout: the limit, how long the step ran, and that every process of it (every
//!   rank) was stopped.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::attempt::meta_dir;
use crate::execute::{Outcome, launcher_output};

/// Lines shown from the end of an output file.
pub const TAIL_LINES: usize = 20;
/// Earlier lines that look like a cause, shown at most.
pub const EARLIER_LINES: usize = 5;
/// Longest line shown (longer ones are cut, with `...`).
const LINE_CHARS: usize = 300;
/// Files up to this size are read whole (line numbers, earlier causes); of larger ones only
/// the end is read (the engine reads them while it schedules: a sweep of failures with huge
/// logs must not stall it).
const READ_WHOLE: u64 = 4 << 20;
/// How much of the end of a larger file is read.
const READ_END: u64 = 256 << 10;

/// The `.twinflow/stdout` and `.twinflow/stderr` of an attempt directory.
pub fn log_files(adir: &Path) -> (PathBuf, PathBuf) {
    let meta = meta_dir(adir);
    (meta.join("stdout"), meta.join("stderr"))
}

/// What the final failure message needs to know about the step.
#[derive(Debug, Clone, Copy)]
pub struct StepFacts {
    /// Its rank count.
    pub ranks: u32,
    /// Its `timeout:`.
    pub timeout: Option<Duration>,
    /// Whether SLURM (not the engine) ran and stopped it.
    pub slurm: bool,
}

/// The final failure message of the attempt in `adir` that ended with `outcome`; `cause` is
/// what went wrong in one line (the outcome described, or a missing output).
pub fn message(adir: &Path, outcome: &Outcome, cause: String, step: StepFacts) -> String {
    let (out_path, err_path) = log_files(adir);
    let out = Excerpt::read(&out_path);
    let err = Excerpt::read(&err_path);
    let mut first = if outcome.timed_out() { timeout_cause(outcome, step) } else { cause };
    if !outcome.timed_out()
        && !outcome.is_cancelled()
        && let Some(r) = launcher_output::find(&format!("{}\n{}", err.text, out.text))
    {
        first = format!("{first}; {}", r.describe());
    }
    if !outcome.timed_out()
        && !outcome.is_cancelled()
        && let Some(full) = full_file_system(adir)
    {
        first = format!("{first}; {full}");
    }
    let mut m = first;
    m.push_str(&format!("\nattempt directory: {}", adir.display()));
    m.push_str(&format!("\nstdout: {} ({})", out_path.display(), out.size_words()));
    m.push_str(&format!("\nstderr: {} ({})", err_path.display(), err.size_words()));
    err.append_to(&mut m, "stderr");
    if !err.explains() {
        out.append_to(&mut m, "stdout");
    }
    m
}

/// `timed out after 3.1s (limit `timeout: 2s`): every process of the step (its 2 ranks) was
/// stopped`.
fn timeout_cause(outcome: &Outcome, step: StepFacts) -> String {
    let ran = outcome.duration();
    let after = if ran.is_zero() { String::new() } else { format!(" after {}", seconds(ran)) };
    let limit = match step.timeout {
        Some(t) => format!(" (limit `timeout: {}`)", crate::units::format_duration(t)),
        None => String::new(),
    };
    let who = if step.slurm { "SLURM stopped every process of the job" } else { "every process of the step" };
    let ranks = if step.ranks > 1 { format!(", all {} ranks,", step.ranks) } else { String::new() };
    if step.slurm {
        format!("timed out{after}{limit}: {who}{}", ranks.trim_end_matches(','))
    } else {
        format!("timed out{after}{limit}: {who}{ranks} was stopped (SIGTERM, then SIGKILL after the grace period)")
    }
}

/// Below this much free space a failed step's file system counts as full.
const FULL_BELOW: u64 = 1 << 20;

/// `the file system holding `ADIR` is full (ENOSPC: 12 KiB free of 6 MiB)` when the file
/// system of the attempt directory has less than [`FULL_BELOW`] left for its user: the
/// likely cause of the failure, whatever the step printed about it.
fn full_file_system(adir: &Path) -> Option<String> {
    let st = nix::sys::statvfs::statvfs(adir).ok()?;
    let unit = st.fragment_size() as u64;
    let (free, total) = (st.blocks_available() as u64 * unit, st.blocks() as u64 * unit);
    (free < FULL_BELOW).then(|| {
        format!(
            "the file system holding `{}` is full (ENOSPC: {} KiB free of {} KiB); hint: free space there, then `twinflow run --resume`",
            adir.display(),
            free >> 10,
            total >> 10
        )
    })
}

/// `3.1s` below a minute, `2m5s` above.
fn seconds(d: Duration) -> String {
    if d < Duration::from_secs(60) { format!("{:.1}s", d.as_secs_f64()) } else { crate::units::format_duration(d) }
}

/// Whether a line of output looks like it says what went wrong.
pub fn looks_like_cause(line: &str) -> bool {
    const WORDS: [&str; 10] = [
        "error",
        "fatal",
        "exception",
        "abort",
        "traceback",
        "panicked",
        "segmentation fault",
        "killed",
        "failed",
        "bad termination",
    ];
    let l = line.to_ascii_lowercase();
    WORDS.iter().any(|w| l.contains(w))
}

/// The parts of an output file a failure message shows.
#[derive(Debug, Default)]
struct Excerpt {
    /// Lines in the file (when it was read whole).
    total: Option<usize>,
    /// Bytes in the file.
    bytes: u64,
    /// Earlier lines that look like a cause: (line number, text).
    earlier: Vec<(usize, String)>,
    /// More such lines than shown.
    more_earlier: usize,
    /// The last lines.
    tail: Vec<String>,
    /// The text read (for launcher reports).
    text: String,
}

impl Excerpt {
    fn read(p: &Path) -> Excerpt {
        let Ok(mut f) = std::fs::File::open(p) else { return Excerpt::default() };
        let bytes = f.metadata().map(|m| m.len()).unwrap_or(0);
        let whole = bytes <= READ_WHOLE;
        if !whole && f.seek(SeekFrom::End(-(READ_END as i64))).is_err() {
            return Excerpt { bytes, ..Excerpt::default() };
        }
        let mut buf = vec![];
        let _ = f.take(if whole { READ_WHOLE } else { READ_END }).read_to_end(&mut buf);
        let text = String::from_utf8_lossy(&buf).into_owned();
        let mut lines: Vec<&str> = text.lines().collect();
        if !whole && !lines.is_empty() {
            // The first line read is probably cut.
            lines.remove(0);
        }
        let start = lines.len().saturating_sub(TAIL_LINES);
        let mut e = Excerpt { bytes, total: whole.then_some(lines.len()), ..Excerpt::default() };
        if whole {
            let found: Vec<(usize, &str)> = lines[..start]
                .iter()
                .enumerate()
                .filter(|(_, l)| looks_like_cause(l))
                .map(|(i, l)| (i + 1, *l))
                .collect();
            e.more_earlier = found.len().saturating_sub(EARLIER_LINES);
            e.earlier = found.into_iter().take(EARLIER_LINES).map(|(n, l)| (n, cut(l))).collect();
        }
        e.tail = lines[start..].iter().map(|l| cut(l)).collect();
        e.text = text;
        e
    }

    /// `empty`, `1 line`, `42 lines`, `12.0 MiB`.
    fn size_words(&self) -> String {
        match self.total {
            _ if self.bytes == 0 => "empty".into(),
            Some(1) => "1 line".into(),
            Some(n) => format!("{n} lines"),
            None => format!("{:.1} MiB", self.bytes as f64 / f64::from(1 << 20)),
        }
    }

    /// Whether this (stderr) says what went wrong: it has a line that looks like a cause.
    fn explains(&self) -> bool {
        self.earlier.iter().map(|(_, l)| l.as_str()).chain(self.tail.iter().map(String::as_str)).any(looks_like_cause)
    }

    /// Appends the earlier cause lines and the tail, headed by `name`.
    fn append_to(&self, m: &mut String, name: &str) {
        if self.tail.is_empty() {
            return;
        }
        if !self.earlier.is_empty() {
            m.push_str(&format!("\n{name}, earlier lines that look like the cause:"));
            for (n, l) in &self.earlier {
                m.push_str(&format!("\n  {n}: {l}"));
            }
            if self.more_earlier > 0 {
                m.push_str(&format!("\n  ... and {} more", self.more_earlier));
            }
        }
        let shown = self.tail.len();
        match self.total {
            Some(n) if n == shown => m.push_str(&format!("\n{name}:")),
            Some(n) => m.push_str(&format!("\n{name}, lines {}-{n} of {n}:", n - shown + 1)),
            None => m.push_str(&format!("\n{name}, last {shown} lines:")),
        }
        for l in &self.tail {
            m.push('\n');
            if !l.is_empty() {
                m.push_str("  ");
                m.push_str(l);
            }
        }
    }
}

/// A line cut to [`LINE_CHARS`] characters.
fn cut(l: &str) -> String {
    match l.char_indices().nth(LINE_CHARS) {
        Some((i, _)) => format!("{}...", &l[..i]),
        None => l.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;
    use crate::execute::{Ending, Exit};

    fn attempt(stdout: &str, stderr: &str) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        let meta = meta_dir(d.path());
        std::fs::create_dir_all(&meta).unwrap();
        std::fs::write(meta.join("stdout"), stdout).unwrap();
        std::fs::write(meta.join("stderr"), stderr).unwrap();
        d
    }

    const PLAIN: StepFacts = StepFacts { ranks: 1, timeout: None, slurm: false };

    /// The message with the attempt's path replaced by `ATTEMPT`.
    fn msg(d: &tempfile::TempDir, o: &Outcome, step: StepFacts) -> String {
        message(d.path(), o, o.describe(), step).replace(&d.path().display().to_string(), "ATTEMPT")
    }

    #[test]
    fn a_failure_names_the_attempt_directory_and_both_files_and_shows_stderr() {
        let d = attempt("", "reading mesh\nerror: no such file\n");
        let m = msg(&d, &Outcome::new(Ending::Exited(2)), PLAIN);
        assert_eq!(
            m,
            "exit code 2
attempt directory: ATTEMPT
stdout: ATTEMPT/.twinflow/stdout (empty)
stderr: ATTEMPT/.twinflow/stderr (2 lines)
stderr:
  reading mesh
  error: no such file"
        );
    }

    /// A 40-line traceback after the line that says what is wrong: the tail is 20 lines,
    /// and the cause is shown with its line number.
    #[test]
    fn a_cause_above_the_tail_is_shown_with_its_line_number() {
        let mut err = String::from("loading config\nFATAL: mesh file missing\n");
        err.push_str("Traceback (most recent call last):\n");
        for k in 0..38 {
            err.push_str(&format!("  File \"model.py\", line {k}, in step\n"));
        }
        err.push_str("SystemExit: 1\n");
        let d = attempt("", &err);
        let m = msg(&d, &Outcome::new(Ending::Exited(1)), PLAIN);
        assert!(m.contains("stderr, earlier lines that look like the cause:\n  2: FATAL: mesh file missing\n  3: Traceback (most recent call last):\nstderr, lines 23-42 of 42:\n"), "{m}");
        assert!(m.ends_with("  File \"model.py\", line 37, in step\n  SystemExit: 1"), "{m}");
        assert_eq!(m.lines().filter(|l| l.contains("File \"model.py\"")).count(), 19, "{m}");
    }

    /// MPICH reports a crashed rank on stdout; stderr is empty.
    #[test]
    fn without_an_explanation_on_stderr_stdout_is_shown_with_the_launcher_report() {
        let out = "rank 0 starting\nrank 1 starting\n\n===================================================================================\n=   BAD TERMINATION OF ONE OF YOUR APPLICATION PROCESSES\n=   RANK 1 PID 4242 RUNNING AT vm\n=   EXIT CODE: 11\n===================================================================================\nYOUR APPLICATION TERMINATED WITH THE EXIT STRING: Segmentation fault (signal 11)\n";
        let d = attempt(out, "");
        let m = msg(&d, &Outcome::new(Ending::Exited(11)), StepFacts { ranks: 2, ..PLAIN });
        let first = m.lines().next().unwrap();
        assert_eq!(
            first,
            "exit code 11; rank 1 was killed by signal 11: SIGSEGV (segmentation fault), as `mpiexec` reports"
        );
        assert!(m.contains("\nstdout:\n  rank 0 starting\n"), "{m}");
        assert!(m.contains("  =   BAD TERMINATION OF ONE OF YOUR APPLICATION PROCESSES\n"), "{m}");
        // stderr that does not say what went wrong does not hide stdout either.
        let d = attempt("step 7 of 10\n", "using 2 threads\n");
        let m = msg(&d, &Outcome::new(Ending::Exited(139)), PLAIN);
        assert!(m.starts_with("exit code 139: 128 + 11, a process killed by SIGSEGV (segmentation fault)\n"), "{m}");
        assert!(m.contains("\nstderr:\n  using 2 threads\nstdout:\n  step 7 of 10"), "{m}");
        // stderr that does: stdout is left out.
        let d = attempt("step 7 of 10\n", "Error: singular matrix\n");
        assert!(!msg(&d, &Outcome::new(Ending::Exited(1)), PLAIN).contains("step 7 of 10"));
    }

    #[test]
    fn a_timeout_says_the_limit_how_long_it_ran_and_that_every_rank_was_stopped() {
        let d = attempt("iteration 1\niteration 2\n", "");
        let t0 = SystemTime::UNIX_EPOCH;
        let o = Outcome::between(
            Ending::TimedOut(Some(Exit::Signal(15))),
            Some(t0),
            Some(t0 + Duration::from_millis(3100)),
        );
        let step = StepFacts { ranks: 2, timeout: Some(Duration::from_secs(2)), slurm: false };
        let m = msg(&d, &o, step);
        assert!(
            m.starts_with("timed out after 3.1s (limit `timeout: 2s`): every process of the step, all 2 ranks, was stopped (SIGTERM, then SIGKILL after the grace period)\n"),
            "{m}"
        );
        assert!(m.ends_with("stdout:\n  iteration 1\n  iteration 2"), "{m}");
        let slurm = msg(&d, &o, StepFacts { slurm: true, ..step });
        assert!(
            slurm.starts_with(
                "timed out after 3.1s (limit `timeout: 2s`): SLURM stopped every process of the job, all 2 ranks\n"
            ),
            "{slurm}"
        );
    }

    #[test]
    fn files_that_are_missing_or_huge_are_described_not_read_whole() {
        let d = tempfile::tempdir().unwrap();
        let m = message(d.path(), &Outcome::new(Ending::Exited(1)), "exit code 1".into(), PLAIN);
        assert!(m.contains("/.twinflow/stderr (empty)"), "{m}");
        let d = attempt("", "");
        let big = "x".repeat(1000) + "\n";
        std::fs::write(meta_dir(d.path()).join("stderr"), big.repeat((READ_WHOLE / 1000) as usize + 10)).unwrap();
        let m = msg(&d, &Outcome::new(Ending::Exited(1)), PLAIN);
        let size = std::fs::metadata(meta_dir(d.path()).join("stderr")).unwrap().len() as f64 / f64::from(1 << 20);
        assert!(m.contains(&format!("stderr: ATTEMPT/.twinflow/stderr ({size:.1} MiB)")), "{m}");
        assert!(m.contains("stderr, last 20 lines:\n"), "{m}");
        // Lines are cut.
        assert!(m.lines().last().unwrap().len() < 320, "{m}");
    }
}
