//! Rows of the run database and the states they hold, as types. States are stored as their
//! lowercase names ([`RunState::as_str`], [`TaskState::as_str`], [`AttemptState::as_str`]);
//! a name the code does not know is an error when read, never a silent default.

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};
use serde::Serialize;

use super::settings::RunSettings;
use crate::events::{RunState, TaskState, UnknownState};
use crate::ids::EngineId;

/// State of one attempt of a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AttemptState {
    /// Submitted, not known to have ended.
    Running,
    /// Ended successfully with all declared outputs.
    Succeeded,
    /// Ended otherwise (its `detail` says how).
    Failed,
}

impl AttemptState {
    /// Name as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptState::Running => "running",
            AttemptState::Succeeded => "succeeded",
            AttemptState::Failed => "failed",
        }
    }
}

impl std::str::FromStr for AttemptState {
    type Err = UnknownState;
    /// Parses [`AttemptState::as_str`].
    fn from_str(s: &str) -> Result<Self, UnknownState> {
        Ok(match s {
            "running" => AttemptState::Running,
            "succeeded" => AttemptState::Succeeded,
            "failed" => AttemptState::Failed,
            _ => return Err(UnknownState { kind: "attempt", value: s.to_string() }),
        })
    }
}

impl std::fmt::Display for AttemptState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// States are TEXT columns holding their names.
macro_rules! state_column {
    ($($t:ty),*) => {$(
        impl ToSql for $t {
            fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
                Ok(ToSqlOutput::from(self.as_str()))
            }
        }
        impl FromSql for $t {
            fn column_result(v: ValueRef<'_>) -> FromSqlResult<Self> {
                v.as_str()?.parse().map_err(|e: UnknownState| FromSqlError::Other(Box::new(e)))
            }
        }
    )*};
}
state_column!(RunState, TaskState, AttemptState);

/// A run as listed by `twinflow status`.
#[derive(Debug, Clone, PartialEq)]
pub struct RunRow {
    /// Id.
    pub id: String,
    /// Workflow name.
    pub workflow: String,
    /// Workflow file.
    pub file: String,
    /// How it was started (`-p`, `-i`, backend, ...), what `run --resume` goes on with.
    pub settings: RunSettings,
    /// State.
    pub state: RunState,
    /// Creation time (ms).
    pub created_at: i64,
    /// Last update (ms).
    pub updated_at: i64,
    /// Process id of the engine that last worked on the run.
    pub engine_pid: Option<u32>,
    /// Start time of that engine process (clock ticks since boot; `None` in rows written
    /// before schema version 2).
    pub engine_start: Option<u64>,
}

impl RunRow {
    /// The engine that last worked on the run, when both its pid and start time are known
    /// (see [`EngineId::is_running`]).
    pub fn engine(&self) -> Option<EngineId> {
        Some(EngineId { pid: self.engine_pid?, start: self.engine_start? })
    }

    /// The state to show: `interrupted` for a run recorded as running whose engine is gone
    /// (killed, or its machine rebooted), else the recorded state. `twinflow run --resume`
    /// continues an interrupted run.
    pub fn shown_state(&self) -> &'static str {
        if self.state == RunState::Running
            && self.engine_pid != Some(std::process::id())
            && self.live_engine().is_none()
        {
            "interrupted"
        } else {
            self.state.as_str()
        }
    }

    /// The pid of another engine still executing this run, if one is: the run is recorded
    /// as running and its engine still runs (same pid and start time; for runs recorded
    /// before the start time was, schema version 1: a live process with that pid whose
    /// command line names twinflow).
    pub fn live_engine(&self) -> Option<u32> {
        let pid = self.engine_pid.filter(|p| *p != std::process::id() && self.state == RunState::Running)?;
        let alive = match self.engine() {
            Some(e) => e.is_running(),
            None => std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains("twinflow")),
        };
        alive.then_some(pid)
    }
}

impl Serialize for RunRow {
    /// The shape of `twinflow status --json`: `params` is the settings as a JSON string (as
    /// before schema version 2), `settings` the same as an object, `state` the
    /// [shown state](RunRow::shown_state).
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct View<'a> {
            id: &'a str,
            workflow: &'a str,
            file: &'a str,
            params: String,
            state: &'static str,
            created_at: i64,
            updated_at: i64,
            engine_pid: Option<u32>,
            engine_start: Option<u64>,
            settings: &'a RunSettings,
        }
        View {
            id: &self.id,
            workflow: &self.workflow,
            file: &self.file,
            params: self.settings.to_json(),
            state: self.shown_state(),
            created_at: self.created_at,
            updated_at: self.updated_at,
            engine_pid: self.engine_pid,
            engine_start: self.engine_start,
            settings: &self.settings,
        }
        .serialize(s)
    }
}

/// A task row.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TaskRow {
    /// Task name.
    pub task: String,
    /// Step name.
    pub step: String,
    /// State.
    pub state: TaskState,
    /// Attempts made.
    pub attempts: u32,
    /// Cache key of the successful attempt.
    pub cache_key: Option<String>,
    /// Its directory: the result's (`out/` of the successful attempt, or of an earlier run
    /// for a cached task), or the last attempt's when that failed or was cancelled.
    pub dir: Option<String>,
    /// Value outputs as JSON.
    pub outputs: Option<String>,
    /// Job id of the latest attempt.
    pub job_id: Option<String>,
    /// Failure or skip reason.
    pub message: Option<String>,
    /// Start (ms).
    pub started_at: Option<i64>,
    /// End (ms).
    pub finished_at: Option<i64>,
    /// Cycle index (cycling workflows).
    pub cycle: Option<u64>,
    /// What its trigger found, as JSON, once its triggers were satisfied.
    pub gate: Option<String>,
    /// Member index, for a member of a scattered step.
    pub member: Option<u32>,
    /// A member's scatter values (`seed=2 rain=40.0`).
    pub label: Option<String>,
}

/// One attempt of a task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AttemptRow {
    /// Attempt number (1-based).
    pub attempt: u32,
    /// Backend job id.
    pub job_id: Option<String>,
    /// State.
    pub state: AttemptState,
    /// Exit code, when the job exited.
    pub exit_code: Option<i32>,
    /// How it ended (`ok`, or what went wrong).
    pub detail: Option<String>,
    /// Start (ms).
    pub started_at: Option<i64>,
    /// End (ms).
    pub finished_at: Option<i64>,
}

/// A cache entry: one successful execution of a task, found by its cache key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheEntry {
    /// Key.
    pub key: String,
    /// The task that produced it (`sim[3]`, `POINT/sim[3]`): another member, or the same
    /// member of a sweep ordered otherwise, may reuse it.
    pub task: String,
    /// Components of the key as JSON, for `twinflow why`.
    pub components: String,
    /// Output directory.
    pub dir: String,
    /// Value outputs as JSON.
    pub outputs: String,
    /// Run that produced it.
    pub run_id: String,
    /// When it was recorded (ms).
    pub at: i64,
}
