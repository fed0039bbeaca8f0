//! Running workflows end to end on the local backend: scatter/gather, `when`, imports,
//! retries, timeouts, failure propagation, caching, resume, cancellation.

use std::time::{Duration, Instant};

use crate::support::*;

const HELLO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/hello.yaml");

#[test]
fn scatter_gather_runs_then_second_run_is_cached() {
    let d = scratch("scatter_gather");
    let out = run_json(&d, HELLO.as_ref(), &["-p", "members=5", "-p", "mode=full"]);
    assert!(out.status.success(), "{}", show(&out));
    let states = final_states(&out);
    assert_eq!(states.len(), 8, "prepare + 5 members + gather + report: {states:?}");
    assert!(states.values().all(|s| s == "succeeded"), "{states:?}");
    let report = step_file(&d, &out, "report/out/report.txt");
    assert!(report.starts_with("5 members\n"), "{report}");
    for m in 0..5 {
        assert!(report.contains(&format!("member {m}\n")), "gather lost member {m}: {report}");
    }
    // Same inputs: every task comes from the cache, nothing runs.
    let again = run_json(&d, HELLO.as_ref(), &["-p", "members=5", "-p", "mode=full"]);
    assert!(again.status.success(), "{}", show(&again));
    assert!(final_states(&again).values().all(|s| s == "cached"), "{:?}", final_states(&again));
    // A changed parameter re-runs what depends on it, and only that.
    let changed = run_json(&d, HELLO.as_ref(), &["-p", "members=6", "-p", "mode=full"]);
    let st = final_states(&changed);
    assert_eq!(st["member[2]"], "cached");
    assert_eq!(st["member[5]"], "succeeded");
    assert_eq!(st["gather"], "succeeded");
}

#[test]
fn when_false_skips_the_step() {
    let d = scratch("when_false");
    let out = run_json(&d, HELLO.as_ref(), &["-p", "members=2", "-p", "mode=quick"]);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(final_states(&out)["report"], "skipped");
    assert_eq!(finished(&out)["counts"]["skipped"], 1);
}

const FAILING: &str = r#"
name: failing
params:
  flag: { type: path, default: flag.txt }
steps:
  bad:
    run: [sh, -c, 'test -e "$1" || { echo "flag missing" >&2; exit 3; }; echo ok > out.txt', sh, "${{ params.flag }}"]
    out: { o: out.txt }
  after-bad:
    run: [cat, "${{ steps.bad.out.o }}"]
  independent:
    run: [sh, -c, 'sleep 0.3; echo fine > f.txt']
    out: { f: f.txt }
  later:
    run: [cat, "${{ steps.independent.out.f }}"]
"#;

