//! [`Store`]: the run database's reads and writes.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension, params};

use super::schema::{self, MigrationError};
use super::{AttemptRow, AttemptState, CacheEntry, RunRow, RunSettings, RunState, StateError, TaskRow, now_ms};
use crate::events::TaskState;
use crate::ids::EngineId;

const RUN_SELECT: &str =
    "SELECT id, workflow, file, settings, state, created_at, updated_at, engine_pid, engine_start FROM runs";

/// A row of [`RUN_SELECT`].
fn run_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RunRow> {
    let settings: String = r.get(3)?;
    Ok(RunRow {
        id: r.get(0)?,
        workflow: r.get(1)?,
        file: r.get(2)?,
        // One odd row (written by a later twinflow, or edited by hand) must not make every
        // run unreadable: keep what fits and say what was dropped.
        settings: match RunSettings::from_legacy(&settings) {
            (s, None) => s,
            (s, Some(note)) => {
                tracing::warn!(run = %r.get::<_, String>(0)?, "settings of the run only partly readable: {note}");
                s
            }
        },
        state: r.get(4)?,
        created_at: r.get(5)?,
        updated_at: r.get(6)?,
        engine_pid: r.get(7)?,
        engine_start: r.get::<_, Option<i64>>(8)?.map(|s| s as u64),
    })
}

/// Refuses a file that cannot be a SQLite database before SQLite sees it: shorter than
/// SQLite's 100-byte header, or without its magic string (zeroed, overwritten). An empty
/// file is a new database (one being created by another engine at this moment).
fn check_header(path: &Path) -> Result<(), StateError> {
    use std::io::Read;
    let damaged = |reason: String| StateError::Damaged { path: path.to_path_buf(), reason };
    let mut f = match std::fs::File::open(path) {
        Ok(f) => f,
        // Missing: created below. Unreadable: SQLite says why.
        Err(_) => return Ok(()),
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    if len == 0 {
        return Ok(());
    }
    let mut head = [0u8; 16];
    if len < 100 || f.read_exact(&mut head).is_err() {
        return Err(damaged(format!("{len} bytes, shorter than a SQLite header")));
    }
    if &head != b"SQLite format 3\0" {
        let what = if head.iter().all(|b| *b == 0) { "starts with zeros" } else { "starts with other bytes" };
        return Err(damaged(format!("no SQLite header: the file {what}")));
    }
    Ok(())
}

/// Creates `path` empty with mode 0600 unless it exists (SQLite would create it with 0644).
fn create_owner_only(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path) {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        r => r.map(drop),
    }
}

const CACHE_SELECT: &str = "SELECT cache_key, task, components, dir, outputs, run_id, at FROM cache_entries";

/// A row of [`CACHE_SELECT`].
fn cache_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<CacheEntry> {
    Ok(CacheEntry {
        key: r.get(0)?,
        task: r.get(1)?,
        components: r.get(2)?,
        dir: r.get(3)?,
        outputs: r.get(4)?,
        run_id: r.get(5)?,
        at: r.get(6)?,
    })
}

/// The run database.
pub struct Store {
    pub(super) conn: Connection,
    pub(super) path: PathBuf,
    in_tx: bool,
    /// A batch was begun ([`Store::begin`]).
    batch: bool,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

impl Store {
    /// Opens (creating if needed) `runs_dir/twinflow.db`, migrating it to the current
    /// schema version ([`schema::migrate`]). A database of a later version is refused
    /// ([`StateError::TooNew`]).
    pub fn open(runs_dir: &Path) -> Result<Self, StateError> {
        Self::open_file(runs_dir.join("twinflow.db"))
    }

