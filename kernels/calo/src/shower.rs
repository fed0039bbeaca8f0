//! One event: a GFlash-style shower of energy spots, mapped to cells, then the detector
//! response (sampling fluctuations, constant term, gain, noise, dead cells).
//!
//! See the module docs of [`crate`] for the equations; this file implements them.

use rand::{RngExt as _, SeedableRng as _};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution as _, Gamma, StandardNormal};

use super::config::{CaloPlan, Energies, Particle, Spectrum};
use super::materials::{Medium, SamplingGeometry};

/// Mean free path of a photon before pair conversion, in X0 (PDG: 9/7 X0).
pub const PHOTON_CONVERSION_X0: f64 = 9.0 / 7.0;
/// Smallest accepted shape parameter α of an individual profile (β = (α − 1)/T > 0); the
/// correlated pair (T, α) is redrawn below it (probability < 0.5 % at the lowest accepted
/// energy, y = e⁴, and < 10⁻¹² above y = 1000).
pub const MIN_ALPHA: f64 = 1.1;

/// Grindhammer–Peters mean depth of the maximum of the *average* profile in a homogeneous
/// medium, in X0: ⟨T⟩ = ln y − 0.858 with y = E/Ec (Grindhammer & Peters, hep-ex/0001020).
pub fn gp_mean_depth_of_maximum(ln_y: f64) -> f64 {
    ln_y - 0.858
}

/// Grindhammer–Peters mean shape parameter of the average profile:
/// ⟨α⟩ = 0.21 + (0.492 + 2.38/Z) ln y.
pub fn gp_mean_alpha(ln_y: f64, z: f64) -> f64 {
    0.21 + (0.492 + 2.38 / z) * ln_y
}

/// Grindhammer–Peters mean profile (⟨T⟩, ⟨α⟩) of the *average* profile in `medium`, in X0:
/// the homogeneous values ([`gp_mean_depth_of_maximum`], [`gp_mean_alpha`]), and in a
/// sampling stack the mean-profile corrections of hep-ex/0001020 App. A.2.2,
/// T_sam = T_hom − 0.59/F_S − 0.53 (1 − ê) and α_sam = α_hom − 0.444/F_S.
pub fn gp_mean_profile(ln_y: f64, medium: &Medium) -> (f64, f64) {
    let (t, alpha) = (gp_mean_depth_of_maximum(ln_y), gp_mean_alpha(ln_y, medium.z));
    match medium.geometry {
        Some(g) => (t - 0.59 / g.frequency - 0.53 * (1.0 - g.e_hat), alpha - 0.444 / g.frequency),
        None => (t, alpha),
    }
}

/// The gamma profile of maximum `t_max` and shape `alpha` (β = (α − 1)/T), sampled at
/// `depths` (X0) and normalised to unit integral over [0, ∞): the fraction of the energy per
/// X0 at each depth. `depths` must be ascending, start at 0 and reach the tail
/// (the normalisation is the trapezoidal integral over them). Empty when α ≤ 1 or T ≤ 0.
pub fn gamma_profile(t_max: f64, alpha: f64, depths: &[f64]) -> Vec<f64> {
    if alpha <= 1.0 || t_max <= 0.0 || depths.len() < 2 {
        return Vec::new();
    }
    let beta = (alpha - 1.0) / t_max;
    // ln of t^(α−1) e^(−βt) relative to its maximum at T, so nothing overflows.
    let peak = (alpha - 1.0) * t_max.ln() - beta * t_max;
    let mut f: Vec<f64> =
        depths.iter().map(|&t| if t <= 0.0 { 0.0 } else { ((alpha - 1.0) * t.ln() - beta * t - peak).exp() }).collect();
    let area: f64 = depths.windows(2).zip(f.windows(2)).map(|(d, v)| 0.5 * (d[1] - d[0]) * (v[0] + v[1])).sum();
    if area > 0.0 {
        f.iter_mut().for_each(|v| *v /= area);
    }
    f
}

