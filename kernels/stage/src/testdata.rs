//! Synthetic exchange files with known values, for the staging and summary tests.

use twinflow_contract::{cf, datasets};

use twinflow_exchange::{Attr, DType, Dataset, Dim, Values, Variable};

/// Cell centres `x0 + (k + 0.5) d`, `n` of them.
pub(crate) fn centres(n: usize, x0: f64, d: f64) -> Vec<f64> {
    (0..n).map(|k| x0 + (k as f64 + 0.5) * d).collect()
}

fn coordinate(name: &str, values: Vec<f64>, axis: &str) -> Variable {
    Variable::f64(name, &[name], &format!("{name} coordinate"), "m", values).with_attr(cf::AXIS, Attr::Str(axis.into()))
}

/// A grid file with `time` records: `x`, `y`, `time` coordinates, `h(time, y, x)` from
/// `f(t, x, y)`, `z(y, x)`, an `i32` and an `f32` field, a string variable and global
/// attributes of every kind.
pub(crate) fn grid(x: &[f64], y: &[f64], time: &[f64], f: impl Fn(f64, f64, f64) -> f64) -> Dataset {
    let (nx, ny, nt) = (x.len(), y.len(), time.len());
    let mut h = Vec::with_capacity(nt * ny * nx);
    for &t in time {
        for &yy in y {
            for &xx in x {
                h.push(f(t, xx, yy));
            }
        }
    }
    let z: Vec<f64> = y.iter().flat_map(|&yy| x.iter().map(move |&xx| 0.5 * xx + yy)).collect();
    let cells: Vec<f64> = (0..nx * ny).map(|k| k as f64).collect();
    Dataset {
        dims: vec![
            Dim { name: datasets::TIME.into(), len: nt, unlimited: true },
            Dim { name: datasets::Y.into(), len: ny, unlimited: false },
            Dim { name: datasets::X.into(), len: nx, unlimited: false },
            Dim { name: "label".into(), len: 2, unlimited: false },
        ],
        variables: vec![
            coordinate(datasets::X, x.to_vec(), "X"),
            coordinate(datasets::Y, y.to_vec(), "Y"),
            Variable::f64(datasets::TIME, &[datasets::TIME], "time", cf::TIME_REFERENCE, time.to_vec()),
            Variable::f64(datasets::DEPTH, &[datasets::TIME, datasets::Y, datasets::X], "water depth", "m", h)
                .with_attr(cf::FILL_VALUE, Attr::F64(vec![cf::FILL_F64])),
            Variable::f64(datasets::BED_ELEVATION, &[datasets::Y, datasets::X], "bed", "m", z)
                .with_attr(cf::STANDARD_NAME, Attr::Str("surface_altitude".into())),
            Variable {
                dtype: DType::I32,
                ..Variable::f64("cell", &[datasets::Y, datasets::X], "cell index", "1", cells.clone())
            },
            Variable {
                dtype: DType::F32,
                ..Variable::f64(
                    "half",
                    &[datasets::Y, datasets::X],
                    "half the cell index",
                    "1",
                    cells.iter().map(|c| c / 2.0).collect(),
                )
            },
            Variable {
                name: "label".into(),
                dims: vec!["label".into()],
                dtype: DType::Str,
                attrs: vec![(cf::LONG_NAME.into(), Attr::Str("labels".into()))],
                values: Values::Str(vec!["α".into(), "b c".into()]),
            },
        ],
        attrs: vec![
            (cf::CONVENTIONS.into(), Attr::Str("CF-1.10".into())),
            (cf::HISTORY.into(), Attr::Str("t0: made".into())),
            ("scale".into(), Attr::F64(vec![2.5])),
            ("ranks".into(), Attr::I32(vec![2])),
            ("levels".into(), Attr::I32(vec![1, 2, 3])),
            ("big".into(), Attr::I64(vec![1 << 40])),
            ("ratio".into(), Attr::F32(vec![0.5, 0.25])),
        ],
    }
}

/// A station file: `h(station, time)` from `f(station, time)`.
pub(crate) fn stations(xs: &[f64], ys: &[f64], time: &[f64], f: impl Fn(usize, f64) -> f64) -> Dataset {
    let ns = xs.len();
    let h = (0..ns).flat_map(|s| time.iter().map(move |&t| (s, t))).map(|(s, t)| f(s, t)).collect();
    Dataset {
        dims: vec![
            Dim { name: datasets::STATION.into(), len: ns, unlimited: false },
            Dim { name: datasets::TIME.into(), len: time.len(), unlimited: false },
        ],
        variables: vec![
            Variable {
                name: "station_name".into(),
                dims: vec![datasets::STATION.into()],
                dtype: DType::Str,
                attrs: vec![(cf::CF_ROLE.into(), Attr::Str("timeseries_id".into()))],
                values: Values::Str((0..ns).map(|k| format!("g{k}")).collect()),
            },
            Variable::f64(datasets::X, &[datasets::STATION], "x of gauge", "m", xs.to_vec()),
            Variable::f64(datasets::Y, &[datasets::STATION], "y of gauge", "m", ys.to_vec()),
            Variable::f64(datasets::TIME, &[datasets::TIME], "time", cf::TIME_REFERENCE, time.to_vec()),
            Variable::f64(datasets::DEPTH, &[datasets::STATION, datasets::TIME], "water depth", "m", h)
                .with_attr(cf::COORDINATES, Attr::Str("time x y station_name".into())),
        ],
        attrs: vec![(cf::FEATURE_TYPE.into(), Attr::Str("timeSeries".into()))],
    }
}
