//! Command-line interface: clap definitions, logging, communicator setup, error reporting.

mod args;
mod assim;
mod calo;
mod error;
mod ingest;
mod online;
mod plot;
mod stage;
mod train;
mod twin;

use std::io::Write as _;
use std::path::{Path, PathBuf};

use args::TerrainArgs;
pub use args::{Cli, Command, FloodArgs};
pub use error::KernelError;
use error::TerrainRequest;
use twinflow_comm::{Communicator, SingleProcess};
use twinflow_contract::datasets;
use twinflow_exchange::{self as exchange, Compression, Format, Provenance, VarSpec};
use twinflow_flood::{self as flood, FloodConfig, RunPaths};
use twinflow_stage::terrain::Valley;

/// Exit codes of `twin-kernel`, documented in `--help` (defined in the contract, as the
/// engine sees them as a step's exit status).
pub use twinflow_contract::exit_code;

/// `text` with the attempt directory (`$TWINFLOW_STEP_DIR`) replaced by the directory it
/// becomes when the attempt succeeds (`$TWINFLOW_RESULT_DIR`, `.../out`); unchanged outside
/// an engine's step.
pub(crate) fn as_result_paths(text: &str) -> String {
    match (std::env::var(twinflow_contract::env::STEP_DIR), std::env::var(twinflow_contract::env::RESULT_DIR)) {
        (Ok(step), Ok(result)) => replace_dir(text, &step, &result),
        _ => text.to_string(),
    }
}

/// A file the kernel wrote, named as a person will find it: under `$TWINFLOW_RESULT_DIR`
/// when it lies in the attempt directory (a relative path is relative to it, the working
/// directory of a step), else as given.
pub(crate) fn shown(path: &Path) -> String {
    let (Ok(step), Ok(_)) =
        (std::env::var(twinflow_contract::env::STEP_DIR), std::env::var(twinflow_contract::env::RESULT_DIR))
    else {
        return path.display().to_string();
    };
    let in_step = std::env::current_dir().is_ok_and(|d| d == Path::new(&step));
    match path.is_relative() && in_step {
        true => as_result_paths(&Path::new(&step).join(path).display().to_string()),
        false => as_result_paths(&path.display().to_string()),
    }
}

/// `text` with every occurrence of the directory `from` (as a whole path component: not
/// `attempt-1` inside `attempt-12`) replaced by `to`.
fn replace_dir(text: &str, from: &str, to: &str) -> String {
    let from = from.trim_end_matches('/');
    if from.is_empty() {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find(from) {
        let after = &rest[i + from.len()..];
        let whole = after.chars().next().is_none_or(|c| c == '/' || c.is_whitespace() || c == '"' || c == '\'');
        out.push_str(&rest[..i]);
        out.push_str(if whole { to } else { from });
        rest = after;
    }
    out.push_str(rest);
    out
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TWINFLOW_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(twinflow_contract::colour::enabled(std::io::IsTerminal::is_terminal(&std::io::stderr())))
        .with_target(false)
        .init();
}

/// The communicator of this process: MPI when built with the `mpi` feature and started
/// by an MPI launcher; a process started on its own runs as a single process.
fn communicator() -> Box<dyn Communicator> {
    #[cfg(feature = "mpi")]
    if twinflow_comm::launched_by_mpi()
        && let Some(c) = twinflow_comm::MpiComm::init()
    {
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
    // A build without MPI started as several ranks would run that many independent copies
    // writing the same files.
    #[cfg(not(feature = "mpi"))]
    if let Some(n) = twinflow_comm::launcher_size().filter(|&n| n > 1) {
        let _ = writeln!(
            std::io::stderr(),
            "error: this twin-kernel was built without MPI but started as one of {n} ranks by an MPI launcher; \
             every rank would run the whole job alone and overwrite the others' files\n\
             hint: build it with MPI: cargo build --release -p twinflow-kernels --features mpi"
        );
        return exit_code::USAGE;
    }
    let comm = communicator();
    let (rank, size) = (comm.rank(), comm.size());
    let _span = (size > 1).then(|| tracing::info_span!("mpi", rank).entered());
    // Every rank announces itself: a launcher that does not match the MPI library starts N
    // independent 1-rank jobs, which only this line reveals (see hpc-notes, "MPI pitfalls").
    tracing::info!("rank {rank} of {size}");
    // NetCDF `history` names the files by where they will be once the engine accepts the
    // attempt (`.../out/`), not by the attempt directory it renames.
    let command_line = as_result_paths(&std::env::args().collect::<Vec<_>>().join(" "));
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
        Command::Assimilate(args) => assim::run_assimilate(comm.as_ref(), *args, &command_line),
        Command::Lorenz96(command) => on_root(rank, || assim::run_lorenz96(command, &command_line)),
        Command::Sensor(args) => on_root(rank, || twin::run_sensor(args, &command_line)),
        Command::Verify(args) => on_root(rank, || twin::run_verify(args)),
        Command::Plot(command) => on_root(rank, || plot::run_plot(command)),
        Command::Ingest(args) => on_root(rank, || ingest::run_ingest(*args, &command_line)),
        Command::DetectorSim(args) => on_root(rank, || online::run_detector_sim(*args)),
        Command::Online(command) => on_root(rank, || online::run_online(command, &command_line)),
        Command::Info => unreachable!("handled above"),
    };
    match outcome {
        Ok(()) => exit_code::SUCCESS,
        // A clean stop at a limit: reported by the training loop, and every rank stops.
        Err(KernelError::Stopped(_)) => exit_code::STOPPED,
        Err(err) => {
            let code = err.exit_code();
            let _ = writeln!(std::io::stderr(), "error (rank {rank} of {size}): {}", err.report());
            comm.abort_job(i32::from(code));
            code
        }
    }
}

fn on_root(rank: usize, f: impl FnOnce() -> Result<(), KernelError>) -> Result<(), KernelError> {
    if rank == 0 { f() } else { Ok(()) }
}

fn run_flood(comm: &dyn Communicator, args: FloodArgs, command_line: &str) -> Result<(), KernelError> {
    let (mut config, config_dir) = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|source| KernelError::Io {
                path: path.clone(),
                action: "read",
                source,
            })?;
            let config: FloodConfig =
                serde_json::from_str(&text).map_err(|source| KernelError::Config { path: path.clone(), source })?;
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
        state_out: args.state_out,
    };
    let summary = flood::run_flood(comm, &paths, &config, command_line)?;
    if comm.rank() == 0 {
        for p in &summary.outputs {
            tracing::info!(path = %shown(p), "wrote");
        }
    }
    Ok(())
}

