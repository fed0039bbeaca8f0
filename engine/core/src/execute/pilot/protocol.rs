//! The pilot protocol: newline-delimited JSON messages over one TCP connection that a
//! worker opens to the engine.
//!
//! Authentication is mutual and the secret never crosses the wire: the engine's first
//! message is a random challenge; the worker answers with BLAKE3 keyed by the secret over
//! that challenge, plus a challenge of its own; the engine checks the answer (in constant
//! time) and proves itself the same way in its `Welcome`, or says `Refused` and closes. A
//! process on the network without the run's secret can neither submit work to a worker nor
//! pose as one. (The connection itself is not encrypted: argv and environment of tasks are
//! readable on the cluster network, as they are in `squeue`/`sacct` for batch jobs.)
//!
//! After the handshake the engine sends `Start`/`Cancel`/`Kill`/`Shutdown`, the worker
//! answers with `Done` when a task ends; both sides send `Ping` at a third of the heartbeat
//! and treat a connection silent for a whole heartbeat as lost.
//!
//! A worker that loses its engine keeps its tasks running and dials again (the address
//! file may name a new engine: `run --resume`) until a heartbeat has passed since it last
//! heard from an engine. Its `Hello` then lists the tasks it runs and those that ended
//! meanwhile, by attempt directory, so the engine that answers can adopt them.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::execute::batch::SlurmState;
use crate::execute::{Ending, Exit, Outcome, SpawnFailure, Usage};

/// Longest line either side accepts (a task's argv and environment fit many times over).
pub const MAX_LINE: usize = 16 << 20;

/// Messages from the engine to a worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ToWorker {
    /// First message: prove you know the secret by keying this.
    Challenge {
        /// Random bytes, hex.
        nonce: String,
    },
    /// The worker is accepted; `proof` answers the worker's challenge.
    Welcome {
        /// BLAKE3 keyed by the secret over the worker's nonce, hex.
        proof: String,
        /// The engine's heartbeat, in milliseconds.
        heartbeat_ms: u64,
    },
    /// The worker is not accepted (the connection is closed after this).
    Refused {
        /// Why.
        reason: String,
    },
    /// Start a task.
    Start(Box<StartTask>),
    /// SIGTERM the task's process group, grace period, SIGKILL.
    Cancel {
        /// The task.
        id: u64,
    },
    /// SIGKILL the task's process group now.
    Kill {
        /// The task.
        id: u64,
    },
    /// Nothing to say; the engine is alive.
    Ping,
    /// The run is over: stop what still runs and exit.
    Shutdown,
}

/// One task for a worker to fork/exec.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StartTask {
    /// The engine's id of the task.
    pub id: u64,
    /// Task name (`sim[3]`), for logs.
    pub name: String,
    /// The complete argv (a launcher included, for multi-rank steps).
    pub argv: Vec<String>,
    /// Environment added to the worker's.
    pub env: Vec<(String, String)>,
    /// The attempt directory.
    pub cwd: PathBuf,
    /// Standard output file.
    pub stdout: PathBuf,
    /// Standard error file.
    pub stderr: PathBuf,
    /// Wall-clock limit, in milliseconds.
    pub timeout_ms: Option<u64>,
    /// What the task takes of its node; the worker reports it back for a task a resumed
    /// engine adopts (that engine never saw the request).
    #[serde(default)]
    pub need: WireNeed,
}

/// What a task takes of its node while it runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireNeed {
    /// Cores.
    pub cores: u32,
    /// Memory, MiB.
    pub memory_mb: u64,
    /// GPUs.
    pub gpus: u32,
}

/// A task a worker runs, reported when it (re)connects, so a resumed engine can adopt it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunningTask {
    /// The id the engine that started it gave it.
    pub id: u64,
    /// Its attempt directory: how the resumed engine knows which attempt of which task it is.
    pub cwd: PathBuf,
    /// What it takes of the node.
    pub need: WireNeed,
    /// When it started, ms since the epoch.
    pub started_ms: Option<u64>,
    /// Its process (and process group) id on the worker's node.
    pub pid: Option<u32>,
}

/// A task that ended while the worker had no engine to tell, reported when it reconnects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FinishedTask {
    /// The id the engine that started it gave it.
    pub id: u64,
    /// Its attempt directory.
    pub cwd: PathBuf,
    /// How it ended.
    pub outcome: WireOutcome,
}

