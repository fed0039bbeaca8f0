//! A step's `env:`: names a process can take, `TWINFLOW_*` kept for the engine.

use indexmap::IndexMap;

use super::super::Validator;
use crate::diag::{Diag, DiagKind};
use crate::model::Tpl;
use crate::spec::raw::RawStep;
use crate::spec::span::{SourceFile, Sp};

impl Validator {
    /// `env:`: extra environment of the step.
    pub(super) fn step_env(&mut self, file: &SourceFile, name: &Sp<String>, raw: &RawStep) -> IndexMap<String, Tpl> {
        let f = |k: &str| format!("steps.{}.{k}", name.value);
        let mut env = IndexMap::new();
        for (k, v) in &raw.env {
            if k.value.is_empty() || k.value.contains('=') || k.value.contains('\0') || k.value.starts_with("TWINFLOW_")
            {
                self.push(
                    Diag::new(
                        DiagKind::InvalidName,
                        file,
                        k.span,
                        format!("{}.{}", f("env"), k.value),
                        if k.value.starts_with("TWINFLOW_") {
                            format!("environment variable `{}` is reserved (`TWINFLOW_*` is set by twinflow)", k.value)
                        } else {
                            format!("invalid environment variable name `{}`", k.value)
                        },
                    )
                    .with_help("names are non-empty, without `=`, and do not start with `TWINFLOW_`"),
                );
            }
            if let Some(t) = self.tpl(file, &format!("{}.{}", f("env"), k.value), &v.value, v.span) {
                env.insert(k.value.clone(), t);
            }
        }
        env
    }
}
