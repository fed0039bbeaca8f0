//! Turning a planned task into a concrete job: argv, environment, manifest and cache key.

use std::cell::RefCell;
use std::path::{Path, PathBuf};

use indexmap::IndexMap;

use super::cache::{Components, Hasher};
use super::scope::{Mode, Results, TaskScope, Used};
use crate::expr::{Scope, Value};
use crate::model::eval_value;
use crate::model::{Command, Ready, Tpl};
use crate::model::{Ctx, Resolved, resolve};
use crate::plan::{Plan, TaskNode};
use crate::programs::which;
use crate::state::{StateError, Store};
use twinflow_contract::env as tfenv;

/// Why a task's command could not be resolved (the task fails without an attempt).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    /// An expression could not be evaluated; `site` is where it is written (`` `${{ x }}` ``,
    /// `in.grid`, `env.MODE`).
    #[error("{site}: {message}")]
    Expr {
        /// Where.
        site: String,
        /// Why.
        message: String,
    },
    /// Every argument evaluated to nothing.
    #[error("the command is empty after evaluation")]
    EmptyCommand,
    /// An environment variable would be a list.
    #[error("env.{0}: a list cannot be an environment variable; use join()")]
    ListInEnv(String),
}

/// A task resolved for one attempt.
#[derive(Debug, Clone)]
pub struct ResolvedTask {
    /// argv (program first).
    pub argv: Vec<String>,
    /// Environment added for the step.
    pub env: Vec<(String, String)>,
    /// Inputs as values, for the manifest.
    pub inputs: IndexMap<String, Value>,
    /// Outputs as absolute paths.
    pub outputs: IndexMap<String, PathBuf>,
    /// Files and values read.
    pub used: Vec<Used>,
    /// A service's readiness probe, evaluated.
    pub ready: Option<ReadyProbe>,
}

/// A service's readiness probe, evaluated for one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadyProbe {
    /// Ready once this file exists.
    File(PathBuf),
    /// Ready once this command exits 0.
    Command(Vec<String>),
}

/// Where the `twin-kernel` binary is: `$TWINFLOW_KERNEL_BIN`, next to the running
/// executable, or on `PATH`. A relative `$TWINFLOW_KERNEL_BIN` is taken against the
/// engine's current directory and made absolute: steps run in their attempt directories,
/// where it would not resolve (`mpiexec` would fail to find it).
pub fn kernel_binary() -> PathBuf {
    if let Some(p) = std::env::var_os(tfenv::KERNEL_BIN).filter(|p| !p.is_empty()) {
        return crate::spec::span::absolute(Path::new(&p));
    }
    if let Ok(exe) = std::env::current_exe()
        && let Some(dir) = exe.parent()
    {
        for cand in [dir.join("twin-kernel"), dir.join("../twin-kernel")] {
            if cand.is_file() {
                return cand;
            }
        }
    }
    which("twin-kernel").unwrap_or_else(|| PathBuf::from("twin-kernel"))
}

/// Evaluates one `run`/`args` element into `out`. In [`Mode::Key`] (what `twinflow plan`
/// shows) an element that needs run-time values, such as arithmetic on an upstream value,
/// is shown as written instead of failing the whole command.
fn push_argv(out: &mut Vec<String>, t: &Tpl, scope: &dyn Scope, mode: Mode) -> Result<(), ResolveError> {
    let v = match t.tpl.eval(scope) {
        Ok(v) => v,
        Err(_)
            if mode == Mode::Key && t.tpl.references().iter().any(|r| r.path.first().is_some_and(|p| p == "steps")) =>
        {
            out.push(t.src.clone());
            return Ok(());
        }
        Err(e) => return Err(ResolveError::Expr { site: format!("`{}`", t.src), message: e.message }),
    };
    match v {
        // A whole-element expression that yields a list spreads into several arguments
        // (a gather passes every member's output this way).
        Value::List(items) => out.extend(items.iter().map(|i| i.to_string())),
        Value::Null => {}
        other => out.push(other.to_string()),
    }
    Ok(())
}

