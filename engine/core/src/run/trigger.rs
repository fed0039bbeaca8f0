//! Triggers (`wait:`): when a gated task may start.
//!
//! A [`Watch`] holds one task's triggers, evaluated (file templates expanded) when the
//! task was gated. [`Watch::check`] decides from the time and what a [`Probe`] sees of the
//! file system; it never reads a clock or a file itself, so the rules (settle time, minimum
//! size, clock offset, timeout) are tested with virtual time and fake files. The driver
//! checks only the watches that are due ([`Watch::next_check`]) in each turn of its loop:
//! a `stat`/`glob` per watched pattern, inside the engine's process, never a process per
//! check.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use indexmap::IndexMap;
use jiff::Timestamp;

use super::scope::GateValues;
use crate::model::OnTimeout;

/// What the file system shows of a pattern: the matching files with their size and mtime
/// (nanoseconds), sorted by path.
pub trait Probe {
    /// Files matching `pattern` (a path, or a glob with `*`, `?`, `[...]`).
    fn files(&mut self, pattern: &str) -> Vec<(String, u64, i128)>;
}

/// The real file system.
#[derive(Debug, Default)]
pub struct FsProbe;

impl Probe for FsProbe {
    fn files(&mut self, pattern: &str) -> Vec<(String, u64, i128)> {
        let stat = |p: &std::path::Path| -> Option<(u64, i128)> {
            let m = std::fs::metadata(p).ok().filter(|m| m.is_file())?;
            let mtime = m
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_nanos() as i128);
            Some((m.len(), mtime))
        };
        if !pattern.contains(['*', '?', '[']) {
            return stat(std::path::Path::new(pattern))
                .map(|(size, mtime)| vec![(pattern.to_string(), size, mtime)])
                .unwrap_or_default();
        }
        let Ok(paths) = glob::glob(pattern) else { return vec![] };
        let mut out: Vec<(String, u64, i128)> = paths
            .filter_map(Result::ok)
            .filter_map(|p| stat(&p).map(|(s, m)| (p.display().to_string(), s, m)))
            .collect();
        out.sort();
        out
    }
}

/// What a check concluded.
#[derive(Debug, Clone, PartialEq)]
pub enum Poll {
    /// Not yet: check again at this instant.
    Wait(Instant),
    /// Every trigger is satisfied.
    Ready(GateValues),
    /// The timeout passed first.
    TimedOut {
        /// What was still missing.
        message: String,
        /// Skip rather than fail.
        skip: bool,
    },
}

/// One task's triggers, expanded.
#[derive(Debug, Clone)]
pub struct Watch {
    /// Not before this wall-clock instant (the `clock:` trigger).
    pub not_before: Option<Timestamp>,
    /// File patterns, expanded.
    pub files: Vec<String>,
    /// How long a file must be unchanged.
    pub settle: Duration,
    /// Smallest size a file must have.
    pub min_size: u64,
    /// Interval between file checks.
    pub poll: Duration,
    /// A signal name to wait for; satisfied by [`Watch::signal_received`].
    pub signal: Option<String>,
    /// Whether a command must succeed; satisfied by [`Watch::command_succeeded`].
    pub command: bool,
    /// Give up at this instant.
    pub deadline: Option<Instant>,
    /// What giving up means.
    pub on_timeout: OnTimeout,
    /// When to check next.
    pub next_check: Instant,
    /// Per file: size, mtime, and since when they have been unchanged (its mtime, or when
    /// it was first seen with them, whichever is later).
    seen: HashMap<String, (u64, i128, Instant)>,
    signal_values: Option<IndexMap<String, serde_json::Value>>,
    command_values: Option<IndexMap<String, serde_json::Value>>,
}

