//! A window of records as columns, and its exchange file.
//!
//! Layout (CF discrete sampling geometry, indexed ragged array of time series):
//!
//! ```text
//! dimensions: record = UNLIMITED (n records, arrival order); sensor = m; <dim> = length
//! string sensor_name(sensor)        cf_role = "timeseries_id"
//! int    sensor_index(record)       instance_dimension = "sensor"
//! double time(record)               units = <schema time_units>, standard_name = "time"
//! <type> <field>(record[, <dim>])   units, long_name, valid_min, valid_max, _FillValue
//! global: featureType = "timeSeries", window_index, records_in, records_written,
//!         records_dead_lettered, records_duplicate, window_time_min/max,
//!         time_coverage_start/end (ISO 8601, Unix time units only), mqtt_topics, ...
//! ```
//!
//! Record columns are chunked and compressed by the exchange layer (deflate + shuffle).

use indexmap::IndexMap;
use twinflow_contract::{cf, stream};
use twinflow_exchange::{Attr, DType, Dataset, Dim, Provenance, Values, Variable};

use crate::record::{Record, Value};
use crate::schema::{FieldType, Schema, UNIX_TIME_UNITS};

/// Records of one window, column by column.
#[derive(Debug)]
pub struct Columns {
    sensors: IndexMap<String, usize>,
    sensor_index: Vec<f64>,
    time: Vec<f64>,
    values: Vec<Values>,
}

impl Columns {
    /// No records yet, with a column per field of `schema`.
    pub fn new(schema: &Schema) -> Self {
        Self::with_capacity(schema, 0)
    }

    /// No records yet, with room for `records` without reallocating.
    pub fn with_capacity(schema: &Schema, records: usize) -> Self {
        let values = schema
            .fields
            .iter()
            .map(|f| match f.kind {
                FieldType::String => Values::Str(Vec::with_capacity(records)),
                _ => Values::Num(Vec::with_capacity(records * f.length.unwrap_or(1))),
            })
            .collect();
        Self {
            sensors: IndexMap::new(),
            sensor_index: Vec::with_capacity(records),
            time: Vec::with_capacity(records),
            values,
        }
    }

    /// No records yet, in the emptied buffers of a written window (as
    /// [`Columns::into_dataset`] lays out its variables: `sensor_name`, `sensor_index`,
    /// `time`, then the fields), with room for at least `records`.
    pub fn reuse(schema: &Schema, buffers: Vec<Values>, records: usize) -> Self {
        let mut fresh = Self::with_capacity(schema, 0);
        if buffers.len() != schema.fields.len() + 3 {
            return Self::with_capacity(schema, records);
        }
        let mut it = buffers.into_iter().skip(1);
        let num = |v: Option<Values>| match v {
            Some(Values::Num(mut x)) => {
                x.clear();
                x
            }
            _ => Vec::new(),
        };
        fresh.sensor_index = num(it.next());
        fresh.time = num(it.next());
        for (slot, (f, v)) in fresh.values.iter_mut().zip(schema.fields.iter().zip(it)) {
            if let (Values::Num(_), Values::Num(mut x)) = (&slot, v) {
                x.clear();
                x.reserve(records * f.length.unwrap_or(1));
                *slot = Values::Num(x);
            }
        }
        fresh.sensor_index.reserve(records);
        fresh.time.reserve(records);
        fresh
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.time.len()
    }

    /// Whether there are no records.
    pub fn is_empty(&self) -> bool {
        self.time.is_empty()
    }

    /// Earliest and latest record time.
    pub fn time_span(&self) -> Option<(f64, f64)> {
        let min = self.time.iter().copied().fold(f64::INFINITY, f64::min);
        let max = self.time.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        (!self.time.is_empty()).then_some((min, max))
    }

