//! The driver: acts for the [scheduler core](super::scheduler). It settles each task the
//! core hands out (`when:`, cache, resolving the command), prepares attempt directories,
//! submits attempts to the [`Backend`] in batches, turns finished jobs into results or
//! failures, and records every [`Effect`] in the run database and as [`Event`]s.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::attempt::{self, attempt_dir};
use super::cache::{self, Components, Decision, Hasher};
use super::clock::Clock;
use super::failure::{self, StepFacts};
use super::job::{ResolvedTask, components, key_view, resolve_task_in};
use super::publish::{PublishCtx, publish};
use super::scheduler::{Effect, Scheduler, TaskId};
use super::scope::{CycleData, GateValues, Mode, Results, TaskResult, TaskScope};
use super::service::Supervised;
use super::trigger::{FsProbe, Poll, Watch};
use super::{RunError, RunOptions, task_dir};
use crate::events::{Event, Reporter, TaskFiles, TaskState};
use crate::execute::{ArrayMember, Backend, Ending, JobRequest, JobStatus, Outcome, SpawnFailure};
use crate::expr::Value;
use crate::ids::JobId;
use crate::model::Command;
use crate::model::Ctx;
use crate::model::{CycleSpec, Point};
use crate::plan::Plan;
use crate::state::CycleState;
use crate::state::{CacheEntry, Store};

/// An attempt in flight.
pub(crate) struct Attempt {
    pub task: TaskId,
    pub attempt: u32,
    pub dir: PathBuf,
    pub key: String,
    pub components: String,
}

/// How a task's latest attempt ended, kept from when the backend reports it until the
/// core's effect for it (a retry, a final state) is recorded and reported.
struct AttemptEnd {
    /// Its directory (`out/` once it succeeded).
    dir: PathBuf,
    exit_code: Option<i32>,
    signal: Option<i32>,
}

impl AttemptEnd {
    fn files(&self) -> TaskFiles {
        let (stdout, stderr) = failure::log_files(&self.dir);
        TaskFiles {
            dir: Some(self.dir.display().to_string()),
            stdout: Some(stdout.display().to_string()),
            stderr: Some(stderr.display().to_string()),
            exit_code: self.exit_code,
            signal: self.signal,
        }
    }
}

/// Everything the driver acts on.
pub(crate) struct Driver<'a> {
    pub plan: &'a Plan,
    pub store: &'a mut Store,
    pub backend: &'a mut dyn Backend,
    pub reporter: &'a mut dyn Reporter,
    pub opts: &'a RunOptions,
    pub run_id: String,
    pub run_dir: PathBuf,
    pub kernel: PathBuf,
    /// Name (in the run directory) of the snapshot of the environment every step inherits.
    pub env_file: String,
    /// Where the cycles are, when the workflow cycles.
    pub cycling: Option<Cycling>,
    /// Active cycles' results, by index.
    pub cycles: BTreeMap<u64, CycleData>,
    /// The last retired cycle (read by `prev.*`).
    pub retired_prev: Option<CycleData>,
    /// Cycle 0 once it retired, when later cycles read its `once: first` results.
    pub retired_first: Option<CycleData>,
    /// Triggers of gated tasks.
    watches: HashMap<TaskId, Watch>,
    /// Cycles whose watches changed since [`Driver::flush_waits`].
    waits_dirty: std::collections::BTreeSet<u64>,
    /// Gated tasks whose triggers could not be expanded, with why.
    gate_errors: Vec<(TaskId, String)>,
    /// Signals delivered to cycles: (cycle, name) → values.
    delivered: HashMap<(u64, String), indexmap::IndexMap<String, serde_json::Value>>,
    last_signal_check: Option<Instant>,
    pub running: HashMap<JobId, Attempt>,
    /// Attempts that ended, until their task's next effect is recorded.
    ended: HashMap<TaskId, AttemptEnd>,
    /// Services in flight: their readiness, restarts and logs (see [`super::service`]).
    pub services: HashMap<TaskId, Supervised>,
    /// Attempts prepared by this dispatch turn, submitted together at its end.
    batch: Vec<(Attempt, JobRequest)>,
    hasher: Hasher,
    params_memo: HashMap<usize, BTreeMap<String, String>>,
    /// Nodes `--rerun` forces to run (the steps named and what depends on them).
    forced: Vec<bool>,
    /// Paths `publish:` copied results to, in the order they were made.
    pub published: Vec<PathBuf>,
}

