//! The SLURM backend's three ways of running a workflow, against the real one-node cluster:
//! per-step jobs, job arrays for scattered steps (`--arrays`) and one allocation packed
//! with `srun --exact` steps (`--allocation`). The flood twin gives the same data in each
//! as in the local run; arrays honour their throttle and resume without resubmitting;
//! an allocation runs every step as a step of one job and is cancelled at the end.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::common::twinflow_bin;
use crate::flood::{MINI, mpi_kernel, run_with_deadline};
use crate::slurm::*;
use crate::support::*;

/// `twin-kernel stage checksum FILE`: per-variable digests of the data, without the
/// variables that record where members came from (paths and history differ between runs).
fn data_digests(kernel: &Path, file: &Path) -> BTreeMap<String, String> {
    let out = Command::new(kernel).args(["stage", "checksum"]).arg(file).output().unwrap();
    assert!(out.status.success(), "checksum of {}: {}", file.display(), String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let vars = v["files"][0]["variables"].as_object().unwrap();
    vars.iter()
        .filter(|(k, _)| !matches!(k.as_str(), "member_file" | "member_history"))
        .map(|(k, d)| (k.clone(), d.as_str().unwrap().to_string()))
        .collect()
}

/// The published outputs of a flood-mini run, by file name.
fn flood_outputs(dir: &Path, out: &Output) -> BTreeMap<String, PathBuf> {
    let steps = dir.join("runs").join(run_id(out)).join("steps/twin");
    let mut files = BTreeMap::new();
    for step in ["summary", "merge-maps", "merge-gauges"] {
        for e in std::fs::read_dir(steps.join(step).join("out")).unwrap().flatten() {
            if e.path().extension().is_some_and(|x| x == "nc") {
                files.insert(e.file_name().to_string_lossy().into_owned(), e.path());
            }
        }
    }
    assert_eq!(files.len(), 3, "{files:?}");
    files
}

/// Standard error of each flood member's final attempt.
fn member_logs(dir: &Path, out: &Output) -> Vec<String> {
    let flood = dir.join("runs").join(run_id(out)).join("steps/twin/flood");
    (0..4).map(|m| std::fs::read_to_string(flood.join(m.to_string()).join("out/.twinflow/stderr")).unwrap()).collect()
}

#[test]
fn slurm_flood_mini_matches_the_local_run_per_step_as_arrays_and_in_an_allocation() {
    let kernel = mpi_kernel();
    let local_dir = scratch("slurm-modes/flood-local");
    let mut cmd = twinflow();
    cmd.current_dir(&local_dir).env("TWINFLOW_KERNEL_BIN", &kernel).args(["run", MINI, "--json"]);
    cmd.arg("-p").arg(format!("results={}", local_dir.join("results").display()));
    let local = run_with_deadline(cmd, Duration::from_secs(300));
    assert!(local.status.success(), "{}", show(&local));
    let reference: BTreeMap<String, BTreeMap<String, String>> =
        flood_outputs(&local_dir, &local).into_iter().map(|(k, p)| (k, data_digests(&kernel, &p))).collect();
    assert!(reference["summary.nc"].contains_key("exceedance_probability"), "{reference:?}");

    require_cluster();
    for mode in ["per-step", "arrays", "allocation"] {
        let d = scratch(&format!("slurm-modes/flood-{mode}"));
        let results = format!("results={}", d.join("results").display());
        let mut args = vec![MINI, "-p", &results];
        match mode {
            "arrays" => args.push("--arrays"),
            "allocation" => args.extend(["--allocation", "--alloc-cpus", "8"]),
            _ => {}
        }
        let mut cmd = slurm_cmd(&d, &args);
        cmd.env("TWINFLOW_KERNEL_BIN", &kernel);
        let out = run_with_deadline(cmd, Duration::from_secs(300));
        assert!(out.status.success(), "{mode}: {}", show(&out));
        let got: BTreeMap<String, BTreeMap<String, String>> =
            flood_outputs(&d, &out).into_iter().map(|(k, p)| (k, data_digests(&kernel, &p))).collect();
        assert_eq!(got, reference, "{mode}: outputs differ from the local run");
        // Each member ran on 2 ranks of one MPI job (a launcher mismatch gives 2 × "of 1").
        for (m, log) in member_logs(&d, &out).iter().enumerate() {
            assert!(log.contains("rank 1 of 2") && !log.contains(" of 1\n"), "{mode}: member {m}:\n{log}");
        }
        let c = calls(&d);
        let sbatch: Vec<&Call> = c.iter().filter(|c| c.program == "sbatch").collect();
        let run = d.join("runs").join(run_id(&out));
        match mode {
            "per-step" => {
                // terrain, 4 members, 2 merges, summary, results.
                assert_eq!(sbatch.len(), 9, "{sbatch:#?}");
                let script = std::fs::read_to_string(run.join("steps/twin/flood/0/out/.twinflow/job.sbatch")).unwrap();
                assert!(script.contains("srun --mpi=pmi2 -n 2"), "{script}");
            }
            "arrays" => {
                // The 4 members in one array: terrain, array, 2 merges, summary, results.
                assert_eq!(sbatch.len(), 6, "{sbatch:#?}");
                let ids = job_ids(&run.join("steps/twin/flood"));
                let array = ids[0].split('_').next().unwrap().to_string();
                assert_eq!(ids, (0..4).map(|i| format!("{array}_{i}")).collect::<Vec<_>>());
            }
            _ => {
                // One job (the allocation), cancelled at the end; every step went into it.
                assert_eq!(sbatch.len(), 1, "{sbatch:#?}");
                let scancel: Vec<&Call> = c.iter().filter(|c| c.program == "scancel").collect();
                assert_eq!(scancel.len(), 1, "{scancel:#?}");
                let holder = scancel[0].args.trim().to_string();
                wait_until("the allocation to end", 30, || squeue(std::slice::from_ref(&holder)).is_empty());
            }
        }
    }
}

/// Five members in one array with at most two running at once; member 3 fails once and its
/// retry is an ordinary job. Each member writes the array index it ran as and when it ran.
const ARRAY: &str = r#"
name: slurm-array
steps:
  work:
    scatter:
      over: { i: "${{ range(0, 5) }}" }
    run:
      - sh
      - -c
      - |
        start=$(date +%s.%N); sleep 1
        echo "${SLURM_ARRAY_TASK_ID:-none} $1 $start $(date +%s.%N)" > o.txt
        if [ "$1" = 3 ] && [ ! -e ../failed-once ]; then touch ../failed-once; exit 3; fi
      - sh
      - "${{ scatter.i }}"
    out: { o: o.txt }
    retry: { count: 1, backoff: 0s }
"#;

#[test]
fn slurm_array_members_find_their_command_by_array_task_id_and_honour_the_throttle() {
    require_cluster();
    let d = scratch("slurm-modes/array");
    let wf = write(&d, "array.yaml", ARRAY);
    let base = std::fs::read_to_string(profile()).unwrap();
    let prof = write(&d, "throttled.yaml", &format!("{base}\n# test: arrays with a throttle of 2\n"));
    let prof_text = std::fs::read_to_string(&prof).unwrap().replace("submit:\n", "submit:\n  array_throttle: 2\n");
    std::fs::write(&prof, prof_text).unwrap();
    let mut cmd = twinflow();
    cmd.current_dir(&d)
        .args(["run", wf.to_str().unwrap(), "--backend", "slurm", "--profile", prof.to_str().unwrap(), "--arrays"])
        .arg("--json")
        .env("TWINFLOW_SLURM_CALL_LOG", d.join("calls.log"));
    let out = wait_output(cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap(), 180);
    assert!(out.status.success(), "{}", show(&out));
    let c = calls(&d);
    let sbatch: Vec<&Call> = c.iter().filter(|c| c.program == "sbatch").collect();
    assert_eq!(sbatch.len(), 2, "one array, then the retry of member 3: {sbatch:#?}");
    let array_script = sbatch[0].args.split(' ').next_back().unwrap();
    let text = std::fs::read_to_string(array_script).unwrap();
    assert!(text.contains("#SBATCH --array=0-4%2"), "{text}");
    let steps = d.join("runs").join(run_id(&out)).join("steps/work");
    let mut spans = vec![];
    for m in 0..5 {
        let line = std::fs::read_to_string(steps.join(m.to_string()).join("out/o.txt")).unwrap();
        let f: Vec<&str> = line.split_whitespace().collect();
        let expect_index = if m == 3 { "none".to_string() } else { m.to_string() };
        assert_eq!((f[0], f[1]), (expect_index.as_str(), m.to_string().as_str()), "member {m}: {line}");
        if m != 3 {
            spans.push((f[2].parse::<f64>().unwrap(), f[3].parse::<f64>().unwrap()));
        }
    }
    // The throttle: at no start time were more than 2 array members running.
    for (s, _) in &spans {
        let running = spans.iter().filter(|(a, b)| a <= s && s < b).count();
        assert!(running <= 2, "{running} members ran at once: {spans:?}");
    }
    let tasks = db_tasks(&d.join("runs"), &run_id(&out));
    assert_eq!(tasks["work[3]"], ("succeeded".to_string(), 2), "{tasks:?}");
}

#[test]
fn slurm_arrays_kill_nine_then_resume_follows_the_elements_and_submits_nothing_twice() {
    require_cluster();
    let d = scratch("slurm-modes/array-resume");
    let wf = write(&d, "resume.yaml", RESUME);
    let child =
        slurm_cmd(&d, &[wf.to_str().unwrap(), "--arrays"]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    wait_until("6 array elements", 60, || job_ids(&d.join("runs")).len() == 6);
    signal(child.id(), "-KILL");
    let _ = wait_output(child, 10);
    let ids = job_ids(&d.join("runs"));
    assert!(ids.iter().all(|i| i.contains('_')), "{ids:?}");
    assert!(!squeue(&ids).is_empty(), "the elements died with the engine");
    // `--resume` alone: the run remembers it was started with `--arrays` on SLURM.
    let out =
        wait_output(slurm_cmd(&d, &["--resume"]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap(), 120);
    assert!(out.status.success(), "{}", show(&out));
    let c = calls(&d);
    assert_eq!(count(&c, "sbatch", false), 2, "the array and `total`, each submitted once: {c:#?}");
    let run = run_id(&out);
    let tasks = db_tasks(&d.join("runs"), &run);
    assert!(tasks.values().all(|(s, n)| s == "succeeded" && *n == 1), "{tasks:?}");
    let all = std::fs::read_to_string(d.join("runs").join(&run).join("steps/total/out/all.txt")).unwrap();
    assert_eq!(all.lines().count(), 6, "{all}");
}

/// Six one-CPU members and a two-rank step in an allocation of 4 CPUs.
const PACK: &str = r#"
name: slurm-pack
steps:
  small:
    scatter:
      over: { i: "${{ range(0, 6) }}" }
    run:
      - sh
      - -c
      - 'start=$(date +%s.%N); sleep 2; echo "$SLURM_JOB_ID $SLURM_STEP_ID $start $(date +%s.%N)" > o.txt'
    out: { o: o.txt }
  mpi:
    after: [small]
    resources: { ranks: 2 }
    run: [sh, -c, 'echo "$SLURM_JOB_ID $SLURM_PROCID of $SLURM_NTASKS" >> r.txt']
    out: { r: r.txt }
"#;

#[test]
fn slurm_allocation_packs_steps_as_srun_steps_of_one_job() {
    require_cluster();
    let d = scratch("slurm-modes/allocation");
    let wf = write(&d, "pack.yaml", PACK);
    let out = wait_output(
        slurm_cmd(&d, &[wf.to_str().unwrap(), "--allocation", "--alloc-cpus", "4"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
        180,
    );
    assert!(out.status.success(), "{}", show(&out));
    let c = calls(&d);
    assert_eq!(count(&c, "sbatch", false), 1, "only the allocation is submitted: {c:#?}");
    let scancel: Vec<&Call> = c.iter().filter(|c| c.program == "scancel").collect();
    assert_eq!(scancel.len(), 1, "{scancel:#?}");
    let holder = scancel[0].args.trim().to_string();
    let steps = d.join("runs").join(run_id(&out)).join("steps");
    let mut spans = vec![];
    let mut step_ids = std::collections::BTreeSet::new();
    for m in 0..6 {
        let line = std::fs::read_to_string(steps.join(format!("small/{m}/out/o.txt"))).unwrap();
        let f: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(f[0], holder, "member {m} ran outside the allocation: {line}");
        step_ids.insert(f[1].to_string());
        spans.push((f[2].parse::<f64>().unwrap(), f[3].parse::<f64>().unwrap()));
    }
    assert_eq!(step_ids.len(), 6, "each task is its own job step: {step_ids:?}");
    let most = spans.iter().map(|(s, _)| spans.iter().filter(|(a, b)| a <= s && s < b).count()).max().unwrap();
    assert!((2..=4).contains(&most), "packed {most} one-CPU steps at once into 4 CPUs: {spans:?}");
    let mut ranks: Vec<String> =
        std::fs::read_to_string(steps.join("mpi/out/r.txt")).unwrap().lines().map(String::from).collect();
    ranks.sort();
    assert_eq!(ranks, [format!("{holder} 0 of 2"), format!("{holder} 1 of 2")]);
    wait_until("the allocation to end", 30, || squeue(std::slice::from_ref(&holder)).is_empty());
}

/// A `sbatch` first on PATH that submits with the real one and then, on its first call,
/// hangs past the engine's command timeout: the job is accepted but the engine never sees
/// its id. Every real submission is counted in `dir/submitted`.
fn accepting_but_hanging_sbatch(dir: &Path) -> PathBuf {
    let real = std::env::split_paths(&std::env::var_os("PATH").unwrap())
        .map(|p| p.join("sbatch"))
        .find(|p| p.is_file())
        .expect("sbatch on PATH");
    let bin = dir.join("hang-bin");
    std::fs::create_dir_all(&bin).unwrap();
    let script = format!(
        r#"#!/bin/sh
out=$("{real}" "$@") || exit $?
echo "$out" >> "{submitted}"
if [ ! -e "{hung}" ]; then touch "{hung}"; sleep 6; fi
echo "$out"
"#,
        real = real.display(),
        submitted = dir.join("submitted").display(),
        hung = dir.join("hung-once").display(),
    );
    let p = bin.join("sbatch");
    std::fs::write(&p, script).unwrap();
    let _ = Command::new("chmod").arg("+x").arg(&p).status();
    bin
}

#[test]
fn slurm_sbatch_that_times_out_after_acceptance_is_not_submitted_twice() {
    require_cluster();
    let d = scratch("slurm-modes/sbatch-timeout");
    let bin = accepting_but_hanging_sbatch(&d);
    let prof = d.join("short-timeout.yaml");
    let text = std::fs::read_to_string(profile()).unwrap().replace("command_timeout: 30s", "command_timeout: 2s");
    assert!(text.contains("command_timeout: 2s"));
    std::fs::write(&prof, text).unwrap();
    let wf = write(&d, "resume.yaml", RESUME);
    let mut cmd = twinflow();
    cmd.current_dir(&d)
        .args(["run", wf.to_str().unwrap(), "--backend", "slurm", "--profile", prof.to_str().unwrap(), "--json"])
        .env("TWINFLOW_SLURM_CALL_LOG", d.join("calls.log"))
        .env("PATH", format!("{}:{}", bin.display(), std::env::var("PATH").unwrap()));
    let out = wait_output(cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap(), 180);
    assert!(out.status.success(), "{}", show(&out));
    let c = calls(&d);
    assert!(c.iter().any(|c| c.program == "sbatch" && c.exit == "timeout"), "the wrapper never hung: {c:#?}");
    assert!(
        c.iter().any(|c| c.program == "squeue" && c.args.contains("--me")),
        "the queue was not searched for the job: {c:#?}"
    );
    let submitted = std::fs::read_to_string(d.join("submitted")).unwrap();
    assert_eq!(submitted.lines().count(), 7, "6 members + total, each accepted once:\n{submitted}");
    let tasks = db_tasks(&d.join("runs"), &run_id(&out));
    assert!(tasks.values().all(|(s, n)| s == "succeeded" && *n == 1), "{tasks:?}");
}

/// Four one-CPU members that sleep (the sleep time is a marker for `pgrep`), then a step
/// that gathers the allocation each member ran in.
const ALLOC_NAPS: &str = r#"
name: slurm-alloc-naps
steps:
  nap:
    scatter:
      over: { i: "${{ range(0, 4) }}" }
    run: [sh, -c, 'sleep MARKER; echo "$SLURM_JOB_ID" > o.txt', sh, "${{ scatter.i }}"]
    out: { o: o.txt }
  done:
    in: { parts: "${{ steps.nap.out.o }}" }
    run: [sh, -c, 'cat "$@" > all.txt', sh, "${{ in.parts }}"]
    out: { all: all.txt }
"#;

/// A sleep time unique to one test of this process, usable as a `pgrep` marker.
fn marker(test: u32) -> String {
    format!("4.{}{test}", std::process::id())
}

/// The holder job of a run in allocation mode, as recorded with the run.
fn holder_of(runs: &Path, run: &str) -> String {
    let s = run_settings(runs, run);
    assert_eq!(s["allocation_owned"], true, "{s}");
    s["allocation_job"].as_str().unwrap_or_else(|| panic!("no allocation recorded: {s}")).to_string()
}

/// Starts an allocation-mode run of `ALLOC_NAPS` on 2 CPUs and waits until steps run.
fn start_naps_in_an_allocation(d: &Path, marker: &str) -> std::process::Child {
    let wf = write(d, "naps.yaml", &ALLOC_NAPS.replace("MARKER", marker));
    let child = slurm_cmd(d, &[wf.to_str().unwrap(), "--allocation", "--alloc-cpus", "2"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until("steps running in the allocation", 60, || !processes_with(&format!("sleep {marker}")).is_empty());
    child
}

/// Every member's output names the allocation it ran in.
fn members_ran_in(d: &Path, out: &Output, holder: &str) {
    let all = std::fs::read_to_string(d.join("runs").join(run_id(out)).join("steps/done/out/all.txt")).unwrap();
    assert_eq!(all, format!("{holder}\n").repeat(4));
}

/// `kill -9` of the engine in allocation mode: its holder job outlives it; `--resume` goes on
/// in that allocation (nothing submitted again), and at the end no job of the run is left
/// in `squeue` and no `srun` of it is left running.
#[test]
fn slurm_allocation_kill_nine_then_resume_goes_on_in_the_same_allocation() {
    require_cluster();
    let d = scratch("slurm-modes/allocation-resume");
    let m = marker(1);
    let child = start_naps_in_an_allocation(&d, &m);
    signal(child.id(), "-KILL");
    let _ = wait_output(child, 10);
    let runs = d.join("runs");
    let run = latest_run_id(&runs);
    let holder = holder_of(&runs, &run);
    assert!(!squeue(std::slice::from_ref(&holder)).is_empty(), "the allocation died with the engine");
    let out =
        wait_output(slurm_cmd(&d, &["--resume"]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap(), 120);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(run_id(&out), run);
    assert_eq!(count(&calls(&d), "sbatch", false), 1, "the holder job was submitted again");
    members_ran_in(&d, &out, &holder);
    wait_until("the allocation to leave squeue", 30, || squeue(std::slice::from_ref(&holder)).is_empty());
    assert!(processes_with(&m).is_empty(), "{:?}", processes_with(&m));
}

/// `run --resume` of an allocation-mode run whose engine still runs is refused before it
/// touches the backend: the live run keeps its allocation and finishes (a refused resume
/// used to release the allocation on its way out, killing the live run's steps).
#[test]
fn slurm_allocation_a_refused_resume_leaves_the_live_runs_allocation_alone() {
    require_cluster();
    let d = scratch("slurm-modes/allocation-refused-resume");
    let m = marker(4);
    let child = start_naps_in_an_allocation(&d, &m);
    let runs = d.join("runs");
    let holder = holder_of(&runs, &latest_run_id(&runs));
    let second =
        wait_output(slurm_cmd(&d, &["--resume"]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap(), 60);
    assert_eq!(second.status.code(), Some(2), "{}", show(&second));
    assert!(
        String::from_utf8_lossy(&second.stderr).contains("is still being executed by twinflow"),
        "{}",
        show(&second)
    );
    assert!(!squeue(std::slice::from_ref(&holder)).is_empty(), "the refused resume cancelled the live allocation");
    let out = wait_output(child, 120);
    assert!(out.status.success(), "the live run was hurt: {}", show(&out));
    members_ran_in(&d, &out, &holder);
    assert_eq!(count(&calls(&d), "scancel", false), 1, "one scancel: the live run's own release");
}

/// `twinflow cancel RUN` of an allocation-mode run whose engine was killed: the holder job
/// is cancelled (its `srun` steps with it). `--resume` then asks for a new allocation and
/// finishes the run there; at the end neither allocation is in `squeue`.
#[test]
fn slurm_allocation_cancel_of_a_dead_engine_then_resume_in_a_new_allocation() {
    require_cluster();
    let d = scratch("slurm-modes/allocation-cancel-resume");
    let m = marker(2);
    let child = start_naps_in_an_allocation(&d, &m);
    signal(child.id(), "-KILL");
    let _ = wait_output(child, 10);
    let runs = d.join("runs");
    let run = latest_run_id(&runs);
    let first = holder_of(&runs, &run);
    let cancel = twinflow()
        .current_dir(&d)
        .args(["cancel", &run])
        .env("TWINFLOW_SLURM_CALL_LOG", d.join("calls.log"))
        .output()
        .unwrap();
    assert!(cancel.status.success(), "{}", show(&cancel));
    assert!(String::from_utf8_lossy(&cancel.stdout).contains(&format!("(allocation {first})")), "{}", show(&cancel));
    wait_until("the allocation to leave squeue", 30, || squeue(std::slice::from_ref(&first)).is_empty());
    wait_until("its srun steps to end", 30, || processes_with(&m).is_empty());
    let out =
        wait_output(slurm_cmd(&d, &["--resume"]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap(), 120);
    assert!(out.status.success(), "{}", show(&out));
    let second = holder_of(&runs, &run);
    assert_ne!(first, second);
    assert_eq!(count(&calls(&d), "sbatch", false), 2);
    members_ran_in(&d, &out, &second);
    wait_until("both allocations out of squeue", 30, || squeue(&[first.clone(), second.clone()]).is_empty());
}

/// Cancelling mid-run: with arrays by SIGTERM to the engine, in allocation mode with
/// `twinflow cancel RUN` while the engine runs. Afterwards no job of the run is in `squeue`
/// and no step process (`srun` or the step itself) is left.
#[test]
fn slurm_cancel_mid_run_in_array_and_allocation_mode_leaves_nothing_behind() {
    require_cluster();
    for mode in ["arrays", "allocation"] {
        let d = scratch(&format!("slurm-modes/cancel-{mode}"));
        let m = marker(if mode == "arrays" { 3 } else { 4 });
        let child = if mode == "arrays" {
            let wf = write(&d, "naps.yaml", &ALLOC_NAPS.replace("MARKER", &m));
            let c = slurm_cmd(&d, &[wf.to_str().unwrap(), "--arrays"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            wait_until("array members running", 60, || !processes_with(&format!("sleep {m}")).is_empty());
            c
        } else {
            start_naps_in_an_allocation(&d, &m)
        };
        let runs = d.join("runs");
        let run = latest_run_id(&runs);
        let ids = if mode == "arrays" {
            signal(child.id(), "-TERM");
            job_ids(&runs)
        } else {
            let cancel = twinflow().current_dir(&d).args(["cancel", &run]).output().unwrap();
            assert!(cancel.status.success(), "{}", show(&cancel));
            assert!(
                String::from_utf8_lossy(&cancel.stdout).contains("sent SIGTERM to the engine"),
                "{}",
                show(&cancel)
            );
            vec![holder_of(&runs, &run)]
        };
        let out = wait_output(child, 60);
        assert_eq!(out.status.code(), Some(130), "{mode}: {}", show(&out));
        // Arrays: all four members ran at once; the allocation's 2 CPUs held two of them.
        let st = final_states(&out);
        let running = if mode == "arrays" { 4 } else { 2 };
        assert_eq!(st.values().filter(|s| *s == "cancelled").count(), running, "{mode}: {st:?}");
        assert!(st.values().all(|s| s == "cancelled"), "{mode}: {st:?}");
        assert!(!ids.is_empty());
        wait_until("the run's jobs to leave squeue", 30, || squeue(&ids).is_empty());
        wait_until("every step process to end", 30, || processes_with(&m).is_empty());
    }
}

/// A two-rank step in an allocation, under a profile with a module, a set-up line and an
/// environment variable. `module` is a fake on PATH that logs what it is asked to load.
const SITE_ENV: &str = r#"
name: slurm-alloc-site
steps:
  ranks:
    resources: { ranks: 2 }
    run: [sh, -c, 'echo "$SLURM_PROCID $FROM_SETUP|$FROM_ENV" >> r.txt']
    out: { r: r.txt }
"#;

#[test]
fn slurm_allocation_steps_get_the_profiles_modules_setup_and_env() {
    require_cluster();
    let d = scratch("slurm-modes/allocation-site");
    let bin = d.join("module-bin");
    executable(&bin, "module", &format!("#!/bin/sh\necho \"$*\" >> \"{}\"\n", d.join("modules.log").display()));
    let base = std::fs::read_to_string(profile()).unwrap();
    let prof = write(
        &d,
        "site.yaml",
        &format!(
            "{base}\nmodules: [fake/1.0]\nsetup: ['export FROM_SETUP=\"set up\"']\nenv: {{ FROM_ENV: \"it's env\" }}\n"
        ),
    );
    let wf = write(&d, "site.yaml.wf", SITE_ENV);
    let mut cmd = twinflow();
    cmd.current_dir(&d)
        .args(["run", wf.to_str().unwrap(), "--backend", "slurm", "--profile", prof.to_str().unwrap()])
        .args(["--allocation", "--alloc-cpus", "2", "--json"])
        .env("TWINFLOW_SLURM_CALL_LOG", d.join("calls.log"))
        .env("PATH", path_with(&bin));
    let out = wait_output(cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap(), 120);
    assert!(out.status.success(), "{}", show(&out));
    let mut lines: Vec<String> =
        std::fs::read_to_string(d.join("runs").join(run_id(&out)).join("steps/ranks/out/r.txt"))
            .unwrap()
            .lines()
            .map(String::from)
            .collect();
    lines.sort();
    assert_eq!(lines, ["0 set up|it's env", "1 set up|it's env"]);
    assert_eq!(std::fs::read_to_string(d.join("modules.log")).unwrap(), "load fake/1.0\n".repeat(2));
}

/// Three one-CPU members and a two-rank step, each reporting the job and step it ran as.
const INSIDE: &str = r#"
name: slurm-inside
steps:
  small:
    scatter:
      over: { i: "${{ range(0, 3) }}" }
    run: [sh, -c, 'echo "$SLURM_JOB_ID $SLURM_STEP_ID" > o.txt']
    out: { o: o.txt }
  mpi:
    resources: { ranks: 2 }
    run: [sh, -c, 'echo "$SLURM_JOB_ID $SLURM_PROCID of $SLURM_NTASKS" >> r.txt']
    out: { r: r.txt }
"#;

/// `twinflow run --allocation` inside `sbatch -n4`: every step is an `srun` step of that one
/// job; no holder job is submitted and the user's job is not cancelled by twinflow.
#[test]
fn slurm_allocation_inside_an_sbatch_job_runs_every_step_as_a_step_of_that_job() {
    require_cluster();
    let d = scratch("slurm-modes/inside-sbatch");
    let wf = write(&d, "inside.yaml", INSIDE);
    let events = d.join("events.jsonl");
    let script = executable(
        &d,
        "inner.sh",
        &format!(
            "#!/bin/sh\nexec '{}' run '{}' --backend slurm --profile '{}' --allocation --json > '{}'\n",
            twinflow_bin(),
            wf.display(),
            profile(),
            events.display()
        ),
    );
    let sb = Command::new("sbatch")
        .args(["--parsable", "-n4", "--job-name=twinflow-inside"])
        .arg(format!("--chdir={}", d.display()))
        .arg(format!("--output={}", d.join("inner.log").display()))
        .arg(&script)
        .env("TWINFLOW_SLURM_CALL_LOG", d.join("calls.log"))
        .output()
        .unwrap();
    assert!(sb.status.success(), "{}", String::from_utf8_lossy(&sb.stderr));
    let outer = String::from_utf8_lossy(&sb.stdout).trim().to_string();
    wait_until("the outer job to end", 120, || squeue(std::slice::from_ref(&outer)).is_empty());
    let log = std::fs::read_to_string(d.join("inner.log")).unwrap_or_default();
    let text = std::fs::read_to_string(&events).unwrap_or_default();
    let fin = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|e| e["event"] == "run-finished")
        .unwrap_or_else(|| panic!("no run-finished event; job log:\n{log}\nevents:\n{text}"));
    assert_eq!(fin["state"], "succeeded", "{log}\n{text}");
    let run = d.join("runs").join(fin["run_id"].as_str().unwrap());
    let mut steps = std::collections::BTreeSet::new();
    for m in 0..3 {
        let line = std::fs::read_to_string(run.join(format!("steps/small/{m}/out/o.txt"))).unwrap();
        let f: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(f[0], outer, "member {m} ran outside the outer job: {line}");
        steps.insert(f[1].to_string());
    }
    assert_eq!(steps.len(), 3, "each task is its own job step: {steps:?}");
    let mut ranks: Vec<String> =
        std::fs::read_to_string(run.join("steps/mpi/out/r.txt")).unwrap().lines().map(String::from).collect();
    ranks.sort();
    assert_eq!(ranks, [format!("{outer} 0 of 2"), format!("{outer} 1 of 2")]);
    let c = calls(&d);
    assert_eq!(count(&c, "sbatch", false), 0, "a holder job was submitted: {c:#?}");
    assert_eq!(count(&c, "scancel", false), 0, "twinflow cancelled a job it does not own: {c:#?}");
    let settings = run_settings(&d.join("runs"), fin["run_id"].as_str().unwrap());
    assert_eq!(
        (settings["allocation_job"].as_str(), settings["allocation_owned"].as_bool()),
        (Some(outer.as_str()), Some(false))
    );
}

/// `kill -9` of the engine in allocation mode, and nobody resumes or cancels: the holder
/// job sees its heartbeat stop and ends itself (its steps with it) after the profile's
/// `allocation_idle`, instead of holding the CPUs until its time limit. While the engine
/// lives, the heartbeat keeps the allocation beyond that time.
#[test]
fn slurm_allocation_of_a_killed_engine_ends_itself_when_the_heartbeat_stops() {
    require_cluster();
    let d = scratch("slurm-modes/allocation-heartbeat");
    let m = format!("30.{}7", std::process::id());
    let wf = write(&d, "naps.yaml", &ALLOC_NAPS.replace("MARKER", &m));
    let base = std::fs::read_to_string(profile()).unwrap();
    let prof = write(&d, "idle.yaml", &format!("{base}\nallocation_idle: 4s\n"));
    let child = twinflow()
        .current_dir(&d)
        .args(["run", wf.to_str().unwrap(), "--backend", "slurm", "--profile", prof.to_str().unwrap()])
        .args(["--allocation", "--alloc-cpus", "2", "--json"])
        .env("TWINFLOW_SLURM_CALL_LOG", d.join("calls.log"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until("steps running in the allocation", 60, || !processes_with(&format!("sleep {m}")).is_empty());
    let runs = d.join("runs");
    let run = latest_run_id(&runs);
    let holder = holder_of(&runs, &run);
    std::thread::sleep(Duration::from_secs(7));
    assert!(!squeue(std::slice::from_ref(&holder)).is_empty(), "the allocation ended while its engine was alive");
    signal(child.id(), "-KILL");
    let _ = wait_output(child, 10);
    let t0 = std::time::Instant::now();
    wait_until("the allocation to end itself", 40, || squeue(std::slice::from_ref(&holder)).is_empty());
    assert!(t0.elapsed() >= Duration::from_secs(2), "the allocation ended at once, not after its idle time");
    wait_until("its steps to end", 30, || processes_with(&m).is_empty());
    let log = std::fs::read_to_string(runs.join("allocations").join(format!("allocation-{holder}.log"))).unwrap();
    assert!(log.contains("no heartbeat from the engine for 4 s; ending the allocation"), "{log}");
}

/// A service in an allocation: ready through its file, read by a step, stopped when the
/// rest is done, gracefully: `srun` answers a SIGTERM of its own by killing the step's
/// tasks (Slurm 22.05: "forcing job termination"), so the engine sends the SIGTERM to the
/// step's tasks through `scancel --signal=TERM JOB.STEP`, and the service's trap runs.
const ALLOC_SERVICE: &str = r#"
name: alloc-service
steps:
  server:
    service: { ready: { file: ready, poll: 100ms } }
    run: [sh, -c, 'echo "$SLURM_JOB_ID" > "$TWINFLOW_OUT_JOB"; trap "echo got-sigterm > sigterm.txt; exit 0" TERM; touch ready; while true; do sleep 0.173; done']
    out: { job: job.txt }
  reader:
    run: [sh, -c, 'cat "$1" > jobs.txt; echo "$SLURM_JOB_ID" >> jobs.txt', reader, "${{ steps.server.out.job }}"]
    out: { jobs: jobs.txt }
"#;

#[test]
fn slurm_allocation_runs_a_service_until_the_rest_is_done() {
    require_cluster();
    let d = scratch("slurm-modes/service");
    let wf = write(&d, "service.yaml", ALLOC_SERVICE);
    let child = slurm_cmd(&d, &[wf.to_str().unwrap(), "--allocation", "--alloc-cpus", "2", "--grace", "5"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = wait_output(child, 180);
    assert!(out.status.success(), "{}", show(&out));
    let ev = events(&out);
    let at = |kind: &str, task: &str| ev.iter().position(|e| e["event"] == kind && e["task"] == task).unwrap();
    assert!(at("service-ready", "server") < at("task-started", "reader"), "{}", show(&out));
    let states = final_states(&out);
    assert_eq!((states["server"].as_str(), states["reader"].as_str()), ("succeeded", "succeeded"));
    // Both ran as steps of the one allocation, the service until it was stopped.
    let holder = holder_of(&d.join("runs"), &run_id(&out));
    let jobs = step_file(&d, &out, "reader/out/jobs.txt");
    assert_eq!(jobs.split_whitespace().collect::<Vec<_>>(), [holder.as_str(), holder.as_str()]);
    let st = d.join("runs").join(run_id(&out)).join("steps/server/attempt-1/.twinflow/status.json");
    let st: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&st).unwrap()).unwrap();
    assert_eq!(st["cancelled"], true, "{st}");
    // It got the SIGTERM (not srun's SIGKILL) and ran its trap.
    let attempt = d.join("runs").join(run_id(&out)).join("steps/server/attempt-1");
    let got = std::fs::read_dir(&attempt)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .chain([attempt.join("out")])
        .map(|p| if p.is_dir() { p.join("sigterm.txt") } else { p })
        .find(|p| p.ends_with("sigterm.txt") && p.exists());
    let got =
        got.unwrap_or_else(|| panic!("the service never saw a SIGTERM (no sigterm.txt under {})", attempt.display()));
    assert_eq!(std::fs::read_to_string(got).unwrap().trim(), "got-sigterm");
    wait_until("the allocation to end", 30, || squeue(std::slice::from_ref(&holder)).is_empty());
    assert!(processes_with("sleep 0.173").is_empty(), "the service outlived its run");
}
