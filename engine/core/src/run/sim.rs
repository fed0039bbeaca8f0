//! The scheduler core on a simulated cluster: how it holds up at the scale of a
//! supercomputer (10⁶ tasks over 1,000 nodes) without one.
//!
//! [`simulate`] drives the real [`Scheduler`] of a real [`Plan`] as `run::execute` does,
//! with the I/O replaced: a [`VirtualClock`] jumps from one task's end to the next, and a
//! fake pilot backend runs each task on simulated nodes for a duration drawn at random. The
//! nodes are packed by [`Packer`], the very code that packs the nodes of the real pilot
//! backend ([`crate::execute::pilot::packing`]), and the scheduler sees one pool of cores
//! for the whole allocation, as it does in pilot mode ([`Capacity`] of the
//! `PilotBackend`). So every effect of the design shows: a task the pool admits may wait in
//! the backend for a node with room (cores free but scattered over nodes), holding its
//! cores in the pool meanwhile, and a 64-rank task waits for a whole empty node while
//! single-core tasks pass it.
//!
//! The workflow ([`SimSpec::workflow_yaml`]) is what a campaign looks like: a `setup` task,
//! then one scattered step per task size (single-core, 4-rank, 64-rank MPI, in the order
//! [`SimSpec::mix`] gives), each member after `setup`, and a `gather` after all of them.
//! Task sizes and rules:
//! - a task takes `ranks` cores on one node; a 64-rank task on 64-core nodes takes a whole,
//!   empty node (the packing rule, [`crate::execute::pilot::packing`]);
//! - a task spanning nodes (`nodes > 1`, or more ranks than a node has cores) takes an even
//!   share of its ranks on each of its nodes and starts when that many nodes have room
//!   (the *spanning* rule of [`crate::execute::pilot::packing`]: 128 ranks take two whole
//!   64-core nodes). The real pilot backend does not do that yet: it hands such a task to
//!   `srun --exact` (or `mpiexec` over the workers' nodes) and reserves nothing on them;
//! - durations are log-normal per size, drawn from a counter-based generator keyed by the
//!   seed and the task, so a task's duration does not depend on when it runs and a run is
//!   reproducible ([`duration`]; hand-written SplitMix64 and Box–Muller: ten lines, and the
//!   engine library needs no random-number crate for them), cut at [`TaskSize::cap`].
//!
//! What is not simulated: the driver's own work per task (resolving the command, the
//! attempt directory, the run database, the backend's messages). The figure is the
//! scheduler core's and the packing's; `make bench` measures the driver on this machine.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use super::RunOutcome;
use super::clock::{Clock, VirtualClock};
use super::scheduler::{SchedOptions, Scheduler, TaskId};
use crate::diag::Diagnostics;
use crate::execute::Capacity;
use crate::execute::pilot::packing::{Need, Packer, Room, span_of};
use crate::plan::Plan;
use crate::spec::span::SourceFile;
use crate::validate::Overrides;

/// One task size of the mix.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskSize {
    /// MPI ranks (cores) per task.
    pub ranks: u32,
    /// Fraction of the tasks that have this size.
    pub share: f64,
    /// Median duration, seconds.
    pub median: f64,
    /// Log-normal shape: the standard deviation of the log of the duration.
    pub sigma: f64,
    /// Longest duration, seconds (a task's `timeout`): longer draws are cut to it.
    pub cap: f64,
}

impl TaskSize {
    /// The duration of task `key`, nanoseconds: [`duration`], cut to [`TaskSize::cap`].
    pub fn draw(&self, seed: u64, key: u64) -> u64 {
        duration(seed, key, self.median, self.sigma).min((self.cap * 1e9) as u64)
    }
}

/// What to simulate.
#[derive(Debug, Clone, PartialEq)]
pub struct SimSpec {
    /// Nodes of the allocation.
    pub nodes: u32,
    /// Cores per node.
    pub cores_per_node: u32,
    /// Scattered tasks in all (besides `setup` and `gather`).
    pub tasks: u64,
    /// Task sizes, one scattered step each, in plan order.
    pub mix: Vec<TaskSize>,
    /// How long `setup` and `gather` run, seconds.
    pub edge_seconds: f64,
    /// Seed of the durations.
    pub seed: u64,
    /// Keep every task's placement and times ([`SimReport::trace`]).
    pub trace: bool,
}

