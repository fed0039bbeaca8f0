//! `twin-kernel train`, `predict`, `select` and `tabulate`: arguments and runners around
//! [`twinflow_train`].

use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::{Args, Subcommand, ValueEnum};
use twinflow_comm::Communicator;

use super::error::Stopped;
use twinflow_exchange::{Compression, Provenance, write_dataset};
use twinflow_train::predict::{self, Errors};
use twinflow_train::select::{self, Trial};
use twinflow_train::tabulate::{self, FloodParam};
use twinflow_train::{
    self as train, Activation, FitOutcome, Hyperparameters, Limits, LrSchedule, TargetTransform, TargetUse, TrainError,
    TrainState, metrics, store,
};

const TRAIN_HELP: &str = "\
Examples:
  twin-kernel train --data calib.h5 --features cells --target truth/energy \\
      --hidden 64,32 --lr 1e-3 --batch 256 --epochs 30 --out model.h5 --metrics metrics.csv
  mpiexec -n 4 twin-kernel train --data table.h5 --features features --target target \\
      --model linear --epochs 200 --out model.h5 --checkpoint ckpt.h5 --resume --time-limit 3500
  twin-kernel train --data table.h5 --from-ranking ranked.json --pick 0 --epochs 60 --out model.h5

Data: HDF5 datasets by path (`truth/energy`) or NetCDF variables (`group/name`); the first
dimension is the sample, trailing dimensions are flattened; several --features are
concatenated. A feature may be reduced per sample: `cells:sum`, `cells:log-sum` (ln of the
sum) or `cells:profile` (sums per index of the first trailing dimension, e.g. per layer).
Missing values (NaN, _FillValue) are an error. Features and target are standardised with
statistics of the training split (stored in the model).

Parallelism and reproducibility: the samples are cut into --shards shards of contiguous
rows (default 8, independent of the rank count); rank r of N owns shards r, r+N, ... and
reads only their rows. Each batch draws rows from the shards in an order keyed by --seed
and the epoch; every shard's gradient sum (in passes of --micro-batch rows) fills its own
slot of one MPI allreduce, and the slots are added in shard order, so 1, 2 or 4 ranks give
bit-identical weights and metrics. Ranks beyond --shards idle. --width W --depth D is
--hidden W,W,... (D layers; D = 0 is the linear model), handy in sweeps.

Checkpoints: --checkpoint F writes F (via F.partial, synced and renamed) every
--checkpoint-every epochs, when stopping at a limit and at the end. With --resume an existing
F is continued (bit-identical to an uninterrupted run); without it training starts over.
--init-from M (or --from-ranking R --pick I, the I-th survivor of `select --top`) continues
another run's model. Hyperparameters then come from that file; a flag that contradicts it
is an error; --epochs is the new total.

Outputs (only once training completes): --out (HDF5: /layers/<l>/weight|bias,
/normalization, /optimizer, /metrics, /linear for linear models; hyperparameters,
val_rmse, best_epoch, baseline_val_rmse as attributes) and --metrics (CSV:
epoch,train_loss,val_loss,val_rmse,lr,seconds; JSON with a `.json` extension).

Exit codes: 0 trained, 1 failed, 2 invalid command line, 3 invalid input or checkpoint,
4 stopped at --time-limit/--epoch-limit with the checkpoint written: rerun the same command
(with --resume) to continue.";

const PREDICT_HELP: &str = "\
Example:
  twin-kernel predict --model model.h5 --data physics.h5 --out pred.h5 --report report.json

Writes `prediction` [sample(, output)] and, when the data hold the model's target, `truth`.
For a calorimeter file (root attribute `sampling_fraction`, datasets `cells` and
`truth/energy`) it also writes `naive_energy` (Σ cells / sampling_fraction), and the report
gives the energy resolution σ((E_est − E)/E), the bias and the resolution after a global
scale calibration (σ/(1 + bias); `improvement` = naive over model) of the model and of the
naive estimator, overall and in --bins bins of equal event count along the true energy
(`bins`) and, with `conditions/temperature`, along the temperature (`temperature_bins`).";

const SELECT_HELP: &str = "\
Examples:
  twin-kernel select --trials t0/model.h5 t1/model.h5 t2/model.h5 --out ranked.csv --best best.h5
  twin-kernel select --trials t*/model.h5 --top 4 --out ranked.csv --json ranked.json
  # next rung of successive halving, member i of a scatter over range(4):
  twin-kernel train --data table.h5 --from-ranking ranked.json --pick i --epochs 40 --out model.h5

