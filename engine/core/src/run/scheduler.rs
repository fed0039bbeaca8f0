//! The scheduler core: every scheduling decision of a run, and no I/O.
//!
//! [`Scheduler`] owns the state of every plan node (waiting, ready, delayed for a retry,
//! running, done) and decides what may start, what a finished attempt means for the task
//! and its dependants, and when the run is over. It reads the plan and a [`Clock`]; it
//! never touches the file system, the run database, processes or a backend. The driver
//! (`run::execute`) acts for it, in the style of nextest's dispatcher/executor split and
//! HyperQueue's `tako`:
//!
//! 1. [`Scheduler::next_task`] hands out the next ready task that fits the free resources
//!    (in plan order, with backfill: a task that does not fit is passed over for smaller
//!    ones behind it, up to [`BACKFILL_WINDOW`] of them);
//! 2. the driver decides how the task is settled and says so: [`Scheduler::skip`] (`when:`
//!    is false), [`Scheduler::reuse`] (cache hit), [`Scheduler::fail`] (cannot be
//!    resolved) or [`Scheduler::launch`] (an attempt starts, resources are reserved);
//! 3. when an attempt ends the driver reports [`Scheduler::succeeded`],
//!    [`Scheduler::attempt_failed`] or [`Scheduler::attempt_cancelled`]; the core retries
//!    with exponential backoff (the task is delayed until [`Scheduler::next_wakeup`]) or
//!    fails the task for good and propagates: dependants of a failed task are
//!    `upstream-failed`, dependants of a skipped task are skipped, a gather (join) of a
//!    scattered step is skipped only when every member was;
//! 4. every state change is queued as an [`Effect`] the driver records (run database,
//!    events) after each call ([`Scheduler::take_effects`]).
//!
//! Without `keep_going`, no task starts after a final failure (fail-fast); running attempts
//! finish and are recorded. After [`Scheduler::cancel`] nothing starts and running attempts
//! end as cancelled. Retries still waiting when the run stops go back to pending
//! ([`Scheduler::finish`]), so a resumed run starts them again.
//!
//! ## Cycles
//!
//! A task is a plan node in a cycle ([`TaskId`]); a run of a workflow that does not cycle
//! has one cycle, 0. Of a cycling workflow, cycles are *activated* on demand: the state of
//! a cycle's tasks exists only while it is active, and at most `runahead + 1` cycles are
//! active (the oldest unfinished one and `runahead` beyond it), so memory does not grow
//! with the number of cycles. The oldest cycle *retires* when all its tasks are done and
//! none failed ([`Effect::CycleFinished`]); a cycle with a failure stays, holding the
//! window, and the run reports it ([`Finish::held_by`]). Links between cycles:
//! `prev.steps.S` makes a task wait for S of the cycle before; a task of a later cycle that
//! reads a `once: first` step waits for it in cycle 0. A task whose step has `wait:` is
//! *gated* when its upstream is done ([`Effect::Gated`]): the driver checks its triggers
//! and calls [`Scheduler::open_gate`] or [`Scheduler::gate_timed_out`].
//! [`Scheduler::stop`] lets the active cycles finish and activates no more.
//!
//! ## Services
//!
//! A task of a `service:` step starts like any task. While it starts, it is an attempt in
//! flight like any other (a failure is retried with the step's backoff). Once the driver
//! finds it ready ([`Scheduler::service_ready`]) it is *done* for its dependants (they
//! start, its cycle may retire) but its process goes on and keeps its resources; it does
//! not count against `max_parallel` (a service holding the only slot would starve its own
//! dependants). When it dies the driver says so ([`Scheduler::service_died`]) and the core
//! restarts it after the step's backoff ([`Scheduler::due_restarts`],
//! [`Scheduler::relaunch`]) while `retry.count` allows (every attempt counts, before and
//! after it was ready), else fails it for good. When nothing but services is left
//! ([`Scheduler::work_done`]), the driver stops them ([`Scheduler::stop_services`]) and
//! reports each end ([`Scheduler::service_stopped`]): a service stopped so succeeded. A
//! service still starting is stopped too when the run fails (fail-fast) or is cancelled.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use petgraph::Direction;
use petgraph::graph::NodeIndex;

use super::RunOutcome;
use super::clock::Clock;
use crate::events::{Counts, TaskFailure, TaskState};
use crate::execute::Capacity;
use crate::plan::Plan;

/// How many ready tasks that do not fit are passed over, per call of
/// [`Scheduler::next_task`], looking for one that does (backfill).
pub const BACKFILL_WINDOW: usize = 64;

/// A task of a run: a plan node in a cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TaskId {
    /// Cycle index (0 for a workflow that does not cycle).
    pub cycle: u64,
    /// The plan node.
    pub node: NodeIndex,
}

impl TaskId {
    /// Node `node` of cycle `cycle`.
    pub fn new(cycle: u64, node: NodeIndex) -> Self {
        TaskId { cycle, node }
    }
}

impl From<NodeIndex> for TaskId {
    /// The node's task in cycle 0 (the only cycle of a workflow that does not cycle).
    fn from(node: NodeIndex) -> Self {
        TaskId { cycle: 0, node }
    }
}

/// Which cycles a run may activate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CycleWindow {
    /// Cycles that may be active beyond the oldest unfinished one.
    pub runahead: u32,
    /// Number of cycles in all (`None`: until stopped).
    pub count: Option<u64>,
}

impl Default for CycleWindow {
    /// One cycle: a workflow that does not cycle.
    fn default() -> Self {
        CycleWindow { runahead: 0, count: Some(1) }
    }
}

/// Scheduling options.
#[derive(Debug, Clone, Copy, Default)]
pub struct SchedOptions {
    /// Keep starting independent tasks after a task failed for good.
    pub keep_going: bool,
    /// At most this many attempts in flight at once (besides resource limits).
    pub max_parallel: Option<usize>,
    /// The cycles (default: one).
    pub cycles: CycleWindow,
}

