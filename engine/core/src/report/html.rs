//! The HTML page: summary, the alerts the tasks raised, DAG, timeline, figures and tables
//! the steps declare, and the task table. Self-contained: inline CSS and SVG, images as data URIs, no script and no
//! request to anywhere.

use std::collections::HashMap;
use std::fmt::Write;

use base64::Engine as _;

use super::dag_svg::{self, StepNode};
use super::{FigureKind, RunRecord, TaskRecord, bytes, duration, escape, state_colour, time};
use crate::events::{Counts, TaskState};

const CSS: &str = r#"
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#212121;background:#fafafa}
header{background:#263238;color:#fff;padding:14px 24px}
header h1{margin:0;font-size:20px}
main{padding:8px 24px 40px}
section{background:#fff;border:1px solid #e0e0e0;border-radius:6px;margin:14px 0;padding:10px 16px;overflow-x:auto}
h2{font-size:16px;margin:4px 0 10px}
table{border-collapse:collapse;font-size:13px}
th,td{border-bottom:1px solid #eee;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f5f5f5;position:sticky;top:0}
table.summary th{background:none;width:13em;color:#555;font-weight:600}
.badge{display:inline-block;padding:0 7px;border-radius:9px;color:#fff;font-size:12px;font-weight:600}
.num{text-align:right;font-variant-numeric:tabular-nums}
pre{background:#263238;color:#eceff1;padding:6px 8px;border-radius:4px;font-size:12px;max-height:18em;overflow:auto;margin:4px 0}
details summary{cursor:pointer;color:#37474f}
.legend span{display:inline-block;margin-right:12px;font-size:12px}
.legend i{display:inline-block;width:11px;height:11px;border-radius:2px;margin-right:4px;vertical-align:-1px}
figure{display:inline-block;margin:8px 16px 8px 0;vertical-align:top}
figure img{max-width:640px;min-width:48px;border:1px solid #ddd}
figcaption{font-size:12px;color:#555}
.muted{color:#777}
tr.attempt td{color:#555;font-size:12px;background:#fcfcfc}
"#;

/// A state as a coloured badge.
fn badge(state: &str) -> String {
    let text = if matches!(state, "pending" | "upstream-failed" | "cached") { "#212121" } else { "#fff" };
    format!(r#"<span class="badge" style="background:{};color:{text}">{}</span>"#, state_colour(state), escape(state))
}

/// Milliseconds an attempt ran.
fn ran(a: &crate::state::AttemptRow, now: i64) -> Option<i64> {
    Some(a.finished_at.unwrap_or(now) - a.started_at?)
}

/// Tasks by state.
pub fn counts(rec: &RunRecord) -> Counts {
    let mut c = Counts::default();
    for t in &rec.tasks {
        c.add_many(t.row.state, 1);
    }
    c
}

/// The critical path: the longest chain of dependent steps, each weighing as much as its
/// longest task (members run side by side; a task weighs the time of all its attempts),
/// within one cycle; for a cycling run the longest over its cycles. Returns its time (ms)
/// and its steps.
pub fn critical_path(rec: &RunRecord, nodes: &[StepNode]) -> (i64, Vec<String>) {
    let mut weight: HashMap<(Option<u64>, &str), i64> = HashMap::new();
    for t in &rec.tasks {
        let w: i64 = t.attempts.iter().filter_map(|a| ran(a, rec.now_ms)).sum();
        let e = weight.entry((t.row.cycle, t.row.step.as_str())).or_default();
        *e = (*e).max(w);
    }
    let cycles: std::collections::BTreeSet<Option<u64>> = weight.keys().map(|k| k.0).collect();
    let depth = dag_svg::depths(nodes);
    let mut order: Vec<usize> = (0..nodes.len()).collect();
    order.sort_by_key(|i| depth[*i]);
    let index: HashMap<&str, usize> = nodes.iter().enumerate().map(|(i, n)| (n.name.as_str(), i)).collect();
    let mut best = (0, vec![]);
    for c in cycles {
        let mut finish = vec![0i64; nodes.len()];
        let mut prev: Vec<Option<usize>> = vec![None; nodes.len()];
        for &i in &order {
            let (p, start) = nodes[i]
                .deps
                .iter()
                .filter_map(|d| index.get(d.as_str()))
                .map(|&j| (Some(j), finish[j]))
                .max_by_key(|(_, f)| *f)
                .unwrap_or((None, 0));
            prev[i] = p;
            finish[i] = start + weight.get(&(c, nodes[i].name.as_str())).copied().unwrap_or(0);
        }
        if let Some((end, &len)) = finish.iter().enumerate().max_by_key(|(_, f)| **f)
            && len > best.0
        {
            // The steps on it that ran in this cycle (a cycle's chain may start at a step
            // that ran only in an earlier one).
            let ran_here = |i: usize| weight.contains_key(&(c, nodes[i].name.as_str()));
            let mut path = vec![];
            let mut at = Some(end);
            while let Some(i) = at {
                if ran_here(i) {
                    path.push(nodes[i].name.clone());
                }
                at = prev[i];
            }
            path.reverse();
            best = (len, path);
        }
    }
    best
}

fn row(s: &mut String, k: &str, v: &str) {
    let _ = write!(s, "<tr><th>{}</th><td>{v}</td></tr>", escape(k));
}

fn summary(rec: &RunRecord, nodes: &[StepNode]) -> String {
    let mut s = String::from(r#"<section id="summary"><h2>Summary</h2><table class="summary">"#);
    let w = rec.workflow.as_ref();
    let run = rec.run.as_ref();
    let name = w.map(|w| w.name.clone()).or_else(|| run.map(|r| r.workflow.clone())).unwrap_or_default();
    let version =
        w.and_then(|w| w.version.clone()).map(|v| format!(" <span class=\"muted\">version {}</span>", escape(&v)));
    row(&mut s, "workflow", &format!("<b>{}</b>{}", escape(&name), version.unwrap_or_default()));
    if let Some(d) = w.and_then(|w| w.description.as_deref()) {
        row(&mut s, "description", &escape(d));
    }
    if let Some(r) = run {
        row(&mut s, "file", &format!("<code>{}</code>", escape(&r.file)));
    }
    row(&mut s, "run", &format!("<code>{}</code>", escape(&rec.run_id)));
    row(&mut s, "outcome", &badge(&rec.state));
    if let Some(w) = w
        && !w.params.is_empty()
    {
        let p: Vec<String> =
            w.params.iter().map(|(k, v)| format!("<code>{}={}</code>", escape(k), escape(&v.to_string()))).collect();
        row(&mut s, "parameters used", &p.join(" "));
    }
    if let Some(w) = w
        && !w.inputs.is_empty()
    {
        let p: Vec<String> =
            w.inputs.iter().map(|(k, v)| format!("<code>{}={}</code>", escape(k), escape(v))).collect();
        row(&mut s, "inputs", &p.join(" "));
    }
    if let Some(r) = run {
        if !r.settings.params.is_empty() {
            let p: Vec<String> = r.settings.params.iter().map(|p| format!("<code>-p {}</code>", escape(p))).collect();
            row(&mut s, "given", &p.join(" "));
        }
        let backend = match &r.settings.profile {
            Some(p) => format!("{}, profile <code>{}</code>", r.settings.backend.as_str(), escape(p)),
            None => r.settings.backend.as_str().to_string(),
        };
        row(&mut s, "backend", &backend);
    }
    if let Some(w) = w {
        row(
            &mut s,
            "who, where",
            &format!("{}@{} (twinflow {})", escape(&w.engine.user), escape(&w.engine.host), escape(&w.engine.version)),
        );
    }
    row(&mut s, "run directory", &format!("<code>{}</code>", escape(&rec.run_dir.display().to_string())));
    if let Some(r) = run {
        row(&mut s, "started", &time(r.created_at));
        let end = if rec.state == "running" { rec.now_ms } else { r.updated_at };
        let took = duration(end - r.created_at);
        let took = if rec.state == "running" { format!("{took} so far (the run is in progress)") } else { took };
        row(&mut s, "total time", &took);
    }
    let (cp, path) = critical_path(rec, nodes);
    if !path.is_empty() {
        let steps: Vec<String> = path.iter().map(|p| format!("<code>{}</code>", escape(p))).collect();
        row(&mut s, "critical path", &format!("{} ({})", duration(cp), steps.join(" → ")));
    }
    let cpu: i64 = rec.tasks.iter().flat_map(|t| &t.attempts).filter_map(|a| a.cpu_ms).sum();
    if cpu > 0 {
        row(&mut s, "CPU time", &duration(cpu));
    }
    let c = counts(rec);
    let parts: Vec<String> = [
        ("succeeded", c.succeeded),
        ("cached", c.cached),
        ("skipped", c.skipped),
        ("failed", c.failed),
        ("upstream-failed", c.upstream_failed),
        ("cancelled", c.cancelled),
        ("pending or running", c.pending),
    ]
    .iter()
    .filter(|(_, n)| *n > 0)
    .map(|(k, n)| format!("{n} {k}"))
    .collect();
    let attempts: usize = rec.tasks.iter().map(|t| t.attempts.len()).sum();
    row(
        &mut s,
        "tasks",
        &format!(
            "{} tasks: {}; {attempts} attempts",
            rec.tasks.len(),
            if parts.is_empty() { "none".into() } else { parts.join(", ") }
        ),
    );
    if !rec.cycles.is_empty() {
        row(&mut s, "cycles", &rec.cycles.iter().map(|c| c.count()).sum::<u64>().to_string());
    }
    row(&mut s, "report made", &time(rec.now_ms));
    s.push_str("</table></section>");
    s
}

fn legend(states: &[&str]) -> String {
    let mut s = String::from(r#"<div class="legend">"#);
    for st in states {
        let fill = if *st == "waiting" {
            "repeating-linear-gradient(45deg,#fff8e1 0 3px,#ffb300 3px 5px)"
        } else {
            state_colour(st)
        };
        let _ = write!(s, r#"<span><i style="background:{fill}"></i>{st}</span>"#);
    }
    s.push_str("</div>");
    s
}

/// The alerts the tasks raised (`report: { alerts: [...] }`), near the top: what a person
/// must act on. An alert that is a JSON object shows its fields, `key: value`.
fn alerts(rec: &RunRecord) -> String {
    let with: Vec<&TaskRecord> = rec.tasks.iter().filter(|t| !t.alerts.is_empty()).collect();
    if with.is_empty() {
        return String::new();
    }
    let count: usize = with.iter().flat_map(|t| &t.alerts).map(|a| a.lines.as_ref().map_or(0, Vec::len) + a.more).sum();
    let mut s = format!(r#"<section id="alerts"><h2>Alerts ({count})</h2>"#);
    if count > 0 {
        s.push_str("<table><tr><th>task</th><th>output</th><th>alert</th></tr>");
    }
    let mut notes = String::new();
    for t in &with {
        for a in &t.alerts {
            match &a.lines {
                Ok(lines) => {
                    for line in lines {
                        let text = match line {
                            // `message` first: what a person reads; then the other fields.
                            serde_json::Value::Object(fields) => fields
                                .get_key_value("message")
                                .into_iter()
                                .chain(fields.iter().filter(|(k, _)| *k != "message"))
                                .map(|(k, v)| {
                                    let v = v.as_str().map_or_else(|| v.to_string(), str::to_string);
                                    format!("<b>{}</b>: {}", escape(k), escape(&v))
                                })
                                .collect::<Vec<_>>()
                                .join("; "),
                            serde_json::Value::String(text) => escape(text),
                            other => escape(&other.to_string()),
                        };
                        // A result reused from the cache raised its alerts in the run that
                        // made it (no `alert` event this time): say so.
                        let reused = if t.row.state == TaskState::Cached { " (reused result)" } else { "" };
                        let _ = write!(
                            s,
                            "<tr><td>{}{reused}</td><td><code>{}</code></td><td>{text}</td></tr>",
                            escape(&t.row.task),
                            escape(&a.name)
                        );
                    }
                    if a.more > 0 {
                        let _ = write!(
                            notes,
                            r#"<p class="muted">{}: {} more alerts in <code>{}</code></p>"#,
                            escape(&t.row.task),
                            a.more,
                            escape(&a.path)
                        );
                    }
                }
                Err(why) => {
                    let _ = write!(
                        notes,
                        r#"<p class="muted">{} <code>{}</code>: not shown, {}</p>"#,
                        escape(&t.row.task),
                        escape(&a.path),
                        escape(why)
                    );
                }
            }
        }
    }
    if count > 0 {
        s.push_str("</table>");
    } else {
        s.push_str(r#"<p class="muted">none raised</p>"#);
    }
    s.push_str(&notes);
    s.push_str("</section>");
    s
}

fn figures(rec: &RunRecord) -> String {
    let with: Vec<&TaskRecord> = rec.tasks.iter().filter(|t| !t.figures.is_empty() || !t.tables.is_empty()).collect();
    if with.is_empty() {
        return String::new();
    }
    let mut s = String::from(r#"<section id="figures"><h2>Figures and tables</h2>"#);
    for t in with {
        let _ = write!(s, "<h3>{}</h3>", escape(&t.row.task));
        for f in &t.figures {
            let caption = format!("{} <code>{}</code>", escape(&f.name), escape(&f.path));
            match &f.content {
                Ok((kind, data)) => {
                    // SVG too goes in as an image: a script a step's SVG may hold never runs.
                    let mime = match kind {
                        FigureKind::Png => "image/png",
                        FigureKind::Svg => "image/svg+xml",
                    };
                    let b64 = base64::engine::general_purpose::STANDARD.encode(data);
                    let _ = write!(
                        s,
                        r#"<figure class="figure"><img alt="{}" src="data:{mime};base64,{b64}"><figcaption>{caption}</figcaption></figure>"#,
                        escape(&f.name)
                    );
                }
                Err(why) => {
                    let _ = write!(s, r#"<p class="muted">{caption}: not shown, {}</p>"#, escape(why));
                }
            }
        }
        for tb in &t.tables {
            let _ = write!(s, "<p>{} <code>{}</code></p>", escape(&tb.name), escape(&tb.path));
            match &tb.rows {
                Ok(rows) => {
                    s.push_str(r#"<table class="data">"#);
                    for (i, r) in rows.iter().enumerate() {
                        let cell = if i == 0 { "th" } else { "td" };
                        s.push_str("<tr>");
                        for c in r {
                            let class = if i > 0 && c.trim().parse::<f64>().is_ok() { r#" class="num""# } else { "" };
                            let _ = write!(s, "<{cell}{class}>{}</{cell}>", escape(c));
                        }
                        s.push_str("</tr>");
                    }
                    s.push_str("</table>");
                    if tb.more > 0 {
                        let _ = write!(s, r#"<p class="muted">{} more rows in the file</p>"#, tb.more);
                    }
                }
                Err(why) => {
                    let _ = write!(s, r#"<p class="muted">not shown: {}</p>"#, escape(why));
                }
            }
        }
    }
    s.push_str("</section>");
    s
}

fn tail_html(label: &str, t: &Option<super::Tail>) -> String {
    match t {
        Some(t) => format!(
            "<details><summary>{label}: <code>{}</code> ({}{})</summary><pre>{}</pre></details>",
            escape(&t.path),
            bytes(t.size),
            match t.lines.len() {
                0 => String::new(),
                1 => ", its line".to_string(),
                n => format!(", last {n} lines"),
            },
            escape(&t.lines.join("\n"))
        ),
        None => String::new(),
    }
}

fn tasks(rec: &RunRecord) -> String {
    let mut s = String::from(
        r#"<section id="task-table"><h2>Tasks</h2><table id="tasks"><thead><tr><th>task</th><th>state</th><th>attempt</th><th>job</th><th>ended</th><th class="num">wall</th><th class="num">CPU</th><th class="num">peak memory</th><th>details</th></tr></thead><tbody>"#,
    );
    for t in &rec.tasks {
        let r = &t.row;
        let mut details = String::new();
        if r.state == TaskState::Cached {
            let _ = write!(details, "cache hit: result in <code>{}</code>", escape(r.dir.as_deref().unwrap_or("")));
        } else if let Some(m) = &r.message {
            let first = m.lines().next().unwrap_or("");
            let _ = write!(details, "{}", escape(first));
        }
        if !t.outputs.is_empty() {
            let outs: Vec<String> = t
                .outputs
                .iter()
                .map(|o| {
                    let size = o.size.map_or_else(|| "missing".to_string(), bytes);
                    format!("<code title=\"{}\">{}</code> {size}", escape(&o.path), escape(&o.name))
                })
                .collect();
            let _ = write!(details, "<div>outputs: {}</div>", outs.join(", "));
        }
        details.push_str(&tail_html("stdout", &t.stdout));
        details.push_str(&tail_html("stderr", &t.stderr));
        let attempts = t.attempts.len();
        let _ = write!(
            s,
            r#"<tr class="task" data-task="{name}" data-state="{st}"><td><code>{name}</code></td><td>{badge}</td><td class="num">{attempts}</td><td colspan="5"></td><td>{details}</td></tr>"#,
            name = escape(&r.task),
            st = r.state.as_str(),
            badge = badge(r.state.as_str()),
        );
        for a in &t.attempts {
            let ended = match (&a.detail, a.exit_code) {
                (Some(d), _) if d == "ok" => "exit 0".to_string(),
                (Some(d), _) => d.lines().next().unwrap_or("").to_string(),
                (None, Some(c)) => format!("exit {c}"),
                (None, None) => a.state.as_str().to_string(),
            };
            let ms = |v: Option<i64>| v.map_or_else(String::new, duration);
            let _ = write!(
                s,
                r#"<tr class="attempt" data-task="{name}" data-attempt="{n}"><td></td><td>{st}</td><td class="num">#{n}</td><td><code>{job}</code></td><td>{ended}</td><td class="num">{wall}</td><td class="num">{cpu}</td><td class="num">{rss}</td><td></td></tr>"#,
                name = escape(&r.task),
                n = a.attempt,
                st = badge(a.state.as_str()),
                job = escape(a.job_id.as_deref().unwrap_or("")),
                ended = escape(&ended),
                wall = ms(ran(a, rec.now_ms)),
                cpu = ms(a.cpu_ms),
                rss = a.max_rss.map_or_else(String::new, |b| bytes(b.max(0) as u64)),
            );
        }
    }
    s.push_str("</tbody></table></section>");
    s
}

/// The report of a run as one HTML page.
pub fn render(rec: &RunRecord) -> String {
    let nodes = dag_svg::steps(rec);
    let name = rec.workflow.as_ref().map(|w| w.name.clone()).or_else(|| rec.run.as_ref().map(|r| r.workflow.clone()));
    let title = format!("{} {}", name.unwrap_or_default(), rec.run_id);
    let mut s = String::with_capacity(64 << 10);
    let _ = write!(
        s,
        r#"<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1"><title>twinflow report: {t}</title><style>{CSS}</style></head><body><header><h1>twinflow report: {t} {b}</h1></header><main>"#,
        t = escape(&title),
        b = badge(&rec.state),
    );
    s.push_str(&summary(rec, &nodes));
    s.push_str(&alerts(rec));
    s.push_str(r#"<section id="graph"><h2>Workflow graph</h2>"#);
    s.push_str(&legend(&[
        "succeeded",
        "cached",
        "skipped",
        "failed",
        "upstream-failed",
        "cancelled",
        "running",
        "pending",
    ]));
    s.push_str(&dag_svg::render(rec));
    s.push_str("</section>");
    s.push_str(r#"<section id="gantt"><h2>Timeline</h2><p class="muted">One bar per attempt, one lane per slot in use at once; retries have a dashed outline and their number.</p>"#);
    s.push_str(&legend(&["succeeded", "failed", "cancelled", "running", "waiting"]));
    s.push_str(&super::timeline::render(rec));
    s.push_str("</section>");
    s.push_str(&figures(rec));
    s.push_str(&tasks(rec));
    s.push_str("</main></body></html>\n");
    s
}
