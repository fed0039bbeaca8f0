//! The raw shape of a workflow file, exactly as written (phase 1 of the pipeline).
//!
//! These types only describe *shape*: which keys exist and what YAML type each holds.
//! They are deserialized with `deny_unknown_fields` and carry spans ([`Sp`]) so later
//! phases can point at the text. Meaning (references, types of expressions, cycles, ...)
//! is checked in [`crate::validate`], never here. The JSON Schema in
//! `schemas/workflow.schema.json` is generated from these types.

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::Deserialize;

use super::span::Sp;

/// An ordered map whose keys keep their spans.
pub type SpMap<V> = IndexMap<Sp<String>, Sp<V>>;

/// A twinflow workflow file (format version 1).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "twinflow workflow", rename = "Workflow")]
pub struct RawWorkflow {
    /// Name of the workflow (letters, digits, `-`, `_`).
    pub name: Sp<String>,
    /// Version of the workflow itself (free text, e.g. `"1.2"`).
    #[serde(default)]
    pub version: Option<Sp<Scalar>>,
    /// What the workflow does.
    #[serde(default)]
    pub description: Option<String>,
    /// Typed parameters, settable with `twinflow run -p name=value`.
    #[serde(default)]
    pub params: SpMap<RawParam>,
    /// Input files the workflow reads.
    #[serde(default)]
    pub inputs: SpMap<RawInput>,
    /// Sub-workflows from other files, by alias: `imports: { stats: ../workflows/stats.yaml }`.
    #[serde(default)]
    pub imports: SpMap<String>,
    /// The steps, by name. Order does not matter: dependencies come from data flow.
    pub steps: Sp<SpMap<RawStep>>,
    /// Values this workflow exposes when imported as a sub-workflow
    /// (`summary: ${{ steps.reduce.out.summary }}`).
    #[serde(default)]
    pub outputs: SpMap<String>,
    /// Makes the workflow cycle: its steps run once per cycle point (only the workflow that
    /// is run may cycle, not an imported one).
    #[serde(default)]
    pub cycle: Option<Sp<RawCycle>>,
    /// Conditions on the parameters and inputs, checked when the workflow is validated
    /// (before anything runs): `- ${{ params.survivors <= params.trials }}`, or
    /// `- { that: "${{ ... }}", message: "why it must hold" }`. In a sub-workflow they are
    /// checked with the values its caller passes.
    #[serde(default, rename = "assert")]
    pub asserts: Vec<Sp<RawAssert>>,
}

/// One entry of `assert:`.
#[derive(Debug, JsonSchema)]
#[serde(untagged)]
pub enum RawAssert {
    /// A boolean expression (`${{ params.survivors <= params.trials }}`).
    Expr(String),
    /// An expression with a message saying why it must hold.
    Spec(RawAssertSpec),
}

/// `assert:` entry written as a map.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawAssertSpec {
    /// The boolean expression that must be true.
    pub that: Sp<String>,
    /// Shown when it is false.
    #[serde(default)]
    pub message: Option<String>,
}

