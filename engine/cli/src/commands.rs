//! What each subcommand does: parse its arguments into a session request, call the engine's
//! session API, render what comes back.

use std::time::Duration;

use miette::{GraphicalReportHandler, GraphicalTheme};
use twinflow_engine::diag::Diagnostics;
use twinflow_engine::events::{Reporter, TaskFailure, TaskState};
use twinflow_engine::session::backend::{BackendSettings, LocalSettings};
use twinflow_engine::session::render::{Format, PlanRequest, plan_view};
use twinflow_engine::session::start::{AllocationSize, EnvSnapshot, RunRequest};
use twinflow_engine::session::{
    self, BackendChoice, CycleRow, CycleState, Notices, RunOutcome, RunSettings, SessionError, Status,
};

use crate::cli::{
    BackendArgs, BackendKind, CancelArgs, Cli, Command, LogsArgs, PlanFormat, ReportArgs, RunArgs, StatusArgs,
    ValidateArgs, WhyArgs, WorkerArgs,
};
use crate::exit;
use crate::report::{HumanReporter, JsonReporter, indent_rest};

/// `println!` for command output: a closed stdout (`twinflow status | head -1`) ends the
/// command quietly instead of panicking.
macro_rules! outln {
    ($($t:tt)*) => { write_out(format_args!($($t)*), true)? };
}

/// `print!` for command output (see [`outln!`]).
macro_rules! out {
    ($($t:tt)*) => { write_out(format_args!($($t)*), false)? };
}

