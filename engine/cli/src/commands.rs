//! What each subcommand does, in terms of the engine library.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use miette::{GraphicalReportHandler, GraphicalTheme};
use twinflow_engine::diag::Diagnostics;
use twinflow_engine::events::Reporter;
use twinflow_engine::events::{TaskFailure, TaskState};
use twinflow_engine::execute::Backend;
use twinflow_engine::execute::local::{LocalBackend, LocalOptions, render_argv};
use twinflow_engine::execute::slurm::{self, Profile, SlurmBackend, SlurmOptions};
use twinflow_engine::plan::{self, Plan};
use twinflow_engine::run::{self, RunOptions, RunOutcome};
use twinflow_engine::session::render::{Format, RenderOptions, render};
use twinflow_engine::state::{BackendChoice, RunSettings, RunState, Store};
use twinflow_engine::validate::{self, Overrides, Workflow};

use crate::cli::{
    BackendArgs, BackendKind, CancelArgs, Cli, Command, PlanFormat, RunArgs, StatusArgs, WhyArgs, WorkflowArgs,
};
use crate::exit;
use crate::report::{HumanReporter, JsonReporter};

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
        Command::Schema => {
            print!("{}", twinflow_engine::spec::schema::workflow_schema_json());
            Ok(exit::OK)
        }
    };
    match result {
        Ok(code) => code,
        Err(Failure::Invalid(d)) => {
            print_diagnostics(&d);
            exit::INVALID
        }
        Err(Failure::Usage(m)) => {
            eprintln!("error: {m}");
            exit::INVALID
        }
        Err(Failure::Error(e)) => {
            eprintln!("error: {e:#}");
            exit::ERROR
        }
    }
}

enum Failure {
    Invalid(Diagnostics),
    Usage(String),
    Error(anyhow::Error),
}

impl<E: Into<anyhow::Error>> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure::Error(e.into())
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

fn parse_kv(items: &[String], what: &str) -> Result<Vec<(String, String)>, Failure> {
    items
        .iter()
        .map(|s| match s.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.trim().to_string(), v.to_string())),
            _ => Err(Failure::Usage(format!("`{s}` is not `NAME=VALUE` ({what})"))),
        })
        .collect()
}

fn overrides(params: &[String], inputs: &[String]) -> Result<Overrides, Failure> {
    Ok(Overrides {
        params: parse_kv(params, "-p")?,
        inputs: parse_kv(inputs, "-i")?.into_iter().map(|(k, v)| (k, PathBuf::from(v))).collect(),
    })
}

fn load(file: &Path, o: &Overrides) -> Result<Workflow, Failure> {
    validate::load(file, o).map_err(Failure::Invalid)
}

fn compile(wf: Workflow) -> Result<Plan, Failure> {
    plan::compile(Arc::new(wf)).map_err(Failure::Invalid)
}

fn validate_cmd(a: &WorkflowArgs) -> Result<i32, Failure> {
    let o = overrides(&a.params, &a.inputs)?;
    let wf = load(&a.file, &o)?;
    let name = wf.name.clone();
    let steps = wf.steps.len();
    let p = compile(wf)?;
    println!("{}: workflow `{name}` is valid ({steps} steps, {} tasks)", a.file.display(), p.task_count());
    Ok(exit::OK)
}

