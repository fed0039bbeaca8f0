//! The checks that need the whole model: references and types, dependencies and cycles,
//! plus the value checks for parameters, resources and durations.

use std::collections::BTreeSet;
use std::time::Duration;

use petgraph::algo::tarjan_scc;
use petgraph::graph::{DiGraph, NodeIndex};

use super::Validator;
use super::types::Types;
use crate::diag::{Diag, DiagKind};
use crate::expr::{Type, Value};
use crate::model::*;
use crate::spec::raw::Scalar;
use crate::spec::span::{SourceFile, Sp, Span};
use crate::suggest::did_you_mean;
use crate::units;

/// One reason a step depends on another, for cycle messages.
struct Edge {
    from: StepIdx,
    to: StepIdx,
    span: Span,
    ns: NsIdx,
}

impl Validator {
    pub(super) fn duration(&mut self, file: &SourceFile, field: &str, v: &Sp<Scalar>) -> Option<Duration> {
        let text = v.value.to_string();
        match units::parse_duration(&text) {
            Ok(d) => Some(d),
            Err(msg) => {
                self.push(Diag::new(DiagKind::InvalidValue, file, v.span, field, msg.to_string()));
                None
            }
        }
    }

    /// Evaluates resource counts written as expressions, with the step's parameters
    /// (they must be known before the run: a step's resources do not depend on outputs).
    pub(super) fn resolve_counts(&mut self) {
        for (s, field, t, min) in std::mem::take(&mut self.pending_counts) {
            let ns = self.wf.steps[s].ns;
            let scope = StaticScope { wf: &self.wf, ns, ctx: Ctx::Namespace };
            let got = match t.tpl.eval(&scope) {
                Ok(Value::Int(i)) if i >= i64::from(min) && i <= 1_000_000 => Ok(i as u32),
                Ok(Value::Int(i)) => Err(format!("`{i}` is out of range (at least {min})")),
                Ok(other) => Err(format!("expected an integer, found `{other}` ({})", other.type_of())),
                Err(e) => Err(e.message),
            };
            match got {
                Ok(n) => {
                    let r = &mut self.wf.steps[s].resources;
                    match field.rsplit('.').next().unwrap_or("") {
                        "ranks" => r.ranks = n,
                        "threads" => r.threads = n,
                        "nodes" => r.nodes = n,
                        _ => r.gpus = n,
                    }
                }
                Err(msg) => {
                    let file = self.file(ns);
                    self.push(
                        Diag::new(DiagKind::InvalidValue, &file, t.span, field, msg)
                            .with_help("resource counts may use parameters (`${{ params.ranks }}`), not step outputs"),
                    );
                }
            }
        }
    }

    fn sites(&self) -> Vec<Site> {
        sites(&self.wf)
    }

    pub(super) fn check_references(&mut self) {
        for (ns, ctx, t, field, want) in self.sites() {
            // Skip expressions that refer to a broken step, or, inside a broken step, to its
            // inputs and scatter variables (those with problems were left out of the model).
            let in_broken_step = ctx.step().is_some_and(|s| {
                let st = &self.wf.steps[s];
                self.broken.contains(&(st.ns, st.local_name.clone()))
            });
            // A broken step's output names are still known: asking for one it does not
            // declare is reported, whatever else is wrong with that step.
            let declares = |s: &String, r: &crate::expr::Reference| match (
                self.wf.namespaces[ns].names.get(s),
                r.path.get(2).map(String::as_str),
                r.path.get(3),
            ) {
                (Some(LocalName::Step(i)), Some("out"), Some(o)) => self.wf.steps[*i].outputs.contains_key(o),
                (Some(LocalName::Step(i)), Some("values"), Some(o)) => self.wf.steps[*i].values.contains_key(o),
                _ => true,
            };
            let refers_to_broken = t.tpl.references().iter().any(|r| match r.path.first().map(String::as_str) {
                Some("steps") => {
                    r.path.get(1).is_some_and(|s| self.broken.contains(&(ns, s.clone())) && declares(s, r))
                }
                Some("in" | "scatter") => in_broken_step,
                _ => false,
            });
            if refers_to_broken {
                continue;
            }
            let file = self.file(ns);
            let ty = t.tpl.infer_type(&Types { wf: &self.wf, ns, ctx, depth: 0 });
            match ty {
                Err(e) => {
                    let kind = if e.message.starts_with("unknown") || e.message.contains("has no") {
                        DiagKind::UnknownReference
                    } else {
                        DiagKind::Expression
                    };
                    let mut d = Diag::new(kind, &file, t.span.sub(e.span.start, e.span.end), field, e.message.clone());
                    if let Some(h) = &e.help {
                        d = d.with_help(h.clone());
                    }
                    self.push(d);
                }
                Ok(ty) => {
                    if let Some(want) = &want
                        && !want.accepts(&ty)
                    {
                        self.push(Diag::new(
                            DiagKind::Type,
                            &file,
                            t.span,
                            field.clone(),
                            format!("expected `{want}`, found `{ty}`"),
                        ));
                    }
                    // `want` is `None` for a whole scatter expression (see `model::sites`).
                    if matches!(ctx, Ctx::ScatterOver(_)) && want.is_none() && !matches!(ty, Type::List(_) | Type::Any)
                    {
                        self.push(
                            Diag::new(
                                DiagKind::Type,
                                &file,
                                t.span,
                                field,
                                format!("scatter variables need a list, found `{ty}`"),
                            )
                            .with_help("write a YAML list, or an expression such as `${{ range(0, params.members) }}`"),
                        );
                    }
                }
            }
        }
    }

