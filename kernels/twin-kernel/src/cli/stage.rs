//! `twin-kernel stage ...`, `summary` and `info`: argument handling around the library.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use twinflow_contract::datasets;
use twinflow_exchange::{Compression, Dataset, Provenance, Values, read_dataset, write_dataset};
use twinflow_stage::figures::{FloodMap, GaugeSeriesPlot, Series, flood_map, gauge_table, hydrographs};
use twinflow_stage::summary::{self, SummaryError, SummaryOptions};
use twinflow_stage::{self as stage, StageError, Subset};

use super::args::{StageCommand, SubsetArgs, SummaryArgs};

/// Runs a staging command.
pub(super) fn run_stage(command: StageCommand, command_line: &str) -> Result<(), super::KernelError> {
    let compression = Compression::default();
    match command {
        StageCommand::Convert { input, output } => {
            let out = stage::convert(&input, &output, command_line, &compression)?;
            tracing::info!(path = %super::shown(&out), "wrote");
        }
        StageCommand::Subset(args) => {
            let sel = subset_of(&args);
            let out = stage::subset_file(&args.input, &args.output, &sel, command_line, &compression)?;
            tracing::info!(path = %super::shown(&out), "wrote");
        }
        StageCommand::Regrid { input, output, like } => {
            let out = stage::regrid_file(&input, &output, &like, command_line, &compression)?;
            tracing::info!(path = %super::shown(&out), "wrote");
        }
        StageCommand::Merge { output, mut inputs, list } => {
            if let Some(list) = list {
                inputs.extend(read_list(&list)?);
            }
            let out = stage::merge(&inputs, &output, command_line, &compression)?;
            tracing::info!(path = %super::shown(&out), members = inputs.len(), "wrote");
        }
        StageCommand::Checksum { files, out } => {
            let sums = files.iter().map(|f| stage::checksum(f)).collect::<Result<Vec<_>, _>>()?;
            let text = serde_json::to_string_pretty(&serde_json::json!({ "files": sums }))? + "\n";
            match out {
                Some(path) => std::fs::write(&path, text).map_err(|source| StageError::Io {
                    path: path.clone(),
                    action: "write",
                    source,
                })?,
                None => std::io::stdout().write_all(text.as_bytes())?,
            }
        }
    }
    Ok(())
}

fn subset_of(a: &SubsetArgs) -> Subset {
    Subset { x: (a.x0, a.x1), y: (a.y0, a.y1), i: (a.i0, a.i1), j: (a.j0, a.j1), t: (a.t0, a.t1) }
}

/// Paths listed one per line; blank lines and `#` comments are skipped.
fn read_list(path: &Path) -> Result<Vec<PathBuf>, StageError> {
    let text = std::fs::read_to_string(path).map_err(|source| StageError::Io {
        path: path.to_path_buf(),
        action: "read",
        source,
    })?;
    Ok(text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(PathBuf::from).collect())
}

/// Runs `twin-kernel summary`.
pub(super) fn run_summary(args: SummaryArgs, command_line: &str) -> Result<(), super::KernelError> {
    let maps = read_dataset(&args.maps)?;
    let gauges = args.gauges.as_ref().map(|p| read_dataset(p).map(|d| (d, p))).transpose()?;
    let dem = args.dem.as_ref().map(|p| read_dataset(p).map(|d| (d, p))).transpose()?;
    let options = SummaryOptions {
        thresholds: args.thresholds.clone(),
        arrival_depth: args.arrival_depth,
        warn_level: args.warn_level,
    };
    let parameters = serde_json::json!({
        "thresholds": args.thresholds,
        "arrival_depth": args.arrival_depth,
        "warn_level": args.warn_level,
        "maps": args.maps,
        "gauges": args.gauges,
        "dem": args.dem,
    })
    .to_string();
    let provenance =
        Provenance::from_env("twinflow flood ensemble summary", "twin-kernel summary", parameters, command_line);
    let s = summary::summarize(
        (&maps, &args.maps),
        gauges.as_ref().map(|(d, p)| (d, p.as_path())),
        dem.as_ref().map(|(d, p)| (d, p.as_path())),
        &options,
        &provenance,
    )?;
    let out = write_dataset(&args.out, &s.dataset, &Compression::default())?;
    tracing::info!(path = %super::shown(&out), members = s.members, "wrote summary");
    for w in s.warnings.iter().filter(|w| w.warn) {
        let arrival = |t: f64| if t.is_nan() { "-".to_string() } else { format!("{t} s") };
        tracing::info!(
            gauge = %w.gauge,
            threshold = w.threshold,
            probability = w.probability,
            "WARNING: gauge `{}` exceeds {} m with probability {} (earliest arrival {}, median {})",
            w.gauge,
            w.threshold,
            w.probability,
            arrival(w.arrival_earliest),
            arrival(w.arrival_median)
        );
    }
    if let Some(level) = args.warn_level {
        tracing::info!(warnings = s.warnings.iter().filter(|w| w.warn).count(), level, "gauge warnings");
    }
    if let Some(path) = &args.warnings_out {
        let out = summary::write_warnings(path, &s.warnings)?;
        tracing::info!(path = %super::shown(&out), rows = s.warnings.len(), "wrote warnings");
    }
    if let Some(png) = &args.png {
        let shown = args.png_threshold.unwrap_or(args.thresholds[0]);
        let Some(k) = args.thresholds.iter().position(|&t| t == shown) else {
            return Err(SummaryError::Request(format!(
                "`--png-threshold {shown}` is not one of the thresholds {:?}",
                args.thresholds
            ))
            .into());
        };
        let (nx, ny) = s.shape;
        let coord =
            |name: &str| s.dataset.variable(name).and_then(|v| v.num()).map(<[f64]>::to_vec).unwrap_or_default();
        let (x, y) = (coord(datasets::X), coord(datasets::Y));
        let gauges =
            match (s.dataset.variable("station_name").map(|v| &v.values), coord("station_x"), coord("station_y")) {
                (Some(Values::Str(names)), xs, ys) if xs.len() == names.len() && ys.len() == names.len() => {
                    names.iter().zip(xs).zip(ys).map(|((n, x), y)| (n.clone(), x, y)).collect()
                }
                _ => vec![],
            };
        let map = FloodMap {
            x: &x,
            y: &y,
            field: &s.exceedance[k * nx * ny..(k + 1) * nx * ny],
            bed: s.bed.as_deref(),
            title: format!("P(maximum depth > {shown} m), {} members", s.members),
            colour_label: "exceedance probability".into(),
            gauges,
        };
        let image = flood_map(&map).map_err(|e| SummaryError::Request(e.to_string()))?;
        let out = summary::write_png(png, &image)?;
        tracing::info!(path = %super::shown(&out), width = image.width, height = image.height, threshold = shown, "wrote map");
    }
    if let (Some(path), Some((g, gpath))) = (&args.hydrographs, &gauges) {
        let image =
            hydrograph_figure(g, gpath, args.truth_gauges.as_deref(), args.observed_gauges.as_deref(), s.members)?;
        let out = summary::write_png(path, &image)?;
        tracing::info!(path = %super::shown(&out), width = image.width, height = image.height, "wrote hydrographs");
    }
    if let Some(path) = &args.gauge_table {
        let Some((csv, md)) = gauge_table(&s.dataset) else {
            return Err(SummaryError::Request("`--gauge-table`: the summary has no gauges".into()).into());
        };
        for (p, text) in [(path.clone(), csv), (path.with_extension("md"), md)] {
            let partial = twinflow_exchange::PartialFile::new(&p)?;
            std::fs::write(partial.partial_path(), text).map_err(|source| StageError::Io {
                path: p.clone(),
                action: "write",
                source,
            })?;
            let done = partial.commit()?;
            tracing::info!(path = %super::shown(&done), "wrote gauge table");
        }
    }
    Ok(())
}

