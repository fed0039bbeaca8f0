//! `twin-kernel assimilate` and `twin-kernel lorenz96`: clap arguments and runners around
//! `twinflow-assim`.

use std::io::Write as _;
use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};
use twinflow_assim::files::{
    self, DiagnosticsInfo, EnsembleFiles, MODEL_TIME_ATTR, MemberFiles, ObservationQuery, Operator, StateSelection,
};
use twinflow_assim::{
    AnalysisConfig, AssimError, Constraint, Geometry, LetkfPlan, Lorenz96, Method, TwinConfig, analyse,
    half_width_from_dapper_radius, run_twin,
};
use twinflow_comm::{Communicator, ReduceOp};
use twinflow_contract::datasets;
use twinflow_exchange::{Attr, Provenance};

use super::KernelError;

/// Help text after the options of `twin-kernel assimilate`.
pub const ASSIMILATE_HELP: &str = "\
Examples:
  twin-kernel assimilate --members m0.nc m1.nc m2.nc --variables h --parameters manning_n \\
      --obs gauges.nc --obs-variable h --operator bilinear --observed-variable h \\
      --method letkf --radius 500 --non-negative h --out analysis/ --diagnostics diag.nc
  twin-kernel assimilate --members ens.nc --variables state --obs obs.nc --operator identity \\
      --method enkf --inflation 1.06 --seed 1 --cycle 7 --out ens_a.nc --truth truth.nc
  mpiexec -n 4 twin-kernel assimilate ... --method letkf   # local analyses split over ranks

Members: one file per member (analyses written into --out as a directory, same names) or one
file with a `member` dimension (analysis written to --out). Observations: CF timeSeries
NetCDF (`value[station, time]`, `error_std`, station `x`, `y`, `state_index`) or CSV
(`station,time,x,y,value,error_std,state_index`). Observations outside the domain are
skipped and counted; missing values (_FillValue, empty CSV cells) are skipped.
Results are identical for any number of MPI ranks.";

/// Analysis method (command-line spelling).
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum MethodArg {
    /// Stochastic EnKF with perturbed observations.
    Enkf,
    /// Global ETKF (symmetric square root).
    Etkf,
    /// Local ETKF with Gaspari–Cohn tapering (`--radius`).
    Letkf,
}

/// Observation operator (command-line spelling).
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum OperatorArg {
    /// Observation i sees state element `state_index`.
    Identity,
    /// Bilinear interpolation of a `[y, x]` field at the station coordinates.
    Bilinear,
}

