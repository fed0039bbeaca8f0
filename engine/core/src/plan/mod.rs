//! Phase 3, compile: the validated model → a DAG of tasks ([`Plan`]).
//!
//! Each step becomes one task, or one task per member when it scatters, plus a *join*
//! node that completes when all members have; consumers of the whole list (gathers) hang
//! off the join, so an n-member scatter feeding an m-member one costs n + m edges, not
//! n × m. A step that scatters over the outputs of a scattered step
//! (`over: { r: ${{ steps.sim.out.result }} }`) is linked member-to-member instead, so
//! ensemble chains run without waiting for the whole ensemble.
//!
//! Nodes are 8 bytes (step, member); per-member values (commands, paths) are resolved only
//! when a task is dispatched or printed, which keeps a 10⁶-member plan small and fast.

use std::collections::BTreeSet;
use std::sync::Arc;

use petgraph::algo::toposort;
use petgraph::graph::{DiGraph, NodeIndex};

use crate::diag::{Diag, DiagKind, Diagnostics};
use crate::expr::{ExprError, Type, Value};
use crate::model::{
    Ctx, Resolved, StaticScope, StepIdx, ValueExpr, Workflow, eval_value, resolve, sources, step_sites,
};
use crate::spec::raw::ScatterMethod;

/// Largest number of tasks a plan may have.
pub const MAX_TASKS: u64 = 20_000_000;

/// A node of the plan graph.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TaskNode {
    /// The step.
    pub step: u32,
    /// Member index, [`TaskNode::NO_MEMBER`] for unscattered steps,
    /// [`TaskNode::JOIN`] for the join node of a scattered step.
    pub member: u32,
}

impl TaskNode {
    /// Marker of an unscattered step's only task.
    pub const NO_MEMBER: u32 = u32::MAX;
    /// Marker of a join node.
    pub const JOIN: u32 = u32::MAX - 1;
    /// Whether this is a join node (no command; done when all members are).
    pub fn is_join(self) -> bool {
        self.member == Self::JOIN
    }
    /// The member index, if this is a scatter member.
    pub fn member_index(self) -> Option<u32> {
        (self.member < Self::JOIN).then_some(self.member)
    }
}

/// One scatter variable's list.
#[derive(Debug, Clone)]
pub enum ScatterList {
    /// Values known at plan time.
    Values(Vec<Value>),
    /// The outputs (or values) of a scattered upstream step, one per member.
    Outputs {
        /// The upstream step.
        step: StepIdx,
        /// `out` or `values`.
        values: bool,
        /// Output name.
        name: String,
        /// Member count of the upstream step.
        len: u32,
    },
}

impl ScatterList {
    fn len(&self) -> u64 {
        match self {
            ScatterList::Values(v) => v.len() as u64,
            ScatterList::Outputs { len, .. } => u64::from(*len),
        }
    }
}

/// A step's scatter, expanded.
#[derive(Debug, Clone)]
pub struct ScatterTable {
    /// Variables in order.
    pub vars: Vec<(String, ScatterList)>,
    /// How they combine.
    pub method: ScatterMethod,
    /// Number of members.
    pub len: u32,
}

impl ScatterTable {
    /// Index into each variable's list for member `m`.
    pub fn indices(&self, m: u32) -> Vec<u32> {
        match self.method {
            ScatterMethod::Dotproduct => vec![m; self.vars.len()],
            ScatterMethod::Cartesian => {
                // Last variable varies fastest, like nested loops written in order.
                let mut rest = u64::from(m);
                let mut out = vec![0; self.vars.len()];
                for (i, (_, l)) in self.vars.iter().enumerate().rev() {
                    let n = l.len().max(1);
                    out[i] = (rest % n) as u32;
                    rest /= n;
                }
                out
            }
        }
    }
}

/// Why a scatter variable has no list.
#[derive(Debug, thiserror::Error)]
pub enum ScatterListError {
    /// The expression gives a single value.
    #[error("scatter variables need a list, found `{0}`")]
    NotAList(Type),
    /// The expression cannot be evaluated before the run.
    #[error("{}", .0.message)]
    Eval(ExprError),
}

/// The compiled plan.
#[derive(Debug)]
pub struct Plan {
    /// The workflow.
    pub workflow: Arc<Workflow>,
    /// Task graph; edges point from a dependency to its dependant.
    pub graph: DiGraph<TaskNode, ()>,
    /// First node of each step (members are contiguous; the join follows them).
    pub step_first: Vec<u32>,
    /// Scatter tables by step.
    pub scatter: Vec<Option<ScatterTable>>,
    /// Steps in dependency order.
    pub step_order: Vec<StepIdx>,
    /// Links between cycles, when the workflow cycles.
    pub cycling: Option<CyclePlan>,
}

