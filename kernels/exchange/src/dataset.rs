//! A whole exchange file as data: dimensions, typed variables with their attributes, and
//! global attributes, read from and written to NetCDF-4 or HDF5 alike.
//!
//! The staging tools (`twin-kernel stage ...`) and the ensemble summary work on this model,
//! so they handle every file the kernels write (gridded fields, station series, merged
//! ensembles) without knowing its layout in advance. Numeric values are held as `f64`
//! with their stored type ([`DType`]) and written back in that type, which is lossless for
//! `f32`, `i32` and `f64` (and for `i64` below 2⁵³).
//!
//! HDF5 dimensions are dimension scales laid out as netCDF-4 does (a coordinate dataset
//! is the scale of its dimension; a dimension without one gets an empty placeholder
//! dataset), as the kernels' HDF5 writer does, so h5netcdf/xarray and `ncdump` read the
//! files. When reading, a `DIMENSION_NAMES` attribute (`"time y x"`, written by earlier
//! versions) takes precedence; a 1-D dataset without scales is its own dimension (a
//! coordinate), except in a `featureType = timeSeries` file where it runs along `station`.

use std::path::{Path, PathBuf};

use twinflow_contract::cf;

use super::{Compression, ExchangeError, Format, PartialFile, Provenance};

use super::{dataset_h5 as h5, dataset_nc as nc};

/// Attribute that named the dimensions of an HDF5 dataset, outermost first, before the
/// writers used dimension scales; still honoured when reading.
pub const DIMENSION_NAMES_ATTR: &str = "DIMENSION_NAMES";

/// An attribute value (global or of a variable).
#[derive(Debug, Clone, PartialEq)]
pub enum Attr {
    /// Text.
    Str(String),
    /// Doubles (one value for a scalar attribute).
    F64(Vec<f64>),
    /// Floats.
    F32(Vec<f32>),
    /// 32-bit integers (smaller integer types widen to this).
    I32(Vec<i32>),
    /// 64-bit integers (unsigned 32/64-bit types widen to this).
    I64(Vec<i64>),
}

impl Attr {
    /// The text of a string attribute.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::Str(s) => Some(s),
            _ => None,
        }
    }
    /// The first value of a numeric attribute, as `f64`.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Self::Str(_) => None,
            Self::F64(v) => v.first().copied(),
            Self::F32(v) => v.first().map(|&x| f64::from(x)),
            Self::I32(v) => v.first().map(|&x| f64::from(x)),
            Self::I64(v) => v.first().map(|&x| x as f64),
        }
    }
}

impl std::fmt::Display for Attr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        fn list<T: std::fmt::Display>(f: &mut std::fmt::Formatter<'_>, v: &[T]) -> std::fmt::Result {
            let items: Vec<String> = v.iter().map(ToString::to_string).collect();
            f.write_str(&items.join(", "))
        }
        match self {
            Self::Str(s) => f.write_str(s),
            Self::F64(v) => list(f, v),
            Self::F32(v) => list(f, v),
            Self::I32(v) => list(f, v),
            Self::I64(v) => list(f, v),
        }
    }
}

/// Stored element type of a variable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DType {
    /// 64-bit float.
    F64,
    /// 32-bit float.
    F32,
    /// 32-bit integer (smaller integer types widen to this).
    I32,
    /// 64-bit integer (unsigned 32/64-bit types widen to this).
    I64,
    /// Variable-length UTF-8 string.
    Str,
}

/// Values of a variable, row-major.
#[derive(Debug, Clone, PartialEq)]
pub enum Values {
    /// Numbers of any numeric [`DType`].
    Num(Vec<f64>),
    /// Strings.
    Str(Vec<String>),
}

impl Values {
    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            Self::Num(v) => v.len(),
            Self::Str(v) => v.len(),
        }
    }
    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// No values of the kind `dtype` holds.
    pub fn empty_for(dtype: DType) -> Self {
        if dtype == DType::Str { Self::Str(Vec::new()) } else { Self::Num(Vec::new()) }
    }
    /// The elements at the given flat indices, in that order.
    pub fn gather(&self, indices: &[usize]) -> Self {
        match self {
            Self::Num(v) => Self::Num(indices.iter().map(|&i| v[i]).collect()),
            Self::Str(v) => Self::Str(indices.iter().map(|&i| v[i].clone()).collect()),
        }
    }
}

