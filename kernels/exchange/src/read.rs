//! Reading gridded inputs (DEM, initial state) from NetCDF or HDF5.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::Path;

use ndarray::{Array2, ArrayD, Axis, Ix2, s};
use twinflow_contract::{cf, datasets};

use super::error::{Context, OpenContext};
use super::{Coords, ExchangeError, Format};

/// Fields read from one file, on ascending coordinates.
#[derive(Debug, Clone, PartialEq)]
pub struct GridData {
    /// Cell-centre coordinates of the whole grid (ascending; rows were flipped if `y`
    /// descended).
    pub coords: Coords,
    /// Global index (ascending y) of the first row held in `fields`.
    pub first_row: usize,
    /// Fields by name, `[rows, nx]`; fill values replaced by NaN.
    pub fields: BTreeMap<String, Array2<f64>>,
}

/// Reads the variables `required` (an error if absent) and `optional` (skipped if absent)
/// with their `x`/`y` coordinates. A variable with a leading (time) dimension gives its
/// last record, so a result file can seed the next run.
pub fn read_grid(path: &Path, required: &[&str], optional: &[&str]) -> Result<GridData, ExchangeError> {
    read_grid_rows(path, required, optional, |ny| 0..ny)
}

/// Like [`read_grid`], but reads only the rows `select(ny)` (ascending-y indices, clamped
/// to the grid) of each field: each MPI rank reads its strip, not the whole grid.
pub fn read_grid_rows(
    path: &Path,
    required: &[&str],
    optional: &[&str],
    select: impl FnOnce(usize) -> Range<usize>,
) -> Result<GridData, ExchangeError> {
    read_grid_record_rows(path, required, optional, Record::Last, select)
}

/// Which record of a variable with a leading dimension (`time`, `member`) to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Record {
    /// The last one (a result file's final snapshot).
    Last,
    /// Record `k` (member `k` of a stacked ensemble file).
    Index(usize),
}

/// Like [`read_grid_rows`], choosing the `record` of `(record, y, x)` variables;
/// `(y, x)` variables are read whatever `record` says.
pub fn read_grid_record_rows(
    path: &Path,
    required: &[&str],
    optional: &[&str],
    which: Record,
    select: impl FnOnce(usize) -> Range<usize>,
) -> Result<GridData, ExchangeError> {
    crate::guard::guarded(path, "reading the grid", || read_grid_unguarded(path, required, optional, which, select))
}

fn read_grid_unguarded(
    path: &Path,
    required: &[&str],
    optional: &[&str],
    which: Record,
    select: impl FnOnce(usize) -> Range<usize>,
) -> Result<GridData, ExchangeError> {
    let file = match Format::from_path(path) {
        Format::Netcdf => Source::Netcdf(netcdf::open(path).open_ctx(path)?),
        Format::Hdf5 => Source::Hdf5(hdf5::File::open(path).open_ctx(path)?),
    };
    let layout = |reason: String| ExchangeError::Layout { path: path.to_path_buf(), reason };
    for axis in [datasets::X, datasets::Y] {
        if let Some(shape) = file.shape(axis) {
            let n = shape.iter().map(|d| *d as u128).product();
            crate::error::check_allocation(path, axis, &shape, n)?;
        }
    }
    let x = file.coordinate(path, datasets::X)?;
    let y = file.coordinate(path, datasets::Y)?;
    check_axis(&x).map_err(|r| layout(format!("coordinate `x` {r}")))?;
    let flip = y.len() > 1 && y[1] < y[0];
    let y: Vec<f64> = if flip { y.into_iter().rev().collect() } else { y };
    check_axis(&y).map_err(|r| layout(format!("coordinate `y` {r}")))?;
    let (nx, ny) = (x.len(), y.len());
    let rows = select(ny);
    let rows = rows.start.min(ny)..rows.end.min(ny).max(rows.start.min(ny));
    // Rows in the file's order.
    let file_rows = if flip { ny - rows.end..ny - rows.start } else { rows.clone() };

    let mut fields = BTreeMap::new();
    for (name, needed) in required.iter().map(|n| (*n, true)).chain(optional.iter().map(|n| (*n, false))) {
        let Some(shape) = file.shape(name) else {
            if needed {
                return Err(ExchangeError::MissingVariable {
                    path: path.to_path_buf(),
                    name: name.into(),
                    available: file.names(),
                });
            }
            continue;
        };
        let record = match shape.as_slice() {
            [r, yy, xx] if *yy == ny && *xx == nx => match which {
                Record::Last => Some(r.checked_sub(1).ok_or_else(|| layout(format!("`{name}` has no records")))?),
                Record::Index(k) if k < *r => Some(k),
                Record::Index(k) => {
                    return Err(layout(format!("`{name}` has {r} records (members), record {k} asked for")));
                }
            },
            [yy, xx] if *yy == ny && *xx == nx => None,
            _ => {
                return Err(layout(format!(
                    "`{name}` has shape {shape:?}, expected (y, x) = ({ny}, {nx}) or (time, y, x)"
                )));
            }
        };
        crate::error::check_allocation(path, name, &shape, file_rows.len() as u128 * nx as u128)?;
        let mut arr = file.read_rows(path, name, record, file_rows.clone())?;
        if flip {
            arr.invert_axis(Axis(0));
        }
        fields.insert(name.to_string(), arr.as_standard_layout().into_owned());
    }
    Ok(GridData { coords: Coords { x, y }, first_row: rows.start, fields })
}

