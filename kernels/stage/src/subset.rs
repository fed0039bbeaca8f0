//! `stage subset`: cut a box and/or a time range out of a file.
//!
//! A coordinate box keeps the cells (or stations) whose centre lies in `[x0, x1] × [y0,
//! y1]` (bounds inclusive, either may be open); an index box keeps columns `i0..i1` and
//! rows `j0..j1` (half-open, file order); a time range keeps the records with `t0 ≤ time ≤
//! t1`. Every variable along a cut dimension is cut the same way; coordinates follow, so
//! the output is a valid exchange file of the same layout. In a station file (`x`, `y`
//! along `station`) the coordinate box selects stations.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use twinflow_contract::datasets;

use super::StageError;
use super::select::select;
use twinflow_exchange::{Compression, Dataset, ExchangeError, read_dataset, write_dataset};

/// What to keep; `None` bounds are open.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Subset {
    /// Coordinate bounds along x, m.
    pub x: (Option<f64>, Option<f64>),
    /// Coordinate bounds along y, m.
    pub y: (Option<f64>, Option<f64>),
    /// Column range `i0..i1` (file order).
    pub i: (Option<usize>, Option<usize>),
    /// Row range `j0..j1` (file order).
    pub j: (Option<usize>, Option<usize>),
    /// Time bounds, in the units of the `time` coordinate (s).
    pub t: (Option<f64>, Option<f64>),
}

fn is_set<T>(b: &(Option<T>, Option<T>)) -> bool {
    b.0.is_some() || b.1.is_some()
}

fn inside(v: f64, (lo, hi): (Option<f64>, Option<f64>)) -> bool {
    lo.is_none_or(|lo| v >= lo) && hi.is_none_or(|hi| v <= hi)
}

fn check_order<T: PartialOrd + std::fmt::Display>(name: &str, b: &(Option<T>, Option<T>)) -> Result<(), StageError> {
    match b {
        (Some(lo), Some(hi)) if lo > hi => {
            Err(StageError::Request(format!("`--{name}0` ({lo}) is greater than `--{name}1` ({hi})")))
        }
        _ => Ok(()),
    }
}

fn describe<T: std::fmt::Display>(name: &str, b: &(Option<T>, Option<T>)) -> String {
    let show = |v: &Option<T>| v.as_ref().map_or("..".to_string(), T::to_string);
    format!("{name} in [{}, {}]", show(&b.0), show(&b.1))
}

/// Cuts `data` (read from `path`, named in messages).
pub fn subset(data: &Dataset, sel: &Subset, path: &Path) -> Result<Dataset, StageError> {
    for (n, b) in [("x", &sel.x), ("y", &sel.y), ("t", &sel.t)] {
        check_order(n, b)?;
    }
    for (n, b) in [("i", &sel.i), ("j", &sel.j)] {
        check_order(n, b)?;
    }
    let layout = |reason: String| StageError::Exchange(ExchangeError::Layout { path: path.to_path_buf(), reason });
    let mut keep: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    let empty = |what: String, n: usize, unit: &str| StageError::EmptySelection {
        path: path.to_path_buf(),
        what,
        hint: format!("the file has {n} {unit}"),
    };
    let grid = data.coordinate(datasets::X).is_some() && data.coordinate(datasets::Y).is_some();
    if grid {
        for (dim, coord_box, index_box, ix) in [(datasets::X, sel.x, sel.i, "i"), (datasets::Y, sel.y, sel.j, "j")] {
            if !is_set(&coord_box) && !is_set(&index_box) {
                continue;
            }
            let coord = data.coordinate(dim).expect("checked above");
            let (lo, hi) = (index_box.0.unwrap_or(0), index_box.1.unwrap_or(coord.len()));
            let idx: Vec<usize> = (lo..hi.min(coord.len())).filter(|&k| inside(coord[k], coord_box)).collect();
            if idx.is_empty() {
                let what = [
                    is_set(&coord_box).then(|| describe(dim, &coord_box)),
                    is_set(&index_box).then(|| describe(ix, &index_box)),
                ];
                let what = what.into_iter().flatten().collect::<Vec<_>>().join(" and ");
                let range = format!("{dim} from {} to {}", coord[0], coord[coord.len() - 1]);
                return Err(empty(what, coord.len(), &format!("cells along {dim}, {range}")));
            }
            keep.insert(dim.to_string(), idx);
        }
    } else if is_set(&sel.x) || is_set(&sel.y) {
        // A station file: x and y are per-station coordinates.
        let xs = data.variable(datasets::X).filter(|v| v.dims == [datasets::STATION]).and_then(|v| v.num());
        let ys = data.variable(datasets::Y).filter(|v| v.dims == [datasets::STATION]).and_then(|v| v.num());
        let (Some(xs), Some(ys)) = (xs, ys) else {
            return Err(layout("a coordinate box needs `x`/`y` coordinates (a grid or stations)".into()));
        };
        let idx: Vec<usize> = (0..xs.len()).filter(|&k| inside(xs[k], sel.x) && inside(ys[k], sel.y)).collect();
        if idx.is_empty() {
            let what = format!("{} and {}", describe("x", &sel.x), describe("y", &sel.y));
            return Err(empty(what, xs.len(), "stations"));
        }
        keep.insert(datasets::STATION.to_string(), idx);
    }
    if !grid && (is_set(&sel.i) || is_set(&sel.j)) {
        return Err(layout("an index box needs a grid with `x` and `y` coordinates".into()));
    }
    if is_set(&sel.t) {
        let Some(time) = data.coordinate(datasets::TIME) else {
            return Err(layout("a time range needs a `time` coordinate".into()));
        };
        let idx: Vec<usize> = (0..time.len()).filter(|&k| inside(time[k], sel.t)).collect();
        if idx.is_empty() {
            let hint = match (time.first(), time.last()) {
                (Some(a), Some(b)) => format!("records from t = {a} to {b}"),
                _ => "records".into(),
            };
            return Err(empty(describe("time", &sel.t), time.len(), &hint));
        }
        keep.insert(datasets::TIME.to_string(), idx);
    }
    Ok(select(data, &keep))
}

