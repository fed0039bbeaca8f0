//! The finite-volume solver: state arrays of one rank's strip and the fused time step.
//!
//! See the [module docs](super) for the equations and the scheme.

use std::ops::Range;

use ndarray::{Array2, ArrayView2};

use super::hydrograph::Hydrograph;
use super::kernel::{self, FaceRow, PrimRow, RowPass, Simd, UpdateParams, UpdateRow, UpdateStats};
use twinflow_comm::{Communicator, ReduceOp, reproducible_sum};

/// Smallest time step accepted, s: below it a run would never finish.
pub const MIN_DT: f64 = 1e-9;

/// Gravitational acceleration, m s⁻² (the value SWASHES uses).
pub const GRAVITY: f64 = 9.81;

/// Errors raised while setting up or advancing the flood solver.
#[derive(Debug, thiserror::Error)]
pub enum SolverError {
    /// The grid cannot be decomposed or has an invalid size.
    #[error("invalid grid: {0}")]
    Grid(String),
    /// An input array does not cover this rank's rows of the grid.
    #[error("input `{name}` has shape {got:?} from row {first_row}; this rank needs rows {needed:?} of {nx} columns")]
    Shape {
        /// Name of the input.
        name: &'static str,
        /// Shape found.
        got: Vec<usize>,
        /// Global row of the array's first row.
        first_row: usize,
        /// Global rows needed (the strip and its halo rows).
        needed: Range<usize>,
        /// Columns needed.
        nx: usize,
    },
    /// A parameter is out of range.
    #[error("invalid parameter `{name}`: {reason}")]
    Parameter {
        /// Name of the parameter.
        name: &'static str,
        /// Why it is invalid.
        reason: String,
    },
    /// The CFL time step fell below [`MIN_DT`] (velocities or depths blew up).
    #[error(
        "time step collapsed to {dt:e} s at t = {time} s; hint: check the DEM for spikes and the inflow for huge discharges"
    )]
    TimeStepCollapse {
        /// The time step.
        dt: f64,
        /// Simulation time.
        time: f64,
    },
    /// The solution became NaN or infinite (usually an unstable setup).
    #[error("solution became non-finite at t = {time} s after {steps} steps")]
    NonFinite {
        /// Simulation time of the failure.
        time: f64,
        /// Steps taken.
        steps: u64,
    },
}

/// A structured grid of `nx` × `ny` square-or-rectangular cells, row-major (row = y index).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Grid {
    /// Number of cells along x (columns).
    pub nx: usize,
    /// Number of cells along y (rows).
    pub ny: usize,
    /// Cell size along x, m.
    pub dx: f64,
    /// Cell size along y, m.
    pub dy: f64,
    /// x of the centre of column 0, m.
    pub x0: f64,
    /// y of the centre of row 0, m.
    pub y0: f64,
}

impl Grid {
    /// x coordinate of the centre of column `i`.
    pub fn x(&self, i: usize) -> f64 {
        self.x0 + i as f64 * self.dx
    }
    /// y coordinate of the centre of row `j`.
    pub fn y(&self, j: usize) -> f64 {
        self.y0 + j as f64 * self.dy
    }
    /// The cell `(j, i)` containing the point `(x, y)`, if inside the grid.
    pub fn cell_at(&self, x: f64, y: f64) -> Option<(usize, usize)> {
        let fi = ((x - self.x0) / self.dx + 0.5).floor();
        let fj = ((y - self.y0) / self.dy + 0.5).floor();
        if fi < 0.0 || fj < 0.0 || fi >= self.nx as f64 || fj >= self.ny as f64 {
            return None;
        }
        Some((fj as usize, fi as usize))
    }
}

/// Rows `[start, start + len)` of the global grid owned by one rank.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Strip {
    /// First global row.
    pub start: usize,
    /// Number of rows.
    pub len: usize,
}

