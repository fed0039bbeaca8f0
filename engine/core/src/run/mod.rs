//! Phase 4, schedule and execute.
//!
//! One dispatcher owns all state (a vector indexed by plan node) and makes every decision;
//! the [`Backend`] only starts, observes and stops jobs. Each loop turn:
//!
//! 1. dispatch ready tasks in plan order while the backend's capacity (cores, memory)
//!    allows, deciding first whether a task is skipped (`when:`), up to date (cache) or
//!    must run;
//! 2. commit the turn's state changes to the run database in one transaction;
//! 3. wait for a job to change state, a retry to come due, or a cancel signal;
//! 4. poll all running jobs in one call and handle the outcomes: on success, check the
//!    declared outputs, rename the attempt directory to `out/` (so a half-written output is
//!    never visible under the final name) and only then record `succeeded`; on failure,
//!    retry with exponential backoff or mark the task and its descendants failed.

pub mod cache;
pub mod job;
pub mod scope;
pub mod why;

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use indexmap::IndexMap;
use petgraph::Direction;
use petgraph::graph::NodeIndex;
use tokio::sync::watch;

use crate::events::{Counts, Event, Reporter, TaskFailure, TaskState, secs};
use crate::execute::{Backend, BackendError, Ending, JobRequest, JobStatus, Outcome, SpawnFailure};
use crate::expr::Value;
use crate::ids::JobId;
use crate::plan::{Plan, TaskNode};
use crate::state::{AttemptState, CacheEntry, RunSettings, RunState, StateError, Store};
use crate::validate::refs::Ctx;
use cache::Hasher;
use job::{ResolvedTask, components, kernel_binary, resolve_task};
use scope::{Mode, TaskResult, TaskScope};

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
    /// Keep running independent tasks after a failure.
    pub keep_going: bool,
    /// Reuse up-to-date results of earlier runs.
    pub use_cache: bool,
    /// Run at most this many tasks at once (in addition to resource limits).
    pub max_parallel: Option<usize>,
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
}

impl RunOutcome {
    /// Name as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            RunOutcome::Succeeded => "succeeded",
            RunOutcome::Failed => "failed",
            RunOutcome::Cancelled => "cancelled",
        }
    }
}