impl SimSpec {
    /// The figure's mix on `nodes` nodes of 64 cores, 1,000 tasks per node: by count 90.8 %
    /// single-core (median 60 s, σ 1), 9 % 4-rank (median 5 min, σ 0.75), 0.2 % 64-rank
    /// (median 30 min, σ 0.3), each cut at 10 × its median (its timeout: without one, the
    /// longest of 10⁶ log-normal draws with σ = 1 runs 130 × the median); each size holds a
    /// comparable share of the core-seconds. `wide_first`: the 64-rank step comes first in
    /// the plan (else last).
    pub fn campaign(nodes: u32, wide_first: bool) -> Self {
        let mut mix = vec![
            TaskSize { ranks: 1, share: 0.908, median: 60.0, sigma: 1.0, cap: 600.0 },
            TaskSize { ranks: 4, share: 0.09, median: 300.0, sigma: 0.75, cap: 3000.0 },
            TaskSize { ranks: 64, share: 0.002, median: 1800.0, sigma: 0.3, cap: 18_000.0 },
        ];
        if wide_first {
            mix.reverse();
        }
        SimSpec {
            nodes,
            cores_per_node: 64,
            tasks: u64::from(nodes) * 1000,
            mix,
            edge_seconds: 10.0,
            seed: 1,
            trace: false,
        }
    }

    /// Members of each size's step (rounded; the last size takes the rest).
    pub fn counts(&self) -> Vec<u64> {
        let mut left = self.tasks;
        let mut out = vec![];
        for (k, s) in self.mix.iter().enumerate() {
            let n =
                if k + 1 == self.mix.len() { left } else { ((self.tasks as f64 * s.share).round() as u64).min(left) };
            left -= n;
            out.push(n);
        }
        out
    }

    /// The workflow: `setup`, one scattered step per size (`size0`, `size1`, ...), `gather`.
    pub fn workflow_yaml(&self) -> String {
        let mut y = String::from("name: sim\nsteps:\n  setup:\n    run: [\"true\"]\n");
        let counts = self.counts();
        for (k, (s, n)) in self.mix.iter().zip(&counts).enumerate() {
            y += &format!(
                "  size{k}:\n    scatter:\n      over: {{ i: \"${{{{ range(0, {n}) }}}}\" }}\n    resources: {{ ranks: {} }}\n    run: [\"true\"]\n    after: [setup]\n",
                s.ranks
            );
        }
        let all: Vec<String> = (0..self.mix.len()).map(|k| format!("size{k}")).collect();
        y += &format!("  gather:\n    run: [\"true\"]\n    after: [{}]\n", all.join(", "));
        y
    }

    /// The plan of [`SimSpec::workflow_yaml`], through the same parse, validate and
    /// compile as a workflow file.
    pub fn plan(&self) -> Result<Plan, Diagnostics> {
        let file = SourceFile::new("sim.yaml", self.workflow_yaml());
        let raw = crate::spec::parse(&file)?;
        let wf = crate::validate::validate(file, raw, &Overrides::default())?;
        crate::plan::compile(Arc::new(wf))
    }
}

/// A mix the simulation cannot run.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SimError {
    /// A task needs more nodes than the allocation has.
    #[error("a task of step `{step}` spans {width} nodes; the allocation has {nodes}")]
    TooLarge {
        /// The step.
        step: String,
        /// Nodes a task spans.
        width: u32,
        /// Nodes of the allocation.
        nodes: u32,
    },
    /// The scheduler stopped handing out work before every task ran.
    #[error("the run got stuck at t={at} s with {running} task(s) running: {outcome:?}")]
    Stuck {
        /// Virtual time.
        at: f64,
        /// Tasks in flight.
        running: usize,
        /// What the scheduler says.
        outcome: RunOutcome,
    },
}

/// One task as it ran (with [`SimSpec::trace`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Span {
    /// The task.
    pub task: TaskId,
    /// Its step's index.
    pub step: u32,
    /// Cores it took on each of its nodes.
    pub cores: u32,
    /// The nodes it ran on (one but for a task spanning nodes).
    pub nodes: Vec<usize>,
    /// When the scheduler handed it to the backend, seconds.
    pub submitted: f64,
    /// When it started on its node, seconds.
    pub start: f64,
    /// When it ended, seconds.
    pub end: f64,
}

