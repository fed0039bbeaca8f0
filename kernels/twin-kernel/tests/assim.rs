//! `twin-kernel lorenz96` and `twin-kernel assimilate` through the binary: the file-based
//! cycle (truth → advance → assimilate → advance …) reproduces the in-process driver of
//! `twinflow-assim` bit for bit; gridded fields with parameters, CSV observations and the
//! bilinear operator; bad input fails with a message naming the file and the variable;
//! (with `--features mpi`) identical analyses on 1, 2 and 4 MPI ranks.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use twinflow_assim::{Method, TwinConfig, half_width_from_dapper_radius, run_twin};
use twinflow_comm::SingleProcess;
use twinflow_exchange::{Attr, Compression, Dataset, Dim, Variable, read_dataset, write_dataset};

mod support;
use support::{BIN, ok, run};

fn scratch(name: &str) -> PathBuf {
    support::scratch_in("assim-tests", name)
}

fn kernel(args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args).env("TWINFLOW_LOG", "warn");
    cmd
}

fn go(dir: &Path, args: &[&str]) {
    ok(run(kernel(args), dir, Duration::from_secs(120)), &args.join(" "));
}

fn fail(dir: &Path, args: &[&str]) -> (i32, String) {
    support::failed(run(kernel(args), dir, Duration::from_secs(120)), &args.join(" "))
}

fn scalar(path: &Path, name: &str) -> f64 {
    let ds = read_dataset(path).unwrap();
    ds.variable(name).unwrap_or_else(|| panic!("{} has no `{name}`", path.display())).num().unwrap()[0]
}

fn values(path: &Path, name: &str) -> Vec<f64> {
    read_dataset(path).unwrap().variable(name).unwrap().num().unwrap().to_vec()
}

/// 20 cycles through files (one process per forecast and per analysis) give exactly the
/// analysis RMSE of the in-process driver for the same seed (same draws, same operations):
/// the file-based path adds no error.
#[test]
fn file_based_cycling_reproduces_the_in_process_driver() {
    let cycles = 20_u32;
    for (name, method, members, inflation, extra) in [
        ("enkf", Method::EnKF, 20_usize, 1.06, vec!["--method", "enkf"]),
        (
            "letkf",
            Method::Letkf { half_width: half_width_from_dapper_radius(4.0) },
            7,
            1.04,
            vec!["--method", "letkf", "--dapper-radius", "4"],
        ),
    ] {
        let dir = scratch(&format!("cycle-{name}"));
        let seed = 11_u64;
        let mut cfg = TwinConfig::sakov_oke(Some(method), members, inflation, cycles, seed);
        cfg.burn_in = 0;
        let reference = run_twin(&cfg, &SingleProcess).unwrap().rmse_series;
        let (m, s) = (members.to_string(), seed.to_string());
        go(
            &dir,
            &["lorenz96", "truth", "--cycles", "20", "--members", &m, "--seed", &s, "--truth-out", "truth.nc"]
                .into_iter()
                .chain(["--obs-out", "obs.nc", "--ensemble-out", "a0.nc"])
                .collect::<Vec<_>>(),
        );
        let infl = inflation.to_string();
        for c in 1..=cycles {
            let (prev, fc, an, diag) =
                (format!("a{}.nc", c - 1), format!("f{c}.nc"), format!("a{c}.nc"), format!("d{c}.nc"));
            go(&dir, &["lorenz96", "advance", &prev, "--out", &fc, "--steps", "1"]);
            let cycle = c.to_string();
            let mut args = vec!["assimilate", "--members", &fc, "--variables", "state", "--obs", "obs.nc"];
            args.extend(["--inflation", &infl, "--seed", &s, "--cycle", &cycle, "--periodic-x", "40"]);
            args.extend(["--out", &an, "--diagnostics", &diag, "--truth", "truth.nc"]);
            args.extend(extra.iter().copied());
            go(&dir, &args);
            let rmse = scalar(&dir.join(&diag), "rmse_truth_analysis");
            assert_eq!(
                rmse.to_bits(),
                reference[c as usize - 1].to_bits(),
                "{name} cycle {c}: file-based {rmse} vs in-process {}",
                reference[c as usize - 1]
            );
        }
        // And the filter works: the last analyses beat the observations (σ = 1).
        let last = reference[10..].iter().sum::<f64>() / 10.0;
        assert!(last < 1.0, "{name}: mean analysis RMSE of cycles 11-20 is {last}");
    }
}

