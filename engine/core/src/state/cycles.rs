//! Cycles of cycling runs, their compaction, `twinflow stop` and `twinflow signal`.
//!
//! A cycle's row is written when it is activated and when it ends; it outlives its tasks:
//! [`Store::compact_cycle`] deletes the task, attempt, transition, cache and signal rows of
//! a cycle whose directories were pruned and keeps its counts, merged into the row of the
//! run of pruned cycles just before it when both succeeded. The database of a run that
//! cycles for weeks stays the size of its last `keep` cycles, plus one row for all the
//! pruned cycles before them (and one per cycle that failed).

use rusqlite::{OptionalExtension, params};

use super::{StateError, Store, now_ms};
use crate::events::{Counts, TaskState};

/// Where a cycle is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CycleState {
    /// Activated: its tasks exist.
    Active,
    /// Every task succeeded, was cached or skipped.
    Succeeded,
    /// A task failed (the cycle holds the run until it is resumed).
    Failed,
    /// The run was cancelled while the cycle was active.
    Cancelled,
    /// The run ended (stopped, or after a failure elsewhere) before the cycle finished;
    /// `--resume` goes on with it.
    Stopped,
}

impl CycleState {
    /// Name as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            CycleState::Active => "active",
            CycleState::Succeeded => "succeeded",
            CycleState::Failed => "failed",
            CycleState::Cancelled => "cancelled",
            CycleState::Stopped => "stopped",
        }
    }
    fn parse(s: &str) -> Self {
        match s {
            "succeeded" => CycleState::Succeeded,
            "failed" => CycleState::Failed,
            "cancelled" => CycleState::Cancelled,
            "stopped" => CycleState::Stopped,
            _ => CycleState::Active,
        }
    }
}

/// One cycle of a run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CycleRow {
    /// Index from 0.
    pub cycle: u64,
    /// Point label (`7`, `20260301T0000Z`).
    pub point: String,
    /// State.
    pub state: CycleState,
    /// Activated at (ms).
    pub started_at: Option<i64>,
    /// Ended at (ms).
    pub finished_at: Option<i64>,
    /// Its tasks by state, once it ended.
    pub counts: Option<Counts>,
    /// What its gated tasks wait for (while active).
    pub waits: Option<String>,
    /// Its directories were pruned and its task rows compacted into this row.
    pub pruned: bool,
    /// A row of pruned cycles `cycle..=last_cycle`, with their counts summed.
    pub last_cycle: Option<u64>,
    /// The point of `last_cycle`.
    pub last_point: Option<String>,
}

impl CycleRow {
    /// Cycles this row stands for (more than one for a range of pruned cycles).
    pub fn count(&self) -> u64 {
        self.last_cycle.map_or(1, |l| l.saturating_sub(self.cycle) + 1)
    }
    /// The last cycle this row stands for.
    pub fn end(&self) -> u64 {
        self.last_cycle.unwrap_or(self.cycle)
    }
}

/// A `twinflow signal`.
#[derive(Debug, Clone, PartialEq)]
pub struct SignalRow {
    /// Order of arrival.
    pub id: i64,
    /// Its name.
    pub name: String,
    /// The point (label) of the cycle it is for (`None`: the earliest cycle waiting for it).
    pub point: Option<String>,
    /// Its values, a JSON object.
    pub values: String,
    /// The cycle that took it.
    pub used_by: Option<u64>,
}

impl Store {
    /// Records that cycle `cycle` (point `point`) is active; keeps its first start time.
    pub fn cycle_started(&mut self, run_id: &str, cycle: u64, point: &str) -> Result<(), StateError> {
        self.tx()?;
        self.conn
            .prepare_cached(
                "INSERT INTO cycles(run_id, cycle, point, state, started_at) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT(run_id, cycle) DO UPDATE SET state = excluded.state, finished_at = NULL",
            )
            .and_then(|mut st| st.execute(params![run_id, cycle as i64, point, CycleState::Active.as_str(), now_ms()]))
            .map_err(self.e())?;
        Ok(())
    }

    /// Records how cycle `cycle` ended.
    pub fn cycle_ended(
        &mut self,
        run_id: &str,
        cycle: u64,
        state: CycleState,
        counts: Option<&Counts>,
    ) -> Result<(), StateError> {
        self.tx()?;
        let counts = counts.map(|c| serde_json::to_string(c).unwrap_or_default());
        self.conn
            .prepare_cached(
                "UPDATE cycles SET state = ?3, finished_at = ?4, counts = COALESCE(?5, counts), waits = NULL WHERE run_id = ?1 AND cycle = ?2",
            )
            .and_then(|mut st| st.execute(params![run_id, cycle as i64, state.as_str(), now_ms(), counts]))
            .map_err(self.e())?;
        Ok(())
    }

