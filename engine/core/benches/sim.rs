//! The scheduler core past this machine, by simulation (`make bench-sim`, or
//! `cargo bench -p twinflow-engine --bench sim [-- NODES...]`): the real scheduler and the
//! real pilot packing (`twinflow_engine::run::sim`) over 10, 100 and 1,000 simulated
//! 64-core nodes, 1,000 tasks per node (10⁶ at 1,000 nodes) of the mix of
//! `SimSpec::campaign`, with the 64-rank step first and then last in the plan.
//!
//! Each case runs in a child process of its own, so its peak RSS is its own. Printed per
//! case, beside baselines measured in the same run:
//! - plan: CPU seconds to parse, validate and plan the workflow of that many tasks;
//! - sched CPU: CPU seconds of the simulation loop (scheduler core, packing, event queue:
//!   this thread's `getrusage(RUSAGE_THREAD)`, user + system) and tasks per CPU second;
//!   baseline: drawing every task's duration and pushing it through a bare event queue on
//!   a single pool of cores (what any simulation of these tasks costs, without
//!   scheduling); and the whole process's CPU (`RUSAGE_SELF`: baseline, plan, simulation);
//! - memory: the process's peak RSS (`getrusage` `ru_maxrss`: plan and simulation), and its
//!   growth during the simulation alone (`VmHWM`, reset by `/proc/self/clear_refs` before
//!   it);
//! - makespan (simulated hours), its lower bound (core-seconds over cores, or the longest
//!   chain), the drain (from the last task's start to the end), the makespan of the
//!   baseline's greedy schedule on one pool of cores (same order, no nodes), utilisation (core-seconds used / cores × makespan), the cores idle while a task
//!   waited to start (scheduler or packing losses) and of those the cores the scheduler's
//!   pool held for tasks waiting for a node with room, both in % of cores × makespan.
#![allow(clippy::print_stdout, missing_docs)]

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

use nix::sys::resource::{UsageWho, getrusage};
use twinflow_engine::execute::pilot::packing::{Need, Packer, Room};
use twinflow_engine::run::sim::{SimSpec, simulate, task_key};

/// CPU time (user + system) of this thread, or of the whole process, seconds.
fn cpu(who: UsageWho) -> f64 {
    getrusage(who).map_or(f64::NAN, |u| {
        let t = |v: nix::sys::time::TimeVal| v.tv_sec() as f64 + v.tv_usec() as f64 / 1e6;
        t(u.user_time()) + t(u.system_time())
    })
}

fn thread_cpu() -> f64 {
    cpu(UsageWho::RUSAGE_THREAD)
}

/// A `/proc/self/status` field in KiB (`VmHWM` peak, `VmRSS` current).
fn status_kib(field: &str) -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The baseline: every task's duration drawn as the simulation draws it, run through a bare
/// event queue on one pool of all the cores (no plan, no scheduler, no nodes). Returns the
/// CPU seconds and the makespan it found (a greedy list schedule on one pool).
fn baseline(spec: &SimSpec) -> (f64, f64) {
    let t0 = thread_cpu();
    let cores = u64::from(spec.nodes) * u64::from(spec.cores_per_node);
    let mut tasks: Vec<(u32, u64)> = Vec::with_capacity(spec.tasks as usize);
    // The members in plan order, with the simulation's durations (step 0 is `setup`).
    for (k, (size, n)) in spec.mix.iter().zip(spec.counts()).enumerate() {
        for i in 0..n {
            tasks.push((size.ranks, size.draw(spec.seed, task_key(k + 1, Some(i as u32)))));
        }
    }
    let mut free = cores;
    let mut now = 0u64;
    let mut ends: BinaryHeap<Reverse<(u64, u32)>> = BinaryHeap::new();
    let mut next = 0;
    loop {
        while next < tasks.len() && u64::from(tasks[next].0) <= free {
            free -= u64::from(tasks[next].0);
            ends.push(Reverse((now + tasks[next].1, tasks[next].0)));
            next += 1;
        }
        let Some(Reverse((at, c))) = ends.pop() else { break };
        now = at;
        free += u64::from(c);
    }
    // `setup` before, `gather` after.
    (thread_cpu() - t0, now as f64 / 1e9 + 2.0 * spec.edge_seconds)
}

/// The pilot backend's dispatch before `Packer`: every waiting task, in order, against every
/// node (kept here as the baseline of the packing figure).
struct Scan {
    /// (cpus, used cores) per node.
    nodes: Vec<(u32, u32)>,
    /// (key, cores) waiting, in order.
    queue: Vec<(u64, u32)>,
}

