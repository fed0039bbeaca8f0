//! NetCDF-4 writer (CF-1.10) through the `netcdf` crate.

use std::path::{Path, PathBuf};

use ndarray::ArrayView2;
use twinflow_contract::{cf, datasets};

use super::error::Context;
use super::{Compression, Coords, ExchangeError, GridWriter, PartialFile, Provenance, StationSeries, VarSpec};

pub(super) struct NetcdfGridWriter {
    file: Option<netcdf::FileMut>,
    partial: PartialFile,
    compression: Compression,
    shape: [usize; 2],
    records: usize,
    /// Names of the time-dependent variables defined so far.
    defined: Vec<String>,
}

fn put_global_attributes(file: &mut netcdf::FileMut, path: &Path, prov: &Provenance) -> Result<(), ExchangeError> {
    for (name, value) in prov.attributes() {
        file.add_attribute(name, value).ctx(path, format!("writing global attribute `{name}`"))?;
    }
    if let Some((name, ranks)) = prov.mpi_ranks_attribute() {
        file.add_attribute(name, ranks).ctx(path, format!("writing global attribute `{name}`"))?;
    }
    Ok(())
}

fn add_coordinate(
    file: &mut netcdf::FileMut,
    path: &Path,
    name: &str,
    values: &[f64],
    attrs: &[(&str, &str)],
) -> Result<(), ExchangeError> {
    let mut var = file.add_variable::<f64>(name, &[name]).ctx(path, format!("defining `{name}`"))?;
    for (k, v) in attrs {
        var.put_attribute(k, *v).ctx(path, format!("writing `{name}:{k}`"))?;
    }
    if !values.is_empty() {
        var.put_values(values, ..).ctx(path, format!("writing `{name}`"))?;
    }
    Ok(())
}

fn define_data_variable(
    file: &mut netcdf::FileMut,
    path: &Path,
    spec: &VarSpec,
    dims: &[&str],
    chunk: &[usize],
    compression: &Compression,
) -> Result<(), ExchangeError> {
    let name = spec.name.as_str();
    let mut var = file.add_variable::<f64>(name, dims).ctx(path, format!("defining `{name}`"))?;
    var.set_chunking(chunk).ctx(path, format!("chunking `{name}`"))?;
    if let Some(level) = compression.deflate_level {
        var.set_compression(i32::from(level.min(9)), compression.shuffle).ctx(path, format!("compressing `{name}`"))?;
    }
    var.set_fill_value(cf::FILL_F64).ctx(path, format!("setting `{name}:_FillValue`"))?;
    for (k, v) in spec.attributes() {
        var.put_attribute(k, v).ctx(path, format!("writing `{name}:{k}`"))?;
    }
    Ok(())
}

impl NetcdfGridWriter {
    pub(super) fn create(
        path: &Path,
        coords: &Coords,
        prov: &Provenance,
        compression: &Compression,
    ) -> Result<Self, ExchangeError> {
        let partial = PartialFile::new(path)?;
        let p = partial.partial_path().to_path_buf();
        let mut file = netcdf::create(&p).ctx(&p, "creating the file")?;
        put_global_attributes(&mut file, &p, prov)?;
        file.add_dimension(datasets::X, coords.x.len()).ctx(&p, "defining dimension `x`")?;
        file.add_dimension(datasets::Y, coords.y.len()).ctx(&p, "defining dimension `y`")?;
        file.add_unlimited_dimension(datasets::TIME).ctx(&p, "defining dimension `time`")?;
        add_coordinate(&mut file, &p, datasets::X, &coords.x, super::meta::X_COORD_ATTRS)?;
        add_coordinate(&mut file, &p, datasets::Y, &coords.y, super::meta::Y_COORD_ATTRS)?;
        add_coordinate(&mut file, &p, datasets::TIME, &[], super::meta::TIME_COORD_ATTRS)?;
        Ok(Self {
            file: Some(file),
            partial,
            compression: compression.clone(),
            shape: [coords.y.len(), coords.x.len()],
            records: 0,
            defined: Vec::new(),
        })
    }

    fn path(&self) -> PathBuf {
        self.partial.partial_path().to_path_buf()
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
}

impl GridWriter for NetcdfGridWriter {
    fn write_static(&mut self, spec: &VarSpec, data: ArrayView2<'_, f64>) -> Result<(), ExchangeError> {
        self.check_shape(&spec.name, &data)?;
        let p = self.path();
        let chunk = self.compression.chunk_for(self.shape[0], self.shape[1]);
        let file = self.file.as_mut().expect("file open until finish");
        define_data_variable(file, &p, spec, &[datasets::Y, datasets::X], &chunk, &self.compression)?;
        let mut var = file.variable_mut(&spec.name).expect("just defined");
        let data = data.as_standard_layout();
        var.put(data.view(), (.., ..)).ctx(&p, format!("writing `{}`", spec.name))?;
        Ok(())
    }

