//! The energy regression of the online twin, trained window by window.
//!
//! The model is the training kernel's network ([`twinflow_train::Mlp`], Adam, standardised
//! features and target `ln E`, mean squared error) and is stored as its model file, so
//! `twin-kernel predict` reads it too. The first window trains it from scratch
//! (`initial_epochs`); every later window **warm-starts** it: the previous weights, Adam's
//! moments and the standardisation of the first window are kept (a model's inputs mean
//! the same from window to window) and it trains a few more epochs on the window's training
//! events plus the replay buffer ([`crate::data::Replay`]). Epoch `e` shuffles with the
//! ChaCha8 stream `e` of the seed, so an update is reproducible bit for bit.

use ndarray::{Array2, Axis};

use crate::OnlineError;
use crate::data::{Events, Replay};
use crate::gate::Scores;
use rand::SeedableRng as _;
use rand::seq::SliceRandom as _;
use rand_chacha::ChaCha8Rng;
use twinflow_train::fit::predict_standardized;
use twinflow_train::{
    Activation, Adam, EpochMetrics, Hyperparameters, InputSpec, LrSchedule, Mlp, Normalization, TargetTransform,
    TrainState,
};

/// How the model is built and trained.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelSettings {
    /// Hidden layer widths (empty: a linear model in `ln E`).
    pub hidden: Vec<usize>,
    /// Adam learning rate.
    pub lr: f64,
    /// Events per optimizer step.
    pub batch: usize,
    /// Seed of the initialisation and shuffles.
    pub seed: u64,
}

impl Default for ModelSettings {
    fn default() -> Self {
        Self { hidden: vec![16], lr: 0.01, batch: 32, seed: 1 }
    }
}

/// Mean and standard deviation (1 for a constant) of each column.
fn moments(x: &Array2<f64>) -> (Vec<f64>, Vec<f64>) {
    let n = x.nrows().max(1) as f64;
    let mean: Vec<f64> = x.columns().into_iter().map(|c| c.sum() / n).collect();
    let std = x
        .columns()
        .into_iter()
        .zip(&mean)
        .map(|(c, m)| {
            let s = (c.iter().map(|v| (v - m) * (v - m)).sum::<f64>() / n).sqrt();
            if s > 1e-12 { s } else { 1.0 }
        })
        .collect();
    (mean, std)
}

fn targets(energy: &[f64]) -> Array2<f64> {
    Array2::from_shape_fn((energy.len(), 1), |(i, _)| energy[i].ln())
}

/// A new model for `x` (features) → `energy`, not trained yet; the standardisation comes
/// from these events.
pub fn fresh(x: &Array2<f64>, energy: &[f64], settings: &ModelSettings, data_file: &str) -> TrainState {
    let (x_mean, x_std) = moments(x);
    let (y_mean, y_std) = moments(&targets(energy));
    let inputs = x.ncols();
    let hyper = Hyperparameters {
        hidden: settings.hidden.clone(),
        activation: Activation::Tanh,
        lr: settings.lr,
        lr_schedule: LrSchedule::Constant,
        batch_size: settings.batch,
        micro_batch: settings.batch,
        shards: 1,
        epochs: 0,
        seed: settings.seed,
        val_fraction: 0.2,
        weight_decay: 0.0,
        target_transform: TargetTransform::Log,
    };
    let net = Mlp::new(inputs, &hyper.hidden, 1, hyper.activation);
    let params = net.init(settings.seed);
    TrainState {
        inputs: InputSpec {
            features: vec![
                "log_sum".into(),
                "centroid_depth".into(),
                "back_fraction".into(),
                "outside_tower_fraction".into(),
            ],
            feature_widths: vec![1; inputs],
            target: "energy".into(),
            outputs: 1,
            samples: x.nrows(),
            n_train: x.nrows(),
            n_val: 0,
            fingerprint: String::new(),
            data_file: data_file.into(),
        },
        hyper,
        norm: Normalization { x_mean, x_std, y_mean, y_std },
        adam: Adam::new(params.len()),
        net,
        params,
        epoch: 0,
        history: Vec::new(),
        baseline_val_rmse: f64::NAN,
        diverged: false,
    }
}

/// Predicted energies, GeV.
pub fn predict(state: &TrainState, x: &Array2<f64>) -> Vec<f64> {
    predict_standardized(state, state.norm.apply_x(x.view()).view()).column(0).to_vec()
}

