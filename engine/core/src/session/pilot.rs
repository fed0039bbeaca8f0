//! Allocation mode with pilot workers (a profile with a `pilot:` section): the engine
//! listens, writes the run's secret file, and starts one `twinflow worker` per node of the
//! allocation with one `srun` (see [`crate::execute::pilot`]); and `twinflow worker`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::SessionError;
use crate::execute::local::LocalOptions;
use crate::execute::pilot::backend::{Fallback, MpiLaunch, WorkerLaunch, local_worker_argv, worker_srun_argv};
pub use crate::execute::pilot::worker::WorkerError;
use crate::execute::pilot::worker::{self, WorkerOptions};
use crate::execute::pilot::{PilotBackend, PilotOptions};
use crate::execute::profile::{MpiLauncher, PilotSettings, Profile};
use crate::execute::slurm::allocation::Allocation;

/// This host's name (where workers reach the engine by default).
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map_or_else(|_| "localhost".into(), |s| s.trim().to_string())
}

/// Where the engine listens and the address it gives the workers: an IP address in the
/// profile is both; a name is only advertised (the engine listens on every interface).
pub fn listen_address(pilot: &PilotSettings) -> (SocketAddr, String) {
    match &pilot.address {
        Some(a) => match a.parse::<IpAddr>() {
            Ok(ip) => (SocketAddr::new(ip, 0), a.clone()),
            Err(_) => (SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0), a.clone()),
        },
        None => (SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0), hostname()),
    }
}

/// Where the workers of a run come from.
#[derive(Debug, Clone)]
pub enum Workers<'a> {
    /// One `srun` over the allocation's `nodes` nodes (allocation mode).
    Srun {
        /// The allocation.
        alloc: &'a Allocation,
        /// Its nodes.
        nodes: u32,
    },
    /// `pilot.workers` processes on this machine (`pilot.launch: local`).
    Local,
}

/// What an engine leaves for the next one of its run (`RUNS/allocations/pilot-RUN.json`):
/// how many workers it had and the processes that started them, so a resumed engine knows
/// whether any may still be alive to dial in.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PilotState {
    /// Workers started.
    pub workers: usize,
    /// Pids of the launchers (the `srun`, or each local worker) on `host`.
    pub pids: Vec<u32>,
    /// The host of the engine that started them.
    #[serde(default)]
    pub host: String,
}

impl PilotState {
    /// The file an engine of run `run_id` leaves in `runs_dir`.
    pub fn file(runs_dir: &Path, run_id: &str) -> PathBuf {
        runs_dir.join("allocations").join(format!("pilot-{run_id}.json"))
    }

    /// The run's secret file beside it.
    pub fn secret_file(runs_dir: &Path, run_id: &str) -> PathBuf {
        runs_dir.join("allocations").join(format!("pilot-{run_id}.secret"))
    }

    /// The state an engine of run `run_id` left, if any.
    pub fn read(runs_dir: &Path, run_id: &str) -> Option<Self> {
        std::fs::read_to_string(Self::file(runs_dir, run_id)).ok().and_then(|t| serde_json::from_str(&t).ok())
    }

    /// The launchers that still run on this host (a process of that pid whose command line
    /// names `secret_file`: not another process that got the pid since).
    pub fn live_launchers(&self, secret_file: &Path) -> Vec<u32> {
        if self.host != hostname() {
            return vec![];
        }
        let needle = secret_file.as_os_str().as_encoded_bytes();
        self.pids
            .iter()
            .copied()
            .filter(|pid| {
                std::fs::read(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|c| c.windows(needle.len().max(1)).any(|w| w == needle))
            })
            .collect()
    }

    /// Whether its workers may still be alive: a launcher still runs here, or the engine
    /// ran on another host (its processes cannot be seen from here: the workers are waited
    /// for, up to a heartbeat).
    pub fn may_be_alive(&self, secret_file: &Path) -> bool {
        self.host != hostname() || !self.live_launchers(secret_file).is_empty()
    }
}

/// Stops the workers an engine of run `run_id` that is gone left on this host (`twinflow
/// cancel`): SIGTERM to their launchers; a worker stops its tasks before it exits (an
/// `srun` passes the signal to its workers). Returns the pids signalled.
pub fn stop_workers(runs_dir: &Path, run_id: &str) -> Vec<u32> {
    let Some(state) = PilotState::read(runs_dir, run_id) else { return vec![] };
    let pids = state.live_launchers(&crate::spec::span::absolute(&PilotState::secret_file(runs_dir, run_id)));
    for pid in &pids {
        if let Ok(p) = i32::try_from(*pid) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(p), nix::sys::signal::Signal::SIGTERM);
        }
    }
    pids
}

