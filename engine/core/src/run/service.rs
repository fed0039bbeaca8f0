//! Services in the driver (their life is decided by the core: see the module documentation
//! of [`super::scheduler`]).
//!
//! A service's attempts run in `attempt-N/` like any task's, but its outputs live in the
//! task's `out/` directory from the start and across its attempts (`out.*` and
//! `TWINFLOW_OUT_*` point there): dependants read a service while it runs, and a restarted
//! service goes on where the one before it stopped. A service is never renamed to `out/`,
//! cached or published.
//!
//! Each loop turn, for every service still starting, the driver checks its readiness probe
//! when due (`ready.poll`): a `stat` of the ready file, or the ready command, run in the
//! background (never blocking the loop) in the attempt directory with the service's
//! environment. Ready also needs every declared output (value files are read then). An
//! attempt not ready within `ready.timeout` is stopped and fails (and is retried as any
//! failure).
//!
//! About once a second ([`LOG_CHECK_EVERY`]) it rotates each service's `stdout` and
//! `stderr` that grew beyond `log_max` ([`rotate`]): a copy to `stdout.1` (older copies
//! shifted up to `log_keep`), then the file truncated. The process writes in append mode
//! (see [`crate::execute::process`]), so it goes on at the start of the truncated file
//! rather than at its old offset, which would leave a sparse file as large as before. What
//! it writes between the copy and the truncation is lost, as with logrotate's
//! `copytruncate`; a file may exceed `log_max` by what the service writes in a second.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::RunError;
use super::attempt::{self, attempt_dir, meta_dir};
use super::driver::{Attempt, Driver};
use super::job::{ReadyProbe, ResolvedTask};
use super::scheduler::{Scheduler, ServicePhase, TaskId};
use super::scope::TaskResult;
use crate::execute::Outcome;
use crate::expr::Value;
use crate::ids::JobId;
use crate::model::Service;

/// How often the logs of a service are checked for rotation.
pub const LOG_CHECK_EVERY: Duration = Duration::from_secs(1);

/// A ready command still running after this long (or the poll interval, if longer) is
/// killed and counts as not ready.
const PROBE_LIMIT: Duration = Duration::from_secs(10);

/// A service the driver follows: its current attempt, readiness and logs.
pub(crate) struct Supervised {
    /// The current attempt.
    pub attempt: u32,
    /// Its directory.
    adir: PathBuf,
    /// Where its outputs are (the task's `out/`).
    out_dir: PathBuf,
    probe: Option<ReadyProbe>,
    /// The service's environment (the ready command runs with it).
    env: Vec<(String, String)>,
    poll: Duration,
    timeout: Option<Duration>,
    next_check: Instant,
    deadline: Option<Instant>,
    /// A ready command in flight: its verdict.
    check: Option<oneshot::Receiver<bool>>,
    /// Why the driver stopped this attempt before it was ready (it then failed).
    kill_reason: Option<String>,
    /// Restarts after it was ready (in this engine).
    pub restarts: u32,
    log_max: u64,
    log_keep: u32,
    next_log_check: Instant,
}

impl Supervised {
    /// Supervision of attempt `attempt` of a service, starting now.
    pub fn new(svc: &Service, attempt: u32, adir: &Path, out_dir: &Path, exec: &ResolvedTask) -> Self {
        let now = Instant::now();
        Supervised {
            attempt,
            adir: adir.to_path_buf(),
            out_dir: out_dir.to_path_buf(),
            probe: exec.ready.clone(),
            env: exec.env.clone(),
            poll: svc.poll,
            timeout: svc.ready_timeout,
            next_check: now,
            deadline: svc.ready_timeout.map(|t| now + t),
            check: None,
            kill_reason: None,
            restarts: 0,
            log_max: svc.log_max,
            log_keep: svc.log_keep,
            next_log_check: now + LOG_CHECK_EVERY,
        }
    }

    /// Follows the next attempt (`next`) instead, keeping the count of restarts.
    pub fn next_attempt(&mut self, next: Supervised) {
        let restarts = self.restarts;
        *self = Supervised { restarts, ..next };
    }

    /// The attempt's `stdout` and `stderr`.
    fn logs(&self) -> [PathBuf; 2] {
        let meta = meta_dir(&self.adir);
        [meta.join("stdout"), meta.join("stderr")]
    }

