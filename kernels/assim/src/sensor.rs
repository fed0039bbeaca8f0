//! The gauge network of a physical twin, simulated: observation files delivered on a wall
//! clock, as a real sensor network delivers its readings.
//!
//! For k = 0 … count − 1 the reading of model time tₖ = start + k·every is written at wall
//! time launch + delay + k·period as `<prefix><tₖ>.nc`, a CF `timeSeries` file that
//! [`crate::files::read_observations`] (and so `twin-kernel assimilate --obs`) reads:
//!
//! ```text
//! value[s, 0] = truth[s, tₖ] + σₙ · ε(seed, tₖ, s),   ε ~ N(0, 1)
//! ```
//!
//! with the truth taken at exactly tₖ (no interpolation; a time the truth does not hold
//! is an error before anything is delivered), σₙ the noise standard deviation and ε from
//! the counter-based generator of [`crate::rng`] keyed by the seed, the bits of tₖ (as
//! stream) and the station index, so a reading depends on nothing but its key: the same
//! seed gives the same values in any run, whatever `start`, `count` or the clock. The
//! noise is not clipped (a dry gauge can read a small negative depth), so the observation
//! error stays the unbiased Gaussian the filter assumes. Missing truth values (`_FillValue`)
//! stay missing. The declared `error_std[station]` defaults to σₙ.
//!
//! Files are written under `<name>.partial` and renamed into place by the exchange layer,
//! so a `files:` trigger never sees half a file. The wall clock is behind [`Clock`], so the
//! schedule is tested with a fake clock without sleeping.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use twinflow_contract::{cf, datasets};
use twinflow_exchange::{
    Attr, Compression, DType, Dataset, Dim, ExchangeError, Provenance, Values, Variable, read_dataset, write_dataset,
};

use crate::AssimError;
use crate::files::{Stations, input, numbers, pick_time, read_stations, variable};
use crate::rng::{Key, Purpose};

/// Global attribute marking a file as synthetic observations.
pub const SYNTHETIC_ATTR: &str = "synthetic";

/// What the sensor delivers and when.
#[derive(Debug, Clone, PartialEq)]
pub struct SensorConfig {
    /// Gauge variable of the truth file sampled (`h`).
    pub variable: String,
    /// Directory the observation files appear in (created if missing).
    pub out_dir: PathBuf,
    /// File name prefix (`gauges-` → `gauges-600.nc`).
    pub prefix: String,
    /// Model time of the first reading, s.
    pub start: f64,
    /// Model time between readings, s.
    pub every: f64,
    /// Number of readings.
    pub count: u32,
    /// Wall time between deliveries (zero: all at once).
    pub period: Duration,
    /// Wall time before the first delivery.
    pub delay: Duration,
    /// Standard deviation σₙ of the Gaussian noise added to the truth (units of the variable).
    pub noise_std: f64,
    /// Error standard deviation declared in the files (`error_std`).
    pub error_std: f64,
    /// Seed of the noise.
    pub seed: u64,
}

/// The truth at the gauges: one variable of a CF `timeSeries` file.
#[derive(Debug, Clone, PartialEq)]
pub struct GaugeTruth {
    /// The file read.
    pub path: PathBuf,
    /// The variable read.
    pub variable: String,
    /// The stations.
    pub stations: Stations,
    /// Sample times, s.
    pub times: Vec<f64>,
    /// Values `[station][time]`, NaN where missing.
    pub values: Vec<f64>,
    /// Units of the variable (`1` when the file has none).
    pub units: String,
    /// Units of the station coordinates (`m` when the file has none).
    pub coordinate_units: String,
}

fn str_attr(v: &Variable, name: &str) -> Option<String> {
    v.attr(name).and_then(Attr::as_str).map(str::to_string)
}

impl GaugeTruth {
    /// Reads `variable[station, time]` with the station `x`, `y`, `station_name` and the
    /// `time` coordinate of a gauge file (the flood kernel's `result_gauges.nc`).
    pub fn read(path: &Path, name: &str) -> Result<Self, AssimError> {
        let ds = read_dataset(path)?;
        let stations = read_stations(&ds, path)?;
        let var = variable(&ds, path, name)?;
        if var.dims != [datasets::STATION, datasets::TIME] {
            return Err(input(
                path,
                name,
                format!("has the dimensions ({}), expected (station, time)", var.dims.join(", ")),
            ));
        }
        let values = numbers(var, path)?;
        if let Some(at) = values.iter().position(|v| v.is_infinite()) {
            return Err(input(path, name, format!("value {at} is infinite")));
        }
        let times =
            ds.coordinate(datasets::TIME).ok_or_else(|| input(path, datasets::TIME, "coordinate is missing"))?.to_vec();
        let coordinate_units =
            ds.variable(datasets::X).and_then(|v| str_attr(v, cf::UNITS)).unwrap_or_else(|| "m".into());
        Ok(Self {
            path: path.to_path_buf(),
            variable: name.to_string(),
            stations,
            times,
            values,
            units: str_attr(var, cf::UNITS).unwrap_or_else(|| "1".into()),
            coordinate_units,
        })
    }

