//! Executors: where tasks run. Every backend (local processes, `mpiexec`, SLURM) implements
//! one trait, [`Backend`]: submit one job, poll many at once, cancel many. The scheduler in
//! [`crate::run`] owns all state and decisions; backends only start, observe and stop jobs.
//!
//! What a backend would run is rendered by a pure function ([`Backend::render`]) so
//! `twinflow plan` can show it and tests can snapshot it without running anything.

pub mod local;
mod outcome;
pub mod process;
pub mod slurm;

use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;

use crate::ids::JobId;
use crate::validate::model::Resources;
pub use outcome::{Ending, Exit, Outcome, SpawnFailure};

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
    /// Waits until a job may have changed state, at most `max`.
    async fn wait(&mut self, max: Duration);
    /// Whether jobs outlive the engine and a later engine can follow them (`run --resume`):
    /// true for batch systems. When false, a resumed run stops what the previous engine left
    /// running and starts those tasks again.
    fn can_adopt(&self) -> bool {
        false
    }
    /// Follows jobs that an earlier engine submitted (`run --resume`), given with their
    /// attempt directories, as if this backend had submitted them: later `poll`s report them
    /// and `cancel` stops them.
    fn adopt(&mut self, _jobs: &[(JobId, PathBuf)]) {}
}