/// How the cycles of a cycling workflow depend on each other. Every cycle runs the same
/// graph ([`Plan::graph`]); these are the edges from one cycle to another.
#[derive(Debug, Default)]
pub struct CyclePlan {
    /// Per node: the nodes of the previous cycle it waits for (`prev.steps.S...`: the join
    /// of a scattered S, else its only task).
    pub prev_deps: Vec<Vec<NodeIndex>>,
    /// The reverse of `prev_deps`: per node, the nodes of the next cycle waiting for it.
    pub prev_dependants: Vec<Vec<NodeIndex>>,
}

impl CyclePlan {
    fn new(wf: &Workflow, graph: &DiGraph<TaskNode, ()>, plan: &Plan) -> Self {
        let n = graph.node_count();
        let mut prev_deps = vec![vec![]; n];
        let mut prev_dependants = vec![vec![]; n];
        for i in graph.node_indices() {
            let t = graph[i];
            if t.is_join() {
                continue;
            }
            for &p in &wf.steps[t.step as usize].prev_deps {
                let from = plan.join(p).unwrap_or_else(|| plan.node(p, None));
                prev_deps[i.index()].push(from);
                prev_dependants[from.index()].push(i);
            }
        }
        CyclePlan { prev_deps, prev_dependants }
    }
}

impl Plan {
    /// Node of the only task of an unscattered step, or of member `m`.
    pub fn node(&self, step: StepIdx, member: Option<u32>) -> NodeIndex {
        NodeIndex::new((self.step_first[step] + member.unwrap_or(0)) as usize)
    }
    /// Join node of a scattered step.
    pub fn join(&self, step: StepIdx) -> Option<NodeIndex> {
        self.scatter[step].as_ref().map(|t| NodeIndex::new((self.step_first[step] + t.len) as usize))
    }
    /// Number of runnable tasks (joins excluded).
    pub fn task_count(&self) -> usize {
        self.workflow.steps.iter().enumerate().map(|(i, _)| self.members(i) as usize).sum()
    }
    /// Members of a step (1 when unscattered).
    pub fn members(&self, step: StepIdx) -> u32 {
        self.scatter[step].as_ref().map_or(1, |t| t.len)
    }
    /// Whether node `n` has a task in cycle `index` (`once:` steps run in one cycle only;
    /// `last` says whether `index` is the last cycle).
    pub fn runs_in(&self, n: NodeIndex, index: u64, last: bool) -> bool {
        match self.workflow.steps[self.graph[n].step as usize].once {
            None => true,
            Some(crate::model::Once::First) => index == 0,
            Some(crate::model::Once::Last) => last,
        }
    }
    /// The scatter values of a member, as a person reads them: `seed=2 rain=40.0`; a value
    /// that comes from a scattered upstream step names its member (`tile=prepare[3]`).
    /// `None` for a task that is not a member. A long value is cut to 40 characters.
    pub fn member_label(&self, n: TaskNode) -> Option<String> {
        let m = n.member_index()?;
        let table = self.scatter[n.step as usize].as_ref()?;
        let idx = table.indices(m);
        let parts: Vec<String> = table
            .vars
            .iter()
            .zip(idx)
            .map(|((name, list), i)| {
                let v = match list {
                    ScatterList::Values(vs) => vs.get(i as usize).map(|v| match v {
                        Value::Str(s) | Value::Path(s) if s.is_empty() || s.contains(char::is_whitespace) => {
                            format!("{s:?}")
                        }
                        v => v.to_string(),
                    }),
                    ScatterList::Outputs { step, .. } => Some(format!("{}[{i}]", self.workflow.steps[*step].name)),
                };
                let mut v = v.unwrap_or_else(|| "?".into());
                if v.chars().count() > 40 {
                    v = v.chars().take(39).collect::<String>() + "…";
                }
                format!("{name}={v}")
            })
            .collect();
        Some(parts.join(" "))
    }
    /// Display name of a task: `sim`, `sim[3]`, `sim[*]` for a join.
    pub fn task_name(&self, n: TaskNode) -> String {
        let step = &self.workflow.steps[n.step as usize].name;
        match n.member {
            TaskNode::NO_MEMBER => step.clone(),
            TaskNode::JOIN => format!("{step}[*]"),
            m => format!("{step}[{m}]"),
        }
    }
}

