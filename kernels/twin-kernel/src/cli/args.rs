//! Clap definitions of `twin-kernel`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use twinflow_exchange::Format;
use twinflow_flood::{BoundaryKind, ConfigIssue, FloodConfig, FloodError};

const AFTER_HELP: &str = "\
Exit codes: 0 success, 1 run failed, 2 invalid command line, 3 invalid configuration or input,
4 training stopped at a time/epoch limit with its checkpoint written (rerun to continue).
Logging: TWINFLOW_LOG=debug (tracing filter syntax), written to stderr.
SIMD: the flood loops use AVX-512 or AVX2 when the CPU has them (bit-identical results);
TWINFLOW_SIMD=avx2 or TWINFLOW_SIMD=baseline caps the instruction set.
MPI: build with `--features mpi` and launch with `mpiexec -n N twin-kernel ...`;
`twin-kernel info` says whether MPI is compiled in.";

/// Science kernels of twinflow digital twins.
#[derive(Debug, Parser)]
#[command(name = "twin-kernel", version, after_help = AFTER_HELP)]
pub struct Cli {
    /// Kernel to run.
    #[command(subcommand)]
    pub command: Command,
}

/// Kernels.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// 2D shallow-water flood simulation on a DEM.
    #[command(after_help = "Example (no downloads needed):
  twin-kernel terrain --out dem.nc --config-out flood.json
  twin-kernel flood --dem dem.nc --config flood.json --out result.nc
  mpiexec -n 2 twin-kernel flood --dem dem.nc --config flood.json --out result.nc

Outputs: result.nc (bed z, snapshots of h/u/v, max_depth, arrival_time; CF-1.10) and
result_gauges.nc (gauge time series, CF timeSeries) when gauges are configured.")]
    Flood(FloodArgs),
    /// Write a synthetic valley with a breached dam (DEM + initial reservoir) and a
    /// matching flood configuration.
    #[command(
        after_help = "Example:\n  twin-kernel terrain --out dem.nc --nx 200 --ny 100 --dx 10 --config-out flood.json"
    )]
    Terrain(TerrainArgs),
    /// Data staging: convert, subset, regrid, merge, checksum exchange files.
    #[command(subcommand)]
    Stage(StageCommand),
    /// Ensemble summary of merged flood results: exceedance probabilities, ensemble
    /// mean/max depth, gauge statistics (NetCDF) and an exceedance map (PNG).
    #[command(after_help = "Example:
  twin-kernel stage merge maps.nc m0/result.nc m1/result.nc m2/result.nc
  twin-kernel stage merge gauges.nc m0/result_gauges.nc m1/result_gauges.nc m2/result_gauges.nc
  twin-kernel summary --maps maps.nc --gauges gauges.nc --dem dem.nc \\
      --threshold 0.1 --threshold 0.5 --out summary.nc --png exceedance.png
  twin-kernel summary --maps maps.nc --gauges gauges.nc --threshold 0.5,1 --out summary.nc \\
      --warn-level 0.3 --warnings-out warnings.csv

