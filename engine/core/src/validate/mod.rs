//! Phase 2, validate: raw shape → [`Workflow`] model, collecting every problem.
//!
//! Checks, each reported at `file:line:col`: names, duplicate and dangling references (with
//! "did you mean"), expression syntax and types, parameter defaults against their types
//! and bounds, `-p` overrides, scatter list lengths, output paths that would escape the
//! step directory, imports (missing files, import cycles), dependency cycles between
//! steps (with the cycle's path), and cycling (`cycle:`, `once:`, `wait:`, `prev.*` read
//! in the first cycle).

mod asserts;
mod call;
pub(crate) mod checks;
mod cycle;
pub mod files;
mod first_cycle;
mod namespace;
mod params;
mod step;
mod types;

use std::collections::{HashMap, HashSet};
use std::path::{Component, Path, PathBuf};

use indexmap::IndexMap;

use crate::diag::{Diag, DiagKind, Diagnostics};
use crate::expr::{self, Value};
/// The model validation builds.
pub use crate::model::Workflow;
use crate::model::*;
use crate::spec::raw::RawWorkflow;
use crate::spec::span::{SourceFile, Sp, Span};
use crate::spec::{self};
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
        cycle_has_end: None,
    };
    if let Some(c) = &raw.cycle {
        v.cycle_has_end = Some(c.end.is_some() || c.cycles.is_some());
        v.wf.cycle = Some(v.cycle_spec(&file, c));
    }
    v.import_stack.push((canonical(&file.path), file.display_path()));
    v.add_namespace(None, String::new(), file, raw, IndexMap::new());
    if v.diags.is_empty() {
        v.resolve_root_params(overrides);
    }
    // Expressions are checked even when some steps are broken (references to those are
    // skipped), so one run reports every problem.
    v.check_references();
    if v.diags.is_empty() {
        v.check_asserts();
    }
    if v.diags.is_empty() {
        v.resolve_counts();
    }
    if v.diags.is_empty() {
        v.compute_deps_and_cycles();
    }
    // Like expressions, checked even when other things are wrong (it reads only what
    // resolves), so one run reports every problem.
    if v.wf.cycle.is_some() {
        v.check_cycling();
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
        cycle: None,
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

/// The span of `key` in `key: VALUE` when the value (a mapping, at `value`) starts on a
/// later line or after spaces: spans of mappings start at their first entry, but a message
/// about the whole block reads better at its key. `value` itself when the key is not found.
fn key_span(file: &SourceFile, value: Span, key: &str) -> Span {
    let before = file.text.get(..value.offset).unwrap_or("");
    let gap = before.trim_end_matches([' ', '\t', '\n', '\r']);
    match gap.strip_suffix(':').and_then(|g| g.strip_suffix(key)) {
        Some(rest) if rest.is_empty() || rest.ends_with([' ', '\n', '{', ',']) => Span::new(rest.len(), key.len()),
        _ => value,
    }
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
    /// `Some` when the root workflow cycles: whether its `cycle:` has an end (`end` or
    /// `cycles`, even if invalid, so one mistake is reported once).
    cycle_has_end: Option<bool>,
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
}
