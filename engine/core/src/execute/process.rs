//! Child processes in their own process group, so that a step's whole tree (an `mpiexec`
//! and its ranks, a shell and its children) can be signalled at once: cancel sends SIGTERM
//! to the group, waits a grace period, then SIGKILLs the group. Killing only the direct
//! child would orphan MPI ranks.
//!
//! The group is not always the whole tree: MPICH's Hydra starts `hydra_pmi_proxy` and every
//! rank with `setsid` (each in a session of its own), and Open MPI's `orted` does the same.
//! Hydra forwards SIGTERM and kills its ranks when `mpiexec` dies, but only if all goes well;
//! so [`terminate`] also signals every descendant of the step's leader, found through
//! `/proc` before they could be orphaned.

use std::fs::File;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus};

use super::Usage;

/// Opens (creating) a file a child writes its output to, in append mode: every write goes to
/// the current end of the file, so when a long-running step's log is rotated by truncating
/// it (copy, then truncate), the child goes on at the new end instead of at its old offset,
/// which would leave a sparse file as large as before.
fn output_file(path: &Path) -> std::io::Result<File> {
    std::fs::OpenOptions::new().create(true).append(true).open(path)
}

/// Starts `argv` in a new process group with stdout/stderr to files and `env` added. Hand
/// the child to [`reap`], which waits for it.
pub fn spawn(
    argv: &[String],
    env: &[(String, String)],
    cwd: &Path,
    stdout: &Path,
    stderr: &Path,
) -> std::io::Result<Child> {
    spawn_clean(argv, env, &[], cwd, stdout, stderr)
}

/// [`spawn`], without the variables named in `remove` in the child's environment.
pub fn spawn_clean(
    argv: &[String],
    env: &[(String, String)],
    remove: &[String],
    cwd: &Path,
    stdout: &Path,
    stderr: &Path,
) -> std::io::Result<Child> {
    let (prog, args) =
        argv.split_first().ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "empty argv"))?;
    let mut cmd = Command::new(prog);
    for k in remove {
        cmd.env_remove(k);
    }
    cmd.args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::from(output_file(stdout)?))
        .stderr(Stdio::from(output_file(stderr)?))
        // pgid = pid: the child leads a new group that we can signal as a whole.
        .process_group(0);
    cmd.spawn()
}

/// How a child process ended and what it used.
#[derive(Debug, Clone, Copy)]
pub struct Exited {
    /// Its exit status.
    pub status: ExitStatus,
    /// CPU time and peak RSS as `wait4(2)` reports them.
    pub usage: Usage,
}

/// Where [`reap`] delivers how a child ended.
pub type Reaping = tokio::sync::oneshot::Receiver<std::io::Result<Exited>>;

/// Waits for child `pid` to end on a thread of its own and reaps it with `wait4(2)`, which
/// gives the child's own resource usage (CPU time, peak RSS) together with that of the
/// descendants it waited for (an `mpiexec`'s ranks, a shell's commands): the per-attempt
/// figures of the run's report. (`getrusage(RUSAGE_CHILDREN)` would mix concurrent
/// attempts, and tokio's `Child::wait` drops the usage.) The thread blocks in the kernel,
/// so it costs no polling; it is small (64 KiB stack) and ends with the child.
pub fn reap(child: Child) -> Reaping {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let pid = child.id();
    let spawned = std::thread::Builder::new().name(format!("reap-{pid}")).stack_size(64 * 1024).spawn(move || {
        let _ = tx.send(wait4(pid));
        // Reaped by `wait4`: the handle has nothing left to wait for.
        drop(child);
    });
    if let Err(e) = spawned {
        // Sender dropped with the closure: the receiver reports an error, which the caller
        // records as a failure to wait.
        tracing::warn!(pid, "cannot start the thread reaping process {pid}: {e}");
    }
    rx
}

