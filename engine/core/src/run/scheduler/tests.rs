//! Scheduling semantics, tested deterministically: a fake backend whose jobs end after
//! scripted virtual durations with scripted outcomes, and a [`VirtualClock`] moved from one
//! event to the next. Nothing sleeps and nothing touches the file system; every test
//! checks a timeline (`t=SECONDS what task`) or the final states.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::model::Once;
use crate::plan::{Plan, compile};
use crate::run::clock::VirtualClock;
use crate::run::trigger::{Poll, Probe, Watch};
use crate::spec::span::SourceFile;
use crate::validate::{Overrides, validate};

/// What a fake job does: runs for `secs` of virtual time, then ends so. A service's attempt
/// that ends `Ok` becomes ready then (and runs on for its `lives` entry).
#[derive(Debug, Clone, Copy, PartialEq)]
enum End {
    Ok,
    Fail,
    Cancelled,
    /// A ready service's process ends by itself.
    Died,
    /// A ready service's process ends because the driver stopped it.
    Stopped,
}

/// How the driver settles a ready task before running it.
#[derive(Debug, Clone, PartialEq)]
enum Decide {
    Run,
    Skip,
    Cached,
    Unresolvable,
}

fn plan(yaml: &str) -> Plan {
    let file = SourceFile::new("test.yaml", yaml);
    let raw = crate::spec::parse(&file).unwrap_or_else(|d| panic!("{d:?}"));
    let wf = validate(file, raw, &Overrides::default()).unwrap_or_else(|d| panic!("{d:?}"));
    compile(Arc::new(wf)).unwrap_or_else(|d| panic!("{d:?}"))
}

/// No files anywhere (the gates of these tests are clock triggers).
struct NoFiles;

impl Probe for NoFiles {
    fn files(&mut self, _: &str) -> Vec<(String, u64, i128)> {
        vec![]
    }
}

/// `sim[2]`, or `CYCLE/sim[2]` for a cycling plan.
fn task_name(plan: &Plan, t: TaskId) -> String {
    let base = plan.task_name(plan.graph[t.node]);
    if plan.cycling.is_some() { format!("{}/{base}", t.cycle) } else { base }
}

fn task_id(plan: &Plan, name: &str) -> TaskId {
    let (cycle, base) = match name.split_once('/') {
        Some((c, b)) if plan.cycling.is_some() => (c.parse().expect("cycle index"), b),
        _ => (0, name),
    };
    let node = plan
        .graph
        .node_indices()
        .find(|i| !plan.graph[*i].is_join() && plan.task_name(plan.graph[*i]) == base)
        .unwrap_or_else(|| panic!("no task `{name}`"));
    TaskId::new(cycle, node)
}

/// A fake backend, a virtual clock and the driver loop of `run::execute` without I/O.
struct Env {
    plan: Plan,
    clock: VirtualClock,
    capacity: Capacity,
    opts: SchedOptions,
    /// Per task name, the scripted attempts: (virtual seconds, how it ends). Tasks without
    /// a script run 1 s and succeed; the last entry repeats.
    script: HashMap<String, Vec<(f64, End)>>,
    /// Per service task, how long attempt k's process lives once ready (the last entry
    /// repeats; infinite: until stopped, the default).
    lives: HashMap<String, Vec<f64>>,
    decide: HashMap<String, Decide>,
    /// Resume: tasks finished by an earlier engine (name → state, attempts).
    restored: Vec<(String, TaskState, u32)>,
    /// Resume: attempts an earlier engine left in flight (name, attempt, seconds left, end).
    adopted: Vec<(String, u32, f64, End)>,
    /// Resume: services of retired cycles the earlier engine left running (name, attempts).
    restored_services: Vec<(String, u32)>,
    /// Cancel the run at this virtual time.
    cancel_at: Option<f64>,
    /// `twinflow stop` at this virtual time.
    stop_at: Option<f64>,
    /// Gated tasks: when each cycle's gate opens, as a clock trigger (wall-clock seconds
    /// since the epoch, which is virtual time zero): `(first, every)` → cycle k opens at
    /// `first + k × every`; `timeout` and `skip` as the trigger's.
    gates: Option<(f64, f64)>,
    gate_timeout: Option<(f64, bool)>,
    /// Cycles whose gate never opens.
    gate_never: Vec<u64>,
    /// Most cycles active at once, and the scheduler's footprint at chosen cycles.
    max_active: usize,
    footprints: Vec<(u64, usize)>,
    /// What happened: `t=SECONDS event task`.
    log: Vec<String>,
    effects: Vec<Effect>,
    finish: Option<Finish>,
    /// Most attempts in flight at once, and most cores in use.
    peak: (usize, u32),
}

/// A cycling plan: `yaml` without `cycle:`, made cycling by hand (integer cycling from 0,
/// `count` cycles), with `prev` links (step → steps of the previous cycle it reads), `once`
/// steps and gated steps.
fn cycling_plan(
    yaml: &str,
    count: Option<u64>,
    prev: &[(&str, &[&str])],
    once: &[(&str, Once)],
    gated: &[&str],
) -> Plan {
    use crate::model::{CycleSpec, Every, Point, Start, Wait};
    let file = SourceFile::new("test.yaml", yaml);
    let raw = crate::spec::parse(&file).unwrap_or_else(|d| panic!("{d:?}"));
    let mut wf = validate(file, raw, &Overrides::default()).unwrap_or_else(|d| panic!("{d:?}"));
    wf.cycle = Some(CycleSpec {
        every: Every::Int(1),
        start: Start::At(Point::Int(0)),
        end: count.map(crate::model::End::Cycles),
        runahead: 1,
        keep: None,
        span: Default::default(),
    });
    let idx = |wf: &crate::model::Workflow, n: &str| wf.steps.iter().position(|s| s.name == n).expect(n);
    for (step, reads) in prev {
        let i = idx(&wf, step);
        let mut deps: Vec<usize> = reads.iter().map(|r| idx(&wf, r)).collect();
        deps.sort();
        wf.steps[i].prev_deps = deps;
    }
    for (step, o) in once {
        let i = idx(&wf, step);
        wf.steps[i].once = Some(*o);
    }
    for step in gated {
        let i = idx(&wf, step);
        wf.steps[i].wait = Some(Wait {
            clock: Some(jiff::SignedDuration::ZERO),
            files: vec![],
            settle: Duration::ZERO,
            min_size: 0,
            command: vec![],
            poll: Duration::from_secs(1),
            signal: None,
            timeout: None,
            on_timeout: Default::default(),
            span: Default::default(),
        });
    }
    compile(Arc::new(wf)).unwrap_or_else(|d| panic!("{d:?}"))
}

impl Env {
    fn cycling(plan: Plan, runahead: u32, count: Option<u64>) -> Self {
        let mut e = Env::new("name: placeholder\nsteps:\n  x: { run: [x] }\n");
        e.plan = plan;
        e.opts.cycles = CycleWindow { runahead, count };
        e
    }
    fn new(yaml: &str) -> Self {
        Env {
            plan: plan(yaml),
            clock: VirtualClock::new(),
            capacity: Capacity { cores: Some(4), memory: None, max_jobs: None },
            opts: SchedOptions::default(),
            script: HashMap::new(),
            lives: HashMap::new(),
            decide: HashMap::new(),
            restored: vec![],
            adopted: vec![],
            restored_services: vec![],
            cancel_at: None,
            stop_at: None,
            gates: None,
            gate_timeout: None,
            gate_never: vec![],
            max_active: 0,
            footprints: vec![],
            log: vec![],
            effects: vec![],
            finish: None,
            peak: (0, 0),
        }
    }
    fn cores(mut self, c: u32) -> Self {
        self.capacity.cores = Some(c);
        self
    }
    fn memory(mut self, m: u64) -> Self {
        self.capacity.memory = Some(m);
        self
    }
    fn keep_going(mut self) -> Self {
        self.opts.keep_going = true;
        self
    }
    fn script(mut self, task: &str, attempts: &[(f64, End)]) -> Self {
        self.script.insert(task.into(), attempts.to_vec());
        self
    }
    fn lives(mut self, task: &str, lives: &[f64]) -> Self {
        self.lives.insert(task.into(), lives.to_vec());
        self
    }
    fn max_parallel(mut self, n: usize) -> Self {
        self.opts.max_parallel = Some(n);
        self
    }
    fn decide(mut self, task: &str, d: Decide) -> Self {
        self.decide.insert(task.into(), d);
        self
    }

    fn node(&self, name: &str) -> TaskId {
        task_id(&self.plan, name)
    }
    fn name(&self, t: TaskId) -> String {
        task_name(&self.plan, t)
    }
    /// Runs to the end, as `run::execute` drives the core.
    fn run(self) -> Self {
        self.run_from(0, &[])
    }

