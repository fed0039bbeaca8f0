//! Engine benchmarks (a plain harness printing figures; run with
//! `cargo bench -p twinflow-engine --bench engine`).
//!
//! Every figure is shown next to a baseline measured in the same run, because this machine
//! is noisy and absolute numbers do not travel:
//! - plan: scatter-gather of 10^4, 10^5, 10^6 members; baseline = building a bare petgraph
//!   with the same nodes and edges. Peak memory is the growth of the peak RSS (VmHWM, reset
//!   through /proc/self/clear_refs) while planning.
//! - run: 1,000 and 10,000 `true` tasks as scatter+gather, and a chain of 1,000 dependent
//!   `true` steps, on the local backend with 2 workers; baseline = spawning `true` the same
//!   number of times directly from tokio with the same concurrency, and the file-system
//!   floor: creating, serially, the directories and files the engine keeps for every
//!   attempt (the engine's cost for a `true` task is mostly that, on this VM's ext4).
//!
//! - cycles: 10,000 integer cycles of a 5-step chain of `true` against the same 50,000
//!   tasks as a plain workflow (5 scatters of 10,000, each after the one before), both with
//!   2 workers; peak RSS growth of the engine and size of the run database after 1,000 and
//!   10,000 cycles with `keep: 24`; trigger latency (a file complete → its task started)
//!   over 200 files with `settle: 1s`; the engine's CPU while 100 triggers wait.
//!
//! The runs directory is under `$TMPDIR` (`TMPDIR=/dev/shm` measures the engine without the
//! disk). On an ext4 without a journal, inodes deleted in the last ~30 s are skipped when
//! new ones are allocated, which can make creating files several times slower: wait a
//! minute after deleting many files (an earlier benchmark, a build) before measuring.
#![allow(clippy::print_stdout, missing_docs)]

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use twinflow_engine::events::NullReporter;
use twinflow_engine::execute::local::{LocalBackend, LocalOptions};
use twinflow_engine::run::{RunOptions, RunOutcome, execute};
use twinflow_engine::state::Store;
use twinflow_engine::validate::{Overrides, load};

/// A `/proc/self/status` field in KiB (`VmHWM` peak, `VmRSS` current).
fn status_kib(field: &str) -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// A scatter of `n` members and a gather. With `data_flow`, every member declares an output
/// and the gather receives the list of all of them (what planning a real gather costs);
/// without, the members run `true` and the gather only waits for them (`after:`), which is
/// what the local-run benchmark measures.
/// CPU time this process (the engine, not its children) has used so far, from
/// `/proc/self/stat` (utime + stime, in clock ticks of 10 ms). Unlike wall time it does not
/// depend on what else the machine is doing.
fn self_cpu() -> Duration {
    stat_cpu(11)
}

/// CPU time the children this process has reaped used (cutime + cstime): what running the
/// `true` processes themselves costs.
fn children_cpu() -> Duration {
    stat_cpu(13)
}

/// The sum of two consecutive clock-tick fields of `/proc/self/stat`, counted from the
/// state field after the command name.
fn stat_cpu(skip: usize) -> Duration {
    let s = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let rest = s.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = rest.split_whitespace().skip(skip).take(2).filter_map(|v| v.parse().ok()).collect();
    Duration::from_millis(f.iter().sum::<u64>() * 10)
}

fn scatter_gather(dir: &Path, n: u64, data_flow: bool) -> std::path::PathBuf {
    let p = dir.join(format!("sg-{n}-{data_flow}.yaml"));
    let (member_out, gather) = if data_flow {
        ("{ o: o.txt }", "in: { all: \"${{ steps.member.out.o }}\" }")
    } else {
        ("{}", "after: [member]")
    };
    std::fs::write(
        &p,
        format!(
            "name: sg\nsteps:\n  member:\n    scatter:\n      over: {{ i: \"${{{{ range(0, {n}) }}}}\" }}\n    run: [\"true\"]\n    out: {member_out}\n  gather:\n    run: [\"true\"]\n    {gather}\n"
        ),
    )
    .unwrap();
    p
}

fn chain(dir: &Path, n: usize) -> std::path::PathBuf {
    let mut y = String::from("name: chain\nsteps:\n");
    for i in 0..n {
        y += &format!("  s{i}:\n    run: [\"true\"]\n");
        if i > 0 {
            y += &format!("    after: [s{}]\n", i - 1);
        }
    }
    let p = dir.join(format!("chain-{n}.yaml"));
    std::fs::write(&p, y).unwrap();
    p
}

