//! The analysis step: stochastic EnKF, ETKF and LETKF, inflation, RTPS and constraints.
//!
//! Notation: k members x⁽ʲ⁾ (columns of the n × k ensemble E), mean x̄, anomalies
//! X = E − x̄1ᵀ; observations y (m), R = diag(σ²), linear H; Yb = HE − ȳ1ᵀ.
//!
//! - **Stochastic EnKF** (perturbed observations; Burgers et al. 1998, as in DAPPER's
//!   `PertObs`): C = Yb Ybᵀ + (k − 1)R, Dⱼ = y + σ∘εⱼ with the εⱼ centred over members,
//!   xⱼ ← xⱼ + X Ybᵀ C⁻¹ (Dⱼ − H xⱼ), solved by Cholesky. εⱼ,ᵢ comes from the counter-based
//!   generator keyed by (seed, cycle, member j, observation i) ([`crate::rng`]).
//! - **ETKF** (Hunt, Kostelich & Szunyogh 2007, Physica D 230:112, eqs. 20–25):
//!   A = (k − 1)I + Ybᵀ R⁻¹ Yb = QΛQᵀ, P̃a = QΛ⁻¹Qᵀ, w̄ = P̃a Ybᵀ R⁻¹ (y − ȳ),
//!   Wa = Q[(k − 1)Λ⁻¹]^½Qᵀ (the symmetric square root), Eᵃ = x̄1ᵀ + X(w̄1ᵀ + Wa).
//! - **LETKF**: the ETKF weights computed for each *local domain* (the state elements at
//!   one location) from the observations within 2c, with R⁻¹ tapered by Gaspari–Cohn:
//!   R⁻¹ᵢᵢ → ρ(dᵢ)/σᵢ² (Hunt et al. 2007 §2.3; [`crate::localization`]). Elements without a
//!   location (scalar parameters) use every observation, untapered. Domains are
//!   independent, so [`LetkfPlan`] splits them in contiguous blocks over ranks and each
//!   domain's result is bitwise the same whoever computes it.
//! - **After the update**, per state element: RTPS (Whitaker & Hamill 2012)
//!   σa ← σa + α(σb − σa) by scaling the analysis anomalies; multiplicative inflation of
//!   the analysis anomalies by λ (DAPPER's `infl`, applied after the analysis as in its
//!   `post_process`); then the [`Constraint`]s on each member (bounds, non-negativity).
//!
//! Ensemble-space matrices are k × k and decomposed with `nalgebra`'s symmetric
//! eigensolver; the EnKF's m × m solve uses `nalgebra`'s Cholesky.

use std::collections::HashMap;
use std::ops::Range;

use nalgebra::{DMatrix, DVector};
use twinflow_comm::Communicator;

use crate::AssimError;
use crate::localization::{Geometry, gaspari_cohn};
use crate::obs::Observations;
use crate::rng::{Key, Purpose};

/// The ensemble: n × k, one column per member.
pub type Ensemble = DMatrix<f64>;

/// Which analysis.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Method {
    /// Stochastic EnKF with perturbed observations.
    EnKF,
    /// Global ETKF (symmetric square root).
    Etkf,
    /// Local ETKF with Gaspari–Cohn half-width `half_width` (location units).
    Letkf {
        /// Gaspari–Cohn half-width c; observations beyond 2c are ignored.
        half_width: f64,
    },
}

/// A physical constraint applied to every analysis member.
#[derive(Debug, Clone, PartialEq)]
pub enum Constraint {
    /// Clip the elements `range` to `[lower, upper]` (non-negative: `lower = 0`,
    /// `upper = ∞`).
    Clip {
        /// State elements concerned.
        range: Range<usize>,
        /// Lower bound.
        lower: f64,
        /// Upper bound.
        upper: f64,
    },
    /// Zero the elements `target` where the matching element of `condition` (same
    /// offset) is below `threshold` (momentum where a cell is dry).
    ZeroWhereBelow {
        /// Elements set to zero.
        target: Range<usize>,
        /// Elements tested.
        condition: Range<usize>,
        /// Threshold.
        threshold: f64,
    },
}