/// Distribution of the individual-profile parameters (T, α): correlated log-normals
/// (Grindhammer & Peters, hep-ex/0001020, App. A.1.2 for homogeneous media, A.2.3 for
/// sampling calorimeters).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Longitudinal {
    /// ⟨ln T⟩ = ln(ln y − 0.812).
    pub mean_ln_t: f64,
    /// σ(ln T) = 1/(−1.4 + 1.26 ln y).
    pub sigma_ln_t: f64,
    /// ⟨ln α⟩ = ln(0.81 + (0.458 + 2.26/Z) ln y).
    pub mean_ln_alpha: f64,
    /// σ(ln α) = 1/(−0.58 + 0.86 ln y).
    pub sigma_ln_alpha: f64,
    /// Correlation of ln T and ln α: ρ = 0.705 − 0.023 ln y.
    pub rho: f64,
}

impl Longitudinal {
    /// Parameters for `ln y = ln(E/Ec)` in a medium of (effective) atomic number `z`.
    pub fn new(ln_y: f64, z: f64) -> Self {
        Self {
            mean_ln_t: (ln_y - 0.812).ln(),
            sigma_ln_t: 1.0 / (-1.4 + 1.26 * ln_y),
            mean_ln_alpha: (0.81 + (0.458 + 2.26 / z) * ln_y).ln(),
            sigma_ln_alpha: 1.0 / (-0.58 + 0.86 * ln_y),
            rho: 0.705 - 0.023 * ln_y,
        }
    }

    /// The parameters in a sampling calorimeter of geometry `g` (hep-ex/0001020 App. A.2.3):
    /// ⟨ln T⟩ = ln(ln y − 0.812 − 0.55/F_S − 0.69 (1 − ê)), σ(ln T) = 1/(−2.5 + 1.25 ln y),
    /// ⟨ln α⟩ = ln(0.81 + (0.458 + 2.26/Z) ln y − 0.476/F_S), σ(ln α) = 1/(−0.82 + 0.79 ln y),
    /// ρ = 0.784 − 0.023 ln y, with y = E/Ec,eff and Z the effective Z of the stack. (CMS
    /// FastSim's transcription divides the 0.476 by Z instead of F_S; an independent one
    /// and the mean-profile shift −0.444/F_S of A.2.2 support F_S.) NaN where the layers are
    /// too coarse for the fit ([`crate::CaloConfig::validate`] rejects such stacks).
    pub fn sampling(ln_y: f64, z: f64, g: SamplingGeometry) -> Self {
        Self {
            mean_ln_t: (ln_y - 0.812 - 0.55 / g.frequency - 0.69 * (1.0 - g.e_hat)).ln(),
            sigma_ln_t: 1.0 / (-2.5 + 1.25 * ln_y),
            mean_ln_alpha: (0.81 + (0.458 + 2.26 / z) * ln_y - 0.476 / g.frequency).ln(),
            sigma_ln_alpha: 1.0 / (-0.82 + 0.79 * ln_y),
            rho: 0.784 - 0.023 * ln_y,
        }
    }

    /// The parameters in `medium`: [`Self::sampling`] for a sampling stack, else [`Self::new`].
    pub fn for_medium(ln_y: f64, medium: &Medium) -> Self {
        match medium.geometry {
            Some(g) => Self::sampling(ln_y, medium.z, g),
            None => Self::new(ln_y, medium.z),
        }
    }

    /// (T, α) from two independent standard normal deviates.
    pub fn from_normals(&self, z1: f64, z2: f64) -> (f64, f64) {
        let ln_t = self.mean_ln_t + self.sigma_ln_t * z1;
        let ln_alpha =
            self.mean_ln_alpha + self.sigma_ln_alpha * (self.rho * z1 + (1.0 - self.rho * self.rho).sqrt() * z2);
        (ln_t.exp(), ln_alpha.exp())
    }
}