impl From<RunOutcome> for RunState {
    fn from(o: RunOutcome) -> Self {
        match o {
            RunOutcome::Succeeded => RunState::Succeeded,
            RunOutcome::Failed => RunState::Failed,
            RunOutcome::Cancelled => RunState::Cancelled,
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
    #[error("{action} `{path}`: {source}")]
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NodeState {
    Waiting,
    Ready,
    Delayed,
    Running,
    Done(TaskState),
}

struct Attempt {
    node: NodeIndex,
    attempt: u32,
    dir: PathBuf,
    key: String,
    components: String,
    started: Instant,
}

/// Directory of a task: `RUN/steps/STEP[/MEMBER]`.
pub fn task_dir(run_dir: &Path, plan: &Plan, n: TaskNode) -> PathBuf {
    let step = &plan.workflow.steps[n.step as usize].name;
    let d = run_dir.join("steps").join(step);
    match n.member_index() {
        Some(m) => d.join(m.to_string()),
        None => d,
    }
}

struct Sched<'a> {
    plan: &'a Plan,
    store: &'a mut Store,
    backend: &'a mut dyn Backend,
    reporter: &'a mut dyn Reporter,
    opts: &'a RunOptions,
    run_id: String,
    run_dir: PathBuf,
    kernel: PathBuf,
    /// Name (in the run directory) of the snapshot of the environment every step inherits.
    env_file: String,
    state: Vec<NodeState>,
    remaining: Vec<u32>,
    attempts: Vec<u32>,
    results: Vec<Option<Box<TaskResult>>>,
    ready: VecDeque<NodeIndex>,
    delayed: Vec<(Instant, NodeIndex)>,
    running: HashMap<JobId, Attempt>,
    /// Attempts prepared by this dispatch turn, submitted together at its end.
    batch: Vec<(Attempt, JobRequest)>,
    cores_used: u32,
    mem_used: u64,
    hasher: Hasher,
    params_memo: HashMap<usize, std::collections::BTreeMap<String, String>>,
    failed: bool,
    cancelling: bool,
    failures: Vec<(String, TaskFailure)>,
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
    let (run_id, resumed) = match &opts.resume {
        Some(id) => {
            let row = store.run(Some(id))?;
            // Two engines on one run would start every task twice.
            if row.state == RunState::Running
                && let Some(pid) = row.engine_pid.filter(|p| *p != std::process::id())
                && String::from_utf8_lossy(&std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default())
                    .contains("twinflow")
            {
                return Err(RunError::Usage(format!("run `{id}` is still being executed by twinflow (pid {pid})")));
            }
            if row.workflow != wf.name {
                return Err(RunError::Usage(format!(
                    "run `{id}` is of workflow `{}`, not `{}`",
                    row.workflow, wf.name
                )));
            }
            (row.id, true)
        }
        None => (crate::ids::RunId::generate().0, false),
    };
    let run_dir = opts.runs_dir.join(&run_id);
    std::fs::create_dir_all(run_dir.join("steps")).map_err(io("creating", &run_dir))?;
    store.begin()?;
    if resumed {
        store.set_run_state(&run_id, RunState::Running)?;
        // Steps that a killed engine left running are in their own process groups and
        // outlived it; stop them before their tasks are started again. (Batch jobs are
        // followed again instead: see `load_previous`.)
        let orphans = if backend.can_adopt() {
            vec![]
        } else {
            crate::execute::process::groups_with_env(twinflow_contract::env::RUN_ID, &run_id)
        };
        for pgid in orphans {
            if pgid != std::process::id() {
                crate::execute::process::signal_group(pgid, nix::sys::signal::Signal::SIGKILL);
            }
        }
    } else {
        store.create_run(&run_id, &wf.name, &opts.workflow_file.display().to_string(), &opts.settings)?;
    }
    let env_file = snapshot_environment(&run_dir).map_err(io("writing the environment snapshot in", &run_dir))?;
    let n = plan.graph.node_count();
    let names: Vec<(String, String, Option<u32>)> = plan
        .graph
        .node_weights()
        .filter(|t| !t.is_join())
        .map(|t| (plan.task_name(*t), wf.steps[t.step as usize].name.clone(), t.member_index()))
        .collect();
    store.ensure_tasks(&run_id, names.iter().map(|(a, b, c)| (a.as_str(), b.as_str(), *c)))?;
    drop(names);

    let mut s = Sched {
        plan,
        store,
        backend,
        reporter,
        opts,
        run_id: run_id.clone(),
        run_dir,
        kernel: kernel_binary(),
        env_file,
        state: vec![NodeState::Waiting; n],
        remaining: plan
            .graph
            .node_indices()
            .map(|i| plan.graph.neighbors_directed(i, Direction::Incoming).count() as u32)
            .collect(),
        attempts: vec![0; n],
        results: (0..n).map(|_| None).collect(),
        ready: VecDeque::new(),
        delayed: vec![],
        running: HashMap::new(),
        batch: Vec::new(),
        cores_used: 0,
        mem_used: 0,
        hasher: Hasher::default(),
        params_memo: HashMap::new(),
        failed: false,
        cancelling: false,
        failures: vec![],
    };
    let mut already_done = 0;
    if resumed {
        already_done = s.load_previous()?;
        tracing::info!(run = %run_id, already_done, "resuming");
    }
    s.store.commit()?;
    s.reporter.event(&Event::RunStarted {
        run_id: run_id.clone(),
        workflow: wf.name.clone(),
        tasks: plan.task_count(),
        already_done,
        resumed,
    });
    for i in plan.graph.node_indices() {
        if s.remaining[i.index()] == 0 && s.state[i.index()] == NodeState::Waiting {
            s.state[i.index()] = NodeState::Ready;
            s.ready.push_back(i);
        }
    }
    // State changes are committed in batches at most FLUSH_EVERY apart (and before any
    // longer wait): a crash loses at most that much bookkeeping, whose tasks then simply run
    // again, while thousands of short tasks do not pay one commit each.
    const FLUSH_EVERY: Duration = Duration::from_millis(20);
    let mut last_flush = Instant::now();
    loop {
        s.store.begin()?;
        if !s.cancelling {
            s.dispatch().await?;
        }
        if s.running.is_empty()
            && (s.cancelling || (s.ready.is_empty() && s.delayed.is_empty()) || (s.failed && !opts.keep_going))
        {
            s.store.commit()?;
            break;
        }
        let mut wait = s
            .delayed
            .iter()
            .map(|(t, _)| t.saturating_duration_since(Instant::now()))
            .min()
            .unwrap_or(Duration::from_secs(1))
            .min(Duration::from_secs(1));
        let since = last_flush.elapsed();
        if since >= FLUSH_EVERY {
            s.store.commit()?;
            last_flush = Instant::now();
        } else {
            wait = wait.min(FLUSH_EVERY - since);
        }
        tokio::select! {
            _ = s.backend.wait(wait) => {}
            changed = cancel.changed() => {
                if changed.is_ok()
                    && let Some(sig) = cancel.borrow().clone()
                        && !s.cancelling {
                            s.cancelling = true;
                            s.reporter.event(&Event::Cancelling { signal: sig });
                            let ids: Vec<JobId> = s.running.keys().cloned().collect();
                            s.backend.cancel(&ids).await?;
                        }
            }
        }
        s.store.begin()?;
        s.collect().await?;
        let now = Instant::now();
        let (due, later): (Vec<_>, Vec<_>) = s.delayed.drain(..).partition(|(t, _)| *t <= now);
        s.delayed = later;
        for (_, i) in due {
            s.state[i.index()] = NodeState::Ready;
            s.ready.push_back(i);
        }
        if last_flush.elapsed() >= FLUSH_EVERY {
            s.store.commit()?;
            last_flush = Instant::now();
        }
    }
    // Retries still waiting when the run stops (fail-fast, cancel) go back to pending, so
    // the database does not show them as running.
    s.store.begin()?;
    for (_, i) in std::mem::take(&mut s.delayed) {
        s.state[i.index()] = NodeState::Waiting;
        let name = plan.task_name(plan.graph[i]);
        s.store.reset_task(&run_id, &name)?;
    }
    s.store.commit()?;
    let mut counts = Counts::default();
    for t in plan.graph.node_indices() {
        if plan.graph[t].is_join() {
            continue;
        }
        counts.add(match s.state[t.index()] {
            NodeState::Done(st) => st,
            _ => TaskState::Pending,
        });
    }
    let outcome = if s.cancelling {
        RunOutcome::Cancelled
    } else if s.failed || counts.pending > 0 {
        RunOutcome::Failed
    } else {
        RunOutcome::Succeeded
    };
    s.store.begin()?;
    s.store.set_run_state(&run_id, outcome.into())?;
    s.store.commit()?;
    let elapsed = t0.elapsed();
    s.reporter.event(&Event::RunFinished {
        run_id: run_id.clone(),
        state: outcome.into(),
        counts: counts.clone(),
        seconds: secs(elapsed),
    });
    Ok(RunSummary { run_id, outcome, counts, elapsed, failures: std::mem::take(&mut s.failures) })
}

impl Sched<'_> {
    /// On resume: take over finished tasks from the database.
    fn load_previous(&mut self) -> Result<usize, RunError> {
        let rows = self.store.tasks(&self.run_id)?;
        let by_name: HashMap<&str, &crate::state::TaskRow> = rows.iter().map(|r| (r.task.as_str(), r)).collect();
        let mut done = 0;
        let mut finished: Vec<(NodeIndex, TaskState)> = vec![];
        for i in self.plan.graph.node_indices() {
            let t = self.plan.graph[i];
            if t.is_join() {
                continue;
            }
            let name = self.plan.task_name(t);
            let Some(row) = by_name.get(name.as_str()) else { continue };
            self.attempts[i.index()] = row.attempts;
            match row.state {
                st @ (TaskState::Succeeded | TaskState::Cached) => {
                    let dir = PathBuf::from(row.dir.clone().unwrap_or_default());
                    let values = parse_values(row.outputs.as_deref());
                    self.results[i.index()] = Some(Box::new(TaskResult { dir, values }));
                    finished.push((i, st));
                    done += 1;
                }
                TaskState::Skipped => {
                    finished.push((i, TaskState::Skipped));
                    done += 1;
                }
                TaskState::Pending | TaskState::Running if self.backend.can_adopt() && self.adopt_job(i, row)? => {}
                TaskState::Pending => {}
                _ => self.store.reset_task(&self.run_id, &name)?,
            }
        }
        let adopted: Vec<(JobId, PathBuf)> = self.running.iter().map(|(id, a)| (id.clone(), a.dir.clone())).collect();
        if !adopted.is_empty() {
            tracing::info!(jobs = adopted.len(), "following jobs the previous engine submitted");
            self.backend.adopt(&adopted);
        }
        for (i, st) in finished {
            self.state[i.index()] = NodeState::Done(st);
        }
        // Release dependants of finished tasks (and complete joins whose members are done).
        let done_nodes: Vec<NodeIndex> =
            self.plan.graph.node_indices().filter(|i| matches!(self.state[i.index()], NodeState::Done(_))).collect();
        for i in done_nodes {
            let st = match self.state[i.index()] {
                NodeState::Done(st) => st,
                _ => continue,
            };
            self.release(i, st)?;
        }
        Ok(done)
    }

    /// On resume with a backend whose jobs outlive the engine: takes over the job of the
    /// task's latest attempt if it may still be in flight, instead of submitting it again.
    /// That is the attempt after the recorded one when the backend wrote its job id but the
    /// engine died before recording it, else the recorded attempt if it never finished.
    /// Either way the attempt directory must hold the backend's job id file, so a job id of
    /// another backend (a local pid) is never taken for a batch job.
    fn adopt_job(&mut self, i: NodeIndex, row: &crate::state::TaskRow) -> Result<bool, RunError> {
        let t = self.plan.graph[i];
        let name = self.plan.task_name(t);
        let tdir = task_dir(&self.run_dir, self.plan, t);
        let job_file = |n: u32| tdir.join(format!("attempt-{n}")).join(".twinflow").join(crate::execute::JOB_ID_FILE);
        let read_id =
            |n: u32| std::fs::read_to_string(job_file(n)).ok().map(|s| s.trim().to_string()).filter(|s| !s.is_empty());
        let recorded_open = || -> Result<bool, RunError> {
            Ok(row.state == TaskState::Running
                && self
                    .store
                    .attempts(&self.run_id, &name)?
                    .last()
                    .is_some_and(|a| a.attempt == row.attempts && a.state == AttemptState::Running))
        };
        let (attempt, id, unrecorded) = if let Some(id) = read_id(row.attempts + 1) {
            (row.attempts + 1, id, true)
        } else if row.attempts > 0
            && let Some(id) = read_id(row.attempts)
            && row.job_id.as_deref() == Some(id.as_str())
            && recorded_open()?
        {
            (row.attempts, id, false)
        } else {
            return Ok(false);
        };
        let dir = tdir.join(format!("attempt-{attempt}"));
        // The cache key was computed when the attempt started; its manifest keeps it.
        let comps = std::fs::read_to_string(dir.join(".twinflow/manifest.json"))
            .ok()
            .and_then(|m| serde_json::from_str::<serde_json::Value>(&m).ok())
            .and_then(|m| serde_json::from_value::<cache::Components>(m["cache"].clone()).ok());
        let Some(comps) = comps else { return Ok(false) };
        if unrecorded {
            self.store.attempt_started(&self.run_id, &name, attempt, &id)?;
        }
        let step = &self.plan.workflow.steps[t.step as usize];
        self.attempts[i.index()] = attempt;
        self.state[i.index()] = NodeState::Running;
        self.cores_used += step.resources.cores();
        self.mem_used += step.resources.memory;
        self.reporter.event(&Event::TaskStarted { task: name, attempt, job_id: id.clone() });
        self.running.insert(
            JobId(id),
            Attempt {
                node: i,
                attempt,
                dir,
                key: comps.key(),
                components: serde_json::to_string(&comps).unwrap_or_default(),
                started: Instant::now(),
            },
        );
        Ok(true)
    }

    /// Marks dependants of a finished node: decrements counts, completes joins, propagates
    /// failure and skips.
    fn release(&mut self, i: NodeIndex, st: TaskState) -> Result<(), RunError> {
        let mut stack = vec![(i, st)];
        while let Some((node, st)) = stack.pop() {
            let succ: Vec<NodeIndex> = self.plan.graph.neighbors_directed(node, Direction::Outgoing).collect();
            for d in succ {
                if matches!(self.state[d.index()], NodeState::Done(_)) {
                    continue;
                }
                let dn = self.plan.graph[d];
                let upstream_bad = matches!(st, TaskState::Failed | TaskState::UpstreamFailed | TaskState::Cancelled);
                if upstream_bad {
                    self.finish_node(
                        d,
                        TaskState::UpstreamFailed,
                        Some(format!("upstream `{}` did not succeed", self.plan.task_name(self.plan.graph[node]))),
                        0.0,
                    )?;
                    stack.push((d, TaskState::UpstreamFailed));
                    continue;
                }
                if st == TaskState::Skipped && !dn.is_join() {
                    self.finish_node(
                        d,
                        TaskState::Skipped,
                        Some(format!("upstream `{}` was skipped", self.plan.task_name(self.plan.graph[node]))),
                        0.0,
                    )?;
                    stack.push((d, TaskState::Skipped));
                    continue;
                }
                self.remaining[d.index()] = self.remaining[d.index()].saturating_sub(1);
                if self.remaining[d.index()] == 0 && self.state[d.index()] == NodeState::Waiting {
                    if dn.is_join() {
                        let st = self.join_state(d);
                        self.state[d.index()] = NodeState::Done(st);
                        stack.push((d, st));
                    } else {
                        self.state[d.index()] = NodeState::Ready;
                        self.ready.push_back(d);
                    }
                }
            }
        }
        Ok(())
    }

    /// A join succeeds when every member is done; it is skipped when all were skipped.
    fn join_state(&self, j: NodeIndex) -> TaskState {
        let all_skipped = self
            .plan
            .graph
            .neighbors_directed(j, Direction::Incoming)
            .all(|m| self.state[m.index()] == NodeState::Done(TaskState::Skipped));
        if all_skipped { TaskState::Skipped } else { TaskState::Succeeded }
    }

    fn finish_node(
        &mut self,
        i: NodeIndex,
        st: TaskState,
        message: Option<String>,
        seconds: f64,
    ) -> Result<(), RunError> {
        self.state[i.index()] = NodeState::Done(st);
        let t = self.plan.graph[i];
        if t.is_join() {
            return Ok(());
        }
        let name = self.plan.task_name(t);
        let (dir, values) = match &self.results[i.index()] {
            Some(r) => (Some(r.dir.display().to_string()), Some(values_json(&r.values))),
            None => (None, None),
        };
        self.store.finish_task(&self.run_id, &name, st, None, dir.as_deref(), values.as_deref(), message.as_deref())?;
        self.reporter.event(&Event::TaskFinished { task: name, state: st, seconds, message });
        Ok(())
    }

    fn fits(&self, i: NodeIndex) -> bool {
        let cap = self.backend.capacity();
        let in_flight = self.running.len() + self.batch.len();
        if let Some(max) = self.opts.max_parallel
            && in_flight >= max
        {
            return false;
        }
        if let Some(max) = cap.max_jobs
            && in_flight >= max
        {
            return false;
        }
        if in_flight == 0 {
            return true; // a task larger than the machine still runs, alone
        }
        let r = &self.plan.workflow.steps[self.plan.graph[i].step as usize].resources;
        let cores_ok = cap.cores.is_none_or(|c| self.cores_used + r.cores() <= c);
        let mem_ok = cap.memory.is_none_or(|m| r.memory == 0 || self.mem_used + r.memory <= m);
        cores_ok && mem_ok
    }

    async fn dispatch(&mut self) -> Result<(), RunError> {
        if self.failed && !self.opts.keep_going {
            return Ok(());
        }
        let mut scanned = 0;
        let mut idx = 0;
        while idx < self.ready.len() {
            let i = self.ready[idx];
            // Joins and tasks decided without running (skip, cache hit) take no resources.
            let t = self.plan.graph[i];
            if t.is_join() {
                self.ready.remove(idx);
                let st = self.join_state(i);
                self.state[i.index()] = NodeState::Done(st);
                self.release(i, st)?;
                continue;
            }
            if !self.fits(i) {
                // Backfill: look a little further for a smaller task that fits.
                scanned += 1;
                idx += 1;
                if scanned > 64 {
                    break;
                }
                continue;
            }
            self.ready.remove(idx);
            self.start(i)?;
            if self.failed && !self.opts.keep_going {
                break;
            }
        }
        self.submit_batch().await
    }

    /// Submits the attempts this turn prepared, in one backend call.
    async fn submit_batch(&mut self) -> Result<(), RunError> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let (attempts, reqs): (Vec<Attempt>, Vec<JobRequest>) = std::mem::take(&mut self.batch).into_iter().unzip();
        let results = self.backend.submit_many(reqs).await;
        let mut error = None;
        let mut results = results.into_iter();
        for a in attempts {
            let name = self.plan.task_name(self.plan.graph[a.node]);
            match results.next() {
                Some(Ok(id)) => {
                    tracing::debug!(task = %name, attempt = a.attempt, job = %id, "submitted");
                    self.store.attempt_started(&self.run_id, &name, a.attempt, &id.0)?;
                    self.reporter.event(&Event::TaskStarted { task: name, attempt: a.attempt, job_id: id.0.clone() });
                    self.running.insert(id, a);
                }
                Some(Err(e)) => error = Some(e),
                None => {} // not submitted after an error
            }
        }
        match error {
            Some(e) => Err(e.into()),
            None => Ok(()),
        }
    }

