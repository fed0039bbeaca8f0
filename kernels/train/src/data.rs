//! Training data: feature and target matrices read from HDF5 or NetCDF datasets, the
//! train/validation split and the standardisation.
//!
//! A dataset's first dimension is the sample; its trailing dimensions are flattened
//! (row-major) into columns, so `cells[event, layer, y, x]` gives one column per cell.
//! Several feature datasets are concatenated column-wise in the order given. HDF5 datasets
//! are named by path (`truth/energy`, `/conditions/temperature`); NetCDF variables by name,
//! or by `group/name` in netCDF-4 groups. Any numeric type is read as `f64`; values equal
//! to the dataset's `_FillValue` count as missing, and a missing or non-finite value is an
//! error naming the file, dataset and sample.
//!
//! A feature may be reduced per sample over its trailing dimensions: `cells:sum` (one
//! column, the sum), `cells:log-sum` (one column, `ln` of the sum, which must be > 0) and
//! `cells:profile` (one column per index of the first trailing dimension, summed over the
//! others: the energy per layer of `cells[event, layer, y, x]`). A calorimeter's
//! `cells:log-sum` with the temperature lets even a linear model in `ln E` correct the
//! gain drift that the naive `Σ cells / sampling_fraction` ignores.

use std::ops::Range;
use std::path::{Path, PathBuf};

use ndarray::{Array2, ArrayView2, Axis};
use rand::SeedableRng as _;
use rand::seq::SliceRandom as _;
use rand_chacha::ChaCha8Rng;

use super::error::TrainError;
use super::shard::{Sharding, reduce_slots};
use twinflow_comm::Communicator;
use twinflow_exchange::{ArrayFile, ExchangeError, Format};

/// ChaCha stream of the train/validation split (epochs use streams `0, 1, 2, …`).
pub const SPLIT_STREAM: u64 = u64::MAX - 1;

/// An open input file of either format.
#[derive(Debug)]
pub struct DataFile {
    path: PathBuf,
    file: ArrayFile,
}

/// `truth/energy` and `/truth/energy` name the same dataset.
fn clean(name: &str) -> &str {
    name.trim_start_matches('/')
}

