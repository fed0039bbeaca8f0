//! Model and checkpoint files (HDF5): one layout for both, so a model file can seed
//! another run (`--init-from`) and a checkpoint can be inspected like a model.
//!
//! ```text
//! /                      attributes: provenance (CF title/source/history, twinflow_*),
//!                        twinflow_model_format, kind (model|checkpoint), model (mlp|linear),
//!                        layer_sizes, hidden, activation, lr, lr_schedule, batch_size,
//!                        micro_batch, shards, epochs, epochs_run, seed, val_fraction, weight_decay,
//!                        target_transform, hyperparameters (JSON, authoritative),
//!                        features (JSON list), feature_widths, target, outputs, samples,
//!                        n_train, n_val, data_fingerprint, data_file, adam_step, diverged,
//!                        train_loss, val_loss, val_rmse, best_epoch, best_val_rmse,
//!                        baseline_val_rmse
//! /layers/<l>/weight     [n_in, n_out]  f64
//! /layers/<l>/bias       [n_out]        f64
//! /normalization/feature_mean, feature_std   [features]
//! /normalization/target_mean, target_std     [outputs]  (after the target transform)
//! /optimizer/m, /optimizer/v                 [parameters]  (flat, layer by layer: W then b)
//! /metrics/epoch, train_loss, val_loss, val_rmse, lr, seconds   [epochs_run]
//! /linear/coefficients [features, outputs], /linear/intercept [outputs]   (linear models:
//!                        the fit in the units of the (transformed) target and raw features)
//! ```
//!
//! Checkpoints are written to `<path>.partial`, synced and renamed over the previous
//! checkpoint, so a kill at any moment leaves either the old or the new one, never a
//! half-written file under the real name. A `.partial` file is never read.

use std::path::{Path, PathBuf};

use ndarray::ArrayView1;
use twinflow_exchange::{Attr, ExchangeError, H5File, H5Group, PartialFile, Provenance};

use super::data::Normalization;
use super::error::TrainError;
use super::fit::{EpochMetrics, InputSpec, TrainState};
use super::hyper::Hyperparameters;
use super::model::Mlp;
use super::optim::Adam;

/// Value of the `twinflow_model_format` attribute.
/// Version 2: sharded training (the `shards` hyperparameter, per-shard data fingerprint).
pub const FORMAT: &str = "twinflow-surrogate-2";

/// What a file is for (the layout is the same).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The result of a finished run.
    Model,
    /// A resumable snapshot of a run in progress.
    Checkpoint,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Self::Model => "model",
            Self::Checkpoint => "checkpoint",
        }
    }
}

/// Writes a finished model to `path` (via `path.partial`; a previous file is removed
/// first, as for every kernel output).
pub fn write_model(path: &Path, state: &TrainState, provenance: &Provenance) -> Result<PathBuf, TrainError> {
    let partial = PartialFile::new(path)?;
    write_file(partial.partial_path(), state, Kind::Model, provenance)?;
    Ok(partial.commit()?)
}

/// Writes a checkpoint to `path.partial`, syncs it and renames it over `path`: the
/// previous checkpoint stays valid until the new one is complete.
pub fn write_checkpoint(path: &Path, state: &TrainState, provenance: &Provenance) -> Result<(), TrainError> {
    let mut name = path.as_os_str().to_owned();
    name.push(twinflow_contract::PARTIAL_SUFFIX);
    let partial = PathBuf::from(name);
    let result = write_file(&partial, state, Kind::Checkpoint, provenance).and_then(|()| {
        let io = |action, source| TrainError::Io { path: partial.clone(), action, source };
        std::fs::File::open(&partial).and_then(|f| f.sync_all()).map_err(|e| io("sync", e))?;
        std::fs::rename(&partial, path).map_err(|e| io("rename", e))
    });
    if result.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    result
}

fn put_str(loc: &H5Group, name: &str, value: &str) -> Result<(), ExchangeError> {
    loc.write_attr(name, &Attr::Str(value.to_string()))
}

fn put_f64(loc: &H5Group, name: &str, value: f64) -> Result<(), ExchangeError> {
    loc.write_attr(name, &Attr::F64(vec![value]))
}

fn put_i64(loc: &H5Group, name: &str, value: i64) -> Result<(), ExchangeError> {
    loc.write_attr(name, &Attr::I64(vec![value]))
}

fn put_vec(group: &H5Group, name: &str, values: &[f64]) -> Result<(), ExchangeError> {
    group.write_array(name, ArrayView1::from(values)).map(drop)
}

