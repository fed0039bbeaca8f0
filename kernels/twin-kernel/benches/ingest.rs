//! Stream-ingest throughput: `twin-kernel ingest` (release build) against
//! `mosquitto_sub -q 1 > /dev/null` on the same stream, through the same local broker, with
//! the publisher (rumqttc, QoS 1) in this process, in the same run.
//!
//! For each payload size: the publisher alone (its ceiling: nobody subscribed), the
//! baseline, the ingest, then the ingest killed with SIGKILL at 40 % of the stream and
//! restarted (lost and duplicated records counted from the window files). Figures are
//! payload MB/s (10⁶ bytes) and records/s from the first publication until the last record
//! is received (baseline) or committed to a window file (ingest); peak RSS of the ingest.
//!
//! CPU accounting (robust to a shared machine, unlike wall time): the CPU seconds per GB
//! of payload of the broker (`/proc/PID/stat` of mosquitto), of the publisher (this
//! process) and of the consumer (its rusage once waited for), per run. From them, the
//! machine's ceiling: with every core busy, no consumer can go faster than
//! cores / (broker + publisher + consumer CPU per byte). The least a validating consumer
//! must do is parse every record against the schema (`twinflow_ingest::record::parse`,
//! timed here in process on the same payloads, no broker): that gives the ceiling of any
//! validating ingest on this machine, against which the 80 % target is checked. For each
//! codec, the same with the records also stored in windows (`parse_and_store`: parse, build
//! the columns, write the window files, in process): the ceiling of any consumer that
//! validates and stores what it receives.
//!
//! Needs a broker: `hpc/mqtt-local.sh start` (or `make bench-ingest`, which starts it), or
//! `TWINFLOW_MQTT_BROKER=HOST:PORT`.
//!
//! `cargo bench -p twinflow-kernels --bench ingest [-- SIZE_KIB... [--total MIB] [--deflate N]]`
//! (default: 1, 16 and 64 KiB records, 512 MiB of payload per run, deflate 1). Each size
//! is ingested with deflate N (NetCDF windows), scale-offset (`--format hdf5 --scale-offset`) and without
//! compression, then killed and restarted with deflate N and with scale-offset.
#![allow(clippy::print_stdout)] // a benchmark harness reports on stdout

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rumqttc::{Client, Event, MqttOptions, Outgoing, Packet, QoS};
use twinflow_exchange::ArrayFile;

const BIN: &str = env!("CARGO_BIN_EXE_twin-kernel");

/// CPU seconds (user + system) of process `pid` (`self`: this process) and of its
/// waited-for children, from `/proc/PID/stat` (fields 14–17, in clock ticks).
fn cpu_seconds(pid: &str) -> (f64, f64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name (field 2) may hold spaces: the fields after it follow the last `)`.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<f64> = rest.split_whitespace().map(|v| v.parse().unwrap_or(0.0)).collect();
    let tick = 100.0; // USER_HZ on Linux
    let at = |k: usize| f.get(k - 3).copied().unwrap_or(0.0) / tick; // field k (1-based) after `)`
    (at(14) + at(15), at(16) + at(17))
}

/// The broker's pid (from `hpc/mqtt-local.sh`'s pid file), if it is that broker.
fn broker_pid() -> Option<String> {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/mqtt/mosquitto.pid");
    let pid = std::fs::read_to_string(file).ok()?.trim().to_string();
    Path::new(&format!("/proc/{pid}")).exists().then_some(pid)
}

/// CPU used during one measurement: broker, publisher (this process), consumer (children).
#[derive(Clone, Copy)]
struct Cpu {
    broker: f64,
    me: f64,
    children: f64,
}

impl Cpu {
    fn now() -> Self {
        let broker = broker_pid().map_or(f64::NAN, |p| cpu_seconds(&p).0);
        let (me, children) = cpu_seconds("self");
        Cpu { broker, me, children }
    }
    fn since(self, start: Cpu) -> Cpu {
        Cpu { broker: self.broker - start.broker, me: self.me - start.me, children: self.children - start.children }
    }
    /// "broker X, publisher Y, consumer Z CPU s/GB".
    fn per_gb(&self, bytes: usize) -> String {
        let g = bytes as f64 / 1e9;
        format!(
            "CPU s/GB: broker {:.2}, publisher {:.2}, consumer {:.2}",
            self.broker / g,
            self.me / g,
            self.children / g
        )
    }
}

