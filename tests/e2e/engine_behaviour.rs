//! Engine behaviour of the real binary on the local backend that the other modules do not
//! pin down: resource-aware scheduling (cores, memory), SIGKILL after the grace period,
//! cache decisions and `why`, plan formats, cartesian scatters, `when` on upstream values,
//! step `env:`/`args:`, the per-step directory, bad `-p`/`-i` values, `status`, human
//! output and logs, and the run database.
//!
//! Timing assertions compare timestamps taken inside the steps (`date +%s.%N`) or recorded
//! by the engine (`status.json`), with bounds wide enough for a loaded 2-core machine.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant, SystemTime};

use crate::common::repo_root;
use crate::support::*;

/// `DIR/runs/RUN/steps/TASK_PATH`.
fn task_dir(d: &Path, run: &str, task_path: &str) -> PathBuf {
    d.join("runs").join(run).join("steps").join(task_path)
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

fn json_file(p: &Path) -> serde_json::Value {
    serde_json::from_str(&read(p)).unwrap_or_else(|e| panic!("{} is not JSON: {e}", p.display()))
}

/// Whether a process whose command line matches the regex `pattern` is alive.
fn alive(pattern: &str) -> bool {
    let out = std::process::Command::new("pgrep").args(["-f", pattern]).output().expect("pgrep");
    !out.stdout.is_empty()
}

fn wait_until_alive(pattern: &str) {
    let t0 = Instant::now();
    while !alive(pattern) {
        assert!(t0.elapsed() < Duration::from_secs(15), "`{pattern}` never started");
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------------------
// 1. Resource-aware scheduling.

/// Two independent steps that record when they start and end (seconds since the epoch).
fn two_timed_steps(resources: &str) -> String {
    let step = |name: &str| {
        format!(
            "  {name}:\n    run: [sh, -c, 'date +%s.%N > start; sleep 0.8; date +%s.%N > end']\n    out: {{ start: start, end: end }}\n    resources: {resources}\n"
        )
    };
    format!("name: sched\nsteps:\n{}{}", step("a"), step("b"))
}

/// (start, end) of steps `a` and `b`, as recorded by the steps themselves.
fn intervals(d: &Path, yaml: &str, args: &[&str]) -> [(f64, f64); 2] {
    let wf = write(d, "sched.yaml", yaml);
    let out = run_json(d, &wf, args);
    assert!(out.status.success(), "{}", show(&out));
    let run = run_id(&out);
    let t = |step: &str, f: &str| -> f64 {
        read(&task_dir(d, &run, step).join("out").join(f)).trim().parse().expect("a timestamp")
    };
    [(t("a", "start"), t("a", "end")), (t("b", "start"), t("b", "end"))]
}

fn overlap([(a0, a1), (b0, b1)]: [(f64, f64); 2]) -> bool {
    a0 < b1 && b0 < a1
}

#[test]
fn two_cores_run_two_one_core_steps_at_once() {
    let d = scratch("eb_sched_overlap");
    let iv = intervals(&d, &two_timed_steps("{ threads: 1 }"), &["--cores", "2"]);
    assert!(overlap(iv), "two 1-core steps on 2 cores ran one after the other: {iv:?}");
}

#[test]
fn two_core_steps_do_not_share_two_cores() {
    let d = scratch("eb_sched_threads");
    let iv = intervals(&d, &two_timed_steps("{ threads: 2 }"), &["--cores", "2"]);
    assert!(!overlap(iv), "two 2-thread steps overlapped on 2 cores: {iv:?}");
}

/// Total memory as the local backend sees it (`MemTotal` of `/proc/meminfo`, in KiB).
fn mem_total_kib() -> u64 {
    let text = read(Path::new("/proc/meminfo"));
    let line = text.lines().find(|l| l.starts_with("MemTotal:")).expect("MemTotal");
    line.split_whitespace().nth(1).expect("a number").parse().expect("KiB")
}

/// There is no `--memory` flag for the local backend: its capacity is the machine's
/// physical memory. Steps that each ask for 60% of it must run one at a time; steps that
/// ask for 40% fit together (cores are plentiful in both cases).
#[test]
fn memory_requests_are_scheduled_against_physical_memory() {
    let total = mem_total_kib();
    let d = scratch("eb_sched_memory");
    let big = intervals(&d, &two_timed_steps(&format!("{{ memory: {}K }}", total * 6 / 10)), &["--cores", "4"]);
    assert!(!overlap(big), "two steps of 60% of memory each overlapped: {big:?}");
    let d = scratch("eb_sched_memory_fits");
    let small = intervals(&d, &two_timed_steps(&format!("{{ memory: {}K }}", total * 4 / 10)), &["--cores", "4"]);
    assert!(overlap(small), "two steps of 40% of memory each did not run together: {small:?}");
}

// ---------------------------------------------------------------------------------------
// 2. SIGTERM, grace, SIGKILL.

/// A step whose whole process group ignores SIGTERM (the ignored disposition is inherited
/// by `sleep`), so only SIGKILL stops it. `marker` tells its `sleep` apart.
fn stubborn(marker: &str, timeout: Option<&str>) -> String {
    let timeout = timeout.map(|t| format!("    timeout: {t}\n")).unwrap_or_default();
    format!("name: stubborn\nsteps:\n  hold:\n    run: [sh, -c, \"trap '' TERM; sleep {marker}\"]\n{timeout}")
}

fn attempt_status(d: &Path, run: &str) -> serde_json::Value {
    json_file(&task_dir(d, run, "hold").join("attempt-1/.twinflow/status.json"))
}

#[test]
fn a_timed_out_step_that_ignores_sigterm_is_killed_after_the_grace_period() {
    let d = scratch("eb_grace_timeout");
    let marker = "59.3131";
    let wf = write(&d, "s.yaml", &stubborn(marker, Some("1s")));
    let t0 = Instant::now();
    let out = run_json(&d, &wf, &["--grace", "1"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(t0.elapsed() < Duration::from_secs(10), "took {:?}", t0.elapsed());
    assert_eq!(final_states(&out)["hold"], "failed");
    let e = events(&out).into_iter().find(|e| e["event"] == "task-finished").unwrap();
    assert!(e["message"].as_str().unwrap().starts_with("timed out"), "{e}");
    let st = attempt_status(&d, &run_id(&out));
    assert_eq!(st["timed_out"], true, "{st}");
    assert_eq!(st["signal"], 9, "ended by SIGKILL: {st}");
    // Timeout 1 s + grace 1 s: a step that died at the SIGTERM would have lasted ~1 s.
    let secs = st["seconds"].as_f64().unwrap();
    assert!((1.9..4.0).contains(&secs), "the step lasted {secs} s, expected timeout + grace = 2 s");
    assert!(!alive(&format!("^sleep {marker}")), "the step's sleep survived");
}

/// Starts the stubborn step, sends `sig` to the engine once the step runs, and checks the
/// engine stops it (SIGTERM ignored → SIGKILL after `--grace 1`) and exits 130.
fn engine_signal_stops_a_stubborn_step(sig: &str, marker: &str) {
    let d = scratch(&format!("eb_grace_{sig}"));
    let wf = write(&d, "s.yaml", &stubborn(marker, None));
    let child = spawn_run(&d, &wf, &["--grace", "1"]);
    let pattern = format!("^sleep {marker}");
    wait_until_alive(&pattern);
    let t0 = Instant::now();
    crate::execution::nix_kill(child.id(), sig);
    let out = child.wait_with_output().unwrap();
    let took = t0.elapsed();
    assert_eq!(out.status.code(), Some(130), "{}", show(&out));
    assert!(took >= Duration::from_millis(900), "the engine did not wait the grace period: {took:?}");
    assert!(took < Duration::from_secs(4), "the engine took {took:?} to stop a step with a 1 s grace");
    assert!(!alive(&pattern), "the step's process group survived SIG{sig}");
    let run = run_id(&out);
    assert_eq!(finished(&out)["state"], "cancelled");
    assert_eq!(final_states(&out)["hold"], "cancelled");
    let st = attempt_status(&d, &run);
    assert_eq!(st["cancelled"], true, "{st}");
    assert_eq!(st["signal"], 9, "ended by SIGKILL: {st}");
    assert_eq!(db_tasks(&d.join("runs"), &run)["hold"].0, "cancelled");
}

#[test]
fn sigterm_to_the_engine_kills_a_step_that_ignores_sigterm() {
    engine_signal_stops_a_stubborn_step("TERM", "58.2121");
}

#[test]
fn ctrl_c_to_the_engine_kills_a_step_that_ignores_sigterm() {
    engine_signal_stops_a_stubborn_step("INT", "57.1212");
}

// ---------------------------------------------------------------------------------------
// 3. Cache decisions and `why`.

fn digest_workflow(extra: &str) -> String {
    format!(
        r#"
name: digest
inputs:
  data: {{}}
steps:
  digest:
    run: [sh, -c, 'cat "$1" > copy.txt', sh, "${{{{ inputs.data }}}}"]
    out: {{ copy: copy.txt }}
{extra}"#
    )
}

fn why(d: &Path, wf: &Path, data: &Path) -> String {
    let out = twinflow()
        .current_dir(d)
        .arg("why")
        .arg(wf)
        .arg("digest")
        .arg("-i")
        .arg(format!("data={}", data.display()))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", show(&out));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn cache_follows_content_not_timestamps_and_why_names_the_change() {
    let d = scratch("eb_cache");
    let data = d.join("data.txt");
    std::fs::write(&data, "hello\n").unwrap();
    let wf = write(&d, "digest.yaml", &digest_workflow(""));
    let input = format!("data={}", data.display());
    let first = run_json(&d, &wf, &["-i", &input]);
    assert_eq!(final_states(&first)["digest"], "succeeded", "{}", show(&first));

    // Same content, new mtime: hashed again, found equal, still cached.
    let f = std::fs::File::options().write(true).open(&data).unwrap();
    f.set_modified(SystemTime::now() + Duration::from_secs(3600)).unwrap();
    drop(f);
    assert_eq!(why(&d, &wf, &data), "digest: up to date\n0 of 1 would run\n");
    let touched = run_json(&d, &wf, &["-i", &input]);
    assert_eq!(final_states(&touched)["digest"], "cached", "{}", show(&touched));

    // Same size, other content: the task runs again and `why` names the input.
    std::fs::write(&data, "jello\n").unwrap();
    let text = why(&d, &wf, &data);
    assert!(text.starts_with("digest: would run because\n"), "{text}");
    assert!(text.contains("  - input `inputs.data` changed (content "), "{text}");
    assert!(text.contains("  - no earlier result has its cache key; closest: `digest` of run "), "{text}");
    assert_eq!(text.lines().filter(|l| l.starts_with("  - ")).count(), 2, "only the input changed: {text}");
    assert!(text.ends_with("\n1 of 1 would run\n"), "{text}");
    let changed = run_json(&d, &wf, &["-i", &input]);
    assert_eq!(final_states(&changed)["digest"], "succeeded", "{}", show(&changed));
    assert_eq!(read(&task_dir(&d, &run_id(&changed), "digest/out/copy.txt")), "jello\n");

    // A changed definition (extra `args:`): `why` says the definition changed and shows it.
    let wf = write(&d, "digest.yaml", &digest_workflow("    args: [--extra]\n"));
    let text = why(&d, &wf, &data);
    assert!(
        text.contains(
            "  - the command changed: now `sh -c cat \"$1\" > copy.txt sh <inputs.data> --extra`, was `sh -c cat \"$1\" > copy.txt sh <inputs.data>`"
        ),
        "{text}"
    );
    let redefined = run_json(&d, &wf, &["-i", &input]);
    assert_eq!(final_states(&redefined)["digest"], "succeeded", "{}", show(&redefined));

    // A changed environment is a changed definition too.
    let wf = write(&d, "digest.yaml", &digest_workflow("    args: [--extra]\n    env: { MODE: fast }\n"));
    let text = why(&d, &wf, &data);
    assert!(text.contains("  - the step definition changed"), "{text}");
    let again = run_json(&d, &wf, &["-i", &input]);
    assert_eq!(final_states(&again)["digest"], "succeeded", "{}", show(&again));
    assert_eq!(why(&d, &wf, &data), "digest: up to date\n0 of 1 would run\n");
}

// ---------------------------------------------------------------------------------------
// 4. Plan formats.

#[test]
fn plan_formats_of_the_hello_example() {
    let root = repo_root();
    let root_s = root.display().to_string();
    let filters = vec![(root_s.as_str(), "[ROOT]"), (r"\b\d{8}-\d{6}-[0-9a-f]{4}\b", "[RUN_ID]")];
    for format in ["text", "dot", "mermaid", "json"] {
        let out =
            twinflow().current_dir(&root).args(["plan", "examples/hello.yaml", "--format", format]).output().unwrap();
        assert!(out.status.success(), "{}", show(&out));
        let text = String::from_utf8(out.stdout).unwrap();
        if format == "json" {
            serde_json::from_str::<serde_json::Value>(&text).expect("plan --format json is JSON");
        }
        insta::with_settings!({ filters => filters.clone() }, {
            insta::assert_snapshot!(format!("plan_hello_{format}"), text);
        });
    }
}

// ---------------------------------------------------------------------------------------
// 5. Cartesian scatter.

const CARTESIAN: &str = r#"
name: cart
steps:
  grid:
    scatter:
      method: cartesian
      over:
        a: [1, 2]
        b: [10, 20, 30]
    run: [sh, -c, 'printf "%s-%s" "$1" "$2" > combo.txt', sh, "${{ scatter.a }}", "${{ scatter.b }}"]
    out: { combo: combo.txt }
  all:
    run: [sh, -c, 'for f; do cat "$f"; echo; done > all.txt', sh, "${{ steps.grid.out.combo }}"]
    out: { all: all.txt }
"#;

#[test]
fn cartesian_scatter_runs_every_combination_once() {
    let d = scratch("eb_cartesian");
    let wf = write(&d, "cart.yaml", CARTESIAN);
    let want: std::collections::BTreeSet<String> =
        ["1-10", "1-20", "1-30", "2-10", "2-20", "2-30"].into_iter().map(String::from).collect();

    let plan = twinflow().current_dir(&d).arg("plan").arg(&wf).args(["--format", "json"]).output().unwrap();
    assert!(plan.status.success(), "{}", show(&plan));
    let v: serde_json::Value = serde_json::from_slice(&plan.stdout).unwrap();
    let members: Vec<&serde_json::Value> =
        v["tasks"].as_array().unwrap().iter().filter(|t| t["step"] == "grid").collect();
    assert_eq!(members.len(), 6, "{v:#}");
    let mut planned = std::collections::BTreeMap::new();
    for t in &members {
        let argv = t["command"]["argv"].as_array().unwrap();
        assert_eq!(argv.len(), 6, "{t}");
        planned.insert(
            t["task"].as_str().unwrap().to_string(),
            format!("{}-{}", argv[4].as_str().unwrap(), argv[5].as_str().unwrap()),
        );
    }
    assert_eq!(planned.values().cloned().collect::<std::collections::BTreeSet<_>>(), want, "{planned:?}");

    let out = run_json(&d, &wf, &[]);
    assert!(out.status.success(), "{}", show(&out));
    let st = final_states(&out);
    assert_eq!(st.len(), 7, "{st:?}");
    assert!(st.values().all(|s| s == "succeeded"), "{st:?}");
    let run = run_id(&out);
    for (task, combo) in &planned {
        let m = task.strip_prefix("grid[").and_then(|r| r.strip_suffix(']')).unwrap();
        assert_eq!(&read(&task_dir(&d, &run, &format!("grid/{m}/out/combo.txt"))), combo, "{task}");
    }
    let all = read(&task_dir(&d, &run, "all/out/all.txt"));
    let got: Vec<String> = all.lines().map(String::from).collect();
    assert_eq!(got.len(), 6, "{all}");
    assert_eq!(got.into_iter().collect::<std::collections::BTreeSet<_>>(), want);
}

#[test]
fn dotproduct_length_mismatch_from_parameters_is_rejected() {
    // The fixture `scatter-length-mismatch.yaml` covers literal lists; here the lengths come
    // from `-p` values.
    let d = scratch("eb_dotproduct");
    let wf = write(
        &d,
        "dp.yaml",
        r#"
name: dp
params:
  a: { type: list, items: int, default: [1, 2] }
  b: { type: list, items: int, default: [1, 2] }
steps:
  s:
    scatter:
      over: { x: "${{ params.a }}", y: "${{ params.b }}" }
    run: [echo, "${{ scatter.x }}", "${{ scatter.y }}"]
"#,
    );
    let ok = twinflow().current_dir(&d).arg("validate").arg(&wf).output().unwrap();
    assert!(ok.status.success(), "{}", show(&ok));
    let out = twinflow().current_dir(&d).arg("run").arg(&wf).args(["-p", "b=1,2,3"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("scatter lists differ in length: `x` has 2, `y` has 3"), "{err}");
    assert!(!d.join("runs/twinflow.db").exists() || db_run_count(&d) == 0, "an invalid run was recorded");
}

fn db_run_count(d: &Path) -> i64 {
    let c = rusqlite::Connection::open(d.join("runs/twinflow.db")).unwrap();
    c.query_row("SELECT COUNT(*) FROM runs", [], |r| r.get(0)).unwrap()
}

// ---------------------------------------------------------------------------------------
// 6. `when` on upstream values, and skip propagation.

const GATE: &str = r#"
name: gate
params:
  flag: { type: bool, default: false }
steps:
  check:
    run: [sh, -c, 'echo "$1" > flag.txt', sh, "${{ params.flag }}"]
    values: { flag: flag.txt }
  act:
    when: ${{ steps.check.values.flag }}
    run: [sh, -c, 'echo acted > acted.txt']
    out: { acted: acted.txt }
  use-act:
    run: [cat, "${{ steps.act.out.acted }}"]
  after-act:
    after: [act]
    run: ["true"]
  independent:
    after: [check]
    run: ["true"]
"#;

#[test]
fn when_on_an_upstream_value_skips_the_step_and_its_dependants() {
    let d = scratch("eb_when_values");
    let wf = write(&d, "gate.yaml", GATE);
    let off = run_json(&d, &wf, &["-p", "flag=false"]);
    assert!(off.status.success(), "a skip is not a failure: {}", show(&off));
    let st = final_states(&off);
    assert_eq!(st["check"], "succeeded");
    assert_eq!(st["act"], "skipped");
    assert_eq!(st["use-act"], "skipped", "{st:?}");
    assert_eq!(st["after-act"], "skipped", "{st:?}");
    assert_eq!(st["independent"], "succeeded");
    let msgs: std::collections::BTreeMap<String, String> = events(&off)
        .into_iter()
        .filter(|e| e["event"] == "task-finished" && e["message"].is_string())
        .map(|e| (e["task"].as_str().unwrap().to_string(), e["message"].as_str().unwrap().to_string()))
        .collect();
    assert_eq!(msgs["act"], "`when` is false: ${{ steps.check.values.flag }}");
    assert_eq!(msgs["use-act"], "upstream `act` was skipped");
    assert_eq!(finished(&off)["counts"]["skipped"], 3);

    let on = run_json(&d, &wf, &["-p", "flag=true"]);
    assert!(on.status.success(), "{}", show(&on));
    let st = final_states(&on);
    assert_eq!(st["check"], "succeeded", "the flag changed, so `check` ran again");
    for t in ["act", "use-act", "after-act"] {
        assert_eq!(st[t], "succeeded", "{t}: {st:?}");
    }
    assert_eq!(st["independent"], "cached");
}

// ---------------------------------------------------------------------------------------
// 7 and 8. `env:`, `args:`, hostile values, and the per-step directory.

const ENV_ARGS: &str = r#"
name: envargs
params:
  x: { type: string }
steps:
  show:
    env: { FOO: "${{ params.x }}", BAR: plain }
    run: [sh, -c, 'printf "%s" "$FOO" > foo.txt; printf "%s\n" "$@" > args.txt; env -0 > env.bin; echo to-stdout; echo to-stderr >&2', sh, first]
    args: [second, "${{ params.x }}"]
    out: { foo: foo.txt, args: args.txt }
"#;

#[test]
fn env_and_args_reach_the_step_verbatim_and_the_step_directory_records_them() {
    let d = scratch("eb_env_args");
    let canary = d.join("x");
    std::fs::write(&canary, "still here").unwrap();
    let pwned = d.join("pwned");
    let hostile =
        format!("$(touch {}); rm -rf {}; `touch {}` \"' \\", pwned.display(), canary.display(), pwned.display());
    let wf = write(&d, "envargs.yaml", ENV_ARGS);
    let t0 = SystemTime::now();
    let out = run_json(&d, &wf, &["-p", &format!("x={hostile}")]);
    let t1 = SystemTime::now();
    assert!(out.status.success(), "{}", show(&out));
    let run = run_id(&out);
    let dir = task_dir(&d, &run, "show/out");

    // 7: `env:` is visible, `args:` come after `run`, the hostile value is one argument.
    assert_eq!(read(&dir.join("foo.txt")), hostile);
    assert_eq!(read(&dir.join("args.txt")), format!("first\nsecond\n{hostile}\n"));
    assert!(!pwned.exists(), "a parameter value was executed");
    assert_eq!(read(&canary), "still here", "a parameter value was executed");

    // 8: the manifest has the exact argv and environment, and the step saw that environment.
    let meta = dir.join(".twinflow");
    let m = json_file(&meta.join("manifest.json"));
    assert_eq!(m["task"], "show");
    assert_eq!(m["run_id"], run.as_str());
    let script = "printf \"%s\" \"$FOO\" > foo.txt; printf \"%s\\n\" \"$@\" > args.txt; env -0 > env.bin; echo to-stdout; echo to-stderr >&2";
    assert_eq!(m["argv"], serde_json::json!(["sh", "-c", script, "sh", "first", "second", hostile]));
    let env = m["env"].as_object().expect("env is an object");
    let attempt_dir = task_dir(&d, &run, "show/attempt-1");
    let abs_attempt = std::fs::canonicalize(d.join("runs")).unwrap().join(&run).join("steps/show/attempt-1");
    let want = [
        ("FOO", hostile.clone()),
        ("BAR", "plain".to_string()),
        ("TWINFLOW_RUN_ID", run.clone()),
        ("TWINFLOW_STEP", "show".to_string()),
        ("TWINFLOW_ATTEMPT", "1".to_string()),
        ("TWINFLOW_STEP_DIR", abs_attempt.display().to_string()),
        ("TWINFLOW_MANIFEST", abs_attempt.join(".twinflow/manifest.json").display().to_string()),
        ("TWINFLOW_THREADS", "1".to_string()),
        ("TWINFLOW_RANKS", "1".to_string()),
        ("OMP_NUM_THREADS", "1".to_string()),
        ("TWINFLOW_OUT_FOO", abs_attempt.join("foo.txt").display().to_string()),
        ("TWINFLOW_OUT_ARGS", abs_attempt.join("args.txt").display().to_string()),
    ];
    for (k, v) in &want {
        assert_eq!(env.get(*k).and_then(|x| x.as_str()), Some(v.as_str()), "manifest env `{k}`: {env:?}");
    }
    assert!(!env.contains_key("TWINFLOW_MEMBER"), "not a scattered step: {env:?}");
    let seen: std::collections::BTreeMap<String, String> = std::fs::read(dir.join("env.bin"))
        .unwrap()
        .split(|b| *b == 0)
        .filter_map(|kv| String::from_utf8_lossy(kv).split_once('=').map(|(k, v)| (k.to_string(), v.to_string())))
        .collect();
    for (k, v) in env {
        assert_eq!(seen.get(k).map(String::as_str), v.as_str(), "the step saw another `{k}`");
    }
    // The rest of what the step saw is the inherited environment, snapshotted once in the
    // run directory (owner-only: it may hold credentials) and named by the manifest.
    let snap_name = m["inherited_env"].as_str().expect("manifest names the environment snapshot");
    let snap_path = d.join("runs").join(&run).join(snap_name);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&snap_path).unwrap().permissions().mode() & 0o777, 0o600);
    let snap = json_file(&snap_path);
    let mut exact: std::collections::BTreeMap<String, String> = snap["variables"]
        .as_object()
        .expect("snapshot has its variables")
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
        .collect();
    exact.extend(env.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string())));
    // Variables that look like credentials are only named in the snapshot; the step got them.
    let left_out: Vec<&str> = snap["left_out"].as_array().unwrap().iter().filter_map(|n| n.as_str()).collect();
    for name in &left_out {
        assert!(seen.contains_key(*name), "`{name}` was left out of the step's environment");
    }
    // `sh` itself adds PWD, SHLVL and `_`; everything else must match exactly.
    let shell_own = ["PWD", "SHLVL", "_", "OLDPWD"];
    let strip = |m: &std::collections::BTreeMap<String, String>| -> std::collections::BTreeMap<String, String> {
        m.iter()
            .filter(|(k, _)| !shell_own.contains(&k.as_str()) && !left_out.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    };
    assert_eq!(strip(&seen), strip(&exact), "manifest env + snapshot = the step's exact environment");
    assert!(!attempt_dir.exists(), "the attempt directory was published as `out`");

    // status.json: exit code and start/end times within the run.
    let st = json_file(&meta.join("status.json"));
    assert_eq!(st["exit_code"], 0, "{st}");
    assert_eq!(st["signal"], serde_json::Value::Null);
    assert_eq!(st["timed_out"], false);
    let ms = |t: SystemTime| t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_millis() as u64;
    let (s, f) = (st["started_ms"].as_u64().unwrap(), st["finished_ms"].as_u64().unwrap());
    assert!(ms(t0) <= s && s <= f && f <= ms(t1), "times {s}..{f} outside the run {}..{}", ms(t0), ms(t1));
    // Standard output and error are captured apart.
    assert_eq!(read(&meta.join("stdout")), "to-stdout\n");
    assert_eq!(read(&meta.join("stderr")), "to-stderr\n");
}

// ---------------------------------------------------------------------------------------
// 9. Bad `-p` and `-i` values.

const TYPED: &str = r#"
name: typed
params:
  members: { type: int, default: 3, min: 1, max: 1000 }
  rate: { type: float, default: 0.5 }
  flag: { type: bool, default: false }
  mode: { type: enum, values: [quick, full], default: quick }
  rates: { type: list, items: float, default: [1.0] }
  needed: { type: int }
inputs:
  data: { default: data.txt }
steps:
  s:
    run: [echo, "${{ params.members }}", "${{ params.rate }}", "${{ params.flag }}", "${{ params.mode }}", "${{ params.rates }}", "${{ params.needed }}", "${{ inputs.data }}"]
"#;

/// `twinflow run` with `args` must exit 2 and report each `(param, message)` on stderr.
fn rejects(d: &Path, wf: &Path, args: &[&str], want: &[(&str, &str)]) {
    let out = twinflow().current_dir(d).arg("run").arg(wf).args(args).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{args:?}: {}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    for (flag, msg) in want {
        let line = format!("error: {flag}: {msg}\n");
        assert!(err.contains(&line), "{args:?}: no `{line}` in\n{err}");
    }
    assert!(!err.contains("panicked"), "{err}");
    let n = err.lines().filter(|l| l.starts_with("error: ")).count();
    assert_eq!(n, want.len(), "{args:?}: one error per bad value, no follow-up errors:\n{err}");
}

#[test]
fn bad_param_and_input_values_exit_2_naming_the_parameter() {
    let d = scratch("eb_bad_params");
    let wf = write(&d, "typed.yaml", TYPED);
    let ok = ["-p", "needed=1"];
    let with =
        |extra: &[&'static str]| -> Vec<&'static str> { ok.iter().copied().chain(extra.iter().copied()).collect() };
    rejects(&d, &wf, &with(&["-p", "members=abc"]), &[("-p members", "expected an integer, found `abc`")]);
    rejects(&d, &wf, &with(&["-p", "members=2.5"]), &[("-p members", "expected an integer, found `2.5`")]);
    rejects(&d, &wf, &with(&["-p", "members=0"]), &[("-p members", "0 is below the minimum 1")]);
    rejects(&d, &wf, &with(&["-p", "members=1001"]), &[("-p members", "1001 is above the maximum 1000")]);
    rejects(&d, &wf, &with(&["-p", "rate=fast"]), &[("-p rate", "expected a number, found `fast`")]);
    rejects(&d, &wf, &with(&["-p", "flag=yes"]), &[("-p flag", "expected `true` or `false`, found `yes`")]);
    rejects(&d, &wf, &with(&["-p", "mode=fast"]), &[("-p mode", "`fast` is not one of `quick`, `full`")]);
    rejects(&d, &wf, &with(&["-p", "memebrs=3"]), &[("-p memebrs", "workflow `typed` has no parameter `memebrs`")]);
    rejects(&d, &wf, &with(&["-p", "rates=1.5,abc"]), &[("-p rates", "expected a number, found `abc`")]);
    rejects(
        &d,
        &wf,
        &with(&["-p", r#"rates=[1.5,"x"]"#]),
        &[("-p rates", r#"element 1: expected a number, found `"x"`"#)],
    );
    rejects(&d, &wf, &with(&["-i", "dta=x.txt"]), &[("-i dta", "workflow `typed` has no input `dta`")]);
    // Several bad values: every one is reported, in one go.
    rejects(
        &d,
        &wf,
        &with(&["-p", "members=0", "-p", "mode=fast", "-i", "dta=x"]),
        &[
            ("-p members", "0 is below the minimum 1"),
            ("-p mode", "`fast` is not one of `quick`, `full`"),
            ("-i dta", "workflow `typed` has no input `dta`"),
        ],
    );
    // A bad value for a parameter without a default is one error (not also "not given").
    rejects(&d, &wf, &["-p", "needed=many"], &[("-p needed", "expected an integer, found `many`")]);
    // The did-you-mean hint for a misspelt name.
    let out = twinflow().current_dir(&d).arg("run").arg(&wf).args(with(&["-p", "memebrs=3"])).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("help: did you mean `members`?"), "{}", show(&out));
    // Not `NAME=VALUE` at all.
    let out = twinflow().current_dir(&d).arg("run").arg(&wf).args(["-p", "members"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert_eq!(String::from_utf8_lossy(&out.stderr), "error: `members` is not `NAME=VALUE` (-p)\n");
    assert!(!d.join("runs/twinflow.db").exists() || db_run_count(&d) == 0, "an invalid run was recorded");
}

// ---------------------------------------------------------------------------------------
// 10. `status` without a run lists the runs.

#[test]
fn status_shows_the_time_attempts_ran_not_the_retry_wait() {
    let d = scratch("eb_status_times");
    let counter = d.join("count");
    let wf = write(
        &d,
        "wait.yaml",
        r#"
name: waits
params:
  counter: { type: path }
steps:
  flaky:
    # Attempt 1 fails at once; attempt 2, 1.5 s later, succeeds at once.
    run: [sh, -c, 'echo x >> "$1"; test "$(wc -l < "$1")" -ge 2', sh, "${{ params.counter }}"]
    retry: { count: 1, backoff: 1500ms }
"#,
    );
    let out = run_json(&d, &wf, &["-p", &format!("counter={}", counter.display())]);
    assert!(out.status.success(), "{}", show(&out));
    let run = run_id(&out);
    let st = twinflow().current_dir(&d).args(["status", &run]).output().unwrap();
    assert!(st.status.success(), "{}", show(&st));
    let text = String::from_utf8_lossy(&st.stdout);
    let line = text.lines().find(|l| l.trim_start().starts_with("flaky")).expect("a line for the task");
    let secs: f64 = line
        .split_whitespace()
        .find_map(|w| w.strip_suffix('s').and_then(|n| n.parse().ok()))
        .unwrap_or_else(|| panic!("no time in {line:?}"));
    // Two `sh` runs take milliseconds; the wait between them is 1.5 s.
    assert!(secs < 1.0, "the retry wait was counted: {line:?}");
    let js = twinflow().current_dir(&d).args(["status", &run, "--json"]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&js.stdout).unwrap();
    let t = &v["tasks"][0];
    let (ran, span) =
        (t["ran_ms"].as_i64().unwrap(), t["finished_at"].as_i64().unwrap() - t["started_at"].as_i64().unwrap());
    assert!(ran < 1000 && span >= 1500, "ran {ran} ms within a span of {span} ms");
}

#[test]
fn status_of_a_directory_without_runs_lists_none_and_succeeds_but_a_named_run_is_an_error() {
    let d = scratch("eb_status_empty");
    let out = twinflow().current_dir(&d).arg("status").output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(out.stdout.is_empty(), "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no runs in `runs` yet"), "{}", show(&out));
    let out = twinflow().current_dir(&d).args(["status", "--json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap(), serde_json::json!([]));
    let out = twinflow().current_dir(&d).args(["status", "latest"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no runs in `runs`"), "{}", show(&out));
    assert!(!d.join("runs").exists(), "status created a runs directory");
}

#[test]
fn status_without_a_run_lists_every_run_newest_first() {
    let d = scratch("eb_status_list");
    let good = write(&d, "good.yaml", "name: good\nsteps:\n  s: { run: [\"true\"] }\n");
    let bad = write(&d, "bad.yaml", "name: bad\nsteps:\n  s: { run: [\"false\"] }\n");
    let a = run_json(&d, &good, &[]);
    let b = run_json(&d, &bad, &[]);
    let (ra, rb) = (run_id(&a), run_id(&b));
    let out = twinflow().current_dir(&d).arg("status").output().unwrap();
    assert!(out.status.success(), "{}", show(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<Vec<&str>> = text.lines().map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert_eq!(lines[0], ["RUN", "WORKFLOW", "STATE", "STARTED", "(UTC)", "TOOK", "TASKS", "PARAMS"], "{text}");
    // Run ids sort by start time; the later run is listed first.
    assert_eq!(lines[1][..3], [rb.as_str(), "bad", "failed"], "{text}");
    assert_eq!(lines[2][..3], [ra.as_str(), "good", "succeeded"], "{text}");
    for l in &lines[1..] {
        assert!(l[3].len() == 10 && l[3].as_bytes()[4] == b'-' && l[4].len() == 8, "date and time: {l:?}");
    }
    // How long each took, its tasks, its parameters (none given).
    for l in &lines[1..] {
        let took: f64 = l[5].strip_suffix('s').and_then(|t| t.parse().ok()).unwrap_or(-1.0);
        assert!((0.0..30.0).contains(&took), "{l:?}");
    }
    assert_eq!(lines[1][6..], ["0/1", "done,", "1", "failed", "-"], "{text}");
    assert_eq!(lines[2][6..], ["1/1", "done", "-"], "{text}");
    // `--local-time`: the same instants in the local time zone (a POSIX TZ nine hours east
    // of UTC, so no time-zone database is needed), named.
    let out = twinflow().current_dir(&d).env("TZ", "JST-9").args(["status", "--local-time"]).output().unwrap();
    assert!(out.status.success(), "{}", show(&out));
    let local = String::from_utf8(out.stdout).unwrap();
    let llines: Vec<Vec<&str>> = local.lines().map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(llines[0], ["RUN", "WORKFLOW", "STATE", "STARTED", "(local)", "TOOK", "TASKS", "PARAMS"], "{local}");
    for (u, l) in lines[1..].iter().zip(&llines[1..]) {
        assert_eq!(l[5], "JST", "{l:?}");
        let at = |d: &str, t: &str| -> jiff::civil::DateTime { format!("{d}T{t}").parse().unwrap() };
        let shift = at(l[3], l[4]).duration_since(at(u[3], u[4]));
        assert_eq!(shift, jiff::SignedDuration::from_hours(9), "UTC {u:?}, local {l:?}");
    }
}

// ---------------------------------------------------------------------------------------
// 11. Human output without a terminal, and logs.

#[test]
fn without_json_the_run_prints_plain_lines_on_stderr() {
    let d = scratch("eb_human");
    let wf = write(
        &d,
        "human.yaml",
        "name: human\nsteps:\n  one: { run: [\"true\"] }\n  bad: { run: [sh, -c, 'echo broken >&2; exit 3'] }\n",
    );
    // No NO_COLOR: output to a pipe must be plain by itself.
    let out =
        twinflow().env_remove("NO_COLOR").current_dir(&d).args(["run"]).arg(&wf).arg("--keep-going").output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(out.stdout.is_empty(), "events go to stderr without --json: {}", show(&out));
    let err = String::from_utf8(out.stderr.clone()).unwrap();
    assert!(!err.contains('\x1b'), "terminal escapes in piped output:\n{err:?}");
    let lines: Vec<&str> = err.lines().collect();
    let run = lines[0].strip_prefix("starting run ").and_then(|r| r.strip_suffix(" of `human`: 2 tasks"));
    let run = run.unwrap_or_else(|| panic!("first line: {err}"));
    assert!(lines.iter().any(|l| l.starts_with("  succeeded one (") && l.ends_with("s)")), "{err}");
    assert!(lines.iter().any(|l| l.starts_with("  failed bad: exit code 3")), "{err}");
    assert!(lines.iter().any(|l| l.starts_with("failed: bad: exit code 3")), "failure summary: {err}");
    assert!(
        lines.iter().any(|l| *l == format!("hint: continue with `twinflow run --resume {run}`")),
        "how to resume: {err}"
    );
    let summary =
        lines.iter().find(|l| l.starts_with(&format!("run {run} failed in "))).unwrap_or_else(|| panic!("{err}"));
    assert!(
        summary.ends_with("s: 1 succeeded, 0 cached, 0 skipped, 1 failed, 0 upstream-failed, 0 cancelled, 0 not run"),
        "{summary}"
    );
}

fn debug_lines(out: &Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| l.contains("DEBUG") && l.contains("submitted") && l.contains("task=one"))
        .map(String::from)
        .collect()
}

#[test]
fn log_flag_and_rust_log_produce_tracing_lines() {
    let d = scratch("eb_logs");
    let wf = write(&d, "logs.yaml", "name: logs\nsteps:\n  one: { run: [\"true\"] }\n");
    let quiet = run_json(&d, &wf, &["--no-cache"]);
    assert!(debug_lines(&quiet).is_empty(), "debug lines at the default level: {}", show(&quiet));
    let flag = twinflow()
        .env_remove("NO_COLOR")
        .current_dir(&d)
        .arg("run")
        .arg(&wf)
        .args(["--json", "--no-cache", "--log", "debug"])
        .output()
        .unwrap();
    assert!(flag.status.success(), "{}", show(&flag));
    let lines = debug_lines(&flag);
    assert_eq!(lines.len(), 1, "{}", show(&flag));
    assert!(!lines[0].contains('\x1b'), "terminal escapes in a piped log: {:?}", lines[0]);
    let env = twinflow()
        .current_dir(&d)
        .env("RUST_LOG", "debug")
        .arg("run")
        .arg(&wf)
        .args(["--json", "--no-cache"])
        .output()
        .unwrap();
    assert!(env.status.success(), "{}", show(&env));
    assert_eq!(debug_lines(&env).len(), 1, "{}", show(&env));
    // Logs never mix into the JSON event stream.
    assert!(String::from_utf8_lossy(&env.stdout).lines().all(|l| serde_json::from_str::<serde_json::Value>(l).is_ok()));
}

// ---------------------------------------------------------------------------------------
// 12. The run database.

#[test]
fn run_database_is_wal_and_records_attempts_and_transitions() {
    let d = scratch("eb_db");
    let counter = d.join("count");
    let wf = write(
        &d,
        "retry.yaml",
        r#"
name: retrydb
params:
  counter: { type: path }
steps:
  flaky:
    # Attempts 1 and 2 exit 7, attempt 3 succeeds; each logs the attempt it was told.
    run: [sh, -c, 'echo "$TWINFLOW_ATTEMPT" >> "$1"; test "$(wc -l < "$1")" -ge 3 || exit 7', sh, "${{ params.counter }}"]
    retry: { count: 3, backoff: 50ms }
"#,
    );
    let out = run_json(&d, &wf, &["-p", &format!("counter={}", counter.display())]);
    assert!(out.status.success(), "{}", show(&out));
    let run = run_id(&out);
    assert_eq!(read(&counter), "1\n2\n3\n", "TWINFLOW_ATTEMPT counts attempts");

    let c = rusqlite::Connection::open(d.join("runs/twinflow.db")).unwrap();
    let mode: String = c.query_row("PRAGMA journal_mode", [], |r| r.get(0)).unwrap();
    assert_eq!(mode, "wal");
    let (state, attempts): (String, u32) = c
        .query_row("SELECT state, attempts FROM tasks WHERE run_id = ?1 AND task = 'flaky'", [&run], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!((state.as_str(), attempts), ("succeeded", 3));
    let run_state: String = c.query_row("SELECT state FROM runs WHERE id = ?1", [&run], |r| r.get(0)).unwrap();
    assert_eq!(run_state, "succeeded");

    let mut st = c
        .prepare(
            "SELECT attempt, state, exit_code, job_id, started_at, finished_at FROM attempts WHERE run_id = ?1 AND task = 'flaky' ORDER BY attempt",
        )
        .unwrap();
    type Row = (u32, String, Option<i32>, Option<String>, Option<i64>, Option<i64>);
    let rows: Vec<Row> = st
        .query_map([&run], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let summary: Vec<(u32, &str, Option<i32>)> = rows.iter().map(|r| (r.0, r.1.as_str(), r.2)).collect();
    assert_eq!(summary, [(1, "failed", Some(7)), (2, "failed", Some(7)), (3, "succeeded", Some(0))]);
    for r in &rows {
        assert!(r.3.as_deref().is_some_and(|j| j.parse::<u32>().is_ok()), "local job id is a pid: {r:?}");
        assert!(matches!((r.4, r.5), (Some(a), Some(b)) if a <= b), "{r:?}");
    }
    assert!(rows[0].5 <= rows[1].4 && rows[1].5 <= rows[2].4, "attempts overlap: {rows:?}");

    let mut st = c
        .prepare("SELECT state, at, detail FROM transitions WHERE run_id = ?1 AND task = 'flaky' ORDER BY rowid")
        .unwrap();
    let tr: Vec<(String, i64, Option<String>)> =
        st.query_map([&run], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).unwrap().collect::<Result<_, _>>().unwrap();
    let states: Vec<&str> = tr.iter().map(|t| t.0.as_str()).collect();
    assert_eq!(states, ["running", "pending", "running", "pending", "running", "succeeded"], "{tr:?}");
    assert!(tr.windows(2).all(|w| w[0].1 <= w[1].1), "transition times go backwards: {tr:?}");
    let running: Vec<_> = tr.iter().filter(|t| t.0 == "running").collect();
    for (t, r) in running.iter().zip(&rows) {
        assert_eq!(t.2, r.3, "a running transition names its job: {tr:?}");
    }
    for (i, t) in tr.iter().filter(|t| t.0 == "pending").enumerate() {
        let detail = t.2.as_deref().unwrap_or_default();
        assert!(
            detail.starts_with(&format!("attempt {} failed: exit code 7; retry in", i + 1)),
            "a retry wait says which attempt failed and why: {tr:?}"
        );
    }
}
