//! The driver: acts for the [scheduler core](super::scheduler). It settles each task the
//! core hands out (`when:`, cache, resolving the command), prepares attempt directories,
//! submits attempts to the [`Backend`] in batches, turns finished jobs into results or
//! failures, and records every [`Effect`] in the run database and as [`Event`]s.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use petgraph::graph::NodeIndex;

use super::attempt::{self, attempt_dir};
use super::cache::{self, Decision, Hasher};
use super::job::{components, key_view, resolve_task};
use super::publish::{PublishCtx, publish};
use super::scheduler::{Effect, Scheduler};
use super::scope::{CycleData, Mode, Results, TaskResult, TaskScope};
use super::{RunError, RunOptions, task_dir};
use crate::events::{Event, Reporter, TaskState};
use crate::execute::{ArrayMember, Backend, Ending, JobRequest, JobStatus, Outcome, SpawnFailure};
use crate::expr::Value;
use crate::ids::JobId;
use crate::model::Command;
use crate::model::Ctx;
use crate::plan::Plan;
use crate::state::{CacheEntry, Store};

/// An attempt in flight.
pub(crate) struct Attempt {
    pub node: NodeIndex,
    pub attempt: u32,
    pub dir: PathBuf,
    pub key: String,
    pub components: String,
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
    pub data: CycleData,
    pub running: HashMap<JobId, Attempt>,
    /// Attempts prepared by this dispatch turn, submitted together at its end.
    batch: Vec<(Attempt, JobRequest)>,
    hasher: Hasher,
    params_memo: HashMap<usize, BTreeMap<String, String>>,
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
            data: CycleData::new(0, None, false, plan.graph.node_count()),
            running: HashMap::new(),
            batch: vec![],
            hasher: Hasher::default(),
            params_memo: HashMap::new(),
        }
    }

    fn name(&self, i: NodeIndex) -> String {
        self.plan.task_name(self.plan.graph[i])
    }

    /// One dispatch turn: settles every task the core hands out, then submits the attempts
    /// prepared in one backend call.
    pub async fn dispatch(&mut self, s: &mut Scheduler<'_>) -> Result<(), RunError> {
        s.set_capacity(self.backend.capacity());
        while let Some(i) = s.next_task() {
            self.settle(s, i)?;
            self.record(s.take_effects())?;
        }
        self.record(s.take_effects())?;
        self.submit_batch().await
    }

    /// Decides what happens to a ready task: skipped, cached, failed, or an attempt prepared
    /// for submission at the end of the dispatch turn.
    fn settle(&mut self, s: &mut Scheduler<'_>, i: NodeIndex) -> Result<(), RunError> {
        let plan = self.plan;
        let t = plan.graph[i];
        let step = &plan.workflow.steps[t.step as usize];
        let tdir = task_dir(&self.run_dir, plan, t);
        if let Some(w) = &step.when {
            let used = RefCell::new(vec![]);
            let scope = TaskScope {
                plan,
                node: t,
                results: Results::single(&self.data),
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
        let mut exec = match resolve_task(
            plan,
            t,
            Results::single(&self.data),
            &adir,
            &self.run_id,
            &self.run_dir,
            Mode::Exec,
            &self.kernel,
        ) {
            Ok(r) => r,
            Err(e) => {
                s.fail(i, e.to_string());
                return Ok(());
            }
        };
        let is_kernel = matches!(step.command, Command::Kernel(_));
        let keyv = key_view(&exec, &adir, &self.run_dir, &self.run_id, is_kernel);
        // Not part of the cache key (which reads `keyv`): attempts differ only in it.
        exec.env.push((twinflow_contract::env::ATTEMPT.into(), attempt.to_string()));
        let comps = components(plan, t, &keyv, &exec, self.store, &mut self.hasher, &mut self.params_memo)?;
        let name = self.name(i);
        if self.opts.use_cache
            && let Decision::UpToDate(hit) = cache::decide(self.store, &plan.workflow.name, &name, step, &comps)?
        {
            let dir = hit.dir.clone();
            self.data.results[i.index()] = Some(Box::new(hit));
            match publish(self.publish_ctx(), i, &dir) {
                Ok(()) => s.reuse(i),
                Err(e) => s.fail(i, e.to_string()),
            }
            return Ok(());
        }
        attempt::prepare(&adir, &name, &self.run_id, &self.env_file, &exec, &comps)?;
        let meta = attempt::meta_dir(&adir);
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
        let launched = s.launch(i);
        debug_assert_eq!(launched, attempt);
        let key = comps.key();
        let components = serde_json::to_string(&comps).unwrap_or_default();
        self.batch.push((Attempt { node: i, attempt, dir: adir, key, components }, req));
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
            let name = self.name(a.node);
            match results.next() {
                Some(Ok(id)) => {
                    tracing::debug!(task = %name, attempt = a.attempt, job = %id, "submitted");
                    self.store.attempt_started(&self.run_id, &name, a.attempt, &id.0)?;
                    self.reporter.event(&Event::TaskStarted { task: name, attempt: a.attempt, job_id: id.0.clone() });
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
            self.finished(s, a, outcome)?;
            self.record(s.take_effects())?;
        }
        Ok(())
    }

    /// An attempt ended: on success, its outputs are checked, its directory renamed to `out/`
    /// and published, and only then is success recorded; otherwise the core decides between
    /// a retry and a final failure.
    fn finished(&mut self, s: &mut Scheduler<'_>, a: Attempt, outcome: Outcome) -> Result<(), RunError> {
        let i = a.node;
        let step = &self.plan.workflow.steps[self.plan.graph[i].step as usize];
        let name = self.name(i);
        let verdict = attempt::conclude(&a.dir, step, &outcome);
        let detail = match &verdict {
            Ok(_) => "ok".to_string(),
            Err(msg) => msg.clone(),
        };
        self.store.attempt_finished(&self.run_id, &name, a.attempt, verdict.is_ok(), outcome.exit_code(), &detail)?;
        let values = match verdict {
            Ok(values) => values,
            Err(_) if outcome.is_cancelled() => {
                s.attempt_cancelled(i);
                return Ok(());
            }
            Err(msg) => {
                // A final failure says how the step's standard error ends.
                let msg = if s.retries_left(i) { msg } else { attempt::with_stderr_tail(&a.dir, msg) };
                s.attempt_failed(i, msg);
                return Ok(());
            }
        };
        let out = attempt::promote(&a.dir)?;
        let values_s = attempt::values_json(&values);
        self.data.results[i.index()] = Some(Box::new(TaskResult { dir: out.clone(), values }));
        // Copies outside the run directory are made before success is recorded: a crash in
        // between runs the task again rather than losing a copy.
        if let Err(e) = publish(self.publish_ctx(), i, &out) {
            s.fail(i, e.to_string());
            return Ok(());
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
        s.succeeded(i);
        Ok(())
    }

    /// Records the core's state changes: in the run database and as events.
    pub fn record(&mut self, effects: Vec<Effect>) -> Result<(), RunError> {
        for e in effects {
            match e {
                Effect::Finished { node, state, message, seconds } => {
                    let name = self.name(node);
                    // A success was recorded with its cache key before the core heard of it.
                    if state != TaskState::Succeeded {
                        if state == TaskState::Failed {
                            tracing::info!(task = %name, "failed: {}", message.as_deref().unwrap_or_default());
                        }
                        let (dir, values) = match &self.data.results[node.index()] {
                            Some(r) => (Some(r.dir.display().to_string()), Some(attempt::values_json(&r.values))),
                            None => (None, None),
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
                    self.reporter.event(&Event::TaskFinished { task: name, state, seconds, message });
                }
                Effect::Retry { node, attempt, delay, message } => {
                    let name = self.name(node);
                    tracing::info!(task = %name, attempt, ?delay, "retrying: {message}");
                    self.store.retry_later(
                        &self.run_id,
                        &name,
                        &format!("attempt {attempt} failed: {message}; retry in {:.1} s", delay.as_secs_f64()),
                    )?;
                    self.reporter.event(&Event::TaskRetry {
                        task: name,
                        attempt,
                        delay_seconds: crate::events::secs(delay),
                        message,
                    });
                }
                Effect::Pending { node } => {
                    let name = self.name(node);
                    self.store.reset_task(&self.run_id, &name)?;
                }
            }
        }
        Ok(())
    }

    fn publish_ctx(&self) -> PublishCtx<'_> {
        PublishCtx {
            plan: self.plan,
            results: Results::single(&self.data),
            run_id: &self.run_id,
            run_dir: &self.run_dir,
            runs_dir: &self.opts.runs_dir,
        }
    }

    /// Task directory of node `i`.
    pub fn task_dir(&self, i: NodeIndex) -> PathBuf {
        task_dir(&self.run_dir, self.plan, self.plan.graph[i])
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
