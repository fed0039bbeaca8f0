//! Site profiles: what a site needs in every job (partition, account, QOS, `module load`,
//! environment set-up, the MPI plugin of `srun`, the `mpiexec` of the local backend, default
//! resources) and how hard the engine may use the controller (jobs in flight, submissions
//! per second, poll intervals).
//!
//! Two phases, like workflows: the YAML is read into [`RawProfile`] (unknown keys are
//! errors with their place), then checked into a [`Profile`] that the rest of the backend
//! uses. Every problem of a file is reported at once.
//!
//! A profile is named on the command line (`--profile local`, looked up as `local.yaml` in
//! `$TWINFLOW_PROFILE_PATH`, the workflow's directory, `hpc/profiles/` and
//! `~/.config/twinflow/profiles`: [`Profile::search_dirs`]) or given as a path. `hpc/profiles/
//! example-site.yaml` documents every key.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::launch::{MpiFlavour, Mpiexec};
use crate::units::parse_duration;

/// Directories searched (in order, `:`-separated) for `NAME.yaml` when `--profile` is a name.
pub const PROFILE_PATH_ENV: &str = "TWINFLOW_PROFILE_PATH";

/// Where a job's state comes from once it has left `squeue`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StatusSource {
    /// Plain `sacct` (slurmdbd) if accounting is enabled, else `sacct -c` (the job
    /// completion log), else `scontrol show job` per job.
    Auto,
    /// `sacct` against slurmdbd.
    Sacct,
    /// `sacct -c`: the `jobcomp/filetxt` completion log, no slurmdbd needed.
    Jobcomp,
    /// `scontrol show job ID`, one call per finished job (only while the controller keeps
    /// finished jobs, `MinJobAge`).
    Scontrol,
}

/// A site profile, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    /// Name (the `name:` key, else the file stem).
    pub name: String,
    /// `#SBATCH --partition`.
    pub partition: Option<String>,
    /// `#SBATCH --account`.
    pub account: Option<String>,
    /// `#SBATCH --qos`.
    pub qos: Option<String>,
    /// Further `#SBATCH` options, each one option (`--constraint=cpu`).
    pub sbatch_flags: Vec<String>,
    /// Modules loaded before the step (`module load X`).
    pub modules: Vec<String>,
    /// Shell lines run before the step, after the modules (site code, not quoted).
    pub setup: Vec<String>,
    /// Environment exported for every step (values are data: quoted).
    pub env: Vec<(String, String)>,
    /// `srun --mpi=` plugin for multi-rank steps (`pmi2` for MPICH, `pmix` for Open MPI);
    /// `None` leaves the cluster's `MpiDefault`.
    pub mpi: Option<String>,
    /// Further `srun` options for multi-rank steps (`--cpu-bind=cores`).
    pub srun_flags: Vec<String>,
    /// `--time` for steps that have neither `resources.walltime` nor `timeout`.
    pub default_walltime: Option<Duration>,
    /// Memory (bytes) for steps that do not set `resources.memory`.
    pub default_memory: Option<u64>,
    /// Threads per rank for steps that do not set `resources.threads`.
    pub default_threads: Option<u32>,
    /// GPUs for steps that do not set `resources.gpus`.
    pub default_gpus: Option<u32>,
    /// The local backend's MPI launcher (`None`: `mpiexec` or `--mpiexec`).
    pub mpiexec: Option<Mpiexec>,
    /// Jobs in flight at once (queued or running).
    pub max_jobs: Option<usize>,
    /// Submissions per second.
    pub submit_rate: Option<f64>,
    /// Retries of a failed `sbatch` (transient controller errors) before the run stops.
    pub submit_retries: u32,
    /// First delay between `sbatch` retries (doubles each time, at most 30 s).
    pub submit_backoff: Duration,
    /// Submit the members of a scattered step that are ready together as one job array.
    pub arrays: bool,
    /// Members of one array running at once (`--array=...%K`); `None`: no limit.
    pub array_throttle: Option<u32>,
    /// Shortest time between two status queries.
    pub poll_min: Duration,
    /// Longest time between two status queries while nothing changes.
    pub poll_max: Duration,
    /// Where finished jobs' states come from.
    pub status_source: StatusSource,
    /// How long a job may be missing from both `squeue` and accounting (records lag) before
    /// `scontrol show job` is asked.
    pub missing_grace: Duration,
    /// How long status queries may keep failing before the run stops.
    pub poll_failure_timeout: Duration,
    /// Time limit of one `sbatch`/`squeue`/`sacct`/`scontrol`/`scancel` call.
    pub command_timeout: Duration,
    /// Job ids per `squeue`/`sacct`/`scancel` call.
    pub chunk: usize,
    /// Walltime multiplier for the retry of a job that hit its time limit (1: off).
    pub walltime_factor: f64,
    /// Memory multiplier for the retry of a job that ran out of memory (1: off).
    pub memory_factor: f64,
    /// An allocation twinflow submitted ends itself when its engine has not touched the
    /// allocation's heartbeat file for this long (an engine killed with -9 and neither
    /// resumed nor cancelled would otherwise hold the nodes until the time limit).
    pub allocation_idle: Duration,
    /// Allocation mode with pilot workers (`pilot:` section): one `twinflow worker` per
    /// node instead of one `srun` per task (`None`: `srun` per task).
    pub pilot: Option<PilotSettings>,
}

