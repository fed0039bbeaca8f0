//! Synthetic terrain: a valley closed by a breached dam, so examples and tests need no
//! downloaded DEM.
//!
//! The valley runs west → east with a longitudinal slope and a parabolic cross-section.
//! A dam (ridge) crosses it at 30 % of its length, with a breach in the middle; upstream of
//! it a reservoir is filled to 1 m below the crest. Four gauges are suggested: one in the
//! reservoir and three along the valley floor downstream.

use ndarray::Array2;

use twinflow_exchange::Coords;
use twinflow_flood::{Boundaries, BoundaryKind, FloodConfig, GaugeConfig, InflowConfig, InitialConfig, Side};

/// Shape of the synthetic valley.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Valley {
    /// Cells along x (down the valley).
    pub nx: usize,
    /// Cells along y (across).
    pub ny: usize,
    /// Cell size, m.
    pub dx: f64,
    /// Longitudinal bed slope (m/m).
    pub slope: f64,
    /// Height of the valley sides above the floor, m.
    pub side_height: f64,
    /// Height of the dam crest above the valley floor, m.
    pub dam_height: f64,
    /// Peak discharge of an inflow hydrograph into the reservoir through the west side,
    /// m³ s⁻¹ (`None`: no inflow). The hydrograph rises linearly to the peak at a quarter of
    /// the run and recedes to a quarter of it at the end.
    pub inflow_peak: Option<f64>,
    /// Simulated duration of the suggested configuration, s (`None`: long enough for the
    /// dam-break front to cross the valley).
    pub end_time: Option<f64>,
}

impl Default for Valley {
    fn default() -> Self {
        Self {
            nx: 200,
            ny: 100,
            dx: 10.0,
            slope: 0.002,
            side_height: 12.0,
            dam_height: 8.0,
            inflow_peak: None,
            end_time: None,
        }
    }
}

/// A generated terrain with its initial water and a suggested configuration.
#[derive(Debug, Clone)]
pub struct Terrain {
    /// Cell-centre coordinates, m.
    pub coords: Coords,
    /// Bed elevation `[ny, nx]`, m.
    pub bed: Array2<f64>,
    /// Initial depth `[ny, nx]` (the reservoir), m.
    pub depth: Array2<f64>,
    /// A flood configuration for this terrain (gauges, boundaries, times).
    pub config: FloodConfig,
}

impl Valley {
    /// Builds the terrain.
    pub fn generate(&self) -> Terrain {
        let (nx, ny, dx) = (self.nx, self.ny, self.dx);
        let (lx, ly) = (nx as f64 * dx, ny as f64 * dx);
        let x: Vec<f64> = (0..nx).map(|i| (i as f64 + 0.5) * dx).collect();
        let y: Vec<f64> = (0..ny).map(|j| (j as f64 + 0.5) * dx).collect();
        let yc = 0.5 * ly;
        let x_dam = 0.3 * lx;
        let dam_half_width = (1.5 * dx).max(0.01 * lx);
        let breach_half_width = 0.08 * ly;
        let floor = |x: f64| self.slope * (lx - x);
        let bed = Array2::from_shape_fn((ny, nx), |(j, i)| {
            let across = ((y[j] - yc) / (0.5 * ly)).powi(2);
            let mut z = floor(x[i]) + self.side_height * across;
            if (x[i] - x_dam).abs() <= dam_half_width && (y[j] - yc).abs() > breach_half_width {
                z = z.max(floor(x_dam) + self.dam_height);
            }
            z
        });
        let level = floor(x_dam) + self.dam_height - 1.0;
        let depth = Array2::from_shape_fn((ny, nx), |(j, i)| {
            if x[i] < x_dam - dam_half_width { (level - bed[[j, i]]).max(0.0) } else { 0.0 }
        });
        let gauge = |name: &str, fx: f64| GaugeConfig { name: name.into(), x: fx * lx, y: yc };
        // Travel time scale: the front moves at about 2√(g h) with h the reservoir depth.
        let front_speed = 2.0 * (9.81 * (self.dam_height - 1.0)).sqrt();
        let end_time = self.end_time.unwrap_or_else(|| (1.2 * (lx - x_dam) / front_speed).ceil().max(10.0));
        // The inflow enters across the valley floor, where the reservoir is deepest.
        let inflow = self.inflow_peak.map(|q| InflowConfig {
            side: Side::West,
            from: yc - 0.1 * ly,
            to: yc + 0.1 * ly,
            hydrograph: vec![[0.0, 0.0], [0.25 * end_time, q], [end_time, 0.25 * q]],
        });
        let config = FloodConfig {
            end_time,
            output_interval: Some((end_time / 6.0).ceil()),
            gauge_interval: (end_time / 60.0).ceil().max(1.0),
            gauges: vec![
                gauge("reservoir", 0.15),
                gauge("downstream-1", 0.45),
                gauge("downstream-2", 0.65),
                gauge("downstream-3", 0.85),
            ],
            boundaries: Boundaries { east: BoundaryKind::Open, ..Boundaries::all(BoundaryKind::Closed) },
            initial: InitialConfig::default(),
            inflow,
            ..FloodConfig::default()
        };
        Terrain { coords: Coords { x, y }, bed, depth, config }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservoir_sits_behind_the_dam() {
        let t = Valley { nx: 60, ny: 30, ..Valley::default() }.generate();
        let wet_x: Vec<f64> =
            t.depth.indexed_iter().filter(|(_, h)| **h > 0.0).map(|((_, i), _)| t.coords.x[i]).collect();
        assert!(!wet_x.is_empty());
        assert!(wet_x.iter().all(|&x| x < 0.3 * 600.0));
        assert_eq!(t.config.gauges.len(), 4);
        assert!(t.config.inflow.is_none());
    }

    #[test]
    fn inflow_enters_the_reservoir_and_validates() {
        let v = Valley { nx: 40, ny: 24, inflow_peak: Some(30.0), ..Valley::default() };
        let t = v.generate();
        let inflow = t.config.inflow.as_ref().expect("an inflow");
        assert_eq!(inflow.side, Side::West);
        assert_eq!(inflow.hydrograph.iter().map(|p| p[1]).fold(0.0, f64::max), 30.0);
        let grid = twinflow_flood::Grid { nx: 40, ny: 24, dx: 10.0, dy: 10.0, x0: 5.0, y0: 5.0 };
        let plan = t.config.validate(&grid).expect("valid");
        assert!(plan.params.inflow.is_some());
    }
}
