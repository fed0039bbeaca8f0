//! `twin-kernel stage ...`, `summary` and `info`: argument handling around the library.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use twinflow_exchange::{Compression, Provenance, read_dataset, write_dataset};
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
        let scale = args.png_scale.map_or_else(|| 640usize.div_ceil(nx.max(1)).clamp(1, 16), usize::from);
        let prob = &s.exceedance[k * nx * ny..(k + 1) * nx * ny];
        let image = summary::render(prob, s.bed.as_deref(), s.shape, s.spacing, s.y_ascending, scale);
        let out = summary::write_png(png, &image)?;
        tracing::info!(path = %super::shown(&out), width = image.width, height = image.height, threshold = shown, "wrote map");
    }
    Ok(())
}

/// `twin-kernel info`: version and compiled-in features, one `key: value` per line.
pub(super) fn info() -> String {
    let mpi = if cfg!(feature = "mpi") { "yes" } else { "no (build with `--features mpi`)" };
    let kernels: Vec<&str> = twinflow_contract::KERNELS.iter().copied().filter(|k| *k != "info").collect();
    format!("twin-kernel {}\nmpi: {mpi}\nkernels: {}\n", env!("CARGO_PKG_VERSION"), kernels.join(" "))
}
