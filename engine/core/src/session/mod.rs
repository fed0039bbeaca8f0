//! Sessions: what the command line asks of the engine, one function per command.
//!
//! - [`check`]: `twinflow validate` (parse → validate → compile, nothing run);
//! - [`render::plan_view`]: `twinflow plan`, the DAG with each task's command as the chosen
//!   backend would launch it;
//! - [`start::run`]: `twinflow run` and `run --resume`: merges the settings given with those
//!   recorded with the run ([`crate::state::RunSettings`]), chooses and builds the backend,
//!   gets a SLURM allocation and keeps its heartbeat, runs the plan, releases the allocation;
//! - [`cancel::cancel`]: `twinflow cancel`;
//! - [`status`] and [`why`]: reports from the run database;
//! - [`logs::find`]: `twinflow logs`, the files holding a task's output;
//! - [`results::outputs`]: `twinflow outputs`, where a run's results are;
//! - [`clean::clean`]: `twinflow clean`, removing old runs safely.
//!
//! Every session loads a workflow the same way ([`load`]): parse, validate, then give every
//! step the site profile's default resources where the step sets none of its own (a
//! documented step of the pipeline, applied to the model before it is compiled), then
//! compile. The CLI only parses arguments and renders what comes back; the library never
//! prints: what a user should read besides events (a notice that a resumed run goes on
//! with SLURM, a warning that an allocation could not be released) is handed to the
//! caller's [`Notices`].

pub mod backend;
pub mod cancel;
pub mod clean;
pub mod control;
mod cycles_view;
pub mod export;
pub mod logs;
pub mod pilot;
pub mod preflight;
pub mod render;
pub mod report;
pub mod results;
pub mod start;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::diag::Diagnostics;
use crate::execute::profile::Profile;
use crate::model::Workflow;
use crate::plan::{self, Plan};
use crate::run::RunError;
use crate::run::why::Verdict;
use crate::state::{RunRow, StateError, Store, TaskRow};
use crate::validate::{self, Overrides};

pub use crate::run::{RunOutcome, RunSummary};
pub use crate::spec::schema::workflow_schema_json;
pub use crate::state::{BackendChoice, CycleRow, CycleState, RunSettings};

/// Name of the run database in a runs directory.
pub const DATABASE: &str = "twinflow.db";

