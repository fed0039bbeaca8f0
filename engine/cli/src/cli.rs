//! Command-line definitions (clap). No logic here: see `commands.rs`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::exit;

/// twinflow: run digital-twin workflows (YAML → DAG → local, MPI or SLURM execution).
#[derive(Debug, Parser)]
#[command(name = "twinflow", version, after_help = exit::HELP, propagate_version = true)]
pub struct Cli {
    /// Log level for diagnostics on stderr (error, warn, info, debug, trace); also RUST_LOG.
    #[arg(long, global = true, default_value = "warn", env = "TWINFLOW_LOG")]
    pub log: String,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check a workflow and report every problem with file:line:col.
    #[command(after_help = "Examples:\n  twinflow validate examples/flood-mini.yaml -p members=8\n  twinflow validate examples/flood-mini.yaml --check-env   # programs, twin-kernel, mpiexec here?\n\n".to_string() + exit::HELP)]
    Validate(ValidateArgs),
    /// Show the DAG and every task's resolved command, without running anything.
    #[command(after_help = "Examples:\n  twinflow plan examples/hello.yaml\n  twinflow plan examples/cycling-hello.yaml --cycles 3 --format mermaid\n  twinflow plan examples/hello.yaml --format dot | dot -Tpng > dag.png\n  twinflow plan examples/hello.yaml --format json\n\n".to_string() + exit::HELP)]
    Plan(PlanArgs),
    /// Run a workflow (or resume one) on the local machine or through SLURM.
    #[command(after_help = "Examples:\n  twinflow run examples/hello.yaml -p members=4\n  twinflow run --resume            # continue the latest run where it stopped\n  twinflow run examples/hello.yaml --json > events.jsonl\n  twinflow run examples/hello.yaml --backend slurm --profile local\n  twinflow run --resume --backend slurm --profile local   # follows jobs still queued or running\n  twinflow run examples/flood-mini.yaml --backend slurm --profile local --arrays\n  twinflow run examples/flood-mini.yaml --backend slurm --profile local --allocation --alloc-cpus 8\n  twinflow run examples/flood-mini.yaml --profile local   # local backend: the profile's mpiexec and default resources\n\n".to_string() + exit::HELP)]
    Run(RunArgs),
    /// List runs, or the tasks of one run.
    #[command(after_help = "Examples:\n  twinflow status                 # all runs\n  twinflow status latest          # tasks of the latest run (cycles first, for a cycling run)\n  twinflow status latest --cycle 20260301T0600Z   # the tasks of one cycle\n  twinflow status 20261122-101500-3f2a --json\n\n".to_string() + exit::HELP)]
    Status(StatusArgs),
    /// Print (or follow) a task's output: the stdout and stderr files of its latest attempt,
    /// or of another (`--attempt N`).
    #[command(after_help = "Examples:\n  twinflow logs latest mesh                          # stdout, then stderr, of its latest attempt\n  twinflow logs latest 'member[7]' --stderr\n  twinflow logs latest 'member[seed=2,rain=40.0]'    # a member by its scatter values\n  twinflow logs 20261122-101500-3f2a 'sim[3]' --attempt 1\n  twinflow logs latest 20260301T0600Z/assimilate -f  # a cycling run's task, followed while it runs\n\nTASK is named as `twinflow status RUN` lists it; quote names with brackets for the shell.\nThe task, its attempt and directory are named on stderr, so stdout holds only the output.\n\n".to_string() + exit::HELP)]
    Logs(LogsArgs),
    /// Explain why a step would run again (which input, parameter or definition changed).
    #[command(after_help = "Example:\n  twinflow why examples/hello.yaml member -p members=8   # why would the members run again?\n  twinflow why examples/hello.yaml 'member[7]'          # one task\n  twinflow why examples/hello.yaml                      # every task\n\nEnds with a summary line: `5 of 22 would run`.\n\n".to_string() + exit::HELP)]
    Why(WhyArgs),
    /// Cancel a run: its SLURM jobs in flight (`scancel`, one call) or its allocation, and its
    /// engine if it still runs (SIGTERM: it stops its remaining tasks, as on Ctrl-C).
    #[command(after_help = "Examples:\n  twinflow cancel latest\n  twinflow cancel 20261122-101500-3f2a --runs-dir runs\n\nFrom another shell, this stops a local run as Ctrl-C would. For a SLURM run whose engine is\ngone (killed), it cancels the jobs the engine left; `twinflow run --resume` continues the run.\n\n".to_string() + exit::HELP)]
    Cancel(CancelArgs),
    /// Stop a cycling run gracefully: its active cycles finish, no new cycle starts, and
    /// the engine exits 0 (`twinflow run --resume` goes on from the next cycle).
    #[command(after_help = "Example:\n  twinflow stop latest\n\nCtrl-C (or `twinflow cancel`) instead stops the running tasks at once.\n\n".to_string() + exit::HELP)]
    Stop(StopArgs),
    /// Send a signal to a cycling run: satisfies `wait: { signal: NAME }` of a cycle.
    #[command(after_help = "Examples:\n  twinflow signal latest calibrated                       # the earliest cycle waiting for it\n  twinflow signal latest calibrated --cycle 2026-03-01T06:00Z --value run=4711\n\nA signal no cycle waits for yet is kept until one does; `--value`s are read as `wait.KEY`.\n\n".to_string() + exit::HELP)]
    Signal(SignalArgs),
    /// Show where a run's results are: the workflow's `outputs:` and each task's declared
    /// outputs at their real paths (an earlier run's directory for a result reused from the
    /// cache).
    #[command(after_help = "Examples:\n  twinflow outputs latest\n  twinflow outputs 20261122-101500-3f2a --json\n\n".to_string() + exit::HELP)]
    Outputs(OutputsArgs),
    /// Export a run's provenance as a Workflow Run RO-Crate (Provenance Run Crate 0.5): the
    /// workflow, parameters, every task's attempts with command, environment, times, exit
    /// status, inputs and outputs (by URI, with SHA-256), and the software versions.
    #[command(after_help = "Examples:\n  twinflow export latest --ro-crate crate/\n  twinflow export 20261122-101500-3f2a --ro-crate run.crate.zip\n\nThe crate's identifier, urn:twinflow:run:RUN_ID, is in the `twinflow_provenance`\nattribute of every NetCDF/HDF5 output of the run's kernels.\n\n".to_string() + exit::HELP)]
    Export(ExportArgs),
    /// Remove old runs' directories and database rows. Never removes a run in progress, nor
    /// one whose results a kept run reuses; cache entries of removed results are dropped.
    #[command(after_help = "Examples:\n  twinflow clean --keep 5 --dry-run     # what would go, and how much it would free\n  twinflow clean --keep 5\n  twinflow clean --failed\n  twinflow clean --before 2026-12-01\n\nThe conditions given must all hold for a run to be removed.\n\n".to_string() + exit::HELP)]
    Clean(CleanArgs),
    /// Write a run's report: one self-contained HTML file (summary, DAG, timeline, task
    /// table, the figures and tables steps declare), for a finished run or one in progress.
    #[command(after_help = "Examples:\n  twinflow report latest                      # writes runs/RUN/report.html\n  twinflow report latest -o report.html --trace trace.tsv --junit junit.xml\n  chromium --headless --screenshot=shot.png runs/20261122-101500-3f2a/report.html\n\nEvery run writes RUN/report.html when it ends; this writes it again, or for a run in progress.\n\n".to_string() + exit::HELP)]
    Report(ReportArgs),
    /// Print the JSON Schema of the workflow format.
    #[command(after_help = "Example:\n  twinflow schema > schemas/workflow.schema.json\n\n".to_string() + exit::HELP)]
    Schema,
    /// Run tasks for an engine in allocation mode with pilot workers: started by the engine,
    /// one per node of the allocation, with one `srun` (a profile with a `pilot:` section).
    #[command(hide = true, after_help = "Example (what the engine runs, one worker per node):\n  srun --jobid=42 --overlap --nodes=2 --ntasks=2 --ntasks-per-node=1 --mpi=none \\\n    twinflow worker --connect login1:40123 \\\n      --address-file runs/allocations/pilot-RUN.address --secret-file runs/allocations/pilot-RUN.secret\n\nThe worker connects to the engine, proves it knows the run's secret (the file must be\nmode 0600), runs the tasks it is given in their own process groups, and exits when the\nengine ends the run. When the engine is lost its tasks go on and it dials again (the\naddress file names the engine of `run --resume`), which adopts them; a worker that hears\nfrom no engine for --heartbeat stops its tasks and exits 1.\n\n".to_string() + exit::HELP)]
    Worker(WorkerArgs),
}

