//! The data-parallel training loop.
//!
//! Each epoch shuffles the training samples with ChaCha8 keyed by `(seed, epoch)` and cuts
//! the permutation into global mini-batches of `batch_size` samples, each into
//! micro-batches of `micro_batch` samples (the last ones may be shorter). That cut does not
//! depend on the rank count. Rank `r` of `N` owns micro-batches `⌊kr/N⌋ … ⌊k(r+1)/N⌋ − 1` of
//! the `k` in a mini-batch and computes each one's gradient *sum* on its own; the
//! per-micro-batch sums are gathered to rank 0 in micro-batch order, added there in that
//! order and broadcast (as [`crate::comm::reproducible_sum`] does for rows). Every rank
//! then takes the same Adam step. Since no micro-batch is split between ranks and the
//! additions happen in one fixed order, 1, 2 or 4 ranks produce bit-identical weights,
//! losses and checkpoints. The validation error is summed the same way over chunks of
//! `micro_batch` validation samples.
//!
//! Everything random is keyed by the seed (initialisation, split, per-epoch shuffles), so
//! a run resumed from a checkpoint after epoch `e` continues exactly as the uninterrupted
//! run would have.

use std::time::Instant;

use ndarray::{Array2, ArrayView2, Axis};
use rand::SeedableRng as _;
use rand::seq::SliceRandom as _;
use rand_chacha::ChaCha8Rng;

use super::data::{Normalization, Split, Table, fingerprint, split};
use super::error::TrainError;
use super::hyper::{Hyperparameters, TargetTransform};
use super::model::Mlp;
use super::optim::Adam;
use crate::comm::Communicator;

/// Metrics of one epoch.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EpochMetrics {
    /// Epoch number, 1-based.
    pub epoch: usize,
    /// Mean squared error over the epoch's training batches, standardised units.
    pub train_loss: f64,
    /// Mean squared error on the validation set after the epoch, standardised units.
    pub val_loss: f64,
    /// Root-mean-square error on the validation set after the epoch, target units.
    pub val_rmse: f64,
    /// Learning rate of the epoch.
    pub lr: f64,
    /// Wall time of the epoch, s (the only field that differs between identical runs).
    pub seconds: f64,
}

/// What a model was trained on.
#[derive(Debug, Clone, PartialEq)]
pub struct InputSpec {
    /// Feature dataset names, in column order.
    pub features: Vec<String>,
    /// Columns contributed by each feature dataset.
    pub feature_widths: Vec<usize>,
    /// Target dataset name.
    pub target: String,
    /// Target columns (outputs).
    pub outputs: usize,
    /// Samples in the file.
    pub samples: usize,
    /// Training samples.
    pub n_train: usize,
    /// Validation samples.
    pub n_val: usize,
    /// [`fingerprint`] of the features and the target.
    pub fingerprint: String,
    /// The data file as given.
    pub data_file: String,
}

/// Everything needed to continue training: written to checkpoints and model files.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainState {
    /// Hyperparameters.
    pub hyper: Hyperparameters,
    /// The data the model was trained on.
    pub inputs: InputSpec,
    /// Standardisation of features and target (from the training split).
    pub norm: Normalization,
    /// Architecture.
    pub net: Mlp,
    /// Parameters (see [`super::model`] for the layout).
    pub params: Vec<f64>,
    /// Optimizer state.
    pub adam: Adam,
    /// Epochs completed.
    pub epoch: usize,
    /// Metrics of every completed epoch.
    pub history: Vec<EpochMetrics>,
    /// RMSE on the validation set of predicting the training mean, target units.
    pub baseline_val_rmse: f64,
    /// The training loss became non-finite; training stopped there.
    pub diverged: bool,
}

impl TrainState {
    /// The epoch with the lowest validation RMSE (1-based) and that RMSE.
    pub fn best(&self) -> Option<(usize, f64)> {
        self.history
            .iter()
            .filter(|m| m.val_rmse.is_finite())
            .min_by(|a, b| a.val_rmse.total_cmp(&b.val_rmse))
            .map(|m| (m.epoch, m.val_rmse))
    }

    /// Validation RMSE after the last epoch (NaN before the first or after divergence).
    pub fn val_rmse(&self) -> f64 {
        self.history.last().map_or(f64::NAN, |m| m.val_rmse)
    }
}

/// The data of a run, standardised.
#[derive(Debug, Clone)]
pub struct TrainData {
    /// Standardised features, every sample.
    pub xs: Array2<f64>,
    /// Standardised transformed targets, every sample.
    pub ys: Array2<f64>,
    /// Targets in their own units, every sample.
    pub y: Array2<f64>,
    /// Training and validation samples.
    pub split: Split,
}