/// The `pilot:` section of a profile: allocation mode runs tasks on pilot workers (see
/// [`super::pilot`]).
#[derive(Debug, Clone, PartialEq)]
pub struct PilotSettings {
    /// Host name or address the workers connect to (default: this host's name); an IP
    /// address here is also the only interface the engine listens on.
    pub address: Option<String>,
    /// Either side gives the other up after this long without a message.
    pub heartbeat: Duration,
    /// How the workers are started.
    pub launch: PilotLaunch,
    /// Workers started with [`PilotLaunch::Local`].
    pub workers: u32,
    /// How a worker starts a step of more than one rank.
    pub mpi_launcher: MpiLauncher,
}

impl Default for PilotSettings {
    fn default() -> Self {
        Self {
            address: None,
            heartbeat: Duration::from_secs(30),
            launch: PilotLaunch::Srun,
            workers: 1,
            mpi_launcher: MpiLauncher::Srun,
        }
    }
}

/// `pilot.launch`: how the engine starts its workers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PilotLaunch {
    /// One `srun` over the allocation's nodes (allocation mode, `--backend slurm --allocation`).
    #[default]
    Srun,
    /// `pilot.workers` processes on this machine, with the local backend: no SLURM; the
    /// tasks outlive a killed engine and a resumed one adopts them.
    Local,
}

/// `pilot.mpi_launcher`: how a worker starts a step of more than one rank.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MpiLauncher {
    /// `srun --exact` into the allocation (SLURM places the ranks); without an allocation
    /// (`launch: local`), the profile's `mpiexec`.
    #[default]
    Srun,
    /// The profile's `mpiexec`: on the worker's node for a step that fits on one node, else
    /// with the host list of the workers' nodes.
    Mpiexec,
}

impl Default for Profile {
    fn default() -> Self {
        Self {
            name: "default".into(),
            partition: None,
            account: None,
            qos: None,
            sbatch_flags: vec![],
            modules: vec![],
            setup: vec![],
            env: vec![],
            mpi: None,
            srun_flags: vec![],
            default_walltime: None,
            default_memory: None,
            default_threads: None,
            default_gpus: None,
            mpiexec: None,
            max_jobs: None,
            submit_rate: None,
            submit_retries: 6,
            submit_backoff: Duration::from_millis(500),
            arrays: false,
            array_throttle: None,
            poll_min: Duration::from_millis(500),
            poll_max: Duration::from_secs(5),
            status_source: StatusSource::Auto,
            missing_grace: Duration::from_secs(30),
            poll_failure_timeout: Duration::from_secs(300),
            command_timeout: Duration::from_secs(60),
            allocation_idle: Duration::from_secs(600),
            pilot: None,
            chunk: 500,
            walltime_factor: 1.0,
            memory_factor: 1.0,
        }
    }
}

/// A duration written as text (`90s`, `1h`) or a number of seconds.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum RawDuration {
    /// Seconds.
    Seconds(f64),
    /// Text with units.
    Text(String),
}

/// The YAML shape of a profile, before checks.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct RawProfile {
    pub name: Option<String>,
    pub partition: Option<String>,
    pub account: Option<String>,
    pub qos: Option<String>,
    #[serde(default)]
    pub sbatch_flags: Vec<String>,
    #[serde(default)]
    pub modules: Vec<String>,
    #[serde(default)]
    pub setup: Vec<String>,
    #[serde(default)]
    pub env: indexmap::IndexMap<String, String>,
    pub mpi: Option<String>,
    #[serde(default)]
    pub srun_flags: Vec<String>,
    pub default_walltime: Option<RawDuration>,
    pub default_memory: Option<RawBytes>,
    pub default_threads: Option<i64>,
    pub default_gpus: Option<i64>,
    pub mpiexec: Option<RawMpiexec>,
    pub limits: Option<RawLimits>,
    pub polling: Option<RawPolling>,
    pub submit: Option<RawSubmit>,
    pub escalate: Option<RawEscalate>,
    pub allocation_idle: Option<RawDuration>,
    pub pilot: Option<RawPilot>,
}