/// Where a task is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeState {
    /// Waiting for upstream tasks.
    Waiting,
    /// Upstream done; waiting for its triggers (`wait:`).
    Gated,
    /// May start (in the ready queue, or handed to the driver by `next_task`).
    Ready,
    /// Failed; waits for its retry to come due.
    Delayed,
    /// An attempt is in flight.
    Running,
    /// Finished in this state.
    Done(TaskState),
    /// Not a task of this cycle (a `once:` step of another cycle).
    Absent,
}

/// A state change the driver must record.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// A task reached a final state.
    Finished {
        /// The task.
        task: TaskId,
        /// Its state.
        state: TaskState,
        /// Why (failures, skips).
        message: Option<String>,
        /// How long its last attempt ran (0 when it did not run).
        seconds: f64,
    },
    /// An attempt failed and the task will be tried again after `delay`.
    Retry {
        /// The task.
        task: TaskId,
        /// The attempt that failed.
        attempt: u32,
        /// The wait before the next attempt.
        delay: Duration,
        /// What went wrong.
        message: String,
    },
    /// A task waiting for a retry when the run stopped is pending again.
    Pending {
        /// The task.
        task: TaskId,
    },
    /// A task's upstream is done and its triggers must be checked.
    Gated {
        /// The task.
        task: TaskId,
    },
    /// A cycle was activated: its tasks exist from now on.
    CycleStarted {
        /// Its index.
        cycle: u64,
        /// Whether it is the last.
        last: bool,
    },
    /// A service is ready: its dependants may start; its process goes on.
    ServiceReady {
        /// The task.
        task: TaskId,
    },
    /// A ready service died; it is restarted after `delay`.
    ServiceRestart {
        /// The task.
        task: TaskId,
        /// The attempt that died.
        attempt: u32,
        /// Restarts so far, this one included.
        restarts: u32,
        /// The wait before the restart.
        delay: Duration,
        /// How it ended.
        message: String,
    },
    /// The oldest active cycle is done, without failures, and retired.
    CycleFinished {
        /// Its index.
        cycle: u64,
        /// Its tasks by state.
        counts: Counts,
    },
}

/// How a run ended, by the scheduler's account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finish {
    /// Outcome.
    pub outcome: RunOutcome,
    /// Tasks by state (joins not counted).
    pub counts: Counts,
    /// Tasks that failed (or were cancelled), with why, in the order it happened.
    pub failures: Vec<(TaskId, TaskFailure)>,
    /// The oldest cycle with a failed task, which kept later cycles from starting.
    pub held_by: Option<u64>,
    /// The next cycle that was not activated (how far the run got).
    pub next_cycle: u64,
    /// The cycles still active when the run ended.
    pub active: Vec<ActiveCycle>,
}

/// A cycle still active when the run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveCycle {
    /// Its index.
    pub index: u64,
    /// Its tasks by state (not started: pending).
    pub counts: Counts,
    /// All its tasks finished (it could not retire: an older cycle holds the run).
    pub complete: bool,
    /// A task failed or was cancelled.
    pub failed: bool,
}

/// The state of one active cycle's tasks.
struct Cycle {
    index: u64,
    state: Vec<NodeState>,
    remaining: Vec<u32>,
    attempts: Vec<u32>,
    /// Nodes not done yet (absent ones excluded).
    open: usize,
    /// A task failed (or was cancelled) for good.
    failed: bool,
}

/// What an earlier engine recorded of a task (resume).
#[derive(Debug, Clone, Copy)]
struct Restored {
    attempts: u32,
    state: Option<TaskState>,
}

/// Where a service task is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServicePhase {
    /// Its attempt runs but it is not ready yet (it is a running task of its cycle).
    Starting,
    /// Ready: done for its dependants; its process runs.
    Ready,
    /// It died after it was ready; restarted at this instant.
    Restarting(Instant),
}

/// A service task in flight.
#[derive(Debug, Clone, Copy)]
struct Svc {
    phase: ServicePhase,
    /// Attempts so far (its cycle may have retired, taking its count along).
    attempts: u32,
    /// Deaths after it was ready.
    restarts: u32,
    /// The driver was told to stop it.
    stop_asked: bool,
}

/// The scheduler core (see the module documentation).
pub struct Scheduler<'a> {
    plan: &'a Plan,
    clock: &'a dyn Clock,
    opts: SchedOptions,
    capacity: Capacity,
    /// Active cycles, oldest first, contiguous.
    cycles: VecDeque<Cycle>,
    /// Index of the next cycle to activate.
    next_cycle: u64,
    /// Final states of the cycle before the oldest active one (for `prev.*`).
    prev_final: HashMap<NodeIndex, TaskState>,
    /// Final states of cycle 0's tasks, once it retired (for `once: first`).
    first_final: HashMap<NodeIndex, TaskState>,
    /// Tasks of later cycles waiting for a task of an earlier one.
    waiters: HashMap<TaskId, Vec<TaskId>>,
    restored: HashMap<TaskId, Restored>,
    adopted: Vec<(TaskId, u32)>,
    gates_open: HashSet<TaskId>,
    started: HashMap<TaskId, Instant>,
    ready: VecDeque<TaskId>,
    delayed: Vec<(Instant, TaskId)>,
    /// Service tasks in flight (starting, ready or waiting for a restart).
    services: std::collections::BTreeMap<TaskId, Svc>,
    gated: usize,
    running: usize,
    cores_used: u32,
    mem_used: u64,
    failed: bool,
    cancelling: bool,
    stopping: bool,
    retired: Counts,
    failures: Vec<(TaskId, TaskFailure)>,
    effects: Vec<Effect>,
}

