//! Built-in pure functions: arity table, static signatures and runtime
//! implementations.

use std::cmp::Ordering;

use super::error::{ExprError, ExprErrorKind, Span};
use super::eval::{check_list_len, check_string_len, compare, string_too_long};
use super::types::Type;
use super::value::{MAX_LIST_LEN, MAX_STRING_LEN, Value, format_float};

/// Name, minimum and maximum (`None` = variadic) argument count, usage.
struct FnSpec {
    name: &'static str,
    min: usize,
    max: Option<usize>,
    usage: &'static str,
}

const fn spec(name: &'static str, min: usize, max: Option<usize>, usage: &'static str) -> FnSpec {
    FnSpec { name, min, max, usage }
}

const FUNCTIONS: &[FnSpec] = &[
    spec("range", 1, Some(3), "`range(end)`, `range(start, end)` or `range(start, end, step)`"),
    spec("linspace", 3, Some(3), "`linspace(start, stop, n)`"),
    spec("len", 1, Some(1), "`len(list_or_string)`"),
    spec("str", 1, Some(1), "`str(x)`"),
    spec("int", 1, Some(1), "`int(x)`"),
    spec("float", 1, Some(1), "`float(x)`"),
    spec("round", 1, Some(1), "`round(x)`"),
    spec("min", 1, None, "`min(a, b, ...)` or `min(list)`"),
    spec("max", 1, None, "`max(a, b, ...)` or `max(list)`"),
    spec("sum", 1, Some(1), "`sum(list)`"),
    spec("join", 2, Some(2), "`join(list, sep)`"),
    spec("basename", 1, Some(1), "`basename(path)`"),
    spec("dirname", 1, Some(1), "`dirname(path)`"),
    spec("stem", 1, Some(1), "`stem(path)`"),
    spec("ext", 1, Some(1), "`ext(path)`"),
    spec("format", 1, None, "`format(fmt, args...)` with `{}`, `{:05}`, `{:.3}`, `{:>8}`, `{:<8}`, `{:^8}`"),
    spec("contains", 2, Some(2), "`contains(list_or_string, x)`"),
    spec("upper", 1, Some(1), "`upper(s)`"),
    spec("lower", 1, Some(1), "`lower(s)`"),
    spec("replace", 3, Some(3), "`replace(s, from, to)`"),
    spec("div", 2, Some(2), "`div(a, b)`"),
    spec("sample_uniform", 4, Some(4), "`sample_uniform(seed, n, low, high)`"),
    spec("sample_loguniform", 4, Some(4), "`sample_loguniform(seed, n, low, high)`"),
    spec("sample_int", 4, Some(4), "`sample_int(seed, n, low, high)` (both ends included)"),
    spec("sample_choice", 3, Some(3), "`sample_choice(seed, n, list)`"),
    spec("format_time", 2, Some(2), "`format_time(point, fmt)` with strftime codes (`'%Y%m%dT%H%M'`)"),
    spec("add_time", 2, Some(2), "`add_time(point, duration)` (`add_time(cycle.point, '-10m')`)"),
];

/// Names of all built-in functions.
pub fn function_names() -> impl Iterator<Item = &'static str> {
    FUNCTIONS.iter().map(|f| f.name)
}

/// Parse-time check that `name` exists and accepts `argc` arguments.
pub(crate) fn check_call(name: &str, name_span: Span, span: Span, argc: usize) -> Result<(), ExprError> {
    let Some(f) = FUNCTIONS.iter().find(|f| f.name == name) else {
        let err = ExprError::new(ExprErrorKind::UnknownFunction, name_span, format!("unknown function `{name}`"));
        return Err(match crate::suggest::closest(name, function_names()) {
            Some(best) => err.with_help(format!("did you mean `{best}`?")),
            None => err.with_help(format!("available functions: {}", function_names().collect::<Vec<_>>().join(", "))),
        });
    };
    if argc >= f.min && f.max.is_none_or(|max| argc <= max) {
        return Ok(());
    }
    let plural = |n: usize| if n == 1 { "argument" } else { "arguments" };
    let expected = match f.max {
        Some(max) if max == f.min => format!("{max} {}", plural(max)),
        Some(max) => format!("{} to {max} arguments", f.min),
        None => format!("at least {} {}", f.min, plural(f.min)),
    };
    Err(ExprError::new(ExprErrorKind::Arity, span, format!("`{name}` takes {expected}, found {argc}"))
        .with_help(format!("usage: {}", f.usage)))
}

