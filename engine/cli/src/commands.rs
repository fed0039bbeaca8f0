//! What each subcommand does: parse its arguments into a session request, call the engine's
//! session API, render what comes back.

use std::time::Duration;

use miette::{GraphicalReportHandler, GraphicalTheme};
use twinflow_engine::diag::Diagnostics;
use twinflow_engine::events::{Reporter, TaskFailure, TaskState};
use twinflow_engine::session::backend::{BackendSettings, LocalSettings};
use twinflow_engine::session::render::{Format, PlanRequest, plan_view};
use twinflow_engine::session::start::{AllocationSize, RunRequest};
use twinflow_engine::session::{
    self, BackendChoice, CycleRow, CycleState, Notices, RunOutcome, RunSettings, SessionError, Status,
};

use crate::cli::{
    BackendArgs, BackendKind, CancelArgs, Cli, Command, PlanFormat, RunArgs, StatusArgs, WhyArgs, WorkflowArgs,
};
use crate::exit;
use crate::report::{HumanReporter, JsonReporter};

/// `println!` for command output: a closed stdout (`twinflow status | head -1`) ends the
/// command quietly instead of panicking.
macro_rules! outln {
    ($($t:tt)*) => { write_out(format_args!($($t)*), true)? };
}

/// `print!` for command output (see [`outln!`]).
macro_rules! out {
    ($($t:tt)*) => { write_out(format_args!($($t)*), false)? };
}

fn write_out(args: std::fmt::Arguments<'_>, newline: bool) -> Result<(), Failure> {
    use std::io::Write;
    let mut o = std::io::stdout().lock();
    match o.write_fmt(args).and_then(|()| if newline { o.write_all(b"\n") } else { Ok(()) }) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Err(Failure::Closed),
        r => Ok(r?),
    }
}

/// Runs a parsed command line and returns the exit code.
pub fn run(cli: Cli) -> i32 {
    init_tracing(&cli.log);
    let result = match cli.command {
        Command::Validate(a) => validate_cmd(&a),
        Command::Plan(a) => plan_cmd(&a),
        Command::Run(a) => run_cmd(a),
        Command::Status(a) => status_cmd(&a),
        Command::Why(a) => why_cmd(&a),
        Command::Cancel(a) => cancel_cmd(&a),
        Command::Stop(a) => stop_cmd(&a),
        Command::Signal(a) => signal_cmd(&a),
        Command::Schema => schema_cmd(),
    };
    match result {
        Ok(code) => code,
        Err(Failure::Session(SessionError::Invalid(d))) => {
            print_diagnostics(&d);
            exit::INVALID
        }
        Err(Failure::Session(SessionError::Usage(m))) => {
            eprintln!("error: {m}");
            exit::INVALID
        }
        Err(Failure::Session(e)) => {
            eprintln!("error: {:#}", anyhow::Error::from(e));
            exit::ERROR
        }
        Err(Failure::Other(e)) => {
            eprintln!("error: {e:#}");
            exit::ERROR
        }
        // Whoever reads our output has seen enough (`| head`): not an error.
        Err(Failure::Closed) => exit::OK,
    }
}

/// Why a command failed: what the engine said, or trouble of the CLI's own (writing to
/// stdout, starting the async runtime).
enum Failure {
    Session(SessionError),
    Other(anyhow::Error),
    /// Standard output was closed by its reader.
    Closed,
}

impl From<SessionError> for Failure {
    fn from(e: SessionError) -> Self {
        Failure::Session(e)
    }
}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Self {
        Failure::Other(e.into())
    }
}

impl From<serde_json::Error> for Failure {
    fn from(e: serde_json::Error) -> Self {
        Failure::Other(e.into())
    }
}

fn init_tracing(level: &str) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    // Colours only on a terminal: logs piped to a file or CI must stay plain text.
    let ansi = twinflow_contract::colour::enabled(std::io::stderr().is_terminal());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(ansi)
        .try_init();
}

/// Prints diagnostics with caret snippets; plain (no colour) when stderr is not a terminal,
/// so logs and snapshot tests are stable.
pub fn print_diagnostics(d: &Diagnostics) {
    eprint!("{}", render_diagnostics(d));
}