fn broker() -> (String, u16) {
    let port_file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/mqtt/port");
    let addr = std::env::var("TWINFLOW_MQTT_BROKER").ok().filter(|a| !a.is_empty()).unwrap_or_else(|| {
        let port = std::fs::read_to_string(&port_file).unwrap_or_else(|_| {
            panic!("no MQTT broker: `{}` is missing; hint: `bash hpc/mqtt-local.sh start`", port_file.display())
        });
        format!("127.0.0.1:{}", port.trim())
    });
    let (h, p) = addr.rsplit_once(':').expect("HOST:PORT");
    (h.to_string(), p.parse().expect("a port"))
}

fn unique(name: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("{name}-{}-{nanos}", std::process::id())
}

/// Detector-like records: 64 sensors, a temperature and an ADC waveform (pedestal, a
/// pulse, noise) of `samples` 12-bit counts; times strictly increasing.
fn payloads(count: usize, samples: usize) -> Vec<Vec<u8>> {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut noise = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % 7) as i64 - 3
    };
    (0..count)
        .map(|k| {
            let peak = 400 + (k * 37 % 3000) as i64;
            let mut text = format!(
                r#"{{"sensor":"cell-{:03}","time":{:.4},"temperature":{:.3},"adc":["#,
                k % 64,
                1_733_400_000.0 + k as f64 * 1e-4,
                293.15 + (k % 100) as f64 * 0.001
            );
            for s in 0..samples {
                let x = s as i64 - 20;
                let pulse = if (0..60).contains(&x) { peak * (60 - x) * x / 900 } else { 0 };
                let v = (200 + pulse + noise()).clamp(0, 4095);
                if s > 0 {
                    text.push(',');
                }
                text.push_str(&v.to_string());
            }
            text.push_str("]}");
            text.into_bytes()
        })
        .collect()
}

/// Samples per record for a payload of about `kib` KiB.
fn samples_for(kib: usize) -> usize {
    let probe = payloads(64, 1000);
    let per_sample = probe.iter().map(Vec::len).sum::<usize>() as f64 / 64.0 / 1000.0;
    ((kib * 1024) as f64 / per_sample).round().max(1.0) as usize
}

/// Publishes everything with QoS 1 as fast as the broker acknowledges; returns when all
/// are acknowledged.
fn publish(host: &str, port: u16, topic: &str, payloads: &[Vec<u8>]) -> Duration {
    let mut options = MqttOptions::new(unique("bench-pub"), host, port);
    options.set_max_packet_size(1 << 26, 1 << 26).set_inflight(1000).set_keep_alive(Duration::from_secs(60));
    let (client, mut connection) = Client::new(options, 1000);
    let data: Vec<Vec<u8>> = payloads.to_vec();
    let topic = topic.to_string();
    let t0 = Instant::now();
    let sender = std::thread::spawn(move || {
        for p in data {
            client.publish(topic.as_str(), QoS::AtLeastOnce, false, p).expect("publish");
        }
        client
    });
    let mut acked = 0;
    while acked < payloads.len() {
        match connection.recv() {
            Ok(Ok(Event::Incoming(Packet::PubAck(_)))) => acked += 1,
            Ok(Ok(_)) => {}
            Ok(Err(e)) => panic!("publisher: {e}"),
            Err(e) => panic!("publisher: {e:?}"),
        }
    }
    let elapsed = t0.elapsed();
    let client = sender.join().unwrap();
    client.disconnect().unwrap();
    for e in connection.iter() {
        if matches!(e, Ok(Event::Outgoing(Outgoing::Disconnect)) | Err(_)) {
            break;
        }
    }
    elapsed
}

struct Figure {
    seconds: f64,
    records: usize,
    bytes: usize,
    cpu: Cpu,
}

impl Figure {
    fn mb_s(&self) -> f64 {
        self.bytes as f64 / self.seconds / 1e6
    }
    fn rec_s(&self) -> f64 {
        self.records as f64 / self.seconds
    }
}

fn baseline(host: &str, port: u16, payloads: &[Vec<u8>]) -> Figure {
    let topic = unique("bench/base");
    let mut sub = Command::new("mosquitto_sub")
        .args(["-h", host, "-p", &port.to_string(), "-t", &topic, "-q", "1", "-C", &payloads.len().to_string()])
        .args(["-i", &unique("bench-sub")])
        .stdout(Stdio::null())
        .spawn()
        .expect("mosquitto_sub (hpc/setup-deps.sh --mqtt)");
    std::thread::sleep(Duration::from_millis(500)); // subscribed
    let data = payloads.to_vec(); // copied before the clocks start, as for the ingest
    let c0 = Cpu::now();
    let t0 = Instant::now();
    let publisher = {
        let (host, topic) = (host.to_string(), topic.clone());
        std::thread::spawn(move || publish(&host, port, &topic, &data))
    };
    let status = sub.wait().unwrap();
    let seconds = t0.elapsed().as_secs_f64();
    publisher.join().unwrap();
    let cpu = Cpu::now().since(c0);
    assert!(status.success(), "mosquitto_sub: {status}");
    Figure { seconds, records: payloads.len(), bytes: payloads.iter().map(Vec::len).sum(), cpu }
}