// By hand rather than `#[serde(untagged)]` (see `RawService`): the map form keeps its spans
// and its unknown keys are reported as anywhere else.
impl<'de> Deserialize<'de> for RawAssert {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = RawAssert;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an expression (`${{ params.a <= params.b }}`) or a map with `that` and `message`")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<RawAssert, E> {
                Ok(RawAssert::Expr(v.to_string()))
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<RawAssert, E> {
                Err(E::invalid_type(serde::de::Unexpected::Other(&format!("`{v}`")), &self))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<RawAssert, E> {
                Err(E::invalid_type(serde::de::Unexpected::Other(&format!("`{v}`")), &self))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<RawAssert, E> {
                self.visit_i64(v as i64)
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<RawAssert, E> {
                Err(E::invalid_type(serde::de::Unexpected::Other(&format!("`{v}`")), &self))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, m: A) -> Result<RawAssert, A::Error> {
                RawAssertSpec::deserialize(serde::de::value::MapAccessDeserializer::new(m)).map(RawAssert::Spec)
            }
        }
        d.deserialize_any(V)
    }
}

/// The `cycle:` block: when cycles start, how they advance and when they end.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawCycle {
    /// Step between cycle points: an integer (integer cycling: `1`) or a duration
    /// (datetime cycling: `10m`).
    pub every: Sp<Scalar>,
    /// First point: an integer (integer cycling), an ISO 8601 UTC instant
    /// (`2026-03-01T00:00Z`) or `now` (datetime cycling).
    pub start: Sp<Scalar>,
    /// Last point (included), of the same kind as `start`; absent (and no `cycles`): runs
    /// until stopped.
    #[serde(default)]
    pub end: Option<Sp<Scalar>>,
    /// Number of cycles, instead of `end`.
    #[serde(default)]
    pub cycles: Option<Sp<i64>>,
    /// Cycles that may be active beyond the oldest unfinished one (default 1).
    #[serde(default)]
    pub runahead: Option<Sp<i64>>,
    /// Keep the run directories of the last N finished cycles; older ones are pruned.
    #[serde(default)]
    pub keep: Option<Sp<i64>>,
}

/// `once:` of a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RawOnce {
    /// Only in the first cycle; later cycles read its results with `steps.S.out.NAME`.
    First,
    /// Only in the last cycle (the cycle needs an `end` or `cycles`).
    Last,
}

/// What a trigger does when its `timeout` passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RawOnTimeout {
    /// The task fails (default).
    Fail,
    /// The task and its dependants in the cycle are skipped; later cycles go on.
    Skip,
}

/// `wait:` of a step: triggers that must all be satisfied before each task starts.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawWait {
    /// Not before the cycle point plus this offset of wall-clock time (`+5m`, `-1h`, `0s`).
    #[serde(default)]
    pub clock: Option<Sp<Scalar>>,
    /// Files (paths or globs; templates) that must exist.
    #[serde(default)]
    pub files: Option<Sp<Vec<Sp<String>>>>,
    /// A file counts only when its size and mtime have been stable this long (default `0s`).
    #[serde(default)]
    pub settle: Option<Sp<Scalar>>,
    /// A file counts only when at least this large (`1K`, or bytes).
    #[serde(default)]
    pub min_size: Option<Sp<Scalar>>,
    /// A command (argv list of templates) polled until it exits 0; a JSON object on its
    /// stdout becomes `wait.KEY` values.
    #[serde(default)]
    pub command: Option<Sp<Vec<Sp<String>>>>,
    /// How often files and the command are checked (default `1s`).
    #[serde(default)]
    pub poll: Option<Sp<Scalar>>,
    /// A named signal, satisfied by `twinflow signal RUN NAME`.
    #[serde(default)]
    pub signal: Option<Sp<String>>,
    /// Give up after this long.
    #[serde(default)]
    pub timeout: Option<Sp<Scalar>>,
    /// `fail` (default) or `skip` when the timeout passes.
    #[serde(default)]
    pub on_timeout: Option<Sp<RawOnTimeout>>,
}

/// A YAML scalar that may be written as a number or a string (`version: 1.2`).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Scalar {
    /// An integer.
    Int(i64),
    /// A floating-point number.
    Float(f64),
    /// A boolean.
    Bool(bool),
    /// Text.
    Str(String),
}

impl std::fmt::Display for Scalar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Scalar::Int(i) => write!(f, "{i}"),
            Scalar::Float(x) => write!(f, "{x}"),
            Scalar::Bool(b) => write!(f, "{b}"),
            Scalar::Str(s) => f.write_str(s),
        }
    }
}

/// Type of a parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ParamType {
    /// 64-bit signed integer.
    Int,
    /// 64-bit float.
    Float,
    /// Text.
    String,
    /// `true` or `false`.
    Bool,
    /// A file system path (relative paths are resolved against the workflow file).
    Path,
    /// One of the strings listed in `values`.
    Enum,
    /// A list; the element type is given by `items` (default `string`).
    List,
}

