//! Pilot workers on this machine (`pilot: { launch: local }`, the local backend): real
//! `twinflow worker` processes on loopback, no SLURM. A run whose engine is killed with -9
//! and resumed adopts the tasks its live workers run (they are not started again); workers
//! that no engine reaches within the heartbeat stop their tasks and exit, and the resumed
//! run starts new ones; a 2-rank step runs under the profile's `mpiexec` on a worker;
//! `twinflow plan` shows what the workers run; a bad `pilot:` value names file, line and
//! field.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::slurm::{latest_run_id, processes_with, signal, wait_output, wait_until};
use crate::support::*;

/// A profile with local pilot workers and `heartbeat`.
fn local_pilot(d: &Path, heartbeat: &str, extra: &str) -> PathBuf {
    write(
        d,
        "pilot.yaml",
        &format!(
            "name: local-pilot\npilot:\n  launch: local\n  workers: 1\n  address: 127.0.0.1\n  heartbeat: {heartbeat}\n{extra}"
        ),
    )
}

/// Two members that log each start and run until `LOGS/release` (or `LOGS/release-I`)
/// exists, then log their end; then a step after them.
const NAPS: &str = r#"
name: pilot-local-naps
params:
  logs: { type: path }
steps:
  nap:
    scatter:
      over: { i: "${{ range(0, 2) }}" }
    run: [sh, -c, 'echo $$ >> "$1/starts-$2"; while [ ! -e "$1/release" ] && [ ! -e "$1/release-$2" ]; do sleep 0.1; done; echo "$2" > o.txt; echo end >> "$1/ends-$2"', sh, "${{ params.logs }}", "${{ scatter.i }}"]
    out: { o: o.txt }
  after:
    after: [nap]
    run: [sh, -c, 'echo ok > a.txt']
    out: { a: a.txt }
"#;

