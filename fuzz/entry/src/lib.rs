//! Entry points of twinflow's fuzz targets: each takes the fuzzer's bytes, runs them through
//! the same library calls the programs make, and returns `Err` for input that is rejected.
//! None may panic, hang or allocate without bound on any input: that is what the fuzz
//! targets (`fuzz/fuzz_targets/*.rs`, cargo-fuzz on nightly) check, and what
//! `tests/replay.rs` checks on stable for every file of `fuzz/corpus/<target>/` and
//! `fuzz/regressions/<target>/`.
//!
//! A rejection must be *clean*: a message that says what is wrong (for the exchange readers,
//! one naming the file). [`Rejected::clean`] is false otherwise, and the targets assert it.

mod exchange;

use std::path::Path;
use std::sync::Arc;

use twinflow_engine::expr::{self, Type, Value};
use twinflow_engine::session::render::{Format, RenderOptions, render};
use twinflow_engine::{plan, spec, validate};

pub use exchange::{exchange, exchange_file};

/// Why an input was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    /// The message a user would see.
    pub message: String,
    /// Whether the message is acceptable: non-empty and, for files, naming the file.
    pub clean: bool,
}

impl Rejected {
    fn new(message: impl Into<String>) -> Self {
        let message = message.into();
        Self { clean: !message.trim().is_empty(), message }
    }
}

/// An entry point: the fuzzer's bytes in, `Err` for a rejected input.
pub type Entry = fn(&[u8]) -> Result<(), Rejected>;

/// The fuzz targets, by the name of their corpus directory (`fuzz/corpus/<name>/`).
pub const TARGETS: &[(&str, Entry)] = &[
    ("workflow", workflow),
    ("expression", expression),
    ("profile", profile),
    ("flood_config", flood_config),
    ("kernel_argv", kernel_argv),
    ("exchange", exchange),
];

/// Where the workflow text is said to come from: a file (that does not exist) in
/// `examples/`, so the examples' imports (`../workflows/...`) resolve to the real files.
const WORKFLOW_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/fuzz-input.yaml");

fn text(data: &[u8]) -> Result<&str, Rejected> {
    std::str::from_utf8(data).map_err(|e| Rejected::new(format!("not UTF-8 (byte {})", e.valid_up_to())))
}

/// `twinflow validate` and `twinflow plan` on a workflow's text: parse, validate, compile,
/// render the plan as text and JSON.
pub fn workflow(data: &[u8]) -> Result<(), Rejected> {
    if data.len() as u64 > spec::MAX_WORKFLOW_BYTES {
        return Err(Rejected::new("too large"));
    }
    let file = spec::span::SourceFile::new(WORKFLOW_PATH, text(data)?);
    let raw = spec::parse(&file).map_err(|d| Rejected::new(d.to_string()))?;
    let wf =
        validate::validate(file, raw, &validate::Overrides::default()).map_err(|d| Rejected::new(d.to_string()))?;
    let plan = plan::compile(Arc::new(wf)).map_err(|d| Rejected::new(d.to_string()))?;
    let opts = RenderOptions { max_members: 4, cycles: 2, launcher: None };
    for format in [Format::Text, Format::Json] {
        let shown = render(&plan, format, Path::new("twin-kernel"), &opts);
        assert!(!shown.is_empty(), "an empty plan view");
    }
    Ok(())
}

/// The names an expression may refer to, with values and types.
fn scope() -> (std::collections::HashMap<String, Value>, std::collections::HashMap<String, Type>) {
    let values = [
        ("params.n", Value::Int(3)),
        ("params.big", Value::Int(i64::MAX)),
        ("params.x", Value::Float(0.25)),
        ("params.s", Value::Str("a b".into())),
        ("params.flag", Value::Bool(true)),
        ("params.none", Value::Null),
        ("inputs.dem", Value::Path("dem.nc".into())),
        ("params.list", Value::List(vec![Value::Int(1), Value::Int(2), Value::Int(3)])),
        ("member.index", Value::Int(0)),
        ("run.id", Value::Str("20260101T000000-abcd".into())),
    ];
    let values: std::collections::HashMap<String, Value> =
        values.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
    let types = values.iter().map(|(k, v)| (k.clone(), v.type_of())).collect();
    (values, types)
}

