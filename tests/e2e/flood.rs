//! The flood twin end to end: `examples/flood-mini.yaml` (terrain → 4 flood members on 2
//! MPI ranks each → merged members → summary) through the real `twinflow` binary and the
//! MPI-enabled `twin-kernel` next to it; outputs read by `ncdump` and xarray, the PNG
//! checked chunk by chunk; a second run comes entirely from the cache.
//!
//! Needs `target/<profile>/twin-kernel` built with `--features mpi` (`make test` builds
//! it), MPICH's `mpiexec`, `netcdf-bin` and `python3-xarray`; anything missing fails the
//! test with a hint, it is never skipped.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;

pub(crate) const MINI: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/flood-mini.yaml");
const BUILD_HINT: &str =
    "hint: build it with `cargo build -p twinflow-kernels --features mpi` before running the tests (`make test` does)";

/// The `twin-kernel` next to the `twinflow` under test, which must have MPI compiled in.
pub(crate) fn mpi_kernel() -> PathBuf {
    let bin = Path::new(env!("CARGO_BIN_EXE_twinflow")).with_file_name("twin-kernel");
    assert!(bin.is_file(), "{} is missing; {BUILD_HINT}", bin.display());
    let out = Command::new(&bin).arg("info").output().unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.lines().any(|l| l == "mpi: yes"),
        "{} was built without MPI (`twin-kernel info` says:\n{text}); {BUILD_HINT}",
        bin.display()
    );
    bin
}

/// Runs `cmd` with piped output, killing it and failing the test after `timeout`.
pub(crate) fn run_with_deadline(mut cmd: Command, timeout: Duration) -> Output {
    let described = format!("{cmd:?}");
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {described}: {e}"));
    let (out, finished) = wait_with_deadline(child, timeout);
    assert!(finished, "{described} timed out after {timeout:?}:\n{}", show(&out));
    out
}

fn run_mini(dir: &Path, kernel: &Path) -> Output {
    let mut cmd = twinflow();
    cmd.current_dir(dir).env("TWINFLOW_KERNEL_BIN", kernel).args(["run", MINI, "--json"]);
    cmd.arg("-p").arg(format!("results={}", dir.join("results").display()));
    run_with_deadline(cmd, Duration::from_secs(300))
}

