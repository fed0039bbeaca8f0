//! Running the SLURM client commands (`sbatch`, `squeue`, `sacct`, `scontrol`, `scancel`)
//! as child processes with argv vectors (never a shell string), each under a time limit.
//!
//! Every invocation can be appended to a call log (`TWINFLOW_SLURM_CALL_LOG`), one line
//! per call: `UNIX_MS tick=N exit=CODE PROGRAM ARGS...`, where `tick` is the number of the
//! backend's poll that made it (0 before the first). Tests read it to check that status
//! queries stay O(1) per poll and that no job is submitted twice.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

use super::status::{FinalRow, QueueRow, parse_sacct, parse_scontrol, parse_squeue};
use crate::ids::JobId;

/// Environment variable naming the call log file.
pub const CALL_LOG_ENV: &str = "TWINFLOW_SLURM_CALL_LOG";

/// A SLURM command that did not do its job.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The program could not be started (not installed, not on `PATH`).
    #[error("`{program}` could not be started: {source}\nhint: are the SLURM client tools installed and on PATH?")]
    Spawn {
        /// Program.
        program: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// No answer within the time limit (the child was killed).
    #[error("`{program}` did not finish within {seconds}s (is slurmctld answering?)")]
    TimedOut {
        /// Program.
        program: String,
        /// The limit.
        seconds: u64,
    },
    /// It exited with an error.
    #[error("`{program}` failed (exit {code}): {stderr}")]
    Failed {
        /// Program.
        program: String,
        /// Exit code (-1: killed by a signal).
        code: i32,
        /// Its standard error, trimmed.
        stderr: String,
    },
    /// It printed something we cannot read.
    #[error("`{program}` printed unexpected output: {output}")]
    Unexpected {
        /// Program.
        program: String,
        /// The output.
        output: String,
    },
}

impl CommandError {
    /// Whether `sbatch` rejected the job itself (bad partition, account, resources, option),
    /// as opposed to a transient failure (controller busy or unreachable) worth a retry.
    pub fn is_rejection(&self) -> bool {
        let CommandError::Failed { stderr, .. } = self else { return false };
        let e = stderr.to_ascii_lowercase();
        [
            "invalid",
            "not available",
            "unrecognized option",
            "can not be satisfied",
            "cannot be satisfied",
            "more processors requested than permitted",
            "no partition specified",
            "requested node configuration",
            "unable to open file",
        ]
        .iter()
        .any(|m| e.contains(m))
    }

    /// Whether the failure is one of this machine's set-up that no retry can mend: the
    /// SLURM client finds no configuration (`Could not establish a configuration source`,
    /// no `slurm.conf`), or the program cannot be started at all. Such an error stops the
    /// run at once instead of being retried for the whole backoff (7 tries over 12 s).
    pub fn is_environment(&self) -> bool {
        match self {
            CommandError::Spawn { source, .. } => {
                matches!(source.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied)
            }
            CommandError::Failed { stderr, .. } => {
                let e = stderr.to_ascii_lowercase();
                [
                    "could not establish a configuration source",
                    "unable to establish a configuration source",
                    "can't find slurm.conf",
                    "unable to process configuration file",
                    "no such file or directory: slurm.conf",
                ]
                .iter()
                .any(|m| e.contains(m))
            }
            _ => false,
        }
    }
}

/// Runs SLURM client commands and logs each call.
#[derive(Debug, Clone)]
pub struct SlurmCommands {
    call_log: Option<PathBuf>,
    timeout: Duration,
}

impl SlurmCommands {
    /// Commands with a per-call time limit, logging to `call_log` when given.
    pub fn new(call_log: Option<PathBuf>, timeout: Duration) -> Self {
        Self { call_log, timeout }
    }