    /// Runs from cycle `first` (resume), cycles before it retired with `retired` states.
    fn run_from(mut self, first: u64, retired: &[(&str, TaskState)]) -> Self {
        let plan = &self.plan;
        let clock = &self.clock;
        let mut s = Scheduler::new(plan, clock, self.capacity, self.opts);
        s.start_at(first);
        for (n, st) in retired {
            s.restore_retired(task_id(plan, n), *st);
        }
        // (end time, start order, task, end)
        let mut jobs: Vec<(f64, usize, TaskId, End)> = vec![];
        let mut order = 0;
        let t = |c: &VirtualClock| c.elapsed().as_secs_f64();
        let name_of = |i: TaskId| task_name(plan, i);
        for (n, st, a) in &self.restored {
            s.restore(task_id(plan, n), *a, Some(*st));
        }
        for (n, a) in &self.restored_services {
            s.restore_service(task_id(plan, n), *a);
        }
        for (n, a, secs, end) in &self.adopted {
            s.adopt(task_id(plan, n), *a);
            jobs.push((*secs, order, task_id(plan, n), *end));
            order += 1;
        }
        s.seed();
        let mut log = vec![];
        let mut effects = vec![];
        let mut cancelled = false;
        let mut stopped = false;
        let mut peak = (0, 0);
        let mut turns = 0;
        let mut watches: HashMap<TaskId, Watch> = HashMap::new();
        let mut probe = NoFiles;
        let gates = self.gates;
        let gate_timeout = self.gate_timeout;
        let gate_never = self.gate_never.clone();
        let footprint_at: HashSet<u64> = self.footprints.iter().map(|(c, _)| *c).collect();
        let mut footprints = vec![];
        let mut max_active = 0;
        // Effects of the core since the last look: log cycles, watch gated tasks.
        let mut take = |s: &mut Scheduler<'_>,
                        effects: &mut Vec<Effect>,
                        log: &mut Vec<String>,
                        watches: &mut HashMap<TaskId, Watch>| {
            for e in s.take_effects() {
                match &e {
                    Effect::CycleStarted { cycle, .. } => log.push(format!("t={} cycle {cycle} started", t(clock))),
                    Effect::CycleFinished { cycle, .. } => {
                        log.push(format!("t={} cycle {cycle} finished", t(clock)));
                        if footprint_at.contains(cycle) {
                            footprints.push((*cycle, s.footprint()));
                        }
                    }
                    Effect::Gated { task } => {
                        let (first, every) = gates.expect("a gated task needs `gates`");
                        let at = first + every * task.cycle as f64;
                        let not_before = if gate_never.contains(&task.cycle) {
                            "9999-01-01T00:00:00Z".parse().unwrap()
                        } else {
                            jiff::Timestamp::UNIX_EPOCH + jiff::SignedDuration::from_secs_f64(at)
                        };
                        let (timeout, skip) = gate_timeout.unwrap_or((f64::INFINITY, false));
                        let on = if skip { crate::model::OnTimeout::Skip } else { crate::model::OnTimeout::Fail };
                        let timeout = timeout.is_finite().then(|| Duration::from_secs_f64(timeout));
                        let w = Watch::new(
                            clock.now(),
                            Some(not_before),
                            vec![],
                            Duration::ZERO,
                            0,
                            Duration::from_secs(3600),
                            timeout,
                            on,
                        );
                        watches.insert(*task, w);
                    }
                    _ => {}
                }
                effects.push(e);
            }
            max_active = max_active.max(s.active_cycles().len());
        };
        loop {
            turns += 1;
            assert!(turns < 1_000_000, "the run does not end: {log:#?}");
            s.promote_due();
            // Check the triggers that are due.
            let now = clock.now();
            let due: Vec<TaskId> = watches.iter().filter(|(_, w)| w.next_check <= now).map(|(t, _)| *t).collect();
            for task in due {
                let w = watches.get_mut(&task).unwrap();
                match w.check(now, clock.wall(), &mut probe) {
                    Poll::Wait(_) => {}
                    Poll::Ready(_) => {
                        watches.remove(&task);
                        log.push(format!("t={} open {}", t(clock), name_of(task)));
                        s.open_gate(task);
                    }
                    Poll::TimedOut { message, skip } => {
                        watches.remove(&task);
                        log.push(format!("t={} timeout {}", t(clock), name_of(task)));
                        s.gate_timed_out(task, message, skip);
                    }
                }
            }
            while let Some(i) = s.next_task() {
                let name = name_of(i);
                match self.decide.get(&name).cloned().unwrap_or(Decide::Run) {
                    Decide::Skip => s.skip(i, "`when` is false".into()),
                    Decide::Cached => s.reuse(i),
                    Decide::Unresolvable => s.fail(i, "cannot resolve".into()),
                    Decide::Run => {
                        let a = s.launch(i);
                        log.push(format!("t={} start {name}#{a}", t(clock)));
                        let plan_a = self.script.get(&name).cloned().unwrap_or_default();
                        let (secs, end) =
                            plan_a.get(a as usize - 1).or(plan_a.last()).copied().unwrap_or((1.0, End::Ok));
                        jobs.push((t(clock) + secs, order, i, end));
                        order += 1;
                    }
                }
                peak.0 = peak.0.max(s.running());
                peak.1 = peak.1.max(s.in_use().0);
            }
            // Services whose restart is due start again, ready at once.
            for i in s.due_restarts() {
                let a = s.relaunch(i);
                let name = name_of(i);
                log.push(format!("t={} restart {name}#{a}", t(clock)));
                let life = self.lives.get(&name).and_then(|l| l.get(a as usize - 1).or(l.last()).copied());
                jobs.push((t(clock) + life.unwrap_or(f64::INFINITY), order, i, End::Died));
                order += 1;
            }
            take(&mut s, &mut effects, &mut log, &mut watches);
            if s.is_done() {
                take(&mut s, &mut effects, &mut log, &mut watches);
                break;
            }
            // Only services are left: the backend stops them now.
            if s.work_done() {
                for i in s.stop_services() {
                    log.push(format!("t={} stop {}", t(clock), name_of(i)));
                    let ready = s.service_phase(i) != Some(ServicePhase::Starting);
                    jobs.retain(|j| j.2 != i);
                    jobs.push((t(clock), order, i, if ready { End::Stopped } else { End::Cancelled }));
                    order += 1;
                }
                take(&mut s, &mut effects, &mut log, &mut watches);
                // Services waiting for a restart were stopped at once.
                if s.is_done() {
                    break;
                }
            }
            take(&mut s, &mut effects, &mut log, &mut watches);
            // Advance the clock to the next event: a job ending, a retry coming due, a
            // trigger check, the cancel or stop request.
            let since = |w: Instant| clock.since_zero(w).as_secs_f64();
            let next_job = jobs.iter().map(|j| j.0).fold(f64::INFINITY, f64::min);
            let next_retry = s.next_wakeup().map_or(f64::INFINITY, since);
            let next_gate = watches.values().map(|w| since(w.next_check)).fold(f64::INFINITY, f64::min);
            let next_cancel = self.cancel_at.filter(|_| !cancelled).unwrap_or(f64::INFINITY);
            let next_stop = self.stop_at.filter(|_| !stopped).unwrap_or(f64::INFINITY);
            let next = next_job.min(next_retry).min(next_cancel).min(next_gate).min(next_stop);
            assert!(next.is_finite(), "nothing to wait for but the run is not done: {log:#?}");
            clock.advance_to(clock.now() + Duration::from_secs_f64(next - t(clock)).max(Duration::ZERO));
            if next_stop <= next && !stopped {
                stopped = true;
                s.stop();
                log.push(format!("t={} stop", t(clock)));
            }
            if next_cancel <= next {
                cancelled = true;
                if s.cancel() {
                    log.push(format!("t={} cancel", t(clock)));
                    // The backend stops every running job: they end now, as cancelled.
                    for j in &mut jobs {
                        j.0 = next;
                        j.3 = End::Cancelled;
                    }
                }
            }
            jobs.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            let due: Vec<_> = jobs.iter().take_while(|j| j.0 <= next).copied().collect();
            jobs.drain(..due.len());
            for (_, _, i, end) in due {
                let name = name_of(i);
                match end {
                    End::Ok if s.is_service(i) => {
                        log.push(format!("t={} ready {name}", t(clock)));
                        s.service_ready(i);
                        let a = s.attempts(i);
                        let life = self.lives.get(&name).and_then(|l| l.get(a as usize - 1).or(l.last()).copied());
                        jobs.push((t(clock) + life.unwrap_or(f64::INFINITY), order, i, End::Died));
                        order += 1;
                    }
                    End::Died | End::Stopped => {
                        log.push(format!(
                            "t={} {} {name}",
                            t(clock),
                            if end == End::Died { "died" } else { "stopped" }
                        ));
                        if s.service_died(i, "exit code 1".into()) {
                            // Failed for good: the driver stops whatever still runs.
                            log.push(format!("t={} stop running", t(clock)));
                            for j in jobs.iter_mut().filter(|j| !s.is_service(j.2)) {
                                j.0 = next;
                                j.3 = End::Cancelled;
                            }
                        }
                    }
                    End::Cancelled if matches!(s.service_phase(i), Some(p) if p != ServicePhase::Starting) => {
                        log.push(format!("t={} stopped {name}", t(clock)));
                        s.service_died(i, "cancelled".into());
                    }
                    End::Ok => {
                        log.push(format!("t={} ok {name}", t(clock)));
                        s.succeeded(i);
                    }
                    End::Fail => {
                        log.push(format!("t={} fail {name}", t(clock)));
                        s.attempt_failed(i, "exit code 1".into());
                    }
                    End::Cancelled => {
                        log.push(format!("t={} cancelled {name}", t(clock)));
                        s.attempt_cancelled(i);
                    }
                }
            }
            take(&mut s, &mut effects, &mut log, &mut watches);
        }
        let finish = s.finish();
        effects.extend(s.take_effects());
        drop(s);
        self.log = log;
        self.effects = effects;
        self.finish = Some(finish);
        self.peak = peak;
        self.max_active = max_active;
        self.footprints = footprints;
        self
    }