fn expects(f: &str, what: &str, found: &Type, span: Span) -> ExprError {
    ExprError::type_error(span, format!("`{f}` expects {what}, found `{found}`"))
}

// ---------------------------------------------------------------------
// Static signatures
// ---------------------------------------------------------------------

/// Infers the result type of a call from its argument types.
pub(crate) fn infer_call(name: &str, args: &[(Type, Span)], span: Span) -> Result<Type, ExprError> {
    use Type::*;
    // Checks that an argument fits `ok` (`any` always fits).
    let want = |i: usize, ok: fn(&Type) -> bool, what: &str| -> Result<(), ExprError> {
        match args.get(i) {
            Some((t, s)) if *t != Any && !ok(t) => Err(expects(name, what, t, *s)),
            _ => Ok(()),
        }
    };
    fn int(t: &Type) -> bool {
        *t == Type::Int
    }
    fn num(t: &Type) -> bool {
        t.is_numeric()
    }
    fn text(t: &Type) -> bool {
        t.is_stringish()
    }
    fn scalar(t: &Type) -> bool {
        !matches!(t, Type::Null | Type::List(_))
    }
    let arg = |i: usize| args.get(i).map_or(Any, |(t, _)| t.clone());
    Ok(match name {
        "range" => {
            for i in 0..args.len() {
                want(i, int, "an `int`")?;
            }
            List(Box::new(Int))
        }
        "linspace" => {
            want(0, num, "a number")?;
            want(1, num, "a number")?;
            want(2, int, "an `int`")?;
            List(Box::new(Float))
        }
        "len" => {
            want(0, |t| matches!(t, List(_) | Str | Path), "a list or string")?;
            Int
        }
        "str" => {
            want(0, scalar, "a scalar")?;
            Str
        }
        "int" | "float" => {
            want(0, |t| num(t) || text(t), "a number or string")?;
            if name == "int" { Int } else { Float }
        }
        "round" => {
            want(0, num, "a number")?;
            Int
        }
        "min" | "max" => {
            let elems: Vec<(Type, Span)> = match args {
                [(List(t), s)] => vec![((**t).clone(), *s)],
                _ => args.to_vec(),
            };
            let mut acc: Option<Type> = None;
            for (t, s) in &elems {
                if !(num(t) || text(t) || *t == Any) {
                    return Err(expects(name, "numbers or strings", t, *s));
                }
                if let Some(a) = &acc
                    && ((a.is_numeric() && text(t)) || (a.is_stringish() && num(t)))
                {
                    return Err(ExprError::type_error(*s, format!("`{name}` cannot compare `{a}` and `{t}`")));
                }
                acc = Some(acc.map_or(t.clone(), |a| a.join(t)));
            }
            acc.unwrap_or(Any)
        }
        "sum" => match arg(0) {
            List(t) if *t == Int => Int,
            List(t) if *t == Float => Float,
            List(t) if *t == Any => Any,
            Any => Any,
            t => {
                let s = args.first().map_or(span, |a| a.1);
                return Err(expects(name, "a list of numbers", &t, s));
            }
        },
        "join" => {
            want(0, |t| matches!(t, List(e) if scalar(e)), "a list of scalars")?;
            want(1, text, "a string separator")?;
            Str
        }
        "basename" | "stem" | "ext" | "upper" | "lower" => {
            want(0, text, "a string or path")?;
            Str
        }
        "dirname" => {
            want(0, text, "a string or path")?;
            Path
        }
        "format" => {
            want(0, text, "a format string")?;
            for i in 1..args.len() {
                want(i, scalar, "scalar arguments")?;
            }
            Str
        }
        "contains" => {
            want(0, |t| matches!(t, List(_) | Str | Path), "a list or string")?;
            if text(&arg(0)) {
                want(1, text, "a string to search for")?;
            }
            Bool
        }
        "replace" => {
            for i in 0..3 {
                want(i, text, "string arguments")?;
            }
            Str
        }
        "div" => {
            want(0, int, "`int` arguments")?;
            want(1, int, "`int` arguments")?;
            Int
        }
        "sample_uniform" | "sample_loguniform" | "sample_int" => {
            want(0, int, "an `int` seed")?;
            want(1, int, "an `int` count")?;
            let bound: fn(&Type) -> bool = if name == "sample_int" { int } else { num };
            let what = if name == "sample_int" { "`int` bounds" } else { "numeric bounds" };
            want(2, bound, what)?;
            want(3, bound, what)?;
            List(Box::new(if name == "sample_int" { Int } else { Float }))
        }
        "sample_choice" => {
            want(0, int, "an `int` seed")?;
            want(1, int, "an `int` count")?;
            match arg(2) {
                List(t) => List(t),
                Any => List(Box::new(Any)),
                t => return Err(expects(name, "a list to choose from", &t, args.get(2).map_or(span, |a| a.1))),
            }
        }
        "format_time" => {
            want(0, text, "an ISO 8601 instant")?;
            want(1, text, "a format string")?;
            Str
        }
        "add_time" => {
            want(0, text, "an ISO 8601 instant")?;
            want(1, |t| text(t) || int(t), "a duration (`'10m'`, `'-1h'`) or seconds")?;
            Str
        }
        _ => return Err(unknown(name, span)),
    })
}

