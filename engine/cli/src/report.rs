//! Rendering engine events: progress bars on a terminal, plain lines otherwise, JSON lines
//! with `--json`.

use std::io::{IsTerminal, Write};
use std::time::Instant;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};
use twinflow_engine::events::{Event, Reporter, TaskState};

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

/// Progress for people: a bar with done/running/failed counts and an ETA on a terminal,
/// one line per finished task elsewhere (CI logs).
pub struct HumanReporter {
    bar: Option<ProgressBar>,
    total: u64,
    done: u64,
    running: u64,
    failed: u64,
    start: Instant,
}

impl HumanReporter {
    /// A reporter drawing to stderr.
    pub fn new() -> Self {
        Self { bar: None, total: 0, done: 0, running: 0, failed: 0, start: Instant::now() }
    }

    fn line(&self, s: &str) {
        match &self.bar {
            Some(b) => b.println(s),
            None => err_line(format_args!("{s}")),
        }
    }

    fn refresh(&self) {
        if let Some(b) = &self.bar {
            b.set_position(self.done);
            b.set_message(format!("{} running, {} failed", self.running, self.failed));
        }
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
            Event::RunStarted { run_id, workflow, tasks, already_done, resumed } => {
                self.total = *tasks as u64;
                self.done = *already_done as u64;
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
                if std::io::stderr().is_terminal() {
                    let b = ProgressBar::with_draw_target(Some(self.total), ProgressDrawTarget::stderr());
                    b.set_style(
                        ProgressStyle::with_template(
                            "{elapsed_precise} [{bar:30}] {pos}/{len} tasks, {msg} (eta {eta})",
                        )
                        .unwrap_or_else(|_| ProgressStyle::default_bar())
                        .progress_chars("=> "),
                    );
                    b.set_position(self.done);
                    self.bar = Some(b);
                }
            }
            Event::TaskStarted { .. } => {
                self.running += 1;
                self.refresh();
            }
            Event::TaskFinished { task, state, seconds, message, .. } => {
                if matches!(state, TaskState::Succeeded | TaskState::Failed | TaskState::Cancelled) {
                    self.running = self.running.saturating_sub(1);
                }
                self.done += 1;
                if matches!(state, TaskState::Failed) {
                    self.failed += 1;
                }
                // A failure's message is several lines (attempt directory, files, the end of
                // its output): the lines after the first are indented under the task.
                let msg = message.as_ref().map(|m| format!(": {}", indent_rest(m, "    "))).unwrap_or_default();
                match state {
                    TaskState::Failed | TaskState::UpstreamFailed | TaskState::Cancelled => {
                        self.line(&format!("  {} {task}{msg}", state.as_str()))
                    }
                    // A skip says why (`when:` false, a trigger that timed out, ...).
                    TaskState::Skipped if self.bar.is_none() && self.total <= 200 => {
                        self.line(&format!("  {} {task}{msg}", state.as_str()))
                    }
                    _ if self.bar.is_none() && self.total <= 200 => {
                        self.line(&format!("  {} {task} ({seconds:.2}s)", state.as_str()))
                    }
                    _ => {}
                }
                self.refresh();
            }
            Event::TaskRetry { task, attempt, delay_seconds, message, .. } => {
                self.running = self.running.saturating_sub(1);
                self.line(&format!("  retry {task} after attempt {attempt} ({message}); next in {delay_seconds:.1}s"));
                self.refresh();
            }
            Event::ServiceReady { task, .. } => self.line(&format!("  ready {task} (service)")),
            Event::ServiceRestarted { task, attempt, restarts, delay_seconds, message, .. } => {
                self.running = self.running.saturating_sub(1);
                self.line(&format!(
                    "  restart {task}: attempt {attempt} ended ({message}); restart {restarts} in {delay_seconds:.1}s"
                ));
                self.refresh();
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
                if let Some(b) = self.bar.take() {
                    b.finish_and_clear();
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
                let _ = self.start;
            }
        }
    }
}