/// Applies the target transform (`log` needs positive targets).
pub fn transform_target(table: &Table, y: ArrayView2<'_, f64>, t: TargetTransform) -> Result<Array2<f64>, TrainError> {
    match t {
        TargetTransform::None => Ok(y.to_owned()),
        TargetTransform::Log => {
            if let Some(((i, j), v)) = y.indexed_iter().find(|(_, v)| **v <= 0.0) {
                return Err(TrainError::Data {
                    path: table.path.clone(),
                    dataset: table.target.clone().unwrap_or_default(),
                    reason: format!(
                        "has the value {v} at sample {i}, column {j}; hint: `--target-transform log` needs targets > 0"
                    ),
                });
            }
            Ok(y.mapv(f64::ln))
        }
    }
}

/// Undoes the target transform.
pub fn inverse_transform(mut y: Array2<f64>, t: TargetTransform) -> Array2<f64> {
    if t == TargetTransform::Log {
        y.mapv_inplace(f64::exp);
    }
    y
}

/// Predictions in target units for the rows of standardised features `xs`.
pub fn predict_standardized(state: &TrainState, xs: ArrayView2<'_, f64>) -> Array2<f64> {
    let out = state.net.forward(&state.params, xs);
    inverse_transform(state.norm.invert_y(out.view()), state.hyper.target_transform)
}

/// Prepares a run on `table`: a fresh state, or `resume` (a checkpoint or another trial's
/// model, whose hyperparameters other than `epochs` must equal `hyper`) after checking that
/// it was trained on the same data. `origin` names the file `resume` came from.
pub fn start(
    table: &Table,
    hyper: Hyperparameters,
    resume: Option<(TrainState, &std::path::Path)>,
) -> Result<(TrainState, TrainData), TrainError> {
    let issues = hyper.check();
    if !issues.is_empty() {
        return Err(TrainError::Request(format!("invalid hyperparameters: {}", issues.join("; "))));
    }
    let y = table.y.as_ref().ok_or_else(|| TrainError::Request("training needs a target dataset".into()))?;
    let n = table.samples();
    if n < 2 {
        return Err(TrainError::Data {
            path: table.path.clone(),
            dataset: table.features[0].clone(),
            reason: format!("has {n} sample; training needs at least 2 (one for validation)"),
        });
    }
    let yt = transform_target(table, y.view(), hyper.target_transform)?;
    let split = split(n, hyper.val_fraction, hyper.seed);
    let fp = fingerprint(table.x.view(), y.view());
    let state = match resume {
        Some((mut s, origin)) => {
            let bad = |reason: String| TrainError::ModelFile { path: origin.to_path_buf(), reason };
            let diffs = s.hyper.differences(&hyper);
            if !diffs.is_empty() {
                return Err(bad(format!("was trained with other hyperparameters ({})", diffs.join(", "))));
            }
            if s.inputs.features != table.features || Some(&s.inputs.target) != table.target.as_ref() {
                return Err(bad(format!(
                    "was trained on features {:?} and target `{}`, not {:?} and `{}`",
                    s.inputs.features,
                    s.inputs.target,
                    table.features,
                    table.target.as_deref().unwrap_or_default()
                )));
            }
            if s.inputs.fingerprint != fp {
                return Err(bad(format!(
                    "was trained on other data (fingerprint {} ≠ {fp} of `{}`); hint: delete the checkpoint to start over",
                    s.inputs.fingerprint,
                    table.path.display()
                )));
            }
            s.hyper.epochs = hyper.epochs;
            s.inputs.data_file = table.path.display().to_string();
            s
        }
        None => {
            let norm = Normalization::fit(table.x.view(), yt.view(), &split.train);
            let net = Mlp::new(table.x.ncols(), &hyper.hidden, y.ncols(), hyper.activation);
            let params = net.init(hyper.seed);
            let adam = Adam::new(params.len());
            let baseline_val_rmse = mean_baseline(y.view(), &split);
            TrainState {
                inputs: InputSpec {
                    features: table.features.clone(),
                    feature_widths: table.feature_widths.clone(),
                    target: table.target.clone().unwrap_or_default(),
                    outputs: y.ncols(),
                    samples: n,
                    n_train: split.train.len(),
                    n_val: split.val.len(),
                    fingerprint: fp,
                    data_file: table.path.display().to_string(),
                },
                hyper,
                norm,
                net,
                params,
                adam,
                epoch: 0,
                history: Vec::new(),
                baseline_val_rmse,
                diverged: false,
            }
        }
    };
    let data =
        TrainData { xs: state.norm.apply_x(table.x.view()), ys: state.norm.apply_y(yt.view()), y: y.clone(), split };
    Ok((state, data))
}

