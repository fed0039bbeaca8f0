//! The local backend: steps run as child processes of the engine, multi-rank steps under
//! `mpiexec -n R` (launcher, flavour, flags and environment from a site profile's
//! `mpiexec:` section, see [`super::launch::Mpiexec`]).
//!
//! Each job gets a tokio task that waits for the child (with its timeout and a cancel
//! signal) and records the [`Outcome`]; `poll` reads those records, `wait` sleeps until one
//! arrives. The scheduler decides what fits; this backend only runs what it is given.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use tokio::sync::{Notify, watch};

use super::process;
use super::{
    Adopted, Backend, BackendError, Capacity, Ending, Exit, JobRequest, JobStatus, Leftover, Outcome, Rendered,
    SpawnFailure,
};
use crate::ids::JobId;

/// Settings of the local backend.
#[derive(Debug, Clone)]
pub struct LocalOptions {
    /// Cores the scheduler may fill (default: available parallelism).
    pub cores: u32,
    /// Memory the scheduler may fill, in bytes (default: physical memory).
    pub memory: Option<u64>,
    /// MPI launcher for steps with more than one rank (default: `mpiexec`, MPICH).
    pub mpiexec: super::launch::Mpiexec,
    /// Grace period between SIGTERM and SIGKILL.
    pub grace: Duration,
    /// Launch every step into a SLURM allocation with `srun --exact` instead (allocation
    /// mode, see the SLURM backend's `allocation` module).
    pub srun: Option<super::launch::SrunLaunch>,
    /// Variables of the engine's environment its steps do not inherit (a pilot worker's
    /// own `srun` step variables, see [`super::pilot::worker::STEP_VARIABLE_PREFIXES`]).
    pub env_remove: Vec<String>,
}

impl Default for LocalOptions {
    fn default() -> Self {
        Self {
            cores: std::thread::available_parallelism().map_or(1, |n| n.get() as u32),
            memory: physical_memory(),
            mpiexec: super::launch::Mpiexec::default(),
            grace: Duration::from_secs(10),
            srun: None,
            env_remove: vec![],
        }
    }
}

/// Total physical memory from `/proc/meminfo`.
pub fn physical_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Renders the argv the local backend runs for a job: the program, prefixed by
/// `mpiexec -n R` when the step has more than one rank (in allocation mode: by `srun`).
pub fn render_argv(opts: &LocalOptions, job: &JobRequest) -> Vec<String> {
    if let Some(l) = &opts.srun {
        return super::launch::srun_argv(l, job);
    }
    if job.resources.ranks > 1 {
        let mut v = opts.mpiexec.prefix(job.resources.ranks);
        v.extend(job.argv.iter().cloned());
        v
    } else {
        job.argv.clone()
    }
}

/// The environment a job's process gets on top of the engine's: the job's own, and for
/// `mpiexec` launches the launcher's (`OMPI_ALLOW_RUN_AS_ROOT`, ...), the job's winning.
pub fn job_env(opts: &LocalOptions, job: &JobRequest) -> Vec<(String, String)> {
    if job.resources.ranks > 1 && opts.srun.is_none() && !opts.mpiexec.env.is_empty() {
        opts.mpiexec.env.iter().chain(job.env.iter()).cloned().collect()
    } else {
        job.env.clone()
    }
}

/// Resolves a program name through `PATH` once and remembers it, so the child does not
/// walk `PATH` with failing `execve` calls on every spawn.
fn resolve_program(cache: &mut HashMap<String, String>, prog: &str) -> String {
    if prog.contains('/') {
        return prog.to_string();
    }
    cache
        .entry(prog.to_string())
        .or_insert_with(|| crate::programs::which(prog).map_or_else(|| prog.to_string(), |p| p.display().to_string()))
        .clone()
}

struct Running {
    /// How far stopping the job was asked to go ([`process::StopLevel`]).
    stop: watch::Sender<process::StopLevel>,
    pid: u32,
}

/// Runs jobs as local processes.
pub struct LocalBackend {
    opts: LocalOptions,
    running: HashMap<JobId, Running>,
    done: Arc<Mutex<HashMap<JobId, Outcome>>>,
    notify: Arc<Notify>,
    programs: HashMap<String, String>,
}

impl LocalBackend {
    /// A backend with the given settings.
    pub fn new(opts: LocalOptions) -> Self {
        Self {
            opts,
            running: HashMap::new(),
            done: Arc::default(),
            notify: Arc::new(Notify::new()),
            programs: HashMap::new(),
        }
    }

    /// The pid (= process group) of a running job.
    pub fn pid(&self, id: &JobId) -> Option<u32> {
        self.running.get(id).map(|r| r.pid)
    }
}

