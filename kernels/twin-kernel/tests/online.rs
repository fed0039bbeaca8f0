//! `twin-kernel detector-sim` and `twin-kernel online` through the binary, without a
//! broker: the schema the simulator writes is the one its records pass (and its defective
//! records fail) in the ingest's validation; invalid requests exit 3 naming what is wrong.
//! The science (drift followed within ±1 %, cells flagged) is tested in process in
//! `kernels/online/tests/acceptance.rs`, and through MQTT and the engine in
//! `tests/e2e/detector_online.rs`.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use twinflow_calo::Scratch;
use twinflow_ingest::{Schema, record};
use twinflow_online::sim::{DetectorSim, SimConfig};

mod support;
use support::{BIN, failed, ok, run};

fn kernel(dir: &Path, args: &[&str]) -> std::process::Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args);
    run(cmd, dir, Duration::from_secs(60))
}

#[test]
fn the_simulator_schema_accepts_its_records_and_rejects_its_defective_ones() {
    let dir = support::scratch_in("online", "schema");
    ok(kernel(&dir, &["detector-sim", "--write-schema", "events.yaml", "--layers", "6", "--cells", "3"]), "schema");
    let schema = Schema::load(&dir.join("events.yaml")).unwrap();
    assert_eq!(schema.fields.iter().find(|f| f.name == "cells").and_then(|f| f.length), Some(54));
    let sim = DetectorSim::new(SimConfig { events: 60, layers: 6, invalid_every: 10, ..SimConfig::default() }).unwrap();
    let mut scratch = Scratch::default();
    let (mut accepted, mut rejected) = (0, Vec::new());
    for e in 0..60 {
        match record::parse(&schema, &sim.payload(e, &mut scratch)) {
            Ok(r) => {
                assert!(!sim.is_invalid(e), "event {e} is defective but passed");
                assert_eq!(r.sensor, "calo");
                accepted += 1;
            }
            Err(why) => {
                assert!(sim.is_invalid(e), "event {e} was rejected: {why}");
                rejected.push(why.to_string());
            }
        }
    }
    assert_eq!((accepted, rejected.len()), (54, 6), "{rejected:?}");
}

#[test]
fn invalid_requests_exit_3_and_say_what_is_wrong() {
    let dir = support::scratch_in("online", "invalid");
    let (code, err) = failed(
        kernel(&dir, &["detector-sim", "--write-schema", "s.yaml", "--layers", "6", "--fault", "5:9,0,0:dead"]),
        "a fault outside the detector",
    );
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("cell [9, 0, 0] is outside the detector (6 layers"), "{err}");
    let (code, err) = failed(kernel(&dir, &["detector-sim", "--fault", "5:1,0,0:cold"]), "an unknown fault");
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("unknown fault `cold`"), "{err}");
    let (code, err) = failed(
        kernel(&dir, &["online", "update", "--window", "missing.h5", "--out", "m.h5", "--replay-out", "r.h5"]),
        "a missing window",
    );
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("missing.h5"), "{err}");
    let (code, err) = failed(
        kernel(&dir, &["detector-sim", "--events", "10", "--broker", "127.0.0.1:1", "--connect-timeout", "1s"]),
        "no broker",
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("cannot use the MQTT broker `127.0.0.1:1`") && err.contains("hint:"), "{err}");
}

/// Writes events `first..first + n` of `sim` as a window file in the ingest's layout.
fn write_window(sim: &DetectorSim, path: &Path, index: i64, first: u64, n: u64) {
    use twinflow_exchange::{Attr, Compression, DType, Dataset, Dim, Variable, write_dataset};
    let mut scratch = Scratch::default();
    let events: Vec<_> = (first..first + n).map(|e| sim.event(e, &mut scratch)).collect();
    let width = sim.cells_per_event();
    let mut event = Variable::f64("event", &["record"], "event", "1", events.iter().map(|e| e.event as f64).collect());
    event.dtype = DType::I64;
    let ds = Dataset {
        dims: vec![
            Dim { name: "record".into(), len: n as usize, unlimited: false },
            Dim { name: "cell".into(), len: width, unlimited: false },
        ],
        variables: vec![
            event,
            Variable::f64("time", &["record"], "time", "s", events.iter().map(|e| e.time).collect()),
            Variable::f64("energy", &["record"], "energy", "GeV", events.iter().map(|e| e.energy).collect()),
            Variable::f64(
                "temperature",
                &["record"],
                "temperature",
                "K",
                events.iter().map(|e| e.temperature).collect(),
            ),
            Variable::f64(
                "cells",
                &["record", "cell"],
                "cells",
                "GeV",
                events.iter().flat_map(|e| e.cells.iter().map(|&c| f64::from(c))).collect(),
            ),
        ],
        attrs: vec![("window_index".into(), Attr::I64(vec![index]))],
    };
    write_dataset(path, &ds, &Compression::default()).unwrap();
}

