//! Gauge warnings of a forecast ensemble.
//!
//! For each gauge and depth threshold τ, over the members whose gauge series has a value:
//!
//! ```text
//! probability = #{members m : max_t h_m(t) > τ} / #{members}
//! arrival_m   = first sample time t with h_m(t) ≥ τ   (none if the depth never reaches τ)
//! ```
//!
//! the earliest and the median (linear between order statistics) of the arrivals among the
//! members where the water arrives (none when no member's does), and a warning when the
//! probability reaches the warning level P. "Exceeds" is strict as in the exceedance maps,
//! "arrives" is not, as in the gauge statistics: a member peaking at exactly τ arrives but
//! does not exceed.

use std::path::{Path, PathBuf};

use twinflow_exchange::PartialFile;

use super::SummaryError;
use super::stats::{gauge_event, percentile_sorted};

/// Columns of the warnings CSV.
pub const WARNING_COLUMNS: &[&str] =
    &["gauge", "x", "y", "threshold", "probability", "arrival_earliest", "arrival_median", "warn"];

/// One gauge and threshold of the warning list.
#[derive(Debug, Clone, PartialEq)]
pub struct GaugeWarning {
    /// Gauge name.
    pub gauge: String,
    /// Gauge x (NaN if unknown).
    pub x: f64,
    /// Gauge y (NaN if unknown).
    pub y: f64,
    /// Depth threshold τ, m.
    pub threshold: f64,
    /// Probability over members that the peak depth exceeds τ (NaN without values).
    pub probability: f64,
    /// Earliest arrival of depth τ over members, s (NaN if none arrives).
    pub arrival_earliest: f64,
    /// Median arrival among the members where it arrives, s (NaN if none arrives).
    pub arrival_median: f64,
    /// Whether the probability reaches the warning level.
    pub warn: bool,
}

/// Gauge series of a merged ensemble, as the warnings read them.
#[derive(Debug, Clone, Copy)]
pub struct GaugeSeries<'a> {
    /// Gauge names.
    pub names: &'a [String],
    /// Gauge x.
    pub x: &'a [f64],
    /// Gauge y.
    pub y: &'a [f64],
    /// Sample times, s.
    pub time: &'a [f64],
    /// Depths `[member][station][time]`, NaN where missing.
    pub depth: &'a [f64],
    /// Number of members.
    pub members: usize,
}

/// The warning list: gauge-major, thresholds in the order given.
pub fn gauge_warnings(g: &GaugeSeries<'_>, thresholds: &[f64], level: f64) -> Vec<GaugeWarning> {
    let (ns, nt) = (g.names.len(), g.time.len());
    let mut out = Vec::with_capacity(ns * thresholds.len());
    for s in 0..ns {
        for &tau in thresholds {
            let (mut present, mut above, mut arrivals) = (0_usize, 0_usize, Vec::new());
            for m in 0..g.members {
                let base = (m * ns + s) * nt;
                let e = gauge_event(&g.depth[base..base + nt], g.time, tau);
                if !e.peak.is_nan() {
                    present += 1;
                    above += usize::from(e.peak > tau);
                }
                if !e.arrival.is_nan() {
                    arrivals.push(e.arrival);
                }
            }
            arrivals.sort_by(f64::total_cmp);
            let probability = if present == 0 { f64::NAN } else { above as f64 / present as f64 };
            out.push(GaugeWarning {
                gauge: g.names[s].clone(),
                x: g.x[s],
                y: g.y[s],
                threshold: tau,
                probability,
                arrival_earliest: arrivals.first().copied().unwrap_or(f64::NAN),
                arrival_median: if arrivals.is_empty() { f64::NAN } else { percentile_sorted(&arrivals, 0.5) },
                warn: probability >= level,
            });
        }
    }
    out
}

fn number(v: f64) -> String {
    if v.is_finite() { v.to_string() } else { String::new() }
}

/// Writes the warning list as CSV ([`WARNING_COLUMNS`]; `warn` is `yes`/`no`, values
/// without data are empty), under `.partial` and renamed into place.
pub fn write_warnings(path: &Path, warnings: &[GaugeWarning]) -> Result<PathBuf, SummaryError> {
    let csv_error = |e: csv::Error| SummaryError::Request(format!("cannot format `{}`: {e}", path.display()));
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(WARNING_COLUMNS).map_err(csv_error)?;
    for g in warnings {
        w.write_record([
            g.gauge.clone(),
            number(g.x),
            number(g.y),
            number(g.threshold),
            number(g.probability),
            number(g.arrival_earliest),
            number(g.arrival_median),
            if g.warn { "yes" } else { "no" }.to_string(),
        ])
        .map_err(csv_error)?;
    }
    let bytes = w.into_inner().map_err(|e| csv_error(e.into_error().into()))?;
    let partial = PartialFile::new(path)?;
    std::fs::write(partial.partial_path(), bytes).map_err(|source| SummaryError::Io {
        path: partial.partial_path().to_path_buf(),
        action: "write",
        source,
    })?;
    Ok(partial.commit()?)
}
