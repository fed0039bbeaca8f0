//! Detector conditions that change over a run: temperature, gain, dead cells.
//!
//! The event id is the run clock. The temperature follows a piecewise-linear curve of the
//! event id (constant before the first and after the last point) and sets the gain of every
//! cell in that event, `gain = 1 + k (T − T_ref)` (k ≈ −2 %/K is the order of the liquid-argon
//! signal's temperature dependence through the drift velocity). Dead cells are drawn once
//! per run from the seed on a stream of their own ([`DEAD_CELL_STREAM`]), so every rank and
//! every rerun sees the same map, and listed cells are added to them.

use rand::{RngExt as _, SeedableRng as _};
use rand_chacha::ChaCha8Rng;

/// Random stream of the dead-cell map; event ids stay far below it
/// ([`super::config::MAX_EVENTS`]), so no event shares it.
pub const DEAD_CELL_STREAM: u64 = u64::MAX;

/// What is wrong with the points of a [`TemperatureCurve`].
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CurveError {
    /// An event id is negative or not finite.
    #[error("point {point}: the event id must be >= 0, got {value}")]
    EventId {
        /// Index of the point.
        point: usize,
        /// The event id given.
        value: f64,
    },
    /// A temperature is not positive.
    #[error("point {point}: the temperature must be > 0 K, got {value}")]
    Temperature {
        /// Index of the point.
        point: usize,
        /// The temperature given, K.
        value: f64,
    },
    /// Event ids do not increase.
    #[error("point {point}: event ids must increase, got {value} after {previous}")]
    Order {
        /// Index of the point.
        point: usize,
        /// Its event id.
        value: f64,
        /// The event id of the point before.
        previous: f64,
    },
}

/// Temperature as a function of the event id.
#[derive(Debug, Clone, PartialEq)]
pub struct TemperatureCurve {
    points: Vec<(f64, f64)>,
}

impl TemperatureCurve {
    /// A curve through `[event id, K]` points with strictly increasing event ids; no points
    /// means the constant `reference` temperature.
    pub fn new(points: &[[f64; 2]], reference: f64) -> Result<Self, CurveError> {
        if points.is_empty() {
            return Ok(Self { points: vec![(0.0, reference)] });
        }
        for (k, p) in points.iter().enumerate() {
            if !(p[0].is_finite() && p[0] >= 0.0) {
                return Err(CurveError::EventId { point: k, value: p[0] });
            }
            if !(p[1].is_finite() && p[1] > 0.0) {
                return Err(CurveError::Temperature { point: k, value: p[1] });
            }
            if k > 0 && p[0] <= points[k - 1][0] {
                return Err(CurveError::Order { point: k, value: p[0], previous: points[k - 1][0] });
            }
        }
        Ok(Self { points: points.iter().map(|p| (p[0], p[1])).collect() })
    }

    /// Temperature at `event`, K.
    pub fn at(&self, event: u64) -> f64 {
        let t = event as f64;
        let p = &self.points;
        if t <= p[0].0 {
            return p[0].1;
        }
        match p.iter().position(|&(e, _)| e >= t) {
            None => p[p.len() - 1].1,
            Some(k) => {
                let ((e0, v0), (e1, v1)) = (p[k - 1], p[k]);
                v0 + (v1 - v0) * (t - e0) / (e1 - e0)
            }
        }
    }

    /// Lowest and highest temperature of the curve, K.
    pub fn range(&self) -> (f64, f64) {
        self.points.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &(_, v)| (lo.min(v), hi.max(v)))
    }
}

/// Conditions of a run.
#[derive(Debug, Clone, PartialEq)]
pub struct Conditions {
    /// Temperature curve.
    pub curve: TemperatureCurve,
    /// Temperature of unit gain, K.
    pub reference_k: f64,
    /// Relative gain change per kelvin.
    pub gain_per_kelvin: f64,
    /// Dead-cell map `[layer, y, x]` row-major, 1 = dead.
    pub dead: Vec<u8>,
}

impl Conditions {
    /// Draws the dead-cell map (`fraction` of the cells, from `seed`) and adds `listed`
    /// (already checked against `shape`).
    pub fn new(
        curve: TemperatureCurve,
        reference_k: f64,
        gain_per_kelvin: f64,
        shape: [usize; 3],
        fraction: f64,
        listed: &[[usize; 3]],
        seed: u64,
    ) -> Self {
        let n = shape.iter().product();
        let mut dead = vec![0_u8; n];
        if fraction > 0.0 {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            rng.set_stream(DEAD_CELL_STREAM);
            for d in &mut dead {
                *d = u8::from(rng.random::<f64>() < fraction);
            }
        }
        for &[l, y, x] in listed {
            dead[(l * shape[1] + y) * shape[2] + x] = 1;
        }
        Self { curve, reference_k, gain_per_kelvin, dead }
    }

    /// Temperature during `event`, K.
    pub fn temperature(&self, event: u64) -> f64 {
        self.curve.at(event)
    }

    /// Gain during `event`.
    pub fn gain(&self, event: u64) -> f64 {
        1.0 + self.gain_per_kelvin * (self.temperature(event) - self.reference_k)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temperature_is_piecewise_linear_and_flat_outside() {
        let c = TemperatureCurve::new(&[[10.0, 300.0], [20.0, 310.0], [40.0, 300.0]], 0.0).unwrap();
        assert_eq!(c.at(0), 300.0);
        assert_eq!(c.at(15), 305.0);
        assert_eq!(c.at(20), 310.0);
        assert_eq!(c.at(30), 305.0);
        assert_eq!(c.at(1000), 300.0);
        assert_eq!(c.range(), (300.0, 310.0));
        assert_eq!(TemperatureCurve::new(&[], 88.0).unwrap().at(7), 88.0);
        assert!(TemperatureCurve::new(&[[1.0, 300.0], [1.0, 301.0]], 0.0).is_err());
        assert!(TemperatureCurve::new(&[[1.0, -3.0]], 0.0).is_err());
    }

    #[test]
    fn dead_map_depends_on_the_seed_only() {
        let curve = TemperatureCurve::new(&[], 300.0).unwrap();
        let a = Conditions::new(curve.clone(), 300.0, -0.02, [10, 10, 10], 0.1, &[[9, 9, 9]], 5);
        let b = Conditions::new(curve.clone(), 300.0, -0.02, [10, 10, 10], 0.1, &[[9, 9, 9]], 5);
        let c = Conditions::new(curve, 300.0, -0.02, [10, 10, 10], 0.1, &[], 6);
        assert_eq!(a.dead, b.dead);
        assert_ne!(a.dead, c.dead);
        assert_eq!(a.dead[999], 1);
        let n = a.dead.iter().filter(|&&d| d == 1).count();
        // Binomial(1000, 0.1): mean 100, σ ≈ 9.5.
        assert!((60..=140).contains(&n), "{n}");
        assert_eq!(a.gain(3), 1.0);
    }
}
