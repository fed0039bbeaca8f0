//! Child processes in their own process group, so that a step's whole tree (an `mpiexec`
//! and its ranks, a shell and its children) can be signalled at once: cancel sends SIGTERM
//! to the group, waits a grace period, then SIGKILLs the group. Killing only the direct
//! child would orphan MPI ranks.

use std::fs::File;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::process::{Child, Command};

/// Starts `argv` in a new process group with stdout/stderr to files and `env` added.
pub fn spawn(
    argv: &[String],
    env: &[(String, String)],
    cwd: &Path,
    stdout: &Path,
    stderr: &Path,
) -> std::io::Result<Child> {
    let (prog, args) =
        argv.split_first().ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "empty argv"))?;
    let mut cmd = Command::new(prog);
    cmd.args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::from(File::create(stdout)?))
        .stderr(Stdio::from(File::create(stderr)?))
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

/// SIGTERM to the group, wait up to `grace` for `child` to exit, then SIGKILL the group.
pub async fn terminate(child: &mut Child, pgid: u32, grace: Duration) -> std::io::Result<std::process::ExitStatus> {
    signal_group(pgid, Signal::SIGTERM);
    match tokio::time::timeout(grace, child.wait()).await {
        Ok(status) => {
            // The leader exited; make sure nothing it started lingers.
            signal_group(pgid, Signal::SIGKILL);
            status
        }
        Err(_) => {
            signal_group(pgid, Signal::SIGKILL);
            child.wait().await
        }
    }
}

/// Start time of process `pid` in clock ticks since boot (field 22 of `/proc/PID/stat`), used
/// to tell a process from a later one that reused its pid.
pub fn process_start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    rest.split_whitespace().nth(19)?.parse().ok()
}

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

/// Sends SIGTERM to a twinflow engine process (checked by its command line, so a reused pid
/// of another program is left alone). Returns whether a signal was sent.
pub fn terminate_engine(pid: u32) -> bool {
    if pid == 0 || pid == std::process::id() || pid > i32::MAX as u32 {
        return false;
    }
    let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    if !String::from_utf8_lossy(&cmd).contains("twinflow") {
        return false;
    }
    nix::sys::signal::kill(Pid::from_raw(pid as i32), Signal::SIGTERM).is_ok()
}