/// What a simulation measured.
#[derive(Debug, Clone, PartialEq)]
pub struct SimReport {
    /// Tasks that ran (attempts).
    pub tasks: u64,
    /// How the scheduler ended the run.
    pub outcome: RunOutcome,
    /// Virtual time from the start to the last task's end, seconds.
    pub makespan: f64,
    /// Core-seconds the tasks used.
    pub core_seconds: f64,
    /// Cores of the allocation.
    pub cores: u64,
    /// No schedule can be shorter: the larger of the core-seconds spread over every core
    /// and the longest chain (`setup`, the longest member, `gather`).
    pub lower_bound: f64,
    /// Most tasks waiting in the backend for a node with room at once (admitted by the
    /// scheduler's pool of cores, not placed).
    pub max_waiting: usize,
    /// Core-seconds during which cores the pool counted as taken were idle on the nodes
    /// (held by tasks waiting for a node with room).
    pub held_idle: f64,
    /// Core-seconds idle on the nodes while some task could have started (ready in the
    /// scheduler or waiting in the backend): what scheduling and packing lose. The rest of
    /// the idle time is the end of the run, when what is left runs on fewer cores.
    pub idle_while_waiting: f64,
    /// When the last member (a task of the scattered steps) started, seconds: from then on
    /// the run drains (what is left runs on fewer and fewer cores).
    pub last_start: f64,
    /// Scheduler turns (one per instant at which tasks ended).
    pub turns: u64,
    /// Every task (with [`SimSpec::trace`]), in the order they ended.
    pub trace: Vec<Span>,
}

impl SimReport {
    /// Core-seconds used over those available during the makespan.
    pub fn utilisation(&self) -> f64 {
        if self.makespan <= 0.0 { 0.0 } else { self.core_seconds / (self.cores as f64 * self.makespan) }
    }
}

/// SplitMix64 of `x`: a well-mixed 64-bit value (the generator of Java's `SplittableRandom`).
fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A uniform number in (0, 1) from the top 53 bits.
fn unit(x: u64) -> f64 {
    ((x >> 11) as f64 + 0.5) / (1u64 << 53) as f64
}

/// The duration of task `key` (seed `seed`): log-normal with `median` and `sigma`, by
/// Box–Muller over two counter-based uniforms. Nanoseconds, at least 1 ms.
pub fn duration(seed: u64, key: u64, median: f64, sigma: f64) -> u64 {
    let a = mix64(seed ^ mix64(key.wrapping_mul(2)));
    let b = mix64(seed ^ mix64(key.wrapping_mul(2) + 1));
    let z = (-2.0 * unit(a).ln()).sqrt() * (std::f64::consts::TAU * unit(b)).cos();
    let secs = median * (sigma * z).exp();
    ((secs * 1e9) as u64).max(1_000_000)
}

/// The key of a task's duration: its step's index and its member index, so a duration
/// depends on which task it is, not on when it runs.
pub fn task_key(step: usize, member: Option<u32>) -> u64 {
    ((step as u64) << 32) | u64::from(member.unwrap_or(0))
}

/// A task in flight on a node.
struct Job {
    task: TaskId,
    nodes: Vec<usize>,
    need: Need,
    submitted: u64,
    start: u64,
}

