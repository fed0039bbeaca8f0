//! The renderers on records built in memory.

use super::*;
use crate::state::{AttemptState, BackendChoice, CycleState, RunSettings};

fn attempt(n: u32, state: AttemptState, start: i64, end: Option<i64>, detail: &str) -> AttemptRow {
    AttemptRow {
        attempt: n,
        job_id: Some(format!("j{n}")),
        state,
        exit_code: match state {
            AttemptState::Succeeded => Some(0),
            AttemptState::Failed => Some(3),
            AttemptState::Running => None,
        },
        detail: Some(detail.to_string()),
        started_at: Some(start),
        finished_at: end,
        cpu_user_ms: Some(400),
        cpu_system_ms: Some(100),
        cpu_ms: Some(500),
        max_rss: Some(3 << 20),
    }
}

fn task(name: &str, step: &str, member: Option<u32>, state: TaskState, attempts: Vec<AttemptRow>) -> TaskRecord {
    TaskRecord {
        row: TaskRow {
            task: name.into(),
            step: step.into(),
            state,
            attempts: attempts.len() as u32,
            cache_key: Some("0123456789abcdef".into()),
            dir: Some(format!("/runs/r/steps/{step}/out")),
            outputs: None,
            job_id: None,
            message: (state == TaskState::Failed).then(|| "exit code 3 <oops>\nattempt directory: /x".to_string()),
            started_at: None,
            finished_at: None,
            cycle: None,
            gate: None,
            member,
            label: None,
        },
        attempts,
        stdout: None,
        stderr: None,
        outputs: vec![],
        figures: vec![],
        tables: vec![],
        alerts: vec![],
    }
}

fn step(name: &str, deps: &[&str], scatter: bool) -> StepSnapshot {
    StepSnapshot {
        name: name.into(),
        deps: deps.iter().map(|d| d.to_string()).collect(),
        scatter,
        ..Default::default()
    }
}

/// `prep` (1 s) → `sim` ×3 (members of 2, 3 and 1+4 s: a retry) → `post` (failed twice).
fn record() -> RunRecord {
    use AttemptState::*;
    let t0 = 1_000_000;
    let s = |x: i64| t0 + x * 1000;
    RunRecord {
        run: Some(RunRow {
            id: "r1".into(),
            workflow: "wf".into(),
            file: "/wf.yaml".into(),
            settings: RunSettings { params: vec!["n=3".into()], ..RunSettings::default() },
            state: crate::state::RunState::Failed,
            created_at: t0,
            updated_at: s(20),
            engine_pid: None,
            engine_start: None,
        }),
        run_id: "r1".into(),
        state: "failed".into(),
        run_dir: "/runs/r1".into(),
        workflow: Some(WorkflowSnapshot {
            name: "wf".into(),
            version: Some("1.2".into()),
            params: [("n".to_string(), serde_json::json!(3))].into_iter().collect(),
            steps: vec![step("prep", &[], false), step("sim", &["prep"], true), step("post", &["sim"], false)],
            ..Default::default()
        }),
        tasks: vec![
            task("prep", "prep", None, TaskState::Succeeded, vec![attempt(1, Succeeded, s(0), Some(s(1)), "ok")]),
            task("sim[0]", "sim", Some(0), TaskState::Succeeded, vec![attempt(1, Succeeded, s(1), Some(s(3)), "ok")]),
            task("sim[1]", "sim", Some(1), TaskState::Succeeded, vec![attempt(1, Succeeded, s(1), Some(s(4)), "ok")]),
            task(
                "sim[2]",
                "sim",
                Some(2),
                TaskState::Succeeded,
                vec![
                    attempt(1, Failed, s(3), Some(s(4)), "exit code 3"),
                    attempt(2, Succeeded, s(4), Some(s(8)), "ok"),
                ],
            ),
            task(
                "post",
                "post",
                None,
                TaskState::Failed,
                vec![
                    attempt(1, Failed, s(8), Some(s(9)), "exit code 3"),
                    attempt(2, Failed, s(9), Some(s(10)), "exit code 3"),
                ],
            ),
        ],
        cycles: vec![],
        now_ms: s(20),
    }
}