/// `pilot:`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct RawPilot {
    #[serde(default = "yes")]
    pub enabled: bool,
    pub address: Option<serde_saphyr::Spanned<String>>,
    pub heartbeat: Option<serde_saphyr::Spanned<RawDuration>>,
    pub launch: Option<PilotLaunch>,
    pub workers: Option<serde_saphyr::Spanned<i64>>,
    pub mpi_launcher: Option<MpiLauncher>,
}

/// `line N: ` for a problem with a value at `at` (values of the `pilot:` section keep
/// their place, so its problems name the line).
fn at_line<T>(v: &serde_saphyr::Spanned<T>) -> String {
    match v.referenced.line() {
        0 => String::new(),
        n => format!("line {n}: "),
    }
}

fn yes() -> bool {
    true
}

/// A size written as text (`2G`, `512M`) or a number of bytes.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum RawBytes {
    /// Bytes.
    Bytes(u64),
    /// Text with units.
    Text(String),
}

/// `mpiexec:`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct RawMpiexec {
    pub flavour: Option<MpiFlavour>,
    pub command: Option<String>,
    #[serde(default)]
    pub flags: Vec<String>,
    #[serde(default)]
    pub env: indexmap::IndexMap<String, String>,
}

/// `limits:`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct RawLimits {
    pub max_jobs: Option<i64>,
    pub submit_rate: Option<f64>,
}

/// `polling:`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct RawPolling {
    pub min_interval: Option<RawDuration>,
    pub max_interval: Option<RawDuration>,
    pub status_source: Option<StatusSource>,
    pub missing_grace: Option<RawDuration>,
    pub failure_timeout: Option<RawDuration>,
    pub command_timeout: Option<RawDuration>,
    pub chunk: Option<i64>,
}

/// `submit:`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct RawSubmit {
    pub retries: Option<i64>,
    pub backoff: Option<RawDuration>,
    pub arrays: Option<bool>,
    pub array_throttle: Option<i64>,
}

/// `escalate:`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct RawEscalate {
    pub walltime_factor: Option<f64>,
    pub memory_factor: Option<f64>,
}

/// Problems finding, reading or checking a profile.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    /// No file for a profile name.
    #[error(
        "no site profile `{name}` (looked for `{name}.yaml` in {searched})\nhint: pass a path (`--profile site.yaml`), put the file in one of these directories, or set `TWINFLOW_PROFILE_PATH`"
    )]
    NotFound {
        /// The name.
        name: String,
        /// Directories searched, for the message.
        searched: String,
    },
    /// The file could not be read.
    #[error("cannot read profile `{path}`: {source}")]
    Read {
        /// File.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Not YAML of the right shape (unknown key, wrong type).
    #[error("profile `{path}`: {message}")]
    Parse {
        /// File.
        path: PathBuf,
        /// What the parser said (with line and column).
        message: String,
    },
    /// Values that fail the checks, all of them.
    #[error("profile `{path}`:\n{}", problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid {
        /// File.
        path: PathBuf,
        /// One line per problem.
        problems: Vec<String>,
    },
}

impl Profile {
    /// Fills in the resources a step did not set with the profile's defaults
    /// (`default_memory`, `default_threads`, `default_gpus`; `default_walltime` applies when
    /// a job script is rendered, see [`super::slurm::script::time_limit`]).
    pub fn apply_defaults(&self, r: &mut crate::model::Resources) {
        if !r.given.memory
            && let Some(m) = self.default_memory
        {
            r.memory = m;
        }
        if !r.given.threads
            && let Some(t) = self.default_threads
        {
            r.threads = t;
        }
        if !r.given.gpus
            && let Some(g) = self.default_gpus
        {
            r.gpus = g;
        }
    }

    /// Finds and loads a profile: a path (contains `/` or ends in `.yaml`/`.yml`), or a name
    /// looked up as `NAME.yaml` in the directories of [`Profile::search_dirs`].
    pub fn find(name_or_path: &str, workflow_dir: Option<&Path>) -> Result<Self, ProfileError> {
        let looks_like_path =
            name_or_path.contains('/') || name_or_path.ends_with(".yaml") || name_or_path.ends_with(".yml");
        if looks_like_path {
            return Self::load(Path::new(name_or_path));
        }
        let dirs = Self::search_dirs(workflow_dir, &|k| std::env::var_os(k));
        for d in &dirs {
            for ext in ["yaml", "yml"] {
                let p = d.join(format!("{name_or_path}.{ext}"));
                if p.is_file() {
                    return Self::load(&p);
                }
            }
        }
        Err(ProfileError::NotFound {
            name: name_or_path.to_string(),
            searched: dirs.iter().map(|d| format!("`{}`", d.display())).collect::<Vec<_>>().join(", "),
        })
    }

