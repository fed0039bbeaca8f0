//! `twinflow run` and `run --resume`: from what the command line gives to a finished run.
//!
//! 1. Which run: a new one from `file`, or the recorded run to resume (its workflow file and
//!    settings come from the run database unless given again: [`RunSettings::resumed`]).
//! 2. Load the workflow with the settings' `-p`/`-i` and the site profile's default
//!    resources, check its input files, compile it.
//! 3. Build the backend: local processes; SLURM jobs (per task or as arrays); or, in
//!    allocation mode, the local backend launching every step with `srun` into one
//!    allocation, which is acquired here (Ctrl-C while waiting cancels the request), kept
//!    alive by a heartbeat file the holder job watches, recorded with the run and released
//!    at the end.
//! 4. Run the plan ([`crate::run::execute`]) until it ends or `cancel` says stop.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::watch;

use super::backend::{BackendSettings, LocalSettings, call_log, local_options, site_profile};
use super::{DATABASE, Notices, SessionError, compile, find_run, load, overrides};
use crate::events::Reporter;
use crate::execute::Backend;
use crate::execute::local::LocalBackend;
use crate::execute::profile::{PilotLaunch, Profile};
use crate::execute::slurm::allocation::{self, Allocation, AllocationRequest};
use crate::execute::slurm::commands::SlurmCommands;
use crate::execute::slurm::{SlurmBackend, SlurmOptions};
use crate::plan::Plan;
pub use crate::run::attempt::EnvSnapshot;
use crate::run::{RunOptions, RunOutcome, RunSummary};
use crate::state::{BackendChoice, RunSettings, Store};

/// What `twinflow run` is asked to do.
#[derive(Debug, Clone, Default)]
pub struct RunRequest {
    /// The workflow file (optional with `resume`: the recorded one is used).
    pub file: Option<PathBuf>,
    /// Directory of the run database and the runs.
    pub runs_dir: PathBuf,
    /// Resume this run (`latest` for the newest) instead of starting one.
    pub resume: Option<String>,
    /// Settings given on the command line (`-p`, `-i`, backend, profile, mode, no-cache).
    pub given: RunSettings,
    /// Keep running independent tasks after a failure.
    pub keep_going: bool,
    /// At most this many tasks at once.
    pub jobs: Option<u64>,
    /// Local backend options.
    pub local: LocalSettings,
    /// Size of the allocation twinflow asks for in allocation mode.
    pub allocation: AllocationSize,
    /// What the run's environment snapshot records.
    pub env_snapshot: EnvSnapshot,
    /// Steps to run even when up to date, with what depends on them (`--rerun`).
    pub rerun: Vec<String>,
}

/// `--alloc-nodes`, `--alloc-cpus`, `--alloc-time`.
#[derive(Debug, Clone, Default)]
pub struct AllocationSize {
    /// Nodes (at least 1).
    pub nodes: u32,
    /// CPUs (default: what the plan can use at once, within the nodes' CPUs).
    pub cpus: Option<u32>,
    /// Time limit, as written (`2h`, `90m`).
    pub time: Option<String>,
}

