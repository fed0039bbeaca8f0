//! `twinflow logs RUN TASK`: finds the files holding a task's output.
//!
//! A task is named as `status` lists it (`prepare`, `member[7]`, a cycling run's
//! `POINT/member[7]`), or by its member's scatter values (`member[seed=2,rain=40.0]`, read
//! from the workflow file the run was started with). Its latest attempt is shown unless
//! `--attempt N` asks for another: a successful attempt is the task's `out/` directory, a
//! cached task's is the result of the earlier run it reuses.

use std::path::{Path, PathBuf};

use super::{SessionError, find_run, has_runs, load, overrides};
use crate::events::{RunState, TaskState};
use crate::plan::ScatterList;
use crate::run::attempt::attempt_dir;
use crate::run::{cycle_dir_of, task_dir_of};
use crate::state::{AttemptState, RunRow, Store, TaskRow};

/// Where one attempt of a task keeps its output.
#[derive(Debug, Clone)]
pub struct TaskLogs {
    /// The run's id.
    pub run_id: String,
    /// The task, as `status` names it.
    pub task: String,
    /// Its state.
    pub state: TaskState,
    /// The attempt shown (0 for a cached task, which did not run in this run).
    pub attempt: u32,
    /// Attempts the task made in this run.
    pub attempts: u32,
    /// The attempt's directory (`out/` for the successful one).
    pub dir: PathBuf,
    /// Its standard output.
    pub stdout: PathBuf,
    /// Its standard error.
    pub stderr: PathBuf,
    runs_dir: PathBuf,
}

impl TaskLogs {
    /// Whether the attempt still runs, so its files may grow (`--follow` goes on): the run
    /// database records it as running and an engine still works on the run.
    pub fn running(&self) -> Result<bool, SessionError> {
        let store = Store::open(&self.runs_dir)?;
        let run = store.run(Some(&self.run_id))?;
        if run.state != RunState::Running || run.live_engine().is_none() {
            return Ok(false);
        }
        let attempts = store.attempts(&self.run_id, &self.task)?;
        Ok(attempts.iter().any(|a| a.attempt == self.attempt && a.state == AttemptState::Running))
    }

    /// The state and attempt count the task has now (a follower says how the attempt ended
    /// and whether another started).
    pub fn now(&self) -> Result<(TaskState, u32), SessionError> {
        let store = Store::open(&self.runs_dir)?;
        let row = store.tasks(&self.run_id)?.into_iter().find(|t| t.task == self.task);
        Ok(row.map_or((self.state, self.attempts), |r| (r.state, r.attempts)))
    }
}

/// `twinflow logs RUN TASK [--attempt N]`: the files of the task's attempt.
pub fn find(runs_dir: &Path, run: &str, task: &str, attempt: Option<u32>) -> Result<TaskLogs, SessionError> {
    let (store, run) = super::open_run(runs_dir, run)?;
    let tasks = store.tasks(&run.id)?;
    let row = resolve(&run, &tasks, task)?;
    let run_dir = runs_dir.join(&run.id);
    // `RUN/[cycles/POINT/]steps/STEP[/MEMBER]`; a cycling task's name starts with its point.
    let base = match (row.cycle, row.task.split_once('/')) {
        (Some(_), Some((point, _))) => cycle_dir_of(&run_dir, point),
        _ => run_dir.clone(),
    };
    let task_dir = task_dir_of(&base, &row.step, row.member);
    let latest = row.attempts;
    let n = attempt.unwrap_or(latest);
    let dir = match row.state {
        TaskState::Cached if attempt.is_some_and(|a| a > 0) => {
            return Err(SessionError::Usage(format!(
                "`{}` was cached in run {}: it made no attempts; its result comes from an earlier run (drop --attempt)",
                row.task, run.id
            )));
        }
        TaskState::Cached => row.dir.as_ref().map(PathBuf::from).ok_or_else(|| not_run(&run, row))?,
        _ if latest == 0 => return Err(not_run(&run, row)),
        _ if n == 0 || n > latest => {
            return Err(SessionError::Usage(format!(
                "`{}` of run {} made {latest} attempt{}: --attempt takes 1 to {latest}",
                row.task,
                run.id,
                if latest == 1 { "" } else { "s" }
            )));
        }
        // The latest attempt's directory is recorded when it failed or was cancelled; the
        // successful attempt was renamed to `out/`.
        _ if n == latest && row.dir.is_some() && row.state != TaskState::Running => {
            row.dir.as_ref().map(PathBuf::from).unwrap_or_default()
        }
        TaskState::Succeeded if n == latest => task_dir.join("out"),
        _ => attempt_dir(&task_dir, n),
    };
    if !dir.exists() {
        return Err(SessionError::Usage(format!(
            "the directory of `{}` (attempt {n}) of run {} is gone: `{}`",
            row.task,
            run.id,
            dir.display()
        )));
    }
    let (stdout, stderr) = super::log_files(&dir);
    Ok(TaskLogs {
        run_id: run.id.clone(),
        task: row.task.clone(),
        state: row.state,
        attempt: if row.state == TaskState::Cached { 0 } else { n },
        attempts: latest,
        dir,
        stdout,
        stderr,
        runs_dir: runs_dir.to_path_buf(),
    })
}