/// Arguments of `twin-kernel assimilate`.
#[derive(Debug, Args)]
#[command(allow_negative_numbers = true)]
pub struct AssimilateArgs {
    /// Forecast members: one file each, or one file with a `member` dimension.
    #[arg(long, num_args = 1.., required = true, value_name = "FILE")]
    pub members: Vec<PathBuf>,
    /// Gridded variables to update (comma-separated or repeated).
    #[arg(long, value_delimiter = ',', value_name = "NAME")]
    pub variables: Vec<String>,
    /// Per-member parameters to update (scalars, estimated jointly with the state).
    #[arg(long, value_delimiter = ',', value_name = "NAME")]
    pub parameters: Vec<String>,
    /// Observation file (CF timeSeries NetCDF/HDF5, or `.csv`).
    #[arg(long, value_name = "FILE")]
    pub obs: PathBuf,
    /// Observed-value variable of a NetCDF/HDF5 observation file.
    #[arg(long, default_value = datasets::OBS_VALUE, value_name = "NAME")]
    pub obs_variable: String,
    /// Error standard deviation for observations without one.
    #[arg(long, value_name = "SIGMA")]
    pub obs_error_std: Option<f64>,
    /// Analysis time (default: the members' `model_time` attribute, else the only time).
    #[arg(long, value_name = "T")]
    pub time: Option<f64>,
    /// Observation operator.
    #[arg(long, value_enum, default_value = "identity")]
    pub operator: OperatorArg,
    /// The observed variable (bilinear: required; identity: indices within it).
    #[arg(long, value_name = "NAME")]
    pub observed_variable: Option<String>,
    /// Analysis method.
    #[arg(long, value_enum, default_value = "letkf")]
    pub method: MethodArg,
    /// Multiplicative inflation of the analysis anomalies.
    #[arg(long, default_value_t = 1.0, value_name = "LAMBDA")]
    pub inflation: f64,
    /// Relaxation to prior spread α in [0, 1].
    #[arg(long, default_value_t = 0.0, value_name = "ALPHA")]
    pub rtps: f64,
    /// LETKF Gaspari–Cohn half-width c (location units; observations beyond 2c ignored).
    #[arg(long, value_name = "C", conflicts_with = "dapper_radius")]
    pub radius: Option<f64>,
    /// LETKF localization radius L in DAPPER's convention (c = 1.82 L).
    #[arg(long, value_name = "L")]
    pub dapper_radius: Option<f64>,
    /// Period of the x axis (cyclic domains such as Lorenz-96's ring).
    #[arg(long, value_name = "P")]
    pub periodic_x: Option<f64>,
    /// Period of the y axis.
    #[arg(long, value_name = "P")]
    pub periodic_y: Option<f64>,
    /// Seed of the perturbed observations (EnKF).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Cycle number (keys the perturbed observations with the seed).
    #[arg(long, default_value_t = 0)]
    pub cycle: u32,
    /// Clip a variable to bounds after the update: `NAME:LOWER:UPPER` (empty bound = none).
    #[arg(long, value_name = "NAME:LO:HI")]
    pub clip: Vec<String>,
    /// Keep a variable non-negative after the update (water depth).
    #[arg(long, value_name = "NAME")]
    pub non_negative: Vec<String>,
    /// Zero variables where another is below a threshold: `TARGET:CONDITION:THRESHOLD`
    /// (momentum where the depth is dry).
    #[arg(long, value_name = "TARGET:COND:MIN")]
    pub zero_where_below: Vec<String>,
    /// Analysis output: a directory for per-member files, a file for a `member` file.
    #[arg(long, value_name = "PATH")]
    pub out: PathBuf,
    /// Diagnostics file (innovations, spreads, RMSE).
    #[arg(long, value_name = "FILE")]
    pub diagnostics: Option<PathBuf>,
    /// Truth file for twin experiments (same variables, optionally with a `time` axis).
    #[arg(long, value_name = "FILE")]
    pub truth: Option<PathBuf>,
}

fn bad(reason: String) -> KernelError {
    KernelError::Assim(AssimError::Config(reason))
}

fn range_of(ens: &EnsembleFiles, name: &str) -> Result<std::ops::Range<usize>, KernelError> {
    let b = ens.block(name).ok_or_else(|| bad(format!("`{name}` is not among `--variables`/`--parameters`")))?;
    Ok(b.offset..b.offset + b.len)
}

fn constraints(args: &AssimilateArgs, ens: &EnsembleFiles) -> Result<Vec<Constraint>, KernelError> {
    let mut out = Vec::new();
    for name in &args.non_negative {
        out.push(Constraint::Clip { range: range_of(ens, name)?, lower: 0.0, upper: f64::INFINITY });
    }
    for spec in &args.clip {
        let parts: Vec<&str> = spec.split(':').collect();
        let bound = |s: &str, default: f64| -> Result<f64, KernelError> {
            if s.is_empty() {
                Ok(default)
            } else {
                s.parse().map_err(|_| bad(format!("`--clip {spec}`: `{s}` is not a number")))
            }
        };
        let [name, lo, hi] = parts[..] else {
            return Err(bad(format!("`--clip {spec}` is not `NAME:LOWER:UPPER`")));
        };
        let (lower, upper) = (bound(lo, f64::NEG_INFINITY)?, bound(hi, f64::INFINITY)?);
        if lower > upper {
            return Err(bad(format!("`--clip {spec}`: the lower bound exceeds the upper")));
        }
        out.push(Constraint::Clip { range: range_of(ens, name)?, lower, upper });
    }
    for spec in &args.zero_where_below {
        let parts: Vec<&str> = spec.split(':').collect();
        let [target, condition, threshold] = parts[..] else {
            return Err(bad(format!("`--zero-where-below {spec}` is not `TARGET:CONDITION:THRESHOLD`")));
        };
        let threshold = threshold.parse().map_err(|_| bad(format!("`--zero-where-below {spec}`: bad threshold")))?;
        let (target, condition) = (range_of(ens, target)?, range_of(ens, condition)?);
        if target.len() != condition.len() {
            return Err(bad(format!("`--zero-where-below {spec}`: the two variables differ in size")));
        }
        out.push(Constraint::ZeroWhereBelow { target, condition, threshold });
    }
    Ok(out)
}