    fn steps_of_namespace(&self, ns: NsIdx, out: &mut Vec<StepIdx>) {
        for l in self.wf.namespaces[ns].names.values() {
            match l {
                LocalName::Step(s) => out.push(*s),
                LocalName::Call(c) => self.steps_of_namespace(*c, out),
            }
        }
    }

    pub(super) fn compute_deps_and_cycles(&mut self) {
        let mut edges: Vec<Edge> = vec![];
        for (ns, ctx, t, _, _) in self.sites() {
            let Some(to) = ctx.step() else { continue };
            edges.extend(sources(&self.wf, ns, ctx, &t).into_iter().map(|(from, span)| Edge { from, to, span, ns }));
        }
        for (to, names) in std::mem::take(&mut self.pending_after) {
            let ns = self.wf.steps[to].ns;
            for n in names {
                match self.wf.namespaces[ns].names.get(n.value.as_str()).copied() {
                    Some(LocalName::Step(from)) => {
                        edges.push(Edge { from, to, span: n.span, ns });
                        self.wf.steps[to].after.push(from);
                    }
                    Some(LocalName::Call(c)) => {
                        let mut all = vec![];
                        self.steps_of_namespace(c, &mut all);
                        self.wf.steps[to].after.extend(all.iter().copied());
                        edges.extend(all.into_iter().map(|from| Edge { from, to, span: n.span, ns }));
                    }
                    None => {
                        let file = self.file(ns);
                        let mut d = Diag::new(
                            DiagKind::UnknownReference,
                            &file,
                            n.span,
                            format!("steps.{}.after", self.wf.steps[to].local_name),
                            format!("unknown step `{}`", n.value),
                        );
                        if let Some(h) = did_you_mean(&n.value, self.wf.namespaces[ns].names.keys().map(String::as_str))
                        {
                            d = d.with_help(h);
                        }
                        self.push(d);
                    }
                }
            }
        }
        let n = self.wf.steps.len();
        let mut deps: Vec<BTreeSet<StepIdx>> = vec![BTreeSet::new(); n];
        let mut g: DiGraph<StepIdx, usize> = DiGraph::with_capacity(n, edges.len());
        for i in 0..n {
            g.add_node(i);
        }
        for (k, e) in edges.iter().enumerate() {
            if deps[e.to].insert(e.from) {
                g.add_edge(NodeIndex::new(e.from), NodeIndex::new(e.to), k);
            }
        }
        for (i, d) in deps.into_iter().enumerate() {
            self.wf.steps[i].deps = d.into_iter().collect();
        }
        for scc in tarjan_scc(&g) {
            let self_loop = scc.len() == 1 && g.find_edge(scc[0], scc[0]).is_some();
            if scc.len() < 2 && !self_loop {
                continue;
            }
            let cycle = find_cycle(&g, &scc);
            let names: Vec<String> = cycle.iter().map(|&i| format!("`{}`", self.wf.steps[i].name)).collect();
            let first = cycle[0];
            let path = format!("{} → {}", names.join(" → "), names[0]);
            // Label every reference that closes the cycle, starting with the one written in
            // the first step (the step the message names).
            let mut labels = vec![];
            for w in 0..cycle.len() {
                let k = cycle.len();
                let (from, to) = (cycle[(w + k - 1) % k], cycle[w]);
                if let Some(e) = edges.iter().find(|e| e.from == from && e.to == to) {
                    labels.push((
                        e.span,
                        e.ns,
                        format!("`{}` depends on `{}` here", self.wf.steps[to].name, self.wf.steps[from].name),
                    ));
                }
            }
            let ns = labels.first().map(|l| l.1).unwrap_or(self.wf.steps[first].ns);
            let file = self.file(ns);
            let primary = labels.first().map(|l| l.0).unwrap_or(self.wf.steps[first].span);
            let mut d = Diag::new(
                DiagKind::Cycle,
                &file,
                primary,
                format!("steps.{}", self.wf.steps[first].local_name),
                format!("dependency cycle: {path}"),
            )
            .with_help("a step cannot depend, directly or through others, on its own outputs");
            if let Some(l) = labels.first() {
                d = d.with_label(l.2.clone());
            }
            for (span, lns, text) in labels.into_iter().skip(1) {
                if lns == ns {
                    d = d.with_secondary(span, text);
                }
            }
            self.push(d);
        }
    }
}

/// A cycle through the nodes of a strongly connected component, in dependency order.
fn find_cycle(g: &DiGraph<StepIdx, usize>, scc: &[NodeIndex]) -> Vec<StepIdx> {
    let start = *scc.iter().min().unwrap_or(&scc[0]);
    let inside: std::collections::HashSet<NodeIndex> = scc.iter().copied().collect();
    // Depth-first search from `start` back to `start`, staying inside the component.
    let mut stack = vec![(start, g.neighbors(start).collect::<Vec<_>>())];
    let mut seen = std::collections::HashSet::from([start]);
    while let Some((_, next)) = stack.last_mut() {
        match next.pop() {
            Some(n) if n == start => return stack.iter().map(|(v, _)| g[*v]).collect(),
            Some(n) if inside.contains(&n) && seen.insert(n) => {
                let nb = g.neighbors(n).collect();
                stack.push((n, nb));
            }
            Some(_) => {}
            None => {
                stack.pop();
            }
        }
    }
    scc.iter().map(|n| g[*n]).collect()
}