/// The expression language: the text as a template and as a bare expression, each type
/// checked and evaluated in a scope of parameters, inputs and a member index.
pub fn expression(data: &[u8]) -> Result<(), Rejected> {
    let src = text(data)?;
    let (values, types) = scope();
    let mut first_error = None;
    let mut note = |e: expr::ExprError| {
        first_error.get_or_insert_with(|| Rejected::new(e.to_string()));
    };
    match expr::parse_template(src) {
        Ok(t) => {
            let _ = t.references();
            if let Err(e) = t.infer_type(&types) {
                note(e);
            }
            match t.eval(&values) {
                Ok(v) => {
                    let _ = v.to_json();
                }
                Err(e) => note(e),
            }
        }
        Err(e) => note(e),
    }
    match expr::parse_expr(src) {
        Ok(e) => {
            let _ = e.references();
            if let Err(err) = e.infer_type(&types) {
                note(err);
            }
            match e.eval(&values) {
                Ok(v) => {
                    let _ = v.to_json();
                }
                Err(err) => note(err),
            }
        }
        Err(e) => note(e),
    }
    first_error.map_or(Ok(()), Err)
}

/// A site profile (`hpc/profiles/*.yaml`): parse, check, apply its defaults to a step.
pub fn profile(data: &[u8]) -> Result<(), Rejected> {
    use twinflow_engine::execute::profile::Profile;
    let p = Profile::parse(text(data)?, "fuzz").map_err(|e| Rejected::new(e.to_string()))?;
    let mut r = twinflow_engine::model::Resources::default();
    p.apply_defaults(&mut r);
    Ok(())
}

/// The grid flood configurations are checked against in [`flood_config`] and
/// [`kernel_argv`]: 16 × 12 cells of 10 m.
fn grid() -> twinflow_flood::Grid {
    twinflow_flood::Grid { nx: 16, ny: 12, dx: 10.0, dy: 10.0, x0: 5.0, y0: 5.0 }
}

/// `flood.json` as `twin-kernel flood --config` reads it, then checked against a grid.
pub fn flood_config(data: &[u8]) -> Result<(), Rejected> {
    let config: twinflow_flood::FloodConfig =
        serde_json::from_slice(data).map_err(|e| Rejected::new(format!("flood.json: {e}")))?;
    check_flood(&config)
}

fn check_flood(config: &twinflow_flood::FloodConfig) -> Result<(), Rejected> {
    config
        .validate(&grid())
        .map(|_| ())
        .map_err(|issues| Rejected::new(twinflow_flood::FloodError::Config(issues).to_string()))
}

/// `twin-kernel`'s command line: the input split at NUL bytes into arguments (not
/// necessarily UTF-8); a `flood` command line is then applied to the default flood
/// configuration and checked, as `twin-kernel flood` does before it reads its files.
pub fn kernel_argv(data: &[u8]) -> Result<(), Rejected> {
    use std::os::unix::ffi::OsStrExt as _;
    use twinflow_kernels::cli::Command;
    let argv = std::iter::once(std::ffi::OsStr::new("twin-kernel"))
        .chain(data.split(|&b| b == 0).map(std::ffi::OsStr::from_bytes));
    let cli = twinflow_kernels::parse_args(argv).map_err(|e| Rejected::new(e.render().to_string()))?;
    match cli.command {
        // A hot start reads the state file it names: not what this target is about.
        Command::Flood(args) if args.hot_start.is_none() => {
            let mut config = twinflow_flood::FloodConfig::default();
            args.apply(&mut config).map_err(|e| Rejected::new(e.report()))?;
            check_flood(&config)
        }
        _ => Ok(()),
    }
}
