//! Hot starts of the flood kernel, through the binary: a run continued from its saved
//! state (`--state-out` → `--hot-start`) takes the same steps as one never stopped, a
//! member of a merged (stacked) ensemble starts from its own state and parameters, and
//! bad restarts fail with the file and field named. With `--features mpi` the continued
//! run is also checked on 2 ranks.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use twinflow_exchange::{Attr, read_dataset};

mod support;
use support::{BIN, ok, run};

fn scratch(name: &str) -> PathBuf {
    support::scratch_in("hot-start-tests", name)
}

fn kernel(args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args);
    cmd
}

const LIMIT: Duration = Duration::from_secs(120);

/// A valley of 40 × 24 cells of 10 m with an inflow hydrograph (peak 80 m³/s at 30 s).
fn make_valley(dir: &Path) {
    let args = ["terrain", "--out", "dem.nc", "--nx", "40", "--ny", "24", "--dx", "10"];
    let more = ["--inflow-peak", "80", "--end-time", "120", "--config-out", "flood.json"];
    ok(run(kernel(&[&args[..], &more[..]].concat()), dir, LIMIT), "terrain");
}

fn flood(dir: &Path, extra: &[&str]) -> std::process::Output {
    let base = ["flood", "--dem", "dem.nc", "--config", "flood.json"];
    run(kernel(&[&base[..], extra].concat()), dir, LIMIT)
}

