//! The SLURM backend: one batch job per task attempt.
//!
//! - **Submit**: the job script is rendered by the pure [`script::render_script`], written to
//!   `ATTEMPT/.twinflow/job.sbatch` and submitted with `sbatch --parsable`. The job id is
//!   written to `ATTEMPT/.twinflow/job_id` at once, so a resumed engine finds jobs that a
//!   killed engine submitted but had not recorded yet. Transient `sbatch` failures are
//!   retried with exponential backoff; a job that `sbatch` rejects (bad partition,
//!   impossible resources) fails its task, not the run.
//! - **Status**: one `squeue --jobs=LIST` per poll for all of the run's jobs (chunked), then
//!   one `sacct` for those that left the queue. Which `sacct` is decided once from
//!   `scontrol show config`: plain `sacct` with slurmdbd, `sacct -c` (the job completion
//!   log) with `JobCompType=jobcomp/filetxt` and a readable `JobCompLoc`, else one
//!   `scontrol show job` per finished job (only works for `MinJobAge` seconds). Polls come
//!   no more often than the profile's interval, which starts at `polling.min_interval` and
//!   grows ×1.5 per unchanged poll up to `polling.max_interval`: the scheduler may call
//!   [`Backend::poll`] often, the controller is asked at most once per interval.
//! - **Cancel**: one `scancel` for many jobs (SLURM sends SIGTERM, then SIGKILL after
//!   `KillWait`). A job found `CANCELLED` that twinflow did not cancel counts as a failure,
//!   so the step's retry policy applies.
//! - **Resume**: jobs outlive the engine; [`Backend::adopt`] follows them again.
//! - **Throttling**: `limits.max_jobs` becomes [`Capacity::max_jobs`]; `limits.submit_rate`
//!   spaces submissions.
//! - **Escalation**: with `escalate.walltime_factor` / `memory_factor`, the next attempt of
//!   a task whose job hit `TIMEOUT` / `OUT_OF_MEMORY` asks for that much more (within this
//!   engine process).

pub mod commands;
pub mod profile;
pub mod script;
pub mod status;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::{Backend, BackendError, CANCELLED_FILE, Capacity, JOB_ID_FILE, JobRequest, JobStatus, Outcome, Rendered};
use crate::ids::JobId;
pub use commands::CALL_LOG_ENV;
use commands::{CommandError, SlurmCommands};
pub use profile::{Profile, ProfileError, StatusSource};
use status::{FinalRow, Phase};

/// File of the attempt's `.twinflow/` directory holding the submitted script.
pub const SCRIPT_FILE: &str = "job.sbatch";

/// Settings of the SLURM backend.
#[derive(Debug, Clone, Default)]
pub struct SlurmOptions {
    /// The site profile.
    pub profile: Profile,
    /// Append one line per SLURM command here (see [`commands`]).
    pub call_log: Option<PathBuf>,
}

/// Where finished jobs' states come from, once decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Sacct,
    Jobcomp,
    Scontrol,
}

#[derive(Debug)]
struct Tracked {
    /// Task name (absent for adopted jobs).
    name: Option<String>,
    /// Attempt directory.
    dir: PathBuf,
    last: JobStatus,
    missing_since: Option<Instant>,
    warned: bool,
}

/// Runs each task attempt as a SLURM batch job.
pub struct SlurmBackend {
    profile: Profile,
    cmd: SlurmCommands,
    jobs: HashMap<JobId, Tracked>,
    rejected: HashMap<JobId, Outcome>,
    rejected_seq: usize,
    cancel_requested: HashSet<JobId>,
    source: Option<Source>,
    interval: Duration,
    next_poll: Instant,
    refresh: bool,
    tick: u64,
    last_submit: Option<Instant>,
    failing_since: Option<Instant>,
    /// Task name → (walltime factor, memory factor) for its next attempt.
    escalation: HashMap<String, (f64, f64)>,
}

impl SlurmBackend {
    /// A backend with the given settings. Nothing is run until the first submit or poll.
    pub fn new(opts: SlurmOptions) -> Self {
        let cmd = SlurmCommands::new(opts.call_log, opts.profile.command_timeout);
        let interval = opts.profile.poll_min;
        Self {
            profile: opts.profile,
            cmd,
            jobs: HashMap::new(),
            rejected: HashMap::new(),
            rejected_seq: 0,
            cancel_requested: HashSet::new(),
            source: None,
            interval,
            next_poll: Instant::now(),
            refresh: false,
            tick: 0,
            last_submit: None,
            failing_since: None,
            escalation: HashMap::new(),
        }
    }