/// Whether `task` of `run` has yet to start while an engine works on the run (`--follow`
/// waits for it).
pub fn waiting(runs_dir: &Path, run: &str, task: &str) -> Result<bool, SessionError> {
    if !has_runs(runs_dir) {
        return Ok(false);
    }
    let store = Store::open(runs_dir)?;
    let run = find_run(&store, run)?;
    if run.state != RunState::Running || run.live_engine().is_none() {
        return Ok(false);
    }
    let tasks = store.tasks(&run.id)?;
    Ok(resolve(&run, &tasks, task).is_ok_and(|t| t.attempts == 0 && !t.state.is_terminal()))
}

fn not_run(run: &RunRow, row: &TaskRow) -> SessionError {
    if !row.state.is_terminal() {
        let hint = if run.live_engine().is_some() { "; `--follow` waits for it" } else { "" };
        return SessionError::Usage(format!(
            "`{}` of run {} has not started yet ({}){hint}",
            row.task, run.id, row.state
        ));
    }
    let why = row.message.as_deref().map(|m| format!(": {}", m.lines().next().unwrap_or(m))).unwrap_or_default();
    SessionError::Usage(format!("`{}` of run {} did not run ({}{why}): it has no output", row.task, run.id, row.state))
}

/// The task row `name` means: its exact name; `step[N]`; `step[k=v,...]` (by scatter
/// values); or a step's only task. A cycling run's task is `POINT/NAME`; without the
/// point, a name that only one cycle has.
fn resolve<'a>(run: &RunRow, tasks: &'a [TaskRow], name: &str) -> Result<&'a TaskRow, SessionError> {
    if let Some(t) = tasks.iter().find(|t| t.task == name) {
        return Ok(t);
    }
    // `POINT/...` in a cycling run.
    let (point, rest) = match name.split_once('/') {
        Some((p, r)) if tasks.iter().any(|t| t.cycle.is_some() && t.task.starts_with(&format!("{p}/"))) => (Some(p), r),
        _ => (None, name),
    };
    let in_cycle = |t: &&TaskRow| match point {
        Some(p) => t.task.split_once('/').is_some_and(|(tp, _)| tp == p),
        None => true,
    };
    let base = |t: &TaskRow| -> String {
        match t.cycle {
            Some(_) => t.task.split_once('/').map_or(t.task.clone(), |(_, b)| b.to_string()),
            None => t.task.clone(),
        }
    };
    let (step, member) = match rest.split_once('[') {
        Some((s, m)) if m.ends_with(']') => (s, Some(&m[..m.len() - 1])),
        _ => (rest, None),
    };
    let of_step: Vec<&TaskRow> = tasks.iter().filter(in_cycle).filter(|t| t.step == step).collect();
    if of_step.is_empty() {
        let mut steps: Vec<&str> = tasks.iter().map(|t| t.step.as_str()).collect();
        steps.dedup();
        let hint = crate::suggest::did_you_mean(step, steps.iter().copied())
            .unwrap_or_else(|| format!("its tasks are listed by `twinflow status {}`", run.id));
        let where_ = point.map(|p| format!(" in cycle {p}")).unwrap_or_default();
        return Err(SessionError::Usage(format!("run {} has no step `{step}`{where_} ({hint})", run.id)));
    }
    let wanted = match member {
        None => of_step.clone(),
        Some(m) if m.chars().all(|c| c.is_ascii_digit()) && !m.is_empty() => {
            let want = format!("{step}[{m}]");
            of_step.iter().copied().filter(|t| base(t) == want).collect()
        }
        Some(m) if m.contains('=') => {
            let index = member_by_values(run, step, m)?;
            of_step.iter().copied().filter(|t| t.member == Some(index)).collect()
        }
        Some(m) => {
            return Err(SessionError::Usage(format!(
                "`{name}`: name a member by its index (`{step}[3]`) or its scatter values (`{step}[seed=2]`), not `{m}`"
            )));
        }
    };
    match wanted.as_slice() {
        [one] => Ok(one),
        [] => Err(SessionError::Usage(format!(
            "run {} has no task `{name}` (`{step}` has {} task{}: {})",
            run.id,
            of_step.len(),
            if of_step.len() == 1 { "" } else { "s" },
            examples(&of_step)
        ))),
        many => Err(SessionError::Usage(format!(
            "`{name}` names {} tasks of run {}: name one of {}",
            many.len(),
            run.id,
            examples(many)
        ))),
    }
}