    /// Decides what happens to a ready task: skipped, cached, failed, or an attempt prepared
    /// for submission at the end of the dispatch turn.
    fn start(&mut self, i: NodeIndex) -> Result<(), RunError> {
        let t = self.plan.graph[i];
        let s = t.step as usize;
        let step = &self.plan.workflow.steps[s];
        let name = self.plan.task_name(t);
        let tdir = task_dir(&self.run_dir, self.plan, t);
        // `when:`
        if let Some(w) = &step.when {
            let used = std::cell::RefCell::new(vec![]);
            let scope = TaskScope {
                plan: self.plan,
                node: t,
                results: &self.results,
                attempt_dir: &tdir,
                run_id: &self.run_id,
                run_dir: &self.run_dir,
                mode: Mode::Exec,
                ns: step.ns,
                ctx: Ctx::When(s),
                used: &used,
            };
            match w.tpl.eval(&scope) {
                Ok(Value::Bool(true)) => {}
                Ok(Value::Bool(false)) => {
                    self.finish_node(i, TaskState::Skipped, Some(format!("`when` is false: {}", w.src)), 0.0)?;
                    return self.release(i, TaskState::Skipped);
                }
                Ok(other) => return self.fail_final(i, format!("`when` must be true or false, got `{other}`")),
                Err(e) => return self.fail_final(i, format!("`when`: {}", e.message)),
            }
        }
        let attempt = self.attempts[i.index()] + 1;
        let adir = tdir.join(format!("attempt-{attempt}"));
        let mut exec = match resolve_task(
            self.plan,
            t,
            &self.results,
            &adir,
            &self.run_id,
            &self.run_dir,
            Mode::Exec,
            &self.kernel,
        ) {
            Ok(r) => r,
            Err(e) => return self.fail_final(i, e),
        };
        let is_kernel = matches!(step.command, crate::validate::model::Command::Kernel(_));
        let key_view = job::key_view(&exec, &adir, &self.run_dir, &self.run_id, is_kernel);
        // Not part of the cache key (which reads `key_view`): attempts differ only in it.
        exec.env.push((twinflow_contract::env::ATTEMPT.into(), attempt.to_string()));
        let comps = components(self.plan, t, &key_view, &exec, self.store, &mut self.hasher, &mut self.params_memo)?;
        let key = comps.key();
        if self.opts.use_cache
            && let Some(hit) = self.cache_hit(&name, s, &key)?
        {
            let dir = hit.dir.clone();
            self.results[i.index()] = Some(Box::new(hit));
            if let Err(msg) = self.publish(i, &dir) {
                return self.fail_final(i, msg);
            }
            self.finish_node(i, TaskState::Cached, None, 0.0)?;
            return self.release(i, TaskState::Cached);
        }
        fresh_attempt_dir(&adir)?;
        let meta = adir.join(".twinflow");
        std::fs::create_dir(&meta).map_err(io("creating", &meta))?;
        for p in exec.outputs.values() {
            if let Some(parent) = p.parent()
                && parent != adir
            {
                std::fs::create_dir_all(parent).map_err(io("creating", parent))?;
            }
        }
        write_manifest(&meta, &name, &self.run_id, &self.env_file, &exec, &comps).map_err(io("writing", &meta))?;
        let r = step.resources.clone();
        let req = JobRequest {
            name,
            argv: exec.argv,
            env: exec.env,
            cwd: adir.clone(),
            stdout: meta.join("stdout"),
            stderr: meta.join("stderr"),
            resources: r.clone(),
            timeout: step.timeout,
            array: t.member_index().map(|index| crate::execute::ArrayMember { step: step.name.clone(), index }),
        };
        self.attempts[i.index()] = attempt;
        self.state[i.index()] = NodeState::Running;
        self.cores_used += r.cores();
        self.mem_used += r.memory;
        let components = serde_json::to_string(&comps).unwrap_or_default();
        self.batch.push((Attempt { node: i, attempt, dir: adir, key, components, started: Instant::now() }, req));
        Ok(())
    }