#[test]
fn a_cycle_through_the_binary_publishes_then_keeps_the_payload_and_draws_the_figures() {
    let dir = support::scratch_in("online", "cycle");
    let sim = DetectorSim::new(SimConfig { events: 400, layers: 6, ..SimConfig::default() }).unwrap();
    write_window(&sim, &dir.join("w0.h5"), 0, 0, 200);
    write_window(&sim, &dir.join("w1.h5"), 1, 200, 200);
    let k = |args: &[&str]| ok(kernel(&dir, args), &args.join(" "));
    let common = ["--layers", "6"];
    k(&[
        &["online", "update", "--window", "w0.h5"][..],
        &common,
        &["--initial-epochs", "40", "--out", "m0.h5", "--replay-out", "r0.h5"],
    ]
    .concat());
    std::fs::create_dir_all(dir.join("p0")).unwrap();
    std::fs::create_dir_all(dir.join("p1")).unwrap();
    let gate = |cycle: &str, window: &str, candidate: &str, out: &str, extra: &[&str]| {
        let p = |f: &str| format!("{out}/{f}");
        let args: Vec<String> =
            ["online", "gate", "--window", window, "--layers", "6", "--cycle", cycle, "--candidate", candidate]
                .iter()
                .map(|s| s.to_string())
                .chain(extra.iter().map(|s| s.to_string()))
                .chain(
                    [
                        "--payload",
                        &p("payload.json"),
                        "--model",
                        &p("model.h5"),
                        "--scores",
                        &p("scores.csv"),
                        "--alerts",
                        &p("alerts.jsonl"),
                    ]
                    .iter()
                    .map(|s| s.to_string()),
                )
                .collect();
        k(&args.iter().map(String::as_str).collect::<Vec<_>>());
    };
    gate("0", "w0.h5", "m0.h5", "p0", &[]);
    let payload = |f: &str| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(dir.join(f)).unwrap()).unwrap()
    };
    let p0 = payload("p0/payload.json");
    assert_eq!((p0["version"].as_u64(), p0["published"].as_bool()), (Some(1), Some(true)), "{p0}");
    // The warm start continues the payload in force on the next window.
    k(&[
        &["online", "update", "--window", "w1.h5"][..],
        &common,
        &[
            "--previous",
            "p0/model.h5",
            "--replay-in",
            "r0.h5",
            "--epochs",
            "3",
            "--out",
            "m1.h5",
            "--replay-out",
            "r1.h5",
        ],
    ]
    .concat());
    // A gate that accepts no loss at all, nor even an equal resolution, keeps version 1.
    gate(
        "1",
        "w1.h5",
        "m1.h5",
        "p1",
        &[
            "--previous-payload",
            "p0/payload.json",
            "--frozen",
            "m0.h5",
            "--scores-in",
            "p0/scores.csv",
            "--tolerance=-0.5",
        ],
    );
    let p1 = payload("p1/payload.json");
    assert_eq!(
        (p1["version"].as_u64(), p1["published"].as_bool(), p1["decision"].as_str()),
        (Some(1), Some(false), Some("kept-previous")),
        "{p1}"
    );
    assert_eq!((p1["iov"]["first_cycle"].as_u64(), p1["iov"]["last_cycle"].as_u64()), (Some(0), Some(1)), "{p1}");
    assert_eq!(std::fs::read(dir.join("p1/model.h5")).unwrap(), std::fs::read(dir.join("p0/model.h5")).unwrap());
    let alerts = std::fs::read_to_string(dir.join("p1/alerts.jsonl")).unwrap();
    assert!(alerts.contains("\"kind\":\"calibration-kept\"") && alerts.contains("payload v1 kept"), "{alerts}");
    let scores = std::fs::read_to_string(dir.join("p1/scores.csv")).unwrap();
    assert_eq!(scores.lines().count(), 3, "{scores}");
    assert!(scores.lines().nth(2).unwrap().ends_with(",false,1"), "{scores}");
    // The monitor's reference and judgement, then the figures.
    k(&[
        &["online", "monitor", "--window", "w0.h5"][..],
        &common,
        &["--cells", "3", "--cycle", "0", "--out", "mon0.json", "--alerts", "a0.jsonl"],
    ]
    .concat());
    k(&[
        &["online", "monitor", "--window", "w1.h5"][..],
        &common,
        &["--cells", "3", "--cycle", "1", "--previous", "mon0.json", "--out", "mon1.json", "--alerts", "a1.jsonl"],
    ]
    .concat());
    assert_eq!(std::fs::read_to_string(dir.join("a1.jsonl")).unwrap(), "", "a healthy detector raised alerts");
    k(&[
        "plot",
        "online",
        "--scores",
        "p1/scores.csv",
        "--monitor",
        "mon1.json",
        "--bias",
        "bias.png",
        "--cells",
        "cells.png",
    ]);
    for f in ["bias.png", "cells.png"] {
        let bytes = std::fs::read(dir.join(f)).unwrap();
        assert!(bytes.starts_with(b"\x89PNG") && bytes.len() > 200, "{f}");
    }
    // A monitor told the wrong geometry says so.
    let (code, err) = failed(
        kernel(
            &dir,
            &[
                "online", "monitor", "--window", "w1.h5", "--layers", "6", "--cells", "4", "--cycle", "1", "--out",
                "x.json", "--alerts", "x.jsonl",
            ],
        ),
        "wrong geometry",
    );
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("6 × 4 × 4 cells ≠ the window's 54 per event"), "{err}");
}