    /// The commands this backend runs (for `twinflow cancel`).
    pub fn commands(&self) -> &SlurmCommands {
        &self.cmd
    }

    /// Cancels jobs by id in as few `scancel` calls as the profile's chunk size allows.
    pub async fn scancel(&self, ids: &[JobId]) -> Result<(), CommandError> {
        for chunk in ids.chunks(self.profile.chunk) {
            self.cmd.scancel(self.tick, chunk).await?;
        }
        Ok(())
    }

    /// Decides once where finished jobs' states come from.
    async fn source(&mut self) -> Source {
        if let Some(s) = self.source {
            return s;
        }
        let s = match self.profile.status_source {
            StatusSource::Sacct => Source::Sacct,
            StatusSource::Jobcomp => Source::Jobcomp,
            StatusSource::Scontrol => Source::Scontrol,
            StatusSource::Auto => match self.cmd.show_config(self.tick).await {
                Ok(cfg) => {
                    let get = |k: &str| cfg.iter().find(|(a, _)| a == k).map(|(_, v)| v.as_str()).unwrap_or("");
                    if get("AccountingStorageType").ends_with("/slurmdbd") {
                        Source::Sacct
                    } else if get("JobCompType").ends_with("/filetxt")
                        // `sacct -c` reads the log file itself: it must be visible here (on a
                        // real cluster it often lives on the controller's disk only).
                        && std::fs::File::open(get("JobCompLoc")).is_ok()
                    {
                        Source::Jobcomp
                    } else {
                        Source::Scontrol
                    }
                }
                Err(e) => {
                    tracing::warn!(
                        "`scontrol show config` failed ({e}); finished jobs are read with `scontrol show job`"
                    );
                    Source::Scontrol
                }
            },
        };
        tracing::info!(source = ?s, "SLURM job states of finished jobs come from {s:?}");
        self.source = Some(s);
        s
    }

    /// Final states of jobs that left the queue: one `sacct` per chunk, or `scontrol` per job.
    /// Jobs missing from accounting longer than the grace period are asked with `scontrol`.
    async fn final_states(&mut self, missing: &[JobId]) -> Result<HashMap<JobId, FinalRow>, CommandError> {
        let source = self.source().await;
        let mut found = HashMap::new();
        if source != Source::Scontrol {
            for chunk in missing.chunks(self.profile.chunk) {
                for r in self.cmd.sacct(self.tick, chunk, source == Source::Jobcomp).await? {
                    if status::phase(&r.state) == Phase::Ended {
                        found.insert(r.id.clone(), r);
                    }
                }
            }
        }
        let now = Instant::now();
        for id in missing {
            if found.contains_key(id) {
                continue;
            }
            let Some(t) = self.jobs.get_mut(id) else { continue };
            let since = *t.missing_since.get_or_insert(now);
            if source == Source::Scontrol || now.duration_since(since) >= self.profile.missing_grace {
                match self.cmd.scontrol_show_job(self.tick, id).await? {
                    Some(r) if status::phase(&r.state) == Phase::Ended => {
                        found.insert(id.clone(), r);
                    }
                    Some(_) => {}
                    None if now.duration_since(since) >= self.profile.missing_grace => {
                        // Neither the queue, nor accounting, nor the controller knows it.
                        self.jobs.remove(id);
                    }
                    None => {}
                }
            }
        }
        Ok(found)
    }

    fn cached(&mut self, ids: &[JobId]) -> Vec<(JobId, JobStatus)> {
        ids.iter()
            .map(|id| {
                let st = if let Some(o) = self.rejected.remove(id) {
                    JobStatus::Done(o)
                } else if let Some(t) = self.jobs.get(id) {
                    t.last.clone()
                } else {
                    JobStatus::Unknown
                };
                (id.clone(), st)
            })
            .collect()
    }

    fn poll_failed(&mut self, e: CommandError, ids: &[JobId]) -> Result<Vec<(JobId, JobStatus)>, BackendError> {
        let since = *self.failing_since.get_or_insert_with(Instant::now);
        if since.elapsed() >= self.profile.poll_failure_timeout {
            return Err(BackendError::Poll(format!(
                "{e} (failing for {}s; the jobs keep running: `twinflow run --resume` follows them again)",
                since.elapsed().as_secs()
            )));
        }
        tracing::warn!("SLURM status query failed, trying again: {e}");
        self.interval = (self.interval * 2).min(self.profile.poll_max);
        self.next_poll = Instant::now() + self.interval;
        Ok(self.cached(ids))
    }