/// A typed parameter.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawParam {
    /// The parameter's type.
    #[serde(rename = "type")]
    pub ty: Sp<ParamType>,
    /// Default value; a parameter without a default must be given with `-p`.
    #[serde(default)]
    pub default: Option<Sp<serde_json::Value>>,
    /// What the parameter means.
    #[serde(default)]
    pub description: Option<String>,
    /// Smallest allowed value (numbers, and list elements of numeric lists).
    #[serde(default)]
    pub min: Option<Sp<f64>>,
    /// Largest allowed value.
    #[serde(default)]
    pub max: Option<Sp<f64>>,
    /// Allowed values of an `enum` parameter.
    #[serde(default)]
    pub values: Option<Sp<Vec<Sp<String>>>>,
    /// Element type of a `list` parameter.
    #[serde(default)]
    pub items: Option<Sp<ParamType>>,
}

/// Format of an input file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum FileFormat {
    /// HDF5.
    Hdf5,
    /// NetCDF (classic or NetCDF-4).
    Netcdf,
    /// Anything.
    #[default]
    Any,
}

/// An input file of the workflow.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawInput {
    /// Default path (relative to the workflow file), overridable with `-i name=path`.
    #[serde(default)]
    pub default: Option<Sp<String>>,
    /// Expected format; checked by the file's signature before the run starts.
    #[serde(default)]
    pub format: Option<Sp<FileFormat>>,
    /// What the input holds.
    #[serde(default)]
    pub description: Option<String>,
}

/// One step of the workflow.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawStep {
    /// What the step does.
    #[serde(default)]
    pub description: Option<String>,
    /// Run a built-in kernel of `twin-kernel` (`kernel: flood`); `args` follow.
    #[serde(default)]
    pub kernel: Option<Sp<String>>,
    /// Run a program: an argv list, never a shell string (`run: [python3, fit.py]`).
    #[serde(default)]
    pub run: Option<Sp<Vec<Sp<String>>>>,
    /// Call an imported sub-workflow by its alias (`uses: stats`).
    #[serde(default)]
    pub uses: Option<Sp<String>>,
    /// Parameters and inputs passed to the sub-workflow named by `uses`.
    #[serde(default)]
    pub with: SpMap<serde_json::Value>,
    /// Run `run` through `/bin/sh -c` (explicit opt-in; `run` must then have one element).
    #[serde(default)]
    pub shell: Option<Sp<bool>>,
    /// Named inputs: a path, an expression (`${{ steps.mesh.out.grid }}`) or a list of them.
    #[serde(rename = "in", default)]
    pub inputs: SpMap<serde_json::Value>,
    /// Named outputs: paths relative to the step's run directory.
    #[serde(default)]
    pub out: SpMap<String>,
    /// Copies of outputs (or values) outside the run directory, by output name:
    /// `publish: { map: "${{ params.results }}/map-${{ run.id }}.png" }`. The path is absolute
    /// or relative to the workflow file's directory. After the step succeeds (or is reused
    /// from the cache), the output is copied to a temporary name beside the target and
    /// renamed, so the target never holds a partial file. The only way a step's results
    /// reach a place outside the run directory.
    #[serde(default)]
    pub publish: SpMap<String>,
    /// Small outputs read back as values (`converged: converged.json`): after the step
    /// succeeds, the file's JSON (or trimmed text) is available as `steps.NAME.values.KEY`.
    #[serde(default)]
    pub values: SpMap<String>,
    /// Arguments appended to `run` or to the kernel command.
    #[serde(default)]
    pub args: Vec<Sp<String>>,
    /// Extra environment variables.
    #[serde(default)]
    pub env: SpMap<String>,
    /// What the step needs.
    #[serde(default)]
    pub resources: Option<Sp<RawResources>>,
    /// Retry policy on failure.
    #[serde(default)]
    pub retry: Option<Sp<RawRetry>>,
    /// Wall-clock limit of one attempt (`30s`, `10m`, `2h`).
    #[serde(default)]
    pub timeout: Option<Sp<Scalar>>,
    /// Run the step once per element (ensembles, sweeps).
    #[serde(default)]
    pub scatter: Option<Sp<RawScatter>>,
    /// Run only when this expression is true (`${{ params.mode == 'full' }}`).
    #[serde(default)]
    pub when: Option<Sp<Scalar>>,
    /// Extra ordering dependencies on other steps, by name.
    #[serde(default)]
    pub after: Vec<Sp<String>>,
    /// Cycling workflows: run only in the `first` or the `last` cycle.
    #[serde(default)]
    pub once: Option<Sp<RawOnce>>,
    /// Cycling workflows: triggers gating each of the step's tasks.
    #[serde(default)]
    pub wait: Option<Sp<RawWait>>,
    /// A long-running service: `true`, or a map saying when it is ready and how its logs
    /// rotate. Dependants start once it is ready; it runs until the run ends.
    #[serde(default)]
    pub service: Option<Sp<RawService>>,
    /// What the run's report (`RUN/report.html`) shows of this step's outputs:
    /// `report: { figures: [out.map], tables: [out.metrics], alerts: [out.alerts] }`.
    /// Figures are PNG or SVG files (embedded), tables CSV files (shown as HTML tables),
    /// alerts JSON-lines files (each line an `alert` event of the run).
    #[serde(default)]
    pub report: Option<Sp<RawReport>>,
}

