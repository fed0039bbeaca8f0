//! `twin-kernel calo`: clap arguments and the runner of the calorimeter kernel.

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use twinflow_calo::{self as calo, CaloConfig, CaloError, ConfigIssue, Particle, Spectrum};
use twinflow_comm::Communicator;

/// Help text after the options of `twin-kernel calo`.
pub const AFTER_HELP: &str = "\
Examples:
  twin-kernel calo --events 2000 --seed 7 --particle e- --energy 50 --out showers.h5
  twin-kernel calo --events 5000 --energy-range 10:100 --spectrum log-uniform \\
      --absorber pb --absorber-mm 2 --active lar --active-mm 4 --layers 60 --cells 11 \\
      --stochastic 0.10 --constant 0.007 --noise-mev 20 \\
      --temperature 0:293.15,5000:296.15 --gain-per-kelvin -0.02 --dead-fraction 0.01 --out calib.h5
  twin-kernel calo --homogeneous --absorber pb --absorber-mm 1 --layers 200 --out lead.h5
  mpiexec -n 4 twin-kernel calo --config calo.json --out calib.h5

Materials: pb, w, fe, cu (absorbers), lar, scintillator (polystyrene), si (active), or any
material defined under `materials` in the JSON configuration. Flags override the
configuration file; every event depends only on (seed, event id), so the output is the same
for any number of MPI ranks.

Output (HDF5): /cells f32 [event, layer, y, x] visible GeV; /truth/{energy, particle, x, y,
deposited, leakage, visible}; /conditions/{temperature, gain, dead}; /event_id; root
attributes sampling_fraction, moliere_radius_mm, radiation_length_mm, critical_energy_mev,
stochastic_term, constant_term, configuration (JSON) and provenance.";

/// Incident particle (command-line spelling).
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ParticleArg {
    /// Electron (PDG 11).
    #[value(name = "e-")]
    Electron,
    /// Positron (PDG −11).
    #[value(name = "e+")]
    Positron,
    /// Photon (PDG 22).
    #[value(name = "gamma")]
    Photon,
}

impl From<ParticleArg> for Particle {
    fn from(p: ParticleArg) -> Self {
        match p {
            ParticleArg::Electron => Self::Electron,
            ParticleArg::Positron => Self::Positron,
            ParticleArg::Photon => Self::Photon,
        }
    }
}

/// Energy spectrum (command-line spelling).
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum SpectrumArg {
    /// Flat in E.
    Uniform,
    /// Flat in ln E.
    LogUniform,
}

/// Arguments of `twin-kernel calo`. Flags override the configuration file.
#[derive(Debug, Args)]
#[command(allow_negative_numbers = true)]
pub struct CaloArgs {
    /// Output file (HDF5).
    #[arg(long, value_name = "PATH")]
    pub out: PathBuf,
    /// JSON configuration (see `CaloConfig`; every field optional).
    #[arg(long, value_name = "JSON")]
    pub config: Option<PathBuf>,
    /// Number of events.
    #[arg(long, value_name = "N")]
    pub events: Option<u64>,
    /// Seed of the random generator (each event uses the stream of its id).
    #[arg(long, value_name = "SEED")]
    pub seed: Option<u64>,
    /// Incident particles, one drawn uniformly per event (repeat or comma-separate).
    #[arg(long = "particle", value_enum, value_delimiter = ',', value_name = "PARTICLE")]
    pub particles: Vec<ParticleArg>,
    /// Fixed incident energy, GeV.
    #[arg(long, value_name = "GEV", conflicts_with = "energy_range")]
    pub energy: Option<f64>,
    /// Incident energies drawn per event between LOW and HIGH GeV (see `--spectrum`).
    #[arg(long, value_name = "LOW:HIGH")]
    pub energy_range: Option<String>,
    /// Spectrum of `--energy-range` [default: uniform].
    #[arg(long, value_enum)]
    pub spectrum: Option<SpectrumArg>,
    /// Mean impact point X,Y on the front face, mm (0,0 = centre).
    #[arg(long, value_name = "X,Y", value_delimiter = ',')]
    pub position_mm: Option<Vec<f64>>,
    /// Gaussian spread (σ per axis) of the impact point, mm.
    #[arg(long, value_name = "MM")]
    pub beam_spread_mm: Option<f64>,
    /// Absorber material.
    #[arg(long, value_name = "MATERIAL")]
    pub absorber: Option<String>,
    /// Absorber thickness per layer, mm.
    #[arg(long, value_name = "MM")]
    pub absorber_mm: Option<f64>,
    /// Active material.
    #[arg(long, value_name = "MATERIAL")]
    pub active: Option<String>,
    /// Active thickness per layer, mm.
    #[arg(long, value_name = "MM")]
    pub active_mm: Option<f64>,
    /// Homogeneous calorimeter: layers of `--absorber-mm` absorber, fully active.
    #[arg(long)]
    pub homogeneous: bool,
    /// Layers in depth.
    #[arg(long, value_name = "N")]
    pub layers: Option<usize>,
    /// Transverse cells per side.
    #[arg(long, value_name = "N")]
    pub cells: Option<usize>,
    /// Transverse cell size, mm.
    #[arg(long, value_name = "MM")]
    pub cell_size_mm: Option<f64>,
    /// Sampling fraction to use instead of the computed one.
    #[arg(long, value_name = "F")]
    pub sampling_fraction: Option<f64>,
    /// Stochastic term a of σ/E = a/√E ⊕ b, √GeV.
    #[arg(long, value_name = "A")]
    pub stochastic: Option<f64>,
    /// Constant term b.
    #[arg(long, value_name = "B")]
    pub constant: Option<f64>,
    /// Gaussian electronic noise per cell (σ), MeV of visible energy.
    #[arg(long, value_name = "MEV")]
    pub noise_mev: Option<f64>,
    /// Energy of one shower spot, MeV.
    #[arg(long, value_name = "MEV")]
    pub spot_energy_mev: Option<f64>,
    /// Radial profile scale in Molière radii (1 = Grindhammer–Peters).
    #[arg(long, value_name = "S")]
    pub lateral_scale: Option<f64>,
    /// Temperature curve EVENT:KELVIN,... (linear in between, flat outside).
    #[arg(long, value_name = "EVENT:K,...", conflicts_with = "temperature_drift")]
    pub temperature: Option<String>,
    /// Linear temperature drift over the run: from the reference temperature at the first
    /// event to reference + K at the last.
    #[arg(long, value_name = "K")]
    pub temperature_drift: Option<f64>,
    /// Relative gain change per kelvin (gain = 1 + k (T − T_ref)).
    #[arg(long, value_name = "K")]
    pub gain_per_kelvin: Option<f64>,
    /// Temperature at which the gain is 1, K.
    #[arg(long, value_name = "K")]
    pub reference_temperature: Option<f64>,
    /// Fraction of dead cells, chosen reproducibly from the seed.
    #[arg(long, value_name = "F")]
    pub dead_fraction: Option<f64>,
    /// Seed of the dead-cell map, so that several runs of one detector share it
    /// [default: --seed].
    #[arg(long, value_name = "SEED")]
    pub detector_seed: Option<u64>,
    /// A dead cell LAYER,Y,X (repeatable).
    #[arg(long = "dead-cell", value_name = "LAYER,Y,X")]
    pub dead_cells: Vec<String>,
    /// Events per HDF5 chunk of /cells [default: 128].
    #[arg(long, value_name = "N")]
    pub chunk_events: Option<usize>,
    /// Deflate level of the output, 0 (off) to 9 [default: 1].
    #[arg(long, value_parser = clap::value_parser!(u8).range(0..=9))]
    pub deflate: Option<u8>,
}

