//! Scores of an ensemble against the truth of a twin experiment (`twin-kernel verify`).
//!
//! With k members xⱼ of a `[y, x]` field, the ensemble mean m = (1/k) Σⱼ xⱼ and the
//! per-cell variance s² = Σⱼ (xⱼ − m)² / (k − 1) (the spread convention of the filters,
//! [`crate::filter`]), over the wet cells W = {c : truth_c ≥ w or m_c ≥ w}:
//!
//! ```text
//! rmse_wet   = √( Σ_W (m − truth)² / |W| )        spread_wet = √( Σ_W s² / |W| )
//! volume     = (1/k) Σⱼ Σ_c xⱼ,c Δx Δy            volume_truth = Σ_c truth_c Δx Δy
//! ```
//!
//! (the water volume in m³ when the field is the depth h). At gauges, the members and the
//! truth are interpolated bilinearly at the station coordinates ([`crate::bilinear_row`],
//! the assimilation's observation operator), and `rmse_gauges`/`spread_gauges` are the same
//! formulas over the stations inside the grid. Per-member parameters (0-d per member,
//! `[member]` stacked) get their ensemble mean and standard deviation (k − 1).
//!
//! The scores are one CSV row under a fixed header, so the rows of successive cycles
//! concatenate ([`write_scores`] with `append`). A score without data (no wet cell, no
//! `--stations`) is an empty field.

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};

use twinflow_contract::datasets;
use twinflow_exchange::{Dataset, ExchangeError, PartialFile, read_dataset};

use crate::AssimError;
use crate::files::{EnsembleFiles, MODEL_TIME_ATTR, MemberFiles, StateSelection, Stations, input, read_stations};
use crate::obs::bilinear_row;

/// What to score.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifyRequest {
    /// The `[y, x]` field scored (`h`).
    pub variable: String,
    /// The time of the scores (`None`: the ensemble's `model_time`, else the truth's only time).
    pub time: Option<f64>,
    /// Wet threshold w: cells where the truth or the ensemble mean reach it are scored.
    pub wet: f64,
    /// Per-member parameters whose mean and spread are reported.
    pub parameters: Vec<String>,
    /// Label of the row (`forecast`, `analysis`).
    pub label: String,
}

/// Scores at the stations.
#[derive(Debug, Clone, PartialEq)]
pub struct GaugeScores {
    /// RMSE of the ensemble mean at the stations.
    pub rmse: f64,
    /// Root mean ensemble variance at the stations.
    pub spread: f64,
    /// Stations inside the grid (scored).
    pub used: usize,
    /// Stations outside the grid (skipped).
    pub outside: usize,
}

/// The scores of one ensemble at one time.
#[derive(Debug, Clone, PartialEq)]
pub struct Scores {
    /// Row label.
    pub label: String,
    /// Time scored (`None` when neither the request, the ensemble nor the truth says).
    pub time: Option<f64>,
    /// RMSE of the ensemble mean over the wet cells (NaN without wet cells).
    pub rmse_wet: f64,
    /// Root mean ensemble variance over the wet cells.
    pub spread_wet: f64,
    /// Number of wet cells.
    pub wet_cells: usize,
    /// Scores at the stations, when given.
    pub gauges: Option<GaugeScores>,
    /// Ensemble mean of the domain integral Σ x Δx Δy.
    pub volume: f64,
    /// Domain integral of the truth.
    pub volume_truth: f64,
    /// (name, ensemble mean, ensemble standard deviation) per parameter.
    pub parameters: Vec<(String, f64, f64)>,
}

/// The fixed columns of a score row, before the parameter columns.
pub const COLUMNS: &[&str] =
    &["label", "time", "rmse_wet", "spread_wet", "wet_cells", "rmse_gauges", "spread_gauges", "volume", "volume_truth"];

fn number(v: f64) -> String {
    // Shortest round-trip text; empty for "no value" so spreadsheets and pandas read NaN.
    if v.is_finite() { v.to_string() } else { String::new() }
}

impl Scores {
    /// The CSV header: [`COLUMNS`], then `<p>_mean`, `<p>_std` per parameter.
    pub fn header(&self) -> Vec<String> {
        let mut h: Vec<String> = COLUMNS.iter().map(|c| c.to_string()).collect();
        for (name, _, _) in &self.parameters {
            h.push(format!("{name}_mean"));
            h.push(format!("{name}_std"));
        }
        h
    }

