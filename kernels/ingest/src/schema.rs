//! The declared shape of a stream's records: a small YAML or JSON file.
//!
//! ```yaml
//! title: river gauges              # optional, copied to the window files
//! sensor_field: sensor             # the field naming the sensor (default `sensor`)
//! time_field: time                 # the field holding the record's time (default `time`)
//! time_units: seconds since 1970-01-01 00:00:00 UTC   # (the default)
//! sensors: [g1, g2, g3]            # optional: the only sensor ids accepted
//! unknown_fields: reject           # or `ignore` (default `reject`)
//! max_bytes: 65536                 # optional: larger payloads are dead-lettered
//! fields:
//!   level: {type: f64, units: m, long_name: water level, min: -5, max: 50}
//!   battery: {type: f32, units: V, min: 0, max: 5, required: false}
//!   adc: {type: i32, length: 64, dim: sample, units: count, min: 0, max: 4095}
//!   status: {type: string}
//! ```
//!
//! A record is one JSON object per MQTT message, e.g.
//! `{"sensor": "g1", "time": 1733400000.5, "level": 1.23, "adc": [512, 498, …]}`. Its
//! sensor is a non-empty string, its time a finite number that increases strictly per
//! sensor (checked across windows and restarts by the ingest). Each field has a `type`
//! (`f64`, `f32`, `i32`, `i64`: numbers, integers must be integral and in range;
//! `string`), optional `units` (UDUNITS, default `1`), `long_name`, `standard_name`, an
//! inclusive range `min`/`max` (numbers), `required` (default `true`; a missing optional
//! number is written as the fill value −9999, a missing string as ``) and, for a fixed-size
//! array of numbers, `length` with the name of its dimension `dim` (default
//! `<field>_index`). Every field becomes one variable along the window's `record`
//! dimension (`[record, dim]` for arrays).

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use indexmap::IndexMap;
use serde::Deserialize;
use twinflow_contract::stream;

/// Default `time_units`: Unix time.
pub const UNIX_TIME_UNITS: &str = "seconds since 1970-01-01 00:00:00 UTC";

/// Stored type of a field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FieldType {
    /// 64-bit float.
    F64,
    /// 32-bit float (values outside its range are rejected).
    F32,
    /// 32-bit integer.
    I32,
    /// 64-bit integer (exact up to 2⁵³).
    I64,
    /// UTF-8 text.
    String,
}

impl FieldType {
    /// The name used in the schema and in messages.
    pub fn name(self) -> &'static str {
        match self {
            Self::F64 => "f64",
            Self::F32 => "f32",
            Self::I32 => "i32",
            Self::I64 => "i64",
            Self::String => "string",
        }
    }
}

/// What to do with a field the schema does not declare.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UnknownFields {
    /// Dead-letter the record.
    #[default]
    Reject,
    /// Drop the field, keep the record.
    Ignore,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSchema {
    title: Option<String>,
    #[serde(default = "default_sensor_field")]
    sensor_field: String,
    #[serde(default = "default_time_field")]
    time_field: String,
    time_units: Option<String>,
    sensors: Option<Vec<String>>,
    #[serde(default)]
    unknown_fields: UnknownFields,
    max_bytes: Option<usize>,
    fields: IndexMap<String, RawField>,
}

fn default_sensor_field() -> String {
    "sensor".into()
}

