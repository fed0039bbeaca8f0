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
use tokio::process::{Child, Command};

/// Opens (creating) a file a child writes its output to, in append mode: every write goes to
/// the current end of the file, so when a long-running step's log is rotated by truncating
/// it (copy, then truncate), the child goes on at the new end instead of at its old offset,
/// which would leave a sparse file as large as before.
fn output_file(path: &Path) -> std::io::Result<File> {
    std::fs::OpenOptions::new().create(true).append(true).open(path)
}

/// Starts `argv` in a new process group with stdout/stderr to files and `env` added.
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
        .process_group(0)
        .kill_on_drop(false);
    cmd.spawn()
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

/// SIGTERM to the group and every descendant of its leader, wait up to `grace` for `child`
/// and those descendants to exit, then SIGKILL the group and whatever descendant is left.
/// `stop` reaching [`KILL`] ends the grace period at once.
pub async fn terminate(
    child: &mut Child,
    pgid: u32,
    grace: Duration,
    mut stop: tokio::sync::watch::Receiver<StopLevel>,
) -> std::io::Result<std::process::ExitStatus> {
    let deadline = tokio::time::Instant::now() + grace;
    // Taken before the signal: once the leader is gone its orphans are no longer its
    // descendants.
    let mut tree = descendants(pgid);
    signal_group(pgid, Signal::SIGTERM);
    signal_each(&tree, Signal::SIGTERM);
    let waited = tokio::select! {
        w = tokio::time::timeout_at(deadline, child.wait()) => w.ok(),
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
        None => child.wait().await,
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
