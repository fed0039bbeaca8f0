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

/// The CSV text of the history.
pub fn csv(state: &TrainState) -> String {
    let mut out = String::from("epoch,train_loss,val_loss,val_rmse,lr,seconds\n");
    for m in &state.history {
        out.push_str(&format!(
            "{},{:e},{:e},{:e},{:e},{:.6}\n",
            m.epoch, m.train_loss, m.val_loss, m.val_rmse, m.lr, m.seconds
        ));
    }
    out
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
