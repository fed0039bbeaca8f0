//! The online detector twin end to end: `examples/detector-online-mini.yaml` through the
//! real `twinflow` binary and a real MQTT broker (the physical detector `twin-kernel
//! detector-sim` publishes 3,200 calibration events drifting 10 K, with a cell dying at
//! window 3, one going hot at window 5 and one jumping in gain at window 6; `twin-kernel
//! ingest` writes 8 windows; each
//! cycle updates the regression, gates it and judges every cell).
//!
//! The broker is the private mosquitto of `hpc/mqtt-local.sh` (started by `make test`; its
//! port in `target/mqtt/port`) or the one `TWINFLOW_MQTT_BROKER=HOST:PORT` names; without
//! one these tests fail with a hint, they never skip. Each run has its own topic.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::flood::{mpi_kernel, run_with_deadline};
use crate::support::*;

const MINI: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/detector-online-mini.yaml");

/// Events the mini detector publishes (8 windows of 400).
const EVENTS: u64 = 3200;

#[path = "../shared/mqtt_broker.rs"]
mod mqtt_broker;

/// The broker under test (see `tests/shared/mqtt_broker.rs`).
fn broker() -> String {
    mqtt_broker::broker("online twin")
}

/// A topic no other run uses.
fn topic(name: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("twinflow-test/{name}/{}-{nanos}", std::process::id())
}

fn mini_command(d: &Path, kernel: &Path, topic: &str) -> Command {
    let mut cmd = twinflow();
    cmd.current_dir(d).env("TWINFLOW_KERNEL_BIN", kernel).args(["run", MINI, "--json", "--grace", "2"]);
    for p in
        [format!("broker={}", broker()), format!("topic={topic}"), format!("results={}", d.join("results").display())]
    {
        cmd.arg("-p").arg(p);
    }
    cmd
}

/// Rows of a CSV file as maps from the header's names.
fn csv_rows(path: &Path) -> Vec<std::collections::HashMap<String, String>> {
    let mut r = csv::Reader::from_path(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    r.deserialize().collect::<Result<_, _>>().unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// An integer global attribute of an HDF5 file, read with `h5dump`.
fn h5_attr(file: &Path, name: &str) -> u64 {
    let out = Command::new("h5dump")
        .args(["-a", &format!("/{name}")])
        .arg(file)
        .output()
        .unwrap_or_else(|e| panic!("cannot run h5dump (hdf5-tools): {e}"));
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.trim().strip_prefix("(0): ").and_then(|v| v.trim().parse().ok()))
        .unwrap_or_else(|| panic!("{}: no attribute `{name}`:\n{text}", file.display()))
}

/// The run's directory.
fn run_dir(d: &Path, id: &str) -> PathBuf {
    d.join("runs").join(id)
}

/// Checks the science and the bookkeeping of a finished mini run.
fn check_run(d: &Path, id: &str) {
    let run = run_dir(d, id);
    let scores = csv_rows(&d.join("results/scores.csv"));
    assert_eq!(scores.len(), 8, "{scores:?}");
    let f = |row: &std::collections::HashMap<String, String>, c: &str| row[c].parse::<f64>().unwrap();
    let table: Vec<String> = scores
        .iter()
        .map(|r| format!("cycle {}: online {:+.4} frozen {:+.4}", r["cycle"], f(r, "online_bias"), f(r, "frozen_bias")))
        .collect();
    // The online model stays within ±1 % in every window; the frozen one drifts past 5 %.
    for r in &scores {
        assert!(f(r, "online_bias").abs() <= 0.01, "{}", table.join("\n"));
    }
    let worst = scores.iter().map(|r| f(r, "frozen_bias").abs()).fold(0.0, f64::max);
    assert!(worst > 0.05, "{}", table.join("\n"));
    // The killed cell is flagged dead within two windows of its death (window 3), the hot
    // one within two of window 5, the one whose gain jumps within two of window 6, and no
    // other cell ever.
    let alerts: Vec<serde_json::Value> = std::fs::read_to_string(d.join("results/alerts.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let cells: Vec<(String, serde_json::Value, u64)> = alerts
        .iter()
        .filter(|a| !a["cell"].is_null())
        .map(|a| (a["kind"].as_str().unwrap().to_string(), a["cell"].clone(), a["cycle"].as_u64().unwrap()))
        .collect();
    assert_eq!(cells.len(), 3, "{alerts:?}");
    assert_eq!((cells[0].0.as_str(), &cells[0].1), ("dead", &serde_json::json!([12, 0, 1])), "{alerts:?}");
    assert!((3..=4).contains(&cells[0].2), "{alerts:?}");
    assert_eq!((cells[1].0.as_str(), &cells[1].1), ("hot", &serde_json::json!([8, 1, 0])), "{alerts:?}");
    assert!((5..=6).contains(&cells[1].2), "{alerts:?}");
    assert_eq!((cells[2].0.as_str(), &cells[2].1), ("gain-jump", &serde_json::json!([30, 1, 1])), "{alerts:?}");
    assert!((6..=7).contains(&cells[2].2), "{alerts:?}");
    // The last payload: a version, valid up to the last cycle.
    let payload: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("results/payload.json")).unwrap()).unwrap();
    assert!(payload["version"].as_u64().unwrap() >= 2, "{payload}");
    assert_eq!(payload["iov"]["last_cycle"], 7, "{payload}");
    assert!(payload["iov"]["first_time"].as_f64() <= payload["iov"]["last_time"].as_f64(), "{payload}");
    // The count balances: every event the broker acknowledged to the detector was written
    // to a window or dead-lettered, once.
    let sim: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("cycles/0/steps/detector/out/sim-state.json")).unwrap())
            .unwrap();
    assert_eq!((sim["published"].as_u64(), sim["complete"].as_bool()), (Some(EVENTS), Some(true)), "{sim}");
    let windows = run.join("cycles/0/steps/ingest/out/windows");
    let (mut written, mut dead) = (0, 0);
    for k in 0..8 {
        let w = windows.join(format!("window-{k:06}.h5"));
        written += h5_attr(&w, "records_written");
        dead += h5_attr(&w, "records_dead_lettered");
    }
    assert_eq!(written + dead, EVENTS, "written {written} + dead-lettered {dead}");
    assert_eq!(dead, sim["invalid"].as_u64().unwrap());
    let letters = std::fs::read_to_string(windows.join("dead-letter.jsonl")).unwrap();
    assert_eq!(letters.lines().count() as u64, dead);
}

