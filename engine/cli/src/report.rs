//! Rendering engine events: progress bars on a terminal, plain lines otherwise, JSON lines
//! with `--json`.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};
use twinflow_engine::events::{Event, Reporter, TaskState};
use twinflow_engine::units::format_duration;

/// Writes a line to stderr; a closed stderr (`twinflow run ... 2>&1 | head`) is not an
/// error of the run, which goes on and is recorded as usual.
fn err_line(args: std::fmt::Arguments<'_>) {
    let mut e = std::io::stderr().lock();
    let _ = e.write_fmt(args);
    let _ = e.write_all(b"\n");
}

/// `text` with every line after the first indented by `indent` (empty lines stay empty).
pub fn indent_rest(text: &str, indent: &str) -> String {
    let mut lines = text.split('\n');
    let mut out = lines.next().unwrap_or_default().to_string();
    for l in lines {
        out.push('\n');
        if !l.is_empty() {
            out.push_str(indent);
            out.push_str(l);
        }
    }
    out
}

/// JSON lines on stdout, one event per line, each with the time it was reported (`time`,
/// RFC 3339 in UTC with milliseconds).
pub struct JsonReporter;

/// An event with its time: the event's fields, then `time`.
#[derive(serde::Serialize)]
struct Stamped<'a> {
    #[serde(flatten)]
    event: &'a Event,
    time: String,
}

impl Reporter for JsonReporter {
    fn event(&mut self, e: &Event) {
        let mut out = std::io::stdout().lock();
        let time = format!("{:.3}", jiff::Timestamp::now());
        let _ = serde_json::to_writer(&mut out, &Stamped { event: e, time });
        let _ = out.write_all(b"\n");
    }
}

/// Progress for people. On a terminal: an overall bar, then one row per step with its
/// done/cached/running/failed counts and the running tasks' names; elsewhere (CI logs) one
/// line per finished task. After the run, a table per step.
pub struct HumanReporter {
    multi: Option<MultiProgress>,
    bar: Option<ProgressBar>,
    total: u64,
    done: u64,
    running: BTreeSet<String>,
    failed: u64,
    steps: Vec<StepRow>,
    resumed: bool,
}

/// One step's share of the run, as the reporter saw it.
#[derive(Debug, Default, Clone)]
struct StepRow {
    step: String,
    /// Its tasks when known (0 in a cycling run: they come cycle by cycle).
    tasks: usize,
    /// Finished by an earlier engine (resume).
    earlier: usize,
    succeeded: usize,
    cached: usize,
    skipped: usize,
    failed: usize,
    /// Upstream-failed and cancelled.
    not_run: usize,
    /// Seconds its tasks ran.
    seconds: f64,
    /// Running tasks: name and scatter values.
    running: BTreeMap<String, Option<String>>,
    bar: Option<ProgressBar>,
}

impl StepRow {
    fn finished(&self) -> usize {
        self.earlier + self.succeeded + self.cached + self.skipped + self.failed + self.not_run
    }

    /// The row's text after its bar: `2 running: sim[3] seed=3, sim[4] seed=4 (+1) · 1 failed`.
    fn message(&self) -> String {
        let mut parts = vec![];
        if !self.running.is_empty() {
            let names: Vec<String> = self
                .running
                .iter()
                .take(2)
                .map(|(t, l)| match l {
                    Some(l) => format!("{t} {l}"),
                    None => t.clone(),
                })
                .collect();
            let more = self.running.len().saturating_sub(names.len());
            let more = if more > 0 { format!(" (+{more})") } else { String::new() };
            parts.push(format!("{} running: {}{more}", self.running.len(), names.join(", ")));
        }
        for (n, what) in
            [(self.cached, "cached"), (self.skipped, "skipped"), (self.failed, "failed"), (self.not_run, "not run")]
        {
            if n > 0 {
                parts.push(format!("{n} {what}"));
            }
        }
        parts.join(" · ")
    }
}

/// The step of a task: its name without the cycle point (`600/`) and the member (`[3]`).
fn step_of<'a>(task: &'a str, cycle: Option<&str>) -> &'a str {
    let t = match cycle {
        Some(p) => task.strip_prefix(p).and_then(|t| t.strip_prefix('/')).unwrap_or(task),
        None => task,
    };
    match t.rfind('[') {
        Some(i) if t.ends_with(']') => &t[..i],
        _ => t,
    }
}

