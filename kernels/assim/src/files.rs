//! Exchange files of the assimilation kernels: forecast and analysis ensembles,
//! observations, truth and diagnostics. Every HDF5/NetCDF access goes through
//! `twinflow-exchange` ([`Dataset`]); CSV observations are read with the `csv` crate.
//!
//! # Ensembles
//! One state file per member, or one file whose variables have a leading `member`
//! dimension ([`MemberFiles::detect`]). The *state vector* is the concatenation of the
//! selected variables (each flattened row-major, member dimension removed), then the
//! per-member parameters. Each element has a location for localization: (x, y) from the
//! `x`/`y` coordinates for fields whose last two dimensions are `y, x`; (coordinate, 0)
//! for 1-D fields (the Lorenz-96 `site`); none for parameters (updated from every
//! observation). Analysis members are written in the input's layout and format, with the
//! input's attributes plus a `history` line, so a member hot-starts from them directly.
//!
//! # Observations
//! A CF `timeSeries` file (`station` and `time` dimensions; `value[station, time]`,
//! `error_std` as `[station, time]`, `[station]` or a scalar, station `x`, `y`, optional
//! `state_index[station]` for the identity operator, `station_name`), or a CSV file with
//! the columns `station,time,x,y,value,error_std,state_index` (`time`, `x`/`y`,
//! `error_std`, `state_index` optional). Values equal to `_FillValue` are missing and
//! skipped; any other non-finite value, or a non-positive error, is an error naming the
//! file, the variable and the station.

use std::path::{Path, PathBuf};

use nalgebra::DMatrix;
use twinflow_contract::{cf, datasets};
use twinflow_exchange::{
    Attr, Compression, DType, Dataset, Dim, ExchangeError, Provenance, Values, Variable, read_dataset, read_header,
    write_dataset,
};

use crate::AssimError;
use crate::filter::AnalysisReport;
use crate::obs::{Observations, bilinear_row};

/// Global attribute holding the model time of a state file.
pub const MODEL_TIME_ATTR: &str = datasets::MODEL_TIME;

/// Where the ensemble members are.
#[derive(Debug, Clone, PartialEq)]
pub enum MemberFiles {
    /// One file per member.
    PerMember(Vec<PathBuf>),
    /// One file with a leading `member` dimension.
    Stacked(PathBuf),
}

impl MemberFiles {
    /// One file with a `member` dimension is stacked; anything else is one file per member.
    pub fn detect(paths: &[PathBuf]) -> Result<Self, AssimError> {
        if let [one] = paths
            && read_header(one)?.dim(datasets::MEMBER).is_some()
        {
            return Ok(Self::Stacked(one.clone()));
        }
        Ok(Self::PerMember(paths.to_vec()))
    }
}

/// Which variables form the state.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StateSelection {
    /// Fields (located).
    pub variables: Vec<String>,
    /// Per-member parameters (not located: every observation updates them).
    pub parameters: Vec<String>,
}

/// One variable's part of the state vector.
#[derive(Debug, Clone, PartialEq)]
pub struct Block {
    /// Variable name.
    pub name: String,
    /// First state element.
    pub offset: usize,
    /// Number of elements.
    pub len: usize,
    /// Dimensions without `member`.
    pub dims: Vec<String>,
    /// Shape without `member`.
    pub shape: Vec<usize>,
    /// A parameter rather than a field.
    pub parameter: bool,
}

/// A regular grid: (nx, ny), (x0, dx), (y0, dy) of the cell centres.
pub type RegularGrid = ((usize, usize), (f64, f64), (f64, f64));

/// A forecast ensemble read from files.
#[derive(Debug, Clone)]
pub struct EnsembleFiles {
    /// Where it came from.
    pub source: MemberFiles,
    datasets: Vec<Dataset>,
    /// The variables of the state vector, in order.
    pub blocks: Vec<Block>,
    /// n × k.
    pub ensemble: DMatrix<f64>,
    /// Location of every state element.
    pub location: Vec<Option<[f64; 2]>>,
}

pub(crate) fn input(path: &Path, variable: &str, reason: impl Into<String>) -> AssimError {
    AssimError::Input { path: path.to_path_buf(), variable: variable.to_string(), reason: reason.into() }
}

pub(crate) fn variable<'d>(ds: &'d Dataset, path: &Path, name: &str) -> Result<&'d Variable, AssimError> {
    ds.variable(name).ok_or_else(|| {
        AssimError::Exchange(ExchangeError::MissingVariable {
            path: path.to_path_buf(),
            name: name.to_string(),
            available: ds.variables.iter().map(|v| format!("`{}`", v.name)).collect::<Vec<_>>().join(", "),
        })
    })
}

pub(crate) fn numbers(var: &Variable, path: &Path) -> Result<Vec<f64>, AssimError> {
    var.masked().ok_or_else(|| input(path, &var.name, "holds strings, not numbers"))
}