fn is_failure(st: TaskState) -> bool {
    matches!(st, TaskState::Failed | TaskState::UpstreamFailed | TaskState::Cancelled)
}

impl<'a> Scheduler<'a> {
    /// A scheduler for `plan` with no cycle active. Call [`Scheduler::restore`] and
    /// [`Scheduler::adopt`] for what an earlier engine finished or left running, then
    /// [`Scheduler::seed`].
    pub fn new(plan: &'a Plan, clock: &'a dyn Clock, capacity: Capacity, opts: SchedOptions) -> Self {
        Scheduler {
            plan,
            clock,
            opts,
            capacity,
            cycles: VecDeque::new(),
            next_cycle: 0,
            prev_final: HashMap::new(),
            first_final: HashMap::new(),
            waiters: HashMap::new(),
            restored: HashMap::new(),
            adopted: vec![],
            gates_open: HashSet::new(),
            started: HashMap::new(),
            ready: VecDeque::new(),
            delayed: vec![],
            services: Default::default(),
            gated: 0,
            running: 0,
            cores_used: 0,
            mem_used: 0,
            failed: false,
            cancelling: false,
            stopping: false,
            retired: Counts::default(),
            failures: vec![],
            effects: vec![],
        }
    }

    /// Sets what the backend offers (it may change while a run goes on).
    pub fn set_capacity(&mut self, capacity: Capacity) {
        self.capacity = capacity;
    }

    /// Resume of a cycling run: cycles before `cycle` finished in an earlier engine; the
    /// run goes on from `cycle`. Give the final states of the cycle before it and of cycle
    /// 0's `once: first` tasks with [`Scheduler::restore_retired`].
    pub fn start_at(&mut self, cycle: u64) {
        self.next_cycle = cycle;
    }

    /// Resume: the final state of a task of a retired cycle that later cycles read (the
    /// cycle just before the first active one, or cycle 0).
    pub fn restore_retired(&mut self, task: TaskId, state: TaskState) {
        if task.cycle == 0 {
            self.first_final.insert(task.node, state);
        }
        if task.cycle + 1 == self.next_cycle {
            self.prev_final.insert(task.node, state);
        }
    }

    /// Resume: `task` made `attempts` attempts in an earlier engine, and is done in `state`
    /// when given (only finished states count; the rest start again). Applied when its
    /// cycle is activated.
    pub fn restore(&mut self, task: impl Into<TaskId>, attempts: u32, state: Option<TaskState>) {
        let state = state.filter(|s| s.is_terminal());
        self.restored.insert(task.into(), Restored { attempts, state });
    }

    /// Resume: `task`'s triggers were satisfied in an earlier engine; it is not gated again.
    pub fn restore_gate(&mut self, task: TaskId) {
        self.gates_open.insert(task);
    }

    /// Resume: an earlier engine's attempt `attempt` of `task` is still in flight and is
    /// followed, not started again. It holds its resources like any running attempt.
    pub fn adopt(&mut self, task: impl Into<TaskId>, attempt: u32) {
        self.adopted.push((task.into(), attempt));
    }

    /// Activates the first cycles (with what was restored) and queues every task whose
    /// upstream is done. Call once, after restoring.
    pub fn seed(&mut self) {
        // Cycles with adopted attempts are activated whatever the window, so their jobs
        // have somewhere to report to.
        let must = self.adopted.iter().map(|(t, _)| t.cycle + 1).max().unwrap_or(0);
        while self.next_cycle < must {
            self.activate();
        }
        self.advance();
    }

    /// The next ready task that fits the free resources, taken off the ready queue; the
    /// caller must settle it with [`skip`](Self::skip), [`reuse`](Self::reuse),
    /// [`fail`](Self::fail) or [`launch`](Self::launch). `None` when nothing may start now
    /// (nothing ready or nothing fits, after a final failure without `keep_going`, or
    /// while cancelling). Joins of scattered steps are completed here, without the driver.
    pub fn next_task(&mut self) -> Option<TaskId> {
        self.advance();
        let mut passed = 0;
        let mut idx = 0;
        while idx < self.ready.len() {
            if self.cancelling || (self.failed && !self.opts.keep_going) {
                return None;
            }
            let t = self.ready[idx];
            if self.plan.graph[t.node].is_join() {
                self.ready.remove(idx);
                let st = self.join_state(t);
                self.set_done(t, st);
                self.release(t, st);
                continue;
            }
            if self.fits(t) {
                self.ready.remove(idx);
                return Some(t);
            }
            passed += 1;
            if passed >= BACKFILL_WINDOW {
                return None;
            }
            idx += 1;
        }
        None
    }

    /// `task` is skipped (its `when:` is false); so are its dependants.
    pub fn skip(&mut self, task: TaskId, message: String) {
        self.done(task, TaskState::Skipped, Some(message), 0.0);
        self.release(task, TaskState::Skipped);
    }

    /// `task` is up to date: its earlier result is used without running it.
    pub fn reuse(&mut self, task: TaskId) {
        self.done(task, TaskState::Cached, None, 0.0);
        self.release(task, TaskState::Cached);
    }

    /// `task` failed for good without (another) attempt, e.g. its command could not be
    /// resolved or its results could not be published; its dependants are upstream-failed.
    /// A task whose attempt ran (its results could not be published) keeps the time it ran.
    pub fn fail(&mut self, task: TaskId, message: String) {
        let seconds = if self.state(task) == Some(NodeState::Running) {
            self.services.remove(&task);
            self.unreserve(task)
        } else {
            0.0
        };
        self.fail_final(task, message, seconds);
    }

