//! HDF5 attribute writing: the one copy every HDF5 writer of the kernels uses (grid and
//! station files, whole datasets, calorimeter outputs, model files through [`crate::H5Group`]).

use std::path::Path;
use std::str::FromStr;

use hdf5::H5Type;
use hdf5::types::VarLenUnicode;

use crate::ExchangeError;
use crate::dataset::Attr;
use crate::error::Context;

/// A variable-length UTF-8 HDF5 string.
pub(crate) fn vlen(s: &str) -> VarLenUnicode {
    // NUL bytes cannot be stored in a C string; drop them rather than fail the output.
    VarLenUnicode::from_str(&s.replace('\0', "")).expect("NUL bytes removed")
}

/// Writes attribute `name` on `loc`: text as a scalar variable-length UTF-8 string, one
/// number as a scalar of its type, several as a 1-D array.
pub(crate) fn write_attr(loc: &hdf5::Location, path: &Path, name: &str, a: &Attr) -> Result<(), ExchangeError> {
    fn numeric<V: H5Type + Copy>(loc: &hdf5::Location, name: &str, v: &[V]) -> hdf5::Result<()> {
        if v.len() == 1 {
            loc.new_attr::<V>().shape(()).create(name)?.write_scalar(&v[0])
        } else {
            loc.new_attr_builder().with_data(v).create(name).map(drop)
        }
    }
    match a {
        Attr::Str(s) => loc.new_attr::<VarLenUnicode>().shape(()).create(name).and_then(|x| x.write_scalar(&vlen(s))),
        Attr::F64(v) => numeric(loc, name, v),
        Attr::F32(v) => numeric(loc, name, v),
        Attr::I32(v) => numeric(loc, name, v),
        Attr::I64(v) => numeric(loc, name, v),
    }
    .ctx(path, format!("writing attribute `{name}`"))
}

/// Writes attribute `name` as a 1-D array of `i64`, even of one value.
pub(crate) fn write_i64_list(
    loc: &hdf5::Location,
    path: &Path,
    name: &str,
    values: &[i64],
) -> Result<(), ExchangeError> {
    loc.new_attr::<i64>()
        .shape(values.len())
        .create(name)
        .and_then(|a| a.write_raw(values))
        .ctx(path, format!("writing attribute `{name}`"))
}

/// A text attribute (the most common kind).
pub(crate) fn write_str(loc: &hdf5::Location, path: &Path, name: &str, value: &str) -> Result<(), ExchangeError> {
    write_attr(loc, path, name, &Attr::Str(value.to_string()))
}

/// A scalar `f64` attribute.
pub(crate) fn write_f64(loc: &hdf5::Location, path: &Path, name: &str, value: f64) -> Result<(), ExchangeError> {
    write_attr(loc, path, name, &Attr::F64(vec![value]))
}
