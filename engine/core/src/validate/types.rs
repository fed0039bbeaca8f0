//! Static types of references, for checking expressions before anything runs.

use crate::expr::{LookupError, Type, TypeScope};

use crate::model::{Ctx, NsIdx, Resolved, ValueExpr, Workflow, resolve};

/// Type environment of one expression site.
pub(crate) struct Types<'a> {
    pub wf: &'a Workflow,
    pub ns: NsIdx,
    pub ctx: Ctx,
    pub depth: usize,
}

impl Types<'_> {
    fn value_type(&self, ns: NsIdx, ctx: Ctx, v: &ValueExpr) -> Type {
        if self.depth > 16 {
            return Type::Any;
        }
        let inner = Types { wf: self.wf, ns, ctx, depth: self.depth + 1 };
        match v {
            ValueExpr::Lit(val, _) => val.type_of(),
            ValueExpr::Tpl(t) => t.tpl.infer_type(&inner).unwrap_or(Type::Any),
            ValueExpr::List(items, _) => {
                let first = items.first().map(|i| self.value_type(ns, ctx, i)).unwrap_or(Type::Any);
                Type::List(Box::new(first))
            }
        }
    }
}

impl TypeScope for Types<'_> {
    fn lookup_type(&self, path: &[&str]) -> Result<Type, LookupError> {
        let wf = self.wf;
        Ok(match resolve(wf, self.ns, self.ctx, path)? {
            Resolved::Param(ns, name) => {
                let n = &wf.namespaces[ns];
                match (n.params.get(&name), n.bindings.get(&name)) {
                    (Some(def), _) => def.expr_type(),
                    (None, Some(b)) => self.value_type(n.parent.unwrap_or(0), Ctx::Namespace, b),
                    _ => Type::Any,
                }
            }
            Resolved::Input(..) | Resolved::RunDir | Resolved::WorkflowDir(_) => Type::Path,
            Resolved::StepOut(s, _) => {
                if wf.steps[s].scatter.is_some() {
                    Type::List(Box::new(Type::Path))
                } else {
                    Type::Path
                }
            }
            Resolved::StepValue(s, _) => {
                if wf.steps[s].scatter.is_some() {
                    Type::List(Box::new(Type::Any))
                } else {
                    Type::Any
                }
            }
            Resolved::CallOut(..) => Type::Any,
            Resolved::In(s, name) => match wf.steps[s].inputs.get(&name) {
                Some(v) => self.value_type(self.ns, Ctx::Inputs(s), v),
                None => Type::Any,
            },
            Resolved::Out(..) => Type::Path,
            Resolved::Scatter(s, name) => {
                let list = wf.steps[s].scatter.as_ref().and_then(|sc| sc.vars.get(&name));
                match list.map(|v| self.value_type(self.ns, Ctx::ScatterOver(s), v)) {
                    Some(Type::List(t)) => *t,
                    _ => Type::Any,
                }
            }
            Resolved::RunId | Resolved::StepName(_) => Type::Str,
            Resolved::MemberIndex(_) | Resolved::CycleIndex => Type::Int,
            Resolved::PrevOut(s, _) => {
                if wf.steps[s].scatter.is_some() {
                    Type::List(Box::new(Type::Path))
                } else {
                    Type::Path
                }
            }
            Resolved::PrevValue(s, _) => {
                if wf.steps[s].scatter.is_some() {
                    Type::List(Box::new(Type::Any))
                } else {
                    Type::Any
                }
            }
            Resolved::CyclePoint => match wf.cycle.as_ref().map(|c| c.every) {
                Some(crate::model::Every::Int(_)) => Type::Int,
                Some(crate::model::Every::Time(_)) => Type::Str,
                None => Type::Any,
            },
            Resolved::CycleFirst | Resolved::CycleLast => Type::Bool,
            Resolved::WaitFiles(_) => Type::List(Box::new(Type::Path)),
            Resolved::WaitValue(..) => Type::Any,
        })
    }
}
