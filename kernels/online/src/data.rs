//! Events of one window, their regression features, the held-out split and the replay
//! buffer.
//!
//! A window is a file `twin-kernel ingest` wrote from the simulator's records (variables
//! `event`, `time`, `energy`, `temperature`, `cells[record, cell]` along `record`); its
//! events are put in event order, so the analysis does not depend on arrival order.
//!
//! **Features** of an event (the gain appears only in the first): `ln Σ cells`, the depth
//! of the shower's centroid and the fraction of its visible energy in the back quarter of
//! the stack (together a correction for the energy leaking out of the back). The target is
//! the beam energy, regressed as `ln E`.
//!
//! **Held-out events**: every event whose number is a multiple of `holdout_every` is never
//! trained on; the gate and the scores use them.
//!
//! **Replay buffer**: after each update the kernel keeps `replay` training events of the
//! window just used (chosen by a seeded shuffle) as `replay.h5` (`features[sample,
//! feature]`, `energy[sample]`, `event[sample]`); the next update trains on its own window
//! plus these. Replaying events of an older gain pulls the model back by about the replay
//! fraction × the drift per window, so only the last window is replayed.

use std::path::Path;

use ndarray::Array2;
use rand::SeedableRng as _;
use rand::seq::SliceRandom as _;
use rand_chacha::ChaCha8Rng;
use twinflow_exchange::{Attr, Compression, DType, Dataset, Dim, Variable, read_dataset, write_dataset};

use crate::OnlineError;

/// A `[sample, column]` matrix of features.
pub type Matrix = Array2<f64>;

/// Features per event ([`Events::features`]).
pub const FEATURES: usize = 4;

/// Events of one window, in event order.
#[derive(Debug, Clone, PartialEq)]
pub struct Events {
    /// Event numbers.
    pub event: Vec<u64>,
    /// Times, s since 1970.
    pub time: Vec<f64>,
    /// Beam energies, GeV.
    pub energy: Vec<f64>,
    /// Temperatures, K.
    pub temperature: Vec<f64>,
    /// Cells, `[event, cell]`, GeV.
    pub cells: Array2<f64>,
    /// `window_index` of the file (0 when absent).
    pub window_index: u64,
}

fn num<'a>(ds: &'a Dataset, path: &Path, name: &str) -> Result<&'a [f64], OnlineError> {
    ds.variable(name).and_then(|v| v.num()).ok_or_else(|| OnlineError::Data {
        path: path.to_path_buf(),
        reason: format!("no numeric variable `{name}`; hint: is this a window of the detector's events?"),
    })
}

impl Events {
    /// Reads a window file (HDF5 or NetCDF by extension).
    pub fn read_window(path: &Path) -> Result<Self, OnlineError> {
        if !path.is_file() {
            return Err(OnlineError::Data { path: path.to_path_buf(), reason: "no such file".into() });
        }
        let ds = read_dataset(path)?;
        let bad = |reason: String| OnlineError::Data { path: path.to_path_buf(), reason };
        let (event, time, energy, temperature, cells) = (
            num(&ds, path, "event")?,
            num(&ds, path, "time")?,
            num(&ds, path, "energy")?,
            num(&ds, path, "temperature")?,
            num(&ds, path, "cells")?,
        );
        let n = event.len();
        if n == 0 {
            return Err(bad("the window holds no events".into()));
        }
        if [time.len(), energy.len(), temperature.len()].iter().any(|&l| l != n) || !cells.len().is_multiple_of(n) {
            return Err(bad(format!("variables of different lengths along `record` ({n} events)")));
        }
        let width = cells.len() / n;
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by(|&a, &b| event[a].total_cmp(&event[b]));
        let mut grid = Array2::zeros((n, width));
        for (row, &k) in order.iter().enumerate() {
            grid.row_mut(row).assign(&ndarray::ArrayView1::from(&cells[k * width..(k + 1) * width]));
        }
        let window_index = match ds.attr("window_index") {
            Some(Attr::I64(v)) => v.first().copied().unwrap_or(0).max(0) as u64,
            Some(Attr::I32(v)) => v.first().copied().unwrap_or(0).max(0) as u64,
            Some(Attr::F64(v)) => v.first().copied().unwrap_or(0.0).max(0.0) as u64,
            _ => 0,
        };
        let pick = |v: &[f64]| order.iter().map(|&k| v[k]).collect::<Vec<_>>();
        let events = Self {
            event: order.iter().map(|&k| event[k] as u64).collect(),
            time: pick(time),
            energy: pick(energy),
            temperature: pick(temperature),
            cells: grid,
            window_index,
        };
        if let Some(k) = events.energy.iter().position(|e| !(e.is_finite() && *e > 0.0)) {
            return Err(bad(format!(
                "event {} has the energy {}: energies must be > 0",
                events.event[k], events.energy[k]
            )));
        }
        Ok(events)
    }

    /// Number of events.
    pub fn len(&self) -> usize {
        self.event.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.event.is_empty()
    }

    /// Cells per event.
    pub fn cells_per_event(&self) -> usize {
        self.cells.ncols()
    }