Ranks by the final validation RMSE (ascending; diverged trials last; ties in command-line
order). CSV columns: rank,trial,val_rmse,best_val_rmse,best_epoch,epochs_run,
baseline_val_rmse,model,hidden,depth,activation,lr,lr_schedule,batch_size,micro_batch,
shards,weight_decay,seed,target_transform,diverged,survivor,path. The JSON lists the same trials
and `survivors`: the model paths (absolute, best first) a next rung continues.";

const TABULATE_HELP: &str = "\
Example:
  twin-kernel tabulate flood --results m0/result_gauges.nc m1/result_gauges.nc --out table.h5
  twin-kernel train --data table.h5 --features features --target target --model linear --out model.h5

Per member: the scenario parameters from the gauge file's `twinflow_parameters` attribute
as `features(member, param)` (attribute `names`), and each gauge's maximum sampled depth
as `target(member, gauge)` (attribute `names`), m.";

/// Network family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ModelArg {
    /// Multilayer perceptron with `--hidden` layers.
    Mlp,
    /// Linear model (no hidden layer).
    Linear,
}

/// Hidden-layer activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ActivationArg {
    /// max(0, z).
    Relu,
    /// tanh z.
    Tanh,
}

/// Target transform.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TransformArg {
    /// The target itself.
    None,
    /// ln of the target (targets > 0).
    Log,
}

/// Learning-rate schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ScheduleArg {
    /// Constant learning rate.
    Constant,
    /// Cosine annealing to 0 at `--epochs`.
    Cosine,
}

/// Arguments of `twin-kernel train`.
#[derive(Debug, Args)]
#[command(after_help = TRAIN_HELP)]
pub struct TrainArgs {
    /// Training data (HDF5 `.h5`, else NetCDF).
    #[arg(long, value_name = "PATH")]
    pub data: PathBuf,
    /// Feature dataset, optionally reduced: `NAME:sum`, `NAME:log-sum`, `NAME:profile`
    /// (repeat or comma-separate; concatenated column-wise).
    #[arg(long = "features", value_name = "DATASET", value_delimiter = ',')]
    pub features: Vec<String>,
    /// Target dataset (trailing dimensions are several outputs).
    #[arg(long, value_name = "DATASET")]
    pub target: Option<String>,
    /// Transform of the target before standardisation [default: none].
    #[arg(long, value_enum)]
    pub target_transform: Option<TransformArg>,
    /// Model family [default: mlp].
    #[arg(long, value_enum)]
    pub model: Option<ModelArg>,
    /// Hidden layer widths of an MLP [default: 64,32].
    #[arg(long, value_name = "N,N", value_delimiter = ',', num_args = 1..)]
    pub hidden: Option<Vec<usize>>,
    /// Width of every hidden layer, with `--depth` (instead of `--hidden`).
    #[arg(long, value_name = "N", requires = "depth", conflicts_with_all = ["hidden", "model"])]
    pub width: Option<usize>,
    /// Number of hidden layers of `--width` (0: the linear model).
    #[arg(long, value_name = "D", requires = "width", conflicts_with_all = ["hidden", "model"])]
    pub depth: Option<usize>,
    /// Hidden-layer activation [default: relu].
    #[arg(long, value_enum)]
    pub activation: Option<ActivationArg>,
    /// Adam learning rate [default: 1e-3].
    #[arg(long)]
    pub lr: Option<f64>,
    /// Learning-rate schedule [default: constant].
    #[arg(long, value_enum)]
    pub lr_schedule: Option<ScheduleArg>,
    /// Samples per optimizer step, over all ranks [default: 256].
    #[arg(long, value_name = "N")]
    pub batch: Option<usize>,
    /// Rows per forward/backward pass within a shard's share of a batch [default: 32].
    #[arg(long, value_name = "N")]
    pub micro_batch: Option<usize>,
    /// Shards of the data: contiguous row ranges that ranks own and read [default: 8].
    #[arg(long, value_name = "S")]
    pub shards: Option<usize>,
    /// Total epochs to train (a resumed or continued run trains up to this many).
    #[arg(long, value_name = "N", default_value_t = 30)]
    pub epochs: usize,
    /// Seed of initialisation, split and shuffles [default: 1].
    #[arg(long)]
    pub seed: Option<u64>,
    /// Fraction of samples held out for validation [default: 0.2].
    #[arg(long, value_name = "F")]
    pub val_fraction: Option<f64>,
    /// Decoupled (AdamW) weight decay on weights [default: 0].
    #[arg(long, value_name = "L")]
    pub weight_decay: Option<f64>,
    /// Model output (HDF5).
    #[arg(long, value_name = "PATH")]
    pub out: PathBuf,
    /// Per-epoch metrics (`.json` → JSON, else CSV).
    #[arg(long, value_name = "PATH")]
    pub metrics: Option<PathBuf>,
    /// Checkpoint file (HDF5), rewritten atomically.
    #[arg(long, value_name = "PATH")]
    pub checkpoint: Option<PathBuf>,
    /// Write the checkpoint every N epochs (0: only at a stop and at the end).
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub checkpoint_every: usize,
    /// Continue from `--checkpoint` if it exists (start fresh if it does not).
    #[arg(long, requires = "checkpoint")]
    pub resume: bool,
    /// Stop cleanly (checkpoint, exit code 4) before an epoch that would end after S
    /// seconds from the start of this command (judged by the longest epoch so far).
    #[arg(long, value_name = "S", requires = "checkpoint")]
    pub time_limit: Option<f64>,
    /// Stop cleanly (checkpoint, exit code 4) after N epochs in this invocation.
    #[arg(long, value_name = "N", requires = "checkpoint")]
    pub epoch_limit: Option<usize>,
    /// Continue the model (or checkpoint) of another run.
    #[arg(long, value_name = "MODEL", conflicts_with = "from_ranking")]
    pub init_from: Option<PathBuf>,
    /// Continue a survivor listed by `select --json` (with `--pick`).
    #[arg(long, value_name = "JSON", requires = "pick")]
    pub from_ranking: Option<PathBuf>,
    /// Which survivor of `--from-ranking` to continue, 0-based.
    #[arg(long, value_name = "I", requires = "from_ranking")]
    pub pick: Option<usize>,
}

