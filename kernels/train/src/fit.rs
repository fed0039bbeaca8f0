//! The data-parallel training loop.
//!
//! Every rank holds only its shards of the data ([`super::shard`]). Each epoch follows an
//! [`EpochPlan`]: global mini-batches of `batch_size` samples drawn from the shards as a
//! uniform random permutation would, keyed by `(seed, epoch)` and independent of the rank
//! count. For each batch, the owner of every contributing shard computes that shard's
//! gradient *sum* (in passes of at most `micro_batch` rows, added in order) into the
//! shard's slot; one `MPI_Allreduce(SUM)` shares the slots exactly and every rank adds
//! them in shard order ([`reduce_slots`]) and takes the same Adam step. So 1, 2 or 4 ranks
//! produce bit-identical weights, losses and checkpoints. The validation error is reduced
//! the same way, one slot per shard.
//!
//! Everything random is keyed by the seed (initialisation, split, interleavings, shard
//! orders), so a run resumed from a checkpoint after epoch `e` continues exactly as the
//! uninterrupted run would have.

use std::time::Instant;

use ndarray::{Array2, ArrayView2, Axis};

use super::data::{Layout, Normalization, ShardRows, ShardedTable, Split, column_sums, fingerprint, split};
use super::error::TrainError;
use super::hyper::{Hyperparameters, TargetTransform};
use super::model::Mlp;
use super::optim::Adam;
use super::shard::{EpochPlan, Sharding, reduce_slots, shard_order};
use twinflow_comm::Communicator;

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

/// One shard of a run's data, standardised, held by its owner.
#[derive(Debug, Clone)]
pub struct Shard {
    /// Shard number.
    pub index: usize,
    /// First sample (row of the file).
    pub first: usize,
    /// Standardised features.
    pub xs: Array2<f64>,
    /// Standardised transformed targets.
    pub ys: Array2<f64>,
    /// Targets in their own units.
    pub y: Array2<f64>,
    /// Training rows (offsets into the shard, ascending).
    pub train: Vec<usize>,
    /// Validation rows (offsets into the shard, ascending).
    pub val: Vec<usize>,
}

/// The data of a run on this rank: its shards, and what every rank knows of all of them.
#[derive(Debug, Clone)]
pub struct TrainData {
    /// How the samples are cut into shards.
    pub sharding: Sharding,
    /// Training rows of every shard.
    pub train_counts: Vec<usize>,
    /// The shards this rank owns, ascending.
    pub shards: Vec<Shard>,
}