    /// Opens (creating if needed) the database file `path`, as [`Store::open`].
    ///
    /// A new file is created readable and writable by its owner only (SQLite gives its
    /// `-wal` and `-shm` files the same mode): it records the command lines, parameters and
    /// paths of every run. A file that is not a SQLite database, or that SQLite finds
    /// damaged, is refused as it is ([`StateError::Damaged`]), never rewritten.
    pub fn open_file(path: PathBuf) -> Result<Self, StateError> {
        check_header(&path)?;
        create_owner_only(&path).map_err(|source| StateError::Create { path: path.clone(), source })?;
        let err = |source| StateError::sqlite(path.clone(), source);
        let mut conn = Connection::open(&path).map_err(err)?;
        conn.busy_timeout(super::BUSY_TIMEOUT).map_err(err)?;
        conn.execute_batch("PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON;")
            .map_err(err)?;
        match schema::migrate(&mut conn) {
            Ok(_) => {}
            Err(MigrationError::Sqlite(source)) => return Err(StateError::sqlite(path, source)),
            Err(MigrationError::TooNew(found)) => {
                return Err(StateError::TooNew { path, found, supported: schema::VERSION });
            }
        }
        Ok(Self { conn, path, in_tx: false, batch: false })
    }

    pub(super) fn e(&self) -> impl Fn(rusqlite::Error) -> StateError + '_ {
        |source| StateError::sqlite(self.path.clone(), source)
    }

    /// Starts a write batch: the writes until [`Store::commit`] are one transaction. The
    /// transaction (and SQLite's write lock) is taken at the first write, not here, so an
    /// engine that waits with nothing to write never keeps `twinflow signal`, `stop` or
    /// another engine from writing.
    pub fn begin(&mut self) -> Result<(), StateError> {
        self.batch = true;
        Ok(())
    }

    /// Opens the batch's transaction before a write, if a batch was begun and its
    /// transaction is not open yet.
    pub(super) fn tx(&mut self) -> Result<(), StateError> {
        if self.batch && !self.in_tx {
            self.conn.execute_batch("BEGIN IMMEDIATE").map_err(self.e())?;
            self.in_tx = true;
        }
        Ok(())
    }

    /// Commits the batch's writes, if any, and ends the batch.
    pub fn commit(&mut self) -> Result<(), StateError> {
        if self.in_tx {
            self.conn.execute_batch("COMMIT").map_err(self.e())?;
            self.in_tx = false;
        }
        self.batch = false;
        Ok(())
    }

    /// Records a new run, worked on by this process.
    pub fn create_run(
        &mut self,
        id: &str,
        workflow: &str,
        file: &str,
        settings: &RunSettings,
    ) -> Result<(), StateError> {
        self.tx()?;
        let now = now_ms();
        let engine = EngineId::current();
        self.conn
            .execute(
                "INSERT INTO runs(id, workflow, file, settings, state, created_at, updated_at, engine_pid, engine_start) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6, ?7, ?8)",
                params![
                    id,
                    workflow,
                    file,
                    settings.to_json(),
                    RunState::Running,
                    now,
                    std::process::id(),
                    engine.map(|e| e.start as i64)
                ],
            )
            .map_err(self.e())?;
        Ok(())
    }

    /// Sets a run's state; this process becomes the engine that last worked on it.
    pub fn set_run_state(&mut self, id: &str, state: RunState) -> Result<(), StateError> {
        self.tx()?;
        self.conn
            .execute(
                "UPDATE runs SET state = ?2, updated_at = ?3, engine_pid = ?4, engine_start = ?5 WHERE id = ?1",
                params![id, state, now_ms(), std::process::id(), EngineId::current().map(|e| e.start as i64)],
            )
            .map_err(self.e())?;
        Ok(())
    }

    /// Makes this process the engine of run `id` (state `running`) unless another engine
    /// that still lives is, whose pid is returned. One transaction under the write lock, so
    /// of two engines resuming one run at once exactly one gets it.
    pub fn claim_run(&mut self, id: &str) -> Result<Option<u32>, StateError> {
        debug_assert!(!self.in_tx, "claim_run inside a batch");
        self.conn.execute_batch("BEGIN IMMEDIATE").map_err(self.e())?;
        let claimed = self.run(Some(id)).and_then(|row| match row.live_engine() {
            Some(pid) => Ok(Some(pid)),
            None => self.set_run_state(id, RunState::Running).map(|()| None),
        });
        let end = if matches!(claimed, Ok(None)) { "COMMIT" } else { "ROLLBACK" };
        self.conn.execute_batch(end).map_err(self.e())?;
        claimed
    }

