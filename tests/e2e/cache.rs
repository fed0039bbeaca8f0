//! The content-addressed cache, results easy to find, and safe clean-up (issue 14,
//! "Operating twinflow"): the usability scenarios, scripted.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Output;

use crate::support::{final_states, finished, run_id, run_json, scratch, show, twinflow, write};

/// A cartesian sweep of `seeds` × `rains`, one member writing `r.txt`, and a gather.
const SWEEP: &str = r#"
name: sweep
params:
  seeds: { type: list, items: int, default: [1, 2, 3, 4, 5] }
  rains: { type: list, items: int, default: [10, 20, 30, 40] }
steps:
  sim:
    scatter:
      method: cartesian
      over: { seed: "${{ params.seeds }}", rain: "${{ params.rains }}" }
    run: [sh, -c, 'echo "$1 $2" > r.txt', sim, "${{ scatter.seed }}", "${{ scatter.rain }}"]
    out: { r: r.txt }
  total:
    run: [sh, -c, 'cat "$@" > all.txt', total, "${{ steps.sim.out.r }}"]
    out: { all: all.txt }
outputs:
  all: "${{ steps.total.out.all }}"
"#;

/// How many tasks of step `step` ended in each state.
fn counts(out: &Output, step: &str) -> BTreeMap<String, usize> {
    let mut c = BTreeMap::new();
    for (task, state) in final_states(out) {
        if task == step || task.starts_with(&format!("{step}[")) {
            *c.entry(state).or_insert(0) += 1;
        }
    }
    c
}

