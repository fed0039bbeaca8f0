//! `twin-kernel ingest`: clap arguments and the runner around `twinflow-ingest`.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use clap::Args;
use twinflow_exchange::{Compression, Format, Provenance};
use twinflow_ingest::{IngestConfig, Schema, StopReason};

use super::KernelError;
use super::args::FormatArg;
use super::twin::parse_duration;

/// Help text after the options of `twin-kernel ingest`.
pub const INGEST_HELP: &str = "\
Examples:
  hpc/mqtt-local.sh start                       # a private mosquitto; prints 127.0.0.1:PORT
  twin-kernel ingest --broker 127.0.0.1:18830 --topic 'gauges/#' \\
      --schema gauges.yaml --out-dir stream --window 10s --window-bytes 64M
  twin-kernel ingest --topic 'calo/+/events' --schema events.yaml --out-dir w \\
      --format hdf5 --client-id calo-ingest --until-idle 30s   # broker from TWINFLOW_MQTT_BROKER
  twin-kernel ingest --topic 'calo/#' --schema events.yaml --out-dir w --format hdf5 --scale-offset

Writes stream/window-000000.nc, window-000001.nc, …: each window's records (one variable per
schema field along an unlimited `record` dimension, `time`, `sensor_index` into
`sensor_name`; CF timeSeries, chunked and deflated), sealed `--window` after its first message
at `--window-bytes` of payload or at `--window-records` messages, whichever comes first, written
as `.partial` and renamed.
Global attributes: window_index, records_in = records_written + records_dead_lettered,
records_duplicate (redeliveries dropped), window_time_min/max, time_coverage_start/end.

Invalid records go to the dead-letter file (JSON lines: window, topic, received, reason,
detail, payload), never dropped. Messages are acknowledged (QoS 1, persistent session of
`--client-id`) only after their window is on disk, so a restart, even after kill -9, loses
nothing and repeats nothing (ingest-state.json in the output directory). The broker must let
a client hold 2 windows and the queue unacknowledged and queue for it while it is away
(mosquitto: max_inflight_messages ≥ 2 × --window-records + --queue, max_queued_messages 0;
hpc/mqtt-local.sh sets 32768 and 0).

Schema (YAML, or JSON by extension):
  sensor_field: sensor          # default; a non-empty string
  time_field: time              # default; a number, strictly increasing per sensor
  sensors: [g1, g2]             # optional allow-list
  unknown_fields: reject        # or ignore
  fields:
    level: {type: f64, units: m, min: -5, max: 50}
    adc: {type: i32, length: 64, dim: sample, units: count, min: 0, max: 4095}
    note: {type: string, required: false}
Types: f64, f32, i32, i64, string. Sizes: 512k, 64M, 1G (binary), or bytes. Durations: 500ms,
10s, 1m. Stops on SIGTERM/SIGINT (the open window is written and acknowledged, exit 0), after
`--max-windows` windows or `--until-idle` without a message.";

/// Arguments of `twin-kernel ingest`.
#[derive(Debug, Args)]
pub struct IngestArgs {
    /// MQTT broker, `HOST:PORT`.
    #[arg(long, env = "TWINFLOW_MQTT_BROKER", value_name = "HOST:PORT", value_parser = parse_broker)]
    pub broker: (String, u16),
    /// Topic filter to subscribe to with QoS 1 (repeat for several; `+` and `#` wildcards).
    #[arg(long = "topic", value_name = "FILTER", required = true)]
    pub topics: Vec<String>,
    /// Schema of the records (YAML; `.json` → JSON).
    #[arg(long, value_name = "FILE")]
    pub schema: PathBuf,
    /// Directory of the window files and the ingest state (created if missing).
    #[arg(long, value_name = "DIR")]
    pub out_dir: PathBuf,
    /// Seal a window this long after its first message.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "10s")]
    pub window: Duration,
    /// ... or once its payloads reach this size.
    #[arg(long, value_name = "SIZE", value_parser = parse_size, default_value = "64M")]
    pub window_bytes: usize,
    /// ... or once it holds this many messages (keep 2 × N + `--queue` within the
    /// broker's in-flight limit).
    #[arg(long, value_name = "N", default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub window_records: u32,
    /// Window file format.
    #[arg(long, value_enum, default_value = "netcdf")]
    pub format: FormatArg,
    /// Deflate level of the window files, 0 (off) to 9.
    #[arg(long, value_parser = clap::value_parser!(u8).range(0..=9), default_value_t = 1)]
    pub deflate: u8,
    /// Integer columns packed by HDF5's scale-offset filter instead of deflate: lossless
    /// (each chunk in the bits its range needs), about 2.8× cheaper to write than deflate 1
    /// for as small a file, for fast streams of integer samples; float columns still
    /// deflate. Needs `--format hdf5`.
    #[arg(long)]
    pub scale_offset: bool,
    /// Client id of the persistent session: keep it across restarts [default:
    /// `twinflow-ingest-` and a digest of the output directory's absolute path].
    #[arg(long, value_name = "ID")]
    pub client_id: Option<String>,
    /// Messages held in memory between the network and the validation (back-pressure
    /// beyond it: the broker buffers).
    #[arg(long, value_name = "N", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..))]
    pub queue: u32,
    /// Dead-letter file [default: `<out-dir>/dead-letter.jsonl`].
    #[arg(long, value_name = "FILE")]
    pub dead_letter: Option<PathBuf>,
    /// Stop after writing this many windows.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_windows: Option<u64>,
    /// Stop after this long without a message (the open window is written first).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub until_idle: Option<Duration>,
    /// Give up when the broker cannot be reached for this long at start.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "10s")]
    pub connect_timeout: Duration,
    /// Create this (empty) file once subscribed: the broker then keeps the stream for
    /// this session, so publishers may start (a workflow service's `ready: { file }`).
    #[arg(long, value_name = "FILE")]
    pub ready_file: Option<PathBuf>,
}

