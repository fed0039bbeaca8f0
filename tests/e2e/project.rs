//! Project-level checks: the checked-in JSON Schema is current, and every workflow shipped
//! in `examples/` and `workflows/` validates (against the schema and the engine). Parts in
//! `workflows/parts/` (sub-workflows that only run inside a cycling caller) are validated
//! through the shipped workflows that import them; each must have one.

use std::path::{Path, PathBuf};

use crate::support::twinflow;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn checked_in_schema_is_current() {
    let out = twinflow().arg("schema").output().unwrap();
    assert!(out.status.success());
    let generated = String::from_utf8(out.stdout).unwrap();
    let checked_in = std::fs::read_to_string(root().join("schemas/workflow.schema.json")).unwrap_or_default();
    assert!(
        generated == checked_in,
        "schemas/workflow.schema.json is stale; regenerate it with `cargo run -p twinflow-cli -- schema > schemas/workflow.schema.json`"
    );
}

fn shipped_workflows() -> Vec<PathBuf> {
    let mut files = vec![];
    for dir in ["examples", "workflows"] {
        let Ok(rd) = std::fs::read_dir(root().join(dir)) else { continue };
        for e in rd.flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "yaml" || x == "yml") {
                files.push(p);
            }
        }
    }
    files.sort();
    files
}

#[test]
fn every_shipped_workflow_validates() {
    let files = shipped_workflows();
    assert!(!files.is_empty());
    for f in files {
        let out = twinflow().arg("validate").arg(&f).output().unwrap();
        assert!(out.status.success(), "{} does not validate:\n{}", f.display(), String::from_utf8_lossy(&out.stderr));
    }
}

fn parts() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join("workflows/parts"))
        .map(|rd| rd.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "yaml")).collect())
        .unwrap_or_default();
    files.sort();
    files
}

#[test]
fn every_part_is_imported_by_a_shipped_workflow() {
    let texts: Vec<String> = shipped_workflows().iter().map(|f| std::fs::read_to_string(f).unwrap()).collect();
    for part in parts() {
        let name = format!("parts/{}", part.file_name().unwrap().to_string_lossy());
        assert!(
            texts.iter().any(|t| t.contains(&name)),
            "{name} is imported by no shipped workflow: nothing validates it"
        );
    }
}

#[test]
fn every_shipped_workflow_matches_the_json_schema() {
    let schema: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root().join("schemas/workflow.schema.json")).unwrap()).unwrap();
    let validator = jsonschema::validator_for(&schema).expect("the schema itself is valid");
    for f in shipped_workflows().into_iter().chain(parts()) {
        let text = std::fs::read_to_string(&f).unwrap();
        let doc: serde_json::Value = serde_saphyr::from_str(&text).unwrap();
        let errors: Vec<String> =
            validator.iter_errors(&doc).map(|e| format!("{} at {}", e, e.instance_path)).collect();
        assert!(errors.is_empty(), "{} violates the schema: {errors:#?}", f.display());
    }
}

#[test]
fn every_command_has_help_with_an_example() {
    for cmd in ["validate", "plan", "run", "status", "logs", "why", "cancel", "stop", "signal", "schema"] {
        let out = twinflow().args([cmd, "--help"]).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{cmd} --help failed");
        assert!(text.contains("Example"), "`twinflow {cmd} --help` has no example:\n{text}");
        assert!(text.contains("Exit codes"), "`twinflow {cmd} --help` does not document exit codes");
    }
}
