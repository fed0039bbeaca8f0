//! How an attempt's job ended: [`Outcome`], an [`Ending`] (exited, signalled, timed out,
//! cancelled, could not start, failed in the batch system) with its start and end times.
//! Backends produce it; the scheduler reads it through [`Outcome::success`],
//! [`Outcome::describe`] and the accessors `status.json` is written from.

use std::time::{Duration, SystemTime};

use super::batch::SlurmState;

/// How a process ended: its exit code, or the signal that killed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Exited with this code.
    Code(i32),
    /// Killed by this signal.
    Signal(i32),
}

impl Exit {
    /// From a local process's status (`None` when it has neither code nor signal).
    pub fn from_std(st: std::process::ExitStatus) -> Option<Self> {
        use std::os::unix::process::ExitStatusExt;
        st.code().map(Exit::Code).or_else(|| st.signal().map(Exit::Signal))
    }

    fn code(self) -> Option<i32> {
        match self {
            Exit::Code(c) => Some(c),
            Exit::Signal(_) => None,
        }
    }

    fn signal(self) -> Option<i32> {
        match self {
            Exit::Signal(s) => Some(s),
            Exit::Code(_) => None,
        }
    }
}

/// Why a job could not be started (or followed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpawnFailure {
    /// The program is not on `PATH` (or not where given).
    NotFound {
        /// The program.
        program: String,
    },
    /// Starting the process failed otherwise.
    Io(String),
    /// Waiting for the process failed.
    Wait(String),
    /// The batch system refused the job (`sbatch` rejected it).
    Rejected(String),
    /// The backend lost track of the job.
    Lost,
}

impl std::fmt::Display for SpawnFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SpawnFailure::NotFound { program } => write!(f, "`{program}` not found"),
            SpawnFailure::Io(m) => f.write_str(m),
            SpawnFailure::Wait(m) => write!(f, "waiting for the process failed: {m}"),
            SpawnFailure::Rejected(m) => write!(f, "sbatch rejected the job: {m}"),
            SpawnFailure::Lost => f.write_str("the backend lost track of the job"),
        }
    }
}

/// How a job ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Ending {
    /// It exited with this code (0: success).
    Exited(i32),
    /// A signal killed it.
    Signalled(i32),
    /// It hit its time limit and was stopped; how its process then ended, if known.
    TimedOut(Option<Exit>),
    /// It was cancelled (by twinflow); how its process then ended, if known.
    Cancelled(Option<Exit>),
    /// It could not be started.
    SpawnFailed(SpawnFailure),
    /// The batch system counts the job as failed whatever its exit status (out of memory,
    /// node failure, preemption, cancelled outside twinflow, ...).
    BatchFailure {
        /// The job's final SLURM state.
        state: SlurmState,
        /// Its exit status as SLURM reports it.
        exit: Option<Exit>,
    },
    /// It ended without an exit status.
    NoStatus,
}

impl Ending {
    /// `Exited` or `Signalled` from a process's exit status.
    pub fn from_exit(exit: Option<Exit>) -> Self {
        match exit {
            Some(Exit::Code(c)) => Ending::Exited(c),
            Some(Exit::Signal(s)) => Ending::Signalled(s),
            None => Ending::NoStatus,
        }
    }

    /// The process's exit status, where there was a process.
    fn exit(&self) -> Option<Exit> {
        match self {
            Ending::Exited(c) => Some(Exit::Code(*c)),
            Ending::Signalled(s) => Some(Exit::Signal(*s)),
            Ending::TimedOut(e) | Ending::Cancelled(e) | Ending::BatchFailure { exit: e, .. } => *e,
            Ending::SpawnFailed(_) | Ending::NoStatus => None,
        }
    }
}

/// What an attempt's job used: CPU time and peak memory, as the backend measured them
/// (locally `wait4(2)` when the process is reaped, which counts the descendants it waited
/// for; under SLURM `sacct`'s `TotalCPU`, `UserCPU`, `SystemCPU` and the largest `MaxRSS` of
/// the job's steps). A field the backend could not measure is `None`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Usage {
    /// User CPU time, seconds.
    pub user_seconds: Option<f64>,
    /// System CPU time, seconds.
    pub system_seconds: Option<f64>,
    /// Total CPU time (user + system), seconds.
    pub cpu_seconds: Option<f64>,
    /// Peak resident set size, bytes.
    pub max_rss_bytes: Option<u64>,
}

