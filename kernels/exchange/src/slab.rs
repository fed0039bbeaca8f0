//! N-D arrays by name in HDF5 or NetCDF files, read a slab of leading-axis rows at a time:
//! what training reads its samples with (`cells[event, layer, y, x]`, `truth/energy`).
//!
//! HDF5 datasets are named by path (`truth/energy`; a leading `/` is the caller's to
//! strip); NetCDF variables by name, or by `group/name` in netCDF-4 groups. Any numeric
//! type is read as `f64`, and values equal to the variable's `_FillValue` become NaN.
//! Only the rows asked for are read: an HDF5 hyperslab or a NetCDF start/count selection
//! along the first dimension, so each rank reads its shards and nothing else.

use std::ops::Range;
use std::path::{Path, PathBuf};

use twinflow_contract::cf;

use crate::error::{Context, OpenContext};
use crate::guard::{guarded, guarded_or};
use crate::{ExchangeError, Format};

/// A file of named N-D arrays, open for reading.
pub struct ArrayFile {
    path: PathBuf,
    inner: Inner,
}

enum Inner {
    Hdf5(hdf5::File),
    Netcdf(netcdf::File),
}

impl std::fmt::Debug for ArrayFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArrayFile").field("path", &self.path).finish_non_exhaustive()
    }
}

/// Whether `name` can name an array: non-empty segments the libraries accept.
fn valid_name(name: &str) -> bool {
    !name.is_empty() && !name.contains('\0') && name.split('/').all(|s| !s.is_empty() && s.len() <= 255)
}

