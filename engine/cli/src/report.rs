//! Rendering engine events: progress bars on a terminal, plain lines otherwise, JSON lines
//! with `--json`.

use std::io::{IsTerminal, Write};
use std::time::Instant;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use twinflow_engine::events::{Event, Reporter, TaskState};

/// Writes a line to stderr; a closed stderr (`twinflow run ... 2>&1 | head`) is not an
/// error of the run, which goes on and is recorded as usual.
fn err_line(args: std::fmt::Arguments<'_>) {
    let mut e = std::io::stderr().lock();
    let _ = e.write_fmt(args);
    let _ = e.write_all(b"\n");
}

/// JSON lines on stdout, one event per line.
pub struct JsonReporter;

impl Reporter for JsonReporter {
    fn event(&mut self, e: &Event) {
        let mut out = std::io::stdout().lock();
        let _ = serde_json::to_writer(&mut out, e);
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
                let msg = message.as_ref().map(|m| format!(": {m}")).unwrap_or_default();
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
            Event::Cancelling { signal } => self.line(&format!(
                "received {signal}: stopping running steps (SIGTERM, then SIGKILL after the grace period)"
            )),
            Event::RunFinished { run_id, state, counts, seconds } => {
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
                let _ = self.start;
            }
        }
    }
}
