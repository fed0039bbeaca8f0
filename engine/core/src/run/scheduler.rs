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

use std::collections::{HashMap, VecDeque};
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

/// Scheduling options.
#[derive(Debug, Clone, Copy, Default)]
pub struct SchedOptions {
    /// Keep starting independent tasks after a task failed for good.
    pub keep_going: bool,
    /// At most this many attempts in flight at once (besides resource limits).
    pub max_parallel: Option<usize>,
}

/// Where a plan node is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeState {
    /// Waiting for upstream tasks.
    Waiting,
    /// May start (in the ready queue, or handed to the driver by `next_task`).
    Ready,
    /// Failed; waits for its retry to come due.
    Delayed,
    /// An attempt is in flight.
    Running,
    /// Finished in this state.
    Done(TaskState),
}

/// A state change the driver must record.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// A task reached a final state.
    Finished {
        /// The task.
        node: NodeIndex,
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
        node: NodeIndex,
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
        node: NodeIndex,
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
    pub failures: Vec<(NodeIndex, TaskFailure)>,
}

/// The scheduler core (see the module documentation).
pub struct Scheduler<'a> {
    plan: &'a Plan,
    clock: &'a dyn Clock,
    opts: SchedOptions,
    capacity: Capacity,
    state: Vec<NodeState>,
    remaining: Vec<u32>,
    attempts: Vec<u32>,
    started: HashMap<NodeIndex, Instant>,
    ready: VecDeque<NodeIndex>,
    delayed: Vec<(Instant, NodeIndex)>,
    running: usize,
    cores_used: u32,
    mem_used: u64,
    failed: bool,
    cancelling: bool,
    failures: Vec<(NodeIndex, TaskFailure)>,
    effects: Vec<Effect>,
}

impl<'a> Scheduler<'a> {
    /// A scheduler for `plan` with every node waiting. Call [`Scheduler::restore`] and
    /// [`Scheduler::adopt`] for what an earlier engine finished or left running, then
    /// [`Scheduler::seed`].
    pub fn new(plan: &'a Plan, clock: &'a dyn Clock, capacity: Capacity, opts: SchedOptions) -> Self {
        let n = plan.graph.node_count();
        Scheduler {
            plan,
            clock,
            opts,
            capacity,
            state: vec![NodeState::Waiting; n],
            remaining: plan
                .graph
                .node_indices()
                .map(|i| plan.graph.neighbors_directed(i, Direction::Incoming).count() as u32)
                .collect(),
            attempts: vec![0; n],
            started: HashMap::new(),
            ready: VecDeque::new(),
            delayed: vec![],
            running: 0,
            cores_used: 0,
            mem_used: 0,
            failed: false,
            cancelling: false,
            failures: vec![],
            effects: vec![],
        }
    }

    /// Sets what the backend offers (it may change while a run goes on).
    pub fn set_capacity(&mut self, capacity: Capacity) {
        self.capacity = capacity;
    }

    /// Resume: `node` made `attempts` attempts in an earlier engine, and is done in `state`
    /// when given (only finished states count; the rest start again).
    pub fn restore(&mut self, node: NodeIndex, attempts: u32, state: Option<TaskState>) {
        self.attempts[node.index()] = attempts;
        if let Some(st) = state.filter(|s| s.is_terminal()) {
            self.state[node.index()] = NodeState::Done(st);
        }
    }

    /// Resume: an earlier engine's attempt `attempt` of `node` is still in flight and is
    /// followed, not started again. It holds its resources like any running attempt.
    pub fn adopt(&mut self, node: NodeIndex, attempt: u32) {
        self.attempts[node.index()] = attempt;
        self.state[node.index()] = NodeState::Running;
        self.reserve(node);
    }