    fn log(&self, tick: u64, exit: &str, program: &str, args: &[String]) {
        let Some(p) = &self.call_log else { return };
        let ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis());
        let line = format!("{ms} tick={tick} exit={exit} {program} {}\n", args.join(" "));
        // One write of one short line with O_APPEND: lines of concurrent engines do not mix.
        match std::fs::OpenOptions::new().create(true).append(true).open(p) {
            Ok(mut f) => {
                let _ = f.write_all(line.as_bytes());
            }
            Err(e) => tracing::warn!("cannot append to the SLURM call log `{}`: {e}", p.display()),
        }
    }

    /// Runs `program args` and returns its standard output.
    async fn run(&self, tick: u64, program: &str, args: Vec<String>) -> Result<String, CommandError> {
        let mut cmd = Command::new(program);
        cmd.args(&args)
            // Times as seconds since the epoch: no time zone to guess (see status.rs).
            .env("SLURM_TIME_FORMAT", "%s")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // A command that times out is dropped, and with it killed.
            .kill_on_drop(true);
        let out = match tokio::time::timeout(self.timeout, cmd.output()).await {
            Err(_) => {
                self.log(tick, "timeout", program, &args);
                return Err(CommandError::TimedOut { program: program.into(), seconds: self.timeout.as_secs() });
            }
            Ok(Err(source)) => {
                self.log(tick, "spawn-error", program, &args);
                return Err(CommandError::Spawn { program: program.into(), source });
            }
            Ok(Ok(o)) => o,
        };
        let code = out.status.code().unwrap_or(-1);
        self.log(tick, &code.to_string(), program, &args);
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
            let stderr =
                if stderr.is_empty() { String::from_utf8_lossy(&out.stdout).trim().to_string() } else { stderr };
            return Err(CommandError::Failed { program: program.into(), code, stderr });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `sbatch --parsable SCRIPT`: the new job's id (`ID` or `ID;CLUSTER`).
    pub async fn sbatch(&self, tick: u64, script: &Path) -> Result<JobId, CommandError> {
        let out = self.run(tick, "sbatch", vec!["--parsable".into(), script.display().to_string()]).await?;
        parse_sbatch(&out).ok_or(CommandError::Unexpected { program: "sbatch".into(), output: out.trim().into() })
    }

    /// `squeue` for these jobs: one call. Jobs the controller no longer knows are simply
    /// absent.
    pub async fn squeue(&self, tick: u64, ids: &[JobId]) -> Result<Vec<QueueRow>, CommandError> {
        // `--array`: one line per array element (`12_3`), pending ones included, instead of
        // one line for all pending elements (`12_[4-9%2]`).
        let args =
            vec!["--noheader".into(), "--array".into(), format!("--jobs={}", join(ids)), "--format=%i|%T|%r".into()];
        match self.run(tick, "squeue", args).await {
            Ok(out) => Ok(parse_squeue(&out)),
            // When no listed job is known any more (all purged after MinJobAge), squeue
            // fails instead of printing nothing.
            Err(CommandError::Failed { stderr, .. }) if unknown_job(&stderr) => Ok(vec![]),
            Err(e) => Err(e),
        }
    }

    /// `sacct` (`-c`: the job completion log instead of slurmdbd) for these jobs: one call.
    pub async fn sacct(&self, tick: u64, ids: &[JobId], jobcomp: bool) -> Result<Vec<FinalRow>, CommandError> {
        let mut args: Vec<String> = vec![];
        if jobcomp {
            args.push("-c".into());
        }
        args.extend([
            "--noheader".into(),
            "--parsable2".into(),
            "-X".into(),
            format!("--jobs={}", join(ids)),
            "--format=JobID,State,ExitCode,Start,End".into(),
        ]);
        Ok(parse_sacct(&self.run(tick, "sacct", args).await?))
    }

    /// `scontrol show job ID`; `None` when the controller does not know the job.
    pub async fn scontrol_show_job(&self, tick: u64, id: &JobId) -> Result<Option<FinalRow>, CommandError> {
        match self.run(tick, "scontrol", vec!["show".into(), "job".into(), id.0.clone()]).await {
            Ok(out) => Ok(parse_scontrol(&out)),
            Err(CommandError::Failed { stderr, .. }) if unknown_job(&stderr) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `scontrol show job ID` as printed.
    pub async fn scontrol_show_job_text(&self, tick: u64, id: &JobId) -> Result<String, CommandError> {
        self.run(tick, "scontrol", vec!["show".into(), "job".into(), id.0.clone()]).await
    }

    /// `scontrol show job ARRAY_ID`: the states of all elements of one job array, in one call
    /// (ids `ARRAY_TASK`); empty when the controller no longer knows the array.
    pub async fn scontrol_show_array(&self, tick: u64, array: &str) -> Result<Vec<FinalRow>, CommandError> {
        match self.run(tick, "scontrol", vec!["show".into(), "job".into(), array.to_string()]).await {
            Ok(out) => Ok(super::status::parse_scontrol_array(&out)),
            Err(CommandError::Failed { stderr, .. }) if stderr.contains("Invalid job id specified") => Ok(vec![]),
            Err(e) => Err(e),
        }
    }

    /// The job (array) of this user's queue whose `--comment` is `tag`, if any: one `squeue`
    /// call, made only after an `sbatch` whose outcome is unknown.
    pub async fn find_by_comment(&self, tick: u64, tag: &str) -> Result<Option<JobId>, CommandError> {
        Ok(self.comments(tick).await?.into_iter().find_map(|(id, c)| (c == tag).then_some(id)))
    }

    /// Every job (array) the controller still knows for this user, finished ones included
    /// (`--states=all`: for `MinJobAge` seconds after they end), with its `--comment`: one
    /// `squeue` call. Array elements are given as their array's id.
    pub async fn comments(&self, tick: u64) -> Result<Vec<(JobId, String)>, CommandError> {
        let args = vec!["--noheader".into(), "--me".into(), "--states=all".into(), "--format=%i|%k".into()];
        let out = self.run(tick, "squeue", args).await?;
        Ok(out
            .lines()
            .filter_map(|l| {
                let (id, comment) = l.trim().split_once('|')?;
                let id = id.split('_').next().unwrap_or(id).trim();
                (!id.is_empty()).then(|| (JobId(id.to_string()), comment.trim().to_string()))
            })
            .collect())
    }

    /// The most CPUs of one node (`sinfo --format=%c`), in `partition` if given.
    pub async fn cpus_per_node(&self, tick: u64, partition: Option<&str>) -> Result<Option<u32>, CommandError> {
        let mut args = vec!["--noheader".to_string(), "--format=%c".into()];
        if let Some(p) = partition {
            args.push(format!("--partition={p}"));
        }
        let out = self.run(tick, "sinfo", args).await?;
        Ok(out.lines().filter_map(|l| l.trim().trim_end_matches('+').parse::<u32>().ok()).max())
    }

    /// `scontrol show config` as `Key = Value` pairs.
    pub async fn show_config(&self, tick: u64) -> Result<Vec<(String, String)>, CommandError> {
        let out = self.run(tick, "scontrol", vec!["show".into(), "config".into()]).await?;
        Ok(out
            .lines()
            .filter_map(|l| l.split_once('=').map(|(k, v)| (k.trim().to_string(), v.trim().to_string())))
            .collect())
    }

    /// `scancel ID...`: one call. Jobs that already ended are not an error.
    pub async fn scancel(&self, tick: u64, ids: &[JobId]) -> Result<(), CommandError> {
        match self.run(tick, "scancel", ids.iter().map(|i| i.0.clone()).collect()).await {
            Ok(_) => Ok(()),
            Err(CommandError::Failed { stderr, .. })
                if stderr.lines().all(|l| l.contains("Invalid job id") || l.contains("already completed")) =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }
}

fn join(ids: &[JobId]) -> String {
    ids.iter().map(|i| i.0.as_str()).collect::<Vec<_>>().join(",")
}

/// Reads `sbatch --parsable` output: `ID` or `ID;CLUSTER` on the first non-empty line.
pub fn parse_sbatch(out: &str) -> Option<JobId> {
    let line = out.lines().map(str::trim).find(|l| !l.is_empty())?;
    let id = line.split(';').next()?.trim();
    (!id.is_empty() && id.chars().all(|c| c.is_ascii_digit())).then(|| JobId(id.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sbatch_ids() {
        assert_eq!(parse_sbatch("123\n"), Some(JobId("123".into())));
        assert_eq!(parse_sbatch("4567;cluster2\n"), Some(JobId("4567".into())));
        assert_eq!(parse_sbatch("Submitted batch job 12"), None);
        assert_eq!(parse_sbatch(""), None);
    }

    #[test]
    fn rejections_are_not_retried() {
        let f = |s: &str| CommandError::Failed { program: "sbatch".into(), code: 1, stderr: s.into() };
        assert!(f("sbatch: error: Batch job submission failed: Invalid partition name specified").is_rejection());
        assert!(
            f("sbatch: error: Batch job submission failed: Requested node configuration is not available")
                .is_rejection()
        );
        assert!(
            !f("sbatch: error: Batch job submission failed: Socket timed out on send/recv operation").is_rejection()
        );
        assert!(!f("sbatch: error: Unable to contact slurm controller (connect failure)").is_rejection());
    }

    #[test]
    fn a_client_without_configuration_is_an_environment_error_not_a_transient_one() {
        let f = |s: &str| CommandError::Failed { program: "sbatch".into(), code: 1, stderr: s.into() };
        let no_conf = f("sbatch: error: resolve_ctls_from_dns_srv: res_nsearch error: Unknown host
                         sbatch: error: fetch_config: DNS SRV lookup failed
                         sbatch: error: _establish_config_source: failed to fetch config
                         sbatch: fatal: Could not establish a configuration source");
        assert!(no_conf.is_environment());
        assert!(!no_conf.is_rejection());
        assert!(!f("sbatch: error: Unable to contact slurm controller (connect failure)").is_environment());
        assert!(
            !f("sbatch: error: Batch job submission failed: Socket timed out on send/recv operation").is_environment()
        );
        assert!(!f("sbatch: error: Batch job submission failed: Invalid partition name specified").is_environment());
        let missing = CommandError::Spawn {
            program: "sbatch".into(),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        };
        assert!(missing.is_environment());
        let timed_out = CommandError::TimedOut { program: "sbatch".into(), seconds: 60 };
        assert!(!timed_out.is_environment());
    }
}

/// Whether `scontrol show job`'s error says the controller does not know the job: `Invalid
/// job id specified` for a job, `Job 313_3 not found` for an element of an array whose
/// pending elements were cancelled before they ever ran (slurm 22.05).
fn unknown_job(stderr: &str) -> bool {
    stderr.contains("Invalid job id specified") || (stderr.contains("Job ") && stderr.contains(" not found"))
}

#[cfg(test)]
mod unknown_job_tests {
    #[test]
    fn the_controllers_ways_of_saying_it_does_not_know_a_job() {
        assert!(super::unknown_job("slurm_load_jobs error: Invalid job id specified"));
        assert!(super::unknown_job("Job 313_3 not found"));
        assert!(!super::unknown_job("slurm_load_jobs error: Unable to contact slurm controller (connect failure)"));
    }
}