    /// Copies a finished task's outputs named in `publish:` from its result directory `dir`
    /// to their targets: each to a temporary name beside the target, then renamed, so a
    /// target never holds a partial copy. The message says which output failed and why.
    fn publish(&mut self, i: NodeIndex, dir: &Path) -> Result<(), String> {
        let t = self.plan.graph[i];
        let step = &self.plan.workflow.steps[t.step as usize];
        if step.publish.is_empty() {
            return Ok(());
        }
        let base = self.plan.workflow.namespaces[step.ns].file.abs_dir();
        let used = std::cell::RefCell::new(vec![]);
        let scope = TaskScope {
            plan: self.plan,
            node: t,
            results: &self.results,
            attempt_dir: dir,
            run_id: &self.run_id,
            run_dir: &self.run_dir,
            mode: Mode::Exec,
            ns: step.ns,
            ctx: Ctx::Body(t.step as usize),
            used: &used,
        };
        for (k, tpl) in &step.publish {
            let target = tpl.tpl.eval(&scope).map_err(|e| format!("publish.{k}: {}", e.message))?;
            let target = match target {
                Value::Str(p) | Value::Path(p) if !p.is_empty() => base.join(p),
                other => return Err(format!("publish.{k}: expected a path, got `{other}`")),
            };
            // The runs directory is the engine's: a copy there could overwrite the run
            // database or another task's published result.
            let runs = resolved(&self.opts.runs_dir);
            if resolved(&target).starts_with(&runs) {
                return Err(format!(
                    "publish.{k}: `{}` is inside the runs directory `{}`; publish outside it",
                    target.display(),
                    runs.display()
                ));
            }
            let rel = step.outputs.get(k).or_else(|| step.values.get(k)).map(String::as_str).unwrap_or_default();
            copy_atomically(&dir.join(rel), &target)
                .map_err(|e| format!("publishing `{k}` to `{}`: {e}", target.display()))?;
            tracing::info!(task = %self.plan.task_name(t), output = %k, to = %target.display(), "published");
        }
        Ok(())
    }

