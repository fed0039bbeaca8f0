//! Cycling: a workflow whose steps run once per *cycle point* (`cycle:`), with steps that
//! run only in the first or last cycle (`once:`), tasks gated by triggers (`wait:`), and
//! references to the previous cycle's results (`prev.steps.S.out.NAME`).
//!
//! A cycle point is an integer (integer cycling: `every: 1`) or an instant (datetime
//! cycling: `every: 10m`). Cycle `k` (from 0) has point `start + k × every`.

use std::time::Duration;

use jiff::Timestamp;

use crate::expr::Value;
use crate::spec::span::Span;

use super::workflow::Tpl;

/// How the cycle points advance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Every {
    /// Integer cycling: points are integers `start + k × step` (step ≥ 1).
    Int(i64),
    /// Datetime cycling: points are instants `start + k × interval` (interval > 0).
    Time(Duration),
}

/// A cycle point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Point {
    /// Integer cycling.
    Int(i64),
    /// Datetime cycling (UTC).
    Time(Timestamp),
}

impl Point {
    /// The point as an expression value: an int, or an ISO 8601 string
    /// (`2026-03-01T00:00:00Z`).
    pub fn value(self) -> Value {
        match self {
            Point::Int(i) => Value::Int(i),
            Point::Time(t) => Value::Str(t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()),
        }
    }
    /// The point as used in directory names and task ids: `7`, `20260301T0000Z`
    /// (seconds shown only when not zero).
    pub fn label(self) -> String {
        match self {
            Point::Int(i) => i.to_string(),
            Point::Time(t) => {
                if t.as_second().rem_euclid(60) == 0 && t.subsec_nanosecond() == 0 {
                    t.strftime("%Y%m%dT%H%MZ").to_string()
                } else {
                    t.strftime("%Y%m%dT%H%M%SZ").to_string()
                }
            }
        }
    }
}

impl std::fmt::Display for Point {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Point::Int(i) => write!(f, "{i}"),
            Point::Time(t) => f.write_str(&t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()),
        }
    }
}

impl Point {
    /// Parses a point written as for `every`: an integer, or an ISO 8601 instant in UTC
    /// (`2026-03-01T00:00Z`, `2026-03-01T00:00:00Z`, or the label form `20260301T0000Z`).
    pub fn parse(text: &str, every: Every) -> Result<Point, String> {
        let text = text.trim();
        match every {
            Every::Int(_) => {
                text.parse::<i64>().map(Point::Int).map_err(|_| format!("`{text}` is not an integer cycle point"))
            }
            Every::Time(_) => parse_instant(text).map(Point::Time),
        }
    }
}

/// An ISO 8601 instant in UTC: `2026-03-01T00:00Z`, `2026-03-01T00:00:00Z`,
/// `2026-03-01T00:00:00.5Z` or the compact label form `20260301T0000Z`.
pub fn parse_instant(text: &str) -> Result<Timestamp, String> {
    let bad = || format!("`{text}` is not an ISO 8601 instant in UTC (like `2026-03-01T00:00Z`)");
    if !text.ends_with('Z') && !text.ends_with("+00:00") {
        return Err(bad());
    }
    if let Ok(t) = text.parse::<Timestamp>() {
        return Ok(t);
    }
    for fmt in ["%Y-%m-%dT%H:%MZ", "%Y%m%dT%H%MZ", "%Y%m%dT%H%M%SZ"] {
        if let Ok(t) = jiff::civil::DateTime::strptime(fmt, text).and_then(|dt| dt.to_zoned(jiff::tz::TimeZone::UTC)) {
            return Ok(t.timestamp());
        }
    }
    Err(bad())
}

/// Where the first cycle is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// A given point.
    At(Point),
    /// The instant the run starts (datetime cycling only), recorded so a resumed run keeps it.
    Now,
}

/// Where cycling ends (the last cycle is included).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The last point (cycles run while `point <= end`).
    At(Point),
    /// This many cycles in all.
    Cycles(u64),
}