fn plan_cmd(a: &crate::cli::PlanArgs) -> Result<i32, Failure> {
    let o = overrides(&a.wf.params, &a.wf.inputs)?;
    let mut wf = load(&a.wf.file, &o)?;
    let profile = site_profile(&a.backend)?;
    if let Some(p) = &profile {
        apply_profile_defaults(&mut wf, p);
    }
    let p = compile(wf)?;
    let mut local = LocalOptions::default();
    if let Some(m) = profile.as_ref().and_then(|p| p.mpiexec.clone()) {
        local.mpiexec = m;
    }
    let slurm = if a.backend.backend == BackendKind::Slurm { profile } else { None };
    if a.backend.allocation
        && let Some(p) = &slurm
    {
        local.srun = Some(
            slurm::allocation::Allocation {
                job_id: "<allocation>".into(),
                cpus: 1,
                mem_per_cpu_mb: None,
                owned: false,
            }
            .launcher(p),
        );
    }
    // With arrays, the first member of a scattered step shows the array's driver script
    // (which runs member i's own script by SLURM_ARRAY_TASK_ID), then its own script.
    let members: std::collections::HashMap<String, usize> = p
        .step_order
        .iter()
        .filter_map(|&s| p.scatter[s].as_ref().map(|t| (p.workflow.steps[s].name.clone(), t.len as usize)))
        .collect();
    let launcher = move |j: &twinflow_engine::execute::JobRequest| match &slurm {
        Some(_) if local.srun.is_some() => twinflow_engine::execute::Rendered::Argv(render_argv(&local, j)),
        Some(profile) => {
            let own = slurm::script::render_script(j, profile);
            let driver = match &j.array {
                Some(m) if profile.arrays && m.index == 0 && members.get(&m.step).is_some_and(|n| *n >= 2) => {
                    let adir = Path::new("<run.dir>/steps").join(&m.step).join(".twinflow");
                    Some(slurm::script::render_array_script(
                        j,
                        &m.step,
                        members[&m.step],
                        profile.array_throttle,
                        &adir.join("array-<pid>-<time>.list"),
                        &adir.join("array-<pid>-<time>-%a.log"),
                        profile,
                    ))
                }
                _ => None,
            };
            twinflow_engine::execute::Rendered::Script(match driver {
                Some(d) => format!("{d}\n# member script, <out>/.twinflow/job.sbatch:\n{own}"),
                None => own,
            })
        }
        None => twinflow_engine::execute::Rendered::Argv(render_argv(&local, j)),
    };
    let launch = a.launch || a.backend.backend == BackendKind::Slurm;
    let opts = RenderOptions { max_members: a.members, launcher: if launch { Some(&launcher) } else { None } };
    let format = match a.format {
        PlanFormat::Text => Format::Text,
        PlanFormat::Dot => Format::Dot,
        PlanFormat::Mermaid => Format::Mermaid,
        PlanFormat::Json => Format::Json,
    };
    print!("{}", render(&p, format, &run::job::kernel_binary(), &opts));
    Ok(exit::OK)
}

/// Gives every step the profile's default resources where it sets none of its own.
fn apply_profile_defaults(wf: &mut Workflow, profile: &Profile) {
    for s in &mut wf.steps {
        profile.apply_defaults(&mut s.resources);
    }
}

/// On `run --resume` with per-step jobs or arrays: jobs whose `sbatch` the killed engine
/// was still waiting for are looked up by their `--comment` tag (one `squeue`), so the
/// scheduler follows those SLURM accepted instead of submitting them again.
fn recover_submissions(
    rt: &tokio::runtime::Runtime,
    run_dir: &Path,
    profile: &Profile,
    call_log: Option<PathBuf>,
) -> Result<(), Failure> {
    let cmd = slurm::commands::SlurmCommands::new(call_log, profile.command_timeout);
    let run_dir = std::fs::canonicalize(run_dir).unwrap_or(run_dir.to_path_buf());
    let r = rt.block_on(slurm::recover_unrecorded(&cmd, &run_dir)).map_err(|e| {
        // Submitting again without knowing could run a task twice: stop and say why.
        anyhow::anyhow!("cannot check whether SLURM accepted the jobs the previous engine was submitting: {e}")
    })?;
    if r.unsure > 0 {
        tracing::info!(
            unsure = r.unsure,
            found = r.found.len(),
            "looked up submissions the previous engine did not see the end of"
        );
    }
    for (dir, id) in &r.found {
        tracing::info!(job = %id, "job {id} was accepted before the previous engine stopped: following it ({})", dir.display());
    }
    Ok(())
}