/// A dimension.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dim {
    /// Name.
    pub name: String,
    /// Length.
    pub len: usize,
    /// Unlimited (record) dimension.
    pub unlimited: bool,
}

/// A variable (NetCDF) or dataset (HDF5).
#[derive(Debug, Clone, PartialEq)]
pub struct Variable {
    /// Name.
    pub name: String,
    /// Dimension names, outermost first (empty for a scalar).
    pub dims: Vec<String>,
    /// Stored type.
    pub dtype: DType,
    /// Attributes in file order (`_FillValue` included).
    pub attrs: Vec<(String, Attr)>,
    /// Values, row-major over `dims`.
    pub values: Values,
}

impl Variable {
    /// A variable of `f64` values with CF `long_name` and `units`.
    pub fn f64(name: &str, dims: &[&str], long_name: &str, units: &str, values: Vec<f64>) -> Self {
        Self {
            name: name.into(),
            dims: dims.iter().map(|d| d.to_string()).collect(),
            dtype: DType::F64,
            attrs: vec![
                (cf::LONG_NAME.into(), Attr::Str(long_name.into())),
                (cf::UNITS.into(), Attr::Str(units.into())),
            ],
            values: Values::Num(values),
        }
    }
    /// An attribute by name.
    pub fn attr(&self, name: &str) -> Option<&Attr> {
        self.attrs.iter().find(|(n, _)| n == name).map(|(_, a)| a)
    }
    /// Sets (replaces or appends) an attribute.
    pub fn set_attr(&mut self, name: &str, value: Attr) {
        set_attr(&mut self.attrs, name, value);
    }
    /// Builder form of [`Variable::set_attr`].
    pub fn with_attr(mut self, name: &str, value: Attr) -> Self {
        self.set_attr(name, value);
        self
    }
    /// The numeric values, or `None` for strings.
    pub fn num(&self) -> Option<&[f64]> {
        match &self.values {
            Values::Num(v) => Some(v),
            Values::Str(_) => None,
        }
    }
    /// The `_FillValue` attribute as `f64`.
    pub fn fill_value(&self) -> Option<f64> {
        self.attr(cf::FILL_VALUE).and_then(Attr::as_f64)
    }
    /// Numeric values with fill values replaced by NaN.
    pub fn masked(&self) -> Option<Vec<f64>> {
        let fill = self.fill_value();
        self.num().map(|v| v.iter().map(|&x| if Some(x) == fill { f64::NAN } else { x }).collect())
    }
}

fn set_attr(attrs: &mut Vec<(String, Attr)>, name: &str, value: Attr) {
    match attrs.iter_mut().find(|(n, _)| n == name) {
        Some((_, a)) => *a = value,
        None => attrs.push((name.into(), value)),
    }
}

/// A whole exchange file.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Dataset {
    /// Dimensions.
    pub dims: Vec<Dim>,
    /// Variables in file order (HDF5: alphabetical).
    pub variables: Vec<Variable>,
    /// Global attributes.
    pub attrs: Vec<(String, Attr)>,
}