impl ArrayFile {
    /// Opens `path` (format from the extension: `.h5`/`.hdf5`/`.he5` → HDF5, else
    /// NetCDF); a file missing or not of that format is [`ExchangeError::Open`].
    pub fn open(path: &Path) -> Result<Self, ExchangeError> {
        let inner = guarded(path, "opening the file", || {
            Ok(match Format::from_path(path) {
                Format::Hdf5 => Inner::Hdf5(hdf5::File::open(path).open_ctx(path)?),
                Format::Netcdf => Inner::Netcdf(netcdf::open(path).open_ctx(path)?),
            })
        })?;
        Ok(Self { path: path.to_path_buf(), inner })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file's format.
    pub fn format(&self) -> Format {
        match self.inner {
            Inner::Hdf5(_) => Format::Hdf5,
            Inner::Netcdf(_) => Format::Netcdf,
        }
    }

    /// Whether an array `name` exists (an HDF5 group of that name is not one).
    pub fn contains(&self, name: &str) -> bool {
        guarded_or(&self.path, &format!("looking for `{name}`"), false, || match &self.inner {
            _ if !valid_name(name) => false,
            Inner::Hdf5(f) => f.link_exists(name) && f.dataset(name).is_ok(),
            Inner::Netcdf(f) => nc_variable(f, name).is_some(),
        })
    }

    /// A numeric scalar attribute of the root group (HDF5) or the file (NetCDF).
    pub fn root_attr_f64(&self, name: &str) -> Option<f64> {
        guarded_or(&self.path, &format!("reading the attribute `{name}`"), None, || self.root_attr_f64_unguarded(name))
    }

    fn root_attr_f64_unguarded(&self, name: &str) -> Option<f64> {
        match &self.inner {
            Inner::Hdf5(f) => f.attr(name).ok()?.read_scalar::<f64>().ok(),
            Inner::Netcdf(f) => {
                let value = f.attribute(name)?.value().ok()?;
                match value {
                    netcdf::AttributeValue::Double(v) => Some(v),
                    netcdf::AttributeValue::Float(v) => Some(f64::from(v)),
                    netcdf::AttributeValue::Int(v) => Some(f64::from(v)),
                    netcdf::AttributeValue::Doubles(v) if v.len() == 1 => Some(v[0]),
                    _ => None,
                }
            }
        }
    }

    /// Names of the arrays (HDF5: datasets of every group, about 200 at most; NetCDF:
    /// root variables, then `group/name` of the first-level groups), for hints.
    pub fn names(&self) -> Vec<String> {
        guarded_or(&self.path, "listing the variables", Vec::new(), || self.names_unguarded())
    }

    fn names_unguarded(&self) -> Vec<String> {
        let mut names = Vec::new();
        match &self.inner {
            Inner::Hdf5(f) => hdf5_names(f, &mut names),
            Inner::Netcdf(f) => {
                names.extend(f.variables().map(|v| v.name()));
                if let Ok(groups) = f.groups() {
                    for g in groups {
                        names.extend(g.variables().map(|v| format!("{}/{}", g.name(), v.name())));
                    }
                }
            }
        }
        names
    }

    /// The shape of array `name` from the metadata alone; `Ok(None)` when there is no such
    /// name, [`ExchangeError::Layout`] when the name is an HDF5 group.
    pub fn shape(&self, name: &str) -> Result<Option<Vec<usize>>, ExchangeError> {
        guarded(&self.path, &format!("reading the shape of `{name}`"), || self.shape_unguarded(name))
    }

    fn shape_unguarded(&self, name: &str) -> Result<Option<Vec<usize>>, ExchangeError> {
        if !valid_name(name) {
            return Ok(None);
        }
        match &self.inner {
            Inner::Hdf5(f) => {
                if !f.link_exists(name) {
                    return Ok(None);
                }
                let ds = f.dataset(name).map_err(|_| self.not_a_dataset(name))?;
                Ok(Some(ds.shape()))
            }
            Inner::Netcdf(f) => Ok(nc_variable(f, name).map(|v| v.dimensions().iter().map(|d| d.len()).collect())),
        }
    }

    fn not_a_dataset(&self, name: &str) -> ExchangeError {
        ExchangeError::Layout { path: self.path.clone(), reason: format!("`{name}` is not a dataset (a group?)") }
    }

    /// Reads the whole array `name` (any rank, scalars included), flattened row-major;
    /// fill values become NaN. Errors as [`ArrayFile::read_rows`].
    pub fn read_all(&self, name: &str) -> Result<Vec<f64>, ExchangeError> {
        self.read(name, None)
    }

    /// Reads the rows `rows` (first axis) of the array `name` of `ndim` dimensions,
    /// flattened row-major; fill values become NaN. Errors: [`ExchangeError::MissingVariable`]
    /// when the name is gone, [`ExchangeError::Layout`] for an HDF5 group, the library's
    /// error (e.g. for a non-numeric type) otherwise.
    pub fn read_rows(&self, name: &str, ndim: usize, rows: Range<usize>) -> Result<Vec<f64>, ExchangeError> {
        self.read(name, Some((ndim, rows)))
    }

    /// The whole array, or the rows of a slab `(ndim, rows)`.
    fn read(&self, name: &str, slab: Option<(usize, Range<usize>)>) -> Result<Vec<f64>, ExchangeError> {
        guarded(&self.path, &format!("reading `{name}`"), || self.read_unguarded(name, slab))
    }

    fn read_unguarded(&self, name: &str, slab: Option<(usize, Range<usize>)>) -> Result<Vec<f64>, ExchangeError> {
        let action = || format!("reading `{name}`");
        if let Some(shape) = self.shape(name)? {
            let rest: u128 = shape.iter().skip(1).map(|d| *d as u128).product();
            let rows = match &slab {
                Some((_, rows)) => rows.len() as u128,
                None => shape.first().map_or(1, |d| *d as u128),
            };
            crate::error::check_allocation(&self.path, name, &shape, rows * rest)?;
        }
        let (mut values, fill) = match &self.inner {
            Inner::Hdf5(f) => {
                let ds = f.dataset(name).map_err(|_| self.not_a_dataset(name))?;
                let values = match slab {
                    None => ds.read_raw::<f64>(),
                    Some((ndim, rows)) => {
                        let mut dims = vec![hdf5::SliceOrIndex::from(rows)];
                        dims.extend(std::iter::repeat_n(hdf5::SliceOrIndex::from(..), ndim.saturating_sub(1)));
                        ds.read_slice::<f64, _, ndarray::IxDyn>(hdf5::Hyperslab::from(dims))
                            .map(|a| a.into_raw_vec_and_offset().0)
                    }
                }
                .ctx(&self.path, action())?;
                (values, ds.attr(cf::FILL_VALUE).and_then(|a| a.read_scalar::<f64>()).ok())
            }
            Inner::Netcdf(f) => {
                let var = nc_variable(f, name).ok_or_else(|| ExchangeError::MissingVariable {
                    path: self.path.clone(),
                    name: name.into(),
                    available: self.names().join(", "),
                })?;
                let values = match slab {
                    None => var.get_values::<f64, _>(..),
                    Some((ndim, rows)) => {
                        let mut extents = vec![netcdf::Extent::from(rows)];
                        extents.extend(std::iter::repeat_n(netcdf::Extent::from(..), ndim.saturating_sub(1)));
                        var.get_values::<f64, _>(netcdf::Extents::from(extents))
                    }
                }
                .ctx(&self.path, action())?;
                (values, var.fill_value::<f64>().ok().flatten())
            }
        };
        if let Some(fill) = fill {
            values.iter_mut().filter(|v| **v == fill).for_each(|v| *v = f64::NAN);
        }
        Ok(values)
    }
}

/// A NetCDF variable by name or `group/name` (never panics on missing groups).
fn nc_variable<'f>(f: &'f netcdf::File, name: &str) -> Option<netcdf::Variable<'f>> {
    match name.rsplit_once('/') {
        None => f.variable(name),
        // `File::variable` unwraps library errors on the group path: check the groups first.
        Some((group, _)) => f.group(group).ok().flatten().and_then(|_| f.variable(name)),
    }
}

fn hdf5_names(group: &hdf5::Group, names: &mut Vec<String>) {
    if names.len() > 200 {
        return;
    }
    if let Ok(datasets) = group.datasets() {
        names.extend(datasets.iter().map(|d| d.name().trim_start_matches('/').to_string()));
    }
    if let Ok(groups) = group.groups() {
        for g in groups {
            hdf5_names(&g, names);
        }
    }
}

