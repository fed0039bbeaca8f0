//! Resolution of `${{ }}` references: what `params.n`, `steps.sim.out.result`, `in.grid`
//! ... name in a given context. Shared by validation (types, dependencies) and execution
//! (values), so both agree on what a name means.

use crate::expr::LookupError;
use crate::suggest::did_you_mean;

use super::cycle::Once;
use super::workflow::{LocalName, NsIdx, StepIdx, Workflow};

/// Where inside a step an expression is written; decides which names are visible.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ctx {
    /// A namespace-level expression (`with:` bindings evaluated in the caller, `outputs:`).
    Namespace,
    /// `scatter.over` of a step: no `scatter.*`, `in.*`, `out.*`.
    ScatterOver(StepIdx),
    /// `in:` of a step: `scatter.*` visible, `in.*`/`out.*` not.
    Inputs(StepIdx),
    /// `when:`: like `in:`.
    When(StepIdx),
    /// `run`, `args`, `env`: everything visible.
    Body(StepIdx),
    /// `wait.files` and `wait.command` of a step: like `in:` (no `wait.*`: the trigger
    /// is what produces those).
    Wait(StepIdx),
}

impl Ctx {
    /// The step this context belongs to.
    pub fn step(self) -> Option<StepIdx> {
        match self {
            Ctx::Namespace => None,
            Ctx::ScatterOver(s) | Ctx::Inputs(s) | Ctx::When(s) | Ctx::Body(s) | Ctx::Wait(s) => Some(s),
        }
    }
}

/// What a reference names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolved {
    /// `params.NAME` of namespace `ns`.
    Param(NsIdx, String),
    /// `inputs.NAME` of namespace `ns`.
    Input(NsIdx, String),
    /// `steps.S.out.NAME` of a runnable step.
    StepOut(StepIdx, String),
    /// `steps.S.values.NAME` of a runnable step.
    StepValue(StepIdx, String),
    /// `steps.CALL.out.NAME`: an output of a sub-workflow call (namespace).
    CallOut(NsIdx, String),
    /// `in.NAME` of the current step.
    In(StepIdx, String),
    /// `out.NAME` of the current step.
    Out(StepIdx, String),
    /// `scatter.NAME` of the current step.
    Scatter(StepIdx, String),
    /// `run.id`.
    RunId,
    /// `run.dir`.
    RunDir,
    /// `workflow.dir`: the absolute directory of the file of namespace `ns` (for a
    /// sub-workflow, its own file's), so steps can call scripts kept beside the workflow.
    WorkflowDir(NsIdx),
    /// `step.name`.
    StepName(StepIdx),
    /// `member.index` (scattered steps).
    MemberIndex(StepIdx),
    /// `prev.steps.S.out.NAME`: an output of step S in the previous cycle.
    PrevOut(StepIdx, String),
    /// `prev.steps.S.values.NAME`: a value output of step S in the previous cycle.
    PrevValue(StepIdx, String),
    /// `cycle.index` (from 0).
    CycleIndex,
    /// `cycle.point`: an int (integer cycling) or an ISO 8601 string (datetime cycling).
    CyclePoint,
    /// `cycle.first`.
    CycleFirst,
    /// `cycle.last` (false in every cycle when cycling has no end).
    CycleLast,
    /// `wait.files` of the current step: the paths its `files` trigger matched.
    WaitFiles(StepIdx),
    /// `wait.KEY` of the current step: a value from its trigger (a command's JSON output,
    /// a signal's `--value`).
    WaitValue(StepIdx, String),
}

fn err(message: String, help: Option<String>) -> LookupError {
    LookupError { message, help }
}

fn one_of<'a>(name: &str, known: impl IntoIterator<Item = &'a str> + Clone) -> Option<String> {
    did_you_mean(name, known.clone()).or_else(|| {
        let list: Vec<String> = known.into_iter().map(|k| format!("`{k}`")).collect();
        if list.is_empty() { None } else { Some(format!("known here: {}", list.join(", "))) }
    })
}