impl Constraint {
    /// Applies the constraint to one member's state.
    pub fn apply(&self, x: &mut [f64]) {
        match self {
            Self::Clip { range, lower, upper } => {
                for v in &mut x[range.clone()] {
                    *v = v.clamp(*lower, *upper);
                }
            }
            Self::ZeroWhereBelow { target, condition, threshold } => {
                for (t, c) in target.clone().zip(condition.clone()) {
                    if x[c] < *threshold {
                        x[t] = 0.0;
                    }
                }
            }
        }
    }
}

/// Settings of one analysis.
#[derive(Debug, Clone, PartialEq)]
pub struct AnalysisConfig {
    /// The method.
    pub method: Method,
    /// Multiplicative inflation λ of the analysis anomalies (1: none).
    pub inflation: f64,
    /// Relaxation to prior spread α in [0, 1] (0: none).
    pub rtps: f64,
    /// Seed of the perturbed observations (EnKF).
    pub seed: u64,
    /// Cycle number (keys the perturbed observations).
    pub cycle: u32,
    /// Distances for localization.
    pub geometry: Geometry,
    /// Location of every state element; `None` for non-local elements (parameters).
    pub location: Vec<Option<[f64; 2]>>,
    /// Constraints applied after the update, in order.
    pub constraints: Vec<Constraint>,
}

impl AnalysisConfig {
    /// A configuration for `method` on a state whose element i lies at (i, 0).
    pub fn on_line(method: Method, n: usize) -> Self {
        Self {
            method,
            inflation: 1.0,
            rtps: 0.0,
            seed: 0,
            cycle: 0,
            geometry: Geometry::default(),
            location: (0..n).map(|i| Some([i as f64, 0.0])).collect(),
            constraints: Vec::new(),
        }
    }
}

/// What an analysis reports.
#[derive(Debug, Clone, PartialEq)]
pub struct AnalysisReport {
    /// Innovations y − H x̄ᵇ.
    pub innovation: Vec<f64>,
    /// H x̄ᵇ.
    pub forecast_mean_obs: Vec<f64>,
    /// H x̄ᵃ.
    pub analysis_mean_obs: Vec<f64>,
    /// Per state element forecast spread (ensemble standard deviation, k − 1).
    pub forecast_spread: Vec<f64>,
    /// Per state element analysis spread.
    pub analysis_spread: Vec<f64>,
}

impl AnalysisReport {
    /// RMSE of H x̄ᵇ against the observations.
    pub fn rmse_obs_forecast(&self) -> f64 {
        rms(self.innovation.iter().copied())
    }
    /// RMSE of H x̄ᵃ against the observations (values recomputed from the innovations).
    pub fn rmse_obs_analysis(&self) -> f64 {
        rms(self
            .innovation
            .iter()
            .zip(&self.forecast_mean_obs)
            .zip(&self.analysis_mean_obs)
            .map(|((d, f), a)| d + f - a))
    }
}

/// Root mean square of the values (0 for none).
pub fn rms(v: impl Iterator<Item = f64>) -> f64 {
    let (s, n) = v.fold((0.0, 0_usize), |(s, n), x| (s + x * x, n + 1));
    if n == 0 { 0.0 } else { (s / n as f64).sqrt() }
}

/// Row means of an n × k matrix.
fn row_mean(e: &DMatrix<f64>) -> DVector<f64> {
    let k = e.ncols() as f64;
    let mut m = DVector::zeros(e.nrows());
    for j in 0..e.ncols() {
        m += e.column(j);
    }
    m / k
}

fn anomalies(e: &DMatrix<f64>, mean: &DVector<f64>) -> DMatrix<f64> {
    let mut x = e.clone();
    for mut c in x.column_iter_mut() {
        c -= mean;
    }
    x
}