/// `member[3]`, ... naming those that did not succeed first (the ones a user looks for).
fn examples(tasks: &[&TaskRow]) -> String {
    let mut v: Vec<&&TaskRow> = tasks.iter().collect();
    v.sort_by_key(|t| t.state.is_done_ok());
    let mut names: Vec<String> = v.iter().take(5).map(|t| format!("`{}` ({})", t.task, t.state)).collect();
    if tasks.len() > 5 {
        names.push(format!("... ({} more)", tasks.len() - 5));
    }
    names.join(", ")
}

/// The member of `step` whose scatter values are `spec` (`seed=2,rain=40.0`), read from the
/// workflow the run was started with (its file and `-p`/`-i`).
fn member_by_values(run: &RunRow, step: &str, spec: &str) -> Result<u32, SessionError> {
    let mut want: Vec<(&str, &str)> = vec![];
    for part in spec.split(',') {
        match part.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => want.push((k.trim(), v.trim())),
            _ => return Err(SessionError::Usage(format!("`{part}` in `{step}[{spec}]` is not `NAME=VALUE`"))),
        }
    }
    let by_index = |why: String| {
        SessionError::Usage(format!(
            "cannot match `{step}[{spec}]` by scatter values: {why}; name it by index, `{step}[N]`"
        ))
    };
    let wf = load(Path::new(&run.file), &overrides(&run.settings.params, &run.settings.inputs)?, None)
        .map_err(|_| by_index(format!("the workflow `{}` no longer loads as it did", run.file)))?;
    let plan = super::compile(wf).map_err(|_| by_index(format!("the workflow `{}` no longer compiles", run.file)))?;
    let Some(s) = plan.workflow.steps.iter().position(|x| x.name == step) else {
        return Err(by_index(format!("`{}` no longer has a step `{step}`", run.file)));
    };
    let Some(table) = &plan.scatter[s] else {
        return Err(SessionError::Usage(format!("step `{step}` does not scatter: name it `{step}`")));
    };
    for (k, _) in &want {
        if !table.vars.iter().any(|(n, _)| n == k) {
            let names: Vec<&str> = table.vars.iter().map(|(n, _)| n.as_str()).collect();
            return Err(SessionError::Usage(format!(
                "step `{step}` scatters over {}, not `{k}`",
                names.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ")
            )));
        }
    }
    if table.vars.iter().any(|(n, l)| matches!(l, ScatterList::Outputs { .. }) && want.iter().any(|(k, _)| k == n)) {
        return Err(by_index("its values are upstream outputs, known only when the run made them".into()));
    }
    let mut found = vec![];
    for m in 0..table.len {
        let idx = table.indices(m);
        let matches = want.iter().all(|(k, v)| {
            let Some(pos) = table.vars.iter().position(|(n, _)| n == k) else { return false };
            match &table.vars[pos].1 {
                ScatterList::Values(vals) => vals.get(idx[pos] as usize).is_some_and(|x| same_value(x, v)),
                ScatterList::Outputs { .. } => false,
            }
        });
        if matches {
            found.push(m);
        }
    }
    match found.as_slice() {
        [m] => Ok(*m),
        [] => Err(SessionError::Usage(format!("no member of `{step}` has {spec}"))),
        many => Err(SessionError::Usage(format!(
            "{} members of `{step}` have {spec} ({}): give more values",
            many.len(),
            many.iter().take(5).map(|m| format!("`{step}[{m}]`")).collect::<Vec<_>>().join(", ")
        ))),
    }
}

/// Whether scatter value `v` is what the user wrote as `text` (`40.0` for 40, `"a"` for a).
fn same_value(v: &crate::expr::Value, text: &str) -> bool {
    let shown = v.to_string();
    let text = text.trim_matches(|c| c == '"' || c == '\'');
    if shown == text {
        return true;
    }
    match (shown.parse::<f64>(), text.parse::<f64>()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}
