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

use super::packing::{self, Need, Packer, Room};
use super::protocol::{self, FinishedTask, RunningTask, StartTask, ToEngine, ToWorker, WireNeed};
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
    /// Keep the secret file of an earlier engine of the run when there is one (its workers
    /// may be alive and dialling in with it: `run --resume`); what they report is then kept
    /// for [`Backend::recover`] to adopt.
    pub reuse_secret: bool,
    /// Where the engine writes its `host:port` for workers that lost it to read.
    pub address_file: Option<PathBuf>,
    /// Cores the scheduler may fill (the allocation's CPUs).
    pub cores: u32,
    /// Memory the scheduler may fill, in bytes.
    pub memory: Option<u64>,
    /// Grace period between SIGTERM and SIGKILL (applied by the workers).
    pub grace: Duration,
    /// How workers start multi-rank steps.
    pub launch: MpiLaunch,
    /// How long a submission waits for a first worker before the run stops.
    pub connect_timeout: Duration,
}

/// How a worker starts a step of more than one rank (see [`render_argv`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MpiLaunch {
    /// `srun --exact` into the allocation (MPI across nodes needs SLURM's launcher), when
    /// there is an allocation and the profile's `pilot.mpi_launcher` is `srun`.
    pub srun: Option<SrunLaunch>,
    /// Otherwise this `mpiexec`: on the worker's node, or over the workers' nodes for a
    /// step that does not fit on one.
    pub mpiexec: Mpiexec,
}

/// What the worker of a task runs: the step's argv, with `srun --exact` (or `mpiexec -n R`)
/// in front for a step of more than one rank. One-rank steps are forked by the worker
/// itself: no `srun`, no controller RPC per task. `hosts`: for `mpiexec`, the nodes a step
/// that spans nodes runs on (empty: the worker's own node).
pub fn render_argv(launch: &MpiLaunch, job: &JobRequest, hosts: &[String]) -> Vec<String> {
    if job.resources.ranks <= 1 && job.resources.nodes <= 1 {
        return job.argv.clone();
    }
    if let Some(l) = &launch.srun {
        let mut v = srun_argv(l, job);
        if !hosts.is_empty() {
            // Placed on these nodes by the packer: SLURM puts the ranks there, and the
            // node count is theirs (`--nodes` comes before, the job's argv after).
            let at = v.iter().position(|w| w.starts_with("--nodes=")).map_or(1, |i| i + 1);
            v[at - 1] = format!("--nodes={}", hosts.len());
            v.insert(at, format!("--nodelist={}", hosts.join(",")));
        }
        return v;
    }
    let mut v = launch.mpiexec.prefix_on(job.resources.ranks, hosts);
    v.extend(job.argv.iter().cloned());
    v
}

/// The environment of a task: its own, with the `mpiexec` launcher's for multi-rank steps
/// launched without `srun`.
fn task_env(launch: &MpiLaunch, job: &JobRequest) -> Vec<(String, String)> {
    if job.resources.ranks > 1 && launch.srun.is_none() {
        launch.mpiexec.env.iter().chain(job.env.iter()).cloned().collect()
    } else {
        job.env.clone()
    }
}

impl From<Need> for WireNeed {
    fn from(n: Need) -> Self {
        WireNeed { cores: n.cores, memory_mb: n.memory_mb, gpus: n.gpus }
    }
}

impl From<WireNeed> for Need {
    fn from(n: WireNeed) -> Self {
        Need { cores: n.cores, memory_mb: n.memory_mb, gpus: n.gpus }
    }
}

/// A connected worker.
struct Worker {
    node: String,
    tx: mpsc::UnboundedSender<ToWorker>,
    alive: bool,
}

/// A task a worker runs.
struct Task {
    worker: usize,
    /// The other nodes of a task spanning nodes (`need` taken on each).
    others: Vec<usize>,
    need: Need,
    started: SystemTime,
}

/// A task waiting for room on a node (in the [`Packer`]).
struct Queued {
    start: StartTask,
    /// For a multi-rank step: its argv given the hosts it runs on (the nodes the packer
    /// lays it over, or for a spread step under `mpiexec` the workers' nodes), known when
    /// it starts.
    on_hosts: Option<HostsArgv>,
}

/// What renders a task's argv once the hosts it spans are known ([`render_argv`]).
struct HostsArgv {
    launch: MpiLaunch,
    job: JobRequest,
}

#[derive(Default)]
struct State {
    workers: Vec<Worker>,
    /// The workers' nodes (same indices) and the tasks submitted that no node has room for
    /// yet.
    packer: Packer<Queued>,
    tasks: HashMap<u64, Task>,
    done: HashMap<u64, Outcome>,
    /// Connections refused (wrong secret or protocol).
    refused: u32,
    /// Workers lost, by node, with why.
    lost: Vec<(String, String)>,
    /// The engine told the workers to exit: disconnections are expected.
    shutting_down: bool,
    /// Until `recover` (a resumed run): what reconnecting workers report of the tasks a
    /// killed engine gave them is kept for it; otherwise their tasks are stopped.
    adopting: bool,
    /// Tasks reconnecting workers run (worker index, task).
    reported: Vec<(usize, RunningTask)>,
    /// Tasks that ended while their workers had no engine.
    reported_done: Vec<FinishedTask>,
    /// The highest task id a worker was given by any engine.
    last_id: u64,
}

