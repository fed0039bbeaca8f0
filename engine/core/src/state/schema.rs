//! The run database's schema and its migrations.
//!
//! The version is SQLite's `PRAGMA user_version`. Databases written before versioning (up
//! to commit 779b96a) have version 0 and schema [`V1`]; a new file has version 0 and no
//! tables. Opening a database brings it to [`VERSION`] in one `BEGIN IMMEDIATE`
//! transaction (the version is re-read under the write lock, so two processes opening an
//! old database at once migrate it once). A database of a newer version is refused: its
//! meaning is unknown to this code, and writing to it could corrupt it for the code that
//! made it.
//!
//! | version | change |
//! |---------|--------|
//! | 1 | runs, tasks, attempts, transitions, cache, files ([`V1`]) |
//! | 2 | `runs.params` becomes `runs.settings`, one [`RunSettings`] JSON value (old rows are rewritten through it); `runs.engine_start`, the engine process's start time |
//! | 3 | cycling: `cycles` (one row per cycle of a run; pruned cycles that succeeded merge into one row for a range of cycles), `signals` (`twinflow signal`), `tasks.cycle` and `tasks.gate` (what its trigger found), `runs.stop_requested` (`twinflow stop`) |
//! | 4 | `tasks.label`: a member's scatter values (`seed=2 rain=40.0`), as people read them |
//! | 5 | content-addressed cache: `cache` (one row per task name, the last success) becomes `cache_entries`, one row per successful execution, found by (workflow, step, cycle point, cache key) ([`V5_CACHE`], [`to_v5_cache`]) |

use rusqlite::{Connection, Transaction, TransactionBehavior};

use super::settings::RunSettings;

/// The schema version this code reads and writes.
pub const VERSION: u32 = 5;

/// Schema version 1, exactly as the code before versioning created it (commit 779b96a).
pub const V1: &str = r#"
CREATE TABLE IF NOT EXISTS runs(
  id TEXT PRIMARY KEY, workflow TEXT NOT NULL, file TEXT NOT NULL, params TEXT NOT NULL,
  state TEXT NOT NULL, created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL, engine_pid INTEGER);
CREATE TABLE IF NOT EXISTS tasks(
  run_id TEXT NOT NULL, task TEXT NOT NULL, step TEXT NOT NULL, member INTEGER,
  state TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, cache_key TEXT, dir TEXT,
  outputs TEXT, job_id TEXT, message TEXT, started_at INTEGER, finished_at INTEGER,
  PRIMARY KEY(run_id, task));
CREATE TABLE IF NOT EXISTS attempts(
  run_id TEXT NOT NULL, task TEXT NOT NULL, attempt INTEGER NOT NULL, job_id TEXT,
  state TEXT NOT NULL, exit_code INTEGER, detail TEXT, started_at INTEGER, finished_at INTEGER,
  PRIMARY KEY(run_id, task, attempt));
CREATE TABLE IF NOT EXISTS transitions(
  run_id TEXT NOT NULL, task TEXT NOT NULL, state TEXT NOT NULL, at INTEGER NOT NULL, detail TEXT);
CREATE TABLE IF NOT EXISTS cache(
  workflow TEXT NOT NULL, task TEXT NOT NULL, cache_key TEXT NOT NULL, components TEXT NOT NULL,
  dir TEXT NOT NULL, outputs TEXT NOT NULL, run_id TEXT NOT NULL, at INTEGER NOT NULL,
  PRIMARY KEY(workflow, task));
CREATE TABLE IF NOT EXISTS files(
  path TEXT PRIMARY KEY, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, hash TEXT NOT NULL);
"#;