    fn cache_hit(&mut self, name: &str, s: usize, key: &str) -> Result<Option<TaskResult>, RunError> {
        let Some(e) = self.store.cache_get(&self.plan.workflow.name, name)? else { return Ok(None) };
        if e.key != key {
            return Ok(None);
        }
        let dir = PathBuf::from(&e.dir);
        let step = &self.plan.workflow.steps[s];
        if !step.outputs.values().chain(step.values.values()).all(|rel| dir.join(rel).exists()) || !dir.is_dir() {
            return Ok(None);
        }
        Ok(Some(TaskResult { dir, values: parse_values(Some(&e.outputs)) }))
    }

    fn fail_final(&mut self, i: NodeIndex, message: String) -> Result<(), RunError> {
        self.failed = true;
        let name = self.plan.task_name(self.plan.graph[i]);
        self.failures.push((name, TaskFailure::Failed(message.clone())));
        self.finish_node(i, TaskState::Failed, Some(message), 0.0)?;
        self.release(i, TaskState::Failed)
    }

    async fn collect(&mut self) -> Result<(), RunError> {
        if self.running.is_empty() {
            return Ok(());
        }
        let ids: Vec<JobId> = self.running.keys().cloned().collect();
        let statuses = self.backend.poll(&ids).await?;
        for (id, st) in statuses {
            let outcome = match st {
                JobStatus::Done(o) => o,
                JobStatus::Unknown => Outcome::new(Ending::SpawnFailed(SpawnFailure::Lost)),
                JobStatus::Queued | JobStatus::Running => continue,
            };
            let Some(a) = self.running.remove(&id) else { continue };
            let step = &self.plan.workflow.steps[self.plan.graph[a.node].step as usize];
            self.cores_used = self.cores_used.saturating_sub(step.resources.cores());
            self.mem_used = self.mem_used.saturating_sub(step.resources.memory);
            self.finished(a, outcome)?;
        }
        Ok(())
    }