/// Radial profile parameters at one energy (Grindhammer & Peters, hep-ex/0001020 App. A.1.3,
/// and the sampling corrections of A.2.4):
/// `f(r) = p · 2r R_C²/(r² + R_C²)² + (1 − p) · 2r R_T²/(r² + R_T²)²`, r in Molière radii.
///
/// k₄ = 0.3585 + 0.0421 ln E as in the paper (transcribed so by CMS FastSim's
/// `EMECALShowerParametrization`, which cites App. A, and by independent re-implementations);
/// Geant4's `GVFlashHomoShowerTuning` has 0.0412, two digits swapped. The difference moves
/// the containment in 1 R_M by −0.01 to −0.05 % between 10 and 100 GeV.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Radial {
    z1: f64,
    z2: f64,
    p1: f64,
    p2: f64,
    p3: f64,
    k1: f64,
    k2: f64,
    k3: f64,
    k4: f64,
    geometry: Option<SamplingGeometry>,
}

/// The radial profile at one depth: core and tail radii (Molière radii) and core weight.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RadialShape {
    /// Core radius R_C.
    pub core: f64,
    /// Tail radius R_T.
    pub tail: f64,
    /// Core weight p in [0, 1].
    pub core_weight: f64,
}

impl RadialShape {
    /// Fraction of the energy at this depth within `r` Molière radii (the CDF of f(r)).
    pub fn fraction_within(&self, r: f64) -> f64 {
        let r2 = r * r;
        self.core_weight * r2 / (r2 + self.core * self.core)
            + (1.0 - self.core_weight) * r2 / (r2 + self.tail * self.tail)
    }
}

impl Radial {
    /// Parameters for incident energy `e_gev` in a medium of atomic number `z`.
    pub fn new(e_gev: f64, z: f64) -> Self {
        let ln_e = e_gev.ln();
        Self {
            z1: 0.0251 + 0.00319 * ln_e,
            z2: 0.1162 - 0.000381 * z,
            p1: 2.632 - 0.00094 * z,
            p2: 0.401 + 0.00187 * z,
            p3: 1.313 - 0.0686 * ln_e,
            k1: 0.659 - 0.00309 * z,
            k2: 0.645,
            k3: -2.59,
            k4: 0.3585 + 0.0421 * ln_e,
            geometry: None,
        }
    }

    /// The parameters in `medium` (sampling corrections for a sampling stack).
    pub fn for_medium(e_gev: f64, medium: &Medium) -> Self {
        Self { geometry: medium.geometry, ..Self::new(e_gev, medium.z) }
    }

    /// The profile at reduced depth τ (depth over depth of maximum, see [`Simulator`]). In a
    /// sampling stack (App. A.2.4): R_C − 0.0203 (1 − ê) + 0.0397 e^(−τ)/F_S,
    /// R_T − 0.14 (1 − ê) − 0.495 e^(−τ)/F_S, p + (1 − ê)(0.348 − 0.642 e^(−(τ−1)²)/F_S);
    /// radii are kept ≥ 10⁻³ R_M and p in [0, 1].
    pub fn at(&self, tau: f64) -> RadialShape {
        let mut core = self.z1 + self.z2 * tau;
        let mut tail = self.k1 * ((self.k3 * (tau - self.k2)).exp() + (self.k4 * (tau - self.k2)).exp());
        let x = (self.p2 - tau) / self.p3;
        let mut core_weight = self.p1 * (x - x.exp()).exp();
        if let Some(g) = self.geometry {
            let (dark, fs) = (1.0 - g.e_hat, g.frequency);
            core += -0.0203 * dark + 0.0397 / fs * (-tau).exp();
            tail += -0.14 * dark - 0.495 / fs * (-tau).exp();
            core_weight += dark * (0.348 - 0.642 / fs * (-(tau - 1.0) * (tau - 1.0)).exp());
        }
        RadialShape { core: core.max(1e-3), tail: tail.max(1e-3), core_weight: core_weight.clamp(0.0, 1.0) }
    }
}

/// The incident particle of an event.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Primary {
    /// Particle.
    pub particle: Particle,
    /// Incident energy, GeV.
    pub energy_gev: f64,
    /// Impact point on the front face, mm.
    pub x_mm: f64,
    /// Impact point on the front face, mm.
    pub y_mm: f64,
}

