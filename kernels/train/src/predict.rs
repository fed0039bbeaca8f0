//! Predictions of a trained model, and the calorimeter resolution report.
//!
//! For a calorimeter file (root attribute `sampling_fraction`, datasets `cells` and
//! `truth/energy`, the layout `twin-kernel calo` writes) the report compares the model with
//! the naive estimator `E_naive = Σ cells / sampling_fraction`: for each, the relative
//! residual `r = (E_est − E)/E`, its mean (the bias) and standard deviation (the energy
//! resolution σ_E/E), overall and in bins of equal event count along the true energy.
//! Since a biased estimator also scales its spread, the report adds the resolution after a
//! global scale calibration, `σ(r)/(1 + bias)` = σ(E_est/E)/mean(E_est/E), and compares
//! model and naive estimator on that (`improvement`): the naive sum could be rescaled for
//! free, so only a better calibrated resolution is a real gain. With
//! `conditions/temperature` the same comparison is made in bins of temperature, which
//! shows how a gain correction learnt on calibration runs holds up as the conditions drift
//! (also beyond the temperatures the calibration saw).

use std::path::Path;

use ndarray::{Array2, Axis};

use super::data::{DataFile, Table};
use super::error::TrainError;
use super::fit::{TrainState, predict_standardized};
use twinflow_exchange::{Attr, DType, Dataset, Dim, Values, Variable};

/// Calorimeter dataset of the cell energies, `[event, layer, y, x]`, GeV.
pub const CALO_CELLS: &str = "cells";
/// Calorimeter dataset of the incident energy, `[event]`, GeV.
pub const CALO_ENERGY: &str = "truth/energy";
/// Calorimeter dataset of the detector temperature per event, `[event]`, K.
pub const CALO_TEMPERATURE: &str = "conditions/temperature";
/// Calorimeter root attribute: visible fraction of the deposited energy.
pub const CALO_SAMPLING_FRACTION: &str = "sampling_fraction";

/// Predictions for every sample of `table`, in target units.
pub fn predict(state: &TrainState, table: &Table) -> Result<Array2<f64>, TrainError> {
    if table.feature_widths != state.inputs.feature_widths {
        let name = table.features.first().cloned().unwrap_or_default();
        return Err(TrainError::Data {
            path: table.path.clone(),
            dataset: name,
            reason: format!(
                "gives {:?} columns per feature dataset {:?}, the model was trained on {:?}",
                table.feature_widths, table.features, state.inputs.feature_widths
            ),
        });
    }
    let xs = state.norm.apply_x(table.x.view());
    // In chunks, so a large file never needs all hidden activations at once.
    let chunks: Vec<Array2<f64>> = xs.axis_chunks_iter(Axis(0), 4096).map(|c| predict_standardized(state, c)).collect();
    let views: Vec<_> = chunks.iter().map(|c| c.view()).collect();
    Ok(ndarray::concatenate(Axis(0), &views).expect("same column count"))
}

/// Bias and spread of relative residuals `(estimate − truth)/truth`.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Relative {
    /// Samples.
    pub count: usize,
    /// Mean relative residual.
    pub bias: f64,
    /// Standard deviation of the relative residual (the resolution), `n − 1` denominator.
    pub resolution: f64,
    /// Root mean square of the relative residual.
    pub rms: f64,
    /// Resolution after a global scale calibration: `resolution / (1 + bias)`.
    pub resolution_calibrated: f64,
}

impl Relative {
    /// Statistics of `(est − truth)/truth` over the pairs.
    pub fn of(est: &[f64], truth: &[f64]) -> Self {
        let r: Vec<f64> = est.iter().zip(truth).map(|(e, t)| (e - t) / t).collect();
        let n = r.len() as f64;
        let bias = r.iter().sum::<f64>() / n;
        let var = r.iter().map(|v| (v - bias) * (v - bias)).sum::<f64>() / (n - 1.0).max(1.0);
        let rms = (r.iter().map(|v| v * v).sum::<f64>() / n).sqrt();
        Self { count: r.len(), bias, resolution: var.sqrt(), rms, resolution_calibrated: var.sqrt() / (1.0 + bias) }
    }
}

/// One bin of true energy.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct EnergyBin {
    /// Lowest true energy in the bin, GeV.
    pub e_min: f64,
    /// Highest true energy in the bin, GeV.
    pub e_max: f64,
    /// Mean true energy, GeV.
    pub e_mean: f64,
    /// The model (absent when it does not predict `truth/energy`).
    pub model: Option<Relative>,
    /// The naive estimator.
    pub naive: Relative,
}

/// One bin of detector temperature (`conditions/temperature`).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TemperatureBin {
    /// Lowest temperature in the bin, K.
    pub t_min: f64,
    /// Highest temperature in the bin, K.
    pub t_max: f64,
    /// Mean temperature, K.
    pub t_mean: f64,
    /// The model (absent when it does not predict `truth/energy`).
    pub model: Option<Relative>,
    /// The naive estimator.
    pub naive: Relative,
}

