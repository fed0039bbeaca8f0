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
    /// Cycling: run this many cycles in all (`--cycles`), overriding the workflow's end.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cycles: Option<u64>,
    /// Cycling: the last cycle point (`--until`), overriding the workflow's end.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
    /// Cycling: the first cycle point as resolved when the run started (`start: now`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cycle_start: Option<String>,
    /// Cycling: the step between points when the run started (a resumed run must keep it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cycle_every: Option<String>,
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
            Ok(s) => (s, None),
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

/// The settings of a resumed run ([`RunSettings::resumed`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resumed {
    /// What the run goes on with (its previous allocation included).
    pub settings: RunSettings,
    /// What stays recorded with the run.
    pub record: RunSettings,
    /// The run goes on with the SLURM backend it was started with although the command line
    /// named no backend (worth telling the user).
    pub slurm_from_saved: bool,
}

impl RunSettings {
    /// The settings a resumed run goes on with: `given` (from the command line, where the
    /// backend defaults to local) merged over `self` (those recorded with the run).
    ///
    /// - `-p`/`-i`: the given ones if any is given, else the saved ones;
    /// - the backend: the saved SLURM backend unless a backend or profile is given
    ///   (resuming SLURM jobs with the local backend would submit them again);
    /// - the profile: the given one, else the saved one;
    /// - the SLURM mode (arrays, allocation): the saved one unless one is given;
    /// - `--no-cache`: given now or when the run started;
    /// - `--cycles`/`--until`: the given bound if any is given, else the saved one; the
    ///   first cycle point resolved when the run started is kept;
    /// - the record: unchanged unless `-p`/`-i` are given, then the merged settings.
    pub fn resumed(&self, given: &RunSettings) -> Resumed {
        let keep_values = given.params.is_empty() && given.inputs.is_empty();
        // `--cycles`/`--until` given again replace the saved bound.
        let bound_given = given.cycles.is_some() || given.until.is_some();
        let saved_slurm = self.backend == BackendChoice::Slurm;
        let slurm_from_saved = given.backend == BackendChoice::Local && given.profile.is_none() && saved_slurm;
        let backend = if slurm_from_saved { BackendChoice::Slurm } else { given.backend };
        let (arrays, allocation) =
            if backend == BackendChoice::Slurm && saved_slurm && !given.arrays && !given.allocation {
                (self.arrays, self.allocation)
            } else {
                (given.arrays, given.allocation)
            };
        let (params, inputs) = if keep_values {
            (self.params.clone(), self.inputs.clone())
        } else {
            (given.params.clone(), given.inputs.clone())
        };
        let merged = RunSettings {
            params,
            inputs,
            backend,
            profile: given.profile.clone().or_else(|| self.profile.clone()),
            arrays,
            allocation,
            no_cache: given.no_cache,
            allocation_job: None,
            allocation_owned: None,
            cycles: if bound_given { given.cycles } else { self.cycles },
            until: if bound_given { given.until.clone() } else { self.until.clone() },
            cycle_start: self.cycle_start.clone(),
            cycle_every: self.cycle_every.clone(),
        };
        let record = if keep_values {
            RunSettings { cycles: merged.cycles, until: merged.until.clone(), ..self.clone() }
        } else {
            merged.clone()
        };
        let settings = RunSettings {
            no_cache: given.no_cache || self.no_cache,
            allocation_job: self.allocation_job.clone(),
            allocation_owned: self.allocation_owned,
            ..merged
        };
        Resumed { settings, record, slurm_from_saved }
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

    #[test]
    fn a_resumed_run_goes_on_with_its_own_settings_unless_given_new_ones() {
        let saved = RunSettings::from_json(V1_ALLOCATION).unwrap();
        // `run --resume` alone: everything as saved, the previous allocation included.
        let r = saved.resumed(&RunSettings::default());
        assert!(r.slurm_from_saved);
        assert_eq!(r.settings, saved);
        assert_eq!(r.record, saved);
        // A profile given again: the backend is the given (local) one, the mode is not kept.
        let given = RunSettings { profile: Some("other.yaml".into()), ..RunSettings::default() };
        let r = saved.resumed(&given);
        assert!(!r.slurm_from_saved);
        assert_eq!((r.settings.backend, r.settings.allocation), (BackendChoice::Local, false));
        assert_eq!(r.settings.params, saved.params, "no -p given: the saved ones");
        assert_eq!(r.record, saved, "no -p given: the record stays");
        // Arrays given with SLURM: that mode, not the saved allocation mode.
        let given = RunSettings { backend: BackendChoice::Slurm, arrays: true, ..RunSettings::default() };
        let r = saved.resumed(&given);
        assert_eq!((r.settings.arrays, r.settings.allocation), (true, false));
        // New `-p`: used and recorded, with the merged backend and profile; `--no-cache` of
        // the start still holds.
        let saved = RunSettings { no_cache: true, ..saved };
        let given = RunSettings { params: vec!["members=8".into()], ..RunSettings::default() };
        let r = saved.resumed(&given);
        assert_eq!(
            (r.settings.params.as_slice(), r.settings.inputs.is_empty()),
            (&["members=8".to_string()][..], true)
        );
        assert!(r.settings.no_cache && !r.record.no_cache);
        assert_eq!((r.record.backend, r.record.profile.as_deref()), (BackendChoice::Slurm, Some("site.yaml")));
        assert_eq!(r.record.allocation_job, None);
        assert_eq!(r.settings.allocation_job.as_deref(), Some("42"));
    }
}
