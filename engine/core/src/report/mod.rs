//! The run report: one self-contained HTML file (`RUN/report.html`, inline CSS and SVG, no
//! script, nothing fetched), and the per-attempt trace (TSV) and JUnit XML for dashboards.
//!
//! Two halves. [`collect`] reads what a run left (the run database, the workflow snapshot
//! `RUN/workflow.json` written when the run started, the attempts' output tails, the
//! outputs' sizes and the figures and tables steps declare with `report:`) into a
//! [`RunRecord`]. The renderers are pure functions of that record: [`html::render`] (with
//! [`dag_svg`] and [`timeline`]), [`trace::render`] and [`junit::render`], so they are
//! tested on records built in memory.
//!
//! The session writes the report when a run ends ([`write_html`]); `twinflow report`
//! writes it on demand, for a run in progress too. Layering: this module reads what `run`
//! left (its snapshot type and directory layout) and is used by `session`; `run` does not
//! use it.

pub mod dag_svg;
pub mod html;
pub mod junit;
pub mod timeline;
pub mod trace;

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crate::events::TaskState;
pub use crate::run::snapshot::{EngineInfo, SNAPSHOT_FILE, StepSnapshot, WorkflowSnapshot, write_atomic};
use crate::state::{AttemptRow, CycleRow, RunRow, StateError, Store, TaskRow};

/// File in the run directory the engine writes the report to.
pub const REPORT_FILE: &str = "report.html";
/// Lines of `stdout`/`stderr` the report shows of each attempt.
pub const TAIL_LINES: usize = 12;
/// Above this many tasks, only failed tasks get their output tails (the report stays small).
pub const TAILS_FOR_ALL_UP_TO: usize = 300;
/// Figures and tables larger than this are named, not embedded.
pub const EMBED_MAX_BYTES: u64 = 16 << 20;
/// Rows of a CSV table shown.
pub const TABLE_MAX_ROWS: usize = 200;
/// Alerts shown per alerts output.
pub const ALERTS_MAX: usize = 200;

/// Everything the report shows of one run.
#[derive(Debug, Clone, Default)]
pub struct RunRecord {
    /// The run.
    pub run: Option<RunRow>,
    /// Run id.
    pub run_id: String,
    /// State as `status` shows it (`interrupted` for a run whose engine is gone).
    pub state: String,
    /// The run directory.
    pub run_dir: PathBuf,
    /// The workflow as started, when recorded.
    pub workflow: Option<WorkflowSnapshot>,
    /// Tasks in the order the run database has them.
    pub tasks: Vec<TaskRecord>,
    /// Cycles of a cycling run.
    pub cycles: Vec<CycleRow>,
    /// When the record was made (ms): the end of bars still running.
    pub now_ms: i64,
}

/// One task with its attempts and files.
#[derive(Debug, Clone)]
pub struct TaskRecord {
    /// Its row.
    pub row: TaskRow,
    /// Its attempts, oldest first.
    pub attempts: Vec<AttemptRow>,
    /// End of the latest attempt's stdout.
    pub stdout: Option<Tail>,
    /// End of the latest attempt's stderr.
    pub stderr: Option<Tail>,
    /// Its declared outputs in its result directory, with sizes.
    pub outputs: Vec<OutputFile>,
    /// Figures its step declares, read.
    pub figures: Vec<Figure>,
    /// Tables its step declares, read.
    pub tables: Vec<Table>,
    /// Alerts outputs its step declares, read.
    pub alerts: Vec<Alerts>,
}

/// The end of an output file.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tail {
    /// Its path.
    pub path: String,
    /// Its size in bytes.
    pub size: u64,
    /// Its last lines.
    pub lines: Vec<String>,
}

/// A declared output.
#[derive(Debug, Clone, PartialEq)]
pub struct OutputFile {
    /// Output name.
    pub name: String,
    /// Path.
    pub path: String,
    /// Size in bytes (`None`: missing).
    pub size: Option<u64>,
}

/// A figure an output holds.
#[derive(Debug, Clone, PartialEq)]
pub struct Figure {
    /// Output name.
    pub name: String,
    /// Path.
    pub path: String,
    /// Its content, or why it is not shown.
    pub content: Result<(FigureKind, Vec<u8>), String>,
}

/// What kind of image a figure is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FigureKind {
    /// PNG.
    Png,
    /// SVG.
    Svg,
}

/// A CSV table an output holds.
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    /// Output name.
    pub name: String,
    /// Path.
    pub path: String,
    /// Its rows (the first is the header), at most [`TABLE_MAX_ROWS`] + 1, or why not shown.
    pub rows: Result<Vec<Vec<String>>, String>,
    /// Rows left out.
    pub more: usize,
}

