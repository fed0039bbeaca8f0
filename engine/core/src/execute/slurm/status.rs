//! Reading what `squeue`, `sacct` and `scontrol show job` print, and mapping SLURM job
//! states onto [`JobStatus`] and [`Outcome`].
//!
//! Every query asks for `SLURM_TIME_FORMAT=%s`, so times are seconds since the epoch and
//! need no time-zone guessing. States are documented in `squeue(1)` "JOB STATE CODES"; they
//! are parsed once, where the text is read, into [`SlurmState`]. `sacct` may print
//! `CANCELLED by UID`, so only the first word counts.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use crate::execute::batch::SlurmState;
use crate::execute::{Ending, Exit, JobStatus, Outcome, Usage};
use crate::ids::JobId;

/// One line of `squeue --format=%i|%T|%r`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueRow {
    /// Job id.
    pub id: JobId,
    /// State.
    pub state: SlurmState,
    /// Reason it waits (`Priority`, `Resources`, ...; `None` when running).
    pub reason: String,
}

/// How a job ended, from `sacct` or `scontrol show job`.
#[derive(Debug, Clone, PartialEq)]
pub struct FinalRow {
    /// Job id.
    pub id: JobId,
    /// State.
    pub state: SlurmState,
    /// `ExitCode` as (exit code, signal).
    pub exit: Option<(i32, i32)>,
    /// Start time.
    pub start: Option<SystemTime>,
    /// End time.
    pub end: Option<SystemTime>,
    /// What the job used (`sacct` with slurmdbd: `TotalCPU`, `UserCPU`, `SystemCPU`, the
    /// largest `MaxRSS` of its steps); `None` from the completion log or `scontrol`.
    pub usage: Option<Usage>,
}

/// Parses `squeue --noheader --format=%i|%T|%r`.
pub fn parse_squeue(text: &str) -> Vec<QueueRow> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.trim().splitn(3, '|');
            let id = f.next()?.trim();
            let state = f.next()?.trim();
            if id.is_empty() || state.is_empty() {
                return None;
            }
            Some(QueueRow {
                id: JobId(id.to_string()),
                state: SlurmState::parse(state),
                reason: f.next().unwrap_or("").trim().to_string(),
            })
        })
        .collect()
}

fn epoch(s: &str) -> Option<SystemTime> {
    // `Unknown`/`None` for jobs that never started; 0 likewise.
    let secs: u64 = s.trim().parse().ok().filter(|s| *s > 0)?;
    Some(UNIX_EPOCH + Duration::from_secs(secs))
}

