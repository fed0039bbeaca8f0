//! Exchange files: gridded fields and station time series in NetCDF-4 or HDF5.
//!
//! Every file carries the CF-1.10 metadata a generic client needs (coordinate variables
//! `x`, `y`, `time`; `units`, `long_name`, `standard_name` where CF defines one,
//! `_FillValue`) and the twinflow provenance attributes of
//! [`twinflow_contract::provenance`] (run id and step from the engine's environment, kernel
//! name and version, parameters as JSON). HDF5 files carry the same names as attributes
//! and netCDF-4-style dimension scales, so netCDF-aware readers open them too.
//!
//! Files are written under `<name>.partial` and renamed into place by `finish`, so a crash
//! never leaves a complete-looking output ([`PartialFile`]).
//!
//! This crate is the only one of the kernels that links HDF5 and NetCDF. Besides the
//! gridded and station files above it offers:
//! - [`Dataset`]: a whole file as data (dimensions, typed variables, attributes), read and
//!   written alike in both formats, for staging and the ensemble summary;
//! - [`ArrayFile`]: N-D arrays by name, read a slab of leading-axis rows at a time (the
//!   training data), and [`write_netcdf_arrays`] for such files;
//! - [`H5File`], [`H5Group`], [`H5Dataset`]: HDF5 files with a layout of their own
//!   (the calorimeter output, model and checkpoint files), with the one set of attribute
//!   helpers every HDF5 writer here uses.
#![warn(missing_docs)]

mod dataset;
mod dataset_h5;
mod dataset_nc;
mod error;
pub mod guard;
mod h5;
mod h5attr;
mod h5ds;
mod hdf5_io;
mod meta;
mod netcdf_io;
mod partial;
mod read;
mod slab;

use std::path::{Path, PathBuf};

use ndarray::ArrayView2;

pub use dataset::{
    Attr, DIMENSION_NAMES_ATTR, DType, Dataset, DatasetWriter, Dim, Values, Variable, read_dataset, read_header,
    write_dataset,
};
pub use error::ExchangeError;
pub use h5::{ElementType, H5Dataset, H5DatasetInfo, H5Element, H5File, H5Group, H5Layout};
pub use meta::{Compression, Provenance, VarSpec};
pub use partial::PartialFile;
pub use read::{GridData, Record, read_grid, read_grid_record_rows, read_grid_rows};
pub use slab::{ArrayFile, NcArray, write_netcdf_arrays};

/// File format of an exchange file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// NetCDF-4 (HDF5-based) with CF conventions.
    Netcdf,
    /// Plain HDF5 with the same names as attributes.
    Hdf5,
}

impl Format {
    /// `.h5`, `.hdf5`, `.he5` → HDF5; anything else → NetCDF.
    pub fn from_path(path: &Path) -> Self {
        match path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref() {
            Some("h5" | "hdf5" | "he5") => Self::Hdf5,
            _ => Self::Netcdf,
        }
    }
}

/// Coordinates of a regular grid: cell centres along x and y, metres.
#[derive(Debug, Clone, PartialEq)]
pub struct Coords {
    /// Cell-centre x, ascending.
    pub x: Vec<f64>,
    /// Cell-centre y, ascending.
    pub y: Vec<f64>,
}