/// Messages from a worker to the engine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ToEngine {
    /// Answer to the challenge, and who the worker is.
    Hello {
        /// BLAKE3 keyed by the secret over the engine's nonce, hex.
        proof: String,
        /// The worker's own challenge to the engine, hex.
        nonce: String,
        /// Node name.
        node: String,
        /// CPUs of the allocation on this node.
        cpus: u32,
        /// Memory of the allocation on this node, MiB, when known.
        #[serde(default)]
        memory_mb: Option<u64>,
        /// GPUs of the allocation on this node.
        #[serde(default)]
        gpus: u32,
        /// The worker's pid.
        pid: u32,
        /// The highest task id the worker was ever given (a resumed engine numbers its own
        /// tasks above it, so no two tasks on a worker share an id).
        #[serde(default)]
        last_id: u64,
        /// Tasks it runs (none on its first connection; after a reconnection, those of the
        /// engine it lost).
        #[serde(default)]
        running: Vec<RunningTask>,
        /// Tasks that ended while it had no engine.
        #[serde(default)]
        finished: Vec<FinishedTask>,
    },
    /// A task ended.
    Done {
        /// The task.
        id: u64,
        /// How.
        outcome: WireOutcome,
    },
    /// Nothing to say; the worker is alive.
    Ping,
}

/// [`Exit`] on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WireExit {
    /// Exit code.
    Code(i32),
    /// Signal.
    Signal(i32),
}

/// [`Ending`] on the wire (what a worker's local processes can end with).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum WireEnding {
    /// Exited with a code.
    Exited {
        /// Code.
        code: i32,
    },
    /// Killed by a signal.
    Signalled {
        /// Signal.
        signal: i32,
    },
    /// Stopped at its time limit.
    TimedOut {
        /// How the process then ended.
        exit: Option<WireExit>,
    },
    /// Cancelled.
    Cancelled {
        /// How the process then ended.
        exit: Option<WireExit>,
    },
    /// The program was not found.
    NotFound {
        /// The program.
        program: String,
    },
    /// It could not be started or waited for.
    SpawnFailed {
        /// Why.
        message: String,
    },
    /// No exit status.
    NoStatus,
}

/// [`Outcome`] on the wire: the ending and the times in milliseconds since the epoch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireOutcome {
    /// How it ended.
    pub ending: WireEnding,
    /// Start, ms since the epoch.
    pub started_ms: Option<u64>,
    /// End, ms since the epoch.
    pub finished_ms: Option<u64>,
    /// What the task's process used, as the worker's `wait4(2)` measured it (absent from
    /// workers that predate it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<WireUsage>,
}

/// [`Usage`] on the wire, CPU times in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireUsage {
    /// User CPU time, µs.
    pub user_us: Option<u64>,
    /// System CPU time, µs.
    pub system_us: Option<u64>,
    /// Peak resident set size, bytes.
    pub max_rss_bytes: Option<u64>,
}

impl From<Usage> for WireUsage {
    fn from(u: Usage) -> Self {
        let us = |s: Option<f64>| s.filter(|s| s.is_finite() && *s >= 0.0).map(|s| (s * 1e6).round() as u64);
        Self { user_us: us(u.user_seconds), system_us: us(u.system_seconds), max_rss_bytes: u.max_rss_bytes }
    }
}

impl From<WireUsage> for Usage {
    fn from(w: WireUsage) -> Self {
        let (user, system) = (w.user_us.map(|u| u as f64 / 1e6), w.system_us.map(|u| u as f64 / 1e6));
        let cpu_seconds = match (user, system) {
            (Some(u), Some(s)) => Some(u + s),
            (u, s) => u.or(s),
        };
        Usage { user_seconds: user, system_seconds: system, cpu_seconds, max_rss_bytes: w.max_rss_bytes }
    }
}

fn to_ms(t: Option<SystemTime>) -> Option<u64> {
    t.and_then(|t| t.duration_since(UNIX_EPOCH).ok()).map(|d| d.as_millis() as u64)
}

fn from_ms(ms: Option<u64>) -> Option<SystemTime> {
    ms.map(|m| UNIX_EPOCH + Duration::from_millis(m))
}

impl From<Exit> for WireExit {
    fn from(e: Exit) -> Self {
        match e {
            Exit::Code(c) => WireExit::Code(c),
            Exit::Signal(s) => WireExit::Signal(s),
        }
    }
}

impl From<WireExit> for Exit {
    fn from(e: WireExit) -> Self {
        match e {
            WireExit::Code(c) => Exit::Code(c),
            WireExit::Signal(s) => Exit::Signal(s),
        }
    }
}

