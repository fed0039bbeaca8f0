//! A step's `retry:` policy and per-attempt `timeout:`.

use std::time::Duration;

use super::super::Validator;
use crate::diag::{Diag, DiagKind};
use crate::model::RetryPolicy;
use crate::spec::raw::RawStep;
use crate::spec::span::{SourceFile, Sp};

impl Validator {
    /// `retry:`: count (at most 100), backoff, factor (1 to 10) and cap.
    pub(super) fn step_retry(&mut self, file: &SourceFile, name: &Sp<String>, raw: &RawStep) -> RetryPolicy {
        let f = |k: &str| format!("steps.{}.{k}", name.value);
        match &raw.retry {
            None => RetryPolicy::default(),
            Some(r) => {
                let mut p = RetryPolicy { count: r.count.value, ..RetryPolicy::default() };
                if r.count.value > 100 {
                    self.push(Diag::new(
                        DiagKind::InvalidValue,
                        file,
                        r.count.span,
                        f("retry.count"),
                        "at most 100 retries",
                    ));
                }
                if let Some(b) = &r.backoff
                    && let Some(d) = self.duration(file, &f("retry.backoff"), b)
                {
                    p.backoff = d;
                }
                if let Some(m) = &r.max_backoff
                    && let Some(d) = self.duration(file, &f("retry.max_backoff"), m)
                {
                    p.max_backoff = d;
                }
                if let Some(fa) = &r.factor {
                    if !(1.0..=10.0).contains(&fa.value) {
                        self.push(Diag::new(
                            DiagKind::InvalidValue,
                            file,
                            fa.span,
                            f("retry.factor"),
                            "`factor` must be between 1 and 10",
                        ));
                    }
                    p.factor = fa.value;
                }
                p
            }
        }
    }

    /// `timeout:` of one attempt.
    pub(super) fn step_timeout(&mut self, file: &SourceFile, name: &Sp<String>, raw: &RawStep) -> Option<Duration> {
        let f = |k: &str| format!("steps.{}.{k}", name.value);
        raw.timeout.as_ref().and_then(|t| self.duration(file, &f("timeout"), t))
    }
}