fn unknown(name: &str, span: Span) -> ExprError {
    ExprError::new(ExprErrorKind::UnknownFunction, span, format!("unknown function `{name}`"))
}

// ---------------------------------------------------------------------
// Runtime
// ---------------------------------------------------------------------

/// Typed access to evaluated arguments with uniform error messages.
struct Args<'a> {
    name: &'a str,
    args: Vec<(Value, Span)>,
    span: Span,
}

impl Args<'_> {
    fn span(&self, i: usize) -> Span {
        self.args.get(i).map_or(self.span, |(_, s)| *s)
    }

    fn get(&self, i: usize) -> Result<&Value, ExprError> {
        self.args.get(i).map(|(v, _)| v).ok_or_else(|| {
            ExprError::new(ExprErrorKind::Arity, self.span, format!("`{}` is missing argument {}", self.name, i + 1))
        })
    }

    fn err(&self, i: usize, what: &str) -> ExprError {
        let found = self.get(i).map_or(Type::Any, Value::type_of);
        expects(self.name, what, &found, self.span(i))
    }

    fn int(&self, i: usize) -> Result<i64, ExprError> {
        match self.get(i)? {
            Value::Int(n) => Ok(*n),
            _ => Err(self.err(i, "an `int`")),
        }
    }

    fn num(&self, i: usize) -> Result<f64, ExprError> {
        match self.get(i)? {
            Value::Int(n) => Ok(*n as f64),
            Value::Float(f) => Ok(*f),
            _ => Err(self.err(i, "a number")),
        }
    }

    fn text(&self, i: usize) -> Result<&str, ExprError> {
        self.get(i)?.as_str().ok_or_else(|| self.err(i, "a string or path"))
    }

    fn list(&self, i: usize) -> Result<&[Value], ExprError> {
        match self.get(i)? {
            Value::List(items) => Ok(items),
            _ => Err(self.err(i, "a list")),
        }
    }
}

/// A string literal for messages, shortened so huge inputs stay readable.
fn preview(s: &str) -> String {
    const MAX_CHARS: usize = 40;
    if s.chars().count() <= MAX_CHARS {
        return format!("{s:?}");
    }
    let head: String = s.chars().take(MAX_CHARS).collect();
    format!("{head:?}...")
}

/// A string for messages without Rust quoting (the message wraps it in backticks).
fn preview_raw(s: &str) -> String {
    const MAX_CHARS: usize = 40;
    if s.chars().count() <= MAX_CHARS {
        return s.to_string();
    }
    s.chars().take(MAX_CHARS).collect::<String>() + "..."
}

