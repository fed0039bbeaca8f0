//! Launchers shared by the backends: how a step's argv is prefixed to start its ranks.
//! `mpiexec -n R` (MPICH or Open MPI, from the site profile's `mpiexec:` section) for local
//! multi-rank steps, and `srun --exact` for every step of a run in a SLURM allocation (see
//! [`super::slurm::allocation`]). Both are pure functions of the request, so `twinflow plan`
//! shows exactly what runs.

use serde::Deserialize;

use crate::execute::JobRequest;

/// The MPI implementation behind `mpiexec`: the launchers differ in how they pass the
/// environment to ranks on other hosts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MpiFlavour {
    /// MPICH (Hydra): every rank gets the launcher's whole environment.
    #[default]
    Mpich,
    /// Open MPI: only variables named with `-x NAME` reach ranks on other hosts.
    Openmpi,
}

/// How the local backend launches steps with `ranks > 1` (the profile's `mpiexec:`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mpiexec {
    /// Which MPI implementation the launcher belongs to.
    pub flavour: MpiFlavour,
    /// The launcher program (`mpiexec`, `mpiexec.openmpi`, a path).
    pub command: String,
    /// Options after `-n R` (`--oversubscribe`, `--bind-to`, `core`).
    pub flags: Vec<String>,
    /// Environment for the launcher and its ranks (`OMPI_ALLOW_RUN_AS_ROOT: 1`).
    pub env: Vec<(String, String)>,
}

impl Default for Mpiexec {
    fn default() -> Self {
        Self { flavour: MpiFlavour::Mpich, command: "mpiexec".into(), flags: vec![], env: vec![] }
    }
}

impl Mpiexec {
    /// The launcher's words for `ranks` ranks, before the step's argv:
    /// `COMMAND [-x NAME...] -n R FLAGS...`. Open MPI gets `-x NAME` for each variable of
    /// `env`, so ranks on other hosts see them too (Hydra forwards everything by default).
    pub fn prefix(&self, ranks: u32) -> Vec<String> {
        let mut v = vec![self.command.clone()];
        if self.flavour == MpiFlavour::Openmpi {
            for (k, _) in &self.env {
                v.push("-x".into());
                v.push(k.clone());
            }
        }
        v.push("-n".into());
        v.push(ranks.to_string());
        v.extend(self.flags.iter().cloned());
        v
    }
}

impl Mpiexec {
    /// The launcher's words for `ranks` ranks spread over `hosts` (a step across nodes of
    /// an allocation, started by a pilot worker): [`Mpiexec::prefix`] with the host list and
    /// the ranks per host, `-hosts A,B -ppn P` for MPICH's Hydra, `--host A:P,B:P` (slots)
    /// for Open MPI. No hosts: [`Mpiexec::prefix`], the ranks on this node.
    pub fn prefix_on(&self, ranks: u32, hosts: &[String]) -> Vec<String> {
        let mut v = self.prefix(ranks);
        if hosts.is_empty() {
            return v;
        }
        let per = ranks.max(1).div_ceil(hosts.len() as u32);
        // After `-n R`, before the profile's flags.
        let at = v.len() - self.flags.len();
        let words = match self.flavour {
            MpiFlavour::Mpich => vec!["-hosts".to_string(), hosts.join(","), "-ppn".into(), per.to_string()],
            MpiFlavour::Openmpi => {
                vec!["--host".to_string(), hosts.iter().map(|h| format!("{h}:{per}")).collect::<Vec<_>>().join(",")]
            }
        };
        v.splice(at..at, words);
        v
    }
}

/// How steps are launched into an allocation (the local backend's launcher).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrunLaunch {
    /// The allocation's job id (`--jobid`).
    pub job_id: String,
    /// `--mpi=` plugin.
    pub mpi: Option<String>,
    /// Further srun flags from the profile.
    pub flags: Vec<String>,
    /// Memory per CPU of the allocation in MiB, given to steps that do not declare memory.
    pub mem_per_cpu_mb: Option<u64>,
    /// Shell text run before each step (the profile's modules, set-up and environment, see
    /// [`super::slurm::script::srun_prelude`]).
    pub prelude: Option<String>,
}

/// The `srun` words that launch `job` as a step of the allocation, followed by its argv.
/// Every step goes through `srun` (one rank too), so SLURM accounts and confines it.
pub fn srun_argv(launch: &SrunLaunch, job: &JobRequest) -> Vec<String> {
    let r = &job.resources;
    let mut v = vec![
        "srun".to_string(),
        format!("--jobid={}", launch.job_id),
        "--exact".into(),
        format!("--job-name={}", job_name(&job.name)),
        format!("--nodes={}", r.nodes.max(1)),
        format!("--ntasks={}", r.ranks.max(1)),
        format!("--cpus-per-task={}", r.threads.max(1)),
    ];
    if r.memory > 0 {
        v.push(format!("--mem={}M", slurm_mem_mb(r.memory, r.nodes)));
    } else if let Some(m) = launch.mem_per_cpu_mb {
        v.push(format!("--mem-per-cpu={m}M"));
    }
    if r.gpus > 0 {
        v.push(format!("--gres=gpu:{}", r.gpus));
    }
    if r.ranks > 1
        && let Some(m) = &launch.mpi
    {
        v.push(format!("--mpi={m}"));
    }
    v.extend(launch.flags.iter().cloned());
    if let Some(p) = &launch.prelude {
        // `$0` of the prelude; the step's argv follows as "$@".
        v.extend(["bash".to_string(), "-c".into(), p.clone(), "twinflow-step".into()]);
    }
    v.extend(job.argv.iter().cloned());
    v
}

/// A job name: the task name with characters SLURM tools print badly replaced
/// (`member[3]` → `member-3`).
pub fn job_name(task: &str) -> String {
    let mut out: String = task
        .chars()
        .filter(|c| *c != ']')
        .map(|c| if c.is_ascii_alphanumeric() || "-_.".contains(c) { c } else { '-' })
        .collect();
    out.truncate(100);
    if out.is_empty() { "twinflow".into() } else { out }
}

/// `--mem` value in MiB, rounded up; per node, so the job's memory is split over its nodes.
pub fn slurm_mem_mb(bytes: u64, nodes: u32) -> u64 {
    let per_node = bytes.div_ceil(u64::from(nodes.max(1)));
    per_node.div_ceil(1 << 20).max(1)
}