fn values(path: &Path, name: &str) -> Vec<f64> {
    let ds = read_dataset(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    ds.variable(name).unwrap_or_else(|| panic!("{} has no `{name}`", path.display())).num().unwrap().to_vec()
}

fn model_time(path: &Path) -> f64 {
    read_dataset(path).unwrap().attr("model_time").and_then(Attr::as_f64).expect("model_time attribute")
}

/// Runs 0 → 60 s → 120 s in two pieces and in one, on `launcher` (e.g. `mpiexec -n 2`).
fn continued_equals_uninterrupted(dir: &Path, launcher: &[&str]) {
    let go = |extra: &[&str], what: &str| {
        let base = ["flood", "--dem", "dem.nc", "--config", "flood.json"];
        let argv = [launcher, &[BIN], &base[..], extra].concat();
        let mut cmd = Command::new(argv[0]);
        cmd.args(&argv[1..]);
        ok(run(cmd, dir, LIMIT), what);
    };
    let scale = ["--inflow-scale", "1.5", "--manning-n", "0.045"];
    go(&[&["--out", "whole.nc", "--end-time", "120", "--state-out", "whole_state.nc"][..], &scale].concat(), "whole");
    go(&[&["--out", "first.nc", "--end-time", "60", "--state-out", "first_state.nc"][..], &scale].concat(), "first");
    // No parameter flags: the inflow scale and roughness come from the saved state.
    go(
        &["--out", "second.nc", "--hot-start", "first_state.nc", "--end-time", "120", "--state-out", "second_state.nc"],
        "second",
    );

    assert_eq!(model_time(&dir.join("first_state.nc")), 60.0);
    assert_eq!(model_time(&dir.join("second_state.nc")), 120.0);
    for name in ["h", "hu", "hv"] {
        let (a, b) = (values(&dir.join("whole_state.nc"), name), values(&dir.join("second_state.nc"), name));
        assert!(a.iter().any(|&v| v != 0.0), "`{name}` is all zero: the test would prove nothing");
        assert!(a == b, "`{name}` differs between the continued and the uninterrupted run");
    }
    assert_eq!(values(&dir.join("second_state.nc"), "inflow_scale"), [1.5]);
    assert_eq!(values(&dir.join("second_state.nc"), "manning_n"), [0.045]);
    // The continued run's gauges and snapshots are on the absolute time axis.
    let times = values(&dir.join("second_gauges.nc"), "time");
    assert_eq!((times[0], *times.last().unwrap()), (60.0, 120.0), "{times:?}");
}

#[test]
fn a_run_continued_from_its_state_matches_one_never_stopped() {
    let dir = scratch("continued");
    make_valley(&dir);
    continued_equals_uninterrupted(&dir, &[]);
}

#[cfg(feature = "mpi")]
#[test]
fn a_run_continued_on_two_ranks_matches_one_never_stopped() {
    let dir = scratch("continued-mpi");
    make_valley(&dir);
    continued_equals_uninterrupted(&dir, &["mpiexec", "-n", "2"]);
    // And the 2-rank continuation equals the 1-rank one.
    let two = values(&dir.join("second_state.nc"), "h");
    ok(
        flood(
            &dir,
            &["--out", "one.nc", "--hot-start", "first_state.nc", "--end-time", "120", "--state-out", "one_state.nc"],
        ),
        "one rank",
    );
    assert!(two == values(&dir.join("one_state.nc"), "h"));
}

#[test]
fn a_member_of_a_merged_ensemble_starts_from_its_own_state_and_parameters() {
    let dir = scratch("stacked");
    make_valley(&dir);
    for (k, scale) in ["0.5", "2.0"].iter().enumerate() {
        let (out, state) = (format!("m{k}.nc"), format!("m{k}_state.nc"));
        ok(flood(&dir, &["--out", &out, "--end-time", "40", "--inflow-scale", scale, "--state-out", &state]), "member");
    }
    ok(run(kernel(&["stage", "merge", "ens.nc", "m0_state.nc", "m1_state.nc"]), &dir, LIMIT), "merge");
    assert_eq!(values(&dir.join("ens.nc"), "inflow_scale"), [0.5, 2.0]);

    let next = ["--end-time", "80"];
    ok(
        flood(
            &dir,
            &[&["--out", "s.nc", "--hot-start", "ens.nc", "--member", "1", "--state-out", "s_state.nc"][..], &next]
                .concat(),
        ),
        "stacked",
    );
    ok(
        flood(
            &dir,
            &[&["--out", "o.nc", "--hot-start", "m1_state.nc", "--state-out", "o_state.nc"][..], &next].concat(),
        ),
        "own",
    );
    for name in ["h", "hu", "hv", "inflow_scale"] {
        assert!(values(&dir.join("s_state.nc"), name) == values(&dir.join("o_state.nc"), name), "`{name}` differs");
    }
    assert_eq!(values(&dir.join("s_state.nc"), "inflow_scale"), [2.0]);
    // A flag overrides the state's parameter.
    ok(
        flood(
            &dir,
            &[
                &[
                    "--out",
                    "f.nc",
                    "--hot-start",
                    "ens.nc",
                    "--member",
                    "1",
                    "--inflow-scale",
                    "1.0",
                    "--state-out",
                    "f_state.nc",
                ][..],
                &next,
            ]
            .concat(),
        ),
        "flag",
    );
    assert_eq!(values(&dir.join("f_state.nc"), "inflow_scale"), [1.0]);
    assert!(values(&dir.join("f_state.nc"), "h") != values(&dir.join("s_state.nc"), "h"), "the flag changed nothing");
}

#[test]
fn bad_restarts_name_the_file_and_the_field() {
    let dir = scratch("bad");
    make_valley(&dir);
    ok(flood(&dir, &["--out", "a.nc", "--end-time", "40", "--state-out", "a_state.nc"]), "first");
    ok(run(kernel(&["stage", "merge", "ens.nc", "a_state.nc", "a_state.nc"]), &dir, LIMIT), "merge");

    let stderr = |o: &std::process::Output| String::from_utf8_lossy(&o.stderr).into_owned();
    // A member the file does not have.
    let out = flood(&dir, &["--out", "b.nc", "--hot-start", "ens.nc", "--member", "5", "--end-time", "80"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("ens.nc") && stderr(&out).contains("member 5"), "{}", stderr(&out));
    // Ending before the state's model time.
    let out = flood(&dir, &["--out", "b.nc", "--hot-start", "a_state.nc", "--end-time", "30"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("`end_time`") && stderr(&out).contains("40"), "{}", stderr(&out));
    assert!(!dir.join("b.nc").exists() && !dir.join("b.nc.partial").exists());
    // `--member` needs `--hot-start`.
    let out = flood(&dir, &["--out", "b.nc", "--member", "1"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    // A state file that is not one.
    std::fs::write(dir.join("junk.nc"), b"not a netcdf file").unwrap();
    let out = flood(&dir, &["--out", "b.nc", "--hot-start", "junk.nc", "--end-time", "80"]);
    assert_ne!(out.status.code(), Some(0));
    assert!(stderr(&out).contains("junk.nc"), "{}", stderr(&out));
}
