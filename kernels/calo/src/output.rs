//! The calorimeter output file (HDF5): cells, truth, conditions, provenance.
//!
//! Layout (a contract with the training kernel and the workflows; names in [`names`]):
//!
//! | dataset | type | shape | content |
//! |---|---|---|---|
//! | `/cells` | f32 | `[event, layer, y, x]` | visible energy, GeV, after gain, noise and dead cells |
//! | `/truth/energy` | f64 | `[event]` | incident energy, GeV |
//! | `/truth/particle` | i32 | `[event]` | PDG code (11, −11, 22) |
//! | `/truth/x`, `/truth/y` | f64 | `[event]` | impact point, mm |
//! | `/truth/deposited` | f64 | `[event]` | energy deposited in the cells (absorber + active), GeV |
//! | `/truth/leakage` | f64 | `[event]` | energy leaking out, GeV |
//! | `/truth/visible` | f64 | `[event]` | visible energy before gain, noise, dead cells, GeV |
//! | `/conditions/temperature` | f64 | `[event]` | K |
//! | `/conditions/gain` | f64 | `[event]` | gain of the event |
//! | `/conditions/dead` | u8 | `[layer, y, x]` | 1 = dead cell |
//! | `/event_id` | u64 | `[event]` | random stream of the event |
//!
//! Every dataset is chunked (`/cells` by [`CaloPlan::chunk_events`] events) and, unless
//! disabled, compressed with shuffle + deflate. Root attributes: the effective-medium
//! constants (`sampling_fraction`, `moliere_radius_mm`, `radiation_length_mm`,
//! `critical_energy_mev`, `effective_z`, `layer_thickness_mm`, `cell_size_mm`), the response
//! (`stochastic_term`, `constant_term`), `configuration` (the resolved configuration as
//! JSON) and the twinflow provenance attributes ([`Provenance`]).

use std::path::{Path, PathBuf};

use ndarray::{ArrayView1, ArrayView4};
use twinflow_contract::cf;
use twinflow_exchange::{Attr, ExchangeError, H5Dataset, H5File, H5Layout, PartialFile, Provenance};

use super::config::CaloPlan;
use super::shower::EventTruth;

/// Dataset and attribute names of the output.
pub mod names {
    /// Cell energies `[event, layer, y, x]`.
    pub const CELLS: &str = "cells";
    /// Group of the per-event truth.
    pub const TRUTH: &str = "truth";
    /// Group of the conditions.
    pub const CONDITIONS: &str = "conditions";
    /// Event ids.
    pub const EVENT_ID: &str = "event_id";
    /// Root attribute: sampling fraction.
    pub const SAMPLING_FRACTION: &str = "sampling_fraction";
    /// Root attribute: Molière radius of the effective medium, mm.
    pub const MOLIERE_RADIUS_MM: &str = "moliere_radius_mm";
    /// Root attribute: radiation length of the effective medium, mm.
    pub const RADIATION_LENGTH_MM: &str = "radiation_length_mm";
    /// Root attribute: critical energy of the effective medium, MeV.
    pub const CRITICAL_ENERGY_MEV: &str = "critical_energy_mev";
    /// Root attribute: configured stochastic term, √GeV.
    pub const STOCHASTIC_TERM: &str = "stochastic_term";
    /// Root attribute: configured constant term.
    pub const CONSTANT_TERM: &str = "constant_term";
    /// Root attribute: the resolved configuration as JSON.
    pub const CONFIGURATION: &str = "configuration";
}

/// `(group, name, long_name, units)` of the per-event f64 datasets, in [`TruthRow`] order.
const PER_EVENT_F64: [(&str, &str, &str, &str); 8] = [
    (names::TRUTH, "energy", "incident energy", "GeV"),
    (names::TRUTH, "x", "x of the impact point on the front face", "mm"),
    (names::TRUTH, "y", "y of the impact point on the front face", "mm"),
    (names::TRUTH, "deposited", "energy deposited in the cells (absorber and active layers)", "GeV"),
    (names::TRUTH, "leakage", "energy leaking out of the calorimeter", "GeV"),
    (names::TRUTH, "visible", "visible energy before gain, noise and dead cells", "GeV"),
    (names::CONDITIONS, "temperature", "detector temperature", "K"),
    (names::CONDITIONS, "gain", "relative gain of every cell", "1"),
];