    /// Whether the probe says ready now. A ready command runs in the background: its verdict
    /// is taken in a later turn, and it runs again a poll interval after it said no.
    fn probe(&mut self, now: Instant) -> bool {
        let argv = match &self.probe {
            None => return now >= self.next_check,
            Some(ReadyProbe::File(p)) => {
                if now < self.next_check {
                    return false;
                }
                self.next_check = now + self.poll;
                return p.exists();
            }
            Some(ReadyProbe::Command(argv)) => argv.clone(),
        };
        if let Some(rx) = &mut self.check {
            return match rx.try_recv() {
                Ok(ok) => {
                    self.check = None;
                    ok
                }
                Err(oneshot::error::TryRecvError::Empty) => false,
                Err(oneshot::error::TryRecvError::Closed) => {
                    self.check = None;
                    false
                }
            };
        }
        if now >= self.next_check {
            self.next_check = now + self.poll;
            let (tx, rx) = oneshot::channel();
            let (cwd, env, limit) = (self.adir.clone(), self.env.clone(), self.poll.max(PROBE_LIMIT));
            tokio::spawn(async move {
                let _ = tx.send(probe_command(&argv, &cwd, &env, limit).await);
            });
            self.check = Some(rx);
        }
        false
    }
}

/// Runs a ready command once: whether it exits 0 within `limit` (it is killed after).
async fn probe_command(argv: &[String], cwd: &Path, env: &[(String, String)], limit: Duration) -> bool {
    let Some((prog, args)) = argv.split_first() else { return false };
    let child = tokio::process::Command::new(prog)
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .current_dir(cwd)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(command = %prog, "ready command cannot start: {e}");
            return false;
        }
    };
    matches!(tokio::time::timeout(limit, child.wait()).await, Ok(Ok(st)) if st.success())
}

