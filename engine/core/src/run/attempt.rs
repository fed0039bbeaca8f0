//! Attempt records: what each attempt leaves in its directory, and how a finished attempt
//! becomes a result.
//!
//! Each attempt runs in `steps/STEP[/MEMBER]/attempt-N/`; its `.twinflow/` keeps
//! `manifest.json` (exact argv, the variables it adds, inputs, outputs, cache components),
//! `stdout`, `stderr` and `status.json`. A successful attempt is renamed to `out/` before
//! its success is recorded, so the final name only ever holds a complete result.

use std::path::{Path, PathBuf};

use indexmap::IndexMap;

use super::cache::Components;
use super::job::ResolvedTask;
use super::{RunError, io};
use crate::execute::Outcome;
use crate::expr::Value;
use crate::model::Step;

/// Name of an attempt's directory.
pub fn attempt_dir(task_dir: &Path, attempt: u32) -> PathBuf {
    task_dir.join(format!("attempt-{attempt}"))
}

/// The engine's files of an attempt (`ATTEMPT/.twinflow`).
pub fn meta_dir(attempt_dir: &Path) -> PathBuf {
    attempt_dir.join(".twinflow")
}

/// Creates the attempt directory `adir` (and its task directory when missing), empty:
/// leftovers of an attempt a killed engine started are removed first. One `mkdir` in the
/// common case, where the task directory exists and the attempt directory does not.
pub fn fresh_attempt_dir(adir: &Path) -> Result<(), RunError> {
    match std::fs::create_dir(adir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(tdir) = adir.parent() {
                std::fs::create_dir_all(tdir).map_err(io("creating", tdir))?;
            }
            std::fs::create_dir(adir).map_err(io("creating", adir))
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            std::fs::remove_dir_all(adir).map_err(io("removing", adir))?;
            std::fs::create_dir(adir).map_err(io("creating", adir))
        }
        Err(e) => Err(io("creating", adir)(e)),
    }
}

/// Prepares a fresh attempt directory for `exec`: the directory, its `.twinflow/`, the
/// parent directories of nested outputs, and the manifest.
pub fn prepare(
    adir: &Path,
    name: &str,
    run_id: &str,
    env_file: &str,
    exec: &ResolvedTask,
    comps: &Components,
) -> Result<(), RunError> {
    fresh_attempt_dir(adir)?;
    let meta = meta_dir(adir);
    std::fs::create_dir(&meta).map_err(io("creating", &meta))?;
    for p in exec.outputs.values() {
        if let Some(parent) = p.parent()
            && parent != adir
        {
            std::fs::create_dir_all(parent).map_err(io("creating", parent))?;
        }
    }
    write_manifest(&meta, name, run_id, env_file, exec, comps).map_err(io("writing", &meta))
}

/// Concludes a finished attempt: writes `status.json`, then checks that a successful exit
/// left every declared output and reads the value outputs. Returns the values, or what is
/// wrong (the attempt failed).
pub fn conclude(adir: &Path, step: &Step, outcome: &Outcome) -> Result<IndexMap<String, Value>, String> {
    write_status(adir, outcome);
    if !outcome.success() {
        return Err(outcome.describe());
    }
    let missing: Vec<String> = step
        .outputs
        .iter()
        .chain(step.values.iter())
        .filter(|(_, rel)| !adir.join(rel).exists())
        .map(|(k, rel)| format!("`{k}` ({rel})"))
        .collect();
    if !missing.is_empty() {
        return Err(format!("exited 0 but did not create declared output {}", missing.join(", ")));
    }
    let mut values = IndexMap::new();
    for (k, rel) in &step.values {
        let v = read_value(&adir.join(rel)).map_err(|e| format!("value output `{k}`: {e}"))?;
        values.insert(k.clone(), v);
    }
    Ok(values)
}

/// Writes `.twinflow/status.json` of an attempt that ended.
pub fn write_status(adir: &Path, outcome: &Outcome) {
    let _ = std::fs::write(meta_dir(adir).join("status.json"), status_json(outcome));
}

/// What a service has made of its declared outputs in `out_dir` (where they live across its
/// attempts): the values once every output and value file exists; `Err(None)` while one is
/// missing (not ready yet), `Err(Some(why))` when a value file cannot be read.
pub fn service_outputs(out_dir: &Path, step: &Step) -> Result<IndexMap<String, Value>, Option<String>> {
    if step.outputs.values().chain(step.values.values()).any(|rel| !out_dir.join(rel).exists()) {
        return Err(None);
    }
    let mut values = IndexMap::new();
    for (k, rel) in &step.values {
        let v = read_value(&out_dir.join(rel)).map_err(|e| Some(format!("value output `{k}`: {e}")))?;
        values.insert(k.clone(), v);
    }
    Ok(values)
}

