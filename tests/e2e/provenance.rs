//! `twinflow export RUN --ro-crate`: the run's provenance as a Workflow Run RO-Crate, read
//! back with independent tools: the Python `rocrate` library (ResearchObject/ro-crate-py)
//! and `rocrate-validator` (crs4) against the Provenance Run Crate 0.5 profile, both from
//! PyPI in `target/provenance-venv` (`hpc/setup-provenance.sh`, run by `make test`; a missing
//! venv fails these tests with that hint).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::support::*;

fn venv() -> PathBuf {
    let v = std::env::var_os("TWINFLOW_PROVENANCE_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/provenance-venv"));
    assert!(
        v.join("bin/rocrate-validator").is_file(),
        "no RO-Crate tools in {}; hint: bash hpc/setup-provenance.sh",
        v.display()
    );
    v
}

/// `rocrate-validator validate -p provenance-run-crate-0.5` (offline, with the seeded cache).
fn validate(crate_path: &Path) -> Output {
    let v = venv();
    Command::new(v.join("bin/rocrate-validator"))
        .env("COLUMNS", "200")
        .args(["validate", "-p", "provenance-run-crate-0.5", "--no-paging", "--offline", "-f", "json", "--cache-path"])
        .arg(v.join("validator-cache"))
        .arg(crate_path)
        .output()
        .expect("run rocrate-validator")
}

/// Loads the crate with the `rocrate` library and prints facts about it as JSON.
const READ: &str = r##"
import json, sys
from rocrate.rocrate import ROCrate
c = ROCrate(sys.argv[1])
ents = list(c.get_entities())
def types(e):
    t = e.type
    return t if isinstance(t, list) else [t]
run = [e for e in ents if "CreateAction" in types(e) and e.get("instrument") is not None and e["instrument"].id == c.mainEntity.id][0]
attempts = [e for e in ents if "CreateAction" in types(e) and e is not run]
controls = [e for e in ents if "ControlAction" in types(e)]
files = [e for e in ents if "File" in types(e) and e.id.startswith("file://")]
print(json.dumps({
    "identifier": c.root_dataset["identifier"],
    "main": c.mainEntity.id,
    "main_types": types(c.mainEntity),
    "run_status": run["actionStatus"],
    "attempts": sorted(a["name"] for a in attempts),
    "failed": sorted(a["name"] for a in attempts if a.get("actionStatus", "").endswith("FailedActionStatus")),
    "errors": sorted(a.get("error", "") for a in attempts if a.get("error")),
    "controls": len(controls),
    "env": sorted(p["name"] for a in attempts[:1] for p in (a.get("environment") or [])),
    "files": {f.id: f.get("sha256") for f in files},
    "software": sorted(e["name"] for e in ents if "SoftwareApplication" in types(e) and e.id.startswith("#") and not e.id.startswith("#tool")),
}))
"##;

