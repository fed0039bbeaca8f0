//! Localization: Gaspari–Cohn tapering and the distances it is applied to.
//!
//! Gaspari & Cohn (1999, QJRMS 125:723, eq. 4.10), fifth-order piecewise rational function
//! with half-width c (compact support 2c), r = d/c:
//! - ρ = −¼r⁵ + ½r⁴ + ⅝r³ − 5/3 r² + 1 for r ≤ 1;
//! - ρ = 1/12 r⁵ − ½r⁴ + ⅝r³ + 5/3 r² − 5r + 4 − ⅔/r for 1 < r ≤ 2;
//! - ρ = 0 beyond.
//!
//! DAPPER states a *localization radius* L at which the taper is meant to be about e^(−½)
//! and uses c = 1.82 L (ρ(L) = 0.634) ([`half_width_from_dapper_radius`]). Distances are Euclidean in the units
//! of the locations (grid points for Lorenz-96, metres for a flood grid), optionally
//! periodic along each axis.

/// DAPPER's factor between its localization radius and the Gaspari–Cohn half-width
/// (`dapper/tools/localization.py`, `dist2coeff`, tag `GC`: `R = radius * 1.82`).
pub const DAPPER_GC_FACTOR: f64 = 1.82;

/// The Gaspari–Cohn half-width c for DAPPER's localization radius `radius`.
pub fn half_width_from_dapper_radius(radius: f64) -> f64 {
    DAPPER_GC_FACTOR * radius
}

/// Gaspari–Cohn taper at distance `d ≥ 0` for half-width `c > 0`.
pub fn gaspari_cohn(d: f64, c: f64) -> f64 {
    let r = d.abs() / c;
    if r <= 1.0 {
        let r2 = r * r;
        let r3 = r2 * r;
        1.0 + r2 * (-r3 / 4.0 + r2 / 2.0) + r3 * (5.0 / 8.0) - r2 * (5.0 / 3.0)
    } else if r <= 2.0 {
        let r2 = r * r;
        let r3 = r2 * r;
        r2 * (r3 / 12.0 - r2 / 2.0) + r3 * (5.0 / 8.0) + r2 * (5.0 / 3.0) - 5.0 * r + 4.0 - 2.0 / 3.0 / r
    } else {
        0.0
    }
}

/// How far apart two locations are: Euclidean, each axis optionally periodic.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Geometry {
    /// Period of each axis (`None`: not periodic).
    pub period: [Option<f64>; 2],
}

impl Geometry {
    /// The distance between `a` and `b`.
    pub fn distance(&self, a: [f64; 2], b: [f64; 2]) -> f64 {
        let mut s = 0.0;
        for k in 0..2 {
            let mut d = (a[k] - b[k]).abs();
            if let Some(p) = self.period[k] {
                d = d.rem_euclid(p);
                d = d.min(p - d);
            }
            s += d * d;
        }
        s.sqrt()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaspari_cohn_at_known_points() {
        let c = 2.0;
        // r = 0 → 1; r = 1 → −¼ + ½ + ⅝ − 5/3 + 1 = 5/24; r = 2 → 0 (continuous).
        assert_eq!(gaspari_cohn(0.0, c), 1.0);
        assert!((gaspari_cohn(2.0, c) - 5.0 / 24.0).abs() < 1e-15);
        assert!(gaspari_cohn(4.0, c).abs() < 1e-14);
        assert_eq!(gaspari_cohn(4.0001, c), 0.0);
        // r = ½: −1/128 + 1/32 + 5/64 − 5/12 + 1 = 0.6848958…
        let half = -1.0 / 128.0 + 1.0 / 32.0 + 5.0 / 64.0 - 5.0 / 12.0 + 1.0;
        assert!((gaspari_cohn(1.0, c) - half).abs() < 1e-15);
        // r = 3/2, outer branch: 1/12·7.59375 − ½·5.0625 + ⅝·3.375 + 5/3·2.25 − 7.5 + 4 − 4/9
        let r: f64 = 1.5;
        let outer = r.powi(5) / 12.0 - r.powi(4) / 2.0 + 5.0 / 8.0 * r.powi(3) + 5.0 / 3.0 * r * r - 5.0 * r + 4.0
            - 2.0 / 3.0 / r;
        assert!((gaspari_cohn(3.0, c) - outer).abs() < 1e-15);
        assert!((outer - 0.016_493_055_555_555_6).abs() < 1e-12);
        // Continuity at r = 1 from above.
        assert!((gaspari_cohn(2.0 + 1e-9, c) - 5.0 / 24.0).abs() < 1e-8);
        // DAPPER's radius: ρ(L) = 0.634 with c = 1.82 L, close to its intended e^(−½) = 0.607.
        let l = 4.0;
        assert!((gaspari_cohn(l, half_width_from_dapper_radius(l)) - 0.633_564_382_921_294_5).abs() < 1e-12);
    }

    #[test]
    fn periodic_distance_wraps() {
        let g = Geometry { period: [Some(40.0), None] };
        assert_eq!(g.distance([1.0, 0.0], [39.0, 0.0]), 2.0);
        assert_eq!(g.distance([0.0, 0.0], [20.0, 0.0]), 20.0);
        assert_eq!(Geometry::default().distance([0.0, 0.0], [3.0, 4.0]), 5.0);
    }
}
