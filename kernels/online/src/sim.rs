//! The "physical detector": calibration events of the calorimeter kernel under drifting
//! conditions and scheduled cell faults, as the JSON records it publishes.
//!
//! Each event is simulated by [`twinflow_calo::Simulator`] (electrons of a uniform energy
//! between `energy_range_gev`, a Pb/LAr sampling stack of `layers` × `cells`² cells) with the
//! temperature ramping linearly from `temperature_k[0]` at the first event to
//! `temperature_k[1]` at the last, so every cell's gain drifts as
//! `1 + k (T − T_ref)` (`gain_per_kelvin` k, −2 %/K by default: the order of liquid argon's
//! signal loss with temperature through the electron drift velocity, about −2 %/K at
//! 87 K; see docs/detector-online.md). On top, scheduled faults from a given event on:
//! a **dead** cell reads 0 (the calorimeter kernel's convention for dead channels), a
//! **hot** cell reads `gev` more in every event (a pedestal shift), a **gain jump** scales
//! the cell by `factor`.
//!
//! Every `invalid_every`-th event is published with a defect (a temperature out of the
//! schema's range, a truncated cell array, or no energy, in turn) so the ingest's dead
//! letters are exercised; such events never reach the twin.
//!
//! Events are pure functions of (seed, event number): a restarted simulator republishes
//! exactly the same bytes, which the ingest recognises as redeliveries.

use serde::{Deserialize, Serialize};
use twinflow_calo::{CaloConfig, CaloPlan, Scratch, Simulator};

/// The sensor id of every record.
pub const SENSOR: &str = "calo";

/// A cell fault and when it starts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fault {
    /// First event affected.
    pub from_event: u64,
    /// Cell `[layer, y, x]`.
    pub cell: [usize; 3],
    /// What happens to it.
    pub kind: FaultKind,
}

/// What a fault does to a cell.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum FaultKind {
    /// Reads 0.
    Dead,
    /// Reads `gev` more in every event.
    Hot {
        /// Pedestal shift, GeV.
        gev: f64,
    },
    /// Reads `factor` times its signal.
    GainJump {
        /// Gain factor.
        factor: f64,
    },
}

impl FaultKind {
    /// `dead`, `hot`, `gain-jump`: the names the monitor flags with.
    pub fn name(self) -> &'static str {
        match self {
            Self::Dead => "dead",
            Self::Hot { .. } => "hot",
            Self::GainJump { .. } => "gain-jump",
        }
    }
}

/// What the simulator does (also written as the run's truth).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SimConfig {
    /// Events of the whole run.
    pub events: u64,
    /// Seed of the showers.
    pub seed: u64,
    /// Layers in depth.
    pub layers: usize,
    /// Cells per transverse side.
    pub cells: usize,
    /// Transverse cell size, mm.
    pub cell_size_mm: f64,
    /// Beam energies, GeV (uniform).
    pub energy_range_gev: [f64; 2],
    /// Gaussian spread (σ per axis) of the impact point around the centre of the face, mm:
    /// it spreads the showers over the cells, as a calibration scan does.
    pub beam_spread_mm: f64,
    /// Temperature at the first and the last event, K.
    pub temperature_k: [f64; 2],
    /// Temperature of unit gain, K.
    pub reference_k: f64,
    /// Relative gain change per kelvin.
    pub gain_per_kelvin: f64,
    /// Electronic noise per cell, MeV.
    pub noise_mev: f64,
    /// Scheduled faults.
    pub faults: Vec<Fault>,
    /// Every this many events one is published invalid (0: none).
    pub invalid_every: u64,
    /// Simulated event rate, Hz: event `i` has the time `start_time + i / rate_hz`.
    pub rate_hz: f64,
    /// Time of event 0, seconds since 1970-01-01 UTC.
    pub start_time: f64,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            events: 3200,
            seed: 1,
            layers: 40,
            cells: 3,
            cell_size_mm: 30.0,
            energy_range_gev: [10.0, 60.0],
            beam_spread_mm: 12.0,
            temperature_k: [293.15, 303.15],
            reference_k: 293.15,
            gain_per_kelvin: -0.02,
            noise_mev: 1.0,
            faults: Vec::new(),
            invalid_every: 0,
            rate_hz: 100.0,
            start_time: 1_767_225_600.0,
        }
    }
}