/// Arguments of `twin-kernel predict`.
#[derive(Debug, Args)]
#[command(after_help = PREDICT_HELP)]
pub struct PredictArgs {
    /// Model file from `twin-kernel train`.
    #[arg(long, value_name = "PATH")]
    pub model: PathBuf,
    /// Data with the model's feature datasets.
    #[arg(long, value_name = "PATH")]
    pub data: PathBuf,
    /// Predictions (`.h5` → HDF5, else NetCDF).
    #[arg(long, value_name = "PATH")]
    pub out: PathBuf,
    /// JSON report: errors against the truth, calorimeter resolution.
    #[arg(long, value_name = "JSON")]
    pub report: Option<PathBuf>,
    /// Bins of equal event count (by energy, and by temperature) in the calorimeter report.
    #[arg(long, value_name = "N", default_value_t = 5, value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub bins: u16,
}

/// Arguments of `twin-kernel select`.
#[derive(Debug, Args)]
#[command(after_help = SELECT_HELP)]
pub struct SelectArgs {
    /// Model files of the trials, in trial order.
    #[arg(long, value_name = "MODEL", num_args = 1.., required_unless_present = "list")]
    pub trials: Vec<PathBuf>,
    /// File with one model path per line (blank lines and `#` comments skipped), after `--trials`.
    #[arg(long, value_name = "FILE")]
    pub list: Option<PathBuf>,
    /// Ranked table (CSV).
    #[arg(long, value_name = "CSV")]
    pub out: PathBuf,
    /// Ranked table and survivors (JSON, read by `train --from-ranking`).
    #[arg(long, value_name = "JSON")]
    pub json: Option<PathBuf>,
    /// Copy the best trial's model here.
    #[arg(long, value_name = "PATH")]
    pub best: Option<PathBuf>,
    /// Keep the K best trials as survivors (successive halving).
    #[arg(long, value_name = "K", value_parser = clap::value_parser!(u32).range(1..))]
    pub top: Option<u32>,
}

/// `twin-kernel tabulate` targets.
#[derive(Debug, Subcommand)]
pub enum TabulateCommand {
    /// Flood-surrogate table from the gauge files of an ensemble.
    #[command(after_help = TABULATE_HELP)]
    Flood(TabulateFloodArgs),
}

