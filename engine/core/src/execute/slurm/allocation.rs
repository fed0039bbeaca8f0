//! Allocation mode (`twinflow run --backend slurm --allocation`): one SLURM allocation for
//! the whole run, every task launched inside it as a job step with `srun --exact`.
//!
//! Many small steps and multi-rank MPI steps are packed into the allocation by the engine's
//! own scheduler (the allocation's CPUs are the capacity it fills), the way HyperQueue or
//! Parsl pack work, without a server of their own: the engine runs where `srun` works (a
//! login node, or inside the batch job) and each step is an `srun` child process of the
//! engine, so timeouts, cancellation (SIGTERM to `srun`, which forwards it to the step's
//! tasks) and resume behave exactly as with the local backend ([`super::super::local`]).
//!
//! Where the allocation comes from:
//! - inside an allocation (`SLURM_JOB_ID` is set: `salloc`, or `twinflow run` inside an
//!   `sbatch` script), that one is used;
//! - otherwise twinflow submits a *holder* job (`sleep` as its batch step, sized by
//!   `--alloc-nodes`/`--alloc-cpus`/`--alloc-time` and the profile's partition, account,
//!   QOS), waits until it runs, launches the steps into it with `srun --jobid=ID`, and
//!   cancels it when the run ends.
//!
//! Steps ask for their memory explicitly: `srun` otherwise asks for all of the allocation's
//! memory per step, and steps then run one at a time.
//!
//! Steps get the profile's site environment as batch jobs do: with `modules`, `setup` or
//! `env` in the profile, each step runs as `srun ... bash -c PRELUDE twinflow-step ARGV...`
//! ([`super::script::srun_prelude`]), which loads the modules, runs the set-up lines,
//! exports the variables and `exec`s the step.
//!
//! The holder job's id is kept with the run (`run --resume` asks SLURM whether it still
//! runs: if so, the resumed run goes on in it; if not, it gets a new one), and
//! `twinflow cancel` cancels it.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::commands::SlurmCommands;
use super::script::{self, sbatch_path, shell_quote};
use super::status::{self, Phase};
use crate::execute::launch::SrunLaunch;
use crate::execute::profile::Profile;
use crate::ids::JobId;

/// Size of the holder job twinflow submits when it is not inside an allocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllocationRequest {
    /// `--nodes`.
    pub nodes: u32,
    /// `--ntasks` (with `--cpus-per-task=1`): the CPUs the run's steps share.
    pub cpus: u32,
    /// `--time`.
    pub time: Option<Duration>,
}

/// An allocation the run's steps go into.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allocation {
    /// Job id.
    pub job_id: String,
    /// CPUs allocated (the scheduler's capacity).
    pub cpus: u32,
    /// Memory per CPU in MiB, when known.
    pub mem_per_cpu_mb: Option<u64>,
    /// Whether twinflow submitted it (and so cancels it at the end).
    pub owned: bool,
    /// Its nodes (`NumNodes=` of `scontrol show job`), when known.
    pub nodes: Option<u32>,
}

impl Allocation {
    /// The launcher for the local backend.
    pub fn launcher(&self, profile: &Profile) -> SrunLaunch {
        SrunLaunch {
            job_id: self.job_id.clone(),
            mpi: profile.mpi.clone(),
            flags: profile.srun_flags.clone(),
            mem_per_cpu_mb: self.mem_per_cpu_mb,
            prelude: script::srun_prelude(profile),
        }
    }
}

