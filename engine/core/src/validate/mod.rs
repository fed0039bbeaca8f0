//! Phase 2, validate: raw shape → [`Workflow`] model, collecting every problem.
//!
//! Checks, each reported at `file:line:col`: names, duplicate and dangling references (with
//! "did you mean"), expression syntax and types, parameter defaults against their types
//! and bounds, `-p` overrides, scatter list lengths, output paths that would escape the
//! step directory, imports (missing files, import cycles), and dependency cycles between
//! steps (with the cycle's path).

pub(crate) mod checks;
pub mod files;
mod params;
mod step;
mod types;

use std::collections::{HashMap, HashSet};
use std::path::{Component, Path, PathBuf};

use indexmap::IndexMap;

use crate::diag::{Diag, DiagKind, Diagnostics};
use crate::expr::{self, Value};
use crate::model::*;
/// The model validation builds, also under its former path `validate::model`, which code in
/// `run/` and `execute/` still names.
pub use crate::model::{self, Workflow};
use crate::spec::raw::{ParamType, RawStep, RawWorkflow};
use crate::spec::span::{SourceFile, Sp, Span};
use crate::spec::{self};
use crate::suggest::did_you_mean;
pub use params::{ParamError, check_param_value, parse_override};

/// Maximum nesting of `imports:`.
const MAX_IMPORT_DEPTH: usize = 16;
/// Stop after this many problems: beyond it, more messages do not help.
const MAX_DIAGNOSTICS: usize = 100;

/// What the user set on the command line.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    /// `-p name=value`, in order.
    pub params: Vec<(String, String)>,
    /// `-i name=path`, in order.
    pub inputs: Vec<(String, PathBuf)>,
}

/// Reads, parses and validates the workflow at `path`.
pub fn load(path: &Path, overrides: &Overrides) -> Result<Workflow, Diagnostics> {
    let file = spec::read_source(path).map_err(|d| Diagnostics(vec![d]))?;
    let raw = spec::parse(&file)?;
    validate(file, raw, overrides)
}

/// Validates a parsed root workflow.
pub fn validate(file: SourceFile, raw: RawWorkflow, overrides: &Overrides) -> Result<Workflow, Diagnostics> {
    let mut v = Validator {
        diags: Diagnostics::default(),
        wf: empty_workflow(&raw),
        import_stack: vec![],
        pending_after: vec![],
        pending_counts: vec![],
        counts_of_step: vec![],
        broken: HashSet::new(),
        imported_by: HashMap::new(),
    };
    v.import_stack.push((canonical(&file.path), file.display_path()));
    v.add_namespace(None, String::new(), file, raw, IndexMap::new());
    if v.diags.is_empty() {
        v.resolve_root_params(overrides);
    }
    // Expressions are checked even when some steps are broken (references to those are
    // skipped), so one run reports every problem.
    v.check_references();
    if v.diags.is_empty() {
        v.resolve_counts();
    }
    if v.diags.is_empty() {
        v.compute_deps_and_cycles();
    }
    v.diags.0.truncate(MAX_DIAGNOSTICS);
    sort_by_place(&mut v.diags.0);
    note_importers(&mut v.diags.0, &v.imported_by);
    let Validator { diags, wf, .. } = v;
    diags.into_result(wf)
}

/// Adds "imported by FILE:LINE:COL" to problems found in imported files, so the chain back
/// to the file the user named is visible.
fn note_importers(diags: &mut [Diag], imported_by: &HashMap<PathBuf, (PathBuf, String)>) {
    for d in diags {
        let Some(file) = &d.file else { continue };
        let mut notes = vec![];
        let mut at = &file.path;
        while let Some((parent, loc)) = imported_by.get(at) {
            if notes.len() > MAX_IMPORT_DEPTH {
                break;
            }
            notes.push(format!("imported by {loc}"));
            at = parent;
        }
        if !notes.is_empty() {
            let notes = notes.join("\n");
            d.help = Some(match d.help.take() {
                Some(h) => format!("{h}\n{notes}"),
                None => notes,
            });
        }
    }
}

