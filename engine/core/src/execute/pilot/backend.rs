//! The engine's side of pilot workers: a TCP listener the workers connect to, one
//! connection task per worker, and [`PilotBackend`], which hands tasks to workers and
//! reports what they say back.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use tokio::io::BufReader;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, mpsc};

use super::protocol::{self, StartTask, ToEngine, ToWorker};
use crate::execute::launch::{Mpiexec, SrunLaunch, srun_argv};
use crate::execute::{
    Adopted, Backend, BackendError, Capacity, JobRequest, JobStatus, Leftover, Outcome, Rendered, process,
};
use crate::ids::JobId;

/// Settings of the pilot backend.
#[derive(Debug, Clone)]
pub struct PilotOptions {
    /// Where to listen (`0.0.0.0:0`: every interface, a free port).
    pub bind: SocketAddr,
    /// The host name or address workers connect to (the port is the listener's).
    pub advertise: String,
    /// Each side treats the other as lost after this long without a message.
    pub heartbeat: Duration,
    /// The run's secret file, created here (mode 0600) and read by the workers.
    pub secret_file: PathBuf,
    /// Cores the scheduler may fill (the allocation's CPUs).
    pub cores: u32,
    /// Memory the scheduler may fill, in bytes.
    pub memory: Option<u64>,
    /// Grace period between SIGTERM and SIGKILL (applied by the workers).
    pub grace: Duration,
    /// Multi-rank steps: `srun --exact` into the allocation (MPI across nodes needs SLURM's
    /// launcher), run by a worker.
    pub srun: Option<SrunLaunch>,
    /// Multi-rank steps without `srun`: this `mpiexec`.
    pub mpiexec: Mpiexec,
    /// How long a submission waits for a first worker before the run stops.
    pub connect_timeout: Duration,
}

/// What the worker of a task runs: the step's argv, with `srun --exact` (or `mpiexec -n R`)
/// in front for a step of more than one rank. One-rank steps are forked by the worker
/// itself: no `srun`, no controller RPC per task.
pub fn render_argv(opts: &PilotOptions, job: &JobRequest) -> Vec<String> {
    if job.resources.ranks <= 1 && job.resources.nodes <= 1 {
        return job.argv.clone();
    }
    if let Some(l) = &opts.srun {
        return srun_argv(l, job);
    }
    let mut v = opts.mpiexec.prefix(job.resources.ranks);
    v.extend(job.argv.iter().cloned());
    v
}

/// The environment of a task: its own, with the `mpiexec` launcher's for multi-rank steps
/// launched without `srun`.
fn task_env(opts: &PilotOptions, job: &JobRequest) -> Vec<(String, String)> {
    if job.resources.ranks > 1 && opts.srun.is_none() {
        opts.mpiexec.env.iter().chain(job.env.iter()).cloned().collect()
    } else {
        job.env.clone()
    }
}

/// What a task takes of its node while it runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Need {
    cores: u32,
    memory_mb: u64,
    gpus: u32,
}

impl Need {
    fn of(job: &JobRequest) -> Self {
        let r = &job.resources;
        Need { cores: r.cores().max(1), memory_mb: r.memory.div_ceil(1 << 20), gpus: r.gpus }
    }

    fn add(&mut self, o: Need) {
        self.cores += o.cores;
        self.memory_mb += o.memory_mb;
        self.gpus += o.gpus;
    }

    fn sub(&mut self, o: Need) {
        self.cores = self.cores.saturating_sub(o.cores);
        self.memory_mb = self.memory_mb.saturating_sub(o.memory_mb);
        self.gpus = self.gpus.saturating_sub(o.gpus);
    }
}

/// A connected worker.
struct Worker {
    node: String,
    cpus: u32,
    /// Memory of the allocation on its node, MiB, when SLURM says.
    memory_mb: Option<u64>,
    gpus: u32,
    /// What the tasks it runs take.
    used: Need,
    tx: mpsc::UnboundedSender<ToWorker>,
    alive: bool,
}

impl Worker {
    /// Whether `n` fits next to what runs on the node (`used`; zero: on the empty node).
    fn fits(&self, used: Need, n: Need) -> bool {
        used.cores + n.cores <= self.cpus
            && self.memory_mb.is_none_or(|m| used.memory_mb + n.memory_mb <= m)
            && (n.gpus == 0 || used.gpus + n.gpus <= self.gpus)
    }
}

/// A task a worker runs.
struct Task {
    worker: usize,
    need: Need,
    started: SystemTime,
}

/// A task waiting for room on a node.
struct Waiting {
    n: u64,
    start: StartTask,
    need: Need,
    /// Spans nodes (or is larger than any node): `srun` places it, any worker starts it.
    spread: bool,
}

#[derive(Default)]
struct State {
    workers: Vec<Worker>,
    /// Tasks submitted that no node has room for yet, in order.
    queue: Vec<Waiting>,
    tasks: HashMap<u64, Task>,
    done: HashMap<u64, Outcome>,
    /// Connections refused (wrong secret or protocol).
    refused: u32,
    /// Workers lost, by node, with why.
    lost: Vec<(String, String)>,
    /// The engine told the workers to exit: disconnections are expected.
    shutting_down: bool,
}

struct Shared {
    state: Mutex<State>,
    notify: Notify,
}

