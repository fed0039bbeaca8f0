//! What the engine reports while it runs. The engine emits [`Event`]s; the CLI renders
//! them (progress bars for people, JSON lines for machines).

use std::time::Duration;

use serde::Serialize;

/// Final state of a task in a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TaskState {
    /// Not started yet.
    Pending,
    /// Submitted to the backend and running (or queued there).
    Running,
    /// Finished successfully with all declared outputs.
    Succeeded,
    /// Up to date from an earlier run: not run again.
    Cached,
    /// `when:` was false, or an upstream step was skipped.
    Skipped,
    /// Failed after all retries.
    Failed,
    /// Not run because an upstream task failed.
    UpstreamFailed,
    /// Stopped by cancellation.
    Cancelled,
}

impl TaskState {
    /// Name as stored and printed.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Pending => "pending",
            TaskState::Running => "running",
            TaskState::Succeeded => "succeeded",
            TaskState::Cached => "cached",
            TaskState::Skipped => "skipped",
            TaskState::Failed => "failed",
            TaskState::UpstreamFailed => "upstream-failed",
            TaskState::Cancelled => "cancelled",
        }
    }
    /// Whether the task is finished for good (successfully or not).
    pub fn is_terminal(self) -> bool {
        !matches!(self, TaskState::Pending | TaskState::Running)
    }
    /// Whether downstream tasks may use its outputs.
    pub fn is_done_ok(self) -> bool {
        matches!(self, TaskState::Succeeded | TaskState::Cached)
    }
}

impl std::str::FromStr for TaskState {
    type Err = UnknownState;
    /// Parses [`TaskState::as_str`].
    fn from_str(s: &str) -> Result<Self, UnknownState> {
        Ok(match s {
            "pending" => TaskState::Pending,
            "running" => TaskState::Running,
            "succeeded" => TaskState::Succeeded,
            "cached" => TaskState::Cached,
            "skipped" => TaskState::Skipped,
            "failed" => TaskState::Failed,
            "upstream-failed" => TaskState::UpstreamFailed,
            "cancelled" => TaskState::Cancelled,
            _ => return Err(UnknownState { kind: "task", value: s.to_string() }),
        })
    }
}

impl std::fmt::Display for TaskState {
    /// [`TaskState::as_str`], padded as the format asks (`{:<16}` in tables).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// State of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RunState {
    /// An engine works on it (or was killed while it did).
    Running,
    /// Every task succeeded, was cached or skipped.
    Succeeded,
    /// Some task failed (or was left pending).
    Failed,
    /// Stopped by cancellation.
    Cancelled,
    /// A cycling run stopped by `twinflow stop` after its active cycles (resumable).
    Stopped,
}

impl RunState {
    /// Name as stored and printed.
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Running => "running",
            RunState::Succeeded => "succeeded",
            RunState::Failed => "failed",
            RunState::Cancelled => "cancelled",
            RunState::Stopped => "stopped",
        }
    }
}

impl std::str::FromStr for RunState {
    type Err = UnknownState;
    /// Parses [`RunState::as_str`].
    fn from_str(s: &str) -> Result<Self, UnknownState> {
        Ok(match s {
            "running" => RunState::Running,
            "succeeded" => RunState::Succeeded,
            "failed" => RunState::Failed,
            "cancelled" => RunState::Cancelled,
            "stopped" => RunState::Stopped,
            _ => return Err(UnknownState { kind: "run", value: s.to_string() }),
        })
    }
}

impl std::fmt::Display for RunState {
    /// [`RunState::as_str`], padded as the format asks.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// A state name that is not one of its type's names (a run database written by other code).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} state `{value}`")]
pub struct UnknownState {
    /// What kind of state (`task`, `run`, `attempt`).
    pub kind: &'static str,
    /// The name found.
    pub value: String,
}

/// Why a task of a run did not succeed, as the run summary lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskFailure {
    /// Stopped by cancellation (a signal, `twinflow cancel`).
    Cancelled,
    /// Failed for good; the message says why.
    Failed(String),
}

impl std::fmt::Display for TaskFailure {
    /// `cancelled`, or the failure's message.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TaskFailure::Cancelled => f.write_str("cancelled"),
            TaskFailure::Failed(m) => f.write_str(m),
        }
    }
}