/// A simulator configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The calorimeter rejects the geometry, energies or conditions.
    #[error("invalid detector: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Detector(Vec<twinflow_calo::ConfigIssue>),
    /// A fault names a cell outside the detector or has a bad value.
    #[error("fault {index}: {reason}")]
    Fault {
        /// Position in the list.
        index: usize,
        /// What is wrong.
        reason: String,
    },
    /// Another field is out of range.
    #[error("`{field}`: {reason}")]
    Field {
        /// The field.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
}

/// One simulated calibration event.
#[derive(Debug, Clone, PartialEq)]
pub struct SimEvent {
    /// Event number.
    pub event: u64,
    /// Simulated time, s since 1970.
    pub time: f64,
    /// Beam energy, GeV.
    pub energy: f64,
    /// Temperature, K.
    pub temperature: f64,
    /// Cells `[layer, y, x]` row-major, GeV, after gain, noise and faults.
    pub cells: Vec<f32>,
}

/// A ready simulator.
#[derive(Debug, Clone)]
pub struct DetectorSim {
    config: SimConfig,
    plan: CaloPlan,
}

impl DetectorSim {
    /// Validates `config`.
    pub fn new(config: SimConfig) -> Result<Self, SimError> {
        let field = |field, reason: String| Err(SimError::Field { field, reason });
        if config.events == 0 {
            return field("events", "must be > 0".into());
        }
        if !(config.rate_hz.is_finite() && config.rate_hz > 0.0) {
            return field("rate_hz", format!("must be > 0, got {}", config.rate_hz));
        }
        let mut calo = CaloConfig { events: config.events, seed: config.seed, ..CaloConfig::default() };
        calo.beam.energy_range_gev = Some(config.energy_range_gev);
        calo.beam.spread_mm = config.beam_spread_mm;
        calo.calorimeter.layers = config.layers;
        calo.calorimeter.cells = config.cells;
        calo.calorimeter.cell_size_mm = config.cell_size_mm;
        calo.response.noise_mev = config.noise_mev;
        calo.conditions.reference_temperature_k = config.reference_k;
        calo.conditions.gain_per_kelvin = config.gain_per_kelvin;
        let last = (config.events - 1).max(1) as f64;
        calo.conditions.temperature = vec![[0.0, config.temperature_k[0]], [last, config.temperature_k[1]]];
        calo.conditions.detector_seed = Some(config.seed);
        let plan = calo.validate().map_err(SimError::Detector)?;
        for (index, f) in config.faults.iter().enumerate() {
            let [l, y, x] = f.cell;
            if l >= config.layers || y >= config.cells || x >= config.cells {
                return Err(SimError::Fault {
                    index,
                    reason: format!(
                        "cell [{l}, {y}, {x}] is outside the detector ({} layers × {} × {} cells)",
                        config.layers, config.cells, config.cells
                    ),
                });
            }
            let bad = match f.kind {
                FaultKind::Dead => None,
                FaultKind::Hot { gev } => (!(gev.is_finite() && gev > 0.0)).then(|| format!("hot by {gev} GeV")),
                FaultKind::GainJump { factor } => {
                    (!(factor.is_finite() && factor >= 0.0)).then(|| format!("gain factor {factor}"))
                }
            };
            if let Some(reason) = bad {
                return Err(SimError::Fault { index, reason: format!("{reason}: must be a positive number") });
            }
        }
        Ok(Self { config, plan })
    }

    /// The configuration.
    pub fn config(&self) -> &SimConfig {
        &self.config
    }

    /// Cells per event.
    pub fn cells_per_event(&self) -> usize {
        self.plan.cells_per_event()
    }

    /// Flat index of cell `[layer, y, x]`.
    pub fn flat(&self, cell: [usize; 3]) -> usize {
        (cell[0] * self.config.cells + cell[1]) * self.config.cells + cell[2]
    }