#[async_trait]
impl Backend for LocalBackend {
    fn name(&self) -> &'static str {
        "local"
    }

    fn capacity(&self) -> Capacity {
        Capacity { cores: Some(self.opts.cores), memory: self.opts.memory, max_jobs: None }
    }

    fn render(&self, job: &JobRequest) -> Rendered {
        Rendered::Argv(render_argv(&self.opts, job))
    }

    /// Locally and in a SLURM allocation (`srun` children of the engine) alike.
    fn runs_services(&self) -> bool {
        true
    }

    async fn submit(&mut self, job: JobRequest) -> Result<JobId, BackendError> {
        let mut argv = render_argv(&self.opts, &job);
        if let Some(first) = argv.first_mut() {
            *first = resolve_program(&mut self.programs, first);
        }
        let started = SystemTime::now();
        let env = job_env(&self.opts, &job);
        let spawned = process::spawn_clean(&argv, &env, &self.opts.env_remove, &job.cwd, &job.stdout, &job.stderr);
        let child = match spawned {
            Ok(c) => c,
            Err(e) => {
                // A program that cannot start is a failed attempt, not a backend error:
                // report it through the normal path so retries and messages apply.
                let id = JobId(format!(
                    "local-failed-{}",
                    self.done.lock().map(|d| d.len()).unwrap_or(0) + self.running.len()
                ));
                let cause = if e.kind() == std::io::ErrorKind::NotFound {
                    SpawnFailure::NotFound { program: argv[0].clone() }
                } else {
                    SpawnFailure::Io(e.to_string())
                };
                let outcome = Outcome::between(Ending::SpawnFailed(cause), Some(started), Some(SystemTime::now()));
                if let Ok(mut d) = self.done.lock() {
                    d.insert(id.clone(), outcome);
                }
                self.notify.notify_one();
                return Ok(id);
            }
        };
        let pid = child.id();
        // A step launched with `srun` is stopped through SLURM (see `process::stop_job`).
        let step = process::srun_step(&argv);
        // Reaped by `wait4` on a thread, which also reports what it used.
        let mut child = process::reap(child);
        let id = JobId(pid.to_string());
        let (tx, mut rx) = watch::channel(process::RUN);
        let done = self.done.clone();
        let notify = self.notify.clone();
        let grace = self.opts.grace;
        let timeout = job.timeout;
        let jid = id.clone();
        tokio::spawn(async move {
            let sleep = async {
                match timeout {
                    Some(t) => tokio::time::sleep(t).await,
                    None => std::future::pending().await,
                }
            };
            // How it ended, given its exit status: by itself, or stopped by us. A kill asked
            // while it is being stopped cuts the grace period short.
            let stop = rx.clone();
            let (status, ending): (_, fn(Option<Exit>) -> Ending) = tokio::select! {
                s = process::wait(&mut child) => (s, Ending::from_exit),
                _ = sleep => (process::stop_job(&mut child, pid, grace, stop, step.as_ref()).await, Ending::TimedOut),
                () = process::stop_asked(&mut rx) => {
                    (process::stop_job(&mut child, pid, grace, stop, step.as_ref()).await, Ending::Cancelled)
                }
            };
            let (ending, usage) = match status {
                Ok(x) => (ending(Exit::from_std(x.status)), Some(x.usage)),
                Err(e) => (Ending::SpawnFailed(SpawnFailure::Wait(e.to_string())), None),
            };
            let outcome = Outcome::between(ending, Some(started), Some(SystemTime::now())).with_usage(usage);
            if let Ok(mut d) = done.lock() {
                d.insert(jid, outcome);
            }
            notify.notify_one();
        });
        self.running.insert(id.clone(), Running { stop: tx, pid });
        Ok(id)
    }

    async fn poll(&mut self, ids: &[JobId]) -> Result<Vec<(JobId, JobStatus)>, BackendError> {
        let mut done = self.done.lock().map_err(|_| BackendError::Poll("state lock poisoned".into()))?;
        Ok(ids
            .iter()
            .map(|id| match done.remove(id) {
                Some(o) => {
                    self.running.remove(id);
                    (id.clone(), JobStatus::Done(o))
                }
                None if self.running.contains_key(id) => (id.clone(), JobStatus::Running),
                None => (id.clone(), JobStatus::Unknown),
            })
            .collect())
    }

    async fn cancel(&mut self, ids: &[JobId]) -> Result<(), BackendError> {
        for id in ids {
            if let Some(r) = self.running.get(id) {
                // Never lowers a kill already asked for.
                r.stop.send_if_modified(|s| {
                    let raise = *s < process::TERMINATE;
                    if raise {
                        *s = process::TERMINATE;
                    }
                    raise
                });
            }
        }
        Ok(())
    }

    async fn kill(&mut self, ids: &[JobId]) -> Result<(), BackendError> {
        for id in ids {
            if let Some(r) = self.running.get(id) {
                let _ = r.stop.send(process::KILL);
            }
        }
        Ok(())
    }

    fn grace(&self) -> Option<Duration> {
        Some(self.opts.grace)
    }

    async fn abort(&mut self) {
        let ids: Vec<JobId> = self.running.keys().cloned().collect();
        if ids.is_empty() {
            return;
        }
        tracing::warn!(jobs = ids.len(), "the run stopped on an error: stopping its running steps");
        let _ = self.cancel(&ids).await;
        // Each job's watcher sends SIGTERM, waits the grace period, then SIGKILLs its group
        // and records the outcome; a little more than that is waited for here.
        let deadline = tokio::time::Instant::now() + self.opts.grace + Duration::from_secs(5);
        loop {
            let ended = self.done.lock().map(|d| ids.iter().all(|i| d.contains_key(i))).unwrap_or(true);
            if ended || tokio::time::Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn wait(&mut self, max: Duration) {
        let pending = self.done.lock().map(|d| !d.is_empty()).unwrap_or(false);
        if pending {
            return;
        }
        let _ = tokio::time::timeout(max, self.notify.notified()).await;
    }

    async fn recover(
        &mut self,
        run_id: &str,
        _run_dir: &Path,
        leftovers: &[Leftover],
    ) -> Result<Vec<Option<Adopted>>, BackendError> {
        // Steps a killed engine left running are in their own process groups and outlived
        // it; stop them before their tasks start again. They are found by the run id every
        // step has in its environment.
        for pgid in process::groups_with_env(twinflow_contract::env::RUN_ID, run_id) {
            if pgid != std::process::id() {
                tracing::info!(pgid, "stopping a step the previous engine left running");
                process::signal_group(pgid, nix::sys::signal::Signal::SIGKILL);
            }
        }
        Ok(vec![None; leftovers.len()])
    }
}

impl LocalBackend {
    /// Ids of jobs whose outcome is ready (cheap check the scheduler uses to poll only what
    /// changed).
    pub fn ready_ids(&self) -> Vec<JobId> {
        self.done.lock().map(|d| d.keys().cloned().collect()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::execute::profile::Profile;
    use crate::model::Resources;

    fn job(ranks: u32) -> JobRequest {
        JobRequest {
            name: "sim[0]".into(),
            argv: vec!["twin-kernel".into(), "flood".into(), "--out".into(), "a b.nc".into()],
            env: vec![("TWINFLOW_RUN_ID".into(), "r1".into())],
            cwd: "/r".into(),
            stdout: "/r/o".into(),
            stderr: "/r/e".into(),
            resources: Resources { ranks, ..Resources::default() },
            timeout: None,
            array: None,
        }
    }

    /// The argv (one word per line) and the environment the local backend gives a job
    /// under the `mpiexec:` section of `profile`.
    fn launch(profile: &str, ranks: u32) -> String {
        let p = Profile::parse(profile, "p").unwrap();
        let opts = LocalOptions { mpiexec: p.mpiexec.unwrap_or_default(), ..LocalOptions::default() };
        let j = job(ranks);
        let env: Vec<String> = job_env(&opts, &j).iter().map(|(k, v)| format!("{k}={v}")).collect();
        format!("argv:\n  {}\nenv:\n  {}\n", render_argv(&opts, &j).join("\n  "), env.join("\n  "))
    }

    #[test]
    fn mpiexec_mpich_from_a_profile() {
        let profile = "mpiexec:\n  flavour: mpich\n  command: mpiexec.hydra\n  flags: [-bind-to, core]\n  env: { HYDRA_TOPO_DEBUG: '0' }\n";
        insta::assert_snapshot!(launch(profile, 2));
    }

    #[test]
    fn mpiexec_openmpi_from_a_profile() {
        // Open MPI refuses to run as root without these two variables, and more ranks than
        // cores without --oversubscribe (hpc-notes: "MPI pitfalls").
        let profile = "mpiexec:\n  flavour: openmpi\n  command: mpiexec.openmpi\n  flags: [--oversubscribe]\n  env: { OMPI_ALLOW_RUN_AS_ROOT: '1', OMPI_ALLOW_RUN_AS_ROOT_CONFIRM: '1' }\n";
        insta::assert_snapshot!(launch(profile, 4));
    }

    #[test]
    fn one_rank_steps_run_directly_without_the_launcher_env() {
        let profile = "mpiexec:\n  flavour: openmpi\n  env: { OMPI_ALLOW_RUN_AS_ROOT: '1' }\n";
        assert_eq!(
            launch(profile, 1),
            "argv:\n  twin-kernel\n  flood\n  --out\n  a b.nc\nenv:\n  TWINFLOW_RUN_ID=r1\n"
        );
        // Without a profile: plain `mpiexec -n R`.
        let opts = LocalOptions::default();
        assert_eq!(render_argv(&opts, &job(3))[..3], ["mpiexec", "-n", "3"]);
    }
}
