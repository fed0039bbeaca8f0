//! Unit tests for the expression language.

use std::collections::HashMap;

use super::*;

fn scope() -> HashMap<String, Value> {
    let mut s = HashMap::new();
    s.insert("params.n".into(), Value::Int(4));
    s.insert("params.x".into(), Value::Float(2.5));
    s.insert("params.name".into(), Value::from("mesh"));
    s.insert("params.flag".into(), Value::Bool(true));
    s.insert("params.none".into(), Value::Null);
    s.insert("params.list".into(), Value::List(vec![Value::Int(1), Value::Int(2), Value::Int(3)]));
    s.insert("params.n-1".into(), Value::Int(99));
    s.insert("inputs.dem".into(), Value::Path("/data/dem.tif".into()));
    s.insert("steps.flood-sim.out.grid".into(), Value::Path("out/grid.nc".into()));
    s.insert("run.id".into(), Value::from("r1"));
    s.insert("member.index".into(), Value::Int(3));
    s
}

fn type_scope() -> HashMap<String, Type> {
    scope().into_iter().map(|(k, v)| (k, v.type_of())).chain([("params.any".to_string(), Type::Any)]).collect()
}

/// Parses and evaluates, panicking with the error on failure.
fn ev(src: &str) -> Value {
    let expr = parse_expr(src).unwrap_or_else(|e| panic!("parse {src:?}: {e:?}"));
    expr.eval(&scope()).unwrap_or_else(|e| panic!("eval {src:?}: {e:?}"))
}

/// The parse or evaluation error of `src`.
fn err(src: &str) -> ExprError {
    match parse_expr(src) {
        Err(e) => e,
        Ok(expr) => match expr.eval(&scope()) {
            Err(e) => e,
            Ok(v) => panic!("{src:?} unexpectedly evaluated to {v:?}"),
        },
    }
}

fn ty(src: &str) -> Result<Type, ExprError> {
    parse_expr(src).unwrap_or_else(|e| panic!("parse {src:?}: {e:?}")).infer_type(&type_scope())
}

fn tpl(src: &str) -> Result<Value, ExprError> {
    parse_template(src)?.eval(&scope())
}

/// Span of the first occurrence of `needle` in `src`.
fn sp(src: &str, needle: &str) -> Span {
    let start = src.find(needle).expect("needle in source");
    Span::new(start, start + needle.len())
}

fn s(text: &str) -> Value {
    Value::from(text)
}

fn ints(items: &[i64]) -> Value {
    Value::List(items.iter().map(|&i| Value::Int(i)).collect())
}

fn floats(items: &[f64]) -> Value {
    Value::List(items.iter().map(|&f| Value::Float(f)).collect())
}

// ----------------------------------------------------------------- literals

#[test]
fn integer_literals() {
    assert_eq!(ev("1_000"), Value::Int(1000));
    assert_eq!(ev("0"), Value::Int(0));
    assert_eq!(ev("-9223372036854775808"), Value::Int(i64::MIN));
    let e = err("9223372036854775808");
    assert_eq!(e.message, "integer literal is too large");
    assert_eq!(e.span, Span::new(0, 19));
    assert_eq!(err("99999999999999999999").kind, ExprErrorKind::Syntax);
}

#[test]
fn float_literals() {
    assert_eq!(ev("1.5"), Value::Float(1.5));
    assert_eq!(ev("1e-3"), Value::Float(0.001));
    assert_eq!(ev("2.5E2"), Value::Float(250.0));
    assert_eq!(ev("1_0.2_5"), Value::Float(10.25));
}

#[test]
fn malformed_numbers_are_rejected() {
    let e = err(".5");
    assert_eq!(e.message, "expected an expression, found `.`");
    assert_eq!(e.help.as_deref(), Some("write a leading zero, e.g. `0.5`"));
    let e = err("1. + 2");
    assert_eq!(e.message, "invalid number literal `1.`");
    assert_eq!(e.span, Span::new(0, 2));
    assert_eq!(err("1e").message, "invalid number literal `1e`");
    assert_eq!(err("1_").message, "invalid number literal `1_`");
    assert_eq!(err("3abc").message, "invalid number literal `3abc`");
    assert_eq!(err("1e999").message, "float literal is out of range");
}