    /// The CSV row, in the order of [`Scores::header`].
    pub fn row(&self) -> Vec<String> {
        let g = self.gauges.as_ref();
        let mut r = vec![
            self.label.clone(),
            self.time.map_or_else(String::new, number),
            number(self.rmse_wet),
            number(self.spread_wet),
            self.wet_cells.to_string(),
            g.map_or_else(String::new, |g| number(g.rmse)),
            g.map_or_else(String::new, |g| number(g.spread)),
            number(self.volume),
            number(self.volume_truth),
        ];
        for (_, mean, std) in &self.parameters {
            r.push(number(*mean));
            r.push(number(*std));
        }
        r
    }
}

/// Mean and variance (k − 1) of a sample of at least two values.
fn mean_var(v: &[f64]) -> (f64, f64) {
    let k = v.len() as f64;
    let mean = v.iter().sum::<f64>() / k;
    (mean, v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (k - 1.0))
}

/// Scores the ensemble `members` (a stacked file or one file per member) against `truth`,
/// and at the stations of `stations` when given.
pub fn verify(
    members: &[PathBuf],
    truth: &Path,
    stations: Option<&Path>,
    request: &VerifyRequest,
) -> Result<Scores, AssimError> {
    if !(request.wet.is_finite() && request.wet >= 0.0) {
        return Err(AssimError::Config(format!("`--wet` must be >= 0, got {}", request.wet)));
    }
    let source = MemberFiles::detect(members)?;
    let selection =
        StateSelection { variables: vec![request.variable.clone()], parameters: request.parameters.clone() };
    let ens = EnsembleFiles::read(source, &selection)?;
    let ((nx, ny), (x0, dx), (y0, dy)) = ens.grid_of(&request.variable)?;
    let time = request.time.or_else(|| ens.number_attr(MODEL_TIME_ATTR));

    let truth_ds = read_dataset(truth)?;
    let t = ens.truth_of(&truth_ds, truth, &request.variable, time)?;
    same_grid(&truth_ds, truth, (nx, x0, dx), (ny, y0, dy))?;
    // The time scored: asked for, the ensemble's, or the truth's only record.
    let time = time.or_else(|| match truth_ds.coordinate(datasets::TIME) {
        Some([only]) => Some(*only),
        _ => None,
    });

    let field = ens.block(&request.variable).expect("read above");
    let e = ens.ensemble.rows(field.offset, field.len);
    let k = ens.members();
    let cell_area = dx * dy;
    let (mut sq, mut var, mut wet) = (0.0, 0.0, 0_usize);
    let mut sample = vec![0.0; k];
    for (c, row) in e.row_iter().enumerate() {
        sample.iter_mut().zip(row.iter()).for_each(|(s, v)| *s = *v);
        let (m, s2) = mean_var(&sample);
        if t[c] >= request.wet || m >= request.wet {
            sq += (m - t[c]).powi(2);
            var += s2;
            wet += 1;
        }
    }
    let over_wet = |s: f64| if wet == 0 { f64::NAN } else { (s / wet as f64).sqrt() };
    let volume = e.column_iter().map(|col| col.sum() * cell_area).sum::<f64>() / k as f64;
    let volume_truth = t.iter().sum::<f64>() * cell_area;

    let gauges = stations
        .map(|path| {
            let Stations { x: xs, y: ys, .. } = read_stations(&read_dataset(path)?, path)?;
            let (mut sq, mut var, mut used) = (0.0, 0.0, 0_usize);
            for (&x, &y) in xs.iter().zip(&ys) {
                let Some(w) = bilinear_row(0, (nx, ny), (x0, dx), (y0, dy), (x, y)) else {
                    continue;
                };
                let at = |f: &dyn Fn(usize) -> f64| w.iter().map(|&(c, wc)| wc * f(c)).sum::<f64>();
                let members: Vec<f64> = (0..k).map(|j| at(&|c| e[(c, j)])).collect();
                let (m, s2) = mean_var(&members);
                sq += (m - at(&|c| t[c])).powi(2);
                var += s2;
                used += 1;
            }
            if used == 0 {
                return Err(input(
                    path,
                    datasets::X,
                    format!("all {} stations lie outside the grid of the ensemble", xs.len()),
                ));
            }
            let n = used as f64;
            Ok(GaugeScores { rmse: (sq / n).sqrt(), spread: (var / n).sqrt(), used, outside: xs.len() - used })
        })
        .transpose()?;

    let parameters = request
        .parameters
        .iter()
        .map(|name| {
            let b = ens.block(name).expect("read above");
            if b.len != 1 {
                return Err(input(
                    members.first().map_or(Path::new(""), PathBuf::as_path),
                    name,
                    format!("holds {} values per member; a parameter is one number per member", b.len),
                ));
            }
            let values: Vec<f64> = (0..k).map(|j| ens.ensemble[(b.offset, j)]).collect();
            let (mean, var) = mean_var(&values);
            Ok((name.clone(), mean, var.sqrt()))
        })
        .collect::<Result<Vec<_>, _>>()?;

    Ok(Scores {
        label: request.label.clone(),
        time,
        rmse_wet: over_wet(sq),
        spread_wet: over_wet(var),
        wet_cells: wet,
        gauges,
        volume,
        volume_truth,
        parameters,
    })
}

