//! Runtime values produced by evaluation.

use std::fmt;

use super::error::{ExprError, Span};
use super::parser::MAX_DEPTH;
use super::types::Type;

/// Largest list any operation may produce (`range`, `linspace`, `+`, ...).
pub const MAX_LIST_LEN: usize = 10_000_000;

/// Largest string (in bytes) any operation may produce.
pub const MAX_STRING_LEN: usize = 16 * 1024 * 1024;

/// A value of the expression language.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// The absence of a value.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// A 64-bit signed integer.
    Int(i64),
    /// A 64-bit float (always finite when produced by the evaluator).
    Float(f64),
    /// A string.
    Str(String),
    /// A string known to be a file path; behaves like [`Value::Str`] in
    /// string functions and comparisons.
    Path(String),
    /// A list of values.
    List(Vec<Value>),
}

impl Value {
    /// The static type of this value; a list's element type is the join
    /// of its elements' types (`list<any>` when empty or mixed).
    pub fn type_of(&self) -> Type {
        match self {
            Value::Null => Type::Null,
            Value::Bool(_) => Type::Bool,
            Value::Int(_) => Type::Int,
            Value::Float(_) => Type::Float,
            Value::Str(_) => Type::Str,
            Value::Path(_) => Type::Path,
            Value::List(items) => {
                let mut iter = items.iter().map(Value::type_of);
                let first = iter.next().unwrap_or(Type::Any);
                Type::List(Box::new(iter.fold(first, |acc, t| acc.join(&t))))
            }
        }
    }

    /// The string content of a [`Value::Str`] or [`Value::Path`].
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) | Value::Path(s) => Some(s),
            _ => None,
        }
    }

    /// Converts to JSON (`Path` becomes a string, non-finite floats `null`).
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match self {
            Value::Null => J::Null,
            Value::Bool(b) => J::Bool(*b),
            Value::Int(i) => J::from(*i),
            Value::Float(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
            Value::Str(s) | Value::Path(s) => J::String(s.clone()),
            Value::List(items) => J::Array(items.iter().map(Value::to_json).collect()),
        }
    }

    /// Converts from JSON; objects (and arrays nested deeper than
    /// [`MAX_DEPTH`]) have no counterpart and give `None`. Integers that do
    /// not fit in `i64` become floats.
    pub fn from_json(json: &serde_json::Value) -> Option<Value> {
        from_json_at(json, 0)
    }

    /// Text of a scalar as inserted into a template; lists and null are
    /// refused because there is no single obvious rendering for them.
    pub(crate) fn to_text(&self, span: Span) -> Result<String, ExprError> {
        match self {
            Value::List(_) => {
                Err(ExprError::type_error(span, format!("cannot insert a `{}` value into a string", self.type_of()))
                    .with_help("use join(list, ' ')"))
            }
            Value::Null => Err(ExprError::type_error(span, "cannot insert `null` into a string")
                .with_help("substitute a default, e.g. `x == null ? '' : x`")),
            Value::Str(s) | Value::Path(s) => Ok(s.clone()),
            _ => Ok(self.to_string()),
        }
    }

    /// The language's `==`: numbers compare numerically across int/float,
    /// strings and paths compare by content, lists element-wise, and
    /// values of otherwise different types are simply unequal.
    pub(crate) fn loose_eq(&self, other: &Value) -> bool {
        match (self, other) {
            (Value::Int(a), Value::Float(b)) | (Value::Float(b), Value::Int(a)) => (*a as f64) == *b,
            (Value::List(a), Value::List(b)) => a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.loose_eq(y)),
            (Value::Str(a) | Value::Path(a), Value::Str(b) | Value::Path(b)) => a == b,
            _ => self == other,
        }
    }
}

fn from_json_at(json: &serde_json::Value, depth: usize) -> Option<Value> {
    use serde_json::Value as J;
    Some(match json {
        J::Null => Value::Null,
        J::Bool(b) => Value::Bool(*b),
        J::Number(n) => match n.as_i64() {
            Some(i) => Value::Int(i),
            None => Value::Float(n.as_f64()?),
        },
        J::String(s) => Value::Str(s.clone()),
        J::Array(items) if depth < MAX_DEPTH => {
            Value::List(items.iter().map(|j| from_json_at(j, depth + 1)).collect::<Option<_>>()?)
        }
        J::Array(_) | J::Object(_) => return None,
    })
}

/// Bytes directly owned by `v` (not counting nested lists' contents).
pub(crate) fn shallow_size(v: &Value) -> usize {
    match v {
        Value::Str(s) | Value::Path(s) => s.len(),
        Value::List(items) => items.len().saturating_mul(size_of::<Value>()),
        _ => 0,
    }
}

/// Bytes owned by `v` including nested lists; iterative so that deeply
/// nested values supplied by a scope cannot overflow the stack.
pub(crate) fn deep_size(v: &Value) -> usize {
    let mut total = 0usize;
    let mut stack = vec![v];
    while let Some(v) = stack.pop() {
        total = total.saturating_add(shallow_size(v));
        if let Value::List(items) = v {
            stack.extend(items);
        }
    }
    total
}

/// Formats a float the way templates show it: shortest round-trip digits,
/// always with a `.` or an exponent so it reads back as a float
/// (`1.0`, `0.25`, `1e-7`). Rust's `Debug` for `f64` does exactly this.
pub(crate) fn format_float(f: f64) -> String {
    format!("{f:?}")
}

/// Scalars display as in templates; lists display as list literals
/// (strings quoted), which is only used in messages.
impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => f.write_str("null"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Int(i) => write!(f, "{i}"),
            Value::Float(x) => f.write_str(&format_float(*x)),
            Value::Str(s) | Value::Path(s) => f.write_str(s),
            Value::List(items) => {
                f.write_str("[")?;
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    match item {
                        Value::Str(s) | Value::Path(s) => write!(f, "{s:?}")?,
                        other => write!(f, "{other}")?,
                    }
                }
                f.write_str("]")
            }
        }
    }
}

impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Value::Bool(b)
    }
}

impl From<i64> for Value {
    fn from(i: i64) -> Self {
        Value::Int(i)
    }
}

impl From<f64> for Value {
    fn from(f: f64) -> Self {
        Value::Float(f)
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::Str(s.to_string())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::Str(s)
    }
}

impl From<Vec<Value>> for Value {
    fn from(items: Vec<Value>) -> Self {
        Value::List(items)
    }
}
