//! The SLURM backend against the real one-node cluster of `hpc/slurm-local.sh` (no mocks):
//! outputs equal to the local backend's, `srun` for MPI steps, cancellation, `kill -9` and
//! resume without double submission, flaky `sbatch`, jobs cancelled from outside, walltime
//! limits, and the number of status queries under 200 concurrent jobs.
//!
//! The cluster must be running (`make test` starts it); a missing cluster fails these tests
//! with the command to start it, it does not skip them. Every SLURM command the engine runs
//! is counted through the call log (`TWINFLOW_SLURM_CALL_LOG`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::common::repo_root;
use crate::support::*;

const HELLO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/hello.yaml");

pub(crate) fn profile() -> String {
    concat!(env!("CARGO_MANIFEST_DIR"), "/../../hpc/profiles/local.yaml").to_string()
}

/// Fails (does not skip) when no SLURM controller answers.
pub(crate) fn require_cluster() {
    static UP: OnceLock<Result<(), String>> = OnceLock::new();
    let r =
        UP.get_or_init(|| match Command::new("timeout").args(["20", "squeue", "--noheader", "--format=%i"]).output() {
            Ok(o) if o.status.success() => Ok(()),
            Ok(o) => Err(String::from_utf8_lossy(&o.stderr).trim().to_string()),
            Err(e) => Err(e.to_string()),
        });
    if let Err(e) = r {
        panic!(
            "the SLURM test cluster is not running (squeue: {e}).\nStart it with `bash hpc/slurm-local.sh start` (as root), then run the tests again."
        );
    }
}

/// `twinflow run FILE --backend slurm --profile local.yaml --json ARGS` in `dir`, logging
/// SLURM calls to `dir/calls.log`.
pub(crate) fn slurm_cmd(dir: &Path, args: &[&str]) -> Command {
    let mut c = twinflow();
    c.current_dir(dir)
        .arg("run")
        .args(args)
        .args(["--backend", "slurm", "--profile", &profile(), "--json"])
        .env("TWINFLOW_SLURM_CALL_LOG", dir.join("calls.log"));
    c
}

fn slurm_run(dir: &Path, args: &[&str]) -> Output {
    require_cluster();
    wait_output(slurm_cmd(dir, args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap(), 180)
}

/// Waits for a child, killing it and failing after `secs` (its output is read meanwhile).
pub(crate) fn wait_output(child: Child, secs: u64) -> Output {
    let (out, finished) = wait_with_deadline(child, Duration::from_secs(secs));
    assert!(finished, "twinflow did not finish within {secs}s\n{}", show(&out));
    out
}

/// Polls `cond` every 100 ms for at most `secs`.
pub(crate) fn wait_until(what: &str, secs: u64, mut cond: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !cond() {
        assert!(t0.elapsed() < Duration::from_secs(secs), "timed out after {secs}s waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One line of the call log: `MS tick=N exit=CODE PROGRAM ARGS...`.
#[derive(Debug)]
pub(crate) struct Call {
    pub(crate) tick: u64,
    pub(crate) exit: String,
    pub(crate) program: String,
    pub(crate) args: String,
}

pub(crate) fn calls(dir: &Path) -> Vec<Call> {
    let text = std::fs::read_to_string(dir.join("calls.log")).unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let mut w = l.splitn(5, ' ');
            let _ms = w.next()?;
            let tick = w.next()?.strip_prefix("tick=")?.parse().ok()?;
            let exit = w.next()?.strip_prefix("exit=")?.to_string();
            Some(Call { tick, exit, program: w.next()?.to_string(), args: w.next().unwrap_or("").to_string() })
        })
        .collect()
}

pub(crate) fn count(calls: &[Call], program: &str, ok: bool) -> usize {
    calls.iter().filter(|c| c.program == program && (!ok || c.exit == "0")).count()
}

/// Job ids the engine wrote into attempt directories under `runs`.
pub(crate) fn job_ids(runs: &Path) -> Vec<String> {
    fn walk(d: &Path, out: &mut Vec<String>) {
        let Ok(rd) = std::fs::read_dir(d) else { return };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.file_name().is_some_and(|n| n == "job_id") {
                out.push(std::fs::read_to_string(&p).unwrap().trim().to_string());
            }
        }
    }
    let mut v = vec![];
    walk(runs, &mut v);
    v.sort();
    v
}

/// States of these jobs in `squeue` (only jobs still queued or running are listed).
pub(crate) fn squeue(ids: &[String]) -> Vec<String> {
    if ids.is_empty() {
        return vec![];
    }
    let o = Command::new("squeue")
        .args(["--noheader", &format!("--jobs={}", ids.join(",")), "--format=%i %T"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout).lines().map(str::to_string).collect()
}

/// Live processes whose command line contains `marker` (`pgrep -af`; pgrep leaves itself
/// out).
pub(crate) fn processes_with(marker: &str) -> Vec<String> {
    let out = Command::new("pgrep").args(["-af", marker]).output().expect("pgrep");
    String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect()
}

/// The recorded settings of a run (`runs.settings`, JSON).
pub(crate) fn run_settings(runs: &Path, run: &str) -> serde_json::Value {
    let c = rusqlite::Connection::open(runs.join("twinflow.db")).unwrap();
    let text: String = c.query_row("SELECT settings FROM runs WHERE id = ?1", [run], |r| r.get(0)).unwrap();
    serde_json::from_str(&text).unwrap()
}

pub(crate) fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill").args([sig, &pid.to_string()]).status();
}

/// Regular files under `dir` (relative path → content), skipping `.twinflow` metadata.
fn tree(dir: &Path) -> std::collections::BTreeMap<String, String> {
    fn walk(root: &Path, d: &Path, out: &mut std::collections::BTreeMap<String, String>) {
        let Ok(rd) = std::fs::read_dir(d) else { return };
        for e in rd.flatten() {
            let p = e.path();
            if p.file_name().is_some_and(|n| n == ".twinflow") {
                continue;
            }
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                let rel = p.strip_prefix(root).unwrap().display().to_string();
                out.insert(rel, std::fs::read_to_string(&p).unwrap_or_default());
            }
        }
    }
    let mut m = std::collections::BTreeMap::new();
    walk(dir, dir, &mut m);
    m
}

