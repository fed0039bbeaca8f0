//! `twinflow export RUN --ro-crate DIR|FILE.zip`: a run's provenance as a Workflow Run
//! RO-Crate, following the Provenance Run Crate profile 0.5 of the Workflow Run Crate
//! specifications (<https://www.researchobject.org/workflow-run-crate/profiles/provenance_run_crate/>):
//!
//! - the root dataset conforms to the Process, Workflow and Provenance Run Crate profiles;
//!   its `mainEntity` is the workflow file, copied into the crate (`workflow/`), described as
//!   a `ComputationalWorkflow` with its parameters (`FormalParameter`) and steps (`HowToStep`,
//!   each with its tool, a `SoftwareApplication`);
//! - the run is a `CreateAction` of the workflow: parameters given (`PropertyValue`), start,
//!   end, status, and its results; an `OrganizeAction` of twinflow links it to one
//!   `ControlAction` per task, whose object is the `CreateAction` of each attempt: its
//!   command, the environment the step added (`PropertyValue`s), start, end, status, exit
//!   code or signal, inputs and outputs;
//! - inputs and outputs are `File` entities named by their `file://` URI (results stay
//!   where the run keeps them: a crate can describe terabytes without copying them), with
//!   size and SHA-256;
//! - the software: twinflow and `twin-kernel` (with its MPI build), and the versions of MPI,
//!   HDF5 and NetCDF found on the machine.
//!
//! The crate's `identifier` is `urn:twinflow:run:RUN_ID`, the value the kernels write in
//! every output's `twinflow_provenance` attribute, so a NetCDF or HDF5 file leads back to
//! its crate. Tested with the Python `rocrate` library and `rocrate-validator` (profile
//! `provenance-run-crate-0.5`) in `tests/e2e/provenance.rs`.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use sha2::Digest;

use super::SessionError;
use crate::events::TaskState;
use crate::state::{AttemptRow, AttemptState, RunState, TaskRow};

/// What [`ro_crate`] wrote.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Exported {
    /// The crate: a directory, or a zip file.
    pub path: PathBuf,
    /// Its identifier (`urn:twinflow:run:RUN_ID`).
    pub identifier: String,
    /// Tasks and attempts described.
    pub tasks: usize,
    /// Attempts described.
    pub attempts: usize,
    /// Files described (inputs and outputs, by URI).
    pub files: usize,
}

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> SessionError + use<> {
    let path = path.to_path_buf();
    move |source| SessionError::Io { action, path, source }
}

/// RFC 3339 of a time in milliseconds.
fn time(ms: Option<i64>) -> Option<String> {
    ms.and_then(|m| jiff::Timestamp::from_millisecond(m).ok()).map(|t| t.to_string())
}

/// `#` + a name with characters outside `[A-Za-z0-9._-]` replaced.
fn local_id(prefix: &str, name: &str) -> String {
    let clean: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() || "._-".contains(c) { c } else { '_' }).collect();
    format!("#{prefix}-{clean}")
}

fn file_uri(path: &Path) -> String {
    let mut s = String::from("file://");
    for b in path.display().to_string().bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'/' | b'-' | b'_' | b'.' | b'~' => s.push(b as char),
            _ => s.push_str(&format!("%{b:02X}")),
        }
    }
    s
}

/// SHA-256 and size of a file (`None` when it cannot be read).
fn digest(path: &Path) -> Option<(String, u64)> {
    let mut f = std::fs::File::open(path).ok()?;
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut n = 0u64;
    loop {
        let k = f.read(&mut buf).ok()?;
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        n += k as u64;
    }
    Some((format!("{:x}", h.finalize()), n))
}

/// The first line of `program --version`-like output (argv, no shell), if it runs.
fn version_of(argv: &[&str]) -> Option<String> {
    let out = std::process::Command::new(argv[0]).args(&argv[1..]).stdin(std::process::Stdio::null()).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    text.lines().map(str::trim).find(|l| !l.is_empty()).map(str::to_string)
}

