//! One message's payload checked against the [`Schema`]: a [`Record`] or the reason it
//! is rejected ([`Rejection`]).
//!
//! A valid record is read in one pass by a strict scanner of flat JSON objects
//! ([`fast`]: keys without escapes, numbers, strings without escapes, arrays of numbers),
//! straight into the record's values. Anything else, and every record with a problem, goes
//! through `serde_json` with a visitor driven by the schema (no intermediate JSON tree),
//! which decides and names the reason: the first problem found, the rest of the payload
//! still consumed so a syntax error later in the text is not mistaken for it. Monotonic time per sensor is
//! the ingest's check ([`crate::ingest`]), as it needs the stream's history.

use std::fmt;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::schema::{Field, FieldType, Schema, UnknownFields};

mod fast;

/// A field's value in a record.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A number (integers as their exact `f64`).
    Num(f64),
    /// A fixed-size array of numbers.
    Array(Vec<f64>),
    /// Text.
    Str(String),
    /// An optional field the record does not have.
    Missing,
}

/// A valid record.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// Sensor id.
    pub sensor: String,
    /// Time, in the schema's `time_units`.
    pub time: f64,
    /// Values in the order of the schema's fields.
    pub values: Vec<Value>,
}

/// Why a record is dead-lettered (written as `reason` in the dead-letter file).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectKind {
    /// The payload is not JSON (or not UTF-8).
    NotJson,
    /// The payload is JSON but not an object.
    NotObject,
    /// The payload is larger than the schema's `max_bytes`.
    TooLarge,
    /// A required field (or the sensor or time) is missing.
    MissingField,
    /// A field appears twice.
    DuplicateField,
    /// A field the schema does not declare (with `unknown_fields: reject`).
    UnknownField,
    /// A value of the wrong JSON type, or a fraction for an integer field.
    WrongType,
    /// An array of the wrong length.
    WrongLength,
    /// A number outside the declared range (or outside its type's range).
    OutOfRange,
    /// A sensor id outside the declared `sensors`.
    UnknownSensor,
    /// A time not after the sensor's previous record.
    TimeNotIncreasing,
}

impl RejectKind {
    /// The code written to the dead-letter file.
    pub fn code(self) -> &'static str {
        match self {
            Self::NotJson => "not_json",
            Self::NotObject => "not_object",
            Self::TooLarge => "too_large",
            Self::MissingField => "missing_field",
            Self::DuplicateField => "duplicate_field",
            Self::UnknownField => "unknown_field",
            Self::WrongType => "wrong_type",
            Self::WrongLength => "wrong_length",
            Self::OutOfRange => "out_of_range",
            Self::UnknownSensor => "unknown_sensor",
            Self::TimeNotIncreasing => "time_not_increasing",
        }
    }
}

/// A rejected record: the kind and a message naming the field and value.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    /// Kind of problem.
    pub kind: RejectKind,
    /// What is wrong, in the project's message style.
    pub detail: String,
}

impl Rejection {
    /// A rejection of `kind` with `detail`.
    pub fn new(kind: RejectKind, detail: impl Into<String>) -> Self {
        Self { kind, detail: detail.into() }
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind.code(), self.detail)
    }
}

/// Checks one payload against `schema`.
pub fn parse(schema: &Schema, payload: &[u8]) -> Result<Record, Rejection> {
    if let Some(max) = schema.max_bytes
        && payload.len() > max
    {
        return Err(Rejection::new(
            RejectKind::TooLarge,
            format!("the payload has {} bytes, more than `max_bytes` {max}", payload.len()),
        ));
    }
    match fast::parse(schema, payload) {
        Some(record) => Ok(record),
        None => parse_with_serde(schema, payload),
    }
}

/// The `serde_json` path: decides every payload, explains every rejection.
fn parse_with_serde(schema: &Schema, payload: &[u8]) -> Result<Record, Rejection> {
    let mut de = serde_json::Deserializer::from_slice(payload);
    let outcome = RecordSeed { schema }.deserialize(&mut de).and_then(|r| de.end().map(|()| r));
    match outcome {
        Ok(result) => result,
        Err(e) => Err(Rejection::new(RejectKind::NotJson, format!("the payload is not JSON ({e})"))),
    }
}

