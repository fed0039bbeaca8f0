//! Stream ingest: records from an MQTT broker, validated against a declared schema,
//! written as windows of chunked, compressed NetCDF-4 or HDF5 files that appear
//! atomically (`window-000042.nc`), so a twinflow `files:` trigger picks each up once.
//!
//! - [`schema`]: the schema file (fields, types, units, ranges, sensors);
//! - [`record`]: one payload → a [`record::Record`] or a [`record::Rejection`] with its
//!   reason;
//! - [`window`]: records as columns and their exchange-file layout;
//! - [`dead_letter`]: the dead-letter file (JSON lines, payload and reason);
//! - [`state`]: the state file and the commit protocol that makes restarts lose and repeat
//!   nothing;
//! - [`mqtt`]: the network thread (QoS 1, persistent session, manual acknowledgements);
//! - [`ingest`]: the loop tying them together, with back-pressure and the stop conditions.
//!
//! Every HDF5/NetCDF write goes through `twinflow-exchange`.
#![warn(missing_docs)]

pub mod dead_letter;
pub mod ingest;
pub mod mqtt;
pub mod record;
pub mod schema;
pub mod state;
pub mod window;

use std::path::PathBuf;

pub use ingest::{IngestConfig, StopReason, Summary, run};
pub use schema::{Schema, SchemaError};
use twinflow_exchange::ExchangeError;

/// Why the ingest failed.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The schema file is unusable.
    #[error(transparent)]
    Schema(#[from] SchemaError),
    /// The broker cannot be reached, or refuses the connection or a subscription.
    #[error(
        "cannot use the MQTT broker `{broker}`: {reason}; hint: is it running? (`hpc/mqtt-local.sh start` runs a local one)"
    )]
    Broker {
        /// `host:port`.
        broker: String,
        /// What failed.
        reason: String,
    },
    /// The output directory belongs to another client id (another persistent session).
    #[error(
        "`{out_dir}` holds the windows of client id `{recorded}`, not `{given}`; hint: pass `--client-id {recorded}` to continue its session, or use a new `--out-dir`"
    )]
    ClientId {
        /// The output directory.
        out_dir: PathBuf,
        /// Client id in its state file.
        recorded: String,
        /// Client id asked for.
        given: String,
    },
    /// The state file is unreadable or inconsistent with the directory.
    #[error("ingest state `{path}`: {reason}")]
    State {
        /// File concerned.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Writing a window failed.
    #[error(transparent)]
    Exchange(#[from] ExchangeError),
    /// A file operation failed.
    #[error("cannot {action} `{path}`")]
    Io {
        /// File concerned.
        path: PathBuf,
        /// What was being done.
        action: &'static str,
        /// OS error.
        #[source]
        source: std::io::Error,
    },
    /// A thread of the ingest ended unexpectedly.
    #[error("the {0} thread of the ingest stopped unexpectedly")]
    Panicked(&'static str),
}

impl IngestError {
    /// The exit code of `twin-kernel` for this error.
    pub fn exit_code(&self) -> u8 {
        use twinflow_contract::exit_code::{FAILURE, INVALID_INPUT};
        match self {
            Self::Schema(_) | Self::ClientId { .. } | Self::State { .. } => INVALID_INPUT,
            Self::Exchange(e) => e.exit_code(),
            Self::Broker { .. } | Self::Io { .. } | Self::Panicked(_) => FAILURE,
        }
    }
}