    fn log(&self) -> Vec<&str> {
        self.log.iter().map(String::as_str).collect()
    }
    fn starts(&self) -> Vec<&str> {
        self.log.iter().filter(|l| l.contains(" start ")).map(String::as_str).collect()
    }
    fn outcome(&self) -> RunOutcome {
        self.finish.as_ref().unwrap().outcome
    }
    fn counts(&self) -> Counts {
        self.finish.as_ref().unwrap().counts.clone()
    }
    /// Final state of every task, by name, from the effects (the last one wins).
    fn states(&self) -> HashMap<String, TaskState> {
        let mut m = HashMap::new();
        for e in &self.effects {
            match e {
                Effect::Finished { task, state, .. } => {
                    m.insert(self.name(*task), *state);
                }
                Effect::Pending { task } => {
                    m.insert(self.name(*task), TaskState::Pending);
                }
                _ => {}
            }
        }
        m
    }
    fn state_of(&self, task: &str) -> Option<TaskState> {
        self.states().get(task).copied()
    }
    fn message_of(&self, task: &str) -> Option<String> {
        let n = self.node(task);
        self.effects.iter().rev().find_map(|e| match e {
            Effect::Finished { task, message, .. } if *task == n => message.clone(),
            _ => None,
        })
    }
    fn retries(&self) -> Vec<(String, u32, f64)> {
        self.effects
            .iter()
            .filter_map(|e| match e {
                Effect::Retry { task, attempt, delay, .. } => Some((self.name(*task), *attempt, delay.as_secs_f64())),
                _ => None,
            })
            .collect()
    }
}

const CHAIN: &str = r#"
name: chain
steps:
  a: { run: [prog], out: { x: x.txt } }
  b: { run: [prog, "${{ steps.a.out.x }}"], out: { y: y.txt } }
  c: { run: [prog, "${{ steps.b.out.y }}"] }
"#;

fn independent(n: usize, resources: &str) -> String {
    let mut y = String::from("name: wide\nsteps:\n");
    for k in 0..n {
        y.push_str(&format!("  t{k}: {{ run: [prog], resources: {resources} }}\n"));
    }
    y
}

const RETRY: &str = r#"
name: retry
steps:
  flaky:
    run: [prog]
    out: { x: x.txt }
    retry: { count: 3, backoff: 5s, factor: 2, max_backoff: 12s }
  after: { run: [prog, "${{ steps.flaky.out.x }}"] }
"#;

const SCATTER: &str = r#"
name: ens
params:
  n: { type: int, default: 3 }
steps:
  sim:
    scatter: { over: { seed: "${{ range(0, params.n) }}" } }
    run: [prog, "${{ scatter.seed }}"]
    out: { r: r.nc }
  post:
    scatter: { over: { r: "${{ steps.sim.out.r }}" } }
    run: [prog, "${{ scatter.r }}"]
    out: { p: p.nc }
  gather: { run: [prog, "${{ steps.post.out.p }}"] }
"#;

// ---------------------------------------------------------------- order and dependencies

#[test]
fn a_chain_runs_in_dependency_order_one_after_another() {
    let e = Env::new(CHAIN).run();
    assert_eq!(e.log(), ["t=0 start a#1", "t=1 ok a", "t=1 start b#1", "t=2 ok b", "t=2 start c#1", "t=3 ok c"]);
    assert_eq!(e.outcome(), RunOutcome::Succeeded);
}

#[test]
fn independent_tasks_start_together_in_plan_order() {
    let e = Env::new(&independent(3, "{}")).run();
    assert_eq!(e.starts(), ["t=0 start t0#1", "t=0 start t1#1", "t=0 start t2#1"]);
}

#[test]
fn after_orders_steps_that_share_no_data() {
    let e = Env::new(
        r#"
name: after
steps:
  first: { run: [prog] }
  second: { run: [prog], after: [first] }
"#,
    )
    .script("first", &[(2.0, End::Ok)])
    .run();
    assert_eq!(e.starts(), ["t=0 start first#1", "t=2 start second#1"]);
}

#[test]
fn a_diamond_waits_for_both_branches() {
    let e = Env::new(
        r#"
name: diamond
steps:
  top: { run: [prog], out: { x: x } }
  left: { run: [prog, "${{ steps.top.out.x }}"], out: { l: l } }
  right: { run: [prog, "${{ steps.top.out.x }}"], out: { r: r } }
  bottom: { run: [prog, "${{ steps.left.out.l }}", "${{ steps.right.out.r }}"] }
"#,
    )
    .script("right", &[(3.0, End::Ok)])
    .run();
    assert_eq!(e.starts(), ["t=0 start top#1", "t=1 start left#1", "t=1 start right#1", "t=4 start bottom#1"]);
}

#[test]
fn task_durations_are_reported_in_virtual_seconds() {
    let e = Env::new(CHAIN).script("b", &[(7.5, End::Ok)]).run();
    let secs = e.effects.iter().find_map(|f| match f {
        Effect::Finished { task, seconds, .. } if *task == e.node("b") => Some(*seconds),
        _ => None,
    });
    assert_eq!(secs, Some(7.5));
}

// ---------------------------------------------------------------- resources and backfill

#[test]
fn cores_limit_how_many_tasks_run_at_once() {
    let e = Env::new(&independent(4, "{ ranks: 1 }")).cores(2).run();
    assert_eq!(e.starts(), ["t=0 start t0#1", "t=0 start t1#1", "t=1 start t2#1", "t=1 start t3#1"]);
    assert_eq!(e.peak, (2, 2));
}

#[test]
fn a_task_counts_ranks_times_threads_cores() {
    let e = Env::new(&independent(3, "{ ranks: 2, threads: 2 }")).cores(8).run();
    // 4 cores each: two fit in 8.
    assert_eq!(e.starts(), ["t=0 start t0#1", "t=0 start t1#1", "t=1 start t2#1"]);
    assert_eq!(e.peak.1, 8);
}

#[test]
fn a_wide_task_waits_until_enough_cores_are_free() {
    let e = Env::new(
        r#"
name: wide
steps:
  small: { run: [prog], resources: { ranks: 3 } }
  big: { run: [prog], resources: { ranks: 2 } }
"#,
    )
    .cores(4)
    .script("small", &[(5.0, End::Ok)])
    .run();
    assert_eq!(e.starts(), ["t=0 start small#1", "t=5 start big#1"]);
}

#[test]
fn backfill_starts_smaller_tasks_behind_one_that_does_not_fit() {
    let e = Env::new(
        r#"
name: backfill
steps:
  first: { run: [prog], resources: { ranks: 3 } }
  big: { run: [prog], resources: { ranks: 4 } }
  small: { run: [prog], resources: { ranks: 1 } }
"#,
    )
    .cores(4)
    .script("first", &[(2.0, End::Ok)])
    .run();
    // `big` does not fit beside `first`; `small` does and is not held up behind it.
    assert_eq!(e.starts(), ["t=0 start first#1", "t=0 start small#1", "t=2 start big#1"]);
}

#[test]
fn backfill_by_memory() {
    let e = Env::new(
        r#"
name: mem
steps:
  a: { run: [prog], resources: { memory: 6G } }
  b: { run: [prog], resources: { memory: 6G } }
  c: { run: [prog], resources: { memory: 2G } }
"#,
    )
    .cores(16)
    .memory(8 << 30)
    .run();
    assert_eq!(e.starts(), ["t=0 start a#1", "t=0 start c#1", "t=1 start b#1"]);
}

#[test]
fn tasks_without_a_memory_request_are_not_held_by_memory() {
    let e = Env::new(
        r#"
name: mem0
steps:
  a: { run: [prog], resources: { memory: 8G } }
  b: { run: [prog] }
"#,
    )
    .cores(16)
    .memory(8 << 30)
    .run();
    assert_eq!(e.starts(), ["t=0 start a#1", "t=0 start b#1"]);
}

#[test]
fn a_task_larger_than_the_machine_still_runs_alone() {
    let e = Env::new(
        r#"
name: huge
steps:
  huge: { run: [prog], resources: { ranks: 64 } }
  next: { run: [prog], resources: { ranks: 1 } }
"#,
    )
    .cores(4)
    .run();
    // Alone when nothing else runs; `next` fits beside nothing else (64 > 4 cores).
    assert_eq!(e.starts(), ["t=0 start huge#1", "t=1 start next#1"]);
    assert_eq!(e.outcome(), RunOutcome::Succeeded);
}

#[test]
fn max_parallel_caps_attempts_in_flight() {
    let mut e = Env::new(&independent(5, "{}")).cores(64);
    e.opts.max_parallel = Some(2);
    let e = e.run();
    assert_eq!(e.peak.0, 2);
    assert_eq!(e.starts().iter().filter(|l| l.starts_with("t=0 ")).count(), 2);
}

#[test]
fn the_backends_job_limit_caps_attempts_in_flight() {
    let mut e = Env::new(&independent(5, "{}"));
    e.capacity = Capacity { cores: None, memory: None, max_jobs: Some(3) };
    let e = e.run();
    assert_eq!(e.peak.0, 3);
    assert_eq!(e.starts().iter().filter(|l| l.starts_with("t=1 ")).count(), 2);
}

#[test]
fn an_unlimited_backend_starts_everything_ready() {
    let mut e = Env::new(&independent(50, "{ ranks: 8 }"));
    e.capacity = Capacity::default();
    let e = e.run();
    assert_eq!(e.peak.0, 50);
}

#[test]
fn backfill_looks_at_most_a_window_of_tasks_ahead() {
    // 70 tasks needing 4 cores each wait behind a running one; the 1-core task after them
    // is beyond the backfill window and waits too.
    let mut y = String::from("name: window\nsteps:\n  first: { run: [prog], resources: { ranks: 1 } }\n");
    for k in 0..70 {
        y.push_str(&format!("  big{k}: {{ run: [prog], resources: {{ ranks: 4 }} }}\n"));
    }
    y.push_str("  late: { run: [prog], resources: { ranks: 1 } }\n");
    let e = Env::new(&y).cores(4).script("first", &[(3.0, End::Ok)]).run();
    assert_eq!(&e.starts()[..1], ["t=0 start first#1"]);
    assert!(!e.starts().contains(&"t=0 start late#1"), "{:?}", e.starts());
}