fn default_time_field() -> String {
    "time".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawField {
    #[serde(rename = "type")]
    kind: FieldType,
    units: Option<String>,
    long_name: Option<String>,
    standard_name: Option<String>,
    min: Option<f64>,
    max: Option<f64>,
    #[serde(default = "yes")]
    required: bool,
    length: Option<usize>,
    dim: Option<String>,
}

fn yes() -> bool {
    true
}

/// One declared field.
#[derive(Debug, Clone, PartialEq)]
pub struct Field {
    /// Name in the payload and of the variable.
    pub name: String,
    /// Stored type.
    pub kind: FieldType,
    /// CF `units`.
    pub units: String,
    /// CF `long_name` (the name when not given).
    pub long_name: String,
    /// CF `standard_name`.
    pub standard_name: Option<String>,
    /// Smallest value accepted (inclusive).
    pub min: Option<f64>,
    /// Largest value accepted (inclusive).
    pub max: Option<f64>,
    /// Whether a record must have it.
    pub required: bool,
    /// Length of a fixed-size array field (`None`: a scalar).
    pub length: Option<usize>,
    /// Dimension of an array field.
    pub dim: Option<String>,
}

/// A validated schema.
#[derive(Debug, Clone, PartialEq)]
pub struct Schema {
    /// Title copied to the window files.
    pub title: String,
    /// Field naming the sensor.
    pub sensor_field: String,
    /// Field holding the time.
    pub time_field: String,
    /// Units of the time (CF).
    pub time_units: String,
    /// The only sensors accepted, when declared.
    pub sensors: Option<HashSet<String>>,
    /// What to do with undeclared fields.
    pub unknown_fields: UnknownFields,
    /// Largest payload accepted, bytes.
    pub max_bytes: Option<usize>,
    /// Declared fields, in file order.
    pub fields: Vec<Field>,
}

/// A schema file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    /// The file cannot be read.
    #[error("cannot read the schema `{path}`")]
    Read {
        /// The file.
        path: PathBuf,
        /// OS error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a schema (syntax, unknown keys, wrong types).
    #[error("invalid schema `{path}`: {message}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// What the parser says.
        message: String,
    },
    /// The schema parses but contradicts itself.
    #[error("invalid schema `{path}`: {}", problems.join("; "))]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Every problem found.
        problems: Vec<String>,
    },
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic()) && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl Schema {
    /// Reads a schema: JSON when the file ends in `.json`, YAML otherwise.
    pub fn load(path: &Path) -> Result<Self, SchemaError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| SchemaError::Read { path: path.to_path_buf(), source })?;
        Self::parse(&text, path)
    }

    /// Parses a schema from text; `path` names it in messages and decides JSON or YAML.
    pub fn parse(text: &str, path: &Path) -> Result<Self, SchemaError> {
        let syntax = |message: String| SchemaError::Syntax { path: path.to_path_buf(), message };
        let raw: RawSchema = if path.extension().is_some_and(|e| e == "json") {
            serde_json::from_str(text).map_err(|e| syntax(e.to_string()))?
        } else {
            serde_saphyr::from_str(text).map_err(|e| syntax(e.to_string()))?
        };
        Self::validate(raw).map_err(|problems| SchemaError::Invalid { path: path.to_path_buf(), problems })
    }

    fn validate(raw: RawSchema) -> Result<Self, Vec<String>> {
        let mut problems = Vec::new();
        let reserved = [stream::RECORD, stream::SENSOR, stream::SENSOR_NAME, stream::SENSOR_INDEX, stream::TIME];
        for (what, name) in [("sensor_field", &raw.sensor_field), ("time_field", &raw.time_field)] {
            if name.is_empty() {
                problems.push(format!("`{what}` is empty"));
            }
        }
        if raw.sensor_field == raw.time_field {
            problems.push(format!("`sensor_field` and `time_field` are both `{}`", raw.sensor_field));
        }
        if raw.fields.is_empty() {
            problems.push("`fields` is empty; hint: declare at least one field besides sensor and time".into());
        }
        if raw.max_bytes == Some(0) {
            problems.push("`max_bytes` must be > 0".into());
        }
        if let Some(sensors) = &raw.sensors
            && sensors.iter().any(String::is_empty)
        {
            problems.push("`sensors` lists an empty id".into());
        }
        let mut dims: Vec<String> = Vec::new();
        let mut fields = Vec::new();
        for (name, f) in raw.fields {
            let at = |p: &str| format!("field `{name}`: {p}");
            if !valid_name(&name) {
                problems.push(at("names must start with a letter and hold only letters, digits and `_`"));
            }
            if name == raw.sensor_field || name == raw.time_field {
                problems.push(at("is the sensor or time field, which are declared by `sensor_field`/`time_field`"));
            }
            if reserved.contains(&name.as_str()) {
                problems.push(at(&format!("the name is taken by the window files ({})", reserved.join(", "))));
            }
            let numeric = f.kind != FieldType::String;
            if !numeric && (f.min.is_some() || f.max.is_some() || f.length.is_some()) {
                problems.push(at("a `string` field takes no `min`, `max` or `length`"));
            }
            if let (Some(lo), Some(hi)) = (f.min, f.max)
                && lo > hi
            {
                problems.push(at(&format!("`min` {lo} is above `max` {hi}")));
            }
            if f.length == Some(0) {
                problems.push(at("`length` must be > 0"));
            }
            if f.dim.is_some() && f.length.is_none() {
                problems.push(at("`dim` needs `length`"));
            }
            let dim = f.length.map(|_| f.dim.clone().unwrap_or_else(|| format!("{name}_index")));
            if let Some(d) = &dim {
                if !valid_name(d) || reserved.contains(&d.as_str()) {
                    problems.push(at(&format!("`dim` `{d}` is not a usable dimension name")));
                }
                // Two arrays may share a dimension only with the same length.
                if let Some(other) = fields.iter().find(|g: &&Field| g.dim.as_deref() == Some(d.as_str()))
                    && other.length != f.length
                {
                    problems.push(at(&format!(
                        "dimension `{d}` has length {} in field `{}`",
                        other.length.unwrap_or(0),
                        other.name
                    )));
                }
                dims.push(d.clone());
            }
            fields.push(Field {
                long_name: f.long_name.unwrap_or_else(|| name.clone()),
                units: f.units.unwrap_or_else(|| "1".into()),
                standard_name: f.standard_name,
                kind: f.kind,
                min: f.min,
                max: f.max,
                required: f.required,
                length: f.length,
                dim,
                name,
            });
        }
        for d in &dims {
            if fields.iter().any(|f| &f.name == d) {
                problems.push(format!("dimension `{d}` has the name of a field"));
            }
        }
        if !problems.is_empty() {
            problems.dedup();
            return Err(problems);
        }
        Ok(Self {
            title: raw.title.unwrap_or_else(|| "twinflow stream ingest".into()),
            sensor_field: raw.sensor_field,
            time_field: raw.time_field,
            time_units: raw.time_units.unwrap_or_else(|| UNIX_TIME_UNITS.into()),
            sensors: raw.sensors.map(|s| s.into_iter().collect()),
            unknown_fields: raw.unknown_fields,
            max_bytes: raw.max_bytes,
            fields,
        })
    }

    /// Index of a declared field by name.
    pub fn field_index(&self, name: &str) -> Option<usize> {
        self.fields.iter().position(|f| f.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Schema, SchemaError> {
        Schema::parse(text, Path::new("s.yaml"))
    }

    #[test]
    fn a_full_schema_parses_with_defaults() {
        let s = parse(
            "title: gauges\nsensors: [g1, g2]\nfields:\n  level: {type: f64, units: m, min: -5, max: 50}\n  \
             adc: {type: i32, length: 4, dim: sample}\n  note: {type: string, required: false}\n",
        )
        .unwrap();
        assert_eq!((s.sensor_field.as_str(), s.time_field.as_str()), ("sensor", "time"));
        assert_eq!(s.time_units, UNIX_TIME_UNITS);
        assert_eq!(s.unknown_fields, UnknownFields::Reject);
        assert_eq!(s.fields.len(), 3);
        assert_eq!(s.fields[0].units, "m");
        assert_eq!(s.fields[1].dim.as_deref(), Some("sample"));
        assert_eq!(s.fields[2].units, "1");
        assert!(!s.fields[2].required);
        assert!(s.sensors.unwrap().contains("g2"));
    }

    #[test]
    fn json_schemas_are_read_by_extension() {
        let s = Schema::parse(r#"{"fields": {"v": {"type": "f32"}}}"#, Path::new("s.json")).unwrap();
        assert_eq!(s.fields[0].kind, FieldType::F32);
    }

    #[test]
    fn every_problem_is_reported() {
        let err = parse(
            "fields:\n  time: {type: f64}\n  1x: {type: f64}\n  s: {type: string, min: 0}\n  \
             r: {type: f64, min: 5, max: 1}\n  a: {type: f32, length: 0}\n  sensor_index: {type: i32}\n",
        )
        .unwrap_err();
        let text = err.to_string();
        for needle in [
            "field `time`: is the sensor or time field",
            "field `1x`: names must start with a letter",
            "field `s`: a `string` field takes no",
            "field `r`: `min` 5 is above `max` 1",
            "field `a`: `length` must be > 0",
            "field `sensor_index`: the name is taken",
        ] {
            assert!(text.contains(needle), "{needle} missing from: {text}");
        }
    }

    #[test]
    fn unknown_keys_and_types_are_syntax_errors() {
        let err = parse("fields:\n  v: {type: f16}\n").unwrap_err();
        assert!(matches!(err, SchemaError::Syntax { .. }), "{err}");
        let err = parse("fields:\n  v: {type: f64, unit: m}\n").unwrap_err();
        assert!(err.to_string().contains("unit"), "{err}");
    }

    #[test]
    fn arrays_sharing_a_dimension_must_agree_on_its_length() {
        let err =
            parse("fields:\n  a: {type: f32, length: 4, dim: s}\n  b: {type: f32, length: 5, dim: s}\n").unwrap_err();
        assert!(err.to_string().contains("dimension `s` has length 4 in field `a`"), "{err}");
    }
}