/// Rotates the log `path` when it is larger than `max` bytes: `path.K` → `path.K+1` (the
/// oldest, `path.KEEP`, dropped), a copy of `path` to `path.1`, then `path` truncated. With
/// `keep` 0 it is only truncated. Returns whether it rotated.
pub fn rotate(path: &Path, max: u64, keep: u32) -> std::io::Result<bool> {
    let len = match std::fs::metadata(path) {
        Ok(m) => m.len(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    if len <= max {
        return Ok(false);
    }
    let numbered = |k: u32| {
        let mut p = path.as_os_str().to_owned();
        p.push(format!(".{k}"));
        PathBuf::from(p)
    };
    if keep > 0 {
        for k in (1..keep).rev() {
            match std::fs::rename(numbered(k), numbered(k + 1)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        std::fs::copy(path, numbered(1))?;
    }
    std::fs::OpenOptions::new().write(true).open(path)?.set_len(0)?;
    Ok(true)
}

impl Driver<'_> {
    /// One look at the services: logs to rotate, then the readiness of those still starting
    /// (not while cancelling).
    pub async fn poll_services(&mut self, s: &mut Scheduler<'_>) -> Result<(), RunError> {
        if self.services.is_empty() {
            return Ok(());
        }
        let now = Instant::now();
        for v in self.services.values_mut() {
            if now >= v.next_log_check {
                v.next_log_check = now + LOG_CHECK_EVERY;
                for p in v.logs() {
                    match rotate(&p, v.log_max, v.log_keep) {
                        Ok(true) => tracing::debug!(file = %p.display(), "rotated"),
                        Ok(false) => {}
                        Err(e) => tracing::warn!(file = %p.display(), "cannot rotate a service's log: {e}"),
                    }
                }
            }
        }
        if s.is_cancelling() {
            return Ok(());
        }
        let mut starting: Vec<TaskId> =
            self.services.keys().filter(|t| s.service_phase(**t) == Some(ServicePhase::Starting)).copied().collect();
        starting.sort();
        let mut stop = vec![];
        for t in starting {
            let step = &self.plan.workflow.steps[self.plan.graph[t.node].step as usize];
            let Some(v) = self.services.get_mut(&t) else { continue };
            if v.kill_reason.is_some() {
                continue;
            }
            if v.deadline.is_some_and(|d| now >= d) {
                let after = crate::units::format_duration(v.timeout.unwrap_or_default());
                v.kill_reason = Some(format!("not ready within {after} (`service.ready.timeout`)"));
                stop.push(t);
                continue;
            }
            if !v.probe(now) {
                continue;
            }
            match attempt::service_outputs(&v.out_dir, step) {
                // Ready also means its declared outputs are there: look again next poll.
                Err(None) => v.next_check = now + v.poll,
                Err(Some(why)) => {
                    v.kill_reason = Some(why);
                    stop.push(t);
                }
                Ok(values) => self.service_is_ready(s, t, values)?,
            }
        }
        if !stop.is_empty() {
            let ids = self.jobs_of(&stop);
            self.backend.cancel(&ids).await?;
        }
        Ok(())
    }

    /// When the next readiness check of a starting service is due.
    pub fn next_service_check(&self, s: &Scheduler<'_>) -> Option<Instant> {
        self.services
            .iter()
            .filter(|(t, v)| s.service_phase(**t) == Some(ServicePhase::Starting) && v.kill_reason.is_none())
            .flat_map(|(_, v)| [Some(v.next_check), v.deadline])
            .flatten()
            .min()
    }

    /// A starting service is ready: its result is the task's `out/` (noted in the run
    /// database, whose row stays `running`), and the core releases its dependants.
    fn service_is_ready(
        &mut self,
        s: &mut Scheduler<'_>,
        t: TaskId,
        values: indexmap::IndexMap<String, Value>,
    ) -> Result<(), RunError> {
        let Some(v) = self.services.get(&t) else { return Ok(()) };
        let (out, attempt) = (v.out_dir.clone(), v.attempt);
        let name = self.name(t);
        let values_s = attempt::values_json(&values);
        let dir_s = out.display().to_string();
        self.store.service_note(
            &self.run_id,
            &name,
            Some(&dir_s),
            Some(&values_s),
            &format!("ready (attempt {attempt})"),
        )?;
        self.data_mut(t.cycle).results[t.node.index()] = Some(Box::new(TaskResult { dir: out, values }));
        s.service_ready(t);
        self.record(s.take_effects())
    }

    /// The job of a service's attempt ended. Before it was ready, that is a failed attempt
    /// (whatever its exit status: a service does not end by itself), or a cancelled one;
    /// after, the core decides between a stop it asked for, a restart and a final failure,
    /// after which, without `--keep-going`, the tasks still running are stopped: they may be
    /// waiting for the service.
    pub(super) async fn service_ended(
        &mut self,
        s: &mut Scheduler<'_>,
        a: Attempt,
        outcome: Outcome,
    ) -> Result<(), RunError> {
        let t = a.task;
        let name = self.name(t);
        attempt::write_status(&a.dir, &outcome);
        if s.service_phase(t) == Some(ServicePhase::Starting) {
            let reason = self.services.get_mut(&t).and_then(|v| v.kill_reason.take());
            let detail = match &reason {
                Some(r) => r.clone(),
                None if outcome.is_cancelled() => outcome.describe(),
                None => format!("ended before it was ready: {}", outcome.describe()),
            };
            self.store.attempt_finished(&self.run_id, &name, a.attempt, false, outcome.exit_code(), &detail)?;
            self.record_usage(&name, a.attempt, &outcome)?;
            if reason.is_none() && outcome.is_cancelled() {
                s.attempt_cancelled(t);
            } else {
                let msg = if s.retries_left(t) { detail } else { self.final_message(t, &a.dir, &outcome, detail) };
                s.attempt_failed(t, msg);
            }
            return Ok(());
        }
        let stopped = s.is_cancelling() || s.service_stop_asked(t);
        let detail = if stopped { "stopped".to_string() } else { outcome.describe() };
        self.store.attempt_finished(&self.run_id, &name, a.attempt, stopped, outcome.exit_code(), &detail)?;
        self.record_usage(&name, a.attempt, &outcome)?;
        let msg = if stopped || s.retries_left(t) {
            detail
        } else {
            let count = self.plan.workflow.steps[self.plan.graph[t.node].step as usize].retry.count;
            let msg =
                format!("attempt {} ended ({detail}) and no restart is left (`retry.count` is {count})", a.attempt);
            self.final_message(t, &a.dir, &outcome, msg)
        };
        if s.service_died(t, msg) {
            let others: Vec<JobId> =
                self.running.iter().filter(|(_, x)| !s.is_service(x.task)).map(|(id, _)| id.clone()).collect();
            if !others.is_empty() {
                tracing::info!(tasks = others.len(), "a service failed for good: stopping the tasks still running");
                self.backend.cancel(&others).await?;
            }
        }
        Ok(())
    }

    /// A service whose restart is due starts again: a new attempt, resolved as its first
    /// was (its cycle may have retired: its results are kept).
    pub(super) async fn relaunch(&mut self, s: &mut Scheduler<'_>, t: TaskId) -> Result<(), RunError> {
        let attempt = s.relaunch(t);
        let tdir = self.task_dir(t);
        let adir = attempt_dir(&tdir, attempt);
        let out_dir = tdir.join("out");
        match self.resolve_attempt(t, attempt, &adir, &out_dir)? {
            Ok((exec, comps)) => self.enqueue(t, attempt, adir, &out_dir, exec, comps),
            Err(e) => {
                if s.service_died(t, e) {
                    let others: Vec<JobId> =
                        self.running.iter().filter(|(_, x)| !s.is_service(x.task)).map(|(id, _)| id.clone()).collect();
                    self.backend.cancel(&others).await?;
                }
                Ok(())
            }
        }
    }

    /// Stops the services once nothing else is left to do ([`Scheduler::work_done`]):
    /// SIGTERM, the grace period, SIGKILL, through the backend; each end is then reported
    /// like any job's.
    pub async fn stop_services(&mut self, s: &mut Scheduler<'_>) -> Result<(), RunError> {
        let tasks = s.stop_services();
        self.record(s.take_effects())?;
        let ids = self.jobs_of(&tasks);
        if !ids.is_empty() {
            tracing::info!(services = ids.len(), "stopping the services");
            self.backend.cancel(&ids).await?;
        }
        Ok(())
    }

    /// The jobs in flight of these tasks.
    fn jobs_of(&self, tasks: &[TaskId]) -> Vec<JobId> {
        self.running.iter().filter(|(_, a)| tasks.contains(&a.task)).map(|(id, _)| id.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(p: &Path, n: usize) {
        std::fs::write(p, vec![b'x'; n]).unwrap();
    }

    fn len(p: &Path) -> Option<u64> {
        std::fs::metadata(p).ok().map(|m| m.len())
    }

    #[test]
    fn rotation_shifts_the_copies_and_keeps_at_most_log_keep() {
        let tmp = tempfile::tempdir().unwrap();
        let log = tmp.path().join("stdout");
        write(&log, 10);
        assert!(!rotate(&log, 10, 2).unwrap(), "not larger than the limit");
        assert!(!rotate(&tmp.path().join("none"), 10, 2).unwrap(), "no file yet");
        for (round, size) in [(1, 11), (2, 12), (3, 13)] {
            write(&log, size);
            assert!(rotate(&log, 10, 2).unwrap(), "round {round}");
            assert_eq!(len(&log), Some(0));
        }
        // The newest copy is `.1`, the one before `.2`; the first is gone.
        assert_eq!((len(&tmp.path().join("stdout.1")), len(&tmp.path().join("stdout.2"))), (Some(13), Some(12)));
        assert_eq!(len(&tmp.path().join("stdout.3")), None);
        // `log_keep: 0` truncates without copies.
        let other = tmp.path().join("stderr");
        write(&other, 50);
        assert!(rotate(&other, 10, 0).unwrap());
        assert_eq!((len(&other), len(&tmp.path().join("stderr.1"))), (Some(0), None));
    }

    #[test]
    fn a_writer_in_append_mode_goes_on_at_the_start_of_the_truncated_file() {
        use std::io::Write;
        let tmp = tempfile::tempdir().unwrap();
        let log = tmp.path().join("stdout");
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&log).unwrap();
        f.write_all(&[b'a'; 4096]).unwrap();
        assert!(rotate(&log, 1024, 1).unwrap());
        f.write_all(b"after\n").unwrap();
        // Not a 4 KiB file with a hole before `after`.
        assert_eq!(std::fs::read(&log).unwrap(), b"after\n");
        assert_eq!(len(&tmp.path().join("stdout.1")), Some(4096));
    }
}