/// Runs `twin-kernel assimilate`: every rank reads, analyses (LETKF domains split over
/// ranks), rank 0 writes.
pub(super) fn run_assimilate(
    comm: &dyn Communicator,
    args: AssimilateArgs,
    command_line: &str,
) -> Result<(), KernelError> {
    let source = MemberFiles::detect(&args.members).map_err(KernelError::Assim)?;
    let selection = StateSelection { variables: args.variables.clone(), parameters: args.parameters.clone() };
    let ens = EnsembleFiles::read(source, &selection)?;
    let time = args.time.or_else(|| ens.number_attr(MODEL_TIME_ATTR));
    let query = ObservationQuery { variable: args.obs_variable.clone(), time, default_error_std: args.obs_error_std };
    let raw = files::read_observations(&args.obs, &query)?;
    let operator = match args.operator {
        OperatorArg::Identity => Operator::Identity { variable: args.observed_variable.clone() },
        OperatorArg::Bilinear => Operator::Bilinear {
            variable: args
                .observed_variable
                .clone()
                .ok_or_else(|| bad("`--operator bilinear` needs `--observed-variable`".into()))?,
        },
    };
    let (obs, outside) = files::build_observations(&args.obs, &raw.observations, &operator, &ens)?;
    if outside > 0 {
        tracing::warn!(outside, used = obs.len(), "observations outside the domain skipped");
    }
    let method = match args.method {
        MethodArg::Enkf => Method::EnKF,
        MethodArg::Etkf => Method::Etkf,
        MethodArg::Letkf => {
            let half_width = match (args.radius, args.dapper_radius) {
                (Some(c), _) => c,
                (None, Some(l)) => half_width_from_dapper_radius(l),
                (None, None) => return Err(bad("`--method letkf` needs `--radius` or `--dapper-radius`".into())),
            };
            Method::Letkf { half_width }
        }
    };
    let config = AnalysisConfig {
        method,
        inflation: args.inflation,
        rtps: args.rtps,
        seed: args.seed,
        cycle: args.cycle,
        geometry: Geometry { period: [args.periodic_x, args.periodic_y] },
        location: ens.location.clone(),
        constraints: constraints(&args, &ens)?,
    };
    let truth = args.truth.as_ref().map(|p| ens.read_truth(p, time)).transpose()?;
    let mut analysis = ens.ensemble.clone();
    // Throughput for `bench/assim-scaling.sh`: local analyses are the LETKF's domains (one
    // per grid cell, one for the parameters), a global method does one. The ranks start
    // together (else a rank still reading its files would be charged to the others, which
    // wait for it in the gather); the time is the slowest rank's, taken before `?` so that
    // every rank reaches the reduction.
    let local_analyses = match method {
        Method::Letkf { .. } => LetkfPlan::new(&config.location).domains.len(),
        Method::EnKF | Method::Etkf => 1,
    };
    comm.barrier();
    let started = std::time::Instant::now();
    let report = analyse(&config, &mut analysis, &obs, comm);
    let analysis_seconds = comm.allreduce_scalar(started.elapsed().as_secs_f64(), ReduceOp::Max);
    let report = report?;
    tracing::info!(
        local_analyses,
        analysis_seconds,
        local_analyses_per_second = local_analyses as f64 / analysis_seconds.max(1e-12),
        "analysis throughput"
    );
    let truth_rmse = truth.map(|t| {
        (twinflow_assim::twin::mean_error(&ens.ensemble, &t), twinflow_assim::twin::mean_error(&analysis, &t))
    });
    tracing::info!(
        members = ens.members(),
        state = analysis.nrows(),
        observations = obs.len(),
        outside,
        missing = raw.missing,
        rmse_obs_forecast = report.rmse_obs_forecast(),
        rmse_obs_analysis = report.rmse_obs_analysis(),
        "analysis done"
    );
    if comm.rank() != 0 {
        return Ok(());
    }
    let attrs = vec![(twinflow_contract::provenance::MPI_RANKS_ATTR.to_string(), Attr::I32(vec![comm.size() as i32]))];
    for p in ens.write(&analysis, &args.out, &attrs, command_line)? {
        tracing::info!(path = %super::shown(&p), "wrote");
    }
    if let Some(path) = &args.diagnostics {
        let info = DiagnosticsInfo {
            time,
            method: format!("{:?}", args.method).to_lowercase(),
            outside,
            missing: raw.missing,
            truth_rmse,
        };
        let parameters = serde_json::json!({
            "method": info.method, "inflation": args.inflation, "rtps": args.rtps,
            "seed": args.seed, "cycle": args.cycle, "radius": args.radius, "dapper_radius": args.dapper_radius,
        })
        .to_string();
        let prov = Provenance {
            mpi_ranks: Some(comm.size()),
            ..Provenance::from_env(
                "twinflow assimilation diagnostics",
                "twin-kernel assimilate",
                parameters,
                command_line,
            )
        };
        let p = files::write_diagnostics(path, &report, &obs, &info, &prov)?;
        tracing::info!(path = %super::shown(&p), "wrote");
    }
    Ok(())
}