/// One `f64` array of a NetCDF file written by [`write_netcdf_arrays`].
#[derive(Debug, Clone, Copy)]
pub struct NcArray<'a> {
    /// Variable name, `group/name` to put it in a (first-level) group.
    pub name: &'a str,
    /// Dimension names (defined in the root group), outermost first.
    pub dims: &'a [&'a str],
    /// Values, row-major.
    pub values: &'a [f64],
}

/// Writes a NetCDF-4 file of `f64` arrays over the root dimensions `dims` (name, length),
/// without CF metadata: inputs for training from other tools, and test fixtures.
pub fn write_netcdf_arrays(path: &Path, dims: &[(&str, usize)], arrays: &[NcArray<'_>]) -> Result<(), ExchangeError> {
    let mut file = netcdf::create(path).ctx(path, "creating the file")?;
    for (name, len) in dims {
        file.add_dimension(name, *len).ctx(path, format!("defining dimension `{name}`"))?;
    }
    for a in arrays {
        let action = || format!("writing `{}`", a.name);
        match a.name.rsplit_once('/') {
            None => file.add_variable::<f64>(a.name, a.dims).ctx(path, action())?.put_values(a.values, ..),
            Some((group, stem)) => {
                let mut g = match file.group_mut(group).ctx(path, action())? {
                    Some(g) => g,
                    None => file.add_group(group).ctx(path, action())?,
                };
                g.add_variable::<f64>(stem, a.dims).ctx(path, action())?.put_values(a.values, ..)
            }
        }
        .ctx(path, action())?;
    }
    file.close().ctx(path, "closing the file")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Attr, H5File};

    #[test]
    fn rows_of_hdf5_and_netcdf_arrays_with_fill_values_and_groups() {
        let dir = tempfile::tempdir().unwrap();
        let values: Vec<f64> = (0..12).map(f64::from).collect();
        let h5 = dir.path().join("a.h5");
        {
            let file = H5File::create(&h5).unwrap();
            let root = file.root().unwrap();
            let arr = ndarray::Array3::from_shape_vec((3, 2, 2), values.clone()).unwrap();
            let ds = root.group_or_create("truth").unwrap().write_array("cells", &arr).unwrap();
            ds.write_attr(cf::FILL_VALUE, &Attr::F64(vec![5.0])).unwrap();
            root.write_attr("sampling_fraction", &Attr::F64(vec![0.25])).unwrap();
        }
        let nc = dir.path().join("a.nc");
        write_netcdf_arrays(
            &nc,
            &[("sample", 3), ("k", 4)],
            &[
                NcArray { name: "x", dims: &["sample", "k"], values: &values },
                NcArray { name: "truth/y", dims: &["sample"], values: &[1.0, 2.0, 3.0] },
            ],
        )
        .unwrap();

        let f = ArrayFile::open(&h5).unwrap();
        assert_eq!(f.format(), Format::Hdf5);
        assert!(f.contains("truth/cells") && !f.contains("truth") && !f.contains("") && !f.contains("a\0b"));
        assert_eq!(f.shape("truth/cells").unwrap(), Some(vec![3, 2, 2]));
        assert_eq!(f.shape("nope").unwrap(), None);
        assert!(matches!(f.shape("truth"), Err(ExchangeError::Layout { .. })), "a group is no array");
        let rows = f.read_rows("truth/cells", 3, 1..2).unwrap();
        assert_eq!(rows[0], 4.0);
        assert!(rows[1].is_nan(), "the fill value becomes NaN: {rows:?}");
        assert_eq!(rows[2..], [6.0, 7.0]);
        assert_eq!(f.root_attr_f64("sampling_fraction"), Some(0.25));
        assert_eq!(f.names(), ["truth/cells"]);

        let f = ArrayFile::open(&nc).unwrap();
        assert_eq!(f.format(), Format::Netcdf);
        assert_eq!(f.shape("truth/y").unwrap(), Some(vec![3]));
        assert_eq!(f.shape("other/y").unwrap(), None, "a missing group is no panic");
        assert_eq!(f.read_rows("x", 2, 2..3).unwrap(), [8.0, 9.0, 10.0, 11.0]);
        assert_eq!(f.read_rows("truth/y", 1, 0..2).unwrap(), [1.0, 2.0]);
        assert!(matches!(f.read_rows("gone", 1, 0..1), Err(ExchangeError::MissingVariable { .. })));
        assert_eq!(f.names(), ["x", "truth/y"]);

        let err = ArrayFile::open(&dir.path().join("missing.h5")).unwrap_err();
        assert!(matches!(err, ExchangeError::Open { format: "HDF5", .. }) && err.is_invalid_input(), "{err}");
        assert!(err.to_string().contains("missing.h5") && !err.library_message().is_empty(), "{err}");
        std::fs::write(dir.path().join("text.nc"), "not a netCDF file").unwrap();
        let err = ArrayFile::open(&dir.path().join("text.nc")).unwrap_err();
        assert!(matches!(err, ExchangeError::Open { format: "NetCDF", .. }), "{err}");
    }
}