/// `worker` arguments.
#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// The engine's address, `HOST:PORT`.
    #[arg(long, value_name = "HOST:PORT")]
    pub connect: String,
    /// A file holding the engine's address, read before each dial when it exists: a worker
    /// that lost its engine dials the one `run --resume` started there.
    #[arg(long, value_name = "PATH")]
    pub address_file: Option<PathBuf>,
    /// The run's secret file (mode 0600).
    #[arg(long, value_name = "PATH")]
    pub secret_file: PathBuf,
    /// Node name reported to the engine (default: `SLURMD_NODENAME`, else the host name).
    #[arg(long, value_name = "NAME")]
    pub node: Option<String>,
    /// CPUs offered to the engine (default: `SLURM_CPUS_ON_NODE`, else all of this machine's).
    #[arg(long, value_name = "N")]
    pub cpus: Option<u32>,
    /// Stop the tasks and exit when the engine has been silent this long (`30s`, `2m`).
    #[arg(long, default_value = "30s")]
    pub heartbeat: String,
    /// Seconds between SIGTERM and SIGKILL when a task is cancelled or times out.
    #[arg(long, default_value_t = 10.0)]
    pub grace: f64,
}

/// A workflow file and its settings.
#[derive(Debug, Args)]
pub struct WorkflowArgs {
    /// The workflow file (YAML).
    pub file: PathBuf,
    /// Set a parameter: `-p members=8`, `-p rates=1.5,2.5` (lists: comma-separated or JSON).
    #[arg(short = 'p', long = "param", value_name = "NAME=VALUE")]
    pub params: Vec<String>,
    /// Set an input file: `-i dem=data/dem.nc`.
    #[arg(short = 'i', long = "input", value_name = "NAME=PATH")]
    pub inputs: Vec<String>,
}