impl Usage {
    /// User and system time, their sum, and the peak RSS.
    pub fn from_times(user: f64, system: f64, max_rss_bytes: Option<u64>) -> Self {
        Usage {
            user_seconds: Some(user),
            system_seconds: Some(system),
            cpu_seconds: Some(user + system),
            max_rss_bytes,
        }
    }
}

/// How an attempt's job ended, and when it ran.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// How it ended.
    pub ending: Ending,
    /// When it started.
    pub started: Option<SystemTime>,
    /// When it ended.
    pub finished: Option<SystemTime>,
    /// What it used, when the backend measured it.
    pub usage: Option<Usage>,
    /// What the backend knows of the failure besides its ending (pilot workers: which
    /// node was lost, and how), added to [`Outcome::describe`].
    pub detail: Option<String>,
}

impl Outcome {
    /// An outcome without times.
    pub fn new(ending: Ending) -> Self {
        Self { ending, started: None, finished: None, usage: None, detail: None }
    }
    /// An outcome with its start and end.
    pub fn between(ending: Ending, started: Option<SystemTime>, finished: Option<SystemTime>) -> Self {
        Self { ending, started, finished, usage: None, detail: None }
    }
    /// The same outcome with a detail for messages.
    pub fn with_detail(mut self, detail: String) -> Self {
        self.detail = Some(detail);
        self
    }
    /// The same outcome with what the job used.
    pub fn with_usage(mut self, usage: Option<Usage>) -> Self {
        self.usage = usage;
        self
    }
    /// Exit 0 and nothing else wrong.
    pub fn success(&self) -> bool {
        self.ending == Ending::Exited(0)
    }
    /// Cancelled by twinflow (not: by someone else, which is a failure).
    pub fn is_cancelled(&self) -> bool {
        matches!(self.ending, Ending::Cancelled(_))
    }
    /// Hit its time limit.
    pub fn timed_out(&self) -> bool {
        matches!(self.ending, Ending::TimedOut(_))
    }
    /// Exit code, when its process exited.
    pub fn exit_code(&self) -> Option<i32> {
        self.ending.exit().and_then(Exit::code)
    }
    /// The signal that killed its process, if one did.
    pub fn signal(&self) -> Option<i32> {
        self.ending.exit().and_then(Exit::signal)
    }
    /// Why it could not be started, as a message.
    pub fn spawn_error(&self) -> Option<String> {
        match &self.ending {
            Ending::SpawnFailed(e) => Some(e.to_string()),
            _ => None,
        }
    }
    /// Why the batch system counts it as failed, as a message.
    pub fn failure(&self) -> Option<String> {
        match &self.ending {
            Ending::BatchFailure { state, .. } => Some(state.failure_reason()),
            _ => None,
        }
    }
    /// One-line description for messages.
    pub fn describe(&self) -> String {
        match &self.detail {
            Some(d) => format!("{}: {d}", self.describe_ending()),
            None => self.describe_ending(),
        }
    }

    fn describe_ending(&self) -> String {
        match &self.ending {
            Ending::SpawnFailed(e) => format!("could not start: {e}"),
            Ending::TimedOut(_) => "timed out".into(),
            Ending::Cancelled(_) => "cancelled".into(),
            Ending::BatchFailure { state, exit } => {
                let f = state.failure_reason();
                match exit {
                    Some(Exit::Code(c)) if *c != 0 => format!("{f} (exit code {c})"),
                    Some(Exit::Signal(s)) => format!("{f} (signal {s})"),
                    _ => f,
                }
            }
            Ending::Exited(c) => match exit_code_signal(*c) {
                Some(sig) => format!("exit code {c}: 128 + {sig}, a process killed by {}", signal_name(sig)),
                None => format!("exit code {c}"),
            },
            Ending::Signalled(s) => format!("killed by signal {s}: {}", signal_name(*s)),
            Ending::NoStatus => "ended without status".into(),
        }
    }
    /// Run time.
    pub fn duration(&self) -> Duration {
        match (self.started, self.finished) {
            (Some(a), Some(b)) => b.duration_since(a).unwrap_or_default(),
            _ => Duration::ZERO,
        }
    }
}

/// The signal an exit code stands for by the shells' convention (128 + N: a shell, an
/// `mpiexec` or a wrapper script reports a child killed by signal N so), when N is a signal.
pub fn exit_code_signal(code: i32) -> Option<i32> {
    let sig = code.checked_sub(128).filter(|s| (1..=64).contains(s))?;
    nix::sys::signal::Signal::try_from(sig).ok().map(|_| sig)
}