/// Gets the allocation for `--allocation` (see `slurm::allocation`); Ctrl-C while waiting
/// for it cancels the request.
fn acquire_allocation(
    rt: &tokio::runtime::Runtime,
    a: &RunArgs,
    plan: &twinflow_engine::plan::Plan,
    profile: &Profile,
    call_log: Option<PathBuf>,
    previous: Option<&str>,
) -> Result<slurm::allocation::Allocation, Failure> {
    let steps = &plan.workflow.steps;
    let largest = plan.graph.node_weights().map(|t| steps[t.step as usize].resources.cores()).max().unwrap_or(1);
    let total: u64 = plan
        .graph
        .node_weights()
        .filter(|t| !t.is_join())
        .map(|t| u64::from(steps[t.step as usize].resources.cores()))
        .sum();
    let cmd = slurm::commands::SlurmCommands::new(call_log, profile.command_timeout);
    let cpus = match a.alloc_cpus {
        Some(c) => c.max(1),
        None => {
            // What the plan could use at once, within what the nodes asked for have.
            let per_node = rt.block_on(cmd.cpus_per_node(0, profile.partition.as_deref())).ok().flatten();
            let cap = per_node.map_or(64, |c| c.saturating_mul(a.alloc_nodes.max(1)));
            (total.min(u64::from(cap)) as u32).max(largest).max(1)
        }
    };
    let time = match &a.alloc_time {
        Some(t) => Some(
            twinflow_engine::units::parse_duration(t)
                .map_err(|e| Failure::Usage(format!("`--alloc-time {t}`: {e}")))?,
        ),
        None => None,
    };
    let req = slurm::allocation::AllocationRequest { nodes: a.alloc_nodes.max(1), cpus, time };
    let log_dir = a.runs_dir.join("allocations");
    let result = rt.block_on(async {
        let interrupt = async {
            use tokio::signal::unix::{SignalKind, signal};
            match (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) {
                (Ok(mut int), Ok(mut term)) => tokio::select! {
                    _ = int.recv() => {}
                    _ = term.recv() => {}
                },
                _ => std::future::pending().await,
            }
        };
        let on_wait = |state: &str, reason: &str| tracing::info!("waiting for the allocation: {state} ({reason})");
        slurm::allocation::acquire(&cmd, profile, &req, &log_dir, previous, on_wait, interrupt).await
    });
    result.map_err(|e| Failure::Error(anyhow::anyhow!("cannot get a SLURM allocation: {e}")))
}

/// The site profile: `--profile` (for the local backend: its `mpiexec` and default
/// resources), the built-in default for `--backend slurm` without one, else none.
fn site_profile(b: &BackendArgs) -> Result<Option<Profile>, Failure> {
    if b.backend == BackendKind::Local && (b.arrays || b.allocation) {
        let flag = if b.arrays { "--arrays" } else { "--allocation" };
        return Err(Failure::Usage(format!("`{flag}` is a SLURM mode; add `--backend slurm`")));
    }
    if b.arrays && b.allocation {
        return Err(Failure::Usage("`--arrays` and `--allocation` exclude each other".into()));
    }
    let mut profile = match (b.backend, &b.profile) {
        (BackendKind::Local, None) => return Ok(None),
        (BackendKind::Slurm, None) => Profile::default(),
        (_, Some(p)) => Profile::find(p).map_err(|e| Failure::Usage(e.to_string()))?,
    };
    profile.arrays |= b.arrays;
    Ok(Some(profile))
}

fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    Ok(tokio::runtime::Builder::new_current_thread().enable_all().build()?)
}