fn read(crate_path: &Path) -> serde_json::Value {
    let out = Command::new(venv().join("bin/python")).args(["-c", READ]).arg(crate_path).output().unwrap();
    assert!(out.status.success(), "rocrate could not read {}: {}", crate_path.display(), show(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn sha256(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap().to_string()
}

#[test]
fn a_failed_run_with_retries_exports_a_crate_the_independent_tools_accept() {
    let d = scratch("provenance/failed");
    // `flaky` fails its first attempt and succeeds on the retry; `broken` always fails.
    let wf = write(
        &d,
        "wf.yaml",
        "name: prov\nparams:\n  n: { type: int, default: 2 }\nsteps:\n  make:\n    scatter: { over: { i: \"${{ range(0, params.n) }}\" } }\n    run: [sh, -c, 'echo \"$1\" > \"$2\"', sh, \"${{ scatter.i }}\", \"${{ out.f }}\"]\n    out: { f: f.txt }\n  flaky:\n    in: { f: \"${{ steps.make.out.f }}\" }\n    run: [sh, -c, 'if [ -e ../tried ]; then cat \"$@\" > sum.txt; else touch ../tried; exit 3; fi', sh, \"${{ in.f }}\"]\n    out: { sum: sum.txt }\n    retry: { count: 1, backoff: 0s }\n  broken:\n    after: [flaky]\n    run: [sh, -c, 'echo boom >&2; exit 7']\n",
    );
    let out = run_json(&d, &wf, &["-p", "n=2"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let id = run_id(&out);
    let dir = d.join("crate");
    let ex = twinflow().current_dir(&d).args(["export", &id, "--ro-crate", "crate", "--json"]).output().unwrap();
    assert!(ex.status.success(), "{}", show(&ex));
    let e: serde_json::Value = serde_json::from_slice(&ex.stdout).unwrap();
    assert_eq!(e["identifier"], format!("urn:twinflow:run:{id}"));

    let v = validate(&dir);
    let report: serde_json::Value = serde_json::from_slice(&v.stdout).unwrap_or_else(|_| panic!("{}", show(&v)));
    assert_eq!(report["passed"], true, "{report:#}");

    let c = read(&dir);
    assert_eq!(c["identifier"], format!("urn:twinflow:run:{id}"));
    assert_eq!(c["main"], "workflow/wf.yaml");
    for t in ["File", "SoftwareSourceCode", "ComputationalWorkflow"] {
        assert!(c["main_types"].as_array().unwrap().iter().any(|x| x == t), "{c}");
    }
    assert!(c["run_status"].as_str().unwrap().ends_with("FailedActionStatus"), "{c}");
    // Every attempt, the retry and the failures visible with their exit status.
    let attempts: Vec<&str> = c["attempts"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
    assert_eq!(
        attempts,
        ["broken attempt 1", "flaky attempt 1", "flaky attempt 2", "make[0] attempt 1", "make[1] attempt 1"],
        "{c}"
    );
    assert_eq!(c["failed"], serde_json::json!(["broken attempt 1", "flaky attempt 1"]), "{c}");
    let errors: Vec<&str> = c["errors"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
    assert!(
        errors.iter().any(|e| e.starts_with("exit status 7")) && errors.iter().any(|e| e.starts_with("exit status 3")),
        "{errors:?}"
    );
    assert_eq!(c["controls"], 4, "one ControlAction per task that ran: {c}");
    assert!(c["env"].as_array().unwrap().iter().any(|x| x == "TWINFLOW_STEP"), "{c}");
    // The outputs with their SHA-256, as sha256sum computes it.
    let sum = d.join("runs").join(&id).join("steps/flaky/out/sum.txt");
    let uri = format!("file://{}", sum.display());
    assert_eq!(c["files"][&uri], sha256(&sum), "{c}");
    assert!(c["software"].as_array().unwrap().iter().any(|x| x == "twinflow"), "{c}");

    // As a zip: the same crate, which rocrate reads too; an existing target is refused.
    let zipped = twinflow().current_dir(&d).args(["export", &id, "--ro-crate", "run.crate.zip"]).output().unwrap();
    assert!(zipped.status.success(), "{}", show(&zipped));
    assert_eq!(read(&d.join("run.crate.zip"))["identifier"], format!("urn:twinflow:run:{id}"));
    let again = twinflow().current_dir(&d).args(["export", &id, "--ro-crate", "crate"]).output().unwrap();
    assert_eq!(again.status.code(), Some(2), "{}", show(&again));
    assert!(String::from_utf8_lossy(&again.stderr).contains("is not empty"), "{}", show(&again));
}

/// A run whose every result comes from the cache ran no tool itself: its crate describes the
/// attempts of the earlier run that made the results, and is still a valid crate.
#[test]
fn a_run_served_from_the_cache_points_at_the_attempts_that_made_its_results() {
    let d = scratch("provenance/cached");
    let wf = write(
        &d,
        "wf.yaml",
        "name: twice\nsteps:\n  make:\n    scatter: { over: { i: \"${{ [1, 2] }}\" } }\n    run: [sh, -c, 'echo \"$1\" > \"$2\"', sh, \"${{ scatter.i }}\", \"${{ out.f }}\"]\n    out: { f: f.txt }\n",
    );
    let first = run_json(&d, &wf, &[]);
    assert!(first.status.success(), "{}", show(&first));
    let second = run_json(&d, &wf, &[]);
    assert!(second.status.success(), "{}", show(&second));
    assert!(final_states(&second).values().all(|s| s == "cached"), "{}", show(&second));
    let ex = twinflow().current_dir(&d).args(["export", &run_id(&second), "--ro-crate", "crate"]).output().unwrap();
    assert!(ex.status.success(), "{}", show(&ex));
    let v = validate(&d.join("crate"));
    let report: serde_json::Value = serde_json::from_slice(&v.stdout).unwrap_or_else(|_| panic!("{}", show(&v)));
    assert_eq!(report["passed"], true, "{report:#}");
    let c = read(&d.join("crate"));
    let from = format!("(run {}, reused from the cache)", run_id(&first));
    let attempts: Vec<&str> = c["attempts"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
    assert_eq!(attempts, [format!("make[0] attempt 1 {from}"), format!("make[1] attempt 1 {from}")], "{c}");
    let made = d.join("runs").join(run_id(&first)).join("steps/make/1/out/f.txt");
    assert_eq!(c["files"][&format!("file://{}", made.display())], sha256(&made), "{c}");
}
