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

use rusqlite::{Connection, Transaction, TransactionBehavior};

use super::settings::RunSettings;

/// The schema version this code reads and writes.
pub const VERSION: u32 = 2;

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

/// Why a database could not be brought to [`VERSION`].
#[derive(Debug)]
pub enum MigrationError {
    /// SQLite failed.
    Sqlite(rusqlite::Error),
    /// The database is of a later version than [`VERSION`].
    TooNew(u32),
}

impl From<rusqlite::Error> for MigrationError {
    fn from(e: rusqlite::Error) -> Self {
        MigrationError::Sqlite(e)
    }
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