/// Blocks until child `pid` ends and reaps it, with its resource usage.
#[allow(unsafe_code)]
fn wait4(pid: u32) -> std::io::Result<Exited> {
    use nix::libc;
    use std::os::unix::process::ExitStatusExt;
    let pid = i32::try_from(pid).map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    let mut status: libc::c_int = 0;
    // SAFETY: `rusage` is a plain struct of integers, for which all zero bytes is a valid
    // value.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: both pointers are to live locals of the right types for the whole call;
        // neither nix nor rustix offers `wait4` with its `rusage`.
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
        if r == pid {
            break;
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    // Linux reports `ru_maxrss` in KiB.
    let rss = u64::try_from(ru.ru_maxrss).ok().filter(|k| *k > 0).map(|k| k * 1024);
    Ok(Exited {
        status: ExitStatus::from_raw(status),
        usage: Usage::from_times(secs(ru.ru_utime), secs(ru.ru_stime), rss),
    })
}

/// Awaits how a child ended (see [`reap`]); a lost reaper thread is an error.
pub async fn wait(r: &mut Reaping) -> std::io::Result<Exited> {
    r.await.unwrap_or_else(|_| Err(std::io::Error::other("the thread waiting for the process ended")))
}

/// Sends `sig` to process group `pgid`, ignoring groups that no longer exist.
pub fn signal_group(pgid: u32, sig: Signal) {
    if pgid == 0 || pgid > i32::MAX as u32 {
        return;
    }
    // ESRCH means the group is gone already: nothing to do.
    let _ = killpg(Pid::from_raw(pgid as i32), sig);
}

/// How far a job's stop has been asked to go (see [`terminate`]).
pub type StopLevel = u8;
/// Running on.
pub const RUN: StopLevel = 0;
/// SIGTERM, the grace period, then SIGKILL.
pub const TERMINATE: StopLevel = 1;
/// SIGKILL now (a second Ctrl-C): cuts the grace period short.
pub const KILL: StopLevel = 2;

/// Resolves once `stop` asks for [`KILL`]; never when its sender is gone.
async fn kill_asked(stop: &mut tokio::sync::watch::Receiver<StopLevel>) {
    if stop.wait_for(|s| *s >= KILL).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Resolves once `stop` asks for [`TERMINATE`] or more, or its sender is gone (the backend
/// was dropped: nobody will follow the job).
pub async fn stop_asked(stop: &mut tokio::sync::watch::Receiver<StopLevel>) {
    let _ = stop.wait_for(|s| *s >= TERMINATE).await;
}

/// The SLURM job and step name of a step launched as `srun --jobid=JOB --job-name=NAME ...`
/// (allocation mode, and the multi-rank steps of pilot workers: see
/// [`super::launch::srun_argv`]); `None` for anything else.
pub fn srun_step(argv: &[String]) -> Option<(String, String)> {
    let program = argv.first()?;
    if Path::new(program).file_name()? != "srun" {
        return None;
    }
    let (mut job, mut name) = (None, None);
    for a in &argv[1..] {
        if let Some(v) = a.strip_prefix("--jobid=") {
            job = Some(v.to_string());
        } else if let Some(v) = a.strip_prefix("--job-name=") {
            name = Some(v.to_string());
        } else if !a.starts_with('-') {
            break; // the step's own argv
        }
    }
    Some((job?, name?))
}

/// Sends SIGTERM to the tasks of the step named `name` of SLURM job `job`
/// (`scancel --signal=TERM JOB.STEP`, the step found with `squeue --steps`); whether it
/// was found and signalled.
async fn signal_step(job: &str, name: &str) -> bool {
    let limit = Duration::from_secs(10);
    let listed = tokio::process::Command::new("squeue")
        .args(["--noheader", "--steps", "--jobs", job, "--format", "%i %j"])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .output();
    let Ok(Ok(out)) = tokio::time::timeout(limit, listed).await else { return false };
    let text = String::from_utf8_lossy(&out.stdout);
    let Some(step) = text.lines().find_map(|l| {
        let (id, n) = l.trim().split_once(' ')?;
        (n.trim() == name && id.starts_with(&format!("{job}."))).then(|| id.to_string())
    }) else {
        return false;
    };
    let sent = tokio::process::Command::new("scancel")
        .args(["--signal=TERM", &step])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .status();
    let ok = matches!(tokio::time::timeout(limit, sent).await, Ok(Ok(s)) if s.success());
    tracing::debug!(%step, ok, "SIGTERM to the tasks of the SLURM step");
    ok
}

/// Stops a job as [`terminate`] does; a SLURM step launched with `srun` (`step`: its job
/// and name, [`srun_step`]) first gets SIGTERM through `scancel --signal=TERM JOB.STEP`, to
/// its tasks on their nodes, since `srun` answers a SIGTERM of its own with a SIGKILL of
/// the step ("forcing job termination"): the tasks get their grace period as local ones do,
/// and `srun` exits when they have. Whatever is left at the end of the grace period (or a
/// step not found) is stopped by [`terminate`] with what remains of it.
pub async fn stop_job(
    child: &mut Reaping,
    pgid: u32,
    grace: Duration,
    mut stop: tokio::sync::watch::Receiver<StopLevel>,
    step: Option<&(String, String)>,
) -> std::io::Result<Exited> {
    let Some((job, name)) = step else { return terminate(child, pgid, grace, stop).await };
    let deadline = tokio::time::Instant::now() + grace;
    if signal_step(job, name).await {
        let waited = tokio::select! {
            w = tokio::time::timeout_at(deadline, wait(child)) => w.ok(),
            () = kill_asked(&mut stop) => None,
        };
        if let Some(status) = waited {
            return status;
        }
    }
    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
    terminate(child, pgid, left, stop).await
}

/// SIGTERM to the group and every descendant of its leader, wait up to `grace` for `child`
/// and those descendants to exit, then SIGKILL the group and whatever descendant is left.
/// `stop` reaching [`KILL`] ends the grace period at once.
pub async fn terminate(
    child: &mut Reaping,
    pgid: u32,
    grace: Duration,
    mut stop: tokio::sync::watch::Receiver<StopLevel>,
) -> std::io::Result<Exited> {
    let deadline = tokio::time::Instant::now() + grace;
    // Taken before the signal: once the leader is gone its orphans are no longer its
    // descendants.
    let mut tree = descendants(pgid);
    signal_group(pgid, Signal::SIGTERM);
    signal_each(&tree, Signal::SIGTERM);
    let waited = tokio::select! {
        w = tokio::time::timeout_at(deadline, wait(child)) => w.ok(),
        () = kill_asked(&mut stop) => None,
    };
    let status = match waited {
        Some(status) => Some(status),
        None => {
            // Still running: whatever it started since is part of the tree too.
            for p in descendants(pgid) {
                if !tree.contains(&p) {
                    tree.push(p);
                }
            }
            None
        }
    };
    // Ranks may still be shutting down (writing a checkpoint) after `mpiexec` exited.
    while tokio::time::Instant::now() < deadline && tree.iter().any(|p| p.alive()) {
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(50)) => {}
            () = kill_asked(&mut stop) => break,
        }
    }
    signal_group(pgid, Signal::SIGKILL);
    signal_each(&tree, Signal::SIGKILL);
    match status {
        Some(s) => s,
        None => wait(child).await,
    }
}

/// A process known by its pid and start time, so a later process that reuses the pid is
/// never signalled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Proc {
    /// Process id.
    pub pid: u32,
    /// Start time in clock ticks since boot ([`process_start_ticks`]).
    pub start: u64,
}

