//! The first-cycle rule: a `prev.*` reference evaluated in the first cycle has nothing to
//! read (Cylc silently drops such dependencies; twinflow refuses them). A reference is
//! guarded, and so allowed, when the first cycle cannot reach it:
//!
//! - in the else-branch of `cycle.first ? A : prev...` (or the then-branch when the
//!   condition says "not the first cycle": `!cycle.first`, `cycle.index > 0`,
//!   `cycle.index != 0`, `cycle.index >= 1`);
//! - on the right of `NOT_FIRST && prev...` or `cycle.first || prev...` (short-circuit);
//! - anywhere in a step whose `when:` is "not the first cycle" (alone, or as one side of
//!   `&&`): the step does not run in the first cycle.

use crate::expr::{BinaryOp, Expr, ExprKind, Reference, Template, UnaryOp, Value};

/// Whether `e` holds exactly in the first cycle: `cycle.first`, `cycle.index == 0`, or
/// the negation of a "not first" condition.
fn is_first(e: &Expr) -> bool {
    match &e.kind {
        ExprKind::Ref(p) => is_path(p, "first"),
        ExprKind::Unary { op: UnaryOp::Not, operand } => is_not_first(operand),
        ExprKind::Binary { op: BinaryOp::Eq, lhs, rhs } => index_vs(lhs, rhs, 0) || index_vs(rhs, lhs, 0),
        _ => false,
    }
}

/// Whether `e` holds exactly in every cycle but the first: `!cycle.first`,
/// `cycle.index > 0`, `cycle.index != 0`, `cycle.index >= 1` (either way round).
pub(super) fn is_not_first(e: &Expr) -> bool {
    match &e.kind {
        ExprKind::Unary { op: UnaryOp::Not, operand } => is_first(operand),
        ExprKind::Binary { op, lhs, rhs } => match op {
            BinaryOp::Gt => index_vs(lhs, rhs, 0),
            BinaryOp::Lt => index_vs(rhs, lhs, 0),
            BinaryOp::Ne => index_vs(lhs, rhs, 0) || index_vs(rhs, lhs, 0),
            BinaryOp::Ge => index_vs(lhs, rhs, 1),
            BinaryOp::Le => index_vs(rhs, lhs, 1),
            _ => false,
        },
        _ => false,
    }
}

fn is_path(p: &[String], field: &str) -> bool {
    matches!(p, [c, f] if c == "cycle" && f == field)
}

/// `a` is `cycle.index` and `b` the integer literal `n`.
fn index_vs(a: &Expr, b: &Expr, n: i64) -> bool {
    matches!(&a.kind, ExprKind::Ref(p) if is_path(p, "index"))
        && matches!(&b.kind, ExprKind::Literal(Value::Int(k)) if *k == n)
}

/// Whether a step whose `when:` is `when` never runs in the first cycle.
pub(super) fn when_skips_first(when: &Template) -> bool {
    fn skips(e: &Expr) -> bool {
        match &e.kind {
            ExprKind::Binary { op: BinaryOp::And, lhs, rhs } => skips(lhs) || skips(rhs),
            _ => is_not_first(e),
        }
    }
    when.single_expr().is_some_and(skips)
}

/// `prev.*` references of `t` that the first cycle can reach.
pub(super) fn unguarded_prev_refs(t: &Template) -> Vec<Reference> {
    let mut out = vec![];
    for seg in t.segments() {
        if let crate::expr::Segment::Expr(e) = seg {
            walk(e, &mut out);
        }
    }
    out
}

