//! Per-cell anomaly detection: each cell's observed response against the twin's
//! expectation.
//!
//! **Response** of cell c in a window: `r_c = Σ_e x_ce / Σ_e E_e` (GeV read per GeV of
//! beam), with the variance of that ratio estimated from the events themselves,
//! `σ²(r_c) = Σ_e (x_ce − r_c E_e)² / (Σ_e E_e)²` (the ratio estimator's variance; it
//! carries the shower-to-shower fluctuations, heavy tails included).
//!
//! **Expectation**: the reference response `ρ_c` (accumulated over the windows in which the
//! cell was healthy, starting with the first window, which is taken as healthy) times the
//! window's global gain `g`, the median over monitored cells of `r_c / ρ_c`. The median
//! makes `g` (the temperature drift every cell shares) immune to a few broken cells.
//!
//! **Flags** (a cell is *monitored* once its reference is known to `max_rel_error`; the
//! others, at the edges of the shower, are reported as `unmonitored`): with
//! `ratio = r_c / (g ρ_c)` and `z = (r_c − g ρ_c) / √(σ²(r_c) + g² σ²(ρ_c))`,
//! - `dead`: ratio < `dead_ratio` and z < −`z_min`;
//! - `hot`: ratio > `hot_ratio` and z > `z_min` (a reading far above expectation, e.g. a
//!   pedestal shift);
//! - `gain-jump`: |ratio − 1| > `gain_jump` and |z| > `z_min` (a persistent shift of one
//!   cell's gain that the global drift does not explain);
//! - otherwise `ok`, and the window is added to the cell's reference (gain-corrected).
//!
//! Both a relative and a statistical threshold must be passed: the first keeps tiny but
//! significant shifts of well-measured cells quiet, the second keeps noisy cells quiet.
//! A cell that changes into a flagged state raises an alert.

use serde::{Deserialize, Serialize};

use crate::data::Events;

/// Thresholds of the flags.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Thresholds {
    /// Significance a flag needs, in standard deviations.
    pub z_min: f64,
    /// Below this fraction of the expectation a cell is dead.
    pub dead_ratio: f64,
    /// Above this multiple of the expectation a cell is hot.
    pub hot_ratio: f64,
    /// A relative shift beyond this is a gain jump.
    pub gain_jump: f64,
    /// A cell is monitored once its reference's relative error is below this.
    pub max_rel_error: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self { z_min: 5.0, dead_ratio: 0.2, hot_ratio: 1.5, gain_jump: 0.2, max_rel_error: 0.2 }
    }
}

/// State of a cell after a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CellState {
    /// As expected.
    Ok,
    /// Too little signal to judge.
    Unmonitored,
    /// Reads (almost) nothing.
    Dead,
    /// Reads far more than expected.
    Hot,
    /// Its gain moved.
    GainJump,
}

impl CellState {
    /// Whether this is a flag (dead, hot, gain jump).
    pub fn is_flag(self) -> bool {
        matches!(self, Self::Dead | Self::Hot | Self::GainJump)
    }

    /// The name in files and messages.
    pub fn name(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Unmonitored => "unmonitored",
            Self::Dead => "dead",
            Self::Hot => "hot",
            Self::GainJump => "gain-jump",
        }
    }
}

/// One cell after a window.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CellFlag {
    /// `[layer, y, x]`.
    pub cell: [usize; 3],
    /// Its state.
    pub state: CellState,
    /// The cycle since which it has been in this flagged state.
    pub since_cycle: Option<u64>,
    /// Observed / expected response (none when unmonitored or in the reference window).
    pub ratio: Option<f64>,
    /// Significance of the difference, standard deviations (likewise).
    pub z: Option<f64>,
}

/// The accumulated healthy response per cell.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reference {
    /// Σ E of the windows added, per cell, GeV.
    pub energy: Vec<f64>,
    /// Σ of the gain-corrected readings, per cell, GeV.
    pub sum: Vec<f64>,
    /// Σ of the squared gain-corrected residuals, per cell, GeV².
    pub var: Vec<f64>,
}

impl Reference {
    fn response(&self, c: usize) -> (f64, f64) {
        let e = self.energy[c].max(f64::MIN_POSITIVE);
        (self.sum[c] / e, self.var[c].sqrt() / e)
    }
}

