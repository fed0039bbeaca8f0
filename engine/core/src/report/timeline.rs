//! The timeline (Gantt) of every attempt as SVG: time runs left to right; each attempt is a
//! bar coloured by how it ended, in the first lane free at its start (so the lanes are the
//! slots used at once); a retry is drawn with a dashed outline and `#N`. A cycling run has
//! a band of lanes per cycle, and a gated task's wait for its trigger (from the cycle's
//! start to its first attempt) is a hatched bar.

use std::collections::BTreeMap;
use std::fmt::Write;

use super::{RunRecord, dag_svg::clip, duration, escape, state_colour};
use crate::state::AttemptState;

const LABEL_W: f64 = 150.0;
const PLOT_W: f64 = 900.0;
const LANE_H: f64 = 20.0;
const AXIS_H: f64 = 28.0;
const BAND_H: f64 = 18.0;

/// One bar of the timeline.
#[derive(Debug, Clone, PartialEq)]
pub struct Bar {
    /// Task name.
    pub task: String,
    /// Attempt number (0 for a trigger wait).
    pub attempt: u32,
    /// `succeeded`, `failed`, `cancelled`, `running`, or `waiting` (a trigger wait).
    pub state: &'static str,
    /// Start (ms).
    pub start: i64,
    /// End (ms).
    pub end: i64,
    /// Cycle index, in a cycling run.
    pub cycle: Option<u64>,
}

/// The bars of a run: every attempt that started, and the trigger waits of gated tasks.
pub fn bars(rec: &RunRecord) -> Vec<Bar> {
    let mut out = vec![];
    for t in &rec.tasks {
        for a in &t.attempts {
            let Some(start) = a.started_at else { continue };
            let state = match a.state {
                AttemptState::Running => "running",
                AttemptState::Succeeded => "succeeded",
                AttemptState::Failed if a.detail.as_deref() == Some("cancelled") => "cancelled",
                AttemptState::Failed => "failed",
            };
            let end = a.finished_at.unwrap_or(rec.now_ms).max(start);
            out.push(Bar { task: t.row.task.clone(), attempt: a.attempt, state, start, end, cycle: t.row.cycle });
        }
        // A gated task waited from its cycle's start until its trigger was satisfied (its
        // first attempt started).
        if t.row.gate.is_some()
            && let Some(c) = t.row.cycle.and_then(|c| rec.cycles.iter().find(|r| r.cycle == c))
            && let (Some(from), Some(to)) = (c.started_at, t.attempts.first().and_then(|a| a.started_at))
            && to > from
        {
            out.push(Bar {
                task: t.row.task.clone(),
                attempt: 0,
                state: "waiting",
                start: from,
                end: to,
                cycle: t.row.cycle,
            });
        }
    }
    out.sort_by_key(|b| (b.cycle, b.start, b.attempt));
    out
}

/// Lane of each bar (bars in the same group never overlap in a lane): the first lane whose
/// last bar ended by the bar's start.
pub fn lanes(bars: &[Bar]) -> Vec<usize> {
    let mut ends: BTreeMap<Option<u64>, Vec<i64>> = BTreeMap::new();
    bars.iter()
        .map(|b| {
            let lanes = ends.entry(b.cycle).or_default();
            match lanes.iter().position(|e| *e <= b.start) {
                Some(i) => {
                    lanes[i] = b.end;
                    i
                }
                None => {
                    lanes.push(b.end);
                    lanes.len() - 1
                }
            }
        })
        .collect()
}