    fn finished(&mut self, a: Attempt, outcome: Outcome) -> Result<(), RunError> {
        let i = a.node;
        let t = self.plan.graph[i];
        let step = &self.plan.workflow.steps[t.step as usize];
        let name = self.plan.task_name(t);
        let meta = a.dir.join(".twinflow");
        let _ = std::fs::write(meta.join("status.json"), status_json(&outcome));
        let mut problem = (!outcome.success()).then(|| outcome.describe());
        if problem.is_none() {
            // Declared outputs must all exist.
            let missing: Vec<String> = step
                .outputs
                .iter()
                .chain(step.values.iter())
                .filter(|(_, rel)| !a.dir.join(rel).exists())
                .map(|(k, rel)| format!("`{k}` ({rel})"))
                .collect();
            if !missing.is_empty() {
                problem = Some(format!("exited 0 but did not create declared output {}", missing.join(", ")));
            }
        }
        let mut values = IndexMap::new();
        if problem.is_none() {
            for (k, rel) in &step.values {
                match read_value(&a.dir.join(rel)) {
                    Ok(v) => {
                        values.insert(k.clone(), v);
                    }
                    Err(e) => problem = Some(format!("value output `{k}`: {e}")),
                }
            }
        }
        self.store.attempt_finished(
            &self.run_id,
            &name,
            a.attempt,
            problem.is_none(),
            outcome.exit_code(),
            &problem.clone().unwrap_or_else(|| "ok".into()),
        )?;
        if let Some(msg) = problem {
            if self.cancelling || outcome.is_cancelled() {
                self.failures.push((name.clone(), TaskFailure::Cancelled));
                let message = Some(TaskFailure::Cancelled.to_string());
                self.finish_node(i, TaskState::Cancelled, message, secs(outcome.duration()))?;
                return Ok(());
            }
            if a.attempt <= step.retry.count {
                let delay = step.retry.delay(a.attempt);
                tracing::info!(task = %name, attempt = a.attempt, ?delay, "retrying: {msg}");
                self.store.retry_later(
                    &self.run_id,
                    &name,
                    &format!("attempt {} failed: {msg}; retry in {:.1} s", a.attempt, delay.as_secs_f64()),
                )?;
                self.reporter.event(&Event::TaskRetry {
                    task: name,
                    attempt: a.attempt,
                    delay_seconds: secs(delay),
                    message: msg,
                });
                self.state[i.index()] = NodeState::Delayed;
                self.delayed.push((Instant::now() + delay, i));
                return Ok(());
            }
            tracing::info!(task = %name, attempt = a.attempt, "failed: {msg}");
            let stderr_tail = tail(&meta.join("stderr"), 5);
            let full = if stderr_tail.is_empty() { msg } else { format!("{msg}; stderr ends with:\n{stderr_tail}") };
            return self.fail_final(i, full);
        }
        // Publish: rename the attempt directory to `out` so the final name only ever holds a
        // complete result, then record success.
        let tdir = a.dir.parent().map(Path::to_path_buf).unwrap_or_default();
        let out = tdir.join("out");
        if std::fs::rename(&a.dir, &out).is_err() {
            // A result of an earlier attempt is in the way (renaming over a non-empty
            // directory fails): replace it.
            if out.exists() {
                std::fs::remove_dir_all(&out).map_err(io("removing", &out))?;
            }
            std::fs::rename(&a.dir, &out).map_err(io("renaming", &a.dir))?;
        }
        let values_s = values_json(&values);
        self.results[i.index()] = Some(Box::new(TaskResult { dir: out.clone(), values }));
        // Copies outside the run directory are made before success is recorded: a crash in
        // between runs the task again rather than losing a copy.
        if let Err(msg) = self.publish(i, &out) {
            return self.fail_final(i, msg);
        }
        let dir_s = out.display().to_string();
        self.store.finish_task(
            &self.run_id,
            &name,
            TaskState::Succeeded,
            Some(&a.key),
            Some(&dir_s),
            Some(&values_s),
            None,
        )?;
        self.store.cache_put(
            &self.plan.workflow.name,
            &name,
            &CacheEntry {
                key: a.key,
                components: a.components,
                dir: dir_s,
                outputs: values_s,
                run_id: self.run_id.clone(),
            },
        )?;
        self.state[i.index()] = NodeState::Done(TaskState::Succeeded);
        self.reporter.event(&Event::TaskFinished {
            task: name,
            state: TaskState::Succeeded,
            seconds: secs(a.started.elapsed()),
            message: None,
        });
        self.release(i, TaskState::Succeeded)
    }
}

