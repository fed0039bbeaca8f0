//! Errors of the exchange layer.

use std::path::PathBuf;

/// An exchange file could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    /// The NetCDF library failed.
    #[error("netcdf error on `{path}` while {action}")]
    Netcdf {
        /// File concerned.
        path: PathBuf,
        /// What was being done.
        action: String,
        /// Library error.
        #[source]
        source: netcdf::Error,
    },
    /// The HDF5 library failed.
    #[error("hdf5 error on `{path}` while {action}")]
    Hdf5 {
        /// File concerned.
        path: PathBuf,
        /// What was being done.
        action: String,
        /// Library error.
        #[source]
        source: hdf5::Error,
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
    /// A variable the caller asked for is not in the file.
    #[error("`{path}` has no variable `{name}`; hint: it has {available}")]
    MissingVariable {
        /// File concerned.
        path: PathBuf,
        /// Variable asked for.
        name: String,
        /// Variables present, comma-separated.
        available: String,
    },
    /// The file's layout does not match what twinflow expects.
    #[error("`{path}`: {reason}")]
    Layout {
        /// File concerned.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

impl ExchangeError {
    /// The message of the underlying library or OS error (the error itself for the others),
    /// for reports that name the file and the action themselves.
    pub fn library_message(&self) -> String {
        match self {
            Self::Netcdf { source, .. } => source.to_string(),
            Self::Hdf5 { source, .. } => source.to_string(),
            Self::Io { source, .. } => source.to_string(),
            Self::MissingVariable { .. } | Self::Layout { .. } => self.to_string(),
        }
    }

    /// Whether the error is the caller's input (a missing variable, an unusable layout)
    /// rather than a failure to read or write.
    pub fn is_invalid_input(&self) -> bool {
        matches!(self, Self::MissingVariable { .. } | Self::Layout { .. })
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

/// Attaches the path and action to library errors.
pub(super) trait Context<T> {
    fn ctx(self, path: &std::path::Path, action: impl Into<String>) -> Result<T, ExchangeError>;
}

impl<T> Context<T> for Result<T, netcdf::Error> {
    fn ctx(self, path: &std::path::Path, action: impl Into<String>) -> Result<T, ExchangeError> {
        self.map_err(|source| ExchangeError::Netcdf { path: path.to_path_buf(), action: action.into(), source })
    }
}

impl<T> Context<T> for Result<T, hdf5::Error> {
    fn ctx(self, path: &std::path::Path, action: impl Into<String>) -> Result<T, ExchangeError> {
        self.map_err(|source| ExchangeError::Hdf5 { path: path.to_path_buf(), action: action.into(), source })
    }
}