/// Compiles a validated workflow into a plan. A plan does not depend on the run: scatter
/// lists are known from parameters, inputs and upstream scatters alone.
pub fn compile(workflow: Arc<Workflow>) -> Result<Plan, Diagnostics> {
    let wf = &*workflow;
    let mut diags = Diagnostics::default();
    let order = step_order(wf).map_err(|d| Diagnostics(vec![d]))?;
    let n = wf.steps.len();
    let mut scatter: Vec<Option<ScatterTable>> = vec![None; n];
    for &s in &order {
        let step = &wf.steps[s];
        let Some(sc) = &step.scatter else { continue };
        let file = &wf.namespaces[step.ns].file;
        let mut vars = vec![];
        let mut ok = true;
        for (name, v) in &sc.vars {
            let field = format!("steps.{}.scatter.over.{name}", step.local_name);
            match scatter_list(wf, &scatter, s, v) {
                Ok(l) => vars.push((name.clone(), l)),
                Err(e) => {
                    diags.push(Diag::new(DiagKind::Expression, file, v.span(), field, e.to_string()));
                    ok = false;
                }
            }
        }
        if !ok {
            continue;
        }
        let len: u64 = match sc.method {
            ScatterMethod::Dotproduct => {
                let lens: BTreeSet<u64> = vars.iter().map(|(_, l)| l.len()).collect();
                if lens.len() > 1 {
                    let desc =
                        vars.iter().map(|(k, l)| format!("`{k}` has {}", l.len())).collect::<Vec<_>>().join(", ");
                    // Point at the first list whose length differs from the first one's.
                    let first = vars.first().map_or(0, |(_, l)| l.len());
                    let odd = vars.iter().position(|(_, l)| l.len() != first).unwrap_or(0);
                    let span_of = |i: usize| sc.vars.get_index(i).map_or(sc.span, |(_, v)| v.span());
                    let mut d = Diag::new(
                        DiagKind::ScatterLength,
                        file,
                        span_of(odd),
                        format!("steps.{}.scatter.over", step.local_name),
                        format!("scatter lists differ in length: {desc}"),
                    )
                    .with_label(format!("`{}` has {}", vars[odd].0, vars[odd].1.len()))
                    .with_help(
                        "`method: dotproduct` pairs elements one to one; use `method: cartesian` for every combination",
                    );
                    for (i, (k, l)) in vars.iter().enumerate().filter(|(i, _)| *i != odd) {
                        d = d.with_secondary(span_of(i), format!("`{k}` has {}", l.len()));
                    }
                    diags.push(d);
                    continue;
                }
                lens.into_iter().next().unwrap_or(0)
            }
            ScatterMethod::Cartesian => {
                vars.iter().try_fold(1u64, |acc, (_, l)| acc.checked_mul(l.len())).unwrap_or(u64::MAX)
            }
        };
        // An empty list here (not one inherited from an upstream scatter, which was checked
        // there) is usually a parameter set to 0 by mistake: the step and everything that
        // gathers it would silently do nothing.
        if len == 0 && !sc.allow_empty {
            let empty: Vec<usize> =
                (0..vars.len()).filter(|&i| matches!(&vars[i].1, ScatterList::Values(v) if v.is_empty())).collect();
            if let Some(&first) = empty.first() {
                let span_of = |i: usize| sc.vars.get_index(i).map_or(sc.span, |(_, v)| v.span());
                let names = empty.iter().map(|&i| format!("`{}`", vars[i].0)).collect::<Vec<_>>().join(", ");
                diags.push(
                    Diag::new(
                        DiagKind::ScatterLength,
                        file,
                        span_of(first),
                        format!("steps.{}.scatter.over.{}", step.local_name, vars[first].0),
                        format!("scatter expands to 0 members: {names} is empty"),
                    )
                    .with_label("an empty list")
                    .with_help("check the parameters that make the list; if the step may run no member, add `allow_empty: true` to its `scatter:`"),
                );
                continue;
            }
        }
        if len > MAX_TASKS {
            diags.push(Diag::new(
                DiagKind::ScatterLength,
                file,
                sc.span,
                format!("steps.{}.scatter", step.local_name),
                format!("scatter has {len} members; the limit is {MAX_TASKS}"),
            ));
            continue;
        }
        scatter[s] = Some(ScatterTable { vars, method: sc.method, len: len as u32 });
    }
    if !diags.is_empty() {
        return Err(diags);
    }

    // Nodes: members of each step contiguous, then its join.
    let mut step_first = vec![0u32; n];
    let mut total: u64 = 0;
    for s in 0..n {
        step_first[s] = total as u32;
        total += scatter[s].as_ref().map_or(1, |t| u64::from(t.len) + 1);
    }
    if total > MAX_TASKS {
        diags.push(Diag::detached(
            DiagKind::ScatterLength,
            "steps",
            format!("the plan has {total} tasks; the limit is {MAX_TASKS}"),
        ));
        return Err(diags);
    }
    let mut graph: DiGraph<TaskNode, ()> = DiGraph::with_capacity(total as usize, total as usize);
    for s in 0..n {
        match &scatter[s] {
            None => {
                graph.add_node(TaskNode { step: s as u32, member: TaskNode::NO_MEMBER });
            }
            Some(t) => {
                for m in 0..t.len {
                    graph.add_node(TaskNode { step: s as u32, member: m });
                }
                let join = graph.add_node(TaskNode { step: s as u32, member: TaskNode::JOIN });
                for m in 0..t.len {
                    graph.add_edge(NodeIndex::new((step_first[s] + m) as usize), join, ());
                }
            }
        }
    }
    let plan_tmp = Plan {
        workflow: workflow.clone(),
        graph: DiGraph::new(),
        step_first: step_first.clone(),
        scatter: scatter.clone(),
        step_order: vec![],
        cycling: None,
    };
    for s in 0..n {
        let (direct, memberwise) = split_deps(wf, &scatter, s);
        let members: Vec<Option<u32>> = match &scatter[s] {
            None => vec![None],
            Some(t) => (0..t.len).map(Some).collect(),
        };
        for a in direct {
            let from = plan_tmp.join(a).unwrap_or_else(|| plan_tmp.node(a, None));
            for m in &members {
                graph.add_edge(from, plan_tmp.node(s, *m), ());
            }
        }
        if memberwise.is_empty() {
            continue;
        }
        let table = scatter[s].as_ref().expect("member-wise deps only exist for scattered steps");
        for m in 0..table.len {
            let idx = table.indices(m);
            for (vi, (_, l)) in table.vars.iter().enumerate() {
                if let ScatterList::Outputs { step: a, .. } = l
                    && memberwise.contains(a)
                {
                    graph.add_edge(plan_tmp.node(*a, Some(idx[vi])), plan_tmp.node(s, Some(m)), ());
                }
            }
        }
    }
    let cycling = wf.cycle.is_some().then(|| CyclePlan::new(wf, &graph, &plan_tmp));
    Ok(Plan { workflow, graph, step_first, scatter, step_order: order, cycling })
}

