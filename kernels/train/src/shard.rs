//! Data shards, the epoch order built from them, and the exact slot reduction that makes
//! data-parallel training independent of the rank count.
//!
//! # Shards
//! The `n` samples of the data file are cut into `S` shards of contiguous rows: shard `s`
//! holds rows `⌊n s/S⌋ .. ⌊n (s+1)/S⌋`. `S` is a hyperparameter (`--shards`, default
//! [`super::hyper::DEFAULT_SHARDS`]) that does not depend on the number of ranks `N`. Rank
//! `r` owns shards `r, r + N, r + 2N, …` ([`Sharding::owned`]) and reads only their rows
//! from the file, one HDF5/NetCDF hyperslab per shard; with `N > S` the extra ranks idle.
//! The train/validation split is a function of `n` and the seed alone, so every rank knows
//! how many training and validation rows each shard has without reading any data.
//!
//! # Epoch order
//! An epoch visits the training rows in an order distributed like a uniform random
//! permutation, assembled from pieces that each need only what their owner has:
//! - shard `s` shuffles its own training rows with ChaCha8 keyed by the seed, stream
//!   [`shard_stream`]`(e, s)` (only its owner needs this order);
//! - every rank draws the same *interleaving*: the sequence of shard labels in which shard
//!   `s` appears `n_s` times (its training rows), shuffled with stream
//!   [`interleave_stream`]`(e)`.
//!
//! (A uniform permutation of all rows is exactly a uniform interleaving of the labels with
//! independent uniform orders inside each shard.) Global batch `j` is positions
//! `jB .. (j+1)B` of the label sequence: shard `s` contributes the next `c_{j,s}` rows of
//! its own order, `c_{j,s}` being the count of its label in the batch ([`EpochPlan`]).
//!
//! # Reduction
//! For batch `j`, the owner of each contributing shard computes that shard's gradient sum
//! (in passes of at most `micro_batch` rows, added in order) and writes it into the
//! shard's *slot* of a vector of `k_j × (P + 1)` zeros: `k_j` contributing shards in shard
//! order, `P` parameters and the squared error. `MPI_Allreduce(SUM)` of that vector is
//! exact whatever the reduction tree, because every slot has exactly one non-zero
//! contributor and `x + 0 = x` in IEEE arithmetic (negative zeros are written as `+0`
//! first, so not even the sign of a zero depends on `N`). Every rank then adds the `k_j`
//! slots in shard order ([`reduce_slots`]) and takes the same Adam step. The validation
//! error, the standardisation statistics, the mean-predictor baseline and the data
//! fingerprint are reduced the same way with one slot per shard. Weights, metrics and
//! checkpoints are therefore bit-identical for 1, 2, 4, … ranks (on identical CPUs: the
//! matrix products pick FMA kernels at run time).
//!
//! Cost: the allreduce carries `k_j ≤ min(S, B)` times the `P + 1` values of a plain
//! gradient allreduce (6.4 MB per step for `S = 8` and 10⁵ parameters): fine for the
//! surrogate networks here, not for large models, where a reproducible reduce-scatter
//! would be the tool.

use std::ops::Range;

use rand::SeedableRng as _;
use rand::seq::SliceRandom as _;
use rand_chacha::ChaCha8Rng;

use twinflow_comm::{Communicator, ReduceOp};

/// How `rows` samples are cut into `shards` shards of contiguous rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sharding {
    /// Samples in the file.
    pub rows: usize,
    /// Number of shards (at least 1).
    pub shards: usize,
}

impl Sharding {
    /// `rows` samples in `shards` shards (0 shards count as 1).
    pub fn new(rows: usize, shards: usize) -> Self {
        Self { rows, shards: shards.max(1) }
    }

    /// The rows of shard `s`.
    pub fn range(&self, s: usize) -> Range<usize> {
        let edge = |k: usize| (self.rows as u128 * k as u128 / self.shards as u128) as usize;
        edge(s)..edge(s + 1)
    }

    /// The shard holding row `row`.
    pub fn shard_of(&self, row: usize) -> usize {
        // The edges are ⌊n s/S⌋; the first edge above `row` closes its shard.
        let mut s = (row as u128 * self.shards as u128 / self.rows.max(1) as u128) as usize;
        s = s.min(self.shards - 1);
        while self.range(s).start > row {
            s -= 1;
        }
        while self.range(s).end <= row {
            s += 1;
        }
        s
    }

    /// The shards rank `rank` of `size` owns: `rank, rank + size, …`.
    pub fn owned(&self, rank: usize, size: usize) -> Vec<usize> {
        (rank..self.shards).step_by(size.max(1)).collect()
    }

    /// Rows per shard of an ascending list of global rows.
    pub fn counts(&self, rows: &[usize]) -> Vec<usize> {
        let mut counts = vec![0; self.shards];
        for &r in rows {
            counts[self.shard_of(r)] += 1;
        }
        counts
    }

    /// The rows of an ascending list that fall into shard `s`, as offsets from the shard's
    /// first row.
    pub fn local(&self, rows: &[usize], s: usize) -> Vec<usize> {
        let range = self.range(s);
        let lo = rows.partition_point(|&r| r < range.start);
        let hi = rows.partition_point(|&r| r < range.end);
        rows[lo..hi].iter().map(|&r| r - range.start).collect()
    }
}

/// Random stream of the interleaving of epoch `epoch` (0-based).
pub fn interleave_stream(epoch: usize) -> u64 {
    (epoch as u64) << 32
}

/// Random stream of shard `shard`'s own order in epoch `epoch`. Epochs stay below 2³⁰ and
/// shards below 2¹⁶ ([`super::hyper::Hyperparameters::check`]), so no two (epoch, shard)
/// pairs and neither the split nor the initialisation stream (`u64::MAX − 1`, `u64::MAX`)
/// share a stream.
pub fn shard_stream(epoch: usize, shard: usize) -> u64 {
    interleave_stream(epoch) | (shard as u64 + 1)
}