#[test]
fn twin_subcommand_reports_the_rmse_as_json() {
    let dir = scratch("twin");
    let out = ok(
        run(
            kernel(&[
                "lorenz96",
                "twin",
                "--method",
                "letkf",
                "--members",
                "7",
                "--inflation",
                "1.04",
                "--cycles",
                "1400",
                "--seed",
                "3",
                "--out",
                "rmse.nc",
            ]),
            &dir,
            Duration::from_secs(120),
        ),
        "lorenz96 twin",
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    let a = v["rmse_analysis"].as_f64().unwrap();
    // 1 000 scored cycles (DAPPER's demo length): 0.22 ± 0.03.
    assert!((a - 0.22).abs() < 0.03, "{stdout}");
    assert!(v["rmse_climatology"].as_f64().unwrap() > 3.0);
    assert_eq!(values(&dir.join("rmse.nc"), "rmse_analysis").len(), 1400);
}

/// HDF5 members (`stage convert` of the NetCDF ensemble) advance and analyse to the same
/// bits, and the analysis is written back as HDF5.
#[test]
fn hdf5_members_give_the_same_analysis_as_netcdf() {
    let dir = scratch("hdf5");
    go(
        &dir,
        &["lorenz96", "truth", "--cycles", "2", "--members", "8", "--seed", "4", "--truth-out", "truth.nc"]
            .into_iter()
            .chain(["--obs-out", "obs.nc", "--ensemble-out", "a0.nc"])
            .collect::<Vec<_>>(),
    );
    go(&dir, &["stage", "convert", "a0.nc", "a0.h5"]);
    for ext in ["nc", "h5"] {
        let (a0, f1, a1) = (format!("a0.{ext}"), format!("f1.{ext}"), format!("a1.{ext}"));
        go(&dir, &["lorenz96", "advance", &a0, "--out", &f1]);
        go(
            &dir,
            &["assimilate", "--members", &f1, "--variables", "state", "--obs", "obs.nc", "--method", "etkf"]
                .into_iter()
                .chain(["--inflation", "1.02", "--out", &a1])
                .collect::<Vec<_>>(),
        );
    }
    let bits = |p: &str| values(&dir.join(p), "state").iter().map(|v| v.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits("a1.nc"), bits("a1.h5"));
    assert_ne!(bits("a1.h5"), bits("f1.h5"));
    let h5 = std::fs::read(dir.join("a1.h5")).unwrap();
    assert_eq!(&h5[..8], b"\x89HDF\r\n\x1a\n", "a1.h5 is not an HDF5 file");
}

/// A small flood-like ensemble: `h[y, x]`, `hu[y, x]` and a scalar `manning_n` per member,
/// on cell centres x = 5, 15, …, y = 5, 15, ….
fn write_member(path: &Path, nx: usize, ny: usize, j: usize, h_offset: f64) {
    let x: Vec<f64> = (0..nx).map(|i| 5.0 + 10.0 * i as f64).collect();
    let y: Vec<f64> = (0..ny).map(|i| 5.0 + 10.0 * i as f64).collect();
    let wobble = |i: usize| ((i * 7 + j * 13) % 11) as f64 / 11.0 - 0.5;
    let h: Vec<f64> = (0..nx * ny).map(|i| (1.0 + h_offset + 0.3 * wobble(i)).max(0.0)).collect();
    let hu: Vec<f64> = h.iter().map(|h| 0.5 * h).collect();
    let mut ds = Dataset {
        dims: vec![
            Dim { name: "y".into(), len: ny, unlimited: false },
            Dim { name: "x".into(), len: nx, unlimited: false },
        ],
        variables: vec![
            Variable::f64("x", &["x"], "x", "m", x),
            Variable::f64("y", &["y"], "y", "m", y),
            Variable::f64("h", &["y", "x"], "water depth", "m", h),
            Variable::f64("hu", &["y", "x"], "discharge per width", "m2 s-1", hu),
            Variable::f64("manning_n", &[], "Manning coefficient", "s m-1/3", vec![0.03 + 0.002 * j as f64]),
        ],
        attrs: Vec::new(),
    };
    ds.set_attr("Conventions", Attr::Str("CF-1.10".into()));
    write_dataset(path, &ds, &Compression::default()).unwrap();
}

#[test]
fn gridded_members_with_parameters_csv_observations_and_bilinear_operator() {
    let dir = scratch("grid");
    let mut members = Vec::new();
    for j in 0..8 {
        let p = dir.join(format!("m{j}.nc"));
        write_member(&p, 6, 4, j, 0.1 * j as f64 - 0.35);
        members.push(format!("m{j}.nc"));
    }
    // Three gauges inside, one outside (x = 100 > 55), one missing value.
    std::fs::write(
        dir.join("gauges.csv"),
        "station,time,x,y,value,error_std\ng1,60,12,8,1.6,0.05\ng2,60,33,21,1.5,0.05\ng3,60,50,30,1.7,0.05\n\
         far,60,100,20,1.5,0.05\nlost,60,20,20,,0.05\ng1,120,12,8,9.0,0.05\n",
    )
    .unwrap();
    let mut args = vec!["assimilate", "--members"];
    args.extend(members.iter().map(String::as_str));
    args.extend(["--variables", "h,hu", "--parameters", "manning_n", "--obs", "gauges.csv", "--time", "60"]);
    args.extend(["--operator", "bilinear", "--observed-variable", "h", "--method", "letkf", "--radius", "30"]);
    args.extend(["--non-negative", "h", "--clip", "manning_n:0.01:0.1", "--out", "analysis"]);
    args.extend(["--diagnostics", "diag.nc"]);
    go(&dir, &args);
    let diag = read_dataset(&dir.join("diag.nc")).unwrap();
    assert_eq!(diag.attr("observations_outside_domain").and_then(Attr::as_f64), Some(1.0));
    assert_eq!(diag.attr("observations_missing").and_then(Attr::as_f64), Some(1.0));
    assert_eq!(diag.attr("observations_used").and_then(Attr::as_f64), Some(3.0));
    assert!(scalar(&dir.join("diag.nc"), "rmse_obs_analysis") < scalar(&dir.join("diag.nc"), "rmse_obs_forecast"));
    // Every member is written under its own name, parameters updated within bounds.
    let mut n = Vec::new();
    for j in 0..8 {
        let a = dir.join("analysis").join(format!("m{j}.nc"));
        assert!(values(&a, "h").iter().all(|&h| h >= 0.0));
        n.push(values(&a, "manning_n")[0]);
        assert_eq!(values(&a, "x"), values(&dir.join(format!("m{j}.nc")), "x"));
    }
    let f: Vec<f64> = (0..8).map(|j| 0.03 + 0.002 * j as f64).collect();
    assert!(n.iter().zip(&f).any(|(a, b)| a != b), "the parameter was not updated");
    assert!(n.iter().all(|&v| (0.01..=0.1).contains(&v)));
}

#[test]
fn bad_input_names_the_file_and_the_variable() {
    let dir = scratch("bad");
    for j in 0..3 {
        write_member(&dir.join(format!("m{j}.nc")), 6, 4, j, 0.0);
    }
    write_member(&dir.join("small.nc"), 5, 4, 3, 0.0);
    std::fs::write(dir.join("ok.csv"), "station,x,y,value,error_std\ng1,12,8,1.6,0.05\n").unwrap();
    let base = |obs: &'static str, members: &[&'static str]| {
        let mut a = vec!["assimilate", "--members"];
        a.extend(members);
        a.extend(["--variables", "h", "--obs", obs, "--operator", "bilinear", "--observed-variable", "h"]);
        a.extend(["--method", "etkf", "--out", "out"]);
        a
    };
    let m3 = ["m0.nc", "m1.nc", "m2.nc"];
    // Members of different shapes.
    let (code, err) = fail(&dir, &base("ok.csv", &["m0.nc", "m1.nc", "small.nc"]));
    assert_eq!(code, 3);
    assert!(err.contains("small.nc") && err.contains("variable `h`") && err.contains("shape"), "{err}");
    // A missing variable.
    let mut a = base("ok.csv", &m3);
    a[6] = "depth";
    let (code, err) = fail(&dir, &a);
    assert_eq!(code, 3);
    assert!(err.contains("m0.nc") && err.contains("no variable `depth`"), "{err}");
    // Every observation outside the domain.
    std::fs::write(dir.join("far.csv"), "station,x,y,value,error_std\nfar,500,8,1.6,0.05\n").unwrap();
    let (code, err) = fail(&dir, &base("far.csv", &m3));
    assert_eq!(code, 3);
    assert!(err.contains("far.csv") && err.contains("outside the model domain"), "{err}");
    // Non-finite observation, non-positive error variance.
    std::fs::write(dir.join("nan.csv"), "station,x,y,value,error_std\ng1,12,8,NaN,0.05\n").unwrap();
    let (code, err) = fail(&dir, &base("nan.csv", &m3));
    assert_eq!(code, 3);
    assert!(err.contains("nan.csv") && err.contains("variable `value`") && err.contains("g1"), "{err}");
    std::fs::write(dir.join("zero.csv"), "station,x,y,value,error_std\ng1,12,8,1.0,0\n").unwrap();
    let (code, err) = fail(&dir, &base("zero.csv", &m3));
    assert_eq!(code, 3);
    assert!(err.contains("zero.csv") && err.contains("variable `error_std`"), "{err}");
    // A non-finite forecast value.
    let mut ds = read_dataset(&dir.join("m2.nc")).unwrap();
    if let Some(twinflow_exchange::Values::Num(v)) = ds.variable_mut("h").map(|v| &mut v.values) {
        v[5] = f64::NAN;
    }
    write_dataset(&dir.join("m2.nc"), &ds, &Compression::default()).unwrap();
    let (code, err) = fail(&dir, &base("ok.csv", &m3));
    assert_eq!(code, 3);
    assert!(err.contains("m2.nc") && err.contains("variable `h`") && err.contains("not finite"), "{err}");
    // The observation file itself missing: an I/O failure naming it.
    let (_, err) = fail(&dir, &base("none.nc", &["m0.nc", "m1.nc"]));
    assert!(err.contains("none.nc"), "{err}");
}