fn spread(e: &DMatrix<f64>) -> Vec<f64> {
    let k = e.ncols();
    let mean = row_mean(e);
    (0..e.nrows())
        .map(|i| {
            let s: f64 = (0..k).map(|j| (e[(i, j)] - mean[i]).powi(2)).sum();
            (s / (k as f64 - 1.0).max(1.0)).sqrt()
        })
        .collect()
}

/// Observation-space ensemble HE (m × k).
fn observe(obs: &Observations, e: &DMatrix<f64>) -> DMatrix<f64> {
    DMatrix::from_fn(obs.len(), e.ncols(), |i, j| obs.operator[i].iter().map(|&(s, w)| w * e[(s, j)]).sum())
}

/// Runs one analysis on `ensemble` (n × k, updated in place) with `obs`. Every rank must
/// call it with the same arguments; every rank ends with the same analysis.
pub fn analyse(
    config: &AnalysisConfig,
    ensemble: &mut Ensemble,
    obs: &Observations,
    comm: &dyn Communicator,
) -> Result<AnalysisReport, AssimError> {
    let (n, k) = ensemble.shape();
    if k < 2 {
        return Err(AssimError::Config(format!("an ensemble needs at least 2 members, got {k}")));
    }
    if config.location.len() != n {
        return Err(AssimError::Config(format!("{} locations for a state of {n} elements", config.location.len())));
    }
    if !(config.inflation.is_finite() && config.inflation > 0.0 && (0.0..=1.0).contains(&config.rtps)) {
        return Err(AssimError::Config("inflation must be positive and RTPS in [0, 1]".into()));
    }
    if let Some((i, j)) = (0..n).flat_map(|i| (0..k).map(move |j| (i, j))).find(|&(i, j)| !ensemble[(i, j)].is_finite())
    {
        return Err(AssimError::NonFinite { element: i, member: j });
    }
    obs.validate(n)?;
    let forecast = ensemble.clone();
    let hx = observe(obs, &forecast);
    let y = DVector::from_column_slice(&obs.value);
    let hmean = row_mean(&hx);
    match config.method {
        Method::EnKF => enkf(config, ensemble, obs, &hx)?,
        Method::Etkf => {
            let all: Vec<usize> = (0..n).collect();
            let weights = vec![1.0; obs.len()];
            let w = etkf_weights(&hx, &hmean, &y, &obs.error_std, &(0..obs.len()).collect::<Vec<_>>(), &weights)?;
            apply_weights(ensemble, &forecast, &all, &w);
        }
        Method::Letkf { half_width } => {
            if !(half_width.is_finite() && half_width > 0.0) {
                return Err(AssimError::Config("the localization half-width must be positive".into()));
            }
            let plan = LetkfPlan::new(&config.location);
            plan.run(config.geometry, half_width, ensemble, obs, &hx, comm)?;
        }
    }
    post_process(config, ensemble, &forecast);
    let amean = row_mean(&observe(obs, ensemble));
    Ok(AnalysisReport {
        innovation: (&y - &hmean).iter().copied().collect(),
        forecast_mean_obs: hmean.iter().copied().collect(),
        analysis_mean_obs: amean.iter().copied().collect(),
        forecast_spread: spread(&forecast),
        analysis_spread: spread(ensemble),
    })
}