/// `validate` arguments.
#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// Workflow and settings.
    #[command(flatten)]
    pub wf: WorkflowArgs,
    /// Also look up what the run needs on this machine, as `twinflow run` does when it
    /// starts: the programs of `run:` known before the run, `twin-kernel` for kernel steps
    /// and the MPI launcher for multi-rank steps (a missing one: exit 3).
    #[arg(long)]
    pub check_env: bool,
    /// With `--check-env`: the MPI launcher to look up (default: `mpiexec`).
    #[arg(long, env = "TWINFLOW_MPIEXEC", value_name = "LAUNCHER")]
    pub mpiexec: Option<String>,
}

/// Output formats of `plan`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum PlanFormat {
    /// Readable text with resolved commands.
    Text,
    /// Graphviz dot.
    Dot,
    /// Mermaid flowchart.
    Mermaid,
    /// JSON with every task.
    Json,
}

/// Where tasks run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BackendKind {
    /// Child processes of the engine (`mpiexec` for multi-rank steps).
    Local,
    /// One SLURM batch job per task attempt (`sbatch`, `srun` for multi-rank steps).
    Slurm,
}

/// Backend selection, shared by `run` and `plan`.
#[derive(Debug, Args)]
pub struct BackendArgs {
    /// Where tasks run.
    #[arg(long, value_enum, default_value = "local")]
    pub backend: BackendKind,
    /// Site profile: a path to a YAML file, or a name looked up as `NAME.yaml` in
    /// $TWINFLOW_PROFILE_PATH, beside the workflow, in `hpc/profiles/`, then in
    /// $XDG_CONFIG_HOME/twinflow/profiles (default ~/.config/twinflow/profiles). With `--backend slurm`: partition,
    /// modules, limits, ...; with either backend: default resources and (local) the
    /// `mpiexec` launcher, flavour, flags and environment.
    #[arg(long, value_name = "NAME_OR_PATH")]
    pub profile: Option<String>,
    /// Submit the members of a scattered step that are ready together as one SLURM job
    /// array (`--array=0-N%K`, K = the profile's `submit.array_throttle`); each member
    /// finds its command by `SLURM_ARRAY_TASK_ID`. Same as `submit.arrays: true` in the
    /// profile. Needs `--backend slurm`.
    #[arg(long)]
    pub arrays: bool,
    /// Run every step inside one SLURM allocation with `srun --exact`, packing small and
    /// multi-rank steps into it: the allocation this process runs in (`SLURM_JOB_ID`, from
    /// `salloc` or an `sbatch` script), else one that twinflow submits (`--alloc-*`) and
    /// cancels at the end. Needs `--backend slurm`.
    #[arg(long)]
    pub allocation: bool,
}

