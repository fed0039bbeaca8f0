//! `twin-kernel ingest` against a real broker: the private mosquitto of
//! `hpc/mqtt-local.sh` (started by `make test`; its port in `target/mqtt/port`), or the one
//! `TWINFLOW_MQTT_BROKER=HOST:PORT` names. Without a broker these tests fail with a hint;
//! they never skip.
//!
//! Each test has its own topic prefix and client ids, so they run in parallel and never
//! see another run's messages or sessions.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rumqttc::{Client, Event, MqttOptions, Outgoing, Packet, QoS};
use twinflow_exchange::{Attr, Values, read_dataset};

mod support;
use support::{BIN, ok, run};

#[path = "../../../tests/shared/mqtt_broker.rs"]
mod mqtt_broker;

/// The broker under test (see `tests/shared/mqtt_broker.rs`).
fn broker() -> String {
    mqtt_broker::broker("ingest")
}

fn host_port(addr: &str) -> (String, u16) {
    let (h, p) = addr.rsplit_once(':').unwrap();
    (h.to_string(), p.parse().unwrap())
}

/// A name no other test run uses (topics, client ids).
fn unique(name: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("{name}-{}-{nanos}", std::process::id())
}

fn scratch(name: &str) -> PathBuf {
    support::scratch_in("ingest", name)
}

/// Publishes `payloads` to `topic` with QoS 1 and returns once the broker acknowledged
/// every one (the broker then holds them for the subscribers' sessions).
fn publish(addr: &str, topic: &str, payloads: Vec<Vec<u8>>) {
    publish_paced(addr, topic, payloads, Duration::ZERO);
}

fn publish_paced(addr: &str, topic: &str, payloads: Vec<Vec<u8>>, pause: Duration) {
    let (host, port) = host_port(addr);
    let mut options = MqttOptions::new(unique("pub"), host, port);
    options.set_max_packet_size(1 << 24, 1 << 24).set_keep_alive(Duration::from_secs(30));
    let (client, mut connection) = Client::new(options, 64);
    let n = payloads.len();
    let topic = topic.to_string();
    let sender = std::thread::spawn(move || {
        for p in payloads {
            client.publish(topic.as_str(), QoS::AtLeastOnce, false, p).unwrap();
            if !pause.is_zero() {
                std::thread::sleep(pause);
            }
        }
        client
    });
    let mut acked = 0;
    let deadline = Instant::now() + Duration::from_secs(120);
    while acked < n {
        assert!(Instant::now() < deadline, "the broker acknowledged {acked} of {n} publications");
        match connection.recv_timeout(Duration::from_millis(200)) {
            Ok(Ok(Event::Incoming(Packet::PubAck(_)))) => acked += 1,
            Ok(Ok(_)) | Err(_) => {}
            Ok(Err(e)) => panic!("publisher lost the broker: {e}"),
        }
    }
    let client = sender.join().unwrap();
    client.disconnect().unwrap();
    for e in connection.iter() {
        if matches!(e, Ok(Event::Outgoing(Outgoing::Disconnect)) | Err(_)) {
            break;
        }
    }
}

/// `twin-kernel ingest`'s arguments for a broker, topic filter, schema file and output
/// directory, then `extra`.
fn ingest_args(addr: &str, topic: &str, schema: &str, out: &str, extra: &[&str]) -> Vec<String> {
    ["--broker", addr, "--topic", topic, "--schema", schema, "--out-dir", out]
        .iter()
        .chain(extra)
        .map(|s| s.to_string())
        .collect()
}

/// A running ingest whose stderr goes to a file.
struct Ingest {
    child: Child,
    log: PathBuf,
}

