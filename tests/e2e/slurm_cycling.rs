//! Cycling workflows on the SLURM test cluster: per-step jobs, job arrays and allocation
//! mode give the local run's results, and a killed engine reattaches to the jobs of every
//! active cycle (nothing is submitted twice).

use std::process::Stdio;

use crate::common::repo_root;
use crate::slurm::{calls, count, job_ids, require_cluster, signal, slurm_cmd, squeue, wait_output, wait_until};
use crate::support::*;

fn counts_of(d: &std::path::Path, out: &std::process::Output) -> Vec<String> {
    let id = run_id(out);
    (1..=5)
        .map(|k| {
            std::fs::read_to_string(d.join(format!("runs/{id}/cycles/{k}/steps/count/out/n.txt")))
                .unwrap_or_else(|e| panic!("cycle {k}: {e}\n{}", show(out)))
                .trim()
                .to_string()
        })
        .collect()
}

#[test]
fn slurm_cycling_hello_per_step_as_arrays_and_in_an_allocation() {
    require_cluster();
    let wf = repo_root().join("examples/cycling-hello.yaml");
    for (mode, extra) in
        [("per-step", vec![]), ("arrays", vec!["--arrays"]), ("allocation", vec!["--allocation", "--alloc-cpus", "2"])]
    {
        let d = scratch(&format!("slurm-cycling/{mode}"));
        let mut args = vec![wf.to_str().unwrap()];
        args.extend(extra.iter().copied());
        let out = wait_output(slurm_cmd(&d, &args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap(), 240);
        assert!(out.status.success(), "{mode}: {}", show(&out));
        assert_eq!(counts_of(&d, &out), ["1", "2", "3", "4", "5"], "{mode}");
        let c = calls(&d);
        if mode == "allocation" {
            // Every task ran as an `srun` step of the one job submitted, the allocation.
            assert_eq!(count(&c, "sbatch", false), 1, "{mode}: one allocation: {c:#?}");
            let holder = c.iter().find(|c| c.program == "scancel").map(|c| c.args.trim().to_string()).unwrap();
            let steps = || {
                let o = std::process::Command::new("sacct")
                    .args(["-j", &holder, "-n", "-P", "--format=JobID"])
                    .output()
                    .unwrap();
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .filter(|l| l.split_once('.').is_some_and(|(_, s)| s.parse::<u32>().is_ok()))
                    .count()
            };
            wait_until("sacct to list the allocation's steps", 30, || steps() >= 7);
        } else {
            assert_eq!(count(&c, "sbatch", false), 7, "{mode}: seed, 5 counts, report: {c:#?}");
        }
    }
}

/// Four cycles of two 4-second members each, independent of each other, three cycles
/// active at once (runahead 2): six jobs in flight from three cycles.
const SLOW: &str = r#"
name: slow-cycles
cycle: { every: 1, start: 0, cycles: 4, runahead: 2 }
steps:
  member:
    scatter: { over: { i: "${{ range(0, 2) }}" } }
    run: [sh, -c, 'sleep 4; echo "$1 $2" > o.txt', member, "${{ cycle.index }}", "${{ scatter.i }}"]
    out: { o: o.txt }
"#;

#[test]
fn slurm_cycling_kill_nine_then_resume_follows_the_jobs_of_every_active_cycle() {
    require_cluster();
    let d = scratch("slurm-cycling/resume");
    let wf = write(&d, "slow.yaml", SLOW);
    let child = slurm_cmd(&d, &[wf.to_str().unwrap()]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    wait_until("jobs of three cycles submitted", 90, || job_ids(&d.join("runs")).len() == 6);
    signal(child.id(), "-KILL");
    let _ = wait_output(child, 10);
    let ids = job_ids(&d.join("runs"));
    assert!(!squeue(&ids).is_empty(), "the jobs outlive the engine");
    let out =
        wait_output(slurm_cmd(&d, &["--resume"]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap(), 180);
    assert!(out.status.success(), "{}", show(&out));
    let c = calls(&d);
    assert_eq!(count(&c, "sbatch", false), 8, "4 cycles x 2 members, each submitted once: {c:#?}");
    let run = run_id(&out);
    let tasks = db_tasks(&d.join("runs"), &run);
    assert_eq!(tasks.len(), 8);
    assert!(tasks.values().all(|(s, n)| s == "succeeded" && *n == 1), "{tasks:?}");
}
