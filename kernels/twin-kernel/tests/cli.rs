//! End-to-end tests of the `twin-kernel` binary: outputs read by real clients (`ncdump`,
//! `h5dump`, Python xarray), failure behaviour, and (with `--features mpi`) identical
//! results for 1, 2 and 4 MPI ranks under MPICH's `mpiexec`.
//!
//! Needs `netcdf-bin`, `hdf5-tools` and `python3-xarray` (Debian) on the machine; a missing
//! tool fails the test, it is never skipped.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use twinflow_exchange::read_dataset;

mod support;
use support::{BIN, ok, run};

/// A fresh scratch directory under the target directory.
fn scratch(name: &str) -> PathBuf {
    support::scratch_in("cli-tests", name)
}

fn tool(program: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(program);
    cmd.args(args);
    cmd
}

fn kernel(args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args).env("TWINFLOW_LOG", "info");
    cmd
}

/// A small valley (40 × 24 cells of 10 m) with its configuration, in `dir`.
fn make_terrain(dir: &Path, out: &str) {
    ok(
        run(
            kernel(&["terrain", "--out", out, "--nx", "40", "--ny", "24", "--dx", "10", "--config-out", "flood.json"]),
            dir,
            Duration::from_secs(60),
        ),
        "terrain",
    );
}

const SHORT_RUN: [&str; 6] = ["--end-time", "12", "--output-interval", "4", "--gauge-interval", "1"];

/// The first Python interpreter that can import xarray: `TWINFLOW_TEST_PYTHON`, then
/// `python3` on the PATH, then Debian's `/usr/bin/python3` (a pyenv shim may shadow it).
fn python_with_xarray() -> String {
    let candidates =
        [std::env::var("TWINFLOW_TEST_PYTHON").ok(), Some("python3".into()), Some("/usr/bin/python3".into())];
    for py in candidates.into_iter().flatten() {
        let works = Command::new(&py).args(["-c", "import xarray, netCDF4"]).output().is_ok_and(|o| o.status.success());
        if works {
            return py;
        }
    }
    panic!("no python3 with xarray and netCDF4; hint: apt-get install python3-xarray python3-netcdf4");
}

#[test]
fn netcdf_outputs_are_cf_and_readable_by_ncdump_and_xarray() {
    let dir = scratch("netcdf");
    make_terrain(&dir, "dem.nc");
    let mut cmd = kernel(&["flood", "--dem", "dem.nc", "--config", "flood.json", "--out", "result.nc"]);
    cmd.args(SHORT_RUN).env("TWINFLOW_RUN_ID", "run-42").env("TWINFLOW_STEP", "simulate");
    ok(run(cmd, &dir, Duration::from_secs(120)), "flood");
    assert!(!dir.join("result.nc.partial").exists());

    let header = ok(run(tool("ncdump", &["-h", "result.nc"]), &dir, Duration::from_secs(30)), "ncdump");
    let header = String::from_utf8_lossy(&header.stdout);
    for needle in [
        "time = UNLIMITED ; // (4 currently)",
        "double h(time, y, x) ;",
        "x:standard_name = \"projection_x_coordinate\" ;",
        "y:axis = \"Y\" ;",
        "time:units = \"seconds since 2000-01-01 00:00:00\" ;",
        "z:standard_name = \"surface_altitude\" ;",
        "h:units = \"m\" ;",
        "h:_FillValue = -9999. ;",
        "u:units = \"m s-1\" ;",
        ":Conventions = \"CF-1.10\" ;",
        ":twinflow_run_id = \"run-42\" ;",
        ":twinflow_provenance = \"urn:twinflow:run:run-42\" ;",
        ":twinflow_step = \"simulate\" ;",
        ":twinflow_kernel = \"twin-kernel flood\" ;",
    ] {
        assert!(header.contains(needle), "ncdump -h lacks `{needle}`:\n{header}");
    }

    let script = r#"
import json, sys, numpy as np, xarray as xr
d = xr.open_dataset("result.nc")
assert d.attrs["Conventions"] == "CF-1.10"
assert d.attrs["twinflow_run_id"] == "run-42"
params = json.loads(d.attrs["twinflow_parameters"])
assert params["end_time"] == 12.0, params
assert d.h.dims == ("time", "y", "x") and d.sizes["time"] == 4, d
assert d.x.attrs["standard_name"] == "projection_x_coordinate" and d.x.attrs["units"] == "m"
assert d.z.attrs["standard_name"] == "surface_altitude"
assert (d.time.values[-1] - d.time.values[0]) == np.timedelta64(12, "s")
assert float(d.h.isel(time=0).sum()) > 0 and float(d.max_depth.max()) > 0
assert bool(np.isnan(d.arrival_time).any())  # never-flooded cells are _FillValue
g = xr.open_dataset("result_gauges.nc")
assert g.attrs["featureType"] == "timeSeries"
assert list(g.station_name.values) == ["reservoir", "downstream-1", "downstream-2", "downstream-3"]
assert g.h.dims == ("station", "time") and g.sizes["time"] == 13
assert float(g.h.sel(station=0).isel(time=0)) > 1.0  # the reservoir gauge starts wet
print("xarray ok")
"#;
    let mut py = Command::new(python_with_xarray());
    py.args(["-c", script]);
    let out = ok(run(py, &dir, Duration::from_secs(60)), "xarray check");
    assert!(String::from_utf8_lossy(&out.stdout).contains("xarray ok"));
}