/// `plan` arguments.
#[derive(Debug, Args)]
pub struct PlanArgs {
    /// Workflow and settings.
    #[command(flatten)]
    pub wf: WorkflowArgs,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    pub format: PlanFormat,
    /// Members shown per scattered step in text/dot/mermaid (JSON always lists all).
    #[arg(long, default_value_t = 3)]
    pub members: u32,
    /// Cycling workflows: cycles shown, with the edges between them (default 2).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub cycles: Option<u32>,
    /// Also show how the backend would launch each task (mpiexec prefix; with
    /// `--backend slurm` always on: the sbatch script of each task).
    #[arg(long)]
    pub launch: bool,
    /// Backend whose launch is shown.
    #[command(flatten)]
    pub backend: BackendArgs,
}

/// `run` arguments.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The workflow file; optional with `--resume`.
    pub file: Option<PathBuf>,
    /// Set a parameter: `-p members=8`.
    #[arg(short = 'p', long = "param", value_name = "NAME=VALUE")]
    pub params: Vec<String>,
    /// Set an input file: `-i dem=data/dem.nc`.
    #[arg(short = 'i', long = "input", value_name = "NAME=PATH")]
    pub inputs: Vec<String>,
    /// Continue a run that was killed or failed (the latest when no id is given); finished
    /// tasks are not run again.
    #[arg(long, value_name = "RUN", num_args = 0..=1, default_missing_value = "latest")]
    pub resume: Option<String>,
    /// After a failure, keep running tasks that do not depend on it (default: stop starting
    /// new tasks and let running ones finish).
    #[arg(long)]
    pub keep_going: bool,
    /// Run every task even if an earlier run left an up-to-date result.
    #[arg(long)]
    pub no_cache: bool,
    /// Run this step (a step name, or a call: all its steps) even when an earlier result is
    /// up to date, and every task that depends on it; repeatable.
    #[arg(long, value_name = "STEP")]
    pub rerun: Vec<String>,
    /// Cycling workflows: run this many cycles in all (overrides the workflow's end).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..), conflicts_with = "until")]
    pub cycles: Option<u64>,
    /// Cycling workflows: the last cycle point to run (`2026-03-02T00:00Z`, or an integer).
    #[arg(long, value_name = "POINT")]
    pub until: Option<String>,
    /// Cycling workflows: the first cycle point, instead of the workflow's `start:` (a new
    /// run only; a resumed run keeps its points).
    #[arg(long, value_name = "POINT", conflicts_with = "resume")]
    pub start: Option<String>,
    /// Cores the local scheduler may fill (default: all).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub cores: Option<u32>,
    /// Run at most N tasks at once.
    #[arg(short = 'j', long = "jobs", value_parser = clap::value_parser!(u64).range(1..))]
    pub jobs: Option<u64>,
    /// Seconds between SIGTERM and SIGKILL when stopping a step (0 to 3600); a second
    /// Ctrl-C kills at once.
    #[arg(long, default_value_t = 10.0, value_parser = grace_seconds)]
    pub grace: f64,
    /// MPI launcher for steps with `ranks > 1` (its flags may follow, space-separated;
    /// default: the profile's `mpiexec.command`, else `mpiexec`). Replaces the profile's
    /// launcher and flags; its flavour and environment stay.
    #[arg(long, env = "TWINFLOW_MPIEXEC", value_name = "LAUNCHER")]
    pub mpiexec: Option<String>,
    /// Print events as JSON lines on stdout instead of progress bars.
    #[arg(long)]
    pub json: bool,
    /// Directory holding the run database and run directories.
    #[arg(long, default_value = "runs", env = "TWINFLOW_RUNS_DIR")]
    pub runs_dir: PathBuf,
    /// Leave variables whose names match PATTERN (`*` any characters, case ignored) out of the
    /// run's environment snapshot, besides those that look like credentials (`*TOKEN*`,
    /// `*SECRET*`, `*PASSWORD*`, `*PASSWD*`, `*KEY*`, `*CREDENTIAL*`); repeat or separate with
    /// commas. Steps still get them.
    #[arg(long, value_name = "PATTERN", env = "TWINFLOW_ENV_EXCLUDE", value_delimiter = ',')]
    pub env_exclude: Vec<String>,
    /// Write no environment snapshot (`env-*.json`) at all.
    #[arg(long, env = "TWINFLOW_NO_ENV_SNAPSHOT")]
    pub no_env_snapshot: bool,
    /// Where tasks run.
    #[command(flatten)]
    pub backend: BackendArgs,
    /// With `--allocation`, outside an allocation: nodes to ask for.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub alloc_nodes: u32,
    /// With `--allocation`, outside an allocation: CPUs to ask for (default: the plan's
    /// total CPUs, at most 64, at least those of its largest step).
    #[arg(long, value_name = "N")]
    pub alloc_cpus: Option<u32>,
    /// With `--allocation`, outside an allocation: its time limit (`90m`, `2h`, seconds;
    /// default: the profile's `default_walltime`, else the partition's limit).
    #[arg(long, value_name = "DURATION")]
    pub alloc_time: Option<String>,
}