/// Configuration field → flag, to name the flag in error messages.
const FLAGS: [(&str, &str); 29] = [
    ("events", "--events"),
    ("seed", "--seed"),
    ("beam.particles", "--particle"),
    ("beam.energy_gev", "--energy"),
    ("beam.energy_range_gev", "--energy-range"),
    ("beam.spectrum", "--spectrum"),
    ("beam.position_mm", "--position-mm"),
    ("beam.spread_mm", "--beam-spread-mm"),
    ("calorimeter.absorber_mm", "--absorber-mm"),
    ("calorimeter.absorber", "--absorber"),
    ("calorimeter.active_mm", "--active-mm"),
    ("calorimeter.active", "--active"),
    ("calorimeter.homogeneous", "--homogeneous"),
    ("calorimeter.layers", "--layers"),
    ("calorimeter.cells", "--cells"),
    ("calorimeter.cell_size_mm", "--cell-size-mm"),
    ("calorimeter.sampling_fraction", "--sampling-fraction"),
    ("response.stochastic", "--stochastic"),
    ("response.constant", "--constant"),
    ("response.noise_mev", "--noise-mev"),
    ("response.spot_energy_mev", "--spot-energy-mev"),
    ("response.lateral_scale", "--lateral-scale"),
    ("conditions.temperature", "--temperature"),
    ("conditions.gain_per_kelvin", "--gain-per-kelvin"),
    ("conditions.reference_temperature_k", "--reference-temperature"),
    ("conditions.dead_fraction", "--dead-fraction"),
    ("conditions.dead_cells", "--dead-cell"),
    ("output.chunk_events", "--chunk-events"),
    ("output.deflate", "--deflate"),
];

/// Appends the flag that sets each issue's field.
fn name_flags(mut issues: Vec<ConfigIssue>) -> Vec<ConfigIssue> {
    for issue in &mut issues {
        let base = issue.field.split('[').next().unwrap_or_default();
        if let Some((_, flag)) = FLAGS.iter().find(|(field, _)| *field == base) {
            issue.message.push_str(&format!(" (flag `{flag}`)"));
        }
    }
    issues
}

fn parse_numbers(text: &str, sep: char, n: usize) -> Option<Vec<f64>> {
    let v: Vec<f64> = text.split(sep).map(|s| s.trim().parse::<f64>()).collect::<Result<_, _>>().ok()?;
    (v.len() == n).then_some(v)
}

