//! `twinflow plan` output: the DAG as text, Graphviz dot, Mermaid or JSON, with every task's
//! resolved command (upstream outputs and run-specific paths shown as `<placeholders>`).

use std::fmt::Write;
use std::path::Path;

use crate::execute::{JobRequest, Rendered};
use crate::plan::{Plan, TaskNode};
use crate::run::job::resolve_task;
use crate::run::scope::{CycleData, Mode, Results};
use crate::units::format_duration;

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Readable text.
    Text,
    /// Graphviz dot.
    Dot,
    /// Mermaid flowchart.
    Mermaid,
    /// JSON (every task).
    Json,
}

/// Options of the rendering.
pub struct RenderOptions<'a> {
    /// Show at most this many members per scattered step in text/dot/mermaid (JSON shows all).
    pub max_members: u32,
    /// Cycling workflows: show this many cycles, with the edges between them.
    pub cycles: u32,
    /// How the backend would launch a job (argv or script), if any.
    pub launcher: Option<&'a dyn Fn(&JobRequest) -> Rendered>,
}

impl std::fmt::Debug for RenderOptions<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RenderOptions").field("max_members", &self.max_members).finish()
    }
}

fn command(
    plan: &Plan,
    n: TaskNode,
    kernel: &Path,
    opts: &RenderOptions<'_>,
) -> Result<Rendered, crate::run::job::ResolveError> {
    command_in(plan, n, kernel, opts, &CycleData::new(0, None, false, 0))
}

/// A task's command as run in cycle `data` (its point and index; results are placeholders).
pub(super) fn command_in(
    plan: &Plan,
    n: TaskNode,
    kernel: &Path,
    opts: &RenderOptions<'_>,
    data: &CycleData,
) -> Result<Rendered, crate::run::job::ResolveError> {
    let r = resolve_task(
        plan,
        n,
        Results { cur: data, prev: None, first: None },
        Path::new("<out>"),
        "<run.id>",
        Path::new("<run.dir>"),
        Mode::Key,
        kernel,
    )?;
    let step = &plan.workflow.steps[n.step as usize];
    let req = JobRequest {
        name: plan.task_name(n),
        argv: r.argv,
        env: vec![],
        cwd: "<out>".into(),
        stdout: "<out>/.twinflow/stdout".into(),
        stderr: "<out>/.twinflow/stderr".into(),
        resources: step.resources.clone(),
        timeout: step.timeout,
        array: n.member_index().map(|index| crate::execute::ArrayMember { step: step.name.clone(), index }),
    };
    Ok(match opts.launcher {
        Some(f) => f(&req),
        None => Rendered::Argv(req.argv),
    })
}

/// Identifier of a node in DOT and Mermaid: `PREFIX_step`, `PREFIX_step_3`, `PREFIX_step_all`.
pub(super) fn node_id(plan: &Plan, prefix: &str, n: TaskNode) -> String {
    let base: String = plan.workflow.steps[n.step as usize]
        .name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    match n.member {
        TaskNode::NO_MEMBER => format!("{prefix}_{base}"),
        TaskNode::JOIN => format!("{prefix}_{base}_all"),
        m => format!("{prefix}_{base}_{m}"),
    }
}

pub(super) fn shown_members(plan: &Plan, step: usize, max: u32) -> (Vec<TaskNode>, u32) {
    match &plan.scatter[step] {
        None => (vec![TaskNode { step: step as u32, member: TaskNode::NO_MEMBER }], 0),
        Some(t) => {
            let k = t.len.min(max);
            ((0..k).map(|m| TaskNode { step: step as u32, member: m }).collect(), t.len - k)
        }
    }
}

pub(super) fn quote(a: &str) -> String {
    if !a.is_empty() && a.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=:<>,+@%".contains(c)) {
        a.to_string()
    } else {
        format!("'{}'", a.replace('\'', "'\\''"))
    }
}

