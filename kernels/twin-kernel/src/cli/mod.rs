//! Command-line interface: clap definitions, logging, communicator setup, error reporting.

mod args;
mod calo;
mod stage;
mod train;

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
pub use args::Cli;
use args::{Command, FloodArgs, TerrainArgs};
use twinflow_contract::datasets;
use twinflow_comm::{Communicator, SingleProcess};
use twinflow_exchange::{self as exchange, Compression, Format, Provenance, VarSpec};
use twinflow_flood::{self as flood, FloodConfig, FloodError, RunPaths};
use twinflow_stage::terrain::Valley;

/// Exit codes of `twin-kernel`, documented in `--help`.
pub mod exit_code {
    /// The run finished and its outputs are in place.
    pub const SUCCESS: u8 = 0;
    /// The run failed (I/O, numerical failure); outputs are absent or `.partial`.
    pub const FAILURE: u8 = 1;
    /// The command line is invalid (reported by clap).
    pub const USAGE: u8 = 2;
    /// The configuration or an input file is invalid.
    pub const INVALID_INPUT: u8 = 3;
    /// Training stopped at `--time-limit`/`--epoch-limit` with its checkpoint written.
    pub const STOPPED: u8 = 4;
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TWINFLOW_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
}

/// The communicator of this process: MPI when built with the `mpi` feature.
fn communicator() -> Box<dyn Communicator> {
    #[cfg(feature = "mpi")]
    if let Some(c) = twinflow_comm::MpiComm::init() {
        return Box::new(c);
    }
    Box::new(SingleProcess)
}

/// Runs a parsed command line; returns the exit code.
pub fn run(cli: Cli) -> u8 {
    if let Command::Info = cli.command {
        // Before MPI is initialised: `info` must work without a launcher.
        return match std::io::stdout().write_all(stage::info().as_bytes()) {
            Ok(()) => exit_code::SUCCESS,
            Err(_) => exit_code::FAILURE,
        };
    }
    init_logging();
    let comm = communicator();
    let (rank, size) = (comm.rank(), comm.size());
    let _span = (size > 1).then(|| tracing::info_span!("mpi", rank).entered());
    // Every rank announces itself: a launcher that does not match the MPI library starts N
    // independent 1-rank jobs, which only this line reveals (see hpc-notes, "MPI pitfalls").
    tracing::info!("rank {rank} of {size}");
    let command_line = std::env::args().collect::<Vec<_>>().join(" ");
    let outcome = match cli.command {
        Command::Flood(args) => run_flood(comm.as_ref(), args, &command_line),
        // Serial tools: rank 0 works, the other ranks of an MPI launch have nothing to do.
        Command::Terrain(args) => on_root(rank, || run_terrain(args, &command_line)),
        Command::Stage(command) => on_root(rank, || stage::run_stage(command, &command_line)),
        Command::Summary(args) => on_root(rank, || stage::run_summary(args, &command_line)),
        Command::Train(args) => train::run_train(comm.as_ref(), *args, &command_line),
        Command::Predict(args) => on_root(rank, || train::run_predict(args, &command_line)),
        Command::Select(args) => on_root(rank, || train::run_select(args)),
        Command::Tabulate(command) => on_root(rank, || train::run_tabulate(command, &command_line)),
        Command::Calo(args) => calo::run_calo(comm.as_ref(), *args, &command_line),
        Command::Info => unreachable!("handled above"),
    };
    match outcome {
        Ok(()) => exit_code::SUCCESS,
        Err(err) if train::is_stopped(&err) => exit_code::STOPPED,
        Err(err) => {
            let code = if is_invalid_input(&err) { exit_code::INVALID_INPUT } else { exit_code::FAILURE };
            let _ = writeln!(std::io::stderr(), "error (rank {rank} of {size}): {err:#}");
            comm.abort_job(i32::from(code));
            code
        }
    }
}

fn on_root(rank: usize, f: impl FnOnce() -> anyhow::Result<()>) -> anyhow::Result<()> {
    if rank == 0 { f() } else { Ok(()) }
}