impl Strip {
    /// Balanced 1D decomposition of `ny` rows over `size` ranks: the first `ny % size` ranks
    /// get one extra row. Rank 0 owns the first rows.
    pub fn for_rank(ny: usize, size: usize, rank: usize) -> Self {
        let base = ny / size;
        let extra = ny % size;
        let len = base + usize::from(rank < extra);
        let start = rank * base + rank.min(extra);
        Self { start, len }
    }
    /// Global row range.
    pub fn rows(&self) -> Range<usize> {
        self.start..self.start + self.len
    }
    /// The rows and the neighbouring halo rows inside a grid of `ny` rows: what this
    /// rank reads from the input files.
    pub fn halo_rows(&self, ny: usize) -> Range<usize> {
        self.start.saturating_sub(1)..(self.start + self.len + 1).min(ny)
    }
}

/// Boundary condition on one side of the domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BoundaryKind {
    /// Reflective wall: no flow through the side.
    #[default]
    Closed,
    /// Transmissive: zero-gradient ghost cells let waves leave.
    Open,
}

/// One side of the rectangular domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    /// x = min (column 0).
    West,
    /// x = max (last column).
    East,
    /// y = min (row 0).
    South,
    /// y = max (last row).
    North,
}

/// Boundary conditions of the four sides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Boundaries {
    /// x = min side.
    pub west: BoundaryKind,
    /// x = max side.
    pub east: BoundaryKind,
    /// y = min side.
    pub south: BoundaryKind,
    /// y = max side.
    pub north: BoundaryKind,
}

impl Boundaries {
    /// All four sides the same.
    pub fn all(kind: BoundaryKind) -> Self {
        Self { west: kind, east: kind, south: kind, north: kind }
    }
}

/// An inflow hydrograph on a segment of cells along one side. The discharge enters the
/// segment's boundary cells as a mass source (no momentum), spread evenly over them.
#[derive(Debug, Clone, PartialEq)]
pub struct Inflow {
    /// Side the segment lies on.
    pub side: Side,
    /// Cells along the side (column indices for south/north, row indices for west/east).
    pub cells: Range<usize>,
    /// Discharge Q(t), m³ s⁻¹.
    pub hydrograph: Hydrograph,
}

/// Physical and numerical parameters of the solver.
#[derive(Debug, Clone, PartialEq)]
pub struct Params {
    /// Gravitational acceleration, m s⁻².
    pub gravity: f64,
    /// Manning roughness n, s m^(-1/3); 0 disables friction.
    pub manning_n: f64,
    /// Rainfall intensity, m s⁻¹ (convert from mm/h with [`mm_per_hour`]).
    pub rainfall: f64,
    /// Courant number (≤ 0.5 keeps depths non-negative in 2D).
    pub cfl: f64,
    /// Upper bound of the time step, s (used when the domain is still or dry).
    pub max_dt: f64,
    /// Depth below which a cell is dry: velocities are zero and momentum is dropped, m.
    pub dry_depth: f64,
    /// Depth at which a cell counts as inundated for the arrival-time map, m.
    pub arrival_depth: f64,
    /// Boundary conditions.
    pub boundaries: Boundaries,
    /// Optional inflow hydrograph.
    pub inflow: Option<Inflow>,
}

impl Default for Params {
    fn default() -> Self {
        Self {
            gravity: GRAVITY,
            manning_n: 0.0,
            rainfall: 0.0,
            cfl: 0.45,
            max_dt: 10.0,
            dry_depth: 1e-6,
            arrival_depth: 0.01,
            boundaries: Boundaries::default(),
            inflow: None,
        }
    }
}

/// Converts a rainfall intensity from mm h⁻¹ to m s⁻¹.
pub fn mm_per_hour(mm_h: f64) -> f64 {
    mm_h * 1e-3 / 3600.0
}

