//! Configuration of a flood run: the raw JSON shape and its validation.
//!
//! [`FloodConfig`] is what users write (`flood.json`, every field optional); it is never
//! run directly: [`FloodConfig::validate`] checks it against the grid and yields the
//! solver [`Params`] and the output schedule of a [`RunPlan`], collecting every problem.

use std::path::PathBuf;

use super::hydrograph::Hydrograph;
use super::solver::{Boundaries, Grid, Inflow, Params, Side, mm_per_hour};
use twinflow_exchange::{Compression, Format};

/// A named gauge location, metres.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GaugeConfig {
    /// Gauge name (written as `station_name`).
    pub name: String,
    /// x coordinate, m.
    pub x: f64,
    /// y coordinate, m.
    pub y: f64,
}

/// An inflow hydrograph on part of one side.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InflowConfig {
    /// Side of the domain the water enters through.
    pub side: Side,
    /// Start of the segment along the side (y for west/east, x for south/north), m.
    pub from: f64,
    /// End of the segment, m; boundary cells whose centre lies in `[from, to]` receive it.
    pub to: f64,
    /// `[time s, discharge m³/s]` points, linear in between.
    pub hydrograph: Vec<[f64; 2]>,
}

/// Initial water: depth from a file, or a flat water level, or dry.
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InitialConfig {
    /// NetCDF/HDF5 file with `h` (and optionally `u`, `v`) on the DEM grid; a relative
    /// path is resolved against the configuration file's directory.
    pub file: Option<PathBuf>,
    /// Flat water-surface elevation, m: h = max(0, level − z). Added to `file` depths
    /// where those are zero.
    pub water_level: Option<f64>,
    /// Member of a stacked `file` (leading `member` dimension) to start from.
    pub member: Option<usize>,
}

/// Flood-run configuration as written in `flood.json` (all fields optional).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FloodConfig {
    /// Model time at the start, s (default: the initial file's `model_time` attribute,
    /// else 0). Hydrographs, snapshots and gauge samples use this absolute time axis, so a
    /// run continued from a saved state carries on where the last one stopped.
    pub start_time: Option<f64>,
    /// Model time at the end, s (the simulated duration when the run starts at 0).
    pub end_time: f64,
    /// Interval between snapshots of h, u, v, s (the initial and final states are always
    /// written).
    pub output_interval: Option<f64>,
    /// Additional snapshot times, s.
    pub output_times: Vec<f64>,
    /// Interval between gauge samples, s.
    pub gauge_interval: f64,
    /// Gauge locations.
    pub gauges: Vec<GaugeConfig>,
    /// Manning roughness, s m^(-1/3).
    pub manning_n: f64,
    /// Factor on the inflow hydrograph's discharge (an uncertain parameter of a twin).
    pub inflow_scale: f64,
    /// Uniform rainfall, mm/h.
    pub rainfall_mm_per_h: f64,
    /// Courant number.
    pub cfl: f64,
    /// Largest time step, s.
    pub max_dt: f64,
    /// Depth under which a cell is dry, m.
    pub dry_depth: f64,
    /// Depth at which a cell counts as flooded for the arrival-time map, m.
    pub arrival_depth: f64,
    /// Boundary condition of each side.
    pub boundaries: Boundaries,
    /// Optional inflow hydrograph.
    pub inflow: Option<InflowConfig>,
    /// Initial water.
    pub initial: InitialConfig,
    /// Name of the bed-elevation variable in the DEM file.
    pub dem_variable: String,
    /// Output format; by default chosen from the output file's extension.
    pub format: Option<Format>,
    /// Chunking and compression of the outputs.
    pub compression: Compression,
}

impl Default for FloodConfig {
    fn default() -> Self {
        let p = Params::default();
        Self {
            start_time: None,
            end_time: 3600.0,
            output_interval: None,
            output_times: Vec::new(),
            gauge_interval: 60.0,
            gauges: Vec::new(),
            manning_n: 0.03,
            inflow_scale: 1.0,
            rainfall_mm_per_h: 0.0,
            cfl: p.cfl,
            max_dt: p.max_dt,
            dry_depth: p.dry_depth,
            arrival_depth: p.arrival_depth,
            boundaries: Boundaries::default(),
            inflow: None,
            initial: InitialConfig::default(),
            dem_variable: twinflow_contract::datasets::BED_ELEVATION.into(),
            format: None,
            compression: Compression::default(),
        }
    }
}