/// Renames a successful attempt directory to `out/` beside it (replacing the result of an
/// earlier attempt) and returns the new path.
pub fn promote(adir: &Path) -> Result<PathBuf, RunError> {
    let tdir = adir.parent().map(Path::to_path_buf).unwrap_or_default();
    let out = tdir.join("out");
    if std::fs::rename(adir, &out).is_err() {
        // A result of an earlier attempt is in the way (renaming over a non-empty directory
        // fails): replace it.
        if out.exists() {
            std::fs::remove_dir_all(&out).map_err(io("removing", &out))?;
        }
        std::fs::rename(adir, &out).map_err(io("renaming", adir))?;
    }
    Ok(out)
}

/// Value outputs as stored in the run database (a JSON object).
pub fn values_json(v: &IndexMap<String, Value>) -> String {
    let m: serde_json::Map<String, serde_json::Value> = v.iter().map(|(k, v)| (k.clone(), v.to_json())).collect();
    serde_json::Value::Object(m).to_string()
}

/// Parses [`values_json`]; anything else is no values.
pub fn parse_values(s: Option<&str>) -> IndexMap<String, Value> {
    let Some(s) = s else { return IndexMap::new() };
    match serde_json::from_str::<serde_json::Value>(s) {
        Ok(serde_json::Value::Object(m)) => {
            m.iter().filter_map(|(k, v)| Value::from_json(v).map(|v| (k.clone(), v))).collect()
        }
        _ => IndexMap::new(),
    }
}

/// Why a value output could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ValueError {
    /// Value outputs are small by design (they are kept in the run database).
    #[error("`{}` is larger than 1 MiB", .0.display())]
    TooLarge(PathBuf),
    /// It could not be read.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Reads a value output: JSON if it parses as JSON (scalar or list), else trimmed text.
fn read_value(p: &Path) -> Result<Value, ValueError> {
    let meta = std::fs::metadata(p)?;
    if meta.len() > 1 << 20 {
        return Err(ValueError::TooLarge(p.to_path_buf()));
    }
    let text = std::fs::read_to_string(p)?;
    let t = text.trim();
    Ok(serde_json::from_str::<serde_json::Value>(t)
        .ok()
        .and_then(|j| Value::from_json(&j))
        .unwrap_or_else(|| Value::Str(t.to_string())))
}

fn status_json(o: &Outcome) -> String {
    let ms = |t: Option<std::time::SystemTime>| {
        t.and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).map(|d| d.as_millis() as u64)
    };
    let (spawn_error, failure) = (o.spawn_error(), o.failure());
    let st = Status {
        exit_code: o.exit_code(),
        signal: o.signal(),
        timed_out: o.timed_out(),
        cancelled: o.is_cancelled(),
        spawn_error: spawn_error.as_deref(),
        failure: failure.as_deref(),
        started_ms: ms(o.started),
        finished_ms: ms(o.finished),
        seconds: o.duration().as_secs_f64(),
        cpu_seconds: o.usage.and_then(|u| u.cpu_seconds),
        max_rss_bytes: o.usage.and_then(|u| u.max_rss_bytes),
    };
    serde_json::to_string(&st).unwrap_or_default()
}

/// What `.twinflow/status.json` holds.
#[derive(serde::Serialize)]
struct Status<'a> {
    exit_code: Option<i32>,
    signal: Option<i32>,
    timed_out: bool,
    cancelled: bool,
    spawn_error: Option<&'a str>,
    failure: Option<&'a str>,
    started_ms: Option<u64>,
    finished_ms: Option<u64>,
    seconds: f64,
    /// CPU time (user + system), when the backend measured it.
    #[serde(skip_serializing_if = "Option::is_none")]
    cpu_seconds: Option<f64>,
    /// Peak resident set size, when measured.
    #[serde(skip_serializing_if = "Option::is_none")]
    max_rss_bytes: Option<u64>,
}

