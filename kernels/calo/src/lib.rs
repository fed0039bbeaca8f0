//! Calorimeter kernel: fast Monte Carlo of electromagnetic showers in a sampling
//! calorimeter, with time-varying detector conditions, for detector digital twins.
//!
//! # Geometry and medium
//! A stack of `layers` identical layers (absorber `d₁` then active `d₂`, mm) with a square
//! transverse grid of `cells × cells` cells of `cell_size` mm, centred on the beam axis;
//! one cell per layer in depth. The shower sees the stack as one effective medium (PDG
//! mixture rules by mass fraction: 1/X0 = Σ w_j/X0_j, 1/R_M = Σ w_j Ec_j/(Es X0_j),
//! Z = Σ w_j Z_j; see [`materials`]) plus Grindhammer–Peters' sampling corrections, which
//! depend on the sampling frequency F_S = X0,eff/(d₁ + d₂) and the electron-to-mip ratio ê
//! ([`SamplingGeometry`]). A homogeneous stack (one fully active material) has none.
//!
//! # Shower (GFlash-style energy spots; Grindhammer & Peters, hep-ex/0001020)
//! Per event, with y = E/Ec of the medium:
//! 1. **Profile parameters**: ln T ~ N(ln(ln y − 0.812), 1/(−1.4 + 1.26 ln y)) and
//!    ln α ~ N(ln(0.81 + (0.458 + 2.26/Z) ln y), 1/(−0.58 + 0.86 ln y)), correlated with
//!    ρ = 0.705 − 0.023 ln y (pairs with α < 1.1 are redrawn); β = (α − 1)/T. The average
//!    profile of many such showers peaks near ⟨T⟩ = ln y − 0.858 (the GP mean profile).
//!    In a sampling stack GP's App. A.2.3 values apply ([`Longitudinal::sampling`]).
//! 2. **Spots**: E is split into N = ⌈E/e_spot⌉ spots of energy e = E/N. Each spot lies at
//!    depth t ~ Gamma(α, β) X0 (dE/dt = E β (βt)^(α−1) e^(−βt)/Γ(α)), at radius
//!    r = R_M R √(u/(1 − u)) with R = R_C (probability p) or R_T, where
//!    R_C = z₁ + z₂τ, R_T = k₁(e^(k₃(τ−k₂)) + e^(k₄(τ−k₂))), p = p₁ exp((p₂ − τ)/p₃ − e^((p₂−τ)/p₃))
//!    (GP's fitted constants, App. A.1.3, with the sampling corrections of A.2.4 in a
//!    sampling stack: [`Radial`]) at reduced depth τ ≈ t/T; this samples
//!    f(r) = p·2rR_C²/(r² + R_C²)² + (1 − p)·2rR_T²/(r² + R_T²)², which puts 89.5–89.9 %
//!    of the energy within 1 R_M and 96.3–96.4 % within 2 R_M in homogeneous lead at
//!    10–100 GeV (the PDG's "about 90 % / 95 %"), 91.1–91.3 % within 1 R_M,eff in the
//!    2 mm Pb / 4 mm LAr stack; azimuth uniform. Photons first travel an exponential depth
//!    of mean 9/7 X0 (pair-production mean free path).
//! 3. **Cells**: the spot at (t X0, impact point + r(cos φ, sin φ)) falls into layer
//!    ⌊depth/layer thickness⌋ and cell ⌊(x + W/2)/cell size⌋; spots behind the last layer
//!    or beside the grid are leakage. Deposited energy per cell is (spots in it) × e, so
//!    deposited + leakage = E up to round-off (≈ 1e-16 relative) in every event.
//!
//! # Response
//! - **Sampling fluctuations**: each spot's visible energy is f_s · e · w with
//!   w ~ Gamma(k, 1/k) (mean 1, variance 1/k) independently. For n contained spots, the
//!   visible energy V has Var(V/f_s) = n e²/k = D e/k with D = n e the deposited energy;
//!   k = e/a² gives Var(V/f_s) = a² D, i.e. **σ(V/f_s)/D = a/√D** (D in GeV). A sum of
//!   Gamma(k, 1/k) variables is Gamma(n k, 1/k), so each hit cell draws one Gamma(n_c k, 1/k)
//!   for its n_c spots: the same distribution at the cost of one draw per hit cell.
//! - **Constant term**: one calibration factor per event, c ~ Normal(1, b) (floored at 0),
//!   multiplies every cell: (σ/E)² = a²/E + b² + a²b²/E, the last term (≤ 5·10⁻⁵ a²/E for
//!   b ≤ 0.7 %) negligible. `/truth/visible` is c·V.
//! - **Conditions** ([`Conditions`]): every cell of the event is multiplied by the gain
//!   1 + k(T(event) − T_ref); Gaussian noise of σ per cell is added; dead cells read 0.
//!
//! # Reproducibility and parallelism
//! Event i draws from ChaCha8 keyed by the seed with stream i (counter-based), in a fixed
//! order: particle, energy, impact point, conversion depth, (T, α), spots, cell weights,
//! calibration, noise. Ranks simulate contiguous event ranges; rank 0 gathers bounded
//! blocks ([`twinflow_comm::Communicator::gather_f64`]) and writes each at its event index, so
//! the file is identical for any rank count.
//!
//! # Units
//! Energies in GeV (spot energy, noise configured in MeV), lengths in mm, depth t in X0,
//! radii in Molière radii inside the parametrisation, temperature in K.
//!
//! # Limitations
//! Normal incidence only; the sampling stack is an effective medium with GP's sampling
//! corrections (no per-layer absorber/active split of the profile, and GP's fits cover
//! F_S ≈ 1–10 layers per X0); the lateral profile is azimuthally symmetric; e+ showers
//! like e−; GP fits cover roughly 1–100 GeV, energies down to e⁴·Ec and up to 10 TeV are
//! accepted.
//!
//! # Tests
//! `kernels/twin-kernel/tests/calo.rs` (through the binary): depth of the maximum and
//! shape α of the mean profile in homogeneous lead vs ln y − 0.858 and 0.21 + (0.492 + 2.38/Z) ln y (Grindhammer & Peters), radial
//! containment in 1, 2, 3.5 R_M against the parametrisation's own integral and the PDG's
//! rule of thumb, in lead and in a Pb/LAr stack, recovery
//! of a and b by a weighted fit of σ/E, energy conservation per event, gain drift and dead
//! cells, invalid input, and (feature `mpi`) identical files for 1, 2 and 4 ranks.
#![warn(missing_docs)]