    /// An attempt of `task` starts now; returns its number (1 for the first). Its resources
    /// are reserved until it ends.
    pub fn launch(&mut self, task: TaskId) -> u32 {
        let Some(c) = self.cycle_mut(task.cycle) else { return 0 };
        let a = c.attempts[task.node.index()] + 1;
        c.attempts[task.node.index()] = a;
        c.state[task.node.index()] = NodeState::Running;
        self.reserve(task);
        if self.is_service(task) {
            self.services
                .insert(task, Svc { phase: ServicePhase::Starting, attempts: a, restarts: 0, stop_asked: false });
        }
        a
    }

    /// The running attempt of `task` succeeded (its outputs are in place).
    pub fn succeeded(&mut self, task: TaskId) {
        self.services.remove(&task);
        let seconds = self.unreserve(task);
        self.done(task, TaskState::Succeeded, None, seconds);
        self.release(task, TaskState::Succeeded);
    }

    /// The running attempt of `task` failed with `message`: it is retried after the step's
    /// backoff while retries are left (and the run is not being cancelled), else the task
    /// fails for good.
    pub fn attempt_failed(&mut self, task: TaskId, message: String) {
        self.services.remove(&task);
        let seconds = self.unreserve(task);
        if self.cancelling {
            self.cancelled(task, seconds);
            return;
        }
        if self.retries_left(task) {
            let attempt = self.attempts(task);
            let delay = self.plan.workflow.steps[self.plan.graph[task.node].step as usize].retry.delay(attempt);
            self.set_state(task, NodeState::Delayed);
            self.delayed.push((self.clock.now() + delay, task));
            self.effects.push(Effect::Retry { task, attempt, delay, message });
        } else {
            self.fail_final(task, message, seconds);
        }
    }

    /// Whether a failure of `task`'s running attempt would be retried.
    pub fn retries_left(&self, task: TaskId) -> bool {
        let retry = &self.plan.workflow.steps[self.plan.graph[task.node].step as usize].retry;
        // A service's count survives its cycle's retirement.
        let attempts = self.services.get(&task).map_or_else(|| self.attempts(task), |v| v.attempts);
        !self.cancelling && attempts <= retry.count
    }

    /// The running attempt of `task` was cancelled (by `twinflow`, or outside it): the task
    /// is cancelled and its dependants stay pending, to run on `--resume`.
    pub fn attempt_cancelled(&mut self, task: TaskId) {
        self.services.remove(&task);
        let seconds = self.unreserve(task);
        self.cancelled(task, seconds);
    }

    /// `task`'s triggers are satisfied: it may start.
    pub fn open_gate(&mut self, task: TaskId) {
        if self.state(task) == Some(NodeState::Gated) {
            self.gated -= 1;
            self.set_state(task, NodeState::Ready);
            self.ready.push_back(task);
        }
    }

    /// `task`'s triggers were not satisfied in time: it is skipped (its dependants too) or
    /// fails, as its `on_timeout` says.
    pub fn gate_timed_out(&mut self, task: TaskId, message: String, skip: bool) {
        if self.state(task) != Some(NodeState::Gated) {
            return;
        }
        self.gated -= 1;
        if skip {
            self.skip(task, message);
        } else {
            self.fail_final(task, message, 0.0);
        }
    }

    /// Whether `task` is a task of a `service:` step.
    pub fn is_service(&self, task: TaskId) -> bool {
        self.plan.workflow.steps[self.plan.graph[task.node].step as usize].service.is_some()
    }

    /// Where service `task` is; `None` when it is not a service in flight.
    pub fn service_phase(&self, task: TaskId) -> Option<ServicePhase> {
        self.services.get(&task).map(|v| v.phase)
    }

    /// Whether the driver was told to stop service `task` ([`Scheduler::stop_services`]).
    pub fn service_stop_asked(&self, task: TaskId) -> bool {
        self.services.get(&task).is_some_and(|v| v.stop_asked)
    }

    /// Times service `task` was restarted after it died (in this engine).
    pub fn service_restarts(&self, task: TaskId) -> u32 {
        self.services.get(&task).map_or(0, |v| v.restarts)
    }

    /// The starting service `task` is ready: it is done for its dependants (released as
    /// after a success; its cycle may retire), while its process runs on, holding its
    /// resources.
    pub fn service_ready(&mut self, task: TaskId) {
        let Some(v) = self.services.get_mut(&task) else { return };
        if v.phase != ServicePhase::Starting {
            return;
        }
        v.phase = ServicePhase::Ready;
        self.set_done(task, TaskState::Succeeded);
        self.effects.push(Effect::ServiceReady { task });
        self.release(task, TaskState::Succeeded);
    }

    /// The process of the ready service `task` ended: it is restarted after the step's
    /// backoff while `retry.count` allows ([`Effect::ServiceRestart`]), else it fails for
    /// good. An end the driver asked for (or one while cancelling) is a stop
    /// ([`Scheduler::service_stopped`]). Returns true when the run now fails and the tasks
    /// still running should be stopped: they may depend on the service (without
    /// `keep_going`).
    pub fn service_died(&mut self, task: TaskId, message: String) -> bool {
        let Some(v) = self.services.get(&task).copied() else { return false };
        if v.phase == ServicePhase::Starting {
            return false; // not ready yet: an attempt like any other
        }
        if v.stop_asked || self.cancelling {
            self.service_stopped(task);
            return false;
        }
        let retry = &self.plan.workflow.steps[self.plan.graph[task.node].step as usize].retry;
        if v.attempts <= retry.count {
            let delay = retry.delay(v.attempts);
            let restarts = v.restarts + 1;
            let phase = ServicePhase::Restarting(self.clock.now() + delay);
            self.services.insert(task, Svc { phase, restarts, ..v });
            self.effects.push(Effect::ServiceRestart { task, attempt: v.attempts, restarts, delay, message });
            return false;
        }
        self.services.remove(&task);
        let seconds = self.unreserve(task);
        self.failed = true;
        self.failures.push((task, TaskFailure::Failed(message.clone())));
        self.restate(task, TaskState::Failed);
        self.effects.push(Effect::Finished { task, state: TaskState::Failed, message: Some(message), seconds });
        !self.opts.keep_going
    }