/// Resolves a dotted reference in namespace `ns` and context `ctx`.
pub fn resolve(wf: &Workflow, ns: NsIdx, ctx: Ctx, path: &[&str]) -> Result<Resolved, LookupError> {
    let n = &wf.namespaces[ns];
    let head = path.first().copied().unwrap_or("");
    let need = |len: usize, shape: &str| -> Result<(), LookupError> {
        if path.len() == len {
            Ok(())
        } else {
            Err(err(format!("`{}` should have the form `{shape}`", path.join(".")), None))
        }
    };
    match head {
        "params" => {
            need(2, "params.NAME")?;
            let name = path[1];
            if n.params.contains_key(name) {
                Ok(Resolved::Param(ns, name.to_string()))
            } else {
                Err(err(format!("unknown parameter `{name}`"), one_of(name, n.params.keys().map(String::as_str))))
            }
        }
        "inputs" => {
            need(2, "inputs.NAME")?;
            let name = path[1];
            if n.inputs.contains_key(name) {
                Ok(Resolved::Input(ns, name.to_string()))
            } else {
                Err(err(format!("unknown input `{name}`"), one_of(name, n.inputs.keys().map(String::as_str))))
            }
        }
        "steps" => {
            if path.len() != 4 || !(path[2] == "out" || path[2] == "values") {
                return Err(err(
                    format!(
                        "`{}` should have the form `steps.STEP.out.NAME` or `steps.STEP.values.NAME`",
                        path.join(".")
                    ),
                    None,
                ));
            }
            let (sname, kind, oname) = (path[1], path[2], path[3]);
            match n.names.get(sname) {
                None => Err(err(format!("unknown step `{sname}`"), one_of(sname, n.names.keys().map(String::as_str)))),
                Some(LocalName::Step(s)) => {
                    if ctx.step() == Some(*s) {
                        let help = if wf.cycle.is_some() {
                            format!(
                                "use `out.{oname}` inside the step, or `prev.steps.{sname}.{kind}.{oname}` for the previous cycle's"
                            )
                        } else {
                            format!("use `out.{oname}` inside the step")
                        };
                        return Err(err(format!("step `{sname}` refers to its own output"), Some(help)));
                    }
                    let st = &wf.steps[*s];
                    let map = if kind == "out" { &st.outputs } else { &st.values };
                    if map.contains_key(oname) {
                        Ok(if kind == "out" {
                            Resolved::StepOut(*s, oname.to_string())
                        } else {
                            Resolved::StepValue(*s, oname.to_string())
                        })
                    } else {
                        Err(err(
                            format!(
                                "step `{sname}` has no {} `{oname}`",
                                if kind == "out" { "output" } else { "value" }
                            ),
                            one_of(oname, map.keys().map(String::as_str)),
                        ))
                    }
                }
                Some(LocalName::Call(child)) => {
                    let c = &wf.namespaces[*child];
                    if kind == "out" && c.outputs.contains_key(oname) {
                        Ok(Resolved::CallOut(*child, oname.to_string()))
                    } else {
                        Err(err(
                            format!("sub-workflow call `{sname}` has no output `{oname}`"),
                            one_of(oname, c.outputs.keys().map(String::as_str)),
                        ))
                    }
                }
            }
        }
        "in" | "out" | "scatter" => {
            need(2, &format!("{head}.NAME"))?;
            let name = path[1];
            let Some(s) = ctx.step() else {
                return Err(err(format!("`{head}.*` can only be used inside a step"), None));
            };
            let st = &wf.steps[s];
            match (head, ctx) {
                ("in", Ctx::Body(_)) => {
                    if st.inputs.contains_key(name) {
                        Ok(Resolved::In(s, name.to_string()))
                    } else {
                        Err(err(
                            format!("step has no input `{name}`"),
                            one_of(name, st.inputs.keys().map(String::as_str)),
                        ))
                    }
                }
                ("out", Ctx::Body(_)) => {
                    if st.outputs.contains_key(name) || st.values.contains_key(name) {
                        Ok(Resolved::Out(s, name.to_string()))
                    } else {
                        Err(err(
                            format!("step has no output `{name}`"),
                            one_of(name, st.outputs.keys().chain(st.values.keys()).map(String::as_str)),
                        ))
                    }
                }
                ("scatter", Ctx::Body(_) | Ctx::Inputs(_) | Ctx::When(_) | Ctx::Wait(_)) => match &st.scatter {
                    Some(sc) if sc.vars.contains_key(name) => Ok(Resolved::Scatter(s, name.to_string())),
                    Some(sc) => Err(err(
                        format!("unknown scatter variable `{name}`"),
                        one_of(name, sc.vars.keys().map(String::as_str)),
                    )),
                    None => Err(err(format!("`scatter.{name}` used in a step without `scatter:`"), None)),
                },
                _ => Err(err(
                    format!("`{head}.{name}` is not available here"),
                    Some(match head {
                        "in" => "`in.*` is visible in `run`, `args` and `env`".to_string(),
                        "out" => "`out.*` is visible in `run`, `args` and `env`".to_string(),
                        _ => "`scatter.*` is visible in `in`, `when`, `wait`, `run`, `args` and `env`".to_string(),
                    }),
                )),
            }
        }
        // A scatter is expanded when the run is planned, before it has an id or a directory.
        "run" | "step" | "cycle" | "prev" | "wait" if matches!(ctx, Ctx::ScatterOver(_)) => Err(err(
            format!("`{}` is not known when scatters are expanded", path.join(".")),
            Some("a scatter list may use parameters, inputs and outputs of scattered steps".into()),
        )),
        "run" => match path {
            [_, "id"] => Ok(Resolved::RunId),
            [_, "dir"] => Ok(Resolved::RunDir),
            _ => Err(err(format!("unknown reference `{}`", path.join(".")), Some("known: `run.id`, `run.dir`".into()))),
        },
        "workflow" => match path {
            [_, "dir"] => Ok(Resolved::WorkflowDir(ns)),
            _ => Err(err(format!("unknown reference `{}`", path.join(".")), Some("known: `workflow.dir`".into()))),
        },
        "step" => match (path, ctx.step()) {
            ([_, "name"], Some(s)) => Ok(Resolved::StepName(s)),
            _ => Err(err(
                format!("unknown reference `{}`", path.join(".")),
                Some("known inside a step: `step.name`".into()),
            )),
        },
        "member" => match (path, ctx.step()) {
            ([_, "index"], Some(s)) if wf.steps[s].scatter.is_some() && !matches!(ctx, Ctx::ScatterOver(_)) => {
                Ok(Resolved::MemberIndex(s))
            }
            _ => Err(err(format!("`{}` is only available in a scattered step", path.join(".")), None)),
        },
        "cycle" | "prev" if wf.cycle.is_none() => Err(err(
            format!("`{}` is only available in a cycling workflow", path.join(".")),
            Some(
                "add a `cycle:` block to the workflow that is run (`cycle: { every: 1, start: 0, cycles: 5 }`)".into(),
            ),
        )),
        "cycle" => match path {
            [_, "index"] => Ok(Resolved::CycleIndex),
            [_, "point"] => Ok(Resolved::CyclePoint),
            [_, "first"] => Ok(Resolved::CycleFirst),
            [_, "last"] => Ok(Resolved::CycleLast),
            _ => Err(err(
                format!("unknown reference `{}`", path.join(".")),
                Some("known: `cycle.index`, `cycle.point`, `cycle.first`, `cycle.last`".into()),
            )),
        },
        "prev" => resolve_prev(wf, ns, ctx, path),
        "wait" => resolve_wait(wf, ctx, path),
        _ => {
            let cycling = wf.cycle.is_some();
            let mut heads =
                vec!["params", "inputs", "steps", "in", "out", "scatter", "run", "step", "member", "workflow"];
            if cycling {
                heads.extend(["prev", "cycle", "wait"]);
            }
            Err(err(
                format!("unknown reference `{}`", path.join(".")),
                did_you_mean(head, heads).or_else(|| {
                    Some(if cycling {
                        "references start with `params.`, `inputs.`, `steps.`, `prev.`, `cycle.`, `wait.`, `in.`, `out.`, `scatter.`, `run.`, `step.`, `member.` or `workflow.`".into()
                    } else {
                        "references start with `params.`, `inputs.`, `steps.`, `in.`, `out.`, `scatter.`, `run.`, `step.`, `member.` or `workflow.`".into()
                    })
                }),
            ))
        }
    }
}

