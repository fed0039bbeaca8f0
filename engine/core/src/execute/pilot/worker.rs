//! `twinflow worker`: one per node of an allocation, started by the engine with one `srun`.
//! It connects to the engine, proves it knows the run's secret, and runs the tasks it is
//! given as local processes with the local backend ([`LocalBackend`]): each in its own
//! process group, with its timeout, SIGTERM/grace/SIGKILL on cancel, output files in the
//! attempt directory, and the same outcomes.
//!
//! A worker whose connection to the engine drops keeps its tasks running and dials again,
//! re-reading the address file (a resumed engine writes its own address there), with
//! backoff; the engine that answers and proves it knows the run's secret gets the tasks the
//! worker runs and the outcomes of those that ended meanwhile, and adopts them (`run
//! --resume`). A worker that hears from no engine for a whole heartbeat stops its tasks and
//! exits, as the holder job of allocation mode ends itself without its engine's heartbeat.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use tokio::io::BufReader;
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::mpsc;

use super::protocol::{
    self, FinishedTask, ProtocolError, RunningTask, StartTask, ToEngine, ToWorker, WireNeed, WireOutcome,
};
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
    /// A file holding the engine's address, read before each dial when it exists (a
    /// resumed engine writes its own address there).
    pub address_file: Option<PathBuf>,
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
        Self { connect, address_file: None, secret_file, heartbeat, grace, node, cpus, memory_mb, gpus }
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
    /// The engine was silent or gone for a whole heartbeat, and no engine took its place.
    #[error("lost the engine ({0}); stopped its tasks")]
    EngineLost(String),
    /// Stopped by a signal (its tasks were stopped first).
    #[error("stopped by {0}; stopped its tasks")]
    Stopped(&'static str),
    /// The protocol broke during the handshake.
    #[error("handshake with the engine failed: {0}")]
    Handshake(#[from] ProtocolError),
}

/// A task the worker runs.
struct Running {
    id: u64,
    cwd: PathBuf,
    need: WireNeed,
    started_ms: Option<u64>,
}

/// What a worker keeps across connections: its tasks go on when the engine is lost.
struct Tasks {
    local: LocalBackend,
    running: HashMap<JobId, Running>,
    ids: HashMap<u64, JobId>,
    /// Tasks that ended while no engine was connected.
    unreported: Vec<FinishedTask>,
    last_id: u64,
}

impl Tasks {
    /// Collects the tasks that ended since last asked.
    async fn ended(&mut self) -> Vec<FinishedTask> {
        let ready = self.local.ready_ids();
        let mut done = vec![];
        if let Ok(st) = self.local.poll(&ready).await {
            for (j, s) in st {
                if let (JobStatus::Done(o), Some(r)) = (s, self.running.remove(&j)) {
                    self.ids.remove(&r.id);
                    done.push(FinishedTask { id: r.id, cwd: r.cwd, outcome: WireOutcome::from(&o) });
                }
            }
        }
        done
    }

    fn hello(&self, opts: &WorkerOptions, proof: String, nonce: String) -> ToEngine {
        let running = self
            .running
            .iter()
            .map(|(j, r)| RunningTask {
                id: r.id,
                cwd: r.cwd.clone(),
                need: r.need,
                started_ms: r.started_ms,
                pid: j.0.parse().ok(),
            })
            .collect();
        ToEngine::Hello {
            proof,
            nonce,
            node: opts.node.clone(),
            cpus: opts.cpus,
            memory_mb: opts.memory_mb,
            gpus: opts.gpus,
            pid: std::process::id(),
            last_id: self.last_id,
            running,
            finished: self.unreported.clone(),
        }
    }
}

type Reader = BufReader<OwnedReadHalf>;

/// Runs a worker until the engine says `Shutdown` (`Ok`) or is lost for a heartbeat with no
/// engine taking its place (`Err`).
pub async fn run(opts: WorkerOptions) -> Result<(), WorkerError> {
    let secret = protocol::read_secret(&opts.secret_file).map_err(WorkerError::Secret)?;
    let remove: Vec<String> =
        std::env::vars().map(|(k, _)| k).filter(|k| STEP_VARIABLE_PREFIXES.iter().any(|p| k.starts_with(p))).collect();
    let mut tasks = Tasks {
        local: LocalBackend::new(LocalOptions {
            cores: opts.cpus,
            grace: opts.grace,
            env_remove: remove,
            ..LocalOptions::default()
        }),
        running: HashMap::new(),
        ids: HashMap::new(),
        unreported: vec![],
        last_id: 0,
    };
    // The first connection: its failures are final (nothing runs yet).
    let addr = address(&opts);
    let stream = connect(&addr, opts.heartbeat).await?;
    let (mut r, mut w) = handshake(stream, &opts, &secret, &tasks, &addr).await?;
    tracing::info!(engine = %addr, node = %opts.node, cpus = opts.cpus, "worker connected");
    // SIGTERM (`kill`, a cancelled `srun` step) or SIGINT: the tasks are stopped with the
    // worker, not left behind in their own process groups.
    let mut signals = Signals::new().map_err(|e| WorkerError::Secret(format!("cannot handle signals: {e}")))?;
    loop {
        let served = tokio::select! {
            r = serve(&mut r, &mut w, &mut tasks, &opts) => Ok(r),
            s = signals.next() => Err(s),
        };
        let (why, last_heard) = match served {
            Ok(Ok(())) => {
                stop_all(&mut tasks.local, &tasks.running, opts.grace).await;
                tracing::info!("the engine ended the run; worker exits");
                return Ok(());
            }
            Ok(Err(lost)) => lost,
            Err(sig) => {
                stop_all(&mut tasks.local, &tasks.running, opts.grace).await;
                return Err(WorkerError::Stopped(sig));
            }
        };
        drop((r, w));
        tracing::warn!("lost the engine: {why}; tasks go on while dialling it again");
        let again = tokio::select! {
            r = redial(&opts, &secret, &mut tasks, last_heard) => Ok(r),
            s = signals.next() => Err(s),
        };
        let again = match again {
            Ok(a) => a,
            Err(sig) => {
                stop_all(&mut tasks.local, &tasks.running, opts.grace).await;
                return Err(WorkerError::Stopped(sig));
            }
        };
        match again {
            Some((nr, nw, addr)) => {
                tracing::info!(engine = %addr, reported = tasks.unreported.len(), running = tasks.running.len(), "worker reconnected");
                // The engine has them now.
                tasks.unreported.clear();
                (r, w) = (nr, nw);
            }
            None => {
                let why = format!("{why}; no engine for {} s", last_heard.elapsed().as_secs());
                stop_all(&mut tasks.local, &tasks.running, opts.grace).await;
                return Err(WorkerError::EngineLost(why));
            }
        }
    }
}

/// The signals that stop a worker.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> std::io::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self { term: signal(SignalKind::terminate())?, int: signal(SignalKind::interrupt())? })
    }

    /// The next one's name.
    async fn next(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}