/// `cancel` arguments.
#[derive(Debug, Args)]
pub struct CancelArgs {
    /// A run id, or `latest`.
    #[arg(default_value = "latest")]
    pub run: String,
    /// Directory holding the run database.
    #[arg(long, default_value = "runs", env = "TWINFLOW_RUNS_DIR")]
    pub runs_dir: PathBuf,
}

/// `stop` arguments.
#[derive(Debug, Args)]
pub struct StopArgs {
    /// A run id, or `latest`.
    #[arg(default_value = "latest")]
    pub run: String,
    /// Directory holding the run database.
    #[arg(long, default_value = "runs", env = "TWINFLOW_RUNS_DIR")]
    pub runs_dir: PathBuf,
}

/// `signal` arguments.
#[derive(Debug, Args)]
pub struct SignalArgs {
    /// A run id, or `latest`.
    pub run: String,
    /// The signal's name (as in `wait: { signal: NAME }`).
    pub name: String,
    /// The cycle point it is for (default: the earliest cycle waiting for it).
    #[arg(long, value_name = "POINT")]
    pub cycle: Option<String>,
    /// A value the waiting step reads as `wait.KEY`: `--value run=4711` (repeatable).
    #[arg(long = "value", value_name = "KEY=VALUE")]
    pub values: Vec<String>,
    /// Directory holding the run database.
    #[arg(long, default_value = "runs", env = "TWINFLOW_RUNS_DIR")]
    pub runs_dir: PathBuf,
}

/// `status` arguments.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// A run id, or `latest`; without it, all runs are listed.
    pub run: Option<String>,
    /// JSON output.
    #[arg(long)]
    pub json: bool,
    /// Show times in the local time zone instead of UTC.
    #[arg(long)]
    pub local_time: bool,
    /// Cycling runs: show the tasks of this cycle (its point, as `status` lists it).
    #[arg(long, value_name = "POINT")]
    pub cycle: Option<String>,
    /// Exit 0 only if the run (the latest without RUN) succeeded, 1 if it failed, was
    /// cancelled or interrupted, or still runs: for CI gates.
    #[arg(long)]
    pub check: bool,
    /// Directory holding the run database.
    #[arg(long, default_value = "runs", env = "TWINFLOW_RUNS_DIR")]
    pub runs_dir: PathBuf,
}