/// A validated `cycle:` block.
#[derive(Debug, Clone, PartialEq)]
pub struct CycleSpec {
    /// Step between points.
    pub every: Every,
    /// First point.
    pub start: Start,
    /// Last point, or a count; `None` runs until stopped.
    pub end: Option<End>,
    /// Cycles that may be active beyond the oldest unfinished one (default 1).
    pub runahead: u32,
    /// Keep the directories of the last N finished cycles; older ones are pruned
    /// (`None`: keep everything).
    pub keep: Option<u32>,
    /// Where `cycle:` was written.
    pub span: Span,
}

impl CycleSpec {
    /// Point of cycle `index` when the first one is `start`.
    pub fn point(&self, start: Point, index: u64) -> Point {
        match (self.every, start) {
            (Every::Int(step), Point::Int(s)) => Point::Int(s.saturating_add(step.saturating_mul(index as i64))),
            (Every::Time(d), Point::Time(t)) => {
                let ns = (d.as_nanos() as i128).saturating_mul(index as i128);
                let span = jiff::SignedDuration::from_nanos_i128(ns);
                Point::Time(t.checked_add(span).unwrap_or(Timestamp::MAX))
            }
            // Validation makes `every` and `start` agree.
            (_, p) => p,
        }
    }

    /// Index of the cycle at `point` when the first is `start`, if it is one.
    pub fn index_of(&self, start: Point, point: Point) -> Option<u64> {
        match (self.every, start, point) {
            (Every::Int(step), Point::Int(s), Point::Int(x)) if x >= s && step > 0 && (x - s) % step == 0 => {
                Some(((x - s) / step) as u64)
            }
            (Every::Time(d), Point::Time(s), Point::Time(x)) if x >= s => {
                let ns = x.duration_since(s).as_nanos();
                let every = d.as_nanos() as i128;
                (every > 0 && ns % every == 0).then(|| (ns / every) as u64)
            }
            _ => None,
        }
    }

    /// Number of cycles when the first is `start`, if cycling ends.
    pub fn count(&self, start: Point) -> Option<u64> {
        match self.end? {
            End::Cycles(n) => Some(n),
            End::At(end) => Some(match (self.every, start, end) {
                (Every::Int(step), Point::Int(s), Point::Int(e)) if e >= s => ((e - s) / step.max(1)) as u64 + 1,
                (Every::Time(d), Point::Time(s), Point::Time(e)) if e >= s => {
                    let span = e.duration_since(s).as_nanos().max(0) as u128;
                    (span / d.as_nanos().max(1)) as u64 + 1
                }
                _ => 0,
            }),
        }
    }
}

/// `once:` of a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Once {
    /// Only in the first cycle; later cycles read its results.
    First,
    /// Only in the last cycle (needs an end).
    Last,
}

/// What a trigger does when its `timeout` passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnTimeout {
    /// The task fails.
    #[default]
    Fail,
    /// The task is skipped (and so are its dependants in the cycle); later cycles go on.
    Skip,
}

/// A `wait:` block: every trigger given must be satisfied before the task may start.
#[derive(Debug, Clone)]
pub struct Wait {
    /// Not before the cycle point plus this offset of wall-clock time (may be negative).
    pub clock: Option<jiff::SignedDuration>,
    /// Files (paths or globs; templates) that must exist.
    pub files: Vec<Tpl>,
    /// A file counts only when its size and mtime have not changed for this long.
    pub settle: Duration,
    /// A file counts only when at least this many bytes long.
    pub min_size: u64,
    /// A command polled until it exits 0 (argv templates); a JSON object on its stdout
    /// becomes `wait.KEY` values.
    pub command: Vec<Tpl>,
    /// How often files and the command are checked.
    pub poll: Duration,
    /// A named signal (`twinflow signal RUN NAME`).
    pub signal: Option<String>,
    /// Give up after this long (from when the task's upstream was done).
    pub timeout: Option<Duration>,
    /// What giving up means.
    pub on_timeout: OnTimeout,
    /// Where `wait:` was written.
    pub span: Span,
}

impl Wait {
    /// Default interval between checks of files and commands.
    pub const DEFAULT_POLL: Duration = Duration::from_secs(1);
}
