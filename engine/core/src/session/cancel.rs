//! `twinflow cancel`: stops a run: its SLURM jobs, and its engine.
//!
//! Every SLURM job of the run that may be in flight is cancelled: the recorded job of each
//! running task, and a job submitted but not recorded yet (the engine died in between). Only
//! jobs whose attempt directory holds the SLURM backend's job id file are taken, so a local
//! run's pids are never taken for SLURM job ids; each gets a `cancelled` mark first, so the
//! engine following it records it as cancelled rather than as a failure to retry. A run in
//! allocation mode: its engine is stopped first (it cancels its steps), then the holder job
//! twinflow submitted for it is cancelled (never an allocation the user made). The engine of
//! a run still recorded as running gets SIGTERM, as on Ctrl-C: it stops its remaining tasks
//! (SIGTERM, grace, SIGKILL) and records them as cancelled; this is how a local run is
//! cancelled from another shell. The engine is known by its pid and start time: a later
//! process that reused the pid is left alone. Pilot workers a dead engine left on this host
//! (which keep its tasks running for a heartbeat, for `run --resume` to adopt) get SIGTERM
//! and stop their tasks.

use std::path::Path;
use std::time::{Duration, Instant};

use super::backend::call_log;
use super::{DATABASE, Notices, SessionError, find_run};
use crate::events::{RunState, TaskState};
use crate::execute::Leftover;
use crate::execute::profile::Profile;
use crate::execute::slurm::{self, SlurmBackend, SlurmOptions};
use crate::ids::JobId;
use crate::state::Store;

/// What `twinflow cancel` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cancelled {
    /// The run.
    pub run_id: String,
    /// SLURM jobs cancelled (the allocation's holder job last, if any).
    pub jobs: Vec<JobId>,
    /// The allocation's holder job twinflow submitted, if it was cancelled.
    pub allocation: Option<JobId>,
    /// The engine sent SIGTERM, and whether that was before the jobs were cancelled (in
    /// allocation mode, where the engine stops its own steps).
    pub engine: Option<(u32, bool)>,
    /// The run is recorded as running but its engine could not be signalled.
    pub engine_unknown: bool,
    /// Pilot workers the run's dead engine left on this host, sent SIGTERM (each stops its
    /// tasks before it exits): the pids of their launchers.
    pub workers: Vec<u32>,
}

/// Cancels run `run` (`latest` for the newest) of `runs_dir`.
pub async fn cancel(runs_dir: &Path, run: &str, notices: &mut dyn Notices) -> Result<Cancelled, SessionError> {
    if !runs_dir.join(DATABASE).exists() {
        return Err(SessionError::Usage(format!("no runs in `{}` (or pass --runs-dir)", runs_dir.display())));
    }
    let store = Store::open(runs_dir)?;
    let run = find_run(&store, run)?;
    // The run's own profile (command time limit, ids per scancel call); a profile that can no
    // longer be found is no reason not to cancel.
    let profile = match run.settings.profile.as_deref() {
        Some(p) => Profile::find(p, Path::new(&run.file).parent()).unwrap_or_else(|e| {
            notices.warning(&format!("{e}; cancelling with the default SLURM settings"));
            Profile::default()
        }),
        None => Profile::default(),
    };
    let run_dir = runs_dir.join(&run.id);
    let mut jobs = vec![];
    for t in store.tasks(&run.id)? {
        if !matches!(t.state, TaskState::Running | TaskState::Pending) {
            continue;
        }
        // `sim[3]` is member 3 of step `sim`: `steps/sim/3`.
        let mut task_dir = run_dir.join("steps").join(&t.step);
        if let Some(m) = t.task.strip_prefix(t.step.as_str()).and_then(|r| r.strip_prefix('[')?.strip_suffix(']')) {
            task_dir = task_dir.join(m);
        }
        let open_job = t.job_id.clone().filter(|_| t.state == TaskState::Running).map(JobId);
        let l = Leftover { task: t.task.clone(), task_dir, attempts: t.attempts, open_job };
        if let Some(a) = slurm::job_in_flight(&l) {
            slurm::mark_cancelled(&a.dir);
            jobs.push(a.job);
        }
    }
    let holder = run.settings.owned_allocation().map(|j| JobId(j.to_string()));
    let engine = run.live_engine();
    let mut out = Cancelled {
        run_id: run.id.clone(),
        jobs: vec![],
        allocation: None,
        engine: None,
        engine_unknown: false,
        workers: vec![],
    };
    if holder.is_some()
        && let Some(pid) = engine
        && terminate(pid)
    {
        // Steps of an allocation are `srun`s of the engine: it stops them and records them
        // as cancelled; cancelling the allocation under it first would look like failures.
        out.engine = Some((pid, true));
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(60) && run.live_engine().is_some() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    jobs.extend(holder.iter().cloned());
    if !jobs.is_empty() {
        let backend = SlurmBackend::new(SlurmOptions { profile, call_log: call_log() });
        backend.scancel(&jobs).await.map_err(|e| SessionError::Backend(e.to_string()))?;
    }
    out.jobs = jobs;
    out.allocation = holder;
    // The engine of a local run (or of what is left of a SLURM run) stops its own tasks on
    // SIGTERM, as on Ctrl-C, and records them as cancelled.
    if out.engine.is_none() && run.state == RunState::Running {
        match engine {
            Some(pid) if terminate(pid) => out.engine = Some((pid, false)),
            _ => out.engine_unknown = true,
        }
    }
    // Pilot workers of an engine that is gone keep its tasks running for a heartbeat, for
    // a resumed engine to adopt; cancelling the run stops them now. (A live engine tells
    // its own workers to stop.)
    if engine.is_none() {
        out.workers = super::pilot::stop_workers(runs_dir, &run.id);
    }
    Ok(out)
}

/// Sends SIGTERM to the engine `pid` (found live by [`crate::state::RunRow::live_engine`]).
/// Whether it was sent.
fn terminate(pid: u32) -> bool {
    i32::try_from(pid).is_ok_and(|pid| {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGTERM).is_ok()
    })
}