/// `report:` of a step: outputs shown in the run's report, as `out.NAME`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawReport {
    /// Outputs embedded as figures (`out.map`: a PNG or SVG file).
    #[serde(default)]
    pub figures: Vec<Sp<String>>,
    /// Outputs shown as tables (`out.metrics`: a CSV file).
    #[serde(default)]
    pub tables: Vec<Sp<String>>,
    /// Outputs holding alerts (`out.alerts`: a JSON-lines file, one JSON object a line):
    /// after the step succeeds, each line becomes an `alert` event (`--json`) and a
    /// warning line.
    #[serde(default)]
    pub alerts: Vec<Sp<String>>,
}

/// `service:` of a step.
#[derive(Debug, JsonSchema)]
#[serde(untagged)]
pub enum RawService {
    /// `true`: a service, ready as soon as it runs and its declared outputs exist; `false`:
    /// an ordinary step.
    Flag(bool),
    /// A service with settings.
    Spec(Box<RawServiceSpec>),
}

// Written by hand rather than `#[serde(untagged)]`: an untagged enum buffers the value, which
// loses the spans inside it and turns every mistake into "did not match any variant"; this
// visitor hands a map straight to `RawServiceSpec`, whose unknown keys are then reported as
// anywhere else.
impl<'de> Deserialize<'de> for RawService {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = RawService;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("`true`, `false` or a map with `ready`, `log_max`, `log_keep`")
            }
            fn visit_bool<E: serde::de::Error>(self, b: bool) -> Result<RawService, E> {
                Ok(RawService::Flag(b))
            }
            // Scalars that are not booleans are shown as written: found `yes`.
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<RawService, E> {
                Err(E::invalid_type(serde::de::Unexpected::Other(&format!("`{v}`")), &self))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<RawService, E> {
                self.visit_str(&v.to_string())
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<RawService, E> {
                self.visit_str(&v.to_string())
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<RawService, E> {
                self.visit_str(&v.to_string())
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, m: A) -> Result<RawService, A::Error> {
                RawServiceSpec::deserialize(serde::de::value::MapAccessDeserializer::new(m))
                    .map(|s| RawService::Spec(Box::new(s)))
            }
        }
        d.deserialize_any(V)
    }
}