impl State {
    /// Starts every waiting task that fits on a node, on the node with the most free cores
    /// (tasks behind one that does not fit may go first). A task larger than any node goes
    /// to any worker, whose `srun --exact` waits for room in the allocation.
    fn dispatch(&mut self) {
        let mut i = 0;
        while i < self.queue.len() {
            if !self.workers.iter().any(|w| w.alive) {
                return;
            }
            let q = &self.queue[i];
            let spread = q.spread || !self.workers.iter().any(|w| w.alive && w.fits(Need::default(), q.need));
            let need = if spread { Need::default() } else { q.need };
            let best = self
                .workers
                .iter()
                .enumerate()
                .filter(|(_, w)| w.alive && w.fits(w.used, need))
                .max_by_key(|(_, w)| w.cpus.saturating_sub(w.used.cores));
            let Some((w, _)) = best else {
                i += 1;
                continue;
            };
            let q = self.queue.remove(i);
            let started = SystemTime::now();
            if self.workers[w].tx.send(ToWorker::Start(Box::new(q.start))).is_err() {
                // Its connection just closed: the node is being lost; retried as such.
                self.done.insert(q.n, protocol::node_lost(Some(started)));
            } else {
                self.workers[w].used.add(need);
                self.tasks.insert(q.n, Task { worker: w, need, started });
            }
        }
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic elsewhere while holding the lock leaves consistent enough data here.
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Runs jobs on pilot workers (see the module docs of [`super`]).
pub struct PilotBackend {
    opts: PilotOptions,
    shared: Arc<Shared>,
    addr: SocketAddr,
    next: u64,
    ids: HashMap<JobId, u64>,
    /// The `srun` that started the workers, when this backend started them.
    /// The workers' `srun`: its pid and where its reaper reports how it ended.
    launcher: Option<(u32, process::Reaping)>,
    launcher_log: Option<PathBuf>,
    accept: tokio::task::JoinHandle<()>,
}

impl PilotBackend {
    /// Writes the secret file, listens, and accepts workers from now on.
    pub async fn listen(opts: PilotOptions) -> Result<Self, BackendError> {
        let err = |m: String| BackendError::Submit { name: "twinflow worker".into(), message: m };
        let secret = protocol::write_secret(&opts.secret_file)
            .map_err(|e| err(format!("cannot create the secret file `{}`: {e}", opts.secret_file.display())))?;
        let listener =
            TcpListener::bind(opts.bind).await.map_err(|e| err(format!("cannot listen on {}: {e}", opts.bind)))?;
        let addr = listener.local_addr().map_err(|e| err(e.to_string()))?;
        let shared = Arc::new(Shared { state: Mutex::default(), notify: Notify::new() });
        let accept = tokio::spawn(accept_loop(listener, shared.clone(), secret, opts.heartbeat));
        tracing::info!(%addr, "listening for twinflow workers");
        Ok(Self { opts, shared, addr, next: 0, ids: HashMap::new(), launcher: None, launcher_log: None, accept })
    }

    /// The address workers connect to (`advertise:port`).
    pub fn connect_address(&self) -> String {
        format!("{}:{}", self.opts.advertise, self.addr.port())
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Starts the workers with `argv` (one `srun` for all of them), in its own process
    /// group, its output in `log`.
    pub fn launch_workers(&mut self, argv: &[String], log: &Path) -> Result<(), BackendError> {
        let child = process::spawn(argv, &[], Path::new("."), log, log).map_err(|e| BackendError::Submit {
            name: "twinflow worker".into(),
            message: format!("cannot start `{}`: {e}", argv.first().map_or("", String::as_str)),
        })?;
        tracing::info!(argv = ?argv, "started the workers");
        self.launcher = Some((child.id(), process::reap(child)));
        self.launcher_log = Some(log.to_path_buf());
        Ok(())
    }

    /// Workers connected and alive.
    pub fn workers(&self) -> usize {
        self.shared.lock().workers.iter().filter(|w| w.alive).count()
    }

    /// Connections refused so far (no or a wrong secret).
    pub fn refused(&self) -> u32 {
        self.shared.lock().refused
    }

    /// Workers lost so far: node and why.
    pub fn lost(&self) -> Vec<(String, String)> {
        self.shared.lock().lost.clone()
    }

    /// Waits until a worker is connected, up to the connect timeout.
    async fn a_worker(&mut self) -> Result<(), String> {
        let until = tokio::time::Instant::now() + self.opts.connect_timeout;
        loop {
            {
                let st = self.shared.lock();
                if st.workers.iter().any(|w| w.alive) {
                    return Ok(());
                }
                if !st.workers.is_empty() {
                    return Err(format!("every worker is lost: {}", describe_lost(&st.lost)));
                }
            }
            if let Some((_, r)) = &mut self.launcher
                && let Ok(ended) = r.try_recv()
            {
                // Reaped: nothing left to wait for at shutdown.
                self.launcher = None;
                let status = ended.map_or_else(|e| e.to_string(), |x| x.status.to_string());
                return Err(format!(
                    "the workers' `srun` ended ({status}) before any worker connected; see {}",
                    self.launcher_log.as_ref().map_or("its output".into(), |p| format!("`{}`", p.display()))
                ));
            }
            if tokio::time::Instant::now() >= until {
                return Err(format!(
                    "no twinflow worker connected to {} within {} s",
                    self.connect_address(),
                    self.opts.connect_timeout.as_secs()
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sends `msg` to the worker of a running task; a task still waiting for room is
    /// cancelled where it waits.
    fn send(&self, id: &JobId, msg: impl Fn(u64) -> ToWorker) {
        let Some(&n) = self.ids.get(id) else { return };
        let mut st = self.shared.lock();
        if let Some(t) = st.tasks.get(&n) {
            let _ = st.workers[t.worker].tx.send(msg(n));
        } else if let Some(at) = st.queue.iter().position(|q| q.n == n) {
            st.queue.remove(at);
            let now = Some(SystemTime::now());
            st.done.insert(n, Outcome::between(crate::execute::Ending::Cancelled(None), now, now));
            drop(st);
            self.shared.notify.notify_one();
        }
    }

    /// The node a task runs on (`None` while it waits for room, or once it ended).
    pub fn node_of(&self, id: &JobId) -> Option<String> {
        let n = self.ids.get(id)?;
        let st = self.shared.lock();
        st.tasks.get(n).map(|t| st.workers[t.worker].node.clone())
    }
}

fn describe_lost(lost: &[(String, String)]) -> String {
    lost.iter().map(|(n, why)| format!("{n} ({why})")).collect::<Vec<_>>().join(", ")
}

#[async_trait]
impl Backend for PilotBackend {
    fn name(&self) -> &'static str {
        "pilot"
    }

    fn capacity(&self) -> Capacity {
        Capacity { cores: Some(self.opts.cores), memory: self.opts.memory, max_jobs: None }
    }

    fn render(&self, job: &JobRequest) -> Rendered {
        Rendered::Argv(render_argv(&self.opts, job))
    }

    fn runs_services(&self) -> bool {
        true
    }

    async fn submit(&mut self, job: JobRequest) -> Result<JobId, BackendError> {
        self.a_worker().await.map_err(|message| BackendError::Submit { name: job.name.clone(), message })?;
        let need = Need::of(&job);
        let spread = job.resources.nodes > 1;
        self.next += 1;
        let n = self.next;
        let start = StartTask {
            id: n,
            name: job.name.clone(),
            argv: render_argv(&self.opts, &job),
            env: task_env(&self.opts, &job),
            cwd: job.cwd,
            stdout: job.stdout,
            stderr: job.stderr,
            timeout_ms: job.timeout.map(|t| t.as_millis() as u64),
        };
        let mut st = self.shared.lock();
        st.queue.push(Waiting { n, start, need, spread });
        st.dispatch();
        drop(st);
        self.shared.notify.notify_one();
        let id = JobId(format!("pilot-{n}"));
        self.ids.insert(id.clone(), n);
        Ok(id)
    }

    async fn poll(&mut self, ids: &[JobId]) -> Result<Vec<(JobId, JobStatus)>, BackendError> {
        let mut st = self.shared.lock();
        let out = ids
            .iter()
            .map(|id| {
                let Some(&n) = self.ids.get(id) else { return (id.clone(), JobStatus::Unknown) };
                match st.done.remove(&n) {
                    Some(o) => {
                        self.ids.remove(id);
                        (id.clone(), JobStatus::Done(o))
                    }
                    None if st.tasks.contains_key(&n) => (id.clone(), JobStatus::Running),
                    None if st.queue.iter().any(|q| q.n == n) => (id.clone(), JobStatus::Queued),
                    None => (id.clone(), JobStatus::Unknown),
                }
            })
            .collect();
        Ok(out)
    }

    async fn cancel(&mut self, ids: &[JobId]) -> Result<(), BackendError> {
        for id in ids {
            self.send(id, |n| ToWorker::Cancel { id: n });
        }
        Ok(())
    }

    async fn kill(&mut self, ids: &[JobId]) -> Result<(), BackendError> {
        for id in ids {
            self.send(id, |n| ToWorker::Kill { id: n });
        }
        Ok(())
    }

    fn grace(&self) -> Option<Duration> {
        Some(self.opts.grace)
    }

    async fn wait(&mut self, max: Duration) {
        if !self.shared.lock().done.is_empty() {
            // Outcomes wait to be polled: no need to sleep, but let the connection tasks run
            // (a caller polling other ids in a loop would otherwise starve them).
            tokio::task::yield_now().await;
            return;
        }
        let _ = tokio::time::timeout(max, self.shared.notify.notified()).await;
    }

    async fn recover(
        &mut self,
        run_id: &str,
        _run_dir: &Path,
        leftovers: &[Leftover],
    ) -> Result<Vec<Option<Adopted>>, BackendError> {
        // The workers of a killed engine stop their tasks a heartbeat after it died; tasks
        // still running on this node are stopped now, as the local backend does, so they
        // do not run twice. (Adopting them is not implemented: they start again.)
        for pgid in process::groups_with_env(twinflow_contract::env::RUN_ID, run_id) {
            if pgid != std::process::id() {
                process::signal_group(pgid, nix::sys::signal::Signal::SIGKILL);
            }
        }
        Ok(vec![None; leftovers.len()])
    }

    async fn shutdown(&mut self) {
        let senders: Vec<_> = {
            let mut st = self.shared.lock();
            st.shutting_down = true;
            st.workers.iter().filter(|w| w.alive).map(|w| w.tx.clone()).collect()
        };
        for tx in &senders {
            let _ = tx.send(ToWorker::Shutdown);
        }
        drop(senders);
        if let Some((pid, mut c)) = self.launcher.take() {
            // The workers exit on `Shutdown` and their `srun` with them; stop it if not.
            if tokio::time::timeout(Duration::from_secs(10), process::wait(&mut c)).await.is_err() {
                tracing::warn!("the workers' srun did not end after shutdown; stopping it");
                let (_tx, rx) = tokio::sync::watch::channel(process::TERMINATE);
                let _ = process::terminate(&mut c, pid, self.opts.grace, rx).await;
            }
        }
        self.accept.abort();
        let _ = std::fs::remove_file(&self.opts.secret_file);
    }
}

impl Drop for PilotBackend {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// Accepts worker connections until aborted.
async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, secret: String, heartbeat: Duration) {
    loop {
        match listener.accept().await {
            Ok((sock, peer)) => {
                tokio::spawn(serve(sock, peer, shared.clone(), secret.clone(), heartbeat));
            }
            Err(e) => {
                tracing::warn!("accepting a worker connection failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// One worker's connection: the handshake, then a writer task (messages and pings) and the
/// reader here until the connection ends or falls silent.
async fn serve(sock: TcpStream, peer: SocketAddr, shared: Arc<Shared>, secret: String, heartbeat: Duration) {
    let _ = sock.set_nodelay(true);
    let (r, mut w) = sock.into_split();
    let mut r = BufReader::new(r);
    let Ok(nonce) = protocol::random_hex() else { return };
    if protocol::send(&mut w, &ToWorker::Challenge { nonce: nonce.clone() }).await.is_err() {
        return;
    }
    let hello = tokio::time::timeout(heartbeat, protocol::recv::<_, ToEngine>(&mut r)).await;
    let (node, cpus, memory_mb, gpus, theirs) = match hello {
        Ok(Ok(ToEngine::Hello { proof, nonce: theirs, node, cpus, memory_mb, gpus, pid }))
            if protocol::verify(&secret, &nonce, &proof) =>
        {
            tracing::info!(%peer, %node, cpus, memory_mb, gpus, pid, "worker connected");
            (node, cpus, memory_mb, gpus, theirs)
        }
        other => {
            let reason = match other {
                Ok(Ok(ToEngine::Hello { .. })) => "wrong secret".to_string(),
                Ok(Ok(m)) => format!("expected `hello`, got {m:?}"),
                Ok(Err(e)) => e.to_string(),
                Err(_) => "no hello within the heartbeat".into(),
            };
            tracing::warn!(%peer, "refused a connection: {reason}");
            shared.lock().refused += 1;
            let _ = protocol::send(&mut w, &ToWorker::Refused { reason }).await;
            return;
        }
    };
    let welcome =
        ToWorker::Welcome { proof: protocol::proof(&secret, &theirs), heartbeat_ms: heartbeat.as_millis() as u64 };
    if protocol::send(&mut w, &welcome).await.is_err() {
        return;
    }
    let (tx, mut rx) = mpsc::unbounded_channel::<ToWorker>();
    let index = {
        let mut st = shared.lock();
        st.workers.push(Worker { node: node.clone(), cpus, memory_mb, gpus, used: Need::default(), tx, alive: true });
        let index = st.workers.len() - 1;
        st.dispatch();
        index
    };
    shared.notify.notify_one();
    let writer = tokio::spawn(async move {
        let mut ping = tokio::time::interval(heartbeat / 3);
        loop {
            let msg = tokio::select! {
                m = rx.recv() => match m { Some(m) => m, None => break },
                _ = ping.tick() => ToWorker::Ping,
            };
            // Whatever else is waiting goes out in the same write.
            let mut batch = vec![msg];
            while let Ok(m) = rx.try_recv() {
                batch.push(m);
            }
            let last = batch.contains(&ToWorker::Shutdown);
            if protocol::send_all(&mut w, &batch).await.is_err() || last {
                break;
            }
        }
    });
    let why = loop {
        match tokio::time::timeout(heartbeat, protocol::recv::<_, ToEngine>(&mut r)).await {
            Ok(Ok(ToEngine::Done { id, outcome })) => {
                let mut st = shared.lock();
                if let Some(t) = st.tasks.remove(&id) {
                    st.workers[t.worker].used.sub(t.need);
                    st.done.insert(id, outcome.into());
                    st.dispatch();
                }
                drop(st);
                shared.notify.notify_one();
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => break e.to_string(),
            Err(_) => break format!("silent for {} s", heartbeat.as_secs_f64()),
        }
    };
    writer.abort();
    // Its tasks are lost with it: node failures, retried by the steps' `retry:`.
    let mut st = shared.lock();
    st.workers[index].alive = false;
    let gone: Vec<u64> = st.tasks.iter().filter(|(_, t)| t.worker == index).map(|(n, _)| *n).collect();
    for n in &gone {
        if let Some(t) = st.tasks.remove(n) {
            let lost = protocol::node_lost(Some(t.started)).with_detail(format!("lost node {node} ({why})"));
            st.done.insert(*n, lost);
        }
    }
    st.workers[index].used = Need::default();
    if st.workers.iter().any(|w| w.alive) {
        st.dispatch();
    } else {
        // No node left to run what waits: those tasks fail as the lost nodes' did.
        for q in std::mem::take(&mut st.queue) {
            st.done.insert(q.n, protocol::node_lost(None));
        }
    }
    if st.shutting_down && gone.is_empty() {
        tracing::debug!(%node, "worker exited: {why}");
    } else {
        tracing::warn!(%node, tasks = gone.len(), "lost the worker on {node} ({why}); its tasks fail as node failures");
        st.lost.push((node, why));
    }
    drop(st);
    shared.notify.notify_one();
}

/// How the engine starts its workers: one `srun` step over the allocation's nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerLaunch {
    /// The allocation's job id.
    pub job_id: String,
    /// Its nodes: one worker each.
    pub nodes: u32,
    /// The `twinflow` program.
    pub program: PathBuf,
    /// `host:port` of the engine.
    pub connect: String,
    /// The run's secret file.
    pub secret_file: PathBuf,
    /// Heartbeat.
    pub heartbeat: Duration,
    /// Grace period of the tasks.
    pub grace: Duration,
    /// The profile's site set-up, run before the worker (its tasks inherit it).
    pub prelude: Option<String>,
}

/// The `srun` that starts one worker per node. `--overlap`: the worker step shares the
/// allocation's CPUs and memory with every other step, so the `srun --exact` steps its
/// workers start for multi-rank tasks get them; `--mpi=none`: no PMI server the worker's
/// MPI tasks could mistake for theirs; `--no-kill`: a node that fails takes its worker with
/// it, not the whole step (with the others and their tasks), once SLURM sets the node DOWN.
pub fn worker_srun_argv(l: &WorkerLaunch) -> Vec<String> {
    let mut v = vec![
        "srun".to_string(),
        format!("--jobid={}", l.job_id),
        "--overlap".into(),
        format!("--nodes={}", l.nodes.max(1)),
        format!("--ntasks={}", l.nodes.max(1)),
        "--ntasks-per-node=1".into(),
        "--mpi=none".into(),
        "--no-kill".into(),
        "--kill-on-bad-exit=0".into(),
        "--job-name=twinflow-workers".into(),
    ];
    if let Some(p) = &l.prelude {
        v.extend(["bash".to_string(), "-c".into(), p.clone(), "twinflow-step".into()]);
    }
    v.extend([
        l.program.display().to_string(),
        "worker".into(),
        "--connect".into(),
        l.connect.clone(),
        "--secret-file".into(),
        l.secret_file.display().to_string(),
        "--heartbeat".into(),
        format!("{}ms", l.heartbeat.as_millis()),
        "--grace".into(),
        format!("{}", l.grace.as_secs_f64()),
    ]);
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::execute::batch::SlurmState;
    use crate::execute::pilot::worker::{self, WorkerError, WorkerOptions};
    use crate::execute::{Ending, Exit};
    use crate::model::Resources;
    use tokio::io::AsyncBufReadExt;

    const HEARTBEAT: Duration = Duration::from_secs(2);

    fn options(dir: &Path) -> PilotOptions {
        PilotOptions {
            bind: "127.0.0.1:0".parse().unwrap(),
            advertise: "127.0.0.1".into(),
            heartbeat: HEARTBEAT,
            secret_file: dir.join("run.secret"),
            cores: 4,
            memory: None,
            grace: Duration::from_millis(500),
            srun: None,
            mpiexec: Mpiexec::default(),
            connect_timeout: Duration::from_secs(10),
        }
    }

    fn job(dir: &Path, name: &str, script: &str, timeout: Option<Duration>) -> JobRequest {
        let cwd = dir.join(name);
        std::fs::create_dir_all(&cwd).unwrap();
        JobRequest {
            name: name.into(),
            argv: vec!["sh".into(), "-c".into(), script.into()],
            env: vec![("GREETING".into(), "hello".into())],
            stdout: cwd.join("stdout"),
            stderr: cwd.join("stderr"),
            cwd,
            resources: Resources::default(),
            timeout,
            array: None,
        }
    }

    /// A worker of this process for the backend `b`, with the run's secret file.
    fn spawn_worker(b: &PilotBackend, secret: &Path, node: &str) -> tokio::task::JoinHandle<Result<(), WorkerError>> {
        spawn_sized(b, secret, node, 2, None)
    }

    fn spawn_sized(
        b: &PilotBackend,
        secret: &Path,
        node: &str,
        cpus: u32,
        memory_mb: Option<u64>,
    ) -> tokio::task::JoinHandle<Result<(), WorkerError>> {
        let opts = WorkerOptions {
            connect: b.connect_address(),
            secret_file: secret.to_path_buf(),
            heartbeat: HEARTBEAT,
            grace: Duration::from_millis(500),
            node: node.into(),
            cpus,
            memory_mb,
            gpus: 0,
        };
        tokio::spawn(worker::run(opts))
    }

    async fn until_workers(b: &PilotBackend, n: usize) {
        let until = tokio::time::Instant::now() + Duration::from_secs(10);
        while b.workers() < n {
            assert!(tokio::time::Instant::now() < until, "{} of {n} workers connected", b.workers());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn status(b: &mut PilotBackend, id: &JobId) -> JobStatus {
        b.poll(std::slice::from_ref(id)).await.unwrap().remove(0).1
    }

    async fn outcome(b: &mut PilotBackend, id: &JobId) -> Outcome {
        let until = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let JobStatus::Done(o) = b.poll(std::slice::from_ref(id)).await.unwrap().remove(0).1 {
                return o;
            }
            assert!(tokio::time::Instant::now() < until, "{id} did not end");
            b.wait(Duration::from_millis(200)).await;
        }
    }

    /// Connects as a worker would and answers the challenge with `secret`; returns the
    /// engine's answer and the connection.
    async fn hello_with(addr: &str, secret: &str) -> (ToWorker, BufReader<tokio::net::tcp::OwnedReadHalf>) {
        let s = TcpStream::connect(addr).await.unwrap();
        let (r, mut w) = s.into_split();
        let mut r = BufReader::new(r);
        let ToWorker::Challenge { nonce } = protocol::recv(&mut r).await.unwrap() else { panic!("no challenge") };
        let hello = ToEngine::Hello {
            proof: protocol::proof(secret, &nonce),
            nonce: "n".into(),
            node: "rogue".into(),
            cpus: 64,
            memory_mb: None,
            gpus: 0,
            pid: 1,
        };
        protocol::send(&mut w, &hello).await.unwrap();
        let answer = protocol::recv(&mut r).await.unwrap();
        // Keep the write half open as long as the reader: the caller decides when to close.
        std::mem::forget(w);
        (answer, r)
    }

    #[tokio::test]
    async fn a_client_without_the_secret_is_refused_and_a_worker_with_it_runs_tasks() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = PilotBackend::listen(options(dir.path())).await.unwrap();
        let secret_file = dir.path().join("run.secret");
        let (answer, mut r) = hello_with(&b.connect_address(), "not the secret").await;
        assert_eq!(answer, ToWorker::Refused { reason: "wrong secret".into() });
        let mut rest = String::new();
        assert_eq!(r.read_line(&mut rest).await.unwrap(), 0, "the connection stays open: {rest}");
        assert_eq!((b.refused(), b.workers()), (1, 0));

        let w = spawn_worker(&b, &secret_file, "n1");
        let id =
            b.submit(job(dir.path(), "greet", "echo \"$GREETING from $$\" > out.txt; exit 3", None)).await.unwrap();
        assert_eq!(b.node_of(&id).as_deref(), Some("n1"));
        let o = outcome(&mut b, &id).await;
        assert_eq!(o.ending, Ending::Exited(3));
        assert!(o.started.is_some() && o.finished >= o.started, "{o:?}");
        let text = std::fs::read_to_string(dir.path().join("greet/out.txt")).unwrap();
        assert!(text.starts_with("hello from "), "{text}");
        // A program that does not exist fails as on the local backend.
        let mut missing = job(dir.path(), "missing", "", None);
        missing.argv = vec!["/no/such/program".into()];
        let id = b.submit(missing).await.unwrap();
        assert_eq!(
            outcome(&mut b, &id).await.ending,
            Ending::SpawnFailed(crate::execute::SpawnFailure::NotFound { program: "/no/such/program".into() })
        );
        b.shutdown().await;
        let r = tokio::time::timeout(Duration::from_secs(5), w).await.expect("the worker did not exit").unwrap();
        assert!(r.is_ok(), "{r:?}");
        assert!(!secret_file.exists(), "the secret outlived the run");
        assert!(b.lost().is_empty(), "{:?}", b.lost());
    }

    #[tokio::test]
    async fn a_worker_refuses_an_engine_that_does_not_know_the_secret() {
        let dir = tempfile::tempdir().unwrap();
        protocol::write_secret(&dir.path().join("s")).unwrap();
        // A fake engine: challenges, accepts any answer, but cannot prove itself.
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let (s, _) = l.accept().await.unwrap();
            let (r, mut w) = s.into_split();
            let mut r = BufReader::new(r);
            protocol::send(&mut w, &ToWorker::Challenge { nonce: "x".into() }).await.unwrap();
            let _: ToEngine = protocol::recv(&mut r).await.unwrap();
            protocol::send(&mut w, &ToWorker::Welcome { proof: "00".repeat(32), heartbeat_ms: 1000 }).await.unwrap();
            tokio::time::sleep(Duration::from_secs(5)).await;
        });
        let opts = WorkerOptions {
            connect: addr,
            secret_file: dir.path().join("s"),
            heartbeat: HEARTBEAT,
            grace: Duration::from_millis(100),
            node: "n".into(),
            cpus: 1,
            memory_mb: None,
            gpus: 0,
        };
        let e = worker::run(opts).await.unwrap_err();
        assert!(matches!(&e, WorkerError::Refused(m) if m.contains("does not know the run's secret")), "{e}");
    }

    #[tokio::test]
    async fn timeouts_and_cancellation_stop_the_whole_process_group_on_the_worker() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = PilotBackend::listen(options(dir.path())).await.unwrap();
        let _w = spawn_worker(&b, &dir.path().join("run.secret"), "n1");
        // The child of the shell writes its pid; it must die with the group.
        let script = "sleep 60 & echo $! > child.pid; wait";
        let slow = b.submit(job(dir.path(), "slow", script, Some(Duration::from_millis(500)))).await.unwrap();
        let cancelled = b.submit(job(dir.path(), "cancelled", script, None)).await.unwrap();
        let pid_file = dir.path().join("cancelled/child.pid");
        let until = tokio::time::Instant::now() + Duration::from_secs(10);
        while !pid_file.exists() || std::fs::read_to_string(&pid_file).unwrap().trim().is_empty() {
            assert!(tokio::time::Instant::now() < until, "the task did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        b.cancel(std::slice::from_ref(&cancelled)).await.unwrap();
        assert!(matches!(outcome(&mut b, &cancelled).await.ending, Ending::Cancelled(Some(Exit::Signal(15)))));
        assert!(matches!(outcome(&mut b, &slow).await.ending, Ending::TimedOut(_)));
        for t in ["slow", "cancelled"] {
            let pid: i32 =
                std::fs::read_to_string(dir.path().join(t).join("child.pid")).unwrap().trim().parse().unwrap();
            let gone = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_err()
                || std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.contains(") Z "));
            assert!(gone, "{t}: the task's child {pid} outlived it");
        }
        b.shutdown().await;
    }

    #[tokio::test]
    async fn a_lost_worker_fails_its_tasks_as_node_failures_and_the_others_go_on() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = PilotBackend::listen(options(dir.path())).await.unwrap();
        let secret = protocol::read_secret(&dir.path().join("run.secret")).unwrap();
        // A worker that takes a task and then vanishes.
        let (answer, mut r) = hello_with(&b.connect_address(), &secret).await;
        assert!(matches!(answer, ToWorker::Welcome { .. }), "{answer:?}");
        let doomed = b.submit(job(dir.path(), "doomed", "sleep 60", None)).await.unwrap();
        assert_eq!(b.node_of(&doomed).as_deref(), Some("rogue"));
        let start: ToWorker = protocol::recv(&mut r).await.unwrap();
        assert!(matches!(&start, ToWorker::Start(t) if t.name == "doomed"), "{start:?}");
        let real = spawn_worker(&b, &dir.path().join("run.secret"), "n2");
        drop(r);
        let o = outcome(&mut b, &doomed).await;
        assert_eq!(o.ending, Ending::BatchFailure { state: SlurmState::NodeFail, exit: None });
        // Its message names the node lost, and how (its connection fell silent here).
        assert_eq!(o.describe(), "a node of the job failed (SLURM NODE_FAIL): lost node rogue (silent for 2 s)");
        assert_eq!(b.lost().len(), 1, "{:?}", b.lost());
        assert_eq!(b.lost()[0].0, "rogue");
        // The retry goes to the worker that is left.
        until_workers(&b, 1).await;
        let again = b.submit(job(dir.path(), "again", "true", None)).await.unwrap();
        assert_eq!(b.node_of(&again).as_deref(), Some("n2"));
        assert_eq!(outcome(&mut b, &again).await.ending, Ending::Exited(0));
        b.shutdown().await;
        assert!(real.await.unwrap().is_ok());
    }

    #[tokio::test]
    async fn a_worker_whose_engine_falls_silent_stops_its_tasks_and_exits() {
        let dir = tempfile::tempdir().unwrap();
        let secret_file = dir.path().join("s");
        let secret = protocol::write_secret(&secret_file).unwrap();
        let task = job(dir.path(), "orphan", "echo $$ > pid; exec sleep 60", None);
        let pid_file = task.cwd.join("pid");
        // An engine that starts one task and then says nothing, with the connection open.
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let engine = tokio::spawn(async move {
            let (s, _) = l.accept().await.unwrap();
            let (r, mut w) = s.into_split();
            let mut r = BufReader::new(r);
            protocol::send(&mut w, &ToWorker::Challenge { nonce: "c".into() }).await.unwrap();
            let ToEngine::Hello { proof, nonce, .. } = protocol::recv(&mut r).await.unwrap() else { panic!() };
            assert!(protocol::verify(&secret, "c", &proof));
            let welcome = ToWorker::Welcome { proof: protocol::proof(&secret, &nonce), heartbeat_ms: 1000 };
            protocol::send(&mut w, &welcome).await.unwrap();
            let start = StartTask {
                id: 1,
                name: task.name,
                argv: task.argv,
                env: vec![],
                cwd: task.cwd,
                stdout: task.stdout,
                stderr: task.stderr,
                timeout_ms: None,
            };
            protocol::send(&mut w, &ToWorker::Start(Box::new(start))).await.unwrap();
            tokio::time::sleep(Duration::from_secs(30)).await;
            drop((r, w));
        });
        let opts = WorkerOptions {
            connect: addr,
            secret_file,
            heartbeat: Duration::from_secs(1),
            grace: Duration::from_millis(200),
            node: "n".into(),
            cpus: 1,
            memory_mb: None,
            gpus: 0,
        };
        let t0 = std::time::Instant::now();
        let e = tokio::time::timeout(Duration::from_secs(10), worker::run(opts)).await.expect("worker still runs");
        assert!(matches!(&e, Err(WorkerError::EngineLost(m)) if m.contains("silent")), "{e:?}");
        assert!(t0.elapsed() >= Duration::from_secs(1), "gave up after {:?}", t0.elapsed());
        let pid: i32 = std::fs::read_to_string(&pid_file).unwrap().trim().parse().unwrap();
        assert!(
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_err(),
            "task {pid} outlived the worker"
        );
        engine.abort();
    }

    #[tokio::test]
    async fn tasks_are_packed_by_the_cores_and_memory_of_each_node() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("run.secret");
        let mut b = PilotBackend::listen(options(dir.path())).await.unwrap();
        let _w1 = spawn_sized(&b, &secret, "n1", 2, None);
        let _w2 = spawn_sized(&b, &secret, "n2", 2, Some(1000));
        until_workers(&b, 2).await;
        let wide = |name: &str, threads: u32, memory: u64| {
            let mut j = job(dir.path(), name, &format!("while [ ! -e ../release-{name} ]; do sleep 0.02; done"), None);
            j.resources.threads = threads;
            j.resources.memory = memory;
            j
        };
        // Two 2-core tasks fill both nodes; a 1-core task waits: no node has a free core.
        let a = b.submit(wide("a", 2, 0)).await.unwrap();
        let bb = b.submit(wide("b", 2, 0)).await.unwrap();
        let mut nodes = vec![b.node_of(&a).unwrap(), b.node_of(&bb).unwrap()];
        nodes.sort();
        assert_eq!(nodes, ["n1", "n2"]);
        let c = b.submit(wide("c", 1, 0)).await.unwrap();
        let cancelled = b.submit(wide("x", 1, 0)).await.unwrap();
        assert_eq!(status(&mut b, &c).await, JobStatus::Queued);
        assert_eq!(b.node_of(&c), None);
        // A waiting task is cancelled where it waits.
        b.cancel(std::slice::from_ref(&cancelled)).await.unwrap();
        assert!(matches!(outcome(&mut b, &cancelled).await.ending, Ending::Cancelled(None)));
        // `a` ends: `c` goes to its node.
        let a_node = b.node_of(&a).unwrap();
        std::fs::write(dir.path().join("release-a"), "").unwrap();
        assert_eq!(outcome(&mut b, &a).await.ending, Ending::Exited(0));
        assert_eq!(b.node_of(&c), Some(a_node));
        for t in ["b", "c"] {
            std::fs::write(dir.path().join(format!("release-{t}")), "").unwrap();
        }
        assert_eq!(outcome(&mut b, &bb).await.ending, Ending::Exited(0));
        assert_eq!(outcome(&mut b, &c).await.ending, Ending::Exited(0));
        // Memory: n2 has 1000 MiB, n1 no limit. Two tasks of 800 MiB cannot share n2; the
        // third goes where there is room.
        let m1 = b.submit(wide("m1", 1, 800 << 20)).await.unwrap();
        let m2 = b.submit(wide("m2", 1, 800 << 20)).await.unwrap();
        let mut placed = vec![b.node_of(&m1).unwrap(), b.node_of(&m2).unwrap()];
        placed.sort();
        assert_eq!(placed, ["n1", "n2"], "both on n2 would take 1600 of its 1000 MiB");
        let m3 = b.submit(wide("m3", 1, 800 << 20)).await.unwrap();
        assert_eq!(b.node_of(&m3).as_deref(), Some("n1"), "n2 has 200 MiB left, n1 a free core");
        for t in ["m1", "m2", "m3"] {
            std::fs::write(dir.path().join(format!("release-{t}")), "").unwrap();
        }
        for id in [&m1, &m2, &m3] {
            assert_eq!(outcome(&mut b, id).await.ending, Ending::Exited(0));
        }
        b.shutdown().await;
    }

    #[test]
    fn workers_start_with_one_srun_that_overlaps_the_tasks_steps() {
        let l = WorkerLaunch {
            job_id: "42".into(),
            nodes: 3,
            program: "/opt/tf/bin/twinflow".into(),
            connect: "login1:4000".into(),
            secret_file: "/runs/allocations/pilot-42-9.secret".into(),
            heartbeat: Duration::from_secs(30),
            grace: Duration::from_millis(2500),
            prelude: None,
        };
        assert_eq!(
            worker_srun_argv(&l).join(" "),
            "srun --jobid=42 --overlap --nodes=3 --ntasks=3 --ntasks-per-node=1 --mpi=none --no-kill --kill-on-bad-exit=0 --job-name=twinflow-workers /opt/tf/bin/twinflow worker --connect login1:4000 --secret-file /runs/allocations/pilot-42-9.secret --heartbeat 30000ms --grace 2.5"
        );
        let with = worker_srun_argv(&WorkerLaunch { prelude: Some("module load x\nexec \"$@\"\n".into()), ..l });
        let at = with.iter().position(|w| w == "bash").unwrap();
        assert_eq!(with[at + 3..at + 5], ["twinflow-step", "/opt/tf/bin/twinflow"]);
    }

    #[test]
    fn only_multi_rank_steps_get_a_launcher() {
        let dir = tempfile::tempdir().unwrap();
        let mut o = options(dir.path());
        let mut j = job(dir.path(), "m", "true", None);
        assert_eq!(render_argv(&o, &j), ["sh", "-c", "true"]);
        j.resources.ranks = 2;
        assert_eq!(render_argv(&o, &j)[..3], ["mpiexec", "-n", "2"]);
        o.srun = Some(SrunLaunch {
            job_id: "7".into(),
            mpi: Some("pmi2".into()),
            flags: vec![],
            mem_per_cpu_mb: None,
            prelude: None,
        });
        let v = render_argv(&o, &j);
        assert_eq!(v[..3], ["srun", "--jobid=7", "--exact"]);
        assert!(
            v.contains(&"--mpi=pmi2".to_string()) && v.ends_with(&["sh".into(), "-c".into(), "true".into()]),
            "{v:?}"
        );
    }
}