#[test]
fn hdf5_outputs_carry_the_same_metadata() {
    let dir = scratch("hdf5");
    make_terrain(&dir, "dem.h5");
    let mut cmd = kernel(&["flood", "--dem", "dem.h5", "--config", "flood.json", "--out", "result.h5"]);
    cmd.args(SHORT_RUN);
    ok(run(cmd, &dir, Duration::from_secs(120)), "flood");
    let header = ok(run(tool("h5dump", &["-H", "result.h5"]), &dir, Duration::from_secs(30)), "h5dump");
    let header = String::from_utf8_lossy(&header.stdout);
    for needle in [
        "ATTRIBUTE \"Conventions\"",
        "ATTRIBUTE \"twinflow_parameters\"",
        "DATASET \"h\"",
        "DATASPACE  SIMPLE { ( 4, 24, 40 ) / ( H5S_UNLIMITED, 24, 40 ) }",
        "DATASET \"max_depth\"",
        "ATTRIBUTE \"standard_name\"",
        "ATTRIBUTE \"_FillValue\"",
    ] {
        assert!(header.contains(needle), "h5dump -H lacks `{needle}`:\n{header}");
    }
    let units =
        ok(run(tool("h5dump", &["-a", "/time/units", "result.h5"]), &dir, Duration::from_secs(30)), "h5dump -a");
    assert!(String::from_utf8_lossy(&units.stdout).contains("seconds since 2000-01-01 00:00:00"));
    assert!(dir.join("result_gauges.h5").exists());

    // Real dimension scales, so netCDF-aware readers see named dimensions and coordinates.
    for needle in ["ATTRIBUTE \"CLASS\"", "ATTRIBUTE \"DIMENSION_LIST\"", "ATTRIBUTE \"REFERENCE_LIST\""] {
        assert!(header.contains(needle), "h5dump -H lacks `{needle}`:\n{header}");
    }
    assert!(!header.contains("DIMENSION_NAMES"), "{header}");
    let script = r#"
import json, numpy as np, xarray as xr
d = xr.open_dataset("result.h5", engine="h5netcdf")
assert d.attrs["Conventions"] == "CF-1.10"
assert json.loads(d.attrs["twinflow_parameters"])["end_time"] == 12.0
assert d.h.dims == ("time", "y", "x") and dict(d.sizes) == {"time": 4, "y": 24, "x": 40}, d
assert d.max_depth.dims == ("y", "x")
for c in ("x", "y", "time"):
    assert c in d.coords and d[c].dims == (c,), (c, d)
assert d.x.attrs["standard_name"] == "projection_x_coordinate" and d.x.attrs["units"] == "m"
assert d.x.attrs["axis"] == "X" and d.y.attrs["axis"] == "Y"
assert d.y.attrs["standard_name"] == "projection_y_coordinate"
assert d.time.encoding["units"] == "seconds since 2000-01-01 00:00:00" and d.time.attrs["axis"] == "T"
assert (d.time.values[-1] - d.time.values[0]) == np.timedelta64(12, "s")
assert d.z.attrs["standard_name"] == "surface_altitude" and d.h.attrs["units"] == "m"
assert d.h.encoding["_FillValue"] == -9999.0
assert float(d.h.isel(time=0).sum()) > 0 and bool(np.isnan(d.arrival_time).any())
assert not any("DIMENSION" in k for v in d.variables.values() for k in v.attrs)
g = xr.open_dataset("result_gauges.h5", engine="h5netcdf")
assert g.attrs["featureType"] == "timeSeries"
assert g.h.dims == ("station", "time") and dict(g.sizes) == {"station": 4, "time": 13}, g
assert "station" not in g.variables  # a dimension without a coordinate variable
assert list(g.station_name.values) == ["reservoir", "downstream-1", "downstream-2", "downstream-3"]
assert g.x.dims == ("station",) and g.time.dims == ("time",)
dem = xr.open_dataset("dem.h5", engine="h5netcdf")
assert dem.z.dims == ("y", "x") and "x" in dem.coords and "y" in dem.coords
print("xarray ok")
"#;
    let mut py = Command::new(python_with_xarray());
    py.args(["-c", script]);
    let out = ok(run(py, &dir, Duration::from_secs(60)), "xarray (h5netcdf) check");
    assert!(String::from_utf8_lossy(&out.stdout).contains("xarray ok"));
}

