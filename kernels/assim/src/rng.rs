//! Counter-based random numbers keyed by (seed, purpose, cycle, member, index).
//!
//! Every standard normal deviate the assimilation draws is a pure function of its key:
//! ChaCha8 keyed by the seed and the [`Purpose`], stream `cycle·2³² + member`, word
//! position `4·index`; two 64-bit words give one deviate by Box–Muller. Perturbed
//! observations therefore do not depend on how many ranks run, in which order members or
//! observations are visited, or which other draws were made before.

use rand::{Rng as _, SeedableRng as _};
use rand_chacha::ChaCha8Rng;

/// What a draw is for: each purpose has its own ChaCha key, so streams never overlap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Purpose {
    /// Perturbations of the observations in the stochastic EnKF.
    ObservationPerturbation = 1,
    /// Observation errors of a synthetic (twin) experiment.
    ObservationError = 2,
    /// Initial conditions of the truth of a twin experiment.
    Truth = 3,
    /// Initial ensemble perturbations.
    InitialEnsemble = 4,
    /// Noise of the synthetic gauge readings delivered by `twin-kernel sensor`.
    SensorNoise = 5,
}

/// The key of one deviate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Key {
    /// User seed.
    pub seed: u64,
    /// What the draw is for.
    pub purpose: Purpose,
    /// Assimilation cycle (time index).
    pub cycle: u32,
    /// Ensemble member.
    pub member: u32,
}

impl Key {
    fn rng(&self) -> ChaCha8Rng {
        let mut key = [0_u8; 32];
        key[..8].copy_from_slice(&self.seed.to_le_bytes());
        key[8] = self.purpose as u8;
        let mut rng = ChaCha8Rng::from_seed(key);
        rng.set_stream((u64::from(self.cycle) << 32) | u64::from(self.member));
        rng
    }

    /// The standard normal deviate number `index` of this key.
    pub fn normal(&self, index: u64) -> f64 {
        let mut rng = self.rng();
        rng.set_word_pos(u128::from(index) * 4);
        box_muller(rng.next_u64(), rng.next_u64())
    }

    /// Deviates `first..first + out.len()` of this key (the same values as [`Key::normal`]).
    pub fn fill_normal(&self, first: u64, out: &mut [f64]) {
        let mut rng = self.rng();
        rng.set_word_pos(u128::from(first) * 4);
        for v in out {
            *v = box_muller(rng.next_u64(), rng.next_u64());
        }
    }
}

/// One N(0, 1) deviate from two uniform 64-bit words (Box–Muller, cosine branch).
fn box_muller(a: u64, b: u64) -> f64 {
    const SCALE: f64 = 1.0 / (1_u64 << 53) as f64;
    // u1 in (0, 1] so the logarithm is finite; u2 in [0, 1).
    let u1 = ((a >> 11) + 1) as f64 * SCALE;
    let u2 = (b >> 11) as f64 * SCALE;
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_depend_only_on_their_key() {
        let k = Key { seed: 7, purpose: Purpose::ObservationPerturbation, cycle: 3, member: 5 };
        let mut block = [0.0; 10];
        k.fill_normal(0, &mut block);
        for (i, v) in block.iter().enumerate().rev() {
            assert_eq!(k.normal(i as u64).to_bits(), v.to_bits());
        }
        let other = Key { member: 6, ..k };
        assert_ne!(other.normal(0), k.normal(0));
    }

    #[test]
    fn deviates_are_standard_normal() {
        let k = Key { seed: 1, purpose: Purpose::Truth, cycle: 0, member: 0 };
        let mut v = vec![0.0; 200_000];
        k.fill_normal(0, &mut v);
        let n = v.len() as f64;
        let mean = v.iter().sum::<f64>() / n;
        let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
        // Standard errors: 1/√n ≈ 0.0022 for the mean, √(2/n) ≈ 0.0032 for the variance.
        assert!(mean.abs() < 0.01, "mean {mean}");
        assert!((var - 1.0).abs() < 0.015, "variance {var}");
    }
}
