//! `twinflow stop` and `twinflow signal`: messages to the engine of a cycling run, through
//! the run database (the engine reads them in its loop; nothing needs its pid or a socket,
//! and a message sent while no engine runs waits for the next one).

use std::path::Path;

use indexmap::IndexMap;

use super::{SessionError, find_run, has_runs};
use crate::model::{Point, parse_instant};
use crate::state::Store;

fn open(runs_dir: &Path) -> Result<Store, SessionError> {
    if !has_runs(runs_dir) {
        return Err(SessionError::Usage(format!(
            "no runs in `{}` (run a workflow first, or pass --runs-dir)",
            runs_dir.display()
        )));
    }
    Ok(Store::open(runs_dir)?)
}

/// What `twinflow stop` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stopped {
    /// The run.
    pub run_id: String,
    /// Whether an engine is working on it now (else the request waits for `--resume`...
    /// which clears it: a stopped run resumed goes on).
    pub engine_running: bool,
}

/// `twinflow stop RUN`: the run's engine lets its active cycles finish, starts no new one,
/// and exits 0.
pub fn stop(runs_dir: &Path, run: &str) -> Result<Stopped, SessionError> {
    let mut store = open(runs_dir)?;
    let row = find_run(&store, run)?;
    let engine_running = row.live_engine().is_some();
    if !engine_running {
        return Err(SessionError::Usage(format!(
            "run `{}` has no engine working on it (it is {}): nothing to stop",
            row.id,
            row.shown_state()
        )));
    }
    store.request_stop(&row.id, true)?;
    Ok(Stopped { run_id: row.id, engine_running })
}

/// What `twinflow signal` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signalled {
    /// The run.
    pub run_id: String,
    /// The cycle point it is for, as stored (`None`: the earliest cycle waiting for it).
    pub point: Option<String>,
    /// Whether an engine is working on the run now.
    pub engine_running: bool,
}

/// `twinflow signal RUN NAME [--cycle POINT] [--value KEY=VALUE...]`: satisfies the
/// `signal: NAME` trigger of the given cycle, or of the earliest cycle that waits for it
/// (now or later: a signal is kept until a cycle takes it).
pub fn signal(
    runs_dir: &Path,
    run: &str,
    name: &str,
    cycle: Option<&str>,
    values: &[String],
) -> Result<Signalled, SessionError> {
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.') {
        return Err(SessionError::Usage(format!("signal name `{name}`: use letters, digits, `-`, `_` and `.`")));
    }
    let mut map = IndexMap::new();
    for v in values {
        let Some((k, val)) = v.split_once('=') else {
            return Err(SessionError::Usage(format!("--value `{v}`: expected KEY=VALUE")));
        };
        // Numbers and booleans as such; anything else is text.
        let json = serde_json::from_str::<serde_json::Value>(val)
            .ok()
            .filter(|j| j.is_number() || j.is_boolean())
            .unwrap_or_else(|| serde_json::Value::String(val.to_string()));
        map.insert(k.to_string(), json);
    }
    let point = cycle.map(point_label).transpose()?;
    let mut store = open(runs_dir)?;
    let row = find_run(&store, run)?;
    let text = serde_json::to_string(&map).unwrap_or_else(|_| "{}".into());
    store.put_signal(&row.id, name, point.as_deref(), &text)?;
    let engine_running = row.live_engine().is_some();
    Ok(Signalled { run_id: row.id, point, engine_running })
}

/// A cycle point as the run labels it: `7`, or `20260301T0000Z` for any ISO 8601 form.
pub fn point_label(text: &str) -> Result<String, SessionError> {
    if let Ok(i) = text.trim().parse::<i64>() {
        return Ok(i.to_string());
    }
    parse_instant(text.trim())
        .map(|t| Point::Time(t).label())
        .map_err(|e| SessionError::Usage(format!("--cycle: {e}, or an integer cycle point")))
}

#[cfg(test)]
mod tests {
    use super::point_label;

    #[test]
    fn cycle_points_are_normalised_to_their_labels() {
        assert_eq!(point_label("12").unwrap(), "12");
        assert_eq!(point_label("2026-03-01T06:00Z").unwrap(), "20260301T0600Z");
        assert_eq!(point_label("2026-03-01T06:00:00Z").unwrap(), "20260301T0600Z");
        assert_eq!(point_label("20260301T0600Z").unwrap(), "20260301T0600Z");
        assert_eq!(point_label("2026-03-01T06:00:30Z").unwrap(), "20260301T060030Z");
        assert!(point_label("yesterday").is_err());
    }
}