/// What the monitor knows after a cycle (`monitor.json`), read by the next cycle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MonitorState {
    /// The cycle.
    pub cycle: u64,
    /// Its window.
    pub window: u64,
    /// Layers, and cells per transverse side.
    pub shape: [usize; 3],
    /// The window's gain relative to the reference.
    pub gain: f64,
    /// Thresholds used.
    pub thresholds: Thresholds,
    /// The reference.
    pub reference: Reference,
    /// Every cell, in `[layer, y, x]` order.
    pub cells: Vec<CellFlag>,
}

impl MonitorState {
    /// The flagged cells.
    pub fn flagged(&self) -> impl Iterator<Item = &CellFlag> {
        self.cells.iter().filter(|c| c.state.is_flag())
    }
}

/// A new flag (`alerts.jsonl`, one JSON object a line).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// The cycle that raised it.
    pub cycle: u64,
    /// Its window.
    pub window: u64,
    /// `dead`, `hot`, `gain-jump` or `calibration-kept`.
    pub kind: String,
    /// The cell, for cell alerts.
    pub cell: Option<[usize; 3]>,
    /// What happened, in words.
    pub message: String,
}

/// Per-cell sums of a window: Σ E, Σ x_c and the residual sums for a response `r`.
fn window_sums(events: &Events) -> (f64, Vec<f64>) {
    let e_tot: f64 = events.energy.iter().sum();
    let sums = events.cells.columns().into_iter().map(|c| c.sum()).collect();
    (e_tot, sums)
}

fn residuals(events: &Events, c: usize, r: f64) -> f64 {
    events.cells.column(c).iter().zip(&events.energy).map(|(x, e)| (x - r * e).powi(2)).sum()
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 { v[n / 2] } else { 0.5 * (v[n / 2 - 1] + v[n / 2]) })
}

