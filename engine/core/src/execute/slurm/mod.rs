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
//! - **Resume**: jobs outlive the engine; [`Backend::recover`] follows them again. An engine
//!   killed while `sbatch` ran left a script but no job id: [`recover_unrecorded`] looks
//!   such attempts up in the queue by their `--comment` tag before anything is resubmitted.
//! - **Throttling**: `limits.max_jobs` becomes [`Capacity::max_jobs`]; `limits.submit_rate`
//!   spaces submissions.
//! - **Escalation**: with `escalate.walltime_factor` / `memory_factor`, the next attempt of
//!   a task whose job hit `TIMEOUT` / `OUT_OF_MEMORY` asks for that much more (within this
//!   engine process).

pub mod allocation;
pub mod commands;
pub mod script;
pub mod status;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::{
    Adopted, Backend, BackendError, CANCELLED_FILE, Capacity, Ending, JOB_ID_FILE, JobRequest, JobStatus, Leftover,
    Outcome, Rendered, SpawnFailure,
};
pub use crate::execute::profile::{Profile, ProfileError, StatusSource};
use crate::ids::JobId;
pub use commands::CALL_LOG_ENV;
use commands::{CommandError, SlurmCommands};
use status::{FinalRow, Phase, SlurmState};

/// File of the attempt's `.twinflow/` directory holding the submitted script.
pub const SCRIPT_FILE: &str = "job.sbatch";

/// File in a task's directory (beside its attempts) with the walltime and memory factors
/// its next attempt asks for after TIMEOUT / OUT_OF_MEMORY.
pub const ESCALATION_FILE: &str = ".escalation";