/// `twinflow run ARGS --json` in `d`, not waited for.
fn spawn(d: &Path, args: &[&str]) -> std::process::Child {
    twinflow()
        .current_dir(d)
        .arg("run")
        .args(args)
        .args(["--json", "--grace", "1", "--cores", "4"])
        // The workers inherit it: their connections in the run's pilot log.
        .env("TWINFLOW_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// The pids each member logged, one per start.
fn starts(logs: &Path, member: u32) -> Vec<u32> {
    std::fs::read_to_string(logs.join(format!("starts-{member}")))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z "))
}

/// The workers of the runs under `d`.
fn workers_of(d: &Path) -> Vec<String> {
    processes_with(&format!("worker --connect .* --secret-file {}", d.display()))
}

/// Starts the naps, waits until both run on the worker, and kills the engine with -9.
fn start_and_kill(d: &Path, profile: &Path) -> PathBuf {
    let logs = d.join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let wf = write(d, "naps.yaml", NAPS);
    let logs_param = format!("logs={}", logs.display());
    let child = spawn(
        d,
        &[wf.to_str().unwrap(), "--backend", "local", "--profile", profile.to_str().unwrap(), "-p", &logs_param],
    );
    wait_until("both naps to run", 60, || starts(&logs, 0).len() == 1 && starts(&logs, 1).len() == 1);
    assert_eq!(workers_of(d).len(), 1, "{:?}", workers_of(d));
    signal(child.id(), "-KILL");
    let _ = wait_output(child, 10);
    logs
}

#[test]
fn pilot_local_resume_adopts_the_running_tasks_of_live_workers_after_kill_minus_nine() {
    let d = scratch("pilot-local/adopt");
    let profile = local_pilot(&d, "30s", "");
    let logs = start_and_kill(&d, &profile);
    let naps: Vec<u32> = (0..2).map(|m| starts(&logs, m)[0]).collect();
    // The engine is gone; its worker and the naps go on, and `nap[0]` ends meanwhile (its
    // worker keeps the outcome for the next engine).
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(naps.iter().all(|p| alive(*p)), "the naps stopped with the engine");
    assert_eq!(workers_of(&d).len(), 1);
    std::fs::write(logs.join("release-0"), "").unwrap();
    wait_until("`nap[0]` to end", 10, || logs.join("ends-0").exists());
    let resumed = spawn(&d, &["--resume", "latest"]);
    let runs = d.join("runs");
    let run = latest_run_id(&runs);
    // The worker dials the resumed engine (which it finds by the address file) before the
    // naps end.
    let log = d.join("runs/allocations").join(format!("pilot-{run}.log"));
    wait_until("the worker to reach the resumed engine", 30, || {
        std::fs::read_to_string(&log).is_ok_and(|l| l.contains("worker reconnected"))
    });
    std::fs::write(logs.join("release"), "").unwrap();
    let out = wait_output(resumed, 60);
    assert!(out.status.success(), "{}", show(&out));
    // Each nap started once: adopted, not started again; its outcome recorded as usual.
    assert_eq!((starts(&logs, 0), starts(&logs, 1)), (vec![naps[0]], vec![naps[1]]));
    let tasks = db_tasks(&runs, &run);
    for t in ["nap[0]", "nap[1]", "after"] {
        assert_eq!(tasks[t], ("succeeded".to_string(), 1), "{t}: {tasks:?}");
    }
    let adopted: Vec<serde_json::Value> = events(&out)
        .into_iter()
        .filter(|e| e["event"] == "task-started" && e["task"].as_str().is_some_and(|t| t.starts_with("nap[")))
        .collect();
    assert_eq!(adopted.len(), 2, "{adopted:?}");
    assert!(adopted.iter().all(|e| e["attempt"] == 1 && e["job_id"].as_str().is_some_and(|j| j.starts_with("pilot-"))));
    assert_eq!(step_file(&d, &out, "after/out/a.txt"), "ok\n");
    assert_eq!(step_file(&d, &out, "nap/0/out/o.txt"), "0\n");
    assert_eq!(step_file(&d, &out, "nap/1/out/o.txt"), "1\n");
    // The one worker of the run exited with it, and the run's secret went with it.
    wait_until("the worker to exit", 20, || workers_of(&d).is_empty());
    let left: Vec<_> = std::fs::read_dir(runs.join("allocations"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.ends_with(".secret") || n.ends_with(".address"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn pilot_local_workers_no_engine_reaches_stop_their_tasks_and_a_resume_starts_new_ones() {
    let d = scratch("pilot-local/lost");
    let profile = local_pilot(&d, "2s", "");
    let logs = start_and_kill(&d, &profile);
    let t0 = std::time::Instant::now();
    let naps: Vec<u32> = (0..2).map(|m| starts(&logs, m)[0]).collect();
    wait_until("the worker to exit", 20, || workers_of(&d).is_empty());
    // It waited for an engine for most of a heartbeat (it last heard from the killed one
    // at most a third of a heartbeat before the kill) before it gave up.
    assert!(t0.elapsed().as_secs_f64() >= 1.0, "the worker did not wait: {:?}", t0.elapsed());
    wait_until("the naps to stop", 10, || naps.iter().all(|p| !alive(*p)));
    let log = std::fs::read_to_string(
        d.join("runs/allocations").join(format!("pilot-{}.log", latest_run_id(&d.join("runs")))),
    )
    .unwrap();
    assert!(log.contains("lost the engine") && log.contains("stopped its tasks"), "{log}");
    // Nothing to adopt: the resumed run starts a new worker, which runs the naps again.
    std::fs::write(logs.join("release"), "").unwrap();
    let out = wait_output(spawn(&d, &["--resume", "latest"]), 60);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!((starts(&logs, 0).len(), starts(&logs, 1).len()), (2, 2));
    wait_until("the new worker to exit", 20, || workers_of(&d).is_empty());
}

/// A launcher that records its arguments, then runs the real `mpiexec` with them.
fn logged_mpiexec(dir: &Path) -> PathBuf {
    let p = dir.join("mpiexec-logged");
    std::fs::write(
        &p,
        format!("#!/bin/sh\nprintf '%s\\n' \"$@\" > \"{}\"\nexec mpiexec \"$@\"\n", dir.join("argv.txt").display()),
    )
    .unwrap();
    let _ = Command::new("chmod").arg("+x").arg(&p).status();
    p
}

const TWO_RANKS: &str = r#"
name: pilot-local-mpi
steps:
  one:
    run: [sh, -c, 'echo one > o.txt']
    out: { o: o.txt }
  ranks:
    resources: { ranks: 2 }
    run: [sh, -c, 'echo "rank $PMI_RANK of $PMI_SIZE" >> r.txt']
    out: { r: r.txt }
"#;

#[test]
fn pilot_local_runs_a_two_rank_step_under_mpiexec_on_a_worker_and_plan_shows_it() {
    let d = scratch("pilot-local/mpiexec");
    let launcher = logged_mpiexec(&d);
    let profile = local_pilot(
        &d,
        "30s",
        &format!("  mpi_launcher: mpiexec\nmpiexec:\n  command: {}\n  flags: [-bind-to, none]\n", launcher.display()),
    );
    let wf = write(&d, "mpi.yaml", TWO_RANKS);
    let out = wait_output(
        spawn(&d, &[wf.to_str().unwrap(), "--backend", "local", "--profile", profile.to_str().unwrap()]),
        120,
    );
    assert!(out.status.success(), "{}", show(&out));
    let mut ranks: Vec<String> = step_file(&d, &out, "ranks/out/r.txt").lines().map(String::from).collect();
    ranks.sort();
    assert_eq!(ranks, ["rank 0 of 2", "rank 1 of 2"]);
    let argv: Vec<String> = std::fs::read_to_string(d.join("argv.txt")).unwrap().lines().map(String::from).collect();
    // One node: the worker's own, no host list.
    assert_eq!(argv[..5], ["-n", "2", "-bind-to", "none", "sh"], "{argv:?}");
    let jobs: Vec<String> = events(&out)
        .into_iter()
        .filter(|e| e["event"] == "task-started")
        .filter_map(|e| e["job_id"].as_str().map(String::from))
        .collect();
    assert!(jobs.len() == 2 && jobs.iter().all(|j| j.starts_with("pilot-")), "{jobs:?}");
    // What each task used, measured on the worker, is recorded as for local tasks.
    let db = rusqlite::Connection::open(d.join("runs/twinflow.db")).unwrap();
    let usage: Vec<(String, Option<i64>, Option<i64>)> = db
        .prepare("SELECT task, cpu_ms, max_rss FROM attempts ORDER BY task")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(usage.len(), 2, "{usage:?}");
    assert!(usage.iter().all(|(_, cpu, rss)| cpu.is_some() && rss.is_some_and(|b| b > 0)), "{usage:?}");
    // `plan --launch`: what the worker runs.
    let plan = twinflow()
        .current_dir(&d)
        .args(["plan", wf.to_str().unwrap(), "--launch", "--profile", profile.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(plan.status.success(), "{}", show(&plan));
    let text = String::from_utf8_lossy(&plan.stdout);
    assert!(text.contains(&format!("  ranks: {} -n 2 -bind-to none sh -c", launcher.display())), "{text}");
    assert!(text.contains("  one: sh -c 'echo one > o.txt'"), "{text}");
}

#[test]
fn pilot_plan_in_allocation_mode_shows_what_the_workers_run() {
    let d = scratch("pilot-local/plan-allocation");
    let wf = write(&d, "mpi.yaml", TWO_RANKS);
    let plan = |profile: &str| {
        let p = write(&d, "site.yaml", profile);
        let out = twinflow()
            .current_dir(&d)
            .args(["plan", wf.to_str().unwrap(), "--backend", "slurm", "--allocation", "--profile"])
            .arg(&p)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", show(&out));
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    // `srun` per task: both steps are `srun --exact` steps.
    let per_task = plan("name: site\nmpi: pmi2\n");
    assert!(per_task.contains("  one: srun --jobid=<allocation> --exact"), "{per_task}");
    // Pilot workers: a one-rank step is forked by the worker; a 2-rank one is an `srun` step,
    // or under `mpiexec` with `mpi_launcher: mpiexec`.
    let pilot = plan("name: site\nmpi: pmi2\npilot: { heartbeat: 30s }\n");
    assert!(pilot.contains("  one: sh -c 'echo one > o.txt'"), "{pilot}");
    assert!(pilot.contains("  ranks: srun --jobid=<allocation> --exact"), "{pilot}");
    assert!(pilot.contains("--mpi=pmi2"), "{pilot}");
    let mpiexec = plan("name: site\npilot: { mpi_launcher: mpiexec }\n");
    assert!(mpiexec.contains("  one: sh -c 'echo one > o.txt'"), "{mpiexec}");
    assert!(mpiexec.contains("  ranks: mpiexec -n 2 sh -c"), "{mpiexec}");
}

#[test]
fn pilot_profile_errors_name_the_file_line_and_field() {
    let d = scratch("pilot-local/bad-profile");
    let wf = write(&d, "mpi.yaml", TWO_RANKS);
    // `twinflow run` with `backend` args and the profile: refused with exit 2, its stderr.
    let refused = |backend: &[&str], profile: &Path| {
        let out = twinflow()
            .current_dir(&d)
            .args(["run", wf.to_str().unwrap()])
            .args(backend)
            .arg("--profile")
            .arg(profile)
            .env("TWINFLOW_SLURM_CALL_LOG", d.join("calls.log"))
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{}", show(&out));
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let bad = write(&d, "bad.yaml", "name: bad\npilot:\n  launch: local\n  heartbeat: 0.5\n  workers: 0\n");
    let err = refused(&["--backend", "local"], &bad);
    assert!(err.contains(&bad.display().to_string()), "{err}");
    assert!(err.contains("line 4: `pilot.heartbeat`: must be at least 1s"), "{err}");
    assert!(err.contains("line 5: `pilot.workers`: must be between 1 and 1024, got 0"), "{err}");
    // A value of the wrong kind: the parser's place.
    let bad = write(&d, "bad2.yaml", "name: bad\npilot:\n  mpi_launcher: ssh\n");
    let err = refused(&["--backend", "local"], &bad);
    assert!(err.contains("bad2.yaml") && err.contains("line 3") && err.contains("ssh"), "{err}");
    // `launch: local` is not for allocation mode.
    let local = local_pilot(&d, "30s", "");
    let err = refused(&["--backend", "slurm", "--allocation"], &local);
    assert!(err.contains("`pilot.launch: local` starts the workers on this machine"), "{err}");
    assert!(!d.join("calls.log").exists(), "SLURM was asked for an allocation");
}

#[test]
fn pilot_local_a_worker_stopped_with_sigterm_stops_its_tasks_and_the_engine_fails_them_as_node_failures() {
    let d = scratch("pilot-local/sigterm");
    let profile = local_pilot(&d, "30s", "");
    let logs = d.join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let wf = write(&d, "naps.yaml", NAPS);
    let logs_param = format!("logs={}", logs.display());
    let child = spawn(
        &d,
        &[wf.to_str().unwrap(), "--backend", "local", "--profile", profile.to_str().unwrap(), "-p", &logs_param],
    );
    wait_until("both naps to run", 60, || starts(&logs, 0).len() == 1 && starts(&logs, 1).len() == 1);
    let naps: Vec<u32> = (0..2).map(|m| starts(&logs, m)[0]).collect();
    let worker: u32 = workers_of(&d)[0].split_whitespace().next().unwrap().parse().unwrap();
    signal(worker, "-TERM");
    // Well before the heartbeat (30 s): the worker stops its tasks as it goes.
    wait_until("the naps to stop", 10, || naps.iter().all(|p| !alive(*p)));
    let out = wait_output(child, 30);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let failed: Vec<String> = events(&out)
        .into_iter()
        .filter(|e| e["event"] == "task-finished" && e["state"] == "failed")
        .map(|e| e.to_string())
        .collect();
    assert_eq!(failed.len(), 2, "{failed:?}");
    assert!(failed.iter().all(|e| e.contains("a node of the job failed (SLURM NODE_FAIL)")), "{failed:?}");
    let log = std::fs::read_to_string(d.join("runs/allocations").join(format!("pilot-{}.log", run_id(&out)))).unwrap();
    assert!(log.contains("stopped by SIGTERM"), "{log}");
}

#[test]
fn pilot_local_cancel_of_a_run_whose_engine_was_killed_stops_its_workers_and_their_tasks() {
    let d = scratch("pilot-local/cancel");
    let profile = local_pilot(&d, "60s", "");
    let logs = start_and_kill(&d, &profile);
    let naps: Vec<u32> = (0..2).map(|m| starts(&logs, m)[0]).collect();
    let c = twinflow().current_dir(&d).args(["cancel", "latest"]).output().unwrap();
    assert!(c.status.success(), "{}", show(&c));
    let said = String::from_utf8_lossy(&c.stdout);
    assert!(said.contains("sent SIGTERM to the pilot workers of run"), "{said}");
    // Long before the heartbeat (60 s).
    wait_until("the worker to exit", 15, || workers_of(&d).is_empty());
    wait_until("the naps to stop", 10, || naps.iter().all(|p| !alive(*p)));
    assert!(!logs.join("ends-0").exists() && !logs.join("ends-1").exists());
}

#[test]
fn pilot_local_resume_after_engine_and_worker_were_killed_stops_the_orphaned_tasks_and_runs_them_again() {
    let d = scratch("pilot-local/orphans");
    let profile = local_pilot(&d, "30s", "");
    let logs = start_and_kill(&d, &profile);
    let naps: Vec<u32> = (0..2).map(|m| starts(&logs, m)[0]).collect();
    // The worker killed with -9 too: its tasks, in process groups of their own, go on.
    let worker: u32 = workers_of(&d)[0].split_whitespace().next().unwrap().parse().unwrap();
    signal(worker, "-KILL");
    wait_until("the worker to die", 10, || workers_of(&d).is_empty());
    assert!(naps.iter().all(|p| alive(*p)), "the naps died with the worker");
    // No worker to dial in: the resumed engine starts a new one at once, stops the orphans
    // (they would run twice) and runs the naps again.
    let resumed = spawn(&d, &["--resume", "latest"]);
    wait_until("the orphaned naps to stop", 20, || naps.iter().all(|p| !alive(*p)));
    wait_until("the naps to start again", 30, || starts(&logs, 0).len() == 2 && starts(&logs, 1).len() == 2);
    std::fs::write(logs.join("release"), "").unwrap();
    let out = wait_output(resumed, 60);
    assert!(out.status.success(), "{}", show(&out));
    let tasks = db_tasks(&d.join("runs"), &run_id(&out));
    assert_eq!(tasks["nap[0]"].0, "succeeded", "{tasks:?}");
}