fn states(pairs: &[(&str, usize)]) -> BTreeMap<String, usize> {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

/// `twinflow why` with each member's scatter values dropped from its line
/// (`sim[4] seed=1 rain=50: would run because` → `sim[4]: would run because`): these tests
/// are about which members run; `reports.rs` tests the labels.
fn why(d: &Path, wf: &Path, args: &[&str]) -> String {
    let out = twinflow().current_dir(d).arg("why").arg(wf).args(args).output().unwrap();
    assert!(out.status.success(), "{}", show(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    let unlabelled = |l: &str| -> String {
        match (l.starts_with(' '), l.split_once("] "), l.rsplit_once(": ")) {
            (false, Some((task, rest)), Some((_, verdict))) if rest.contains('=') && !task.contains(' ') => {
                format!("{task}]: {verdict}")
            }
            _ => l.to_string(),
        }
    };
    text.lines().map(|l| unlabelled(l) + "\n").collect()
}

/// What each member of the sweep wrote, read from where its result is (this run's or an
/// earlier one's directory).
fn member_results(out: &Output) -> Vec<String> {
    member_results_named(out, "r.txt")
}

/// What each member of `sim` wrote to `file` (see [`member_results`]).
fn member_results_named(out: &Output, file: &str) -> Vec<String> {
    let mut rows: Vec<(u32, String)> = crate::support::events(out)
        .into_iter()
        .filter(|e| e["event"] == "task-finished" && e["task"].as_str().is_some_and(|t| t.starts_with("sim[")))
        .map(|e| {
            let t = e["task"].as_str().unwrap();
            let m: u32 = t[4..t.len() - 1].parse().unwrap();
            let dir = e["dir"].as_str().unwrap();
            (m, std::fs::read_to_string(Path::new(dir).join(file)).unwrap().trim().to_string())
        })
        .collect();
    rows.sort();
    rows.into_iter().map(|(_, r)| r).collect()
}

#[test]
fn a_sweep_extended_by_one_value_runs_exactly_the_new_members() {
    let d = scratch("cache/extend");
    let wf = write(&d, "sweep.yaml", SWEEP);
    let first = run_json(&d, &wf, &[]);
    assert!(first.status.success(), "{}", show(&first));
    assert_eq!(counts(&first, "sim"), states(&[("succeeded", 20)]));

    // One more rain value: 25 members, re-indexed (the last variable varies fastest), of
    // which only the 5 with rain 50 are new.
    let more = ["-p", "rains=10,20,30,40,50"];
    let text = why(&d, &wf, &more);
    assert!(text.ends_with("\n6 of 26 would run\n"), "{text}");
    // Only the members that run are listed (the sweep is big), in member order, each with
    // only the argument that differs from the closest earlier result.
    let listed: Vec<&str> = text.lines().filter(|l| l.ends_with(": would run because")).collect();
    assert_eq!(
        listed,
        [
            "sim[4]: would run because",
            "sim[9]: would run because",
            "sim[14]: would run because",
            "sim[19]: would run because",
            "sim[24]: would run because",
            "total: would run because"
        ],
        "{text}"
    );
    // Each new member: the closest earlier result (one with the same seed; which one of
    // those is the newest depends on the order the members finished) and the one argument.
    for m in [4, 9, 14, 19, 24] {
        let block: Vec<&str> =
            text.split(&format!("sim[{m}]: would run because\n")).nth(1).unwrap().lines().take(3).collect();
        assert!(block[0].starts_with("  - no earlier result has its cache key; closest: `sim["), "{text}");
        let was: u32 = block[1]
            .strip_prefix("  - argv[5] changed: `")
            .and_then(|r| r.strip_suffix("` → `50`"))
            .unwrap_or_else(|| panic!("{text}"))
            .parse()
            .unwrap();
        assert!([10, 20, 30, 40].contains(&was), "{text}");
        assert!(!block[2].starts_with("  - "), "only the rain differs: {text}");
    }
    // One task, by name.
    let one = why(&d, &wf, &["sim[7]", "-p", "rains=10,20,30,40,50"]);
    assert_eq!(one, "sim[7]: up to date\n0 of 1 would run\n");

    let second = run_json(&d, &wf, &more);
    assert!(second.status.success(), "{}", show(&second));
    assert_eq!(counts(&second, "sim"), states(&[("cached", 20), ("succeeded", 5)]), "{}", show(&second));
    let st = final_states(&second);
    for m in [4, 9, 14, 19, 24] {
        assert_eq!(st[&format!("sim[{m}]")], "succeeded", "{st:?}");
    }
    assert_eq!(st["total"], "succeeded");
    // Every member's result is its own combination, wherever it was produced.
    let want: Vec<String> = (1..=5).flat_map(|s| [10, 20, 30, 40, 50].map(move |r| format!("{s} {r}"))).collect();
    assert_eq!(member_results(&second), want);
    assert_eq!(why(&d, &wf, &["sim", "-p", "rains=10,20,30,40,50"]).lines().last(), Some("0 of 25 would run"));
}

#[test]
fn a_reordered_or_reverted_sweep_runs_nothing_while_its_results_exist() {
    let d = scratch("cache/reorder");
    let wf = write(&d, "sweep.yaml", SWEEP);
    let first = run_json(&d, &wf, &["-p", "seeds=1,2,3", "-p", "rains=10,20"]);
    assert!(first.status.success(), "{}", show(&first));

    // Reordered: every combination has run, under another member index.
    let reordered = ["-p", "seeds=3,1,2", "-p", "rains=20,10"];
    assert!(why(&d, &wf, &reordered).ends_with("\n1 of 7 would run\n"), "only the gather's input order changed");
    let out = run_json(&d, &wf, &reordered);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(counts(&out, "sim"), states(&[("cached", 6)]), "{}", show(&out));
    let results = member_results(&out);
    assert_eq!(results, ["3 20", "3 10", "1 20", "1 10", "2 20", "2 10"]);

    // Without a gather (whose input list changed order, so it runs), nothing at all runs.
    let members_only = write(&d, "members.yaml", &SWEEP[..SWEEP.find("  total:").unwrap()]);
    assert!(run_json(&d, &members_only, &["-p", "seeds=1,2,3", "-p", "rains=10,20"]).status.success());
    let text = why(&d, &members_only, &reordered);
    assert!(text.ends_with("\n0 of 6 would run\n"), "{text}");
    let out = run_json(&d, &members_only, &reordered);
    assert_eq!(counts(&out, "sim"), states(&[("cached", 6)]), "{}", show(&out));

    // Changed to another value and back: the first results still exist, nothing runs.
    let changed = run_json(&d, &wf, &["-p", "seeds=1,2,4", "-p", "rains=10,20"]);
    assert_eq!(counts(&changed, "sim"), states(&[("cached", 4), ("succeeded", 2)]), "{}", show(&changed));
    let reverted = run_json(&d, &wf, &["-p", "seeds=1,2,3", "-p", "rains=10,20"]);
    assert!(reverted.status.success(), "{}", show(&reverted));
    assert_eq!(counts(&reverted, "sim"), states(&[("cached", 6)]), "{}", show(&reverted));
    assert_eq!(counts(&reverted, "total"), states(&[("cached", 1)]), "{}", show(&reverted));
}

#[test]
fn a_run_directory_deleted_by_hand_is_not_handed_out_by_the_cache() {
    let d = scratch("cache/deleted");
    let wf = write(&d, "sweep.yaml", SWEEP);
    let args = ["-p", "seeds=1,2", "-p", "rains=10"];
    let first = run_json(&d, &wf, &args);
    assert!(first.status.success(), "{}", show(&first));
    let again = run_json(&d, &wf, &args);
    assert_eq!(counts(&again, "sim"), states(&[("cached", 2)]));
    std::fs::remove_dir_all(d.join("runs").join(run_id(&first))).unwrap();
    let text = why(&d, &wf, &["sim", "-p", "seeds=1,2", "-p", "rains=10"]);
    assert!(text.contains("sim[0]: would run because\n  - its outputs are gone from `"), "{text}");
    assert!(text.ends_with("\n2 of 2 would run\n"), "{text}");
    // `twinflow outputs` of the run that reused them says they are gone.
    let o = twinflow().current_dir(&d).args(["outputs", &run_id(&again)]).output().unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains(&format!("  sim[0] cached (reused from run {}): its result directory `", run_id(&first))),
        "{text}"
    );
    assert!(text.contains("` is gone"), "{text}");
    let third = run_json(&d, &wf, &args);
    assert!(third.status.success(), "{}", show(&third));
    assert_eq!(counts(&third, "sim"), states(&[("succeeded", 2)]), "{}", show(&third));
    assert_eq!(member_results(&third), ["1 10", "2 10"]);
}

#[test]
fn members_that_differ_only_in_an_in_value_do_not_share_a_result() {
    let d = scratch("cache/in_values");
    let wf = write(
        &d,
        "in.yaml",
        r#"
name: invalues
params:
  ks: { type: list, default: [a] }
steps:
  sim:
    scatter: { over: { k: "${{ params.ks }}" } }
    in: { k: "${{ scatter.k }}" }
    run: [sh, -c, 'echo "$TWINFLOW_IN_K" > k.txt']
    out: { k: k.txt }
"#,
    );
    let first = run_json(&d, &wf, &[]);
    assert!(first.status.success(), "{}", show(&first));
    // The same argv for every member: only the `in:` value (read as `TWINFLOW_IN_K`) tells
    // them apart, so `a`'s result must not stand in for `b` and `c`.
    let out = run_json(&d, &wf, &["-p", "ks=a,b,c"]);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(counts(&out, "sim"), states(&[("cached", 1), ("succeeded", 2)]), "{}", show(&out));
    assert_eq!(member_results_named(&out, "k.txt"), ["a", "b", "c"]);
}

#[test]
fn rerun_forces_a_step_and_what_depends_on_it() {
    let d = scratch("cache/rerun");
    let wf = write(
        &d,
        "chain.yaml",
        r#"
name: chain
steps:
  a:
    run: [sh, -c, 'echo a > a.txt']
    out: { a: a.txt }
  b:
    run: [sh, -c, 'cat "$1" > b.txt', b, "${{ steps.a.out.a }}"]
    out: { b: b.txt }
  c:
    run: [sh, -c, 'echo c > c.txt']
    out: { c: c.txt }
"#,
    );
    assert!(run_json(&d, &wf, &[]).status.success());
    let text = why(&d, &wf, &["--rerun", "a"]);
    assert!(text.contains("a: would run because\n  - `--rerun` forces it\n"), "{text}");
    assert!(text.contains("b: would run because\n  - upstream `a` would run\n"), "{text}");
    assert!(text.ends_with("c: up to date\n2 of 3 would run\n"), "{text}");
    let out = run_json(&d, &wf, &["--rerun", "a"]);
    let st = final_states(&out);
    assert_eq!((st["a"].as_str(), st["b"].as_str(), st["c"].as_str()), ("succeeded", "succeeded", "cached"), "{st:?}");
    // An unknown step is a usage error naming the steps.
    let bad = twinflow().current_dir(&d).arg("run").arg(&wf).args(["--rerun", "bb"]).output().unwrap();
    assert_eq!(bad.status.code(), Some(2), "{}", show(&bad));
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("--rerun bb: workflow `chain` has no step `bb`"),
        "{}",
        show(&bad)
    );
}

#[test]
fn a_run_shows_where_its_results_are() {
    let d = scratch("cache/outputs");
    let pubdir = d.join("published");
    let wf = write(
        &d,
        "res.yaml",
        &format!(
            r#"
name: res
steps:
  make:
    run: [sh, -c, 'echo made > m.txt; echo 7 > n']
    out: {{ m: m.txt }}
    values: {{ n: n }}
    publish: {{ m: {}/../published/m.txt }}
outputs:
  made: "${{{{ steps.make.out.m }}}}"
  count: "${{{{ steps.make.values.n }}}}"
"#,
            // A target with `..` is reported without it.
            d.join("sub").display()
        ),
    );
    // Human output: the outputs and the published copies at the end.
    let human = twinflow().current_dir(&d).arg("run").arg(&wf).output().unwrap();
    assert!(human.status.success(), "{}", show(&human));
    let err = String::from_utf8_lossy(&human.stderr);
    let first_id = String::from_utf8_lossy(&human.stderr)
        .lines()
        .find_map(|l| l.strip_prefix("run ").and_then(|r| r.split_whitespace().next()).map(str::to_string))
        .unwrap();
    let made = d.join("runs").join(&first_id).join("steps/make/out/m.txt");
    let made = std::fs::canonicalize(&made).unwrap();
    assert!(err.contains(&format!("outputs:\n  made: {}\n  count: 7\n", made.display())), "{err}");
    assert!(err.contains(&format!("published:\n  {}\n", pubdir.join("m.txt").display())), "{err}");

    // A cached run: the same outputs, in the earlier run's directory, in its JSON event.
    let again = run_json(&d, &wf, &[]);
    let fin = finished(&again);
    assert_eq!(fin["outputs"]["made"], made.display().to_string(), "{fin}");
    assert_eq!(fin["outputs"]["count"], 7);
    assert_eq!(fin["published"][0], pubdir.join("m.txt").display().to_string());

    // `twinflow outputs`: each declared output at its real path, and where it was reused from.
    let o = twinflow().current_dir(&d).args(["outputs", "latest", "--json"]).output().unwrap();
    assert!(o.status.success(), "{}", show(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["outputs"][0]["name"], "made");
    assert_eq!(v["outputs"][0]["value"], made.display().to_string(), "{v}");
    assert_eq!(v["tasks"][0]["task"], "make");
    assert_eq!(v["tasks"][0]["state"], "cached");
    assert_eq!(v["tasks"][0]["reused_from"], first_id.as_str());
    assert_eq!(v["tasks"][0]["outputs"]["m"], made.display().to_string());
    assert_eq!(v["tasks"][0]["outputs"]["n"], 7);
    let text = twinflow().current_dir(&d).args(["outputs", "latest"]).output().unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains(&format!("  make cached (reused from run {first_id})\n    m: {}\n", made.display())),
        "{text}"
    );

    // `status --json` fills `outputs` with the same.
    let st = twinflow().current_dir(&d).args(["status", "latest", "--json"]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&st.stdout).unwrap();
    assert_eq!(v["tasks"][0]["outputs"]["m"], made.display().to_string(), "{v}");
    assert_eq!(v["tasks"][0]["outputs"]["n"], 7);
}

/// `twinflow status --json` of every run: id → state.
fn runs(d: &Path) -> BTreeMap<String, String> {
    let st = twinflow().current_dir(d).args(["status", "--json"]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&st.stdout).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| (r["id"].as_str().unwrap().to_string(), r["state"].as_str().unwrap().to_string()))
        .collect()
}

