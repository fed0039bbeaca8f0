//! Evaluation of expressions and templates against a [`Scope`].

use std::cmp::Ordering;
use std::collections::HashMap;

use super::ast::{BinaryOp, Expr, ExprKind, Segment, Template, UnaryOp};
use super::error::{ExprError, LookupError, Span};
use super::functions;
use super::types::{
    binary_type_error, condition_type_error, index_type_error, logic_type_error, not_indexable, unary_type_error,
    unknown_reference,
};
use super::value::{MAX_LIST_LEN, MAX_STRING_LEN, Value, deep_size, shallow_size};

/// Upper bound on the memory (in bytes, approximate) that one evaluation
/// may allocate for lists and strings in total, so a short hostile
/// expression like `[range(10000000), range(10000000), ...]` cannot
/// exhaust memory even though each single list is within its own limit.
pub const MAX_EVAL_BYTES: usize = 1 << 30;

/// Resolves dotted references during evaluation.
pub trait Scope {
    /// The value at `path`, e.g. `["steps", "mesh", "out", "grid"]`.
    fn lookup(&self, path: &[&str]) -> Result<Value, LookupError>;
}

/// Keys are dotted paths such as `"params.n"`.
impl Scope for HashMap<String, Value> {
    fn lookup(&self, path: &[&str]) -> Result<Value, LookupError> {
        let key = path.join(".");
        self.get(&key).cloned().ok_or_else(|| unknown_reference(&key, self.keys().map(String::as_str)))
    }
}

impl Expr {
    /// Evaluates the expression. Evaluation is pure: the only outside
    /// input is `scope`, and `&&`, `||` and `? :` skip the operand they do
    /// not need.
    pub fn eval(&self, scope: &dyn Scope) -> Result<Value, ExprError> {
        Evaluator { scope, used: 0 }.eval(self)
    }
}

impl Template {
    /// Evaluates the template: a single-expression template yields the
    /// expression's typed value, anything else the concatenated text (as
    /// a [`Value::Str`]).
    pub fn eval(&self, scope: &dyn Scope) -> Result<Value, ExprError> {
        let mut ev = Evaluator { scope, used: 0 };
        if let Some(expr) = self.single_expr() {
            return ev.eval(expr);
        }
        let mut out = String::new();
        for seg in &self.segments {
            let (text, span) = match seg {
                Segment::Text { text, span } => (text.clone(), *span),
                Segment::Expr(e) => (ev.eval(e)?.to_text(e.span)?, e.span),
            };
            out.push_str(&text);
            check_string_len(&out, span)?;
        }
        Ok(Value::Str(out))
    }
}

pub(crate) fn check_string_len(s: &str, span: Span) -> Result<(), ExprError> {
    if s.len() > MAX_STRING_LEN {
        return Err(string_too_long(span));
    }
    Ok(())
}

pub(crate) fn string_too_long(span: Span) -> ExprError {
    ExprError::limit(span, format!("string result is too long (limit {MAX_STRING_LEN} bytes)"))
}

pub(crate) fn check_list_len(len: usize, span: Span) -> Result<(), ExprError> {
    if len > MAX_LIST_LEN {
        return Err(ExprError::limit(span, format!("list would have {len} elements (limit {MAX_LIST_LEN})")));
    }
    Ok(())
}

struct Evaluator<'s> {
    scope: &'s dyn Scope,
    /// Bytes charged so far against [`MAX_EVAL_BYTES`].
    used: usize,
}