Warnings: per gauge and threshold, the probability over members that the gauge's peak depth
exceeds the threshold, the earliest and median arrival (first sample with depth ≥ the
threshold, among the members where it arrives) and `warn = yes` when the probability is at
least `--warn-level`.")]
    Summary(SummaryArgs),
    /// Train an MLP or linear surrogate on HDF5/NetCDF data, data-parallel over MPI ranks.
    Train(Box<super::train::TrainArgs>),
    /// Apply a trained model; compare it with the naive calorimeter estimator.
    Predict(super::train::PredictArgs),
    /// Rank the trials of a sweep by validation error; keep the best K (successive halving).
    Select(super::train::SelectArgs),
    /// Build a training table from workflow outputs.
    #[command(subcommand)]
    Tabulate(super::train::TabulateCommand),
    /// Fast Monte Carlo of electromagnetic showers in a sampling calorimeter (cells + truth, HDF5).
    #[command(after_help = super::calo::AFTER_HELP)]
    Calo(Box<super::calo::CaloArgs>),
    /// Ensemble data assimilation (stochastic EnKF, ETKF, LETKF) of observations into
    /// forecast members, with diagnostics.
    #[command(after_help = super::assim::ASSIMILATE_HELP)]
    Assimilate(Box<super::assim::AssimilateArgs>),
    /// The Lorenz-96 testbed: advance states, generate a truth with observations, run a
    /// whole twin experiment in process.
    #[command(subcommand, after_help = super::assim::LORENZ96_HELP)]
    Lorenz96(super::assim::Lorenz96Command),
    /// The physical twin's gauge network: one observation file (truth + noise) per
    /// interval, delivered on a wall clock.
    #[command(after_help = super::twin::SENSOR_HELP)]
    Sensor(super::twin::SensorArgs),
    /// Score an ensemble against the truth of a twin experiment: RMSE and spread over wet
    /// cells and at gauges, volume, parameters (one CSV row).
    #[command(after_help = super::twin::VERIFY_HELP)]
    Verify(super::twin::VerifyArgs),
    /// Figures of results: a twin's scores per cycle, a detector's resolution and bias, a
    /// sweep's training curves (PNG with axes, units and legends; text in a bundled font).
    #[command(subcommand, after_help = super::plot::PLOT_HELP)]
    Plot(super::plot::PlotCommand),
    /// Stream ingest: records from an MQTT broker, checked against a schema, written as
    /// windows of HDF5/NetCDF files that appear atomically; invalid ones dead-lettered.
    #[command(after_help = super::ingest::INGEST_HELP)]
    Ingest(Box<super::ingest::IngestArgs>),
    /// The "physical detector" of the online twin: calibration events of the calorimeter
    /// with a drifting temperature and failing cells, published to MQTT at a rate.
    #[command(after_help = super::online::DETECTOR_SIM_HELP)]
    DetectorSim(Box<super::online::DetectorSimArgs>),
    /// The online detector twin's steps: warm-started model update, validation gate with
    /// a versioned payload, per-cell anomaly detection.
    #[command(subcommand, after_help = super::online::ONLINE_HELP)]
    Online(super::online::OnlineCommand),
    /// Print the version and the compiled-in features (MPI) and exit.
    Info,
}

/// Staging operations (rank 0 works; other ranks of an MPI launch only wait).
#[derive(Debug, Subcommand)]
pub enum StageCommand {
    /// Convert between NetCDF-4 and HDF5 (by extension: `.h5`/`.hdf5` → HDF5), keeping
    /// dimensions, types and attributes.
    #[command(after_help = "Example:\n  twin-kernel stage convert result.nc result.h5")]
    Convert {
        /// Input file.
        input: PathBuf,
        /// Output file.
        output: PathBuf,
    },
    /// Cut a coordinate box, an index box and/or a time range.
    #[command(after_help = "Examples:
  twin-kernel stage subset result.nc box.nc --x0 100 --x1 400 --y0 50 --y1 200
  twin-kernel stage subset result.nc late.nc --t0 60
  twin-kernel stage subset dem.nc corner.nc --i0 0 --i1 32 --j0 0 --j1 24

Coordinate bounds are inclusive and select cell centres (stations in a station file);
index ranges are half-open (i0..i1) in file order.")]
    Subset(SubsetArgs),
    /// Interpolate bilinearly onto the x/y grid of another file.
    #[command(after_help = "Example:\n  twin-kernel stage regrid coarse.nc fine.nc --like dem.nc

Points up to half a cell outside the source's outer cell centres take the edge value;
points farther out get the fill value.")]
    Regrid {
        /// Input file (gridded).
        input: PathBuf,
        /// Output file.
        output: PathBuf,
        /// File whose `x`/`y` grid to interpolate onto.
        #[arg(long, value_name = "TARGET")]
        like: PathBuf,
    },
    /// Merge ensemble members into one file with a leading `member` dimension.
    #[command(after_help = "Examples:
  twin-kernel stage merge ensemble.nc m0.nc m1.nc m2.nc
  twin-kernel stage merge ensemble.nc --list members.txt    # one path per line

Members keep the order given. Coordinates must match; global attributes that differ
between members become `member_<name>` variables.")]
    Merge {
        /// Output file.
        output: PathBuf,
        /// Member files, in member order.
        inputs: Vec<PathBuf>,
        /// File with one member path per line (empty lines and `#` comments skipped),
        /// appended after the paths given as arguments.
        #[arg(long, value_name = "FILE")]
        list: Option<PathBuf>,
    },
    /// Print blake3 digests of the values of each file's variables as JSON.
    #[command(after_help = "Example:\n  twin-kernel stage checksum result.nc result.h5 --out sums.json

Digests cover values and shapes, not attributes or format: a NetCDF file and its HDF5
conversion have the same digests.")]
    Checksum {
        /// Files to digest.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Write the JSON here instead of stdout.
        #[arg(long, value_name = "JSON")]
        out: Option<PathBuf>,
    },
}

