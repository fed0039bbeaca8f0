//! Configuration of a calorimeter run: the raw JSON shape and its validation.
//!
//! [`CaloConfig`] is what users write (`calo.json`, every field optional, unknown fields
//! rejected); it is never run directly: [`CaloConfig::validate`] checks every field,
//! collecting all problems, and yields a [`CaloPlan`].

use std::path::Path;

use super::conditions::{Conditions, TemperatureCurve};
use super::materials::{self, Material, Medium};
use super::shower::{Longitudinal, MIN_ALPHA};

/// Largest number of events of one run.
pub const MAX_EVENTS: u64 = 100_000_000;
/// Largest number of cells per event (layers × cells × cells).
pub const MAX_CELLS_PER_EVENT: usize = 1 << 20;
/// Largest number of energy spots per shower.
pub const MAX_SPOTS_PER_SHOWER: f64 = 1e7;
/// Highest incident energy, GeV.
pub const MAX_ENERGY_GEV: f64 = 10_000.0;
/// Smallest `ln(E/Ec)` accepted: below it the Grindhammer–Peters fluctuation widths
/// `1/(−1.4 + 1.26 ln y)` and `1/(−0.58 + 0.86 ln y)` blow up and α ≤ 1 becomes common.
pub const MIN_LN_Y: f64 = 4.0;

/// Incident particle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Particle {
    /// Electron (PDG code 11).
    #[serde(rename = "e-")]
    Electron,
    /// Positron (PDG code −11); showers like an electron.
    #[serde(rename = "e+")]
    Positron,
    /// Photon (PDG code 22): converts after an exponential depth of mean 9/7 X0.
    #[serde(rename = "gamma")]
    Photon,
}

impl Particle {
    /// PDG Monte Carlo particle code.
    pub fn pdg_code(self) -> i32 {
        match self {
            Self::Electron => 11,
            Self::Positron => -11,
            Self::Photon => 22,
        }
    }
}

/// How incident energies are drawn from `energy_range_gev`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Spectrum {
    /// Flat in E.
    #[default]
    Uniform,
    /// Flat in ln E.
    LogUniform,
}

/// The beam: particles, energies, impact point.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BeamConfig {
    /// Particles, one drawn uniformly per event.
    pub particles: Vec<Particle>,
    /// Fixed incident energy, GeV (ignored when `energy_range_gev` is set).
    pub energy_gev: f64,
    /// `[low, high]` incident energies, GeV, drawn per event from `spectrum`.
    pub energy_range_gev: Option<[f64; 2]>,
    /// Energy spectrum over `energy_range_gev`.
    pub spectrum: Spectrum,
    /// Mean impact point `[x, y]` on the front face, mm (0, 0 is the centre of the face).
    pub position_mm: [f64; 2],
    /// Gaussian beam spread (σ per axis) of the impact point, mm.
    pub spread_mm: f64,
}

impl Default for BeamConfig {
    fn default() -> Self {
        Self {
            particles: vec![Particle::Electron],
            energy_gev: 50.0,
            energy_range_gev: None,
            spectrum: Spectrum::Uniform,
            position_mm: [0.0, 0.0],
            spread_mm: 0.0,
        }
    }
}

/// The stack and its cell grid.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CalorimeterConfig {
    /// Absorber material (built-in name or one of `materials`).
    pub absorber: String,
    /// Absorber thickness per layer, mm.
    pub absorber_mm: f64,
    /// Active material.
    pub active: String,
    /// Active thickness per layer, mm.
    pub active_mm: f64,
    /// Homogeneous calorimeter: every layer is `absorber_mm` of the absorber, fully active
    /// (sampling fraction 1); `active` and `active_mm` are ignored.
    pub homogeneous: bool,
    /// Layers in depth (one cell per layer in depth).
    pub layers: usize,
    /// Cells per side of the square transverse grid.
    pub cells: usize,
    /// Transverse cell size, mm.
    pub cell_size_mm: f64,
    /// Sampling fraction to use instead of the computed one.
    pub sampling_fraction: Option<f64>,
}

