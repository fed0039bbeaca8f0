//! A step's `once:` and `wait:` (cycling workflows only): `once: last` needs an end;
//! triggers need at least one of `clock`, `files`, `command`, `signal`, and durations
//! that make sense (`timeout` and `poll` longer than zero).

use std::time::Duration;

use super::super::{Validator, key_span, valid_name};
use crate::diag::{Diag, DiagKind};
use crate::model::{OnTimeout, Once, Tpl, Wait};
use crate::spec::raw::{RawOnTimeout, RawOnce, RawStep, RawWait, Scalar};
use crate::spec::span::{SourceFile, Sp, Span};
use crate::units;

impl Validator {
    /// Reports `key` used in a workflow that does not cycle; `true` when it cycles.
    fn needs_cycling(&mut self, file: &SourceFile, name: &Sp<String>, key: &str, span: Span) -> bool {
        if self.cycle_has_end.is_some() {
            return true;
        }
        self.push(
            Diag::new(
                DiagKind::InvalidValue,
                file,
                span,
                format!("steps.{}.{key}", name.value),
                format!("`{key}` is only meaningful in a cycling workflow"),
            )
            .with_help("add a `cycle:` block to the workflow that is run (`cycle: { every: 1, start: 0, cycles: 5 }`)"),
        );
        false
    }

    /// `once: first|last`.
    pub(super) fn step_once(&mut self, file: &SourceFile, name: &Sp<String>, raw: &RawStep) -> Option<Once> {
        let o = raw.once.as_ref()?;
        if !self.needs_cycling(file, name, "once", o.span) {
            return None;
        }
        match o.value {
            RawOnce::First => Some(Once::First),
            RawOnce::Last => {
                if self.cycle_has_end == Some(false) {
                    self.push(
                        Diag::new(
                            DiagKind::InvalidValue,
                            file,
                            o.span,
                            format!("steps.{}.once", name.value),
                            "`once: last` needs cycling that ends, but `cycle:` has no `end` or `cycles`",
                        )
                        .with_help("give `end:` or `cycles:` in `cycle:`"),
                    );
                }
                Some(Once::Last)
            }
        }
    }

    /// `wait:`: the triggers of the step's tasks.
    pub(super) fn step_wait(&mut self, file: &SourceFile, name: &Sp<String>, raw: &RawStep) -> Option<Wait> {
        let w = raw.wait.as_ref()?;
        if !self.needs_cycling(file, name, "wait", key_span(file, w.span, "wait")) {
            return None;
        }
        let f = |k: &str| format!("steps.{}.wait.{k}", name.value);
        let r: &RawWait = &w.value;
        let has_files = r.files.as_ref().is_some_and(|l| !l.is_empty());
        let has_command = r.command.as_ref().is_some_and(|l| !l.is_empty());
        if r.clock.is_none() && !has_files && !has_command && r.signal.is_none() {
            self.push(
                Diag::new(
                    DiagKind::MissingKey,
                    file,
                    key_span(file, w.span, "wait"),
                    f("").trim_end_matches('.'),
                    "`wait` has no trigger",
                )
                .with_help("give at least one of `clock`, `files`, `command` and `signal`"),
            );
        }
        for (given, key) in [(&r.settle, "settle"), (&r.min_size, "min_size")] {
            if let Some(v) = given
                && !has_files
            {
                self.push(
                    Diag::new(DiagKind::InvalidValue, file, v.span, f(key), format!("`{key}` applies to `files` only"))
                        .with_help("add `files:`, or remove it"),
                );
            }
        }
        if let Some(p) = &r.poll
            && !has_files
            && !has_command
        {
            self.push(
                Diag::new(
                    DiagKind::InvalidValue,
                    file,
                    p.span,
                    f("poll"),
                    "`poll` applies to `files` and `command` only",
                )
                .with_help("a clock or a signal needs no polling; remove `poll`"),
            );
        }
        let clock = r.clock.as_ref().and_then(|c| match units::parse_signed_duration(&c.value.to_string()) {
            Ok(d) => Some(d),
            Err(e) => {
                self.push(
                    Diag::new(DiagKind::InvalidValue, file, c.span, f("clock"), e.to_string())
                        .with_help("write an offset from the cycle point: `+5m`, `-1h`, `0s`"),
                );
                None
            }
        });
        let files = self.tpl_list(file, &f("files"), &r.files);
        if let Some(l) = &r.files
            && l.is_empty()
        {
            self.push(Diag::new(DiagKind::InvalidValue, file, l.span, f("files"), "`files` is empty"));
        }
        let command = self.tpl_list(file, &f("command"), &r.command);
        if let Some(l) = &r.command
            && l.is_empty()
        {
            self.push(
                Diag::new(DiagKind::InvalidValue, file, l.span, f("command"), "`command` is empty")
                    .with_help("write the program and its arguments: `command: [check-obs, --date, ...]`"),
            );
        }
        let settle = r.settle.as_ref().and_then(|s| self.duration(file, &f("settle"), s)).unwrap_or_default();
        let min_size = r.min_size.as_ref().map_or(0, |m| match units::parse_bytes(&m.value.to_string()) {
            Ok(b) => b,
            Err(e) => {
                self.push(Diag::new(DiagKind::InvalidValue, file, m.span, f("min_size"), e.to_string()));
                0
            }
        });
        let poll = r.poll.as_ref().and_then(|p| self.positive_duration(file, &f("poll"), "poll", p));
        let timeout = r.timeout.as_ref().and_then(|t| self.positive_duration(file, &f("timeout"), "timeout", t));
        let signal = r.signal.as_ref().map(|s| {
            if !valid_name(&s.value) {
                self.push(
                    Diag::new(
                        DiagKind::InvalidName,
                        file,
                        s.span,
                        f("signal"),
                        format!("invalid signal name `{}`", s.value),
                    )
                    .with_help("names start with a letter and contain only letters, digits, `-` and `_` (at most 64)"),
                );
            }
            s.value.clone()
        });
        if let Some(o) = &r.on_timeout
            && r.timeout.is_none()
        {
            self.push(
                Diag::new(DiagKind::InvalidValue, file, o.span, f("on_timeout"), "`on_timeout` without a `timeout`")
                    .with_help("give `timeout:` (`2h`), or remove `on_timeout`"),
            );
        }
        let on_timeout = match r.on_timeout.as_ref().map(|o| o.value) {
            Some(RawOnTimeout::Skip) => OnTimeout::Skip,
            Some(RawOnTimeout::Fail) | None => OnTimeout::Fail,
        };
        Some(Wait {
            clock,
            files,
            settle,
            min_size,
            command,
            poll: poll.unwrap_or(Wait::DEFAULT_POLL),
            signal,
            timeout,
            on_timeout,
            span: w.span,
        })
    }

