//! Communicators: how the ranks of a kernel talk to each other.
//!
//! Kernels are written against the [`Communicator`] trait, never against MPI directly, so
//! the same code runs as a plain process ([`SingleProcess`], always available) or as one
//! rank of an MPI job (`MpiComm`, behind the `mpi` feature, using rsmpi).
//!
//! # Reproducible sums
//! A floating-point sum reduced across ranks depends on how the terms are grouped, so an
//! `MPI_Allreduce(SUM)` of per-rank partial sums changes in the last bits with the rank
//! count. Quantities that must not depend on the decomposition (total water volume) use
//! [`reproducible_sum`]: each rank sums each of its *global rows* left to right, the
//! per-row sums are gathered to rank 0 in global row order ([`Communicator::gather_f64`]
//! concatenates in rank order and ranks own consecutive rows), summed there in that fixed
//! order, and broadcast back. Since no row is ever split between ranks, the result is
//! bit-identical for any rank count. Min and max reductions are exact and need no care.
//!
//! # Halo exchange
//! [`Communicator::sendrecv_f64`] is a combined send and receive with optional partners,
//! like `MPI_Sendrecv` with `MPI_PROC_NULL`. It never issues a blocking send to the
//! calling rank itself: MPICH deadlocks on a blocking self-send at one rank
//! (see the MPICH FAQ on eager/rendezvous protocols), so self-exchange is a local copy.
#![warn(missing_docs)]

/// Environment variables a process started by an MPI launcher has: MPICH's Hydra and
/// srun's PMI-1/PMI-2 (`PMI_*`), PMIx (`PMIX_RANK`), Open MPI's `mpirun`.
pub const LAUNCHER_VARIABLES: &[&str] =
    &["PMI_RANK", "PMI_SIZE", "PMI_FD", "PMI_PORT", "PMIX_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK"];

/// Whether this process was started by an MPI launcher (one of [`LAUNCHER_VARIABLES`] is
/// set). A process started on its own is one rank of one: it needs no MPI at all, and an
/// MPI singleton start-up costs time and, with MPICH's UCX device, has been seen to hang in
/// `MPI_Finalize` on a loaded machine.
pub fn launched_by_mpi() -> bool {
    LAUNCHER_VARIABLES.iter().any(|v| std::env::var_os(v).is_some())
}

/// The number of ranks a launcher started, from its environment (`PMI_SIZE`,
/// `OMPI_COMM_WORLD_SIZE`, `PMIX_SIZE`); `None` outside a launcher.
pub fn launcher_size() -> Option<usize> {
    size_from(|name| std::env::var(name).ok())
}

fn size_from(get: impl Fn(&str) -> Option<String>) -> Option<usize> {
    ["PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_SIZE"].iter().find_map(|v| get(v)?.trim().parse().ok())
}

/// A reduction operator for [`Communicator::allreduce_f64`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReduceOp {
    /// Element-wise minimum (exact, order-independent).
    Min,
    /// Element-wise maximum (exact, order-independent).
    Max,
    /// Element-wise sum (floating-point: grouping depends on the rank count).
    Sum,
}

/// The operations a kernel needs from its parallel environment.
///
/// All collective operations must be called by every rank in the same order.
pub trait Communicator {
    /// Rank of this process, `0..size()`.
    fn rank(&self) -> usize;
    /// Number of ranks.
    fn size(&self) -> usize;
    /// Reduces `buf` element-wise across all ranks; every rank receives the result.
    fn allreduce_f64(&self, buf: &mut [f64], op: ReduceOp);
    /// Sums `buf` element-wise across all ranks (exact for integers).
    fn allreduce_sum_i64(&self, buf: &mut [i64]);
    /// Sums `buf` element-wise across all ranks (exact for integers).
    fn allreduce_sum_u64(&self, buf: &mut [u64]);
    /// Sends `send` to rank `dest` and receives `recv.len()` values from rank `source`,
    /// either partner being optional. `recv` is left untouched without a source.
    fn sendrecv_f64(&self, send: &[f64], dest: Option<usize>, recv: &mut [f64], source: Option<usize>);
    /// Gathers every rank's `local` slice (lengths may differ) to rank 0, concatenated in
    /// rank order. Returns `Some` on rank 0 and `None` elsewhere.
    fn gather_f64(&self, local: &[f64]) -> Option<Vec<f64>>;
    /// Copies rank 0's `buf` into every other rank's `buf` (same length everywhere).
    fn broadcast_f64(&self, buf: &mut [f64]);
    /// Waits until every rank has reached this point.
    fn barrier(&self);
    /// Ends every rank of the job after an error on this rank, so that the others do not
    /// wait forever in a collective. Does nothing with one process (the caller exits).
    fn abort_job(&self, code: i32);