impl Default for CalorimeterConfig {
    fn default() -> Self {
        Self {
            absorber: "pb".into(),
            absorber_mm: 2.0,
            active: "lar".into(),
            active_mm: 4.0,
            homogeneous: false,
            layers: 60,
            cells: 11,
            cell_size_mm: 25.0,
            sampling_fraction: None,
        }
    }
}

/// Detector response.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ResponseConfig {
    /// Stochastic term a of σ/E = a/√E ⊕ b, √GeV.
    pub stochastic: f64,
    /// Constant term b.
    pub constant: f64,
    /// Gaussian electronic noise per cell (σ), MeV of visible energy.
    pub noise_mev: f64,
    /// Energy of one shower spot, MeV (spots per shower = ⌈E / spot energy⌉).
    pub spot_energy_mev: f64,
    /// Scale of the radial profile in units of the Molière radius (1 = Grindhammer–Peters).
    pub lateral_scale: f64,
}

impl Default for ResponseConfig {
    fn default() -> Self {
        Self { stochastic: 0.10, constant: 0.007, noise_mev: 0.0, spot_energy_mev: 20.0, lateral_scale: 1.0 }
    }
}

/// Time-varying detector conditions.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConditionsConfig {
    /// Temperature at which the gain is 1, K.
    pub reference_temperature_k: f64,
    /// Relative gain change per kelvin: gain = 1 + k (T − T_ref).
    pub gain_per_kelvin: f64,
    /// Temperature curve `[event id, K]`, linear in between, constant outside; empty means
    /// the reference temperature throughout.
    pub temperature: Vec<[f64; 2]>,
    /// Fraction of cells that are dead, chosen reproducibly from `detector_seed`.
    pub dead_fraction: f64,
    /// Dead cells `[layer, y, x]` in addition to the random ones.
    pub dead_cells: Vec<[usize; 3]>,
    /// Seed of the dead-cell map (the detector), separate from the events' seed so that
    /// runs of one detector (calibration, physics) share it; `None`: the run's seed.
    pub detector_seed: Option<u64>,
}

impl Default for ConditionsConfig {
    fn default() -> Self {
        Self {
            reference_temperature_k: 293.15,
            gain_per_kelvin: -0.02,
            temperature: Vec::new(),
            dead_fraction: 0.0,
            dead_cells: Vec::new(),
            detector_seed: None,
        }
    }
}

/// Output layout options.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutputConfig {
    /// Events per HDF5 chunk of `/cells` (reduced so that a chunk stays ≤ 8 MiB).
    pub chunk_events: usize,
    /// Deflate level 0 (off) to 9; shuffle is on whenever deflate is. Level 1 stores the
    /// mostly-empty f32 cells almost as small as level 4 (≈ 14 % vs 12 % of the raw size
    /// for the default stack at 50 GeV) at about half the CPU time.
    pub deflate: u8,
}

impl Default for OutputConfig {
    fn default() -> Self {
        Self { chunk_events: 128, deflate: 1 }
    }
}

/// A calorimeter run as written in `calo.json` (all fields optional).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CaloConfig {
    /// Number of events.
    pub events: u64,
    /// Seed of the counter-based random generator (stream = event id).
    pub seed: u64,
    /// Beam.
    pub beam: BeamConfig,
    /// Stack and cells.
    pub calorimeter: CalorimeterConfig,
    /// Additional materials, referred to by name.
    pub materials: Vec<Material>,
    /// Detector response.
    pub response: ResponseConfig,
    /// Detector conditions.
    pub conditions: ConditionsConfig,
    /// Output layout.
    pub output: OutputConfig,
}

impl Default for CaloConfig {
    fn default() -> Self {
        Self {
            events: 1000,
            seed: 1,
            beam: BeamConfig::default(),
            calorimeter: CalorimeterConfig::default(),
            materials: Vec::new(),
            response: ResponseConfig::default(),
            conditions: ConditionsConfig::default(),
            output: OutputConfig::default(),
        }
    }
}

/// A configuration problem, with the JSON path of the offending field.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("`{field}`: {message}")]
pub struct ConfigIssue {
    /// Field path, e.g. `calorimeter.absorber_mm`.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

/// Incident energies of a run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Energies {
    /// Every event at this energy, GeV.
    Fixed(f64),
    /// Drawn per event between `low` and `high` GeV.
    Range {
        /// Lowest energy, GeV.
        low: f64,
        /// Highest energy, GeV.
        high: f64,
        /// Spectrum.
        spectrum: Spectrum,
    },
}