/// A flood scenario parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ParamArg {
    /// Peak inflow discharge, m³/s.
    InflowPeak,
    /// Rainfall intensity, mm/h.
    Rain,
    /// Manning roughness.
    ManningN,
}

/// Arguments of `twin-kernel tabulate flood`.
#[derive(Debug, Args)]
pub struct TabulateFloodArgs {
    /// Gauge files of the members (`result_gauges.nc`), in member order.
    #[arg(long, value_name = "PATH", num_args = 1.., required_unless_present = "list")]
    pub results: Vec<PathBuf>,
    /// File with one gauge-file path per line, after `--results`.
    #[arg(long, value_name = "FILE")]
    pub list: Option<PathBuf>,
    /// Table output (`.h5` → HDF5, else NetCDF).
    #[arg(long, value_name = "PATH")]
    pub out: PathBuf,
    /// Only this gauge's maximum depth as target (default: every gauge).
    #[arg(long, value_name = "NAME")]
    pub gauge: Option<String>,
    /// Scenario parameters as features (repeat or comma-separate).
    #[arg(long = "param", value_enum, value_delimiter = ',', default_values = ["inflow-peak", "rain"])]
    pub params: Vec<ParamArg>,
}

/// Picks a hyperparameter: the flag, else the file's value, else the default; a flag that
/// contradicts the file is an error.
fn pick<T: PartialEq + std::fmt::Debug + Clone>(
    flag: &str,
    given: Option<T>,
    from_file: Option<T>,
    default: T,
    origin: Option<&Path>,
) -> Result<T, TrainError> {
    match (given, from_file) {
        (Some(g), Some(f)) if g != f => Err(TrainError::ModelFile {
            path: origin.map(Path::to_path_buf).unwrap_or_default(),
            reason: format!(
                "was trained with `{flag}` = {f:?}, the command line says {g:?}; hint: drop `{flag}` to continue with the file's value"
            ),
        }),
        (Some(g), _) => Ok(g),
        (None, Some(f)) => Ok(f),
        (None, None) => Ok(default),
    }
}

/// The hyperparameters of a run: flags over the continued file's over the defaults.
fn resolve(args: &TrainArgs, base: Option<&TrainState>, origin: Option<&Path>) -> Result<Hyperparameters, TrainError> {
    let d = Hyperparameters::default();
    let b = base.map(|s| &s.hyper);
    let hidden_flag = match (args.model, &args.hidden, args.width.zip(args.depth)) {
        (_, _, Some((width, depth))) => Some(vec![width; depth]),
        (Some(ModelArg::Linear), Some(h), _) if !h.is_empty() => {
            return Err(TrainError::Request("`--model linear` takes no `--hidden` layers".into()));
        }
        (Some(ModelArg::Linear), _, _) => Some(Vec::new()),
        (_, Some(h), _) => Some(h.clone()),
        (Some(ModelArg::Mlp), None, _) => {
            b.filter(|b| !b.hidden.is_empty()).map_or_else(|| Some(d.hidden.clone()), |_| None)
        }
        (None, None, _) => None,
    };
    let activation = args.activation.map(|a| match a {
        ActivationArg::Relu => Activation::Relu,
        ActivationArg::Tanh => Activation::Tanh,
    });
    let transform = args.target_transform.map(|t| match t {
        TransformArg::None => TargetTransform::None,
        TransformArg::Log => TargetTransform::Log,
    });
    let schedule = args.lr_schedule.map(|s| match s {
        ScheduleArg::Constant => LrSchedule::Constant,
        ScheduleArg::Cosine => LrSchedule::Cosine,
    });
    Ok(Hyperparameters {
        hidden: pick("--hidden", hidden_flag, b.map(|b| b.hidden.clone()), d.hidden, origin)?,
        activation: pick("--activation", activation, b.map(|b| b.activation), d.activation, origin)?,
        lr: pick("--lr", args.lr, b.map(|b| b.lr), d.lr, origin)?,
        lr_schedule: pick("--lr-schedule", schedule, b.map(|b| b.lr_schedule), d.lr_schedule, origin)?,
        batch_size: pick("--batch", args.batch, b.map(|b| b.batch_size), d.batch_size, origin)?,
        micro_batch: pick("--micro-batch", args.micro_batch, b.map(|b| b.micro_batch), d.micro_batch, origin)?,
        shards: pick("--shards", args.shards, b.map(|b| b.shards), d.shards, origin)?,
        epochs: args.epochs,
        seed: pick("--seed", args.seed, b.map(|b| b.seed), d.seed, origin)?,
        val_fraction: pick("--val-fraction", args.val_fraction, b.map(|b| b.val_fraction), d.val_fraction, origin)?,
        weight_decay: pick("--weight-decay", args.weight_decay, b.map(|b| b.weight_decay), d.weight_decay, origin)?,
        target_transform: pick(
            "--target-transform",
            transform,
            b.map(|b| b.target_transform),
            d.target_transform,
            origin,
        )?,
    })
}