fn run_cmd(mut a: RunArgs) -> Result<i32, Failure> {
    // `run --resume hello.yaml`: the value is the workflow file, not a run id.
    if a.file.is_none()
        && let Some(v) = a.resume.clone()
        && Path::new(&v).is_file()
    {
        a.file = Some(PathBuf::from(v));
        a.resume = Some("latest".into());
    }
    if a.resume.is_some() && !a.runs_dir.join("twinflow.db").exists() {
        return Err(Failure::Usage(format!("no runs to resume in `{}` (or pass --runs-dir)", a.runs_dir.display())));
    }
    std::fs::create_dir_all(&a.runs_dir)
        .map_err(|e| anyhow::anyhow!("cannot create runs directory `{}`: {e}", a.runs_dir.display()))?;
    let mut store = Store::open(&a.runs_dir)?;
    let given = RunSettings {
        params: a.params.clone(),
        inputs: a.inputs.clone(),
        backend: match a.backend.backend {
            BackendKind::Local => BackendChoice::Local,
            BackendKind::Slurm => BackendChoice::Slurm,
        },
        profile: a.backend.profile.clone(),
        arrays: a.backend.arrays,
        allocation: a.backend.allocation,
        no_cache: a.no_cache,
        allocation_job: None,
        allocation_owned: None,
    };
    // Resume: the file and settings come from the run database unless given again. `record`:
    // the settings kept with the run.
    let (file, resume, settings, mut record, slurm_from_saved) = match &a.resume {
        Some(id) => {
            let row =
                store.run(if id == "latest" { None } else { Some(id) }).map_err(|e| Failure::Usage(e.to_string()))?;
            let file = a.file.clone().unwrap_or_else(|| PathBuf::from(&row.file));
            // A file of another workflow is the mistake to report, not the run's saved
            // parameters that do not fit it.
            if a.file.is_some()
                && let Some(raw) = twinflow_engine::spec::read_source(&file)
                    .ok()
                    .and_then(|src| twinflow_engine::spec::parse(&src).ok())
                && raw.name.value != row.workflow
            {
                return Err(Failure::Usage(format!(
                    "run `{}` is of workflow `{}`, not `{}` ({})",
                    row.id,
                    row.workflow,
                    raw.name.value,
                    file.display()
                )));
            }
            let r = row.settings.resumed(&given);
            (file, Some(row.id), r.settings, r.record, r.slurm_from_saved)
        }
        None => {
            let Some(file) = a.file.clone() else {
                return Err(Failure::Usage("`twinflow run` needs a workflow file (or `--resume`)".into()));
            };
            (file, None, given.clone(), given, false)
        }
    };
    let o = overrides(&settings.params, &settings.inputs)?;
    let mut wf = load(&file, &o)?;
    validate::files::check_input_files(&wf).map_err(Failure::Invalid)?;
    // A resumed run keeps the backend (and profile, and SLURM mode) it was started with
    // unless one is given again: resuming SLURM jobs with the local backend would resubmit
    // them (see `RunSettings::resumed`).
    if slurm_from_saved {
        eprintln!("resuming with the SLURM backend this run was started with");
    }
    let backend_args = BackendArgs {
        backend: match settings.backend {
            BackendChoice::Local => BackendKind::Local,
            BackendChoice::Slurm => BackendKind::Slurm,
        },
        profile: settings.profile.clone(),
        arrays: settings.arrays,
        allocation: settings.allocation,
    };
    let profile = site_profile(&backend_args)?;
    if let Some(p) = &profile {
        apply_profile_defaults(&mut wf, p);
    }
    let plan = compile(wf)?;
    let mut local = LocalOptions::default();
    if let Some(c) = a.cores {
        local.cores = c.max(1);
    }
    local.grace = Duration::from_secs_f64(a.grace.clamp(0.0, 3600.0));
    if let Some(m) = profile.as_ref().and_then(|p| p.mpiexec.clone()) {
        local.mpiexec = m;
    }
    if let Some(m) = &a.mpiexec {
        // `--mpiexec` (or TWINFLOW_MPIEXEC) replaces the profile's launcher and flags; the
        // profile's flavour and environment stay.
        let mut words = m.split_whitespace().map(String::from);
        local.mpiexec.command = words.next().ok_or_else(|| Failure::Usage("`--mpiexec` is empty".into()))?;
        local.mpiexec.flags = words.collect();
    }
    let call_log = std::env::var_os(slurm::CALL_LOG_ENV).map(PathBuf::from);
    let rt = runtime()?;
    let mut allocation = None;
    let slurm_profile = if backend_args.backend == BackendKind::Slurm { profile } else { None };
    let mut backend: Box<dyn Backend> = match slurm_profile {
        Some(profile) if backend_args.allocation => {
            let previous = settings.allocation_job.clone();
            let alloc = acquire_allocation(&rt, &a, &plan, &profile, call_log, previous.as_deref())?;
            if alloc.owned {
                // The holder ends itself when this heartbeat stops (an engine killed with -9).
                let hb = slurm::allocation::heartbeat_path(&a.runs_dir.join("allocations"), &alloc.job_id);
                let every = slurm::allocation::heartbeat_interval(&profile);
                rt.spawn(async move {
                    loop {
                        let touched = std::fs::OpenOptions::new()
                            .create(true)
                            .append(true)
                            .open(&hb)
                            .and_then(|f| f.set_modified(std::time::SystemTime::now()));
                        if let Err(e) = touched {
                            tracing::warn!(file = %hb.display(), "cannot touch the allocation's heartbeat: {e}");
                        }
                        tokio::time::sleep(every).await;
                    }
                });
            }
            // Kept with the run: `run --resume` goes on in it, `twinflow cancel` cancels it.
            record.allocation_job = Some(alloc.job_id.clone());
            record.allocation_owned = Some(alloc.owned);
            if let Some(id) = &resume
                && previous.as_deref() != Some(alloc.job_id.as_str())
            {
                store.set_run_settings(id, &record)?;
            }
            local.srun = Some(alloc.launcher(&profile));
            local.cores = alloc.cpus;
            local.memory = alloc.mem_per_cpu_mb.map(|m| (m * u64::from(alloc.cpus)) << 20);
            allocation = Some((alloc, profile));
            Box::new(LocalBackend::new(local))
        }
        Some(profile) => {
            if let Some(id) = &resume {
                recover_submissions(&rt, &a.runs_dir.join(id), &profile, call_log.clone())?;
            }
            Box::new(SlurmBackend::new(SlurmOptions { profile, call_log }))
        }
        None => Box::new(LocalBackend::new(local)),
    };
    let opts = RunOptions {
        runs_dir: std::fs::canonicalize(&a.runs_dir).unwrap_or(a.runs_dir.clone()),
        workflow_file: std::fs::canonicalize(&file).unwrap_or(file.clone()),
        settings: record,
        resume,
        keep_going: a.keep_going,
        // A run started with `--no-cache` keeps running everything when resumed.
        use_cache: !settings.no_cache,
        max_parallel: a.jobs.map(|j| usize::try_from(j).unwrap_or(usize::MAX)),
    };
    let mut reporter: Box<dyn Reporter> = if a.json { Box::new(JsonReporter) } else { Box::new(HumanReporter::new()) };
    let summary = rt.block_on(async {
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
        run::execute(&plan, backend.as_mut(), &mut store, &opts, reporter.as_mut(), rx).await
    });
    if let Some((alloc, profile)) = &allocation {
        let cmd = slurm::commands::SlurmCommands::new(
            std::env::var_os(slurm::CALL_LOG_ENV).map(PathBuf::from),
            profile.command_timeout,
        );
        if let Err(e) = rt.block_on(slurm::allocation::release(&cmd, alloc)) {
            eprintln!("warning: cannot cancel allocation {}: {e} (run `scancel {}`)", alloc.job_id, alloc.job_id);
        }
    }
    let summary = summary.map_err(|e| match e {
        run::RunError::Usage(m) => Failure::Usage(m),
        other => Failure::Error(other.into()),
    })?;
    if !a.json {
        for (task, why) in summary.failures.iter().take(10) {
            match why {
                TaskFailure::Cancelled => eprintln!("cancelled: {task}"),
                TaskFailure::Failed(msg) => eprintln!("failed: {task}: {msg}"),
            }
        }
    }
    Ok(match summary.outcome {
        RunOutcome::Succeeded => exit::OK,
        RunOutcome::Failed => exit::RUN_FAILED,
        RunOutcome::Cancelled => exit::CANCELLED,
    })
}

