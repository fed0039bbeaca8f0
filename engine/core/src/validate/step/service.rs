//! A step's `service:`: how it says it is ready, how its logs rotate, and the keys a
//! service cannot have (`timeout`: it runs until the run ends; `publish`: its outputs change
//! while it runs). In a cycling workflow a service lives for the whole run, so it must be
//! `once: first`.

use super::super::{Validator, key_span};
use crate::diag::{Diag, DiagKind};
use crate::model::{Once, Ready, Service};
use crate::spec::raw::{RawService, RawStep};
use crate::spec::span::{SourceFile, Sp};
use crate::units;

impl Validator {
    /// `service:`; `None` for an ordinary step (no `service:`, or `service: false`).
    pub(super) fn step_service(
        &mut self,
        file: &SourceFile,
        name: &Sp<String>,
        raw: &RawStep,
        once: Option<Once>,
    ) -> Option<Service> {
        let sv = raw.service.as_ref()?;
        let spec = match &sv.value {
            RawService::Flag(false) => return None,
            RawService::Flag(true) => None,
            RawService::Spec(s) => Some(s),
        };
        let f = |k: &str| format!("steps.{}.{k}", name.value);
        let key = key_span(file, sv.span, "service");
        let mut svc = Service::plain(key);
        if let Some(t) = &raw.timeout {
            self.push(
                Diag::new(
                    DiagKind::InvalidValue,
                    file,
                    key_span(file, t.span, "timeout"),
                    f("timeout"),
                    "a service runs until the run ends: `timeout` does not apply",
                )
                .with_help("bound the time it may take to become ready: `service: { ready: { ..., timeout: 5m } }`"),
            );
        }
        if let Some((k, _)) = raw.publish.first() {
            self.push(
                Diag::new(
                    DiagKind::InvalidValue,
                    file,
                    k.span,
                    format!("{}.{}", f("publish"), k.value),
                    "a service's outputs change while it runs: they cannot be published",
                )
                .with_help("copy them in a step that reads them, and publish that step's output"),
            );
        }
        if self.cycle_has_end.is_some() && once != Some(Once::First) {
            self.push(
                Diag::new(
                    DiagKind::InvalidValue,
                    file,
                    key,
                    f("service"),
                    "a service runs for the whole run, so in a cycling workflow it must be `once: first`",
                )
                .with_help(format!(
                    "add `once: first`; later cycles read its outputs as `steps.{}.out.NAME`",
                    name.value
                )),
            );
        }
        let Some(spec) = spec else { return Some(svc) };
        if let Some(r) = &spec.ready {
            let field = |k: &str| f(&format!("service.ready.{k}"));
            let rkey = key_span(file, r.span, "ready");
            match (&r.file, &r.command) {
                (Some(_), Some(_)) => self.push(
                    Diag::new(
                        DiagKind::InvalidValue,
                        file,
                        rkey,
                        f("service.ready"),
                        "`ready` takes one probe: `file` or `command`, not both",
                    )
                    .with_help("keep the one that says the service can serve"),
                ),
                (None, None) => self.push(
                    Diag::new(DiagKind::MissingKey, file, rkey, f("service.ready"), "`ready` has no probe")
                        .with_help("give `file:` (ready once it exists) or `command:` (ready once it exits 0)"),
                ),
                (Some(p), None) => {
                    if p.value.trim().is_empty() {
                        self.push(Diag::new(DiagKind::InvalidValue, file, p.span, field("file"), "`file` is empty"));
                    } else if let Some(t) = self.tpl_kept(file, &field("file"), &p.value, p.span) {
                        svc.ready = Some(Ready::File(t));
                    }
                }
                (None, Some(c)) => {
                    if c.is_empty() {
                        self.push(
                            Diag::new(DiagKind::InvalidValue, file, c.span, field("command"), "`command` is empty")
                                .with_help(
                                    "write the program and its arguments: `command: [nc, -z, localhost, '1883']`",
                                ),
                        );
                    } else {
                        svc.ready = Some(Ready::Command(self.tpl_list(file, &field("command"), &r.command)));
                    }
                }
            }
            if let Some(p) = &r.poll
                && let Some(d) = self.positive_duration(file, &field("poll"), "poll", p)
            {
                svc.poll = d;
            }
            if let Some(t) = &r.timeout {
                svc.ready_timeout = self.positive_duration(file, &field("timeout"), "timeout", t);
            }
        }
        if let Some(m) = &spec.log_max {
            match units::parse_bytes(&m.value.to_string()) {
                Ok(b) if b >= Service::MIN_LOG_MAX => svc.log_max = b,
                Ok(_) => self.push(
                    Diag::new(
                        DiagKind::InvalidValue,
                        file,
                        m.span,
                        f("service.log_max"),
                        format!("`log_max` must be at least 1K, found `{}`", m.value),
                    )
                    .with_help("logs are checked about once a second; give room for a second of output"),
                ),
                Err(e) => {
                    self.push(Diag::new(DiagKind::InvalidValue, file, m.span, f("service.log_max"), e.to_string()))
                }
            }
        }
        if let Some(k) = &spec.log_keep {
            match u32::try_from(k.value) {
                Ok(n) if n <= Service::MAX_LOG_KEEP => svc.log_keep = n,
                _ => self.push(Diag::new(
                    DiagKind::InvalidValue,
                    file,
                    k.span,
                    f("service.log_keep"),
                    format!("`log_keep` must be between 0 and {}, found {}", Service::MAX_LOG_KEEP, k.value),
                )),
            }
        }
        Some(svc)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::model::{Ready, Service};
    use crate::validate::cycle::tests::{check, problems};

    const HEAD: &str = "name: w\nsteps:\n";

    fn service_of(step: &str) -> Option<Service> {
        let wf = check(&format!("{HEAD}  s:\n    run: [serve]\n{step}")).unwrap_or_else(|d| panic!("{d:?}"));
        wf.steps[0].service.clone()
    }

    #[test]
    fn a_service_lands_in_the_model_with_its_defaults() {
        let s = service_of("    service: true\n").expect("a service");
        assert!(s.ready.is_none());
        assert_eq!((s.poll, s.ready_timeout), (Duration::from_secs(1), None));
        assert_eq!((s.log_max, s.log_keep), (10 << 20, 3));
        assert!(service_of("    service: false\n").is_none());
        assert!(service_of("").is_none());
        let s = service_of(
            "    service:\n      ready: { file: \"${{ out.sock }}.ready\", poll: 100ms, timeout: 1m }\n      \
             log_max: 1M\n      log_keep: 0\n    out: { sock: sock }\n",
        )
        .expect("a service");
        assert!(matches!(&s.ready, Some(Ready::File(t)) if t.src == "${{ out.sock }}.ready"));
        assert_eq!((s.poll, s.ready_timeout), (Duration::from_millis(100), Some(Duration::from_secs(60))));
        assert_eq!((s.log_max, s.log_keep), (1 << 20, 0));
        let s = service_of("    service: { ready: { command: [nc, -z, localhost, \"${{ 1883 }}\"] } }\n").unwrap();
        assert!(matches!(&s.ready, Some(Ready::Command(c)) if c.len() == 4));
    }

    #[test]
    fn what_a_service_cannot_have_is_located() {
        let p = |step: &str| problems(&format!("{HEAD}  s:\n    run: [serve]\n{step}"));
        assert_eq!(
            p("    service: true\n    timeout: 5m\n"),
            ["6:5 steps.s.timeout: a service runs until the run ends: `timeout` does not apply"]
        );
        assert_eq!(
            p("    service: true\n    out: { w: w }\n    publish: { w: /tmp/w }\n"),
            ["7:16 steps.s.publish.w: a service's outputs change while it runs: they cannot be published"]
        );
        assert_eq!(
            p("    service: { ready: { file: r, command: [x] } }\n"),
            ["5:16 steps.s.service.ready: `ready` takes one probe: `file` or `command`, not both"]
        );
        assert_eq!(p("    service: { ready: { poll: 1s } }\n"), ["5:16 steps.s.service.ready: `ready` has no probe"]);
        assert_eq!(
            p("    service: { ready: { file: r, poll: 0s } }\n"),
            ["5:40 steps.s.service.ready.poll: `poll` must be longer than zero, found `0s`"]
        );
        assert_eq!(
            p("    service: { log_max: 10, log_keep: 101 }\n"),
            [
                "5:25 steps.s.service.log_max: `log_max` must be at least 1K, found `10`",
                "5:39 steps.s.service.log_keep: `log_keep` must be between 0 and 100, found 101"
            ]
        );
        assert_eq!(p("    service: { redy: {} }\n"), ["5:16 steps.s.service.redy: unknown key `redy`"]);
        assert_eq!(
            p("    service: yes\n"),
            ["5:5 steps.s.service: expected `true`, `false` or a map with `ready`, `log_max`, `log_keep`, found `yes`"]
        );
    }

    #[test]
    fn in_a_cycling_workflow_a_service_is_once_first() {
        let head = "name: w\ncycle: { every: 1, start: 0, cycles: 3 }\nsteps:\n";
        let p = problems(&format!("{head}  s:\n    service: true\n    run: [serve]\n"));
        assert_eq!(
            p,
            [
                "5:5 steps.s.service: a service runs for the whole run, so in a cycling workflow it must be `once: first`"
            ]
        );
        let p = problems(&format!("{head}  s:\n    once: last\n    service: true\n    run: [serve]\n"));
        assert_eq!(p.len(), 1, "{p:?}");
        check(&format!(
            "{head}  s:\n    once: first\n    service: true\n    run: [serve]\n    out: {{ w: w }}\n  \
             use:\n    run: [cat, \"${{{{ steps.s.out.w }}}}\"]\n  end:\n    once: last\n    \
             run: [cat, \"${{{{ steps.s.out.w }}}}\"]\n"
        ))
        .unwrap_or_else(|d| panic!("{d:?}"));
    }
}