fn render_diagnostics(d: &Diagnostics) -> String {
    use std::io::IsTerminal;
    let theme = if twinflow_contract::colour::enabled(std::io::stderr().is_terminal()) {
        GraphicalTheme::unicode()
    } else {
        GraphicalTheme::unicode_nocolor()
    };
    let handler = GraphicalReportHandler::new_themed(theme).with_width(100);
    let mut out = String::new();
    for diag in &d.0 {
        let mut s = String::new();
        if handler.render_report(&mut s, diag).is_err() {
            s = format!("error: {diag}\n");
        }
        // One grep-able `error:` line per problem, with `file:line:col` when there is a place.
        match diag.location() {
            Some(loc) => out.push_str(&format!("error: {loc}: {diag}\n")),
            None => out.push_str(&format!("error: {diag}\n")),
        }
        out.push_str(&s);
        out.push('\n');
    }
    let n = d.len();
    out.push_str(&format!("{n} problem{} found\n", if n == 1 { "" } else { "s" }));
    out
}

/// Notices and warnings of a session, on stderr.
struct Stderr;

impl Notices for Stderr {
    fn notice(&mut self, message: &str) {
        eprintln!("{message}");
    }
    fn warning(&mut self, message: &str) {
        eprintln!("warning: {message}");
    }
}