/// Orders problems as they appear in the text: by file (in order of first mention), then by
/// position; problems without a place (`-p`, `-i`) first.
fn sort_by_place(diags: &mut [Diag]) {
    let mut files: Vec<PathBuf> = vec![];
    for d in diags.iter() {
        if let Some(f) = &d.file
            && !files.contains(&f.path)
        {
            files.push(f.path.clone());
        }
    }
    diags.sort_by_key(|d| match &d.file {
        None => (0, 0),
        Some(f) => (
            1 + files.iter().position(|p| *p == f.path).unwrap_or(0),
            d.labels.first().map_or(0, |(span, _)| span.offset),
        ),
    });
}

fn empty_workflow(raw: &RawWorkflow) -> Workflow {
    Workflow {
        name: raw.name.value.clone(),
        version: raw.version.as_ref().map(|v| v.value.to_string()),
        description: raw.description.clone(),
        namespaces: vec![],
        steps: vec![],
        param_values: IndexMap::new(),
        input_values: IndexMap::new(),
    }
}

/// `a/b/../c` → `a/c`, without touching the file system (for messages only).
fn normalize_for_display(p: &Path) -> String {
    let mut out: Vec<Component<'_>> = vec![];
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir if matches!(out.last(), Some(Component::Normal(_))) => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out.iter().collect::<PathBuf>().display().to_string()
}

fn canonical(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf())
}

/// Whether `name` is a valid step/param/output name: a letter, then letters, digits, `_`, `-`.
pub fn valid_name(name: &str) -> bool {
    let mut c = name.chars();
    matches!(c.next(), Some(f) if f.is_ascii_alphabetic())
        && c.all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == '-')
        && name.len() <= 64
}

/// Whether a relative path stays inside its base directory (no `..` escaping, not absolute).
pub fn path_stays_inside(p: &str) -> bool {
    let path = Path::new(p);
    if p.is_empty() || path.is_absolute() {
        return false;
    }
    let mut depth: i64 = 0;
    for comp in path.components() {
        match comp {
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            Component::ParentDir => {
                depth -= 1;
                if depth < 0 {
                    return false;
                }
            }
            Component::RootDir | Component::Prefix(_) => return false,
        }
    }
    depth > 0
}

struct Validator {
    diags: Diagnostics,
    wf: Workflow,
    /// Files being imported, outermost first: canonical path (to detect cycles) and the
    /// path as shown in messages.
    import_stack: Vec<(PathBuf, String)>,
    /// `after:` lists, resolved once every step of a namespace is known.
    pending_after: Vec<(StepIdx, Vec<Sp<String>>)>,
    /// Resource counts written as expressions (`ranks: ${{ params.ranks }}`): step, field,
    /// template, minimum. Evaluated once parameters are known.
    pending_counts: Vec<(StepIdx, String, Tpl, u32)>,
    /// The same, collected while the current step is being built.
    counts_of_step: Vec<(String, Tpl, u32)>,
    /// Steps and calls (namespace, local name) that had problems: expressions referring to
    /// them are not checked, so one mistake is not reported again at every use.
    broken: HashSet<(NsIdx, String)>,
    /// Imported file → (importing file, `file:line:col` of the `uses:`), for "imported by" notes.
    imported_by: HashMap<PathBuf, (PathBuf, String)>,
}

impl Validator {
    fn push(&mut self, d: Diag) {
        if self.diags.len() < MAX_DIAGNOSTICS {
            self.diags.push(d);
        }
    }

    fn file(&self, ns: NsIdx) -> SourceFile {
        self.wf.namespaces[ns].file.clone()
    }