/// Evaluates a task's command, environment, inputs and outputs in `mode`.
#[allow(clippy::too_many_arguments)]
pub fn resolve_task(
    plan: &Plan,
    node: TaskNode,
    results: Results<'_>,
    attempt_dir: &Path,
    run_id: &str,
    run_dir: &Path,
    mode: Mode,
    kernel: &Path,
) -> Result<ResolvedTask, ResolveError> {
    resolve_task_in(plan, node, results, attempt_dir, attempt_dir, run_id, run_dir, mode, kernel)
}

/// As [`resolve_task`], with the outputs (`out.*`, `TWINFLOW_OUT_*`) in `out_dir` instead of
/// the attempt directory: a service's outputs live in `out/` across its attempts, while each
/// attempt runs in a directory of its own. Also evaluates a service's readiness probe (a
/// relative file is taken against the attempt directory, fresh for each attempt).
#[allow(clippy::too_many_arguments)]
pub fn resolve_task_in(
    plan: &Plan,
    node: TaskNode,
    results: Results<'_>,
    attempt_dir: &Path,
    out_dir: &Path,
    run_id: &str,
    run_dir: &Path,
    mode: Mode,
    kernel: &Path,
) -> Result<ResolvedTask, ResolveError> {
    let wf = &*plan.workflow;
    let s = node.step as usize;
    let step = &wf.steps[s];
    let used = RefCell::new(vec![]);
    let scope = TaskScope {
        plan,
        node,
        results,
        attempt_dir: out_dir,
        run_id,
        run_dir,
        mode,
        ns: step.ns,
        ctx: Ctx::Body(s),
        used: &used,
    };
    let mut argv = vec![];
    match &step.command {
        Command::Kernel(k) => {
            argv.push(if mode == Mode::Key { "<twin-kernel>".to_string() } else { kernel.display().to_string() });
            argv.push(k.clone());
        }
        Command::Run { argv: a, shell } => {
            if *shell {
                argv.push("/bin/sh".into());
                argv.push("-c".into());
            }
            for t in a {
                push_argv(&mut argv, t, &scope, mode)?;
            }
            if *shell {
                // `sh -c SCRIPT NAME ARGS...`: the step name becomes `$0`, so `args:` are
                // `$1`, `$2`, ... inside the script (values stay data, never script text).
                argv.push(step.name.clone());
            }
        }
    }
    for t in &step.args {
        push_argv(&mut argv, t, &scope, mode)?;
    }
    if argv.is_empty() {
        return Err(ResolveError::EmptyCommand);
    }
    let in_scope = TaskScope { ctx: Ctx::Inputs(s), ..scope_clone(&scope) };
    let mut inputs = IndexMap::new();
    for (k, v) in &step.inputs {
        inputs.insert(
            k.clone(),
            eval_value(v, &in_scope).map_err(|e| ResolveError::Expr { site: format!("in.{k}"), message: e.message })?,
        );
    }
    let mut outputs = IndexMap::new();
    for (k, rel) in step.outputs.iter().chain(step.values.iter()) {
        outputs.insert(k.clone(), out_dir.join(rel));
    }
    let expr = |t: &Tpl| {
        t.tpl.eval(&scope).map_err(|e| ResolveError::Expr { site: format!("`{}`", t.src), message: e.message })
    };
    // Only a run checks readiness (`plan` and `why` show commands).
    let probe = step.service.as_ref().and_then(|s| s.ready.as_ref()).filter(|_| mode == Mode::Exec);
    let ready = match probe {
        Some(Ready::File(t)) => Some(ReadyProbe::File(attempt_dir.join(expr(t)?.to_string()))),
        Some(Ready::Command(argv)) => {
            let mut a = vec![];
            for t in argv {
                push_argv(&mut a, t, &scope, mode)?;
            }
            Some(ReadyProbe::Command(a))
        }
        None => None,
    };
    let mut env: Vec<(String, String)> = vec![];
    for (k, t) in &step.env {
        let v = t.tpl.eval(&scope).map_err(|e| ResolveError::Expr { site: format!("env.{k}"), message: e.message })?;
        if matches!(v, Value::List(_)) {
            return Err(ResolveError::ListInEnv(k.clone()));
        }
        env.push((k.clone(), v.to_string()));
    }
    let r = &step.resources;
    env.push((tfenv::RUN_ID.into(), run_id.into()));
    env.push((tfenv::STEP.into(), step.name.clone()));
    if let Some(m) = node.member_index() {
        env.push((tfenv::MEMBER.into(), m.to_string()));
    }
    env.push((tfenv::STEP_DIR.into(), attempt_dir.display().to_string()));
    // A successful attempt's directory is renamed to `out/` beside it: kernels name their
    // files by that path in logs and NetCDF `history`. (A service writes into `out/` as it runs.)
    if step.service.is_none()
        && let Some(parent) = attempt_dir.parent()
    {
        env.push((tfenv::RESULT_DIR.into(), parent.join("out").display().to_string()));
    }
    env.push((tfenv::MANIFEST.into(), attempt_dir.join(".twinflow/manifest.json").display().to_string()));
    env.push((tfenv::THREADS.into(), r.threads.to_string()));
    env.push((tfenv::RANKS.into(), r.ranks.to_string()));
    env.push(("OMP_NUM_THREADS".into(), r.threads.to_string()));
    env.push(("RAYON_NUM_THREADS".into(), r.threads.to_string()));
    for (k, v) in &inputs {
        let text = match v {
            Value::List(items) => items.iter().map(|i| i.to_string()).collect::<Vec<_>>().join("\n"),
            other => other.to_string(),
        };
        env.push((format!("{}{}", tfenv::INPUT_PREFIX, env_name(k)), text));
    }
    for (k, p) in &outputs {
        env.push((format!("{}{}", tfenv::OUTPUT_PREFIX, env_name(k)), p.display().to_string()));
    }
    Ok(ResolvedTask { argv, env, inputs, outputs, used: used.into_inner(), ready })
}

