//! A step's `resources:`: counts (literal, or expressions over parameters evaluated once
//! those are known), memory and walltime.

use super::super::Validator;
use crate::diag::{Diag, DiagKind};
use crate::model::{Resources, ResourcesGiven};
use crate::spec::raw::{RawResources, RawStep, Scalar};
use crate::spec::span::{SourceFile, Sp};
use crate::units;

impl Validator {
    /// `resources:`, or the defaults (one rank, one thread) when the step has none.
    pub(super) fn step_resources(&mut self, file: &SourceFile, name: &Sp<String>, raw: &RawStep) -> Resources {
        let field = format!("steps.{}.resources", name.value);
        raw.resources.as_ref().map(|r| self.resources(file, &field, r)).unwrap_or_default()
    }

    fn resources(&mut self, file: &SourceFile, field: &str, r: &Sp<RawResources>) -> Resources {
        let mut out = Resources {
            ranks: self.count(file, &format!("{field}.ranks"), &r.ranks, 1, 1),
            threads: self.count(file, &format!("{field}.threads"), &r.threads, 1, 1),
            nodes: self.count(file, &format!("{field}.nodes"), &r.nodes, 1, 1),
            gpus: self.count(file, &format!("{field}.gpus"), &r.gpus, 0, 0),
            given: ResourcesGiven { threads: r.threads.is_some(), memory: r.memory.is_some(), gpus: r.gpus.is_some() },
            ..Resources::default()
        };
        if let Some(m) = &r.memory {
            match units::parse_bytes(&m.value.to_string()) {
                Ok(b) => out.memory = b,
                Err(msg) => self.push(Diag::new(
                    DiagKind::InvalidValue,
                    file,
                    m.span,
                    format!("{field}.memory"),
                    msg.to_string(),
                )),
            }
        }
        if let Some(w) = &r.walltime {
            out.walltime = self.duration(file, &format!("{field}.walltime"), w);
        }
        out
    }

    fn count(&mut self, file: &SourceFile, field: &str, v: &Option<Sp<Scalar>>, default: u32, min: u32) -> u32 {
        let Some(v) = v else { return default };
        if let Scalar::Str(text) = &v.value
            && text.contains("${{")
        {
            // Known once parameters are: see `resolve_counts`.
            if let Some(t) = self.tpl(file, field, text, v.span) {
                self.counts_of_step.push((field.to_string(), t, min));
            }
            return default;
        }
        match &v.value {
            Scalar::Int(i) if *i >= i64::from(min) && *i <= 1_000_000 => *i as u32,
            Scalar::Int(i) => {
                self.push(Diag::new(
                    DiagKind::InvalidValue,
                    file,
                    v.span,
                    field,
                    format!("`{i}` is out of range (at least {min})"),
                ));
                default
            }
            other => {
                self.push(Diag::new(
                    DiagKind::Type,
                    file,
                    v.span,
                    field,
                    format!("expected an integer, found `{other}`"),
                ));
                default
            }
        }
    }
}