/// Runs `twin-kernel train` (collective: every rank calls it).
pub(super) fn run_train(
    comm: &dyn Communicator,
    args: TrainArgs,
    command_line: &str,
) -> Result<(), super::KernelError> {
    let since = Instant::now();
    let is_root = comm.rank() == 0;
    if args.time_limit.is_some_and(|t| !(t.is_finite() && t > 0.0)) {
        return Err(TrainError::Request("`--time-limit` must be > 0 s".into()).into());
    }
    // Where to continue from: an existing checkpoint (--resume) wins over --init-from.
    let continued = match (&args.init_from, &args.from_ranking, args.pick) {
        (Some(p), _, _) => Some(p.clone()),
        (None, Some(r), Some(i)) => Some(select::pick_from_ranking(r, i)?),
        _ => None,
    };
    let checkpoint_exists = args.checkpoint.as_ref().is_some_and(|c| c.exists());
    let origin = match (&args.checkpoint, args.resume && checkpoint_exists) {
        (Some(c), true) => Some(c.clone()),
        _ => continued,
    };
    let base = origin.as_deref().map(store::read_state).transpose()?;
    if is_root {
        match (&origin, args.resume && !checkpoint_exists) {
            (Some(o), _) => {
                tracing::info!(path = %o.display(), epoch = base.as_ref().map_or(0, |b| b.epoch), "continuing")
            }
            (None, true) => tracing::info!("no checkpoint yet: starting from scratch"),
            (None, false) => {}
        }
    }
    let hyper = resolve(&args, base.as_ref(), origin.as_deref())?;
    let features = match (&args.features, &base) {
        (f, _) if !f.is_empty() => f.clone(),
        (_, Some(b)) => b.inputs.features.clone(),
        _ => return Err(TrainError::Request("no feature datasets; hint: `--features NAME` (repeatable)".into()).into()),
    };
    let target = match (&args.target, &base) {
        (Some(t), _) => t.clone(),
        (None, Some(b)) => b.inputs.target.clone(),
        _ => return Err(TrainError::Request("no target dataset; hint: `--target NAME`".into()).into()),
    };
    hyper.validate()?;
    // Each rank reads only the shards it owns (see `train::shard`).
    let table = train::load_shards(&args.data, &features, &target, hyper.shards, comm.rank(), comm.size())?;
    let rows: usize = table.slabs.iter().map(|s| s.x.nrows()).sum();
    let mine: Vec<usize> = table.slabs.iter().map(|s| s.shard).collect();
    tracing::info!("read shards {mine:?} of {}: {rows} of {} samples", hyper.shards, table.layout.samples);
    if is_root && comm.size() > hyper.shards {
        tracing::warn!(
            "{} ranks but {} shards: ranks {}.. have no data and idle; hint: `--shards {}` (results depend on it)",
            comm.size(),
            hyper.shards,
            hyper.shards,
            comm.size()
        );
    }
    let (mut state, data) = train::start(comm, &table, hyper, base.zip(origin.as_deref()))?;
    if is_root && state.epoch > state.hyper.epochs {
        tracing::warn!(
            "the continued run has {} epochs, more than `--epochs {}`: nothing to train",
            state.epoch,
            state.hyper.epochs
        );
    }
    if is_root {
        tracing::info!(
            model = state.hyper.model_name(),
            layers = ?state.net.sizes,
            parameters = state.net.n_params(),
            shards = state.hyper.shards,
            samples = state.inputs.samples,
            train = state.inputs.n_train,
            val = state.inputs.n_val,
            baseline_val_rmse = state.baseline_val_rmse,
            ranks = comm.size(),
            "training"
        );
    }
    let parameters = serde_json::json!({
        "data": args.data, "features": state.inputs.features, "target": state.inputs.target,
        "hyperparameters": state.hyper, "continued_from": origin,
    })
    .to_string();
    let provenance = Provenance {
        mpi_ranks: Some(comm.size()),
        ..Provenance::from_env("twinflow surrogate model", train::KERNEL_NAME, parameters, command_line)
    };
    let limits = Limits {
        since,
        time_limit: args.time_limit,
        epoch_limit: args.epoch_limit,
        checkpoint_every: args.checkpoint_every,
    };
    let checkpoint = args.checkpoint.clone();
    let mut save = |s: &TrainState| -> Result<(), TrainError> {
        if let (Some(path), true) = (&checkpoint, is_root) {
            store::write_checkpoint(path, s, &provenance)?;
            tracing::debug!(path = %path.display(), epoch = s.epoch, "checkpoint written");
        }
        Ok(())
    };
    let outcome = train::fit(comm, &mut state, &data, &limits, &mut save);
    // Nobody leaves before rank 0 has written (or failed to write) its files.
    let outcome = outcome?;
    let result = match outcome {
        FitOutcome::Finished => {
            if is_root {
                finish(&args, &state, &provenance)?;
            }
            Ok(())
        }
        FitOutcome::TimeLimit | FitOutcome::EpochLimit => {
            let stopped = Stopped {
                epoch: state.epoch,
                epochs: state.hyper.epochs,
                reason: if outcome == FitOutcome::TimeLimit { "--time-limit" } else { "--epoch-limit" },
                checkpoint: args.checkpoint.as_ref().map(|c| c.display().to_string()).unwrap_or_default(),
            };
            if is_root {
                tracing::warn!("{stopped}");
            }
            Err(stopped.into())
        }
    };
    comm.barrier();
    result
}

