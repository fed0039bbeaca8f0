//! Building the summary file from merged members.

use std::path::Path;

use twinflow_contract::{cf, datasets};

use super::SummaryError;
use super::stats::{Stats, exceedance, gauge_event, mean_and_max};
use super::warnings::{GaugeSeries, GaugeWarning, gauge_warnings};
use crate::MEMBER_DIM;
use twinflow_exchange::{Attr, DType, Dataset, Dim, ExchangeError, Provenance, Values, Variable};

/// What to compute.
#[derive(Debug, Clone, PartialEq)]
pub struct SummaryOptions {
    /// Depth thresholds τ of the exceedance probabilities, m.
    pub thresholds: Vec<f64>,
    /// Depth at which a gauge counts as reached by the water, m.
    pub arrival_depth: f64,
    /// Warning level P in (0, 1]: a gauge is warned of for a threshold when the probability
    /// that its peak depth exceeds the threshold reaches P (needs gauges).
    pub warn_level: Option<f64>,
}

/// The summary: the file to write and what the map needs.
#[derive(Debug, Clone)]
pub struct Summary {
    /// The CF summary file.
    pub dataset: Dataset,
    /// Number of members.
    pub members: usize,
    /// Grid size `(nx, ny)`.
    pub shape: (usize, usize),
    /// Signed coordinate steps `(dx, dy)`.
    pub spacing: (f64, f64),
    /// Whether `y` ascends (row 0 is the southernmost).
    pub y_ascending: bool,
    /// Exceedance probabilities, `[threshold][y][x]`.
    pub exceedance: Vec<f64>,
    /// Bed elevation `[y][x]`, when known.
    pub bed: Option<Vec<f64>>,
    /// The gauge warning list (with a warning level; gauge-major, thresholds in order).
    pub warnings: Vec<GaugeWarning>,
}

fn input_error(path: &Path, reason: String) -> SummaryError {
    SummaryError::Input { path: path.to_path_buf(), reason }
}

/// A member-major variable `name` with dimensions `(member, rest...)`; NaN for fill values.
fn member_field<'a>(
    data: &'a Dataset,
    path: &Path,
    name: &str,
    rest: &[&str],
) -> Result<(&'a Variable, Vec<f64>), SummaryError> {
    let v = data.variable(name).ok_or_else(|| {
        SummaryError::Exchange(ExchangeError::MissingVariable {
            path: path.to_path_buf(),
            name: name.into(),
            available: data.variables.iter().map(|v| v.name.as_str()).collect::<Vec<_>>().join(", "),
        })
    })?;
    let expected: Vec<&str> = std::iter::once(MEMBER_DIM).chain(rest.iter().copied()).collect();
    if v.dims != expected {
        return Err(input_error(
            path,
            format!(
                "`{name}` has dimensions ({}), expected ({}); hint: merge the members first with `twin-kernel stage merge`",
                v.dims.join(", "),
                expected.join(", ")
            ),
        ));
    }
    let values = v.masked().ok_or_else(|| input_error(path, format!("`{name}` is not numeric")))?;
    Ok((v, values))
}

/// A `f64` field; NaN becomes the fill value.
fn field(name: &str, dims: &[&str], long_name: &str, units: &str, values: Vec<f64>) -> Variable {
    let values = values.into_iter().map(|v| if v.is_nan() { cf::FILL_F64 } else { v }).collect();
    Variable::f64(name, dims, long_name, units, values).with_attr(cf::FILL_VALUE, Attr::F64(vec![cf::FILL_F64]))
}