/// The timeline as an `<svg id="timeline">` element.
pub fn render(rec: &RunRecord) -> String {
    let bars = bars(rec);
    let lane = lanes(&bars);
    let t0 = bars.iter().map(|b| b.start).min().or(rec.run.as_ref().map(|r| r.created_at)).unwrap_or(0);
    let t1 = bars.iter().map(|b| b.end).max().unwrap_or(t0).max(t0 + 1);
    let span = (t1 - t0) as f64;
    let x = |t: i64| LABEL_W + (t - t0) as f64 / span * PLOT_W;
    // Groups (cycles) in order, each with its number of lanes and its top.
    let mut groups: BTreeMap<Option<u64>, usize> = BTreeMap::new();
    for (b, l) in bars.iter().zip(&lane) {
        let g = groups.entry(b.cycle).or_default();
        *g = (*g).max(l + 1);
    }
    let cycling = groups.keys().any(Option::is_some);
    let mut top = BTreeMap::new();
    let mut y = AXIS_H;
    for (g, n) in &groups {
        if cycling {
            y += BAND_H;
        }
        top.insert(*g, y);
        y += *n as f64 * LANE_H + 4.0;
    }
    let height = (y + 6.0).max(AXIS_H + LANE_H);
    let width = LABEL_W + PLOT_W + 20.0;
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg id="timeline" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height:.0}" viewBox="0 0 {width} {height:.0}" role="img" aria-label="timeline of attempts">"#
    );
    s.push_str(r##"<defs><pattern id="wait" width="6" height="6" patternUnits="userSpaceOnUse" patternTransform="rotate(45)"><rect width="6" height="6" fill="#fff8e1"/><line x1="0" y1="0" x2="0" y2="6" stroke="#ffb300" stroke-width="2"/></pattern></defs>"##);
    // Axis: about six ticks at round seconds from the start.
    let step = nice_step(span / 6.0);
    let mut t = 0.0;
    while t <= span + 0.5 {
        let xt = LABEL_W + t / span * PLOT_W;
        let _ = write!(
            s,
            r##"<line x1="{xt:.1}" y1="{a}" x2="{xt:.1}" y2="{height:.0}" stroke="#eee"/><text x="{xt:.1}" y="14" font-size="10" text-anchor="middle" fill="#555">+{lbl}</text>"##,
            a = AXIS_H - 8.0,
            lbl = duration(t as i64),
        );
        t += step;
    }
    for (g, n) in &groups {
        let gy = top[g];
        if let Some(c) = g {
            let point = rec.cycles.iter().find(|r| r.cycle == *c).map_or_else(|| c.to_string(), |r| r.point.clone());
            let _ = write!(
                s,
                r##"<g class="cycle" data-cycle="{c}"><rect x="0" y="{by:.0}" width="{width}" height="{BAND_H}" fill="#eceff1"/><text x="6" y="{ty:.0}" font-size="11" font-weight="600" fill="#37474f">cycle {p}</text></g>"##,
                by = gy - BAND_H,
                ty = gy - 5.0,
                p = escape(&point),
            );
        }
        for l in 0..*n {
            let _ = write!(
                s,
                r##"<text x="6" y="{ty:.0}" font-size="10" fill="#888">slot {k}</text>"##,
                ty = gy + l as f64 * LANE_H + 14.0,
                k = l + 1
            );
        }
    }
    for (b, l) in bars.iter().zip(&lane) {
        let by = top[&b.cycle] + *l as f64 * LANE_H + 2.0;
        let (x1, x2) = (x(b.start), x(b.end));
        let w = (x2 - x1).max(2.0);
        let fill = if b.state == "waiting" { "url(#wait)".to_string() } else { state_colour(b.state).to_string() };
        let retry = b.attempt > 1;
        let dash = if retry { r##" stroke="#000" stroke-dasharray="3,2""## } else { r##" stroke="#fff""## };
        let name = if b.attempt == 0 {
            format!("{} waits for its trigger", b.task)
        } else if retry {
            format!("{} #{}", b.task, b.attempt)
        } else {
            b.task.clone()
        };
        let _ = write!(
            s,
            r#"<g class="bar" data-task="{task}" data-attempt="{a}" data-state="{st}"><title>{title}</title><rect x="{x1:.1}" y="{by:.1}" width="{w:.1}" height="{h}" rx="2" fill="{fill}"{dash}/>"#,
            task = escape(&b.task),
            a = b.attempt,
            st = b.state,
            title = escape(&format!("{name}: {} ({})", b.state, duration(b.end - b.start))),
            h = LANE_H - 4.0,
        );
        // The label goes inside the bar when it fits (about 6 px a character).
        let label = clip(&name, ((w - 6.0) / 6.0).max(0.0) as usize);
        if w > 30.0 {
            let colour = if b.state == "waiting" { "#5d4037" } else { "#fff" };
            let _ = write!(
                s,
                r#"<text x="{tx:.1}" y="{ty:.1}" font-size="10" fill="{colour}">{label}</text>"#,
                tx = x1 + 3.0,
                ty = by + 12.0,
                label = escape(&label)
            );
        }
        s.push_str("</g>");
    }
    if bars.is_empty() {
        let _ = write!(
            s,
            r##"<text x="{LABEL_W}" y="{}" font-size="12" fill="#777">no attempt has started</text>"##,
            AXIS_H + 14.0
        );
    }
    s.push_str("</svg>");
    s
}

/// A round step (1, 2 or 5 × a power of ten ms) near `ms`.
fn nice_step(ms: f64) -> f64 {
    let ms = ms.max(1.0);
    let p = 10f64.powf(ms.log10().floor());
    [1.0, 2.0, 5.0, 10.0].iter().map(|m| m * p).find(|v| *v >= ms).unwrap_or(10.0 * p)
}
