//! The trace: one TSV line per attempt, with columns like Nextflow's `-with-trace` (raw
//! numbers: times in ms since the epoch, durations in ms, memory in bytes; empty where not
//! known).

use std::fmt::Write;

use super::RunRecord;
use crate::state::AttemptState;

/// The header line's columns.
pub const COLUMNS: [&str; 16] = [
    "task_id",
    "hash",
    "native_id",
    "name",
    "step",
    "cycle",
    "attempt",
    "status",
    "exit",
    "start",
    "complete",
    "realtime",
    "cpu_time",
    "%cpu",
    "peak_rss",
    "workdir",
];

/// Tabs and newlines in a field become spaces.
fn field(s: &str) -> String {
    s.replace(['\t', '\n', '\r'], " ")
}

/// The trace of a run: the header, then its attempts in the order they started.
pub fn render(rec: &RunRecord) -> String {
    let mut s = COLUMNS.join("\t");
    s.push('\n');
    let mut rows: Vec<(usize, &super::TaskRecord, &crate::state::AttemptRow)> = vec![];
    for (i, t) in rec.tasks.iter().enumerate() {
        for a in &t.attempts {
            rows.push((i + 1, t, a));
        }
    }
    rows.sort_by_key(|(i, _, a)| (a.started_at.unwrap_or(i64::MAX), *i, a.attempt));
    let opt = |v: Option<i64>| v.map(|v| v.to_string()).unwrap_or_default();
    for (id, t, a) in rows {
        let status = match a.state {
            AttemptState::Succeeded => "COMPLETED",
            AttemptState::Running => "RUNNING",
            AttemptState::Failed if a.detail.as_deref() == Some("cancelled") => "ABORTED",
            AttemptState::Failed => "FAILED",
        };
        let realtime = match (a.started_at, a.finished_at) {
            (Some(s), Some(f)) => Some(f - s),
            _ => None,
        };
        let pct = match (a.cpu_ms, realtime) {
            (Some(c), Some(r)) if r > 0 => format!("{:.1}", c as f64 * 100.0 / r as f64),
            _ => String::new(),
        };
        let workdir = if a.attempt == t.row.attempts { t.row.dir.clone().unwrap_or_default() } else { String::new() };
        let _ = writeln!(
            s,
            "{id}\t{hash}\t{native}\t{name}\t{step}\t{cycle}\t{att}\t{status}\t{exit}\t{start}\t{end}\t{real}\t{cpu}\t{pct}\t{rss}\t{wd}",
            hash = t.row.cache_key.as_deref().map(|k| &k[..k.len().min(12)]).unwrap_or(""),
            native = field(a.job_id.as_deref().unwrap_or("")),
            name = field(&t.row.task),
            step = field(&t.row.step),
            cycle = t.row.cycle.map(|c| c.to_string()).unwrap_or_default(),
            att = a.attempt,
            exit = a.exit_code.map(|c| c.to_string()).unwrap_or_default(),
            start = opt(a.started_at),
            end = opt(a.finished_at),
            real = opt(realtime),
            cpu = opt(a.cpu_ms),
            rss = opt(a.max_rss),
            wd = field(&workdir),
        );
    }
    s
}
