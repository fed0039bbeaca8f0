//! The online detector twin: a calorimeter that drifts and breaks while it runs, watched
//! and recalibrated window by window from its stream of calibration events.
//!
//! - [`sim`]: the "physical detector": calibration events of the calorimeter kernel with
//!   the temperature drifting over the run (gain drift) and cells that die, go hot or jump
//!   in gain at known events; the JSON records and the ingest schema;
//! - [`publish`]: publishes the events to an MQTT broker (QoS 1) at a rate, resumably;
//! - [`data`]: a window written by `twin-kernel ingest` as events, their features and the
//!   held-out split; the replay buffer;
//! - [`model`]: the energy regression (the training kernel's MLP and model file),
//!   trained from scratch on the first window and warm-started on every later one;
//! - [`gate`]: the validation gate on held-out events and the versioned calibration
//!   payload with its interval of validity;
//! - [`monitor`]: per-cell anomaly detection (dead, hot, gain-jump cells) against the
//!   twin's expectation, and the alerts.
//!
//! Every HDF5/NetCDF read and write goes through `twinflow-exchange` (model files through
//! `twinflow-train`). The choices and tolerances are explained in `docs/detector-online.md`.
#![warn(missing_docs)]

pub mod data;
pub mod gate;
pub mod model;
pub mod monitor;
pub mod publish;
pub mod sim;

use std::path::PathBuf;

/// Why an online-twin kernel failed.
#[derive(Debug, thiserror::Error)]
pub enum OnlineError {
    /// An input file lacks what the kernel needs, or holds values it cannot use.
    #[error("`{path}`: {reason}")]
    Data {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The request contradicts itself (flags, sizes).
    #[error("{0}")]
    Request(String),
    /// The simulator's configuration is invalid.
    #[error(transparent)]
    Sim(#[from] sim::SimError),
    /// The broker cannot be used.
    #[error(
        "cannot use the MQTT broker `{broker}`: {reason}; hint: is it running? (`hpc/mqtt-local.sh start` runs a local one)"
    )]
    Broker {
        /// `host:port`.
        broker: String,
        /// What failed.
        reason: String,
    },
    /// Reading or writing an exchange file failed.
    #[error(transparent)]
    Exchange(#[from] twinflow_exchange::ExchangeError),
    /// Reading or writing a model file failed.
    #[error(transparent)]
    Train(#[from] twinflow_train::TrainError),
    /// A file operation failed.
    #[error("cannot {action} `{path}`")]
    Io {
        /// The file.
        path: PathBuf,
        /// What was being done.
        action: &'static str,
        /// OS error.
        #[source]
        source: std::io::Error,
    },
}

impl OnlineError {
    /// The exit code of `twin-kernel` for this error (3 for unusable input, else 1).
    pub fn exit_code(&self) -> u8 {
        use twinflow_contract::exit_code::{FAILURE, INVALID_INPUT};
        match self {
            Self::Data { .. } | Self::Request(_) | Self::Sim(_) => INVALID_INPUT,
            Self::Exchange(e) => e.exit_code(),
            Self::Train(e) => e.exit_code(),
            Self::Broker { .. } | Self::Io { .. } => FAILURE,
        }
    }
}

/// Writes `text` to `path` atomically (a `.partial` file renamed into place).
pub fn write_atomic(path: &std::path::Path, text: &[u8]) -> Result<(), OnlineError> {
    let mut partial = path.as_os_str().to_owned();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    let io = |action, source| OnlineError::Io { path: path.to_path_buf(), action, source };
    std::fs::write(&partial, text).map_err(|e| io("write", e))?;
    std::fs::rename(&partial, path).map_err(|e| io("rename into place", e))
}

/// Reads a JSON file into `T`.
pub fn read_json<T: serde::de::DeserializeOwned>(path: &std::path::Path) -> Result<T, OnlineError> {
    let text = std::fs::read_to_string(path).map_err(|source| OnlineError::Io {
        path: path.to_path_buf(),
        action: "read",
        source,
    })?;
    serde_json::from_str(&text).map_err(|e| OnlineError::Data { path: path.to_path_buf(), reason: e.to_string() })
}