/// Reads `input`, cuts it and writes `output` (format from its extension).
pub fn subset_file(
    input: &Path,
    output: &Path,
    sel: &Subset,
    command_line: &str,
    compression: &Compression,
) -> Result<PathBuf, StageError> {
    let data = read_dataset(input)?;
    let mut out = subset(&data, sel, input)?;
    out.append_history(command_line);
    Ok(write_dataset(output, &out, compression)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdata::{centres, grid, stations};
    use twinflow_exchange::Values;

    fn num<'a>(d: &'a Dataset, name: &str) -> &'a [f64] {
        d.variable(name).unwrap().num().unwrap()
    }

    #[test]
    fn coordinate_box_and_time_range_keep_coordinates_and_values() {
        let (x, y, t) = (centres(10, 0.0, 10.0), centres(8, 0.0, 10.0), [0.0, 10.0, 20.0, 30.0]);
        let f = |t: f64, x: f64, y: f64| 1000.0 * t + 10.0 * x + y;
        let data = grid(&x, &y, &t, f);
        let sel = Subset {
            x: (Some(20.0), Some(50.0)),
            y: (None, Some(30.0)),
            t: (Some(5.0), Some(20.0)),
            ..Subset::default()
        };
        let out = subset(&data, &sel, Path::new("g.nc")).unwrap();
        assert_eq!(num(&out, "x"), [25.0, 35.0, 45.0]);
        assert_eq!(num(&out, "y"), [5.0, 15.0, 25.0]);
        assert_eq!(num(&out, "time"), [10.0, 20.0]);
        assert_eq!((out.dim_len("x"), out.dim_len("y"), out.dim_len("time")), (3, 3, 2));
        let h = num(&out, "h");
        let mut k = 0;
        for &tt in &[10.0, 20.0] {
            for &yy in &[5.0, 15.0, 25.0] {
                for &xx in &[25.0, 35.0, 45.0] {
                    assert_eq!(h[k], f(tt, xx, yy));
                    k += 1;
                }
            }
        }
        // Fields without time are cut in space only; other dimensions are untouched.
        assert_eq!(num(&out, "z").len(), 9);
        assert_eq!(out.variable("label").unwrap().values, data.variable("label").unwrap().values);
        assert_eq!(out.variable("h").unwrap().attrs, data.variable("h").unwrap().attrs);
        assert!(out.dim("time").unwrap().unlimited);
    }

    #[test]
    fn index_box_is_half_open_and_combines_with_a_coordinate_box() {
        let data = grid(&centres(10, 0.0, 1.0), &centres(8, 0.0, 1.0), &[0.0], |_, x, y| x + 100.0 * y);
        let sel = Subset { i: (Some(2), Some(5)), j: (None, Some(2)), x: (Some(3.0), None), ..Subset::default() };
        let out = subset(&data, &sel, Path::new("g.nc")).unwrap();
        assert_eq!(num(&out, "x"), [3.5, 4.5]);
        assert_eq!(num(&out, "y"), [0.5, 1.5]);
        assert_eq!(num(&out, "cell"), [3.0, 4.0, 13.0, 14.0]);
    }

    #[test]
    fn station_boxes_select_stations() {
        let data = stations(&[0.0, 50.0, 100.0], &[0.0, 10.0, 20.0], &[0.0, 1.0], |s, t| s as f64 + t);
        let out = subset(&data, &Subset { x: (Some(40.0), None), ..Subset::default() }, Path::new("s.nc")).unwrap();
        assert_eq!(out.variable("station_name").unwrap().values, Values::Str(vec!["g1".into(), "g2".into()]));
        assert_eq!(num(&out, "h"), [1.0, 2.0, 2.0, 3.0]);
    }

    #[test]
    fn empty_and_inverted_selections_are_refused() {
        let data = grid(&centres(4, 0.0, 1.0), &centres(3, 0.0, 1.0), &[0.0, 5.0], |_, x, _| x);
        let err = subset(&data, &Subset { x: (Some(50.0), None), ..Subset::default() }, Path::new("g.nc")).unwrap_err();
        assert!(matches!(err, StageError::EmptySelection { .. }), "{err}");
        assert!(err.to_string().contains("x from 0.5 to 3.5"), "{err}");
        let err =
            subset(&data, &Subset { t: (Some(9.0), Some(1.0)), ..Subset::default() }, Path::new("g.nc")).unwrap_err();
        assert!(err.to_string().contains("`--t0` (9) is greater than `--t1` (1)"), "{err}");
        let s = stations(&[0.0], &[0.0], &[0.0], |_, _| 0.0);
        let err = subset(&s, &Subset { i: (Some(0), None), ..Subset::default() }, Path::new("s.nc")).unwrap_err();
        assert!(err.is_invalid_input(), "{err}");
    }
}
