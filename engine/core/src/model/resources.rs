//! What one task asks for: ranks, threads, nodes, memory, walltime and GPUs. Validation
//! fills it from `resources:`, a site profile's defaults complete it, and the backends read
//! it (local cores, `srun`/`sbatch` options).

use std::time::Duration;

/// Resources of one task.
#[derive(Debug, Clone, PartialEq)]
pub struct Resources {
    /// MPI ranks.
    pub ranks: u32,
    /// Threads per rank.
    pub threads: u32,
    /// Nodes.
    pub nodes: u32,
    /// Memory in bytes (0 = unspecified).
    pub memory: u64,
    /// Walltime requested from batch schedulers.
    pub walltime: Option<Duration>,
    /// GPUs.
    pub gpus: u32,
    /// Which of these the step wrote itself; a site profile's default resources fill in
    /// the others.
    pub given: ResourcesGiven,
}

/// Which resources a step set itself (see [`Resources::given`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResourcesGiven {
    /// `threads` was written.
    pub threads: bool,
    /// `memory` was written.
    pub memory: bool,
    /// `gpus` was written.
    pub gpus: bool,
}

impl Default for Resources {
    fn default() -> Self {
        Self { ranks: 1, threads: 1, nodes: 1, memory: 0, walltime: None, gpus: 0, given: ResourcesGiven::default() }
    }
}

impl Resources {
    /// Cores used locally: ranks × threads.
    pub fn cores(&self) -> u32 {
        self.ranks.saturating_mul(self.threads)
    }
}