impl Watch {
    /// A watch created at `now` (when the task was gated).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        now: Instant,
        not_before: Option<Timestamp>,
        files: Vec<String>,
        settle: Duration,
        min_size: u64,
        poll: Duration,
        timeout: Option<Duration>,
        on_timeout: OnTimeout,
    ) -> Self {
        Watch {
            not_before,
            files,
            settle,
            min_size,
            poll: poll.max(Duration::from_millis(10)),
            signal: None,
            command: false,
            deadline: timeout.map(|t| now + t),
            on_timeout,
            next_check: now,
            seen: HashMap::new(),
            signal_values: None,
            command_values: None,
        }
    }

    /// The signal this watch waits for arrived, with these values.
    pub fn signal_received(&mut self, values: IndexMap<String, serde_json::Value>) {
        self.signal_values = Some(values);
    }

    /// Whether the signal is still awaited.
    pub fn awaits_signal(&self) -> bool {
        self.signal.is_some() && self.signal_values.is_none()
    }

    /// The command trigger exited 0 (its JSON object output gives `values`).
    pub fn command_succeeded(&mut self, values: IndexMap<String, serde_json::Value>) {
        self.command_values = Some(values);
    }

    /// Whether the command is still to succeed.
    pub fn awaits_command(&self) -> bool {
        self.command && self.command_values.is_none()
    }

    /// Checks the triggers at monotonic time `now` and wall-clock time `wall`.
    pub fn check(&mut self, now: Instant, wall: Timestamp, probe: &mut dyn Probe) -> Poll {
        let mut missing: Vec<String> = vec![];
        let mut wake = now + self.poll;
        if let Some(at) = self.not_before
            && wall < at
        {
            missing.push(format!("the clock to reach {}", at.strftime("%Y-%m-%dT%H:%M:%SZ")));
            let left = wall.duration_until(at).unsigned_abs();
            wake = wake.min(now + left);
        }
        let mut matched = vec![];
        let wall_ns = wall.as_nanosecond();
        // A file is unchanged since its mtime: one last written long enough ago counts at
        // once, without waiting `settle` after twinflow first sees it.
        let since_mtime = |mtime: i128| {
            let age = u64::try_from((wall_ns - mtime).max(0)).unwrap_or(u64::MAX);
            now.checked_sub(Duration::from_nanos(age).min(self.settle)).unwrap_or(now)
        };
        for pattern in &self.files {
            let found = probe.files(pattern);
            let mut ok = false;
            for (path, size, mtime) in found {
                if size < self.min_size {
                    continue;
                }
                let entry = self.seen.entry(path.clone()).or_insert_with(|| (size, mtime, since_mtime(mtime)));
                if entry.0 != size || entry.1 != mtime {
                    *entry = (size, mtime, since_mtime(mtime));
                }
                let stable_for = now.saturating_duration_since(entry.2);
                if stable_for >= self.settle {
                    matched.push(path);
                    ok = true;
                } else {
                    wake = wake.min(entry.2 + self.settle);
                }
            }
            if !ok {
                missing.push(if self.settle.is_zero() {
                    format!("`{pattern}`")
                } else {
                    format!("`{pattern}` (unchanged for {})", crate::units::format_duration(self.settle))
                });
            }
        }
        if self.awaits_signal() {
            missing.push(format!("signal `{}`", self.signal.as_deref().unwrap_or_default()));
        }
        if self.awaits_command() {
            missing.push("its command to succeed".into());
        }
        if missing.is_empty() {
            let mut values = self.command_values.clone().unwrap_or_default();
            values.extend(self.signal_values.clone().unwrap_or_default());
            return Poll::Ready(GateValues { files: matched, values });
        }
        if let Some(d) = self.deadline {
            if now >= d {
                return Poll::TimedOut {
                    message: format!("timed out waiting for {}", missing.join(", ")),
                    skip: self.on_timeout == OnTimeout::Skip,
                };
            }
            wake = wake.min(d);
        }
        self.next_check = wake;
        Poll::Wait(wake)
    }

    /// What the watch still waits for, for `status` (without checking again: a signal or
    /// command already satisfied is left out).
    pub fn describe(&self) -> String {
        let mut parts = vec![];
        if let Some(at) = self.not_before {
            parts.push(format!("clock {}", at.strftime("%Y-%m-%dT%H:%M:%SZ")));
        }
        for f in &self.files {
            parts.push(format!("file {f}"));
        }
        if let Some(s) = self.signal.as_ref().filter(|_| self.awaits_signal()) {
            parts.push(format!("signal {s}"));
        }
        if self.awaits_command() {
            parts.push("command".into());
        }
        parts.join(", ")
    }
}