/// A task with its scatter values (`sim[3] seed=3`).
fn labelled(task: &str, label: Option<&String>) -> String {
    match label {
        Some(l) => format!("{task} {l}"),
        None => task.to_string(),
    }
}

/// Most step rows drawn on a terminal (the overall bar counts every task).
const MAX_ROWS: usize = 20;

impl HumanReporter {
    /// A reporter drawing to stderr.
    pub fn new() -> Self {
        Self {
            multi: None,
            bar: None,
            total: 0,
            done: 0,
            running: BTreeSet::new(),
            failed: 0,
            steps: vec![],
            resumed: false,
        }
    }

    fn line(&self, s: &str) {
        match (&self.multi, &self.bar) {
            (Some(m), _) => {
                if m.println(s).is_err() {
                    err_line(format_args!("{s}"));
                }
            }
            (None, Some(b)) => b.println(s),
            (None, None) => err_line(format_args!("{s}")),
        }
    }

    fn refresh(&self) {
        if let Some(b) = &self.bar {
            b.set_position(self.done);
            b.set_message(format!("{} running, {} failed", self.running.len(), self.failed));
        }
    }

    /// The row of `step`, made on first sight (a cycling run's steps come with their tasks).
    fn row(&mut self, step: &str) -> &mut StepRow {
        let i = match self.steps.iter().position(|r| r.step == step) {
            Some(i) => i,
            None => {
                self.steps.push(StepRow { step: step.to_string(), ..StepRow::default() });
                self.steps.len() - 1
            }
        };
        &mut self.steps[i]
    }

    fn draw_row(&self, step: &str) {
        if let Some(r) = self.steps.iter().find(|r| r.step == step)
            && let Some(b) = &r.bar
        {
            b.set_position(r.finished() as u64);
            b.set_message(r.message());
        }
    }

    /// On a terminal: the overall bar and a row per step (at most [`MAX_ROWS`]).
    fn draw_bars(&mut self) {
        if !std::io::stderr().is_terminal() {
            return;
        }
        let m = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
        let b = m.add(ProgressBar::new(self.total));
        b.set_style(
            ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} tasks, {msg} (eta {eta})")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        b.set_position(self.done);
        let width = self.steps.iter().map(|r| r.step.chars().count()).max().unwrap_or(4).min(28);
        let style =
            ProgressStyle::with_template(&format!("  {{prefix:<{width}}} [{{bar:20}}] {{pos}}/{{len}} {{msg}}"))
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> ");
        for r in self.steps.iter_mut().take(MAX_ROWS) {
            let rb = m.add(ProgressBar::new(r.tasks as u64));
            rb.set_style(style.clone());
            rb.set_prefix(r.step.clone());
            rb.set_position(r.finished() as u64);
            r.bar = Some(rb);
        }
        self.bar = Some(b);
        self.multi = Some(m);
    }

    fn clear_bars(&mut self) {
        for r in &mut self.steps {
            if let Some(b) = r.bar.take() {
                b.finish_and_clear();
            }
        }
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
        if let Some(m) = self.multi.take() {
            let _ = m.clear();
        }
    }

    /// The table printed after the run: one line per step.
    fn summary(&self) -> String {
        use std::fmt::Write as _;
        let width = self.steps.iter().map(|r| r.step.chars().count()).max().unwrap_or(4).max(4);
        let earlier = self.resumed || self.steps.iter().any(|r| r.earlier > 0);
        let mut out = format!(
            "  {:<width$} {:>6} {:>9} {:>6} {:>7} {:>6} {:>7}",
            "step", "tasks", "succeeded", "cached", "skipped", "failed", "not run"
        );
        if earlier {
            out.push_str(&format!(" {:>7}", "earlier"));
        }
        out.push_str(&format!(" {:>9}", "task time"));
        for r in &self.steps {
            let finished = r.finished();
            let tasks = r.tasks.max(finished + r.running.len());
            let not_run = r.not_run + tasks.saturating_sub(finished);
            let _ = write!(
                out,
                "\n  {:<width$} {:>6} {:>9} {:>6} {:>7} {:>6} {:>7}",
                r.step, tasks, r.succeeded, r.cached, r.skipped, r.failed, not_run
            );
            if earlier {
                let _ = write!(out, " {:>7}", r.earlier);
            }
            let _ = write!(out, " {:>9}", format_duration(Duration::from_secs_f64(r.seconds.max(0.0))));
        }
        out
    }
}

