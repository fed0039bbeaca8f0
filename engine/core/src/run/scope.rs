//! Values of references while a run executes: upstream outputs from finished tasks, the
//! task's own inputs, outputs and scatter element.

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use indexmap::IndexMap;
use petgraph::graph::NodeIndex;

use crate::expr::{LookupError, Scope, Value};
use crate::model::{Ctx, Point, Resolved, resolve};
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

/// What a task's trigger (`wait:`) found, readable as `wait.files` and `wait.KEY`.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct GateValues {
    /// Paths the `files` trigger matched, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<String>,
    /// Values from a command's JSON output or a signal's `--value`s.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub values: IndexMap<String, serde_json::Value>,
}

/// One cycle of a run (a run of a workflow without `cycle:` has one): where it is, and
/// what its tasks have produced.
#[derive(Debug, Clone)]
pub struct CycleData {
    /// Index from 0.
    pub index: u64,
    /// Its point (`None` when the workflow does not cycle).
    pub point: Option<Point>,
    /// Whether it is the last cycle.
    pub last: bool,
    /// Results of finished tasks by node index.
    pub results: Vec<Option<Box<TaskResult>>>,
    /// What the triggers of its tasks found.
    pub gates: HashMap<NodeIndex, GateValues>,
}

impl CycleData {
    /// A cycle with no results yet, for a plan of `nodes` nodes.
    pub fn new(index: u64, point: Option<Point>, last: bool, nodes: usize) -> Self {
        CycleData { index, point, last, results: (0..nodes).map(|_| None).collect(), gates: HashMap::new() }
    }
}

/// The results a task can read: its cycle's, and the previous cycle's (`prev.*`).
#[derive(Debug, Clone, Copy)]
pub struct Results<'a> {
    /// The task's cycle.
    pub cur: &'a CycleData,
    /// The cycle before, when there is one.
    pub prev: Option<&'a CycleData>,
    /// Cycle 0, whose `once: first` results later cycles read.
    pub first: Option<&'a CycleData>,
}

impl<'a> Results<'a> {
    /// Results of a run that does not cycle.
    pub fn single(cur: &'a CycleData) -> Self {
        Results { cur, prev: None, first: None }
    }
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
    /// Results of finished tasks (this cycle's and the previous one's).
    pub results: Results<'a>,
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

    fn result(&self, step: StepIdx, member: Option<u32>, prev: bool) -> Option<&TaskResult> {
        let once_first = self.plan.workflow.steps[step].once == Some(crate::model::Once::First);
        let data = if prev {
            self.results.prev?
        } else if once_first && self.results.cur.index > 0 {
            self.results.first?
        } else {
            self.results.cur
        };
        data.results.get(self.plan.node(step, member).index()).and_then(|r| r.as_deref())
    }

    fn output(
        &self,
        step: StepIdx,
        member: Option<u32>,
        values: bool,
        name: &str,
        label: &str,
    ) -> Result<Option<Value>, LookupError> {
        self.output_of(step, member, values, name, label, false)
    }

    fn output_of(
        &self,
        step: StepIdx,
        member: Option<u32>,
        values: bool,
        name: &str,
        label: &str,
        prev: bool,
    ) -> Result<Option<Value>, LookupError> {
        let st = &self.plan.workflow.steps[step];
        if self.mode == Mode::Key {
            return Ok(Some(if values { Value::Str(format!("<{label}>")) } else { Value::Path(format!("<{label}>")) }));
        }
        let Some(res) = self.result(step, member, prev) else {
            return Ok(None);
        };
        let head = if prev { "prev.steps" } else { "steps" };
        let task = match member {
            Some(m) => format!("{head}.{}[{m}]", st.name),
            None => format!("{head}.{}", st.name),
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
            Resolved::StepOut(a, name)
            | Resolved::StepValue(a, name)
            | Resolved::PrevOut(a, name)
            | Resolved::PrevValue(a, name) => {
                let values = matches!(r, Resolved::StepValue(..) | Resolved::PrevValue(..));
                let prev = matches!(r, Resolved::PrevOut(..) | Resolved::PrevValue(..));
                if prev && self.mode == Mode::Exec && self.results.prev.is_none() {
                    return Err(err(format!("`{label}`: there is no previous cycle")));
                }
                let skipped = || {
                    let when = if prev { " in the previous cycle" } else { "" };
                    err(format!("step `{}` has no result{when} (it was skipped)", wf.steps[*a].name))
                };
                match &self.plan.scatter[*a] {
                    None => self.output_of(*a, None, values, name, &label, prev)?.ok_or_else(skipped),
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
                            if let Some(v) =
                                self.output_of(*a, Some(m), values, name, &format!("{label}[{m}]"), prev)?
                            {
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
            Resolved::WorkflowDir(ns) => Ok(crate::model::eval::workflow_dir(wf, *ns)),
            Resolved::StepName(s) => Ok(Value::Str(wf.steps[*s].name.clone())),
            Resolved::MemberIndex(_) => Ok(self.node.member_index().map_or(Value::Null, |m| Value::Int(i64::from(m)))),
            Resolved::CycleIndex => Ok(Value::Int(self.results.cur.index as i64)),
            Resolved::CyclePoint => Ok(self.results.cur.point.map_or(Value::Null, Point::value)),
            Resolved::CycleFirst => Ok(Value::Bool(self.results.cur.index == 0)),
            Resolved::CycleLast => Ok(Value::Bool(self.results.cur.last)),
            Resolved::WaitFiles(_) | Resolved::WaitValue(..) => {
                if self.mode == Mode::Key {
                    // `wait.files` is a list even as a placeholder, so `wait.files[0]` reads.
                    return Ok(match r {
                        Resolved::WaitFiles(_) => Value::List(vec![Value::Path(format!("<{label}>"))]),
                        _ => Value::Str(format!("<{label}>")),
                    });
                }
                let gate =
                    self.results.cur.gates.get(&self.plan.node(self.node.step as usize, self.node.member_index()));
                Ok(match (&r, gate) {
                    (Resolved::WaitFiles(_), Some(g)) => {
                        Value::List(g.files.iter().cloned().map(Value::Path).collect())
                    }
                    (Resolved::WaitFiles(_), None) => Value::List(vec![]),
                    (Resolved::WaitValue(_, k), Some(g)) => {
                        g.values.get(k).and_then(Value::from_json).unwrap_or(Value::Null)
                    }
                    _ => Value::Null,
                })
            }
        }
    }
}