/// Arguments of `twin-kernel stage subset`.
#[derive(Debug, Args)]
pub struct SubsetArgs {
    /// Input file.
    pub input: PathBuf,
    /// Output file.
    pub output: PathBuf,
    /// Smallest x kept, m.
    #[arg(long, allow_hyphen_values = true)]
    pub x0: Option<f64>,
    /// Largest x kept, m.
    #[arg(long, allow_hyphen_values = true)]
    pub x1: Option<f64>,
    /// Smallest y kept, m.
    #[arg(long, allow_hyphen_values = true)]
    pub y0: Option<f64>,
    /// Largest y kept, m.
    #[arg(long, allow_hyphen_values = true)]
    pub y1: Option<f64>,
    /// First column kept.
    #[arg(long)]
    pub i0: Option<usize>,
    /// Column after the last kept.
    #[arg(long)]
    pub i1: Option<usize>,
    /// First row kept.
    #[arg(long)]
    pub j0: Option<usize>,
    /// Row after the last kept.
    #[arg(long)]
    pub j1: Option<usize>,
    /// Earliest time kept, s.
    #[arg(long, allow_hyphen_values = true)]
    pub t0: Option<f64>,
    /// Latest time kept, s.
    #[arg(long, allow_hyphen_values = true)]
    pub t1: Option<f64>,
}

