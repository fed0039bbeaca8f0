//! Executors: where tasks run. Every backend (local processes, `mpiexec`, SLURM) implements
//! one trait, [`Backend`]: submit one job, poll many at once, cancel many. The scheduler in
//! [`crate::run`] owns all state and decisions; backends only start, observe and stop jobs.
//!
//! What a backend would run is rendered by a pure function ([`Backend::render`]) so
//! `twinflow plan` can show it and tests can snapshot it without running anything.

pub mod batch;
pub mod launch;
pub mod launcher_output;
pub mod local;
mod outcome;
pub mod pilot;
pub mod process;
pub mod profile;
pub mod slurm;

use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;

use crate::ids::JobId;
use crate::model::Resources;
pub use outcome::{Ending, Exit, Outcome, SpawnFailure, Usage, signal_name};

/// File in an attempt's `.twinflow/` directory where a backend whose jobs outlive the engine
/// writes the job id as soon as it has it (before the scheduler records the attempt), so
/// `run --resume` can follow the job instead of submitting it again.
pub const JOB_ID_FILE: &str = "job_id";

/// File in an attempt's `.twinflow/` directory written by `twinflow cancel` before it
/// cancels the attempt's job, so the engine following the job records it as cancelled
/// rather than as a failure to retry.
pub const CANCELLED_FILE: &str = "cancelled";

/// Everything a backend needs to run one attempt of one task.
#[derive(Debug, Clone)]
pub struct JobRequest {
    /// Task name (`sim[3]`), for job names and logs.
    pub name: String,
    /// The program and its arguments (no launcher: the backend adds `mpiexec`/`srun`).
    pub argv: Vec<String>,
    /// Environment added to the inherited one.
    pub env: Vec<(String, String)>,
    /// Working directory (the attempt directory).
    pub cwd: PathBuf,
    /// Where standard output goes.
    pub stdout: PathBuf,
    /// Where standard error goes.
    pub stderr: PathBuf,
    /// Resources.
    pub resources: Resources,
    /// Wall-clock limit.
    pub timeout: Option<Duration>,
    /// For a member of a scattered step: the step and the member index, so a batch
    /// system may submit the members of one step together (a SLURM job array).
    pub array: Option<ArrayMember>,
}

/// Identifies one member of a scattered step (see [`JobRequest::array`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ArrayMember {
    /// Step name (the same for all members).
    pub step: String,
    /// Member index.
    pub index: u32,
}

/// State of a submitted job.
#[derive(Debug, Clone, PartialEq)]
pub enum JobStatus {
    /// Accepted, waiting for resources (batch queue).
    Queued,
    /// Running.
    Running,
    /// Ended.
    Done(Outcome),
    /// The backend no longer knows the job (e.g. purged from the queue with no record).
    Unknown,
}

/// Resources a backend offers to the scheduler.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Capacity {
    /// Cores that may be busy at once (`None`: unlimited, e.g. a batch queue).
    pub cores: Option<u32>,
    /// Memory that may be in use at once, in bytes.
    pub memory: Option<u64>,
    /// Jobs that may be in flight at once.
    pub max_jobs: Option<usize>,
}

/// What a backend would run for a job (shown by `twinflow plan`, snapshot-tested).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rendered {
    /// A command line, as an argv vector.
    Argv(Vec<String>),
    /// A batch script.
    Script(String),
}

/// Backend errors (infrastructure, not job failures).
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// Could not submit.
    #[error("submitting `{name}` failed: {message}")]
    Submit {
        /// Task name.
        name: String,
        /// Why.
        message: String,
    },
    /// Could not query job states.
    #[error("querying job states failed: {0}")]
    Poll(String),
    /// Could not cancel.
    #[error("cancelling jobs failed: {0}")]
    Cancel(String),
}

/// A task an earlier engine of a run did not see finish (see [`Backend::recover`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leftover {
    /// Task name (`sim[3]`).
    pub task: String,
    /// The task's directory (`steps/STEP[/MEMBER]`), holding its `attempt-N` directories.
    pub task_dir: PathBuf,
    /// Attempts the run database records.
    pub attempts: u32,
    /// The job of the recorded last attempt, when the database still has it running.
    pub open_job: Option<JobId>,
}

