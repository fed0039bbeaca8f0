//! HDF5 writer with the same names and metadata as the NetCDF files (as attributes).

use std::path::{Path, PathBuf};

use hdf5::types::VarLenUnicode;
use ndarray::{ArrayView2, s};
use twinflow_contract::{cf, datasets};

use super::error::Context;
use super::h5attr;
use super::h5ds::{ScaleDim, attach_dimension_scales};
use super::{Compression, Coords, ExchangeError, GridWriter, PartialFile, Provenance, StationSeries, VarSpec};

fn put_str_attr(loc: &hdf5::Location, path: &Path, name: &str, value: &str) -> Result<(), ExchangeError> {
    h5attr::write_str(loc, path, name, value)
}

fn put_f64_attr(loc: &hdf5::Location, path: &Path, name: &str, value: f64) -> Result<(), ExchangeError> {
    h5attr::write_f64(loc, path, name, value)
}

fn put_root_attributes(file: &hdf5::File, path: &Path, prov: &Provenance) -> Result<(), ExchangeError> {
    for (name, value) in prov.attributes() {
        put_str_attr(file, path, name, &value)?;
    }
    if let Some((name, ranks)) = prov.mpi_ranks_attribute() {
        h5attr::write_attr(file, path, name, &crate::Attr::I32(vec![ranks]))?;
    }
    Ok(())
}

fn put_var_attributes(ds: &hdf5::Dataset, path: &Path, spec: &VarSpec) -> Result<(), ExchangeError> {
    for (k, v) in spec.attributes() {
        put_str_attr(ds, path, k, &v)?;
    }
    put_f64_attr(ds, path, cf::FILL_VALUE, cf::FILL_F64)
}

fn write_coordinate(
    file: &hdf5::File,
    path: &Path,
    name: &str,
    values: &[f64],
    attrs: &[(&str, &str)],
) -> Result<(), ExchangeError> {
    let ds = file.new_dataset_builder().with_data(values).create(name).ctx(path, format!("writing `{name}`"))?;
    for (k, v) in attrs {
        put_str_attr(&ds, path, k, v)?;
    }
    Ok(())
}

pub(super) struct Hdf5GridWriter {
    file: Option<hdf5::File>,
    partial: PartialFile,
    compression: Compression,
    shape: [usize; 2],
    records: usize,
    time: Option<hdf5::Dataset>,
    snapshots: Vec<(String, hdf5::Dataset)>,
    statics: Vec<String>,
}

impl Hdf5GridWriter {
    pub(super) fn create(
        path: &Path,
        coords: &Coords,
        prov: &Provenance,
        compression: &Compression,
    ) -> Result<Self, ExchangeError> {
        let partial = PartialFile::new(path)?;
        let p = partial.partial_path().to_path_buf();
        let file = hdf5::File::create(&p).ctx(&p, "creating the file")?;
        put_root_attributes(&file, &p, prov)?;
        write_coordinate(&file, &p, datasets::X, &coords.x, super::meta::X_COORD_ATTRS)?;
        write_coordinate(&file, &p, datasets::Y, &coords.y, super::meta::Y_COORD_ATTRS)?;
        Ok(Self {
            file: Some(file),
            partial,
            compression: compression.clone(),
            shape: [coords.y.len(), coords.x.len()],
            records: 0,
            time: None,
            snapshots: Vec::new(),
            statics: Vec::new(),
        })
    }

    fn path(&self) -> PathBuf {
        self.partial.partial_path().to_path_buf()
    }

    fn file(&self) -> &hdf5::File {
        self.file.as_ref().expect("file open until finish")
    }

    fn check_shape(&self, name: &str, data: &ArrayView2<'_, f64>) -> Result<(), ExchangeError> {
        if data.shape() != self.shape {
            return Err(ExchangeError::Layout {
                path: self.path(),
                reason: format!("field `{name}` has shape {:?}, the grid is {:?}", data.shape(), self.shape),
            });
        }
        Ok(())
    }

    /// Dimension scales `x`, `y` and (with records) `time`, attached to every field.
    fn attach_scales(&self) -> Result<(), ExchangeError> {
        use datasets::{TIME, X, Y};
        let [ny, nx] = self.shape;
        let mut dims =
            vec![ScaleDim { name: X, len: nx, unlimited: false }, ScaleDim { name: Y, len: ny, unlimited: false }];
        let mut vars: Vec<(&str, &[&str])> = vec![(X, &[X]), (Y, &[Y])];
        if self.time.is_some() {
            dims.push(ScaleDim { name: TIME, len: self.records, unlimited: true });
            vars.push((TIME, &[TIME]));
        }
        vars.extend(self.statics.iter().map(|n| (n.as_str(), &[Y, X][..])));
        vars.extend(self.snapshots.iter().map(|(n, _)| (n.as_str(), &[TIME, Y, X][..])));
        attach_dimension_scales(self.file(), &dims, &vars)
            .map_err(|e| ExchangeError::Layout { path: self.path(), reason: e.to_string() })
    }

    fn builder(&self) -> hdf5::DatasetBuilderEmpty {
        let b = self.file().new_dataset::<f64>().fill_value(cf::FILL_F64);
        self.compression.apply_h5(b, crate::meta::ValueKind::Float)
    }
}

