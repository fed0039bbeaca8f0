//! [`RunSettings`]: how a run was started, kept with it in the run database (one JSON value
//! in `runs.settings`) so `run --resume` goes on the same way and `twinflow cancel` knows
//! which jobs are the run's.
//!
//! Unknown keys are refused (a typo must not silently drop a setting) and missing keys take
//! their defaults, so the JSON of runs recorded before schema version 2 (the `runs.params`
//! column, written by the CLI with these same keys) loads unchanged.

use serde::{Deserialize, Serialize};

/// Where a run's tasks run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendChoice {
    /// Local processes (`mpiexec` for multi-rank steps).
    #[default]
    Local,
    /// SLURM: a batch job per task, job arrays, or steps in one allocation.
    Slurm,
}

impl BackendChoice {
    /// Name as stored (`local`, `slurm`).
    pub fn as_str(self) -> &'static str {
        match self {
            BackendChoice::Local => "local",
            BackendChoice::Slurm => "slurm",
        }
    }
}

/// The settings a run was started with.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RunSettings {
    /// `-p NAME=VALUE`, as given.
    pub params: Vec<String>,
    /// `-i NAME=PATH`, as given.
    pub inputs: Vec<String>,
    /// The backend.
    pub backend: BackendChoice,
    /// The site profile (`--profile`), by name or path.
    pub profile: Option<String>,
    /// SLURM job arrays for scattered steps (`--arrays`).
    pub arrays: bool,
    /// All steps in one SLURM allocation (`--allocation`).
    pub allocation: bool,
    /// Every task runs, whatever earlier runs left (`--no-cache`).
    pub no_cache: bool,
    /// In allocation mode: the job id of the allocation the run's steps run in.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allocation_job: Option<String>,
    /// In allocation mode: whether twinflow submitted that allocation (and so may cancel it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allocation_owned: Option<bool>,
}

impl RunSettings {
    /// The allocation twinflow submitted for the run (not one the user made), if any.
    pub fn owned_allocation(&self) -> Option<&str> {
        self.allocation_job.as_deref().filter(|_| self.allocation_owned == Some(true))
    }

    /// The stored form: one JSON object, keys sorted (as the CLI wrote it before schema
    /// version 2, so `status --json` shows the same `params` text).
    pub fn to_json(&self) -> String {
        // Through a `Value`: its map keeps keys sorted.
        serde_json::to_value(self).map(|v| v.to_string()).unwrap_or_else(|_| "{}".into())
    }

    /// Reads [`RunSettings::to_json`] (strict: unknown keys and wrong types are errors).
    pub fn from_json(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// Reads the settings of a run recorded before schema version 2 (the migration's only
    /// reader of old text). Strict first; text that does not fit keeps what does and says
    /// what was dropped, so one odd row never makes the whole database unreadable.
    pub fn from_legacy(text: &str) -> (Self, Option<String>) {
        match Self::from_json(text) {
            Ok(s) => return (s, None),
            Err(strict) => {
                let Ok(serde_json::Value::Object(map)) = serde_json::from_str::<serde_json::Value>(text) else {
                    return (Self::default(), Some(format!("not a JSON object ({strict}); using defaults")));
                };
                let mut out = serde_json::Map::new();
                let mut dropped = vec![];
                for (k, v) in map {
                    let mut one = serde_json::Map::new();
                    one.insert(k.clone(), v.clone());
                    if serde_json::from_value::<Self>(serde_json::Value::Object(one)).is_ok() {
                        out.insert(k, v);
                    } else {
                        dropped.push(format!("`{k}`"));
                    }
                }
                let s = serde_json::from_value(serde_json::Value::Object(out)).unwrap_or_default();
                (s, Some(format!("dropped {} ({strict})", dropped.join(", "))))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the CLI recorded before schema version 2, in allocation mode.
    const V1_ALLOCATION: &str = r#"{"allocation":true,"allocation_job":"42","allocation_owned":true,"arrays":false,"backend":"slurm","inputs":["dem=d.nc"],"no_cache":false,"params":["members=4"],"profile":"site.yaml"}"#;

    #[test]
    fn the_json_of_old_runs_loads_and_is_written_back_the_same() {
        let s = RunSettings::from_json(V1_ALLOCATION).unwrap();
        assert_eq!(s.backend, BackendChoice::Slurm);
        assert_eq!(s.params, ["members=4"]);
        assert_eq!(s.owned_allocation(), Some("42"));
        assert_eq!(s.to_json(), V1_ALLOCATION);
        // A run started outside allocation mode has no allocation keys.
        let plain = r#"{"allocation":false,"arrays":false,"backend":"local","inputs":[],"no_cache":true,"params":[],"profile":null}"#;
        let s = RunSettings::from_json(plain).unwrap();
        assert!(s.no_cache && s.owned_allocation().is_none());
        assert_eq!(s.to_json(), plain);
        // Library callers recorded `{}`.
        assert_eq!(RunSettings::from_json("{}").unwrap(), RunSettings::default());
    }

    #[test]
    fn unknown_keys_are_refused_and_legacy_text_keeps_what_fits() {
        let e = RunSettings::from_json(r#"{"no_cahce":true}"#).unwrap_err().to_string();
        assert!(e.contains("no_cahce"), "{e}");
        let (s, note) = RunSettings::from_legacy(r#"{"params":["a=1"],"colour":"blue","arrays":"yes"}"#);
        assert_eq!(s.params, ["a=1"]);
        assert!(!s.arrays);
        let note = note.unwrap();
        assert!(note.contains("`colour`") && note.contains("`arrays`"), "{note}");
        let (s, note) = RunSettings::from_legacy("not json");
        assert_eq!((s, note.is_some()), (RunSettings::default(), true));
        assert_eq!(RunSettings::from_legacy(V1_ALLOCATION).1, None);
    }
}
