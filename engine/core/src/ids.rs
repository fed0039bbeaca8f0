//! Identifiers, as newtypes so they cannot be mixed up.

use std::fmt;

/// Identifier of one run: `YYYYMMDD-HHMMSS-xxxx` (UTC time and 4 hex digits).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RunId(pub String);

impl RunId {
    /// A new id from the current time and a random suffix.
    pub fn generate() -> Self {
        Self::at(jiff::Timestamp::now())
    }

    /// The id of a run started at `now`: its UTC time, then 4 hex digits mixed from the
    /// sub-second part and the process id (two runs started in one second differ).
    fn at(now: jiff::Timestamp) -> Self {
        let suffix = (now.subsec_nanosecond().unsigned_abs() ^ std::process::id().wrapping_mul(2654435761)) & 0xffff;
        RunId(format!("{}-{suffix:04x}", now.strftime("%Y%m%d-%H%M%S")))
    }
}

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Identifier of a job in a backend (a local process id, a SLURM job id).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JobId(pub String);

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Identifies an engine process: its pid and its start time, so that a later process that
/// reuses the pid is not taken for the engine (the run database records both).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct EngineId {
    /// Process id.
    pub pid: u32,
    /// Start time in clock ticks since boot ([`process_start_ticks`]).
    pub start: u64,
}

impl EngineId {
    /// This process (`None` without `/proc`).
    pub fn current() -> Option<Self> {
        static CURRENT: std::sync::OnceLock<Option<EngineId>> = std::sync::OnceLock::new();
        *CURRENT.get_or_init(|| {
            let pid = std::process::id();
            process_start_ticks(pid).map(|start| EngineId { pid, start })
        })
    }

    /// Whether this very process still runs (not exited, not a zombie, pid not reused).
    pub fn is_running(&self) -> bool {
        process_alive(self.pid, self.start)
    }
}

/// Whether process `pid`, started at `start` ([`process_start_ticks`]), still runs: not
/// exited, not a zombie, and its pid not reused by a later process.
pub fn process_alive(pid: u32, start: u64) -> bool {
    proc_stat(pid).is_some_and(|(state, s)| s == start && state != 'Z')
}

/// Start time of process `pid` in clock ticks since boot (field 22 of `/proc/PID/stat`), used
/// to tell a process from a later one that reused its pid.
pub fn process_start_ticks(pid: u32) -> Option<u64> {
    proc_stat(pid).map(|(_, start)| start)
}

/// State letter (field 3) and start time (field 22) of `/proc/PID/stat`.
fn proc_stat(pid: u32) -> Option<(char, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    let mut rest = stat.get(stat.rfind(')')? + 2..)?.split_whitespace();
    let state = rest.next()?.chars().next()?;
    Some((state, rest.nth(18)?.parse().ok()?))
}

/// Index of a task (a step, or one scatter member of a step) in a plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TaskIdx(pub u32);

#[cfg(test)]
mod tests {
    use super::RunId;

    #[test]
    fn run_ids_carry_the_utc_time() {
        let t: jiff::Timestamp = "2026-11-22T10:15:00.5Z".parse().unwrap();
        let id = RunId::at(t).0;
        assert!(id.starts_with("20261122-101500-"), "{id}");
        assert_eq!(id.len(), "20261122-101500-xxxx".len());
        assert!(RunId::at(jiff::Timestamp::UNIX_EPOCH).0.starts_with("19700101-000000-"));
    }

    #[test]
    fn this_process_is_identified_by_pid_and_start_time() {
        let me = super::EngineId::current().expect("/proc");
        assert_eq!(me.pid, std::process::id());
        assert!(me.is_running());
        // The same pid with another start time is another process.
        assert!(!super::EngineId { start: me.start + 1, ..me }.is_running());
    }
}