    /// Where a profile given by name is looked for, in order: the directories of
    /// `$TWINFLOW_PROFILE_PATH` (`:`-separated), the workflow file's directory, `hpc/profiles`
    /// of the current directory (the repository's own profiles), then the user's
    /// configuration: `$XDG_CONFIG_HOME/twinflow/profiles`, else
    /// `~/.config/twinflow/profiles`. `var` reads the environment (a parameter for tests).
    pub fn search_dirs(workflow_dir: Option<&Path>, var: &dyn Fn(&str) -> Option<std::ffi::OsString>) -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = var(PROFILE_PATH_ENV)
            .map(|v| std::env::split_paths(&v).filter(|p| !p.as_os_str().is_empty()).collect())
            .unwrap_or_default();
        if let Some(w) = workflow_dir {
            // `examples/x.yaml` has the directory `` (the current one): shown as `.`.
            dirs.push(if w.as_os_str().is_empty() { PathBuf::from(".") } else { w.to_path_buf() });
        }
        dirs.push(PathBuf::from("hpc/profiles"));
        let config = var("XDG_CONFIG_HOME")
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
            .or_else(|| var("HOME").map(|h| PathBuf::from(h).join(".config")));
        if let Some(c) = config {
            dirs.push(c.join("twinflow").join("profiles"));
        }
        let mut seen = std::collections::HashSet::new();
        dirs.retain(|d| seen.insert(d.clone()));
        dirs
    }

    /// Loads a profile file.
    pub fn load(path: &Path) -> Result<Self, ProfileError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ProfileError::Read { path: path.to_path_buf(), source })?;
        let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("profile");
        Self::parse(&text, stem).map_err(|e| match e {
            ProfileError::Parse { message, .. } => ProfileError::Parse { path: path.to_path_buf(), message },
            ProfileError::Invalid { problems, .. } => ProfileError::Invalid { path: path.to_path_buf(), problems },
            other => other,
        })
    }

    /// Parses and checks a profile's text; `default_name` names it when it has no `name:`.
    pub fn parse(text: &str, default_name: &str) -> Result<Self, ProfileError> {
        let raw: RawProfile = if text.lines().all(|l| l.trim().is_empty() || l.trim_start().starts_with('#')) {
            RawProfile::default()
        } else {
            serde_saphyr::from_str_with_options(text, yaml_options()).map_err(|e: serde_saphyr::Error| {
                use serde_saphyr::{Error as E, budget::BudgetBreach as B};
                let e = e.without_snippet();
                let m = if let E::Budget { breach: B::Depth { .. }, .. } = e {
                    let at = e.location().map(|l| format!(" (line {})", l.line())).unwrap_or_default();
                    format!(
                        "nested more than {MAX_PROFILE_DEPTH} levels deep{at}: a profile's mappings and lists nest three levels at most"
                    )
                } else {
                    let m = e.to_string();
                    m.strip_prefix("error: ").unwrap_or(&m).to_string()
                };
                ProfileError::Parse { path: PathBuf::new(), message: m }
            })?
        };
        check(raw, default_name).map_err(|problems| ProfileError::Invalid { path: PathBuf::new(), problems })
    }
}

/// The YAML parser's limits for a profile. A profile nests three levels at most
/// (`pilot: { launch: ... }`, `mpiexec: { flags: [...] }`); the parser's default of 64
/// let a hostile file of nested complex keys (`? ? ? ...`, 2.4 KB, found by the fuzzer)
/// recurse deeply enough to overflow a 2 MiB thread stack in a debug build.
fn yaml_options() -> serde_saphyr::Options {
    let mut budget = serde_saphyr::budget::Budget::default();
    budget.max_depth = MAX_PROFILE_DEPTH;
    let mut o = serde_saphyr::Options::default();
    o.budget = Some(budget);
    o
}

/// How deep a profile's YAML may nest (mappings and lists).
const MAX_PROFILE_DEPTH: usize = 8;

fn dur(field: &str, v: Option<RawDuration>, problems: &mut Vec<String>) -> Option<Duration> {
    match v? {
        RawDuration::Seconds(s) if (0.0..366.0 * 86400.0).contains(&s) => Some(Duration::from_secs_f64(s)),
        RawDuration::Seconds(s) => {
            problems.push(format!("`{field}`: invalid duration `{s}`"));
            None
        }
        RawDuration::Text(t) => match parse_duration(&t) {
            Ok(d) => Some(d),
            Err(e) => {
                problems.push(format!("`{field}`: {e}"));
                None
            }
        },
    }
}

/// Words that end up in `#SBATCH` lines: no spaces, quotes or newlines that could change
/// the script.
fn word_ok(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "_.,:+-=/@%".contains(c))
}

