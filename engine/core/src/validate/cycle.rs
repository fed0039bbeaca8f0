//! The `cycle:` block of the root workflow → [`CycleSpec`]: kinds of `every`, `start` and
//! `end` agree (integers, or a duration with UTC instants), `end` is not before `start`,
//! at most one of `end` and `cycles`, and counts in range.

use std::time::Duration;

use super::Validator;
use crate::diag::{Diag, DiagKind};
use crate::model::{CycleSpec, End, Every, Point, Start};
use crate::spec::raw::{RawCycle, Scalar};
use crate::spec::span::{SourceFile, Sp};
use crate::units;

/// Which kind of cycling a value belongs to, for messages.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Int,
    Time,
}

impl Kind {
    fn of_every(e: Every) -> Kind {
        match e {
            Every::Int(_) => Kind::Int,
            Every::Time(_) => Kind::Time,
        }
    }
    fn of_point(p: Point) -> Kind {
        match p {
            Point::Int(_) => Kind::Int,
            Point::Time(_) => Kind::Time,
        }
    }
}

impl Validator {
    /// Validates `cycle:`. Always gives a spec (with stand-ins for broken parts) so the
    /// workflow's `cycle.*` references are still checked; problems are pushed.
    pub(super) fn cycle_spec(&mut self, file: &SourceFile, raw: &Sp<RawCycle>) -> CycleSpec {
        let c = &raw.value;
        let every = self.cycle_every(file, &c.every);
        let start = self.cycle_start(file, &c.start, every);
        let end = self.cycle_end(file, c, every, start);
        let runahead = match &c.runahead {
            None => 1,
            Some(r) => match u32::try_from(r.value) {
                Ok(n) => n,
                Err(_) => {
                    self.push(Diag::new(
                        DiagKind::InvalidValue,
                        file,
                        r.span,
                        "cycle.runahead",
                        format!("`runahead` must be at least 0, found `{}`", r.value),
                    ));
                    1
                }
            },
        };
        let keep = match &c.keep {
            None => None,
            Some(k) => match u32::try_from(k.value) {
                Ok(n) if n >= 1 => Some(n),
                _ => {
                    self.push(
                        Diag::new(
                            DiagKind::InvalidValue,
                            file,
                            k.span,
                            "cycle.keep",
                            format!("`keep` must be at least 1, found `{}`", k.value),
                        )
                        .with_help("leave `keep` out to keep the directories of every cycle"),
                    );
                    None
                }
            },
        };
        // Stand-ins of the kind the user meant, so `cycle.point` keeps the type they expect
        // and a mistake here is not reported again at every use.
        let every = every.unwrap_or(match &c.every.value {
            Scalar::Str(_) => Every::Time(Duration::from_secs(60)),
            _ => Every::Int(1),
        });
        let start = start.unwrap_or(match every {
            Every::Time(_) => Start::Now,
            Every::Int(_) => Start::At(Point::Int(0)),
        });
        CycleSpec { every, start, end, runahead, keep, span: raw.span }
    }

    fn cycle_every(&mut self, file: &SourceFile, v: &Sp<Scalar>) -> Option<Every> {
        let bad = |msg: String| Diag::new(DiagKind::InvalidValue, file, v.span, "cycle.every", msg);
        match &v.value {
            Scalar::Int(i) if *i >= 1 => Some(Every::Int(*i)),
            Scalar::Int(i) => {
                self.push(bad(format!("`every` must be at least 1, found `{i}`")));
                None
            }
            Scalar::Str(s) => match units::parse_duration(s) {
                Ok(d) if d > Duration::ZERO => Some(Every::Time(d)),
                Ok(_) => {
                    self.push(bad(format!("`every` must be longer than zero, found `{s}`")));
                    None
                }
                Err(e) => {
                    self.push(bad(e.to_string()).with_help("write an integer step (`1`) or a duration (`10m`)"));
                    None
                }
            },
            other => {
                self.push(
                    Diag::new(
                        DiagKind::Type,
                        file,
                        v.span,
                        "cycle.every",
                        format!("expected an integer step or a duration, found `{other}`"),
                    )
                    .with_help("write an integer step (`1`) or a duration (`10m`)"),
                );
                None
            }
        }
    }

