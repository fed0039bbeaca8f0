//! SLURM faults and status sources against the real one-node cluster: an engine killed
//! while `sbatch` was in flight (the job was accepted, its id never came back), jobs that
//! end OUT_OF_MEMORY / NODE_FAIL / PREEMPTED (states reported through wrappers around the
//! real `sacct`/`scontrol`, since the cluster cannot produce them safely while other tests
//! run), and the three places finished jobs' states come from (`sacct` through slurmdbd,
//! `sacct -c`, `scontrol show job`).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::slurm::*;
use crate::support::*;

/// A `sbatch` first on PATH that runs the real one and appends its answer to
/// `dir/submitted`; on its first call it then waits (until `dir/go` exists, at most 30 s)
/// before printing the id: the job is in SLURM, the engine does not know it yet.
fn accepting_then_stalling_sbatch(dir: &Path) -> PathBuf {
    let bin = dir.join("stall-bin");
    executable(
        &bin,
        "sbatch",
        &format!(
            r#"#!/bin/sh
out=$("{real}" "$@") || exit $?
echo "$out" >> "{d}/submitted"
if mkdir "{d}/stalled" 2>/dev/null; then
  i=0; while [ $i -lt 300 ] && [ ! -e "{d}/go" ]; do sleep 0.1; i=$((i + 1)); done
fi
echo "$out"
"#,
            real = real_program("sbatch").display(),
            d = dir.display()
        ),
    );
    bin
}

/// `kill -9` while the first `sbatch` (a job, or a job array with `--arrays`) has been
/// accepted but has not answered: `--resume` finds the job by its `--comment` tag and
/// follows it. Every task is submitted exactly once, counted by the wrapper.
#[test]
fn slurm_kill_nine_while_sbatch_is_in_flight_then_resume_submits_each_task_once() {
    require_cluster();
    for (mode, submissions) in [("per-step", 7), ("arrays", 2)] {
        let d = scratch(&format!("slurm-faults/in-flight-{mode}"));
        let wf = write(&d, "resume.yaml", RESUME);
        let path = path_with(&accepting_then_stalling_sbatch(&d));
        let mut args = vec![wf.to_str().unwrap()];
        if mode == "arrays" {
            args.push("--arrays");
        }
        let child =
            slurm_cmd(&d, &args).env("PATH", &path).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
        wait_until("the first submission to be accepted", 60, || {
            d.join("stalled").exists()
                && std::fs::read_to_string(d.join("submitted")).is_ok_and(|s| s.lines().count() == 1)
        });
        signal(child.id(), "-KILL");
        let _ = wait_output(child, 10);
        std::fs::write(d.join("go"), "").unwrap();
        let runs = d.join("runs");
        assert!(job_ids(&runs).is_empty(), "{mode}: the engine learned a job id before it died");
        let first = std::fs::read_to_string(d.join("submitted")).unwrap().trim().to_string();
        let out = wait_output(
            slurm_cmd(&d, &["--resume"])
                .env("PATH", &path)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
            120,
        );
        assert!(out.status.success(), "{mode}: {}", show(&out));
        let submitted: Vec<String> =
            std::fs::read_to_string(d.join("submitted")).unwrap().lines().map(String::from).collect();
        assert_eq!(submitted.len(), submissions, "{mode}: real submissions {submitted:?}");
        let ids = job_ids(&runs);
        assert!(
            ids.iter().any(|i| *i == first || i.starts_with(&format!("{first}_"))),
            "{mode}: {first} not followed: {ids:?}"
        );
        let tasks = db_tasks(&runs, &run_id(&out));
        assert!(tasks.values().all(|(s, n)| s == "succeeded" && *n == 1), "{mode}: {tasks:?}");
        let c = calls(&d);
        assert!(
            c.iter().any(|c| c.program == "squeue" && c.args.contains("--me") && c.args.contains("--states=all")),
            "{mode}: the queue was not searched: {c:#?}"
        );
    }
}

/// Wrappers first on PATH around the real `sacct` and `scontrol`: a job whose id names a
/// file in `marks` is reported in the state that file holds (as if SLURM had ended it so).
fn state_rewriting_wrappers(dir: &Path, marks: &Path) -> PathBuf {
    let bin = dir.join("fault-bin");
    executable(
        &bin,
        "sacct",
        &format!(
            r#"#!/bin/sh
out=$("{real}" "$@") || exit $?
printf '%s\n' "$out" | awk -F'|' -v OFS='|' -v d="{marks}" '{{ f = d "/" $1; if ((getline s < f) > 0) $2 = s; close(f); print }}'
"#,
            real = real_program("sacct").display(),
            marks = marks.display()
        ),
    );
    executable(
        &bin,
        "scontrol",
        &format!(
            r#"#!/bin/sh
out=$("{real}" "$@"); st=$?
if [ "$1 $2" = "show job" ] && [ -f "{marks}/$3" ]; then
  printf '%s\n' "$out" | sed "s/JobState=[A-Z_]*/JobState=$(cat "{marks}/$3")/"
else
  printf '%s\n' "$out"
fi
exit $st
"#,
            real = real_program("scontrol").display(),
            marks = marks.display()
        ),
    );
    bin
}

/// Each member fails its first attempt and marks its job id with the SLURM state it is to
/// be reported in; the retry succeeds.
const FAULTS: &str = r#"
name: slurm-faults
params:
  marks: { type: path }
steps:
  fault:
    scatter:
      over: { kind: "${{ ['OUT_OF_MEMORY', 'NODE_FAIL', 'PREEMPTED'] }}" }
    resources: { memory: 100M }
    retry: { count: 1, backoff: 0s }
    run: [sh, -c, 'if [ -e "$1/$2.done" ]; then echo ok > o.txt; exit 0; fi; touch "$1/$2.done"; echo "$2" > "$1/$SLURM_JOB_ID"; exit 1', sh, "${{ params.marks }}", "${{ scatter.kind }}"]
    out: { o: o.txt }
