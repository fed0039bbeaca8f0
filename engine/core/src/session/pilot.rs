//! Allocation mode with pilot workers (a profile with a `pilot:` section): the engine
//! listens, writes the run's secret file, and starts one `twinflow worker` per node of the
//! allocation with one `srun` (see [`crate::execute::pilot`]); and `twinflow worker`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use super::SessionError;
use crate::execute::local::LocalOptions;
use crate::execute::pilot::backend::{WorkerLaunch, worker_srun_argv};
pub use crate::execute::pilot::worker::WorkerError;
use crate::execute::pilot::worker::{self, WorkerOptions};
use crate::execute::pilot::{PilotBackend, PilotOptions};
use crate::execute::profile::{PilotSettings, Profile};
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

/// The pilot backend of a run in allocation `alloc` of `nodes` nodes: listening, with its
/// workers being started.
pub async fn start(
    runs_dir: &Path,
    alloc: &Allocation,
    nodes: u32,
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
    let stem = format!("pilot-{}-{}", alloc.job_id, std::process::id());
    let secret_file = dir.join(format!("{stem}.secret"));
    // A file of an earlier engine with this pid: its secret is not this run's.
    let _ = std::fs::remove_file(&secret_file);
    let (bind, advertise) = listen_address(pilot);
    let opts = PilotOptions {
        bind,
        advertise,
        heartbeat: pilot.heartbeat,
        secret_file: secret_file.clone(),
        cores: local.cores,
        memory: local.memory,
        grace: local.grace,
        srun: local.srun.clone(),
        mpiexec: local.mpiexec.clone(),
        connect_timeout: (profile.command_timeout * 2).max(pilot.heartbeat * 2),
    };
    let mut backend = PilotBackend::listen(opts).await.map_err(|e| SessionError::Backend(e.to_string()))?;
    let program = std::env::current_exe().map_err(|e| SessionError::Backend(format!("cannot find twinflow: {e}")))?;
    let argv = worker_srun_argv(&WorkerLaunch {
        job_id: alloc.job_id.clone(),
        nodes,
        program,
        connect: backend.connect_address(),
        secret_file,
        heartbeat: pilot.heartbeat,
        grace: local.grace,
        prelude: crate::execute::slurm::script::srun_prelude(profile),
    });
    backend
        .launch_workers(&argv, &dir.join(format!("{stem}.log")))
        .map_err(|e| SessionError::Backend(e.to_string()))?;
    Ok(backend)
}

/// `twinflow worker`: runs a worker until the engine ends the run (`Ok`) or is lost.
pub async fn run_worker(
    connect: String,
    secret_file: &Path,
    heartbeat: Duration,
    grace: Duration,
) -> Result<(), WorkerError> {
    worker::run(WorkerOptions::here(connect, secret_file.to_path_buf(), heartbeat, grace)).await
}