/// Writes gridded fields: static maps and time snapshots on the same `y × x` grid.
pub trait GridWriter {
    /// Writes a 2D field without time dimension (`[ny, nx]`).
    fn write_static(&mut self, spec: &VarSpec, data: ArrayView2<'_, f64>) -> Result<(), ExchangeError>;
    /// Appends one time record of each field (`[ny, nx]` each); the set of fields must be
    /// the same at every call.
    fn write_snapshot(&mut self, time: f64, fields: &[(&VarSpec, ArrayView2<'_, f64>)]) -> Result<(), ExchangeError>;
    /// Closes the file and renames it into place; returns the final path.
    fn finish(self: Box<Self>) -> Result<PathBuf, ExchangeError>;
}

/// Opens a gridded exchange file at `path` (written as `path.partial` until finished).
pub fn create_grid_writer(
    path: &Path,
    format: Format,
    coords: &Coords,
    provenance: &Provenance,
    compression: &Compression,
) -> Result<Box<dyn GridWriter>, ExchangeError> {
    compression.check(format, path)?;
    Ok(match format {
        Format::Netcdf => Box::new(netcdf_io::NetcdfGridWriter::create(path, coords, provenance, compression)?),
        Format::Hdf5 => Box::new(hdf5_io::Hdf5GridWriter::create(path, coords, provenance, compression)?),
    })
}

/// Time series at named stations (gauges), `[station, time]` per variable.
#[derive(Debug, Clone, PartialEq)]
pub struct StationSeries {
    /// Station names.
    pub names: Vec<String>,
    /// Station x, m.
    pub x: Vec<f64>,
    /// Station y, m.
    pub y: Vec<f64>,
    /// Sample times, s since the start of the run.
    pub time: Vec<f64>,
    /// Variables: spec and values, row-major `[station][time]`.
    pub variables: Vec<(VarSpec, Vec<f64>)>,
}

/// Writes station time series as a CF `timeSeries` discrete-sampling-geometry file
/// (NetCDF) or the same layout in HDF5.
pub fn write_stations(
    path: &Path,
    format: Format,
    series: &StationSeries,
    provenance: &Provenance,
) -> Result<PathBuf, ExchangeError> {
    match format {
        Format::Netcdf => netcdf_io::write_stations(path, series, provenance),
        Format::Hdf5 => hdf5_io::write_stations(path, series, provenance),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array2;

    fn provenance() -> Provenance {
        Provenance {
            title: "test".into(),
            source: "unit test".into(),
            history: "now: test".into(),
            kernel: "k".into(),
            kernel_version: "0".into(),
            run_id: "run-1".into(),
            step: "step-a".into(),
            parameters_json: r#"{"a":1}"#.into(),
            mpi_ranks: Some(2),
        }
    }

    #[test]
    fn grids_round_trip_through_netcdf_and_hdf5() {
        let dir = tempfile::tempdir().unwrap();
        let coords = Coords { x: vec![0.5, 1.5, 2.5], y: vec![10.0, 12.0] };
        let z = Array2::from_shape_fn((2, 3), |(j, i)| (10 * j + i) as f64);
        let h0 = Array2::from_elem((2, 3), 1.0);
        let h1 = Array2::from_shape_fn((2, 3), |(j, i)| 0.1 * (j + i) as f64);
        let hspec = VarSpec::new("h", "water depth", "m");
        for (name, format) in [("g.nc", Format::Netcdf), ("g.h5", Format::Hdf5)] {
            let path = dir.path().join(name);
            let compression = Compression { chunk: Some([1, 2]), ..Compression::default() };
            let mut w = create_grid_writer(&path, format, &coords, &provenance(), &compression).unwrap();
            w.write_static(&VarSpec::new("z", "bed", "m").standard("surface_altitude"), z.view()).unwrap();
            w.write_snapshot(0.0, &[(&hspec, h0.view())]).unwrap();
            w.write_snapshot(5.0, &[(&hspec, h1.view())]).unwrap();
            assert!(!path.exists(), "visible before finish");
            assert_eq!(w.finish().unwrap(), path);
            let back = read_grid(&path, &["z"], &["h", "absent"]).unwrap();
            assert_eq!(back.coords, coords);
            assert_eq!(back.fields["z"], z);
            assert_eq!(back.fields["h"], h1, "the last record seeds a restart");
            assert!(!back.fields.contains_key("absent"));
            let err = read_grid(&path, &["nope"], &[]).unwrap_err();
            assert!(matches!(err, ExchangeError::MissingVariable { .. }), "{err}");
        }
        let f = netcdf::open(dir.path().join("g.nc")).unwrap();
        let attr = |n: &str| f.attribute(n).unwrap().value().unwrap();
        assert_eq!(attr("twinflow_run_id"), netcdf::AttributeValue::Str("run-1".into()));
        assert_eq!(attr("twinflow_provenance"), netcdf::AttributeValue::Str("urn:twinflow:run:run-1".into()));
        assert_eq!(attr("Conventions"), netcdf::AttributeValue::Str("CF-1.10".into()));
        assert_eq!(attr("mpi_ranks"), netcdf::AttributeValue::Int(2));
    }

    #[test]
    fn scale_offset_packs_the_integers_of_hdf5_files_exactly_and_netcdf_refuses_it() {
        let dir = tempfile::tempdir().unwrap();
        let ints: Vec<f64> = (0..3000).map(|k| f64::from((k * 37) % 4096)).chain([-9999.0]).collect();
        let floats: Vec<f64> = (0..3001).map(|k| 0.1 * f64::from(k)).collect();
        let data = Dataset {
            dims: vec![Dim { name: "record".into(), len: 3001, unlimited: true }],
            variables: vec![
                Variable {
                    name: "adc".into(),
                    dims: vec!["record".into()],
                    dtype: DType::I32,
                    attrs: vec![("_FillValue".into(), Attr::I32(vec![-9999]))],
                    values: Values::Num(ints.clone()),
                },
                Variable::f64("level", &["record"], "water level", "m", floats.clone()),
            ],
            attrs: vec![],
        };
        let compression = Compression { deflate_level: Some(1), scale_offset: true, ..Compression::default() };
        let path = write_dataset(&dir.path().join("w.h5"), &data, &compression).unwrap();
        let back = read_dataset(&path).unwrap();
        assert_eq!(back.variable("adc").unwrap().num().unwrap(), ints.as_slice());
        assert_eq!(back.variable("level").unwrap().num().unwrap(), floats.as_slice());
        let root = H5File::open(&path).unwrap().root().unwrap();
        let adc = root.dataset("adc").unwrap().info().unwrap();
        assert!(adc.scale_offset && !adc.deflate, "{adc:?}");
        let level = root.dataset("level").unwrap().info().unwrap();
        assert!(!level.scale_offset && level.deflate, "floats keep deflate: {level:?}");

        let err = write_dataset(&dir.path().join("w.nc"), &data, &compression).unwrap_err();
        assert!(err.to_string().contains("w.nc") && err.to_string().contains("HDF5 files only"), "{err}");
        assert!(!dir.path().join("w.nc").exists() && !dir.path().join("w.nc.partial").exists());
    }

    #[test]
    fn descending_y_is_flipped_and_fill_values_become_nan() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("north-up.nc");
        {
            let mut f = netcdf::create(&path).unwrap();
            f.add_dimension("x", 2).unwrap();
            f.add_dimension("y", 3).unwrap();
            f.add_variable::<f64>("x", &["x"]).unwrap().put_values(&[0.0, 1.0], ..).unwrap();
            f.add_variable::<f64>("y", &["y"]).unwrap().put_values(&[20.0, 10.0, 0.0], ..).unwrap();
            let mut z = f.add_variable::<f64>("z", &["y", "x"]).unwrap();
            z.set_fill_value(-1.0).unwrap();
            z.put_values(&[5.0, 6.0, 3.0, 4.0, 1.0, -1.0], ..).unwrap();
        }
        let g = read_grid(&path, &["z"], &[]).unwrap();
        assert_eq!(g.coords.y, [0.0, 10.0, 20.0]);
        let z = &g.fields["z"];
        assert_eq!((z[[0, 0]], z[[1, 1]], z[[2, 1]]), (1.0, 4.0, 6.0));
        assert!(z[[0, 1]].is_nan());

        // A strip: ascending rows 1..3 are file rows 0..2 of the north-up file.
        let strip = read_grid_rows(&path, &["z"], &[], |ny| 1..ny + 5).unwrap();
        assert_eq!(strip.first_row, 1);
        assert_eq!(strip.coords.y.len(), 3, "coordinates stay whole");
        assert_eq!(strip.fields["z"], ndarray::array![[3.0, 4.0], [5.0, 6.0]]);
    }

    #[test]
    fn uneven_coordinates_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("uneven.nc");
        {
            let mut f = netcdf::create(&path).unwrap();
            f.add_dimension("x", 3).unwrap();
            f.add_dimension("y", 1).unwrap();
            f.add_variable::<f64>("x", &["x"]).unwrap().put_values(&[0.0, 1.0, 3.0], ..).unwrap();
            f.add_variable::<f64>("y", &["y"]).unwrap().put_values(&[0.0], ..).unwrap();
            f.add_variable::<f64>("z", &["y", "x"]).unwrap().put_values(&[0.0; 3], ..).unwrap();
        }
        let err = read_grid(&path, &["z"], &[]).unwrap_err();
        assert!(err.to_string().contains("evenly spaced"), "{err}");
    }
}