/// Arguments of `twin-kernel summary`.
#[derive(Debug, Args)]
pub struct SummaryArgs {
    /// Merged flood maps: `max_depth(member, y, x)` (from `stage merge` of `result.nc`).
    #[arg(long, value_name = "PATH")]
    pub maps: PathBuf,
    /// Merged gauge series: `h(member, station, time)` (from `stage merge` of `result_gauges.nc`).
    #[arg(long, value_name = "PATH")]
    pub gauges: Option<PathBuf>,
    /// DEM with `z` on the maps' grid, drawn under the map (default: the maps' own `z`).
    #[arg(long, value_name = "PATH")]
    pub dem: Option<PathBuf>,
    /// Depth threshold of an exceedance probability, m (repeat or comma-separate).
    #[arg(long = "threshold", value_name = "M", value_delimiter = ',', required = true)]
    pub thresholds: Vec<f64>,
    /// Depth at which a gauge counts as reached, m.
    #[arg(long, value_name = "M", default_value_t = 0.05)]
    pub arrival_depth: f64,
    /// Summary output (`.nc` → NetCDF-4, `.h5` → HDF5).
    #[arg(long, value_name = "PATH")]
    pub out: PathBuf,
    /// The exceedance map as a PNG figure: the probability over the hillshaded terrain,
    /// x/y in metres, title, colour bar, the gauges with their names.
    #[arg(long, value_name = "PATH")]
    pub png: Option<PathBuf>,
    /// Threshold shown in the PNG (one of `--threshold`; default: the first).
    #[arg(long, value_name = "M")]
    pub png_threshold: Option<f64>,
    /// Gauge hydrographs as a PNG figure: per gauge the ensemble median and 5–95 % band of
    /// the depth over time (with `--truth-gauges`/`--observed-gauges` also those).
    #[arg(long, value_name = "PATH", requires = "gauges")]
    pub hydrographs: Option<PathBuf>,
    /// The truth at the gauges for the hydrographs: `h(station, time)` (a nature run's gauges).
    #[arg(long, value_name = "PATH", requires = "hydrographs")]
    pub truth_gauges: Option<PathBuf>,
    /// Observations at the gauges for the hydrographs: `h(station, time)`.
    #[arg(long, value_name = "PATH", requires = "hydrographs")]
    pub observed_gauges: Option<PathBuf>,
    /// The gauge statistics as CSV, and as a Markdown table beside it (`.md`).
    #[arg(long, value_name = "CSV", requires = "gauges")]
    pub gauge_table: Option<PathBuf>,
    /// Warn of a gauge and threshold when the probability that the gauge's peak depth
    /// exceeds the threshold reaches P, in (0, 1] (logged; count in the `warnings` attribute).
    #[arg(long, value_name = "P", requires = "gauges")]
    pub warn_level: Option<f64>,
    /// The warning list as CSV, one row per gauge and threshold (columns: gauge, x, y,
    /// threshold, probability, arrival_earliest, arrival_median, warn).
    #[arg(long, value_name = "CSV", requires_all = ["gauges", "warn_level"])]
    pub warnings_out: Option<PathBuf>,
}

/// Boundary condition of one side.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum BoundaryArg {
    /// Reflective wall.
    Closed,
    /// Transmissive (water leaves freely).
    Open,
}

impl From<BoundaryArg> for BoundaryKind {
    fn from(b: BoundaryArg) -> Self {
        match b {
            BoundaryArg::Closed => Self::Closed,
            BoundaryArg::Open => Self::Open,
        }
    }
}

/// Output format.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum FormatArg {
    /// NetCDF-4 with CF conventions.
    Netcdf,
    /// HDF5.
    Hdf5,
}

impl From<FormatArg> for Format {
    fn from(f: FormatArg) -> Self {
        match f {
            FormatArg::Netcdf => Self::Netcdf,
            FormatArg::Hdf5 => Self::Hdf5,
        }
    }
}

