//! Metadata written into every exchange file.

use twinflow_contract::{cf, env, provenance};

/// CF attributes of the grid's `x` coordinate (both writers use these, so NetCDF and HDF5
/// outputs describe their axes identically).
pub(super) const X_COORD_ATTRS: &[(&str, &str)] = &[
    (cf::STANDARD_NAME, "projection_x_coordinate"),
    (cf::LONG_NAME, "x coordinate of cell centre"),
    (cf::UNITS, "m"),
    (cf::AXIS, "X"),
];

/// CF attributes of the grid's `y` coordinate.
pub(super) const Y_COORD_ATTRS: &[(&str, &str)] = &[
    (cf::STANDARD_NAME, "projection_y_coordinate"),
    (cf::LONG_NAME, "y coordinate of cell centre"),
    (cf::UNITS, "m"),
    (cf::AXIS, "Y"),
];

/// CF attributes of the snapshot `time` coordinate.
pub(super) const TIME_COORD_ATTRS: &[(&str, &str)] = &[
    (cf::STANDARD_NAME, "time"),
    (cf::LONG_NAME, "simulation time"),
    (cf::UNITS, cf::TIME_REFERENCE),
    (cf::CALENDAR, "standard"),
    (cf::AXIS, "T"),
];

/// Description of one data variable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VarSpec {
    /// Variable (dataset) name.
    pub name: String,
    /// CF `long_name`.
    pub long_name: String,
    /// CF `units` (UDUNITS).
    pub units: String,
    /// CF `standard_name`, only where the CF table defines a matching one.
    pub standard_name: Option<String>,
}

impl VarSpec {
    /// A variable without CF standard name.
    pub fn new(name: &str, long_name: &str, units: &str) -> Self {
        Self { name: name.into(), long_name: long_name.into(), units: units.into(), standard_name: None }
    }
    /// Adds a CF standard name.
    pub fn standard(mut self, standard_name: &str) -> Self {
        self.standard_name = Some(standard_name.into());
        self
    }
    /// Variable attributes as (name, value) pairs, fill value excluded.
    pub(super) fn attributes(&self) -> Vec<(&'static str, String)> {
        let mut a = vec![(cf::LONG_NAME, self.long_name.clone()), (cf::UNITS, self.units.clone())];
        if let Some(s) = &self.standard_name {
            a.push((cf::STANDARD_NAME, s.clone()));
        }
        a
    }
}

/// Chunking and compression of the data variables.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Compression {
    /// Deflate (zlib) level 1–9; `None` stores the data uncompressed.
    pub deflate_level: Option<u8>,
    /// Byte-shuffle filter before deflate (usually improves compression of floats).
    pub shuffle: bool,
    /// Chunk shape `[rows, columns]` of 2D fields (time chunks are one record); `None`
    /// picks at most 256 × 256.
    pub chunk: Option<[usize; 2]>,
    /// Integer variables of HDF5 files packed by HDF5's scale-offset filter instead of
    /// deflate: lossless, each chunk stored as offsets from its minimum in the bits its
    /// range needs. About 2.8× cheaper to write than shuffle + deflate 1, for a file about
    /// as small (ratio 3.5 against 3.6), on 12-bit ADC samples in 32-bit integers
    /// (`benches/codecs.rs`); built into every HDF5 library, so any HDF5 or netCDF-4 reader
    /// decodes it. Float variables still get deflate. HDF5 files only (the NetCDF
    /// writer offers deflate alone).
    pub scale_offset: bool,
}

impl Default for Compression {
    fn default() -> Self {
        Self { deflate_level: Some(4), shuffle: true, chunk: None, scale_offset: false }
    }
}

impl Compression {
    /// Refuses what `format` cannot store (scale-offset in a NetCDF file), naming `path`.
    pub fn check(&self, format: crate::Format, path: &std::path::Path) -> Result<(), crate::ExchangeError> {
        if self.scale_offset && format == crate::Format::Netcdf {
            return Err(crate::ExchangeError::Layout {
                path: path.to_path_buf(),
                reason: "scale-offset packing is for HDF5 files only (the NetCDF writer offers deflate); \
                         hint: write HDF5 (`.h5`) or use deflate"
                    .into(),
            });
        }
        Ok(())
    }

    /// Adds the filters to a chunked HDF5 dataset of `kind` values: scale-offset for
    /// integers when asked for, else shuffle and deflate for numbers, none for strings.
    pub(crate) fn apply_h5(&self, mut b: hdf5::DatasetBuilderEmpty, kind: ValueKind) -> hdf5::DatasetBuilderEmpty {
        if kind == ValueKind::Text {
            return b;
        }
        if self.scale_offset && kind == ValueKind::Integer {
            // Minimum bits 0: the filter finds, chunk by chunk, the bits the range needs.
            return b.scale_offset(hdf5::filters::ScaleOffset::Integer(0));
        }
        if let Some(level) = self.deflate_level {
            if self.shuffle {
                b = b.shuffle();
            }
            b = b.deflate(level.min(9));
        }
        b
    }