fn exit_code(s: &str) -> Option<(i32, i32)> {
    let (a, b) = s.trim().split_once(':')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// Parses `sacct --noheader --parsable2 [-X] --format=JobID,State,ExitCode,Start,End`
/// (with or without `-c`), optionally followed by `TotalCPU,UserCPU,SystemCPU,MaxRSS`. A job
/// listed twice (requeued) keeps its last line. Lines of job steps (`12.batch`, `12_3.0`)
/// only add to their job's usage: its `MaxRSS` is the largest of its steps' (the job's own
/// line has none), and its CPU times are those of its own line, or the sum of its steps'
/// where that line has none.
pub fn parse_sacct(text: &str) -> Vec<FinalRow> {
    let mut by_id: HashMap<String, FinalRow> = HashMap::new();
    let mut steps: HashMap<String, Usage> = HashMap::new();
    let mut order = vec![];
    for l in text.lines() {
        let f: Vec<&str> = l.trim().split('|').collect();
        if f.len() < 3 || f[0].is_empty() || f[1].is_empty() {
            continue;
        }
        let usage = sacct_usage(&f);
        if let Some((job, _step)) = f[0].split_once('.') {
            if let Some(u) = usage {
                let s = steps.entry(job.to_string()).or_default();
                let add = |a: Option<f64>, b: Option<f64>| match (a, b) {
                    (Some(a), Some(b)) => Some(a + b),
                    (a, b) => a.or(b),
                };
                s.user_seconds = add(s.user_seconds, u.user_seconds);
                s.system_seconds = add(s.system_seconds, u.system_seconds);
                s.cpu_seconds = add(s.cpu_seconds, u.cpu_seconds);
                s.max_rss_bytes = s.max_rss_bytes.max(u.max_rss_bytes);
            }
            continue;
        }
        let row = FinalRow {
            id: JobId(f[0].to_string()),
            state: SlurmState::parse(f[1]),
            exit: exit_code(f[2]),
            start: f.get(3).and_then(|s| epoch(s)),
            end: f.get(4).and_then(|s| epoch(s)),
            usage,
        };
        if by_id.insert(f[0].to_string(), row).is_none() {
            order.push(f[0].to_string());
        }
    }
    order
        .into_iter()
        .filter_map(|id| {
            let mut row = by_id.remove(&id)?;
            if let Some(s) = steps.get(&id) {
                let u = row.usage.get_or_insert_with(Usage::default);
                if u.cpu_seconds.is_none() {
                    (u.user_seconds, u.system_seconds, u.cpu_seconds) =
                        (s.user_seconds, s.system_seconds, s.cpu_seconds);
                }
                u.max_rss_bytes = u.max_rss_bytes.max(s.max_rss_bytes);
            }
            Some(row)
        })
        .collect()
}

/// The usage fields of a `sacct` line (`TotalCPU|UserCPU|SystemCPU|MaxRSS` after the first
/// five), `None` when it has none of them.
fn sacct_usage(f: &[&str]) -> Option<Usage> {
    let field = |i: usize| f.get(i).map(|s| s.trim()).filter(|s| !s.is_empty());
    let u = Usage {
        cpu_seconds: field(5).and_then(slurm_duration),
        user_seconds: field(6).and_then(slurm_duration),
        system_seconds: field(7).and_then(slurm_duration),
        max_rss_bytes: field(8).and_then(slurm_size),
    };
    (u != Usage::default()).then_some(u)
}

/// Seconds of a SLURM duration: `[D-][HH:]MM:SS[.mmm]` (`00:01.234`, `1-02:03:04`).
pub fn slurm_duration(s: &str) -> Option<f64> {
    let (days, rest) = match s.split_once('-') {
        Some((d, r)) => (d.parse::<f64>().ok()?, r),
        None => (0.0, s),
    };
    let mut secs = 0.0;
    for part in rest.split(':') {
        secs = secs * 60.0 + part.parse::<f64>().ok()?;
    }
    Some(days * 86400.0 + secs)
}

/// Bytes of a SLURM size (`2156K`, `1.5G`; a bare number is bytes).
pub fn slurm_size(s: &str) -> Option<u64> {
    let (num, mult) = match s.chars().last()? {
        'K' | 'k' => (&s[..s.len() - 1], 1u64 << 10),
        'M' | 'm' => (&s[..s.len() - 1], 1 << 20),
        'G' | 'g' => (&s[..s.len() - 1], 1 << 30),
        'T' | 't' => (&s[..s.len() - 1], 1 << 40),
        _ => (s, 1),
    };
    let v: f64 = num.parse().ok()?;
    (v >= 0.0).then(|| (v * mult as f64).round() as u64)
}

/// Parses `scontrol show job ID` (`Key=Value` words over several lines). `None` when the
/// text has no `JobId=`.
pub fn parse_scontrol(text: &str) -> Option<FinalRow> {
    let mut kv = HashMap::new();
    for w in text.split_whitespace() {
        if let Some((k, v)) = w.split_once('=') {
            kv.entry(k).or_insert(v);
        }
    }
    Some(FinalRow {
        id: JobId(kv.get("JobId")?.to_string()),
        state: SlurmState::parse(kv.get("JobState")?),
        exit: kv.get("ExitCode").and_then(|s| exit_code(s)),
        start: kv.get("StartTime").and_then(|s| epoch(s)),
        end: kv.get("EndTime").and_then(|s| epoch(s)),
        usage: None,
    })
}

/// Parses `scontrol show job ARRAY_ID`, which prints one record per array element (blank
/// lines between records), as rows with ids `ARRAY_TASK` (`12_3`), the form twinflow
/// tracks elements by. Records of elements that have not started yet (their task id is a
/// range like `4-9%2`) and records that are not array elements are left out.
pub fn parse_scontrol_array(text: &str) -> Vec<FinalRow> {
    text.split("\n\n")
        .filter_map(|rec| {
            let kv: HashMap<&str, &str> = rec.split_whitespace().filter_map(|w| w.split_once('=')).collect();
            let task = kv.get("ArrayTaskId")?;
            if !task.chars().all(|c| c.is_ascii_digit()) {
                return None;
            }
            let mut row = parse_scontrol(rec)?;
            row.id = JobId(format!("{}_{task}", kv.get("ArrayJobId")?));
            Some(row)
        })
        .collect()
}

/// The array job id of an array element id (`12_3` → `12`); `None` for a plain job id.
pub fn array_job_of(id: &JobId) -> Option<&str> {
    id.0.split_once('_').map(|(a, _)| a)
}

impl SlurmState {
    /// Where a job in this state stands.
    pub fn phase(&self) -> Phase {
        use SlurmState::*;
        match self {
            Pending | Configuring | Requeued | RequeueHold | RequeueFed | ResvDelHold => Phase::Queued,
            Running | Completing | Suspended | StageOut | Signaling | Resizing | Stopped => Phase::Running,
            _ => Phase::Ended,
        }
    }
}

/// Where a job stands according to its state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Waiting to start.
    Queued,
    /// Started, not ended.
    Running,
    /// Ended.
    Ended,
}