/// A configuration problem, with the JSON path of the offending field.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("`{field}`: {message}")]
pub struct ConfigIssue {
    /// Field path, e.g. `inflow.hydrograph[2]`.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

/// The validated schedule and parameters of a run.
#[derive(Debug, Clone, PartialEq)]
pub struct RunPlan {
    /// Solver parameters.
    pub params: Params,
    /// Simulated duration, s.
    pub end_time: f64,
    /// Model time at the start, s.
    pub start_time: f64,
    /// Snapshot times, ascending, starting with the start time.
    pub snapshot_times: Vec<f64>,
    /// Gauge sample times, ascending, starting with the start time.
    pub gauge_times: Vec<f64>,
    /// Gauges with their cell `(row, column)`.
    pub gauges: Vec<(GaugeConfig, (usize, usize))>,
}

/// Most snapshot or gauge sample times a run may ask for (`output_interval`,
/// `gauge_interval`): the times are held in memory, and a million snapshots of even a tiny
/// grid is far more than any output file holds.
pub const MAX_SAMPLES: u64 = 1_000_000;

impl FloodConfig {
    /// Checks the configuration against the grid, starting at `start_time` (or 0);
    /// reports every problem at once.
    pub fn validate(&self, grid: &Grid) -> Result<RunPlan, Vec<ConfigIssue>> {
        self.validate_from(grid, self.start_time.unwrap_or(0.0))
    }