    /// Convenience: reduces one value.
    fn allreduce_scalar(&self, value: f64, op: ReduceOp) -> f64 {
        let mut buf = [value];
        self.allreduce_f64(&mut buf, op);
        buf[0]
    }
}

/// Sum that does not depend on the rank count: `row_sums` are this rank's per-row partial
/// sums for consecutive global rows, rank 0 owning the first rows. See the module docs.
pub fn reproducible_sum(comm: &dyn Communicator, row_sums: &[f64]) -> f64 {
    let mut total = [0.0];
    if let Some(all) = comm.gather_f64(row_sums) {
        total[0] = all.iter().sum();
    }
    comm.broadcast_f64(&mut total);
    total[0]
}

/// The communicator of a kernel run as one plain process: rank 0 of 1.
#[derive(Debug, Default, Clone, Copy)]
pub struct SingleProcess;

impl Communicator for SingleProcess {
    fn rank(&self) -> usize {
        0
    }
    fn size(&self) -> usize {
        1
    }
    fn allreduce_f64(&self, _buf: &mut [f64], _op: ReduceOp) {}
    fn allreduce_sum_i64(&self, _buf: &mut [i64]) {}
    fn allreduce_sum_u64(&self, _buf: &mut [u64]) {}
    fn sendrecv_f64(&self, send: &[f64], dest: Option<usize>, recv: &mut [f64], source: Option<usize>) {
        // Only a periodic self-exchange is possible with one rank: a local copy.
        if dest == Some(0) && source == Some(0) {
            recv.copy_from_slice(send);
        }
    }
    fn gather_f64(&self, local: &[f64]) -> Option<Vec<f64>> {
        Some(local.to_vec())
    }
    fn broadcast_f64(&self, _buf: &mut [f64]) {}
    fn barrier(&self) {}
    fn abort_job(&self, _code: i32) {}
}

#[cfg(feature = "mpi")]
pub use mpi_comm::MpiComm;

#[cfg(feature = "mpi")]
mod mpi_comm {
    use super::{Communicator, ReduceOp};
    use mpi::collective::SystemOperation;
    use mpi::datatype::PartitionMut;
    use mpi::environment::Universe;
    use mpi::point_to_point::{self as p2p, Destination, Source};
    use mpi::topology::{Communicator as _, SimpleCommunicator};
    use mpi::traits::{CommunicatorCollectives, Root};

    /// One rank of an MPI job (rsmpi over the system MPI, MPICH in CI).
    ///
    /// Dropping it finalizes MPI, so keep it alive until the kernel has finished.
    pub struct MpiComm {
        // Field order matters: `world` must drop before `universe` finalizes MPI.
        world: SimpleCommunicator,
        _universe: Universe,
    }