/// CPU seconds per GB of `twinflow_ingest::record::parse` on `payloads` against the
/// bench's schema, in this thread (the best of 3 passes).
fn parse_only(payloads: &[Vec<u8>], samples: usize) -> f64 {
    let schema = twinflow_ingest::Schema::parse(&schema_text(samples), Path::new("schema.yaml")).unwrap();
    let bytes: usize = payloads.iter().map(Vec::len).sum();
    let mut best = f64::MAX;
    for _ in 0..3 {
        let c0 = cpu_seconds("self").0;
        let mut ok = 0usize;
        for p in payloads {
            ok += usize::from(twinflow_ingest::record::parse(&schema, p).is_ok());
        }
        assert_eq!(ok, payloads.len(), "every benchmark record is valid");
        best = best.min(cpu_seconds("self").0 - c0);
    }
    best / (bytes as f64 / 1e9)
}

/// CPU seconds per GB of payload to parse every record and store it in windows of the
/// ingest's layout with `codec` (64 MiB of payload per window, as the runs seal them), in
/// this process, no broker: the least any consumer that validates *and* stores what it
/// receives must spend. Best of 3.
fn parse_and_store(payloads: &[Vec<u8>], samples: usize, codec: Codec) -> f64 {
    use twinflow_exchange::{Compression, Provenance, write_dataset};
    use twinflow_ingest::window::Columns;
    let schema = twinflow_ingest::Schema::parse(&schema_text(samples), Path::new("schema.yaml")).unwrap();
    let bytes: usize = payloads.iter().map(Vec::len).sum();
    let provenance = Provenance::from_env("bench", "bench", "{}".into(), "bench");
    let (ext, compression) = match codec {
        Codec::Deflate(level) => {
            ("nc", Compression { deflate_level: (level > 0).then_some(level), ..Compression::default() })
        }
        Codec::ScaleOffset => {
            ("h5", Compression { deflate_level: Some(1), scale_offset: true, ..Compression::default() })
        }
    };
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("bench-ingest").join(unique("store"));
    std::fs::create_dir_all(&dir).unwrap();
    let mut best = f64::MAX;
    for _ in 0..3 {
        let c0 = cpu_seconds("self").0;
        let (mut columns, mut filled, mut index) = (Columns::new(&schema), 0usize, 0usize);
        for (k, p) in payloads.iter().enumerate() {
            columns.push(&schema, twinflow_ingest::record::parse(&schema, p).unwrap());
            filled += p.len();
            if filled >= 64 << 20 || k + 1 == payloads.len() {
                let data = std::mem::replace(&mut columns, Columns::new(&schema)).into_dataset(
                    &schema,
                    &provenance,
                    Vec::new(),
                );
                write_dataset(&dir.join(format!("window-{index:06}.{ext}")), &data, &compression).unwrap();
                (filled, index) = (0, index + 1);
            }
        }
        best = best.min(cpu_seconds("self").0 - c0);
    }
    let _ = std::fs::remove_dir_all(&dir);
    best / (bytes as f64 / 1e9)
}

fn schema_text(samples: usize) -> String {
    format!(
        "title: benchmark waveforms\nfields:\n  temperature: {{type: f64, units: K, min: 200, max: 400}}\n  \
         adc: {{type: i32, length: {samples}, dim: sample, units: count, min: 0, max: 4095}}\n"
    )
}

/// How the window files are compressed.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Codec {
    /// NetCDF windows (the default format), deflate at this level (0: none).
    Deflate(u8),
    /// HDF5 windows, scale-offset for the integer columns (deflate 1 for the others).
    ScaleOffset,
}

impl Codec {
    fn args(self) -> Vec<String> {
        match self {
            Self::Deflate(level) => vec!["--deflate".into(), level.to_string()],
            Self::ScaleOffset => ["--format", "hdf5", "--scale-offset"].map(String::from).to_vec(),
        }
    }
}

impl std::fmt::Display for Codec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Deflate(level) => write!(f, "deflate {level}"),
            Self::ScaleOffset => write!(f, "scale-offset (HDF5)"),
        }
    }
}