fn retry_messages(out: &Output) -> Vec<String> {
    events(out)
        .into_iter()
        .filter(|e| e["event"] == "task-retry")
        .map(|e| e["message"].as_str().unwrap_or("").to_string())
        .collect()
}

#[test]
fn slurm_hello_matches_the_local_run() {
    let local_dir = scratch("slurm/hello-local");
    let local = run_json(&local_dir, HELLO.as_ref(), &["-p", "members=5", "-p", "mode=full"]);
    assert!(local.status.success(), "{}", show(&local));

    let d = scratch("slurm/hello");
    let t0 = Instant::now();
    let out = slurm_run(&d, &[HELLO, "-p", "members=5", "-p", "mode=full"]);
    assert!(out.status.success(), "{}", show(&out));
    let elapsed = t0.elapsed();
    assert_eq!(final_states(&out), final_states(&local));
    assert!(final_states(&out).values().all(|s| s == "succeeded"), "{:?}", final_states(&out));
    // Same files with the same content in every step's published directory (run ids differ,
    // and appear in no output).
    let slurm_steps = tree(&d.join("runs").join(run_id(&out)).join("steps"));
    let local_steps = tree(&local_dir.join("runs").join(run_id(&local)).join("steps"));
    assert_eq!(slurm_steps, local_steps);
    assert!(slurm_steps["report/out/report.txt"].starts_with("5 members\n"));
    // Each task ran as one batch job whose script and id are kept with its results.
    let c = calls(&d);
    assert_eq!(count(&c, "sbatch", true), 8, "{c:#?}");
    let meta = d.join("runs").join(run_id(&out)).join("steps/gather/out/.twinflow");
    let script = std::fs::read_to_string(meta.join("job.sbatch")).unwrap();
    assert!(script.starts_with("#!/bin/bash\n") && script.contains("#SBATCH --partition=debug"), "{script}");
    assert!(std::fs::read_to_string(meta.join("job_id")).unwrap().trim().parse::<u64>().is_ok());
    assert!(elapsed < Duration::from_secs(60), "{elapsed:?}");
}