impl From<&Outcome> for WireOutcome {
    fn from(o: &Outcome) -> Self {
        let ending = match &o.ending {
            Ending::Exited(code) => WireEnding::Exited { code: *code },
            Ending::Signalled(signal) => WireEnding::Signalled { signal: *signal },
            Ending::TimedOut(e) => WireEnding::TimedOut { exit: e.map(Into::into) },
            Ending::Cancelled(e) => WireEnding::Cancelled { exit: e.map(Into::into) },
            Ending::SpawnFailed(SpawnFailure::NotFound { program }) => {
                WireEnding::NotFound { program: program.clone() }
            }
            Ending::SpawnFailed(f) => WireEnding::SpawnFailed { message: f.to_string() },
            // A worker's local processes end in none of the batch system's ways.
            Ending::BatchFailure { state, .. } => WireEnding::SpawnFailed { message: state.as_str().to_string() },
            Ending::NoStatus => WireEnding::NoStatus,
        };
        WireOutcome {
            ending,
            started_ms: to_ms(o.started),
            finished_ms: to_ms(o.finished),
            usage: o.usage.map(Into::into),
        }
    }
}

impl From<WireOutcome> for Outcome {
    fn from(w: WireOutcome) -> Self {
        let ending = match w.ending {
            WireEnding::Exited { code } => Ending::Exited(code),
            WireEnding::Signalled { signal } => Ending::Signalled(signal),
            WireEnding::TimedOut { exit } => Ending::TimedOut(exit.map(Into::into)),
            WireEnding::Cancelled { exit } => Ending::Cancelled(exit.map(Into::into)),
            WireEnding::NotFound { program } => Ending::SpawnFailed(SpawnFailure::NotFound { program }),
            WireEnding::SpawnFailed { message } => Ending::SpawnFailed(SpawnFailure::Io(message)),
            WireEnding::NoStatus => Ending::NoStatus,
        };
        let mut outcome = Outcome::between(ending, from_ms(w.started_ms), from_ms(w.finished_ms));
        outcome.usage = w.usage.map(Into::into);
        outcome
    }
}

/// The outcome of a task whose worker (node) was lost: a node failure, which the step's
/// `retry:` retries like any failure.
pub fn node_lost(started: Option<SystemTime>) -> Outcome {
    Outcome::between(Ending::BatchFailure { state: SlurmState::NodeFail, exit: None }, started, Some(SystemTime::now()))
}

/// Protocol errors.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    /// The connection failed.
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    /// The peer closed the connection.
    #[error("the peer closed the connection")]
    Closed,
    /// A line that is not a message.
    #[error("bad message: {0}")]
    Bad(String),
}

/// Writes one message as a JSON line.
pub async fn send<W: AsyncWriteExt + Unpin, M: Serialize>(w: &mut W, msg: &M) -> Result<(), ProtocolError> {
    let mut line = serde_json::to_vec(msg).map_err(|e| ProtocolError::Bad(e.to_string()))?;
    line.push(b'\n');
    w.write_all(&line).await?;
    w.flush().await?;
    Ok(())
}

/// Writes several messages as JSON lines with one write (tasks that start or end together).
pub async fn send_all<W: AsyncWriteExt + Unpin, M: Serialize>(w: &mut W, msgs: &[M]) -> Result<(), ProtocolError> {
    let mut buf = Vec::new();
    for m in msgs {
        serde_json::to_writer(&mut buf, m).map_err(|e| ProtocolError::Bad(e.to_string()))?;
        buf.push(b'\n');
    }
    w.write_all(&buf).await?;
    w.flush().await?;
    Ok(())
}

/// Reads one JSON-line message (at most [`MAX_LINE`] bytes).
pub async fn recv<R: tokio::io::AsyncRead + Unpin, M: for<'de> Deserialize<'de>>(
    r: &mut BufReader<R>,
) -> Result<M, ProtocolError> {
    let mut line = Vec::new();
    let n = tokio::io::AsyncReadExt::take(&mut *r, MAX_LINE as u64 + 1).read_until(b'\n', &mut line).await?;
    if n == 0 {
        return Err(ProtocolError::Closed);
    }
    if line.last() != Some(&b'\n') {
        return Err(if n > MAX_LINE {
            ProtocolError::Bad(format!("a line longer than {MAX_LINE} bytes"))
        } else {
            ProtocolError::Closed
        });
    }
    serde_json::from_slice(&line).map_err(|e| ProtocolError::Bad(e.to_string()))
}

/// A secret or a challenge: 32 random bytes from the kernel, hex.
pub fn random_hex() -> std::io::Result<String> {
    let mut b = [0u8; 32];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut b)?;
    Ok(hex(&b))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The answer to `nonce` by a holder of `secret`: BLAKE3 keyed by the secret's hash.
pub fn proof(secret: &str, nonce: &str) -> String {
    let key = blake3::hash(secret.as_bytes());
    blake3::keyed_hash(key.as_bytes(), nonce.as_bytes()).to_hex().to_string()
}

