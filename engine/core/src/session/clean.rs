//! `twinflow clean`: removes old runs' directories and database rows, safely.
//!
//! - A run in progress (its engine still runs) is never removed.
//! - A run whose results a kept run uses (a cache hit of a kept run points into its
//!   directory) is kept too, and said so: no run left in the database points at deleted
//!   data, so `status` stays truthful. This is decided again for each run kept that way.
//! - The cache entries whose results lie in a removed run's directory are dropped with its
//!   rows, in one transaction, before its directory is deleted: `why` and later runs never
//!   hand out a deleted result (a directory left half deleted by an error is no longer
//!   known to the database).
//! - `--dry-run` says what would be removed and how much space it would free.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use super::{SessionError, has_runs};
use crate::events::RunState;
use crate::state::Store;

/// Which runs to remove: every condition given must hold.
#[derive(Debug, Clone, Default)]
pub struct CleanRequest {
    /// Keep the N newest runs.
    pub keep: Option<usize>,
    /// Only runs started before this time (ms since the epoch).
    pub before: Option<i64>,
    /// Only runs that failed, were cancelled or interrupted.
    pub failed: bool,
    /// Say what would be removed, remove nothing.
    pub dry_run: bool,
}

/// A run `clean` removed (or would remove).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Removed {
    /// Run id.
    pub id: String,
    /// Workflow name.
    pub workflow: String,
    /// Its state as `status` shows it.
    pub state: String,
    /// Bytes of its directory.
    pub bytes: u64,
    /// Cache entries dropped with it.
    pub cache_entries: usize,
}

/// A run that matched but was kept, with why.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Kept {
    /// Run id.
    pub id: String,
    /// Why it was kept.
    pub reason: String,
}

/// What `clean` did (or would do).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct CleanReport {
    /// Whether nothing was removed (`--dry-run`).
    pub dry_run: bool,
    /// Runs removed (or that would be).
    pub removed: Vec<Removed>,
    /// Runs that matched but were kept.
    pub kept: Vec<Kept>,
    /// Bytes freed (or that would be).
    pub bytes: u64,
    /// Directories that could not be deleted entirely (their rows are gone).
    pub errors: Vec<String>,
}

/// `--before DATE`: `2026-12-01` (midnight UTC) or an RFC 3339 time
/// (`2026-12-01T12:00:00Z`), as milliseconds since the epoch.
pub fn parse_before(text: &str) -> Result<i64, SessionError> {
    let t = text.trim();
    if let Ok(ts) = t.parse::<jiff::Timestamp>() {
        return Ok(ts.as_millisecond());
    }
    if let Ok(d) = t.parse::<jiff::civil::Date>()
        && let Ok(z) = d.to_zoned(jiff::tz::TimeZone::UTC)
    {
        return Ok(z.timestamp().as_millisecond());
    }
    Err(SessionError::Usage(format!(
        "--before `{text}`: expected a date (`2026-12-01`, midnight UTC) or a time (`2026-12-01T12:00:00Z`)"
    )))
}

/// Bytes of the files under `dir` (symbolic links counted as themselves, never followed).
pub fn dir_size(dir: &Path) -> u64 {
    let Ok(m) = std::fs::symlink_metadata(dir) else { return 0 };
    if !m.is_dir() {
        return m.len();
    }
    std::fs::read_dir(dir).map(|r| r.flatten().map(|e| dir_size(&e.path())).sum()).unwrap_or(0)
}

/// Whether `p` is `dir` or inside it (textually: run directories are recorded absolute).
fn inside(p: &str, dir: &str) -> bool {
    let dir = dir.trim_end_matches('/');
    p == dir || p.strip_prefix(dir).is_some_and(|r| r.starts_with('/'))
}