/// A job an earlier engine started that the backend follows again (see
/// [`Backend::recover`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Adopted {
    /// Its attempt number.
    pub attempt: u32,
    /// Its job id.
    pub job: JobId,
    /// Its attempt directory.
    pub dir: PathBuf,
    /// Whether the run database already records the attempt (false when the engine died
    /// between the backend writing the job id and the database recording it).
    pub recorded: bool,
}

/// An executor of jobs.
#[async_trait]
pub trait Backend: Send {
    /// Short name (`local`, `slurm`).
    fn name(&self) -> &'static str;
    /// What the scheduler may use at once.
    fn capacity(&self) -> Capacity;
    /// What would run for `job`: a pure function of the request and the backend's settings.
    fn render(&self, job: &JobRequest) -> Rendered;
    /// Starts a job.
    async fn submit(&mut self, job: JobRequest) -> Result<JobId, BackendError>;
    /// Starts several jobs that became ready together, in order; the result for each is in
    /// the same position. Backends that can submit many jobs in one request (SLURM job
    /// arrays) override this; the default submits one by one and stops at the first error.
    async fn submit_many(&mut self, jobs: Vec<JobRequest>) -> Vec<Result<JobId, BackendError>> {
        let mut out = Vec::with_capacity(jobs.len());
        for job in jobs {
            let r = self.submit(job).await;
            let failed = r.is_err();
            out.push(r);
            if failed {
                break;
            }
        }
        out
    }
    /// States of many jobs in one call.
    async fn poll(&mut self, ids: &[JobId]) -> Result<Vec<(JobId, JobStatus)>, BackendError>;
    /// Stops jobs: SIGTERM, a grace period, then SIGKILL (or the batch system's equivalent).
    async fn cancel(&mut self, ids: &[JobId]) -> Result<(), BackendError>;
    /// Stops jobs being cancelled at once, cutting their grace period short (a second
    /// Ctrl-C). The default cancels them again: a batch system applies its own grace.
    async fn kill(&mut self, ids: &[JobId]) -> Result<(), BackendError> {
        self.cancel(ids).await
    }
    /// The grace period [`Backend::cancel`] gives a job between SIGTERM and SIGKILL, when
    /// this engine applies it (`None`: the batch system does).
    fn grace(&self) -> Option<Duration> {
        None
    }
    /// The run is over (every job ended or was stopped): releases what the backend holds
    /// besides its jobs (pilot workers are told to exit). The default does nothing.
    async fn shutdown(&mut self) {}
    /// Waits until a job may have changed state, at most `max`.
    async fn wait(&mut self, max: Duration);
    /// The run stopped on an error of the engine (its database full or locked, a file it
    /// could not write): stops the jobs this backend still runs and waits for them, so no
    /// step goes on without an engine. The default does nothing: a batch system's jobs
    /// outlive the engine, and `run --resume` follows them.
    async fn abort(&mut self) {}
    /// Whether it can run services (`service:` steps): jobs that run until cancelled while
    /// the engine watches their files and rotates their logs. The default says no.
    fn runs_services(&self) -> bool {
        false
    }
    /// Resume (`run --resume`): deals with what an earlier engine of run `run_id` (in
    /// `run_dir`) left behind, given the tasks it did not see finish. A backend whose jobs
    /// outlive the engine (a batch system) finds the jobs still in flight, follows them from
    /// now on (later `poll`s report them, `cancel` stops them) and returns one entry per
    /// leftover, `Some` where it follows a job. A backend whose jobs die with the engine
    /// stops whatever is left of them (the local backend kills the process groups of the
    /// run's steps) and follows nothing: those tasks start again. The default does nothing.
    async fn recover(
        &mut self,
        run_id: &str,
        run_dir: &Path,
        leftovers: &[Leftover],
    ) -> Result<Vec<Option<Adopted>>, BackendError> {
        let _ = (run_id, run_dir);
        Ok(vec![None; leftovers.len()])
    }
}
