//! Where expressions are written in a workflow, and which steps each one reads: the
//! queries both validation (types, dependencies and cycles) and planning (member-wise
//! scatter links) ask of the model, so both agree on what a step depends on.

use crate::expr::Type;
use crate::spec::span::Span;

use super::refs::{Ctx, Resolved, resolve};
use super::service::Ready;
use super::workflow::{Command, NsIdx, StepIdx, Tpl, ValueExpr, Workflow};

/// One expression site: its namespace, its context, the template, the field path shown in
/// messages (`steps.sim.in.grid`) and the type the value must have, when one is required.
pub type Site = (NsIdx, Ctx, Tpl, String, Option<Type>);

/// Expression sites of one step.
pub fn step_sites(wf: &Workflow, i: StepIdx) -> Vec<Site> {
    let mut out = vec![];
    step_sites_into(wf, i, &mut out);
    out
}

fn step_sites_into(wf: &Workflow, i: StepIdx, out: &mut Vec<Site>) {
    {
        let s = &wf.steps[i];
        let f = |k: &str| format!("steps.{}.{k}", s.local_name);
        if let Some(sc) = &s.scatter {
            for (k, v) in &sc.vars {
                // A whole-value expression must give the list; in a literal YAML list
                // (`[x, "${{ params.y }}"]`) each element is one value of the list.
                let whole = matches!(v, ValueExpr::Tpl(_));
                for t in v.templates() {
                    let want = (!whole).then_some(Type::Any);
                    out.push((s.ns, Ctx::ScatterOver(i), t.clone(), format!("{}.{k}", f("scatter.over")), want));
                }
            }
        }
        for (k, v) in &s.inputs {
            for t in v.templates() {
                out.push((s.ns, Ctx::Inputs(i), t.clone(), format!("{}.{k}", f("in")), None));
            }
        }
        if let Some(w) = &s.when {
            out.push((s.ns, Ctx::When(i), w.clone(), f("when"), Some(Type::Bool)));
        }
        if let Some(w) = &s.wait {
            for (j, t) in w.files.iter().enumerate() {
                out.push((s.ns, Ctx::Wait(i), t.clone(), format!("{}[{j}]", f("wait.files")), None));
            }
            for (j, t) in w.command.iter().enumerate() {
                out.push((s.ns, Ctx::Wait(i), t.clone(), format!("{}[{j}]", f("wait.command")), None));
            }
        }
        if let Command::Run { argv, .. } = &s.command {
            for (j, t) in argv.iter().enumerate() {
                out.push((s.ns, Ctx::Body(i), t.clone(), format!("{}[{j}]", f("run")), None));
            }
        }
        for (j, t) in s.args.iter().enumerate() {
            out.push((s.ns, Ctx::Body(i), t.clone(), format!("{}[{j}]", f("args")), None));
        }
        for (k, t) in &s.env {
            out.push((s.ns, Ctx::Body(i), t.clone(), format!("{}.{k}", f("env")), None));
        }
        for (k, t) in &s.publish {
            out.push((s.ns, Ctx::Body(i), t.clone(), format!("{}.{k}", f("publish")), None));
        }
        // A readiness probe sees what the command sees (`out.*` included).
        match s.service.as_ref().and_then(|v| v.ready.as_ref()) {
            Some(Ready::File(t)) => out.push((s.ns, Ctx::Body(i), t.clone(), f("service.ready.file"), None)),
            Some(Ready::Command(argv)) => {
                for (j, t) in argv.iter().enumerate() {
                    out.push((s.ns, Ctx::Body(i), t.clone(), format!("{}[{j}]", f("service.ready.command")), None));
                }
            }
            None => {}
        }
    }
}