/// `service:` written as a map.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawServiceSpec {
    /// When the service is ready for its dependants (default: as soon as it runs and its
    /// declared outputs exist).
    #[serde(default)]
    pub ready: Option<Sp<RawReady>>,
    /// Rotate `stdout`/`stderr` when one grows beyond this size (`10M` by default).
    #[serde(default)]
    pub log_max: Option<Sp<Scalar>>,
    /// Rotated logs kept per stream (`stdout.1` ... `stdout.N`; default 3).
    #[serde(default)]
    pub log_keep: Option<Sp<i64>>,
}

/// `service.ready`: the probe that says a service is ready (exactly one of `file` and
/// `command`).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawReady {
    /// Ready once this file exists (a template; relative to the attempt directory, the
    /// service's working directory).
    #[serde(default)]
    pub file: Option<Sp<String>>,
    /// Ready once this command (argv list of templates) exits 0.
    #[serde(default)]
    pub command: Option<Sp<Vec<Sp<String>>>>,
    /// How often the probe is checked (default `1s`).
    #[serde(default)]
    pub poll: Option<Sp<Scalar>>,
    /// The attempt fails (and is retried) when it is not ready this long after it started.
    #[serde(default)]
    pub timeout: Option<Sp<Scalar>>,
}

/// Resources of one step (one attempt of one scatter member).
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawResources {
    /// MPI ranks (default 1). Steps with more than one rank are launched with `mpiexec`/`srun`.
    #[serde(default)]
    pub ranks: Option<Sp<Scalar>>,
    /// Threads per rank (default 1).
    #[serde(default)]
    pub threads: Option<Sp<Scalar>>,
    /// Nodes (cluster backends only; default 1).
    #[serde(default)]
    pub nodes: Option<Sp<Scalar>>,
    /// Memory for the whole step (`512M`, `4G`).
    #[serde(default)]
    pub memory: Option<Sp<Scalar>>,
    /// Walltime requested from a batch scheduler (`2h`); the local backend does not enforce it (use `timeout`).
    #[serde(default)]
    pub walltime: Option<Sp<Scalar>>,
    /// GPUs (cluster backends only).
    #[serde(default)]
    pub gpus: Option<Sp<Scalar>>,
}

/// Retry policy.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawRetry {
    /// How many times to retry after the first failure.
    pub count: Sp<u32>,
    /// Delay before the first retry (`1s`); doubled (by `factor`) after every retry.
    #[serde(default)]
    pub backoff: Option<Sp<Scalar>>,
    /// Multiplier applied to the backoff after each retry (default 2).
    #[serde(default)]
    pub factor: Option<Sp<f64>>,
    /// Upper bound of the backoff (default 5m).
    #[serde(default)]
    pub max_backoff: Option<Sp<Scalar>>,
}

/// How a scatter combines its lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ScatterMethod {
    /// Element-wise: all lists have the same length n; n members.
    #[default]
    Dotproduct,
    /// Every combination: the product of the lengths.
    Cartesian,
}

impl ScatterMethod {
    /// The name as written in a workflow.
    pub fn as_str(self) -> &'static str {
        match self {
            ScatterMethod::Dotproduct => "dotproduct",
            ScatterMethod::Cartesian => "cartesian",
        }
    }
}

/// A scatter: run the step once per element of one or more lists.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawScatter {
    /// Variables and their lists (a YAML list or an expression such as
    /// `${{ range(0, params.members) }}` or `${{ steps.sim.out.result }}`); each member sees
    /// its element as `scatter.NAME`.
    pub over: SpMap<serde_json::Value>,
    /// `dotproduct` (default) or `cartesian`.
    #[serde(default)]
    pub method: Option<Sp<ScatterMethod>>,
    /// The lists may be empty: the step then runs no member (and a gather of it sees an
    /// empty list). Without it, a scatter that expands to 0 members is an error.
    #[serde(default)]
    pub allow_empty: Option<Sp<bool>>,
}
