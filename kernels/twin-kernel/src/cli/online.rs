//! `twin-kernel detector-sim` and `twin-kernel online update|gate|monitor`: arguments and
//! runners around [`twinflow_online`].

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use clap::{Args, Subcommand};
use twinflow_exchange::Provenance;
use twinflow_online::data::{Events, Matrix, Replay};
use twinflow_online::gate::{self, GateInput, Payload, SCORES_HEADER, Scores};
use twinflow_online::model::{self, ModelSettings};
use twinflow_online::monitor::{self, Alert, MonitorState, Thresholds};
use twinflow_online::publish::{self, PublishConfig};
use twinflow_online::sim::{DetectorSim, Fault, SimConfig, parse_fault};
use twinflow_online::{OnlineError, read_json, write_atomic};
use twinflow_train::store;

use super::KernelError;
use super::ingest::parse_broker;
use super::twin::parse_duration;

/// Help text after the options of `twin-kernel detector-sim`.
pub const DETECTOR_SIM_HELP: &str = "\
Examples:
  hpc/mqtt-local.sh start                       # a private mosquitto; prints 127.0.0.1:PORT
  twin-kernel detector-sim --write-schema events.yaml --layers 24 --cells 3
  twin-kernel detector-sim --broker 127.0.0.1:18830 --topic calo/events --events 4000 \\
      --temperature 293.15:303.15 --fault 2000:4,1,1:dead --fault 2400:2,1,0:hot=1.0 \\
      --invalid-every 97 --rate 500 --state sim-state.json --truth truth.json