/// Trains `epochs` more epochs on `x` → `energy`; `val` (features, energies) is scored
/// after each epoch (the RMSE in GeV). The Adam state and the standardisation carry on.
pub fn train(
    state: &mut TrainState,
    x: &Array2<f64>,
    energy: &[f64],
    epochs: usize,
    val: Option<(&Array2<f64>, &[f64])>,
) {
    let xs = state.norm.apply_x(x.view());
    let ys = state.norm.apply_y(targets(energy).view());
    let decay = state.net.weight_mask();
    let mut grad = vec![0.0; state.net.n_params()];
    let n = xs.nrows();
    for _ in 0..epochs {
        let t0 = std::time::Instant::now();
        let mut rng = ChaCha8Rng::seed_from_u64(state.hyper.seed);
        rng.set_stream(state.epoch as u64);
        let mut order: Vec<usize> = (0..n).collect();
        order.shuffle(&mut rng);
        let mut sse = 0.0;
        for chunk in order.chunks(state.hyper.batch_size.max(1)) {
            let xb = xs.select(Axis(0), chunk);
            let yb = ys.select(Axis(0), chunk);
            sse += state.net.gradient_sum(&state.params, xb.view(), yb.view(), &mut grad);
            let scale = 1.0 / chunk.len() as f64;
            grad.iter_mut().for_each(|g| *g *= scale);
            let lr = state.hyper.lr_at(state.epoch);
            state.adam.step(&mut state.params, &grad, lr, state.hyper.weight_decay, &decay);
        }
        let train_loss = sse / n.max(1) as f64;
        let (val_loss, val_rmse) = match val {
            Some((vx, ve)) if !ve.is_empty() => {
                let pred = predict(state, vx);
                let rmse = (pred.iter().zip(ve).map(|(p, e)| (p - e) * (p - e)).sum::<f64>() / ve.len() as f64).sqrt();
                let ln_err = pred.iter().zip(ve).map(|(p, e)| (p.ln() - e.ln()).powi(2)).sum::<f64>()
                    / ve.len() as f64
                    / (state.norm.y_std[0] * state.norm.y_std[0]);
                (ln_err, rmse)
            }
            _ => (f64::NAN, f64::NAN),
        };
        state.epoch += 1;
        if !train_loss.is_finite() {
            state.diverged = true;
        }
        state.history.push(EpochMetrics {
            epoch: state.epoch,
            train_loss,
            val_loss,
            val_rmse,
            lr: state.hyper.lr_at(state.epoch - 1),
            seconds: t0.elapsed().as_secs_f64(),
        });
        if state.diverged {
            break;
        }
    }
    if state.hyper.lr_schedule == LrSchedule::Constant {
        state.hyper.epochs = state.epoch;
    }
}

/// What one cycle's update is given.
#[derive(Debug, Clone)]
pub struct UpdateRequest<'a> {
    /// The window.
    pub events: &'a Events,
    /// Layers of the detector.
    pub layers: usize,
    /// Held-out events: event number a multiple of this.
    pub holdout_every: u64,
    /// The model to warm-start from (none: train from scratch with `settings`).
    pub previous: Option<TrainState>,
    /// The previous window's replay buffer.
    pub replay: Option<&'a Replay>,
    /// Architecture and first learning rate.
    pub settings: &'a ModelSettings,
    /// Epochs of the first training.
    pub initial_epochs: usize,
    /// Epochs of a warm-started update.
    pub epochs: usize,
    /// Learning rate of a warm-started update (smaller than the first one's: the update
    /// follows a small shift and should not add noise to the weights).
    pub update_lr: f64,
    /// Training events of this window kept for the next update.
    pub replay_size: usize,
    /// The window file, recorded in the model.
    pub data_file: &'a str,
}

/// What an update produced.
#[derive(Debug, Clone)]
pub struct Updated {
    /// The candidate model.
    pub state: TrainState,
    /// The replay buffer for the next update.
    pub replay: Replay,
    /// Events trained on, replayed ones included.
    pub trained: usize,
    /// Replayed events among them.
    pub replayed: usize,
    /// The candidate's scores on the held-out events.
    pub held_out: Scores,
}

/// The held-out events of a window: features and energies.
pub fn held_out(events: &Events, layers: usize, holdout_every: u64) -> Result<(Array2<f64>, Vec<f64>), OnlineError> {
    let x = events.features(layers)?;
    let (_, held) = events.split(holdout_every);
    Ok((x.select(Axis(0), &held), held.iter().map(|&k| events.energy[k]).collect()))
}

/// Scores of `state` on features `x` with energies `e`.
pub fn score(state: &TrainState, x: &Array2<f64>, e: &[f64]) -> Scores {
    let (bias, resolution) = bias_and_resolution(&predict(state, x), e);
    Scores { bias, resolution, events: e.len() }
}