mod conditions;
mod config;
pub mod materials;
mod output;
mod run;
mod shower;

use std::path::PathBuf;

pub use conditions::{Conditions, CurveError, DEAD_CELL_STREAM, TemperatureCurve};
pub use config::{
    BeamConfig, CaloConfig, CaloPlan, CalorimeterConfig, ConditionsConfig, ConfigIssue, Energies, MAX_CELLS_PER_EVENT,
    MAX_ENERGY_GEV, MAX_EVENTS, MIN_LN_Y, OutputConfig, Particle, ResponseConfig, Spectrum,
};
pub use materials::{Material, MaterialError, Medium, SamplingGeometry};
pub use output::{CaloWriter, names};
pub use run::{KERNEL_NAME, RunSummary, partition, run_calo};
pub use shower::{
    EventTruth, Longitudinal, MIN_ALPHA, PHOTON_CONVERSION_X0, Primary, Radial, RadialShape, Scratch, ShowerParams,
    Simulator, Spot, event_rng, gamma_profile, gp_mean_alpha, gp_mean_depth_of_maximum, gp_mean_profile,
};

use twinflow_exchange::ExchangeError;

/// Why a calorimeter run failed.
#[derive(Debug, thiserror::Error)]
pub enum CaloError {
    /// The configuration file cannot be read.
    #[error("cannot read the configuration `{path}`")]
    ConfigRead {
        /// File concerned.
        path: PathBuf,
        /// OS error.
        #[source]
        source: std::io::Error,
    },
    /// The configuration file is not valid JSON of the expected shape.
    #[error("invalid configuration `{path}`")]
    ConfigParse {
        /// File concerned.
        path: PathBuf,
        /// Parser error (with line and column).
        #[source]
        source: serde_json::Error,
    },
    /// The configuration is invalid (every issue is listed).
    #[error("invalid calorimeter configuration:\n{}", .0.iter().map(|i| format!("  - {i}")).collect::<Vec<_>>().join("\n"))]
    Config(Vec<ConfigIssue>),
    /// The configuration read from a file (and the flags given with it) is invalid.
    #[error("invalid calorimeter configuration `{path}` (with the flags given):\n{}", .issues.iter().map(|i| format!("  - {i}")).collect::<Vec<_>>().join("\n"))]
    ConfigFile {
        /// The configuration file.
        path: std::path::PathBuf,
        /// Every issue.
        issues: Vec<ConfigIssue>,
    },
    /// Writing the output failed.
    #[error(transparent)]
    Exchange(#[from] ExchangeError),
    /// The output thread panicked (a bug).
    #[error("the output writer thread panicked")]
    WriterPanicked,
}

impl CaloError {
    /// Whether the error is the user's input (exit code 3) rather than a failed run.
    pub fn is_invalid_input(&self) -> bool {
        matches!(self, Self::ConfigRead { .. } | Self::ConfigParse { .. } | Self::Config(_) | Self::ConfigFile { .. })
    }

    /// The exit code of `twin-kernel` for this error: [`INVALID_INPUT`] for the user's
    /// input, [`FAILURE`] otherwise.
    ///
    /// [`INVALID_INPUT`]: twinflow_contract::exit_code::INVALID_INPUT
    /// [`FAILURE`]: twinflow_contract::exit_code::FAILURE
    pub fn exit_code(&self) -> u8 {
        use twinflow_contract::exit_code::{FAILURE, INVALID_INPUT};
        if self.is_invalid_input() { INVALID_INPUT } else { FAILURE }
    }
}