impl Drop for Ingest {
    /// A failing test must not leave an ingest running: it would hold the client id's
    /// session and fight the next run's ingest for it.
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Ingest {
    fn start(dir: &Path, args: &[String], log_name: &str) -> Self {
        let log = dir.join(log_name);
        let child = Command::new(BIN)
            .arg("ingest")
            .args(args)
            .current_dir(dir)
            .env("HDF5_USE_FILE_LOCKING", "FALSE")
            .env("TWINFLOW_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Self { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log shows `text` (the ingest is connected/subscribed).
    fn wait_for(&mut self, text: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.log().contains(text) {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("the ingest exited ({status}) before logging `{text}`:\n{}", self.log());
            }
            assert!(Instant::now() < deadline, "the ingest did not log `{text}` in 30 s:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for the exit; returns the status and the log.
    fn wait(mut self, timeout: Duration) -> (std::process::ExitStatus, String) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (status, self.log());
            }
            if Instant::now() > deadline {
                panic!("the ingest did not stop within {timeout:?}:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

const SCHEMA: &str = "\
title: test gauges
sensors: [g1, g2, g3]
fields:
  level: {type: f64, units: m, long_name: water level, min: -5, max: 50}
  battery: {type: f32, units: V, min: 0, max: 5, required: false}
  adc: {type: i32, length: 4, dim: sample, units: count, min: 0, max: 4095}
";

fn record(sensor: &str, time: f64, level: f64, adc: [i32; 4]) -> Vec<u8> {
    serde_json::json!({"sensor": sensor, "time": time, "level": level, "adc": adc}).to_string().into_bytes()
}

/// The window files of `out` in index order.
fn windows(out: &Path, ext: &str) -> Vec<PathBuf> {
    let mut w: Vec<PathBuf> = std::fs::read_dir(out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            name.starts_with("window-") && name.ends_with(ext)
        })
        .collect();
    w.sort();
    w
}

fn int_attr(ds: &twinflow_exchange::Dataset, name: &str) -> i64 {
    ds.attr(name).and_then(Attr::as_f64).unwrap_or_else(|| panic!("attribute `{name}` missing")) as i64
}

/// (sensor, time) of every record of a window.
fn keys(path: &Path) -> Vec<(String, f64)> {
    let ds = read_dataset(path).unwrap();
    let Values::Str(names) = &ds.variable("sensor_name").unwrap().values else { panic!("sensor_name") };
    let index = ds.variable("sensor_index").unwrap().num().unwrap().to_vec();
    let time = ds.variable("time").unwrap().num().unwrap().to_vec();
    index.iter().zip(time).map(|(&i, t)| (names[i as usize].clone(), t)).collect()
}

fn dead_letters(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path).unwrap_or_default().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[test]
fn invalid_records_are_dead_lettered_with_their_reason_and_the_counts_balance() {
    let addr = broker();
    let dir = scratch("dead-letters");
    std::fs::write(dir.join("schema.yaml"), SCHEMA).unwrap();
    let topic = unique("t/dl");
    let mut ingest =
        Ingest::start(&dir, &ingest_args(&addr, &format!("{topic}/#"), "schema.yaml", "out", &[]), "ingest.log");
    ingest.wait_for("subscribed");
    let mut payloads = vec![
        record("g1", 1.0, 1.5, [0, 1, 2, 3]),
        record("g2", 1.0, 2.5, [4, 5, 6, 7]),
        record("g1", 2.0, 1.75, [8, 9, 10, 4095]),
    ];
    let invalid: Vec<(&str, Vec<u8>)> = vec![
        ("not_json", b"{\"sensor\": \"g1\", ".to_vec()),
        ("not_object", b"[1, 2, 3]".to_vec()),
        ("missing_field", br#"{"sensor": "g3", "time": 5, "adc": [0, 0, 0, 0]}"#.to_vec()),
        ("wrong_type", br#"{"sensor": "g3", "time": 5, "level": "high", "adc": [0, 0, 0, 0]}"#.to_vec()),
        ("wrong_length", br#"{"sensor": "g3", "time": 5, "level": 1, "adc": [0, 0]}"#.to_vec()),
        ("out_of_range", record("g3", 5.0, 51.0, [0, 0, 0, 0])),
        ("out_of_range", record("g3", 6.0, 1.0, [0, 0, 4096, 0])),
        ("unknown_sensor", record("g9", 5.0, 1.0, [0, 0, 0, 0])),
        ("unknown_field", br#"{"sensor": "g3", "time": 7, "level": 1, "adc": [0, 0, 0, 0], "x": 1}"#.to_vec()),
        ("time_not_increasing", record("g1", 2.0, 3.0, [0, 0, 0, 0])),
        ("time_not_increasing", record("g1", 0.5, 3.0, [0, 0, 0, 0])),
    ];
    payloads.extend(invalid.iter().map(|(_, p)| p.clone()));
    payloads.push(record("g3", 9.0, -5.0, [0, 0, 0, 0]));
    publish(&addr, &format!("{topic}/gauges"), payloads);
    // SIGTERM: the open window is written and acknowledged, exit 0.
    std::thread::sleep(Duration::from_millis(500));
    nix_kill(ingest.child.id(), "TERM");
    let (status, log) = ingest.wait(Duration::from_secs(30));
    assert!(status.success(), "{status}\n{log}");

    let out = dir.join("out");
    let files = windows(&out, ".nc");
    assert_eq!(files.len(), 1, "{files:?}\n{log}");
    let ds = read_dataset(&files[0]).unwrap();
    assert_eq!(int_attr(&ds, "records_in"), 15);
    assert_eq!(int_attr(&ds, "records_written"), 4);
    assert_eq!(int_attr(&ds, "records_dead_lettered"), 11);
    assert_eq!(int_attr(&ds, "records_duplicate"), 0);
    assert_eq!(ds.attr("window_time_min").and_then(Attr::as_f64), Some(1.0));
    assert_eq!(ds.attr("window_time_max").and_then(Attr::as_f64), Some(9.0));
    assert_eq!(keys(&files[0]), [("g1".into(), 1.0), ("g2".into(), 1.0), ("g1".into(), 2.0), ("g3".into(), 9.0)]);
    assert_eq!(ds.variable("level").unwrap().num().unwrap(), [1.5, 2.5, 1.75, -5.0]);
    // An optional field never sent is the fill value.
    assert_eq!(ds.variable("battery").unwrap().num().unwrap(), [-9999.0; 4]);

    let letters = dead_letters(&out.join("dead-letter.jsonl"));
    let reasons: Vec<&str> = letters.iter().map(|l| l["reason"].as_str().unwrap()).collect();
    assert_eq!(reasons, invalid.iter().map(|(r, _)| *r).collect::<Vec<_>>());
    for (line, (_, payload)) in letters.iter().zip(&invalid) {
        assert_eq!(line["payload"].as_str().unwrap().as_bytes(), payload.as_slice(), "{line}");
        assert_eq!(line["window"], 0);
        assert!(line["topic"].as_str().unwrap().ends_with("/gauges"));
        assert!(!line["detail"].as_str().unwrap().is_empty());
    }
    assert_eq!(letters[5]["detail"], "field `level` is 51, above the maximum 50");
    assert!(log.contains("records_in=15 written=4 dead_lettered=11"), "{log}");

    // ncdump: the values, the CF attributes, chunked and compressed record columns.
    let dump = ok(run(ncdump(&["-s"], &files[0]), &dir, Duration::from_secs(30)), "ncdump");
    let text = String::from_utf8_lossy(&dump.stdout);
    for needle in [
        "record = UNLIMITED ; // (4 currently)",
        "level = 1.5, 2.5, 1.75, -5 ;",
        "sensor_name = \"g1\", \"g2\", \"g3\" ;",
        "sensor_index = 0, 1, 0, 2 ;",
        "level:units = \"m\" ;",
        "level:_DeflateLevel = 1 ;",
        "adc:_ChunkSizes = 4, 4 ;",
        "sensor_name:cf_role = \"timeseries_id\" ;",
        ":featureType = \"timeSeries\" ;",
        "8, 9, 10, 4095,",
    ] {
        assert!(text.contains(needle), "`{needle}` missing from ncdump:\n{text}");
    }
}

fn ncdump(args: &[&str], path: &Path) -> Command {
    let mut c = Command::new("ncdump");
    c.args(args).arg(path);
    c
}

fn nix_kill(pid: u32, signal: &str) {
    let status = Command::new("kill").args([&format!("-{signal}"), &pid.to_string()]).status().unwrap();
    assert!(status.success(), "kill -{signal} {pid}");
}

#[test]
fn windows_close_by_size_and_by_time() {
    let addr = broker();
    let dir = scratch("windowing");
    std::fs::write(dir.join("schema.yaml"), SCHEMA).unwrap();
    // By size: 10 records of exactly 100 bytes, windows of 250 bytes → 3 + 3 + 3 + 1.
    let topic = unique("t/size");
    let mut ingest = Ingest::start(
        &dir,
        &ingest_args(
            &addr,
            &topic,
            "schema.yaml",
            "size",
            &["--window", "1h", "--window-bytes", "250", "--until-idle", "2s"],
        ),
        "size.log",
    );
    ingest.wait_for("subscribed");
    let padded = |k: usize| {
        let mut p = record("g1", k as f64, 1.0, [0, 0, 0, 0]);
        p.truncate(p.len() - 1);
        while p.len() < 99 {
            p.push(b' ');
        }
        p.push(b'}');
        p
    };
    publish(&addr, &topic, (0..10).map(padded).collect());
    let (status, log) = ingest.wait(Duration::from_secs(60));
    assert!(status.success(), "{log}");
    let files = windows(&dir.join("size"), ".nc");
    let counts: Vec<usize> = files.iter().map(|f| keys(f).len()).collect();
    assert_eq!(counts, [3, 3, 3, 1], "{log}");
    let times: Vec<f64> = files.iter().flat_map(|f| keys(f)).map(|(_, t)| t).collect();
    assert_eq!(times, (0..10).map(f64::from).collect::<Vec<_>>());

    // By time: windows of 1.5 s; a burst, a pause of 4 s, another burst → two windows.
    let topic = unique("t/time");
    let mut ingest = Ingest::start(
        &dir,
        &ingest_args(&addr, &topic, "schema.yaml", "time", &["--window", "1500ms", "--max-windows", "2"]),
        "time.log",
    );
    ingest.wait_for("subscribed");
    publish(&addr, &topic, (0..4).map(|k| record("g2", k as f64, 0.0, [k; 4])).collect());
    std::thread::sleep(Duration::from_secs(4));
    publish(&addr, &topic, (4..7).map(|k| record("g2", k as f64, 0.0, [k; 4])).collect());
    let (status, log) = ingest.wait(Duration::from_secs(60));
    assert!(status.success(), "{log}");
    let files = windows(&dir.join("time"), ".nc");
    assert_eq!(files.iter().map(|f| keys(f).len()).collect::<Vec<_>>(), [4, 3], "{log}");
    let first = read_dataset(&files[0]).unwrap();
    let opened = first.attr("window_opened").and_then(Attr::as_f64).unwrap();
    let sealed = first.attr("window_sealed").and_then(Attr::as_f64).unwrap();
    assert!((1.49..3.5).contains(&(sealed - opened)), "sealed {:.3} s after opening", sealed - opened);
}

/// Back-pressure: with a queue of one message the network thread blocks at every message
/// while windows are written; the broker holds the rest, and everything arrives once.
#[test]
fn a_queue_of_one_message_still_delivers_everything_once() {
    let addr = broker();
    let dir = scratch("queue-1");
    std::fs::write(dir.join("schema.yaml"), SCHEMA).unwrap();
    let topic = unique("t/queue");
    let mut ingest = Ingest::start(
        &dir,
        &ingest_args(
            &addr,
            &topic,
            "schema.yaml",
            "out",
            &["--queue", "1", "--window-bytes", "2k", "--until-idle", "2s"],
        ),
        "ingest.log",
    );
    ingest.wait_for("subscribed");
    let n = 600;
    publish(&addr, &topic, (0..n).map(|k| record(["g1", "g2", "g3"][k % 3], k as f64, 0.0, [1, 2, 3, 4])).collect());
    let (status, log) = ingest.wait(Duration::from_secs(120));
    assert!(status.success(), "{log}");
    let files = windows(&dir.join("out"), ".nc");
    assert!(files.len() > 10, "{} windows", files.len());
    let times: Vec<f64> = files.iter().flat_map(|f| keys(f)).map(|(_, t)| t).collect();
    assert_eq!(times, (0..n).map(|k| k as f64).collect::<Vec<_>>(), "{log}");
}

#[test]
fn hdf5_windows_are_read_by_h5dump() {
    let addr = broker();
    let dir = scratch("hdf5");
    std::fs::write(dir.join("schema.json"), r#"{"fields": {"energy": {"type": "f32", "units": "GeV"}}}"#).unwrap();
    let topic = unique("t/h5");
    let mut ingest = Ingest::start(
        &dir,
        &ingest_args(&addr, &topic, "schema.json", "out", &["--format", "hdf5", "--until-idle", "1s"]),
        "ingest.log",
    );
    ingest.wait_for("subscribed");
    let payloads = (0..5)
        .map(|k| format!(r#"{{"sensor": "cell-{k}", "time": {k}.25, "energy": {}}}"#, 0.5 * f64::from(k)).into_bytes())
        .collect();
    publish(&addr, &topic, payloads);
    let (status, log) = ingest.wait(Duration::from_secs(60));
    assert!(status.success(), "{log}");
    let files = windows(&dir.join("out"), ".h5");
    assert_eq!(files.len(), 1, "{log}");
    let dump = ok(
        run(
            {
                let mut c = Command::new("h5dump");
                c.args(["-d", "energy", "-d", "time", "-d", "sensor_name"]).arg(&files[0]);
                c
            },
            &dir,
            Duration::from_secs(30),
        ),
        "h5dump",
    );
    let text = String::from_utf8_lossy(&dump.stdout);
    for needle in ["0, 0.5, 1, 1.5, 2", "0.25, 1.25, 2.25, 3.25, 4.25", "\"cell-0\", \"cell-1\"", "\"GeV\""] {
        assert!(text.contains(needle), "`{needle}` missing from h5dump:\n{text}");
    }
}

/// `--scale-offset`: the integer columns of HDF5 windows packed by HDF5's scale-offset
/// filter (floats still deflated) come back exactly, through our reader, `h5dump` and
/// `ncdump`; without `--format hdf5` it is a usage error, before connecting.
#[test]
fn scale_offset_windows_keep_integers_exactly_and_are_read_by_h5dump_and_ncdump() {
    let addr = broker();
    let dir = scratch("scale-offset");
    std::fs::write(dir.join("schema.yaml"), SCHEMA).unwrap();
    let topic = unique("t/so");
    let args = |extra: &[&str]| ingest_args(&addr, &topic, "schema.yaml", "out", extra);
    let refused = Command::new(BIN).arg("ingest").args(args(&["--scale-offset"])).current_dir(&dir).output().unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(2), "a usage error: {stderr}");
    assert!(stderr.contains("--scale-offset needs --format hdf5"), "{stderr}");

    let args = args(&["--format", "hdf5", "--scale-offset", "--until-idle", "1s"]);
    let mut ingest = Ingest::start(&dir, &args, "ingest.log");
    ingest.wait_for("subscribed");
    // ADC values over the whole 12-bit range, and a battery reading missing (fill value)
    // in every other record.
    let adc = |k: i32| [k * 200, 4095 - k * 150, (k * 37) % 4096, 2048];
    let payloads = (0..20)
        .map(|k| {
            let mut r = serde_json::json!({"sensor": "g1", "time": f64::from(k) + 0.5, "level": 0.25 * f64::from(k), "adc": adc(k)});
            if k % 2 == 0 {
                r["battery"] = serde_json::json!(3.5);
            }
            r.to_string().into_bytes()
        })
        .collect();
    publish(&addr, &topic, payloads);
    let (status, log) = ingest.wait(Duration::from_secs(60));
    assert!(status.success(), "{log}");
    let files = windows(&dir.join("out"), ".h5");
    assert_eq!(files.len(), 1, "{log}");
    let expected: Vec<f64> = (0..20).flat_map(adc).map(f64::from).collect();
    let ds = read_dataset(&files[0]).unwrap();
    assert_eq!(ds.variable("adc").unwrap().num().unwrap(), expected.as_slice(), "integers come back exactly");
    let battery = ds.variable("battery").unwrap().num().unwrap();
    assert_eq!((battery[0], battery[1]), (3.5, -9999.0), "a missing optional number is the fill value");

    let h5 = |args: &[&str]| {
        let mut c = Command::new("h5dump");
        c.args(args).arg(&files[0]);
        String::from_utf8_lossy(&ok(run(c, &dir, Duration::from_secs(30)), "h5dump").stdout).to_string()
    };
    let props = h5(&["-p", "-H", "-d", "adc"]);
    assert!(props.contains("SCALEOFFSET"), "adc is packed by scale-offset:\n{props}");
    let props = h5(&["-p", "-H", "-d", "level"]);
    assert!(props.contains("DEFLATE") && !props.contains("SCALEOFFSET"), "floats stay deflated:\n{props}");
    let text = String::from_utf8_lossy(
        &ok(run(ncdump(&["-v", "adc"], &files[0]), &dir, Duration::from_secs(30)), "ncdump").stdout,
    )
    .to_string();
    let dumped: Vec<f64> = text
        .split("adc =")
        .nth(1)
        .unwrap_or_else(|| panic!("no adc in ncdump:\n{text}"))
        .split(|c: char| !(c.is_ascii_digit() || c == '-'))
        .filter(|t| !t.is_empty())
        .map(|t| t.parse().unwrap())
        .collect();
    assert_eq!(dumped, expected, "ncdump reads the packed integers:\n{text}");
}

#[test]
fn without_a_broker_the_ingest_fails_with_a_hint() {
    let dir = scratch("no-broker");
    std::fs::write(dir.join("schema.yaml"), SCHEMA).unwrap();
    // A port nothing listens on: bind one, then free it.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut cmd = Command::new(BIN);
    cmd.args(["ingest", "--broker", &format!("127.0.0.1:{port}"), "--topic", "t", "--schema", "schema.yaml"]).args([
        "--out-dir",
        "out",
        "--connect-timeout",
        "1s",
    ]);
    let out = run(cmd, &dir, Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("cannot use the MQTT broker `127.0.0.1:{port}`")), "{err}");
    assert!(err.contains("hint: is it running? (`hpc/mqtt-local.sh start`"), "{err}");
}

#[test]
fn an_invalid_schema_is_reported_before_connecting() {
    let dir = scratch("bad-schema");
    std::fs::write(dir.join("schema.yaml"), "fields:\n  v: {type: f64, min: 3, max: 1}\n").unwrap();
    let mut cmd = Command::new(BIN);
    cmd.args(["ingest", "--broker", "127.0.0.1:1", "--topic", "t", "--schema", "schema.yaml", "--out-dir", "o"]);
    let out = run(cmd, &dir, Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("invalid schema `schema.yaml`: field `v`: `min` 3 is above `max` 1"), "{err}");
}

/// The acceptance test of at-least-once delivery with exactly-once output: the ingest is
/// killed with SIGKILL three times while a publisher streams, restarted each time with the
/// same client id, and finally drains the stream. Every record published is in exactly
/// one window.
#[test]
fn kill_9_mid_stream_loses_nothing_and_repeats_nothing() {
    let addr = broker();
    let dir = scratch("kill-9");
    std::fs::write(dir.join("schema.yaml"), SCHEMA).unwrap();
    let topic = unique("t/kill");
    let client_id = unique("ingest-kill");
    let args = |extra: &[&str]| {
        let mut a = ingest_args(&addr, &format!("{topic}/#"), "schema.yaml", "out", &["--client-id", &client_id]);
        a.extend(["--window", "200ms", "--window-bytes", "6k", "--queue", "64"].map(String::from));
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let start = |extra: &[&str], log: &str| {
        let a = args(extra);
        Ingest::start(&dir, &a, log)
    };
    let mut ingest = start(&[], "run-0.log");
    ingest.wait_for("subscribed");

    // A stream of 3 sensors that goes on until the kills are done (then 300 records more),
    // so every kill lands mid-stream however slow the machine.
    let kills_done = Arc::new(AtomicBool::new(false));
    let publisher = {
        let (addr, topic, done) = (addr.clone(), format!("{topic}/gauges"), kills_done.clone());
        std::thread::spawn(move || {
            let mut k = 0;
            let mut after = 0;
            while after < 100 {
                let batch: Vec<Vec<u8>> = (k..k + 25)
                    .flat_map(|k| ["g1", "g2", "g3"].map(|s| record(s, k as f64, (k % 40) as f64, [k % 4096, 1, 2, 3])))
                    .collect();
                publish_paced(&addr, &topic, batch, Duration::from_micros(1000));
                k += 25;
                if done.load(Ordering::Relaxed) {
                    after += 25;
                }
            }
            k
        })
    };
    let out = dir.join("out");
    let mut kills = 0;
    for run_no in 1..=3 {
        // Let it commit a few windows, then SIGKILL it mid-stream.
        let before = windows(&out, ".nc").len();
        let deadline = Instant::now() + Duration::from_secs(60);
        while windows(&out, ".nc").len() < before + 2 {
            assert!(Instant::now() < deadline, "no windows written:\n{}", ingest.log());
            std::thread::sleep(Duration::from_millis(10));
        }
        ingest.child.kill().unwrap(); // SIGKILL
        ingest.child.wait().unwrap();
        kills += 1;
        ingest = start(&[], &format!("run-{run_no}.log"));
        ingest.wait_for("connected");
    }
    kills_done.store(true, Ordering::Relaxed);
    let published = publisher.join().unwrap();
    let expected: BTreeSet<(String, u64)> =
        (0..published).flat_map(|k| ["g1", "g2", "g3"].map(|s| (s.to_string(), k as u64))).collect();
    // The last run drains what the broker holds and stops when the stream is idle.
    nix_kill(ingest.child.id(), "TERM");
    let (status, log) = ingest.wait(Duration::from_secs(60));
    assert!(status.success(), "{log}");
    let last = start(&["--until-idle", "2s"], "run-final.log");
    let (status, log) = last.wait(Duration::from_secs(120));
    assert!(status.success(), "{log}");

    let mut seen: BTreeMap<(String, u64), usize> = BTreeMap::new();
    let mut records_in = 0;
    for f in windows(&out, ".nc") {
        let ds = read_dataset(&f).unwrap();
        records_in += int_attr(&ds, "records_in");
        assert_eq!(int_attr(&ds, "records_dead_lettered"), 0, "{}", f.display());
        for (s, t) in keys(&f) {
            *seen.entry((s, t as u64)).or_default() += 1;
        }
    }
    let repeated: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    let lost: Vec<_> = expected.iter().filter(|k| !seen.contains_key(*k)).collect();
    assert!(
        repeated.is_empty(),
        "{} records written twice, e.g. {:?}",
        repeated.len(),
        &repeated[..repeated.len().min(5)]
    );
    assert!(lost.is_empty(), "{} records lost, e.g. {:?}", lost.len(), &lost[..lost.len().min(5)]);
    assert_eq!(seen.len(), expected.len());
    assert_eq!(records_in, expected.len() as i64);
    assert!(dead_letters(&out.join("dead-letter.jsonl")).is_empty());
    assert_eq!(kills, 3);
    // No partial window left behind.
    let mut leftovers = String::new();
    for e in std::fs::read_dir(&out).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().to_string();
        if name.ends_with(".partial") {
            leftovers.push_str(&name);
        }
    }
    assert!(leftovers.is_empty(), "{leftovers}");
}

/// `--ready-file` appears once the subscription is in place (a workflow service's
/// readiness): a message published right after it is in the ingest's first window, not
/// lost to a session that did not exist yet.
#[test]
fn the_ready_file_appears_once_subscribed_and_nothing_published_after_it_is_lost() {
    let addr = broker();
    let dir = scratch("ready-file");
    std::fs::write(dir.join("schema.yaml"), SCHEMA).unwrap();
    let topic = unique("t/ready");
    let mut ingest = Ingest::start(
        &dir,
        &ingest_args(
            &addr,
            &format!("{topic}/#"),
            "schema.yaml",
            "out",
            &["--ready-file", "ready", "--window-records", "1", "--max-windows", "1"],
        ),
        "ingest.log",
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while !dir.join("ready").exists() {
        assert!(Instant::now() < deadline, "no ready file in 30 s:\n{}", ingest.log());
        if let Some(status) = ingest.child.try_wait().unwrap() {
            panic!("the ingest exited ({status}) before it was ready:\n{}", ingest.log());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(ingest.log().contains("subscribed"), "ready before subscribed:\n{}", ingest.log());
    publish(&addr, &format!("{topic}/gauges"), vec![record("g1", 1.0, 1.5, [0, 1, 2, 3])]);
    let (status, log) = ingest.wait(Duration::from_secs(30));
    assert!(status.success(), "{status}\n{log}");
    let files = windows(&dir.join("out"), ".nc");
    assert_eq!(files.len(), 1, "{log}");
    assert_eq!(keys(&files[0]), [("g1".to_string(), 1.0)]);
}