/// Errors while getting an allocation.
#[derive(Debug, thiserror::Error)]
pub enum AllocationError {
    /// A SLURM command failed.
    #[error("{0}")]
    Command(#[from] super::commands::CommandError),
    /// The holder job ended or was rejected.
    #[error("{0}")]
    Failed(String),
    /// I/O.
    #[error("cannot write `{path}`: {source}")]
    Io {
        /// File.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// The heartbeat file of allocation `job_id`, in the directory of the holder's script and
/// log: the engine touches it while it uses the allocation (see [`render_holder`]).
pub fn heartbeat_path(log_dir: &Path, job_id: &str) -> PathBuf {
    log_dir.join(format!("allocation-{job_id}.alive"))
}

/// How often the engine touches the heartbeat, and the holder looks at it.
pub fn heartbeat_interval(profile: &Profile) -> Duration {
    (profile.allocation_idle / 4).clamp(Duration::from_secs(1), Duration::from_secs(60))
}

/// The holder job's script: resources and placement, then a batch step that waits while
/// the engine is alive: it ends the job (and every step in it) once the heartbeat file
/// ([`heartbeat_path`], in `log_dir`) is older than `allocation_idle`, counting from the
/// job's start while the file does not exist yet. So an engine killed with -9 that is
/// neither resumed nor cancelled does not hold the nodes until the time limit, while a
/// `run --resume` within that time finds its allocation still there.
///
/// `--no-kill`: a node of the allocation that fails (SLURM sets it DOWN) leaves the job,
/// instead of ending the job with every step on the other nodes: the engine retries the
/// failed node's tasks on the others.
pub fn render_holder(req: &AllocationRequest, profile: &Profile, log_dir: &Path) -> String {
    let log = log_dir.join("allocation-%j.log");
    let mut s = String::from("#!/bin/bash\n# twinflow allocation: steps run inside it with `srun --jobid --exact`\n");
    let mut opts = vec![
        "--job-name=twinflow-allocation".to_string(),
        format!("--output={}", sbatch_path(&log)),
        format!("--nodes={}", req.nodes.max(1)),
        format!("--ntasks={}", req.cpus.max(1)),
        "--cpus-per-task=1".into(),
        "--no-kill".into(),
    ];
    if let Some(t) = req.time.or(profile.default_walltime) {
        opts.push(format!("--time={}", script::slurm_time(t)));
    }
    if let Some(p) = &profile.partition {
        opts.push(format!("--partition={p}"));
    }
    if let Some(a) = &profile.account {
        opts.push(format!("--account={a}"));
    }
    if let Some(q) = &profile.qos {
        opts.push(format!("--qos={q}"));
    }
    opts.extend(profile.sbatch_flags.iter().cloned());
    for o in opts {
        let _ = writeln!(s, "#SBATCH {o}");
    }
    let idle = profile.allocation_idle.as_secs().max(1);
    let every = heartbeat_interval(profile).as_secs().max(1);
    let hb = format!("{}/allocation-\"$SLURM_JOB_ID\".alive", shell_quote(&log_dir.display().to_string()));
    let _ = writeln!(s, "hb={hb}");
    s.push_str("start=$(date +%s)\n");
    let _ = writeln!(s, "while sleep {every}; do");
    s.push_str("  last=$(stat -c %Y \"$hb\" 2>/dev/null || echo 0)\n");
    s.push_str("  [ \"$last\" -gt \"$start\" ] || last=$start\n");
    let _ = writeln!(s, "  if [ $(( $(date +%s) - last )) -gt {idle} ]; then");
    let _ = writeln!(
        s,
        "    echo \"twinflow allocation: no heartbeat from the engine for {idle} s; ending the allocation\""
    );
    s.push_str("    exit 0\n  fi\ndone\n");
    s
}

/// Reads the allocation's CPUs and memory per CPU from `scontrol show job` (`NumCPUs=`,
/// `mem=` in `TRES=`).
pub fn parse_size(text: &str) -> Option<(u32, Option<u64>)> {
    let mut cpus = None;
    let mut mem = None;
    for w in text.split_whitespace() {
        if let Some(v) = w.strip_prefix("NumCPUs=") {
            cpus = v.parse::<u32>().ok();
        }
        if let Some(tres) = w.strip_prefix("TRES=").or_else(|| w.strip_prefix("AllocTRES=")) {
            for kv in tres.split(',') {
                if let Some(m) = kv.strip_prefix("mem=") {
                    mem = parse_mem_mb(m);
                }
            }
        }
    }
    let cpus = cpus.filter(|c| *c > 0)?;
    Some((cpus, mem.map(|m| (m / u64::from(cpus)).max(1))))
}

/// The allocation's nodes from `scontrol show job` (`NumNodes=4`; a pending job's range
/// `NumNodes=2-4` is not an answer).
pub fn parse_nodes(text: &str) -> Option<u32> {
    text.split_whitespace().find_map(|w| w.strip_prefix("NumNodes=")).and_then(|n| n.parse().ok()).filter(|n| *n > 0)
}

/// `21693M`, `2G`, `1T` → MiB.
fn parse_mem_mb(s: &str) -> Option<u64> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit() && c != '.')?);
    let n: f64 = num.parse().ok()?;
    let mb = match unit {
        "K" => n / 1024.0,
        "M" => n,
        "G" => n * 1024.0,
        "T" => n * 1024.0 * 1024.0,
        _ => return None,
    };
    Some(mb as u64)
}