impl DataFile {
    /// Opens `path` (format from the extension: `.h5`/`.hdf5`/`.he5` → HDF5, else NetCDF).
    pub fn open(path: &Path) -> Result<Self, TrainError> {
        let open_err = |reason: String| TrainError::Open { path: path.to_path_buf(), reason };
        if !path.is_file() {
            return Err(open_err("no such file".into()));
        }
        let kind = match Format::from_path(path) {
            Format::Hdf5 => "HDF5",
            Format::Netcdf => "NetCDF",
        };
        let file = ArrayFile::open(path)
            .map_err(|e| open_err(format!("not a readable {kind} file: {}", e.library_message())))?;
        Ok(Self { path: path.to_path_buf(), file })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether a numeric dataset `name` exists.
    pub fn has(&self, name: &str) -> bool {
        self.file.contains(clean(name))
    }

    /// A numeric scalar attribute of the root (HDF5) or the file (NetCDF).
    pub fn root_attr_f64(&self, name: &str) -> Option<f64> {
        self.file.root_attr_f64(name)
    }

    /// Datasets of the file, for hints (at most 40 names).
    pub fn available(&self) -> String {
        let mut names = self.file.names();
        if names.is_empty() {
            return "no datasets".into();
        }
        let more = names.len().saturating_sub(40);
        names.truncate(40);
        let mut text = names.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ");
        if more > 0 {
            text.push_str(&format!(" and {more} more"));
        }
        text
    }

    /// Reads dataset `name` as a `[sample, column]` matrix (trailing dimensions flattened);
    /// fill values become NaN. Finiteness is not checked here.
    pub fn read_matrix(&self, name: &str) -> Result<Array2<f64>, TrainError> {
        let shape = self.shape(name)?;
        let values = self.read_rows(name, &shape, 0..shape[0])?;
        let (rows, cols) = (shape[0], shape[1..].iter().product());
        Array2::from_shape_vec((rows, cols), values).map_err(|e| TrainError::Data {
            path: self.path.clone(),
            dataset: clean(name).into(),
            reason: format!("has an inconsistent shape ({e})"),
        })
    }

    /// The shape of dataset `name` (at least 1-D, no empty axis), from the metadata alone.
    pub fn shape(&self, name: &str) -> Result<Vec<usize>, TrainError> {
        let name = clean(name);
        let data_err = |reason: String| TrainError::Data { path: self.path.clone(), dataset: name.into(), reason };
        let missing = || TrainError::MissingDataset {
            path: self.path.clone(),
            dataset: name.into(),
            available: self.available(),
        };
        let shape = match self.file.shape(name) {
            Ok(Some(shape)) => shape,
            Ok(None) => return Err(missing()),
            Err(_) => return Err(data_err("is not a dataset (a group?)".into())),
        };
        let Some((&rows, rest)) = shape.split_first() else {
            return Err(data_err("is a scalar; hint: the first dimension must be the sample".into()));
        };
        if rows == 0 {
            return Err(data_err("has no samples".into()));
        }
        if rest.iter().product::<usize>() == 0 {
            return Err(data_err(format!("has shape {shape:?}: no values per sample")));
        }
        Ok(shape)
    }

    /// Columns feature `spec` gives per sample (from the metadata alone).
    pub fn feature_width(&self, spec: &str) -> Result<usize, TrainError> {
        let (name, reduction) = Reduction::parse(spec);
        let shape = self.shape(name)?;
        match reduction {
            Reduction::None => Ok(shape[1..].iter().product()),
            Reduction::Sum | Reduction::LogSum => Ok(1),
            Reduction::Profile => shape.get(1).copied().ok_or_else(|| TrainError::Data {
                path: self.path.clone(),
                dataset: spec.into(),
                reason: "has no trailing dimension to profile; hint: `:profile` needs [sample, n, ...]".into(),
            }),
        }
    }

    /// Reads the samples `rows` of feature `spec` (a dataset name, optionally with a
    /// `:sum`, `:log-sum` or `:profile` reduction) as a `[sample, column]` matrix, reading
    /// only those rows from the file (a hyperslab); every value must be finite. Errors name
    /// samples by their index in the file.
    pub fn read_feature(&self, spec: &str, rows: Range<usize>) -> Result<Array2<f64>, TrainError> {
        let (name, reduction) = Reduction::parse(spec);
        let shape = self.shape(name)?;
        let values = self.read_rows(name, &shape, rows.clone())?;
        let (n, cols): (usize, usize) = (rows.len(), shape[1..].iter().product());
        let raw = Array2::from_shape_vec((n, cols), values).expect("shape checked");
        check_finite(&self.path, name, raw.view(), rows.start)?;
        let bad = |reason: String| TrainError::Data { path: self.path.clone(), dataset: spec.into(), reason };
        Ok(match reduction {
            Reduction::None => raw,
            Reduction::Sum => raw.sum_axis(Axis(1)).insert_axis(Axis(1)),
            Reduction::LogSum => {
                let sums = raw.sum_axis(Axis(1));
                if let Some((i, v)) = sums.iter().enumerate().find(|(_, v)| **v <= 0.0) {
                    let i = rows.start + i;
                    return Err(bad(format!("has the sum {v} at sample {i}; hint: `:log-sum` needs positive sums")));
                }
                sums.mapv(f64::ln).insert_axis(Axis(1))
            }
            Reduction::Profile => {
                let first = self.feature_width(spec)?;
                let inner = cols / first.max(1);
                let mut out = Array2::zeros((n, first));
                for (r, row) in raw.rows().into_iter().enumerate() {
                    for (k, chunk) in row.as_slice().expect("standard layout").chunks_exact(inner.max(1)).enumerate() {
                        out[[r, k]] = chunk.iter().sum();
                    }
                }
                out
            }
        })
    }

    /// Reads the samples `rows` of dataset `name` of shape `shape` (see [`Self::shape`]),
    /// flattened row-major; fill values become NaN. Only those rows are read: an HDF5
    /// hyperslab or a NetCDF start/count selection along the first dimension.
    fn read_rows(&self, name: &str, shape: &[usize], rows: Range<usize>) -> Result<Vec<f64>, TrainError> {
        let name = clean(name);
        let data_err = |reason: String| TrainError::Data { path: self.path.clone(), dataset: name.into(), reason };
        let cols: usize = shape[1..].iter().product();
        if rows.end > shape[0] || rows.start > rows.end {
            return Err(data_err(format!("has {} samples, rows {rows:?} were asked for", shape[0])));
        }
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let values = self.file.read_rows(name, shape.len(), rows.clone()).map_err(|e| match e {
            ExchangeError::MissingVariable { .. } => data_err("disappeared".into()),
            ExchangeError::Layout { .. } => data_err("is not a dataset (a group?)".into()),
            too_large @ ExchangeError::TooLarge { .. } => TrainError::Exchange(too_large),
            other => data_err(format!("is not numeric ({})", other.library_message())),
        })?;
        if values.len() != rows.len() * cols {
            return Err(data_err(format!("gave {} values for rows {rows:?} of the shape {shape:?}", values.len())));
        }
        Ok(values)
    }

    /// The features and target `load_table` and `load_shards` read: checks that the
    /// datasets exist and that their sample counts agree, from the metadata alone.
    pub fn layout(&self, features: &[String], target: &str, use_target: TargetUse) -> Result<Layout, TrainError> {
        if features.is_empty() {
            return Err(TrainError::Request("no feature datasets given; hint: `--features NAME` (repeatable)".into()));
        }
        let mut widths = Vec::new();
        let mut first: Option<(&str, usize)> = None;
        for spec in features {
            let (name, _) = Reduction::parse(spec);
            let rows = self.shape(name)?[0];
            widths.push(self.feature_width(spec)?);
            match first {
                Some((f0, n0)) if rows != n0 => {
                    return Err(TrainError::Data {
                        path: self.path.clone(),
                        dataset: name.into(),
                        reason: format!(
                            "has {rows} samples, but `{f0}` has {n0}; hint: the first dimension is the sample"
                        ),
                    });
                }
                Some(_) => {}
                None => first = Some((name, rows)),
            }
        }
        let (f0, n) = first.expect("at least one feature");
        let outputs = match use_target {
            TargetUse::IfPresent if !self.has(target) => None,
            _ => {
                let shape = self.shape(target)?;
                if shape[0] != n {
                    return Err(TrainError::Data {
                        path: self.path.clone(),
                        dataset: clean(target).into(),
                        reason: format!("has {} samples, but the features (`{f0}`) have {n}", shape[0]),
                    });
                }
                Some(shape[1..].iter().product())
            }
        };
        Ok(Layout {
            path: self.path.clone(),
            samples: n,
            features: features.iter().map(|f| clean(f).to_string()).collect(),
            feature_widths: widths,
            target: clean(target).to_string(),
            outputs,
        })
    }

    /// Reads the samples `rows` of the features (concatenated column-wise) and target of
    /// `layout`; every value must be finite.
    pub fn read_slab(
        &self,
        layout: &Layout,
        rows: Range<usize>,
    ) -> Result<(Array2<f64>, Option<Array2<f64>>), TrainError> {
        let blocks =
            layout.features.iter().map(|f| self.read_feature(f, rows.clone())).collect::<Result<Vec<_>, _>>()?;
        let views: Vec<_> = blocks.iter().map(|b| b.view()).collect();
        let x = ndarray::concatenate(Axis(1), &views).expect("row counts checked");
        let y = match layout.outputs {
            Some(outputs) => {
                let t = &layout.target;
                let shape = self.shape(t)?;
                let values = self.read_rows(t, &shape, rows.clone())?;
                let y = Array2::from_shape_vec((rows.len(), outputs), values).expect("shape checked");
                check_finite(&self.path, t, y.view(), rows.start)?;
                Some(y)
            }
            None => None,
        };
        Ok((x, y))
    }
}

/// A per-sample reduction of a feature dataset over its trailing dimensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reduction {
    /// Every value is a column.
    None,
    /// The sum (one column).
    Sum,
    /// `ln` of the sum (one column).
    LogSum,
    /// Sums over all but the first trailing dimension (one column per index).
    Profile,
}

