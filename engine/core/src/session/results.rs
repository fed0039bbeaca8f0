//! `twinflow outputs RUN`: where a run's results are. The root workflow's `outputs:`
//! resolved against the run's results, and each task's declared outputs at their real paths
//! (an earlier run's directory for a task reused from the cache).

use std::path::Path;

use indexmap::IndexMap;
use serde::Serialize;

use super::{SessionError, compile, load, overrides};
use crate::events::TaskState;
use crate::run::outputs::{RootOutput, root_outputs, task_outputs};
use crate::run::scope::{CycleData, Results, TaskResult};
use crate::state::{RunRow, TaskRow};

/// A task's results.
#[derive(Debug, Clone, Serialize)]
pub struct TaskResults {
    /// Task name.
    pub task: String,
    /// Its state.
    pub state: TaskState,
    /// Its result directory.
    pub dir: String,
    /// The earlier run whose directory holds the result (a task reused from the cache).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reused_from: Option<String>,
    /// Declared outputs (`out:` and `values:` files) at their real paths, and value outputs.
    pub outputs: IndexMap<String, serde_json::Value>,
    /// The result directory no longer exists (deleted by hand): its outputs are gone.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub gone: bool,
}

/// What `twinflow outputs RUN` shows.
#[derive(Debug, Clone, Serialize)]
pub struct RunResults {
    /// The run.
    pub run: RunRow,
    /// The root workflow's `outputs:`, resolved.
    pub outputs: Vec<RootOutput>,
    /// Why they could not be resolved (the workflow file changed or is gone).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outputs_error: Option<String>,
    /// The tasks that succeeded or were reused, with their outputs.
    pub tasks: Vec<TaskResults>,
}

/// A task's declared outputs at their real paths and its value outputs, as a JSON object
/// (`status --json`'s `outputs`).
pub fn task_outputs_json(row: &TaskRow) -> IndexMap<String, serde_json::Value> {
    let mut out: IndexMap<String, serde_json::Value> = IndexMap::new();
    if let Some(dir) = &row.dir
        && row.state.is_done_ok()
    {
        for (k, p) in task_outputs(Path::new(dir)) {
            out.insert(k, p.display().to_string().into());
        }
    }
    let values = crate::run::attempt::parse_values(row.outputs.as_deref());
    for (k, v) in values {
        out.insert(k, v.to_json());
    }
    out
}

/// The run (first path component under `runs_dir`) whose directory holds `dir`, when it is
/// not `run`.
fn reused_from(runs_dir: &Path, run: &str, dir: &str) -> Option<String> {
    let abs = std::fs::canonicalize(runs_dir).unwrap_or_else(|_| runs_dir.to_path_buf());
    let rel = Path::new(dir).strip_prefix(&abs).ok()?;
    let first = rel.components().next()?.as_os_str().to_string_lossy().to_string();
    (first != run).then_some(first)
}

/// `twinflow outputs RUN`.
pub fn outputs(runs_dir: &Path, run: &str) -> Result<RunResults, SessionError> {
    let (store, run) = super::open_run(runs_dir, run)?;
    let rows = store.tasks(&run.id)?;
    let tasks: Vec<TaskResults> = rows
        .iter()
        .filter(|t| t.state.is_done_ok() && t.dir.is_some())
        .map(|t| {
            let dir = t.dir.clone().unwrap_or_default();
            TaskResults {
                task: t.task.clone(),
                state: t.state,
                reused_from: reused_from(runs_dir, &run.id, &dir),
                gone: !Path::new(&dir).is_dir(),
                dir,
                outputs: task_outputs_json(t),
            }
        })
        .collect();
    let (outputs, outputs_error) = match resolve_root(&run, &rows, runs_dir) {
        Ok(o) => (o, None),
        Err(e) => (vec![], Some(e)),
    };
    Ok(RunResults { run, outputs, outputs_error, tasks })
}

/// The root `outputs:` of the run's workflow file (as it is now, with the run's `-p`/`-i`)
/// against the results the run recorded (its last cycle's, in a cycling run).
fn resolve_root(run: &RunRow, rows: &[TaskRow], runs_dir: &Path) -> Result<Vec<RootOutput>, String> {
    let file = Path::new(&run.file);
    let o = overrides(&run.settings.params, &run.settings.inputs).map_err(|e| e.to_string())?;
    let wf = load(file, &o, None).map_err(|e| format!("cannot load `{}`: {e}", file.display()))?;
    if wf.namespaces.first().is_none_or(|n| n.outputs.is_empty()) {
        return Ok(vec![]);
    }
    let plan = compile(wf).map_err(|e| format!("cannot load `{}`: {e}", file.display()))?;
    let last = rows.iter().filter_map(|t| t.cycle).max();
    let by_name: std::collections::HashMap<String, usize> = plan
        .graph
        .node_indices()
        .filter(|&i| !plan.graph[i].is_join())
        .map(|i| (plan.task_name(plan.graph[i]), i.index()))
        .collect();
    let mut data = CycleData::new(last.unwrap_or(0), None, false, plan.graph.node_count());
    for t in rows.iter().filter(|t| t.cycle == last && t.state.is_done_ok()) {
        let base = if last.is_some() { t.task.split_once('/').map_or(t.task.as_str(), |(_, b)| b) } else { &t.task };
        if let (Some(&i), Some(dir)) = (by_name.get(base), &t.dir) {
            let values = crate::run::attempt::parse_values(t.outputs.as_deref());
            data.results[i] = Some(Box::new(TaskResult { dir: dir.into(), values }));
        }
    }
    let run_dir = runs_dir.join(&run.id);
    Ok(root_outputs(&plan, Results::single(&data), &run.id, &run_dir))
}