fn bench_plan(dir: &Path) {
    println!("== plan: scatter-gather (baseline: bare petgraph with the same nodes/edges)");
    for n in [10_000u64, 100_000, 1_000_000] {
        let file = scatter_gather(dir, n, true);
        let t = Instant::now();
        let mut g = petgraph::graph::DiGraph::<(u32, u32), ()>::with_capacity(n as usize + 2, 2 * n as usize);
        let join = n as usize;
        for i in 0..n {
            g.add_node((0, i as u32));
        }
        let j = g.add_node((0, u32::MAX));
        let gather = g.add_node((1, 0));
        for i in 0..join {
            g.add_edge(petgraph::graph::NodeIndex::new(i), j, ());
        }
        g.add_edge(j, gather, ());
        let base = t.elapsed();
        drop(g);

        let _ = std::fs::write("/proc/self/clear_refs", "5");
        let rss0 = status_kib("VmRSS:");
        let t = Instant::now();
        let wf = load(&file, &Overrides::default()).expect("valid");
        let plan = twinflow_engine::plan::compile(Arc::new(wf)).expect("plans");
        let took = t.elapsed();
        let peak = status_kib("VmHWM:").saturating_sub(rss0);
        assert_eq!(plan.task_count() as u64, n + 1);
        println!(
            "  {n:>9} members: plan {:>8.3} s, peak +{:>6.1} MiB | baseline {:>8.4} s | ratio {:>6.1}x",
            took.as_secs_f64(),
            peak as f64 / 1024.0,
            base.as_secs_f64(),
            took.as_secs_f64() / base.as_secs_f64().max(1e-9)
        );
        drop(plan);
    }
}

/// The file-system floor of a task: what the engine creates for every attempt (task and
/// attempt directories, `.twinflow/`, manifest, stdout, stderr, status) and the rename that
/// publishes it, done serially with nothing else. Seconds per task.
fn fs_floor(dir: &Path, n: usize) -> f64 {
    assert!(!dir.exists(), "fresh directory expected");
    let t = Instant::now();
    for i in 0..n {
        let task = dir.join("steps/member").join(i.to_string());
        let meta = task.join("attempt-1/.twinflow");
        std::fs::create_dir_all(&meta).unwrap();
        for f in ["manifest.json", "stdout", "stderr", "status.json"] {
            std::fs::write(meta.join(f), b"{}").unwrap();
        }
        std::fs::rename(task.join("attempt-1"), task.join("out")).unwrap();
    }
    t.elapsed().as_secs_f64() / n as f64
}

async fn baseline_spawns(n: usize, workers: usize, sequential: bool) -> Duration {
    let t = Instant::now();
    if sequential {
        for _ in 0..n {
            tokio::process::Command::new("true").status().await.unwrap();
        }
    } else {
        let mut set = tokio::task::JoinSet::new();
        let mut started = 0;
        while started < n || !set.is_empty() {
            while started < n && set.len() < workers {
                set.spawn(async { tokio::process::Command::new("true").status().await.unwrap() });
                started += 1;
            }
            set.join_next().await;
        }
    }
    t.elapsed()
}

/// What one engine run measured.
struct Measured {
    /// Wall time.
    took: Duration,
    /// CPU time of the engine (this process, children excluded).
    cpu: Duration,
    /// CPU time of its children (the tasks).
    child_cpu: Duration,
    /// Tasks that ran (succeeded or skipped).
    tasks: usize,
    /// The run's id.
    run_id: String,
}

/// Runs a workflow (cycling or not) in a fresh runs directory on the local backend with 2
/// workers.
/// Nothing is deleted before or during the measurement: on an ext4 without a journal (this
/// VM), creating inodes right after deleting thousands scans the recently deleted ones and
/// would bill an earlier run's clean-up to this one.
async fn engine_run(file: &Path, runs: &Path) -> Measured {
    let wf = load(file, &Overrides::default()).expect("valid");
    let plan = twinflow_engine::plan::compile(Arc::new(wf)).unwrap();
    assert!(!runs.exists(), "fresh runs directory expected");
    std::fs::create_dir_all(runs).unwrap();
    let mut store = Store::open(runs).unwrap();
    let mut backend = LocalBackend::new(LocalOptions { cores: 2, ..LocalOptions::default() });
    let opts = RunOptions {
        runs_dir: runs.to_path_buf(),
        workflow_file: file.to_path_buf(),
        settings: Default::default(),
        resume: None,
        new_run_id: None,
        keep_going: false,
        use_cache: false,
        max_parallel: Some(2),
        env_snapshot: Default::default(),
        rerun: vec![],
    };
    let (_tx, rx) = tokio::sync::watch::channel(None);
    // The peak RSS (`VmHWM`) from here on is this run's.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let (cpu0, child0) = (self_cpu(), children_cpu());
    let t = Instant::now();
    let s = execute(&plan, &mut backend, &mut store, &opts, &mut NullReporter, rx).await.unwrap();
    assert_eq!(s.outcome, RunOutcome::Succeeded);
    Measured {
        took: t.elapsed(),
        cpu: self_cpu() - cpu0,
        child_cpu: children_cpu() - child0,
        tasks: s.counts.succeeded + s.counts.skipped,
        run_id: s.run_id,
    }
}