/// Arguments of `twin-kernel flood`. Flags override the configuration file.
#[derive(Debug, Args)]
pub struct FloodArgs {
    /// DEM file (NetCDF or HDF5) with coordinates `x`, `y` and bed elevation `z`.
    #[arg(long, value_name = "PATH")]
    pub dem: PathBuf,
    /// Gridded output (`.nc` → NetCDF-4, `.h5` → HDF5).
    #[arg(long, value_name = "PATH")]
    pub out: PathBuf,
    /// JSON configuration (see `FloodConfig`); relative paths inside resolve against its directory.
    #[arg(long, value_name = "JSON")]
    pub config: Option<PathBuf>,
    /// Gauge time series output (default: `<out stem>_gauges.<ext>` next to `--out`).
    #[arg(long, value_name = "PATH")]
    pub gauges_out: Option<PathBuf>,
    /// Model time at the end, s (the simulated duration when starting at 0).
    #[arg(long, value_name = "S")]
    pub end_time: Option<f64>,
    /// Interval between snapshots, s.
    #[arg(long, value_name = "S")]
    pub output_interval: Option<f64>,
    /// Interval between gauge samples, s.
    #[arg(long, value_name = "S")]
    pub gauge_interval: Option<f64>,
    /// Manning roughness n, s m^(-1/3).
    #[arg(long, value_name = "N")]
    pub manning_n: Option<f64>,
    /// Uniform rainfall, mm/h.
    #[arg(long, value_name = "MM_PER_H")]
    pub rain: Option<f64>,
    /// Scale the configured inflow hydrograph so that its peak discharge is Q, m³/s.
    #[arg(long, value_name = "Q")]
    pub inflow_peak: Option<f64>,
    /// Factor on the inflow hydrograph's discharge (a member's uncertain parameter).
    #[arg(long, value_name = "S")]
    pub inflow_scale: Option<f64>,
    /// Continue from a saved state (`--state-out` of an earlier run, or an analysis):
    /// `h`, `hu`, `hv`, its `manning_n` and `inflow_scale` (flags override them), and its
    /// `model_time` as the start time.
    #[arg(long, value_name = "PATH", conflicts_with = "initial")]
    pub hot_start: Option<PathBuf>,
    /// Member of a stacked `--hot-start` file (leading `member` dimension).
    #[arg(long, value_name = "K", requires = "hot_start")]
    pub member: Option<usize>,
    /// Model time at the start, s (default: the hot-start state's, else 0); `--end-time`
    /// is a model time too.
    #[arg(long, value_name = "S", allow_hyphen_values = true)]
    pub start_time: Option<f64>,
    /// Write the final state here for a later `--hot-start`.
    #[arg(long, value_name = "PATH")]
    pub state_out: Option<PathBuf>,
    /// Courant number, (0, 0.5].
    #[arg(long)]
    pub cfl: Option<f64>,
    /// File with the initial depth `h` (and `u`, `v`) on the DEM grid.
    #[arg(long, value_name = "PATH")]
    pub initial: Option<PathBuf>,
    /// Initial flat water level, m (fills cells below it that have no initial depth).
    #[arg(long, value_name = "M")]
    pub water_level: Option<f64>,
    /// Boundary condition of the west side (x = min).
    #[arg(long, value_enum)]
    pub west: Option<BoundaryArg>,
    /// Boundary condition of the east side (x = max).
    #[arg(long, value_enum)]
    pub east: Option<BoundaryArg>,
    /// Boundary condition of the south side (y = min).
    #[arg(long, value_enum)]
    pub south: Option<BoundaryArg>,
    /// Boundary condition of the north side (y = max).
    #[arg(long, value_enum)]
    pub north: Option<BoundaryArg>,
    /// Output format (default: from the extension of `--out`).
    #[arg(long, value_enum)]
    pub format: Option<FormatArg>,
    /// Deflate level of the outputs, 0 (off) to 9.
    #[arg(long, value_parser = clap::value_parser!(u8).range(0..=9))]
    pub deflate: Option<u8>,
}

impl FloodArgs {
    /// Overrides `config` with the flags given.
    pub fn apply(&self, config: &mut FloodConfig) -> Result<(), super::KernelError> {
        let set = |dst: &mut f64, v: Option<f64>| {
            if let Some(v) = v {
                *dst = v;
            }
        };
        set(&mut config.end_time, self.end_time);
        if self.output_interval.is_some() {
            config.output_interval = self.output_interval;
        }
        set(&mut config.gauge_interval, self.gauge_interval);
        if let Some(path) = &self.hot_start {
            // The state's parameters override the configuration file; flags override both.
            let own = twinflow_flood::MemberParameters::read(path, self.member)?;
            set(&mut config.manning_n, own.manning_n);
            set(&mut config.inflow_scale, own.inflow_scale);
            config.initial = twinflow_flood::InitialConfig {
                file: Some(std::path::absolute(path)?),
                water_level: None,
                member: self.member,
            };
        }
        if self.start_time.is_some() {
            config.start_time = self.start_time;
        }
        set(&mut config.manning_n, self.manning_n);
        set(&mut config.inflow_scale, self.inflow_scale);
        set(&mut config.rainfall_mm_per_h, self.rain);
        set(&mut config.cfl, self.cfl);
        if let Some(path) = &self.initial {
            // Flags are relative to the working directory, not to the configuration file.
            config.initial.file = Some(std::path::absolute(path)?);
        }
        if self.water_level.is_some() {
            config.initial.water_level = self.water_level;
        }
        let b = &mut config.boundaries;
        for (dst, v) in
            [(&mut b.west, self.west), (&mut b.east, self.east), (&mut b.south, self.south), (&mut b.north, self.north)]
        {
            if let Some(v) = v {
                *dst = v.into();
            }
        }
        if let Some(f) = self.format {
            config.format = Some(f.into());
        }
        if let Some(peak) = self.inflow_peak {
            scale_inflow(config, peak)?;
        }
        if let Some(level) = self.deflate {
            config.compression.deflate_level = (level > 0).then_some(level);
        }
        Ok(())
    }
}