/// What a JSON value was, when it is not the number or text expected.
#[derive(Debug)]
enum Seen {
    Num(f64),
    Str(String),
    Other(&'static str),
}

impl Seen {
    fn describe(&self) -> String {
        match self {
            Self::Num(x) => format!("the number {x}"),
            Self::Str(s) => format!("the string \"{}\"", s.chars().take(40).collect::<String>()),
            Self::Other(what) => (*what).to_string(),
        }
    }
}

struct SeenVisitor;

impl<'de> Visitor<'de> for SeenVisitor {
    type Value = Seen;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Seen, E> {
        Ok(Seen::Other("a boolean"))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Seen, E> {
        Ok(Seen::Num(v as f64))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Seen, E> {
        Ok(Seen::Num(v as f64))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Seen, E> {
        Ok(Seen::Num(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Seen, E> {
        Ok(Seen::Str(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Seen, E> {
        Ok(Seen::Str(v))
    }
    fn visit_unit<E>(self) -> Result<Seen, E> {
        Ok(Seen::Other("null"))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Seen, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Seen::Other("an array"))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Seen, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Seen::Other("an object"))
    }
}

impl<'de> de::Deserialize<'de> for Seen {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(SeenVisitor)
    }
}

/// Checks a number against a field's type and range.
fn check_number(field: &Field, x: f64, at: &dyn Fn() -> String) -> Result<f64, Rejection> {
    let wrong = |what: &str| Rejection::new(RejectKind::WrongType, format!("{} {what}", at()));
    let range = |what: String| Rejection::new(RejectKind::OutOfRange, format!("{} {what}", at()));
    match field.kind {
        FieldType::I32 | FieldType::I64 if x.fract() != 0.0 => {
            return Err(wrong(&format!("is {x}, not an integer (`{}`)", field.kind.name())));
        }
        FieldType::I32 if !(f64::from(i32::MIN)..=f64::from(i32::MAX)).contains(&x) => {
            return Err(range(format!("is {x}, outside the range of `i32`")));
        }
        FieldType::I64 if x.abs() > 9_007_199_254_740_992.0 => {
            return Err(range(format!("is {x}, beyond the integers an `f64` holds exactly (2^53)")));
        }
        FieldType::F32 if x.abs() > f64::from(f32::MAX) => {
            return Err(range(format!("is {x}, outside the range of `f32`")));
        }
        _ => {}
    }
    if let Some(lo) = field.min
        && x < lo
    {
        return Err(range(format!("is {x}, below the minimum {lo}")));
    }
    if let Some(hi) = field.max
        && x > hi
    {
        return Err(range(format!("is {x}, above the maximum {hi}")));
    }
    Ok(x)
}

/// Reads one declared field's value.
struct FieldSeed<'a> {
    field: &'a Field,
}

impl<'de> DeserializeSeed<'de> for FieldSeed<'_> {
    type Value = Result<Value, Rejection>;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        if self.field.length.is_some() { d.deserialize_any(ArrayVisitor(self.field)) } else { scalar(self.field, d) }
    }
}

fn scalar<'de, D: de::Deserializer<'de>>(field: &Field, d: D) -> Result<Result<Value, Rejection>, D::Error> {
    let seen = <Seen as de::Deserialize>::deserialize(d)?;
    let at = || format!("field `{}`", field.name);
    Ok(match (field.kind, seen) {
        (FieldType::String, Seen::Str(s)) => Ok(Value::Str(s)),
        (FieldType::String, other) => {
            Err(Rejection::new(RejectKind::WrongType, format!("{} is {}, expected a string", at(), other.describe())))
        }
        (_, Seen::Num(x)) => check_number(field, x, &at).map(Value::Num),
        (kind, other) => Err(Rejection::new(
            RejectKind::WrongType,
            format!("{} is {}, expected a number (`{}`)", at(), other.describe(), kind.name()),
        )),
    })
}

struct ArrayVisitor<'a>(&'a Field);

impl<'de> Visitor<'de> for ArrayVisitor<'_> {
    type Value = Result<Value, Rejection>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of numbers")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let field = self.0;
        let want = field.length.unwrap_or(0);
        let mut values = Vec::with_capacity(want);
        let mut problem: Option<Rejection> = None;
        let mut k = 0usize;
        while let Some(seen) = seq.next_element::<Seen>()? {
            if problem.is_none() {
                let at = || format!("field `{}`[{k}]", field.name);
                match seen {
                    Seen::Num(x) => match check_number(field, x, &at) {
                        Ok(x) => values.push(x),
                        Err(r) => problem = Some(r),
                    },
                    other => {
                        problem = Some(Rejection::new(
                            RejectKind::WrongType,
                            format!("{} is {}, expected a number (`{}`)", at(), other.describe(), field.kind.name()),
                        ))
                    }
                }
            }
            k += 1;
        }
        if let Some(p) = problem {
            return Ok(Err(p));
        }
        if k != want {
            return Ok(Err(Rejection::new(
                RejectKind::WrongLength,
                format!("field `{}` has {k} values, expected {want}", field.name),
            )));
        }
        Ok(Ok(Value::Array(values)))
    }
    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(self.not_array("a boolean"))
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(self.not_array("a number"))
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(self.not_array("a number"))
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(self.not_array("a number"))
    }
    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(self.not_array("a string"))
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(self.not_array("null"))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(self.not_array("an object"))
    }
}

