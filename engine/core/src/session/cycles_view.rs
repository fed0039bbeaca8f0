//! `twinflow plan` of a cycling workflow: the first cycles (`--cycles N`) with each task's
//! command as run in its cycle, and the edges between cycles (`prev.*` links, reads of a
//! `once: first` step from later cycles).

use std::fmt::Write;
use std::path::Path;

use petgraph::Direction;
use petgraph::graph::NodeIndex;

use super::render::{Format, RenderOptions, command_in, node_id, quote, shown_members};
use crate::execute::Rendered;
use crate::model::{Point, Start};
use crate::plan::{Plan, TaskNode};
use crate::run::scope::CycleData;

/// The cycles shown: index, point, whether it is the last.
fn cycles(plan: &Plan, n: u32) -> Vec<(u64, Point, bool)> {
    let Some(spec) = &plan.workflow.cycle else { return vec![] };
    let start = match spec.start {
        Start::At(p) => p,
        Start::Now => Point::Time(jiff::Timestamp::from_second(jiff::Timestamp::now().as_second()).unwrap_or_default()),
    };
    let count = spec.count(start);
    let shown = count.map_or(u64::from(n), |c| c.min(u64::from(n)));
    (0..shown).map(|k| (k, spec.point(start, k), count.is_some_and(|c| k + 1 == c))).collect()
}

/// Edges into `i` of cycle `k` from earlier cycles: (cycle, node).
fn cross_edges(plan: &Plan, i: NodeIndex, k: u64, last: bool) -> Vec<(u64, NodeIndex)> {
    let mut out = vec![];
    if k == 0 {
        return out;
    }
    for u in plan.graph.neighbors_directed(i, Direction::Incoming) {
        if !plan.runs_in(u, k, last) {
            out.push((0, u));
        }
    }
    if let Some(cp) = &plan.cycling {
        out.extend(cp.prev_deps[i.index()].iter().map(|&p| (k - 1, p)));
    }
    out
}