// ---------------------------------------------------------------- retries

#[test]
fn a_failed_attempt_is_retried_after_the_backoff() {
    let e = Env::new(RETRY).script("flaky", &[(1.0, End::Fail), (1.0, End::Ok)]).run();
    assert_eq!(
        e.log(),
        [
            "t=0 start flaky#1",
            "t=1 fail flaky",
            "t=6 start flaky#2",
            "t=7 ok flaky",
            "t=7 start after#1",
            "t=8 ok after"
        ]
    );
    assert_eq!(e.retries(), [("flaky".to_string(), 1, 5.0)]);
    assert_eq!(e.outcome(), RunOutcome::Succeeded);
}

#[test]
fn backoff_grows_by_its_factor_and_stops_at_max_backoff() {
    let e =
        Env::new(RETRY).script("flaky", &[(1.0, End::Fail), (1.0, End::Fail), (1.0, End::Fail), (1.0, End::Ok)]).run();
    // 5 s, 10 s, then 20 s capped at 12 s.
    assert_eq!(
        e.retries(),
        [("flaky".to_string(), 1, 5.0), ("flaky".to_string(), 2, 10.0), ("flaky".to_string(), 3, 12.0)]
    );
    assert_eq!(
        e.starts(),
        ["t=0 start flaky#1", "t=6 start flaky#2", "t=17 start flaky#3", "t=30 start flaky#4", "t=31 start after#1"]
    );
}

#[test]
fn a_task_fails_for_good_when_its_retries_are_used_up() {
    let e = Env::new(RETRY).script("flaky", &[(1.0, End::Fail)]).run();
    assert_eq!(e.starts().len(), 4, "count 3 = 4 attempts: {:?}", e.log());
    assert_eq!(e.state_of("flaky"), Some(TaskState::Failed));
    assert_eq!(e.state_of("after"), Some(TaskState::UpstreamFailed));
    assert_eq!(e.message_of("after").as_deref(), Some("upstream `flaky` did not succeed"));
    assert_eq!(e.outcome(), RunOutcome::Failed);
    assert_eq!(e.finish.as_ref().unwrap().failures, [(e.node("flaky"), TaskFailure::Failed("exit code 1".into()))]);
}

#[test]
fn without_retry_a_failure_is_final_at_once() {
    let e = Env::new(CHAIN).script("a", &[(1.0, End::Fail)]).run();
    assert_eq!(e.log(), ["t=0 start a#1", "t=1 fail a"]);
    assert!(e.retries().is_empty());
    assert_eq!(e.state_of("a"), Some(TaskState::Failed));
}

#[test]
fn other_tasks_keep_running_while_a_retry_waits() {
    let e = Env::new(&format!("{RETRY}  slow: {{ run: [prog] }}\n"))
        .script("flaky", &[(1.0, End::Fail), (1.0, End::Ok)])
        .script("slow", &[(4.0, End::Ok)])
        .run();
    assert!(e.log().contains(&"t=4 ok slow"), "{:?}", e.log());
    assert!(e.log().contains(&"t=6 start flaky#2"), "{:?}", e.log());
}

#[test]
fn the_earliest_waiting_retry_sets_the_next_wakeup() {
    let e = Env::new(
        r#"
name: two
steps:
  a: { run: [prog], retry: { count: 1, backoff: 9s } }
  b: { run: [prog], retry: { count: 1, backoff: 2s } }
"#,
    )
    .script("a", &[(1.0, End::Fail), (1.0, End::Ok)])
    .script("b", &[(1.0, End::Fail), (1.0, End::Ok)])
    .run();
    assert_eq!(e.starts(), ["t=0 start a#1", "t=0 start b#1", "t=3 start b#2", "t=10 start a#2"]);
}

#[test]
fn a_task_that_cannot_be_resolved_fails_without_retry() {
    let e = Env::new(RETRY).decide("flaky", Decide::Unresolvable).run();
    assert!(e.starts().is_empty());
    assert_eq!(e.state_of("flaky"), Some(TaskState::Failed));
    assert_eq!(e.message_of("flaky").as_deref(), Some("cannot resolve"));
    assert_eq!(e.state_of("after"), Some(TaskState::UpstreamFailed));
}

// ---------------------------------------------------------------- fail-fast and keep-going

const TWO_BRANCHES: &str = r#"
name: branches
steps:
  bad: { run: [prog], out: { x: x } }
  bad_child: { run: [prog, "${{ steps.bad.out.x }}"] }
  good: { run: [prog], out: { y: y } }
  good_child: { run: [prog, "${{ steps.good.out.y }}"] }
"#;

#[test]
fn fail_fast_starts_nothing_after_a_final_failure_but_lets_running_tasks_finish() {
    let e = Env::new(TWO_BRANCHES).script("bad", &[(1.0, End::Fail)]).script("good", &[(3.0, End::Ok)]).run();
    assert_eq!(e.log(), ["t=0 start bad#1", "t=0 start good#1", "t=1 fail bad", "t=3 ok good"]);
    assert_eq!(e.state_of("good"), Some(TaskState::Succeeded));
    assert_eq!(e.state_of("good_child"), None, "never started, still pending");
    assert_eq!(e.counts().pending, 1);
    assert_eq!(e.outcome(), RunOutcome::Failed);
}

#[test]
fn keep_going_runs_independent_branches_to_the_end() {
    let e =
        Env::new(TWO_BRANCHES).keep_going().script("bad", &[(1.0, End::Fail)]).script("good", &[(3.0, End::Ok)]).run();
    assert_eq!(e.state_of("good_child"), Some(TaskState::Succeeded));
    assert_eq!(e.state_of("bad_child"), Some(TaskState::UpstreamFailed));
    let c = e.counts();
    assert_eq!((c.succeeded, c.failed, c.upstream_failed, c.pending), (2, 1, 1, 0));
    assert_eq!(e.outcome(), RunOutcome::Failed);
}

#[test]
fn upstream_failure_propagates_transitively() {
    let e = Env::new(CHAIN).keep_going().script("a", &[(1.0, End::Fail)]).run();
    assert_eq!(e.state_of("b"), Some(TaskState::UpstreamFailed));
    assert_eq!(e.state_of("c"), Some(TaskState::UpstreamFailed));
    assert_eq!(e.message_of("c").as_deref(), Some("upstream `b` did not succeed"));
}

#[test]
fn fail_fast_returns_a_waiting_retry_to_pending() {
    let e = Env::new(&format!("{RETRY}  bad: {{ run: [prog] }}\n"))
        .script("flaky", &[(1.0, End::Fail)])
        .script("bad", &[(2.0, End::Fail)])
        .run();
    // `flaky` waits for its retry (due at 6 s) when `bad` fails for good at 2 s.
    assert_eq!(e.log(), ["t=0 start flaky#1", "t=0 start bad#1", "t=1 fail flaky", "t=2 fail bad"]);
    assert!(e.effects.contains(&Effect::Pending { task: e.node("flaky") }));
    assert_eq!(e.state_of("flaky"), Some(TaskState::Pending));
    assert_eq!(e.outcome(), RunOutcome::Failed);
}

#[test]
fn keep_going_still_retries_after_another_task_failed() {
    let e = Env::new(&format!("{RETRY}  bad: {{ run: [prog] }}\n"))
        .keep_going()
        .script("flaky", &[(1.0, End::Fail), (1.0, End::Ok)])
        .script("bad", &[(2.0, End::Fail)])
        .run();
    assert_eq!(e.state_of("flaky"), Some(TaskState::Succeeded));
    assert_eq!(e.state_of("after"), Some(TaskState::Succeeded));
}

#[test]
fn a_failed_member_fails_the_gather_but_not_its_siblings() {
    let e = Env::new(SCATTER).keep_going().script("sim[1]", &[(1.0, End::Fail)]).run();
    assert_eq!(e.state_of("post[0]"), Some(TaskState::Succeeded));
    assert_eq!(e.state_of("post[2]"), Some(TaskState::Succeeded));
    assert_eq!(e.state_of("post[1]"), Some(TaskState::UpstreamFailed));
    assert_eq!(e.state_of("gather"), Some(TaskState::UpstreamFailed));
}

// ---------------------------------------------------------------- scatter, gather, when

#[test]
fn members_link_one_to_one_without_waiting_for_the_whole_ensemble() {
    let e = Env::new(SCATTER).script("sim[2]", &[(5.0, End::Ok)]).run();
    assert!(e.log().contains(&"t=1 start post[0]#1"), "{:?}", e.log());
    assert!(e.log().contains(&"t=5 start post[2]#1"), "{:?}", e.log());
}

#[test]
fn members_released_together_start_in_member_order() {
    let e = Env::new(
        r#"
name: fan
steps:
  prep: { run: [prog], out: { c: c } }
  member:
    scatter: { over: { k: "${{ range(0, 4) }}" } }
    run: [prog, "${{ steps.prep.out.c }}", "${{ scatter.k }}"]
"#,
    )
    .cores(2)
    .run();
    assert_eq!(
        e.starts(),
        [
            "t=0 start prep#1",
            "t=1 start member[0]#1",
            "t=1 start member[1]#1",
            "t=2 start member[2]#1",
            "t=2 start member[3]#1"
        ]
    );
}

#[test]
fn a_gather_waits_for_every_member() {
    let e = Env::new(SCATTER).script("post[1]", &[(4.0, End::Ok)]).run();
    assert_eq!(e.starts().last(), Some(&"t=5 start gather#1"));
    assert_eq!(e.counts().succeeded, 7);
}