    /// Services whose restart is due, in task order; start each with
    /// [`Scheduler::relaunch`].
    pub fn due_restarts(&self) -> Vec<TaskId> {
        if self.cancelling {
            return vec![];
        }
        let now = self.clock.now();
        self.services
            .iter()
            .filter(|(_, v)| !v.stop_asked && matches!(v.phase, ServicePhase::Restarting(at) if at <= now))
            .map(|(t, _)| *t)
            .collect()
    }

    /// A new attempt of the service `task` starts now (a restart); returns its number.
    pub fn relaunch(&mut self, task: TaskId) -> u32 {
        let Some(v) = self.services.get_mut(&task) else { return 0 };
        v.attempts += 1;
        v.phase = ServicePhase::Ready;
        let a = v.attempts;
        if let Some(c) = self.cycle_mut(task.cycle) {
            c.attempts[task.node.index()] = a;
        }
        a
    }

    /// Resume: the service `task` of a cycle that retired in an earlier engine (its
    /// dependants read it there) is started again as soon as the driver asks
    /// ([`Scheduler::due_restarts`]); it made `attempts` attempts so far.
    pub fn restore_service(&mut self, task: TaskId, attempts: u32) {
        self.reserve(task);
        let phase = ServicePhase::Restarting(self.clock.now());
        self.services.insert(task, Svc { phase, attempts, restarts: 0, stop_asked: false });
    }

    /// The services to stop now that the rest of the run is over ([`Scheduler::work_done`]):
    /// those whose process the driver stops (SIGTERM, grace, SIGKILL), each reported with
    /// [`Scheduler::service_died`] when it ended. Ready ones then succeed; starting ones
    /// (stopped only when the run fails or is cancelled) end as cancelled attempts. Services
    /// waiting for a restart are stopped at once. Each is returned once.
    pub fn stop_services(&mut self) -> Vec<TaskId> {
        let failing = self.failing();
        let mut out = vec![];
        let mut idle = vec![];
        for (t, v) in &mut self.services {
            if v.stop_asked {
                continue;
            }
            match v.phase {
                ServicePhase::Starting if !failing => continue,
                ServicePhase::Restarting(_) => idle.push(*t),
                _ => out.push(*t),
            }
            v.stop_asked = true;
        }
        for t in idle {
            self.service_stopped(t);
        }
        out
    }

    /// The ready service `task` was stopped: it succeeded.
    pub fn service_stopped(&mut self, task: TaskId) {
        if self.services.remove(&task).is_none() {
            return;
        }
        let seconds = self.unreserve(task);
        self.effects.push(Effect::Finished { task, state: TaskState::Succeeded, message: None, seconds });
    }

    /// Stops the run: nothing new starts, running attempts are to be cancelled by the
    /// driver. Returns false when already cancelling.
    pub fn cancel(&mut self) -> bool {
        !std::mem::replace(&mut self.cancelling, true)
    }

    /// Lets the active cycles finish and activates no more (`twinflow stop`). Returns false
    /// when already stopping.
    pub fn stop(&mut self) -> bool {
        !std::mem::replace(&mut self.stopping, true)
    }

    /// Moves retries that are due to the ready queue.
    pub fn promote_due(&mut self) {
        let now = self.clock.now();
        let mut k = 0;
        while k < self.delayed.len() {
            if self.delayed[k].0 <= now {
                let (_, t) = self.delayed.remove(k);
                self.set_state(t, NodeState::Ready);
                self.ready.push_back(t);
            } else {
                k += 1;
            }
        }
        self.advance();
    }

    /// When the earliest waiting retry comes due.
    pub fn next_wakeup(&self) -> Option<Instant> {
        let restarts = self.services.values().filter_map(|v| match v.phase {
            ServicePhase::Restarting(at) if !v.stop_asked => Some(at),
            _ => None,
        });
        self.delayed.iter().map(|(t, _)| *t).chain(restarts).min()
    }

    /// Whether the run is over: nothing in flight (services included), and nothing left that
    /// may start. After [`Scheduler::stop`], tasks waiting for their triggers do not keep the
    /// run going (they stay pending, for `--resume`).
    pub fn is_done(&mut self) -> bool {
        self.work_done() && self.services.is_empty()
    }

    /// Whether everything but services is over: nothing in flight except services (ready
    /// ones; also starting ones when the run fails or is cancelled), and nothing left that
    /// may start. Then the driver stops the services ([`Scheduler::stop_services`]).
    pub fn work_done(&mut self) -> bool {
        self.advance();
        self.work_running() == 0
            && (self.cancelling
                || (self.failed && !self.opts.keep_going)
                || (self.ready.is_empty()
                    && self.delayed.is_empty()
                    && (self.gated == 0 || self.stopping)
                    && !self.may_activate()))
    }