    /// Number of stations.
    pub fn station_count(&self) -> usize {
        self.stations.names.len()
    }

    /// Index of time `t`, or an error naming the file and listing its times.
    pub fn time_index(&self, t: f64) -> Result<usize, AssimError> {
        pick_time(&self.times, Some(t), &self.path, &self.variable)
    }
}

/// One delivery of the schedule.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    /// Reading number k (from 0).
    pub index: u32,
    /// Model time tₖ, s.
    pub model_time: f64,
    /// Index of tₖ in the truth's times.
    pub time_index: usize,
    /// Wall time after launch at which the file appears.
    pub wall_offset: Duration,
    /// The file written.
    pub path: PathBuf,
}

/// The name of the file of model time `t`: `<prefix><t>.nc`, `t` without a fraction when
/// it is integral (`gauges-600.nc`, `gauges-612.5.nc`).
pub fn file_name(prefix: &str, t: f64) -> String {
    // `{}` of an f64 is the shortest text that reads back to it, without `.0` for integers.
    format!("{prefix}{}.nc", if t == 0.0 { 0.0 } else { t })
}

/// The standard normal deviate of station `station` at model time `t` for `seed`.
pub fn noise(seed: u64, t: f64, station: usize) -> f64 {
    // The bits of t (−0 as +0) are the stream: a pure function of the model time.
    let bits = if t == 0.0 { 0 } else { t.to_bits() };
    let key = Key { seed, purpose: Purpose::SensorNoise, cycle: (bits >> 32) as u32, member: bits as u32 };
    key.normal(station as u64)
}

/// Waits for the deliveries: the wall clock, or a fake one in tests.
pub trait Clock {
    /// Returns once `offset` has passed since launch (at once when it already has).
    fn sleep_until(&mut self, offset: Duration);
}

/// The real clock, started at launch.
#[derive(Debug, Clone, Copy)]
pub struct WallClock {
    launch: Instant,
}

impl WallClock {
    /// A clock whose launch is now.
    pub fn start() -> Self {
        Self { launch: Instant::now() }
    }
}

impl Clock for WallClock {
    fn sleep_until(&mut self, offset: Duration) {
        let due = self.launch + offset;
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
    }
}

/// A sensor ready to deliver: its settings, the truth and the schedule.
#[derive(Debug, Clone)]
pub struct Sensor {
    config: SensorConfig,
    truth: GaugeTruth,
    schedule: Vec<Delivery>,
}

impl Sensor {
    /// Checks the settings and plans every delivery; fails before any delivery when a
    /// model time is not among the truth's times.
    pub fn new(config: SensorConfig, truth: GaugeTruth) -> Result<Self, AssimError> {
        let bad = |reason: String| Err(AssimError::Config(reason));
        if !config.start.is_finite() {
            return bad(format!("`--start` must be finite, got {}", config.start));
        }
        if !(config.every.is_finite() && (config.every > 0.0 || config.count <= 1)) {
            return bad(format!("`--every` must be > 0 s, got {}", config.every));
        }
        if config.count == 0 {
            return bad("`--count` must be at least 1".into());
        }
        if !(config.noise_std.is_finite() && config.noise_std >= 0.0) {
            return bad(format!("`--noise-std` must be >= 0, got {}", config.noise_std));
        }
        if !(config.error_std.is_finite() && config.error_std > 0.0) {
            return bad(format!(
                "`--error-std` must be > 0, got {}; hint: with `--noise-std 0` give the error the assimilation assumes",
                config.error_std
            ));
        }
        if config.prefix.contains('/') {
            return bad(format!("`--prefix {}` must be a file name prefix, not a path", config.prefix));
        }
        let mut schedule = Vec::with_capacity(config.count as usize);
        for k in 0..config.count {
            let t = config.start + f64::from(k) * config.every;
            let time_index = truth.time_index(t)?;
            let wall_offset =
                config.period.checked_mul(k).and_then(|p| p.checked_add(config.delay)).ok_or_else(|| {
                    AssimError::Config("`--delay` + `--count` × `--period` is too long to schedule".into())
                })?;
            let path = config.out_dir.join(file_name(&config.prefix, t));
            schedule.push(Delivery { index: k, model_time: t, time_index, wall_offset, path });
        }
        Ok(Self { config, truth, schedule })
    }