/// Runs a `command` trigger once: `Some(values)` when it exits 0 (a JSON object on its
/// standard output gives the values), `None` when it fails, cannot start, or runs longer
/// than `limit` (then it is killed).
pub async fn run_command(
    argv: &[String],
    cwd: &std::path::Path,
    limit: Duration,
) -> Option<IndexMap<String, serde_json::Value>> {
    let (prog, args) = argv.split_first()?;
    let child = tokio::process::Command::new(prog)
        .args(args)
        .current_dir(cwd)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn();
    let child = match child {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(command = %prog, "trigger command cannot start: {e}");
            return None;
        }
    };
    let out = tokio::time::timeout(limit.max(Duration::from_secs(10)), child.wait_with_output()).await.ok()?.ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    Some(match serde_json::from_str::<serde_json::Value>(text.trim()) {
        Ok(serde_json::Value::Object(map)) => map.into_iter().collect(),
        _ => IndexMap::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::clock::{Clock, VirtualClock};

    /// Files whose size and mtime the test sets.
    #[derive(Default)]
    struct FakeFs(HashMap<String, (u64, i128)>);

    impl Probe for FakeFs {
        fn files(&mut self, pattern: &str) -> Vec<(String, u64, i128)> {
            let prefix = pattern.trim_end_matches('*');
            let mut v: Vec<_> = self
                .0
                .iter()
                .filter(|(p, _)| if pattern.ends_with('*') { p.starts_with(prefix) } else { *p == pattern })
                .map(|(p, (s, m))| (p.clone(), *s, *m))
                .collect();
            v.sort();
            v
        }
    }

    fn at(c: &VirtualClock) -> Timestamp {
        Timestamp::UNIX_EPOCH + jiff::SignedDuration::try_from(c.elapsed()).unwrap()
    }

    fn watch(c: &VirtualClock, files: &[&str], settle: u64, timeout: Option<u64>, on: OnTimeout) -> Watch {
        Watch::new(
            c.now(),
            None,
            files.iter().map(|s| s.to_string()).collect(),
            Duration::from_secs(settle),
            1,
            Duration::from_secs(1),
            timeout.map(Duration::from_secs),
            on,
        )
    }

    #[test]
    fn a_file_counts_only_after_it_has_been_unchanged_for_the_settle_time() {
        let c = VirtualClock::new();
        let mut fs = FakeFs::default();
        let mut w = watch(&c, &["/obs/a.nc"], 10, None, OnTimeout::Fail);
        let written_now = |c: &VirtualClock| c.elapsed().as_nanos() as i128;
        assert!(matches!(w.check(c.now(), at(&c), &mut fs), Poll::Wait(_)));
        c.advance(Duration::from_secs(1));
        fs.0.insert("/obs/a.nc".into(), (100, written_now(&c)));
        // Just written: it must stay so for 10 s, and is looked at again after the poll
        // interval to see whether it changes.
        let Poll::Wait(next) = w.check(c.now(), at(&c), &mut fs) else { panic!() };
        assert_eq!(c.since_zero(next), Duration::from_secs(2));
        // Still being written at t=5: the settle time starts again.
        c.advance(Duration::from_secs(4));
        fs.0.insert("/obs/a.nc".into(), (200, written_now(&c)));
        assert!(matches!(w.check(c.now(), at(&c), &mut fs), Poll::Wait(_)));
        c.advance(Duration::from_secs(9));
        assert!(matches!(w.check(c.now(), at(&c), &mut fs), Poll::Wait(_)), "t=14: only 9 s unchanged");
        c.advance(Duration::from_secs(1));
        assert_eq!(
            w.check(c.now(), at(&c), &mut fs),
            Poll::Ready(GateValues { files: vec!["/obs/a.nc".into()], values: IndexMap::new() })
        );
    }

    #[test]
    fn a_file_last_written_longer_ago_than_the_settle_time_counts_at_once() {
        let c = VirtualClock::new();
        c.advance(Duration::from_secs(100));
        let mut fs = FakeFs::default();
        fs.0.insert("/obs/old.nc".into(), (100, 50_000_000_000));
        let mut w = watch(&c, &["/obs/old.nc"], 10, None, OnTimeout::Fail);
        assert!(matches!(w.check(c.now(), at(&c), &mut fs), Poll::Ready(_)), "written 50 s ago, settle 10 s");
    }

    #[test]
    fn an_empty_file_does_not_count_below_the_minimum_size() {
        let c = VirtualClock::new();
        let mut fs = FakeFs::default();
        fs.0.insert("/obs/a.nc".into(), (0, 1));
        let mut w = watch(&c, &["/obs/a.nc"], 0, None, OnTimeout::Fail);
        assert!(matches!(w.check(c.now(), at(&c), &mut fs), Poll::Wait(_)));
        fs.0.insert("/obs/a.nc".into(), (5, 2));
        assert!(matches!(w.check(c.now(), at(&c), &mut fs), Poll::Ready(_)));
    }

    #[test]
    fn a_glob_is_satisfied_by_any_settled_match_and_lists_them_all() {
        let c = VirtualClock::new();
        let mut fs = FakeFs::default();
        fs.0.insert("/obs/g-2.nc".into(), (5, 1));
        fs.0.insert("/obs/g-1.nc".into(), (5, 1));
        let mut w = watch(&c, &["/obs/g-*"], 0, None, OnTimeout::Fail);
        let Poll::Ready(v) = w.check(c.now(), at(&c), &mut fs) else { panic!() };
        assert_eq!(v.files, ["/obs/g-1.nc", "/obs/g-2.nc"]);
    }

    #[test]
    fn the_clock_trigger_wakes_exactly_when_due() {
        let c = VirtualClock::new();
        let mut fs = FakeFs::default();
        let mut w = watch(&c, &[], 0, None, OnTimeout::Fail);
        w.not_before = Some(Timestamp::UNIX_EPOCH + jiff::SignedDuration::from_millis(300));
        w.poll = Duration::from_secs(60);
        let Poll::Wait(next) = w.check(c.now(), at(&c), &mut fs) else { panic!() };
        assert_eq!(c.since_zero(next), Duration::from_millis(300));
        c.advance_to(next);
        assert!(matches!(w.check(c.now(), at(&c), &mut fs), Poll::Ready(_)));
    }

    #[test]
    fn a_timeout_fails_or_skips_and_says_what_was_missing() {
        for (on, skip) in [(OnTimeout::Fail, false), (OnTimeout::Skip, true)] {
            let c = VirtualClock::new();
            let mut fs = FakeFs::default();
            let mut w = watch(&c, &["/obs/late.nc"], 0, Some(30), on);
            let mut checks = 0;
            let poll = loop {
                checks += 1;
                match w.check(c.now(), at(&c), &mut fs) {
                    Poll::Wait(next) => c.advance_to(next),
                    other => break other,
                }
            };
            assert_eq!(c.elapsed(), Duration::from_secs(30));
            assert_eq!(checks, 31, "one check per poll interval, the last at the deadline");
            assert_eq!(poll, Poll::TimedOut { message: "timed out waiting for `/obs/late.nc`".into(), skip });
        }
    }

    #[test]
    fn signal_and_command_values_reach_the_task() {
        let c = VirtualClock::new();
        let mut fs = FakeFs::default();
        let mut w = watch(&c, &[], 0, None, OnTimeout::Fail);
        w.signal = Some("calibrated".into());
        w.command = true;
        assert!(matches!(w.check(c.now(), at(&c), &mut fs), Poll::Wait(_)));
        w.signal_received(IndexMap::from([("run".to_string(), serde_json::json!("42"))]));
        assert!(matches!(w.check(c.now(), at(&c), &mut fs), Poll::Wait(_)));
        w.command_succeeded(IndexMap::from([("n".to_string(), serde_json::json!(3))]));
        let Poll::Ready(v) = w.check(c.now(), at(&c), &mut fs) else { panic!() };
        assert_eq!(v.values["run"], "42");
        assert_eq!(v.values["n"], 3);
    }
}