#[test]
fn failure_propagates_to_dependants_and_resume_finishes_the_run() {
    let d = scratch("failure_resume");
    let wf = write(&d, "failing.yaml", FAILING);
    let out = run_json(&d, &wf, &["--keep-going"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let st = final_states(&out);
    assert_eq!(st["bad"], "failed");
    assert_eq!(st["after-bad"], "upstream-failed");
    assert_eq!(st["independent"], "succeeded", "--keep-going runs independent work");
    assert_eq!(st["later"], "succeeded");
    let msg =
        crate::support::events(&out).into_iter().find(|e| e["task"] == "bad" && e["event"] == "task-finished").unwrap();
    assert!(msg["message"].as_str().unwrap().contains("exit code 3"), "{msg}");
    assert!(msg["message"].as_str().unwrap().contains("flag missing"), "stderr tail is shown: {msg}");
    let run_id = finished(&out)["run_id"].as_str().unwrap().to_string();

    // Fix the cause and resume: only the failed part runs.
    std::fs::write(d.join("flag.txt"), "x").unwrap();
    let resumed = twinflow().current_dir(&d).args(["run", "--resume", "--json"]).output().unwrap();
    assert!(resumed.status.success(), "{}", show(&resumed));
    let st = final_states(&resumed);
    assert_eq!(st.get("bad").map(String::as_str), Some("succeeded"));
    assert_eq!(st.get("after-bad").map(String::as_str), Some("succeeded"));
    assert!(!st.contains_key("independent"), "finished tasks are not run again: {st:?}");
    let rows = db_tasks(&d.join("runs"), &run_id);
    assert_eq!(rows["independent"], ("succeeded".to_string(), 1));
    assert_eq!(rows["bad"].1, 2, "one failed attempt, one successful");
}

#[test]
fn fail_fast_stops_starting_new_tasks() {
    let d = scratch("fail_fast");
    let wf = write(
        &d,
        "ff.yaml",
        r#"
name: ff
steps:
  bad: { run: [sh, -c, 'exit 1'] }
  slow-a: { run: [sleep, "0.5"], after: [bad] }
  b1: { run: [sleep, "0.4"] }
  b2: { run: [sleep, "0.1"], after: [b1] }
"#,
    );
    let out = run_json(&d, &wf, &["-j", "1"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let st = final_states(&out);
    assert_eq!(st["bad"], "failed");
    assert!(!st.contains_key("b2"), "no new task starts after a failure without --keep-going: {st:?}");
    assert_eq!(finished(&out)["state"], "failed");
}

#[test]
fn retries_with_backoff_until_success() {
    let d = scratch("retries");
    let counter = d.join("count");
    let wf = write(
        &d,
        "retry.yaml",
        r#"
name: retry
params:
  counter: { type: path }
steps:
  flaky:
    # Fails on the first two attempts, succeeds on the third.
    run: [sh, -c, 'echo x >> "$1"; n=$(wc -l < "$1"); test "$n" -ge 3', sh, "${{ params.counter }}"]
    retry: { count: 3, backoff: 100ms, factor: 2 }
"#,
    );
    let t0 = Instant::now();
    let out = run_json(&d, &wf, &["-p", &format!("counter={}", counter.display())]);
    assert!(out.status.success(), "{}", show(&out));
    let retries: Vec<_> = events(&out).into_iter().filter(|e| e["event"] == "task-retry").collect();
    assert_eq!(retries.len(), 2, "{retries:?}");
    assert_eq!(retries[0]["delay_seconds"], 0.1);
    assert_eq!(retries[1]["delay_seconds"], 0.2, "exponential backoff");
    assert!(t0.elapsed() >= Duration::from_millis(300));
    assert_eq!(std::fs::read_to_string(&counter).unwrap().lines().count(), 3);
}

#[test]
fn timeout_kills_the_whole_process_group() {
    let d = scratch("timeout");
    let marker = "37.4242";
    let wf = write(
        &d,
        "timeout.yaml",
        &format!(
            r#"
name: timeout
steps:
  hang:
    # A background grandchild: only killing the process group stops it.
    run: [sh, -c, 'sleep {marker} & sleep {marker}; wait']
    timeout: 1s
"#
        ),
    );
    let t0 = Instant::now();
    let out = run_json(&d, &wf, &["--grace", "1"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(t0.elapsed() < Duration::from_secs(15), "took {:?}", t0.elapsed());
    let msg = events(&out).into_iter().find(|e| e["task"] == "hang" && e["event"] == "task-finished").unwrap();
    assert!(msg["message"].as_str().unwrap().contains("timed out"), "{msg}");
    // The group was sent SIGKILL before the engine returned; give the kernel a moment to
    // tear the processes down on a loaded machine, then none may be left.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let ps = std::process::Command::new("pgrep").args(["-f", &format!("sleep {marker}")]).output().unwrap();
        if ps.stdout.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "orphaned processes left: {}", String::from_utf8_lossy(&ps.stdout));
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn missing_declared_output_fails_the_step() {
    let d = scratch("missing_output");
    let wf = write(&d, "m.yaml", "name: m\nsteps:\n  s:\n    run: [\"true\"]\n    out: { result: result.nc }\n");
    let out = run_json(&d, &wf, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let e = events(&out).into_iter().find(|e| e["task"] == "s" && e["event"] == "task-finished").unwrap();
    assert!(e["message"].as_str().unwrap().contains("did not create declared output `result` (result.nc)"), "{e}");
    let run_id = finished(&out)["run_id"].as_str().unwrap().to_string();
    assert!(!d.join("runs").join(run_id).join("steps/s/out").exists(), "a failed attempt is never published as `out`");
}

#[test]
fn imports_run_a_sub_workflow() {
    let d = scratch("imports");
    write(
        &d,
        "stats.yaml",
        r#"
name: stats
params:
  label: { type: string }
inputs:
  data: {}
steps:
  count:
    run: [sh, -c, 'printf "%s %s\n" "$1" "$(wc -l < "$2")" > n.txt', sh, "${{ params.label }}", "${{ inputs.data }}"]
    out: { n: n.txt }
outputs:
  summary: ${{ steps.count.out.n }}
"#,
    );
    let wf = write(
        &d,
        "main.yaml",
        r#"
name: main
imports:
  stats: stats.yaml
steps:
  make:
    run: [sh, -c, 'printf "a\nb\nc\n" > data.txt']
    out: { data: data.txt }
  analyse:
    uses: stats
    with:
      label: lines
      data: ${{ steps.make.out.data }}
  show:
    run: [cp, "${{ steps.analyse.out.summary }}", summary.txt]
    out: { s: summary.txt }
"#,
    );
    let out = run_json(&d, &wf, &[]);
    assert!(out.status.success(), "{}", show(&out));
    let st = final_states(&out);
    assert_eq!(st.keys().cloned().collect::<Vec<_>>(), vec!["analyse/count", "make", "show"]);
    let s = step_file(&d, &out, "show/out/summary.txt");
    assert_eq!(s, "lines 3\n");
}

#[test]
fn shell_metacharacters_in_params_stay_literal() {
    let d = scratch("metachar");
    let wf = write(
        &d,
        "m.yaml",
        "name: m\nparams:\n  text: { type: string }\nsteps:\n  echo:\n    run: [sh, -c, 'printf \"%s\" \"$1\" > out.txt', sh, \"${{ params.text }}\"]\n    out: { o: out.txt }\n",
    );
    let hostile = "$(touch pwned); `touch pwned2` && rm -rf / ; echo '\"";
    let out = run_json(&d, &wf, &["-p", &format!("text={hostile}")]);
    assert!(out.status.success(), "{}", show(&out));
    let got = step_file(&d, &out, "echo/out/out.txt");
    assert_eq!(got, hostile);
    assert!(!d.join("pwned").exists() && !d.join("pwned2").exists());
}

#[test]
fn shell_scripts_take_values_as_data_through_env_and_args() {
    let d = scratch("shell_data");
    let wf = write(
        &d,
        "s.yaml",
        r#"name: s
params:
  text: { type: string }
steps:
  script:
    shell: true
    run: ['printf "%s|%s|%s" "$LABEL" "$1" "$0" > out.txt && test "$#" -eq 1']
    env: { LABEL: "${{ params.text }}" }
    args: ["${{ params.text }}"]
    out: { o: out.txt }
"#,
    );
    let hostile = "$(touch pwned); `touch pwned2` && echo '\"";
    let out = run_json(&d, &wf, &["-p", &format!("text={hostile}")]);
    assert!(out.status.success(), "{}", show(&out));
    let got = step_file(&d, &out, "script/out/out.txt");
    // `$0` is the step name, `$1` the first of `args:`; both values arrive verbatim.
    assert_eq!(got, format!("{hostile}|{hostile}|script"));
    assert!(!d.join("pwned").exists() && !d.join("pwned2").exists());
}

#[test]
fn sigterm_cancels_running_steps_and_exits_130() {
    let d = scratch("sigterm");
    let marker = "41.1717";
    let wf = write(
        &d,
        "long.yaml",
        &format!("name: long\nsteps:\n  wait:\n    run: [sh, -c, 'sleep {marker} & sleep {marker}; wait']\n"),
    );
    let mut child = spawn_run(&d, &wf, &["--grace", "1"]);
    // Wait until the step is running.
    let t0 = Instant::now();
    while std::process::Command::new("pgrep")
        .args(["-f", &format!("sleep {marker}")])
        .output()
        .unwrap()
        .stdout
        .is_empty()
    {
        assert!(t0.elapsed() < Duration::from_secs(10), "step never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    nix_kill(child.id(), "TERM");
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    std::thread::sleep(Duration::from_millis(200));
    let ps = std::process::Command::new("pgrep").args(["-f", &format!("sleep {marker}")]).output().unwrap();
    assert!(ps.stdout.is_empty(), "step processes survived cancellation");
    let st = twinflow().current_dir(&d).args(["status", "latest", "--json"]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&st.stdout).unwrap();
    assert_eq!(v["run"]["state"], "cancelled");
    assert_eq!(v["tasks"][0]["state"], "cancelled");
}

/// Sends a signal with the `kill` utility (no unsafe code in tests).
pub fn nix_kill(pid: u32, sig: &str) {
    let ok = std::process::Command::new("kill").args([&format!("-{sig}"), &pid.to_string()]).status().unwrap();
    assert!(ok.success());
}

#[test]
fn why_names_the_changed_parameter() {
    let d = scratch("why");
    let out = run_json(&d, HELLO.as_ref(), &["-p", "greeting=hi"]);
    assert!(out.status.success(), "{}", show(&out));
    let why =
        twinflow().current_dir(&d).args(["why"]).arg(HELLO).args(["prepare", "-p", "greeting=salut"]).output().unwrap();
    let text = String::from_utf8_lossy(&why.stdout);
    assert!(text.contains("parameter `greeting` changed: hi → salut"), "{text}");
    let same =
        twinflow().current_dir(&d).args(["why"]).arg(HELLO).args(["prepare", "-p", "greeting=hi"]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&same.stdout), "prepare: up to date\n0 of 1 would run\n");
}

#[test]
fn why_agrees_with_the_cache_for_steps_that_read_upstream_values() {
    let d = scratch("why_values");
    let args = ["-p", "members=3", "-p", "mode=full"];
    let out = run_json(&d, HELLO.as_ref(), &args);
    assert!(out.status.success(), "{}", show(&out));
    let again = run_json(&d, HELLO.as_ref(), &args);
    assert_eq!(final_states(&again)["report"], "cached", "{}", show(&again));
    // `report` reads `steps.gather.values.count`: `why` must see the same value the run did.
    let why = twinflow().current_dir(&d).args(["why"]).arg(HELLO).arg("report").args(args).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&why.stdout), "report: up to date\n0 of 1 would run\n", "{}", show(&why));
}

#[test]
fn resume_refuses_a_run_that_another_engine_is_executing() {
    let d = scratch("double_resume");
    let wf = write(&d, "long.yaml", "name: long\nsteps:\n  wait:\n    run: [sleep, \"30\"]\n");
    let mut first = spawn_run(&d, &wf, &["--grace", "1"]);
    let t0 = Instant::now();
    while !d.join("runs/twinflow.db").exists() || db_has_running(&d) == 0 {
        assert!(t0.elapsed() < Duration::from_secs(10), "run never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    let second = twinflow().current_dir(&d).args(["run", "--resume"]).output().unwrap();
    nix_kill(first.id(), "TERM");
    let _ = first.wait();
    assert_eq!(second.status.code(), Some(2), "{}", show(&second));
    assert!(
        String::from_utf8_lossy(&second.stderr).contains("is still being executed by twinflow"),
        "{}",
        show(&second)
    );
}

fn db_has_running(d: &std::path::Path) -> usize {
    let Ok(c) = rusqlite::Connection::open(d.join("runs/twinflow.db")) else { return 0 };
    c.query_row("SELECT COUNT(*) FROM tasks WHERE state = 'running'", [], |r| r.get::<_, i64>(0))
        .map_or(0, |n| n as usize)
}

#[test]
fn input_files_are_checked_for_existence_and_declared_format_before_the_run() {
    let d = scratch("input_format");
    write(&d, "table.csv", "x,y\n1,2\n");
    let mut h5 = b"\x89HDF\r\n\x1a\n".to_vec();
    h5.resize(64, 0);
    std::fs::write(d.join("field.h5"), &h5).unwrap();
    let wf = write(
        &d,
        "f.yaml",
        r#"name: f
inputs:
  field: { format: hdf5 }
  obs: { format: netcdf }
steps:
  use:
    run: [cat, "${{ inputs.field }}", "${{ inputs.obs }}"]
"#,
    );
    // A CSV declared as NetCDF and a missing file: both reported, at the declarations,
    // with exit code 2, and nothing runs.
    let out = run_json(&d, &wf, &["-i", "field=missing.h5", "-i", "obs=table.csv"]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("input `field`: `") && err.contains("/missing.h5` does not exist"), "{err}");
    assert!(err.contains("/table.csv` is not a NetCDF file"), "{err}");
    assert!(err.contains("f.yaml:3:3") && err.contains("f.yaml:4:3"), "{err}");
    let run_dirs = std::fs::read_dir(d.join("runs")).map_or(0, |r| r.flatten().filter(|e| e.path().is_dir()).count());
    assert_eq!(run_dirs, 0, "no run may start");
    // NetCDF-4 is HDF5: an HDF5 file is accepted for both.
    let ok = run_json(&d, &wf, &["-i", "field=field.h5", "-i", "obs=field.h5"]);
    assert!(ok.status.success(), "{}", show(&ok));
}

#[test]
fn a_sub_workflow_input_bound_to_an_upstream_output_is_checked_when_its_task_starts() {
    let d = scratch("input_format_bound");
    write(
        &d,
        "sub.yaml",
        "name: sub\ninputs:\n  grid: { format: hdf5 }\nsteps:\n  read:\n    run: [cat, \"${{ inputs.grid }}\"]\n",
    );
    let wf = write(
        &d,
        "main.yaml",
        r#"name: main
imports: { sub: sub.yaml }
steps:
  make:
    run: [sh, -c, 'echo not-hdf5 > grid.h5']
    out: { grid: grid.h5 }
  use:
    uses: sub
    with: { grid: "${{ steps.make.out.grid }}" }
"#,
    );
    let out = run_json(&d, &wf, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let st = final_states(&out);
    assert_eq!(st["make"], "succeeded");
    assert_eq!(st["use/read"], "failed");
    let failed = events(&out).into_iter().find(|e| e["task"] == "use/read" && e["state"] == "failed").unwrap();
    let msg = failed["message"].as_str().unwrap_or_default();
    assert!(msg.contains("input `grid`") && msg.contains("is not an HDF5 file"), "{msg}");
}

#[test]
fn a_literal_list_of_words_scatters_as_strings_even_yaml_1_1_booleans() {
    let d = scratch("scatter_words");
    let wf = write(
        &d,
        "w.yaml",
        r#"name: w
params:
  extra: { type: string, default: "last" }
steps:
  member:
    scatter:
      over: { word: [x, y, "no", on, "${{ params.extra }}"] }
    run: [sh, -c, 'printf "%s" "$1" > w.txt', sh, "${{ scatter.word }}"]
    out: { w: w.txt }
  gather:
    run: [sh, -c, 'for f in "$@"; do cat "$f"; printf " "; done > all.txt', sh, "${{ steps.member.out.w }}"]
    out: { all: all.txt }
"#,
    );
    let out = run_json(&d, &wf, &[]);
    assert!(out.status.success(), "{}", show(&out));
    let all = step_file(&d, &out, "gather/out/all.txt");
    assert_eq!(all, "x y no on last ");
}

#[test]
fn publish_copies_outputs_outside_the_run_directory_and_only_there() {
    let d = scratch("publish");
    let results = d.join("results");
    let wf = write(
        &d,
        "p.yaml",
        r#"name: p
params:
  results: { type: path, default: results }
  members: { type: int, default: 3 }
steps:
  member:
    scatter:
      over: { i: "${{ range(0, params.members) }}" }
    run: [sh, -c, 'echo "member $1" > r.txt', sh, "${{ scatter.i }}"]
    out: { r: r.txt }
    publish: { r: "${{ params.results }}/member-${{ member.index }}.txt" }
  total:
    run: [sh, -c, 'cat "$@" > all.txt', sh, "${{ steps.member.out.r }}"]
    out: { all: all.txt }
    publish: { all: "${{ params.results }}/all.txt" }
"#,
    );
    let plan = twinflow().current_dir(&d).args(["plan"]).arg(&wf).output().unwrap();
    assert!(String::from_utf8_lossy(&plan.stdout).contains("publish: all -> ${{ params.results }}/all.txt"));
    let out = run_json(&d, &wf, &[]);
    assert!(out.status.success(), "{}", show(&out));
    let mut names: Vec<String> =
        std::fs::read_dir(&results).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    // Exactly the named copies, no temporary files left behind.
    assert_eq!(names, ["all.txt", "member-0.txt", "member-1.txt", "member-2.txt"]);
    assert_eq!(std::fs::read_to_string(results.join("member-2.txt")).unwrap(), "member 2\n");
    assert_eq!(std::fs::read_to_string(results.join("all.txt")).unwrap(), "member 0\nmember 1\nmember 2\n");

    // A new destination does not make the results stale: they are reused and copied there.
    let elsewhere = d.join("elsewhere");
    let again = run_json(&d, &wf, &["-p", &format!("results={}", elsewhere.display())]);
    assert!(again.status.success(), "{}", show(&again));
    assert!(final_states(&again).values().all(|s| s == "cached"), "{:?}", final_states(&again));
    assert_eq!(std::fs::read_to_string(elsewhere.join("all.txt")).unwrap(), "member 0\nmember 1\nmember 2\n");

    // A destination that cannot be written fails the task with a clear message.
    std::fs::write(d.join("blocker"), "a file, not a directory").unwrap();
    let bad = run_json(&d, &wf, &["-p", "results=blocker", "--no-cache"]);
    assert_eq!(bad.status.code(), Some(1), "{}", show(&bad));
    let failed: Vec<String> = events(&bad)
        .into_iter()
        .filter(|e| e["state"] == "failed")
        .filter_map(|e| e["message"].as_str().map(String::from))
        .collect();
    assert!(failed.iter().any(|m| m.starts_with("publishing `r` to `") && m.contains("blocker/member-")), "{failed:?}");

    // The runs directory is the engine's: a copy onto the run database is refused.
    let db = d.join("runs/twinflow.db");
    let db_bytes = std::fs::metadata(&db).unwrap().len();
    let clobber = run_json(&d, &wf, &["-p", "results=runs/x/../", "-p", "members=1", "--no-cache"]);
    assert_eq!(clobber.status.code(), Some(1), "{}", show(&clobber));
    let msgs: Vec<String> =
        events(&clobber).into_iter().filter_map(|e| e["message"].as_str().map(String::from)).collect();
    assert!(msgs.iter().any(|m| m.contains("is inside the runs directory")), "{msgs:?}");
    assert!(std::fs::metadata(&db).unwrap().len() >= db_bytes, "the run database was overwritten");
    let status = twinflow().current_dir(&d).args(["status"]).output().unwrap();
    assert!(status.status.success(), "{}", show(&status));
}

#[test]
fn expressions_compute_on_upstream_outputs_and_values_and_keys_do_not_depend_on_the_run() {
    let d = scratch("computed_refs");
    let wf = write(
        &d,
        "c.yaml",
        r#"name: c
params:
  noise: { type: int, default: 0 }
steps:
  sim:
    scatter:
      over: { i: "${{ range(0, 3) }}" }
    env: { NOISE: "${{ params.noise }}" }
    run: [sh, -c, 'echo "$1" > r.txt', sh, "${{ scatter.i }}"]
    out: { r: r.txt }
  count:
    run: [sh, -c, 'echo 41 > n.txt']
    values: { n: n.txt }
  use:
    run: [sh, -c, 'printf "%s|%s|%s|%s" "$1" "$2" "$3" "$4" > o.txt', sh,
          "${{ join(steps.sim.out.r, ',') }}", "${{ len(steps.sim.out.r) }}",
          "${{ steps.count.values.n + 1 }}", "${{ basename(steps.sim.out.r[2]) }}"]
    out: { o: o.txt }
"#,
    );
    let out = run_json(&d, &wf, &[]);
    assert!(out.status.success(), "{}", show(&out));
    let o = step_file(&d, &out, "use/out/o.txt");
    let parts: Vec<&str> = o.split('|').collect();
    let files: Vec<&str> = parts[0].split(',').collect();
    assert_eq!(files.len(), 3, "{o}");
    for (m, f) in files.iter().enumerate() {
        assert!(f.ends_with(&format!("steps/sim/{m}/out/r.txt")), "{o}");
        assert_eq!(std::fs::read_to_string(f).unwrap(), format!("{m}\n"));
    }
    assert_eq!(&parts[1..], ["3", "42", "r.txt"]);

    // The members run again in a new run directory (their `env` changed) and write the same
    // bytes: `use` reads other paths with the same content, so it is up to date.
    let again = run_json(&d, &wf, &["-p", "noise=1"]);
    assert!(again.status.success(), "{}", show(&again));
    let st = final_states(&again);
    assert_eq!(st["sim[1]"], "succeeded");
    assert_eq!(st["use"], "cached", "{st:?}");

    // The plan shows the gather as a list, computed on without running anything.
    let plan = twinflow().current_dir(&d).args(["plan"]).arg(&wf).output().unwrap();
    let text = String::from_utf8_lossy(&plan.stdout);
    assert!(
        text.contains(
            "'<steps.sim.out.r[0]>,<steps.sim.out.r[1]>,<steps.sim.out.r[2]>' 3 '${{ steps.count.values.n + 1 }}'"
        ),
        "{text}"
    );
}

#[test]
fn literal_with_values_are_typed_and_paths_resolve_against_the_calling_file() {
    let d = scratch("with_literals");
    let wdir = d.join("wf");
    std::fs::create_dir_all(wdir.join("data")).unwrap();
    std::fs::write(wdir.join("data/obs.txt"), "a\nb\n").unwrap();
    write(
        &wdir,
        "sub.yaml",
        "name: sub\nparams:\n  n: { type: int, default: 1 }\ninputs:\n  obs: {}\nsteps:\n  count:\n    run: [sh, -c, 'echo $(( $(wc -l < \"$1\") * $2 )) > n.txt', sh, \"${{ inputs.obs }}\", \"${{ params.n }}\"]\n    out: { n: n.txt }\n",
    );
    let wf = write(
        &wdir,
        "main.yaml",
        "name: main\nimports: { sub: sub.yaml }\nsteps:\n  call:\n    uses: sub\n    with: { obs: data/obs.txt, n: 10 }\n",
    );
    // Started from another directory: `data/obs.txt` is relative to main.yaml, and `10` is
    // an int (arithmetic in the step would fail on anything else).
    let out = run_json(&d, &wf, &[]);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(step_file(&d, &out, "call/count/out/n.txt"), "20\n");
    // A literal input of the wrong format is reported before anything runs.
    write(
        &wdir,
        "sub.yaml",
        "name: sub\ninputs:\n  obs: { format: netcdf }\nsteps:\n  count:\n    run: [cat, \"${{ inputs.obs }}\"]\n",
    );
    write(
        &wdir,
        "main.yaml",
        "name: main\nimports: { sub: sub.yaml }\nsteps:\n  call:\n    uses: sub\n    with: { obs: data/obs.txt }\n",
    );
    let bad = run_json(&d, &wf, &[]);
    assert_eq!(bad.status.code(), Some(2), "{}", show(&bad));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("data/obs.txt` is not a NetCDF file"), "{}", show(&bad));
}

#[test]
fn a_file_named_by_a_path_parameter_is_part_of_the_cache_key() {
    let d = scratch("path_param_key");
    std::fs::write(d.join("cfg.txt"), "alpha\n").unwrap();
    let wf = write(
        &d,
        "k.yaml",
        "name: k\nparams:\n  cfg: { type: path }\nsteps:\n  read:\n    run: [cp, \"${{ params.cfg }}\", copy.txt]\n    out: { c: copy.txt }\n",
    );
    let first = run_json(&d, &wf, &["-p", "cfg=cfg.txt"]);
    assert!(first.status.success(), "{}", show(&first));
    let same = run_json(&d, &wf, &["-p", "cfg=cfg.txt"]);
    assert_eq!(final_states(&same)["read"], "cached");
    // Same path and size, other content: the task is stale and `why` says which input.
    std::fs::write(d.join("cfg.txt"), "omega\n").unwrap();
    let why = twinflow().current_dir(&d).args(["why"]).arg(&wf).args(["read", "-p", "cfg=cfg.txt"]).output().unwrap();
    let text = String::from_utf8_lossy(&why.stdout);
    assert!(text.contains("input `params.cfg` changed"), "{text}");
    let changed = run_json(&d, &wf, &["-p", "cfg=cfg.txt"]);
    assert_eq!(final_states(&changed)["read"], "succeeded");
}

#[test]
fn a_workflow_with_too_many_yaml_nodes_is_refused_in_our_words() {
    let d = scratch("too_many_nodes");
    let mut y = String::from("name: big\nsteps:\n");
    for i in 0..70_000 {
        y += &format!("  s{i}:\n    run: [\"true\", x]\n");
    }
    let wf = write(&d, "big.yaml", &y);
    let out = twinflow().current_dir(&d).args(["validate"]).arg(&wf).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("workflow file is too large: more than 250000 YAML nodes"), "{err}");
    assert!(!err.contains("budget") && !err.contains("Nodes {"), "internal wording leaked: {err}");
}

#[test]
fn resume_takes_a_workflow_file_keeps_no_cache_and_never_invents_a_runs_directory() {
    let d = scratch("resume_usability");
    let wf = write(&d, "failing.yaml", FAILING);
    // Nothing to resume in a mistyped runs directory, and none is created.
    let none = twinflow().current_dir(&d).args(["run", "--resume", "--runs-dir", "rnus"]).output().unwrap();
    assert_eq!(none.status.code(), Some(2), "{}", show(&none));
    let why = twinflow().current_dir(&d).args(["why", "failing.yaml", "--runs-dir", "rnus"]).output().unwrap();
    assert_eq!(why.status.code(), Some(2), "{}", show(&why));
    assert!(String::from_utf8_lossy(&why.stderr).contains("no runs in `rnus`"), "{}", show(&why));
    assert!(!d.join("rnus").exists());

    // A first run succeeds: every task has a cache entry.
    std::fs::write(d.join("flag.txt"), "x").unwrap();
    let first = run_json(&d, &wf, &[]);
    assert!(first.status.success(), "{}", show(&first));
    // A run with --no-cache runs everything; `bad` fails without its flag.
    std::fs::remove_file(d.join("flag.txt")).unwrap();
    let nc = run_json(&d, &wf, &["--keep-going", "--no-cache"]);
    assert_eq!(final_states(&nc)["independent"], "succeeded", "{}", show(&nc));
    assert_eq!(final_states(&nc)["bad"], "failed", "{}", show(&nc));
    // With the flag back, `bad` would match the first run's cache entry: its resume must
    // still run it.
    std::fs::write(d.join("flag.txt"), "x").unwrap();
    // `--resume FILE`: the file is the workflow, the run the latest.
    let resumed = twinflow().current_dir(&d).args(["run", "--resume", "failing.yaml", "--json"]).output().unwrap();
    assert!(resumed.status.success(), "{}", show(&resumed));
    assert_eq!(finished(&resumed)["run_id"], finished(&nc)["run_id"]);
    let st = final_states(&resumed);
    assert_eq!(st.get("bad").map(String::as_str), Some("succeeded"), "{st:?}");
    assert!(!st.values().any(|s| s == "cached"), "a --no-cache run used the cache when resumed: {st:?}");
}

#[test]
fn resuming_with_the_file_of_another_workflow_names_that_mistake_before_parameters() {
    let d = scratch("resume_other_workflow");
    let first = write(
        &d,
        "first.yaml",
        "name: first\nparams:\n  n: { type: int, default: 1 }\nsteps:\n  s: { run: [\"false\"] }\n",
    );
    let other =
        write(&d, "other.yaml", "name: other\nparams:\n  m: { type: string }\nsteps:\n  s: { run: [\"true\"] }\n");
    let out = twinflow().current_dir(&d).args(["run"]).arg(&first).args(["-p", "n=3"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    // The saved `n=3` does not fit `other` (no `n`, and `m` is required); the message says
    // the real problem: the file is of another workflow.
    let out = twinflow().current_dir(&d).args(["run", "--resume", "latest"]).arg(&other).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is of workflow `first`, not `other`"), "{err}");
    assert!(!err.contains("`n`") && !err.contains("`m`"), "a parameter error came first: {err}");
}

#[test]
fn twinflow_cancel_stops_a_local_run_from_another_shell() {
    let d = scratch("cancel_local");
    let wf = write(
        &d,
        "long.yaml",
        "name: long\nsteps:\n  wait:\n    run: [sleep, \"30\"]\n  after: { run: [\"true\"], after: [wait] }\n",
    );
    let first = spawn_run(&d, &wf, &["--grace", "1"]);
    let t0 = Instant::now();
    while !d.join("runs/twinflow.db").exists() || db_has_running(&d) == 0 {
        assert!(t0.elapsed() < Duration::from_secs(10), "run never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    let cancel = twinflow().current_dir(&d).arg("cancel").output().unwrap();
    assert!(cancel.status.success(), "{}", show(&cancel));
    let said = String::from_utf8_lossy(&cancel.stdout).to_string();
    assert!(said.contains("sent SIGTERM to the engine of run") && said.contains("it stops its tasks"), "{said}");
    let out = first.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "the run ends as cancelled: {}", show(&out));
    assert!(t0.elapsed() < Duration::from_secs(20), "the step was stopped, not waited for");
    let st = final_states(&out);
    assert_eq!(st["wait"], "cancelled", "{st:?}");
    assert!(!st.contains_key("after"), "nothing starts after cancel: {st:?}");
    // Cancelling it again: nothing left to stop, and it says so.
    let again = twinflow().current_dir(&d).arg("cancel").output().unwrap();
    assert!(again.status.success(), "{}", show(&again));
    assert!(String::from_utf8_lossy(&again.stdout).contains("no SLURM jobs in flight and no engine running"));
}

#[test]
fn parameters_given_again_on_resume_are_kept_with_the_run() {
    let d = scratch("resume_params");
    let counter = d.join("seen");
    let wf = write(
        &d,
        "p.yaml",
        r#"name: p
params:
  n: { type: int, default: 1 }
  log: { type: path }
steps:
  fan:
    scatter: { over: { k: "${{ range(0, params.n) }}" } }
    run: [sh, -c, 'echo "$1" >> "$2"; test "$1" -lt 2', sh, "${{ scatter.k }}", "${{ params.log }}"]
"#,
    );
    let log = format!("log={}", counter.display());
    // n=2 succeeds; -p n=3 on resume adds member 2, which fails: the run stays resumable.
    let first = run_json(&d, &wf, &["-p", "n=2", "-p", &log]);
    assert!(first.status.success(), "{}", show(&first));
    let again =
        twinflow().current_dir(&d).args(["run", "--resume", "--json", "-p", "n=3", "-p", &log]).output().unwrap();
    assert_eq!(again.status.code(), Some(1), "{}", show(&again));
    let c = rusqlite::Connection::open(d.join("runs/twinflow.db")).unwrap();
    let settings: String = c.query_row("SELECT settings FROM runs", [], |r| r.get(0)).unwrap();
    assert!(settings.contains("\"n=3\""), "the new -p is recorded: {settings}");
    // A plain resume goes on with n=3: member 2 runs again (and fails again), nothing is
    // left pending for good.
    let plain = twinflow().current_dir(&d).args(["run", "--resume", "--json"]).output().unwrap();
    assert_eq!(plain.status.code(), Some(1), "{}", show(&plain));
    assert_eq!(final_states(&plain).get("fan[2]").map(String::as_str), Some("failed"), "{}", show(&plain));
    let seen = std::fs::read_to_string(&counter).unwrap();
    assert_eq!(seen.lines().filter(|l| *l == "2").count(), 2, "member 2 ran once per resume: {seen}");
    assert_eq!(seen.lines().filter(|l| *l == "0").count(), 1, "member 0 never ran again: {seen}");
}

#[test]
fn a_closed_stdout_ends_a_command_quietly() {
    let d = scratch("broken_pipe");
    let mut child = twinflow()
        .current_dir(crate::common::repo_root())
        .args(["plan", "examples/hello.yaml", "-p", "members=1000", "--format", "json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Read one line, then close the pipe, as `| head -1` does.
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut first).unwrap();
    drop(stdout);
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert_eq!(first.trim(), "{");
    let _ = d;
}
