//! The kill test: `kill -9` the engine at random points of a 200-task run, then resume.
//! Resume must finish the run, must not run again any task that was recorded as finished,
//! and must never accept a partial output.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::support::*;

const TRIALS: u64 = 20;

/// 100 producers and 100 consumers linked member to member: 200 tasks. Every task logs
/// each execution and writes its output in two parts with a pause in between, so a kill
/// in the middle leaves a half-written file behind.
const WORKFLOW: &str = r#"
name: killtest
params:
  logs: { type: path }
steps:
  produce:
    scatter:
      over: { i: "${{ range(0, 100) }}" }
    run: [sh, -c, 'echo run >> "$1/produce-$2"; printf part1 > o.txt; sleep 0.02; printf part2 >> o.txt', sh, "${{ params.logs }}", "${{ scatter.i }}"]
    out: { o: o.txt }
  consume:
    scatter:
      over: { src: "${{ steps.produce.out.o }}" }
    run: [sh, -c, 'echo run >> "$1/consume-$3"; cat "$2" > o.txt; sleep 0.01; cat "$2" >> o.txt', sh, "${{ params.logs }}", "${{ scatter.src }}", "${{ member.index }}"]
    out: { o: o.txt }
"#;

fn executions(logs: &Path, task: &str) -> usize {
    // `produce[7]` logs to `produce-7`.
    let file = task.replace('[', "-").replace(']', "");
    std::fs::read_to_string(logs.join(file)).map(|s| s.lines().count()).unwrap_or(0)
}

fn latest_run(runs: &Path) -> Option<String> {
    let c = rusqlite::Connection::open(runs.join("twinflow.db")).ok()?;
    c.query_row("SELECT id FROM runs ORDER BY created_at DESC LIMIT 1", [], |r| r.get(0)).ok()
}

#[test]
fn kill_minus_nine_then_resume_never_reruns_finished_tasks() {
    // How long the run takes undisturbed on this machine now: kills land between 5 % and
    // 90 % of it, so the trials stop the run part way however fast or loaded the machine is.
    let full = {
        let d = scratch("kill/calibrate");
        let logs = d.join("logs");
        std::fs::create_dir_all(&logs).unwrap();
        let wf = write(&d, "kill.yaml", WORKFLOW);
        let t0 = Instant::now();
        let out = twinflow()
            .current_dir(&d)
            .arg("run")
            .arg(&wf)
            .args(["-p", &format!("logs={}", logs.display()), "-j", "8", "--cores", "8", "--json"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", show(&out));
        t0.elapsed()
    };
    let mut rng: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut partial_trials = 0;
    for trial in 0..TRIALS {
        let d = scratch(&format!("kill/{trial}"));
        let logs = d.join("logs");
        std::fs::create_dir_all(&logs).unwrap();
        let wf = write(&d, "kill.yaml", WORKFLOW);
        let param = format!("logs={}", logs.display());
        // xorshift: a kill time between 5 % and 90 % of an undisturbed run.
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let delay = full.mul_f64(0.05 + 0.85 * (rng % 1000) as f64 / 1000.0);
        let mut child = twinflow()
            .current_dir(&d)
            .arg("run")
            .arg(&wf)
            .args(["-p", &param, "-j", "8", "--cores", "8", "--json"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        let _ = std::process::Command::new("kill").args(["-KILL", &child.id().to_string()]).status();
        let _ = child.wait();
        let runs = d.join("runs");
        let Some(run_id) = latest_run(&runs) else {
            continue; // killed before the run was recorded: nothing to resume
        };
        // The killed run is shown as interrupted (not running forever), and fails a CI gate.
        let st = twinflow().current_dir(&d).args(["status", &run_id]).output().unwrap();
        let text = String::from_utf8_lossy(&st.stdout).to_string();
        if !text.contains("): succeeded\n") {
            assert!(text.contains("): interrupted\n"), "trial {trial}: {text}");
            assert!(text.contains(&format!("continue it with `twinflow run --resume {run_id}`")), "{text}");
            let check = twinflow().current_dir(&d).args(["status", "--check"]).output().unwrap();
            assert_eq!(check.status.code(), Some(1), "trial {trial}: {}", show(&check));
        }
        let before = db_tasks(&runs, &run_id);
        let done_before: Vec<(String, usize)> = before
            .iter()
            .filter(|(_, (s, _))| s == "succeeded")
            .map(|(t, _)| (t.clone(), executions(&logs, t)))
            .collect();
        if !done_before.is_empty() && done_before.len() < 200 {
            partial_trials += 1;
        }
        let t0 = Instant::now();
        let out =
            twinflow().current_dir(&d).args(["run", "--resume", "--json", "-j", "8", "--cores", "8"]).output().unwrap();
        assert!(out.status.success(), "trial {trial} (kill after {delay:?}): resume failed\n{}", show(&out));
        assert!(t0.elapsed() < Duration::from_secs(60));
        let after = db_tasks(&runs, &run_id);
        assert_eq!(after.len(), 200);
        let check = twinflow().current_dir(&d).args(["status", "--check"]).output().unwrap();
        assert_eq!(check.status.code(), Some(0), "trial {trial}: the resumed run succeeded: {}", show(&check));
        assert!(after.values().all(|(s, _)| s == "succeeded"), "trial {trial}: {after:?}");
        for (task, n) in &done_before {
            assert_eq!(
                executions(&logs, task),
                *n,
                "trial {trial}: `{task}` had finished before the kill but ran again"
            );
        }
        // Every recorded output is complete, and lives in a published `out` directory.
        let c = rusqlite::Connection::open(runs.join("twinflow.db")).unwrap();
        let mut st = c.prepare("SELECT task, dir FROM tasks WHERE run_id = ?1").unwrap();
        let rows: Vec<(String, String)> =
            st.query_map([&run_id], |r| Ok((r.get(0)?, r.get(1)?))).unwrap().collect::<Result<_, _>>().unwrap();
        for (task, dir) in rows {
            assert!(dir.ends_with("/out"), "trial {trial}: `{task}` result not published: {dir}");
            let text = std::fs::read_to_string(Path::new(&dir).join("o.txt")).unwrap();
            let want = if task.starts_with("produce") { "part1part2" } else { "part1part2part1part2" };
            assert_eq!(text, want, "trial {trial}: partial output accepted for `{task}`");
        }
    }
    assert!(
        partial_trials >= TRIALS / 2,
        "only {partial_trials} of {TRIALS} trials were killed mid-run; the test did not exercise resume"
    );
}