/// The engine's address: the address file's when there is one (a resumed engine writes
/// its own there), else `--connect`.
fn address(opts: &WorkerOptions) -> String {
    opts.address_file
        .as_ref()
        .and_then(|f| std::fs::read_to_string(f).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| opts.connect.clone())
}

/// Answers the engine's challenge and checks its answer to ours.
async fn handshake(
    stream: TcpStream,
    opts: &WorkerOptions,
    secret: &str,
    tasks: &Tasks,
    addr: &str,
) -> Result<(Reader, OwnedWriteHalf), WorkerError> {
    let _ = stream.set_nodelay(true);
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    let ToWorker::Challenge { nonce } = protocol::recv(&mut r).await? else {
        return Err(WorkerError::Refused("the engine did not start with a challenge".into()));
    };
    let mine = protocol::random_hex().map_err(|e| WorkerError::Secret(e.to_string()))?;
    protocol::send(&mut w, &tasks.hello(opts, protocol::proof(secret, &nonce), mine.clone())).await?;
    match protocol::recv(&mut r).await? {
        ToWorker::Welcome { proof, .. } if protocol::verify(secret, &mine, &proof) => Ok((r, w)),
        ToWorker::Welcome { .. } => {
            Err(WorkerError::Refused(format!("the process at `{addr}` does not know the run's secret: not the engine")))
        }
        ToWorker::Refused { reason } => Err(WorkerError::Refused(format!("the engine refused: {reason}"))),
        other => Err(WorkerError::Refused(format!("unexpected first answer from the engine: {other:?}"))),
    }
}

