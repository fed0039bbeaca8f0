//! Calorimeter-kernel throughput: showers per second on one core, against a baseline of
//! drawing the same number of random numbers and clearing the cell array, measured in the
//! same run. The wall-time scaling of the binary over ranks is the `calo` bench of
//! `twinflow-kernels`.
//!
//! `cargo bench -p twinflow-calo --bench calo [-- EVENTS]` (default 400 events per energy).
#![allow(clippy::print_stdout)] // a benchmark harness reports on stdout

use std::hint::black_box;
use std::time::Instant;

use rand::RngExt as _;
use twinflow_calo::{CaloConfig, Scratch, Simulator, event_rng};

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
    println!("rank scaling: `cargo bench -p twinflow-kernels --features mpi --bench calo` (the binary under mpiexec)");
}
