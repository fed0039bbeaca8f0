//! Surrogate training: a small multilayer perceptron or a linear model fitted to data of
//! earlier workflow steps, data-parallel over MPI ranks, with checkpoints that resume bit
//! for bit.
//!
//! # Model and loss
//! Features `x` and target `y` are standardised with the mean and standard deviation of
//! the training split (`y` after an optional `ln` transform); the network ([`model`])
//! maps standardised features to standardised targets and is fitted by minimising the mean
//! squared error `L = 1/(B·T) Σ_batch Σ_outputs (ŷ − y)²` with Adam ([`optim`]; decoupled
//! weight decay on weights). The validation RMSE is reported in target units. A network
//! without hidden layers is a linear model; its coefficients in data units are also
//! written ([`store::linear_in_data_units`]).
//!
//! # Data parallelism and reproducibility
//! See [`shard`] and [`fit`](mod@fit): the samples are cut into a fixed number of shards
//! of contiguous rows (a hyperparameter, independent of the rank count); each rank reads
//! only the shards it owns (HDF5/NetCDF hyperslabs). Every global mini-batch draws rows
//! from the shards in an order keyed by `(seed, epoch)`; each shard's gradient sum goes
//! into its own slot of one `MPI_Allreduce(SUM)`, which is exact because every slot has a
//! single non-zero contributor, and every rank adds the slots in shard order. So 1, 2 or 4
//! ranks give bit-identical weights (on identical CPUs: the matrix products pick FMA
//! kernels at run time). Initialisation, split, interleavings and shard orders come from
//! ChaCha8 keyed by the seed and a stream, so a run resumed from a checkpoint reproduces
//! the uninterrupted run bit for bit.
//!
//! # Files
//! Model and checkpoint files share one HDF5 layout ([`store`]); metrics are CSV or JSON
//! ([`metrics`]). [`select`] ranks the trials of a hyperparameter sweep for successive
//! halving; [`predict`] applies a model and compares it with the naive calorimeter
//! estimator; [`tabulate`] builds the flood-surrogate table from flood outputs.
//!
//! # Tests
//! `kernels/twin-kernel/tests/train.rs` (through the binary): recovery of known linear
//! coefficients and of a smooth nonlinear function, bitwise rank independence under `mpiexec` on 1, 2 and 4 ranks with each
//! rank reading only its shards (feature `mpi`), bitwise resume
//! after a stop or `kill -9`, the flood surrogate against the mean predictor, the
//! calorimeter regression against `Σ cells / sampling_fraction` (synthetic data and real
//! `twin-kernel calo` output), ranking and continuation, and invalid inputs (exit code 3).
//!
//! # Limitations
//! Dense f64 layers on the CPU (ndarray/matrixmultiply, one thread per rank); the gradient
//! allreduce carries one slot per contributing shard (up to `shards` × the parameters),
//! fine for networks of up to ~10⁵ parameters, not for large models; more ranks than
//! shards leave ranks idle; no GPU, no convolutional layers.
#![warn(missing_docs)]

pub mod data;
mod error;
pub mod fit;
pub mod hyper;
pub mod metrics;
pub mod model;
pub mod optim;
pub mod predict;
pub mod select;
pub mod shard;
pub mod store;
pub mod tabulate;

pub use data::{DataFile, Layout, Normalization, ShardedTable, Slab, Split, Table, TargetUse, load_shards, load_table};
pub use error::TrainError;
pub use fit::{EpochMetrics, FitOutcome, InputSpec, Limits, Shard, TrainData, TrainState, fit, start};
pub use hyper::{Activation, Hyperparameters, LrSchedule, TargetTransform};
pub use model::Mlp;
pub use optim::Adam;

/// Kernel name recorded in provenance attributes.
pub const KERNEL_NAME: &str = "twin-kernel train";
