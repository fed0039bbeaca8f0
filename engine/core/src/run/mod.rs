//! Phase 4, schedule and execute.
//!
//! The [`scheduler`] core makes every decision and does no I/O; the modules around it act
//! for it:
//!
//! - `driver`: settles the tasks the core hands out (`when:`, cache, resolving the
//!   command), submits attempts to the [`Backend`] in batches and turns finished jobs into
//!   results or failures, recording each of the core's state changes;
//! - [`attempt`]: what each attempt leaves in its directory (manifest, status), and the
//!   rename of a successful attempt to `out/` before its success is recorded;
//! - [`failure`]: the message of a final failure (cause, attempt directory, output files
//!   and the end of the output, what an MPI launcher said);
//! - [`publish`]: copies of outputs outside the run directory;
//! - `resume`: restoring a killed run, following or stopping what it left in flight;
//! - [`service`]: services' readiness, restarts, stop and log rotation;
//! - [`snapshot`]: the workflow as the run was started (`RUN/workflow.json`);
//! - [`cache`], [`job`], [`scope`]: cache keys, resolved commands, reference values;
//! - [`why`]: the cache decision explained, without running.
//!
//! [`execute`] wires them. Each loop turn: dispatch ready tasks while the backend's
//! capacity allows; commit the turn's state changes to the run database (batched, at most
//! [`FLUSH_EVERY`] apart); wait for a job to change state, a retry to come due, or a cancel
//! signal; poll every job in flight in one call and hand the outcomes to the core. Once only
//! services are left, they are stopped, and the run ends when they have.

pub mod attempt;
pub mod cache;
pub mod clock;
mod driver;
pub mod failure;
pub mod job;
pub mod outputs;
pub mod publish;
mod resume;
pub mod scheduler;
pub mod scope;
pub mod service;
pub mod sim;
pub mod snapshot;
pub mod trigger;
pub mod why;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::events::{Counts, Event, Reporter, RunState, StepTasks, TaskFailure, secs};
use crate::execute::{Backend, BackendError};
use crate::model::{End, Point, Start};
use crate::plan::{Plan, TaskNode};
use crate::state::{CycleState, RunSettings, StateError, Store};
use clock::{Clock, SystemClock};
use driver::Driver;
use scheduler::{CycleWindow, SchedOptions, Scheduler};
use scope::Results;

/// State changes are committed in batches at most this far apart (and before any longer
/// wait): a crash loses at most that much bookkeeping, whose tasks then simply run again,
/// while thousands of short tasks do not pay one commit each.
pub const FLUSH_EVERY: Duration = Duration::from_millis(20);

/// How often a cycling run asks the run database whether `twinflow stop` was asked.
pub const STOP_CHECK_EVERY: Duration = Duration::from_millis(500);

/// How to run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Directory holding `twinflow.db` and one directory per run.
    pub runs_dir: PathBuf,
    /// Workflow file (recorded for `--resume`).
    pub workflow_file: PathBuf,
    /// How the run was started (recorded for `--resume`).
    pub settings: RunSettings,
    /// Resume this run instead of starting a new one.
    pub resume: Option<String>,
    /// The id of a new run (`None`: a fresh one); ignored with `resume`.
    pub new_run_id: Option<String>,
    /// Keep running independent tasks after a failure.
    pub keep_going: bool,
    /// Reuse up-to-date results of earlier runs.
    pub use_cache: bool,
    /// Run at most this many tasks at once (in addition to resource limits).
    pub max_parallel: Option<usize>,
    /// What the run's environment snapshot records.
    pub env_snapshot: attempt::EnvSnapshot,
    /// Steps to run even when an earlier result is up to date (`--rerun`), with everything
    /// that depends on them. A name also covers the steps of a call (`call` → `call/*`).
    pub rerun: Vec<String>,
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunOutcome {
    /// Every task succeeded, was cached or skipped.
    Succeeded,
    /// Some task failed.
    Failed,
    /// Cancelled by a signal.
    Cancelled,
    /// A cycling run stopped by `twinflow stop`: its active cycles finished (tasks still
    /// waiting for triggers were left for `--resume`), no new one started.
    Stopped,
}

impl RunOutcome {
    /// Name as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            RunOutcome::Succeeded => "succeeded",
            RunOutcome::Failed => "failed",
            RunOutcome::Cancelled => "cancelled",
            RunOutcome::Stopped => "stopped",
        }
    }
}