fn scope_clone<'a>(s: &TaskScope<'a>) -> TaskScope<'a> {
    TaskScope {
        plan: s.plan,
        node: s.node,
        results: s.results,
        attempt_dir: s.attempt_dir,
        run_id: s.run_id,
        run_dir: s.run_dir,
        mode: s.mode,
        ns: s.ns,
        ctx: s.ctx,
        used: s.used,
    }
}

/// `grid-file` → `GRID_FILE`.
pub fn env_name(k: &str) -> String {
    k.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_uppercase() } else { '_' }).collect()
}

/// Root parameters a step reads directly (values bound into sub-workflows reach the key through
/// the resolved command), with values.
fn params_used(plan: &Plan, s: usize) -> std::collections::BTreeMap<String, String> {
    let wf = &*plan.workflow;
    let mut out = std::collections::BTreeMap::new();
    // Where outputs are published is not part of what the task computes: a new destination
    // copies the cached result there instead of running the task again.
    let publish = format!("steps.{}.publish.", wf.steps[s].local_name);
    for (ns, ctx, t, field, _) in crate::model::sites::step_sites(wf, s) {
        // Scatter lists only decide which members exist; a member's own element is already
        // part of its resolved command, so growing an ensemble does not invalidate members.
        if ctx.step() != Some(s) || matches!(ctx, Ctx::ScatterOver(_)) || field.starts_with(&publish) {
            continue;
        }
        for r in t.tpl.references() {
            let path: Vec<&str> = r.path.iter().map(String::as_str).collect();
            if let Ok(Resolved::Param(pns, name)) = resolve(wf, ns, ctx, &path)
                && pns == 0
                && let Some(v) = wf.param_values.get(&name)
            {
                out.insert(name, v.to_string());
            }
        }
    }
    out
}

