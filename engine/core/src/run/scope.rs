//! Values of references while a run executes: upstream outputs from finished tasks, the
//! task's own inputs, outputs and scatter element.

use std::cell::RefCell;
use std::path::{Path, PathBuf};

use indexmap::IndexMap;

use crate::expr::{LookupError, Scope, Value};
use crate::model::{Ctx, Resolved, resolve};
use crate::model::{NsIdx, StepIdx};
use crate::model::{eval_value, param_or_input};
use crate::plan::{Plan, ScatterList, TaskNode};

/// Result of a finished task that downstream tasks can use.
#[derive(Debug, Clone)]
pub struct TaskResult {
    /// Directory holding its outputs.
    pub dir: PathBuf,
    /// Its value outputs.
    pub values: IndexMap<String, Value>,
}

/// How references to things not known yet are shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Real values; a missing upstream result is an error.
    Exec,
    /// Placeholders for everything that changes from run to run (`<steps.mesh.out.grid>`,
    /// `<out.result>`, `<run.id>`), so the text only depends on the definition: used for
    /// cache keys and for `twinflow plan`.
    Key,
}

/// A file or value a task read, recorded while its templates are evaluated.
#[derive(Debug, Clone)]
pub enum Used {
    /// A file (upstream output or workflow input) under a stable name.
    File(String, PathBuf),
    /// An upstream value output.
    Value(String, Value),
    /// The result directory of an upstream task (not hashed: the files read from it are
    /// [`Used::File`]s); lets the cache key abstract over where that result lives.
    ResultDir(String, PathBuf),
}

/// Scope of one task.
pub struct TaskScope<'a> {
    /// The plan.
    pub plan: &'a Plan,
    /// The task.
    pub node: TaskNode,
    /// Results of finished tasks by node index.
    pub results: &'a [Option<Box<TaskResult>>],
    /// The attempt directory (where `out.*` live).
    pub attempt_dir: &'a Path,
    /// Run id.
    pub run_id: &'a str,
    /// Run directory.
    pub run_dir: &'a Path,
    /// Exec or key mode.
    pub mode: Mode,
    /// Namespace and context of the expression being evaluated.
    pub ns: NsIdx,
    /// Context.
    pub ctx: Ctx,
    /// What was read (filled in exec mode).
    pub used: &'a RefCell<Vec<Used>>,
}

impl TaskScope<'_> {
    fn with(&self, ns: NsIdx, ctx: Ctx) -> TaskScope<'_> {
        TaskScope {
            plan: self.plan,
            node: self.node,
            results: self.results,
            attempt_dir: self.attempt_dir,
            run_id: self.run_id,
            run_dir: self.run_dir,
            mode: self.mode,
            ns,
            ctx,
            used: self.used,
        }
    }

    fn result(&self, step: StepIdx, member: Option<u32>) -> Option<&TaskResult> {
        self.results.get(self.plan.node(step, member).index()).and_then(|r| r.as_deref())
    }

    fn output(
        &self,
        step: StepIdx,
        member: Option<u32>,
        values: bool,
        name: &str,
        label: &str,
    ) -> Result<Option<Value>, LookupError> {
        let st = &self.plan.workflow.steps[step];
        if self.mode == Mode::Key {
            return Ok(Some(if values { Value::Str(format!("<{label}>")) } else { Value::Path(format!("<{label}>")) }));
        }
        let Some(res) = self.result(step, member) else {
            return Ok(None);
        };
        let task = match member {
            Some(m) => format!("steps.{}[{m}]", st.name),
            None => format!("steps.{}", st.name),
        };
        self.used.borrow_mut().push(Used::ResultDir(task, res.dir.clone()));
        if values {
            let v = res.values.get(name).cloned().unwrap_or(Value::Null);
            self.used.borrow_mut().push(Used::Value(label.to_string(), v.clone()));
            Ok(Some(v))
        } else {
            let rel = st
                .outputs
                .get(name)
                .ok_or_else(|| LookupError { message: format!("no output `{name}`"), help: None })?;
            let p = res.dir.join(rel);
            self.used.borrow_mut().push(Used::File(label.to_string(), p.clone()));
            Ok(Some(Value::Path(p.display().to_string())))
        }
    }
}

fn err(message: String) -> LookupError {
    LookupError { message, help: None }
}