/// Checks that the truth's `x`/`y` coordinates are the ensemble's cell centres.
fn same_grid(ds: &Dataset, path: &Path, x: (usize, f64, f64), y: (usize, f64, f64)) -> Result<(), AssimError> {
    for (name, (n, first, step)) in [(datasets::X, x), (datasets::Y, y)] {
        let c = ds.coordinate(name).ok_or_else(|| input(path, name, "coordinate is missing"))?;
        let tolerance = 1e-6 * step.abs();
        let differs =
            c.len() != n || c.iter().enumerate().any(|(i, &v)| (v - (first + i as f64 * step)).abs() > tolerance);
        if differs {
            let (a, b) = (c.first().copied().unwrap_or(f64::NAN), c.get(1).map_or(f64::NAN, |s| s - c[0]));
            return Err(input(
                path,
                name,
                format!(
                    "the grid differs from the ensemble's: {} cells from {a} by {b}, the ensemble has {n} from {first} by {step}; hint: score on the ensemble's grid (`twin-kernel stage regrid --like`)",
                    c.len()
                ),
            ));
        }
    }
    Ok(())
}

fn csv_line(fields: &[String]) -> Result<String, AssimError> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(fields).map_err(|e| AssimError::Config(format!("cannot format a CSV row: {e}")))?;
    let bytes = w.into_inner().map_err(|e| AssimError::Config(format!("cannot format a CSV row: {e}")))?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

fn io(path: &Path, action: &'static str) -> impl FnOnce(std::io::Error) -> AssimError {
    let path = path.to_path_buf();
    move |source| AssimError::Exchange(ExchangeError::Io { path, action, source })
}