impl Evaluator<'_> {
    fn charge(&mut self, bytes: usize, span: Span) -> Result<(), ExprError> {
        self.used = self.used.saturating_add(bytes);
        if self.used > MAX_EVAL_BYTES {
            return Err(ExprError::limit(span, "expression uses too much memory".to_string()).with_help(format!(
                "one evaluation may allocate at most {MAX_EVAL_BYTES} bytes of lists and strings"
            )));
        }
        Ok(())
    }

    /// Recursion depth is bounded by the parser's tree height limit.
    fn eval(&mut self, e: &Expr) -> Result<Value, ExprError> {
        let value = match &e.kind {
            ExprKind::Literal(v) => return Ok(v.clone()),
            ExprKind::Ref(path) => {
                let parts: Vec<&str> = path.iter().map(String::as_str).collect();
                let v = self.scope.lookup(&parts).map_err(|err| err.at(e.span))?;
                // Scope values are cloned, so count all of their content.
                self.charge(deep_size(&v), e.span)?;
                return Ok(v);
            }
            ExprKind::List(items) => Value::List(items.iter().map(|item| self.eval(item)).collect::<Result<_, _>>()?),
            ExprKind::Index { target, index } => {
                let t = self.eval(target)?;
                let i = self.eval(index)?;
                return index_value(t, i, target.span, index.span);
            }
            ExprKind::Call { name, args, .. } => {
                let mut vals = Vec::with_capacity(args.len());
                for arg in args {
                    vals.push((self.eval(arg)?, arg.span));
                }
                functions::call(name, vals, e.span)?
            }
            ExprKind::Unary { op, operand } => {
                let v = self.eval(operand)?;
                return match (op, v) {
                    (UnaryOp::Neg, Value::Int(i)) => {
                        i.checked_neg().map(Value::Int).ok_or_else(|| overflow("-", e.span))
                    }
                    (UnaryOp::Neg, Value::Float(f)) => Ok(Value::Float(-f)),
                    (UnaryOp::Not, Value::Bool(b)) => Ok(Value::Bool(!b)),
                    (op, v) => Err(unary_type_error(*op, &v.type_of(), e.span)),
                };
            }
            ExprKind::Binary { op, lhs, rhs } => match op {
                BinaryOp::And | BinaryOp::Or => {
                    let l = self.eval_bool(*op, lhs)?;
                    // Short-circuit: the right side is never evaluated
                    // when the left side decides the result.
                    if l == (*op == BinaryOp::Or) {
                        return Ok(Value::Bool(l));
                    }
                    return Ok(Value::Bool(self.eval_bool(*op, rhs)?));
                }
                _ => {
                    let l = self.eval(lhs)?;
                    let r = self.eval(rhs)?;
                    binary(*op, l, r, e.span)?
                }
            },
            ExprKind::Ternary { cond, then, otherwise } => {
                return match self.eval(cond)? {
                    Value::Bool(true) => self.eval(then),
                    Value::Bool(false) => self.eval(otherwise),
                    v => Err(condition_type_error(&v.type_of(), cond.span)),
                };
            }
        };
        // Values built here are new allocations; their elements were
        // charged when they were produced.
        self.charge(shallow_size(&value), e.span)?;
        Ok(value)
    }

    fn eval_bool(&mut self, op: BinaryOp, e: &Expr) -> Result<bool, ExprError> {
        match self.eval(e)? {
            Value::Bool(b) => Ok(b),
            v => Err(logic_type_error(op, &v.type_of(), e.span)),
        }
    }
}

fn overflow(op: &str, span: Span) -> ExprError {
    ExprError::runtime(span, format!("integer overflow in `{op}`"))
}

fn division_by_zero(span: Span) -> ExprError {
    ExprError::runtime(span, "division by zero")
}

/// Maps a possibly negative index onto `0..len`.
pub(crate) fn resolve_index(i: i64, len: usize) -> Option<usize> {
    if i >= 0 {
        usize::try_from(i).ok().filter(|&k| k < len)
    } else {
        len.checked_sub(usize::try_from(i.unsigned_abs()).ok()?)
    }
}

fn index_value(target: Value, index: Value, tspan: Span, ispan: Span) -> Result<Value, ExprError> {
    let Value::Int(i) = index else {
        return Err(index_type_error(&index.type_of(), ispan));
    };
    let out_of_range = |what: &str, len: usize| {
        ExprError::runtime(ispan, format!("index {i} is out of range for a {what} of length {len}"))
    };
    match target {
        Value::List(mut items) => {
            let len = items.len();
            let k = resolve_index(i, len).ok_or_else(|| out_of_range("list", len))?;
            // The list is owned and discarded, so move the element out.
            Ok(items.swap_remove(k))
        }
        Value::Str(s) | Value::Path(s) => {
            let len = s.chars().count();
            let k = resolve_index(i, len).ok_or_else(|| out_of_range("string", len))?;
            Ok(Value::Str(s.chars().nth(k).map(String::from).unwrap_or_default()))
        }
        other => Err(not_indexable(&other.type_of(), tspan)),
    }
}