impl EnsembleFiles {
    /// Reads the members and checks that they agree in shape and hold finite values.
    pub fn read(source: MemberFiles, selection: &StateSelection) -> Result<Self, AssimError> {
        let paths: Vec<PathBuf> = match &source {
            MemberFiles::PerMember(p) => p.clone(),
            MemberFiles::Stacked(p) => vec![p.clone()],
        };
        if paths.is_empty() {
            return Err(AssimError::Config("no ensemble members given".into()));
        }
        if selection.variables.is_empty() && selection.parameters.is_empty() {
            return Err(AssimError::Config("no variables to update; hint: pass `--variables`".into()));
        }
        let datasets = paths.iter().map(|p| read_dataset(p)).collect::<Result<Vec<_>, _>>()?;
        let stacked = matches!(source, MemberFiles::Stacked(_));
        let k = if stacked { datasets[0].dim_len(datasets::MEMBER) } else { datasets.len() };
        if k < 2 {
            return Err(input(&paths[0], datasets::MEMBER, format!("an ensemble needs at least 2 members, got {k}")));
        }
        let names =
            selection.variables.iter().map(|n| (n, false)).chain(selection.parameters.iter().map(|n| (n, true)));
        let mut blocks = Vec::new();
        let mut columns: Vec<Vec<f64>> = vec![Vec::new(); k];
        let mut location = Vec::new();
        let mut offset = 0;
        for (name, parameter) in names {
            let first = variable(&datasets[0], &paths[0], name)?;
            let (dims, shape) = {
                let mut dims = first.dims.clone();
                let mut shape = datasets[0].shape_of(first);
                if stacked {
                    if dims.first().map(String::as_str) != Some(datasets::MEMBER) {
                        return Err(input(&paths[0], name, "has no leading `member` dimension"));
                    }
                    dims.remove(0);
                    shape.remove(0);
                }
                (dims, shape)
            };
            let len: usize = shape.iter().product();
            if len == 0 {
                return Err(input(&paths[0], name, "is empty"));
            }
            for (j, column) in columns.iter_mut().enumerate() {
                let (ds, path) = if stacked { (&datasets[0], &paths[0]) } else { (&datasets[j], &paths[j]) };
                let var = variable(ds, path, name)?;
                let values = numbers(var, path)?;
                let part = if stacked {
                    values[j * len..(j + 1) * len].to_vec()
                } else {
                    let s = ds.shape_of(var);
                    if var.dims != dims || s != shape {
                        return Err(input(
                            path,
                            name,
                            format!(
                                "has shape {} ({}) but `{}` has {} ({}); hint: every member needs the same grid",
                                fmt_shape(&s),
                                var.dims.join(", "),
                                paths[0].display(),
                                fmt_shape(&shape),
                                dims.join(", ")
                            ),
                        ));
                    }
                    values
                };
                if let Some(at) = part.iter().position(|v| !v.is_finite()) {
                    let which = if stacked { format!(" of member {j}") } else { String::new() };
                    return Err(input(
                        path,
                        name,
                        format!("element {at}{which} is not finite (NaN, infinite or _FillValue)"),
                    ));
                }
                column.extend(part);
            }
            location.extend(locations(&datasets[0], &dims, &shape, parameter));
            blocks.push(Block { name: name.clone(), offset, len, dims, shape, parameter });
            offset += len;
        }
        let n = offset;
        let ensemble = DMatrix::from_fn(n, k, |i, j| columns[j][i]);
        Ok(Self { source, datasets, blocks, ensemble, location })
    }

    /// Number of members.
    pub fn members(&self) -> usize {
        self.ensemble.ncols()
    }

    /// The block of variable `name`.
    pub fn block(&self, name: &str) -> Option<&Block> {
        self.blocks.iter().find(|b| b.name == name)
    }

    fn first_path(&self) -> &Path {
        match &self.source {
            MemberFiles::PerMember(p) => &p[0],
            MemberFiles::Stacked(p) => p,
        }
    }

    /// The regular grid of a `[y, x]` field: (nx, ny), (x0, dx), (y0, dy).
    pub fn grid_of(&self, name: &str) -> Result<RegularGrid, AssimError> {
        let path = self.first_path();
        let block = self.block(name).filter(|b| !b.parameter).ok_or_else(|| {
            input(path, name, "is not among `--variables`; hint: the observed variable must be updated")
        })?;
        if block.dims != [datasets::Y, datasets::X] {
            return Err(input(path, name, "needs the dimensions `y, x` for bilinear interpolation"));
        }
        let axis = |c: &str| -> Result<(f64, f64), AssimError> {
            let v = self.datasets[0].coordinate(c).ok_or_else(|| input(path, c, "coordinate is missing"))?;
            let d = if v.len() > 1 { v[1] - v[0] } else { 1.0 };
            let regular = v.windows(2).all(|w| ((w[1] - w[0]) - d).abs() <= 1e-9 * d.abs().max(1.0));
            if !(regular && d > 0.0) {
                return Err(input(path, c, "is not a regular ascending coordinate"));
            }
            Ok((v[0], d))
        };
        Ok(((block.shape[1], block.shape[0]), axis(datasets::X)?, axis(datasets::Y)?))
    }

