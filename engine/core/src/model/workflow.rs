//! The validated workflow: names resolved, expressions parsed, units converted.
//! Sub-workflows (`uses:`) are namespaces whose steps are flattened into one list, named
//! `call/inner`.

use std::path::PathBuf;
use std::time::Duration;

use indexmap::IndexMap;

use crate::expr::{Template, Type, Value};
use crate::spec::raw::{FileFormat, ParamType, ScatterMethod};
use crate::spec::span::{SourceFile, Span};

use super::cycle::{CycleSpec, Once, Wait};
use super::resources::Resources;
use super::service::Service;

/// Index of a step in [`Workflow::steps`].
pub type StepIdx = usize;
/// Index of a namespace in [`Workflow::namespaces`] (0 is the root workflow).
pub type NsIdx = usize;

/// A validated workflow.
#[derive(Debug)]
pub struct Workflow {
    /// `name:` of the root file.
    pub name: String,
    /// `version:`.
    pub version: Option<String>,
    /// `description:`.
    pub description: Option<String>,
    /// Root first, then one namespace per sub-workflow call.
    pub namespaces: Vec<Namespace>,
    /// Every runnable step, all namespaces flattened.
    pub steps: Vec<Step>,
    /// Resolved values of the root parameters (defaults and `-p` overrides).
    pub param_values: IndexMap<String, Value>,
    /// Resolved paths of the root inputs.
    pub input_values: IndexMap<String, PathBuf>,
    /// `cycle:` of the root file: the workflow cycles when given.
    pub cycle: Option<CycleSpec>,
}

/// A declared parameter.
#[derive(Debug, Clone)]
pub struct ParamDef {
    /// Its type.
    pub ty: ParamType,
    /// Element type of lists.
    pub items: ParamType,
    /// Default value, if any.
    pub default: Option<Value>,
    /// Bounds.
    pub min: Option<f64>,
    /// Bounds.
    pub max: Option<f64>,
    /// Allowed values of enums.
    pub values: Vec<String>,
    /// Where it was declared.
    pub span: Span,
}

impl ParamDef {
    /// The expression type of this parameter.
    pub fn expr_type(&self) -> Type {
        fn scalar(t: ParamType) -> Type {
            match t {
                ParamType::Int => Type::Int,
                ParamType::Float => Type::Float,
                ParamType::String | ParamType::Enum => Type::Str,
                ParamType::Bool => Type::Bool,
                ParamType::Path => Type::Path,
                ParamType::List => Type::List(Box::new(Type::Any)),
            }
        }
        match self.ty {
            ParamType::List => Type::List(Box::new(scalar(self.items))),
            t => scalar(t),
        }
    }
}

/// A declared input file.
#[derive(Debug, Clone)]
pub struct InputDef {
    /// Default path (already resolved against the file's directory).
    pub default: Option<PathBuf>,
    /// Expected format.
    pub format: FileFormat,
    /// Where it was declared.
    pub span: Span,
}

/// A workflow file instantiated once: the root, or one `uses:` call.
#[derive(Debug)]
pub struct Namespace {
    /// Parent namespace (the caller), `None` for the root.
    pub parent: Option<NsIdx>,
    /// Prefix of step names (`""` for the root, `"stats/"` for a call named `stats`).
    pub prefix: String,
    /// The file.
    pub file: SourceFile,
    /// Declared parameters.
    pub params: IndexMap<String, ParamDef>,
    /// Declared inputs.
    pub inputs: IndexMap<String, InputDef>,
    /// Values given by the caller's `with:` (evaluated in the parent namespace).
    pub bindings: IndexMap<String, ValueExpr>,
    /// Local step name → what it is.
    pub names: IndexMap<String, LocalName>,
    /// `outputs:` of this file.
    pub outputs: IndexMap<String, Tpl>,
    /// `assert:` of this file: conditions on its parameters and inputs.
    pub asserts: Vec<Assert>,
}

/// One `assert:` condition.
#[derive(Debug, Clone)]
pub struct Assert {
    /// The boolean expression.
    pub that: Tpl,
    /// Why it must hold, if the file says.
    pub message: Option<String>,
}

impl Namespace {
    /// Local name of the call that created this namespace, from its prefix
    /// (`outer/call/` → `call`; `""` for the root).
    pub fn call_name(&self) -> &str {
        self.prefix.trim_end_matches('/').rsplit('/').next().unwrap_or("")
    }
}

/// What a step name in a namespace refers to.
#[derive(Debug, Clone, Copy)]
pub enum LocalName {
    /// A runnable step.
    Step(StepIdx),
    /// A call of a sub-workflow (its namespace).
    Call(NsIdx),
}

/// A parsed template together with where it was written.
#[derive(Debug, Clone)]
pub struct Tpl {
    /// The text.
    pub src: String,
    /// Parsed form.
    pub tpl: Template,
    /// Span of the text in its file (inside the quotes).
    pub span: Span,
}

