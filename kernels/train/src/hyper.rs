//! Hyperparameters: everything besides the data that determines a training run.

use super::error::TrainError;

/// Activation function of the hidden layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Activation {
    /// `max(0, z)` (He-uniform initialisation).
    Relu,
    /// `tanh z` (Glorot-uniform initialisation).
    Tanh,
}

/// Transform of the target before standardisation; predictions are transformed back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TargetTransform {
    /// Train on the target itself.
    None,
    /// Train on `ln y` (targets must be > 0); useful over decades of energy.
    Log,
}

/// Learning-rate schedule over the epochs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LrSchedule {
    /// The same learning rate every epoch.
    Constant,
    /// Cosine annealing from `lr` at the first epoch to 0 after `epochs`.
    Cosine,
}

macro_rules! names {
    ($t:ty { $($v:ident => $s:literal),* $(,)? }) => {
        impl $t {
            /// The name used on the command line and in files.
            pub fn name(self) -> &'static str {
                match self { $(Self::$v => $s),* }
            }
            /// Parses [`Self::name`].
            pub fn from_name(s: &str) -> Option<Self> {
                match s { $($s => Some(Self::$v),)* _ => None }
            }
        }
    };
}
names!(Activation { Relu => "relu", Tanh => "tanh" });
names!(TargetTransform { None => "none", Log => "log" });
names!(LrSchedule { Constant => "constant", Cosine => "cosine" });

/// The hyperparameters of a run. `epochs` is the *target* epoch count: a resumed or
/// continued run may raise it; every other field must stay the same for a run to continue.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hyperparameters {
    /// Hidden layer widths; empty for a linear model.
    pub hidden: Vec<usize>,
    /// Activation of the hidden layers.
    pub activation: Activation,
    /// Adam learning rate (standardised units).
    pub lr: f64,
    /// Learning-rate schedule.
    pub lr_schedule: LrSchedule,
    /// Samples per optimizer step (the global mini-batch, over all ranks).
    pub batch_size: usize,
    /// Rows per forward/backward pass within one shard's share of a batch (bounds the
    /// activations held at once); the passes' gradient sums are added in order.
    pub micro_batch: usize,
    /// Data shards: contiguous row ranges that ranks own whole and read alone. Results
    /// depend on it, never on the rank count (see [`super::shard`]); ranks beyond it idle.
    pub shards: usize,
    /// Epochs to train in total.
    pub epochs: usize,
    /// Seed of the initialisation, the split and the per-epoch shuffles.
    pub seed: u64,
    /// Fraction of the samples held out for validation.
    pub val_fraction: f64,
    /// Decoupled weight decay (AdamW) per step, applied to weights, not biases.
    pub weight_decay: f64,
    /// Target transform.
    pub target_transform: TargetTransform,
}

/// Default [`Hyperparameters::shards`]: enough for the rank counts of a workstation or a
/// small allocation, few enough that the gradient exchange stays small (see [`super::shard`]).
pub const DEFAULT_SHARDS: usize = 8;

/// Largest accepted [`Hyperparameters::shards`] (shard numbers share a random stream id
/// with the epoch, see [`super::shard::shard_stream`]).
pub const MAX_SHARDS: usize = 65_536;

/// Largest accepted epoch count (the epoch is the high half of a random stream id).
pub const MAX_EPOCHS: usize = 1 << 30;

impl Default for Hyperparameters {
    fn default() -> Self {
        Self {
            hidden: vec![64, 32],
            activation: Activation::Relu,
            lr: 1e-3,
            lr_schedule: LrSchedule::Constant,
            batch_size: 256,
            micro_batch: 32,
            shards: DEFAULT_SHARDS,
            epochs: 30,
            seed: 1,
            val_fraction: 0.2,
            weight_decay: 0.0,
            target_transform: TargetTransform::None,
        }
    }
}

