//! One workflow file instantiated as a namespace: its name, parameters, inputs, steps,
//! imports and outputs.

use indexmap::IndexMap;

use super::*;
use crate::diag::{Diag, DiagKind};
use crate::spec::raw::RawWorkflow;
use crate::spec::span::{SourceFile, Sp, Span};
use crate::suggest::did_you_mean;

impl Validator {
    pub(super) fn add_namespace(
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
        // The cycle of a run is one clock for every step: only the root may set it.
        if let (Some(_), Some(c)) = (parent, &raw.cycle) {
            self.push(
                Diag::new(
                    DiagKind::InvalidValue,
                    &file,
                    key_span(&file, c.span, "cycle"),
                    "cycle",
                    "`cycle:` in an imported sub-workflow: only the workflow that is run may cycle",
                )
                .with_help(
                    "move `cycle:` to the root workflow; the sub-workflow's steps then run in each of its cycles",
                ),
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
            asserts: vec![],
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
        for (k, a) in raw.asserts.iter().enumerate() {
            let field = format!("assert[{k}]");
            let (text, span, message) = match &a.value {
                crate::spec::raw::RawAssert::Expr(t) => (t.as_str(), a.span, None),
                crate::spec::raw::RawAssert::Spec(s) => (s.that.value.as_str(), s.that.span, s.message.clone()),
            };
            if !text.contains("${{") {
                self.push(
                    Diag::new(DiagKind::Type, &file, span, field, format!("`{text}` is not an expression"))
                        .with_help(format!("write the condition as `${{{{ {text} }}}}`")),
                );
                continue;
            }
            if let Some(t) = self.tpl(&file, &field, text, span) {
                self.wf.namespaces[ns].asserts.push(Assert { that: t, message });
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

    pub(super) fn check_name(&mut self, file: &SourceFile, name: &Sp<String>, section: &str) {
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
}