/// Scales the inflow hydrograph of `config` so that its peak discharge is `peak`.
fn scale_inflow(config: &mut FloodConfig, peak: f64) -> Result<(), FloodError> {
    let issue = |message: String| FloodError::Config(vec![ConfigIssue { field: "inflow".into(), message }]);
    if !(peak.is_finite() && peak >= 0.0) {
        return Err(issue(format!("`--inflow-peak` must be >= 0 m³/s, got {peak}")));
    }
    let Some(inflow) = config.inflow.as_mut() else {
        return Err(issue(
            "`--inflow-peak` needs an inflow hydrograph in the configuration; hint: `twin-kernel terrain --inflow-peak Q --config-out flood.json` writes one".into(),
        ));
    };
    let max = inflow.hydrograph.iter().map(|p| p[1]).fold(0.0, f64::max);
    if max <= 0.0 {
        return Err(issue("the hydrograph has no positive discharge to scale".into()));
    }
    for p in &mut inflow.hydrograph {
        p[1] *= peak / max;
    }
    Ok(())
}

/// Arguments of `twin-kernel terrain`.
#[derive(Debug, Args)]
pub struct TerrainArgs {
    /// DEM output (`.nc` → NetCDF-4, `.h5` → HDF5): bed `z` and initial depth `h`.
    #[arg(long, value_name = "PATH")]
    pub out: PathBuf,
    /// Cells along x (down the valley).
    #[arg(long, default_value_t = 200)]
    pub nx: usize,
    /// Cells along y (across the valley).
    #[arg(long, default_value_t = 100)]
    pub ny: usize,
    /// Cell size, m.
    #[arg(long, default_value_t = 10.0)]
    pub dx: f64,
    /// Longitudinal slope of the valley floor, m/m.
    #[arg(long, default_value_t = 0.002)]
    pub slope: f64,
    /// Dam crest height above the valley floor, m (the reservoir is filled to 1 m below).
    #[arg(long, default_value_t = 8.0)]
    pub dam_height: f64,
    /// Add an inflow hydrograph into the reservoir (west side) peaking at Q m³/s to the
    /// configuration (`flood --inflow-peak` rescales it per scenario).
    #[arg(long, value_name = "Q")]
    pub inflow_peak: Option<f64>,
    /// Simulated duration written to the configuration, s (default: long enough for the
    /// dam-break front to cross the valley).
    #[arg(long, value_name = "S")]
    pub end_time: Option<f64>,
    /// Also write a flood configuration for this terrain (gauges, boundaries, times).
    #[arg(long, value_name = "JSON")]
    pub config_out: Option<PathBuf>,
    /// Output format (default: from the extension of `--out`).
    #[arg(long, value_enum)]
    pub format: Option<FormatArg>,
}

#[cfg(test)]
mod contract_tests {
    use clap::CommandFactory;

    #[test]
    fn the_contract_lists_exactly_the_kernels_of_the_command_line() {
        let mut names: Vec<String> =
            super::Cli::command().get_subcommands().map(|c| c.get_name().to_string()).filter(|n| n != "help").collect();
        names.sort();
        assert_eq!(names, twinflow_contract::KERNELS);
    }
}