impl From<RunOutcome> for RunState {
    fn from(o: RunOutcome) -> Self {
        match o {
            RunOutcome::Succeeded => RunState::Succeeded,
            RunOutcome::Failed => RunState::Failed,
            RunOutcome::Cancelled => RunState::Cancelled,
            RunOutcome::Stopped => RunState::Stopped,
        }
    }
}

/// Summary of a finished run.
#[derive(Debug, Clone)]
pub struct RunSummary {
    /// Run id.
    pub run_id: String,
    /// Outcome.
    pub outcome: RunOutcome,
    /// Tasks by final state.
    pub counts: Counts,
    /// Wall-clock time.
    pub elapsed: Duration,
    /// Names of failed (and cancelled) tasks, with why.
    pub failures: Vec<(String, TaskFailure)>,
    /// For cycling runs: which cycle holds the run, or where a stopped run stopped.
    pub note: Option<String>,
    /// The root workflow's `outputs:`, resolved against the run's results (of its last
    /// cycle, in a cycling run).
    pub outputs: Vec<outputs::RootOutput>,
    /// Every path `publish:` copied a result to.
    pub published: Vec<PathBuf>,
}

/// The nodes `--rerun STEPS` forces to run: the tasks of each step named (or of the steps
/// of a call named), and every task that depends on one of them.
pub fn rerun_nodes(plan: &Plan, steps: &[String]) -> Vec<bool> {
    let mut forced = vec![false; plan.graph.node_count()];
    if steps.is_empty() {
        return forced;
    }
    let named = |name: &str| {
        steps.iter().any(|s| name == s || name.strip_prefix(s.as_str()).is_some_and(|r| r.starts_with('/')))
    };
    let mut stack: Vec<_> = plan
        .graph
        .node_indices()
        .filter(|&i| {
            let t = plan.graph[i];
            !t.is_join() && named(&plan.workflow.steps[t.step as usize].name)
        })
        .collect();
    while let Some(i) = stack.pop() {
        if std::mem::replace(&mut forced[i.index()], true) {
            continue;
        }
        stack.extend(plan.graph.neighbors_directed(i, petgraph::Direction::Outgoing));
    }
    forced
}

/// Whether `name` names a step of the plan for `--rerun` (a step, or a call whose steps it
/// covers).
pub fn is_rerun_target(plan: &Plan, name: &str) -> bool {
    plan.workflow.steps.iter().any(|s| s.name == name || s.name.strip_prefix(name).is_some_and(|r| r.starts_with('/')))
}

/// Errors that stop a run (as opposed to task failures, which are part of the summary).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The run database failed.
    #[error(transparent)]
    State(#[from] StateError),
    /// The backend failed.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// A file operation in the run directory failed.
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
    /// `--resume` of a run of another workflow, or similar misuse.
    #[error("{0}")]
    Usage(String),
}

fn io<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> RunError + 'a {
    move |source| RunError::Io { action, path: path.to_path_buf(), source }
}

/// Directory of a task: `RUN/steps/STEP[/MEMBER]` (`run_dir` is a cycle's directory,
/// `RUN/cycles/POINT`, in a cycling run).
pub fn task_dir(run_dir: &Path, plan: &Plan, n: TaskNode) -> PathBuf {
    task_dir_of(run_dir, &plan.workflow.steps[n.step as usize].name, n.member_index())
}

/// [`task_dir`] from the step's name and the member index.
pub fn task_dir_of(run_dir: &Path, step: &str, member: Option<u32>) -> PathBuf {
    let d = run_dir.join("steps").join(step);
    match member {
        Some(m) => d.join(m.to_string()),
        None => d,
    }
}

/// Directory of cycle `point`'s tasks in run directory `run_dir`: `RUN/cycles/POINT`.
pub fn cycle_dir_of(run_dir: &Path, point: &str) -> PathBuf {
    run_dir.join("cycles").join(point)
}

