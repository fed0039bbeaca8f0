//! `twinflow report RUN`: the run's HTML report, and on request its trace (TSV) and JUnit
//! XML, for a finished run or one in progress.

use std::path::{Path, PathBuf};

use super::SessionError;
use crate::report::{self, ReportError};

/// Where the report's files go (`None`: not written; the HTML defaults to `RUN/report.html`).
#[derive(Debug, Clone, Default)]
pub struct ReportFiles<'a> {
    /// The HTML report.
    pub html: Option<&'a Path>,
    /// The trace, one TSV line per attempt.
    pub trace: Option<&'a Path>,
    /// JUnit XML.
    pub junit: Option<&'a Path>,
}

/// What [`write`] wrote.
#[derive(Debug, Clone)]
pub struct Written {
    /// The run.
    pub run_id: String,
    /// Its state as shown.
    pub state: String,
    /// The HTML report.
    pub html: PathBuf,
    /// The trace, if asked for.
    pub trace: Option<PathBuf>,
    /// The JUnit XML, if asked for.
    pub junit: Option<PathBuf>,
}

fn write_file(path: &Path, text: &str) -> Result<(), SessionError> {
    report::write_atomic(path, text.as_bytes()).map_err(|source| SessionError::Io {
        action: "writing",
        path: path.to_path_buf(),
        source,
    })
}

/// Writes the report of run `run` (`latest` for the newest) of `runs_dir`.
pub fn write(runs_dir: &Path, run: &str, files: &ReportFiles<'_>) -> Result<Written, SessionError> {
    let (store, row) = super::open_run(runs_dir, run)?;
    let rec = report::collect(&store, runs_dir, Some(&row.id)).map_err(|e| match e {
        ReportError::State(s) => SessionError::State(s),
        ReportError::Write { path, source } => SessionError::Io { action: "writing", path, source },
    })?;
    let html = files.html.map_or_else(|| rec.run_dir.join(report::REPORT_FILE), Path::to_path_buf);
    write_file(&html, &report::html::render(&rec))?;
    if let Some(p) = files.trace {
        write_file(p, &report::trace::render(&rec))?;
    }
    if let Some(p) = files.junit {
        write_file(p, &report::junit::render(&rec))?;
    }
    Ok(Written {
        run_id: rec.run_id.clone(),
        state: rec.state.clone(),
        html,
        trace: files.trace.map(Path::to_path_buf),
        junit: files.junit.map(Path::to_path_buf),
    })
}