/// Reads the cache components an attempt's manifest recorded when it started (a resumed
/// run needs them for an attempt it follows).
pub fn manifest_components(adir: &Path) -> Option<Components> {
    let m = std::fs::read_to_string(meta_dir(adir).join("manifest.json")).ok()?;
    let m: serde_json::Value = serde_json::from_str(&m).ok()?;
    serde_json::from_value(m.get("cache")?.clone()).ok()
}

/// Name patterns of variables the environment snapshot leaves out by default: their values
/// look like credentials. `*` matches any run of characters; names are compared ignoring case.
pub const SECRET_PATTERNS: &[&str] = &["*TOKEN*", "*SECRET*", "*PASSWORD*", "*PASSWD*", "*KEY*", "*CREDENTIAL*"];

/// What the environment snapshot of a run records (`--env-exclude`, `--no-env-snapshot`).
#[derive(Debug, Clone)]
pub struct EnvSnapshot {
    /// Write a snapshot at all.
    pub enabled: bool,
    /// Patterns of names to leave out besides [`SECRET_PATTERNS`].
    pub exclude: Vec<String>,
}

impl Default for EnvSnapshot {
    fn default() -> Self {
        Self { enabled: true, exclude: vec![] }
    }
}

impl EnvSnapshot {
    /// Whether the variable `name` is left out of the snapshot.
    pub fn leaves_out(&self, name: &str) -> bool {
        SECRET_PATTERNS.iter().copied().chain(self.exclude.iter().map(String::as_str)).any(|p| glob_match(p, name))
    }
}

/// Shell-style matching of a variable name (`*KEY*`, `AWS_*`), ignoring case; a pattern
/// that is not valid glob syntax matches only itself.
fn glob_match(pattern: &str, name: &str) -> bool {
    let opts = glob::MatchOptions { case_sensitive: false, ..Default::default() };
    match glob::Pattern::new(pattern) {
        Ok(p) => p.matches_with(name, opts),
        Err(_) => pattern.eq_ignore_ascii_case(name),
    }
}

/// What an `env-HASH.json` snapshot holds.
#[derive(serde::Serialize)]
struct EnvFile<'a> {
    /// Every inherited variable but those left out, with its value.
    variables: std::collections::BTreeMap<String, String>,
    /// The names (never the values) of the variables left out.
    left_out: Vec<String>,
    /// The patterns they matched.
    patterns: Vec<&'a str>,
}

/// Writes the environment the engine passes on to every step (its own) to
/// `env-HASH.json` in the run directory, once per distinct environment, readable by the
/// owner only, and without the variables `snap` leaves out (names that look like
/// credentials: their names are listed, their values never written). Returns the file
/// name (empty when `snap` is disabled: no file); manifests refer to it, so each attempt's
/// exact environment is that file, the left-out variables and the manifest's `env`.
pub fn snapshot_environment(run_dir: &Path, snap: &EnvSnapshot) -> std::io::Result<String> {
    if !snap.enabled {
        return Ok(String::new());
    }
    let mut file = EnvFile {
        variables: Default::default(),
        left_out: vec![],
        patterns: SECRET_PATTERNS.iter().copied().chain(snap.exclude.iter().map(String::as_str)).collect(),
    };
    for (k, v) in std::env::vars_os() {
        let k = k.to_string_lossy().into_owned();
        if snap.leaves_out(&k) {
            file.left_out.push(k);
        } else {
            file.variables.insert(k, v.to_string_lossy().into_owned());
        }
    }
    file.left_out.sort();
    let text = serde_json::to_string_pretty(&file)?;
    let name = format!("env-{}.json", &blake3::hash(text.as_bytes()).to_hex()[..16]);
    write_owner_only(run_dir, &name, text.as_bytes())?;
    Ok(name)
}

/// Writes `dir/name` (unless it exists) readable by the owner only, through a temporary
/// file and a rename.
fn write_owner_only(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join(name);
    if !path.exists() {
        let tmp = dir.join(format!("{name}.partial"));
        let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
        f.write_all(bytes)?;
        std::fs::rename(&tmp, &path)?;
    }
    Ok(())
}

/// Writes `.twinflow/manifest.json`: the exact argv and environment of the attempt (the
/// variables it adds, and the run directory's snapshot of what it inherits), its resolved
/// inputs and outputs, and its cache components (one file, to keep the per-task file count
/// low: inode creation dominates the engine's cost for very short tasks).
fn write_manifest(
    meta: &Path,
    name: &str,
    run_id: &str,
    env_file: &str,
    r: &ResolvedTask,
    c: &Components,
) -> std::io::Result<()> {
    let m = Manifest {
        task: name,
        run_id,
        argv: &r.argv,
        env: &r.env,
        inherited_env: (!env_file.is_empty()).then_some(env_file),
        inputs: &r.inputs,
        outputs: &r.outputs,
        cache: c,
    };
    std::fs::write(meta.join("manifest.json"), serde_json::to_vec_pretty(&m)?)
}