#[test]
fn a_false_when_skips_the_task_and_its_dependants() {
    let e = Env::new(CHAIN).decide("b", Decide::Skip).run();
    assert_eq!(e.starts(), ["t=0 start a#1"]);
    assert_eq!(e.state_of("b"), Some(TaskState::Skipped));
    assert_eq!(e.state_of("c"), Some(TaskState::Skipped));
    assert_eq!(e.message_of("c").as_deref(), Some("upstream `b` was skipped"));
    assert_eq!(e.outcome(), RunOutcome::Succeeded);
}

#[test]
fn a_skipped_member_skips_its_own_chain_and_the_gather_still_runs() {
    let e = Env::new(SCATTER).decide("sim[1]", Decide::Skip).run();
    assert_eq!(e.state_of("post[1]"), Some(TaskState::Skipped));
    assert_eq!(e.state_of("gather"), Some(TaskState::Succeeded));
    assert!(!e.starts().iter().any(|l| l.contains("post[1]")));
}

#[test]
fn a_gather_of_only_skipped_members_is_skipped() {
    let e = Env::new(SCATTER)
        .decide("post[0]", Decide::Skip)
        .decide("post[1]", Decide::Skip)
        .decide("post[2]", Decide::Skip)
        .run();
    assert_eq!(e.state_of("gather"), Some(TaskState::Skipped));
    assert_eq!(e.outcome(), RunOutcome::Succeeded);
    assert_eq!(e.counts().skipped, 4);
}

#[test]
fn a_scatter_over_an_empty_list_lets_the_gather_skip() {
    let wf = SCATTER
        .replace("default: 3", "default: 0")
        .replace("params.n) }}\" } }", "params.n) }}\" }, allow_empty: true }");
    assert!(wf.contains("allow_empty"), "{wf}");
    let e = Env::new(&wf).run();
    assert!(e.starts().is_empty(), "{:?}", e.log());
    assert_eq!(e.outcome(), RunOutcome::Succeeded);
}

#[test]
fn a_cached_task_does_not_run_and_releases_its_dependants() {
    let e = Env::new(CHAIN).decide("a", Decide::Cached).run();
    assert_eq!(e.starts(), ["t=0 start b#1", "t=1 start c#1"]);
    assert_eq!(e.state_of("a"), Some(TaskState::Cached));
}

#[test]
fn a_run_of_cached_and_skipped_tasks_succeeds_without_starting_anything() {
    let e = Env::new(CHAIN).decide("a", Decide::Cached).decide("b", Decide::Skip).run();
    assert!(e.starts().is_empty());
    let c = e.counts();
    assert_eq!((c.cached, c.skipped), (1, 2));
    assert_eq!(e.outcome(), RunOutcome::Succeeded);
}

// ---------------------------------------------------------------- cancellation

#[test]
fn cancel_stops_running_tasks_and_starts_nothing_more() {
    let mut e = Env::new(CHAIN).script("a", &[(10.0, End::Ok)]);
    e.cancel_at = Some(2.0);
    let e = e.run();
    assert_eq!(e.log(), ["t=0 start a#1", "t=2 cancel", "t=2 cancelled a"]);
    assert_eq!(e.state_of("a"), Some(TaskState::Cancelled));
    assert_eq!(e.state_of("b"), None);
    assert_eq!(e.outcome(), RunOutcome::Cancelled);
    assert_eq!(e.counts().pending, 2);
}

#[test]
fn attempt_failed_while_cancelling_is_not_retried() {
    let p = plan(RETRY);
    let clock = VirtualClock::new();
    let mut s = Scheduler::new(&p, &clock, Capacity::default(), SchedOptions::default());
    s.seed();
    let i = s.next_task().unwrap();
    assert_eq!(s.launch(i), 1);
    assert!(s.cancel());
    assert!(!s.cancel(), "a second cancel is not a new one");
    s.attempt_failed(i, "killed by signal 15".into());
    assert_eq!(s.state(i), Some(NodeState::Done(TaskState::Cancelled)));
    assert!(s.next_task().is_none());
    assert!(s.is_done());
    assert_eq!(s.finish().outcome, RunOutcome::Cancelled);
}

#[test]
fn cancel_during_a_retry_wait_returns_the_task_to_pending() {
    let mut e = Env::new(RETRY).script("flaky", &[(1.0, End::Fail)]);
    e.cancel_at = Some(3.0);
    let e = e.run();
    assert_eq!(e.log(), ["t=0 start flaky#1", "t=1 fail flaky", "t=3 cancel"]);
    assert_eq!(e.state_of("flaky"), Some(TaskState::Pending));
    assert_eq!(e.outcome(), RunOutcome::Cancelled);
}

#[test]
fn a_job_cancelled_outside_twinflow_leaves_the_run_going_and_its_dependants_pending() {
    let e = Env::new(TWO_BRANCHES).keep_going().script("bad", &[(1.0, End::Cancelled)]).run();
    assert_eq!(e.state_of("bad"), Some(TaskState::Cancelled));
    assert_eq!(e.state_of("bad_child"), None);
    assert_eq!(e.state_of("good_child"), Some(TaskState::Succeeded));
    assert_eq!(e.outcome(), RunOutcome::Failed, "a pending task means the run did not finish");
}

// ---------------------------------------------------------------- resume and adoption

#[test]
fn resume_keeps_finished_tasks_and_runs_the_rest() {
    let mut e = Env::new(CHAIN);
    e.restored = vec![("a".into(), TaskState::Succeeded, 1)];
    let e = e.run();
    assert_eq!(e.starts(), ["t=0 start b#1", "t=1 start c#1"]);
    assert_eq!(e.counts().succeeded, 3);
}

#[test]
fn resume_numbers_attempts_after_the_earlier_engines() {
    let mut e = Env::new(CHAIN);
    e.restored = vec![("a".into(), TaskState::Succeeded, 1), ("b".into(), TaskState::Pending, 2)];
    let e = e.run();
    assert_eq!(e.starts(), ["t=0 start b#3", "t=1 start c#1"]);
}

#[test]
fn resume_starts_again_a_task_that_was_running_or_failed() {
    let mut e = Env::new(CHAIN);
    e.restored = vec![("a".into(), TaskState::Running, 1)];
    let e = e.run();
    assert_eq!(e.starts()[0], "t=0 start a#2");
}

#[test]
fn resume_propagates_a_restored_skip_to_dependants_not_yet_recorded() {
    let mut e = Env::new(CHAIN);
    e.restored = vec![("a".into(), TaskState::Succeeded, 1), ("b".into(), TaskState::Skipped, 0)];
    let e = e.run();
    assert!(e.starts().is_empty());
    assert_eq!(e.state_of("c"), Some(TaskState::Skipped));
}

#[test]
fn resume_completes_a_gather_whose_members_all_finished_earlier() {
    let mut e = Env::new(SCATTER);
    for k in 0..3 {
        e.restored.push((format!("sim[{k}]"), TaskState::Succeeded, 1));
        e.restored.push((format!("post[{k}]"), TaskState::Cached, 0));
    }
    let e = e.run();
    assert_eq!(e.starts(), ["t=0 start gather#1"]);
}

#[test]
fn an_adopted_job_is_followed_not_started_again_and_releases_its_dependants() {
    let mut e = Env::new(CHAIN);
    e.adopted = vec![("a".into(), 1, 4.0, End::Ok)];
    let e = e.run();
    assert_eq!(e.log(), ["t=4 ok a", "t=4 start b#1", "t=5 ok b", "t=5 start c#1", "t=6 ok c"]);
}

#[test]
fn an_adopted_job_holds_its_cores() {
    let mut e = Env::new(&independent(2, "{ ranks: 4 }")).cores(4);
    e.adopted = vec![("t0".into(), 1, 3.0, End::Ok)];
    let e = e.run();
    assert_eq!(e.starts(), ["t=3 start t1#1"]);
}

#[test]
fn an_adopted_job_that_fails_is_retried_with_the_next_attempt_number() {
    let mut e = Env::new(RETRY);
    e.adopted = vec![("flaky".into(), 2, 1.0, End::Fail)];
    let e = e.run();
    // Attempt 2 failed: the second retry waits 5 s × 2.
    assert_eq!(e.retries(), [("flaky".to_string(), 2, 10.0)]);
    assert_eq!(e.starts()[0], "t=11 start flaky#3");
}

// ---------------------------------------------------------------- accounting

#[test]
fn resources_are_returned_when_attempts_end_however_they_end() {
    let p = plan(&independent(3, "{ ranks: 2, memory: 1G }"));
    let clock = VirtualClock::new();
    let cap = Capacity { cores: Some(64), memory: Some(64 << 30), max_jobs: None };
    let mut s = Scheduler::new(&p, &clock, cap, SchedOptions { keep_going: true, ..Default::default() });
    s.seed();
    let (a, b, c) = (s.next_task().unwrap(), s.next_task().unwrap(), s.next_task().unwrap());
    for i in [a, b, c] {
        s.launch(i);
    }
    assert_eq!(s.in_use(), (6, 3 << 30));
    s.succeeded(a);
    s.attempt_failed(b, "exit code 2".into());
    s.fail(c, "publishing `x` failed".into());
    assert_eq!(s.in_use(), (0, 0));
    assert_eq!(s.running(), 0);
    assert!(s.is_done());
}