/// `1 running task`, `3 running tasks` (`what` singular).
fn tasks_word(n: usize, what: &str) -> String {
    match n {
        1 => what.to_string(),
        n => format!("{n} {}s", what.trim_start_matches("the ")),
    }
}

impl HumanReporter {
    /// Cancellation: says what happens to the running tasks and how to cut it short; on a
    /// terminal, the bar counts the grace period down to the SIGKILL.
    fn cancelling(&mut self, signal: &str, running: usize, grace: Option<f64>) {
        let tasks = tasks_word(running, "the running task");
        let (they, exit) = if running == 1 { ("it", "exits") } else { ("they", "exit") };
        let how = match grace {
            Some(g) if running > 0 => format!(": SIGTERM now, SIGKILL in {g:.0}s unless {they} {exit}"),
            _ => String::new(),
        };
        let again = if running > 0 {
            format!("; Ctrl-C again kills {} at once", if running == 1 { "it" } else { "them" })
        } else {
            String::new()
        };
        self.line(&format!("received {signal}: stopping {tasks}{how}{again}"));
        let (Some(g), true) = (grace, running > 0 && std::io::stderr().is_terminal()) else { return };
        let bar = self.bar.get_or_insert_with(|| ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()));
        let since = Instant::now();
        let left = move |_: &ProgressState, w: &mut dyn std::fmt::Write| {
            let left = (g - since.elapsed().as_secs_f64()).max(0.0).ceil();
            let _ = write!(w, "{left:.0}s");
        };
        let style = ProgressStyle::with_template(&format!(
            "stopping {tasks}: SIGKILL in {{left}} unless {they} {exit} (Ctrl-C again: now)"
        ))
        .map(|s| s.with_key("left", left));
        if let Ok(style) = style {
            bar.set_style(style);
            bar.enable_steady_tick(std::time::Duration::from_millis(200));
        }
    }
}