    /// Parses a template written in a YAML scalar at `span`.
    fn tpl(&mut self, file: &SourceFile, field: &str, text: &str, span: Span) -> Option<Tpl> {
        // The span of a quoted scalar starts at its quote; expressions are inside.
        let inner = match file.text.as_bytes().get(span.offset) {
            Some(b'"') | Some(b'\'') => Span::new(span.offset + 1, text.len()),
            _ => Span::new(span.offset, text.len()),
        };
        match expr::parse_template(text) {
            Ok(tpl) => Some(Tpl { src: text.to_string(), tpl, span: inner }),
            Err(e) => {
                let mut d = Diag::new(
                    DiagKind::Expression,
                    file,
                    inner.sub(e.span.start, e.span.end.max(e.span.start + 1)),
                    field,
                    e.message.clone(),
                );
                if let Some(h) = e.help {
                    d = d.with_help(h);
                }
                self.push(d);
                None
            }
        }
    }

    /// [`Self::tpl`] for an element of a list (`run`, `args`): one that does not parse stays
    /// as an empty template, so later checks still name the right index (`run[2]`). The
    /// workflow is invalid then anyway.
    fn tpl_kept(&mut self, file: &SourceFile, field: &str, text: &str, span: Span) -> Option<Tpl> {
        self.tpl(file, field, text, span)
            .or_else(|| expr::parse_template("").ok().map(|tpl| Tpl { src: text.to_string(), tpl, span }))
    }

    fn value_expr(&mut self, file: &SourceFile, field: &str, v: &Sp<serde_json::Value>) -> Option<ValueExpr> {
        self.json_to_value_expr(file, field, &v.value, v.span)
    }

    fn json_to_value_expr(
        &mut self,
        file: &SourceFile,
        field: &str,
        v: &serde_json::Value,
        span: Span,
    ) -> Option<ValueExpr> {
        use serde_json::Value as J;
        Some(match v {
            J::String(s) => ValueExpr::Tpl(self.tpl(file, field, s, span)?),
            J::Array(items) => {
                let mut out = Vec::with_capacity(items.len());
                for (i, it) in items.iter().enumerate() {
                    // Elements of a flow/block list have no spans of their own here; use the list's.
                    let field_i = format!("{field}[{i}]");
                    let e = match it {
                        J::String(s) => match expr::parse_template(s) {
                            Ok(tpl) => ValueExpr::Tpl(Tpl { src: s.clone(), tpl, span }),
                            Err(e) => {
                                self.push(Diag::new(DiagKind::Expression, file, span, field_i, e.message));
                                return None;
                            }
                        },
                        other => self.json_to_value_expr(file, &field_i, other, span)?,
                    };
                    out.push(e);
                }
                ValueExpr::List(out, span)
            }
            J::Object(_) => {
                self.push(Diag::new(DiagKind::Type, file, span, field, "expected a value or a list, found a map"));
                return None;
            }
            other => match Value::from_json(other) {
                Some(val) => ValueExpr::Lit(val, span),
                None => {
                    self.push(Diag::new(DiagKind::Type, file, span, field, "unsupported value"));
                    return None;
                }
            },
        })
    }

