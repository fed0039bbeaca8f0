//! The run's DAG as SVG: one node per step (a scattered step's members folded into it, with
//! their counts by state), coloured by the state of its tasks, in columns by depth (a
//! step's column is one past its deepest dependency's), edges from dependency to
//! dependant.

use std::collections::HashMap;
use std::fmt::Write;

use super::{RunRecord, escape, state_colour};
use crate::events::TaskState;

const W: i64 = 180;
const H: i64 = 50;
const GAP_X: i64 = 60;
const GAP_Y: i64 = 18;
const PAD: i64 = 12;

/// A step as drawn: its name, dependencies and its tasks' states.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StepNode {
    /// Step name.
    pub name: String,
    /// Names of the steps it depends on.
    pub deps: Vec<String>,
    /// Tasks by state, in [`TaskState`] order.
    pub states: Vec<(TaskState, usize)>,
    /// Scattered.
    pub scatter: bool,
}

impl StepNode {
    /// The state the node is coloured by: the most telling one among its tasks.
    pub fn state(&self) -> &'static str {
        let has = |s| self.states.iter().any(|(t, n)| *t == s && *n > 0);
        for s in [
            TaskState::Failed,
            TaskState::Running,
            TaskState::UpstreamFailed,
            TaskState::Cancelled,
            TaskState::Pending,
            TaskState::Succeeded,
            TaskState::Cached,
            TaskState::Skipped,
        ] {
            if has(s) {
                return s.as_str();
            }
        }
        "pending"
    }

    /// Tasks.
    pub fn total(&self) -> usize {
        self.states.iter().map(|(_, n)| n).sum()
    }
}

const ORDER: [TaskState; 8] = [
    TaskState::Succeeded,
    TaskState::Cached,
    TaskState::Skipped,
    TaskState::Failed,
    TaskState::UpstreamFailed,
    TaskState::Cancelled,
    TaskState::Running,
    TaskState::Pending,
];

/// The steps of a run with their tasks' states: those of the workflow snapshot in its
/// order, else those the tasks name.
pub fn steps(rec: &RunRecord) -> Vec<StepNode> {
    let mut nodes: Vec<StepNode> = match &rec.workflow {
        Some(w) => w
            .steps
            .iter()
            .map(|s| StepNode { name: s.name.clone(), deps: s.deps.clone(), scatter: s.scatter, states: vec![] })
            .collect(),
        None => vec![],
    };
    let mut counts: HashMap<&str, HashMap<&'static str, usize>> = HashMap::new();
    for t in &rec.tasks {
        if !nodes.iter().any(|n| n.name == t.row.step) {
            nodes.push(StepNode { name: t.row.step.clone(), ..StepNode::default() });
        }
        *counts.entry(&t.row.step).or_default().entry(t.row.state.as_str()).or_default() += 1;
        if t.row.member.is_some()
            && let Some(n) = nodes.iter_mut().find(|n| n.name == t.row.step)
        {
            n.scatter = true;
        }
    }
    for n in &mut nodes {
        if let Some(c) = counts.get(n.name.as_str()) {
            n.states = ORDER.iter().filter_map(|s| c.get(s.as_str()).map(|k| (*s, *k))).collect();
        }
    }
    nodes
}

/// Column of each node: 0 for steps without dependencies, else one past the deepest
/// dependency.
pub fn depths(nodes: &[StepNode]) -> Vec<usize> {
    let index: HashMap<&str, usize> = nodes.iter().enumerate().map(|(i, n)| (n.name.as_str(), i)).collect();
    let mut depth: Vec<Option<usize>> = vec![None; nodes.len()];
    fn visit(
        i: usize,
        nodes: &[StepNode],
        index: &HashMap<&str, usize>,
        depth: &mut Vec<Option<usize>>,
        guard: usize,
    ) -> usize {
        if let Some(d) = depth[i] {
            return d;
        }
        // A cycle cannot come from a validated workflow; the guard keeps a hand-edited
        // snapshot from recursing forever.
        if guard > nodes.len() {
            return 0;
        }
        let d = nodes[i]
            .deps
            .iter()
            .filter_map(|d| index.get(d.as_str()))
            .map(|&j| visit(j, nodes, index, depth, guard + 1) + 1)
            .max()
            .unwrap_or(0);
        depth[i] = Some(d);
        d
    }
    (0..nodes.len()).map(|i| visit(i, nodes, &index, &mut depth, 0)).collect()
}