/// Creates the attempt directory `adir` (and its task directory when missing), empty:
/// leftovers of an attempt a killed engine started are removed first. One `mkdir` in the
/// common case, where the task directory exists and the attempt directory does not.
fn fresh_attempt_dir(adir: &Path) -> Result<(), RunError> {
    match std::fs::create_dir(adir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(tdir) = adir.parent() {
                std::fs::create_dir_all(tdir).map_err(io("creating", tdir))?;
            }
            std::fs::create_dir(adir).map_err(io("creating", adir))
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            std::fs::remove_dir_all(adir).map_err(io("removing", adir))?;
            std::fs::create_dir(adir).map_err(io("creating", adir))
        }
        Err(e) => Err(io("creating", adir)(e)),
    }
}

/// `p` absolute, with `.` and `..` removed and symbolic links of its longest existing prefix
/// resolved (the rest need not exist yet).
fn resolved(p: &Path) -> PathBuf {
    let abs = crate::spec::span::absolute(p);
    let mut out = PathBuf::new();
    for c in abs.components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    let mut existing = out.clone();
    let mut rest = vec![];
    while !existing.exists() {
        match (existing.file_name().map(|n| n.to_os_string()), existing.parent().map(Path::to_path_buf)) {
            (Some(name), Some(parent)) => {
                rest.push(name);
                existing = parent;
            }
            _ => return out,
        }
    }
    let mut r = std::fs::canonicalize(&existing).unwrap_or(existing);
    r.extend(rest.iter().rev());
    r
}

/// Copies `from` to `to` through a temporary file in `to`'s directory and a rename (atomic
/// on one file system), creating that directory if needed. Directories are not copied.
fn copy_atomically(from: &Path, to: &Path) -> std::io::Result<()> {
    let parent = to.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent)?;
    let file_name = to.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = parent.join(format!(".{file_name}.twinflow-partial"));
    let copied = std::fs::copy(from, &tmp).and_then(|_| std::fs::File::open(&tmp)?.sync_all());
    if let Err(e) = copied.and_then(|_| std::fs::rename(&tmp, to)) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(())
}

fn values_json(v: &IndexMap<String, Value>) -> String {
    let m: serde_json::Map<String, serde_json::Value> = v.iter().map(|(k, v)| (k.clone(), v.to_json())).collect();
    serde_json::Value::Object(m).to_string()
}

pub(crate) fn parse_values(s: Option<&str>) -> IndexMap<String, Value> {
    let Some(s) = s else { return IndexMap::new() };
    match serde_json::from_str::<serde_json::Value>(s) {
        Ok(serde_json::Value::Object(m)) => {
            m.iter().filter_map(|(k, v)| Value::from_json(v).map(|v| (k.clone(), v))).collect()
        }
        _ => IndexMap::new(),
    }
}

/// Reads a value output: JSON if it parses as JSON (scalar or list), else trimmed text.
fn read_value(p: &Path) -> Result<Value, String> {
    let meta = std::fs::metadata(p).map_err(|e| e.to_string())?;
    if meta.len() > 1 << 20 {
        return Err(format!("`{}` is larger than 1 MiB", p.display()));
    }
    let text = std::fs::read_to_string(p).map_err(|e| e.to_string())?;
    let t = text.trim();
    Ok(serde_json::from_str::<serde_json::Value>(t)
        .ok()
        .and_then(|j| Value::from_json(&j))
        .unwrap_or_else(|| Value::Str(t.to_string())))
}