    fn add_namespace(
        &mut self,
        parent: Option<NsIdx>,
        prefix: String,
        file: SourceFile,
        raw: RawWorkflow,
        bindings: IndexMap<String, ValueExpr>,
    ) -> NsIdx {
        let ns = self.wf.namespaces.len();
        if !valid_name(&raw.name) {
            self.push(
                Diag::new(
                    DiagKind::InvalidName,
                    &file,
                    raw.name.span,
                    "name",
                    format!("invalid workflow name `{}`", raw.name.value),
                )
                .with_help("use letters, digits, `-` and `_`, starting with a letter"),
            );
        }
        let mut params = IndexMap::new();
        for (name, p) in &raw.params {
            if let Some(def) = self.param_def(&file, name, p) {
                params.insert(name.value.clone(), def);
            }
        }
        let mut inputs = IndexMap::new();
        for (name, i) in &raw.inputs {
            self.check_name(&file, name, "inputs");
            inputs.insert(
                name.value.clone(),
                InputDef {
                    default: i.default.as_ref().map(|d| file.abs_dir().join(&d.value)),
                    format: i.format.as_ref().map(|f| f.value).unwrap_or_default(),
                    span: name.span,
                },
            );
        }
        self.wf.namespaces.push(Namespace {
            parent,
            prefix: prefix.clone(),
            file: file.clone(),
            params,
            inputs,
            bindings,
            names: IndexMap::new(),
            outputs: IndexMap::new(),
        });

        if raw.steps.is_empty() {
            self.push(
                Diag::new(DiagKind::MissingKey, &file, raw.steps.span, "steps", "workflow has no steps")
                    .with_help("add at least one step under `steps:`"),
            );
        }
        for (name, step) in raw.steps.iter() {
            let before = self.diags.len();
            self.check_name(&file, name, "steps");
            if let Some(uses) = &step.uses {
                self.add_call(ns, &file, &raw, name, step, uses);
            } else if let Some(s) = self.build_step(ns, &file, &prefix, name, step) {
                let idx = self.wf.steps.len();
                self.wf.steps.push(s);
                self.wf.namespaces[ns].names.insert(name.value.clone(), LocalName::Step(idx));
            }
            if self.diags.len() > before {
                self.broken.insert((ns, name.value.clone()));
            }
        }
        // An import no step uses is never loaded; still check its file exists, so a typo in
        // a path does not wait until someone calls it.
        for (alias, path) in &raw.imports {
            let used = raw.steps.values().any(|st| st.uses.as_ref().is_some_and(|u| u.value == alias.value));
            if !used && !file.dir().join(&path.value).is_file() {
                self.push(
                    Diag::new(
                        DiagKind::Import,
                        &file,
                        path.span,
                        format!("imports.{}", alias.value),
                        format!("imported file `{}` does not exist", file.dir().join(&path.value).display()),
                    )
                    .with_help("paths in `imports:` are relative to the importing file"),
                );
            }
        }
        // Sub-workflow `with:` keys must name declared params or inputs.
        let n = &self.wf.namespaces[ns];
        let unknown: Vec<(String, Span)> = n
            .bindings
            .iter()
            .filter(|(k, _)| !n.params.contains_key(*k) && !n.inputs.contains_key(*k))
            .map(|(k, v)| (k.clone(), v.span()))
            .collect();
        let known: Vec<String> = n.params.keys().chain(n.inputs.keys()).cloned().collect();
        let call = n.call_name().to_string();
        if let Some(pfile) = parent.map(|p| self.file(p)) {
            for (k, span) in unknown {
                let mut d = Diag::new(
                    DiagKind::UnknownReference,
                    &pfile,
                    span,
                    format!("steps.{call}.with.{k}"),
                    format!("sub-workflow `{}` has no parameter or input `{k}`", raw.name.value),
                );
                if let Some(h) = did_you_mean(&k, known.iter().map(String::as_str)) {
                    d = d.with_help(h);
                }
                self.push(d);
            }
        }
        for (name, out) in &raw.outputs {
            self.check_name(&file, name, "outputs");
            if let Some(t) = self.tpl(&file, &format!("outputs.{}", name.value), &out.value, out.span) {
                self.wf.namespaces[ns].outputs.insert(name.value.clone(), t);
            }
        }
        ns
    }

    fn check_name(&mut self, file: &SourceFile, name: &Sp<String>, section: &str) {
        if !valid_name(name) {
            self.push(
                Diag::new(
                    DiagKind::InvalidName,
                    file,
                    name.span,
                    format!("{section}.{}", name.value),
                    format!("invalid name `{}`", name.value),
                )
                .with_help("names start with a letter and contain only letters, digits, `-` and `_` (at most 64)"),
            );
        }
    }

