//! Errors of the training kernels.

use std::path::PathBuf;

use twinflow_exchange::ExchangeError;

/// Why training, prediction, selection or tabulation failed.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// An input file cannot be opened or is not HDF5/NetCDF.
    #[error("cannot open `{path}` ({reason})")]
    Open {
        /// File concerned.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// A dataset asked for is not in the file.
    #[error("`{path}` has no dataset `{dataset}`; hint: it has {available}")]
    MissingDataset {
        /// File concerned.
        path: PathBuf,
        /// Dataset asked for.
        dataset: String,
        /// Datasets present (comma-separated, possibly shortened).
        available: String,
    },
    /// A dataset is present but unusable (shape, sample count, missing values).
    #[error("`{path}`: dataset `{dataset}` {reason}")]
    Data {
        /// File concerned.
        path: PathBuf,
        /// Dataset concerned.
        dataset: String,
        /// What is wrong.
        reason: String,
    },
    /// A model or checkpoint file is missing, corrupt or does not fit the request.
    #[error("model file `{path}`: {reason}")]
    ModelFile {
        /// File concerned.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A flood result or ranking file does not hold what it should.
    #[error("`{path}`: {reason}")]
    Input {
        /// File concerned.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The request itself is inconsistent (hyperparameters, flags).
    #[error("{0}")]
    Request(String),
    /// A file-system operation failed.
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
    /// Reading or writing an exchange file failed.
    #[error(transparent)]
    Exchange(#[from] ExchangeError),
}

impl TrainError {
    /// Whether the error is the user's input (exit code 3) rather than a failed run.
    pub fn is_invalid_input(&self) -> bool {
        match self {
            Self::Open { .. }
            | Self::MissingDataset { .. }
            | Self::Data { .. }
            | Self::ModelFile { .. }
            | Self::Input { .. }
            | Self::Request(_) => true,
            Self::Exchange(e) => e.is_invalid_input(),
            Self::Io { .. } => false,
        }
    }

    /// The exit code of `twin-kernel` for this error: [`INVALID_INPUT`] for the user's
    /// input, [`FAILURE`] otherwise.
    ///
    /// [`INVALID_INPUT`]: twinflow_contract::exit_code::INVALID_INPUT
    /// [`FAILURE`]: twinflow_contract::exit_code::FAILURE
    pub fn exit_code(&self) -> u8 {
        use twinflow_contract::exit_code::{FAILURE, INVALID_INPUT};
        if self.is_invalid_input() { INVALID_INPUT } else { FAILURE }
    }
}