/// Argument `i` as a UTC instant (`2026-03-01T00:00Z`).
fn instant(a: &Args, i: usize) -> Result<jiff::Timestamp, ExprError> {
    let s = a.get(i)?.as_str().ok_or_else(|| a.err(i, "an ISO 8601 instant"))?;
    crate::units::parse_instant(s).map_err(|e| ExprError::runtime(a.span(i), e.to_string()))
}

fn as_number(v: &Value) -> Option<f64> {
    match v {
        Value::Int(n) => Some(*n as f64),
        Value::Float(f) => Some(*f),
        _ => None,
    }
}

fn float_to_int(f: f64, span: Span) -> Result<i64, ExprError> {
    // i64::MIN is exactly representable; i64::MAX rounds up to 2^63.
    const LIMIT: f64 = 9_223_372_036_854_775_808.0;
    if (-LIMIT..LIMIT).contains(&f) {
        Ok(f as i64)
    } else {
        Err(ExprError::runtime(span, format!("float `{}` is out of range for `int`", format_float(f))))
    }
}

/// Evaluates a call of a built-in on already evaluated arguments.
pub(crate) fn call(name: &str, args: Vec<(Value, Span)>, span: Span) -> Result<Value, ExprError> {
    let a = Args { name, args, span };
    let s0 = a.span(0);
    Ok(match name {
        "range" => range(&a)?,
        "linspace" => {
            let (start, stop, n) = (a.num(0)?, a.num(1)?, a.int(2)?);
            if n < 2 {
                return Err(ExprError::runtime(a.span(2), format!("`linspace` needs at least 2 points, found {n}")));
            }
            let n = usize::try_from(n).unwrap_or(usize::MAX);
            check_list_len(n, span)?;
            let step = (stop - start) / (n - 1) as f64;
            if !step.is_finite() {
                return Err(ExprError::runtime(span, "float overflow in `linspace`"));
            }
            let mut out: Vec<Value> = (0..n - 1).map(|i| Value::Float(start + step * i as f64)).collect();
            // Land exactly on `stop` instead of accumulating rounding error.
            out.push(Value::Float(stop));
            Value::List(out)
        }
        "len" => {
            let n = match a.get(0)? {
                Value::List(items) => items.len(),
                Value::Str(s) | Value::Path(s) => s.chars().count(),
                _ => return Err(a.err(0, "a list or string")),
            };
            Value::Int(i64::try_from(n).unwrap_or(i64::MAX))
        }
        "str" => Value::Str(a.get(0)?.to_text(s0)?),
        "int" => Value::Int(match a.get(0)? {
            Value::Int(n) => *n,
            Value::Float(f) => float_to_int(f.trunc(), s0)?,
            Value::Str(s) | Value::Path(s) => s
                .trim()
                .parse()
                .map_err(|_| ExprError::runtime(s0, format!("cannot convert `{}` to `int`", preview(s))))?,
            _ => return Err(a.err(0, "a number or string")),
        }),
        "float" => Value::Float(match a.get(0)? {
            Value::Int(n) => *n as f64,
            Value::Float(f) => *f,
            Value::Str(s) | Value::Path(s) => s
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|f| f.is_finite())
                .ok_or_else(|| ExprError::runtime(s0, format!("cannot convert `{}` to `float`", preview(s))))?,
            _ => return Err(a.err(0, "a number or string")),
        }),
        "round" => Value::Int(match a.get(0)? {
            Value::Int(n) => *n,
            Value::Float(f) => float_to_int(f.round(), s0)?,
            _ => return Err(a.err(0, "a number")),
        }),
        "min" | "max" => min_max(a)?,
        "sum" => {
            let items = a.list(0)?;
            if items.iter().any(|v| !matches!(v, Value::Int(_) | Value::Float(_))) {
                return Err(a.err(0, "a list of numbers"));
            }
            if items.iter().any(|v| matches!(v, Value::Float(_))) {
                let total: f64 = items.iter().filter_map(as_number).sum();
                if !total.is_finite() {
                    return Err(ExprError::runtime(span, "float overflow in `sum`"));
                }
                Value::Float(total)
            } else {
                let mut total: i64 = 0;
                for item in items {
                    if let Value::Int(n) = item {
                        total = total
                            .checked_add(*n)
                            .ok_or_else(|| ExprError::runtime(span, "integer overflow in `sum`"))?;
                    }
                }
                Value::Int(total)
            }
        }
        "join" => {
            let (items, sep) = (a.list(0)?, a.text(1)?);
            let mut out = String::new();
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(sep);
                }
                out.push_str(&item.to_text(s0)?);
                check_string_len(&out, span)?;
            }
            Value::Str(out)
        }
        "basename" => Value::Str(basename(a.text(0)?).to_string()),
        "dirname" => Value::Path(dirname(a.text(0)?).to_string()),
        "stem" => Value::Str(split_ext(basename(a.text(0)?)).0.to_string()),
        "ext" => Value::Str(split_ext(basename(a.text(0)?)).1.to_string()),
        "format" => Value::Str(format(&a)?),
        "contains" => Value::Bool(match a.get(0)? {
            Value::List(items) => {
                let needle = a.get(1)?;
                items.iter().any(|v| v.loose_eq(needle))
            }
            Value::Str(s) | Value::Path(s) => {
                let needle = a.get(1)?.as_str().ok_or_else(|| a.err(1, "a string to search for"))?;
                s.contains(needle)
            }
            _ => return Err(a.err(0, "a list or string")),
        }),
        "upper" | "lower" => {
            let s = a.text(0)?;
            // Case mapping can grow a string (e.g. `ß` → `SS`), so check after.
            let out = if name == "upper" { s.to_uppercase() } else { s.to_lowercase() };
            check_string_len(&out, span)?;
            Value::Str(out)
        }
        "replace" => {
            let (s, from, to) = (a.text(0)?, a.text(1)?, a.text(2)?);
            if from.is_empty() {
                return Err(ExprError::runtime(a.span(1), "`replace` pattern must not be empty"));
            }
            // Check the size before building the result.
            let count = s.matches(from).count();
            let new_len = (s.len() - count * from.len()).saturating_add(count.saturating_mul(to.len()));
            if new_len > MAX_STRING_LEN {
                return Err(string_too_long(span));
            }
            Value::Str(s.replace(from, to))
        }
        "div" => {
            let (x, y) = (a.int(0)?, a.int(1)?);
            if y == 0 {
                return Err(ExprError::runtime(a.span(1), "division by zero"));
            }
            let q = x.checked_div(y).ok_or_else(|| ExprError::runtime(span, "integer overflow in `div`"))?;
            // Round toward negative infinity, like Python's `//`.
            Value::Int(if x % y != 0 && ((x < 0) != (y < 0)) { q - 1 } else { q })
        }
        "sample_uniform" | "sample_loguniform" | "sample_int" | "sample_choice" => sample(&a)?,
        "format_time" => {
            let t = instant(&a, 0)?;
            let fmt = a.text(1)?;
            let z = t.to_zoned(jiff::tz::TimeZone::UTC);
            let out = jiff::fmt::strtime::format(fmt, &z).map_err(|e| {
                ExprError::runtime(a.span(1), format!("invalid time format `{}`: {e}", preview_raw(fmt)))
                    .with_help("use strftime codes such as `%Y`, `%m`, `%d`, `%H`, `%M`, `%S`, `%j`")
            })?;
            check_string_len(&out, span)?;
            Value::Str(out)
        }
        "add_time" => {
            let t = instant(&a, 0)?;
            let d = match a.get(1)? {
                Value::Int(secs) => jiff::SignedDuration::from_secs(*secs),
                Value::Str(s) | Value::Path(s) => {
                    crate::units::parse_signed_duration(s).map_err(|e| ExprError::runtime(a.span(1), e.to_string()))?
                }
                _ => return Err(a.err(1, "a duration (`'10m'`, `'-1h'`) or seconds")),
            };
            let sum = t
                .checked_add(d)
                .map_err(|_| ExprError::runtime(span, "`add_time` goes beyond the supported range of instants"))?;
            Value::Str(crate::units::format_instant(sum))
        }
        _ => return Err(unknown(name, span)),
    })
}