impl Reduction {
    /// Splits `cells:sum` into the dataset name and the reduction; a name without a known
    /// suffix is taken whole.
    pub fn parse(spec: &str) -> (&str, Self) {
        let spec = clean(spec);
        match spec.rsplit_once(':') {
            Some((name, "sum")) => (name, Self::Sum),
            Some((name, "log-sum")) => (name, Self::LogSum),
            Some((name, "profile")) => (name, Self::Profile),
            _ => (spec, Self::None),
        }
    }
}

/// Features and (optionally) targets of every sample of a file.
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    /// File the table was read from.
    pub path: PathBuf,
    /// Features, `[sample, column]`.
    pub x: Array2<f64>,
    /// Targets, `[sample, output]` (`None` when not asked for or absent).
    pub y: Option<Array2<f64>>,
    /// Feature dataset names, in column order.
    pub features: Vec<String>,
    /// Columns contributed by each feature dataset.
    pub feature_widths: Vec<usize>,
    /// Target dataset name.
    pub target: Option<String>,
}

impl Table {
    /// Number of samples.
    pub fn samples(&self) -> usize {
        self.x.nrows()
    }
}

/// How [`load_table`] treats the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetUse {
    /// The target must exist (training).
    Required,
    /// Read it if present (prediction: the truth is copied).
    IfPresent,
}