    /// Ends the run: retries still waiting go back to pending (an [`Effect::Pending`] each).
    pub fn finish(&mut self) -> Finish {
        for (_, t) in std::mem::take(&mut self.delayed) {
            self.set_state(t, NodeState::Waiting);
            self.effects.push(Effect::Pending { task: t });
        }
        let mut counts = self.retired.clone();
        for c in &self.cycles {
            for i in self.plan.graph.node_indices() {
                if self.plan.graph[i].is_join() {
                    continue;
                }
                match c.state[i.index()] {
                    NodeState::Absent => {}
                    NodeState::Done(st) => counts.add(st),
                    _ => counts.add(TaskState::Pending),
                }
            }
        }
        let held_by = self.cycles.front().filter(|c| c.failed).map(|c| c.index);
        let active = self
            .cycles
            .iter()
            .map(|c| {
                let mut k = Counts::default();
                for i in self.plan.graph.node_indices() {
                    if self.plan.graph[i].is_join() {
                        continue;
                    }
                    match c.state[i.index()] {
                        NodeState::Absent => {}
                        NodeState::Done(st) => k.add(st),
                        _ => k.add(TaskState::Pending),
                    }
                }
                ActiveCycle { index: c.index, counts: k, complete: c.open == 0, failed: c.failed }
            })
            .collect();
        let unfinished = counts.pending > 0 || self.opts.cycles.count.is_some_and(|n| self.next_cycle < n);
        let outcome = if self.cancelling {
            RunOutcome::Cancelled
        } else if self.failed {
            RunOutcome::Failed
        } else if self.stopping && (unfinished || self.opts.cycles.count.is_none()) {
            RunOutcome::Stopped
        } else if counts.pending > 0 {
            RunOutcome::Failed
        } else {
            RunOutcome::Succeeded
        };
        Finish { outcome, counts, failures: self.failures.clone(), held_by, next_cycle: self.next_cycle, active }
    }

    /// State changes since the last call, in order.
    pub fn take_effects(&mut self) -> Vec<Effect> {
        std::mem::take(&mut self.effects)
    }

    /// Where `task` is: `None` when its cycle is not active.
    pub fn state(&self, task: TaskId) -> Option<NodeState> {
        self.cycle(task.cycle).map(|c| c.state[task.node.index()])
    }

    /// Attempts `task` has made (including a running one).
    pub fn attempts(&self, task: TaskId) -> u32 {
        self.cycle(task.cycle).map_or(0, |c| c.attempts[task.node.index()])
    }

    /// Attempts in flight.
    pub fn running(&self) -> usize {
        self.running
    }

    /// Tasks that may start and wait for room (or for the driver to take them).
    pub fn ready_count(&self) -> usize {
        self.ready.len()
    }

    /// Indices of the active cycles, oldest first.
    pub fn active_cycles(&self) -> Vec<u64> {
        self.cycles.iter().map(|c| c.index).collect()
    }

    /// How many entries the scheduler holds (task states of active cycles, links between
    /// cycles, queues): what must stay flat however many cycles a run goes through.
    pub fn footprint(&self) -> usize {
        self.cycles.len() * self.plan.graph.node_count()
            + self.waiters.values().map(Vec::len).sum::<usize>()
            + self.prev_final.len()
            + self.first_final.len()
            + self.restored.len()
            + self.adopted.len()
            + self.gates_open.len()
            + self.started.len()
            + self.ready.len()
            + self.delayed.len()
            + self.services.len()
            + self.failures.len()
    }

    /// Cores and bytes of memory reserved by attempts in flight.
    pub fn in_use(&self) -> (u32, u64) {
        (self.cores_used, self.mem_used)
    }

    /// Whether [`Scheduler::cancel`] was called.
    pub fn is_cancelling(&self) -> bool {
        self.cancelling
    }

    fn cycle(&self, index: u64) -> Option<&Cycle> {
        let first = self.cycles.front()?.index;
        let k = index.checked_sub(first)?;
        self.cycles.get(k as usize)
    }

    fn cycle_mut(&mut self, index: u64) -> Option<&mut Cycle> {
        let first = self.cycles.front()?.index;
        let k = index.checked_sub(first)?;
        self.cycles.get_mut(k as usize)
    }

    fn set_state(&mut self, t: TaskId, st: NodeState) {
        if let Some(c) = self.cycle_mut(t.cycle) {
            c.state[t.node.index()] = st;
        }
    }

    /// The final state of `t` when it is done (in an active or a retired cycle).
    fn final_state(&self, t: TaskId) -> Option<TaskState> {
        match self.cycle(t.cycle) {
            Some(c) => match c.state[t.node.index()] {
                NodeState::Done(st) => Some(st),
                _ => None,
            },
            None if t.cycle == 0 && self.first_final.contains_key(&t.node) => self.first_final.get(&t.node).copied(),
            None if self.cycles.front().is_none_or(|c| t.cycle + 1 == c.index) && t.cycle < self.next_cycle => {
                // The cycle before the oldest active one retired without failures; a task
                // not recorded there succeeded.
                Some(self.prev_final.get(&t.node).copied().unwrap_or(TaskState::Succeeded))
            }
            None => None,
        }
    }

    /// Whether another cycle may be activated now.
    fn may_activate(&self) -> bool {
        let w = self.opts.cycles;
        let oldest = self.cycles.front().map_or(self.next_cycle, |c| c.index);
        !self.stopping
            && !self.cancelling
            && (!self.failed || self.opts.keep_going)
            && w.count.is_none_or(|n| self.next_cycle < n)
            && self.next_cycle <= oldest + u64::from(w.runahead)
    }

    /// Retires finished cycles and activates the ones the window allows.
    fn advance(&mut self) {
        loop {
            let mut changed = false;
            while self.cycles.front().is_some_and(|c| c.open == 0 && !c.failed) {
                self.retire();
                changed = true;
            }
            if self.may_activate() {
                self.activate();
                changed = true;
            }
            if !changed {
                break;
            }
        }
    }

    fn retire(&mut self) {
        let Some(c) = self.cycles.pop_front() else { return };
        let mut counts = Counts::default();
        let mut finals = HashMap::new();
        for i in self.plan.graph.node_indices() {
            if let NodeState::Done(st) = c.state[i.index()] {
                if !self.plan.graph[i].is_join() {
                    counts.add(st);
                }
                finals.insert(i, st);
            }
        }
        self.retired.merge(&counts);
        if c.index == 0 {
            self.first_final = finals.clone();
        }
        self.prev_final = finals;
        if self.plan.cycling.is_some() {
            self.effects.push(Effect::CycleFinished { cycle: c.index, counts });
        }
    }