/// A task that ran and then failed (its results could not be published) reports the time
/// it ran, not 0 (`--json` showed `"seconds": 0.0` for a task that ran 0.18 s).
#[test]
fn a_task_failed_after_it_ran_keeps_its_running_time() {
    let p = plan(&independent(2, "{ ranks: 1 }"));
    let clock = VirtualClock::new();
    let cap = Capacity { cores: Some(4), memory: None, max_jobs: None };
    let mut s = Scheduler::new(&p, &clock, cap, SchedOptions { keep_going: true, ..Default::default() });
    s.seed();
    let (a, b) = (s.next_task().unwrap(), s.next_task().unwrap());
    s.launch(a);
    clock.advance(Duration::from_millis(180));
    s.fail(a, "publishing `x` failed".into());
    // Never launched: it did not run.
    s.fail(b, "cannot resolve".into());
    let secs: Vec<(TaskId, f64)> = s
        .take_effects()
        .into_iter()
        .filter_map(|e| match e {
            Effect::Finished { task, state: TaskState::Failed, seconds, .. } => Some((task, seconds)),
            _ => None,
        })
        .collect();
    assert_eq!(secs, [(a, 0.18), (b, 0.0)]);
}

#[test]
fn counts_leave_out_joins_and_add_up_to_the_task_count() {
    let e = Env::new(SCATTER).keep_going().script("sim[0]", &[(1.0, End::Fail)]).decide("post[2]", Decide::Skip).run();
    let c = e.counts();
    let total = c.succeeded + c.cached + c.skipped + c.failed + c.upstream_failed + c.cancelled + c.pending;
    assert_eq!(total, e.plan.task_count());
    assert_eq!((c.failed, c.skipped, c.upstream_failed), (1, 1, 2), "{c:?}");
}

#[test]
fn every_task_gets_exactly_one_final_state() {
    let e = Env::new(SCATTER).keep_going().script("post[1]", &[(1.0, End::Fail)]).run();
    let mut seen = HashSet::new();
    for f in &e.effects {
        if let Effect::Finished { task, .. } = f {
            assert!(seen.insert(*task), "{} finished twice", e.name(*task));
        }
    }
    assert_eq!(seen.len(), e.plan.task_count());
}

#[test]
fn the_same_script_gives_the_same_timeline() {
    let run = || {
        Env::new(SCATTER)
            .cores(2)
            .script("sim[1]", &[(2.5, End::Fail), (0.5, End::Ok)])
            .script("post[0]", &[(3.0, End::Ok)])
            .run()
            .log
    };
    assert_eq!(run(), run());
}

// ---------------------------------------------------------------- cycles

/// `step` reads its own result of the previous cycle (`prev.steps.step...`), `post` reads
/// `step` of its cycle.
const CYCLE_CHAIN: &str = r#"
name: cyc
steps:
  step: { run: [prog], out: { x: x.txt } }
  post: { run: [prog, "${{ steps.step.out.x }}"] }
"#;

fn starts_of<'a>(e: &'a Env, task: &str) -> Vec<&'a str> {
    e.log.iter().filter(|l| l.contains(&format!(" start {task}"))).map(String::as_str).collect()
}

#[test]
fn cycles_run_in_order_where_prev_links_them_and_overlap_where_they_do_not() {
    let plan = cycling_plan(CYCLE_CHAIN, Some(3), &[("step", &["step"])], &[], &[]);
    let e = Env::cycling(plan, 1, Some(3)).script("0/post", &[(5.0, End::Ok)]).run();
    assert_eq!(e.outcome(), RunOutcome::Succeeded);
    assert_eq!(e.counts().succeeded, 6);
    // step of cycle k starts when step of cycle k-1 ends; post of cycle 0 (5 s) runs
    // beside cycle 1, but cycle 2 waits for cycle 0 to finish (runahead 1).
    assert_eq!(
        e.log(),
        [
            "t=0 start 0/step#1",
            "t=0 cycle 0 started",
            "t=0 cycle 1 started",
            "t=1 ok 0/step",
            "t=1 start 0/post#1",
            "t=1 start 1/step#1",
            "t=2 ok 1/step",
            "t=2 start 1/post#1",
            "t=3 ok 1/post",
            "t=6 ok 0/post",
            "t=6 start 2/step#1",
            "t=6 cycle 0 finished",
            "t=6 cycle 1 finished",
            "t=6 cycle 2 started",
            "t=7 ok 2/step",
            "t=7 start 2/post#1",
            "t=8 ok 2/post",
            "t=8 cycle 2 finished",
        ]
    );
}

#[test]
fn never_more_than_runahead_plus_one_cycles_are_active() {
    for runahead in [0, 1, 3] {
        let plan = cycling_plan(CYCLE_CHAIN, Some(12), &[], &[], &[]);
        // Cycle 0's post is slow: later cycles run ahead until the window is full.
        let e = Env::cycling(plan, runahead, Some(12)).script("0/post", &[(20.0, End::Ok)]).run();
        assert_eq!(e.outcome(), RunOutcome::Succeeded);
        assert_eq!(e.counts().succeeded, 24);
        assert_eq!(e.max_active, runahead as usize + 1, "runahead {runahead}");
        let at = |l: &str| l[2..].split(' ').next().unwrap().parse::<f64>().unwrap();
        let before_slow_ends = e.log.iter().filter(|l| l.ends_with(" started") && at(l) < 21.0).count();
        assert_eq!(before_slow_ends, runahead as usize + 1, "runahead {runahead}: {:#?}", e.log);
    }
}

#[test]
fn once_first_runs_in_cycle_zero_and_later_cycles_wait_for_it() {
    let yaml = r#"
name: cyc
steps:
  terrain: { run: [prog], out: { dem: dem.nc } }
  model: { run: [prog, "${{ steps.terrain.out.dem }}"] }
"#;
    let plan = cycling_plan(yaml, Some(3), &[], &[("terrain", Once::First)], &[]);
    let e = Env::cycling(plan, 2, Some(3)).script("0/terrain", &[(4.0, End::Ok)]).run();
    assert_eq!(e.outcome(), RunOutcome::Succeeded);
    assert_eq!(starts_of(&e, "0/terrain").len(), 1);
    assert!(e.log.iter().all(|l| !l.contains("1/terrain") && !l.contains("2/terrain")), "{:#?}", e.log);
    // Every cycle's model starts once terrain (cycle 0) is done, at t=4.
    for c in 0..3 {
        assert_eq!(starts_of(&e, &format!("{c}/model")), [format!("t=4 start {c}/model#1")]);
    }
    assert_eq!(e.counts().succeeded, 4, "terrain once, model three times");
}

#[test]
fn once_last_runs_only_in_the_last_cycle() {
    let yaml = r#"
name: cyc
steps:
  step: { run: [prog], out: { x: x.txt } }
  report: { run: [prog, "${{ steps.step.out.x }}"] }
"#;
    let plan = cycling_plan(yaml, Some(4), &[], &[("report", Once::Last)], &[]);
    let e = Env::cycling(plan, 1, Some(4)).run();
    assert_eq!(e.outcome(), RunOutcome::Succeeded);
    let reports: Vec<&str> = e.log.iter().filter(|l| l.contains("report")).map(String::as_str).collect();
    // Cycles 2 and 3 run at t=1 (no link between cycles, runahead 1).
    assert_eq!(reports, ["t=2 start 3/report#1", "t=3 ok 3/report"]);
    assert_eq!(e.counts().succeeded, 5);
}

#[test]
fn a_failure_blocks_its_dependants_in_later_cycles_and_holds_the_window() {
    let plan = cycling_plan(CYCLE_CHAIN, Some(10), &[("step", &["step"])], &[], &[]);
    let e = Env::cycling(plan, 2, Some(10)).keep_going().script("1/post", &[(1.0, End::Fail)]).run();
    assert_eq!(e.outcome(), RunOutcome::Failed);
    let fin = e.finish.as_ref().unwrap();
    assert_eq!(fin.held_by, Some(1), "cycle 1 holds the run");
    // Independent work of later cycles went on up to the runahead limit (cycles 2 and 3),
    // and no further.
    assert_eq!(e.state_of("3/post"), Some(TaskState::Succeeded));
    assert!(e.log.iter().all(|l| !l.contains(" 4/")), "cycle 4 must not start: {:#?}", e.log);
    assert_eq!(fin.next_cycle, 4);
}

#[test]
fn a_failure_through_prev_is_upstream_failed_in_the_next_cycle() {
    let plan = cycling_plan(CYCLE_CHAIN, Some(5), &[("step", &["step"])], &[], &[]);
    let e = Env::cycling(plan, 1, Some(5)).keep_going().script("1/step", &[(1.0, End::Fail)]).run();
    assert_eq!(e.state_of("1/step"), Some(TaskState::Failed));
    assert_eq!(e.state_of("1/post"), Some(TaskState::UpstreamFailed));
    assert_eq!(e.state_of("2/step"), Some(TaskState::UpstreamFailed));
    assert_eq!(e.message_of("2/step").as_deref(), Some("upstream `step` of the previous cycle did not succeed"));
    assert_eq!(e.finish.as_ref().unwrap().held_by, Some(1));
}

#[test]
fn past_cycles_catch_up_at_once_and_live_ones_wait_for_their_clock() {
    // Cycle k's gate opens at wall-clock 10 k - 30 s: cycles 0..=3 are in the past when
    // the run starts at t=0 (reanalysis), 4 and 5 are live.
    let plan = cycling_plan(CYCLE_CHAIN, Some(6), &[("step", &["step"])], &[], &["step"]);
    let mut e = Env::cycling(plan, 1, Some(6));
    e.gates = Some((-30.0, 10.0));
    let e = e.run();
    assert_eq!(e.outcome(), RunOutcome::Succeeded);
    let opens: Vec<&str> = e.log.iter().filter(|l| l.contains(" open ")).map(String::as_str).collect();
    assert_eq!(
        opens,
        [
            "t=0 open 0/step",
            "t=1 open 1/step",
            "t=2 open 2/step",
            "t=3 open 3/step",
            "t=10 open 4/step",
            "t=20 open 5/step"
        ],
        "past cycles run as fast as their dependencies allow (k/step after (k-1)/step), then each waits for its point"
    );
}