/// Recursion is bounded by the parser's nesting limit.
fn walk(e: &Expr, out: &mut Vec<Reference>) {
    match &e.kind {
        ExprKind::Literal(_) => {}
        ExprKind::Ref(p) => {
            if p.first().is_some_and(|h| h == "prev") {
                out.push(Reference { path: p.clone(), span: e.span });
            }
        }
        ExprKind::List(items) | ExprKind::Call { args: items, .. } => items.iter().for_each(|i| walk(i, out)),
        ExprKind::Index { target, index } => {
            walk(target, out);
            walk(index, out);
        }
        ExprKind::Unary { operand, .. } => walk(operand, out),
        ExprKind::Binary { op, lhs, rhs } => {
            walk(lhs, out);
            let guards = match op {
                BinaryOp::And => is_not_first(lhs),
                BinaryOp::Or => is_first(lhs),
                _ => false,
            };
            if !guards {
                walk(rhs, out);
            }
        }
        ExprKind::Ternary { cond, then, otherwise } => {
            walk(cond, out);
            if !is_not_first(cond) {
                walk(then, out);
            }
            if !is_first(cond) {
                walk(otherwise, out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::expr::parse_template;

    fn unguarded(src: &str) -> Vec<String> {
        let t = parse_template(src).expect("template parses");
        unguarded_prev_refs(&t).into_iter().map(|r| r.path.join(".")).collect()
    }

    #[test]
    fn a_bare_prev_reference_is_reachable_in_the_first_cycle() {
        assert_eq!(unguarded("${{ prev.steps.a.out.x }}"), ["prev.steps.a.out.x"]);
        assert_eq!(unguarded("state-${{ prev.steps.a.values.n + 1 }}"), ["prev.steps.a.values.n"]);
        assert!(unguarded("${{ steps.a.out.x }}").is_empty());
    }

    #[test]
    fn ternaries_on_the_first_cycle_guard_the_right_branch() {
        assert!(unguarded("${{ cycle.first ? steps.init.out.s : prev.steps.a.out.s }}").is_empty());
        assert!(unguarded("${{ !cycle.first ? prev.steps.a.out.s : steps.init.out.s }}").is_empty());
        assert!(unguarded("${{ cycle.index > 0 ? prev.steps.a.out.s : 'none' }}").is_empty());
        assert!(unguarded("${{ 0 < cycle.index ? prev.steps.a.out.s : 'none' }}").is_empty());
        assert!(unguarded("${{ cycle.index == 0 ? 'none' : prev.steps.a.out.s }}").is_empty());
        assert!(unguarded("${{ !!cycle.first ? 'none' : prev.steps.a.out.s }}").is_empty());
        // The wrong branch.
        assert_eq!(unguarded("${{ cycle.first ? prev.steps.a.out.s : 'x' }}"), ["prev.steps.a.out.s"]);
        assert_eq!(unguarded("${{ cycle.index > 0 ? 'x' : prev.steps.a.out.s }}"), ["prev.steps.a.out.s"]);
        // A condition that is not about the first cycle guards nothing.
        assert_eq!(unguarded("${{ cycle.last ? 'x' : prev.steps.a.out.s }}"), ["prev.steps.a.out.s"]);
        assert_eq!(unguarded("${{ cycle.index > 1 ? prev.steps.a.out.s : 'x' }}"), ["prev.steps.a.out.s"]);
        // A `prev.*` in the condition itself is evaluated in every cycle.
        assert_eq!(unguarded("${{ prev.steps.a.values.ok ? 1 : 2 }}"), ["prev.steps.a.values.ok"]);
    }

    #[test]
    fn nested_ternaries_keep_the_outer_guard() {
        let src = "${{ cycle.first ? 'x' : (params.full ? prev.steps.a.out.s : prev.steps.b.out.s) }}";
        assert!(unguarded(src).is_empty());
    }

    #[test]
    fn short_circuits_guard_their_right_side() {
        assert!(unguarded("${{ !cycle.first && prev.steps.a.values.ok }}").is_empty());
        assert!(unguarded("${{ cycle.first || prev.steps.a.values.ok }}").is_empty());
        assert_eq!(unguarded("${{ prev.steps.a.values.ok && !cycle.first }}"), ["prev.steps.a.values.ok"]);
    }

    #[test]
    fn when_conditions_that_skip_the_first_cycle() {
        let w = |src: &str| when_skips_first(&parse_template(src).expect("parses"));
        assert!(w("${{ !cycle.first }}"));
        assert!(w("${{ cycle.index > 0 }}"));
        assert!(w("${{ params.on && cycle.index >= 1 }}"));
        assert!(!w("${{ cycle.first }}"));
        assert!(!w("${{ !cycle.first || params.on }}"));
        assert!(!w("when ${{ !cycle.first }}"));
    }
}
