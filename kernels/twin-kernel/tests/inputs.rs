//! Hardening (issue 17): input files the flood kernel must refuse, each with a clear error
//! naming the file and the variable, exit code 3 (`INVALID_INPUT` of the kernels' contract;
//! 2 is a command-line usage error), no panic and no output left behind: NaN or infinite
//! DEM values, infinite initial depths, an initial state on another grid, dimensions that
//! would take more memory than the machine has (refused before anything is allocated),
//! and zero or negative cell sizes; and calorimeter and training settings out of range,
//! and training data too large for the machine.
//!
//! The files are written as CDL and compiled with `ncgen` (netcdf-bin, which these tests
//! need anyway): a variable left out of the CDL's `data:` section is declared but never
//! written, so a file can claim a 10⁶ × 10⁶ grid and stay small.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

mod support;
use support::{BIN, ok, run};

fn scratch(name: &str) -> PathBuf {
    support::scratch_in("input-tests", name)
}

/// A NetCDF-4 file `dir/name` with coordinates `x`, `y` and the `(y, x)` variables `vars`
/// (name, values; `None`: declared, not written).
fn netcdf(dir: &Path, name: &str, x: &[f64], y: &[f64], vars: &[(&str, Option<Vec<f64>>)]) -> PathBuf {
    let list = |v: &[f64]| {
        v.iter()
            .map(|f| match *f {
                f if f.is_nan() => "NaN".to_string(),
                f if f == f64::INFINITY => "Infinity".to_string(),
                f if f == f64::NEG_INFINITY => "-Infinity".to_string(),
                f => format!("{f:?}"),
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut cdl = format!(
        "netcdf f {{\ndimensions:\n  x = {} ;\n  y = {} ;\nvariables:\n  double x(x) ;\n  double y(y) ;\n",
        x.len(),
        y.len()
    );
    for (v, _) in vars {
        cdl.push_str(&format!("  double {v}(y, x) ;\n"));
    }
    cdl.push_str(&format!("data:\n  x = {} ;\n  y = {} ;\n", list(x), list(y)));
    for (v, values) in vars {
        if let Some(values) = values {
            cdl.push_str(&format!("  {v} = {} ;\n", list(values)));
        }
    }
    cdl.push_str("}\n");
    let cdl_path = dir.join(format!("{name}.cdl"));
    std::fs::write(&cdl_path, cdl).unwrap();
    let out = dir.join(name);
    let st = Command::new("ncgen").args(["-4", "-o"]).arg(&out).arg(&cdl_path).status().expect("ncgen (netcdf-bin)");
    assert!(st.success(), "ncgen {}", cdl_path.display());
    out
}

fn axis(n: usize, d: f64) -> Vec<f64> {
    (0..n).map(|i| i as f64 * d).collect()
}

/// A sloping bed of 8 × 6 cells of 10 m.
fn bed() -> Vec<f64> {
    (0..48).map(|k| 10.0 - (k % 8) as f64 * 0.5).collect()
}

/// `flood.json` for the 8 × 6 grid: a short run, with `initial` when given.
fn config(dir: &Path, initial: Option<&str>) -> PathBuf {
    let mut c = serde_json::json!({ "end_time": 2.0, "output_interval": 1.0 });
    if let Some(f) = initial {
        c["initial"] = serde_json::json!({ "file": f });
    }
    let p = dir.join("flood.json");
    std::fs::write(&p, c.to_string()).unwrap();
    p
}

/// Runs the flood kernel on `dem`; expects exit code 3 and every needle in stderr, no
/// panic and no output.
fn refused(dir: &Path, dem: &Path, needles: &[&str]) {
    let mut cmd = Command::new(BIN);
    cmd.args(["flood", "--config", "flood.json", "--out", "result.nc", "--dem"]).arg(dem);
    let out = run(cmd, dir, Duration::from_secs(120));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{}: exit code for invalid input\n{stderr}", dem.display());
    assert!(!stderr.contains("panicked"), "{stderr}");
    for n in needles {
        assert!(stderr.contains(n), "{}: stderr lacks `{n}`:\n{stderr}", dem.display());
    }
    assert!(!dir.join("result.nc").exists() && !dir.join("result.nc.partial").exists());
}

#[test]
fn the_valid_grid_of_these_tests_runs() {
    // The fixtures below differ from this one only in what they break.
    let dir = scratch("valid");
    let dem = netcdf(&dir, "dem.nc", &axis(8, 10.0), &axis(6, 10.0), &[("z", Some(bed()))]);
    let state = netcdf(&dir, "state.nc", &axis(8, 10.0), &axis(6, 10.0), &[("h", Some(vec![0.5; 48]))]);
    config(&dir, Some(state.file_name().unwrap().to_str().unwrap()));
    let mut cmd = Command::new(BIN);
    cmd.args(["flood", "--config", "flood.json", "--out", "result.nc", "--dem"]).arg(&dem);
    ok(run(cmd, &dir, Duration::from_secs(120)), "flood on the valid grid");
    assert!(dir.join("result.nc").is_file());
}

#[test]
fn nan_or_infinite_dem_values_are_refused_naming_the_file_variable_and_cell() {
    let dir = scratch("dem_values");
    config(&dir, None);
    for (name, v) in [("nan.nc", f64::NAN), ("inf.nc", f64::INFINITY), ("neginf.nc", f64::NEG_INFINITY)] {
        let mut z = bed();
        z[8 * 3 + 5] = v;
        let dem = netcdf(&dir, name, &axis(8, 10.0), &axis(6, 10.0), &[("z", Some(z))]);
        refused(&dir, &dem, &[name, "`z`", "non-finite value at row 3, column 5"]);
    }
}

#[test]
fn an_infinite_initial_depth_and_an_initial_state_on_another_grid_are_refused() {
    let dir = scratch("initial");
    let dem = netcdf(&dir, "dem.nc", &axis(8, 10.0), &axis(6, 10.0), &[("z", Some(bed()))]);
    let mut h = vec![0.0; 48];
    h[8 * 2 + 1] = f64::INFINITY;
    netcdf(&dir, "inf_state.nc", &axis(8, 10.0), &axis(6, 10.0), &[("h", Some(h))]);
    config(&dir, Some("inf_state.nc"));
    refused(&dir, &dem, &["inf_state.nc", "`h` is inf at row 2, column 1", "infinities are not allowed"]);

    netcdf(&dir, "small_state.nc", &axis(7, 10.0), &axis(6, 10.0), &[("h", Some(vec![0.0; 42]))]);
    config(&dir, Some("small_state.nc"));
    refused(&dir, &dem, &["small_state.nc", "grid is 7×6, the DEM's is 8×6"]);
}

#[test]
fn dimensions_larger_than_the_machines_memory_are_refused_before_allocating() {
    let dir = scratch("huge");
    config(&dir, None);
    // 10⁶ × 10⁶ cells: 7.3 TiB of f64, declared but not written (the file is a few MB).
    let n = 1_000_000;
    let dem = netcdf(&dir, "huge.nc", &axis(n, 1.0), &axis(n, 1.0), &[("z", None)]);
    assert!(std::fs::metadata(&dem).unwrap().len() < 64 << 20);
    refused(
        &dir,
        &dem,
        &["huge.nc", "`z` has shape [1000000, 1000000]", "7450.6 GiB", "more than this machine's memory"],
    );
}

#[test]
fn zero_or_negative_cell_sizes_are_refused() {
    let dir = scratch("cells");
    config(&dir, None);
    let descending: Vec<f64> = axis(8, 10.0).into_iter().rev().collect();
    let dem = netcdf(&dir, "negative_dx.nc", &descending, &axis(6, 10.0), &[("z", Some(bed()))]);
    refused(&dir, &dem, &["negative_dx.nc", "coordinate `x` must be strictly monotonic"]);
    let dem = netcdf(&dir, "zero_dx.nc", &[5.0; 8], &axis(6, 10.0), &[("z", Some(bed()))]);
    refused(&dir, &dem, &["zero_dx.nc", "coordinate `x` must be strictly monotonic"]);
    let dem = netcdf(&dir, "zero_dy.nc", &axis(8, 10.0), &[3.0; 6], &[("z", Some(bed()))]);
    refused(&dir, &dem, &["zero_dy.nc", "coordinate `y`"]);
}

/// A calorimeter configuration file with values out of range: every field is named with
/// its flag, and the file too (the value may be written in it).
#[test]
fn a_calorimeter_configuration_out_of_range_names_the_file_and_every_field() {
    let dir = scratch("calo");
    std::fs::write(
        dir.join("calo.json"),
        r#"{"calorimeter": {"layers": 0, "absorber_mm": -3}, "beam": {"energy_gev": 1e9}}"#,
    )
    .unwrap();
    let mut cmd = Command::new(BIN);
    cmd.args(["calo", "--config", "calo.json", "--out", "never.h5", "--events", "5"]);
    let out = run(cmd, &dir, Duration::from_secs(60));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    for needle in [
        "invalid calorimeter configuration `calo.json`",
        "`calorimeter.layers`: must be in [1, 10000], got 0",
        "`calorimeter.absorber_mm`",
        "`beam.energy_gev`",
    ] {
        assert!(stderr.contains(needle), "stderr lacks `{needle}`:\n{stderr}");
    }
    assert!(!stderr.contains("panicked") && !dir.join("never.h5").exists());
}

/// Training settings out of range are refused before the data is read, each named.
#[test]
fn training_settings_out_of_range_are_refused_naming_each() {
    let dir = scratch("train");
    let cdl = format!(
        "netcdf d {{\ndimensions:\n  sample = 20 ;\n  col = 2 ;\nvariables:\n  double x(sample, col) ;\n  double y(sample) ;\ndata:\n  x = {} ;\n  y = {} ;\n}}\n",
        (0..40).map(|i| (i as f64 * 0.1).to_string()).collect::<Vec<_>>().join(", "),
        (0..20).map(|i| (i as f64).to_string()).collect::<Vec<_>>().join(", ")
    );
    std::fs::write(dir.join("d.cdl"), cdl).unwrap();
    let st = Command::new("ncgen").args(["-4", "-o", "d.nc", "d.cdl"]).current_dir(&dir).status().expect("ncgen");
    assert!(st.success());
    let mut cmd = Command::new(BIN);
    cmd.args(["train", "--data", "d.nc", "--features", "x", "--target", "y", "--out", "m.h5"]);
    cmd.args(["--epochs", "0", "--val-fraction", "1.5", "--shards", "0", "--weight-decay=-1"]);
    let out = run(cmd, &dir, Duration::from_secs(60));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    for needle in
        ["`--epochs` must be in [1,", "`--val-fraction` must be in (0, 1), got 1.5", "`--shards`", "`--weight-decay`"]
    {
        assert!(stderr.contains(needle), "stderr lacks `{needle}`:\n{stderr}");
    }
    assert!(!stderr.contains("panicked") && !dir.join("m.h5").exists());
}

/// Training data whose header claims 10⁶ × 10⁶ features (declared, never written) is
/// refused before anything is allocated, with the size.
#[test]
fn training_data_larger_than_the_machines_memory_is_refused_before_allocating() {
    let dir = scratch("train_huge");
    std::fs::write(
        dir.join("h.cdl"),
        "netcdf h {\ndimensions:\n  sample = 1000000 ;\n  col = 1000000 ;\nvariables:\n  double x(sample, col) ;\n  double y(sample) ;\n}\n",
    )
    .unwrap();
    let st = Command::new("ncgen").args(["-4", "-o", "h.nc", "h.cdl"]).current_dir(&dir).status().expect("ncgen");
    assert!(st.success());
    let mut cmd = Command::new(BIN);
    cmd.args(["train", "--data", "h.nc", "--features", "x", "--target", "y", "--out", "m.h5", "--epochs", "1"]);
    let out = run(cmd, &dir, Duration::from_secs(60));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    for needle in
        ["`h.nc`", "`x` has shape [1000000, 1000000]: reading it would take", "more than this machine's memory"]
    {
        assert!(stderr.contains(needle), "stderr lacks `{needle}`:\n{stderr}");
    }
    assert!(!stderr.contains("panicked") && !dir.join("m.h5").exists());
}
