//! Resume (`run --resume`): what an earlier engine of the run finished is kept, what it left
//! in flight is followed again or stopped, the rest runs.
//!
//! Finished tasks (succeeded, cached, skipped) come from the run database with their
//! result directories and values. Tasks it did not see finish are handed to the backend's
//! [`Backend::recover`](crate::execute::Backend::recover): a batch system's backend follows
//! jobs still in flight (so nothing is submitted twice), the local backend stops the
//! processes a killed engine left behind. Failed and cancelled tasks start again. A service
//! starts again whatever its row says (after the backend stopped what was left of it), as
//! long as anything else is left to do: in its cycle like any task that did not finish, or,
//! when its cycle retired (the first cycle of a cycling run), at once, as a restart whose
//! dependants keep what they read.

use std::collections::HashMap;

use petgraph::graph::NodeIndex;

use super::attempt;
use super::driver::{Attempt, Driver};
use super::scheduler::{Scheduler, TaskId};
use super::scope::TaskResult;
use super::{RunError, attempt::parse_values};
use crate::events::{Event, TaskState};
use crate::execute::Leftover;
use crate::ids::JobId;
use crate::state::{AttemptState, CycleState, TaskRow};

/// Restores the run's recorded state into the core and the driver; returns how many tasks
/// were already finished.
pub(crate) async fn restore(d: &mut Driver<'_>, s: &mut Scheduler<'_>) -> Result<usize, RunError> {
    let rows = d.store.tasks(&d.run_id)?;
    let plan = d.plan;
    let by_name: HashMap<String, NodeIndex> = plan
        .graph
        .node_indices()
        .filter(|&i| !plan.graph[i].is_join())
        .map(|i| (plan.task_name(plan.graph[i]), i))
        .collect();
    // A cycling run goes on from its first cycle that did not finish.
    let first_open = match &d.cycling {
        Some(_) => {
            let cycles = d.store.cycles(&d.run_id)?;
            let open = cycles.iter().find(|c| c.state != CycleState::Succeeded).map(|c| c.cycle);
            open.unwrap_or_else(|| cycles.last().map_or(0, |c| c.end() + 1))
        }
        None => 0,
    };
    if d.cycling.is_some() {
        s.start_at(first_open);
        for sig in d.store.signals(&d.run_id, false)? {
            if let Some(c) = sig.used_by {
                let values = serde_json::from_str(&sig.values).unwrap_or_default();
                d.restore_signal(c, sig.name, values);
            }
        }
    }
    // A service serves the run that goes on: it starts again whatever its row says (its
    // engine was killed, or it was stopped when the run stopped, failed or was cancelled),
    // unless nothing else is left to do.
    let is_service = |task: &str| {
        let base = if d.cycling.is_some() { task.split_once('/').map_or(task, |(_, b)| b) } else { task };
        by_name.get(base).is_some_and(|&i| plan.workflow.steps[plan.graph[i].step as usize].service.is_some())
    };
    let work_left = match &d.cycling {
        Some(c) => c.count.is_none_or(|n| first_open < n),
        None => rows.iter().any(|r| !is_service(&r.task) && !r.state.is_done_ok() && r.state != TaskState::Skipped),
    };
    let mut done = 0;
    let mut leftovers: Vec<(TaskId, Leftover, bool)> = vec![];
    for row in &rows {
        let (cycle, base) = match (&d.cycling, row.cycle) {
            (Some(_), Some(c)) => (c, row.task.split_once('/').map_or(row.task.as_str(), |(_, b)| b)),
            (Some(_), None) => continue,
            (None, _) => (0, row.task.as_str()),
        };
        let Some(&node) = by_name.get(base) else { continue };
        let t = TaskId::new(cycle, node);
        let name = row.task.clone();
        let result = || {
            let dir = row.dir.clone().unwrap_or_default().into();
            let values = parse_values(row.outputs.as_deref());
            Some(Box::new(TaskResult { dir, values }))
        };
        let service = plan.workflow.steps[plan.graph[node].step as usize].service.is_some();
        if service && !work_left && !row.state.is_terminal() {
            // The killed engine had done everything but stop it: what is left of it is
            // stopped by the backend's `recover` below, and it ends as it would have.
            let (dir, outputs) = (row.dir.as_deref(), row.outputs.as_deref());
            d.store.finish_task(&d.run_id, &name, TaskState::Succeeded, None, dir, outputs, None)?;
            if cycle < first_open {
                s.restore_retired(t, TaskState::Succeeded);
                d.retired_result(t, result(), cycle + 1 == first_open);
            } else {
                d.active_result(t, result());
                s.restore(t, row.attempts, Some(TaskState::Succeeded));
                done += 1;
            }
            continue;
        }
        if service && work_left && cycle < first_open {
            // A service of a retired cycle (the first: `once: first`): its dependants read it
            // as succeeded, and it starts again at once (what a killed engine left of it is
            // stopped by the backend's `recover` below, as every step of the run is).
            s.restore_retired(t, TaskState::Succeeded);
            d.retired_result(t, result(), cycle + 1 == first_open);
            s.restore_service(t, row.attempts);
            continue;
        }
        if service && work_left && row.state.is_terminal() {
            // Stopped with the run (or failed): it starts again as a task of its cycle, and
            // its dependants still to run wait until it is ready.
            d.store.reset_task(&d.run_id, &name)?;
            s.restore(t, row.attempts, None);
            continue;
        }
        if cycle < first_open {
            // Retired: later cycles read the cycle before the first open one (`prev.*`)
            // and cycle 0 (`once: first`).
            if row.state.is_terminal() && (cycle + 1 == first_open || cycle == 0) {
                s.restore_retired(t, row.state);
                if row.state.is_done_ok() {
                    d.retired_result(t, result(), cycle + 1 == first_open);
                }
            }
            continue;
        }
        if let Some(g) = &row.gate {
            s.restore_gate(t);
            d.restore_gate(t, serde_json::from_str(g).unwrap_or_default());
        }
        match row.state {
            st @ (TaskState::Succeeded | TaskState::Cached | TaskState::Skipped) => {
                if st != TaskState::Skipped {
                    d.active_result(t, result());
                }
                s.restore(t, row.attempts, Some(st));
                done += 1;
            }
            TaskState::Pending | TaskState::Running => {
                let running = row.state == TaskState::Running;
                let open_job = if running { open_job(d, &name, row)? } else { None };
                let l = Leftover { task: name, task_dir: d.task_dir(t), attempts: row.attempts, open_job };
                leftovers.push((t, l, running));
                s.restore(t, row.attempts, None);
            }
            _ => {
                d.store.reset_task(&d.run_id, &name)?;
                s.restore(t, row.attempts, None);
            }
        }
    }
    let list: Vec<Leftover> = leftovers.iter().map(|(_, l, _)| l.clone()).collect();
    let run_dir = d.run_dir().to_path_buf();
    let adopted = d.backend.recover(&d.run_id, &run_dir, &list).await?;
    let mut stale = vec![];
    for ((i, l, running), a) in leftovers.into_iter().zip(adopted) {
        let Some(a) = a else {
            if running {
                d.store.reset_task(&d.run_id, &l.task)?;
            }
            continue;
        };
        // The cache key was computed when the attempt started; its manifest keeps it.
        let Some(comps) = attempt::manifest_components(&a.dir) else {
            tracing::warn!(task = %l.task, job = %a.job, "the attempt the job runs has no readable manifest: stopping the job, the task runs again");
            stale.push(a.job);
            if running {
                d.store.reset_task(&d.run_id, &l.task)?;
            }
            continue;
        };
        if !a.recorded {
            d.store.attempt_started(&d.run_id, &l.task, a.attempt, &a.job.0)?;
        }
        s.adopt(i, a.attempt);
        let cycle = d.point_label(i);
        d.reporter.event(&Event::TaskStarted {
            task: l.task,
            cycle,
            label: d.label(i),
            attempt: a.attempt,
            job_id: a.job.0.clone(),
            dir: Some(a.dir.display().to_string()),
        });
        let components = serde_json::to_string(&comps).unwrap_or_default();
        d.running.insert(a.job, Attempt { task: i, attempt: a.attempt, dir: a.dir, key: comps.key(), components });
    }
    if !d.running.is_empty() {
        tracing::info!(jobs = d.running.len(), "following jobs the previous engine submitted");
    }
    if !stale.is_empty() {
        d.backend.cancel(&stale).await?;
    }
    Ok(done)
}

/// The job of the task's last recorded attempt, when the database still has that attempt
/// running.
fn open_job(d: &Driver<'_>, name: &str, row: &TaskRow) -> Result<Option<JobId>, RunError> {
    let last = d.store.attempts(&d.run_id, name)?;
    let open = last.last().is_some_and(|a| a.attempt == row.attempts && a.state == AttemptState::Running);
    Ok(row.job_id.clone().filter(|_| open).map(JobId))
}