    fn activate(&mut self) {
        let index = self.next_cycle;
        self.next_cycle += 1;
        let w = self.opts.cycles;
        let last = w.count.is_some_and(|n| index + 1 == n);
        let plan = self.plan;
        let n = plan.graph.node_count();
        let mut c = Cycle {
            index,
            state: vec![NodeState::Waiting; n],
            remaining: vec![0; n],
            attempts: vec![0; n],
            open: 0,
            failed: false,
        };
        // Edges from other cycles: (task of an earlier cycle, node of this one).
        let mut cross: Vec<(TaskId, NodeIndex)> = vec![];
        for i in plan.graph.node_indices() {
            if !plan.runs_in(i, index, last) {
                c.state[i.index()] = NodeState::Absent;
                continue;
            }
            c.open += 1;
            for u in plan.graph.neighbors_directed(i, Direction::Incoming) {
                if plan.runs_in(u, index, last) {
                    c.remaining[i.index()] += 1;
                } else if index > 0 {
                    // A `once: first` step read by a later cycle: its task in cycle 0.
                    cross.push((TaskId::new(0, u), i));
                }
            }
            if index > 0
                && let Some(cp) = &plan.cycling
            {
                for &p in &cp.prev_deps[i.index()] {
                    cross.push((TaskId::new(index - 1, p), i));
                }
            }
        }
        for (_, i) in &cross {
            c.remaining[i.index()] += 1;
        }
        let mut restored_done = vec![];
        let mut adopted = vec![];
        for i in plan.graph.node_indices() {
            let t = TaskId::new(index, i);
            if let Some(r) = self.restored.remove(&t)
                && c.state[i.index()] != NodeState::Absent
            {
                c.attempts[i.index()] = r.attempts;
                if let Some(st) = r.state {
                    c.state[i.index()] = NodeState::Done(st);
                    c.open -= 1;
                    if is_failure(st) {
                        c.failed = true;
                    }
                    restored_done.push((t, st));
                }
            }
        }
        self.adopted.retain(|&(t, a)| {
            if t.cycle == index {
                adopted.push((t, a));
                false
            } else {
                true
            }
        });
        for &(t, a) in &adopted {
            c.attempts[t.node.index()] = a;
            c.state[t.node.index()] = NodeState::Running;
        }
        self.cycles.push_back(c);
        if plan.cycling.is_some() {
            self.effects.push(Effect::CycleStarted { cycle: index, last });
        }
        for &(t, _) in &adopted {
            self.reserve(t);
        }
        for (src, i) in cross {
            let dst = TaskId::new(index, i);
            match self.final_state(src) {
                Some(st) => self.resolve_edge(src, dst, st),
                None => self.waiters.entry(src).or_default().push(dst),
            }
        }
        for (t, st) in restored_done {
            self.release(t, st);
        }
        for i in plan.graph.node_indices() {
            let t = TaskId::new(index, i);
            let ready = self
                .cycle(index)
                .is_some_and(|c| c.remaining[i.index()] == 0 && c.state[i.index()] == NodeState::Waiting);
            if ready {
                self.make_ready(t);
            }
        }
    }

    /// Queues a task whose upstream is done, or gates it when its step has triggers.
    fn make_ready(&mut self, t: TaskId) {
        let step = &self.plan.workflow.steps[self.plan.graph[t.node].step as usize];
        if step.wait.is_some() && !self.plan.graph[t.node].is_join() && !self.gates_open.remove(&t) {
            self.set_state(t, NodeState::Gated);
            self.gated += 1;
            self.effects.push(Effect::Gated { task: t });
        } else {
            self.set_state(t, NodeState::Ready);
            self.ready.push_back(t);
        }
    }

    /// No new task may start: cancelling, or failed without `keep_going`.
    fn failing(&self) -> bool {
        self.cancelling || (self.failed && !self.opts.keep_going)
    }

    /// Services past their start (ready, or waiting for a restart).
    fn serving(&self) -> usize {
        self.services.values().filter(|v| v.phase != ServicePhase::Starting).count()
    }

    /// Attempts in flight that the run waits for: all but the services that are ready (and
    /// the starting ones too when the run fails or is cancelled).
    fn work_running(&self) -> usize {
        let services = if self.failing() { self.services.len() } else { self.serving() };
        self.running.saturating_sub(services)
    }

    /// A task done as succeeded (a ready service) ends otherwise after all: its cycle's
    /// state, or the counts of the retired cycles, and what later cycles read of it.
    fn restate(&mut self, t: TaskId, st: TaskState) {
        match self.cycle_mut(t.cycle) {
            Some(c) => {
                c.state[t.node.index()] = NodeState::Done(st);
                if is_failure(st) {
                    c.failed = true;
                }
            }
            None => {
                self.retired.succeeded = self.retired.succeeded.saturating_sub(1);
                self.retired.add(st);
            }
        }
        if t.cycle == 0
            && let Some(f) = self.first_final.get_mut(&t.node)
        {
            *f = st;
        }
        // The retired cycle just before the oldest active one (what `prev.*` reads).
        if self.cycle(t.cycle).is_none() && t.cycle + 1 == self.cycles.front().map_or(self.next_cycle, |c| c.index) {
            self.prev_final.insert(t.node, st);
        }
    }

    fn fits(&self, t: TaskId) -> bool {
        let running = self.running.saturating_sub(self.serving());
        if self.opts.max_parallel.is_some_and(|m| running >= m) || self.capacity.max_jobs.is_some_and(|m| running >= m)
        {
            return false;
        }
        if running == 0 {
            return true; // a task larger than the machine still runs, alone (but for services)
        }
        let r = &self.plan.workflow.steps[self.plan.graph[t.node].step as usize].resources;
        let cores_ok = self.capacity.cores.is_none_or(|c| self.cores_used + r.cores() <= c);
        let mem_ok = self.capacity.memory.is_none_or(|m| r.memory == 0 || self.mem_used + r.memory <= m);
        cores_ok && mem_ok
    }