    /// Replaces a run's recorded settings, e.g. when a resumed run gets a new SLURM
    /// allocation.
    pub fn set_run_settings(&mut self, id: &str, settings: &RunSettings) -> Result<(), StateError> {
        self.tx()?;
        self.conn
            .execute(
                "UPDATE runs SET settings = ?2, updated_at = ?3 WHERE id = ?1",
                params![id, settings.to_json(), now_ms()],
            )
            .map_err(self.e())?;
        Ok(())
    }

    /// A run by id, or the latest when `id` is `None`.
    pub fn run(&self, id: Option<&str>) -> Result<RunRow, StateError> {
        let res = match id {
            Some(id) => self.conn.query_row(&format!("{RUN_SELECT} WHERE id = ?1"), [id], run_row).optional(),
            None => self
                .conn
                .query_row(&format!("{RUN_SELECT} ORDER BY created_at DESC, id DESC LIMIT 1"), [], run_row)
                .optional(),
        };
        res.map_err(self.e())?.ok_or_else(|| StateError::NoSuchRun(id.unwrap_or("(latest)").to_string()))
    }

    /// All runs, newest first.
    pub fn runs(&self) -> Result<Vec<RunRow>, StateError> {
        let mut st = self.conn.prepare(&format!("{RUN_SELECT} ORDER BY created_at DESC, id DESC")).map_err(self.e())?;
        let rows = st.query_map([], run_row).map_err(self.e())?.collect::<Result<Vec<_>, _>>().map_err(self.e())?;
        Ok(rows)
    }