impl ArrayVisitor<'_> {
    fn not_array(&self, what: &str) -> Result<Value, Rejection> {
        Err(Rejection::new(
            RejectKind::WrongType,
            format!("field `{}` is {what}, expected an array of {} numbers", self.0.name, self.0.length.unwrap_or(0)),
        ))
    }
}

struct RecordSeed<'a> {
    schema: &'a Schema,
}

impl<'de> DeserializeSeed<'de> for RecordSeed<'_> {
    type Value = Result<Record, Rejection>;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for RecordSeed<'_> {
    type Value = Result<Record, Rejection>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let schema = self.schema;
        let mut sensor: Option<String> = None;
        let mut time: Option<f64> = None;
        let mut values: Vec<Option<Value>> = vec![None; schema.fields.len()];
        let mut problem: Option<Rejection> = None;
        let mut note = |r: Rejection| {
            if problem.is_none() {
                problem = Some(r);
            }
        };
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            let key: &str = &key;
            let twice = || Rejection::new(RejectKind::DuplicateField, format!("field `{key}` appears twice"));
            if key == schema.sensor_field {
                match map.next_value::<Seen>()? {
                    Seen::Str(s) if !s.is_empty() => {
                        if sensor.replace(s).is_some() {
                            note(twice());
                        }
                    }
                    other => note(Rejection::new(
                        RejectKind::WrongType,
                        format!("sensor field `{key}` is {}, expected a non-empty string", other.describe()),
                    )),
                }
            } else if key == schema.time_field {
                match map.next_value::<Seen>()? {
                    Seen::Num(t) => {
                        if time.replace(t).is_some() {
                            note(twice());
                        }
                    }
                    other => note(Rejection::new(
                        RejectKind::WrongType,
                        format!("time field `{key}` is {}, expected a number", other.describe()),
                    )),
                }
            } else if let Some(i) = schema.field_index(key) {
                match map.next_value_seed(FieldSeed { field: &schema.fields[i] })? {
                    Ok(v) => {
                        if values[i].replace(v).is_some() {
                            note(twice());
                        }
                    }
                    Err(r) => note(r),
                }
            } else {
                map.next_value::<IgnoredAny>()?;
                if schema.unknown_fields == UnknownFields::Reject {
                    note(Rejection::new(
                        RejectKind::UnknownField,
                        format!(
                            "field `{key}` is not in the schema; hint: declare it, or set `unknown_fields: ignore`"
                        ),
                    ));
                }
            }
        }
        if let Some(p) = problem {
            return Ok(Err(p));
        }
        let missing =
            |name: &str| Ok(Err(Rejection::new(RejectKind::MissingField, format!("field `{name}` is missing"))));
        let Some(sensor) = sensor else { return missing(&schema.sensor_field) };
        let Some(time) = time else { return missing(&schema.time_field) };
        if let Some(allowed) = &schema.sensors
            && !allowed.contains(&sensor)
        {
            return Ok(Err(Rejection::new(
                RejectKind::UnknownSensor,
                format!("sensor `{sensor}` is not one of the schema's `sensors`"),
            )));
        }
        let mut out = Vec::with_capacity(values.len());
        for (field, v) in schema.fields.iter().zip(values) {
            match v {
                Some(v) => out.push(v),
                None if field.required => return missing(&field.name),
                None => out.push(Value::Missing),
            }
        }
        Ok(Ok(Record { sensor, time, values: out }))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Err(Rejection::new(RejectKind::NotObject, "the payload is a JSON array, not an object")))
    }
    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(not_object("a boolean"))
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(not_object("a number"))
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(not_object("a number"))
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(not_object("a number"))
    }
    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(not_object("a string"))
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(not_object("null"))
    }
}

