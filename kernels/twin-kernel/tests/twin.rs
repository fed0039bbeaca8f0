//! The flood twin's supporting tools through the binary, on a real nature run of the
//! synthetic valley: `sensor` delivers gauge readings that the assimilation's reader takes
//! (and stops on SIGTERM), `verify` scores an ensemble built around the nature run with
//! known answers, and `summary --warn-level` lists the gauges likely to flood.

use std::os::unix::process::ExitStatusExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use twinflow_assim::files::{ObservationQuery, read_observations};
use twinflow_assim::sensor::noise;
use twinflow_exchange::{Attr, Compression, Dataset, Dim, Variable, read_dataset, write_dataset};

mod support;
use support::{BIN, ok, run};

fn kernel(args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args).env("TWINFLOW_LOG", "info");
    cmd
}

fn go(dir: &Path, args: &[&str]) -> String {
    let out = ok(run(kernel(args), dir, Duration::from_secs(120)), &args.join(" "));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn fail(dir: &Path, args: &[&str]) -> (i32, String) {
    support::failed(run(kernel(args), dir, Duration::from_secs(120)), &args.join(" "))
}

fn num(ds: &Dataset, name: &str) -> Vec<f64> {
    ds.variable(name).unwrap_or_else(|| panic!("no `{name}`")).num().unwrap().to_vec()
}

/// A nature run of a small valley with an inflow: `truth.nc` (`h[time, y, x]` every 600 s)
/// and `truth_gauges.nc` (four gauges every 300 s), 1800 s of river time.
fn nature_run(name: &str) -> PathBuf {
    let dir = support::scratch_in("twin-tests", name);
    let mut args = vec!["terrain", "--out", "dem.nc", "--nx", "40", "--ny", "20", "--dx", "20"];
    args.extend(["--inflow-peak", "50", "--config-out", "flood.json"]);
    go(&dir, &args);
    let mut args = vec!["flood", "--dem", "dem.nc", "--config", "flood.json", "--out", "truth.nc"];
    args.extend(["--end-time", "1800", "--output-interval", "600", "--gauge-interval", "300"]);
    go(&dir, &args);
    dir
}

#[test]
fn the_sensor_delivers_noisy_truth_the_assimilation_reads() {
    let dir = nature_run("sensor");
    let mut args = vec!["sensor", "--truth", "truth_gauges.nc", "--variable", "h", "--out-dir", "obs/gauges"];
    args.extend(["--start", "600", "--every", "600", "--count", "3", "--period", "0s", "--noise-std", "0.05"]);
    args.extend(["--seed", "7"]);
    let log = go(&dir, &args);
    assert_eq!(log.matches("delivered").count(), 3, "{log}");
    let truth = read_dataset(&dir.join("truth_gauges.nc")).unwrap();
    let (times, h) = (num(&truth, "time"), num(&truth, "h"));
    let nt = times.len();
    let mut names: Vec<String> = std::fs::read_dir(dir.join("obs/gauges"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["gauges-1200.nc", "gauges-1800.nc", "gauges-600.nc"]);
    for t in [600.0, 1200.0, 1800.0] {
        let k = times.iter().position(|&s| s == t).unwrap();
        let path = dir.join(format!("obs/gauges/gauges-{t}.nc"));
        let q = ObservationQuery { variable: "value".into(), time: None, default_error_std: None };
        let obs = read_observations(&path, &q).unwrap();
        assert_eq!(obs.observations.len(), 4);
        for (s, o) in obs.observations.iter().enumerate() {
            assert_eq!(o.value, h[s * nt + k] + 0.05 * noise(7, t, s), "station {s} at {t}");
            assert_eq!(o.error_std, 0.05);
        }
    }
    // A model time the truth does not hold fails before anything is delivered.
    let mut args = vec!["sensor", "--truth", "truth_gauges.nc", "--out-dir", "never", "--start", "650"];
    args.extend(["--every", "600", "--count", "2", "--period", "0s", "--noise-std", "0.05"]);
    let (code, err) = fail(&dir, &args);
    assert_eq!(code, 3);
    assert!(err.contains("truth_gauges.nc") && err.contains("`h`") && err.contains("650"), "{err}");
    assert!(!dir.join("never").exists());
    let (code, err) = fail(&dir, &["sensor", "--truth", "truth_gauges.nc", "--out-dir", "x", "--start", "0"]);
    assert_eq!(code, 2, "{err}");
}

#[test]
fn the_sensor_stops_on_sigterm_between_deliveries() {
    let dir = nature_run("sensor-kill");
    let mut cmd = kernel(&["sensor", "--truth", "truth_gauges.nc", "--out-dir", "obs", "--start", "0"]);
    cmd.args(["--every", "300", "--count", "4", "--period", "60s", "--noise-std", "0.05"]);
    cmd.current_dir(&dir).env("HDF5_USE_FILE_LOCKING", "FALSE");
    let mut child = cmd.stderr(std::process::Stdio::null()).spawn().unwrap();
    let first = dir.join("obs/gauges-0.nc");
    let start = Instant::now();
    while !first.exists() {
        assert!(start.elapsed() < Duration::from_secs(60), "no first delivery");
        std::thread::sleep(Duration::from_millis(20));
    }
    let term = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(term.success());
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "still running after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.signal(), Some(15), "{status}");
    let left: Vec<_> = std::fs::read_dir(dir.join("obs")).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(left, ["gauges-0.nc"], "only the first reading was due");
}

/// Three members around the nature run at 600 s: member j = truth + 0.01 + (j − 1)·0.02,
/// so the mean is off by 0.01 m everywhere and the spread is 0.02 m, at every cell and
/// (bilinear weights summing to 1) at every gauge.
#[test]
fn verify_scores_an_ensemble_around_the_nature_run() {
    let dir = nature_run("verify");
    let truth = read_dataset(&dir.join("truth.nc")).unwrap();
    let (x, y, times) = (num(&truth, "x"), num(&truth, "y"), num(&truth, "time"));
    let (nx, ny) = (x.len(), y.len());
    let k = times.iter().position(|&t| t == 600.0).unwrap();
    let h600 = num(&truth, "h")[k * nx * ny..(k + 1) * nx * ny].to_vec();
    let mut h = Vec::new();
    for j in 0..3 {
        h.extend(h600.iter().map(|v| v + 0.01 + (j as f64 - 1.0) * 0.02));
    }
    let mut states = Dataset {
        dims: vec![
            Dim { name: "member".into(), len: 3, unlimited: false },
            Dim { name: "y".into(), len: ny, unlimited: false },
            Dim { name: "x".into(), len: nx, unlimited: false },
        ],
        variables: vec![
            Variable::f64("x", &["x"], "x", "m", x.clone()),
            Variable::f64("y", &["y"], "y", "m", y.clone()),
            Variable::f64("h", &["member", "y", "x"], "water depth", "m", h),
            Variable::f64("inflow_scale", &["member"], "inflow scale", "1", vec![0.8, 1.0, 1.5]),
        ],
        attrs: vec![],
    };
    states.set_attr("model_time", Attr::F64(vec![600.0]));
    write_dataset(&dir.join("states.nc"), &states, &Compression::default()).unwrap();

    let mut args = vec!["verify", "--ensemble", "states.nc", "--truth", "truth.nc", "--variable", "h"];
    args.extend(["--stations", "truth_gauges.nc", "--parameters", "inflow_scale", "--label", "analysis"]);
    args.extend(["--out", "score.csv"]);
    let log = go(&dir, &args);
    assert!(log.contains("rmse_wet="), "the row is logged: {log}");
    let text = std::fs::read_to_string(dir.join("score.csv")).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        "label,time,rmse_wet,spread_wet,wet_cells,rmse_gauges,spread_gauges,volume,volume_truth,inflow_scale_mean,inflow_scale_std"
    );
    let row: Vec<f64> = lines[1].split(',').skip(1).map(|v| v.parse().unwrap()).collect();
    let close = |a: f64, b: f64, what: &str| assert!((a - b).abs() <= 1e-9 * b.abs().max(1.0), "{what}: {a} vs {b}");
    assert_eq!(row[0], 600.0);
    close(row[1], 0.01, "rmse_wet");
    close(row[2], 0.02, "spread_wet");
    // Wet where the truth or the mean (truth + 0.01) reaches 0.05 m.
    assert_eq!(row[3], h600.iter().filter(|&&v| v >= 0.04 - 1e-12).count() as f64);
    assert!(row[3] > 10.0 && row[3] < (nx * ny) as f64, "a partly flooded valley: {} wet cells", row[3]);
    close(row[4], 0.01, "rmse_gauges");
    close(row[5], 0.02, "spread_gauges");
    let area = (x[1] - x[0]) * (y[1] - y[0]);
    close(row[7], h600.iter().sum::<f64>() * area, "volume_truth");
    close(row[6] - row[7], 0.01 * (nx * ny) as f64 * area, "volume excess");
    close(row[8], 1.1, "inflow_scale_mean");
    close(row[9], (((0.3_f64).powi(2) + 0.1_f64.powi(2) + 0.4_f64.powi(2)) / 2.0).sqrt(), "inflow_scale_std");

    // Per-cycle rows append under the same header.
    let mut args = vec!["verify", "--ensemble", "states.nc", "--truth", "truth.nc", "--time", "1200"];
    args.extend(["--stations", "truth_gauges.nc", "--parameters", "inflow_scale", "--label", "forecast"]);
    args.extend(["--out", "score.csv", "--append"]);
    go(&dir, &args);
    let text = std::fs::read_to_string(dir.join("score.csv")).unwrap();
    assert_eq!(text.lines().count(), 3);
    assert!(text.lines().nth(2).unwrap().starts_with("forecast,1200,"), "{text}");
    // Other parameters: another header, refused.
    let mut args = vec!["verify", "--ensemble", "states.nc", "--truth", "truth.nc", "--out", "score.csv"];
    args.push("--append");
    let (code, err) = fail(&dir, &args);
    assert_eq!(code, 3);
    assert!(err.contains("score.csv") && err.contains("header"), "{err}");
    // A time the truth lacks, a truth on another grid.
    let (code, err) =
        fail(&dir, &["verify", "--ensemble", "states.nc", "--truth", "truth.nc", "--time", "900", "--out", "s.csv"]);
    assert_eq!(code, 3);
    assert!(err.contains("truth.nc") && err.contains("900") && err.contains("0, 600, 1200, 1800"), "{err}");
    go(&dir, &["stage", "subset", "truth.nc", "part.nc", "--i0", "1"]);
    let (code, err) = fail(&dir, &["verify", "--ensemble", "states.nc", "--truth", "part.nc", "--out", "s.csv"]);
    assert_eq!(code, 3);
    assert!(err.contains("part.nc") && err.contains("`h`") && err.contains("shape"), "{err}");
    assert!(!dir.join("s.csv").exists());
}

/// Three flood members with growing inflows, merged, summarised with warnings; the rows
/// are checked against the merged gauge series read back independently.
#[test]
fn summary_lists_warnings_per_gauge_and_threshold() {
    let dir = nature_run("warnings");
    let mut maps = vec!["stage", "merge", "maps.nc"];
    let mut gauges = vec!["stage", "merge", "gauges.nc"];
    let names: Vec<(String, String)> = (0..3).map(|m| (format!("m{m}.nc"), format!("m{m}_gauges.nc"))).collect();
    for (m, q) in ["10", "50", "200"].iter().enumerate() {
        let mut args = vec!["flood", "--dem", "dem.nc", "--config", "flood.json", "--out", &names[m].0];
        args.extend(["--inflow-peak", q, "--end-time", "900", "--output-interval", "300", "--gauge-interval", "60"]);
        go(&dir, &args);
        maps.push(&names[m].0);
        gauges.push(&names[m].1);
    }
    go(&dir, &maps);
    go(&dir, &gauges);
    let mut args = vec!["summary", "--maps", "maps.nc", "--gauges", "gauges.nc", "--threshold", "1,2.3,5"];
    args.extend(["--out", "summary.nc", "--warn-level", "0.5", "--warnings-out", "warnings.csv"]);
    let log = go(&dir, &args);

    // Expected from the merged gauge series, read back independently.
    let g = read_dataset(&dir.join("gauges.nc")).unwrap();
    let (h, time) = (num(&g, "h"), num(&g, "time"));
    let (ns, nt) = (g.dim_len("station"), time.len());
    let text = std::fs::read_to_string(dir.join("warnings.csv")).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("gauge,x,y,threshold,probability,arrival_earliest,arrival_median,warn"));
    let mut warned = 0;
    for s in 0..ns {
        for tau in [1.0, 2.3, 5.0] {
            let series = |m: usize| &h[(m * ns + s) * nt..(m * ns + s + 1) * nt];
            let above = (0..3).filter(|&m| series(m).iter().any(|&d| d > tau)).count();
            let arrivals: Vec<f64> =
                (0..3).filter_map(|m| series(m).iter().position(|&d| d >= tau).map(|i| time[i])).collect();
            let fields: Vec<&str> = lines.next().unwrap().split(',').collect();
            assert_eq!(fields[3].parse::<f64>().unwrap(), tau);
            assert_eq!(fields[4].parse::<f64>().unwrap(), above as f64 / 3.0, "gauge {s}, τ = {tau}");
            let earliest = arrivals.iter().copied().fold(f64::INFINITY, f64::min);
            assert_eq!(fields[5], if arrivals.is_empty() { String::new() } else { earliest.to_string() });
            let warn = above as f64 / 3.0 >= 0.5;
            assert_eq!(fields[7], if warn { "yes" } else { "no" });
            warned += usize::from(warn);
        }
    }
    assert!(lines.next().is_none());
    // The reservoir (6.75 m before the breach) passes 5 m, the valley below does not.
    assert!(warned > 0 && warned < 3 * ns, "the thresholds should split the gauges: {text}");
    let summary = read_dataset(&dir.join("summary.nc")).unwrap();
    assert_eq!(summary.attr("warnings").and_then(Attr::as_f64), Some(warned as f64));
    assert_eq!(log.matches("WARNING").count(), warned, "{log}");

    let mut args = vec!["summary", "--maps", "maps.nc", "--gauges", "gauges.nc", "--threshold", "1"];
    args.extend(["--out", "s2.nc", "--warnings-out", "w.csv"]);
    let (code, err) = fail(&dir, &args);
    assert_eq!(code, 2, "`--warnings-out` needs `--warn-level`: {err}");
}