/// The AVX-512, AVX2 and baseline (SSE2) builds of the row loops give bit-identical
/// results (no FMA contraction; IEEE operations only). On a CPU without the wider sets the
/// runs fall back to what it has and the test still checks determinism.
#[test]
fn simd_variants_give_bit_identical_results() {
    let dir = scratch("simd");
    make_terrain(&dir, "dem.nc");
    for (simd, out) in [("baseline", "base.nc"), ("avx2", "avx2.nc"), ("auto", "auto.nc")] {
        let mut cmd = kernel(&["flood", "--dem", "dem.nc", "--config", "flood.json", "--out", out]);
        cmd.args(SHORT_RUN).args(["--manning-n", "0.04", "--rain", "50"]).env("TWINFLOW_SIMD", simd);
        ok(run(cmd, &dir, Duration::from_secs(120)), "flood");
    }
    let read = |name: &str, var: &str| -> Vec<f64> {
        let f = read_dataset(&dir.join(name)).unwrap();
        f.variable(var).unwrap().num().unwrap().to_vec()
    };
    for var in ["h", "u", "v", "max_depth", "arrival_time"] {
        let base = read("base.nc", var);
        for other in ["avx2.nc", "auto.nc"] {
            let b = read(other, var);
            assert!(base.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()), "`{var}` differs in {other}");
        }
    }
}

/// The shipped example configuration (inflow hydrograph, rain, gauges) runs on the
/// synthetic valley, and the water it adds shows up at the inlet gauge.
#[test]
fn example_configuration_with_inflow_and_rain_runs() {
    let dir = scratch("example");
    ok(
        run(
            kernel(&["terrain", "--out", "dem.nc", "--nx", "40", "--ny", "24", "--dx", "10"]),
            &dir,
            Duration::from_secs(60),
        ),
        "terrain",
    );
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/valley-inflow-rain.json");
    let config = config.to_str().unwrap();
    let out = ok(
        run(
            kernel(&["flood", "--dem", "dem.nc", "--config", config, "--out", "result.nc"]),
            &dir,
            Duration::from_secs(120),
        ),
        "flood",
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("flood run finished"), "{stderr}");
    let f = read_dataset(&dir.join("result_gauges.nc")).unwrap();
    let h = f.variable("h").unwrap().num().unwrap().to_vec();
    let samples = f.dim_len("time");
    assert_eq!(samples, 13);
    let inlet = &h[..samples];
    assert_eq!(inlet[0], 0.0, "the inlet starts dry");
    assert!(inlet[samples - 1] > 0.05, "inflow and rain reach the inlet gauge: {inlet:?}");
}

