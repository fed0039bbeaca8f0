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
    /// A file could not be opened for reading: missing, not a NetCDF or HDF5 file, or
    /// damaged in its first bytes.
    #[error(
        "cannot open `{path}` as {format}: {message}; hint: check that it exists and is a {format} file (`ncdump -h` or `h5dump -H` tells)"
    )]
    Open {
        /// File concerned.
        path: PathBuf,
        /// `NetCDF` or `HDF5`.
        format: &'static str,
        /// What the library said.
        message: String,
    },
    /// An environment variable the exchange layer reads has an unusable value.
    #[error("{name}={value:?}: {reason}")]
    Environment {
        /// The variable.
        name: &'static str,
        /// Its value.
        value: String,
        /// What is wrong, with a hint.
        reason: String,
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
    /// Reading an array would take more memory than the machine has (refused before
    /// anything was allocated).
    #[error(
        "`{path}`: `{name}` has shape {shape:?}: reading it would take {:.1} GiB, more than this machine's memory ({:.1} GiB); nothing was allocated; hint: check the file's dimensions, or run on more ranks so each reads fewer rows",
        gib(*.bytes), gib(u128::from(*.memory))
    )]
    TooLarge {
        /// File concerned.
        path: PathBuf,
        /// The array.
        name: String,
        /// Its shape, as the file declares it.
        shape: Vec<usize>,
        /// Bytes the read would take.
        bytes: u128,
        /// The machine's memory, bytes.
        memory: u64,
    },
    /// The HDF5 or netCDF library (or the `netcdf` crate, which panics on some library
    /// errors) failed on a damaged file in a way it does not report as an error; see
    /// `guard`.
    #[error(
        "`{path}` is probably damaged: the file libraries failed while {action}: {message}; hint: check it with `ncdump -h` or `h5dump -H`"
    )]
    Library {
        /// File concerned.
        path: PathBuf,
        /// What was being done.
        action: String,
        /// What the library (or crate) said.
        message: String,
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
            Self::Library { message, .. } | Self::Open { message, .. } => message.clone(),
            Self::MissingVariable { .. } | Self::Layout { .. } | Self::TooLarge { .. } | Self::Environment { .. } => {
                self.to_string()
            }
        }
    }

    /// Whether the error is the caller's input (a missing variable, an unusable layout, a
    /// file that cannot be opened or is damaged) rather than a failure to read or write.
    pub fn is_invalid_input(&self) -> bool {
        matches!(
            self,
            Self::MissingVariable { .. }
                | Self::Layout { .. }
                | Self::TooLarge { .. }
                | Self::Library { .. }
                | Self::Open { .. }
                | Self::Environment { .. }
        )
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

/// Turns a library error opening a file for reading into [`ExchangeError::Open`].
pub(super) trait OpenContext<T> {
    fn open_ctx(self, path: &std::path::Path) -> Result<T, ExchangeError>;
}

impl<T> OpenContext<T> for Result<T, netcdf::Error> {
    fn open_ctx(self, path: &std::path::Path) -> Result<T, ExchangeError> {
        self.map_err(|e| ExchangeError::Open { path: path.to_path_buf(), format: "NetCDF", message: e.to_string() })
    }
}

impl<T> OpenContext<T> for Result<T, hdf5::Error> {
    fn open_ctx(self, path: &std::path::Path) -> Result<T, ExchangeError> {
        self.map_err(|e| ExchangeError::Open { path: path.to_path_buf(), format: "HDF5", message: e.to_string() })
    }
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

/// The machine's memory in bytes (`MemTotal` of `/proc/meminfo`); `None` when unknown.
pub fn machine_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib: u64 = text.lines().find_map(|l| l.strip_prefix("MemTotal:"))?.split_whitespace().next()?.parse().ok()?;
    Some(kib * 1024)
}

/// Refuses, before anything is allocated, to read `values` values (as `f64`) of `name`
/// from `path` when they would take more memory than the machine has: a header claiming
/// absurd dimensions (a damaged or hostile file) must be an error naming the size, not an
/// allocation failure that aborts the process.
pub fn check_allocation(
    path: &std::path::Path,
    name: &str,
    shape: &[usize],
    values: u128,
) -> Result<(), ExchangeError> {
    let bytes = values.saturating_mul(8);
    let Some(memory) = machine_memory() else { return Ok(()) };
    if bytes <= u128::from(memory) {
        return Ok(());
    }
    Err(ExchangeError::TooLarge {
        path: path.to_path_buf(),
        name: name.to_string(),
        shape: shape.to_vec(),
        bytes,
        memory,
    })
}

fn gib(bytes: u128) -> f64 {
    bytes as f64 / f64::from(1u32 << 30)
}