/// The crate's entities, built up by id (a later insert of an id merges nothing: first wins).
#[derive(Default)]
struct Graph {
    entities: BTreeMap<String, Value>,
    order: Vec<String>,
}

impl Graph {
    fn add(&mut self, e: Value) -> String {
        let id = e["@id"].as_str().unwrap_or_default().to_string();
        if !self.entities.contains_key(&id) {
            self.order.push(id.clone());
            self.entities.insert(id.clone(), e);
        }
        id
    }

    /// A `File` entity for a path (with size and SHA-256 when it exists).
    fn file(&mut self, path: &Path, files: &mut BTreeSet<String>) -> String {
        let id = file_uri(path);
        if !self.entities.contains_key(&id) {
            let mut e = json!({ "@id": id, "@type": "File", "name": path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default() });
            if path.is_file()
                && let Some((sha, size)) = digest(path)
            {
                e["sha256"] = json!(sha);
                e["contentSize"] = json!(size.to_string());
            }
            if let Some(fmt) = encoding(path) {
                e["encodingFormat"] = json!(fmt);
            }
            self.add(e);
            files.insert(id.clone());
        }
        id
    }

    fn into_json(self) -> Value {
        let Graph { mut entities, order } = self;
        let graph: Vec<Value> = order.iter().filter_map(|id| entities.remove(id)).collect();
        // `environment` and `sha256` (Process Run Crate) are Workflow Run terms: defined here rather than
        // through its context document, so the crate reads the same offline.
        json!({
            "@context": [
                "https://w3id.org/ro/crate/1.1/context",
                {
                    "environment": "https://w3id.org/ro/terms/workflow-run#environment",
                    "sha256": "https://w3id.org/ro/terms/workflow-run#sha256"
                }
            ],
            "@graph": graph
        })
    }
}

/// A media type for the formats twin steps exchange.
fn encoding(path: &Path) -> Option<&'static str> {
    Some(match path.extension()?.to_str()? {
        "nc" => "application/x-netcdf",
        "h5" | "hdf5" => "application/x-hdf5",
        "png" => "image/png",
        "csv" => "text/csv",
        "json" => "application/json",
        "md" => "text/markdown",
        "txt" => "text/plain",
        "yaml" | "yml" => "application/yaml",
        _ => return None,
    })
}

fn status(s: AttemptState) -> &'static str {
    match s {
        AttemptState::Succeeded => "http://schema.org/CompletedActionStatus",
        AttemptState::Running => "http://schema.org/ActiveActionStatus",
        _ => "http://schema.org/FailedActionStatus",
    }
}

/// The manifest of an attempt (`.twinflow/manifest.json`): argv, added environment,
/// inputs and outputs (paths in the attempt directory).
fn manifest(dir: &Path) -> Option<Value> {
    serde_json::from_str(&std::fs::read_to_string(dir.join(".twinflow/manifest.json")).ok()?).ok()
}

/// Where attempt `n` of a task ran: its recorded directory, or `out/` for the successful
/// one, or `attempt-N/` beside it.
fn attempt_dir(task: &TaskRow, a: &AttemptRow, last: u32) -> Option<PathBuf> {
    let dir = PathBuf::from(task.dir.as_ref()?);
    let base = if dir.file_name().is_some_and(|n| n == "out" || n.to_string_lossy().starts_with("attempt-")) {
        dir.parent()?.to_path_buf()
    } else {
        return Some(dir);
    };
    let candidate = if a.attempt == last && a.state == AttemptState::Succeeded {
        base.join("out")
    } else {
        base.join(format!("attempt-{}", a.attempt))
    };
    Some(if candidate.exists() { candidate } else { dir })
}