/// Summarizes merged flood maps (`max_depth(member, y, x)`), optionally with merged gauge
/// series (`h(member, station, time)`) and a DEM (`z(y, x)`; otherwise the maps' own `z`).
pub fn summarize(
    maps: (&Dataset, &Path),
    gauges: Option<(&Dataset, &Path)>,
    dem: Option<(&Dataset, &Path)>,
    options: &SummaryOptions,
    provenance: &Provenance,
) -> Result<Summary, SummaryError> {
    let (maps, maps_path) = maps;
    if options.thresholds.is_empty() || options.thresholds.iter().any(|t| !t.is_finite()) {
        return Err(SummaryError::Request("give at least one finite depth threshold (`--threshold`)".into()));
    }
    if !options.arrival_depth.is_finite() || options.arrival_depth <= 0.0 {
        return Err(SummaryError::Request(format!("`--arrival-depth` must be > 0 m, got {}", options.arrival_depth)));
    }
    if let Some(p) = options.warn_level {
        if !(p > 0.0 && p <= 1.0) {
            return Err(SummaryError::Request(format!("`--warn-level` must be a probability in (0, 1], got {p}")));
        }
        if gauges.is_none() {
            return Err(SummaryError::Request("`--warn-level` needs the gauge series (`--gauges`)".into()));
        }
    }
    let (Some(xs), Some(ys)) = (maps.coordinate(datasets::X), maps.coordinate(datasets::Y)) else {
        return Err(input_error(maps_path, "has no `x`/`y` grid coordinates".into()));
    };
    let (nx, ny) = (xs.len(), ys.len());
    let (_, max_depth) = member_field(maps, maps_path, datasets::MAX_DEPTH, &[datasets::Y, datasets::X])?;
    let members = maps.dim_len(MEMBER_DIM);
    if members == 0 {
        return Err(input_error(maps_path, "has no members".into()));
    }
    let probability = exceedance(&max_depth, members, &options.thresholds);
    let (mean, max) = mean_and_max(&max_depth, members);

    // Terrain: the DEM when given, else member 0's bed from the maps.
    let bed = match dem {
        Some((d, path)) => {
            let z = d.variable(datasets::BED_ELEVATION).and_then(|v| v.masked().map(|m| (v, m)));
            let Some((v, z)) = z else {
                return Err(input_error(path, format!("has no numeric `{}`", datasets::BED_ELEVATION)));
            };
            if d.shape_of(v) != [ny, nx] {
                return Err(input_error(
                    path,
                    format!(
                        "`z` is {:?}, the maps are {ny} × {nx}; hint: `twin-kernel stage regrid` it",
                        d.shape_of(v)
                    ),
                ));
            }
            Some(z)
        }
        None => maps.variable(datasets::BED_ELEVATION).and_then(Variable::masked).map(|z| z[..nx * ny].to_vec()),
    };

    let copy_coord = |name: &str| maps.variable(name).cloned().expect("checked above");
    let mut out = Dataset {
        dims: vec![
            Dim { name: datasets::X.into(), len: nx, unlimited: false },
            Dim { name: datasets::Y.into(), len: ny, unlimited: false },
            Dim { name: "threshold".into(), len: options.thresholds.len(), unlimited: false },
        ],
        variables: vec![copy_coord(datasets::X), copy_coord(datasets::Y)],
        attrs: provenance.to_attrs(),
    };
    out.set_attr("ensemble_members", Attr::I32(vec![i32::try_from(members).unwrap_or(i32::MAX)]));
    out.variables.push(Variable::f64(
        "threshold",
        &["threshold"],
        "maximum-depth threshold of the exceedance probability",
        "m",
        options.thresholds.clone(),
    ));
    out.variables.push(
        field(
            "exceedance_probability",
            &["threshold", datasets::Y, datasets::X],
            "probability over the ensemble that the maximum water depth exceeds the threshold",
            "1",
            probability.clone(),
        )
        .with_attr("valid_range", Attr::F64(vec![0.0, 1.0])),
    );
    out.variables.push(
        field("max_depth_mean", &[datasets::Y, datasets::X], "ensemble mean of the maximum water depth", "m", mean)
            .with_attr("cell_methods", Attr::Str("realization: mean".into())),
    );
    out.variables.push(
        field("max_depth_max", &[datasets::Y, datasets::X], "ensemble maximum of the maximum water depth", "m", max)
            .with_attr("cell_methods", Attr::Str("realization: maximum".into())),
    );
    if let Some(z) = &bed {
        out.variables.push(
            field(datasets::BED_ELEVATION, &[datasets::Y, datasets::X], "bed elevation", "m", z.clone())
                .with_attr(cf::STANDARD_NAME, Attr::Str("surface_altitude".into())),
        );
    }
    let warnings = match gauges {
        Some((g, path)) => add_gauge_statistics(&mut out, g, path, members, options)?,
        None => Vec::new(),
    };
    if let Some(level) = options.warn_level {
        let count = warnings.iter().filter(|w| w.warn).count();
        out.set_attr("warnings", Attr::I32(vec![i32::try_from(count).unwrap_or(i32::MAX)]));
        out.set_attr("warn_level", Attr::F64(vec![level]));
    }
    let step = |v: &[f64]| if v.len() > 1 { v[1] - v[0] } else { 1.0 };
    Ok(Summary {
        dataset: out,
        members,
        shape: (nx, ny),
        spacing: (step(xs), step(ys)),
        y_ascending: ys.len() < 2 || ys[1] > ys[0],
        exceedance: probability,
        bed,
        warnings,
    })
}