impl Scan {
    fn dispatch(&mut self) -> usize {
        let mut placed = 0;
        let mut i = 0;
        while i < self.queue.len() {
            let need = self.queue[i].1;
            let best = self.nodes.iter().enumerate().filter(|(_, n)| n.1 + need <= n.0).max_by_key(|(_, n)| n.0 - n.1);
            let Some((w, _)) = best else {
                i += 1;
                continue;
            };
            self.queue.remove(i);
            self.nodes[w].1 += need;
            placed += 1;
        }
        placed
    }
}

/// Packing at scale: 1,000 nodes of 64 cores, each running 63 single-core tasks, and 780
/// 64-rank tasks waiting for a whole node (the most that waited in the 1,000-node
/// simulation). 10,000 times (500 for the scan): a single-core task ends, another is
/// submitted, dispatch.
/// Prints the time per dispatch of `Packer` and of the scan over every node.
fn bench_packing() {
    let (nodes, waiting, turns) = (1000usize, 780u64, 10_000usize);
    let one = Need { cores: 1, memory_mb: 0, gpus: 0 };
    let wide = Need { cores: 64, memory_mb: 0, gpus: 0 };
    let mut p: Packer<()> = Packer::new();
    let mut scan = Scan { nodes: vec![(64, 63); nodes], queue: vec![] };
    for _ in 0..nodes {
        p.add_node(Room { cpus: 64, memory_mb: None, gpus: 0 });
    }
    let mut key = 0;
    for n in 0..nodes {
        for _ in 0..63 {
            key += 1;
            p.push(key, one, false, ());
        }
        assert_eq!(p.dispatch().len(), 63, "node {n}");
    }
    for _ in 0..waiting {
        key += 1;
        p.push(key, wide, false, ());
        scan.queue.push((key, 64));
    }
    let t0 = thread_cpu();
    let mut placed = 0;
    for t in 0..turns {
        p.release(t % nodes, one);
        key += 1;
        p.push(key, one, false, ());
        placed += p.dispatch().len();
    }
    let packer = (thread_cpu() - t0) / turns as f64;
    assert_eq!(placed, turns);
    let t0 = thread_cpu();
    // The scan is slow: fewer turns.
    let scan_turns = turns / 20;
    let mut placed = 0;
    for t in 0..scan_turns {
        scan.nodes[t % nodes].1 -= 1;
        key += 1;
        scan.queue.push((key, 1));
        placed += scan.dispatch();
    }
    let naive = (thread_cpu() - t0) / scan_turns as f64;
    assert_eq!(placed, scan_turns);
    println!(
        "== pilot packing: 1,000 nodes x 64 cores full but one core each, 780 64-rank tasks waiting; a task ends, one starts"
    );
    println!(
        "  per dispatch: Packer {:.2} us | baseline (scan of every node per waiting task) {:.0} us | {:.0}x",
        packer * 1e6,
        naive * 1e6,
        naive / packer.max(1e-12)
    );
}