    /// The regression features `[event, 4]`: `ln Σ cells` (the sum floored at 1 MeV), the
    /// depth of the shower's centroid (in units of the stack's depth), the fraction of the
    /// visible energy in the back quarter of the layers and the fraction outside the
    /// central tower. The middle two measure how deep the shower went, hence how much
    /// leaked out of the back; the last how far off-centre it hit, hence how much leaked
    /// out of the sides. Four features stay well determined by a few hundred events.
    pub fn features(&self, layers: usize) -> Result<Array2<f64>, OnlineError> {
        let width = self.cells_per_event();
        if layers == 0 || !width.is_multiple_of(layers) {
            return Err(OnlineError::Request(format!(
                "{width} cells per event do not split into {layers} layers; hint: `--layers` must be the detector's"
            )));
        }
        let per_layer = width / layers;
        let back = layers - layers.div_ceil(4);
        // The central cell of a layer (its cells are `side × side`, y-major).
        let side = (per_layer as f64).sqrt().round() as usize;
        let centre = if side * side == per_layer { (side / 2) * side + side / 2 } else { per_layer / 2 };
        let mut x = Array2::zeros((self.len(), FEATURES));
        for (mut row, cells) in x.rows_mut().into_iter().zip(self.cells.rows()) {
            let sum: f64 = cells.sum().max(1e-3);
            let (mut depth, mut behind, mut tower) = (0.0, 0.0, 0.0);
            for l in 0..layers {
                let e = cells.slice(ndarray::s![l * per_layer..(l + 1) * per_layer]).sum();
                tower += cells[l * per_layer + centre];
                depth += (l as f64 + 0.5) * e;
                if l >= back {
                    behind += e;
                }
            }
            row[0] = sum.ln();
            row[1] = depth / sum / layers as f64;
            row[2] = behind / sum;
            row[3] = 1.0 - tower / sum;
        }
        Ok(x)
    }

    /// Positions of the training and the held-out events (event number a multiple of
    /// `holdout_every`).
    pub fn split(&self, holdout_every: u64) -> (Vec<usize>, Vec<usize>) {
        let every = holdout_every.max(1);
        (0..self.len()).partition(|&k| !self.event[k].is_multiple_of(every))
    }
}

/// Events kept for replay: features, energies and event numbers.
#[derive(Debug, Clone, PartialEq)]
pub struct Replay {
    /// Features `[sample, feature]`.
    pub features: Array2<f64>,
    /// Beam energies, GeV.
    pub energy: Vec<f64>,
    /// Event numbers.
    pub event: Vec<u64>,
}

impl Replay {
    /// Up to `size` of `rows` of a window (features `x`), chosen by a shuffle keyed by
    /// `seed` and the window.
    pub fn choose(events: &Events, x: &Array2<f64>, rows: &[usize], size: usize, seed: u64) -> Self {
        let mut rows = rows.to_vec();
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(events.window_index);
        rows.shuffle(&mut rng);
        rows.truncate(size);
        rows.sort_unstable();
        Self {
            features: x.select(ndarray::Axis(0), &rows),
            energy: rows.iter().map(|&k| events.energy[k]).collect(),
            event: rows.iter().map(|&k| events.event[k]).collect(),
        }
    }

    /// Writes the buffer (HDF5 or NetCDF by extension).
    pub fn write(&self, path: &Path) -> Result<(), OnlineError> {
        let (n, f) = self.features.dim();
        let dims = vec![
            Dim { name: "sample".into(), len: n, unlimited: false },
            Dim { name: "feature".into(), len: f, unlimited: false },
        ];
        let mut event =
            Variable::f64("event", &["sample"], "event number", "1", self.event.iter().map(|&e| e as f64).collect());
        event.dtype = DType::I64;
        let variables = vec![
            Variable::f64(
                "features",
                &["sample", "feature"],
                "ln(sum of cells) and layer fractions",
                "1",
                self.features.iter().copied().collect(),
            ),
            Variable::f64("energy", &["sample"], "beam energy", "GeV", self.energy.clone()),
            event,
        ];
        let ds = Dataset {
            dims,
            variables,
            attrs: vec![("title".into(), Attr::Str("replay buffer of the online detector twin".into()))],
        };
        write_dataset(path, &ds, &Compression::default())?;
        Ok(())
    }

    /// Reads a buffer [`Replay::write`] wrote.
    pub fn read(path: &Path) -> Result<Self, OnlineError> {
        let ds = read_dataset(path)?;
        let features = num(&ds, path, "features")?;
        let energy = num(&ds, path, "energy")?.to_vec();
        let event = num(&ds, path, "event")?.iter().map(|&e| e as u64).collect();
        let n = energy.len();
        let width = features.len().checked_div(n).unwrap_or(0);
        let features = Array2::from_shape_vec((n, width), features.to_vec())
            .map_err(|e| OnlineError::Data { path: path.to_path_buf(), reason: format!("`features`: {e}") })?;
        Ok(Self { features, energy, event })
    }
}
