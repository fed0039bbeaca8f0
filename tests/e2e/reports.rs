//! What `status`, `why` and the messages about parameters report: members in plan order,
//! output into a closed pipe, the run list's columns, parameter hints.

use std::process::{Output, Stdio};

use crate::support::*;

const HELLO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/hello.yaml");

/// Runs `twinflow ARGS` in `dir` with stdout a pipe whose reading end is already closed, as
/// `twinflow status | head -1` is once `head` has exited: every write fails with EPIPE.
fn into_closed_pipe(dir: &std::path::Path, args: &[&str]) -> Output {
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    twinflow().current_dir(dir).args(args).stdout(Stdio::from(writer)).stderr(Stdio::piped()).output().unwrap()
}

#[test]
fn why_lists_members_in_plan_order() {
    let d = scratch("reports/why_order");
    let out = run_json(&d, HELLO.as_ref(), &["-p", "members=12"]);
    assert!(out.status.success(), "{}", show(&out));
    let why = twinflow().current_dir(&d).args(["why", HELLO, "member", "-p", "members=12"]).output().unwrap();
    assert!(why.status.success(), "{}", show(&why));
    let tasks: Vec<String> = String::from_utf8_lossy(&why.stdout)
        .lines()
        .filter_map(|l| l.split_once(':').and_then(|(t, _)| t.split_whitespace().next()).map(String::from))
        .collect();
    let want: Vec<String> = (0..12).map(|m| format!("member[{m}]")).collect();
    assert_eq!(tasks, want);
    // Every task: steps in plan order, each step's members in order.
    let all = twinflow().current_dir(&d).args(["why", HELLO, "-p", "members=3", "--json"]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&all.stdout).unwrap();
    let names: Vec<&str> = v.as_array().unwrap().iter().map(|t| t["task"].as_str().unwrap()).collect();
    assert_eq!(names, ["prepare", "member[0]", "member[1]", "member[2]", "gather", "report"]);
}

