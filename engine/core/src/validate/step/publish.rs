//! A step's `publish:`: copies of its outputs outside the run directory, one path per
//! scatter member.

use indexmap::IndexMap;

use super::super::Validator;
use crate::diag::{Diag, DiagKind};
use crate::model::Tpl;
use crate::spec::raw::RawStep;
use crate::spec::span::{SourceFile, Sp};
use crate::suggest::did_you_mean;

impl Validator {
    /// `publish:`: output name → target path template.
    pub(super) fn step_publish(
        &mut self,
        file: &SourceFile,
        name: &Sp<String>,
        raw: &RawStep,
        outputs: &IndexMap<String, String>,
        values: &IndexMap<String, String>,
    ) -> IndexMap<String, Tpl> {
        let f = |k: &str| format!("steps.{}.{k}", name.value);
        let mut publish = IndexMap::new();
        for (k, v) in &raw.publish {
            let field = format!("{}.{}", f("publish"), k.value);
            if !outputs.contains_key(&k.value) && !values.contains_key(&k.value) {
                let mut d = Diag::new(
                    DiagKind::UnknownReference,
                    file,
                    k.span,
                    field.clone(),
                    format!("`{}` is not an output of step `{}`", k.value, name.value),
                );
                let known = outputs.keys().chain(values.keys()).map(String::as_str);
                if let Some(h) = did_you_mean(&k.value, known) {
                    d = d.with_help(h);
                }
                self.push(d);
                continue;
            }
            if v.value.trim().is_empty() {
                self.push(Diag::new(DiagKind::InvalidValue, file, v.span, field, "the publish path is empty"));
                continue;
            }
            let Some(t) = self.tpl(file, &field, &v.value, v.span) else { continue };
            // Members of a scattered step would overwrite each other's copies.
            let per_member = t.tpl.references().iter().any(|r| {
                matches!(r.path.first().map(String::as_str), Some("scatter"))
                    || r.path.iter().map(String::as_str).eq(["member", "index"])
            });
            if raw.scatter.is_some() && !per_member {
                self.push(
                    Diag::new(
                        DiagKind::InvalidValue,
                        file,
                        v.span,
                        field,
                        "every member of this scattered step would publish to the same path",
                    )
                    .with_help("make the path depend on the member: `.../out-${{ member.index }}.nc`"),
                );
                continue;
            }
            publish.insert(k.value.clone(), t);
        }
        publish
    }
}
