//! Per-epoch metrics as CSV or JSON, for the report to plot.
//!
//! CSV (`.csv`, or any extension but `.json`): a header
//! `epoch,train_loss,val_loss,val_rmse,lr,seconds`, then one row per epoch. JSON: an object
//! with `epochs` (the same rows as objects) and the summary `best_epoch`, `best_val_rmse`,
//! `final_val_rmse`, `baseline_val_rmse` (predicting the training mean), `diverged`.
//! Losses are mean squared errors in standardised units; `val_rmse` is in target units.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use super::error::TrainError;
use super::fit::TrainState;

/// One row of the metrics CSV.
#[derive(Debug, serde::Serialize)]
struct MetricsRow {
    epoch: usize,
    #[serde(serialize_with = "scientific")]
    train_loss: f64,
    #[serde(serialize_with = "scientific")]
    val_loss: f64,
    #[serde(serialize_with = "scientific")]
    val_rmse: f64,
    #[serde(serialize_with = "scientific")]
    lr: f64,
    #[serde(serialize_with = "microseconds")]
    seconds: f64,
}

/// Columns of the metrics CSV, in [`MetricsRow`] order (written even without rows).
const METRICS_HEADER: [&str; 6] = ["epoch", "train_loss", "val_loss", "val_rmse", "lr", "seconds"];

/// The CSV text of the history.
pub fn csv(state: &TrainState) -> String {
    let rows = state.history.iter().map(|m| MetricsRow {
        epoch: m.epoch,
        train_loss: m.train_loss,
        val_loss: m.val_loss,
        val_rmse: m.val_rmse,
        lr: m.lr,
        seconds: m.seconds,
    });
    csv_text(&METRICS_HEADER, rows)
}

/// A CSV document: `header`, then one record per row (serialised by serde in field order,
/// quoted where a field needs it).
pub(crate) fn csv_text<R: serde::Serialize>(header: &[&str], rows: impl IntoIterator<Item = R>) -> String {
    let mut w = csv::WriterBuilder::new().has_headers(false).from_writer(Vec::new());
    // Writing to memory cannot fail, and every row type here serialises to a flat record.
    w.write_record(header).expect("a CSV header is written to memory");
    for row in rows {
        w.serialize(row).expect("a flat row is written to memory");
    }
    let bytes = w.into_inner().expect("an in-memory CSV flushes");
    String::from_utf8(bytes).expect("CSV of UTF-8 fields is UTF-8")
}

/// A float in Rust's scientific notation (`1.5e-3`, `NaN`), as every float of the kernels' CSVs.
pub(crate) fn scientific<S: serde::Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&format_args!("{v:e}"))
}

/// Seconds with six decimals (microseconds).
fn microseconds<S: serde::Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&format_args!("{v:.6}"))
}

/// The JSON document of the history and its summary.
pub fn json(state: &TrainState) -> serde_json::Value {
    let (best_epoch, best) = state.best().map_or((None, None), |(e, v)| (Some(e), Some(v)));
    let num = |v: f64| if v.is_finite() { serde_json::json!(v) } else { serde_json::Value::Null };
    serde_json::json!({
        "epochs": state.history.iter().map(|m| serde_json::json!({
            "epoch": m.epoch, "train_loss": num(m.train_loss), "val_loss": num(m.val_loss),
            "val_rmse": num(m.val_rmse), "lr": m.lr, "seconds": m.seconds,
        })).collect::<Vec<_>>(),
        "best_epoch": best_epoch,
        "best_val_rmse": best,
        "final_val_rmse": num(state.val_rmse()),
        "baseline_val_rmse": num(state.baseline_val_rmse),
        "diverged": state.diverged,
        "model": state.hyper.model_name(),
        "hyperparameters": state.hyper,
    })
}

/// Writes `text` to `path` via `path.partial` and a rename.
pub fn write_text(path: &Path, text: &str) -> Result<PathBuf, TrainError> {
    let partial = twinflow_exchange::PartialFile::new(path)?;
    let io = |source| TrainError::Io { path: partial.partial_path().to_path_buf(), action: "write", source };
    let mut f = std::fs::File::create(partial.partial_path()).map_err(io)?;
    f.write_all(text.as_bytes()).map_err(io)?;
    drop(f);
    Ok(partial.commit()?)
}

/// Writes the metrics of `state` as JSON (`.json`) or CSV (anything else).
pub fn write_metrics(path: &Path, state: &TrainState) -> Result<PathBuf, TrainError> {
    let is_json = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("json"));
    let text = if is_json {
        serde_json::to_string_pretty(&json(state)).expect("metrics serialize") + "\n"
    } else {
        csv(state)
    };
    write_text(path, &text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_names_the_row_fields_in_order() {
        let row =
            MetricsRow { epoch: 3, train_loss: 0.5, val_loss: f64::NAN, val_rmse: 1.25e-3, lr: 1e-3, seconds: 0.1 };
        let mut w = csv::Writer::from_writer(Vec::new());
        w.serialize(&row).unwrap();
        let text = String::from_utf8(w.into_inner().unwrap()).unwrap();
        assert_eq!(text, format!("{}\n3,5e-1,NaN,1.25e-3,1e-3,0.100000\n", METRICS_HEADER.join(",")));
        assert_eq!(csv_text(&METRICS_HEADER, [row]), text, "the explicit header is the derived one");
        assert_eq!(csv_text(&METRICS_HEADER, Vec::<MetricsRow>::new()), format!("{}\n", METRICS_HEADER.join(",")));
    }
}
