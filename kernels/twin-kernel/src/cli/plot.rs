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
    /// The online detector twin: energy bias per window of the online (recalibrated) and
    /// the frozen model with the ±1 % band, and a map of the cells' flags.
    Online(OnlineArgs),
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
        let partial = twinflow_exchange::PartialFile::new(table)?;
        std::fs::write(partial.partial_path(), md).map_err(|source| KernelError::Io {
            path: table.clone(),
            action: "write",
            source,
        })?;
        let done = partial.commit()?;
        tracing::info!(path = %super::shown(&done), "wrote ranked table");
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
