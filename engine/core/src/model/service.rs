//! Service steps (`service:`): long-running processes that start like any task, let their
//! dependants start once they are *ready*, and run until the rest of the run is done.

use std::time::Duration;

use crate::spec::span::Span;

use super::workflow::Tpl;

/// How a service says it is ready (besides its declared outputs existing).
#[derive(Debug, Clone)]
pub enum Ready {
    /// This file exists (relative: to the attempt directory).
    File(Tpl),
    /// This command exits 0.
    Command(Vec<Tpl>),
}

/// A validated `service:`.
#[derive(Debug, Clone)]
pub struct Service {
    /// The readiness probe; `None`: ready as soon as it runs (and its outputs exist).
    pub ready: Option<Ready>,
    /// How often readiness is checked.
    pub poll: Duration,
    /// An attempt not ready this long after it started fails (and is retried).
    pub ready_timeout: Option<Duration>,
    /// `stdout`/`stderr` are rotated when they grow beyond this many bytes.
    pub log_max: u64,
    /// Rotated files kept per stream.
    pub log_keep: u32,
    /// Where `service:` was written.
    pub span: Span,
}

impl Service {
    /// Default `ready.poll`.
    pub const DEFAULT_POLL: Duration = Duration::from_secs(1);
    /// Default `log_max`: 10 MiB.
    pub const DEFAULT_LOG_MAX: u64 = 10 << 20;
    /// Default `log_keep`.
    pub const DEFAULT_LOG_KEEP: u32 = 3;
    /// Smallest `log_max` (smaller would rotate on every check).
    pub const MIN_LOG_MAX: u64 = 1 << 10;
    /// Largest `log_keep`.
    pub const MAX_LOG_KEEP: u32 = 100;

    /// A service ready as soon as it runs, with default log rotation.
    pub fn plain(span: Span) -> Self {
        Service {
            ready: None,
            poll: Self::DEFAULT_POLL,
            ready_timeout: None,
            log_max: Self::DEFAULT_LOG_MAX,
            log_keep: Self::DEFAULT_LOG_KEEP,
            span,
        }
    }
}
