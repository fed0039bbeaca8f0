//! Results easy to find: the root workflow's `outputs:` resolved against a run's results,
//! and every task's declared outputs at their real paths (an earlier run's `out/` for a
//! task reused from the cache).
//!
//! The end of `twinflow run`, `twinflow outputs RUN` and `twinflow status --json` read
//! them. The real paths of a finished task's outputs come from its result directory's
//! manifest (`.twinflow/manifest.json` records each output's path in the attempt
//! directory, which became `out/`), so they are found without the workflow file, which may
//! have changed since.

use std::cell::RefCell;
use std::path::{Path, PathBuf};

use indexmap::IndexMap;

use super::scope::{Mode, Results, TaskScope};
use crate::model::Ctx;
use crate::plan::Plan;

/// One entry of the root workflow's `outputs:`, resolved.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RootOutput {
    /// Its name.
    pub name: String,
    /// Its value (a path, a value, or a list of them), when it could be resolved.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<serde_json::Value>,
    /// Why it could not (a step it reads was skipped, failed or did not run).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl RootOutput {
    /// The value as text: a path, or one path per line for a list.
    pub fn text(&self) -> String {
        match &self.value {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(serde_json::Value::Array(items)) => items
                .iter()
                .map(|i| i.as_str().map_or_else(|| i.to_string(), str::to_string))
                .collect::<Vec<_>>()
                .join("\n"),
            Some(v) => v.to_string(),
            None => format!("(not available: {})", self.error.as_deref().unwrap_or("unknown")),
        }
    }
}

/// The root workflow's `outputs:` evaluated against `results` (what the run's tasks
/// produced), in the order written.
pub fn root_outputs(plan: &Plan, results: Results<'_>, run_id: &str, run_dir: &Path) -> Vec<RootOutput> {
    let wf = &*plan.workflow;
    let Some(root) = wf.namespaces.first() else { return vec![] };
    let Some(node) = plan.graph.node_weights().next().copied() else { return vec![] };
    let used = RefCell::new(vec![]);
    let scope = TaskScope {
        plan,
        node,
        results,
        attempt_dir: run_dir,
        run_id,
        run_dir,
        mode: Mode::Exec,
        ns: 0,
        ctx: Ctx::Namespace,
        used: &used,
    };
    root.outputs
        .iter()
        .map(|(name, t)| match t.tpl.eval(&scope) {
            Ok(v) => RootOutput { name: name.clone(), value: Some(v.to_json()), error: None },
            Err(e) => RootOutput { name: name.clone(), value: None, error: Some(e.message) },
        })
        .collect()
}

/// The declared outputs (`out:` and `values:` files) of a task whose result directory is
/// `dir`, at their real paths, read from the manifest there. Empty when the directory has no
/// readable manifest (it was deleted).
pub fn task_outputs(dir: &Path) -> IndexMap<String, PathBuf> {
    let mut out = IndexMap::new();
    let Ok(text) = std::fs::read_to_string(super::attempt::meta_dir(dir).join("manifest.json")) else {
        return out;
    };
    let Ok(m) = serde_json::from_str::<serde_json::Value>(&text) else { return out };
    // The attempt directory the paths were written for (the result directory was renamed
    // from it).
    let attempt =
        m.get("env").and_then(|e| e.get(twinflow_contract::env::STEP_DIR)).and_then(|v| v.as_str()).map(PathBuf::from);
    if let Some(map) = m.get("outputs").and_then(|o| o.as_object()) {
        for (k, v) in map {
            let Some(p) = v.as_str().map(PathBuf::from) else { continue };
            let real = match attempt.as_ref().and_then(|a| p.strip_prefix(a).ok()) {
                Some(rel) => dir.join(rel),
                None => p,
            };
            out.insert(k.clone(), real);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_are_found_where_the_attempt_directory_was_renamed_to() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("steps/sim/out");
        std::fs::create_dir_all(out.join(".twinflow")).unwrap();
        let attempt = tmp.path().join("steps/sim/attempt-2");
        let m = serde_json::json!({
            "env": { "TWINFLOW_STEP_DIR": attempt.display().to_string() },
            "outputs": { "r": attempt.join("r.txt").display().to_string(), "abs": "/elsewhere/x" },
        });
        std::fs::write(out.join(".twinflow/manifest.json"), m.to_string()).unwrap();
        let o = task_outputs(&out);
        assert_eq!(o.get("r"), Some(&out.join("r.txt")));
        assert_eq!(o.get("abs"), Some(&PathBuf::from("/elsewhere/x")));
        assert!(task_outputs(&tmp.path().join("gone")).is_empty());
    }
}