/// The `i`-th uniform number in [0, 1) of stream `seed` of function `name`: a counter-based
/// generator (blake3 of the function name, seed and index), so each value depends only on
/// its own (seed, index), never on evaluation order, platform or library versions, and
/// `sample_x(seed, n, ...)` is a prefix of `sample_x(seed, n + k, ...)`.
fn unit(name: &str, seed: i64, i: usize) -> f64 {
    let mut h = blake3::Hasher::new();
    h.update(name.as_bytes());
    h.update(&seed.to_le_bytes());
    h.update(&(i as u64).to_le_bytes());
    let b = h.finalize();
    let mut word = [0u8; 8];
    word.copy_from_slice(&b.as_bytes()[..8]);
    // 53 random bits: every double in [0, 1) on the 2^-53 grid, equally likely.
    (u64::from_le_bytes(word) >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// `sample_uniform`, `sample_loguniform`, `sample_int`, `sample_choice`: `n` values drawn
/// reproducibly from `seed` (random search over hyperparameters, random ensembles).
fn sample(a: &Args) -> Result<Value, ExprError> {
    let (seed, n) = (a.int(0)?, a.int(1)?);
    if n < 0 {
        return Err(ExprError::runtime(a.span(1), format!("`{}` count must not be negative, found {n}", a.name)));
    }
    let n = usize::try_from(n).unwrap_or(usize::MAX);
    check_list_len(n, a.span)?;
    let u = |i| unit(a.name, seed, i);
    let items: Vec<Value> = match a.name {
        "sample_uniform" | "sample_loguniform" => {
            let (lo, hi) = (a.num(2)?, a.num(3)?);
            if !(lo.is_finite() && hi.is_finite() && lo < hi) {
                return Err(ExprError::runtime(a.span(2).to(a.span(3)), "bounds must be finite with `low < high`"));
            }
            if a.name == "sample_loguniform" {
                if lo <= 0.0 {
                    return Err(ExprError::runtime(a.span(2), "`sample_loguniform` needs `low > 0`"));
                }
                let (l, h) = (lo.ln(), hi.ln());
                (0..n).map(|i| Value::Float((l + (h - l) * u(i)).exp().clamp(lo, hi))).collect()
            } else {
                (0..n).map(|i| Value::Float((lo + (hi - lo) * u(i)).min(hi))).collect()
            }
        }
        "sample_int" => {
            let (lo, hi) = (a.int(2)?, a.int(3)?);
            if lo > hi {
                return Err(ExprError::runtime(a.span(2).to(a.span(3)), "bounds must satisfy `low <= high`"));
            }
            // Width up to 2^64 fits in i128/f64; floor(u * width) < width since u < 1.
            let width = (i128::from(hi) - i128::from(lo) + 1) as f64;
            (0..n).map(|i| Value::Int((i128::from(lo) + (u(i) * width) as i128).min(i128::from(hi)) as i64)).collect()
        }
        _ => {
            let list = a.list(2)?;
            if list.is_empty() && n > 0 {
                return Err(ExprError::runtime(a.span(2), "`sample_choice` needs a non-empty list"));
            }
            (0..n).map(|i| list[((u(i) * list.len() as f64) as usize).min(list.len() - 1)].clone()).collect()
        }
    };
    Ok(Value::List(items))
}

fn range(a: &Args) -> Result<Value, ExprError> {
    let ints = (0..a.args.len()).map(|i| a.int(i)).collect::<Result<Vec<_>, _>>()?;
    let (start, end, step) = match ints.as_slice() {
        [end] => (0, *end, 1),
        [start, end] => (*start, *end, 1),
        [start, end, step] => (*start, *end, *step),
        _ => return Err(a.err(3, "1 to 3 arguments")),
    };
    if step == 0 {
        return Err(ExprError::runtime(a.span(2), "`range` step must not be zero"));
    }
    // i128 cannot overflow for any i64 inputs.
    let (start, end, step) = (i128::from(start), i128::from(end), i128::from(step));
    let count = if step > 0 {
        (end - start + step - 1).div_euclid(step).max(0)
    } else {
        (start - end - step - 1).div_euclid(-step).max(0)
    };
    if count > MAX_LIST_LEN as i128 {
        return Err(ExprError::limit(a.span, format!("`range` would produce {count} elements (limit {MAX_LIST_LEN})")));
    }
    // Every element lies between start and end, so it fits in i64.
    let items = (0..count).map(|i| Value::Int(i64::try_from(start + i * step).unwrap_or_default())).collect();
    Ok(Value::List(items))
}

fn min_max(a: Args) -> Result<Value, ExprError> {
    let want = if a.name == "min" { Ordering::Less } else { Ordering::Greater };
    let s0 = a.span(0);
    let name = a.name;
    let span = a.span;
    let values: Vec<(Value, Span)> = match a.args.as_slice() {
        [(Value::List(_), _)] => match a.args.into_iter().next() {
            Some((Value::List(items), s)) => items.into_iter().map(|v| (v, s)).collect(),
            _ => Vec::new(),
        },
        _ => a.args,
    };
    let mut best: Option<Value> = None;
    for (v, s) in values {
        if !matches!(v, Value::Int(_) | Value::Float(_) | Value::Str(_) | Value::Path(_)) {
            return Err(expects(name, "numbers or strings", &v.type_of(), s));
        }
        best = Some(match best {
            None => v,
            Some(b) => match compare(&v, &b) {
                Ok(Some(o)) if o == want => v,
                Ok(_) => b,
                Err(()) => {
                    return Err(ExprError::type_error(
                        s,
                        format!("`{name}` cannot compare `{}` and `{}`", b.type_of(), v.type_of()),
                    ));
                }
            },
        });
    }
    best.ok_or_else(|| ExprError::runtime(s0.to(span), format!("`{name}` of an empty list")))
}

/// POSIX `basename`: last component, ignoring trailing slashes.
fn basename(p: &str) -> &str {
    let t = p.trim_end_matches('/');
    if t.is_empty() {
        return if p.is_empty() { "" } else { "/" };
    }
    t.rsplit('/').next().unwrap_or(t)
}

/// POSIX `dirname`: everything before the last component, `.` if none.
fn dirname(p: &str) -> &str {
    let t = p.trim_end_matches('/');
    if t.is_empty() {
        return if p.starts_with('/') { "/" } else { "." };
    }
    match t.rfind('/') {
        None => ".",
        Some(i) => match t.get(..i).unwrap_or("").trim_end_matches('/') {
            "" => "/",
            d => d,
        },
    }
}

/// Splits a file name at its last `.` into (stem, extension without dot);
/// a leading dot (`.bashrc`) does not start an extension.
fn split_ext(name: &str) -> (&str, &str) {
    match name.rfind('.') {
        Some(i) if i > 0 => (name.get(..i).unwrap_or(name), name.get(i + 1..).unwrap_or("")),
        _ => (name, ""),
    }
}

/// Largest accepted `{:.N}` precision; beyond this it is surely a mistake.
const MAX_PRECISION: usize = 1024;

/// A parsed `{:...}` placeholder spec.
#[derive(Default)]
struct FormatSpec {
    align: Option<char>,
    zero: bool,
    width: usize,
    precision: Option<usize>,
}

fn parse_spec(spec: &str) -> Option<FormatSpec> {
    let mut out = FormatSpec::default();
    if spec.is_empty() {
        return Some(out);
    }
    let mut rest = spec.strip_prefix(':')?;
    if let Some(c @ ('<' | '>' | '^')) = rest.chars().next() {
        out.align = Some(c);
        rest = rest.get(1..)?;
    }
    if let Some(r) = rest.strip_prefix('0') {
        out.zero = true;
        rest = r;
    }
    let digits = |s: &str| s.bytes().take_while(u8::is_ascii_digit).count();
    let n = digits(rest);
    if n > 0 {
        out.width = rest.get(..n)?.parse().ok()?;
        rest = rest.get(n..)?;
    }
    if let Some(r) = rest.strip_prefix('.') {
        let n = digits(r);
        if n == 0 {
            return None;
        }
        out.precision = Some(r.get(..n)?.parse().ok()?);
        rest = r.get(n..)?;
    }
    rest.is_empty().then_some(out)
}

fn format(a: &Args) -> Result<String, ExprError> {
    let fmt = a.text(0)?;
    let fspan = a.span(0);
    let mut out = String::new();
    let mut next_arg = 1;
    let mut chars = fmt.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match c {
            '{' if chars.peek().is_some_and(|(_, c)| *c == '{') => {
                chars.next();
                out.push('{');
            }
            '}' if chars.peek().is_some_and(|(_, c)| *c == '}') => {
                chars.next();
                out.push('}');
            }
            '}' => {
                return Err(ExprError::runtime(fspan, "unmatched `}` in format string")
                    .with_help("write `}}` for a literal `}`"));
            }
            '{' => {
                let body_start = i + 1;
                let Some((close, _)) = chars.find(|(_, c)| *c == '}') else {
                    return Err(ExprError::runtime(fspan, "unclosed `{` in format string")
                        .with_help("write `{{` for a literal `{`"));
                };
                let raw = fmt.get(body_start..close).unwrap_or("");
                let Some(spec) = parse_spec(raw) else {
                    return Err(ExprError::runtime(fspan, format!("unsupported format placeholder `{{{raw}}}`"))
                        .with_help("use `{}`, `{:05}`, `{:.3}`, `{:>8}` or `{:<8}`"));
                };
                let Some((value, vspan)) = a.args.get(next_arg) else {
                    return Err(ExprError::runtime(fspan, "format string has more placeholders than arguments"));
                };
                next_arg += 1;
                render(&mut out, value, &spec, *vspan)?;
            }
            _ => out.push(c),
        }
        check_string_len(&out, a.span)?;
    }
    if let Some((_, extra)) = a.args.get(next_arg) {
        return Err(ExprError::runtime(
            *extra,
            format!("`format` got {} arguments but the format string uses {}", a.args.len() - 1, next_arg - 1),
        ));
    }
    Ok(out)
}

fn render(out: &mut String, value: &Value, spec: &FormatSpec, span: Span) -> Result<(), ExprError> {
    let numeric = matches!(value, Value::Int(_) | Value::Float(_));
    if spec.width > MAX_STRING_LEN || spec.precision.is_some_and(|p| p > MAX_PRECISION) {
        return Err(ExprError::limit(span, "format width or precision is too large"));
    }
    let body = match (value, spec.precision) {
        (Value::Int(n), Some(p)) => format!("{:.p$}", *n as f64),
        (Value::Float(f), Some(p)) => format!("{f:.p$}"),
        (_, Some(_)) => {
            return Err(ExprError::type_error(span, format!("precision needs a number, found `{}`", value.type_of())));
        }
        (v, None) => v.to_text(span)?,
    };
    if spec.zero && !numeric {
        return Err(ExprError::type_error(span, format!("zero padding needs a number, found `{}`", value.type_of())));
    }
    let pad = spec.width.saturating_sub(body.chars().count());
    if spec.zero {
        // Zeros go between the sign and the digits: `-0042`.
        let (sign, digits) = match body.strip_prefix('-') {
            Some(d) => ("-", d),
            None => ("", body.as_str()),
        };
        out.push_str(sign);
        out.extend(std::iter::repeat_n('0', pad));
        out.push_str(digits);
        return Ok(());
    }
    let align = spec.align.unwrap_or(if numeric { '>' } else { '<' });
    let (left, right) = match align {
        '<' => (0, pad),
        '^' => (pad / 2, pad - pad / 2),
        _ => (pad, 0),
    };
    out.extend(std::iter::repeat_n(' ', left));
    out.push_str(&body);
    out.extend(std::iter::repeat_n(' ', right));
    Ok(())
}