#[test]
fn invalid_configuration_fails_without_leaving_outputs() {
    let dir = scratch("invalid");
    make_terrain(&dir, "dem.nc");
    std::fs::write(dir.join("bad.json"), r#"{"end_time": -5, "cfl": 2, "gauges": [{"name": "g", "x": 1e6, "y": 0}]}"#)
        .unwrap();
    let out = run(
        kernel(&["flood", "--dem", "dem.nc", "--config", "bad.json", "--out", "result.nc"]),
        &dir,
        Duration::from_secs(60),
    );
    assert_eq!(out.status.code(), Some(3), "exit code for invalid input");
    let stderr = String::from_utf8_lossy(&out.stderr);
    for field in ["`end_time`", "`cfl`", "`gauges[0]`"] {
        assert!(stderr.contains(field), "error does not mention {field}:\n{stderr}");
    }
    assert!(!dir.join("result.nc").exists() && !dir.join("result.nc.partial").exists());

    let out = run(kernel(&["flood", "--dem", "dem.nc"]), &dir, Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(2), "exit code for a usage error");
}

#[test]
fn help_shows_an_example_and_exit_codes() {
    let out = ok(run(kernel(&["flood", "--help"]), Path::new("."), Duration::from_secs(30)), "help");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("twin-kernel terrain --out dem.nc") && text.contains("--manning-n"), "{text}");
    let out = ok(run(kernel(&["--help"]), Path::new("."), Duration::from_secs(30)), "help");
    assert!(String::from_utf8_lossy(&out.stdout).contains("Exit codes: 0 success"));
}