/// Reads the feature datasets (concatenated column-wise) and the target of `path`, and
/// checks that every sample count agrees and every value is finite.
pub fn load_table(path: &Path, features: &[String], target: &str, use_target: TargetUse) -> Result<Table, TrainError> {
    let file = DataFile::open(path)?;
    let layout = file.layout(features, target, use_target)?;
    let (x, y) = file.read_slab(&layout, 0..layout.samples)?;
    Ok(Table {
        path: path.to_path_buf(),
        x,
        y,
        features: layout.features,
        feature_widths: layout.feature_widths,
        target: Some(layout.target),
    })
}

/// What a file holds for training: sample count, feature columns and target, from the
/// metadata ([`DataFile::layout`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// File concerned.
    pub path: PathBuf,
    /// Samples in the file.
    pub samples: usize,
    /// Feature specifications (with their reductions), in column order.
    pub features: Vec<String>,
    /// Columns contributed by each feature.
    pub feature_widths: Vec<usize>,
    /// Target dataset name.
    pub target: String,
    /// Target columns, `None` when the target is absent (prediction only).
    pub outputs: Option<usize>,
}

/// The rows of one shard: features and target of samples `first..first + x.nrows()`.
#[derive(Debug, Clone, PartialEq)]
pub struct Slab {
    /// Shard number.
    pub shard: usize,
    /// First sample (row of the file).
    pub first: usize,
    /// Features, `[sample, column]`.
    pub x: Array2<f64>,
    /// Targets, `[sample, output]`.
    pub y: Array2<f64>,
}

/// The shards of a training file that one rank holds ([`super::shard`]).
#[derive(Debug, Clone, PartialEq)]
pub struct ShardedTable {
    /// The file's layout (every rank knows all of it).
    pub layout: Layout,
    /// How the samples are cut into shards.
    pub sharding: Sharding,
    /// The shards this rank owns, ascending.
    pub slabs: Vec<Slab>,
}

/// Opens a training file and reads only the shards rank `rank` of `size` owns when the
/// samples are cut into `shards` shards: one hyperslab of rows per shard.
pub fn load_shards(
    path: &Path,
    features: &[String],
    target: &str,
    shards: usize,
    rank: usize,
    size: usize,
) -> Result<ShardedTable, TrainError> {
    let file = DataFile::open(path)?;
    let layout = file.layout(features, target, TargetUse::Required)?;
    let sharding = Sharding::new(layout.samples, shards);
    let slabs = sharding
        .owned(rank, size)
        .into_iter()
        .map(|s| {
            let rows = sharding.range(s);
            let (x, y) = file.read_slab(&layout, rows.clone())?;
            Ok(Slab { shard: s, first: rows.start, x, y: y.expect("the target is required") })
        })
        .collect::<Result<Vec<_>, TrainError>>()?;
    Ok(ShardedTable { layout, sharding, slabs })
}

impl ShardedTable {
    /// The shards rank `rank` of `size` owns of a table already in memory (benchmarks,
    /// tests); `table` must have a target.
    pub fn from_table(table: &Table, shards: usize, rank: usize, size: usize) -> Self {
        let y = table.y.as_ref().expect("a training table has a target");
        let sharding = Sharding::new(table.samples(), shards);
        let slabs = sharding
            .owned(rank, size)
            .into_iter()
            .map(|s| {
                let rows = sharding.range(s);
                let x = table.x.slice(ndarray::s![rows.clone(), ..]).to_owned();
                Slab { shard: s, first: rows.start, x, y: y.slice(ndarray::s![rows.clone(), ..]).to_owned() }
            })
            .collect();
        let layout = Layout {
            path: table.path.clone(),
            samples: table.samples(),
            features: table.features.clone(),
            feature_widths: table.feature_widths.clone(),
            target: table.target.clone().unwrap_or_default(),
            outputs: Some(y.ncols()),
        };
        Self { layout, sharding, slabs }
    }
}

/// Fails on the first non-finite value of `m`, whose row 0 is sample `first` of the file.
fn check_finite(path: &Path, name: &str, m: ArrayView2<'_, f64>, first: usize) -> Result<(), TrainError> {
    if let Some(((i, j), v)) = m.indexed_iter().find(|(_, v)| !v.is_finite()) {
        let what = if v.is_nan() { "a missing value (NaN or _FillValue)" } else { "an infinite value" };
        let i = first + i;
        return Err(TrainError::Data {
            path: path.to_path_buf(),
            dataset: clean(name).into(),
            reason: format!("has {what} at sample {i}, column {j}; hint: drop or fill such samples first"),
        });
    }
    Ok(())
}

