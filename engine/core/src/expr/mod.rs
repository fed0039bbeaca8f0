//! The twinflow expression language (v1).
//!
//! Workflow YAML strings may embed `${{ expr }}` expressions. Expressions
//! are side-effect free, statically typed where types are known, and
//! evaluated in Rust (never by a shell).
//!
//! # Templates
//!
//! A template is a string with zero or more `${{ expr }}` segments
//! ([`parse_template`]). `$${{` is an escape producing a literal `${{`; an
//! unterminated `${{` is an error.
//!
//! * A template that is exactly one expression (whitespace allowed inside
//!   the braces, nothing outside) evaluates to the expression's typed
//!   value: `"${{ range(3) }}"` is a `list<int>`.
//! * Otherwise the pieces are concatenated into a `string`. Values are
//!   displayed as: ints plainly, floats with the shortest round-trip digits
//!   but always with a `.` or exponent (`1.0`, `0.25`, `1e-7`), bools as
//!   `true`/`false`, strings and paths raw. A list or `null` inside a larger
//!   string is a type error (use `join(list, ' ')`).
//!
//! All spans are byte offsets relative to the template (or expression)
//! source, so callers add the offset of the YAML scalar themselves.
//!
//! # Grammar
//!
//! ```text
//! template   = { TEXT | "$${{" | "${{" expr "}}" } ;
//! expr       = or [ "?" expr ":" expr ] ;          (* right-associative *)
//! or         = and { "||" and } ;
//! and        = equality { "&&" equality } ;
//! equality   = comparison [ ( "==" | "!=" ) comparison ] ;   (* no chaining *)
//! comparison = additive [ ( "<" | "<=" | ">" | ">=" ) additive ] ;
//! additive   = multiplicative { ( "+" | "-" ) multiplicative } ;
//! multiplicative = unary { ( "*" | "/" | "%" ) unary } ;
//! unary      = ( "-" | "!" ) unary | postfix ;
//! postfix    = primary { "[" expr "]" } ;
//! primary    = INT | FLOAT | STRING | "true" | "false" | "null"
//!            | "[" [ expr { "," expr } [ "," ] ] "]"
//!            | NAME "(" [ expr { "," expr } [ "," ] ] ")"
//!            | NAME { "." SEGMENT }
//!            | "(" expr ")" ;
//! NAME       = [A-Za-z_][A-Za-z0-9_]* ;
//! SEGMENT    = [A-Za-z_][A-Za-z0-9_-]* ;   (* not ending in "-" *)
//! INT        = DIGIT { DIGIT | "_" } ;      (* 1_000 *)
//! FLOAT      = INT "." INT [ EXP ] | INT EXP ;   EXP = ("e"|"E") ["+"|"-"] INT ;
//! STRING     = "'" ... "'" | '"' ... '"' ;  (* escapes \\ \' \" \n \t *)
//! ```
//!
//! Floats need a digit on both sides of the point (`0.5`, not `.5` or
//! `5.`). `true`, `false` and `null` are keywords except after a `.`.
//!
//! **Hyphens.** Path segments after a `.` may contain hyphens so step
//! names like `steps.flood-sim.out` work; the first name never does.
//! Consequently `params.n-1` is the reference `params.n-1`: write
//! `params.n - 1` with spaces for subtraction.
//!
//! # References
//!
//! A reference is the maximal dotted path (`params.n`, `inputs.dem`,
//! `steps.mesh.out.grid`, `in.grid`, `out.result`, `scatter.rain`,
//! `run.id`, `step.name`, `member.index`, ...). The whole path is handed
//! to the [`Scope`] (or [`TypeScope`] for type checking), which decides
//! what it means; lookup failures are reported at the reference's span.
//! [`Expr::references`] / [`Template::references`] list them in source
//! order for dependency analysis.
//!
//! # Semantics
//!
//! * Precedence, low to high: `? :`, `||`, `&&`, `== !=`, `< <= > >=`,
//!   `+ -`, `* / %`, unary `- !`, postfix indexing and calls.
//! * `+` adds numbers, concatenates strings (a path plus a string is a
//!   string) and concatenates lists.
//! * Int op int stays int with checked arithmetic (overflow is an error),
//!   except `/`, which always yields a float (`7 / 2 == 3.5`); use
//!   `div(a, b)` for floored integer division. `%` is the floored modulo
//!   (the result has the divisor's sign, like Python). Division or modulo
//!   by zero is an error. Mixing int and float gives float.
//! * `< <= > >=` order numbers (int and float mix) and strings
//!   (lexicographically); bools only support `==`/`!=`.
//! * At runtime `==` between unrelated types is simply `false`; the
//!   static checker rejects it when both types are known and incompatible
//!   (comparing with `null` is always allowed).
//! * `&&`, `||`, `!` and the ternary condition need a `bool` (there is no
//!   truthiness). `&&`, `||` and `? :` short-circuit, so
//!   `false && 1 / 0 > 0` is fine.
//! * `x[i]` indexes lists and strings (by character); negative indices
//!   count from the end; out of range is an error.
//!
//! # Functions
//!
//! `range(end)`, `range(start, end)`, `range(start, end, step)` (ints,
//! step ≠ 0); `linspace(a, b, n)` (n ≥ 2 floats from `a` to `b`);
//! `len(x)` (list length or number of characters); `str(x)` (scalars
//! only, displayed as in templates; a path becomes a string); `int(x)`
//! (floats truncate toward zero, strings are parsed); `float(x)`;
//! `round(x)` (half away from zero, gives an int); `min(...)`/`max(...)`
//! (several arguments or one list); `sum(list)`; `join(list, sep)`;
//! `basename(p)`, `dirname(p)` (POSIX semantics; `dirname` gives a path);
//! `stem(p)` (file name without its last extension) and `ext(p)` (last
//! extension without the dot; a leading dot as in `.bashrc` is not an
//! extension); `format(fmt, args...)` with `{}`, `{:05}`, `{:.3}`,
//! `{:>8}`, `{:<8}`, `{:^8}` and `{{`/`}}`; `contains(list_or_string, x)`;
//! `upper(s)`, `lower(s)`, `replace(s, from, to)`; `div(a, b)`. Unknown
//! names and wrong argument counts are reported when parsing.
//!
//! Time, for the points of cycling workflows (ISO 8601 instants in UTC such
//! as `2026-03-01T00:00Z`): `format_time(point, fmt)` formats with strftime
//! codes (`format_time(cycle.point, '%Y%m%dT%H%M')`); `add_time(point, d)`
//! adds a signed duration (`'-10m'`, `'1h'`, or seconds as an int) and gives
//! the instant as `YYYY-MM-DDTHH:MM:SSZ`.
//!
//! Random samples for random searches and ensembles, reproducible from
//! their seed: `sample_uniform(seed, n, low, high)` (floats in
//! `[low, high)`), `sample_loguniform(seed, n, low, high)` (`low > 0`),
//! `sample_int(seed, n, low, high)` (both ends included) and
//! `sample_choice(seed, n, list)` (with replacement). Value `i` depends
//! only on (function, seed, i): a counter-based generator (blake3), so
//! results never change with the platform or the order of evaluation, and
//! a longer sample extends a shorter one. Use a different seed per axis
//! (`params.seed + 1`) so axes are independent.
//!
//! # Limits
//!
//! Parsing and evaluation never panic on any input. Sources are limited
//! to [`MAX_SOURCE_LEN`] bytes and nesting to [`MAX_DEPTH`] levels
//! (operator chains count: `a + b + c` nests 3 deep). Lists are limited to
//! [`MAX_LIST_LEN`] elements, strings to [`MAX_STRING_LEN`] bytes, and one
//! evaluation to [`MAX_EVAL_BYTES`] of allocated lists and strings.

mod ast;
mod error;
mod eval;
mod functions;
mod lexer;
mod parser;
#[cfg(test)]
mod tests;
mod types;
mod value;

pub use ast::{BinaryOp, Expr, ExprKind, Reference, Segment, Template, UnaryOp};
pub use error::{ExprError, ExprErrorKind, LookupError, Span};
pub use eval::{MAX_EVAL_BYTES, Scope};
pub use functions::function_names;
pub use parser::{MAX_DEPTH, MAX_SOURCE_LEN, parse_expr, parse_template};
pub use types::{Type, TypeScope};
pub use value::{MAX_LIST_LEN, MAX_STRING_LEN, Value};
