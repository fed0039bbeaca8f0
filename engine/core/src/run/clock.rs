//! Time as the scheduler sees it.
//!
//! The scheduler core never reads the system clock itself: retry delays, wake-ups and task
//! durations come from a [`Clock`]. A run uses [`SystemClock`]; tests use a
//! [`VirtualClock`] they move forward by hand, so timing semantics (backoff, the order in
//! which retries come due) are checked exactly and without sleeping.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A monotonic clock.
pub trait Clock: Send + Sync {
    /// The current instant.
    fn now(&self) -> Instant;
    /// The current wall-clock time (for `clock:` triggers and cycle points).
    fn wall(&self) -> jiff::Timestamp;
}

/// The real monotonic clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
    fn wall(&self) -> jiff::Timestamp {
        jiff::Timestamp::now()
    }
}

/// A clock that only moves when told to (tests).
#[derive(Debug)]
pub struct VirtualClock {
    base: Instant,
    offset_ns: AtomicU64,
}

impl Default for VirtualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl VirtualClock {
    /// A clock at time zero.
    pub fn new() -> Self {
        VirtualClock { base: Instant::now(), offset_ns: AtomicU64::new(0) }
    }
    /// Time since zero.
    pub fn elapsed(&self) -> Duration {
        Duration::from_nanos(self.offset_ns.load(Ordering::Relaxed))
    }
    /// Moves the clock to `at` (never backwards).
    pub fn advance_to(&self, at: Instant) {
        let ns = at.saturating_duration_since(self.base).as_nanos() as u64;
        self.offset_ns.fetch_max(ns, Ordering::Relaxed);
    }
    /// Moves the clock forward by `d`.
    pub fn advance(&self, d: Duration) {
        self.offset_ns.fetch_add(d.as_nanos() as u64, Ordering::Relaxed);
    }
    /// `at` as time since zero.
    pub fn since_zero(&self, at: Instant) -> Duration {
        at.saturating_duration_since(self.base)
    }
}

impl Clock for VirtualClock {
    fn now(&self) -> Instant {
        self.base + self.elapsed()
    }
    /// The Unix epoch plus the time since zero.
    fn wall(&self) -> jiff::Timestamp {
        jiff::Timestamp::UNIX_EPOCH
            + jiff::SignedDuration::try_from(self.elapsed()).unwrap_or(jiff::SignedDuration::MAX)
    }
}