fn clean(d: &Path, args: &[&str]) -> Output {
    let out = twinflow().current_dir(d).arg("clean").args(args).output().unwrap();
    assert!(out.status.success(), "{}", show(&out));
    out
}

#[test]
fn clean_keeps_what_kept_runs_use_and_status_and_why_stay_truthful() {
    let d = scratch("cache/clean");
    let wf = write(&d, "sweep.yaml", SWEEP);
    let small = ["-p", "seeds=1,2", "-p", "rains=10"];
    let a = run_json(&d, &wf, &small);
    let b = run_json(&d, &wf, &small);
    assert_eq!(counts(&b, "sim"), states(&[("cached", 2)]), "b reuses a's results");
    let failing = write(&d, "fail.yaml", "name: failing\nsteps:\n  x:\n    run: [sh, -c, 'exit 3']\n");
    let c = run_json(&d, &failing, &[]);
    assert_eq!(c.status.code(), Some(1));
    let (a, b, c) = (run_id(&a), run_id(&b), run_id(&c));
    let runs_dir = d.join("runs");

    // A condition is required.
    let none = twinflow().current_dir(&d).arg("clean").output().unwrap();
    assert_eq!(none.status.code(), Some(2), "{}", show(&none));

    // Keep the newest (the failed run): a and b would go, with the space they take.
    let dry = clean(&d, &["--keep", "1", "--dry-run", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&dry.stdout).unwrap();
    let ids: Vec<&str> = v["removed"].as_array().unwrap().iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(ids, [b.as_str(), a.as_str()], "{v}");
    let want = crate::support::dir_bytes(&runs_dir.join(&a)) + crate::support::dir_bytes(&runs_dir.join(&b));
    assert!(want > 0);
    assert_eq!(v["bytes"], want, "{v}");
    assert!(runs_dir.join(&a).is_dir() && runs_dir.join(&b).is_dir(), "a dry run removes nothing");
    assert_eq!(runs(&d).len(), 3);
    let text = String::from_utf8_lossy(&clean(&d, &["--keep", "1", "--dry-run"]).stdout).to_string();
    assert!(text.contains(&format!("would remove {a} (sweep, succeeded): ")), "{text}");
    assert!(text.contains("would remove 2 runs, freeing "), "{text}");

    // Keep the two newest: a would go, but b reuses its results, so it is kept.
    let out = clean(&d, &["--keep", "2"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&format!("kept {a}: run {b} reuses its results")), "{text}");
    assert!(text.contains("removed 0 runs, freed 0 B"), "{text}");
    assert!(runs_dir.join(&a).is_dir());

    // The failed run goes: its directory and rows.
    let out = clean(&d, &["--failed"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("removed {c} (failing, failed)")), "{}", show(&out));
    assert!(!runs_dir.join(&c).exists());
    let mut left = vec![a.clone(), b.clone()];
    left.sort();
    assert_eq!(runs(&d).keys().cloned().collect::<Vec<_>>(), left);
    // b's cached tasks still point at a's results, which exist.
    let st = twinflow().current_dir(&d).args(["status", &b, "--json"]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&st.stdout).unwrap();
    for t in v["tasks"].as_array().unwrap() {
        assert!(Path::new(t["dir"].as_str().unwrap()).is_dir(), "{t}");
    }
    assert!(why(&d, &wf, &small).ends_with("\n0 of 3 would run\n"));

    // Everything goes (no run uses a any more): why says it would all run, and it does.
    let out = clean(&d, &["--keep", "0"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("removed 2 runs, freed "), "{}", show(&out));
    assert!(runs(&d).is_empty());
    assert!(!runs_dir.join(&a).exists() && !runs_dir.join(&b).exists());
    let text = why(&d, &wf, &small);
    assert!(text.contains("sim[0]: would run because\n  - it has never run successfully\n"), "{text}");
    assert!(text.ends_with("\n3 of 3 would run\n"), "{text}");
    let again = run_json(&d, &wf, &small);
    assert_eq!(counts(&again, "sim"), states(&[("succeeded", 2)]), "{}", show(&again));
}

#[test]
fn clean_never_removes_a_run_in_progress() {
    let d = scratch("cache/clean_live");
    let wf = write(&d, "slow.yaml", "name: slow\nsteps:\n  s:\n    run: [sleep, '30']\n");
    let mut child = crate::support::spawn_run(&d, &wf, &[]);
    // Wait until the run is recorded as running.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while runs(&d).values().next().is_none_or(|s| s != "running") {
        assert!(std::time::Instant::now() < deadline, "the run did not start");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let out = clean(&d, &["--keep", "0"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(": in progress") && text.contains("removed 0 runs"), "{text}");
    assert_eq!(runs(&d).len(), 1);
    crate::execution::nix_kill(child.id(), "TERM");
    let _ = child.wait();
}
