//! A complete flood run: read inputs, step the solver, write snapshots, maps and gauges.

use std::path::{Path, PathBuf};

use ndarray::Array2;
use twinflow_contract::{cf, datasets};

use super::config::{ConfigIssue, FloodConfig};
use super::solver::{Field, FloodSolver, Grid, InitialState, NEVER, SolverError, Strip};
use twinflow_comm::Communicator;
use twinflow_exchange::{
    self as exchange, ArrayFile, Attr, Dataset, Dim, ExchangeError, Format, GridWriter, Provenance, Record,
    StationSeries, VarSpec, Variable, read_grid_record_rows, read_grid_rows, write_dataset,
};

/// Kernel name recorded in provenance attributes.
pub const KERNEL_NAME: &str = "twin-kernel flood";

/// Why a flood run failed.
#[derive(Debug, thiserror::Error)]
pub enum FloodError {
    /// The configuration is invalid (every issue is listed).
    #[error("invalid flood configuration:\n{}", .0.iter().map(|i| format!("  - {i}")).collect::<Vec<_>>().join("\n"))]
    Config(Vec<ConfigIssue>),
    /// An input file is unusable.
    #[error("input `{path}`: {reason}")]
    Input {
        /// File concerned.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Reading or writing an exchange file failed.
    #[error(transparent)]
    Exchange(#[from] ExchangeError),
    /// The solver failed.
    #[error(transparent)]
    Solver(#[from] SolverError),
}

impl FloodError {
    /// Whether the error is the user's input (the configuration, an input file the kernel
    /// rejects) rather than a failed run.
    pub fn is_invalid_input(&self) -> bool {
        match self {
            Self::Config(_) | Self::Input { .. } => true,
            // A DEM or state file of the wrong layout (uneven or descending coordinates,
            // dimensions larger than the machine's memory) is the user's input too.
            Self::Exchange(e) => e.is_invalid_input(),
            Self::Solver(_) => false,
        }
    }

    /// The exit code of `twin-kernel` for this error: [`INVALID_INPUT`] for the user's
    /// input, [`FAILURE`] otherwise.
    ///
    /// [`INVALID_INPUT`]: twinflow_contract::exit_code::INVALID_INPUT
    /// [`FAILURE`]: twinflow_contract::exit_code::FAILURE
    pub fn exit_code(&self) -> u8 {
        use twinflow_contract::exit_code::{FAILURE, INVALID_INPUT};
        if self.is_invalid_input() { INVALID_INPUT } else { FAILURE }
    }
}

/// Where a run reads and writes.
#[derive(Debug, Clone)]
pub struct RunPaths {
    /// DEM file (NetCDF or HDF5) with `x`, `y` and the bed elevation.
    pub dem: PathBuf,
    /// Gridded output: bed, snapshots of h, u, v, max depth, arrival time.
    pub out: PathBuf,
    /// Gauge time series (only written when gauges are configured).
    pub gauges_out: PathBuf,
    /// Directory that relative paths in the configuration are resolved against.
    pub config_dir: PathBuf,
    /// Final state for a hot start (`h`, `hu`, `hv`, the parameters and `model_time`).
    pub state_out: Option<PathBuf>,
}

impl RunPaths {
    /// Default gauge path next to the output: `result.nc` → `result_gauges.nc`.
    pub fn default_gauges_path(out: &Path) -> PathBuf {
        let stem = out.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        let ext = out.extension().map(|e| format!(".{}", e.to_string_lossy())).unwrap_or_default();
        out.with_file_name(format!("{stem}_gauges{ext}"))
    }
}

/// What a run did.
#[derive(Debug, Clone, PartialEq)]
pub struct RunSummary {
    /// Time steps taken.
    pub steps: u64,
    /// Cell updates on all ranks.
    pub cell_updates: u64,
    /// Water volume at the start and at the end, m³.
    pub volume: (f64, f64),
    /// Volume added by rain and inflow, m³ (all ranks).
    pub source_volume: f64,
    /// Wall time spent stepping on the slowest rank, s (I/O excluded).
    pub step_seconds: f64,
    /// Files written (rank 0 only; empty elsewhere).
    pub outputs: Vec<PathBuf>,
}

/// Missing values (NaN) of an initial field mean "no water, no motion".
fn nan_to_zero(a: &Array2<f64>) -> Array2<f64> {
    a.mapv(|v| if v.is_finite() { v } else { 0.0 })
}

fn spec(field: Field) -> VarSpec {
    match field {
        Field::Depth => VarSpec::new(datasets::DEPTH, "water depth", "m"),
        Field::VelocityX => VarSpec::new(datasets::VELOCITY_X, "depth-averaged water velocity along x", "m s-1"),
        Field::VelocityY => VarSpec::new(datasets::VELOCITY_Y, "depth-averaged water velocity along y", "m s-1"),
        Field::Bed => VarSpec::new(datasets::BED_ELEVATION, "bed elevation", "m").standard("surface_altitude"),
        Field::MaxDepth => VarSpec::new(datasets::MAX_DEPTH, "maximum water depth over the run", "m"),
        Field::ArrivalTime => {
            VarSpec::new(datasets::ARRIVAL_TIME, "model time at which the depth first reached the arrival depth", "s")
        }
        Field::MomentumX => VarSpec::new(datasets::MOMENTUM_X, "discharge per unit width along x (h u)", "m2 s-1"),
        Field::MomentumY => VarSpec::new(datasets::MOMENTUM_Y, "discharge per unit width along y (h v)", "m2 s-1"),
    }
}

/// Per-member parameters a state file may carry (0-d variables, or `[member]` in a
/// stacked file).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct MemberParameters {
    /// Manning roughness n.
    pub manning_n: Option<f64>,
    /// Factor on the inflow hydrograph.
    pub inflow_scale: Option<f64>,
    /// The file's `model_time` attribute, s.
    pub model_time: Option<f64>,
}

impl MemberParameters {
    /// Reads the parameters of `member` (of a stacked file; `None`: a single-member file)
    /// from `path`. Absent variables are `None`; a present one must be finite.
    pub fn read(path: &Path, member: Option<usize>) -> Result<Self, FloodError> {
        let file = ArrayFile::open(path)?;
        let bad = |reason: String| FloodError::Input { path: path.to_path_buf(), reason };
        let value = |name: &str| -> Result<Option<f64>, FloodError> {
            let Some(shape) = file.shape(name)? else { return Ok(None) };
            let values = file.read_all(name)?;
            let v = match (shape.as_slice(), member) {
                ([], _) | ([1], None) => values[0],
                ([n], Some(k)) if k < *n => values[k],
                ([n], Some(k)) => return Err(bad(format!("`{name}` has {n} members, member {k} asked for"))),
                (s, _) => return Err(bad(format!("`{name}` has shape {s:?}, expected a scalar or [member]"))),
            };
            if !v.is_finite() {
                return Err(bad(format!("`{name}` is not finite ({v})")));
            }
            Ok(Some(v))
        };
        Ok(Self {
            manning_n: value(datasets::MANNING_N)?,
            inflow_scale: value(datasets::INFLOW_SCALE)?,
            model_time: file.root_attr_f64(datasets::MODEL_TIME),
        })
    }
}

/// Writes a hot-start state: `h`, `hu`, `hv` on the grid, the member's parameters as 0-d
/// variables and the model time as the `model_time` attribute, in CF NetCDF or HDF5.
fn write_state(
    path: &Path,
    coords: &exchange::Coords,
    fields: [(Field, Array2<f64>); 3],
    config: &FloodConfig,
    time: f64,
    provenance: &Provenance,
) -> Result<PathBuf, FloodError> {
    let (ny, nx) = (coords.y.len(), coords.x.len());
    let axis = |name: &str, axis: &str, values: Vec<f64>| {
        Variable::f64(name, &[name], &format!("{name} coordinate of cell centres"), "m", values)
            .with_attr(cf::STANDARD_NAME, Attr::Str(format!("projection_{name}_coordinate")))
            .with_attr(cf::AXIS, Attr::Str(axis.into()))
    };
    let mut variables = vec![axis(datasets::X, "X", coords.x.clone()), axis(datasets::Y, "Y", coords.y.clone())];
    for (field, a) in fields {
        let s = spec(field);
        variables.push(Variable::f64(
            &s.name,
            &[datasets::Y, datasets::X],
            &s.long_name,
            &s.units,
            a.into_raw_vec_and_offset().0,
        ));
    }
    variables.push(Variable::f64(datasets::MANNING_N, &[], "Manning roughness n", "s m-1/3", vec![config.manning_n]));
    variables.push(Variable::f64(
        datasets::INFLOW_SCALE,
        &[],
        "factor on the inflow hydrograph discharge",
        "1",
        vec![config.inflow_scale],
    ));
    let mut ds = Dataset {
        dims: vec![
            Dim { name: datasets::Y.into(), len: ny, unlimited: false },
            Dim { name: datasets::X.into(), len: nx, unlimited: false },
        ],
        variables,
        attrs: provenance.to_attrs(),
    };
    ds.set_attr(cf::CONVENTIONS, Attr::Str(twinflow_contract::provenance::CONVENTIONS.into()));
    ds.set_attr(datasets::MODEL_TIME, Attr::F64(vec![time]));
    Ok(write_dataset(path, &ds, &config.compression)?)
}

/// Runs a flood simulation. Collective: every rank calls it with the same arguments; rank
/// 0 writes the outputs.
pub fn run_flood(
    comm: &dyn Communicator,
    paths: &RunPaths,
    config: &FloodConfig,
    command_line: &str,
) -> Result<RunSummary, FloodError> {
    let is_root = comm.rank() == 0;
    // Each rank reads only its strip and halo rows of the inputs.
    let strip_rows = |ny: usize| Strip::for_rank(ny, comm.size(), comm.rank()).halo_rows(ny);
    let dem = read_grid_rows(&paths.dem, &[config.dem_variable.as_str()], &[], strip_rows)?;
    let first_row = dem.first_row;
    let bed = dem.fields[&config.dem_variable].clone();
    if let Some(((j, i), _)) = bed.indexed_iter().find(|(_, z)| !z.is_finite()) {
        return Err(FloodError::Input {
            path: paths.dem.clone(),
            reason: format!(
                "`{}` has a missing or non-finite value at row {}, column {i}; hint: fill holes in the DEM first",
                config.dem_variable,
                first_row + j
            ),
        });
    }
    let coords = dem.coords;
    let spacing = |v: &[f64]| if v.len() > 1 { (v[v.len() - 1] - v[0]) / (v.len() - 1) as f64 } else { 1.0 };
    let (dx, dy) = (spacing(&coords.x), spacing(&coords.y));
    // A single row or column has no spacing of its own: use the other axis'.
    let (dx, dy) = match (coords.x.len(), coords.y.len()) {
        (1, _) => (dy, dy),
        (_, 1) => (dx, dx),
        _ => (dx, dy),
    };
    let grid = Grid { nx: coords.x.len(), ny: coords.y.len(), dx, dy, x0: coords.x[0], y0: coords.y[0] };
    let initial_path = config.initial.file.as_ref().map(|f| paths.config_dir.join(f));
    // A hot start continues at the state's model time unless the configuration says.
    let file_time = match &initial_path {
        Some(path) if config.start_time.is_none() => ArrayFile::open(path)?.root_attr_f64(datasets::MODEL_TIME),
        _ => None,
    };
    let start = config.start_time.or(file_time).unwrap_or(0.0);
    let plan = config.validate_from(&grid, start).map_err(FloodError::Config)?;

    // Initial state.
    let mut depth = Array2::<f64>::zeros(bed.dim());
    let mut velocity = (None, None);
    let mut momentum = None;
    if let Some(path) = initial_path {
        let record = config.initial.member.map_or(Record::Last, Record::Index);
        let optional = [datasets::VELOCITY_X, datasets::VELOCITY_Y, datasets::MOMENTUM_X, datasets::MOMENTUM_Y];
        let mut init = read_grid_record_rows(&path, &[datasets::DEPTH], &optional, record, strip_rows)?;
        if init.coords.x.len() != grid.nx || init.coords.y.len() != grid.ny {
            return Err(FloodError::Input {
                path,
                reason: format!(
                    "grid is {}×{}, the DEM's is {}×{}",
                    init.coords.x.len(),
                    init.coords.y.len(),
                    grid.nx,
                    grid.ny
                ),
            });
        }
        // NaN (a fill value) means no water and no motion; an infinity is not data.
        for (name, field) in &init.fields {
            if let Some(((j, i), v)) = field.indexed_iter().find(|(_, v)| v.is_infinite()) {
                return Err(FloodError::Input {
                    path,
                    reason: format!(
                        "`{name}` is {v} at row {}, column {i}; hint: missing values (NaN or the fill value) mean no water, infinities are not allowed",
                        init.first_row + j
                    ),
                });
            }
        }
        depth = nan_to_zero(&init.fields[datasets::DEPTH]);
        velocity = (
            init.fields.get(datasets::VELOCITY_X).map(nan_to_zero),
            init.fields.get(datasets::VELOCITY_Y).map(nan_to_zero),
        );
        // Discharges (a saved state) take precedence over velocities: the restart is exact.
        if let (Some(hu), Some(hv)) =
            (init.fields.remove(datasets::MOMENTUM_X), init.fields.remove(datasets::MOMENTUM_Y))
        {
            momentum = Some((hu, hv));
        }
    }
    if let Some(level) = config.initial.water_level {
        ndarray::Zip::from(&mut depth).and(&bed).for_each(|h, &z| {
            if *h <= 0.0 {
                *h = (level - z).max(0.0);
            }
        });
    }

    let init = InitialState {
        first_row,
        bed: bed.view(),
        depth: depth.view(),
        velocity_x: velocity.0.as_ref().map(|a| a.view()),
        velocity_y: velocity.1.as_ref().map(|a| a.view()),
    };
    let mut solver = FloodSolver::new(comm, grid, plan.params.clone(), init)?;
    solver.hot_start(plan.start_time, momentum.as_ref().map(|(hu, hv)| (hu.view(), hv.view())), first_row)?;
    drop((bed, depth, velocity, momentum));
    if is_root {
        tracing::info!(
            nx = grid.nx,
            ny = grid.ny,
            dx = grid.dx,
            dy = grid.dy,
            ranks = comm.size(),
            start_time = plan.start_time,
            end_time = plan.end_time,
            snapshots = plan.snapshot_times.len(),
            gauges = plan.gauges.len(),
            "flood run starting"
        );
    }
    tracing::debug!(rank = comm.rank(), rows = ?solver.strip().rows(), "strip");

    let format = config.format.unwrap_or_else(|| Format::from_path(&paths.out));
    let parameters = serde_json::to_string(config).expect("the configuration serializes");
    let provenance = Provenance {
        mpi_ranks: Some(comm.size()),
        ..Provenance::from_env("twinflow flood simulation", KERNEL_NAME, parameters, command_line)
    };
    let mut writer: Option<Box<dyn GridWriter>> = if is_root {
        let mut w = exchange::create_grid_writer(&paths.out, format, &coords, &provenance, &config.compression)?;
        let z = solver.gather(Field::Bed).expect("rank 0 gathers");
        w.write_static(&spec(Field::Bed), z.view())?;
        Some(w)
    } else {
        let _ = solver.gather(Field::Bed);
        None
    };

    let volume0 = solver.volume();
    // Gauge samples: [gauge][variable][time], filled by the owning rank, zero elsewhere,
    // summed across ranks at the end (exact: one non-zero term per entry).
    let n_times = plan.gauge_times.len();
    let gauge_fields = [Field::Depth, Field::VelocityX, Field::VelocityY];
    let mut gauge_values = vec![0.0; plan.gauges.len() * 4 * n_times];
    let (mut next_snap, mut next_gauge) = (0, 0);
    // Wall time spent stepping (halo exchange and reductions included, I/O excluded).
    let mut step_seconds = 0.0;
    loop {
        let t = solver.time();
        while next_gauge < n_times && plan.gauge_times[next_gauge] <= t {
            for (g, (_, (j, i))) in plan.gauges.iter().enumerate() {
                let base = g * 4 * n_times + next_gauge;
                if let Some(h) = solver.sample(Field::Depth, *j, *i) {
                    let z = solver.sample(Field::Bed, *j, *i).expect("same rank");
                    gauge_values[base] = h;
                    for (k, f) in gauge_fields.iter().enumerate().skip(1) {
                        gauge_values[base + k * n_times] = solver.sample(*f, *j, *i).expect("same rank");
                    }
                    gauge_values[base + 3 * n_times] = h + z;
                }
            }
            next_gauge += 1;
        }
        while next_snap < plan.snapshot_times.len() && plan.snapshot_times[next_snap] <= t {
            let fields: Vec<_> = gauge_fields.iter().map(|&f| (spec(f), solver.gather(f))).collect();
            if let Some(w) = writer.as_mut() {
                let views: Vec<_> =
                    fields.iter().map(|(s, a)| (s, a.as_ref().expect("rank 0 gathers").view())).collect();
                w.write_snapshot(t, &views)?;
                let c = solver.counters();
                tracing::info!(time = t, steps = c.steps, "snapshot written");
            }
            next_snap += 1;
        }
        if t >= plan.end_time {
            break;
        }
        let next_event = [plan.snapshot_times.get(next_snap), plan.gauge_times.get(next_gauge)]
            .into_iter()
            .flatten()
            .fold(plan.end_time, |a, &b| a.min(b));
        let t0 = std::time::Instant::now();
        solver.advance_to(next_event)?;
        step_seconds += t0.elapsed().as_secs_f64();
    }

    // Maps: arrival time "never" becomes the fill value.
    let max_depth = solver.gather(Field::MaxDepth);
    let arrival = solver.gather(Field::ArrivalTime).map(|a| a.mapv(|t| if t == NEVER { cf::FILL_F64 } else { t }));
    let volume1 = solver.volume();
    let state = paths
        .state_out
        .as_ref()
        .map(|_| [Field::Depth, Field::MomentumX, Field::MomentumY].map(|f| (f, solver.gather(f))));
    let counters = solver.counters();
    let mut totals = [counters.source_volume, counters.clipped_volume];
    comm.allreduce_f64(&mut totals, twinflow_comm::ReduceOp::Sum);
    let mut updates = [counters.cell_updates];
    comm.allreduce_sum_u64(&mut updates);
    let step_seconds = comm.allreduce_scalar(step_seconds, twinflow_comm::ReduceOp::Max);
    comm.allreduce_f64(&mut gauge_values, twinflow_comm::ReduceOp::Sum);

    let mut outputs = Vec::new();
    if let Some(mut w) = writer.take() {
        w.write_static(&spec(Field::MaxDepth), max_depth.expect("rank 0 gathers").view())?;
        w.write_static(&spec(Field::ArrivalTime), arrival.expect("rank 0 gathers").view())?;
        outputs.push(w.finish()?);
        if !plan.gauges.is_empty() {
            let n = plan.gauges.len();
            let var = |k: usize| -> Vec<f64> {
                (0..n).flat_map(|g| gauge_values[(g * 4 + k) * n_times..(g * 4 + k + 1) * n_times].to_vec()).collect()
            };
            let series = StationSeries {
                names: plan.gauges.iter().map(|(g, _)| g.name.clone()).collect(),
                x: plan.gauges.iter().map(|(g, _)| g.x).collect(),
                y: plan.gauges.iter().map(|(g, _)| g.y).collect(),
                time: plan.gauge_times.clone(),
                variables: vec![
                    (spec(Field::Depth), var(0)),
                    (spec(Field::VelocityX), var(1)),
                    (spec(Field::VelocityY), var(2)),
                    (VarSpec::new(datasets::WATER_LEVEL, "water surface elevation (bed + depth)", "m"), var(3)),
                ],
            };
            outputs.push(exchange::write_stations(&paths.gauges_out, format, &series, &provenance)?);
        }
        if let (Some(path), Some(state)) = (&paths.state_out, state) {
            let fields = state.map(|(f, a)| (f, a.expect("rank 0 gathers")));
            outputs.push(write_state(path, &coords, fields, config, plan.end_time, &provenance)?);
        }
        let balance = volume1 - volume0 - totals[0];
        tracing::info!(
            step_seconds,
            cell_updates = updates[0],
            updates_per_second = updates[0] as f64 / step_seconds.max(1e-12),
            "stepping throughput"
        );
        tracing::info!(
            steps = counters.steps,
            volume_start = volume0,
            volume_end = volume1,
            sources = totals[0],
            imbalance = balance,
            clipped = totals[1],
            "flood run finished (imbalance = outflow through open boundaries + round-off)"
        );
    }
    // Nobody leaves before rank 0 has renamed the outputs into place.
    comm.barrier();
    Ok(RunSummary {
        steps: counters.steps,
        cell_updates: updates[0],
        volume: (volume0, volume1),
        source_volume: totals[0],
        step_seconds,
        outputs,
    })
}
