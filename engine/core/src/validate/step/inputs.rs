//! A step's `in:`: named values, usually references to upstream outputs.

use indexmap::IndexMap;

use super::super::Validator;
use crate::model::ValueExpr;
use crate::spec::raw::RawStep;
use crate::spec::span::{SourceFile, Sp};

impl Validator {
    /// `in:`: named inputs.
    pub(super) fn step_inputs(
        &mut self,
        file: &SourceFile,
        name: &Sp<String>,
        raw: &RawStep,
    ) -> IndexMap<String, ValueExpr> {
        let f = |k: &str| format!("steps.{}.{k}", name.value);
        let mut inputs = IndexMap::new();
        for (k, v) in &raw.inputs {
            self.check_name(file, k, &f("in"));
            if let Some(e) = self.value_expr(file, &format!("{}.{}", f("in"), k.value), v) {
                inputs.insert(k.value.clone(), e);
            }
        }
        inputs
    }
}