    /// The request with this task's escalated walltime and memory, if any.
    fn escalated(&self, mut job: JobRequest) -> JobRequest {
        let Some(&(wf, mf)) = self.escalation.get(&job.name) else { return job };
        if wf > 1.0
            && let Some(t) = script::time_limit(&job, &self.profile)
        {
            job.resources.walltime = Some(t.mul_f64(wf));
            job.timeout = None;
        }
        if mf > 1.0 && job.resources.memory > 0 {
            job.resources.memory = (job.resources.memory as f64 * mf) as u64;
        }
        job
    }

    fn note_outcome(&mut self, name: Option<&str>, o: &Outcome, state: &str) {
        let Some(name) = name else { return };
        let e = self.escalation.entry(name.to_string()).or_insert((1.0, 1.0));
        if o.timed_out {
            e.0 *= self.profile.walltime_factor;
        }
        if state == "OUT_OF_MEMORY" {
            e.1 *= self.profile.memory_factor;
        }
    }

    async fn throttle(&mut self) {
        if let (Some(rate), Some(last)) = (self.profile.submit_rate, self.last_submit) {
            let gap = Duration::from_secs_f64(1.0 / rate);
            let wait = (last + gap).saturating_duration_since(Instant::now());
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
        }
        self.last_submit = Some(Instant::now());
    }
}