impl Params {
    fn validate(&self, grid: &Grid) -> Result<(), SolverError> {
        let bad = |name, reason: &str| Err(SolverError::Parameter { name, reason: reason.into() });
        // Written so that NaN fails every check.
        let positive = |v: f64| v.is_finite() && v > 0.0;
        let non_negative = |v: f64| v.is_finite() && v >= 0.0;
        if !positive(self.gravity) {
            return bad("gravity", "must be > 0");
        }
        if !non_negative(self.manning_n) {
            return bad("manning_n", "must be >= 0");
        }
        if !non_negative(self.rainfall) {
            return bad("rainfall", "must be >= 0");
        }
        if !(self.cfl > 0.0 && self.cfl <= 1.0) {
            return bad("cfl", "must be in (0, 1]");
        }
        if !positive(self.max_dt) {
            return bad("max_dt", "must be > 0");
        }
        if !positive(self.dry_depth) {
            return bad("dry_depth", "must be > 0");
        }
        if self.arrival_depth.is_nan() || self.arrival_depth < self.dry_depth {
            return bad("arrival_depth", "must be >= dry_depth");
        }
        if let Some(inflow) = &self.inflow {
            let along = match inflow.side {
                Side::West | Side::East => grid.ny,
                Side::South | Side::North => grid.nx,
            };
            if inflow.cells.is_empty() || inflow.cells.end > along {
                return bad("inflow", "segment must be a non-empty range of cells along its side");
            }
        }
        Ok(())
    }
}

/// A field of the solver that can be gathered or sampled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// Depth h, m.
    Depth,
    /// Velocity u = hu / h (0 in dry cells), m s⁻¹.
    VelocityX,
    /// Velocity v = hv / h (0 in dry cells), m s⁻¹.
    VelocityY,
    /// Bed elevation z, m.
    Bed,
    /// Maximum depth so far, m.
    MaxDepth,
    /// Arrival time (first time h ≥ arrival depth), s; negative if never.
    ArrivalTime,
    /// Discharge per unit width hu, m² s⁻¹ (the conserved variable).
    MomentumX,
    /// Discharge per unit width hv, m² s⁻¹ (the conserved variable).
    MomentumY,
}

/// Value of [`Field::ArrivalTime`] for cells never inundated.
pub const NEVER: f64 = -1.0;

/// Diagnostics of a run so far.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Counters {
    /// Time steps taken.
    pub steps: u64,
    /// Cell updates performed on this rank.
    pub cell_updates: u64,
    /// Water volume added on this rank by clipping negative depths to zero, m³ (should
    /// stay at round-off level with CFL ≤ 0.5).
    pub clipped_volume: f64,
    /// Water volume added on this rank by rainfall and inflow, m³.
    pub source_volume: f64,
}

/// The state of one rank's strip with a one-cell ghost ring, and the fused step.
///
/// Arrays are row-major with width `nx + 2`: local row 0 and `len + 1` are ghost rows
/// (halo from neighbour ranks or boundary ghosts), columns 0 and `nx + 1` ghost columns.
pub struct FloodSolver<'c> {
    comm: &'c dyn Communicator,
    grid: Grid,
    strip: Strip,
    params: Params,
    width: usize,
    h: Vec<f64>,
    hu: Vec<f64>,
    hv: Vec<f64>,
    z: Vec<f64>,
    h_new: Vec<f64>,
    hu_new: Vec<f64>,
    hv_new: Vec<f64>,
    /// Interior-only (`len × nx`) maps.
    max_h: Vec<f64>,
    arrival: Vec<f64>,
    // Row scratch (no allocation inside the step).
    prim_cur: PrimRow,
    prim_next: PrimRow,
    x_flux: FaceRow,
    south: FaceRow,
    north: FaceRow,
    halo_send: Vec<f64>,
    halo_recv: Vec<f64>,
    row_sums: Vec<f64>,
    scratch: Vec<f64>,
    /// Inflow cells owned by this rank, as local flat indices.
    inflow_cells: Vec<usize>,
    /// Instruction set of the row loops, detected once.
    simd: Simd,
    time: f64,
    /// max over cells of (|u| + c)/dx + (|v| + c)/dy for the current state (global).
    speed_ratio: f64,
    counters: Counters,
}

impl std::fmt::Debug for FloodSolver<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FloodSolver")
            .field("grid", &self.grid)
            .field("strip", &self.strip)
            .field("time", &self.time)
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