/// Orders two values for `<`, `min`, `max`: numbers (mixing int and
/// float) or strings/paths. `Err(())` means the types cannot be ordered;
/// `Ok(None)` only happens for NaN.
pub(crate) fn compare(l: &Value, r: &Value) -> Result<Option<Ordering>, ()> {
    match (l, r) {
        (Value::Int(a), Value::Int(b)) => Ok(Some(a.cmp(b))),
        (Value::Int(a), Value::Float(b)) => Ok((*a as f64).partial_cmp(b)),
        (Value::Float(a), Value::Int(b)) => Ok(a.partial_cmp(&(*b as f64))),
        (Value::Float(a), Value::Float(b)) => Ok(a.partial_cmp(b)),
        (Value::Str(a) | Value::Path(a), Value::Str(b) | Value::Path(b)) => Ok(Some(a.cmp(b))),
        _ => Err(()),
    }
}

fn as_f64(v: &Value) -> Option<f64> {
    match v {
        Value::Int(i) => Some(*i as f64),
        Value::Float(f) => Some(*f),
        _ => None,
    }
}

/// Floored modulo (result takes the divisor's sign), like Python.
fn floor_rem_int(a: i64, b: i64) -> i64 {
    // wrapping_rem: i64::MIN % -1 is mathematically 0.
    let r = a.wrapping_rem(b);
    if r != 0 && ((r < 0) != (b < 0)) { r + b } else { r }
}

fn floor_rem_float(a: f64, b: f64) -> f64 {
    let r = a % b;
    if r != 0.0 && ((r < 0.0) != (b < 0.0)) { r + b } else { r }
}

/// Applies a non-short-circuit binary operator to two evaluated operands.
fn binary(op: BinaryOp, l: Value, r: Value, span: Span) -> Result<Value, ExprError> {
    let sym = op.symbol();
    let type_err = |l: &Value, r: &Value| binary_type_error(op, &l.type_of(), &r.type_of(), span);
    match op {
        BinaryOp::Eq => return Ok(Value::Bool(l.loose_eq(&r))),
        BinaryOp::Ne => return Ok(Value::Bool(!l.loose_eq(&r))),
        BinaryOp::Lt | BinaryOp::Le | BinaryOp::Gt | BinaryOp::Ge => {
            let ord = compare(&l, &r).map_err(|()| type_err(&l, &r))?;
            let result = ord.is_some_and(|o| match op {
                BinaryOp::Lt => o.is_lt(),
                BinaryOp::Le => o.is_le(),
                BinaryOp::Gt => o.is_gt(),
                _ => o.is_ge(),
            });
            return Ok(Value::Bool(result));
        }
        _ => {}
    }
    if let (Value::Int(a), Value::Int(b)) = (&l, &r) {
        let (a, b) = (*a, *b);
        let result = match op {
            BinaryOp::Add => a.checked_add(b),
            BinaryOp::Sub => a.checked_sub(b),
            BinaryOp::Mul => a.checked_mul(b),
            BinaryOp::Div if b == 0 => return Err(division_by_zero(span)),
            BinaryOp::Div => return Ok(Value::Float(a as f64 / b as f64)),
            BinaryOp::Rem if b == 0 => return Err(division_by_zero(span)),
            _ => Some(floor_rem_int(a, b)),
        };
        return result.map(Value::Int).ok_or_else(|| overflow(sym, span));
    }
    if let (Some(a), Some(b)) = (as_f64(&l), as_f64(&r)) {
        let result = match op {
            BinaryOp::Add => a + b,
            BinaryOp::Sub => a - b,
            BinaryOp::Mul => a * b,
            BinaryOp::Div | BinaryOp::Rem if b == 0.0 => return Err(division_by_zero(span)),
            BinaryOp::Div => a / b,
            _ => floor_rem_float(a, b),
        };
        if !result.is_finite() {
            return Err(ExprError::runtime(span, format!("float overflow in `{sym}`")));
        }
        return Ok(Value::Float(result));
    }
    match (op, l, r) {
        (BinaryOp::Add, Value::Str(a) | Value::Path(a), Value::Str(b) | Value::Path(b)) => {
            if a.len().saturating_add(b.len()) > MAX_STRING_LEN {
                return Err(string_too_long(span));
            }
            Ok(Value::Str(a + &b))
        }
        (BinaryOp::Add, Value::List(mut a), Value::List(b)) => {
            check_list_len(a.len().saturating_add(b.len()), span)?;
            a.extend(b);
            Ok(Value::List(a))
        }
        (_, l, r) => Err(type_err(&l, &r)),
    }
}