#[async_trait]
impl Backend for SlurmBackend {
    fn name(&self) -> &'static str {
        "slurm"
    }

    fn capacity(&self) -> Capacity {
        // The batch system decides what runs; the engine only bounds what it submits.
        Capacity { cores: None, memory: None, max_jobs: self.profile.max_jobs }
    }

    fn render(&self, job: &JobRequest) -> Rendered {
        Rendered::Script(script::render_script(job, &self.profile))
    }

    async fn submit(&mut self, job: JobRequest) -> Result<JobId, BackendError> {
        let job = self.escalated(job);
        let meta = job.cwd.join(".twinflow");
        let path = meta.join(SCRIPT_FILE);
        let text = script::render_script(&job, &self.profile);
        if let Err(e) = std::fs::create_dir_all(&meta).and_then(|_| std::fs::write(&path, text)) {
            return Err(BackendError::Submit {
                name: job.name.clone(),
                message: format!("cannot write `{}`: {e}", path.display()),
            });
        }
        let mut delay = self.profile.submit_backoff;
        let mut tries = 0;
        let id = loop {
            self.throttle().await;
            tries += 1;
            match self.cmd.sbatch(self.tick, &path).await {
                Ok(id) => break id,
                Err(e) if e.is_rejection() => {
                    // The job itself is wrong: its task fails (with the message), the run goes on.
                    self.rejected_seq += 1;
                    let id = JobId(format!("slurm-rejected-{}", self.rejected_seq));
                    let now = std::time::SystemTime::now();
                    self.rejected.insert(
                        id.clone(),
                        Outcome {
                            spawn_error: Some(format!("sbatch rejected the job: {e}")),
                            started: Some(now),
                            finished: Some(now),
                            ..Outcome::default()
                        },
                    );
                    return Ok(id);
                }
                Err(e) if tries > self.profile.submit_retries => {
                    return Err(BackendError::Submit {
                        name: job.name.clone(),
                        message: format!(
                            "{e} (gave up after {tries} tries)\nhint: is the controller up? try `squeue` (on the test cluster: `bash hpc/slurm-local.sh status`)"
                        ),
                    });
                }
                Err(e) => {
                    tracing::warn!(task = %job.name, try_ = tries, ?delay, "sbatch failed, retrying: {e}");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(30));
                }
            }
        };
        // Written before the scheduler records the attempt: if the engine dies in between,
        // `run --resume` still finds (and follows) this job instead of submitting again.
        if let Err(e) = std::fs::write(meta.join(JOB_ID_FILE), format!("{id}\n")) {
            tracing::warn!(job = %id, "cannot write `{}`: {e}", meta.join(JOB_ID_FILE).display());
        }
        tracing::debug!(task = %job.name, job = %id, "submitted");
        self.jobs.insert(
            id.clone(),
            Tracked {
                name: Some(job.name.clone()),
                dir: job.cwd.clone(),
                last: JobStatus::Queued,
                missing_since: None,
                warned: false,
            },
        );
        // Something changes soon: poll at the short interval again.
        self.interval = self.profile.poll_min;
        self.next_poll = self.next_poll.min(Instant::now() + self.interval);
        Ok(id)
    }

    async fn poll(&mut self, ids: &[JobId]) -> Result<Vec<(JobId, JobStatus)>, BackendError> {
        self.tick += 1;
        let now = Instant::now();
        if !self.refresh && now < self.next_poll {
            return Ok(self.cached(ids));
        }
        self.refresh = false;
        let query: Vec<JobId> = ids.iter().filter(|i| self.jobs.contains_key(i)).cloned().collect();
        let mut queued: HashMap<JobId, JobStatus> = HashMap::new();
        for chunk in query.chunks(self.profile.chunk) {
            match self.cmd.squeue(self.tick, chunk).await {
                Ok(rows) => {
                    for r in rows {
                        if status::phase(&r.state) == Phase::Ended {
                            continue; // ended: its exit code comes from accounting
                        }
                        if let Some(t) = self.jobs.get_mut(&r.id)
                            && !t.warned
                            && status::hopeless_reason(&r.reason)
                        {
                            t.warned = true;
                            tracing::warn!(
                                job = %r.id,
                                task = t.name.as_deref().unwrap_or("?"),
                                "job is pending for a reason that waiting will not fix: {} (see `squeue -j {}`)",
                                r.reason,
                                r.id
                            );
                        }
                        queued.insert(r.id, status::queue_status(&r.state));
                    }
                }
                Err(e) => return self.poll_failed(e, ids),
            }
        }
        let missing: Vec<JobId> = query.iter().filter(|i| !queued.contains_key(*i)).cloned().collect();
        let finals = if missing.is_empty() {
            HashMap::new()
        } else {
            match self.final_states(&missing).await {
                Ok(f) => f,
                Err(e) => return self.poll_failed(e, ids),
            }
        };
        self.failing_since = None;
        let mut changed = false;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(o) = self.rejected.remove(id) {
                changed = true;
                out.push((id.clone(), JobStatus::Done(o)));
            } else if let Some(st) = queued.remove(id) {
                if let Some(t) = self.jobs.get_mut(id) {
                    t.missing_since = None;
                    if t.last != st {
                        changed = true;
                        t.last = st.clone();
                    }
                }
                out.push((id.clone(), st));
            } else if let Some(row) = finals.get(id) {
                changed = true;
                let t = self.jobs.remove(id);
                // Cancelled by us, or by `twinflow cancel` (which leaves a marker first).
                let ours = self.cancel_requested.remove(id)
                    || t.as_ref().is_some_and(|t| t.dir.join(".twinflow").join(CANCELLED_FILE).exists());
                let o = status::outcome(row, ours);
                let name = t.and_then(|t| t.name);
                self.note_outcome(name.as_deref(), &o, &row.state);
                out.push((id.clone(), JobStatus::Done(o)));
            } else if let Some(t) = self.jobs.get(id) {
                // Left the queue, not in accounting yet (records lag): unchanged for now.
                out.push((id.clone(), t.last.clone()));
            } else {
                changed = true;
                out.push((id.clone(), JobStatus::Unknown));
            }
        }
        self.interval = if changed {
            self.profile.poll_min
        } else {
            self.interval.mul_f64(1.5).clamp(self.profile.poll_min, self.profile.poll_max)
        };
        self.next_poll = Instant::now() + self.interval;
        Ok(out)
    }

    async fn cancel(&mut self, ids: &[JobId]) -> Result<(), BackendError> {
        let mut real = vec![];
        for id in ids {
            if let Some(o) = self.rejected.get_mut(id) {
                o.cancelled = true;
            } else {
                real.push(id.clone());
            }
        }
        if real.is_empty() {
            return Ok(());
        }
        self.cancel_requested.extend(real.iter().cloned());
        self.refresh = true;
        self.scancel(&real).await.map_err(|e| BackendError::Cancel(e.to_string()))
    }

    async fn wait(&mut self, max: Duration) {
        if !self.rejected.is_empty() {
            return;
        }
        if self.jobs.is_empty() {
            // Nothing to ask the controller about (e.g. only retries waiting for their delay).
            tokio::time::sleep(max).await;
            return;
        }
        if self.refresh {
            return;
        }
        let until = self.next_poll.saturating_duration_since(Instant::now());
        tokio::time::sleep(until.min(max)).await;
    }

    fn can_adopt(&self) -> bool {
        true
    }

    fn adopt(&mut self, jobs: &[(JobId, PathBuf)]) {
        for (id, dir) in jobs {
            self.jobs.entry(id.clone()).or_insert(Tracked {
                name: None,
                dir: dir.clone(),
                last: JobStatus::Queued,
                missing_since: None,
                warned: false,
            });
        }
        self.refresh = true;
    }
}