/// Per-event shower parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ShowerParams {
    /// Depth of the maximum of this shower's profile, X0 (from its start).
    pub t_max: f64,
    /// Shape parameter α of this shower's profile.
    pub alpha: f64,
    /// Depth at which the shower starts (photon conversion; 0 for e±), X0.
    pub start_x0: f64,
    /// Number of spots.
    pub spots: u64,
    /// Energy of one spot, GeV.
    pub spot_energy_gev: f64,
}

/// One energy spot, relative to the impact point.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spot {
    /// Depth below the front face, mm.
    pub depth_mm: f64,
    /// Transverse offset from the impact point along x, mm.
    pub dx_mm: f64,
    /// Transverse offset from the impact point along y, mm.
    pub dy_mm: f64,
}

/// Truth and conditions of one simulated event.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EventTruth {
    /// Event id (random stream).
    pub event_id: u64,
    /// The incident particle.
    pub primary: Primary,
    /// Energy deposited in the cells (absorber + active), GeV.
    pub deposited_gev: f64,
    /// Energy leaking out of the back or the sides, GeV.
    pub leakage_gev: f64,
    /// Visible energy after sampling fluctuations and the constant term, before gain,
    /// noise and dead cells, GeV.
    pub visible_gev: f64,
    /// Temperature during the event, K.
    pub temperature_k: f64,
    /// Gain during the event.
    pub gain: f64,
}

/// Reusable per-thread buffers of [`Simulator::event`].
#[derive(Debug, Default, Clone)]
pub struct Scratch {
    counts: Vec<u32>,
    visible: Vec<f64>,
}

/// Simulates events of a [`CaloPlan`]; each event is a pure function of (seed, event id).
#[derive(Debug, Clone)]
pub struct Simulator<'p> {
    plan: &'p CaloPlan,
    half_width_mm: f64,
    depth_mm: f64,
}

/// The random generator of one event: ChaCha8 keyed by the seed, stream = event id
/// (counter-based, so events are independent of the order and place they are simulated in).
pub fn event_rng(seed: u64, event_id: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(event_id);
    rng
}

fn normal(rng: &mut ChaCha8Rng) -> f64 {
    StandardNormal.sample(rng)
}

impl<'p> Simulator<'p> {
    /// A simulator of `plan`.
    pub fn new(plan: &'p CaloPlan) -> Self {
        Self {
            plan,
            half_width_mm: 0.5 * plan.cells as f64 * plan.cell_size_mm,
            depth_mm: plan.layers as f64 * plan.medium.layer_mm,
        }
    }

    /// The plan simulated.
    pub fn plan(&self) -> &CaloPlan {
        self.plan
    }

    /// Draws the primary: particle, energy, impact point (in this order on the stream).
    fn primary(&self, rng: &mut ChaCha8Rng) -> Primary {
        let p = self.plan;
        let particle =
            if p.particles.len() == 1 { p.particles[0] } else { p.particles[rng.random_range(0..p.particles.len())] };
        let energy_gev = match p.energies {
            Energies::Fixed(e) => e,
            Energies::Range { low, high, spectrum: Spectrum::Uniform } => low + (high - low) * rng.random::<f64>(),
            Energies::Range { low, high, spectrum: Spectrum::LogUniform } => {
                low * (high / low).powf(rng.random::<f64>())
            }
        };
        let (mut x_mm, mut y_mm) = (p.position_mm[0], p.position_mm[1]);
        if p.spread_mm > 0.0 {
            x_mm += p.spread_mm * normal(rng);
            y_mm += p.spread_mm * normal(rng);
        }
        Primary { particle, energy_gev, x_mm, y_mm }
    }

