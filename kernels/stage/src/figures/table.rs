//! The gauge statistics of a summary as CSV and as a Markdown table.

use std::fmt::Write as _;

use twinflow_exchange::{Dataset, Values};

/// Columns: the summary variables along `station`, in this order, with their headings.
const COLUMNS: [(&str, &str); 10] = [
    ("station_x", "x (m)"),
    ("station_y", "y (m)"),
    ("peak_depth_mean", "peak depth mean (m)"),
    ("peak_depth_min", "peak depth min (m)"),
    ("peak_depth_max", "peak depth max (m)"),
    ("peak_depth_p90", "peak depth p90 (m)"),
    ("arrival_time_mean", "arrival mean (s)"),
    ("arrival_time_min", "arrival min (s)"),
    ("arrival_time_p90", "arrival p90 (s)"),
    ("arrival_fraction", "members arrived"),
];

/// `(csv, markdown)` of the gauge statistics of a summary written by `twin-kernel summary`,
/// one row per gauge; `None` when the summary has no gauges. Missing values (no member's
/// water arrived) are empty in the CSV and `–` in Markdown.
pub fn gauge_table(summary: &Dataset) -> Option<(String, String)> {
    let names = match &summary.variable("station_name")?.values {
        Values::Str(s) => s.clone(),
        _ => return None,
    };
    let cols: Vec<(&str, Vec<f64>)> = COLUMNS
        .iter()
        .filter_map(|(var, head)| summary.variable(var).and_then(|v| v.masked()).map(|v| (*head, v)))
        .filter(|(_, v)| v.len() == names.len())
        .collect();
    let mut csv = String::from("gauge");
    let mut md = String::from("| gauge |");
    let mut rule = String::from("| --- |");
    for (head, _) in &cols {
        let _ = write!(csv, ",{head}");
        let _ = write!(md, " {head} |");
        rule.push_str(" ---: |");
    }
    csv.push('\n');
    let _ = write!(md, "\n{rule}\n");
    for (k, name) in names.iter().enumerate() {
        csv.push_str(&csv_field(name));
        let _ = write!(md, "| {} |", name.replace('|', "\\|"));
        for (_, v) in &cols {
            let x = v[k];
            if x.is_finite() {
                let _ = write!(csv, ",{x}");
                let _ = write!(md, " {} |", short(x));
            } else {
                csv.push(',');
                md.push_str(" – |");
            }
        }
        csv.push('\n');
        md.push('\n');
    }
    Some((csv, md))
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) { format!("\"{}\"", s.replace('"', "\"\"")) } else { s.to_string() }
}

/// Three significant digits, plain notation.
fn short(x: f64) -> String {
    if x == 0.0 {
        return "0".into();
    }
    let digits = (2 - x.abs().log10().floor() as i32).max(0) as usize;
    format!("{x:.digits$}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use twinflow_exchange::{DType, Dim, Variable};

    #[test]
    fn one_row_per_gauge_with_missing_arrivals_left_empty() {
        let mut d = Dataset::default();
        d.dims.push(Dim { name: "station".into(), len: 2, unlimited: false });
        d.variables.push(Variable {
            name: "station_name".into(),
            dims: vec!["station".into()],
            dtype: DType::Str,
            attrs: vec![],
            values: Values::Str(vec!["up, stream".into(), "bridge".into()]),
        });
        d.variables.push(Variable::f64("peak_depth_mean", &["station"], "", "m", vec![1.23456, 0.0]));
        d.variables.push(Variable::f64("arrival_time_mean", &["station"], "", "s", vec![600.0, f64::NAN]));
        let (csv, md) = gauge_table(&d).unwrap();
        assert_eq!(csv, "gauge,peak depth mean (m),arrival mean (s)\n\"up, stream\",1.23456,600\nbridge,0,\n");
        assert_eq!(
            md,
            "| gauge | peak depth mean (m) | arrival mean (s) |\n| --- | ---: | ---: |\n| up, stream | 1.23 | 600 |\n| bridge | 0 | – |\n"
        );
        assert!(gauge_table(&Dataset::default()).is_none());
    }
}