/// Sample indices of the training and validation sets, each ascending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    /// Training samples.
    pub train: Vec<usize>,
    /// Validation samples.
    pub val: Vec<usize>,
}

/// Splits `0..n` at random (ChaCha8 keyed by `seed`, stream [`SPLIT_STREAM`]): a fraction
/// `val_fraction` (rounded, at least one sample) goes to validation.
pub fn split(n: usize, val_fraction: f64, seed: u64) -> Split {
    let mut order: Vec<usize> = (0..n).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(SPLIT_STREAM);
    order.shuffle(&mut rng);
    let n_val = ((n as f64 * val_fraction).round() as usize).clamp(1, n.saturating_sub(1).max(1));
    let mut val = order[..n_val].to_vec();
    let mut train = order[n_val..].to_vec();
    val.sort_unstable();
    train.sort_unstable();
    Split { train, val }
}

/// Per-column mean and standard deviation used to standardise features and targets.
#[derive(Debug, Clone, PartialEq)]
pub struct Normalization {
    /// Feature means.
    pub x_mean: Vec<f64>,
    /// Feature standard deviations (1 for constant columns).
    pub x_std: Vec<f64>,
    /// Target means (after the target transform).
    pub y_mean: Vec<f64>,
    /// Target standard deviations (after the target transform; 1 if constant).
    pub y_std: Vec<f64>,
}

/// One shard's part of a collective statistic: the shard number, its rows and the rows
/// that count (offsets into the shard, ascending).
#[derive(Debug, Clone, Copy)]
pub struct ShardRows<'a> {
    /// Shard number.
    pub shard: usize,
    /// The shard's rows (`[sample, column]`).
    pub m: ArrayView2<'a, f64>,
    /// The rows that count.
    pub rows: &'a [usize],
}

