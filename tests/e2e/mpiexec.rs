//! The local backend's `mpiexec` under a site profile (`--profile` with `--backend local`):
//! launcher, flags and environment from the profile's `mpiexec:` section, default resources
//! for steps that set none, and cancellation (SIGTERM to the engine, a step's timeout) that
//! leaves no rank of a 2-rank step behind. Real MPICH `mpiexec` (Hydra), no mocks.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::slurm::{processes_with, signal, wait_output, wait_until};
use crate::support::*;

/// A launcher that records its arguments, then runs the real `mpiexec` with them.
fn logged_mpiexec(dir: &Path) -> std::path::PathBuf {
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
name: mpiexec-profile
steps:
  ranks:
    resources: { ranks: 2 }
    run: [sh, -c, 'echo "rank $PMI_RANK of $PMI_SIZE $SITE_MARK threads=$OMP_NUM_THREADS" >> r.txt']
    out: { r: r.txt }
  pinned:
    resources: { threads: 1 }
    run: [sh, -c, 'echo "threads=$OMP_NUM_THREADS" > t.txt']
    out: { t: t.txt }
"#;

#[test]
fn local_backend_takes_mpiexec_and_default_resources_from_the_profile() {
    let d = scratch("mpiexec/profile");
    let launcher = logged_mpiexec(&d);
    let wf = write(&d, "wf.yaml", TWO_RANKS);
    let prof = write(
        &d,
        "ws.yaml",
        &format!(
            "name: ws\nmpiexec:\n  flavour: mpich\n  command: {}\n  flags: [-bind-to, none]\n  env: {{ SITE_MARK: from-profile }}\ndefault_threads: 2\n",
            launcher.display()
        ),
    );
    let out = run_json(&d, &wf, &["--profile", prof.to_str().unwrap(), "--cores", "4"]);
    assert!(out.status.success(), "{}", show(&out));
    let run = finished(&out)["run_id"].as_str().unwrap().to_string();
    let steps = d.join("runs").join(&run).join("steps");
    let mut ranks: Vec<String> =
        std::fs::read_to_string(steps.join("ranks/out/r.txt")).unwrap().lines().map(String::from).collect();
    ranks.sort();
    // Two ranks of one MPI job, each with the profile's environment and its default threads.
    assert_eq!(ranks, ["rank 0 of 2 from-profile threads=2", "rank 1 of 2 from-profile threads=2"]);
    // A step that sets `threads: 1` itself keeps it.
    assert_eq!(std::fs::read_to_string(steps.join("pinned/out/t.txt")).unwrap(), "threads=1\n");
    let argv: Vec<String> = std::fs::read_to_string(d.join("argv.txt")).unwrap().lines().map(String::from).collect();
    assert_eq!(argv[..5], ["-n", "2", "-bind-to", "none", "sh"], "{argv:?}");
    // `plan --launch` shows the same launch.
    let plan = twinflow()
        .current_dir(&d)
        .args(["plan", wf.to_str().unwrap(), "--launch", "--profile", prof.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(plan.status.success(), "{}", show(&plan));
    let text = String::from_utf8_lossy(&plan.stdout);
    assert!(text.contains(&format!("ranks: {} -n 2 -bind-to none sh -c", launcher.display())), "{text}");
    assert!(text.contains("ranks=2 threads=2"), "{text}");
}

/// Rank processes (`sleep MARKER`, not the `mpiexec` or `sh` around them).
fn ranks_of(marker: &str) -> usize {
    processes_with(&format!("sleep {marker}")).iter().filter(|l| l.split_whitespace().nth(1) == Some("sleep")).count()
}

/// A 2-rank step whose ranks sleep, marked by a unique sleep time.
fn sleeping_ranks(marker: &str, extra: &str, ignore_term: bool) -> String {
    let run = if ignore_term {
        // `trap '' TERM` is inherited by `sleep`: only SIGKILL stops these ranks.
        format!("run: [sh, -c, 'trap \"\" TERM; sleep {marker}; echo survived']")
    } else {
        format!("run: [sleep, \"{marker}\"]")
    };
    format!("name: mpiexec-cancel\nsteps:\n  ranks:\n    resources: {{ ranks: 2 }}\n    {run}\n{extra}")
}

#[test]
fn sigterm_to_the_engine_stops_every_rank_of_a_two_rank_step() {
    let d = scratch("mpiexec/sigterm");
    let marker = format!("3600.{}1", std::process::id());
    let wf = write(&d, "wf.yaml", &sleeping_ranks(&marker, "", false));
    let child = twinflow()
        .current_dir(&d)
        .args(["run", wf.to_str().unwrap(), "--json", "--grace", "2"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // mpiexec and its two ranks.
    wait_until("both ranks to start", 30, || ranks_of(&marker) == 2);
    signal(child.id(), "-TERM");
    let out = wait_output(child, 30);
    assert_eq!(out.status.code(), Some(130), "{}", show(&out));
    let left = processes_with(&marker);
    assert!(left.is_empty(), "processes of the cancelled step survived: {left:?}");
    assert_eq!(final_states(&out)["ranks"], "cancelled");
}

/// Ranks that ignore SIGTERM: after the step's timeout and the grace period, SIGKILL must
/// reach every rank, although Hydra starts them in sessions of their own.
#[test]
fn a_timed_out_two_rank_step_leaves_no_rank_even_when_ranks_ignore_sigterm() {
    let d = scratch("mpiexec/timeout");
    let marker = format!("3600.{}2", std::process::id());
    let wf = write(&d, "wf.yaml", &sleeping_ranks(&marker, "    timeout: 2s\n", true));
    let t0 = Instant::now();
    let child = twinflow()
        .current_dir(&d)
        .args(["run", wf.to_str().unwrap(), "--json", "--grace", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until("both ranks to start", 30, || ranks_of(&marker) == 2);
    let out = wait_output(child, 60);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let left = processes_with(&marker);
    assert!(left.is_empty(), "ranks survived the timeout: {left:?}");
    let msg = events(&out).into_iter().find(|e| e["event"] == "task-finished").unwrap()["message"].clone();
    assert!(msg.as_str().unwrap_or("").contains("timed out"), "{msg}");
    // 2 s timeout + 1 s grace, with room for a loaded machine.
    assert!(t0.elapsed() < Duration::from_secs(30), "{:?}", t0.elapsed());
}

/// What Hydra does to its ranks, done by the step itself: a process started with `setsid`
/// is in no process group of the step, so SIGTERM/SIGKILL to the group misses it. The
/// engine stops it as a descendant of the step.
#[test]
fn cancel_stops_step_processes_that_left_the_process_group() {
    let d = scratch("mpiexec/setsid");
    let marker = format!("3600.{}3", std::process::id());
    let wf = write(
        &d,
        "wf.yaml",
        &format!(
            "name: setsid\nsteps:\n  detached:\n    timeout: 1s\n    run: [sh, -c, 'setsid sleep {marker} & wait']\n"
        ),
    );
    let out = wait_output(
        twinflow()
            .current_dir(&d)
            .args(["run", wf.to_str().unwrap(), "--json", "--grace", "1"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
        60,
    );
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let left = processes_with(&marker);
    assert!(left.is_empty(), "a detached process of the step survived: {left:?}");
}