/// Initial conditions, `[rows, nx]` arrays starting at global row `first_row`: the whole
/// grid, or at least each rank's [`Strip::halo_rows`].
#[derive(Debug, Clone, Copy)]
pub struct InitialState<'a> {
    /// Global index of the arrays' first row (0 for whole-grid arrays).
    pub first_row: usize,
    /// Bed elevation z, m.
    pub bed: ArrayView2<'a, f64>,
    /// Depth h, m (negative values are treated as 0).
    pub depth: ArrayView2<'a, f64>,
    /// Velocity u, m s⁻¹ (optional, 0 if absent).
    pub velocity_x: Option<ArrayView2<'a, f64>>,
    /// Velocity v, m s⁻¹ (optional, 0 if absent).
    pub velocity_y: Option<ArrayView2<'a, f64>>,
}

impl<'c> FloodSolver<'c> {
    /// Builds this rank's strip from the global initial state. Collective.
    pub fn new(
        comm: &'c dyn Communicator,
        grid: Grid,
        params: Params,
        init: InitialState<'_>,
    ) -> Result<Self, SolverError> {
        let positive = |v: f64| v.is_finite() && v > 0.0;
        if grid.nx < 1 || grid.ny < 1 || !positive(grid.dx) || !positive(grid.dy) {
            return Err(SolverError::Grid(format!(
                "need nx, ny ≥ 1 and dx, dy > 0, got {}×{} cells of {}×{} m",
                grid.nx, grid.ny, grid.dx, grid.dy
            )));
        }
        if grid.ny < comm.size() {
            return Err(SolverError::Grid(format!(
                "{} rows cannot be split over {} ranks; hint: use at most {} ranks",
                grid.ny,
                comm.size(),
                grid.ny
            )));
        }
        params.validate(&grid)?;
        let strip = Strip::for_rank(grid.ny, comm.size(), comm.rank());
        let needed = strip.halo_rows(grid.ny);
        let f0 = init.first_row;
        let check = |name: &'static str, a: &ArrayView2<'_, f64>| {
            if a.ncols() == grid.nx && f0 <= needed.start && f0 + a.nrows() >= needed.end {
                Ok(())
            } else {
                let got = a.shape().to_vec();
                Err(SolverError::Shape { name, got, first_row: f0, needed: needed.clone(), nx: grid.nx })
            }
        };
        check("bed", &init.bed)?;
        check("depth", &init.depth)?;
        if let Some(u) = &init.velocity_x {
            check("velocity_x", u)?;
        }
        if let Some(v) = &init.velocity_y {
            check("velocity_y", v)?;
        }

        let width = grid.nx + 2;
        let rows = strip.len + 2;
        let n = width * rows;
        let mut s = Self {
            comm,
            grid,
            strip,
            width,
            h: vec![0.0; n],
            hu: vec![0.0; n],
            hv: vec![0.0; n],
            z: vec![0.0; n],
            h_new: vec![0.0; n],
            hu_new: vec![0.0; n],
            hv_new: vec![0.0; n],
            max_h: vec![0.0; strip.len * grid.nx],
            arrival: vec![NEVER; strip.len * grid.nx],
            prim_cur: PrimRow::new(width),
            prim_next: PrimRow::new(width),
            x_flux: FaceRow::new(width),
            south: FaceRow::new(width),
            north: FaceRow::new(width),
            halo_send: vec![0.0; 3 * width],
            halo_recv: vec![0.0; 3 * width],
            row_sums: vec![0.0; strip.len],
            scratch: vec![0.0; grid.nx],
            inflow_cells: Vec::new(),
            simd: Simd::detect(),
            time: 0.0,
            speed_ratio: 0.0,
            counters: Counters::default(),
            params,
        };

        // Bed: interior and halo rows straight from the global array (no exchange needed);
        // boundary ghosts copy the adjacent cell so the reconstruction sees a flat bed.
        for lj in 0..rows {
            let gj = (strip.start + lj).clamp(1, grid.ny) - 1 - f0;
            for i in 0..width {
                let gi = i.clamp(1, grid.nx) - 1;
                s.z[lj * width + i] = init.bed[[gj, gi]];
            }
        }
        for lj in 1..=strip.len {
            let gj = strip.start + lj - 1 - f0;
            for i in 1..=grid.nx {
                let c = lj * width + i;
                let h = init.depth[[gj, i - 1]].max(0.0);
                s.h[c] = h;
                if h > s.params.dry_depth {
                    s.hu[c] = h * init.velocity_x.map_or(0.0, |u| u[[gj, i - 1]]);
                    s.hv[c] = h * init.velocity_y.map_or(0.0, |v| v[[gj, i - 1]]);
                }
                let k = (lj - 1) * grid.nx + (i - 1);
                s.max_h[k] = h;
                if h >= s.params.arrival_depth {
                    s.arrival[k] = 0.0;
                }
            }
        }
        if let Some(inflow) = &s.params.inflow {
            let owned = strip.rows();
            let cells: Vec<(usize, usize)> = match inflow.side {
                Side::West => inflow.cells.clone().map(|j| (j, 0)).collect(),
                Side::East => inflow.cells.clone().map(|j| (j, grid.nx - 1)).collect(),
                Side::South => inflow.cells.clone().map(|i| (0, i)).collect(),
                Side::North => inflow.cells.clone().map(|i| (grid.ny - 1, i)).collect(),
            };
            s.inflow_cells = cells
                .into_iter()
                .filter(|(j, _)| owned.contains(j))
                .map(|(j, i)| (j - strip.start + 1) * width + i + 1)
                .collect();
        }
        s.speed_ratio = s.compute_speed_ratio();
        s.speed_ratio = comm.allreduce_scalar(s.speed_ratio, ReduceOp::Max);
        Ok(s)
    }