#[test]
fn detector_online_mini_recalibrates_per_window_and_flags_the_failing_cells() {
    let kernel = mpi_kernel();
    let d = scratch("detector_online/mini");
    let t0 = Instant::now();
    let out = run_with_deadline(mini_command(&d, &kernel, &topic("mini")), Duration::from_secs(300));
    let took = t0.elapsed();
    assert!(out.status.success(), "{}", show(&out));
    assert!(took < Duration::from_secs(120), "the mini twin took {took:?}");
    let states = final_states(&out);
    assert!(states.values().all(|s| s == "succeeded"), "{states:?}");
    check_run(&d, &run_id(&out));
    // The cell alerts are also events of the run, from the cycles that raised them.
    let alerts: Vec<(String, String)> = events(&out)
        .into_iter()
        .filter(|e| e["event"] == "alert")
        .map(|e| (e["task"].as_str().unwrap().to_string(), e["alert"]["kind"].as_str().unwrap().to_string()))
        .collect();
    let kinds: Vec<&str> = alerts.iter().map(|a| a.1.as_str()).collect();
    assert_eq!(kinds, ["dead", "hot", "gain-jump"], "{alerts:?}");
    assert!(alerts.iter().all(|a| a.0.ends_with("/twin/alerts")), "{alerts:?}");
    // Each cycle's figures are in the report.
    let report = std::fs::read_to_string(run_dir(&d, &run_id(&out)).join("report.html")).unwrap();
    assert!(report.contains("bias.png") && report.contains("cells.png"), "figures missing from the report");
    // ... and the alerts, listed near the top with the tasks that raised them.
    let section = report.split(r#"<section id="alerts">"#).nth(1).expect("an alerts section");
    let section = &section[..section.find("</section>").unwrap()];
    assert!(section.starts_with("<h2>Alerts (3)</h2>"), "{section}");
    for (task, kind) in &alerts {
        assert!(
            section.contains(&format!("<td>{task}</td>")) && section.contains(&format!("<b>kind</b>: {kind}")),
            "{task} {kind}: {section}"
        );
    }
}

#[test]
fn detector_online_mini_balances_its_count_across_a_kill_minus_nine_and_resume() {
    let kernel = mpi_kernel();
    let d = scratch("detector_online/kill");
    let mut cmd = mini_command(&d, &kernel, &topic("kill"));
    // Slower publishing, so the engine dies while events still flow.
    cmd.args(["-p", "rate=100"]).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
    let mut engine = cmd.spawn().unwrap();
    let runs = d.join("runs");
    let id = || -> Option<String> {
        rusqlite::Connection::open(runs.join("twinflow.db"))
            .ok()?
            .query_row("SELECT id FROM runs", [], |r| r.get(0))
            .ok()
    };
    let t0 = Instant::now();
    let id = loop {
        if let Some(i) = id() {
            break i;
        }
        assert!(t0.elapsed() < Duration::from_secs(60), "no run recorded");
        std::thread::sleep(Duration::from_millis(100));
    };
    // Kill once cycle 2's gate is done (the detector is still publishing then).
    loop {
        if db_tasks(&runs, &id).get("2/twin/gate").is_some_and(|(s, _)| s == "succeeded") {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(120), "cycle 2 did not finish: {:?}", db_tasks(&runs, &id));
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = Command::new("kill").args(["-KILL", &engine.id().to_string()]).status();
    let _ = engine.wait();
    let sim_state = run_dir(&d, &id).join("cycles/0/steps/detector/out/sim-state.json");
    let before: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&sim_state).unwrap()).unwrap();
    assert!(before["published"].as_u64().unwrap() < EVENTS, "the detector had finished: nothing to test ({before})");
    let mut resume = twinflow();
    resume.current_dir(&d).env("TWINFLOW_KERNEL_BIN", &kernel).args(["run", "--resume", &id, "--json", "--grace", "2"]);
    let out = run_with_deadline(resume, Duration::from_secs(300));
    assert!(out.status.success(), "{}", show(&out));
    let db = db_tasks(&runs, &id);
    assert_eq!(db["0/detector"].1, 2, "the detector was started again: {db:?}");
    check_run(&d, &id);
}

