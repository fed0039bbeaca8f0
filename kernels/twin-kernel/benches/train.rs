//! Training scaling: wall time of the `twin-kernel train` binary on 1 and 2 ranks (data
//! read from HDF5, each rank its own shards), with `--features mpi`. The single-core
//! training throughput is the `train` bench of `twinflow-train`.
//!
//! `cargo bench -p twinflow-kernels --features mpi --bench train [-- SAMPLES EPOCHS]`
//! (default 4 × 8192 samples, at least 5 epochs).
#![allow(clippy::print_stdout)] // a benchmark harness reports on stdout

use std::time::Instant;

use ndarray::Array2;
use rand::RngExt as _;
use rand::SeedableRng as _;
use rand_chacha::ChaCha8Rng;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let n: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(8192);
    let epochs: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(3);
    if cfg!(feature = "mpi") {
        scaling(4 * n, epochs.max(5));
    } else {
        println!("rank scaling: skipped (build with --features mpi)");
    }
}

/// `twin-kernel train` (HDF5 input, 8 shards) under `mpiexec -n 1` and `-n 2`, best of 3
/// each, for a small network with small batches (many allreduces of little work) and a
/// wider one with larger batches: samples per second of the training loop (the epochs'
/// `seconds` in the metrics file: gradients, allreduces, Adam, validation) and end to end
/// (start-up, MPI initialisation and the HDF5 read included).
fn scaling(n: usize, epochs: usize) {
    for (hidden, batch) in [("64,32", "256"), ("256,256", "1024")] {
        scaling_of(n, epochs, hidden, batch);
    }
}

fn scaling_of(n: usize, epochs: usize, hidden: &str, batch: &str) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let inputs = 256;
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let x = Array2::from_shape_fn((n, inputs), |_| rng.random::<f64>());
    let y: Vec<f64> = x.rows().into_iter().map(|r| r.sum()).collect();
    let data = dir.path().join("table.h5");
    {
        let file = twinflow_exchange::H5File::create(&data).expect("scratch file");
        let root = file.root().expect("root group");
        root.write_array("x", &x).expect("write x");
        root.write_array("y", &y[..]).expect("write y");
    }
    let bin = env!("CARGO_BIN_EXE_twin-kernel");
    let run = |ranks: usize| -> (f64, f64) {
        let (mut wall, mut loop_time) = (f64::INFINITY, f64::INFINITY);
        let metrics = dir.path().join(format!("m{ranks}.csv"));
        for _ in 0..3 {
            let t0 = Instant::now();
            let status = std::process::Command::new("mpiexec")
                .args(["-n", &ranks.to_string(), bin, "train", "--data", &data.to_string_lossy()])
                .args(["--features", "x", "--target", "y", "--hidden", hidden, "--batch", batch])
                .args(["--epochs", &epochs.to_string()])
                .args(["--out", &dir.path().join(format!("m{ranks}.h5")).to_string_lossy()])
                .args(["--metrics", &metrics.to_string_lossy()])
                .env("TWINFLOW_LOG", "warn")
                .status()
                .expect("mpiexec runs");
            assert!(status.success(), "mpiexec -n {ranks} failed");
            wall = wall.min(t0.elapsed().as_secs_f64());
            let csv = std::fs::read_to_string(&metrics).expect("metrics written");
            let seconds: f64 = csv.lines().skip(1).filter_map(|l| l.rsplit(',').next()?.parse::<f64>().ok()).sum();
            loop_time = loop_time.min(seconds);
        }
        (wall, loop_time)
    };
    let ((w1, l1), (w2, l2)) = (run(1), run(2));
    let samples = (n as f64 * 0.8).round() * epochs as f64;
    println!(
        "rank scaling (binary, {n} samples × {inputs} features from HDF5, MLP {hidden}, batch {batch}, {epochs} epochs, 8 shards):\n  \
         training loop: 1 rank {l1:.2} s ({:.0} samples/s), 2 ranks {l2:.2} s ({:.0} samples/s); speed-up {:.2}\n  \
         end to end:    1 rank {w1:.2} s ({:.0} samples/s), 2 ranks {w2:.2} s ({:.0} samples/s); speed-up {:.2}",
        samples / l1,
        samples / l2,
        l1 / l2,
        samples / w1,
        samples / w2,
        w1 / w2
    );
}