/// A path of the attempt directory as it is now: in `out/` once the attempt succeeded.
fn now_at(path: &str, attempt_dir: &Path, dir: &Path) -> PathBuf {
    let p = Path::new(path);
    match attempt_dir.to_str().and_then(|a| path.strip_prefix(a)) {
        Some(rest) => dir.join(rest.trim_start_matches('/')),
        None => p.to_path_buf(),
    }
}

/// Writes the RO-Crate of `run` to `dest`: a new (or empty) directory, or a `.zip` file.
pub fn ro_crate(runs_dir: &Path, run: &str, dest: &Path) -> Result<Exported, SessionError> {
    let (store, run) = super::open_run(runs_dir, run)?;
    let tasks = store.tasks(&run.id)?;
    let zip = dest.extension().is_some_and(|e| e == "zip");
    if !zip && dest.exists() && std::fs::read_dir(dest).map_err(io("reading", dest))?.next().is_some() {
        return Err(SessionError::Usage(format!(
            "`{}` exists and is not empty: name a new directory or a `.zip` file",
            dest.display()
        )));
    }
    if zip && dest.exists() {
        return Err(SessionError::Usage(format!("`{}` exists: the crate is not written over a file", dest.display())));
    }
    let staging = if zip {
        let parent = dest.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        std::fs::create_dir_all(parent).map_err(io("creating", parent))?;
        tempfile::Builder::new()
            .prefix(".twinflow-crate-")
            .tempdir_in(parent)
            .map_err(io("creating a directory in", parent))?
    } else {
        std::fs::create_dir_all(dest).map_err(io("creating", dest))?;
        tempfile::TempDir::new().map_err(io("creating a temporary directory for", dest))?
    };
    let root = if zip { staging.path().to_path_buf() } else { dest.to_path_buf() };

    let identifier = twinflow_contract::provenance::crate_id(&run.id);
    let mut g = Graph::default();
    let mut files = BTreeSet::new();
    // The workflow file, copied into the crate.
    let wf_src = PathBuf::from(&run.file);
    let wf_name =
        wf_src.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "workflow.yaml".into());
    let wf_id = format!("workflow/{wf_name}");
    std::fs::create_dir_all(root.join("workflow")).map_err(io("creating", &root))?;
    let copied = std::fs::copy(&wf_src, root.join(&wf_id)).is_ok();
    if !copied {
        tracing::warn!(file = %wf_src.display(), "the workflow file is gone: the crate describes it without a copy");
        std::fs::write(root.join(&wf_id), format!("# {} was not readable when the crate was made\n", wf_src.display()))
            .map_err(io("writing", &root))?;
    }

    // Steps, in the order their tasks were recorded; parameters from the run's settings.
    let mut steps: Vec<String> = vec![];
    // The attempts behind each task: its own, or, for a result reused from the cache, the
    // attempt of the earlier run that made it (named with that run). Steps with such an
    // attempt are the ones whose tools ran (a skipped step's did not).
    let mut ran: BTreeSet<String> = BTreeSet::new();
    let mut sources: Vec<(Option<String>, Vec<AttemptRow>)> = vec![];
    let runs_abs = std::fs::canonicalize(runs_dir).unwrap_or_else(|_| runs_dir.to_path_buf());
    let mut earlier_tasks: BTreeMap<String, Vec<TaskRow>> = BTreeMap::new();
    for t in &tasks {
        if !steps.contains(&t.step) {
            steps.push(t.step.clone());
        }
        let mut source = (None, store.attempts(&run.id, &t.task)?);
        if source.1.is_empty()
            && t.state == TaskState::Cached
            && let Some(dir) = &t.dir
            && let Some(other) = Path::new(dir)
                .strip_prefix(&runs_abs)
                .ok()
                .and_then(|r| r.components().next())
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .filter(|o| *o != run.id)
        {
            if !earlier_tasks.contains_key(&other) {
                earlier_tasks.insert(other.clone(), store.tasks(&other).unwrap_or_default());
            }
            if let Some(there) = earlier_tasks[&other].iter().find(|x| x.dir.as_deref() == Some(dir.as_str())) {
                let made: Vec<AttemptRow> = store
                    .attempts(&other, &there.task)?
                    .into_iter()
                    .filter(|a| a.state == AttemptState::Succeeded)
                    .collect();
                source = (Some(other), made);
            }
        }
        if !source.1.is_empty() {
            ran.insert(t.step.clone());
        }
        sources.push(source);
    }
    let params: Vec<(String, String)> = run
        .settings
        .params
        .iter()
        .filter_map(|p| p.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())))
        .collect();
    let formal: Vec<Value> = params.iter().map(|(k, _)| json!({ "@id": local_id("param", k) })).collect();
    // The steps whose tools ran here (the workflow file in the crate has them all).
    let step_ids: Vec<Value> =
        steps.iter().filter(|s| ran.contains(*s)).map(|s| json!({ "@id": local_id("step", s) })).collect();

    g.add(json!({
        "@id": "ro-crate-metadata.json",
        "@type": "CreativeWork",
        "conformsTo": [{ "@id": "https://w3id.org/ro/crate/1.1" }, { "@id": "https://w3id.org/workflowhub/workflow-ro-crate/1.0" }],
        "about": { "@id": "./" }
    }));
    let run_action = local_id("run", &run.id);
    g.add(json!({
        "@id": "./",
        "@type": "Dataset",
        "identifier": identifier,
        "name": format!("twinflow run {} of `{}`", run.id, run.workflow),
        "description": format!("Provenance of twinflow run {} of the workflow `{}` ({}): every task, attempt, command, environment, input and output.", run.id, run.workflow, run.file),
        "datePublished": jiff::Timestamp::now().to_string(),
        "license": { "@id": "https://spdx.org/licenses/CC-BY-4.0" },
        "conformsTo": [
            { "@id": "https://w3id.org/ro/wfrun/process/0.5" },
            { "@id": "https://w3id.org/ro/wfrun/workflow/0.5" },
            { "@id": "https://w3id.org/ro/wfrun/provenance/0.5" },
            { "@id": "https://w3id.org/workflowhub/workflow-ro-crate/1.0" }
        ],
        "mainEntity": { "@id": wf_id },
        "hasPart": [{ "@id": wf_id }],
        "mentions": [{ "@id": run_action }]
    }));
    for (uri, name, version) in [
        ("https://w3id.org/ro/wfrun/process/0.5", "Process Run Crate", "0.5"),
        ("https://w3id.org/ro/wfrun/workflow/0.5", "Workflow Run Crate", "0.5"),
        ("https://w3id.org/ro/wfrun/provenance/0.5", "Provenance Run Crate", "0.5"),
        ("https://w3id.org/workflowhub/workflow-ro-crate/1.0", "Workflow RO-Crate", "1.0"),
    ] {
        g.add(json!({ "@id": uri, "@type": "CreativeWork", "name": name, "version": version }));
    }
    g.add(json!({ "@id": "https://spdx.org/licenses/CC-BY-4.0", "@type": "CreativeWork", "name": "Creative Commons Attribution 4.0 International", "identifier": "CC-BY-4.0" }));
    g.add(json!({
        "@id": wf_id,
        "@type": ["File", "SoftwareSourceCode", "ComputationalWorkflow", "HowTo"],
        "name": run.workflow,
        "encodingFormat": "application/yaml",
        "programmingLanguage": { "@id": "#twinflow-language" },
        "input": formal,
        "output": [],
        "step": step_ids,
        "hasPart": steps.iter().filter(|s| ran.contains(*s)).map(|s| json!({ "@id": local_id("tool", s) })).collect::<Vec<_>>()
    }));
    g.add(json!({
        "@id": "#twinflow-language",
        "@type": "ComputerLanguage",
        "name": "twinflow workflow format",
        "alternateName": "twinflow",
        "version": "1",
        "url": { "@id": "https://github.com/twinflow/twinflow/blob/main/docs/workflow-format.md" }
    }));
    for (k, v) in &params {
        g.add(json!({
            "@id": local_id("param", k),
            "@type": "FormalParameter",
            "conformsTo": { "@id": "https://bioschemas.org/profiles/FormalParameter/1.0-RELEASE" },
            "name": k,
            "additionalType": "Text",
            "valueRequired": false
        }));
        g.add(json!({ "@id": local_id("pv", k), "@type": "PropertyValue", "name": k, "value": v, "exampleOfWork": { "@id": local_id("param", k) } }));
    }
    for (pos, s) in steps.iter().enumerate() {
        if ran.contains(s) {
            g.add(json!({ "@id": local_id("step", s), "@type": "HowToStep", "name": s, "position": pos.to_string(), "workExample": { "@id": local_id("tool", s) } }));
            g.add(json!({ "@id": local_id("tool", s), "@type": "SoftwareApplication", "name": s }));
        }
    }

    // The software that ran.
    let mut software = vec![
        json!({ "@id": "#twinflow", "@type": "SoftwareApplication", "name": "twinflow", "version": env!("CARGO_PKG_VERSION"), "url": { "@id": "https://github.com/twinflow/twinflow" } }),
    ];
    let kernel = crate::run::job::kernel_binary();
    if let Some(info) = std::process::Command::new(&kernel).arg("info").output().ok().filter(|o| o.status.success()) {
        let text = String::from_utf8_lossy(&info.stdout).to_string();
        let first = text.lines().next().unwrap_or("twin-kernel").to_string();
        let mpi = text.lines().find_map(|l| l.strip_prefix("mpi: ")).unwrap_or("unknown").to_string();
        software.push(json!({ "@id": "#twin-kernel", "@type": "SoftwareApplication", "name": "twin-kernel", "version": first.trim_start_matches("twin-kernel ").to_string(), "description": format!("science kernels; built with MPI: {mpi}") }));
    }
    for (id, name, argv) in [
        ("#mpi", "MPI (mpiexec)", vec!["mpiexec", "--version"]),
        ("#hdf5", "HDF5", vec!["h5dump", "--version"]),
        ("#netcdf", "NetCDF-C", vec!["nc-config", "--version"]),
    ] {
        if let Some(v) = version_of(&argv) {
            software.push(json!({ "@id": id, "@type": "SoftwareApplication", "name": name, "version": v }));
        }
    }
    let software_ids: Vec<Value> = software.iter().map(|s| json!({ "@id": s["@id"] })).collect();
    for s in software {
        g.add(s);
    }

    // Tasks and their attempts.
    let (mut controls, mut n_attempts, mut results, mut not_run) = (vec![], 0usize, vec![], vec![]);
    for (t, (origin, attempts)) in tasks.iter().zip(&sources) {
        if attempts.is_empty() {
            // Skipped or never started: no tool ran for it.
            not_run.push(format!("{} ({})", t.task, t.state));
            continue;
        }
        let control = local_id("control", &t.task);
        let mut objects = vec![];
        for a in attempts {
            n_attempts += 1;
            let action = local_id("attempt", &format!("{}-{}", t.task, a.attempt));
            let of_run = origin.as_ref().map(|o| format!(" (run {o}, reused from the cache)")).unwrap_or_default();
            let mut e = json!({
                "@id": action,
                "@type": "CreateAction",
                "name": format!("{} attempt {}{of_run}", t.task, a.attempt),
                "instrument": { "@id": local_id("tool", &t.step) },
                "actionStatus": status(a.state),
            });
            if let Some(s) = time(a.started_at) {
                e["startTime"] = json!(s);
            }
            if let Some(s) = time(a.finished_at) {
                e["endTime"] = json!(s);
            }
            let detail = a.detail.clone().unwrap_or_default();
            match (a.state, a.exit_code) {
                (AttemptState::Succeeded, _) => {}
                (_, Some(code)) => {
                    e["error"] = json!(format!(
                        "exit status {code}{}",
                        if detail.is_empty() { String::new() } else { format!(": {detail}") }
                    ))
                }
                _ if !detail.is_empty() => e["error"] = json!(detail),
                _ => {}
            }
            let last = if origin.is_some() { a.attempt } else { t.attempts };
            if let Some(dir) = attempt_dir(t, a, last)
                && let Some(m) = manifest(&dir)
            {
                let adir = m["env"]["TWINFLOW_STEP_DIR"].as_str().map(PathBuf::from).unwrap_or_else(|| dir.clone());
                if let Some(argv) = m["argv"].as_array() {
                    let words: Vec<&str> = argv.iter().filter_map(Value::as_str).collect();
                    e["description"] =
                        json!(format!("command (argv): {}", serde_json::to_string(&words).unwrap_or_default()));
                }
                if let Some(env) = m["env"].as_object() {
                    let mut ids = vec![];
                    for (k, v) in env {
                        let id = local_id("env", &format!("{}-{}-{k}", t.task, a.attempt));
                        g.add(json!({ "@id": id, "@type": "PropertyValue", "name": k, "value": v.as_str().unwrap_or_default() }));
                        ids.push(json!({ "@id": id }));
                    }
                    e["environment"] = json!(ids);
                }
                let mut list = |key: &str| -> Vec<Value> {
                    let mut ids = vec![];
                    if let Some(map) = m[key].as_object() {
                        for v in map.values() {
                            let paths: Vec<&str> = match v {
                                Value::String(s) => vec![s.as_str()],
                                Value::Array(xs) => xs.iter().filter_map(Value::as_str).collect(),
                                _ => vec![],
                            };
                            for p in paths {
                                let path = now_at(p, &adir, &dir);
                                if path.is_absolute() && (key == "outputs" || path.exists()) {
                                    ids.push(json!({ "@id": g.file(&path, &mut files) }));
                                }
                            }
                        }
                    }
                    ids
                };
                let (ins, outs) = (list("inputs"), list("outputs"));
                if a.state == AttemptState::Succeeded {
                    results.extend(outs.iter().cloned());
                }
                e["object"] = json!(ins);
                e["result"] = json!(outs);
            }
            g.add(e);
            objects.push(json!({ "@id": action }));
        }
        let mut c = json!({
            "@id": control,
            "@type": "ControlAction",
            "name": format!("orchestrate {}", t.task),
            "instrument": { "@id": local_id("step", &t.step) },
            "object": objects,
            "actionStatus": match t.state {
                TaskState::Succeeded | TaskState::Cached | TaskState::Skipped => "http://schema.org/CompletedActionStatus",
                TaskState::Running | TaskState::Pending => "http://schema.org/ActiveActionStatus",
                _ => "http://schema.org/FailedActionStatus",
            },
        });
        let mut note = vec![format!("state: {}", t.state)];
        if let Some(l) = &t.label {
            note.push(format!("scatter values: {l}"));
        }
        if t.state == TaskState::Cached
            && let Some(d) = &t.dir
        {
            note.push(format!("result reused from `{d}`"));
        }
        if let Some(m) = &t.message {
            note.push(m.lines().next().unwrap_or_default().to_string());
        }
        c["description"] = json!(note.join("; "));
        controls.push(json!({ "@id": control }));
        g.add(c);
    }
    let run_status = match run.state {
        RunState::Succeeded => "http://schema.org/CompletedActionStatus",
        RunState::Running => "http://schema.org/ActiveActionStatus",
        _ => "http://schema.org/FailedActionStatus",
    };
    let param_values: Vec<Value> = params.iter().map(|(k, _)| json!({ "@id": local_id("pv", k) })).collect();
    let mut ra = json!({
        "@id": run_action,
        "@type": "CreateAction",
        "name": format!("run {} of `{}`", run.id, run.workflow),
        "instrument": { "@id": wf_id },
        "startTime": time(Some(run.created_at)),
        "endTime": time(Some(run.updated_at)),
        "actionStatus": run_status,
        "object": param_values,
        "result": results,
        "description": format!(
            "backend: {:?}{}; settings: {}; tasks that ran no attempt in this run: {}",
            run.settings.backend,
            run.settings.profile.as_ref().map(|p| format!(", profile {p}")).unwrap_or_default(),
            run.settings.to_json(),
            if not_run.is_empty() { "none".to_string() } else { not_run.join(", ") }
        ),
    });
    if run.state == RunState::Failed {
        ra["error"] = json!("a task failed; see the ControlActions of the failed tasks");
    }
    g.add(ra);
    g.add(json!({
        "@id": local_id("organize", &run.id),
        "@type": "OrganizeAction",
        "name": format!("twinflow orchestrating run {}", run.id),
        "instrument": { "@id": "#twinflow" },
        "object": controls,
        "result": { "@id": run_action },
        "startTime": time(Some(run.created_at)),
        "endTime": time(Some(run.updated_at)),
        "actionStatus": run_status,
        "mentions": software_ids,
    }));
    let n_files = files.len();
    // Every data entity is part of the crate (by URI: the files stay in the run directory).
    if let Some(root_ds) = g.entities.get_mut("./") {
        let mut parts = vec![json!({ "@id": wf_id })];
        parts.extend(files.iter().map(|f| json!({ "@id": f })));
        root_ds["hasPart"] = json!(parts);
    }
    let metadata = serde_json::to_string_pretty(&g.into_json()).map_err(|e| SessionError::Usage(e.to_string()))?;
    std::fs::write(root.join("ro-crate-metadata.json"), metadata).map_err(io("writing", &root))?;
    if zip {
        write_zip(&root, dest)?;
    }
    Ok(Exported { path: dest.to_path_buf(), identifier, tasks: tasks.len(), attempts: n_attempts, files: n_files })
}