/// Size of the run database (with its WAL) in KiB.
fn db_kib(runs: &Path) -> u64 {
    ["twinflow.db", "twinflow.db-wal"]
        .iter()
        .map(|f| std::fs::metadata(runs.join(f)).map_or(0, |m| m.len()))
        .sum::<u64>()
        / 1024
}

fn cycling_chain(dir: &Path, cycles: u64, keep: Option<u32>) -> std::path::PathBuf {
    let keep = keep.map(|k| format!("\n  keep: {k}")).unwrap_or_default();
    let mut y = format!("name: cyc\ncycle:\n  every: 1\n  start: 0\n  cycles: {cycles}\n  runahead: 2{keep}\nsteps:\n");
    for i in 0..5 {
        y += &format!("  s{i}:\n    run: [\"true\"]\n");
        if i > 0 {
            y += &format!("    after: [s{}]\n", i - 1);
        }
    }
    let p = dir.join(format!("cyc-{cycles}-{}.yaml", keep.len()));
    std::fs::write(&p, y).unwrap();
    p
}

/// The same tasks as `cycling_chain`, not cycling: 5 scatters of `n`, each after the last.
fn plain_chain(dir: &Path, n: u64) -> std::path::PathBuf {
    let mut y = String::from("name: plain\nsteps:\n");
    for i in 0..5 {
        y +=
            &format!("  s{i}:\n    scatter:\n      over: {{ i: \"${{{{ range(0, {n}) }}}}\" }}\n    run: [\"true\"]\n");
        if i > 0 {
            y += &format!("    after: [s{}]\n", i - 1);
        }
    }
    let p = dir.join(format!("plain-{n}.yaml"));
    std::fs::write(&p, y).unwrap();
    p
}

/// One measurement in a process of its own (so peak RSS is this run's alone): runs `kind`
/// (`plain` or `cycling`) with `n` cycles (or members) and `keep`, and prints
/// `secs cpu_ms_per_task tasks peak_rss_kib db_kib`.
fn cycles_child(dir: &Path, kind: &str, n: u64, keep: Option<u32>) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let file = if kind == "plain" { plain_chain(dir, n) } else { cycling_chain(dir, n, keep) };
    let runs = dir.join(format!("runs-{kind}-{n}-{}", keep.unwrap_or(0)));
    let m = rt.block_on(engine_run(&file, &runs));
    println!(
        "{} {} {} {} {}",
        m.took.as_secs_f64(),
        m.cpu.as_secs_f64() * 1000.0 / m.tasks as f64,
        m.tasks,
        status_kib("VmHWM:"),
        db_kib(&runs)
    );
}

/// Runs [`cycles_child`] in a new process of this benchmark.
fn measure(dir: &Path, kind: &str, n: u64, keep: Option<u32>) -> (f64, f64, usize, f64, f64) {
    let exe = std::env::current_exe().unwrap();
    let mut cmd = std::process::Command::new(exe);
    cmd.args(["cycles-child", kind, &n.to_string(), &keep.unwrap_or(0).to_string()]).env("TMPDIR", dir);
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    let f: Vec<f64> = text.lines().last().unwrap_or("").split_whitespace().filter_map(|v| v.parse().ok()).collect();
    (f[0], f[1], f[2] as usize, f[3] / 1024.0, f[4])
}

