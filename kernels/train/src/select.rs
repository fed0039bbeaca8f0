//! The gather step of a hyperparameter sweep: rank trials by validation error, keep the
//! best `K` for the next rung of successive halving.
//!
//! Successive halving (Jamieson & Talwalkar 2016, arXiv:1502.07943) with a static DAG:
//! rung 0 scatters `N` trials of `E₀` epochs; `select --top K` ranks them by the final
//! validation RMSE and lists the `K` survivors in rank order in `ranked.json`; rung 1 is a
//! scatter over `range(K)` whose member `i` runs `train --from-ranking ranked.json --pick i
//! --epochs E₁`, continuing the `i`-th survivor's model (weights, optimizer state,
//! history, hyperparameters) up to `E₁` epochs in total; and so on. Since every trial is
//! deterministic, a continued trial ends exactly where an uninterrupted run of `E₁` epochs
//! with the same hyperparameters would (with a constant learning rate; a cosine schedule
//! is stretched to the new epoch count). Diverged trials (non-finite validation error) rank
//! last; ties keep the order of the command line.

use std::path::{Path, PathBuf};

use super::error::TrainError;
use super::fit::TrainState;
use super::metrics::{csv_text, scientific};
use super::store::read_state;

/// One trial's result.
#[derive(Debug, Clone, PartialEq)]
pub struct Trial {
    /// Position on the command line, 0-based.
    pub trial: usize,
    /// Model file (absolute).
    pub path: PathBuf,
    /// The trained state (history and hyperparameters).
    pub state: TrainState,
}

impl Trial {
    /// Reads trial `index` from its model file.
    pub fn read(index: usize, path: &Path) -> Result<Self, TrainError> {
        let state = read_state(path)?;
        let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        Ok(Self { trial: index, path, state })
    }

    /// The ranking key: final validation RMSE, non-finite values last.
    fn key(&self) -> f64 {
        let v = self.state.val_rmse();
        if v.is_finite() { v } else { f64::INFINITY }
    }
}

/// Trials in rank order (best first).
#[derive(Debug, Clone, PartialEq)]
pub struct Ranking {
    /// Ranked trials.
    pub trials: Vec<Trial>,
    /// How many survive (`--top`), if a next rung follows.
    pub top: Option<usize>,
}

/// Ranks `trials` by final validation RMSE (ascending; non-finite last; ties by input
/// order). `top` larger than the number of trials keeps them all.
pub fn rank(mut trials: Vec<Trial>, top: Option<usize>) -> Ranking {
    trials.sort_by(|a, b| a.key().total_cmp(&b.key()).then(a.trial.cmp(&b.trial)));
    let top = top.map(|k| k.min(trials.len()));
    Ranking { trials, top }
}

/// One row of the ranking CSV.
#[derive(Debug, serde::Serialize)]
struct RankingRow<'a> {
    rank: usize,
    trial: usize,
    #[serde(serialize_with = "scientific")]
    val_rmse: f64,
    #[serde(serialize_with = "scientific")]
    best_val_rmse: f64,
    best_epoch: usize,
    epochs_run: usize,
    #[serde(serialize_with = "scientific")]
    baseline_val_rmse: f64,
    model: &'a str,
    hidden: String,
    depth: usize,
    activation: &'a str,
    #[serde(serialize_with = "scientific")]
    lr: f64,
    lr_schedule: &'a str,
    batch_size: usize,
    micro_batch: usize,
    shards: usize,
    #[serde(serialize_with = "scientific")]
    weight_decay: f64,
    seed: u64,
    target_transform: &'a str,
    diverged: bool,
    survivor: bool,
    path: String,
}

/// Columns of the ranking CSV, in [`RankingRow`] order.
const RANKING_HEADER: [&str; 22] = [
    "rank",
    "trial",
    "val_rmse",
    "best_val_rmse",
    "best_epoch",
    "epochs_run",
    "baseline_val_rmse",
    "model",
    "hidden",
    "depth",
    "activation",
    "lr",
    "lr_schedule",
    "batch_size",
    "micro_batch",
    "shards",
    "weight_decay",
    "seed",
    "target_transform",
    "diverged",
    "survivor",
    "path",
];

impl Ranking {
    /// Whether the trial at rank position `pos` (0-based) survives.
    pub fn survives(&self, pos: usize) -> bool {
        self.top.is_none_or(|k| pos < k)
    }