/// Zips the crate directory `root` into `dest` (written beside it, then renamed).
fn write_zip(root: &Path, dest: &Path) -> Result<(), SessionError> {
    let partial = dest.with_extension("zip.partial");
    let file = std::fs::File::create(&partial).map_err(io("creating", &partial))?;
    let mut z = zip::ZipWriter::new(file);
    let opts = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let mut entries: Vec<PathBuf> =
            std::fs::read_dir(&d).map_err(io("reading", &d))?.filter_map(|e| e.ok().map(|e| e.path())).collect();
        entries.sort();
        for p in entries {
            let rel = p.strip_prefix(root).unwrap_or(&p).to_string_lossy().replace('\\', "/");
            if p.is_dir() {
                stack.push(p);
            } else {
                z.start_file(rel, opts).map_err(|e| SessionError::Io {
                    action: "zipping",
                    path: p.clone(),
                    source: e.into(),
                })?;
                let bytes = std::fs::read(&p).map_err(io("reading", &p))?;
                z.write_all(&bytes).map_err(io("writing", &partial))?;
            }
        }
    }
    z.finish().map_err(|e| SessionError::Io { action: "finishing", path: partial.clone(), source: e.into() })?;
    std::fs::rename(&partial, dest).map_err(io("renaming", &partial))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_uris_are_safe() {
        assert_eq!(local_id("attempt", "sim[3]-1"), "#attempt-sim_3_-1");
        assert_eq!(file_uri(Path::new("/r/a b/x.nc")), "file:///r/a%20b/x.nc");
        assert_eq!(
            now_at("/r/s/attempt-1/x.nc", Path::new("/r/s/attempt-1"), Path::new("/r/s/out")),
            PathBuf::from("/r/s/out/x.nc")
        );
    }
}