    /// Chunk shape for a `ny × nx` field.
    pub(super) fn chunk_for(&self, ny: usize, nx: usize) -> [usize; 2] {
        let [cy, cx] = self.chunk.unwrap_or([256, 256]);
        [cy.clamp(1, ny.max(1)), cx.clamp(1, nx.max(1))]
    }
}

/// Provenance and CF global attributes of a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provenance {
    /// CF `title`.
    pub title: String,
    /// CF `source`: how the data were produced.
    pub source: String,
    /// CF `history`: one line per program that touched the file.
    pub history: String,
    /// Kernel name (`twin-kernel flood`).
    pub kernel: String,
    /// Kernel version.
    pub kernel_version: String,
    /// Run id from the engine (`TWINFLOW_RUN_ID`), empty outside a twinflow run.
    pub run_id: String,
    /// Step name from the engine (`TWINFLOW_STEP`), empty outside a twinflow run.
    pub step: String,
    /// Parameters of the kernel as JSON.
    pub parameters_json: String,
    /// Number of MPI ranks that produced the file (written as the integer attribute
    /// [`provenance::MPI_RANKS_ATTR`]); `None` for kernels that do not run under MPI.
    pub mpi_ranks: Option<usize>,
}

impl Provenance {
    /// Provenance of a kernel run, taking run id and step from the engine's environment.
    pub fn from_env(title: &str, kernel: &str, parameters_json: String, command_line: &str) -> Self {
        let var = |name| std::env::var(name).unwrap_or_default();
        Self {
            title: title.into(),
            source: format!("twinflow {kernel} {}", env!("CARGO_PKG_VERSION")),
            history: history_entry(command_line),
            kernel: kernel.into(),
            kernel_version: env!("CARGO_PKG_VERSION").into(),
            run_id: var(env::RUN_ID),
            step: var(env::STEP),
            parameters_json,
            mpi_ranks: None,
        }
    }

    /// The MPI ranks attribute as (name, value), when set.
    pub(super) fn mpi_ranks_attribute(&self) -> Option<(&'static str, i32)> {
        self.mpi_ranks.map(|n| (provenance::MPI_RANKS_ATTR, i32::try_from(n).unwrap_or(i32::MAX)))
    }

    /// Global attributes as (name, value) pairs.
    pub(super) fn attributes(&self) -> Vec<(&'static str, String)> {
        // In a run, the identifier of the run's provenance crate (`twinflow export`).
        let crate_id = if self.run_id.is_empty() { String::new() } else { provenance::crate_id(&self.run_id) };
        vec![
            (cf::CONVENTIONS, provenance::CONVENTIONS.to_string()),
            (cf::TITLE, self.title.clone()),
            (cf::SOURCE, self.source.clone()),
            (cf::HISTORY, self.history.clone()),
            (provenance::RUN_ID_ATTR, self.run_id.clone()),
            (provenance::CRATE_ATTR, crate_id),
            (provenance::STEP_ATTR, self.step.clone()),
            (provenance::KERNEL_ATTR, self.kernel.clone()),
            (provenance::KERNEL_VERSION_ATTR, self.kernel_version.clone()),
            (provenance::PARAMETERS_ATTR, self.parameters_json.clone()),
        ]
    }
}

/// One line of the CF `history` attribute: `<UTC time>: <command line>`.
pub(super) fn history_entry(command_line: &str) -> String {
    format!("{}: {command_line}", Timestamp::now())
}

/// UTC timestamp `YYYY-MM-DDTHH:MM:SSZ` for the `history` attribute.
struct Timestamp(u64);

impl Timestamp {
    fn now() -> Self {
        let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        Self(secs)
    }
}

impl std::fmt::Display for Timestamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let days = self.0 / 86_400;
        let rem = self.0 % 86_400;
        // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
        let z = days as i64 + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + i64::from(month <= 2);
        write!(f, "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
    }
}

/// What a variable holds, for the choice of its filters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ValueKind {
    /// Integers.
    Integer,
    /// Floating-point numbers.
    Float,
    /// Strings (never compressed).
    Text,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_iso_utc() {
        assert_eq!(Timestamp(0).to_string(), "1970-01-01T00:00:00Z");
        assert_eq!(Timestamp(951_782_400 + 3_723).to_string(), "2000-02-29T01:02:03Z");
    }
}