    fn add_call(
        &mut self,
        ns: NsIdx,
        file: &SourceFile,
        raw: &RawWorkflow,
        name: &Sp<String>,
        step: &RawStep,
        uses: &Sp<String>,
    ) {
        let field = format!("steps.{}.uses", name.value);
        if step.kernel.is_some() || step.run.is_some() {
            self.push(Diag::new(
                DiagKind::InvalidValue,
                file,
                uses.span,
                field.clone(),
                "a step has exactly one of `kernel`, `run` and `uses`",
            ));
            return;
        }
        let unsupported = [
            (step.scatter.is_some(), "scatter"),
            (step.when.is_some(), "when"),
            (!step.args.is_empty(), "args"),
            (!step.inputs.is_empty(), "in"),
            (!step.out.is_empty(), "out"),
            (!step.publish.is_empty(), "publish"),
            (step.resources.is_some(), "resources"),
            (!step.env.is_empty(), "env"),
            (!step.values.is_empty(), "values"),
            (step.retry.is_some(), "retry"),
            (step.timeout.is_some(), "timeout"),
            (step.shell.is_some(), "shell"),
            (!step.after.is_empty(), "after"),
        ];
        for (present, key) in unsupported {
            if present {
                self.push(
                    Diag::new(
                        DiagKind::InvalidValue,
                        file,
                        name.span,
                        format!("steps.{}.{key}", name.value),
                        format!("`{key}` cannot be used on a sub-workflow call"),
                    )
                    .with_help(if key == "after" {
                        "a call waits for what its `with:` values reference; pass an upstream output to order it"
                    } else {
                        "pass values with `with:`; set this on the steps of the sub-workflow"
                    }),
                );
            }
        }
        let Some((_, path)) = raw.imports.get_key_value(uses.value.as_str()) else {
            let mut d = Diag::new(
                DiagKind::UnknownReference,
                file,
                uses.span,
                field,
                format!("unknown import `{}`", uses.value),
            );
            d = d.with_help(
                did_you_mean(&uses.value, raw.imports.keys().map(|k| k.value.as_str()))
                    .unwrap_or_else(|| "declare it under `imports:` (`imports: { stats: stats.yaml }`)".into()),
            );
            self.push(d);
            return;
        };
        let target = file.dir().join(&path.value);
        let canon = canonical(&target);
        let shown = normalize_for_display(&target);
        if let Some(i) = self.import_stack.iter().position(|(c, _)| *c == canon) {
            let chain: Vec<String> = self.import_stack[i..].iter().map(|(_, d)| format!("`{d}`")).collect();
            self.push(
                Diag::new(
                    DiagKind::Import,
                    file,
                    path.span,
                    format!("imports.{}", uses.value),
                    format!("import cycle: {} → `{shown}`", chain.join(" → ")),
                )
                .with_help("a workflow cannot import itself, directly or through other imports"),
            );
            return;
        }
        if self.import_stack.len() >= MAX_IMPORT_DEPTH {
            self.push(Diag::new(
                DiagKind::Import,
                file,
                path.span,
                format!("imports.{}", uses.value),
                format!("imports nested deeper than {MAX_IMPORT_DEPTH} levels"),
            ));
            return;
        }
        let sub_file = match spec::read_source(&target) {
            Ok(f) => f,
            Err(e) => {
                self.push(Diag::new(DiagKind::Import, file, path.span, format!("imports.{}", uses.value), e.message));
                return;
            }
        };
        let (line, col) = file.line_col(uses.span.offset);
        self.imported_by
            .entry(sub_file.path.clone())
            .or_insert_with(|| (file.path.clone(), format!("{}:{line}:{col}", file.display_path())));
        let sub_raw = match spec::parse(&sub_file) {
            Ok(r) => r,
            Err(d) => {
                for x in d.0 {
                    self.push(x);
                }
                return;
            }
        };
        let mut bindings = IndexMap::new();
        for (k, v) in &step.with {
            if let Some(e) = self.value_expr(file, &format!("steps.{}.with.{}", name.value, k.value), v) {
                bindings.insert(k.value.clone(), e);
            }
        }
        self.import_stack.push((canon, shown));
        let prefix = format!("{}{}/", self.wf.namespaces[ns].prefix, name.value);
        // Parameters and inputs of a sub-workflow must have a default or be set by the
        // caller's `with:`; reported at the call, where the fix goes.
        let params_unset = sub_raw.params.iter().filter(|(k, p)| {
            p.default.is_none()
                && !step.with.contains_key(k.value.as_str())
                && !sub_raw.inputs.contains_key(k.value.as_str())
        });
        let inputs_unset =
            sub_raw.inputs.iter().filter(|(k, i)| i.default.is_none() && !step.with.contains_key(k.value.as_str()));
        let unset: Vec<(&str, String, String)> = params_unset
            .map(|(k, _)| {
                ("parameter", k.value.clone(), format!("set it in the call: `with: {{ {}: VALUE }}`", k.value))
            })
            .chain(inputs_unset.map(|(k, _)| {
                let help =
                    format!("bind it in the call: `with: {{ {}: \"${{{{ steps.STEP.out.NAME }}}}\" }}`", k.value);
                ("input", k.value.clone(), help)
            }))
            .collect();
        for (what, k, help) in unset {
            self.push(
                Diag::new(
                    DiagKind::Param,
                    file,
                    uses.span,
                    format!("steps.{}.with", name.value),
                    format!("sub-workflow `{}` needs {what} `{k}`, which has no default", uses.value),
                )
                .with_help(help),
            );
        }
        let child = self.add_namespace(Some(ns), prefix, sub_file, sub_raw, bindings);
        self.import_stack.pop();
        self.type_literal_bindings(file, &name.value, child, &step.with);
        self.wf.namespaces[ns].names.insert(name.value.clone(), LocalName::Call(child));
    }

