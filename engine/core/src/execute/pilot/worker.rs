//! `twinflow worker`: one per node of an allocation, started by the engine with one `srun`.
//! It connects to the engine, proves it knows the run's secret, and runs the tasks it is
//! given as local processes with the local backend ([`LocalBackend`]): each in its own
//! process group, with its timeout, SIGTERM/grace/SIGKILL on cancel, output files in the
//! attempt directory, and the same outcomes.
//!
//! A worker whose engine falls silent (killed, its node lost, the network down) for a whole
//! heartbeat stops its tasks and exits, as the holder job of allocation mode ends itself
//! without its engine's heartbeat.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use tokio::io::BufReader;
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use super::protocol::{self, ProtocolError, StartTask, ToEngine, ToWorker, WireOutcome};
use crate::execute::local::{LocalBackend, LocalOptions};
use crate::execute::{Backend, JobRequest, JobStatus};
use crate::ids::JobId;
use crate::model::Resources;

/// Variables of the worker's own `srun` step that its tasks must not see: an MPI program
/// started by the worker would otherwise take the worker step's PMI server and rank for its
/// own (a 1-rank kernel joining an N-task "job"), and an `srun` started by the worker would
/// take the worker step's task layout.
pub const STEP_VARIABLE_PREFIXES: &[&str] = &[
    "PMI_",
    "PMIX_",
    "SLURM_STEP",
    "SLURM_PROCID",
    "SLURM_LOCALID",
    "SLURM_NODEID",
    "SLURM_NTASKS",
    "SLURM_NPROCS",
    "SLURM_TASKS_PER_NODE",
    "SLURM_TASK_PID",
    "SLURM_CPU_BIND",
    "SLURM_DISTRIBUTION",
    "SLURM_SRUN_COMM",
    "SLURM_LAUNCH_NODE_IPADDR",
    "SLURM_MPI_TYPE",
    "SLURM_OVERLAP",
    "SLURM_UMASK",
];

/// Settings of a worker.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// The engine's address (`host:port`).
    pub connect: String,
    /// The run's secret file.
    pub secret_file: PathBuf,
    /// Exit when the engine has been silent this long.
    pub heartbeat: Duration,
    /// Grace period between SIGTERM and SIGKILL.
    pub grace: Duration,
    /// Node name reported to the engine.
    pub node: String,
    /// CPUs reported to the engine.
    pub cpus: u32,
    /// Memory reported to the engine, MiB.
    pub memory_mb: Option<u64>,
    /// GPUs reported to the engine.
    pub gpus: u32,
}

impl WorkerOptions {
    /// Options with the node name, CPUs, memory and GPUs of the allocation on this node
    /// (`SLURM_CPUS_ON_NODE`, `SLURM_MEM_PER_NODE`, `SLURM_GPUS_ON_NODE`; outside an
    /// allocation: the available parallelism, no memory limit, no GPUs).
    pub fn here(connect: String, secret_file: PathBuf, heartbeat: Duration, grace: Duration) -> Self {
        let node = std::env::var("SLURMD_NODENAME")
            .ok()
            .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok().map(|s| s.trim().to_string()))
            .unwrap_or_else(|| "localhost".into());
        let cpus = std::env::var("SLURM_CPUS_ON_NODE")
            .ok()
            .and_then(|c| c.parse().ok())
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get() as u32));
        let memory_mb = std::env::var("SLURM_MEM_PER_NODE").ok().and_then(|m| m.parse().ok());
        let gpus = std::env::var("SLURM_GPUS_ON_NODE").ok().and_then(|g| g.parse().ok()).unwrap_or(0);
        Self { connect, secret_file, heartbeat, grace, node, cpus, memory_mb, gpus }
    }
}