/// What became of one `sbatch`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Submission {
    /// SLURM accepted the job.
    Accepted(JobId),
    /// SLURM refused the job itself (bad partition, impossible resources): why.
    Rejected(String),
}

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
    /// Task directory → (walltime factor, memory factor) for its next attempt; also kept in
    /// the task directory's [`ESCALATION_FILE`], so a resumed engine asks for as much.
    escalation: HashMap<PathBuf, (f64, f64)>,
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
        // Array elements (`12_3`): `sacct -c` cannot select them (the completion log has
        // one raw job id per element), so without slurmdbd one `scontrol show job ARRAY`
        // per array reports all its elements.
        let (elements, plain): (Vec<JobId>, Vec<JobId>) =
            missing.iter().cloned().partition(|id| status::array_job_of(id).is_some());
        if source != Source::Sacct && !elements.is_empty() {
            let arrays: std::collections::BTreeSet<&str> = elements.iter().filter_map(status::array_job_of).collect();
            for a in arrays {
                for r in self.cmd.scontrol_show_array(self.tick, a).await? {
                    if r.state.phase() == Phase::Ended && elements.contains(&r.id) {
                        found.insert(r.id.clone(), r);
                    }
                }
            }
        }
        let sacct_ids = if source == Source::Sacct { missing } else { &plain[..] };
        if source != Source::Scontrol {
            for chunk in sacct_ids.chunks(self.profile.chunk) {
                for r in self.cmd.sacct(self.tick, chunk, source == Source::Jobcomp).await? {
                    if r.state.phase() == Phase::Ended {
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
                    Some(r) if r.state.phase() == Phase::Ended => {
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
    fn escalated(&mut self, mut job: JobRequest) -> JobRequest {
        let Some(task_dir) = job.cwd.parent().map(Path::to_path_buf) else { return job };
        let factors = match self.escalation.get(&task_dir) {
            Some(f) => Some(*f),
            None => read_escalation(&task_dir).inspect(|f| {
                self.escalation.insert(task_dir.clone(), *f);
            }),
        };
        let Some((wf, mf)) = factors else { return job };
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

    fn note_outcome(&mut self, attempt_dir: &Path, o: &Outcome) {
        let grow_time = o.timed_out() && self.profile.walltime_factor > 1.0;
        let out_of_memory = matches!(o.ending, Ending::BatchFailure { state: SlurmState::OutOfMemory, .. });
        let grow_mem = out_of_memory && self.profile.memory_factor > 1.0;
        if !(grow_time || grow_mem) {
            return;
        }
        let Some(task_dir) = attempt_dir.parent().map(Path::to_path_buf) else { return };
        let known = self.escalation.get(&task_dir).copied().or_else(|| read_escalation(&task_dir));
        let mut e = known.unwrap_or((1.0, 1.0));
        if grow_time {
            e.0 *= self.profile.walltime_factor;
        }
        if grow_mem {
            e.1 *= self.profile.memory_factor;
        }
        self.escalation.insert(task_dir.clone(), e);
        let file = task_dir.join(ESCALATION_FILE);
        if let Err(err) = std::fs::write(&file, format!("{} {}\n", e.0, e.1)) {
            tracing::warn!("cannot write `{}`: {err}", file.display());
        }
    }

    /// `sbatch` of one script with the profile's retries: [`Submission::Rejected`] when SLURM
    /// rejects the job itself (the task fails, the run goes on), `Err` when the controller
    /// stays unreachable.
    ///
    /// An `sbatch` that timed out may still have been accepted: before trying again, the
    /// queue is searched for the script's `--comment` tag ([`script::submission_tag`]) and a
    /// job found there is taken as the submission.
    async fn sbatch_retrying(&mut self, name: &str, path: &Path, tag: &str) -> Result<Submission, BackendError> {
        let mut delay = self.profile.submit_backoff;
        let mut tries = 0;
        let mut unsure = false;
        loop {
            if unsure {
                match self.cmd.find_by_comment(self.tick, tag).await {
                    Ok(Some(id)) => {
                        tracing::warn!(task = %name, job = %id, "the sbatch that timed out was accepted: following job {id}");
                        return Ok(Submission::Accepted(id));
                    }
                    Ok(None) => {}
                    Err(e) => {
                        // Cannot tell: submitting again could run the task twice, waiting is safe.
                        tracing::warn!(task = %name, "cannot check the queue after an sbatch timeout: {e}");
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(Duration::from_secs(30));
                        tries += 1;
                        if tries > self.profile.submit_retries {
                            return Err(BackendError::Submit { name: name.to_string(), message: e.to_string() });
                        }
                        continue;
                    }
                }
            }
            self.throttle().await;
            tries += 1;
            match self.cmd.sbatch(self.tick, path).await {
                Ok(id) => return Ok(Submission::Accepted(id)),
                Err(e) if e.is_rejection() => return Ok(Submission::Rejected(e.to_string())),
                // A client that is not set up fails the same way every time: say so now.
                Err(e) if e.is_environment() => {
                    // A spawn error carries its own hint (are the tools installed?).
                    let message = if matches!(e, CommandError::Failed { .. }) {
                        format!(
                            "{e}\nhint: the SLURM client on this machine is not set up (no `slurm.conf`, `SLURM_CONF` or DNS SRV record); no retry can help"
                        )
                    } else {
                        e.to_string()
                    };
                    return Err(BackendError::Submit { name: name.to_string(), message });
                }
                Err(e) if tries > self.profile.submit_retries => {
                    return Err(BackendError::Submit {
                        name: name.to_string(),
                        message: format!(
                            "{e} (gave up after {tries} tries)\nhint: is the controller up? try `squeue` (on the test cluster: `bash hpc/slurm-local.sh status`)"
                        ),
                    });
                }
                Err(e) => {
                    unsure = matches!(e, CommandError::TimedOut { .. });
                    tracing::warn!(task = %name, try_ = tries, ?delay, "sbatch failed, retrying: {e}");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(30));
                }
            }
        }
    }

    /// A stand-in id for a job SLURM rejected (`message`: why); its first poll reports the
    /// failure.
    fn rejected_job(&mut self, message: String) -> JobId {
        self.rejected_seq += 1;
        let id = JobId(format!("slurm-rejected-{}", self.rejected_seq));
        let now = std::time::SystemTime::now();
        let ending = Ending::SpawnFailed(SpawnFailure::Rejected(message));
        self.rejected.insert(id.clone(), Outcome::between(ending, Some(now), Some(now)));
        id
    }

    /// Starts following a submitted job: its id goes to the attempt's `job_id` file first
    /// (before the scheduler records the attempt: if the engine dies in between, `run
    /// --resume` still finds and follows the job instead of submitting it again).
    fn track(&mut self, job: &JobRequest, id: &JobId) {
        let file = job.cwd.join(".twinflow").join(JOB_ID_FILE);
        if let Err(e) = std::fs::write(&file, format!("{id}\n")) {
            tracing::warn!(job = %id, "cannot write `{}`: {e}", file.display());
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
    }

    /// Writes each member's own script and submits them as one job array whose element `i`
    /// runs member `i` (see [`script::render_array_script`]). Returns the element ids
    /// (`ARRAY_i`) in member order.
    async fn submit_array(&mut self, step: &str, members: &[JobRequest]) -> Result<Vec<JobId>, BackendError> {
        let fail = |message: String| BackendError::Submit { name: format!("{step}[*]"), message };
        let mut list = String::new();
        for job in members {
            let meta = job.cwd.join(".twinflow");
            let path = meta.join(SCRIPT_FILE);
            std::fs::create_dir_all(&meta)
                .and_then(|_| std::fs::write(&path, script::render_script(job, &self.profile)))
                .map_err(|e| fail(format!("cannot write `{}`: {e}", path.display())))?;
            let dir = job.cwd.display().to_string();
            if dir.contains('\n') {
                return Err(fail(format!("attempt directory `{dir}` has a newline")));
            }
            list.push_str(&dir);
            list.push('\n');
        }
        // Next to the step's member directories (`RUN/steps/STEP/.twinflow/`), named uniquely:
        // an array adopted from an earlier engine may still read its list.
        let step_dir = members[0].cwd.parent().and_then(Path::parent).unwrap_or(&members[0].cwd);
        let adir = step_dir.join(".twinflow");
        let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
        let base = format!("array-{}-{stamp}", std::process::id());
        let (list_path, script_path, log) = (
            adir.join(format!("{base}.list")),
            adir.join(format!("{base}.sbatch")),
            adir.join(format!("{base}-%a.log")),
        );
        let text = script::render_array_script(
            &members[0],
            step,
            members.len(),
            self.profile.array_throttle,
            &list_path,
            &log,
            &self.profile,
        );
        std::fs::create_dir_all(&adir)
            .and_then(|_| std::fs::write(&list_path, list))
            .and_then(|_| std::fs::write(&script_path, text))
            .map_err(|e| fail(format!("cannot write `{}`: {e}", script_path.display())))?;
        let tag = script::submission_tag(&list_path);
        match self.sbatch_retrying(&format!("{step}[*]"), &script_path, &tag).await? {
            Submission::Accepted(array) => {
                tracing::info!(step, members = members.len(), job = %array, "submitted a job array");
                Ok(members
                    .iter()
                    .enumerate()
                    .map(|(i, job)| {
                        let id = JobId(format!("{array}_{i}"));
                        self.track(job, &id);
                        id
                    })
                    .collect())
            }
            Submission::Rejected(rejection) => {
                Ok(members.iter().map(|_| self.rejected_job(rejection.clone())).collect())
            }
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

/// What [`recover_unrecorded`] found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recovered {
    /// Attempts whose script had been written but whose `sbatch` never returned an id to the
    /// killed engine.
    pub unsure: usize,
    /// Of those, the attempts found in SLURM by their `--comment` tag, with the job id now
    /// written to their `job_id` file.
    pub found: Vec<(PathBuf, JobId)>,
}

/// On `run --resume` of a SLURM run: finds the attempts under `run_dir` that a killed engine
/// was submitting (their `.twinflow/job.sbatch`, or an array's member list, was written but
/// no job id came back: the engine died during `sbatch`) and asks SLURM, in one `squeue`
/// call, whether it accepted them anyway (every script carries its `--comment` tag, see
/// [`script::submission_tag`]). Each one found gets its `job_id` file, so the scheduler
/// follows the job as one the previous engine submitted instead of submitting it again.
/// Jobs that ended longer than the controller's `MinJobAge` ago are no longer listed; their
/// tasks run again.
pub async fn recover_unrecorded(cmd: &SlurmCommands, run_dir: &Path) -> Result<Recovered, CommandError> {
    let mut singles: Vec<PathBuf> = vec![];
    let mut arrays: Vec<(PathBuf, Vec<PathBuf>)> = vec![];
    scan_unrecorded(&run_dir.join("steps"), &mut singles, &mut arrays, 0);
    // Array members have their own script too: they are among `singles`.
    let unsure = singles.len();
    let mut out = Recovered { unsure, found: vec![] };
    if unsure == 0 {
        return Ok(out);
    }
    let known: HashMap<String, JobId> = cmd.comments(0).await?.into_iter().map(|(id, c)| (c, id)).collect();
    let mut record = |dir: &Path, id: JobId| {
        let file = dir.join(".twinflow").join(JOB_ID_FILE);
        match std::fs::write(&file, format!("{id}\n")) {
            Ok(()) => out.found.push((dir.to_path_buf(), id)),
            Err(e) => tracing::warn!(job = %id, "cannot write `{}`: {e}", file.display()),
        }
    };
    for dir in singles {
        if let Some(id) = known.get(&script::submission_tag(&dir)) {
            record(&dir, id.clone());
        }
    }
    for (list, members) in arrays {
        let Some(array) = known.get(&script::submission_tag(&list)) else { continue };
        let text = std::fs::read_to_string(&list).unwrap_or_default();
        for (i, line) in text.lines().enumerate() {
            let dir = PathBuf::from(line);
            if members.contains(&dir) {
                record(&dir, JobId(format!("{array}_{i}")));
            }
        }
    }
    Ok(out)
}

/// `twinflow cancel`: marks the attempt of a job about to be cancelled, so an engine that
/// follows the job records it as cancelled rather than as a failure to retry.
pub fn mark_cancelled(attempt_dir: &Path) {
    let _ = std::fs::write(attempt_dir.join(".twinflow").join(CANCELLED_FILE), "twinflow cancel\n");
}

/// Collects attempt directories with a job script but no job id, and array member lists
/// with members in that state, under a run's `steps/` directory.
fn scan_unrecorded(dir: &Path, singles: &mut Vec<PathBuf>, arrays: &mut Vec<(PathBuf, Vec<PathBuf>)>, depth: u32) {
    let meta = dir.join(".twinflow");
    let unsent =
        |d: &Path| d.join(".twinflow").join(SCRIPT_FILE).is_file() && !d.join(".twinflow").join(JOB_ID_FILE).exists();
    if meta.join("manifest.json").is_file() {
        // An attempt (or a published `out/`): its outputs below are the step's own files.
        if unsent(dir) {
            singles.push(dir.to_path_buf());
        }
        return;
    }
    if let Ok(rd) = std::fs::read_dir(&meta) {
        for e in rd.flatten() {
            let p = e.path();
            let is_list = p.extension().is_some_and(|x| x == "list")
                && p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("array-"));
            if !is_list {
                continue;
            }
            let members: Vec<PathBuf> = std::fs::read_to_string(&p)
                .unwrap_or_default()
                .lines()
                .map(PathBuf::from)
                .filter(|m| unsent(m))
                .collect();
            if !members.is_empty() {
                arrays.push((p, members));
            }
        }
    }
    // Steps nest through sub-workflows (`steps/twin/flood/3/attempt-1`); bounded anyway.
    if depth > 32 {
        return;
    }
    let Ok(rd) = std::fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) && e.file_name() != ".twinflow" {
            scan_unrecorded(&e.path(), singles, arrays, depth + 1);
        }
    }
}

/// Reads a task's [`ESCALATION_FILE`].
fn read_escalation(task_dir: &Path) -> Option<(f64, f64)> {
    let text = std::fs::read_to_string(task_dir.join(ESCALATION_FILE)).ok()?;
    let mut w = text.split_whitespace().map(|x| x.parse::<f64>().ok().filter(|f| f.is_finite() && *f >= 1.0));
    Some((w.next()??, w.next()??))
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
        let tag = script::submission_tag(&job.cwd);
        let id = match self.sbatch_retrying(&job.name, &path, &tag).await? {
            Submission::Accepted(id) => id,
            Submission::Rejected(why) => return Ok(self.rejected_job(why)),
        };
        self.track(&job, &id);
        Ok(id)
    }

    async fn submit_many(&mut self, jobs: Vec<JobRequest>) -> Vec<Result<JobId, BackendError>> {
        let n = jobs.len();
        let mut out: Vec<Option<Result<JobId, BackendError>>> = (0..n).map(|_| None).collect();
        let mut jobs: Vec<Option<JobRequest>> = jobs.into_iter().map(Some).collect();
        let mut stop = false;
        if self.profile.arrays {
            // Members of one step with the same (possibly escalated) resources, in order.
            let mut groups: Vec<(String, String, Vec<usize>)> = vec![];
            for (i, j) in jobs.iter().enumerate() {
                let Some(j) = j else { continue };
                let Some(a) = &j.array else { continue };
                let shape = script::resource_options(&self.escalated(j.clone()), &self.profile).join("\n");
                match groups.iter_mut().find(|(s, r, _)| *s == a.step && *r == shape) {
                    Some(g) => g.2.push(i),
                    None => groups.push((a.step.clone(), shape, vec![i])),
                }
            }
            for (step, _, idx) in groups.into_iter().filter(|g| g.2.len() >= 2) {
                let members: Vec<JobRequest> =
                    idx.iter().filter_map(|&i| jobs[i].take()).map(|j| self.escalated(j)).collect();
                match self.submit_array(&step, &members).await {
                    Ok(ids) => {
                        for (&i, id) in idx.iter().zip(ids) {
                            out[i] = Some(Ok(id));
                        }
                    }
                    Err(e) => {
                        out[idx[0]] = Some(Err(e));
                        stop = true;
                        break;
                    }
                }
            }
        }
        for i in 0..n {
            if stop {
                break;
            }
            if let Some(job) = jobs[i].take() {
                let r = self.submit(job).await;
                stop = r.is_err();
                out[i] = Some(r);
            }
        }
        out.into_iter()
            .map(|r| {
                r.unwrap_or_else(|| {
                    Err(BackendError::Submit {
                        name: "?".into(),
                        message: "not submitted after an earlier error".into(),
                    })
                })
            })
            .collect()
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
                        if r.state.phase() == Phase::Ended {
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
                if let Some(t) = &t {
                    self.note_outcome(&t.dir, &o);
                }
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
                o.ending = Ending::Cancelled(None);
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

    async fn recover(
        &mut self,
        _run_id: &str,
        run_dir: &Path,
        leftovers: &[Leftover],
    ) -> Result<Vec<Option<Adopted>>, BackendError> {
        // First the submissions the killed engine did not see the end of: SLURM may have
        // accepted them; those found get their `job_id` file like any other.
        let run_dir = std::fs::canonicalize(run_dir).unwrap_or(run_dir.to_path_buf());
        let r = recover_unrecorded(&self.cmd, &run_dir).await.map_err(|e| {
            // Submitting again without knowing could run a task twice: stop and say why.
            BackendError::Poll(format!(
                "cannot check whether SLURM accepted the jobs the previous engine was submitting: {e}"
            ))
        })?;
        if r.unsure > 0 {
            tracing::info!(
                unsure = r.unsure,
                found = r.found.len(),
                "looked up submissions the previous engine did not see the end of"
            );
        }
        for (dir, id) in &r.found {
            tracing::info!(job = %id, "job {id} was accepted before the previous engine stopped: following it ({})", dir.display());
        }
        let out: Vec<Option<Adopted>> = leftovers.iter().map(job_in_flight).collect();
        for a in out.iter().flatten() {
            self.jobs.entry(a.job.clone()).or_insert(Tracked {
                name: None,
                dir: a.dir.clone(),
                last: JobStatus::Queued,
                missing_since: None,
                warned: false,
            });
            self.refresh = true;
        }
        Ok(out)
    }
}

/// The job of a task's latest attempt if it may still be in flight: the attempt after the
/// recorded one when the backend wrote its job id but the engine died before recording it,
/// else the recorded attempt if the database still has it running under the same job id.
/// Either way the attempt directory must hold the backend's job id file, so a job id of
/// another backend (a local pid) is never taken for a batch job. Used by resume (to follow
/// the job) and by `twinflow cancel` (to cancel it).
pub fn job_in_flight(l: &Leftover) -> Option<Adopted> {
    let dir = |n: u32| l.task_dir.join(format!("attempt-{n}"));
    let read_id = |n: u32| {
        std::fs::read_to_string(dir(n).join(".twinflow").join(JOB_ID_FILE))
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
    };
    let next = l.attempts + 1;
    if let Some(id) = read_id(next) {
        return Some(Adopted { attempt: next, job: JobId(id), dir: dir(next), recorded: false });
    }
    let id = read_id(l.attempts).filter(|_| l.attempts > 0)?;
    (l.open_job.as_ref().map(|j| j.0.as_str()) == Some(id.as_str())).then(|| Adopted {
        attempt: l.attempts,
        job: JobId(id),
        dir: dir(l.attempts),
        recorded: true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Resources;

    fn job(task_dir: &Path, attempt: u32, memory: u64, walltime: Option<Duration>) -> JobRequest {
        let cwd = task_dir.join(format!("attempt-{attempt}"));
        JobRequest {
            name: "sim[3]".into(),
            argv: vec!["twin-kernel".into(), "flood".into()],
            env: vec![],
            stdout: cwd.join(".twinflow/stdout"),
            stderr: cwd.join(".twinflow/stderr"),
            cwd,
            resources: Resources { memory, walltime, ..Resources::default() },
            timeout: None,
            array: None,
        }
    }

    fn backend() -> SlurmBackend {
        let profile = Profile { memory_factor: 1.5, walltime_factor: 2.0, ..Profile::default() };
        SlurmBackend::new(SlurmOptions { profile, call_log: None })
    }

    fn ended(state: &str, exit: (i32, i32)) -> Outcome {
        let row = status::FinalRow {
            id: JobId("7".into()),
            state: SlurmState::parse(state),
            exit: Some(exit),
            start: None,
            end: None,
        };
        status::outcome(&row, false)
    }

    /// OUT_OF_MEMORY: the next attempt's script asks for memory × `escalate.memory_factor`,
    /// again after a second OOM, also in an engine started later (`run --resume`); its
    /// walltime stays. TIMEOUT raises the walltime only.
    #[test]
    fn out_of_memory_makes_the_retry_ask_for_memory_times_the_factor() {
        let tmp = tempfile::tempdir().unwrap();
        let task = tmp.path().join("steps/sim/3");
        std::fs::create_dir_all(task.join("attempt-1")).unwrap();
        let hour = Some(Duration::from_secs(3600));
        let mut b = backend();
        let o = ended("OUT_OF_MEMORY", (0, 125));
        assert!(!o.success() && o.describe().contains("out of memory"), "{o:?}");
        b.note_outcome(&task.join("attempt-1"), &o);
        let second = b.escalated(job(&task, 2, 1 << 30, hour));
        assert_eq!(second.resources.memory, 1536 << 20);
        let text = script::render_script(&second, &b.profile);
        assert!(text.contains("#SBATCH --mem=1536M") && text.contains("#SBATCH --time=0-01:00:00"), "{text}");
        // A later engine reads the factors from the task directory.
        let mut resumed = backend();
        let o = ended("OUT_OF_MEMORY", (0, 125));
        resumed.note_outcome(&task.join("attempt-2"), &o);
        let third = resumed.escalated(job(&task, 3, 1 << 30, hour));
        assert_eq!(third.resources.memory, 2304 << 20, "1 GiB × 1.5 × 1.5");
        assert_eq!(std::fs::read_to_string(task.join(ESCALATION_FILE)).unwrap(), "1 2.25\n");
        // TIMEOUT: walltime × 2, memory as before.
        let o = ended("TIMEOUT", (0, 0));
        assert!(o.timed_out());
        resumed.note_outcome(&task.join("attempt-3"), &o);
        let fourth = resumed.escalated(job(&task, 4, 1 << 30, hour));
        assert_eq!(fourth.resources.walltime, Some(Duration::from_secs(7200)));
        assert_eq!(fourth.resources.memory, 2304 << 20);
    }

    /// Other failures change nothing; a factor of 1 (the default) turns escalation off.
    #[test]
    fn other_failures_and_factor_one_do_not_escalate() {
        let tmp = tempfile::tempdir().unwrap();
        let task = tmp.path().join("t");
        std::fs::create_dir_all(task.join("attempt-1")).unwrap();
        let mut b = backend();
        for state in ["FAILED", "NODE_FAIL", "PREEMPTED", "CANCELLED"] {
            let o = ended(state, (1, 0));
            assert!(!o.success() && !o.is_cancelled(), "{state} must count as a failure the retry policy sees");
            b.note_outcome(&task.join("attempt-1"), &o);
        }
        assert!(!task.join(ESCALATION_FILE).exists());
        assert_eq!(b.escalated(job(&task, 2, 1 << 30, None)).resources.memory, 1 << 30);
        let mut off = SlurmBackend::new(SlurmOptions::default());
        let o = ended("OUT_OF_MEMORY", (0, 125));
        off.note_outcome(&task.join("attempt-1"), &o);
        assert_eq!(off.escalated(job(&task, 2, 1 << 30, None)).resources.memory, 1 << 30);
    }

    /// A run directory a killed engine left: one attempt whose sbatch never returned, one
    /// with its job id, an array list with one unsent member, outputs not scanned.
    #[test]
    fn unrecorded_attempts_are_found_in_the_run_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let steps = tmp.path().join("steps");
        let mk = |d: &Path, script: bool, id: Option<&str>| {
            std::fs::create_dir_all(d.join(".twinflow")).unwrap();
            std::fs::write(d.join(".twinflow/manifest.json"), "{}").unwrap();
            if script {
                std::fs::write(d.join(".twinflow").join(SCRIPT_FILE), "#!/bin/bash\n").unwrap();
            }
            if let Some(id) = id {
                std::fs::write(d.join(".twinflow").join(JOB_ID_FILE), id).unwrap();
            }
        };
        let unsent = steps.join("prep/attempt-1");
        mk(&unsent, true, None);
        mk(&steps.join("prep/out"), true, Some("3"));
        mk(&steps.join("sim/0/attempt-1"), true, Some("4_0"));
        let member = steps.join("sim/1/attempt-1");
        mk(&member, true, None);
        // An output directory of the step that looks like an attempt is not looked into.
        mk(&unsent.join("nested/attempt-1"), true, None);
        std::fs::create_dir_all(steps.join("sim/.twinflow")).unwrap();
        let list = steps.join("sim/.twinflow/array-1-2.list");
        std::fs::write(&list, format!("{}\n{}\n", steps.join("sim/0/attempt-1").display(), member.display())).unwrap();
        let (mut singles, mut arrays) = (vec![], vec![]);
        scan_unrecorded(&steps, &mut singles, &mut arrays, 0);
        singles.sort();
        assert_eq!(singles, [unsent, member.clone()]);
        assert_eq!(arrays, [(list, vec![member])]);
    }
}