#[test]
fn a_trigger_timeout_skips_the_cycle_dependants_and_later_cycles_go_on() {
    let plan = cycling_plan(CYCLE_CHAIN, Some(3), &[], &[], &["step"]);
    let mut e = Env::cycling(plan, 0, Some(3));
    // Every gate is open (past points) but cycle 1's, which never opens.
    e.gates = Some((-100.0, 0.0));
    e.gate_never = vec![1];
    e.gate_timeout = Some((5.0, true));
    let e = e.run();
    assert_eq!(e.state_of("1/step"), Some(TaskState::Skipped));
    assert_eq!(e.state_of("1/post"), Some(TaskState::Skipped));
    assert_eq!(
        e.message_of("1/step").as_deref(),
        Some("timed out waiting for the clock to reach 9999-01-01T00:00:00Z")
    );
    assert_eq!(e.state_of("2/post"), Some(TaskState::Succeeded), "later cycles go on");
    assert!(e.log.contains(&"t=7 timeout 1/step".to_string()), "{:#?}", e.log);
    assert_eq!(e.outcome(), RunOutcome::Succeeded);
}

#[test]
fn a_trigger_timeout_with_fail_fails_the_task() {
    let plan = cycling_plan(CYCLE_CHAIN, Some(2), &[], &[], &["step"]);
    let mut e = Env::cycling(plan, 0, Some(2));
    e.gates = Some((50.0, 1.0));
    e.gate_timeout = Some((5.0, false));
    let e = e.run();
    assert_eq!(e.state_of("0/step"), Some(TaskState::Failed));
    assert_eq!(e.state_of("0/post"), Some(TaskState::UpstreamFailed));
    assert_eq!(e.outcome(), RunOutcome::Failed);
}

#[test]
fn stop_lets_the_active_cycles_finish_and_starts_no_more() {
    let plan = cycling_plan(CYCLE_CHAIN, None, &[("step", &["step"])], &[], &[]);
    let mut e = Env::cycling(plan, 1, None);
    e.stop_at = Some(4.5);
    let e = e.run();
    assert_eq!(e.outcome(), RunOutcome::Stopped);
    let fin = e.finish.as_ref().unwrap();
    // At t=4.5 cycles 3 (post) and 4 (step) were active: both finish, 5 never starts.
    assert_eq!(fin.next_cycle, 5);
    assert_eq!(e.state_of("4/post"), Some(TaskState::Succeeded));
    assert!(e.log.iter().all(|l| !l.contains(" 5/")), "{:#?}", e.log);
    assert_eq!(fin.counts.pending, 0);
}

#[test]
fn ten_thousand_cycles_keep_the_scheduler_the_same_size() {
    let yaml = r#"
name: cyc
steps:
  a: { run: [prog], out: { x: x } }
  b: { run: [prog, "${{ steps.a.out.x }}"], out: { x: x } }
  c: { run: [prog, "${{ steps.b.out.x }}"], out: { x: x } }
  d: { run: [prog, "${{ steps.c.out.x }}"], out: { x: x } }
  e: { run: [prog, "${{ steps.d.out.x }}"], out: { x: x } }
"#;
    let plan = cycling_plan(yaml, Some(10_000), &[("a", &["e"])], &[], &[]);
    let mut e = Env::cycling(plan, 2, Some(10_000));
    e.footprints = vec![(100, 0), (1_000, 0), (9_990, 0)];
    let e = e.run();
    assert_eq!(e.outcome(), RunOutcome::Succeeded);
    assert_eq!(e.counts().succeeded, 50_000);
    assert_eq!(e.max_active, 3);
    let sizes: Vec<usize> = e.footprints.iter().map(|(_, f)| *f).collect();
    assert_eq!(sizes.len(), 3);
    assert!(sizes.iter().all(|&f| f == sizes[0]), "footprint at cycles 100, 1000, 9990: {sizes:?}");
}

#[test]
fn a_resumed_cycling_run_goes_on_from_its_first_unfinished_cycle() {
    let plan = cycling_plan(CYCLE_CHAIN, Some(5), &[("step", &["step"])], &[], &[]);
    let mut e = Env::cycling(plan, 1, Some(5));
    // An earlier engine finished cycles 0-2 and cycle 3's step.
    e.restored = vec![("3/step".into(), TaskState::Succeeded, 1)];
    let e = e.run_from(3, &[("2/step", TaskState::Succeeded)]);
    assert_eq!(e.outcome(), RunOutcome::Succeeded);
    assert!(e.log.iter().all(|l| !l.contains(" 0/") && !l.contains(" 1/") && !l.contains(" 2/")), "{:#?}", e.log);
    assert_eq!(
        e.starts(),
        ["t=0 start 3/post#1", "t=0 start 4/step#1", "t=1 start 4/post#1"],
        "3/step is not run again; 4/step reads it"
    );
}

#[test]
fn stop_does_not_wait_for_tasks_still_waiting_for_their_triggers() {
    let plan = cycling_plan(CYCLE_CHAIN, None, &[], &[], &["step"]);
    let mut e = Env::cycling(plan, 2, None);
    // Cycle 0's gate is open; 1 and 2 wait for gates that never open.
    e.gates = Some((-10.0, 0.0));
    e.gate_never = vec![1, 2];
    e.stop_at = Some(5.0);
    let e = e.run();
    assert_eq!(e.outcome(), RunOutcome::Stopped);
    let fin = e.finish.as_ref().unwrap();
    // Cycle 3 (open gate) ran when cycle 0 retired; it cannot retire before 1 and 2.
    assert_eq!(fin.next_cycle, 4);
    assert_eq!(e.state_of("3/post"), Some(TaskState::Succeeded));
    // Left pending for `--resume`, not failed.
    assert_eq!(fin.counts.pending, 4, "{:?}", fin.counts);
    assert_eq!(
        fin.active.iter().map(|a| (a.index, a.complete, a.failed)).collect::<Vec<_>>(),
        [(1, false, false), (2, false, false), (3, true, false)]
    );
}

// ---------------------------------------------------------------- services

/// A service, a consumer that reads it and an independent task.
const SERVICE: &str = r#"
name: svc
steps:
  broker:
    service: true
    run: [serve]
    out: { w: windows }
    retry: { count: 2, backoff: 1s, factor: 2 }
  consume: { run: [prog, "${{ steps.broker.out.w }}"] }
  other: { run: [prog] }
"#;

fn restarts(e: &Env) -> Vec<(String, u32, u32, f64)> {
    e.effects
        .iter()
        .filter_map(|f| match f {
            Effect::ServiceRestart { task, attempt, restarts, delay, .. } => {
                Some((e.name(*task), *attempt, *restarts, delay.as_secs_f64()))
            }
            _ => None,
        })
        .collect()
}

#[test]
fn a_service_lets_its_dependants_start_once_ready_and_is_stopped_when_the_rest_is_done() {
    let e = Env::new(SERVICE).script("broker", &[(2.0, End::Ok)]).script("consume", &[(5.0, End::Ok)]).run();
    assert_eq!(
        e.log(),
        [
            "t=0 start broker#1",
            "t=0 start other#1",
            "t=1 ok other",
            "t=2 ready broker",
            "t=2 start consume#1",
            "t=7 ok consume",
            "t=7 stop broker",
            "t=7 stopped broker"
        ]
    );
    assert_eq!(e.outcome(), RunOutcome::Succeeded);
    assert_eq!(e.counts().succeeded, 3);
    // Ready is not the end: the service finishes (succeeded) when it is stopped, having
    // run from its start to then.
    let ready = e.effects.iter().position(|f| matches!(f, Effect::ServiceReady { task } if *task == e.node("broker")));
    let done = e.effects.iter().position(|f| matches!(f, Effect::Finished { task, .. } if *task == e.node("broker")));
    assert!(ready.unwrap() < done.unwrap(), "{:?}", e.effects);
    let secs = e.effects.iter().find_map(|f| match f {
        Effect::Finished { task, seconds, .. } if *task == e.node("broker") => Some(*seconds),
        _ => None,
    });
    assert_eq!(secs, Some(7.0));
    assert_eq!(e.state_of("broker"), Some(TaskState::Succeeded));
}

#[test]
fn a_service_that_dies_is_restarted_after_the_backoff_and_counted() {
    let e = Env::new(SERVICE)
        .script("broker", &[(1.0, End::Ok)])
        .script("consume", &[(20.0, End::Ok)])
        .lives("broker", &[3.0, 4.0, f64::INFINITY])
        .run();
    let svc: Vec<&str> = e.log().into_iter().filter(|l| l.ends_with("broker") || l.contains("broker#")).collect();
    assert_eq!(
        svc,
        [
            "t=0 start broker#1",
            "t=1 ready broker",
            "t=4 died broker",
            "t=5 restart broker#2",
            "t=9 died broker",
            "t=11 restart broker#3",
            "t=21 stop broker",
            "t=21 stopped broker"
        ]
    );
    assert_eq!(restarts(&e), [("broker".into(), 1, 1, 1.0), ("broker".into(), 2, 2, 2.0)]);
    assert_eq!(e.outcome(), RunOutcome::Succeeded);
    assert_eq!(e.state_of("broker"), Some(TaskState::Succeeded));
}