fn to_i64(v: usize) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn write_file(path: &Path, s: &TrainState, kind: Kind, provenance: &Provenance) -> Result<(), TrainError> {
    let h5 = H5File::create(path)?;
    let file = h5.root()?;
    for (name, value) in provenance.to_attrs() {
        match value {
            Attr::Str(v) => put_str(&file, &name, &v)?,
            other => put_i64(&file, &name, other.as_f64().unwrap_or_default() as i64)?,
        }
    }
    let h = &s.hyper;
    put_str(&file, "twinflow_model_format", FORMAT)?;
    put_str(&file, "kind", kind.name())?;
    put_str(&file, "model", h.model_name())?;
    file.write_attr_i64_list("layer_sizes", &s.net.sizes.iter().map(|&v| to_i64(v)).collect::<Vec<_>>())?;
    put_str(&file, "hidden", &h.hidden_text())?;
    put_str(&file, "activation", h.activation.name())?;
    put_f64(&file, "lr", h.lr)?;
    put_str(&file, "lr_schedule", h.lr_schedule.name())?;
    put_i64(&file, "batch_size", to_i64(h.batch_size))?;
    put_i64(&file, "micro_batch", to_i64(h.micro_batch))?;
    put_i64(&file, "shards", to_i64(h.shards))?;
    put_i64(&file, "epochs", to_i64(h.epochs))?;
    put_i64(&file, "epochs_run", to_i64(s.epoch))?;
    put_str(&file, "seed", &h.seed.to_string())?;
    put_f64(&file, "val_fraction", h.val_fraction)?;
    put_f64(&file, "weight_decay", h.weight_decay)?;
    put_str(&file, "target_transform", h.target_transform.name())?;
    put_str(&file, "hyperparameters", &serde_json::to_string(h).expect("hyperparameters serialize"))?;
    let inp = &s.inputs;
    put_str(&file, "features", &serde_json::to_string(&inp.features).expect("strings serialize"))?;
    file.write_attr_i64_list("feature_widths", &inp.feature_widths.iter().map(|&v| to_i64(v)).collect::<Vec<_>>())?;
    put_str(&file, "target", &inp.target)?;
    put_i64(&file, "outputs", to_i64(inp.outputs))?;
    put_i64(&file, "samples", to_i64(inp.samples))?;
    put_i64(&file, "n_train", to_i64(inp.n_train))?;
    put_i64(&file, "n_val", to_i64(inp.n_val))?;
    put_str(&file, "data_fingerprint", &inp.fingerprint)?;
    put_str(&file, "data_file", &inp.data_file)?;
    put_str(&file, "adam_step", &s.adam.t.to_string())?;
    put_i64(&file, "diverged", i64::from(s.diverged))?;
    let last = s.history.last();
    put_f64(&file, "train_loss", last.map_or(f64::NAN, |m| m.train_loss))?;
    put_f64(&file, "val_loss", last.map_or(f64::NAN, |m| m.val_loss))?;
    put_f64(&file, "val_rmse", s.val_rmse())?;
    let (best_epoch, best) = s.best().unwrap_or((0, f64::NAN));
    put_i64(&file, "best_epoch", to_i64(best_epoch))?;
    put_f64(&file, "best_val_rmse", best)?;
    put_f64(&file, "baseline_val_rmse", s.baseline_val_rmse)?;

    let layers = file.create_group("layers")?;
    for l in 0..s.net.layers() {
        let g = layers.create_group(&l.to_string())?;
        let (w, b) = s.net.offsets(l);
        let (n_in, n_out) = (s.net.sizes[l], s.net.sizes[l + 1]);
        let weight = ndarray::ArrayView2::from_shape((n_in, n_out), &s.params[w..b]).expect("layer shape");
        g.write_array("weight", weight)?;
        put_vec(&g, "bias", &s.params[b..b + n_out])?;
    }
    let norm = file.create_group("normalization")?;
    put_vec(&norm, "feature_mean", &s.norm.x_mean)?;
    put_vec(&norm, "feature_std", &s.norm.x_std)?;
    put_vec(&norm, "target_mean", &s.norm.y_mean)?;
    put_vec(&norm, "target_std", &s.norm.y_std)?;
    let opt = file.create_group("optimizer")?;
    put_vec(&opt, "m", &s.adam.m)?;
    put_vec(&opt, "v", &s.adam.v)?;
    let met = file.create_group("metrics")?;
    let col = |f: fn(&EpochMetrics) -> f64| s.history.iter().map(f).collect::<Vec<_>>();
    let epochs: Vec<i64> = s.history.iter().map(|m| to_i64(m.epoch)).collect();
    met.write_array("epoch", ArrayView1::from(&epochs[..]))?;
    put_vec(&met, "train_loss", &col(|m| m.train_loss))?;
    put_vec(&met, "val_loss", &col(|m| m.val_loss))?;
    put_vec(&met, "val_rmse", &col(|m| m.val_rmse))?;
    put_vec(&met, "lr", &col(|m| m.lr))?;
    put_vec(&met, "seconds", &col(|m| m.seconds))?;
    if s.net.layers() == 1 {
        let (coef, intercept) = linear_in_data_units(s);
        let lin = file.create_group("linear")?;
        lin.write_array("coefficients", &coef)?;
        put_vec(&lin, "intercept", &intercept)?;
        put_str(
            &lin,
            "comment",
            "y' = x · coefficients + intercept in raw feature units; y' is the target after `target_transform`",
        )?;
    }
    drop(file);
    Ok(h5.close()?)
}