    /// Draws the shower parameters and calls `on_spot` for each spot.
    fn shower(&self, rng: &mut ChaCha8Rng, primary: &Primary, mut on_spot: impl FnMut(Spot)) -> ShowerParams {
        let m = &self.plan.medium;
        let start_x0 = match primary.particle {
            Particle::Photon => -PHOTON_CONVERSION_X0 * (1.0 - rng.random::<f64>()).ln(),
            Particle::Electron | Particle::Positron => 0.0,
        };
        let ln_y = (primary.energy_gev * 1000.0 / m.critical_energy_mev).ln();
        let long = Longitudinal::for_medium(ln_y, m);
        let (mut t_max, mut alpha) = (0.0, 0.0);
        for _ in 0..1000 {
            let (z1, z2) = (normal(rng), normal(rng));
            (t_max, alpha) = long.from_normals(z1, z2);
            if alpha >= MIN_ALPHA {
                break;
            }
        }
        alpha = alpha.max(MIN_ALPHA);
        let beta = (alpha - 1.0) / t_max;
        let spots = (primary.energy_gev / self.plan.spot_energy_gev).ceil().max(1.0) as u64;
        let spot_energy_gev = primary.energy_gev / spots as f64;
        let params = ShowerParams { t_max, alpha, start_x0, spots, spot_energy_gev };
        let Ok(depth) = Gamma::new(alpha, 1.0 / beta) else {
            // α ≥ MIN_ALPHA and T > 0 make this unreachable; leak the shower rather than panic.
            for _ in 0..spots {
                on_spot(Spot { depth_mm: f64::INFINITY, dx_mm: 0.0, dy_mm: 0.0 });
            }
            return params;
        };
        let radial = Radial::for_medium(primary.energy_gev, m);
        // The reduced depth of an individual profile, τ = t/⟨t⟩ᵢ · ⟨α⟩/(⟨α⟩ − 1) with
        // ⟨t⟩ᵢ = α/β and ⟨α⟩ = exp⟨ln α⟩ (hep-ex/0001020 eq. 34; GFlash's `ComputeTau`),
        // i.e. τ = (t/T) · (α − 1)/α · ⟨α⟩/(⟨α⟩ − 1).
        let mean_alpha = long.mean_ln_alpha.exp();
        let tau_scale = (alpha - 1.0) / alpha * mean_alpha / (mean_alpha - 1.0) / t_max;
        let rm = m.moliere_radius_mm * self.plan.lateral_scale;
        for _ in 0..spots {
            let t: f64 = depth.sample(rng);
            let shape = radial.at(t * tau_scale);
            let radius = if rng.random::<f64>() < shape.core_weight { shape.core } else { shape.tail };
            let u: f64 = rng.random();
            let r = rm * radius * (u / (1.0 - u)).sqrt();
            let (sin, cos) = (std::f64::consts::TAU * rng.random::<f64>()).sin_cos();
            on_spot(Spot { depth_mm: (start_x0 + t) * m.x0_mm, dx_mm: r * cos, dy_mm: r * sin });
        }
        params
    }

    /// The primary, shower parameters and spots of event `event_id` (the same draws as
    /// [`Simulator::event`] makes before the detector response).
    pub fn spots(&self, event_id: u64) -> (Primary, ShowerParams, Vec<Spot>) {
        let mut rng = event_rng(self.plan.seed, event_id);
        let primary = self.primary(&mut rng);
        let mut spots = Vec::new();
        let params = self.shower(&mut rng, &primary, |s| spots.push(s));
        (primary, params, spots)
    }

    /// The flat cell index of a point, `None` outside the calorimeter.
    pub fn cell_of(&self, depth_mm: f64, x_mm: f64, y_mm: f64) -> Option<usize> {
        let p = self.plan;
        if !(depth_mm >= 0.0 && depth_mm < self.depth_mm) {
            return None;
        }
        let n = p.cells as f64;
        let u = (x_mm + self.half_width_mm) / p.cell_size_mm;
        let v = (y_mm + self.half_width_mm) / p.cell_size_mm;
        if !(u >= 0.0 && u < n && v >= 0.0 && v < n) {
            return None;
        }
        let layer = ((depth_mm / p.medium.layer_mm) as usize).min(p.layers - 1);
        let (ix, iy) = ((u as usize).min(p.cells - 1), (v as usize).min(p.cells - 1));
        Some((layer * p.cells + iy) * p.cells + ix)
    }