/// The hydrographs of the merged gauge series `g` (`h(member, station, time)`), with the
/// truth and observations (`h(station, time)`, matched by station name) when given.
fn hydrograph_figure(
    g: &Dataset,
    path: &Path,
    truth: Option<&Path>,
    observed: Option<&Path>,
    members: usize,
) -> Result<summary::MapImage, super::KernelError> {
    let bad = |reason: String| SummaryError::Input { path: path.to_path_buf(), reason };
    let v = g.variable(datasets::DEPTH).ok_or_else(|| bad(format!("has no `{}`", datasets::DEPTH)))?;
    let depth = v.masked().ok_or_else(|| bad(format!("`{}` is not numeric", datasets::DEPTH)))?;
    let time = g.coordinate(datasets::TIME).ok_or_else(|| bad("has no `time` coordinate".into()))?.to_vec();
    let ns = g.dim_len(datasets::STATION);
    let names: Vec<String> = match g.variable("station_name").map(|v| &v.values) {
        Some(Values::Str(s)) if s.len() == ns => s.clone(),
        _ => (0..ns).map(|k| format!("station-{k}")).collect(),
    };
    let series = |p: Option<&Path>| -> Result<Vec<Option<Series>>, super::KernelError> {
        let Some(p) = p else { return Ok(vec![None; ns]) };
        let d = read_dataset(p)?;
        let bad = |reason: String| SummaryError::Input { path: p.to_path_buf(), reason };
        let h = d
            .variable(datasets::DEPTH)
            .and_then(|v| v.masked())
            .ok_or_else(|| bad(format!("has no numeric `{}`", datasets::DEPTH)))?;
        let t = d.coordinate(datasets::TIME).ok_or_else(|| bad("has no `time` coordinate".into()))?.to_vec();
        let theirs: Vec<String> = match d.variable("station_name").map(|v| &v.values) {
            Some(Values::Str(s)) => s.clone(),
            _ => return Err(bad("has no `station_name`".into()).into()),
        };
        if h.len() != theirs.len() * t.len() {
            return Err(
                bad(format!("`{}` is not (station, time) = ({}, {})", datasets::DEPTH, theirs.len(), t.len())).into()
            );
        }
        Ok(names
            .iter()
            .map(|n| {
                theirs
                    .iter()
                    .position(|t2| t2 == n)
                    .map(|k| Series { time: t.clone(), values: h[k * t.len()..(k + 1) * t.len()].to_vec() })
            })
            .collect())
    };
    let plot = GaugeSeriesPlot {
        names: &names,
        time: &time,
        depth: &depth,
        members,
        truth: series(truth)?,
        observed: series(observed)?,
        title: format!("Depth at the gauges: ensemble of {members} members"),
    };
    Ok(hydrographs(&plot).map_err(|e| SummaryError::Request(e.to_string()))?)
}

/// `twin-kernel info`: version and compiled-in features, one `key: value` per line.
pub(super) fn info() -> String {
    let mpi = if cfg!(feature = "mpi") { "yes" } else { "no (build with `--features mpi`)" };
    let kernels: Vec<&str> = twinflow_contract::KERNELS.iter().copied().filter(|k| *k != "info").collect();
    format!("twin-kernel {}\nmpi: {mpi}\nkernels: {}\n", env!("CARGO_PKG_VERSION"), kernels.join(" "))
}