fn is_invalid_input(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        e.downcast_ref::<twinflow_stage::StageError>().is_some_and(|s| s.is_invalid_input())
            || e.downcast_ref::<twinflow_stage::summary::SummaryError>().is_some_and(|s| s.is_invalid_input())
            || matches!(e.downcast_ref::<FloodError>(), Some(FloodError::Config(_) | FloodError::Input { .. }))
            || e.downcast_ref::<exchange::ExchangeError>().is_some_and(|x| {
                matches!(x, exchange::ExchangeError::MissingVariable { .. } | exchange::ExchangeError::Layout { .. })
            })
            || e.downcast_ref::<serde_json::Error>().is_some()
            || e.downcast_ref::<twinflow_calo::CaloError>().is_some_and(|c| c.is_invalid_input())
            || e.downcast_ref::<twinflow_train::TrainError>().is_some_and(|t| t.is_invalid_input())
    })
}

fn run_flood(comm: &dyn Communicator, args: FloodArgs, command_line: &str) -> anyhow::Result<()> {
    let (mut config, config_dir) = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("cannot read `{}`", path.display()))?;
            let config: FloodConfig =
                serde_json::from_str(&text).with_context(|| format!("invalid configuration `{}`", path.display()))?;
            let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
            (config, dir)
        }
        None => (FloodConfig::default(), PathBuf::new()),
    };
    args.apply(&mut config)?;
    let paths = RunPaths {
        gauges_out: args.gauges_out.clone().unwrap_or_else(|| RunPaths::default_gauges_path(&args.out)),
        dem: args.dem,
        out: args.out,
        config_dir,
    };
    let summary = flood::run_flood(comm, &paths, &config, command_line)?;
    if comm.rank() == 0 {
        for p in &summary.outputs {
            tracing::info!(path = %p.display(), "wrote");
        }
    }
    Ok(())
}

fn run_terrain(args: TerrainArgs, command_line: &str) -> anyhow::Result<()> {
    let valley = Valley {
        nx: args.nx,
        ny: args.ny,
        dx: args.dx,
        slope: args.slope,
        dam_height: args.dam_height,
        inflow_peak: args.inflow_peak,
        end_time: args.end_time,
        ..Valley::default()
    };
    anyhow::ensure!(args.nx >= 4 && args.ny >= 4, "the valley needs at least 4 × 4 cells");
    anyhow::ensure!(args.dx > 0.0 && args.dam_height > 1.0, "`--dx` must be > 0 and `--dam-height` > 1 m");
    anyhow::ensure!(args.inflow_peak.is_none_or(|q| q.is_finite() && q > 0.0), "`--inflow-peak` must be > 0 m³/s");
    anyhow::ensure!(args.end_time.is_none_or(|t| t.is_finite() && t > 0.0), "`--end-time` must be > 0 s");
    let mut terrain = valley.generate();
    let format = args.format.map_or_else(|| Format::from_path(&args.out), Format::from);
    let parameters = serde_json::json!({
        "nx": args.nx, "ny": args.ny, "dx": args.dx, "slope": args.slope, "dam_height": args.dam_height,
        "inflow_peak": args.inflow_peak, "end_time": args.end_time,
    })
    .to_string();
    let provenance = Provenance::from_env(
        "twinflow synthetic valley with a breached dam",
        "twin-kernel terrain",
        parameters,
        command_line,
    );
    let mut w = exchange::create_grid_writer(&args.out, format, &terrain.coords, &provenance, &Compression::default())?;
    w.write_static(
        &VarSpec::new(datasets::BED_ELEVATION, "bed elevation", "m").standard("surface_altitude"),
        terrain.bed.view(),
    )?;
    w.write_static(&VarSpec::new(datasets::DEPTH, "initial water depth (reservoir)", "m"), terrain.depth.view())?;
    let out = w.finish()?;
    tracing::info!(path = %out.display(), nx = args.nx, ny = args.ny, dx = args.dx, "wrote terrain");
    if let Some(config_out) = &args.config_out {
        // The configuration names the DEM relative to itself when they share a directory.
        let dem_abs = std::path::absolute(&out)?;
        let cfg_dir = std::path::absolute(config_out)?.parent().map(Path::to_path_buf).unwrap_or_default();
        terrain.config.initial.file = Some(dem_abs.strip_prefix(&cfg_dir).map(Path::to_path_buf).unwrap_or(dem_abs));
        let text = serde_json::to_string_pretty(&terrain.config)?;
        std::fs::write(config_out, text + "\n").with_context(|| format!("cannot write `{}`", config_out.display()))?;
        tracing::info!(path = %config_out.display(), "wrote flood configuration");
    }
    Ok(())
}