/// The per-event f64 values of one event, in the order of the datasets.
pub type TruthRow = [f64; 8];

/// The f64 truth row of an event.
pub fn truth_row(t: &EventTruth) -> TruthRow {
    let p = &t.primary;
    [p.energy_gev, p.x_mm, p.y_mm, t.deposited_gev, t.leakage_gev, t.visible_gev, t.temperature_k, t.gain]
}

fn text(value: &str) -> Attr {
    Attr::Str(value.to_string())
}

/// An output file being written (rank 0 only).
pub struct CaloWriter {
    file: H5File,
    partial: PartialFile,
    path: PathBuf,
    cells: H5Dataset,
    per_event: Vec<H5Dataset>,
    particle: H5Dataset,
    event_id: H5Dataset,
    shape: [usize; 3],
    events: u64,
}

impl std::fmt::Debug for CaloWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaloWriter").field("path", &self.path).finish_non_exhaustive()
    }
}

impl CaloWriter {
    /// Creates `path` (as `path.partial` until [`CaloWriter::finish`]) with every dataset
    /// defined, the dead-cell map and the attributes written. `chunks_in_flight` chunks of
    /// `/cells` are kept in the chunk cache, so blocks that share a chunk are not
    /// recompressed between writes.
    pub fn create(
        path: &Path,
        plan: &CaloPlan,
        provenance: &Provenance,
        chunks_in_flight: usize,
    ) -> Result<Self, ExchangeError> {
        let partial = PartialFile::new(path)?;
        let p = partial.partial_path().to_path_buf();
        let file = H5File::create(&p)?;
        let root = file.root()?;
        let events = usize::try_from(plan.events).unwrap_or(usize::MAX);
        let shape = [plan.layers, plan.cells, plan.cells];
        let chunk = plan.chunk_events.min(events).max(1);
        let chunk_bytes = chunk * plan.cells_per_event() * 4;
        let cache_bytes = (chunk_bytes * chunks_in_flight.max(1)).clamp(1 << 20, 256 << 20);
        let deflate = (plan.deflate > 0).then_some(plan.deflate);
        let layout = |chunk: Vec<usize>| H5Layout { chunk: Some(chunk), deflate, chunk_cache_bytes: None };

        let cells = root.define::<f32>(
            names::CELLS,
            &[events, shape[0], shape[1], shape[2]],
            &H5Layout { chunk_cache_bytes: Some(cache_bytes), ..layout(vec![chunk, shape[0], shape[1], shape[2]]) },
        )?;
        cells.write_attr(cf::UNITS, &text("GeV"))?;
        cells.write_attr(
            cf::LONG_NAME,
            &text("visible (active-layer) energy per cell [event, layer, y, x] after gain, noise and dead cells"),
        )?;

        let truth = root.create_group(names::TRUTH)?;
        let conditions = root.create_group(names::CONDITIONS)?;
        let chunk_1d = events.min(16_384);
        let mut per_event = Vec::new();
        for (group, name, long_name, units) in PER_EVENT_F64 {
            let g = if group == names::TRUTH { &truth } else { &conditions };
            let ds = g.define::<f64>(name, &[events], &layout(vec![chunk_1d]))?;
            ds.write_attr(cf::LONG_NAME, &text(long_name))?;
            ds.write_attr(cf::UNITS, &text(units))?;
            per_event.push(ds);
        }
        let particle = truth.define::<i32>("particle", &[events], &layout(vec![chunk_1d]))?;
        particle.write_attr(cf::LONG_NAME, &text("PDG code of the incident particle"))?;
        let event_id = root.define::<u64>(names::EVENT_ID, &[events], &layout(vec![chunk_1d]))?;
        event_id.write_attr(cf::LONG_NAME, &text("event id (random stream of the event)"))?;

        let dead = conditions.define::<u8>("dead", &shape, &layout(shape.to_vec()))?;
        let dead_view = ndarray::ArrayView3::from_shape(shape, &plan.conditions.dead)
            .map_err(|e| ExchangeError::Layout { path: p.clone(), reason: format!("dead-cell map: {e}") })?;
        dead.write_all(dead_view)?;
        dead.write_attr(cf::LONG_NAME, &text("dead cells [layer, y, x] (1 = dead, reads 0)"))?;

        for (name, value) in provenance.to_attrs() {
            match value {
                Attr::Str(_) => root.write_attr(&name, &value)?,
                Attr::I32(ref v) if v.len() == 1 => root.write_attr(&name, &value)?,
                other => {
                    tracing::debug!(attribute = %name, ?other, "provenance attribute of an unexpected type skipped")
                }
            }
        }
        let m = &plan.medium;
        for (name, value) in [
            (names::SAMPLING_FRACTION, m.sampling_fraction),
            (names::MOLIERE_RADIUS_MM, m.moliere_radius_mm),
            (names::RADIATION_LENGTH_MM, m.x0_mm),
            (names::CRITICAL_ENERGY_MEV, m.critical_energy_mev),
            ("effective_z", m.z),
            ("layer_thickness_mm", m.layer_mm),
            ("cell_size_mm", plan.cell_size_mm),
            (names::STOCHASTIC_TERM, plan.stochastic),
            (names::CONSTANT_TERM, plan.constant),
        ] {
            root.write_attr(name, &Attr::F64(vec![value]))?;
        }
        let json = serde_json::to_string(&plan.config).map_err(|e| ExchangeError::Layout {
            path: p.clone(),
            reason: format!("cannot serialise the configuration: {e}"),
        })?;
        root.write_attr(names::CONFIGURATION, &Attr::Str(json))?;
        drop((root, truth, conditions, dead));
        Ok(Self { file, partial, path: p, cells, per_event, particle, event_id, shape, events: plan.events })
    }