/// Whether `answer` is the proof for `nonce` under `secret`, compared in constant time.
pub fn verify(secret: &str, nonce: &str, answer: &str) -> bool {
    let want = proof(secret, nonce);
    want.len() == answer.len() && want.bytes().zip(answer.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

/// Creates the run's secret file (new, mode 0600) with a fresh secret, and returns it.
pub fn write_secret(path: &Path) -> std::io::Result<String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let secret = random_hex()?;
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    f.write_all(secret.as_bytes())?;
    Ok(secret)
}

/// Reads a secret file, refusing one that others than its owner may read (a secret anyone
/// on the machine can read protects nothing).
pub fn read_secret(path: &Path) -> Result<String, String> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "`{}` may be read by others (mode {mode:o}); hint: `chmod 600 {}`",
            path.display(),
            path.display()
        ));
    }
    let s = std::fs::read_to_string(path).map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
    let s = s.trim().to_string();
    if s.is_empty() {
        return Err(format!("`{}` is empty", path.display()));
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proofs_depend_on_secret_and_nonce() {
        let p = proof("s3cret", "n1");
        assert!(verify("s3cret", "n1", &p));
        assert!(!verify("other", "n1", &p));
        assert!(!verify("s3cret", "n2", &p));
        assert!(!verify("s3cret", "n1", &p[1..]));
        assert_eq!(p.len(), 64);
    }

    #[test]
    fn outcomes_survive_the_wire() {
        let t0 = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        let t1 = t0 + Duration::from_millis(2500);
        for ending in [
            Ending::Exited(3),
            Ending::Signalled(9),
            Ending::TimedOut(Some(Exit::Signal(15))),
            Ending::Cancelled(None),
            Ending::SpawnFailed(SpawnFailure::NotFound { program: "nope".into() }),
            Ending::NoStatus,
        ] {
            let o = Outcome::between(ending, Some(t0), Some(t1));
            let line = serde_json::to_string(&WireOutcome::from(&o)).unwrap();
            let back: WireOutcome = serde_json::from_str(&line).unwrap();
            assert_eq!(Outcome::from(back), o, "{line}");
        }
        // What the task used travels too (the report's CPU and memory columns); a worker
        // that sends none is read as before.
        let o = Outcome::between(Ending::Exited(0), Some(t0), Some(t1)).with_usage(Some(Usage::from_times(
            1.25,
            0.5,
            Some(3 << 20),
        )));
        let line = serde_json::to_string(&WireOutcome::from(&o)).unwrap();
        let back = Outcome::from(serde_json::from_str::<WireOutcome>(&line).unwrap());
        assert_eq!(back, o, "{line}");
        assert_eq!(back.usage.unwrap().cpu_seconds, Some(1.75));
        let old = r#"{"ending":{"kind":"exited","code":0},"started_ms":1,"finished_ms":2}"#;
        assert_eq!(Outcome::from(serde_json::from_str::<WireOutcome>(old).unwrap()).usage, None);
    }

    #[test]
    fn secret_files_are_private_and_others_are_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s");
        let s = write_secret(&p).unwrap();
        assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(read_secret(&p).unwrap(), s);
        assert!(write_secret(&p).is_err(), "an existing secret file is never overwritten");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = read_secret(&p).unwrap_err();
        assert!(e.contains("may be read by others (mode 644)") && e.contains("chmod 600"), "{e}");
    }

    #[tokio::test]
    async fn messages_round_trip_as_json_lines_and_overlong_lines_are_refused() {
        let (a, b) = tokio::io::duplex(1 << 16);
        let (ra, mut wa) = tokio::io::split(a);
        let (rb, _wb) = tokio::io::split(b);
        let mut rb = BufReader::new(rb);
        let start = ToWorker::Start(Box::new(StartTask {
            id: 7,
            name: "sim[1]".into(),
            argv: vec!["sh".into(), "-c".into(), "echo 'a\nb'".into()],
            env: vec![("K".into(), "v".into())],
            cwd: "/r".into(),
            stdout: "/r/o".into(),
            stderr: "/r/e".into(),
            timeout_ms: Some(1000),
            need: WireNeed { cores: 2, memory_mb: 100, gpus: 0 },
        }));
        send(&mut wa, &start).await.unwrap();
        send(&mut wa, &ToWorker::Ping).await.unwrap();
        assert_eq!(recv::<_, ToWorker>(&mut rb).await.unwrap(), start);
        assert_eq!(recv::<_, ToWorker>(&mut rb).await.unwrap(), ToWorker::Ping);
        wa.write_all(b"{\"type\":\"launch_missiles\"}\n").await.unwrap();
        assert!(matches!(recv::<_, ToWorker>(&mut rb).await, Err(ProtocolError::Bad(_))));
        // Both halves of the writer's end gone: the connection is closed.
        drop((ra, wa));
        assert!(matches!(recv::<_, ToWorker>(&mut rb).await, Err(ProtocolError::Closed)));
    }
}