#[test]
fn scatters_fold_into_one_node_coloured_by_their_worst_state() {
    let mut rec = record();
    rec.tasks[2].row.state = TaskState::Failed;
    let nodes = dag_svg::steps(&rec);
    let names: Vec<&str> = nodes.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, ["prep", "sim", "post"]);
    assert_eq!(nodes[1].total(), 3);
    assert_eq!(nodes[1].states, [(TaskState::Succeeded, 2), (TaskState::Failed, 1)]);
    assert_eq!(nodes[1].state(), "failed");
    assert_eq!(dag_svg::depths(&nodes), [0, 1, 2]);
    let svg = dag_svg::render(&rec);
    assert!(svg.starts_with(r#"<svg id="dag""#) && svg.ends_with("</svg>"), "{svg}");
    assert_eq!(svg.matches(r#"class="node""#).count(), 3);
    assert_eq!(svg.matches(r#"class="edge""#).count(), 2);
    assert!(svg.contains("sim ×3") && svg.contains("2 succeeded, 1 failed"), "{svg}");
}

#[test]
fn attempts_take_the_first_free_lane_and_retries_are_marked() {
    let rec = record();
    let bars = timeline::bars(&rec);
    assert_eq!(bars.len(), 7, "one bar per attempt");
    let lanes = timeline::lanes(&bars);
    let lane_of = |t: &str, a: u32| lanes[bars.iter().position(|b| b.task == t && b.attempt == a).unwrap()];
    // sim[0] and sim[1] overlap: two lanes; sim[2]'s first attempt starts when sim[0] ends.
    assert_eq!((lane_of("prep", 1), lane_of("sim[0]", 1), lane_of("sim[1]", 1)), (0, 0, 1));
    assert_eq!(lane_of("sim[2]", 1), 0);
    assert_eq!(lane_of("sim[2]", 2), 0, "its retry starts when sim[1] ends too, lane 0 is free first");
    let svg = timeline::render(&rec);
    assert!(svg.contains(r#"data-task="sim[2]" data-attempt="2" data-state="succeeded""#), "{svg}");
    assert!(svg.contains(r#"data-task="post" data-attempt="1" data-state="failed""#), "{svg}");
    assert!(svg.contains("stroke-dasharray"), "a retry's outline");
    assert!(svg.contains("slot 2") && !svg.contains("slot 3"), "{svg}");
}

#[test]
fn a_cycling_run_has_a_band_per_cycle_and_trigger_waits() {
    let mut rec = record();
    rec.cycles = ["0", "1"]
        .iter()
        .enumerate()
        .map(|(i, p)| CycleRow {
            cycle: i as u64,
            point: format!("2026030{p}T00Z"),
            state: CycleState::Succeeded,
            started_at: Some(1_000_000 + i as i64 * 5000),
            finished_at: None,
            counts: None,
            waits: None,
            pruned: false,
            last_cycle: None,
            last_point: None,
        })
        .collect();
    for (i, t) in rec.tasks.iter_mut().enumerate() {
        t.row.cycle = Some(if i < 3 { 0 } else { 1 });
    }
    // `post` (cycle 1, from 5 s) waited for its trigger until 8 s.
    rec.tasks[4].row.gate = Some("{}".into());
    let bars = timeline::bars(&rec);
    let wait = bars.iter().find(|b| b.state == "waiting").expect("a wait bar");
    assert_eq!((wait.task.as_str(), wait.start, wait.end), ("post", 1_005_000, 1_008_000));
    let svg = timeline::render(&rec);
    assert_eq!(svg.matches(r#"class="cycle""#).count(), 2, "{svg}");
    assert!(svg.contains("cycle 20260300T00Z") && svg.contains("waits for its trigger"), "{svg}");
}

#[test]
fn the_critical_path_is_the_longest_chain_of_steps() {
    let rec = record();
    let (ms, path) = html::critical_path(&rec, &dag_svg::steps(&rec));
    // prep 1 s, sim: its longest member 1 + 4 s, post 1 + 1 s.
    assert_eq!(ms, 1000 + 5000 + 2000);
    assert_eq!(path, ["prep", "sim", "post"]);
}

#[test]
fn the_page_has_every_section_and_escapes_what_it_shows() {
    let mut rec = record();
    rec.tasks[0].row.task = "<script>alert(1)</script>".into();
    rec.tasks[1].tables.push(Table {
        name: "m".into(),
        path: "/m.csv".into(),
        rows: Ok(vec![vec!["k".into(), "v".into()], vec!["a&b".into(), "1.5".into()]]),
        more: 3,
    });
    rec.tasks[1].figures.push(Figure {
        name: "map".into(),
        path: "/map.png".into(),
        content: Ok((FigureKind::Png, b"\x89PNG\r\n\x1a\nxyz".to_vec())),
    });
    rec.tasks[1].figures.push(Figure {
        name: "gone".into(),
        path: "/gone.png".into(),
        content: Err("cannot read it".into()),
    });
    let page = html::render(&rec);
    for id in [r#"id="summary""#, r#"id="dag""#, r#"id="timeline""#, r#"id="tasks""#, r#"id="figures""#] {
        assert!(page.contains(id), "{id}");
    }
    assert!(!page.contains("<script"), "task names are escaped");
    assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(page.contains("exit code 3 &lt;oops&gt;"));
    assert!(page.contains("<td>a&amp;b</td><td class=\"num\">1.5</td>"));
    assert!(page.contains("3 more rows in the file"));
    assert!(page.contains("data:image/png;base64,iVBORw0KGgp4eXo="), "the figure as a data URI");
    assert!(page.contains("gone <code>/gone.png</code>: not shown, cannot read it"));
    assert!(page.contains("version 1.2") && page.contains("<code>n=3</code>") && page.contains("<code>-p n=3</code>"));
    assert!(page.contains(&format!("{} (", duration(8000))), "critical path time");
    assert!(page.contains("5 tasks: 4 succeeded, 1 failed; 7 attempts"), "{page}");
    assert!(page.contains(">3.0 MiB<") && page.contains(">500ms<"), "peak memory and CPU time of attempts");
    assert_eq!(rec.run.as_ref().unwrap().settings.backend, BackendChoice::Local);
}

#[test]
fn alerts_are_listed_near_the_top_with_their_fields_escaped() {
    let mut rec = record();
    assert!(!html::render(&rec).contains(r#"id="alerts""#), "no section without alerts outputs");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("alerts.jsonl");
    let mut text =
        String::from("{\"kind\": \"dead\", \"cell\": 17, \"message\": \"no <signal>\"}\n\nnot json & plain\n");
    for k in 0..ALERTS_MAX + 4 {
        text.push_str(&format!("{{\"kind\": \"hot\", \"cell\": {k}}}\n"));
    }
    std::fs::write(&path, text).unwrap();
    let read = read_alerts("alerts", &path);
    assert_eq!(read.lines.as_ref().unwrap().len(), ALERTS_MAX, "blank lines are skipped, the rest counted");
    assert_eq!(read.more, 6);
    rec.tasks[1].alerts.push(read);
    rec.tasks[2].alerts.push(read_alerts("gone", &dir.path().join("missing.jsonl")));
    let page = html::render(&rec);
    assert!(!page.contains("(reused result)"));
    rec.tasks[1].row.state = TaskState::Cached;
    let cached = html::render(&rec);
    assert!(cached.contains(&format!("<td>{} (reused result)</td>", rec.tasks[1].row.task)), "{cached}");
    let (alerts, figures) = (page.find(r#"id="alerts""#).unwrap(), page.find(r#"id="dag""#).unwrap());
    assert!(alerts < figures, "alerts come before the graph");
    assert!(page.contains(&format!("Alerts ({})", ALERTS_MAX + 6)), "every alert counted");
    assert!(page.contains("<td><b>message</b>: no &lt;signal&gt;; "), "the message first: {page}");
    for field in ["<b>kind</b>: dead", "<b>cell</b>: 17"] {
        assert!(page.contains(field), "{field}: {page}");
    }
    assert!(page.contains("<td>not json &amp; plain</td>"));
    assert!(page.contains("6 more alerts in"));
    assert!(page.contains("missing.jsonl</code>: not shown, cannot read it"));
}

#[test]
fn the_trace_has_a_line_per_attempt_in_start_order() {
    let rec = record();
    let t = trace::render(&rec);
    let lines: Vec<Vec<&str>> = t.lines().map(|l| l.split('\t').collect()).collect();
    assert_eq!(lines[0], trace::COLUMNS);
    assert_eq!(lines.len(), 8);
    assert!(lines.iter().all(|l| l.len() == trace::COLUMNS.len()));
    let sim2: Vec<&Vec<&str>> = lines.iter().filter(|l| l[3] == "sim[2]").collect();
    assert_eq!((sim2[0][6], sim2[0][7], sim2[0][8]), ("1", "FAILED", "3"));
    assert_eq!((sim2[1][6], sim2[1][7]), ("2", "COMPLETED"));
    // 4 s of wall time, 500 ms CPU: 12.5 %; memory in bytes; the hash shortened.
    assert_eq!((sim2[1][11], sim2[1][12], sim2[1][13], sim2[1][14]), ("4000", "500", "12.5", "3145728"));
    assert_eq!(sim2[1][1], "0123456789ab");
    // Only the latest attempt has the task's directory.
    assert_eq!((sim2[0][15], sim2[1][15]), ("", "/runs/r/steps/sim/out"));
    let starts: Vec<i64> = lines[1..].iter().map(|l| l[9].parse().unwrap()).collect();
    assert!(starts.windows(2).all(|w| w[0] <= w[1]), "{starts:?}");
}

#[test]
fn junit_has_a_case_per_task_failing_for_failed_tasks() {
    let mut rec = record();
    rec.tasks[0].row.state = TaskState::Cached;
    rec.tasks.push(task("later", "later", None, TaskState::UpstreamFailed, vec![]));
    let x = junit::render(&rec);
    assert!(x.contains(r#"<testsuites name="twinflow" tests="6" failures="1" skipped="1""#), "{x}");
    assert!(x.contains(r#"<testcase name="sim[2]" classname="sim" time="5.000"/>"#), "{x}");
    assert!(x.contains(r#"<failure message="exit code 3 &lt;oops&gt;" type="failed">"#), "{x}");
    assert!(x.contains("<system-out>cached: /runs/r/steps/prep/out</system-out>"), "{x}");
    assert!(x.contains(r#"<skipped message="upstream-failed"/>"#), "{x}");
}

#[test]
fn files_are_read_for_the_report() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("log");
    let text: String = (1..=30).map(|i| format!("line {i}\n")).collect();
    std::fs::write(&p, &text).unwrap();
    let t = tail(&p, 3).unwrap();
    assert_eq!(t.lines, ["line 28", "line 29", "line 30"]);
    assert_eq!(t.size, text.len() as u64);
    assert!(tail(&tmp.path().join("missing"), 3).is_none());
    std::fs::write(tmp.path().join("a.svg"), "<?xml version=\"1.0\"?><svg xmlns=\"x\"/>").unwrap();
    assert!(matches!(read_figure("a", &tmp.path().join("a.svg")).content, Ok((FigureKind::Svg, _))));
    std::fs::write(tmp.path().join("b.png"), "not a png").unwrap();
    assert_eq!(read_figure("b", &tmp.path().join("b.png")).content, Err("neither a PNG nor an SVG file".into()));
    let csv: String = std::iter::once("a,b\n".to_string()).chain((0..250).map(|i| format!("{i},\"x, y\"\n"))).collect();
    std::fs::write(tmp.path().join("t.csv"), csv).unwrap();
    let t = read_table("t", &tmp.path().join("t.csv"));
    let rows = t.rows.unwrap();
    assert_eq!((rows.len(), t.more), (TABLE_MAX_ROWS + 1, 250 - TABLE_MAX_ROWS));
    assert_eq!(rows[1], ["0", "x, y"]);
}

#[test]
fn sizes_and_durations_read_well() {
    assert_eq!(
        (duration(250), duration(1500), duration(184_000), duration(7_500_000)),
        ("250ms".to_string(), "1.5s".to_string(), "3m 04s".to_string(), "2h 05m".to_string())
    );
    assert_eq!((bytes(512), bytes(3 << 20)), ("512 B".to_string(), "3.0 MiB".to_string()));
    assert_eq!(escape(r#"<a href="x">'&'</a>"#), "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;");
}
