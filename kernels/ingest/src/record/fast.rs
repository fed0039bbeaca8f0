//! One pass over the bytes of a valid record.
//!
//! Accepts only flat JSON objects whose keys and strings have no escapes and whose values
//! are numbers, strings or arrays of numbers, each value of the type and in the range the
//! schema declares. Whatever it does not accept (a problem, an escape, `null`, an
//! undeclared field, a duplicate...) it leaves to the `serde_json` path, which decides and
//! explains; so it needs to be exact only for what it accepts. Number syntax is checked
//! strictly (RFC 8259: `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`); integers of up
//! to 15 digits are converted exactly, other numbers by the standard library's correctly
//! rounded parser.

use super::{Record, Schema, Value};
use crate::schema::{Field, FieldType};

struct Cursor<'a> {
    b: &'a [u8],
    i: usize,
}

/// A number token: its value and whether it was written as an integer.
struct Number {
    value: f64,
    integer: bool,
}

impl<'a> Cursor<'a> {
    fn ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.b.get(self.i) {
            self.i += 1;
        }
    }

    fn eat(&mut self, c: u8) -> Option<()> {
        self.ws();
        (self.b.get(self.i) == Some(&c)).then(|| self.i += 1)
    }

    fn peek(&mut self) -> Option<u8> {
        self.ws();
        self.b.get(self.i).copied()
    }

    /// A string without escapes or control characters.
    fn string(&mut self) -> Option<&'a str> {
        self.eat(b'"')?;
        let start = self.i;
        loop {
            match *self.b.get(self.i)? {
                b'"' => break,
                b'\\' | 0..=0x1f => return None,
                _ => self.i += 1,
            }
        }
        let s = std::str::from_utf8(&self.b[start..self.i]).ok()?;
        self.i += 1;
        Some(s)
    }

    /// Skips ASCII digits from `i`; returns where they end and their value (wrapping
    /// beyond 19 digits: only used up to 15).
    #[inline]
    fn digits(b: &[u8], mut i: usize) -> (usize, u64) {
        let mut v = 0u64;
        while let Some(&c) = b.get(i) {
            let d = c.wrapping_sub(b'0');
            if d > 9 {
                break;
            }
            v = v.wrapping_mul(10).wrapping_add(u64::from(d));
            i += 1;
        }
        (i, v)
    }

    #[inline]
    fn number(&mut self) -> Option<Number> {
        self.ws();
        let b = self.b;
        let start = self.i;
        let negative = b.get(start) == Some(&b'-');
        let int_start = start + usize::from(negative);
        let (mut i, v) = Self::digits(b, int_start);
        let n = i - int_start;
        if n == 0 || (n > 1 && b[int_start] == b'0') {
            return None;
        }
        let mut integer = true;
        if b.get(i) == Some(&b'.') {
            let (end, _) = Self::digits(b, i + 1);
            if end == i + 1 {
                return None;
            }
            i = end;
            integer = false;
        }
        if let Some(b'e' | b'E') = b.get(i) {
            i += 1;
            if let Some(b'+' | b'-') = b.get(i) {
                i += 1;
            }
            let (end, _) = Self::digits(b, i);
            if end == i {
                return None;
            }
            i = end;
            integer = false;
        }
        self.i = i;
        let value = if integer && n <= 15 {
            // Up to 15 digits an integer is exact in u64 and in f64.
            let x = v as f64;
            if negative && v != 0 { -x } else { x } // `-0` reads as 0, as serde_json reads it
        } else {
            std::str::from_utf8(&b[start..i]).ok()?.parse::<f64>().ok()?
        };
        // JSON has no infinities: an overflowing literal is left to serde_json's verdict.
        value.is_finite().then_some(Number { value, integer })
    }
}

/// The accepted range of a numeric field: its own `min`/`max` within its type's.
fn bounds(field: &Field) -> (f64, f64) {
    let (lo, hi) = match field.kind {
        FieldType::I32 => (f64::from(i32::MIN), f64::from(i32::MAX)),
        FieldType::I64 => (-9_007_199_254_740_992.0, 9_007_199_254_740_992.0),
        FieldType::F32 => (-f64::from(f32::MAX), f64::from(f32::MAX)),
        FieldType::F64 | FieldType::String => (f64::MIN, f64::MAX),
    };
    (field.min.map_or(lo, |m| m.max(lo)), field.max.map_or(hi, |m| m.min(hi)))
}

/// A number of `field` within its bounds; integers for integer fields.
fn accept(field: &Field, n: &Number, (lo, hi): (f64, f64)) -> Option<f64> {
    let integral = n.integer || n.value.fract() == 0.0;
    let int_field = matches!(field.kind, FieldType::I32 | FieldType::I64);
    (n.value >= lo && n.value <= hi && (integral || !int_field)).then_some(n.value)
}

