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
}
