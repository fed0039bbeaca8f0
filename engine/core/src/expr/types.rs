//! Static types and type inference, used to validate workflows before
//! anything runs.

use std::collections::HashMap;
use std::fmt;

use super::ast::{BinaryOp, Expr, ExprKind, Segment, Template, UnaryOp};
use super::error::{ExprError, LookupError, Span};
use super::functions;

/// The static type of an expression.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Type {
    /// Unknown; compatible with everything and checked at runtime instead.
    Any,
    /// The type of `null`.
    Null,
    /// `bool`
    Bool,
    /// `int` (64-bit signed)
    Int,
    /// `float` (64-bit)
    Float,
    /// `string`
    Str,
    /// `path`: a string known to name a file.
    Path,
    /// `list<T>`
    List(Box<Type>),
}

impl Type {
    /// Whether a value of type `other` may be used where `self` is
    /// expected: `any` on either side always fits, `float` accepts `int`,
    /// `string` and `path` accept each other, and lists compare element
    /// types.
    pub fn accepts(&self, other: &Type) -> bool {
        match (self, other) {
            (Type::Any, _) | (_, Type::Any) => true,
            (Type::Float, Type::Int) => true,
            (Type::Str | Type::Path, Type::Str | Type::Path) => true,
            (Type::List(a), Type::List(b)) => a.accepts(b),
            (a, b) => a == b,
        }
    }

    /// The least type covering both (`int`/`float` → `float`,
    /// `string`/`path` → `string`, otherwise `any` when they differ).
    pub fn join(&self, other: &Type) -> Type {
        match (self, other) {
            (a, b) if a == b => a.clone(),
            (Type::Int, Type::Float) | (Type::Float, Type::Int) => Type::Float,
            (Type::Str | Type::Path, Type::Str | Type::Path) => Type::Str,
            (Type::List(a), Type::List(b)) => Type::List(Box::new(a.join(b))),
            _ => Type::Any,
        }
    }

    /// `int` or `float`.
    pub fn is_numeric(&self) -> bool {
        matches!(self, Type::Int | Type::Float)
    }

    /// `string` or `path`.
    pub fn is_stringish(&self) -> bool {
        matches!(self, Type::Str | Type::Path)
    }
}

impl fmt::Display for Type {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Type::Any => f.write_str("any"),
            Type::Null => f.write_str("null"),
            Type::Bool => f.write_str("bool"),
            Type::Int => f.write_str("int"),
            Type::Float => f.write_str("float"),
            Type::Str => f.write_str("string"),
            Type::Path => f.write_str("path"),
            Type::List(t) => write!(f, "list<{t}>"),
        }
    }
}

/// Resolves the static type of a dotted reference during type checking.
pub trait TypeScope {
    /// Type of the value at `path`, e.g. `["params", "n"]`.
    fn lookup_type(&self, path: &[&str]) -> Result<Type, LookupError>;
}

/// Keys are dotted paths such as `"params.n"`.
impl TypeScope for HashMap<String, Type> {
    fn lookup_type(&self, path: &[&str]) -> Result<Type, LookupError> {
        let key = path.join(".");
        self.get(&key).cloned().ok_or_else(|| unknown_reference(&key, self.keys().map(String::as_str)))
    }
}

/// The error a map-backed scope reports for a missing key.
pub(crate) fn unknown_reference<'a>(key: &str, known: impl Iterator<Item = &'a str>) -> LookupError {
    let err = LookupError::new(format!("unknown reference `{key}`"));
    match crate::suggest::closest(key, known) {
        Some(best) => err.with_help(format!("did you mean `{best}`?")),
        None => err,
    }
}

impl Expr {
    /// Infers the static type of the expression, reporting type errors
    /// that are certain regardless of runtime values (`any` defers checks
    /// to evaluation).
    pub fn infer_type(&self, scope: &dyn TypeScope) -> Result<Type, ExprError> {
        infer(self, scope)
    }
}