impl Energies {
    /// Lowest and highest energy, GeV.
    pub fn bounds(&self) -> (f64, f64) {
        match *self {
            Self::Fixed(e) => (e, e),
            Self::Range { low, high, .. } => (low, high),
        }
    }
}

/// A validated run: what the simulation and the writer use.
#[derive(Debug, Clone, PartialEq)]
pub struct CaloPlan {
    /// Number of events.
    pub events: u64,
    /// Seed.
    pub seed: u64,
    /// Particles, one drawn uniformly per event.
    pub particles: Vec<Particle>,
    /// Incident energies.
    pub energies: Energies,
    /// Mean impact point, mm.
    pub position_mm: [f64; 2],
    /// Gaussian spread of the impact point, mm.
    pub spread_mm: f64,
    /// Effective medium of the stack.
    pub medium: Medium,
    /// Layers in depth.
    pub layers: usize,
    /// Cells per transverse side.
    pub cells: usize,
    /// Transverse cell size, mm.
    pub cell_size_mm: f64,
    /// Stochastic term, √GeV.
    pub stochastic: f64,
    /// Constant term.
    pub constant: f64,
    /// Noise per cell, GeV.
    pub noise_gev: f64,
    /// Spot energy, GeV.
    pub spot_energy_gev: f64,
    /// Radial scale in Molière radii.
    pub lateral_scale: f64,
    /// Temperature, gain and dead cells.
    pub conditions: Conditions,
    /// Events per chunk of `/cells`.
    pub chunk_events: usize,
    /// Deflate level (0: off).
    pub deflate: u8,
    /// The configuration this plan was validated from (written to the output).
    pub config: CaloConfig,
}

impl CaloPlan {
    /// Cells per event.
    pub fn cells_per_event(&self) -> usize {
        self.layers * self.cells * self.cells
    }
}

