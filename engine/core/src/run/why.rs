//! `twinflow why`: would a task run again, and why?
//!
//! Walks the plan in dependency order as a run would, taking each task's result from the
//! cache when it is up to date, and reports for the requested tasks why they would run:
//! when no earlier success has the task's cache key, only the components that differ from
//! the closest earlier success of its step (a sweep's new value: the one argument).

use std::path::{Path, PathBuf};

use petgraph::algo::toposort;

use super::cache::{CacheScope, Components, Decision, Hasher, Staleness, closest, decide};
use super::job::{components, key_view, resolve_task};
use super::scope::{CycleData, Mode, Results, TaskResult};
use crate::model::Point;
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
    /// A member's scatter values (`seed=2 rain=40.0`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
}

/// The cycle `why` looks at, in a cycling workflow.
#[derive(Debug, Clone, Copy)]
pub struct WhyCycle {
    /// Its index.
    pub index: u64,
    /// Its point.
    pub point: Point,
    /// Whether it is the last.
    pub last: bool,
    /// The first cycle's point (its `once: first` results are read from the cache).
    pub first: Point,
    /// The previous cycle's point (its results, read by `prev.*`, too).
    pub prev: Option<Point>,
}

/// The results of a cycle's tasks as the cache has them (what a run would read from a
/// finished cycle).
fn cached_cycle(plan: &Plan, store: &Store, index: u64, point: Point) -> Result<CycleData, StateError> {
    let mut data = CycleData::new(index, Some(point), false, plan.graph.node_count());
    for i in plan.graph.node_indices() {
        let t = plan.graph[i];
        if t.is_join() {
            continue;
        }
        let name = format!("{}/{}", point.label(), plan.task_name(t));
        if let Some(e) = store.cache_get(&plan.workflow.name, &name)? {
            let values = super::attempt::parse_values(Some(&e.outputs));
            data.results[i.index()] = Some(Box::new(TaskResult { dir: PathBuf::from(e.dir), values }));
        }
    }
    Ok(data)
}

/// Explains, for every task of step `step` (all tasks when `None`; a task when it names one,
/// `sim[7]`), whether it would run; in a cycling workflow, the tasks of `cycle`. Tasks of
/// the steps `rerun` names, and what depends on them, would run (`run --rerun`).
pub fn why(
    plan: &Plan,
    store: &mut Store,
    step: Option<&str>,
    kernel: &Path,
    cycle: Option<WhyCycle>,
    rerun: &[String],
) -> Result<Vec<Verdict>, StateError> {
    let wf = &*plan.workflow;
    let forced = super::rerun_nodes(plan, rerun);
    // Earlier successes of each step, parsed once, for the closest one's differences.
    let mut of_step: std::collections::HashMap<(String, String), Vec<(crate::state::CacheEntry, Components)>> =
        Default::default();
    let order = toposort(&plan.graph, None).unwrap_or_default();
    let mut data = match cycle {
        Some(c) => CycleData::new(c.index, Some(c.point), c.last, plan.graph.node_count()),
        None => CycleData::new(0, None, false, plan.graph.node_count()),
    };
    let prev = match cycle.and_then(|c| c.prev.map(|p| (c.index - 1, p))) {
        Some((k, p)) => Some(cached_cycle(plan, store, k, p)?),
        None => None,
    };
    let first = match cycle.filter(|c| c.index > 0) {
        Some(c) => Some(cached_cycle(plan, store, 0, c.first)?),
        None => None,
    };
    let label = cycle.map(|c| c.point.label());
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
        if let Some(c) = cycle
            && !plan.runs_in(i, c.index, c.last)
        {
            continue;
        }
        let name = match &label {
            Some(l) => format!("{l}/{}", plan.task_name(t)),
            None => plan.task_name(t),
        };
        let wanted = step.is_none_or(|s| wf.steps[t.step as usize].name == s || plan.task_name(t) == s);
        let mut reasons = vec![];
        if let Some(u) = &upstream {
            reasons.push(format!("upstream `{u}` would run"));
        } else if forced[i.index()] {
            reasons.push("`--rerun` forces it".into());
        } else if wf.steps[t.step as usize].service.is_some() {
            reasons.push("a service is never reused: it runs in every run".into());
        } else {
            let run_dir = Path::new("<run-dir>");
            let step = &wf.steps[t.step as usize];
            let is_kernel = matches!(step.command, crate::model::Command::Kernel(_));
            match resolve_task(
                plan,
                t,
                Results { cur: &data, prev: prev.as_ref(), first: first.as_ref() },
                &placeholder,
                "<run>",
                run_dir,
                Mode::Exec,
                kernel,
            ) {
                Err(e) => reasons.push(format!("cannot be resolved yet: {e}")),
                Ok(exec) => {
                    let keyv = key_view(&exec, &placeholder, run_dir, "<run>", is_kernel);
                    let now = components(plan, t, &keyv, &exec, store, &mut hasher, &mut memo)?;
                    let scope = CacheScope::of(&wf.name, &step.name, &name, cycle.is_some());
                    match decide(store, scope, step, &now, None)? {
                        Decision::UpToDate(result) => data.results[i.index()] = Some(Box::new(result)),
                        Decision::Stale(why) => {
                            let near = match why {
                                // Only what is asked about is compared (parsing every entry
                                // of a big sweep's steps costs).
                                Staleness::NotFound if wanted => {
                                    let entries = match of_step.entry((step.name.clone(), scope.point.to_string())) {
                                        std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
                                        std::collections::hash_map::Entry::Vacant(v) => v.insert(
                                            store
                                                .cache_of_step(&wf.name, &step.name, scope.point)?
                                                .into_iter()
                                                .map(|e| {
                                                    let c = serde_json::from_str(&e.components).unwrap_or_default();
                                                    (e, c)
                                                })
                                                .collect(),
                                        ),
                                    };
                                    closest(entries, &name, &now).cloned()
                                }
                                _ => None,
                            };
                            reasons.extend(why.reasons(&now, near.as_ref()));
                        }
                    }
                }
            }
        }
        if !reasons.is_empty() {
            stale[i.index()] = Some(name.clone());
        }
        if wanted {
            let label = plan.member_label(plan.graph[i]);
            out.push((i.index(), Verdict { task: name, up_to_date: reasons.is_empty(), reasons, label }));
        }
    }
    // Walked in dependency order (which lists a step's members backwards); reported in plan
    // order: steps as compiled, members by index.
    out.sort_by_key(|(i, _)| *i);
    Ok(out.into_iter().map(|(_, v)| v).collect())
}