/// `eprintln!` that does not panic when stderr is closed (`twinflow run ... 2>&1 | head`):
/// what the run reports there is a courtesy, the run and its record go on.
macro_rules! errln {
    ($($t:tt)*) => {{
        use std::io::Write;
        let mut e = std::io::stderr().lock();
        let _ = e.write_fmt(format_args!($($t)*)).and_then(|()| e.write_all(b"\n"));
    }};
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
        Command::Logs(a) => logs_cmd(&a),
        Command::Why(a) => why_cmd(&a),
        Command::Cancel(a) => cancel_cmd(&a),
        Command::Stop(a) => stop_cmd(&a),
        Command::Signal(a) => signal_cmd(&a),
        Command::Outputs(a) => outputs_cmd(&a),
        Command::Export(a) => export_cmd(&a),
        Command::Clean(a) => clean_cmd(&a),
        Command::Report(a) => report_cmd(&a),
        Command::Schema => schema_cmd(),
        Command::Worker(a) => worker_cmd(&a),
    };
    match result {
        Ok(code) => code,
        Err(Failure::Session(SessionError::Invalid(d))) => {
            print_diagnostics(&d);
            exit::INVALID
        }
        // What the run needs is not on this machine: an environment error, located.
        Err(Failure::Session(SessionError::Environment(d))) => {
            print_diagnostics(&d);
            exit::ERROR
        }
        Err(Failure::Session(SessionError::Usage(m))) => {
            errln!("error: {m}");
            exit::INVALID
        }
        Err(Failure::Session(e)) => {
            errln!("error: {:#}", anyhow::Error::from(e));
            exit::ERROR
        }
        Err(Failure::Other(e)) => {
            errln!("error: {e:#}");
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
    use std::io::Write;
    let _ = std::io::stderr().lock().write_all(render_diagnostics(d).as_bytes());
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
        errln!("{message}");
    }
    fn warning(&mut self, message: &str) {
        errln!("warning: {message}");
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

fn worker_cmd(a: &WorkerArgs) -> Result<i32, Failure> {
    let heartbeat = match twinflow_engine::units::parse_duration(&a.heartbeat) {
        Ok(d) if d >= Duration::from_millis(100) => d,
        Ok(_) => return Err(SessionError::Usage("`--heartbeat`: must be at least 100ms".into()).into()),
        Err(e) => return Err(SessionError::Usage(format!("`--heartbeat {}`: {e}", a.heartbeat)).into()),
    };
    let grace = Duration::from_secs_f64(a.grace.clamp(0.0, 3600.0));
    let r = runtime()?.block_on(session::pilot::run_worker(
        a.connect.clone(),
        a.address_file.clone(),
        &a.secret_file,
        heartbeat,
        grace,
        a.node.clone(),
        a.cpus,
    ));
    match r {
        Ok(()) => Ok(exit::OK),
        // The engine went away: its tasks were stopped; the run is to be resumed.
        Err(e @ (session::pilot::WorkerError::EngineLost(_) | session::pilot::WorkerError::Stopped(_))) => {
            errln!("twinflow worker: {e}");
            Ok(exit::RUN_FAILED)
        }
        Err(e) => {
            errln!("twinflow worker: {e}");
            Ok(exit::ERROR)
        }
    }
}

fn schema_cmd() -> Result<i32, Failure> {
    out!("{}", session::workflow_schema_json());
    Ok(exit::OK)
}

fn validate_cmd(v: &ValidateArgs) -> Result<i32, Failure> {
    let a = &v.wf;
    let env = v.check_env.then(|| LocalSettings { mpiexec: v.mpiexec.clone(), ..Default::default() });
    let c = session::check(&a.file, &a.params, &a.inputs, env.as_ref())?;
    for w in &c.warnings {
        errln!("warning: {w}");
    }
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
        env_snapshot: EnvSnapshot { enabled: !a.no_env_snapshot, exclude: a.env_exclude.clone() },
        local: LocalSettings {
            cores: a.cores,
            grace: Some(Duration::from_secs_f64(a.grace.clamp(0.0, 3600.0))),
            mpiexec: a.mpiexec.clone(),
        },
        allocation: AllocationSize { nodes: a.alloc_nodes, cpus: a.alloc_cpus, time: a.alloc_time.clone() },
        rerun: a.rerun.clone(),
    };
    let mut reporter: Box<dyn Reporter> = if a.json { Box::new(JsonReporter) } else { Box::new(HumanReporter::new()) };
    let summary = runtime()?.block_on(async {
        // SIGINT/SIGTERM cancel the run (and a wait for an allocation); a second one kills
        // the running tasks at once instead of waiting out the grace period.
        let (tx, rx) = tokio::sync::watch::channel(None);
        tokio::spawn(async move {
            use tokio::signal::unix::{SignalKind, signal};
            let (Ok(mut int), Ok(mut term)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) else {
                return;
            };
            // The loop keeps the channel open so the run can finish cancelling.
            loop {
                let name = tokio::select! {
                    _ = int.recv() => "SIGINT",
                    _ = term.recv() => "SIGTERM",
                };
                let _ = tx.send(Some(name.to_string()));
            }
        });
        session::start::run(req, reporter.as_mut(), &mut Stderr, rx).await
    })?;
    if !a.json {
        // Each failure was shown in full when it happened; here one line each.
        let shown = 10;
        for (task, why) in summary.failures.iter().take(shown) {
            match why {
                TaskFailure::Cancelled => errln!("cancelled: {task}"),
                TaskFailure::Failed(msg) => errln!("failed: {task}: {}", msg.lines().next().unwrap_or_default()),
            }
        }
        if summary.failures.len() > shown {
            errln!(
                "... and {} more (`{}`)",
                summary.failures.len() - shown,
                with_runs_dir(format!("twinflow status {}", summary.run_id), &a.runs_dir)
            );
        }
        if let Some(note) = &summary.note {
            errln!("{note}");
        }
        if let Some((task, _)) = summary.failures.iter().find(|(_, f)| matches!(f, TaskFailure::Failed(_))) {
            errln!("{}", logs_hint(&summary.run_id, task, &a.runs_dir));
        }
        if !matches!(summary.outcome, RunOutcome::Succeeded | RunOutcome::Stopped) {
            errln!("hint: continue with `{}`", resume_command(&summary.run_id, &a.runs_dir));
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
        errln!("note: no engine is working on run {} now; the signal waits for `twinflow run --resume`", s.run_id);
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
    if !c.workers.is_empty() {
        outln!(
            "sent SIGTERM to the pilot workers of run {} (pids {}); they stop their tasks",
            c.run_id,
            c.workers.iter().map(u32::to_string).collect::<Vec<_>>().join(", ")
        );
    }
    if c.jobs.is_empty() && c.engine.is_none() && c.workers.is_empty() {
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

/// `0.4s`, `12.0s`, `3m05s`, `2h10m`.
fn fmt_seconds(s: f64) -> String {
    let whole = s as u64;
    match whole {
        0..60 => format!("{s:.1}s"),
        60..3600 => format!("{}m{:02}s", whole / 60, whole % 60),
        _ => format!("{}h{:02}m", whole / 3600, whole / 60 % 60),
    }
}

/// `18/20 done, 1 failed, 1 not run`: tasks finished well of all, then those that did not.
fn task_counts(c: &twinflow_engine::events::Counts) -> String {
    let mut s = format!("{}/{} done", c.succeeded + c.cached + c.skipped, c.total());
    for (n, what) in [
        (c.failed, "failed"),
        (c.upstream_failed, "upstream-failed"),
        (c.cancelled, "cancelled"),
        (c.pending, "not run"),
    ] {
        if n > 0 {
            s.push_str(&format!(", {n} {what}"));
        }
    }
    s
}

fn status_cmd(a: &StatusArgs) -> Result<i32, Failure> {
    // `--check` without a run checks the latest.
    let run = a.run.as_deref().or(a.check.then_some("latest"));
    match session::status(&a.runs_dir, run)? {
        // Listing the runs of a directory that has none is an answer, not an error.
        Status::NoRuns if a.json => outln!("[]"),
        Status::NoRuns => {
            errln!("no runs in `{}` yet (run a workflow first, or pass --runs-dir)", a.runs_dir.display());
        }
        Status::Runs(runs) if a.json => outln!("{}", serde_json::to_string_pretty(&runs)?),
        Status::Runs(runs) => {
            let zone = if a.local_time { "local" } else { "UTC" };
            let started = format!("STARTED ({zone})");
            // Local times carry their zone's name: a wider column.
            let w = if a.local_time { 23 } else { 19 };
            outln!(
                "{:<22} {:<20} {:<11} {started:<w$} {:>9}  {:<30} PARAMS",
                "RUN",
                "WORKFLOW",
                "STATE",
                "TOOK",
                "TASKS"
            );
            for l in runs {
                let r = &l.run;
                let started = fmt_ms(r.created_at, a.local_time);
                let params = if r.settings.params.is_empty() { "-".to_string() } else { r.settings.params.join(" ") };
                outln!(
                    "{:<22} {:<20} {:<11} {started:<w$} {:>9}  {:<30} {params}",
                    r.id,
                    r.workflow,
                    r.shown_state(),
                    fmt_seconds(l.seconds),
                    task_counts(&l.counts)
                );
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
                        errln!("cycle {label} was pruned (`keep:`): only its summary is left");
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
                        // Declared outputs at their real paths, and value outputs.
                        v["outputs"] = serde_json::to_value(session::results::task_outputs_json(t)).unwrap_or_default();
                        if let Some(dir) = &t.dir {
                            let (stdout, stderr) = session::log_files(std::path::Path::new(dir));
                            v["stdout"] = stdout.display().to_string().into();
                            v["stderr"] = stderr.display().to_string().into();
                        }
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
                let mut in_full = 0;
                for t in &tasks[..shown] {
                    // Time its attempts ran, not the time since its first start.
                    let secs = match ran_ms.get(&t.task) {
                        Some(ms) => format!("{:.2}s", *ms as f64 / 1000.0),
                        None => "-".into(),
                    };
                    let message = t.message.as_deref().unwrap_or_default();
                    let (first, rest) = message.split_once('\n').unwrap_or((message, ""));
                    // A member with its scatter values: `member[7] seed=2 rain=40.0`.
                    let name = match &t.label {
                        Some(l) => format!("{} {l}", t.task),
                        None => t.task.clone(),
                    };
                    outln!("  {name:<30} {:<16} attempts={} {:>8} {first}", t.state, t.attempts, secs);
                    // A failure in full (the first ten; then where each ran): its attempt
                    // directory, its files, the end of its output.
                    if t.state == TaskState::Failed || t.state == TaskState::Cancelled {
                        in_full += 1;
                        if !rest.is_empty() && in_full <= 10 {
                            outln!("      {}", indent_rest(rest, "      "));
                        } else if let Some(dir) = &t.dir {
                            outln!("      attempt directory: {dir}");
                        }
                    }
                }
                if tasks.len() > shown {
                    outln!("  ... {} more (use --json for all)", tasks.len() - shown);
                }
                if let Some(t) = tasks.iter().find(|t| t.state == TaskState::Failed && t.dir.is_some()) {
                    outln!("{}", logs_hint(&run.id, &t.task, &a.runs_dir));
                }
                match run.shown_state() {
                    "interrupted" => {
                        outln!("hint: its engine is gone; continue it with `{}`", resume_command(&run.id, &a.runs_dir))
                    }
                    "failed" | "cancelled" => outln!("hint: continue with `{}`", resume_command(&run.id, &a.runs_dir)),
                    _ => {}
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
    with_runs_dir(format!("twinflow run --resume {id}"), runs_dir)
}

/// The hint naming the command that prints `task`'s output.
fn logs_hint(run: &str, task: &str, runs_dir: &std::path::Path) -> String {
    let cmd = with_runs_dir(format!("twinflow logs {run} {}", shell_word(task)), runs_dir);
    format!("hint: `{cmd}` prints a task's output (`--stdout`, `--attempt N`)")
}

/// `command`, with `--runs-dir DIR` unless `runs_dir` is the default.
fn with_runs_dir(command: String, runs_dir: &std::path::Path) -> String {
    if runs_dir == std::path::Path::new("runs") {
        command
    } else {
        format!("{command} --runs-dir {}", shell_word(&runs_dir.display().to_string()))
    }
}

/// `s` as one word for a shell: quoted when it has characters a shell would read
/// (`'member[3]'`: zsh expands brackets).
fn shell_word(s: &str) -> String {
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_./:=,+@%".contains(c)) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

fn report_cmd(a: &ReportArgs) -> Result<i32, Failure> {
    let files = session::report::ReportFiles {
        html: a.output.as_deref(),
        trace: a.trace.as_deref(),
        junit: a.junit.as_deref(),
    };
    let w = session::report::write(&a.runs_dir, &a.run, &files)?;
    errln!("report of run {} ({}): {}", w.run_id, w.state, w.html.display());
    for p in [&w.trace, &w.junit].into_iter().flatten() {
        errln!("wrote {}", p.display());
    }
    Ok(exit::OK)
}

fn logs_cmd(a: &LogsArgs) -> Result<i32, Failure> {
    use std::io::{Read, Seek, SeekFrom};
    if a.follow && a.attempt.is_none() && session::logs::waiting(&a.runs_dir, &a.run, &a.task)? {
        errln!("waiting for `{}` to start", a.task);
        while session::logs::waiting(&a.runs_dir, &a.run, &a.task)? {
            std::thread::sleep(Duration::from_millis(250));
        }
    }
    let logs = session::logs::find(&a.runs_dir, &a.run, &a.task, a.attempt)?;
    let which = match logs.state {
        TaskState::Cached => "cached: the result of an earlier run".to_string(),
        st => format!("attempt {} of {}, {st}", logs.attempt, logs.attempts),
    };
    errln!("run {}, task `{}` ({which}): {}", logs.run_id, logs.task, logs.dir.display());
    let files: Vec<&std::path::Path> = match (a.stdout, a.stderr) {
        (true, _) => vec![&logs.stdout],
        (_, true) => vec![&logs.stderr],
        _ => vec![&logs.stdout, &logs.stderr],
    };
    // Both files: each under a `==> FILE <==` header, as `tail` does; while following, a
    // header again whenever the other file grows.
    let headers = files.len() > 1;
    let mut last: Option<usize> = None;
    let mut copy = |k: usize, f: &mut std::fs::File, path: &std::path::Path, always: bool| {
        let mut buf = vec![];
        f.read_to_end(&mut buf)?;
        if buf.is_empty() && !always {
            return Ok::<(), Failure>(());
        }
        if headers && last != Some(k) {
            if last.is_some() {
                outln!("");
            }
            outln!("==> {} <==", path.display());
            last = Some(k);
        }
        write_bytes(&buf)
    };
    let mut open: Vec<(&std::path::Path, Option<std::fs::File>)> = vec![];
    for (k, p) in files.iter().enumerate() {
        match std::fs::File::open(p) {
            Ok(mut f) => {
                copy(k, &mut f, p, true)?;
                open.push((p, Some(f)));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                errln!("note: `{}` does not exist (the attempt has not written it)", p.display());
                open.push((p, None));
            }
            Err(e) => return Err(Failure::Other(anyhow::Error::new(e).context(format!("reading `{}`", p.display())))),
        }
    }
    if !a.follow {
        return Ok(exit::OK);
    }
    if !logs.running()? {
        errln!("note: attempt {} of `{}` is not running: nothing to follow", logs.attempt, logs.task);
        return Ok(exit::OK);
    }
    // Poll the files for what was appended; ask the run database every second whether the
    // attempt still runs (a successful attempt's directory is renamed to `out/`: the open
    // files stay valid).
    let mut checked = std::time::Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let running = if checked.elapsed() >= Duration::from_secs(1) {
            checked = std::time::Instant::now();
            logs.running()?
        } else {
            true
        };
        for (k, (p, f)) in open.iter_mut().enumerate() {
            if f.is_none() {
                *f = std::fs::File::open(*p).ok();
            }
            if let Some(f) = f {
                // A file that shrank (truncated by the step) is read again from its start.
                let len = f.metadata().map(|m| m.len()).unwrap_or(0);
                if len < f.stream_position().unwrap_or(0) {
                    f.seek(SeekFrom::Start(0))?;
                }
                copy(k, f, p, false)?;
            }
        }
        if !running {
            break;
        }
    }
    let (state, attempts) = logs.now()?;
    if attempts > logs.attempt {
        errln!(
            "attempt {} of `{}` ended; attempt {attempts} started: `{}`",
            logs.attempt,
            logs.task,
            with_runs_dir(format!("twinflow logs {} {} -f", logs.run_id, shell_word(&logs.task)), &a.runs_dir)
        );
    } else {
        errln!("attempt {} of `{}` ended: {state}", logs.attempt, logs.task);
    }
    Ok(exit::OK)
}

/// Raw bytes to stdout (see [`outln!`] for a closed stdout).
fn write_bytes(b: &[u8]) -> Result<(), Failure> {
    use std::io::Write;
    let mut o = std::io::stdout().lock();
    match o.write_all(b).and_then(|()| o.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Err(Failure::Closed),
        r => Ok(r?),
    }
}

fn why_cmd(a: &WhyArgs) -> Result<i32, Failure> {
    let verdicts = session::why(
        &a.wf.file,
        &a.wf.params,
        &a.wf.inputs,
        &a.runs_dir,
        a.step.as_deref(),
        a.cycle.as_deref(),
        &a.rerun,
    )?;
    if a.json {
        outln!("{}", serde_json::to_string_pretty(&verdicts)?);
    } else {
        // Up-to-date tasks of a big sweep would bury the few that run: they are counted,
        // and listed only when few.
        let stale = verdicts.iter().filter(|v| !v.up_to_date).count();
        let list_fresh = verdicts.len() <= 50;
        let mut shown = 0;
        for v in verdicts.iter().filter(|v| list_fresh || !v.up_to_date) {
            shown += 1;
            if shown > 200 {
                outln!("... (use --json for all)");
                break;
            }
            // A member with its scatter values: `member[7] seed=2 rain=40.0: up to date`.
            let name = match &v.label {
                Some(l) => format!("{} {l}", v.task),
                None => v.task.clone(),
            };
            if v.up_to_date {
                outln!("{name}: up to date");
            } else {
                outln!("{name}: would run because");
                for r in &v.reasons {
                    outln!("  - {r}");
                }
            }
        }
        outln!("{stale} of {} would run", verdicts.len());
    }
    Ok(exit::OK)
}

fn export_cmd(a: &crate::cli::ExportArgs) -> Result<i32, Failure> {
    let e = session::export::ro_crate(&a.runs_dir, &a.run, &a.ro_crate)?;
    if a.json {
        outln!("{}", serde_json::to_string_pretty(&e)?);
    } else {
        outln!(
            "wrote the RO-Crate {} of {} tasks ({} attempts, {} files) to {}",
            e.identifier,
            e.tasks,
            e.attempts,
            e.files,
            e.path.display()
        );
    }
    Ok(exit::OK)
}

fn outputs_cmd(a: &crate::cli::OutputsArgs) -> Result<i32, Failure> {
    let r = session::results::outputs(&a.runs_dir, &a.run)?;
    if a.json {
        outln!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(exit::OK);
    }
    outln!("run {} of `{}`: {}", r.run.id, r.run.workflow, r.run.shown_state());
    if let Some(e) = &r.outputs_error {
        errln!("warning: the workflow's `outputs:` cannot be resolved: {e}");
    }
    if !r.outputs.is_empty() {
        outln!("outputs:");
        for o in &r.outputs {
            outln!("  {}: {}", o.name, o.text().replace('\n', " "));
        }
    }
    outln!("tasks:");
    for t in &r.tasks {
        let from = t.reused_from.as_ref().map(|f| format!(" (reused from run {f})")).unwrap_or_default();
        let gone = if t.gone { format!(": its result directory `{}` is gone", t.dir) } else { String::new() };
        outln!("  {} {}{from}{gone}", t.task, t.state);
        for (k, v) in &t.outputs {
            let text = v.as_str().map_or_else(|| v.to_string(), str::to_string);
            outln!("    {k}: {text}");
        }
    }
    Ok(exit::OK)
}

/// `1536` → `1.5 KiB`.
fn fmt_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 { format!("{b} B") } else { format!("{v:.1} {}", UNITS[u]) }
}

fn clean_cmd(a: &crate::cli::CleanArgs) -> Result<i32, Failure> {
    let before = a.before.as_deref().map(session::clean::parse_before).transpose()?;
    let req = session::clean::CleanRequest { keep: a.keep, before, failed: a.failed, dry_run: a.dry_run };
    let r = session::clean::clean(&a.runs_dir, &req)?;
    if a.json {
        outln!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        let verb = if r.dry_run { "would remove" } else { "removed" };
        for x in &r.removed {
            outln!("{verb} {} ({}, {}): {}", x.id, x.workflow, x.state, fmt_bytes(x.bytes));
        }
        for k in &r.kept {
            outln!("kept {}: {}", k.id, k.reason);
        }
        let freed = if r.dry_run { "freeing" } else { "freed" };
        outln!("{verb} {} runs, {freed} {}", r.removed.len(), fmt_bytes(r.bytes));
    }
    for e in &r.errors {
        errln!("warning: {e}");
    }
    Ok(exit::OK)
}