/// An open input file of either format.
enum Source {
    Netcdf(netcdf::File),
    Hdf5(hdf5::File),
}

impl Source {
    fn names(&self) -> String {
        match self {
            Self::Netcdf(f) => f.variables().map(|v| v.name()).collect::<Vec<_>>().join(", "),
            Self::Hdf5(f) => f.member_names().map(|n| n.join(", ")).unwrap_or_default(),
        }
    }

    fn shape(&self, name: &str) -> Option<Vec<usize>> {
        match self {
            Self::Netcdf(f) => f.variable(name).map(|v| v.dimensions().iter().map(|d| d.len()).collect()),
            Self::Hdf5(f) => f.dataset(name).ok().map(|d| d.shape()),
        }
    }

    fn coordinate(&self, path: &Path, name: &str) -> Result<Vec<f64>, ExchangeError> {
        let missing =
            |available| ExchangeError::MissingVariable { path: path.to_path_buf(), name: name.into(), available };
        match self {
            Self::Netcdf(f) => {
                let var = f.variable(name).ok_or_else(|| missing(self.names()))?;
                var.get_values::<f64, _>(..).ctx(path, format!("reading `{name}`"))
            }
            Self::Hdf5(f) => {
                let ds = f.dataset(name).map_err(|_| missing(self.names()))?;
                ds.read_raw::<f64>().ctx(path, format!("reading `{name}`"))
            }
        }
    }

    /// Rows `rows` (file order) of a `(y, x)` variable, or of record `record` of a
    /// `(time, y, x)` one; fill values become NaN.
    fn read_rows(
        &self,
        path: &Path,
        name: &str,
        record: Option<usize>,
        rows: Range<usize>,
    ) -> Result<Array2<f64>, ExchangeError> {
        let action = || format!("reading `{name}`");
        let (mut arr, fill) = match self {
            Self::Netcdf(f) => {
                let var = f.variable(name).expect("shape was read");
                let arr: ArrayD<f64> = match record {
                    Some(r) => var.get::<f64, _>((r, rows, ..)),
                    None => var.get::<f64, _>((rows, ..)),
                }
                .ctx(path, action())?;
                let fill = var.fill_value::<f64>().ctx(path, format!("reading `{name}:_FillValue`"))?;
                (arr, fill)
            }
            Self::Hdf5(f) => {
                let ds = f.dataset(name).ctx(path, action())?;
                let arr: ArrayD<f64> = match record {
                    Some(r) => ds.read_slice(s![r, rows, ..]),
                    None => ds.read_slice(s![rows, ..]),
                }
                .ctx(path, action())?;
                let fill = ds.attr(cf::FILL_VALUE).and_then(|a| a.read_scalar::<f64>()).ok();
                (arr, fill)
            }
        };
        if let Some(fill) = fill {
            arr.mapv_inplace(|v| if v == fill { f64::NAN } else { v });
        }
        let arr = match arr.ndim() {
            2 => arr,
            // A record index may come back as a leading axis of length 1.
            3 => arr.index_axis_move(Axis(0), 0),
            n => unreachable!("a 2D selection returned {n} dimensions"),
        };
        Ok(arr.into_dimensionality::<Ix2>().expect("two dimensions"))
    }
}

/// What is wrong with a grid coordinate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
enum AxisError {
    #[error("is empty")]
    Empty,
    #[error("has non-finite values")]
    NonFinite,
    #[error("must be strictly monotonic")]
    NotMonotonic,
    #[error("must be evenly spaced (a regular grid)")]
    Uneven,
}

/// Coordinates must be finite, strictly ascending and evenly spaced (to 1e-6 relative).
fn check_axis(v: &[f64]) -> Result<(), AxisError> {
    if v.is_empty() {
        return Err(AxisError::Empty);
    }
    if v.iter().any(|x| !x.is_finite()) {
        return Err(AxisError::NonFinite);
    }
    if v.len() > 1 {
        let d = (v[v.len() - 1] - v[0]) / (v.len() - 1) as f64;
        if d.is_nan() || d <= 0.0 {
            return Err(AxisError::NotMonotonic);
        }
        if v.windows(2).any(|w| ((w[1] - w[0]) - d).abs() > 1e-6 * d) {
            return Err(AxisError::Uneven);
        }
    }
    Ok(())
}