fn bench_cycles(dir: &Path) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    println!("== cycles: 5-step chains of `true`, 2 workers; each figure from a process of its own");
    let n = 10_000;
    let (plain, plain_cpu, tasks, plain_rss, _) = measure(dir, "plain", n, None);
    let (cyc, cyc_cpu, ctasks, cyc_rss, _) = measure(dir, "cycling", n, None);
    assert_eq!(tasks, ctasks);
    println!(
        "  {n} cycles x 5 steps: {cyc:>6.2} s, cpu {cyc_cpu:.3} ms/task, peak RSS {cyc_rss:.1} MiB | baseline (the same {tasks} tasks, not cycling: 5 scatters of {n}) {plain:>6.2} s, cpu {plain_cpu:.3} ms/task, peak RSS {plain_rss:.1} MiB | time ratio {:.2}x (target <= 1.2x)",
        cyc / plain
    );
    let mut peaks = vec![];
    for cycles in [1_000u64, 10_000] {
        let (took, _, _, rss, db) = measure(dir, "cycling", cycles, Some(24));
        println!(
            "  keep: 24, {cycles:>6} cycles: {took:>6.2} s, engine peak RSS {rss:.1} MiB, run database (with its WAL) {db:.0} KiB"
        );
        peaks.push((rss, db));
    }
    println!(
        "  10,000 against 1,000 cycles: peak RSS ratio {:.2} (target <= 1.2, absolute < 100 MiB), database size ratio {:.2} (not linear: pruned cycles are one row)",
        peaks[1].0 / peaks[0].0.max(1e-9),
        peaks[1].1 / peaks[0].1.max(1e-9)
    );
    bench_trigger_latency(&rt, dir);
    bench_idle_triggers(&rt, dir);
}

/// 200 cycles, all active (runahead 199), each waiting for its file; a writer completes one
/// file every 25 ms (written in two parts 5 ms apart). Latency = the task's start (its
/// attempt's `started_at`) minus the instant its file was complete.
fn bench_trigger_latency(rt: &tokio::runtime::Runtime, dir: &Path) {
    let obs = dir.join("obs");
    std::fs::create_dir_all(&obs).unwrap();
    let wf = dir.join("latency.yaml");
    std::fs::write(
        &wf,
        format!(
            "name: lat\ncycle: {{ every: 1, start: 0, cycles: 200, runahead: 199 }}\nsteps:\n  take:\n    wait: {{ files: [\"{}/obs-${{{{ cycle.index }}}}.txt\"], settle: 1s }}\n    run: [\"true\"]\n",
            obs.display()
        ),
    )
    .unwrap();
    let writer = {
        let obs = obs.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(500));
            let mut done = vec![];
            for k in 0..200 {
                let p = obs.join(format!("obs-{k}.txt"));
                std::fs::write(&p, b"part1").unwrap();
                std::thread::sleep(Duration::from_millis(5));
                let mut f = std::fs::OpenOptions::new().append(true).open(&p).unwrap();
                std::io::Write::write_all(&mut f, b"part2").unwrap();
                drop(f);
                done.push(
                    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
                );
                std::thread::sleep(Duration::from_millis(20));
            }
            done
        })
    };
    let runs = dir.join("runs-latency");
    let run_id = rt.block_on(engine_run(&wf, &runs)).run_id;
    let done = writer.join().unwrap();
    let c = rusqlite::Connection::open(runs.join("twinflow.db")).unwrap();
    let mut lat: Vec<i64> = (0..200)
        .map(|k| {
            let started: i64 = c
                .query_row(
                    "SELECT started_at FROM attempts WHERE run_id = ?1 AND task = ?2",
                    rusqlite::params![run_id, format!("{k}/take")],
                    |r| r.get(0),
                )
                .unwrap();
            started - done[k]
        })
        .collect();
    lat.sort();
    let (median, p99) = (lat[100], lat[197]);
    println!(
        "  trigger latency, 200 files, settle 1 s: median {:.2} s, p99 {:.2} s, max {:.2} s (target p99 <= settle + 1 s = 2 s)",
        median as f64 / 1000.0,
        p99 as f64 / 1000.0,
        lat[199] as f64 / 1000.0
    );
}