#[test]
fn a_service_out_of_restarts_fails_the_run_and_what_still_runs_is_stopped() {
    let e = Env::new(SERVICE)
        .script("broker", &[(1.0, End::Ok)])
        .script("consume", &[(20.0, End::Ok)])
        .lives("broker", &[2.0])
        .run();
    // Attempts 1, 2 and 3 (`count: 2`) each die 2 s after they start (ready), with 1 s and
    // 2 s between.
    let died: Vec<&str> = e.log().into_iter().filter(|l| l.contains("died")).collect();
    assert_eq!(died, ["t=3 died broker", "t=6 died broker", "t=10 died broker"]);
    assert!(e.log().contains(&"t=10 stop running"), "{:#?}", e.log);
    assert_eq!(restarts(&e).len(), 2);
    assert_eq!(e.outcome(), RunOutcome::Failed);
    assert_eq!(e.state_of("broker"), Some(TaskState::Failed));
    assert_eq!(e.message_of("broker").as_deref(), Some("exit code 1"));
    assert_eq!(e.state_of("consume"), Some(TaskState::Cancelled));
    let c = e.counts();
    assert_eq!((c.succeeded, c.failed, c.cancelled), (1, 1, 1), "{c:?}");
}

#[test]
fn with_keep_going_a_failed_service_leaves_running_tasks_alone() {
    let e = Env::new(SERVICE)
        .keep_going()
        .script("broker", &[(1.0, End::Ok)])
        .script("consume", &[(20.0, End::Ok)])
        .lives("broker", &[2.0])
        .run();
    assert!(!e.log().iter().any(|l| l.contains("stop running")), "{:#?}", e.log);
    assert_eq!(e.state_of("consume"), Some(TaskState::Succeeded));
    assert_eq!(e.outcome(), RunOutcome::Failed);
}

#[test]
fn a_service_failing_before_it_is_ready_is_retried_like_any_task() {
    let e = Env::new(SERVICE).script("broker", &[(1.0, End::Fail), (2.0, End::Ok)]).run();
    assert_eq!(
        e.starts(),
        ["t=0 start broker#1", "t=0 start other#1", "t=2 start broker#2", "t=4 start consume#1"],
        "{:#?}",
        e.log
    );
    assert_eq!(e.retries(), [("broker".into(), 1, 1.0)]);
    assert!(restarts(&e).is_empty());
    assert_eq!(e.outcome(), RunOutcome::Succeeded);
}

#[test]
fn a_ready_service_holds_its_cores_but_not_a_slot_of_max_parallel() {
    let yaml = r#"
name: slots
steps:
  broker: { service: true, run: [serve], out: { w: w }, resources: { ranks: 2 } }
  a: { run: [prog, "${{ steps.broker.out.w }}"], resources: { ranks: 2 } }
  b: { run: [prog, "${{ steps.broker.out.w }}"], resources: { ranks: 2 } }
  big: { run: [prog, "${{ steps.broker.out.w }}"], resources: { ranks: 8 } }
"#;
    // One slot: the service does not starve its dependants, which run one at a time.
    let e = Env::new(yaml).cores(16).max_parallel(1).run();
    assert_eq!(e.starts(), ["t=0 start broker#1", "t=1 start a#1", "t=2 start b#1", "t=3 start big#1"], "{:#?}", e.log);
    // Four cores: the service's two stay reserved; a task larger than what is left runs
    // once nothing but services runs.
    let e = Env::new(yaml).cores(4).run();
    assert_eq!(e.starts(), ["t=0 start broker#1", "t=1 start a#1", "t=2 start b#1", "t=3 start big#1"], "{:#?}", e.log);
    assert_eq!(e.peak.1, 10, "the big task runs beside the service");
    assert_eq!(e.outcome(), RunOutcome::Succeeded);
}

#[test]
fn cancel_stops_ready_services_as_succeeded_and_starting_ones_as_cancelled() {
    let yaml = r#"
name: cancel
steps:
  fast: { service: true, run: [serve], out: { w: w } }
  slow: { service: true, run: [serve] }
  use: { run: [prog, "${{ steps.fast.out.w }}"] }
"#;
    let mut e = Env::new(yaml).script("slow", &[(100.0, End::Ok)]).script("use", &[(50.0, End::Ok)]);
    e.cancel_at = Some(10.0);
    let e = e.run();
    assert_eq!(e.outcome(), RunOutcome::Cancelled);
    assert_eq!(e.state_of("fast"), Some(TaskState::Succeeded));
    assert_eq!(e.state_of("slow"), Some(TaskState::Cancelled));
    assert_eq!(e.state_of("use"), Some(TaskState::Cancelled));
}

#[test]
fn fail_fast_stops_a_service_that_is_not_ready_yet() {
    let yaml = r#"
name: failfast
steps:
  waits: { service: true, run: [serve] }
  breaks: { run: [prog] }
"#;
    let e = Env::new(yaml).script("waits", &[(1000.0, End::Ok)]).script("breaks", &[(3.0, End::Fail)]).run();
    assert!(e.log().contains(&"t=3 stop waits"), "{:#?}", e.log);
    assert_eq!(e.state_of("waits"), Some(TaskState::Cancelled));
    assert_eq!(e.outcome(), RunOutcome::Failed);
}

#[test]
fn a_service_waiting_for_its_restart_when_the_rest_is_done_is_stopped_at_once() {
    let e = Env::new(SERVICE)
        .script("broker", &[(1.0, End::Ok)])
        .script("consume", &[(3.0, End::Ok)])
        .lives("broker", &[3.0])
        .run();
    // It dies at t=4, the consumer ends then too; its restart (due at t=5) never comes.
    assert!(!e.log().iter().any(|l| l.contains("restart broker")), "{:#?}", e.log);
    assert_eq!(e.state_of("broker"), Some(TaskState::Succeeded));
    assert_eq!(e.outcome(), RunOutcome::Succeeded);
}

#[test]
fn resume_restarts_a_service_of_a_retired_cycle() {
    let plan = cycling_plan(CYCLE_SERVICE, Some(4), &[], &[("ingest", Once::First)], &[]);
    let mut e = Env::cycling(plan, 1, Some(4));
    e.restored_services = vec![("0/ingest".into(), 2)];
    let e = e.run_from(2, &[("0/ingest", TaskState::Succeeded)]);
    assert_eq!(e.starts()[..1], ["t=0 start 2/use#1"], "{:#?}", e.log);
    assert!(e.log().contains(&"t=0 restart 0/ingest#3"), "{:#?}", e.log);
    assert!(e.log().contains(&"t=1 stop 0/ingest"), "{:#?}", e.log);
    assert_eq!(e.outcome(), RunOutcome::Succeeded);
}

/// A `once: first` service (made so by [`cycling_plan`]) read by a task of every cycle.
const CYCLE_SERVICE: &str = r#"
name: cyc
steps:
  ingest: { service: true, run: [serve], out: { w: windows } }
  use: { run: [prog, "${{ steps.ingest.out.w }}"] }
"#;

#[test]
fn the_first_cycle_retires_while_its_service_runs_on() {
    let plan = cycling_plan(CYCLE_SERVICE, Some(6), &[], &[("ingest", Once::First)], &[]);
    let e = Env::cycling(plan, 1, Some(6)).script("0/ingest", &[(2.0, End::Ok)]).run();
    assert_eq!(e.outcome(), RunOutcome::Succeeded);
    assert!(e.max_active <= 2, "runahead 1: {}", e.max_active);
    // Cycle 0 retires once its `use` is done, not when the service ends.
    assert!(e.log().contains(&"t=3 cycle 0 finished"), "{:#?}", e.log);
    // Every cycle's `use` ran while the service ran; it is stopped after the last.
    let log = e.log();
    let stop = log.iter().position(|l| *l == "t=5 stop 0/ingest").unwrap_or_else(|| panic!("{log:#?}"));
    assert!(log[..stop].contains(&"t=5 ok 5/use"), "{log:#?}");
    let c = e.counts();
    assert_eq!((c.succeeded, c.pending), (7, 0), "{c:?}");
}

#[test]
fn a_service_failing_after_its_cycle_retired_is_counted_as_failed() {
    let yaml = r#"
name: cyc
steps:
  ingest: { service: true, run: [serve], out: { w: windows } }
  use: { run: [prog, "${{ steps.ingest.out.w }}"] }
"#;
    let plan = cycling_plan(yaml, Some(6), &[], &[("ingest", Once::First)], &[]);
    let e = Env::cycling(plan, 1, Some(6))
        .script("0/ingest", &[(1.0, End::Ok)])
        .script("3/use", &[(10.0, End::Ok)])
        .lives("0/ingest", &[4.0])
        .run();
    // Cycle 0 retired at t=2 with the service counted as succeeded; it dies at t=5, with no
    // restart allowed: the run fails, and the counts say so.
    assert!(e.log().contains(&"t=2 cycle 0 finished"), "{:#?}", e.log);
    assert!(e.log().contains(&"t=5 died 0/ingest"), "{:#?}", e.log);
    assert_eq!(e.outcome(), RunOutcome::Failed);
    assert_eq!(e.state_of("0/ingest"), Some(TaskState::Failed));
    assert_eq!(e.state_of("3/use"), Some(TaskState::Cancelled));
    let c = e.counts();
    assert_eq!((c.failed, c.cancelled), (1, 1), "{c:?}");
    assert_eq!(c.succeeded, 4, "0/use, 1/use, 2/use, 4/use: {c:?}");
    let fin = e.finish.as_ref().unwrap();
    assert_eq!(fin.failures.first().map(|(t, _)| e.name(*t)).as_deref(), Some("0/ingest"));
}
