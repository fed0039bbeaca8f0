//! HDF5 dimension scales (the High-Level `H5DS` API), laid out as netCDF-4 does, so
//! netCDF-aware readers (`ncdump`, h5netcdf/xarray) see named dimensions and coordinates.
//!
//! `hdf5-metno` binds only the core library, so the two `H5DS` calls are declared here and
//! linked from `libhdf5_hl` (on Debian in the `hdf5/serial` directory the `hdf5-metno-sys`
//! build script already puts on the search path).

use std::ffi::{CString, c_char, c_int, c_uint};

/// What netCDF-4 stores as the `NAME` of a dimension that has no coordinate variable
/// (followed by the length, `%10d`); h5netcdf and netCDF-C hide such datasets.
pub(super) const NOT_A_VARIABLE: &str = "This is a netCDF dimension but not a netCDF variable.";

/// Why dimension scales could not be set up.
#[derive(Debug, thiserror::Error)]
pub(super) enum ScaleError {
    #[error("axis {axis} of a {ndim}-D dataset")]
    Axis { axis: usize, ndim: usize },
    #[error("H5DSset_scale(`{0}`) failed")]
    SetScale(String),
    #[error("H5DSattach_scale(`{name}`, axis {axis}) failed")]
    AttachScale { name: String, axis: usize },
    #[error("opening `{name}`: {source}")]
    Open { name: String, source: hdf5::Error },
    #[error("defining `{name}`: {source}")]
    Define { name: String, source: hdf5::Error },
    #[error("`{0}` is both a dimension and a variable that is not its coordinate")]
    Clash(String),
    #[error("dimension `{name}`: {source}")]
    Dimension { name: String, source: Box<ScaleError> },
}

/// Makes `scale` the dimension scale called `name` and attaches it to axis `axis` of each
/// `(dataset, axis)` in `users`.
#[allow(unsafe_code)]
fn set_and_attach(scale: &hdf5::Dataset, name: &str, users: &[(&hdf5::Dataset, usize)]) -> Result<(), ScaleError> {
    // `hid_t` is `int64_t` since HDF5 1.10; `Dataset::id` would not type-check otherwise.
    #[link(name = "hdf5_hl")]
    unsafe extern "C" {
        fn H5DSset_scale(dsid: i64, dimname: *const c_char) -> c_int;
        fn H5DSattach_scale(did: i64, dsid: i64, idx: c_uint) -> c_int;
    }
    let cname = CString::new(name.replace('\0', "")).expect("NUL bytes removed");
    for (ds, axis) in users {
        if *axis >= ds.ndim() {
            return Err(ScaleError::Axis { axis: *axis, ndim: ds.ndim() });
        }
    }
    hdf5::sync::sync(|| {
        // SAFETY: `scale` and every `ds` are open dataset handles (borrowed for the whole
        // call, so not closed underneath), `cname` is a NUL-terminated string that outlives
        // the call, each axis was checked against the dataset's rank above, and the calls run
        // under hdf5-metno's library lock like its own FFI calls. The functions keep no
        // pointer past the call and report failure as a negative status.
        unsafe {
            if H5DSset_scale(scale.id(), cname.as_ptr()) < 0 {
                return Err(ScaleError::SetScale(name.to_string()));
            }
            for (ds, axis) in users {
                // The axis is below the dataset's rank (checked above), so it fits.
                let idx = c_uint::try_from(*axis).unwrap_or(c_uint::MAX);
                if H5DSattach_scale(ds.id(), scale.id(), idx) < 0 {
                    return Err(ScaleError::AttachScale { name: name.to_string(), axis: *axis });
                }
            }
        }
        Ok(())
    })
}

/// A dimension of the file: name, current length, unlimited.
pub(super) struct ScaleDim<'a> {
    pub name: &'a str,
    pub len: usize,
    pub unlimited: bool,
}

/// Turns each dimension into a dimension scale and attaches it to the datasets that use it
/// (`vars`: dataset name and its dimension names). A 1-D dataset named like its dimension
/// becomes the scale (a coordinate variable); otherwise an empty `f32` dataset named after
/// the dimension is created with netCDF-4's [`NOT_A_VARIABLE`] name, as netCDF-C does.
pub(super) fn attach_dimension_scales(
    file: &hdf5::File,
    dims: &[ScaleDim<'_>],
    vars: &[(&str, &[&str])],
) -> Result<(), ScaleError> {
    let mut datasets = Vec::new();
    for (name, _) in vars {
        datasets.push(file.dataset(name).map_err(|source| ScaleError::Open { name: name.to_string(), source })?);
    }
    for dim in dims {
        let is_coordinate = vars.iter().any(|(n, d)| *n == dim.name && *d == [dim.name]);
        let (scale, label) = if is_coordinate {
            let ds =
                file.dataset(dim.name).map_err(|source| ScaleError::Open { name: dim.name.to_string(), source })?;
            (ds, dim.name.to_string())
        } else {
            if file.link_exists(dim.name) {
                return Err(ScaleError::Clash(dim.name.to_string()));
            }
            let extent = if dim.unlimited { hdf5::Extent::resizable(dim.len) } else { hdf5::Extent::fixed(dim.len) };
            let mut b = file.new_dataset::<f32>();
            if dim.unlimited {
                b = b.chunk(1024);
            }
            let ds = b
                .shape(extent)
                .create(dim.name)
                .map_err(|source| ScaleError::Define { name: dim.name.to_string(), source })?;
            (ds, format!("{NOT_A_VARIABLE}{:10}", dim.len))
        };
        let users: Vec<(&hdf5::Dataset, usize)> = vars
            .iter()
            .zip(&datasets)
            .filter(|((n, _), _)| !(is_coordinate && *n == dim.name))
            .flat_map(|((_, d), ds)| d.iter().enumerate().filter(|(_, x)| **x == dim.name).map(move |(k, _)| (ds, k)))
            .collect();
        set_and_attach(&scale, &label, &users)
            .map_err(|e| ScaleError::Dimension { name: dim.name.to_string(), source: Box::new(e) })?;
    }
    Ok(())
}

/// Whether `ds` is a netCDF-4 dimension without a coordinate variable ([`NOT_A_VARIABLE`]).
pub(super) fn is_bare_dimension(ds: &hdf5::Dataset) -> bool {
    let Ok(a) = ds.attr("NAME") else { return false };
    a.read_scalar::<hdf5::types::FixedAscii<128>>().is_ok_and(|s| s.as_str().starts_with(NOT_A_VARIABLE))
        || a.read_scalar::<hdf5::types::VarLenAscii>().is_ok_and(|s| s.as_str().starts_with(NOT_A_VARIABLE))
}