    /// Simulates event `event_id` into `cells` (`[layer, y, x]`, visible GeV after gain,
    /// noise and dead cells).
    ///
    /// # Panics
    /// If `cells` does not hold [`CaloPlan::cells_per_event`] values (a caller bug).
    pub fn event(&self, event_id: u64, scratch: &mut Scratch, cells: &mut [f32]) -> EventTruth {
        let p = self.plan;
        let n_cells = p.cells_per_event();
        assert_eq!(cells.len(), n_cells, "cell buffer of the wrong size");
        scratch.counts.clear();
        scratch.counts.resize(n_cells, 0);
        scratch.visible.clear();
        scratch.visible.resize(n_cells, 0.0);

        let mut rng = event_rng(p.seed, event_id);
        let primary = self.primary(&mut rng);
        let (mut inside, mut outside) = (0_u64, 0_u64);
        let counts = &mut scratch.counts;
        let shower = self.shower(&mut rng, &primary, |s| {
            match self.cell_of(s.depth_mm, primary.x_mm + s.dx_mm, primary.y_mm + s.dy_mm) {
                Some(c) => {
                    counts[c] += 1;
                    inside += 1;
                }
                None => outside += 1,
            }
        });
        let e = shower.spot_energy_gev;

        // Sampling fluctuations: a cell holding n spots sees e · Gamma(n k, 1/k), k = e/a²
        // (the sum of n per-spot Gamma(k, 1/k) weights); see the module docs.
        let sf = p.medium.sampling_fraction;
        let k = if p.stochastic > 0.0 { e / (p.stochastic * p.stochastic) } else { f64::INFINITY };
        let mut visible_sum = 0.0;
        for (v, &n) in scratch.visible.iter_mut().zip(counts.iter()) {
            if n == 0 {
                continue;
            }
            let deposited = f64::from(n) * e;
            let weight_sum = if k.is_finite() {
                match Gamma::new(f64::from(n) * k, 1.0 / k) {
                    Ok(g) => g.sample(&mut rng),
                    Err(_) => f64::from(n),
                }
            } else {
                f64::from(n)
            };
            *v = sf * e * weight_sum;
            debug_assert!(deposited > 0.0);
            visible_sum += *v;
        }
        // Constant term: one calibration factor per event, c ~ Normal(1, b), floored at 0.
        let calibration = if p.constant > 0.0 { (1.0 + p.constant * normal(&mut rng)).max(0.0) } else { 1.0 };
        let temperature_k = p.conditions.temperature(event_id);
        let gain = p.conditions.gain(event_id);
        let scale = gain * calibration;
        // Noise is drawn for every cell (dead ones too), so the map does not shift the stream.
        for ((cell, &v), &dead) in cells.iter_mut().zip(&scratch.visible).zip(&p.conditions.dead) {
            let noise = if p.noise_gev > 0.0 { p.noise_gev * normal(&mut rng) } else { 0.0 };
            *cell = if dead == 1 { 0.0 } else { (scale * v + noise) as f32 };
        }
        EventTruth {
            event_id,
            primary,
            deposited_gev: inside as f64 * e,
            leakage_gev: outside as f64 * e,
            visible_gev: calibration * visible_sum,
            temperature_k,
            gain,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::CaloConfig;

    /// Asserts `got` equals the hand-computed `want` to 1e-4 (absolute).
    fn close(what: &str, got: f64, want: f64) {
        assert!((got - want).abs() < 1e-4, "{what}: got {got}, computed by hand {want}");
    }

    /// 10 GeV electrons in lead, every value computed by hand (a calculator, not this code)
    /// from the formulas of Grindhammer & Peters, hep-ex/0001020 App. A.1, as listed in
    /// shared/science-references.md: Ec = 610/(82 + 1.24) = 7.328208 MeV, y = 1364.590,
    /// ln y = 7.218609.
    #[test]
    fn grindhammer_peters_parameters_at_10_gev_in_lead() {
        let pb = Medium::homogeneous(&super::super::materials::builtin("pb").unwrap(), 1.0);
        close("Ec", pb.critical_energy_mev, 7.328208);
        let ln_y = (10_000.0 / pb.critical_energy_mev).ln();
        close("ln y", ln_y, 7.218609);
        let l = Longitudinal::for_medium(ln_y, &pb);
        close("σ(ln T) = 1/(−1.4 + 1.26 ln y)", l.sigma_ln_t, 0.129947);
        close("σ(ln α) = 1/(−0.58 + 0.86 ln y)", l.sigma_ln_alpha, 0.177683);
        close("ρ = 0.705 − 0.023 ln y", l.rho, 0.538972);
        close("median T = ln y − 0.812", l.mean_ln_t.exp(), 6.406609);
        close("median α = 0.81 + (0.458 + 2.26/Z) ln y", l.mean_ln_alpha.exp(), 4.315075);
        close("mean-profile T = ln y − 0.858", gp_mean_depth_of_maximum(ln_y), 6.360609);
        close("mean-profile α = 0.21 + (0.492 + 2.38/Z) ln y", gp_mean_alpha(ln_y, 82.0), 3.971072);
        // One standard deviation up in the first deviate: T × e^σT, α × e^(ρ σα).
        let (t, a) = l.from_normals(1.0, 0.0);
        close("T(1, 0)", t, 7.295642);
        close("α(1, 0)", a, 4.748747);
        // Radial profile at τ = 1 (App. A.1.3): R_C = z₁ + z₂, R_T = k₁(e^(k₃(1−k₂)) + e^(k₄(1−k₂))),
        // p = p₁ exp((p₂ − 1)/p₃ − e^((p₂−1)/p₃)), and the fraction within 1 R_M.
        let shape = Radial::for_medium(10.0, &pb).at(1.0);
        close("R_C(τ = 1)", shape.core, 0.117403);
        close("R_T(τ = 1)", shape.tail, 0.638536);
        close("p(τ = 1)", shape.core_weight, 0.880119);
        close("fraction within 1 R_M at τ = 1", shape.fraction_within(1.0), 0.953312);
        assert!((shape.fraction_within(1e9) - 1.0).abs() < 1e-9);
    }

    /// A sampling stack (App. A.2.3, A.2.4), by hand for ln y = 7, Z = 69.37, F_S = 2.6,
    /// ê = 0.69, and for the radial profile at 30 GeV and τ = 0.5.
    #[test]
    fn grindhammer_peters_sampling_corrections() {
        let g = SamplingGeometry { frequency: 2.6, e_hat: 0.69 };
        let l = Longitudinal::sampling(7.0, 69.37, g);
        close("median T = ln y − 0.812 − 0.55/F_S − 0.69 (1 − ê)", l.mean_ln_t.exp(), 5.762562);
        close("median α = 0.81 + (0.458 + 2.26/Z) ln y − 0.476/F_S", l.mean_ln_alpha.exp(), 4.060976);
        close("σ(ln T) = 1/(−2.5 + 1.25 ln y)", l.sigma_ln_t, 0.16);
        close("σ(ln α) = 1/(−0.82 + 0.79 ln y)", l.sigma_ln_alpha, 0.212314);
        close("ρ = 0.784 − 0.023 ln y", l.rho, 0.623);
        let homogeneous = Radial::new(30.0, 69.37).at(0.5);
        close("R_C hom", homogeneous.core, 0.080835);
        close("R_T hom", homogeneous.tail, 1.060762);
        close("p hom", homogeneous.core_weight, 0.943884);
        let sampling = Radial { geometry: Some(g), ..Radial::new(30.0, 69.37) }.at(0.5);
        close("R_C − 0.0203 (1 − ê) + 0.0397 e^−τ/F_S", sampling.core, 0.083803);
        close("R_T − 0.14 (1 − ê) − 0.495 e^−τ/F_S", sampling.tail, 0.901888);
        close("p + (1 − ê)(0.348 − 0.642 e^−(τ−1)²/F_S)", sampling.core_weight, 0.992150);
    }

    #[test]
    fn events_are_pure_functions_of_seed_and_id() {
        let plan = CaloConfig { events: 4, ..CaloConfig::default() }.validate().unwrap();
        let sim = Simulator::new(&plan);
        let mut s = Scratch::default();
        let mut a = vec![0.0; plan.cells_per_event()];
        let mut b = a.clone();
        let ta = sim.event(3, &mut s, &mut a);
        sim.event(2, &mut s, &mut b);
        let tb = sim.event(3, &mut s, &mut b);
        assert_eq!(ta, tb);
        assert!(a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()));
        let rel = (ta.deposited_gev + ta.leakage_gev) / ta.primary.energy_gev - 1.0;
        assert!(rel.abs() < 1e-12, "{rel}");
    }

    /// The gamma profile peaks at T, has unit area and mean α/β = αT/(α − 1) (a gamma
    /// distribution's mean), here for T = 6.36 X0, α = 3.97 (10 GeV in lead).
    #[test]
    fn gamma_profile_is_a_normalised_gamma_density() {
        let depths: Vec<f64> = (0..=6000).map(|k| k as f64 * 0.01).collect();
        let (t, alpha) = (6.360609, 3.971072);
        let f = gamma_profile(t, alpha, &depths);
        let argmax = (0..f.len()).max_by(|&a, &b| f[a].total_cmp(&f[b])).unwrap();
        assert!((depths[argmax] - t).abs() <= 0.01, "peak at {}", depths[argmax]);
        let area: f64 = f.iter().sum::<f64>() * 0.01;
        assert!((area - 1.0).abs() < 1e-3, "area {area}");
        let mean: f64 = f.iter().zip(&depths).map(|(v, d)| v * d).sum::<f64>() * 0.01;
        let want = alpha * t / (alpha - 1.0);
        assert!((mean / want - 1.0).abs() < 1e-3, "mean {mean} vs {want}");
        assert!(gamma_profile(t, 1.0, &depths).is_empty() && gamma_profile(0.0, 2.0, &depths).is_empty());
    }

    /// GP's mean profile: the homogeneous values unchanged in lead; in a sampling stack the
    /// A.2.2 shifts, computed by hand: F_S = 2.5, ê = 0.8 → T − 0.236 − 0.106, α − 0.1776.
    #[test]
    fn mean_profile_has_the_sampling_corrections() {
        let pb = Medium::homogeneous(&super::super::materials::builtin("pb").unwrap(), 1.0);
        let ln_y = 7.218609;
        close("T hom", gp_mean_profile(ln_y, &pb).0, ln_y - 0.858);
        close("α hom", gp_mean_profile(ln_y, &pb).1, 3.971072);
        let stack = Medium { geometry: Some(SamplingGeometry { frequency: 2.5, e_hat: 0.8 }), ..pb };
        close("T sam", gp_mean_profile(ln_y, &stack).0, ln_y - 0.858 - 0.236 - 0.106);
        close("α sam", gp_mean_profile(ln_y, &stack).1, 3.971072 - 0.1776);
    }

    #[test]
    fn cells_are_mapped_row_major_and_outside_points_leak() {
        let plan = CaloConfig::default().validate().unwrap();
        let sim = Simulator::new(&plan);
        let n = plan.cells;
        assert_eq!(sim.cell_of(0.0, 0.0, 0.0), Some(n / 2 * n + n / 2));
        assert_eq!(sim.cell_of(plan.medium.layer_mm * 1.5, 0.0, 0.0), Some((n + n / 2) * n + n / 2));
        let half = 0.5 * n as f64 * plan.cell_size_mm;
        assert_eq!(sim.cell_of(0.0, -half, -half), Some(0));
        assert_eq!(sim.cell_of(0.0, half, 0.0), None);
        assert_eq!(sim.cell_of(-1.0, 0.0, 0.0), None);
        assert_eq!(sim.cell_of(plan.layers as f64 * plan.medium.layer_mm, 0.0, 0.0), None);
        assert_eq!(sim.cell_of(f64::INFINITY, 0.0, 0.0), None);
    }
}
