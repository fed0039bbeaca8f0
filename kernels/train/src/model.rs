//! The network: a multilayer perceptron (a linear model when it has no hidden layer),
//! its initialisation, forward pass and the gradient of the squared error.
//!
//! Layer `l` maps `A_{l-1}` (`[m, n_{l-1}]`, one row per sample) to
//! `Z_l = A_{l-1} W_l + b_l` and `A_l = σ(Z_l)`, with `σ` the activation on hidden
//! layers and the identity on the output layer. For the squared error
//! `E = Σ_samples Σ_outputs (A_L − Y)²` back-propagation gives, with `G_L = 2 (A_L − Y)`:
//! `∂E/∂W_l = A_{l-1}ᵀ G_l`, `∂E/∂b_l = Σ_rows G_l`, `G_{l-1} = (G_l W_lᵀ) ⊙ σ'(Z_{l-1})`
//! where `relu' = [A > 0]` and `tanh' = 1 − A²`.
//!
//! The parameters live in one flat vector, layer by layer: `W_l` row-major
//! (`[n_{l-1}, n_l]`), then `b_l`. The optimizer, the gradient exchange between ranks and
//! the checkpoints all work on that vector.

use ndarray::{Array2, ArrayView1, ArrayView2, Axis};
use rand::RngExt as _;
use rand::SeedableRng as _;
use rand_chacha::ChaCha8Rng;

use super::hyper::Activation;

/// ChaCha stream of the weight initialisation.
pub const INIT_STREAM: u64 = u64::MAX;

/// Architecture of a multilayer perceptron.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mlp {
    /// Layer widths: inputs, hidden widths…, outputs.
    pub sizes: Vec<usize>,
    /// Activation of the hidden layers.
    pub activation: Activation,
}

impl Mlp {
    /// A network from `inputs` through `hidden` to `outputs`.
    pub fn new(inputs: usize, hidden: &[usize], outputs: usize, activation: Activation) -> Self {
        let mut sizes = vec![inputs];
        sizes.extend_from_slice(hidden);
        sizes.push(outputs);
        Self { sizes, activation }
    }

    /// Number of weight layers.
    pub fn layers(&self) -> usize {
        self.sizes.len() - 1
    }

    /// Number of parameters.
    pub fn n_params(&self) -> usize {
        self.sizes.windows(2).map(|w| w[0] * w[1] + w[1]).sum()
    }

    /// Offsets of `W_l` and `b_l` in the flat parameter vector.
    pub fn offsets(&self, layer: usize) -> (usize, usize) {
        let start: usize = self.sizes.windows(2).take(layer).map(|w| w[0] * w[1] + w[1]).sum();
        (start, start + self.sizes[layer] * self.sizes[layer + 1])
    }