fn backend_settings(b: &BackendArgs) -> BackendSettings {
    BackendSettings {
        backend: match b.backend {
            BackendKind::Local => BackendChoice::Local,
            BackendKind::Slurm => BackendChoice::Slurm,
        },
        profile: b.profile.clone(),
        arrays: b.arrays,
        allocation: b.allocation,
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    Ok(tokio::runtime::Builder::new_current_thread().enable_all().build()?)
}

fn schema_cmd() -> Result<i32, Failure> {
    out!("{}", session::workflow_schema_json());
    Ok(exit::OK)
}

fn validate_cmd(a: &WorkflowArgs) -> Result<i32, Failure> {
    let c = session::check(&a.file, &a.params, &a.inputs)?;
    outln!("{}: workflow `{}` is valid ({} steps, {} tasks)", a.file.display(), c.name, c.steps, c.tasks);
    Ok(exit::OK)
}

fn plan_cmd(a: &crate::cli::PlanArgs) -> Result<i32, Failure> {
    let req = PlanRequest {
        format: match a.format {
            PlanFormat::Text => Format::Text,
            PlanFormat::Dot => Format::Dot,
            PlanFormat::Mermaid => Format::Mermaid,
            PlanFormat::Json => Format::Json,
        },
        members: a.members,
        cycles: a.cycles,
        launch: a.launch,
        backend: backend_settings(&a.backend),
    };
    out!("{}", plan_view(&a.wf.file, &a.wf.params, &a.wf.inputs, &req)?);
    Ok(exit::OK)
}

fn run_cmd(a: RunArgs) -> Result<i32, Failure> {
    let b = backend_settings(&a.backend);
    let req = RunRequest {
        file: a.file.clone(),
        runs_dir: a.runs_dir.clone(),
        resume: a.resume.clone(),
        given: RunSettings {
            params: a.params.clone(),
            inputs: a.inputs.clone(),
            backend: b.backend,
            profile: b.profile,
            arrays: b.arrays,
            allocation: b.allocation,
            no_cache: a.no_cache,
            allocation_job: None,
            allocation_owned: None,
            cycles: a.cycles,
            until: a.until.clone(),
            cycle_start: a.start.clone(),
            cycle_every: None,
        },
        keep_going: a.keep_going,
        jobs: a.jobs,
        local: LocalSettings {
            cores: a.cores,
            grace: Some(Duration::from_secs_f64(a.grace.clamp(0.0, 3600.0))),
            mpiexec: a.mpiexec.clone(),
        },
        allocation: AllocationSize { nodes: a.alloc_nodes, cpus: a.alloc_cpus, time: a.alloc_time.clone() },
    };
    let mut reporter: Box<dyn Reporter> = if a.json { Box::new(JsonReporter) } else { Box::new(HumanReporter::new()) };
    let summary = runtime()?.block_on(async {
        // SIGINT/SIGTERM cancel the run (and a wait for an allocation).
        let (tx, rx) = tokio::sync::watch::channel(None);
        tokio::spawn(async move {
            use tokio::signal::unix::{SignalKind, signal};
            let (Ok(mut int), Ok(mut term)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) else {
                return;
            };
            let name = tokio::select! {
                _ = int.recv() => "SIGINT",
                _ = term.recv() => "SIGTERM",
            };
            let _ = tx.send(Some(name.to_string()));
            // Keep the channel open so the run can finish cancelling.
            std::future::pending::<()>().await;
        });
        session::start::run(req, reporter.as_mut(), &mut Stderr, rx).await
    })?;
    if !a.json {
        for (task, why) in summary.failures.iter().take(10) {
            match why {
                TaskFailure::Cancelled => eprintln!("cancelled: {task}"),
                TaskFailure::Failed(msg) => eprintln!("failed: {task}: {msg}"),
            }
        }
        if let Some(note) = &summary.note {
            eprintln!("{note}");
        }
        if !matches!(summary.outcome, RunOutcome::Succeeded | RunOutcome::Stopped) {
            eprintln!("hint: continue with `{}`", resume_command(&summary.run_id, &a.runs_dir));
        }
    }
    Ok(match summary.outcome {
        RunOutcome::Succeeded | RunOutcome::Stopped => exit::OK,
        RunOutcome::Failed => exit::RUN_FAILED,
        RunOutcome::Cancelled => exit::CANCELLED,
    })
}

fn stop_cmd(a: &crate::cli::StopArgs) -> Result<i32, Failure> {
    let s = session::control::stop(&a.runs_dir, &a.run)?;
    outln!("asked the engine of run {} to stop after its active cycles", s.run_id);
    Ok(exit::OK)
}

fn signal_cmd(a: &crate::cli::SignalArgs) -> Result<i32, Failure> {
    let s = session::control::signal(&a.runs_dir, &a.run, &a.name, a.cycle.as_deref(), &a.values)?;
    let whom = match &s.point {
        Some(p) => format!("cycle {p}"),
        None => "the earliest cycle waiting for it".into(),
    };
    outln!("signal `{}` sent to run {} ({whom})", a.name, s.run_id);
    if !s.engine_running {
        eprintln!("note: no engine is working on run {} now; the signal waits for `twinflow run --resume`", s.run_id);
    }
    Ok(exit::OK)
}

fn cancel_cmd(a: &CancelArgs) -> Result<i32, Failure> {
    let c = runtime()?.block_on(session::cancel::cancel(&a.runs_dir, &a.run, &mut Stderr))?;
    if let Some((pid, true)) = c.engine {
        outln!("sent SIGTERM to the engine of run {} (pid {pid}); it stops its steps", c.run_id);
    }
    if !c.jobs.is_empty() {
        let note = c.allocation.as_ref().map(|h| format!(" (allocation {h})")).unwrap_or_default();
        outln!(
            "cancelled {} SLURM job{} of run {}{note}: {}",
            c.jobs.len(),
            if c.jobs.len() == 1 { "" } else { "s" },
            c.run_id,
            c.jobs.iter().map(|j| j.0.as_str()).collect::<Vec<_>>().join(" ")
        );
    }
    match c.engine {
        Some((pid, false)) => {
            let remaining = if c.jobs.is_empty() { "" } else { "remaining " };
            outln!("sent SIGTERM to the engine of run {} (pid {pid}); it stops its {remaining}tasks", c.run_id);
        }
        None if c.engine_unknown && !c.jobs.is_empty() => {
            outln!(
                "hint: if its engine still runs, it records these tasks as cancelled; stop it with Ctrl-C or SIGTERM"
            );
        }
        _ => {}
    }
    if c.jobs.is_empty() && c.engine.is_none() {
        outln!("run {} has no SLURM jobs in flight and no engine running", c.run_id);
    }
    Ok(exit::OK)
}

/// A time recorded in the run database (ms since the epoch), in UTC or in the local time
/// zone.
fn fmt_ms(ms: i64, local: bool) -> String {
    match jiff::Timestamp::from_millisecond(ms) {
        Ok(t) if local => t.to_zoned(jiff::tz::TimeZone::system()).strftime("%Y-%m-%d %H:%M:%S %Z").to_string(),
        Ok(t) => t.strftime("%Y-%m-%d %H:%M:%S").to_string(),
        // Beyond the years -9999..=9999: not a time this program wrote.
        Err(_) => format!("{ms} ms"),
    }
}

fn status_cmd(a: &StatusArgs) -> Result<i32, Failure> {
    // `--check` without a run checks the latest.
    let run = a.run.as_deref().or(a.check.then_some("latest"));
    match session::status(&a.runs_dir, run)? {
        // Listing the runs of a directory that has none is an answer, not an error.
        Status::NoRuns if a.json => outln!("[]"),
        Status::NoRuns => {
            eprintln!("no runs in `{}` yet (run a workflow first, or pass --runs-dir)", a.runs_dir.display());
        }
        Status::Runs(runs) if a.json => outln!("{}", serde_json::to_string_pretty(&runs)?),
        Status::Runs(runs) => {
            let zone = if a.local_time { "local" } else { "UTC" };
            outln!("{:<22} {:<20} {:<11} STARTED ({zone})", "RUN", "WORKFLOW", "STATE");
            for r in runs {
                let started = fmt_ms(r.created_at, a.local_time);
                outln!("{:<22} {:<20} {:<11} {started}", r.id, r.workflow, r.shown_state());
            }
        }
        Status::Run { run, cycles, tasks, ran_ms } => {
            // A cycling run lists its cycles; its tasks are those of one cycle (`--cycle`), or
            // of the cycles that did not finish.
            let tasks: Vec<_> = match &a.cycle {
                Some(c) => {
                    let label = session::control::point_label(c)?;
                    if cycles.is_empty() {
                        return Err(SessionError::Usage(format!("run {} does not cycle: drop --cycle", run.id)).into());
                    }
                    let Some(row) = cycles.iter().find(|r| r.point == label) else {
                        let ranges: Vec<String> = cycles
                            .iter()
                            .filter_map(|r| r.last_point.as_ref().map(|l| format!("{}..{l}", r.point)))
                            .collect();
                        let hint = if ranges.is_empty() {
                            String::new()
                        } else {
                            format!(
                                " (if it was pruned by `keep:`, its counts are in the summary of {})",
                                ranges.join(", ")
                            )
                        };
                        return Err(SessionError::Usage(format!("run {} has no cycle `{c}`{hint}", run.id)).into());
                    };
                    if row.pruned {
                        eprintln!("cycle {label} was pruned (`keep:`): only its summary is left");
                    }
                    tasks.into_iter().filter(|t| t.cycle == Some(row.cycle)).collect()
                }
                None if !cycles.is_empty() && !a.json => {
                    let open: Vec<u64> =
                        cycles.iter().filter(|c| c.state != CycleState::Succeeded).map(|c| c.cycle).collect();
                    // A service of a finished cycle that still runs is shown too.
                    tasks
                        .into_iter()
                        .filter(|t| t.cycle.is_some_and(|c| open.contains(&c)) || t.state == TaskState::Running)
                        .collect()
                }
                None => tasks,
            };
            if a.json {
                let tasks: Vec<serde_json::Value> = tasks
                    .iter()
                    .map(|t| {
                        let mut v = serde_json::to_value(t).unwrap_or_default();
                        v["ran_ms"] = ran_ms.get(&t.task).copied().into();
                        v
                    })
                    .collect();
                let mut v = serde_json::json!({ "run": run, "tasks": tasks });
                if !cycles.is_empty() {
                    v["cycles"] = serde_json::to_value(&cycles)?;
                }
                outln!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                outln!("run {} of `{}` ({}): {}", run.id, run.workflow, run.file, run.shown_state());
                if !cycles.is_empty() && a.cycle.is_none() {
                    print_cycles(&cycles, a.local_time)?;
                }
                let mut counts = std::collections::BTreeMap::new();
                for t in &tasks {
                    *counts.entry(t.state.as_str()).or_insert(0) += 1;
                }
                outln!("{}", counts.iter().map(|(k, v)| format!("{v} {k}")).collect::<Vec<_>>().join(", "));
                let shown = tasks.len().min(500);
                for t in &tasks[..shown] {
                    // Time its attempts ran, not the time since its first start.
                    let secs = match ran_ms.get(&t.task) {
                        Some(ms) => format!("{:.2}s", *ms as f64 / 1000.0),
                        None => "-".into(),
                    };
                    outln!(
                        "  {:<30} {:<16} attempts={} {:>8} {}",
                        t.task,
                        t.state,
                        t.attempts,
                        secs,
                        t.message.clone().unwrap_or_default().lines().next().unwrap_or("")
                    );
                }
                if tasks.len() > shown {
                    outln!("  ... {} more (use --json for all)", tasks.len() - shown);
                }
                if run.shown_state() == "interrupted" {
                    outln!("hint: its engine is gone; continue it with `{}`", resume_command(&run.id, &a.runs_dir));
                }
            }
            if a.check && run.shown_state() != "succeeded" {
                return Ok(exit::RUN_FAILED);
            }
        }
    }
    Ok(exit::OK)
}

/// The cycles of a run: the first, the last 20, and every one that did not succeed.
fn print_cycles(cycles: &[CycleRow], local: bool) -> Result<(), Failure> {
    let n: u64 = cycles.iter().map(CycleRow::count).sum();
    let done: u64 = cycles.iter().filter(|c| c.state == CycleState::Succeeded).map(CycleRow::count).sum();
    let pruned: u64 = cycles.iter().filter(|c| c.pruned).map(CycleRow::count).sum();
    outln!(
        "{n} cycle{}: {done} succeeded{}",
        if n == 1 { "" } else { "s" },
        if pruned > 0 { format!(" ({pruned} pruned)") } else { String::new() }
    );
    let zone = if local { "local" } else { "UTC" };
    outln!("  {:<18} {:<10} {:<20} {:>9}  NOTE", "CYCLE", "STATE", format!("STARTED ({zone})"), "TOOK");
    let rows = cycles.len();
    for (k, c) in cycles.iter().enumerate() {
        if k > 0 && k + 20 < rows && c.state == CycleState::Succeeded {
            continue;
        }
        let took = match (c.started_at, c.finished_at) {
            (Some(a), Some(b)) => format!("{:.1}s", (b - a) as f64 / 1000.0),
            _ => "-".into(),
        };
        let note = match (&c.waits, &c.counts) {
            (Some(w), _) => format!("waits for {w}"),
            (None, Some(k)) => format!("{} ran, {} cached, {} skipped", k.succeeded, k.cached, k.skipped),
            _ => String::new(),
        };
        let (point, note) = match &c.last_point {
            Some(last) => (format!("{}..{last}", c.point), format!("{} cycles, pruned: {note}", c.count())),
            None => (c.point.clone(), note),
        };
        let started = c.started_at.map(|t| fmt_ms(t, local)).unwrap_or_default();
        outln!("  {:<18} {:<10} {:<20} {:>9}  {note}", point, c.state.as_str(), started, took);
    }
    Ok(())
}

/// The command that continues run `id` of `runs_dir`.
fn resume_command(id: &str, runs_dir: &std::path::Path) -> String {
    if runs_dir == std::path::Path::new("runs") {
        format!("twinflow run --resume {id}")
    } else {
        format!("twinflow run --resume {id} --runs-dir {}", runs_dir.display())
    }
}

fn why_cmd(a: &WhyArgs) -> Result<i32, Failure> {
    let verdicts =
        session::why(&a.wf.file, &a.wf.params, &a.wf.inputs, &a.runs_dir, a.step.as_deref(), a.cycle.as_deref())?;
    if a.json {
        outln!("{}", serde_json::to_string_pretty(&verdicts)?);
    } else {
        for v in verdicts.iter().take(200) {
            if v.up_to_date {
                outln!("{}: up to date", v.task);
            } else {
                outln!("{}: would run because", v.task);
                for r in &v.reasons {
                    outln!("  - {r}");
                }
            }
        }
    }
    Ok(exit::OK)
}
