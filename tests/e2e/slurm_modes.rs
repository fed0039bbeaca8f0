//! The SLURM backend's three ways of running a workflow, against the real one-node cluster:
//! per-step jobs, job arrays for scattered steps (`--arrays`) and one allocation packed
//! with `srun --exact` steps (`--allocation`). The flood twin gives the same data in each
//! as in the local run; arrays honour their throttle and resume without resubmitting;
//! an allocation runs every step as a step of one job and is cancelled at the end.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

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
    let local = run_with_deadline(cmd, Duration::from_secs(300));
    assert!(local.status.success(), "{}", show(&local));
    let reference: BTreeMap<String, BTreeMap<String, String>> =
        flood_outputs(&local_dir, &local).into_iter().map(|(k, p)| (k, data_digests(&kernel, &p))).collect();
    assert!(reference["summary.nc"].contains_key("exceedance_probability"), "{reference:?}");

    require_cluster();
    for mode in ["per-step", "arrays", "allocation"] {
        let d = scratch(&format!("slurm-modes/flood-{mode}"));
        let mut args = vec![MINI];
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
                // terrain, 4 members, 2 merges, summary.
                assert_eq!(sbatch.len(), 8, "{sbatch:#?}");
                let script = std::fs::read_to_string(run.join("steps/twin/flood/0/out/.twinflow/job.sbatch")).unwrap();
                assert!(script.contains("srun --mpi=pmi2 -n 2"), "{script}");
            }
            "arrays" => {
                // The 4 members in one array: terrain, array, 2 merges, summary.
                assert_eq!(sbatch.len(), 5, "{sbatch:#?}");
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
