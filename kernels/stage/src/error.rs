//! Errors of the staging operations.

use std::path::PathBuf;

use twinflow_exchange::ExchangeError;

/// A staging operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    /// Reading or writing a file failed, or its layout is unusable.
    #[error(transparent)]
    Exchange(#[from] ExchangeError),
    /// Inputs that have to match do not (members of a merge, grids of a regrid).
    #[error("`{path}`: {reason}")]
    Incompatible {
        /// The file that does not match.
        path: PathBuf,
        /// What differs.
        reason: String,
    },
    /// A selection that keeps nothing.
    #[error("{what} selects nothing in `{path}`; hint: {hint}")]
    EmptySelection {
        /// File concerned.
        path: PathBuf,
        /// The selection, e.g. `x in [5, 6]`.
        what: String,
        /// What the file holds.
        hint: String,
    },
    /// The request itself is invalid (an inverted range, no inputs).
    #[error("{0}")]
    Request(String),
    /// A list file or output could not be read or written.
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

impl StageError {
    /// Whether the error is the user's input (exit code 3) rather than a failure.
    pub fn is_invalid_input(&self) -> bool {
        match self {
            Self::Exchange(e) => e.is_invalid_input(),
            Self::Incompatible { .. } | Self::EmptySelection { .. } | Self::Request(_) => true,
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
