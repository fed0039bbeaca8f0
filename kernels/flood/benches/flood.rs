//! Flood-kernel throughput: cell updates per second on one core, against a trivial
//! memory-bound pass measured in the same run.
//!
//! `cargo bench -p twinflow-flood --bench flood [-- N STEPS]` (default 2048² cells, 20
//! steps). Parallel efficiency across ranks: `bench/scaling.sh`.
#![allow(clippy::print_stdout)] // a benchmark harness reports on stdout

use std::hint::black_box;
use std::time::Instant;

use ndarray::Array2;
use twinflow_comm::SingleProcess;
use twinflow_flood::{Field, FloodSolver, Grid, InitialState, Params, Simd};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let n: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(2048);
    let steps: u32 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(20);
    let cells = (n * n) as f64;
    println!("flood benchmark: {n}×{n} cells, {steps} steps (best of 5 batches), 1 core, f64");

    // Baseline: stream the three state arrays once (read 3, write 3 arrays: 48 B/cell),
    // the least a time step has to move.
    let src: Vec<Vec<f64>> = (0..3).map(|k| (0..n * n).map(|i| (i + k) as f64).collect()).collect();
    let mut dst: Vec<Vec<f64>> = (0..3).map(|_| vec![0.0; n * n]).collect();
    let mut best_copy = f64::INFINITY;
    for _ in 0..5 {
        let t0 = Instant::now();
        for (d, s) in dst.iter_mut().zip(&src) {
            d.copy_from_slice(black_box(s));
        }
        black_box(&dst);
        best_copy = best_copy.min(t0.elapsed().as_secs_f64());
    }
    let copy_rate = cells / best_copy;
    println!("baseline copy of h, hu, hv: {:.1} M cells/s ({:.1} GB/s)", copy_rate / 1e6, copy_rate * 48.0 / 1e9);
    drop((src, dst));

    check_simd_variants_agree();

    for (label, manning_n) in [("frictionless", 0.0), ("manning n = 0.03", 0.03)] {
        let dx = 1.0;
        let grid = Grid { nx: n, ny: n, dx, dy: dx, x0: 0.5, y0: 0.5 };
        // A tilted valley, wet everywhere, with a dam break across the middle so every
        // cell is moving and the wet/dry branches are exercised along the banks.
        let bed = Array2::from_shape_fn((n, n), |(j, i)| {
            let x = i as f64 / n as f64;
            0.5 * (x - 0.5).powi(2) * 4.0 + 0.001 * j as f64 * 0.0 + 0.1 * (j as f64 * 0.01).sin()
        });
        let depth = Array2::from_shape_fn((n, n), |(j, i)| {
            let eta = if j < n / 2 { 1.2 } else { 0.6 };
            (eta - bed[[j, i]]).max(0.0)
        });
        let comm = SingleProcess;
        let params = Params { manning_n, ..Params::default() };
        let init =
            InitialState { first_row: 0, bed: bed.view(), depth: depth.view(), velocity_x: None, velocity_y: None };
        let mut solver = FloodSolver::new(&comm, grid, params, init).expect("valid setup");
        drop((bed, depth));
        // Warm-up step (page faults of the new-state arrays), then the best of five
        // batches: the machine may be shared, and the best batch is the least disturbed.
        let dt = solver.stable_dt();
        solver.step(dt).expect("stable");
        let batches = 5;
        let per_batch = steps.div_ceil(batches).max(1);
        let mut best = f64::INFINITY;
        for _ in 0..batches {
            let t0 = Instant::now();
            for _ in 0..per_batch {
                let dt = solver.stable_dt();
                solver.step(dt).expect("stable");
            }
            best = best.min(t0.elapsed().as_secs_f64() / f64::from(per_batch));
        }
        let rate = cells / best;
        let wet = solver.local_field(Field::Depth).iter().filter(|&&h| h > 0.0).count();
        println!(
            "flood step ({label}, {:?}): {:.1} M cell-updates/s per core ({:.1} ns/cell, {:.1} % wet), \
             {:.3} × the copy baseline",
            solver.simd(),
            rate / 1e6,
            1e9 / rate,
            100.0 * wet as f64 / cells,
            rate / copy_rate
        );
    }
}

/// The optimized builds of every instruction set this CPU has must give bit-identical
/// results (the debug-build test cannot check this: it does not vectorize).
fn check_simd_variants_agree() {
    let n = 192;
    let grid = Grid { nx: n, ny: n, dx: 2.0, dy: 2.0, x0: 1.0, y0: 1.0 };
    let bed = Array2::from_shape_fn((n, n), |(j, i)| 0.3 * ((i as f64) * 0.07).sin() * ((j as f64) * 0.05).cos());
    let depth = Array2::from_shape_fn((n, n), |(j, i)| ((if i + j < n { 1.4 } else { 0.2 }) - bed[[j, i]]).max(0.0));
    let params = Params { manning_n: 0.03, rainfall: 2e-5, ..Params::default() };
    let comm = SingleProcess;
    let mut results = Vec::new();
    for simd in Simd::supported() {
        let init =
            InitialState { first_row: 0, bed: bed.view(), depth: depth.view(), velocity_x: None, velocity_y: None };
        let mut s = FloodSolver::new(&comm, grid, params.clone(), init).expect("valid setup");
        assert!(s.set_simd(simd));
        for _ in 0..60 {
            let dt = s.stable_dt();
            s.step(dt).expect("stable");
        }
        let bits: Vec<u64> = [Field::Depth, Field::VelocityX, Field::VelocityY]
            .iter()
            .flat_map(|&f| s.local_field(f).iter().map(|v| v.to_bits()).collect::<Vec<_>>())
            .collect();
        results.push((simd, bits));
    }
    let (first, reference) = &results[0];
    for (simd, bits) in &results[1..] {
        assert!(bits == reference, "{simd:?} differs from {first:?}");
    }
    let names: Vec<String> = results.iter().map(|(s, _)| format!("{s:?}")).collect();
    println!("SIMD variants bit-identical after 60 steps: {}", names.join(", "));
}