/// Uses the allocation this process runs in (`SLURM_JOB_ID`), else the holder job of an
/// earlier engine of this run (`previous`, on `run --resume`) if it is still queued or
/// running, else submits a holder job; then waits until it runs. `on_wait` is called with
/// the job's state and reason while it waits; when `interrupt` completes first, the holder
/// job is cancelled and the wait given up.
pub async fn acquire(
    cmd: &SlurmCommands,
    profile: &Profile,
    req: &AllocationRequest,
    log_dir: &Path,
    previous: Option<&str>,
    on_wait: impl FnMut(&str, &str),
    interrupt: impl std::future::Future<Output = ()>,
) -> Result<Allocation, AllocationError> {
    if let Ok(id) = std::env::var("SLURM_JOB_ID")
        && !id.is_empty()
    {
        let text = cmd.scontrol_show_job_text(0, &JobId(id.clone())).await?;
        let (cpus, mem) = parse_size(&text).ok_or_else(|| {
            AllocationError::Failed(format!("cannot read the size of allocation {id} from `scontrol show job {id}`"))
        })?;
        tracing::info!(job = %id, cpus, "running inside allocation {id}");
        return Ok(Allocation { job_id: id, cpus, mem_per_cpu_mb: mem, owned: false, nodes: parse_nodes(&text) });
    }
    if let Some(prev) = previous.filter(|p| !p.is_empty()) {
        let prev = JobId(prev.to_string());
        let rows = cmd.squeue(0, std::slice::from_ref(&prev)).await?;
        match rows.iter().find(|r| r.id == prev) {
            Some(r) if r.state.phase() != Phase::Ended => {
                tracing::info!(job = %prev, state = %r.state, "the run's allocation {prev} is still {}: going on in it", r.state);
                return wait_running(cmd, profile, prev, req, on_wait, interrupt).await;
            }
            _ => {
                // Ended, or unknown to the controller: cancel it anyway in case it is only
                // hidden from us (a controller restart), so it cannot linger.
                let _ = cmd.scancel(0, std::slice::from_ref(&prev)).await;
                tracing::info!(job = %prev, "the run's allocation {prev} has ended; asking for a new one");
            }
        }
    }
    std::fs::create_dir_all(log_dir).map_err(|source| AllocationError::Io { path: log_dir.into(), source })?;
    let script_path = log_dir.join("allocation.sbatch");
    // The holder reads its heartbeat from wherever the batch script runs: an absolute path.
    let text = render_holder(req, profile, &crate::spec::span::absolute(log_dir));
    std::fs::write(&script_path, text).map_err(|source| AllocationError::Io { path: script_path.clone(), source })?;
    let id = cmd.sbatch(0, &script_path).await?;
    tracing::info!(job = %id, "submitted the allocation; waiting for it to start");
    wait_running(cmd, profile, id, req, on_wait, interrupt).await
}

/// Waits until the holder job `id` runs and reads its size.
async fn wait_running(
    cmd: &SlurmCommands,
    profile: &Profile,
    id: JobId,
    req: &AllocationRequest,
    mut on_wait: impl FnMut(&str, &str),
    interrupt: impl std::future::Future<Output = ()>,
) -> Result<Allocation, AllocationError> {
    let mut delay = profile.poll_min;
    let started = Instant::now();
    let mut interrupt = std::pin::pin!(interrupt);
    loop {
        let rows = cmd.squeue(0, std::slice::from_ref(&id)).await?;
        match rows.iter().find(|r| r.id == id) {
            Some(r) if r.state.phase() == Phase::Running => break,
            Some(r) if r.state.phase() == Phase::Queued && status::hopeless_reason(&r.reason) => {
                let _ = cmd.scancel(0, std::slice::from_ref(&id)).await;
                return Err(AllocationError::Failed(format!(
                    "allocation {id} cannot start: pending for `{}` (cancelled it); ask for fewer CPUs or nodes (`--alloc-cpus`, `--alloc-nodes`)",
                    r.reason
                )));
            }
            Some(r) if r.state.phase() == Phase::Queued => on_wait(r.state.as_str(), &r.reason),
            Some(r) => return Err(AllocationError::Failed(format!("allocation {id} ended ({}) before use", r.state))),
            None if started.elapsed() > Duration::from_secs(5) => {
                return Err(AllocationError::Failed(format!("allocation {id} left the queue before it ran")));
            }
            None => {}
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = &mut interrupt => {
                let _ = cmd.scancel(0, std::slice::from_ref(&id)).await;
                return Err(AllocationError::Failed(format!("interrupted while waiting for allocation {id} (cancelled it)")));
            }
        }
        delay = (delay.mul_f64(1.5)).min(profile.poll_max);
    }
    let text = cmd.scontrol_show_job_text(0, &id).await?;
    let (cpus, mem) = parse_size(&text).unwrap_or((req.cpus.max(1), None));
    tracing::info!(job = %id, cpus, "allocation {id} is running");
    Ok(Allocation { job_id: id.0, cpus, mem_per_cpu_mb: mem, owned: true, nodes: parse_nodes(&text) })
}