    /// Writes the analysis `analysis` (n × k) in the input's layout: per-member files into
    /// `out_dir` under their input names, or the stacked file to `out`. Returns the paths.
    pub fn write(
        &self,
        analysis: &DMatrix<f64>,
        target: &Path,
        attributes: &[(String, Attr)],
        command_line: &str,
    ) -> Result<Vec<PathBuf>, AssimError> {
        let k = self.members();
        let finish = |mut ds: Dataset, path: &Path| -> Result<PathBuf, AssimError> {
            for (name, value) in attributes {
                ds.set_attr(name, value.clone());
            }
            ds.append_history(command_line);
            Ok(write_dataset(path, &ds, &Compression::default())?)
        };
        match &self.source {
            MemberFiles::PerMember(paths) => {
                std::fs::create_dir_all(target).map_err(|source| {
                    AssimError::Exchange(ExchangeError::Io { path: target.to_path_buf(), action: "create", source })
                })?;
                let mut out = Vec::new();
                for (j, path) in paths.iter().enumerate() {
                    let mut ds = self.datasets[j].clone();
                    for b in &self.blocks {
                        let v = ds.variable_mut(&b.name).expect("checked when read");
                        v.values = Values::Num(analysis.column(j).rows(b.offset, b.len).iter().copied().collect());
                    }
                    let name = path.file_name().ok_or_else(|| input(path, "", "is not a file name"))?;
                    out.push(finish(ds, &target.join(name))?);
                }
                Ok(out)
            }
            MemberFiles::Stacked(_) => {
                let mut ds = self.datasets[0].clone();
                for b in &self.blocks {
                    let v = ds.variable_mut(&b.name).expect("checked when read");
                    let mut values = Vec::with_capacity(k * b.len);
                    for j in 0..k {
                        values.extend(analysis.column(j).rows(b.offset, b.len).iter());
                    }
                    v.values = Values::Num(values);
                }
                Ok(vec![finish(ds, target)?])
            }
        }
    }

    /// The global attribute `name` of the first member as a number.
    pub fn number_attr(&self, name: &str) -> Option<f64> {
        self.datasets[0].attr(name).and_then(Attr::as_f64)
    }

    /// Reads the truth for this state from `path`: the same variables, or the same with a
    /// leading `time` dimension, of which the record at `time` is taken.
    pub fn read_truth(&self, path: &Path, time: Option<f64>) -> Result<Vec<f64>, AssimError> {
        let ds = read_dataset(path)?;
        let mut truth = Vec::with_capacity(self.ensemble.nrows());
        for b in &self.blocks {
            truth.extend(self.truth_of(&ds, path, &b.name, time)?);
        }
        Ok(truth)
    }

    /// The truth of the state variable `name` in `ds` (read from `path`): the same shape
    /// as the members', or that shape with a leading `time` dimension, of which the record
    /// at `time` is taken.
    pub fn truth_of(&self, ds: &Dataset, path: &Path, name: &str, time: Option<f64>) -> Result<Vec<f64>, AssimError> {
        let b = self.block(name).ok_or_else(|| AssimError::Config(format!("`{name}` is not a state variable")))?;
        let var = variable(ds, path, &b.name)?;
        let values = numbers(var, path)?;
        let shape = ds.shape_of(var);
        let part = if shape == b.shape {
            values
        } else if var.dims.first().map(String::as_str) == Some(datasets::TIME) && shape[1..] == b.shape[..] {
            let times = ds.coordinate(datasets::TIME).ok_or_else(|| input(path, datasets::TIME, "is missing"))?;
            let t = pick_time(times, time, path, &b.name)?;
            values[t * b.len..(t + 1) * b.len].to_vec()
        } else {
            return Err(input(
                path,
                &b.name,
                format!("has shape {} but the members have {}", fmt_shape(&shape), fmt_shape(&b.shape)),
            ));
        };
        if part.iter().any(|v| !v.is_finite()) {
            return Err(input(path, &b.name, "holds non-finite values"));
        }
        Ok(part)
    }
}

