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
    /// No such run.
    #[error("no run `{0}` in this runs directory")]
    NoSuchRun(String),
}

/// Milliseconds since the epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}
