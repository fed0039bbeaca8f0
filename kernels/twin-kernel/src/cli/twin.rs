//! `twin-kernel sensor` and `twin-kernel verify`: the physical twin's gauge network and the
//! scores of twin experiments, clap arguments and runners around `twinflow-assim`.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use twinflow_assim::sensor::{GaugeTruth, Sensor, SensorConfig, WallClock};
use twinflow_assim::verify::{self, VerifyRequest};
use twinflow_contract::datasets;
use twinflow_exchange::Provenance;

use super::KernelError;

/// Help text after the options of `twin-kernel sensor`.
pub const SENSOR_HELP: &str = "\
Example (a reading of model time 600, 1200, … s every 2 s of wall time):
  twin-kernel sensor --truth truth_gauges.nc --variable h --out-dir obs \\
      --start 600 --every 600 --count 6 --period 2s --noise-std 0.05 --seed 1

Writes obs/gauges-600.nc, obs/gauges-1200.nc, …: CF timeSeries files (`value[station,
time]`, `error_std[station]`, station `x`, `y`, `station_name`; global attribute
`synthetic = true`) that `twin-kernel assimilate --obs` reads. Each file appears whole
(written as `.partial`, then renamed). The noise of a reading depends only on the seed, its
model time and its station. Durations: `500ms`, `2s`, `1m`, `1h` (a bare number is
seconds); `--period 0s` delivers everything at once. Stop it with SIGTERM or Ctrl-C.";

/// Help text after the options of `twin-kernel verify`.
pub const VERIFY_HELP: &str = "\
Examples:
  twin-kernel verify --ensemble states.nc --truth truth.nc --variable h \\
      --stations truth_gauges.nc --parameters inflow_scale,manning_n \\
      --label analysis --out score.csv
  twin-kernel verify --ensemble m0.nc m1.nc m2.nc --truth truth.nc --time 1200 \\
      --out score.csv --append

Writes a CSV header and one row: label,time,rmse_wet,spread_wet,wet_cells,rmse_gauges,
spread_gauges,volume,volume_truth, then <p>_mean,<p>_std for each of `--parameters`.
RMSE of the ensemble mean and spread (root mean ensemble variance, k − 1) over the wet cells
(truth or mean ≥ `--wet`) and, with `--stations`, at the stations (bilinear); volume = mean
over members of Σ value·dx·dy (m³ for the depth `h`). Empty fields have no value.
`--append` adds the row to an existing file with the same header, one row per cycle.";

/// A duration as written on the command line: `500ms`, `2s`, `1.5m`, `1h`, or a bare
/// number of seconds. (The engine has a fuller parser; kernels never depend on the engine.)
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let s = text.trim();
    if s.starts_with('-') {
        return Err(format!("`{s}`: a duration cannot be negative"));
    }
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let n: f64 = number.parse().map_err(|_| format!("`{s}` is not a duration; hint: write `500ms`, `2s` or `1m`"))?;
    let scale = match unit.trim() {
        "" | "s" => 1.0,
        "ms" => 1e-3,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        other => return Err(format!("`{s}`: unknown unit `{other}` (use ms, s, m, h)")),
    };
    Duration::try_from_secs_f64(n * scale).map_err(|_| format!("`{s}` is out of range"))
}

