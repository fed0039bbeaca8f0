//! `twinflow stop` and `twinflow signal`: messages to the engine of a cycling run, through
//! the run database (the engine reads them in its loop; nothing needs its pid or a socket,
//! and a message sent while no engine runs waits for the next one).

use std::path::Path;

use indexmap::IndexMap;

use super::{SessionError, find_run};
use crate::model::{Point, parse_instant};
use crate::state::{RunRow, RunState, Store};

fn open(runs_dir: &Path) -> Result<Store, SessionError> {
    super::open_store(runs_dir)
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
    let valid = name.len() <= 64
        && name.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if !valid {
        return Err(SessionError::Usage(format!(
            "signal name `{name}`: names start with a letter and contain only letters, digits, `-` and `_` (at most 64)"
        )));
    }
    let mut map = IndexMap::new();
    for v in values {
        let Some((k, val)) = v.split_once('=').filter(|(k, _)| !k.trim().is_empty()) else {
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
    check_signal(&store, &row, name, point.as_deref())?;
    let text = serde_json::to_string(&map).unwrap_or_else(|_| "{}".into());
    store.put_signal(&row.id, name, point.as_deref(), &text)?;
    let engine_running = row.live_engine().is_some();
    Ok(Signalled { run_id: row.id, point, engine_running })
}

/// Refuses a signal no cycle of the run can take: the run does not cycle or is over, no
/// step waits for that name, or the cycle named is not one of the run's or is over.
fn check_signal(store: &Store, row: &RunRow, name: &str, point: Option<&str>) -> Result<(), SessionError> {
    let cycles = store.cycles(&row.id)?;
    let usage = |m: String| Err(SessionError::Usage(m));
    if row.state == RunState::Succeeded {
        return usage(format!("run {} is finished (succeeded): no cycle will take the signal", row.id));
    }
    // The workflow as the run was started (its file, parameters and inputs).
    let settings = &row.settings;
    let wf =
        super::overrides(&settings.params, &settings.inputs).and_then(|o| super::load(Path::new(&row.file), &o, None));
    match wf {
        Ok(wf) => {
            let Some(spec) = &wf.cycle else {
                return usage(format!(
                    "run {} is of `{}`, which does not cycle: nothing waits for signals",
                    row.id, wf.name
                ));
            };
            let known: Vec<&str> = wf.steps.iter().filter_map(|s| s.wait.as_ref()?.signal.as_deref()).collect();
            if !known.contains(&name) {
                let hint = crate::suggest::did_you_mean(name, known.iter().copied()).unwrap_or_else(|| {
                    if known.is_empty() {
                        "no step of it waits for a signal".into()
                    } else {
                        format!(
                            "its steps wait for {}",
                            known.iter().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(", ")
                        )
                    }
                });
                return usage(format!("no step of `{}` waits for signal `{name}` ({hint})", wf.name));
            }
            if let Some(p) = point {
                let start = settings.cycle_start.as_deref().and_then(|t| Point::parse(t, spec.every).ok());
                let pt = Point::parse(p, spec.every).ok();
                if let (Some(start), Some(pt)) = (start, pt) {
                    let Some(index) = spec.index_of(start, pt) else {
                        return usage(format!(
                            "`{p}` is not a cycle point of run {} (its points start at {start})",
                            row.id
                        ));
                    };
                    let count = settings.cycles.or_else(|| spec.count(start));
                    if count.is_some_and(|n| index >= n) {
                        return usage(format!("cycle {p} is after the last cycle of run {}", row.id));
                    }
                }
            }
        }
        Err(e) => {
            tracing::warn!(run = %row.id, "the run's workflow cannot be read ({e}); the signal is stored unchecked")
        }
    }
    if let Some(p) = point
        && let Some(c) = cycles.iter().find(|c| c.point == p)
        && c.state == crate::state::CycleState::Succeeded
    {
        return usage(format!("cycle {p} of run {} is already finished", row.id));
    }
    Ok(())
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