/// Applies the target transform (`log` needs positive targets) to the targets of samples
/// `first..` of `layout`'s file.
pub fn transform_target(
    layout: &Layout,
    first: usize,
    y: ArrayView2<'_, f64>,
    t: TargetTransform,
) -> Result<Array2<f64>, TrainError> {
    match t {
        TargetTransform::None => Ok(y.to_owned()),
        TargetTransform::Log => {
            if let Some(((i, j), v)) = y.indexed_iter().find(|(_, v)| **v <= 0.0) {
                let i = first + i;
                return Err(TrainError::Data {
                    path: layout.path.clone(),
                    dataset: layout.target.clone(),
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

/// Prepares a run on this rank's shards of `table`: a fresh state, or `resume` (a
/// checkpoint or another trial's model, whose hyperparameters other than `epochs` must
/// equal `hyper`) after checking that it was trained on the same data; the `Path` names the
/// file `resume` came from. Collective: the statistics and the data fingerprint are reduced
/// over every shard ([`super::shard`]); `table` must be cut into `hyper.shards` shards.
pub fn start(
    comm: &dyn Communicator,
    table: &ShardedTable,
    hyper: Hyperparameters,
    resume: Option<(TrainState, &std::path::Path)>,
) -> Result<(TrainState, TrainData), TrainError> {
    hyper.validate()?;
    let layout = &table.layout;
    let sharding = table.sharding;
    if sharding.shards != hyper.shards {
        return Err(TrainError::Request(format!(
            "the data were cut into {} shards, the hyperparameters say {}",
            sharding.shards, hyper.shards
        )));
    }
    let n = layout.samples;
    if n < 2 {
        return Err(TrainError::Data {
            path: layout.path.clone(),
            dataset: layout.features[0].clone(),
            reason: format!("has {n} sample; training needs at least 2 (one for validation)"),
        });
    }
    let outputs = layout.outputs.ok_or_else(|| TrainError::Request("training needs a target dataset".into()))?;
    let inputs: usize = layout.feature_widths.iter().sum();
    let transformed = table
        .slabs
        .iter()
        .map(|sl| transform_target(layout, sl.first, sl.y.view(), hyper.target_transform))
        .collect::<Result<Vec<_>, _>>()?;
    // The split needs only the sample count, so every rank knows every shard's share.
    let split = split(n, hyper.val_fraction, hyper.seed);
    let train_counts = sharding.counts(&split.train);
    let local: Vec<(Vec<usize>, Vec<usize>)> = table
        .slabs
        .iter()
        .map(|sl| (sharding.local(&split.train, sl.shard), sharding.local(&split.val, sl.shard)))
        .collect();
    let parts: Vec<_> = table.slabs.iter().map(|sl| (sl.shard, sl.x.view(), sl.y.view())).collect();
    let fp = fingerprint(comm, sharding, &parts);
    let state = match resume {
        Some((mut s, origin)) => {
            let bad = |reason: String| TrainError::ModelFile { path: origin.to_path_buf(), reason };
            let diffs = s.hyper.differences(&hyper);
            if !diffs.is_empty() {
                return Err(bad(format!("was trained with other hyperparameters ({})", diffs.join(", "))));
            }
            if s.inputs.features != layout.features || s.inputs.target != layout.target {
                return Err(bad(format!(
                    "was trained on features {:?} and target `{}`, not {:?} and `{}`",
                    s.inputs.features, s.inputs.target, layout.features, layout.target
                )));
            }
            if s.inputs.fingerprint != fp {
                return Err(bad(format!(
                    "was trained on other data (fingerprint {} ≠ {fp} of `{}`); hint: delete the checkpoint to start over",
                    s.inputs.fingerprint,
                    layout.path.display()
                )));
            }
            s.hyper.epochs = hyper.epochs;
            s.inputs.data_file = layout.path.display().to_string();
            s
        }
        None => {
            let xp: Vec<_> = table
                .slabs
                .iter()
                .zip(&local)
                .map(|(sl, l)| ShardRows { shard: sl.shard, m: sl.x.view(), rows: &l.0 })
                .collect();
            let yp: Vec<_> = transformed
                .iter()
                .zip(&table.slabs)
                .zip(&local)
                .map(|((y, sl), l)| ShardRows { shard: sl.shard, m: y.view(), rows: &l.0 })
                .collect();
            let norm = Normalization::fit(comm, sharding.shards, (inputs, outputs), &xp, &yp, split.train.len());
            let net = Mlp::new(inputs, &hyper.hidden, outputs, hyper.activation);
            let params = net.init(hyper.seed);
            let adam = Adam::new(params.len());
            let baseline_val_rmse = mean_baseline(comm, table, &local, &split);
            TrainState {
                inputs: InputSpec {
                    features: layout.features.clone(),
                    feature_widths: layout.feature_widths.clone(),
                    target: layout.target.clone(),
                    outputs,
                    samples: n,
                    n_train: split.train.len(),
                    n_val: split.val.len(),
                    fingerprint: fp,
                    data_file: layout.path.display().to_string(),
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
    let shards = table
        .slabs
        .iter()
        .zip(transformed)
        .zip(local)
        .map(|((sl, yt), (train, val))| Shard {
            index: sl.shard,
            first: sl.first,
            xs: state.norm.apply_x(sl.x.view()),
            ys: state.norm.apply_y(yt.view()),
            y: sl.y.clone(),
            train,
            val,
        })
        .collect();
    Ok((state, TrainData { sharding, train_counts, shards }))
}

/// RMSE on the validation samples of predicting each output's training mean. Collective.
fn mean_baseline(
    comm: &dyn Communicator,
    table: &ShardedTable,
    local: &[(Vec<usize>, Vec<usize>)],
    split: &Split,
) -> f64 {
    let shards = table.sharding.shards;
    let outputs = table.layout.outputs.unwrap_or(1);
    let part = |k: usize, val: bool| ShardRows {
        shard: table.slabs[k].shard,
        m: table.slabs[k].y.view(),
        rows: if val { &local[k].1 } else { &local[k].0 },
    };
    let train: Vec<_> = (0..table.slabs.len()).map(|k| part(k, false)).collect();
    let val: Vec<_> = (0..table.slabs.len()).map(|k| part(k, true)).collect();
    let mut mean = column_sums(comm, shards, outputs, &train, |_, v| v);
    mean.iter_mut().for_each(|m| *m /= split.train.len().max(1) as f64);
    let sse: f64 = column_sums(comm, shards, outputs, &val, |j, v| (v - mean[j]) * (v - mean[j])).iter().sum();
    (sse / (split.val.len() * outputs).max(1) as f64).sqrt()
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

/// The summed squared error and its gradient over `rows` of `shard`, in passes of at most
/// `micro` rows added in order, written into `out` (`P` gradient values, then the error).
fn shard_gradient(state: &TrainState, shard: &Shard, rows: &[usize], out: &mut [f64], scratch: &mut Vec<f64>) {
    let p = state.net.n_params();
    for (k, chunk) in rows.chunks(state.hyper.micro_batch).enumerate() {
        let xb = shard.xs.select(Axis(0), chunk);
        let yb = shard.ys.select(Axis(0), chunk);
        if k == 0 {
            out[p] = state.net.gradient_sum(&state.params, xb.view(), yb.view(), &mut out[..p]);
        } else {
            scratch.resize(p, 0.0);
            let sse = state.net.gradient_sum(&state.params, xb.view(), yb.view(), scratch);
            out[..p].iter_mut().zip(scratch.iter()).for_each(|(g, v)| *g += v);
            out[p] += sse;
        }
    }
}

/// Validation loss (standardised MSE) and RMSE (target units), rank-independent.
fn evaluate(comm: &dyn Communicator, state: &TrainState, data: &TrainData) -> (f64, f64) {
    let micro = state.hyper.micro_batch;
    let mut slots = vec![0.0; 2 * data.sharding.shards];
    for shard in &data.shards {
        let slot = &mut slots[2 * shard.index..2 * shard.index + 2];
        for rows in shard.val.chunks(micro) {
            let xb = shard.xs.select(Axis(0), rows);
            let out = state.net.forward(&state.params, xb.view());
            let ys = shard.ys.select(Axis(0), rows);
            slot[0] += (&out - &ys).iter().map(|v| v * v).sum::<f64>();
            let pred = inverse_transform(state.norm.invert_y(out.view()), state.hyper.target_transform);
            let y = shard.y.select(Axis(0), rows);
            slot[1] += (&pred - &y).iter().map(|v| v * v).sum::<f64>();
        }
    }
    let total = reduce_slots(comm, &mut slots, 2);
    let n = (state.inputs.n_val * state.inputs.outputs) as f64;
    (total[0] / n, (total[1] / n).sqrt())
}

/// One epoch of optimizer steps; returns the summed squared training error. Collective.
fn train_epoch(comm: &dyn Communicator, state: &mut TrainState, data: &TrainData, lr: f64, decay: &[bool]) -> f64 {
    let e = state.epoch;
    let (seed, p) = (state.hyper.seed, state.net.n_params());
    let plan = EpochPlan::new(&data.train_counts, state.hyper.batch_size, seed, e);
    let orders: Vec<Vec<usize>> = data.shards.iter().map(|s| shard_order(&s.train, seed, e, s.index)).collect();
    let mut cursors = vec![0_usize; data.shards.len()];
    // Which of this rank's shards (position in `data.shards`) a shard number is.
    let mut mine = vec![None; data.sharding.shards];
    for (k, s) in data.shards.iter().enumerate() {
        mine[s.index] = Some(k);
    }
    let (mut slots, mut scratch) = (Vec::new(), Vec::new());
    let mut sse = 0.0;
    for step in &plan.steps {
        slots.clear();
        slots.resize(step.len() * (p + 1), 0.0);
        let mut batch = 0;
        for (slot, &(s, count)) in step.iter().enumerate() {
            batch += count;
            if let Some(k) = mine[s] {
                let rows = &orders[k][cursors[k]..cursors[k] + count];
                shard_gradient(
                    state,
                    &data.shards[k],
                    rows,
                    &mut slots[slot * (p + 1)..(slot + 1) * (p + 1)],
                    &mut scratch,
                );
                cursors[k] += count;
            }
        }
        let mut total = reduce_slots(comm, &mut slots, p + 1);
        sse += total.pop().expect("p + 1 values");
        let scale = 1.0 / (batch * state.inputs.outputs) as f64;
        total.iter_mut().for_each(|g| *g *= scale);
        state.adam.step(&mut state.params, &total, lr, state.hyper.weight_decay, decay);
    }
    sse
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
        let sse = train_epoch(comm, state, data, lr, &decay);
        let train_loss = sse / (state.inputs.n_train * state.inputs.outputs) as f64;
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