    /// Like [`FloodConfig::validate`], starting at model time `start` (a hot start's).
    pub fn validate_from(&self, grid: &Grid, start: f64) -> Result<RunPlan, Vec<ConfigIssue>> {
        let mut issues = Vec::new();
        let mut bad = |field: &str, message: String| issues.push(ConfigIssue { field: field.into(), message });
        let positive = |v: f64| v.is_finite() && v > 0.0;
        if !start.is_finite() {
            bad("start_time", format!("must be finite, got {start}"));
        } else if !(self.end_time.is_finite() && self.end_time > start) {
            let what = if start == 0.0 { "0 s".to_string() } else { format!("the start time {start} s") };
            bad("end_time", format!("must be > {what}, got {}", self.end_time));
        }
        if !(self.inflow_scale.is_finite() && self.inflow_scale >= 0.0) {
            bad("inflow_scale", format!("must be >= 0, got {}", self.inflow_scale));
        }
        if let Some(dt) = self.output_interval.filter(|&dt| !positive(dt)) {
            bad("output_interval", format!("must be > 0 s, got {dt}"));
        }
        for (k, &t) in self.output_times.iter().enumerate() {
            if !(t.is_finite() && t >= start.min(0.0) && t <= self.end_time) {
                bad(&format!("output_times[{k}]"), format!("must lie in [0, end_time], got {t}"));
            }
        }
        if !positive(self.gauge_interval) {
            bad("gauge_interval", format!("must be > 0 s, got {}", self.gauge_interval));
        }
        // The sample times are a list in memory: refuse an interval that would make more
        // of them than any run writes before allocating them.
        let span = self.end_time - start;
        if start.is_finite() && span.is_finite() && span > 0.0 {
            let too_many = |dt: f64| positive(dt) && span / dt > MAX_SAMPLES as f64;
            if let Some(dt) = self.output_interval.filter(|&dt| too_many(dt)) {
                bad(
                    "output_interval",
                    format!(
                        "{dt} s gives {:.3e} snapshots over {span} s; at most {MAX_SAMPLES} are allowed",
                        span / dt
                    ),
                );
            }
            if !self.gauges.is_empty() && too_many(self.gauge_interval) {
                let dt = self.gauge_interval;
                bad(
                    "gauge_interval",
                    format!(
                        "{dt} s gives {:.3e} gauge samples over {span} s; at most {MAX_SAMPLES} are allowed",
                        span / dt
                    ),
                );
            }
        }
        if !(self.manning_n.is_finite() && self.manning_n >= 0.0) {
            bad("manning_n", format!("must be >= 0, got {}", self.manning_n));
        }
        if !(self.rainfall_mm_per_h.is_finite() && self.rainfall_mm_per_h >= 0.0) {
            bad("rainfall_mm_per_h", format!("must be >= 0, got {}", self.rainfall_mm_per_h));
        }
        if !(self.cfl > 0.0 && self.cfl <= 0.5) {
            bad("cfl", format!("must be in (0, 0.5] for non-negative depths in 2D, got {}", self.cfl));
        }
        if !positive(self.max_dt) {
            bad("max_dt", format!("must be > 0 s, got {}", self.max_dt));
        }
        if !positive(self.dry_depth) {
            bad("dry_depth", format!("must be > 0 m, got {}", self.dry_depth));
        }
        if self.arrival_depth.is_nan() || self.arrival_depth < self.dry_depth {
            bad("arrival_depth", format!("must be >= dry_depth, got {}", self.arrival_depth));
        }
        if let Some(level) = self.config_level_issue() {
            bad("initial.water_level", level);
        }
        let mut gauges = Vec::new();
        for (k, g) in self.gauges.iter().enumerate() {
            match grid.cell_at(g.x, g.y) {
                Some(cell) => gauges.push((g.clone(), cell)),
                None => {
                    bad(&format!("gauges[{k}]"), format!("`{}` at ({}, {}) lies outside the grid", g.name, g.x, g.y))
                }
            }
        }
        let inflow = self.inflow.as_ref().and_then(|f| match inflow_cells(f, grid) {
            Err(message) => {
                bad("inflow", message);
                None
            }
            Ok(cells) => match Hydrograph::new(f.hydrograph.iter().map(|p| (p[0], p[1] * self.inflow_scale)).collect())
            {
                Ok(hydrograph) => Some(Inflow { side: f.side, cells, hydrograph }),
                Err(e) => {
                    bad("inflow.hydrograph", e.to_string());
                    None
                }
            },
        });
        if !issues.is_empty() {
            return Err(issues);
        }

        let end = self.end_time;
        // Multiples of `dt` after `start`, up to `end` (on the absolute time axis, so the
        // samples of consecutive restarts line up).
        let multiples = |dt: f64| {
            let tol = 1e-9 * end.abs().max(1.0);
            let first = ((start + tol) / dt).floor() as i64 + 1;
            let last = ((end + tol) / dt).floor() as i64;
            (first..=last).map(move |k| (k as f64 * dt).min(end))
        };
        let mut snapshot_times = vec![start];
        if let Some(dt) = self.output_interval {
            snapshot_times.extend(multiples(dt));
        }
        snapshot_times.extend(self.output_times.iter().copied().filter(|&t| t >= start));
        snapshot_times.push(end);
        snapshot_times.sort_by(f64::total_cmp);
        snapshot_times.dedup_by(|a, b| (*a - *b).abs() <= 1e-9 * end.abs().max(1.0));
        let gauge_times = if self.gauges.is_empty() {
            Vec::new()
        } else {
            std::iter::once(start).chain(multiples(self.gauge_interval)).collect()
        };
        let params = Params {
            manning_n: self.manning_n,
            rainfall: mm_per_hour(self.rainfall_mm_per_h),
            cfl: self.cfl,
            max_dt: self.max_dt,
            dry_depth: self.dry_depth,
            arrival_depth: self.arrival_depth,
            boundaries: self.boundaries,
            inflow,
            ..Params::default()
        };
        Ok(RunPlan { params, start_time: start, end_time: end, snapshot_times, gauge_times, gauges })
    }