    /// Simulates event `event`.
    pub fn event(&self, event: u64, scratch: &mut Scratch) -> SimEvent {
        let sim = Simulator::new(&self.plan);
        let mut cells = vec![0.0_f32; self.cells_per_event()];
        let truth = sim.event(event, scratch, &mut cells);
        for f in self.config.faults.iter().filter(|f| event >= f.from_event) {
            let c = &mut cells[self.flat(f.cell)];
            *c = match f.kind {
                FaultKind::Dead => 0.0,
                FaultKind::Hot { gev } => (f64::from(*c) + gev) as f32,
                FaultKind::GainJump { factor } => (f64::from(*c) * factor) as f32,
            };
        }
        SimEvent {
            event,
            time: self.config.start_time + event as f64 / self.config.rate_hz,
            energy: truth.primary.energy_gev,
            temperature: truth.temperature_k,
            cells,
        }
    }

    /// Whether event `event` is published with a defect.
    pub fn is_invalid(&self, event: u64) -> bool {
        let n = self.config.invalid_every;
        n > 0 && event % n == n - 1
    }

    /// The MQTT payload of event `event` (a defective one for [`Self::is_invalid`] events).
    pub fn payload(&self, event: u64, scratch: &mut Scratch) -> Vec<u8> {
        let e = self.event(event, scratch);
        let mut record = serde_json::json!({
            "sensor": SENSOR, "time": e.time, "event": e.event, "energy": e.energy,
            "temperature": e.temperature, "cells": e.cells,
        });
        if self.is_invalid(event) {
            // The defect cycles through three kinds, each caught by the schema.
            match (event / self.config.invalid_every) % 3 {
                0 => record["temperature"] = serde_json::json!(-1.0),
                1 => record["cells"] = serde_json::json!(&e.cells[..e.cells.len() / 2]),
                _ => {
                    record.as_object_mut().map(|o| o.remove("energy"));
                }
            }
        }
        serde_json::to_vec(&record).expect("a JSON value serialises")
    }

    /// The ingest schema of the records (YAML).
    pub fn schema(&self) -> String {
        format!(
            "# Calibration events of the simulated calorimeter (twin-kernel detector-sim).\n\
             title: calorimeter calibration events\n\
             sensors: [{SENSOR}]\n\
             fields:\n\
             \x20 event: {{type: i64, min: 0, long_name: \"event number\"}}\n\
             \x20 energy: {{type: f64, units: GeV, min: 0.01, max: 10000, long_name: \"beam energy of the calibration event\"}}\n\
             \x20 temperature: {{type: f64, units: K, min: 1, max: 1000, long_name: \"detector temperature\"}}\n\
             \x20 cells: {{type: f32, length: {n}, dim: cell, units: GeV, min: -100, max: 100000, long_name: \"visible energy per cell, [layer, y, x] flattened\"}}\n",
            n = self.cells_per_event()
        )
    }
}