/// The staging and summary commands chained as a workflow would: two scenarios, a
/// conversion whose checksums match the original, a merge from a list file, a summary
/// with its PNG; a mismatched merge is an input error (exit 3).
#[test]
fn stage_and_summary_commands_chain() {
    let dir = scratch("stage");
    ok(
        run(
            kernel(&[
                "terrain",
                "--out",
                "dem.nc",
                "--nx",
                "40",
                "--ny",
                "24",
                "--inflow-peak",
                "50",
                "--config-out",
                "flood.json",
            ]),
            &dir,
            Duration::from_secs(60),
        ),
        "terrain",
    );
    for (m, q) in [(0, "20"), (1, "400")] {
        let out = format!("m{m}.nc");
        let mut cmd =
            kernel(&["flood", "--dem", "dem.nc", "--config", "flood.json", "--out", &out, "--inflow-peak", q]);
        cmd.args(SHORT_RUN);
        ok(run(cmd, &dir, Duration::from_secs(120)), "flood");
    }
    ok(run(kernel(&["stage", "convert", "m0.nc", "m0.h5"]), &dir, Duration::from_secs(30)), "convert");
    let sums = ok(run(kernel(&["stage", "checksum", "m0.nc", "m0.h5"]), &dir, Duration::from_secs(30)), "checksum");
    let sums: serde_json::Value = serde_json::from_slice(&sums.stdout).unwrap();
    let files = sums["files"].as_array().unwrap();
    assert_eq!(files[0]["algorithm"], "blake3");
    assert_eq!(files[0]["digest"], files[1]["digest"], "NetCDF and its HDF5 conversion hold the same values");
    assert!(files[0]["variables"]["max_depth"].is_string());

    std::fs::write(dir.join("members.txt"), "m0.nc\n\n# the big one\nm1.nc\n").unwrap();
    ok(run(kernel(&["stage", "merge", "maps.nc", "--list", "members.txt"]), &dir, Duration::from_secs(30)), "merge");
    ok(
        run(kernel(&["stage", "merge", "gauges.nc", "m0_gauges.nc", "m1_gauges.nc"]), &dir, Duration::from_secs(30)),
        "merge gauges",
    );
    ok(
        run(
            kernel(&["stage", "subset", "maps.nc", "box.nc", "--x0", "100", "--x1", "200", "--t0", "4"]),
            &dir,
            Duration::from_secs(30),
        ),
        "subset",
    );
    ok(
        run(kernel(&["stage", "regrid", "dem.nc", "fine.nc", "--like", "box.nc"]), &dir, Duration::from_secs(30)),
        "regrid",
    );
    let summary = kernel(&[
        "summary",
        "--maps",
        "maps.nc",
        "--gauges",
        "gauges.nc",
        "--threshold",
        "0.1,1",
        "--out",
        "summary.nc",
        "--png",
        "map.png",
        "--png-threshold",
        "1",
        "--hydrographs",
        "hydro.png",
        "--gauge-table",
        "gauges.csv",
    ]);
    ok(run(summary, &dir, Duration::from_secs(30)), "summary");
    let header = ok(run(tool("ncdump", &["-h", "summary.nc"]), &dir, Duration::from_secs(30)), "ncdump");
    let header = String::from_utf8_lossy(&header.stdout);
    assert!(header.contains("exceedance_probability(threshold, y, x)") && header.contains(":ensemble_members = 2 ;"));
    let png = std::fs::read(dir.join("map.png")).unwrap();
    assert_eq!(&png[1..4], b"PNG");
    let be = |k: usize| u32::from_be_bytes(png[k..k + 4].try_into().unwrap());
    // A figure: the 400 m × 240 m grid drawn 720 px wide, plus axes and the colour bar.
    assert_eq!(be(16), 720 + 80 + 20 + 150, "IHDR width");
    assert!((450..700).contains(&be(20)), "IHDR height {}", be(20));
    let hydro = std::fs::read(dir.join("hydro.png")).unwrap();
    assert_eq!(&hydro[1..4], b"PNG");
    // The gauge statistics: one row per gauge in CSV and Markdown.
    let csv = std::fs::read_to_string(dir.join("gauges.csv")).unwrap();
    let md = std::fs::read_to_string(dir.join("gauges.md")).unwrap();
    assert!(csv.starts_with("gauge,x (m),y (m),peak depth mean (m)"), "{csv}");
    assert_eq!(csv.lines().count(), md.lines().count() - 1, "{csv}\n{md}");
    assert!(md.starts_with("| gauge | x (m) |"), "{md}");

    let out = run(kernel(&["stage", "merge", "bad.nc", "m0.nc", "gauges.nc"]), &dir, Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(3), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not match member 0"));
    assert!(!dir.join("bad.nc").exists());

    let info = ok(run(kernel(&["info"]), &dir, Duration::from_secs(30)), "info");
    let expected = if cfg!(feature = "mpi") { "mpi: yes" } else { "mpi: no" };
    assert!(String::from_utf8_lossy(&info.stdout).contains(expected));
}

/// Rank independence under MPICH's `mpiexec` (compiled only with `--features mpi`).
#[cfg(feature = "mpi")]
mod mpi {
    use super::*;

    fn read(path: &Path, name: &str) -> Vec<f64> {
        let f = read_dataset(path).unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()));
        let v = f.variable(name).unwrap_or_else(|| panic!("{} has no `{name}`", path.display()));
        v.num().unwrap().to_vec()
    }

    /// The same run on 1, 2 and 4 ranks gives the same fields (≤ 1e-12; the decomposition
    /// changes no operand of any cell update, and min/max reductions are exact), and every
    /// rank reports `rank i of N` with the expected N: a launcher that does not match the
    /// MPI library would start N independent 1-rank jobs.
    #[test]
    fn results_do_not_depend_on_the_rank_count() {
        let dir = scratch("mpi");
        make_terrain(&dir, "dem.nc");
        for n in [1usize, 2, 4] {
            let mut cmd = Command::new("mpiexec");
            cmd.args(["-n", &n.to_string(), BIN, "flood", "--dem", "dem.nc", "--config", "flood.json"])
                .args(["--out", &format!("r{n}.nc")])
                .args(SHORT_RUN)
                .env("TWINFLOW_LOG", "info");
            let out = ok(run(cmd, &dir, Duration::from_secs(240)), &format!("mpiexec -n {n}"));
            let stderr = String::from_utf8_lossy(&out.stderr);
            for r in 0..n {
                assert!(stderr.contains(&format!("rank {r} of {n}")), "rank {r} of {n} missing:\n{stderr}");
            }
            assert!(!stderr.contains(" of 1\n") || n == 1, "a rank ran alone under mpiexec -n {n}:\n{stderr}");
        }
        for (file, vars) in
            [("", &["h", "u", "v", "max_depth", "arrival_time", "time"][..]), ("_gauges", &["h", "u", "v", "eta"][..])]
        {
            for var in vars {
                let reference = read(&dir.join(format!("r1{file}.nc")), var);
                for n in [2, 4] {
                    let other = read(&dir.join(format!("r{n}{file}.nc")), var);
                    assert_eq!(reference.len(), other.len());
                    let worst = reference.iter().zip(&other).fold(0.0_f64, |m, (a, b)| m.max((a - b).abs()));
                    assert!(worst <= 1e-12, "`{var}` in r{n}{file}.nc differs by {worst:e} from 1 rank");
                }
            }
        }
    }
}