impl Template {
    /// The type of a single-expression template is that of its expression;
    /// any other template is a `string`, and each embedded expression must
    /// be a scalar.
    pub fn infer_type(&self, scope: &dyn TypeScope) -> Result<Type, ExprError> {
        if let Some(expr) = self.single_expr() {
            return infer(expr, scope);
        }
        for seg in &self.segments {
            if let Segment::Expr(e) = seg {
                let t = infer(e, scope)?;
                if matches!(t, Type::List(_) | Type::Null) {
                    let err = ExprError::type_error(e.span, format!("cannot insert a `{t}` value into a string"));
                    return Err(if t == Type::Null {
                        err.with_help("substitute a default, e.g. `x == null ? '' : x`")
                    } else {
                        err.with_help("use join(list, ' ')")
                    });
                }
            }
        }
        Ok(Type::Str)
    }
}

fn infer(e: &Expr, scope: &dyn TypeScope) -> Result<Type, ExprError> {
    Ok(match &e.kind {
        ExprKind::Literal(v) => v.type_of(),
        ExprKind::List(items) => {
            let mut acc: Option<Type> = None;
            for item in items {
                let t = infer(item, scope)?;
                acc = Some(acc.map_or(t.clone(), |a| a.join(&t)));
            }
            Type::List(Box::new(acc.unwrap_or(Type::Any)))
        }
        ExprKind::Ref(path) => {
            let parts: Vec<&str> = path.iter().map(String::as_str).collect();
            scope.lookup_type(&parts).map_err(|err| err.at(e.span))?
        }
        ExprKind::Index { target, index } => {
            let tt = infer(target, scope)?;
            let it = infer(index, scope)?;
            if !matches!(it, Type::Int | Type::Any) {
                return Err(index_type_error(&it, index.span));
            }
            match tt {
                Type::List(elem) => *elem,
                Type::Str | Type::Path => Type::Str,
                Type::Any => Type::Any,
                other => return Err(not_indexable(&other, target.span)),
            }
        }
        ExprKind::Call { name, args, .. } => {
            let typed = args.iter().map(|a| Ok((infer(a, scope)?, a.span))).collect::<Result<Vec<_>, ExprError>>()?;
            functions::infer_call(name, &typed, e.span)?
        }
        ExprKind::Unary { op, operand } => {
            let t = infer(operand, scope)?;
            match (op, &t) {
                (UnaryOp::Neg, Type::Int | Type::Float | Type::Any) => t,
                (UnaryOp::Not, Type::Bool | Type::Any) => Type::Bool,
                _ => return Err(unary_type_error(*op, &t, e.span)),
            }
        }
        ExprKind::Binary { op, lhs, rhs } => {
            let l = infer(lhs, scope)?;
            let r = infer(rhs, scope)?;
            if matches!(op, BinaryOp::And | BinaryOp::Or) {
                for (t, side) in [(&l, lhs), (&r, rhs)] {
                    if !matches!(t, Type::Bool | Type::Any) {
                        return Err(logic_type_error(*op, t, side.span));
                    }
                }
                return Ok(Type::Bool);
            }
            binary_type(*op, &l, &r).ok_or_else(|| binary_type_error(*op, &l, &r, e.span))?
        }
        ExprKind::Ternary { cond, then, otherwise } => {
            let c = infer(cond, scope)?;
            if !matches!(c, Type::Bool | Type::Any) {
                return Err(condition_type_error(&c, cond.span));
            }
            infer(then, scope)?.join(&infer(otherwise, scope)?)
        }
    })
}