impl Proc {
    /// Still running (and not a zombie) and still the same process.
    pub fn alive(&self) -> bool {
        crate::ids::process_alive(self.pid, self.start)
    }
}

/// Every live descendant of process `root` (children, their children, ...), from the
/// parent pids in `/proc`.
pub fn descendants(root: u32) -> Vec<Proc> {
    let mut parent_of: Vec<(u32, u32)> = vec![];
    let Ok(dir) = std::fs::read_dir("/proc") else { return vec![] };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        // Field 4 is the parent pid; the command name (field 2) may contain spaces.
        let Some(ppid) = stat.get(stat.rfind(')').unwrap_or(0) + 2..).and_then(|r| r.split_whitespace().nth(1)) else {
            continue;
        };
        if let Ok(ppid) = ppid.parse() {
            parent_of.push((pid, ppid));
        }
    }
    let mut out = vec![];
    let mut frontier = vec![root];
    while let Some(p) = frontier.pop() {
        for &(child, parent) in &parent_of {
            if parent == p && child != root && !out.iter().any(|x: &Proc| x.pid == child) {
                if let Some(start) = process_start_ticks(child) {
                    out.push(Proc { pid: child, start });
                }
                frontier.push(child);
            }
        }
    }
    out
}

/// Sends `sig` to each process that is still the one recorded.
pub fn signal_each(procs: &[Proc], sig: Signal) {
    for p in procs {
        if p.pid > 0 && p.pid <= i32::MAX as u32 && process_start_ticks(p.pid) == Some(p.start) {
            let _ = nix::sys::signal::kill(Pid::from_raw(p.pid as i32), sig);
        }
    }
}