    fn layer<'a>(&self, params: &'a [f64], l: usize) -> (ArrayView2<'a, f64>, ArrayView1<'a, f64>) {
        let (n_in, n_out) = (self.sizes[l], self.sizes[l + 1]);
        let (w, b) = self.offsets(l);
        let wv = ArrayView2::from_shape((n_in, n_out), &params[w..b]).expect("layer shape");
        (wv, ArrayView1::from(&params[b..b + n_out]))
    }

    /// Whether each parameter is a weight (decayed) rather than a bias.
    pub fn weight_mask(&self) -> Vec<bool> {
        let mut mask = Vec::with_capacity(self.n_params());
        for w in self.sizes.windows(2) {
            mask.extend(std::iter::repeat_n(true, w[0] * w[1]));
            mask.extend(std::iter::repeat_n(false, w[1]));
        }
        mask
    }

    /// Initial parameters: weights uniform in `±√(6/n_in)` (He) before ReLU, `±√(6/(n_in +
    /// n_out))` (Glorot) otherwise; biases 0. ChaCha8 keyed by `seed`, stream [`INIT_STREAM`].
    pub fn init(&self, seed: u64) -> Vec<f64> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(INIT_STREAM);
        let mut params = vec![0.0; self.n_params()];
        for l in 0..self.layers() {
            let (n_in, n_out) = (self.sizes[l] as f64, self.sizes[l + 1] as f64);
            let hidden = l + 1 < self.layers();
            let a = if hidden && self.activation == Activation::Relu {
                (6.0 / n_in).sqrt()
            } else {
                (6.0 / (n_in + n_out)).sqrt()
            };
            let (w, b) = self.offsets(l);
            for p in &mut params[w..b] {
                *p = a * (2.0 * rng.random::<f64>() - 1.0);
            }
        }
        params
    }

    fn activate(&self, z: &mut Array2<f64>) {
        match self.activation {
            Activation::Relu => z.mapv_inplace(|v| v.max(0.0)),
            Activation::Tanh => z.mapv_inplace(f64::tanh),
        }
    }

    /// Activations of every layer for the rows of `x` (`[0]` is `x` itself).
    fn activations(&self, params: &[f64], x: ArrayView2<'_, f64>) -> Vec<Array2<f64>> {
        let mut acts = vec![x.to_owned()];
        for l in 0..self.layers() {
            let (w, b) = self.layer(params, l);
            let mut z = acts[l].dot(&w);
            z += &b;
            if l + 1 < self.layers() {
                self.activate(&mut z);
            }
            acts.push(z);
        }
        acts
    }

    /// Outputs for the rows of `x` (standardised units).
    pub fn forward(&self, params: &[f64], x: ArrayView2<'_, f64>) -> Array2<f64> {
        self.activations(params, x).pop().expect("at least the input")
    }

    /// Writes into `grad` the gradient of the summed squared error over the rows of `x`
    /// against `y`, and returns that sum. Deterministic for a given shape: the same rows
    /// give the same bits on any rank.
    pub fn gradient_sum(
        &self,
        params: &[f64],
        x: ArrayView2<'_, f64>,
        y: ArrayView2<'_, f64>,
        grad: &mut [f64],
    ) -> f64 {
        let acts = self.activations(params, x);
        let out = &acts[self.layers()];
        let mut g = out - &y;
        let sse = g.iter().map(|v| v * v).sum();
        g.mapv_inplace(|v| 2.0 * v);
        for l in (0..self.layers()).rev() {
            let (w_off, b_off) = self.offsets(l);
            let dw = acts[l].t().dot(&g);
            for (dst, src) in grad[w_off..b_off].iter_mut().zip(dw.iter()) {
                *dst = *src;
            }
            let db = g.sum_axis(Axis(0));
            for (dst, src) in grad[b_off..b_off + self.sizes[l + 1]].iter_mut().zip(db.iter()) {
                *dst = *src;
            }
            if l > 0 {
                let (w, _) = self.layer(params, l);
                let mut prev = g.dot(&w.t());
                let a = &acts[l];
                match self.activation {
                    Activation::Relu => ndarray::Zip::from(&mut prev).and(a).for_each(|p, &a| {
                        if a <= 0.0 {
                            *p = 0.0;
                        }
                    }),
                    Activation::Tanh => ndarray::Zip::from(&mut prev).and(a).for_each(|p, &a| *p *= 1.0 - a * a),
                }
                g = prev;
            }
        }
        sse
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    /// Back-propagation against central finite differences, for both activations.
    #[test]
    fn gradient_matches_finite_differences() {
        for activation in [Activation::Tanh, Activation::Relu] {
            let net = Mlp::new(3, &[4, 3], 2, activation);
            // Biases off zero: keeps every ReLU away from its kink, where differences fail.
            let mut params = net.init(3);
            for l in 0..net.layers() {
                let (_, b) = net.offsets(l);
                params[b..b + net.sizes[l + 1]].iter_mut().for_each(|p| *p = 0.3);
            }
            let x = array![[0.3, -1.2, 0.5], [1.1, 0.2, -0.7], [-0.4, 0.9, 0.1]];
            let y = array![[0.5, -0.2], [1.0, 0.3], [-0.6, 0.8]];
            let mut grad = vec![0.0; net.n_params()];
            let sse = net.gradient_sum(&params, x.view(), y.view(), &mut grad);
            let e = |p: &[f64]| (&net.forward(p, x.view()) - &y).iter().map(|v| v * v).sum::<f64>();
            assert!((sse - e(&params)).abs() < 1e-12);
            for k in 0..params.len() {
                let h = 1e-6;
                let (mut a, mut b) = (params.clone(), params.clone());
                a[k] += h;
                b[k] -= h;
                let fd = (e(&a) - e(&b)) / (2.0 * h);
                assert!(
                    (fd - grad[k]).abs() < 1e-6 * (1.0 + fd.abs()),
                    "{activation:?} parameter {k}: {fd} vs {}",
                    grad[k]
                );
            }
        }
    }

    #[test]
    fn layout_and_init() {
        let net = Mlp::new(2, &[], 1, Activation::Relu);
        assert_eq!((net.n_params(), net.offsets(0)), (3, (0, 2)));
        assert_eq!(net.weight_mask(), [true, true, false]);
        let p = net.init(1);
        assert_eq!(p, net.init(1));
        assert_eq!(p[2], 0.0);
        assert!(p[..2].iter().all(|w| w.abs() <= (6.0f64 / 3.0).sqrt()));
    }
}