#[test]
fn string_literals_and_escapes() {
    assert_eq!(ev(r"'it\'s'"), s("it's"));
    assert_eq!(ev(r#""a\"b\\c\n\t""#), s("a\"b\\c\n\t"));
    assert_eq!(ev(r#"'say "hi"'"#), s("say \"hi\""));
    assert_eq!(ev("'héllo'"), s("héllo"));
}

#[test]
fn bad_escape_and_unterminated_string() {
    let src = r"'a\qb'";
    let e = err(src);
    assert_eq!(e.message, r"unknown escape sequence `\q`");
    assert_eq!(e.span, Span::new(2, 4));
    let e = err("1 + 'abc");
    assert_eq!(e.message, "unterminated string literal");
    assert_eq!(e.span, Span::new(4, 8));
}

#[test]
fn keywords_and_lists() {
    assert_eq!(ev("true"), Value::Bool(true));
    assert_eq!(ev("null"), Value::Null);
    assert_eq!(ev("[]"), Value::List(vec![]));
    assert_eq!(ev("[1, 'a', [true],]"), Value::List(vec![Value::Int(1), s("a"), Value::List(vec![Value::Bool(true)])]));
}

// ---------------------------------------------------------------- operators

#[test]
fn arithmetic_precedence_and_associativity() {
    assert_eq!(ev("1 + 2 * 3"), Value::Int(7));
    assert_eq!(ev("(1 + 2) * 3"), Value::Int(9));
    assert_eq!(ev("10 - 4 - 3"), Value::Int(3));
    assert_eq!(ev("2 * 3 % 4"), Value::Int(2));
    assert_eq!(ev("-2 * 3"), Value::Int(-6));
    assert_eq!(ev("- -2"), Value::Int(2));
    assert_eq!(ev("-params.list[0]"), Value::Int(-1));
}

#[test]
fn logical_precedence() {
    assert_eq!(ev("true || false && false"), Value::Bool(true));
    assert_eq!(ev("!false && false"), Value::Bool(false));
    assert_eq!(ev("1 < 2 == 2 < 3"), Value::Bool(true));
    assert_eq!(ev("1 + 1 == 2 && 'a' != 'b'"), Value::Bool(true));
}

#[test]
fn ternary_is_lowest_and_right_associative() {
    assert_eq!(ev("1 > 2 ? 'a' : 'b'"), s("b"));
    assert_eq!(ev("false ? 1 : true ? 2 : 3"), Value::Int(2));
    assert_eq!(ev("true || false ? 1 : 2"), Value::Int(1));
    assert_eq!(ev("true ? false ? 1 : 2 : 3"), Value::Int(2));
    let e = err("1 ? 2 : 3");
    assert_eq!(e.message, "condition of `? :` must be a `bool`, found `int`");
    assert_eq!(e.span, Span::new(0, 1));
}

#[test]
fn chained_comparisons_are_rejected() {
    let e = err("1 < 2 < 3");
    assert_eq!(e.kind, ExprErrorKind::Syntax);
    assert_eq!(e.message, "comparison operators cannot be chained");
    assert_eq!(e.span, Span::new(0, 7));
    assert_eq!(err("1 == 1 != true").kind, ExprErrorKind::Syntax);
}

#[test]
fn division_is_float_and_div_floors() {
    assert_eq!(ev("7 / 2"), Value::Float(3.5));
    assert_eq!(ev("6 / 3"), Value::Float(2.0));
    assert_eq!(ev("div(7, 2)"), Value::Int(3));
    assert_eq!(ev("div(-7, 2)"), Value::Int(-4));
    assert_eq!(ev("div(7, -2)"), Value::Int(-4));
    assert_eq!(ev("div(-6, 3)"), Value::Int(-2));
}

#[test]
fn modulo_is_floored() {
    assert_eq!(ev("7 % 3"), Value::Int(1));
    assert_eq!(ev("-7 % 3"), Value::Int(2));
    assert_eq!(ev("7 % -3"), Value::Int(-2));
    assert_eq!(ev("7.5 % 2"), Value::Float(1.5));
    assert_eq!(ev("-9223372036854775808 % -1"), Value::Int(0));
}

#[test]
fn division_by_zero_errors() {
    for src in ["1 / 0", "5 % 0", "1.5 / 0.0", "2 % 0.0"] {
        let e = err(src);
        assert_eq!(e.message, "division by zero", "{src}");
        assert_eq!(e.kind, ExprErrorKind::Runtime);
        assert_eq!(e.span, Span::new(0, src.len()), "{src}");
    }
    let src = "div(1, 0)";
    assert_eq!(err(src).span, sp(src, "0"));
}

#[test]
fn integer_overflow_is_an_error() {
    let e = err("9223372036854775807 + 1");
    assert_eq!(e.message, "integer overflow in `+`");
    assert_eq!(e.span, Span::new(0, 23));
    assert_eq!(err("4611686018427387904 * 2").message, "integer overflow in `*`");
    assert_eq!(err("-9223372036854775807 - 2").message, "integer overflow in `-`");
    assert_eq!(err("-(-9223372036854775807 - 1)").message, "integer overflow in `-`");
    assert_eq!(err("div(-9223372036854775808, -1)").message, "integer overflow in `div`");
    assert_eq!(err("1e308 * 10").message, "float overflow in `*`");
}

#[test]
fn mixed_numbers_and_concatenation() {
    assert_eq!(ev("1 + 0.5"), Value::Float(1.5));
    assert_eq!(ev("2 * 1.5"), Value::Float(3.0));
    assert_eq!(ev("'a' + 'b'"), s("ab"));
    assert_eq!(ev("inputs.dem + '.bak'"), s("/data/dem.tif.bak"));
    assert_eq!(ev("[1, 2,] + [3]"), ints(&[1, 2, 3]));
}

#[test]
fn operator_type_errors() {
    let src = "params.n + 'a'";
    let e = err(src);
    assert_eq!(e.kind, ExprErrorKind::Type);
    assert_eq!(e.message, "cannot add `int` and `string`");
    assert_eq!(e.span, Span::new(0, src.len()));
    assert_eq!(err("'a' * 2").message, "cannot apply `*` to `string` and `int`");
    assert_eq!(err("-'a'").message, "cannot negate `string`");
    assert_eq!(err("!1").message, "`!` needs a `bool`, found `int`");
    assert_eq!(err("[1] - [1]").message, "cannot apply `-` to `list<int>` and `list<int>`");
}

#[test]
fn comparisons() {
    assert_eq!(ev("'abc' < 'abd'"), Value::Bool(true));
    assert_eq!(ev("1 < 1.5"), Value::Bool(true));
    assert_eq!(ev("2.0 >= 2"), Value::Bool(true));
    assert_eq!(ev("inputs.dem > '/a'"), Value::Bool(true));
    assert_eq!(ev("true == true"), Value::Bool(true));
    let e = err("true < false");
    assert_eq!(e.message, "cannot compare `bool` and `bool` with `<`");
    assert_eq!(e.kind, ExprErrorKind::Type);
}

#[test]
fn equality_between_types_is_false_at_runtime() {
    assert_eq!(ev("1 == 'a'"), Value::Bool(false));
    assert_eq!(ev("1 != 'a'"), Value::Bool(true));
    assert_eq!(ev("1 == 1.0"), Value::Bool(true));
    assert_eq!(ev("[1, 2] == [1, 2.0]"), Value::Bool(true));
    assert_eq!(ev("null == null"), Value::Bool(true));
    assert_eq!(ev("params.none == null"), Value::Bool(true));
    assert_eq!(ev("inputs.dem == '/data/dem.tif'"), Value::Bool(true));
}

#[test]
fn logic_requires_bools() {
    let src = "params.n && true";
    let e = err(src);
    assert_eq!(e.message, "`&&` needs `bool` operands, found `int`");
    assert_eq!(e.span, sp(src, "params.n"));
    let src = "false || 'yes'";
    assert_eq!(err(src).span, sp(src, "'yes'"));
}

#[test]
fn short_circuit_evaluation() {
    assert_eq!(ev("false && (1 / 0 > 0)"), Value::Bool(false));
    assert_eq!(ev("true || (1 / 0 > 0)"), Value::Bool(true));
    assert_eq!(ev("true ? 1 : 1 / 0"), Value::Int(1));
    assert_eq!(ev("false ? missing.ref : 2"), Value::Int(2));
    assert_eq!(err("true && (1 / 0 > 0)").message, "division by zero");
}

#[test]
fn indexing_lists_and_strings() {
    assert_eq!(ev("[10, 20, 30][0]"), Value::Int(10));
    assert_eq!(ev("[10, 20, 30][-1]"), Value::Int(30));
    assert_eq!(ev("params.list[-3]"), Value::Int(1));
    assert_eq!(ev("'héllo'[1]"), s("é"));
    assert_eq!(ev("inputs.dem[0]"), s("/"));
    assert_eq!(ev("[[1, 2], [3]][0][1]"), Value::Int(2));
}

#[test]
fn indexing_errors() {
    let src = "params.list[3]";
    let e = err(src);
    assert_eq!(e.message, "index 3 is out of range for a list of length 3");
    assert_eq!(e.span, Span::new(12, 13));
    assert_eq!(err("'ab'[-3]").message, "index -3 is out of range for a string of length 2");
    let src = "[1][1.5]";
    let e = err(src);
    assert_eq!(e.message, "index must be an `int`, found `float`");
    assert_eq!(e.span, sp(src, "1.5"));
    assert_eq!(err("5[0]").message, "cannot index a value of type `int`");
}

// --------------------------------------------------------------- references

#[test]
fn dotted_references_with_hyphens() {
    assert_eq!(ev("steps.flood-sim.out.grid"), Value::Path("out/grid.nc".into()));
    assert_eq!(ev("member.index * 2"), Value::Int(6));
    // Hyphens are part of a dotted segment; spaces make it a subtraction.
    assert_eq!(ev("params.n-1"), Value::Int(99));
    assert_eq!(ev("params.n - 1"), Value::Int(3));
    assert_eq!(ev("params.n -1"), Value::Int(3));
    assert_eq!(ev("params.n- 1"), Value::Int(3));
    let refs = parse_expr("a-b").expect("parses").references();
    let paths: Vec<_> = refs.iter().map(|r| r.path.join(".")).collect();
    assert_eq!(paths, ["a", "b"]);
}

#[test]
fn keywords_are_names_after_a_dot() {
    let e = parse_expr("params.null").expect("parses");
    assert_eq!(e.kind, ExprKind::Ref(vec!["params".into(), "null".into()]));
}

#[test]
fn references_in_source_order() {
    let src = "max(params.a, b.c) + (run.ok ? steps.s.out.y : [inputs.z][0])";
    let refs = parse_expr(src).expect("parses").references();
    let paths: Vec<_> = refs.iter().map(|r| r.path.join(".")).collect();
    assert_eq!(paths, ["params.a", "b.c", "run.ok", "steps.s.out.y", "inputs.z"]);
    assert_eq!(refs[3].span, sp(src, "steps.s.out.y"));
    assert_eq!(refs[3].path, ["steps", "s", "out", "y"]);
}

#[test]
fn template_references_use_template_offsets() {
    let src = "in=${{ inputs.dem }} n=${{ params.n + member.index }}";
    let refs = parse_template(src).expect("parses").references();
    assert_eq!(refs.len(), 3);
    assert_eq!(refs[0].span, sp(src, "inputs.dem"));
    assert_eq!(refs[2].span, sp(src, "member.index"));
}

#[test]
fn unknown_reference_maps_lookup_error() {
    let src = "1 + params.nn";
    let e = err(src);
    assert_eq!(e.kind, ExprErrorKind::Reference);
    assert_eq!(e.message, "unknown reference `params.nn`");
    assert_eq!(e.help.as_deref(), Some("did you mean `params.n`?"));
    assert_eq!(e.span, sp(src, "params.nn"));
}

#[test]
fn custom_scope_receives_whole_path() {
    struct Echo;
    impl Scope for Echo {
        fn lookup(&self, path: &[&str]) -> Result<Value, LookupError> {
            match path {
                ["steps", step, "out", name] => Ok(Value::Path(format!("{step}/{name}"))),
                _ => Err(LookupError::new("nope").with_help("try steps")),
            }
        }
    }
    let e = parse_expr("steps.mesh.out.grid").expect("parses");
    assert_eq!(e.eval(&Echo), Ok(Value::Path("mesh/grid".into())));
    let e = parse_expr("params.x").expect("parses").eval(&Echo).unwrap_err();
    assert_eq!((e.message.as_str(), e.help.as_deref()), ("nope", Some("try steps")));
    assert_eq!(e.span, Span::new(0, 8));
}

#[test]
fn syntax_errors() {
    let e = err("1 2");
    assert_eq!(e.message, "unexpected integer `2` after expression");
    assert_eq!(e.span, Span::new(2, 3));
    let e = err("a.0");
    assert_eq!(e.message, "expected a name after `.`, found integer `0`");
    assert_eq!(e.help.as_deref(), Some("use `list[0]` to index a list"));
    assert_eq!(err("a = 1").help.as_deref(), Some("use `==` to compare values"));
    assert_eq!(err("(1 + 2").message, "expected `)` to close `(`, found end of expression");
    assert_eq!(err("[1 2]").message, "expected `,` or `]`, found integer `2`");
    assert_eq!(err("").message, "expected an expression, found end of expression");
    assert_eq!(err("a }} b").message, "unexpected `}}`");
    let e = err("params.f(1)");
    assert_eq!(e.message, "`params.f` is not a function");
}

#[test]
fn unexpected_characters() {
    let e = err("1 @ 2");
    assert_eq!(e.message, "unexpected character `@`");
    assert_eq!(e.span, Span::new(2, 3));
    assert_eq!(err("a & b").help.as_deref(), Some("use `&&` for logical and"));
    assert_eq!(err("1 \u{0} 2").message, "unexpected character `\\0`");
    // Multi-byte characters get a span covering the whole character.
    let e = err("x + é");
    assert_eq!(e.span, Span::new(4, 6));
}

#[test]
fn template_segments_keep_source_spans() {
    let src = "a$${{b ${{ params.n }}";
    let t = parse_template(src).expect("parses");
    match t.segments() {
        [Segment::Text { text, span }, Segment::Expr(e)] => {
            assert_eq!(text, "a${{b ");
            assert_eq!(*span, Span::new(0, 7));
            assert_eq!(e.span, sp(src, "params.n"));
        }
        other => panic!("unexpected segments {other:?}"),
    }
}

// ---------------------------------------------------------------- functions

#[test]
fn unknown_function_suggests_closest() {
    let src = "lenght(params.list)";
    let e = err(src);
    assert_eq!(e.kind, ExprErrorKind::UnknownFunction);
    assert_eq!(e.message, "unknown function `lenght`");
    assert_eq!(e.help.as_deref(), Some("did you mean `len`?"));
    assert_eq!(e.span, sp(src, "lenght"));
    let e = err("frobnicate(1)");
    assert!(e.help.as_deref().is_some_and(|h| h.starts_with("available functions: range")));
}

#[test]
fn arity_is_checked_when_parsing() {
    let e = parse_expr("len(1, 2)").unwrap_err();
    assert_eq!(e.kind, ExprErrorKind::Arity);
    assert_eq!(e.message, "`len` takes 1 argument, found 2");
    assert_eq!(e.span, Span::new(0, 9));
    assert_eq!(parse_expr("range()").unwrap_err().message, "`range` takes 1 to 3 arguments, found 0");
    assert_eq!(parse_expr("min()").unwrap_err().message, "`min` takes at least 1 argument, found 0");
    assert_eq!(parse_expr("replace('a', 'b')").unwrap_err().help.as_deref(), Some("usage: `replace(s, from, to)`"));
}

#[test]
fn range_forms() {
    assert_eq!(ev("range(3)"), ints(&[0, 1, 2]));
    assert_eq!(ev("range(2, 5)"), ints(&[2, 3, 4]));
    assert_eq!(ev("range(0, 10, 3)"), ints(&[0, 3, 6, 9]));
    assert_eq!(ev("range(5, 0, -2)"), ints(&[5, 3, 1]));
    assert_eq!(ev("range(-5)"), ints(&[]));
    assert_eq!(ev("range(3, 3)"), ints(&[]));
    assert_eq!(ev("len(range(9223372036854775806, 9223372036854775807))"), Value::Int(1));
}

#[test]
fn range_errors_and_size_limit() {
    let src = "range(0, 10, 0)";
    let e = err(src);
    assert_eq!(e.message, "`range` step must not be zero");
    assert_eq!(e.span, Span::new(13, 14));
    let e = err("range(10000001)");
    assert_eq!(e.kind, ExprErrorKind::Limit);
    assert_eq!(e.message, "`range` would produce 10000001 elements (limit 10000000)");
    assert_eq!(err("range(-9223372036854775808, 9223372036854775807)").kind, ExprErrorKind::Limit);
    assert_eq!(err("range(1.5)").message, "`range` expects an `int`, found `float`");
}

fn list(v: Value) -> Vec<Value> {
    match v {
        Value::List(items) => items,
        other => panic!("not a list: {other:?}"),
    }
}

#[test]
fn samples_are_reproducible_in_range_and_well_spread() {
    // Same seed, same values; a longer draw extends a shorter one (counter-based).
    assert_eq!(ev("sample_uniform(7, 50, 0, 1)"), ev("sample_uniform(7, 50, 0, 1)"));
    let short = list(ev("sample_uniform(7, 10, 0, 1)"));
    let long = list(ev("sample_uniform(7, 2000, 0, 1)"));
    assert_eq!(&long[..10], &short[..]);
    assert_ne!(ev("sample_uniform(8, 10, 0, 1)"), ev("sample_uniform(7, 10, 0, 1)"));
    // Uniform on [0, 1): mean 1/2 and variance 1/12; for n = 2000 the standard error of the
    // mean is sqrt(1/12/2000) = 0.0065, so 0.02 is a 3-sigma bound.
    let u: Vec<f64> = long.iter().map(|v| if let Value::Float(f) = v { *f } else { panic!("{v:?}") }).collect();
    assert!(u.iter().all(|x| (0.0..1.0).contains(x)));
    let mean = u.iter().sum::<f64>() / u.len() as f64;
    let var = u.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / u.len() as f64;
    assert!((mean - 0.5).abs() < 0.02, "mean {mean}");
    assert!((var - 1.0 / 12.0).abs() < 0.01, "variance {var}");
    // Log-uniform on [1e-4, 1e-1]: each decade gets about a third of 3000 draws
    // (binomial sd sqrt(3000/3*2/3) = 26, so +-100 is about 4 sigma).
    let lr = list(ev("sample_loguniform(1, 3000, 0.0001, 0.1)"));
    let mut decades = [0usize; 3];
    for v in &lr {
        let Value::Float(x) = v else { panic!("{v:?}") };
        assert!((1e-4..=0.1).contains(x), "{x}");
        decades[((x.log10() + 4.0).floor() as usize).min(2)] += 1;
    }
    assert!(decades.iter().all(|c| c.abs_diff(1000) < 100), "{decades:?}");
    // Integers include both ends and nothing outside.
    let ints = list(ev("sample_int(3, 600, -1, 1)"));
    for want in [-1, 0, 1] {
        let c = ints.iter().filter(|v| **v == Value::Int(want)).count();
        assert!(c.abs_diff(200) < 60, "{want}: {c} of 600");
    }
    assert!(ints.iter().all(|v| matches!(v, Value::Int(-1..=1))));
    // Choices come from the list, all of them eventually.
    let picks = list(ev("sample_choice(5, 200, ['adam', 'sgd', 'rmsprop'])"));
    for w in ["adam", "sgd", "rmsprop"] {
        assert!(picks.contains(&s(w)), "{w} never chosen");
    }
    assert!(picks.iter().all(|p| [s("adam"), s("sgd"), s("rmsprop")].contains(p)));
    assert_eq!(list(ev("sample_int(1, 0, 0, 9)")).len(), 0);
}

#[test]
fn sample_errors_and_types() {
    assert_eq!(err("sample_uniform(1, 3, 1, 1)").message, "bounds must be finite with `low < high`");
    assert_eq!(err("sample_loguniform(1, 3, 0, 1)").message, "`sample_loguniform` needs `low > 0`");
    assert_eq!(err("sample_int(1, 3, 5, 4)").message, "bounds must satisfy `low <= high`");
    assert_eq!(err("sample_int(1, -1, 0, 4)").message, "`sample_int` count must not be negative, found -1");
    assert_eq!(err("sample_choice(1, 2, [])").message, "`sample_choice` needs a non-empty list");
    assert_eq!(err("sample_uniform(1, 10000001, 0, 1)").kind, ExprErrorKind::Limit);
    assert_eq!(ty("sample_uniform(1, 3, 0, 1)"), Ok(Type::List(Box::new(Type::Float))));
    assert_eq!(ty("sample_int(1, 3, 0, 9)"), Ok(Type::List(Box::new(Type::Int))));
    assert_eq!(ty("sample_choice(1, 3, ['a', 'b'])"), Ok(Type::List(Box::new(Type::Str))));
    assert_eq!(ty("sample_int(1, 3, 0.5, 9)").unwrap_err().message, "`sample_int` expects `int` bounds, found `float`");
    assert_eq!(
        ty("sample_choice(1, 3, 4)").unwrap_err().message,
        "`sample_choice` expects a list to choose from, found `int`"
    );
}

#[test]
fn linspace_points() {
    assert_eq!(ev("linspace(0, 1, 5)"), floats(&[0.0, 0.25, 0.5, 0.75, 1.0]));
    assert_eq!(ev("linspace(1, -1, 2)"), floats(&[1.0, -1.0]));
    let src = "linspace(0, 1, 1)";
    let e = err(src);
    assert_eq!(e.message, "`linspace` needs at least 2 points, found 1");
    assert_eq!(e.span, Span::new(15, 16));
    assert_eq!(err("linspace(0, 1, 10000001)").kind, ExprErrorKind::Limit);
}

#[test]
fn len_str_and_conversions() {
    assert_eq!(ev("len(params.list)"), Value::Int(3));
    assert_eq!(ev("len('héllo')"), Value::Int(5));
    assert_eq!(ev("str(0.1 + 0.2)"), s("0.30000000000000004"));
    assert_eq!(ev("str(inputs.dem)"), s("/data/dem.tif"));
    assert_eq!(ev("str(true) + str(3)"), s("true3"));
    assert_eq!(ev("int(-2.7)"), Value::Int(-2));
    assert_eq!(ev("int(' 42 ')"), Value::Int(42));
    assert_eq!(ev("float('1e3')"), Value::Float(1000.0));
    assert_eq!(ev("float(2)"), Value::Float(2.0));
    assert_eq!(ev("round(2.5)"), Value::Int(3));
    assert_eq!(ev("round(-2.5)"), Value::Int(-3));
    assert_eq!(ev("round(7)"), Value::Int(7));
}

#[test]
fn conversion_errors() {
    let src = "int('abc')";
    let e = err(src);
    assert_eq!(e.message, "cannot convert `\"abc\"` to `int`");
    assert_eq!(e.span, sp(src, "'abc'"));
    assert_eq!(err("int(true)").message, "`int` expects a number or string, found `bool`");
    assert_eq!(err("int(1e19)").message, "float `1e19` is out of range for `int`");
    assert_eq!(err("float('nan')").message, "cannot convert `\"nan\"` to `float`");
    assert_eq!(err("len(5)").message, "`len` expects a list or string, found `int`");
    let e = err("str(params.list)");
    assert_eq!(e.help.as_deref(), Some("use join(list, ' ')"));
}

#[test]
fn min_max_sum() {
    assert_eq!(ev("min(3, 1, 2)"), Value::Int(1));
    assert_eq!(ev("max(params.list)"), Value::Int(3));
    assert_eq!(ev("max(1, 2.5)"), Value::Float(2.5));
    assert_eq!(ev("min(1, 2.5)"), Value::Int(1));
    assert_eq!(ev("max('b', 'a')"), s("b"));
    assert_eq!(ev("min(7)"), Value::Int(7));
    assert_eq!(ev("sum(params.list)"), Value::Int(6));
    assert_eq!(ev("sum([1, 0.5])"), Value::Float(1.5));
    assert_eq!(ev("sum([])"), Value::Int(0));
}

#[test]
fn min_max_sum_errors() {
    assert_eq!(err("min([])").message, "`min` of an empty list");
    let src = "max(1, 'a')";
    let e = err(src);
    assert_eq!(e.message, "`max` cannot compare `int` and `string`");
    assert_eq!(e.span, sp(src, "'a'"));
    assert_eq!(err("min(true, false)").message, "`min` expects numbers or strings, found `bool`");
    assert_eq!(err("sum(['a'])").message, "`sum` expects a list of numbers, found `list<string>`");
    assert_eq!(err("sum([9223372036854775807, 1])").message, "integer overflow in `sum`");
}

#[test]
fn join_function() {
    assert_eq!(ev("join(params.list, ' ')"), s("1 2 3"));
    assert_eq!(ev("join([1.0, 'a', true], ',')"), s("1.0,a,true"));
    assert_eq!(ev("join([], ',')"), s(""));
    let e = err("join([[1]], ',')");
    assert_eq!(e.message, "cannot insert a `list<int>` value into a string");
    assert_eq!(err("join('ab', ',')").message, "`join` expects a list, found `string`");
}

#[test]
fn path_functions() {
    let cases = [
        ("a/b/c.tar.gz", "c.tar.gz", "a/b", "c.tar", "gz"),
        ("c.txt", "c.txt", ".", "c", "txt"),
        ("/c", "c", "/", "c", ""),
        ("a/b/", "b", "a", "b", ""),
        ("dir/.bashrc", ".bashrc", "dir", ".bashrc", ""),
        ("/", "/", "/", "/", ""),
    ];
    for (p, base, dir, stem, ext) in cases {
        assert_eq!(ev(&format!("basename('{p}')")), s(base), "basename {p}");
        assert_eq!(ev(&format!("dirname('{p}')")), Value::Path(dir.into()), "dirname {p}");
        assert_eq!(ev(&format!("stem('{p}')")), s(stem), "stem {p}");
        assert_eq!(ev(&format!("ext('{p}')")), s(ext), "ext {p}");
    }
    assert_eq!(ev("stem(inputs.dem)"), s("dem"));
}

#[test]
fn format_placeholders() {
    assert_eq!(ev("format('{}-{}', 'a', 1)"), s("a-1"));
    assert_eq!(ev("format('{:05}', 42)"), s("00042"));
    assert_eq!(ev("format('{:05}', -42)"), s("-0042"));
    assert_eq!(ev("format('{:.3}', 3.14159)"), s("3.142"));
    assert_eq!(ev("format('{:.2}', 2)"), s("2.00"));
    assert_eq!(ev("format('[{:>6}]', 'ab')"), s("[    ab]"));
    assert_eq!(ev("format('[{:<6}]', 'ab')"), s("[ab    ]"));
    assert_eq!(ev("format('[{:^6}]', 'ab')"), s("[  ab  ]"));
    assert_eq!(ev("format('[{:4}]', 7)"), s("[   7]"));
    assert_eq!(ev("format('{{}} {}', 1.0)"), s("{} 1.0"));
    assert_eq!(ev("format('run_{:03}.nc', member.index)"), s("run_003.nc"));
}

#[test]
fn format_errors() {
    let src = "format('{} {}', 1)";
    let e = err(src);
    assert_eq!(e.message, "format string has more placeholders than arguments");
    assert_eq!(e.span, sp(src, "'{} {}'"));
    let src = "format('{}', 1, 2)";
    let e = err(src);
    assert_eq!(e.message, "`format` got 2 arguments but the format string uses 1");
    assert_eq!(e.span, Span::new(16, 17));
    assert_eq!(err("format('a } b')").message, "unmatched `}` in format string");
    assert_eq!(err("format('{', 1)").message, "unclosed `{` in format string");
    assert_eq!(err("format('{0}', 1)").message, "unsupported format placeholder `{0}`");
    assert_eq!(err("format('{:05}', 'a')").message, "zero padding needs a number, found `string`");
    assert_eq!(err("format('{:.2}', 'a')").message, "precision needs a number, found `string`");
    assert_eq!(err("format('{:>99999999999}', 1)").kind, ExprErrorKind::Limit);
}

#[test]
fn string_functions() {
    assert_eq!(ev("contains(params.list, 2)"), Value::Bool(true));
    assert_eq!(ev("contains(params.list, 2.0)"), Value::Bool(true));
    assert_eq!(ev("contains([], 1)"), Value::Bool(false));
    assert_eq!(ev("contains(inputs.dem, 'dem')"), Value::Bool(true));
    assert_eq!(ev("upper('abc')"), s("ABC"));
    assert_eq!(ev("lower(params.name + 'X')"), s("meshx"));
    assert_eq!(ev("replace('a-b-c', '-', '_')"), s("a_b_c"));
    assert_eq!(err("contains('abc', 1)").message, "`contains` expects a string to search for, found `int`");
    assert_eq!(err("contains(1, 1)").message, "`contains` expects a list or string, found `int`");
    let src = "replace('abc', '', 'x')";
    let e = err(src);
    assert_eq!(e.message, "`replace` pattern must not be empty");
    assert_eq!(e.span, sp(src, "''"));
}

#[test]
fn function_names_are_listed() {
    let names: Vec<_> = function_names().collect();
    for f in [
        "range",
        "linspace",
        "len",
        "format",
        "div",
        "replace",
        "contains",
        "sample_uniform",
        "sample_loguniform",
        "sample_int",
        "sample_choice",
        "format_time",
        "add_time",
    ] {
        assert!(names.contains(&f), "{f}");
    }
    assert_eq!(names.len(), 27);
}

// ---------------------------------------------------------------- templates

#[test]
fn single_expression_template_is_typed() {
    let t = parse_template("${{ range(3) }}").expect("parses");
    assert!(t.is_single_expr());
    assert_eq!(t.literal(), None);
    assert_eq!(t.eval(&scope()), Ok(ints(&[0, 1, 2])));
    let t = parse_template("${{\n  params.n\t}}").expect("parses");
    assert!(t.is_single_expr());
    assert_eq!(t.eval(&scope()), Ok(Value::Int(4)));
}

#[test]
fn anything_outside_the_braces_makes_a_string() {
    let t = parse_template(" ${{ params.n }}").expect("parses");
    assert!(!t.is_single_expr());
    assert_eq!(t.eval(&scope()), Ok(s(" 4")));
    assert_eq!(tpl("${{ 1 }}${{ 2 }}"), Ok(s("12")));
    assert_eq!(tpl("mesh-${{ params.name }}-${{ member.index }}.nc"), Ok(s("mesh-mesh-3.nc")));
}

#[test]
fn literal_templates_and_escapes() {
    let t = parse_template("plain text }}").expect("parses");
    assert_eq!(t.literal(), Some("plain text }}"));
    assert_eq!(parse_template("").expect("parses").literal(), Some(""));
    let t = parse_template("cost $${{ x }} and $5").expect("parses");
    assert_eq!(t.literal(), Some("cost ${{ x }} and $5"));
    assert_eq!(t.segments().len(), 1);
    assert_eq!(tpl("$${{ ${{ 1 + 1 }}"), Ok(s("${{ 2")));
    assert_eq!(tpl("${{ '}}' + \"${{\" }}"), Ok(s("}}${{")));
}

#[test]
fn template_float_display() {
    assert_eq!(
        tpl("${{ 1.0 }} ${{ 0.25 }} ${{ 1e-7 }} ${{ 2 * 0.5 }} ${{ 1e16 }} ${{ -0.5 }}"),
        Ok(s("1.0 0.25 1e-7 1.0 1e16 -0.5"))
    );
    assert_eq!(tpl("x=${{ 7 / 2 }} ok=${{ true }}"), Ok(s("x=3.5 ok=true")));
    assert_eq!(Value::Float(100.0).to_string(), "100.0");
}

#[test]
fn template_errors() {
    let src = "abc ${{ params.n";
    let e = parse_template(src).unwrap_err();
    assert_eq!(e.message, "expected `}}` to close `${{`");
    assert_eq!(e.span, Span::new(4, 7));
    let e = parse_template("a ${{ }} b").unwrap_err();
    assert_eq!(e.message, "empty expression");
    assert_eq!(e.span, Span::new(2, 8));
    let src = "x ${{ 1 + }}";
    let e = parse_template(src).unwrap_err();
    assert_eq!(e.message, "expected an expression, found `}}`");
    assert_eq!(e.span, sp(src, "}}"));
    let e = parse_template("${{ 1 2 }}").unwrap_err();
    assert_eq!(e.span, Span::new(6, 7));
}

#[test]
fn template_refuses_lists_and_null_in_strings() {
    let src = "files: ${{ params.list }}";
    let e = tpl(src).unwrap_err();
    assert_eq!(e.kind, ExprErrorKind::Type);
    assert_eq!(e.message, "cannot insert a `list<int>` value into a string");
    assert_eq!(e.help.as_deref(), Some("use join(list, ' ')"));
    assert_eq!(e.span, sp(src, "params.list"));
    let e = tpl("v=${{ params.none }}").unwrap_err();
    assert_eq!(e.message, "cannot insert `null` into a string");
    // Alone, the typed values pass through.
    assert_eq!(tpl("${{ params.none }}"), Ok(Value::Null));
}

#[test]
fn template_spans_are_relative_to_template() {
    let src = "a ${{ 1 }} b ${{ 1 + 'x' }}";
    let e = tpl(src).unwrap_err();
    assert_eq!(e.span, sp(src, "1 + 'x'"));
    let src = "é ${{ nope.x }}";
    let e = tpl(src).unwrap_err();
    assert_eq!(e.span, sp(src, "nope.x"));
}

// -------------------------------------------------------------- static types

#[test]
fn static_types_of_references_and_operators() {
    assert_eq!(ty("params.n + 1"), Ok(Type::Int));
    assert_eq!(ty("params.x * 2"), Ok(Type::Float));
    assert_eq!(ty("params.n / 2"), Ok(Type::Float));
    assert_eq!(ty("params.name + '.nc'"), Ok(Type::Str));
    assert_eq!(ty("inputs.dem"), Ok(Type::Path));
    assert_eq!(ty("params.list[0]"), Ok(Type::Int));
    assert_eq!(ty("params.list + [1.5]"), Ok(Type::List(Box::new(Type::Float))));
    assert_eq!(ty("params.n > 2 && params.flag"), Ok(Type::Bool));
    assert_eq!(ty("params.flag ? 1 : 2.5"), Ok(Type::Float));
    assert_eq!(ty("params.flag ? 1 : 'a'"), Ok(Type::Any));
    assert_eq!(ty("[]"), Ok(Type::List(Box::new(Type::Any))));
}

#[test]
fn static_type_errors() {
    let src = "params.name * 2";
    let e = ty(src).unwrap_err();
    assert_eq!(e.kind, ExprErrorKind::Type);
    assert_eq!(e.message, "cannot apply `*` to `string` and `int`");
    assert_eq!(e.span, Span::new(0, src.len()));
    assert_eq!(ty("params.n == 'a'").unwrap_err().message, "cannot compare `int` and `string` with `==`");
    assert_eq!(ty("params.n && true").unwrap_err().span, Span::new(0, 8));
    assert_eq!(ty("params.n[0]").unwrap_err().message, "cannot index a value of type `int`");
    assert_eq!(ty("params.list['a']").unwrap_err().message, "index must be an `int`, found `string`");
    assert_eq!(ty("params.nope").unwrap_err().kind, ExprErrorKind::Reference);
    // Comparing with null is always allowed.
    assert_eq!(ty("params.n == null"), Ok(Type::Bool));
}

#[test]
fn static_types_of_functions() {
    assert_eq!(ty("range(params.n)"), Ok(Type::List(Box::new(Type::Int))));
    assert_eq!(ty("linspace(0, 1, 5)"), Ok(Type::List(Box::new(Type::Float))));
    assert_eq!(ty("len(params.name)"), Ok(Type::Int));
    assert_eq!(ty("max(params.list)"), Ok(Type::Int));
    assert_eq!(ty("max(1, params.x)"), Ok(Type::Float));
    assert_eq!(ty("sum(linspace(0, 1, 3))"), Ok(Type::Float));
    assert_eq!(ty("dirname(inputs.dem)"), Ok(Type::Path));
    assert_eq!(ty("format('{}', params.n)"), Ok(Type::Str));
    assert_eq!(ty("contains(params.list, 1)"), Ok(Type::Bool));
    assert_eq!(ty("range(params.x)").unwrap_err().message, "`range` expects an `int`, found `float`");
    assert_eq!(ty("len(params.n)").unwrap_err().message, "`len` expects a list or string, found `int`");
    assert_eq!(ty("join(params.name, ',')").unwrap_err().kind, ExprErrorKind::Type);
}

#[test]
fn any_defers_checks_to_runtime() {
    assert_eq!(ty("params.any + 1"), Ok(Type::Any));
    assert_eq!(ty("params.any * 2.0"), Ok(Type::Float));
    assert_eq!(ty("params.any[0]"), Ok(Type::Any));
    assert_eq!(ty("params.any && true"), Ok(Type::Bool));
    assert_eq!(ty("len(params.any)"), Ok(Type::Int));
    assert_eq!(ty("params.any + true").unwrap_err().message, "cannot add `any` and `bool`");
}

#[test]
fn template_static_types() {
    let ts = type_scope();
    let t = parse_template("${{ params.list }}").expect("parses");
    assert_eq!(t.infer_type(&ts), Ok(Type::List(Box::new(Type::Int))));
    let t = parse_template("n=${{ params.n }}").expect("parses");
    assert_eq!(t.infer_type(&ts), Ok(Type::Str));
    let src = "n=${{ params.list }}";
    let e = parse_template(src).expect("parses").infer_type(&ts).unwrap_err();
    assert_eq!(e.help.as_deref(), Some("use join(list, ' ')"));
    assert_eq!(e.span, sp(src, "params.list"));
    assert_eq!(parse_template("text").expect("parses").infer_type(&ts), Ok(Type::Str));
}

#[test]
fn type_display_and_accepts() {
    let list_int = Type::List(Box::new(Type::Int));
    assert_eq!(list_int.to_string(), "list<int>");
    assert_eq!(Type::Str.to_string(), "string");
    assert_eq!(
        [Type::Any, Type::Null, Type::Bool, Type::Float, Type::Path].map(|t| t.to_string()),
        ["any", "null", "bool", "float", "path"]
    );
    assert!(Type::Float.accepts(&Type::Int));
    assert!(!Type::Int.accepts(&Type::Float));
    assert!(Type::Str.accepts(&Type::Path) && Type::Path.accepts(&Type::Str));
    assert!(Type::List(Box::new(Type::Float)).accepts(&list_int));
    assert!(!list_int.accepts(&Type::List(Box::new(Type::Str))));
    assert!(Type::Any.accepts(&list_int) && Type::Bool.accepts(&Type::Any));
    assert!(!Type::Bool.accepts(&Type::Null));
}

// ------------------------------------------------------------------- values

#[test]
fn value_type_of_and_display() {
    assert_eq!(ev("[1, 2.5]").type_of(), Type::List(Box::new(Type::Float)));
    assert_eq!(ev("[1, 'a']").type_of(), Type::List(Box::new(Type::Any)));
    assert_eq!(Value::Path("p".into()).type_of(), Type::Path);
    assert_eq!(ev("[1, 'a', 0.5]").to_string(), "[1, \"a\", 0.5]");
    assert_eq!(Value::Null.to_string(), "null");
    assert_eq!(Value::Path("/x y".into()).to_string(), "/x y");
}

#[test]
fn json_round_trip() {
    let v = Value::List(vec![Value::Null, Value::Bool(true), Value::Int(-3), Value::Float(0.5), s("x")]);
    let json = v.to_json();
    assert_eq!(json, serde_json::json!([null, true, -3, 0.5, "x"]));
    assert_eq!(Value::from_json(&json), Some(v));
    assert_eq!(Value::Path("a/b".into()).to_json(), serde_json::json!("a/b"));
    assert_eq!(Value::from_json(&serde_json::json!({"a": 1})), None);
    assert_eq!(Value::from_json(&serde_json::json!([1, {"a": 1}])), None);
    assert_eq!(
        Value::from_json(&serde_json::json!(18446744073709551615u64)),
        Some(Value::Float(18446744073709551615u64 as f64))
    );
}

#[test]
fn error_display_is_the_message() {
    let e = err("1 / 0");
    assert_eq!(e.to_string(), "division by zero");
    let l = LookupError::new("unknown step `x`").with_help("h");
    assert_eq!(l.to_string(), "unknown step `x`");
    assert_eq!(l.at(Span::new(1, 2)).kind, ExprErrorKind::Reference);
}

// ------------------------------------------------------------------- limits

#[test]
fn nesting_depth_is_limited() {
    let deep = format!("{}1{}", "(".repeat(100), ")".repeat(100));
    let e = err(&deep);
    assert_eq!(e.kind, ExprErrorKind::Limit);
    assert_eq!(e.message, "expression nested too deeply");
    assert_eq!(err(&"-".repeat(5000)).message, "expression nested too deeply");
    assert_eq!(err(&format!("{}1{}", "[".repeat(70), "]".repeat(70))).message, "expression nested too deeply");
    // Long operator chains build deep trees too.
    let chain = vec!["1"; 100].join(" + ");
    assert_eq!(err(&chain).message, "expression nested too deeply");
    let chain = vec!["1"; 60].join(" + ");
    assert_eq!(ev(&chain), Value::Int(60));
    assert_eq!(err(&format!("[0]{}", "[0]".repeat(80))).kind, ExprErrorKind::Limit);
    let ok = format!("{}1{}", "(".repeat(50), ")".repeat(50));
    assert_eq!(ev(&ok), Value::Int(1));
}

#[test]
fn source_length_is_limited() {
    let long = format!("'{}'", "a".repeat(MAX_SOURCE_LEN));
    let e = parse_expr(&long).unwrap_err();
    assert_eq!(e.kind, ExprErrorKind::Limit);
    assert!(e.message.starts_with("expression source is too long"));
    assert_eq!(parse_template(&long).unwrap_err().kind, ExprErrorKind::Limit);
}

#[test]
fn string_results_are_limited() {
    let big = "format('{:>9000000}', 'a')";
    assert_eq!(ev(&format!("len({big})")), Value::Int(9_000_000));
    let e = err(&format!("{big} + {big}"));
    assert_eq!(e.kind, ExprErrorKind::Limit);
    assert_eq!(e.message, format!("string result is too long (limit {MAX_STRING_LEN} bytes)"));
    assert_eq!(err(&format!("replace({big}, ' ', 'ab')")).kind, ExprErrorKind::Limit);
    let e = tpl(&format!("${{{{ {big} }}}}${{{{ {big} }}}}")).unwrap_err();
    assert_eq!(e.kind, ExprErrorKind::Limit);
}

// ------------------------------------------------------------------ fuzzing

/// Tiny xorshift64* generator so the fuzz test needs no extra crates.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Checks the properties every outcome must have: no panic (implicit) and
/// errors whose spans can be used to slice the source.
fn check_outcome(src: &str, result: Result<Value, ExprError>) {
    if let Err(e) = result {
        assert!(e.span.start <= e.span.end && e.span.end <= src.len(), "{src:?}: {e:?}");
        assert!(src.is_char_boundary(e.span.start), "{src:?}: {e:?}");
        assert!(src.is_char_boundary(e.span.end), "{src:?}: {e:?}");
        assert!(!e.message.is_empty());
    }
}

fn run_fuzz_input(src: &str) {
    let scope = scope();
    let types = type_scope();
    match parse_template(src) {
        Ok(t) => {
            check_outcome(src, t.eval(&scope));
            check_outcome(src, t.infer_type(&types).map(|_| Value::Null));
            for r in t.references() {
                assert!(r.span.end <= src.len());
            }
        }
        Err(e) => check_outcome(src, Err(e)),
    }
    match parse_expr(src) {
        Ok(e) => {
            check_outcome(src, e.eval(&scope));
            check_outcome(src, e.infer_type(&types).map(|_| Value::Null));
        }
        Err(e) => check_outcome(src, Err(e)),
    }
}

#[test]
fn fuzz_random_bytes_never_panic() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let alphabet = b"${}()[].,:?!<>=&|+-*/%'\"\\ _aZ09e\n\xc3\xa9\xff";
    for _ in 0..3000 {
        let len = rng.below(40);
        let bytes: Vec<u8> = (0..len)
            .map(|_| if rng.below(4) == 0 { (rng.next() & 0xff) as u8 } else { alphabet[rng.below(alphabet.len())] })
            .collect();
        run_fuzz_input(&String::from_utf8_lossy(&bytes));
    }
}

#[test]
fn fuzz_token_soup_never_panics() {
    let vocab = [
        "${{",
        "}}",
        "$${{",
        "(",
        ")",
        "[",
        "]",
        ",",
        ".",
        "?",
        ":",
        "+",
        "-",
        "*",
        "/",
        "%",
        "!",
        "==",
        "!=",
        "<",
        "<=",
        ">",
        ">=",
        "&&",
        "||",
        "0",
        "1",
        "2",
        "-1",
        "3",
        "1.5",
        "1e-7",
        "9223372036854775807",
        "'a'",
        "\"b\"",
        "''",
        "'{}'",
        "'{:05}'",
        "true",
        "false",
        "null",
        "params.n",
        "params.x",
        "params.name",
        "params.list",
        "params.none",
        "inputs.dem",
        "steps.flood-sim.out.grid",
        "missing.ref",
        "range",
        "linspace",
        "sample_uniform",
        "sample_choice",
        "len",
        "str",
        "int",
        "float",
        "round",
        "min",
        "max",
        "sum",
        "join",
        "basename",
        "dirname",
        "stem",
        "ext",
        "format",
        "contains",
        "upper",
        "lower",
        "replace",
        "div",
        "lenght",
        " ",
        "x",
    ];
    let mut rng = Rng(0xD1B5_4A32_D192_ED03);
    for _ in 0..6000 {
        let n = 1 + rng.below(16);
        let mut src = String::new();
        if rng.below(2) == 0 {
            src.push_str("${{ ");
        }
        for _ in 0..n {
            src.push_str(vocab[rng.below(vocab.len())]);
            if rng.below(3) == 0 {
                src.push(' ');
            }
        }
        if rng.below(2) == 0 {
            src.push_str(" }}");
        }
        run_fuzz_input(&src);
    }
}

// ----------------------------------------------------------------- time

#[test]
fn format_time_formats_utc_instants() {
    assert_eq!(ev("format_time('2026-03-01T00:10Z', '%Y%m%dT%H%M')"), s("20260301T0010"));
    assert_eq!(ev("format_time('2026-03-01T06:30:15Z', '%Y-%m-%d %H:%M:%S %j')"), s("2026-03-01 06:30:15 060"));
    assert_eq!(ty("format_time('2026-03-01T00:00Z', '%H')").unwrap(), Type::Str);
}

#[test]
fn add_time_adds_signed_durations() {
    assert_eq!(ev("add_time('2026-03-01T00:00Z', '-10m')"), s("2026-02-28T23:50:00Z"));
    assert_eq!(ev("add_time('2026-03-01T00:00:00Z', '1h30m')"), s("2026-03-01T01:30:00Z"));
    assert_eq!(ev("add_time('2026-03-01T00:00Z', 90)"), s("2026-03-01T00:01:30Z"));
    assert_eq!(ev("format_time(add_time('2026-03-01T00:00Z', '+1d'), '%d')"), s("02"));
    assert_eq!(ty("add_time('2026-03-01T00:00Z', '1h')").unwrap(), Type::Str);
}

#[test]
fn time_function_errors_point_at_the_argument() {
    let src = "format_time('yesterday', '%Y')";
    let e = err(src);
    assert_eq!(e.kind, ExprErrorKind::Runtime);
    assert_eq!(e.span, sp(src, "'yesterday'"));
    assert_eq!(e.message, "invalid instant `yesterday` (use ISO 8601 UTC, e.g. `2026-03-01T00:00Z`)");

    let src = "add_time('2026-03-01T00:00+02:00', '1h')";
    assert_eq!(
        err(src).message,
        "instant `2026-03-01T00:00+02:00` is not in UTC: end it with `Z` (`2026-03-01T00:00Z`)"
    );

    let src = "add_time('2026-03-01T00:00Z', '10 parsecs')";
    let e = err(src);
    assert_eq!(e.span, sp(src, "'10 parsecs'"));
    assert!(e.message.starts_with("invalid duration `10 parsecs`"), "{}", e.message);

    let src = "format_time('2026-03-01T00:00Z', '%!')";
    let e = err(src);
    assert_eq!(e.span, sp(src, "'%!'"));
    assert!(e.message.starts_with("invalid time format `%!`"), "{}", e.message);

    let e = err("add_time('9999-06-01T00:00Z', '300d')");
    assert_eq!(e.message, "`add_time` goes beyond the supported range of instants");

    // Statically: a number is not an instant.
    let e = ty("format_time(params.n, '%Y')").unwrap_err();
    assert_eq!(e.message, "`format_time` expects an ISO 8601 instant, found `int`");
    assert_eq!(err("format_time(params.n, '%Y')").message, "`format_time` expects an ISO 8601 instant, found `int`");
    let e = ty("add_time('2026-03-01T00:00Z', params.flag)").unwrap_err();
    assert_eq!(e.message, "`add_time` expects a duration (`'10m'`, `'-1h'`) or seconds, found `bool`");
    assert_eq!(err("add_time('x')").kind, ExprErrorKind::Arity);
}
