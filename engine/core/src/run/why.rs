//! `twinflow why`: would a task run again, and why?
//!
//! Walks the plan in dependency order as a run would, taking each task's result from the
//! cache when it is up to date, and reports for the requested tasks which component of the
//! cache key differs from the last successful execution.

use std::path::{Path, PathBuf};

use petgraph::algo::toposort;

use super::cache::{Decision, Hasher, decide};
use super::job::{components, key_view, resolve_task};
use super::scope::{CycleData, Mode, Results};
use crate::plan::Plan;
use crate::state::{StateError, Store};

/// The verdict for one task.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Verdict {
    /// Task name.
    pub task: String,
    /// Whether it is up to date (would be taken from the cache).
    pub up_to_date: bool,
    /// Reasons it would run.
    pub reasons: Vec<String>,
}

/// Explains, for every task of step `step` (all tasks when `None`), whether it would run.
pub fn why(plan: &Plan, store: &mut Store, step: Option<&str>, kernel: &Path) -> Result<Vec<Verdict>, StateError> {
    let wf = &*plan.workflow;
    let order = toposort(&plan.graph, None).unwrap_or_default();
    let mut data = CycleData::new(0, None, false, plan.graph.node_count());
    let mut stale: Vec<Option<String>> = vec![None; plan.graph.node_count()];
    let mut hasher = Hasher::default();
    let mut memo = std::collections::HashMap::new();
    let mut out = vec![];
    let placeholder = PathBuf::from("<attempt>");
    for i in order {
        let t = plan.graph[i];
        let preds: Vec<_> = plan.graph.neighbors_directed(i, petgraph::Direction::Incoming).collect();
        let upstream = preds.iter().find_map(|p| stale[p.index()].clone());
        if t.is_join() {
            stale[i.index()] = upstream;
            continue;
        }
        let name = plan.task_name(t);
        let wanted = step.is_none_or(|s| wf.steps[t.step as usize].name == s);
        let mut reasons = vec![];
        if let Some(u) = &upstream {
            reasons.push(format!("upstream `{u}` would run"));
        } else {
            let run_dir = Path::new("<run-dir>");
            let step = &wf.steps[t.step as usize];
            let is_kernel = matches!(step.command, crate::model::Command::Kernel(_));
            match resolve_task(plan, t, Results::single(&data), &placeholder, "<run>", run_dir, Mode::Exec, kernel) {
                Err(e) => reasons.push(format!("cannot be resolved yet: {e}")),
                Ok(exec) => {
                    let keyv = key_view(&exec, &placeholder, run_dir, "<run>", is_kernel);
                    let now = components(plan, t, &keyv, &exec, store, &mut hasher, &mut memo)?;
                    match decide(store, &wf.name, &name, step, &now)? {
                        Decision::UpToDate(result) => data.results[i.index()] = Some(Box::new(result)),
                        Decision::Stale(why) => reasons.extend(why.reasons(&now)),
                    }
                }
            }
        }
        if !reasons.is_empty() {
            stale[i.index()] = Some(name.clone());
        }
        if wanted {
            out.push(Verdict { task: name, up_to_date: reasons.is_empty(), reasons });
        }
    }
    Ok(out)
}