    fn config_level_issue(&self) -> Option<String> {
        self.initial.water_level.filter(|l| !l.is_finite()).map(|l| format!("must be finite, got {l}"))
    }
}

/// Boundary cells of an inflow segment (indices along the side).
fn inflow_cells(f: &InflowConfig, grid: &Grid) -> Result<std::ops::Range<usize>, String> {
    let (n, coord): (usize, &dyn Fn(usize) -> f64) = match f.side {
        Side::West | Side::East => (grid.ny, &|j| grid.y(j)),
        Side::South | Side::North => (grid.nx, &|i| grid.x(i)),
    };
    let inside: Vec<usize> = (0..n).filter(|&k| coord(k) >= f.from && coord(k) <= f.to).collect();
    match (inside.first(), inside.last()) {
        (Some(&a), Some(&b)) => Ok(a..b + 1),
        _ => Err(format!(
            "segment [{}, {}] m contains no cell centre on the {:?} side; hint: cells are {} m wide",
            f.from,
            f.to,
            f.side,
            if matches!(f.side, Side::West | Side::East) { grid.dy } else { grid.dx }
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grid() -> Grid {
        Grid { nx: 10, ny: 8, dx: 5.0, dy: 5.0, x0: 2.5, y0: 2.5 }
    }

    #[test]
    fn an_interval_giving_more_samples_than_allowed_is_refused_before_allocating() {
        // Found by the flood_config fuzz target: 10^15 snapshot times aborted the process.
        let cfg: FloodConfig =
            serde_json::from_str(r#"{"end_time": 1e12, "output_interval": 0.001, "gauges": [{"name": "g", "x": 7, "y": 7}], "gauge_interval": 1e-6}"#)
                .unwrap();
        let issues = cfg.validate(&grid()).unwrap_err();
        let fields: Vec<&str> = issues.iter().map(|i| i.field.as_str()).collect();
        assert_eq!(fields, ["output_interval", "gauge_interval"]);
        assert!(
            issues[0].message.contains("1.000e15 snapshots") && issues[0].message.contains("at most 1000000"),
            "{}",
            issues[0].message
        );
        // Exactly at the limit is allowed.
        let cfg: FloodConfig = serde_json::from_str(r#"{"end_time": 1000000, "output_interval": 1}"#).unwrap();
        assert_eq!(cfg.validate(&grid()).unwrap().snapshot_times.len(), 1_000_001);
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let err = serde_json::from_str::<FloodConfig>(r#"{"end_tme": 5}"#).unwrap_err();
        assert!(err.to_string().contains("unknown field `end_tme`"), "{err}");
    }

    #[test]
    fn all_issues_are_reported() {
        let cfg: FloodConfig = serde_json::from_str(
            r#"{"end_time": -1, "cfl": 0.9, "gauges": [{"name": "far", "x": 500, "y": 1}],
                "inflow": {"side": "west", "from": 100, "to": 120, "hydrograph": [[0, 1]]}}"#,
        )
        .unwrap();
        let issues = cfg.validate(&grid()).unwrap_err();
        let fields: Vec<&str> = issues.iter().map(|i| i.field.as_str()).collect();
        assert_eq!(fields, ["end_time", "cfl", "gauges[0]", "inflow"]);
    }

    #[test]
    fn schedule_includes_start_and_end() {
        let cfg: FloodConfig =
            serde_json::from_str(r#"{"end_time": 100, "output_interval": 30, "output_times": [45], "gauges": [{"name": "g", "x": 7, "y": 7}], "gauge_interval": 50}"#)
                .unwrap();
        let plan = cfg.validate(&grid()).unwrap();
        assert_eq!(plan.snapshot_times, [0.0, 30.0, 45.0, 60.0, 90.0, 100.0]);
        assert_eq!(plan.gauge_times, [0.0, 50.0, 100.0]);
        assert_eq!(plan.gauges[0].1, (1, 1));
    }

    #[test]
    fn a_restart_keeps_to_the_absolute_time_axis() {
        let cfg: FloodConfig = serde_json::from_str(
            r#"{"end_time": 1200, "output_interval": 600, "gauges": [{"name": "g", "x": 7, "y": 7}], "gauge_interval": 250, "inflow_scale": 2,
                "inflow": {"side": "west", "from": 0, "to": 40, "hydrograph": [[0, 0], [1000, 10]]}}"#,
        )
        .unwrap();
        let plan = cfg.validate_from(&grid(), 650.0).unwrap();
        assert_eq!(plan.start_time, 650.0);
        assert_eq!(plan.snapshot_times, [650.0, 1200.0]);
        assert_eq!(plan.gauge_times, [650.0, 750.0, 1000.0]);
        // The hydrograph is scaled by `inflow_scale` and read at model time.
        assert_eq!(plan.params.inflow.unwrap().hydrograph.at(500.0), 10.0);
        let issues = cfg.validate_from(&grid(), 1200.0).unwrap_err();
        assert_eq!(issues[0].field, "end_time");
        assert!(issues[0].message.contains("start time 1200"), "{}", issues[0].message);
    }
}
