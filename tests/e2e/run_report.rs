//! `twinflow report` and the `RUN/report.html` every run writes, loaded in a real browser:
//! headless Chromium renders it without console messages, and the DAG, the timeline and the
//! task table are in the rendered DOM; a screenshot is kept beside the run.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::common::repo_root;
use crate::support::*;

/// Debian's Chromium (`make deps-test` installs it: `hpc/setup-deps.sh --browser`).
fn chromium() -> PathBuf {
    for c in ["chromium", "chromium-browser", "google-chrome"] {
        if let Ok(p) = which(c) {
            return p;
        }
    }
    panic!("no chromium on PATH: install it with `make deps-test` (hpc/setup-deps.sh --browser)");
}

fn which(prog: &str) -> Result<PathBuf, ()> {
    std::env::var_os("PATH")
        .and_then(|path| std::env::split_paths(&path).map(|d| d.join(prog)).find(|p| p.is_file()))
        .ok_or(())
}

/// Runs headless Chromium on `page` with `what` (`--dump-dom`, `--screenshot=...`); returns
/// stdout and stderr (console messages are logged there: `--enable-logging=stderr --v=0`).
fn browse(dir: &Path, page: &Path, what: &[String]) -> (String, String) {
    let profile = dir.join(format!("chromium-profile-{}", what.len()));
    let child = std::process::Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--enable-logging=stderr",
            "--v=0",
            "--window-size=1400,1800",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(what)
        .arg(format!("file://{}", page.display()))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start chromium");
    let (out, finished) = wait_with_deadline(child, Duration::from_secs(120));
    assert!(finished, "chromium did not finish in 120 s: {}", String::from_utf8_lossy(&out.stderr));
    (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Loads the report: its rendered DOM, with no console message, and a screenshot (a PNG of
/// some size) at `shot`.
fn render(dir: &Path, page: &Path, shot: &Path) -> String {
    let (dom, log) = browse(dir, page, &["--dump-dom".to_string()]);
    let console: Vec<&str> = log.lines().filter(|l| l.contains("CONSOLE")).collect();
    assert!(console.is_empty(), "console messages: {console:#?}");
    assert!(dom.contains("</html>"), "no DOM: {log}");
    let _ = std::fs::remove_file(shot);
    browse(dir, page, &[format!("--screenshot={}", shot.display())]);
    let png = std::fs::read(shot).unwrap_or_else(|e| panic!("screenshot {}: {e}", shot.display()));
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    assert!(png.len() > 20_000, "a blank screenshot? {} bytes", png.len());
    dom
}

/// A 2×2 PNG (red, green, blue, white).
const PNG_B64: &str =
    "iVBORw0KGgoAAAANSUhEUgAAAAIAAAACCAIAAAD91JpzAAAAEklEQVR4nGP4z8DAAMIM/4EAAB/uBfsL2WiLAAAAAElFTkSuQmCC";

const WORKFLOW: &str = r#"name: reported
version: "2.1"
description: a small run to report on
params:
  n: { type: int, default: 3 }
steps:
  prepare:
    run: [sh, -c, 'echo preparing; sleep 0.2']
  member:
    after: [prepare]
    scatter: { over: { i: "${{ range(0, params.n) }}" } }
    run: [sh, -c, 'echo "member $1"; echo "a warning $1" >&2; sleep 0.3; echo "$1" > "$2"', sh, "${{ scatter.i }}", "${{ out.v }}"]
    out: { v: v.txt }
  summary:
    in: { vs: "${{ steps.member.out.v }}" }
    run: [sh, -c, 'printf "%s" "$1" | base64 -d > map.png; printf "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"40\" height=\"20\"><rect width=\"40\" height=\"20\" fill=\"teal\"/></svg>" > map.svg; printf "member,depth\n0,1.5\n1,2.25\n" > metrics.csv', sh, "PNG"]
    out: { map: map.png, sketch: map.svg, metrics: metrics.csv }
    report: { figures: [out.map, out.sketch], tables: [out.metrics] }
"#;

#[test]
fn a_run_writes_its_report_and_it_renders_in_chromium() {
    let d = scratch("run_report/ok");
    let wf = write(&d, "wf.yaml", &WORKFLOW.replace("\"PNG\"", &format!("\"{PNG_B64}\"")));
    let out = run_json(&d, &wf, &["-p", "n=3"]);
    assert!(out.status.success(), "{}", show(&out));
    let run = run_id(&out);
    let page = d.join("runs").join(&run).join("report.html");
    let html = std::fs::read_to_string(&page).expect("every run writes RUN/report.html");
    // Self-contained: nothing is fetched.
    for remote in ["http://", "https://", "<script", "<link"] {
        let found = html.match_indices(remote).any(|(i, _)| !html[..i].ends_with("xmlns=\""));
        assert!(!found, "{remote} in the report");
    }
    let dom = render(&d, &page, &d.join("report-ok.png"));
    assert_eq!(dom.matches(r#"<path class="edge""#).count(), 2, "{dom}");
    for want in [
        r#"id="dag""#,
        r#"id="timeline""#,
        r#"id="tasks""#,
        // The scatter folded into one node, with its count.
        r#"<g class="node" data-step="member" data-state="succeeded">"#,
        "member ×3",
        r#"data-step="summary""#,
        // Dependencies from the workflow as started: prepare → member → summary.
        r#"<path class="edge" d="M"#,
        // Every attempt a bar, every task a row.
        r#"<g class="bar" data-task="member[2]" data-attempt="1" data-state="succeeded">"#,
        r#"<tr class="task" data-task="summary" data-state="succeeded">"#,
        // The summary: version, parameters used, who/where, backend.
        "version 2.1",
        "<code>n=3</code>",
        "local",
        "critical path",
        // Outputs with sizes, output tails with paths.
        "<code title=",
        "a warning 1",
        "/.twinflow/stderr",
        // Figures embedded, the table as a table.
        "data:image/png;base64,",
        "data:image/svg+xml;base64,",
        "<th>depth</th>",
        r#"<td class="num">2.25</td>"#,
    ] {
        assert!(dom.contains(want), "{want} not in the rendered report:\n{dom}");
    }
    // CPU time and peak memory of each attempt were recorded (wait4).
    let db = rusqlite::Connection::open(d.join("runs/twinflow.db")).unwrap();
    let (n, with_rss): (i64, i64) = db
        .query_row(
            "SELECT COUNT(*), COUNT(max_rss) FROM attempts WHERE run_id = ?1 AND cpu_ms IS NOT NULL",
            [&run],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((n, with_rss), (5, 5), "every attempt has its usage");

    // On demand, elsewhere, with the trace and JUnit XML.
    let o = twinflow()
        .current_dir(&d)
        .args(["report", "latest", "-o", "again.html", "--trace", "trace.tsv", "--junit", "junit.xml"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", show(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains(&format!("report of run {run} (succeeded): again.html")));
    assert!(std::fs::read_to_string(d.join("again.html")).unwrap().contains(r#"id="timeline""#));
    let trace = std::fs::read_to_string(d.join("trace.tsv")).unwrap();
    let lines: Vec<Vec<&str>> = trace.lines().map(|l| l.split('\t').collect()).collect();
    assert_eq!(lines[0][..4], ["task_id", "hash", "native_id", "name"]);
    assert_eq!(lines.len(), 6, "{trace}");
    assert!(lines[1..].iter().all(|l| l.len() == 16 && l[7] == "COMPLETED" && l[8] == "0"), "{trace}");
    let junit = std::fs::read_to_string(d.join("junit.xml")).unwrap();
    assert!(junit.contains(r#"tests="5" failures="0" skipped="0""#), "{junit}");
    assert!(junit.contains(r#"<testcase name="member[1]" classname="member""#), "{junit}");
}

#[test]
fn the_report_of_a_failed_run_shows_retries_and_the_failure() {
    let d = scratch("run_report/failed");
    let wf = write(
        &d,
        "wf.yaml",
        r#"name: failing
steps:
  flaky:
    # Fails its first attempt, succeeds its second.
    run: [sh, -c, 'if [ -e ../flaked ]; then echo fine; else touch ../flaked; echo "first try fails" >&2; exit 4; fi']
    retry: { count: 1, backoff: 0.1s }
  broken:
    after: [flaky]
    run: [sh, -c, 'echo "FATAL: the mesh is missing" >&2; exit 3']
    retry: { count: 1, backoff: 0.1s }
  downstream:
    after: [broken]
    run: ["true"]
"#,
    );
    let out = run_json(&d, &wf, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let run = run_id(&out);
    let page = d.join("runs").join(&run).join("report.html");
    let dom = render(&d, &page, &d.join("report-failed.png"));
    for want in [
        r#"id="dag""#,
        r#"id="timeline""#,
        r#"id="tasks""#,
        r#"<g class="node" data-step="broken" data-state="failed">"#,
        r#"<g class="node" data-step="downstream" data-state="upstream-failed">"#,
        // The retry of `flaky` and both failed attempts of `broken` are bars of their own.
        r#"<g class="bar" data-task="flaky" data-attempt="1" data-state="failed">"#,
        r#"<g class="bar" data-task="flaky" data-attempt="2" data-state="succeeded">"#,
        r#"<g class="bar" data-task="broken" data-attempt="2" data-state="failed">"#,
        "flaky #2",
        r#"<tr class="task" data-task="broken" data-state="failed">"#,
        r#"<tr class="attempt" data-task="broken" data-attempt="2">"#,
        "exit code 4",
        "exit code 3",
        "FATAL: the mesh is missing",
        "critical path",
    ] {
        assert!(dom.contains(want), "{want} not in the rendered report:\n{dom}");
    }
    assert!(dom.contains(r#"<span class="badge" style="background:#c62828;color:#fff">failed</span>"#), "{dom}");
    let o = twinflow().current_dir(&d).args(["report", &run, "--junit", "j.xml", "--trace", "t.tsv"]).output().unwrap();
    assert!(o.status.success(), "{}", show(&o));
    let junit = std::fs::read_to_string(d.join("j.xml")).unwrap();
    assert!(junit.contains(r#"tests="3" failures="1" skipped="1""#), "{junit}");
    assert!(junit.contains(r#"<failure message="exit code 3" type="failed">"#), "{junit}");
    let trace = std::fs::read_to_string(d.join("t.tsv")).unwrap();
    let failed = trace.lines().filter(|l| l.split('\t').nth(7) == Some("FAILED")).count();
    assert_eq!(failed, 3, "flaky's first attempt and both of broken's: {trace}");
}

#[test]
fn report_of_an_unknown_run_is_a_usage_error() {
    let d = scratch("run_report/unknown");
    let o = twinflow().current_dir(&d).args(["report", "latest"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no runs in `runs`"), "{}", show(&o));
    let help = twinflow().args(["report", "--help"]).output().unwrap();
    assert!(String::from_utf8_lossy(&help.stdout).contains("twinflow report latest -o report.html"));
}

#[test]
fn a_run_in_progress_is_reported_with_its_running_attempt() {
    let d = scratch("run_report/in_progress");
    let flag = d.join("go");
    let wf = write(
        &d,
        "wf.yaml",
        &format!(
            "name: slow\nsteps:\n  quick:\n    run: [\"true\"]\n  slow:\n    after: [quick]\n    run: [sh, -c, 'touch \"$1\"; while [ -e \"$1\" ]; do sleep 0.05; done', sh, \"{}\"]\n  last:\n    after: [slow]\n    run: [\"true\"]\n",
            flag.display()
        ),
    );
    let child = spawn_run(&d, &wf, &[]);
    let t0 = std::time::Instant::now();
    while !flag.exists() {
        assert!(t0.elapsed() < Duration::from_secs(60), "`slow` never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    // The engine records a start in its next commit of the database (within a second):
    // the report of the run in progress is read until it shows `slow` started.
    let html = loop {
        let o = twinflow().current_dir(&d).args(["report", "latest", "-o", "now.html"]).output().unwrap();
        assert!(o.status.success(), "{}", show(&o));
        assert!(String::from_utf8_lossy(&o.stderr).contains("(running): now.html"), "{}", show(&o));
        let html = std::fs::read_to_string(d.join("now.html")).unwrap();
        if html.contains(r#"data-task="slow" data-attempt="1""#) || t0.elapsed() > Duration::from_secs(30) {
            break html;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    std::fs::remove_file(&flag).unwrap();
    let (out, finished) = wait_with_deadline(child, Duration::from_secs(60));
    assert!(finished && out.status.success(), "{}", show(&out));
    for want in [
        "so far (the run is in progress)",
        r#"<g class="node" data-step="slow" data-state="running">"#,
        r#"<g class="node" data-step="last" data-state="pending">"#,
        r#"<g class="bar" data-task="slow" data-attempt="1" data-state="running">"#,
        r#"<tr class="task" data-task="quick" data-state="succeeded">"#,
    ] {
        assert!(html.contains(want), "{want} not in the report of the run in progress:\n{html}");
    }
    // The report the run wrote when it ended has it all done; each attempt's status.json
    // has what it used.
    let run = run_id(&out);
    let end = std::fs::read_to_string(d.join("runs").join(&run).join("report.html")).unwrap();
    assert!(end.contains(r#"<g class="node" data-step="last" data-state="succeeded">"#), "{end}");
    let status: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(d.join("runs").join(&run).join("steps/slow/out/.twinflow/status.json")).unwrap(),
    )
    .unwrap();
    assert!(status["cpu_seconds"].as_f64().is_some() && status["max_rss_bytes"].as_u64().unwrap() > 0, "{status}");
}

#[test]
fn a_cycling_run_report_has_a_band_per_cycle() {
    let d = scratch("run_report/cycling");
    let wf = repo_root().join("examples/cycling-hello.yaml");
    let out = run_json(&d, &wf, &["--cycles", "3"]);
    assert!(out.status.success(), "{}", show(&out));
    let html = std::fs::read_to_string(d.join("runs").join(run_id(&out)).join("report.html")).unwrap();
    assert_eq!(html.matches(r#"<g class="cycle""#).count(), 3, "{html}");
    assert!(html.contains(r#"data-task="3/count" data-attempt="1" data-state="succeeded""#), "{html}");
}