impl<'a> Driver<'a> {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        plan: &'a Plan,
        store: &'a mut Store,
        backend: &'a mut dyn Backend,
        reporter: &'a mut dyn Reporter,
        opts: &'a RunOptions,
        run_id: String,
        run_dir: PathBuf,
        env_file: String,
    ) -> Self {
        Driver {
            plan,
            store,
            backend,
            reporter,
            opts,
            run_id,
            run_dir,
            kernel: super::job::kernel_binary(),
            env_file,
            cycling: None,
            cycles: BTreeMap::new(),
            retired_prev: None,
            retired_first: None,
            watches: HashMap::new(),
            gate_errors: vec![],
            waits_dirty: Default::default(),
            delivered: HashMap::new(),
            last_signal_check: None,
            running: HashMap::new(),
            ended: HashMap::new(),
            services: HashMap::new(),
            batch: vec![],
            hasher: Hasher::default(),
            params_memo: HashMap::new(),
            forced: super::rerun_nodes(plan, &opts.rerun),
            published: vec![],
        }
    }

    /// The final failure message of `task`'s attempt in `dir`: the cause, the attempt's
    /// directory and files, and the output that explains it.
    pub(crate) fn final_message(&self, task: TaskId, dir: &Path, outcome: &Outcome, cause: String) -> String {
        let step = &self.plan.workflow.steps[self.plan.graph[task.node].step as usize];
        let facts =
            StepFacts { ranks: step.resources.ranks, timeout: step.timeout, slurm: self.backend.name() == "slurm" };
        failure::message(dir, outcome, cause, facts)
    }

    /// Name of a task: `sim[3]`, or `POINT/sim[3]` in a cycling run.
    pub fn name(&self, t: TaskId) -> String {
        let base = self.plan.task_name(self.plan.graph[t.node]);
        match &self.cycling {
            Some(c) => format!("{}/{base}", c.point(t.cycle).label()),
            None => base,
        }
    }

    /// A member's scatter values (`seed=2 rain=40.0`), `None` for other tasks.
    pub fn label(&self, t: TaskId) -> Option<String> {
        self.plan.member_label(self.plan.graph[t.node])
    }

    /// The cycle point of task `t` (`None` when the workflow does not cycle).
    pub fn point_label(&self, t: TaskId) -> Option<String> {
        self.cycling.as_ref().map(|c| c.point(t.cycle).label())
    }

    /// The results task `t` reads: its cycle's, the one before, and cycle 0's.
    pub fn results(&self, cycle: u64) -> Results<'_> {
        let older = |i: u64| self.cycles.get(&i).or(self.retired_prev.as_ref().filter(|d| d.index == i));
        // A task of a retired cycle still runs when it is a service (of the first cycle).
        let cur = older(cycle)
            .or(self.retired_first.as_ref().filter(|d| d.index == cycle))
            .expect("the task's cycle is active, or retired with its results kept");
        Results {
            cur,
            prev: cycle.checked_sub(1).and_then(older),
            first: if cycle > 0 { self.cycles.get(&0).or(self.retired_first.as_ref()) } else { None },
        }
    }

    /// The result of task `t`, when it has one: in its active cycle, or in a retired cycle
    /// whose results are kept (a service of the first cycle ends after it retired).
    fn result_of(&self, t: TaskId) -> Option<&TaskResult> {
        let data = self
            .cycles
            .get(&t.cycle)
            .or(self.retired_prev.as_ref().filter(|d| d.index == t.cycle))
            .or(self.retired_first.as_ref().filter(|d| d.index == t.cycle))?;
        data.results[t.node.index()].as_deref()
    }

    /// Resume: the result of a task of an active cycle.
    pub fn active_result(&mut self, t: TaskId, r: Option<Box<TaskResult>>) {
        self.data_mut(t.cycle).results[t.node.index()] = r;
    }

    /// Resume: the result of a task of a retired cycle that later cycles read: of the
    /// cycle before the first open one (`prev`), or of cycle 0 (`once: first`).
    pub fn retired_result(&mut self, t: TaskId, r: Option<Box<TaskResult>>, prev: bool) {
        let (n, c) = (self.plan.graph.node_count(), self.cycling.clone());
        let make =
            |i: u64| CycleData::new(i, c.as_ref().map(|c| c.point(i)), c.as_ref().is_some_and(|c| c.is_last(i)), n);
        let first_once =
            self.plan.workflow.steps[self.plan.graph[t.node].step as usize].once == Some(crate::model::Once::First);
        if t.cycle == 0 && first_once {
            self.retired_first.get_or_insert_with(|| make(0)).results[t.node.index()] = r.clone();
        }
        if prev {
            self.retired_prev.get_or_insert_with(|| make(t.cycle)).results[t.node.index()] = r;
        }
    }

    /// Resume: what a task's trigger found before.
    pub fn restore_gate(&mut self, t: TaskId, values: GateValues) {
        self.data_mut(t.cycle).gates.insert(t.node, values);
    }

    /// Resume: a signal an earlier engine handed to cycle `cycle`.
    pub fn restore_signal(&mut self, cycle: u64, name: String, values: indexmap::IndexMap<String, serde_json::Value>) {
        self.delivered.insert((cycle, name), values);
    }

    pub(super) fn data_mut(&mut self, cycle: u64) -> &mut CycleData {
        let (n, last) = (self.plan.graph.node_count(), self.cycling.as_ref().map(|c| c.is_last(cycle)));
        let point = self.cycling.as_ref().map(|c| c.point(cycle));
        self.cycles.entry(cycle).or_insert_with(|| CycleData::new(cycle, point, last.unwrap_or(true), n))
    }

    /// One dispatch turn: settles every task the core hands out, then submits the attempts
    /// prepared in one backend call.
    pub async fn dispatch(&mut self, s: &mut Scheduler<'_>) -> Result<(), RunError> {
        s.set_capacity(self.backend.capacity());
        for t in s.due_restarts() {
            self.relaunch(s, t).await?;
            self.record(s.take_effects())?;
        }
        while let Some(i) = s.next_task() {
            // A cycle the core activated to hand out this task exists here first.
            self.record(s.take_effects())?;
            self.data_mut(i.cycle);
            self.settle(s, i)?;
            self.record(s.take_effects())?;
        }
        self.record(s.take_effects())?;
        self.submit_batch().await
    }

    /// Decides what happens to a ready task: skipped, cached, failed, or an attempt prepared
    /// for submission at the end of the dispatch turn.
    fn settle(&mut self, s: &mut Scheduler<'_>, i: TaskId) -> Result<(), RunError> {
        let plan = self.plan;
        let t = plan.graph[i.node];
        let step = &plan.workflow.steps[t.step as usize];
        let tdir = self.task_dir(i);
        if let Some(w) = &step.when {
            let used = RefCell::new(vec![]);
            let scope = TaskScope {
                plan,
                node: t,
                results: self.results(i.cycle),
                attempt_dir: &tdir,
                run_id: &self.run_id,
                run_dir: &self.run_dir,
                mode: Mode::Exec,
                ns: step.ns,
                ctx: Ctx::When(t.step as usize),
                used: &used,
            };
            match w.tpl.eval(&scope) {
                Ok(Value::Bool(true)) => {}
                Ok(Value::Bool(false)) => {
                    s.skip(i, format!("`when` is false: {}", w.src));
                    return Ok(());
                }
                Ok(other) => {
                    s.fail(i, format!("`when` must be true or false, got `{other}`"));
                    return Ok(());
                }
                Err(e) => {
                    s.fail(i, format!("`when`: {}", e.message));
                    return Ok(());
                }
            }
        }
        let attempt = s.attempts(i) + 1;
        let adir = attempt_dir(&tdir, attempt);
        let service = step.service.is_some();
        // A service's outputs live in `out/` across its attempts (see `super::service`).
        let out_dir = if service { tdir.join("out") } else { adir.clone() };
        let (exec, comps) = match self.resolve_attempt(i, attempt, &adir, &out_dir)? {
            Ok(r) => r,
            Err(e) => {
                s.fail(i, e);
                return Ok(());
            }
        };
        let name = self.name(i);
        // A service is never reused: what it serves is its running process.
        let scope = cache::CacheScope::of(&plan.workflow.name, &step.name, &name, self.cycling.is_some());
        if self.opts.use_cache
            && !service
            && !self.forced[i.node.index()]
            && let Decision::UpToDate(hit) = cache::decide(self.store, scope, step, &comps, Some(&self.run_id))?
        {
            let dir = hit.dir.clone();
            self.data_mut(i.cycle).results[i.node.index()] = Some(Box::new(hit));
            match publish(self.publish_ctx(i.cycle), i.node, &dir) {
                Ok(paths) => {
                    self.published.extend(paths);
                    s.reuse(i)
                }
                Err(e) => s.fail(i, e.to_string()),
            }
            return Ok(());
        }
        self.enqueue(i, attempt, adir, &out_dir, exec, comps)?;
        let launched = s.launch(i);
        debug_assert_eq!(launched, attempt);
        Ok(())
    }

    /// Resolves attempt `attempt` of task `i` (in `adir`, its outputs in `out_dir`): its
    /// command and environment, and its cache components. `Err(message)` when it cannot be
    /// resolved (the task fails).
    pub(super) fn resolve_attempt(
        &mut self,
        i: TaskId,
        attempt: u32,
        adir: &Path,
        out_dir: &Path,
    ) -> Result<Result<(ResolvedTask, Components), String>, RunError> {
        let plan = self.plan;
        let t = plan.graph[i.node];
        let step = &plan.workflow.steps[t.step as usize];
        let mut exec = match resolve_task_in(
            plan,
            t,
            self.results(i.cycle),
            adir,
            out_dir,
            &self.run_id,
            &self.run_dir,
            Mode::Exec,
            &self.kernel,
        ) {
            Ok(r) => r,
            Err(e) => return Ok(Err(e.to_string())),
        };
        let is_kernel = matches!(step.command, Command::Kernel(_));
        let keyv = key_view(&exec, adir, &self.run_dir, &self.run_id, is_kernel);
        // Not part of the cache key (which reads `keyv`): attempts differ only in it.
        exec.env.push((twinflow_contract::env::ATTEMPT.into(), attempt.to_string()));
        if let Some(c) = &self.cycling {
            exec.env.push((twinflow_contract::env::CYCLE_INDEX.into(), i.cycle.to_string()));
            exec.env.push((twinflow_contract::env::CYCLE_POINT.into(), c.point(i.cycle).to_string()));
        }
        let comps = components(plan, t, &keyv, &exec, self.store, &mut self.hasher, &mut self.params_memo)?;
        Ok(Ok((exec, comps)))
    }

    /// Prepares the directory of attempt `attempt` of task `i` and queues it for submission
    /// at the end of the dispatch turn; a service's attempt is also supervised from now on.
    pub(super) fn enqueue(
        &mut self,
        i: TaskId,
        attempt: u32,
        adir: PathBuf,
        out_dir: &Path,
        exec: ResolvedTask,
        comps: Components,
    ) -> Result<(), RunError> {
        let plan = self.plan;
        let t = plan.graph[i.node];
        let step = &plan.workflow.steps[t.step as usize];
        let name = self.name(i);
        attempt::prepare(&adir, &name, &self.run_id, &self.env_file, &exec, &comps)?;
        let meta = attempt::meta_dir(&adir);
        if let Some(svc) = &step.service {
            std::fs::create_dir_all(out_dir).map_err(super::io("creating", out_dir))?;
            let sup = Supervised::new(svc, attempt, &adir, out_dir, &exec);
            match self.services.get_mut(&i) {
                Some(old) => old.next_attempt(sup),
                None => {
                    self.services.insert(i, sup);
                }
            }
        }
        let req = JobRequest {
            name,
            argv: exec.argv,
            env: exec.env,
            cwd: adir.clone(),
            stdout: meta.join("stdout"),
            stderr: meta.join("stderr"),
            resources: step.resources.clone(),
            timeout: step.timeout,
            array: t.member_index().map(|index| ArrayMember { step: step.name.clone(), index }),
        };
        let key = comps.key();
        let components = serde_json::to_string(&comps).unwrap_or_default();
        self.batch.push((Attempt { task: i, attempt, dir: adir, key, components }, req));
        Ok(())
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
            let name = self.name(a.task);
            match results.next() {
                Some(Ok(id)) => {
                    tracing::debug!(task = %name, attempt = a.attempt, job = %id, "submitted");
                    self.store.attempt_started(&self.run_id, &name, a.attempt, &id.0)?;
                    let cycle = self.point_label(a.task);
                    self.reporter.event(&Event::TaskStarted {
                        task: name,
                        cycle,
                        label: self.label(a.task),
                        attempt: a.attempt,
                        job_id: id.0.clone(),
                        dir: Some(a.dir.display().to_string()),
                    });
                    self.running.insert(id, a);
                }
                // The run stops with the backend's error; these tasks were not submitted
                // and stay pending in the database, to run on `--resume`.
                Some(Err(e)) => error = Some(e),
                None => {}
            }
        }
        match error {
            Some(e) => Err(e.into()),
            None => Ok(()),
        }
    }

    /// Polls every job in flight (one backend call) and reports those that ended.
    pub async fn collect(&mut self, s: &mut Scheduler<'_>) -> Result<(), RunError> {
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
            if s.service_phase(a.task).is_some() {
                self.service_ended(s, a, outcome).await?;
            } else {
                self.finished(s, a, outcome)?;
            }
            self.record(s.take_effects())?;
        }
        Ok(())
    }

    /// An attempt ended: on success, its outputs are checked, its directory renamed to `out/`
    /// and published, and only then is success recorded; otherwise the core decides between
    /// a retry and a final failure.
    fn finished(&mut self, s: &mut Scheduler<'_>, a: Attempt, outcome: Outcome) -> Result<(), RunError> {
        let i = a.task;
        let step = &self.plan.workflow.steps[self.plan.graph[i.node].step as usize];
        let name = self.name(i);
        let verdict = attempt::conclude(&a.dir, step, &outcome);
        let detail = match &verdict {
            Ok(_) => "ok".to_string(),
            Err(msg) => msg.clone(),
        };
        self.store.attempt_finished(&self.run_id, &name, a.attempt, verdict.is_ok(), outcome.exit_code(), &detail)?;
        self.record_usage(&name, a.attempt, &outcome)?;
        let end = |dir: PathBuf| AttemptEnd { dir, exit_code: outcome.exit_code(), signal: outcome.signal() };
        let values = match verdict {
            Ok(values) => values,
            Err(_) if outcome.is_cancelled() => {
                self.ended.insert(i, end(a.dir));
                s.attempt_cancelled(i);
                return Ok(());
            }
            Err(msg) => {
                // A final failure names the attempt's directory and files and shows the end
                // of its output.
                let msg = if s.retries_left(i) { msg } else { self.final_message(i, &a.dir, &outcome, msg) };
                self.ended.insert(i, end(a.dir));
                s.attempt_failed(i, msg);
                return Ok(());
            }
        };
        let out = attempt::promote(&a.dir)?;
        self.ended.insert(i, end(out.clone()));
        let values_s = attempt::values_json(&values);
        self.data_mut(i.cycle).results[i.node.index()] = Some(Box::new(TaskResult { dir: out.clone(), values }));
        // Copies outside the run directory are made before success is recorded: a crash in
        // between runs the task again rather than losing a copy.
        match publish(self.publish_ctx(i.cycle), i.node, &out) {
            Ok(paths) => self.published.extend(paths),
            Err(e) => {
                s.fail(i, e.to_string());
                return Ok(());
            }
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
        let scope = cache::CacheScope::of(&self.plan.workflow.name, &step.name, &name, self.cycling.is_some());
        self.store.cache_put(
            scope.workflow,
            scope.step,
            scope.point,
            &CacheEntry {
                key: a.key,
                task: name.clone(),
                components: a.components,
                dir: dir_s,
                outputs: values_s,
                run_id: self.run_id.clone(),
                at: 0,
            },
        )?;
        self.report_alerts(i, &out);
        s.succeeded(i);
        Ok(())
    }

    /// Reports each line of the task's alerts outputs (`report: { alerts: [out.NAME] }`) as
    /// an `alert` event; a line that is not JSON is reported as a string, an unreadable
    /// file as a warning (the task succeeded: its alerts must not fail it).
    fn report_alerts(&mut self, i: TaskId, out: &std::path::Path) {
        let step = &self.plan.workflow.steps[self.plan.graph[i.node].step as usize];
        if step.report.alerts.is_empty() {
            return;
        }
        let files: Vec<(String, PathBuf)> = step
            .report
            .alerts
            .iter()
            .filter_map(|name| step.outputs.get(name).map(|rel| (name.clone(), out.join(rel))))
            .collect();
        let (task, cycle) = (self.name(i), self.point_label(i));
        for (output, path) in files {
            let bytes = match std::fs::read(&path) {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(task = %task, path = %path.display(), "cannot read the alerts output: {e}");
                    continue;
                }
            };
            // Bytes that are not UTF-8 become U+FFFD, as in the run report: an alert is
            // never lost to its encoding.
            for alert in crate::events::alert_lines(&String::from_utf8_lossy(&bytes)) {
                self.reporter.event(&Event::Alert {
                    task: task.clone(),
                    cycle: cycle.clone(),
                    output: output.clone(),
                    alert,
                });
            }
        }
    }

    /// Records what an attempt used, when its backend measured it.
    pub(crate) fn record_usage(&mut self, name: &str, attempt: u32, outcome: &Outcome) -> Result<(), RunError> {
        let Some(u) = outcome.usage else { return Ok(()) };
        let ms = |s: Option<f64>| s.map(|s| (s * 1000.0).round() as i64);
        let rss = u.max_rss_bytes.and_then(|b| i64::try_from(b).ok());
        self.store.attempt_usage(
            &self.run_id,
            name,
            attempt,
            [ms(u.user_seconds), ms(u.system_seconds), ms(u.cpu_seconds), rss],
        )?;
        Ok(())
    }

    /// Records the core's state changes: in the run database and as events.
    pub fn record(&mut self, effects: Vec<Effect>) -> Result<(), RunError> {
        for e in effects {
            match e {
                Effect::ServiceReady { task } => {
                    let attempt = self.services.get(&task).map_or(0, |v| v.attempt);
                    let (task_name, cycle) = (self.name(task), self.point_label(task));
                    tracing::info!(task = %task_name, attempt, "service ready");
                    self.reporter.event(&Event::ServiceReady { task: task_name, cycle, attempt });
                }
                Effect::ServiceRestart { task, attempt, restarts, delay, message } => {
                    let name = self.name(task);
                    tracing::info!(task = %name, attempt, restarts, ?delay, "service ended, restarting: {message}");
                    if let Some(v) = self.services.get_mut(&task) {
                        v.restarts = restarts;
                    }
                    let note = format!(
                        "attempt {attempt} ended ({message}); restart {restarts} in {:.1} s",
                        delay.as_secs_f64()
                    );
                    self.store.service_note(&self.run_id, &name, None, None, &note)?;
                    self.reporter.event(&Event::ServiceRestarted {
                        task: name,
                        cycle: self.point_label(task),
                        attempt,
                        restarts,
                        delay_seconds: crate::events::secs(delay),
                        message,
                    });
                }
                Effect::Finished { task, state, message, seconds } => {
                    let name = self.name(task);
                    // A service ends here (stopped, or failed for good); it says how often it
                    // was restarted.
                    let service = self.services.remove(&task);
                    let note = service.filter(|v| v.restarts > 0).map(|v| match v.restarts {
                        1 => "service restarted once".to_string(),
                        n => format!("service restarted {n} times"),
                    });
                    // A success was recorded with its cache key before the core heard of it
                    // (a service, never cached, is recorded now).
                    if state != TaskState::Succeeded
                        || self.plan.workflow.steps[self.plan.graph[task.node].step as usize].service.is_some()
                    {
                        if state == TaskState::Failed {
                            tracing::info!(task = %name, "failed: {}", message.as_deref().unwrap_or_default());
                        }
                        let message = message.clone().or(note);
                        let result = self.result_of(task);
                        // A failed or cancelled task points at its last attempt.
                        let (dir, values) = match (result, self.ended.get(&task)) {
                            (Some(r), _) => (Some(r.dir.display().to_string()), Some(attempt::values_json(&r.values))),
                            (None, Some(e)) => (Some(e.dir.display().to_string()), None),
                            (None, None) => (None, None),
                        };
                        self.store.finish_task(
                            &self.run_id,
                            &name,
                            state,
                            None,
                            dir.as_deref(),
                            values.as_deref(),
                            message.as_deref(),
                        )?;
                    }
                    if self.watches.remove(&task).is_some() {
                        self.waits_dirty.insert(task.cycle);
                    }
                    let files = match self.ended.remove(&task) {
                        Some(e) => e.files(),
                        // Cached: the earlier result.
                        None => TaskFiles {
                            dir: self
                                .cycles
                                .get(&task.cycle)
                                .and_then(|d| d.results[task.node.index()].as_ref())
                                .map(|r| r.dir.display().to_string()),
                            ..TaskFiles::default()
                        },
                    };
                    self.reporter.event(&Event::TaskFinished {
                        task: name,
                        cycle: self.point_label(task),
                        label: self.label(task),
                        state,
                        seconds,
                        message,
                        files,
                    });
                }
                Effect::Retry { task, attempt, delay, message } => {
                    let name = self.name(task);
                    tracing::info!(task = %name, attempt, ?delay, "retrying: {message}");
                    self.store.retry_later(
                        &self.run_id,
                        &name,
                        &format!("attempt {attempt} failed: {message}; retry in {:.1} s", delay.as_secs_f64()),
                    )?;
                    let files = self.ended.remove(&task).map(|e| e.files()).unwrap_or_default();
                    self.reporter.event(&Event::TaskRetry {
                        task: name,
                        cycle: self.point_label(task),
                        label: self.label(task),
                        attempt,
                        delay_seconds: crate::events::secs(delay),
                        message,
                        files,
                    });
                }
                Effect::Pending { task } => {
                    let name = self.name(task);
                    self.store.reset_task(&self.run_id, &name)?;
                }
                Effect::Gated { task } => self.gate(task)?,
                Effect::CycleStarted { cycle, .. } => {
                    self.data_mut(cycle);
                    let Some(c) = &self.cycling else { continue };
                    let label = c.point(cycle).label();
                    self.store.cycle_started(&self.run_id, cycle, &label)?;
                    let plan = self.plan;
                    let last = c.is_last(cycle);
                    let names: Vec<(String, String, Option<u32>, Option<String>)> = plan
                        .graph
                        .node_indices()
                        .filter(|&i| !plan.graph[i].is_join() && plan.runs_in(i, cycle, last))
                        .map(|i| {
                            let t = plan.graph[i];
                            (
                                self.name(TaskId::new(cycle, i)),
                                plan.workflow.steps[t.step as usize].name.clone(),
                                t.member_index(),
                                plan.member_label(t),
                            )
                        })
                        .collect();
                    self.store.ensure_cycle_tasks(
                        &self.run_id,
                        cycle,
                        names.iter().map(|(a, b, c, d)| (a.as_str(), b.as_str(), *c, d.as_deref())),
                    )?;
                    tracing::info!(cycle, point = %label, "cycle started");
                    self.reporter.event(&Event::CycleStarted { cycle, point: label });
                }
                Effect::CycleFinished { cycle, counts } => {
                    let Some(c) = &self.cycling else { continue };
                    let label = c.point(cycle).label();
                    self.store.cycle_ended(&self.run_id, cycle, CycleState::Succeeded, Some(&counts))?;
                    tracing::info!(cycle, point = %label, "cycle finished");
                    self.reporter.event(&Event::CycleFinished { cycle, point: label, counts });
                    self.delivered.retain(|(c, _), _| *c > cycle);
                    if let Some(data) = self.cycles.remove(&cycle) {
                        if cycle == 0
                            && self.plan.workflow.steps.iter().any(|s| s.once == Some(crate::model::Once::First))
                        {
                            self.retired_first = Some(data.clone());
                        }
                        self.retired_prev = Some(data);
                    }
                    self.housekeeping(cycle)?;
                }
            }
        }
        Ok(())
    }

    /// `keep: N`: when cycle `done` retires, the directories of cycle `done - N` are
    /// removed and its database rows compacted into its summary. Cycle 0 stays when later
    /// cycles read its `once: first` results; the cycle just retired always stays (the next
    /// one reads it through `prev.*`).
    fn housekeeping(&mut self, done: u64) -> Result<(), RunError> {
        let Some(c) = &self.cycling else { return Ok(()) };
        let Some(keep) = c.spec.keep else { return Ok(()) };
        let Some(old) = done.checked_sub(u64::from(keep.max(1))) else { return Ok(()) };
        if old == 0 && self.retired_first.is_some() {
            return Ok(());
        }
        let dir = self.cycle_dir(old);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(RunError::Io { action: "pruning the directory of an old cycle", path: dir, source: e });
            }
        }
        self.store.compact_cycle(&self.run_id, old)?;
        tracing::debug!(cycle = old, "pruned");
        Ok(())
    }

    /// Directory of cycle `cycle`'s tasks: `RUN/cycles/POINT`.
    pub fn cycle_dir(&self, cycle: u64) -> PathBuf {
        match &self.cycling {
            Some(c) => super::cycle_dir_of(&self.run_dir, &c.point(cycle).label()),
            None => self.run_dir.clone(),
        }
    }

    /// Evaluates `wait:` templates of task `t`, which see what `in:` sees.
    fn eval_wait(&self, t: TaskId, tpls: &[crate::model::Tpl]) -> Result<Vec<String>, String> {
        let plan = self.plan;
        let node = plan.graph[t.node];
        let tdir = self.task_dir(t);
        let used = RefCell::new(vec![]);
        let scope = TaskScope {
            plan,
            node,
            results: self.results(t.cycle),
            attempt_dir: &tdir,
            run_id: &self.run_id,
            run_dir: &self.run_dir,
            mode: Mode::Exec,
            ns: plan.workflow.steps[node.step as usize].ns,
            ctx: Ctx::Wait(node.step as usize),
            used: &used,
        };
        tpls.iter().map(|x| x.tpl.eval(&scope).map(|v| v.to_string()).map_err(|e| e.message)).collect()
    }

    /// A task's upstream is done: its triggers are expanded into a watch, checked from the
    /// next loop turn on.
    fn gate(&mut self, t: TaskId) -> Result<(), RunError> {
        let plan = self.plan;
        let node = plan.graph[t.node];
        let step = &plan.workflow.steps[node.step as usize];
        let Some(w) = &step.wait else { return Ok(()) };
        let now = Instant::now();
        let name = self.name(t);
        let base = plan.workflow.namespaces[step.ns].file.abs_dir();
        let files = match self.eval_wait(t, &w.files) {
            Ok(f) => f.into_iter().map(|p| base.join(p).display().to_string()).collect(),
            Err(e) => return self.gate_failed(t, format!("`wait.files`: {e}")),
        };
        let not_before = match (w.clock, self.cycling.as_ref().map(|c| c.point(t.cycle))) {
            (Some(off), Some(Point::Time(p))) => p.checked_add(off).ok(),
            (Some(off), _) => jiff::Timestamp::now().checked_add(off).ok(),
            _ => None,
        };
        let mut watch = Watch::new(now, not_before, files, w.settle, w.min_size, w.poll, w.timeout, w.on_timeout);
        watch.signal = w.signal.clone();
        watch.command = !w.command.is_empty();
        if let Some(sig) = &w.signal
            && let Some(v) = self.delivered.get(&(t.cycle, sig.clone()))
        {
            watch.signal_received(v.clone());
        }
        let waiting_for = watch.describe();
        tracing::debug!(task = %name, "waiting for {waiting_for}");
        self.watches.insert(t, watch);
        self.waits_dirty.insert(t.cycle);
        let cycle = self.point_label(t);
        self.reporter.event(&Event::TaskWaiting { task: name, cycle, waiting_for });
        Ok(())
    }

    fn gate_failed(&mut self, t: TaskId, message: String) -> Result<(), RunError> {
        // Reported through the core on the next check: a watch that times out at once.
        let mut w = Watch::new(
            Instant::now(),
            None,
            vec![],
            Duration::ZERO,
            0,
            Duration::from_secs(1),
            Some(Duration::ZERO),
            crate::model::OnTimeout::Fail,
        );
        w.signal = Some(message);
        self.watches.insert(t, w);
        Ok(())
    }

    /// Writes what the gated tasks of the cycles whose watches changed since the last call
    /// wait for to their rows (for `status`): once per loop turn, however many changed.
    pub fn flush_waits(&mut self) -> Result<(), RunError> {
        if self.cycling.is_none() {
            return Ok(());
        }
        for cycle in std::mem::take(&mut self.waits_dirty) {
            let mut parts: Vec<(TaskId, String)> = self
                .watches
                .iter()
                .filter(|(t, _)| t.cycle == cycle)
                .map(|(t, w)| (*t, format!("{}: {}", self.plan.task_name(self.plan.graph[t.node]), w.describe())))
                .collect();
            parts.sort();
            let text = parts.into_iter().map(|(_, s)| s).collect::<Vec<_>>().join("; ");
            self.store.set_cycle_waits(&self.run_id, cycle, (!text.is_empty()).then_some(text.as_str()))?;
        }
        Ok(())
    }

    /// Checks the triggers that are due; opens the gates of tasks whose triggers are all
    /// satisfied and ends those whose timeout passed.
    pub async fn poll_gates(&mut self, s: &mut Scheduler<'_>, clock: &dyn Clock) -> Result<(), RunError> {
        for (t, message) in std::mem::take(&mut self.gate_errors) {
            s.gate_timed_out(t, message, false);
            let eff = s.take_effects();
            self.record(eff)?;
        }
        if self.watches.is_empty() {
            return Ok(());
        }
        let now = clock.now();
        self.take_signals(now)?;
        self.run_commands().await;
        let wall = clock.wall();
        let due: Vec<TaskId> = self.watches.iter().filter(|(_, w)| w.next_check <= now).map(|(t, _)| *t).collect();
        let mut probe = FsProbe;
        for t in due {
            let Some(w) = self.watches.get_mut(&t) else { continue };
            match w.check(now, wall, &mut probe) {
                Poll::Wait(_) => {}
                Poll::Ready(values) => {
                    self.watches.remove(&t);
                    let name = self.name(t);
                    let json = serde_json::to_string(&values).unwrap_or_default();
                    self.store.gate_opened(&self.run_id, &name, &json)?;
                    tracing::info!(task = %name, "triggers satisfied");
                    self.data_mut(t.cycle).gates.insert(t.node, values);
                    s.open_gate(t);
                    self.waits_dirty.insert(t.cycle);
                }
                Poll::TimedOut { message, skip } => {
                    self.watches.remove(&t);
                    s.gate_timed_out(t, message, skip);
                }
            }
            let eff = s.take_effects();
            self.record(eff)?;
        }
        Ok(())
    }

    /// When the next trigger check is due.
    pub fn next_gate_check(&self) -> Option<Instant> {
        self.watches.values().map(|w| w.next_check).min()
    }

    /// Hands signals (`twinflow signal`) to the cycles waiting for them: one for a given
    /// cycle goes to it; one without goes to the earliest cycle still waiting for that name.
    fn take_signals(&mut self, now: Instant) -> Result<(), RunError> {
        if !self.watches.values().any(Watch::awaits_signal) {
            return Ok(());
        }
        if self.last_signal_check.is_some_and(|t| now.saturating_duration_since(t) < Duration::from_millis(200)) {
            return Ok(());
        }
        self.last_signal_check = Some(now);
        for sig in self.store.signals(&self.run_id, true)? {
            let label = |c: u64| self.cycling.as_ref().map(|cy| cy.point(c).label());
            let waiting: Vec<TaskId> = self
                .watches
                .iter()
                .filter(|(t, w)| {
                    w.awaits_signal()
                        && w.signal.as_deref() == Some(sig.name.as_str())
                        && sig.point.as_ref().is_none_or(|p| Some(p) == label(t.cycle).as_ref())
                })
                .map(|(t, _)| *t)
                .collect();
            let Some(cycle) = waiting.iter().map(|t| t.cycle).min() else { continue };
            let values: indexmap::IndexMap<String, serde_json::Value> =
                serde_json::from_str(&sig.values).unwrap_or_default();
            self.store.use_signal(sig.id, cycle)?;
            tracing::info!(signal = %sig.name, cycle, "signal received");
            for t in waiting.into_iter().filter(|t| t.cycle == cycle) {
                if let Some(w) = self.watches.get_mut(&t) {
                    w.signal_received(values.clone());
                    w.next_check = now;
                }
            }
            self.delivered.insert((cycle, sig.name.clone()), values);
            self.waits_dirty.insert(cycle);
        }
        Ok(())
    }

    /// Runs the `command` triggers that are due (each at most once per `poll` interval, all
    /// of one turn at once).
    async fn run_commands(&mut self) {
        let due: Vec<TaskId> = self
            .watches
            .iter()
            .filter(|(_, w)| w.awaits_command() && w.next_check <= Instant::now())
            .map(|(t, _)| *t)
            .collect();
        if due.is_empty() {
            return;
        }
        let mut runs = vec![];
        for t in due {
            let plan = self.plan;
            let step = &plan.workflow.steps[plan.graph[t.node].step as usize];
            let Some(w) = &step.wait else { continue };
            let argv = match self.eval_wait(t, &w.command) {
                Ok(a) => a,
                Err(e) => {
                    // Fails the task at the next check, rather than polling forever.
                    self.watches.remove(&t);
                    self.gate_errors.push((t, format!("`wait.command`: {e}")));
                    continue;
                }
            };
            let poll = w.poll;
            let cwd = plan.workflow.namespaces[step.ns].file.abs_dir();
            runs.push(tokio::spawn(async move { (t, super::trigger::run_command(&argv, &cwd, poll).await) }));
        }
        for run in runs {
            let Ok((t, r)) = run.await else { continue };
            if let (Some(values), Some(w)) = (r, self.watches.get_mut(&t)) {
                w.command_succeeded(values);
                w.next_check = Instant::now();
            }
        }
    }

    fn publish_ctx(&self, cycle: u64) -> PublishCtx<'_> {
        PublishCtx {
            plan: self.plan,
            results: self.results(cycle),
            run_id: &self.run_id,
            run_dir: &self.run_dir,
            runs_dir: &self.opts.runs_dir,
        }
    }

    /// Directory of task `t`: `RUN/steps/STEP[/MEMBER]`, under `RUN/cycles/POINT/` in a
    /// cycling run.
    pub fn task_dir(&self, t: TaskId) -> PathBuf {
        task_dir(&self.cycle_dir(t.cycle), self.plan, self.plan.graph[t.node])
    }

    /// Ids of jobs in flight.
    pub fn job_ids(&self) -> Vec<JobId> {
        self.running.keys().cloned().collect()
    }

    /// The run directory.
    pub fn run_dir(&self) -> &Path {
        &self.run_dir
    }
}

/// Where the cycles of a cycling run are.
#[derive(Debug, Clone)]
pub(crate) struct Cycling {
    /// The workflow's `cycle:`.
    pub spec: CycleSpec,
    /// The first point.
    pub start: Point,
    /// Number of cycles, when bounded.
    pub count: Option<u64>,
}

impl Cycling {
    /// Point of cycle `index`.
    pub fn point(&self, index: u64) -> Point {
        self.spec.point(self.start, index)
    }
    /// Whether `index` is the last cycle.
    pub fn is_last(&self, index: u64) -> bool {
        self.count.is_some_and(|n| index + 1 == n)
    }
}
