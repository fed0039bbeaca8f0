//! `assert:`: conditions on a workflow's parameters and inputs, evaluated once their values
//! are known (defaults, `-p`, a caller's `with:`), so a bad combination is refused at
//! validation with the place of the condition, before anything runs.

use super::Validator;
use crate::diag::{Diag, DiagKind};
use crate::expr::Value;
use crate::model::{Ctx, StaticScope};

/// Heads of the references an assertion may use: what is known before the run.
const KNOWN_BEFORE_RUN: [&str; 3] = ["params", "inputs", "workflow"];

impl Validator {
    /// Evaluates every namespace's `assert:` entries (types were checked with the other
    /// expressions); a false one is reported with the values it read.
    pub(super) fn check_asserts(&mut self) {
        for ns in 0..self.wf.namespaces.len() {
            let file = self.file(ns);
            for (k, a) in self.wf.namespaces[ns].asserts.clone().into_iter().enumerate() {
                let field = format!("assert[{k}]");
                let refs = a.that.tpl.references();
                if let Some(r) = refs.iter().find(|r| !KNOWN_BEFORE_RUN.contains(&r.path[0].as_str())) {
                    self.push(
                        Diag::new(
                            DiagKind::Expression,
                            &file,
                            a.that.span.sub(r.span.start, r.span.end),
                            field,
                            format!("`{}` is not known before the run", r.path.join(".")),
                        )
                        .with_help("an assertion may read `params.*`, `inputs.*` and `workflow.dir`"),
                    );
                    continue;
                }
                let scope = StaticScope { wf: &self.wf, ns, ctx: Ctx::Namespace };
                let holds = match a.that.tpl.eval(&scope) {
                    Ok(Value::Bool(b)) => b,
                    // Wrong types were reported by the type check.
                    Ok(_) => continue,
                    Err(e) => {
                        self.push(Diag::new(DiagKind::Expression, &file, a.that.span, field, e.message));
                        continue;
                    }
                };
                if holds {
                    continue;
                }
                // The values it read, once each, in order: `params.survivors = 5, params.trials = 3`.
                let mut seen: Vec<String> = vec![];
                for r in &refs {
                    let name = r.path.join(".");
                    if seen.iter().any(|s| s.starts_with(&format!("{name} = "))) {
                        continue;
                    }
                    let parts: Vec<&str> = r.path.iter().map(String::as_str).collect();
                    if let Ok(v) = crate::expr::Scope::lookup(&scope, &parts) {
                        seen.push(format!("{name} = {}", shown(&v)));
                    }
                }
                let call = self.wf.namespaces[ns].call_name().to_string();
                let mut help = vec![];
                if !seen.is_empty() {
                    help.push(format!("with {}", seen.join(", ")));
                }
                if !call.is_empty() {
                    help.push(format!("values given by the call `{call}`"));
                }
                let message = match &a.message {
                    Some(m) => format!("assertion failed: {m}"),
                    None => format!("assertion failed: `{}`", a.that.src.trim()),
                };
                let mut d = Diag::new(DiagKind::Param, &file, a.that.span, field, message);
                if !help.is_empty() {
                    d = d.with_help(help.join("; "));
                }
                self.push(d);
            }
        }
    }
}

/// A value as it is written: strings quoted.
fn shown(v: &Value) -> String {
    match v {
        Value::Str(s) | Value::Path(s) => format!("{s:?}"),
        other => other.to_string(),
    }
}