fn finish(args: &TrainArgs, state: &TrainState, provenance: &Provenance) -> Result<(), super::KernelError> {
    let out = store::write_model(&args.out, state, provenance)?;
    let (best_epoch, best) = state.best().unwrap_or((0, f64::NAN));
    if state.diverged {
        tracing::warn!(path = %super::shown(&out), epoch = state.epoch, "wrote the model of a diverged run (val_rmse NaN)");
    }
    tracing::info!(
        path = %super::shown(&out),
        epochs = state.epoch,
        val_rmse = state.val_rmse(),
        baseline_val_rmse = state.baseline_val_rmse,
        best_epoch,
        best_val_rmse = best,
        "wrote model"
    );
    if let Some(path) = &args.metrics {
        let out = metrics::write_metrics(path, state)?;
        tracing::info!(path = %super::shown(&out), "wrote metrics");
    }
    Ok(())
}

/// Runs `twin-kernel predict` (serial).
pub(super) fn run_predict(args: PredictArgs, command_line: &str) -> Result<(), super::KernelError> {
    let state = store::read_state(&args.model)?;
    let table = train::load_table(&args.data, &state.inputs.features, &state.inputs.target, TargetUse::IfPresent)?;
    let pred = predict::predict(&state, &table)?;
    let truth = match &table.y {
        Some(y) if y.ncols() != state.inputs.outputs => {
            return Err(TrainError::Data {
                path: args.data.clone(),
                dataset: state.inputs.target.clone(),
                reason: format!("has {} columns per sample, the model predicts {}", y.ncols(), state.inputs.outputs),
            }
            .into());
        }
        other => other.as_ref(),
    };
    let predicts_energy = state.inputs.target == predict::CALO_ENERGY && state.inputs.outputs == 1;
    let energy: Option<Vec<f64>> = predicts_energy.then(|| pred.column(0).to_vec());
    let calo = predict::calorimeter_report(&args.data, energy.as_deref(), usize::from(args.bins))?;
    let naive = if calo.is_some() { predict::naive_energy(&args.data)? } else { None };
    let parameters = serde_json::json!({ "model": args.model, "data": args.data }).to_string();
    let provenance =
        Provenance::from_env("twinflow surrogate predictions", "twin-kernel predict", parameters, command_line);
    let ds = predict::prediction_dataset(&state, &pred, truth, naive.as_deref(), provenance.to_attrs());
    let out = write_dataset(&args.out, &ds, &Compression::default())?;
    let errors = truth.map(|t| Errors::of(&pred, t));
    tracing::info!(path = %super::shown(&out), samples = pred.nrows(), rmse = errors.as_ref().map(|e| e.rmse), "wrote predictions");
    if let Some(c) = &calo {
        tracing::info!(
            model_resolution = c.model.map(|m| m.resolution),
            naive_resolution = c.naive.resolution,
            model_bias = c.model.map(|m| m.bias),
            naive_bias = c.naive.bias,
            model_calibrated = c.model.map(|m| m.resolution_calibrated),
            naive_calibrated = c.naive.resolution_calibrated,
            "calorimeter energy resolution σ((E_est − E)/E), and after a global scale calibration"
        );
    }
    if let Some(path) = &args.report {
        let report = serde_json::json!({
            "model": args.model, "data": args.data, "samples": pred.nrows(), "outputs": pred.ncols(),
            "target": state.inputs.target, "truth_available": truth.is_some(),
            "errors": errors, "model_val_rmse": state.val_rmse(), "calorimeter": calo,
        });
        let out = metrics::write_text(path, &(serde_json::to_string_pretty(&report)? + "\n"))?;
        tracing::info!(path = %super::shown(&out), "wrote report");
    }
    Ok(())
}