/// A linear model's weights and biases in the units of the raw features and the
/// (transformed) target: `coef_ij = σ_yj W_ij / σ_xi`, `c_j = μ_yj + σ_yj b_j − Σ_i coef_ij μ_xi`.
pub fn linear_in_data_units(s: &TrainState) -> (ndarray::Array2<f64>, Vec<f64>) {
    let (n_in, n_out) = (s.net.sizes[0], s.net.sizes[1]);
    let (w_off, b_off) = s.net.offsets(0);
    let n = &s.norm;
    let coef = ndarray::Array2::from_shape_fn((n_in, n_out), |(i, j)| {
        n.y_std[j] * s.params[w_off + i * n_out + j] / n.x_std[i]
    });
    let intercept = (0..n_out)
        .map(|j| {
            n.y_mean[j] + n.y_std[j] * s.params[b_off + j] - (0..n_in).map(|i| coef[[i, j]] * n.x_mean[i]).sum::<f64>()
        })
        .collect();
    (coef, intercept)
}

/// Reads a model or checkpoint file; any problem is a [`TrainError::ModelFile`] naming
/// the file and the missing or malformed entry.
pub fn read_state(path: &Path) -> Result<TrainState, TrainError> {
    let bad = |reason: String| TrainError::ModelFile { path: path.to_path_buf(), reason };
    if !path.is_file() {
        return Err(bad("no such file".into()));
    }
    let not_readable = |e: ExchangeError| {
        let e = e.library_message();
        bad(format!("not a readable HDF5 file ({e}); hint: a truncated or corrupt file must be deleted"))
    };
    let file = H5File::open(path).map_err(not_readable)?;
    let root = file.root().map_err(not_readable)?;
    let r = Reader { root: &root, path };
    let format = r.str("twinflow_model_format")?;
    if format != FORMAT {
        return Err(bad(format!("has format `{format}`, this version reads `{FORMAT}`")));
    }
    let hyper: Hyperparameters = serde_json::from_str(&r.str("hyperparameters")?)
        .map_err(|e| bad(format!("attribute `hyperparameters` is not valid: {e}")))?;
    let features: Vec<String> = serde_json::from_str(&r.str("features")?)
        .map_err(|e| bad(format!("attribute `features` is not valid: {e}")))?;
    let sizes = r.usizes("layer_sizes")?;
    if sizes.len() != hyper.hidden.len() + 2 || sizes[1..sizes.len() - 1] != hyper.hidden[..] {
        return Err(bad(format!("`layer_sizes` {sizes:?} does not match the hidden widths {:?}", hyper.hidden)));
    }
    let net = Mlp { sizes: sizes.clone(), activation: hyper.activation };
    let mut params = Vec::with_capacity(net.n_params());
    for l in 0..net.layers() {
        params.extend(r.vec(&format!("layers/{l}/weight"), sizes[l] * sizes[l + 1])?);
        params.extend(r.vec(&format!("layers/{l}/bias"), sizes[l + 1])?);
    }
    let (d, t) = (sizes[0], sizes[sizes.len() - 1]);
    let norm = Normalization {
        x_mean: r.vec("normalization/feature_mean", d)?,
        x_std: r.vec("normalization/feature_std", d)?,
        y_mean: r.vec("normalization/target_mean", t)?,
        y_std: r.vec("normalization/target_std", t)?,
    };
    let p = net.n_params();
    let adam_step = r.str("adam_step")?.parse::<u64>().map_err(|e| bad(format!("attribute `adam_step`: {e}")))?;
    let adam = Adam { m: r.vec("optimizer/m", p)?, v: r.vec("optimizer/v", p)?, t: adam_step };
    let epoch = r.usize("epochs_run")?;
    let epochs: Vec<i64> = root
        .dataset("metrics/epoch")
        .and_then(|ds| ds.read_raw::<i64>())
        .map_err(|e| bad(format!("cannot read `metrics/epoch` ({})", e.library_message())))?;
    let n = epochs.len();
    if n != epoch {
        return Err(bad(format!("`metrics/epoch` has {n} entries, `epochs_run` is {epoch}")));
    }
    let cols = ["train_loss", "val_loss", "val_rmse", "lr", "seconds"].map(|c| r.vec(&format!("metrics/{c}"), n));
    let [train_loss, val_loss, val_rmse, lr, seconds] = cols;
    let (train_loss, val_loss, val_rmse, lr, seconds) = (train_loss?, val_loss?, val_rmse?, lr?, seconds?);
    let history = (0..n)
        .map(|k| EpochMetrics {
            epoch: usize::try_from(epochs[k]).unwrap_or_default(),
            train_loss: train_loss[k],
            val_loss: val_loss[k],
            val_rmse: val_rmse[k],
            lr: lr[k],
            seconds: seconds[k],
        })
        .collect();
    let feature_widths = r.usizes("feature_widths")?;
    if feature_widths.len() != features.len() || feature_widths.iter().sum::<usize>() != d {
        return Err(bad(format!("`feature_widths` {feature_widths:?} do not add up to {d} inputs of {features:?}")));
    }
    let inputs = InputSpec {
        features,
        feature_widths,
        target: r.str("target")?,
        outputs: t,
        samples: r.usize("samples")?,
        n_train: r.usize("n_train")?,
        n_val: r.usize("n_val")?,
        fingerprint: r.str("data_fingerprint")?,
        data_file: r.str("data_file")?,
    };
    Ok(TrainState {
        hyper,
        inputs,
        norm,
        net,
        params,
        adam,
        epoch,
        history,
        baseline_val_rmse: r.f64("baseline_val_rmse")?,
        diverged: r.usize("diverged")? != 0,
    })
}

