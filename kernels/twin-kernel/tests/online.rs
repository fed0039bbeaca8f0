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