fn tool(program: &str, args: &[&str], dir: &Path) -> String {
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run `{program}`: {e}; hint: run `make deps` (hpc/setup-deps.sh)"));
    assert!(out.status.success(), "`{program} {}` failed:\n{}", args.join(" "), show(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The first Python that imports xarray: `TWINFLOW_TEST_PYTHON`, `python3`, `/usr/bin/python3`.
fn python_with_xarray() -> String {
    let candidates =
        [std::env::var("TWINFLOW_TEST_PYTHON").ok(), Some("python3".into()), Some("/usr/bin/python3".into())];
    candidates
        .into_iter()
        .flatten()
        .find(|py| Command::new(py).args(["-c", "import xarray, netCDF4"]).output().is_ok_and(|o| o.status.success()))
        .expect("no python3 with xarray and netCDF4; hint: apt-get install python3-xarray python3-netcdf4")
}

/// Width and height from a PNG whose chunks all carry valid CRCs and whose image data
/// inflates to exactly one filter byte plus `width × 3` bytes per row (8-bit RGB).
const PNG_CHECK: &str = r#"
import struct, sys, zlib
data = open(sys.argv[1], "rb").read()
assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG signature"
pos, idat, seen = 8, b"", []
while pos < len(data):
    n, kind = struct.unpack(">I4s", data[pos:pos + 8])
    body = data[pos + 8:pos + 8 + n]
    crc, = struct.unpack(">I", data[pos + 8 + n:pos + 12 + n])
    assert zlib.crc32(kind + body) & 0xffffffff == crc, f"bad CRC in {kind}"
    seen.append(kind)
    if kind == b"IHDR":
        w, h, depth, colour = struct.unpack(">IIBB", body[:10])
    if kind == b"IDAT":
        idat += body
    pos += 12 + n
assert seen[0] == b"IHDR" and seen[-1] == b"IEND", seen
assert (depth, colour) == (8, 2), (depth, colour)
assert len(zlib.decompress(idat)) == h * (1 + 3 * w)
print(w, h)
"#;

#[test]
fn flood_mini_runs_on_two_ranks_per_member_and_is_cached_the_second_time() {
    let kernel = mpi_kernel();
    let d = scratch("flood_mini");
    let t0 = Instant::now();
    let out = run_mini(&d, &kernel);
    let first_run = t0.elapsed();
    assert!(out.status.success(), "{}", show(&out));
    let states = final_states(&out);
    assert_eq!(states.len(), 11, "terrain + 4 members + 2 merges + summary + 2 surrogate steps + results: {states:?}");
    // Four members are too few for the surrogate (`surrogate_members`, default 8).
    let surrogate = ["twin/surrogate-table", "twin/surrogate"];
    for (task, st) in &states {
        let want = if surrogate.contains(&task.as_str()) { "skipped" } else { "succeeded" };
        assert_eq!(st, want, "{task}: {states:?}");
    }
    let run_id = finished(&out)["run_id"].as_str().unwrap().to_string();
    let steps = d.join("runs").join(&run_id).join("steps/twin");
    // The headline results are published under `results=` (by default `results/flood-mini`
    // of the repository): the summary and the map, byte for byte.
    for (file, made_by) in [("summary.nc", "summary"), ("exceedance.png", "summary")] {
        let published = std::fs::read(d.join("results").join(file)).unwrap_or_else(|e| panic!("results/{file}: {e}"));
        assert_eq!(published, std::fs::read(steps.join(made_by).join("out").join(file)).unwrap(), "{file}");
    }

    // Every member ran under `mpiexec -n 2`: both ranks announced themselves, and the
    // output records the communicator size.
    for m in 0..4 {
        let member = steps.join(format!("flood/{m}/out"));
        let stderr = std::fs::read_to_string(member.join(".twinflow/stderr")).unwrap();
        for r in 0..2 {
            assert!(stderr.contains(&format!("rank {r} of 2")), "member {m} lacks `rank {r} of 2`:\n{stderr}");
        }
        let header = tool("ncdump", &["-h", "result.nc"], &member);
        assert!(header.contains(":mpi_ranks = 2 ;"), "member {m}:\n{header}");
    }
    let maps = tool("ncdump", &["-h", "ensemble_maps.nc"], &steps.join("merge-maps/out"));
    assert!(maps.contains("member = 4 ;") && maps.contains("double max_depth(member, y, x) ;"), "{maps}");

    // The summary: CF metadata for ncdump, values for xarray.
    let summary_dir = steps.join("summary/out");
    let header = tool("ncdump", &["-h", "summary.nc"], &summary_dir);
    for needle in [
        "double exceedance_probability(threshold, y, x) ;",
        "exceedance_probability:units = \"1\" ;",
        "exceedance_probability:_FillValue = -9999. ;",
        "double max_depth_mean(y, x) ;",
        "max_depth_mean:cell_methods = \"realization: mean\" ;",
        "double max_depth_max(y, x) ;",
        "z:standard_name = \"surface_altitude\" ;",
        "x:standard_name = \"projection_x_coordinate\" ;",
        "string station_name(station) ;",
        "station_name:cf_role = \"timeseries_id\" ;",
        "double peak_depth_p90(station) ;",
        "double arrival_time_mean(station) ;",
        "arrival_time_mean:units = \"s\" ;",
        ":Conventions = \"CF-1.10\" ;",
        ":twinflow_kernel = \"twin-kernel summary\" ;",
        ":ensemble_members = 4 ;",
    ] {
        assert!(header.contains(needle), "ncdump -h summary.nc lacks `{needle}`:\n{header}");
    }
    let script = r#"
import numpy as np, xarray as xr
d = xr.open_dataset("summary.nc")
assert d.attrs["Conventions"] == "CF-1.10" and int(d.attrs["ensemble_members"]) == 4
assert d.attrs["twinflow_step"] == "twin/summary", d.attrs["twinflow_step"]
p = d.exceedance_probability
assert p.dims == ("threshold", "y", "x") and p.attrs["units"] == "1"
assert list(d.threshold.values) == [0.5, 2.0, 2.5], d.threshold.values
v = p.values[np.isfinite(p.values)]
assert v.size > 0 and (v >= 0).all() and (v <= 1).all(), (v.min(), v.max())
assert (np.diff(p.fillna(0).values, axis=0) <= 0).all(), "P(h > t) falls as t rises"
assert float(p.sel(threshold=0.5).max()) == 1.0, "the reservoir floods in every member"
assert ((v > 0) & (v < 1)).any(), "the members differ somewhere"
assert (d.max_depth_mean <= d.max_depth_max + 1e-12).all()
assert list(d.station_name.values) == ["reservoir", "downstream-1", "downstream-2", "downstream-3"]
for s in ("mean", "min", "max", "p90"):
    assert d[f"peak_depth_{s}"].attrs["units"] == "m" and d[f"arrival_time_{s}"].attrs["units"] == "s"
assert (d.peak_depth_min <= d.peak_depth_p90).all() and (d.peak_depth_p90 <= d.peak_depth_max).all()
assert float(d.peak_depth_min.sel(station=0)) > 1.0, "the reservoir gauge is deep"
print("summary ok", d.sizes["x"], d.sizes["y"])
"#;
    let py = tool(&python_with_xarray(), &["-c", script], &summary_dir);
    let sizes: Vec<u32> =
        py.trim().strip_prefix("summary ok ").unwrap().split(' ').map(|s| s.parse().unwrap()).collect();
    assert_eq!(sizes, [64, 48], "{py}");

    // The PNG: valid chunks and image data, the grid times a whole scale plus the legend.
    let wh = tool(&python_with_xarray(), &["-c", PNG_CHECK, "exceedance.png"], &summary_dir);
    let wh: Vec<u32> = wh.split_whitespace().map(|s| s.parse().unwrap()).collect();
    // A figure: the 640 m × 480 m valley 720 px wide with axes, title and colour bar.
    assert!(wh[0] == 720 + 80 + 20 + 150 && (560..680).contains(&wh[1]), "PNG is {wh:?}");
    let hydro = tool(&python_with_xarray(), &["-c", PNG_CHECK, "hydrographs.png"], &summary_dir);
    assert!(hydro.split_whitespace().next().is_some_and(|w| w == "1120"), "hydrographs {hydro}");
    // The gauge statistics table, a row per gauge, beside the summary and published.
    let md = std::fs::read_to_string(summary_dir.join("gauge_statistics.md")).unwrap();
    let rows =
        md.lines().filter(|l| l.starts_with("| ") && !l.starts_with("| gauge") && !l.starts_with("| ---")).count();
    assert!(rows >= 2, "{md}");
    assert_eq!(std::fs::read_to_string(d.join("results/gauge_statistics.md")).unwrap(), md);

    // Nothing changed: everything comes from the cache.
    let t1 = Instant::now();
    let again = run_mini(&d, &kernel);
    let second_run = t1.elapsed();
    assert!(again.status.success(), "{}", show(&again));
    let st = final_states(&again);
    assert!(
        st.len() == 11
            && st.iter().all(|(t, s)| s == if surrogate.contains(&t.as_str()) { "skipped" } else { "cached" }),
        "{st:?}"
    );
    // Timings for the log of `cargo test -- --nocapture`; nothing asserts on them.
    let _ = writeln!(std::io::stderr(), "flood-mini: first run {first_run:.1?}, cached run {second_run:.1?}");
}

/// `h5dump -a NAME FILE`: the value of a scalar f64 root attribute.
fn h5_attr(file: &Path, name: &str) -> f64 {
    let out =
        Command::new("h5dump").args(["-a", name]).arg(file).output().expect("h5dump; hint: apt-get install hdf5-tools");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.trim().strip_prefix("(0): "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no value of `{name}` in {}:\n{text}", file.display()))
}

/// With 8 members the flood twin also tabulates (inflow peak, rain) → maximum depth per
/// gauge and trains a surrogate on it; on its held-out members it must beat predicting the
/// training mean at least fivefold (observed ≈ 17×: 0.0035 m vs 0.058 m).
#[test]
fn flood_mini_with_eight_members_trains_a_surrogate_that_beats_the_mean() {
    let kernel = mpi_kernel();
    let d = scratch("flood_surrogate");
    let mut cmd = twinflow();
    cmd.current_dir(&d).env("TWINFLOW_KERNEL_BIN", &kernel).args(["run", MINI, "--json", "-p", "members=8"]);
    cmd.arg("-p").arg(format!("results={}", d.join("results").display()));
    let out = run_with_deadline(cmd, Duration::from_secs(300));
    assert!(out.status.success(), "{}", show(&out));
    let states = final_states(&out);
    assert_eq!(states.len(), 15, "{states:?}");
    assert!(states.values().all(|s| s == "succeeded"), "{states:?}");
    let steps = d.join("runs").join(finished(&out)["run_id"].as_str().unwrap()).join("steps/twin");
    let table = tool("h5dump", &["-H", "surrogate_table.h5"], &steps.join("surrogate-table/out"));
    assert!(table.contains("DATASET \"features\"") && table.contains("( 8, 2 )"), "{table}");
    assert!(table.contains("DATASET \"target\"") && table.contains("( 8, 4 )"), "{table}");
    let model = steps.join("surrogate/out/surrogate.h5");
    let (val, baseline) = (h5_attr(&model, "val_rmse"), h5_attr(&model, "baseline_val_rmse"));
    assert!(val > 0.0 && val * 5.0 < baseline, "surrogate {val} m vs mean predictor {baseline} m");
}