    /// The planned deliveries, in order.
    pub fn schedule(&self) -> &[Delivery] {
        &self.schedule
    }

    /// The observation file of delivery `d` (without provenance attributes).
    pub fn observation(&self, d: &Delivery) -> Dataset {
        let (c, truth) = (&self.config, &self.truth);
        let (ns, nt) = (truth.station_count(), truth.times.len());
        let value = (0..ns)
            .map(|s| {
                let v = truth.values[s * nt + d.time_index] + c.noise_std * noise(c.seed, d.model_time, s);
                if v.is_nan() { cf::FILL_F64 } else { v }
            })
            .collect();
        let station = [datasets::STATION];
        let coordinate = |name: &str, long: &str, values: &[f64], standard: &str| {
            Variable::f64(name, &station, long, &truth.coordinate_units, values.to_vec())
                .with_attr(cf::STANDARD_NAME, Attr::Str(standard.into()))
        };
        let variables = vec![
            Variable {
                name: datasets::STATION_NAME.into(),
                dims: vec![datasets::STATION.into()],
                dtype: DType::Str,
                attrs: vec![
                    (cf::CF_ROLE.into(), Attr::Str("timeseries_id".into())),
                    (cf::LONG_NAME.into(), Attr::Str("gauge name".into())),
                ],
                values: Values::Str(truth.stations.names.clone()),
            },
            coordinate(datasets::X, "x coordinate of gauge", &truth.stations.x, "projection_x_coordinate"),
            coordinate(datasets::Y, "y coordinate of gauge", &truth.stations.y, "projection_y_coordinate"),
            Variable::f64(
                datasets::TIME,
                &[datasets::TIME],
                "model time of the reading",
                cf::TIME_REFERENCE,
                vec![d.model_time],
            )
            .with_attr(cf::STANDARD_NAME, Attr::Str("time".into()))
            .with_attr(cf::CALENDAR, Attr::Str("standard".into()))
            .with_attr(cf::AXIS, Attr::Str("T".into())),
            Variable::f64(
                datasets::OBS_VALUE,
                &[datasets::STATION, datasets::TIME],
                &format!("observed `{}` (synthetic: truth plus Gaussian noise)", truth.variable),
                &truth.units,
                value,
            )
            .with_attr(cf::FILL_VALUE, Attr::F64(vec![cf::FILL_F64]))
            .with_attr(cf::COORDINATES, Attr::Str("time x y station_name".into())),
            Variable::f64(
                datasets::OBS_ERROR_STD,
                &station,
                "observation error standard deviation",
                &truth.units,
                vec![c.error_std; ns],
            ),
        ];
        let mut ds = Dataset {
            dims: vec![
                Dim { name: datasets::STATION.into(), len: ns, unlimited: false },
                Dim { name: datasets::TIME.into(), len: 1, unlimited: false },
            ],
            variables,
            attrs: Vec::new(),
        };
        ds.set_attr(cf::CONVENTIONS, Attr::Str(twinflow_contract::provenance::CONVENTIONS.into()));
        ds.set_attr(cf::FEATURE_TYPE, Attr::Str("timeSeries".into()));
        ds.set_attr(SYNTHETIC_ATTR, Attr::Str("true".into()));
        ds.set_attr(
            "comment",
            Attr::Str(format!(
                "synthetic gauge readings: `{}` of `{}` at time {} plus N(0, {}²) noise (seed {}), not measurements",
                truth.variable,
                truth.path.display(),
                d.model_time,
                c.noise_std,
                c.seed
            )),
        );
        ds.set_attr("noise_std", Attr::F64(vec![c.noise_std]));
        ds
    }

    /// Writes the file of delivery `d` now (`.partial`, then renamed); returns its path.
    pub fn deliver(&self, d: &Delivery, provenance: &Provenance) -> Result<PathBuf, AssimError> {
        let mut ds = self.observation(d);
        let mut attrs = provenance.to_attrs();
        // The file's own conventions and description win over the generic provenance.
        attrs.retain(|(name, _)| ds.attr(name).is_none());
        ds.attrs.extend(attrs);
        std::fs::create_dir_all(&self.config.out_dir).map_err(|source| {
            AssimError::Exchange(ExchangeError::Io { path: self.config.out_dir.clone(), action: "create", source })
        })?;
        Ok(write_dataset(&d.path, &ds, &Compression::default())?)
    }

