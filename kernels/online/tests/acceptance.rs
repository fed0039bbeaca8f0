//! The online twin's science in process, without a broker: the detector simulator's
//! windows → warm-started updates with replay → gate → per-cell monitor, as the workflow
//! runs them (tests/e2e/detector_online.rs runs the same through MQTT and the engine).
//!
//! Acceptance (fixed seeds): with the temperature drifting 10 K over the run (gain −2 %/K),
//! the online model's bias on held-out events stays within ±1 % in every window while the
//! frozen first-window model's exceeds 5 %; a cell killed at a known window is flagged
//! within two windows, a hot cell and a cell whose gain jumps by 30 % likewise, and no
//! healthy cell is ever flagged.

use ndarray::Array2;
use twinflow_calo::Scratch;
use twinflow_online::data::{Events, Replay};

use twinflow_online::gate::{GateInput, Scores, next_payload};
use twinflow_online::model::{self, ModelSettings};
use twinflow_online::monitor::{self, Thresholds};
use twinflow_online::sim::{DetectorSim, Fault, FaultKind, SimConfig};

const WINDOWS: u64 = 8;
const PER_WINDOW: u64 = 400;
const LAYERS: usize = 40;
const HOLDOUT: u64 = 2;

fn window(sim: &DetectorSim, k: u64, scratch: &mut Scratch) -> Events {
    let ids: Vec<u64> = (k * PER_WINDOW..(k + 1) * PER_WINDOW).filter(|&e| !sim.is_invalid(e)).collect();
    let evs: Vec<_> = ids.iter().map(|&e| sim.event(e, scratch)).collect();
    let width = sim.cells_per_event();
    Events {
        event: ids.clone(),
        time: evs.iter().map(|e| e.time).collect(),
        energy: evs.iter().map(|e| e.energy).collect(),
        temperature: evs.iter().map(|e| e.temperature).collect(),
        cells: Array2::from_shape_fn((evs.len(), width), |(i, c)| f64::from(evs[i].cells[c])),
        window_index: k,
    }
}

fn scores(state: &twinflow_train::TrainState, x: &Array2<f64>, e: &[f64]) -> Scores {
    model::score(state, x, e)
}

#[test]
fn the_online_twin_follows_the_drift_and_flags_the_failing_cells() {
    let dead = [12, 0, 1];
    let hot = [8, 1, 0];
    let jump = [30, 1, 1];
    let config = SimConfig {
        events: WINDOWS * PER_WINDOW,
        layers: LAYERS,
        cells: 3,
        energy_range_gev: [10.0, 60.0],
        cell_size_mm: 30.0,
        beam_spread_mm: 12.0,
        invalid_every: 97,
        faults: vec![
            Fault { from_event: 3 * PER_WINDOW, cell: dead, kind: FaultKind::Dead },
            Fault { from_event: 5 * PER_WINDOW, cell: hot, kind: FaultKind::Hot { gev: 0.03 } },
            Fault { from_event: 6 * PER_WINDOW, cell: jump, kind: FaultKind::GainJump { factor: 1.3 } },
        ],
        ..SimConfig::default()
    };
    let sim = DetectorSim::new(config).unwrap();
    let mut scratch = Scratch::default();
    let settings = ModelSettings::default();
    let (mut in_force, mut frozen, mut replay, mut payload, mut mon) = (None, None, None::<Replay>, None, None);
    let mut flagged_at = std::collections::BTreeMap::new();
    let mut rows = Vec::new();
    for k in 0..WINDOWS {
        let events = window(&sim, k, &mut scratch);
        let up = model::update(model::UpdateRequest {
            events: &events,
            layers: LAYERS,
            holdout_every: HOLDOUT,
            previous: in_force.clone(),
            replay: replay.as_ref(),
            settings: &settings,
            initial_epochs: 200,
            epochs: 10,
            update_lr: 0.001,
            replay_size: 50,
            data_file: "window",
        })
        .unwrap();
        let candidate = up.state;
        replay = Some(up.replay);
        let (vx, ve) = model::held_out(&events, LAYERS, HOLDOUT).unwrap();
        let frozen_model = frozen.get_or_insert_with(|| candidate.clone()).clone();
        let cand = scores(&candidate, &vx, &ve);
        let prev_scores = in_force.as_ref().map(|s| scores(s, &vx, &ve));
        let p = next_payload(&GateInput {
            cycle: k,
            window: k,
            times: (events.time[0], *events.time.last().unwrap()),
            candidate: cand,
            previous: payload.as_ref().zip(prev_scores),
            tolerance: 0.10,
            model: "model.h5",
        });
        if p.published {
            in_force = Some(candidate);
        }
        let online = scores(in_force.as_ref().unwrap(), &vx, &ve);
        let frozen_scores = scores(&frozen_model, &vx, &ve);
        rows.push((k, online.bias, frozen_scores.bias, p.version, p.published));
        payload = Some(p);
        let (state, alerts) = monitor::monitor(&events, mon.as_ref(), Thresholds::default(), k, [LAYERS, 3, 3]);
        for a in &alerts {
            flagged_at.entry(a.cell.unwrap()).or_insert((k, a.kind.clone()));
        }
        mon = Some(state);
    }
    let table: Vec<String> =
        rows.iter().map(|r| format!("{}: online {:+.4} frozen {:+.4} v{} {}", r.0, r.1, r.2, r.3, r.4)).collect();
    let table = table.join("\n");
    for (k, online, _, _, _) in &rows {
        assert!(online.abs() <= 0.01, "window {k}: online bias beyond ±1 %\n{table}");
    }
    let worst_frozen = rows.iter().map(|r| r.2.abs()).fold(0.0, f64::max);
    assert!(worst_frozen > 0.05, "the frozen model's bias stays within 5 %\n{table}");
    // Every window published a new version (the drift makes each candidate better).
    assert!(rows.iter().all(|r| r.4), "{table}");
    assert_eq!(flagged_at.len(), 3, "flags: {flagged_at:?}\n{table}");
    let (k, kind) = &flagged_at[&dead];
    assert!((3..=4).contains(k) && kind == "dead", "dead cell: {k} {kind}");
    let (k, kind) = &flagged_at[&hot];
    assert!((5..=6).contains(k) && kind == "hot", "hot cell: {k} {kind}");
    let (k, kind) = &flagged_at[&jump];
    assert!((6..=7).contains(k) && kind == "gain-jump", "gain jump: {k} {kind}");
}