/// Whether a job in the queue counts as queued or running.
pub fn queue_status(state: &SlurmState) -> JobStatus {
    match state.phase() {
        Phase::Queued => JobStatus::Queued,
        _ => JobStatus::Running,
    }
}

/// Pending reasons that will not go away by waiting (the job needs more than the partition
/// or the association allows, or a dependency can never be met). The backend warns once.
pub fn hopeless_reason(reason: &str) -> bool {
    matches!(
        reason,
        "PartitionTimeLimit"
            | "PartitionNodeLimit"
            | "PartitionConfig"
            | "BadConstraints"
            | "InvalidAccount"
            | "InvalidQOS"
            | "DependencyNeverSatisfied"
            | "QOSMaxWallDurationPerJobLimit"
            | "QOSMaxCpuPerJobLimit"
            | "QOSMaxNodePerJobLimit"
            | "AssocMaxWallDurationPerJobLimit"
            | "AssocMaxCpuPerJobLimit"
            | "AssocMaxNodePerJobLimit"
            | "ReqNodeNotAvail, UnavailableNodes"
    ) || reason.starts_with("ReqNodeNotAvail")
}

/// How a job that ended did end. `cancel_requested`: twinflow itself asked to cancel it
/// (otherwise a `CANCELLED` job was cancelled by someone else, and counts as a failure that
/// the step's retry policy may retry).
pub fn outcome(row: &FinalRow, cancel_requested: bool) -> Outcome {
    let (code, sig) = row.exit.unwrap_or((0, 0));
    let exit = if sig != 0 { Exit::Signal(sig) } else { Exit::Code(code) };
    let ending = match &row.state {
        SlurmState::Completed => Ending::from_exit(Some(exit)),
        SlurmState::Failed if code != 0 || sig != 0 => Ending::from_exit(Some(exit)),
        SlurmState::Timeout => Ending::TimedOut(Some(exit)),
        SlurmState::Cancelled if cancel_requested => Ending::Cancelled(Some(exit)),
        // FAILED with 0:0, CANCELLED by someone else, OUT_OF_MEMORY (often 0:125), ...
        state => Ending::BatchFailure { state: state.clone(), exit: Some(exit) },
    };
    Outcome::between(ending, row.start, row.end).with_usage(row.usage)
}

#[cfg(test)]
mod tests {
    use super::*;
    pub use crate::execute::batch::SlurmState;