impl Reporter for HumanReporter {
    fn event(&mut self, e: &Event) {
        match e {
            Event::RunStarted { run_id, workflow, tasks, already_done, resumed, steps } => {
                self.total = *tasks as u64;
                self.done = *already_done as u64;
                self.resumed = *resumed;
                self.steps = steps
                    .iter()
                    .map(|s| StepRow { step: s.step.clone(), tasks: s.tasks, earlier: s.done, ..StepRow::default() })
                    .collect();
                let verb = if *resumed { "resuming" } else { "starting" };
                if *tasks == 0 {
                    // A cycling run: its tasks come cycle by cycle.
                    err_line(format_args!("{verb} run {run_id} of `{workflow}` (cycling)"));
                    return;
                }
                err_line(format_args!(
                    "{verb} run {run_id} of `{workflow}`: {tasks} tasks{}",
                    if *resumed { format!(", {already_done} already done") } else { String::new() }
                ));
                self.draw_bars();
            }
            Event::TaskStarted { task, cycle, label, .. } => {
                self.running.insert(task.clone());
                let step = step_of(task, cycle.as_deref()).to_string();
                self.row(&step).running.insert(task.clone(), label.clone());
                self.draw_row(&step);
                self.refresh();
            }
            Event::TaskFinished { task, cycle, label, state, seconds, message, .. } => {
                self.running.remove(task);
                self.done += 1;
                if matches!(state, TaskState::Failed) {
                    self.failed += 1;
                }
                let step = step_of(task, cycle.as_deref()).to_string();
                let row = self.row(&step);
                row.running.remove(task);
                row.seconds += seconds;
                match state {
                    TaskState::Succeeded => row.succeeded += 1,
                    TaskState::Cached => row.cached += 1,
                    TaskState::Skipped => row.skipped += 1,
                    TaskState::Failed => row.failed += 1,
                    TaskState::UpstreamFailed | TaskState::Cancelled => row.not_run += 1,
                    TaskState::Pending | TaskState::Running => {}
                }
                self.draw_row(&step);
                let name = labelled(task, label.as_ref());
                // A failure's message is several lines (attempt directory, files, the end of
                // its output): the lines after the first are indented under the task.
                let msg = message.as_ref().map(|m| format!(": {}", indent_rest(m, "    "))).unwrap_or_default();
                let plain = self.bar.is_none() && self.total <= 200;
                match state {
                    TaskState::Failed | TaskState::UpstreamFailed | TaskState::Cancelled => {
                        self.line(&format!("  {} {name}{msg}", state.as_str()))
                    }
                    // A skip says why (`when:` false, a trigger that timed out, ...).
                    TaskState::Skipped if plain => self.line(&format!("  {} {name}{msg}", state.as_str())),
                    _ if plain => self.line(&format!("  {} {name} ({seconds:.2}s)", state.as_str())),
                    _ => {}
                }
                self.refresh();
            }
            Event::TaskRetry { task, cycle, label, attempt, delay_seconds, message, .. } => {
                self.running.remove(task);
                let step = step_of(task, cycle.as_deref()).to_string();
                self.row(&step).running.remove(task);
                self.draw_row(&step);
                let name = labelled(task, label.as_ref());
                self.line(&format!("  retry {name} after attempt {attempt} ({message}); next in {delay_seconds:.1}s"));
                self.refresh();
            }
            Event::ServiceReady { task, .. } => self.line(&format!("  ready {task} (service)")),
            Event::ServiceRestarted { task, cycle, attempt, restarts, delay_seconds, message, .. } => {
                self.running.remove(task);
                let step = step_of(task, cycle.as_deref()).to_string();
                self.row(&step).running.remove(task);
                self.draw_row(&step);
                self.line(&format!(
                    "  restart {task}: attempt {attempt} ended ({message}); restart {restarts} in {delay_seconds:.1}s"
                ));
                self.refresh();
            }
            Event::Alert { task, alert, .. } => {
                // The `message` of an object, else the whole line (a line that was not JSON
                // as it was written, unquoted).
                let text = match (alert.get("message").and_then(|m| m.as_str()), alert.as_str()) {
                    (Some(message), _) | (None, Some(message)) => message.to_string(),
                    (None, None) => alert.to_string(),
                };
                self.line(&format!("  alert {task}: {text}"));
            }
            Event::CycleStarted { point, .. } => {
                self.line(&format!("cycle {point} started"));
            }
            Event::CycleFinished { point, counts, .. } => {
                self.line(&format!(
                    "cycle {point} done: {} succeeded, {} cached, {} skipped",
                    counts.succeeded, counts.cached, counts.skipped
                ));
            }
            Event::TaskWaiting { task, waiting_for, .. } => {
                self.line(&format!("  {task} waits for {waiting_for}"));
            }
            Event::Stopping { point, .. } => {
                self.line(&format!("stopping: the active cycles finish; cycle {point} and later will not start"));
            }
            Event::Cancelling { signal, running, grace_seconds } => self.cancelling(signal, *running, *grace_seconds),
            Event::Killing { signal, running } => {
                let tasks = tasks_word(*running, "the running task");
                if let Some(b) = &self.bar {
                    // The countdown is over.
                    b.disable_steady_tick();
                    b.set_style(ProgressStyle::with_template("{msg}").unwrap_or_else(|_| ProgressStyle::default_bar()));
                    b.set_message(format!("killing {tasks} (SIGKILL)"));
                }
                self.line(&format!("received {signal} again: killing {tasks} at once (SIGKILL)"));
            }
            Event::RunFinished { run_id, state, counts, seconds, outputs, published } => {
                self.clear_bars();
                if !self.steps.is_empty() {
                    err_line(format_args!("{}", self.summary()));
                }
                err_line(format_args!(
                    "run {run_id} {state} in {seconds:.1}s: {} succeeded, {} cached, {} skipped, {} failed, {} upstream-failed, {} cancelled, {} not run",
                    counts.succeeded,
                    counts.cached,
                    counts.skipped,
                    counts.failed,
                    counts.upstream_failed,
                    counts.cancelled,
                    counts.pending
                ));
                // Where the results are: the workflow's `outputs:` and every published copy.
                if !outputs.is_empty() {
                    err_line(format_args!("outputs:"));
                    for (name, v) in outputs {
                        let text = match v {
                            serde_json::Value::String(s) => s.clone(),
                            serde_json::Value::Null => "(not available: a step it reads did not succeed)".into(),
                            serde_json::Value::Array(items) => items
                                .iter()
                                .map(|i| i.as_str().map_or_else(|| i.to_string(), str::to_string))
                                .collect::<Vec<_>>()
                                .join(" "),
                            other => other.to_string(),
                        };
                        err_line(format_args!("  {name}: {text}"));
                    }
                }
                if !published.is_empty() {
                    err_line(format_args!("published:"));
                    for p in published {
                        err_line(format_args!("  {p}"));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_task_belongs_to_the_step_its_name_starts_with() {
        assert_eq!(step_of("sim[3]", None), "sim");
        assert_eq!(step_of("twin/summary", None), "twin/summary");
        assert_eq!(step_of("600/twin/members[2]", Some("600")), "twin/members");
        assert_eq!(step_of("20261205T0600/obs", Some("20261205T0600")), "obs");
    }

    #[test]
    fn a_step_row_names_two_running_tasks_and_counts_the_rest() {
        let mut r = StepRow { step: "sim".into(), tasks: 8, succeeded: 3, cached: 1, failed: 1, ..StepRow::default() };
        for m in 4..7 {
            r.running.insert(format!("sim[{m}]"), Some(format!("seed={m}")));
        }
        assert_eq!(r.message(), "3 running: sim[4] seed=4, sim[5] seed=5 (+1) · 1 cached · 1 failed");
        assert_eq!(r.finished(), 5);
    }

    /// The running count comes from the tasks started and not yet ended, whatever way they
    /// end (a retry, a cached or skipped result, a restart): never "22/22 tasks, 1 running".
    #[test]
    fn a_task_that_ends_any_way_is_no_longer_running() {
        let mut h = HumanReporter::new();
        let started = |t: &str| Event::TaskStarted {
            task: t.into(),
            cycle: None,
            label: None,
            attempt: 1,
            job_id: "1".into(),
            dir: None,
        };
        let finished = |t: &str, state| Event::TaskFinished {
            task: t.into(),
            cycle: None,
            label: None,
            state,
            seconds: 0.1,
            message: None,
            files: Default::default(),
        };
        for t in ["a", "b", "c"] {
            h.event(&started(t));
        }
        h.event(&Event::TaskRetry {
            task: "a".into(),
            cycle: None,
            label: None,
            attempt: 1,
            delay_seconds: 0.0,
            message: "exit 1".into(),
            files: Default::default(),
        });
        h.event(&finished("b", TaskState::Cached));
        h.event(&finished("c", TaskState::Skipped));
        assert!(h.running.is_empty(), "{:?}", h.running);
        h.event(&started("a"));
        h.event(&finished("a", TaskState::UpstreamFailed));
        assert!(h.running.is_empty() && h.steps.iter().all(|r| r.running.is_empty()));
    }

    #[test]
    fn the_summary_has_a_line_per_step_in_the_order_they_came() {
        let mut h = HumanReporter::new();
        h.event(&Event::RunStarted {
            run_id: "r".into(),
            workflow: "w".into(),
            tasks: 3,
            already_done: 1,
            resumed: true,
            steps: vec![
                twinflow_engine::events::StepTasks { step: "prep".into(), tasks: 1, done: 1 },
                twinflow_engine::events::StepTasks { step: "sim".into(), tasks: 2, done: 0 },
            ],
        });
        for (m, state) in [(0, TaskState::Succeeded), (1, TaskState::Cached)] {
            h.event(&Event::TaskFinished {
                task: format!("sim[{m}]"),
                cycle: None,
                label: None,
                state,
                seconds: 61.0,
                message: None,
                files: Default::default(),
            });
        }
        let lines: Vec<Vec<String>> =
            h.summary().lines().map(|l| l.split_whitespace().map(String::from).collect()).collect();
        assert_eq!(lines[0].last().map(String::as_str), Some("time"));
        assert!(lines[0].contains(&"earlier".to_string()));
        assert_eq!(lines[1], ["prep", "1", "0", "0", "0", "0", "0", "1", "0ms"]);
        assert_eq!(lines[2], ["sim", "2", "1", "1", "0", "0", "0", "0", "2m2s"]);
    }
}
