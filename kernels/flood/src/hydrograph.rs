//! Piecewise-linear inflow hydrographs Q(t).

/// Errors in a hydrograph definition.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum HydrographError {
    /// No points.
    #[error("a hydrograph needs at least one (time, discharge) point")]
    Empty,
    /// Times not strictly increasing.
    #[error("hydrograph times must increase strictly: point {index} at t = {time} s")]
    NotIncreasing {
        /// Index of the offending point.
        index: usize,
        /// Its time.
        time: f64,
    },
    /// Negative or non-finite value.
    #[error("hydrograph point {index} is invalid: discharge must be finite and >= 0, times finite")]
    BadValue {
        /// Index of the offending point.
        index: usize,
    },
}

/// Discharge Q(t) in m³ s⁻¹, linear between points and constant beyond the first and last.
#[derive(Debug, Clone, PartialEq)]
pub struct Hydrograph {
    points: Vec<(f64, f64)>,
}

impl Hydrograph {
    /// Builds a hydrograph from `(time s, discharge m³/s)` points.
    pub fn new(points: Vec<(f64, f64)>) -> Result<Self, HydrographError> {
        if points.is_empty() {
            return Err(HydrographError::Empty);
        }
        for (index, &(t, q)) in points.iter().enumerate() {
            if !t.is_finite() || !q.is_finite() || q < 0.0 {
                return Err(HydrographError::BadValue { index });
            }
            if index > 0 && t <= points[index - 1].0 {
                return Err(HydrographError::NotIncreasing { index, time: t });
            }
        }
        Ok(Self { points })
    }

    /// The points.
    pub fn points(&self) -> &[(f64, f64)] {
        &self.points
    }

    /// Q at time `t`.
    pub fn at(&self, t: f64) -> f64 {
        let p = &self.points;
        let k = p.partition_point(|&(tk, _)| tk <= t);
        if k == 0 {
            return p[0].1;
        }
        if k == p.len() {
            return p[k - 1].1;
        }
        let (t0, q0) = p[k - 1];
        let (t1, q1) = p[k];
        q0 + (q1 - q0) * (t - t0) / (t1 - t0)
    }

    /// Exact volume ∫Q dt between `t0` and `t1 ≥ t0`, m³.
    pub fn volume_between(&self, t0: f64, t1: f64) -> f64 {
        let mut volume = 0.0;
        let mut a = t0;
        // Integrate the linear pieces exactly by splitting at the points inside (t0, t1).
        let start = self.points.partition_point(|&(tk, _)| tk <= t0);
        for &(tk, _) in self.points[start..].iter().take_while(|&&(tk, _)| tk < t1) {
            volume += 0.5 * (self.at(a) + self.at(tk)) * (tk - a);
            a = tk;
        }
        volume + 0.5 * (self.at(a) + self.at(t1)) * (t1 - a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interpolates_and_clamps() {
        let h = Hydrograph::new(vec![(0.0, 0.0), (100.0, 20.0), (300.0, 0.0)]).unwrap();
        assert_eq!(h.at(-5.0), 0.0);
        assert_eq!(h.at(50.0), 10.0);
        assert_eq!(h.at(100.0), 20.0);
        assert_eq!(h.at(200.0), 10.0);
        assert_eq!(h.at(1e9), 0.0);
        assert_eq!(h.volume_between(0.0, 300.0), 3000.0);
        assert_eq!(h.volume_between(50.0, 150.0), 0.5 * (10.0 + 20.0) * 50.0 + 0.5 * (20.0 + 15.0) * 50.0);
        assert_eq!(h.volume_between(-10.0, 0.0), 0.0);
    }

    #[test]
    fn rejects_bad_points() {
        assert_eq!(Hydrograph::new(vec![]), Err(HydrographError::Empty));
        assert!(matches!(
            Hydrograph::new(vec![(0.0, 1.0), (0.0, 2.0)]),
            Err(HydrographError::NotIncreasing { index: 1, .. })
        ));
        assert!(matches!(Hydrograph::new(vec![(0.0, -1.0)]), Err(HydrographError::BadValue { index: 0 })));
    }
}