/// Steps in an order where every step follows its dependencies. Validation reports cycles
/// with the references that close them; a model built without it gets a plain diagnostic
/// at one step of the cycle.
#[allow(clippy::result_large_err)] // one Diag, built once per compile
fn step_order(wf: &Workflow) -> Result<Vec<StepIdx>, Diag> {
    let mut g: DiGraph<StepIdx, ()> = DiGraph::with_capacity(wf.steps.len(), wf.steps.len());
    for i in 0..wf.steps.len() {
        g.add_node(i);
    }
    for (i, s) in wf.steps.iter().enumerate() {
        for &d in &s.deps {
            g.add_edge(NodeIndex::new(d), NodeIndex::new(i), ());
        }
    }
    match toposort(&g, None) {
        Ok(order) => {
            // Shown by `plan` in this order: by stage (longest chain of dependencies
            // before the step), then as written, which reads better than the depth-first
            // order of the sort.
            let mut stage = vec![0usize; wf.steps.len()];
            for n in &order {
                let s = g[*n];
                stage[s] = wf.steps[s].deps.iter().map(|&d| stage[d] + 1).max().unwrap_or(0);
            }
            let mut steps: Vec<StepIdx> = (0..wf.steps.len()).collect();
            steps.sort_by_key(|&s| (stage[s], s));
            Ok(steps)
        }
        Err(cycle) => {
            let step = &wf.steps[g[cycle.node_id()]];
            Err(Diag::new(
                DiagKind::Cycle,
                &wf.namespaces[step.ns].file,
                step.span,
                format!("steps.{}", step.local_name),
                format!("dependency cycle through `{}`", step.name),
            ))
        }
    }
}