pub use crate::ids::process_start_ticks;

/// Process groups of live processes whose environment has `key=value` (how a resumed run
/// finds the steps a killed engine left behind).
pub fn groups_with_env(key: &str, value: &str) -> Vec<u32> {
    let needle = format!("{key}={value}");
    let mut groups = std::collections::BTreeSet::new();
    let Ok(dir) = std::fs::read_dir("/proc") else { return vec![] };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) else { continue };
        if environ.split(|b| *b == 0).any(|kv| kv == needle.as_bytes())
            && let Ok(pgid) = nix::unistd::getpgid(Some(Pid::from_raw(pid as i32)))
        {
            groups.insert(pgid.as_raw() as u32);
        }
    }
    groups.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn srun_steps_are_recognised_by_their_job_and_name() {
        let argv = |s: &str| s.split(' ').map(String::from).collect::<Vec<_>>();
        assert_eq!(
            srun_step(&argv("/usr/bin/srun --jobid=12 --exact --job-name=sim-3 --nodes=1 --ntasks=2 app --job-name=x")),
            Some(("12".into(), "sim-3".into()))
        );
        // The step's own arguments are not srun's.
        assert_eq!(srun_step(&argv("srun --jobid=12 app --job-name=x")), None);
        assert_eq!(srun_step(&argv("mpiexec --jobid=12 --job-name=x app")), None);
        assert_eq!(srun_step(&[]), None);
    }

    fn run(script: &str) -> Exited {
        let tmp = tempfile::tempdir().unwrap();
        let argv: Vec<String> = ["sh", "-c", script].iter().map(|s| s.to_string()).collect();
        let (o, e) = (tmp.path().join("o"), tmp.path().join("e"));
        let mut r = reap(spawn(&argv, &[], tmp.path(), &o, &e).unwrap());
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(wait(&mut r)).unwrap()
    }

    #[test]
    fn reaping_a_child_gives_its_exit_status_and_what_it_used() {
        // A busy loop in the shell: CPU time of its own, counted for this child only.
        let busy = run("i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done; exit 7");
        assert_eq!(busy.status.code(), Some(7));
        let u = busy.usage;
        let (user, sys, cpu) = (u.user_seconds.unwrap(), u.system_seconds.unwrap(), u.cpu_seconds.unwrap());
        assert!(cpu > 0.05, "{u:?}");
        assert!((cpu - (user + sys)).abs() < 1e-9, "{u:?}");
        assert!(u.max_rss_bytes.unwrap() > 1 << 20, "{u:?}");
        // A command the shell waits for is counted in the shell's usage.
        let child = run("sh -c 'i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done'");
        assert!(child.usage.cpu_seconds.unwrap() > 0.05, "{:?}", child.usage);
        // An idle child used next to nothing, whatever the busy ones before it used.
        let idle = run("exit 0");
        assert!(idle.usage.cpu_seconds.unwrap() < cpu / 2.0, "{:?} vs {u:?}", idle.usage);
        // A signal is reported as such.
        let killed = run("kill -9 $$");
        assert_eq!(std::os::unix::process::ExitStatusExt::signal(&killed.status), Some(9));
    }
}
