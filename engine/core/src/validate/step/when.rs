//! A step's `when:`: a boolean expression, or a literal `true`/`false`.

use super::super::Validator;
use crate::diag::{Diag, DiagKind};
use crate::expr;
use crate::model::Tpl;
use crate::spec::raw::{RawStep, Scalar};
use crate::spec::span::{SourceFile, Sp};

impl Validator {
    /// `when:`: the condition under which the step runs.
    pub(super) fn step_when(&mut self, file: &SourceFile, name: &Sp<String>, raw: &RawStep) -> Option<Tpl> {
        let f = |k: &str| format!("steps.{}.{k}", name.value);
        match &raw.when {
            None => None,
            Some(w) => match &w.value {
                // YAML 1.1 booleans are strings in YAML 1.2 (which twinflow reads): the step
                // would be refused later as "expected `bool`, found `str`", which hides why.
                Scalar::Str(s) if is_yaml11_bool(s) => {
                    let b = matches!(s.to_ascii_lowercase().as_str(), "yes" | "y" | "on");
                    self.push(
                        Diag::new(
                            DiagKind::Type,
                            file,
                            w.span,
                            f("when"),
                            format!("`when: {s}` is the string `{s}`, not a boolean (YAML 1.2)"),
                        )
                        .with_help(format!("write `when: {b}`, or an expression (`${{{{ params.mode == 'full' }}}}`)")),
                    );
                    None
                }
                Scalar::Str(s) => self.tpl(file, &f("when"), s, w.span),
                Scalar::Bool(b) => Some(Tpl {
                    src: b.to_string(),
                    tpl: expr::parse_template(&format!("${{{{ {b} }}}}")).ok()?,
                    span: w.span,
                }),
                _ => {
                    self.push(Diag::new(
                        DiagKind::Type,
                        file,
                        w.span,
                        f("when"),
                        "`when` must be a boolean expression (`${{ params.mode == 'full' }}`)",
                    ));
                    None
                }
            },
        }
    }
}

/// `yes`, `no`, `on`, `off`, `y`, `n` in any case: booleans in YAML 1.1, strings in 1.2.
fn is_yaml11_bool(s: &str) -> bool {
    matches!(s.to_ascii_lowercase().as_str(), "yes" | "no" | "on" | "off" | "y" | "n")
}
