//! The one error type of `twin-kernel`: each kernel library's error, plus what the command
//! line itself can get wrong. [`KernelError::exit_code`] asks the error, never a chain of
//! downcasts.

use std::path::PathBuf;

use twinflow_assim::AssimError;
use twinflow_calo::CaloError;
use twinflow_contract::exit_code;
use twinflow_exchange::ExchangeError;
use twinflow_flood::FloodError;
use twinflow_ingest::IngestError;
use twinflow_online::OnlineError;
use twinflow_stage::StageError;
use twinflow_stage::summary::SummaryError;
use twinflow_train::TrainError;

/// Why a `twin-kernel` command did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    /// The flood kernel failed.
    #[error(transparent)]
    Flood(#[from] FloodError),
    /// The calorimeter kernel failed.
    #[error(transparent)]
    Calo(#[from] CaloError),
    /// Training, prediction, selection or tabulation failed.
    #[error(transparent)]
    Train(#[from] TrainError),
    /// The assimilation or the Lorenz-96 testbed failed.
    #[error(transparent)]
    Assim(#[from] AssimError),
    /// The stream ingest failed.
    #[error(transparent)]
    Ingest(#[from] IngestError),
    /// The online detector twin (simulator, update, gate, monitor) failed (boxed: its
    /// error is large and `KernelError` travels through every kernel's results).
    #[error(transparent)]
    Online(Box<OnlineError>),
    /// A staging operation failed.
    #[error(transparent)]
    Stage(#[from] StageError),
    /// The ensemble summary failed.
    #[error(transparent)]
    Summary(#[from] SummaryError),
    /// Reading or writing an exchange file failed.
    #[error(transparent)]
    Exchange(#[from] ExchangeError),
    /// Training stopped at a limit with its checkpoint written (not a failure).
    #[error(transparent)]
    Stopped(#[from] Stopped),
    /// A flood configuration file is not valid JSON for the configuration.
    #[error("invalid configuration `{path}`")]
    Config {
        /// The configuration file.
        path: PathBuf,
        /// Where the JSON does not fit.
        #[source]
        source: serde_json::Error,
    },
    /// `twin-kernel terrain` was asked for a valley it cannot build.
    #[error(transparent)]
    Terrain(#[from] TerrainRequest),
    /// A JSON document could not be produced.
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    /// A file could not be read or written.
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
    /// A figure cannot be made of its input file (missing columns, no values).
    #[error("`{path}`: {reason}")]
    Plot {
        /// The input file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// Options that cannot go together, found after parsing (exit code 2, as clap's own).
    #[error("{0}")]
    Usage(String),
    /// An operating-system call without a file of its own failed (resolving a path,
    /// writing to stdout).
    #[error(transparent)]
    Os(#[from] std::io::Error),
}

impl From<OnlineError> for KernelError {
    fn from(e: OnlineError) -> Self {
        Self::Online(Box::new(e))
    }
}

impl KernelError {
    /// The exit code of the process ([`twinflow_contract::exit_code`]).
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Flood(e) => e.exit_code(),
            Self::Calo(e) => e.exit_code(),
            Self::Assim(e) => e.exit_code(),
            Self::Ingest(e) => e.exit_code(),
            Self::Online(e) => e.exit_code(),
            Self::Train(e) => e.exit_code(),
            Self::Stage(e) => e.exit_code(),
            Self::Summary(e) => e.exit_code(),
            Self::Exchange(e) => e.exit_code(),
            Self::Stopped(_) => exit_code::STOPPED,
            Self::Usage(_) => exit_code::USAGE,
            Self::Config { .. } | Self::Json(_) | Self::Plot { .. } => exit_code::INVALID_INPUT,
            // As before the crate split, a terrain request out of range is a failure (1),
            // not invalid input.
            Self::Terrain(_) | Self::Io { .. } | Self::Os(_) => exit_code::FAILURE,
        }
    }

    /// The message and its causes on one line, `outer: cause: cause`.
    pub fn report(&self) -> String {
        let mut text = self.to_string();
        let mut source = std::error::Error::source(self);
        while let Some(e) = source {
            text.push_str(": ");
            text.push_str(&e.to_string());
            source = e.source();
        }
        text
    }
}

/// Training ended at a limit with the checkpoint written (exit code 4).
#[derive(Debug, thiserror::Error)]
#[error(
    "training stopped after epoch {epoch} of {epochs} ({reason}); checkpoint `{checkpoint}` written; rerun the same command with `--resume` to continue"
)]
pub struct Stopped {
    /// Epochs run.
    pub epoch: usize,
    /// Epochs asked for.
    pub epochs: usize,
    /// The limit that was reached (`--time-limit`, `--epoch-limit`).
    pub reason: &'static str,
    /// The checkpoint written.
    pub checkpoint: String,
}

/// A `twin-kernel terrain` request the valley generator cannot build.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TerrainRequest {
    /// Fewer than 4 × 4 cells.
    #[error("the valley needs at least 4 × 4 cells")]
    TooSmall,
    /// A cell size or dam height out of range.
    #[error("`--dx` must be > 0 and `--dam-height` > 1 m")]
    Shape,
    /// A non-positive inflow peak.
    #[error("`--inflow-peak` must be > 0 m³/s")]
    InflowPeak,
    /// A non-positive end time.
    #[error("`--end-time` must be > 0 s")]
    EndTime,
}