    impl std::fmt::Debug for MpiComm {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("MpiComm").field("rank", &self.world.rank()).field("size", &self.world.size()).finish()
        }
    }

    impl MpiComm {
        /// Initializes MPI. Returns `None` if MPI was already initialized in this process.
        pub fn init() -> Option<Self> {
            let universe = mpi::initialize()?;
            let world = universe.world();
            Some(Self { world, _universe: universe })
        }

        fn rank_i32(rank: usize) -> i32 {
            i32::try_from(rank).expect("MPI ranks fit in i32")
        }
    }

    fn op_of(op: ReduceOp) -> SystemOperation {
        match op {
            ReduceOp::Min => SystemOperation::min(),
            ReduceOp::Max => SystemOperation::max(),
            ReduceOp::Sum => SystemOperation::sum(),
        }
    }

    impl Communicator for MpiComm {
        fn rank(&self) -> usize {
            usize::try_from(self.world.rank()).expect("MPI rank is non-negative")
        }
        fn size(&self) -> usize {
            usize::try_from(self.world.size()).expect("MPI size is positive")
        }
        fn allreduce_f64(&self, buf: &mut [f64], op: ReduceOp) {
            let send = buf.to_vec();
            self.world.all_reduce_into(&send[..], buf, op_of(op));
        }
        fn allreduce_sum_i64(&self, buf: &mut [i64]) {
            let send = buf.to_vec();
            self.world.all_reduce_into(&send[..], buf, SystemOperation::sum());
        }
        fn allreduce_sum_u64(&self, buf: &mut [u64]) {
            let send = buf.to_vec();
            self.world.all_reduce_into(&send[..], buf, SystemOperation::sum());
        }
        fn sendrecv_f64(&self, send: &[f64], dest: Option<usize>, recv: &mut [f64], source: Option<usize>) {
            let me = self.rank();
            match (dest, source) {
                (Some(d), Some(s)) if d == me && s == me => recv.copy_from_slice(send),
                (Some(d), Some(s)) => {
                    let dp = self.world.process_at_rank(Self::rank_i32(d));
                    let sp = self.world.process_at_rank(Self::rank_i32(s));
                    p2p::send_receive_into(send, &dp, recv, &sp);
                }
                // A lone blocking send is safe here: the partner posts its receive (alone or
                // inside its own send_receive) without waiting on us, so no cycle can form
                // along a strip decomposition.
                (Some(d), None) => {
                    assert_ne!(d, me, "a blocking send to self deadlocks MPICH");
                    self.world.process_at_rank(Self::rank_i32(d)).send(send);
                }
                (None, Some(s)) => {
                    assert_ne!(s, me, "a blocking receive from self deadlocks MPICH");
                    self.world.process_at_rank(Self::rank_i32(s)).receive_into(recv);
                }
                (None, None) => {}
            }
        }
        fn gather_f64(&self, local: &[f64]) -> Option<Vec<f64>> {
            let root = self.world.process_at_rank(0);
            let count = i32::try_from(local.len()).expect("gather count fits in i32");
            if self.rank() == 0 {
                let mut counts = vec![0_i32; self.size()];
                root.gather_into_root(&count, &mut counts[..]);
                let displs: Vec<i32> = counts
                    .iter()
                    .scan(0_i32, |acc, &c| {
                        let d = *acc;
                        *acc += c;
                        Some(d)
                    })
                    .collect();
                let total: usize = counts.iter().map(|&c| c as usize).sum();
                let mut all = vec![0.0_f64; total];
                {
                    let mut partition = PartitionMut::new(&mut all[..], &counts[..], &displs[..]);
                    root.gather_varcount_into_root(local, &mut partition);
                }
                Some(all)
            } else {
                root.gather_into(&count);
                root.gather_varcount_into(local);
                None
            }
        }
        fn broadcast_f64(&self, buf: &mut [f64]) {
            self.world.process_at_rank(0).broadcast_into(buf);
        }
        fn barrier(&self) {
            self.world.barrier();
        }
        fn abort_job(&self, code: i32) {
            if self.size() > 1 {
                self.world.abort(code);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_launcher_size_is_read_from_its_environment() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string())
        };
        assert_eq!(super::size_from(env(&[("PMI_SIZE", "4")])), Some(4));
        assert_eq!(super::size_from(env(&[("OMPI_COMM_WORLD_SIZE", " 2")])), Some(2));
        assert_eq!(super::size_from(env(&[("PMI_SIZE", "x"), ("PMIX_SIZE", "3")])), Some(3));
        assert_eq!(super::size_from(env(&[])), None);
    }

    use super::*;

    #[test]
    fn single_process_is_rank_zero_of_one() {
        let c = SingleProcess;
        assert_eq!((c.rank(), c.size()), (0, 1));
        assert_eq!(c.allreduce_scalar(3.5, ReduceOp::Min), 3.5);
        assert_eq!(c.gather_f64(&[1.0, 2.0]), Some(vec![1.0, 2.0]));
        assert_eq!(reproducible_sum(&c, &[1.0, 2.0, 3.0]), 6.0);
        let mut r = [0.0; 2];
        c.sendrecv_f64(&[4.0, 5.0], Some(0), &mut r, Some(0));
        assert_eq!(r, [4.0, 5.0]);
        let mut r = [7.0];
        c.sendrecv_f64(&[4.0], None, &mut r, None);
        assert_eq!(r, [7.0]);
    }
}