/// A value written in YAML: a template string, a literal, or a list of them.
#[derive(Debug, Clone)]
pub enum ValueExpr {
    /// A string, possibly with `${{ }}`.
    Tpl(Tpl),
    /// A number, boolean or null.
    Lit(Value, Span),
    /// A list.
    List(Vec<ValueExpr>, Span),
}

impl ValueExpr {
    /// Span of the whole value.
    pub fn span(&self) -> Span {
        match self {
            ValueExpr::Tpl(t) => t.span,
            ValueExpr::Lit(_, s) | ValueExpr::List(_, s) => *s,
        }
    }
    /// Every template inside.
    pub fn templates(&self) -> Vec<&Tpl> {
        match self {
            ValueExpr::Tpl(t) => vec![t],
            ValueExpr::Lit(..) => vec![],
            ValueExpr::List(items, _) => items.iter().flat_map(|i| i.templates()).collect(),
        }
    }
}

/// What a step runs.
#[derive(Debug, Clone)]
pub enum Command {
    /// `kernel: NAME`: `twin-kernel NAME args...`.
    Kernel(String),
    /// `run: [argv...]`; with `shell`, `/bin/sh -c argv[0]`.
    Run {
        /// The argv templates.
        argv: Vec<Tpl>,
        /// Explicit `shell: true`.
        shell: bool,
    },
}

/// Retry policy.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Retries after the first failure.
    pub count: u32,
    /// First delay.
    pub backoff: Duration,
    /// Growth factor.
    pub factor: f64,
    /// Cap.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self { count: 0, backoff: Duration::from_secs(1), factor: 2.0, max_backoff: Duration::from_secs(300) }
    }
}

impl RetryPolicy {
    /// Delay before retry number `retry` (1-based): `backoff * factor^(retry-1)`, capped.
    pub fn delay(&self, retry: u32) -> Duration {
        let secs = self.backoff.as_secs_f64() * self.factor.powi(retry.saturating_sub(1).min(64) as i32);
        Duration::from_secs_f64(secs.min(self.max_backoff.as_secs_f64()).max(0.0))
    }
}

/// A scatter specification.
#[derive(Debug, Clone)]
pub struct Scatter {
    /// Variables in order, with the expression giving each list.
    pub vars: IndexMap<String, ValueExpr>,
    /// How lists combine.
    pub method: ScatterMethod,
    /// `allow_empty: true`: 0 members is not an error.
    pub allow_empty: bool,
    /// Where `scatter:` was written.
    pub span: Span,
}

/// A runnable step.
#[derive(Debug, Clone)]
pub struct Step {
    /// Global name (`sim`, or `stats/reduce` inside a call).
    pub name: String,
    /// Name inside its namespace.
    pub local_name: String,
    /// Its namespace.
    pub ns: NsIdx,
    /// Span of the step's name.
    pub span: Span,
    /// What it runs.
    pub command: Command,
    /// Arguments appended to the command.
    pub args: Vec<Tpl>,
    /// Extra environment.
    pub env: IndexMap<String, Tpl>,
    /// Named inputs.
    pub inputs: IndexMap<String, ValueExpr>,
    /// Named outputs: relative paths inside the step directory.
    pub outputs: IndexMap<String, String>,
    /// Value outputs: relative paths whose content is read back.
    pub values: IndexMap<String, String>,
    /// Copies of outputs published outside the run directory: output name → target path.
    pub publish: IndexMap<String, Tpl>,
    /// Resources.
    pub resources: Resources,
    /// Retry policy.
    pub retry: RetryPolicy,
    /// Per-attempt timeout.
    pub timeout: Option<Duration>,
    /// Scatter, if any.
    pub scatter: Option<Scatter>,
    /// Condition.
    pub when: Option<Tpl>,
    /// Steps this one depends on (data flow and `after:`), deduplicated, sorted.
    pub deps: Vec<StepIdx>,
    /// Steps named by `after:` (ordering only).
    pub after: Vec<StepIdx>,
    /// `once:`: runs only in the first or the last cycle (cycling workflows).
    pub once: Option<Once>,
    /// `wait:`: triggers gating each of the step's tasks (cycling workflows).
    pub wait: Option<Wait>,
    /// Steps whose results of the previous cycle this one reads (`prev.steps.S...`),
    /// deduplicated, sorted. Not part of `deps`: they link a cycle to the one before.
    pub prev_deps: Vec<StepIdx>,
    /// `service:`: a long-running service rather than a step that ends by itself.
    pub service: Option<Service>,
    /// `report:`: outputs shown in the run's report.
    pub report: ReportDecl,
}

/// A step's `report:`: names of its outputs (`out:`) shown in the run's report.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ReportDecl {
    /// Outputs embedded as figures (PNG, SVG).
    pub figures: Vec<String>,
    /// Outputs shown as tables (CSV).
    pub tables: Vec<String>,
    /// Outputs holding alerts (JSON lines), reported as `alert` events after success.
    #[serde(default)]
    pub alerts: Vec<String>,
}