/// Help text after the options of `twin-kernel lorenz96`.
pub const LORENZ96_HELP: &str = "\
Examples (the Sakov & Oke 2008 twin: 40 variables, F = 8, dt = 0.05, R = I):
  twin-kernel lorenz96 truth --cycles 20 --members 40 --seed 1 \\
      --truth-out truth.nc --obs-out obs.nc --ensemble-out ens.nc
  twin-kernel lorenz96 advance ens.nc --out ens_f.nc --steps 1
  twin-kernel lorenz96 twin --method enkf --members 40 --inflation 1.06 --cycles 10400
  twin-kernel lorenz96 twin --method letkf --members 7 --inflation 1.04 --dapper-radius 4

State files: `state[site]` or `state[member, site]` with the model time in the global
attribute `model_time`; the truth is `state[time, site]`; observations a CF timeSeries file
(one station per site, `value[station, time]`, `error_std`, `state_index`).";

/// `twin-kernel lorenz96 ...`.
#[derive(Debug, Subcommand)]
pub enum Lorenz96Command {
    /// Advance the member(s) of a state file by a number of RK4 steps.
    Advance(AdvanceArgs),
    /// Generate a truth trajectory, its observations and an initial ensemble.
    Truth(TruthArgs),
    /// Run a whole twin experiment in process and report the time-mean RMSE.
    Twin(TwinArgs),
}

/// The model settings shared by the subcommands.
#[derive(Debug, Args, Clone, Copy)]
pub struct ModelArgs {
    /// Forcing F.
    #[arg(long, default_value_t = 8.0)]
    pub forcing: f64,
    /// RK4 time step.
    #[arg(long, default_value_t = 0.05)]
    pub dt: f64,
}

/// Arguments of `lorenz96 advance`.
#[derive(Debug, Args)]
pub struct AdvanceArgs {
    /// State file (`state[site]` or `state[member, site]`), or one file per member.
    #[arg(required = true)]
    pub input: Vec<PathBuf>,
    /// Output: a file for one input, a directory for several.
    #[arg(long)]
    pub out: PathBuf,
    /// RK4 steps.
    #[arg(long, default_value_t = 1)]
    pub steps: usize,
    #[command(flatten)]
    pub model: ModelArgs,
}

/// Arguments of `lorenz96 truth`.
#[derive(Debug, Args)]
pub struct TruthArgs {
    /// Observation times after the initial state.
    #[arg(long)]
    pub cycles: u32,
    /// Truth trajectory `state[time, site]`.
    #[arg(long)]
    pub truth_out: PathBuf,
    /// Observations (CF timeSeries).
    #[arg(long)]
    pub obs_out: PathBuf,
    /// Initial ensemble `state[member, site]` (with `--members`).
    #[arg(long)]
    pub ensemble_out: Option<PathBuf>,
    /// Ensemble size.
    #[arg(long, default_value_t = 40)]
    pub members: usize,
    /// Number of variables.
    #[arg(long, default_value_t = 40)]
    pub size: usize,
    /// RK4 steps between observations.
    #[arg(long, default_value_t = 1)]
    pub steps_per_cycle: usize,
    /// Truth spin-up steps.
    #[arg(long, default_value_t = 1000)]
    pub spin_up: usize,
    /// Observation error standard deviation.
    #[arg(long, default_value_t = 1.0)]
    pub obs_std: f64,
    /// Seed of every draw.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[command(flatten)]
    pub model: ModelArgs,
}

