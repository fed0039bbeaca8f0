//! Failures debuggable in one step: every failure names its attempt directory and its
//! stdout/stderr files (run output, `status`, `--json`) and shows the output that explains
//! it; MPI failures say what the launcher reported (real MPICH `mpiexec`); `twinflow logs`
//! prints or follows a task's output; Ctrl-C, a second Ctrl-C and the grace period.

use std::path::Path;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;

/// A step whose cause is on line 2 of a 42-line standard error, above a traceback.
const TRACEBACK: &str = r#"
name: traceback
steps:
  mesh:
    out: { m: m.txt }
    run: [sh, -c, 'echo "loading config"; echo "loading config" >&2; echo "FATAL: mesh file missing" >&2; echo "Traceback (most recent call last):" >&2; i=0; while [ $i -lt 38 ]; do echo "  File \"model.py\", line $i, in step" >&2; i=$((i+1)); done; echo "SystemExit: 1" >&2; sleep 0.2; exit 1']
  after:
    in: { m: "${{ steps.mesh.out.m }}" }
    run: [cat, "${{ in.m }}"]
"#;

fn task_event<'a>(events: &'a [serde_json::Value], kind: &str, task: &str) -> &'a serde_json::Value {
    events
        .iter()
        .find(|e| e["event"] == kind && e["task"] == task)
        .unwrap_or_else(|| panic!("no {kind} event of `{task}` in {events:#?}"))
}