    /// A point written at `field` (`start`, `end`): an int or a UTC instant.
    fn cycle_point(&mut self, file: &SourceFile, field: &str, v: &Sp<Scalar>) -> Option<Point> {
        match &v.value {
            Scalar::Int(i) => Some(Point::Int(*i)),
            Scalar::Str(s) => match units::parse_instant(s) {
                Ok(t) => Some(Point::Time(t)),
                Err(e) => {
                    self.push(Diag::new(DiagKind::InvalidValue, file, v.span, format!("cycle.{field}"), e.to_string()));
                    None
                }
            },
            other => {
                self.push(
                    Diag::new(
                        DiagKind::Type,
                        file,
                        v.span,
                        format!("cycle.{field}"),
                        format!("expected an integer or an ISO 8601 instant, found `{other}`"),
                    )
                    .with_help("write an integer (`0`) or a UTC instant (`2026-03-01T00:00Z`)"),
                );
                None
            }
        }
    }

    /// Reports a point whose kind differs from `every`'s.
    fn point_kind_agrees(&mut self, file: &SourceFile, field: &str, v: &Sp<Scalar>, p: Point, every: Every) -> bool {
        let (pk, ek) = (Kind::of_point(p), Kind::of_every(every));
        if pk == ek {
            return true;
        }
        let (msg, help) = match pk {
            Kind::Int => (
                format!("`{field}` is an integer but `every` is a duration (datetime cycling)"),
                format!("write `{field}` as a UTC instant (`2026-03-01T00:00Z`), or `every` as an integer step"),
            ),
            Kind::Time => (
                format!("`{field}` is an instant but `every` is an integer step (integer cycling)"),
                format!("write `every` as a duration (`10m`), or `{field}` as an integer"),
            ),
        };
        self.push(Diag::new(DiagKind::InvalidValue, file, v.span, format!("cycle.{field}"), msg).with_help(help));
        false
    }

    fn cycle_start(&mut self, file: &SourceFile, v: &Sp<Scalar>, every: Option<Every>) -> Option<Start> {
        if matches!(&v.value, Scalar::Str(s) if s.trim() == "now") {
            if let Some(Every::Int(_)) = every {
                self.push(
                    Diag::new(
                        DiagKind::InvalidValue,
                        file,
                        v.span,
                        "cycle.start",
                        "`start: now` needs datetime cycling, but `every` is an integer step",
                    )
                    .with_help("write `every` as a duration (`10m`), or `start` as an integer"),
                );
                return None;
            }
            return Some(Start::Now);
        }
        let p = self.cycle_point(file, "start", v)?;
        match every {
            Some(e) if !self.point_kind_agrees(file, "start", v, p, e) => None,
            _ => Some(Start::At(p)),
        }
    }

    fn cycle_end(
        &mut self,
        file: &SourceFile,
        c: &RawCycle,
        every: Option<Every>,
        start: Option<Start>,
    ) -> Option<End> {
        if let (Some(e), Some(n)) = (&c.end, &c.cycles) {
            self.push(
                Diag::new(
                    DiagKind::InvalidValue,
                    file,
                    n.span,
                    "cycle.cycles",
                    "`end` and `cycles` cannot both be given",
                )
                .with_secondary(e.span, "`end` is given here")
                .with_help("keep one: `end` is the last point, `cycles` the number of cycles"),
            );
            return None;
        }
        if let Some(n) = &c.cycles {
            return match u64::try_from(n.value) {
                Ok(k) if k >= 1 => Some(End::Cycles(k)),
                _ => {
                    self.push(Diag::new(
                        DiagKind::InvalidValue,
                        file,
                        n.span,
                        "cycle.cycles",
                        format!("`cycles` must be at least 1, found `{}`", n.value),
                    ));
                    None
                }
            };
        }
        let v = c.end.as_ref()?;
        if matches!(&v.value, Scalar::Str(s) if s.trim() == "now") {
            self.push(
                Diag::new(DiagKind::InvalidValue, file, v.span, "cycle.end", "`end` cannot be `now`")
                    .with_help("give the last point, a number of `cycles`, or no end (run until stopped)"),
            );
            return None;
        }
        let p = self.cycle_point(file, "end", v)?;
        if let Some(e) = every
            && !self.point_kind_agrees(file, "end", v, p, e)
        {
            return None;
        }
        if let Some(Start::At(s)) = start
            && Kind::of_point(s) == Kind::of_point(p)
            && p < s
        {
            self.push(
                Diag::new(
                    DiagKind::InvalidValue,
                    file,
                    v.span,
                    "cycle.end",
                    format!("`end` ({p}) is before `start` ({s})"),
                )
                .with_secondary(c.start.span, "`start` is here"),
            );
            return None;
        }
        Some(End::At(p))
    }
}

