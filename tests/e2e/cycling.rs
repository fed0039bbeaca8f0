//! Cycling workflows end to end: data from one cycle to the next, `once:`, every trigger
//! type (files, clock, command, signal; timeouts that fail or skip), the runahead window
//! (checked from the run database), failures, `stop`, `--cycles`/`--until`, housekeeping,
//! a live sensor, and kill -9 at random points of a 30-cycle run.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::common::repo_root;
use crate::support::*;

/// A row of the `cycles` table: (cycle, point, state, started_at, finished_at, pruned).
type CycleRow = (u64, String, String, Option<i64>, Option<i64>, bool);

/// The rows of the `cycles` table of a run.
fn db_cycles(runs: &Path, run_id: &str) -> Vec<CycleRow> {
    let c = rusqlite::Connection::open(runs.join("twinflow.db")).expect("open db");
    let mut st = c
        .prepare(
            "SELECT cycle, point, state, started_at, finished_at, pruned FROM cycles WHERE run_id = ?1 ORDER BY cycle",
        )
        .expect("prepare");
    st.query_map([run_id], |r| {
        Ok((r.get::<_, i64>(0)? as u64, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get::<_, i64>(5)? != 0))
    })
    .expect("query")
    .collect::<Result<_, _>>()
    .expect("rows")
}

fn started_order(out: &std::process::Output) -> Vec<String> {
    events(out)
        .into_iter()
        .filter(|e| e["event"] == "task-started")
        .map(|e| e["task"].as_str().unwrap().to_string())
        .collect()
}