fn rng(seed: u64, stream: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(stream);
    rng
}

/// The order in which shard `shard` visits its training rows (`train`, local offsets) in
/// epoch `epoch`.
pub fn shard_order(train: &[usize], seed: u64, epoch: usize, shard: usize) -> Vec<usize> {
    let mut order = train.to_vec();
    order.shuffle(&mut rng(seed, shard_stream(epoch, shard)));
    order
}

/// The batches of one epoch: for each, the contributing shards (ascending) and how many
/// rows each contributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EpochPlan {
    /// `steps[j]` = `[(shard, rows), …]` of batch `j`, shards ascending, rows > 0.
    pub steps: Vec<Vec<(usize, usize)>>,
}

impl EpochPlan {
    /// The plan of epoch `epoch` for shards with `train_counts` training rows and global
    /// batches of `batch` rows (the last batch may be shorter).
    pub fn new(train_counts: &[usize], batch: usize, seed: u64, epoch: usize) -> Self {
        let total: usize = train_counts.iter().sum();
        let mut labels: Vec<u32> = Vec::with_capacity(total);
        for (s, &n) in train_counts.iter().enumerate() {
            labels.extend(std::iter::repeat_n(s as u32, n));
        }
        labels.shuffle(&mut rng(seed, interleave_stream(epoch)));
        let mut count = vec![0_usize; train_counts.len()];
        let steps = labels
            .chunks(batch.max(1))
            .map(|chunk| {
                count.iter_mut().for_each(|c| *c = 0);
                for &s in chunk {
                    count[s as usize] += 1;
                }
                count.iter().enumerate().filter(|(_, c)| **c > 0).map(|(s, &c)| (s, c)).collect()
            })
            .collect();
        Self { steps }
    }
}

/// Reduces `slots` (consecutive vectors of `width` values, one per slot, each written by
/// exactly one rank and zero on every other) across the ranks and returns their sum, added
/// slot by slot in order. The result does not depend on the rank count: see the module docs.
pub fn reduce_slots(comm: &dyn Communicator, slots: &mut [f64], width: usize) -> Vec<f64> {
    // −0 + 0 = +0: make a lone rank's negative zeros look like the reduced ones.
    slots.iter_mut().for_each(|v| *v += 0.0);
    comm.allreduce_f64(slots, ReduceOp::Sum);
    let mut total = vec![0.0; width];
    for slot in slots.chunks_exact(width.max(1)) {
        total.iter_mut().zip(slot).for_each(|(t, v)| *t += v);
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use twinflow_comm::SingleProcess;

    #[test]
    fn shards_are_contiguous_and_cover_every_row() {
        for (rows, shards) in [(10, 3), (7, 8), (0, 4), (100, 1), (12, 8)] {
            let sh = Sharding::new(rows, shards);
            let mut next = 0;
            for s in 0..shards {
                let r = sh.range(s);
                assert_eq!(r.start, next);
                next = r.end;
                for row in r {
                    assert_eq!(sh.shard_of(row), s, "{rows} rows, {shards} shards, row {row}");
                }
            }
            assert_eq!(next, rows);
        }
        let sh = Sharding::new(10, 4);
        assert_eq!(sh.owned(0, 3), [0, 3]);
        assert_eq!(sh.owned(2, 3), [2]);
        assert_eq!(sh.owned(5, 8), Vec::<usize>::new());
        assert_eq!(sh.counts(&[0, 1, 5, 9]), [2, 0, 1, 1]);
        assert_eq!(sh.local(&[0, 1, 5, 6, 9], 2), [0, 1]); // shard 2 = rows 5..7
    }

    /// Every training row is visited exactly once per epoch, in batches of exactly `batch`
    /// rows but the last, and the order changes with the epoch but not between calls.
    #[test]
    fn epoch_plans_visit_every_row_once_in_batches() {
        let counts = [5, 0, 7, 3];
        let plan = EpochPlan::new(&counts, 4, 9, 0);
        assert_eq!(plan, EpochPlan::new(&counts, 4, 9, 0));
        assert_ne!(plan, EpochPlan::new(&counts, 4, 9, 1));
        let sizes: Vec<usize> = plan.steps.iter().map(|s| s.iter().map(|(_, c)| c).sum()).collect();
        assert_eq!(sizes, [4, 4, 4, 3]);
        let mut per_shard = [0; 4];
        for step in &plan.steps {
            assert!(step.windows(2).all(|w| w[0].0 < w[1].0));
            for &(s, c) in step {
                per_shard[s] += c;
            }
        }
        assert_eq!(per_shard, counts);
        let order = shard_order(&[0, 2, 3, 6], 9, 0, 2);
        let mut sorted = order.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, [0, 2, 3, 6]);
        assert_eq!(order, shard_order(&[0, 2, 3, 6], 9, 0, 2));
    }

    #[test]
    fn streams_never_collide() {
        assert_ne!(shard_stream(0, 0), interleave_stream(0));
        assert_ne!(shard_stream(1, 0), shard_stream(0, 1));
        assert!(shard_stream(super::super::hyper::MAX_EPOCHS, super::super::hyper::MAX_SHARDS) < u64::MAX - 1);
    }

    #[test]
    fn slots_add_in_order_and_lose_negative_zeros() {
        let mut slots = [1.0, -0.0, 2.0, -0.0];
        let total = reduce_slots(&SingleProcess, &mut slots, 2);
        assert_eq!(total, [3.0, 0.0]);
        assert!(total[1].is_sign_positive() && slots[1].is_sign_positive());
    }
}