/// The run-independent view of a resolved task, hashed into its cache key: the exact
/// command and environment with every run-specific path replaced by a stable name. Files
/// read (`<inputs.dem>`, `<steps.sim.out.r[3]>`), result directories of upstream tasks,
/// the attempt directory (`<out>`), the run directory and the run id become placeholders,
/// so the same task has the same key in every run, whatever expressions computed its
/// arguments (`join(...)`, `len(...)`, arithmetic on values); what those files contain is
/// hashed separately.
pub fn key_view(exec: &ResolvedTask, attempt_dir: &Path, run_dir: &Path, run_id: &str, kernel: bool) -> ResolvedTask {
    let mut subs: Vec<(String, String)> = vec![(attempt_dir.display().to_string(), "<out>".into())];
    for u in &exec.used {
        match u {
            Used::File(label, p) => subs.push((p.display().to_string(), format!("<{label}>"))),
            Used::ResultDir(label, p) => subs.push((p.display().to_string(), format!("<{label}>"))),
            Used::Value(..) => {}
        }
    }
    subs.push((run_dir.display().to_string(), "<run.dir>".into()));
    // Longest first, so a file is named before the directory that holds it.
    subs.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.0.cmp(&b.0)));
    subs.dedup_by(|a, b| a.0 == b.0);
    subs.retain(|(from, _)| !from.is_empty());
    if !run_id.is_empty() {
        subs.push((run_id.to_string(), "<run.id>".into()));
    }
    let norm = |text: &str| -> String {
        let mut t = text.to_string();
        for (from, to) in &subs {
            if t.contains(from.as_str()) {
                t = t.replace(from.as_str(), to);
            }
        }
        t
    };
    let mut argv: Vec<String> = exec.argv.iter().map(|a| norm(a)).collect();
    if kernel && let Some(first) = argv.first_mut() {
        // The kernel binary's path varies by installation; its content is the program hash.
        *first = "<twin-kernel>".into();
    }
    ResolvedTask {
        argv,
        env: exec.env.iter().map(|(k, v)| (k.clone(), norm(v))).collect(),
        inputs: exec.inputs.clone(),
        outputs: exec.outputs.clone(),
        used: vec![],
        ready: None,
    }
}

/// Cache components of a resolved task.
pub fn components(
    plan: &Plan,
    node: TaskNode,
    key_view: &ResolvedTask,
    exec: &ResolvedTask,
    store: &mut Store,
    hasher: &mut Hasher,
    params_memo: &mut std::collections::HashMap<usize, std::collections::BTreeMap<String, String>>,
) -> Result<Components, StateError> {
    let s = node.step as usize;
    let step = &plan.workflow.steps[s];
    let mut def = blake3::Hasher::new();
    for a in &key_view.argv {
        def.update(a.as_bytes());
        def.update(b"\0");
    }
    def.update(b"\x01env\0");
    for (k, v) in &key_view.env {
        // The variables twinflow sets name where the task runs (its run, attempt directory,
        // member index): not what it computes. The values of its `in:` (`TWINFLOW_IN_*`,
        // with run-specific paths as placeholders) are what it reads, so they are kept: two
        // members differing only in an `in:` value must not share a result.
        if k.starts_with("TWINFLOW_") && !k.starts_with(tfenv::INPUT_PREFIX) {
            continue;
        }
        def.update(k.as_bytes());
        def.update(b"=");
        def.update(v.as_bytes());
        def.update(b"\0");
    }
    // The rank count changes how a parallel program computes (summation order, domain
    // decomposition), so results of another rank count are not reused. Threads reach the
    // key through `OMP_NUM_THREADS`.
    def.update(format!("\x01ranks={}\0", step.resources.ranks).as_bytes());
    def.update(b"\x01out\0");
    for (k, rel) in step.outputs.iter().chain(step.values.iter()) {
        def.update(k.as_bytes());
        def.update(b"=");
        def.update(rel.as_bytes());
        def.update(b"\0");
    }
    let prog = match &step.command {
        Command::Kernel(_) => exec.argv.first().cloned().unwrap_or_default(),
        Command::Run { shell: true, .. } => "/bin/sh".to_string(),
        Command::Run { .. } => exec.argv.first().cloned().unwrap_or_default(),
    };
    let program = match hasher.which(&prog) {
        Some(p) => format!("{}:{}", p.display(), hasher.hash(store, &p)?),
        None => format!("{prog}:not-found"),
    };
    let mut inputs = std::collections::BTreeMap::new();
    for u in &exec.used {
        match u {
            Used::File(name, path) => {
                inputs.insert(name.clone(), hasher.hash(store, path)?);
            }
            Used::Value(name, v) => {
                inputs.insert(name.clone(), format!("value:{}", v.to_json()));
            }
            Used::ResultDir(..) => {}
        }
    }
    let params = params_memo.entry(s).or_insert_with(|| params_used(plan, s)).clone();
    Ok(Components {
        definition: def.finalize().to_hex()[..32].to_string(),
        command: key_view.argv.clone(),
        program,
        params,
        inputs,
    })
}