/// In an engine's step the attempt directory is renamed to `out/` when it succeeds: the
/// kernel's log and the NetCDF `history` name the files by that final path.
#[test]
fn logs_and_history_name_the_result_directory_not_the_attempt() {
    let root = scratch("result_paths");
    let attempt = root.join("attempt-1");
    std::fs::create_dir_all(&attempt).unwrap();
    let (attempt_s, out_s) = (attempt.display().to_string(), root.join("out").display().to_string());
    let abs = attempt.join("abs.nc");
    let mut cmd = kernel(&["terrain", "--out", "dem.nc", "--nx", "12", "--ny", "8", "--dx", "10"]);
    cmd.env("TWINFLOW_STEP_DIR", &attempt).env("TWINFLOW_RESULT_DIR", root.join("out"));
    let rel = ok(run(cmd, &attempt, Duration::from_secs(60)), "terrain (relative)");
    let log = String::from_utf8_lossy(&rel.stderr);
    assert!(log.contains(&format!("path={out_s}/dem.nc")), "{log}");
    let mut cmd = kernel(&["terrain", "--out", &abs.display().to_string(), "--nx", "12", "--ny", "8", "--dx", "10"]);
    cmd.env("TWINFLOW_STEP_DIR", &attempt).env("TWINFLOW_RESULT_DIR", root.join("out"));
    let full = ok(run(cmd, &attempt, Duration::from_secs(60)), "terrain (absolute)");
    let log = String::from_utf8_lossy(&full.stderr);
    assert!(log.contains(&format!("path={out_s}/abs.nc")) && !log.contains(&attempt_s), "{log}");
    let ds = read_dataset(&abs).unwrap();
    let history = ds.attr("history").and_then(|a| a.as_str()).unwrap().to_string();
    assert!(history.contains(&format!("--out {out_s}/abs.nc")) && !history.contains(&attempt_s), "{history}");
    // Outside an engine's step, paths are shown as given.
    let plain = ok(
        run(
            kernel(&["terrain", "--out", "dem2.nc", "--nx", "12", "--ny", "8", "--dx", "10"]),
            &attempt,
            Duration::from_secs(60),
        ),
        "terrain",
    );
    assert!(String::from_utf8_lossy(&plain.stderr).contains("path=dem2.nc"));
}
