//! Calorimeter-kernel scaling: wall time of the `twin-kernel calo` binary (simulation,
//! gathering and HDF5 output) under `mpiexec -n 1` and `-n 2` (with `--features mpi`). The
//! single-core shower throughput is the `calo` bench of `twinflow-calo`.
//!
//! `cargo bench -p twinflow-kernels --features mpi --bench calo [-- EVENTS]` (default
//! 4000 events per run).
#![allow(clippy::print_stdout)] // a benchmark harness reports on stdout

use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let events: u64 = args.first().and_then(|a| a.parse().ok()).unwrap_or(400);
    if cfg!(feature = "mpi") {
        // Deflate runs on rank 0 only (serial HDF5 filters), so the default output is
        // bounded by rank 0's compression; without it the simulation's scaling shows.
        for deflate in [1, 0] {
            scaling(events * 10, deflate);
        }
    } else {
        println!("rank scaling: skipped (build with --features mpi)");
    }
}

/// Wall time of the real binary (simulation, gathering and HDF5 output at deflate level
/// `deflate`) under `mpiexec -n 1` and `-n 2`, best of 3 each.
fn scaling(events: u64, deflate: u8) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let bin = env!("CARGO_BIN_EXE_twin-kernel");
    let run = |n: usize| -> Duration {
        let mut best = Duration::MAX;
        for _ in 0..3 {
            let t0 = Instant::now();
            let status = std::process::Command::new("mpiexec")
                .args(["-n", &n.to_string(), bin, "calo", "--energy", "50", "--events", &events.to_string()])
                .args(["--deflate", &deflate.to_string()])
                .args(["--out", &dir.path().join(format!("r{n}.h5")).to_string_lossy()])
                .env("TWINFLOW_LOG", "warn")
                .status()
                .expect("mpiexec runs");
            assert!(status.success(), "mpiexec -n {n} failed");
            best = best.min(t0.elapsed());
        }
        best
    };
    let (t1, t2) = (run(1), run(2));
    let (t1, t2) = (t1.as_secs_f64(), t2.as_secs_f64());
    println!(
        "rank scaling (binary, {events} showers at 50 GeV, HDF5 output at deflate {deflate}): 1 rank {t1:.2} s ({:.0} showers/s), \
         2 ranks {t2:.2} s ({:.0} showers/s); speed-up {:.2}, parallel efficiency {:.0} %",
        events as f64 / t1,
        events as f64 / t2,
        t1 / t2,
        100.0 * t1 / (2.0 * t2)
    );
}