#[test]
fn status_and_why_into_a_closed_pipe_exit_quietly() {
    let d = scratch("reports/closed_pipe");
    let out = run_json(&d, HELLO.as_ref(), &["-p", "members=300"]);
    assert!(out.status.success(), "{}", show(&out));
    let run = run_id(&out);
    for args in [
        &["status"][..],
        &["status", "latest"],
        &["status", &run, "--json"],
        &["why", HELLO, "-p", "members=300"],
        &["why", HELLO, "member", "-p", "members=300", "--json"],
    ] {
        let o = into_closed_pipe(&d, args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert_eq!(o.status.code(), Some(0), "{args:?}: {err}");
        assert_eq!(err, "", "{args:?}: nothing to say about the closed pipe");
    }
}

#[test]
fn an_unknown_parameter_of_a_workflow_without_parameters_says_it_has_none() {
    let d = scratch("reports/no_params");
    let wf = write(&d, "bare.yaml", "name: bare\nsteps:\n  a:\n    run: [echo]\n");
    let out =
        twinflow().current_dir(&d).args(["validate", "bare.yaml", "-p", "x=1", "-i", "y=f.txt"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("error: -p x: workflow `bare` has no parameter `x`\n"), "{err}");
    assert!(err.contains("help: `bare` declares no parameters (`params:`)\n"), "{err}");
    assert!(err.contains("error: -i y: workflow `bare` has no input `y`\n"), "{err}");
    assert!(err.contains("help: `bare` declares no inputs (`inputs:`)\n"), "{err}");
    assert!(!err.contains("help: parameters:"), "an empty list: {err}");
    // With parameters and inputs, a misspelt name gets a suggestion, another the list.
    let wf2 = write(
        &d,
        "some.yaml",
        "name: some\nparams:\n  members: { type: int, default: 1 }\n  mode: { type: string, default: a }\ninputs:\n  dem: { default: dem.txt }\nsteps:\n  a:\n    run: [echo, \"${{ params.members }}\", \"${{ params.mode }}\", \"${{ inputs.dem }}\"]\n",
    );
    let out = twinflow()
        .current_dir(&d)
        .args(["validate", "some.yaml", "-p", "membres=1", "-p", "zzz=1", "-i", "dme=x", "-i", "qqq=x"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("help: did you mean `members`?"), "{err}");
    assert!(err.contains("help: parameters: `members`, `mode`"), "{err}");
    assert!(err.contains("help: did you mean `dem`?"), "{err}");
    assert!(err.contains("help: inputs: `dem`"), "{err}");
    let _ = (wf, wf2);
}

#[test]
fn the_run_list_shows_how_long_each_run_took_its_tasks_and_its_parameters() {
    let d = scratch("reports/run_list");
    let wf = write(
        &d,
        "wf.yaml",
        "name: listed\nparams:\n  n: { type: int, default: 2 }\n  mode: { type: string, default: a }\nsteps:\n  s:\n    scatter: { over: { i: \"${{ range(0, params.n) }}\" } }\n    run: [sh, -c, 'sleep 0.3; [ \"$1\" != 2 ]', sh, \"${{ scatter.i }}\"]\n  t:\n    after: [s]\n    run: [\"true\"]\n",
    );
    let ok = run_json(&d, &wf, &["-p", "n=2", "-p", "mode=b c"]);
    assert!(ok.status.success(), "{}", show(&ok));
    let bad = run_json(&d, &wf, &["-p", "n=4"]);
    assert_eq!(bad.status.code(), Some(1), "{}", show(&bad));
    let out = twinflow().current_dir(&d).arg("status").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let row =
        |id: &str| text.lines().find(|l| l.starts_with(id)).unwrap_or_else(|| panic!("{id} in {text}")).to_string();
    let (ok_row, bad_row) = (row(&run_id(&ok)), row(&run_id(&bad)));
    assert!(ok_row.contains(" 3/3 done ") && ok_row.ends_with(" n=2 mode=b c"), "{text}");
    assert!(bad_row.contains(" 3/5 done, 1 failed, 1 upstream-failed ") && bad_row.ends_with(" n=4"), "{text}");
    // How long it took: at least the 0.3 s its members slept.
    let took: f64 = ok_row.split_whitespace().nth(5).and_then(|t| t.strip_suffix('s')).unwrap().parse().unwrap();
    assert!((0.3..30.0).contains(&took), "{ok_row}");
    // The same in JSON, beside the run's fields.
    let js = twinflow().current_dir(&d).args(["status", "--json"]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&js.stdout).unwrap();
    let first = &v[0];
    assert_eq!(first["id"], run_id(&bad).as_str());
    assert_eq!(first["counts"]["failed"], 1);
    assert_eq!(first["counts"]["upstream_failed"], 1);
    // Members 0 and 1 come from the first run.
    assert_eq!((first["counts"]["succeeded"].as_u64(), first["counts"]["cached"].as_u64()), (Some(1), Some(2)));
    assert!(first["seconds"].as_f64().unwrap() >= 0.3, "{first:#}");
    assert_eq!(first["settings"]["params"][0], "n=4");
}

/// A sweep's members carry their scatter values wherever a person reads them (the run's
/// lines, `status`, `--json` events and task rows), and the run ends with a table per step.
#[test]
fn members_are_labelled_with_their_scatter_values_and_steps_are_summarised() {
    let d = scratch("reports/member_labels");
    let wf = write(
        &d,
        "sweep.yaml",
        "name: sweep\nsteps:\n  sim:\n    scatter:\n      method: cartesian\n      over: { seed: \"${{ [1, 2] }}\", rain: \"${{ [40.0, 80.5] }}\", site: \"${{ ['upper reach', 'delta'] }}\" }\n    run: [sh, -c, '[ \"$1\" != 80.5 ] || [ \"$2\" != 2 ]', sh, \"${{ scatter.rain }}\", \"${{ scatter.seed }}\"]\n  after:\n    after: [sim]\n    run: [\"true\"]\n",
    );
    // Human output: every finished member with its values, then the per-step table.
    // `--keep-going`: both failing members run whatever the order they finish in.
    let out = twinflow().current_dir(&d).arg("run").arg(&wf).arg("--keep-going").output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    // Cartesian: the last variable varies fastest.
    assert!(err.contains("  succeeded sim[0] seed=1 rain=40.0 site=\"upper reach\" ("), "{err}");
    assert!(err.contains("  succeeded sim[3] seed=1 rain=80.5 site=delta ("), "{err}");
    assert!(err.contains("  failed sim[6] seed=2 rain=80.5 site=\"upper reach\": "), "{err}");
    let header = err.lines().position(|l| l.trim_start().starts_with("step ")).expect("a per-step table");
    let table: Vec<Vec<&str>> = err.lines().skip(header).take(3).map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(table[0][..8], ["step", "tasks", "succeeded", "cached", "skipped", "failed", "not", "run"], "{err}");
    assert_eq!(table[1][..7], ["sim", "8", "6", "0", "0", "2", "0"], "{err}");
    assert_eq!(table[2][..7], ["after", "1", "0", "0", "0", "0", "1"], "{err}");
    // `status`: the member's row begins with its name and values.
    let st = twinflow().current_dir(&d).arg("status").arg("latest").output().unwrap();
    let text = String::from_utf8_lossy(&st.stdout);
    assert!(
        text.lines().any(|l| l.starts_with("  sim[7] seed=2 rain=80.5 site=delta ") && l.contains("failed")),
        "{text}"
    );
    let js = twinflow().current_dir(&d).args(["status", "latest", "--json"]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&js.stdout).unwrap();
    let row = v["tasks"].as_array().unwrap().iter().find(|t| t["task"] == "sim[5]").unwrap().clone();
    assert_eq!(row["label"], "seed=2 rain=40.0 site=delta");
    assert!(v["tasks"].as_array().unwrap().iter().find(|t| t["task"] == "after").unwrap()["label"].is_null());
    // JSON events: started, finished (and retried) members carry `label`.
    let out = run_json(&d, &wf, &["--no-cache", "--keep-going"]);
    let ev = events(&out);
    for kind in ["task-started", "task-finished"] {
        let e = ev.iter().find(|e| e["event"] == kind && e["task"] == "sim[2]").unwrap_or_else(|| panic!("{kind}"));
        assert_eq!(e["label"], "seed=1 rain=80.5 site=\"upper reach\"", "{e}");
    }
    assert!(ev.iter().filter(|e| e["task"] == "after").all(|e| e.get("label").is_none()));
    // `why`: the member with its values, in text and JSON.
    let why = twinflow().current_dir(&d).arg("why").arg(&wf).arg("sim[5]").output().unwrap();
    let text = String::from_utf8_lossy(&why.stdout);
    assert!(text.starts_with("sim[5] seed=2 rain=40.0 site=delta: "), "{text}");
    let why = twinflow().current_dir(&d).arg("why").arg(&wf).args(["sim", "--json"]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&why.stdout).unwrap();
    assert_eq!(v[3]["label"], "seed=1 rain=80.5 site=delta");
}

/// A step learns where its attempt directory goes when it succeeds (`TWINFLOW_RESULT_DIR`,
/// the `out/` directory its results are read from), so its logs can name final paths.
#[test]
fn a_step_is_told_its_result_directory() {
    let d = scratch("reports/result_dir");
    let wf = write(
        &d,
        "wf.yaml",
        "name: rd\nsteps:\n  s:\n    run: [sh, -c, 'echo \"$TWINFLOW_RESULT_DIR\" > \"$1\"', sh, \"${{ out.f }}\"]\n    out: { f: f.txt }\n",
    );
    let out = run_json(&d, &wf, &[]);
    assert!(out.status.success(), "{}", show(&out));
    let dir = final_dir(&out, "s");
    assert!(dir.ends_with("/steps/s/out"), "{dir}");
    let told = std::fs::read_to_string(std::path::Path::new(&dir).join("f.txt")).unwrap();
    assert_eq!(told.trim(), dir);
}

fn final_dir(out: &Output, task: &str) -> String {
    events(out)
        .into_iter()
        .find(|e| e["event"] == "task-finished" && e["task"] == task)
        .and_then(|e| e["dir"].as_str().map(String::from))
        .unwrap_or_else(|| panic!("no dir for {task}: {}", show(out)))
}
