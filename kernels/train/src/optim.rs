//! Adam with decoupled weight decay (AdamW).
//!
//! Kingma & Ba 2015 (arXiv:1412.6980), Algorithm 1, with Loshchilov & Hutter 2019
//! (arXiv:1711.05101) weight decay: for step `t = 1, 2, …` and gradient `g`,
//! `m ← β₁ m + (1 − β₁) g`, `v ← β₂ v + (1 − β₂) g²`, `m̂ = m / (1 − β₁ᵗ)`,
//! `v̂ = v / (1 − β₂ᵗ)`, `θ ← θ − η (m̂ / (√v̂ + ε) + λ θ)` (λ on weights only).
//! β₁ = 0.9, β₂ = 0.999, ε = 1e-8 (the paper's defaults). Written out here because it is a
//! dozen lines and its state must be checkpointed exactly.

/// β₁: decay of the first-moment estimate.
pub const BETA1: f64 = 0.9;
/// β₂: decay of the second-moment estimate.
pub const BETA2: f64 = 0.999;
/// ε: added to √v̂.
pub const EPSILON: f64 = 1e-8;

/// Adam's state: moment estimates and the step count.
#[derive(Debug, Clone, PartialEq)]
pub struct Adam {
    /// First-moment estimates, one per parameter.
    pub m: Vec<f64>,
    /// Second-moment estimates, one per parameter.
    pub v: Vec<f64>,
    /// Steps taken.
    pub t: u64,
}

impl Adam {
    /// Fresh state for `n` parameters.
    pub fn new(n: usize) -> Self {
        Self { m: vec![0.0; n], v: vec![0.0; n], t: 0 }
    }

    /// One step with gradient `grad` and learning rate `lr`; `decay[k]` says whether
    /// parameter `k` is decayed by `weight_decay`.
    pub fn step(&mut self, params: &mut [f64], grad: &[f64], lr: f64, weight_decay: f64, decay: &[bool]) {
        self.t += 1;
        let t = i32::try_from(self.t).unwrap_or(i32::MAX);
        let (c1, c2) = (1.0 - BETA1.powi(t), 1.0 - BETA2.powi(t));
        for k in 0..params.len() {
            let g = grad[k];
            self.m[k] = BETA1 * self.m[k] + (1.0 - BETA1) * g;
            self.v[k] = BETA2 * self.v[k] + (1.0 - BETA2) * g * g;
            let update = (self.m[k] / c1) / ((self.v[k] / c2).sqrt() + EPSILON);
            let wd = if decay[k] { weight_decay * params[k] } else { 0.0 };
            params[k] -= lr * (update + wd);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_step_moves_by_the_learning_rate() {
        // With bias correction the first update is lr · g/|g| (up to ε).
        let mut adam = Adam::new(2);
        let mut p = [1.0, -1.0];
        adam.step(&mut p, &[0.5, -2.0], 0.1, 0.0, &[true, true]);
        assert!((p[0] - 0.9).abs() < 1e-7 && (p[1] + 0.9).abs() < 1e-7, "{p:?}");
        assert_eq!(adam.t, 1);
    }

    #[test]
    fn minimises_a_quadratic() {
        let mut adam = Adam::new(1);
        let mut p = [5.0];
        for _ in 0..2000 {
            let g = [2.0 * (p[0] - 3.0)];
            adam.step(&mut p, &g, 0.05, 0.0, &[false]);
        }
        assert!((p[0] - 3.0).abs() < 1e-3, "{p:?}");
    }
}
