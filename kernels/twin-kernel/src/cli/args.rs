//! Clap definitions of `twin-kernel`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use twinflow_kernels::exchange::Format;
use twinflow_kernels::flood::{BoundaryKind, FloodConfig};

const AFTER_HELP: &str = "\
Exit codes: 0 success, 1 run failed, 2 invalid command line, 3 invalid configuration or input.
Logging: TWINFLOW_LOG=debug (tracing filter syntax), written to stderr.
SIMD: the flood loops use AVX-512 or AVX2 when the CPU has them (bit-identical results);
TWINFLOW_SIMD=avx2 or TWINFLOW_SIMD=baseline caps the instruction set.
MPI: build with `--features mpi` and launch with `mpiexec -n N twin-kernel ...`.";

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
    /// Simulated duration, s.
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
    pub fn apply(&self, config: &mut FloodConfig) -> anyhow::Result<()> {
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
        set(&mut config.manning_n, self.manning_n);
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
        if let Some(level) = self.deflate {
            config.compression.deflate_level = (level > 0).then_some(level);
        }
        Ok(())
    }
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
    /// Also write a flood configuration for this terrain (gauges, boundaries, times).
    #[arg(long, value_name = "JSON")]
    pub config_out: Option<PathBuf>,
    /// Output format (default: from the extension of `--out`).
    #[arg(long, value_enum)]
    pub format: Option<FormatArg>,
}