/// `twinflow clean`.
pub fn clean(runs_dir: &Path, req: &CleanRequest) -> Result<CleanReport, SessionError> {
    if req.keep.is_none() && req.before.is_none() && !req.failed {
        return Err(SessionError::Usage(
            "say which runs to remove: --keep N, --before DATE and/or --failed (add --dry-run to see first)".into(),
        ));
    }
    let mut report = CleanReport { dry_run: req.dry_run, ..CleanReport::default() };
    if !has_runs(runs_dir) {
        return Ok(report);
    }
    let mut store = Store::open(runs_dir)?;
    let abs = std::fs::canonicalize(runs_dir).unwrap_or_else(|_| runs_dir.to_path_buf());
    let runs = store.runs()?;
    let dir_of = |id: &str| abs.join(id).display().to_string();
    let mut remove: BTreeSet<String> = BTreeSet::new();
    for (n, r) in runs.iter().enumerate() {
        if req.keep.is_some_and(|k| n < k) || req.before.is_some_and(|b| r.created_at >= b) {
            continue;
        }
        let shown = r.shown_state();
        if req.failed && !matches!(shown, "failed" | "cancelled" | "interrupted") {
            continue;
        }
        if r.live_engine().is_some() || (r.state == RunState::Running && shown != "interrupted") {
            report.kept.push(Kept { id: r.id.clone(), reason: "in progress".into() });
            continue;
        }
        // Run ids name directories: anything else is not deleted.
        if r.id.is_empty() || !r.id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
            report.kept.push(Kept { id: r.id.clone(), reason: "its id is not a plain directory name".into() });
            continue;
        }
        remove.insert(r.id.clone());
    }
    // Results a kept run reads from a run to be removed keep that run (and so on).
    let mut dirs_of_kept: HashMap<String, Vec<String>> = HashMap::new();
    for r in &runs {
        let dirs = store.tasks(&r.id)?.into_iter().filter_map(|t| t.dir).collect();
        dirs_of_kept.insert(r.id.clone(), dirs);
    }
    loop {
        let mut changed = false;
        for r in &runs {
            if remove.contains(&r.id) {
                continue;
            }
            let users = &dirs_of_kept[&r.id];
            let used: Vec<String> =
                remove.iter().filter(|id| users.iter().any(|d| inside(d, &dir_of(id)))).cloned().collect();
            for id in used {
                remove.remove(&id);
                report.kept.push(Kept { id, reason: format!("run {} reuses its results", r.id) });
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    for r in runs.iter().filter(|r| remove.contains(&r.id)) {
        let dir = PathBuf::from(dir_of(&r.id));
        let bytes = dir_size(&dir);
        let dir_s = dir.display().to_string();
        let entries = if req.dry_run {
            store.cache_dirs()?.iter().filter(|(id, d)| *id == r.id || inside(d, &dir_s)).count()
        } else {
            // Rows first: a directory that fails to delete is then merely unknown, never a
            // result the database hands out.
            let n = store.delete_run(&r.id, &dir_s)?;
            if dir.exists()
                && let Err(e) = std::fs::remove_dir_all(&dir)
            {
                report.errors.push(format!("cannot delete `{}`: {e}", dir.display()));
            }
            n
        };
        tracing::info!(run = %r.id, bytes, dry_run = req.dry_run, "clean");
        report.bytes += bytes;
        report.removed.push(Removed {
            id: r.id.clone(),
            workflow: r.workflow.clone(),
            state: r.shown_state().to_string(),
            bytes,
            cache_entries: entries,
        });
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_times_are_read_as_utc() {
        assert_eq!(parse_before("2026-12-01").unwrap(), 1_796_083_200_000);
        assert_eq!(parse_before("2026-12-01T00:00:01Z").unwrap(), 1_796_083_201_000);
        let e = parse_before("yesterday").unwrap_err().to_string();
        assert!(e.contains("--before `yesterday`"), "{e}");
    }

    #[test]
    fn a_path_is_inside_a_directory_only_below_a_separator() {
        assert!(inside("/r/run-1/steps/a/out", "/r/run-1"));
        assert!(inside("/r/run-1", "/r/run-1/"));
        assert!(!inside("/r/run-10/steps", "/r/run-1"));
    }

    #[test]
    fn forgetting_a_run_drops_its_rows_and_every_cache_entry_in_its_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let mut store = Store::open(tmp.path()).unwrap();
        for id in ["r1", "r2"] {
            store.create_run(id, "w", "/w.yaml", &Default::default()).unwrap();
            store.ensure_tasks(id, [("a", "a", None, None)].into_iter()).unwrap();
        }
        let entry = |run: &str, dir: &str, key: &str| crate::state::CacheEntry {
            key: key.into(),
            task: "a".into(),
            components: "{}".into(),
            dir: dir.into(),
            outputs: "{}".into(),
            run_id: run.into(),
            at: 0,
        };
        store.cache_put("w", "a", "", &entry("r1", "/runs/r1/steps/a/out", "k1")).unwrap();
        store.cache_put("w", "a", "", &entry("r2", "/runs/r1/steps/a/out", "k2")).unwrap();
        store.cache_put("w", "a", "", &entry("r2", "/runs/r10/steps/a/out", "k3")).unwrap();
        assert_eq!(store.delete_run("r1", "/runs/r1").unwrap(), 2);
        assert!(store.run(Some("r1")).is_err());
        assert!(store.tasks("r1").unwrap().is_empty());
        assert_eq!(store.tasks("r2").unwrap().len(), 1);
        let left: Vec<String> = store.cache_dirs().unwrap().into_iter().map(|(_, d)| d).collect();
        assert_eq!(left, ["/runs/r10/steps/a/out"]);
    }

    #[test]
    fn clean_without_a_condition_is_a_usage_error() {
        let tmp = tempfile::tempdir().unwrap();
        let e = clean(tmp.path(), &CleanRequest::default()).unwrap_err();
        assert!(matches!(e, SessionError::Usage(_)), "{e:?}");
    }
}