    /// Records what the gated tasks of an active cycle wait for (`None`: nothing).
    pub fn set_cycle_waits(&mut self, run_id: &str, cycle: u64, waits: Option<&str>) -> Result<(), StateError> {
        self.tx()?;
        self.conn
            .prepare_cached("UPDATE cycles SET waits = ?3 WHERE run_id = ?1 AND cycle = ?2")
            .and_then(|mut st| st.execute(params![run_id, cycle as i64, waits]))
            .map_err(self.e())?;
        Ok(())
    }

    /// Every cycle of a run, in order.
    pub fn cycles(&self, run_id: &str) -> Result<Vec<CycleRow>, StateError> {
        let mut st = self
            .conn
            .prepare(
                "SELECT cycle, point, state, started_at, finished_at, counts, waits, pruned, last_cycle, last_point FROM cycles WHERE run_id = ?1 ORDER BY cycle",
            )
            .map_err(self.e())?;
        let rows = st
            .query_map([run_id], |r| {
                let counts: Option<String> = r.get(5)?;
                Ok(CycleRow {
                    cycle: r.get::<_, i64>(0)? as u64,
                    point: r.get(1)?,
                    state: CycleState::parse(&r.get::<_, String>(2)?),
                    started_at: r.get(3)?,
                    finished_at: r.get(4)?,
                    counts: counts.and_then(|c| serde_json::from_str(&c).ok()),
                    waits: r.get(6)?,
                    pruned: r.get::<_, i64>(7)? != 0,
                    last_cycle: r.get::<_, Option<i64>>(8)?.map(|c| c as u64),
                    last_point: r.get(9)?,
                })
            })
            .map_err(self.e())?
            .collect::<Result<Vec<_>, _>>()
            .map_err(self.e())?;
        Ok(rows)
    }

