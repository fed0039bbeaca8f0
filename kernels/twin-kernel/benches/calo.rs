//! Calorimeter-kernel throughput: showers per second on one core, against a baseline of
//! drawing the same number of random numbers and clearing the cell array, measured in the
//! same run; with `--features mpi`, wall-time scaling of the binary from 1 to 2 ranks.
//!
//! `cargo bench -p twinflow-kernels --features mpi --bench calo [-- EVENTS]` (default 400
//! events per energy for the single-core figures, 10× that for the scaling runs).
#![allow(clippy::print_stdout)] // a benchmark harness reports on stdout

use std::hint::black_box;
use std::time::{Duration, Instant};

use rand::RngExt as _;
use twinflow_kernels::calo::{CaloConfig, Scratch, Simulator, event_rng};

/// Best wall time of `batches` runs of `f`.
fn best_of(batches: usize, mut f: impl FnMut()) -> f64 {
    (0..batches)
        .map(|_| {
            let t0 = Instant::now();
            f();
            t0.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let events: u64 = args.first().and_then(|a| a.parse().ok()).unwrap_or(400);
    let config = CaloConfig { events, ..CaloConfig::default() };
    let plan = config.validate().expect("default configuration is valid");
    println!(
        "calo benchmark: {} / {} mm {} / {}, {} layers × {}² cells, spots of {} MeV, a = {}, b = {}; \
         best of 5 batches of {events} showers, 1 core",
        config.calorimeter.absorber_mm,
        config.calorimeter.active_mm,
        config.calorimeter.absorber,
        config.calorimeter.active,
        plan.layers,
        plan.cells,
        config.response.spot_energy_mev,
        plan.stochastic,
        plan.constant
    );
    for energy in [10.0, 50.0] {
        let mut cfg = config.clone();
        cfg.beam.energy_gev = energy;
        let plan = cfg.validate().expect("valid");
        let sim = Simulator::new(&plan);
        let mut scratch = Scratch::default();
        let mut cells = vec![0.0_f32; plan.cells_per_event()];
        let mut spots = 0_u64;
        let shower_time = best_of(5, || {
            spots = 0;
            for event in 0..events {
                let t = sim.event(event, &mut scratch, &mut cells);
                spots += (t.primary.energy_gev / plan.spot_energy_gev).ceil() as u64;
                black_box(&cells);
            }
        });
        // Baseline: the ChaCha8 stream alone, five uniform numbers per spot (depth ≈ two,
        // core/tail, radius, azimuth), plus clearing the cell array once per event.
        let per_event = spots / events;
        let baseline_time = best_of(5, || {
            for event in 0..events {
                let mut rng = event_rng(plan.seed, event);
                let mut acc = 0.0_f64;
                for _ in 0..5 * per_event {
                    acc += rng.random::<f64>();
                }
                cells.fill(0.0);
                black_box((acc, &cells));
            }
        });
        let rate = events as f64 / shower_time;
        println!(
            "{energy:>5} GeV e-: {rate:>9.1} showers/s per core ({:.2} µs/shower, {per_event} spots, {:.1} ns/spot); \
             baseline (5 uniforms/spot + cell clear) {:.1} ns/spot, ratio {:.2}",
            1e6 * shower_time / events as f64,
            1e9 * shower_time / spots as f64,
            1e9 * baseline_time / spots as f64,
            shower_time / baseline_time
        );
    }
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