/// Dials the engine again (re-reading the address file each time, with backoff) while the
/// tasks go on, until a heartbeat has passed since `last_heard`.
async fn redial(
    opts: &WorkerOptions,
    secret: &str,
    tasks: &mut Tasks,
    last_heard: tokio::time::Instant,
) -> Option<(Reader, OwnedWriteHalf, String)> {
    let deadline = last_heard + opts.heartbeat;
    let mut delay = Duration::from_millis(100);
    loop {
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return None;
        }
        let addr = address(opts);
        let attempt = async {
            let s =
                TcpStream::connect(&addr).await.map_err(|e| WorkerError::Connect { addr: addr.clone(), source: e })?;
            handshake(s, opts, secret, tasks, &addr).await
        };
        match tokio::time::timeout(deadline - now, attempt).await {
            Ok(Ok((r, w))) => return Some((r, w, addr)),
            Ok(Err(e)) => tracing::debug!("dialling the engine again: {e}"),
            Err(_) => return None,
        }
        // Meanwhile tasks end: their outcomes wait for the next engine.
        let pause = tokio::time::sleep(delay.min(deadline.saturating_duration_since(tokio::time::Instant::now())));
        tokio::pin!(pause);
        loop {
            tokio::select! {
                () = &mut pause => break,
                () = tasks.local.wait(Duration::from_secs(3600)) => {
                    let ended = tasks.ended().await;
                    tasks.unreported.extend(ended);
                }
            }
        }
        delay = (delay * 2).min(Duration::from_secs(1));
    }
}

/// Serves one connection: `Ok` when the engine says `Shutdown`, else why it was lost and
/// when the worker last heard from it.
async fn serve(
    r: &mut Reader,
    w: &mut OwnedWriteHalf,
    tasks: &mut Tasks,
    opts: &WorkerOptions,
) -> Result<(), (String, tokio::time::Instant)> {
    // Messages are read by a task of their own, so the loop can wait for them and for
    // tasks ending at once; end of input (or a bad line) arrives as an error.
    let (tx, mut rx) = mpsc::unbounded_channel::<Result<ToWorker, ProtocolError>>();
    let reader = async {
        loop {
            let m = protocol::recv::<_, ToWorker>(r).await;
            let end = m.is_err();
            if tx.send(m).is_err() || end {
                break;
            }
        }
    };
    tokio::pin!(reader);
    let mut reading = true;
    let mut last_heard = tokio::time::Instant::now();
    let mut ping = tokio::time::interval(opts.heartbeat / 3);
    let lost = |why: String, at| Err((why, at));
    loop {
        tokio::select! {
            () = &mut reader, if reading => reading = false,
            m = rx.recv() => {
                let msg = match m {
                    Some(Ok(msg)) => msg,
                    Some(Err(e)) => return lost(e.to_string(), last_heard),
                    None => return lost("the connection ended".into(), last_heard),
                };
                last_heard = tokio::time::Instant::now();
                match msg {
                    ToWorker::Start(t) => {
                        let (id, cwd, need) = (t.id, t.cwd.clone(), t.need);
                        tasks.last_id = tasks.last_id.max(id);
                        let started_ms = std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .ok()
                            .map(|d| d.as_millis() as u64);
                        match tasks.local.submit(job_request(*t)).await {
                            Ok(j) => {
                                tasks.running.insert(j.clone(), Running { id, cwd, need, started_ms });
                                tasks.ids.insert(id, j);
                            }
                            Err(e) => tracing::error!("task {id}: {e}"),
                        }
                    }
                    ToWorker::Cancel { id } => {
                        if let Some(j) = tasks.ids.get(&id) {
                            let _ = tasks.local.cancel(std::slice::from_ref(j)).await;
                        }
                    }
                    ToWorker::Kill { id } => {
                        if let Some(j) = tasks.ids.get(&id) {
                            let _ = tasks.local.kill(std::slice::from_ref(j)).await;
                        }
                    }
                    ToWorker::Shutdown => return Ok(()),
                    ToWorker::Ping | ToWorker::Challenge { .. } | ToWorker::Welcome { .. } | ToWorker::Refused { .. } => {}
                }
            }
            () = tasks.local.wait(Duration::from_secs(3600)) => {
                let ended = tasks.ended().await;
                let done: Vec<ToEngine> =
                    ended.iter().map(|f| ToEngine::Done { id: f.id, outcome: f.outcome.clone() }).collect();
                if !done.is_empty() && let Err(e) = protocol::send_all(w, &done).await {
                    // Not delivered: kept for the next engine.
                    tasks.unreported.extend(ended);
                    return lost(e.to_string(), last_heard);
                }
            }
            _ = ping.tick() => {
                if last_heard.elapsed() > opts.heartbeat {
                    return lost(format!("silent for {} s", last_heard.elapsed().as_secs()), last_heard);
                }
                if let Err(e) = protocol::send(w, &ToEngine::Ping).await {
                    return lost(e.to_string(), last_heard);
                }
            }
        }
    }
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
async fn stop_all(local: &mut LocalBackend, tasks: &HashMap<JobId, Running>, grace: Duration) {
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
