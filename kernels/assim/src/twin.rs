//! Lorenz-96 twin experiments run in process: the reference driver for the filters.
//!
//! A truth trajectory starts from F + N(0, 1) perturbations and is spun up for
//! [`TwinConfig::spin_up_steps`]; every cycle the truth and the ensemble advance
//! `steps_per_cycle` RK4 steps, the truth is observed (all variables, identity H, error
//! σ drawn from the counter-based generator keyed by (seed, cycle, observation)), and the
//! ensemble is analysed by [`crate::filter::analyse`], the same function the
//! `twin-kernel assimilate` kernel calls. The initial ensemble is truth + N(0, 1) draws.
//! Scores over the cycles after `burn_in` (Sakov & Oke 2008 / DAPPER's `rmse.a`): the
//! time mean of the per-cycle RMSE of the analysis mean against the truth, and of the
//! spread. [`climatology_rmse`] is the baseline of always answering the climatological
//! mean.

use nalgebra::DMatrix;
use twinflow_comm::Communicator;

use crate::AssimError;
use crate::filter::{AnalysisConfig, Method, analyse, rms};
use crate::localization::Geometry;
use crate::lorenz96::Lorenz96;
use crate::obs::Observations;
use crate::rng::{Key, Purpose};

/// A twin experiment.
#[derive(Debug, Clone, PartialEq)]
pub struct TwinConfig {
    /// The model.
    pub model: Lorenz96,
    /// Number of variables.
    pub size: usize,
    /// Ensemble members.
    pub members: usize,
    /// Analysis cycles.
    pub cycles: u32,
    /// Cycles discarded before scoring.
    pub burn_in: u32,
    /// RK4 steps between analyses.
    pub steps_per_cycle: usize,
    /// Truth spin-up steps before cycle 0.
    pub spin_up_steps: usize,
    /// Observation error standard deviation.
    pub obs_std: f64,
    /// Seed of every draw.
    pub seed: u64,
    /// The analysis (`None`: a free ensemble, never corrected).
    pub method: Option<Method>,
    /// Multiplicative inflation of the analysis anomalies.
    pub inflation: f64,
    /// RTPS α.
    pub rtps: f64,
}

impl TwinConfig {
    /// The Sakov & Oke (2008) set-up: 40 variables, F = 8, dt = 0.05, one step per cycle,
    /// R = I, 20 time units (400 cycles) of burn-in.
    pub fn sakov_oke(method: Option<Method>, members: usize, inflation: f64, cycles: u32, seed: u64) -> Self {
        Self {
            model: Lorenz96::default(),
            size: crate::lorenz96::STANDARD_SIZE,
            members,
            cycles,
            burn_in: 400,
            steps_per_cycle: 1,
            spin_up_steps: 1000,
            obs_std: 1.0,
            seed,
            method,
            inflation,
            rtps: 0.0,
        }
    }

    /// The truth after spin-up (state at cycle 0).
    pub fn initial_truth(&self) -> Vec<f64> {
        let key = Key { seed: self.seed, purpose: Purpose::Truth, cycle: 0, member: 0 };
        let mut x: Vec<f64> = (0..self.size).map(|i| self.model.forcing + key.normal(i as u64)).collect();
        self.model.advance(&mut x, self.spin_up_steps);
        x
    }

    /// The observations of `truth` at `cycle` (identity, error σ).
    pub fn observe(&self, truth: &[f64], cycle: u32) -> Observations {
        let key = Key { seed: self.seed, purpose: Purpose::ObservationError, cycle, member: 0 };
        let noisy: Vec<f64> = truth.iter().enumerate().map(|(i, t)| t + self.obs_std * key.normal(i as u64)).collect();
        Observations::identity(&noisy, self.obs_std)
    }

    /// The initial ensemble around `truth`.
    pub fn initial_ensemble(&self, truth: &[f64]) -> DMatrix<f64> {
        DMatrix::from_fn(self.size, self.members, |i, j| {
            truth[i]
                + Key { seed: self.seed, purpose: Purpose::InitialEnsemble, cycle: 0, member: j as u32 }
                    .normal(i as u64)
        })
    }