    /// Releases the dependants of restored tasks and queues every task whose upstream is
    /// done. Call once, after restoring.
    pub fn seed(&mut self) {
        let done: Vec<(NodeIndex, TaskState)> = self
            .plan
            .graph
            .node_indices()
            .filter_map(|i| match self.state[i.index()] {
                NodeState::Done(st) => Some((i, st)),
                _ => None,
            })
            .collect();
        for (i, st) in done {
            self.release(i, st);
        }
        for i in self.plan.graph.node_indices() {
            if self.remaining[i.index()] == 0 && self.state[i.index()] == NodeState::Waiting {
                self.state[i.index()] = NodeState::Ready;
                self.ready.push_back(i);
            }
        }
    }

    /// The next ready task that fits the free resources, taken off the ready queue; the
    /// caller must settle it with [`skip`](Self::skip), [`reuse`](Self::reuse),
    /// [`fail`](Self::fail) or [`launch`](Self::launch). `None` when nothing may start now
    /// (nothing ready or nothing fits, after a final failure without `keep_going`, or
    /// while cancelling). Joins of scattered steps are completed here, without the driver.
    pub fn next_task(&mut self) -> Option<NodeIndex> {
        let mut passed = 0;
        let mut idx = 0;
        while idx < self.ready.len() {
            if self.cancelling || (self.failed && !self.opts.keep_going) {
                return None;
            }
            let i = self.ready[idx];
            if self.plan.graph[i].is_join() {
                self.ready.remove(idx);
                let st = self.join_state(i);
                self.state[i.index()] = NodeState::Done(st);
                self.release(i, st);
                continue;
            }
            if self.fits(i) {
                self.ready.remove(idx);
                return Some(i);
            }
            passed += 1;
            if passed >= BACKFILL_WINDOW {
                return None;
            }
            idx += 1;
        }
        None
    }

    /// `node` is skipped (its `when:` is false); so are its dependants.
    pub fn skip(&mut self, node: NodeIndex, message: String) {
        self.done(node, TaskState::Skipped, Some(message), 0.0);
        self.release(node, TaskState::Skipped);
    }

    /// `node` is up to date: its earlier result is used without running it.
    pub fn reuse(&mut self, node: NodeIndex) {
        self.done(node, TaskState::Cached, None, 0.0);
        self.release(node, TaskState::Cached);
    }

    /// `node` failed for good without (another) attempt, e.g. its command could not be
    /// resolved or its results could not be published; its dependants are upstream-failed.
    pub fn fail(&mut self, node: NodeIndex, message: String) {
        if self.state[node.index()] == NodeState::Running {
            self.unreserve(node);
        }
        self.fail_final(node, message, 0.0);
    }

    /// An attempt of `node` starts now; returns its number (1 for the first). Its resources
    /// are reserved until it ends.
    pub fn launch(&mut self, node: NodeIndex) -> u32 {
        let a = self.attempts[node.index()] + 1;
        self.attempts[node.index()] = a;
        self.state[node.index()] = NodeState::Running;
        self.reserve(node);
        a
    }

    /// The running attempt of `node` succeeded (its outputs are in place).
    pub fn succeeded(&mut self, node: NodeIndex) {
        let seconds = self.unreserve(node);
        self.done(node, TaskState::Succeeded, None, seconds);
        self.release(node, TaskState::Succeeded);
    }

    /// The running attempt of `node` failed with `message`: it is retried after the step's
    /// backoff while retries are left (and the run is not being cancelled), else the task
    /// fails for good.
    pub fn attempt_failed(&mut self, node: NodeIndex, message: String) {
        let seconds = self.unreserve(node);
        if self.cancelling {
            self.cancelled(node, seconds);
            return;
        }
        if self.retries_left(node) {
            let attempt = self.attempts[node.index()];
            let delay = self.plan.workflow.steps[self.plan.graph[node].step as usize].retry.delay(attempt);
            self.state[node.index()] = NodeState::Delayed;
            self.delayed.push((self.clock.now() + delay, node));
            self.effects.push(Effect::Retry { node, attempt, delay, message });
        } else {
            self.fail_final(node, message, seconds);
        }
    }

    /// Whether a failure of `node`'s running attempt would be retried.
    pub fn retries_left(&self, node: NodeIndex) -> bool {
        let retry = &self.plan.workflow.steps[self.plan.graph[node].step as usize].retry;
        !self.cancelling && self.attempts[node.index()] <= retry.count
    }