struct Shared {
    state: Mutex<State>,
    notify: Notify,
}

impl State {
    /// The nodes of live workers, the one with the most free cores first, each once;
    /// `nodes` of them (0 or 1: all).
    fn hosts(&self, nodes: u32) -> Vec<String> {
        let free = |i: usize| self.packer.room(i).map_or(0, |r| r.cpus).saturating_sub(self.packer.used(i).cores);
        let mut live: Vec<(usize, &Worker)> = self.workers.iter().enumerate().filter(|(_, w)| w.alive).collect();
        live.sort_by_key(|(i, _)| std::cmp::Reverse(free(*i)));
        let mut out: Vec<String> = vec![];
        for (_, w) in live {
            if !out.contains(&w.node) {
                out.push(w.node.clone());
            }
        }
        if nodes > 1 {
            out.truncate(nodes as usize);
        }
        out
    }

    /// Starts every waiting task that fits on a node, as [`Packer::dispatch`] places it.
    fn dispatch(&mut self) {
        for p in self.packer.dispatch() {
            let Queued { mut start, on_hosts } = p.item;
            if let Some(h) = on_hosts {
                let placed = p.need != Need::default();
                if placed && (h.launch.srun.is_some() || !p.others.is_empty()) {
                    // Placed on its node(s) by the packer: launched on exactly those
                    // (`srun --nodelist`, or `mpiexec` with them as hosts across nodes).
                    let hosts: Vec<String> = std::iter::once(p.node)
                        .chain(p.others.iter().copied())
                        .map(|i| self.workers[i].node.clone())
                        .collect();
                    start.argv = render_argv(&h.launch, &h.job, &hosts);
                } else if !placed && h.launch.srun.is_none() {
                    // Spread under `mpiexec` (it takes nothing on the node): the workers'
                    // nodes (on one node, the worker's own launcher needs no host list).
                    start.argv = render_argv(&h.launch, &h.job, &self.hosts(h.job.resources.nodes));
                }
            }
            let started = SystemTime::now();
            if self.workers[p.node].tx.send(ToWorker::Start(Box::new(start))).is_err() {
                // Its connection just closed: the node is being lost; retried as such.
                self.packer.release(p.node, p.need);
                for &o in &p.others {
                    self.packer.release(o, p.need);
                }
                self.done.insert(p.key, protocol::node_lost(Some(started)));
            } else {
                self.tasks.insert(p.key, Task { worker: p.node, others: p.others, need: p.need, started });
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
    /// The processes that started the workers (one `srun`, or the local workers), when
    /// this backend started them: pid and where its reaper reports how it ended.
    launchers: Vec<(u32, process::Reaping)>,
    launcher_log: Option<PathBuf>,
    /// A resumed run: the workers of the killed engine expected to dial in.
    expect: Option<Expect>,
    accept: tokio::task::JoinHandle<()>,
}

/// Workers of a killed engine expected to dial in (see [`PilotBackend::expect_workers`]).
struct Expect {
    workers: usize,
    until: tokio::time::Instant,
    /// Started when none of them comes: the argv of each launcher, and their log.
    fallback: Fallback,
}

/// What starts workers when none of a killed engine's dial in: the argv of each launcher,
/// their log, and what to tell of the launchers' pids once they run (the session records
/// them for the next `run --resume`).
pub struct Fallback {
    /// One argv per launcher.
    pub argvs: Vec<Vec<String>>,
    /// Their output.
    pub log: PathBuf,
    /// Called with the pids of the launchers started.
    pub started: Started,
}

/// See [`Fallback::started`].
pub type Started = Box<dyn FnOnce(&[u32]) + Send>;

impl PilotBackend {
    /// Writes the secret file (or keeps an earlier engine's, see
    /// [`PilotOptions::reuse_secret`]), listens, writes the address file, and accepts
    /// workers from now on.
    pub async fn listen(opts: PilotOptions) -> Result<Self, BackendError> {
        let err = |m: String| BackendError::Submit { name: "twinflow worker".into(), message: m };
        let kept = if opts.reuse_secret { protocol::read_secret(&opts.secret_file).ok() } else { None };
        // Workers of an earlier engine may dial in as soon as the listener is up: what they
        // report is kept for `recover` from the first one on.
        let adopting = kept.is_some();
        let secret = match kept {
            Some(s) => s,
            None => {
                // A file of an earlier engine: its secret is not this engine's.
                let _ = std::fs::remove_file(&opts.secret_file);
                protocol::write_secret(&opts.secret_file)
                    .map_err(|e| err(format!("cannot create the secret file `{}`: {e}", opts.secret_file.display())))?
            }
        };
        let listener =
            TcpListener::bind(opts.bind).await.map_err(|e| err(format!("cannot listen on {}: {e}", opts.bind)))?;
        let addr = listener.local_addr().map_err(|e| err(e.to_string()))?;
        let state = State { adopting, ..State::default() };
        let shared = Arc::new(Shared { state: Mutex::new(state), notify: Notify::new() });
        let accept = tokio::spawn(accept_loop(listener, shared.clone(), secret, opts.heartbeat));
        tracing::info!(%addr, "listening for twinflow workers");
        let b = Self {
            opts,
            shared,
            addr,
            next: 0,
            ids: HashMap::new(),
            launchers: vec![],
            launcher_log: None,
            expect: None,
            accept,
        };
        if let Some(f) = &b.opts.address_file {
            write_atomically(f, &b.connect_address())
                .map_err(|e| err(format!("cannot write the address file `{}`: {e}", f.display())))?;
        }
        Ok(b)
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
        self.launch_all(std::slice::from_ref(&argv.to_vec()), log)
    }

    /// Starts one process per argv (one `srun`, or each local worker), each in its own
    /// process group, their output in `log`.
    pub fn launch_all(&mut self, argvs: &[Vec<String>], log: &Path) -> Result<(), BackendError> {
        for argv in argvs {
            let child = process::spawn(argv, &[], Path::new("."), log, log).map_err(|e| BackendError::Submit {
                name: "twinflow worker".into(),
                message: format!("cannot start `{}`: {e}", argv.first().map_or("", String::as_str)),
            })?;
            tracing::info!(argv = ?argv, "started workers");
            self.launchers.push((child.id(), process::reap(child)));
        }
        self.launcher_log = Some(log.to_path_buf());
        Ok(())
    }

    /// The pids of the processes that started the workers.
    pub fn launcher_pids(&self) -> Vec<u32> {
        self.launchers.iter().map(|(p, _)| *p).collect()
    }

    /// A resumed run whose killed engine's workers may be alive: wait for `workers` of them
    /// to dial in (up to `patience`) before following or starting anything, and keep what
    /// they report for [`Backend::recover`] to adopt; start workers with `fallback` (as
    /// [`PilotBackend::launch_all`]) if none comes.
    pub fn expect_workers(&mut self, workers: usize, patience: Duration, fallback: Fallback) {
        self.shared.lock().adopting = true;
        self.expect = Some(Expect { workers, until: tokio::time::Instant::now() + patience, fallback });
    }

    /// Waits for the workers [`PilotBackend::expect_workers`] expects, and starts new ones
    /// if none came.
    async fn settle(&mut self) -> Result<(), BackendError> {
        let Some(e) = self.expect.take() else { return Ok(()) };
        loop {
            let alive = self.workers();
            if alive >= e.workers || tokio::time::Instant::now() >= e.until {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let alive = self.workers();
        if alive == 0 {
            tracing::info!("no worker of the previous engine dialled in: starting new ones");
            let f = e.fallback;
            self.launch_all(&f.argvs, &f.log)?;
            (f.started)(&self.launcher_pids());
        } else {
            tracing::info!(alive, expected = e.workers, "workers of the previous engine dialled in");
        }
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
        self.settle().await.map_err(|e| e.to_string())?;
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
            if !self.launchers.is_empty() {
                let mut ended = vec![];
                for (_, r) in &mut self.launchers {
                    match r.try_recv() {
                        Ok(x) => ended.push(x.map_or_else(|e| e.to_string(), |x| x.status.to_string())),
                        Err(tokio::sync::oneshot::error::TryRecvError::Closed) => ended.push("gone".into()),
                        Err(tokio::sync::oneshot::error::TryRecvError::Empty) => {}
                    }
                }
                if ended.len() == self.launchers.len() {
                    // Reaped: nothing left to wait for at shutdown.
                    self.launchers.clear();
                    return Err(format!(
                        "the workers' launcher ended ({}) before any worker connected; see {}",
                        ended.join(", "),
                        self.launcher_log.as_ref().map_or("its output".into(), |p| format!("`{}`", p.display()))
                    ));
                }
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
        } else if st.packer.remove(n).is_some() {
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

/// Writes `text` to `path` through a temporary file renamed over it, so a reader never sees
/// half of it.
fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

/// Whether two attempt directories are the same (as written, or once resolved).
fn same_dir(a: &Path, b: &Path) -> bool {
    a == b || matches!((std::fs::canonicalize(a), std::fs::canonicalize(b)), (Ok(x), Ok(y)) if x == y)
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
        Rendered::Argv(render_argv(&self.opts.launch, job, &[]))
    }

    fn runs_services(&self) -> bool {
        true
    }

    async fn submit(&mut self, job: JobRequest) -> Result<JobId, BackendError> {
        self.a_worker().await.map_err(|message| BackendError::Submit { name: job.name.clone(), message })?;
        let need = Need::of(&job);
        let mut st = self.shared.lock();
        // A step asking for several nodes, or larger than the largest node, is laid over
        // nodes with an even share on each (`span_of`), reserved there like any task, when
        // enough nodes are connected; otherwise it is spread: `srun`/`mpiexec` places it
        // and nothing is reserved.
        let live = st.workers.iter().enumerate().filter(|(_, w)| w.alive).map(|(i, _)| i);
        let (alive, largest) =
            live.fold((0u32, 0u32), |(n, c), i| (n + 1, c.max(st.packer.room(i).map_or(0, |r| r.cpus))));
        let across = job.resources.nodes > 1 || need.cores > largest;
        let (share, width) = packing::span_of(need, job.resources.nodes, largest);
        let span = across && job.resources.ranks > 1 && width <= alive && largest > 0;
        let spread = across && !span;
        // Above every id a worker was given, by this engine or a killed one.
        self.next = self.next.max(st.last_id) + 1;
        let n = self.next;
        // A multi-rank step launched with `mpiexec` that may span nodes gets its host list
        // when it starts (on one node: that node's worker runs it, no host list).
        let on_hosts =
            (job.resources.ranks > 1).then(|| HostsArgv { launch: self.opts.launch.clone(), job: job.clone() });
        let start = StartTask {
            id: n,
            name: job.name.clone(),
            argv: render_argv(&self.opts.launch, &job, &[]),
            env: task_env(&self.opts.launch, &job),
            cwd: job.cwd,
            stdout: job.stdout,
            stderr: job.stderr,
            timeout_ms: job.timeout.map(|t| t.as_millis() as u64),
            need: need.into(),
        };
        if span {
            st.packer.push_span(n, share, width, Queued { start, on_hosts });
        } else {
            st.packer.push(n, need, spread, Queued { start, on_hosts });
        }
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
                    None if st.packer.is_waiting(n) => (id.clone(), JobStatus::Queued),
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
        // The workers of the killed engine that are still alive dial in (or new ones start).
        self.settle().await?;
        let mut st = self.shared.lock();
        st.adopting = false;
        let mut running = std::mem::take(&mut st.reported);
        let mut finished = std::mem::take(&mut st.reported_done);
        self.next = self.next.max(st.last_id);
        let mut out = vec![None; leftovers.len()];
        let mut kept_pids = vec![];
        for (l, slot) in leftovers.iter().zip(out.iter_mut()) {
            // The recorded attempt, or the next one (started by the killed engine just
            // before it died, before the database recorded it).
            for attempt in [l.attempts + 1, l.attempts].into_iter().filter(|a| *a > 0) {
                let dir = l.task_dir.join(format!("attempt-{attempt}"));
                let recorded = attempt == l.attempts;
                if let Some(i) = finished.iter().position(|f| same_dir(&f.cwd, &dir)) {
                    let f = finished.swap_remove(i);
                    tracing::info!(task = %l.task, attempt, "adopting the outcome of a task that ended while no engine ran");
                    st.done.insert(f.id, f.outcome.into());
                    let job = JobId(format!("pilot-{}", f.id));
                    self.ids.insert(job.clone(), f.id);
                    *slot = Some(Adopted { attempt, job, dir, recorded });
                    break;
                }
                if let Some(i) = running.iter().position(|(_, t)| same_dir(&t.cwd, &dir)) {
                    let (w, t) = running.swap_remove(i);
                    tracing::info!(task = %l.task, attempt, node = %st.workers[w].node, "adopting a running task");
                    let need = Need::from(t.need);
                    st.packer.take(w, need);
                    let started =
                        t.started_ms.map_or_else(SystemTime::now, |m| std::time::UNIX_EPOCH + Duration::from_millis(m));
                    st.tasks.insert(t.id, Task { worker: w, others: vec![], need, started });
                    kept_pids.extend(t.pid);
                    let job = JobId(format!("pilot-{}", t.id));
                    self.ids.insert(job.clone(), t.id);
                    *slot = Some(Adopted { attempt, job, dir, recorded });
                    break;
                }
            }
        }
        // What no leftover claims (a task the database has as finished, or an attempt
        // already superseded) is stopped, so no task runs twice.
        for (w, t) in &running {
            tracing::warn!(node = %st.workers[*w].node, dir = %t.cwd.display(), "stopping a task of the previous engine that no task of the run claims");
            let _ = st.workers[*w].tx.send(ToWorker::Kill { id: t.id });
        }
        for f in &finished {
            tracing::debug!(dir = %f.cwd.display(), "dropping an outcome no task of the run claims");
        }
        drop(st);
        self.shared.notify.notify_one();
        // Steps of the run left on this node by workers that are gone (a worker killed
        // with -9 leaves its tasks' process groups) are stopped, as the local backend does.
        for pgid in process::groups_with_env(twinflow_contract::env::RUN_ID, run_id) {
            if pgid != std::process::id() && !kept_pids.contains(&pgid) {
                process::signal_group(pgid, nix::sys::signal::Signal::SIGKILL);
            }
        }
        Ok(out)
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
        // Until they hang up: an engine that exited with the message still queued would
        // leave them dialling for a heartbeat (and their tasks running) before they exit.
        let until = tokio::time::Instant::now() + Duration::from_secs(10);
        while self.workers() > 0 && tokio::time::Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for (pid, mut c) in std::mem::take(&mut self.launchers) {
            // The workers exit on `Shutdown` and their `srun` with them; stop it if not.
            if tokio::time::timeout(Duration::from_secs(10), process::wait(&mut c)).await.is_err() {
                tracing::warn!("the workers' launcher did not end after shutdown; stopping it");
                let (_tx, rx) = tokio::sync::watch::channel(process::TERMINATE);
                let _ = process::terminate(&mut c, pid, self.opts.grace, rx).await;
            }
        }
        self.accept.abort();
        let _ = std::fs::remove_file(&self.opts.secret_file);
        if let Some(f) = &self.opts.address_file {
            let _ = std::fs::remove_file(f);
        }
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
    let (node, cpus, memory_mb, gpus, theirs, last_id, running, finished) = match hello {
        Ok(Ok(ToEngine::Hello {
            proof,
            nonce: theirs,
            node,
            cpus,
            memory_mb,
            gpus,
            pid,
            last_id,
            running,
            finished,
        })) if protocol::verify(&secret, &nonce, &proof) => {
            tracing::info!(%peer, %node, cpus, memory_mb, gpus, pid, running = running.len(), "worker connected");
            (node, cpus, memory_mb, gpus, theirs, last_id, running, finished)
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
        st.workers.push(Worker { node: node.clone(), tx, alive: true });
        let index = st.packer.add_node(Room { cpus, memory_mb, gpus });
        st.last_id = st.last_id.max(last_id);
        if st.adopting {
            // Kept for `recover`, which adopts what the run's leftovers claim.
            st.reported.extend(running.into_iter().map(|t| (index, t)));
            st.reported_done.extend(finished);
        } else {
            // Tasks of an engine this one does not continue, or that this engine already
            // gave up as lost with their node: they must not run twice.
            for t in running {
                tracing::warn!(%node, dir = %t.cwd.display(), "stopping a task this engine does not follow");
                let _ = st.workers[index].tx.send(ToWorker::Kill { id: t.id });
            }
        }
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
                    st.packer.release(t.worker, t.need);
                    for &o in &t.others {
                        st.packer.release(o, t.need);
                    }
                    st.done.insert(id, outcome.into());
                    st.dispatch();
                } else if let Some(i) = st.reported.iter().position(|(w, t)| *w == index && t.id == id) {
                    // A task `recover` has yet to adopt ended: it adopts the outcome.
                    let (_, t) = st.reported.swap_remove(i);
                    st.reported_done.push(FinishedTask { id, cwd: t.cwd, outcome });
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
    // Tasks it reported for adoption are lost with it.
    st.reported.retain(|(w, _)| *w != index);
    let gone: Vec<u64> = st.tasks.iter().filter(|(_, t)| t.worker == index).map(|(n, _)| *n).collect();
    for n in &gone {
        if let Some(t) = st.tasks.remove(n) {
            let lost = protocol::node_lost(Some(t.started)).with_detail(format!("lost node {node} ({why})"));
            st.done.insert(*n, lost);
        }
    }
    st.packer.lose_node(index);
    if st.workers.iter().any(|w| w.alive) {
        st.dispatch();
    } else {
        // No node left to run what waits: those tasks fail as the lost nodes' did.
        for (n, _) in st.packer.drain() {
            st.done.insert(n, protocol::node_lost(None));
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
    /// Where a resumed engine writes its `host:port` (read by workers that lost theirs).
    pub address_file: Option<PathBuf>,
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
    v.extend(worker_argv(l));
    v
}

/// `twinflow worker --connect ... --secret-file ...` as [`WorkerLaunch`] says.
fn worker_argv(l: &WorkerLaunch) -> Vec<String> {
    let mut v = vec![l.program.display().to_string(), "worker".into(), "--connect".into(), l.connect.clone()];
    if let Some(f) = &l.address_file {
        v.extend(["--address-file".to_string(), f.display().to_string()]);
    }
    v.extend([
        "--secret-file".into(),
        l.secret_file.display().to_string(),
        "--heartbeat".into(),
        format!("{}ms", l.heartbeat.as_millis()),
        "--grace".into(),
        format!("{}", l.grace.as_secs_f64()),
    ]);
    v
}

/// A worker on this machine (`pilot.launch: local`), offering `cpus` of its cores.
pub fn local_worker_argv(l: &WorkerLaunch, cpus: u32) -> Vec<String> {
    let mut v = worker_argv(l);
    v.extend(["--cpus".to_string(), cpus.to_string()]);
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
            reuse_secret: false,
            address_file: None,
            cores: 4,
            memory: None,
            grace: Duration::from_millis(500),
            launch: MpiLaunch { srun: None, mpiexec: Mpiexec::default() },
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
            address_file: None,
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
        hello_reporting(addr, secret, "rogue", vec![]).await
    }

    /// [`hello_with`] from a worker that says it runs `running` (a reconnection).
    async fn hello_reporting(
        addr: &str,
        secret: &str,
        node: &str,
        running: Vec<RunningTask>,
    ) -> (ToWorker, BufReader<tokio::net::tcp::OwnedReadHalf>) {
        let s = TcpStream::connect(addr).await.unwrap();
        let (r, mut w) = s.into_split();
        let mut r = BufReader::new(r);
        let ToWorker::Challenge { nonce } = protocol::recv(&mut r).await.unwrap() else { panic!("no challenge") };
        let hello = ToEngine::Hello {
            proof: protocol::proof(secret, &nonce),
            nonce: "n".into(),
            node: node.into(),
            cpus: 64,
            memory_mb: None,
            gpus: 0,
            pid: 1,
            last_id: running.iter().map(|t| t.id).max().unwrap_or(0),
            running,
            finished: vec![],
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
            address_file: None,
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
                need: WireNeed::default(),
            };
            protocol::send(&mut w, &ToWorker::Start(Box::new(start))).await.unwrap();
            tokio::time::sleep(Duration::from_secs(30)).await;
            drop((r, w));
        });
        let opts = WorkerOptions {
            connect: addr,
            address_file: None,
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
            address_file: None,
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
    fn only_multi_rank_steps_get_a_launcher_srun_or_mpiexec_with_the_hosts() {
        let dir = tempfile::tempdir().unwrap();
        let mut o = options(dir.path()).launch;
        let mut j = job(dir.path(), "m", "true", None);
        assert_eq!(render_argv(&o, &j, &[]), ["sh", "-c", "true"]);
        j.resources.ranks = 2;
        // On the worker's node: the local launcher, no host list.
        assert_eq!(render_argv(&o, &j, &[]), ["mpiexec", "-n", "2", "sh", "-c", "true"]);
        // Across nodes: the workers' nodes and the ranks per node, before the profile's flags.
        j.resources.ranks = 5;
        o.mpiexec.flags = vec!["-bind-to".into(), "none".into()];
        let hosts = ["n1".to_string(), "n2".to_string()];
        assert_eq!(render_argv(&o, &j, &hosts).join(" "), "mpiexec -n 5 -hosts n1,n2 -ppn 3 -bind-to none sh -c true");
        o.mpiexec.flavour = crate::execute::launch::MpiFlavour::Openmpi;
        o.mpiexec.command = "mpirun".into();
        o.mpiexec.env = vec![("OMPI_MCA_x".into(), "1".into())];
        assert_eq!(
            render_argv(&o, &j, &hosts).join(" "),
            "mpirun -x OMPI_MCA_x -n 5 --host n1:3,n2:3 -bind-to none sh -c true"
        );
        o.srun = Some(SrunLaunch {
            job_id: "7".into(),
            mpi: Some("pmi2".into()),
            flags: vec![],
            mem_per_cpu_mb: None,
            prelude: None,
        });
        let v = render_argv(&o, &j, &hosts);
        assert_eq!(v[..3], ["srun", "--jobid=7", "--exact"]);
        assert!(
            v.contains(&"--mpi=pmi2".to_string()) && v.ends_with(&["sh".into(), "-c".into(), "true".into()]),
            "{v:?}"
        );
    }
    /// A runtime whose tasks run between `block_on`s (the engine's connections).
    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap()
    }

    /// Polls `cond` every 50 ms for at most 20 s.
    fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
        let t0 = std::time::Instant::now();
        while !cond() {
            assert!(t0.elapsed() < Duration::from_secs(20), "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn alive(pid: i32) -> bool {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
            && !std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.contains(") Z "))
    }

    /// The pids a task wrote to its `starts` file, one per start.
    fn starts(d: &Path, task: &str) -> Vec<i32> {
        std::fs::read_to_string(d.join(task).join("starts"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }

    /// Attempt 1 of `name`: writes its pid to `name/starts`, runs until `release-NAME`
    /// exists, then touches `name/ended`.
    fn attempt_until_released(d: &Path, name: &str) -> JobRequest {
        let release = d.join(format!("release-{name}"));
        let script = format!(
            "echo $$ >> ../starts; while [ ! -e '{}' ]; do sleep 0.05; done; touch ../ended",
            release.display()
        );
        job(d, &format!("{name}/attempt-1"), &script, None)
    }

    #[test]
    fn a_resumed_engine_adopts_what_the_workers_of_a_killed_engine_run_and_ran() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_path_buf();
        let opts = PilotOptions { address_file: Some(d.join("run.address")), ..options(&d) };
        // The first engine in a runtime of its own: dropping it closes every connection of
        // it, as `kill -9` of the engine would.
        let engine1 = runtime();
        let mut b1 = engine1.block_on(PilotBackend::listen(opts.clone())).unwrap();
        let first_address = b1.connect_address();
        assert_eq!(std::fs::read_to_string(d.join("run.address")).unwrap(), first_address);
        let wopts = WorkerOptions {
            connect: first_address.clone(),
            address_file: opts.address_file.clone(),
            secret_file: d.join("run.secret"),
            heartbeat: Duration::from_secs(10),
            grace: Duration::from_millis(200),
            node: "n1".into(),
            cpus: 4,
            memory_mb: None,
            gpus: 0,
        };
        let worker = std::thread::spawn(move || runtime().block_on(worker::run(wopts)));
        let ids: Vec<JobId> = engine1.block_on(async {
            let mut ids = vec![];
            for name in ["long", "short", "stray", "unrecorded"] {
                ids.push(b1.submit(attempt_until_released(&d, name)).await.unwrap());
            }
            ids
        });
        let names = ["long", "short", "stray", "unrecorded"];
        wait_for("the four tasks to start", || names.iter().all(|t| starts(&d, t).len() == 1));
        drop(b1);
        drop(engine1);
        // `short` ends while no engine runs.
        std::fs::write(d.join("release-short"), "").unwrap();
        wait_for("`short` to end", || d.join("short/ended").exists());
        let leftover =
            |task: &str, attempts| Leftover { task: task.into(), task_dir: d.join(task), attempts, open_job: None };
        // `gone` was recorded as started, but no worker runs it: it starts again.
        // `unrecorded` was started just before the engine died, before the database
        // recorded its attempt (0 attempts recorded).
        let leftovers = [leftover("long", 1), leftover("short", 1), leftover("gone", 1), leftover("unrecorded", 0)];
        let engine2 = runtime();
        engine2.block_on(async {
            let mut b2 = PilotBackend::listen(PilotOptions { reuse_secret: true, ..opts.clone() }).await.unwrap();
            assert_ne!(b2.connect_address(), first_address, "the worker must find the new engine by its file");
            let fallback =
                Fallback { argvs: vec![], log: d.join("workers.log"), started: Box::new(|_| panic!("no fallback")) };
            b2.expect_workers(1, Duration::from_secs(10), fallback);
            let out = b2.recover("run-x", &d, &leftovers).await.unwrap();
            let adopted = |i: usize, task: &str| Adopted {
                attempt: 1,
                job: ids[i].clone(),
                dir: d.join(task).join("attempt-1"),
                recorded: true,
            };
            let unrecorded = Adopted { recorded: false, ..adopted(3, "unrecorded") };
            assert_eq!(out, [Some(adopted(0, "long")), Some(adopted(1, "short")), None, Some(unrecorded)]);
            assert_eq!(b2.workers(), 1, "no new worker was started");
            assert_eq!(outcome(&mut b2, &ids[1]).await.ending, Ending::Exited(0));
            assert_eq!(status(&mut b2, &ids[0]).await, JobStatus::Running);
            assert_eq!(b2.node_of(&ids[0]).as_deref(), Some("n1"));
            // `stray` is claimed by no leftover: the worker stops it.
            let stray = starts(&d, "stray")[0];
            wait_for("`stray` to be stopped", || !alive(stray));
            std::fs::write(d.join("release-long"), "").unwrap();
            std::fs::write(d.join("release-unrecorded"), "").unwrap();
            assert_eq!(outcome(&mut b2, &ids[0]).await.ending, Ending::Exited(0));
            assert_eq!(outcome(&mut b2, &ids[3]).await.ending, Ending::Exited(0));
            // A new task is numbered above the killed engine's.
            let new = b2.submit(attempt_until_released(&d, "new")).await.unwrap();
            assert_eq!(new, JobId("pilot-5".into()));
            std::fs::write(d.join("release-new"), "").unwrap();
            assert_eq!(outcome(&mut b2, &new).await.ending, Ending::Exited(0));
            b2.shutdown().await;
        });
        // Each adopted task started once: it was not started again.
        for t in ["long", "short", "unrecorded"] {
            assert_eq!(starts(&d, t).len(), 1, "{t}");
        }
        assert!(worker.join().unwrap().is_ok());
        assert!(!d.join("run.address").exists() && !d.join("run.secret").exists());
    }

    #[test]
    fn a_worker_whose_engine_is_killed_and_not_resumed_stops_its_tasks_after_the_heartbeat() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_path_buf();
        let opts = PilotOptions { address_file: Some(d.join("run.address")), ..options(&d) };
        let engine = runtime();
        let mut b = engine.block_on(PilotBackend::listen(opts.clone())).unwrap();
        let heartbeat = Duration::from_millis(1500);
        let wopts = WorkerOptions {
            connect: b.connect_address(),
            address_file: opts.address_file.clone(),
            secret_file: d.join("run.secret"),
            heartbeat,
            grace: Duration::from_millis(200),
            node: "n1".into(),
            cpus: 1,
            memory_mb: None,
            gpus: 0,
        };
        let worker = std::thread::spawn(move || runtime().block_on(worker::run(wopts)));
        engine.block_on(b.submit(attempt_until_released(&d, "orphan"))).unwrap();
        wait_for("the task to start", || starts(&d, "orphan").len() == 1);
        let pid = starts(&d, "orphan")[0];
        drop(b);
        drop(engine);
        let t0 = std::time::Instant::now();
        // The task goes on while the worker dials again...
        std::thread::sleep(Duration::from_millis(300));
        assert!(alive(pid), "the task was stopped as soon as the engine went");
        // ...and stops when no engine answered for a heartbeat.
        let r = worker.join().unwrap();
        assert!(matches!(&r, Err(WorkerError::EngineLost(m)) if m.contains("no engine for")), "{r:?}");
        // It last heard from the engine at most a third of a heartbeat before it died.
        assert!(t0.elapsed() >= heartbeat / 2, "gave up after {:?}", t0.elapsed());
        assert!(!alive(pid), "task {pid} outlived the worker");
        assert!(!d.join("orphan/ended").exists());
    }

    #[tokio::test]
    async fn a_worker_that_dials_in_with_tasks_this_engine_does_not_follow_is_told_to_kill_them() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = PilotBackend::listen(options(dir.path())).await.unwrap();
        let secret = protocol::read_secret(&dir.path().join("run.secret")).unwrap();
        // A fresh run (nothing to adopt): tasks of an engine it does not continue, or that
        // it gave up with their node, must not go on running.
        let stale = RunningTask {
            id: 7,
            cwd: dir.path().join("t/attempt-1"),
            need: WireNeed { cores: 1, memory_mb: 0, gpus: 0 },
            started_ms: None,
            pid: None,
        };
        let (answer, mut r) = hello_reporting(&b.connect_address(), &secret, "n1", vec![stale]).await;
        assert!(matches!(answer, ToWorker::Welcome { .. }), "{answer:?}");
        let kill = loop {
            match protocol::recv::<_, ToWorker>(&mut r).await.unwrap() {
                ToWorker::Ping => continue,
                m => break m,
            }
        };
        assert_eq!(kill, ToWorker::Kill { id: 7 });
        // Its tasks take none of the node, and this engine numbers its own above them.
        let id = b.submit(job(dir.path(), "next", "true", None)).await.unwrap();
        assert_eq!(id, JobId("pilot-8".into()));
        let start = loop {
            match protocol::recv::<_, ToWorker>(&mut r).await.unwrap() {
                ToWorker::Ping => continue,
                m => break m,
            }
        };
        assert!(matches!(&start, ToWorker::Start(t) if t.id == 8 && t.need.cores == 1), "{start:?}");
    }

    #[tokio::test]
    async fn a_step_across_nodes_under_mpiexec_gets_the_workers_nodes_as_its_hosts() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = PilotBackend::listen(options(dir.path())).await.unwrap();
        let secret = protocol::read_secret(&dir.path().join("run.secret")).unwrap();
        let (_, mut r1) = hello_reporting(&b.connect_address(), &secret, "n1", vec![]).await;
        let (_, mut r2) = hello_reporting(&b.connect_address(), &secret, "n2", vec![]).await;
        until_workers(&b, 2).await;
        let mut j = job(dir.path(), "wide", "true", None);
        j.resources.ranks = 4;
        j.resources.nodes = 2;
        b.submit(j).await.unwrap();
        // One of the two workers starts it (any: the launcher places the ranks).
        let start = tokio::select! {
            m = async { loop { if let ToWorker::Start(t) = protocol::recv::<_, ToWorker>(&mut r1).await.unwrap() { break t } } } => m,
            m = async { loop { if let ToWorker::Start(t) = protocol::recv::<_, ToWorker>(&mut r2).await.unwrap() { break t } } } => m,
        };
        let argv = start.argv.join(" ");
        assert!(
            argv == "mpiexec -n 4 -hosts n1,n2 -ppn 2 sh -c true"
                || argv == "mpiexec -n 4 -hosts n2,n1 -ppn 2 sh -c true",
            "{argv}"
        );
    }

    /// A step larger than a node (128 ranks on two 64-core nodes) is laid over two nodes,
    /// reserved on both, and `srun` is told which (`--nodes=2 --nodelist=...`): a one-core
    /// task submitted after it waits, where before nothing was reserved and it started on
    /// the cores the MPI ranks use.
    #[tokio::test]
    async fn a_step_larger_than_a_node_is_reserved_on_the_nodes_srun_is_told() {
        let dir = tempfile::tempdir().unwrap();
        let mut opts = options(dir.path());
        opts.launch.srun =
            Some(SrunLaunch { job_id: "7".into(), mpi: None, flags: vec![], mem_per_cpu_mb: None, prelude: None });
        let mut b = PilotBackend::listen(opts).await.unwrap();
        let secret = protocol::read_secret(&dir.path().join("run.secret")).unwrap();
        let (_, mut r1) = hello_reporting(&b.connect_address(), &secret, "n1", vec![]).await;
        let (_, mut r2) = hello_reporting(&b.connect_address(), &secret, "n2", vec![]).await;
        until_workers(&b, 2).await;
        let mut j = job(dir.path(), "wide", "true", None);
        j.resources.ranks = 128;
        b.submit(j).await.unwrap();
        let start = tokio::select! {
            m = async { loop { if let ToWorker::Start(t) = protocol::recv::<_, ToWorker>(&mut r1).await.unwrap() { break t } } } => m,
            m = async { loop { if let ToWorker::Start(t) = protocol::recv::<_, ToWorker>(&mut r2).await.unwrap() { break t } } } => m,
        };
        let argv = start.argv.join(" ");
        assert!(argv.starts_with("srun --jobid=7 --exact"), "{argv}");
        assert!(
            argv.contains(" --nodes=2 --nodelist=n1,n2 ") || argv.contains(" --nodes=2 --nodelist=n2,n1 "),
            "{argv}"
        );
        assert!(argv.contains(" --ntasks=128 ") && argv.ends_with(" sh -c true"), "{argv}");
        // Both nodes are full: a one-core task waits.
        let small = b.submit(job(dir.path(), "small", "true", None)).await.unwrap();
        let status = b.poll(std::slice::from_ref(&small)).await.unwrap();
        assert_eq!(status, [(small, JobStatus::Queued)]);
    }

    #[tokio::test]
    async fn a_resumed_engine_that_no_worker_dials_starts_new_workers_and_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        protocol::write_secret(&d.join("run.secret")).unwrap();
        let mut b = PilotBackend::listen(PilotOptions { reuse_secret: true, ..options(d) }).await.unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        // A stand-in for the workers' launcher.
        let fallback = Fallback {
            argvs: vec![vec!["true".into()]],
            log: d.join("workers.log"),
            started: Box::new(move |pids: &[u32]| tx.send(pids.to_vec()).unwrap()),
        };
        b.expect_workers(1, Duration::from_millis(300), fallback);
        let t0 = std::time::Instant::now();
        let leftover = Leftover { task: "t".into(), task_dir: d.join("t"), attempts: 1, open_job: None };
        assert_eq!(b.recover("run-x", d, &[leftover]).await.unwrap(), [None]);
        assert!(t0.elapsed() >= Duration::from_millis(300), "it did not wait for the workers");
        let pids = rx.try_recv().expect("the fallback was not started");
        assert_eq!(pids, b.launcher_pids());
        assert_eq!(pids.len(), 1);
    }
}