/// Runs `plan` (from [`SimSpec::plan`]) on the simulated cluster of `spec`.
pub fn simulate(plan: &Plan, spec: &SimSpec) -> Result<SimReport, SimError> {
    let per_node = spec.cores_per_node;
    // Per step: what a task takes, and its durations.
    let steps = &plan.workflow.steps;
    let mut needs = Vec::with_capacity(steps.len());
    let mut shapes = Vec::with_capacity(steps.len());
    for s in steps.iter() {
        let r = &s.resources;
        let (share, width) = span_of(Need::of_resources(r), r.nodes, per_node);
        if width > spec.nodes {
            return Err(SimError::TooLarge { step: s.name.clone(), width, nodes: spec.nodes });
        }
        needs.push((share, width));
        let size = s.name.strip_prefix("size").and_then(|k| k.parse::<usize>().ok()).and_then(|k| spec.mix.get(k));
        let edge = TaskSize { ranks: 1, share: 0.0, median: spec.edge_seconds, sigma: 0.0, cap: spec.edge_seconds };
        shapes.push(size.cloned().unwrap_or(edge));
    }
    let ns = |d: u64| d as f64 / 1e9;

    let clock = VirtualClock::new();
    let cores = u64::from(spec.nodes) * u64::from(per_node);
    // The pool the scheduler sees, as `PilotBackend::capacity` offers it.
    let capacity = Capacity { cores: Some(cores as u32), memory: None, max_jobs: None };
    let mut s = Scheduler::new(plan, &clock, capacity, SchedOptions::default());
    s.seed();
    let mut packer: Packer<(TaskId, u64)> = Packer::new();
    for _ in 0..spec.nodes {
        packer.add_node(Room { cpus: per_node, memory_mb: None, gpus: 0 });
    }
    let mut ends: BinaryHeap<Reverse<(u64, u64)>> = BinaryHeap::new();
    let mut jobs: HashMap<u64, Job> = HashMap::new();
    let mut key = 0u64;
    let mut now = 0u64;
    let mut report = SimReport {
        tasks: 0,
        outcome: RunOutcome::Succeeded,
        makespan: 0.0,
        core_seconds: 0.0,
        cores,
        lower_bound: 0.0,
        max_waiting: 0,
        held_idle: 0.0,
        idle_while_waiting: 0.0,
        last_start: 0.0,
        turns: 0,
        trace: vec![],
    };
    let mut longest = [0u64; 3]; // setup, the longest member, gather
    // Cores admitted by the pool but waiting in the backend, and since when that count held.
    let mut held: u64 = 0;
    // Cores running tasks.
    let mut busy: u64 = 0;
    loop {
        // A dispatch turn: every task the core hands out is submitted to the backend.
        while let Some(t) = s.next_task() {
            s.launch(t);
            let step = plan.graph[t.node].step as usize;
            key += 1;
            let (share, width) = needs[step];
            if width == 1 {
                packer.push(key, share, false, (t, now));
            } else {
                packer.push_span(key, share, width, (t, now));
            }
            held += u64::from(share.cores * width);
        }
        // The effects the driver would record: dropped here (nothing is written).
        drop(s.take_effects());
        for p in packer.dispatch() {
            let (t, submitted) = p.item;
            let step = plan.graph[t.node].step as usize;
            let d = shapes[step].draw(spec.seed, task_key(step, plan.graph[t.node].member_index()));
            let slot = match steps[step].name.as_str() {
                "setup" => 0,
                "gather" => 2,
                _ => 1,
            };
            longest[slot] = longest[slot].max(d);
            let mut nodes = p.others;
            nodes.insert(0, p.node);
            let taken = u64::from(p.need.cores) * nodes.len() as u64;
            held -= taken;
            busy += taken;
            ends.push(Reverse((now + d, p.key)));
            if slot == 1 {
                report.last_start = ns(now);
            }
            jobs.insert(p.key, Job { task: t, nodes, need: p.need, submitted, start: now });
        }
        report.max_waiting = report.max_waiting.max(packer.waiting());
        if s.is_done() {
            break;
        }
        let Some(&Reverse((next, _))) = ends.peek() else {
            let f = s.finish();
            return Err(SimError::Stuck { at: ns(now), running: s.running(), outcome: f.outcome });
        };
        // Cores the pool holds for tasks that wait for a node are idle until then.
        report.held_idle += held as f64 * ns(next - now);
        if packer.waiting() > 0 || s.ready_count() > 0 {
            report.idle_while_waiting += (cores - busy) as f64 * ns(next - now);
        }
        clock.advance(Duration::from_nanos(next - now));
        now = next;
        report.turns += 1;
        while let Some(&Reverse((at, k))) = ends.peek() {
            if at > now {
                break;
            }
            ends.pop();
            let Some(j) = jobs.remove(&k) else { continue };
            for &n in &j.nodes {
                packer.release(n, j.need);
            }
            let taken = u64::from(j.need.cores) * j.nodes.len() as u64;
            busy -= taken;
            s.succeeded(j.task);
            report.tasks += 1;
            report.core_seconds += taken as f64 * ns(now - j.start);
            if spec.trace {
                report.trace.push(Span {
                    task: j.task,
                    step: plan.graph[j.task.node].step,
                    cores: j.need.cores,
                    nodes: j.nodes,
                    submitted: ns(j.submitted),
                    start: ns(j.start),
                    end: ns(now),
                });
            }
        }
    }
    debug_assert_eq!(clock.since_zero(clock.now()).as_nanos() as u64, now);
    let f = s.finish();
    report.outcome = f.outcome;
    report.makespan = ns(now);
    let chain = ns(longest.iter().sum());
    report.lower_bound = (report.core_seconds / cores as f64).max(chain);
    Ok(report)
}

#[cfg(test)]
mod tests;