/// What `.twinflow/manifest.json` holds, serialized straight from the attempt (no
/// intermediate JSON tree: it is written for every attempt).
#[derive(serde::Serialize)]
struct Manifest<'a> {
    task: &'a str,
    run_id: &'a str,
    argv: &'a [String],
    #[serde(serialize_with = "ser_pairs")]
    env: &'a [(String, String)],
    inherited_env: Option<&'a str>,
    #[serde(serialize_with = "ser_values")]
    inputs: &'a IndexMap<String, Value>,
    #[serde(serialize_with = "ser_paths")]
    outputs: &'a IndexMap<String, PathBuf>,
    cache: &'a Components,
}

fn ser_pairs<S: serde::Serializer>(v: &&[(String, String)], s: S) -> Result<S::Ok, S::Error> {
    s.collect_map(v.iter().map(|(k, v)| (k, v)))
}

fn ser_values<S: serde::Serializer>(v: &&IndexMap<String, Value>, s: S) -> Result<S::Ok, S::Error> {
    s.collect_map(v.iter().map(|(k, v)| (k, v.to_json())))
}

fn ser_paths<S: serde::Serializer>(v: &&IndexMap<String, PathBuf>, s: S) -> Result<S::Ok, S::Error> {
    s.collect_map(v.iter().map(|(k, p)| (k, p.display().to_string())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_look_like_secrets_are_left_out_and_the_list_is_configurable() {
        let snap = EnvSnapshot { enabled: true, exclude: vec!["AWS_*".into(), "exact_name".into()] };
        for name in
            ["GITHUB_TOKEN", "my_secret", "DB_PASSWORD", "SSH_KEY_FILE", "apikey", "AWS_REGION", "EXACT_NAME", "PASSWD"]
        {
            assert!(snap.leaves_out(name), "{name} is recorded");
        }
        for name in ["PATH", "HOME", "SLURM_JOB_ID", "EXACT_NAME_2", "OMP_NUM_THREADS", "TOKE"] {
            assert!(!snap.leaves_out(name), "{name} is left out");
        }
        assert!(glob_match("[oops", "[OOPS") && !glob_match("[oops", "OOPS"), "an invalid pattern matches itself");
    }

    #[test]
    fn a_fresh_attempt_directory_is_created_with_its_task_directory_and_replaces_leftovers() {
        let tmp = tempfile::tempdir().unwrap();
        // First attempt of a scatter member: the task directory does not exist yet.
        let adir = tmp.path().join("steps/member/7/attempt-1");
        fresh_attempt_dir(&adir).unwrap();
        assert!(adir.is_dir());
        // Leftovers of an attempt a killed engine started are removed, not reused.
        std::fs::create_dir(adir.join(".twinflow")).unwrap();
        std::fs::write(adir.join("half-written.nc"), b"partial").unwrap();
        fresh_attempt_dir(&adir).unwrap();
        assert_eq!(std::fs::read_dir(&adir).unwrap().count(), 0, "leftovers survived");
        // A file where the directory should be is an error naming the path, not a panic.
        let blocked = tmp.path().join("steps/other");
        std::fs::create_dir_all(tmp.path().join("steps")).unwrap();
        std::fs::write(&blocked, b"").unwrap();
        let err = fresh_attempt_dir(&blocked.join("attempt-1")).unwrap_err().to_string();
        assert!(err.contains("steps/other"), "{err}");
    }

    #[test]
    fn promote_replaces_the_result_of_an_earlier_attempt() {
        let tmp = tempfile::tempdir().unwrap();
        let old = tmp.path().join("out");
        std::fs::create_dir(&old).unwrap();
        std::fs::write(old.join("stale.nc"), b"old").unwrap();
        let adir = tmp.path().join("attempt-2");
        std::fs::create_dir(&adir).unwrap();
        std::fs::write(adir.join("new.nc"), b"new").unwrap();
        let out = promote(&adir).unwrap();
        assert_eq!(out, old);
        assert!(out.join("new.nc").is_file() && !out.join("stale.nc").exists());
        assert!(!adir.exists());
    }
}