/// The LETKF's local analyses split over 1, 2 and 4 MPI ranks give bitwise-identical
/// analysis members and diagnostics (compiled only with `--features mpi`; MPICH).
#[cfg(feature = "mpi")]
mod mpi {
    use super::*;

    #[test]
    fn letkf_analysis_is_identical_on_1_2_and_4_ranks() {
        let dir = scratch("mpi");
        go(
            &dir,
            &["lorenz96", "truth", "--cycles", "3", "--members", "12", "--seed", "5", "--truth-out", "truth.nc"]
                .into_iter()
                .chain(["--obs-out", "obs.nc", "--ensemble-out", "a0.nc"])
                .collect::<Vec<_>>(),
        );
        go(&dir, &["lorenz96", "advance", "a0.nc", "--out", "f1.nc", "--steps", "1"]);
        for method in ["letkf", "enkf"] {
            for n in [1usize, 2, 4] {
                let mut cmd = Command::new("mpiexec");
                cmd.args(["-n", &n.to_string(), BIN, "assimilate", "--members", "f1.nc", "--variables", "state"])
                    .args(["--obs", "obs.nc", "--method", method, "--dapper-radius", "4", "--periodic-x", "40"])
                    .args(["--inflation", "1.04", "--rtps", "0.3", "--seed", "9", "--cycle", "1"])
                    .args(["--out", &format!("{method}{n}.nc"), "--diagnostics", &format!("{method}d{n}.nc")])
                    .args(["--truth", "truth.nc"])
                    .env("TWINFLOW_LOG", "info");
                let out = ok(run(cmd, &dir, Duration::from_secs(240)), &format!("mpiexec -n {n}"));
                let stderr = String::from_utf8_lossy(&out.stderr);
                for r in 0..n {
                    assert!(stderr.contains(&format!("rank {r} of {n}")), "rank {r} of {n} missing:\n{stderr}");
                }
            }
            for (file, vars) in
                [("", &["state"][..]), ("d", &["innovation", "analysis_spread", "rmse_truth_analysis"][..])]
            {
                for var in vars {
                    let bits = |n: usize| -> Vec<u64> {
                        values(&dir.join(format!("{method}{file}{n}.nc")), var).iter().map(|v| v.to_bits()).collect()
                    };
                    assert_eq!(bits(1), bits(2), "{method}: `{var}` differs between 1 and 2 ranks");
                    assert_eq!(bits(1), bits(4), "{method}: `{var}` differs between 1 and 4 ranks");
                }
            }
            assert_ne!(values(&dir.join(format!("{method}1.nc")), "state"), values(&dir.join("f1.nc"), "state"));
        }
    }
}