pub(super) fn render(plan: &Plan, format: Format, kernel: &Path, opts: &RenderOptions<'_>) -> String {
    let wf = &*plan.workflow;
    let Some(spec) = &wf.cycle else { return String::new() };
    let shown = cycles(plan, opts.cycles.max(1));
    let mut out = String::new();
    let every = match spec.every {
        crate::model::Every::Int(i) => i.to_string(),
        crate::model::Every::Time(d) => crate::units::format_duration(d),
    };
    let total = match spec.end {
        None => "until stopped".to_string(),
        Some(_) => {
            shown.first().and_then(|(_, p, _)| spec.count(*p)).map_or_else(String::new, |n| format!("{n} cycles"))
        }
    };
    let node = |i: NodeIndex| plan.graph[i];
    match format {
        Format::Text | Format::Json => {
            let mut tasks = vec![];
            let _ = writeln!(
                out,
                "workflow {} (cycling every {every}, {total}, runahead {}{}); the first {}:",
                wf.name,
                spec.runahead,
                spec.keep.map(|k| format!(", keep {k}")).unwrap_or_default(),
                if shown.len() == 1 { "cycle".to_string() } else { format!("{} cycles", shown.len()) }
            );
            for (k, point, last) in &shown {
                let data = CycleData::new(*k, Some(*point), *last, 0);
                let _ = writeln!(out, "\ncycle {point}");
                for &s in &plan.step_order {
                    let first = plan.node(s, plan.scatter[s].as_ref().map(|_| 0));
                    if !plan.runs_in(first, *k, *last) {
                        continue;
                    }
                    let st = &wf.steps[s];
                    let mut after: Vec<String> = st
                        .deps
                        .iter()
                        .filter(|&&d| plan.runs_in(plan.node(d, plan.scatter[d].as_ref().map(|_| 0)), *k, *last))
                        .map(|d| wf.steps[*d].name.clone())
                        .collect();
                    for (c, u) in cross_edges(plan, first, *k, *last) {
                        let name = plan.task_name(node(u));
                        let label = shown.iter().find(|x| x.0 == c).map_or(c.to_string(), |x| x.1.label());
                        after.push(format!("{label}/{name}"));
                    }
                    after.dedup();
                    let waits = st.wait.as_ref().map(|_| " (waits for its triggers)").unwrap_or_default();
                    let _ = writeln!(
                        out,
                        "  step {}{waits}: after {}",
                        st.name,
                        if after.is_empty() { "-".into() } else { after.join(", ") }
                    );
                    let (members, rest) = shown_members(plan, s, opts.max_members);
                    for n in members {
                        let name = format!("{}/{}", point.label(), plan.task_name(n));
                        let cmd = match command_in(plan, n, kernel, opts, &data) {
                            Ok(Rendered::Argv(a)) => a.iter().map(|x| quote(x)).collect::<Vec<_>>().join(" "),
                            Ok(Rendered::Script(sc)) => format!(
                                "script\n{}",
                                sc.lines().map(|l| format!("    | {l}")).collect::<Vec<_>>().join("\n")
                            ),
                            Err(e) => format!("<cannot resolve: {e}>"),
                        };
                        let _ = writeln!(out, "    {name}: {cmd}");
                        tasks.push(serde_json::json!({ "cycle": k, "point": point.to_string(), "task": name, "step": st.name, "after": after, "command": cmd }));
                    }
                    if rest > 0 {
                        let _ = writeln!(out, "    ... and {rest} more members");
                    }
                }
            }
            if format == Format::Json {
                let v = serde_json::json!({ "workflow": wf.name, "cycling": { "every": every, "runahead": spec.runahead }, "tasks": tasks });
                out = serde_json::to_string_pretty(&v).unwrap_or_default();
                out.push('\n');
            }
        }
        Format::Dot | Format::Mermaid => {
            let dot = format == Format::Dot;
            out.push_str(if dot {
                "digraph workflow {\n  rankdir=LR;\n  node [shape=box];\n"
            } else {
                "flowchart LR\n"
            });
            let id = |k: u64, n: TaskNode| node_id(plan, &format!("c{k}"), n);
            let mut shown_nodes = std::collections::HashSet::new();
            for (k, point, last) in &shown {
                let _ = if dot {
                    writeln!(out, "  subgraph cluster_{k} {{\n    label=\"cycle {point}\";")
                } else {
                    writeln!(out, "  subgraph c{k}[\"cycle {point}\"]")
                };
                for &s in &plan.step_order {
                    let (members, _) = shown_members(plan, s, opts.max_members);
                    let mut nodes: Vec<TaskNode> = members;
                    if plan.scatter[s].is_some() {
                        nodes.push(TaskNode { step: s as u32, member: TaskNode::JOIN });
                    }
                    for n in nodes {
                        let i = if n.is_join() { plan.join(s) } else { Some(plan.node(s, n.member_index())) };
                        let Some(i) = i else { continue };
                        if !plan.runs_in(i, *k, *last) {
                            continue;
                        }
                        shown_nodes.insert((*k, n));
                        let label = plan.task_name(n);
                        let _ = match (dot, n.is_join()) {
                            (true, false) => writeln!(out, "    {} [label=\"{label}\"];", id(*k, n)),
                            (true, true) => writeln!(out, "    {} [label=\"{label}\", shape=ellipse];", id(*k, n)),
                            (false, false) => writeln!(out, "    {}[\"{label}\"]", id(*k, n)),
                            (false, true) => writeln!(out, "    {}([\"{label}\"])", id(*k, n)),
                        };
                    }
                }
                out.push_str(if dot { "  }\n" } else { "  end\n" });
            }
            let arrow = |out: &mut String, a: String, b: String, cross: bool| {
                let _ = match (dot, cross) {
                    (true, false) => writeln!(out, "  {a} -> {b};"),
                    (true, true) => writeln!(out, "  {a} -> {b} [style=dashed];"),
                    (false, false) => writeln!(out, "  {a} --> {b}"),
                    (false, true) => writeln!(out, "  {a} -.-> {b}"),
                };
            };
            for (k, _, last) in &shown {
                for e in plan.graph.raw_edges() {
                    let (a, b) = (node(e.source()), node(e.target()));
                    if shown_nodes.contains(&(*k, a)) && shown_nodes.contains(&(*k, b)) {
                        arrow(&mut out, id(*k, a), id(*k, b), false);
                    }
                }
                for i in plan.graph.node_indices() {
                    if !shown_nodes.contains(&(*k, node(i))) {
                        continue;
                    }
                    for (c, u) in cross_edges(plan, i, *k, *last) {
                        if shown_nodes.contains(&(c, node(u))) {
                            arrow(&mut out, id(c, node(u)), id(*k, node(i)), true);
                        }
                    }
                }
            }
            if dot {
                out.push_str("}\n");
            }
        }
    }
    out
}