    /// Appends a record (valid for the schema the columns were made for).
    pub fn push(&mut self, schema: &Schema, record: Record) {
        let next = self.sensors.len();
        let s = *self.sensors.entry(record.sensor).or_insert(next);
        self.sensor_index.push(s as f64);
        self.time.push(record.time);
        for ((field, column), value) in schema.fields.iter().zip(&mut self.values).zip(record.values) {
            match (column, value) {
                (Values::Num(c), Value::Num(x)) => c.push(x),
                (Values::Num(c), Value::Array(v)) => c.extend_from_slice(&v),
                (Values::Num(c), _) => c.extend(std::iter::repeat_n(cf::FILL_F64, field.length.unwrap_or(1))),
                (Values::Str(c), Value::Str(s)) => c.push(s),
                (Values::Str(c), _) => c.push(String::new()),
            }
        }
    }

    /// The window as an exchange dataset: dimensions, variables and `attrs` (global).
    pub fn into_dataset(self, schema: &Schema, provenance: &Provenance, attrs: Vec<(String, Attr)>) -> Dataset {
        let n = self.len();
        let mut dims = vec![
            Dim { name: stream::RECORD.into(), len: n, unlimited: true },
            Dim { name: stream::SENSOR.into(), len: self.sensors.len(), unlimited: false },
        ];
        for f in &schema.fields {
            if let (Some(d), Some(len)) = (&f.dim, f.length)
                && !dims.iter().any(|x| &x.name == d)
            {
                dims.push(Dim { name: d.clone(), len, unlimited: false });
            }
        }
        let s = |v: &str| Attr::Str(v.to_string());
        let mut variables = vec![
            Variable {
                name: stream::SENSOR_NAME.into(),
                dims: vec![stream::SENSOR.into()],
                dtype: DType::Str,
                attrs: vec![(cf::LONG_NAME.into(), s("sensor identifier")), (cf::CF_ROLE.into(), s("timeseries_id"))],
                values: Values::Str(self.sensors.into_keys().collect()),
            },
            Variable {
                name: stream::SENSOR_INDEX.into(),
                dims: vec![stream::RECORD.into()],
                dtype: DType::I32,
                attrs: vec![
                    (cf::LONG_NAME.into(), s("index of the record's sensor in sensor_name")),
                    ("instance_dimension".into(), s(stream::SENSOR)),
                ],
                values: Values::Num(self.sensor_index),
            },
            Variable::f64(stream::TIME, &[stream::RECORD], "time of the record", &schema.time_units, self.time)
                .with_attr(cf::STANDARD_NAME, s("time"))
                .with_attr(cf::CALENDAR, s("standard")),
        ];
        for (f, values) in schema.fields.iter().zip(self.values) {
            let mut var_dims = vec![stream::RECORD.to_string()];
            var_dims.extend(f.dim.clone());
            let dtype = match f.kind {
                FieldType::F64 => DType::F64,
                FieldType::F32 => DType::F32,
                FieldType::I32 => DType::I32,
                FieldType::I64 => DType::I64,
                FieldType::String => DType::Str,
            };
            let mut attrs = vec![(cf::LONG_NAME.to_string(), s(&f.long_name)), (cf::UNITS.to_string(), s(&f.units))];
            if let Some(sn) = &f.standard_name {
                attrs.push((cf::STANDARD_NAME.into(), s(sn)));
            }
            let typed = |x: f64| match f.kind {
                FieldType::F64 => Attr::F64(vec![x]),
                FieldType::F32 => Attr::F32(vec![x as f32]),
                FieldType::I32 => Attr::I32(vec![x as i32]),
                _ => Attr::I64(vec![x as i64]),
            };
            if let Some(lo) = f.min {
                attrs.push(("valid_min".into(), typed(lo)));
            }
            if let Some(hi) = f.max {
                attrs.push(("valid_max".into(), typed(hi)));
            }
            if f.kind != FieldType::String && !f.required {
                attrs.push((cf::FILL_VALUE.into(), Attr::F64(vec![cf::FILL_F64])));
            }
            variables.push(Variable { name: f.name.clone(), dims: var_dims, dtype, attrs, values });
        }
        let mut global = provenance.to_attrs();
        global.push((cf::FEATURE_TYPE.into(), s("timeSeries")));
        global.extend(attrs);
        Dataset { dims, variables, attrs: global }
    }
}