    /// A duration that must be longer than zero (`timeout`, `poll`).
    pub(super) fn positive_duration(
        &mut self,
        file: &SourceFile,
        field: &str,
        key: &str,
        v: &Sp<Scalar>,
    ) -> Option<Duration> {
        let text = v.value.to_string();
        let negative = text.trim_start().starts_with('-');
        match units::parse_duration(&text) {
            Ok(d) if d > Duration::ZERO => Some(d),
            Err(_) if !negative => self.duration(file, field, v),
            _ => {
                self.push(Diag::new(
                    DiagKind::InvalidValue,
                    file,
                    v.span,
                    field,
                    format!("`{key}` must be longer than zero, found `{text}`"),
                ));
                None
            }
        }
    }

    /// A list of templates (`files`, `command`), each element at its own span.
    pub(super) fn tpl_list(&mut self, file: &SourceFile, field: &str, l: &Option<Sp<Vec<Sp<String>>>>) -> Vec<Tpl> {
        let Some(l) = l else { return vec![] };
        l.iter()
            .enumerate()
            .filter_map(|(i, s)| self.tpl_kept(file, &format!("{field}[{i}]"), &s.value, s.span))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::model::{OnTimeout, Once};
    use crate::validate::cycle::tests::{check, problems};

    const HEAD: &str = "name: w\ncycle: { every: 10m, start: 2026-03-01T00:00Z, cycles: 3 }\nsteps:\n";

    #[test]
    fn wait_and_once_land_in_the_model() {
        let wf = check(&format!(
            "{HEAD}  terrain:\n    once: first\n    run: [\"true\"]\n  observe:\n    wait:\n      clock: -5m\n      \
             files: [\"/obs/g-${{{{ format_time(cycle.point, '%Y%m%dT%H%M') }}}}.nc\"]\n      settle: 10s\n      \
             min_size: 1K\n      timeout: 2h\n      on_timeout: skip\n    run: [cat, \"${{{{ join(wait.files, ' ') }}}}\"]\n  \
             report:\n    once: last\n    wait: {{ signal: go, command: [check, \"${{{{ cycle.point }}}}\"], poll: 30s }}\n    \
             run: [echo, \"${{{{ wait.level }}}}\"]\n"
        ))
        .unwrap_or_else(|d| panic!("{d:?}"));
        let s = |n: &str| wf.steps.iter().find(|s| s.name == n).expect("step");
        assert_eq!(s("terrain").once, Some(Once::First));
        assert!(s("terrain").wait.is_none());
        let w = s("observe").wait.as_ref().expect("wait");
        assert_eq!(w.clock, Some(jiff::SignedDuration::from_secs(-300)));
        assert_eq!(w.files.len(), 1);
        assert_eq!((w.settle, w.min_size, w.poll), (Duration::from_secs(10), 1024, Duration::from_secs(1)));
        assert_eq!((w.timeout, w.on_timeout), (Some(Duration::from_secs(7200)), OnTimeout::Skip));
        let r = s("report");
        assert_eq!(r.once, Some(Once::Last));
        let w = r.wait.as_ref().expect("wait");
        assert_eq!((w.signal.as_deref(), w.command.len(), w.poll), (Some("go"), 2, Duration::from_secs(30)));
        assert_eq!((w.timeout, w.on_timeout), (None, OnTimeout::Fail));
    }

    #[test]
    fn bad_triggers_are_located() {
        let step = |body: &str| problems(&format!("{HEAD}  a:\n    run: [\"true\"]\n{body}"));
        assert_eq!(step("    wait: {}\n"), ["6:5 steps.a.wait: `wait` has no trigger"]);
        assert_eq!(
            step("    wait: { clock: 5x }\n"),
            ["6:20 steps.a.wait.clock: invalid duration `5x`: unknown unit `x` (use ms, s, m, h, d)"]
        );
        assert_eq!(
            step("    wait: { signal: go, timeout: 0s }\n"),
            ["6:34 steps.a.wait.timeout: `timeout` must be longer than zero, found `0s`"]
        );
        assert_eq!(
            step("    wait: { files: [x], poll: -1s }\n"),
            ["6:31 steps.a.wait.poll: `poll` must be longer than zero, found `-1s`"]
        );
        assert_eq!(
            step("    wait: { signal: go, settle: 1s }\n"),
            ["6:33 steps.a.wait.settle: `settle` applies to `files` only"]
        );
        assert_eq!(
            step("    wait: { files: [x], min_size: 4Q }\n"),
            ["6:35 steps.a.wait.min_size: invalid size `4Q`: unknown unit `Q` (use K, M, G, T)"]
        );
        assert_eq!(
            step("    wait: { signal: \"no way\" }\n"),
            ["6:21 steps.a.wait.signal: invalid signal name `no way`"]
        );
        assert_eq!(
            step("    wait: { signal: go, on_timeout: skip }\n"),
            ["6:37 steps.a.wait.on_timeout: `on_timeout` without a `timeout`"]
        );
        // `wait:` on a `once:` step is fine.
        check(&format!("{HEAD}  a:\n    once: first\n    wait: {{ clock: +1m }}\n    run: [\"true\"]\n"))
            .expect("valid");
    }

    #[test]
    fn once_and_wait_need_a_cycling_workflow() {
        let p = problems("name: w\nsteps:\n  a:\n    once: first\n    wait: { clock: 0s }\n    run: [\"true\"]\n");
        assert_eq!(
            p,
            [
                "4:11 steps.a.once: `once` is only meaningful in a cycling workflow",
                "5:5 steps.a.wait: `wait` is only meaningful in a cycling workflow"
            ]
        );
        let p = problems("name: w\ncycle: { every: 1, start: 0 }\nsteps:\n  a:\n    once: last\n    run: [\"true\"]\n");
        assert_eq!(
            p,
            ["5:11 steps.a.once: `once: last` needs cycling that ends, but `cycle:` has no `end` or `cycles`"]
        );
    }

    #[test]
    fn wait_references_need_their_trigger() {
        let p = problems(&format!(
            "{HEAD}  a:\n    wait: {{ clock: 0s }}\n    run: [echo, \"${{{{ wait.files }}}}\", \"${{{{ wait.x }}}}\"]\n  \
             b:\n    run: [echo, \"${{{{ wait.files }}}}\"]\n"
        ));
        assert_eq!(
            p,
            [
                "6:22 steps.a.run[1]: `wait.files` used in a step whose `wait:` has no `files`",
                "6:43 steps.a.run[2]: `wait.x` needs a `command` or `signal` trigger",
                "8:22 steps.b.run[1]: `wait.files` used in a step without `wait:`"
            ]
        );
    }
}
