//! Pilot workers for allocation mode: instead of one `srun` per task, the engine starts one
//! `twinflow worker` per node of the allocation with a single `srun` (one job step for the
//! whole run), and hands the tasks to them over TCP.
//!
//! - Each worker connects to the engine and proves it knows the run's secret (a file of mode
//!   0600 in the runs directory, passed by path); the engine proves the same back, so nothing
//!   else on the network can submit work or pose as a worker ([`protocol`]).
//! - A worker runs its tasks with the local backend: own process group, timeout,
//!   SIGTERM/grace/SIGKILL on cancel, the same attempt directories and outcomes
//!   ([`worker`]). Multi-rank steps are started by the worker with `srun --exact` into the
//!   allocation (the worker step itself is launched with `--overlap`, so it holds no CPUs),
//!   or with the profile's `mpiexec` and the workers' nodes as hosts (`pilot.mpi_launcher`).
//! - A worker lost (connection closed or silent for a heartbeat) fails its running tasks as
//!   node failures, which the steps' `retry:` retries on the other workers ([`backend`]).
//! - A worker that loses its engine keeps its tasks running and dials again (the address
//!   file names the engine of `run --resume`), for up to a heartbeat since it last heard
//!   from one; it then reports its tasks and the outcomes of those that ended meanwhile, and
//!   the resumed engine adopts them ([`crate::execute::Backend::recover`]). A worker no
//!   engine reaches stops its tasks and exits.
//! - `pilot.launch: local` starts the workers as processes on this machine (no SLURM).
//!
//! The scheduler is unchanged: this is one more [`crate::execute::Backend`].

pub mod backend;
pub mod packing;
pub mod protocol;
pub mod worker;

pub use backend::{PilotBackend, PilotOptions};