/// The engine hook the twin's alerts use, on its own: each line of a step's
/// `report: { alerts: [out.NAME] }` output becomes an `alert` event once the step
/// succeeded (a line that is not JSON as a string) and a line of the human output; an
/// alerts output that is not `.jsonl` is refused at validation.
#[test]
fn alerts_outputs_become_alert_events() {
    let d = scratch("detector_online/alert-events");
    let wf = write(
        &d,
        "alerts.yaml",
        r#"
name: alerts
steps:
  watch:
    run: [sh, -c, 'printf "%s\n" "{\"kind\": \"dead\", \"message\": \"cell 3 is dead\"}" "not json" > a.jsonl']
    out: { a: a.jsonl }
    report: { alerts: [out.a] }
"#,
    );
    let out = run_json(&d, &wf, &[]);
    assert!(out.status.success(), "{}", show(&out));
    let alerts: Vec<serde_json::Value> = events(&out).into_iter().filter(|e| e["event"] == "alert").collect();
    assert_eq!(alerts.len(), 2, "{}", show(&out));
    assert_eq!((alerts[0]["task"].as_str(), alerts[0]["output"].as_str()), (Some("watch"), Some("a")));
    assert_eq!(alerts[0]["alert"], serde_json::json!({"kind": "dead", "message": "cell 3 is dead"}));
    assert_eq!(alerts[1]["alert"], "not json");
    // People see the message (a run of its own: a result reused from the cache reports no
    // alerts again).
    let h = d.join("human");
    std::fs::create_dir_all(&h).unwrap();
    let human = twinflow().current_dir(&h).arg("run").arg(&wf).output().unwrap();
    let text = String::from_utf8_lossy(&human.stdout).to_string() + &String::from_utf8_lossy(&human.stderr);
    assert!(text.contains("alert watch: cell 3 is dead"), "{text}");
    let bad = write(
        &d,
        "bad.yaml",
        "name: bad\nsteps:\n  s:\n    run: [touch, a.txt]\n    out: { a: a.txt }\n    report: { alerts: [out.a] }\n",
    );
    let out = twinflow().arg("validate").arg(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("steps.s.report.alerts[0]") && err.contains("JSONL"), "{err}");
}