/// Version 3: cycling.
pub const V3: &str = r#"
ALTER TABLE tasks ADD COLUMN cycle INTEGER;
ALTER TABLE tasks ADD COLUMN gate TEXT;
ALTER TABLE runs ADD COLUMN stop_requested INTEGER NOT NULL DEFAULT 0;
CREATE INDEX IF NOT EXISTS tasks_by_cycle ON tasks(run_id, cycle);
CREATE INDEX IF NOT EXISTS transitions_by_task ON transitions(run_id, task);
CREATE TABLE IF NOT EXISTS cycles(
  run_id TEXT NOT NULL, cycle INTEGER NOT NULL, point TEXT NOT NULL, state TEXT NOT NULL,
  started_at INTEGER, finished_at INTEGER, counts TEXT, waits TEXT,
  pruned INTEGER NOT NULL DEFAULT 0, last_cycle INTEGER, last_point TEXT,
  PRIMARY KEY(run_id, cycle));
CREATE TABLE IF NOT EXISTS signals(
  id INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT NOT NULL, name TEXT NOT NULL,
  point TEXT, vals TEXT NOT NULL, at INTEGER NOT NULL, used_by INTEGER);
"#;

/// Version 4: members labelled with their scatter values.
pub const V4: &str = "ALTER TABLE tasks ADD COLUMN label TEXT;";

/// Version 5: the cache keeps every successful execution, found by content (its cache key)
/// within its workflow, step and cycle point (`scope`, `""` in a run that does not cycle),
/// whatever member index or run produced it.
pub const V5_CACHE: &str = r#"
CREATE TABLE IF NOT EXISTS cache_entries(
  workflow TEXT NOT NULL, step TEXT NOT NULL, scope TEXT NOT NULL, cache_key TEXT NOT NULL,
  task TEXT NOT NULL, components TEXT NOT NULL, dir TEXT NOT NULL, outputs TEXT NOT NULL,
  run_id TEXT NOT NULL, at INTEGER NOT NULL,
  PRIMARY KEY(workflow, step, scope, cache_key, dir));
CREATE INDEX IF NOT EXISTS cache_entries_by_task ON cache_entries(workflow, task);
CREATE INDEX IF NOT EXISTS cache_entries_by_run ON cache_entries(run_id);
"#;

/// Why a database could not be brought to [`VERSION`] (the store adds the file's path:
/// [`super::StateError`]).
#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    /// SQLite failed.
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
    /// The database is of a later version than [`VERSION`].
    #[error("schema version {0} is newer than {VERSION}")]
    TooNew(u32),
}

/// The database's schema version.
pub fn version(conn: &Connection) -> rusqlite::Result<u32> {
    conn.pragma_query_value(None, "user_version", |r| r.get(0))
}

/// Brings the database to [`VERSION`]; returns the version it had.
pub fn migrate(conn: &mut Connection) -> Result<u32, MigrationError> {
    match version(conn)? {
        v if v == VERSION => return Ok(v),
        v if v > VERSION => return Err(MigrationError::TooNew(v)),
        _ => {}
    }
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    // Another process may have migrated it since the read above.
    let from = version(&tx)?;
    if from > VERSION {
        return Err(MigrationError::TooNew(from));
    }
    if from == 0 {
        // Unversioned: schema 1, or a new file.
        tx.execute_batch(V1)?;
    }
    if from < 2 {
        to_v2(&tx)?;
    }
    if from < 3 {
        tx.execute_batch(V3)?;
    }
    if from < 4 {
        tx.execute_batch(V4)?;
    }
    if from < 5 {
        to_v5_cache(&tx)?;
    }
    if from < VERSION {
        tx.pragma_update(None, "user_version", VERSION)?;
    }
    tx.commit()?;
    if from != 0 || has_runs(conn)? {
        tracing::debug!(from, to = VERSION, "migrated the run database");
    }
    Ok(from)
}

fn has_runs(conn: &Connection) -> rusqlite::Result<bool> {
    conn.query_row("SELECT EXISTS(SELECT 1 FROM runs)", [], |r| r.get(0))
}