impl Hyperparameters {
    /// `mlp` or `linear`.
    pub fn model_name(&self) -> &'static str {
        if self.hidden.is_empty() { "linear" } else { "mlp" }
    }

    /// Number of hidden layers (0 for a linear model).
    pub fn depth(&self) -> usize {
        self.hidden.len()
    }

    /// Hidden widths as `64,32` (empty for a linear model).
    pub fn hidden_text(&self) -> String {
        self.hidden.iter().map(ToString::to_string).collect::<Vec<_>>().join(",")
    }

    /// Every problem with the values, one message each.
    pub fn check(&self) -> Vec<String> {
        let mut issues = Vec::new();
        if !(self.lr.is_finite() && self.lr > 0.0) {
            issues.push(format!("`--lr` must be > 0, got {}", self.lr));
        }
        if self.batch_size == 0 {
            issues.push("`--batch` must be >= 1".into());
        }
        if self.micro_batch == 0 {
            issues.push("`--micro-batch` must be >= 1".into());
        }
        if !(1..=MAX_SHARDS).contains(&self.shards) {
            issues.push(format!("`--shards` must be in [1, {MAX_SHARDS}], got {}", self.shards));
        }
        if !(1..=MAX_EPOCHS).contains(&self.epochs) {
            issues.push(format!("`--epochs` must be in [1, {MAX_EPOCHS}], got {}", self.epochs));
        }
        if !(self.val_fraction > 0.0 && self.val_fraction < 1.0) {
            issues.push(format!("`--val-fraction` must be in (0, 1), got {}", self.val_fraction));
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            issues.push(format!("`--weight-decay` must be >= 0, got {}", self.weight_decay));
        }
        if self.hidden.contains(&0) {
            issues.push("`--hidden` widths must be >= 1".into());
        }
        issues
    }

    /// [`Self::check`] as an error listing every problem.
    pub fn validate(&self) -> Result<(), TrainError> {
        let issues = self.check();
        if issues.is_empty() {
            Ok(())
        } else {
            Err(TrainError::Request(format!("invalid hyperparameters: {}", issues.join("; "))))
        }
    }

    /// Learning rate of epoch `epoch` (0-based).
    pub fn lr_at(&self, epoch: usize) -> f64 {
        match self.lr_schedule {
            LrSchedule::Constant => self.lr,
            LrSchedule::Cosine => {
                let frac = epoch as f64 / self.epochs.max(1) as f64;
                0.5 * self.lr * (1.0 + (std::f64::consts::PI * frac.min(1.0)).cos())
            }
        }
    }

    /// The fields (other than `epochs`) in which `self` and `other` differ, as
    /// `name: self vs other` lines.
    pub fn differences(&self, other: &Self) -> Vec<String> {
        let mut d = Vec::new();
        let mut cmp = |name: &str, a: String, b: String| {
            if a != b {
                d.push(format!("{name}: {a} vs {b}"));
            }
        };
        cmp("hidden", self.hidden_text(), other.hidden_text());
        cmp("activation", self.activation.name().into(), other.activation.name().into());
        cmp("lr", self.lr.to_string(), other.lr.to_string());
        cmp("lr-schedule", self.lr_schedule.name().into(), other.lr_schedule.name().into());
        cmp("batch", self.batch_size.to_string(), other.batch_size.to_string());
        cmp("micro-batch", self.micro_batch.to_string(), other.micro_batch.to_string());
        cmp("shards", self.shards.to_string(), other.shards.to_string());
        cmp("seed", self.seed.to_string(), other.seed.to_string());
        cmp("val-fraction", self.val_fraction.to_string(), other.val_fraction.to_string());
        cmp("weight-decay", self.weight_decay.to_string(), other.weight_decay.to_string());
        cmp("target-transform", self.target_transform.name().into(), other.target_transform.name().into());
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosine_schedule_starts_at_lr_and_decays() {
        let h = Hyperparameters { lr: 0.1, lr_schedule: LrSchedule::Cosine, epochs: 4, ..Default::default() };
        assert_eq!(h.lr_at(0), 0.1);
        assert!((h.lr_at(2) - 0.05).abs() < 1e-15);
        assert!(h.lr_at(3) < h.lr_at(2));
        assert_eq!(Hyperparameters::default().lr_at(7), 1e-3);
    }

    #[test]
    fn checks_and_differences_name_the_flags() {
        let bad = Hyperparameters { lr: -1.0, batch_size: 0, val_fraction: 1.0, shards: 0, ..Default::default() };
        let issues = bad.check().join("\n");
        for flag in ["--lr", "--batch", "--val-fraction", "--shards"] {
            assert!(issues.contains(flag), "{issues}");
        }
        let other = Hyperparameters { epochs: 99, seed: 5, ..Default::default() };
        assert_eq!(Hyperparameters::default().differences(&other), ["seed: 1 vs 5"]);
        assert_eq!(Activation::from_name("tanh"), Some(Activation::Tanh));
    }
}