    fn reserve(&mut self, t: TaskId) {
        let r = &self.plan.workflow.steps[self.plan.graph[t.node].step as usize].resources;
        self.cores_used += r.cores();
        self.mem_used += r.memory;
        self.running += 1;
        self.started.insert(t, self.clock.now());
    }

    /// Frees what `t`'s attempt held; returns how long it ran, in seconds.
    fn unreserve(&mut self, t: TaskId) -> f64 {
        let r = &self.plan.workflow.steps[self.plan.graph[t.node].step as usize].resources;
        self.cores_used = self.cores_used.saturating_sub(r.cores());
        self.mem_used = self.mem_used.saturating_sub(r.memory);
        self.running = self.running.saturating_sub(1);
        let started = self.started.remove(&t);
        crate::events::secs(started.map_or(Duration::ZERO, |at| self.clock.now().saturating_duration_since(at)))
    }

    fn cancelled(&mut self, t: TaskId, seconds: f64) {
        self.failures.push((t, TaskFailure::Cancelled));
        self.done(t, TaskState::Cancelled, Some(TaskFailure::Cancelled.to_string()), seconds);
    }

    fn fail_final(&mut self, t: TaskId, message: String, seconds: f64) {
        self.failed = true;
        self.failures.push((t, TaskFailure::Failed(message.clone())));
        self.done(t, TaskState::Failed, Some(message), seconds);
        self.release(t, TaskState::Failed);
    }

    /// Marks `t` done without an effect.
    fn set_done(&mut self, t: TaskId, st: TaskState) {
        if let Some(c) = self.cycle_mut(t.cycle) {
            let slot = &mut c.state[t.node.index()];
            if !matches!(*slot, NodeState::Done(_) | NodeState::Absent) {
                c.open -= 1;
            }
            *slot = NodeState::Done(st);
            if is_failure(st) {
                c.failed = true;
            }
        }
    }

    fn done(&mut self, t: TaskId, st: TaskState, message: Option<String>, seconds: f64) {
        self.set_done(t, st);
        if !self.plan.graph[t.node].is_join() {
            self.effects.push(Effect::Finished { task: t, state: st, message, seconds });
        }
    }

    /// One edge from a finished task `src` (state `st`) to `dst`: counts down `dst`'s
    /// upstream or propagates a failure or skip. Returns the state `dst` reached when this
    /// finished it.
    fn edge(&mut self, src: TaskId, dst: TaskId, st: TaskState) -> Option<TaskState> {
        let is_join = self.plan.graph[dst.node].is_join();
        let state = self.state(dst)?;
        if matches!(state, NodeState::Done(_) | NodeState::Absent) {
            return None;
        }
        let name = || {
            let n = self.plan.task_name(self.plan.graph[src.node]);
            match dst.cycle - src.cycle.min(dst.cycle) {
                0 => format!("`{n}`"),
                1 => format!("`{n}` of the previous cycle"),
                _ => format!("`{n}` of the first cycle"),
            }
        };
        if is_failure(st) {
            let msg = format!("upstream {} did not succeed", name());
            self.done(dst, TaskState::UpstreamFailed, Some(msg), 0.0);
            return Some(TaskState::UpstreamFailed);
        }
        if st == TaskState::Skipped && !is_join {
            let msg = format!("upstream {} was skipped", name());
            self.done(dst, TaskState::Skipped, Some(msg), 0.0);
            return Some(TaskState::Skipped);
        }
        let c = self.cycle_mut(dst.cycle)?;
        let r = &mut c.remaining[dst.node.index()];
        *r = r.saturating_sub(1);
        if *r == 0 && state == NodeState::Waiting {
            if is_join {
                let st = self.join_state(dst);
                self.set_done(dst, st);
                return Some(st);
            }
            self.make_ready(dst);
        }
        None
    }

    fn resolve_edge(&mut self, src: TaskId, dst: TaskId, st: TaskState) {
        if let Some(reached) = self.edge(src, dst, st) {
            self.release(dst, reached);
        }
    }

    /// Marks the dependants of a finished task (in its cycle and in later ones): counts
    /// down their upstream, completes joins, propagates failure and skips.
    fn release(&mut self, t: TaskId, st: TaskState) {
        let mut stack = vec![(t, st)];
        while let Some((src, st)) = stack.pop() {
            // In plan order (petgraph lists the newest edge first), so dependants released
            // together start in the order the workflow declares them, members by index.
            let mut succ: Vec<TaskId> = self
                .plan
                .graph
                .neighbors_directed(src.node, Direction::Outgoing)
                .map(|d| TaskId::new(src.cycle, d))
                .collect();
            succ.sort_unstable();
            if let Some(w) = self.waiters.remove(&src) {
                succ.extend(w);
            }
            for dst in succ {
                if let Some(reached) = self.edge(src, dst, st) {
                    stack.push((dst, reached));
                }
            }
        }
    }

    /// A join succeeds when every member is done; it is skipped when all were skipped.
    fn join_state(&self, j: TaskId) -> TaskState {
        let Some(c) = self.cycle(j.cycle) else { return TaskState::Succeeded };
        let all_skipped = self
            .plan
            .graph
            .neighbors_directed(j.node, Direction::Incoming)
            .all(|m| c.state[m.index()] == NodeState::Done(TaskState::Skipped));
        if all_skipped { TaskState::Skipped } else { TaskState::Succeeded }
    }
}

#[cfg(test)]
mod tests;