fn stdout_of(d: &Path, run_id: &str, cycle: &str, step: &str) -> String {
    let p =
        d.join("runs").join(run_id).join("cycles").join(cycle).join("steps").join(step).join("out/.twinflow/stdout");
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn cycling_hello_carries_a_count_from_cycle_to_cycle() {
    let d = scratch("cycling/hello");
    let wf = repo_root().join("examples/cycling-hello.yaml");
    let out = run_json(&d, &wf, &[]);
    assert!(out.status.success(), "{}", show(&out));
    let id = run_id(&out);
    for k in 1..=5 {
        let n = std::fs::read_to_string(d.join(format!("runs/{id}/cycles/{k}/steps/count/out/n.txt"))).unwrap();
        assert_eq!(n.trim(), k.to_string(), "cycle {k} adds one to the count of cycle {}", k - 1);
    }
    // `seed` runs in the first cycle only, `report` in the last only.
    let states = final_states(&out);
    assert_eq!(states.keys().filter(|t| t.ends_with("/seed")).collect::<Vec<_>>(), ["1/seed"]);
    assert_eq!(states.keys().filter(|t| t.ends_with("/report")).collect::<Vec<_>>(), ["5/report"]);
    assert_eq!(stdout_of(&d, &id, "5", "report").trim(), "after 5 cycles the count is 5");
    let cycles = db_cycles(&d.join("runs"), &id);
    assert_eq!(cycles.len(), 5);
    assert!(cycles.iter().all(|c| c.2 == "succeeded"), "{cycles:?}");
    // The cycle-started and cycle-finished events carry index and point.
    let ev = events(&out);
    let started: Vec<(u64, String)> = ev
        .iter()
        .filter(|e| e["event"] == "cycle-started")
        .map(|e| (e["cycle"].as_u64().unwrap(), e["point"].as_str().unwrap().to_string()))
        .collect();
    assert_eq!(started, (0..5).map(|k| (k, (k + 1).to_string())).collect::<Vec<_>>());
    // Task events carry their cycle point.
    let count3 = ev.iter().find(|e| e["event"] == "task-finished" && e["task"] == "3/count").unwrap();
    assert_eq!(count3["cycle"], "3", "{count3}");
    // `status` lists the cycles; `--cycle` shows one cycle's tasks.
    let st = twinflow().current_dir(&d).args(["status", "latest"]).output().unwrap();
    let text = String::from_utf8_lossy(&st.stdout);
    assert!(text.contains("5 cycles: 5 succeeded"), "{text}");
    let st = twinflow().current_dir(&d).args(["status", "latest", "--cycle", "3"]).output().unwrap();
    let text = String::from_utf8_lossy(&st.stdout);
    assert!(text.contains("3/count") && !text.contains("2/count") && !text.contains("seed"), "{text}");
}

#[test]
fn cycles_and_until_bound_a_run_from_the_command_line() {
    let d = scratch("cycling/bounds");
    let wf = repo_root().join("examples/cycling-hello.yaml");
    let out = run_json(&d, &wf, &["--cycles", "2"]);
    assert!(out.status.success(), "{}", show(&out));
    let states = final_states(&out);
    assert!(states.contains_key("2/report"), "the last cycle is the second: {states:?}");
    assert!(!states.keys().any(|t| t.starts_with("3/")));
    let out = run_json(&d, &wf, &["--until", "3"]);
    let states = final_states(&out);
    assert!(states.contains_key("3/report") && !states.keys().any(|t| t.starts_with("4/")), "{states:?}");
    // Another first point for a new run: points 10 and 11.
    let out = run_json(&d, &wf, &["--start", "10", "--cycles", "2"]);
    let states = final_states(&out);
    assert_eq!(states.keys().map(String::as_str).collect::<Vec<_>>(), ["10/count", "10/seed", "11/count", "11/report"]);
    let out =
        twinflow().current_dir(&d).args(["run"]).arg(&wf).args(["--until", "2026-03-01T00:00Z"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--until"), "{}", show(&out));
}

/// Cycle k's `observe` waits for `obs/obs-k.txt`; a sensor writes one every `gap`.
fn sensor_workflow(cycles: u32, settle: &str, timeout: &str, on_timeout: &str) -> String {
    sensor_workflow_reading(
        cycles,
        settle,
        timeout,
        on_timeout,
        "cycle.first ? steps.observe.out.obs : prev.steps.assimilate.out.state",
    )
}

/// As [`sensor_workflow`], with `state` of `assimilate` given.
fn sensor_workflow_reading(cycles: u32, settle: &str, timeout: &str, on_timeout: &str, state: &str) -> String {
    format!(
        r#"
name: sensor-twin
cycle:
  every: 2s
  start: now
  cycles: {cycles}
  runahead: 2
steps:
  observe:
    wait:
      files: ["obs/obs-${{{{ cycle.index }}}}.txt"]
      settle: {settle}
      min_size: 1
      timeout: {timeout}
      on_timeout: {on_timeout}
    run: [sh, -c, 'cat "$1" > "$2"; date +%s%N > "$3"', observe, "${{{{ wait.files }}}}", "${{{{ out.obs }}}}", "${{{{ out.at }}}}"]
    out: {{ obs: obs.txt, at: at.txt }}
  assimilate:
    in:
      state: "${{{{ {state} }}}}"
    run: [sh, -c, 'cat "$1" "$2" > "$3"', assimilate, "${{{{ in.state }}}}", "${{{{ steps.observe.out.obs }}}}", "${{{{ out.state }}}}"]
    out: {{ state: state.txt }}
"#
    )
}

#[test]
fn a_live_sensor_is_followed_file_by_file_exactly_once_and_in_order() {
    // examples/live-sensor.yaml with examples/sensor.sh writing a reading every 2 s.
    let d = scratch("cycling/live");
    let wf = repo_root().join("examples/live-sensor.yaml");
    let obs = d.join("obs");
    let sensor = std::process::Command::new("sh")
        .arg(repo_root().join("examples/sensor.sh"))
        .arg(&obs)
        .args(["6", "2"])
        .spawn()
        .unwrap();
    let param = format!("obs={}", obs.display());
    let out = run_json(&d, &wf, &["-p", &param]);
    let mut sensor = sensor;
    assert!(sensor.wait().unwrap().success());
    // When each reading was complete: its file's mtime.
    let written: Vec<u128> = (0..6)
        .map(|k| {
            let m = std::fs::metadata(obs.join(format!("obs-{k}.txt"))).unwrap().modified().unwrap();
            m.duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
        })
        .collect();
    assert!(out.status.success(), "{}", show(&out));
    let id = run_id(&out);
    let starts = started_order(&out);
    let observes: Vec<&String> = starts.iter().filter(|t| t.ends_with("/observe")).collect();
    assert_eq!(observes.len(), 6, "each reading processed exactly once: {starts:?}");
    let tasks = db_tasks(&d.join("runs"), &id);
    assert!(tasks.values().all(|(s, a)| s == "succeeded" && *a == 1), "{tasks:?}");
    // In order, each complete (never the half-written first part alone), and the state
    // accumulates every reading in order.
    let cycles = db_cycles(&d.join("runs"), &id);
    let last = &cycles.last().unwrap().1;
    let state =
        std::fs::read_to_string(d.join(format!("runs/{id}/cycles/{last}/steps/assimilate/out/state.txt"))).unwrap();
    let want: String = (0..6).map(|k| format!("reading {k} part1\nreading {k} part2\n")).collect();
    assert_eq!(state, format!("reading 0 part1\nreading 0 part2\n{want}"), "cycle 0 starts from its own reading");
    // Each reading was taken after it was complete and stable for the settle time (1 s);
    // how soon after is measured by the benchmark, not here.
    for (k, c) in cycles.iter().enumerate() {
        let at: u128 = std::fs::read_to_string(d.join(format!("runs/{id}/cycles/{}/steps/observe/out/at.txt", c.1)))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert!(at >= written[k] + 1_000_000_000, "cycle {k}: taken {at} ns, complete at {} ns", written[k]);
    }
}

#[test]
fn a_missing_reading_times_out_and_skips_its_cycle_while_later_cycles_go_on() {
    let d = scratch("cycling/timeout-skip");
    // Each cycle's assimilate reads only its own reading: a skipped cycle breaks no chain.
    let wf = write(&d, "skip.yaml", &sensor_workflow_reading(3, "0s", "3s", "skip", "steps.observe.out.obs"));
    // Readings 0 and 2 only.
    let obs = d.join("obs");
    std::fs::create_dir_all(&obs).unwrap();
    std::fs::write(obs.join("obs-0.txt"), "r0\n").unwrap();
    std::fs::write(obs.join("obs-2.txt"), "r2\n").unwrap();
    let out = run_json(&d, &wf, &[]);
    assert!(out.status.success(), "{}", show(&out));
    let states = final_states(&out);
    let skipped: Vec<_> = states.iter().filter(|(_, s)| *s == "skipped").map(|(t, _)| t.as_str()).collect();
    assert_eq!(skipped.len(), 2, "cycle 1's observe and assimilate: {states:?}");
    assert!(skipped.iter().all(|t| t.contains("T") && (t.ends_with("/observe") || t.ends_with("/assimilate"))));
    let msg = events(&out)
        .into_iter()
        .find(|e| {
            e["event"] == "task-finished"
                && e["state"] == "skipped"
                && e["task"].as_str().unwrap().ends_with("/observe")
        })
        .unwrap();
    assert!(msg["message"].as_str().unwrap().contains("timed out waiting for"), "{msg}");
    assert!(msg["message"].as_str().unwrap().contains("obs-1.txt"), "{msg}");
    assert_eq!(states.values().filter(|s| *s == "succeeded").count(), 4, "cycles 0 and 2: {states:?}");
}

#[test]
fn a_trigger_timeout_with_fail_fails_the_cycle_and_the_run_names_it() {
    let d = scratch("cycling/timeout-fail");
    let wf = write(&d, "fail.yaml", &sensor_workflow(2, "0s", "1s", "fail"));
    let out = twinflow().current_dir(&d).arg("run").arg(&wf).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("timed out waiting for"), "{err}");
    assert!(err.contains("holds the run"), "{err}");
    assert!(err.contains("hint: continue with `twinflow run --resume"), "{err}");
}

#[test]
fn clock_command_and_signal_triggers_gate_their_cycles() {
    let d = scratch("cycling/triggers");
    let wf = write(
        &d,
        "triggers.yaml",
        r#"
name: triggers
cycle:
  every: 1s
  start: now
  cycles: 3
  runahead: 2
steps:
  tick:
    wait: { clock: +1s }
    run: [sh, -c, 'date +%s%N > "$1"', tick, "${{ out.at }}"]
    out: { at: at.txt }
  poll:
    wait:
      command: [sh, -c, 'test -e "$1" && echo "{\"n\": 7, \"who\": \"probe\"}"', probe, "flag-${{ cycle.index }}"]
      poll: 200ms
    run: [echo, "n=${{ wait.n }} who=${{ wait.who }}"]
  calibrated:
    wait: { signal: calibrated }
    run: [echo, "run ${{ wait.run }}"]
"#,
    );
    let child = spawn_run(&d, &wf, &[]);
    // Cycles 0..2 wait for a flag file each and for a signal each.
    std::thread::sleep(Duration::from_millis(1500));
    for k in 0..3 {
        std::fs::write(d.join(format!("flag-{k}")), "").unwrap();
    }
    let runs = d.join("runs");
    // Signals for named cycles, then one for whichever cycle waits first.
    let points: Vec<String> = loop {
        let c = db_cycles(&runs, &latest(&runs));
        if c.len() == 3 {
            break c.into_iter().map(|r| r.1).collect();
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    for (k, p) in points.iter().enumerate().skip(1) {
        let s = twinflow()
            .current_dir(&d)
            .args(["signal", "latest", "calibrated", "--cycle", p, "--value", &format!("run={}", 100 + k)])
            .output()
            .unwrap();
        assert!(s.status.success(), "{}", show(&s));
    }
    let s = twinflow().current_dir(&d).args(["signal", "latest", "calibrated", "--value", "run=100"]).output().unwrap();
    assert!(s.status.success(), "{}", show(&s));
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", show(&out));
    let id = run_id(&out);
    for (k, p) in points.iter().enumerate() {
        assert_eq!(stdout_of(&d, &id, p, "poll").trim(), "n=7 who=probe");
        assert_eq!(stdout_of(&d, &id, p, "calibrated").trim(), format!("run {}", 100 + k), "cycle {k}");
        // The clock trigger: not before point + 1 s.
        let at: i64 = std::fs::read_to_string(d.join(format!("runs/{id}/cycles/{p}/steps/tick/out/at.txt")))
            .unwrap()
            .trim()
            .parse::<i64>()
            .unwrap()
            / 1_000_000;
        let point = jiff::civil::DateTime::strptime("%Y%m%dT%H%M%SZ", p)
            .or_else(|_| jiff::civil::DateTime::strptime("%Y%m%dT%H%MZ", p))
            .unwrap()
            .to_zoned(jiff::tz::TimeZone::UTC)
            .unwrap()
            .timestamp()
            .as_millisecond();
        assert!(at >= point + 1000, "cycle {k}: tick at {at} ms, point {point} ms");
    }
}

fn latest(runs: &Path) -> String {
    loop {
        if let Ok(c) = rusqlite::Connection::open(runs.join("twinflow.db"))
            && let Ok(id) = c.query_row("SELECT id FROM runs ORDER BY created_at DESC LIMIT 1", [], |r| r.get(0))
        {
            return id;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

const CHAIN: &str = r#"
name: chain
params:
  fail_at: { type: int, default: -1 }
cycle:
  every: 1
  start: 0
  cycles: 8
  runahead: 2
steps:
  step:
    in:
      before: "${{ cycle.first ? 'none' : prev.steps.step.out.x }}"
    run: [sh, -c, 'sleep 0.2; echo "$2" > "$1"', step, "${{ out.x }}", "${{ cycle.index }}"]
    out: { x: x.txt }
  side:
    run: [sh, -c, 'sleep 0.1; test "$1" != "$2"', side, "${{ cycle.index }}", "${{ params.fail_at }}"]
"#;

#[test]
fn the_runahead_window_is_never_exceeded_and_old_cycles_are_pruned() {
    let d = scratch("cycling/window");
    let wf = write(&d, "chain.yaml", CHAIN);
    let out = run_json(&d, &wf, &[]);
    assert!(out.status.success(), "{}", show(&out));
    let id = run_id(&out);
    let runs = d.join("runs");
    let cycles = db_cycles(&runs, &id);
    assert_eq!(cycles.len(), 8);
    // At every cycle's start, at most runahead + 1 = 3 cycles are active.
    for c in &cycles {
        let t = c.3.unwrap();
        let active = cycles.iter().filter(|o| o.3.unwrap() <= t && o.4.is_none_or(|f| f > t)).count();
        assert!(active <= 3, "{} active when cycle {} started: {cycles:?}", active, c.0);
    }
    // keep: 3 — directories and task rows of cycles 0..=4 are gone; their summaries merge
    // into one row for the range.
    let d = scratch("cycling/keep");
    let wf = write(&d, "chain.yaml", &CHAIN.replace("  runahead: 2\n", "  runahead: 2\n  keep: 3\n"));
    let out = run_json(&d, &wf, &[]);
    assert!(out.status.success(), "{}", show(&out));
    let id = run_id(&out);
    let runs = d.join("runs");
    for k in 0..8 {
        assert_eq!(runs.join(&id).join("cycles").join(k.to_string()).exists(), k >= 5, "cycle {k}");
    }
    let cycles = db_cycles(&runs, &id);
    let rows: Vec<(u64, bool)> = cycles.iter().map(|c| (c.0, c.5)).collect();
    assert_eq!(rows, [(0, true), (5, false), (6, false), (7, false)], "{cycles:?}");
    let tasks = db_tasks(&runs, &id);
    assert_eq!(tasks.len(), 6, "task rows of the three kept cycles only: {tasks:?}");
    let c = rusqlite::Connection::open(runs.join("twinflow.db")).unwrap();
    let cache: i64 = c.query_row("SELECT COUNT(*) FROM cache_entries", [], |r| r.get(0)).unwrap();
    assert_eq!(cache, 6, "cache rows of pruned cycles go with them");
    let st = twinflow().current_dir(&d).args(["status", "latest"]).output().unwrap();
    let text = String::from_utf8_lossy(&st.stdout);
    assert!(text.contains("8 cycles: 8 succeeded (5 pruned)"), "{text}");
    assert!(text.contains("0..4") && text.contains("5 cycles, pruned: 10 ran"), "{text}");
}

#[test]
fn a_failure_holds_its_cycle_independent_work_goes_on_and_resume_retries_it() {
    let d = scratch("cycling/failure");
    let wf = write(&d, "chain.yaml", CHAIN);
    let out =
        twinflow().current_dir(&d).arg("run").arg(&wf).args(["-p", "fail_at=2", "--keep-going"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cycle 2 holds the run: `2/side` did not succeed"), "{err}");
    let runs = d.join("runs");
    let id = latest(&runs);
    let cycles = db_cycles(&runs, &id);
    // Cycles 3 and 4 (the runahead) ran; 5 never started.
    assert_eq!(
        cycles.iter().map(|c| (c.0, c.2.as_str())).collect::<Vec<_>>(),
        [(0, "succeeded"), (1, "succeeded"), (2, "failed"), (3, "succeeded"), (4, "succeeded")]
    );
    let st = twinflow().current_dir(&d).args(["status", "latest"]).output().unwrap();
    let text = String::from_utf8_lossy(&st.stdout);
    assert!(text.contains(&format!("  {:<18} {:<10}", "2", "failed")), "{text}");
    assert!(text.contains("2/side"), "the failed cycle's tasks are listed: {text}");
    // Resume with the failure gone: cycle 2's side runs again, nothing else of 0..4 does.
    let out = twinflow().current_dir(&d).args(["run", "--resume", &id, "-p", "fail_at=-1", "--json"]).output().unwrap();
    assert!(out.status.success(), "{}", show(&out));
    let started = started_order(&out);
    assert_eq!(started.first().map(String::as_str), Some("2/side"), "{started:?}");
    assert!(
        !started
            .iter()
            .any(|t| t.starts_with("0/") || t.starts_with("1/") || t.starts_with("3/") || t.starts_with("4/")),
        "{started:?}"
    );
    assert_eq!(db_cycles(&runs, &id).len(), 8);
}

#[test]
fn stop_lets_the_active_cycles_finish_and_resume_goes_on_from_the_next() {
    let d = scratch("cycling/stop");
    let wf = write(
        &d,
        "forever.yaml",
        r#"
name: forever
cycle: { every: 1, start: 0, runahead: 1 }
steps:
  step:
    in:
      before: "${{ cycle.first ? 'none' : prev.steps.step.out.x }}"
    run: [sh, -c, 'sleep 0.3; echo "$2" > "$1"', step, "${{ out.x }}", "${{ cycle.index }}"]
    out: { x: x.txt }
"#,
    );
    let child = spawn_run(&d, &wf, &[]);
    std::thread::sleep(Duration::from_millis(1500));
    let s = twinflow().current_dir(&d).args(["stop", "latest"]).output().unwrap();
    assert!(s.status.success(), "{}", show(&s));
    assert!(String::from_utf8_lossy(&s.stdout).contains("stop after its active cycles"), "{}", show(&s));
    let t0 = Instant::now();
    let out = child.wait_with_output().unwrap();
    assert!(t0.elapsed() < Duration::from_secs(5), "the engine stops within a cycle or two");
    assert!(out.status.success(), "stop exits 0: {}", show(&out));
    assert_eq!(finished(&out)["state"], "stopped");
    let runs = d.join("runs");
    let id = run_id(&out);
    let before = db_cycles(&runs, &id);
    assert!(before.iter().all(|c| c.2 == "succeeded"), "every started cycle finished: {before:?}");
    assert!(before.len() >= 3, "{before:?}");
    // A stopped run resumes from the next cycle.
    let mut child = twinflow()
        .current_dir(&d)
        .args(["run", "--resume", &id, "--cycles", &(before.len() + 2).to_string(), "--json"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success());
    let after = db_cycles(&runs, &id);
    assert_eq!(after.len(), before.len() + 2, "{after:?}");
    let last = &after.last().unwrap().1;
    let x = std::fs::read_to_string(runs.join(&id).join(format!("cycles/{last}/steps/step/out/x.txt"))).unwrap();
    assert_eq!(x.trim(), (after.len() - 1).to_string());
}

/// Tasks succeeded so far in the run database of `runs` (0 before it exists).
fn succeeded(runs: &Path) -> usize {
    let Ok(c) =
        rusqlite::Connection::open_with_flags(runs.join("twinflow.db"), rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
    else {
        return 0;
    };
    c.query_row("SELECT COUNT(*) FROM tasks WHERE state = 'succeeded'", [], |r| r.get::<_, i64>(0))
        .map_or(0, |n| n as usize)
}

#[test]
fn kill_minus_nine_during_a_cycling_run_with_triggers_then_resume() {
    const TRIALS: u64 = 20;
    const CYCLES: u64 = 30;
    let wf_text = format!(
        r#"
name: killcycle
params:
  logs: {{ type: path }}
cycle: {{ every: 1, start: 0, cycles: {CYCLES}, runahead: 2 }}
steps:
  gate:
    wait: {{ files: ["${{{{ params.logs }}}}/ready"], settle: 0s }}
    run: [sh, -c, 'echo run >> "$1/gate-$2"; printf part1 > g.txt; sleep 0.02; printf part2 >> g.txt', sh, "${{{{ params.logs }}}}", "${{{{ cycle.index }}}}"]
    out: {{ g: g.txt }}
  step:
    in:
      before: "${{{{ cycle.first ? steps.gate.out.g : prev.steps.step.out.x }}}}"
    run: [sh, -c, 'echo run >> "$1/step-$2"; cat "$3" > x.txt; sleep 0.02; echo "$2" >> x.txt', sh, "${{{{ params.logs }}}}", "${{{{ cycle.index }}}}", "${{{{ in.before }}}}"]
    out: {{ x: x.txt }}
"#
    );
    // How long the run takes undisturbed now: a late trigger comes within half of it.
    let full = {
        let d = scratch("cycling/kill/calibrate");
        let logs = d.join("logs");
        std::fs::create_dir_all(&logs).unwrap();
        std::fs::write(logs.join("ready"), "").unwrap();
        let wf = write(&d, "kill.yaml", &wf_text);
        let t0 = Instant::now();
        let out = twinflow()
            .current_dir(&d)
            .arg("run")
            .arg(&wf)
            .args(["-p", &format!("logs={}", logs.display()), "--json"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", show(&out));
        t0.elapsed()
    };
    let mut rng: u64 = 0x2545_f491_4f6c_dd1d;
    let mut partial = 0;
    for trial in 0..TRIALS {
        let d = scratch(&format!("cycling/kill/{trial}"));
        let logs = d.join("logs");
        std::fs::create_dir_all(&logs).unwrap();
        let wf = write(&d, "kill.yaml", &wf_text);
        let param = format!("logs={}", logs.display());
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let delay = full.mul_f64(0.05 + 0.85 * (rng % 1000) as f64 / 1000.0);
        // The trigger is satisfied part way through in half the trials (a kill during a
        // trigger wait), from the start in the others.
        let late_trigger = trial % 2 == 1;
        if !late_trigger {
            std::fs::write(logs.join("ready"), "").unwrap();
        }
        let mut child = twinflow()
            .current_dir(&d)
            .arg("run")
            .arg(&wf)
            .args(["-p", &param, "--json"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        if late_trigger {
            std::thread::sleep(delay / 2);
            std::fs::write(logs.join("ready"), "").unwrap();
        }
        // Kill once a random number of tasks has finished (polling the run database), so
        // the kill lands mid-run whatever the machine's speed; then at a random moment
        // within the next task or two.
        let target = 1 + (rng >> 20) as usize % (2 * CYCLES as usize - 3);
        let deadline = Instant::now() + Duration::from_secs(120);
        while succeeded(&d.join("runs")) < target && Instant::now() < deadline && child.try_wait().unwrap().is_none() {
            std::thread::sleep(Duration::from_millis(2));
        }
        std::thread::sleep(Duration::from_millis((rng >> 40) % 40));
        let _ = std::process::Command::new("kill").args(["-KILL", &child.id().to_string()]).status();
        let _ = child.wait();
        let runs = d.join("runs");
        let Ok(c) = rusqlite::Connection::open(runs.join("twinflow.db")) else { continue };
        let Ok(run_id) = c.query_row("SELECT id FROM runs LIMIT 1", [], |r| r.get::<_, String>(0)) else { continue };
        drop(c);
        let before = db_tasks(&runs, &run_id);
        let done_before: Vec<String> =
            before.iter().filter(|(_, (s, _))| s == "succeeded").map(|(t, _)| t.clone()).collect();
        if !done_before.is_empty() && done_before.len() < 2 * CYCLES as usize {
            partial += 1;
        }
        let out = twinflow().current_dir(&d).args(["run", "--resume", "--json"]).output().unwrap();
        assert!(out.status.success(), "trial {trial} (kill after {delay:?}): resume failed\n{}", show(&out));
        let cycles = db_cycles(&runs, &run_id);
        assert_eq!(cycles.len(), CYCLES as usize, "trial {trial}: every cycle ran");
        assert!(cycles.iter().all(|c| c.2 == "succeeded"), "trial {trial}: {cycles:?}");
        // No task ran twice once finished; none ran more than twice at all (a kill while it
        // ran); the state has every cycle, in order.
        for k in 0..CYCLES {
            for step in ["gate", "step"] {
                let n =
                    std::fs::read_to_string(logs.join(format!("{step}-{k}"))).map(|s| s.lines().count()).unwrap_or(0);
                let task = format!("{k}/{step}");
                if done_before.contains(&task) {
                    assert_eq!(n, 1, "trial {trial}: `{task}` finished before the kill but ran again");
                } else {
                    assert!((1..=2).contains(&n), "trial {trial}: `{task}` ran {n} times");
                }
            }
        }
        let last =
            std::fs::read_to_string(runs.join(&run_id).join(format!("cycles/{}/steps/step/out/x.txt", CYCLES - 1)))
                .unwrap();
        let want: String =
            std::iter::once("part1part2".to_string()).chain((0..CYCLES).map(|k| format!("{k}\n"))).collect();
        assert_eq!(last, want, "trial {trial}: a partial output was accepted somewhere along the chain");
    }
    assert!(partial >= TRIALS / 2, "only {partial} of {TRIALS} trials were killed mid-run");
}

#[test]
fn plan_draws_cycles_with_the_edges_between_them() {
    let wf = repo_root().join("examples/cycling-hello.yaml");
    let text = twinflow().args(["plan"]).arg(&wf).args(["--cycles", "3"]).output().unwrap();
    assert!(text.status.success(), "{}", show(&text));
    let t = String::from_utf8_lossy(&text.stdout);
    assert!(t.contains("cycling every 1, 5 cycles, runahead 1"), "{t}");
    // Each cycle's command with its own point; the first reads the seed, later ones the
    // previous count.
    assert!(t.contains("1/count: sh -c") && t.contains("<steps.seed.out.n> <out>/n.txt 1 "), "{t}");
    assert!(t.contains("3/count: sh -c") && t.contains("<prev.steps.count.out.n> <out>/n.txt 3 "), "{t}");
    assert!(t.contains("step count: after 1/seed, 2/count"), "{t}");
    assert!(!t.contains("4/count") && !t.contains("report"), "three cycles, and report only runs in the fifth: {t}");
    for (format, edge) in [("mermaid", "c1_count -.-> c2_count"), ("dot", "c1_count -> c2_count [style=dashed];")] {
        let out = twinflow().args(["plan"]).arg(&wf).args(["--cycles", "3", "--format", format]).output().unwrap();
        let g = String::from_utf8_lossy(&out.stdout);
        assert!(g.contains(edge), "{format}: {g}");
        assert!(g.contains("c0_seed") && !g.contains("c1_seed"), "{format}: seed runs in the first cycle only: {g}");
    }
}

/// `examples/lorenz96-twin.yaml` run by the cycling engine (truth once, then forecast →
/// EnKF analysis every cycle, files between the steps) gives, cycle for cycle, the
/// analysis RMSE of the same experiment run in one process (`twin-kernel lorenz96 twin`,
/// same seed): the engine carries the ensemble from cycle to cycle without changing it.
#[test]
fn the_lorenz96_twin_as_a_cycling_workflow_reproduces_the_in_process_experiment() {
    let d = scratch("cycling/lorenz96");
    let kernel = crate::flood::mpi_kernel();
    let wf = repo_root().join("examples/lorenz96-twin.yaml");
    let out = twinflow()
        .current_dir(&d)
        .env("TWINFLOW_KERNEL_BIN", &kernel)
        .args(["run"])
        .arg(&wf)
        .args(["--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", show(&out));
    let id = run_id(&out);
    let reference = d.join("twin.nc");
    let twin = std::process::Command::new(&kernel)
        .args(["lorenz96", "twin", "--method", "enkf", "--members", "40", "--inflation", "1.06"])
        .args(["--cycles", "40", "--burn-in", "0", "--seed", "3", "--out"])
        .arg(&reference)
        .output()
        .unwrap();
    assert!(twin.status.success(), "{}", show(&twin));
    let dump = std::process::Command::new("ncdump").args(["-v", "rmse_analysis"]).arg(&reference).output().unwrap();
    let text = String::from_utf8_lossy(&dump.stdout);
    let series: Vec<f64> = text
        .split("rmse_analysis =")
        .nth(1)
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .split(',')
        .map(|v| v.trim().parse().unwrap())
        .collect();
    assert_eq!(series.len(), 40);
    // keep: 5 — the last five cycles are left; each equals the reference to the last bit.
    for k in 36..=40 {
        let diag = d.join(format!("runs/{id}/cycles/{k}/steps/analysis/out/diagnostics.nc"));
        let dump =
            std::process::Command::new("ncdump").args(["-v", "rmse_truth_analysis"]).arg(&diag).output().unwrap();
        let text = String::from_utf8_lossy(&dump.stdout);
        let v: f64 =
            text.split("rmse_truth_analysis =").nth(1).unwrap().split(';').next().unwrap().trim().parse().unwrap();
        assert_eq!(v, series[k - 1], "cycle {k}");
    }
    assert!(!d.join(format!("runs/{id}/cycles/30")).exists(), "older cycles were pruned");
    // Well below the observation error (σ = 1) once spun up (Sakov & Oke 2008 report a
    // long-run mean of about 0.2 for this set-up; 40 cycles are not enough to reach it).
    let late: f64 = series[30..].iter().sum::<f64>() / 10.0;
    assert!(late < 0.5, "mean analysis RMSE of cycles 31-40: {late}");
    let report =
        std::fs::read_to_string(d.join(format!("runs/{id}/cycles/40/steps/report/out/.twinflow/stdout"))).unwrap();
    let shown: f64 =
        report.split("rmse_truth_analysis =").nth(1).unwrap().split(';').next().unwrap().trim().parse().unwrap();
    assert!((shown - series[39]).abs() < 1e-12, "the last cycle's report: {report}");
}

#[test]
fn why_explains_the_tasks_of_one_cycle() {
    let d = scratch("cycling/why");
    let wf = repo_root().join("examples/cycling-hello.yaml");
    let out = run_json(&d, &wf, &[]);
    assert!(out.status.success(), "{}", show(&out));
    // Cycle 3's count reads cycle 2's count (from the cache): up to date.
    let why =
        twinflow().current_dir(&d).args(["why"]).arg(&wf).args(["count", "--cycle", "3", "--json"]).output().unwrap();
    assert!(why.status.success(), "{}", show(&why));
    let v: serde_json::Value = serde_json::from_slice(&why.stdout).unwrap();
    assert_eq!(v[0]["task"], "3/count");
    assert_eq!(v[0]["up_to_date"], true, "{v}");
    // The cache is per cycle: a cycle that never ran would run.
    let why = twinflow().current_dir(&d).args(["why"]).arg(&wf).args(["seed", "--json"]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&why.stdout).unwrap();
    assert_eq!((v[0]["task"].as_str(), v[0]["up_to_date"].as_bool()), (Some("1/seed"), Some(true)), "{v}");
    let bad = twinflow().current_dir(&d).args(["why"]).arg(&wf).args(["--cycle", "x"]).output().unwrap();
    assert_eq!(bad.status.code(), Some(2), "{}", show(&bad));
}

#[test]
fn cycling_command_line_mistakes_are_usage_errors_that_touch_nothing() {
    let d = scratch("cycling/mistakes");
    let hello = repo_root().join("examples/cycling-hello.yaml");
    let plain = repo_root().join("examples/hello.yaml");
    let code = |args: &[&str]| {
        let o = twinflow().current_dir(&d).args(args).output().unwrap();
        (o.status.code(), String::from_utf8_lossy(&o.stderr).to_string())
    };
    let h = hello.to_str().unwrap();
    let p = plain.to_str().unwrap();
    for (args, says) in [
        (vec!["run", h, "--until", "0"], "--until 0 is before the first cycle point, 1"),
        (vec!["run", p, "--cycles", "2"], "does not cycle"),
        (vec!["run", p, "--start", "2"], "does not cycle"),
        (vec!["plan", p, "--cycles", "2"], "does not cycle: drop --cycles"),
        (vec!["why", h, "count", "--cycle", "9"], "cycle 9 is after the last cycle"),
        (vec!["why", h, "count", "--cycle", "x"], "--cycle"),
    ] {
        let (c, err) = code(&args);
        assert_eq!(c, Some(2), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
    assert!(
        !d.join("runs").read_dir().is_ok_and(|mut r| r.any(|e| e.unwrap().path().is_dir())),
        "no run directory made"
    );
    // A run that reached cycle 3 cannot be bounded below it.
    let out = run_json(&d, &hello, &["--cycles", "3"]);
    assert!(out.status.success(), "{}", show(&out));
    let (c, err) = code(&["run", "--resume", "latest", "--cycles", "2"]);
    assert_eq!(c, Some(2), "{err}");
    assert!(err.contains("has already reached cycle 3 (3 cycles)"), "{err}");
    // Signals no cycle can take.
    let (c, err) = code(&["signal", "latest", "go"]);
    assert_eq!(c, Some(2), "{err}");
    assert!(err.contains("is finished"), "{err}");
    let (c, err) = code(&["signal", "latest", "go", "--value", "=x"]);
    assert_eq!(c, Some(2), "{err}");
    assert!(err.contains("expected KEY=VALUE"), "{err}");
    let sig = write(
        &d,
        "sig.yaml",
        "name: sig\ncycle: { every: 1, start: 0, cycles: 2 }\nsteps:\n  calib:\n    wait: { signal: calibrated, timeout: 1s, on_timeout: skip }\n    run: [echo, x]\n",
    );
    let out = twinflow().current_dir(&d).args(["run"]).arg(&sig).args(["--json"]).output().unwrap();
    assert!(out.status.success(), "{}", show(&out));
    let out =
        twinflow().current_dir(&d).args(["run", "--resume", "latest", "--cycles", "3", "--json"]).output().unwrap();
    assert!(out.status.success(), "{}", show(&out));
}

#[test]
fn a_closed_stderr_does_not_lose_a_cycling_run() {
    let d = scratch("cycling/pipe");
    let wf = repo_root().join("examples/cycling-hello.yaml");
    // `twinflow run ... 2>&1 | head -1`: stderr closed after the first line.
    let mut child =
        twinflow().current_dir(&d).args(["run"]).arg(&wf).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    drop(child.stderr.take());
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    let st = twinflow().current_dir(&d).args(["status", "latest", "--check"]).output().unwrap();
    assert_eq!(st.status.code(), Some(0), "{}", show(&st));
}

#[test]
fn plan_shows_trigger_values_as_placeholders() {
    let d = scratch("cycling/plan-wait");
    let wf = write(
        &d,
        "w.yaml",
        "name: w\ncycle: { every: 1, start: 0, cycles: 2 }\nsteps:\n  a:\n    wait: { files: [\"obs-${{ cycle.index }}.txt\"], signal: go }\n    run: [sh, -c, 'cat \"$1\" > \"$2\"', x, \"${{ wait.files[0] }}\", \"${{ out.o }}\", \"${{ wait.run }}\"]\n    out: { o: o.txt }\n",
    );
    let out = twinflow().args(["plan"]).arg(&wf).args(["--cycles", "1"]).output().unwrap();
    let t = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", show(&out));
    assert!(t.contains("x <wait.files> <out>/o.txt <wait.run>"), "{t}");
}
