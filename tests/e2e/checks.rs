//! Checks before work starts (issue 14): programs looked up when a run starts, a relative
//! `TWINFLOW_KERNEL_BIN`, a SLURM client without configuration, `--profile` found beside the
//! workflow and in the user's configuration, `assert:`, `-p call.NAME=VALUE`, empty
//! scatters and `workflow.dir`.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::support::*;

/// Writes the executable script `dir/name`.
fn script(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_missing_program_is_an_environment_error_before_anything_runs() {
    let d = scratch("checks/missing_program");
    let marker = d.join("first-ran");
    let wf = write(
        &d,
        "wf.yaml",
        &format!(
            "name: missing\nsteps:\n  first:\n    run: [touch, {}]\n  second:\n    after: [first]\n    run: [no-such-program-for-twinflow, x]\n",
            marker.display()
        ),
    );
    let start = Instant::now();
    let out = run_json(&d, &wf, &[]);
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
    assert!(start.elapsed() < Duration::from_secs(10));
    let err = stderr(&out);
    assert!(
        err.contains("/wf.yaml:7:11: steps.second.run[0]: program `no-such-program-for-twinflow` is not on PATH"),
        "{err}"
    );
    assert!(!marker.exists(), "nothing runs when a program is missing");
    assert!(events(&out).iter().all(|e| e["event"] != "task-started"), "{}", show(&out));
    // `validate` alone says nothing of the environment; `--check-env` looks, as `run` does.
    let plain = twinflow().current_dir(&d).args(["validate", "wf.yaml"]).output().unwrap();
    assert_eq!(plain.status.code(), Some(0), "{}", show(&plain));
    let env = twinflow().current_dir(&d).args(["validate", "wf.yaml", "--check-env"]).output().unwrap();
    assert_eq!(env.status.code(), Some(3), "{}", show(&env));
    assert!(stderr(&env).contains("program `no-such-program-for-twinflow` is not on PATH"), "{}", show(&env));
    // The MPI launcher of a multi-rank step, as given with `--mpiexec`.
    let mpi = write(&d, "mpi.yaml", "name: mpi\nsteps:\n  a:\n    run: [\"true\"]\n    resources: { ranks: 2 }\n");
    let out = run_json(&d, &mpi, &["--mpiexec", "no-such-mpiexec-for-twinflow --oversubscribe"]);
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
    assert!(stderr(&out).contains("the MPI launcher `no-such-mpiexec-for-twinflow` is not found"), "{}", show(&out));
    let env = twinflow()
        .current_dir(&d)
        .args(["validate", "mpi.yaml", "--check-env", "--mpiexec", "no-such-mpiexec-for-twinflow"])
        .output()
        .unwrap();
    assert_eq!(env.status.code(), Some(3), "{}", show(&env));
    // A program named by a step output is known only when the task starts: not looked up,
    // the task fails as before.
    let dynamic = write(
        &d,
        "dyn.yaml",
        "name: dyn\nsteps:\n  a:\n    run: [sh, -c, 'echo no-such-program-for-twinflow > p']\n    values: { p: p }\n  b:\n    run: [\"${{ steps.a.values.p }}\"]\n",
    );
    let out = run_json(&d, &dynamic, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert_eq!(final_states(&out).get("b").map(String::as_str), Some("failed"), "{}", show(&out));
}

#[test]
fn a_relative_kernel_bin_is_made_absolute_and_a_missing_one_is_an_environment_error() {
    let d = scratch("checks/kernel_bin");
    let seen = d.join("kernel-argv0");
    // A stand-in kernel that records how it was called (once per rank under mpiexec).
    script(&d.join("bin"), "twin-kernel", &format!("#!/bin/sh\necho \"$0\" >> {}\n", seen.display()));
    let want = d.join("bin/twin-kernel").display().to_string();
    // One process, and two ranks under the real `mpiexec` (where a relative path once failed:
    // steps run in their attempt directories).
    for (file, ranks) in [("k.yaml", 1), ("k2.yaml", 2)] {
        let _ = std::fs::remove_file(&seen);
        write(
            &d,
            file,
            &format!(
                "name: k\nsteps:\n  a:\n    kernel: flood\n    args: [--help]\n    resources: {{ ranks: {ranks} }}\n"
            ),
        );
        let out = twinflow()
            .current_dir(&d)
            .env("TWINFLOW_KERNEL_BIN", "bin/twin-kernel")
            .args(["run", file, "--json"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", show(&out));
        let calls = std::fs::read_to_string(&seen).unwrap();
        assert_eq!(calls.lines().collect::<Vec<_>>(), vec![want.as_str(); ranks], "{calls}");
    }
    let _ = std::fs::remove_file(&seen);
    let out = twinflow()
        .current_dir(&d)
        .env("TWINFLOW_KERNEL_BIN", "bin/no-such-kernel")
        .args(["run", "k.yaml", "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
    let err = stderr(&out);
    assert!(
        err.contains("error: k.yaml:3:3: steps.a.kernel: `twin-kernel` (for `kernel: flood`) is not found"),
        "{err}"
    );
    assert!(err.contains(&format!("`{}`", d.join("bin/no-such-kernel").display())), "{err}");
    assert!(err.contains("TWINFLOW_KERNEL_BIN"), "{err}");
    assert!(!seen.exists(), "nothing ran");
}

#[test]
fn a_slurm_client_without_configuration_fails_at_once_instead_of_retrying() {
    let d = scratch("checks/sbatch_no_config");
    let bin = d.join("bin");
    // What `sbatch` and friends say on a machine without `slurm.conf` (or DNS SRV record).
    for p in ["sbatch", "squeue", "sacct", "scontrol", "scancel", "sinfo"] {
        script(
            &bin,
            p,
            &format!(
                "#!/bin/sh\necho '{p}: error: resolve_ctls_from_dns_srv: res_nsearch error: Unknown host' >&2\n\
                 echo '{p}: error: fetch_config: DNS SRV lookup failed' >&2\n\
                 echo '{p}: fatal: Could not establish a configuration source' >&2\nexit 1\n"
            ),
        );
    }
    let wf = write(&d, "s.yaml", "name: s\nsteps:\n  a:\n    run: [\"true\"]\n");
    let log = d.join("calls.log");
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let start = Instant::now();
    let out = twinflow()
        .current_dir(&d)
        .env("PATH", &path)
        .env("TWINFLOW_SLURM_CALL_LOG", &log)
        .arg("run")
        .arg(&wf)
        .args(["--backend", "slurm", "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
    // The default profile retries transient errors 6 times over about 12 s.
    assert!(start.elapsed() < Duration::from_secs(8), "took {:?}", start.elapsed());
    let calls = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(calls.lines().filter(|l| l.contains(" sbatch ")).count(), 1, "{calls}");
    let err = stderr(&out);
    assert!(err.contains("Could not establish a configuration source"), "{err}");
    assert!(err.contains("not set up"), "{err}");
}

#[test]
fn a_profile_name_is_found_beside_the_workflow_and_in_the_users_config() {
    let d = scratch("checks/profiles");
    let flows = d.join("flows");
    std::fs::create_dir_all(&flows).unwrap();
    write(&flows, "wf.yaml", "name: p\nsteps:\n  a:\n    run: [\"true\"]\n");
    write(&flows, "beside.yaml", "partition: beside-part\n");
    let config = d.join("config");
    std::fs::create_dir_all(config.join("twinflow/profiles")).unwrap();
    write(&config.join("twinflow/profiles"), "mine.yaml", "partition: mine-part\n");
    // Run from elsewhere: neither is in the current directory.
    let elsewhere = d.join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    let plan = |profile: &str| {
        twinflow()
            .current_dir(&elsewhere)
            .env("XDG_CONFIG_HOME", &config)
            .env_remove("TWINFLOW_PROFILE_PATH")
            .arg("plan")
            .arg(flows.join("wf.yaml"))
            .args(["--backend", "slurm", "--profile", profile])
            .output()
            .unwrap()
    };
    let out = plan("beside");
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("--partition=beside-part"), "{}", show(&out));
    let out = plan("mine");
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("--partition=mine-part"), "{}", show(&out));
    let out = plan("nowhere");
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let err = stderr(&out);
    assert!(err.contains("no site profile `nowhere`"), "{err}");
    for dir in [flows.display().to_string(), config.join("twinflow/profiles").display().to_string()] {
        assert!(err.contains(&format!("`{dir}`")), "looked in {dir}: {err}");
    }
}

const ASSERTS: &str = "name: sweep
params:
  trials: { type: int, default: 8 }
  survivors: { type: int, default: 2 }
assert:
  - ${{ params.trials > 0 }}
  - that: ${{ params.survivors <= params.trials }}
    message: at most `trials` trials can survive
steps:
  a:
    run: [echo, \"${{ params.trials }}\", \"${{ params.survivors }}\"]
";

#[test]
fn assertions_refuse_bad_parameter_combinations_at_validation() {
    let d = scratch("checks/asserts");
    write(&d, "sweep.yaml", ASSERTS);
    let ok = twinflow().current_dir(&d).args(["validate", "sweep.yaml", "-p", "survivors=8"]).output().unwrap();
    assert_eq!(ok.status.code(), Some(0), "{}", show(&ok));
    let bad = twinflow()
        .current_dir(&d)
        .args(["validate", "sweep.yaml", "-p", "trials=3", "-p", "survivors=5"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2), "{}", show(&bad));
    let err = stderr(&bad);
    assert!(
        err.contains("error: sweep.yaml:7:11: assert[1]: assertion failed: at most `trials` trials can survive"),
        "{err}"
    );
    assert!(err.contains("help: with params.survivors = 5, params.trials = 3"), "{err}");
    assert!(err.contains("1 problem found"), "{err}");
    // A run is refused the same way before anything starts.
    let run = run_json(&d, &d.join("sweep.yaml"), &["-p", "trials=3", "-p", "survivors=5"]);
    assert_eq!(run.status.code(), Some(2), "{}", show(&run));
    assert!(!d.join("runs").exists() || events(&run).iter().all(|e| e["event"] != "task-started"));
    // Only what is known before the run may be asserted; and it must be a condition.
    write(
        &d,
        "late.yaml",
        "name: late\nassert:\n  - ${{ steps.a.values.n > 1 }}\n  - ${{ len(params.xs) }}\nparams:\n  xs: { type: list, default: [1] }\nsteps:\n  a:\n    run: [\"true\"]\n    values: { n: n }\n",
    );
    let late = twinflow().current_dir(&d).args(["validate", "late.yaml"]).output().unwrap();
    assert_eq!(late.status.code(), Some(2), "{}", show(&late));
    let err = stderr(&late);
    assert!(err.contains("assert[1]: expected `bool`, found `int`"), "{err}");
}

#[test]
fn the_detector_twin_refuses_more_survivors_than_trials_before_any_work() {
    let root = crate::common::repo_root();
    let v = |args: &[&str]| twinflow().current_dir(&root).arg("validate").args(args).output().unwrap();
    let ok = v(&["workflows/detector-twin.yaml"]);
    assert_eq!(ok.status.code(), Some(0), "{}", show(&ok));
    // The combination that once validated and failed inside MPI 6 s later.
    let bad = v(&["workflows/detector-twin.yaml", "-p", "search=random", "-p", "trials=3"]);
    assert_eq!(bad.status.code(), Some(2), "{}", show(&bad));
    let err = stderr(&bad);
    assert!(err.contains("workflows/detector-twin.yaml:"), "{err}");
    assert!(err.contains("assertion failed: the first cut keeps `survivors[0]` trials"), "{err}");
    assert!(err.contains("params.survivors = [6, 2]"), "{err}");
    // Imported: checked with what the caller passes, and with `-p twin.NAME` from the
    // command line.
    let mini = v(&["examples/detector-mini.yaml"]);
    assert_eq!(mini.status.code(), Some(0), "{}", show(&mini));
    let bad = v(&["examples/detector-mini.yaml", "-p", "twin.survivors=5,1"]);
    assert_eq!(bad.status.code(), Some(2), "{}", show(&bad));
    let err = stderr(&bad);
    assert!(err.contains("assertion failed: the first cut keeps"), "{err}");
    assert!(err.contains("imported by examples/detector-mini.yaml:"), "{err}");
}

#[test]
fn sub_workflow_parameters_are_set_from_the_command_line() {
    let root = crate::common::repo_root();
    let plan = |args: &[&str]| {
        twinflow().current_dir(&root).args(["plan", "examples/detector-mini.yaml"]).args(args).output().unwrap()
    };
    let base = plan(&[]);
    assert_eq!(base.status.code(), Some(0), "{}", show(&base));
    assert!(String::from_utf8_lossy(&base.stdout).contains("--epochs 60"), "{}", show(&base));
    let set = plan(&["-p", "twin.epochs=75"]);
    assert_eq!(set.status.code(), Some(0), "{}", show(&set));
    let text = String::from_utf8_lossy(&set.stdout);
    assert!(text.contains("--epochs 75") && !text.contains("--epochs 60"), "{text}");
    // Checked against the sub-workflow's declaration.
    for (args, want) in [
        (["-p", "twin.epochs=0"], "error: -p twin.epochs: 0 is below the minimum 1"),
        (["-p", "twin.epochz=5"], "error: -p twin.epochz: the sub-workflow of call `twin` has no parameter `epochz`"),
        (["-p", "twim.epochs=5"], "error: -p twim.epochs: workflow `detector-mini` has no sub-workflow call `twim`"),
    ] {
        let out = plan(&args);
        assert_eq!(out.status.code(), Some(2), "{}", show(&out));
        assert!(stderr(&out).contains(want), "{want}: {}", show(&out));
    }
    let hint = plan(&["-p", "twin.epochz=5"]);
    assert!(stderr(&hint).contains("help: did you mean `epochs`?"), "{}", show(&hint));
}

#[test]
fn an_empty_scatter_is_an_error_unless_the_step_allows_it() {
    let d = scratch("checks/empty_scatter");
    let text = "name: e\nparams:\n  n: { type: int, default: 0 }\nsteps:\n  m:\n    scatter:\n      over: { i: \"${{ range(0, params.n) }}\" }\n    run: [echo, \"${{ scatter.i }}\"]\n    out: { o: o.txt }\n  g:\n    run: [echo, \"${{ steps.m.out.o }}\"]\n";
    write(&d, "e.yaml", text);
    let out = twinflow().current_dir(&d).args(["validate", "e.yaml"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let err = stderr(&out);
    assert!(
        err.contains("error: e.yaml:7:19: steps.m.scatter.over.i: scatter expands to 0 members: `i` is empty"),
        "{err}"
    );
    assert!(err.contains("add `allow_empty:"), "{err}");
    let ok = twinflow().current_dir(&d).args(["validate", "e.yaml", "-p", "n=2"]).output().unwrap();
    assert_eq!(ok.status.code(), Some(0), "{}", show(&ok));
    write(
        &d,
        "allowed.yaml",
        &text.replace(
            "    run: [echo, \"${{ scatter.i }}\"]",
            "      allow_empty: true\n    run: [echo, \"${{ scatter.i }}\"]",
        ),
    );
    let run = run_json(&d, &d.join("allowed.yaml"), &[]);
    assert_eq!(run.status.code(), Some(0), "{}", show(&run));
}

#[test]
fn workflow_dir_finds_scripts_beside_the_workflow_from_any_directory() {
    let d = scratch("checks/workflow_dir");
    let flows = d.join("flows");
    script(&flows, "hello.sh", "#!/bin/sh\necho \"hello from $1\" > out.txt\n");
    write(
        &flows,
        "wf.yaml",
        "name: wd\nsteps:\n  a:\n    run: [sh, \"${{ workflow.dir }}/hello.sh\", beside]\n    out: { o: out.txt }\n",
    );
    let elsewhere = d.join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    let out = run_json(&elsewhere, &flows.join("wf.yaml"), &[]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(step_file(&elsewhere, &out, "a/out/out.txt"), "hello from beside\n");
    // A relative argument that names the script beside the workflow does not resolve in the
    // attempt directory: a warning says what to write.
    write(&flows, "rel.yaml", "name: rel\nsteps:\n  a:\n    run: [sh, hello.sh, x]\n");
    let v = twinflow().current_dir(&elsewhere).arg("validate").arg(flows.join("rel.yaml")).output().unwrap();
    assert_eq!(v.status.code(), Some(0), "{}", show(&v));
    let err = stderr(&v);
    assert!(err.contains("rel.yaml:4:15: steps.a.run[1]: `hello.sh` is a relative path"), "{err}");
    assert!(err.contains("${{ workflow.dir }}/hello.sh"), "{err}");
    // An unknown `workflow.*` name is an error that names the known one.
    write(&flows, "bad.yaml", "name: bad\nsteps:\n  a:\n    run: [sh, \"${{ workflow.path }}/x\"]\n");
    let b = twinflow().current_dir(&flows).args(["validate", "bad.yaml"]).output().unwrap();
    assert_eq!(b.status.code(), Some(2), "{}", show(&b));
    assert!(stderr(&b).contains("help: known: `workflow.dir`"), "{}", show(&b));
}

#[test]
fn a_parameter_of_a_call_inside_a_call_is_set_with_a_dotted_path() {
    let d = scratch("checks/nested_call_param");
    write(
        &d,
        "leaf.yaml",
        "name: leaf\nparams:\n  nx: { type: int, default: 8, min: 1 }\nsteps:\n  grid:\n    run: [echo, \"nx=${{ params.nx }}\"]\n",
    );
    write(
        &d,
        "mid.yaml",
        "name: mid\nimports: { leaf: leaf.yaml }\nsteps:\n  leaf:\n    uses: leaf\n    with: { nx: 16 }\n",
    );
    write(&d, "main.yaml", "name: main\nimports: { mid: mid.yaml }\nsteps:\n  mid:\n    uses: mid\n");
    let plan = |args: &[&str]| twinflow().current_dir(&d).args(["plan", "main.yaml"]).args(args).output().unwrap();
    let base = plan(&[]);
    assert_eq!(base.status.code(), Some(0), "{}", show(&base));
    assert!(String::from_utf8_lossy(&base.stdout).contains("nx=16"), "{}", show(&base));
    let set = plan(&["-p", "mid.leaf.nx=32"]);
    assert_eq!(set.status.code(), Some(0), "{}", show(&set));
    let text = String::from_utf8_lossy(&set.stdout);
    assert!(text.contains("nx=32") && !text.contains("nx=16"), "{text}");
    let miss = plan(&["-p", "leaf.nx=32"]);
    assert_eq!(miss.status.code(), Some(2), "{}", show(&miss));
    let err = stderr(&miss);
    assert!(err.contains("workflow `main` has no sub-workflow call `leaf`"), "{err}");
    assert!(err.contains("mid.leaf"), "the calls are listed: {err}");
}