    /// Inserts the task rows of cycle `cycle` in state `pending` unless they exist.
    pub fn ensure_cycle_tasks<'a>(
        &mut self,
        run_id: &str,
        cycle: u64,
        tasks: impl Iterator<Item = (&'a str, &'a str, Option<u32>, Option<&'a str>)>,
    ) -> Result<(), StateError> {
        self.tx()?;
        let mut st = self
            .conn
            .prepare_cached(
                "INSERT OR IGNORE INTO tasks(run_id, task, step, member, state, cycle, label) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )
            .map_err(self.e())?;
        for (task, step, member, label) in tasks {
            st.execute(params![run_id, task, step, member, TaskState::Pending, cycle as i64, label])
                .map_err(|source| StateError::Sqlite { path: self.path.clone(), source })?;
        }
        Ok(())
    }

    /// Deletes the task, attempt, transition, cache and signal rows of cycle `cycle` and
    /// marks it pruned; when it succeeded and the cycle before it is a pruned cycle (or
    /// range) that succeeded too, its row is merged into that one (counts summed).
    pub fn compact_cycle(&mut self, run_id: &str, cycle: u64) -> Result<(), StateError> {
        self.tx()?;
        let c = cycle as i64;
        for sql in [
            "DELETE FROM attempts WHERE run_id = ?1 AND task IN (SELECT task FROM tasks WHERE run_id = ?1 AND cycle = ?2)",
            "DELETE FROM transitions WHERE run_id = ?1 AND task IN (SELECT task FROM tasks WHERE run_id = ?1 AND cycle = ?2)",
            "DELETE FROM cache_entries WHERE run_id = ?1 AND task IN (SELECT task FROM tasks WHERE run_id = ?1 AND cycle = ?2)",
            "DELETE FROM tasks WHERE run_id = ?1 AND cycle = ?2",
            "DELETE FROM signals WHERE run_id = ?1 AND used_by = ?2",
            "UPDATE cycles SET pruned = 1 WHERE run_id = ?1 AND cycle = ?2",
        ] {
            self.conn.prepare_cached(sql).and_then(|mut st| st.execute(params![run_id, c])).map_err(self.e())?;
        }
        let this: Option<(String, String, Option<i64>, Option<String>)> = self
            .conn
            .prepare_cached("SELECT state, point, finished_at, counts FROM cycles WHERE run_id = ?1 AND cycle = ?2")
            .and_then(|mut st| {
                st.query_row(params![run_id, c], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))).optional()
            })
            .map_err(self.e())?;
        let Some((state, point, finished, counts)) = this else { return Ok(()) };
        if state != CycleState::Succeeded.as_str() {
            return Ok(());
        }
        let before: Option<(i64, Option<String>)> = self
            .conn
            .prepare_cached(
                "SELECT cycle, counts FROM cycles WHERE run_id = ?1 AND pruned = 1 AND state = 'succeeded' AND COALESCE(last_cycle, cycle) = ?2 - 1",
            )
            .and_then(|mut st| st.query_row(params![run_id, c], |r| Ok((r.get(0)?, r.get(1)?))).optional())
            .map_err(self.e())?;
        let Some((first, range_counts)) = before else { return Ok(()) };
        let parse = |t: Option<String>| t.and_then(|t| serde_json::from_str::<Counts>(&t).ok()).unwrap_or_default();
        let mut sum = parse(range_counts);
        sum.merge(&parse(counts));
        let sum = serde_json::to_string(&sum).unwrap_or_default();
        self.conn
            .prepare_cached(
                "UPDATE cycles SET last_cycle = ?3, last_point = ?4, finished_at = ?5, counts = ?6 WHERE run_id = ?1 AND cycle = ?2",
            )
            .and_then(|mut st| st.execute(params![run_id, first, c, point, finished, sum]))
            .map_err(self.e())?;
        self.conn
            .prepare_cached("DELETE FROM cycles WHERE run_id = ?1 AND cycle = ?2")
            .and_then(|mut st| st.execute(params![run_id, c]))
            .map_err(self.e())?;
        Ok(())
    }

    /// Records what a task's trigger found (a JSON object): its triggers stay satisfied
    /// when the run is resumed.
    pub fn gate_opened(&mut self, run_id: &str, task: &str, values: &str) -> Result<(), StateError> {
        self.tx()?;
        self.conn
            .prepare_cached("UPDATE tasks SET gate = ?3 WHERE run_id = ?1 AND task = ?2")
            .and_then(|mut st| st.execute(params![run_id, task, values]))
            .map_err(self.e())?;
        Ok(())
    }

    /// Asks the engine of a run to stop after its active cycles (`twinflow stop`).
    pub fn request_stop(&mut self, run_id: &str, stop: bool) -> Result<(), StateError> {
        self.tx()?;
        self.conn
            .execute("UPDATE runs SET stop_requested = ?2 WHERE id = ?1", params![run_id, stop as i64])
            .map_err(self.e())?;
        Ok(())
    }

    /// Whether `twinflow stop` was asked for the run.
    pub fn stop_requested(&self, run_id: &str) -> Result<bool, StateError> {
        let v: Option<i64> = self
            .conn
            .prepare_cached("SELECT stop_requested FROM runs WHERE id = ?1")
            .and_then(|mut st| st.query_row([run_id], |r| r.get(0)).optional())
            .map_err(self.e())?;
        Ok(v.unwrap_or(0) != 0)
    }

    /// Stores a signal for a run; returns its id.
    pub fn put_signal(
        &mut self,
        run_id: &str,
        name: &str,
        point: Option<&str>,
        values: &str,
    ) -> Result<i64, StateError> {
        self.tx()?;
        self.conn
            .execute(
                "INSERT INTO signals(run_id, name, point, vals, at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![run_id, name, point, values, now_ms()],
            )
            .map_err(self.e())?;
        Ok(self.conn.last_insert_rowid())
    }

    /// Signals of a run, in order of arrival: those no cycle took yet (`unused`), or all
    /// (those of pruned cycles are deleted with them).
    pub fn signals(&self, run_id: &str, unused: bool) -> Result<Vec<SignalRow>, StateError> {
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT id, name, point, vals, used_by FROM signals WHERE run_id = ?1 AND (?2 = 0 OR used_by IS NULL) ORDER BY id",
            )
            .map_err(self.e())?;
        let rows = st
            .query_map(params![run_id, unused], |r| {
                Ok(SignalRow {
                    id: r.get(0)?,
                    name: r.get(1)?,
                    point: r.get(2)?,
                    values: r.get(3)?,
                    used_by: r.get::<_, Option<i64>>(4)?.map(|c| c as u64),
                })
            })
            .map_err(self.e())?
            .collect::<Result<Vec<_>, _>>()
            .map_err(self.e())?;
        Ok(rows)
    }

    /// Records that cycle `cycle` took signal `id`.
    pub fn use_signal(&mut self, id: i64, cycle: u64) -> Result<(), StateError> {
        self.tx()?;
        self.conn
            .prepare_cached("UPDATE signals SET used_by = ?2 WHERE id = ?1")
            .and_then(|mut st| st.execute(params![id, cycle as i64]))
            .map_err(self.e())?;
        Ok(())
    }
}