/// RMSE on the validation samples of predicting each output's training mean.
fn mean_baseline(y: ArrayView2<'_, f64>, split: &Split) -> f64 {
    let mut mean = vec![0.0; y.ncols()];
    for &r in &split.train {
        mean.iter_mut().zip(y.row(r)).for_each(|(m, v)| *m += v);
    }
    mean.iter_mut().for_each(|m| *m /= split.train.len().max(1) as f64);
    let mut sse = 0.0;
    for &r in &split.val {
        sse += y.row(r).iter().zip(&mean).map(|(v, m)| (v - m) * (v - m)).sum::<f64>();
    }
    (sse / (split.val.len() * y.ncols()).max(1) as f64).sqrt()
}

/// When to stop before the target epoch count.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Start of the invocation (the time limit counts from here).
    pub since: Instant,
    /// Stop before an epoch that would end later than this many seconds after `since`,
    /// judged by the longest epoch so far.
    pub time_limit: Option<f64>,
    /// Train at most this many epochs in this invocation.
    pub epoch_limit: Option<usize>,
    /// Call the checkpoint hook every this many epochs (0: only when stopping or done).
    pub checkpoint_every: usize,
}

/// Why [`fit`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FitOutcome {
    /// The target epoch count was reached (or the loss diverged: see
    /// [`TrainState::diverged`]).
    Finished,
    /// The time limit would have been exceeded by the next epoch.
    TimeLimit,
    /// The epoch limit of this invocation was reached.
    EpochLimit,
}

/// The micro-batches `lo..hi` of `k` that rank `rank` of `size` owns.
fn owned(k: usize, rank: usize, size: usize) -> (usize, usize) {
    (k * rank / size, k * (rank + 1) / size)
}

/// Gathers the per-chunk vectors of `local` (each `width` long, this rank's chunks in
/// order) to rank 0, adds them there in global chunk order and broadcasts the total.
fn ordered_sum(comm: &dyn Communicator, local: &[f64], width: usize) -> Vec<f64> {
    let mut total = vec![0.0; width];
    if let Some(all) = comm.gather_f64(local) {
        for chunk in all.chunks_exact(width) {
            total.iter_mut().zip(chunk).for_each(|(t, v)| *t += v);
        }
    }
    comm.broadcast_f64(&mut total);
    total
}

/// The gradient of the mean squared error over `batch` (standardised units) and the
/// summed squared error, identical on every rank whatever their number.
fn batch_gradient(comm: &dyn Communicator, state: &TrainState, data: &TrainData, batch: &[usize]) -> (Vec<f64>, f64) {
    let p = state.net.n_params();
    let micro = state.hyper.micro_batch;
    let k = batch.len().div_ceil(micro);
    let (lo, hi) = owned(k, comm.rank(), comm.size());
    let mut local = vec![0.0; (hi - lo) * (p + 1)];
    for (j, out) in (lo..hi).zip(local.chunks_exact_mut(p + 1)) {
        let rows = &batch[j * micro..((j + 1) * micro).min(batch.len())];
        let xb = data.xs.select(Axis(0), rows);
        let yb = data.ys.select(Axis(0), rows);
        out[p] = state.net.gradient_sum(&state.params, xb.view(), yb.view(), &mut out[..p]);
    }
    let mut total = ordered_sum(comm, &local, p + 1);
    let sse = total.pop().expect("p + 1 values");
    let scale = 1.0 / (batch.len() * state.inputs.outputs) as f64;
    total.iter_mut().for_each(|g| *g *= scale);
    (total, sse)
}

/// Validation loss (standardised MSE) and RMSE (target units), rank-independent.
fn evaluate(comm: &dyn Communicator, state: &TrainState, data: &TrainData) -> (f64, f64) {
    let val = &data.split.val;
    let micro = state.hyper.micro_batch;
    let k = val.len().div_ceil(micro);
    let (lo, hi) = owned(k, comm.rank(), comm.size());
    let mut local = Vec::with_capacity(2 * (hi - lo));
    for j in lo..hi {
        let rows = &val[j * micro..((j + 1) * micro).min(val.len())];
        let xb = data.xs.select(Axis(0), rows);
        let out = state.net.forward(&state.params, xb.view());
        let ys = data.ys.select(Axis(0), rows);
        local.push((&out - &ys).iter().map(|v| v * v).sum());
        let pred = inverse_transform(state.norm.invert_y(out.view()), state.hyper.target_transform);
        let y = data.y.select(Axis(0), rows);
        local.push((&pred - &y).iter().map(|v| v * v).sum());
    }
    let total = ordered_sum(comm, &local, 2);
    let n = (val.len() * state.inputs.outputs) as f64;
    (total[0] / n, (total[1] / n).sqrt())
}