/// `SIGSEGV (segmentation fault)`: a signal's name and, for the signals that end programs
/// by accident, what it usually means; `signal N` for a number that is no signal here.
pub fn signal_name(sig: i32) -> String {
    use nix::sys::signal::Signal as S;
    let Ok(s) = S::try_from(sig) else { return format!("signal {sig}") };
    let meaning = match s {
        S::SIGSEGV => "segmentation fault",
        S::SIGBUS => "bus error",
        S::SIGABRT => "aborted",
        S::SIGFPE => "floating-point exception",
        S::SIGILL => "illegal instruction",
        S::SIGKILL => "the out-of-memory killer or `kill -9`",
        S::SIGTERM => "terminated",
        S::SIGINT => "interrupted",
        S::SIGHUP => "hangup",
        S::SIGPIPE => "broken pipe",
        S::SIGXCPU => "CPU time limit exceeded",
        S::SIGXFSZ => "file size limit exceeded",
        _ => return s.as_str().to_string(),
    };
    format!("{} ({meaning})", s.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The messages are those of the flag-based outcome this type replaced.
    #[test]
    fn outcomes_describe_themselves_as_before() {
        let d = |e: Ending| Outcome::new(e).describe();
        assert_eq!(d(Ending::Exited(3)), "exit code 3");
        assert_eq!(d(Ending::Signalled(9)), "killed by signal 9: SIGKILL (the out-of-memory killer or `kill -9`)");
        assert_eq!(d(Ending::Signalled(11)), "killed by signal 11: SIGSEGV (segmentation fault)");
        assert_eq!(d(Ending::Signalled(10)), "killed by signal 10: SIGUSR1");
        // 128 + N is how a shell or a launcher reports a child killed by signal N.
        assert_eq!(d(Ending::Exited(139)), "exit code 139: 128 + 11, a process killed by SIGSEGV (segmentation fault)");
        assert_eq!(d(Ending::Exited(134)), "exit code 134: 128 + 6, a process killed by SIGABRT (aborted)");
        assert_eq!(d(Ending::Exited(128)), "exit code 128");
        assert_eq!(d(Ending::Exited(255)), "exit code 255");
        assert_eq!(d(Ending::TimedOut(Some(Exit::Signal(15)))), "timed out");
        assert_eq!(d(Ending::Cancelled(None)), "cancelled");
        assert_eq!(d(Ending::NoStatus), "ended without status");
        let nf = Ending::SpawnFailed(SpawnFailure::NotFound { program: "nope".into() });
        assert_eq!(d(nf), "could not start: `nope` not found");
        assert_eq!(d(Ending::SpawnFailed(SpawnFailure::Lost)), "could not start: the backend lost track of the job");
        let pre = |exit| Ending::BatchFailure { state: SlurmState::Preempted, exit };
        assert_eq!(d(pre(Some(Exit::Code(0)))), "the job was preempted (SLURM PREEMPTED)");
        assert_eq!(d(pre(Some(Exit::Code(2)))), "the job was preempted (SLURM PREEMPTED) (exit code 2)");
        assert_eq!(d(pre(Some(Exit::Signal(9)))), "the job was preempted (SLURM PREEMPTED) (signal 9)");
    }

    #[test]
    fn only_exit_zero_succeeds_and_the_exit_status_stays_readable() {
        assert!(Outcome::new(Ending::Exited(0)).success());
        for e in [
            Ending::Exited(1),
            Ending::Signalled(9),
            Ending::TimedOut(Some(Exit::Code(0))),
            Ending::Cancelled(Some(Exit::Code(0))),
            Ending::BatchFailure { state: SlurmState::OutOfMemory, exit: Some(Exit::Code(0)) },
            Ending::SpawnFailed(SpawnFailure::Lost),
            Ending::NoStatus,
        ] {
            assert!(!Outcome::new(e.clone()).success(), "{e:?}");
        }
        let t = Outcome::new(Ending::TimedOut(Some(Exit::Signal(15))));
        assert_eq!((t.timed_out(), t.signal(), t.exit_code(), t.is_cancelled()), (true, Some(15), None, false));
        let oom = Outcome::new(Ending::BatchFailure { state: SlurmState::OutOfMemory, exit: Some(Exit::Code(0)) });
        assert_eq!(oom.exit_code(), Some(0));
        assert!(oom.failure().unwrap().contains("out of memory"));
        let t0 = SystemTime::UNIX_EPOCH;
        let o = Outcome::between(Ending::Exited(0), Some(t0), Some(t0 + Duration::from_secs(3)));
        assert_eq!(o.duration(), Duration::from_secs(3));
    }
}