fn fmt_shape(s: &[usize]) -> String {
    format!("[{}]", s.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "))
}

fn locations(ds: &Dataset, dims: &[String], shape: &[usize], parameter: bool) -> Vec<Option<[f64; 2]>> {
    let len: usize = shape.iter().product();
    if parameter || dims.is_empty() {
        return vec![None; len];
    }
    let n = dims.len();
    if n >= 2
        && dims[n - 2] == datasets::Y
        && dims[n - 1] == datasets::X
        && let (Some(x), Some(y)) = (ds.coordinate(datasets::X), ds.coordinate(datasets::Y))
    {
        let (nx, ny) = (shape[n - 1], shape[n - 2]);
        return (0..len).map(|f| Some([x[f % nx], y[(f / nx) % ny]])).collect();
    }
    let last = &dims[n - 1];
    let m = shape[n - 1];
    let coord = ds.coordinate(last).filter(|c| c.len() == m);
    (0..len).map(|f| Some([coord.map_or((f % m) as f64, |c| c[f % m]), 0.0])).collect()
}

/// The index of `time` (to 10⁻⁹ relative) among `times`, or of the only time when `time`
/// is `None`; the error names the file and the variable and lists the times.
pub(crate) fn pick_time(times: &[f64], time: Option<f64>, path: &Path, var: &str) -> Result<usize, AssimError> {
    match time {
        None if times.len() == 1 => Ok(0),
        None => Err(input(path, var, format!("has {} times; hint: pass `--time`", times.len()))),
        Some(t) => times.iter().position(|&s| (s - t).abs() <= 1e-9 * t.abs().max(1.0)).ok_or_else(|| {
            input(path, var, format!("has no record at time {t}; hint: the file has the times {}", list_times(times)))
        }),
    }
}

/// The times of a file for a message: all of them up to 12, else the first five, the last
/// two and the count (`0, 300, 600, …, 2700, 3000 (11 times)`).
pub fn list_times(times: &[f64]) -> String {
    let join = |v: &[f64]| v.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ");
    match times.len() {
        0 => "none".into(),
        n if n <= 12 => join(times),
        n => format!("{}, …, {} ({n} times)", join(&times[..5]), join(&times[n - 2..])),
    }
}

/// The stations of a CF `timeSeries` file.
#[derive(Debug, Clone, PartialEq)]
pub struct Stations {
    /// `station_name`, or `station-<index>` when the file has none.
    pub names: Vec<String>,
    /// Station x.
    pub x: Vec<f64>,
    /// Station y.
    pub y: Vec<f64>,
}

/// The stations of `ds` (read from `path`): the `station` dimension, finite `x` and `y`
/// along it, and the names.
pub fn read_stations(ds: &Dataset, path: &Path) -> Result<Stations, AssimError> {
    let ns = ds.dim(datasets::STATION).map(|d| d.len).ok_or_else(|| {
        input(path, datasets::STATION, "dimension is missing; hint: stations are a CF `timeSeries` file")
    })?;
    let along_station = |name: &str| -> Result<Vec<f64>, AssimError> {
        let v = ds.variable(name).filter(|v| v.dims == [datasets::STATION]).ok_or_else(|| {
            input(path, name, "is missing or not along `station`; hint: stations need `x` and `y` along `station`")
        })?;
        let c = numbers(v, path)?;
        match c.iter().position(|v| !v.is_finite()) {
            Some(s) => Err(input(path, name, format!("station {s} has no finite coordinate"))),
            None => Ok(c),
        }
    };
    let names = match ds.variable(datasets::STATION_NAME).map(|v| &v.values) {
        Some(Values::Str(s)) if s.len() == ns => s.clone(),
        _ => (0..ns).map(|s| format!("station-{s}")).collect(),
    };
    Ok(Stations { names, x: along_station(datasets::X)?, y: along_station(datasets::Y)? })
}

/// One observation as read from a file.
#[derive(Debug, Clone, PartialEq)]
pub struct RawObservation {
    /// Station name.
    pub station: String,
    /// Station x.
    pub x: f64,
    /// Station y.
    pub y: f64,
    /// Observed value.
    pub value: f64,
    /// Error standard deviation.
    pub error_std: f64,
    /// State index for the identity operator.
    pub state_index: Option<usize>,
}

/// How observations are read.
#[derive(Debug, Clone, PartialEq)]
pub struct ObservationQuery {
    /// The observed-value variable (NetCDF/HDF5) — `value` by default.
    pub variable: String,
    /// The analysis time (`None`: the file must hold one time).
    pub time: Option<f64>,
    /// Error standard deviation for files without one.
    pub default_error_std: Option<f64>,
}

/// Observations read from a file: the usable ones and how many were missing.
#[derive(Debug, Clone, PartialEq)]
pub struct ObservationFile {
    /// Usable observations.
    pub observations: Vec<RawObservation>,
    /// Observations marked missing (`_FillValue`), skipped.
    pub missing: usize,
}

/// Reads observations (CSV by the `.csv` extension, otherwise NetCDF/HDF5).
pub fn read_observations(path: &Path, query: &ObservationQuery) -> Result<ObservationFile, AssimError> {
    let is_csv = path.extension().and_then(|e| e.to_str()).is_some_and(|e| e.eq_ignore_ascii_case("csv"));
    let file = if is_csv { read_csv(path, query)? } else { read_timeseries(path, query)? };
    for o in &file.observations {
        if !o.value.is_finite() {
            return Err(input(
                path,
                &query.variable,
                format!("station `{}` has the non-finite value {}", o.station, o.value),
            ));
        }
        if !(o.error_std.is_finite() && o.error_std > 0.0) {
            return Err(input(
                path,
                datasets::OBS_ERROR_STD,
                format!(
                    "station `{}` has the error standard deviation {}; it must be positive",
                    o.station, o.error_std
                ),
            ));
        }
    }
    Ok(file)
}

fn read_timeseries(path: &Path, q: &ObservationQuery) -> Result<ObservationFile, AssimError> {
    let ds = read_dataset(path)?;
    let ns = ds.dim(datasets::STATION).map(|d| d.len).ok_or_else(|| {
        input(path, datasets::STATION, "dimension is missing; hint: observations are a CF `timeSeries` file")
    })?;
    let value = variable(&ds, path, &q.variable)?;
    let nt = ds.dim_len(datasets::TIME);
    let t = if value.dims == [datasets::STATION, datasets::TIME] {
        let times =
            ds.coordinate(datasets::TIME).ok_or_else(|| input(path, datasets::TIME, "coordinate is missing"))?;
        Some(pick_time(times, q.time, path, &q.variable)?)
    } else if value.dims == [datasets::STATION] {
        None
    } else {
        return Err(input(path, &q.variable, "needs the dimensions `station, time` or `station`"));
    };
    let raw = value.num().ok_or_else(|| input(path, &q.variable, "holds strings"))?;
    let fill = value.fill_value();
    let at = |s: usize| t.map_or(s, |t| s * nt + t);
    let std: Option<Vec<f64>> = match ds.variable(datasets::OBS_ERROR_STD) {
        Some(v) => {
            let e = numbers(v, path)?;
            Some(match v.dims.as_slice() {
                [] => vec![e[0]; ns],
                [d] if d == datasets::STATION => e,
                [a, b] if a == datasets::STATION && b == datasets::TIME => (0..ns).map(|s| e[at(s)]).collect(),
                _ => {
                    return Err(input(
                        path,
                        datasets::OBS_ERROR_STD,
                        "needs the dimensions `station, time`, `station` or none",
                    ));
                }
            })
        }
        None => None,
    };
    let std = match (std, q.default_error_std) {
        (Some(s), _) => s,
        (None, Some(d)) => vec![d; ns],
        (None, None) => {
            return Err(input(path, datasets::OBS_ERROR_STD, "is missing; hint: pass `--obs-error-std`"));
        }
    };
    let coord = |name: &str| -> Result<Option<Vec<f64>>, AssimError> {
        ds.variable(name).filter(|v| v.dims == [datasets::STATION]).map(|v| numbers(v, path)).transpose()
    };
    let (x, y) = (coord(datasets::X)?, coord(datasets::Y)?);
    let index = coord(datasets::OBS_STATE_INDEX)?;
    let names: Vec<String> = match ds.variable(datasets::STATION_NAME).map(|v| &v.values) {
        Some(Values::Str(s)) if s.len() == ns => s.clone(),
        _ => (0..ns).map(|s| s.to_string()).collect(),
    };
    let mut out = ObservationFile { observations: Vec::new(), missing: 0 };
    for s in 0..ns {
        let v = raw[at(s)];
        if Some(v) == fill {
            out.missing += 1;
            continue;
        }
        let state_index = match &index {
            Some(ix) => Some(to_index(ix[s], path, &names[s])?),
            None => None,
        };
        out.observations.push(RawObservation {
            station: names[s].clone(),
            x: x.as_ref().map_or(f64::NAN, |c| c[s]),
            y: y.as_ref().map_or(f64::NAN, |c| c[s]),
            value: v,
            error_std: std[s],
            state_index,
        });
    }
    Ok(out)
}

fn to_index(v: f64, path: &Path, station: &str) -> Result<usize, AssimError> {
    if v >= 0.0 && v.fract() == 0.0 && v < 1e15 {
        Ok(v as usize)
    } else {
        Err(input(path, datasets::OBS_STATE_INDEX, format!("station `{station}` has the invalid index {v}")))
    }
}

fn read_csv(path: &Path, q: &ObservationQuery) -> Result<ObservationFile, AssimError> {
    let csv_err = |e: csv::Error| input(path, "", format!("is not valid CSV: {e}"));
    let mut reader = csv::ReaderBuilder::new().trim(csv::Trim::All).from_path(path).map_err(csv_err)?;
    let header = reader.headers().map_err(csv_err)?.clone();
    let col = |name: &str| header.iter().position(|h| h == name);
    let value_col = col(datasets::OBS_VALUE).ok_or_else(|| input(path, datasets::OBS_VALUE, "column is missing"))?;
    let (station_col, time_col, x_col, y_col, std_col, index_col) = (
        col("station"),
        col(datasets::TIME),
        col(datasets::X),
        col(datasets::Y),
        col(datasets::OBS_ERROR_STD),
        col(datasets::OBS_STATE_INDEX),
    );
    if std_col.is_none() && q.default_error_std.is_none() {
        return Err(input(path, datasets::OBS_ERROR_STD, "column is missing; hint: pass `--obs-error-std`"));
    }
    let mut rows = Vec::new();
    let mut times = Vec::new();
    for (line, record) in reader.records().enumerate() {
        let record = record.map_err(csv_err)?;
        let num = |c: Option<usize>, name: &str| -> Result<Option<f64>, AssimError> {
            match c.and_then(|c| record.get(c)) {
                None | Some("") => Ok(None),
                Some(text) => text
                    .parse::<f64>()
                    .map(Some)
                    .map_err(|_| input(path, name, format!("line {}: `{text}` is not a number", line + 2))),
            }
        };
        let station = station_col.and_then(|c| record.get(c)).map_or_else(|| (line + 2).to_string(), str::to_string);
        let time = num(time_col, datasets::TIME)?;
        if let Some(t) = time {
            times.push(t);
        }
        let value = num(Some(value_col), datasets::OBS_VALUE)?;
        let std = num(std_col, datasets::OBS_ERROR_STD)?.or(q.default_error_std).unwrap_or(f64::NAN);
        let state_index = match num(index_col, datasets::OBS_STATE_INDEX)? {
            Some(v) => Some(to_index(v, path, &station)?),
            None => None,
        };
        rows.push((time, station, num(x_col, datasets::X)?, num(y_col, datasets::Y)?, value, std, state_index));
    }
    times.sort_by(f64::total_cmp);
    times.dedup();
    let wanted = match (q.time, time_col) {
        (_, None) => None,
        (Some(t), Some(_)) => Some(times[pick_time(&times, Some(t), path, datasets::TIME)?]),
        (None, Some(_)) => Some(times[pick_time(&times, None, path, datasets::TIME)?]),
    };
    let mut out = ObservationFile { observations: Vec::new(), missing: 0 };
    for (time, station, x, y, value, error_std, state_index) in rows {
        if wanted.is_some() && time != wanted {
            continue;
        }
        match value {
            None => out.missing += 1,
            Some(value) => out.observations.push(RawObservation {
                station,
                x: x.unwrap_or(f64::NAN),
                y: y.unwrap_or(f64::NAN),
                value,
                error_std,
                state_index,
            }),
        }
    }
    Ok(out)
}

/// The observation operator of `twin-kernel assimilate`.
#[derive(Debug, Clone, PartialEq)]
pub enum Operator {
    /// Observation i sees state element `state_index` (offset within `variable` when
    /// given, else within the whole state vector).
    Identity {
        /// Variable the indices refer to (`None`: the state vector).
        variable: Option<String>,
    },
    /// Bilinear interpolation of the `[y, x]` field `variable` at the station (x, y).
    Bilinear {
        /// The observed field.
        variable: String,
    },
}

/// Builds the observations for an ensemble; returns them and the number of observations
/// outside the domain (skipped). All outside is an error.
pub fn build_observations(
    path: &Path,
    raw: &[RawObservation],
    operator: &Operator,
    ens: &EnsembleFiles,
) -> Result<(Observations, usize), AssimError> {
    let mut obs = Observations::default();
    let mut outside = 0;
    let n = ens.ensemble.nrows();
    let grid = match operator {
        Operator::Bilinear { variable } => Some((ens.block(variable).map_or(0, |b| b.offset), ens.grid_of(variable)?)),
        Operator::Identity { .. } => None,
    };
    let range = match operator {
        Operator::Identity { variable: Some(v) } => {
            let b = ens.block(v).ok_or_else(|| input(path, v, "is not among the updated variables"))?;
            b.offset..b.offset + b.len
        }
        _ => 0..n,
    };
    for o in raw {
        let row = match (operator, grid) {
            (Operator::Bilinear { .. }, Some((offset, (nxy, gx, gy)))) => {
                if !(o.x.is_finite() && o.y.is_finite()) {
                    return Err(input(path, datasets::X, format!("station `{}` has no coordinates", o.station)));
                }
                bilinear_row(offset, nxy, gx, gy, (o.x, o.y))
            }
            _ => {
                let i = o.state_index.ok_or_else(|| {
                    input(
                        path,
                        datasets::OBS_STATE_INDEX,
                        "is missing; hint: the identity operator needs state indices",
                    )
                })?;
                (range.start + i < range.end).then(|| vec![(range.start + i, 1.0)])
            }
        };
        let Some(row) = row else {
            outside += 1;
            continue;
        };
        let location =
            if o.x.is_finite() && o.y.is_finite() { [o.x, o.y] } else { ens.location[row[0].0].unwrap_or([0.0, 0.0]) };
        obs.push(o.value, o.error_std, location, row);
    }
    if obs.is_empty() {
        return Err(input(
            path,
            "",
            if raw.is_empty() {
                "holds no usable observation at the analysis time".to_string()
            } else {
                format!("all {} observations lie outside the model domain", raw.len())
            },
        ));
    }
    Ok((obs, outside))
}

/// What the diagnostics file of one analysis holds besides the report.
#[derive(Debug, Clone, PartialEq)]
pub struct DiagnosticsInfo {
    /// Analysis time.
    pub time: Option<f64>,
    /// Method name.
    pub method: String,
    /// Observations skipped outside the domain.
    pub outside: usize,
    /// Observations missing in the file.
    pub missing: usize,
    /// RMSE of the forecast and analysis means against the truth.
    pub truth_rmse: Option<(f64, f64)>,
}

/// Writes the diagnostics of one analysis (NetCDF or HDF5 by extension).
pub fn write_diagnostics(
    path: &Path,
    report: &AnalysisReport,
    obs: &Observations,
    info: &DiagnosticsInfo,
    provenance: &Provenance,
) -> Result<PathBuf, AssimError> {
    let m = obs.len();
    let n = report.forecast_spread.len();
    let mut ds = Dataset {
        dims: vec![
            Dim { name: "obs".into(), len: m, unlimited: false },
            Dim { name: "state".into(), len: n, unlimited: false },
        ],
        variables: Vec::new(),
        attrs: provenance.to_attrs(),
    };
    ds.set_attr(cf::CONVENTIONS, Attr::Str(twinflow_contract::provenance::CONVENTIONS.into()));
    ds.set_attr("method", Attr::Str(info.method.clone()));
    ds.set_attr("observations_used", Attr::I64(vec![m as i64]));
    ds.set_attr("observations_outside_domain", Attr::I64(vec![info.outside as i64]));
    ds.set_attr("observations_missing", Attr::I64(vec![info.missing as i64]));
    let obs_var = |name: &str, long: &str, v: Vec<f64>| Variable::f64(name, &["obs"], long, "1", v);
    ds.variables.extend([
        obs_var("obs_value", "observed value", obs.value.clone()),
        obs_var("obs_error_std", "observation error standard deviation", obs.error_std.clone()),
        obs_var("obs_x", "observation x", obs.location.iter().map(|p| p[0]).collect()),
        obs_var("obs_y", "observation y", obs.location.iter().map(|p| p[1]).collect()),
        obs_var("innovation", "observation minus forecast mean (y - H xb)", report.innovation.clone()),
        obs_var("forecast_mean_obs", "forecast mean in observation space", report.forecast_mean_obs.clone()),
        obs_var("analysis_mean_obs", "analysis mean in observation space", report.analysis_mean_obs.clone()),
        Variable::f64(
            "forecast_spread",
            &["state"],
            "forecast ensemble standard deviation",
            "1",
            report.forecast_spread.clone(),
        ),
        Variable::f64(
            "analysis_spread",
            &["state"],
            "analysis ensemble standard deviation",
            "1",
            report.analysis_spread.clone(),
        ),
    ]);
    let rms = |v: &[f64]| crate::filter::rms(v.iter().copied());
    let mut scalars = vec![
        ("rmse_obs_forecast", "RMSE of the forecast mean against the observations", report.rmse_obs_forecast()),
        ("rmse_obs_analysis", "RMSE of the analysis mean against the observations", report.rmse_obs_analysis()),
        ("spread_forecast", "root mean forecast variance", rms(&report.forecast_spread)),
        ("spread_analysis", "root mean analysis variance", rms(&report.analysis_spread)),
    ];
    if let Some((f, a)) = info.truth_rmse {
        scalars.push(("rmse_truth_forecast", "RMSE of the forecast mean against the truth", f));
        scalars.push(("rmse_truth_analysis", "RMSE of the analysis mean against the truth", a));
    }
    if let Some(t) = info.time {
        scalars.push((datasets::TIME, "analysis time", t));
    }
    for (name, long, v) in scalars {
        ds.variables.push(Variable::f64(name, &[], long, "1", vec![v]));
    }
    Ok(write_dataset(path, &ds, &Compression::default())?)
}

/// A Lorenz-96 state file: `state[site]` (one state), `state[member, site]` (members) or
/// `state[time, site]` (a trajectory, `times` given), with the `site` coordinate and the
/// model time as a global attribute.
pub fn write_lorenz96(
    path: &Path,
    states: &[Vec<f64>],
    leading: Option<&str>,
    times: Option<&[f64]>,
    model_time: f64,
    provenance: &Provenance,
) -> Result<PathBuf, AssimError> {
    let n = states.first().map_or(0, Vec::len);
    let mut dims = vec![Dim { name: datasets::LORENZ96_SITE.into(), len: n, unlimited: false }];
    let mut vars = vec![Variable::f64(
        datasets::LORENZ96_SITE,
        &[datasets::LORENZ96_SITE],
        "Lorenz-96 grid site",
        "1",
        (0..n).map(|i| i as f64).collect(),
    )];
    let state_dims: Vec<&str> = match leading {
        Some(l) => {
            dims.insert(0, Dim { name: l.into(), len: states.len(), unlimited: false });
            vec![l, datasets::LORENZ96_SITE]
        }
        None => vec![datasets::LORENZ96_SITE],
    };
    if let Some(t) = times {
        vars.push(Variable::f64(datasets::TIME, &[datasets::TIME], "model time", "1", t.to_vec()));
    }
    vars.push(Variable::f64(datasets::LORENZ96_STATE, &state_dims, "Lorenz-96 state", "1", states.concat()));
    let mut ds = Dataset { dims, variables: vars, attrs: provenance.to_attrs() };
    ds.set_attr(cf::CONVENTIONS, Attr::Str(twinflow_contract::provenance::CONVENTIONS.into()));
    ds.set_attr(MODEL_TIME_ATTR, Attr::F64(vec![model_time]));
    Ok(write_dataset(path, &ds, &Compression::default())?)
}

/// A CF `timeSeries` observation file: `value[station, time]`, `error_std[station, time]`,
/// station `x`, `y`, `state_index`, `station_name`.
#[allow(clippy::too_many_arguments)]
pub fn write_observations(
    path: &Path,
    names: &[String],
    x: &[f64],
    y: &[f64],
    state_index: &[usize],
    times: &[f64],
    value: &[f64],
    error_std: &[f64],
    provenance: &Provenance,
) -> Result<PathBuf, AssimError> {
    let st = [datasets::STATION];
    let stt = [datasets::STATION, datasets::TIME];
    let mut ds = Dataset {
        dims: vec![
            Dim { name: datasets::STATION.into(), len: names.len(), unlimited: false },
            Dim { name: datasets::TIME.into(), len: times.len(), unlimited: false },
        ],
        variables: vec![
            Variable {
                name: datasets::STATION_NAME.into(),
                dims: vec![datasets::STATION.into()],
                dtype: DType::Str,
                attrs: vec![(cf::CF_ROLE.into(), Attr::Str("timeseries_id".into()))],
                values: Values::Str(names.to_vec()),
            },
            Variable::f64(datasets::X, &st, "x of station", "1", x.to_vec()),
            Variable::f64(datasets::Y, &st, "y of station", "1", y.to_vec()),
            Variable::f64(
                datasets::OBS_STATE_INDEX,
                &st,
                "observed state element",
                "1",
                state_index.iter().map(|&i| i as f64).collect(),
            ),
            Variable::f64(datasets::TIME, &[datasets::TIME], "model time", "1", times.to_vec())
                .with_attr(cf::AXIS, Attr::Str("T".into())),
            Variable::f64(datasets::OBS_VALUE, &stt, "observed value", "1", value.to_vec())
                .with_attr(cf::FILL_VALUE, Attr::F64(vec![cf::FILL_F64]))
                .with_attr(cf::COORDINATES, Attr::Str("time x y station_name".into())),
            Variable::f64(
                datasets::OBS_ERROR_STD,
                &stt,
                "observation error standard deviation",
                "1",
                error_std.to_vec(),
            ),
        ],
        attrs: provenance.to_attrs(),
    };
    ds.set_attr(cf::CONVENTIONS, Attr::Str(twinflow_contract::provenance::CONVENTIONS.into()));
    ds.set_attr(cf::FEATURE_TYPE, Attr::Str("timeSeries".into()));
    Ok(write_dataset(path, &ds, &Compression::default())?)
}

/// The per-cycle analysis RMSE of an in-process twin (`rmse_analysis[cycle]`).
pub fn write_rmse_series(path: &Path, series: &[f64], provenance: &Provenance) -> Result<PathBuf, AssimError> {
    let mut ds = Dataset {
        dims: vec![Dim { name: "cycle".into(), len: series.len(), unlimited: false }],
        variables: vec![
            Variable::f64("cycle", &["cycle"], "analysis cycle", "1", (1..=series.len()).map(|c| c as f64).collect()),
            Variable::f64(
                "rmse_analysis",
                &["cycle"],
                "RMSE of the analysis mean against the truth",
                "1",
                series.to_vec(),
            ),
        ],
        attrs: provenance.to_attrs(),
    };
    ds.set_attr(cf::CONVENTIONS, Attr::Str(twinflow_contract::provenance::CONVENTIONS.into()));
    Ok(write_dataset(path, &ds, &Compression::default())?)
}