/// Judges every cell of a window against `previous` (none: the first window, which becomes
/// the reference); returns the new state and the alerts of new flags.
pub fn monitor(
    events: &Events,
    previous: Option<&MonitorState>,
    thresholds: Thresholds,
    cycle: u64,
    shape: [usize; 3],
) -> (MonitorState, Vec<Alert>) {
    let n = events.cells_per_event();
    let (e_tot, sums) = window_sums(events);
    let index = |c: usize| [c / (shape[1] * shape[2]), (c / shape[2]) % shape[1], c % shape[2]];
    let Some(prev) = previous else {
        let reference = Reference {
            energy: vec![e_tot; n],
            var: (0..n).map(|c| residuals(events, c, sums[c] / e_tot)).collect(),
            sum: sums,
        };
        let cells = (0..n)
            .map(|c| {
                let (r, s) = reference.response(c);
                let state =
                    if r > 0.0 && s / r < thresholds.max_rel_error { CellState::Ok } else { CellState::Unmonitored };
                CellFlag { cell: index(c), state, since_cycle: None, ratio: None, z: None }
            })
            .collect();
        let state = MonitorState { cycle, window: events.window_index, shape, gain: 1.0, thresholds, reference, cells };
        return (state, Vec::new());
    };
    let mut reference = prev.reference.clone();
    let monitored = |c: usize| {
        let (r, s) = prev.reference.response(c);
        r > 0.0 && s / r < thresholds.max_rel_error
    };
    let gain = median(
        (0..n)
            .filter(|&c| monitored(c) && !prev.cells[c].state.is_flag())
            .map(|c| (sums[c] / e_tot) / prev.reference.response(c).0)
            .collect(),
    )
    .unwrap_or(1.0);
    let mut cells = Vec::with_capacity(n);
    let mut alerts = Vec::new();
    for (c, &sum) in sums.iter().enumerate() {
        let cell = index(c);
        if !monitored(c) {
            cells.push(CellFlag { cell, state: CellState::Unmonitored, since_cycle: None, ratio: None, z: None });
            continue;
        }
        let (rho, s_rho) = prev.reference.response(c);
        let expected = gain * rho;
        let r = sum / e_tot;
        let s_r = residuals(events, c, r).sqrt() / e_tot;
        let ratio = r / expected;
        let z = (r - expected) / (s_r * s_r + gain * gain * s_rho * s_rho).sqrt().max(f64::MIN_POSITIVE);
        let t = &thresholds;
        let state = if ratio < t.dead_ratio && z < -t.z_min {
            CellState::Dead
        } else if ratio > t.hot_ratio && z > t.z_min {
            CellState::Hot
        } else if (ratio - 1.0).abs() > t.gain_jump && z.abs() > t.z_min {
            CellState::GainJump
        } else {
            CellState::Ok
        };
        let before = prev.cells[c];
        let since_cycle = match state {
            s if s.is_flag() && before.state == s => before.since_cycle,
            s if s.is_flag() => Some(cycle),
            _ => None,
        };
        if state.is_flag() && before.state != state {
            let [l, y, x] = cell;
            alerts.push(Alert {
                cycle,
                window: events.window_index,
                kind: state.name().into(),
                cell: Some(cell),
                message: format!(
                    "cell [{l}, {y}, {x}] is {}: it read {ratio:.3} × its expected response ({z:+.1} σ) in window {}",
                    state.name(),
                    events.window_index
                ),
            });
        }
        if state == CellState::Ok {
            // The healthy window joins the reference, corrected to the reference gain.
            reference.energy[c] += e_tot;
            reference.sum[c] += sum / gain;
            reference.var[c] += residuals(events, c, expected) / (gain * gain);
        }
        cells.push(CellFlag { cell, state, since_cycle, ratio: Some(ratio), z: Some(z) });
    }
    let state = MonitorState { cycle, window: events.window_index, shape, gain, thresholds, reference, cells };
    (state, alerts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array2;

    /// Six cells; cell k reads `share[k] × gain × E` with ±17 % noise per event, plus
    /// ±5 MeV of noise.
    fn window(index: u64, gain: f64, share: [f64; 6], seed: u64) -> Events {
        use rand::{RngExt as _, SeedableRng as _};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let n = 400;
        let energy: Vec<f64> = (0..n).map(|_| rng.random_range(10.0..100.0)).collect();
        let cells = Array2::from_shape_fn((n, 6), |(i, c)| {
            share[c] * gain * energy[i] * (1.0 + 0.1 * (rng.random::<f64>() - 0.5) * 3.4)
                + 0.01 * (rng.random::<f64>() - 0.5)
        });
        Events {
            event: (0..n as u64).collect(),
            time: vec![0.0; n],
            energy,
            temperature: vec![300.0; n],
            cells,
            window_index: index,
        }
    }

    #[test]
    fn a_dead_cell_is_flagged_once_and_the_drift_is_not_a_flag() {
        let t = Thresholds::default();
        let shape = [1, 2, 3];
        let healthy = [0.1, 0.05, 0.02, 0.08, 0.06, 0.0];
        let (s0, a0) = monitor(&window(0, 1.0, healthy, 1), None, t, 0, shape);
        assert!(a0.is_empty());
        assert_eq!(s0.cells[5].state, CellState::Unmonitored, "a cell without signal is not judged");
        // A 10 % global drift moves every cell alike: no flag.
        let (s1, a1) = monitor(&window(1, 0.9, healthy, 2), Some(&s0), t, 1, shape);
        assert!(a1.is_empty(), "{a1:?}");
        assert!((s1.gain - 0.9).abs() < 0.02, "{}", s1.gain);
        // Cell 1 dies, cell 2 goes hot.
        let broken = [0.1, 0.0, 0.06, 0.08, 0.06, 0.0];
        let (s2, a2) = monitor(&window(2, 0.9, broken, 3), Some(&s1), t, 2, shape);
        let kinds: Vec<(&str, Option<[usize; 3]>)> = a2.iter().map(|a| (a.kind.as_str(), a.cell)).collect();
        assert_eq!(kinds, [("dead", Some([0, 0, 1])), ("hot", Some([0, 0, 2]))]);
        assert_eq!(s2.cells[1].since_cycle, Some(2));
        // Still broken next window: flagged, but no new alert, and `since` stays.
        let (s3, a3) = monitor(&window(3, 0.85, broken, 4), Some(&s2), t, 3, shape);
        assert!(a3.is_empty(), "{a3:?}");
        assert_eq!((s3.cells[1].state, s3.cells[1].since_cycle), (CellState::Dead, Some(2)));
        assert_eq!(s3.cells[0].state, CellState::Ok);
        // A gain jump of one cell.
        let (_, a4) = monitor(&window(4, 0.85, [0.13, 0.0, 0.06, 0.08, 0.06, 0.0], 5), Some(&s3), t, 4, shape);
        assert_eq!(a4.len(), 1);
        assert_eq!((a4[0].kind.as_str(), a4[0].cell), ("gain-jump", Some([0, 0, 0])));
    }
}