    /// The tasks of every run by state (for the run list): the task rows, and the counts
    /// the summaries of pruned cycles keep for the task rows they replaced.
    pub fn task_counts(&self) -> Result<std::collections::HashMap<String, crate::events::Counts>, StateError> {
        let mut out: std::collections::HashMap<String, crate::events::Counts> = Default::default();
        let mut st =
            self.conn.prepare("SELECT run_id, state, COUNT(*) FROM tasks GROUP BY run_id, state").map_err(self.e())?;
        let rows = st
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, TaskState>(1)?, r.get::<_, i64>(2)?)))
            .map_err(self.e())?;
        for row in rows {
            let (run, state, n) = row.map_err(self.e())?;
            out.entry(run).or_default().add_many(state, usize::try_from(n).unwrap_or(0));
        }
        let mut st = self.conn.prepare("SELECT run_id, counts FROM cycles WHERE pruned = 1").map_err(self.e())?;
        let rows =
            st.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, Option<String>>(1)?))).map_err(self.e())?;
        for row in rows {
            let (run, counts) = row.map_err(self.e())?;
            if let Some(c) = counts.and_then(|c| serde_json::from_str(&c).ok()) {
                out.entry(run).or_default().merge(&c);
            }
        }
        Ok(out)
    }

    /// Inserts task rows in state `pending` unless they exist.
    pub fn ensure_tasks<'a>(
        &mut self,
        run_id: &str,
        tasks: impl Iterator<Item = (&'a str, &'a str, Option<u32>, Option<&'a str>)>,
    ) -> Result<(), StateError> {
        self.tx()?;
        let mut st = self
            .conn
            .prepare_cached(
                "INSERT OR IGNORE INTO tasks(run_id, task, step, member, state, label) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )
            .map_err(|source| StateError::Sqlite { path: self.path.clone(), source })?;
        for (task, step, member, label) in tasks {
            st.execute(params![run_id, task, step, member, TaskState::Pending, label])
                .map_err(|source| StateError::Sqlite { path: self.path.clone(), source })?;
        }
        Ok(())
    }

    /// All task rows of a run.
    pub fn tasks(&self, run_id: &str) -> Result<Vec<TaskRow>, StateError> {
        let mut st = self
            .conn
            .prepare(
                "SELECT task, step, state, attempts, cache_key, dir, outputs, job_id, message, started_at, finished_at, cycle, gate, member, label FROM tasks WHERE run_id = ?1 ORDER BY rowid",
            )
            .map_err(self.e())?;
        let rows = st
            .query_map([run_id], |r| {
                Ok(TaskRow {
                    task: r.get(0)?,
                    step: r.get(1)?,
                    state: r.get(2)?,
                    attempts: r.get(3)?,
                    cache_key: r.get(4)?,
                    dir: r.get(5)?,
                    outputs: r.get(6)?,
                    job_id: r.get(7)?,
                    message: r.get(8)?,
                    started_at: r.get(9)?,
                    finished_at: r.get(10)?,
                    cycle: r.get::<_, Option<i64>>(11)?.map(|c| c as u64),
                    gate: r.get(12)?,
                    member: r.get(13)?,
                    label: r.get(14)?,
                })
            })
            .map_err(self.e())?
            .collect::<Result<Vec<_>, _>>()
            .map_err(self.e())?;
        Ok(rows)
    }

    /// How long each task of a run has run, in milliseconds: the sum over its attempts that
    /// ended (not the time since its first start, which would count retry waits and the time
    /// a killed engine was down).
    pub fn run_times(&self, run_id: &str) -> Result<std::collections::HashMap<String, i64>, StateError> {
        let mut st = self
            .conn
            .prepare(
                "SELECT task, SUM(finished_at - started_at) FROM attempts WHERE run_id = ?1 AND finished_at IS NOT NULL AND started_at IS NOT NULL GROUP BY task",
            )
            .map_err(self.e())?;
        let rows = st
            .query_map([run_id], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
            .map_err(self.e())?
            .collect::<Result<std::collections::HashMap<_, _>, _>>()
            .map_err(self.e())?;
        Ok(rows)
    }

    /// Records that an attempt started.
    pub fn attempt_started(&mut self, run_id: &str, task: &str, attempt: u32, job_id: &str) -> Result<(), StateError> {
        self.tx()?;
        let now = now_ms();
        self.conn
            .prepare_cached("UPDATE tasks SET state = ?6, attempts = ?3, job_id = ?4, started_at = COALESCE(started_at, ?5) WHERE run_id = ?1 AND task = ?2")
            .and_then(|mut s| s.execute(params![run_id, task, attempt, job_id, now, TaskState::Running]))
            .map_err(self.e())?;
        self.conn
            .prepare_cached("INSERT OR REPLACE INTO attempts(run_id, task, attempt, job_id, state, started_at) VALUES (?1, ?2, ?3, ?4, ?6, ?5)")
            .and_then(|mut s| s.execute(params![run_id, task, attempt, job_id, now, AttemptState::Running]))
            .map_err(self.e())?;
        self.transition(run_id, task, TaskState::Running, Some(job_id))
    }

    /// Records how an attempt ended.
    pub fn attempt_finished(
        &mut self,
        run_id: &str,
        task: &str,
        attempt: u32,
        ok: bool,
        exit_code: Option<i32>,
        detail: &str,
    ) -> Result<(), StateError> {
        self.tx()?;
        self.conn
            .prepare_cached("UPDATE attempts SET state = ?4, exit_code = ?5, detail = ?6, finished_at = ?7 WHERE run_id = ?1 AND task = ?2 AND attempt = ?3")
            .and_then(|mut s| s.execute(params![run_id, task, attempt, if ok { AttemptState::Succeeded } else { AttemptState::Failed }, exit_code, detail, now_ms()]))
            .map_err(self.e())?;
        Ok(())
    }

    /// Records what an attempt used (CPU times in ms, peak RSS in bytes; `None` where not
    /// measured).
    pub fn attempt_usage(
        &mut self,
        run_id: &str,
        task: &str,
        attempt: u32,
        usage: [Option<i64>; 4],
    ) -> Result<(), StateError> {
        self.tx()?;
        let [user, system, cpu, rss] = usage;
        self.conn
            .prepare_cached("UPDATE attempts SET cpu_user_ms = ?4, cpu_system_ms = ?5, cpu_ms = ?6, max_rss = ?7 WHERE run_id = ?1 AND task = ?2 AND attempt = ?3")
            .and_then(|mut s| s.execute(params![run_id, task, attempt, user, system, cpu, rss]))
            .map_err(self.e())?;
        Ok(())
    }

    /// Every attempt of a run (task name, attempt), in the order they started: what the
    /// run's report and its trace list.
    pub fn run_attempts(&self, run_id: &str) -> Result<Vec<(String, AttemptRow)>, StateError> {
        let mut st = self
            .conn
            .prepare("SELECT task, attempt, job_id, state, exit_code, detail, started_at, finished_at, cpu_user_ms, cpu_system_ms, cpu_ms, max_rss FROM attempts WHERE run_id = ?1 ORDER BY started_at, task, attempt")
            .map_err(self.e())?;
        let rows = st
            .query_map(params![run_id], |r| {
                Ok((
                    r.get(0)?,
                    AttemptRow {
                        attempt: r.get(1)?,
                        job_id: r.get(2)?,
                        state: r.get(3)?,
                        exit_code: r.get(4)?,
                        detail: r.get(5)?,
                        started_at: r.get(6)?,
                        finished_at: r.get(7)?,
                        cpu_user_ms: r.get(8)?,
                        cpu_system_ms: r.get(9)?,
                        cpu_ms: r.get(10)?,
                        max_rss: r.get(11)?,
                    },
                ))
            })
            .map_err(self.e())?
            .collect::<Result<Vec<_>, _>>()
            .map_err(self.e())?;
        Ok(rows)
    }

    /// Sets a task's final (or pending) state.
    #[allow(clippy::too_many_arguments)]
    pub fn finish_task(
        &mut self,
        run_id: &str,
        task: &str,
        state: TaskState,
        cache_key: Option<&str>,
        dir: Option<&str>,
        outputs: Option<&str>,
        message: Option<&str>,
    ) -> Result<(), StateError> {
        self.tx()?;
        self.conn
            .prepare_cached("UPDATE tasks SET state = ?3, cache_key = ?4, dir = ?5, outputs = ?6, message = ?7, finished_at = ?8 WHERE run_id = ?1 AND task = ?2")
            .and_then(|mut s| s.execute(params![run_id, task, state, cache_key, dir, outputs, message, now_ms()]))
            .map_err(self.e())?;
        self.transition(run_id, task, state, message)
    }

    /// Notes what a running service is doing (`ready`, restarting after an attempt ended)
    /// without changing its state, which stays `running` while it lives (a resumed run and
    /// `status` see a process that may be left over); once it is ready, with its result
    /// directory and values (what later cycles of a resumed run read).
    pub fn service_note(
        &mut self,
        run_id: &str,
        task: &str,
        dir: Option<&str>,
        outputs: Option<&str>,
        message: &str,
    ) -> Result<(), StateError> {
        self.tx()?;
        self.conn
            .prepare_cached("UPDATE tasks SET dir = COALESCE(?3, dir), outputs = COALESCE(?4, outputs), message = ?5 WHERE run_id = ?1 AND task = ?2")
            .and_then(|mut s| s.execute(params![run_id, task, dir, outputs, message]))
            .map_err(self.e())?;
        self.transition(run_id, task, TaskState::Running, Some(message))
    }

    /// Puts a task back to pending until its retry is due, saying why (`detail`).
    pub fn retry_later(&mut self, run_id: &str, task: &str, detail: &str) -> Result<(), StateError> {
        self.tx()?;
        self.conn
            .prepare_cached("UPDATE tasks SET state = ?3, job_id = NULL WHERE run_id = ?1 AND task = ?2")
            .and_then(|mut s| s.execute(params![run_id, task, TaskState::Pending]))
            .map_err(self.e())?;
        self.transition(run_id, task, TaskState::Pending, Some(detail))
    }

    /// Puts a task back to pending (retry after a crash).
    pub fn reset_task(&mut self, run_id: &str, task: &str) -> Result<(), StateError> {
        self.tx()?;
        self.conn
            .prepare_cached("UPDATE tasks SET state = ?3, job_id = NULL WHERE run_id = ?1 AND task = ?2")
            .and_then(|mut s| s.execute(params![run_id, task, TaskState::Pending]))
            .map_err(self.e())?;
        self.transition(run_id, task, TaskState::Pending, Some("reset on resume"))
    }

    fn transition(
        &mut self,
        run_id: &str,
        task: &str,
        state: TaskState,
        detail: Option<&str>,
    ) -> Result<(), StateError> {
        self.tx()?;
        self.conn
            .prepare_cached("INSERT INTO transitions(run_id, task, state, at, detail) VALUES (?1, ?2, ?3, ?4, ?5)")
            .and_then(|mut s| s.execute(params![run_id, task, state, now_ms(), detail]))
            .map_err(self.e())?;
        Ok(())
    }

    /// The latest cache entry produced by a task name of a workflow (what a cycle of a
    /// cycling run read from a finished cycle).
    pub fn cache_get(&self, workflow: &str, task: &str) -> Result<Option<CacheEntry>, StateError> {
        self.conn
            .prepare_cached(&format!(
                "{CACHE_SELECT} WHERE workflow = ?1 AND task = ?2 ORDER BY at DESC, rowid DESC LIMIT 1"
            ))
            .and_then(|mut s| s.query_row(params![workflow, task], cache_row).optional())
            .map_err(self.e())
    }

    /// Every entry with cache key `key` of step `step` (in cycle point `scope`, `""` when the
    /// workflow does not cycle), newest first.
    pub fn cache_find(
        &self,
        workflow: &str,
        step: &str,
        scope: &str,
        key: &str,
    ) -> Result<Vec<CacheEntry>, StateError> {
        self.conn
            .prepare_cached(&format!(
                "{CACHE_SELECT} WHERE workflow = ?1 AND step = ?2 AND scope = ?3 AND cache_key = ?4 ORDER BY at DESC, rowid DESC"
            ))
            .and_then(|mut s| {
                s.query_map(params![workflow, step, scope, key], cache_row)?.collect::<Result<Vec<_>, _>>()
            })
            .map_err(self.e())
    }

    /// Every entry of step `step` (in cycle point `scope`), newest first: what `twinflow why`
    /// compares a task with when none has its key.
    pub fn cache_of_step(&self, workflow: &str, step: &str, scope: &str) -> Result<Vec<CacheEntry>, StateError> {
        self.conn
            .prepare_cached(&format!(
                "{CACHE_SELECT} WHERE workflow = ?1 AND step = ?2 AND scope = ?3 ORDER BY at DESC, rowid DESC"
            ))
            .and_then(|mut s| s.query_map(params![workflow, step, scope], cache_row)?.collect::<Result<Vec<_>, _>>())
            .map_err(self.e())
    }

    /// Records a successful execution of a task of step `step` (in cycle point `scope`) in
    /// the cache; earlier entries stay.
    pub fn cache_put(&mut self, workflow: &str, step: &str, scope: &str, e: &CacheEntry) -> Result<(), StateError> {
        self.tx()?;
        self.conn
            .prepare_cached("INSERT OR REPLACE INTO cache_entries(workflow, step, scope, cache_key, task, components, dir, outputs, run_id, at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)")
            .and_then(|mut s| {
                s.execute(params![workflow, step, scope, e.key, e.task, e.components, e.dir, e.outputs, e.run_id, now_ms()])
            })
            .map_err(self.e())?;
        Ok(())
    }

    /// Directories of every cache entry (for `twinflow clean`).
    pub fn cache_dirs(&self) -> Result<Vec<(String, String)>, StateError> {
        let mut st = self.conn.prepare("SELECT run_id, dir FROM cache_entries").map_err(self.e())?;
        let rows = st
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(self.e())?
            .collect::<Result<Vec<_>, _>>()
            .map_err(self.e())?;
        Ok(rows)
    }

    /// Forgets run `id`: its row, tasks, attempts, transitions, cycles, signals, the cache
    /// entries whose result lies in `dir` (its run directory) and the remembered hashes of
    /// files there, in one transaction. Returns how
    /// many cache entries were dropped.
    pub fn delete_run(&mut self, id: &str, dir: &str) -> Result<usize, StateError> {
        let tx = self.conn.transaction().map_err(|source| StateError::Sqlite { path: self.path.clone(), source })?;
        let prefix = format!("{}/", dir.trim_end_matches('/'));
        let mut dropped = 0;
        let run = |tx: &rusqlite::Transaction<'_>, dropped: &mut usize| -> rusqlite::Result<()> {
            for t in ["tasks", "attempts", "transitions", "cycles", "signals"] {
                tx.execute(&format!("DELETE FROM {t} WHERE run_id = ?1"), [id])?;
            }
            *dropped = tx.execute(
                "DELETE FROM cache_entries WHERE run_id = ?1 OR substr(dir, 1, length(?2)) = ?2",
                params![id, prefix],
            )?;
            // Remembered hashes of files that go with the directory.
            tx.execute("DELETE FROM files WHERE substr(path, 1, length(?1)) = ?1", [&prefix])?;
            tx.execute("DELETE FROM runs WHERE id = ?1", [id])?;
            Ok(())
        };
        run(&tx, &mut dropped).map_err(|source| StateError::Sqlite { path: self.path.clone(), source })?;
        tx.commit().map_err(|source| StateError::Sqlite { path: self.path.clone(), source })?;
        Ok(dropped)
    }

    /// A remembered content hash for a file with this size and mtime.
    pub fn file_hash(&self, path: &str, size: u64, mtime_ns: i64) -> Result<Option<String>, StateError> {
        self.conn
            .prepare_cached("SELECT hash FROM files WHERE path = ?1 AND size = ?2 AND mtime_ns = ?3")
            .and_then(|mut s| s.query_row(params![path, size as i64, mtime_ns], |r| r.get(0)).optional())
            .map_err(self.e())
    }

    /// Remembers a file's content hash.
    pub fn put_file_hash(&mut self, path: &str, size: u64, mtime_ns: i64, hash: &str) -> Result<(), StateError> {
        self.tx()?;
        self.conn
            .prepare_cached("INSERT OR REPLACE INTO files(path, size, mtime_ns, hash) VALUES (?1, ?2, ?3, ?4)")
            .and_then(|mut s| s.execute(params![path, size as i64, mtime_ns, hash]))
            .map_err(self.e())?;
        Ok(())
    }

    /// Attempts of a task, oldest first.
    pub fn attempts(&self, run_id: &str, task: &str) -> Result<Vec<AttemptRow>, StateError> {
        let mut st = self
            .conn
            .prepare("SELECT attempt, job_id, state, exit_code, detail, started_at, finished_at, cpu_user_ms, cpu_system_ms, cpu_ms, max_rss FROM attempts WHERE run_id = ?1 AND task = ?2 ORDER BY attempt")
            .map_err(self.e())?;
        let rows = st
            .query_map(params![run_id, task], |r| {
                Ok(AttemptRow {
                    attempt: r.get(0)?,
                    job_id: r.get(1)?,
                    state: r.get(2)?,
                    exit_code: r.get(3)?,
                    detail: r.get(4)?,
                    started_at: r.get(5)?,
                    finished_at: r.get(6)?,
                    cpu_user_ms: r.get(7)?,
                    cpu_system_ms: r.get(8)?,
                    cpu_ms: r.get(9)?,
                    max_rss: r.get(10)?,
                })
            })
            .map_err(self.e())?
            .collect::<Result<Vec<_>, _>>()
            .map_err(self.e())?;
        Ok(rows)
    }
}