/// Runs (or resumes) a planned workflow to completion.
pub async fn execute(
    plan: &Plan,
    backend: &mut dyn Backend,
    store: &mut Store,
    opts: &RunOptions,
    reporter: &mut dyn Reporter,
    mut cancel: watch::Receiver<Option<String>>,
) -> Result<RunSummary, RunError> {
    let t0 = Instant::now();
    let wf = &*plan.workflow;
    // A resumed run: its id and the settings it was started with.
    let (run_id, saved) = match &opts.resume {
        Some(id) => {
            let row = store.run(Some(id))?;
            if row.workflow != wf.name {
                return Err(RunError::Usage(format!(
                    "run `{id}` is of workflow `{}`, not `{}`",
                    row.workflow, wf.name
                )));
            }
            // Two engines on one run would start every task twice (the run is claimed below,
            // once every check has passed).
            if let Some(pid) = row.live_engine() {
                return Err(RunError::Usage(format!("run `{id}` is still being executed by twinflow (pid {pid})")));
            }
            (row.id, Some(row.settings))
        }
        None => (opts.new_run_id.clone().unwrap_or_else(|| crate::ids::RunId::generate().0), None),
    };
    let resumed = saved.is_some();
    if let Some(step) = wf.steps.iter().find(|s| s.service.is_some())
        && !backend.runs_services()
    {
        return Err(RunError::Usage(format!(
            "step `{}` is a service, which the {} backend cannot run (each step its own batch job)\nhint: run it with the local backend, or in one SLURM allocation: `--backend slurm --allocation`",
            step.name,
            backend.name()
        )));
    }
    let run_dir = opts.runs_dir.join(&run_id);
    // A cycling run's first point and number of cycles: `start: now` is resolved once and
    // recorded, so a resumed run keeps its points.
    let mut settings = opts.settings.clone();
    let cycling = match &wf.cycle {
        Some(spec) => {
            // A resumed run keeps its first point; a new one may be given it (`--start`).
            let first = match &saved {
                Some(saved) => saved.cycle_start.clone(),
                None => settings.cycle_start.clone(),
            };
            let start = match (first, spec.start) {
                (Some(text), _) => {
                    Point::parse(&text, spec.every).map_err(|e| RunError::Usage(format!("--start: {e}")))?
                }
                (None, Start::At(p)) => p,
                (None, Start::Now) => {
                    let now = jiff::Timestamp::now();
                    Point::Time(jiff::Timestamp::from_second(now.as_second()).unwrap_or(now))
                }
            };
            settings.cycle_start = Some(start.to_string());
            // The points of a resumed run must stay those it has: a changed `every` would
            // mix two sequences.
            let every = match spec.every {
                crate::model::Every::Int(i) => i.to_string(),
                crate::model::Every::Time(d) => crate::units::format_duration(d),
            };
            if let Some(was) = saved.as_ref().and_then(|s| s.cycle_every.as_ref())
                && *was != every
            {
                return Err(RunError::Usage(format!(
                    "run `{run_id}` cycles every {was}; the workflow now says every {every}: start a new run (resuming would mix two sequences of cycle points)"
                )));
            }
            settings.cycle_every = Some(every);
            let count = match (settings.cycles, &settings.until) {
                (Some(n), _) => Some(n),
                (None, Some(until)) => {
                    let end = Point::parse(until, spec.every).map_err(|e| RunError::Usage(format!("--until: {e}")))?;
                    let n = crate::model::CycleSpec { end: Some(End::At(end)), ..spec.clone() }.count(start);
                    if n == Some(0) {
                        return Err(RunError::Usage(format!(
                            "--until {until} is before the first cycle point, {start}"
                        )));
                    }
                    n
                }
                (None, None) => spec.count(start),
            };
            // A bound below what the run already reached would leave started cycles behind.
            if resumed && let Some(n) = count {
                let reached = store.cycles(&run_id)?.iter().map(|c| c.end() + 1).max().unwrap_or(0);
                if n < reached {
                    let last = spec.point(start, reached - 1);
                    return Err(RunError::Usage(format!(
                        "run `{run_id}` has already reached cycle {last} ({reached} cycles): --cycles/--until must leave at least {reached}"
                    )));
                }
            }
            Some(driver::Cycling { spec: spec.clone(), start, count })
        }
        None => {
            if settings.cycles.is_some() || settings.until.is_some() || (!resumed && settings.cycle_start.is_some()) {
                return Err(RunError::Usage(format!(
                    "workflow `{}` does not cycle (no `cycle:`): --cycles, --until and --start are for cycling workflows",
                    wf.name
                )));
            }
            None
        }
    };
    // The check above and this claim are apart: the claim is one transaction under the
    // database's write lock, so of two engines resuming the run at once one is refused here.
    // It comes after every check that could refuse the resume, which would otherwise leave
    // the run marked as running.
    if resumed && let Some(pid) = store.claim_run(&run_id)? {
        return Err(RunError::Usage(format!("run `{run_id}` is still being executed by twinflow (pid {pid})")));
    }
    std::fs::create_dir_all(run_dir.join("steps")).map_err(io("creating", &run_dir))?;
    store.begin()?;
    if resumed {
        store.set_run_state(&run_id, RunState::Running)?;
        store.request_stop(&run_id, false)?;
    } else {
        store.create_run(&run_id, &wf.name, &opts.workflow_file.display().to_string(), &settings)?;
    }
    let env_file = attempt::snapshot_environment(&run_dir, &opts.env_snapshot)
        .map_err(io("writing the environment snapshot in", &run_dir))?;
    // What the run's report needs of the workflow, as started (the file may change later).
    snapshot::WorkflowSnapshot::of(wf, &opts.workflow_file)
        .write(&run_dir)
        .map_err(io("writing the workflow snapshot in", &run_dir))?;
    if cycling.is_none() {
        let names: Vec<(String, String, Option<u32>, Option<String>)> = plan
            .graph
            .node_weights()
            .filter(|t| !t.is_join())
            .map(|t| {
                (plan.task_name(*t), wf.steps[t.step as usize].name.clone(), t.member_index(), plan.member_label(*t))
            })
            .collect();
        store.ensure_tasks(&run_id, names.iter().map(|(a, b, c, d)| (a.as_str(), b.as_str(), *c, d.as_deref())))?;
    }
    // The run is recorded before anything is reported about it.
    store.commit()?;

    let clock = SystemClock;
    let window = match (&wf.cycle, &cycling) {
        (Some(spec), Some(c)) => CycleWindow { runahead: spec.runahead, count: c.count },
        _ => CycleWindow::default(),
    };
    let sched_opts = SchedOptions { keep_going: opts.keep_going, max_parallel: opts.max_parallel, cycles: window };
    let mut s = Scheduler::new(plan, &clock, backend.capacity(), sched_opts);
    let mut d = Driver::new(plan, store, backend, reporter, opts, run_id.clone(), run_dir, env_file);
    d.cycling = cycling;
    let mut already_done = 0;
    if resumed {
        already_done = resume::restore(&mut d, &mut s).await?;
        tracing::info!(run = %run_id, already_done, "resuming");
    }
    d.reporter.event(&Event::RunStarted {
        run_id: run_id.clone(),
        workflow: wf.name.clone(),
        tasks: if d.cycling.is_some() { 0 } else { plan.task_count() },
        already_done,
        resumed,
        steps: if d.cycling.is_some() { vec![] } else { step_tasks(plan, &d.store.tasks(&run_id)?) },
    });
    s.seed();
    d.record(s.take_effects())?;
    d.store.commit()?;
    let mut last_flush = Instant::now();
    let mut last_stop_check = Instant::now();
    let mut killing = false;
    loop {
        d.store.begin()?;
        s.promote_due();
        if !s.is_cancelling() {
            d.poll_gates(&mut s, &clock).await?;
            d.dispatch(&mut s).await?;
        }
        d.flush_waits()?;
        // Only services left: they are stopped (those waiting for a restart at once).
        if s.work_done() && !s.is_done() {
            d.stop_services(&mut s).await?;
        }
        if s.is_done() {
            d.record(s.take_effects())?;
            d.store.commit()?;
            break;
        }
        d.record(s.take_effects())?;
        // `twinflow stop`, asked through the run database.
        if d.cycling.is_some() && last_stop_check.elapsed() >= STOP_CHECK_EVERY {
            last_stop_check = Instant::now();
            if d.store.stop_requested(&run_id)? && s.stop() {
                tracing::info!(run = %run_id, "stopping after the active cycles");
                let next = s.active_cycles().last().map_or(0, |c| c + 1);
                let point = d.cycling.as_ref().map(|c| c.point(next).label()).unwrap_or_default();
                d.reporter.event(&Event::Stopping { next_cycle: next, point });
                continue;
            }
        }
        let now = clock.now();
        let wake = [s.next_wakeup(), d.next_gate_check(), d.next_service_check(&s)].into_iter().flatten().min();
        let mut wait =
            wake.map_or(Duration::from_secs(1), |t| t.saturating_duration_since(now)).min(Duration::from_secs(1));
        let since = last_flush.elapsed();
        if since >= FLUSH_EVERY {
            d.store.commit()?;
            last_flush = Instant::now();
        } else {
            wait = wait.min(FLUSH_EVERY - since);
        }
        tokio::select! {
            _ = d.backend.wait(wait) => {}
            changed = cancel.changed() => {
                // The first signal stops the running tasks (SIGTERM, grace, SIGKILL); another
                // one while they stop kills them at once.
                let sig = cancel.borrow().clone();
                if changed.is_ok() && let Some(signal) = sig {
                    let ids = d.job_ids();
                    if s.cancel() {
                        let grace_seconds = d.backend.grace().map(secs);
                        d.reporter.event(&Event::Cancelling { signal, running: ids.len(), grace_seconds });
                        d.backend.cancel(&ids).await?;
                    } else if !killing {
                        killing = true;
                        tracing::info!(jobs = ids.len(), "killing the running tasks at once");
                        d.reporter.event(&Event::Killing { signal, running: ids.len() });
                        d.backend.kill(&ids).await?;
                    }
                }
            }
        }
        d.store.begin()?;
        d.collect(&mut s).await?;
        // After the jobs that ended were collected: a service whose process could not start
        // (or ended at once) is never taken for ready.
        d.poll_services(&mut s).await?;
        d.flush_waits()?;
        if last_flush.elapsed() >= FLUSH_EVERY {
            d.store.commit()?;
            last_flush = Instant::now();
        }
    }
    // Retries still waiting when the run stops (fail-fast, cancel) go back to pending, so
    // the database does not show them as running.
    let fin = s.finish();
    d.store.begin()?;
    d.record(s.take_effects())?;
    let mut note = None;
    if let Some(c) = &d.cycling {
        for a in &fin.active {
            let state = if a.failed && fin.outcome != RunOutcome::Cancelled {
                CycleState::Failed
            } else if a.complete && !a.failed {
                CycleState::Succeeded
            } else if fin.outcome == RunOutcome::Cancelled {
                CycleState::Cancelled
            } else {
                CycleState::Stopped
            };
            d.store.cycle_ended(&run_id, a.index, state, Some(&a.counts))?;
        }
        if let Some(held) = fin.held_by {
            let first = fin.failures.iter().find(|(t, _)| t.cycle == held).map(|(t, _)| d.name(*t));
            note = Some(format!(
                "cycle {} holds the run{}",
                c.point(held),
                first.map(|f| format!(": `{f}` did not succeed")).unwrap_or_default()
            ));
        } else if fin.outcome == RunOutcome::Stopped {
            let done: Vec<String> =
                fin.active.iter().filter(|a| !a.complete).map(|a| c.point(a.index).to_string()).collect();
            note = Some(format!(
                "stopped: no cycle after {} started{}; `twinflow run --resume {run_id}` goes on",
                c.point(fin.next_cycle.saturating_sub(1)),
                if done.is_empty() {
                    String::new()
                } else {
                    format!(" (cycles {} still wait for their triggers)", done.join(", "))
                }
            ));
        }
    }
    d.store.set_run_state(&run_id, fin.outcome.into())?;
    d.store.commit()?;
    let elapsed = t0.elapsed();
    // The root `outputs:` of the results this run has (its last cycle's in a cycling run).
    let outputs = match d.cycles.values().next_back().or(d.retired_prev.as_ref()) {
        Some(cur) => outputs::root_outputs(plan, Results::single(cur), &run_id, &d.run_dir),
        None => vec![],
    };
    let published = std::mem::take(&mut d.published);
    d.reporter.event(&Event::RunFinished {
        run_id: run_id.clone(),
        state: fin.outcome.into(),
        counts: fin.counts.clone(),
        seconds: secs(elapsed),
        outputs: outputs.iter().map(|o| (o.name.clone(), o.value.clone().unwrap_or_default())).collect(),
        published: published.iter().map(|p| p.display().to_string()).collect(),
    });
    let failures = fin.failures.iter().map(|(t, m)| (d.name(*t), m.clone())).collect();
    Ok(RunSummary { run_id, outcome: fin.outcome, counts: fin.counts, elapsed, failures, note, outputs, published })
}

/// Each step's task count in plan order, with those already finished (`rows`: the run's
/// task rows, for a resume).
fn step_tasks(plan: &Plan, rows: &[crate::state::TaskRow]) -> Vec<StepTasks> {
    plan.step_order
        .iter()
        .map(|&s| {
            let step = plan.workflow.steps[s].name.clone();
            let done = rows.iter().filter(|r| r.step == step && r.state.is_terminal()).count();
            StepTasks { step, tasks: plan.members(s) as usize, done }
        })
        .collect()
}