impl CaloArgs {
    /// Overrides `config` with the flags given; returns the flags that could not be parsed.
    pub fn apply(&self, config: &mut CaloConfig) -> Vec<ConfigIssue> {
        let mut issues = Vec::new();
        let mut bad = |field: &str, message: String| issues.push(ConfigIssue { field: field.into(), message });
        fn set<T: Clone>(dst: &mut T, v: &Option<T>) {
            if let Some(v) = v {
                *dst = v.clone();
            }
        }
        set(&mut config.events, &self.events);
        set(&mut config.seed, &self.seed);
        let b = &mut config.beam;
        if !self.particles.is_empty() {
            b.particles = self.particles.iter().map(|&p| p.into()).collect();
        }
        if let Some(e) = self.energy {
            b.energy_gev = e;
            b.energy_range_gev = None;
        }
        if let Some(text) = &self.energy_range {
            match parse_numbers(text, ':', 2) {
                Some(v) => b.energy_range_gev = Some([v[0], v[1]]),
                None => bad("beam.energy_range_gev", format!("expected LOW:HIGH in GeV, got `{text}`")),
            }
        }
        if let Some(s) = self.spectrum {
            b.spectrum = match s {
                SpectrumArg::Uniform => Spectrum::Uniform,
                SpectrumArg::LogUniform => Spectrum::LogUniform,
            };
        }
        if let Some(p) = &self.position_mm {
            match p[..] {
                [x, y] => b.position_mm = [x, y],
                _ => bad("beam.position_mm", format!("expected X,Y in mm, got {} values", p.len())),
            }
        }
        set(&mut b.spread_mm, &self.beam_spread_mm);
        let c = &mut config.calorimeter;
        set(&mut c.absorber, &self.absorber);
        set(&mut c.absorber_mm, &self.absorber_mm);
        set(&mut c.active, &self.active);
        set(&mut c.active_mm, &self.active_mm);
        c.homogeneous |= self.homogeneous;
        set(&mut c.layers, &self.layers);
        set(&mut c.cells, &self.cells);
        set(&mut c.cell_size_mm, &self.cell_size_mm);
        if self.sampling_fraction.is_some() {
            c.sampling_fraction = self.sampling_fraction;
        }
        let r = &mut config.response;
        set(&mut r.stochastic, &self.stochastic);
        set(&mut r.constant, &self.constant);
        set(&mut r.noise_mev, &self.noise_mev);
        set(&mut r.spot_energy_mev, &self.spot_energy_mev);
        set(&mut r.lateral_scale, &self.lateral_scale);
        let k = &mut config.conditions;
        set(&mut k.gain_per_kelvin, &self.gain_per_kelvin);
        set(&mut k.reference_temperature_k, &self.reference_temperature);
        if let Some(text) = &self.temperature {
            let points: Option<Vec<[f64; 2]>> =
                text.split(',').map(|p| parse_numbers(p, ':', 2).map(|v| [v[0], v[1]])).collect();
            match points {
                Some(points) => k.temperature = points,
                None => bad("conditions.temperature", format!("expected EVENT:KELVIN,..., got `{text}`")),
            }
        }
        if let Some(drift) = self.temperature_drift {
            let t0 = k.reference_temperature_k;
            let last = config.events.saturating_sub(1).max(1) as f64;
            k.temperature = vec![[0.0, t0], [last, t0 + drift]];
        }
        set(&mut k.dead_fraction, &self.dead_fraction);
        if self.detector_seed.is_some() {
            k.detector_seed = self.detector_seed;
        }
        for (i, text) in self.dead_cells.iter().enumerate() {
            let idx: Option<Vec<usize>> = text.split(',').map(|s| s.trim().parse().ok()).collect();
            match idx.as_deref() {
                Some(&[l, y, x]) => k.dead_cells.push([l, y, x]),
                _ => bad(&format!("conditions.dead_cells[{i}]"), format!("expected LAYER,Y,X, got `{text}`")),
            }
        }
        set(&mut config.output.chunk_events, &self.chunk_events);
        set(&mut config.output.deflate, &self.deflate);
        issues
    }
}

/// Runs `twin-kernel calo` (collective over the ranks of `comm`).
pub fn run_calo(comm: &dyn Communicator, args: CaloArgs, command_line: &str) -> Result<(), super::KernelError> {
    let mut config = match &args.config {
        Some(path) => CaloConfig::from_file(path)?,
        None => CaloConfig::default(),
    };
    let mut issues = args.apply(&mut config);
    // The file is named when there is one: the value out of range may be written in it.
    let invalid = |issues: Vec<ConfigIssue>| match &args.config {
        Some(path) => CaloError::ConfigFile { path: path.clone(), issues: name_flags(issues) },
        None => CaloError::Config(name_flags(issues)),
    };
    let plan = match config.validate() {
        Ok(plan) if issues.is_empty() => plan,
        Ok(_) => return Err(invalid(issues).into()),
        Err(more) => {
            issues.extend(more);
            return Err(invalid(issues).into());
        }
    };
    let summary = calo::run_calo(comm, &plan, &args.out, command_line)?;
    if let Some(path) = summary.output {
        tracing::info!(path = %super::shown(&path), "wrote");
    }
    Ok(())
}
