//! Job states of batch systems, as the engine knows them: SLURM's, by the names SLURM
//! prints. They live beside the [`Outcome`](super::Outcome) that carries them (a job the
//! batch system ended as failed), not in the SLURM backend, so the trait module does not
//! depend on a backend; the SLURM backend parses them ([`SlurmState::parse`]) and decides
//! what each means for a job in its queue.

/// A SLURM job state (`squeue(1)`, "JOB STATE CODES":
/// <https://slurm.schedmd.com/squeue.html#SECTION_JOB-STATE-CODES>). States twinflow does not
/// name (`REVOKED`, `SPECIAL_EXIT`, states of later SLURM versions) are kept as
/// [`SlurmState::Other`] and count as ended.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[allow(missing_docs)]
pub enum SlurmState {
    // Queued.
    Pending,
    Configuring,
    Requeued,
    RequeueHold,
    RequeueFed,
    ResvDelHold,
    // Running.
    Running,
    Completing,
    Suspended,
    StageOut,
    Signaling,
    Resizing,
    Stopped,
    // Ended.
    Completed,
    Failed,
    Timeout,
    OutOfMemory,
    NodeFail,
    Preempted,
    Cancelled,
    BootFail,
    Deadline,
    /// Any other state, by its name.
    Other(String),
}

impl SlurmState {
    /// Parses a state as SLURM prints it; only the first word counts (`CANCELLED by 0`).
    pub fn parse(text: &str) -> Self {
        use SlurmState::*;
        match text.split_whitespace().next().unwrap_or("") {
            "PENDING" => Pending,
            "CONFIGURING" => Configuring,
            "REQUEUED" => Requeued,
            "REQUEUE_HOLD" => RequeueHold,
            "REQUEUE_FED" => RequeueFed,
            "RESV_DEL_HOLD" => ResvDelHold,
            "RUNNING" => Running,
            "COMPLETING" => Completing,
            "SUSPENDED" => Suspended,
            "STAGE_OUT" => StageOut,
            "SIGNALING" => Signaling,
            "RESIZING" => Resizing,
            "STOPPED" => Stopped,
            "COMPLETED" => Completed,
            "FAILED" => Failed,
            "TIMEOUT" => Timeout,
            "OUT_OF_MEMORY" => OutOfMemory,
            "NODE_FAIL" => NodeFail,
            "PREEMPTED" => Preempted,
            "CANCELLED" => Cancelled,
            "BOOT_FAIL" => BootFail,
            "DEADLINE" => Deadline,
            other => Other(other.to_string()),
        }
    }

    /// The name SLURM uses.
    pub fn as_str(&self) -> &str {
        use SlurmState::*;
        match self {
            Pending => "PENDING",
            Configuring => "CONFIGURING",
            Requeued => "REQUEUED",
            RequeueHold => "REQUEUE_HOLD",
            RequeueFed => "REQUEUE_FED",
            ResvDelHold => "RESV_DEL_HOLD",
            Running => "RUNNING",
            Completing => "COMPLETING",
            Suspended => "SUSPENDED",
            StageOut => "STAGE_OUT",
            Signaling => "SIGNALING",
            Resizing => "RESIZING",
            Stopped => "STOPPED",
            Completed => "COMPLETED",
            Failed => "FAILED",
            Timeout => "TIMEOUT",
            OutOfMemory => "OUT_OF_MEMORY",
            NodeFail => "NODE_FAIL",
            Preempted => "PREEMPTED",
            Cancelled => "CANCELLED",
            BootFail => "BOOT_FAIL",
            Deadline => "DEADLINE",
            Other(s) => s,
        }
    }

    /// Why a job that ended in this state counts as failed whatever its exit code.
    pub fn failure_reason(&self) -> String {
        match self {
            // FAILED with 0:0: the batch script could not be started (bad --chdir, missing
            // interpreter): say so, do not pretend it exited 0.
            SlurmState::Failed => "SLURM reports the job FAILED without an exit code".into(),
            SlurmState::Cancelled => {
                "the job was cancelled outside twinflow (`scancel`, an administrator or a limit)".into()
            }
            SlurmState::OutOfMemory => {
                "the job ran out of memory (SLURM OUT_OF_MEMORY); hint: raise `resources.memory`".into()
            }
            SlurmState::NodeFail => "a node of the job failed (SLURM NODE_FAIL)".into(),
            SlurmState::Preempted => "the job was preempted (SLURM PREEMPTED)".into(),
            SlurmState::BootFail => "the job's node failed to boot (SLURM BOOT_FAIL)".into(),
            SlurmState::Deadline => "the job reached its deadline (SLURM DEADLINE)".into(),
            other => format!("the job ended in SLURM state {other}"),
        }
    }
}

impl std::fmt::Display for SlurmState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}