/// Why a session could not do what it was asked (task failures are not errors: they are in
/// the run's summary).
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The workflow (or a value given for it) is invalid: every problem, located.
    #[error("the workflow is invalid ({} problems)", .0.len())]
    Invalid(Diagnostics),
    /// The command line asks for something that cannot be done (a mistake of the user).
    #[error("{0}")]
    Usage(String),
    /// The run database failed.
    #[error(transparent)]
    State(#[from] StateError),
    /// The run stopped on an error of the engine or the backend.
    #[error(transparent)]
    Run(RunError),
    /// What the run needs is missing from this machine (a program, the MPI launcher,
    /// `twin-kernel`): every one, located in the workflow.
    #[error("programs the workflow runs are missing ({} problems)", .0.len())]
    Environment(Diagnostics),
    /// The backend failed outside a run (cancelling jobs, finding an allocation).
    #[error("{0}")]
    Backend(String),
    /// A file operation failed.
    #[error("{action} `{path}`")]
    Io {
        /// What was being done.
        action: &'static str,
        /// Path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

impl From<RunError> for SessionError {
    fn from(e: RunError) -> Self {
        match e {
            RunError::Usage(m) => SessionError::Usage(m),
            other => SessionError::Run(other),
        }
    }
}

/// Receives what a session has to tell besides events.
pub trait Notices {
    /// Something worth knowing (`resuming with the SLURM backend ...`).
    fn notice(&mut self, message: &str);
    /// Something went wrong that did not stop the session.
    fn warning(&mut self, message: &str);
}

/// Drops notices (library use).
#[derive(Debug, Default)]
pub struct NoNotices;

impl Notices for NoNotices {
    fn notice(&mut self, _: &str) {}
    fn warning(&mut self, _: &str) {}
}

/// `-p NAME=VALUE` and `-i NAME=PATH` as given on the command line (and recorded with a run)
/// into the values validation takes.
pub fn overrides(params: &[String], inputs: &[String]) -> Result<Overrides, SessionError> {
    fn kv(items: &[String], what: &str) -> Result<Vec<(String, String)>, SessionError> {
        items
            .iter()
            .map(|s| match s.split_once('=') {
                Some((k, v)) if !k.is_empty() => Ok((k.trim().to_string(), v.to_string())),
                _ => Err(SessionError::Usage(format!("`{s}` is not `NAME=VALUE` ({what})"))),
            })
            .collect()
    }
    Ok(Overrides {
        params: kv(params, "-p")?,
        inputs: kv(inputs, "-i")?.into_iter().map(|(k, v)| (k, PathBuf::from(v))).collect(),
    })
}

/// Loads a workflow for a session: parse and validate `file` with `overrides`, then give
/// every step `profile`'s default resources (`default_memory`, `default_threads`, ...) where
/// the step sets none of its own.
pub fn load(file: &Path, overrides: &Overrides, profile: Option<&Profile>) -> Result<Workflow, SessionError> {
    let mut wf = validate::load(file, overrides).map_err(SessionError::Invalid)?;
    if let Some(p) = profile {
        for s in &mut wf.steps {
            p.apply_defaults(&mut s.resources);
        }
    }
    Ok(wf)
}

/// Compiles a loaded workflow.
pub fn compile(wf: Workflow) -> Result<Plan, SessionError> {
    plan::compile(Arc::new(wf)).map_err(SessionError::Invalid)
}

/// What `twinflow validate` reports about a valid workflow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    /// Workflow name.
    pub name: String,
    /// Steps (sub-workflow steps included).
    pub steps: usize,
    /// Tasks after scatter expansion.
    pub tasks: usize,
    /// What may go wrong when it runs (relative file arguments), as
    /// `file:line:col: field: message`.
    pub warnings: Vec<String>,
}

/// `twinflow validate`: loads and compiles, runs nothing. With `check_env`, also looks up
/// the programs the steps run, `twin-kernel` and the MPI launcher (`mpiexec`, or
/// `mpiexec` given, as with `twinflow run` on the local backend): missing ones are a
/// [`SessionError::Environment`].
pub fn check(
    file: &Path,
    params: &[String],
    inputs: &[String],
    check_env: Option<&backend::LocalSettings>,
) -> Result<Checked, SessionError> {
    let wf = load(file, &overrides(params, inputs)?, None)?;
    let (name, steps) = (wf.name.clone(), wf.steps.len());
    let p = compile(wf)?;
    let needs = match check_env {
        Some(given) => start::preflight_needs(None, &backend::local_options(None, given)?),
        // Without `--check-env` only the warnings are wanted: nothing is looked up.
        None => preflight::Needs { programs: false, launcher: None, kernel: None },
    };
    let found = preflight::check(&p.workflow, &needs);
    if !found.missing.is_empty() {
        return Err(SessionError::Environment(Diagnostics(found.missing)));
    }
    Ok(Checked { name, steps, tasks: p.task_count(), warnings: found.warnings })
}

/// The standard output and error files of an attempt (or result) directory `dir`:
/// `DIR/.twinflow/stdout` and `DIR/.twinflow/stderr`.
pub fn log_files(dir: &Path) -> (PathBuf, PathBuf) {
    crate::run::failure::log_files(dir)
}

/// Whether `runs_dir` has a run database.
pub fn has_runs(runs_dir: &Path) -> bool {
    runs_dir.join(DATABASE).exists()
}

/// What `twinflow status` shows.
#[derive(Debug)]
pub enum Status {
    /// The runs directory has no run database (no run was ever started there).
    NoRuns,
    /// Every run, newest first.
    Runs(Vec<RunListing>),
    /// One run with its tasks and the time each task's attempts ran (ms).
    Run {
        /// The run.
        run: Box<RunRow>,
        /// Its cycles (cycling runs; empty otherwise).
        cycles: Vec<crate::state::CycleRow>,
        /// Its tasks.
        tasks: Vec<TaskRow>,
        /// Milliseconds the attempts of each task ran, by task name.
        ran_ms: std::collections::HashMap<String, i64>,
    },
}

/// A run as `twinflow status` lists it: the run, its tasks by state and how long it took.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RunListing {
    /// The run.
    #[serde(flatten)]
    pub run: RunRow,
    /// Its tasks by state (a cycling run: those of the cycles that started).
    pub counts: crate::events::Counts,
    /// Seconds from its start to its last change (to now while an engine runs it; a resumed
    /// run counts the time in between).
    pub seconds: f64,
}

/// `twinflow status [RUN]`: every run of `runs_dir`, or one (`latest` for the newest).
/// Asking for a run where there are none is a usage error; listing none is not.
pub fn status(runs_dir: &Path, run: Option<&str>) -> Result<Status, SessionError> {
    if !has_runs(runs_dir) {
        return match run {
            Some(_) => Err(no_runs(runs_dir)),
            None => Ok(Status::NoRuns),
        };
    }
    let store = Store::open(runs_dir)?;
    let Some(id) = run else {
        let mut counts = store.task_counts()?;
        let now = crate::state::now_ms();
        let runs = store
            .runs()?
            .into_iter()
            .map(|run| {
                // A run still executing has run until now; any other until its last update.
                let end = if run.live_engine().is_some() { now } else { run.updated_at };
                let seconds = (end - run.created_at).max(0) as f64 / 1000.0;
                RunListing { counts: counts.remove(&run.id).unwrap_or_default(), seconds, run }
            })
            .collect();
        return Ok(Status::Runs(runs));
    };
    let run = find_run(&store, id)?;
    let tasks = store.tasks(&run.id)?;
    let ran_ms = store.run_times(&run.id)?;
    let cycles = store.cycles(&run.id)?;
    Ok(Status::Run { run: Box::new(run), cycles, tasks, ran_ms })
}