fn enkf(config: &AnalysisConfig, e: &mut Ensemble, obs: &Observations, hx: &DMatrix<f64>) -> Result<(), AssimError> {
    let (m, k) = hx.shape();
    let k1 = k as f64 - 1.0;
    let hmean = row_mean(hx);
    let yb = anomalies(hx, &hmean);
    let mut c = &yb * yb.transpose();
    for i in 0..m {
        c[(i, i)] += k1 * obs.error_std[i] * obs.error_std[i];
    }
    // Perturbations keyed by (seed, cycle, member, observation), centred over members.
    let mut eps = DMatrix::from_fn(m, k, |i, j| {
        Key { seed: config.seed, purpose: Purpose::ObservationPerturbation, cycle: config.cycle, member: j as u32 }
            .normal(i as u64)
    });
    let emean = row_mean(&eps);
    for mut col in eps.column_iter_mut() {
        col -= &emean;
    }
    let d = DMatrix::from_fn(m, k, |i, j| obs.value[i] + obs.error_std[i] * eps[(i, j)] - hx[(i, j)]);
    let chol = c.cholesky().ok_or(AssimError::Numerical("the innovation covariance is not positive definite"))?;
    let z = chol.solve(&d);
    let mean = row_mean(e);
    let x = anomalies(e, &mean);
    *e += x * (yb.transpose() * z);
    Ok(())
}

/// ETKF weights W = w̄1ᵀ + Wa (k × k) from the observation-space ensemble `hx` restricted
/// to the observations `sel`, with precision weights `taper` (R⁻¹ᵢᵢ = taperᵢ/σᵢ²).
fn etkf_weights(
    hx: &DMatrix<f64>,
    hmean: &DVector<f64>,
    y: &DVector<f64>,
    std: &[f64],
    sel: &[usize],
    taper: &[f64],
) -> Result<DMatrix<f64>, AssimError> {
    let k = hx.ncols();
    let k1 = k as f64 - 1.0;
    let ml = sel.len();
    let yb = DMatrix::from_fn(ml, k, |r, j| hx[(sel[r], j)] - hmean[sel[r]]);
    let rinv = DVector::from_fn(ml, |r, _| taper[r] / (std[sel[r]] * std[sel[r]]));
    let d = DVector::from_fn(ml, |r, _| y[sel[r]] - hmean[sel[r]]);
    // C = Ybᵀ R⁻¹ (k × m_l).
    let mut c = yb.transpose();
    for (r, mut col) in c.column_iter_mut().enumerate() {
        col *= rinv[r];
    }
    let mut a = &c * &yb;
    for i in 0..k {
        a[(i, i)] += k1;
    }
    // Symmetrise against round-off before the eigensolver.
    let a = (&a + a.transpose()) * 0.5;
    let eig = a.symmetric_eigen();
    if eig.eigenvalues.iter().any(|&l| !(l.is_finite() && l > 0.0)) {
        return Err(AssimError::Numerical("the ensemble-space matrix is not positive definite"));
    }
    let q = &eig.eigenvectors;
    let inv = DMatrix::from_diagonal(&eig.eigenvalues.map(|l| 1.0 / l));
    let sqrt = DMatrix::from_diagonal(&eig.eigenvalues.map(|l| (k1 / l).sqrt()));
    let pa = q * inv * q.transpose();
    let wbar = &pa * (&c * d);
    let mut w = q * sqrt * q.transpose();
    for mut col in w.column_iter_mut() {
        col += &wbar;
    }
    Ok(w)
}

/// Eᵃ[rows] = x̄ᵇ + Xᵇ W for the state elements `rows`.
fn apply_weights(e: &mut Ensemble, forecast: &Ensemble, rows: &[usize], w: &DMatrix<f64>) {
    let k = forecast.ncols();
    for &i in rows {
        let mean = forecast.row(i).sum() / k as f64;
        for j in 0..k {
            let mut v = 0.0;
            for l in 0..k {
                v += (forecast[(i, l)] - mean) * w[(l, j)];
            }
            e[(i, j)] = mean + v;
        }
    }
}