/// `prev.steps.S.out.NAME` / `prev.steps.S.values.NAME`: step S's result in the previous
/// cycle. Unlike `steps.*`, a step may read its own previous result.
fn resolve_prev(wf: &Workflow, ns: NsIdx, ctx: Ctx, path: &[&str]) -> Result<Resolved, LookupError> {
    let shape = || {
        err(
            format!(
                "`{}` should have the form `prev.steps.STEP.out.NAME` or `prev.steps.STEP.values.NAME`",
                path.join(".")
            ),
            None,
        )
    };
    let [_, "steps", sname, kind @ ("out" | "values"), oname] = path else { return Err(shape()) };
    let Some(here) = ctx.step() else {
        return Err(err(
            format!("`{}` can only be used inside a step", path.join(".")),
            Some("read the previous cycle in the step that needs it".into()),
        ));
    };
    if wf.steps[here].once == Some(Once::First) {
        return Err(err(
            format!("`{}` is read by a `once: first` step, which runs only in the first cycle", path.join(".")),
            Some("the first cycle has no previous one; remove `once: first` or the `prev.*` reference".into()),
        ));
    }
    let n = &wf.namespaces[ns];
    let s = match n.names.get(*sname) {
        None => {
            return Err(err(format!("unknown step `{sname}`"), one_of(sname, n.names.keys().map(String::as_str))));
        }
        Some(LocalName::Call(_)) => {
            return Err(err(
                format!("`prev.*` cannot read the sub-workflow call `{sname}`"),
                Some("name a step instead (`prev.steps.STEP.out.NAME`)".into()),
            ));
        }
        Some(LocalName::Step(s)) => *s,
    };
    let st = &wf.steps[s];
    if let Some(once) = st.once {
        let (word, help) = match once {
            Once::First => {
                ("first", format!("later cycles read the first cycle's result with `steps.{sname}.{kind}.{oname}`"))
            }
            Once::Last => ("last", "nothing runs after the last cycle".to_string()),
        };
        return Err(err(
            format!("`prev.steps.{sname}` reads step `{sname}`, which does not run every cycle (`once: {word}`)"),
            Some(help),
        ));
    }
    let map = if *kind == "out" { &st.outputs } else { &st.values };
    if !map.contains_key(*oname) {
        return Err(err(
            format!("step `{sname}` has no {} `{oname}`", if *kind == "out" { "output" } else { "value" }),
            one_of(oname, map.keys().map(String::as_str)),
        ));
    }
    Ok(if *kind == "out" { Resolved::PrevOut(s, oname.to_string()) } else { Resolved::PrevValue(s, oname.to_string()) })
}