fn check(raw: RawProfile, default_name: &str) -> Result<Profile, Vec<String>> {
    let mut p = Profile { name: raw.name.clone().unwrap_or_else(|| default_name.to_string()), ..Profile::default() };
    let mut problems = vec![];
    for (field, v, out) in [
        ("partition", raw.partition, &mut p.partition),
        ("account", raw.account, &mut p.account),
        ("qos", raw.qos, &mut p.qos),
    ] {
        if let Some(v) = v {
            if word_ok(&v) {
                *out = Some(v);
            } else {
                problems.push(format!("`{field}`: `{v}` is not a SLURM name (letters, digits, `_.,:+-`)"));
            }
        }
    }
    for f in &raw.sbatch_flags {
        // One option per entry, as on the command line: `--constraint=cpu`. A newline or a
        // second option would add lines to the script that nobody reviewed.
        if !f.starts_with('-') || f.contains(['\n', '\r']) || f.split_whitespace().count() != 1 {
            problems.push(format!("`sbatch_flags`: `{f}` must be one option such as `--constraint=cpu`"));
        }
    }
    p.sbatch_flags = raw.sbatch_flags;
    for f in &raw.srun_flags {
        if !f.starts_with('-') || f.contains(['\n', '\r']) {
            problems.push(format!("`srun_flags`: `{f}` must be an option such as `--cpu-bind=cores`"));
        }
    }
    p.srun_flags = raw.srun_flags;
    for m in &raw.modules {
        if m.trim().is_empty() || m.contains(['\n', '\r']) {
            problems.push(format!("`modules`: `{m}` is not a module name"));
        }
    }
    p.modules = raw.modules;
    p.setup = raw.setup;
    for (k, v) in raw.env {
        if !is_env_name(&k) {
            problems.push(format!("`env`: `{k}` is not an environment variable name"));
        }
        p.env.push((k, v));
    }
    if let Some(m) = raw.mpi {
        if m.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') && !m.is_empty() {
            p.mpi = Some(m);
        } else {
            problems.push(format!("`mpi`: `{m}` is not an srun MPI plugin (`pmi2`, `pmix`, `none`)"));
        }
    }
    p.default_walltime = dur("default_walltime", raw.default_walltime, &mut problems);
    if let Some(d) = dur("allocation_idle", raw.allocation_idle, &mut problems) {
        if d >= Duration::from_secs(3) {
            p.allocation_idle = d;
        } else {
            problems.push("`allocation_idle`: must be at least 3s".into());
        }
    }
    if let Some(pl) = raw.pilot
        && pl.enabled
    {
        let mut out = PilotSettings::default();
        if let Some(a) = pl.address {
            let line = at_line(&a);
            let a = a.value;
            if word_ok(&a) && !a.contains(['/', '=', ',']) {
                out.address = Some(a);
            } else {
                problems.push(format!("{line}`pilot.address`: `{a}` is not a host name or address"));
            }
        }
        if let Some(h) = pl.heartbeat {
            let line = at_line(&h);
            let mut mine = vec![];
            match dur("pilot.heartbeat", Some(h.value), &mut mine) {
                Some(d) if d >= Duration::from_secs(1) => out.heartbeat = d,
                Some(_) => problems.push(format!("{line}`pilot.heartbeat`: must be at least 1s")),
                None => {}
            }
            problems.extend(mine.into_iter().map(|m| format!("{line}{m}")));
        }
        out.launch = pl.launch.unwrap_or_default();
        out.mpi_launcher = pl.mpi_launcher.unwrap_or_default();
        if let Some(w) = pl.workers {
            match w.value {
                n if out.launch != PilotLaunch::Local => problems.push(format!(
                    "{}`pilot.workers`: {n} workers are for `launch: local` (with `srun`, one per node of the allocation)",
                    at_line(&w)
                )),
                n @ 1..=1024 => out.workers = n as u32,
                n => problems.push(format!("{}`pilot.workers`: must be between 1 and 1024, got {n}", at_line(&w))),
            }
        }
        p.pilot = Some(out);
    }
    match raw.default_memory {
        Some(RawBytes::Bytes(b)) if b > 0 => p.default_memory = Some(b),
        Some(RawBytes::Text(t)) => match crate::units::parse_bytes(&t) {
            Ok(b) if b > 0 => p.default_memory = Some(b),
            Ok(_) => problems.push("`default_memory`: must be more than 0".into()),
            Err(e) => problems.push(format!("`default_memory`: {e}")),
        },
        Some(RawBytes::Bytes(_)) => problems.push("`default_memory`: must be more than 0".into()),
        None => {}
    }
    match raw.default_threads {
        Some(n) if (1..=4096).contains(&n) => p.default_threads = Some(n as u32),
        Some(n) => problems.push(format!("`default_threads`: must be between 1 and 4096, got {n}")),
        None => {}
    }
    match raw.default_gpus {
        Some(n) if (0..=1024).contains(&n) => p.default_gpus = Some(n as u32),
        Some(n) => problems.push(format!("`default_gpus`: must be between 0 and 1024, got {n}")),
        None => {}
    }
    if let Some(m) = raw.mpiexec {
        let mut out = Mpiexec { flavour: m.flavour.unwrap_or_default(), ..Mpiexec::default() };
        if let Some(c) = m.command {
            if c.trim().is_empty() || c.contains(['\n', '\r']) || c.split_whitespace().count() != 1 {
                problems
                    .push(format!("`mpiexec.command`: `{c}` must be one program (its options go in `mpiexec.flags`)"));
            } else {
                out.command = c;
            }
        }
        for f in &m.flags {
            if f.is_empty() || f.contains(['\n', '\r']) {
                problems.push(format!("`mpiexec.flags`: `{f}` must be one word of the command line"));
            }
        }
        out.flags = m.flags;
        for (k, v) in m.env {
            if !is_env_name(&k) {
                problems.push(format!("`mpiexec.env`: `{k}` is not an environment variable name"));
            }
            out.env.push((k, v));
        }
        p.mpiexec = Some(out);
    }
    if let Some(l) = raw.limits {
        match l.max_jobs {
            Some(n) if n >= 1 => p.max_jobs = Some(n as usize),
            Some(n) => problems.push(format!("`limits.max_jobs`: must be at least 1, got {n}")),
            None => {}
        }
        match l.submit_rate {
            Some(r) if r.is_finite() && r > 0.0 => p.submit_rate = Some(r),
            Some(r) => problems.push(format!("`limits.submit_rate`: must be a positive number per second, got {r}")),
            None => {}
        }
    }
    if let Some(s) = raw.submit {
        match s.retries {
            Some(n) if (0..=100).contains(&n) => p.submit_retries = n as u32,
            Some(n) => problems.push(format!("`submit.retries`: must be between 0 and 100, got {n}")),
            None => {}
        }
        if let Some(d) = dur("submit.backoff", s.backoff, &mut problems) {
            p.submit_backoff = d;
        }
        if let Some(a) = s.arrays {
            p.arrays = a;
        }
        match s.array_throttle {
            Some(n) if (1..=i64::from(u32::MAX)).contains(&n) => p.array_throttle = Some(n as u32),
            Some(n) => problems.push(format!("`submit.array_throttle`: must be at least 1, got {n}")),
            None => {}
        }
    }
    if let Some(pl) = raw.polling {
        if let Some(d) = dur("polling.min_interval", pl.min_interval, &mut problems) {
            p.poll_min = d.max(Duration::from_millis(50));
        }
        if let Some(d) = dur("polling.max_interval", pl.max_interval, &mut problems) {
            p.poll_max = d;
        }
        if let Some(s) = pl.status_source {
            p.status_source = s;
        }
        if let Some(d) = dur("polling.missing_grace", pl.missing_grace, &mut problems) {
            p.missing_grace = d;
        }
        if let Some(d) = dur("polling.failure_timeout", pl.failure_timeout, &mut problems) {
            p.poll_failure_timeout = d;
        }
        if let Some(d) = dur("polling.command_timeout", pl.command_timeout, &mut problems) {
            p.command_timeout = d.max(Duration::from_secs(1));
        }
        match pl.chunk {
            Some(n) if (1..=10_000).contains(&n) => p.chunk = n as usize,
            Some(n) => problems.push(format!("`polling.chunk`: must be between 1 and 10000, got {n}")),
            None => {}
        }
        if p.poll_max < p.poll_min {
            problems.push(format!(
                "`polling.max_interval` ({:?}) is shorter than `polling.min_interval` ({:?})",
                p.poll_max, p.poll_min
            ));
        }
    }
    if let Some(e) = raw.escalate {
        for (field, v, out) in [
            ("escalate.walltime_factor", e.walltime_factor, &mut p.walltime_factor),
            ("escalate.memory_factor", e.memory_factor, &mut p.memory_factor),
        ] {
            match v {
                Some(f) if f.is_finite() && (1.0..=100.0).contains(&f) => *out = f,
                Some(f) => problems.push(format!("`{field}`: must be between 1 and 100, got {f}")),
                None => {}
            }
        }
    }
    if problems.is_empty() { Ok(p) } else { Err(problems) }
}

