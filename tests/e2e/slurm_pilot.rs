//! Allocation mode with pilot workers (a profile with a `pilot:` section) on the real
//! one-node cluster: every one-rank task runs in the one `srun` step of the workers,
//! multi-rank tasks as `srun --exact` steps started by a worker; retries, timeouts and
//! cancellation go through the worker; a client without the run's secret is refused; a
//! worker whose engine is killed stops its tasks and exits after its heartbeat.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::slurm::*;
use crate::support::*;

/// The test cluster's profile with pilot workers on loopback and a short heartbeat.
fn pilot_profile(d: &Path) -> PathBuf {
    let base = std::fs::read_to_string(profile()).unwrap();
    write(d, "pilot.yaml", &format!("{base}\npilot:\n  address: 127.0.0.1\n  heartbeat: 3s\n"))
}

/// `twinflow run ARGS --backend slurm --profile pilot.yaml --allocation --json` in `d`.
fn pilot_cmd(d: &Path, args: &[&str]) -> Command {
    let prof = pilot_profile(d);
    let mut c = twinflow();
    c.current_dir(d)
        .arg("run")
        .args(args)
        .args(["--backend", "slurm", "--profile", prof.to_str().unwrap(), "--allocation", "--json"])
        .args(["--grace", "1"])
        .env("TWINFLOW_SLURM_CALL_LOG", d.join("calls.log"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

/// Six one-CPU members (member 2 fails once and is retried), then a two-rank step.
const PILOT: &str = r#"
name: slurm-pilot
steps:
  small:
    scatter:
      over: { i: "${{ range(0, 6) }}" }
    run:
      - sh
      - -c
      - |
        echo "$SLURM_JOB_ID ${SLURM_STEP_ID:-none} ${SLURM_PROCID:-none} ${PMI_FD:-none}" > o.txt
        if [ "$1" = 2 ] && [ ! -e ../failed-once ]; then touch ../failed-once; exit 3; fi
      - sh
      - "${{ scatter.i }}"
    out: { o: o.txt }
    retry: { count: 1, backoff: 0s }
  mpi:
    after: [small]
    resources: { ranks: 2 }
    run: [sh, -c, 'echo "$SLURM_JOB_ID $SLURM_PROCID of $SLURM_NTASKS" >> r.txt']
    out: { r: r.txt }
"#;

/// The workers of the runs under `d`: processes whose command line names its secret file.
fn workers_of(d: &Path) -> Vec<String> {
    processes_with(&format!("worker --connect .* --secret-file {}", d.display()))
}

#[test]
fn slurm_pilot_workers_run_one_rank_tasks_in_one_step_and_mpi_tasks_as_srun_steps() {
    require_cluster();
    let d = scratch("slurm-pilot/pack");
    let wf = write(&d, "pilot.yaml.wf", PILOT);
    let out = wait_output(pilot_cmd(&d, &[wf.to_str().unwrap(), "--alloc-cpus", "4"]).spawn().unwrap(), 180);
    assert!(out.status.success(), "{}", show(&out));
    let c = calls(&d);
    assert_eq!(count(&c, "sbatch", false), 1, "only the allocation is submitted: {c:#?}");
    let scancel: Vec<&Call> = c.iter().filter(|c| c.program == "scancel").collect();
    assert_eq!(scancel.len(), 1, "{scancel:#?}");
    let holder = scancel[0].args.trim().to_string();
    let run = d.join("runs").join(run_id(&out));
    for m in 0..6 {
        let line = std::fs::read_to_string(run.join(format!("steps/small/{m}/out/o.txt"))).unwrap();
        let f: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(f[0], holder, "member {m} ran outside the allocation: {line}");
        // The worker step's own step and task variables do not leak into its tasks.
        assert_eq!(f[1..], ["none", "none", "none"], "member {m}: {line}");
    }
    // The allocation's job steps: the workers' one, and one for the two-rank step; none per
    // one-rank task.
    let steps = || {
        let o = Command::new("sacct").args(["-j", &holder, "--format=JobID,JobName", "-n", "-P"]).output().unwrap();
        let mut names: Vec<String> = String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter(|l| l.starts_with(&format!("{holder}.")))
            .map(|l| l.split('|').nth(1).unwrap_or("").to_string())
            .filter(|n| n != "batch" && n != "extern")
            .collect();
        names.sort();
        names
    };
    wait_until("sacct to list the allocation's steps", 30, || steps().len() >= 2);
    assert_eq!(steps(), ["mpi", "twinflow-workers"]);
    let tasks = db_tasks(&d.join("runs"), &run_id(&out));
    assert_eq!(tasks["small[2]"], ("succeeded".to_string(), 2), "{tasks:?}");
    // Job ids are the pilot backend's, not SLURM jobs.
    let events = events(&out);
    let started: Vec<&str> =
        events.iter().filter(|e| e["event"] == "task-started").filter_map(|e| e["job_id"].as_str()).collect();
    assert_eq!(started.len(), 8, "{started:?}");
    assert!(started.iter().all(|j| j.starts_with("pilot-")), "{started:?}");
    // The two-rank step: one MPI job of two ranks in the allocation, a step of its own.
    let mut ranks: Vec<String> =
        std::fs::read_to_string(run.join("steps/mpi/out/r.txt")).unwrap().lines().map(String::from).collect();
    ranks.sort();
    assert_eq!(ranks, [format!("{holder} 0 of 2"), format!("{holder} 1 of 2")]);
    // The workers exited with the run, and took their secret with them.
    wait_until("the workers to exit", 20, || workers_of(&d).is_empty());
    let secrets: Vec<_> = std::fs::read_dir(d.join("runs/allocations"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".secret"))
        .collect();
    assert!(secrets.is_empty(), "{secrets:?}");
    wait_until("the allocation to end", 30, || squeue(std::slice::from_ref(&holder)).is_empty());
}

/// Two members that sleep (the sleep time is a marker for `pgrep`).
fn naps(marker: &str) -> String {
    format!(
        "name: slurm-pilot-naps\nsteps:\n  nap:\n    scatter:\n      over: {{ i: \"${{{{ range(0, 2) }}}}\" }}\n    run: [sh, -c, 'sleep {marker}; echo done > o.txt']\n    out: {{ o: o.txt }}\n"
    )
}

/// The `sleep` processes of the naps (not their shells).
fn naps_running(marker: &str) -> usize {
    processes_with(&format!("sleep {marker}")).iter().filter(|l| l.split_whitespace().nth(1) == Some("sleep")).count()
}

/// A sleep time unique to one test of this process.
fn marker(test: u32) -> String {
    format!("2{test}.{}", std::process::id())
}

/// The `--connect` address of a running worker of the runs under `d`.
fn engine_address(d: &Path) -> String {
    let w = workers_of(d);
    let line = w.iter().find(|l| !l.contains("srun")).or(w.first()).expect("a worker");
    let words: Vec<&str> = line.split_whitespace().collect();
    let at = words.iter().position(|w| *w == "--connect").unwrap();
    words[at + 1].to_string()
}

fn secret_file(d: &Path, name: &str, text: &str, mode: u32) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let p = write(d, name, text);
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    p
}

#[test]
fn slurm_pilot_refuses_a_worker_without_the_secret_and_cancel_stops_the_tasks_on_the_workers() {
    require_cluster();
    let d = scratch("slurm-pilot/refuse-cancel");
    let m = marker(1);
    let wf = write(&d, "naps.yaml", &naps(&m));
    let child = pilot_cmd(&d, &[wf.to_str().unwrap(), "--alloc-cpus", "2"]).spawn().unwrap();
    wait_until("the naps to run on the worker", 60, || naps_running(&m) == 2);
    let addr = engine_address(&d);
    assert!(addr.starts_with("127.0.0.1:"), "{addr}");
    // A worker with another secret is refused; one whose secret file others may read does
    // not even try.
    let wrong = secret_file(&d, "wrong.secret", "0123456789abcdef", 0o600);
    let out =
        twinflow().args(["worker", "--connect", &addr, "--secret-file", wrong.to_str().unwrap()]).output().unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("the engine refused: wrong secret"), "{}", show(&out));
    let open = secret_file(&d, "open.secret", "0123456789abcdef", 0o644);
    let out =
        twinflow().args(["worker", "--connect", &addr, "--secret-file", open.to_str().unwrap()]).output().unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("may be read by others"), "{}", show(&out));
    let bad = twinflow()
        .args(["worker", "--connect", &addr, "--secret-file", wrong.to_str().unwrap(), "--heartbeat", "5x"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2), "{}", show(&bad));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("`--heartbeat 5x`"), "{}", show(&bad));
    // `twinflow cancel`: the engine tells the worker to stop the naps, then the allocation
    // is released.
    let runs = d.join("runs");
    let c = twinflow().current_dir(&d).args(["cancel", "latest"]).output().unwrap();
    assert!(c.status.success(), "{}", show(&c));
    let out = wait_output(child, 60);
    assert_eq!(out.status.code(), Some(130), "{}", show(&out));
    let tasks = db_tasks(&runs, &latest_run_id(&runs));
    assert!(tasks.values().all(|(s, _)| s == "cancelled"), "{tasks:?}");
    assert!(processes_with(&format!("sleep {m}")).is_empty(), "the naps outlived the cancel");
    wait_until("the workers to exit", 20, || workers_of(&d).is_empty());
}