Simulates calibration events (electrons of --energy-range GeV) of the calorimeter kernel's
Pb/LAr stack of --layers × --cells² cells, the temperature ramping linearly from the first to
the last event (gain 1 + k (T − T_ref), k = --gain-per-kelvin), and publishes each as one JSON
record with QoS 1: {\"sensor\": \"calo\", \"time\": …, \"event\": …, \"energy\": GeV,
\"temperature\": K, \"cells\": [layer-major GeV values]}. Event i has the time
--start-time + i / --event-rate (simulated clock). Faults: EVENT:LAYER,Y,X:dead (reads 0),
…:hot=GEV (reads GEV more), …:gain=FACTOR, from EVENT on. Every --invalid-every-th event is
published with a defect the ingest schema rejects (dead letters).

Events are pure functions of --seed and their number. The state file records how many the
broker acknowledged; a restart continues there (events in flight are sent again and dropped
by the ingest as redeliveries). --linger keeps the process running once everything is
published, until SIGTERM (a workflow service).";

/// Help text after `twin-kernel online`.
pub const ONLINE_HELP: &str = "\
Per window of the ingest (one cycle of workflows/detector-online-twin.yaml):
  twin-kernel online update --window w/window-000003.h5 --layers 24 --previous prev/model.h5 \\
      --replay-in prev/replay.h5 --out model.h5 --replay-out replay.h5
  twin-kernel online gate --window w/window-000003.h5 --layers 24 --cycle 3 --candidate model.h5 \\
      --previous-payload prev/payload.json --frozen first/model.h5 --scores-in prev/scores.csv \\
      --payload payload.json --model payload.h5 --scores scores.csv --alerts gate-alerts.jsonl
  twin-kernel online monitor --window w/window-000003.h5 --layers 24 --cells 3 --cycle 3 \\
      --previous prev/monitor.json --out monitor.json --alerts alerts.jsonl

Held-out events (event number a multiple of --holdout-every) are never trained on; the gate
and the scores use them. See docs/detector-online.md for the method and tolerances.";

/// Arguments of `twin-kernel detector-sim`.
#[derive(Debug, Args)]
pub struct DetectorSimArgs {
    /// MQTT broker, `HOST:PORT`.
    #[arg(long, env = "TWINFLOW_MQTT_BROKER", value_name = "HOST:PORT", value_parser = parse_broker)]
    pub broker: Option<(String, u16)>,
    /// Topic of the events.
    #[arg(long, default_value = "calo/events")]
    pub topic: String,
    /// Events of the whole run.
    #[arg(long, default_value_t = 3200, value_parser = clap::value_parser!(u64).range(1..))]
    pub events: u64,
    /// Seed of the showers.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Layers in depth.
    #[arg(long, default_value_t = 40)]
    pub layers: usize,
    /// Cells per transverse side.
    #[arg(long, default_value_t = 3)]
    pub cells: usize,
    /// Transverse cell size, mm.
    #[arg(long, default_value_t = 30.0)]
    pub cell_size_mm: f64,
    /// Beam energies `LOW:HIGH`, GeV (uniform).
    #[arg(long, value_name = "LOW:HIGH", value_parser = parse_pair, default_value = "10:60")]
    pub energy_range: [f64; 2],
    /// Gaussian spread (σ per axis) of the impact point, mm.
    #[arg(long, default_value_t = 12.0)]
    pub beam_spread_mm: f64,
    /// Temperature at the first and the last event `FIRST:LAST`, K.
    #[arg(long, value_name = "FIRST:LAST", value_parser = parse_pair, default_value = "293.15:303.15")]
    pub temperature: [f64; 2],
    /// Temperature of unit gain, K.
    #[arg(long, default_value_t = 293.15)]
    pub reference_k: f64,
    /// Relative gain change per kelvin.
    #[arg(long, default_value_t = -0.02, allow_negative_numbers = true)]
    pub gain_per_kelvin: f64,
    /// Electronic noise per cell, MeV.
    #[arg(long, default_value_t = 1.0)]
    pub noise_mev: f64,
    /// Cell faults `EVENT:LAYER,Y,X:dead|hot=GEV|gain=FACTOR` (one or more; repeatable).
    #[arg(long = "fault", value_name = "FAULT", value_parser = parse_fault, num_args = 1..)]
    pub faults: Vec<Fault>,
    /// Publish every N-th event with a defect (0: none).
    #[arg(long, default_value_t = 0)]
    pub invalid_every: u64,
    /// Events per second of wall clock (0: as fast as the broker takes them).
    #[arg(long, default_value_t = 200.0)]
    pub rate: f64,
    /// Events per second of the simulated clock (the records' `time`).
    #[arg(long, default_value_t = 100.0)]
    pub event_rate: f64,
    /// Time of event 0, seconds since 1970-01-01 UTC.
    #[arg(long, default_value_t = 1_767_225_600.0)]
    pub start_time: f64,
    /// State file (how many events the broker acknowledged).
    #[arg(long, value_name = "FILE", default_value = "detector-sim-state.json")]
    pub state: PathBuf,
    /// Write the run's configuration and fault schedule (the truth) as JSON.
    #[arg(long, value_name = "FILE")]
    pub truth: Option<PathBuf>,
    /// Write the ingest schema of the records and exit.
    #[arg(long, value_name = "FILE")]
    pub write_schema: Option<PathBuf>,
    /// MQTT client id [default: `detector-sim-` and the seed].
    #[arg(long, value_name = "ID")]
    pub client_id: Option<String>,
    /// Keep running after the last event until SIGTERM/SIGINT.
    #[arg(long)]
    pub linger: bool,
    /// Give up when the broker cannot be reached for this long at start.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "10s")]
    pub connect_timeout: Duration,
}

fn parse_pair(text: &str) -> Result<[f64; 2], String> {
    let (a, b) = text.split_once(':').ok_or_else(|| format!("`{text}` is not LOW:HIGH"))?;
    let num = |v: &str| v.trim().parse::<f64>().map_err(|_| format!("`{v}` is not a number"));
    Ok([num(a)?, num(b)?])
}

/// What the online steps do.
#[derive(Debug, Subcommand)]
pub enum OnlineCommand {
    /// Train the energy regression on a window: from scratch (no `--previous`) or warm-
    /// started from the previous cycle's model on the window plus the replay buffer.
    Update(UpdateArgs),
    /// Score the candidate and the payload in force on the held-out events, publish or
    /// keep (a versioned payload with its interval of validity), and append the scores.
    Gate(GateArgs),
    /// Flag dead, hot and gain-jump cells against the twin's expectation.
    Monitor(MonitorArgs),
}

/// What every online step reads of a window.
#[derive(Debug, Args)]
pub struct WindowArgs {
    /// The window file of `twin-kernel ingest`.
    #[arg(long, value_name = "FILE")]
    pub window: PathBuf,
    /// Layers of the detector (for the features: ln Σ cells, shower depth, leakage).
    #[arg(long, default_value_t = 40)]
    pub layers: usize,
    /// Events whose number is a multiple of this are held out.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(2..))]
    pub holdout_every: u64,
}

/// Arguments of `twin-kernel online update`.
#[derive(Debug, Args)]
pub struct UpdateArgs {
    #[command(flatten)]
    pub window: WindowArgs,
    /// The previous cycle's model (absent: train from scratch).
    #[arg(long, value_name = "MODEL")]
    pub previous: Option<PathBuf>,
    /// The previous cycle's replay buffer.
    #[arg(long, value_name = "FILE", requires = "previous")]
    pub replay_in: Option<PathBuf>,
    /// Epochs of the first training (learning rate annealed to 0 over them).
    #[arg(long, default_value_t = 200)]
    pub initial_epochs: usize,
    /// Epochs of each warm-started update.
    #[arg(long, default_value_t = 10)]
    pub epochs: usize,
    /// Learning rate of the warm-started updates.
    #[arg(long, default_value_t = 0.001)]
    pub update_lr: f64,
    /// Training events of this window kept for the next update.
    #[arg(long, default_value_t = 50)]
    pub replay: usize,
    /// Hidden layer widths (comma-separated; empty for the linear model).
    #[arg(long, value_delimiter = ',', default_value = "16")]
    pub hidden: Vec<usize>,
    /// Adam learning rate.
    #[arg(long, default_value_t = 0.01)]
    pub lr: f64,
    /// Events per optimizer step.
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
    /// Seed of the initialisation, shuffles and replay choice.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// The updated model (the training kernel's model file).
    #[arg(long, value_name = "MODEL")]
    pub out: PathBuf,
    /// The new replay buffer.
    #[arg(long, value_name = "FILE")]
    pub replay_out: PathBuf,
}

/// Arguments of `twin-kernel online gate`.
#[derive(Debug, Args)]
pub struct GateArgs {
    #[command(flatten)]
    pub window: WindowArgs,
    /// This cycle's index.
    #[arg(long)]
    pub cycle: u64,
    /// The candidate model (`online update --out`).
    #[arg(long, value_name = "MODEL")]
    pub candidate: PathBuf,
    /// The payload in force (the previous cycle's `--payload`; its model beside it).
    #[arg(long, value_name = "JSON")]
    pub previous_payload: Option<PathBuf>,
    /// The frozen model scored for comparison (the first cycle's; absent: the candidate).
    #[arg(long, value_name = "MODEL")]
    pub frozen: Option<PathBuf>,
    /// The previous cycle's scores table, continued.
    #[arg(long, value_name = "CSV")]
    pub scores_in: Option<PathBuf>,
    /// Largest relative loss of resolution a published candidate may have.
    #[arg(long, default_value_t = 0.10)]
    pub tolerance: f64,
    /// The payload of this cycle (JSON).
    #[arg(long, value_name = "JSON")]
    pub payload: PathBuf,
    /// The model in force (copied beside the payload).
    #[arg(long, value_name = "MODEL")]
    pub model: PathBuf,
    /// The scores table (CSV).
    #[arg(long, value_name = "CSV")]
    pub scores: PathBuf,
    /// Alerts of this cycle (JSON lines; a kept payload is one).
    #[arg(long, value_name = "JSONL")]
    pub alerts: PathBuf,
}

/// Arguments of `twin-kernel online monitor`.
#[derive(Debug, Args)]
pub struct MonitorArgs {
    #[command(flatten)]
    pub window: WindowArgs,
    /// Cells per transverse side.
    #[arg(long, default_value_t = 3)]
    pub cells: usize,
    /// This cycle's index.
    #[arg(long)]
    pub cycle: u64,
    /// The previous cycle's state (`--out`); absent: this window is the reference.
    #[arg(long, value_name = "JSON")]
    pub previous: Option<PathBuf>,
    /// Significance a flag needs, standard deviations.
    #[arg(long, default_value_t = 5.0)]
    pub z_min: f64,
    /// Below this fraction of the expectation a cell is dead.
    #[arg(long, default_value_t = 0.2)]
    pub dead_ratio: f64,
    /// Above this multiple of the expectation a cell is hot.
    #[arg(long, default_value_t = 1.5)]
    pub hot_ratio: f64,
    /// A relative shift beyond this is a gain jump.
    #[arg(long, default_value_t = 0.2)]
    pub gain_jump: f64,
    /// A cell is monitored once its reference's relative error is below this.
    #[arg(long, default_value_t = 0.2)]
    pub max_rel_error: f64,
    /// The state after this window (JSON: reference, every cell's flag).
    #[arg(long, value_name = "JSON")]
    pub out: PathBuf,
    /// New flags of this window (JSON lines).
    #[arg(long, value_name = "JSONL")]
    pub alerts: PathBuf,
}

/// Runs `twin-kernel detector-sim`.
pub(super) fn run_detector_sim(args: DetectorSimArgs) -> Result<(), KernelError> {
    let config = SimConfig {
        events: args.events,
        seed: args.seed,
        layers: args.layers,
        cells: args.cells,
        cell_size_mm: args.cell_size_mm,
        energy_range_gev: args.energy_range,
        beam_spread_mm: args.beam_spread_mm,
        temperature_k: args.temperature,
        reference_k: args.reference_k,
        gain_per_kelvin: args.gain_per_kelvin,
        noise_mev: args.noise_mev,
        faults: args.faults,
        invalid_every: args.invalid_every,
        rate_hz: args.event_rate,
        start_time: args.start_time,
    };
    let sim = DetectorSim::new(config).map_err(OnlineError::from)?;
    if let Some(path) = &args.write_schema {
        write_atomic(path, sim.schema().as_bytes())?;
        tracing::info!(path = %path.display(), cells = sim.cells_per_event(), "wrote the ingest schema");
        return Ok(());
    }
    if let Some(path) = &args.truth {
        write_atomic(path, &serde_json::to_vec_pretty(sim.config())?)?;
    }
    let Some((host, port)) = args.broker else {
        return Err(OnlineError::Request(
            "no broker; hint: `--broker HOST:PORT` or TWINFLOW_MQTT_BROKER (or `--write-schema FILE` alone)".into(),
        )
        .into());
    };
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, stop.clone())?;
    }
    let config = PublishConfig {
        host,
        port,
        topic: args.topic,
        client_id: args.client_id.unwrap_or_else(|| format!("detector-sim-{}", args.seed)),
        rate: args.rate.max(0.0),
        state: args.state,
        connect_timeout: args.connect_timeout,
    };
    let state = publish::publish(&sim, &config, &stop)?;
    if args.linger && state.complete {
        tracing::info!("every event is published; waiting for SIGTERM");
        while !stop.load(std::sync::atomic::Ordering::Acquire) {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    Ok(())
}

/// Runs `twin-kernel online ...`.
pub(super) fn run_online(command: OnlineCommand, command_line: &str) -> Result<(), KernelError> {
    match command {
        OnlineCommand::Update(args) => update(args, command_line),
        OnlineCommand::Gate(args) => run_gate(args),
        OnlineCommand::Monitor(args) => run_monitor(args),
    }
}

fn update(args: UpdateArgs, command_line: &str) -> Result<(), KernelError> {
    let w = &args.window;
    let events = Events::read_window(&w.window)?;
    let previous = args.previous.as_deref().map(store::read_state).transpose()?;
    let replay = args.replay_in.as_deref().map(Replay::read).transpose()?;
    let settings = ModelSettings { hidden: args.hidden.clone(), lr: args.lr, batch: args.batch, seed: args.seed };
    let window_name = w.window.display().to_string();
    let warm = previous.is_some();
    let before = previous.as_ref().map_or(0, |p| p.epoch);
    let up = model::update(model::UpdateRequest {
        events: &events,
        layers: w.layers,
        holdout_every: w.holdout_every,
        previous,
        replay: replay.as_ref(),
        settings: &settings,
        initial_epochs: args.initial_epochs,
        epochs: args.epochs,
        update_lr: args.update_lr,
        replay_size: args.replay,
        data_file: &window_name,
    })?;
    tracing::info!(
        window = events.window_index,
        warm_start = warm,
        epochs_from = before,
        epochs_to = up.state.epoch,
        trained = up.trained,
        replayed = up.replayed,
        held_out = up.held_out.events,
        bias = format_args!("{:+.4}", up.held_out.bias),
        resolution = format_args!("{:.4}", up.held_out.resolution),
        "model updated"
    );
    let parameters = serde_json::json!({
        "window": w.window, "previous": args.previous, "replay_in": args.replay_in,
        "initial_epochs": args.initial_epochs, "epochs": args.epochs, "update_lr": args.update_lr,
        "replayed": up.replayed, "holdout_every": w.holdout_every,
    })
    .to_string();
    let provenance = Provenance::from_env(
        "online detector twin energy regression",
        "twin-kernel online update",
        parameters,
        command_line,
    );
    store::write_model(&args.out, &up.state, &provenance)?;
    up.replay.write(&args.replay_out)?;
    Ok(())
}

/// Scores of `model_file` on the held-out events.
fn score(model_file: &Path, vx: &Matrix, ve: &[f64]) -> Result<Scores, KernelError> {
    Ok(model::score(&store::read_state(model_file)?, vx, ve))
}

fn copy_atomic(from: &Path, to: &Path) -> Result<(), KernelError> {
    let mut partial = to.as_os_str().to_owned();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    std::fs::copy(from, &partial).map_err(|source| KernelError::Io {
        path: from.to_path_buf(),
        action: "copy",
        source,
    })?;
    std::fs::rename(&partial, to).map_err(|source| KernelError::Io { path: to.to_path_buf(), action: "rename", source })
}

fn run_gate(args: GateArgs) -> Result<(), KernelError> {
    let w = &args.window;
    let events = Events::read_window(&w.window)?;
    let (vx, ve) = model::held_out(&events, w.layers, w.holdout_every)?;
    if ve.is_empty() {
        return Err(OnlineError::Data { path: w.window.clone(), reason: "no held-out events".into() }.into());
    }
    let candidate = score(&args.candidate, &vx, &ve)?;
    let previous: Option<(Payload, PathBuf)> = match &args.previous_payload {
        Some(p) => {
            let payload: Payload = read_json(p)?;
            let model = p.parent().unwrap_or(Path::new(".")).join(&payload.model);
            Some((payload, model))
        }
        None => None,
    };
    let previous_scores = match &previous {
        Some((_, model)) => Some(score(model, &vx, &ve)?),
        None => None,
    };
    let model_name = args.model.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let times = (
        events.time.iter().copied().fold(f64::INFINITY, f64::min),
        events.time.iter().copied().fold(f64::NEG_INFINITY, f64::max),
    );
    let payload = gate::next_payload(&GateInput {
        cycle: args.cycle,
        window: events.window_index,
        times,
        candidate,
        previous: previous.as_ref().map(|(p, _)| p).zip(previous_scores),
        tolerance: args.tolerance,
        model: &model_name,
    });
    let in_force = match (&previous, payload.published) {
        (Some((_, model)), false) => model.clone(),
        _ => args.candidate.clone(),
    };
    copy_atomic(&in_force, &args.model)?;
    write_atomic(&args.payload, &serde_json::to_vec_pretty(&payload)?)?;
    let online = if payload.published { candidate } else { previous_scores.unwrap_or(candidate) };
    let frozen = match &args.frozen {
        Some(f) => score(f, &vx, &ve)?,
        None => candidate,
    };
    let mut alerts = String::new();
    if payload.published {
        tracing::info!(version = payload.version, reason = %payload.reason, "calibration payload published");
    } else {
        tracing::warn!(version = payload.version, reason = %payload.reason, "calibration payload kept");
        let alert = Alert {
            cycle: args.cycle,
            window: events.window_index,
            kind: "calibration-kept".into(),
            cell: None,
            message: format!("payload v{} kept: {}", payload.version, payload.reason),
        };
        alerts.push_str(&serde_json::to_string(&alert)?);
        alerts.push('\n');
    }
    write_atomic(&args.alerts, alerts.as_bytes())?;
    let mut table = match &args.scores_in {
        Some(p) => {
            std::fs::read_to_string(p).map_err(|source| KernelError::Io { path: p.clone(), action: "read", source })?
        }
        None => format!("{SCORES_HEADER}\n"),
    };
    let mean_t = events.temperature.iter().sum::<f64>() / events.len() as f64;
    table.push_str(&format!(
        "{},{},{},{:.3},{:.6},{:.6},{:.6},{:.6},{:.6},{:.6},{},{}\n",
        args.cycle,
        events.window_index,
        ve.len(),
        mean_t,
        online.bias,
        online.resolution,
        frozen.bias,
        frozen.resolution,
        candidate.bias,
        candidate.resolution,
        payload.published,
        payload.version
    ));
    write_atomic(&args.scores, table.as_bytes())?;
    tracing::info!(
        cycle = args.cycle,
        online_bias = format_args!("{:+.4}", online.bias),
        frozen_bias = format_args!("{:+.4}", frozen.bias),
        "scores"
    );
    Ok(())
}

fn run_monitor(args: MonitorArgs) -> Result<(), KernelError> {
    let w = &args.window;
    let events = Events::read_window(&w.window)?;
    let shape = [w.layers, args.cells, args.cells];
    if shape.iter().product::<usize>() != events.cells_per_event() {
        return Err(OnlineError::Request(format!(
            "{} × {} × {} cells ≠ the window's {} per event; hint: `--layers` and `--cells` of the detector",
            shape[0],
            shape[1],
            shape[2],
            events.cells_per_event()
        ))
        .into());
    }
    let previous: Option<MonitorState> = args.previous.as_deref().map(read_json).transpose()?;
    let thresholds = Thresholds {
        z_min: args.z_min,
        dead_ratio: args.dead_ratio,
        hot_ratio: args.hot_ratio,
        gain_jump: args.gain_jump,
        max_rel_error: args.max_rel_error,
    };
    let (state, alerts) = monitor::monitor(&events, previous.as_ref(), thresholds, args.cycle, shape);
    let mut lines = String::new();
    for a in &alerts {
        tracing::warn!(kind = %a.kind, "{}", a.message);
        lines.push_str(&serde_json::to_string(a)?);
        lines.push('\n');
    }
    write_atomic(&args.alerts, lines.as_bytes())?;
    write_atomic(&args.out, &serde_json::to_vec(&state)?)?;
    let flagged = state.flagged().count();
    let unmonitored = state.cells.iter().filter(|c| c.state == monitor::CellState::Unmonitored).count();
    tracing::info!(
        cycle = args.cycle,
        gain = format_args!("{:.4}", state.gain),
        flagged,
        unmonitored,
        new_alerts = alerts.len(),
        "cells judged"
    );
    Ok(())
}