/// Arguments of `lorenz96 twin`.
#[derive(Debug, Args)]
pub struct TwinArgs {
    /// Analysis method, or `none` for a free ensemble.
    #[arg(long, default_value = "enkf")]
    pub method: String,
    /// Ensemble size.
    #[arg(long, default_value_t = 40)]
    pub members: usize,
    /// Multiplicative inflation.
    #[arg(long, default_value_t = 1.0)]
    pub inflation: f64,
    /// RTPS α.
    #[arg(long, default_value_t = 0.0)]
    pub rtps: f64,
    /// LETKF localization radius (DAPPER's convention, c = 1.82 L).
    #[arg(long, default_value_t = 4.0)]
    pub dapper_radius: f64,
    /// Cycles (one observation time each).
    #[arg(long, default_value_t = 10_400)]
    pub cycles: u32,
    /// Cycles discarded before scoring.
    #[arg(long, default_value_t = 400)]
    pub burn_in: u32,
    /// Seed of every draw.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Also write the per-cycle analysis RMSE (`rmse_analysis[cycle]`).
    #[arg(long)]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub model: ModelArgs,
}

fn model(m: ModelArgs) -> Result<Lorenz96, KernelError> {
    if !(m.dt.is_finite() && m.dt > 0.0 && m.forcing.is_finite()) {
        return Err(bad("`--dt` must be positive and `--forcing` finite".into()));
    }
    Ok(Lorenz96 { forcing: m.forcing, dt: m.dt })
}

