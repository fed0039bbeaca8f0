//! Flood kernel: the 2D shallow-water equations on a structured grid.
//!
//! # Equations
//! With depth `h` (m), velocities `u`, `v` (m s⁻¹), discharges `hu`, `hv` (m² s⁻¹), bed
//! elevation `z` (m), gravity `g` (m s⁻²), Manning roughness `n` (s m⁻¹ᐟ³) and rainfall
//! intensity `r` (m s⁻¹):
//!
//! ```text
//! ∂h/∂t  + ∂(hu)/∂x             + ∂(hv)/∂y             = r
//! ∂hu/∂t + ∂(hu² + g h²/2)/∂x   + ∂(huv)/∂y            = −g h ∂z/∂x − g n² |u| hu / h^(4/3)
//! ∂hv/∂t + ∂(huv)/∂x            + ∂(hv² + g h²/2)/∂y   = −g h ∂z/∂y − g n² |u| hv / h^(4/3)
//! ```
//!
//! # Scheme
//! First-order finite volumes, explicit Euler in time, unsplit (both directions' fluxes
//! from the same state):
//! - **Well-balanced bed slope**: hydrostatic reconstruction (Audusse, Bouchut, Bristeau,
//!   Klein & Perthame 2004, SIAM J. Sci. Comput. 25:2050). At each face
//!   `z* = max(z_L, z_R)`, `h*_{L,R} = max(0, h_{L,R} + z_{L,R} − z*)`; the flux is evaluated
//!   on the reconstructed states and each cell adds `g (h_i² − h*²)/2` to its normal
//!   momentum flux. A lake at rest (flat surface, zero velocity, wet and dry cells) is
//!   preserved: the fluxes vanish exactly where `h + z` is exactly flat, so only the
//!   round-off of `h = η − z` remains (≈1e-15), and depths stay non-negative.
//! - **Flux**: HLL (Harten, Lax & van Leer 1983) with Toro's wave-speed estimates, dry-side
//!   fronts moving at `u ± 2c`; the tangential momentum is upwinded with the mass flux.
//! - **Wet/dry**: cells with `h ≤ dry_depth` have zero velocity and their momentum is
//!   dropped; round-off negative depths are clipped to zero and the clipped volume is
//!   counted ([`Counters::clipped_volume`]).
//! - **Friction**: Manning, semi-implicit per cell after the flux update,
//!   `q ← q / (1 + Δt g n² |u| / h^(4/3))`, which never reverses or amplifies the flow.
//! - **Sources**: uniform rainfall added to every cell; an inflow hydrograph `Q(t)`
//!   (piecewise linear, [`Hydrograph`]) added as volume to the boundary cells of a segment.
//! - **Boundaries** per side: closed (reflective ghost cells) or open (zero-gradient ghost
//!   cells, transmissive).
//! - **Time step**: `Δt = CFL / max((|u| + c)/Δx + (|v| + c)/Δy)` with `c = √(g h)`, the
//!   maximum taken across ranks with one allreduce per step (computed in the same pass as
//!   the update, for the next step); default CFL 0.45.
//!
//! # Parallelism and performance
//! Rows are split into strips over the ranks ([`Strip`]); each rank reads only its rows
//! and their halo from the input files, and rank 0 gathers fields for output. Each step
//! exchanges one ghost row of `h, hu, hv` with each neighbour (`MPI_Sendrecv`), and one
//! allreduce (max) gives the next time step. A step is one pass over the strip, row by
//! row; per row, four short branch-free loops over cache-resident row buffers
//! (primitives, x-face fluxes, y-face fluxes, update with sources, friction, maxima and
//! the CFL bound), so each face flux is computed once, each main-array element is read
//! and written once, nothing is allocated inside the step, and the loops vectorize (AVX-512
//! and AVX2 builds of the same loops are picked at run time when the CPU has them; their
//! results are bit-identical). Results do not depend on the rank count: every cell sees the same
//! operands and min/max reductions are exact; volumes are summed per global row in a
//! fixed order ([`twinflow_comm::reproducible_sum`]).
//!
//! # Limitations
//! First order in space and time: fronts and shorelines are smeared over a few cells, and
//! a thin film (≈ bed step per cell) lingers behind a shoreline receding down a slope, a
//! known property of the hydrostatic reconstruction (Delestre et al. 2012, C. R. Math.
//! 350:677). Inflow enters as a mass source without momentum.
//!
//! # Tests
//! `tests/numerics.rs`: lake at rest (Audusse et al. 2004), Ritter's dry dam break
//! and Thacker's planar surface in a parabola (SWASHES, Delestre et al. 2013, Int. J. Numer.
//! Meth. Fluids 72:269), volume conservation, rain/inflow volume, Manning decay;
//! `kernels/twin-kernel/tests/cli.rs` (through the binary): outputs read by
//! `ncdump`/`h5dump`/xarray and rank independence under `mpiexec` (feature `mpi`).
#![warn(missing_docs)]

mod config;
mod hydrograph;
mod kernel;
mod run;
mod solver;

pub use config::{ConfigIssue, FloodConfig, GaugeConfig, InflowConfig, InitialConfig, MAX_SAMPLES, RunPlan};
pub use hydrograph::{Hydrograph, HydrographError};
pub use kernel::Simd;
pub use run::{FloodError, KERNEL_NAME, MemberParameters, RunPaths, RunSummary, run_flood};
pub use solver::{
    Boundaries, BoundaryKind, Counters, Field, FloodSolver, GRAVITY, Grid, Inflow, InitialState, MIN_DT, NEVER, Params,
    Side, SolverError, Strip, mm_per_hour,
};