/// Result type of a non-logical binary operator, `None` when the operand
/// types can never work.
fn binary_type(op: BinaryOp, l: &Type, r: &Type) -> Option<Type> {
    use Type::*;
    let num_or_any = |t: &Type| t.is_numeric() || *t == Any;
    match op {
        BinaryOp::Or | BinaryOp::And => Some(Bool),
        BinaryOp::Eq | BinaryOp::Ne => equatable(l, r).then_some(Bool),
        BinaryOp::Lt | BinaryOp::Le | BinaryOp::Gt | BinaryOp::Ge => {
            let str_or_any = |t: &Type| t.is_stringish() || *t == Any;
            let ok = (num_or_any(l) && num_or_any(r)) || (str_or_any(l) && str_or_any(r));
            ok.then_some(Bool)
        }
        BinaryOp::Add => match (l, r) {
            (Str | Path, Str | Path) => Some(Str),
            (List(a), List(b)) => Some(List(Box::new(a.join(b)))),
            (Any, Any | Str | Path | List(_)) | (Str | Path | List(_), Any) => Some(Any),
            _ => numeric_result(op, l, r),
        },
        _ => numeric_result(op, l, r),
    }
}

fn numeric_result(op: BinaryOp, l: &Type, r: &Type) -> Option<Type> {
    use Type::*;
    Some(match (l, r) {
        _ if op == BinaryOp::Div => {
            if !(l.is_numeric() || *l == Any) || !(r.is_numeric() || *r == Any) {
                return None;
            }
            Float
        }
        (Int, Int) => Int,
        (Float, Int | Float | Any) | (Int | Any, Float) => Float,
        (Int | Any, Int | Any) => Any,
        _ => return None,
    })
}

/// `==` on two known, unrelated types is always false, which is almost
/// certainly a mistake worth reporting; `null` may be compared with
/// anything so optional values can be tested.
fn equatable(l: &Type, r: &Type) -> bool {
    match (l, r) {
        (Type::Any | Type::Null, _) | (_, Type::Any | Type::Null) => true,
        (Type::List(a), Type::List(b)) => equatable(a, b),
        _ => (l.is_numeric() && r.is_numeric()) || l.accepts(r),
    }
}

pub(crate) fn binary_type_error(op: BinaryOp, l: &Type, r: &Type, span: Span) -> ExprError {
    let sym = op.symbol();
    match op {
        BinaryOp::Add => {
            let err = ExprError::type_error(span, format!("cannot add `{l}` and `{r}`"));
            if l.is_stringish() || r.is_stringish() {
                err.with_help("convert with `str(x)`, or write a template like `a${{ x }}`")
            } else {
                err
            }
        }
        BinaryOp::Eq | BinaryOp::Ne => {
            ExprError::type_error(span, format!("cannot compare `{l}` and `{r}` with `{sym}`"))
                .with_help("values of different types are never equal")
        }
        BinaryOp::Lt | BinaryOp::Le | BinaryOp::Gt | BinaryOp::Ge => {
            ExprError::type_error(span, format!("cannot compare `{l}` and `{r}` with `{sym}`"))
                .with_help("ordering works on two numbers or two strings")
        }
        _ => ExprError::type_error(span, format!("cannot apply `{sym}` to `{l}` and `{r}`")),
    }
}

pub(crate) fn logic_type_error(op: BinaryOp, t: &Type, span: Span) -> ExprError {
    ExprError::type_error(span, format!("`{}` needs `bool` operands, found `{t}`", op.symbol()))
        .with_help("there is no truthiness; compare explicitly, e.g. `x != 0`")
}

pub(crate) fn unary_type_error(op: UnaryOp, t: &Type, span: Span) -> ExprError {
    match op {
        UnaryOp::Neg => ExprError::type_error(span, format!("cannot negate `{t}`")),
        UnaryOp::Not => ExprError::type_error(span, format!("`!` needs a `bool`, found `{t}`")),
    }
}

pub(crate) fn condition_type_error(t: &Type, span: Span) -> ExprError {
    ExprError::type_error(span, format!("condition of `? :` must be a `bool`, found `{t}`"))
}

pub(crate) fn index_type_error(t: &Type, span: Span) -> ExprError {
    ExprError::type_error(span, format!("index must be an `int`, found `{t}`"))
}

pub(crate) fn not_indexable(t: &Type, span: Span) -> ExprError {
    ExprError::type_error(span, format!("cannot index a value of type `{t}`"))
        .with_help("only lists and strings can be indexed")
}