/// Arguments of `twin-kernel sensor`.
#[derive(Debug, Args)]
#[command(allow_negative_numbers = true)]
pub struct SensorArgs {
    /// The truth at the gauges: a CF timeSeries file with `VARIABLE[station, time]`
    /// (the nature run's `result_gauges.nc`).
    #[arg(long, value_name = "FILE")]
    pub truth: PathBuf,
    /// Gauge variable observed.
    #[arg(long, default_value = datasets::DEPTH, value_name = "NAME")]
    pub variable: String,
    /// Directory the observation files appear in (created if missing).
    #[arg(long, value_name = "DIR")]
    pub out_dir: PathBuf,
    /// File name prefix: files are `<PREFIX><model time>.nc`.
    #[arg(long, default_value = "gauges-", value_name = "TEXT")]
    pub prefix: String,
    /// Model time of the first reading, s (must be one of the truth's times).
    #[arg(long, value_name = "S")]
    pub start: f64,
    /// Model time between readings, s.
    #[arg(long, value_name = "S")]
    pub every: f64,
    /// Number of readings.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub count: u32,
    /// Wall time between deliveries (`2s`, `500ms`, `1m`; `0s`: all at once).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub period: Duration,
    /// Wall time before the first delivery.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "0s")]
    pub delay: Duration,
    /// Standard deviation of the Gaussian noise added to the truth (units of the variable).
    #[arg(long, value_name = "SIGMA")]
    pub noise_std: f64,
    /// Error standard deviation declared in the files [default: `--noise-std`].
    #[arg(long, value_name = "SIGMA")]
    pub error_std: Option<f64>,
    /// Seed of the noise.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// Runs `twin-kernel sensor`: plans every delivery (failing before the first when a time
/// is missing from the truth), then writes each file at its wall time.
pub(super) fn run_sensor(args: SensorArgs, command_line: &str) -> Result<(), KernelError> {
    let truth = GaugeTruth::read(&args.truth, &args.variable)?;
    let config = SensorConfig {
        variable: args.variable.clone(),
        out_dir: args.out_dir.clone(),
        prefix: args.prefix.clone(),
        start: args.start,
        every: args.every,
        count: args.count,
        period: args.period,
        delay: args.delay,
        noise_std: args.noise_std,
        error_std: args.error_std.unwrap_or(args.noise_std),
        seed: args.seed,
    };
    let parameters = serde_json::json!({
        "truth": args.truth, "variable": args.variable, "start": args.start, "every": args.every,
        "count": args.count, "noise_std": config.noise_std, "error_std": config.error_std, "seed": args.seed,
    })
    .to_string();
    let provenance = Provenance::from_env("synthetic gauge readings", "twin-kernel sensor", parameters, command_line);
    let stations = truth.station_count();
    let sensor = Sensor::new(config, truth)?;
    tracing::info!(
        readings = args.count,
        stations,
        dir = %args.out_dir.display(),
        period = ?args.period,
        "sensor started"
    );
    sensor.run(&mut WallClock::start(), &provenance, |d, path| {
        tracing::info!(model_time = d.model_time, reading = d.index, path = %super::shown(path), "delivered");
    })?;
    Ok(())
}

/// Arguments of `twin-kernel verify`.
#[derive(Debug, Args)]
#[command(allow_negative_numbers = true)]
pub struct VerifyArgs {
    /// The ensemble: one file with a `member` dimension, or one file per member.
    #[arg(long, num_args = 1.., required = true, value_name = "FILE")]
    pub ensemble: Vec<PathBuf>,
    /// The truth: `VARIABLE[y, x]` or `VARIABLE[time, y, x]` on the ensemble's grid.
    #[arg(long, value_name = "FILE")]
    pub truth: PathBuf,
    /// The `[y, x]` field scored.
    #[arg(long, default_value = datasets::DEPTH, value_name = "NAME")]
    pub variable: String,
    /// Time scored, s [default: the ensemble's `model_time`, else the truth's only time].
    #[arg(long, value_name = "T")]
    pub time: Option<f64>,
    /// Cells where the truth or the ensemble mean reach this value are scored (wet), m.
    #[arg(long, value_name = "M", default_value_t = 0.05)]
    pub wet: f64,
    /// Stations (CF timeSeries file with station `x`, `y`) to score at, bilinearly.
    #[arg(long, value_name = "FILE")]
    pub stations: Option<PathBuf>,
    /// Per-member parameters to report mean and spread of (comma-separated or repeated).
    #[arg(long, value_delimiter = ',', value_name = "NAME")]
    pub parameters: Vec<String>,
    /// Label of the row (`forecast`, `analysis`, `open-loop`).
    #[arg(long, default_value = "", value_name = "TEXT")]
    pub label: String,
    /// Scores (CSV: a header and one row).
    #[arg(long, value_name = "CSV")]
    pub out: PathBuf,
    /// Append the row to `--out` if it exists (same header required).
    #[arg(long)]
    pub append: bool,
}

/// Runs `twin-kernel verify`.
pub(super) fn run_verify(args: VerifyArgs) -> Result<(), KernelError> {
    let request = VerifyRequest {
        variable: args.variable,
        time: args.time,
        wet: args.wet,
        parameters: args.parameters,
        label: args.label,
    };
    let scores = verify::verify(&args.ensemble, &args.truth, args.stations.as_deref(), &request)?;
    if scores.wet_cells == 0 {
        tracing::warn!(wet = request.wet, "no wet cell: `rmse_wet` and `spread_wet` are empty");
    }
    if let Some(g) = scores.gauges.as_ref().filter(|g| g.outside > 0) {
        tracing::warn!(outside = g.outside, used = g.used, "stations outside the grid skipped");
    }
    let path = verify::write_scores(&args.out, &scores, args.append)?;
    let row: Vec<String> = scores.header().iter().zip(scores.row()).map(|(h, v)| format!("{h}={v}")).collect();
    tracing::info!(path = %super::shown(&path), "scores {}", row.join(" "));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_duration;
    use std::time::Duration;

    #[test]
    fn durations_read_with_their_units() {
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        assert!(parse_duration("-1s").unwrap_err().contains("negative"));
        assert!(parse_duration("2 parsecs").unwrap_err().contains("unknown unit `parsecs`"));
        assert!(parse_duration("soon").unwrap_err().contains("not a duration"));
    }
}
