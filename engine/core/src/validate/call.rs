//! A step with `uses:`: the imported file loaded as a namespace of its own (import cycles
//! and depth checked), and the caller's `with:` values bound to its parameters and inputs.

use indexmap::IndexMap;

use super::*;
use crate::diag::{Diag, DiagKind};
use crate::spec::raw::{RawStep, RawWorkflow};
use crate::spec::span::{SourceFile, Sp};
use crate::suggest::did_you_mean;

impl Validator {
    pub(super) fn add_call(
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
            (step.once.is_some(), "once"),
            (step.wait.is_some(), "wait"),
            (step.service.is_some(), "service"),
            (step.report.is_some(), "report"),
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
}
