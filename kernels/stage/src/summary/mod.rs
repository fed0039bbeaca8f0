//! Ensemble summary of a flood twin: from the merged member results (`stage merge` of the
//! flood maps and gauge series), the exceedance probability of the maximum depth,
//!
//! ```text
//! P(h_max > τ)(x, y) = #{members m : h_max,m(x, y) > τ} / #{members with a value at (x, y)}
//! ```
//!
//! for each threshold τ (m), the ensemble mean and maximum of `max_depth`, and per gauge
//! the mean, minimum, maximum and 90th percentile (linear, NumPy's default) over members
//! of the peak depth and of the arrival time (first sample with depth ≥ the arrival
//! depth; members where the water never arrives are left out, and `arrival_fraction`
//! says how many did arrive). Outputs: a CF NetCDF (or HDF5) summary; the figures (map,
//! hydrographs, gauge table) are in [`crate::figures`]. With a warning level, the gauge warning list
//! ([`gauge_warnings`]: per gauge and threshold, the probability that the peak depth
//! exceeds it, earliest and median arrival, and whether the probability reaches the level).
//!
//! Tested against a synthetic ensemble with known answers (`ensemble.rs`: four members
//! with depth = member index give P(h > 1.5) = 0.5, mean 1.5, max 3; gauge statistics
//! against NumPy's percentile; its warnings by hand), and end to end in
//! `tests/e2e/flood.rs` and `kernels/twin-kernel/tests/twin.rs`.

mod ensemble;
mod error;
mod map;
mod stats;
mod warnings;

pub use ensemble::{Summary, SummaryOptions, summarize};
pub use error::SummaryError;
pub use map::{MapImage, colormap, hillshade_grey, write_png};
pub use stats::{GaugeEvent, Stats, exceedance, gauge_event, mean_and_max, percentile_sorted};
pub use warnings::{GaugeSeries, GaugeWarning, WARNING_COLUMNS, gauge_warnings, write_warnings};