impl Scope for TaskScope<'_> {
    fn lookup(&self, path: &[&str]) -> Result<Value, LookupError> {
        let wf = &*self.plan.workflow;
        let r = resolve(wf, self.ns, self.ctx, path)?;
        let label = path.join(".");
        match &r {
            Resolved::Param(..) => {
                let v = param_or_input(wf, &r, &|parent, b| {
                    eval_value(b, &self.with(parent, Ctx::Namespace)).map_err(|e| err(e.message))
                })?;
                if self.mode == Mode::Exec {
                    // A file named by a `path` parameter is read by the task: its content is
                    // part of the cache key, like an input's. (A directory is known by its
                    // path only: hashing a dataset tree on every run would cost too much.)
                    let files: Vec<&str> = match &v {
                        Value::Path(p) => vec![p.as_str()],
                        Value::List(items) => items
                            .iter()
                            .filter_map(|i| if let Value::Path(p) = i { Some(p.as_str()) } else { None })
                            .collect(),
                        _ => vec![],
                    };
                    for (k, f) in files.iter().enumerate() {
                        if Path::new(f).is_file() {
                            let l = if files.len() == 1 { label.clone() } else { format!("{label}[{k}]") };
                            self.used.borrow_mut().push(Used::File(l, PathBuf::from(f)));
                        }
                    }
                }
                Ok(v)
            }
            Resolved::Input(..) => {
                let v = param_or_input(wf, &r, &|parent, b| {
                    eval_value(b, &self.with(parent, Ctx::Namespace)).map_err(|e| err(e.message))
                })?;
                if self.mode == Mode::Key {
                    return Ok(Value::Str(format!("<{label}>")));
                }
                if let Value::Path(p) = &v {
                    // Inputs bound to upstream outputs are only known now: check the declared
                    // format here (root inputs were checked before the run started).
                    if let Resolved::Input(ns, name) = &r
                        && let Some(def) = wf.namespaces[*ns].inputs.get(name)
                    {
                        crate::validate::files::check_format(Path::new(p), def.format)
                            .map_err(|m| err(format!("input `{name}`: {m}")))?;
                    }
                    self.used.borrow_mut().push(Used::File(label, PathBuf::from(p)));
                }
                Ok(v)
            }
            Resolved::StepOut(a, name) | Resolved::StepValue(a, name) => {
                let values = matches!(r, Resolved::StepValue(..));
                match &self.plan.scatter[*a] {
                    None => self
                        .output(*a, None, values, name, &label)?
                        .ok_or_else(|| err(format!("step `{}` has no result (it was skipped)", wf.steps[*a].name))),
                    Some(t) => {
                        if self.mode == Mode::Key {
                            // `plan` shows a gather without running anything: a list of
                            // placeholders, shortened for big ensembles.
                            const SHOWN: u32 = 8;
                            let mut items: Vec<Value> =
                                (0..t.len.min(SHOWN)).map(|m| Value::Path(format!("<{label}[{m}]>"))).collect();
                            if t.len > SHOWN {
                                items.push(Value::Str(format!("<... {} more>", t.len - SHOWN)));
                            }
                            return Ok(Value::List(items));
                        }
                        let mut items = Vec::with_capacity(t.len as usize);
                        for m in 0..t.len {
                            if let Some(v) = self.output(*a, Some(m), values, name, &format!("{label}[{m}]"))? {
                                items.push(v);
                            }
                        }
                        Ok(Value::List(items))
                    }
                }
            }
            Resolved::CallOut(child, name) => {
                let t = wf.namespaces[*child].outputs.get(name).ok_or_else(|| err(format!("no output `{name}`")))?;
                t.tpl.eval(&self.with(*child, Ctx::Namespace)).map_err(|e| err(e.message))
            }
            Resolved::In(s, name) => {
                let v = wf.steps[*s].inputs.get(name).ok_or_else(|| err(format!("no input `{name}`")))?;
                eval_value(v, &self.with(self.ns, Ctx::Inputs(*s))).map_err(|e| err(e.message))
            }
            Resolved::Out(s, name) => {
                let st = &wf.steps[*s];
                let rel = st
                    .outputs
                    .get(name)
                    .or_else(|| st.values.get(name))
                    .ok_or_else(|| err(format!("no output `{name}`")))?;
                Ok(match self.mode {
                    Mode::Key => Value::Str(format!("<out>/{rel}")),
                    Mode::Exec => Value::Path(self.attempt_dir.join(rel).display().to_string()),
                })
            }
            Resolved::Scatter(s, name) => {
                let table = self.plan.scatter[*s].as_ref().ok_or_else(|| err("step does not scatter".into()))?;
                let m = self.node.member_index().ok_or_else(|| err("not a scatter member".into()))?;
                let vi = table
                    .vars
                    .iter()
                    .position(|(k, _)| k == name)
                    .ok_or_else(|| err(format!("no scatter variable `{name}`")))?;
                let idx = table.indices(m)[vi];
                match &table.vars[vi].1 {
                    ScatterList::Values(v) => {
                        v.get(idx as usize).cloned().ok_or_else(|| err("scatter index out of range".into()))
                    }
                    ScatterList::Outputs { step, values, name: oname, .. } => {
                        let lbl = format!("scatter.{name}");
                        self.output(*step, Some(idx), *values, oname, &lbl)?.ok_or_else(|| {
                            err(format!("member {idx} of `{}` has no result (it was skipped)", wf.steps[*step].name))
                        })
                    }
                }
            }
            Resolved::RunId => {
                Ok(Value::Str(if self.mode == Mode::Key { "<run.id>".into() } else { self.run_id.to_string() }))
            }
            Resolved::RunDir => Ok(if self.mode == Mode::Key {
                Value::Str("<run.dir>".into())
            } else {
                Value::Path(self.run_dir.display().to_string())
            }),
            Resolved::StepName(s) => Ok(Value::Str(wf.steps[*s].name.clone())),
            Resolved::MemberIndex(_) => Ok(self.node.member_index().map_or(Value::Null, |m| Value::Int(i64::from(m)))),
        }
    }
}