/// Parses a fault: `EVENT:L,Y,X:dead`, `EVENT:L,Y,X:hot=GEV`, `EVENT:L,Y,X:gain=FACTOR`.
pub fn parse_fault(text: &str) -> Result<Fault, String> {
    let hint = "hint: write `EVENT:LAYER,Y,X:dead`, `…:hot=1.5` (GeV) or `…:gain=1.3`";
    let mut parts = text.split(':');
    let (Some(ev), Some(cell), Some(kind), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(format!("`{text}` is not a fault; {hint}"));
    };
    let from_event = ev.trim().parse().map_err(|_| format!("`{ev}` is not an event number; {hint}"))?;
    let idx: Vec<usize> = cell
        .split(',')
        .map(|v| v.trim().parse())
        .collect::<Result<_, _>>()
        .map_err(|_| format!("`{cell}` is not a cell LAYER,Y,X; {hint}"))?;
    let [l, y, x] = idx[..] else { return Err(format!("`{cell}` is not a cell LAYER,Y,X; {hint}")) };
    let number = |v: &str| v.parse::<f64>().map_err(|_| format!("`{v}` is not a number; {hint}"));
    let kind = match kind.split_once('=') {
        None if kind == "dead" => FaultKind::Dead,
        Some(("hot", v)) => FaultKind::Hot { gev: number(v)? },
        Some(("gain", v)) => FaultKind::GainJump { factor: number(v)? },
        _ => return Err(format!("unknown fault `{kind}`; {hint}")),
    };
    Ok(Fault { from_event, cell: [l, y, x], kind })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> SimConfig {
        SimConfig { events: 100, layers: 6, cells: 3, ..SimConfig::default() }
    }

    #[test]
    fn events_are_reproducible_and_drift_with_temperature() {
        let sim = DetectorSim::new(small()).unwrap();
        let mut s = Scratch::default();
        assert_eq!(sim.payload(17, &mut s), sim.payload(17, &mut s));
        assert_eq!(sim.event(0, &mut s).temperature, 293.15);
        assert!((sim.event(99, &mut s).temperature - 303.15).abs() < 1e-9);
        let other = DetectorSim::new(SimConfig { seed: 2, ..small() }).unwrap();
        assert_ne!(sim.payload(17, &mut s), other.payload(17, &mut s));
        // Event times follow the rate.
        assert_eq!(sim.event(50, &mut s).time, 1_767_225_600.0 + 0.5);
    }

    #[test]
    fn faults_start_at_their_event() {
        let mut cfg = small();
        cfg.faults = vec![
            Fault { from_event: 10, cell: [2, 1, 1], kind: FaultKind::Dead },
            Fault { from_event: 10, cell: [3, 1, 1], kind: FaultKind::Hot { gev: 5.0 } },
            Fault { from_event: 10, cell: [4, 1, 1], kind: FaultKind::GainJump { factor: 2.0 } },
        ];
        let faulty = DetectorSim::new(cfg).unwrap();
        let healthy = DetectorSim::new(small()).unwrap();
        let mut s = Scratch::default();
        let (a, b) = (faulty.event(9, &mut s), healthy.event(9, &mut s));
        assert_eq!(a, b);
        let (a, b) = (faulty.event(10, &mut s), healthy.event(10, &mut s));
        let c = |cell| faulty.flat(cell);
        assert_ne!(b.cells[c([2, 1, 1])], 0.0);
        assert_eq!(a.cells[c([2, 1, 1])], 0.0);
        assert!((a.cells[c([3, 1, 1])] - b.cells[c([3, 1, 1])] - 5.0).abs() < 1e-4);
        assert!((a.cells[c([4, 1, 1])] - 2.0 * b.cells[c([4, 1, 1])]).abs() < 1e-4);
        assert_eq!(a.cells[c([1, 1, 1])], b.cells[c([1, 1, 1])]);
    }

    #[test]
    fn invalid_events_cycle_through_their_defects() {
        let sim = DetectorSim::new(SimConfig { invalid_every: 10, ..small() }).unwrap();
        let mut s = Scratch::default();
        let bad: Vec<u64> = (0..100).filter(|&e| sim.is_invalid(e)).collect();
        assert_eq!(bad, [9, 19, 29, 39, 49, 59, 69, 79, 89, 99]);
        let mut json = |e| serde_json::from_slice::<serde_json::Value>(&sim.payload(e, &mut s)).unwrap();
        assert_eq!(json(9)["temperature"], -1.0);
        assert_eq!(json(19)["cells"].as_array().unwrap().len(), 27);
        assert!(json(29).get("energy").is_none());
        assert_eq!(json(8)["cells"].as_array().unwrap().len(), 54);
    }

    #[test]
    fn faults_parse_and_bad_ones_are_explained() {
        assert_eq!(
            parse_fault("800:3,1,1:dead").unwrap(),
            Fault { from_event: 800, cell: [3, 1, 1], kind: FaultKind::Dead }
        );
        assert_eq!(parse_fault("5:0,0,2:hot=1.5").unwrap().kind, FaultKind::Hot { gev: 1.5 });
        assert_eq!(parse_fault("5:0,0,2:gain=0.7").unwrap().kind, FaultKind::GainJump { factor: 0.7 });
        assert!(parse_fault("5:0,0:dead").unwrap_err().contains("LAYER,Y,X"));
        assert!(parse_fault("5:0,0,1:cold").unwrap_err().contains("unknown fault"));
        let mut cfg = small();
        cfg.faults = vec![parse_fault("1:9,0,0:dead").unwrap()];
        assert!(DetectorSim::new(cfg).unwrap_err().to_string().contains("outside the detector"));
    }
}