/// Why a worker stopped.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The secret file is missing or unsafe.
    #[error("{0}")]
    Secret(String),
    /// The engine could not be reached.
    #[error("cannot connect to the engine at `{addr}`: {source}")]
    Connect {
        /// Address.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// The engine refused this worker, or failed to prove it knows the secret.
    #[error("{0}")]
    Refused(String),
    /// The engine was silent or gone for a whole heartbeat.
    #[error("lost the engine ({0}); stopped its tasks")]
    EngineLost(String),
    /// The protocol broke during the handshake.
    #[error("handshake with the engine failed: {0}")]
    Handshake(#[from] ProtocolError),
}

/// Runs a worker until the engine says `Shutdown` (`Ok`) or is lost (`Err`).
pub async fn run(opts: WorkerOptions) -> Result<(), WorkerError> {
    let secret = protocol::read_secret(&opts.secret_file).map_err(WorkerError::Secret)?;
    let stream = connect(&opts.connect, opts.heartbeat).await?;
    let _ = stream.set_nodelay(true);
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    // Handshake: answer the engine's challenge, check its answer to ours.
    let ToWorker::Challenge { nonce } = protocol::recv(&mut r).await? else {
        return Err(WorkerError::Refused("the engine did not start with a challenge".into()));
    };
    let mine = protocol::random_hex().map_err(|e| WorkerError::Secret(e.to_string()))?;
    let hello = ToEngine::Hello {
        proof: protocol::proof(&secret, &nonce),
        nonce: mine.clone(),
        node: opts.node.clone(),
        cpus: opts.cpus,
        memory_mb: opts.memory_mb,
        gpus: opts.gpus,
        pid: std::process::id(),
    };
    protocol::send(&mut w, &hello).await?;
    match protocol::recv(&mut r).await? {
        ToWorker::Welcome { proof, .. } if protocol::verify(&secret, &mine, &proof) => {}
        ToWorker::Welcome { .. } => {
            return Err(WorkerError::Refused(format!(
                "the process at `{}` does not know the run's secret: not the engine",
                opts.connect
            )));
        }
        ToWorker::Refused { reason } => return Err(WorkerError::Refused(format!("the engine refused: {reason}"))),
        other => return Err(WorkerError::Refused(format!("unexpected first answer from the engine: {other:?}"))),
    }
    tracing::info!(engine = %opts.connect, node = %opts.node, cpus = opts.cpus, "worker connected");

    // Messages are read by a task of their own, so the main loop can wait for them and for
    // tasks ending at once; end of input (or a bad line) arrives as `None`.
    let (tx, mut rx) = mpsc::unbounded_channel::<Result<ToWorker, ProtocolError>>();
    tokio::spawn(async move {
        loop {
            let m = protocol::recv::<_, ToWorker>(&mut r).await;
            let end = m.is_err();
            if tx.send(m).is_err() || end {
                break;
            }
        }
    });

    let remove: Vec<String> =
        std::env::vars().map(|(k, _)| k).filter(|k| STEP_VARIABLE_PREFIXES.iter().any(|p| k.starts_with(p))).collect();
    let mut local = LocalBackend::new(LocalOptions {
        cores: opts.cpus,
        grace: opts.grace,
        env_remove: remove,
        ..LocalOptions::default()
    });
    let mut tasks: HashMap<JobId, u64> = HashMap::new();
    let mut ids: HashMap<u64, JobId> = HashMap::new();
    let mut last_heard = tokio::time::Instant::now();
    let mut ping = tokio::time::interval(opts.heartbeat / 3);
    let mut lost: Option<String> = None;
    loop {
        tokio::select! {
            m = rx.recv(), if lost.is_none() => {
                match m {
                    Some(Ok(msg)) => {
                        last_heard = tokio::time::Instant::now();
                        match msg {
                            ToWorker::Start(t) => {
                                let id = t.id;
                                let job = local.submit(job_request(*t)).await;
                                match job {
                                    Ok(j) => {
                                        tasks.insert(j.clone(), id);
                                        ids.insert(id, j);
                                    }
                                    Err(e) => tracing::error!("task {id}: {e}"),
                                }
                            }
                            ToWorker::Cancel { id } => {
                                if let Some(j) = ids.get(&id) {
                                    let _ = local.cancel(std::slice::from_ref(j)).await;
                                }
                            }
                            ToWorker::Kill { id } => {
                                if let Some(j) = ids.get(&id) {
                                    let _ = local.kill(std::slice::from_ref(j)).await;
                                }
                            }
                            ToWorker::Shutdown => break,
                            ToWorker::Ping | ToWorker::Challenge { .. } | ToWorker::Welcome { .. } | ToWorker::Refused { .. } => {}
                        }
                    }
                    Some(Err(e)) => lost = Some(e.to_string()),
                    None => lost = Some("the connection ended".into()),
                }
                if let Some(why) = &lost {
                    tracing::warn!("lost the engine: {why}; waiting up to a heartbeat for it");
                }
            }
            () = local.wait(Duration::from_secs(3600)) => {
                let ready = local.ready_ids();
                if let Ok(st) = local.poll(&ready).await {
                    let mut done = vec![];
                    for (j, s) in st {
                        if let (JobStatus::Done(o), Some(id)) = (s, tasks.remove(&j)) {
                            ids.remove(&id);
                            done.push(ToEngine::Done { id, outcome: WireOutcome::from(&o) });
                        }
                    }
                    if lost.is_none() && !done.is_empty() && let Err(e) = protocol::send_all(&mut w, &done).await {
                        lost = Some(e.to_string());
                    }
                }
            }
            _ = ping.tick() => {
                if last_heard.elapsed() > opts.heartbeat {
                    let why = lost.take().unwrap_or_else(|| "no message".into());
                    let why = format!("{why}; silent for {} s", last_heard.elapsed().as_secs());
                    stop_all(&mut local, &tasks, opts.grace).await;
                    return Err(WorkerError::EngineLost(why));
                }
                if lost.is_none() && let Err(e) = protocol::send(&mut w, &ToEngine::Ping).await {
                    lost = Some(e.to_string());
                }
            }
        }
    }
    stop_all(&mut local, &tasks, opts.grace).await;
    tracing::info!("the engine ended the run; worker exits");
    Ok(())
}

/// Connects, retrying for up to a heartbeat (the engine listens before it starts workers,
/// but a node's network may come up late).
async fn connect(addr: &str, patience: Duration) -> Result<TcpStream, WorkerError> {
    let until = tokio::time::Instant::now() + patience;
    loop {
        match TcpStream::connect(addr).await {
            Ok(s) => return Ok(s),
            Err(e) if tokio::time::Instant::now() >= until => {
                return Err(WorkerError::Connect { addr: addr.to_string(), source: e });
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// Stops every task still running (SIGTERM, grace, SIGKILL) and waits for them.
async fn stop_all(local: &mut LocalBackend, tasks: &HashMap<JobId, u64>, grace: Duration) {
    let running: Vec<JobId> = tasks.keys().cloned().collect();
    if running.is_empty() {
        return;
    }
    let _ = local.cancel(&running).await;
    let until = tokio::time::Instant::now() + grace + Duration::from_secs(5);
    let mut left = running;
    while !left.is_empty() && tokio::time::Instant::now() < until {
        local.wait(Duration::from_millis(200)).await;
        if let Ok(st) = local.poll(&left).await {
            left = st.into_iter().filter(|(_, s)| !matches!(s, JobStatus::Done(_))).map(|(j, _)| j).collect();
        }
    }
}

/// The local backend's request for a task: its argv is complete already (the engine added
/// any launcher), so it runs as one process.
fn job_request(t: StartTask) -> JobRequest {
    JobRequest {
        name: t.name,
        argv: t.argv,
        env: t.env,
        cwd: t.cwd,
        stdout: t.stdout,
        stderr: t.stderr,
        resources: Resources { ranks: 1, ..Resources::default() },
        timeout: t.timeout_ms.map(Duration::from_millis),
        array: None,
    }
}
