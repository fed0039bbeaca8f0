//! The flood twin kept in step with its gauges, end to end: the physical twin
//! (`examples/flood-nature-mini.yaml`: nature run + a sensor delivering one gauge file
//! every 2 s) and the cycling twin (`examples/flood-twin-mini.yaml`: 8 members, six
//! 10-minute cycles of forecast → LETKF analysis → outlook, with the open loop and the
//! scores against the nature run) run side by side through the real binaries.
//!
//! Acceptance (issue 13), on the scores of the last cycle (river time 3600 s), fixed seeds:
//! - analysis RMSE of water depth against the truth, over the wet cells and at the gauges,
//!   ≤ 50 % of the open loop's (same members, same forcing, no assimilation); flood DA
//!   studies report 40–88 % error reductions at analysis time (Habert et al. 2016,
//!   J. Hydrol. 536:147);
//! - estimated inflow scale (ensemble mean) within 10 % of the truth (1.3);
//! - spread / RMSE of the analysis and of the forecast over the wet cells in [0.5, 2];
//! - the water the analysis adds or removes is reported every cycle (volume of the analysis
//!   mean minus that of the forecast mean), and brings the volume closer to the truth's on
//!   average over the cycles.
//!
//! Needs the MPI-enabled `twin-kernel` next to `twinflow` (`make test` builds it).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::repo_root;
use crate::flood::{mpi_kernel, run_with_deadline};
use crate::support::*;

/// One row of `scores.csv`: column → value.
type Row = BTreeMap<String, String>;

fn read_scores(path: &Path) -> Vec<Row> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().expect("a header line").split(',').collect();
    lines
        .map(|l| {
            let cells: Vec<&str> = l.split(',').collect();
            assert_eq!(cells.len(), header.len(), "ragged row `{l}` in {}", path.display());
            header.iter().zip(cells).map(|(h, c)| (h.to_string(), c.to_string())).collect()
        })
        .collect()
}

fn num(row: &Row, column: &str) -> f64 {
    row.get(column)
        .unwrap_or_else(|| panic!("no column `{column}` in {row:?}"))
        .parse()
        .unwrap_or_else(|e| panic!("`{column}` in {row:?}: {e}"))
}

fn pick<'r>(rows: &'r [Row], label: &str, time: f64) -> &'r Row {
    rows.iter()
        .find(|r| r["label"] == label && num(r, "time") == time)
        .unwrap_or_else(|| panic!("no `{label}` row at t = {time} in {rows:?}"))
}

#[test]
#[allow(clippy::print_stderr)] // the figures of the last cycle, for the record (`--nocapture`)
fn the_flood_twin_follows_its_gauges_and_beats_the_open_loop() {
    let kernel = mpi_kernel();
    let d = scratch("flood-twin");
    let obs = d.join("obs");
    let obs_param = format!("obs={}", obs.display());
    let examples = repo_root().join("examples");

    // The physical twin: nature run, then one gauge file every 2 s.
    let mut nature = twinflow();
    nature
        .current_dir(&d)
        .env("TWINFLOW_KERNEL_BIN", &kernel)
        .arg("run")
        .arg(examples.join("flood-nature-mini.yaml"))
        .args(["-p", &obs_param, "--runs-dir", "nature-runs", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let nature = nature.spawn().expect("start the physical twin");

    let mut twin: Command = twinflow();
    twin.current_dir(&d)
        .env("TWINFLOW_KERNEL_BIN", &kernel)
        .arg("run")
        .arg(examples.join("flood-twin-mini.yaml"))
        .args(["-p", &obs_param, "--json"])
        .arg("-p")
        .arg(format!("results={}", d.join("results").display()));
    let out = run_with_deadline(twin, Duration::from_secs(600));
    let nature = nature.wait_with_output().unwrap();
    assert!(nature.status.success(), "physical twin:\n{}", show(&nature));
    assert!(out.status.success(), "twin:\n{}", show(&out));
    let id = run_id(&out);
    let tasks = db_tasks(&d.join("runs"), &id);
    assert!(tasks.values().all(|(s, _)| s == "succeeded"), "{tasks:#?}");
    let analyses = tasks.keys().filter(|t| t.ends_with("/twin/analysis")).count();
    assert_eq!(analyses, 6, "one analysis per cycle: {:?}", tasks.keys());
    // Each cycle's warnings and map are published under `results=POINT/`.
    for point in (600..=3600).step_by(600) {
        for file in ["warnings.csv", "exceedance.png"] {
            let p = d.join(format!("results/{point}/{file}"));
            assert!(std::fs::metadata(&p).is_ok_and(|m| m.len() > 0), "{} is missing", p.display());
        }
    }

    let last = d.join(format!("runs/{id}/cycles/3600/steps/twin"));
    let rows = read_scores(&last.join("scores/out/scores.csv"));
    assert_eq!(rows.len(), 18, "forecast, analysis and open loop for each of 6 cycles: {rows:#?}");
    let (a, f, o) = (pick(&rows, "analysis", 3600.0), pick(&rows, "forecast", 3600.0), pick(&rows, "openloop", 3600.0));
    eprintln!("last cycle:\n  analysis {a:?}\n  forecast {f:?}\n  open loop {o:?}");

    for column in ["rmse_wet", "rmse_gauges"] {
        let ratio = num(a, column) / num(o, column);
        assert!(ratio <= 0.5, "{column}: analysis {} vs open loop {} ({ratio:.2})", num(a, column), num(o, column));
    }
    let scale = num(a, "inflow_scale_mean");
    assert!((scale - 1.3).abs() <= 0.13, "estimated inflow scale {scale}, truth 1.3");
    for (label, row) in [("analysis", a), ("forecast", f)] {
        let ratio = num(row, "spread_wet") / num(row, "rmse_wet");
        assert!((0.5..=2.0).contains(&ratio), "{label} spread/RMSE = {ratio:.2}: {row:?}");
    }

    // What the analysis adds: the volume increments, cycle by cycle.
    let (mut before, mut after) = (0.0, 0.0);
    for k in 1..=6 {
        let t = 600.0 * k as f64;
        let (fa, an) = (pick(&rows, "forecast", t), pick(&rows, "analysis", t));
        let truth = num(fa, "volume_truth");
        let increment = num(an, "volume") - num(fa, "volume");
        eprintln!(
            "t = {t}: forecast volume {:.0} m³, analysis adds {increment:+.0} m³, truth {truth:.0} m³",
            num(fa, "volume")
        );
        assert!(increment.is_finite() && increment.abs() < 0.2 * truth, "t = {t}: increment {increment}");
        before += (num(fa, "volume") - truth).abs();
        after += (num(an, "volume") - truth).abs();
    }
    assert!(after < before, "the analyses did not bring the volume closer to the truth: {after} vs {before}");

    // The outlook of every cycle: a warning list and a map.
    for k in 1..=6 {
        let dir = d.join(format!("runs/{id}/cycles/{}/steps/twin/warnings/out", 600 * k));
        let warnings = std::fs::read_to_string(dir.join("warnings.csv")).unwrap();
        assert!(warnings.starts_with("gauge,x,y,threshold,probability"), "{warnings}");
        let png = std::fs::read(dir.join("exceedance.png")).unwrap();
        assert!(png.starts_with(b"\x89PNG"), "cycle {k}: not a PNG");
    }
}