/// Every expression site of the workflow with its namespace, context, field and expected type.
pub fn sites(wf: &Workflow) -> Vec<Site> {
    let mut out = vec![];
    for i in 0..wf.steps.len() {
        step_sites_into(wf, i, &mut out);
    }
    for (ns, n) in wf.namespaces.iter().enumerate() {
        if let Some(parent) = n.parent {
            for (k, v) in &n.bindings {
                // A value that is one whole expression must have the parameter's type
                // (`${{ params.n / 2 }}` is a float, not an int); text is parsed later.
                let want = match v {
                    ValueExpr::Tpl(t) if t.tpl.is_single_expr() => n.params.get(k).map(|p| p.expr_type()),
                    _ => None,
                };
                for t in v.templates() {
                    out.push((
                        parent,
                        Ctx::Namespace,
                        t.clone(),
                        format!("steps.{}.with.{k}", n.call_name()),
                        want.clone(),
                    ));
                }
            }
        }
        for (k, t) in &n.outputs {
            out.push((ns, Ctx::Namespace, t.clone(), format!("outputs.{k}"), None));
        }
        for (k, a) in n.asserts.iter().enumerate() {
            out.push((ns, Ctx::Namespace, a.that.clone(), format!("assert[{k}]"), Some(Type::Bool)));
        }
    }
    out
}

/// Steps that a template reads, each with the span of the reference that reads it,
/// following sub-workflow bindings and outputs (a reference to a call's output names the
/// steps behind it, at the place it is written).
pub fn sources(wf: &Workflow, ns: NsIdx, ctx: Ctx, t: &Tpl) -> Vec<(StepIdx, Span)> {
    let mut out = vec![];
    sources_into(wf, ns, ctx, t, 0, &mut out);
    out
}

/// Steps whose previous-cycle results a template reads (`prev.steps.S...`), each with the
/// span of the reference. These link a cycle to the one before, so [`sources`] leaves them
/// out: they are not same-cycle dependencies. (`prev.*` is only visible inside a step, so no
/// binding needs following.)
pub fn prev_sources(wf: &Workflow, ns: NsIdx, ctx: Ctx, t: &Tpl) -> Vec<(StepIdx, Span)> {
    let mut out = vec![];
    for r in t.tpl.references() {
        if r.path.first().map(String::as_str) != Some("prev") {
            continue;
        }
        let path: Vec<&str> = r.path.iter().map(String::as_str).collect();
        if let Ok(Resolved::PrevOut(s, _) | Resolved::PrevValue(s, _)) = resolve(wf, ns, ctx, &path) {
            out.push((s, t.span.sub(r.span.start, r.span.end)));
        }
    }
    out
}

/// Bindings nest at most this deep before the search gives up (a cycle of bindings is
/// reported elsewhere).
const MAX_BINDING_DEPTH: usize = 32;

fn sources_into(wf: &Workflow, ns: NsIdx, ctx: Ctx, t: &Tpl, depth: usize, out: &mut Vec<(StepIdx, Span)>) {
    if depth > MAX_BINDING_DEPTH {
        return;
    }
    for r in t.tpl.references() {
        let path: Vec<&str> = r.path.iter().map(String::as_str).collect();
        let span = t.span.sub(r.span.start, r.span.end);
        match resolve(wf, ns, ctx, &path) {
            Ok(Resolved::StepOut(s, _)) | Ok(Resolved::StepValue(s, _)) => out.push((s, span)),
            Ok(Resolved::Param(pns, name)) | Ok(Resolved::Input(pns, name)) => {
                let n = &wf.namespaces[pns];
                if let (Some(parent), Some(b)) = (n.parent, n.bindings.get(&name)) {
                    for bt in b.templates() {
                        let mut inner = vec![];
                        sources_into(wf, parent, Ctx::Namespace, bt, depth + 1, &mut inner);
                        out.extend(inner.into_iter().map(|(s, _)| (s, span)));
                    }
                }
            }
            Ok(Resolved::CallOut(child, name)) => {
                if let Some(ot) = wf.namespaces[child].outputs.get(&name) {
                    let mut inner = vec![];
                    sources_into(wf, child, Ctx::Namespace, ot, depth + 1, &mut inner);
                    out.extend(inner.into_iter().map(|(s, _)| (s, span)));
                }
            }
            _ => {}
        }
    }
}