impl Dataset {
    /// A dimension by name.
    pub fn dim(&self, name: &str) -> Option<&Dim> {
        self.dims.iter().find(|d| d.name == name)
    }
    /// Length of a dimension (0 if absent).
    pub fn dim_len(&self, name: &str) -> usize {
        self.dim(name).map_or(0, |d| d.len)
    }
    /// A variable by name.
    pub fn variable(&self, name: &str) -> Option<&Variable> {
        self.variables.iter().find(|v| v.name == name)
    }
    /// A variable by name, mutable.
    pub fn variable_mut(&mut self, name: &str) -> Option<&mut Variable> {
        self.variables.iter_mut().find(|v| v.name == name)
    }
    /// Shape of a variable from its dimensions.
    pub fn shape_of(&self, var: &Variable) -> Vec<usize> {
        var.dims.iter().map(|d| self.dim_len(d)).collect()
    }
    /// A global attribute by name.
    pub fn attr(&self, name: &str) -> Option<&Attr> {
        self.attrs.iter().find(|(n, _)| n == name).map(|(_, a)| a)
    }
    /// Sets (replaces or appends) a global attribute.
    pub fn set_attr(&mut self, name: &str, value: Attr) {
        set_attr(&mut self.attrs, name, value);
    }
    /// Adds a line to the CF `history` attribute (newest last).
    pub fn append_history(&mut self, command_line: &str) {
        let line = super::meta::history_entry(command_line);
        let history = match self.attr(cf::HISTORY).and_then(Attr::as_str) {
            Some(old) if !old.is_empty() => format!("{old}\n{line}"),
            _ => line,
        };
        self.set_attr(cf::HISTORY, Attr::Str(history));
    }
    /// The values of the 1-D numeric variable `name` along dimension `name`.
    pub fn coordinate(&self, name: &str) -> Option<&[f64]> {
        self.variable(name).filter(|v| v.dims.len() == 1 && v.dims[0] == name).and_then(Variable::num)
    }
    /// Checks that every variable's dimensions exist and its values fill its shape.
    pub fn check(&self, path: &Path) -> Result<(), ExchangeError> {
        let layout = |reason: String| ExchangeError::Layout { path: path.to_path_buf(), reason };
        for v in &self.variables {
            if let Some(d) = v.dims.iter().find(|d| self.dim(d).is_none()) {
                return Err(layout(format!("variable `{}` uses the undefined dimension `{d}`", v.name)));
            }
            let n: usize = self.shape_of(v).iter().product();
            if v.values.len() != n {
                return Err(layout(format!(
                    "variable `{}` has {} values, its shape {:?} needs {n}",
                    v.name,
                    v.values.len(),
                    self.shape_of(v)
                )));
            }
            if matches!((&v.values, v.dtype), (Values::Str(_), d) if d != DType::Str)
                || matches!((&v.values, v.dtype), (Values::Num(_), DType::Str))
            {
                return Err(layout(format!("variable `{}` holds values of the wrong kind for its type", v.name)));
            }
        }
        Ok(())
    }
    /// The same file without values (what [`DatasetWriter::create`] needs).
    pub fn header(&self) -> Self {
        let variables =
            self.variables.iter().map(|v| Variable { values: Values::empty_for(v.dtype), ..v.clone() }).collect();
        Self { dims: self.dims.clone(), variables, attrs: self.attrs.clone() }
    }
}

impl Provenance {
    /// The CF and provenance global attributes of a file this provenance describes.
    pub fn to_attrs(&self) -> Vec<(String, Attr)> {
        let mut attrs: Vec<(String, Attr)> =
            self.attributes().into_iter().map(|(k, v)| (k.to_string(), Attr::Str(v))).collect();
        if let Some((k, n)) = self.mpi_ranks_attribute() {
            attrs.push((k.to_string(), Attr::I32(vec![n])));
        }
        attrs
    }
}

/// Reads a whole file (format from the extension: `.h5`/`.hdf5`/`.he5` → HDF5).
pub fn read_dataset(path: &Path) -> Result<Dataset, ExchangeError> {
    let ds = crate::guard::guarded(path, "reading the file", || match Format::from_path(path) {
        Format::Netcdf => nc::read(path, true),
        Format::Hdf5 => h5::read(path, true),
    })?;
    ds.check(path)?;
    Ok(ds)
}

/// Reads the dimensions, variables (without values) and attributes of a file.
pub fn read_header(path: &Path) -> Result<Dataset, ExchangeError> {
    crate::guard::guarded(path, "reading the header", || match Format::from_path(path) {
        Format::Netcdf => nc::read(path, false),
        Format::Hdf5 => h5::read(path, false),
    })
}

/// Writes a whole file under `path.partial`, then renames it into place.
pub fn write_dataset(path: &Path, data: &Dataset, compression: &Compression) -> Result<PathBuf, ExchangeError> {
    data.check(path)?;
    let mut w = DatasetWriter::create(path, data, compression)?;
    for v in &data.variables {
        let shape = data.shape_of(v);
        w.write(&v.name, &vec![0; shape.len()], &shape, &v.values)?;
    }
    w.finish()
}

/// Writes a file variable by variable, or block by block (a merge writes one member at a
/// time, so an ensemble never has to fit in memory).
#[derive(Debug)]
pub struct DatasetWriter(WriterImpl);