/// Model against naive estimator on a calorimeter file.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct CaloReport {
    /// The file's sampling fraction.
    pub sampling_fraction: f64,
    /// The model over all events (absent when it does not predict `truth/energy`).
    pub model: Option<Relative>,
    /// `Σ cells / sampling_fraction` over all events.
    pub naive: Relative,
    /// Naive over model calibrated resolution (> 1: the model is better).
    pub improvement: Option<f64>,
    /// Bins of equal event count along the true energy.
    pub bins: Vec<EnergyBin>,
    /// Bins of equal event count along the detector temperature (empty without
    /// `conditions/temperature`): how the gain correction holds up as conditions drift.
    pub temperature_bins: Vec<TemperatureBin>,
}

/// Cuts the events into `bins` bins of equal count along `key` (ties by event order) and
/// returns each bin's key range and mean, and the model and naive statistics.
fn binned(
    key: &[f64],
    bins: usize,
    truth: &[f64],
    model: Option<&[f64]>,
    naive: &[f64],
) -> Vec<(f64, f64, f64, Option<Relative>, Relative)> {
    let mut order: Vec<usize> = (0..key.len()).collect();
    order.sort_by(|&a, &b| key[a].total_cmp(&key[b]).then(a.cmp(&b)));
    let bins = bins.clamp(1, key.len().max(1));
    let pick = |v: &[f64], idx: &[usize]| idx.iter().map(|&i| v[i]).collect::<Vec<f64>>();
    (0..bins)
        .map(|b| {
            let idx = &order[b * key.len() / bins..(b + 1) * key.len() / bins];
            let k = pick(key, idx);
            let et = pick(truth, idx);
            (
                k.iter().copied().fold(f64::INFINITY, f64::min),
                k.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                k.iter().sum::<f64>() / k.len() as f64,
                model.map(|p| Relative::of(&pick(p, idx), &et)),
                Relative::of(&pick(naive, idx), &et),
            )
        })
        .collect()
}

/// The calorimeter comparison for `data`, or `None` if it is not a calorimeter file.
/// `energy_prediction` is the model's estimate of `truth/energy`, if it makes one.
pub fn calorimeter_report(
    data: &Path,
    energy_prediction: Option<&[f64]>,
    bins: usize,
) -> Result<Option<CaloReport>, TrainError> {
    let file = DataFile::open(data)?;
    let Some(sf) = file.root_attr_f64(CALO_SAMPLING_FRACTION) else { return Ok(None) };
    if !(file.has(CALO_CELLS) && file.has(CALO_ENERGY)) {
        return Ok(None);
    }
    let bad =
        |dataset: &str, reason: String| TrainError::Data { path: data.to_path_buf(), dataset: dataset.into(), reason };
    if !(sf.is_finite() && sf > 0.0) {
        return Err(TrainError::Input {
            path: data.to_path_buf(),
            reason: format!("attribute `{CALO_SAMPLING_FRACTION}` must be > 0, got {sf}"),
        });
    }
    let cells = file.read_matrix(CALO_CELLS)?;
    let energy = file.read_matrix(CALO_ENERGY)?;
    if energy.ncols() != 1 || energy.nrows() != cells.nrows() {
        return Err(bad(CALO_ENERGY, format!("has shape {:?}, expected [{}]", energy.dim(), cells.nrows())));
    }
    let e: Vec<f64> = energy.column(0).to_vec();
    if let Some(i) = e.iter().position(|v| !(v.is_finite() && *v > 0.0)) {
        return Err(bad(CALO_ENERGY, format!("has a non-positive or missing energy at event {i}")));
    }
    // Dead or missing cells (NaN) contribute nothing to the naive sum.
    let naive: Vec<f64> =
        cells.rows().into_iter().map(|r| r.iter().filter(|v| v.is_finite()).sum::<f64>() / sf).collect();
    let model = energy_prediction.filter(|p| p.len() == e.len());
    let energy_bins = binned(&e, bins, &e, model, &naive)
        .into_iter()
        .map(|(e_min, e_max, e_mean, model, naive)| EnergyBin { e_min, e_max, e_mean, model, naive })
        .collect();
    let temperature_bins = if file.has(CALO_TEMPERATURE) {
        let t = file.read_matrix(CALO_TEMPERATURE)?;
        if t.ncols() != 1 || t.nrows() != e.len() || t.iter().any(|v| !v.is_finite()) {
            return Err(bad(
                CALO_TEMPERATURE,
                format!("has shape {:?} or missing values, expected [{}]", t.dim(), e.len()),
            ));
        }
        binned(&t.column(0).to_vec(), bins, &e, model, &naive)
            .into_iter()
            .map(|(t_min, t_max, t_mean, model, naive)| TemperatureBin { t_min, t_max, t_mean, model, naive })
            .collect()
    } else {
        Vec::new()
    };
    let model_all = model.map(|p| Relative::of(p, &e));
    let naive_all = Relative::of(&naive, &e);
    Ok(Some(CaloReport {
        sampling_fraction: sf,
        improvement: model_all.map(|m| naive_all.resolution_calibrated / m.resolution_calibrated),
        model: model_all,
        naive: naive_all,
        bins: energy_bins,
        temperature_bins,
    }))
}

