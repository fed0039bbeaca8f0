//! JUnit XML for CI dashboards: the run is a test suite, each task a test case (class: its
//! step) that fails when the task failed, is skipped when it did not run (skipped,
//! upstream-failed, cancelled, pending), and passes when it succeeded or was cached.

use std::fmt::Write;

use super::{RunRecord, escape};
use crate::events::TaskState;

/// The JUnit XML of a run.
pub fn render(rec: &RunRecord) -> String {
    let tests = rec.tasks.len();
    let failures = rec.tasks.iter().filter(|t| t.row.state == TaskState::Failed).count();
    let skipped = rec
        .tasks
        .iter()
        .filter(|t| {
            matches!(
                t.row.state,
                TaskState::Skipped
                    | TaskState::UpstreamFailed
                    | TaskState::Cancelled
                    | TaskState::Pending
                    | TaskState::Running
            )
        })
        .count();
    let secs = |t: &super::TaskRecord| {
        t.attempts.iter().filter_map(|a| Some(a.finished_at? - a.started_at?)).sum::<i64>() as f64 / 1000.0
    };
    let total: f64 = rec.tasks.iter().map(secs).sum();
    let name = rec
        .workflow
        .as_ref()
        .map_or_else(|| rec.run.as_ref().map(|r| r.workflow.clone()).unwrap_or_default(), |w| w.name.clone());
    let mut s = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        s,
        r#"<testsuites name="twinflow" tests="{tests}" failures="{failures}" skipped="{skipped}" time="{total:.3}">"#
    );
    let _ = writeln!(
        s,
        r#"  <testsuite name="{n} {id}" tests="{tests}" failures="{failures}" skipped="{skipped}" errors="0" time="{total:.3}">"#,
        n = escape(&name),
        id = escape(&rec.run_id)
    );
    for t in &rec.tasks {
        let _ = write!(
            s,
            r#"    <testcase name="{}" classname="{}" time="{:.3}""#,
            escape(&t.row.task),
            escape(&t.row.step),
            secs(t)
        );
        let msg = t.row.message.as_deref().unwrap_or("");
        let first = msg.lines().next().unwrap_or("");
        match t.row.state {
            TaskState::Failed => {
                let _ = write!(
                    s,
                    ">\n      <failure message=\"{}\" type=\"failed\">{}</failure>\n    </testcase>\n",
                    escape(first),
                    escape(msg)
                );
            }
            TaskState::Succeeded | TaskState::Cached => {
                if t.row.state == TaskState::Cached {
                    let _ = write!(
                        s,
                        ">\n      <system-out>cached: {}</system-out>\n    </testcase>\n",
                        escape(t.row.dir.as_deref().unwrap_or(""))
                    );
                } else {
                    s.push_str("/>\n");
                }
            }
            st => {
                let why = if first.is_empty() { st.as_str().to_string() } else { format!("{}: {first}", st.as_str()) };
                let _ = write!(s, ">\n      <skipped message=\"{}\"/>\n    </testcase>\n", escape(&why));
            }
        }
    }
    s.push_str("  </testsuite>\n</testsuites>\n");
    s
}