/// Writes the header and the row of `scores` to `path` (`.partial`, then renamed), or with
/// `append` adds the row to the file, whose header must be the same (a missing or empty
/// file gets the header first).
pub fn write_scores(path: &Path, scores: &Scores, append: bool) -> Result<PathBuf, AssimError> {
    let header = csv_line(&scores.header())?;
    let row = csv_line(&scores.row())?;
    if !append {
        let partial = PartialFile::new(path)?;
        std::fs::write(partial.partial_path(), header + &row).map_err(io(partial.partial_path(), "write"))?;
        return Ok(partial.commit()?);
    }
    let mut f =
        std::fs::OpenOptions::new().read(true).append(true).create(true).open(path).map_err(io(path, "open"))?;
    // The forecast and the analysis of a cycle may be scored at once into one table: the
    // lock makes "check the header, append the row" atomic. Lustre mounted without `flock`
    // does not lock (ENOSYS); appends of one short line each still do not interleave.
    match f.lock() {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::Unsupported => {}
        Err(e) => return Err(io(path, "lock")(e)),
    }
    let mut text = String::new();
    f.read_to_string(&mut text).map_err(io(path, "read"))?;
    let line = if text.trim().is_empty() {
        header + &row
    } else {
        let first = text.lines().next().unwrap_or_default().trim_end();
        if first != header.trim_end() {
            return Err(input(
                path,
                "",
                format!(
                    "has the header `{first}`, these scores have `{}`; hint: append only scores with the same `--parameters`, or write a new file",
                    header.trim_end()
                ),
            ));
        }
        if text.ends_with('\n') { row } else { format!("\n{row}") }
    };
    f.write_all(line.as_bytes()).map_err(io(path, "write"))?;
    Ok(path.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;
    use twinflow_contract::cf;
    use twinflow_exchange::{Attr, Compression, Dim, Variable, write_dataset};

    const NX: usize = 4;
    const NY: usize = 3;

    fn grid_dims(leading: Option<(&str, usize)>) -> Vec<Dim> {
        let mut dims = vec![
            Dim { name: datasets::Y.into(), len: NY, unlimited: false },
            Dim { name: datasets::X.into(), len: NX, unlimited: false },
        ];
        if let Some((name, len)) = leading {
            dims.insert(0, Dim { name: name.into(), len, unlimited: false });
        }
        dims
    }

    fn coords(x0: f64) -> Vec<Variable> {
        vec![
            Variable::f64(datasets::X, &[datasets::X], "x", "m", (0..NX).map(|i| x0 + 10.0 * i as f64).collect()),
            Variable::f64(datasets::Y, &[datasets::Y], "y", "m", (0..NY).map(|j| 5.0 + 10.0 * j as f64).collect()),
        ]
    }

    /// Three members on a 4 × 3 grid of 10 m cells (x, y = 5, 15, …): member j has depth
    /// `base + (j − 1)·0.1` with base 1 in the first row, 0 elsewhere, except cell (0, 1)
    /// where the base is 0.02 (dry at w = 0.05); `manning_n` = 0.03 + 0.01 j.
    fn ensemble(dir: &Path) -> PathBuf {
        let k = 3;
        let mut h = Vec::new();
        for j in 0..k {
            for c in 0..NX * NY {
                let base = if c == 1 {
                    0.02
                } else if c < NX {
                    1.0
                } else {
                    0.0
                };
                h.push(base + (j as f64 - 1.0) * 0.1);
            }
        }
        let mut ds = Dataset { dims: grid_dims(Some((datasets::MEMBER, k))), variables: coords(5.0), attrs: vec![] };
        ds.variables.push(Variable::f64(datasets::DEPTH, &[datasets::MEMBER, datasets::Y, datasets::X], "h", "m", h));
        ds.variables.push(Variable::f64("manning_n", &[datasets::MEMBER], "n", "1", vec![0.03, 0.04, 0.05]));
        ds.set_attr(MODEL_TIME_ATTR, Attr::F64(vec![600.0]));
        write_dataset(&dir.join("states.nc"), &ds, &Compression::default()).unwrap()
    }

    /// The truth at t = 0, 600, 1200: depth 1.2 in the first row at 600 s (0.9 otherwise),
    /// 0 elsewhere.
    fn truth(dir: &Path, x0: f64) -> PathBuf {
        let times = [0.0, 600.0, 1200.0];
        let h: Vec<f64> = times
            .iter()
            .flat_map(|&t| (0..NX * NY).map(move |c| if c < NX { if t == 600.0 { 1.2 } else { 0.9 } } else { 0.0 }))
            .collect();
        let mut ds =
            Dataset { dims: grid_dims(Some((datasets::TIME, times.len()))), variables: coords(x0), attrs: vec![] };
        ds.variables.push(Variable::f64(datasets::TIME, &[datasets::TIME], "time", cf::TIME_REFERENCE, times.to_vec()));
        ds.variables.push(Variable::f64(datasets::DEPTH, &[datasets::TIME, datasets::Y, datasets::X], "h", "m", h));
        write_dataset(&dir.join(format!("truth{x0}.nc")), &ds, &Compression::default()).unwrap()
    }

    fn stations(dir: &Path, xy: &[(f64, f64)]) -> PathBuf {
        let ds = crate::testdata::stations(xy);
        write_dataset(&dir.join("gauges.nc"), &ds, &Compression::default()).unwrap()
    }

    fn request() -> VerifyRequest {
        VerifyRequest {
            variable: datasets::DEPTH.into(),
            time: None,
            wet: 0.05,
            parameters: vec!["manning_n".into()],
            label: "analysis".into(),
        }
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-12 * b.abs().max(1.0)
    }

    #[test]
    fn known_ensemble_gives_exact_scores() {
        let dir = tempfile::tempdir().unwrap();
        let (ens, truth) = (ensemble(dir.path()), truth(dir.path(), 5.0));
        // Gauge 0 at the centre of cell (0, 0); gauge 1 between cells (2, 0) and (2, 1);
        // gauge 2 outside the grid.
        let gauges = stations(dir.path(), &[(5.0, 5.0), (25.0, 10.0), (500.0, 5.0)]);
        let s = verify(&[ens], &truth, Some(&gauges), &request()).unwrap();
        assert_eq!(s.time, Some(600.0), "the ensemble's model_time");
        // Wet: the first row's 3 cells at mean 1 (truth 1.2); cell 1 has mean 0.02 < 0.05
        // but truth 1.2; the other rows have mean 0 and truth 0 (dry).
        assert_eq!(s.wet_cells, 4);
        let rmse = ((3.0 * 0.2_f64.powi(2) + 1.18_f64.powi(2)) / 4.0).sqrt();
        assert!(close(s.rmse_wet, rmse), "{} vs {rmse}", s.rmse_wet);
        // Members differ by ±0.1 everywhere: variance (0.01 + 0 + 0.01)/2 = 0.01.
        assert!(close(s.spread_wet, 0.1), "{}", s.spread_wet);
        // Volume: mean over members of Σ h · 100 m² = 100 · (3·1 + 0.02) (the ±0.1 cancel).
        assert!(close(s.volume, 302.0), "{}", s.volume);
        assert!(close(s.volume_truth, 480.0), "{}", s.volume_truth);
        let g = s.gauges.clone().unwrap();
        assert_eq!((g.used, g.outside), (2, 1));
        // Gauge 0: mean 1, truth 1.2; gauge 1: halfway between (1, 1.2) and (0, 0): mean
        // 0.5, truth 0.6. Spread 0.1 at both (the member offsets are uniform).
        assert!(close(g.rmse, ((0.04 + 0.01) / 2.0_f64).sqrt()), "{}", g.rmse);
        assert!(close(g.spread, 0.1), "{}", g.spread);
        let (name, mean, std) = &s.parameters[0];
        assert_eq!(name, "manning_n");
        assert!(close(*mean, 0.04) && close(*std, 0.01), "{mean} {std}");
        assert_eq!(s.header().join(","), COLUMNS.join(",") + ",manning_n_mean,manning_n_std");
        assert_eq!(s.row()[..2], ["analysis".to_string(), "600".to_string()]);
    }

    #[test]
    fn bilinear_at_a_cell_centre_is_the_cell_value() {
        let dir = tempfile::tempdir().unwrap();
        let (ens, truth) = (ensemble(dir.path()), truth(dir.path(), 5.0));
        // The centre of cell (2, 0), where the mean is 1 and the truth 1.2, and of cell
        // (3, 2), dry: RMSE √((0.04 + 0) / 2), spread 0.1.
        let gauges = stations(dir.path(), &[(25.0, 5.0), (35.0, 25.0)]);
        let g = verify(&[ens], &truth, Some(&gauges), &request()).unwrap().gauges.unwrap();
        assert!(close(g.rmse, 0.02_f64.sqrt()), "{}", g.rmse);
        assert!(close(g.spread, 0.1));
    }

    #[test]
    fn the_time_selects_the_truth_record() {
        let dir = tempfile::tempdir().unwrap();
        let (ens, truth) = (ensemble(dir.path()), truth(dir.path(), 5.0));
        let at =
            |t: f64| verify(std::slice::from_ref(&ens), &truth, None, &VerifyRequest { time: Some(t), ..request() });
        let s = at(1200.0).unwrap();
        assert_eq!(s.time, Some(1200.0));
        let rmse = ((3.0 * 0.1_f64.powi(2) + 0.88_f64.powi(2)) / 4.0).sqrt();
        assert!(close(s.rmse_wet, rmse), "truth 0.9 at 1200 s: {}", s.rmse_wet);
        assert!(s.gauges.is_none() && s.row()[5].is_empty(), "no stations, empty gauge columns");
        let err = at(300.0).unwrap_err().to_string();
        assert!(
            err.contains("truth5.nc") && err.contains("`h`") && err.contains("0, 600, 1200"),
            "names the file and lists the times: {err}"
        );
    }

    #[test]
    fn a_truth_on_another_grid_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (ens, shifted) = (ensemble(dir.path()), truth(dir.path(), 0.0));
        let err = verify(&[ens], &shifted, None, &request()).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("truth0.nc") && text.contains("`x`") && text.contains("grid differs"), "{text}");
        assert_eq!(err.exit_code(), twinflow_contract::exit_code::INVALID_INPUT);
    }

    #[test]
    fn per_member_files_score_like_the_stacked_file() {
        let dir = tempfile::tempdir().unwrap();
        let (stacked, truth) = (ensemble(dir.path()), truth(dir.path(), 5.0));
        let ds = read_dataset(&stacked).unwrap();
        let h = ds.variable(datasets::DEPTH).unwrap().num().unwrap().to_vec();
        let mut paths = Vec::new();
        for j in 0..3 {
            let mut m = Dataset { dims: grid_dims(None), variables: coords(5.0), attrs: ds.attrs.clone() };
            m.variables.push(Variable::f64(
                datasets::DEPTH,
                &[datasets::Y, datasets::X],
                "h",
                "m",
                h[j * NX * NY..(j + 1) * NX * NY].to_vec(),
            ));
            m.variables.push(Variable::f64("manning_n", &[], "n", "1", vec![0.03 + 0.01 * j as f64]));
            paths.push(write_dataset(&dir.path().join(format!("m{j}.nc")), &m, &Compression::default()).unwrap());
        }
        let a = verify(&[stacked], &truth, None, &request()).unwrap();
        let b = verify(&paths, &truth, None, &request()).unwrap();
        assert_eq!(a.row(), b.row());
    }

    #[test]
    fn rows_append_under_one_header_and_a_different_header_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (ens, truth) = (ensemble(dir.path()), truth(dir.path(), 5.0));
        let out = dir.path().join("score.csv");
        let s = verify(std::slice::from_ref(&ens), &truth, None, &request()).unwrap();
        write_scores(&out, &s, true).unwrap();
        write_scores(&out, &Scores { label: "forecast".into(), ..s.clone() }, true).unwrap();
        let text = std::fs::read_to_string(&out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert_eq!(lines[0], s.header().join(","));
        assert!(lines[1].starts_with("analysis,600,") && lines[2].starts_with("forecast,600,"), "{text}");
        let other = verify(&[ens], &truth, None, &VerifyRequest { parameters: vec![], ..request() }).unwrap();
        let err = write_scores(&out, &other, true).unwrap_err().to_string();
        assert!(err.contains("score.csv") && err.contains("header"), "{err}");
        assert_eq!(std::fs::read_to_string(&out).unwrap(), text, "unchanged");
        write_scores(&out, &other, false).unwrap();
        assert_eq!(std::fs::read_to_string(&out).unwrap().lines().count(), 2, "without append: a new file");
    }

    #[test]
    fn an_append_waits_for_another_writer_to_finish() {
        let dir = tempfile::tempdir().unwrap();
        let (ens, truth) = (ensemble(dir.path()), truth(dir.path(), 5.0));
        let s = verify(&[ens], &truth, None, &request()).unwrap();
        let out = dir.path().join("score.csv");
        // Another scorer holds the (new, empty) table.
        let other = std::fs::File::options().read(true).append(true).create(true).open(&out).unwrap();
        other.lock().unwrap();
        std::thread::scope(|scope| {
            let writer = scope.spawn(|| write_scores(&out, &s, true));
            std::thread::sleep(std::time::Duration::from_millis(300));
            assert_eq!(std::fs::read_to_string(&out).unwrap(), "", "appended while another held the file");
            drop(other);
            writer.join().unwrap().unwrap();
        });
        assert_eq!(std::fs::read_to_string(&out).unwrap().lines().count(), 2);
    }
}
