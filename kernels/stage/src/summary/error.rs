//! Errors of the ensemble summary.

use std::path::PathBuf;

use twinflow_exchange::ExchangeError;

/// The summary could not be computed or written.
#[derive(Debug, thiserror::Error)]
pub enum SummaryError {
    /// Reading or writing an exchange file failed, or a variable is missing.
    #[error(transparent)]
    Exchange(#[from] ExchangeError),
    /// An input does not have the expected layout or does not match the others.
    #[error("`{path}`: {reason}")]
    Input {
        /// File concerned.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The options are invalid.
    #[error("{0}")]
    Request(String),
    /// Encoding the PNG failed.
    #[error("cannot encode `{path}`")]
    Png {
        /// File concerned.
        path: PathBuf,
        /// Encoder error.
        #[source]
        source: png::EncodingError,
    },
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
}

impl SummaryError {
    /// Whether the error is the user's input (exit code 3) rather than a failure.
    pub fn is_invalid_input(&self) -> bool {
        match self {
            Self::Exchange(e) => e.is_invalid_input(),
            Self::Input { .. } | Self::Request(_) => true,
            Self::Png { .. } | Self::Io { .. } => false,
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
