//! `twin-kernel plot`: figures of a run's results (PNG, text in the bundled font) and the
//! ranked trials as Markdown.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use twinflow_stage::figures::{Line, Panel, fit_resolution, line_panels, ranked_markdown};
use twinflow_stage::summary::{MapImage, write_png};

use super::KernelError;

pub const PLOT_HELP: &str = "\
Examples:
  twin-kernel plot scores --scores scores.csv --out scores.png
  twin-kernel plot detector --report report.json --resolution resolution.png \\
      --bias bias_temperature.png
  twin-kernel plot training --metrics trial/*/out/metrics.csv --ranked ranked.csv \\
      --out training.png --table ranked.md
  twin-kernel plot profile --data physics.h5 --out profile.png --table profile.csv
  twin-kernel plot online --scores scores.csv --monitor monitor.json --bias bias.png \\
      --cells cells.png

Exit codes: 0 written, 3 an input lacks what the figure needs (the message names the file
and the column or key), 1 a file could not be written.";

/// What to plot.
#[derive(Debug, Subcommand)]
pub enum PlotCommand {
    /// A cycling twin's scores (`twin-kernel verify` rows, e.g. `scores.csv`): RMSE and
    /// spread per cycle of the forecast, the analysis and the open loop, over the wet
    /// cells and at the gauges.
    Scores(ScoresArgs),
    /// A detector twin's report (`twin-kernel predict --report`): resolution σ/E against
    /// energy with the fitted a/√E ⊕ b for the model and for Σ cells, and the energy bias
    /// against temperature.
    Detector(DetectorArgs),
    /// A sweep's training curves (`metrics.csv` of each trial: training loss and
    /// validation RMSE per epoch), the chosen trial drawn bold; the ranked trials as Markdown.
    Training(TrainingArgs),
    /// A calorimeter run's mean longitudinal profile (`twin-kernel calo` output): the
    /// fraction of each event's energy per radiation length in each layer, averaged over the
    /// events of each energy band, against the Grindhammer–Peters mean profile (a gamma
    /// function of ⟨T⟩ = ln y − 0.858 and ⟨α⟩ = 0.21 + (0.492 + 2.38/Z) ln y, with the
    /// sampling corrections of hep-ex/0001020 App. A.2.2 in a sampling stack), averaged over
    /// the same events and normalised over the stack's depth.
    Profile(ProfileArgs),
    /// The online detector twin: energy bias per window of the online (recalibrated) and
    /// the frozen model with the ±1 % band, and a map of the cells' flags.
    Online(OnlineArgs),
}

/// Arguments of `twin-kernel plot profile`.
#[derive(Debug, Args)]
pub struct ProfileArgs {
    /// The calorimeter output (HDF5 of `twin-kernel calo`: `/cells`, `/truth/energy`,
    /// `/truth/particle` and the medium's root attributes).
    #[arg(long, value_name = "H5")]
    pub data: PathBuf,
    /// The figure (PNG).
    #[arg(long, value_name = "PNG")]
    pub out: PathBuf,
    /// The profiles as CSV (band, e_min, e_max, events, layer, depth_x0, measured, gp:
    /// fractions of the energy per X0 at the layer's centre).
    #[arg(long, value_name = "CSV")]
    pub table: Option<PathBuf>,
    /// Energy bands (equal widths between the lowest and highest energy of the run).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=8))]
    pub bands: u32,
}

/// Arguments of `twin-kernel plot online`.
#[derive(Debug, Args)]
pub struct OnlineArgs {
    /// The scores table of `twin-kernel online gate` (`scores.csv`).
    #[arg(long, value_name = "CSV")]
    pub scores: PathBuf,
    /// The monitor state of `twin-kernel online monitor` (`monitor.json`).
    #[arg(long, value_name = "JSON")]
    pub monitor: Option<PathBuf>,
    /// Bias per window (PNG).
    #[arg(long, value_name = "PNG")]
    pub bias: PathBuf,
    /// The cells' flags (PNG): one row per layer, one column per transverse cell (y-major);
    /// grey unmonitored, green ok, black dead, red hot, orange gain jump.
    #[arg(long, value_name = "PNG", requires = "monitor")]
    pub cells: Option<PathBuf>,
}

/// Arguments of `twin-kernel plot scores`.
#[derive(Debug, Args)]
pub struct ScoresArgs {
    /// The scores CSV (columns label, time, rmse_wet, spread_wet, rmse_gauges, spread_gauges).
    #[arg(long, value_name = "CSV")]
    pub scores: PathBuf,
    /// The figure (PNG).
    #[arg(long, value_name = "PNG")]
    pub out: PathBuf,
}

/// Arguments of `twin-kernel plot detector`.
#[derive(Debug, Args)]
pub struct DetectorArgs {
    /// The report JSON of `twin-kernel predict` on a calorimeter run.
    #[arg(long, value_name = "JSON")]
    pub report: PathBuf,
    /// Resolution against energy (PNG).
    #[arg(long, value_name = "PNG")]
    pub resolution: PathBuf,
    /// Bias against temperature (PNG).
    #[arg(long, value_name = "PNG")]
    pub bias: Option<PathBuf>,
}

/// Arguments of `twin-kernel plot training`.
#[derive(Debug, Args)]
pub struct TrainingArgs {
    /// `metrics.csv` of each trial (columns epoch, train_loss, val_rmse); each is named by
    /// the directories above it (`trial/3`).
    #[arg(long, value_name = "CSV", num_args = 1.., required = true)]
    pub metrics: Vec<PathBuf>,
    /// The ranked table of `twin-kernel select` (`ranked.csv`): its first row is the chosen
    /// trial, drawn bold.
    #[arg(long, value_name = "CSV")]
    pub ranked: Option<PathBuf>,
    /// The figure (PNG).
    #[arg(long, value_name = "PNG")]
    pub out: PathBuf,
    /// The ranked trials as a Markdown table, the chosen one in bold (needs `--ranked`).
    #[arg(long, value_name = "MD", requires = "ranked")]
    pub table: Option<PathBuf>,
}

fn plot_err(path: &Path, reason: impl Into<String>) -> KernelError {
    KernelError::Plot { path: path.to_path_buf(), reason: reason.into() }
}

fn read(path: &Path) -> Result<String, KernelError> {
    std::fs::read_to_string(path).map_err(|source| KernelError::Io { path: path.to_path_buf(), action: "read", source })
}

/// Rows of a CSV as column → text.
fn csv_rows(path: &Path) -> Result<Vec<BTreeMap<String, String>>, KernelError> {
    let text = read(path)?;
    let mut r = csv::Reader::from_reader(text.as_bytes());
    r.deserialize().collect::<Result<_, _>>().map_err(|e| plot_err(path, e.to_string()))
}

fn num(row: &BTreeMap<String, String>, col: &str, path: &Path) -> Result<f64, KernelError> {
    let v = row.get(col).ok_or_else(|| plot_err(path, format!("has no column `{col}`")))?;
    Ok(if v.is_empty() {
        f64::NAN
    } else {
        v.parse().map_err(|_| plot_err(path, format!("`{col}` = `{v}` is not a number")))?
    })
}

fn save(path: &Path, image: &MapImage, what: &str) -> Result<(), KernelError> {
    let out = write_png(path, image)?;
    tracing::info!(path = %super::shown(&out), width = image.width, height = image.height, "wrote {what}");
    Ok(())
}

fn figure(path: &Path, r: Result<MapImage, twinflow_stage::figures::FigureError>) -> Result<MapImage, KernelError> {
    r.map_err(|e| plot_err(path, e.to_string()))
}

/// Runs `twin-kernel plot ...` (serial).
pub(super) fn run_plot(command: PlotCommand) -> Result<(), KernelError> {
    match command {
        PlotCommand::Scores(a) => plot_scores(&a),
        PlotCommand::Detector(a) => plot_detector(&a),
        PlotCommand::Training(a) => plot_training(&a),
        PlotCommand::Profile(a) => plot_profile(&a),
        PlotCommand::Online(a) => plot_online(&a),
    }
}

fn plot_online(a: &OnlineArgs) -> Result<(), KernelError> {
    let rows = csv_rows(&a.scores)?;
    if rows.is_empty() {
        return Err(plot_err(&a.scores, "has no rows"));
    }
    let mut online = Vec::new();
    let mut frozen = Vec::new();
    for row in &rows {
        let cycle = num(row, "cycle", &a.scores)?;
        online.push((cycle, 100.0 * num(row, "online_bias", &a.scores)?));
        frozen.push((cycle, 100.0 * num(row, "frozen_bias", &a.scores)?));
    }
    let (first, last) = (online[0].0, online[online.len() - 1].0.max(online[0].0 + 1.0));
    let band =
        |y: f64, name: &str| Line { dashed: true, markers: false, ..Line::new(name, vec![(first, y), (last, y)], 6) };
    let panel = Panel {
        title: "energy bias on held-out events per window".into(),
        x_desc: "cycle (window)".into(),
        y_desc: "bias ⟨(E_est − E)/E⟩ (%)".into(),
        lines: vec![
            Line::new("online (recalibrated)", online, 0),
            Line::new("frozen (first window)", frozen, 1),
            band(1.0, "+1 %"),
            band(-1.0, "−1 %"),
        ],
        log_y: false,
        from_zero: false,
    };
    let image = figure(&a.bias, line_panels("online detector twin: bias per window", &[panel]))?;
    save(&a.bias, &image, "bias per window")?;
    if let (Some(cells_png), Some(state)) = (&a.cells, &a.monitor) {
        let text = read(state)?;
        let state: twinflow_online::monitor::MonitorState =
            serde_json::from_str(&text).map_err(|e| plot_err(state, e.to_string()))?;
        let [layers, ny, nx] = state.shape;
        let (block, cols) = (16, ny * nx);
        let (width, height) = (cols * block, layers * block);
        let mut rgb = vec![255_u8; width * height * 3];
        for f in &state.cells {
            use twinflow_online::monitor::CellState;
            let colour = match f.state {
                CellState::Unmonitored => [200, 200, 200],
                CellState::Ok => [0, 158, 115],
                CellState::Dead => [0, 0, 0],
                CellState::Hot => [213, 94, 0],
                CellState::GainJump => [230, 159, 0],
            };
            let [l, y, x] = f.cell;
            let col = y * nx + x;
            for py in l * block + 1..(l + 1) * block - 1 {
                for px in col * block + 1..(col + 1) * block - 1 {
                    rgb[(py * width + px) * 3..(py * width + px) * 3 + 3].copy_from_slice(&colour);
                }
            }
        }
        save(cells_png, &MapImage { width, height, rgb }, "cell flags")?;
    }
    Ok(())
}

fn plot_scores(a: &ScoresArgs) -> Result<(), KernelError> {
    let rows = csv_rows(&a.scores)?;
    let mut by_label: BTreeMap<String, Vec<[f64; 5]>> = BTreeMap::new();
    for row in &rows {
        let label = row.get("label").cloned().ok_or_else(|| plot_err(&a.scores, "has no column `label`"))?;
        let v = ["time", "rmse_wet", "spread_wet", "rmse_gauges", "spread_gauges"];
        let mut vals = [0.0; 5];
        for (k, c) in v.iter().enumerate() {
            vals[k] = num(row, c, &a.scores)?;
        }
        by_label.entry(label).or_default().push(vals);
    }
    if by_label.is_empty() {
        return Err(plot_err(&a.scores, "has no rows"));
    }
    // Forecast, analysis, open loop first in that order, then any other label.
    let order = ["forecast", "analysis", "openloop"];
    let mut labels: Vec<&String> = by_label.keys().collect();
    labels.sort_by_key(|l| order.iter().position(|o| o == l).unwrap_or(order.len()));
    let panel = |title: &str, rmse: usize, spread: usize| Panel {
        title: title.into(),
        x_desc: "cycle time (s)".into(),
        y_desc: "depth (m)".into(),
        lines: labels
            .iter()
            .enumerate()
            .flat_map(|(k, l)| {
                let pts = |c: usize| by_label[*l].iter().map(|v| (v[0], v[c])).collect::<Vec<_>>();
                let rmse = Line::new(format!("{l} RMSE"), pts(rmse), k);
                let spread = Line { dashed: true, markers: false, ..Line::new(format!("{l} spread"), pts(spread), k) };
                // The open loop's spread is the forecast's: drawing it twice says nothing.
                if l.as_str() == "openloop" { vec![rmse] } else { vec![rmse, spread] }
            })
            .collect(),
        log_y: false,
        from_zero: true,
    };
    let image = figure(
        &a.scores,
        line_panels(
            "Twin scores per cycle against the nature run",
            &[panel("over the wet cells", 1, 2), panel("at the gauges", 3, 4)],
        ),
    )?;
    save(&a.out, &image, "scores figure")
}

fn plot_detector(a: &DetectorArgs) -> Result<(), KernelError> {
    let text = read(&a.report)?;
    let report: serde_json::Value = serde_json::from_str(&text).map_err(|e| plot_err(&a.report, e.to_string()))?;
    let calo = report.get("calorimeter").ok_or_else(|| plot_err(&a.report, "has no `calorimeter` section"))?;
    let series = |bins: &str, x: &str, est: &str, field: &str| -> Vec<(f64, f64)> {
        calo.get(bins)
            .and_then(|b| b.as_array())
            .map(|b| {
                b.iter().filter_map(|bin| Some((bin.get(x)?.as_f64()?, bin.get(est)?.get(field)?.as_f64()?))).collect()
            })
            .unwrap_or_default()
    };
    let model = series("bins", "e_mean", "model", "resolution");
    let naive = series("bins", "e_mean", "naive", "resolution");
    if model.is_empty() {
        return Err(plot_err(&a.report, "has no `calorimeter.bins[].model.resolution`"));
    }
    let mut lines = vec![];
    for (k, (name, pts)) in [("model", model), ("Σ cells / sampling fraction", naive)].into_iter().enumerate() {
        if pts.is_empty() {
            continue;
        }
        if let Some((fa, fb)) = fit_resolution(&pts) {
            let (lo, hi) = pts.iter().fold((f64::MAX, f64::MIN), |(l, h), (e, _)| (l.min(*e), h.max(*e)));
            let curve: Vec<(f64, f64)> = (0..=50)
                .map(|i| lo + (hi - lo) * i as f64 / 50.0)
                .map(|e| (e, ((fa / e.sqrt()).powi(2) + fb * fb).sqrt()))
                .collect();
            let label = format!("fit {:.1} %/√E ⊕ {:.2} %", 100.0 * fa, 100.0 * fb);
            tracing::info!(estimator = name, a = fa, b = fb, "resolution fit");
            lines.push(Line { dashed: true, markers: false, ..Line::new(label, curve, k) });
        }
        lines.push(Line::new(name, pts, k));
    }
    let resolution = Panel {
        title: "energy resolution".into(),
        x_desc: "E (GeV)".into(),
        y_desc: "σ/E".into(),
        lines,
        log_y: false,
        from_zero: true,
    };
    let image = figure(&a.report, line_panels("Calorimeter resolution against energy", &[resolution]))?;
    save(&a.resolution, &image, "resolution figure")?;
    if let Some(path) = &a.bias {
        let model = series("temperature_bins", "t_mean", "model", "bias");
        let naive = series("temperature_bins", "t_mean", "naive", "bias");
        if model.is_empty() {
            return Err(plot_err(&a.report, "has no `calorimeter.temperature_bins[].model.bias`"));
        }
        let pct = |v: Vec<(f64, f64)>| v.into_iter().map(|(t, b)| (t, 100.0 * b)).collect::<Vec<_>>();
        let zero = Line {
            dashed: true,
            markers: false,
            ..Line::new("no bias", model.iter().map(|(t, _)| (*t, 0.0)).collect(), 6)
        };
        let bias = Panel {
            title: "calibration bias".into(),
            x_desc: "temperature (K)".into(),
            y_desc: "energy bias (%)".into(),
            lines: vec![
                Line::new("model", pct(model), 0),
                Line::new("Σ cells / sampling fraction", pct(naive), 1),
                zero,
            ],
            log_y: false,
            from_zero: false,
        };
        let image = figure(&a.report, line_panels("Calibration bias against temperature", &[bias]))?;
        save(path, &image, "bias figure")?;
    }
    Ok(())
}

/// One energy band of a profile figure: the mean measured and predicted fractions per X0.
struct Band {
    e_min: f64,
    e_max: f64,
    events: usize,
    /// Σ over the events of the fraction of the event's cell energy in each layer.
    measured: Vec<f64>,
    /// Σ over the events of GP's mean-profile density on the fine grid (photons convolved
    /// with their conversion depth once, at the end, as the convolution is linear).
    electrons: Vec<f64>,
    photons: Vec<f64>,
    photon_events: usize,
}

/// Events read per slab of `/cells` (bounded memory whatever the run's size).
const PROFILE_SLAB_EVENTS: usize = 512;
/// Step of the fine depth grid of the GP curves, X0.
const PROFILE_GRID_X0: f64 = 0.02;
/// The GP density of an event is evaluated to this many X0 beyond the stack (its tail
/// matters for the normalisation only through the part inside, but the unit integral needs it).
const PROFILE_TAIL_X0: f64 = 60.0;

fn plot_profile(a: &ProfileArgs) -> Result<(), KernelError> {
    use twinflow_exchange::{ArrayFile, Attr, H5File};
    let path = &a.data;
    let h5 = H5File::open(path).map_err(|e| plot_err(path, format!("cannot be read as HDF5 ({e})")))?;
    let root = h5.root()?;
    let number = |name: &str| -> Result<f64, KernelError> {
        match root.attr(name)? {
            Some(Attr::F64(v)) if v.len() == 1 && v[0].is_finite() && v[0] > 0.0 => Ok(v[0]),
            Some(Attr::F32(v)) if v.len() == 1 && v[0].is_finite() && v[0] > 0.0 => Ok(f64::from(v[0])),
            Some(_) => Err(plot_err(path, format!("root attribute `{name}` is not one positive number"))),
            None => Err(plot_err(path, format!("has no root attribute `{name}` (not a `twin-kernel calo` output?)"))),
        }
    };
    let x0_mm = number(twinflow_calo::names::RADIATION_LENGTH_MM)?;
    let ec_mev = number(twinflow_calo::names::CRITICAL_ENERGY_MEV)?;
    let layer_mm = number("layer_thickness_mm")?;
    // The medium (Z, sampling frequency, ê) from the run's own resolved configuration.
    let medium = match root.attr(twinflow_calo::names::CONFIGURATION)? {
        Some(Attr::Str(json)) => {
            let config: twinflow_calo::CaloConfig = serde_json::from_str(&json)
                .map_err(|e| plot_err(path, format!("root attribute `configuration`: {e}")))?;
            config
                .validate()
                .map_err(|issues| {
                    let list: Vec<String> = issues.iter().map(ToString::to_string).collect();
                    plot_err(path, format!("root attribute `configuration` is not valid: {}", list.join("; ")))
                })?
                .medium
        }
        _ => return Err(plot_err(path, "has no root attribute `configuration` (not a `twin-kernel calo` output?)")),
    };
    drop(root);
    drop(h5);

    let file = ArrayFile::open(path)?;
    let shape = file.shape(twinflow_calo::names::CELLS)?.ok_or_else(|| plot_err(path, "has no dataset `/cells`"))?;
    let [events, layers, ny, nx] = shape[..] else {
        return Err(plot_err(path, format!("`/cells` has the shape {shape:?}, not [event, layer, y, x]")));
    };
    if events == 0 || layers == 0 {
        return Err(plot_err(path, "`/cells` has no events or no layers"));
    }
    let energy = file.read_all("truth/energy")?;
    let particle = file.read_all("truth/particle")?;
    if energy.len() != events || particle.len() != events {
        return Err(plot_err(path, format!("`/truth/energy` and `/truth/particle` do not have {events} events")));
    }
    let (lo, hi) =
        energy.iter().filter(|e| e.is_finite()).fold((f64::MAX, f64::MIN), |(l, h), e| (l.min(*e), h.max(*e)));
    if lo > hi || lo <= 0.0 {
        return Err(plot_err(path, "`/truth/energy` has no positive energy"));
    }
    let nbands = if hi > lo { a.bands as usize } else { 1 };
    let band_of = |e: f64| {
        (((e - lo) / (hi - lo).max(f64::MIN_POSITIVE)) * nbands as f64).floor().clamp(0.0, (nbands - 1) as f64) as usize
    };
    let dt = layer_mm / x0_mm;
    let depth = layers as f64 * dt;
    let grid: Vec<f64> =
        (0..).map(|k| k as f64 * PROFILE_GRID_X0).take_while(|t| *t <= depth + PROFILE_TAIL_X0).collect();
    let mut bands: Vec<Band> = (0..nbands)
        .map(|b| Band {
            e_min: lo + (hi - lo) * b as f64 / nbands as f64,
            e_max: lo + (hi - lo) * (b + 1) as f64 / nbands as f64,
            events: 0,
            measured: vec![0.0; layers],
            electrons: vec![0.0; grid.len()],
            photons: vec![0.0; grid.len()],
            photon_events: 0,
        })
        .collect();
    let per_event = layers * ny * nx;
    let mut first = 0;
    while first < events {
        let rows = first..(first + PROFILE_SLAB_EVENTS).min(events);
        let cells = file.read_rows(twinflow_calo::names::CELLS, 4, rows.clone())?;
        for (k, event) in rows.clone().enumerate() {
            let e = energy[event];
            let per_layer: Vec<f64> = cells[k * per_event..(k + 1) * per_event]
                .chunks(ny * nx)
                .map(|l| l.iter().filter(|v| v.is_finite()).sum())
                .collect();
            let total: f64 = per_layer.iter().sum();
            if !e.is_finite() || e <= 0.0 || total <= 0.0 {
                continue;
            }
            let band = &mut bands[band_of(e)];
            band.events += 1;
            for (m, v) in band.measured.iter_mut().zip(&per_layer) {
                *m += v / total;
            }
            let (t, alpha) = twinflow_calo::gp_mean_profile((e * 1000.0 / ec_mev).ln(), &medium);
            let density = twinflow_calo::gamma_profile(t, alpha, &grid);
            let sum = if particle[event] as i32 == 22 {
                band.photon_events += 1;
                &mut band.photons
            } else {
                &mut band.electrons
            };
            for (s, d) in sum.iter_mut().zip(&density) {
                *s += d;
            }
        }
        first = rows.end;
    }
    // Photons first travel an exponential depth of mean 9/7 X0: their mean density is the
    // electrons' convolved with it (on the grid, once per band).
    let lambda = twinflow_calo::PHOTON_CONVERSION_X0;
    for band in bands.iter_mut().filter(|b| b.photon_events > 0) {
        let kernel: Vec<f64> = grid.iter().map(|t| (-t / lambda).exp() / lambda * PROFILE_GRID_X0).collect();
        for (i, e) in band.electrons.iter_mut().enumerate() {
            *e += (0..=i).map(|j| kernel[j] * band.photons[i - j]).sum::<f64>();
        }
    }
    let mut lines = vec![];
    let mut csv = String::from("band,e_min,e_max,events,layer,depth_x0,measured,gp\n");
    for (b, band) in bands.iter().enumerate().filter(|(_, b)| b.events > 0) {
        let n = band.events as f64;
        // GP's mean density, normalised over the stack's depth as the measured fractions are.
        let inside = grid.iter().take_while(|t| **t <= depth).count();
        let area: f64 = band.electrons[..inside].windows(2).map(|v| 0.5 * PROFILE_GRID_X0 * (v[0] + v[1])).sum();
        if area <= 0.0 {
            continue;
        }
        let gp: Vec<(f64, f64)> = grid[..inside].iter().zip(&band.electrons).map(|(t, v)| (*t, v / area)).collect();
        let measured: Vec<(f64, f64)> =
            band.measured.iter().enumerate().map(|(l, m)| ((l as f64 + 0.5) * dt, m / n / dt)).collect();
        for (l, (t, m)) in measured.iter().enumerate() {
            // GP's fraction in the layer, per X0: its density averaged over the layer.
            let (t0, t1) = (l as f64 * dt, (l + 1) as f64 * dt);
            let inl: Vec<f64> = gp.iter().filter(|(t, _)| *t >= t0 && *t <= t1).map(|(_, v)| *v).collect();
            let g = if inl.is_empty() { f64::NAN } else { inl.iter().sum::<f64>() / inl.len() as f64 };
            csv.push_str(&format!(
                "{b},{:.3},{:.3},{},{l},{t:.4},{m:.6},{g:.6}\n",
                band.e_min, band.e_max, band.events
            ));
        }
        let label = format!("{:.0}–{:.0} GeV", band.e_min, band.e_max);
        tracing::info!(band = %label, events = band.events, "mean longitudinal profile");
        lines.push(Line::new(format!("{label}, cells"), measured, b));
        lines.push(Line { dashed: true, markers: false, ..Line::new(format!("{label}, GP"), gp, b) });
    }
    if lines.is_empty() {
        return Err(plot_err(path, "has no event with energy in its cells"));
    }
    let panel = Panel {
        title: "per energy band: cells (points), GP (dashed)".into(),
        x_desc: "depth t (X0)".into(),
        y_desc: "fraction of the energy per X0".into(),
        lines,
        log_y: false,
        from_zero: true,
    };
    let image = figure(path, line_panels("Mean longitudinal profile against Grindhammer–Peters (GP)", &[panel]))?;
    save(&a.out, &image, "profile figure")?;
    if let Some(table) = &a.table {
        write_text(table, &csv, "profile table")?;
    }
    Ok(())
}

/// Writes `text` to `path` atomically (a partial file renamed into place).
fn write_text(path: &Path, text: &str, what: &str) -> Result<(), KernelError> {
    let partial = twinflow_exchange::PartialFile::new(path)?;
    std::fs::write(partial.partial_path(), text).map_err(|source| KernelError::Io {
        path: path.to_path_buf(),
        action: "write",
        source,
    })?;
    let done = partial.commit()?;
    tracing::info!(path = %super::shown(&done), "wrote {what}");
    Ok(())
}

/// `trial/3` for `.../trial/3/out/metrics.csv`.
fn trial_name(path: &Path) -> String {
    let parts: Vec<String> = path
        .parent()
        .into_iter()
        .flat_map(|p| p.components().rev())
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .filter(|c| c != "out")
        .take(2)
        .collect();
    parts.into_iter().rev().collect::<Vec<_>>().join("/")
}

fn plot_training(a: &TrainingArgs) -> Result<(), KernelError> {
    // The chosen trial: the directory of the first ranked row's model.
    let chosen: Option<PathBuf> = match &a.ranked {
        Some(r) => {
            let rows = csv_rows(r)?;
            let first = rows.first().ok_or_else(|| plot_err(r, "has no rows"))?;
            first.get("path").and_then(|p| Path::new(p).parent()).and_then(|d| d.canonicalize().ok())
        }
        None => None,
    };
    let (mut loss, mut val) = (vec![], vec![]);
    for (k, m) in a.metrics.iter().enumerate() {
        let rows = csv_rows(m)?;
        let mut pts = (vec![], vec![]);
        for row in &rows {
            let e = num(row, "epoch", m)?;
            pts.0.push((e, num(row, "train_loss", m)?));
            pts.1.push((e, num(row, "val_rmse", m)?));
        }
        let dir = m.parent().and_then(|d| d.canonicalize().ok());
        let bold = chosen.is_some() && dir == chosen;
        let name = format!("{}{}", trial_name(m), if bold { " (chosen)" } else { "" });
        let line = |p| Line { bold, markers: false, ..Line::new(name.clone(), p, k) };
        loss.push(line(pts.0));
        val.push(line(pts.1));
    }
    let panel = |title: &str, y: &str, lines, log_y| Panel {
        title: title.into(),
        x_desc: "epoch".into(),
        y_desc: y.into(),
        lines,
        log_y,
        from_zero: !log_y,
    };
    let image = figure(
        &a.metrics[0],
        line_panels(
            "Training curves of the sweep",
            &[
                panel("training loss", "loss (scaled target)", loss, true),
                panel("validation RMSE", "RMSE (GeV)", val, false),
            ],
        ),
    )?;
    save(&a.out, &image, "training curves")?;
    if let (Some(table), Some(ranked)) = (&a.table, &a.ranked) {
        let md = ranked_markdown(
            &read(ranked)?,
            &["rank", "trial", "val_rmse", "best_epoch", "epochs_run", "hidden", "depth", "lr", "batch_size"],
        )
        .map_err(|e| plot_err(ranked, e.to_string()))?;
        write_text(table, &md, "ranked table")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::trial_name;
    use std::path::Path;

    #[test]
    fn a_trial_is_named_by_its_step_and_member() {
        assert_eq!(trial_name(Path::new("/r/steps/twin/trial/3/out/metrics.csv")), "trial/3");
        assert_eq!(trial_name(Path::new("metrics.csv")), "");
    }
}