/// ISO 8601 UTC text of a Unix time, when the schema's times are Unix times.
pub fn iso_time(schema: &Schema, t: f64) -> Option<String> {
    if schema.time_units != UNIX_TIME_UNITS {
        return None;
    }
    let ns = (t * 1e9).round();
    if !ns.is_finite() || ns.abs() > 9.0e18 {
        return None;
    }
    let ts = jiff::Timestamp::from_nanosecond(ns as i128).ok()?;
    Some(ts.round(jiff::Unit::Millisecond).ok()?.to_string())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn records_become_columns_with_a_sensor_table() {
        let schema = Schema::parse(
            "fields:\n  v: {type: f32, units: V, required: false}\n  w: {type: i32, length: 2, dim: k}\n",
            Path::new("s.yaml"),
        )
        .unwrap();
        let mut c = Columns::new(&schema);
        let rec = |s: &str, t: f64, v: Value| Record {
            sensor: s.into(),
            time: t,
            values: vec![v, Value::Array(vec![t, -t])],
        };
        c.push(&schema, rec("b", 1.0, Value::Num(0.5)));
        c.push(&schema, rec("a", 2.0, Value::Missing));
        c.push(&schema, rec("b", 3.0, Value::Num(1.5)));
        assert_eq!(c.time_span(), Some((1.0, 3.0)));
        let prov = Provenance::from_env("t", "twin-kernel ingest", "{}".into(), "test");
        let ds = c.into_dataset(&schema, &prov, vec![]);
        assert_eq!(ds.dim_len("record"), 3);
        assert_eq!(ds.dim_len("k"), 2);
        assert_eq!(ds.variable("sensor_name").unwrap().values, Values::Str(vec!["b".into(), "a".into()]));
        assert_eq!(ds.variable("sensor_index").unwrap().values, Values::Num(vec![0.0, 1.0, 0.0]));
        assert_eq!(ds.variable("v").unwrap().values, Values::Num(vec![0.5, cf::FILL_F64, 1.5]));
        assert_eq!(ds.variable("w").unwrap().values, Values::Num(vec![1.0, -1.0, 2.0, -2.0, 3.0, -3.0]));
        assert_eq!(ds.variable("w").unwrap().dims, ["record", "k"]);
        ds.check(Path::new("w.nc")).unwrap();
    }

    #[test]
    fn reused_buffers_give_the_same_window() {
        let schema = Schema::parse("fields:\n  v: {type: f64}\n  s: {type: string}\n", Path::new("s.yaml")).unwrap();
        let rec = |t: f64| Record { sensor: "a".into(), time: t, values: vec![Value::Num(t), Value::Str("x".into())] };
        let prov = Provenance::from_env("t", "twin-kernel ingest", "{}".into(), "test");
        let mut first = Columns::new(&schema);
        first.push(&schema, rec(1.0));
        let mut used = first.into_dataset(&schema, &prov, vec![]);
        let buffers: Vec<Values> =
            used.variables.iter_mut().map(|v| std::mem::replace(&mut v.values, Values::Num(vec![]))).collect();
        let mut again = Columns::reuse(&schema, buffers, 4);
        let mut fresh = Columns::new(&schema);
        for c in [&mut again, &mut fresh] {
            c.push(&schema, rec(2.0));
        }
        let a = again.into_dataset(&schema, &prov, vec![]);
        let b = fresh.into_dataset(&schema, &prov, vec![]);
        assert_eq!(a.variables, b.variables);
        assert_eq!(a.variable("v").unwrap().values, Values::Num(vec![2.0]));
    }

    #[test]
    fn unix_times_are_shown_in_iso_8601() {
        let schema = Schema::parse("fields:\n  v: {type: f64}\n", Path::new("s.yaml")).unwrap();
        assert_eq!(iso_time(&schema, 1_733_400_000.5).as_deref(), Some("2024-12-05T12:00:00.5Z"));
    }
}