/// Starts (or resumes) a run and runs it to its end. Task failures are in the summary; an
/// `Err` means the run could not start or stopped on an error of its own.
///
/// A signal's name sent on `cancel` cancels the run: running tasks get SIGTERM, then
/// SIGKILL after the grace period. A name sent again while they stop kills them at once.
pub async fn run(
    mut req: RunRequest,
    reporter: &mut dyn Reporter,
    notices: &mut dyn Notices,
    cancel: watch::Receiver<Option<String>>,
) -> Result<RunSummary, SessionError> {
    // `run --resume hello.yaml`: the value is the workflow file, not a run id.
    if req.file.is_none()
        && let Some(v) = req.resume.clone()
        && Path::new(&v).is_file()
    {
        req.file = Some(PathBuf::from(v));
        req.resume = Some("latest".into());
    }
    let runs_dir = &req.runs_dir;
    if req.resume.is_some() && !runs_dir.join(DATABASE).exists() {
        return Err(SessionError::Usage(format!("no runs to resume in `{}` (or pass --runs-dir)", runs_dir.display())));
    }
    std::fs::create_dir_all(runs_dir).map_err(|source| SessionError::Io {
        action: "cannot create runs directory",
        path: runs_dir.clone(),
        source,
    })?;
    let mut store = Store::open(runs_dir)?;
    let Chosen { file, resume, settings, mut record, slurm_from_saved, record_changed } = choose(&store, &req)?;
    // A resumed run keeps the backend (and profile, and SLURM mode) it was started with
    // unless one is given again: resuming SLURM jobs with the local backend would submit
    // them again.
    if slurm_from_saved {
        notices.notice("resuming with the SLURM backend this run was started with");
    }
    let backend_settings = BackendSettings::from(&settings);
    let profile = site_profile(&backend_settings, Some(&file))?;
    let wf = load(&file, &overrides(&settings.params, &settings.inputs)?, profile.as_ref())?;
    crate::validate::files::check_input_files(&wf).map_err(SessionError::Invalid)?;
    let plan = compile(wf)?;
    check_rerun(&plan, &req.rerun)?;
    // New `-p`/`-i` on resume are the run's from now on: a later plain `--resume` uses them.
    if record_changed && let Some(id) = &resume {
        store.set_run_settings(id, &record)?;
    }
    let mut local = local_options(profile.as_ref(), &req.local)?;
    // `pilot: { launch: local }`: the local backend's tasks run on pilot workers on this
    // machine (they outlive a killed engine and `run --resume` adopts them).
    let local_pilot = profile
        .as_ref()
        .and_then(|p| p.pilot.clone().map(|pl| (p.clone(), pl)))
        .filter(|(_, pl)| pl.launch == PilotLaunch::Local);
    let slurm_profile = profile.filter(|_| settings.backend == BackendChoice::Slurm);
    if settings.allocation
        && let Some(p) = &slurm_profile
        && p.pilot.as_ref().is_some_and(|pl| pl.launch == PilotLaunch::Local)
    {
        return Err(SessionError::Usage(format!(
            "profile `{}`: `pilot.launch: local` starts the workers on this machine, not in an allocation\nhint: drop `--allocation` and `--backend slurm`, or use `launch: srun`",
            p.name
        )));
    }
    // The run's id, chosen here for a new run: the pilot workers' files are named after it.
    let run_id = resume.clone().unwrap_or_else(|| crate::ids::RunId::generate().0);
    // Every program the run needs, looked up before anything runs (or is submitted).
    let needs = preflight_needs(slurm_profile.as_ref(), &local);
    let found = super::preflight::check(&plan.workflow, &needs);
    for w in &found.warnings {
        notices.warning(w);
    }
    if !found.missing.is_empty() {
        return Err(SessionError::Environment(crate::diag::Diagnostics(found.missing)));
    }
    let mut allocation: Option<(Allocation, Profile)> = None;
    let mut backend: Box<dyn Backend> = match slurm_profile {
        Some(profile) if settings.allocation => {
            let previous = settings.allocation_job.clone();
            let alloc = acquire_allocation(&req, &plan, &profile, previous.as_deref(), cancel.clone()).await?;
            if alloc.owned {
                keep_alive(&req.runs_dir, &alloc, &profile);
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
            let backend: Box<dyn Backend> = match profile.pilot.clone() {
                // Pilot workers: one `twinflow worker` per node instead of `srun` per task.
                Some(pilot) => {
                    let nodes = allocation_nodes(&alloc, req.allocation.nodes);
                    let workers = super::pilot::Workers::Srun { alloc: &alloc, nodes };
                    let resumed = resume.is_some();
                    Box::new(
                        super::pilot::start(&req.runs_dir, &run_id, resumed, workers, &profile, &pilot, &local).await?,
                    )
                }
                None => Box::new(LocalBackend::new(local)),
            };
            allocation = Some((alloc, profile));
            backend
        }
        Some(profile) => Box::new(SlurmBackend::new(SlurmOptions { profile, call_log: call_log() })),
        None => match local_pilot {
            Some((profile, pilot)) => {
                let workers = super::pilot::Workers::Local;
                let resumed = resume.is_some();
                Box::new(super::pilot::start(&req.runs_dir, &run_id, resumed, workers, &profile, &pilot, &local).await?)
            }
            None => Box::new(LocalBackend::new(local)),
        },
    };
    let opts = RunOptions {
        runs_dir: std::fs::canonicalize(runs_dir).unwrap_or(runs_dir.clone()),
        workflow_file: std::fs::canonicalize(&file).unwrap_or(file.clone()),
        settings: record,
        resume,
        new_run_id: Some(run_id),
        keep_going: req.keep_going,
        // A run started with `--no-cache` keeps running everything when resumed.
        use_cache: !settings.no_cache,
        max_parallel: req.jobs.map(|j| usize::try_from(j).unwrap_or(usize::MAX)),
        env_snapshot: req.env_snapshot.clone(),
        rerun: req.rerun.clone(),
    };
    let summary = crate::run::execute(&plan, backend.as_mut(), &mut store, &opts, reporter, cancel).await;
    // The steps of an engine that stops on an error of its own are stopped with it; pilot
    // workers are told to exit at the end of every run.
    if summary.is_err() {
        backend.abort().await;
    }
    backend.shutdown().await;
    // The run's report (`RUN/report.html`); one that cannot be written does not change how
    // the run went.
    if let Ok(s) = &summary {
        match crate::report::write_html(&store, &opts.runs_dir, Some(&s.run_id), None) {
            Ok(path) => tracing::info!(report = %path.display(), "wrote the run's report"),
            Err(e) => notices.warning(&format!("the run's report: {}", crate::report::error_chain(&e))),
        }
    }
    if let Some((alloc, profile)) = &allocation {
        let cmd = SlurmCommands::new(call_log(), profile.command_timeout);
        // Tasks that failed because SLURM ended the allocation at its time limit: say so
        // (their own messages only tell of lost nodes or killed steps).
        let failed = !matches!(&summary, Ok(s) if s.outcome != RunOutcome::Failed);
        if failed && let Some(why) = allocation::time_limit_reached(&cmd, alloc).await {
            notices.notice(&why);
        }
        if let Err(e) = allocation::release(&cmd, alloc).await {
            notices
                .warning(&format!("cannot cancel allocation {}: {e} (run `scancel {}`)", alloc.job_id, alloc.job_id));
        }
    }
    Ok(summary?)
}

/// What [`super::preflight::check`] looks for with this backend: with the local backend,
/// the steps' programs and `mpiexec`; with SLURM (jobs or an allocation), the programs
/// unless the profile loads modules or runs set-up lines (they change `PATH` where the
/// steps run), and no launcher (`srun` comes with SLURM). The kernel always.
pub fn preflight_needs(
    slurm: Option<&Profile>,
    local: &crate::execute::local::LocalOptions,
) -> super::preflight::Needs {
    super::preflight::Needs {
        launcher: slurm.is_none().then(|| local.mpiexec.command.clone()),
        kernel: Some(crate::run::job::kernel_binary()),
        programs: slurm.is_none_or(|p| p.modules.is_empty() && p.setup.is_empty()),
    }
}

/// `--rerun STEP`: every name must be a step of the plan (or a call of a sub-workflow).
pub(crate) fn check_rerun(plan: &Plan, steps: &[String]) -> Result<(), SessionError> {
    for s in steps {
        if !crate::run::is_rerun_target(plan, s) {
            let names: Vec<&str> = plan.workflow.steps.iter().map(|x| x.name.as_str()).collect();
            let hint = crate::suggest::did_you_mean(s, names.iter().copied())
                .unwrap_or_else(|| format!("steps: {}", names.join(", ")));
            return Err(SessionError::Usage(format!(
                "--rerun {s}: workflow `{}` has no step `{s}` ({hint})",
                plan.workflow.name
            )));
        }
    }
    Ok(())
}

/// The run to start or resume: its file, id, the settings it goes on with and those kept
/// with it.
struct Chosen {
    file: PathBuf,
    resume: Option<String>,
    settings: RunSettings,
    record: RunSettings,
    slurm_from_saved: bool,
    /// The settings kept with the run change (`-p`/`-i` given again on resume).
    record_changed: bool,
}

fn choose(store: &Store, req: &RunRequest) -> Result<Chosen, SessionError> {
    let Some(id) = &req.resume else {
        let Some(file) = req.file.clone() else {
            return Err(SessionError::Usage("`twinflow run` needs a workflow file (or `--resume`)".into()));
        };
        let (settings, record) = (req.given.clone(), req.given.clone());
        return Ok(Chosen { file, resume: None, settings, record, slurm_from_saved: false, record_changed: false });
    };
    let row = find_run(store, id)?;
    // Two engines on one run would start every task twice; and this one must give up before
    // it touches the run's backend (in allocation mode, releasing the allocation at the end
    // would kill the live run's steps).
    if let Some(pid) = row.live_engine() {
        return Err(SessionError::Usage(format!("run `{}` is still being executed by twinflow (pid {pid})", row.id)));
    }
    let file = req.file.clone().unwrap_or_else(|| PathBuf::from(&row.file));
    // A file of another workflow is the mistake to report, not the run's saved parameters
    // that do not fit it.
    if req.file.is_some()
        && let Some(raw) = crate::spec::read_source(&file).ok().and_then(|src| crate::spec::parse(&src).ok())
        && raw.name.value != row.workflow
    {
        return Err(SessionError::Usage(format!(
            "run `{}` is of workflow `{}`, not `{}` ({})",
            row.id,
            row.workflow,
            raw.name.value,
            file.display()
        )));
    }
    let r = row.settings.resumed(&req.given);
    let record_changed = r.record != row.settings;
    Ok(Chosen {
        file,
        resume: Some(row.id),
        settings: r.settings,
        record: r.record,
        slurm_from_saved: r.slurm_from_saved,
        record_changed,
    })
}

/// Gets the allocation for allocation mode (see [`allocation::acquire`]): the one twinflow
/// runs inside, the run's previous one if it still runs, else a new holder job sized to
/// what the plan can use at once.
async fn acquire_allocation(
    req: &RunRequest,
    plan: &Plan,
    profile: &Profile,
    previous: Option<&str>,
    mut cancel: watch::Receiver<Option<String>>,
) -> Result<Allocation, SessionError> {
    let steps = &plan.workflow.steps;
    let largest = plan.graph.node_weights().map(|t| steps[t.step as usize].resources.cores()).max().unwrap_or(1);
    let total: u64 = plan
        .graph
        .node_weights()
        .filter(|t| !t.is_join())
        .map(|t| u64::from(steps[t.step as usize].resources.cores()))
        .sum();
    let cmd = SlurmCommands::new(call_log(), profile.command_timeout);
    let nodes = req.allocation.nodes.max(1);
    let cpus = match req.allocation.cpus {
        Some(c) => c.max(1),
        None => {
            // What the plan could use at once, within what the nodes asked for have.
            let per_node = cmd.cpus_per_node(0, profile.partition.as_deref()).await.ok().flatten();
            let cap = per_node.map_or(64, |c| c.saturating_mul(nodes));
            (total.min(u64::from(cap)) as u32).max(largest).max(1)
        }
    };
    let time = match &req.allocation.time {
        Some(t) => {
            Some(crate::units::parse_duration(t).map_err(|e| SessionError::Usage(format!("`--alloc-time {t}`: {e}")))?)
        }
        None => None,
    };
    let areq = AllocationRequest { nodes, cpus, time };
    let log_dir = req.runs_dir.join("allocations");
    // Cancelling (Ctrl-C) while waiting for the allocation withdraws the request.
    let interrupt = async move {
        while cancel.borrow().is_none() {
            if cancel.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    };
    let on_wait = |state: &str, reason: &str| tracing::info!("waiting for the allocation: {state} ({reason})");
    allocation::acquire(&cmd, profile, &areq, &log_dir, previous, on_wait, interrupt)
        .await
        .map_err(|e| SessionError::Backend(format!("cannot get a SLURM allocation: {e}")))
}

/// Nodes of the allocation: as SLURM says (a resumed run's holder job has the nodes its
/// first engine asked for, whatever this command line asks), else as asked for the holder
/// job, or those of the allocation this process runs in (`SLURM_JOB_NUM_NODES`).
fn allocation_nodes(alloc: &Allocation, asked: u32) -> u32 {
    if let Some(n) = alloc.nodes {
        return n;
    }
    if alloc.owned {
        return asked.max(1);
    }
    std::env::var("SLURM_JOB_NUM_NODES").ok().and_then(|n| n.parse().ok()).unwrap_or(1).max(1)
}

/// Touches the allocation's heartbeat file while this engine lives: the holder job ends
/// itself when it stops (an engine killed with -9 does not hold the nodes until the time
/// limit).
fn keep_alive(runs_dir: &Path, alloc: &Allocation, profile: &Profile) {
    let hb = allocation::heartbeat_path(&runs_dir.join("allocations"), &alloc.job_id);
    let every: Duration = allocation::heartbeat_interval(profile);
    tokio::spawn(async move {
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