pub(super) fn parse_broker(text: &str) -> Result<(String, u16), String> {
    let (host, port) =
        text.rsplit_once(':').ok_or_else(|| format!("`{text}` is not HOST:PORT; hint: write `127.0.0.1:1883`"))?;
    let port: u16 = port.parse().map_err(|_| format!("`{port}` is not a port number"))?;
    if host.is_empty() {
        return Err(format!("`{text}` has no host"));
    }
    Ok((host.trim_start_matches('[').trim_end_matches(']').to_string(), port))
}

/// A size: `512k`, `64M`, `1G` (powers of 1024), or a bare number of bytes.
pub fn parse_size(text: &str) -> Result<usize, String> {
    let s = text.trim();
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let n: f64 = number.parse().map_err(|_| format!("`{s}` is not a size; hint: write `64M` or `512k`"))?;
    let scale = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" | "kib" => 1024.0,
        "m" | "mb" | "mib" => 1024.0 * 1024.0,
        "g" | "gb" | "gib" => 1024.0 * 1024.0 * 1024.0,
        other => return Err(format!("`{s}`: unknown unit `{other}` (use k, M, G)")),
    };
    let bytes = n * scale;
    if !(1.0..=1e15).contains(&bytes) {
        return Err(format!("`{s}` is out of range"));
    }
    Ok(bytes as usize)
}

/// Runs `twin-kernel ingest` until SIGTERM/SIGINT or a stop condition.
pub(super) fn run_ingest(args: IngestArgs, command_line: &str) -> Result<(), KernelError> {
    let schema = Schema::load(&args.schema).map_err(twinflow_ingest::IngestError::from)?;
    let out_dir = std::path::absolute(&args.out_dir)?;
    let client_id = args.client_id.clone().unwrap_or_else(|| {
        let digest = blake3::hash(out_dir.as_os_str().as_encoded_bytes()).to_hex();
        format!("twinflow-ingest-{}", &digest[..12])
    });
    let dead_letter = args.dead_letter.clone().unwrap_or_else(|| out_dir.join("dead-letter.jsonl"));
    let format: Format = args.format.into();
    let parameters = serde_json::json!({
        "broker": format!("{}:{}", args.broker.0, args.broker.1), "topics": args.topics,
        "schema": args.schema, "client_id": client_id, "window_s": args.window.as_secs_f64(),
        "window_bytes": args.window_bytes, "window_records": args.window_records, "queue": args.queue, "deflate": args.deflate, "scale_offset": args.scale_offset,
    })
    .to_string();
    let provenance = Provenance::from_env(&schema.title, "twin-kernel ingest", parameters, command_line);
    let compression = Compression {
        deflate_level: (args.deflate > 0).then_some(args.deflate),
        scale_offset: args.scale_offset,
        ..Compression::default()
    };
    if args.scale_offset && format != Format::Hdf5 {
        return Err(KernelError::Usage(
            "--scale-offset needs --format hdf5 (the NetCDF writer offers deflate only)".into(),
        ));
    }
    let config = IngestConfig {
        host: args.broker.0,
        port: args.broker.1,
        topics: args.topics,
        client_id,
        schema,
        out_dir,
        dead_letter,
        format,
        compression,
        window: args.window,
        window_bytes: args.window_bytes,
        window_records: args.window_records as usize,
        queue: args.queue as usize,
        max_windows: args.max_windows,
        until_idle: args.until_idle,
        connect_timeout: args.connect_timeout,
        ready_file: args.ready_file,
        provenance,
    };
    // SIGTERM (the engine cancelling a service step) and SIGINT only set the flag: the
    // open window is written and acknowledged before the process exits 0.
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, stop.clone())?;
    }
    tracing::info!(
        broker = %format!("{}:{}", config.host, config.port), topics = ?config.topics,
        client_id = %config.client_id, out_dir = %config.out_dir.display(), "ingest starting"
    );
    let summary = twinflow_ingest::run(&config, &stop).map_err(KernelError::Ingest)?;
    let why = match summary.reason {
        StopReason::Signal => "stop requested",
        StopReason::MaxWindows => "--max-windows reached",
        StopReason::Idle => "--until-idle reached",
    };
    tracing::info!(
        windows = summary.windows,
        records_in = summary.records_in,
        written = summary.written,
        dead_lettered = summary.dead_lettered,
        duplicates = summary.duplicates,
        bytes = summary.bytes,
        "ingest stopped ({why})"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_brokers_parse() {
        assert_eq!(parse_size("64M"), Ok(64 << 20));
        assert_eq!(parse_size("512k"), Ok(512 << 10));
        assert_eq!(parse_size("1000"), Ok(1000));
        assert!(parse_size("3 parsecs").is_err());
        assert!(parse_size("0").is_err());
        assert_eq!(parse_broker("127.0.0.1:1883"), Ok(("127.0.0.1".into(), 1883)));
        assert_eq!(parse_broker("[::1]:1883"), Ok(("::1".into(), 1883)));
        assert!(parse_broker("localhost").is_err());
    }
}