    /// The analysis settings of `cycle` for this experiment's `method`.
    pub fn analysis_config(&self, method: Method, cycle: u32) -> AnalysisConfig {
        AnalysisConfig {
            inflation: self.inflation,
            rtps: self.rtps,
            seed: self.seed,
            cycle,
            geometry: Geometry { period: [Some(self.size as f64), None] },
            ..AnalysisConfig::on_line(method, self.size)
        }
    }
}

/// Scores of a twin experiment.
#[derive(Debug, Clone, PartialEq)]
pub struct TwinScores {
    /// Time-mean analysis RMSE against the truth (after burn-in).
    pub rmse_analysis: f64,
    /// Time-mean forecast RMSE against the truth.
    pub rmse_forecast: f64,
    /// Time-mean analysis spread (root mean ensemble variance).
    pub spread_analysis: f64,
    /// Cycles scored.
    pub scored: u32,
    /// Per-cycle analysis RMSE (every cycle, burn-in included).
    pub rmse_series: Vec<f64>,
}

/// Runs a twin experiment.
pub fn run_twin(cfg: &TwinConfig, comm: &dyn Communicator) -> Result<TwinScores, AssimError> {
    let mut truth = cfg.initial_truth();
    let mut ens = cfg.initial_ensemble(&truth);
    let (mut sa, mut sf, mut ss, mut scored) = (0.0, 0.0, 0.0, 0_u32);
    let mut series = Vec::with_capacity(cfg.cycles as usize);
    for cycle in 1..=cfg.cycles {
        cfg.model.advance(&mut truth, cfg.steps_per_cycle);
        for mut col in ens.column_iter_mut() {
            cfg.model.advance(col.as_mut_slice(), cfg.steps_per_cycle);
        }
        let rmse_f = mean_error(&ens, &truth);
        if let Some(method) = cfg.method {
            let obs = cfg.observe(&truth, cycle);
            analyse(&cfg.analysis_config(method, cycle), &mut ens, &obs, comm)?;
        }
        let rmse_a = mean_error(&ens, &truth);
        if !rmse_a.is_finite() {
            return Err(AssimError::Numerical("the ensemble diverged"));
        }
        series.push(rmse_a);
        if cycle > cfg.burn_in {
            sa += rmse_a;
            sf += rmse_f;
            ss += rms(spread_of(&ens).into_iter());
            scored += 1;
        }
    }
    let n = f64::from(scored.max(1));
    Ok(TwinScores {
        rmse_analysis: sa / n,
        rmse_forecast: sf / n,
        spread_analysis: ss / n,
        scored,
        rmse_series: series,
    })
}

fn spread_of(e: &DMatrix<f64>) -> Vec<f64> {
    let k = e.ncols() as f64;
    e.row_iter()
        .map(|r| {
            let m = r.sum() / k;
            (r.iter().map(|v| (v - m).powi(2)).sum::<f64>() / (k - 1.0)).sqrt()
        })
        .collect()
}

/// RMSE of the ensemble mean against the truth.
pub fn mean_error(e: &DMatrix<f64>, truth: &[f64]) -> f64 {
    let k = e.ncols() as f64;
    rms(e.row_iter().zip(truth).map(|(r, t)| r.sum() / k - t))
}

/// Time-mean RMSE of the climatological mean (each variable's mean over the scored part
/// of the truth run) against the truth: the baseline every filter must beat.
pub fn climatology_rmse(cfg: &TwinConfig) -> f64 {
    let mut truth = cfg.initial_truth();
    let mut states = Vec::new();
    for cycle in 1..=cfg.cycles {
        cfg.model.advance(&mut truth, cfg.steps_per_cycle);
        if cycle > cfg.burn_in {
            states.push(truth.clone());
        }
    }
    let t = states.len().max(1) as f64;
    let mean: Vec<f64> = (0..cfg.size).map(|i| states.iter().map(|s| s[i]).sum::<f64>() / t).collect();
    states.iter().map(|s| rms(s.iter().zip(&mean).map(|(a, b)| a - b))).sum::<f64>() / t
}