#[test]
fn slurm_plan_shows_each_tasks_sbatch_script() {
    let out = twinflow()
        .current_dir(repo_root())
        .args(["plan", "examples/hello.yaml", "-p", "members=1", "--backend", "slurm", "--profile", "local"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", show(&out));
    insta::assert_snapshot!(String::from_utf8_lossy(&out.stdout));
    // `--arrays` without `--backend slurm` is a usage error that says what to add.
    let bad = twinflow().current_dir(repo_root()).args(["plan", "examples/hello.yaml", "--arrays"]).output();
    let bad = bad.unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--backend slurm"), "{}", show(&bad));
}

/// With `--arrays`, the first member of a scattered step shows the array's driver script
/// before its own; a profile's default memory reaches the scripts of steps without one.
#[test]
fn slurm_plan_shows_the_array_driver_and_default_resources() {
    let d = scratch("slurm/plan-arrays");
    let base = std::fs::read_to_string(profile()).unwrap();
    let prof = write(&d, "defaults.yaml", &format!("{base}\ndefault_memory: 300M\ndefault_threads: 2\n"));
    let out = twinflow()
        .args(["plan", HELLO, "-p", "members=3", "--backend", "slurm", "--arrays", "--profile"])
        .arg(&prof)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", show(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    let member0 = &text[text.find("member[0]: script").expect("member 0")..text.find("member[1]: script").unwrap()];
    for l in [
        "#SBATCH --array=0-2\n",
        "SLURM_ARRAY_TASK_ID",
        "exec bash .twinflow/job.sbatch",
        "# member script, <out>/.twinflow/job.sbatch:",
        "#SBATCH --mem=300M",
        "#SBATCH --cpus-per-task=2",
    ] {
        assert!(member0.contains(l), "`{l}` missing:\n{member0}");
    }
    let member1 = &text[text.find("member[1]: script").unwrap()..];
    assert!(!member1[..member1.find("member[2]").unwrap()].contains("--array"), "{member1}");
}

const MPI: &str = r#"
name: slurm-mpi
steps:
  ranks:
    resources: { ranks: 2 }
    run: [sh, -c, 'echo "rank $PMI_RANK of $PMI_SIZE"']
"#;

#[test]
fn slurm_two_rank_step_runs_under_srun() {
    let d = scratch("slurm/mpi");
    let wf = write(&d, "mpi.yaml", MPI);
    let out = slurm_run(&d, &[wf.to_str().unwrap()]);
    assert!(out.status.success(), "{}", show(&out));
    let meta = d.join("runs").join(run_id(&out)).join("steps/ranks/out/.twinflow");
    let script = std::fs::read_to_string(meta.join("job.sbatch")).unwrap();
    assert!(script.contains("#SBATCH --ntasks=2") && script.contains("exec srun --mpi=pmi2 -n 2 sh -c"), "{script}");
    // Both ranks of one 2-rank job, not two 1-rank jobs (a launcher mismatch looks like that).
    let mut lines: Vec<String> =
        std::fs::read_to_string(meta.join("stdout")).unwrap().lines().map(str::to_string).collect();
    lines.sort();
    assert_eq!(lines, ["rank 0 of 2", "rank 1 of 2"]);
}

const NAPS: &str = r#"
name: slurm-naps
steps:
  nap:
    scatter:
      over: { i: "${{ range(0, 4) }}" }
    run: [sleep, "120"]
  after-nap:
    after: [nap]
    run: ["true"]
"#;

#[test]
fn slurm_sigterm_to_the_engine_cancels_every_job() {
    require_cluster();
    let d = scratch("slurm/sigterm");
    let wf = write(&d, "naps.yaml", NAPS);
    let child = slurm_cmd(&d, &[wf.to_str().unwrap()]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    wait_until("4 submitted jobs", 60, || count(&calls(&d), "sbatch", true) == 4);
    let ids = job_ids(&d.join("runs"));
    wait_until("the jobs in squeue", 30, || squeue(&ids).len() == 4);
    let t0 = Instant::now();
    signal(child.id(), "-TERM");
    let out = wait_output(child, 60);
    assert_eq!(out.status.code(), Some(130), "{}", show(&out));
    assert!(squeue(&ids).is_empty(), "jobs left after cancel: {:?}", squeue(&ids));
    let st = final_states(&out);
    assert_eq!(st.values().filter(|s| *s == "cancelled").count(), 4, "{st:?}");
    // One scancel for all four jobs.
    let c = calls(&d);
    let scancels: Vec<&Call> = c.iter().filter(|c| c.program == "scancel").collect();
    assert_eq!(scancels.len(), 1, "{scancels:#?}");
    assert_eq!(scancels[0].args.split(' ').count(), 4);
    assert!(t0.elapsed() < Duration::from_secs(30), "cancelling took {:?}", t0.elapsed());
}

pub(crate) const RESUME: &str = r#"
name: slurm-resume
steps:
  work:
    scatter:
      over: { i: "${{ range(0, 6) }}" }
    run: [sh, -c, 'sleep 5; echo "part $1" > o.txt', sh, "${{ scatter.i }}"]
    out: { o: o.txt }
  total:
    in: { parts: "${{ steps.work.out.o }}" }
    run: [sh, -c, 'cat "$@" > all.txt', sh, "${{ in.parts }}"]
    out: { all: all.txt }
"#;

#[test]
fn slurm_kill_nine_then_resume_follows_jobs_and_submits_nothing_twice() {
    require_cluster();
    let d = scratch("slurm/resume");
    let wf = write(&d, "resume.yaml", RESUME);
    let child = slurm_cmd(&d, &[wf.to_str().unwrap()]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    wait_until("6 submitted jobs", 60, || job_ids(&d.join("runs")).len() == 6);
    signal(child.id(), "-KILL");
    let _ = wait_output(child, 10);
    // The jobs outlive the engine.
    let ids = job_ids(&d.join("runs"));
    assert!(!squeue(&ids).is_empty(), "the jobs died with the engine");
    let out =
        wait_output(slurm_cmd(&d, &["--resume"]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap(), 120);
    assert!(out.status.success(), "{}", show(&out));
    let c = calls(&d);
    assert_eq!(count(&c, "sbatch", false), 7, "6 members + total, each submitted once: {c:#?}");
    let run = run_id(&out);
    let tasks = db_tasks(&d.join("runs"), &run);
    assert!(tasks.values().all(|(s, n)| s == "succeeded" && *n == 1), "{tasks:?}");
    let all = std::fs::read_to_string(d.join("runs").join(&run).join("steps/total/out/all.txt")).unwrap();
    assert_eq!(all.lines().count(), 6, "{all}");
}

/// A `sbatch` first on PATH that takes a second per call and leaves its pid in
/// `dir/sbatch.pid` while it waits (before it submits anything).
fn slow_sbatch(dir: &Path) -> PathBuf {
    let real = std::env::split_paths(&std::env::var_os("PATH").unwrap())
        .map(|p| p.join("sbatch"))
        .find(|p| p.is_file())
        .expect("sbatch on PATH");
    let bin = dir.join("slow-bin");
    std::fs::create_dir_all(&bin).unwrap();
    let script = format!(
        "#!/bin/sh\necho $$ > \"{pid}\"\nsleep 1\nexec \"{real}\" \"$@\"\n",
        pid = dir.join("sbatch.pid").display(),
        real = real.display()
    );
    let p = bin.join("sbatch");
    std::fs::write(&p, script).unwrap();
    let _ = Command::new("chmod").arg("+x").arg(&p).status();
    bin
}

/// The engine dies in the middle of submitting: some jobs are in SLURM but not yet in the
/// run database. Resume must find them (their attempt directories hold the job ids) and
/// follow them, not submit them again.
#[test]
fn slurm_kill_nine_between_sbatch_and_the_database_commit_submits_nothing_twice() {
    require_cluster();
    let d = scratch("slurm/resume-unrecorded");
    let wf = write(&d, "resume.yaml", RESUME);
    let path = format!("{}:{}", slow_sbatch(&d).display(), std::env::var("PATH").unwrap());
    let child = slurm_cmd(&d, &[wf.to_str().unwrap()])
        .env("PATH", path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until("3 submitted jobs", 60, || count(&calls(&d), "sbatch", true) >= 3);
    signal(child.id(), "-KILL");
    let _ = wait_output(child, 10);
    // The 4th sbatch is still waiting in the wrapper: stop it before it submits.
    if let Ok(pid) = std::fs::read_to_string(d.join("sbatch.pid")) {
        signal(pid.trim().parse().unwrap(), "-KILL");
    }
    let before = count(&calls(&d), "sbatch", true);
    let runs = d.join("runs");
    let run = latest_run_id(&runs);
    let tasks = db_tasks(&runs, &run);
    assert!(
        tasks.values().all(|(s, _)| s == "pending"),
        "the engine died before its first commit of submissions: {tasks:?}"
    );
    assert_eq!(job_ids(&runs).len(), before, "every submitted job left its id in its attempt directory");
    let out =
        wait_output(slurm_cmd(&d, &["--resume"]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap(), 120);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(count(&calls(&d), "sbatch", true), 7, "{} before the kill, 7 in all", before);
    let tasks = db_tasks(&runs, &run);
    assert!(tasks.values().all(|(s, n)| s == "succeeded" && *n == 1), "{tasks:?}");
}

pub(crate) fn latest_run_id(runs: &Path) -> String {
    let c = rusqlite::Connection::open(runs.join("twinflow.db")).unwrap();
    c.query_row("SELECT id FROM runs ORDER BY created_at DESC LIMIT 1", [], |r| r.get(0)).unwrap()
}

/// `twinflow cancel RUN` (an explicit id) of a run whose engine was killed: every job is
/// cancelled, with the run's own profile (its `polling.chunk: 2`: two `scancel` calls of two
/// jobs each, where the default profile would make one).
#[test]
fn slurm_cancel_command_stops_the_jobs_of_a_dead_engine() {
    require_cluster();
    let d = scratch("slurm/cancel-cmd");
    let wf = write(&d, "naps.yaml", NAPS);
    let base = std::fs::read_to_string(profile()).unwrap();
    let prof = write(&d, "chunked.yaml", &base.replace("polling:\n", "polling:\n  chunk: 2\n"));
    assert!(std::fs::read_to_string(&prof).unwrap().contains("chunk: 2"));
    let child = twinflow()
        .current_dir(&d)
        .args(["run", wf.to_str().unwrap(), "--backend", "slurm", "--profile", prof.to_str().unwrap(), "--json"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until("4 submitted jobs", 60, || job_ids(&d.join("runs")).len() == 4);
    signal(child.id(), "-KILL");
    let _ = wait_output(child, 10);
    let ids = job_ids(&d.join("runs"));
    let run = latest_run_id(&d.join("runs"));
    // Another run started later: `latest` would name it, the explicit id must not.
    let other = run_json(&d, HELLO.as_ref(), &["-p", "members=1"]);
    assert!(other.status.success(), "{}", show(&other));
    let out = twinflow()
        .current_dir(&d)
        .args(["cancel", &run])
        .env("TWINFLOW_SLURM_CALL_LOG", d.join("calls.log"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", show(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with(&format!("cancelled 4 SLURM jobs of run {run}")), "{}", show(&out));
    wait_until("the cancelled jobs to leave squeue", 30, || squeue(&ids).is_empty());
    let scancels: Vec<Call> = calls(&d).into_iter().filter(|c| c.program == "scancel").collect();
    assert_eq!(scancels.len(), 2, "{scancels:#?}");
    assert!(scancels.iter().all(|c| c.args.split(' ').count() == 2), "{scancels:#?}");
}

/// A `sbatch` first on PATH that fails like an overloaded controller on 3 calls in 10
/// (twice in a row once), and otherwise runs the real one.
fn flaky_sbatch(dir: &Path) -> PathBuf {
    let real = std::env::split_paths(&std::env::var_os("PATH").unwrap())
        .map(|p| p.join("sbatch"))
        .find(|p| p.is_file())
        .expect("sbatch on PATH");
    let bin = dir.join("flaky-bin");
    std::fs::create_dir_all(&bin).unwrap();
    let script = format!(
        r#"#!/bin/sh
n=$(cat "{count}" 2>/dev/null || echo 0); n=$((n + 1)); echo "$n" > "{count}"
case $((n % 10)) in
  1|2|6) echo "sbatch: error: Batch job submission failed: Socket timed out on send/recv operation" >&2; exit 1 ;;
esac
exec "{real}" "$@"
"#,
        count = dir.join("flaky-count").display(),
        real = real.display()
    );
    let p = bin.join("sbatch");
    std::fs::write(&p, script).unwrap();
    let _ = Command::new("chmod").arg("+x").arg(&p).status();
    bin
}

#[test]
fn slurm_transient_sbatch_failures_are_retried() {
    require_cluster();
    let d = scratch("slurm/flaky");
    let bin = flaky_sbatch(&d);
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let child = slurm_cmd(&d, &[HELLO, "-p", "members=6", "-p", "mode=full"])
        .env("PATH", path)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = wait_output(child, 120);
    assert!(out.status.success(), "{}", show(&out));
    assert!(final_states(&out).values().all(|s| s == "succeeded"));
    let c = calls(&d);
    let failed = c.iter().filter(|c| c.program == "sbatch" && c.exit == "1").count();
    assert_eq!(count(&c, "sbatch", true), 9, "each of the 9 tasks submitted once: {c:#?}");
    assert!(failed >= 3, "the wrapper failed {failed} times: {c:#?}");
}

const FRAGILE: &str = r#"
name: slurm-fragile
params:
  marks: { type: path }
steps:
  fragile:
    retry: { count: 1, backoff: 0s }
    run: [sh, -c, 'if [ -e "$1/second" ]; then echo ok > o.txt; exit 0; fi; touch "$1/second"; sleep 120', sh, "${{ params.marks }}"]
    out: { o: o.txt }
"#;

#[test]
fn slurm_job_cancelled_outside_twinflow_is_retried() {
    require_cluster();
    let d = scratch("slurm/scancel");
    let marks = d.join("marks");
    std::fs::create_dir_all(&marks).unwrap();
    let wf = write(&d, "fragile.yaml", FRAGILE);
    let p = format!("marks={}", marks.display());
    let child =
        slurm_cmd(&d, &[wf.to_str().unwrap(), "-p", &p]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    wait_until("the first attempt to start", 60, || marks.join("second").exists());
    let ids = job_ids(&d.join("runs"));
    assert_eq!(ids.len(), 1);
    assert!(Command::new("scancel").arg(&ids[0]).status().unwrap().success());
    let out = wait_output(child, 60);
    assert!(out.status.success(), "{}", show(&out));
    let msgs = retry_messages(&out);
    assert!(msgs.len() == 1 && msgs[0].contains("cancelled outside twinflow"), "{msgs:?}");
    let tasks = db_tasks(&d.join("runs"), &run_id(&out));
    assert_eq!(tasks["fragile"], ("succeeded".to_string(), 2));
}

const SLOW: &str = r#"
name: slurm-slow
params:
  marks: { type: path }
steps:
  slow:
    timeout: 5s
    retry: { count: 1, backoff: 0s }
    run: [sh, -c, 'if [ -e "$1/second" ]; then echo ok > o.txt; exit 0; fi; touch "$1/second"; sleep 600', sh, "${{ params.marks }}"]
    out: { o: o.txt }
"#;

/// SLURM enforces time limits in whole minutes, checked every 30 s: a 5 s limit ends the job
/// after 60-95 s. This is the slowest test of the file.
#[test]
fn slurm_walltime_exceeded_is_a_timeout_and_the_retry_asks_for_more() {
    let d = scratch("slurm/timeout");
    let marks = d.join("marks");
    std::fs::create_dir_all(&marks).unwrap();
    let wf = write(&d, "slow.yaml", SLOW);
    let p = format!("marks={}", marks.display());
    let out = slurm_run(&d, &[wf.to_str().unwrap(), "-p", &p]);
    assert!(out.status.success(), "{}", show(&out));
    let msgs = retry_messages(&out);
    assert_eq!(msgs, ["timed out"], "{}", show(&out));
    let steps = d.join("runs").join(run_id(&out)).join("steps/slow");
    let first = std::fs::read_to_string(steps.join("attempt-1/.twinflow/job.sbatch")).unwrap();
    let second = std::fs::read_to_string(steps.join("out/.twinflow/job.sbatch")).unwrap();
    assert!(first.contains("#SBATCH --time=0-00:00:05"), "{first}");
    // escalate.walltime_factor: 2 in hpc/profiles/local.yaml
    assert!(second.contains("#SBATCH --time=0-00:00:10"), "{second}");
    // Kept beside the attempts, so an engine resumed after a kill asks for as much.
    assert_eq!(std::fs::read_to_string(steps.join(".escalation")).unwrap().trim(), "2 1");
    // While nothing changes the poll interval grows from 0.5 s to 5 s (local.yaml): about
    // 20 queries in the minute or more SLURM takes to end the job, not one per 0.5 s.
    let text = std::fs::read_to_string(d.join("calls.log")).unwrap();
    let times: Vec<u64> = text
        .lines()
        .filter(|l| l.contains(" squeue "))
        .map(|l| l.split(' ').next().unwrap().parse().unwrap())
        .collect();
    let widest = times.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0);
    assert!((4_500..=7_000).contains(&widest), "longest gap between squeue calls: {widest} ms");
    assert!(times.len() < 40, "{} squeue calls", times.len());
    std::fs::write(d.join("report.txt"), format!("{} squeue calls, widest gap {widest} ms\n", times.len())).unwrap();
}

const MANY: &str = r#"
name: slurm-many
steps:
  short:
    scatter:
      over: { i: "${{ range(0, 200) }}" }
    run: [sh, -c, 'echo "$1" > o.txt', sh, "${{ scatter.i }}"]
    out: { o: o.txt }
"#;

/// The real program `name`: the first on PATH.
pub(crate) fn real_program(name: &str) -> PathBuf {
    std::env::split_paths(&std::env::var_os("PATH").unwrap())
        .map(|p| p.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("`{name}` is not on PATH"))
}

/// Writes the executable script `dir/name`.
pub(crate) fn executable(dir: &Path, name: &str, text: &str) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    let _ = Command::new("chmod").arg("+x").arg(&p).status();
    p
}

/// PATH with `dir` first.
pub(crate) fn path_with(dir: &Path) -> String {
    format!("{}:{}", dir.display(), std::env::var("PATH").unwrap())
}

/// Wrappers first on PATH for the SLURM client commands: each appends
/// `UNIX_NS PROGRAM ARGS...` to `log`, then runs the real one. What they count is what the
/// controller was really asked, independently of the engine's own call log.
pub(crate) fn counting_wrappers(dir: &Path, log: &Path, programs: &[&str]) -> PathBuf {
    let bin = dir.join("counting-bin");
    for p in programs {
        executable(
            &bin,
            p,
            &format!(
                "#!/bin/sh\necho \"$(date +%s%N) {p} $*\" >> \"{}\"\nexec \"{}\" \"$@\"\n",
                log.display(),
                real_program(p).display()
            ),
        );
    }
    bin
}

/// 200 jobs in flight at once, all queued (held, then released by the test) and then
/// running: every poll asks the controller at most one `squeue` (for all jobs) and one
/// `sacct` (for those that left the queue), counted by wrappers around the real commands.
/// The measured numbers go to stderr and `report.txt`.
#[test]
#[allow(clippy::print_stderr)]
fn slurm_200_jobs_make_one_squeue_and_one_sacct_per_poll_at_most() {
    require_cluster();
    let d = scratch("slurm/many");
    let wf = write(&d, "many.yaml", MANY);
    // `--hold`: every job waits in the queue until the test releases it, so all 200 are in
    // flight together whatever the node's 8 CPUs could run at once.
    let base = std::fs::read_to_string(profile()).unwrap();
    let prof = write(&d, "held.yaml", &format!("{base}\nsbatch_flags: [--hold]\n"));
    let log = d.join("wrapped-calls.log");
    let bin = counting_wrappers(&d, &log, &["squeue", "sacct", "scontrol", "sbatch"]);
    let wrapped = || -> Vec<(u64, String, String)> {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let mut w = l.splitn(3, ' ');
                Some((w.next()?.parse().ok()?, w.next()?.to_string(), w.next().unwrap_or("").to_string()))
            })
            .collect()
    };
    let ids_in =
        |args: &str| args.split(' ').find_map(|a| a.strip_prefix("--jobs=")).map_or(0, |l| l.split(',').count());
    let t0 = Instant::now();
    let mut cmd = twinflow();
    cmd.current_dir(&d)
        .args(["run", wf.to_str().unwrap(), "--backend", "slurm", "--profile", prof.to_str().unwrap(), "--json"])
        .env("TWINFLOW_SLURM_CALL_LOG", d.join("calls.log"))
        .env("PATH", path_with(&bin));
    let child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    wait_until("200 held jobs followed by one squeue", 120, || {
        wrapped().iter().any(|(_, p, a)| p == "squeue" && ids_in(a) == 200)
    });
    let ids = job_ids(&d.join("runs"));
    assert_eq!(ids.len(), 200);
    let release = Command::new("scontrol").args(["release", &ids.join(",")]).output().unwrap();
    assert!(release.status.success(), "{}", String::from_utf8_lossy(&release.stderr));
    let out = wait_output(child, 240);
    let elapsed = t0.elapsed();
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(final_states(&out).values().filter(|s| *s == "succeeded").count(), 200);

    let calls_seen = wrapped();
    let of = |p: &str| calls_seen.iter().filter(|(_, q, _)| q == p).count();
    let (sq, sa, sbatch) = (of("squeue"), of("sacct"), of("sbatch"));
    let scontrol_jobs = calls_seen.iter().filter(|(_, p, a)| p == "scontrol" && a.starts_with("show job")).count();
    let max_ids = calls_seen.iter().filter(|(_, p, _)| p == "squeue").map(|(_, _, a)| ids_in(a)).max().unwrap_or(0);
    assert_eq!(sbatch, 200, "each job submitted once");
    assert!(max_ids >= 150, "the largest squeue asked for {max_ids} jobs");
    assert_eq!(scontrol_jobs, 0, "the scontrol-per-job fallback was used");
    // The engine's own log agrees with the wrappers, and no poll made more than one
    // squeue or sacct.
    let c = calls(&d);
    assert_eq!((count(&c, "squeue", false), count(&c, "sacct", false)), (sq, sa), "engine log vs wrappers");
    let ticks = c.iter().map(|c| c.tick).max().unwrap_or(0);
    let mut per_tick: std::collections::BTreeMap<u64, (usize, usize)> = Default::default();
    for call in &c {
        let e = per_tick.entry(call.tick).or_default();
        match call.program.as_str() {
            "squeue" => e.0 += 1,
            "sacct" => e.1 += 1,
            _ => {}
        }
    }
    let worst = per_tick.iter().find(|(_, (q, a))| *q > 1 || *a > 1);
    assert!(worst.is_none(), "tick {worst:?} made more than one squeue or sacct call");
    // O(1) per poll, and polls no closer than `polling.min_interval` (0.5 s in local.yaml):
    // at most 2 status calls per half second of the run, plus `scontrol show config` once.
    let bound = 2 * (elapsed.as_millis() as usize / 500 + 1) + 1;
    let status_calls = sq + sa + of("scontrol");
    assert!(status_calls <= bound, "{status_calls} status calls in {elapsed:?} (bound {bound})");
    let report = format!(
        "200 jobs in {:.1}s (held until all were queued): {sq} squeue calls (at most {max_ids} job ids in one), {sa} sacct, {} scontrol, {sbatch} sbatch; {ticks} engine poll ticks; bound on status calls {bound}\n",
        elapsed.as_secs_f64(),
        of("scontrol"),
    );
    std::fs::write(d.join("report.txt"), &report).unwrap();
    eprintln!("{report}");
}

const SIX: &str = r#"
name: slurm-six
steps:
  nap:
    scatter:
      over: { i: "${{ range(0, 6) }}" }
    run: [sleep, "1"]
"#;

/// `limits.max_jobs` bounds the jobs in flight; `limits.submit_rate` spaces the `sbatch`
/// calls.
#[test]
fn slurm_profile_limits_jobs_in_flight_and_submission_rate() {
    let d = scratch("slurm/limits");
    let wf = write(&d, "six.yaml", SIX);
    let base = std::fs::read_to_string(profile()).unwrap();
    let limited = base.replace("max_jobs: 500", "max_jobs: 2").replace("submit_rate: 50", "submit_rate: 4");
    assert_ne!(base, limited);
    let prof = write(&d, "limited.yaml", &limited);
    require_cluster();
    let mut cmd = twinflow();
    cmd.current_dir(&d)
        .args(["run", wf.to_str().unwrap(), "--backend", "slurm", "--profile", prof.to_str().unwrap(), "--json"])
        .env("TWINFLOW_SLURM_CALL_LOG", d.join("calls.log"));
    let out = wait_output(cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap(), 120);
    assert!(out.status.success(), "{}", show(&out));
    let (mut in_flight, mut most) = (0i32, 0i32);
    for e in events(&out) {
        match e["event"].as_str() {
            Some("task-started") => in_flight += 1,
            Some("task-finished") => in_flight -= 1,
            _ => {}
        }
        most = most.max(in_flight);
    }
    assert_eq!(most, 2, "jobs in flight at most");
    let text = std::fs::read_to_string(d.join("calls.log")).unwrap();
    let times: Vec<u64> = text
        .lines()
        .filter(|l| l.contains(" sbatch "))
        .map(|l| l.split(' ').next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(times.len(), 6);
    // 4 per second: at least 250 ms between submissions (less a little for sbatch's own
    // run time, which the log line follows).
    assert!(times.windows(2).all(|w| w[1] - w[0] >= 200), "{times:?}");
}

/// `twinflow cancel` from another shell while the engine runs: the jobs are scancelled, the
/// engine is sent SIGTERM, records the tasks as cancelled (not as failures to retry) and
/// exits 130.
#[test]
fn slurm_cancel_command_with_a_live_engine_records_cancelled_tasks() {
    require_cluster();
    let d = scratch("slurm/cancel-live");
    let wf = write(
        &d,
        "naps.yaml",
        &NAPS.replace("run: [sleep, \"120\"]", "run: [sleep, \"120\"]\n    retry: { count: 2, backoff: 0s }"),
    );
    let child = slurm_cmd(&d, &[wf.to_str().unwrap()]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    wait_until("4 submitted jobs", 60, || job_ids(&d.join("runs")).len() == 4);
    let ids = job_ids(&d.join("runs"));
    let cancel = twinflow().current_dir(&d).args(["cancel", "latest"]).output().unwrap();
    assert!(cancel.status.success(), "{}", show(&cancel));
    assert!(String::from_utf8_lossy(&cancel.stdout).contains("sent SIGTERM to the engine"), "{}", show(&cancel));
    let out = wait_output(child, 60);
    assert_eq!(out.status.code(), Some(130), "{}", show(&out));
    wait_until("the cancelled jobs to leave squeue", 30, || squeue(&ids).is_empty());
    assert!(retry_messages(&out).is_empty(), "{:?}", retry_messages(&out));
    let st = final_states(&out);
    assert_eq!(st.values().filter(|s| *s == "cancelled").count(), 4, "{st:?}");
    assert_eq!(count(&calls(&d), "sbatch", true), 4, "nothing resubmitted");
}
