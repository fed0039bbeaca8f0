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