/// The argv of each process that starts workers.
#[allow(clippy::too_many_arguments)]
fn worker_argvs(
    workers: &Workers<'_>,
    program: PathBuf,
    connect: String,
    address_file: &Path,
    secret_file: &Path,
    profile: &Profile,
    pilot: &PilotSettings,
    local: &LocalOptions,
) -> Vec<Vec<String>> {
    let l = WorkerLaunch {
        job_id: String::new(),
        nodes: 1,
        program,
        connect,
        address_file: Some(address_file.to_path_buf()),
        secret_file: secret_file.to_path_buf(),
        heartbeat: pilot.heartbeat,
        grace: local.grace,
        prelude: None,
    };
    match workers {
        Workers::Srun { alloc, nodes } => vec![worker_srun_argv(&WorkerLaunch {
            job_id: alloc.job_id.clone(),
            nodes: *nodes,
            prelude: crate::execute::slurm::script::srun_prelude(profile),
            ..l
        })],
        Workers::Local => {
            // The machine's cores shared among the workers.
            let n = pilot.workers.max(1);
            let cpus = (local.cores / n).max(1);
            (0..n).map(|_| local_worker_argv(&l, cpus)).collect()
        }
    }
}

/// The pilot backend of run `run_id`: listening, with its workers being started, or, for a
/// resumed run whose previous engine's workers may be alive, waiting for them to dial in.
#[allow(clippy::too_many_arguments)]
pub async fn start(
    runs_dir: &Path,
    run_id: &str,
    resumed: bool,
    workers: Workers<'_>,
    profile: &Profile,
    pilot: &PilotSettings,
    local: &LocalOptions,
) -> Result<PilotBackend, SessionError> {
    let dir = crate::spec::span::absolute(&runs_dir.join("allocations"));
    std::fs::create_dir_all(&dir).map_err(|source| SessionError::Io {
        action: "cannot create directory",
        path: dir.clone(),
        source,
    })?;
    // One name per run, so the engine of `run --resume` finds what the killed one left.
    let stem = format!("pilot-{run_id}");
    let secret_file = dir.join(format!("{stem}.secret"));
    let address_file = dir.join(format!("{stem}.address"));
    let state_file = PilotState::file(&crate::spec::span::absolute(runs_dir), run_id);
    let log = dir.join(format!("{stem}.log"));
    let previous: Option<PilotState> = if resumed {
        std::fs::read_to_string(&state_file).ok().and_then(|t| serde_json::from_str(&t).ok())
    } else {
        None
    };
    let live = previous.filter(|p| p.may_be_alive(&secret_file) && secret_file.exists());
    let (bind, advertise) = listen_address(pilot);
    let srun = match (&workers, pilot.mpi_launcher) {
        (Workers::Srun { .. }, MpiLauncher::Srun) => local.srun.clone(),
        _ => None,
    };
    let opts = PilotOptions {
        bind,
        advertise,
        heartbeat: pilot.heartbeat,
        secret_file: secret_file.clone(),
        reuse_secret: live.is_some(),
        address_file: Some(address_file.clone()),
        cores: local.cores,
        memory: local.memory,
        grace: local.grace,
        launch: MpiLaunch { srun, mpiexec: local.mpiexec.clone() },
        connect_timeout: (profile.command_timeout * 2).max(pilot.heartbeat * 2),
    };
    let mut backend = PilotBackend::listen(opts).await.map_err(|e| SessionError::Backend(e.to_string()))?;
    let program = std::env::current_exe().map_err(|e| SessionError::Backend(format!("cannot find twinflow: {e}")))?;
    let argvs =
        worker_argvs(&workers, program, backend.connect_address(), &address_file, &secret_file, profile, pilot, local);
    let count = match workers {
        Workers::Srun { nodes, .. } => nodes as usize,
        Workers::Local => pilot.workers as usize,
    };
    match live {
        Some(p) => {
            // They dial again for up to a heartbeat after they lost the killed engine; if
            // none does, new ones start, and the file says so for the next resume.
            tracing::info!(workers = p.workers, "waiting for the previous engine's workers to dial in");
            let file = state_file.clone();
            let started = Box::new(move |pids: &[u32]| {
                let state = PilotState { workers: count, pids: pids.to_vec(), host: hostname() };
                if let Err(e) = std::fs::write(&file, serde_json::to_string(&state).unwrap_or_default()) {
                    tracing::warn!("cannot write `{}`: {e}", file.display());
                }
            });
            backend.expect_workers(p.workers, pilot.heartbeat, Fallback { argvs, log, started });
        }
        None => {
            backend.launch_all(&argvs, &log).map_err(|e| SessionError::Backend(e.to_string()))?;
            let state = PilotState { workers: count, pids: backend.launcher_pids(), host: hostname() };
            std::fs::write(&state_file, serde_json::to_string(&state).unwrap_or_default())
                .map_err(|source| SessionError::Io { action: "cannot write", path: state_file.clone(), source })?;
        }
    }
    Ok(backend)
}

/// `twinflow worker`: runs a worker until the engine ends the run (`Ok`) or is lost.
/// `node` and `cpus` replace what the worker finds out about its node (a local worker).
pub async fn run_worker(
    connect: String,
    address_file: Option<PathBuf>,
    secret_file: &Path,
    heartbeat: Duration,
    grace: Duration,
    node: Option<String>,
    cpus: Option<u32>,
) -> Result<(), WorkerError> {
    let mut o = WorkerOptions::here(connect, secret_file.to_path_buf(), heartbeat, grace);
    o.address_file = address_file;
    if let Some(n) = node {
        o.node = n;
    }
    if let Some(c) = cpus {
        o.cpus = c.max(1);
    }
    worker::run(o).await
}
