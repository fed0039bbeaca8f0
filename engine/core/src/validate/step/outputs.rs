//! A step's `out:` and `values:`: fixed relative paths inside the step directory, outside
//! `.twinflow/`, and each name used once.

use std::path::{Component, Path};

use indexmap::IndexMap;

use super::super::{Validator, path_stays_inside};
use crate::diag::{Diag, DiagKind};
use crate::spec::raw::RawStep;
use crate::spec::span::{SourceFile, Sp};

/// Output name → relative path.
type Paths = IndexMap<String, String>;

impl Validator {
    /// `out:` (files) and `values:` (files whose content is read back).
    pub(super) fn step_outputs(&mut self, file: &SourceFile, name: &Sp<String>, raw: &RawStep) -> (Paths, Paths) {
        let f = |k: &str| format!("steps.{}.{k}", name.value);
        let mut outputs = IndexMap::new();
        let mut values = IndexMap::new();
        for (section, map, target) in [("out", &raw.out, &mut outputs), ("values", &raw.values, &mut values)] {
            for (k, v) in map {
                self.check_name(file, k, &f(section));
                if !path_stays_inside(&v.value) {
                    self.push(
                        Diag::new(DiagKind::PathEscape, file, v.span, format!("{}.{}", f(section), k.value), format!("output path `{}` escapes the step's run directory", v.value))
                            .with_help("outputs are relative paths inside the step directory, without leading `/` or `..` that climbs out"),
                    );
                } else if Path::new(&v.value).components().find(|c| !matches!(c, Component::CurDir))
                    == Some(Component::Normal(".twinflow".as_ref()))
                {
                    // The engine's own files (stdout, manifest) would count as the output.
                    self.push(Diag::new(
                        DiagKind::PathEscape,
                        file,
                        v.span,
                        format!("{}.{}", f(section), k.value),
                        format!("output path `{}` is inside `.twinflow/`, which holds twinflow's own files", v.value),
                    ));
                } else if v.value.contains("${{") {
                    self.push(Diag::new(
                        DiagKind::InvalidValue,
                        file,
                        v.span,
                        format!("{}.{}", f(section), k.value),
                        "output paths are fixed names; expressions are not allowed here",
                    ));
                }
                target.insert(k.value.clone(), v.value.clone());
            }
        }
        for k in values.keys() {
            if outputs.contains_key(k) {
                let span = raw.values.get_key_value(k.as_str()).map_or(name.span, |(kk, _)| kk.span);
                self.push(Diag::new(
                    DiagKind::DuplicateName,
                    file,
                    span,
                    format!("{}.{k}", f("values")),
                    format!("`{k}` is both an output and a value"),
                ));
            }
        }
        (outputs, values)
    }
}