/// RTPS, inflation and constraints after the update.
fn post_process(config: &AnalysisConfig, e: &mut Ensemble, forecast: &Ensemble) {
    let k = e.ncols();
    let sb = spread(forecast);
    let sa = spread(e);
    for i in 0..e.nrows() {
        let mean = e.row(i).sum() / k as f64;
        let mut scale = config.inflation;
        if config.rtps > 0.0 && sa[i] > 0.0 {
            scale *= 1.0 + config.rtps * (sb[i] - sa[i]) / sa[i];
        }
        if scale != 1.0 {
            for j in 0..k {
                e[(i, j)] = mean + scale * (e[(i, j)] - mean);
            }
        }
    }
    if !config.constraints.is_empty() {
        for mut col in e.column_iter_mut() {
            let x = col.as_mut_slice();
            for c in &config.constraints {
                c.apply(x);
            }
        }
    }
}

/// The LETKF's local domains (state elements sharing one location) and their split over
/// ranks.
#[derive(Debug, Clone)]
pub struct LetkfPlan {
    /// Each domain: its location (`None`: non-local) and its state elements.
    pub domains: Vec<(Option<[f64; 2]>, Vec<usize>)>,
}

impl LetkfPlan {
    /// Groups the state elements by location, in order of first appearance.
    pub fn new(location: &[Option<[f64; 2]>]) -> Self {
        let mut index: HashMap<Option<[u64; 2]>, usize> = HashMap::new();
        let mut domains: Vec<(Option<[f64; 2]>, Vec<usize>)> = Vec::new();
        for (i, loc) in location.iter().enumerate() {
            let key = loc.map(|p| [p[0].to_bits(), p[1].to_bits()]);
            let d = *index.entry(key).or_insert_with(|| {
                domains.push((*loc, Vec::new()));
                domains.len() - 1
            });
            domains[d].1.push(i);
        }
        Self { domains }
    }

    /// The domains rank `rank` of `size` analyses: a contiguous block.
    pub fn block(&self, rank: usize, size: usize) -> Range<usize> {
        let d = self.domains.len();
        (rank * d / size)..((rank + 1) * d / size)
    }

    /// Analyses the domains `domains` (any order) from the forecast `forecast` and its
    /// observation-space ensemble `hx`; returns, per domain in the order given, the
    /// analysis values of its elements (element-major, k values each).
    pub fn analyse_domains(
        &self,
        domains: impl Iterator<Item = usize>,
        geometry: Geometry,
        half_width: f64,
        forecast: &Ensemble,
        obs: &Observations,
        hx: &DMatrix<f64>,
    ) -> Result<Vec<Vec<f64>>, AssimError> {
        let k = forecast.ncols();
        let hmean = row_mean(hx);
        let y = DVector::from_column_slice(&obs.value);
        let mut out = Vec::new();
        let mut local = forecast.clone();
        for d in domains {
            let (loc, rows) = &self.domains[d];
            let (sel, taper): (Vec<usize>, Vec<f64>) = match loc {
                None => ((0..obs.len()).collect(), vec![1.0; obs.len()]),
                Some(p) => (0..obs.len())
                    .filter_map(|i| {
                        let rho = gaspari_cohn(geometry.distance(*p, obs.location[i]), half_width);
                        (rho > 0.0).then_some((i, rho))
                    })
                    .unzip(),
            };
            let mut values = Vec::with_capacity(rows.len() * k);
            if sel.is_empty() {
                for &i in rows {
                    values.extend(forecast.row(i).iter());
                }
            } else {
                let w = etkf_weights(hx, &hmean, &y, &obs.error_std, &sel, &taper)?;
                apply_weights(&mut local, forecast, rows, &w);
                for &i in rows {
                    values.extend(local.row(i).iter());
                }
            }
            out.push(values);
        }
        Ok(out)
    }