impl GridWriter for Hdf5GridWriter {
    fn write_static(&mut self, spec: &VarSpec, data: ArrayView2<'_, f64>) -> Result<(), ExchangeError> {
        self.check_shape(&spec.name, &data)?;
        let p = self.path();
        let [cy, cx] = self.compression.chunk_for(self.shape[0], self.shape[1]);
        let ds = self
            .builder()
            .chunk((cy, cx))
            .shape((self.shape[0], self.shape[1]))
            .create(spec.name.as_str())
            .ctx(&p, format!("defining `{}`", spec.name))?;
        ds.write(&data.as_standard_layout()).ctx(&p, format!("writing `{}`", spec.name))?;
        put_var_attributes(&ds, &p, spec)?;
        self.statics.push(spec.name.clone());
        Ok(())
    }

    fn write_snapshot(&mut self, time: f64, fields: &[(&VarSpec, ArrayView2<'_, f64>)]) -> Result<(), ExchangeError> {
        let p = self.path();
        for (spec, data) in fields {
            self.check_shape(&spec.name, data)?;
        }
        let [ny, nx] = self.shape;
        let [cy, cx] = self.compression.chunk_for(ny, nx);
        if self.time.is_none() {
            let ds = self
                .file()
                .new_dataset::<f64>()
                .chunk(64)
                .shape(0..)
                .create(datasets::TIME)
                .ctx(&p, "defining `time`")?;
            for &(k, v) in super::meta::TIME_COORD_ATTRS {
                put_str_attr(&ds, &p, k, v)?;
            }
            self.time = Some(ds);
        }
        for (spec, _) in fields {
            if !self.snapshots.iter().any(|(n, _)| n == &spec.name) {
                let ds = self
                    .builder()
                    .chunk((1, cy, cx))
                    .shape((0.., ny, nx))
                    .create(spec.name.as_str())
                    .ctx(&p, format!("defining `{}`", spec.name))?;
                put_var_attributes(&ds, &p, spec)?;
                self.snapshots.push((spec.name.clone(), ds));
            }
        }
        let t = self.records;
        let tds = self.time.as_ref().expect("created above");
        tds.resize(t + 1).ctx(&p, "extending `time`")?;
        tds.write_slice(&[time], s![t..t + 1]).ctx(&p, "writing `time`")?;
        for (spec, data) in fields {
            let (_, ds) = self.snapshots.iter().find(|(n, _)| n == &spec.name).expect("defined above");
            ds.resize((t + 1, ny, nx)).ctx(&p, format!("extending `{}`", spec.name))?;
            ds.write_slice(&data.as_standard_layout(), s![t, .., ..])
                .ctx(&p, format!("writing `{}` record {t}", spec.name))?;
        }
        self.records += 1;
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> Result<PathBuf, ExchangeError> {
        let p = self.path();
        self.attach_scales()?;
        self.time = None;
        self.snapshots.clear();
        if let Some(file) = self.file.take() {
            file.close().ctx(&p, "closing the file")?;
        }
        self.partial.commit()
    }
}

pub(super) fn write_stations(path: &Path, s: &StationSeries, prov: &Provenance) -> Result<PathBuf, ExchangeError> {
    let partial = PartialFile::new(path)?;
    let p = partial.partial_path().to_path_buf();
    {
        let file = hdf5::File::create(&p).ctx(&p, "creating the file")?;
        put_root_attributes(&file, &p, prov)?;
        put_str_attr(&file, &p, cf::FEATURE_TYPE, "timeSeries")?;
        let names: Vec<VarLenUnicode> = s.names.iter().map(|n| h5attr::vlen(n)).collect();
        let ds =
            file.new_dataset_builder().with_data(&names).create("station_name").ctx(&p, "writing `station_name`")?;
        put_str_attr(&ds, &p, cf::CF_ROLE, "timeseries_id")?;
        let units = (cf::UNITS, "m");
        write_coordinate(&file, &p, datasets::X, &s.x, &[units, (cf::LONG_NAME, "x coordinate of gauge")])?;
        write_coordinate(&file, &p, datasets::Y, &s.y, &[units, (cf::LONG_NAME, "y coordinate of gauge")])?;
        write_coordinate(
            &file,
            &p,
            datasets::TIME,
            &s.time,
            &[(cf::STANDARD_NAME, "time"), (cf::UNITS, cf::TIME_REFERENCE), (cf::AXIS, "T")],
        )?;
        for (spec, values) in &s.variables {
            let arr = ndarray::Array2::from_shape_vec((s.names.len(), s.time.len()), values.clone()).map_err(|e| {
                ExchangeError::Layout { path: p.clone(), reason: format!("station variable `{}`: {e}", spec.name) }
            })?;
            let ds = file
                .new_dataset_builder()
                .with_data(&arr)
                .create(spec.name.as_str())
                .ctx(&p, format!("writing `{}`", spec.name))?;
            put_var_attributes(&ds, &p, spec)?;
        }
        use datasets::{STATION, TIME, X, Y};
        let dims = [
            ScaleDim { name: STATION, len: s.names.len(), unlimited: false },
            ScaleDim { name: TIME, len: s.time.len(), unlimited: false },
        ];
        let mut vars: Vec<(&str, &[&str])> =
            vec![("station_name", &[STATION]), (X, &[STATION]), (Y, &[STATION]), (TIME, &[TIME])];
        vars.extend(s.variables.iter().map(|(spec, _)| (spec.name.as_str(), &[STATION, TIME][..])));
        attach_dimension_scales(&file, &dims, &vars)
            .map_err(|e| ExchangeError::Layout { path: p.clone(), reason: e.to_string() })?;
        file.close().ctx(&p, "closing the file")?;
    }
    partial.commit()
}
