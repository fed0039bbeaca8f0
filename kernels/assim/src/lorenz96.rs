//! The Lorenz-96 model (Lorenz 1996; Lorenz & Emanuel 1998).
//!
//! dx_i/dt = (x_{i+1} − x_{i−2}) x_{i−1} − x_i + F, i = 0 … n − 1, cyclic indices,
//! integrated with the classical fourth-order Runge–Kutta scheme at a fixed step dt.
//! The standard testbed: n = 40, F = 8, dt = 0.05 (one step ≈ 6 hours of "atmosphere");
//! model time is dimensionless. Tested: the tendency at known states, RK4's fourth-order
//! convergence, and (in `tests/lorenz96_filters.rs`) the climatological spread ≈ 3.6.

/// The Lorenz-96 model with its forcing and time step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Lorenz96 {
    /// Forcing F.
    pub forcing: f64,
    /// RK4 time step.
    pub dt: f64,
}

impl Default for Lorenz96 {
    /// The standard set-up: F = 8, dt = 0.05.
    fn default() -> Self {
        Self { forcing: 8.0, dt: 0.05 }
    }
}

/// The standard number of variables.
pub const STANDARD_SIZE: usize = 40;

impl Lorenz96 {
    /// The tendency dx/dt at `x` into `out` (same length, at least 4).
    pub fn tendency(&self, x: &[f64], out: &mut [f64]) {
        let n = x.len();
        for i in 0..n {
            let xp1 = x[(i + 1) % n];
            let xm1 = x[(i + n - 1) % n];
            let xm2 = x[(i + n - 2) % n];
            out[i] = (xp1 - xm2) * xm1 - x[i] + self.forcing;
        }
    }

    /// Advances `x` by `steps` RK4 steps of `dt`.
    pub fn advance(&self, x: &mut [f64], steps: usize) {
        let n = x.len();
        let mut k = [vec![0.0; n], vec![0.0; n], vec![0.0; n], vec![0.0; n]];
        let mut tmp = vec![0.0; n];
        let dt = self.dt;
        for _ in 0..steps {
            let [k1, k2, k3, k4] = &mut k;
            self.tendency(x, k1);
            for i in 0..n {
                tmp[i] = x[i] + 0.5 * dt * k1[i];
            }
            self.tendency(&tmp, k2);
            for i in 0..n {
                tmp[i] = x[i] + 0.5 * dt * k2[i];
            }
            self.tendency(&tmp, k3);
            for i in 0..n {
                tmp[i] = x[i] + dt * k3[i];
            }
            self.tendency(&tmp, k4);
            for i in 0..n {
                x[i] += dt / 6.0 * (k1[i] + 2.0 * k2[i] + 2.0 * k3[i] + k4[i]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rest_state_is_a_fixed_point_and_tendency_matches_by_hand() {
        let m = Lorenz96::default();
        let mut x = vec![8.0; 40];
        m.advance(&mut x, 10);
        assert!(x.iter().all(|&v| v == 8.0));
        let x: Vec<f64> = (0..5).map(|i| i as f64).collect();
        let mut d = vec![0.0; 5];
        m.tendency(&x, &mut d);
        // i = 0: (x1 − x3) x4 − x0 + 8 = (1 − 3)·4 − 0 + 8 = 0
        // i = 2: (x3 − x0) x1 − x2 + 8 = 3·1 − 2 + 8 = 9
        assert_eq!(d[0], 0.0);
        assert_eq!(d[2], 9.0);
    }

    #[test]
    fn rk4_converges_at_fourth_order() {
        let mut x0 = vec![8.0; 40];
        x0[19] += 0.01;
        // Spin up onto the attractor first.
        Lorenz96::default().advance(&mut x0, 400);
        let run = |dt: f64| {
            let mut x = x0.clone();
            let m = Lorenz96 { forcing: 8.0, dt };
            m.advance(&mut x, (0.4 / dt).round() as usize);
            x
        };
        let reference = run(0.05 / 64.0);
        let err = |dt: f64| run(dt).iter().zip(&reference).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
        let (e1, e2) = (err(0.02), err(0.01));
        let order = (e1 / e2).log2();
        assert!((3.6..4.4).contains(&order), "observed order {order} ({e1} → {e2})");
    }
}