#[test]
fn a_failure_names_its_attempt_and_files_and_shows_its_cause_in_the_run_output_status_and_json() {
    let d = scratch("failures/traceback");
    let wf = write(&d, "wf.yaml", TRACEBACK);

    // --json: the event carries the directory, the files, the exit code and a time.
    let out = run_json(&d, &wf, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let evs = events(&out);
    let run = run_id(&out);
    let adir = d.join("runs").join(&run).join("steps/mesh/attempt-1");
    let adir = std::fs::canonicalize(&adir).unwrap().display().to_string();
    let f = task_event(&evs, "task-finished", "mesh");
    assert_eq!(f["state"], "failed");
    assert_eq!(f["dir"], adir.as_str(), "{f:#}");
    assert_eq!(f["stdout"], format!("{adir}/.twinflow/stdout").as_str());
    assert_eq!(f["stderr"], format!("{adir}/.twinflow/stderr").as_str());
    assert_eq!(f["exit_code"], 1);
    assert!(f["seconds"].as_f64().unwrap() >= 0.15, "it ran about 0.2 s: {f:#}");
    let msg = f["message"].as_str().unwrap();
    assert!(msg.starts_with("exit code 1\n"), "{msg}");
    assert!(msg.contains(&format!("\nattempt directory: {adir}\n")), "{msg}");
    assert!(msg.contains(&format!("\nstderr: {adir}/.twinflow/stderr (42 lines)\n")), "{msg}");
    // The cause above the 20-line tail is shown with its line number.
    assert!(msg.contains("stderr, earlier lines that look like the cause:\n  2: FATAL: mesh file missing\n"), "{msg}");
    assert!(msg.contains("stderr, lines 23-42 of 42:\n"), "{msg}");
    assert!(msg.ends_with("  SystemExit: 1"), "{msg}");
    // stderr explains the failure: stdout is not repeated.
    assert!(!msg.contains("\nstdout:\n"), "{msg}");
    let started = task_event(&evs, "task-started", "mesh");
    assert_eq!(started["dir"], adir.as_str());
    for e in &evs {
        let t = e["time"].as_str().unwrap_or_else(|| panic!("no time: {e}"));
        let ts: jiff::Timestamp = t.parse().unwrap_or_else(|err| panic!("`{t}`: {err}"));
        assert!(t.ends_with('Z') && ts.as_second() > 1_700_000_000, "{t}");
    }
    // A task that never ran has no directory.
    let up = task_event(&evs, "task-finished", "after");
    assert_eq!(up["state"], "upstream-failed");
    assert!(up.get("dir").is_none() && up.get("exit_code").is_none(), "{up:#}");

    // `status`: the whole message under the task, and how to see the output.
    let st = twinflow().current_dir(&d).args(["status", &run]).output().unwrap();
    let text = String::from_utf8_lossy(&st.stdout);
    assert!(text.contains(&format!("      attempt directory: {adir}\n")), "{text}");
    assert!(text.contains("        2: FATAL: mesh file missing\n"), "{text}");
    assert!(text.contains(&format!("hint: `twinflow logs {run} mesh` prints a task's output")), "{text}");
    assert!(text.contains(&format!("hint: continue with `twinflow run --resume {run}`")), "{text}");
    // `status --json`: the failed task's directory and files.
    let js = twinflow().current_dir(&d).args(["status", &run, "--json"]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&js.stdout).unwrap();
    let mesh = v["tasks"].as_array().unwrap().iter().find(|t| t["task"] == "mesh").unwrap();
    assert_eq!(mesh["dir"], adir.as_str(), "{mesh:#}");
    assert_eq!(mesh["stderr"], format!("{adir}/.twinflow/stderr").as_str());
    assert!(mesh["message"].as_str().unwrap().contains("FATAL: mesh file missing"));

    // Without --json: the failure in full as it happens, then one line and the hints.
    let human = twinflow().current_dir(&d).args(["run", "wf.yaml", "--no-cache"]).output().unwrap();
    let err = String::from_utf8_lossy(&human.stderr);
    let run2 = err.split_whitespace().nth(2).unwrap().to_string();
    let adir2 = std::fs::canonicalize(d.join("runs").join(&run2).join("steps/mesh/attempt-1")).unwrap();
    assert!(err.contains("  failed mesh: exit code 1\n"), "{err}");
    assert!(err.contains(&format!("\n    attempt directory: {}\n", adir2.display())), "{err}");
    assert!(err.contains(&format!("\n    stdout: {}/.twinflow/stdout (1 line)\n", adir2.display())), "{err}");
    assert!(err.contains("\n      2: FATAL: mesh file missing\n"), "{err}");
    assert!(err.contains("\nfailed: mesh: exit code 1\n"), "{err}");
    assert!(err.contains(&format!("hint: `twinflow logs {run2} mesh` prints a task's output")), "{err}");
    assert!(err.contains(&format!("hint: continue with `twinflow run --resume {run2}`")), "{err}");
}

/// Real MPICH: a rank killed by SIGSEGV. Hydra reports it on stdout (`BAD TERMINATION`)
/// and exits with the signal's number; stderr is empty.
#[test]
fn an_mpi_rank_killed_by_sigsegv_is_reported_with_the_launchers_words_from_stdout() {
    let d = scratch("failures/mpi_segv");
    let wf = write(
        &d,
        "wf.yaml",
        r#"
name: mpi-segv
steps:
  solver:
    resources: { ranks: 2 }
    run: [sh, -c, 'echo "rank $PMI_RANK up"; if [ "$PMI_RANK" = 1 ]; then kill -SEGV $$; fi; sleep 5']
  wrapped:
    run: [sh, -c, 'echo working; sh -c "kill -SEGV \$\$"; exit $?']
"#,
    );
    let out = run_json(&d, &wf, &["--keep-going"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let evs = events(&out);
    let f = task_event(&evs, "task-finished", "solver");
    let msg = f["message"].as_str().unwrap();
    let first = msg.lines().next().unwrap();
    assert!(first.contains("was killed by signal 11: SIGSEGV (segmentation fault), as `mpiexec` reports"), "{msg}");
    // MPICH 4.0 names the process, 4.1 and later the rank.
    assert!(first.contains("rank 1 was killed") || first.contains("a rank (pid "), "{first}");
    assert!(msg.contains("/.twinflow/stderr (empty)"), "{msg}");
    assert!(msg.contains("\nstdout:\n") || msg.contains("\nstdout, lines"), "stdout is shown: {msg}");
    assert!(msg.contains("BAD TERMINATION OF ONE OF YOUR APPLICATION PROCESSES"), "{msg}");
    assert_eq!(f["exit_code"], 11, "{f:#}");
    // A wrapper that exits 128 + 11 for a child killed by SIGSEGV.
    let w = task_event(&evs, "task-finished", "wrapped");
    let wmsg = w["message"].as_str().unwrap();
    assert!(wmsg.starts_with("exit code 139: 128 + 11, a process killed by SIGSEGV (segmentation fault)\n"), "{wmsg}");
    assert_eq!(w["exit_code"], 139);
}

/// A 2-rank step over its time limit: the message says the limit, how long it ran, that
/// every rank was stopped, and shows what the ranks printed.
#[test]
fn a_timed_out_two_rank_step_says_its_limit_that_every_rank_was_stopped_and_shows_the_output() {
    let d = scratch("failures/mpi_timeout");
    let wf = write(
        &d,
        "wf.yaml",
        "name: slow\nsteps:\n  slow:\n    resources: { ranks: 2 }\n    timeout: 1s\n    run: [sh, -c, 'echo \"rank $PMI_RANK iteration 1\"; sleep 30']\n",
    );
    let out = run_json(&d, &wf, &["--grace", "1"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let f = task_event(&events(&out), "task-finished", "slow").clone();
    let msg = f["message"].as_str().unwrap();
    let first = msg.lines().next().unwrap();
    let ran: f64 = first
        .strip_prefix("timed out after ")
        .and_then(|r| r.split_once('s'))
        .and_then(|(n, _)| n.parse().ok())
        .unwrap_or_else(|| panic!("{first}"));
    assert!((1.0..10.0).contains(&ran), "{first}");
    assert!(
        first.ends_with(
            "s (limit `timeout: 1s`): every process of the step, all 2 ranks, was stopped (SIGTERM, then SIGKILL after the grace period)"
        ),
        "{first}"
    );
    assert!(msg.contains("rank 0 iteration 1") && msg.contains("rank 1 iteration 1"), "{msg}");
}

fn logs(d: &Path, args: &[&str]) -> Output {
    twinflow().current_dir(d).arg("logs").args(args).output().unwrap()
}

const SWEEP: &str = r#"
name: sweep
steps:
  sim:
    scatter:
      over: { seed: [1, 2], rain: [10.0, 40.0, 80.5] }
      method: cartesian
    retry: { count: 1, backoff: 0s }
    run: [sh, -c, 'echo "seed $1 rain $2 attempt $TWINFLOW_ATTEMPT"; echo "warn $1" >&2; if [ "$1" = 2 ] && [ "$2" = 40.0 ] && [ "$TWINFLOW_ATTEMPT" = 1 ]; then exit 5; fi', sh, "${{ scatter.seed }}", "${{ scatter.rain }}"]
"#;

#[test]
fn logs_prints_a_tasks_output_by_name_index_scatter_values_and_attempt() {
    let d = scratch("failures/logs");
    let wf = write(&d, "sweep.yaml", SWEEP);
    let out = run_json(&d, &wf, &[]);
    assert!(out.status.success(), "{}", show(&out));
    let run = run_id(&out);
    let member = |m: u32| std::fs::canonicalize(d.join("runs").join(&run).join(format!("steps/sim/{m}"))).unwrap();
    // By scatter values: seed=2, rain=40.0 is member 4 (cartesian, the last variable fastest).
    let o = logs(&d, &["latest", "sim[seed=2,rain=40.0]", "--stdout"]);
    assert!(o.status.success(), "{}", show(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "seed 2 rain 40.0 attempt 2\n");
    let note = String::from_utf8_lossy(&o.stderr);
    assert_eq!(
        note,
        format!("run {run}, task `sim[4]` (attempt 2 of 2, succeeded): {}\n", member(4).join("out").display())
    );
    // The same by index and with the value written as the number it is; the first attempt.
    let o = logs(&d, &[&run, "sim[4]", "--stdout", "--attempt", "1"]);
    assert_eq!(String::from_utf8_lossy(&o.stdout), "seed 2 rain 40.0 attempt 1\n", "{}", show(&o));
    let o = logs(&d, &["latest", "sim[rain=40,seed=2]", "--stderr", "--attempt", "1"]);
    assert_eq!(String::from_utf8_lossy(&o.stdout), "warn 2\n", "{}", show(&o));
    // Both files, each under a header.
    let o = logs(&d, &["latest", "sim[0]"]);
    let dir = member(0).join("out/.twinflow");
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        format!(
            "==> {}/stdout <==\nseed 1 rain 10.0 attempt 1\n\n==> {}/stderr <==\nwarn 1\n",
            dir.display(),
            dir.display()
        )
    );
    // Mistakes are usage errors that say what there is.
    let bad = |args: &[&str], want: &str| {
        let o = logs(&d, args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", show(&o));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(want), "{args:?}: `{want}` not in {err}");
    };
    bad(&["latest", "sim"], "`sim` names 6 tasks of run");
    bad(&["latest", "sim[seed=2]"], "3 members of `sim` have seed=2 (`sim[3]`, `sim[4]`, `sim[5]`): give more values");
    bad(&["latest", "sim[seed=3,rain=10]"], "no member of `sim` has seed=3,rain=10");
    bad(&["latest", "sim[sed=1]"], "step `sim` scatters over `seed`, `rain`, not `sed`");
    bad(&["latest", "sim[9]"], "has no task `sim[9]` (`sim` has 6 tasks");
    bad(&["latest", "smi"], "has no step `smi` (did you mean `sim`?)");
    bad(&["latest", "sim[4]", "--attempt", "3"], "`sim[4]` of run");
    bad(&["nope", "sim[0]"], "no run `nope`");
    // A cached task: the result of the earlier run.
    let again = run_json(&d, &wf, &[]);
    let o = logs(&d, &["latest", "sim[1]", "--stdout"]);
    assert_eq!(String::from_utf8_lossy(&o.stdout), "seed 1 rain 40.0 attempt 1\n", "{}", show(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("(cached: the result of an earlier run)"), "{}", show(&o));
    let _ = again;
}

/// `--follow` waits for a task that has not started, prints what it writes while it runs
/// and stops when its attempt ends.
#[test]
fn logs_follow_prints_a_running_attempts_output_until_it_ends() {
    let d = scratch("failures/follow");
    let wf = write(
        &d,
        "wf.yaml",
        "name: ticker\nsteps:\n  first:\n    run: [sleep, '1']\n  tick:\n    after: [first]\n    run: [sh, -c, 'for i in 1 2 3 4; do echo \"tick $i\"; sleep 0.5; done; echo done >&2']\n",
    );
    let mut run = spawn_run(&d, &wf, &[]);
    // The run must be recorded before `logs` can look for the task.
    let t0 = Instant::now();
    while !d.join("runs/twinflow.db").exists() && t0.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    let follow = twinflow()
        .current_dir(&d)
        .args(["logs", "latest", "tick", "-f"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let o = crate::slurm::wait_output(follow, 60);
    let status = run.wait().unwrap();
    assert!(status.success());
    let text = String::from_utf8_lossy(&o.stdout);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{}", show(&o));
    assert!(err.starts_with("waiting for `tick` to start\n"), "{err}");
    assert!(err.trim_end().ends_with("attempt 1 of `tick` ended: succeeded"), "{err}");
    // Under `==> FILE <==` headers, again whenever the other file grows.
    let lines: Vec<&str> = text.lines().filter(|l| !l.is_empty() && !l.starts_with("==> ")).collect();
    assert_eq!(lines, ["tick 1", "tick 2", "tick 3", "tick 4", "done"], "{text}");
    assert!(text.contains("/stderr <==\ndone\n"), "{text}");
}

/// A cycling run's tasks are `POINT/step[member]`; without the point, a step that ran in
/// several cycles is ambiguous.
#[test]
fn logs_of_a_cycling_run_name_the_cycle_point() {
    let d = scratch("failures/logs_cycling");
    let wf = write(
        &d,
        "wf.yaml",
        "name: cyc\ncycle: { every: 1, start: 1, cycles: 3 }\nsteps:\n  ens:\n    scatter: { over: { m: [a, b] } }\n    run: [sh, -c, 'echo \"cycle $1 member $2\"', sh, \"${{ cycle.point }}\", \"${{ scatter.m }}\"]\n  last:\n    once: last\n    run: [sh, -c, 'echo bye; echo oops >&2; exit 4']\n",
    );
    let out = run_json(&d, &wf, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let o = logs(&d, &["latest", "2/ens[1]", "--stdout"]);
    assert_eq!(String::from_utf8_lossy(&o.stdout), "cycle 2 member b\n", "{}", show(&o));
    let o = logs(&d, &["latest", "3/ens[m=a]", "--stdout"]);
    assert_eq!(String::from_utf8_lossy(&o.stdout), "cycle 3 member a\n", "{}", show(&o));
    // Only one cycle has `last`: the point may be left out.
    let o = logs(&d, &["latest", "last", "--stderr"]);
    assert_eq!(String::from_utf8_lossy(&o.stdout), "oops\n", "{}", show(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("task `3/last` (attempt 1 of 1, failed)"), "{}", show(&o));
    let o = logs(&d, &["latest", "ens[0]"]);
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("`ens[0]` names 3 tasks of run"), "{}", show(&o));
}

/// A step whose whole process group ignores SIGTERM; `marker` tells its `sleep` apart.
fn stubborn(marker: &str) -> String {
    format!("name: stubborn\nsteps:\n  hold:\n    run: [sh, -c, \"trap '' TERM; sleep {marker}\"]\n")
}

fn alive(marker: &str) -> bool {
    !crate::slurm::processes_with(&format!("sleep {marker}")).is_empty()
}

/// Ctrl-C stops running steps with SIGTERM and waits the grace period before SIGKILL; a
/// second Ctrl-C kills them at once.
#[test]
fn a_second_ctrl_c_kills_the_running_steps_at_once() {
    let d = scratch("failures/second_ctrl_c");
    let marker = format!("3600.{}5", std::process::id());
    let wf = write(&d, "s.yaml", &stubborn(&marker));
    let child = spawn_run(&d, &wf, &["--grace", "60"]);
    crate::slurm::wait_until("the step to start", 30, || alive(&marker));
    crate::execution::nix_kill(child.id(), "INT");
    // The first Ctrl-C alone would wait 60 s for a step that ignores SIGTERM.
    std::thread::sleep(Duration::from_millis(1000));
    assert!(alive(&marker), "the step ignores SIGTERM: only SIGKILL ends it");
    let t0 = Instant::now();
    crate::execution::nix_kill(child.id(), "INT");
    let out = crate::slurm::wait_output(child, 30);
    assert!(t0.elapsed() < Duration::from_secs(10), "the second Ctrl-C took {:?}", t0.elapsed());
    assert_eq!(out.status.code(), Some(130), "{}", show(&out));
    assert!(!alive(&marker), "the step survived the second Ctrl-C");
    let evs = events(&out);
    let c = evs.iter().find(|e| e["event"] == "cancelling").unwrap();
    assert_eq!(
        (c["signal"].as_str(), c["running"].as_u64(), c["grace_seconds"].as_f64()),
        (Some("SIGINT"), Some(1), Some(60.0))
    );
    let k = evs.iter().find(|e| e["event"] == "killing").unwrap();
    assert_eq!((k["signal"].as_str(), k["running"].as_u64()), (Some("SIGINT"), Some(1)), "{k}");
    assert_eq!(final_states(&out)["hold"], "cancelled");
    let run = run_id(&out);
    let st: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(d.join("runs").join(&run).join("steps/hold/attempt-1/.twinflow/status.json")).unwrap(),
    )
    .unwrap();
    assert_eq!((st["cancelled"].as_bool(), st["signal"].as_i64()), (Some(true), Some(9)), "{st}");
    let f = evs.iter().find(|e| e["event"] == "task-finished").unwrap();
    assert!(f["dir"].as_str().unwrap().ends_with("steps/hold/attempt-1"), "{f}");
}

/// On a terminal, the grace period counts down to the SIGKILL (the run under `script`, which
/// gives it a terminal and records what it draws).
#[test]
fn on_a_terminal_the_grace_period_counts_down() {
    let d = scratch("failures/countdown");
    let marker = format!("3600.{}6", std::process::id());
    let wf = write(&d, "s.yaml", &stubborn(&marker));
    let record = d.join("typescript");
    let cmd = format!("{} run {} --grace 3", env!("CARGO_BIN_EXE_twinflow"), wf.display());
    let mut script = std::process::Command::new("script")
        .current_dir(&d)
        .env("NO_COLOR", "1")
        .env_remove("TWINFLOW_RUNS_DIR")
        .args(["-qfec", &cmd])
        .arg(&record)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    crate::slurm::wait_until("the step to start", 30, || alive(&marker));
    let engine = crate::slurm::processes_with(&format!("^{} run", env!("CARGO_BIN_EXE_twinflow")));
    let pid: u32 = engine
        .iter()
        .find(|l| l.contains(&wf.display().to_string()))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no engine in {engine:?}"));
    crate::execution::nix_kill(pid, "INT");
    let t0 = Instant::now();
    while script.try_wait().unwrap().is_none() {
        assert!(t0.elapsed() < Duration::from_secs(30), "the run did not end");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!alive(&marker));
    let text = String::from_utf8_lossy(&std::fs::read(&record).unwrap()).to_string();
    assert!(text.contains("received SIGINT: stopping the running task: SIGTERM now, SIGKILL in 3s unless it exits; Ctrl-C again kills it at once"), "{text}");
    for left in ["3s", "2s", "1s"] {
        let line = format!("stopping the running task: SIGKILL in {left} unless it exits (Ctrl-C again: now)");
        assert!(text.contains(&line), "no `{line}` in {text}");
    }
}

/// `status RUN` shows the first ten failures in full, then where each later one ran.
#[test]
fn status_shows_ten_failures_in_full_then_their_directories() {
    let d = scratch("failures/status_many");
    let wf = write(
        &d,
        "wf.yaml",
        "name: many\nsteps:\n  m:\n    scatter: { over: { i: \"${{ range(0, 12) }}\" } }\n    run: [sh, -c, 'echo \"broken $1\" >&2; exit 2', sh, \"${{ scatter.i }}\"]\n",
    );
    let out = run_json(&d, &wf, &["--keep-going"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let st = twinflow().current_dir(&d).args(["status", "latest"]).output().unwrap();
    let text = String::from_utf8_lossy(&st.stdout);
    assert_eq!(text.matches("\n      stderr:\n        broken ").count(), 10, "{text}");
    assert_eq!(text.matches("      attempt directory: ").count(), 12, "{text}");
    assert!(text.contains("broken 9\n") && !text.contains("broken 10\n"), "{text}");
}