    /// The running attempt of `node` was cancelled (by `twinflow`, or outside it): the task
    /// is cancelled and its dependants stay pending, to run on `--resume`.
    pub fn attempt_cancelled(&mut self, node: NodeIndex) {
        let seconds = self.unreserve(node);
        self.cancelled(node, seconds);
    }

    /// Stops the run: nothing new starts, running attempts are to be cancelled by the
    /// driver. Returns false when already cancelling.
    pub fn cancel(&mut self) -> bool {
        !std::mem::replace(&mut self.cancelling, true)
    }

    /// Moves retries that are due to the ready queue.
    pub fn promote_due(&mut self) {
        let now = self.clock.now();
        let mut k = 0;
        while k < self.delayed.len() {
            if self.delayed[k].0 <= now {
                let (_, i) = self.delayed.remove(k);
                self.state[i.index()] = NodeState::Ready;
                self.ready.push_back(i);
            } else {
                k += 1;
            }
        }
    }

    /// When the earliest waiting retry comes due.
    pub fn next_wakeup(&self) -> Option<Instant> {
        self.delayed.iter().map(|(t, _)| *t).min()
    }

    /// Whether the run is over: nothing in flight, and nothing left that may start.
    pub fn is_done(&self) -> bool {
        self.running == 0
            && (self.cancelling
                || (self.ready.is_empty() && self.delayed.is_empty())
                || (self.failed && !self.opts.keep_going))
    }

    /// Ends the run: retries still waiting go back to pending (an [`Effect::Pending`] each).
    pub fn finish(&mut self) -> Finish {
        for (_, i) in std::mem::take(&mut self.delayed) {
            self.state[i.index()] = NodeState::Waiting;
            self.effects.push(Effect::Pending { node: i });
        }
        let mut counts = Counts::default();
        for i in self.plan.graph.node_indices() {
            if self.plan.graph[i].is_join() {
                continue;
            }
            counts.add(match self.state[i.index()] {
                NodeState::Done(st) => st,
                _ => TaskState::Pending,
            });
        }
        let outcome = if self.cancelling {
            RunOutcome::Cancelled
        } else if self.failed || counts.pending > 0 {
            RunOutcome::Failed
        } else {
            RunOutcome::Succeeded
        };
        Finish { outcome, counts, failures: self.failures.clone() }
    }

    /// State changes since the last call, in order.
    pub fn take_effects(&mut self) -> Vec<Effect> {
        std::mem::take(&mut self.effects)
    }

    /// Where `node` is.
    pub fn state(&self, node: NodeIndex) -> NodeState {
        self.state[node.index()]
    }

    /// Attempts `node` has made (including a running one).
    pub fn attempts(&self, node: NodeIndex) -> u32 {
        self.attempts[node.index()]
    }

    /// Attempts in flight.
    pub fn running(&self) -> usize {
        self.running
    }

    /// Cores and bytes of memory reserved by attempts in flight.
    pub fn in_use(&self) -> (u32, u64) {
        (self.cores_used, self.mem_used)
    }

    /// Whether [`Scheduler::cancel`] was called.
    pub fn is_cancelling(&self) -> bool {
        self.cancelling
    }

    fn fits(&self, i: NodeIndex) -> bool {
        if self.opts.max_parallel.is_some_and(|m| self.running >= m)
            || self.capacity.max_jobs.is_some_and(|m| self.running >= m)
        {
            return false;
        }
        if self.running == 0 {
            return true; // a task larger than the machine still runs, alone
        }
        let r = &self.plan.workflow.steps[self.plan.graph[i].step as usize].resources;
        let cores_ok = self.capacity.cores.is_none_or(|c| self.cores_used + r.cores() <= c);
        let mem_ok = self.capacity.memory.is_none_or(|m| r.memory == 0 || self.mem_used + r.memory <= m);
        cores_ok && mem_ok
    }