fn run_terrain(args: TerrainArgs, command_line: &str) -> Result<(), KernelError> {
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
    let check = |ok: bool, problem: TerrainRequest| if ok { Ok(()) } else { Err(problem) };
    check(args.nx >= 4 && args.ny >= 4, TerrainRequest::TooSmall)?;
    check(args.dx > 0.0 && args.dam_height > 1.0, TerrainRequest::Shape)?;
    check(args.inflow_peak.is_none_or(|q| q.is_finite() && q > 0.0), TerrainRequest::InflowPeak)?;
    check(args.end_time.is_none_or(|t| t.is_finite() && t > 0.0), TerrainRequest::EndTime)?;
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
    tracing::info!(path = %shown(&out), nx = args.nx, ny = args.ny, dx = args.dx, "wrote terrain");
    if let Some(config_out) = &args.config_out {
        // The configuration names the DEM relative to itself when they share a directory.
        let dem_abs = std::path::absolute(&out)?;
        let cfg_dir = std::path::absolute(config_out)?.parent().map(Path::to_path_buf).unwrap_or_default();
        terrain.config.initial.file = Some(dem_abs.strip_prefix(&cfg_dir).map(Path::to_path_buf).unwrap_or(dem_abs));
        let text = serde_json::to_string_pretty(&terrain.config)?;
        std::fs::write(config_out, text + "\n").map_err(|source| KernelError::Io {
            path: config_out.clone(),
            action: "write",
            source,
        })?;
        tracing::info!(path = %shown(config_out), "wrote flood configuration");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::replace_dir;

    #[test]
    fn only_the_whole_attempt_directory_is_replaced() {
        let (a, o) = ("/r/steps/sim/attempt-1", "/r/steps/sim/out");
        assert_eq!(replace_dir("k --out /r/steps/sim/attempt-1/x.nc", a, o), "k --out /r/steps/sim/out/x.nc");
        assert_eq!(replace_dir("/r/steps/sim/attempt-1", a, o), o);
        assert_eq!(replace_dir("/r/steps/sim/attempt-12/x.nc", a, o), "/r/steps/sim/attempt-12/x.nc");
        assert_eq!(
            replace_dir("a=/r/steps/sim/attempt-1/x b=/r/steps/sim/attempt-1/y", a, o),
            "a=/r/steps/sim/out/x b=/r/steps/sim/out/y"
        );
        assert_eq!(replace_dir("nothing here", a, o), "nothing here");
    }
}