fn status_json(o: &Outcome) -> String {
    let ms = |t: Option<std::time::SystemTime>| {
        t.and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).map(|d| d.as_millis() as u64)
    };
    let (spawn_error, failure) = (o.spawn_error(), o.failure());
    let st = Status {
        exit_code: o.exit_code(),
        signal: o.signal(),
        timed_out: o.timed_out(),
        cancelled: o.is_cancelled(),
        spawn_error: spawn_error.as_deref(),
        failure: failure.as_deref(),
        started_ms: ms(o.started),
        finished_ms: ms(o.finished),
        seconds: o.duration().as_secs_f64(),
    };
    serde_json::to_string(&st).unwrap_or_default()
}

/// What `.twinflow/status.json` holds.
#[derive(serde::Serialize)]
struct Status<'a> {
    exit_code: Option<i32>,
    signal: Option<i32>,
    timed_out: bool,
    cancelled: bool,
    spawn_error: Option<&'a str>,
    failure: Option<&'a str>,
    started_ms: Option<u64>,
    finished_ms: Option<u64>,
    seconds: f64,
}

/// Writes the environment the engine passes on to every step (its own) to
/// `env-HASH.json` in the run directory, once per distinct environment, readable by the
/// owner only (it may hold credentials). Returns the file name; manifests refer to it, so
/// each attempt's exact environment is that file plus the manifest's `env`.
fn snapshot_environment(run_dir: &Path) -> std::io::Result<String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let vars: std::collections::BTreeMap<String, String> = std::env::vars_os()
        .map(|(k, v)| (k.to_string_lossy().into_owned(), v.to_string_lossy().into_owned()))
        .collect();
    let text = serde_json::to_string_pretty(&vars)?;
    let name = format!("env-{}.json", &blake3::hash(text.as_bytes()).to_hex()[..16]);
    let path = run_dir.join(&name);
    if !path.exists() {
        let tmp = run_dir.join(format!("{name}.partial"));
        let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
        f.write_all(text.as_bytes())?;
        std::fs::rename(&tmp, &path)?;
    }
    Ok(name)
}

/// Writes `.twinflow/manifest.json`: the exact argv and environment of the attempt (the
/// variables it adds, and the run directory's snapshot of what it inherits), its resolved
/// inputs and outputs, and its cache components (one file, to keep the per-task file count
/// low: inode creation dominates the engine's cost for very short tasks).
fn write_manifest(
    meta: &Path,
    name: &str,
    run_id: &str,
    env_file: &str,
    r: &ResolvedTask,
    c: &cache::Components,
) -> std::io::Result<()> {
    let m = Manifest {
        task: name,
        run_id,
        argv: &r.argv,
        env: &r.env,
        inherited_env: env_file,
        inputs: &r.inputs,
        outputs: &r.outputs,
        cache: c,
    };
    std::fs::write(meta.join("manifest.json"), serde_json::to_vec_pretty(&m)?)
}

/// What `.twinflow/manifest.json` holds, serialized straight from the attempt (no
/// intermediate JSON tree: it is written for every attempt).
#[derive(serde::Serialize)]
struct Manifest<'a> {
    task: &'a str,
    run_id: &'a str,
    argv: &'a [String],
    #[serde(serialize_with = "ser_pairs")]
    env: &'a [(String, String)],
    inherited_env: &'a str,
    #[serde(serialize_with = "ser_values")]
    inputs: &'a IndexMap<String, Value>,
    #[serde(serialize_with = "ser_paths")]
    outputs: &'a IndexMap<String, PathBuf>,
    cache: &'a cache::Components,
}

fn ser_pairs<S: serde::Serializer>(v: &&[(String, String)], s: S) -> Result<S::Ok, S::Error> {
    s.collect_map(v.iter().map(|(k, v)| (k, v)))
}

fn ser_values<S: serde::Serializer>(v: &&IndexMap<String, Value>, s: S) -> Result<S::Ok, S::Error> {
    s.collect_map(v.iter().map(|(k, v)| (k, v.to_json())))
}

fn ser_paths<S: serde::Serializer>(v: &&IndexMap<String, PathBuf>, s: S) -> Result<S::Ok, S::Error> {
    s.collect_map(v.iter().map(|(k, p)| (k, p.display().to_string())))
}

fn tail(p: &Path, lines: usize) -> String {
    let Ok(text) = std::fs::read(p) else { return String::new() };
    let start = text.len().saturating_sub(4096);
    let s = String::from_utf8_lossy(&text[start..]);
    let v: Vec<&str> = s.lines().collect();
    v[v.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fresh_attempt_directory_is_created_with_its_task_directory_and_replaces_leftovers() {
        let tmp = tempfile::tempdir().unwrap();
        // First attempt of a scatter member: the task directory does not exist yet.
        let adir = tmp.path().join("steps/member/7/attempt-1");
        fresh_attempt_dir(&adir).unwrap();
        assert!(adir.is_dir());
        // Leftovers of an attempt a killed engine started are removed, not reused.
        std::fs::create_dir(adir.join(".twinflow")).unwrap();
        std::fs::write(adir.join("half-written.nc"), b"partial").unwrap();
        fresh_attempt_dir(&adir).unwrap();
        assert_eq!(std::fs::read_dir(&adir).unwrap().count(), 0, "leftovers survived");
        // A file where the directory should be is an error naming the path, not a panic.
        let blocked = tmp.path().join("steps/other");
        std::fs::create_dir_all(tmp.path().join("steps")).unwrap();
        std::fs::write(&blocked, b"").unwrap();
        let err = fresh_attempt_dir(&blocked.join("attempt-1")).unwrap_err().to_string();
        assert!(err.contains("steps/other"), "{err}");
    }
}