/// If `v` is exactly `${{ steps.A.out.x }}` (or `.values.x`) with `A` scattered, the
/// deferred list of A's member outputs.
fn deferred_outputs(wf: &Workflow, scatter: &[Option<ScatterTable>], s: StepIdx, v: &ValueExpr) -> Option<ScatterList> {
    let ValueExpr::Tpl(t) = v else { return None };
    if !t.tpl.is_single_expr() {
        return None;
    }
    let refs = t.tpl.references();
    let [r] = refs.as_slice() else { return None };
    // The expression must be the bare reference, not e.g. `len(steps.a.out.x)`.
    let inner = t.src.trim().trim_start_matches("${{").trim_end_matches("}}").trim();
    if inner != r.path.join(".") {
        return None;
    }
    let path: Vec<&str> = r.path.iter().map(String::as_str).collect();
    match resolve(wf, wf.steps[s].ns, Ctx::ScatterOver(s), &path).ok()? {
        Resolved::StepOut(a, name) => {
            scatter[a].as_ref().map(|ta| ScatterList::Outputs { step: a, values: false, name, len: ta.len })
        }
        Resolved::StepValue(a, name) => {
            scatter[a].as_ref().map(|ta| ScatterList::Outputs { step: a, values: true, name, len: ta.len })
        }
        _ => None,
    }
}

fn scatter_list(
    wf: &Workflow,
    scatter: &[Option<ScatterTable>],
    s: StepIdx,
    v: &ValueExpr,
) -> Result<ScatterList, ScatterListError> {
    if let Some(d) = deferred_outputs(wf, scatter, s, v) {
        return Ok(d);
    }
    let scope = StaticScope { wf, ns: wf.steps[s].ns, ctx: Ctx::ScatterOver(s) };
    match eval_value(v, &scope) {
        Ok(Value::List(items)) => Ok(ScatterList::Values(items)),
        Ok(other) => Err(ScatterListError::NotAList(other.type_of())),
        Err(e) => Err(ScatterListError::Eval(e)),
    }
}

/// Splits a step's dependencies into those that need all of the upstream (direct) and those
/// reached only through a member-wise scatter variable.
fn split_deps(wf: &Workflow, scatter: &[Option<ScatterTable>], s: StepIdx) -> (Vec<StepIdx>, Vec<StepIdx>) {
    let step = &wf.steps[s];
    let mut memberwise: BTreeSet<StepIdx> = BTreeSet::new();
    let mut deferred_sites: Vec<String> = vec![];
    if let (Some(sc), Some(_)) = (&step.scatter, &scatter[s]) {
        for v in sc.vars.values() {
            if let Some(ScatterList::Outputs { step: a, .. }) = deferred_outputs(wf, scatter, s, v) {
                memberwise.insert(a);
                if let ValueExpr::Tpl(t) = v {
                    deferred_sites.push(t.src.clone());
                }
            }
        }
    }
    let mut direct: BTreeSet<StepIdx> = step.after.iter().copied().collect();
    for (ns, ctx, t, _, _) in step_sites(wf, s) {
        if matches!(ctx, Ctx::ScatterOver(_)) && deferred_sites.contains(&t.src) {
            continue;
        }
        direct.extend(sources(wf, ns, ctx, &t).into_iter().map(|(a, _)| a));
    }
    let memberwise = memberwise.difference(&direct).copied().collect();
    (direct.into_iter().collect(), memberwise)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::span::SourceFile;

    fn workflow(text: &str) -> Workflow {
        let file = SourceFile::new("wf.yaml", text);
        let raw = crate::spec::parse(&file).expect("parses");
        crate::validate::validate(file, raw, &Default::default()).expect("valid")
    }

    fn names(wf: &Workflow, order: &[StepIdx]) -> Vec<String> {
        order.iter().map(|&s| wf.steps[s].name.clone()).collect()
    }

    #[test]
    fn steps_are_ordered_by_stage_then_as_written() {
        let wf = workflow(
            "name: w\nsteps:\n  report:\n    run: [cat, \"${{ steps.fit.out.f }}\", \"${{ steps.b.out.x }}\"]\n  \
             fit:\n    run: [fit, \"${{ steps.a.out.x }}\"]\n    out: { f: f }\n  \
             b:\n    run: [b]\n    out: { x: x }\n  a:\n    run: [a]\n    out: { x: x }\n",
        );
        let order = step_order(&wf).unwrap();
        assert_eq!(names(&wf, &order), ["b", "a", "fit", "report"]);
        let plan = compile(Arc::new(wf)).unwrap();
        assert_eq!(plan.step_order, order);
    }

    #[test]
    fn a_cycle_in_an_unvalidated_model_is_a_diagnostic() {
        let mut wf = workflow("name: w\nsteps:\n  a:\n    run: [a]\n  b:\n    run: [b]\n");
        wf.steps[0].deps = vec![1];
        wf.steps[1].deps = vec![0];
        let d = step_order(&wf).unwrap_err();
        assert_eq!(d.kind, DiagKind::Cycle);
        assert!(d.message.starts_with("dependency cycle through"), "{}", d.message);
    }
}