/// An alerts output of a task (`report: { alerts: [out.NAME] }`), read.
#[derive(Debug, Clone)]
pub struct Alerts {
    /// Output name.
    pub name: String,
    /// Path.
    pub path: String,
    /// Its alerts, at most [`ALERTS_MAX`] ([`crate::events::alert_lines`]), or why not
    /// shown.
    pub lines: Result<Vec<serde_json::Value>, String>,
    /// Alerts left out.
    pub more: usize,
}

/// Why the report could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// The run database failed, or has no such run.
    #[error(transparent)]
    State(#[from] StateError),
    /// Writing a file failed.
    #[error("writing `{path}`")]
    Write {
        /// Path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

/// Reads what run `run_id` (`None`: the latest) of `runs_dir` left into a [`RunRecord`].
pub fn collect(store: &Store, runs_dir: &Path, run_id: Option<&str>) -> Result<RunRecord, ReportError> {
    let run = store.run(run_id)?;
    let run_dir = runs_dir.join(&run.id);
    let workflow = WorkflowSnapshot::read(&run_dir);
    let rows = store.tasks(&run.id)?;
    let mut attempts: std::collections::HashMap<String, Vec<AttemptRow>> = Default::default();
    for (task, a) in store.run_attempts(&run.id)? {
        attempts.entry(task).or_default().push(a);
    }
    for v in attempts.values_mut() {
        v.sort_by_key(|a| a.attempt);
    }
    let cycles = store.cycles(&run.id)?;
    let all_tails = rows.len() <= TAILS_FOR_ALL_UP_TO;
    let tasks = rows
        .into_iter()
        .map(|row| {
            let attempts = attempts.remove(&row.task).unwrap_or_default();
            let step = workflow.as_ref().and_then(|w| w.steps.iter().find(|s| s.name == row.step));
            task_record(row, attempts, step, &run_dir, &cycles, all_tails)
        })
        .collect();
    Ok(RunRecord {
        state: run.shown_state().to_string(),
        run_id: run.id.clone(),
        run: Some(run),
        run_dir,
        workflow,
        tasks,
        cycles,
        now_ms: crate::state::now_ms(),
    })
}

/// The directory of a task's latest attempt: its recorded directory, or where its attempt
/// runs.
fn latest_dir(row: &TaskRow, run_dir: &Path, cycles: &[CycleRow]) -> Option<PathBuf> {
    if let Some(d) = &row.dir {
        return Some(PathBuf::from(d));
    }
    if row.attempts == 0 {
        return None;
    }
    let base = match row.cycle {
        Some(c) => {
            let point = cycles.iter().find(|r| r.cycle == c)?.point.clone();
            crate::run::cycle_dir_of(run_dir, &point)
        }
        None => run_dir.to_path_buf(),
    };
    Some(crate::run::attempt::attempt_dir(&crate::run::task_dir_of(&base, &row.step, row.member), row.attempts))
}

fn task_record(
    row: TaskRow,
    attempts: Vec<AttemptRow>,
    step: Option<&StepSnapshot>,
    run_dir: &Path,
    cycles: &[CycleRow],
    all_tails: bool,
) -> TaskRecord {
    let dir = latest_dir(&row, run_dir, cycles);
    let mut t = TaskRecord {
        row: row.clone(),
        attempts,
        stdout: None,
        stderr: None,
        outputs: vec![],
        figures: vec![],
        tables: vec![],
        alerts: vec![],
    };
    if let Some(dir) = &dir {
        let failed = matches!(row.state, TaskState::Failed | TaskState::Cancelled);
        if (all_tails || failed) && row.attempts > 0 {
            let (out, err) = crate::run::failure::log_files(dir);
            t.stdout = tail(&out, TAIL_LINES);
            t.stderr = tail(&err, TAIL_LINES);
        }
        let done = matches!(row.state, TaskState::Succeeded | TaskState::Cached);
        if let (Some(step), true) = (step, done) {
            for (name, rel) in &step.outputs {
                let p = dir.join(rel);
                let size = std::fs::metadata(&p).ok().map(|m| m.len());
                t.outputs.push(OutputFile { name: name.clone(), path: p.display().to_string(), size });
            }
            for name in &step.report.figures {
                if let Some(rel) = step.outputs.get(name) {
                    t.figures.push(read_figure(name, &dir.join(rel)));
                }
            }
            for name in &step.report.alerts {
                if let Some(rel) = step.outputs.get(name) {
                    t.alerts.push(read_alerts(name, &dir.join(rel)));
                }
            }
            for name in &step.report.tables {
                if let Some(rel) = step.outputs.get(name) {
                    t.tables.push(read_table(name, &dir.join(rel)));
                }
            }
        }
    }
    t
}

/// The last `n` lines of a file (of at most its last 64 KiB).
pub fn tail(path: &Path, n: usize) -> Option<Tail> {
    let mut f = std::fs::File::open(path).ok()?;
    let size = f.metadata().ok()?.len();
    let from = size.saturating_sub(64 << 10);
    f.seek(SeekFrom::Start(from)).ok()?;
    let mut buf = vec![];
    f.read_to_end(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf);
    let mut lines: Vec<String> = text.lines().map(|l| l.chars().take(300).collect()).collect();
    if from > 0 && !lines.is_empty() {
        lines.remove(0);
    }
    let lines = lines.split_off(lines.len().saturating_sub(n));
    Some(Tail { path: path.display().to_string(), size, lines })
}

fn read_limited(path: &Path) -> Result<Vec<u8>, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot read it: {e}"))?;
    if meta.len() > EMBED_MAX_BYTES {
        return Err(format!("{} bytes, more than the report embeds ({EMBED_MAX_BYTES})", meta.len()));
    }
    std::fs::read(path).map_err(|e| format!("cannot read it: {e}"))
}

/// Reads a figure; its kind from its first bytes (PNG signature, or an `<svg` element).
pub fn read_figure(name: &str, path: &Path) -> Figure {
    let content = read_limited(path).and_then(|data| {
        if data.starts_with(b"\x89PNG\r\n\x1a\n") {
            Ok((FigureKind::Png, data))
        } else if String::from_utf8_lossy(&data[..data.len().min(4096)]).contains("<svg") {
            Ok((FigureKind::Svg, data))
        } else {
            Err("neither a PNG nor an SVG file".to_string())
        }
    });
    Figure { name: name.to_string(), path: path.display().to_string(), content }
}

/// Reads a CSV table (header and up to [`TABLE_MAX_ROWS`] rows).
pub fn read_table(name: &str, path: &Path) -> Table {
    let mut more = 0;
    let rows = read_limited(path).and_then(|data| {
        let mut r = csv::ReaderBuilder::new().has_headers(false).flexible(true).from_reader(&data[..]);
        let mut rows = vec![];
        for rec in r.records() {
            let rec = rec.map_err(|e| format!("not CSV: {e}"))?;
            if rows.len() > TABLE_MAX_ROWS {
                more += 1;
                continue;
            }
            rows.push(rec.iter().map(str::to_string).collect());
        }
        Ok(rows)
    });
    Table { name: name.to_string(), path: path.display().to_string(), rows, more }
}

/// Reads an alerts output (up to [`ALERTS_MAX`] alerts).
pub fn read_alerts(name: &str, path: &Path) -> Alerts {
    let mut more = 0;
    let lines = read_limited(path).map(|data| {
        let text = String::from_utf8_lossy(&data);
        let mut lines = vec![];
        for alert in crate::events::alert_lines(&text) {
            if lines.len() < ALERTS_MAX {
                lines.push(alert);
            } else {
                more += 1;
            }
        }
        lines
    });
    Alerts { name: name.to_string(), path: path.display().to_string(), lines, more }
}

/// Writes the HTML report of run `run_id` to `out` (default `RUN/report.html`); returns
/// the path written.
pub fn write_html(
    store: &Store,
    runs_dir: &Path,
    run_id: Option<&str>,
    out: Option<&Path>,
) -> Result<PathBuf, ReportError> {
    let rec = collect(store, runs_dir, run_id)?;
    let path = out.map_or_else(|| rec.run_dir.join(REPORT_FILE), Path::to_path_buf);
    write_atomic(&path, html::render(&rec).as_bytes())
        .map_err(|source| ReportError::Write { path: path.clone(), source })?;
    Ok(path)
}

/// An error and its causes, joined by `: `.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// `&`, `<`, `>`, `"` and `'` as HTML entities.
pub fn escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

/// The colour a state is drawn in (DAG nodes, timeline bars, table badges).
pub fn state_colour(state: &str) -> &'static str {
    match state {
        "succeeded" => "#2e7d32",
        "cached" => "#7cb342",
        "skipped" => "#9e9e9e",
        "failed" => "#c62828",
        "upstream-failed" => "#ef9a9a",
        "cancelled" => "#616161",
        "running" => "#1565c0",
        "interrupted" => "#ff8f00",
        _ => "#bdbdbd",
    }
}

/// `250ms`, `1.2s`, `3m 04s`, `2h 05m` from milliseconds.
pub fn duration(ms: i64) -> String {
    let s = ms as f64 / 1000.0;
    if ms < 1000 {
        format!("{ms}ms")
    } else if s < 60.0 {
        format!("{s:.1}s")
    } else if s < 3600.0 {
        format!("{}m {:02}s", (s / 60.0) as i64, (s % 60.0) as i64)
    } else {
        format!("{}h {:02}m", (s / 3600.0) as i64, ((s % 3600.0) / 60.0) as i64)
    }
}

/// `512 B`, `1.5 MiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 { format!("{n} B") } else { format!("{v:.1} {}", UNITS[u]) }
}

/// RFC 3339 time of a millisecond timestamp, in UTC, to the second.
pub fn time(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms).map(|t| format!("{:.0}", t)).unwrap_or_else(|_| ms.to_string())
}

#[cfg(test)]
mod tests;