/// Runs `twin-kernel select` (serial).
pub(super) fn run_select(args: SelectArgs) -> Result<(), super::KernelError> {
    let mut paths = args.trials.clone();
    if let Some(list) = &args.list {
        paths.extend(tabulate::read_list(list)?);
    }
    if paths.is_empty() {
        return Err(TrainError::Request("no trials given; hint: `--trials t0/model.h5 t1/model.h5 ...`".into()).into());
    }
    let trials = paths.iter().enumerate().map(|(i, p)| Trial::read(i, p)).collect::<Result<Vec<_>, _>>()?;
    let top = args.top.map(|k| k as usize);
    if let Some(k) = top.filter(|&k| k > trials.len()) {
        tracing::warn!("`--top {k}` is more than the {} trials: all survive", trials.len());
    }
    let ranking = select::rank(trials, top);
    let out = metrics::write_text(&args.out, &ranking.csv())?;
    tracing::info!(path = %super::shown(&out), trials = ranking.trials.len(), survivors = ?ranking.top, "wrote ranking");
    if let Some(path) = &args.json {
        let out = metrics::write_text(path, &(serde_json::to_string_pretty(&ranking.json())? + "\n"))?;
        tracing::info!(path = %super::shown(&out), "wrote ranking");
    }
    let best = &ranking.trials[0];
    tracing::info!(trial = best.trial, path = %super::shown(&best.path), val_rmse = best.state.val_rmse(), "best trial");
    if let Some(dest) = &args.best {
        let partial = twinflow_exchange::PartialFile::new(dest)?;
        std::fs::copy(&best.path, partial.partial_path()).map_err(|source| TrainError::Io {
            path: best.path.clone(),
            action: "copy",
            source,
        })?;
        let out = partial.commit()?;
        tracing::info!(path = %super::shown(&out), "copied the best model");
    }
    Ok(())
}

/// Runs `twin-kernel tabulate ...` (serial).
pub(super) fn run_tabulate(command: TabulateCommand, command_line: &str) -> Result<(), super::KernelError> {
    match command {
        TabulateCommand::Flood(args) => {
            let mut files = args.results.clone();
            if let Some(list) = &args.list {
                files.extend(tabulate::read_list(list)?);
            }
            let params: Vec<FloodParam> = args
                .params
                .iter()
                .map(|p| match p {
                    ParamArg::InflowPeak => FloodParam::InflowPeak,
                    ParamArg::Rain => FloodParam::Rain,
                    ParamArg::ManningN => FloodParam::ManningN,
                })
                .collect();
            let table = tabulate::tabulate_flood(&files, &params, args.gauge.as_deref())?;
            let parameters = serde_json::json!({
                "results": files, "gauge": args.gauge,
                "params": params.iter().map(|p| p.name()).collect::<Vec<_>>(),
            })
            .to_string();
            let provenance = Provenance::from_env(
                "twinflow flood-surrogate training table",
                "twin-kernel tabulate flood",
                parameters,
                command_line,
            );
            let out = write_dataset(&args.out, &table.dataset(provenance.to_attrs()), &Compression::default())?;
            tracing::info!(path = %super::shown(&out), members = table.members.len(), gauges = ?table.gauges, "wrote table");
        }
    }
    Ok(())
}