/// Adds the gauge statistics to `out`; returns the warning list (empty without a level).
fn add_gauge_statistics(
    out: &mut Dataset,
    g: &Dataset,
    path: &Path,
    members: usize,
    options: &SummaryOptions,
) -> Result<Vec<GaugeWarning>, SummaryError> {
    let arrival_depth = options.arrival_depth;
    let (_, h) = member_field(g, path, datasets::DEPTH, &[datasets::STATION, datasets::TIME])?;
    if g.dim_len(MEMBER_DIM) != members {
        return Err(input_error(
            path,
            format!("has {} members, the maps {members}; hint: merge the same members", g.dim_len(MEMBER_DIM)),
        ));
    }
    let time = g.coordinate(datasets::TIME).ok_or_else(|| input_error(path, "has no `time` coordinate".into()))?;
    let (ns, nt) = (g.dim_len(datasets::STATION), time.len());
    let names = match g.variable("station_name").map(|v| &v.values) {
        Some(Values::Str(s)) if s.len() == ns => s.clone(),
        _ => (0..ns).map(|k| format!("station-{k}")).collect(),
    };
    let along_station =
        |n: &str| g.variable(n).filter(|v| v.dims == [datasets::STATION]).and_then(Variable::num).map(<[f64]>::to_vec);
    let mut peaks = vec![Vec::with_capacity(members); ns];
    let mut arrivals = vec![Vec::with_capacity(members); ns];
    for m in 0..members {
        for s in 0..ns {
            let base = (m * ns + s) * nt;
            let e = gauge_event(&h[base..base + nt], time, arrival_depth);
            peaks[s].push(e.peak);
            arrivals[s].push(e.arrival);
        }
    }
    out.dims.push(Dim { name: datasets::STATION.into(), len: ns, unlimited: false });
    let aux = "station_x station_y station_name";
    let (xs, ys) = (
        along_station(datasets::X).unwrap_or_else(|| vec![f64::NAN; ns]),
        along_station(datasets::Y).unwrap_or_else(|| vec![f64::NAN; ns]),
    );
    let warnings = match options.warn_level {
        Some(level) => {
            let series = GaugeSeries { names: &names, x: &xs, y: &ys, time, depth: &h, members };
            gauge_warnings(&series, &options.thresholds, level)
        }
        None => Vec::new(),
    };
    out.variables.push(Variable {
        name: "station_name".into(),
        dims: vec![datasets::STATION.into()],
        dtype: DType::Str,
        attrs: vec![
            (cf::CF_ROLE.into(), Attr::Str("timeseries_id".into())),
            (cf::LONG_NAME.into(), Attr::Str("gauge name".into())),
        ],
        values: Values::Str(names),
    });
    for (name, coord, sn, values) in [
        ("station_x", datasets::X, "projection_x_coordinate", xs),
        ("station_y", datasets::Y, "projection_y_coordinate", ys),
    ] {
        out.variables.push(
            field(name, &[datasets::STATION], &format!("{coord} coordinate of gauge"), "m", values)
                .with_attr(cf::STANDARD_NAME, Attr::Str(sn.into())),
        );
    }
    let stats = |samples: &[Vec<f64>]| samples.iter().map(|s| Stats::of(s)).collect::<Vec<_>>();
    for (quantity, what, units, samples) in [
        ("peak_depth", "peak water depth at the gauge", "m", stats(&peaks)),
        ("arrival_time", "arrival time of the water at the gauge (members where it arrives)", "s", stats(&arrivals)),
    ] {
        for (suffix, label, method, pick) in [
            ("mean", "ensemble mean", Some("realization: mean"), (|s: &Stats| s.mean) as fn(&Stats) -> f64),
            ("min", "ensemble minimum", Some("realization: minimum"), |s: &Stats| s.min),
            ("max", "ensemble maximum", Some("realization: maximum"), |s: &Stats| s.max),
            ("p90", "ensemble 90th percentile", None, |s: &Stats| s.p90),
        ] {
            let mut v = field(
                &format!("{quantity}_{suffix}"),
                &[datasets::STATION],
                &format!("{label} of the {what}"),
                units,
                samples.iter().map(pick).collect(),
            )
            .with_attr(cf::COORDINATES, Attr::Str(aux.into()));
            if let Some(method) = method {
                v.set_attr("cell_methods", Attr::Str(method.into()));
            }
            out.variables.push(v);
        }
    }
    let fraction = arrivals.iter().map(|a| a.iter().filter(|t| !t.is_nan()).count() as f64 / members as f64).collect();
    out.variables.push(
        field(
            "arrival_fraction",
            &[datasets::STATION],
            "fraction of members in which the water reaches the gauge",
            "1",
            fraction,
        )
        .with_attr(cf::COORDINATES, Attr::Str(aux.into()))
        .with_attr("arrival_depth", Attr::F64(vec![arrival_depth])),
    );
    Ok(warnings)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdata::{centres, grid, stations};
    use crate::{MEMBER_DIM, merge};
    use twinflow_exchange::{Compression, read_dataset, write_dataset};

    /// Four members: depth = member index everywhere; gauge `s` of member `m` has depth
    /// `m · t / 10` at t = 0, 10, 20, 30 s.
    fn ensemble(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
        let mut maps = Vec::new();
        let mut gauges = Vec::new();
        for m in 0..4 {
            let mut g = grid(&centres(6, 0.0, 10.0), &centres(5, 0.0, 10.0), &[0.0], |_, _, _| 0.0);
            let h = g.variable(datasets::DEPTH).unwrap().clone();
            g.variables.push(Variable {
                name: datasets::MAX_DEPTH.into(),
                dims: vec![datasets::Y.into(), datasets::X.into()],
                values: Values::Num(vec![m as f64; 30]),
                ..h
            });
            let p = dir.join(format!("m{m}.nc"));
            write_dataset(&p, &g, &Compression::default()).unwrap();
            maps.push(p);
            let s = stations(&[5.0, 45.0], &[5.0, 25.0], &[0.0, 10.0, 20.0, 30.0], |s, t| {
                if s == 0 { m as f64 * t / 10.0 } else { 0.0 }
            });
            let p = dir.join(format!("g{m}.nc"));
            write_dataset(&p, &s, &Compression::default()).unwrap();
            gauges.push(p);
        }
        let c = Compression::default();
        (merge(&maps, &dir.join("maps.nc"), "m", &c).unwrap(), merge(&gauges, &dir.join("gauges.nc"), "m", &c).unwrap())
    }

    #[test]
    fn exceedance_of_a_known_ensemble() {
        let dir = tempfile::tempdir().unwrap();
        let (maps_path, gauges_path) = ensemble(dir.path());
        let (maps, gauges) = (read_dataset(&maps_path).unwrap(), read_dataset(&gauges_path).unwrap());
        let options = SummaryOptions { thresholds: vec![1.5, -1.0, 3.0], arrival_depth: 0.5, warn_level: None };
        let prov = Provenance::from_env("s", "twin-kernel summary", "{}".into(), "test");
        let s = summarize((&maps, &maps_path), Some((&gauges, &gauges_path)), None, &options, &prov).unwrap();
        assert_eq!(s.members, 4);
        let p = &s.exceedance;
        assert!(p[..30].iter().all(|&v| v == 0.5), "P(depth > 1.5) with depths 0, 1, 2, 3");
        assert!(p[30..60].iter().all(|&v| v == 1.0));
        assert!(p[60..].iter().all(|&v| v == 0.0), "nothing exceeds the largest depth");
        let out = dir.path().join("summary.nc");
        write_dataset(&out, &s.dataset, &Compression::default()).unwrap();
        let d = read_dataset(&out).unwrap();
        let num = |n: &str| d.variable(n).unwrap().num().unwrap().to_vec();
        assert!(num("max_depth_mean").iter().all(|&v| v == 1.5));
        assert!(num("max_depth_max").iter().all(|&v| v == 3.0));
        assert_eq!(d.shape_of(d.variable("exceedance_probability").unwrap()), [3, 5, 6]);
        assert_eq!(d.variable("z").unwrap().num().unwrap().len(), 30, "the maps' own bed");
        // Gauge 0: peaks 0, 3, 6, 9 m; arrival (depth ≥ 0.5) at 10 s for members 1–3, never
        // for member 0. Gauge 1 stays dry.
        assert_eq!(num("peak_depth_mean"), [4.5, 0.0]);
        assert_eq!(num("peak_depth_min"), [0.0, 0.0]);
        assert_eq!(num("peak_depth_max"), [9.0, 0.0]);
        assert!((num("peak_depth_p90")[0] - 8.1).abs() < 1e-12, "numpy.percentile([0, 3, 6, 9], 90) = 8.1");
        assert_eq!(num("arrival_time_mean"), [10.0, cf::FILL_F64]);
        assert_eq!(num("arrival_fraction"), [0.75, 0.0]);
        assert_eq!(d.attr("ensemble_members"), Some(&Attr::I32(vec![4])));
        assert_eq!(d.variable("station_name").unwrap().values, Values::Str(vec!["g0".into(), "g1".into()]));
    }

    #[test]
    fn gauge_warnings_of_a_known_ensemble() {
        let dir = tempfile::tempdir().unwrap();
        let (maps_path, gauges_path) = ensemble(dir.path());
        let (maps, gauges) = (read_dataset(&maps_path).unwrap(), read_dataset(&gauges_path).unwrap());
        let prov = Provenance::from_env("s", "twin-kernel summary", "{}".into(), "test");
        let options = SummaryOptions { thresholds: vec![1.5, 3.0], arrival_depth: 0.5, warn_level: Some(0.5) };
        let s = summarize((&maps, &maps_path), Some((&gauges, &gauges_path)), None, &options, &prov).unwrap();
        // Gauge 0 of member m reads m·t/10 at t = 0, 10, 20, 30 s: peaks 0, 3, 6, 9 m.
        // τ = 1.5: 3 of 4 peaks exceed it; depth ≥ 1.5 first at 20 s (member 1), 10 s
        // (members 2, 3), never (member 0): earliest 10, median of [10, 10, 20] = 10.
        // τ = 3: peaks 6 and 9 exceed (member 1 peaks at exactly 3: arrives at 30 s, does
        // not exceed); arrivals 30, 20, 10 → median 20. Gauge 1 stays dry.
        let rows: Vec<_> = s
            .warnings
            .iter()
            .map(|w| (w.gauge.as_str(), w.threshold, w.probability, w.arrival_earliest, w.arrival_median, w.warn))
            .collect();
        assert_eq!(rows[..2], [("g0", 1.5, 0.75, 10.0, 10.0, true), ("g0", 3.0, 0.5, 10.0, 20.0, true)]);
        for (w, tau) in s.warnings[2..].iter().zip([1.5, 3.0]) {
            assert_eq!((w.gauge.as_str(), w.threshold, w.probability, w.warn), ("g1", tau, 0.0, false));
            assert!(w.arrival_earliest.is_nan() && w.arrival_median.is_nan());
        }
        assert_eq!((s.warnings[0].x, s.warnings[0].y), (5.0, 5.0));
        assert_eq!(s.dataset.attr("warnings"), Some(&Attr::I32(vec![2])));

        let csv = crate::summary::write_warnings(&dir.path().join("warnings.csv"), &s.warnings).unwrap();
        assert_eq!(
            std::fs::read_to_string(csv).unwrap(),
            "gauge,x,y,threshold,probability,arrival_earliest,arrival_median,warn\n\
             g0,5,5,1.5,0.75,10,10,yes\ng0,5,5,3,0.5,10,20,yes\ng1,45,25,1.5,0,,,no\ng1,45,25,3,0,,,no\n"
        );

        // A higher level warns of τ = 1.5 only; without a level there is no list.
        let high = SummaryOptions { warn_level: Some(0.6), ..options.clone() };
        let s = summarize((&maps, &maps_path), Some((&gauges, &gauges_path)), None, &high, &prov).unwrap();
        assert_eq!(s.warnings.iter().filter(|w| w.warn).count(), 1);
        assert_eq!(s.dataset.attr("warnings"), Some(&Attr::I32(vec![1])));
        let none = SummaryOptions { warn_level: None, ..options.clone() };
        let s = summarize((&maps, &maps_path), Some((&gauges, &gauges_path)), None, &none, &prov).unwrap();
        assert!(s.warnings.is_empty() && s.dataset.attr("warnings").is_none());
        // A level outside (0, 1], or no gauges, is refused.
        for (level, with_gauges) in [(0.0, true), (1.5, true), (0.5, false)] {
            let bad = SummaryOptions { warn_level: Some(level), ..options.clone() };
            let g = with_gauges.then_some((&gauges, gauges_path.as_path()));
            let err = summarize((&maps, &maps_path), g, None, &bad, &prov).unwrap_err();
            assert!(err.is_invalid_input() && err.to_string().contains("`--warn-level`"), "{err}");
        }
    }

    #[test]
    fn unmerged_inputs_and_bad_options_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (maps_path, _) = ensemble(dir.path());
        let maps = read_dataset(&maps_path).unwrap();
        let prov = Provenance::from_env("s", "k", "{}".into(), "test");
        let none = SummaryOptions { thresholds: vec![], arrival_depth: 0.1, warn_level: None };
        assert!(summarize((&maps, &maps_path), None, None, &none, &prov).unwrap_err().is_invalid_input());
        let single = read_dataset(&dir.path().join("m0.nc")).unwrap();
        let ok = SummaryOptions { thresholds: vec![1.0], arrival_depth: 0.1, warn_level: None };
        let err = summarize((&single, Path::new("m0.nc")), None, None, &ok, &prov).unwrap_err();
        assert!(err.to_string().contains(&format!("expected ({MEMBER_DIM}, y, x)")), "{err}");
    }

    #[test]
    fn the_png_decodes_to_the_image_written() {
        let dir = tempfile::tempdir().unwrap();
        let (width, height) = (7, 5);
        let rgb: Vec<u8> = (0..width * height * 3).map(|k| (k * 7 % 256) as u8).collect();
        let image = crate::summary::MapImage { width, height, rgb };
        let path = crate::summary::write_png(&dir.path().join("map.png"), &image).unwrap();
        let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&path).unwrap()));
        let mut reader = decoder.read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut buf).unwrap();
        assert_eq!((info.width, info.height), (7, 5));
        assert_eq!(info.color_type, png::ColorType::Rgb);
        assert_eq!(&buf[..info.buffer_size()], image.rgb.as_slice());
    }
}