    /// Simulation time, s.
    pub fn time(&self) -> f64 {
        self.time
    }

    /// Turns a freshly built solver into a restart: the clock starts at `time` (the
    /// model time of the state, so hydrographs continue on the run's absolute time axis)
    /// and, when given, the discharges `hu`, `hv` (`[rows, nx]` from global row
    /// `first_row`, like [`InitialState`]) replace the ones built from the velocities, so
    /// a run continued from a saved state takes the same steps as one never stopped.
    /// Dry cells keep zero discharge; non-finite discharges count as zero. Collective.
    pub fn hot_start(
        &mut self,
        time: f64,
        momentum: Option<(ArrayView2<'_, f64>, ArrayView2<'_, f64>)>,
        first_row: usize,
    ) -> Result<(), SolverError> {
        if !time.is_finite() {
            return Err(SolverError::Parameter { name: "start time", reason: format!("must be finite, got {time}") });
        }
        self.time = time;
        if let Some((hu, hv)) = momentum {
            let needed = self.strip.halo_rows(self.grid.ny);
            for (name, a) in [("momentum_x", &hu), ("momentum_y", &hv)] {
                if a.ncols() != self.grid.nx || first_row > needed.start || first_row + a.nrows() < needed.end {
                    let got = a.shape().to_vec();
                    return Err(SolverError::Shape { name, got, first_row, needed: needed.clone(), nx: self.grid.nx });
                }
            }
            let finite = |v: f64| if v.is_finite() { v } else { 0.0 };
            for lj in 1..=self.strip.len {
                let gj = self.strip.start + lj - 1 - first_row;
                for i in 1..=self.grid.nx {
                    let c = lj * self.width + i;
                    let wet = self.h[c] > self.params.dry_depth;
                    self.hu[c] = if wet { finite(hu[[gj, i - 1]]) } else { 0.0 };
                    self.hv[c] = if wet { finite(hv[[gj, i - 1]]) } else { 0.0 };
                }
            }
        }
        self.speed_ratio = self.compute_speed_ratio();
        self.speed_ratio = self.comm.allreduce_scalar(self.speed_ratio, ReduceOp::Max);
        Ok(())
    }
    /// The grid.
    pub fn grid(&self) -> &Grid {
        &self.grid
    }
    /// Rows owned by this rank.
    pub fn strip(&self) -> Strip {
        self.strip
    }
    /// Diagnostics of this rank.
    pub fn counters(&self) -> Counters {
        self.counters
    }
    /// The communicator.
    pub fn comm(&self) -> &'c dyn Communicator {
        self.comm
    }

    /// The instruction set the loops run with (detected at construction).
    pub fn simd(&self) -> Simd {
        self.simd
    }

    /// Runs the loops with `simd` instead (results are bit-identical); `false`, and no
    /// change, if this CPU cannot.
    pub fn set_simd(&mut self, simd: Simd) -> bool {
        let ok = simd.is_supported();
        if ok {
            self.simd = simd;
        }
        ok
    }

    /// The time step the CFL condition allows for the current state, s.
    pub fn stable_dt(&self) -> f64 {
        if self.speed_ratio > 0.0 {
            (self.params.cfl / self.speed_ratio).min(self.params.max_dt)
        } else {
            self.params.max_dt
        }
    }

    fn compute_speed_ratio(&self) -> f64 {
        let (g, eps) = (self.params.gravity, self.params.dry_depth);
        let (rdx, rdy) = (1.0 / self.grid.dx, 1.0 / self.grid.dy);
        let mut ratio = 0.0_f64;
        for lj in 1..=self.strip.len {
            for i in 1..=self.grid.nx {
                let c = lj * self.width + i;
                let h = self.h[c];
                if h > eps {
                    let c0 = (g * h).sqrt();
                    let r = ((self.hu[c] / h).abs() + c0) * rdx + ((self.hv[c] / h).abs() + c0) * rdy;
                    ratio = ratio.max(r);
                }
            }
        }
        ratio
    }

    /// Advances to exactly `t_end` with CFL-limited steps. Collective.
    pub fn advance_to(&mut self, t_end: f64) -> Result<(), SolverError> {
        while self.time < t_end {
            let remaining = t_end - self.time;
            let dt = self.stable_dt();
            if dt < MIN_DT {
                return Err(SolverError::TimeStepCollapse { dt, time: self.time });
            }
            // Stretch the last step slightly rather than leaving a sliver step.
            let dt = if remaining <= dt * (1.0 + 1e-9) { remaining } else { dt };
            self.step(dt)?;
            if dt == remaining {
                self.time = t_end;
            }
        }
        Ok(())
    }

    /// Fills ghost rows (halo exchange or boundary) and ghost columns. Collective.
    fn fill_ghosts(&mut self) {
        let (w, len, nx) = (self.width, self.strip.len, self.grid.nx);
        let rank = self.comm.rank();
        let size = self.comm.size();
        let lower = (rank > 0).then(|| rank - 1);
        let upper = (rank + 1 < size).then_some(rank + 1);
        // Phase 1: my last interior row goes up, the lower rank's arrives in ghost row 0.
        // Phase 2: my first interior row goes down, the upper rank's arrives in row len+1.
        for (send_row, recv_row, dest, source) in [(len, 0, upper, lower), (1, len + 1, lower, upper)] {
            if dest.is_none() && source.is_none() {
                continue;
            }
            let src = send_row * w..(send_row + 1) * w;
            self.halo_send[..w].copy_from_slice(&self.h[src.clone()]);
            self.halo_send[w..2 * w].copy_from_slice(&self.hu[src.clone()]);
            self.halo_send[2 * w..].copy_from_slice(&self.hv[src]);
            self.comm.sendrecv_f64(&self.halo_send, dest, &mut self.halo_recv, source);
            if source.is_some() {
                let dst = recv_row * w..(recv_row + 1) * w;
                self.h[dst.clone()].copy_from_slice(&self.halo_recv[..w]);
                self.hu[dst.clone()].copy_from_slice(&self.halo_recv[w..2 * w]);
                self.hv[dst].copy_from_slice(&self.halo_recv[2 * w..]);
            }
        }
        let bnd = self.params.boundaries;
        if lower.is_none() {
            self.mirror_row(1, 0, bnd.south);
        }
        if upper.is_none() {
            self.mirror_row(len, len + 1, bnd.north);
        }
        let west_sign = if bnd.west == BoundaryKind::Closed { -1.0 } else { 1.0 };
        let east_sign = if bnd.east == BoundaryKind::Closed { -1.0 } else { 1.0 };
        for lj in 0..len + 2 {
            let r = lj * w;
            self.h[r] = self.h[r + 1];
            self.hu[r] = west_sign * self.hu[r + 1];
            self.hv[r] = self.hv[r + 1];
            self.h[r + nx + 1] = self.h[r + nx];
            self.hu[r + nx + 1] = east_sign * self.hu[r + nx];
            self.hv[r + nx + 1] = self.hv[r + nx];
        }
    }

    fn mirror_row(&mut self, from: usize, to: usize, kind: BoundaryKind) {
        let w = self.width;
        let sign = if kind == BoundaryKind::Closed { -1.0 } else { 1.0 };
        for i in 0..w {
            self.h[to * w + i] = self.h[from * w + i];
            self.hu[to * w + i] = self.hu[from * w + i];
            self.hv[to * w + i] = sign * self.hv[from * w + i];
        }
    }

    /// One explicit step of `dt` seconds: ghost exchange, one pass over the strip row by row
    /// (primitives, face fluxes, update with sources, friction, maxima and the next CFL
    /// bound; see `flood/kernel.rs`), inflow, and one allreduce for the next time step.
    /// Collective.
    pub fn step(&mut self, dt: f64) -> Result<(), SolverError> {
        self.fill_ghosts();
        let nx = self.grid.nx;
        let w = self.width;
        let len = self.strip.len;
        let g = self.params.gravity;
        let eps = self.params.dry_depth;
        let k = UpdateParams {
            g,
            eps,
            sx: dt / self.grid.dx,
            sy: dt / self.grid.dy,
            rdx: 1.0 / self.grid.dx,
            rdy: 1.0 / self.grid.dy,
            rain_dt: self.params.rainfall * dt,
            friction: g * self.params.manning_n * self.params.manning_n * dt,
            arrival_depth: self.params.arrival_depth,
            t_new: self.time + dt,
        };
        let mut stats = UpdateStats::default();
        let row = |lj: usize| lj * w..(lj + 1) * w;

        // Ghost row 0 and row 1: primitives and the fluxes through the south faces of row 1.
        kernel::primitives(g, eps, &self.h[0..w], &self.hu[0..w], &self.hv[0..w], &mut self.prim_cur);
        kernel::primitives(g, eps, &self.h[w..2 * w], &self.hu[w..2 * w], &self.hv[w..2 * w], &mut self.prim_next);
        kernel::y_faces(
            g,
            &self.h[0..w],
            &self.prim_cur,
            &self.z[0..w],
            &self.h[w..2 * w],
            &self.prim_next,
            &self.z[w..2 * w],
            &mut self.south,
        );
        std::mem::swap(&mut self.prim_cur, &mut self.prim_next);

        for lj in 1..=len {
            let cur = row(lj);
            let next = row(lj + 1);
            let interior = cur.start + 1..cur.start + 1 + nx;
            let maps = (lj - 1) * nx..lj * nx;
            let pass = RowPass {
                k: &k,
                h: &self.h[cur.clone()],
                z: &self.z[cur],
                h_next: &self.h[next.clone()],
                hu_next: &self.hu[next.clone()],
                hv_next: &self.hv[next.clone()],
                z_next: &self.z[next],
                prim: &self.prim_cur,
                prim_next: &mut self.prim_next,
                x_flux: &mut self.x_flux,
                south: &self.south,
                north: &mut self.north,
                update: UpdateRow {
                    h: &self.h[interior.clone()],
                    hu: &self.hu[interior.clone()],
                    hv: &self.hv[interior.clone()],
                    h_new: &mut self.h_new[interior.clone()],
                    hu_new: &mut self.hu_new[interior.clone()],
                    hv_new: &mut self.hv_new[interior],
                    max_h: &mut self.max_h[maps.clone()],
                    arrival: &mut self.arrival[maps],
                    scratch: &mut self.scratch,
                },
                stats: &mut stats,
            };
            kernel::row_pass(pass, self.simd);
            std::mem::swap(&mut self.south, &mut self.north);
            std::mem::swap(&mut self.prim_cur, &mut self.prim_next);
        }
        let area = self.grid.dx * self.grid.dy;
        let mut ratio = stats.ratio;
        self.counters.clipped_volume += stats.clipped * area;
        self.counters.source_volume += k.rain_dt * area * (len * nx) as f64;
        std::mem::swap(&mut self.h, &mut self.h_new);
        std::mem::swap(&mut self.hu, &mut self.hu_new);
        std::mem::swap(&mut self.hv, &mut self.hv_new);

        if let Some(inflow) = &self.params.inflow {
            // The exact ∫Q dt over the step, so the inflow volume does not depend on dt.
            let volume = inflow.hydrograph.volume_between(self.time, k.t_new);
            let dh = volume / (inflow.cells.len() as f64 * area);
            for &c in &self.inflow_cells {
                self.h[c] += dh;
                let hh = self.h[c];
                if hh > eps {
                    let c0 = (g * hh).sqrt();
                    let r = ((self.hu[c] / hh).abs() + c0) * k.rdx + ((self.hv[c] / hh).abs() + c0) * k.rdy;
                    ratio = ratio.max(r);
                }
            }
            self.counters.source_volume += dh * area * self.inflow_cells.len() as f64;
        }

        self.time = k.t_new;
        self.counters.steps += 1;
        self.counters.cell_updates += (len * nx) as u64;
        self.speed_ratio = self.comm.allreduce_scalar(ratio, ReduceOp::Max);
        if stats.non_finite || !self.speed_ratio.is_finite() {
            return Err(SolverError::NonFinite { time: self.time, steps: self.counters.steps });
        }
        Ok(())
    }

    /// Total water volume, m³, identical for any rank count. Collective.
    pub fn volume(&mut self) -> f64 {
        let nx = self.grid.nx;
        for lj in 1..=self.strip.len {
            let r = lj * self.width;
            self.row_sums[lj - 1] = self.h[r + 1..r + 1 + nx].iter().sum();
        }
        reproducible_sum(self.comm, &self.row_sums) * self.grid.dx * self.grid.dy
    }

    /// Value of `field` at local interior cell (local row `lj` ≥ 1, column `i` ≥ 1).
    fn value(&self, field: Field, lj: usize, i: usize) -> f64 {
        let c = lj * self.width + i;
        let k = (lj - 1) * self.grid.nx + (i - 1);
        let eps = self.params.dry_depth;
        match field {
            Field::Depth => self.h[c],
            Field::VelocityX => {
                if self.h[c] > eps {
                    self.hu[c] / self.h[c]
                } else {
                    0.0
                }
            }
            Field::VelocityY => {
                if self.h[c] > eps {
                    self.hv[c] / self.h[c]
                } else {
                    0.0
                }
            }
            Field::Bed => self.z[c],
            Field::MaxDepth => self.max_h[k],
            Field::ArrivalTime => self.arrival[k],
            Field::MomentumX => self.hu[c],
            Field::MomentumY => self.hv[c],
        }
    }

    /// This rank's part of `field`, `[len, nx]`.
    pub fn local_field(&self, field: Field) -> Array2<f64> {
        Array2::from_shape_fn((self.strip.len, self.grid.nx), |(j, i)| self.value(field, j + 1, i + 1))
    }

    /// The whole `field` `[ny, nx]` on rank 0, `None` elsewhere. Collective.
    pub fn gather(&self, field: Field) -> Option<Array2<f64>> {
        let local = self.local_field(field);
        let all = self.comm.gather_f64(local.as_slice().expect("standard layout"))?;
        Some(Array2::from_shape_vec((self.grid.ny, self.grid.nx), all).expect("gathered rows add up to the grid"))
    }

    /// Value of `field` at global cell `(j, i)` if this rank owns it.
    pub fn sample(&self, field: Field, j: usize, i: usize) -> Option<f64> {
        self.strip.rows().contains(&j).then(|| self.value(field, j - self.strip.start + 1, i + 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_cover_the_grid_in_order() {
        for size in 1..6 {
            let mut next = 0;
            for rank in 0..size {
                let s = Strip::for_rank(13, size, rank);
                assert_eq!(s.start, next);
                next += s.len;
            }
            assert_eq!(next, 13);
        }
    }

    #[test]
    fn cell_lookup_uses_centres() {
        let g = Grid { nx: 10, ny: 5, dx: 2.0, dy: 1.0, x0: 1.0, y0: 0.5 };
        assert_eq!(g.cell_at(0.0, 0.0), Some((0, 0)));
        assert_eq!(g.cell_at(19.9, 4.9), Some((4, 9)));
        assert_eq!(g.cell_at(20.1, 1.0), None);
    }
}
