//! Ensemble data assimilation for twinflow twins, and the Lorenz-96 testbed.
//!
//! # Equations and schemes
//! With k members (n × k ensemble E, mean x̄, anomalies X), observations y with
//! independent errors R = diag(σ²) and a linear operator H (Yb = H X):
//! - stochastic EnKF: xⱼ ← xⱼ + X Ybᵀ (Yb Ybᵀ + (k − 1)R)⁻¹ (y + σ∘εⱼ − H xⱼ);
//! - ETKF (Hunt et al. 2007): P̃a = [(k − 1)I + Ybᵀ R⁻¹ Yb]⁻¹, w̄ = P̃a Ybᵀ R⁻¹ (y − Hx̄),
//!   Wa = [(k − 1)P̃a]^½ (symmetric), Eᵃ = x̄1ᵀ + X(w̄1ᵀ + Wa);
//! - LETKF: the same per local domain with R⁻¹ tapered by Gaspari–Cohn (1999);
//! - RTPS (Whitaker & Hamill 2012), multiplicative inflation of the analysis anomalies,
//!   physical constraints (bounds, non-negativity, momentum zeroed where dry).
//!
//! Details in [`filter`] and [`localization`]; the model in [`lorenz96`]
//! (dx_i/dt = (x_{i+1} − x_{i−2})x_{i−1} − x_i + F, RK4); random numbers in [`rng`]
//! (counter-based, keyed by seed, cycle, member and observation, so results do not depend
//! on rank count or order); twin experiments in [`twin`]. For the flood twin: [`sensor`]
//! delivers noisy gauge readings of a nature run on a wall clock, and [`verify`] scores an
//! ensemble against the truth (RMSE and spread over wet cells and at gauges, volume,
//! parameters).
//!
//! # Units
//! The analysis is unit-agnostic: states, observations and their error standard
//! deviations share the units of the observed variables; locations and the localization
//! half-width share one length unit (grid points for Lorenz-96, metres for flood grids).
//! Lorenz-96 is dimensionless (dt = 0.05 ≈ 6 h of atmospheric time).
//!
//! # References and tests
//! Sakov & Oke 2008 (Tellus A 60:361) as reproduced by DAPPER (`mods/Lorenz96/sakov2008.py`):
//! 40 variables observed every step with R = I; time-mean analysis RMSE 0.22 for the
//! stochastic EnKF (40 members, inflation 1.06) and for the LETKF (7 members, inflation
//! 1.04, localization radius 4); climatology ≈ 3.6. `tests/lorenz96_filters.rs` checks
//! these within ± 0.02 and the free ensemble and climatology as baselines; unit tests check
//! Gaspari–Cohn at known points, ETKF with huge observation errors leaving the ensemble
//! unchanged, and the LETKF's independence of the order and partition of its domains.
#![warn(missing_docs)]

pub mod files;
pub mod filter;
pub mod localization;
pub mod lorenz96;
pub mod obs;
pub mod rng;
pub mod sensor;
#[cfg(test)]
mod testdata;
pub mod twin;
pub mod verify;

pub use filter::{AnalysisConfig, AnalysisReport, Constraint, Ensemble, LetkfPlan, Method, analyse};
pub use localization::{Geometry, gaspari_cohn, half_width_from_dapper_radius};
pub use lorenz96::Lorenz96;
pub use obs::{Observations, OperatorRow, bilinear_row};
pub use twin::{TwinConfig, TwinScores, climatology_rmse, run_twin};

/// Why an assimilation failed.
#[derive(Debug, thiserror::Error)]
pub enum AssimError {
    /// An observation is unusable.
    #[error("observation {index}: {reason}")]
    Observation {
        /// Index of the observation.
        index: usize,
        /// What is wrong.
        reason: String,
    },
    /// A forecast value is NaN or infinite.
    #[error("forecast state element {element} of member {member} is not finite")]
    NonFinite {
        /// State element.
        element: usize,
        /// Member.
        member: usize,
    },
    /// The analysis settings are invalid.
    #[error("invalid analysis settings: {0}")]
    Config(String),
    /// An input file is unusable: names the file and the variable.
    #[error("`{path}`{}: {reason}", if variable.is_empty() { String::new() } else { format!(", variable `{variable}`") })]
    Input {
        /// File concerned.
        path: std::path::PathBuf,
        /// Variable concerned (empty for the file as a whole).
        variable: String,
        /// What is wrong.
        reason: String,
    },
    /// Reading or writing an exchange file failed.
    #[error(transparent)]
    Exchange(#[from] twinflow_exchange::ExchangeError),
    /// A matrix that must be positive definite is not (degenerate ensemble, bad data).
    #[error("numerical failure: {0}")]
    Numerical(&'static str),
}

impl AssimError {
    /// The exit code of `twin-kernel` for this error: [`INVALID_INPUT`] for the user's
    /// input, [`FAILURE`] for a numerical failure.
    ///
    /// [`INVALID_INPUT`]: twinflow_contract::exit_code::INVALID_INPUT
    /// [`FAILURE`]: twinflow_contract::exit_code::FAILURE
    pub fn exit_code(&self) -> u8 {
        use twinflow_contract::exit_code::{FAILURE, INVALID_INPUT};
        match self {
            Self::Numerical(_) => FAILURE,
            Self::Exchange(e) => e.exit_code(),
            _ => INVALID_INPUT,
        }
    }
}