/// 100 cycles active at once, each waiting for a file that never comes (`timeout: 10s`,
/// `on_timeout: skip`): the engine's CPU over those 10 s, against the same process idle.
fn bench_idle_triggers(rt: &tokio::runtime::Runtime, dir: &Path) {
    let wf = dir.join("idle.yaml");
    std::fs::write(
        &wf,
        format!(
            "name: idle\ncycle: {{ every: 1, start: 0, cycles: 100, runahead: 99 }}\nsteps:\n  take:\n    wait: {{ files: [\"{}/never-${{{{ cycle.index }}}}.txt\"], timeout: 10s, on_timeout: skip }}\n    run: [\"true\"]\n",
            dir.display()
        ),
    )
    .unwrap();
    let cpu0 = self_cpu();
    std::thread::sleep(Duration::from_secs(2));
    let base = (self_cpu() - cpu0).as_secs_f64() / 2.0;
    let Measured { took, cpu, .. } = rt.block_on(engine_run(&wf, &dir.join("runs-idle")));
    println!(
        "  100 pending triggers for {:.1} s: engine {:.2} % of one core (target < 2 %) | baseline (this process asleep) {:.2} %",
        took.as_secs_f64(),
        100.0 * cpu.as_secs_f64() / took.as_secs_f64(),
        100.0 * base
    );
}

fn main() {
    let dir = std::env::temp_dir().join(format!("twinflow-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("cycles-child") {
        let keep: u32 = args[4].parse().unwrap();
        cycles_child(&std::env::temp_dir(), &args[2], args[3].parse().unwrap(), (keep > 0).then_some(keep));
        return;
    }
    let only = std::env::args().nth(1).filter(|a| !a.starts_with('-'));
    if only.as_deref().is_none_or(|o| o == "plan") {
        bench_plan(&dir);
    }
    if only.as_deref().is_none_or(|o| o == "run") {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        println!("== run: local backend, 2 workers (baseline: spawning `true` directly, 2 at a time)");
        println!("   cpu = CPU time of this process (engine or baseline spawner), children excluded");
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        println!("   {cores} cores: (engine cpu + children cpu) per task bounds the rate even with every core busy");
        for n in [1_000u64, 10_000] {
            let file = scatter_gather(&dir, n, false);
            let Measured { took, cpu, child_cpu, tasks, .. } =
                rt.block_on(engine_run(&file, &dir.join(format!("runs-{n}"))));
            let (cpu0, child0) = (self_cpu(), children_cpu());
            let base = rt.block_on(baseline_spawns(tasks, 2, false));
            let (base_cpu, base_child) = (self_cpu() - cpu0, children_cpu() - child0);
            let floor = fs_floor(&dir.join(format!("floor-{n}")), tasks);
            let (rate, base_rate) = (tasks as f64 / took.as_secs_f64(), tasks as f64 / base.as_secs_f64());
            println!(
                "  scatter {n:>6}+1: {:>6.2} s = {rate:>6.0} tasks/s, cpu {:.3} ms/task | baseline {:>6.2} s = {base_rate:>6.0} spawns/s, cpu {:.3} ms/spawn | ratio {:.2}x",
                took.as_secs_f64(),
                cpu.as_secs_f64() * 1000.0 / tasks as f64,
                base.as_secs_f64(),
                base_cpu.as_secs_f64() * 1000.0 / tasks as f64,
                rate / base_rate,
            );
            let per = |d: Duration| d.as_secs_f64() * 1000.0 / tasks as f64;
            println!(
                "  {:>16}  cpu of the `true` children: {:.3} ms/task (baseline {:.3}) | all cores busy: engine at most {:.0} tasks/s, baseline at most {:.0} spawns/s",
                "",
                per(child_cpu),
                per(base_child),
                cores as f64 * 1000.0 / (per(cpu) + per(child_cpu)),
                cores as f64 * 1000.0 / (per(base_cpu) + per(base_child)),
            );
            println!(
                "  {:>16}  file-system floor (the 7 inodes + rename of every attempt, serially): {:.3} ms/task = at most {:.0} tasks/s on one thread",
                "",
                floor * 1000.0,
                1.0 / floor
            );
        }
        let file = chain(&dir, 1000);
        let Measured { took, cpu, tasks, .. } = rt.block_on(engine_run(&file, &dir.join("runs-chain")));
        let base = rt.block_on(baseline_spawns(tasks, 1, true));
        println!(
            "  chain  {tasks:>6}: {:>6.2} s, cpu {:.3} ms/step | baseline (sequential spawns) {:>6.2} s | engine overhead {:.2} ms per dependent step",
            took.as_secs_f64(),
            cpu.as_secs_f64() * 1000.0 / tasks as f64,
            base.as_secs_f64(),
            (took.as_secs_f64() - base.as_secs_f64()).max(0.0) * 1000.0 / tasks as f64
        );
    }
    if only.as_deref().is_none_or(|o| o == "cycles") {
        bench_cycles(&dir);
    }
    let _ = std::fs::remove_dir_all(&dir);
}