    /// `with:` values written as literals (no `${{ }}`) are checked and converted like `-p`
    /// values: to the parameter's type, within its bounds and values, relative paths (of
    /// `path` parameters and inputs) resolved against the calling file's directory.
    fn type_literal_bindings(
        &mut self,
        file: &SourceFile,
        call: &str,
        child: NsIdx,
        with: &crate::spec::raw::SpMap<serde_json::Value>,
    ) {
        let base = file.abs_dir();
        for (k, v) in with {
            let literal = match &v.value {
                serde_json::Value::String(text) => !text.contains("${{"),
                serde_json::Value::Array(items) => !items.iter().any(|i| i.as_str().is_some_and(|t| t.contains("${{"))),
                _ => true,
            };
            if !literal {
                continue;
            }
            let n = &self.wf.namespaces[child];
            let typed = if let Some(def) = n.params.get(&k.value) {
                check_param_value(def, &v.value, &base)
            } else if n.inputs.contains_key(&k.value) {
                match &v.value {
                    serde_json::Value::String(p) if !p.is_empty() => {
                        Ok(crate::expr::Value::Path(base.join(p).display().to_string()))
                    }
                    other => Err(ParamError::NotAPath(other.to_string())),
                }
            } else {
                continue; // unknown names are reported with the namespace
            };
            match typed {
                Ok(value) => {
                    self.wf.namespaces[child].bindings.insert(k.value.clone(), ValueExpr::Lit(value, v.span));
                }
                Err(msg) => self.push(Diag::new(
                    DiagKind::Type,
                    file,
                    v.span,
                    format!("steps.{call}.with.{}", k.value),
                    format!("`{}`: {msg}", k.value),
                )),
            }
        }
    }