/// `logs` arguments.
#[derive(Debug, Args)]
pub struct LogsArgs {
    /// A run id, or `latest`.
    pub run: String,
    /// The task: `step`, `step[7]`, `POINT/step[7]` (cycling runs), or a member by its
    /// scatter values: `step[seed=2,rain=40.0]`.
    pub task: String,
    /// Which attempt (default: the latest; a successful one is the task's `out/`).
    #[arg(long, value_name = "N")]
    pub attempt: Option<u32>,
    /// Only the standard output, as it is (no header).
    #[arg(long, conflicts_with = "stderr")]
    pub stdout: bool,
    /// Only the standard error, as it is (no header).
    #[arg(long)]
    pub stderr: bool,
    /// Keep printing what the attempt writes until it ends.
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// Directory holding the run database.
    #[arg(long, default_value = "runs", env = "TWINFLOW_RUNS_DIR")]
    pub runs_dir: PathBuf,
}

/// `report` arguments.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// A run id, or `latest`.
    pub run: String,
    /// Where the HTML report goes (default: `RUNS_DIR/RUN/report.html`).
    #[arg(short = 'o', long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Also write the trace: one TSV line per attempt (Nextflow-trace-like columns).
    #[arg(long, value_name = "FILE")]
    pub trace: Option<PathBuf>,
    /// Also write JUnit XML (one test case per task) for CI dashboards.
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
    /// Directory holding the run database.
    #[arg(long, default_value = "runs", env = "TWINFLOW_RUNS_DIR")]
    pub runs_dir: PathBuf,
}

/// `why` arguments.
#[derive(Debug, Args)]
pub struct WhyArgs {
    /// Workflow and settings.
    #[command(flatten)]
    pub wf: WorkflowArgs,
    /// The step to explain (all steps when omitted), or one task of it: `sim[7]`.
    pub step: Option<String>,
    /// As `run --rerun STEP` would: that step and what depends on it run.
    #[arg(long, value_name = "STEP")]
    pub rerun: Vec<String>,
    /// Cycling workflows: the cycle point whose tasks are explained (default: the first).
    #[arg(long, value_name = "POINT")]
    pub cycle: Option<String>,
    /// JSON output.
    #[arg(long)]
    pub json: bool,
    /// Directory holding the run database.
    #[arg(long, default_value = "runs", env = "TWINFLOW_RUNS_DIR")]
    pub runs_dir: PathBuf,
}

/// `outputs` arguments.
#[derive(Debug, Args)]
pub struct OutputsArgs {
    /// A run id, or `latest`.
    #[arg(default_value = "latest")]
    pub run: String,
    /// JSON output.
    #[arg(long)]
    pub json: bool,
    /// Directory holding the run database.
    #[arg(long, default_value = "runs", env = "TWINFLOW_RUNS_DIR")]
    pub runs_dir: PathBuf,
}

/// `export` arguments.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// A run id, or `latest`.
    #[arg(default_value = "latest")]
    pub run: String,
    /// Write the RO-Crate to this new directory, or to this `.zip` file.
    #[arg(long, value_name = "DIR|FILE.zip")]
    pub ro_crate: PathBuf,
    /// JSON output (what was written).
    #[arg(long)]
    pub json: bool,
    /// Directory holding the run database.
    #[arg(long, default_value = "runs", env = "TWINFLOW_RUNS_DIR")]
    pub runs_dir: PathBuf,
}

/// `clean` arguments.
#[derive(Debug, Args)]
pub struct CleanArgs {
    /// Keep the N newest runs.
    #[arg(long, value_name = "N")]
    pub keep: Option<usize>,
    /// Only runs started before DATE (`2026-12-01`, midnight UTC, or `2026-12-01T12:00:00Z`).
    #[arg(long, value_name = "DATE")]
    pub before: Option<String>,
    /// Only runs that failed, were cancelled or interrupted.
    #[arg(long)]
    pub failed: bool,
    /// Say what would be removed and how much it would free; remove nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// JSON output.
    #[arg(long)]
    pub json: bool,
    /// Directory holding the run database and run directories.
    #[arg(long, default_value = "runs", env = "TWINFLOW_RUNS_DIR")]
    pub runs_dir: PathBuf,
}

/// `--grace`: a number of seconds from 0 to 3600 (not NaN or infinite).
fn grace_seconds(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && (0.0..=3600.0).contains(&v) => Ok(v),
        Ok(_) => Err("seconds from 0 to 3600".into()),
        Err(e) => Err(e.to_string()),
    }
}