    fn row(state: &str, exit: (i32, i32)) -> FinalRow {
        FinalRow {
            id: JobId("7".into()),
            state: SlurmState::parse(state),
            exit: Some(exit),
            start: None,
            end: None,
            usage: None,
        }
    }

    #[test]
    fn squeue_lines() {
        let rows = parse_squeue("12|PENDING|Priority\n13|RUNNING|None\n\n14|PENDING|ReqNodeNotAvail, Reserved\n");
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[2].reason, "ReqNodeNotAvail, Reserved");
        assert_eq!(rows[0].state, SlurmState::Pending);
        assert_eq!(queue_status(&rows[0].state), JobStatus::Queued);
        assert_eq!(queue_status(&rows[1].state), JobStatus::Running);
        assert!(hopeless_reason(&rows[2].reason));
    }

    #[test]
    fn sacct_lines_last_wins() {
        let text = "2|FAILED|3:0|1795309457|1795309458\n1|COMPLETED|0:0|1795309457|1795309459\n5|CANCELLED by 0|0:15|Unknown|1795309460\n2|COMPLETED|0:0|1795309470|1795309471\n";
        let rows = parse_sacct(text);
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0].state, SlurmState::Completed, "requeued job 2: last line");
        assert_eq!(rows[2].state, SlurmState::Cancelled);
        assert_eq!(rows[2].start, None);
        assert_eq!(rows[1].end, Some(UNIX_EPOCH + Duration::from_secs(1795309459)));
    }

    #[test]
    fn sacct_usage_comes_from_the_job_line_and_the_largest_step() {
        // Plain sacct (slurmdbd) without -X: the job's line has the CPU times, its steps the
        // memory; array element steps fold into their element.
        let text = "41|COMPLETED|0:0|100|160|00:12.500|00:10.250|00:02.250|\n41.batch|COMPLETED|0:0|100|160|00:00.100|00:00.050|00:00.050|2156K\n41.0|COMPLETED|0:0|101|159|00:12.400|00:10.200|00:02.200|1.5G\n42_3|FAILED|2:0|100|101||||\n42_3.batch|FAILED|2:0|100|101|1-00:00:01|00:00:01|00:00:00|10M\n43|COMPLETED|0:0|100|101\n";
        let rows = parse_sacct(text);
        assert_eq!(rows.len(), 3, "{rows:?}");
        let u = rows[0].usage.unwrap();
        assert_eq!((u.cpu_seconds, u.user_seconds, u.system_seconds), (Some(12.5), Some(10.25), Some(2.25)));
        assert_eq!(u.max_rss_bytes, Some(3 << 29), "the largest step's MaxRSS");
        // The element's own line has no times: its steps' sums.
        let a = rows[1].usage.unwrap();
        assert_eq!((a.cpu_seconds, a.max_rss_bytes), (Some(86401.0), Some(10 << 20)));
        assert_eq!(rows[1].id.0, "42_3");
        // The completion log's short lines: no usage.
        assert_eq!(rows[2].usage, None);
        assert_eq!(outcome(&rows[0], false).usage, rows[0].usage);
        assert_eq!(slurm_duration("01:02:03"), Some(3723.0));
        assert_eq!(slurm_duration("garbage"), None);
        assert_eq!(slurm_size("0"), Some(0));
        assert_eq!(slurm_size("x"), None);
    }

    #[test]
    fn scontrol_text() {
        let text = "JobId=3 JobName=wrap\n   JobState=TIMEOUT Reason=TimeLimit Dependency=(null)\n   ExitCode=0:0\n   StartTime=1795309457 EndTime=1795309545 Deadline=N/A\n";
        let r = parse_scontrol(text).unwrap();
        assert_eq!((r.id.0.as_str(), &r.state, r.exit), ("3", &SlurmState::Timeout, Some((0, 0))));
        assert!(parse_scontrol("slurm_load_jobs error: Invalid job id specified").is_none());
    }

    #[test]
    fn states_map_to_outcomes() {
        assert!(outcome(&row("COMPLETED", (0, 0)), false).success());
        let f = outcome(&row("FAILED", (3, 0)), false);
        assert_eq!((f.exit_code(), f.success()), (Some(3), false));
        assert_eq!(f.describe(), "exit code 3");
        assert_eq!(outcome(&row("FAILED", (0, 9)), false).ending, Ending::Signalled(9));
        assert!(outcome(&row("TIMEOUT", (0, 0)), false).timed_out());
        assert!(outcome(&row("CANCELLED", (0, 15)), true).is_cancelled());
        let ext = outcome(&row("CANCELLED", (0, 15)), false);
        assert!(!ext.is_cancelled() && !ext.success() && ext.describe().contains("outside twinflow"), "{ext:?}");
        assert_eq!(
            ext.describe(),
            "the job was cancelled outside twinflow (`scancel`, an administrator or a limit) (signal 15)"
        );
        // OOM often reports 0:125: still a failure.
        let oom = outcome(&row("OUT_OF_MEMORY", (0, 125)), false);
        assert!(!oom.success() && oom.describe().contains("out of memory"));
        for s in ["NODE_FAIL", "PREEMPTED", "BOOT_FAIL", "DEADLINE", "REVOKED"] {
            let o = outcome(&row(s, (0, 0)), false);
            assert!(!o.success() && o.failure().is_some(), "{s}");
        }
        assert_eq!(outcome(&row("REVOKED", (0, 0)), false).describe(), "the job ended in SLURM state REVOKED");
        let f00 = outcome(&row("FAILED", (0, 0)), false);
        assert!(!f00.success());
        assert_eq!(f00.describe(), "SLURM reports the job FAILED without an exit code");
    }

    #[test]
    fn phases() {
        for s in ["PENDING", "REQUEUED", "CONFIGURING"] {
            assert_eq!(SlurmState::parse(s).phase(), Phase::Queued);
        }
        for s in ["RUNNING", "COMPLETING", "SUSPENDED"] {
            assert_eq!(SlurmState::parse(s).phase(), Phase::Running);
        }
        for s in ["COMPLETED", "CANCELLED by 0", "TIMEOUT", "OUT_OF_MEMORY", "SPECIAL_EXIT"] {
            assert_eq!(SlurmState::parse(s).phase(), Phase::Ended);
        }
        // Every named state prints as SLURM names it; unknown ones keep their name.
        for s in
            ["PENDING", "REQUEUE_HOLD", "STAGE_OUT", "OUT_OF_MEMORY", "NODE_FAIL", "BOOT_FAIL", "DEADLINE", "REVOKED"]
        {
            assert_eq!(SlurmState::parse(s).to_string(), s);
        }
        assert_eq!(SlurmState::parse("CANCELLED by 1000"), SlurmState::Cancelled);
        assert_eq!(SlurmState::parse("REVOKED"), SlurmState::Other("REVOKED".into()));
    }

    #[test]
    fn scontrol_array_records() {
        let text = "JobId=5 ArrayJobId=1 ArrayTaskId=3 ArrayTaskThrottle=2 JobName=arr.sh\n   JobState=FAILED Reason=NonZeroExitCode Dependency=(null)\n   ExitCode=7:0\n   StartTime=100 EndTime=102\n\nJobId=1 ArrayJobId=1 ArrayTaskId=4-5%2 JobName=arr.sh\n   JobState=PENDING Reason=JobArrayTaskLimit\n   ExitCode=0:0\n\nJobId=2 ArrayJobId=1 ArrayTaskId=0 JobName=arr.sh\n   JobState=COMPLETED Reason=None\n   ExitCode=0:0\n   StartTime=100 EndTime=101\n";
        let rows = parse_scontrol_array(text);
        assert_eq!(rows.len(), 2, "{rows:?}");
        assert_eq!((rows[0].id.0.as_str(), rows[0].state.as_str(), rows[0].exit), ("1_3", "FAILED", Some((7, 0))));
        assert_eq!((rows[1].id.0.as_str(), &rows[1].state), ("1_0", &SlurmState::Completed));
        assert_eq!(array_job_of(&JobId("12_3".into())), Some("12"));
        assert_eq!(array_job_of(&JobId("12".into())), None);
    }
}