#[derive(Debug)]
enum WriterImpl {
    Netcdf(nc::Writer),
    Hdf5(h5::Writer),
}

impl DatasetWriter {
    /// Defines the dimensions, variables and attributes of `header` (values are ignored)
    /// in `path.partial`; the format follows the extension of `path`.
    pub fn create(path: &Path, header: &Dataset, compression: &Compression) -> Result<Self, ExchangeError> {
        compression.check(Format::from_path(path), path)?;
        Ok(Self(match Format::from_path(path) {
            Format::Netcdf => WriterImpl::Netcdf(nc::Writer::create(path, header, compression)?),
            Format::Hdf5 => WriterImpl::Hdf5(h5::Writer::create(path, header, compression)?),
        }))
    }

    /// Writes the block of `name` starting at index `start` with extent `count` (row-major
    /// `values`, `count.iter().product()` of them).
    pub fn write(
        &mut self,
        name: &str,
        start: &[usize],
        count: &[usize],
        values: &Values,
    ) -> Result<(), ExchangeError> {
        if count.iter().product::<usize>() != values.len() || start.len() != count.len() {
            return Err(ExchangeError::Layout {
                path: self.path().to_path_buf(),
                reason: format!("block of `{name}` at {start:?} with extent {count:?} given {} values", values.len()),
            });
        }
        match &mut self.0 {
            WriterImpl::Netcdf(w) => w.write(name, start, count, values),
            WriterImpl::Hdf5(w) => w.write(name, start, count, values),
        }
    }

    fn path(&self) -> &Path {
        match &self.0 {
            WriterImpl::Netcdf(w) => w.path(),
            WriterImpl::Hdf5(w) => w.path(),
        }
    }

    /// Closes the file and renames it into place; returns the final path.
    pub fn finish(self) -> Result<PathBuf, ExchangeError> {
        self.close_file()?.commit()
    }

    /// Closes the file and flushes it to disk (`fsync`) without renaming it: the caller
    /// records whatever must be durable before the file becomes visible (a stream
    /// ingest's state), then calls [`PartialFile::commit`]. Dropping the returned handle
    /// instead removes the partial file.
    pub fn close(self) -> Result<PartialFile, ExchangeError> {
        let partial = self.close_file()?;
        partial.sync()?;
        Ok(partial)
    }

    fn close_file(self) -> Result<PartialFile, ExchangeError> {
        match self.0 {
            WriterImpl::Netcdf(w) => w.close(),
            WriterImpl::Hdf5(w) => w.close(),
        }
    }
}

/// Chunk shape of a variable: whole rows of up to 256 × 256 over the last two
/// dimensions, one element along the others (a record, a member); a 1-D variable (a
/// column of records) in chunks of up to 4096 values; never 0.
pub(super) fn chunk_shape(shape: &[usize]) -> Vec<usize> {
    let n = shape.len();
    if n == 1 {
        return vec![shape[0].clamp(1, 4096)];
    }
    shape.iter().enumerate().map(|(k, &len)| if k + 2 >= n { len.clamp(1, 256) } else { 1 }).collect()
}

/// The multi-index of flat position `flat` in a row-major block of shape `count`, offset
/// by `start`.
pub(super) fn unravel(mut flat: usize, start: &[usize], count: &[usize]) -> Vec<usize> {
    let mut idx = vec![0; count.len()];
    for k in (0..count.len()).rev() {
        idx[k] = start[k] + flat % count[k].max(1);
        flat /= count[k].max(1);
    }
    idx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_cover_rows_and_split_records() {
        assert_eq!(chunk_shape(&[4, 7, 48, 600]), [1, 1, 48, 256]);
        assert_eq!(chunk_shape(&[0, 5]), [1, 5]);
        assert_eq!(chunk_shape(&[9]), [9]);
        assert_eq!(chunk_shape(&[100_000]), [4096]);
    }

    #[test]
    fn unravel_is_row_major() {
        assert_eq!(unravel(5, &[0, 0], &[2, 3]), [1, 2]);
        assert_eq!(unravel(1, &[3, 10], &[1, 4]), [3, 11]);
    }
}