    fn param_def(
        &mut self,
        file: &SourceFile,
        name: &Sp<String>,
        p: &Sp<crate::spec::raw::RawParam>,
    ) -> Option<ParamDef> {
        self.check_name(file, name, "params");
        let field = format!("params.{}", name.value);
        let ty = p.ty.value;
        let items = p.items.as_ref().map(|i| i.value).unwrap_or(ParamType::String);
        if p.items.is_some() && ty != ParamType::List {
            self.push(Diag::new(
                DiagKind::InvalidValue,
                file,
                p.items.as_ref().map_or(p.span, |i| i.span),
                format!("{field}.items"),
                "`items` only applies to `type: list`",
            ));
        }
        if items == ParamType::List {
            self.push(Diag::new(
                DiagKind::InvalidValue,
                file,
                p.span,
                format!("{field}.items"),
                "lists of lists are not supported",
            ));
        }
        let values: Vec<String> =
            p.values.as_ref().map(|v| v.value.iter().map(|s| s.value.clone()).collect()).unwrap_or_default();
        if ty == ParamType::Enum && values.is_empty() {
            self.push(Diag::new(
                DiagKind::MissingKey,
                file,
                p.ty.span,
                format!("{field}.values"),
                "an `enum` parameter needs `values: [...]`",
            ));
        }
        let mut def = ParamDef {
            ty,
            items,
            default: None,
            min: p.min.as_ref().map(|m| m.value),
            max: p.max.as_ref().map(|m| m.value),
            values,
            span: name.span,
        };
        if let (Some(lo), Some(hi)) = (def.min, def.max)
            && lo > hi
        {
            self.push(Diag::new(
                DiagKind::InvalidValue,
                file,
                p.min.as_ref().map_or(p.span, |m| m.span),
                format!("{field}.min"),
                format!("`min` ({lo}) is larger than `max` ({hi})"),
            ));
        }
        if let Some(d) = &p.default {
            match check_param_value(&def, &d.value, &file.abs_dir()) {
                Ok(v) => def.default = Some(v),
                Err(e) => self.push(Diag::new(DiagKind::Type, file, d.span, format!("{field}.default"), e.to_string())),
            }
        }
        Some(def)
    }

    fn resolve_root_params(&mut self, overrides: &Overrides) {
        let file = self.file(0);
        let root = &self.wf.namespaces[0];
        let mut values = IndexMap::new();
        let mut diags = vec![];
        for (name, raw) in &overrides.params {
            match root.params.get(name) {
                None => {
                    let mut d = Diag::detached(
                        DiagKind::Param,
                        format!("-p {name}"),
                        format!("workflow `{}` has no parameter `{name}`", self.wf.name),
                    );
                    d = d.with_help(did_you_mean(name, root.params.keys().map(String::as_str)).unwrap_or_else(|| {
                        format!(
                            "parameters: {}",
                            root.params.keys().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(", ")
                        )
                    }));
                    diags.push(d);
                }
                Some(def) => match parse_override(def, raw)
                    .and_then(|j| check_param_value(def, &j, &crate::spec::span::absolute(Path::new("."))))
                {
                    Ok(v) => {
                        values.insert(name.clone(), v);
                    }
                    Err(e) => diags.push(Diag::detached(DiagKind::Param, format!("-p {name}"), e.to_string())),
                },
            }
        }
        for (name, def) in &root.params {
            // A parameter given with a bad value was reported above; it is not also missing.
            if values.contains_key(name) || overrides.params.iter().any(|(k, _)| k == name) {
                continue;
            }
            match &def.default {
                Some(v) => {
                    values.insert(name.clone(), v.clone());
                }
                None => diags.push(
                    Diag::new(
                        DiagKind::Param,
                        &file,
                        def.span,
                        format!("params.{name}"),
                        format!("parameter `{name}` has no default and was not given"),
                    )
                    .with_help(format!("pass it with `-p {name}=VALUE`")),
                ),
            }
        }
        let mut inputs = IndexMap::new();
        for (name, path) in &overrides.inputs {
            if root.inputs.contains_key(name) {
                inputs.insert(name.clone(), crate::spec::span::absolute(path));
            } else {
                diags.push(Diag::detached(
                    DiagKind::Param,
                    format!("-i {name}"),
                    format!("workflow `{}` has no input `{name}`", self.wf.name),
                ));
            }
        }
        for (name, def) in &root.inputs {
            if inputs.contains_key(name) {
                continue;
            }
            match &def.default {
                Some(p) => {
                    inputs.insert(name.clone(), p.clone());
                }
                None => diags.push(
                    Diag::new(
                        DiagKind::Param,
                        &file,
                        def.span,
                        format!("inputs.{name}"),
                        format!("input `{name}` has no default and was not given"),
                    )
                    .with_help(format!("pass it with `-i {name}=PATH`")),
                ),
            }
        }
        self.wf.param_values = values;
        self.wf.input_values = inputs;
        for d in diags {
            self.push(d);
        }
    }
}