    fn write_snapshot(&mut self, time: f64, fields: &[(&VarSpec, ArrayView2<'_, f64>)]) -> Result<(), ExchangeError> {
        let p = self.path();
        for (spec, data) in fields {
            self.check_shape(&spec.name, data)?;
        }
        let [cy, cx] = self.compression.chunk_for(self.shape[0], self.shape[1]);
        let file = self.file.as_mut().expect("file open until finish");
        for (spec, _) in fields {
            if !self.defined.contains(&spec.name) {
                define_data_variable(
                    file,
                    &p,
                    spec,
                    &[datasets::TIME, datasets::Y, datasets::X],
                    &[1, cy, cx],
                    &self.compression,
                )?;
                self.defined.push(spec.name.clone());
            }
        }
        let t = self.records;
        let mut tvar = file.variable_mut(datasets::TIME).expect("defined at creation");
        tvar.put_value(time, [t]).ctx(&p, "writing `time`")?;
        for (spec, data) in fields {
            let mut var = file.variable_mut(&spec.name).expect("defined above");
            let data = data.as_standard_layout();
            var.put(data.view(), (t, .., ..)).ctx(&p, format!("writing `{}` record {t}", spec.name))?;
        }
        self.records += 1;
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> Result<PathBuf, ExchangeError> {
        let p = self.path();
        if let Some(file) = self.file.take() {
            file.close().ctx(&p, "closing the file")?;
        }
        self.partial.commit()
    }
}

pub(super) fn write_stations(path: &Path, s: &StationSeries, prov: &Provenance) -> Result<PathBuf, ExchangeError> {
    let partial = PartialFile::new(path)?;
    let p = partial.partial_path().to_path_buf();
    let mut file = netcdf::create(&p).ctx(&p, "creating the file")?;
    put_global_attributes(&mut file, &p, prov)?;
    file.add_attribute(cf::FEATURE_TYPE, "timeSeries").ctx(&p, "writing `featureType`")?;
    file.add_dimension(datasets::STATION, s.names.len()).ctx(&p, "defining dimension `station`")?;
    file.add_dimension(datasets::TIME, s.time.len()).ctx(&p, "defining dimension `time`")?;
    {
        let mut var =
            file.add_string_variable("station_name", &[datasets::STATION]).ctx(&p, "defining `station_name`")?;
        var.put_attribute(cf::CF_ROLE, "timeseries_id").ctx(&p, "writing `station_name:cf_role`")?;
        var.put_attribute(cf::LONG_NAME, "gauge name").ctx(&p, "writing `station_name:long_name`")?;
        for (k, name) in s.names.iter().enumerate() {
            var.put_string(name, [k]).ctx(&p, "writing `station_name`")?;
        }
    }
    for (name, values, sn, ln) in [
        (datasets::X, &s.x, "projection_x_coordinate", "x coordinate of gauge"),
        (datasets::Y, &s.y, "projection_y_coordinate", "y coordinate of gauge"),
    ] {
        let mut var = file.add_variable::<f64>(name, &[datasets::STATION]).ctx(&p, format!("defining `{name}`"))?;
        var.put_attribute(cf::STANDARD_NAME, sn).ctx(&p, "writing attribute")?;
        var.put_attribute(cf::LONG_NAME, ln).ctx(&p, "writing attribute")?;
        var.put_attribute(cf::UNITS, "m").ctx(&p, "writing attribute")?;
        var.put_values(values, ..).ctx(&p, format!("writing `{name}`"))?;
    }
    add_coordinate(
        &mut file,
        &p,
        datasets::TIME,
        &s.time,
        &[
            (cf::STANDARD_NAME, "time"),
            (cf::LONG_NAME, "simulation time"),
            (cf::UNITS, cf::TIME_REFERENCE),
            (cf::CALENDAR, "standard"),
            (cf::AXIS, "T"),
        ],
    )?;
    for (spec, values) in &s.variables {
        let name = spec.name.as_str();
        let mut var = file
            .add_variable::<f64>(name, &[datasets::STATION, datasets::TIME])
            .ctx(&p, format!("defining `{name}`"))?;
        var.set_fill_value(cf::FILL_F64).ctx(&p, format!("setting `{name}:_FillValue`"))?;
        for (k, v) in spec.attributes() {
            var.put_attribute(k, v).ctx(&p, format!("writing `{name}:{k}`"))?;
        }
        var.put_attribute(cf::COORDINATES, "time x y station_name").ctx(&p, "writing attribute")?;
        if !values.is_empty() {
            var.put_values(values, (.., ..)).ctx(&p, format!("writing `{name}`"))?;
        }
    }
    file.close().ctx(&p, "closing the file")?;
    partial.commit()
}