/// Something that happened during a run.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum Event {
    /// The run started (or resumed).
    RunStarted {
        /// Run id.
        run_id: String,
        /// Workflow name.
        workflow: String,
        /// Runnable tasks in the plan.
        tasks: usize,
        /// Tasks already finished by an earlier attempt of this run (resume).
        already_done: usize,
        /// Whether this is a resume.
        resumed: bool,
        /// Each step's task count, in plan order (empty for a cycling run, whose tasks come
        /// cycle by cycle).
        #[serde(skip_serializing_if = "Vec::is_empty")]
        steps: Vec<StepTasks>,
    },
    /// A task was submitted to the backend.
    TaskStarted {
        /// Task name (`sim[3]`).
        task: String,
        /// Its cycle point, in a cycling run (also the prefix of `task`).
        #[serde(skip_serializing_if = "Option::is_none")]
        cycle: Option<String>,
        /// A member's scatter values (`seed=2 rain=40.0`).
        #[serde(skip_serializing_if = "Option::is_none")]
        label: Option<String>,
        /// Attempt number (1-based).
        attempt: u32,
        /// Backend job id.
        job_id: String,
        /// The attempt's directory (`RUN/steps/STEP[/MEMBER]/attempt-N`).
        #[serde(skip_serializing_if = "Option::is_none")]
        dir: Option<String>,
    },
    /// A task reached a final state.
    TaskFinished {
        /// Task name.
        task: String,
        /// Its cycle point, in a cycling run (also the prefix of `task`).
        #[serde(skip_serializing_if = "Option::is_none")]
        cycle: Option<String>,
        /// A member's scatter values (`seed=2 rain=40.0`).
        #[serde(skip_serializing_if = "Option::is_none")]
        label: Option<String>,
        /// Final state.
        state: TaskState,
        /// Seconds it ran (0 for cached/skipped).
        seconds: f64,
        /// Why, for failures and skips. A failure's message names the attempt directory
        /// and its stdout/stderr files and shows the end of its output.
        #[serde(skip_serializing_if = "Option::is_none")]
        message: Option<String>,
        /// Where it is: its result (`out/`, or an earlier run's for a cached task), or the
        /// directory of its last attempt when that failed or was cancelled.
        #[serde(flatten)]
        files: TaskFiles,
    },
    /// A task failed and will be retried.
    TaskRetry {
        /// Task name.
        task: String,
        /// Its cycle point, in a cycling run (also the prefix of `task`).
        #[serde(skip_serializing_if = "Option::is_none")]
        cycle: Option<String>,
        /// A member's scatter values (`seed=2 rain=40.0`).
        #[serde(skip_serializing_if = "Option::is_none")]
        label: Option<String>,
        /// The attempt that failed.
        attempt: u32,
        /// Delay before the next attempt in seconds.
        delay_seconds: f64,
        /// What went wrong.
        message: String,
        /// The failed attempt's directory, output files and exit status.
        #[serde(flatten)]
        files: TaskFiles,
    },
    /// A service is ready: its dependants may start; it runs on until the run ends.
    ServiceReady {
        /// Task name.
        task: String,
        /// Its cycle point, in a cycling run (also the prefix of `task`).
        #[serde(skip_serializing_if = "Option::is_none")]
        cycle: Option<String>,
        /// The attempt that is ready.
        attempt: u32,
    },
    /// A ready service ended by itself and will be started again.
    ServiceRestarted {
        /// Task name.
        task: String,
        /// Its cycle point, in a cycling run (also the prefix of `task`).
        #[serde(skip_serializing_if = "Option::is_none")]
        cycle: Option<String>,
        /// The attempt that ended.
        attempt: u32,
        /// Restarts so far, this one included.
        restarts: u32,
        /// Delay before the restart in seconds.
        delay_seconds: f64,
        /// How it ended.
        message: String,
    },
    /// A line of an alerts output (`report: { alerts: [out.NAME] }`) of a task that
    /// succeeded: something the step wants a person or a system to act on.
    Alert {
        /// Task name.
        task: String,
        /// Its cycle point, in a cycling run (also the prefix of `task`).
        #[serde(skip_serializing_if = "Option::is_none")]
        cycle: Option<String>,
        /// The output that holds it (`out.NAME`'s name).
        output: String,
        /// The line as JSON (a line that is not JSON is kept as a string).
        alert: serde_json::Value,
    },
    /// A cycle was activated (cycling workflows).
    CycleStarted {
        /// Index from 0.
        cycle: u64,
        /// Its point.
        point: String,
    },
    /// A cycle finished without failures and retired.
    CycleFinished {
        /// Index from 0.
        cycle: u64,
        /// Its point.
        point: String,
        /// Its tasks by state.
        counts: Counts,
    },
    /// A task's upstream is done; it waits for its triggers (`wait:`).
    TaskWaiting {
        /// Task name.
        task: String,
        /// Its cycle point, in a cycling run (also the prefix of `task`).
        #[serde(skip_serializing_if = "Option::is_none")]
        cycle: Option<String>,
        /// What it waits for.
        waiting_for: String,
    },
    /// `twinflow stop`: the active cycles finish, no new one starts.
    Stopping {
        /// The next cycle (index), which will not start.
        next_cycle: u64,
        /// Its point.
        point: String,
    },
    /// Cancellation was requested (signal): running tasks get SIGTERM, then SIGKILL after
    /// the grace period.
    Cancelling {
        /// Signal name.
        signal: String,
        /// Tasks being stopped.
        running: usize,
        /// The grace period between SIGTERM and SIGKILL, when the engine applies it (the
        /// local backend; SLURM applies its own).
        #[serde(skip_serializing_if = "Option::is_none")]
        grace_seconds: Option<f64>,
    },
    /// Cancellation was requested again while tasks were being stopped: they are killed at
    /// once (SIGKILL), without waiting for the rest of the grace period.
    Killing {
        /// Signal name.
        signal: String,
        /// Tasks being killed.
        running: usize,
    },
    /// The run ended.
    RunFinished {
        /// Run id.
        run_id: String,
        /// `succeeded`, `failed` or `cancelled`.
        state: RunState,
        /// Counts by state.
        counts: Counts,
        /// Wall-clock seconds.
        seconds: f64,
        /// The root workflow's `outputs:`, resolved: name → path or value (`null` when a
        /// step it reads did not succeed).
        #[serde(skip_serializing_if = "indexmap::IndexMap::is_empty")]
        outputs: indexmap::IndexMap<String, serde_json::Value>,
        /// Every path `publish:` copied a result to.
        #[serde(skip_serializing_if = "Vec::is_empty")]
        published: Vec<String>,
    },
}