struct IngestRun {
    dir: PathBuf,
    topic: String,
    client_id: String,
    codec: Codec,
}

impl IngestRun {
    fn start(&self, host: &str, port: u16, log: &str) -> (Child, PathBuf) {
        let log = self.dir.join(log);
        let child = Command::new(BIN)
            .args(["ingest", "--broker", &format!("{host}:{port}"), "--topic", &self.topic])
            .args(["--schema", "schema.yaml", "--out-dir", "out", "--client-id", &self.client_id])
            // Sealed by size (64 MiB) in the stream; the last window 1 s after its first
            // record instead of the default 10 s, which would dominate a short run.
            .args(self.codec.args())
            .args(["--window", "1s"])
            .current_dir(&self.dir)
            .env("TWINFLOW_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        (child, log)
    }
}

/// Records committed so far, from the `wrote ... records_in=N` lines of the logs.
fn committed(logs: &[&Path]) -> usize {
    logs.iter()
        .map(|l| {
            std::fs::read_to_string(l)
                .unwrap_or_default()
                .lines()
                .filter(|line| line.contains(" wrote "))
                .filter_map(|line| line.split("records_in=").nth(1))
                .filter_map(|rest| rest.split_whitespace().next()?.parse::<usize>().ok())
                .sum::<usize>()
        })
        .sum()
}

fn wait_log(log: &Path, text: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !std::fs::read_to_string(log).unwrap_or_default().contains(text) {
        assert!(Instant::now() < deadline, "the ingest did not log `{text}`");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn peak_rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:")).map(str::to_string))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        .map_or(f64::NAN, |kib| kib / 1024.0)
}

fn stop(mut child: Child) {
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let _ = child.wait();
}

/// Lost and duplicated records over every window file (times are unique per record).
fn audit(out: &Path, payloads: usize) -> (usize, usize) {
    let mut seen: HashMap<u64, u32> = HashMap::new();
    for e in std::fs::read_dir(out).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        if name.starts_with("window-") && (name.ends_with(".nc") || name.ends_with(".h5")) {
            for t in ArrayFile::open(&p).unwrap().read_all("time").unwrap() {
                *seen.entry(((t - 1_733_400_000.0) * 1e4).round() as u64).or_default() += 1;
            }
        }
    }
    let lost = (0..payloads as u64).filter(|k| !seen.contains_key(k)).count();
    let duplicated = seen.values().map(|&n| n as usize - 1).sum();
    (lost, duplicated)
}

fn ingest(
    host: &str,
    port: u16,
    payloads: &[Vec<u8>],
    samples: usize,
    codec: Codec,
    kill_at: Option<f64>,
) -> (Figure, f64, (usize, usize), u64) {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("bench-ingest").join(unique("run"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("schema.yaml"), schema_text(samples)).unwrap();
    let run = IngestRun { dir: dir.clone(), topic: unique("bench/ingest"), client_id: unique("bench-ingest"), codec };
    let (mut child, log0) = run.start(host, port, "run-0.log");
    wait_log(&log0, "subscribed");
    let n = payloads.len();
    let data = payloads.to_vec();
    let c0 = Cpu::now();
    let t0 = Instant::now();
    let publisher = {
        let (host, topic) = (host.to_string(), run.topic.clone());
        std::thread::spawn(move || publish(&host, port, &topic, &data))
    };
    let mut logs = vec![log0];
    let mut rss: f64 = 0.0;
    if let Some(fraction) = kill_at {
        while committed(&logs.iter().map(PathBuf::as_path).collect::<Vec<_>>()) < (n as f64 * fraction) as usize {
            std::thread::sleep(Duration::from_millis(5));
        }
        rss = rss.max(peak_rss_mib(child.id()));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let (c, log1) = run.start(host, port, "run-1.log");
        child = c;
        logs.push(log1);
    }
    let deadline = Instant::now() + Duration::from_secs(600);
    let paths: Vec<&Path> = logs.iter().map(PathBuf::as_path).collect();
    while committed(&paths) < n && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
        if kill_at.is_some() && publisher.is_finished() && committed(&paths) >= n {
            break;
        }
    }
    let seconds = t0.elapsed().as_secs_f64();
    rss = rss.max(peak_rss_mib(child.id()));
    publisher.join().unwrap();
    // A restart may resend records of a committed window: they are dropped as
    // duplicates, so the count of records in reaches n exactly, never above.
    std::thread::sleep(Duration::from_millis(300));
    stop(child);
    let cpu = Cpu::now().since(c0);
    let audit = audit(&dir.join("out"), n);
    let duplicates_dropped: u64 = paths
        .iter()
        .map(|l| {
            std::fs::read_to_string(l)
                .unwrap_or_default()
                .lines()
                .filter(|line| line.contains("ingest stopped"))
                .filter_map(|line| line.split("duplicates=").nth(1)?.split_whitespace().next()?.parse::<u64>().ok())
                .sum::<u64>()
        })
        .sum();
    let _ = std::fs::remove_dir_all(&dir);
    (Figure { seconds, records: n, bytes: payloads.iter().map(Vec::len).sum(), cpu }, rss, audit, duplicates_dropped)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    let mut sizes = Vec::new();
    let mut total_mib = 512usize;
    let mut deflate = 1u8;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--total" => total_mib = it.next().and_then(|v| v.parse().ok()).expect("--total MIB"),
            "--deflate" => deflate = it.next().and_then(|v| v.parse().ok()).expect("--deflate N"),
            s => sizes.extend(s.parse::<usize>().ok()),
        }
    }
    if sizes.is_empty() {
        sizes = vec![1, 16, 64];
    }
    let (host, port) = broker();
    println!(
        "stream ingest vs mosquitto_sub (broker {host}:{port}, {} cores, {total_mib} MiB per run, deflate {deflate})",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    for kib in sizes {
        let samples = samples_for(kib);
        let count = (total_mib * 1024 / kib).max(64);
        let data = payloads(count, samples);
        let bytes: usize = data.iter().map(Vec::len).sum();
        println!(
            "\n{kib} KiB records ({} ADC samples, mean {:.0} B), {count} records, {:.0} MB:",
            samples,
            bytes as f64 / count as f64,
            bytes as f64 / 1e6
        );
        let alone = publish(&host, port, &unique("bench/alone"), &data).as_secs_f64();
        println!(
            "  publisher alone (no subscriber)       {:8.1} MB/s {:9.0} records/s",
            bytes as f64 / alone / 1e6,
            count as f64 / alone
        );
        let base = baseline(&host, port, &data);
        println!(
            "  baseline mosquitto_sub -q 1 >/dev/null{:8.1} MB/s {:9.0} records/s  {}",
            base.mb_s(),
            base.rec_s(),
            base.cpu.per_gb(bytes)
        );
        // The machine's ceiling for any consumer that validates every record: the broker's
        // and the publisher's CPU per byte (from the baseline) plus the parse alone.
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        let g = bytes as f64 / 1e9;
        let parse = parse_only(&data, samples);
        let ceiling = cores / ((base.cpu.broker + base.cpu.me) / g + parse) * 1e3;
        println!(
            "  parse alone (no broker, 1 core)        {:8.1} MB/s  CPU s/GB: {parse:.2}; ceiling of a validating consumer on {cores} cores: {:.1} MB/s = {:.1} % of the baseline",
            1e3 / parse,
            ceiling,
            100.0 * ceiling / base.mb_s()
        );
        let mut codecs = vec![Codec::Deflate(deflate), Codec::ScaleOffset, Codec::Deflate(0)];
        codecs.dedup();
        for &codec in &codecs {
            let store = parse_and_store(&data, samples, codec);
            let ceiling = cores / ((base.cpu.broker + base.cpu.me) / g + store) * 1e3;
            println!(
                "  parse + store alone, {:<17} CPU s/GB: {store:.2}; ceiling of a consumer that validates and stores: {:.1} MB/s = {:.1} % of the baseline",
                codec.to_string(),
                ceiling,
                100.0 * ceiling / base.mb_s()
            );
            let (fig, rss, (lost, dup), _) = ingest(&host, port, &data, samples, codec, None);
            println!(
                "  twin-kernel ingest, {:<18}{:8.1} MB/s {:9.0} records/s  {:5.1} % of baseline, peak RSS {:.0} MiB, lost {lost}, duplicated {dup}; {}",
                codec.to_string(),
                fig.mb_s(),
                fig.rec_s(),
                100.0 * fig.mb_s() / base.mb_s(),
                rss,
                fig.cpu.per_gb(bytes)
            );
        }
        for codec in [Codec::Deflate(deflate), Codec::ScaleOffset] {
            let (fig, rss, (lost, dup), dropped) = ingest(&host, port, &data, samples, codec, Some(0.4));
            println!(
                "  ingest ({codec}), kill -9 at 40 % and restart {:8.1} MB/s {:9.0} records/s  lost {lost}, duplicated {dup} ({dropped} redeliveries dropped), peak RSS {:.0} MiB",
                fig.mb_s(),
                fig.rec_s(),
                rss
            );
        }
    }
}