impl CaloConfig {
    /// Reads a JSON configuration file.
    pub fn from_file(path: &Path) -> Result<Self, super::CaloError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| super::CaloError::ConfigRead { path: path.to_path_buf(), source })?;
        serde_json::from_str(&text).map_err(|source| super::CaloError::ConfigParse { path: path.to_path_buf(), source })
    }

    /// The material called `name`: a user-defined one first, then a built-in one.
    pub fn material(&self, name: &str) -> Option<Material> {
        self.materials.iter().find(|m| m.name.eq_ignore_ascii_case(name)).cloned().or_else(|| materials::builtin(name))
    }

    /// Checks every field; reports every problem at once.
    pub fn validate(&self) -> Result<CaloPlan, Vec<ConfigIssue>> {
        let mut issues = Vec::new();
        let mut bad = |field: &str, message: String| issues.push(ConfigIssue { field: field.into(), message });
        let positive = |v: f64| v.is_finite() && v > 0.0;
        let in_range = |v: f64, lo: f64, hi: f64| v.is_finite() && v >= lo && v <= hi;

        if !(1..=MAX_EVENTS).contains(&self.events) {
            bad("events", format!("must be in [1, {MAX_EVENTS}], got {}", self.events));
        }

        // Materials.
        for (k, m) in self.materials.iter().enumerate() {
            if let Err(e) = m.check() {
                bad(&format!("materials[{k}]"), format!("`{}`: {e}", m.name));
            }
            if materials::builtin(&m.name).is_some() {
                bad(
                    &format!("materials[{k}]"),
                    format!("`{}` is a built-in material; hint: pick another name", m.name),
                );
            }
            if self.materials[..k].iter().any(|o| o.name.eq_ignore_ascii_case(&m.name)) {
                bad(&format!("materials[{k}]"), format!("`{}` is defined twice", m.name));
            }
        }
        let known = || {
            let mut names: Vec<String> = materials::builtin_names().into_iter().map(String::from).collect();
            names.extend(self.materials.iter().map(|m| m.name.clone()));
            names.join(", ")
        };
        let c = &self.calorimeter;
        let lookup = |field: &str, name: &str, issues: &mut Vec<ConfigIssue>| match self.material(name) {
            Some(m) => Some(m),
            None => {
                issues.push(ConfigIssue {
                    field: field.into(),
                    message: format!("unknown material `{name}`; hint: one of {}", known()),
                });
                None
            }
        };
        let absorber = lookup("calorimeter.absorber", &c.absorber, &mut issues);
        let active = if c.homogeneous { None } else { lookup("calorimeter.active", &c.active, &mut issues) };
        let mut bad = |field: &str, message: String| issues.push(ConfigIssue { field: field.into(), message });
        if !in_range(c.absorber_mm, 1e-3, 1e4) {
            bad("calorimeter.absorber_mm", format!("must be > 0 mm (at most 10 m), got {}", c.absorber_mm));
        }
        if !c.homogeneous && !in_range(c.active_mm, 1e-3, 1e4) {
            bad("calorimeter.active_mm", format!("must be > 0 mm (at most 10 m), got {}", c.active_mm));
        }
        if !(1..=10_000).contains(&c.layers) {
            bad("calorimeter.layers", format!("must be in [1, 10000], got {}", c.layers));
        }
        if !(1..=1001).contains(&c.cells) {
            bad("calorimeter.cells", format!("must be in [1, 1001], got {}", c.cells));
        }
        let cells_per_event = c.layers.saturating_mul(c.cells.saturating_mul(c.cells));
        if cells_per_event > MAX_CELLS_PER_EVENT {
            bad(
                "calorimeter.cells",
                format!(
                    "{} layers × {}² cells = {cells_per_event} cells per event exceeds {MAX_CELLS_PER_EVENT}",
                    c.layers, c.cells
                ),
            );
        }
        if !in_range(c.cell_size_mm, 1e-3, 1e5) {
            bad("calorimeter.cell_size_mm", format!("must be > 0 mm (at most 100 m), got {}", c.cell_size_mm));
        }
        if let Some(f) = c.sampling_fraction.filter(|&f| !(f.is_finite() && f > 0.0 && f <= 1.0)) {
            bad("calorimeter.sampling_fraction", format!("must be in (0, 1], got {f}"));
        }

        // Response.
        let r = &self.response;
        if !in_range(r.stochastic, 0.0, 1.0) {
            bad("response.stochastic", format!("must be in [0, 1] √GeV, got {}", r.stochastic));
        }
        if !in_range(r.constant, 0.0, 0.2) {
            bad("response.constant", format!("must be in [0, 0.2], got {}", r.constant));
        }
        if !in_range(r.noise_mev, 0.0, 1e4) {
            bad("response.noise_mev", format!("must be in [0, 10000] MeV, got {}", r.noise_mev));
        }
        if !in_range(r.spot_energy_mev, 0.1, 1e5) {
            bad("response.spot_energy_mev", format!("must be in [0.1, 100000] MeV, got {}", r.spot_energy_mev));
        }
        if !in_range(r.lateral_scale, 0.01, 10.0) {
            bad("response.lateral_scale", format!("must be in [0.01, 10], got {}", r.lateral_scale));
        }

        // Beam (energy checks need the medium, below).
        let b = &self.beam;
        if b.particles.is_empty() {
            bad("beam.particles", "must name at least one particle".into());
        }
        let energies = match b.energy_range_gev {
            Some([low, high]) => {
                if !(positive(low) && positive(high) && low < high) {
                    bad(
                        "beam.energy_range_gev",
                        format!("must be [low, high] with 0 < low < high GeV, got [{low}, {high}]"),
                    );
                }
                Energies::Range { low, high, spectrum: b.spectrum }
            }
            None => {
                if !positive(b.energy_gev) {
                    bad("beam.energy_gev", format!("must be > 0 GeV, got {}", b.energy_gev));
                }
                Energies::Fixed(b.energy_gev)
            }
        };
        let energy_field = if b.energy_range_gev.is_some() { "beam.energy_range_gev" } else { "beam.energy_gev" };
        if !b.position_mm.iter().all(|v| v.is_finite()) {
            bad("beam.position_mm", format!("must be finite, got {:?}", b.position_mm));
        }
        if !in_range(b.spread_mm, 0.0, 1e5) {
            bad("beam.spread_mm", format!("must be in [0, 100000] mm, got {}", b.spread_mm));
        }

        // Conditions.
        let cond = &self.conditions;
        if !positive(cond.reference_temperature_k) {
            bad("conditions.reference_temperature_k", format!("must be > 0 K, got {}", cond.reference_temperature_k));
        }
        if !in_range(cond.gain_per_kelvin, -1.0, 1.0) {
            bad("conditions.gain_per_kelvin", format!("must be in [-1, 1] per K, got {}", cond.gain_per_kelvin));
        }
        let curve = match TemperatureCurve::new(&cond.temperature, cond.reference_temperature_k) {
            Ok(curve) => Some(curve),
            Err(e) => {
                bad("conditions.temperature", e.to_string());
                None
            }
        };
        if let Some(curve) = &curve {
            let (lo, hi) = curve.range();
            for t in [lo, hi] {
                let gain = 1.0 + cond.gain_per_kelvin * (t - cond.reference_temperature_k);
                if gain.is_nan() || gain <= 0.0 {
                    bad(
                        "conditions.gain_per_kelvin",
                        format!("gives a gain of {gain} at {t} K; the gain must stay > 0 over the temperature curve"),
                    );
                    break;
                }
            }
        }
        if !(cond.dead_fraction.is_finite() && (0.0..1.0).contains(&cond.dead_fraction)) {
            bad("conditions.dead_fraction", format!("must be in [0, 1), got {}", cond.dead_fraction));
        }
        for (k, &[l, y, x]) in cond.dead_cells.iter().enumerate() {
            if l >= c.layers || y >= c.cells || x >= c.cells {
                bad(
                    &format!("conditions.dead_cells[{k}]"),
                    format!("[{l}, {y}, {x}] lies outside the {} × {} × {} grid", c.layers, c.cells, c.cells),
                );
            }
        }

        // Output.
        if !(1..=65_536).contains(&self.output.chunk_events) {
            bad("output.chunk_events", format!("must be in [1, 65536], got {}", self.output.chunk_events));
        }
        if self.output.deflate > 9 {
            bad("output.deflate", format!("must be in [0, 9], got {}", self.output.deflate));
        }

        // The medium and the energy range it supports.
        let medium = match (absorber, active) {
            (Some(abs), _) if c.homogeneous => Some(Medium::homogeneous(&abs, c.absorber_mm)),
            (Some(abs), Some(act)) => {
                match Medium::sampling(&abs, c.absorber_mm, &act, c.active_mm, c.sampling_fraction) {
                    Ok(m) => Some(m),
                    Err(e) => {
                        bad("calorimeter.sampling_fraction", e.to_string());
                        None
                    }
                }
            }
            _ => None,
        };
        if let Some(m) = &medium {
            let (low, high) = energies.bounds();
            let e_min = MIN_LN_Y.exp() * m.critical_energy_mev / 1000.0;
            if low.is_finite() && low > 0.0 && low < e_min {
                bad(
                    energy_field,
                    format!(
                        "{low} GeV is below {e_min:.3} GeV = e^{MIN_LN_Y} × Ec ({:.2} MeV), the validity limit of the shower parametrisation",
                        m.critical_energy_mev
                    ),
                );
            }
            if high > MAX_ENERGY_GEV {
                bad(energy_field, format!("{high} GeV exceeds {MAX_ENERGY_GEV} GeV"));
            }
            // GP's sampling corrections shorten and narrow the profile; layers far coarser
            // than their fits leave no valid profile at the lowest energy.
            if let (Some(g), true) = (m.geometry, low.is_finite() && low > 0.0) {
                let long = Longitudinal::for_medium((low * 1000.0 / m.critical_energy_mev).ln(), m);
                if !(long.mean_ln_t.is_finite() && long.mean_ln_alpha.exp() > MIN_ALPHA) {
                    bad(
                        "calorimeter",
                        format!(
                            "layers of {:.2} X0 (F_S = {:.2}) are too coarse for the Grindhammer–Peters sampling parametrisation at {low} GeV; hint: thinner layers, a higher energy, or `homogeneous`",
                            1.0 / g.frequency,
                            g.frequency
                        ),
                    );
                }
            }
            if high.is_finite() && high * 1000.0 / r.spot_energy_mev > MAX_SPOTS_PER_SHOWER {
                bad(
                    "response.spot_energy_mev",
                    format!(
                        "{high} GeV showers would need more than {MAX_SPOTS_PER_SHOWER:e} spots; raise the spot energy"
                    ),
                );
            }
        }

        if !issues.is_empty() {
            return Err(issues);
        }
        let (Some(medium), Some(curve)) = (medium, curve) else {
            unreachable!("a missing medium or temperature curve is reported as an issue")
        };
        let cells_bytes = cells_per_event * 4;
        let chunk_events = self.output.chunk_events.min((8 << 20) / cells_bytes).max(1);
        let conditions = Conditions::new(
            curve,
            cond.reference_temperature_k,
            cond.gain_per_kelvin,
            [c.layers, c.cells, c.cells],
            cond.dead_fraction,
            &cond.dead_cells,
            cond.detector_seed.unwrap_or(self.seed),
        );
        Ok(CaloPlan {
            events: self.events,
            seed: self.seed,
            particles: b.particles.clone(),
            energies,
            position_mm: b.position_mm,
            spread_mm: b.spread_mm,
            medium,
            layers: c.layers,
            cells: c.cells,
            cell_size_mm: c.cell_size_mm,
            stochastic: r.stochastic,
            constant: r.constant,
            noise_gev: r.noise_mev / 1000.0,
            spot_energy_gev: r.spot_energy_mev / 1000.0,
            lateral_scale: r.lateral_scale,
            conditions,
            chunk_events,
            deflate: self.output.deflate,
            config: self.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        let plan = CaloConfig::default().validate().unwrap();
        assert_eq!(plan.cells_per_event(), 60 * 11 * 11);
        assert!((plan.medium.sampling_fraction - 0.1725).abs() < 0.002);
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let err = serde_json::from_str::<CaloConfig>(r#"{"calorimeter": {"absorbr": "pb"}}"#).unwrap_err();
        assert!(err.to_string().contains("unknown field `absorbr`"), "{err}");
    }

    #[test]
    fn all_issues_are_reported_with_their_field() {
        let cfg: CaloConfig = serde_json::from_str(
            r#"{"events": 0, "calorimeter": {"absorber": "kryptonite", "absorber_mm": -2, "active_mm": 0, "cells": 0},
                "response": {"stochastic": -0.1},
                "conditions": {"dead_cells": [[99, 0, 0]], "temperature": [[5, 300], [1, 301]]}}"#,
        )
        .unwrap();
        let issues = cfg.validate().unwrap_err();
        let fields: Vec<&str> = issues.iter().map(|i| i.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "events",
                "calorimeter.absorber",
                "calorimeter.absorber_mm",
                "calorimeter.active_mm",
                "calorimeter.cells",
                "response.stochastic",
                "conditions.temperature",
                "conditions.dead_cells[0]",
            ]
        );
        assert!(issues[1].message.contains("hint: one of pb, w, fe, cu, lar, scintillator, si"), "{}", issues[1]);
    }

    #[test]
    fn energies_below_the_parametrisation_range_are_rejected() {
        let mut cfg = CaloConfig::default();
        cfg.beam.energy_gev = 0.05;
        let issues = cfg.validate().unwrap_err();
        assert_eq!(issues[0].field, "beam.energy_gev");
        assert!(issues[0].message.contains("validity limit"), "{}", issues[0]);
    }

    #[test]
    fn custom_materials_and_homogeneous_stacks() {
        let cfg: CaloConfig = serde_json::from_str(
            r#"{"materials": [{"name": "PbWO4", "z": 68.4, "a": 170.9, "density_g_cm3": 8.28, "x0_g_cm2": 7.39}],
                "calorimeter": {"absorber": "pbwo4", "absorber_mm": 10, "homogeneous": true, "active": "nonsense"}}"#,
        )
        .unwrap();
        let plan = cfg.validate().unwrap();
        assert_eq!(plan.medium.sampling_fraction, 1.0);
        assert!((plan.medium.x0_mm - 8.925).abs() < 0.01, "{}", plan.medium.x0_mm);
    }
}