fn not_object(what: &str) -> Result<Record, Rejection> {
    Err(Rejection::new(RejectKind::NotObject, format!("the payload is {what}, not a JSON object")))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn schema() -> Schema {
        Schema::parse(
            "sensors: [g1, g2]\nfields:\n  level: {type: f64, units: m, min: -5, max: 50}\n  \
             count: {type: i32, min: 0}\n  adc: {type: i32, length: 3, min: 0, max: 4095}\n  \
             note: {type: string, required: false}\n",
            Path::new("s.yaml"),
        )
        .unwrap()
    }

    fn kind(payload: &str) -> RejectKind {
        parse(&schema(), payload.as_bytes()).unwrap_err().kind
    }

    #[test]
    fn a_valid_record_keeps_its_values_in_schema_order() {
        let r = parse(
            &schema(),
            br#"{"adc": [1, 2, 4095], "time": 1733400000.5, "count": 7, "sensor": "g1", "level": 1.25}"#,
        )
        .unwrap();
        assert_eq!(r.sensor, "g1");
        assert_eq!(r.time, 1733400000.5);
        assert_eq!(r.values, [Value::Num(1.25), Value::Num(7.0), Value::Array(vec![1.0, 2.0, 4095.0]), Value::Missing]);
    }

    #[test]
    fn each_problem_has_its_reason() {
        let ok = r#""sensor": "g1", "time": 1, "level": 1, "count": 1, "adc": [0, 0, 0]"#;
        assert_eq!(kind("{"), RejectKind::NotJson);
        assert_eq!(kind("\u{0}"), RejectKind::NotJson);
        assert_eq!(kind("[1, 2]"), RejectKind::NotObject);
        assert_eq!(kind("42"), RejectKind::NotObject);
        assert_eq!(kind(r#"{"sensor": "g1", "level": 1, "count": 1, "adc": [0, 0, 0]}"#), RejectKind::MissingField);
        assert_eq!(kind(r#"{"time": 1, "level": 1, "count": 1, "adc": [0, 0, 0]}"#), RejectKind::MissingField);
        assert_eq!(kind(r#"{"sensor": "g1", "time": 1, "count": 1, "adc": [0, 0, 0]}"#), RejectKind::MissingField);
        assert_eq!(kind(&format!("{{{ok}, \"extra\": 1}}")), RejectKind::UnknownField);
        assert_eq!(kind(&format!("{{{ok}, \"level\": 2}}")), RejectKind::DuplicateField);
        assert_eq!(
            kind(r#"{"sensor": "g1", "time": 1, "level": "high", "count": 1, "adc": [0, 0, 0]}"#),
            RejectKind::WrongType
        );
        assert_eq!(
            kind(r#"{"sensor": "g1", "time": 1, "level": 1, "count": 1.5, "adc": [0, 0, 0]}"#),
            RejectKind::WrongType
        );
        assert_eq!(
            kind(r#"{"sensor": "g1", "time": "noon", "level": 1, "count": 1, "adc": [0, 0, 0]}"#),
            RejectKind::WrongType
        );
        assert_eq!(
            kind(r#"{"sensor": 3, "time": 1, "level": 1, "count": 1, "adc": [0, 0, 0]}"#),
            RejectKind::WrongType
        );
        assert_eq!(
            kind(r#"{"sensor": "g1", "time": 1, "level": 1, "count": 1, "adc": [0, null, 0]}"#),
            RejectKind::WrongType
        );
        assert_eq!(kind(r#"{"sensor": "g1", "time": 1, "level": 1, "count": 1, "adc": 5}"#), RejectKind::WrongType);
        assert_eq!(
            kind(r#"{"sensor": "g1", "time": 1, "level": 1, "count": 1, "adc": [0, 0]}"#),
            RejectKind::WrongLength
        );
        assert_eq!(
            kind(r#"{"sensor": "g1", "time": 1, "level": 51, "count": 1, "adc": [0, 0, 0]}"#),
            RejectKind::OutOfRange
        );
        assert_eq!(
            kind(r#"{"sensor": "g1", "time": 1, "level": 1, "count": -1, "adc": [0, 0, 0]}"#),
            RejectKind::OutOfRange
        );
        assert_eq!(
            kind(r#"{"sensor": "g1", "time": 1, "level": 1, "count": 1, "adc": [0, 4096, 0]}"#),
            RejectKind::OutOfRange
        );
        assert_eq!(
            kind(r#"{"sensor": "g1", "time": 1, "level": 1, "count": 3000000000, "adc": [0, 0, 0]}"#),
            RejectKind::OutOfRange
        );
        assert_eq!(
            kind(r#"{"sensor": "g9", "time": 1, "level": 1, "count": 1, "adc": [0, 0, 0]}"#),
            RejectKind::UnknownSensor
        );
        // Trailing text after a valid object is a syntax error, not a valid record.
        assert_eq!(kind(&format!("{{{ok}}} x")), RejectKind::NotJson);
    }

    #[test]
    fn messages_name_the_field_and_the_value() {
        let r =
            parse(&schema(), br#"{"sensor": "g1", "time": 1, "level": 51, "count": 1, "adc": [0, 0, 0]}"#).unwrap_err();
        assert_eq!(r.to_string(), "out_of_range: field `level` is 51, above the maximum 50");
        let r = parse(&schema(), br#"{"sensor": "g1", "time": 1, "level": 1, "count": 1, "adc": [0, 9999, 0]}"#)
            .unwrap_err();
        assert_eq!(r.detail, "field `adc`[1] is 9999, above the maximum 4095");
    }

    #[test]
    fn the_fast_scanner_and_serde_json_read_valid_records_alike() {
        let mut s = schema();
        s.fields[2].length = Some(6);
        s.fields[2].kind = FieldType::F64;
        (s.fields[2].min, s.fields[2].max) = (None, None);
        for text in [
            r#"{"sensor": "g1", "time": 1, "level": 1, "count": 1, "adc": [ 0 , 123456789012345678, 1.5e3, -0.25, 7E-1 ,3]}"#,
            r#"{"adc":[0,0,0,0,0,0],"count":2147483647,"level":-5,"time":-1e-300,"sensor":"g2","note":"é ü"}"#,
            "{\"sensor\":\"g1\",\"time\":0.1,\"level\":0.30000000000000004,\"count\":0,\"adc\":[1,2,3,4,5,6]}\n",
        ] {
            let fast = fast::parse(&s, text.as_bytes()).unwrap_or_else(|| panic!("not taken: {text}"));
            assert_eq!(Ok(fast), parse_with_serde(&s, text.as_bytes()), "{text}");
        }
        // Elements that are not numbers are reported by the visitor, with their index.
        let r = parse(&s, br#"{"sensor": "g1", "time": 1, "level": 1, "count": 1, "adc": [1, 2, "x", 4, 5, 6]}"#)
            .unwrap_err();
        assert_eq!(r.detail, "field `adc`[2] is the string \"x\", expected a number (`f64`)");
        let r = parse(&s, br#"{"sensor": "g1", "time": 1, "level": 1, "count": 1, "adc": []}"#).unwrap_err();
        assert_eq!(r.kind, RejectKind::WrongLength);
    }

    #[test]
    fn ignored_unknown_fields_and_too_large_payloads() {
        let mut s = schema();
        s.unknown_fields = UnknownFields::Ignore;
        let r = parse(&s, br#"{"sensor": "g2", "time": 2, "level": 0, "count": 0, "adc": [0, 0, 0], "x": {"y": [1]}}"#);
        assert!(r.is_ok(), "{r:?}");
        s.max_bytes = Some(10);
        assert_eq!(parse(&s, &[b' '; 11]).unwrap_err().kind, RejectKind::TooLarge);
    }
}