    /// Runs every domain, this rank its block, and shares the result with every rank
    /// (gathered to rank 0 in domain order, then broadcast).
    fn run(
        &self,
        geometry: Geometry,
        half_width: f64,
        e: &mut Ensemble,
        obs: &Observations,
        hx: &DMatrix<f64>,
        comm: &dyn Communicator,
    ) -> Result<(), AssimError> {
        let forecast = e.clone();
        let k = e.ncols();
        let mine = self.analyse_domains(self.block(comm.rank(), comm.size()), geometry, half_width, &forecast, obs, hx);
        // A numerical failure on one rank must not leave the others waiting in the
        // gather: every rank contributes, a failing one NaNs, and all check afterwards.
        let (flat, failed): (Vec<f64>, Option<AssimError>) = match mine {
            Ok(v) => (v.concat(), None),
            Err(err) => {
                let len: usize = self.block(comm.rank(), comm.size()).map(|d| self.domains[d].1.len() * k).sum();
                (vec![f64::NAN; len], Some(err))
            }
        };
        let mut all = vec![0.0; e.nrows() * k];
        if let Some(g) = comm.gather_f64(&flat) {
            let mut at = 0;
            for (_, rows) in &self.domains {
                for &i in rows {
                    for j in 0..k {
                        all[j * e.nrows() + i] = g[at + j];
                    }
                    at += k;
                }
            }
        }
        comm.broadcast_f64(&mut all);
        if let Some(err) = failed {
            return Err(err);
        }
        if all.iter().any(|v| !v.is_finite()) {
            return Err(AssimError::Numerical("a local analysis failed on another rank"));
        }
        e.as_mut_slice().copy_from_slice(&all);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::twin::TwinConfig;
    use twinflow_comm::SingleProcess;

    fn forecast_and_obs() -> (TwinConfig, Ensemble, Observations) {
        let cfg = TwinConfig::sakov_oke(None, 10, 1.0, 0, 5);
        let mut truth = cfg.initial_truth();
        let mut e = cfg.initial_ensemble(&truth);
        cfg.model.advance(&mut truth, 3);
        for mut c in e.column_iter_mut() {
            cfg.model.advance(c.as_mut_slice(), 3);
        }
        let obs = cfg.observe(&truth, 1);
        (cfg, e, obs)
    }

    #[test]
    fn etkf_with_a_huge_observation_error_leaves_the_ensemble_unchanged() {
        let (cfg, e, mut obs) = forecast_and_obs();
        obs.error_std.iter_mut().for_each(|s| *s = 1e12);
        for method in [Method::Etkf, Method::Letkf { half_width: 5.0 }, Method::EnKF] {
            let mut a = e.clone();
            analyse(&cfg.analysis_config(method, 1), &mut a, &obs, &SingleProcess).unwrap();
            let diff = (&a - &e).abs().max();
            assert!(diff < 1e-9, "{method:?} moved the ensemble by {diff}");
        }
    }

    #[test]
    fn etkf_analysis_mean_moves_toward_the_observations_and_spread_shrinks() {
        let (cfg, e, obs) = forecast_and_obs();
        let mut a = e.clone();
        let r = analyse(&cfg.analysis_config(Method::Etkf, 1), &mut a, &obs, &SingleProcess).unwrap();
        assert!(r.rmse_obs_analysis() < r.rmse_obs_forecast());
        assert!(rms(r.analysis_spread.iter().copied()) < rms(r.forecast_spread.iter().copied()));
        // The symmetric square root keeps the analysis anomalies centred.
        let mean = row_mean(&a);
        let x = anomalies(&a, &mean);
        assert!(x.column_sum().amax() < 1e-10);
    }

    #[test]
    fn letkf_is_independent_of_domain_order_and_rank_partition() {
        let (cfg, e, obs) = forecast_and_obs();
        let plan = LetkfPlan::new(&cfg.analysis_config(Method::Etkf, 1).location);
        let geometry = Geometry { period: [Some(40.0), None] };
        let hx = observe(&obs, &e);
        let d = plan.domains.len();
        let full = plan.analyse_domains(0..d, geometry, 7.28, &e, &obs, &hx).unwrap();
        let mut reversed = plan.analyse_domains((0..d).rev(), geometry, 7.28, &e, &obs, &hx).unwrap();
        reversed.reverse();
        assert_eq!(bits(&full), bits(&reversed));
        for size in [2, 3, 4, 7] {
            let mut parts = Vec::new();
            for rank in (0..size).rev() {
                let mut p = plan.analyse_domains(plan.block(rank, size), geometry, 7.28, &e, &obs, &hx).unwrap();
                p.extend(parts);
                parts = p;
            }
            assert_eq!(bits(&full), bits(&parts), "{size} ranks");
        }
        // Through `analyse` too (single process) against the assembled domains.
        let mut a = e.clone();
        let mut c = cfg.analysis_config(Method::Letkf { half_width: 7.28 }, 1);
        c.inflation = 1.0;
        analyse(&c, &mut a, &obs, &SingleProcess).unwrap();
        let assembled: Vec<f64> = (0..d).flat_map(|i| full[i].clone()).collect();
        let direct: Vec<f64> = (0..40).flat_map(|i| a.row(i).iter().copied().collect::<Vec<_>>()).collect();
        assert_eq!(bits(&[assembled]), bits(&[direct]));
    }

    fn bits(v: &[Vec<f64>]) -> Vec<u64> {
        v.iter().flatten().map(|x| x.to_bits()).collect()
    }

    #[test]
    fn enkf_perturbations_do_not_depend_on_member_order() {
        let (cfg, e, obs) = forecast_and_obs();
        let mut a = e.clone();
        analyse(&cfg.analysis_config(Method::EnKF, 1), &mut a, &obs, &SingleProcess).unwrap();
        let mut b = e.clone();
        analyse(&cfg.analysis_config(Method::EnKF, 1), &mut b, &obs, &SingleProcess).unwrap();
        assert_eq!(a, b);
        let r = analyse(&cfg.analysis_config(Method::EnKF, 2), &mut b.clone(), &obs, &SingleProcess);
        assert!(r.is_ok());
    }

    #[test]
    fn rtps_and_constraints() {
        let (mut cfg, e, obs) = forecast_and_obs();
        cfg.rtps = 1.0;
        let mut a = e.clone();
        let r = analyse(&cfg.analysis_config(Method::Etkf, 1), &mut a, &obs, &SingleProcess).unwrap();
        // RTPS with α = 1 restores the forecast spread exactly (up to round-off).
        for (f, s) in r.forecast_spread.iter().zip(&r.analysis_spread) {
            assert!((f - s).abs() < 1e-9 * f.max(1.0), "{f} vs {s}");
        }
        let mut c = cfg.analysis_config(Method::Etkf, 1);
        c.constraints = vec![
            Constraint::Clip { range: 0..20, lower: 0.0, upper: f64::INFINITY },
            Constraint::ZeroWhereBelow { target: 20..30, condition: 0..10, threshold: 1.0 },
        ];
        let mut a = e.clone();
        analyse(&c, &mut a, &obs, &SingleProcess).unwrap();
        for j in 0..a.ncols() {
            assert!((0..20).all(|i| a[(i, j)] >= 0.0));
            assert!((0..10).all(|i| a[(i, j)] >= 1.0 || a[(20 + i, j)] == 0.0));
        }
    }

    #[test]
    fn bad_inputs_are_errors_not_panics() {
        let (cfg, mut e, obs) = forecast_and_obs();
        let c = cfg.analysis_config(Method::Etkf, 1);
        let mut bad = obs.clone();
        bad.value[3] = f64::NAN;
        let err = analyse(&c, &mut e.clone(), &bad, &SingleProcess).unwrap_err();
        assert!(err.to_string().contains("observation 3"), "{err}");
        e[(4, 2)] = f64::INFINITY;
        let err = analyse(&c, &mut e, &obs, &SingleProcess).unwrap_err();
        assert_eq!(err.to_string(), "forecast state element 4 of member 2 is not finite");
        assert_eq!(err.exit_code(), twinflow_contract::exit_code::INVALID_INPUT);
    }
}