/// A valid shell variable name: `[A-Za-z_][A-Za-z0-9_]*`.
pub fn is_env_name(s: &str) -> bool {
    let mut c = s.chars();
    matches!(c.next(), Some(f) if f.is_ascii_alphabetic() || f == '_')
        && c.all(|x| x.is_ascii_alphanumeric() || x == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_profile_nested_deeper_than_the_limit_is_refused_not_recursed_into() {
        // Within the limit: the deepest a real profile goes.
        Profile::parse("mpiexec: { flags: [-bind-to, core] }\n", "p").unwrap();
        // The fuzzer's input: complex keys nested in one another (`? ? ? ...`) made the
        // parser recurse until a 2 MiB stack overflowed (debug build); replayed from
        // fuzz/regressions/profile/ as well.
        let hostile = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../fuzz/regressions/profile/stack-overflow-nested-complex-keys.yaml"
        ))
        .unwrap();
        let e = Profile::parse(&hostile, "p").unwrap_err();
        assert!(matches!(e, ProfileError::Parse { .. }), "{e}");
        assert!(e.to_string().contains("nested more than 8 levels deep (line 46)"), "{e}");
        let e = Profile::parse(&format!("? {}1{}\n: x\n", "[".repeat(12), "]".repeat(12)), "p").unwrap_err();
        assert!(e.to_string().contains("nested more than 8 levels deep (line 1)"), "{e}");
    }

    #[test]
    fn shipped_profiles_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../hpc/profiles");
        let local = Profile::load(&dir.join("local.yaml")).unwrap();
        assert_eq!(local.name, "local");
        assert_eq!(local.mpi.as_deref(), Some("pmi2"));
        assert_eq!(local.mpiexec.as_ref().map(|m| m.flavour), Some(MpiFlavour::Mpich));
        let site = Profile::load(&dir.join("example-site.yaml")).unwrap();
        assert!(site.account.is_some() && !site.modules.is_empty());
        assert_eq!((site.default_memory, site.default_threads), (Some(2 << 30), Some(1)));
        assert_eq!(site.pilot.as_ref().and_then(|p| p.address.as_deref()), Some("login1.example.org"));
        assert_eq!(local.pilot, None);
        let m = site.mpiexec.unwrap();
        assert_eq!((m.flavour, m.flags.as_slice()), (MpiFlavour::Openmpi, ["--oversubscribe".to_string()].as_slice()));
    }

    #[test]
    fn empty_profile_is_the_default() {
        assert_eq!(Profile::parse("# nothing\n", "x").unwrap(), Profile { name: "x".into(), ..Profile::default() });
    }

    #[test]
    fn unknown_keys_are_reported_with_their_place() {
        let e = Profile::parse("name: a\npartitoin: debug\n", "a").unwrap_err().to_string();
        assert!(e.contains("partitoin") && e.contains("line 2"), "{e}");
    }

    #[test]
    fn every_bad_value_is_reported() {
        let text = "partition: 'debug; rm -rf /'\nsbatch_flags: ['--a=1 --b=2']\nlimits: { max_jobs: 0 }\npolling: { min_interval: 3x }\nenv: { 'A-B': x }\n";
        let ProfileError::Invalid { problems, .. } = Profile::parse(text, "p").unwrap_err() else { panic!() };
        assert_eq!(problems.len(), 5, "{problems:#?}");
    }

    #[test]
    fn durations_as_numbers_or_text() {
        let p =
            Profile::parse("polling: { min_interval: 0.25, max_interval: 2m }\ndefault_walltime: 1h\n", "p").unwrap();
        assert_eq!(p.poll_min, Duration::from_millis(250));
        assert_eq!(p.poll_max, Duration::from_secs(120));
        assert_eq!(p.default_walltime, Some(Duration::from_secs(3600)));
    }

    #[test]
    fn default_resources_fill_in_what_a_step_does_not_set() {
        use crate::model::{Resources, ResourcesGiven};
        let p = Profile::parse("default_memory: 2G\ndefault_threads: 4\ndefault_gpus: 1\n", "p").unwrap();
        let mut unset = Resources::default();
        p.apply_defaults(&mut unset);
        assert_eq!((unset.memory, unset.threads, unset.gpus), (2 << 30, 4, 1));
        // A step that wrote `threads: 1`, `memory: 512M`, `gpus: 0` keeps them.
        let mut set = Resources {
            memory: 512 << 20,
            given: ResourcesGiven { threads: true, memory: true, gpus: true },
            ..Resources::default()
        };
        p.apply_defaults(&mut set);
        assert_eq!((set.memory, set.threads, set.gpus), (512 << 20, 1, 0));
        let bad = "default_memory: lots\ndefault_threads: 0\ndefault_gpus: -1\nmpiexec: { command: 'mpiexec -x', env: { 'A B': x } }\n";
        let ProfileError::Invalid { problems, .. } = Profile::parse(bad, "p").unwrap_err() else { panic!() };
        assert_eq!(problems.len(), 5, "{problems:#?}");
        let e = Profile::parse("mpiexec: { flavour: lam }\n", "p").unwrap_err().to_string();
        assert!(e.contains("lam") && e.contains("mpich"), "{e}");
    }

    #[test]
    fn a_profile_name_is_looked_for_beside_the_workflow_and_in_the_users_config() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |k: &str| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| std::ffi::OsString::from(v))
        };
        let dirs = Profile::search_dirs(
            Some(Path::new("/w/flows")),
            &env(&[("TWINFLOW_PROFILE_PATH", "/a:/b"), ("XDG_CONFIG_HOME", "/cfg"), ("HOME", "/home/u")]),
        );
        let want: Vec<PathBuf> =
            ["/a", "/b", "/w/flows", "hpc/profiles", "/cfg/twinflow/profiles"].iter().map(PathBuf::from).collect();
        assert_eq!(dirs, want);
        // Without XDG_CONFIG_HOME (or with a relative one, which the spec says to ignore):
        // `~/.config`.
        let dirs = Profile::search_dirs(Some(Path::new("")), &env(&[("XDG_CONFIG_HOME", "rel"), ("HOME", "/home/u")]));
        let want: Vec<PathBuf> =
            [".", "hpc/profiles", "/home/u/.config/twinflow/profiles"].iter().map(PathBuf::from).collect();
        assert_eq!(dirs, want);
        assert_eq!(Profile::search_dirs(None, &env(&[])), [PathBuf::from("hpc/profiles")]);
    }

    #[test]
    fn a_profile_beside_the_workflow_is_found_from_any_directory_and_a_miss_says_where_it_looked() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("mysite.yaml"), "partition: debug\n").unwrap();
        let p = Profile::find("mysite", Some(d.path())).unwrap();
        assert_eq!(p.partition.as_deref(), Some("debug"));
        let e = Profile::find("nosuch", Some(d.path())).unwrap_err().to_string();
        assert!(e.contains(&format!("`{}`", d.path().display())), "{e}");
        assert!(e.contains("`hpc/profiles`") && e.contains("twinflow/profiles"), "{e}");
    }

    #[test]
    fn the_pilot_section_turns_pilot_workers_on() {
        assert_eq!(
            Profile::parse(
                "name: p
", "p"
            )
            .unwrap()
            .pilot,
            None
        );
        let p = Profile::parse(
            "pilot: { address: 127.0.0.1, heartbeat: 5s }
",
            "p",
        )
        .unwrap();
        assert_eq!(
            p.pilot,
            Some(PilotSettings {
                address: Some("127.0.0.1".into()),
                heartbeat: Duration::from_secs(5),
                ..PilotSettings::default()
            })
        );
        assert_eq!(
            Profile::parse(
                "pilot: {}
",
                "p"
            )
            .unwrap()
            .pilot,
            Some(PilotSettings::default())
        );
        assert_eq!(
            Profile::parse(
                "pilot: { enabled: false }
",
                "p"
            )
            .unwrap()
            .pilot,
            None
        );
        let ProfileError::Invalid { problems, .. } = Profile::parse(
            "pilot: { address: 'a b', heartbeat: 0.1 }
",
            "p",
        )
        .unwrap_err() else {
            panic!()
        };
        assert_eq!(problems.len(), 2, "{problems:#?}");
        let e = Profile::parse(
            "pilot: { adress: x }
",
            "p",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("adress"), "{e}");
    }

    #[test]
    fn problems_of_the_pilot_section_name_their_line_and_field() {
        let text = "name: p\npilot:\n  launch: local\n  address: 'a b'\n  heartbeat: 0.5\n  workers: 0\n";
        let ProfileError::Invalid { problems, .. } = Profile::parse(text, "p").unwrap_err() else { panic!() };
        assert_eq!(
            problems,
            [
                "line 4: `pilot.address`: `a b` is not a host name or address",
                "line 5: `pilot.heartbeat`: must be at least 1s",
                "line 6: `pilot.workers`: must be between 1 and 1024, got 0",
            ]
        );
        let ProfileError::Invalid { problems, .. } =
            Profile::parse("pilot:\n  heartbeat: 3x\n  workers: 2\n", "p").unwrap_err()
        else {
            panic!()
        };
        assert_eq!(problems.len(), 2, "{problems:#?}");
        assert!(problems[0].starts_with("line 2: `pilot.heartbeat`: "), "{problems:#?}");
        assert!(problems[1].starts_with("line 3: `pilot.workers`: 2 workers are for `launch: local`"), "{problems:#?}");
        let p = Profile::parse("pilot: { launch: local, workers: 3, mpi_launcher: mpiexec }\n", "p").unwrap();
        let pl = p.pilot.unwrap();
        assert_eq!((pl.launch, pl.workers, pl.mpi_launcher), (PilotLaunch::Local, 3, MpiLauncher::Mpiexec));
        // Through a file: its path, then the line.
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("site.yaml");
        std::fs::write(&f, "pilot:\n  heartbeat: 0.5\n").unwrap();
        let e = Profile::load(&f).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("profile `{}`:", f.display())) && e.contains("line 2: `pilot.heartbeat`"),
            "{e}"
        );
    }
}