/// Whether SLURM ended the allocation at its time limit (`scontrol show job` says
/// `JobState=TIMEOUT`, or `JobState=COMPLETING Reason=TimeLimit` while its processes are
/// still being killed): then the message that tells the user, else `None` (also when the
/// controller does not answer or no longer knows the job).
pub async fn time_limit_reached(cmd: &SlurmCommands, alloc: &Allocation) -> Option<String> {
    let text = cmd.scontrol_show_job_text(0, &JobId(alloc.job_id.clone())).await.ok()?;
    time_limit_message(&alloc.job_id, alloc.owned, &text)
}

/// The message of [`time_limit_reached`] from `scontrol show job` of the allocation.
pub fn time_limit_message(job_id: &str, owned: bool, text: &str) -> Option<String> {
    let field = |name: &str| text.split_whitespace().find_map(|w| w.strip_prefix(name)).map(str::to_string);
    let timed_out = match field("JobState=").as_deref() {
        Some("TIMEOUT") => true,
        Some("COMPLETING") => field("Reason=").as_deref() == Some("TimeLimit"),
        _ => false,
    };
    if !timed_out {
        return None;
    }
    let limit = field("TimeLimit=").map_or(String::new(), |t| format!(" (TimeLimit={t})"));
    let more = if owned { "; ask for more time with `--alloc-time`" } else { "" };
    Some(format!(
        "SLURM ended allocation {job_id} at its time limit{limit} while tasks ran: they failed with it. `twinflow run --resume` goes on in a new allocation, running only what did not finish{more}"
    ))
}