impl Validator {
    /// Checks that need the whole cycling model, after references and dependencies: fills
    /// [`Step::prev_deps`](crate::model::Step::prev_deps), refuses `prev.*` reachable in the
    /// first cycle (see [`super::first_cycle`]) and same-cycle dependencies on `once: last`
    /// steps from steps that run earlier.
    pub(super) fn check_cycling(&mut self) {
        use super::first_cycle::{unguarded_prev_refs, when_skips_first};
        use crate::model::{Once, prev_sources, sites, sources};
        use std::collections::BTreeSet;

        let single_cycle = self.wf.cycle.as_ref().is_some_and(|c| match c.start {
            Start::At(p) => c.count(p) == Some(1),
            Start::Now => c.end == Some(End::Cycles(1)),
        });
        let mut prev: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); self.wf.steps.len()];
        for (ns, ctx, t, field, _) in sites(&self.wf) {
            let Some(to) = ctx.step() else { continue };
            prev[to].extend(prev_sources(&self.wf, ns, ctx, &t).into_iter().map(|(s, _)| s));
            let st = &self.wf.steps[to];
            let to_once = st.once;
            // A `once: last` step runs in the first cycle only when there is one cycle.
            let runs_first = match to_once {
                Some(Once::Last) => single_cycle,
                // `prev.*` in a `once: first` step is refused where it is resolved.
                Some(Once::First) => false,
                None => !st.when.as_ref().is_some_and(|w| w.tpl.single_expr().is_some() && when_skips_first(&w.tpl)),
            };
            if runs_first {
                for r in unguarded_prev_refs(&t.tpl) {
                    let file = self.file(ns);
                    let path = r.path.join(".");
                    self.push(
                        Diag::new(
                            DiagKind::Expression,
                            &file,
                            t.span.sub(r.span.start, r.span.end),
                            field.clone(),
                            format!("`{path}` is read in the first cycle, which has no previous cycle"),
                        )
                        .with_help(format!(
                            "give a fallback for the first cycle: `${{{{ cycle.first ? ... : {path} }}}}`, \
                             or skip the step then: `when: ${{{{ !cycle.first }}}}`"
                        )),
                    );
                }
            }
            if to_once == Some(Once::Last) {
                continue;
            }
            for (from, span) in sources(&self.wf, ns, ctx, &t) {
                if self.wf.steps[from].once != Some(Once::Last) {
                    continue;
                }
                let file = self.file(ns);
                let (to_name, from_name) = (&self.wf.steps[to].name, &self.wf.steps[from].name);
                let runs = if to_once == Some(Once::First) { "runs in the first cycle" } else { "runs every cycle" };
                self.push(
                    Diag::new(
                        DiagKind::InvalidValue,
                        &file,
                        span,
                        field.clone(),
                        format!("`{to_name}` {runs} but reads `{from_name}`, which runs only in the last cycle (`once: last`)"),
                    )
                    .with_help(format!("make `{to_name}` `once: last` too, or read something that runs every cycle")),
                );
            }
        }
        for (i, p) in prev.into_iter().enumerate() {
            self.wf.steps[i].prev_deps = p.into_iter().collect();
        }
        // `after:` on a `once: last` step, from a step that runs before the last cycle.
        for i in 0..self.wf.steps.len() {
            let st = &self.wf.steps[i];
            if st.once == Some(Once::Last) {
                continue;
            }
            if let Some(&from) = st.after.iter().find(|&&a| self.wf.steps[a].once == Some(Once::Last)) {
                let file = self.file(st.ns);
                let d = Diag::new(
                    DiagKind::InvalidValue,
                    &file,
                    st.span,
                    format!("steps.{}.after", st.local_name),
                    format!(
                        "`{}` runs before the last cycle but comes `after` `{}`, which runs only in the last cycle (`once: last`)",
                        st.name, self.wf.steps[from].name
                    ),
                );
                self.push(d);
            }
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use std::time::Duration;

    use crate::diag::Diagnostics;
    use crate::model::{CycleSpec, End, Every, Point, Start, Workflow};
    use crate::spec::{self, span::SourceFile};
    use crate::validate::{Overrides, validate};

    /// Validates a workflow written in a test.
    pub(in crate::validate) fn check(text: &str) -> Result<Workflow, Diagnostics> {
        let file = SourceFile::new("wf.yaml", text);
        let raw = spec::parse(&file)?;
        validate(file, raw, &Overrides::default())
    }

    /// The problems of an invalid workflow as `line:col field: message`.
    pub(in crate::validate) fn problems(text: &str) -> Vec<String> {
        let file = SourceFile::new("wf.yaml", text);
        let Err(d) = check(text) else { panic!("valid: {text}") };
        d.0.iter()
            .map(|d| {
                let (l, c) = d.labels.first().map_or((0, 0), |(s, _)| file.line_col(s.offset));
                format!("{l}:{c} {}: {}", d.field, d.message)
            })
            .collect()
    }

    fn spec_of(cycle: &str) -> CycleSpec {
        let wf = check(&format!("name: w\ncycle: {cycle}\nsteps:\n  a:\n    run: [\"true\"]\n"))
            .unwrap_or_else(|d| panic!("{cycle}: {d:?}"));
        wf.cycle.expect("cycles")
    }

    fn at(s: &str) -> Point {
        Point::Time(s.parse().expect("instant"))
    }

    #[test]
    fn datetime_cycling_lands_in_the_model() {
        let c = spec_of("{ every: 10m, start: 2026-03-01T00:00Z, end: 2026-03-03T00:00:00Z, runahead: 2, keep: 24 }");
        assert_eq!(c.every, Every::Time(Duration::from_secs(600)));
        assert_eq!(c.start, Start::At(at("2026-03-01T00:00:00Z")));
        assert_eq!(c.end, Some(End::At(at("2026-03-03T00:00:00Z"))));
        assert_eq!((c.runahead, c.keep), (2, Some(24)));
        assert_eq!(c.count(at("2026-03-01T00:00:00Z")), Some(289));
        let c = spec_of("{ every: 2s, start: now }");
        assert_eq!((c.start, c.end, c.runahead, c.keep), (Start::Now, None, 1, None));
    }

    #[test]
    fn integer_cycling_lands_in_the_model() {
        let c = spec_of("{ every: 1, start: 0, cycles: 48 }");
        assert_eq!((c.every, c.start, c.end), (Every::Int(1), Start::At(Point::Int(0)), Some(End::Cycles(48))));
        let c = spec_of("{ every: 6, start: 0, end: 24, runahead: 0 }");
        assert_eq!((c.end, c.runahead), (Some(End::At(Point::Int(24))), 0));
        assert_eq!(c.count(Point::Int(0)), Some(5));
    }

    #[test]
    fn a_workflow_without_cycle_has_none() {
        assert!(check("name: w\nsteps:\n  a:\n    run: [\"true\"]\n").expect("valid").cycle.is_none());
    }

    #[test]
    fn bad_cycle_blocks_are_located() {
        let p = |c: &str| problems(&format!("name: w\ncycle: {c}\nsteps:\n  a:\n    run: [\"true\"]\n"));
        assert_eq!(p("{ every: 0, start: 0 }"), ["2:17 cycle.every: `every` must be at least 1, found `0`"]);
        assert_eq!(
            p("{ every: 10x, start: now }"),
            ["2:17 cycle.every: invalid duration `10x`: unknown unit `x` (use ms, s, m, h, d)"]
        );
        assert_eq!(
            p("{ every: 1, start: 2026-03-01T00:00Z }"),
            ["2:27 cycle.start: `start` is an instant but `every` is an integer step (integer cycling)"]
        );
        assert_eq!(
            p("{ every: 1h, start: 0 }"),
            ["2:28 cycle.start: `start` is an integer but `every` is a duration (datetime cycling)"]
        );
        assert_eq!(
            p("{ every: 1, start: now }"),
            ["2:27 cycle.start: `start: now` needs datetime cycling, but `every` is an integer step"]
        );
        assert_eq!(p("{ every: 1, start: 10, end: 5 }"), ["2:36 cycle.end: `end` (5) is before `start` (10)"]);
        assert_eq!(
            p("{ every: 1, start: 0, end: 5, cycles: 3 }"),
            ["2:46 cycle.cycles: `end` and `cycles` cannot both be given"]
        );
        assert_eq!(
            p("{ every: 1, start: 0, cycles: 0 }"),
            ["2:38 cycle.cycles: `cycles` must be at least 1, found `0`"]
        );
        assert_eq!(
            p("{ every: 1, start: 0, runahead: -1 }"),
            ["2:40 cycle.runahead: `runahead` must be at least 0, found `-1`"]
        );
        assert_eq!(p("{ every: 1, start: 0, keep: 0 }"), ["2:36 cycle.keep: `keep` must be at least 1, found `0`"]);
        assert_eq!(
            p("{ every: 1m, start: 2026-03-01T00:00+01:00 }"),
            ["2:28 cycle.start: instant `2026-03-01T00:00+01:00` is not in UTC: end it with `Z` (`2026-03-01T00:00Z`)"]
        );
    }

    const HEAD: &str = "name: w\ncycle: { every: 1, start: 0, cycles: 3 }\nsteps:\n";

    #[test]
    fn prev_references_fill_prev_deps_not_deps() {
        let wf = check(&format!(
            "{HEAD}  init:\n    once: first\n    run: [\"true\"]\n    out: {{ s: s.txt }}\n  \
             analysis:\n    in:\n      state: \"${{{{ cycle.first ? steps.init.out.s : prev.steps.analysis.out.s }}}}\"\n      \
             f: \"${{{{ cycle.index > 0 ? prev.steps.fc.values.v : 0 }}}}\"\n    run: [cp, \"${{{{ in.state }}}}\", \"${{{{ out.s }}}}\"]\n    \
             out: {{ s: s.txt }}\n  fc:\n    when: \"${{{{ !cycle.first }}}}\"\n    \
             run: [echo, \"${{{{ prev.steps.analysis.out.s }}}}\", \"${{{{ cycle.point + 1 }}}}\"]\n    values: {{ v: v.json }}\n"
        ))
        .unwrap_or_else(|d| panic!("{d:?}"));
        let idx = |n: &str| wf.steps.iter().position(|s| s.name == n).expect("step");
        let a = &wf.steps[idx("analysis")];
        assert_eq!(a.deps, [idx("init")]);
        let mut want = vec![idx("analysis"), idx("fc")];
        want.sort();
        assert_eq!(a.prev_deps, want);
        assert_eq!(wf.steps[idx("fc")].prev_deps, [idx("analysis")]);
        assert!(wf.steps[idx("fc")].deps.is_empty());
    }

    #[test]
    fn prev_reachable_in_the_first_cycle_is_refused() {
        let p = problems(&format!(
            "{HEAD}  a:\n    run: [echo, \"${{{{ prev.steps.a.out.x }}}}\"]\n    out: {{ x: x.txt }}\n"
        ));
        assert_eq!(
            p,
            ["5:22 steps.a.run[1]: `prev.steps.a.out.x` is read in the first cycle, which has no previous cycle"]
        );
    }

    #[test]
    fn prev_and_once_rules() {
        let p = problems(&format!(
            "{HEAD}  t:\n    once: first\n    run: [echo, \"${{{{ prev.steps.a.out.x }}}}\"]\n    out: {{ x: x }}\n  \
             a:\n    when: \"${{{{ !cycle.first }}}}\"\n    run: [echo, \"${{{{ prev.steps.t.out.x }}}}\", \"${{{{ steps.r.out.x }}}}\"]\n    \
             out: {{ x: x }}\n  r:\n    once: last\n    run: [\"true\"]\n    out: {{ x: x }}\n"
        ));
        assert_eq!(
            p,
            [
                "6:22 steps.t.run[1]: `prev.steps.a.out.x` is read by a `once: first` step, which runs only in the first cycle",
                "10:22 steps.a.run[1]: `prev.steps.t` reads step `t`, which does not run every cycle (`once: first`)",
                "10:51 steps.a.run[2]: `a` runs every cycle but reads `r`, which runs only in the last cycle (`once: last`)",
            ]
        );
    }

    #[test]
    fn cycle_and_prev_need_a_cycling_workflow() {
        let p = problems(
            "name: w\nsteps:\n  a:\n    run: [echo, \"${{ cycle.index }}\", \"${{ prev.steps.a.out.x }}\"]\n    out: { x: x }\n",
        );
        assert_eq!(
            p,
            [
                "4:22 steps.a.run[1]: `cycle.index` is only available in a cycling workflow",
                "4:44 steps.a.run[2]: `prev.steps.a.out.x` is only available in a cycling workflow",
            ]
        );
    }

    #[test]
    fn a_broken_every_is_reported_once() {
        let p = problems(
            "name: w\ncycle: { every: 10x, start: now }\nsteps:\n  a:\n    run: [echo, \"${{ format_time(cycle.point, '%H') }}\"]\n",
        );
        assert_eq!(p, ["2:17 cycle.every: invalid duration `10x`: unknown unit `x` (use ms, s, m, h, d)"]);
    }

    #[test]
    fn cycle_point_has_the_type_of_the_cycling() {
        let p = problems(&format!("{HEAD}  a:\n    run: [echo, \"${{{{ format_time(cycle.point, '%H') }}}}\"]\n"));
        assert_eq!(p, ["5:34 steps.a.run[1]: `format_time` expects an ISO 8601 instant, found `int`"]);
    }
}