/// Renders the plan.
pub fn render(plan: &Plan, format: Format, kernel: &Path, opts: &RenderOptions<'_>) -> String {
    if plan.cycling.is_some() {
        return super::cycles_view::render(plan, format, kernel, opts);
    }
    let wf = &*plan.workflow;
    let mut out = String::new();
    match format {
        Format::Text => {
            let _ = writeln!(out, "workflow {} ({} steps, {} tasks)", wf.name, wf.steps.len(), plan.task_count());
            for &s in &plan.step_order {
                let st = &wf.steps[s];
                let r = &st.resources;
                let mut res = format!("ranks={} threads={}", r.ranks, r.threads);
                if r.memory > 0 {
                    let _ = write!(res, " memory={}M", r.memory >> 20);
                }
                if let Some(w) = r.walltime {
                    let _ = write!(res, " walltime={}", format_duration(w));
                }
                let _ = writeln!(out, "\nstep {}", st.name);
                if let Some(t) = &plan.scatter[s] {
                    let _ = writeln!(
                        out,
                        "  scatter: {} member{} ({}) over {}",
                        t.len,
                        if t.len == 1 { "" } else { "s" },
                        t.method.as_str(),
                        t.vars.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>().join(", ")
                    );
                }
                let deps: Vec<&str> = st.deps.iter().map(|d| wf.steps[*d].name.as_str()).collect();
                let _ = writeln!(out, "  after: {}", if deps.is_empty() { "-".into() } else { deps.join(", ") });
                let _ = writeln!(out, "  resources: {res}");
                for (k, t) in &st.publish {
                    let _ = writeln!(out, "  publish: {k} -> {}", t.src);
                }
                if let Some(t) = st.timeout {
                    let _ = writeln!(out, "  timeout: {}", format_duration(t));
                }
                if st.retry.count > 0 {
                    let _ =
                        writeln!(out, "  retry: {} (backoff {})", st.retry.count, format_duration(st.retry.backoff));
                }
                if let Some(w) = &st.when {
                    let _ = writeln!(out, "  when: {}", w.src);
                }
                if let Some(v) = &st.service {
                    let ready = match &v.ready {
                        None => "as soon as it runs".to_string(),
                        Some(crate::model::Ready::File(t)) => format!("once file {} exists", t.src),
                        Some(crate::model::Ready::Command(c)) => {
                            format!("once {} exits 0", c.iter().map(|t| t.src.as_str()).collect::<Vec<_>>().join(" "))
                        }
                    };
                    let _ = writeln!(out, "  service: ready {ready}; runs until the rest of the run is done");
                }
                let (shown, rest) = shown_members(plan, s, opts.max_members);
                for n in shown {
                    match command(plan, n, kernel, opts) {
                        Ok(Rendered::Argv(a)) => {
                            let _ = writeln!(
                                out,
                                "  {}: {}",
                                plan.task_name(n),
                                a.iter().map(|x| quote(x)).collect::<Vec<_>>().join(" ")
                            );
                        }
                        Ok(Rendered::Script(sc)) => {
                            let _ = writeln!(
                                out,
                                "  {}: script\n{}",
                                plan.task_name(n),
                                sc.lines().map(|l| format!("    | {l}")).collect::<Vec<_>>().join("\n")
                            );
                        }
                        Err(e) => {
                            let _ = writeln!(out, "  {}: <cannot resolve: {e}>", plan.task_name(n));
                        }
                    }
                }
                if rest > 0 {
                    let _ = writeln!(out, "  ... and {rest} more members");
                }
            }
        }
        Format::Dot | Format::Mermaid => {
            let dot = format == Format::Dot;
            out.push_str(if dot {
                "digraph workflow {\n  rankdir=LR;\n  node [shape=box];\n"
            } else {
                "flowchart LR\n"
            });
            let id = |n: TaskNode| node_id(plan, "s", n);
            let mut shown_nodes = std::collections::HashSet::new();
            for &s in &plan.step_order {
                let (shown, rest) = shown_members(plan, s, opts.max_members);
                for n in &shown {
                    shown_nodes.insert(*n);
                    let label = plan.task_name(*n);
                    let _ = if dot {
                        writeln!(out, "  {} [label=\"{}\"];", id(*n), label)
                    } else {
                        writeln!(out, "  {}[\"{}\"]", id(*n), label)
                    };
                }
                if let Some(t) = &plan.scatter[s] {
                    let j = TaskNode { step: s as u32, member: TaskNode::JOIN };
                    shown_nodes.insert(j);
                    let label = if rest > 0 {
                        format!("{} (all {} members; {rest} not shown)", wf.steps[s].name, t.len)
                    } else {
                        format!("{} (all)", wf.steps[s].name)
                    };
                    let _ = if dot {
                        writeln!(out, "  {} [label=\"{}\", shape=ellipse];", id(j), label)
                    } else {
                        writeln!(out, "  {}([\"{}\"])", id(j), label)
                    };
                }
            }
            for e in plan.graph.raw_edges() {
                let (a, b) = (plan.graph[e.source()], plan.graph[e.target()]);
                if shown_nodes.contains(&a) && shown_nodes.contains(&b) {
                    let _ = if dot {
                        writeln!(out, "  {} -> {};", id(a), id(b))
                    } else {
                        writeln!(out, "  {} --> {}", id(a), id(b))
                    };
                }
            }
            if dot {
                out.push_str("}\n");
            }
        }
        Format::Json => {
            let mut tasks = vec![];
            for i in plan.graph.node_indices() {
                let n = plan.graph[i];
                if n.is_join() {
                    continue;
                }
                let st = &wf.steps[n.step as usize];
                let deps: Vec<String> = plan
                    .graph
                    .neighbors_directed(i, petgraph::Direction::Incoming)
                    .map(|p| plan.task_name(plan.graph[p]))
                    .collect();
                let cmd = match command(plan, n, kernel, opts) {
                    Ok(Rendered::Argv(a)) => serde_json::json!({ "argv": a }),
                    Ok(Rendered::Script(s)) => serde_json::json!({ "script": s }),
                    Err(e) => serde_json::json!({ "error": e.to_string() }),
                };
                let r = &st.resources;
                tasks.push(serde_json::json!({
                    "task": plan.task_name(n), "step": st.name, "member": n.member_index(),
                    "command": cmd, "after": deps,
                    "resources": { "ranks": r.ranks, "threads": r.threads, "nodes": r.nodes, "memory": r.memory, "gpus": r.gpus,
                                   "walltime_seconds": r.walltime.map(|w| w.as_secs()) },
                    "timeout_seconds": st.timeout.map(|t| t.as_secs_f64()),
                    "retry": st.retry.count,
                    "when": st.when.as_ref().map(|w| w.src.clone()),
                }));
            }
            let v = serde_json::json!({ "workflow": wf.name, "version": wf.version, "tasks": tasks });
            out = serde_json::to_string_pretty(&v).unwrap_or_default();
            out.push('\n');
        }
    }
    out
}