"#;

/// OUT_OF_MEMORY, NODE_FAIL and PREEMPTED are failures the step's retry policy retries; the
/// retry of the job that ran out of memory asks for memory × `escalate.memory_factor` (1.5
/// in local.yaml), the others for the same memory.
#[test]
fn slurm_out_of_memory_node_fail_and_preempted_are_retried_and_oom_asks_for_more_memory() {
    require_cluster();
    let d = scratch("slurm-faults/states");
    let marks = d.join("marks");
    std::fs::create_dir_all(&marks).unwrap();
    let wf = write(&d, "faults.yaml", FAULTS);
    let p = format!("marks={}", marks.display());
    let bin = state_rewriting_wrappers(&d, &marks);
    let out = wait_output(
        slurm_cmd(&d, &[wf.to_str().unwrap(), "-p", &p])
            .env("PATH", path_with(&bin))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
        120,
    );
    assert!(out.status.success(), "{}", show(&out));
    let retries: Vec<(String, String)> = events(&out)
        .into_iter()
        .filter(|e| e["event"] == "task-retry")
        .map(|e| (e["task"].as_str().unwrap_or("").to_string(), e["message"].as_str().unwrap_or("").to_string()))
        .collect();
    let msg = |task: &str| retries.iter().find(|(t, _)| t == task).map(|(_, m)| m.clone()).unwrap_or_default();
    assert!(msg("fault[0]").contains("out of memory"), "{retries:?}");
    assert!(msg("fault[1]").contains("NODE_FAIL"), "{retries:?}");
    assert!(msg("fault[2]").contains("PREEMPTED"), "{retries:?}");
    let run = d.join("runs").join(run_id(&out));
    let tasks = db_tasks(&d.join("runs"), &run_id(&out));
    assert!(tasks.values().all(|(s, n)| s == "succeeded" && *n == 2), "{tasks:?}");
    let script = |m: u32, attempt: &str| {
        std::fs::read_to_string(run.join(format!("steps/fault/{m}/{attempt}/.twinflow/job.sbatch"))).unwrap()
    };
    assert!(script(0, "attempt-1").contains("#SBATCH --mem=100M"));
    assert!(script(0, "out").contains("#SBATCH --mem=150M"), "{}", script(0, "out"));
    for m in [1, 2] {
        assert!(script(m, "out").contains("#SBATCH --mem=100M"), "member {m}: {}", script(m, "out"));
    }
    assert_eq!(std::fs::read_to_string(run.join("steps/fault/0/.escalation")).unwrap().trim(), "1 1.5");
}

/// Fails (does not skip) unless the cluster keeps accounting in slurmdbd.
fn require_slurmdbd() {
    let out = Command::new("scontrol").args(["show", "config"]).output().expect("scontrol");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines().any(|l| l.starts_with("AccountingStorageType") && l.contains("slurmdbd")),
        "the test cluster runs without slurmdbd; start it with it: `bash hpc/slurm-local.sh stop; SLURM_LOCAL_DBD=1 bash hpc/slurm-local.sh start` (needs `hpc/setup-deps.sh --slurmdbd`; `make test` does both)"
    );
}

const TWO: &str = r#"
name: slurm-sources
steps:
  two:
    scatter:
      over: { i: "${{ range(0, 2) }}" }
    run: [sh, -c, 'echo "$1" > o.txt', sh, "${{ scatter.i }}"]
    out: { o: o.txt }
"#;

/// `polling.status_source`: `auto` finds slurmdbd and uses plain `sacct`; `jobcomp` reads
/// the completion log with `sacct -c`; `scontrol` asks `scontrol show job` per finished job.
/// Each run finishes with the right states.
#[test]
fn slurm_finished_jobs_are_read_from_each_status_source() {
    require_cluster();
    require_slurmdbd();
    let base = std::fs::read_to_string(profile()).unwrap();
    assert!(base.contains("status_source: auto"));
    for source in ["auto", "jobcomp", "scontrol"] {
        let d = scratch(&format!("slurm-faults/source-{source}"));
        let wf = write(&d, "two.yaml", TWO);
        let prof = write(&d, "p.yaml", &base.replace("status_source: auto", &format!("status_source: {source}")));
        let mut cmd = twinflow();
        cmd.current_dir(&d)
            .args(["run", wf.to_str().unwrap(), "--backend", "slurm", "--profile", prof.to_str().unwrap(), "--json"])
            .env("TWINFLOW_SLURM_CALL_LOG", d.join("calls.log"));
        let out = wait_output(cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap(), 120);
        assert!(out.status.success(), "{source}: {}", show(&out));
        assert!(final_states(&out).values().all(|s| s == "succeeded"), "{source}");
        let c = calls(&d);
        let plain = c.iter().filter(|c| c.program == "sacct" && !c.args.starts_with("-c ")).count();
        let jobcomp = c.iter().filter(|c| c.program == "sacct" && c.args.starts_with("-c ")).count();
        let per_job = c.iter().filter(|c| c.program == "scontrol" && c.args.starts_with("show job")).count();
        let got = (plain > 0, jobcomp > 0, per_job);
        match source {
            "auto" => assert_eq!(got, (true, false, 0), "{c:#?}"),
            "jobcomp" => assert_eq!(got, (false, true, 0), "{c:#?}"),
            _ => assert_eq!((got.0, got.1, got.2 >= 2), (false, false, true), "{c:#?}"),
        }
    }
}