/// Runs `twin-kernel lorenz96 ...` (rank 0 only: the model is serial).
pub(super) fn run_lorenz96(command: Lorenz96Command, command_line: &str) -> Result<(), KernelError> {
    match command {
        Lorenz96Command::Advance(a) => {
            let m = model(a.model)?;
            let source = MemberFiles::detect(&a.input)?;
            let selection = StateSelection { variables: vec![datasets::LORENZ96_STATE.into()], parameters: vec![] };
            let single = matches!(source, MemberFiles::PerMember(ref p) if p.len() == 1);
            let ens = if single { None } else { Some(EnsembleFiles::read(source.clone(), &selection)?) };
            let t0 = |e: &EnsembleFiles| e.number_attr(MODEL_TIME_ATTR).unwrap_or(0.0);
            let t1 = |t: f64| t + a.steps as f64 * m.dt;
            match ens {
                Some(e) => {
                    let mut x = e.ensemble.clone();
                    for mut col in x.column_iter_mut() {
                        m.advance(col.as_mut_slice(), a.steps);
                    }
                    let attrs = vec![(MODEL_TIME_ATTR.to_string(), Attr::F64(vec![t1(t0(&e))]))];
                    for p in e.write(&x, &a.out, &attrs, command_line)? {
                        tracing::info!(path = %super::shown(&p), "wrote");
                    }
                }
                None => {
                    // One state: the ensemble reader needs two members, so read it as a
                    // pair of the same file and write the first.
                    let p = a.input[0].clone();
                    let e = EnsembleFiles::read(MemberFiles::PerMember(vec![p.clone(), p]), &selection)?;
                    let mut x: Vec<f64> = e.ensemble.column(0).iter().copied().collect();
                    m.advance(&mut x, a.steps);
                    let prov =
                        Provenance::from_env("Lorenz-96 state", "twin-kernel lorenz96", String::new(), command_line);
                    let out = files::write_lorenz96(&a.out, &[x], None, None, t1(t0(&e)), &prov)?;
                    tracing::info!(path = %super::shown(&out), "wrote");
                }
            }
        }
        Lorenz96Command::Truth(a) => {
            let m = model(a.model)?;
            if a.size < 4 || a.members < 2 || !(a.obs_std > 0.0 && a.obs_std.is_finite()) {
                return Err(bad("need `--size` ≥ 4, `--members` ≥ 2 and `--obs-std` > 0".into()));
            }
            let cfg = TwinConfig {
                model: m,
                size: a.size,
                members: a.members,
                cycles: a.cycles,
                burn_in: 0,
                steps_per_cycle: a.steps_per_cycle,
                spin_up_steps: a.spin_up,
                obs_std: a.obs_std,
                seed: a.seed,
                method: None,
                inflation: 1.0,
                rtps: 0.0,
            };
            let parameters = serde_json::json!({
                "seed": a.seed, "cycles": a.cycles, "obs_std": a.obs_std, "members": a.members,
                "steps_per_cycle": a.steps_per_cycle, "forcing": m.forcing, "dt": m.dt,
            })
            .to_string();
            let prov =
                Provenance::from_env("Lorenz-96 twin experiment", "twin-kernel lorenz96", parameters, command_line);
            let mut truth = cfg.initial_truth();
            let ensemble = cfg.initial_ensemble(&truth);
            let dt_cycle = a.steps_per_cycle as f64 * m.dt;
            let mut states = vec![truth.clone()];
            let mut values = vec![0.0; a.size * a.cycles as usize];
            for cycle in 1..=a.cycles {
                m.advance(&mut truth, a.steps_per_cycle);
                let obs = cfg.observe(&truth, cycle);
                for (s, v) in obs.value.iter().enumerate() {
                    values[s * a.cycles as usize + (cycle as usize - 1)] = *v;
                }
                states.push(truth.clone());
            }
            let times: Vec<f64> = (0..=a.cycles).map(|c| f64::from(c) * dt_cycle).collect();
            files::write_lorenz96(&a.truth_out, &states, Some(datasets::TIME), Some(&times), 0.0, &prov)?;
            let names: Vec<String> = (0..a.size).map(|i| format!("site{i:02}")).collect();
            let x: Vec<f64> = (0..a.size).map(|i| i as f64).collect();
            let idx: Vec<usize> = (0..a.size).collect();
            let std = vec![a.obs_std; values.len()];
            files::write_observations(
                &a.obs_out,
                &names,
                &x,
                &vec![0.0; a.size],
                &idx,
                &times[1..],
                &values,
                &std,
                &prov,
            )?;
            if let Some(path) = &a.ensemble_out {
                let members: Vec<Vec<f64>> = ensemble.column_iter().map(|c| c.iter().copied().collect()).collect();
                files::write_lorenz96(path, &members, Some(datasets::MEMBER), None, 0.0, &prov)?;
            }
            tracing::info!(cycles = a.cycles, "wrote truth, observations and ensemble");
        }
        Lorenz96Command::Twin(a) => {
            let m = model(a.model)?;
            let method = match a.method.as_str() {
                "none" | "free" => None,
                "enkf" => Some(Method::EnKF),
                "etkf" => Some(Method::Etkf),
                "letkf" => Some(Method::Letkf { half_width: half_width_from_dapper_radius(a.dapper_radius) }),
                other => return Err(bad(format!("unknown `--method {other}`; hint: enkf, etkf, letkf or none"))),
            };
            let mut cfg = TwinConfig::sakov_oke(method, a.members, a.inflation, a.cycles, a.seed);
            cfg.model = m;
            cfg.burn_in = a.burn_in;
            cfg.rtps = a.rtps;
            let s = run_twin(&cfg, &twinflow_comm::SingleProcess)?;
            let clim = twinflow_assim::climatology_rmse(&cfg);
            let scores = serde_json::json!({
                "method": a.method, "members": a.members, "inflation": a.inflation, "rtps": a.rtps,
                "dapper_radius": a.dapper_radius, "cycles": a.cycles, "burn_in": a.burn_in, "seed": a.seed,
                "scored": s.scored, "rmse_analysis": s.rmse_analysis, "rmse_forecast": s.rmse_forecast,
                "spread_analysis": s.spread_analysis, "rmse_climatology": clim,
            });
            let line = scores.to_string() + "\n";
            std::io::stdout().write_all(line.as_bytes())?;
            if let Some(path) = &a.out {
                let prov = Provenance::from_env(
                    "Lorenz-96 twin RMSE",
                    "twin-kernel lorenz96",
                    line.trim().into(),
                    command_line,
                );
                files::write_rmse_series(path, &s.rmse_series, &prov)?;
            }
        }
    }
    Ok(())
}