/// The run database of `runs_dir`; a directory without runs is a usage error (it says how
/// to get one).
pub(crate) fn open_store(runs_dir: &Path) -> Result<Store, SessionError> {
    if !has_runs(runs_dir) {
        return Err(no_runs(runs_dir));
    }
    Ok(Store::open(runs_dir)?)
}

/// The run database of `runs_dir` and its run `run` (`latest` for the newest).
pub(crate) fn open_run(runs_dir: &Path, run: &str) -> Result<(Store, RunRow), SessionError> {
    let store = open_store(runs_dir)?;
    let row = find_run(&store, run)?;
    Ok((store, row))
}

fn no_runs(runs_dir: &Path) -> SessionError {
    SessionError::Usage(format!("no runs in `{}` (run a workflow first, or pass --runs-dir)", runs_dir.display()))
}

/// A run by id, `latest` for the newest; a missing one is a usage error.
pub(crate) fn find_run(store: &Store, id: &str) -> Result<RunRow, SessionError> {
    store.run(if id == "latest" { None } else { Some(id) }).map_err(|e| match e {
        StateError::NoSuchRun(_) => SessionError::Usage(e.to_string()),
        other => SessionError::State(other),
    })
}

/// `twinflow why FILE [STEP]`: whether each task (of `step`, or all) would run again, and
/// which part of its cache key changed.
pub fn why(
    file: &Path,
    params: &[String],
    inputs: &[String],
    runs_dir: &Path,
    step: Option<&str>,
    cycle: Option<&str>,
    rerun: &[String],
) -> Result<Vec<Verdict>, SessionError> {
    let wf = load(file, &overrides(params, inputs)?, None)?;
    // A step, or one task of it: `sim[7]`.
    let base = step.map(|s| s.split_once('[').map_or(s, |(b, _)| b));
    if let Some(s) = base
        && !wf.steps.iter().any(|x| x.name == s)
    {
        let names: Vec<&str> = wf.steps.iter().map(|x| x.name.as_str()).collect();
        let hint = crate::suggest::did_you_mean(s, names.iter().copied())
            .unwrap_or_else(|| format!("steps: {}", names.join(", ")));
        return Err(SessionError::Usage(format!("workflow `{}` has no step `{s}` ({hint})", wf.name)));
    }
    let p = compile(wf)?;
    start::check_rerun(&p, rerun)?;
    if let Some(s) = step
        && base != Some(s)
        && !p.graph.node_weights().any(|t| !t.is_join() && p.task_name(*t) == s)
    {
        return Err(SessionError::Usage(format!(
            "workflow `{}` has no task `{s}` (`twinflow plan` lists the tasks)",
            p.workflow.name
        )));
    }
    if !has_runs(runs_dir) {
        // Not created here: a mistyped `--runs-dir` would look like "never ran".
        return Err(SessionError::Usage(format!(
            "no runs in `{}` (run the workflow first, or pass --runs-dir)",
            runs_dir.display()
        )));
    }
    let mut store = Store::open(runs_dir)?;
    let at = why_cycle(&p, &store, cycle)?;
    Ok(crate::run::why::why(&p, &mut store, step, &crate::run::job::kernel_binary(), at, rerun)?)
}

/// The cycle `why` looks at: `--cycle POINT`, else the first. With `start: now`, the points
/// are those of the latest run of the workflow.
fn why_cycle(
    p: &crate::plan::Plan,
    store: &Store,
    cycle: Option<&str>,
) -> Result<Option<crate::run::why::WhyCycle>, SessionError> {
    use crate::model::{Point, Start};
    let Some(spec) = &p.workflow.cycle else {
        return match cycle {
            Some(_) => Err(SessionError::Usage(format!("workflow `{}` does not cycle: drop --cycle", p.workflow.name))),
            None => Ok(None),
        };
    };
    let start = match spec.start {
        Start::At(pt) => pt,
        Start::Now => {
            let runs = store.runs()?;
            let run = runs.iter().find(|r| r.workflow == p.workflow.name).ok_or_else(|| {
                SessionError::Usage(format!("workflow `{}` starts `now` and has not run here yet", p.workflow.name))
            })?;
            let text = run.settings.cycle_start.clone().unwrap_or_default();
            Point::parse(&text, spec.every).map_err(SessionError::Usage)?
        }
    };
    let point = match cycle {
        Some(c) => Point::parse(c, spec.every).map_err(|e| SessionError::Usage(format!("--cycle: {e}")))?,
        None => start,
    };
    let index = spec.index_of(start, point).ok_or_else(|| {
        SessionError::Usage(format!(
            "`{point}` is not a cycle point of `{}` (its points start at {start}, one `every` apart)",
            p.workflow.name
        ))
    })?;
    if let Some(n) = spec.count(start)
        && index >= n
    {
        return Err(SessionError::Usage(format!(
            "cycle {point} is after the last cycle of `{}` ({})",
            p.workflow.name,
            spec.point(start, n - 1)
        )));
    }
    Ok(Some(crate::run::why::WhyCycle {
        index,
        point,
        last: spec.count(start).is_some_and(|n| index + 1 == n),
        first: start,
        prev: index.checked_sub(1).map(|k| spec.point(start, k)),
    }))
}
