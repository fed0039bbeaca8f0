//! Durable run state in SQLite (WAL): runs, tasks, attempts, state transitions, the cache
//! of finished steps, and file fingerprints.
//!
//! Durability model: the scheduler batches writes and commits once per loop turn. With WAL
//! and `synchronous=NORMAL` a commit survives the engine being killed (it is in the OS page
//! cache before `COMMIT` returns); a power loss may drop the last commits but never leaves
//! the database inconsistent. A task counts as finished only once its `succeeded` row is
//! committed, and that happens after its outputs were renamed into place, so a crash at
//! any point either keeps a complete result or re-runs the task.
//!
//! The schema is versioned and migrated on open ([`schema`]); rows and the states they
//! hold are types ([`rows`]), and so are the settings a run was started with
//! ([`settings`]).

mod cycles;
pub mod rows;
pub mod schema;
pub mod settings;
mod store;

use std::path::PathBuf;

pub use crate::events::RunState;
pub use cycles::{CycleRow, CycleState, SignalRow};
pub use rows::{AttemptRow, AttemptState, CacheEntry, RunRow, TaskRow};
pub use settings::{BackendChoice, Resumed, RunSettings};
pub use store::Store;

/// Errors of the state store.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// SQLite failed.
    #[error("run database `{path}`")]
    Sqlite {
        /// Database file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: rusqlite::Error,
    },
    /// The database was written by a later twinflow, with a schema this code does not know.
    #[error(
        "run database `{path}` has schema version {found}, newer than this twinflow knows ({supported}); hint: use the twinflow that wrote it, or another `--runs-dir`"
    )]
    TooNew {
        /// Database file.
        path: PathBuf,
        /// Its schema version.
        found: u32,
        /// The newest this code knows ([`schema::VERSION`]).
        supported: u32,
    },
    /// The file is not a SQLite database, or SQLite found it damaged (truncated, zeroed,
    /// overwritten). twinflow never rewrites or "repairs" it: the runs it held may still
    /// be recoverable by hand.
    #[error(
        "run database `{path}` is damaged or not a twinflow database ({reason}); twinflow leaves it as it is\nhint: move it aside (`mv {path} {path}.damaged`) to start a new run database in this runs directory (the run directories stay), restore it from a backup, or use another `--runs-dir`"
    )]
    Damaged {
        /// Database file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// Another process held the database's lock for longer than [`BUSY_TIMEOUT`].
    #[error(
        "run database `{path}` is locked by another process (waited {} s)\nhint: find the process holding it (`fuser {path}`), e.g. an engine or a `sqlite3` shell, and end it or wait for it, then try again", BUSY_TIMEOUT.as_secs()
    )]
    Busy {
        /// Database file.
        path: PathBuf,
    },
    /// The file system holding the database is full (ENOSPC): the write was rolled back.
    #[error(
        "run database `{path}`: the file system is full (ENOSPC); the last write was rolled back and the database is intact\nhint: free space on it, then `twinflow run --resume`"
    )]
    Full {
        /// Database file.
        path: PathBuf,
    },
    /// The database file could not be created.
    #[error("cannot create the run database `{path}`")]
    Create {
        /// Database file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// No such run.
    #[error("no run `{0}` in this runs directory")]
    NoSuchRun(String),
}

/// How long a write waits for another process's lock on the run database before it gives up
/// ([`StateError::Busy`]).
pub const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

impl StateError {
    /// An error of SQLite on the database `path`, classified: a damaged file, a lock held
    /// too long and a full disk get errors of their own (each says what to do).
    pub fn sqlite(path: PathBuf, source: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode as C;
        match source.sqlite_error_code() {
            Some(C::DatabaseCorrupt | C::NotADatabase) => {
                let reason = source.to_string();
                StateError::Damaged { path, reason }
            }
            Some(C::DatabaseBusy | C::DatabaseLocked) => StateError::Busy { path },
            Some(C::DiskFull) => StateError::Full { path },
            _ => StateError::Sqlite { path, source },
        }
    }
}

/// Milliseconds since the epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}