/// `wait.files` and `wait.KEY`: what the current step's trigger found.
fn resolve_wait(wf: &Workflow, ctx: Ctx, path: &[&str]) -> Result<Resolved, LookupError> {
    let [_, key] = path else {
        return Err(err(format!("`{}` should have the form `wait.files` or `wait.KEY`", path.join(".")), None));
    };
    let s = match ctx {
        Ctx::Inputs(s) | Ctx::Body(s) => s,
        _ => {
            return Err(err(
                format!("`wait.{key}` is not available here"),
                Some("`wait.*` is visible in `in`, `run`, `args` and `env` of a step with `wait:`".into()),
            ));
        }
    };
    let Some(w) = &wf.steps[s].wait else {
        return Err(err(format!("`wait.{key}` used in a step without `wait:`"), None));
    };
    if *key == "files" {
        return if w.files.is_empty() {
            Err(err("`wait.files` used in a step whose `wait:` has no `files`".into(), None))
        } else {
            Ok(Resolved::WaitFiles(s))
        };
    }
    if w.command.is_empty() && w.signal.is_none() {
        return Err(err(
            format!("`wait.{key}` needs a `command` or `signal` trigger"),
            Some("values come from a command's JSON output or a signal's `--value k=v`".into()),
        ));
    }
    Ok(Resolved::WaitValue(s, key.to_string()))
}