    /// The ranked table as CSV, one row per trial, best first.
    pub fn csv(&self) -> String {
        let rows = self.trials.iter().enumerate().map(|(pos, t)| {
            let s = &t.state;
            let h = &s.hyper;
            let (best_epoch, best) = s.best().unwrap_or((0, f64::NAN));
            RankingRow {
                rank: pos + 1,
                trial: t.trial,
                val_rmse: s.val_rmse(),
                best_val_rmse: best,
                best_epoch,
                epochs_run: s.epoch,
                baseline_val_rmse: s.baseline_val_rmse,
                model: h.model_name(),
                hidden: h.hidden_text(),
                depth: h.depth(),
                activation: h.activation.name(),
                lr: h.lr,
                lr_schedule: h.lr_schedule.name(),
                batch_size: h.batch_size,
                micro_batch: h.micro_batch,
                shards: h.shards,
                weight_decay: h.weight_decay,
                seed: h.seed,
                target_transform: h.target_transform.name(),
                diverged: s.diverged,
                survivor: self.survives(pos),
                path: t.path.display().to_string(),
            }
        });
        csv_text(&RANKING_HEADER, rows)
    }

    /// The ranking as JSON: `trials` (best first, with hyperparameters) and `survivors`
    /// (the paths a next rung continues, in rank order).
    pub fn json(&self) -> serde_json::Value {
        let num = |v: f64| if v.is_finite() { serde_json::json!(v) } else { serde_json::Value::Null };
        let trials: Vec<_> = self
            .trials
            .iter()
            .enumerate()
            .map(|(pos, t)| {
                let s = &t.state;
                let (best_epoch, best) = s.best().map_or((None, None), |(e, v)| (Some(e), Some(v)));
                serde_json::json!({
                    "rank": pos + 1,
                    "trial": t.trial,
                    "path": t.path,
                    "val_rmse": num(s.val_rmse()),
                    "best_val_rmse": best,
                    "best_epoch": best_epoch,
                    "epochs_run": s.epoch,
                    "baseline_val_rmse": num(s.baseline_val_rmse),
                    "diverged": s.diverged,
                    "survivor": self.survives(pos),
                    "model": s.hyper.model_name(),
                    "hyperparameters": s.hyper,
                })
            })
            .collect();
        let survivors: Vec<_> =
            self.trials.iter().enumerate().filter(|(pos, _)| self.survives(*pos)).map(|(_, t)| &t.path).collect();
        serde_json::json!({ "metric": "val_rmse", "top": self.top, "trials": trials, "survivors": survivors })
    }
}

/// The model file of survivor `pick` (0-based) of a ranking written by [`Ranking::json`];
/// a relative path is taken relative to the ranking file.
pub fn pick_from_ranking(ranking: &Path, pick: usize) -> Result<PathBuf, TrainError> {
    let bad = |reason: String| TrainError::Input { path: ranking.to_path_buf(), reason };
    let text = std::fs::read_to_string(ranking).map_err(|e| bad(format!("cannot read the ranking ({e})")))?;
    let doc: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| bad(format!("is not a ranking from `twin-kernel select --json` ({e})")))?;
    let survivors = doc
        .get("survivors")
        .and_then(|v| v.as_array())
        .ok_or_else(|| bad("has no `survivors` list; hint: write it with `twin-kernel select --json`".into()))?;
    let entry = survivors.get(pick).ok_or_else(|| {
        bad(format!(
            "`--pick {pick}` is out of range: the ranking lists {} survivors (0..{})",
            survivors.len(),
            survivors.len()
        ))
    })?;
    let path = entry.as_str().ok_or_else(|| bad(format!("survivor {pick} is not a path")))?;
    let path = PathBuf::from(path);
    Ok(if path.is_relative() { ranking.parent().unwrap_or(Path::new("")).join(path) } else { path })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ranking_header_names_the_row_fields_in_order_and_fields_are_quoted() {
        let row = RankingRow {
            rank: 1,
            trial: 2,
            val_rmse: 0.25,
            best_val_rmse: f64::NAN,
            best_epoch: 0,
            epochs_run: 4,
            baseline_val_rmse: 1.0,
            model: "mlp",
            hidden: "64,32".into(),
            depth: 2,
            activation: "relu",
            lr: 1e-3,
            lr_schedule: "constant",
            batch_size: 256,
            micro_batch: 32,
            shards: 8,
            weight_decay: 0.0,
            seed: 1,
            target_transform: "none",
            diverged: false,
            survivor: true,
            path: "t\"0\"/model.h5".into(),
        };
        let mut w = csv::Writer::from_writer(Vec::new());
        w.serialize(&row).unwrap();
        let derived = String::from_utf8(w.into_inner().unwrap()).unwrap();
        assert_eq!(csv_text(&RANKING_HEADER, [row]), derived);
        assert!(derived.ends_with(
            "\n1,2,2.5e-1,NaN,0,4,1e0,mlp,\"64,32\",2,relu,1e-3,constant,256,32,8,0e0,1,none,false,true,\"t\"\"0\"\"/model.h5\"\n"
        ));
    }
}