#[test]
fn slurm_pilot_timeouts_are_enforced_by_the_worker_and_retried() {
    require_cluster();
    let d = scratch("slurm-pilot/timeout");
    let wf = write(
        &d,
        "slow.yaml",
        "name: slurm-pilot-slow\nsteps:\n  slow:\n    run: [sh, -c, 'echo started >> ../tries; sleep 30']\n    timeout: 1s\n    retry: { count: 1, backoff: 0s }\n",
    );
    let out = wait_output(pilot_cmd(&d, &[wf.to_str().unwrap(), "--alloc-cpus", "1"]).spawn().unwrap(), 120);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let run = run_id(&out);
    assert_eq!(db_tasks(&d.join("runs"), &run)["slow"], ("failed".to_string(), 2));
    let failed = events(&out).into_iter().find(|e| e["event"] == "task-finished" && e["task"] == "slow").unwrap();
    assert!(failed.to_string().contains("timed out"), "{failed}");
    let tries = std::fs::read_to_string(d.join("runs").join(&run).join("steps/slow/tries")).unwrap();
    assert_eq!(tries.lines().count(), 2, "{tries}");
}

#[test]
fn slurm_pilot_workers_of_a_killed_engine_stop_their_tasks_after_the_heartbeat() {
    require_cluster();
    let d = scratch("slurm-pilot/engine-killed");
    let m = marker(2);
    let wf = write(&d, "naps.yaml", &naps(&m));
    let child = pilot_cmd(&d, &[wf.to_str().unwrap(), "--alloc-cpus", "2"]).spawn().unwrap();
    let nap = format!("sleep {m}");
    wait_until("the naps to run on the worker", 60, || naps_running(&m) == 2);
    assert!(!workers_of(&d).is_empty());
    signal(child.id(), "-KILL");
    let _ = wait_output(child, 10);
    // Heartbeat 3 s, grace 1 s.
    let t0 = std::time::Instant::now();
    wait_until("the workers to exit", 15, || workers_of(&d).is_empty());
    assert!(t0.elapsed().as_secs_f64() >= 1.0, "the workers did not wait for a heartbeat: {:?}", t0.elapsed());
    assert!(processes_with(&nap).is_empty(), "the naps outlived their worker: {:?}", processes_with(&nap));
    // The holder job is still there (a resume would go on in it); cancel releases it.
    let runs = d.join("runs");
    let holder = run_settings(&runs, &latest_run_id(&runs))["allocation_job"].as_str().unwrap().to_string();
    assert!(!squeue(std::slice::from_ref(&holder)).is_empty());
    let c = twinflow().current_dir(&d).args(["cancel", "latest"]).output().unwrap();
    assert!(c.status.success(), "{}", show(&c));
    wait_until("the allocation to end", 30, || squeue(std::slice::from_ref(&holder)).is_empty());
}