    /// Writes consecutive events starting at `first_event`: `cells` holds `rows.len()`
    /// events of `[layer, y, x]` values.
    pub fn write(
        &mut self,
        first_event: u64,
        cells: &[f32],
        rows: &[TruthRow],
        particles: &[i32],
    ) -> Result<(), ExchangeError> {
        let n = rows.len();
        let p = &self.path;
        let layout = |reason: String| ExchangeError::Layout { path: p.clone(), reason };
        if particles.len() != n || first_event + n as u64 > self.events {
            return Err(layout(format!("block of {n} events at {first_event} does not fit {} events", self.events)));
        }
        let a = usize::try_from(first_event).map_err(|e| layout(e.to_string()))?;
        let [l, ny, nx] = self.shape;
        let view = ArrayView4::from_shape((n, l, ny, nx), cells).map_err(|e| layout(format!("cell block: {e}")))?;
        self.cells.write_rows(a, view, || format!("writing `/cells` events {a}..{}", a + n))?;
        let mut column = vec![0.0; n];
        for (k, ds) in self.per_event.iter().enumerate() {
            for (c, row) in column.iter_mut().zip(rows) {
                *c = row[k];
            }
            ds.write_rows(a, ArrayView1::from(&column[..]), || format!("writing `{}`", ds.name()))?;
        }
        self.particle.write_rows(a, ArrayView1::from(particles), || "writing `/truth/particle`".into())?;
        let ids: Vec<u64> = (first_event..first_event + n as u64).collect();
        self.event_id.write_rows(a, ArrayView1::from(&ids[..]), || "writing `/event_id`".into())?;
        Ok(())
    }

    /// Closes the file and renames it into place; returns the final path.
    pub fn finish(self) -> Result<PathBuf, ExchangeError> {
        let Self { file, partial, cells, per_event, particle, event_id, .. } = self;
        // Every dataset handle is closed before the file, so the close really ends it.
        drop((cells, per_event, particle, event_id));
        file.close()?;
        partial.commit()
    }
}