/// The order in which epoch `epoch` (0-based) visits the training samples.
pub fn epoch_order(train: &[usize], seed: u64, epoch: usize) -> Vec<usize> {
    let mut order = train.to_vec();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(epoch as u64);
    order.shuffle(&mut rng);
    order
}

/// Trains `state` on `data` until its target epoch count or a limit. Collective: every
/// rank calls it with the same arguments. `checkpoint` is called on every rank after
/// every `limits.checkpoint_every` epochs, before stopping at a limit and at the end (at
/// most once per epoch); it should write on rank 0 only.
pub fn fit(
    comm: &dyn Communicator,
    state: &mut TrainState,
    data: &TrainData,
    limits: &Limits,
    checkpoint: &mut dyn FnMut(&TrainState) -> Result<(), TrainError>,
) -> Result<FitOutcome, TrainError> {
    let decay = state.net.weight_mask();
    let mut saved = None;
    let mut longest = 0.0_f64;
    let mut run_here = 0;
    let outcome = loop {
        if state.epoch >= state.hyper.epochs || state.diverged {
            break FitOutcome::Finished;
        }
        if limits.epoch_limit.is_some_and(|n| run_here >= n) {
            break FitOutcome::EpochLimit;
        }
        if let Some(limit) = limits.time_limit {
            // Rank 0's clock decides, so every rank stops after the same epoch.
            let late = limits.since.elapsed().as_secs_f64() + longest > limit;
            let mut flag = [if late { 1.0 } else { 0.0 }];
            comm.broadcast_f64(&mut flag);
            if flag[0] != 0.0 {
                break FitOutcome::TimeLimit;
            }
        }
        let t0 = Instant::now();
        let e = state.epoch;
        let lr = state.hyper.lr_at(e);
        let order = epoch_order(&data.split.train, state.hyper.seed, e);
        let mut sse = 0.0;
        for batch in order.chunks(state.hyper.batch_size) {
            let (grad, batch_sse) = batch_gradient(comm, state, data, batch);
            sse += batch_sse;
            state.adam.step(&mut state.params, &grad, lr, state.hyper.weight_decay, &decay);
        }
        let train_loss = sse / (data.split.train.len() * state.inputs.outputs) as f64;
        let (val_loss, val_rmse) = evaluate(comm, state, data);
        let seconds = t0.elapsed().as_secs_f64();
        longest = longest.max(seconds);
        state.epoch += 1;
        run_here += 1;
        state.history.push(EpochMetrics { epoch: state.epoch, train_loss, val_loss, val_rmse, lr, seconds });
        if comm.rank() == 0 {
            tracing::info!(
                "epoch {}/{}: train_loss {train_loss:.6e}, val_loss {val_loss:.6e}, val_rmse {val_rmse:.6e}, lr {lr:.3e}, {seconds:.2} s",
                state.epoch,
                state.hyper.epochs
            );
        }
        if !train_loss.is_finite() || !val_loss.is_finite() {
            state.diverged = true;
            if comm.rank() == 0 {
                tracing::warn!(epoch = state.epoch, "the loss is no longer finite: training diverged and stops here");
            }
        }
        if limits.checkpoint_every > 0 && state.epoch.is_multiple_of(limits.checkpoint_every) {
            checkpoint(state)?;
            saved = Some(state.epoch);
        }
    };
    if saved != Some(state.epoch) {
        checkpoint(state)?;
    }
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn micro_batches_are_dealt_in_consecutive_blocks() {
        assert_eq!((0..4).map(|r| owned(8, r, 4)).collect::<Vec<_>>(), [(0, 2), (2, 4), (4, 6), (6, 8)]);
        assert_eq!((0..4).map(|r| owned(3, r, 4)).collect::<Vec<_>>(), [(0, 0), (0, 1), (1, 2), (2, 3)]);
        assert_eq!(owned(5, 0, 1), (0, 5));
    }

    #[test]
    fn epoch_orders_are_permutations_keyed_by_epoch() {
        let train: Vec<usize> = (0..50).collect();
        let a = epoch_order(&train, 3, 0);
        assert_eq!(a, epoch_order(&train, 3, 0));
        assert_ne!(a, epoch_order(&train, 3, 1));
        let mut s = a.clone();
        s.sort_unstable();
        assert_eq!(s, train);
    }
}
