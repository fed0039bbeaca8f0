//! Evaluation of expressions that are known before anything runs: parameters, inputs and
//! sub-workflow bindings. Used by validation (resource counts), by planning (scatter lists)
//! and by the execution-time scope (upstream outputs, `in.*`, `out.*`), which builds on
//! [`param_or_input`] and [`eval_value`].

use crate::expr::{LookupError, Scope, Value};

use super::refs::{Ctx, Resolved, resolve};
use super::workflow::{NsIdx, ValueExpr, Workflow};

/// What `run.id` stands for before the run has one (a scatter is expanded, and resource
/// counts are evaluated, when a workflow is planned).
pub const RUN_ID_PLACEHOLDER: &str = "<run.id>";
/// What `run.dir` stands for before the run has a directory.
pub const RUN_DIR_PLACEHOLDER: &str = "<run.dir>";

/// Value of a parameter or input of namespace `ns`: the root's resolved values, or the
/// caller's binding (evaluated in the caller's namespace by `eval_in_parent`), or the
/// default.
pub fn param_or_input(
    wf: &Workflow,
    r: &Resolved,
    eval_in_parent: &dyn Fn(NsIdx, &ValueExpr) -> Result<Value, LookupError>,
) -> Result<Value, LookupError> {
    let (ns, name, is_input) = match r {
        Resolved::Param(ns, n) => (*ns, n, false),
        Resolved::Input(ns, n) => (*ns, n, true),
        _ => return Err(LookupError { message: "not a parameter".into(), help: None }),
    };
    let n = &wf.namespaces[ns];
    if n.parent.is_none() {
        let v = if is_input {
            wf.input_values.get(name).map(|p| Value::Path(p.display().to_string()))
        } else {
            wf.param_values.get(name).cloned()
        };
        return v.ok_or_else(|| LookupError { message: format!("`{name}` has no value"), help: None });
    }
    if let Some(b) = n.bindings.get(name) {
        return eval_in_parent(n.parent.unwrap_or(0), b);
    }
    let v = if is_input {
        n.inputs.get(name).and_then(|i| i.default.as_ref()).map(|p| Value::Path(p.display().to_string()))
    } else {
        n.params.get(name).and_then(|p| p.default.clone())
    };
    v.ok_or_else(|| LookupError { message: format!("`{name}` has no value"), help: None })
}

/// `workflow.dir` of namespace `ns`: the absolute directory of its file.
pub fn workflow_dir(wf: &Workflow, ns: NsIdx) -> Value {
    Value::Path(wf.namespaces[ns].file.abs_dir().display().to_string())
}

/// Evaluates a YAML value (template, literal or list) with `scope`.
pub fn eval_value(v: &ValueExpr, scope: &dyn Scope) -> Result<Value, crate::expr::ExprError> {
    match v {
        ValueExpr::Lit(val, _) => Ok(val.clone()),
        ValueExpr::Tpl(t) => t.tpl.eval(scope),
        ValueExpr::List(items, _) => {
            items.iter().map(|i| eval_value(i, scope)).collect::<Result<Vec<_>, _>>().map(Value::List)
        }
    }
}

/// A scope with only what is known before the run: parameters and inputs; `run.id` and
/// `run.dir` (reachable only through a sub-workflow binding) are placeholders.
pub struct StaticScope<'a> {
    /// The workflow.
    pub wf: &'a Workflow,
    /// Namespace of the expression.
    pub ns: NsIdx,
    /// Context of the expression.
    pub ctx: Ctx,
}

impl Scope for StaticScope<'_> {
    fn lookup(&self, path: &[&str]) -> Result<Value, LookupError> {
        let r = resolve(self.wf, self.ns, self.ctx, path)?;
        match &r {
            Resolved::Param(..) | Resolved::Input(..) => param_or_input(self.wf, &r, &|parent, b| {
                let s = StaticScope { wf: self.wf, ns: parent, ctx: Ctx::Namespace };
                eval_value(b, &s).map_err(|e| LookupError { message: e.message, help: e.help })
            }),
            Resolved::RunId => Ok(Value::Str(RUN_ID_PLACEHOLDER.to_string())),
            Resolved::RunDir => Ok(Value::Path(RUN_DIR_PLACEHOLDER.to_string())),
            Resolved::WorkflowDir(ns) => Ok(workflow_dir(self.wf, *ns)),
            _ => Err(LookupError {
                message: format!("`{}` is not known before the run", path.join(".")),
                help: Some("only parameters, inputs and outputs of scattered steps can define a scatter".into()),
            }),
        }
    }
}
