//! Ensemble statistics over members, NaN meaning "missing in that member".

/// `P(v > threshold)` per cell and threshold: the fraction of members whose value exceeds
/// the threshold, among the members where the value is present (NaN where none is).
/// `values` is member-major, `members × cells`; the result is threshold-major.
pub fn exceedance(values: &[f64], members: usize, thresholds: &[f64]) -> Vec<f64> {
    let cells = values.len() / members.max(1);
    let mut out = Vec::with_capacity(thresholds.len() * cells);
    for &t in thresholds {
        for c in 0..cells {
            let (mut present, mut above) = (0usize, 0usize);
            for m in 0..members {
                let v = values[m * cells + c];
                if !v.is_nan() {
                    present += 1;
                    above += usize::from(v > t);
                }
            }
            out.push(if present == 0 { f64::NAN } else { above as f64 / present as f64 });
        }
    }
    out
}

/// Mean and maximum over members per cell (NaN where no member has a value).
pub fn mean_and_max(values: &[f64], members: usize) -> (Vec<f64>, Vec<f64>) {
    let cells = values.len() / members.max(1);
    (0..cells)
        .map(|c| {
            let present: Vec<f64> = (0..members).map(|m| values[m * cells + c]).filter(|v| !v.is_nan()).collect();
            if present.is_empty() {
                (f64::NAN, f64::NAN)
            } else {
                (present.iter().sum::<f64>() / present.len() as f64, present.iter().copied().fold(f64::MIN, f64::max))
            }
        })
        .unzip()
}

/// Mean, minimum, maximum and 90th percentile of a sample.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stats {
    /// Arithmetic mean.
    pub mean: f64,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
    /// 90th percentile, linear between order statistics (NumPy's default).
    pub p90: f64,
}

impl Stats {
    /// Statistics of the non-NaN values; all NaN for an empty sample.
    pub fn of(values: &[f64]) -> Self {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
        if v.is_empty() {
            return Self { mean: f64::NAN, min: f64::NAN, max: f64::NAN, p90: f64::NAN };
        }
        v.sort_by(f64::total_cmp);
        Self {
            mean: v.iter().sum::<f64>() / v.len() as f64,
            min: v[0],
            max: v[v.len() - 1],
            p90: percentile_sorted(&v, 0.9),
        }
    }
}

/// The `q`-quantile (0–1) of sorted values, interpolating linearly between the order
/// statistics at rank `q (n − 1)`.
pub fn percentile_sorted(sorted: &[f64], q: f64) -> f64 {
    let rank = q.clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let (lo, hi) = (rank.floor() as usize, rank.ceil() as usize);
    sorted[lo] + (rank - lo as f64) * (sorted[hi] - sorted[lo])
}

/// Peak depth and arrival time of one gauge in one member.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GaugeEvent {
    /// Largest depth over the series, m (NaN if every sample is missing).
    pub peak: f64,
    /// First sample time with depth ≥ the arrival depth, s (NaN if never).
    pub arrival: f64,
}

/// Peak and arrival of a depth series `depth[k]` sampled at `time[k]`.
pub fn gauge_event(depth: &[f64], time: &[f64], arrival_depth: f64) -> GaugeEvent {
    let peak = depth.iter().copied().filter(|d| !d.is_nan()).fold(f64::NAN, f64::max);
    let arrival = depth.iter().zip(time).find(|(d, _)| **d >= arrival_depth).map_or(f64::NAN, |(_, t)| *t);
    GaugeEvent { peak, arrival }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exceedance_counts_members_above_the_threshold() {
        // 4 members, 2 cells: depth = member index in cell 0, missing in member 3 of cell 1.
        let v = [0.0, 1.0, 1.0, 1.0, 2.0, 3.0, 3.0, f64::NAN];
        let p = exceedance(&v, 4, &[1.5, 0.5]);
        assert_eq!(p, [0.5, 1.0 / 3.0, 0.75, 1.0]);
    }

    #[test]
    fn stats_match_numpy() {
        // numpy.percentile([1, 2, 3, 4, 10], 90) == 7.6
        let s = Stats::of(&[4.0, 1.0, 10.0, f64::NAN, 3.0, 2.0]);
        assert_eq!((s.mean, s.min, s.max), (4.0, 1.0, 10.0));
        assert!((s.p90 - 7.6).abs() < 1e-12, "{}", s.p90);
        assert!(Stats::of(&[f64::NAN]).mean.is_nan());
    }

    #[test]
    fn gauge_events_find_peak_and_first_arrival() {
        let e = gauge_event(&[0.0, 0.02, 0.3, 0.1], &[0.0, 5.0, 10.0, 15.0], 0.05);
        assert_eq!(e, GaugeEvent { peak: 0.3, arrival: 10.0 });
        assert!(gauge_event(&[0.0, 0.01], &[0.0, 1.0], 0.05).arrival.is_nan());
    }

    #[test]
    fn mean_and_max_skip_missing_members() {
        let (mean, max) = mean_and_max(&[1.0, f64::NAN, 3.0, f64::NAN], 2);
        assert_eq!(mean[0], 2.0);
        assert_eq!(max[0], 3.0);
        assert!(mean[1].is_nan());
    }
}