    fn reserve(&mut self, i: NodeIndex) {
        let r = &self.plan.workflow.steps[self.plan.graph[i].step as usize].resources;
        self.cores_used += r.cores();
        self.mem_used += r.memory;
        self.running += 1;
        self.started.insert(i, self.clock.now());
    }

    /// Frees what `i`'s attempt held; returns how long it ran, in seconds.
    fn unreserve(&mut self, i: NodeIndex) -> f64 {
        let r = &self.plan.workflow.steps[self.plan.graph[i].step as usize].resources;
        self.cores_used = self.cores_used.saturating_sub(r.cores());
        self.mem_used = self.mem_used.saturating_sub(r.memory);
        self.running = self.running.saturating_sub(1);
        let started = self.started.remove(&i);
        crate::events::secs(started.map_or(Duration::ZERO, |t| self.clock.now().saturating_duration_since(t)))
    }

    fn cancelled(&mut self, i: NodeIndex, seconds: f64) {
        self.failures.push((i, TaskFailure::Cancelled));
        self.done(i, TaskState::Cancelled, Some(TaskFailure::Cancelled.to_string()), seconds);
    }

    fn fail_final(&mut self, i: NodeIndex, message: String, seconds: f64) {
        self.failed = true;
        self.failures.push((i, TaskFailure::Failed(message.clone())));
        self.done(i, TaskState::Failed, Some(message), seconds);
        self.release(i, TaskState::Failed);
    }

    fn done(&mut self, i: NodeIndex, st: TaskState, message: Option<String>, seconds: f64) {
        self.state[i.index()] = NodeState::Done(st);
        if !self.plan.graph[i].is_join() {
            self.effects.push(Effect::Finished { node: i, state: st, message, seconds });
        }
    }

    /// Marks the dependants of a finished node: counts down their upstream, completes
    /// joins, propagates failure and skips.
    fn release(&mut self, i: NodeIndex, st: TaskState) {
        let mut stack = vec![(i, st)];
        while let Some((node, st)) = stack.pop() {
            // In plan order (petgraph lists the newest edge first), so dependants released
            // together start in the order the workflow declares them, members by index.
            let mut succ: Vec<NodeIndex> = self.plan.graph.neighbors_directed(node, Direction::Outgoing).collect();
            succ.sort_unstable();
            for d in succ {
                if matches!(self.state[d.index()], NodeState::Done(_)) {
                    continue;
                }
                let is_join = self.plan.graph[d].is_join();
                if matches!(st, TaskState::Failed | TaskState::UpstreamFailed | TaskState::Cancelled) {
                    let msg = format!("upstream `{}` did not succeed", self.plan.task_name(self.plan.graph[node]));
                    self.done(d, TaskState::UpstreamFailed, Some(msg), 0.0);
                    stack.push((d, TaskState::UpstreamFailed));
                    continue;
                }
                if st == TaskState::Skipped && !is_join {
                    let msg = format!("upstream `{}` was skipped", self.plan.task_name(self.plan.graph[node]));
                    self.done(d, TaskState::Skipped, Some(msg), 0.0);
                    stack.push((d, TaskState::Skipped));
                    continue;
                }
                self.remaining[d.index()] = self.remaining[d.index()].saturating_sub(1);
                if self.remaining[d.index()] == 0 && self.state[d.index()] == NodeState::Waiting {
                    if is_join {
                        let st = self.join_state(d);
                        self.state[d.index()] = NodeState::Done(st);
                        stack.push((d, st));
                    } else {
                        self.state[d.index()] = NodeState::Ready;
                        self.ready.push_back(d);
                    }
                }
            }
        }
    }

    /// A join succeeds when every member is done; it is skipped when all were skipped.
    fn join_state(&self, j: NodeIndex) -> TaskState {
        let all_skipped = self
            .plan
            .graph
            .neighbors_directed(j, Direction::Incoming)
            .all(|m| self.state[m.index()] == NodeState::Done(TaskState::Skipped));
        if all_skipped { TaskState::Skipped } else { TaskState::Succeeded }
    }
}

#[cfg(test)]
mod tests;