/// `twinflow cancel`: `scancel` every SLURM job of the run that may be in flight: the
/// recorded job of each running task, and a job submitted but not recorded yet (the engine
/// died in between). Only jobs whose attempt directory holds the SLURM backend's job id
/// file are cancelled, so a local run's pids are never taken for SLURM job ids. A run in
/// allocation mode: its engine is stopped first (it cancels its steps), then the holder job
/// twinflow submitted for it is cancelled (never an allocation the user made).
fn cancel_cmd(a: &CancelArgs) -> Result<i32, Failure> {
    use twinflow_engine::execute::{CANCELLED_FILE, JOB_ID_FILE};
    use twinflow_engine::ids::JobId;
    if !a.runs_dir.join("twinflow.db").exists() {
        return Err(Failure::Usage(format!("no runs in `{}` (or pass --runs-dir)", a.runs_dir.display())));
    }
    let store = Store::open(&a.runs_dir)?;
    let run = store
        .run(if a.run == "latest" { None } else { Some(a.run.as_str()) })
        .map_err(|e| Failure::Usage(e.to_string()))?;
    // The run's own profile (command time limit, ids per scancel call); a profile that can no
    // longer be found is no reason not to cancel.
    let profile = match run.settings.profile.as_deref() {
        Some(p) => Profile::find(p).unwrap_or_else(|e| {
            eprintln!("warning: {e}; cancelling with the default SLURM settings");
            Profile::default()
        }),
        None => Profile::default(),
    };
    let run_dir = a.runs_dir.join(&run.id);
    let mut jobs = vec![];
    for t in store.tasks(&run.id)? {
        if !matches!(t.state, TaskState::Running | TaskState::Pending) {
            continue;
        }
        let mut tdir = run_dir.join("steps").join(&t.step);
        if let Some(m) = t.task.strip_prefix(t.step.as_str()).and_then(|r| r.strip_prefix('[')?.strip_suffix(']')) {
            tdir = tdir.join(m);
        }
        for n in [t.attempts + 1, t.attempts] {
            let meta = tdir.join(format!("attempt-{n}")).join(".twinflow");
            let Ok(id) = std::fs::read_to_string(meta.join(JOB_ID_FILE)) else { continue };
            let id = id.trim().to_string();
            let recorded = n == t.attempts && t.state == TaskState::Running && t.job_id.as_deref() == Some(id.as_str());
            if n == t.attempts + 1 || recorded {
                let _ = std::fs::write(meta.join(CANCELLED_FILE), "twinflow cancel\n");
                jobs.push(JobId(id));
                break;
            }
        }
    }
    let holder = run.settings.owned_allocation().map(|j| JobId(j.to_string()));
    let engine_alive = run.state == RunState::Running && run.engine_pid.is_some();
    let mut stopped_engine = false;
    if holder.is_some()
        && engine_alive
        && let Some(pid) = run.engine_pid
        && twinflow_engine::execute::process::terminate_engine(pid)
    {
        // Steps of an allocation are `srun`s of the engine: it stops them and records them
        // as cancelled; cancelling the allocation under it first would look like failures.
        println!("sent SIGTERM to the engine of run {} (pid {pid}); it stops its steps", run.id);
        stopped_engine = true;
        let t0 = std::time::Instant::now();
        while t0.elapsed() < Duration::from_secs(60) && twinflow_engine::execute::process::running(pid) {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    jobs.extend(holder.iter().cloned());
    if jobs.is_empty() {
        println!("run {} has no SLURM jobs in flight", run.id);
        return Ok(exit::OK);
    }
    let backend =
        SlurmBackend::new(SlurmOptions { profile, call_log: std::env::var_os(slurm::CALL_LOG_ENV).map(PathBuf::from) });
    runtime()?.block_on(backend.scancel(&jobs)).map_err(|e| anyhow::anyhow!("{e}"))?;
    let note = holder.as_ref().map(|h| format!(" (allocation {h})")).unwrap_or_default();
    println!(
        "cancelled {} SLURM job{} of run {}{note}: {}",
        jobs.len(),
        if jobs.len() == 1 { "" } else { "s" },
        run.id,
        jobs.iter().map(|j| j.0.as_str()).collect::<Vec<_>>().join(" ")
    );
    if stopped_engine {
        return Ok(exit::OK);
    }
    if engine_alive
        && let Some(pid) = run.engine_pid
        && twinflow_engine::execute::process::terminate_engine(pid)
    {
        println!("sent SIGTERM to the engine of run {} (pid {pid}); it stops its remaining tasks", run.id);
    } else if run.state == RunState::Running {
        println!("hint: if its engine still runs, it records these tasks as cancelled; stop it with Ctrl-C or SIGTERM");
    }
    Ok(exit::OK)
}

/// A time stored in milliseconds since the epoch, in UTC (`2026-11-22 10:15:00`).
fn fmt_ms(ms: i64) -> String {
    match jiff::Timestamp::from_millisecond(ms) {
        Ok(t) => t.strftime("%Y-%m-%d %H:%M:%S").to_string(),
        // Beyond the years -9999..=9999: not a time this program wrote.
        Err(_) => format!("{ms} ms"),
    }
}

fn status_cmd(a: &StatusArgs) -> Result<i32, Failure> {
    if !a.runs_dir.join("twinflow.db").exists() {
        // Listing the runs of a directory that has none is an answer, not an error; asking
        // for a run there is.
        if a.run.is_some() {
            return Err(Failure::Usage(format!(
                "no runs in `{}` (run a workflow first, or pass --runs-dir)",
                a.runs_dir.display()
            )));
        }
        if a.json {
            println!("[]");
        } else {
            eprintln!("no runs in `{}` yet (run a workflow first, or pass --runs-dir)", a.runs_dir.display());
        }
        return Ok(exit::OK);
    }
    let store = Store::open(&a.runs_dir)?;
    match &a.run {
        None => {
            let runs = store.runs()?;
            if a.json {
                println!("{}", serde_json::to_string_pretty(&runs)?);
            } else {
                println!("{:<22} {:<20} {:<10} STARTED (UTC)", "RUN", "WORKFLOW", "STATE");
                for r in runs {
                    println!("{:<22} {:<20} {:<10} {}", r.id, r.workflow, r.state, fmt_ms(r.created_at));
                }
            }
        }
        Some(id) => {
            let run =
                store.run(if id == "latest" { None } else { Some(id) }).map_err(|e| Failure::Usage(e.to_string()))?;
            let tasks = store.tasks(&run.id)?;
            let ran = store.run_times(&run.id)?;
            if a.json {
                let tasks: Vec<serde_json::Value> = tasks
                    .iter()
                    .map(|t| {
                        let mut v = serde_json::to_value(t).unwrap_or_default();
                        v["ran_ms"] = ran.get(&t.task).copied().into();
                        v
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&serde_json::json!({ "run": run, "tasks": tasks }))?);
            } else {
                println!("run {} of `{}` ({}): {}", run.id, run.workflow, run.file, run.state);
                let mut counts = std::collections::BTreeMap::new();
                for t in &tasks {
                    *counts.entry(t.state.as_str()).or_insert(0) += 1;
                }
                println!("{}", counts.iter().map(|(k, v)| format!("{v} {k}")).collect::<Vec<_>>().join(", "));
                let shown = tasks.len().min(500);
                for t in &tasks[..shown] {
                    // Time its attempts ran, not the time since its first start.
                    let secs = match ran.get(&t.task) {
                        Some(ms) => format!("{:.2}s", *ms as f64 / 1000.0),
                        None => "-".into(),
                    };
                    println!(
                        "  {:<30} {:<16} attempts={} {:>8} {}",
                        t.task,
                        t.state,
                        t.attempts,
                        secs,
                        t.message.clone().unwrap_or_default().lines().next().unwrap_or("")
                    );
                }
                if tasks.len() > shown {
                    println!("  ... {} more (use --json for all)", tasks.len() - shown);
                }
            }
        }
    }
    Ok(exit::OK)
}

fn why_cmd(a: &WhyArgs) -> Result<i32, Failure> {
    let o = overrides(&a.wf.params, &a.wf.inputs)?;
    let wf = load(&a.wf.file, &o)?;
    if let Some(s) = &a.step
        && !wf.steps.iter().any(|x| &x.name == s)
    {
        let names: Vec<&str> = wf.steps.iter().map(|x| x.name.as_str()).collect();
        let hint = twinflow_engine::diag::did_you_mean(s, names.iter().copied())
            .unwrap_or_else(|| format!("steps: {}", names.join(", ")));
        return Err(Failure::Usage(format!("workflow `{}` has no step `{s}` ({hint})", wf.name)));
    }
    let p = compile(wf)?;
    if !a.runs_dir.join("twinflow.db").exists() {
        // Not created here: a mistyped `--runs-dir` would look like "never ran".
        return Err(Failure::Usage(format!(
            "no runs in `{}` (run the workflow first, or pass --runs-dir)",
            a.runs_dir.display()
        )));
    }
    let mut store = Store::open(&a.runs_dir)?;
    let verdicts = run::why::why(&p, &mut store, a.step.as_deref(), &run::job::kernel_binary())?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&verdicts)?);
    } else {
        for v in verdicts.iter().take(200) {
            if v.up_to_date {
                println!("{}: up to date", v.task);
            } else {
                println!("{}: would run because", v.task);
                for r in &v.reasons {
                    println!("  - {r}");
                }
            }
        }
    }
    Ok(exit::OK)
}