fn value(c: &mut Cursor<'_>, field: &Field) -> Option<Value> {
    if field.kind == FieldType::String {
        return c.string().map(|s| Value::Str(s.to_string()));
    }
    let range = bounds(field);
    let Some(len) = field.length else {
        return accept(field, &c.number()?, range).map(Value::Num);
    };
    c.eat(b'[')?;
    let mut values = Vec::with_capacity(len);
    if c.peek()? == b']' {
        c.i += 1;
    } else {
        loop {
            values.push(accept(field, &c.number()?, range)?);
            match c.peek()? {
                b',' => c.i += 1,
                b']' => {
                    c.i += 1;
                    break;
                }
                _ => return None,
            }
        }
    }
    (values.len() == len).then_some(Value::Array(values))
}

/// The record, if the payload is a valid record this scanner accepts.
pub(super) fn parse(schema: &Schema, payload: &[u8]) -> Option<Record> {
    let mut c = Cursor { b: payload, i: 0 };
    c.eat(b'{')?;
    let mut sensor: Option<String> = None;
    let mut time: Option<f64> = None;
    let mut values: Vec<Option<Value>> = vec![None; schema.fields.len()];
    if c.peek()? == b'}' {
        return None;
    }
    loop {
        let key = c.string()?;
        c.eat(b':')?;
        if key == schema.sensor_field {
            let s = c.string()?;
            if s.is_empty() || sensor.replace(s.to_string()).is_some() {
                return None;
            }
        } else if key == schema.time_field {
            if time.replace(c.number()?.value).is_some() {
                return None;
            }
        } else {
            let i = schema.field_index(key)?;
            if values[i].replace(value(&mut c, &schema.fields[i])?).is_some() {
                return None;
            }
        }
        match c.peek()? {
            b',' => c.i += 1,
            b'}' => {
                c.i += 1;
                break;
            }
            _ => return None,
        }
    }
    c.ws();
    if c.i != payload.len() {
        return None;
    }
    let sensor = sensor?;
    if schema.sensors.as_ref().is_some_and(|allowed| !allowed.contains(&sensor)) {
        return None;
    }
    let mut out = Vec::with_capacity(values.len());
    for (field, v) in schema.fields.iter().zip(values) {
        match v {
            Some(v) => out.push(v),
            None if field.required => return None,
            None => out.push(Value::Missing),
        }
    }
    Some(Record { sensor, time: time?, values: out })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn schema() -> Schema {
        Schema::parse(
            "fields:\n  v: {type: f64, min: -1, max: 1}\n  n: {type: i32, min: 0}\n  \
             a: {type: f32, length: 3}\n  s: {type: string, required: false}\n",
            Path::new("s.yaml"),
        )
        .unwrap()
    }

    #[test]
    fn valid_records_are_read_exactly() {
        let r = parse(
            &schema(),
            b" {\"sensor\":\"x\", \"time\" : 17.25,\"v\":-0.5e0,\"n\":12,\"a\":[1, -2.5, 3e2],\"s\":\"ok\"}\n",
        )
        .unwrap();
        assert_eq!(r.sensor, "x");
        assert_eq!(r.time, 17.25);
        assert_eq!(
            r.values,
            [Value::Num(-0.5), Value::Num(12.0), Value::Array(vec![1.0, -2.5, 300.0]), Value::Str("ok".into())]
        );
    }

    #[test]
    fn anything_unusual_is_left_to_serde_json() {
        let ok = r#""sensor":"x","time":1,"v":0,"n":1,"a":[1,2,3]"#;
        assert!(parse(&schema(), format!("{{{ok}}}").as_bytes()).is_some());
        for bad in [
            format!("{{{ok},}}"),                // trailing comma
            format!("{{{ok}}} x"),               // trailing text
            format!("{{{ok},\"s\":\"a\\nb\"}}"), // an escape
            format!("{{{ok},\"z\":1}}"),         // undeclared field
            format!("{{{ok},\"v\":0}}"),         // duplicate
            format!("{{{ok},\"s\":null}}"),      // null
            ok.replace("\"v\":0", "\"v\":2"),    // out of range (no braces: also invalid)
            format!("{{{}}}", ok.replace("\"v\":0", "\"v\":2")),
            format!("{{{}}}", ok.replace("\"n\":1", "\"n\":1.5")),
            format!("{{{}}}", ok.replace("\"n\":1", "\"n\":01")),
            format!("{{{}}}", ok.replace("\"n\":1", "\"n\":-1")),
            format!("{{{}}}", ok.replace("[1,2,3]", "[1,2]")),
            format!("{{{}}}", ok.replace("[1,2,3]", "[1,2,3,]")),
            format!("{{{}}}", ok.replace("[1,2,3]", "[1,,3]")),
            format!("{{{}}}", ok.replace("[1,2,3]", "[1.,2,3]")),
            format!("{{{}}}", ok.replace("[1,2,3]", "[1e999,2,3]")),
            format!("{{{}}}", ok.replace("\"time\":1", "\"time\":\"1\"")),
            format!("{{{}}}", ok.replace("\"sensor\":\"x\"", "\"sensor\":\"\"")),
            format!("{{{}}}", ok.replace(",\"n\":1", "")),
        ] {
            assert!(parse(&schema(), bad.as_bytes()).is_none(), "accepted {bad}");
        }
    }
}