    /// Delivers every reading at its time on `clock`, calling `delivered` after each file
    /// is in place; returns the paths in order.
    pub fn run(
        &self,
        clock: &mut dyn Clock,
        provenance: &Provenance,
        mut delivered: impl FnMut(&Delivery, &Path),
    ) -> Result<Vec<PathBuf>, AssimError> {
        let mut out = Vec::with_capacity(self.schedule.len());
        for d in &self.schedule {
            clock.sleep_until(d.wall_offset);
            let path = self.deliver(d, provenance)?;
            delivered(d, &path);
            out.push(path);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::files::{ObservationQuery, read_observations};

    /// A truth of `ns` stations sampled every 300 s from 0 to 3000 s: station s reads
    /// `s + t / 1000`; station 1 is missing at t = 900.
    fn truth_file(dir: &Path, ns: usize) -> PathBuf {
        let times: Vec<f64> = (0..=10).map(|k| 300.0 * f64::from(k)).collect();
        let nt = times.len();
        let mut h: Vec<f64> =
            (0..ns).flat_map(|s| times.iter().map(move |t| s as f64 + t / 1000.0)).collect::<Vec<_>>();
        h[nt + 3] = cf::FILL_F64;
        let xy: Vec<(f64, f64)> = (0..ns).map(|s| (10.0 * s as f64, 5.0)).collect();
        let mut ds = crate::testdata::stations(&xy);
        ds.dims.push(Dim { name: datasets::TIME.into(), len: nt, unlimited: false });
        ds.variables.extend([
            Variable::f64(datasets::TIME, &[datasets::TIME], "time", cf::TIME_REFERENCE, times),
            Variable::f64(datasets::DEPTH, &[datasets::STATION, datasets::TIME], "depth", "m", h)
                .with_attr(cf::FILL_VALUE, Attr::F64(vec![cf::FILL_F64])),
        ]);
        write_dataset(&dir.join("truth_gauges.nc"), &ds, &Compression::default()).unwrap()
    }

    fn config(out_dir: &Path) -> SensorConfig {
        SensorConfig {
            variable: datasets::DEPTH.into(),
            out_dir: out_dir.to_path_buf(),
            prefix: "gauges-".into(),
            start: 600.0,
            every: 300.0,
            count: 4,
            period: Duration::from_secs(2),
            delay: Duration::from_millis(500),
            noise_std: 0.05,
            error_std: 0.05,
            seed: 1,
        }
    }

    fn provenance() -> Provenance {
        Provenance::from_env("synthetic gauge readings", "twin-kernel sensor", "{}".into(), "test")
    }

    /// Records the offsets it is asked to wait for, and never sleeps.
    #[derive(Default)]
    struct FakeClock(Vec<Duration>);

    impl Clock for FakeClock {
        fn sleep_until(&mut self, offset: Duration) {
            self.0.push(offset);
        }
    }

    #[test]
    fn deliveries_come_at_their_model_and_wall_times_and_read_as_observations() {
        let dir = tempfile::tempdir().unwrap();
        let truth = GaugeTruth::read(&truth_file(dir.path(), 3), "h").unwrap();
        let out = dir.path().join("obs/new");
        let sensor = Sensor::new(config(&out), truth).unwrap();
        let mut clock = FakeClock::default();
        let mut seen = Vec::new();
        let paths = sensor.run(&mut clock, &provenance(), |d, p| seen.push((d.model_time, p.to_path_buf()))).unwrap();
        let ms = |m| Duration::from_millis(m);
        assert_eq!(clock.0, [ms(500), ms(2500), ms(4500), ms(6500)], "launch + delay + k·period");
        let names: Vec<_> = paths.iter().map(|p| p.file_name().unwrap().to_string_lossy().to_string()).collect();
        assert_eq!(names, ["gauges-600.nc", "gauges-900.nc", "gauges-1200.nc", "gauges-1500.nc"]);
        assert_eq!(seen.iter().map(|s| s.0).collect::<Vec<_>>(), [600.0, 900.0, 1200.0, 1500.0]);
        for (k, path) in paths.iter().enumerate() {
            let t = 600.0 + 300.0 * k as f64;
            let q = ObservationQuery { variable: datasets::OBS_VALUE.into(), time: Some(t), default_error_std: None };
            let obs = read_observations(path, &q).unwrap();
            // t = 900: station 1's truth is missing, so its reading is missing too.
            assert_eq!(obs.missing, usize::from(t == 900.0), "{t}");
            for o in &obs.observations {
                let s: usize = o.station[1..].parse().unwrap();
                let expected = s as f64 + t / 1000.0 + 0.05 * noise(1, t, s);
                assert_eq!(o.value, expected, "station {s} at {t}");
                assert_eq!((o.x, o.y, o.error_std), (10.0 * s as f64, 5.0, 0.05));
            }
            let ds = read_dataset(path).unwrap();
            assert_eq!(ds.attr(SYNTHETIC_ATTR).and_then(Attr::as_str), Some("true"));
            assert_eq!(ds.attr(cf::FEATURE_TYPE).and_then(Attr::as_str), Some("timeSeries"));
            assert_eq!(ds.coordinate(datasets::TIME), Some(&[t][..]));
        }
        assert!(std::fs::read_dir(&out).unwrap().all(|e| !e.unwrap().path().to_string_lossy().ends_with(".partial")));
    }

    #[test]
    fn the_same_seed_gives_the_same_readings_whatever_the_schedule() {
        let dir = tempfile::tempdir().unwrap();
        let truth = GaugeTruth::read(&truth_file(dir.path(), 3), "h").unwrap();
        let value = |cfg: SensorConfig, t: f64| {
            let sensor = Sensor::new(cfg, truth.clone()).unwrap();
            let d = sensor.schedule().iter().find(|d| d.model_time == t).unwrap().clone();
            let ds = sensor.observation(&d);
            ds.variable(datasets::OBS_VALUE).unwrap().num().unwrap().iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        };
        let base = config(dir.path());
        let a = value(base.clone(), 1200.0);
        assert_eq!(a, value(base.clone(), 1200.0));
        // Starting earlier with more readings changes nothing at t = 1200.
        assert_eq!(a, value(SensorConfig { start: 0.0, count: 6, ..base.clone() }, 1200.0));
        assert_ne!(a, value(SensorConfig { seed: 2, ..base.clone() }, 1200.0));
        assert_ne!(a, value(base, 1500.0));
    }

    #[test]
    fn noise_has_the_requested_statistics() {
        // 400 stations × 10 times: 4 000 deviates; the standard error of the mean of
        // N(0, 0.05²) is 0.05/√4000 ≈ 0.0008 and of the standard deviation ≈ 0.00056, so
        // the tolerances 0.004 and 0.0035 are 5–6 standard errors.
        let dir = tempfile::tempdir().unwrap();
        let truth = GaugeTruth::read(&truth_file(dir.path(), 400), "h").unwrap();
        let sensor =
            Sensor::new(SensorConfig { start: 300.0, count: 10, ..config(dir.path()) }, truth.clone()).unwrap();
        let mut errors = Vec::new();
        for d in sensor.schedule() {
            let ds = sensor.observation(d);
            for (s, v) in ds.variable(datasets::OBS_VALUE).unwrap().num().unwrap().iter().enumerate() {
                let t = truth.values[s * truth.times.len() + d.time_index];
                if !t.is_nan() {
                    errors.push(v - t);
                }
            }
        }
        let n = errors.len() as f64;
        let mean = errors.iter().sum::<f64>() / n;
        let std = (errors.iter().map(|e| (e - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt();
        assert!(errors.len() > 3_900);
        assert!(mean.abs() < 0.004, "mean {mean}");
        assert!((std - 0.05).abs() < 0.0035, "std {std}");
    }

    #[test]
    fn a_time_the_truth_lacks_fails_before_any_delivery() {
        let dir = tempfile::tempdir().unwrap();
        let path = truth_file(dir.path(), 2);
        let truth = GaugeTruth::read(&path, "h").unwrap();
        let out = dir.path().join("never");
        let err = Sensor::new(SensorConfig { every: 250.0, ..config(&out) }, truth.clone()).unwrap_err().to_string();
        assert!(err.contains("truth_gauges.nc") && err.contains("`h`") && err.contains("time 850"), "{err}");
        assert!(err.contains("0, 300, 600"), "lists the times: {err}");
        assert!(!out.exists());
        let zero = SensorConfig { noise_std: 0.0, error_std: 0.0, ..config(&out) };
        assert!(Sensor::new(zero, truth).unwrap_err().to_string().contains("`--error-std`"));
        let missing = GaugeTruth::read(&path, "q").unwrap_err().to_string();
        assert!(missing.contains("`q`") && missing.contains("truth_gauges.nc"), "{missing}");
    }

    #[test]
    fn file_names_print_integral_times_without_a_fraction() {
        assert_eq!(file_name("gauges-", 600.0), "gauges-600.nc");
        assert_eq!(file_name("g", 612.5), "g612.5.nc");
        assert_eq!(file_name("g", -0.0), "g0.nc");
    }
}