/// The DAG as an `<svg id="dag">` element.
pub fn render(rec: &RunRecord) -> String {
    let nodes = steps(rec);
    let depth = depths(&nodes);
    let cols = depth.iter().max().map_or(0, |d| d + 1);
    let mut row_in_col = vec![0i64; cols.max(1)];
    let mut pos = vec![(0i64, 0i64); nodes.len()];
    for (i, d) in depth.iter().enumerate() {
        pos[i] = (PAD + *d as i64 * (W + GAP_X), PAD + row_in_col[*d] * (H + GAP_Y));
        row_in_col[*d] += 1;
    }
    let rows = row_in_col.iter().copied().max().unwrap_or(0).max(1);
    let width = PAD * 2 + cols.max(1) as i64 * (W + GAP_X) - GAP_X;
    let height = PAD * 2 + rows * (H + GAP_Y) - GAP_Y;
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg id="dag" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" aria-label="workflow graph">"#
    );
    s.push_str(r##"<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#888"/></marker></defs>"##);
    let index: HashMap<&str, usize> = nodes.iter().enumerate().map(|(i, n)| (n.name.as_str(), i)).collect();
    for (i, n) in nodes.iter().enumerate() {
        for d in &n.deps {
            let Some(&j) = index.get(d.as_str()) else { continue };
            let (x1, y1) = (pos[j].0 + W, pos[j].1 + H / 2);
            let (x2, y2) = (pos[i].0, pos[i].1 + H / 2);
            let mx = (x1 + x2) / 2;
            let _ = write!(
                s,
                r##"<path class="edge" d="M{x1},{y1} C{mx},{y1} {mx},{y2} {x2},{y2}" fill="none" stroke="#888" stroke-width="1.5" marker-end="url(#arrow)"/>"##
            );
        }
    }
    for (i, n) in nodes.iter().enumerate() {
        let (x, y) = pos[i];
        let state = n.state();
        let fill = state_colour(state);
        let text = if matches!(state, "pending" | "upstream-failed" | "cached") { "#212121" } else { "#ffffff" };
        let label = if n.scatter { format!("{} ×{}", n.name, n.total()) } else { n.name.clone() };
        let counts: Vec<String> = n.states.iter().map(|(st, k)| format!("{k} {}", st.as_str())).collect();
        let counts = if counts.is_empty() { "no tasks".to_string() } else { counts.join(", ") };
        let _ = write!(
            s,
            r##"<g class="node" data-step="{name}" data-state="{state}"><title>{name}: {counts}</title><rect x="{x}" y="{y}" width="{W}" height="{H}" rx="6" fill="{fill}" stroke="#424242" stroke-width="1"/><text x="{tx}" y="{ty1}" fill="{text}" font-size="13" font-weight="600" text-anchor="middle">{label}</text><text x="{tx}" y="{ty2}" fill="{text}" font-size="10.5" text-anchor="middle">{short}</text></g>"##,
            name = escape(&n.name),
            tx = x + W / 2,
            ty1 = y + 20,
            ty2 = y + 38,
            label = escape(&clip(&label, 24)),
            short = escape(&clip(&counts, 32)),
        );
    }
    s.push_str("</svg>");
    s
}

/// `text` cut to `n` characters, with an ellipsis.
pub fn clip(text: &str, n: usize) -> String {
    if text.chars().count() <= n {
        text.to_string()
    } else {
        let mut t: String = text.chars().take(n.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}