/// What `twinflow plan` is asked to show.
#[derive(Debug, Clone)]
pub struct PlanRequest {
    /// Output format.
    pub format: Format,
    /// Members shown per scattered step (text, dot, mermaid).
    pub members: u32,
    /// Cycles shown (cycling workflows; default 2). Given for a workflow that does not
    /// cycle, it is a usage error.
    pub cycles: Option<u32>,
    /// Show each task's command as the backend would launch it (always with SLURM).
    pub launch: bool,
    /// The backend and its mode.
    pub backend: super::backend::BackendSettings,
}

/// `twinflow plan`: loads `file` with `-p`/`-i` values and the site profile's default
/// resources, compiles it, and renders the DAG with every task's command; with `launch`
/// (or the SLURM backend) as the backend would launch it: the `mpiexec` argv locally, the
/// `srun` argv in allocation mode, the batch script otherwise (with arrays, the first
/// member of a scattered step also shows the array's driver script; with pilot workers,
/// what the worker runs: the step's argv, behind `srun --exact` or `mpiexec` for a
/// multi-rank step).
pub fn plan_view(
    file: &Path,
    params: &[String],
    inputs: &[String],
    req: &PlanRequest,
) -> Result<String, super::SessionError> {
    use crate::execute::local::render_argv;
    use crate::execute::pilot::backend::{MpiLaunch, render_argv as pilot_argv};
    use crate::execute::profile::{MpiLauncher, PilotLaunch};
    use crate::execute::slurm::{allocation::Allocation, script};
    use crate::state::BackendChoice;
    let profile = super::backend::site_profile(&req.backend, Some(file))?;
    let wf = super::load(file, &super::overrides(params, inputs)?, profile.as_ref())?;
    if wf.cycle.is_none() && req.cycles.is_some() {
        return Err(super::SessionError::Usage(format!("workflow `{}` does not cycle: drop --cycles", wf.name)));
    }
    let p = super::compile(wf)?;
    let mut local = super::backend::local_options(profile.as_ref(), &super::backend::LocalSettings::default())?;
    let pilot = profile.as_ref().and_then(|p| p.pilot.clone());
    let slurm = profile.filter(|_| req.backend.backend == BackendChoice::Slurm);
    if req.backend.allocation
        && let Some(prof) = &slurm
    {
        let placeholder =
            Allocation { job_id: "<allocation>".into(), cpus: 1, mem_per_cpu_mb: None, owned: false, nodes: None };
        local.srun = Some(placeholder.launcher(prof));
    }
    // Pilot workers (allocation mode with `pilot:`, or the local backend with `pilot:
    // launch: local`): what the worker runs, the step's argv, with the launcher a worker
    // puts in front of a multi-rank step.
    let on_workers = match &pilot {
        Some(pl) if pl.launch == PilotLaunch::Srun && slurm.is_some() && req.backend.allocation => Some(MpiLaunch {
            srun: local.srun.clone().filter(|_| pl.mpi_launcher == MpiLauncher::Srun),
            mpiexec: local.mpiexec.clone(),
        }),
        Some(pl) if pl.launch == PilotLaunch::Local && slurm.is_none() => {
            Some(MpiLaunch { srun: None, mpiexec: local.mpiexec.clone() })
        }
        _ => None,
    };
    let members: std::collections::HashMap<String, usize> = p
        .step_order
        .iter()
        .filter_map(|&s| p.scatter[s].as_ref().map(|t| (p.workflow.steps[s].name.clone(), t.len as usize)))
        .collect();
    let launcher = move |j: &JobRequest| match &slurm {
        _ if on_workers.is_some() => {
            // A step across nodes gets the workers' nodes when it starts.
            let hosts = if j.resources.nodes > 1 { vec!["<worker-nodes>".to_string()] } else { vec![] };
            Rendered::Argv(on_workers.as_ref().map(|l| pilot_argv(l, j, &hosts)).unwrap_or_default())
        }
        Some(_) if local.srun.is_some() => Rendered::Argv(render_argv(&local, j)),
        Some(profile) => {
            let own = script::render_script(j, profile);
            let driver = match &j.array {
                Some(m) if profile.arrays && m.index == 0 && members.get(&m.step).is_some_and(|n| *n >= 2) => {
                    let adir = Path::new("<run.dir>/steps").join(&m.step).join(".twinflow");
                    Some(script::render_array_script(
                        j,
                        &m.step,
                        members[&m.step],
                        profile.array_throttle,
                        &adir.join("array-<pid>-<time>.list"),
                        &adir.join("array-<pid>-<time>-%a.log"),
                        profile,
                    ))
                }
                _ => None,
            };
            Rendered::Script(match driver {
                Some(d) => format!("{d}\n# member script, <out>/.twinflow/job.sbatch:\n{own}"),
                None => own,
            })
        }
        None => Rendered::Argv(render_argv(&local, j)),
    };
    let launch = req.launch || req.backend.backend == BackendChoice::Slurm;
    let opts = RenderOptions {
        max_members: req.members,
        cycles: req.cycles.unwrap_or(2),
        launcher: if launch { Some(&launcher) } else { None },
    };
    Ok(render(&p, req.format, &crate::run::job::kernel_binary(), &opts))
}
