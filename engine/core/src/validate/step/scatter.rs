//! A step's `scatter:`: the variables and the lists they run over, and how lists combine.
//! List lengths are known, and checked, when the workflow is planned.

use indexmap::IndexMap;

use super::super::Validator;
use crate::diag::{Diag, DiagKind};
use crate::model::Scatter;
use crate::spec::raw::{RawStep, ScatterMethod};
use crate::spec::span::{SourceFile, Sp};

impl Validator {
    /// `scatter:`: variables in order, with the expression giving each list.
    pub(super) fn step_scatter(&mut self, file: &SourceFile, name: &Sp<String>, raw: &RawStep) -> Option<Scatter> {
        let f = |k: &str| format!("steps.{}.{k}", name.value);
        match &raw.scatter {
            None => None,
            Some(sc) => {
                let mut vars = IndexMap::new();
                if sc.over.is_empty() {
                    self.push(Diag::new(
                        DiagKind::MissingKey,
                        file,
                        sc.span,
                        f("scatter.over"),
                        "`scatter.over` needs at least one variable",
                    ));
                }
                for (k, v) in &sc.over {
                    self.check_name(file, k, &f("scatter.over"));
                    if let Some(e) = self.value_expr(file, &format!("{}.{}", f("scatter.over"), k.value), v) {
                        vars.insert(k.value.clone(), e);
                    }
                }
                Some(Scatter {
                    vars,
                    method: sc.method.as_ref().map(|m| m.value).unwrap_or(ScatterMethod::Dotproduct),
                    allow_empty: sc.allow_empty.as_ref().is_some_and(|a| a.value),
                    span: sc.span,
                })
            }
        }
    }
}