/// A step's share of a run: its tasks, and how many an earlier engine finished (resume).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct StepTasks {
    /// Step name (`twin/summary` inside a sub-workflow).
    pub step: String,
    /// Its tasks (members of a scatter).
    pub tasks: usize,
    /// Of those, finished before this engine started.
    pub done: usize,
}

/// Where a task's attempt ran and how its process ended, in task events (each field only
/// where it applies: a cached task has a directory but no exit code, a task that never ran
/// has none of them).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TaskFiles {
    /// The directory: the attempt's, or its result's (`out/`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dir: Option<String>,
    /// Its standard output (`DIR/.twinflow/stdout`), for an attempt of this run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stdout: Option<String>,
    /// Its standard error (`DIR/.twinflow/stderr`), for an attempt of this run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stderr: Option<String>,
    /// The exit code of its process, when it exited.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// The signal that killed its process, when one did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
}

/// Number of tasks in each state.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize, PartialEq, Eq)]
#[serde(default)]
#[allow(missing_docs)]
pub struct Counts {
    pub succeeded: usize,
    pub cached: usize,
    pub skipped: usize,
    pub failed: usize,
    pub upstream_failed: usize,
    pub cancelled: usize,
    pub pending: usize,
}

impl Counts {
    /// Adds the tasks counted in `other`.
    pub fn merge(&mut self, other: &Counts) {
        self.succeeded += other.succeeded;
        self.cached += other.cached;
        self.skipped += other.skipped;
        self.failed += other.failed;
        self.upstream_failed += other.upstream_failed;
        self.cancelled += other.cancelled;
        self.pending += other.pending;
    }

    /// Adds one task in `state`.
    pub fn add(&mut self, state: TaskState) {
        self.add_many(state, 1);
    }

    /// Adds `n` tasks in `state`.
    pub fn add_many(&mut self, state: TaskState, n: usize) {
        match state {
            TaskState::Succeeded => self.succeeded += n,
            TaskState::Cached => self.cached += n,
            TaskState::Skipped => self.skipped += n,
            TaskState::Failed => self.failed += n,
            TaskState::UpstreamFailed => self.upstream_failed += n,
            TaskState::Cancelled => self.cancelled += n,
            TaskState::Pending | TaskState::Running => self.pending += n,
        }
    }

    /// Tasks counted.
    pub fn total(&self) -> usize {
        self.succeeded + self.cached + self.skipped + self.failed + self.upstream_failed + self.cancelled + self.pending
    }
}

/// Receives events. Implementations must be cheap: they are called on the scheduler's
/// thread.
pub trait Reporter: Send {
    /// Called for every event, in order.
    fn event(&mut self, event: &Event);
}

/// A reporter that drops everything (library use, benchmarks).
#[derive(Debug, Default)]
pub struct NullReporter;

impl Reporter for NullReporter {
    fn event(&mut self, _: &Event) {}
}

/// Seconds as f64 with millisecond precision, for events.
pub fn secs(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}

/// The alerts of an alerts output (`report: { alerts: [out.NAME] }`): one per non-blank
/// line, as JSON, a line that is not JSON as a JSON string. The `alert` events and the
/// run report read the file alike.
pub fn alert_lines(text: &str) -> impl Iterator<Item = serde_json::Value> + '_ {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| serde_json::from_str(line).unwrap_or_else(|_| serde_json::Value::String(line.to_string())))
}