struct Reader<'a> {
    root: &'a H5Group,
    path: &'a Path,
}

impl Reader<'_> {
    fn bad(&self, reason: String) -> TrainError {
        TrainError::ModelFile { path: self.path.to_path_buf(), reason }
    }
    fn attr(&self, name: &str) -> Result<Attr, TrainError> {
        let missing = || self.bad(format!("has no attribute `{name}`; hint: is it a `twin-kernel train` model?"));
        match self.root.attr(name) {
            Ok(Some(a)) => Ok(a),
            Ok(None) => Err(missing()),
            Err(e) => Err(self.bad(format!("attribute `{name}` is unreadable ({})", e.library_message()))),
        }
    }
    fn str(&self, name: &str) -> Result<String, TrainError> {
        match self.attr(name)? {
            Attr::Str(s) => Ok(s),
            other => Err(self.bad(format!("attribute `{name}` is not text ({other})"))),
        }
    }
    fn f64(&self, name: &str) -> Result<f64, TrainError> {
        match self.attr(name)? {
            Attr::Str(s) => Err(self.bad(format!("attribute `{name}` is not a number ({s:?})"))),
            a => a.as_f64().ok_or_else(|| self.bad(format!("attribute `{name}` is empty"))),
        }
    }
    fn integers(&self, name: &str, what: &str) -> Result<Vec<i64>, TrainError> {
        match self.attr(name)? {
            Attr::I32(v) => Ok(v.into_iter().map(i64::from).collect()),
            Attr::I64(v) => Ok(v),
            other => Err(self.bad(format!("attribute `{name}` is not {what} ({other})"))),
        }
    }
    fn usize(&self, name: &str) -> Result<usize, TrainError> {
        let v = self.integers(name, "an integer")?;
        let [v] = v[..] else { return Err(self.bad(format!("attribute `{name}` is not an integer ({v:?})"))) };
        usize::try_from(v).map_err(|_| self.bad(format!("attribute `{name}` is negative ({v})")))
    }
    fn usizes(&self, name: &str) -> Result<Vec<usize>, TrainError> {
        let v = self.integers(name, "integers")?;
        v.iter()
            .map(|&x| usize::try_from(x).map_err(|_| self.bad(format!("attribute `{name}` has a negative value"))))
            .collect()
    }
    fn vec(&self, name: &str, len: usize) -> Result<Vec<f64>, TrainError> {
        let v = self
            .root
            .dataset(name)
            .and_then(|ds| ds.read_raw::<f64>())
            .map_err(|e| self.bad(format!("cannot read dataset `{name}` ({})", e.library_message())))?;
        if v.len() != len {
            return Err(self.bad(format!("dataset `{name}` has {} values, expected {len}", v.len())));
        }
        Ok(v)
    }
}
