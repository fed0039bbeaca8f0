//! Training throughput on one core: samples per second of the real training loop (one
//! rank: per-shard gradients in micro-batches, slot reduction, Adam, validation) for a
//! small and a calorimeter-sized MLP, against the rate of the bare matrix products of the
//! same shapes (ndarray → matrixmultiply), the floor of the work per sample. The wall time
//! of the binary on 1 and 2 ranks is the `train` bench of `twinflow-kernels`.
//!
//! `cargo bench -p twinflow-train --bench train [-- SAMPLES EPOCHS]` (default 8192
//! samples, 3 epochs).
#![allow(clippy::print_stdout)] // a benchmark harness reports on stdout

use std::hint::black_box;
use std::time::Instant;

use ndarray::Array2;
use rand::RngExt as _;
use rand::SeedableRng as _;
use rand_chacha::ChaCha8Rng;
use twinflow_comm::SingleProcess;
use twinflow_train::{self as train, Activation, Hyperparameters, Limits, ShardedTable, Table};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let n: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(8192);
    let epochs: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(3);
    println!("train benchmark: {n} samples, {epochs} epochs, batch 256, micro-batch 32, 8 shards, 1 core, f64");
    // Other jobs on a shared machine skew every figure: say how busy it was.
    let load = || std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("load average at the start: {}", load().trim());
    for (label, inputs, hidden) in [("small", 8, vec![64, 32]), ("calorimeter-sized", 1500, vec![64, 32])] {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let x = Array2::from_shape_fn((n, inputs), |_| rng.random::<f64>());
        let y = Array2::from_shape_fn((n, 1), |(i, _)| x.row(i).sum());
        let table = Table {
            path: "synthetic".into(),
            x,
            y: Some(y),
            features: vec!["x".into()],
            feature_widths: vec![inputs],
            target: Some("y".into()),
        };
        let hyper =
            Hyperparameters { hidden: hidden.clone(), activation: Activation::Relu, epochs, ..Default::default() };
        let sharded = ShardedTable::from_table(&table, hyper.shards, 0, 1);
        let (mut state, data) = train::start(&SingleProcess, &sharded, hyper, None).expect("valid setup");
        let limits = Limits { since: Instant::now(), time_limit: None, epoch_limit: None, checkpoint_every: 0 };
        let t0 = Instant::now();
        train::fit(&SingleProcess, &mut state, &data, &limits, &mut |_| Ok(())).expect("training runs");
        let seconds = t0.elapsed().as_secs_f64();
        let samples = (state.inputs.n_train * epochs) as f64;
        // Multiply-adds per sample: forward 1, backward 2 (weights and inputs) per weight.
        let weights: usize = state.net.sizes.windows(2).map(|w| w[0] * w[1]).sum();
        let flops = 6.0 * weights as f64 * samples;
        println!(
            "{label} {:?} ({} parameters): {:.0} samples/s, {:.2} GFLOP/s, final val_rmse {:.3e}",
            state.net.sizes,
            state.net.n_params(),
            samples / seconds,
            flops / seconds / 1e9,
            state.val_rmse()
        );

        // The same products alone, at the micro-batch shape: forward A·W, backward Aᵀ·G and G·Wᵀ.
        let mut best = f64::INFINITY;
        let sizes = &state.net.sizes;
        let a: Vec<Array2<f64>> = sizes.iter().map(|&s| Array2::from_elem((32, s), 0.5)).collect();
        let w: Vec<Array2<f64>> = sizes.windows(2).map(|s| Array2::from_elem((s[0], s[1]), 0.01)).collect();
        for _ in 0..5 {
            let t0 = Instant::now();
            for _ in 0..(n / 32) {
                for l in 0..w.len() {
                    black_box(a[l].dot(&w[l]));
                    black_box(a[l].t().dot(&a[l + 1]));
                    black_box(a[l + 1].dot(&w[l].t()));
                }
            }
            best = best.min(t0.elapsed().as_secs_f64());
        }
        let per_epoch = 6.0 * weights as f64 * (n / 32 * 32) as f64;
        println!("  bare matrix products of the same shapes: {:.2} GFLOP/s", per_epoch / best / 1e9);
    }
    println!("rank scaling: `cargo bench -p twinflow-kernels --features mpi --bench train` (the binary under mpiexec)");
    println!("load average at the end: {}", load().trim());
}