/// The naive calorimeter estimate `Σ cells / sampling_fraction` per event of `data`.
pub fn naive_energy(data: &Path) -> Result<Option<Vec<f64>>, TrainError> {
    let file = DataFile::open(data)?;
    let Some(sf) = file.root_attr_f64(CALO_SAMPLING_FRACTION).filter(|s| s.is_finite() && *s > 0.0) else {
        return Ok(None);
    };
    if !file.has(CALO_CELLS) {
        return Ok(None);
    }
    let cells = file.read_matrix(CALO_CELLS)?;
    Ok(Some(cells.rows().into_iter().map(|r| r.iter().filter(|v| v.is_finite()).sum::<f64>() / sf).collect()))
}

/// Error statistics of predictions against the truth, per output and overall.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Errors {
    /// Root-mean-square error over every sample and output.
    pub rmse: f64,
    /// Mean absolute error.
    pub mae: f64,
    /// Mean of prediction − truth.
    pub bias: f64,
    /// RMSE of each output.
    pub rmse_per_output: Vec<f64>,
}

impl Errors {
    /// Statistics of `pred − truth` (same shapes).
    pub fn of(pred: &Array2<f64>, truth: &Array2<f64>) -> Self {
        let d = pred - truth;
        let n = d.len().max(1) as f64;
        Self {
            rmse: (d.iter().map(|v| v * v).sum::<f64>() / n).sqrt(),
            mae: d.iter().map(|v| v.abs()).sum::<f64>() / n,
            bias: d.iter().sum::<f64>() / n,
            rmse_per_output: d
                .columns()
                .into_iter()
                .map(|c| (c.iter().map(|v| v * v).sum::<f64>() / c.len().max(1) as f64).sqrt())
                .collect(),
        }
    }
}

/// The prediction file: `prediction` and (when the data hold the target) `truth`, over
/// `sample` (and `output` for several outputs); `naive_energy` for a calorimeter file.
pub fn prediction_dataset(
    state: &TrainState,
    pred: &Array2<f64>,
    truth: Option<&Array2<f64>>,
    naive: Option<&[f64]>,
    attrs: Vec<(String, Attr)>,
) -> Dataset {
    let (n, t) = pred.dim();
    let mut dims = vec![Dim { name: "sample".into(), len: n, unlimited: false }];
    let var_dims: Vec<String> = if t > 1 {
        dims.push(Dim { name: "output".into(), len: t, unlimited: false });
        vec!["sample".into(), "output".into()]
    } else {
        vec!["sample".into()]
    };
    let var = |name: &str, long_name: String, values: Vec<f64>| Variable {
        name: name.into(),
        dims: var_dims.clone(),
        dtype: DType::F64,
        attrs: vec![("long_name".into(), Attr::Str(long_name))],
        values: Values::Num(values),
    };
    let target = &state.inputs.target;
    let mut variables =
        vec![var("prediction", format!("model prediction of `{target}`"), pred.iter().copied().collect())];
    if let Some(truth) = truth {
        variables.push(var("truth", format!("`{target}` copied from the data file"), truth.iter().copied().collect()));
    }
    if let Some(naive) = naive {
        variables.push(Variable {
            name: "naive_energy".into(),
            dims: vec!["sample".into()],
            dtype: DType::F64,
            attrs: vec![
                ("long_name".into(), Attr::Str("sum of cell energies / sampling fraction".into())),
                ("units".into(), Attr::Str("GeV".into())),
            ],
            values: Values::Num(naive.to_vec()),
        });
    }
    Dataset { dims, variables, attrs }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_statistics() {
        let r = Relative::of(&[11.0, 9.0, 10.0], &[10.0, 10.0, 10.0]);
        assert_eq!(r.count, 3);
        assert!(r.bias.abs() < 1e-15);
        assert!((r.resolution - 0.1).abs() < 1e-12);
        assert!((r.rms - (0.02f64 / 3.0).sqrt()).abs() < 1e-12);
        let biased = Relative::of(&[5.5, 4.5], &[10.0, 10.0]);
        assert!((biased.bias + 0.5).abs() < 1e-15);
        assert!((biased.resolution_calibrated - 2.0 * biased.resolution).abs() < 1e-15);
    }
}