/// Column sums of the counted rows of every shard (each shard summed in row order, the
/// shards added in shard order: [`super::shard::reduce_slots`]), the same on every rank.
/// Collective.
pub fn column_sums(
    comm: &dyn Communicator,
    shards: usize,
    cols: usize,
    parts: &[ShardRows<'_>],
    term: impl Fn(usize, f64) -> f64,
) -> Vec<f64> {
    let mut slots = vec![0.0; shards * cols];
    for p in parts {
        let slot = &mut slots[p.shard * cols..(p.shard + 1) * cols];
        for &r in p.rows {
            for (j, (acc, v)) in slot.iter_mut().zip(p.m.row(r)).enumerate() {
                *acc += term(j, *v);
            }
        }
    }
    reduce_slots(comm, &mut slots, cols)
}

/// Column means and population standard deviations over the counted rows of every shard
/// (`n` rows in all; two passes, [`column_sums`]); a constant column gets a standard
/// deviation of 1 so it standardises to 0. Collective.
fn column_stats(
    comm: &dyn Communicator,
    shards: usize,
    cols: usize,
    parts: &[ShardRows<'_>],
    n: usize,
) -> (Vec<f64>, Vec<f64>) {
    let n = n.max(1) as f64;
    let mut mean = column_sums(comm, shards, cols, parts, |_, v| v);
    mean.iter_mut().for_each(|v| *v /= n);
    let var = column_sums(comm, shards, cols, parts, |j, v| (v - mean[j]) * (v - mean[j]));
    let std = var
        .iter()
        .zip(&mean)
        .map(|(v, mu)| {
            let s = (v / n).sqrt();
            if s.is_finite() && s > 1e-12 * (1.0 + mu.abs()) { s } else { 1.0 }
        })
        .collect();
    (mean, std)
}

impl Normalization {
    /// Statistics of the training rows of every shard's features `x` and (transformed)
    /// targets `y` (`n_train` rows in all; `columns` = feature and target columns, known to
    /// every rank, also those without shards), the same on every rank. Collective.
    pub fn fit(
        comm: &dyn Communicator,
        shards: usize,
        columns: (usize, usize),
        x: &[ShardRows<'_>],
        y: &[ShardRows<'_>],
        n_train: usize,
    ) -> Self {
        let (x_mean, x_std) = column_stats(comm, shards, columns.0, x, n_train);
        let (y_mean, y_std) = column_stats(comm, shards, columns.1, y, n_train);
        Self { x_mean, x_std, y_mean, y_std }
    }

    /// Standardised features.
    pub fn apply_x(&self, x: ArrayView2<'_, f64>) -> Array2<f64> {
        standardize(x, &self.x_mean, &self.x_std)
    }

    /// Standardised (transformed) targets.
    pub fn apply_y(&self, y: ArrayView2<'_, f64>) -> Array2<f64> {
        standardize(y, &self.y_mean, &self.y_std)
    }

    /// Standardised targets back to (transformed) target units.
    pub fn invert_y(&self, ys: ArrayView2<'_, f64>) -> Array2<f64> {
        let mut y = ys.to_owned();
        for mut row in y.rows_mut() {
            for ((v, mu), s) in row.iter_mut().zip(&self.y_mean).zip(&self.y_std) {
                *v = *v * s + mu;
            }
        }
        y
    }
}

fn standardize(m: ArrayView2<'_, f64>, mean: &[f64], std: &[f64]) -> Array2<f64> {
    let mut out = m.to_owned();
    for mut row in out.rows_mut() {
        for ((v, mu), s) in row.iter_mut().zip(mean).zip(std) {
            *v = (*v - mu) / s;
        }
    }
    out
}

/// A blake3 digest of the values and shapes of the features and targets of every shard
/// (`parts`: shard, features, targets of this rank's shards): a checkpoint is only resumed
/// on the data it was trained on. Each owner hashes its shards; the 32-byte digests travel
/// as integer slots (exact), and every rank hashes them in shard order. Collective.
pub fn fingerprint(
    comm: &dyn Communicator,
    sharding: Sharding,
    parts: &[(usize, ArrayView2<'_, f64>, ArrayView2<'_, f64>)],
) -> String {
    let mut words = vec![0_u64; 4 * sharding.shards];
    for (s, x, y) in parts {
        let mut h = blake3::Hasher::new();
        for m in [x, y] {
            h.update(&(m.nrows() as u64).to_le_bytes());
            h.update(&(m.ncols() as u64).to_le_bytes());
            for v in m.iter() {
                h.update(&v.to_le_bytes());
            }
        }
        for (w, bytes) in words[4 * s..4 * s + 4].iter_mut().zip(h.finalize().as_bytes().chunks_exact(8)) {
            *w = u64::from_le_bytes(bytes.try_into().expect("8 bytes"));
        }
    }
    comm.allreduce_sum_u64(&mut words);
    let mut h = blake3::Hasher::new();
    h.update(&(sharding.rows as u64).to_le_bytes());
    h.update(&(sharding.shards as u64).to_le_bytes());
    for w in &words {
        h.update(&w.to_le_bytes());
    }
    h.finalize().to_hex()[..32].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;
    use twinflow_comm::SingleProcess;

    #[test]
    fn split_is_deterministic_and_disjoint() {
        let a = split(10, 0.3, 7);
        assert_eq!(a, split(10, 0.3, 7));
        assert_eq!((a.train.len(), a.val.len()), (7, 3));
        let mut all: Vec<usize> = a.train.iter().chain(&a.val).copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..10).collect::<Vec<_>>());
        assert_ne!(split(100, 0.3, 7), split(100, 0.3, 8));
        assert_eq!(split(3, 0.0, 1).val.len(), 1, "at least one validation sample");
    }

    #[test]
    fn reductions_are_parsed_from_the_suffix() {
        assert_eq!(Reduction::parse("/cells:log-sum"), ("cells", Reduction::LogSum));
        assert_eq!(Reduction::parse("a/b:profile"), ("a/b", Reduction::Profile));
        assert_eq!(Reduction::parse("x:sum"), ("x", Reduction::Sum));
        assert_eq!(Reduction::parse("odd:name"), ("odd:name", Reduction::None));
    }

    #[test]
    fn constant_columns_standardise_to_zero() {
        let x = array![[1.0, 5.0], [3.0, 5.0]];
        let part = [ShardRows { shard: 0, m: x.view(), rows: &[0, 1] }];
        let n = Normalization::fit(&SingleProcess, 1, (2, 2), &part, &part, 2);
        assert_eq!(n.x_mean, [2.0, 5.0]);
        assert_eq!(n.x_std, [1.0, 1.0]);
        assert_eq!(n.apply_x(x.view()), array![[-1.0, 0.0], [1.0, 0.0]]);
        assert_eq!(n.invert_y(n.apply_y(x.view()).view()), x);
    }
}