/// Version 2: typed run settings and the engine's start time.
fn to_v2(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    tx.execute_batch(
        "ALTER TABLE runs RENAME COLUMN params TO settings;
         ALTER TABLE runs ADD COLUMN engine_start INTEGER;",
    )?;
    let rows: Vec<(String, String)> = tx
        .prepare("SELECT id, settings FROM runs")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    let mut update = tx.prepare("UPDATE runs SET settings = ?2 WHERE id = ?1")?;
    for (id, text) in rows {
        let (settings, note) = RunSettings::from_legacy(&text);
        if let Some(note) = note {
            tracing::warn!(run = %id, "recorded settings of run {id}: {note}");
        }
        update.execute((&id, settings.to_json()))?;
    }
    Ok(())
}

/// Version 5: the rows of the old `cache` table (the last success of each task name) become
/// entries of `cache_entries`; their step and cycle point come from the task row of the run
/// that produced them (an entry whose task row is gone is dropped: that task runs again).
pub fn to_v5_cache(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    tx.execute_batch(V5_CACHE)?;
    tx.execute_batch(
        "INSERT OR REPLACE INTO cache_entries(workflow, step, scope, cache_key, task, components, dir, outputs, run_id, at)
           SELECT c.workflow, t.step,
                  CASE WHEN t.cycle IS NULL OR instr(c.task, '/') = 0 THEN '' ELSE substr(c.task, 1, instr(c.task, '/') - 1) END,
                  c.cache_key, c.task, c.components, c.dir, c.outputs, c.run_id, c.at
           FROM cache c JOIN tasks t ON t.run_id = c.run_id AND t.task = c.task;
         DROP TABLE cache;",
    )
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use rusqlite::Connection;

    use super::VERSION;
    use crate::events::TaskState;
    use crate::state::{AttemptState, BackendChoice, RunSettings, RunState, StateError, Store};

    /// A database as twinflow wrote it before schema versions, with one killed run.
    const V1_RUN: &str = include_str!("../../../../tests/fixtures/state/v1-run.sql");

    fn write_v1(dir: &Path) {
        let c = Connection::open(dir.join("twinflow.db")).unwrap();
        c.execute_batch(&V1_RUN.replace("@DIR@", &dir.display().to_string())).unwrap();
        assert_eq!(super::version(&c).unwrap(), 0);
    }

    fn columns(dir: &Path, table: &str) -> Vec<String> {
        let c = Connection::open(dir.join("twinflow.db")).unwrap();
        let mut st = c.prepare(&format!("SELECT name FROM pragma_table_info('{table}')")).unwrap();
        st.query_map([], |r| r.get(0)).unwrap().collect::<Result<_, _>>().unwrap()
    }

    #[test]
    fn the_fixture_holds_the_version_1_schema_exactly() {
        assert!(V1_RUN.contains(super::V1.trim()), "tests/fixtures/state/v1-run.sql and schema::V1 differ");
    }

    #[test]
    fn a_version_1_database_is_migrated_and_reads_as_before() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        write_v1(dir);
        let mut store = Store::open(dir).unwrap();
        let run = store.run(None).unwrap();
        assert_eq!(
            (run.id.as_str(), run.workflow.as_str(), run.state),
            ("20261201-101500-ab12", "legacy", RunState::Running)
        );
        let want = RunSettings { params: vec![format!("logs={}/logs", dir.display())], ..RunSettings::default() };
        assert_eq!(run.settings, want);
        assert_eq!(run.settings.backend, BackendChoice::Local);
        assert_eq!((run.engine_pid, run.engine_start, run.engine()), (Some(4194303), None, None));
        // `status --json` shows the settings text it showed before the migration.
        let json = serde_json::to_value(&run).unwrap();
        let legacy = V1_RUN.lines().find(|l| l.contains(r#"'{"allocation""#)).unwrap().trim();
        let legacy =
            legacy.trim_start_matches('\'').trim_end_matches("',").replace("@DIR@", &dir.display().to_string());
        assert_eq!(json["params"], legacy.as_str());
        assert_eq!(json["settings"]["params"][0], want.params[0].as_str());
        let tasks = store.tasks(&run.id).unwrap();
        let states: Vec<(&str, TaskState, u32)> =
            tasks.iter().map(|t| (t.task.as_str(), t.state, t.attempts)).collect();
        assert_eq!(states, [("first", TaskState::Succeeded, 1), ("second", TaskState::Running, 1)]);
        let a = store.attempts(&run.id, "second").unwrap();
        assert_eq!(
            (a.len(), a[0].attempt, a[0].state, a[0].job_id.as_deref()),
            (1, 1, AttemptState::Running, Some("41002"))
        );
        let first = &store.attempts(&run.id, "first").unwrap()[0];
        assert_eq!(
            (first.state, first.exit_code, first.detail.as_deref()),
            (AttemptState::Succeeded, Some(0), Some("ok"))
        );
        assert_eq!(store.run_times(&run.id).unwrap().get("first"), Some(&105));
        // The last success of each task is an entry of the content-addressed cache.
        assert!(store.cache_get("legacy", "first").unwrap().is_some_and(|e| e.key == "6f1c0d2e9a7b4c3d"));
        let found = store.cache_find("legacy", "first", "", "6f1c0d2e9a7b4c3d").unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!((found[0].task.as_str(), found[0].run_id.as_str()), ("first", "20261201-101500-ab12"));
        // Written by this code from now on: the engine is known by pid and start time.
        store.begin().unwrap();
        store.set_run_state(&run.id, RunState::Failed).unwrap();
        store.commit().unwrap();
        let run = store.run(Some(&run.id)).unwrap();
        assert_eq!(run.state, RunState::Failed);
        let me = crate::ids::EngineId::current().unwrap();
        assert_eq!(run.engine(), Some(me));
        drop(store);
        let c = Connection::open(dir.join("twinflow.db")).unwrap();
        assert_eq!(super::version(&c).unwrap(), VERSION);
        let runs = columns(dir, "runs");
        assert_eq!(
            runs,
            [
                "id",
                "workflow",
                "file",
                "settings",
                "state",
                "created_at",
                "updated_at",
                "engine_pid",
                "engine_start",
                "stop_requested"
            ]
        );
        assert!(columns(dir, "tasks").ends_with(&["cycle".to_string(), "gate".to_string(), "label".to_string()]));
        assert_eq!(columns(dir, "cycles")[..3], ["run_id", "cycle", "point"]);
        // Opening again changes nothing.
        Store::open(dir).unwrap();
        assert_eq!(columns(dir, "runs"), runs);
    }

    #[test]
    fn a_new_database_has_the_schema_a_migrated_one_has() {
        let (fresh, old) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let mut store = Store::open(fresh.path()).unwrap();
        write_v1(old.path());
        Store::open(old.path()).unwrap();
        for t in ["runs", "tasks", "attempts", "transitions", "cache_entries", "files"] {
            assert_eq!(columns(fresh.path(), t), columns(old.path(), t), "{t}");
        }
        let settings = RunSettings {
            backend: BackendChoice::Slurm,
            profile: Some("site".into()),
            allocation: true,
            allocation_job: Some("77".into()),
            allocation_owned: Some(true),
            ..RunSettings::default()
        };
        store.create_run("r1", "wf", "/wf.yaml", &settings).unwrap();
        let row = store.run(Some("r1")).unwrap();
        assert_eq!(
            (row.settings.clone(), row.state, row.engine()),
            (settings, RunState::Running, crate::ids::EngineId::current())
        );
    }

    #[test]
    fn processes_opening_an_old_database_at_once_migrate_it_once() {
        let tmp = tempfile::tempdir().unwrap();
        write_v1(tmp.path());
        let dir = tmp.path().to_path_buf();
        let openers: Vec<_> = (0..4)
            .map(|_| {
                let dir = dir.clone();
                std::thread::spawn(move || Store::open(&dir).map(|s| s.run(None).unwrap().settings))
            })
            .collect();
        for o in openers {
            let settings = o.join().unwrap().unwrap();
            assert_eq!(settings.params, [format!("logs={}/logs", dir.display())]);
        }
        assert_eq!(columns(&dir, "runs").iter().filter(|c| *c == "engine_start").count(), 1);
    }

    #[test]
    fn a_version_4_cache_of_a_cycling_run_keeps_its_cycle_point() {
        let tmp = tempfile::tempdir().unwrap();
        let mut c = Connection::open(tmp.path().join("twinflow.db")).unwrap();
        let tx = c.transaction().unwrap();
        tx.execute_batch(super::V1).unwrap();
        super::to_v2(&tx).unwrap();
        tx.execute_batch(super::V3).unwrap();
        tx.execute_batch(super::V4).unwrap();
        tx.pragma_update(None, "user_version", 4).unwrap();
        tx.execute_batch(
            "INSERT INTO runs(id, workflow, file, settings, state, created_at, updated_at) VALUES ('r', 'cyc', 'f', '{}', 'succeeded', 1, 1);
             INSERT INTO tasks(run_id, task, step, state, cycle) VALUES ('r', '20260301T0600Z/call/sim[2]', 'call/sim', 'succeeded', 0);
             INSERT INTO tasks(run_id, task, step, state) VALUES ('r', 'plain', 'plain', 'succeeded');
             INSERT INTO cache VALUES ('cyc', '20260301T0600Z/call/sim[2]', 'k1', '{}', '/d1', '{}', 'r', 5);
             INSERT INTO cache VALUES ('cyc', 'plain', 'k2', '{}', '/d2', '{}', 'r', 6);
             INSERT INTO cache VALUES ('cyc', 'orphan', 'k3', '{}', '/d3', '{}', 'gone', 7);",
        )
        .unwrap();
        tx.commit().unwrap();
        drop(c);
        let store = Store::open(tmp.path()).unwrap();
        let e = store.cache_find("cyc", "call/sim", "20260301T0600Z", "k1").unwrap();
        assert_eq!((e.len(), e[0].task.as_str(), e[0].dir.as_str()), (1, "20260301T0600Z/call/sim[2]", "/d1"));
        assert_eq!(store.cache_find("cyc", "plain", "", "k2").unwrap().len(), 1);
        // An entry whose task row is gone is dropped: that task runs again.
        assert_eq!(store.cache_dirs().unwrap().len(), 2);
    }

    #[test]
    fn a_database_of_a_later_version_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let c = Connection::open(tmp.path().join("twinflow.db")).unwrap();
        c.pragma_update(None, "user_version", VERSION + 1).unwrap();
        drop(c);
        let e = Store::open(tmp.path()).unwrap_err();
        assert!(matches!(e, StateError::TooNew { found, .. } if found == VERSION + 1), "{e:?}");
        let msg = e.to_string();
        assert!(
            msg.contains(&format!("schema version {}, newer than this twinflow knows ({VERSION})", VERSION + 1)),
            "{msg}"
        );
        assert!(msg.contains("hint:"), "{msg}");
    }

    #[test]
    fn odd_settings_of_an_old_run_do_not_stop_the_migration() {
        let tmp = tempfile::tempdir().unwrap();
        write_v1(tmp.path());
        let c = Connection::open(tmp.path().join("twinflow.db")).unwrap();
        c.execute(
            "INSERT INTO runs(id, workflow, file, params, state, created_at, updated_at) VALUES ('odd', 'w', 'f', 'not json', 'failed', 1, 1)",
            [],
        )
        .unwrap();
        drop(c);
        let store = Store::open(tmp.path()).unwrap();
        assert_eq!(store.run(Some("odd")).unwrap().settings, RunSettings::default());
        assert_eq!(store.runs().unwrap().len(), 2);
    }
}
