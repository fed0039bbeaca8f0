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
        .filter_map(|l| l.split_once(':').map(|(t, _)| t.to_string()))
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