/// Cancels the holder job (if twinflow submitted it).
pub async fn release(cmd: &SlurmCommands, alloc: &Allocation) -> Result<(), AllocationError> {
    if alloc.owned {
        cmd.scancel(0, &[JobId(alloc.job_id.clone())]).await?;
        tracing::info!(job = %alloc.job_id, "released the allocation");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::execute::JobRequest;
    use crate::execute::launch::srun_argv;
    use crate::model::Resources;

    fn job(ranks: u32, threads: u32, memory: u64) -> JobRequest {
        JobRequest {
            name: "sim[2]".into(),
            argv: vec!["twin-kernel".into(), "flood".into(), "--out".into(), "a b.nc".into()],
            env: vec![],
            cwd: "/r".into(),
            stdout: "/r/o".into(),
            stderr: "/r/e".into(),
            resources: Resources { ranks, threads, memory, ..Resources::default() },
            timeout: None,
            array: None,
        }
    }

    #[test]
    fn steps_are_launched_with_srun_exact_and_explicit_memory() {
        let l = SrunLaunch {
            job_id: "42".into(),
            mpi: Some("pmi2".into()),
            flags: vec![],
            mem_per_cpu_mb: Some(2711),
            prelude: None,
        };
        assert_eq!(
            srun_argv(&l, &job(2, 1, 0)).join(" "),
            "srun --jobid=42 --exact --job-name=sim-2 --nodes=1 --ntasks=2 --cpus-per-task=1 --mem-per-cpu=2711M --mpi=pmi2 twin-kernel flood --out a b.nc"
        );
        let one = srun_argv(&l, &job(1, 2, 3 << 30));
        assert!(one.contains(&"--mem=3072M".to_string()) && !one.iter().any(|w| w.starts_with("--mpi")), "{one:?}");
    }

    /// With modules, set-up lines or environment in the profile, the step runs through a
    /// bash prelude that sets them up and then `exec`s the step's argv unchanged.
    #[test]
    fn steps_get_the_profiles_site_setup_through_a_prelude() {
        let p = Profile {
            modules: vec!["gcc/12".into()],
            setup: vec!["export FROM_SETUP=1".into()],
            env: vec![("SITE".into(), "it's".into())],
            ..Profile::default()
        };
        let alloc = Allocation { job_id: "42".into(), cpus: 4, mem_per_cpu_mb: None, owned: true, nodes: None };
        let v = srun_argv(&alloc.launcher(&p), &job(1, 1, 0));
        let at = v.iter().position(|w| w == "bash").unwrap();
        assert_eq!(v[at + 1], "-c");
        assert_eq!(
            v[at + 2],
            "set -e\n# site set-up (profile)\nmodule load gcc/12\nexport FROM_SETUP=1\n# environment\nexport SITE='it'\\''s'\n# the step\nexec \"$@\"\n"
        );
        assert_eq!(v[at + 3..], ["twinflow-step", "twin-kernel", "flood", "--out", "a b.nc"]);
        // Run by bash, the prelude gives back the argv word for word.
        let mut words = v[at..].to_vec();
        words[2] = words[2]
            .replace("module load gcc/12\n", "")
            .replace("exec \"$@\"", "printf '%s|' \"$FROM_SETUP$SITE\" \"$@\"");
        let out = std::process::Command::new(&words[0]).args(&words[1..]).output().unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "1it's|twin-kernel|flood|--out|a b.nc|");
        // Without any of them, the argv follows srun's options directly.
        let plain = srun_argv(&alloc.launcher(&Profile::default()), &job(1, 1, 0));
        assert!(!plain.contains(&"bash".to_string()) && plain.last().unwrap() == "a b.nc", "{plain:?}");
    }

    #[test]
    fn allocation_size_from_scontrol() {
        let text = "JobId=7 JobName=hold\n   NumNodes=1 NumCPUs=8 NumTasks=8 CPUs/Task=1\n   TRES=cpu=8,mem=21693M,node=1,billing=8\n";
        assert_eq!(parse_size(text), Some((8, Some(2711))));
        assert_eq!(parse_size("JobId=7 NumCPUs=4 TRES=cpu=4,mem=8G,node=1"), Some((4, Some(2048))));
        assert_eq!(parse_size("JobId=7"), None);
        assert_eq!(parse_nodes(text), Some(1));
        assert_eq!(parse_nodes("JobId=7 NumNodes=4 NumCPUs=8"), Some(4));
        assert_eq!(parse_nodes("JobId=7 NumNodes=2-4"), None);
    }

    #[test]
    fn an_allocation_ended_by_its_time_limit_is_named_so() {
        let text = "JobId=7 JobName=twinflow-allocation\n   JobState=TIMEOUT Reason=TimeLimit Dependency=(null)\n   RunTime=00:01:04 TimeLimit=00:01:00 TimeMin=N/A\n";
        let m = time_limit_message("7", true, text).unwrap();
        assert!(
            m.starts_with("SLURM ended allocation 7 at its time limit (TimeLimit=00:01:00) while tasks ran"),
            "{m}"
        );
        assert!(m.contains("`twinflow run --resume`") && m.contains("--alloc-time"), "{m}");
        // An allocation the run was started in (salloc, a batch script): no `--alloc-time`.
        assert!(!time_limit_message("7", false, text).unwrap().contains("--alloc-time"));
        // Just after the limit, while SLURM still kills its processes.
        let completing = text.replace("JobState=TIMEOUT", "JobState=COMPLETING");
        assert_eq!(time_limit_message("7", true, &completing), Some(m));
        for other in [
            "JobState=RUNNING TimeLimit=00:01:00",
            "JobState=CANCELLED Reason=None",
            "JobState=COMPLETING Reason=None",
            "",
        ] {
            assert_eq!(time_limit_message("7", true, other), None, "{other}");
        }
    }

    #[test]
    fn holder_script() {
        let req = AllocationRequest { nodes: 1, cpus: 8, time: Some(Duration::from_secs(3600)) };
        let p = Profile { partition: Some("debug".into()), ..Profile::default() };
        let p = Profile { allocation_idle: Duration::from_secs(120), ..p };
        let s = render_holder(&req, &p, Path::new("/runs/my allocations"));
        for l in [
            "#SBATCH --output=\"/runs/my allocations/allocation-%j.log\"",
            "#SBATCH --ntasks=8",
            "#SBATCH --no-kill",
            "#SBATCH --time=0-01:00:00",
            "#SBATCH --partition=debug",
            "hb='/runs/my allocations'/allocation-\"$SLURM_JOB_ID\".alive",
            "while sleep 30; do",
            "-gt 120 ]; then",
        ] {
            assert!(s.contains(l), "{l} missing:\n{s}");
        }
    }
}
