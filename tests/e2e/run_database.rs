//! The run database across twinflow versions: a database written before schema versions
//! (`tests/fixtures/state/v1-run.sql`, one run killed after its first task succeeded and
//! while its second ran) is migrated when opened, reported on by `status` as before, and
//! resumed without running its finished task again.

use std::path::Path;

use crate::support::*;

const RUN: &str = "20261201-101500-ab12";

/// The workflow of the fixture's run. Each task logs each execution.
const LEGACY: &str = r#"
name: legacy
params:
  logs: { type: path }
steps:
  first:
    run: [sh, -c, 'echo run >> "$1/first.log"; echo fresh > a.txt', sh, "${{ params.logs }}"]
    out: { a: a.txt }
  second:
    run: [sh, -c, 'echo run >> "$1/second.log"; cat "$2" > b.txt', sh, "${{ params.logs }}", "${{ steps.first.out.a }}"]
    out: { b: b.txt }
"#;

/// `d/legacy.yaml`, `d/runs/twinflow.db` as the old code left it, and the result of the
/// fixture's finished task `first`.
fn old_run(d: &Path) {
    write(d, "legacy.yaml", LEGACY);
    std::fs::create_dir_all(d.join("logs")).unwrap();
    let runs = d.join("runs");
    let out = runs.join(RUN).join("steps/first/out");
    std::fs::create_dir_all(out.join(".twinflow")).unwrap();
    std::fs::write(out.join("a.txt"), "from the old engine\n").unwrap();
    let sql = std::fs::read_to_string(crate::common::repo_root().join("tests/fixtures/state/v1-run.sql")).unwrap();
    let c = rusqlite::Connection::open(runs.join("twinflow.db")).unwrap();
    c.execute_batch(&sql.replace("@DIR@", &d.display().to_string())).unwrap();
}

fn status(d: &Path, args: &[&str]) -> std::process::Output {
    twinflow().current_dir(d).arg("status").args(args).output().unwrap()
}

#[test]
fn a_run_database_of_the_unversioned_schema_is_reported_on_and_resumed() {
    let d = scratch("run_database/v1");
    old_run(&d);
    // `status` lists and shows the old run as the old code did.
    let list = status(&d, &[]);
    assert!(list.status.success(), "{}", show(&list));
    let text = String::from_utf8_lossy(&list.stdout);
    // Its engine is long gone: the run is interrupted, not running.
    assert!(text.contains(&format!("{RUN:<22} {:<20} {:<11} 2026-12-01", "legacy", "interrupted")), "{text}");
    let one = status(&d, &[RUN]);
    let text = String::from_utf8_lossy(&one.stdout);
    assert!(text.starts_with(&format!("run {RUN} of `legacy` ({}/legacy.yaml): interrupted\n", d.display())), "{text}");
    assert!(text.contains("1 running, 1 succeeded"), "{text}");
    assert!(text.contains("first") && text.contains("attempts=1"), "{text}");
    let json: serde_json::Value = serde_json::from_slice(&status(&d, &[RUN, "--json"]).stdout).unwrap();
    let params: serde_json::Value = serde_json::from_str(json["run"]["params"].as_str().unwrap()).unwrap();
    assert_eq!(params["params"][0], format!("logs={}/logs", d.display()), "{json:#}");
    assert_eq!(json["run"]["settings"], params);
    assert_eq!(json["tasks"][1]["state"], "running");

    // Resume: the saved `-p logs=...` is used, `first` is taken over, `second` runs again.
    let out = twinflow().current_dir(&d).args(["run", "--resume", "--json"]).output().unwrap();
    assert!(out.status.success(), "{}", show(&out));
    let started = events(&out).into_iter().find(|e| e["event"] == "run-started").unwrap();
    assert_eq!((started["resumed"].as_bool(), started["already_done"].as_u64()), (Some(true), Some(1)));
    let finals = final_states(&out);
    assert_eq!(finals.into_iter().collect::<Vec<_>>(), [("second".to_string(), "succeeded".to_string())]);
    assert!(!d.join("logs/first.log").exists(), "`first` had finished before the old engine died but ran again");
    assert_eq!(std::fs::read_to_string(d.join("logs/second.log")).unwrap(), "run\n");
    let b = std::fs::read_to_string(d.join("runs").join(RUN).join("steps/second/out/b.txt")).unwrap();
    assert_eq!(b, "from the old engine\n", "`second` did not read the old result of `first`");
    let tasks = db_tasks(&d.join("runs"), RUN);
    assert_eq!(tasks["first"], ("succeeded".to_string(), 1));
    assert_eq!(tasks["second"], ("succeeded".to_string(), 2));
    let text = String::from_utf8_lossy(&status(&d, &[RUN]).stdout).to_string();
    assert!(text.contains("): succeeded\n2 succeeded\n"), "{text}");
}

#[test]
fn a_run_database_of_a_later_schema_is_refused() {
    let d = scratch("run_database/too_new");
    std::fs::create_dir_all(d.join("runs")).unwrap();
    let c = rusqlite::Connection::open(d.join("runs/twinflow.db")).unwrap();
    c.pragma_update(None, "user_version", 99).unwrap();
    drop(c);
    let out = status(&d, &[]);
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("has schema version 99, newer than this twinflow knows"), "{err}");
}

#[test]
fn one_run_with_settings_this_twinflow_does_not_know_does_not_hide_the_others() {
    let d = scratch("run_database/odd_settings");
    old_run(&d);
    assert!(status(&d, &[]).status.success());
    // As a later twinflow (or a hand edit) might leave it.
    let c = rusqlite::Connection::open(d.join("runs/twinflow.db")).unwrap();
    c.execute("UPDATE runs SET settings = ?1", [r#"{"params":["logs=x"],"future_key":1}"#]).unwrap();
    drop(c);
    let list = status(&d, &[]);
    assert!(list.status.success(), "{}", show(&list));
    assert!(String::from_utf8_lossy(&list.stdout).contains(RUN), "{}", show(&list));
    let err = String::from_utf8_lossy(&list.stderr);
    assert!(err.contains("settings of the run only partly readable") && err.contains("`future_key`"), "{err}");
    let one = status(&d, &[RUN, "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&one.stdout).unwrap();
    assert_eq!(json["run"]["settings"]["params"][0], "logs=x", "what fits is kept: {json:#}");
}