/// One case, in this process: prints one line of `key=value` for the parent. Small cases
/// are repeated to about 10⁶ tasks (CPU times are per repetition), because the kernel's CPU
/// accounting of a running thread moves in scheduler ticks of a few milliseconds.
fn one(nodes: u32, wide_first: bool) {
    let spec = SimSpec::campaign(nodes, wide_first);
    let reps = (1_000_000 / spec.tasks).max(1) as u32;
    let t0 = thread_cpu();
    let mut base_makespan = 0.0;
    for _ in 0..reps {
        base_makespan = baseline(&spec).1;
    }
    let base_cpu = (thread_cpu() - t0) / f64::from(reps);
    // The first plan and simulation: CPU and memory. Repetitions, for CPU only, come after
    // (memory freed by one is reused by the next).
    let t0 = thread_cpu();
    let plan = spec.plan().expect("the simulated workflow plans");
    let mut plan_cpu = thread_cpu() - t0;
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let rss0 = status_kib("VmRSS:");
    let t0 = thread_cpu();
    let wall = Instant::now();
    let r = simulate(&plan, &spec).expect("the simulation runs");
    let mut sim_cpu = thread_cpu() - t0;
    let wall = wall.elapsed().as_secs_f64();
    let sim_kib = status_kib("VmHWM:").saturating_sub(rss0);
    drop(plan);
    for _ in 1..reps {
        let t0 = thread_cpu();
        let plan = spec.plan().expect("the simulated workflow plans");
        plan_cpu += thread_cpu() - t0;
        let t0 = thread_cpu();
        let again = simulate(&plan, &spec).expect("the simulation runs");
        sim_cpu += thread_cpu() - t0;
        assert_eq!(again, r, "the same seed gives the same run");
    }
    let (plan_cpu, sim_cpu) = (plan_cpu / f64::from(reps), sim_cpu / f64::from(reps));
    // The process's whole life: planning and simulating (this process runs one case).
    let proc_cpu = cpu(UsageWho::RUSAGE_SELF) / f64::from(reps);
    let peak_kib = getrusage(UsageWho::RUSAGE_SELF).map_or(0, |u| u.max_rss() as u64);
    let avail = r.cores as f64 * r.makespan;
    println!(
        "tasks={} plan_cpu={plan_cpu} cpu={sim_cpu} proc_cpu={proc_cpu} wall={wall} base_cpu={base_cpu} base_makespan={base_makespan} peak_kib={peak_kib} sim_kib={sim_kib} makespan={} lower={} last_start={} util={} waiting_idle={} held_idle={} max_waiting={} turns={}",
        r.tasks,
        r.makespan,
        r.lower_bound,
        r.last_start,
        r.utilisation(),
        r.idle_while_waiting / avail,
        r.held_idle / avail,
        r.max_waiting,
        r.turns
    );
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    if args.first().map(String::as_str) == Some("--one") {
        let nodes = args[1].parse().expect("nodes");
        one(nodes, args[2] == "wide-first");
        return;
    }
    let nodes: Vec<u32> =
        if args.is_empty() { vec![10, 100, 1000] } else { args.iter().filter_map(|a| a.parse().ok()).collect() };
    bench_packing();
    println!(
        "== scheduler simulation: N nodes x 64 cores, 1,000 tasks per node (90.8 % 1-core ~60 s, 9 % 4-rank ~5 min, 0.2 % 64-rank ~30 min, log-normal)"
    );
    println!(
        "{:>5} {:>10} {:>7} | {:>7} {:>7} {:>7} {:>9} | {:>8} {:>8} | {:>7} {:>7} {:>7} {:>7} {:>7} {:>6} {:>6} {:>6} | {:>8} {:>7}",
        "nodes",
        "order",
        "tasks",
        "plan s",
        "sched s",
        "proc s",
        "tasks/s",
        "peak MiB",
        "sim MiB",
        "make h",
        "bound h",
        "drain h",
        "1pool h",
        "util",
        "wait%",
        "held%",
        "queue",
        "base s",
        "ratio"
    );
    let exe = std::env::current_exe().expect("own path");
    for &n in &nodes {
        for order in ["wide-last", "wide-first"] {
            let out = std::process::Command::new(&exe).args(["--one", &n.to_string(), order]).output().expect("runs");
            let text = String::from_utf8_lossy(&out.stdout);
            let line = text
                .lines()
                .find(|l| l.starts_with("tasks="))
                .unwrap_or_else(|| panic!("case {n} {order} failed: {}{}", text, String::from_utf8_lossy(&out.stderr)));
            let get = |k: &str| -> f64 {
                line.split_whitespace()
                    .find_map(|kv| kv.strip_prefix(&format!("{k}=")))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(f64::NAN)
            };
            let (cpu, base) = (get("cpu"), get("base_cpu"));
            println!(
                "{n:>5} {order:>10} {:>7} | {:>7.3} {:>7.2} {:>7.2} {:>9.0} | {:>8.0} {:>8.0} | {:>7.2} {:>7.2} {:>7.2} {:>7.2} {:>7.3} {:>6.1} {:>6.1} {:>6} | {:>8.3} {:>6.1}x",
                get("tasks"),
                get("plan_cpu"),
                cpu,
                get("proc_cpu"),
                get("tasks") / cpu,
                get("peak_kib") / 1024.0,
                get("sim_kib") / 1024.0,
                get("makespan") / 3600.0,
                get("lower") / 3600.0,
                (get("makespan") - get("last_start")) / 3600.0,
                get("base_makespan") / 3600.0,
                get("util"),
                100.0 * get("waiting_idle"),
                100.0 * get("held_idle"),
                get("max_waiting"),
                base,
                cpu / base.max(1e-9),
            );
        }
    }
}