/// Trains the first model on a window, or warm-starts the previous one on the window plus
/// the replay buffer.
pub fn update(req: UpdateRequest<'_>) -> Result<Updated, OnlineError> {
    let events = req.events;
    let x = events.features(req.layers)?;
    let (train_rows, held) = events.split(req.holdout_every);
    if train_rows.len() < 2 {
        return Err(OnlineError::Request(format!(
            "window {}: {} training events, too few to train on",
            events.window_index,
            train_rows.len()
        )));
    }
    let mut tx = x.select(Axis(0), &train_rows);
    let mut te: Vec<f64> = train_rows.iter().map(|&k| events.energy[k]).collect();
    let vx = x.select(Axis(0), &held);
    let ve: Vec<f64> = held.iter().map(|&k| events.energy[k]).collect();
    let mut replayed = 0;
    let (mut state, epochs) = match req.previous {
        None => {
            // The first training anneals its learning rate (cosine to 0 at
            // `initial_epochs`), so it ends in a minimum rather than jittering around it.
            let mut state = fresh(&tx, &te, req.settings, req.data_file);
            state.hyper.lr_schedule = LrSchedule::Cosine;
            state.hyper.epochs = req.initial_epochs;
            (state, req.initial_epochs)
        }
        Some(mut state) => {
            if state.net.sizes.first() != Some(&x.ncols()) {
                return Err(OnlineError::Request(format!(
                    "the previous model takes {:?} inputs, the window gives {} features",
                    state.net.sizes.first(),
                    x.ncols()
                )));
            }
            if let Some(r) = req.replay.filter(|r| !r.energy.is_empty()) {
                if r.features.ncols() != x.ncols() {
                    return Err(OnlineError::Request(format!(
                        "the replay buffer has {} features, the window gives {}",
                        r.features.ncols(),
                        x.ncols()
                    )));
                }
                replayed = r.energy.len();
                tx = ndarray::concatenate(Axis(0), &[tx.view(), r.features.view()]).expect("same width");
                te.extend(&r.energy);
            }
            state.hyper.lr = req.update_lr;
            state.hyper.lr_schedule = LrSchedule::Constant;
            state.inputs.data_file = req.data_file.into();
            (state, req.epochs)
        }
    };
    train(&mut state, &tx, &te, epochs, Some((&vx, &ve)));
    state.inputs.samples = te.len() + ve.len();
    state.inputs.n_train = te.len();
    state.inputs.n_val = ve.len();
    let held_out = score(&state, &vx, &ve);
    let replay = Replay::choose(events, &x, &train_rows, req.replay_size, req.settings.seed);
    Ok(Updated { state, replay, trained: te.len(), replayed, held_out })
}

/// Relative bias and resolution of `estimate` against `truth`: the mean and the standard
/// deviation of `(estimate − truth)/truth`.
pub fn bias_and_resolution(estimate: &[f64], truth: &[f64]) -> (f64, f64) {
    let n = truth.len().max(1) as f64;
    let rel: Vec<f64> = estimate.iter().zip(truth).map(|(e, t)| (e - t) / t).collect();
    let mean = rel.iter().sum::<f64>() / n;
    let var = rel.iter().map(|r| (r - mean) * (r - mean)).sum::<f64>() / (n - 1.0).max(1.0);
    (mean, var.sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// ln E = ln Σ − ln g with a gain g: the model learns g, then follows a change of it
    /// when warm-started.
    fn data(gain: f64, n: usize, seed: u64) -> (Array2<f64>, Vec<f64>) {
        use rand::RngExt as _;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let energy: Vec<f64> = (0..n).map(|_| rng.random_range(10.0..100.0)).collect();
        let x = Array2::from_shape_fn((n, 2), |(i, j)| {
            if j == 0 { (0.17 * gain * energy[i]).ln() } else { 0.5 + 0.01 * (i % 7) as f64 }
        });
        (x, energy)
    }

    #[test]
    fn a_warm_start_follows_a_gain_change_in_a_few_epochs() {
        let (x, e) = data(1.0, 400, 1);
        let mut s = fresh(&x, &e, &ModelSettings::default(), "w0");
        train(&mut s, &x, &e, 60, Some((&x, &e)));
        let (b, _) = bias_and_resolution(&predict(&s, &x), &e);
        assert!(b.abs() < 0.01, "bias after training {b}");
        let (x2, e2) = data(0.9, 400, 2);
        let (frozen, _) = bias_and_resolution(&predict(&s, &x2), &e2);
        assert!(frozen < -0.08, "a 10 % lower gain biases the old model: {frozen}");
        let norm = s.norm.clone();
        train(&mut s, &x2, &e2, 8, None);
        let (b2, _) = bias_and_resolution(&predict(&s, &x2), &e2);
        assert!(b2.abs() < 0.01, "bias after the warm start {b2}");
        assert_eq!(s.norm, norm, "the standardisation is kept");
        assert_eq!(s.epoch, 68);
        assert_eq!(s.history.len(), 68);
        // Reproducible bit for bit.
        let mut again = fresh(&x, &e, &ModelSettings::default(), "w0");
        train(&mut again, &x, &e, 60, Some((&x, &e)));
        train(&mut again, &x2, &e2, 8, None);
        assert_eq!(again.params, s.params);
    }

    #[test]
    fn bias_and_resolution_of_known_errors() {
        let (b, r) = bias_and_resolution(&[11.0, 9.0, 10.5, 9.5], &[10.0; 4]);
        assert!(b.abs() < 1e-12);
        assert!((r - ((0.01 + 0.01 + 0.0025 + 0.0025) / 3.0f64).sqrt()).abs() < 1e-12);
    }
}
